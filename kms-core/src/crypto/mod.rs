//! The only place RustCrypto and AWS-LC (`aws-lc-rs`, RSA private-key operations) types appear
//! (ALG-5: vetted libraries, no home-made primitives).
//!
//! Every function takes a policy token ([`Approved`](crate::policy::Approved) and friends), so no
//! primitive runs without the policy's approval. Library key objects (`sm2::dsa::SigningKey`,
//! `sm2::pke::DecryptingKey`, `rsa::PrivateKey`, the AEAD ciphers) are built inside one function
//! from [`KeyMaterial`](crate::KeyMaterial) and dropped before it returns: the sm2 key types
//! neither zeroize on drop nor redact their `Debug` output, so they must never be stored. The
//! exceptions are the parsed forms of [`parsed`], kept beside the key material and wiped with it
//! (AWS-LC's RSA keys, SM2 signers that overwrite their scalar on drop).

pub(crate) mod aead;
pub(crate) mod digest;
pub(crate) mod ff1;
pub(crate) mod kdf;
mod keygen;
pub(crate) mod mac;
pub(crate) mod parsed;
pub mod password_hash;
pub mod pkcs8_shape;
mod public_key;
pub mod rng;
mod rsa;
mod sm2;
pub mod tokenize;
pub mod transport;

pub use aead::{AEAD_NONCE_LEN, AEAD_TAG_LEN, open_in_place, seal_in_place};
pub use digest::digest;
pub use keygen::{export_material, generate, generate_data_key, import_private_key};
pub use mac::{mac, verify_mac};
pub use public_key::PublicKey;

use crate::alg::KeySpec;
use crate::error::CryptoError;
use crate::policy::{Approved, ApprovedSignature, Open, Protect, SignatureScheme};
use crate::secret::{KeyMaterial, SecretBytes};

/// What a signature covers: the message itself, or a digest the caller computed.
///
/// For SM2 the digest is `e = SM3(Z_A ‖ M)` (GB/T 32918.2 step A2), which already binds the
/// signer's public key and distinguishing ID; for RSA it is the plain hash of the message.
#[derive(Clone, Copy, Debug)]
pub enum Message<'a> {
    Raw(&'a [u8]),
    Digest(&'a [u8]),
}

fn check_key<U>(approved: &Approved<U>, key: &KeyMaterial) -> Result<(), CryptoError> {
    if approved.spec() == key.spec() {
        Ok(())
    } else {
        Err(CryptoError::Mismatch)
    }
}

/// Signs with a private key: SM2 gives DER `SEQUENCE { r, s }`; RSA gives the raw signature.
pub fn sign(
    approved: &ApprovedSignature<Protect>,
    key: &KeyMaterial,
    message: Message<'_>,
) -> Result<Vec<u8>, CryptoError> {
    check_key(approved.key(), key)?;
    match approved.scheme() {
        SignatureScheme::Sm2 { id } => {
            let signer = key.parsed().sm2_signer(key.expose_secret(), id)?;
            sm2::sign(signer.key(), message)
        }
        SignatureScheme::Rsa { scheme, hash } => rsa::sign(
            key.parsed().rsa_signer(key.expose_secret())?,
            *scheme,
            *hash,
            message,
        ),
    }
}

/// Verifies a signature with a public key. `Ok(false)` means "not valid"; errors are for
/// keys that cannot be used at all.
pub fn verify(
    approved: &ApprovedSignature<Open>,
    public: &PublicKey,
    message: Message<'_>,
    signature: &[u8],
) -> Result<bool, CryptoError> {
    if approved.key().spec() != public.spec() {
        return Err(CryptoError::Mismatch);
    }
    match approved.scheme() {
        SignatureScheme::Sm2 { id } => sm2::verify(public.spki_der(), id, message, signature),
        SignatureScheme::Rsa { scheme, hash } => {
            rsa::verify(public.spki_der(), *scheme, *hash, message, signature)
        }
    }
}

/// Encrypts a short secret to a public key: SM2 (GM/T 0009 DER, C1C3C2) or RSA-OAEP-SHA-256.
/// `approved` is the policy's approval of the key's spec for asymmetric encryption (or, for
/// the pairwise-consistency test of a fresh password key, for the password shield).
pub fn encrypt_to_public_key(
    approved: &Approved<Protect>,
    public: &PublicKey,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if approved.spec() != public.spec() || !approved.purpose().decrypts() {
        return Err(CryptoError::Mismatch);
    }
    match public.spec() {
        KeySpec::Sm2 => sm2::encrypt(public.spki_der(), plaintext),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            rsa::oaep_encrypt(public.spki_der(), plaintext)
        }
        KeySpec::Sm4Gcm
        | KeySpec::Aes256Gcm
        | KeySpec::HmacSm3
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1 => Err(CryptoError::Mismatch),
    }
}

/// Decrypts an SM2 (DER) or RSA-OAEP-SHA-256 ciphertext with an ASYMMETRIC_DECRYPT key (API-3),
/// or with a PASSWORD key inside the password shield (`kms/password.rs`).
pub fn asymmetric_decrypt(
    approved: &Approved<Open>,
    key: &KeyMaterial,
    ciphertext: &[u8],
) -> Result<SecretBytes, CryptoError> {
    check_key(approved, key)?;
    if !approved.purpose().decrypts() {
        return Err(CryptoError::Mismatch);
    }
    match key.spec() {
        KeySpec::Sm2 => sm2::decrypt(key.expose_secret(), ciphertext),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            rsa::oaep_decrypt(key.parsed().rsa_decrypter(key.expose_secret())?, ciphertext)
        }
        KeySpec::Sm4Gcm
        | KeySpec::Aes256Gcm
        | KeySpec::HmacSm3
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1 => Err(CryptoError::Mismatch),
    }
}

/// The public half of an asymmetric key.
pub fn public_key_of(key: &KeyMaterial) -> Result<PublicKey, CryptoError> {
    match key.spec() {
        KeySpec::Sm2 => {
            PublicKey::from_trusted(KeySpec::Sm2, sm2::public_spki(key.expose_secret())?)
        }
        spec @ (KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096) => {
            PublicKey::from_trusted(spec, rsa::public_spki(key.expose_secret())?)
        }
        KeySpec::Sm4Gcm
        | KeySpec::Aes256Gcm
        | KeySpec::HmacSm3
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1 => Err(CryptoError::Mismatch),
    }
}
