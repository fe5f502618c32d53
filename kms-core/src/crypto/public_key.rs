//! Public keys as SubjectPublicKeyInfo (DER and PEM), the form outside tools read.

use core::fmt;

use ::sm2::pkcs8::der::pem::{self, LineEnding};

use super::{rsa, sm2};
use crate::alg::KeySpec;
use crate::error::{CryptoError, Error, InvalidInput};
use crate::policy::Policy;

/// An SM2 or RSA public key, held as canonical SPKI DER.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    spec: KeySpec,
    spki_der: Vec<u8>,
}

impl PublicKey {
    /// For keys derived from our own private keys.
    pub(crate) fn from_trusted(spec: KeySpec, spki_der: Vec<u8>) -> Result<Self, CryptoError> {
        Ok(Self { spec, spki_der })
    }

    /// Parses a caller-supplied SPKI (DER). RSA keys must be 2048, 3072 or 4096 bits (ALG-3),
    /// and the policy must allow the algorithm for new protection (ALG-4).
    pub fn from_spki_der(policy: Policy, der: &[u8]) -> Result<Self, Error> {
        if let Some(bits) = rsa::declared_bits_spki(der) {
            policy.check_rsa_bits(bits)?;
        }
        let (spec, spki_der) = if let Some(canonical) = sm2::parse_public(der) {
            (KeySpec::Sm2, canonical)
        } else if let Some((bits, canonical)) = rsa::parse_public(der) {
            (policy.check_rsa_bits(bits)?, canonical)
        } else {
            return Err(InvalidInput::new(
                "public key",
                "not a DER SubjectPublicKeyInfo holding an SM2 or RSA key",
            )
            .into());
        };
        if !policy.allows(spec) {
            return Err(crate::policy::PolicyError::NotGm {
                algorithm: spec.name(),
            }
            .into());
        }
        Ok(Self { spec, spki_der })
    }

    /// Parses a caller-supplied PEM `PUBLIC KEY` block.
    pub fn from_spki_pem(policy: Policy, text: &str) -> Result<Self, Error> {
        let (label, der) = pem::decode_vec(text.as_bytes())
            .map_err(|_| InvalidInput::new("public key", "not a PEM document"))?;
        if label != "PUBLIC KEY" {
            return Err(InvalidInput::new("public key", "PEM label must be PUBLIC KEY").into());
        }
        Self::from_spki_der(policy, &der)
    }

    #[must_use]
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    #[must_use]
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// PEM with the `PUBLIC KEY` label, as `openssl pkey -pubin` reads it.
    #[must_use]
    pub fn to_pem(&self) -> String {
        // Encoding known-good DER to PEM cannot fail except on allocation limits.
        pem::encode_string("PUBLIC KEY", LineEnding::LF, &self.spki_der).unwrap_or_default()
    }

    /// SM3 of the SPKI DER: the fingerprint the inventory lists.
    #[must_use]
    pub fn fingerprint_sm3(&self) -> [u8; 32] {
        let d = super::digest::digest(crate::policy::ApprovedDigest::SM3, &self.spki_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(&d);
        out
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({}, sm3 {})",
            self.spec,
            hex::encode(&self.fingerprint_sm3()[..8])
        )
    }
}
