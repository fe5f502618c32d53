//! Wrapping one key under another with an AEAD and an AAD that binds where the key belongs.
//!
//! Wrapped form: `version (1) ‖ algorithm code ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.

use crate::alg::{KeySpec, Purpose};
use crate::crypto::{self, AEAD_NONCE_LEN, AEAD_TAG_LEN};
use crate::error::{CryptoError, Error};
use crate::keys::{KeyId, Namespace};
use crate::secret::SecretBytes;

const WRAP_FORMAT: u8 = 1;
const PREFIX: usize = 2 + AEAD_NONCE_LEN;

/// The AEAD used for the hierarchy's own wraps. Only GCM specs are valid here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrapAlg(KeySpec);

impl WrapAlg {
    pub const SM4_GCM: Self = Self(KeySpec::Sm4Gcm);
    pub const AES_256_GCM: Self = Self(KeySpec::Aes256Gcm);

    pub fn new(spec: KeySpec) -> Result<Self, Error> {
        match spec {
            KeySpec::Sm4Gcm | KeySpec::Aes256Gcm => Ok(Self(spec)),
            KeySpec::Sm2
            | KeySpec::Rsa2048
            | KeySpec::Rsa3072
            | KeySpec::Rsa4096
            | KeySpec::HmacSm3
            | KeySpec::HmacSha256
            | KeySpec::HmacSha384
            | KeySpec::HmacSha512 => Err(crate::policy::PolicyError::WrongPurpose {
                spec,
                purpose: Purpose::Encrypt,
            }
            .into()),
        }
    }

    #[must_use]
    pub fn spec(self) -> KeySpec {
        self.0
    }

    /// Length of keys used with this AEAD.
    #[must_use]
    pub fn key_len(self) -> usize {
        match self.0 {
            KeySpec::Aes256Gcm => 32,
            KeySpec::Sm4Gcm
            | KeySpec::Sm2
            | KeySpec::Rsa2048
            | KeySpec::Rsa3072
            | KeySpec::Rsa4096
            | KeySpec::HmacSm3
            | KeySpec::HmacSha256
            | KeySpec::HmacSha384
            | KeySpec::HmacSha512 => 16,
        }
    }
}

/// Encrypts `secret` under `wrapping_key`, binding `aad`.
pub fn wrap(
    alg: WrapAlg,
    wrapping_key: &SecretBytes,
    aad: &[u8],
    secret: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    crypto::rng::fill(&mut nonce)?;
    let mut out = Vec::with_capacity(PREFIX + secret.len() + AEAD_TAG_LEN);
    out.push(WRAP_FORMAT);
    out.push(alg.spec().code());
    out.extend_from_slice(&nonce);
    let mut body = Vec::with_capacity(secret.len() + AEAD_TAG_LEN);
    body.extend_from_slice(secret);
    let sealed = crypto::aead::seal_raw(
        alg.spec(),
        wrapping_key.expose_secret(),
        &nonce,
        aad,
        &mut body,
    );
    if sealed.is_err() {
        zeroize::Zeroize::zeroize(&mut body);
    }
    sealed?;
    out.append(&mut body);
    Ok(out)
}

/// Decrypts a wrapped key; any mismatch of key, AAD or bytes is `DecryptionFailed`.
pub fn unwrap(
    wrapping_key: &SecretBytes,
    aad: &[u8],
    wrapped: &[u8],
) -> Result<SecretBytes, Error> {
    if wrapped.len() < PREFIX + AEAD_TAG_LEN || wrapped[0] != WRAP_FORMAT {
        return Err(CryptoError::DecryptionFailed.into());
    }
    let spec = KeySpec::from_code(wrapped[1]).ok_or(CryptoError::DecryptionFailed)?;
    let alg = WrapAlg::new(spec).map_err(|_| CryptoError::DecryptionFailed)?;
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    nonce.copy_from_slice(&wrapped[2..PREFIX]);
    let mut buf = SecretBytes::copy_from_slice(&wrapped[PREFIX..]);
    crypto::aead::open_raw(
        alg.spec(),
        wrapping_key.expose_secret(),
        &nonce,
        aad,
        buf.expose_secret_mut(),
    )?;
    Ok(buf)
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// AAD for a root key sealed under the unseal key.
#[must_use]
pub fn root_aad(set_id: &[u8]) -> Vec<u8> {
    let mut aad = b"kms/root/v1".to_vec();
    push_field(&mut aad, set_id);
    aad
}

/// AAD for a namespace KEK wrapped under the root key.
#[must_use]
pub fn kek_aad(namespace: &Namespace) -> Vec<u8> {
    let mut aad = b"kms/kek/v1".to_vec();
    push_field(&mut aad, namespace.as_str().as_bytes());
    aad
}

/// AAD for a key version wrapped under its namespace KEK: a record moved to another key,
/// version, namespace, purpose or algorithm fails to unwrap.
#[must_use]
pub fn key_aad(
    id: KeyId,
    version: u32,
    namespace: &Namespace,
    purpose: Purpose,
    spec: KeySpec,
) -> Vec<u8> {
    let mut aad = b"kms/key/v1".to_vec();
    push_field(&mut aad, id.as_bytes());
    push_field(&mut aad, &version.to_be_bytes());
    push_field(&mut aad, namespace.as_str().as_bytes());
    push_field(&mut aad, purpose.name().as_bytes());
    push_field(&mut aad, spec.name().as_bytes());
    aad
}

/// A key derived from the root key for one named use (backup encryption, audit hashing):
/// HMAC-SM3(root, label), truncated to `len`.
pub fn derive(root: &SecretBytes, label: &str, len: usize) -> Result<SecretBytes, Error> {
    let tag = crypto::mac::mac_raw(
        crate::alg::DigestAlg::Sm3,
        root.expose_secret(),
        label.as_bytes(),
    )?;
    let out = SecretBytes::copy_from_slice(&tag[..len.min(tag.len())]);
    let mut tag = tag;
    zeroize::Zeroize::zeroize(&mut tag);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(alg: WrapAlg) -> SecretBytes {
        crypto::rng::random_secret(alg.key_len()).unwrap()
    }

    #[test]
    fn wrap_round_trips_and_binds_aad() {
        for alg in [WrapAlg::SM4_GCM, WrapAlg::AES_256_GCM] {
            let k = key(alg);
            let w = wrap(alg, &k, b"aad", b"secret").unwrap();
            assert_eq!(unwrap(&k, b"aad", &w).unwrap().expose_secret(), b"secret");
            assert!(unwrap(&k, b"other", &w).is_err());
            assert!(unwrap(&key(alg), b"aad", &w).is_err());
            for i in 0..w.len() {
                let mut t = w.clone();
                t[i] ^= 0x01;
                assert!(unwrap(&k, b"aad", &t).is_err(), "byte {i}");
            }
            assert!(unwrap(&k, b"aad", &w[..w.len() - 1]).is_err());
            assert!(unwrap(&k, b"aad", &[]).is_err());
        }
    }

    #[test]
    fn key_aad_differs_in_every_field() {
        let id = KeyId(uuid::Uuid::from_bytes([1; 16]));
        let ns = Namespace::new("a").unwrap();
        let base = key_aad(id, 1, &ns, Purpose::Encrypt, KeySpec::Sm4Gcm);
        assert_ne!(
            base,
            key_aad(
                KeyId(uuid::Uuid::from_bytes([2; 16])),
                1,
                &ns,
                Purpose::Encrypt,
                KeySpec::Sm4Gcm
            )
        );
        assert_ne!(base, key_aad(id, 2, &ns, Purpose::Encrypt, KeySpec::Sm4Gcm));
        assert_ne!(
            base,
            key_aad(
                id,
                1,
                &Namespace::new("b").unwrap(),
                Purpose::Encrypt,
                KeySpec::Sm4Gcm
            )
        );
        assert_ne!(base, key_aad(id, 1, &ns, Purpose::Mac, KeySpec::Sm4Gcm));
        assert_ne!(
            base,
            key_aad(id, 1, &ns, Purpose::Encrypt, KeySpec::Aes256Gcm)
        );
    }
}
