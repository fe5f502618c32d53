//! Issuing SM2-with-SM3 certificates: a CA that signs, and leaves with fresh SM2 keys.
//!
//! rcgen cannot sign with SM2 (its signers are ring/aws-lc algorithms), so the
//! `TBSCertificate` of RFC 5280 §4.1 is encoded here with the `der` crate and x509-cert's
//! extension types, signed with SM2 over SM3 under [`DEFAULT_DIST_ID`] (GM/T 0009 §10), and
//! wrapped into a `Certificate`. Every certificate issued is re-read by the strict parser before
//! it is returned, so the issuer never hands out what the verifier would refuse.
//!
//! Private keys leave only as PKCS#8 PEM in [`Zeroizing`] strings. The sm2 crate's
//! `SigningKey` neither zeroizes nor is needed beyond one signature, so it lives inside
//! [`sign`] only; the stored CA key is its PEM text.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use der::asn1::Utf8StringRef;
use der::asn1::{AnyRef, BitStringRef, Ia5String, ObjectIdentifier, OctetString, UintRef};
use der::oid::AssociatedOid;
use der::pem::LineEnding;
use der::{Decode as _, Encode as _};
use sm2::SecretKey;
use sm2::elliptic_curve::Generate as _;
use sm2::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use x509_cert::Version;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages as KuBits,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
use x509_cert::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};
use zeroize::Zeroizing;

use super::parse::Cert;
use super::{DEFAULT_DIST_ID, Error, oid};

/// Certificates start this long before they are issued, so a verifier whose clock is a little
/// behind the issuer's (another node of the cluster) does not see them as not yet valid.
const BACKDATE_SECS: u64 = 5 * 60;
/// The longest validity accepted, about a century; it also keeps the arithmetic far from
/// overflow and the dates inside GeneralizedTime.
const MAX_VALID_DAYS: u32 = 36_500;
/// RFC 5280 `ub-common-name`.
const MAX_COMMON_NAME_CHARS: usize = 64;
/// Serial numbers: 16 random bytes, well inside RFC 5280's 20-octet limit.
const SERIAL_LEN: usize = 16;
/// Key identifiers: the leftmost 160 bits of a hash of the key, as RFC 7093 §2 method 1, with
/// SM3 instead of SHA-256 so a GM-only build needs no other hash.
const KEY_ID_LEN: usize = 20;

/// What an issued certificate is for; it fixes basicConstraints, keyUsage and
/// extendedKeyUsage.
///
/// | usage | cA | keyUsage | extendedKeyUsage |
/// | --- | --- | --- | --- |
/// | `Ca` | true, pathLen 0 | keyCertSign, cRLSign | — |
/// | `TlsServer`, `TlcpServerSign` | false | digitalSignature | serverAuth |
/// | `TlsClient`, `TlcpClientSign` | false | digitalSignature | clientAuth |
/// | `TlcpServerEnc` | false | keyEncipherment, dataEncipherment, keyAgreement | serverAuth |
/// | `TlcpClientEnc` | false | keyEncipherment, dataEncipherment, keyAgreement | clientAuth |
///
/// The TLCP (GB/T 38636) pairs are the signing and encryption certificates of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Usage {
    /// An intermediate CA that may sign end-entity certificates only (pathLenConstraint 0).
    Ca,
    /// A TLS 1.3 (RFC 8998) server.
    TlsServer,
    /// A TLS 1.3 (RFC 8998) client.
    TlsClient,
    /// A TLCP server's signing certificate.
    TlcpServerSign,
    /// A TLCP server's encryption certificate.
    TlcpServerEnc,
    /// A TLCP client's signing certificate.
    TlcpClientSign,
    /// A TLCP client's encryption certificate.
    TlcpClientEnc,
}

impl Usage {
    fn key_usage(self) -> KeyUsage {
        let encipher = KuBits::KeyEncipherment | KuBits::DataEncipherment | KuBits::KeyAgreement;
        KeyUsage(match self {
            Self::Ca => KuBits::KeyCertSign | KuBits::CRLSign,
            Self::TlsServer | Self::TlsClient | Self::TlcpServerSign | Self::TlcpClientSign => {
                KuBits::DigitalSignature.into()
            }
            Self::TlcpServerEnc | Self::TlcpClientEnc => encipher,
        })
    }

    fn ext_key_usage(self) -> Option<ObjectIdentifier> {
        match self {
            Self::Ca => None,
            Self::TlsServer | Self::TlcpServerSign | Self::TlcpServerEnc => Some(oid::SERVER_AUTH),
            Self::TlsClient | Self::TlcpClientSign | Self::TlcpClientEnc => Some(oid::CLIENT_AUTH),
        }
    }
}

/// What to put in a certificate [`Sm2Ca::issue`] makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSpec {
    /// Subject commonName (1 to 64 characters; encoded as UTF8String).
    pub common_name: String,
    /// subjectAltName dNSName entries (ASCII, no spaces).
    pub dns_names: Vec<String>,
    /// subjectAltName iPAddress entries.
    pub ip_addresses: Vec<std::net::IpAddr>,
    /// subjectAltName uniformResourceIdentifier entries (ASCII, with a scheme), e.g. the
    /// `kms://principal/app` URI the server maps to a principal.
    pub uris: Vec<String>,
    /// What the certificate is for.
    pub usage: Usage,
    /// Days from now until notAfter (1 to 36 500; not past the CA's own notAfter).
    pub valid_days: u32,
}

impl LeafSpec {
    /// A spec with no subjectAltName entries; push names onto the fields as needed.
    pub fn new(common_name: impl Into<String>, usage: Usage, valid_days: u32) -> Self {
        Self {
            common_name: common_name.into(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            uris: Vec::new(),
            usage,
            valid_days,
        }
    }
}

/// An issued certificate and its fresh private key.
pub struct Sm2CertifiedKey {
    /// The certificate, PEM ("CERTIFICATE").
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The SM2 private key, PKCS#8 PEM ("PRIVATE KEY"), wiped on drop.
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for Sm2CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            cert_pem,
            cert_der: _,
            key_pem: _,
        } = self;
        f.debug_struct("Sm2CertifiedKey")
            .field("cert_pem", cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A certificate authority: its SM2/SM3 certificate and SM2 private key.
///
/// The key is kept as PKCS#8 PEM in a zeroizing string and decoded for each signature; `Debug`
/// shows the subject only.
pub struct Sm2Ca {
    cert_der: Vec<u8>,
    cert_pem: String,
    key_pem: Zeroizing<String>,
    /// The CA's subject Name, exact DER, copied into the issuer field of what it signs (chain
    /// building matches names byte for byte).
    subject_der: Vec<u8>,
    /// For display only.
    subject: String,
    /// The CA's subjectKeyIdentifier, copied into authorityKeyIdentifier; `None` when the CA
    /// certificate has none, and then leaves carry no AKI (a made-up one would not match).
    key_id: Option<Vec<u8>>,
    not_after_unix: i64,
}

impl fmt::Debug for Sm2Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sm2Ca")
            .field("subject", &self.subject)
            .field("not_after_unix", &self.not_after_unix)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Sm2Ca {
    /// A new self-signed root: fresh SM2 key, basicConstraints cA (critical, no path length
    /// limit), keyUsage keyCertSign|cRLSign (critical), subjectKeyIdentifier.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSpec`] for an empty or over-long name or `valid_days` outside
    /// 1..=36 500; [`Error::Rng`] / [`Error::Signing`] / [`Error::Encoding`] on failure.
    pub fn generate(common_name: &str, valid_days: u32) -> Result<Self, Error> {
        let secret =
            SecretKey::try_generate_from_rng(&mut getrandom::SysRng).map_err(|_| Error::Rng)?;
        let der = self_signed(&secret, common_name, valid_days)?;
        let key_pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| Error::Signing)?;
        Self::from_parts(der, key_pem)
    }

    /// Loads a CA from its certificate (PEM "CERTIFICATE") and PKCS#8 private key (PEM
    /// "PRIVATE KEY"). The certificate must be SM2/SM3, a CA (basicConstraints cA, and
    /// keyCertSign when keyUsage is present), and match the key.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] / algorithm errors for the certificate, [`Error::NotCa`],
    /// [`Error::BadPrivateKey`] for a key that is not PKCS#8 SM2 or does not match.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let ca = Self::from_pem_unchecked(cert_pem, key_pem)?;
        let cert = Cert::parse(&ca.cert_der)?;
        match (cert.basic_constraints, cert.key_usage) {
            (Some(bc), _) if !bc.ca => Err(not_ca(&cert, "basicConstraints cA is false")),
            (None, _) => Err(not_ca(&cert, "no basicConstraints extension")),
            (Some(_), Some(ku)) if !ku.key_cert_sign => {
                Err(not_ca(&cert, "keyUsage lacks keyCertSign"))
            }
            (Some(_), _) => Ok(ca),
        }
    }

    /// [`Self::from_pem`] without the CA checks, so tests can sign with a leaf key and show
    /// that verification refuses the result.
    pub(super) fn from_pem_unchecked(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let (label, der) = der::pem::decode_vec(cert_pem.as_bytes())
            .map_err(|e| Error::Malformed(format!("certificate PEM: {e}")))?;
        if label != "CERTIFICATE" {
            return Err(Error::Malformed(format!(
                "PEM label {label:?}, expected \"CERTIFICATE\""
            )));
        }
        let secret = SecretKey::from_pkcs8_pem(key_pem)
            .map_err(|_| Error::BadPrivateKey("not a PKCS#8 SM2 private key"))?;
        if Cert::parse(&der)?.sm2_public_key()? != secret.public_key() {
            return Err(Error::BadPrivateKey(
                "does not match the certificate's public key",
            ));
        }
        // Re-encoded rather than kept: one canonical form, and no stray text around it.
        let key_pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| Error::Signing)?;
        Self::from_parts(der, key_pem)
    }

    fn from_parts(cert_der: Vec<u8>, key_pem: Zeroizing<String>) -> Result<Self, Error> {
        let cert = Cert::parse(&cert_der)?;
        let subject_der = cert.x509.subject().as_raw().to_vec();
        let subject = cert.subject.clone();
        let key_id = cert.subject_key_id.map(<[u8]>::to_vec);
        let not_after_unix = cert.x509.validity().not_after.timestamp();
        drop(cert);
        let cert_pem = der::pem::encode_string("CERTIFICATE", LineEnding::LF, &cert_der)
            .map_err(der::Error::from)?;
        Ok(Self {
            cert_der,
            cert_pem,
            key_pem,
            subject_der,
            subject,
            key_id,
            not_after_unix,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// A copy of the CA private key, PKCS#8 PEM, to store (encrypted) elsewhere.
    pub fn key_pem(&self) -> Zeroizing<String> {
        self.key_pem.clone()
    }

    /// Issues a certificate for a fresh SM2 key pair: X.509 v3, random positive 16-byte
    /// serial, authority and subject key identifiers, basicConstraints (critical), keyUsage
    /// (critical) and extendedKeyUsage per [`Usage`], subjectAltName when names are given.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSpec`] for a bad name, SAN entry or validity (including one that ends
    /// after the CA's own); [`Error::Rng`] / [`Error::Signing`] / [`Error::Encoding`].
    pub fn issue(&self, spec: &LeafSpec) -> Result<Sm2CertifiedKey, Error> {
        self.issue_with_path_len(spec, (spec.usage == Usage::Ca).then_some(0))
    }

    /// [`Self::issue`] with a chosen pathLenConstraint for [`Usage::Ca`] (tests build long
    /// chains with `None`); ignored for end-entity usages.
    pub(super) fn issue_with_path_len(
        &self,
        spec: &LeafSpec,
        ca_path_len: Option<u8>,
    ) -> Result<Sm2CertifiedKey, Error> {
        let LeafSpec {
            common_name,
            dns_names,
            ip_addresses,
            uris,
            usage,
            valid_days,
        } = spec;
        let name = encode_name(common_name)?;
        let validity = validity_from_now(*valid_days)?;
        let not_after =
            i64::try_from(validity.not_after.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
        if not_after > self.not_after_unix {
            return Err(Error::InvalidSpec(format!(
                "the certificate would outlive its CA {} (valid_days {valid_days} is too long)",
                self.subject
            )));
        }
        let san = subject_alt_names(dns_names, ip_addresses, uris)?;

        let secret =
            SecretKey::try_generate_from_rng(&mut getrandom::SysRng).map_err(|_| Error::Rng)?;
        let spki = spki_der(&secret)?;
        let path_len_constraint = if *usage == Usage::Ca {
            ca_path_len
        } else {
            None
        };
        let mut extensions = vec![
            extension(
                &BasicConstraints {
                    ca: *usage == Usage::Ca,
                    path_len_constraint,
                },
                true,
            )?,
            extension(&usage.key_usage(), true)?,
        ];
        if let Some(purpose) = usage.ext_key_usage() {
            extensions.push(extension(&ExtendedKeyUsage(vec![purpose]), false)?);
        }
        if !san.is_empty() {
            // Non-critical: the subject always has a commonName (RFC 5280 §4.2.1.6).
            extensions.push(extension(&SubjectAltName(san), false)?);
        }
        extensions.push(extension(
            &SubjectKeyIdentifier(OctetString::new(key_id(&spki)?)?),
            false,
        )?);
        if let Some(ca_key_id) = &self.key_id {
            let aki = AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(ca_key_id.as_slice())?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            };
            extensions.push(extension(&aki, false)?);
        }

        let ca_secret = SecretKey::from_pkcs8_pem(&self.key_pem)
            .map_err(|_| Error::BadPrivateKey("not a PKCS#8 SM2 private key"))?;
        let cert_der = build(
            &self.subject_der,
            &name,
            &spki,
            validity,
            extensions,
            &ca_secret,
        )?;
        let cert_pem = der::pem::encode_string("CERTIFICATE", LineEnding::LF, &cert_der)
            .map_err(der::Error::from)?;
        let key_pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| Error::Signing)?;
        Ok(Sm2CertifiedKey {
            cert_pem,
            cert_der,
            key_pem,
        })
    }
}

/// A self-signed root certificate for `secret`'s key (see [`Sm2Ca::generate`]); each call
/// makes a distinct certificate (fresh serial), which tests use to pile up look-alike CAs.
pub(super) fn self_signed(
    secret: &SecretKey,
    common_name: &str,
    valid_days: u32,
) -> Result<Vec<u8>, Error> {
    let name = encode_name(common_name)?;
    let validity = validity_from_now(valid_days)?;
    let spki = spki_der(secret)?;
    let extensions = vec![
        extension(
            &BasicConstraints {
                ca: true,
                path_len_constraint: None,
            },
            true,
        )?,
        extension(&Usage::Ca.key_usage(), true)?,
        extension(
            &SubjectKeyIdentifier(OctetString::new(key_id(&spki)?)?),
            false,
        )?,
    ];
    build(&name, &name, &spki, validity, extensions, secret)
}

fn not_ca(cert: &Cert<'_>, reason: &'static str) -> Error {
    Error::NotCa {
        subject: cert.subject.clone(),
        reason,
    }
}

/// RFC 5280 §4.1, field for field.
#[derive(der::Sequence)]
struct TbsCertificate<'a> {
    #[asn1(context_specific = "0", default = "Default::default")]
    version: Version,
    serial_number: UintRef<'a>,
    signature: AlgorithmIdentifierRef<'a>,
    issuer: AnyRef<'a>,
    validity: Validity,
    subject: AnyRef<'a>,
    subject_public_key_info: AnyRef<'a>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    extensions: Option<Vec<Extension>>,
}

/// RFC 5280 §4.1 `Certificate`, with the TBS as the exact bytes that were signed.
#[derive(der::Sequence)]
struct Certificate<'a> {
    tbs_certificate: AnyRef<'a>,
    signature_algorithm: AlgorithmIdentifierRef<'a>,
    signature: BitStringRef<'a>,
}

/// `sm2-with-sm3` with absent parameters (GM/T 0015, as OpenSSL writes it).
const SM2_WITH_SM3: AlgorithmIdentifierRef<'static> = AlgorithmIdentifierRef {
    oid: oid::SM2_WITH_SM3,
    parameters: None,
};

/// Encodes, signs and assembles one certificate, then re-reads it strictly.
fn build(
    issuer_der: &[u8],
    subject_der: &[u8],
    spki_der: &[u8],
    validity: Validity,
    extensions: Vec<Extension>,
    signer: &SecretKey,
) -> Result<Vec<u8>, Error> {
    let serial = random_serial()?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: UintRef::new(&serial)?,
        signature: SM2_WITH_SM3,
        issuer: AnyRef::from_der(issuer_der)?,
        validity,
        subject: AnyRef::from_der(subject_der)?,
        subject_public_key_info: AnyRef::from_der(spki_der)?,
        extensions: Some(extensions),
    }
    .to_der()?;
    let signature = sign(signer, &tbs)?;
    let der = Certificate {
        tbs_certificate: AnyRef::from_der(&tbs)?,
        signature_algorithm: SM2_WITH_SM3,
        signature: BitStringRef::from_bytes(&signature)?,
    }
    .to_der()?;
    // A bug in the encoding above should fail here, not in a peer's verifier.
    Cert::parse(&der)?;
    Ok(der)
}

/// SM2 signature over SM3 with `Z_A` from [`DEFAULT_DIST_ID`], DER `SEQUENCE { r, s }`.
/// Hedged: OS randomness is mixed into the RFC 6979 nonce.
fn sign(secret: &SecretKey, tbs: &[u8]) -> Result<Vec<u8>, Error> {
    use signature::RandomizedSigner as _;
    let key = sm2::dsa::SigningKey::new(DEFAULT_DIST_ID, secret).map_err(|_| Error::Signing)?;
    let signature: sm2::dsa::Signature = key
        .try_sign_with_rng(&mut getrandom::SysRng, tbs)
        .map_err(|_| Error::Signing)?;
    Ok(signature.to_der().to_vec())
}

/// A positive serial of exactly [`SERIAL_LEN`] bytes: the top bit cleared keeps it positive
/// without a 0x00 pad, the next bit set keeps it from shrinking; 126 bits stay random.
fn random_serial() -> Result<[u8; SERIAL_LEN], Error> {
    let mut serial = [0u8; SERIAL_LEN];
    getrandom::fill(&mut serial).map_err(|_| Error::Rng)?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

fn spki_der(secret: &SecretKey) -> Result<Vec<u8>, Error> {
    let doc = secret
        .public_key()
        .to_public_key_der()
        .map_err(|_| Error::Signing)?;
    Ok(doc.as_bytes().to_vec())
}

/// SM3 over the subjectPublicKey BIT STRING contents (the uncompressed point), truncated to
/// [`KEY_ID_LEN`] bytes.
fn key_id(spki_der: &[u8]) -> Result<[u8; KEY_ID_LEN], Error> {
    use sm3::Digest as _;
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der)?;
    let digest = sm3::Sm3::digest(spki.subject_public_key.raw_bytes());
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    Ok(id)
}

/// `Name ::= SEQUENCE { SET { SEQUENCE { commonName, UTF8String } } }`.
fn encode_name(common_name: &str) -> Result<Vec<u8>, Error> {
    let chars = common_name.chars().count();
    if chars == 0 || chars > MAX_COMMON_NAME_CHARS || common_name.chars().any(char::is_control) {
        return Err(Error::InvalidSpec(format!(
            "common name must be 1 to {MAX_COMMON_NAME_CHARS} printable characters, got {chars}"
        )));
    }
    let mut rdn = RelativeDistinguishedName::default();
    rdn.insert(AttributeTypeAndValue {
        oid: oid::COMMON_NAME,
        value: der::Any::encode_from(&Utf8StringRef::new(common_name)?)?,
    })?;
    let mut name = RdnSequence::default();
    name.push(rdn);
    Ok(name.to_der()?)
}

fn validity_from_now(valid_days: u32) -> Result<Validity, Error> {
    if !(1..=MAX_VALID_DAYS).contains(&valid_days) {
        return Err(Error::InvalidSpec(format!(
            "valid_days must be 1 to {MAX_VALID_DAYS}, got {valid_days}"
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::InvalidSpec("the system clock is before 1970".into()))?
        .as_secs();
    let time = |secs: u64| -> Result<Time, Error> {
        let at = der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs))?;
        // UTCTime through 2049, GeneralizedTime after, as RFC 5280 §4.1.2.5 requires.
        Ok(Time::from(at))
    };
    let not_before = time(now.saturating_sub(BACKDATE_SECS))?;
    let not_after = time(now + u64::from(valid_days) * 86_400)?;
    Ok(Validity::new(not_before, not_after))
}

fn subject_alt_names(
    dns_names: &[String],
    ip_addresses: &[std::net::IpAddr],
    uris: &[String],
) -> Result<Vec<GeneralName>, Error> {
    let ascii = |kind: &str, value: &str| -> Result<Ia5String, Error> {
        if value.is_empty() || !value.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::InvalidSpec(format!(
                "{kind} SAN {value:?} must be non-empty printable ASCII without spaces"
            )));
        }
        Ok(Ia5String::new(value)?)
    };
    let mut names = Vec::new();
    for dns in dns_names {
        names.push(GeneralName::DnsName(ascii("DNS", dns)?));
    }
    for ip in ip_addresses {
        names.push(GeneralName::from(*ip));
    }
    for uri in uris {
        if !uri.contains(':') {
            return Err(Error::InvalidSpec(format!("URI SAN {uri:?} has no scheme")));
        }
        names.push(GeneralName::UniformResourceIdentifier(ascii("URI", uri)?));
    }
    Ok(names)
}

fn extension<T: AssociatedOid + der::Encode>(
    value: &T,
    critical: bool,
) -> Result<Extension, Error> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}
