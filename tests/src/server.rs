//! The real server, in-process: `kms_server::run` on `127.0.0.1:0` over a sled store in a
//! directory the test owns, stopped through its shutdown future.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kms_core::store::{SledStore, Store};
use kms_core::{Kms, KmsConfig};
use kms_server::{ServeError, Settings};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pki::Pki;

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// Opens the sled store in `store_dir` (creating it if needed) and serves it with the PKI's
    /// server certificate, trusting the PKI's CA for client certificates.
    pub async fn start(pki: &Pki, store_dir: &Path, settings: Settings) -> Self {
        let dir = store_dir.to_owned();
        // sled may wait for the previous handle's lock (a restart in the same process).
        let store = tokio::task::spawn_blocking(move || SledStore::open(&dir))
            .await
            .unwrap()
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let kms = Arc::new(Kms::open(store, KmsConfig::default()));
        Self::start_with_kms(pki, kms, settings).await
    }

    /// Serves an already opened KMS (any store, any clock): several nodes on one PostgreSQL
    /// database ([`crate::pg`]) are several of these.
    pub async fn start_with_kms(pki: &Pki, kms: Arc<Kms>, settings: Settings) -> Self {
        let tls = kms_server::tls::server_config(
            &pki.server.cert_pem,
            &pki.server.key_pem,
            pki.ca.cert_pem(),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kms_server::run(listener, kms, tls, settings, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
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
