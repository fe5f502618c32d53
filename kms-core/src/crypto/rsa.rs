//! RSA ≥ 2048: RSASSA-PSS (salt = hash length) and PKCS#1 v1.5 signatures over SHA-2, and
//! RSAES-OAEP with SHA-256 (and MGF1-SHA-256). PKCS#1 v1.5 *encryption* is not offered (ALG-3).
//!
//! Key material is the PKCS#8 DER private-key document. `rsa::PrivateKey` zeroizes and redacts
//! itself; every private-key operation uses blinding with the OS RNG.

use rsa::pkcs1::der::oid::AssociatedOid;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey as RsaPublicKey};
use sha2::digest::FixedOutputReset;
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::Message;
use super::rng::SysRng;
use crate::alg::{DigestAlg, RsaSigScheme};
use crate::error::CryptoError;
use crate::secret::SecretBytes;

pub(super) fn parse_private(der: &[u8]) -> Result<PrivateKey, CryptoError> {
    PrivateKey::from_pkcs8_der(der).map_err(|_| CryptoError::MalformedKey)
}

fn public(spki: &[u8]) -> Result<RsaPublicKey, CryptoError> {
    RsaPublicKey::from_public_key_der(spki).map_err(|_| CryptoError::MalformedKey)
}

fn check_digest_len(hash: DigestAlg, digest: &[u8]) -> Result<(), CryptoError> {
    if digest.len() == hash.output_len() {
        Ok(())
    } else {
        Err(CryptoError::OperationFailed)
    }
}

macro_rules! by_hash {
    ($hash:expr, $f:ident, $($arg:expr),*) => {
        match $hash {
            DigestAlg::Sha256 => $f::<Sha256>($($arg),*),
            DigestAlg::Sha384 => $f::<Sha384>($($arg),*),
            DigestAlg::Sha512 => $f::<Sha512>($($arg),*),
            DigestAlg::Sm3 => Err(CryptoError::Mismatch),
        }
    };
}

fn sign_with<D>(
    key: &PrivateKey,
    scheme: RsaSigScheme,
    message: Message<'_>,
) -> Result<Vec<u8>, CryptoError>
where
    D: Digest + FixedOutputReset + AssociatedOid,
{
    let r = match (scheme, message) {
        (RsaSigScheme::Pss, Message::Raw(m)) => key.pss_sign_with_rng::<D, _>(&mut SysRng, m),
        (RsaSigScheme::Pss, Message::Digest(h)) => {
            key.pss_sign_prehash_with_rng::<D, _>(&mut SysRng, h)
        }
        (RsaSigScheme::Pkcs1v15, Message::Raw(m)) => {
            key.pkcs1v15_sign_with_rng::<D, _>(&mut SysRng, m)
        }
        (RsaSigScheme::Pkcs1v15, Message::Digest(h)) => {
            key.pkcs1v15_sign_prehash_with_rng::<D, _>(&mut SysRng, h)
        }
    };
    r.map_err(|_| CryptoError::OperationFailed)
}

fn verify_with<D>(
    key: &RsaPublicKey,
    scheme: RsaSigScheme,
    message: Message<'_>,
    sig: &[u8],
) -> Result<bool, CryptoError>
where
    D: Digest + FixedOutputReset + AssociatedOid,
{
    let r = match (scheme, message) {
        (RsaSigScheme::Pss, Message::Raw(m)) => key.pss_verify::<D>(m, sig),
        (RsaSigScheme::Pss, Message::Digest(h)) => key.pss_verify_prehash::<D>(h, sig),
        (RsaSigScheme::Pkcs1v15, Message::Raw(m)) => key.pkcs1v15_verify::<D>(m, sig),
        (RsaSigScheme::Pkcs1v15, Message::Digest(h)) => key.pkcs1v15_verify_prehash::<D>(h, sig),
    };
    Ok(r.is_ok())
}

pub(super) fn sign(
    key: &PrivateKey,
    scheme: RsaSigScheme,
    hash: DigestAlg,
    message: Message<'_>,
) -> Result<Vec<u8>, CryptoError> {
    if let Message::Digest(h) = message {
        check_digest_len(hash, h)?;
    }
    by_hash!(hash, sign_with, key, scheme, message)
}

pub(super) fn verify(
    spki: &[u8],
    scheme: RsaSigScheme,
    hash: DigestAlg,
    message: Message<'_>,
    sig: &[u8],
) -> Result<bool, CryptoError> {
    if let Message::Digest(h) = message
        && h.len() != hash.output_len()
    {
        return Ok(false);
    }
    let key = public(spki)?;
    by_hash!(hash, verify_with, &key, scheme, message, sig)
}

pub(super) fn oaep_encrypt(spki: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    public(spki)?
        .oaep_encrypt_with_rng::<Sha256, _>(&mut SysRng, plaintext)
        .map_err(|_| CryptoError::OperationFailed)
}

/// Known deviation: the `rsa` crate ignores the value of the first octet of the decoded block
/// (RFC 8017 §7.1.2 step 3.g wants it zero); Wycheproof's "first byte is 1" case decrypts. Only the
/// private-key holder can produce such a block, and the check it skips carries no timing signal.
pub(super) fn oaep_decrypt(
    key: &PrivateKey,
    ciphertext: &[u8],
) -> Result<SecretBytes, CryptoError> {
    key.oaep_decrypt_with_rng::<Sha256, _>(&mut SysRng, ciphertext)
        .map(SecretBytes::from_vec)
        .map_err(|_| CryptoError::DecryptionFailed)
}

pub(super) fn public_spki(der: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let key = parse_private(der)?;
    let doc = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|_| CryptoError::MalformedKey)?;
    Ok(doc.as_bytes().to_vec())
}

fn to_pkcs8(key: &PrivateKey) -> Result<SecretBytes, CryptoError> {
    let doc = key.to_pkcs8_der().map_err(|_| CryptoError::MalformedKey)?;
    // SecretDocument zeroizes itself on drop; this copy is the one we keep.
    Ok(SecretBytes::copy_from_slice(doc.as_bytes()))
}

/// A fresh key of `bits` from the OS CSPRNG (e = 65537).
pub(super) fn generate(bits: usize) -> Result<SecretBytes, CryptoError> {
    let key = PrivateKey::new(&mut SysRng, bits).map_err(|_| CryptoError::Rng)?;
    to_pkcs8(&key)
}

/// Parses a PKCS#8 RSA private key, returning its modulus size and a normalized PKCS#8 copy.
pub(super) fn import_pkcs8(der: &[u8]) -> Result<(usize, SecretBytes), CryptoError> {
    let key = parse_private(der)?;
    key.validate().map_err(|_| CryptoError::MalformedKey)?;
    Ok((key.n().bit_width() as usize, to_pkcs8(&key)?))
}

/// Parses an RSA SPKI, returning its modulus size and its canonical DER.
pub(super) fn parse_public(spki: &[u8]) -> Option<(usize, Vec<u8>)> {
    let key = public(spki).ok()?;
    let der = key.to_public_key_der().ok()?;
    Some((key.n().bit_width() as usize, der.as_bytes().to_vec()))
}

const RSA_ENCRYPTION: rsa::pkcs8::ObjectIdentifier =
    rsa::pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

fn bit_len(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        Some(i) => (be.len() - i - 1) * 8 + (8 - be[i].leading_zeros() as usize),
        None => 0,
    }
}

/// The modulus size an RSA SubjectPublicKeyInfo declares, read with the DER parser alone:
/// the `rsa` crate refuses moduli under 1024 bits while parsing, which would hide the ALG-3
/// reason behind a generic "malformed key".
pub(super) fn declared_bits_spki(der: &[u8]) -> Option<usize> {
    use rsa::pkcs1::der::Decode;
    let spki = rsa::pkcs8::SubjectPublicKeyInfoRef::from_der(der).ok()?;
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return None;
    }
    let key = rsa::pkcs1::RsaPublicKey::<rsa::pkcs1::UintRef<'_>>::from_der(
        spki.subject_public_key.as_bytes()?,
    )
    .ok()?;
    Some(bit_len(key.modulus.as_bytes()))
}

/// The modulus size a PKCS#8 RSA private key declares (see [`declared_bits_spki`]).
pub(super) fn declared_bits_pkcs8(der: &[u8]) -> Option<usize> {
    use rsa::pkcs1::der::Decode;
    let info = rsa::pkcs8::PrivateKeyInfoRef::from_der(der).ok()?;
    if info.algorithm.oid != RSA_ENCRYPTION {
        return None;
    }
    let key =
        rsa::pkcs1::RsaPrivateKey::<rsa::pkcs1::UintRef<'_>>::from_der(info.private_key.as_bytes())
            .ok()?;
    Some(bit_len(key.modulus.as_bytes()))
}
