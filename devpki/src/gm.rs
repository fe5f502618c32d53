//! The GM half of the development PKI (issue 16): an SM2 CA beside the P-256 one, an SM2 server
//! certificate for RFC 8998, the TLCP server pair (a signing and an encryption certificate), and
//! SM2 client certificates (signing, plus an encryption certificate for TLCP).
//!
//! Made with [`kms_gmtls::x509::Sm2Ca`]: rcgen cannot sign with SM2. Layout beside the P-256
//! files of [`super`]:
//! ```text
//! DIR/ca-sm2.pem  DIR/ca-sm2-key.pem                  the SM2 CA
//! DIR/server-sm2.pem  DIR/server-sm2-key.pem          RFC 8998 server certificate
//! DIR/tlcp-sign.pem  DIR/tlcp-sign-key.pem            TLCP server signing certificate
//! DIR/tlcp-enc.pem  DIR/tlcp-enc-key.pem              TLCP server encryption certificate
//! DIR/clients-ca.pem                                  both CAs: whom the server accepts
//! DIR/certs/<subject>-sm2.pem  …-sm2-key.pem          SM2 client certificate (RFC 8998, TLCP sign)
//! DIR/certs/<subject>-sm2-enc.pem  …-sm2-enc-key.pem  SM2 client encryption certificate (TLCP)
//! DIR/profiles/<subject>-gm.toml                      CLI profile speaking RFC 8998
//! DIR/profiles/<subject>-tlcp.toml                    CLI profile speaking TLCP (when served)
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use kms_gmtls::x509::{LeafSpec, Sm2Ca, Sm2CertifiedKey, Usage};
use zeroize::Zeroizing;

use super::{
    CA_CERT_FILE, CERTS_DIR, DevPkiError, PROFILES_DIR, Result, client_identity, create_dir,
    read_file, validate_subject, write_private_file, write_public_file,
};

/// The SM2 CA certificate's file name in a dev folder.
pub const SM2_CA_CERT_FILE: &str = "ca-sm2.pem";
/// The SM2 CA private key's file name in a dev folder (mode 0600).
pub const SM2_CA_KEY_FILE: &str = "ca-sm2-key.pem";
const SM2_CA_COMMON_NAME: &str = "KMS Dev SM2 CA";
/// The server's RFC 8998 certificate (file stem).
pub const SM2_SERVER_STEM: &str = "server-sm2";
/// The TLCP server's signing certificate (file stem).
pub const TLCP_SIGN_STEM: &str = "tlcp-sign";
/// The TLCP server's encryption certificate (file stem).
pub const TLCP_ENC_STEM: &str = "tlcp-enc";
/// Both dev CAs in one file: the server's `client_ca`.
pub const CLIENTS_CA_FILE: &str = "clients-ca.pem";

const CA_VALIDITY_DAYS: u32 = 3650;
const LEAF_VALIDITY_DAYS: u32 = 825;

/// The dev SM2 CA.
#[derive(Debug)]
pub struct DevSm2Ca(Sm2Ca);

/// The client side files of one subject: profile, signing pair, encryption pair.
#[derive(Debug)]
pub struct Sm2ClientFiles {
    /// The RFC 8998 profile, `DIR/profiles/<profile_name>.toml`.
    pub profile: PathBuf,
    /// The signing certificate (RFC 8998, TLCP signing) and its key (mode 0600).
    pub cert: PathBuf,
    /// See `cert`.
    pub key: PathBuf,
    /// The TLCP encryption certificate and its key (mode 0600).
    pub enc_cert: PathBuf,
    /// See `enc_cert`.
    pub enc_key: PathBuf,
}

fn gm_error(e: &kms_gmtls::x509::Error) -> DevPkiError {
    DevPkiError::Sm2(e.to_string())
}

/// Writes `DIR/<stem>.pem` (0644) and `DIR/<stem>-key.pem` (0600); returns both paths.
fn write_pair(issued: &Sm2CertifiedKey, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
    create_dir(dir)?;
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    write_public_file(&cert, issued.cert_pem.as_bytes())?;
    write_private_file(&key, issued.key_pem.as_bytes())?;
    Ok((cert, key))
}

impl DevSm2Ca {
    /// A new SM2 CA, CN `KMS Dev SM2 CA`, valid for ten years.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn generate() -> Result<Self> {
        Sm2Ca::generate(SM2_CA_COMMON_NAME, CA_VALIDITY_DAYS)
            .map(Self)
            .map_err(|e| gm_error(&e))
    }

    /// Loads `DIR/ca-sm2.pem` and `DIR/ca-sm2-key.pem`.
    ///
    /// # Errors
    /// When a file cannot be read, or the key does not belong to the CA.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let cert = read_file(&dir.join(SM2_CA_CERT_FILE))?;
        let key = Zeroizing::new(read_file(&dir.join(SM2_CA_KEY_FILE))?);
        Sm2Ca::from_pem(&cert, &key)
            .map(Self)
            .map_err(|e| gm_error(&e))
    }

    /// Loads the CA from `dir`, or makes one and writes it there.
    ///
    /// # Errors
    /// As [`DevSm2Ca::load_dir`] and [`DevSm2Ca::generate`].
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        if dir.join(SM2_CA_CERT_FILE).exists() {
            return Self::load_dir(dir);
        }
        let ca = Self::generate()?;
        create_dir(dir)?;
        write_public_file(&dir.join(SM2_CA_CERT_FILE), ca.0.cert_pem().as_bytes())?;
        write_private_file(&dir.join(SM2_CA_KEY_FILE), ca.0.key_pem().as_bytes())?;
        Ok(ca)
    }

    /// The SM2 CA certificate, PEM.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        self.0.cert_pem()
    }

    fn issue(&self, spec: &LeafSpec) -> Result<Sm2CertifiedKey> {
        self.0.issue(spec).map_err(|e| gm_error(&e))
    }

    /// A server certificate of `usage` for `localhost` and 127.0.0.1.
    fn server(&self, usage: Usage) -> Result<Sm2CertifiedKey> {
        let mut spec = LeafSpec::new("localhost", usage, LEAF_VALIDITY_DAYS);
        spec.dns_names = vec!["localhost".into()];
        spec.ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        self.issue(&spec)
    }

    /// The server's RFC 8998 certificate and the TLCP pair, written into `dir`.
    ///
    /// # Errors
    /// When signing fails or a file cannot be written.
    pub fn write_server_files(&self, dir: &Path) -> Result<()> {
        write_pair(&self.server(Usage::TlsServer)?, dir, SM2_SERVER_STEM)?;
        write_pair(&self.server(Usage::TlcpServerSign)?, dir, TLCP_SIGN_STEM)?;
        write_pair(&self.server(Usage::TlcpServerEnc)?, dir, TLCP_ENC_STEM)?;
        Ok(())
    }

    /// SM2 client certificates for `subject` (SAN URI `kms://<subject>`) in `DIR/certs/`, a
    /// profile `DIR/profiles/<profile_name>.toml` that speaks RFC 8998 to `endpoint`, and, with
    /// `tlcp_endpoint`, `DIR/profiles/<subject>-tlcp.toml` that speaks TLCP to it.
    ///
    /// # Errors
    /// When the subject is not acceptable, signing fails, or a file cannot be written.
    pub fn write_client_bundle(
        &self,
        dir: &Path,
        subject: &str,
        profile_name: &str,
        endpoint: &str,
        tlcp_endpoint: Option<&str>,
    ) -> Result<Sm2ClientFiles> {
        validate_subject(subject)?;
        validate_subject(profile_name)?;
        let leaf = |usage| {
            let mut spec = LeafSpec::new(subject, usage, LEAF_VALIDITY_DAYS);
            spec.uris = vec![client_identity(subject)];
            self.issue(&spec)
        };
        let certs = dir.join(CERTS_DIR);
        let (cert, key) = write_pair(&leaf(Usage::TlsClient)?, &certs, &format!("{subject}-sm2"))?;
        let (enc_cert, enc_key) = write_pair(
            &leaf(Usage::TlcpClientEnc)?,
            &certs,
            &format!("{subject}-sm2-enc"),
        )?;
        let profiles = dir.join(PROFILES_DIR);
        create_dir(&profiles)?;
        let profile = profiles.join(format!("{profile_name}.toml"));
        let up = Path::new("..");
        let text = super::profile_toml_with(
            endpoint,
            "gm",
            &up.join(SM2_CA_CERT_FILE),
            &up.join(CERTS_DIR).join(format!("{subject}-sm2.pem")),
            &up.join(CERTS_DIR).join(format!("{subject}-sm2-key.pem")),
        );
        write_public_file(&profile, text.as_bytes())?;
        if let Some(tlcp) = tlcp_endpoint {
            let mut text = super::profile_toml_with(
                tlcp,
                "tlcp",
                &up.join(SM2_CA_CERT_FILE),
                &up.join(CERTS_DIR).join(format!("{subject}-sm2.pem")),
                &up.join(CERTS_DIR).join(format!("{subject}-sm2-key.pem")),
            );
            text.push_str(&format!(
                "enc_cert = {}\nenc_key = {}\n",
                super::toml_string(
                    &up.join(CERTS_DIR)
                        .join(format!("{subject}-sm2-enc.pem"))
                        .to_string_lossy()
                ),
                super::toml_string(
                    &up.join(CERTS_DIR)
                        .join(format!("{subject}-sm2-enc-key.pem"))
                        .to_string_lossy()
                ),
            ));
            write_public_file(
                &profiles.join(format!("{subject}-tlcp.toml")),
                text.as_bytes(),
            )?;
        }
        Ok(Sm2ClientFiles {
            profile,
            cert,
            key,
            enc_cert,
            enc_key,
        })
    }
}

/// Writes `DIR/clients-ca.pem`: the P-256 and the SM2 dev CA, so the server accepts clients of
/// either kind; returns its text.
///
/// # Errors
/// When a CA file cannot be read or the bundle cannot be written.
pub fn write_clients_ca(dir: &Path) -> Result<String> {
    let bundle = format!(
        "{}{}",
        read_file(&dir.join(CA_CERT_FILE))?,
        read_file(&dir.join(SM2_CA_CERT_FILE))?
    );
    write_public_file(&dir.join(CLIENTS_CA_FILE), bundle.as_bytes())?;
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn writes_server_and_client_files_that_chain_to_the_sm2_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevSm2Ca::load_or_create(dir.path()).unwrap();
        ca.write_server_files(dir.path()).unwrap();
        let files = ca
            .write_client_bundle(
                dir.path(),
                "admin",
                "admin-gm",
                "https://127.0.0.1:7443",
                Some("https://127.0.0.1:7444"),
            )
            .unwrap();
        let der = |p: &Path| {
            let pem = std::fs::read_to_string(p).unwrap();
            rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
                .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
                .unwrap()
        };
        let anchor = der(&dir.path().join(SM2_CA_CERT_FILE));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let server = der(&dir.path().join("server-sm2.pem"));
        let chain = kms_gmtls::x509::verify_chain(
            &server,
            &[],
            &[&anchor],
            now,
            kms_gmtls::x509::Purpose::ServerAuth,
        )
        .unwrap();
        assert_eq!(chain.leaf.dns_names, vec!["localhost".to_owned()]);
        let client = der(&files.cert);
        let chain = kms_gmtls::x509::verify_chain(
            &client,
            &[],
            &[&anchor],
            now,
            kms_gmtls::x509::Purpose::ClientAuth,
        )
        .unwrap();
        assert_eq!(chain.leaf.uris, vec!["kms://admin".to_owned()]);
        for key in [
            &files.key,
            &files.enc_key,
            &dir.path().join(SM2_CA_KEY_FILE),
        ] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let profile = std::fs::read_to_string(&files.profile).unwrap();
        assert!(profile.contains("tls = \"gm\""), "{profile}");
        let tlcp = std::fs::read_to_string(dir.path().join("profiles/admin-tlcp.toml")).unwrap();
        assert!(
            tlcp.contains("tls = \"tlcp\"") && tlcp.contains("7444"),
            "{tlcp}"
        );
        assert!(tlcp.contains("admin-sm2-enc-key.pem"), "{tlcp}");
        // Reloading gives the same CA, not a new one.
        let again = DevSm2Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
    }
}
