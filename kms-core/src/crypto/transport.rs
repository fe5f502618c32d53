//! Key material wrapped for transport into and out of the KMS (issue 19, KEY-4: keys move only
//! in ciphertext): the wrapping specs, as outside tools produce and open them.
//!
//! - `sm2`: GM/T 0009 SM2 encryption of the material (C1C3C2, DER), as `openssl pkeyutl
//!   -encrypt` with an SM2 key writes it. SM2 encryption has no length limit, so it carries a
//!   PKCS#8 private key as well as a symmetric secret.
//! - `rsa-oaep-sha256`: RSA-OAEP with SHA-256 and MGF1-SHA-256, for material that fits
//!   (at most modulus bytes − 66: 318 bytes under RSA-3072).
//! - `rsa-aes-kwp`: RSA-OAEP-SHA-256 of a fresh AES-256 key, followed by that key's AES Key Wrap
//!   with Padding (RFC 5649) of the material — AWS KMS's `RSA_AES_KEY_WRAP_SHA_256` layout, for
//!   material larger than OAEP allows (RSA private keys). The first part is exactly the modulus
//!   length, which is how the two are told apart.
//!
//! The RSA wrapping keys must be 3072 or 4096 bits (issue 19); the policy decides SM2 and RSA as
//! for any public-key encryption (gm-only: SM2 only).

use aes_kw::KwpAes256;
use aes_kw::cipher::KeyInit;

use super::{PublicKey, rng, rsa, sm2};
use crate::alg::{KeySpec, Purpose};
use crate::error::CryptoError;
use crate::policy::{Approved, Open, Protect};
use crate::secret::{KeyMaterial, SecretBytes};

/// How material is wrapped for transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrappingSpec {
    Sm2,
    RsaOaepSha256,
    RsaAesKwp,
}

impl WrappingSpec {
    pub const ALL: [Self; 3] = [Self::Sm2, Self::RsaOaepSha256, Self::RsaAesKwp];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sm2 => "sm2",
            Self::RsaOaepSha256 => "rsa-oaep-sha256",
            Self::RsaAesKwp => "rsa-aes-kwp",
        }
    }

    /// Parses a spec name (any case).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether a wrapping key of `spec` serves this wrapping spec.
    #[must_use]
    pub fn fits(self, spec: KeySpec) -> bool {
        match self {
            Self::Sm2 => spec == KeySpec::Sm2,
            Self::RsaOaepSha256 | Self::RsaAesKwp => {
                matches!(spec, KeySpec::Rsa3072 | KeySpec::Rsa4096)
            }
        }
    }
}

/// The modulus length in bytes of an RSA wrapping key spec.
fn modulus_len(spec: KeySpec) -> Result<usize, CryptoError> {
    match spec {
        KeySpec::Rsa3072 => Ok(384),
        KeySpec::Rsa4096 => Ok(512),
        KeySpec::Sm4Gcm
        | KeySpec::Aes256Gcm
        | KeySpec::Sm2
        | KeySpec::Rsa2048
        | KeySpec::HmacSm3
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1 => Err(CryptoError::Mismatch),
    }
}

/// Wraps `material` to `recipient` by `spec`. `approved` is the policy's approval of the
/// recipient's spec for asymmetric encryption.
///
/// # Errors
/// [`CryptoError::Mismatch`] when the recipient does not fit the spec or the approval;
/// [`CryptoError::OperationFailed`] when the material is too large for OAEP.
pub fn wrap(
    approved: &Approved<Protect>,
    spec: WrappingSpec,
    recipient: &PublicKey,
    material: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if approved.spec() != recipient.spec()
        || approved.purpose() != Purpose::AsymmetricDecrypt
        || !spec.fits(recipient.spec())
    {
        return Err(CryptoError::Mismatch);
    }
    match spec {
        WrappingSpec::Sm2 => sm2::encrypt(recipient.spki_der(), material),
        WrappingSpec::RsaOaepSha256 => rsa::oaep_encrypt(recipient.spki_der(), material),
        WrappingSpec::RsaAesKwp => {
            let transport = rng::random_secret(32)?;
            let mut out = rsa::oaep_encrypt(recipient.spki_der(), transport.expose_secret())?;
            let kwp = KwpAes256::new_from_slice(transport.expose_secret())
                .map_err(|_| CryptoError::OperationFailed)?;
            let mut buf = vec![0u8; material.len().div_ceil(8) * 8 + 8];
            let wrapped = kwp
                .wrap_key(material, &mut buf)
                .map_err(|_| CryptoError::OperationFailed)?;
            out.extend_from_slice(wrapped);
            Ok(out)
        }
    }
}

/// Opens `wrapped` with the KMS's own wrapping private key. Every failure is the one
/// [`CryptoError::DecryptionFailed`]: which step failed is not said (no oracle).
///
/// # Errors
/// [`CryptoError::Mismatch`] when the key does not fit the spec; otherwise
/// [`CryptoError::DecryptionFailed`].
pub fn unwrap(
    approved: &Approved<Open>,
    spec: WrappingSpec,
    key: &KeyMaterial,
    wrapped: &[u8],
) -> Result<SecretBytes, CryptoError> {
    if approved.spec() != key.spec()
        || approved.purpose() != Purpose::AsymmetricDecrypt
        || !spec.fits(key.spec())
    {
        return Err(CryptoError::Mismatch);
    }
    let failed = |_| CryptoError::DecryptionFailed;
    match spec {
        WrappingSpec::Sm2 => sm2::decrypt(key.expose_secret(), wrapped).map_err(failed),
        WrappingSpec::RsaOaepSha256 => {
            rsa::oaep_decrypt(key.parsed().rsa_decrypter(key.expose_secret())?, wrapped)
                .map_err(failed)
        }
        WrappingSpec::RsaAesKwp => {
            let n = modulus_len(key.spec())?;
            if wrapped.len() < n + 16 || !(wrapped.len() - n).is_multiple_of(8) {
                return Err(CryptoError::DecryptionFailed);
            }
            let (sealed_key, kwp_part) = wrapped.split_at(n);
            let transport =
                rsa::oaep_decrypt(key.parsed().rsa_decrypter(key.expose_secret())?, sealed_key)
                    .map_err(failed)?;
            let kwp = KwpAes256::new_from_slice(transport.expose_secret())
                .map_err(|_| CryptoError::DecryptionFailed)?;
            let mut buf = SecretBytes::from_vec(vec![0u8; kwp_part.len() - 8]);
            let material = kwp
                .unwrap_key(kwp_part, buf.expose_secret_mut())
                .map_err(|_| CryptoError::DecryptionFailed)?;
            // `buf` (padding included) wipes itself when dropped.
            Ok(SecretBytes::copy_from_slice(material))
        }
    }
}
