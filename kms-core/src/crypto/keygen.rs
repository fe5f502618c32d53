//! Key generation from the OS CSPRNG (KEY-1), with a pairwise-consistency test on every fresh
//! key pair (GM/T 0028, FIPS 140-3 §7.10.3.3), and policy-checked import.

use super::{Message, rng, rsa, sm2};
use crate::alg::{KeySpec, Purpose};
use crate::error::{CryptoError, Error, InvalidInput};
use crate::policy::{Approved, ApprovedDataKey, Policy, Protect};
use crate::secret::{KeyMaterial, SecretBytes};

/// Raw key length for symmetric and HMAC specs (HMAC keys are as long as the hash output).
fn symmetric_len(spec: KeySpec) -> Option<usize> {
    match spec {
        KeySpec::Sm4Gcm => Some(16),
        KeySpec::Aes256Gcm | KeySpec::HmacSm3 | KeySpec::HmacSha256 => Some(32),
        KeySpec::HmacSha384 => Some(48),
        KeySpec::HmacSha512 => Some(64),
        KeySpec::Sm4Ff1 => Some(16),
        KeySpec::Aes256Ff1 => Some(32),
        KeySpec::Sm2 | KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => None,
    }
}

/// Generates new key material for an approved spec and purpose.
pub fn generate(approved: &Approved<Protect>) -> Result<KeyMaterial, CryptoError> {
    let spec = approved.spec();
    let bytes = if let Some(len) = symmetric_len(spec) {
        rng::random_secret(len)?
    } else if spec == KeySpec::Sm2 {
        sm2::generate()?
    } else if let Some(bits) = spec.rsa_bits() {
        rsa::generate(bits)?
    } else {
        return Err(CryptoError::Mismatch);
    };
    let key = KeyMaterial::new(spec, bytes);
    if symmetric_len(spec).is_none() {
        pairwise_consistency(&key, approved)?;
    }
    Ok(key)
}

/// Sign-then-verify or encrypt-then-decrypt with a fresh key pair; a failure means the key is
/// unusable and must not be stored. Runs under the token that approved the key.
pub(crate) fn pairwise_consistency(
    key: &KeyMaterial,
    approved: &Approved<Protect>,
) -> Result<(), CryptoError> {
    let public = super::public_key_of(key)?;
    let probe = b"pairwise consistency test";
    match approved.purpose() {
        Purpose::Sign => {
            let sign = approved
                .default_signature()
                .map_err(|_| CryptoError::Mismatch)?;
            let sig = super::sign(&sign, key, Message::Raw(probe))?;
            if !super::verify(&sign.for_open(), &public, Message::Raw(probe), &sig)? {
                return Err(CryptoError::OperationFailed);
            }
        }
        Purpose::AsymmetricDecrypt | Purpose::Password => {
            let ct = super::encrypt_to_public_key(approved, &public, probe)?;
            let pt = super::asymmetric_decrypt(&approved.for_open(), key, &ct)?;
            if pt.expose_secret() != probe {
                return Err(CryptoError::OperationFailed);
            }
        }
        Purpose::Encrypt | Purpose::Mac | Purpose::Pepper | Purpose::Tokenize => {
            return Err(CryptoError::Mismatch);
        }
    }
    Ok(())
}

/// A fresh data key (raw SM4 or AES-256 key) for envelope encryption.
pub fn generate_data_key(spec: ApprovedDataKey) -> Result<SecretBytes, CryptoError> {
    rng::random_secret(spec.spec().key_len())
}

/// Imports a PKCS#8 (DER) SM2 or RSA private key for `purpose` (BYOK and test interop).
/// RSA keys must be 2048, 3072 or 4096 bits (ALG-3); the policy must approve the result.
pub fn import_private_key(
    policy: Policy,
    purpose: Purpose,
    pkcs8_der: &[u8],
) -> Result<KeyMaterial, Error> {
    if let Some(problem) = super::pkcs8_shape::problem(pkcs8_der) {
        return Err(InvalidInput::new("private key", problem).into());
    }
    if let Some(bits) = rsa::declared_bits_pkcs8(pkcs8_der) {
        policy.check_rsa_bits(bits)?;
    }
    if rsa::weak_exponent_pkcs8(pkcs8_der) {
        return Err(InvalidInput::new(
            "private key",
            "the RSA public exponent must be odd and at least 65537",
        )
        .into());
    }
    let (spec, bytes) = if let Ok(scalar) = sm2::import_pkcs8(pkcs8_der) {
        (KeySpec::Sm2, scalar)
    } else if let Ok((bits, der)) = rsa::import_pkcs8(pkcs8_der) {
        (policy.check_rsa_bits(bits)?, der)
    } else {
        return Err(InvalidInput::new("private key", "not a PKCS#8 SM2 or RSA private key").into());
    };
    let approved = policy.approve(purpose, spec)?;
    let key = KeyMaterial::new(spec, bytes);
    pairwise_consistency(&key, &approved)?;
    Ok(key)
}

/// The material as it leaves the KMS, wrapped (issue 19 item 2): the raw key of a symmetric or
/// HMAC key, a PKCS#8 `PrivateKeyInfo` (DER) of an SM2 or RSA key — the forms import takes.
pub fn export_material(key: &KeyMaterial) -> Result<SecretBytes, CryptoError> {
    match key.spec() {
        KeySpec::Sm2 => sm2::to_pkcs8(key.expose_secret()),
        // Stored as PKCS#8 already.
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            Ok(SecretBytes::copy_from_slice(key.expose_secret()))
        }
        KeySpec::Sm4Gcm
        | KeySpec::Aes256Gcm
        | KeySpec::HmacSm3
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1 => Ok(SecretBytes::copy_from_slice(key.expose_secret())),
    }
}

impl KeyMaterial {
    /// Imports a raw symmetric or HMAC key (BYOK, and known-answer tests) as the spec and
    /// purpose the policy approved; the length must be the spec's key length.
    pub fn import_symmetric(approved: &Approved<Protect>, raw: SecretBytes) -> Result<Self, Error> {
        let spec = approved.spec();
        let Some(len) = symmetric_len(spec) else {
            return Err(
                InvalidInput::new("key", "only symmetric and HMAC keys are imported raw").into(),
            );
        };
        // HMAC accepts any key length, but a key shorter than the hash output weakens it.
        let ok = match spec.hmac_digest() {
            Some(_) => raw.len() >= len,
            None => raw.len() == len,
        };
        if !ok {
            return Err(
                InvalidInput::new("key", format!("a {spec} key must be {len} bytes")).into(),
            );
        }
        Ok(Self::new(spec, raw))
    }
}
