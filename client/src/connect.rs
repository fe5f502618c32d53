//! The mutual-TLS gRPC channel (moved from the CLI, which uses it from here, as does the load
//! tool through it): rustls 0.23 under tonic, with the ring provider (TLS 1.3 and 1.2)
//! or, for `tls = "gm"`, the RFC 8998 provider of kms-gmtls (TLS 1.3, SM2/SM3/SM4 only).
//!
//! tonic's own TLS features cannot pin protocol versions or the crypto provider, so the channel is
//! built over our own connector: dial TCP, do the TLS handshake with `tokio_rustls` (ALPN `h2`,
//! the server checked against the configured CA, our client certificate presented), and hand the
//! stream to tonic.
//!
//! The endpoint URI given to tonic is rewritten from `https://` to `http://`: TLS is already done
//! by the time tonic sees the stream, and a tonic built with any of its own TLS features (which
//! the server enables in the same workspace) would refuse an `https` URI without its own TLS
//! configuration. Only the request's `:scheme` pseudo-header shows the difference; servers ignore it.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use zeroize::Zeroizing;

/// What the client speaks to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS 1.3/1.2 with AES-GCM/ChaCha20 and ECDSA/RSA certificates.
    #[default]
    Standard,
    /// RFC 8998: TLS 1.3 with TLS_SM4_GCM_SM3, curveSM2 and SM2 certificates only.
    Gm,
    /// TLCP (GB/T 38636): double SM2 certificates, ECC/ECDHE with SM4-GCM/CBC and SM3.
    Tlcp,
}

impl TlsMode {
    /// `standard` (or empty), `gm` or `tlcp`, as a profile's `tls` says; `None` for anything
    /// else.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "standard" | "" => Some(Self::Standard),
            "gm" => Some(Self::Gm),
            "tlcp" => Some(Self::Tlcp),
            _ => None,
        }
    }
}

/// The message of an error and its sources, joined by `": "`, without repeats (tonic's transport
/// error says only "transport error"; the useful part is in its sources).
#[must_use]
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// How long to wait for TCP and TLS to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to reach a KMS server: where, whom to trust, and who we are.
pub struct Connection {
    /// `https://host:port` (or `host:port`).
    pub endpoint: String,
    /// PEM of the CA (or CAs) that issued the server's certificate.
    pub ca_pem: String,
    /// PEM of our client certificate (its chain may follow it).
    pub cert_pem: String,
    /// PEM of our private key (PKCS#8, SEC1 or PKCS#1); wiped on drop.
    pub key_pem: Zeroizing<String>,
    /// Standard TLS, RFC 8998 or TLCP.
    pub tls: TlsMode,
    /// TLCP: our encryption certificate and key (PEM; the key wiped on drop).
    pub enc: Option<(String, Zeroizing<String>)>,
    /// Per-request deadline; `None` for no deadline.
    pub timeout: Option<Duration>,
}

impl Connection {
    /// Standard TLS to `endpoint` with PEM contents (the key moved into wiped memory), no TLCP
    /// pair, and `timeout` per request.
    #[must_use]
    pub fn from_pem(
        endpoint: impl Into<String>,
        ca_pem: impl Into<String>,
        cert_pem: impl Into<String>,
        key_pem: String,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            ca_pem: ca_pem.into(),
            cert_pem: cert_pem.into(),
            key_pem: Zeroizing::new(key_pem),
            tls: TlsMode::Standard,
            enc: None,
            timeout,
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"[private key elided]")
            .field("tls", &self.tls)
            .field(
                "enc",
                &self.enc.as_ref().map(|_| "[encryption pair elided]"),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a channel could not be built or connected.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not `https://host:port` or `host:port`.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// As given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A PEM input held nothing usable.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// TCP, TLS or HTTP/2 failed while connecting.
    #[error("cannot connect to {endpoint}: {detail}")]
    Connect {
        /// Where.
        endpoint: String,
        /// The whole error chain.
        detail: String,
    },
}

/// Where to dial and what name to check in the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host as written (brackets stripped from IPv6 literals).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Target {
    /// Parses `https://host:port`, `host:port`, `https://host` (port 443) or `[::1]:7443`.
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] for other schemes (plain `http` included), paths, or a missing
    /// host.
    pub fn parse(endpoint: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
        };
        let with_scheme = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("https://{endpoint}")
        };
        let uri: Uri = with_scheme
            .parse()
            .map_err(|_| bad("expected https://host:port"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") => return Err(bad("plain http is not offered; the KMS speaks mTLS only")),
            _ => return Err(bad("expected https://host:port")),
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(bad("expected no path after host:port"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Ok(Self {
            host: host.to_owned(),
            port: uri.port_u16().unwrap_or(443),
        })
    }

    /// `host:port` for dialling (IPv6 literals bracketed again).
    #[must_use]
    pub fn dial_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The rustls client configuration, ALPN `h2`, the given CA(s) as the only trust roots, our
/// certificate and key for client authentication:
/// - standard: ring, TLS 1.3 and 1.2;
/// - gm (RFC 8998): TLS 1.3 with TLS_SM4_GCM_SM3, curveSM2 and sm2sig_sm3 only, the server's SM2
///   chain checked by kms-gmtls, our SM2 key signing the CertificateVerify.
///
/// # Errors
/// When a PEM holds no certificate or key, or rustls refuses the combination.
pub fn tls_config(conn: &Connection) -> Result<ClientConfig, ClientError> {
    let anchors = parse_certs(&conn.ca_pem, "the CA file")?;
    let chain = parse_certs(&conn.cert_pem, "the certificate file")?;
    let key = PrivateKeyDer::from_pem_slice(conn.key_pem.as_bytes())
        .map_err(|_| ClientError::Pem("the key file holds no PEM private key".to_owned()))?;
    let mut config = match conn.tls {
        TlsMode::Standard => {
            let mut roots = RootCertStore::empty();
            for cert in anchors {
                roots.add(cert)?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)?
        }
        TlsMode::Gm | TlsMode::Tlcp => {
            let (sm2_anchors, _) = kms_gmtls::verifier::split_sm2(anchors);
            if sm2_anchors.is_empty() {
                return Err(ClientError::Pem(
                    "tls = \"gm\" needs an SM2 CA in the CA file".to_owned(),
                ));
            }
            let verifier = kms_gmtls::verifier::Sm2ServerVerifier::new(sm2_anchors, None);
            let provider = Arc::new(kms_gmtls::provider::gm_only());
            ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_client_auth_cert(chain, key)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The byte stream under HTTP/2: rustls or TLCP.
trait SecureStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> SecureStream for T {}

/// The TLCP client configuration: the CA file as the server's trust anchors, our signing pair
/// (`cert`/`key`) and encryption pair (`enc`), every suite, ALPN `h2`. The TLCP client checks
/// the server's chain to the CA, not its host name.
///
/// # Errors
/// When the encryption pair is missing or a PEM is unusable.
pub fn tlcp_config(conn: &Connection) -> Result<Arc<kms_tlcp::TlcpClientConfig>, ClientError> {
    let Some((enc_cert, enc_key)) = &conn.enc else {
        return Err(ClientError::Pem(
            "tls = \"tlcp\" needs enc_cert and enc_key (the encryption certificate and key)"
                .to_owned(),
        ));
    };
    let identity = kms_tlcp::DoubleCert::from_pem(&conn.cert_pem, &conn.key_pem, enc_cert, enc_key)
        .map_err(|e| ClientError::Pem(format!("TLCP certificates: {e}")))?;
    let mut config = kms_tlcp::TlcpClientConfig::new(&conn.ca_pem, Some(identity))
        .map_err(|e| ClientError::Pem(format!("TLCP: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ClientError::Pem(format!("{what} is not valid PEM")))?;
    if certs.is_empty() {
        return Err(ClientError::Pem(format!("{what} holds no PEM certificate")));
    }
    Ok(certs)
}

/// Connects to the server: TCP, TLS (mutual), HTTP/2. The channel is ready for any client
/// (`CryptoClient::new(channel)`, …).
///
/// # Errors
/// [`ClientError`] for bad settings, or [`ClientError::Connect`] with the cause (refused,
/// certificate not trusted, …).
pub async fn connect(conn: &Connection) -> Result<Channel, ClientError> {
    let target = Target::parse(&conn.endpoint)?;
    let server_name = ServerName::try_from(target.host.clone())
        .map_err(|_| ClientError::Endpoint {
            endpoint: conn.endpoint.clone(),
            reason: "the host is neither a DNS name nor an IP address".to_owned(),
        })?
        .to_owned();
    let tls = TlsConnector::from(Arc::new(tls_config(conn)?));
    let tlcp = match conn.tls {
        TlsMode::Tlcp => Some(tlcp_config(conn)?),
        TlsMode::Standard | TlsMode::Gm => None,
    };
    let dial = target.dial_addr();

    // See the module doc: TLS is ours, so tonic is told plain http.
    let mut endpoint = Endpoint::from_shared(format!("http://{dial}"))
        .map_err(|e| ClientError::Endpoint {
            endpoint: conn.endpoint.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(timeout) = conn.timeout {
        endpoint = endpoint.timeout(timeout);
    }

    let connector = tower::service_fn(move |_: Uri| {
        let tls = tls.clone();
        let tlcp = tlcp.clone();
        let server_name = server_name.clone();
        let dial = dial.clone();
        async move {
            let tcp = TcpStream::connect(&dial).await?;
            tcp.set_nodelay(true)?;
            let stream: Box<dyn SecureStream> = match tlcp {
                Some(config) => Box::new(
                    kms_tlcp::connect(config, tcp)
                        .await
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
                ),
                None => Box::new(tls.connect(server_name, tcp).await?),
            };
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| ClientError::Connect {
            endpoint: conn.endpoint.clone(),
            detail: chain(&e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_in_the_accepted_forms() {
        let t = |s: &str| Target::parse(s).unwrap();
        assert_eq!(t("https://127.0.0.1:7443").dial_addr(), "127.0.0.1:7443");
        assert_eq!(t("localhost:7443").host, "localhost");
        assert_eq!(t("https://kms.example").port, 443);
        let v6 = t("[::1]:7443");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.dial_addr(), "[::1]:7443");
        assert_eq!(t("https://127.0.0.1:7443/").port, 7443);
    }

    #[test]
    fn plain_http_and_paths_are_refused() {
        for bad in [
            "http://127.0.0.1:7443",
            "ftp://x:1",
            "https://x:1/kms",
            "https://",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(ClientError::Endpoint { .. })),
                "{bad}"
            );
        }
        let err = Target::parse("http://127.0.0.1:7443").unwrap_err();
        assert!(err.to_string().contains("mTLS"), "{err}");
    }

    #[test]
    fn tls_config_needs_a_cert_and_a_key() {
        let conn = Connection {
            endpoint: "localhost:1".to_owned(),
            ca_pem: String::new(),
            cert_pem: String::new(),
            key_pem: Zeroizing::new(String::new()),
            tls: TlsMode::Standard,
            enc: None,
            timeout: None,
        };
        let err = tls_config(&conn).unwrap_err();
        assert!(
            err.to_string()
                .contains("the CA file holds no PEM certificate"),
            "{err}"
        );
        assert!(!format!("{conn:?}").contains("BEGIN"));
    }
}
