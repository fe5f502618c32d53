//! `kms-server check-config` on real certificates from the dev PKI: a good configuration passes
//! with a summary, and a broken one fails listing every problem, not only the first.

#![cfg(test)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kms_devpki::DevCa;
use kms_devpki::gm::DevSm2Ca;

fn check_config(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kms-server"))
        .arg("check-config")
        .arg(config)
        .env_remove("KMS_DATA_DIR")
        .env_remove("KMS_POLICY")
        .env_remove("KMS_TLS_CERT")
        .env_remove("KMS_TLS_KEY")
        .env_remove("KMS_TLS_CLIENT_CA")
        .output()
        .unwrap()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A dev CA, a server certificate for localhost, a client certificate, and a private data dir.
struct Fixture {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate().unwrap();
        ca.write_dir(dir.path()).unwrap();
        ca.issue_server(&["localhost"])
            .unwrap()
            .write(dir.path(), "server")
            .unwrap();
        ca.issue_client("app")
            .unwrap()
            .write(dir.path(), "client")
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chmod(&data, 0o700);
        Self { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// kms.toml with the given [tls] files (relative to the fixture) and policy.
    fn config(&self, policy: &str, cert: &str, key: &str, client_ca: &str) -> PathBuf {
        let text = format!(
            "listen = \"127.0.0.1:7443\"\ndata_dir = \"data\"\npolicy = \"{policy}\"\n\
             [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{client_ca}\"\n"
        );
        let p = self.path("kms.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A server certificate from the dev CA's key valid only from one year's start to
    /// another's, written as `stem.pem` / `stem-key.pem`.
    fn dated_server(&self, stem: &str, from_year: i32, until_year: i32) {
        let ca_key = rcgen::KeyPair::from_pem(&self.ca.key_pem()).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&self.ca.cert_pem(), &ca_key).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(from_year, 1, 1);
        params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(self.path(&format!("{stem}.pem")), cert.pem()).unwrap();
        let key_path = self.path(&format!("{stem}-key.pem"));
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        chmod(&key_path, 0o600);
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_good_standard_config_is_ok_and_says_when_its_certificates_expire() {
    let f = Fixture::new();
    let config = f.config("standard", "server.pem", "server-key.pem", "ca.pem");
    let o = check_config(&config);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(": ok (policy standard"), "{out}");
    assert!(out.contains("tls.cert") && out.contains("expires"), "{out}");
    assert!(
        out.contains("tls.client_ca") && out.contains("KMS Dev CA"),
        "{out}"
    );
}

#[test]
fn a_good_gm_only_config_with_sm2_certificates_is_ok() {
    let f = Fixture::new();
    let sm2 = DevSm2Ca::generate().unwrap();
    sm2.write_server_files(f.dir.path()).unwrap();
    std::fs::write(f.path("ca-sm2.pem"), sm2.cert_pem()).unwrap();
    let config = f.config(
        "gm-only",
        "server-sm2.pem",
        "server-sm2-key.pem",
        "ca-sm2.pem",
    );
    let o = check_config(&config);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(": ok (policy gm-only"), "{out}");
}

#[test]
fn every_problem_is_listed_not_only_the_first() {
    let f = Fixture::new();
    // A client certificate as the server's (no serverAuth), its key readable by all, a leaf
    // as the client CA, the data directory open to others, and gm-only with a P-256 certificate.
    chmod(&f.path("client-key.pem"), 0o644);
    chmod(&f.path("data"), 0o755);
    let config = f.config("gm-only", "client.pem", "client-key.pem", "server.pem");
    let o = check_config(&config);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(!out.contains("ok"), "{out}");
    for fragment in [
        "5 problems:",
        "data_dir",
        "open to group or others (mode 755)",
        "tls.key",
        "readable by group or others (mode 644)",
        "does not include serverAuth",
        "tls.client_ca",
        "not a CA certificate",
        "policy gm-only",
    ] {
        assert!(err.contains(fragment), "missing {fragment:?} in:\n{err}");
    }
}

#[test]
fn missing_files_are_each_named() {
    let f = Fixture::new();
    let config = f.config("standard", "nope.pem", "nope-key.pem", "ca.pem");
    let o = check_config(&config);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("2 problems:"), "{err}");
    assert!(
        err.contains("tls.cert") && err.contains("nope.pem: cannot read"),
        "{err}"
    );
    assert!(
        err.contains("tls.key") && err.contains("nope-key.pem: cannot read"),
        "{err}"
    );
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let f = Fixture::new();
    f.dated_server("old", 2020, 2021);
    let o = check_config(&f.config("standard", "old.pem", "old-key.pem", "ca.pem"));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tls.cert") && err.contains("expired on"),
        "{err}"
    );

    f.dated_server("future", 2100, 2101);
    let o = check_config(&f.config("standard", "future.pem", "future-key.pem", "ca.pem"));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("not valid before"), "{err}");
}

#[test]
fn an_unreadable_config_is_one_problem() {
    let f = Fixture::new();
    let o = check_config(&f.path("absent.toml"));
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("1 problem:") && err.contains("cannot read"),
        "{err}"
    );
}
