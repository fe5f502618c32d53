//! `kms-server dev`: a working KMS on the embedded default with nothing installed by hand.
//!
//! It makes a dev PKI (CA, server certificate, and client certificates with CLI profiles for
//! `admin`, `auditor` and `app`), initialises the store with ONE unseal share kept in a file
//! (mode 0600), unseals, registers the principals, and serves on 127.0.0.1. Run again, it reuses
//! the folder, the store and its keys. A single share in a file is not dual control: this is a
//! development setup only, and it says so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kms_core::audit::archive::ArchivePolicy;
use kms_core::authz::Role;
use kms_core::authz::authorize;
use kms_core::hierarchy::share::Share;
use kms_core::keys::Namespace;
use kms_core::store::SledStore;
use kms_core::{KmsConfig, System};

use kms_core::policy::{Policy, PolicyMode};

use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::tls::{CertPair, Transport};
use kms_devpki::gm::{self, DevSm2Ca};
use kms_devpki::{self as devpki, DevCa};

/// The namespace of the dev `app` principal, and where `kms key create` puts keys by default.
pub const DEV_NAMESPACE: &str = "default";
const SHARE_FILE: &str = "unseal-share.txt";
/// Archive segments of the audit trail, in the dev folder.
const ARCHIVE_DIR: &str = "audit-archive";

/// What `prepare` made or found.
pub struct DevSetup {
    /// The opened KMS and its system handle (for the server's system service and scheduler).
    pub system: Arc<System>,
    pub tls: Arc<rustls::ServerConfig>,
    /// The TLCP listener's configuration (the dev TLCP server pair, the SM2 client CA).
    pub tlcp: Arc<kms_tlcp::TlcpServerConfig>,
    pub dir: PathBuf,
    pub created: bool,
}

/// The dev folder holds private keys and the unseal share: owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn fail(err: &mut dyn Write, what: &str, e: &dyn std::fmt::Display) -> u8 {
    let _ = writeln!(err, "error: {what}: {e}");
    EXIT_FAILED
}

/// The dev server's rustls configuration from the files `prepare_with` wrote in `dir`: the
/// P-256 and SM2 server certificates (SM2 only under gm-only), the clients' CA bundle.
///
/// # Errors
/// When a file is missing or unusable.
pub fn tls_config(dir: &Path, transport: Transport) -> Result<Arc<rustls::ServerConfig>, String> {
    let read = |name: String, what: &str| {
        std::fs::read_to_string(dir.join(name))
            .map(zeroize::Zeroizing::new)
            .map_err(|e| format!("{what}: {e}"))
    };
    let sm2_cert = read(
        format!("{}.pem", gm::SM2_SERVER_STEM),
        "SM2 server certificate",
    )?;
    let sm2_key = read(format!("{}-key.pem", gm::SM2_SERVER_STEM), "SM2 server key")?;
    let p256_cert = read("server.pem".to_owned(), "server certificate")?;
    let p256_key = read("server-key.pem".to_owned(), "server key")?;
    let clients_ca = read(gm::CLIENTS_CA_FILE.to_owned(), "clients' CA bundle")?;
    let sm2_pair = CertPair {
        cert_pem: &sm2_cert,
        key_pem: &sm2_key,
    };
    let p256_pair = CertPair {
        cert_pem: &p256_cert,
        key_pem: &p256_key,
    };
    let pairs: &[CertPair<'_>] = if transport == Transport::GmOnly {
        &[sm2_pair]
    } else {
        &[p256_pair, sm2_pair]
    };
    crate::tls::server_config_with(transport, pairs, &clients_ca).map_err(|e| e.to_string())
}

/// `kms-server floor`: the benchmarks' transport floor ([`crate::server::run_floor`]) with a
/// dev folder's certificates, on `listen`, until interrupted.
pub(crate) fn floor_command(dir: &Path, listen: &str, err: &mut dyn Write) -> u8 {
    let tls = match tls_config(dir, Transport::Standard) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(
                err,
                "error: {e} (run `kms-server dev --dir {}` once first)",
                dir.display()
            );
            return EXIT_FAILED;
        }
    };
    let runtime = match crate::serve::runtime(true) {
        Ok(r) => r,
        Err(e) => return fail(err, "runtime", &e),
    };
    let listener = match runtime.block_on(tokio::net::TcpListener::bind(listen)) {
        Ok(l) => l,
        Err(e) => return fail(err, &format!("cannot listen on {listen}"), &e),
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match runtime.block_on(crate::server::run_floor(
        listener,
        tls,
        crate::server::Settings::default(),
        shutdown,
    )) {
        Ok(()) => EXIT_OK,
        Err(e) => fail(err, "floor", &e),
    }
}

/// Makes (or reuses) everything in `dir` and returns an unsealed KMS and its TLS config, for
/// the standard transport (P-256 and SM2 server certificates; RFC 8998 preferred when offered).
pub fn prepare(dir: &Path, endpoint: &str) -> Result<DevSetup, String> {
    prepare_with(dir, endpoint, None, Transport::Standard)
}

/// As [`prepare`], for `transport`. Under [`Transport::GmOnly`] the KMS runs the gm-only policy,
/// the server presents its SM2 certificate only, and the `admin`/`auditor`/`app` profiles speak
/// RFC 8998; under the standard transport those profiles stay P-256 and `<subject>-gm` profiles
/// speak RFC 8998. With `tlcp_endpoint`, `<subject>-tlcp` profiles speak TLCP to it.
pub fn prepare_with(
    dir: &Path,
    endpoint: &str,
    tlcp_endpoint: Option<&str>,
    transport: Transport,
) -> Result<DevSetup, String> {
    create_private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca = if dir.join(devpki::CA_CERT_FILE).exists() {
        DevCa::load_dir(dir).map_err(|e| format!("dev CA: {e}"))?
    } else {
        let ca = DevCa::generate().map_err(|e| format!("dev CA: {e}"))?;
        ca.write_dir(dir).map_err(|e| format!("dev CA: {e}"))?;
        ca
    };
    let server = ca
        .issue_server(&["localhost", "127.0.0.1"])
        .map_err(|e| format!("server certificate: {e}"))?;
    server.write(dir, "server").map_err(|e| e.to_string())?;
    let sm2_ca = DevSm2Ca::load_or_create(dir).map_err(|e| format!("dev SM2 CA: {e}"))?;
    sm2_ca
        .write_server_files(dir)
        .map_err(|e| format!("SM2 server certificates: {e}"))?;
    let gm_only = transport == Transport::GmOnly;
    for subject in ["admin", "auditor", "app"] {
        if !gm_only {
            devpki::write_client_bundle(&ca, dir, subject, endpoint)
                .map_err(|e| format!("client {subject}: {e}"))?;
        }
        let profile = if gm_only {
            subject.to_owned()
        } else {
            format!("{subject}-gm")
        };
        sm2_ca
            .write_client_bundle(dir, subject, &profile, endpoint, tlcp_endpoint)
            .map_err(|e| format!("SM2 client {subject}: {e}"))?;
    }
    let clients_ca = gm::write_clients_ca(dir).map_err(|e| e.to_string())?;
    let tls = tls_config(dir, transport)?;
    let read = |stem: &str, suffix: &str| {
        std::fs::read_to_string(dir.join(format!("{stem}{suffix}")))
            .map(zeroize::Zeroizing::new)
            .map_err(|e| format!("TLCP certificate {stem}: {e}"))
    };
    let tlcp = crate::tls::tlcp_config(
        &read(gm::TLCP_SIGN_STEM, ".pem")?,
        &read(gm::TLCP_SIGN_STEM, "-key.pem")?,
        &read(gm::TLCP_ENC_STEM, ".pem")?,
        &read(gm::TLCP_ENC_STEM, "-key.pem")?,
        &clients_ca,
    )
    .map_err(|e| e.to_string())?;
    let kms_config = KmsConfig::new(Policy::from_config(match transport {
        Transport::GmOnly => PolicyMode::GmOnly,
        Transport::Standard => PolicyMode::Standard,
    }));

    let store = SledStore::open(&dir.join("store")).map_err(|e| format!("store: {e}"))?;
    let kms = Arc::new(System::open(Arc::new(store), kms_config));
    let status = kms.status().map_err(|e| e.to_string())?;
    let share_path = dir.join(SHARE_FILE);
    let created = !status.initialized;
    if created {
        let out = kms
            .init(1, 1, &devpki::client_identity("admin"))
            .map_err(|e| format!("init: {e}"))?;
        let share = out.shares.first().ok_or("init returned no share")?;
        devpki::write_private_file(&share_path, share.expose_text().as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&share_path)
            .map_err(|e| format!("{}: {e}", share_path.display()))?,
    );
    kms.unseal_with(&Share::from_text(&text))
        .map_err(|e| format!("unseal: {e}"))?;
    let admin = kms
        .principal(&devpki::client_identity("admin"))
        .map_err(|e| e.to_string())?
        .ok_or("the dev admin principal is missing from the store")?;
    let ns = Namespace::new(DEV_NAMESPACE).map_err(|e| e.to_string())?;
    for (subject, role) in [
        ("auditor", Role::Auditor),
        ("app", Role::App { namespace: ns }),
    ] {
        let id = devpki::client_identity(subject);
        if kms.principal(&id).map_err(|e| e.to_string())?.is_none() {
            kms.add_principal(&authorize(&admin).map_err(|e| e.to_string())?, &id, role)
                .map_err(|e| format!("principal {subject}: {e}"))?;
        }
    }
    Ok(DevSetup {
        system: kms,
        tls,
        tlcp,
        dir: dir.to_owned(),
        created,
    })
}

/// What `kms-server dev` was asked for on its command line.
pub(crate) struct DevArgs {
    pub dir: PathBuf,
    pub listen: String,
    pub tlcp_listen: String,
    pub transport: Transport,
    pub log_format: Option<crate::logging::LogFormat>,
    /// `--rate-limit`: per principal, per second; the burst is twice this.
    pub rate_limit: f64,
}

pub(crate) fn dev_command(args: &DevArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let DevArgs {
        dir,
        listen,
        tlcp_listen,
        transport,
        log_format,
        rate_limit,
    } = args;
    let (dir, listen, tlcp_listen, transport) = (
        dir.as_path(),
        listen.as_str(),
        tlcp_listen.as_str(),
        *transport,
    );
    let _log = crate::logging::init(*log_format, crate::logging::LogConfig::default());
    let policy = Policy::from_config(match transport {
        Transport::GmOnly => PolicyMode::GmOnly,
        Transport::Standard => PolicyMode::Standard,
    });
    if !crate::serve::self_test(policy, err) {
        return EXIT_FAILED;
    }
    // A dev server holds real keys too: no swap, no core dumps (KEY-3).
    crate::hardening::log(&crate::hardening::harden());
    if let Err(e) = crate::hardening::private_dir(dir) {
        return fail(
            err,
            &format!("cannot make {} private (0700)", dir.display()),
            &e,
        );
    }
    // The dev server always runs on sled, a local store.
    let runtime = match crate::serve::runtime(true) {
        Ok(r) => r,
        Err(e) => return fail(err, "runtime", &e),
    };
    let listener = match runtime.block_on(tokio::net::TcpListener::bind(listen)) {
        Ok(l) => l,
        Err(e) => return fail(err, &format!("cannot listen on {listen}"), &e),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return fail(err, "listener", &e),
    };
    let endpoint = format!("https://{addr}");
    let tlcp_listener = match runtime.block_on(tokio::net::TcpListener::bind(tlcp_listen)) {
        Ok(l) => l,
        Err(e) => return fail(err, &format!("cannot listen on {tlcp_listen} (TLCP)"), &e),
    };
    let tlcp_endpoint = match tlcp_listener.local_addr() {
        Ok(a) => format!("https://{a}"),
        Err(e) => return fail(err, "TLCP listener", &e),
    };
    let setup = match prepare_with(dir, &endpoint, Some(&tlcp_endpoint), transport) {
        Ok(s) => s,
        Err(e) => return fail(err, "dev setup", &e),
    };
    let d = setup.dir.display();
    let (wire, gm_profiles) = match transport {
        Transport::GmOnly => (
            "gm-only: RFC 8998 only (TLS_SM4_GCM_SM3, curveSM2, SM2 certificates)",
            "(all three speak RFC 8998 with SM2 certificates)".to_owned(),
        ),
        Transport::Standard => (
            "standard TLS 1.3/1.2, and RFC 8998 (TLS_SM4_GCM_SM3) preferred when offered",
            format!("{d}/profiles/{{admin,auditor,app}}-gm.toml speak RFC 8998"),
        ),
    };
    let _ = writeln!(
        out,
        "\n  KMS DEVELOPMENT SERVER — not for production\n\
         \n  A single unseal share is kept in {d}/{SHARE_FILE}: anyone who can read it can unseal.\n\
         \n  {} {d}\n  listening     {endpoint} (mutual TLS; no plaintext port)\n\
         \n  transport     {wire}\
         \n  TLCP          {tlcp_endpoint} (GB/T 38636, double certificates; profiles <name>-tlcp)\n\
         \n  CA            {d}/ca.pem (P-256)   {d}/ca-sm2.pem (SM2)\
         \n  server cert   {d}/server.pem        {d}/server-sm2.pem\n\
         \n  audit archive {d}/{ARCHIVE_DIR} (audit records past the newest million)\n\
         \n  CLI profiles  {d}/profiles/admin.toml    (role admin)\
         \n                {d}/profiles/auditor.toml  (role auditor)\
         \n                {d}/profiles/app.toml      (role app, namespace {DEV_NAMESPACE})\
         \n                {gm_profiles}\n\
         \n  try:  kms --profile {d}/profiles/admin.toml key create --purpose encrypt --algorithm sm4-gcm --alias demo\
         \n        echo hello | kms --profile {d}/profiles/app.toml encrypt --key demo > hello.kms\
         \n        kms --profile {d}/profiles/app.toml decrypt --in hello.kms\n",
        if setup.created { "created" } else { "reusing" },
    );
    let _ = out.flush();
    let system = Arc::clone(&setup.system);
    // The audit trail is archived as in production (defaults), next to the store.
    // The dev admin may restore into a blank dev store (init happened above, locally).
    let settings = crate::server::Settings {
        audit_archive: Some(ArchivePolicy::new(setup.dir.join(ARCHIVE_DIR))),
        bootstrap: crate::bootstrap::Bootstrap::admins(vec![devpki::client_identity("admin")]),
        limits: crate::limits::Limits {
            rate_per_second: *rate_limit,
            burst: 2.0 * *rate_limit,
            ..crate::limits::Limits::default()
        },
        ..crate::server::Settings::default()
    };
    let result = runtime.block_on(crate::server::run_with_tlcp(
        listener,
        Some((tlcp_listener, Arc::clone(&setup.tlcp))),
        system,
        setup.tls,
        settings,
        crate::serve::shutdown_signal(),
    ));
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => fail(err, "server", &e),
    }
}
