//! The development PKI of `kms-server dev` and `kms pki`: a dev CA, server certificates and
//! client certificates with CLI profiles, in P-256 (made with rcgen) and, in [`gm`], SM2.
//!
//! **For development and tests only.** `kms-server dev` uses it to make everything a local KMS
//! needs on first start, and `kms pki issue` uses it to add client certificates later; it is a
//! crate of its own so both binaries share one copy without the CLI linking the server. A real
//! deployment brings its own CA (DESIGN.md, "Trust model").
//!
//! What it makes:
//! - the CA: CN `KMS Dev CA`, ECDSA P-256 with SHA-256, path length 0 (it signs leaves only),
//!   valid for ten years;
//! - server certificates: the names given (DNS names, or IP addresses such as `127.0.0.1`) as
//!   SANs, EKU serverAuth;
//! - client certificates for a subject such as `admin`: CN = the subject and one SAN URI
//!   `kms://<subject>`, EKU clientAuth.
//!
//! The server names a caller by the certificate's SAN URI, else its CN, so the **principal** of a
//! client certificate made here is the URI: [`client_identity`]`("admin") == "kms://admin"`. That
//! is the string to give `kms init --admin` and `kms principal add`.
//!
//! Private keys leave this crate only as [`Zeroizing`] PEM strings, and the rcgen key pairs are
//! wrapped so their PKCS#8 copy is wiped on drop. (ring's own in-memory form of a key is not ours
//! to wipe; it lives only while a certificate is being signed.) Files that hold a private key are
//! written with mode 0600 by [`write_private_file`].
//!
//! The layout of a dev folder is fixed here so the server and the CLI agree on it:
//! ```text
//! DIR/ca.pem  DIR/ca-key.pem          the CA
//! DIR/server.pem  DIR/server-key.pem  the server's certificate (`Issued::write(DIR, "server")`)
//! DIR/certs/<subject>.pem  DIR/certs/<subject>-key.pem   client certificates
//! DIR/profiles/<subject>.toml         CLI profiles (`kms --profile <subject>` or `--profile FILE`)
//! ```
//! and the SM2 files beside them, listed in [`gm`].

pub mod gm;

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

/// The CA certificate's file name in a dev folder.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name in a dev folder (mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The folder, inside a dev folder, that holds client certificates and keys.
pub const CERTS_DIR: &str = "certs";
/// The folder, inside a dev folder, that holds CLI profiles.
const PROFILES_DIR: &str = "profiles";

/// The CA's common name.
const CA_COMMON_NAME: &str = "KMS Dev CA";
/// The scheme of the SAN URI in client certificates; the URI is the principal's subject.
const CLIENT_URI_SCHEME: &str = "kms://";

/// The CA lives ten years, so a dev folder keeps working.
const CA_VALIDITY_DAYS: i64 = 3650;
/// Leaf certificates live 825 days (the longest lifetime common CA policy allows).
const LEAF_VALIDITY_DAYS: i64 = 825;
/// Certificates start an hour in the past, so a clock a little behind still accepts them.
const BACKDATE: Duration = Duration::hours(1);
/// The longest subject accepted; it also becomes a file name.
const MAX_SUBJECT_LEN: usize = 64;

/// What went wrong while making or loading dev certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevPkiError {
    /// rcgen could not build, sign or parse a certificate or key.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A client subject that is empty, too long, or has characters other than
    /// `A-Z a-z 0-9 . _ -` (it becomes part of a URI and a file name).
    #[error(
        "invalid subject {0:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -, not starting with . or -"
    )]
    InvalidSubject(String),
    /// The CA certificate could not be parsed.
    #[error("the CA certificate is not a valid PEM X.509 certificate")]
    BadCaCertificate,
    /// The CA key does not belong to the CA certificate.
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    /// The SM2 half (kms-gmtls) could not make or load a certificate or key.
    #[error("SM2 certificate: {0}")]
    Sm2(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// This module's result type.
pub type Result<T, E = DevPkiError> = std::result::Result<T, E>;

/// The principal the server sees for a client certificate made by [`DevCa::issue_client`]:
/// its SAN URI, `kms://<subject>`.
#[must_use]
pub fn client_identity(subject: &str) -> String {
    format!("{CLIENT_URI_SCHEME}{subject}")
}

/// An rcgen key pair whose PKCS#8 copy is wiped when it is dropped.
struct WipedKeyPair(KeyPair);

impl Drop for WipedKeyPair {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM; wiped on drop.
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[private key elided]")
            .finish()
    }
}

impl Issued {
    /// Writes `DIR/<stem>.pem` (mode 0644) and `DIR/<stem>-key.pem` (mode 0600), creating `dir`,
    /// and returns both paths.
    ///
    /// # Errors
    /// When the folder or a file cannot be written.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        create_dir(dir)?;
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        write_public_file(&cert, self.cert_pem.as_bytes())?;
        write_private_file(&key, self.key_pem.as_bytes())?;
        Ok((cert, key))
    }
}

/// The dev CA: its certificate and its private key.
pub struct DevCa {
    cert_pem: String,
    key: WipedKeyPair,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("cert_pem", &self.cert_pem)
            .field("key", &"[private key elided]")
            .finish()
    }
}

impl DevCa {
    /// Makes a new CA: CN `KMS Dev CA`, ECDSA P-256, path length 0, valid ten years.
    ///
    /// # Errors
    /// When rcgen cannot generate the key or sign the certificate.
    pub fn generate() -> Result<Self> {
        let key = WipedKeyPair(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key.0)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads a CA from its certificate and PKCS#8 private key, both PEM; checks that they belong
    /// together.
    ///
    /// # Errors
    /// When either does not parse, or the key is not the certificate's.
    fn load(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = WipedKeyPair(KeyPair::from_pem(key_pem)?);
        let der = rustls_pki_pem_to_der(cert_pem).ok_or(DevPkiError::BadCaCertificate)?;
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|_| DevPkiError::BadCaCertificate)?;
        if cert.tbs_certificate.subject_pki.raw != key.0.subject_public_key_info().as_slice() {
            return Err(DevPkiError::KeyMismatch);
        }
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key,
        })
    }

    /// Loads the CA from `DIR/ca.pem` and `DIR/ca-key.pem`.
    ///
    /// # Errors
    /// When a file cannot be read or does not parse, or the key is not the certificate's.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let cert = read_file(&dir.join(CA_CERT_FILE))?;
        let key = Zeroizing::new(read_file(&dir.join(CA_KEY_FILE))?);
        Self::load(&cert, &key)
    }

    /// Writes `DIR/ca.pem` (0644) and `DIR/ca-key.pem` (0600), creating `dir`.
    ///
    /// # Errors
    /// When the folder or a file cannot be written.
    pub fn write_dir(&self, dir: &Path) -> Result<()> {
        create_dir(dir)?;
        write_public_file(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes())?;
        write_private_file(&dir.join(CA_KEY_FILE), self.key_pem().as_bytes())
    }

    /// The CA certificate, PEM: what servers and clients trust.
    #[must_use]
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA's PKCS#8 private key, PEM.
    #[must_use]
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.0.serialize_pem())
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses, e.g.
    /// `["localhost", "127.0.0.1"]`); the first name is also the CN.
    ///
    /// # Errors
    /// When a name is not a valid DNS name or IP address, or signing fails.
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued> {
        let owned: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        let mut params = CertificateParams::new(owned)?;
        params.distinguished_name = DistinguishedName::new();
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign_leaf(params)
    }

    /// Issues a client certificate for `subject`: CN = `subject`, SAN URI `kms://<subject>` (the
    /// principal, see [`client_identity`]).
    ///
    /// # Errors
    /// When the subject is not acceptable ([`DevPkiError::InvalidSubject`]), or signing fails.
    pub fn issue_client(&self, subject: &str) -> Result<Issued> {
        validate_subject(subject)?;
        let uri = Ia5String::try_from(client_identity(subject))?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, subject);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_leaf(params)
    }

    /// Fills in what every leaf shares (validity, key usage, AKI), then signs with a fresh P-256 key.
    fn sign_leaf(&self, mut params: CertificateParams) -> Result<Issued> {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, LEAF_VALIDITY_DAYS);
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key.0)?;
        let leaf_key = WipedKeyPair(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?);
        let cert = params.signed_by(&leaf_key.0, &issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(leaf_key.0.serialize_pem()),
        })
    }
}

/// Checks a client subject: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not starting with `.` or
/// `-` (it becomes a URI and a file name, so `..` and `-flag` must not get through).
///
/// # Errors
/// [`DevPkiError::InvalidSubject`].
pub fn validate_subject(subject: &str) -> Result<()> {
    let ok_chars = subject
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    let ok_start = !subject.starts_with(['.', '-']);
    if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN || !ok_chars || !ok_start {
        return Err(DevPkiError::InvalidSubject(subject.to_owned()));
    }
    Ok(())
}

/// A CLI profile (TOML) naming the endpoint and the CA, certificate and key files. Relative paths
/// are resolved against the profile file's own folder by the CLI.
#[must_use]
pub fn profile_toml(endpoint: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    profile_toml_with(endpoint, "standard", ca, cert, key)
}

/// As [`profile_toml`], with the transport the CLI speaks: `standard` (no `tls` line is
/// written), `gm` (RFC 8998) or `tlcp`.
fn profile_toml_with(endpoint: &str, tls: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    let tls_line = if tls == "standard" {
        String::new()
    } else {
        format!("tls = {}\n", toml_string(tls))
    };
    format!(
        "# KMS CLI profile (development): use with `kms --profile <this file>`.\n\
         endpoint = {}\n{tls_line}ca = {}\ncert = {}\nkey = {}\n",
        toml_string(endpoint),
        toml_string(&ca.to_string_lossy()),
        toml_string(&cert.to_string_lossy()),
        toml_string(&key.to_string_lossy()),
    )
}

/// Issues a client certificate for `subject` into `DIR/certs/` and writes the profile
/// `DIR/profiles/<subject>.toml` for `endpoint`, with paths relative to the profile. Returns the
/// profile's path.
///
/// # Errors
/// As [`DevCa::issue_client`], or when a file cannot be written.
pub fn write_client_bundle(
    ca: &DevCa,
    dir: &Path,
    subject: &str,
    endpoint: &str,
) -> Result<PathBuf> {
    let issued = ca.issue_client(subject)?;
    issued.write(&dir.join(CERTS_DIR), subject)?;
    let profiles = dir.join(PROFILES_DIR);
    create_dir(&profiles)?;
    let up = Path::new("..");
    let profile = profiles.join(format!("{subject}.toml"));
    let text = profile_toml(
        endpoint,
        &up.join(CA_CERT_FILE),
        &up.join(CERTS_DIR).join(format!("{subject}.pem")),
        &up.join(CERTS_DIR).join(format!("{subject}-key.pem")),
    );
    write_public_file(&profile, text.as_bytes())?;
    Ok(profile)
}

/// Writes a file that holds a secret: created (or truncated) with mode 0600, and narrowed to 0600
/// if it already existed with wider permissions.
///
/// # Errors
/// When the file cannot be written.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a file that holds nothing secret (mode 0644).
fn write_public_file(path: &Path, contents: &[u8]) -> Result<()> {
    write_with_mode(path, contents, 0o644)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let io_err = |source| DevPkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let file = options.open(path).map_err(io_err)?;
        // `mode` applies only when the file is created; an existing file keeps its own.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err)?;
        write_all_synced(file, contents).map_err(io_err)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let file = options.open(path).map_err(io_err)?;
        write_all_synced(file, contents).map_err(io_err)
    }
}

fn write_all_synced(mut file: fs::File, contents: &[u8]) -> io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| DevPkiError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| DevPkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(days);
}

/// The DER of the first `CERTIFICATE` block in `pem`.
fn rustls_pki_pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|der| der.to_vec())
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, RootCertStore};
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    use super::*;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn roots(ca: &DevCa) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(der(&ca.cert_pem())).unwrap();
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The SAN URIs and CNs of a PEM certificate.
    fn names(pem: &str) -> (Vec<String>, Vec<String>) {
        let der = der(pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let uris = cert
            .subject_alternative_name()
            .unwrap()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| {
                        if let GeneralName::URI(u) = n {
                            Some((*u).to_owned())
                        } else {
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cns = cert
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().unwrap().to_owned())
            .collect();
        (uris, cns)
    }

    #[test]
    fn ca_is_a_p256_ca_named_kms_dev_ca() {
        let ca = DevCa::generate().unwrap();
        let der = der(&ca.cert_pem());
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(names(&ca.cert_pem()).1, [CA_COMMON_NAME]);
        assert_eq!(
            cert.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
        assert!(ca.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn client_cert_chains_to_the_ca_and_names_its_principal() {
        let ca = DevCa::generate().unwrap();
        let issued = ca.issue_client("app").unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(&ca), provider())
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&der(&issued.cert_pem), &[], UnixTime::now())
            .unwrap();
        let (uris, cns) = names(&issued.cert_pem);
        assert_eq!(uris, ["kms://app"]);
        assert_eq!(cns, ["app"]);
        assert_eq!(client_identity("app"), "kms://app");
    }

    #[test]
    fn server_cert_chains_to_the_ca_for_localhost_and_loopback() {
        let ca = DevCa::generate().unwrap();
        let issued = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(&ca), provider())
            .build()
            .unwrap();
        for name in ["localhost", "127.0.0.1"] {
            verifier
                .verify_server_cert(
                    &der(&issued.cert_pem),
                    &[],
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap();
        }
        let wrong = verifier.verify_server_cert(
            &der(&issued.cert_pem),
            &[],
            &ServerName::try_from("example.com").unwrap(),
            &[],
            UnixTime::now(),
        );
        assert!(
            matches!(
                wrong,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{wrong:?}"
        );
    }

    #[test]
    fn a_client_cert_is_not_a_server_cert_and_another_ca_does_not_vouch() {
        let ca = DevCa::generate().unwrap();
        let other = DevCa::generate().unwrap();
        let client = ca.issue_client("admin").unwrap();
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots(&ca), provider())
            .build()
            .unwrap();
        // The client certificate names `admin`, not localhost, and its EKU is clientAuth:
        // webpki checks the purpose first.
        let as_server = server_verifier.verify_server_cert(
            &der(&client.cert_pem),
            &[],
            &ServerName::try_from("localhost").unwrap(),
            &[],
            UnixTime::now(),
        );
        assert!(
            matches!(
                as_server,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::InvalidPurpose
                        | CertificateError::InvalidPurposeContext { .. }
                ))
            ),
            "{as_server:?}"
        );
        let other_verifier = WebPkiClientVerifier::builder_with_provider(roots(&other), provider())
            .build()
            .unwrap();
        // Every dev CA is named `KMS Dev CA`, so webpki takes the other CA for the issuer and
        // the signature does not verify under its key.
        let other_ca =
            other_verifier.verify_client_cert(&der(&client.cert_pem), &[], UnixTime::now());
        assert!(
            matches!(
                other_ca,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::BadSignature
                ))
            ),
            "{other_ca:?}"
        );
    }

    #[test]
    fn a_loaded_ca_issues_certs_that_chain_to_the_original() {
        let ca = DevCa::generate().unwrap();
        let loaded = DevCa::load(&ca.cert_pem(), &ca.key_pem()).unwrap();
        let issued = loaded.issue_client("auditor").unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(&ca), provider())
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&der(&issued.cert_pem), &[], UnixTime::now())
            .unwrap();
    }

    #[test]
    fn load_refuses_a_key_from_another_ca() {
        let ca = DevCa::generate().unwrap();
        let other = DevCa::generate().unwrap();
        assert!(matches!(
            DevCa::load(&ca.cert_pem(), &other.key_pem()),
            Err(DevPkiError::KeyMismatch)
        ));
        assert!(matches!(
            DevCa::load("not a certificate", &ca.key_pem()),
            Err(DevPkiError::BadCaCertificate)
        ));
    }

    #[test]
    fn subjects_that_would_escape_a_uri_or_a_folder_are_refused() {
        let ca = DevCa::generate().unwrap();
        for bad in ["", "..", "../x", "a/b", "-rf", "a b", "é", &"x".repeat(65)] {
            assert!(
                matches!(ca.issue_client(bad), Err(DevPkiError::InvalidSubject(_))),
                "{bad:?}"
            );
        }
        for good in ["admin", "app-2", "billing.prod", "A_b"] {
            validate_subject(good).unwrap();
        }
    }

    #[test]
    fn debug_output_elides_private_keys() {
        let ca = DevCa::generate().unwrap();
        let issued = ca.issue_client("app").unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    }

    #[cfg(unix)]
    #[test]
    fn written_keys_are_private_and_the_folder_round_trips() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate().unwrap();
        ca.write_dir(dir.path()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.path().join(CA_CERT_FILE)), 0o644);

        // An existing key file with wide permissions is narrowed on rewrite.
        let key = dir.path().join(CA_KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o666)).unwrap();
        ca.write_dir(dir.path()).unwrap();
        assert_eq!(mode(&key), 0o600);

        let loaded = DevCa::load_dir(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());

        let profile =
            write_client_bundle(&loaded, dir.path(), "app", "https://127.0.0.1:7443").unwrap();
        assert_eq!(profile, dir.path().join("profiles/app.toml"));
        assert_eq!(mode(&dir.path().join("certs/app-key.pem")), 0o600);
        let text = fs::read_to_string(&profile).unwrap();
        assert!(
            text.contains("endpoint = \"https://127.0.0.1:7443\""),
            "{text}"
        );
        assert!(text.contains("cert = \"../certs/app.pem\""), "{text}");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("x\ny"), r#""x\u000Ay""#);
    }
}
