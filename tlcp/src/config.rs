//! Server and client configuration: the double certificates, their keys, the trust anchors.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kms_gmtls::x509::{self, Purpose};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sm2::pkcs8::DecodePrivateKey as _;
use sm2::{PublicKey, SecretKey};

use crate::error::{CertRole, TlcpError};
use crate::suite::CipherSuite;

/// How long a handshake may take by default before the connection is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One endpoint's TLCP identity: a signing certificate (with the chain to send after it), an
/// encryption certificate, and both private keys. Keys are `sm2::SecretKey`, wiped on drop;
/// `Debug` shows neither.
pub struct DoubleCert {
    /// `[sign leaf, enc leaf, intermediates…]`, DER, in the order the Certificate message sends
    /// them (what Tongsuo sends: sign, enc, then the chain).
    pub(crate) chain: Vec<Vec<u8>>,
    pub(crate) sign_key: SecretKey,
    pub(crate) enc_key: SecretKey,
}

impl fmt::Debug for DoubleCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DoubleCert")
            .field("certificates", &self.chain.len())
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl DoubleCert {
    /// From PEM: the signing certificate (optionally followed by its intermediates), its key,
    /// the encryption certificate, its key. Keys are PKCS#8 (`PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`, what `openssl ecparam -genkey` writes) on sm2p256v1.
    ///
    /// # Errors
    ///
    /// [`TlcpError::Config`] for unreadable PEM, keys that are not SM2, or a key that does not
    /// match its certificate; [`TlcpError::Certificate`] for a certificate that is not SM2.
    pub fn from_pem(
        sign_cert_pem: &str,
        sign_key_pem: &str,
        enc_cert_pem: &str,
        enc_key_pem: &str,
    ) -> Result<Self, TlcpError> {
        let sign_chain = certs_from_pem(sign_cert_pem, "signing certificate")?;
        let enc = certs_from_pem(enc_cert_pem, "encryption certificate")?;
        let (Some(sign_leaf), Some(enc_leaf)) = (sign_chain.first(), enc.first()) else {
            return Err(TlcpError::Config(
                "a certificate PEM holds no certificate".into(),
            ));
        };
        let sign_key = key_from_pem(sign_key_pem, "signing key")?;
        let enc_key = key_from_pem(enc_key_pem, "encryption key")?;
        check_key(sign_leaf, &sign_key, "signing")?;
        check_key(enc_leaf, &enc_key, "encryption")?;
        let mut chain = vec![sign_leaf.clone(), enc_leaf.clone()];
        chain.extend(sign_chain.into_iter().skip(1));
        Ok(Self {
            chain,
            sign_key,
            enc_key,
        })
    }

    pub(crate) fn enc_cert(&self) -> &[u8] {
        &self.chain[1]
    }
}

/// What a TLCP server needs: its double certificate, the CAs client certificates must chain
/// to (client authentication is always required), and the suites it allows.
pub struct TlcpServerConfig {
    pub(crate) identity: DoubleCert,
    pub(crate) client_anchors: Vec<Vec<u8>>,
    /// Subject names of `client_anchors`, DER, for CertificateRequest.
    pub(crate) client_ca_names: Vec<Vec<u8>>,
    /// Suites in order of preference (the server chooses).
    pub suites: Vec<CipherSuite>,
    /// ALPN protocols to agree to, in order of preference (e.g. `b"h2"`); empty: no ALPN.
    pub alpn_protocols: Vec<Vec<u8>>,
    /// Handshakes that take longer are aborted ([`TlcpError::Timeout`]).
    pub handshake_timeout: Duration,
}

impl fmt::Debug for TlcpServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlcpServerConfig")
            .field("identity", &self.identity)
            .field("client_anchors", &self.client_anchors.len())
            .field("suites", &self.suites)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlcpServerConfig {
    /// A server with all four suites (ECDHE before ECC, GCM before CBC), requiring a client
    /// signing and encryption certificate that chain to one of `client_ca_pem`'s certificates.
    ///
    /// # Errors
    ///
    /// As [`DoubleCert::from_pem`]; [`TlcpError::Config`] when `client_ca_pem` holds no
    /// certificate or one that does not parse as an SM2 CA certificate.
    pub fn from_pem(
        sign_cert_pem: &str,
        sign_key_pem: &str,
        enc_cert_pem: &str,
        enc_key_pem: &str,
        client_ca_pem: &str,
    ) -> Result<Self, TlcpError> {
        let identity =
            DoubleCert::from_pem(sign_cert_pem, sign_key_pem, enc_cert_pem, enc_key_pem)?;
        let client_anchors = certs_from_pem(client_ca_pem, "client CA")?;
        Self::new(identity, client_anchors)
    }

    /// From a double certificate and DER client CA certificates.
    ///
    /// # Errors
    ///
    /// [`TlcpError::Config`] when there is no anchor or one does not parse.
    pub fn new(identity: DoubleCert, client_anchors: Vec<Vec<u8>>) -> Result<Self, TlcpError> {
        if client_anchors.is_empty() {
            return Err(TlcpError::Config("no client CA certificate".into()));
        }
        let client_ca_names = client_anchors
            .iter()
            .map(|der| subject_der(der))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            identity,
            client_anchors,
            client_ca_names,
            suites: CipherSuite::ALL.to_vec(),
            alpn_protocols: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }
}

/// What a TLCP client needs: the CAs the server's certificates must chain to and, for mutual
/// authentication (and any ECDHE suite), its own double certificate.
pub struct TlcpClientConfig {
    pub(crate) identity: Option<DoubleCert>,
    pub(crate) server_anchors: Vec<Vec<u8>>,
    /// Suites offered, in order of preference.
    pub suites: Vec<CipherSuite>,
    /// ALPN protocols to offer (e.g. `b"h2"`); empty: no ALPN extension.
    pub alpn_protocols: Vec<Vec<u8>>,
    /// Handshakes that take longer are aborted.
    pub handshake_timeout: Duration,
}

impl fmt::Debug for TlcpClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlcpClientConfig")
            .field("identity", &self.identity)
            .field("server_anchors", &self.server_anchors.len())
            .field("suites", &self.suites)
            .finish_non_exhaustive()
    }
}

impl TlcpClientConfig {
    /// A client trusting `server_ca_pem`, offering all four suites, with an optional double
    /// certificate (required by servers that ask for one, and by ECDHE).
    ///
    /// # Errors
    ///
    /// [`TlcpError::Config`] when `server_ca_pem` holds no certificate.
    pub fn new(server_ca_pem: &str, identity: Option<DoubleCert>) -> Result<Self, TlcpError> {
        let server_anchors = certs_from_pem(server_ca_pem, "server CA")?;
        if server_anchors.is_empty() {
            return Err(TlcpError::Config("no server CA certificate".into()));
        }
        Ok(Self {
            identity,
            server_anchors,
            suites: CipherSuite::ALL.to_vec(),
            alpn_protocols: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }
}

fn certs_from_pem(pem: &str, what: &str) -> Result<Vec<Vec<u8>>, TlcpError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlcpError::Config(format!("{what} PEM: {e}")))
}

fn key_from_pem(pem: &str, what: &str) -> Result<SecretKey, TlcpError> {
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlcpError::Config(format!("{what} PEM: {e}")))?;
    let parsed = if let PrivateKeyDer::Pkcs8(k) = &key {
        SecretKey::from_pkcs8_der(k.secret_pkcs8_der()).ok()
    } else if let PrivateKeyDer::Sec1(k) = &key {
        SecretKey::from_sec1_der(k.secret_sec1_der()).ok()
    } else {
        None
    };
    parsed.ok_or_else(|| TlcpError::Config(format!("{what} is not an SM2 (sm2p256v1) private key")))
}

fn check_key(cert: &[u8], key: &SecretKey, what: &str) -> Result<(), TlcpError> {
    let public = x509::sm2_public_key_of(cert)
        .map_err(|e| TlcpError::Config(format!("{what} certificate: {e}")))?;
    if public != key.public_key() {
        return Err(TlcpError::Config(format!(
            "the {what} key does not match the {what} certificate"
        )));
    }
    Ok(())
}

fn subject_der(cert: &[u8]) -> Result<Vec<u8>, TlcpError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| TlcpError::Config(format!("CA certificate: {e}")))?;
    Ok(parsed.tbs_certificate.subject.as_raw().to_vec())
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies a peer's `[sign, enc, chain…]` Certificate list against `anchors`: both leaves
/// chain (through the rest of the list) to an anchor, for `purpose`, and their keyUsage (when
/// present) fits their role. Returns the two public keys.
pub(crate) fn verify_peer(
    certs: &[Vec<u8>],
    anchors: &[Vec<u8>],
    purpose: Purpose,
    roles: (CertRole, CertRole),
) -> Result<(PublicKey, PublicKey), TlcpError> {
    let (sign_role, enc_role) = roles;
    let sign = certs
        .first()
        .ok_or(TlcpError::MissingCertificate(sign_role))?;
    let enc = certs
        .get(1)
        .ok_or(TlcpError::MissingCertificate(enc_role))?;
    let intermediates: Vec<&[u8]> = certs.iter().skip(2).map(Vec::as_slice).collect();
    let anchors: Vec<&[u8]> = anchors.iter().map(Vec::as_slice).collect();
    let now = now_unix();
    let check = |der: &[u8], role: CertRole| {
        x509::verify_chain(der, &intermediates, &anchors, now, purpose)
            .map_err(|source| TlcpError::Certificate { role, source })
    };
    let sign_chain = check(sign, sign_role)?;
    let enc_chain = check(enc, enc_role)?;
    if let Some(ku) = sign_chain.leaf.key_usage
        && !ku.digital_signature
    {
        return Err(TlcpError::KeyUsage {
            role: sign_role,
            needed: "digitalSignature",
        });
    }
    if let Some(ku) = enc_chain.leaf.key_usage
        && !(ku.key_encipherment || ku.key_agreement)
    {
        return Err(TlcpError::KeyUsage {
            role: enc_role,
            needed: "keyEncipherment or keyAgreement",
        });
    }
    Ok((sign_chain.leaf_public_key, enc_chain.leaf_public_key))
}
