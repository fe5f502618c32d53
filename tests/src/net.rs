//! Client side of the wire: rustls client configurations (any protocol versions, with or
//! without a client certificate), raw TLS handshakes, and tonic channels over our own connector.
//!
//! tonic is handed `http://` and a connector that already did TLS (as `kms-cli` does), so the
//! TLS settings under test are exactly the ones given here.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::pki::Identity;

/// TLS 1.3 and 1.2, as the server offers.
pub const MODERN: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
/// TLS 1.2 only.
pub const TLS12_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
/// TLS 1.3 only.
pub const TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// How long a test waits for a connection before calling it hung.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// A client configuration trusting `ca_pem`, presenting `identity` (if any), limited to
/// `versions`, with ALPN `h2`.
#[must_use]
pub fn client_config(
    ca_pem: &str,
    identity: Option<&Identity>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem) {
        roots.add(cert).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                certs(&id.cert_pem),
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// An RFC 8998 client configuration (kms-gmtls: TLS 1.3, TLS_SM4_GCM_SM3, curveSM2, sm2sig_sm3
/// only) trusting the SM2 CA(s) in `ca_pem`, presenting `identity` (an SM2 certificate), ALPN
/// `h2`: what `kms` does with a `tls = "gm"` profile.
#[must_use]
pub fn gm_client_config(ca_pem: &str, identity: Option<&Identity>) -> Arc<ClientConfig> {
    let (anchors, _) = kms_gmtls::verifier::split_sm2(certs(ca_pem));
    let verifier = kms_gmtls::verifier::Sm2ServerVerifier::new(anchors, None);
    let builder = ClientConfig::builder_with_provider(Arc::new(kms_gmtls::provider::gm_only()))
        .with_protocol_versions(TLS13_ONLY)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                certs(&id.cert_pem),
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// A bare TLS handshake to the server; the stream is returned for further reads and writes.
pub async fn handshake(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(config).connect(server_name(), tcp),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// A tonic channel to `addr` over TLS with `config`. Fails if TCP, TLS or HTTP/2 fails.
pub async fn channel(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_: Uri| {
        let tls = TlsConnector::from(Arc::clone(&config));
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name(), tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(60))
        .connect_with_connector(connector)
        .await
}

/// A TLCP client configuration (kms-tlcp) trusting the SM2 CA(s) in `ca_pem`, presenting the
/// double certificate `sign` + `enc`, every suite or only `suites`, ALPN `h2`.
#[must_use]
pub fn tlcp_client_config(
    ca_pem: &str,
    sign: &Identity,
    enc: &Identity,
    suites: Option<Vec<kms_tlcp::CipherSuite>>,
) -> Arc<kms_tlcp::TlcpClientConfig> {
    let identity =
        kms_tlcp::DoubleCert::from_pem(&sign.cert_pem, &sign.key_pem, &enc.cert_pem, &enc.key_pem)
            .unwrap();
    let mut config = kms_tlcp::TlcpClientConfig::new(ca_pem, Some(identity)).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    if let Some(suites) = suites {
        config.suites = suites;
    }
    Arc::new(config)
}

/// A tonic channel to `addr` over TLCP with `config`.
pub async fn tlcp_channel(
    addr: SocketAddr,
    config: Arc<kms_tlcp::TlcpClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_: Uri| {
        let config = Arc::clone(&config);
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let stream = kms_tlcp::connect(config, tcp)
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(60))
        .connect_with_connector(connector)
        .await
}

/// A tonic channel speaking plaintext HTTP/2 (prior knowledge) to `addr`: what a client that
/// forgot TLS does. The server has no plaintext port, so this must not work.
pub async fn plaintext_channel(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}
