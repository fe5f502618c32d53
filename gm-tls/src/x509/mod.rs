//! SM2-with-SM3 X.509 certificates: issuance and chain verification.
//!
//! The GM transport authenticates both ends with certificates whose keys are SM2 (GB/T 32918)
//! and whose signatures are SM2 over SM3 (GM/T 0015, GB/T 20518). Neither rcgen nor webpki
//! handles those, so this module does both halves itself:
//!
//! * [`Sm2Ca`] issues certificates: it encodes the `TBSCertificate` (RFC 5280 §4.1) with the
//!   `der` crate, signs it with SM2 under the default distinguishing ID `1234567812345678`
//!   (GM/T 0009 §10; the ID the signer's `Z_A` is computed with), and wraps it up. Each leaf gets
//!   a fresh SM2 key pair, handed back as PKCS#8 PEM inside a zeroizing string.
//! * [`verify_chain`] is the RFC 5280 §6 subset the KMS needs: strict DER, SM2-only algorithms
//!   and keys, signatures, validity periods, basicConstraints/keyUsage on CAs, path length,
//!   extendedKeyUsage for the purpose, unknown critical extensions refused, and a bounded path
//!   search. There is no revocation checking and no name-constraint processing (a critical
//!   nameConstraints extension is therefore refused, not ignored).
//!
//! ```text
//!   Sm2Ca::generate ──► self-signed CA ──► Sm2Ca::issue(LeafSpec) ──► Sm2CertifiedKey
//!                                                                        │ cert_der
//!   verify_chain(leaf, intermediates, anchors, now, purpose) ◄───────────┘
//!        └─► VerifiedChain { leaf: CertIdentity, leaf_public_key, .. }
//! ```
//!
//! OpenSSL 3.0 interop (checked by `tests/x509_openssl.rs`): OpenSSL reads what we issue and
//! verifies it with `openssl verify -vfyopt distid:1234567812345678`; without that option
//! OpenSSL 3.0 uses its own default ID and reports a signature failure. The option only reaches
//! the certificate named on the command line, so `openssl verify` fails every three-level SM2
//! chain (its own too) at depth 1; each link verifies on its own. Certificates OpenSSL signs
//! with `-sigopt distid:1234567812345678` pass [`verify_chain`].

mod error;
mod identity;
mod issue;
mod parse;
mod verify;

#[cfg(test)]
mod tests;

pub use error::Error;
pub use identity::{CertIdentity, ExtendedKeyUsages, KeyUsages, cert_identity, sm2_public_key_of};
pub use issue::{LeafSpec, Sm2Ca, Sm2CertifiedKey, Usage};
pub use verify::{MAX_CHAIN_LEN, Purpose, VerifiedChain, verify_chain};

/// The SM2 distinguishing ID every certificate signature is made and checked with: the default
/// of GM/T 0009-2012 §10, which GM/T 0015 certificates use.
pub const DEFAULT_DIST_ID: &str = "1234567812345678";

/// Object identifiers this module writes or recognises.
mod oid {
    use der::asn1::ObjectIdentifier as Oid;

    /// `sm2-with-sm3`, GM/T 0006: the only certificate signature algorithm accepted.
    pub(super) const SM2_WITH_SM3: Oid = Oid::new_unwrap("1.2.156.10197.1.501");
    /// `id-ecPublicKey`, RFC 5480: the SPKI algorithm of an SM2 key.
    pub(super) const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    /// `sm2p256v1`, GM/T 0006: the only curve accepted in an SPKI.
    pub(super) const SM2P256V1: Oid = Oid::new_unwrap("1.2.156.10197.1.301");
    /// X.520 `commonName`.
    pub(super) const COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");
    /// RFC 5280 extension identifiers.
    pub(super) const SUBJECT_KEY_ID: Oid = Oid::new_unwrap("2.5.29.14");
    pub(super) const KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
    pub(super) const SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
    pub(super) const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
    pub(super) const AUTHORITY_KEY_ID: Oid = Oid::new_unwrap("2.5.29.35");
    pub(super) const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
    /// RFC 5280 §4.2.1.12 key purposes.
    pub(super) const SERVER_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.1");
    pub(super) const CLIENT_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.2");
}
