//! The real server, in-process: `kms_server::run` on `127.0.0.1:0` over a sled store in a
//! directory the test owns, stopped through its shutdown future. Every in-process server of the
//! tests is a [`TestServer`]: the worlds of `kms-tests` ([`crate::world`], [`crate::pg`]) and the
//! dev servers the `kms` binary is run against ([`crate::dev`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kms_core::store::{SledStore, Store};
use kms_core::{KmsConfig, System};
use kms_server::{ServeError, Settings};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};

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

/// How long a server may take to shut down once asked.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// Sockets bound on 127.0.0.1:0 for a server about to start: its TLS port and, if asked for, a
/// TLCP port. Binding first lets a test write the addresses into configuration (the dev
/// profiles) before the server starts.
pub struct Ports {
    tls: TcpListener,
    pub addr: SocketAddr,
    tlcp: Option<TcpListener>,
    pub tlcp_addr: Option<SocketAddr>,
}

impl Ports {
    /// Binds the TLS port and, with `tlcp`, the TLCP port.
    pub async fn bind(tlcp: bool) -> Self {
        let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tls.local_addr().unwrap();
        let tlcp = if tlcp {
            Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
        } else {
            None
        };
        let tlcp_addr = tlcp.as_ref().map(|l| l.local_addr().unwrap());
        Self {
            tls,
            addr,
            tlcp,
            tlcp_addr,
        }
    }
}

/// Why a server did not stop cleanly.
#[derive(Debug)]
pub enum StopError {
    /// `run` returned an error.
    Serve(ServeError),
    /// The server task panicked or was cancelled.
    Task(JoinError),
    /// The server did not stop within 30 s of its shutdown signal.
    Timeout,
}

impl fmt::Display for StopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Serve(e) => write!(f, "the server failed: {e}"),
            Self::Task(e) => write!(f, "the server task failed: {e}"),
            Self::Timeout => write!(
                f,
                "the server did not stop within {} s of its shutdown signal",
                STOP_WITHIN.as_secs()
            ),
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
        let ports = Ports::bind(tlcp.is_some()).await;
        Self::serve_on(ports, kms, tls, tlcp, settings)
    }

    /// Serves `kms` on `ports` (TLCP only with both a TLCP port and a `tlcp` configuration) on
    /// the current tokio runtime, until [`TestServer::stop`] or the server is dropped.
    #[must_use]
    pub fn serve_on(
        ports: Ports,
        kms: Arc<System>,
        tls: Arc<rustls::ServerConfig>,
        tlcp: Option<Arc<kms_tlcp::TlcpServerConfig>>,
        settings: Settings,
    ) -> Self {
        let Ports {
            tls: listener,
            addr,
            tlcp: tlcp_listener,
            tlcp_addr,
        } = ports;
        let (tlcp_listener, tlcp_addr) = match (tlcp_listener, tlcp) {
            (Some(l), Some(config)) => (Some((l, config)), tlcp_addr),
            (Some(_) | None, _) => (None, None),
        };
        // The tests' admin bootstraps every test server unless a test names other identities
        // (or an init token) itself.
        let mut settings = settings;
        if settings.bootstrap.admins.is_empty() && settings.bootstrap.token_file().is_none() {
            settings.bootstrap =
                kms_server::bootstrap::Bootstrap::admins(vec![crate::pki::subjects::ADMIN.into()]);
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kms_server::run_with_tlcp(
            listener,
            tlcp_listener,
            kms,
            tls,
            settings,
            async move {
                // A dropped sender stops the server too.
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
    /// Panics if the server task failed or did not stop within 30 s.
    pub async fn stop(self) -> Result<(), ServeError> {
        match self.shutdown().await {
            Ok(()) => Ok(()),
            Err(StopError::Serve(e)) => Err(e),
            Err(e @ (StopError::Task(_) | StopError::Timeout)) => panic!("{e}"),
        }
    }

    /// As [`TestServer::stop`], never panicking: for callers that stop a server while
    /// unwinding (a `Drop`).
    pub async fn shutdown(self) -> Result<(), StopError> {
        let _ = self.stop.send(());
        match tokio::time::timeout(STOP_WITHIN, self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(StopError::Serve(e)),
            Ok(Err(e)) => Err(StopError::Task(e)),
            Err(_) => Err(StopError::Timeout),
        }
    }
}
