//! `kms-server check-config FILE`: what `serve` would trip over, found before a start (issue 21
//! item 6). Every problem is listed, not only the first, so one run tells an operator all there
//! is to fix: files that are missing or unreadable, private keys (and the PostgreSQL password)
//! readable by group or others, certificates that do not parse, are expired or not yet valid,
//! or lack the key usage their place needs, a policy the certificates cannot serve (the same
//! check `serve` makes, `tls::server_config_with_crl`), and a data directory others can enter.

use std::fmt::Write as _;
use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::config::Config;

/// What a certificate file is for, which decides the key usage it needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A TLS server chain: the leaf needs serverAuth (if it lists extended key usages) and
    /// digitalSignature (if it lists key usages).
    Server,
    /// The TLCP signing or encryption certificate: only parsed and dated (GB/T 38636 usages
    /// are checked by the TLCP configuration itself).
    Tlcp,
    /// Client CAs: every certificate must be a CA allowed to sign certificates.
    ClientCa,
}

/// The findings of one run.
#[derive(Default)]
struct Report {
    problems: Vec<String>,
    notes: Vec<String>,
}

impl Report {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }
}

/// Reads `path` as text, or records why it cannot.
fn readable(report: &mut Report, what: &str, path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            report.problem(format!("{what} {}: cannot read: {e}", path.display()));
            None
        }
    }
}

/// A secret file must be the owner's alone (0600 or 0400).
fn private(report: &mut Report, what: &str, path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            report.problem(format!(
                "{what} {}: readable by group or others (mode {mode:03o}); chmod 600 it",
                path.display()
            ));
        }
    }
}

/// Parses, dates and checks the usage of every certificate in the PEM `text`.
fn certificates(report: &mut Report, what: &str, path: &Path, text: &str, role: Role, now: i64) {
    let ders: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if ders.is_empty() {
        report.problem(format!(
            "{what} {}: no PEM certificate in the file",
            path.display()
        ));
        return;
    }
    for (i, der) in ders.iter().enumerate() {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            report.problem(format!(
                "{what} {}: certificate #{} does not parse as X.509",
                path.display(),
                i + 1
            ));
            continue;
        };
        let name = format!("{what} {} ({})", path.display(), cert.subject());
        let validity = cert.validity();
        let (from, until) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        if until < now {
            report.problem(format!("{name}: expired on {}", validity.not_after));
        } else if from > now {
            report.problem(format!("{name}: not valid before {}", validity.not_before));
        } else if i == 0 || role == Role::ClientCa {
            report.notes.push(format!(
                "{name}: expires {} (in {} days)",
                validity.not_after,
                (until - now) / 86_400
            ));
        }
        usage(report, &name, &cert, role, i == 0);
    }
}

fn usage(report: &mut Report, name: &str, cert: &X509Certificate<'_>, role: Role, leaf: bool) {
    match role {
        Role::Server if leaf => {
            if let Ok(Some(eku)) = cert.extended_key_usage()
                && !eku.value.server_auth
                && !eku.value.any
            {
                report.problem(format!(
                    "{name}: its extended key usage does not include serverAuth"
                ));
            }
            if let Ok(Some(ku)) = cert.key_usage()
                && !ku.value.digital_signature()
            {
                report.problem(format!(
                    "{name}: its key usage does not include digitalSignature"
                ));
            }
        }
        Role::ClientCa => {
            let ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
            if !ca {
                report.problem(format!(
                    "{name}: not a CA certificate (basicConstraints cA is not set)"
                ));
            } else if let Ok(Some(ku)) = cert.key_usage()
                && !ku.value.key_cert_sign()
            {
                report.problem(format!(
                    "{name}: its key usage does not include keyCertSign"
                ));
            }
        }
        Role::Server | Role::Tlcp => {}
    }
}

/// The data directory: absent (serve creates it 0700, so its parent must exist), or a
/// directory that only its owner may enter.
fn data_dir(report: &mut Report, dir: &Path) {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            report.problem(format!("data_dir {}: not a directory", dir.display()));
        }
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                report.problem(format!(
                    "data_dir {}: open to group or others (mode {mode:03o}); chmod 700 it",
                    dir.display()
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            if parent.is_some_and(|p| !p.is_dir()) {
                report.problem(format!(
                    "data_dir {}: neither it nor its parent directory exists",
                    dir.display()
                ));
            } else {
                report.notes.push(format!(
                    "data_dir {}: created (0700) at start",
                    dir.display()
                ));
            }
        }
        Err(e) => report.problem(format!("data_dir {}: {e}", dir.display())),
    }
}

/// Runs every check on `config`, as of `now` (seconds since the epoch).
fn check(config: &Config, now: i64) -> Report {
    let mut report = Report::default();
    data_dir(&mut report, &config.data_dir);
    if let Some(p) = &config.postgres_password_file
        && readable(&mut report, "postgres_password_file", p).is_some()
    {
        private(&mut report, "postgres_password_file", p);
    }
    let transport = match config.transport() {
        Ok(t) => t,
        Err(e) => {
            report.problem(e.to_string());
            return report;
        }
    };
    let Some(tls) = &config.tls else {
        report.problem("[tls] is missing".into());
        return report;
    };
    let cert_file = |report: &mut Report, what: &str, path: &Path, role: Role| {
        let text = readable(report, what, path)?;
        certificates(report, what, path, &text, role, now);
        Some(text)
    };
    let key_file = |report: &mut Report, what: &str, path: &Path| {
        let text = zeroize::Zeroizing::new(readable(report, what, path)?);
        private(report, what, path);
        Some(text)
    };
    let cert = cert_file(&mut report, "tls.cert", &tls.cert, Role::Server);
    let key = key_file(&mut report, "tls.key", &tls.key);
    let ca = cert_file(&mut report, "tls.client_ca", &tls.client_ca, Role::ClientCa);
    let gm = match (&tls.gm_cert, &tls.gm_key) {
        (Some(c), Some(k)) => Some((
            cert_file(&mut report, "tls.gm_cert", c, Role::Server),
            key_file(&mut report, "tls.gm_key", k),
        )),
        (None, None) => None,
        _ => {
            report.problem("tls.gm_cert and tls.gm_key go together: set both or neither".into());
            None
        }
    };
    if let Some(crl) = &tls.client_crl {
        readable(&mut report, "tls.client_crl", crl);
    }
    // The policy against the certificates: what `serve` itself builds, so the two cannot differ.
    if let (Some(cert), Some(key), Some(ca)) = (&cert, &key, &ca) {
        let mut pairs = vec![crate::tls::CertPair {
            cert_pem: cert,
            key_pem: key,
        }];
        match &gm {
            Some((Some(c), Some(k))) => pairs.push(crate::tls::CertPair {
                cert_pem: c,
                key_pem: k,
            }),
            Some(_) => return report,
            None => {}
        }
        if let Err(e) =
            crate::tls::server_config_with_crl(transport, &pairs, ca, tls.client_crl.as_deref())
        {
            report.problem(format!("[tls] (policy {}): {e}", config.policy));
        }
    }
    if let Some(t) = &config.tlcp {
        let files = (
            cert_file(&mut report, "tlcp.sign_cert", &t.sign_cert, Role::Tlcp),
            key_file(&mut report, "tlcp.sign_key", &t.sign_key),
            cert_file(&mut report, "tlcp.enc_cert", &t.enc_cert, Role::Tlcp),
            key_file(&mut report, "tlcp.enc_key", &t.enc_key),
        );
        if let ((Some(sc), Some(sk), Some(ec), Some(ek)), Some(ca)) = (files, &ca)
            && let Err(e) = crate::tls::tlcp_config(&sc, &sk, &ec, &ek, ca)
        {
            report.problem(format!("[tlcp]: {e}"));
        }
    }
    report
}

/// `kms-server check-config FILE`: 0 and a summary on `out` when the configuration is ready to
/// serve, else 1 with every problem on `err`.
pub(crate) fn check_config_command(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "{}: 1 problem:\n  - {e}", path.display());
            return EXIT_FAILED;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let report = check(&config, now);
    if report.problems.is_empty() {
        let mut text = format!(
            "{}: ok (policy {}, storage {}, listen {})\n",
            path.display(),
            config.policy,
            config.storage,
            config.listen
        );
        for n in &report.notes {
            let _ = writeln!(text, "  {n}");
        }
        if write!(out, "{text}").is_err() {
            return EXIT_FAILED;
        }
        EXIT_OK
    } else {
        let n = report.problems.len();
        let mut text = format!(
            "{}: {n} problem{}:\n",
            path.display(),
            if n == 1 { "" } else { "s" }
        );
        for p in &report.problems {
            let _ = writeln!(text, "  - {p}");
        }
        let _ = write!(err, "{text}");
        EXIT_FAILED
    }
}
