//! `kms-server serve`: load the configuration, self-test, harden, open the store sealed, serve
//! until SIGTERM/SIGINT.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use kms_core::System;
use kms_core::selftest;
use kms_core::store::{SledStore, Store};
use kms_store_postgres::PostgresStore;

use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::config::{Config, StorageKind};

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}

/// The server's runtime. With a local store the blocking pool runs CPU-bound work only
/// (asymmetric operations, large payloads), so it is capped at two threads per core: tokio's
/// default of 512 let 64 concurrent RSA callers start 64 threads that fought over two cores, and
/// each thread's stack and allocator heap stayed resident, locked by mlockall (the benchmark
/// server's RSS rose by ≈ 300 MiB over the asymmetric and 16 KiB runs). With a remote store
/// (PostgreSQL) blocking threads mostly wait on the network, so tokio's default stays.
pub(crate) fn runtime(local_store: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if local_store {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        builder.max_blocking_threads((2 * cores).max(8));
    }
    builder.build()
}

/// Self-tests for the policy in force; a failure means the server must not serve.
pub(crate) fn self_test(policy: kms_core::policy::Policy, err: &mut dyn Write) -> bool {
    let report = selftest::run(policy);
    for r in &report.results {
        if r.passed {
            tracing::info!(test = r.name, "self-test passed");
        } else {
            tracing::error!(
                test = r.name,
                detail = r.detail.unwrap_or(""),
                "self-test FAILED"
            );
        }
    }
    if !report.all_passed() {
        let _ = writeln!(
            err,
            "error: power-on self-tests failed; refusing to serve\n{report}"
        );
        return false;
    }
    true
}

fn read(path: &Path, err: &mut dyn Write) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) => {
            let _ = writeln!(err, "error: cannot read {}: {e}", path.display());
            None
        }
    }
}

/// Reads the certificate files (and the client CRL file, if any) and builds the TLS
/// configuration the policy asks for; says why when it cannot (e.g. gm-only with a non-SM2
/// server certificate, a CRL file that does not parse).
#[cfg(test)]
fn load_tls(config: &Config, err: &mut dyn Write) -> Option<Arc<rustls::ServerConfig>> {
    load_tls_and_crl(config, err).map(|(tls, _)| tls)
}

type LoadedTls = (
    Arc<rustls::ServerConfig>,
    Option<Arc<crate::revocation::Revocation>>,
);

fn load_tls_and_crl(config: &Config, err: &mut dyn Write) -> Option<LoadedTls> {
    let tls = config.tls.as_ref()?;
    let transport = config.transport().ok()?;
    let (cert, key, ca) = (
        read(&tls.cert, err)?,
        zeroize::Zeroizing::new(read(&tls.key, err)?),
        read(&tls.client_ca, err)?,
    );
    let gm = match (&tls.gm_cert, &tls.gm_key) {
        (Some(c), Some(k)) if transport == crate::tls::Transport::Standard => {
            Some((read(c, err)?, zeroize::Zeroizing::new(read(k, err)?)))
        }
        (None, None) | (Some(_), Some(_)) => None,
        _ => {
            let _ = writeln!(err, "error: [tls] gm_cert and gm_key go together");
            return None;
        }
    };
    let mut pairs = vec![crate::tls::CertPair {
        cert_pem: &cert,
        key_pem: &key,
    }];
    if let Some((c, k)) = &gm {
        pairs.push(crate::tls::CertPair {
            cert_pem: c,
            key_pem: k,
        });
    }
    match crate::tls::server_config_with_crl(transport, &pairs, &ca, tls.client_crl.as_deref()) {
        Ok(t) => Some(t),
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            None
        }
    }
}

/// The TLCP listener's configuration: the double certificate from `[tlcp]`, the SM2 CAs of
/// `[tls] client_ca` as the client trust anchors, ALPN h2.
fn load_tlcp(
    config: &Config,
    files: &crate::config::TlcpFiles,
    err: &mut dyn Write,
) -> Option<Arc<kms_tlcp::TlcpServerConfig>> {
    let ca = read(&config.tls.as_ref()?.client_ca, err)?;
    let (sign_cert, sign_key, enc_cert, enc_key) = (
        read(&files.sign_cert, err)?,
        zeroize::Zeroizing::new(read(&files.sign_key, err)?),
        read(&files.enc_cert, err)?,
        zeroize::Zeroizing::new(read(&files.enc_key, err)?),
    );
    match crate::tls::tlcp_config(&sign_cert, &sign_key, &enc_cert, &enc_key, &ca) {
        Ok(c) => Some(c),
        Err(e) => {
            let _ = writeln!(err, "error: [tlcp]: {e}");
            None
        }
    }
}

/// Opens the configured store: sled in `DATA_DIR/store`, or the shared PostgreSQL database
/// (schema created or migrated now; the password read now from its file or the environment).
fn open_store(config: &Config, err: &mut dyn Write) -> Option<Arc<dyn Store>> {
    let kind = match config.storage() {
        Ok(k) => k,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return None;
        }
    };
    match kind {
        StorageKind::Sled => match SledStore::open(&config.data_dir.join("store")) {
            Ok(s) => {
                if let Some(r) = s.audit_recovery() {
                    // Never acknowledged (no answer waited for them), so nothing is lost; but
                    // the process or the machine stopped in the middle of a write.
                    tracing::warn!(
                        segment = %r.segment.display(),
                        cut_bytes = r.cut_bytes,
                        continues_after_record = r.tail_seq,
                        "the audit log ended in an unfinished write (a crash or power loss); \
                         its bytes were cut and the trail continues from the last whole record"
                    );
                }
                Some(Arc::new(s))
            }
            Err(e) => {
                let _ = writeln!(
                    err,
                    "error: cannot open the store in {}: {e}",
                    config.data_dir.display()
                );
                None
            }
        },
        StorageKind::Postgres => {
            let options = match config.postgres_options(|k| std::env::var(k).ok()) {
                Ok(o) => o,
                Err(e) => {
                    let _ = writeln!(err, "error: {e}");
                    return None;
                }
            };
            let schema = options.schema.clone();
            match PostgresStore::open(options) {
                Ok(s) => {
                    tracing::info!(store = ?s, schema, "PostgreSQL store open; schema up to date");
                    Some(Arc::new(s))
                }
                Err(e) => {
                    let _ = writeln!(
                        err,
                        "error: cannot open the PostgreSQL store (schema {schema}): {e}"
                    );
                    None
                }
            }
        }
    }
}

/// On an uninitialised store with no bootstrap identities configured, writes the one-time init
/// token (`bootstrap.rs`) and says where; the token itself is never logged.
fn init_token(
    kms: &System,
    config: &Config,
    settings: &mut crate::server::Settings,
    err: &mut dyn Write,
) -> Result<(), u8> {
    let initialised = match kms.status() {
        Ok(s) => s.initialized,
        Err(e) => {
            let _ = writeln!(err, "error: cannot read the store: {e}");
            return Err(EXIT_FAILED);
        }
    };
    if initialised || !config.bootstrap_admins.is_empty() {
        return Ok(());
    }
    match std::mem::take(&mut settings.bootstrap).with_new_token(&config.data_dir) {
        Ok(b) => {
            if let Some(file) = b.token_file() {
                tracing::warn!(
                    file = %file.display(),
                    "the KMS is not initialised and no bootstrap_admins are configured: \
                     `kms init` needs the one-time init token written to this file"
                );
            }
            settings.bootstrap = b;
            Ok(())
        }
        Err(e) => {
            let _ = writeln!(
                err,
                "error: cannot write the init token to {}: {e}",
                config.data_dir.display()
            );
            Err(EXIT_FAILED)
        }
    }
}

pub(crate) fn serve_command(
    path: &Path,
    log_format: Option<crate::logging::LogFormat>,
    err: &mut dyn Write,
) -> u8 {
    // The configuration says how to log, so an error reading it goes to `err` only.
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_FAILED;
        }
    };
    let _log = crate::logging::init(log_format, config.log);
    let Ok(kms_config) = config.kms_config() else {
        return EXIT_FAILED;
    };
    if !self_test(kms_config.policy, err) {
        return EXIT_FAILED;
    }
    crate::hardening::log(&crate::hardening::harden());
    if let Err(e) = crate::hardening::private_dir(&config.data_dir) {
        let _ = writeln!(
            err,
            "error: cannot make the data directory {} private (0700): {e}",
            config.data_dir.display()
        );
        return EXIT_FAILED;
    }
    let Some((tls_config, revocation)) = load_tls_and_crl(&config, err) else {
        return EXIT_FAILED;
    };
    if let Some(r) = &revocation {
        tracing::info!(
            revoked = r.revoked_count(),
            "client certificates are checked against the client CRL file"
        );
    }
    let Some(store) = open_store(&config, err) else {
        return EXIT_FAILED;
    };
    let mut settings = crate::server::Settings {
        revocation,
        ..config.settings()
    };
    // With metrics on, every store call is timed (kms_store_operation_duration_seconds).
    let store = match &settings.metrics {
        Some(m) => m.metrics.timed_store(store),
        None => store,
    };
    let kms = Arc::new(System::open(store, kms_config));
    let runtime = match runtime(kms.store().reads_are_local()) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: cannot start the runtime: {e}");
            return EXIT_FAILED;
        }
    };
    let tlcp = match config.tlcp.as_ref() {
        None => None,
        Some(files) => match load_tlcp(&config, files, err) {
            Some(c) => Some((files.listen.clone(), c)),
            None => return EXIT_FAILED,
        },
    };
    if let Err(code) = init_token(&kms, &config, &mut settings, err) {
        return code;
    }
    let listen = config.listen.clone();
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        tracing::info!(address = %listener.local_addr()?, "serving kms.v1 over mutual TLS; the KMS starts sealed");
        let tlcp = match tlcp {
            None => None,
            Some((address, tlcp_config)) => {
                let l = tokio::net::TcpListener::bind(&address).await?;
                tracing::info!(address = %l.local_addr()?, "serving kms.v1 over TLCP (GB/T 38636) too");
                Some((l, tlcp_config))
            }
        };
        crate::server::run_with_tlcp(listener, tlcp, kms, tls_config, settings, shutdown_signal())
            .await
            .map_err(std::io::Error::other)
    });
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            EXIT_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kms_devpki::DevCa;

    /// A gm-only server with a P-256 certificate does not start, and says why (issue 16).
    #[test]
    fn gm_only_with_a_p256_certificate_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate().unwrap();
        ca.issue_server(&["localhost"])
            .unwrap()
            .write(dir.path(), "server")
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        let path = dir.path().join("kms.toml");
        std::fs::write(
            &path,
            "policy = \"gm-only\"\n[tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\nclient_ca = \"ca.pem\"\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        let mut err = Vec::new();
        assert!(load_tls(&config, &mut err).is_none());
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.contains("policy gm-only: the server certificate is not SM2"),
            "{err}"
        );

        // The same files serve under the standard policy.
        let standard = Config {
            policy: "standard".into(),
            ..config
        };
        let mut err = Vec::new();
        assert!(load_tls(&standard, &mut err).is_some(), "{err:?}");
    }

    /// `[tlcp]` takes the double certificate and the SM2 CAs of `[tls] client_ca`; a client CA
    /// file with no SM2 CA stops the start, and says why.
    #[test]
    fn tlcp_needs_its_double_certificate_and_an_sm2_client_ca() {
        use kms_devpki::gm::DevSm2Ca;
        let dir = tempfile::tempdir().unwrap();
        let sm2 = DevSm2Ca::load_or_create(dir.path()).unwrap();
        sm2.write_server_files(dir.path()).unwrap();
        let ca = DevCa::generate().unwrap();
        std::fs::write(dir.path().join("p256-ca.pem"), ca.cert_pem()).unwrap();
        let write_config = |client_ca: &str| {
            let path = dir.path().join("kms.toml");
            std::fs::write(
                &path,
                format!(
                    "policy = \"gm-only\"\n[tls]\ncert = \"server-sm2.pem\"\nkey = \"server-sm2-key.pem\"\n\
                     client_ca = \"{client_ca}\"\n[tlcp]\nlisten = \"127.0.0.1:0\"\n\
                     sign_cert = \"tlcp-sign.pem\"\nsign_key = \"tlcp-sign-key.pem\"\n\
                     enc_cert = \"tlcp-enc.pem\"\nenc_key = \"tlcp-enc-key.pem\"\n"
                ),
            )
            .unwrap();
            Config::load(&path).unwrap()
        };
        let config = write_config("ca-sm2.pem");
        let files = config.tlcp.clone().unwrap();
        let mut err = Vec::new();
        let tlcp = load_tlcp(&config, &files, &mut err);
        assert!(tlcp.is_some(), "{}", String::from_utf8_lossy(&err));
        assert_eq!(tlcp.unwrap().alpn_protocols, vec![b"h2".to_vec()]);

        let config = write_config("p256-ca.pem");
        let mut err = Vec::new();
        assert!(load_tlcp(&config, &files, &mut err).is_none());
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("TLCP needs an SM2 CA"), "{err}");
    }
}
