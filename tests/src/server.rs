//! The real server, in-process: `kms_server::run` on `127.0.0.1:0` over a sled store in a
//! directory the test owns, stopped through its shutdown future.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kms_core::store::{SledStore, Store};
use kms_core::{KmsConfig, System};
use kms_server::{ServeError, Settings};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use kms_core::policy::{Policy, PolicyMode};
use kms_server::tls::{CertPair, Transport};

use crate::pki::Pki;

/// The server's TLS configuration for `transport` from the test PKI.
#[must_use]
pub fn transport_config(pki: &Pki, transport: Transport) -> Arc<rustls::ServerConfig> {
    let sm2 = CertPair {
        cert_pem: &pki.gm.server.cert_pem,
        key_pem: &pki.gm.server.key_pem,
    };
    match transport {
        Transport::GmOnly => {
            kms_server::tls::server_config_with(transport, &[sm2], pki.gm.ca_pem()).unwrap()
        }
        Transport::Standard => {
            let p256 = CertPair {
                cert_pem: &pki.server.cert_pem,
                key_pem: &pki.server.key_pem,
            };
            kms_server::tls::server_config_with(transport, &[p256, sm2], &pki.clients_ca_pem())
                .unwrap()
        }
    }
}

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The TLCP listener, when the server has one (servers started over a transport do).
    pub tlcp_addr: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// Opens the sled store in `store_dir` (creating it if needed) and serves it with the PKI's
    /// server certificate, trusting the PKI's CA for client certificates.
    pub async fn start(pki: &Pki, store_dir: &Path, settings: Settings) -> Self {
        Self::start_over(pki, store_dir, settings, Transport::Standard).await
    }

    /// As [`TestServer::start`] with `transport`: standard (the P-256 and the SM2 server
    /// certificates, both client CAs; what `kms-server dev` serves) or GM only (RFC 8998 with the
    /// SM2 certificate, the SM2 client CA, and the KMS on the gm-only policy).
    pub async fn start_over(
        pki: &Pki,
        store_dir: &Path,
        settings: Settings,
        transport: Transport,
    ) -> Self {
        let dir = store_dir.to_owned();
        // sled may wait for the previous handle's lock (a restart in the same process).
        let store = tokio::task::spawn_blocking(move || SledStore::open(&dir))
            .await
            .unwrap()
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let config = KmsConfig {
            policy: match transport {
                Transport::GmOnly => Policy::from_config(PolicyMode::GmOnly),
                Transport::Standard => Policy::default(),
            },
            ..KmsConfig::default()
        };
        let kms = Arc::new(System::open(store, config));
        let tls = transport_config(pki, transport);
        let tlcp = kms_server::tls::tlcp_config(
            &pki.gm.tlcp_sign.cert_pem,
            &pki.gm.tlcp_sign.key_pem,
            &pki.gm.tlcp_enc.cert_pem,
            &pki.gm.tlcp_enc.key_pem,
            pki.gm.ca_pem(),
        )
        .unwrap();
        Self::serve(kms, tls, Some(tlcp), settings).await
    }

    /// Serves an already opened KMS (any store, any clock): several nodes on one PostgreSQL
    /// database ([`crate::pg`]) are several of these.
    pub async fn start_with_kms(pki: &Pki, kms: Arc<System>, settings: Settings) -> Self {
        let tls = kms_server::tls::server_config(
            &pki.server.cert_pem,
            &pki.server.key_pem,
            pki.ca.cert_pem(),
        )
        .unwrap();
        Self::start_with_tls(kms, tls, settings).await
    }

    /// Serves `kms` with a TLS configuration of the test's making.
    pub async fn start_with_tls(
        kms: Arc<System>,
        tls: Arc<rustls::ServerConfig>,
        settings: Settings,
    ) -> Self {
        Self::serve(kms, tls, None, settings).await
    }

    /// Serves `kms` on a TLS port and, with `tlcp`, a TLCP port (both on 127.0.0.1:0).
    async fn serve(
        kms: Arc<System>,
        tls: Arc<rustls::ServerConfig>,
        tlcp: Option<Arc<kms_tlcp::TlcpServerConfig>>,
        settings: Settings,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tlcp_listener, tlcp_addr) = match tlcp {
            Some(config) => {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let a = l.local_addr().unwrap();
                (Some((l, config)), Some(a))
            }
            None => (None, None),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kms_server::run_with_tlcp(
            listener,
            tlcp_listener,
            kms,
            tls,
            settings,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            tlcp_addr,
            stop,
            task,
        }
    }

    /// Asks the server to shut down and waits until `run` returns (which seals and drops the KMS).
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(());
        tokio::time::timeout(std::time::Duration::from_secs(30), self.task)
            .await
            .expect("the server did not stop within 30 s of its shutdown signal")
            .unwrap()
    }
}
