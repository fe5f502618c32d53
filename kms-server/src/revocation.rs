//! Client-certificate revocation (issue 18 item 6): `[tls] client_crl`, a file of CRLs (PEM or
//! DER) from the client CAs, read at start and re-read when it changes, without a restart.
//!
//! - Chains of non-SM2 CAs are checked by webpki (`WebPkiClientVerifier::with_crls`), which also
//!   verifies each CRL's signature against its CA.
//! - Every end entity, SM2 ones included (RFC 8998 and TLCP, whose verifiers have no CRL
//!   support), is also looked up here by issuer name and serial number. The CRLs of SM2 CAs are
//!   verified here, when the file is read: SM2-with-SM3 under the distinguishing ID
//!   1234567812345678 (GM/T 0009, as the SM2 certificates are; OpenSSL signs so with
//!   `-sigopt distid:1234567812345678`).
//!
//! A file that cannot be read or parsed, that holds a CRL of an issuer that is not a client CA,
//! or an SM2 CA's CRL whose signature does not verify, is refused: at start the server does not start; on a reload the previous CRLs stay in
//! force and the error is logged (never fail open).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};

/// Why a CRL file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    #[error("cannot read the client CRL file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the client CRL file {path} holds no CRL (PEM \"X509 CRL\" blocks or one DER CRL)")]
    Empty { path: PathBuf },
    #[error("the client CRL file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the client CRL file {path}: the verifier refused it: {message}")]
    Verifier { path: PathBuf, message: String },
}

/// Builds the chain verifier for a set of CRLs (`tls.rs` knows the CAs and the transport).
pub(crate) type MakeVerifier = Box<
    dyn Fn(
            Vec<CertificateRevocationListDer<'static>>,
        ) -> Result<Arc<dyn ClientCertVerifier>, String>
        + Send
        + Sync,
>;

/// A certificate as CRLs name it: issuer name (DER) and serial number (content octets). Taken
/// once per connection, so that every request can be checked against the CRLs in force.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertKey {
    issuer: Vec<u8>,
    serial: Vec<u8>,
}

impl CertKey {
    /// The key of a DER certificate; `None` if it does not parse.
    #[must_use]
    pub fn of(cert_der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
        Some(Self {
            issuer: cert.issuer().as_raw().to_vec(),
            serial: cert.raw_serial().to_vec(),
        })
    }
}

/// What one version of the file gave.
struct Loaded {
    bytes: Vec<u8>,
    /// Every revoked certificate.
    revoked: HashSet<CertKey>,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// The CRLs in force, and how to reload them.
pub struct Revocation {
    path: PathBuf,
    /// Subject names (DER) of the configured client CAs, the only acceptable CRL issuers, with
    /// the SM2 CAs' public keys (their CRLs are verified here).
    ca_names: std::collections::HashMap<Vec<u8>, Option<sm2::PublicKey>>,
    make: MakeVerifier,
    current: RwLock<Arc<Loaded>>,
    /// The last version of the file that was refused: not tried (nor logged) again until it
    /// changes.
    refused: std::sync::Mutex<Option<Vec<u8>>>,
}

impl std::fmt::Debug for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocation")
            .field("path", &self.path)
            .field("revoked", &self.loaded().revoked.len())
            .finish_non_exhaustive()
    }
}

/// The CRLs of a file: PEM "X509 CRL" blocks, else the whole file as one DER CRL.
fn crls_of(bytes: &[u8]) -> Vec<CertificateRevocationListDer<'static>> {
    let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .collect();
    if !pem.is_empty() || bytes.starts_with(b"-----") {
        return pem;
    }
    if bytes.is_empty() {
        Vec::new()
    } else {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    }
}

impl Revocation {
    /// Reads `path` now; an unreadable or invalid file is an error (the server must not start
    /// without the revocations it was told to enforce).
    pub(crate) fn load(
        path: &Path,
        client_cas: &[CertificateDer<'static>],
        make: MakeVerifier,
    ) -> Result<Arc<Self>, CrlError> {
        let ca_names = client_cas
            .iter()
            .filter_map(|der| {
                let (_, c) = X509Certificate::from_der(der).ok()?;
                let sm2 = kms_gmtls::verifier::is_sm2_certificate(der)
                    .then(|| kms_gmtls::x509::sm2_public_key_of(der).ok())
                    .flatten();
                Some((c.subject().as_raw().to_vec(), sm2))
            })
            .collect();
        let bytes = read(path)?;
        let partial = Self {
            path: path.to_owned(),
            ca_names,
            make,
            current: RwLock::new(Arc::new(Loaded {
                bytes: Vec::new(),
                revoked: HashSet::new(),
                verifier: Arc::new(NeverLoaded),
            })),
            refused: std::sync::Mutex::new(None),
        };
        let loaded = partial.parse(bytes)?;
        *partial
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(Arc::new(partial))
    }

    fn loaded(&self) -> Arc<Loaded> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn invalid(&self, message: impl Into<String>) -> CrlError {
        CrlError::Invalid {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn parse(&self, bytes: Vec<u8>) -> Result<Loaded, CrlError> {
        let crls = crls_of(&bytes);
        if crls.is_empty() {
            return Err(CrlError::Empty {
                path: self.path.clone(),
            });
        }
        let mut revoked = HashSet::new();
        for (i, der) in crls.iter().enumerate() {
            let (rest, crl) = CertificateRevocationList::from_der(der)
                .map_err(|e| self.invalid(format!("CRL {} does not parse: {e}", i + 1)))?;
            if !rest.is_empty() {
                return Err(self.invalid(format!("CRL {} has trailing bytes", i + 1)));
            }
            let issuer = crl.issuer().as_raw().to_vec();
            let Some(sm2_key) = self.ca_names.get(&issuer) else {
                return Err(self.invalid(format!(
                    "CRL {} is issued by {}, which is not a client CA",
                    i + 1,
                    crl.issuer()
                )));
            };
            if let Some(key) = sm2_key
                && !sm2_signed(&crl, key)
            {
                return Err(self.invalid(format!(
                    "CRL {} of the SM2 CA {} is not signed by it (SM2-with-SM3, ID \
                     1234567812345678)",
                    i + 1,
                    crl.issuer()
                )));
            }
            for entry in crl.iter_revoked_certificates() {
                revoked.insert(CertKey {
                    issuer: issuer.clone(),
                    serial: entry.raw_serial().to_vec(),
                });
            }
        }
        let verifier = (self.make)(crls).map_err(|message| CrlError::Verifier {
            path: self.path.clone(),
            message,
        })?;
        Ok(Loaded {
            bytes,
            revoked,
            verifier,
        })
    }

    /// Re-reads the file; if it changed and is valid, its CRLs replace the ones in force.
    /// `Ok(true)` when they were replaced; on an error the ones in force stay, and the same
    /// refused content is not reported again.
    pub fn reload_if_changed(&self) -> Result<bool, CrlError> {
        let bytes = read(&self.path)?;
        let mut refused = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if bytes == self.loaded().bytes || refused.as_ref() == Some(&bytes) {
            return Ok(false);
        }
        let loaded = match self.parse(bytes.clone()) {
            Ok(l) => l,
            Err(e) => {
                *refused = Some(bytes);
                return Err(e);
            }
        };
        *refused = None;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(true)
    }

    /// How many certificates the CRLs in force revoke.
    #[must_use]
    pub fn revoked_count(&self) -> usize {
        self.loaded().revoked.len()
    }

    /// Whether the CRLs in force revoke this certificate (by issuer name and serial number).
    #[must_use]
    pub fn is_revoked(&self, cert_der: &[u8]) -> bool {
        // Unparseable here means it did not pass the chain verifier either.
        CertKey::of(cert_der).is_none_or(|key| self.revokes(&key))
    }

    /// Whether the CRLs in force revoke the certificate `key` names.
    #[must_use]
    pub fn revokes(&self, key: &CertKey) -> bool {
        self.loaded().revoked.contains(key)
    }

    /// Polls the file every `every` until `stop` changes, logging reloads and refusals.
    pub async fn watch(
        self: Arc<Self>,
        every: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let this = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                Ok(Ok(true)) => tracing::warn!(
                    path = %self.path.display(),
                    revoked = self.revoked_count(),
                    "client CRL reloaded"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "client CRL not reloaded; the previous CRLs stay in force"
                ),
                Err(e) => tracing::error!(error = %e, "client CRL reload task failed"),
            }
        }
    }
}

/// Whether `crl` is signed SM2-with-SM3 by `key` under the GM/T 0009 default ID.
fn sm2_signed(crl: &CertificateRevocationList<'_>, key: &sm2::PublicKey) -> bool {
    use sm2::dsa::signature::Verifier as _;
    const SM2_WITH_SM3: &str = "1.2.156.10197.1.501";
    if crl.signature_algorithm.algorithm.to_id_string() != SM2_WITH_SM3 {
        return false;
    }
    let Ok(verifying) = sm2::dsa::VerifyingKey::new(kms_gmtls::x509::DEFAULT_DIST_ID, *key) else {
        return false;
    };
    let Ok(signature) = sm2::dsa::Signature::from_der(&crl.signature_value.data) else {
        return false;
    };
    verifying
        .verify(crl.tbs_cert_list.as_ref(), &signature)
        .is_ok()
}

fn read(path: &Path) -> Result<Vec<u8>, CrlError> {
    std::fs::read(path).map_err(|error| CrlError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Stands in for a verifier only while the first load is under way; refuses everything.
#[derive(Debug)]
struct NeverLoaded;

impl ClientCertVerifier for NeverLoaded {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ))
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::BadSignature,
        ))
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::BadSignature,
        ))
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Vec::new()
    }
}

/// The client verifier of a server with a CRL file: the chain verifier built for the CRLs in
/// force (swapped on reload), then the issuer-and-serial lookup for every end entity.
#[derive(Debug)]
pub(crate) struct RevokingVerifier {
    revocation: Arc<Revocation>,
    /// The CertificateRequest's CA names: the client CAs, which no reload changes.
    hints: Vec<DistinguishedName>,
}

impl RevokingVerifier {
    pub(crate) fn new(revocation: Arc<Revocation>) -> Self {
        let hints = revocation.loaded().verifier.root_hint_subjects().to_vec();
        Self { revocation, hints }
    }
}

impl ClientCertVerifier for RevokingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.revocation.loaded().verifier.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.revocation.loaded().verifier.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let loaded = self.revocation.loaded();
        let verified = loaded
            .verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.revocation.is_revoked(end_entity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.revocation
            .loaded()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.revocation
            .loaded()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.revocation.loaded().verifier.supported_verify_schemes()
    }
}
