//! The one error type of certificate issuance and verification.
//!
//! Subjects and object identifiers in messages come from the certificate being judged; they are
//! rendered by [`super::parse`] with control characters escaped and long names cut, so a hostile
//! certificate cannot forge log lines.

use super::verify::Purpose;

/// What is wrong with a certificate, a chain, or an issuance request.
///
/// Verification failures name the certificate (`subject`, its distinguished name) and what was
/// found, so an operator can tell an expired intermediate from a foreign CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a DER X.509 certificate (or PEM around one), or an extension inside
    /// does not parse.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// Only X.509 v3 certificates carry the extensions the checks rely on.
    #[error("certificate {subject} is X.509 v{version}, only v3 is accepted")]
    UnsupportedVersion { subject: String, version: u32 },
    /// The certificate is signed with something other than `sm2-with-sm3`.
    #[error(
        "certificate {subject}: wrong signature algorithm {found}, expected sm2-with-sm3 \
         (1.2.156.10197.1.501)"
    )]
    WrongSignatureAlgorithm { subject: String, found: String },
    /// The `signature` field inside the TBSCertificate disagrees with the outer one, or the
    /// algorithm carries parameters other than absent/NULL.
    #[error("certificate {subject}: inconsistent signature algorithm identifiers")]
    InconsistentSignatureAlgorithm { subject: String },
    /// The subject public key is not an elliptic-curve key.
    #[error(
        "certificate {subject}: wrong public key algorithm {found}, expected id-ecPublicKey \
         (1.2.840.10045.2.1) on sm2p256v1"
    )]
    WrongKeyAlgorithm { subject: String, found: String },
    /// The subject public key is on a curve other than sm2p256v1 (`found` is its OID, or a
    /// description when the parameters are not a named curve).
    #[error("certificate {subject}: wrong curve {found}, expected sm2p256v1 (1.2.156.10197.1.301)")]
    WrongCurve { subject: String, found: String },
    /// The subject public key names sm2p256v1 but is not a point of the curve.
    #[error("certificate {subject}: invalid SM2 public key")]
    BadPublicKey { subject: String },
    /// The signature does not verify with the issuer's key (SM2/SM3, default ID).
    #[error("bad signature on certificate {subject}")]
    BadSignature { subject: String },
    /// `now` is after notAfter.
    #[error("certificate {subject} expired: not after {not_after}, now is unix {now_unix}")]
    Expired {
        subject: String,
        not_after: String,
        now_unix: u64,
    },
    /// `now` is before notBefore.
    #[error(
        "certificate {subject} is not yet valid: not before {not_before}, now is unix {now_unix}"
    )]
    NotYetValid {
        subject: String,
        not_before: String,
        now_unix: u64,
    },
    /// A certificate in the issuer position is not allowed to sign certificates.
    #[error("certificate {subject} is not a CA: {reason}")]
    NotCa {
        subject: String,
        reason: &'static str,
    },
    /// A CA certificate was presented as the end-entity certificate.
    #[error("certificate {subject} is a CA certificate, not an end-entity certificate")]
    CaAsEndEntity { subject: String },
    /// No trust anchor or usable intermediate issued the certificate.
    #[error("unknown issuer {issuer} of certificate {subject}")]
    UnknownIssuer { subject: String, issuer: String },
    /// A CA's pathLenConstraint allows fewer intermediates below it than the chain has.
    #[error("path length constraint {limit} of CA {subject} exceeded by {below} intermediate(s)")]
    PathLenExceeded {
        subject: String,
        limit: u32,
        below: usize,
    },
    /// The path would exceed [`super::MAX_CHAIN_LEN`] certificates.
    #[error("certificate chain too long: more than {max} certificates")]
    ChainTooLong { max: usize },
    /// Path building gave up after too many signature checks (a crafted pile of intermediates).
    #[error("certificate path search gave up after {checks} signature checks")]
    PathSearchExhausted { checks: u32 },
    /// The certificate's extendedKeyUsage does not include the purpose it is used for.
    #[error("certificate {subject} is not valid for {purpose}: extendedKeyUsage lacks it")]
    WrongPurpose { subject: String, purpose: Purpose },
    /// A critical extension this module does not process (RFC 5280 §4.2: must reject).
    #[error("certificate {subject}: unsupported critical extension {oid}")]
    UnsupportedCriticalExtension { subject: String, oid: String },
    /// An issuance request that cannot be encoded or makes no sense.
    #[error("invalid certificate request: {0}")]
    InvalidSpec(String),
    /// The CA private key PEM is not a PKCS#8 SM2 key, or does not match the CA certificate.
    #[error("CA private key: {0}")]
    BadPrivateKey(&'static str),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// SM2 signing failed (a negligible-probability event; retrying is safe).
    #[error("SM2 signing failed")]
    Signing,
    /// DER or PEM encoding of an issued certificate failed.
    #[error("certificate encoding failed: {0}")]
    Encoding(#[from] der::Error),
}
