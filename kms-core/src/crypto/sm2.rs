//! SM2 signatures (GB/T 32918.2, SM3 with Z_A) and encryption (GB/T 32918.4, GM/T 0009 DER).
//!
//! Key material is the 32-byte private scalar. The sm2 crate's key types neither zeroize on drop
//! nor redact `Debug` (`DecryptingKey` prints its scalar), so they live only inside these
//! functions and are never formatted.

use signature::hazmat::{PrehashVerifier, RandomizedPrehashSigner};
use signature::{RandomizedSigner, Verifier};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};
use sm2::pkcs8::der::Decode;
use sm2::pkcs8::{DecodePublicKey, EncodePublicKey};
use sm2::pke::{Cipher, DecryptingKey, EncryptingKey};
use sm2::{PublicKey as Sm2PublicKey, SecretKey};

use super::Message;
use super::rng::SysRng;
use crate::error::CryptoError;
use crate::secret::SecretBytes;

/// Length of `e = SM3(Z_A ‖ M)`, the SM2 prehash.
const PREHASH_LEN: usize = 32;

/// Signs with a key already bound to its distinguishing ID (see [`super::parsed`]).
pub(super) fn sign(key: &SigningKey, message: Message<'_>) -> Result<Vec<u8>, CryptoError> {
    // Randomized (hedged) signing: fresh OS randomness is mixed into the RFC 6979 nonce.
    let sig: Signature = match message {
        Message::Raw(m) => key.try_sign_with_rng(&mut SysRng, m),
        Message::Digest(e) => {
            if e.len() != PREHASH_LEN {
                return Err(CryptoError::OperationFailed);
            }
            key.sign_prehash_with_rng(&mut SysRng, e)
        }
    }
    .map_err(|_| CryptoError::OperationFailed)?;
    Ok(sig.to_der().to_vec())
}

pub(super) fn verify(
    spki: &[u8],
    id: &str,
    message: Message<'_>,
    der_sig: &[u8],
) -> Result<bool, CryptoError> {
    let public = Sm2PublicKey::from_public_key_der(spki).map_err(|_| CryptoError::MalformedKey)?;
    let key = VerifyingKey::new(id, public).map_err(|_| CryptoError::MalformedKey)?;
    let Ok(sig) = Signature::from_der(der_sig) else {
        return Ok(false);
    };
    let ok = match message {
        Message::Raw(m) => key.verify(m, &sig).is_ok(),
        Message::Digest(e) => e.len() == PREHASH_LEN && key.verify_prehash(e, &sig).is_ok(),
    };
    Ok(ok)
}

pub(super) fn encrypt(spki: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let public = Sm2PublicKey::from_public_key_der(spki).map_err(|_| CryptoError::MalformedKey)?;
    EncryptingKey::new(public)
        .encrypt_der(&mut SysRng, plaintext)
        .map_err(|_| CryptoError::OperationFailed)
}

/// Decrypts into a buffer we own and wipe, so that a candidate plaintext whose C3 check fails is
/// wiped too (the crate's `decrypt_der` would drop it unwiped).
pub(super) fn decrypt(scalar: &[u8], der: &[u8]) -> Result<SecretBytes, CryptoError> {
    let key = DecryptingKey::from_slice(scalar).map_err(|_| CryptoError::MalformedKey)?;
    let cipher =
        Cipher::<sm2::Sm2, sm3::Sm3>::from_der(der).map_err(|_| CryptoError::DecryptionFailed)?;
    let mut out = SecretBytes::from_vec(vec![0u8; cipher.c2().len()]);
    key.decrypt_cipher_with_buf::<sm3::Sm3>(&cipher, out.expose_secret_mut())
        .map_err(|_| CryptoError::DecryptionFailed)?;
    Ok(out)
}

pub(super) fn public_spki(scalar: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let secret = SecretKey::from_slice(scalar).map_err(|_| CryptoError::MalformedKey)?;
    let doc = secret
        .public_key()
        .to_public_key_der()
        .map_err(|_| CryptoError::MalformedKey)?;
    Ok(doc.as_bytes().to_vec())
}

/// A fresh private scalar from the OS CSPRNG.
pub(super) fn generate() -> Result<SecretBytes, CryptoError> {
    use sm2::elliptic_curve::Generate;
    let secret = SecretKey::try_generate_from_rng(&mut SysRng).map_err(|_| CryptoError::Rng)?;
    // `to_bytes` returns a plain array: copy it into the zeroizing buffer, then wipe it.
    let mut bytes = secret.to_bytes();
    let out = SecretBytes::copy_from_slice(&bytes);
    zeroize::Zeroize::zeroize(bytes.as_mut_slice());
    Ok(out)
}

/// Accepts a PKCS#8 SM2 private key and returns its scalar.
pub(super) fn import_pkcs8(der: &[u8]) -> Result<SecretBytes, CryptoError> {
    use sm2::pkcs8::DecodePrivateKey;
    let secret = SecretKey::from_pkcs8_der(der).map_err(|_| CryptoError::MalformedKey)?;
    let mut bytes = secret.to_bytes();
    let out = SecretBytes::copy_from_slice(&bytes);
    zeroize::Zeroize::zeroize(bytes.as_mut_slice());
    Ok(out)
}

/// Whether an SPKI document holds an SM2 public key.
pub(super) fn parse_public(spki: &[u8]) -> Option<Vec<u8>> {
    let key = Sm2PublicKey::from_public_key_der(spki).ok()?;
    key.to_public_key_der().ok().map(|d| d.as_bytes().to_vec())
}
