//! A dev KMS the way `kms-server dev` makes one, served in-process on a runtime of its own: for
//! synchronous tests that run programs against it (the `kms` binary in `kms-cli/tests`, OpenSSL).
//!
//! [`DevServer::start`] does what `kms-server dev` does, in a fresh temporary folder: the dev PKI,
//! the CLI profiles (`kms-dev/profiles/{admin,auditor,app}.toml` and their `-gm` and `-tlcp`
//! twins), a sled store initialised with one unseal share in `kms-dev/unseal-share.txt`,
//! unsealed; then a [`TestServer`] serves it on 127.0.0.1:0 (TLS and TLCP) until the server is
//! dropped (graceful shutdown: a closing signed checkpoint, keys wiped).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kms_server::Settings;
use tokio::runtime::Runtime;

use crate::server::{Ports, TestServer};

/// What a dev setup hands the server: the KMS, its TLS configuration and, if it has one, its
/// TLCP configuration.
type Setup = (
    Arc<kms_core::System>,
    Arc<rustls::ServerConfig>,
    Option<Arc<kms_tlcp::TlcpServerConfig>>,
);

/// A dev server serving on a runtime of its own, and the folder it was set up in.
pub struct DevServer {
    /// The folder the dev folder `kms-dev/` is in (a test's working directory).
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// The TLCP listener (profiles `<name>-tlcp`).
    pub tlcp_addr: SocketAddr,
    runtime: Option<Runtime>,
    server: Option<TestServer>,
}

impl DevServer {
    /// Sets up a dev KMS in a new temporary folder (initialised with one share, unsealed, the
    /// dev principals registered) and starts serving it.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(|dir, endpoint, tlcp_endpoint| {
            let setup = kms_server::dev::prepare_with(
                dir,
                endpoint,
                Some(tlcp_endpoint),
                kms_server::tls::Transport::Standard,
            )
            .expect("dev setup");
            (setup.system, setup.tls, Some(setup.tlcp))
        })
    }

    /// A server the same shape as [`Self::start`]'s (a dev PKI, the three profiles) whose store
    /// is new and not initialised: for `kms init` and `kms restore`. It serves no TLCP.
    #[must_use]
    pub fn start_blank() -> Self {
        Self::start_with(|dir, endpoint, _| {
            use kms_devpki::{self as devpki, DevCa};
            let ca = DevCa::generate().expect("dev CA");
            ca.write_dir(dir).expect("write the dev CA");
            let server = ca
                .issue_server(&["localhost", "127.0.0.1"])
                .expect("server certificate");
            // The custodian holds a share once `kms init --holders` names it.
            for subject in ["admin", "auditor", "app", "custodian"] {
                devpki::write_client_bundle(&ca, dir, subject, endpoint).expect("client bundle");
            }
            let tls =
                kms_server::tls::server_config(&server.cert_pem, &server.key_pem, &ca.cert_pem())
                    .expect("TLS configuration");
            let store = kms_core::store::SledStore::open(&dir.join("store")).expect("sled store");
            let kms = kms_core::System::open(Arc::new(store), kms_core::KmsConfig::default());
            (Arc::new(kms), tls, None)
        })
    }

    /// A dev-shaped server under dual control: `approvals` of every covered operation, profiles
    /// `admin`, `admin2`, `admin3`, `auditor` and `app` (`kms://NAME`), all registered (the
    /// admins while dual control could not yet apply), initialised with one share, unsealed.
    /// It serves no TLCP.
    #[must_use]
    pub fn start_dual_control(approvals: u8) -> Self {
        Self::start_with(|dir, endpoint, _| {
            use kms_core::authz::{Role, authorize};
            use kms_core::keys::Namespace;
            use kms_devpki::{self as devpki, DevCa};
            let ca = DevCa::generate().expect("dev CA");
            ca.write_dir(dir).expect("write the dev CA");
            let server = ca
                .issue_server(&["localhost", "127.0.0.1"])
                .expect("server certificate");
            for subject in ["admin", "admin2", "admin3", "auditor", "app"] {
                devpki::write_client_bundle(&ca, dir, subject, endpoint).expect("client bundle");
            }
            let tls =
                kms_server::tls::server_config(&server.cert_pem, &server.key_pem, &ca.cert_pem())
                    .expect("TLS configuration");
            let store = kms_core::store::SledStore::open(&dir.join("store")).expect("sled store");
            let config = kms_core::KmsConfig {
                quorum: kms_core::Quorum::new(
                    approvals,
                    &kms_core::Sensitive::ALL,
                    kms_core::Quorum::DEFAULT_TTL,
                )
                .expect("quorum"),
                ..kms_core::KmsConfig::default()
            };
            let kms = kms_core::System::open(Arc::new(store), config);
            let init = kms
                .init(1, 1, &devpki::client_identity("admin"))
                .expect("init");
            kms.unseal_with(&init.shares[0]).expect("unseal");
            let admin = kms
                .principal(&devpki::client_identity("admin"))
                .expect("read")
                .expect("the first admin");
            let app = Role::App {
                namespace: Namespace::new("default").expect("namespace"),
            };
            for (name, role) in [
                ("auditor", Role::Auditor),
                ("app", app),
                // Alone, the first admin adds the second; the third needs the second's approval,
                // given here through the core.
                ("admin2", Role::Admin),
            ] {
                kms.add_principal(
                    &authorize(&admin).expect("admin"),
                    &devpki::client_identity(name),
                    role,
                )
                .expect("register");
            }
            let third = devpki::client_identity("admin3");
            let pending =
                kms.add_principal(&authorize(&admin).expect("admin"), &third, Role::Admin);
            if let Err(kms_core::Error::ApprovalPending { id, .. }) = pending {
                let second = kms
                    .principal(&devpki::client_identity("admin2"))
                    .expect("read")
                    .expect("the second admin");
                kms.approve(&authorize(&second).expect("admin"), &id, None)
                    .expect("approve the third admin");
            }
            (Arc::new(kms), tls, None)
        })
    }

    /// Binds 127.0.0.1:0 twice (TLS, TLCP), lets `setup` make the KMS and the TLS (and TLCP)
    /// configuration in `kms-dev/` for those endpoints, and serves them.
    fn start_with(setup: impl FnOnce(&Path, &str, &str) -> Setup) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let ports = runtime.block_on(Ports::bind(true));
        let addr = ports.addr;
        let tlcp_addr = ports.tlcp_addr.expect("a TLCP port");
        let dev_dir = dir.path().join("kms-dev");
        std::fs::create_dir_all(&dev_dir).expect("dev folder");
        let (kms, tls, tlcp) = setup(
            &dev_dir,
            &format!("https://{addr}"),
            &format!("https://{tlcp_addr}"),
        );
        // The dev admin (the CLI's admin profile) is the bootstrap identity, as in `kms-server dev`.
        let settings = Settings {
            bootstrap: kms_server::bootstrap::Bootstrap::admins(vec![kms_devpki::client_identity(
                "admin",
            )]),
            ..Settings::default()
        };
        let server =
            runtime.block_on(async { TestServer::serve_on(ports, kms, tls, tlcp, settings) });
        Self {
            dir,
            addr,
            tlcp_addr,
            runtime: Some(runtime),
            server: Some(server),
        }
    }

    /// The folder the dev folder is in.
    #[must_use]
    pub fn cwd(&self) -> &Path {
        self.dir.path()
    }

    /// A path in [`Self::cwd`].
    #[must_use]
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file in [`Self::cwd`].
    pub fn write(&self, rel: &str, data: impl AsRef<[u8]>) {
        std::fs::write(self.path(rel), data).expect("write test file");
    }

    /// Reads a file in [`Self::cwd`].
    #[must_use]
    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Stops serving and waits for the graceful shutdown; panics if the server failed (unless
    /// the thread is already panicking).
    pub fn stop(&mut self) {
        let (Some(runtime), Some(server)) = (self.runtime.take(), self.server.take()) else {
            return;
        };
        let result = runtime.block_on(server.shutdown());
        runtime.shutdown_timeout(Duration::from_secs(5));
        if std::thread::panicking() {
            return;
        }
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.stop();
    }
}
