//! HMAC-SM3 and HMAC-SHA-2, with constant-time verification.

use hmac::{Hmac, KeyInit, Mac};

use crate::alg::{DigestAlg, Purpose};
use crate::error::CryptoError;
use crate::policy::{Approved, Open, Protect};
use crate::secret::KeyMaterial;

fn compute<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut m = <M as KeyInit>::new_from_slice(key).map_err(|_| CryptoError::MalformedKey)?;
    m.update(data);
    Ok(m.finalize().into_bytes().to_vec())
}

fn check<M: Mac + KeyInit>(key: &[u8], data: &[u8], tag: &[u8]) -> Result<bool, CryptoError> {
    let mut m = <M as KeyInit>::new_from_slice(key).map_err(|_| CryptoError::MalformedKey)?;
    m.update(data);
    // `verify_slice` compares in constant time and refuses truncated tags.
    Ok(m.verify_slice(tag).is_ok())
}

fn digest_of<U>(approved: &Approved<U>, key: &KeyMaterial) -> Result<DigestAlg, CryptoError> {
    if approved.spec() != key.spec() || approved.purpose() != Purpose::Mac {
        return Err(CryptoError::Mismatch);
    }
    key.spec().hmac_digest().ok_or(CryptoError::Mismatch)
}

pub(super) fn mac_raw(alg: DigestAlg, key: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    match alg {
        DigestAlg::Sm3 => compute::<Hmac<sm3::Sm3>>(key, data),
        DigestAlg::Sha256 => compute::<Hmac<sha2::Sha256>>(key, data),
        DigestAlg::Sha384 => compute::<Hmac<sha2::Sha384>>(key, data),
        DigestAlg::Sha512 => compute::<Hmac<sha2::Sha512>>(key, data),
    }
}

fn verify_mac_raw(
    alg: DigestAlg,
    key: &[u8],
    data: &[u8],
    tag: &[u8],
) -> Result<bool, CryptoError> {
    match alg {
        DigestAlg::Sm3 => check::<Hmac<sm3::Sm3>>(key, data, tag),
        DigestAlg::Sha256 => check::<Hmac<sha2::Sha256>>(key, data, tag),
        DigestAlg::Sha384 => check::<Hmac<sha2::Sha384>>(key, data, tag),
        DigestAlg::Sha512 => check::<Hmac<sha2::Sha512>>(key, data, tag),
    }
}

/// Computes a full-length HMAC tag.
pub fn mac(
    approved: &Approved<Protect>,
    key: &KeyMaterial,
    data: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let alg = digest_of(approved, key)?;
    mac_raw(alg, key.expose_secret(), data)
}

/// Checks a tag in constant time. Only full-length tags are accepted.
pub fn verify_mac(
    approved: &Approved<Open>,
    key: &KeyMaterial,
    data: &[u8],
    tag: &[u8],
) -> Result<bool, CryptoError> {
    let alg = digest_of(approved, key)?;
    verify_mac_raw(alg, key.expose_secret(), data, tag)
}
