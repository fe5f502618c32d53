//! From what the user typed to what the commands use: the connection settings (a profile, or the
//! `KMS_*` environment), read from disk and checked (STYLE.md §4 rule 8, ripgrep's "hiargs").
//!
//! Where the connection comes from, first match wins:
//! 1. `--profile NAME|FILE`, else the `KMS_PROFILE` environment variable. A FILE is a path (it
//!    contains a `/` or ends in `.toml`); a NAME is looked up as `$KMS_HOME/profiles/NAME.toml`,
//!    then `./kms-dev/profiles/NAME.toml` (where `kms-server dev` writes them).
//! 2. `KMS_ENDPOINT`, `KMS_CA`, `KMS_CERT` and `KMS_KEY` (all four; paths relative to the current
//!    folder), and optionally `KMS_TLS`.
//!
//! A profile is TOML; relative paths in it are relative to the profile file's folder:
//! ```toml
//! endpoint = "https://127.0.0.1:7443"
//! ca = "../ca.pem"
//! cert = "../certs/admin.pem"
//! key = "../certs/admin-key.pem"
//! # tls = "gm"   # RFC 8998 (TLS_SM4_GCM_SM3, curveSM2, SM2 certificates); default "standard"
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::client::Connection;
use crate::error::CliError;

/// The folder `kms-server dev` uses by default; its `profiles/` is searched for profile names.
pub const DEV_DIR: &str = "kms-dev";

const NO_CONNECTION_HINT: &str = "pass --profile NAME|FILE (`kms-server dev` writes admin, auditor and app profiles), \
     or set KMS_ENDPOINT, KMS_CA, KMS_CERT and KMS_KEY";

use kms_client::profile::ProfileFile;

pub use crate::client::TlsMode;

/// `standard` or `gm`, as a profile's `tls` or `KMS_TLS` says.
///
/// # Errors
/// A usage error for anything else.
pub fn parse_tls(value: &str, source: &str) -> Result<TlsMode, CliError> {
    TlsMode::parse(value).ok_or_else(|| {
        CliError::usage(format!("unknown tls {value:?} in the {source}"))
            .with_hint("tls is \"standard\" (default), \"gm\" (RFC 8998) or \"tlcp\"")
    })
}

/// Connection settings with every path resolved; nothing read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `https://host:port` or `host:port`.
    pub endpoint: String,
    /// The CA certificate file (PEM).
    pub ca: PathBuf,
    /// Our client certificate file (PEM).
    pub cert: PathBuf,
    /// Our private key file (PEM).
    pub key: PathBuf,
    /// Standard TLS, RFC 8998 or TLCP.
    pub tls: TlsMode,
    /// TLCP's encryption certificate and key files (PEM).
    pub enc_cert: Option<PathBuf>,
    pub enc_key: Option<PathBuf>,
    /// Where these came from, for error messages ("profile /x/admin.toml", "KMS_* environment").
    pub source: String,
}

/// Finds the connection settings: `profile` (from `--profile`), else the environment, as the
/// module doc describes. `env` reads an environment variable; `cwd` is the current folder.
///
/// # Errors
/// A usage error (exit 2) with a hint when nothing is configured, a profile is missing or
/// malformed, or only some `KMS_*` variables are set.
pub fn settings(
    profile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Settings, CliError> {
    let from_env = env("KMS_PROFILE").filter(|p| !p.is_empty());
    if let Some(spec) = profile.map(str::to_owned).or(from_env) {
        let path = find_profile(&spec, env, cwd)?;
        return load_profile(&path);
    }
    let get = |name: &str| env(name).filter(|s| !s.is_empty());
    match (
        get("KMS_ENDPOINT"),
        get("KMS_CA"),
        get("KMS_CERT"),
        get("KMS_KEY"),
    ) {
        (None, None, None, None) => {
            Err(CliError::usage("no KMS server connection configured")
                .with_hint(NO_CONNECTION_HINT))
        }
        (Some(endpoint), Some(ca), Some(cert), Some(key)) => Ok(Settings {
            endpoint,
            ca: cwd.join(ca),
            cert: cwd.join(cert),
            key: cwd.join(key),
            tls: parse_tls(&get("KMS_TLS").unwrap_or_default(), "KMS_TLS variable")?,
            enc_cert: get("KMS_ENC_CERT").map(|p| cwd.join(p)),
            enc_key: get("KMS_ENC_KEY").map(|p| cwd.join(p)),
            source: "KMS_* environment".to_owned(),
        }),
        (endpoint, ca, cert, key) => {
            let missing: Vec<&str> = [
                ("KMS_ENDPOINT", endpoint.is_none()),
                ("KMS_CA", ca.is_none()),
                ("KMS_CERT", cert.is_none()),
                ("KMS_KEY", key.is_none()),
            ]
            .into_iter()
            .filter_map(|(name, absent)| absent.then_some(name))
            .collect();
            Err(CliError::usage(format!(
                "incomplete connection settings: {} not set",
                missing.join(", ")
            ))
            .with_hint("set all four of KMS_ENDPOINT, KMS_CA, KMS_CERT, KMS_KEY, or use --profile"))
        }
    }
}

/// The profile file for `spec`: a path when it looks like one, else a name looked up in
/// `$KMS_HOME/profiles/` and then `./kms-dev/profiles/`.
///
/// # Errors
/// A usage error naming the places looked at.
pub fn find_profile(
    spec: &str,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<PathBuf, CliError> {
    let looks_like_path =
        spec.contains('/') || spec.contains(std::path::MAIN_SEPARATOR) || spec.ends_with(".toml");
    if looks_like_path {
        let path = cwd.join(spec);
        if path.is_file() {
            return Ok(path);
        }
        return Err(CliError::usage(format!("profile file {spec} not found"))
            .with_hint("give a profile file's path, or a profile name such as `admin`"));
    }
    let file = format!("{spec}.toml");
    let mut looked = Vec::new();
    if let Some(home) = env("KMS_HOME").filter(|h| !h.is_empty()) {
        looked.push(cwd.join(home).join("profiles").join(&file));
    }
    looked.push(cwd.join(DEV_DIR).join("profiles").join(&file));
    if let Some(found) = looked.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let places: Vec<String> = looked.iter().map(|p| p.display().to_string()).collect();
    Err(CliError::usage(format!(
        "no profile named {spec:?} (looked for {})",
        places.join(", ")
    ))
    .with_hint(
        "start `kms-server dev` in this folder to create dev profiles, or pass --profile FILE",
    ))
}

/// Reads a profile file; relative paths in it are taken relative to its folder.
///
/// # Errors
/// A usage error when it cannot be read or is not a valid profile.
pub fn load_profile(path: &Path) -> Result<Settings, CliError> {
    let shown = path.display();
    let text = fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read profile {shown}: {e}")))?;
    let file = ProfileFile::parse(&text, &shown.to_string()).map_err(|e| {
        CliError::usage(e.to_string())
            .with_hint("a profile has endpoint, ca, cert and key (paths relative to the profile)")
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let tls = parse_tls(
        file.tls.as_deref().unwrap_or_default(),
        &format!("profile {shown}"),
    )?;
    Ok(Settings {
        endpoint: file.endpoint,
        tls,
        enc_cert: file.enc_cert.map(|p| base.join(p)),
        enc_key: file.enc_key.map(|p| base.join(p)),
        ca: base.join(file.ca),
        cert: base.join(file.cert),
        key: base.join(file.key),
        source: format!("profile {shown}"),
    })
}

/// Reads the CA, certificate and key files named by `settings` (the key into wiped memory).
///
/// # Errors
/// A usage error naming the file that cannot be read.
pub fn connection(settings: &Settings, timeout: Option<Duration>) -> Result<Connection, CliError> {
    let read = |path: &Path, what: &str| {
        fs::read_to_string(path).map_err(|e| {
            CliError::usage(format!(
                "cannot read the {what} file {}: {e}",
                path.display()
            ))
            .with_hint(format!("check the {what} path in the {}", settings.source))
        })
    };
    Ok(Connection {
        endpoint: settings.endpoint.clone(),
        ca_pem: read(&settings.ca, "CA")?,
        cert_pem: read(&settings.cert, "certificate")?,
        key_pem: Zeroizing::new(read(&settings.key, "key")?),
        tls: settings.tls,
        enc: match (&settings.enc_cert, &settings.enc_key) {
            (Some(cert), Some(key)) => Some((
                read(cert, "encryption certificate")?,
                Zeroizing::new(read(key, "encryption key")?),
            )),
            _ => None,
        },
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::error::ExitKind;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const PROFILE: &str = r#"
endpoint = "https://127.0.0.1:7443"
ca = "../ca.pem"
cert = "../certs/admin.pem"
key = "/abs/admin-key.pem"
"#;

    fn write_profile(dir: &Path, name: &str) -> PathBuf {
        let profiles = dir.join("profiles");
        fs::create_dir_all(&profiles).unwrap();
        let path = profiles.join(format!("{name}.toml"));
        fs::write(&path, PROFILE).unwrap();
        path
    }

    #[test]
    fn a_profile_file_resolves_paths_against_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_profile(dir.path(), "admin");
        let s = load_profile(&path).unwrap();
        let profiles = dir.path().join("profiles");
        assert_eq!(s.endpoint, "https://127.0.0.1:7443");
        assert_eq!(s.ca, profiles.join("../ca.pem"));
        assert_eq!(s.cert, profiles.join("../certs/admin.pem"));
        assert_eq!(s.key, PathBuf::from("/abs/admin-key.pem"));
    }

    #[test]
    fn a_profile_name_is_found_under_kms_home_then_the_dev_folder() {
        let cwd = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let in_dev = write_profile(&cwd.path().join(DEV_DIR), "app");
        let env = env_of(&[]);
        assert_eq!(find_profile("app", &env, cwd.path()).unwrap(), in_dev);

        let in_home = write_profile(home.path(), "app");
        let env = env_of(&[("KMS_HOME", home.path().to_str().unwrap())]);
        assert_eq!(find_profile("app", &env, cwd.path()).unwrap(), in_home);

        let err = find_profile("nobody", &env, cwd.path()).unwrap_err();
        assert_eq!(err.kind, ExitKind::Usage);
        assert!(err.message.contains("nobody"), "{}", err.message);
        assert!(err.hint.unwrap().contains("kms-server dev"));
    }

    #[test]
    fn a_profile_path_is_taken_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_profile(dir.path(), "x");
        let env = env_of(&[]);
        let s = settings(Some(path.to_str().unwrap()), &env, Path::new("/")).unwrap();
        assert_eq!(s.endpoint, "https://127.0.0.1:7443");
        let err = find_profile("./missing.toml", &env, dir.path()).unwrap_err();
        assert_eq!(err.kind, ExitKind::Usage);
        assert_eq!(err.message, "profile file ./missing.toml not found");
    }

    #[test]
    fn kms_profile_env_is_a_fallback_for_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        write_profile(&dir.path().join(DEV_DIR), "auditor");
        let env = env_of(&[("KMS_PROFILE", "auditor"), ("KMS_ENDPOINT", "ignored:1")]);
        let s = settings(None, &env, dir.path()).unwrap();
        assert!(s.source.contains("auditor.toml"), "{}", s.source);
    }

    #[test]
    fn the_environment_needs_all_four_variables() {
        let cwd = Path::new("/work");
        let env = env_of(&[
            ("KMS_ENDPOINT", "localhost:7443"),
            ("KMS_CA", "ca.pem"),
            ("KMS_CERT", "/c.pem"),
            ("KMS_KEY", "k.pem"),
        ]);
        let s = settings(None, &env, cwd).unwrap();
        assert_eq!(s.endpoint, "localhost:7443");
        assert_eq!(s.ca, PathBuf::from("/work/ca.pem"));
        assert_eq!(s.cert, PathBuf::from("/c.pem"));

        let env = env_of(&[("KMS_ENDPOINT", "localhost:7443"), ("KMS_CA", "ca.pem")]);
        let err = settings(None, &env, cwd).unwrap_err();
        assert_eq!(err.kind, ExitKind::Usage);
        assert!(err.message.contains("KMS_CERT, KMS_KEY"), "{}", err.message);

        let err = settings(None, &env_of(&[]), cwd).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.hint.unwrap().contains("--profile"));
    }

    #[test]
    fn a_malformed_profile_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        fs::write(&path, "endpoint = 1\n").unwrap();
        let err = load_profile(&path).unwrap_err();
        assert_eq!(err.kind, ExitKind::Usage);
        assert!(
            err.message.starts_with("invalid profile"),
            "{}",
            err.message
        );
        fs::write(&path, PROFILE.to_owned() + "extra = 1\n").unwrap();
        let err = load_profile(&path).unwrap_err();
        assert_eq!(err.kind, ExitKind::Usage);
        assert!(
            err.message.starts_with("invalid profile")
                && err.message.contains("unknown field `extra`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_dev_pki_profile_writer_and_this_reader_agree() {
        let dir = tempfile::tempdir().unwrap();
        let ca = kms_devpki::DevCa::generate().unwrap();
        ca.write_dir(dir.path()).unwrap();
        let path =
            kms_devpki::write_client_bundle(&ca, dir.path(), "app", "https://127.0.0.1:7443")
                .unwrap();
        let s = load_profile(&path).unwrap();
        let conn = connection(&s, None).unwrap();
        assert_eq!(conn.ca_pem, ca.cert_pem());
        assert!(conn.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(conn.key_pem.contains("BEGIN PRIVATE KEY"));
        crate::client::tls_config(&conn).unwrap();
    }
}
