//! Strict reading of one certificate, shared by verification and the identity accessors.
//!
//! Every certificate passes through [`Cert::parse`] before anything trusts a field of it:
//!
//! 1. the `der` crate decodes the whole certificate (x509-cert's RFC 5280 types), which refuses
//!    BER, non-minimal lengths and trailing bytes — x509-parser is more forgiving about those;
//! 2. x509-parser then gives the fields used below, including the exact TBS bytes the signature
//!    covers;
//! 3. the version must be v3, both signature-algorithm fields must be `sm2-with-sm3` with absent
//!    (or NULL) parameters, the signature BIT STRING must have no unused bits, every extension
//!    must parse and appear once, and no unknown extension may be critical.

use der::Decode as _;
use x509_parser::asn1_rs::{Any, Oid, Tag};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::{AlgorithmIdentifier, X509Name};

use super::identity::{ExtendedKeyUsages, KeyUsages};
use super::{Error, oid};

/// Longest subject rendering kept in an error message.
const MAX_NAME_CHARS: usize = 200;

/// Extensions whose semantics this module enforces, so they may be critical.
const UNDERSTOOD_EXTENSIONS: [der::asn1::ObjectIdentifier; 6] = [
    oid::SUBJECT_KEY_ID,
    oid::KEY_USAGE,
    oid::SUBJECT_ALT_NAME,
    oid::BASIC_CONSTRAINTS,
    oid::AUTHORITY_KEY_ID,
    oid::EXT_KEY_USAGE,
];

/// `basicConstraints` as RFC 5280 §4.2.1.9 defines it.
#[derive(Clone, Copy, Debug)]
pub(super) struct BasicConstraints {
    pub(super) ca: bool,
    pub(super) path_len: Option<u32>,
}

/// One certificate that parsed strictly and is signed with SM2/SM3 (not yet verified).
pub(super) struct Cert<'a> {
    pub(super) der: &'a [u8],
    pub(super) x509: X509Certificate<'a>,
    /// The subject, printable and bounded, for error messages.
    pub(super) subject: String,
    pub(super) basic_constraints: Option<BasicConstraints>,
    pub(super) key_usage: Option<KeyUsages>,
    pub(super) ext_key_usage: Option<ExtendedKeyUsages>,
    pub(super) subject_key_id: Option<&'a [u8]>,
    pub(super) authority_key_id: Option<&'a [u8]>,
}

impl<'a> Cert<'a> {
    /// Parses `der` strictly; see the module documentation for what is refused.
    pub(super) fn parse(der: &'a [u8]) -> Result<Self, Error> {
        x509_cert::Certificate::from_der(der)
            .map_err(|e| Error::Malformed(format!("not strict DER: {e}")))?;
        let (rest, x509) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::Malformed(format!(
                "{} bytes after the certificate",
                rest.len()
            )));
        }
        let subject = display_name(x509.subject());

        let version = x509.version().0.saturating_add(1);
        if version != 3 {
            return Err(Error::UnsupportedVersion { subject, version });
        }

        if !is_oid(&x509.signature_algorithm.algorithm, &oid::SM2_WITH_SM3) {
            let found = x509.signature_algorithm.algorithm.to_id_string();
            return Err(Error::WrongSignatureAlgorithm { subject, found });
        }
        // RFC 5280 §4.1.1.2: the TBS copy of the algorithm must match the outer one.
        let inner = &x509.tbs_certificate.signature;
        if !is_oid(&inner.algorithm, &oid::SM2_WITH_SM3)
            || !params_absent_or_null(&x509.signature_algorithm)
            || !params_absent_or_null(inner)
        {
            return Err(Error::InconsistentSignatureAlgorithm { subject });
        }
        if x509.signature_value.unused_bits != 0 {
            return Err(Error::Malformed(format!(
                "signature of {subject} is not a whole number of bytes"
            )));
        }

        let ext = read_extensions(&x509, &subject)?;
        Ok(Self {
            der,
            x509,
            subject,
            basic_constraints: ext.basic_constraints,
            key_usage: ext.key_usage,
            ext_key_usage: ext.ext_key_usage,
            subject_key_id: ext.subject_key_id,
            authority_key_id: ext.authority_key_id,
        })
    }

    /// The bytes the issuer signed.
    pub(super) fn tbs_der(&self) -> &[u8] {
        self.x509.tbs_certificate.as_ref()
    }

    /// The DER `SEQUENCE { r, s }` inside the signature BIT STRING.
    pub(super) fn signature_der(&self) -> &[u8] {
        &self.x509.signature_value.data
    }

    /// The subject's key, which must be an SM2 key: `id-ecPublicKey` with the named curve
    /// sm2p256v1 and a point on that curve.
    pub(super) fn sm2_public_key(&self) -> Result<sm2::PublicKey, Error> {
        use sm2::pkcs8::DecodePublicKey as _;
        let spki = self.x509.public_key();
        if !is_oid(&spki.algorithm.algorithm, &oid::EC_PUBLIC_KEY) {
            return Err(Error::WrongKeyAlgorithm {
                subject: self.subject.clone(),
                found: spki.algorithm.algorithm.to_id_string(),
            });
        }
        let curve = match spki.algorithm.parameters.as_ref().map(Oid::try_from) {
            Some(Ok(curve)) => curve,
            Some(Err(_)) => return Err(self.wrong_curve("parameters that are not a named curve")),
            None => return Err(self.wrong_curve("no curve parameters")),
        };
        if !is_oid(&curve, &oid::SM2P256V1) {
            return Err(self.wrong_curve(&curve.to_id_string()));
        }
        sm2::PublicKey::from_public_key_der(spki.raw).map_err(|_| Error::BadPublicKey {
            subject: self.subject.clone(),
        })
    }

    fn wrong_curve(&self, found: &str) -> Error {
        Error::WrongCurve {
            subject: self.subject.clone(),
            found: found.to_owned(),
        }
    }

    /// Whether this certificate may have issued `child`: the names match exactly (DER bytes),
    /// and when both key identifiers are present they match too.
    pub(super) fn may_have_issued(&self, child: &Cert<'_>) -> bool {
        if self.x509.subject().as_raw() != child.x509.issuer().as_raw() {
            return false;
        }
        match (child.authority_key_id, self.subject_key_id) {
            (Some(aki), Some(ski)) => aki == ski,
            _ => true,
        }
    }
}

/// The extensions [`Cert`] keeps, read from a parsed certificate.
#[derive(Default)]
struct Extensions<'a> {
    basic_constraints: Option<BasicConstraints>,
    key_usage: Option<KeyUsages>,
    ext_key_usage: Option<ExtendedKeyUsages>,
    subject_key_id: Option<&'a [u8]>,
    authority_key_id: Option<&'a [u8]>,
}

fn read_extensions<'a>(x509: &X509Certificate<'a>, subject: &str) -> Result<Extensions<'a>, Error> {
    let mut out = Extensions::default();
    let mut seen: Vec<&[u8]> = Vec::new();
    for ext in x509.extensions() {
        let id = ext.oid.as_bytes();
        if seen.contains(&id) {
            return Err(Error::Malformed(format!(
                "extension {} appears twice in {}",
                ext.oid.to_id_string(),
                subject
            )));
        }
        seen.push(id);
        if ext.critical && !UNDERSTOOD_EXTENSIONS.iter().any(|u| u.as_bytes() == id) {
            return Err(Error::UnsupportedCriticalExtension {
                subject: subject.to_owned(),
                oid: ext.oid.to_id_string(),
            });
        }
        let parsed = ext.parsed_extension();
        if let ParsedExtension::ParseError { error } = parsed {
            return Err(Error::Malformed(format!(
                "extension {} of {}: {error}",
                ext.oid.to_id_string(),
                subject
            )));
        }
        // Only the six understood extensions are read; the others are non-critical and may
        // be ignored (RFC 5280 §4.2).
        if let ParsedExtension::BasicConstraints(bc) = parsed {
            out.basic_constraints = Some(BasicConstraints {
                ca: bc.ca,
                path_len: bc.path_len_constraint,
            });
        } else if let ParsedExtension::KeyUsage(ku) = parsed {
            out.key_usage = Some(KeyUsages::from_bits(ku.flags));
        } else if let ParsedExtension::ExtendedKeyUsage(eku) = parsed {
            out.ext_key_usage = Some(ExtendedKeyUsages::from_parsed(eku));
        } else if let ParsedExtension::SubjectKeyIdentifier(ski) = parsed {
            out.subject_key_id = Some(ski.0);
        } else if let ParsedExtension::AuthorityKeyIdentifier(aki) = parsed {
            out.authority_key_id = aki.key_identifier.as_ref().map(|k| k.0);
        } else if let ParsedExtension::SubjectAlternativeName(_) = parsed {
            // Read on demand by `identity`; parsing it here proved it well formed.
        } else if UNDERSTOOD_EXTENSIONS.iter().any(|u| u.as_bytes() == id) {
            // An extension we enforce that x509-parser did not decode: refuse rather than
            // pretend it was checked.
            return Err(Error::Malformed(format!(
                "extension {} of {} was not understood",
                ext.oid.to_id_string(),
                subject
            )));
        }
    }
    Ok(out)
}

/// Compares an x509-parser OID with one of ours by their DER contents.
fn is_oid(found: &Oid<'_>, expected: &der::asn1::ObjectIdentifier) -> bool {
    found.as_bytes() == expected.as_bytes()
}

/// RFC 5758 and GM/T 0015 say the parameters are absent; some issuers write NULL, which carries
/// nothing and is harmless to accept.
fn params_absent_or_null(alg: &AlgorithmIdentifier<'_>) -> bool {
    match &alg.parameters {
        None => true,
        Some(Any { header, data }) => header.tag() == Tag::Null && data.is_empty(),
    }
}

/// A distinguished name for messages: RFC 4514-style, control characters escaped, bounded.
pub(super) fn display_name(name: &X509Name<'_>) -> String {
    let full = name.to_string();
    let mut out = String::new();
    for (i, c) in full.chars().enumerate() {
        if i == MAX_NAME_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push_str("(empty name)");
    }
    out
}
