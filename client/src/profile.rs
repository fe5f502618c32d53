//! Connection profiles: the TOML files `kms-server dev` writes and the CLI reads (`--profile`),
//! so an application connects with the same file an operator tests with.
//!
//! ```toml
//! endpoint = "https://127.0.0.1:7443"
//! ca = "../pki/ca.pem"          # paths are relative to the profile's folder
//! cert = "../pki/app.pem"
//! key = "../pki/app-key.pem"
//! # tls = "gm"                  # RFC 8998; "tlcp" also needs enc_cert and enc_key
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::connect::{Connection, TlsMode};

/// A profile file as written on disk.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub endpoint: String,
    #[serde(default)]
    pub tls: Option<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// TLCP only: the encryption certificate and key (`cert`/`key` are the signing pair).
    #[serde(default)]
    pub enc_cert: Option<PathBuf>,
    #[serde(default)]
    pub enc_key: Option<PathBuf>,
}

/// Why a profile could not be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProfileError(pub String);

impl ProfileFile {
    /// Parses a profile's text; `shown` names it in errors.
    ///
    /// # Errors
    /// [`ProfileError`] saying what is wrong.
    pub fn parse(text: &str, shown: &str) -> Result<Self, ProfileError> {
        toml::from_str(text)
            .map_err(|e| ProfileError(format!("invalid profile {shown}: {}", e.message())))
    }
}

/// Reads the profile at `path` and the files it names (the private key into wiped memory):
/// everything [`crate::connect::connect`] needs. `timeout` is the per-request deadline.
///
/// # Errors
/// [`ProfileError`] naming the profile or the file that cannot be read or parsed.
pub fn load(path: &Path, timeout: Option<Duration>) -> Result<Connection, ProfileError> {
    let shown = path.display().to_string();
    let text = fs::read_to_string(path)
        .map_err(|e| ProfileError(format!("cannot read profile {shown}: {e}")))?;
    let file = ProfileFile::parse(&text, &shown)?;
    let tls = TlsMode::parse(file.tls.as_deref().unwrap_or_default())
        .ok_or_else(|| ProfileError(format!("profile {shown}: tls is standard, gm or tlcp")))?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let read = |p: &Path, what: &str| {
        let p = base.join(p);
        fs::read_to_string(&p).map_err(|e| {
            ProfileError(format!(
                "profile {shown}: cannot read the {what} file {}: {e}",
                p.display()
            ))
        })
    };
    Ok(Connection {
        endpoint: file.endpoint.clone(),
        ca_pem: read(&file.ca, "CA")?,
        cert_pem: read(&file.cert, "certificate")?,
        key_pem: Zeroizing::new(read(&file.key, "key")?),
        tls,
        enc: match (&file.enc_cert, &file.enc_key) {
            (Some(cert), Some(key)) => Some((
                read(cert, "encryption certificate")?,
                Zeroizing::new(read(key, "encryption key")?),
            )),
            _ => None,
        },
        timeout,
    })
}
