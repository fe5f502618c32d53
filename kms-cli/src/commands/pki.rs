//! `kms pki issue`: client certificates and profiles from the dev CA, offline: P-256 from the
//! dev CA, or with `--gm` SM2 (a signing and a TLCP encryption certificate) from the dev SM2 CA
//! and a profile that speaks RFC 8998.

use serde_json::json;

use crate::args::PkiCommand;
use crate::error::CliError;
use crate::files;
use crate::output::{fields, print_json};
use kms_devpki::{self as devpki, DevCa};

pub(super) fn run(cmd: PkiCommand, json: bool) -> Result<(), CliError> {
    match cmd {
        PkiCommand::Issue {
            subject,
            ca_dir,
            out_dir,
            endpoint,
            gm,
        } => {
            devpki::validate_subject(&subject).map_err(|e| CliError::usage(e.to_string()))?;
            if gm {
                return issue_sm2(&subject, &ca_dir, out_dir, &endpoint, json);
            }
            let ca = DevCa::load_dir(&ca_dir).map_err(|e| {
                CliError::usage(format!(
                    "cannot load the dev CA from {}: {e}",
                    ca_dir.display()
                ))
                .with_hint(format!(
                    "--ca-dir names the folder with {} and {} (what `kms-server dev` made)",
                    devpki::CA_CERT_FILE,
                    devpki::CA_KEY_FILE
                ))
            })?;
            let out = out_dir.unwrap_or(ca_dir);
            let profile = devpki::write_client_bundle(&ca, &out, &subject, &endpoint)
                .map_err(|e| CliError::other(e.to_string()))?;
            let certs = out.join(devpki::CERTS_DIR);
            let cert = certs.join(format!("{subject}.pem"));
            let key = certs.join(format!("{subject}-key.pem"));
            let principal = devpki::client_identity(&subject);
            if json {
                return print_json(&json!({
                    "subject": subject,
                    "principal": principal,
                    "cert": cert,
                    "key": key,
                    "profile": profile,
                }));
            }
            let mut text = fields(&[
                ("principal", principal.clone()),
                ("certificate", cert.display().to_string()),
                ("key", format!("{} (mode 0600)", key.display())),
                ("profile", profile.display().to_string()),
            ]);
            text.push_str(&format!(
                "\nregister it (as an admin): kms principal add {principal} --role app --namespace NS\n\
                 then use it: kms --profile {} status",
                profile.display()
            ));
            files::println(&text)
        }
    }
}

/// `kms pki issue --gm`: SM2 certificates for `subject` from the dev SM2 CA, and the profile
/// `<subject>-gm` (tls = "gm").
fn issue_sm2(
    subject: &str,
    ca_dir: &std::path::Path,
    out_dir: Option<std::path::PathBuf>,
    endpoint: &str,
    json: bool,
) -> Result<(), CliError> {
    let ca = devpki::gm::DevSm2Ca::load_dir(ca_dir).map_err(|e| {
        CliError::usage(format!(
            "cannot load the dev SM2 CA from {}: {e}",
            ca_dir.display()
        ))
        .with_hint(format!(
            "--ca-dir names the folder with {} and {} (what `kms-server dev` made)",
            devpki::gm::SM2_CA_CERT_FILE,
            devpki::gm::SM2_CA_KEY_FILE
        ))
    })?;
    let out = out_dir.unwrap_or_else(|| ca_dir.to_owned());
    let files = ca
        .write_client_bundle(&out, subject, &format!("{subject}-gm"), endpoint, None)
        .map_err(|e| CliError::other(e.to_string()))?;
    let principal = devpki::client_identity(subject);
    if json {
        return print_json(&json!({
            "subject": subject,
            "principal": principal,
            "cert": files.cert,
            "key": files.key,
            "enc_cert": files.enc_cert,
            "enc_key": files.enc_key,
            "profile": files.profile,
        }));
    }
    let mut text = fields(&[
        ("principal", principal.clone()),
        ("certificate", files.cert.display().to_string()),
        ("key", format!("{} (mode 0600)", files.key.display())),
        ("enc certificate", files.enc_cert.display().to_string()),
        (
            "enc key",
            format!("{} (mode 0600)", files.enc_key.display()),
        ),
        ("profile", files.profile.display().to_string()),
    ]);
    text.push_str(&format!(
        "\nregister it (as an admin): kms principal add {principal} --role app --namespace NS\n\
         then use it (RFC 8998): kms --profile {} status",
        files.profile.display()
    ));
    files::println(&text)
}
