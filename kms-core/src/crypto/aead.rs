//! SM4-GCM (RFC 8998) and AES-256-GCM: 12-byte nonce, 16-byte tag, caller AAD bound.
//!
//! SM4-GCM is the `aes-gcm` crate's generic GCM over the `sm4` block cipher; both crates are built
//! with their `zeroize` feature so round keys are wiped.

use aes_gcm::aead::array::Array;
use aes_gcm::{AeadInOut, Aes256Gcm, AesGcm, KeyInit};
use sm4::Sm4;
use sm4::cipher::consts::U12;

use crate::alg::{KeySpec, Purpose};
use crate::error::CryptoError;
use crate::policy::{Approved, Open, Protect};
use crate::secret::KeyMaterial;

type Sm4Gcm = AesGcm<Sm4, U12>;

pub const AEAD_NONCE_LEN: usize = 12;
pub const AEAD_TAG_LEN: usize = 16;

fn check<U>(approved: &Approved<U>, key: &KeyMaterial) -> Result<(), CryptoError> {
    if approved.spec() != key.spec() || approved.purpose() != Purpose::Encrypt {
        return Err(CryptoError::Mismatch);
    }
    Ok(())
}

fn seal_with<C>(
    key: &[u8],
    nonce: &[u8; AEAD_NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), CryptoError>
where
    C: AeadInOut + KeyInit + aes_gcm::AeadCore<NonceSize = U12>,
{
    let cipher = C::new_from_slice(key).map_err(|_| CryptoError::MalformedKey)?;
    let tag = cipher
        .encrypt_inout_detached(&Array::from(*nonce), aad, buf.as_mut_slice().into())
        .map_err(|_| CryptoError::OperationFailed)?;
    buf.extend_from_slice(&tag);
    Ok(())
}

fn open_with<C>(
    key: &[u8],
    nonce: &[u8; AEAD_NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), CryptoError>
where
    C: AeadInOut + KeyInit + aes_gcm::AeadCore<NonceSize = U12>,
{
    let cipher = C::new_from_slice(key).map_err(|_| CryptoError::MalformedKey)?;
    let ct_len = buf
        .len()
        .checked_sub(AEAD_TAG_LEN)
        .ok_or(CryptoError::DecryptionFailed)?;
    let (ct, tag) = buf.split_at_mut(ct_len);
    let tag = Array::try_from(&*tag).map_err(|_| CryptoError::DecryptionFailed)?;
    cipher
        .decrypt_inout_detached(&Array::from(*nonce), aad, ct.into(), &tag)
        .map_err(|_| CryptoError::DecryptionFailed)?;
    buf.truncate(ct_len);
    Ok(())
}

/// Encrypts `buf` in place and appends the tag.
pub fn seal_in_place(
    approved: &Approved<Protect>,
    key: &KeyMaterial,
    nonce: &[u8; AEAD_NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    check(approved, key)?;
    seal_raw(key.spec(), key.expose_secret(), nonce, aad, buf)
}

/// Decrypts `ciphertext ‖ tag` in place; on success `buf` holds the plaintext. The caller keeps
/// `buf` in a zeroizing container.
pub fn open_in_place(
    approved: &Approved<Open>,
    key: &KeyMaterial,
    nonce: &[u8; AEAD_NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    check(approved, key)?;
    open_raw(key.spec(), key.expose_secret(), nonce, aad, buf)
}

/// The GCM instantiation for a spec; only the two AEAD specs have one.
/// `true` for SM4-GCM, `false` for AES-256-GCM.
fn gcm(spec: KeySpec) -> Result<bool, CryptoError> {
    match spec {
        KeySpec::Sm4Gcm => Ok(true),
        KeySpec::Aes256Gcm => Ok(false),
        KeySpec::Sm2
        | KeySpec::Rsa2048
        | KeySpec::Rsa3072
        | KeySpec::Rsa4096
        | KeySpec::HmacSm3
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1 => Err(CryptoError::Mismatch),
    }
}

fn seal_raw(
    spec: KeySpec,
    key: &[u8],
    nonce: &[u8; AEAD_NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    if gcm(spec)? {
        seal_with::<Sm4Gcm>(key, nonce, aad, buf)
    } else {
        seal_with::<Aes256Gcm>(key, nonce, aad, buf)
    }
}

fn open_raw(
    spec: KeySpec,
    key: &[u8],
    nonce: &[u8; AEAD_NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    if gcm(spec)? {
        open_with::<Sm4Gcm>(key, nonce, aad, buf)
    } else {
        open_with::<Aes256Gcm>(key, nonce, aad, buf)
    }
}
