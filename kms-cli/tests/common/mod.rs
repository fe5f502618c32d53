//! A real dev KMS in-process, and the built `kms` binary run against it, for the end-to-end
//! tests and the README quick start test.
//!
//! [`DevServer::start`] does what `kms-server dev` does, in a fresh temporary folder that is
//! also the working directory of every `kms` it runs: the dev PKI, the CLI profiles
//! (`kms-dev/profiles/{admin,auditor,app}.toml`), a sled store initialised with one unseal share
//! in `kms-dev/unseal-share.txt`, unsealed; then `kms_server::run` serves on 127.0.0.1:0 until
//! the server is dropped (graceful shutdown: a closing signed checkpoint, keys wiped).

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The connection variables a test must not inherit from whoever runs it.
const KMS_ENV: [&str; 9] = [
    "KMS_TLS",
    "KMS_ENC_CERT",
    "KMS_ENC_KEY",
    "KMS_PROFILE",
    "KMS_HOME",
    "KMS_ENDPOINT",
    "KMS_CA",
    "KMS_CERT",
    "KMS_KEY",
];

/// A dev server serving on a runtime of its own, and the folder it was set up in.
pub(crate) struct DevServer {
    /// The working directory; the dev folder is `kms-dev/` inside it.
    pub(crate) dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
    /// The TLCP listener (profiles `<name>-tlcp`).
    pub(crate) tlcp_addr: SocketAddr,
    runtime: Option<Runtime>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<Result<(), kms_server::ServeError>>>,
}

impl DevServer {
    /// Sets up a dev KMS in a new temporary folder (initialised with one share, unsealed, the
    /// dev principals registered) and starts serving it.
    pub(crate) fn start() -> Self {
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
    /// is new and not initialised: for `kms init` and `kms restore`.
    pub(crate) fn start_blank() -> Self {
        Self::start_with(|dir, endpoint, _| {
            use kms_server::devpki::{self, DevCa};
            let ca = DevCa::generate().expect("dev CA");
            ca.write_dir(dir).expect("write the dev CA");
            let server = ca
                .issue_server(&["localhost", "127.0.0.1"])
                .expect("server certificate");
            for subject in ["admin", "auditor", "app"] {
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

    /// Binds 127.0.0.1:0 twice (TLS, TLCP), lets `setup` make the KMS and the TLS (and TLCP)
    /// configuration in `kms-dev/` for those endpoints, and serves them.
    fn start_with(
        setup: impl FnOnce(
            &Path,
            &str,
            &str,
        ) -> (
            Arc<kms_core::System>,
            Arc<rustls::ServerConfig>,
            Option<Arc<kms_tlcp::TlcpServerConfig>>,
        ),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let dev_dir = dir.path().join("kms-dev");
        std::fs::create_dir_all(&dev_dir).expect("dev folder");
        let tlcp_listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0 (TLCP)");
        let tlcp_addr = tlcp_listener.local_addr().expect("local address");
        let (kms, tls, tlcp) = setup(
            &dev_dir,
            &format!("https://{addr}"),
            &format!("https://{tlcp_addr}"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let served = runtime.spawn(kms_server::run_with_tlcp(
            listener,
            tlcp.map(|config| (tlcp_listener, config)),
            kms,
            tls,
            kms_server::Settings::default(),
            async move {
                // A dropped sender stops the server too.
                let _ = stopped.await;
            },
        ));
        Self {
            dir,
            addr,
            tlcp_addr,
            runtime: Some(runtime),
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// The working directory.
    pub(crate) fn cwd(&self) -> &Path {
        self.dir.path()
    }

    /// A path in the working directory.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file in the working directory.
    pub(crate) fn write(&self, rel: &str, data: impl AsRef<[u8]>) {
        std::fs::write(self.path(rel), data).expect("write test file");
    }

    /// Reads a file in the working directory.
    pub(crate) fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// `kms` in the working directory, with no connection settings but `args`.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kms"));
        for var in KMS_ENV {
            cmd.env_remove(var);
        }
        cmd.current_dir(self.cwd());
        cmd
    }

    /// `kms --profile kms-dev/profiles/PROFILE.toml ARGS…` with empty stdin.
    pub(crate) fn kms(&self, profile: &str, args: &[&str]) -> Output {
        self.kms_in(profile, args, b"")
    }

    /// As [`Self::kms`], with `stdin` piped in.
    pub(crate) fn kms_in(&self, profile: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = self.command();
        cmd.arg("--profile")
            .arg(format!("kms-dev/profiles/{profile}.toml"))
            .args(args);
        run(cmd, stdin)
    }

    /// `kms ARGS…` with no profile at all (offline commands).
    pub(crate) fn kms_offline(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run(cmd, b"")
    }

    /// Stops serving and waits for the graceful shutdown; panics if the server failed.
    pub(crate) fn stop(&mut self) {
        let (Some(runtime), Some(stop), Some(served)) =
            (self.runtime.take(), self.stop.take(), self.served.take())
        else {
            return;
        };
        let _ = stop.send(());
        let result =
            runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), served).await });
        runtime.shutdown_timeout(Duration::from_secs(5));
        if std::thread::panicking() {
            return;
        }
        match result {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("the server failed: {e}"),
            Ok(Err(e)) => panic!("the server task failed: {e}"),
            Err(_) => panic!("the server did not shut down within 30 s"),
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kms");
    let mut pipe = child.stdin.take().expect("stdin pipe");
    // A command that does not read stdin may exit first: a broken pipe is fine.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    child.wait_with_output().expect("wait for kms")
}

/// Everything about a finished `kms`, for assertion messages.
pub(crate) fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts success; returns stdout (lossily as text: use `out.stdout` for bytes).
#[track_caller]
pub(crate) fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts success; parses stdout as JSON.
#[track_caller]
pub(crate) fn json(out: &Output) -> serde_json::Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
}

/// Asserts the exit code, the `error: ` line and that stderr contains `part`; returns stderr.
#[track_caller]
pub(crate) fn fails(out: &Output, code: i32, part: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
    assert!(stderr.starts_with("error: "), "{}", describe(out));
    assert!(stderr.contains(part), "wanted {part:?}: {}", describe(out));
    stderr
}
