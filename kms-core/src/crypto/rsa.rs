//! RSA ≥ 2048: RSASSA-PSS (salt = hash length) and PKCS#1 v1.5 signatures over SHA-2, and
//! RSAES-OAEP with SHA-256 (and MGF1-SHA-256). PKCS#1 v1.5 *encryption* is not offered (ALG-3).
//!
//! Key material is the PKCS#8 DER private-key document. Two implementations, split by secrecy:
//!
//! * **Private-key operations** (signing, OAEP decryption) run in AWS-LC through `aws-lc-rs`:
//!   constant-time bignum arithmetic with base blinding, constant-time OAEP decoding, about
//!   4 × faster than the `rsa` crate (docs/BENCHMARKS.md). AWS-LC draws PSS salts and blinding
//!   values from its own DRBG, seeded from the OS; its key objects are freed through
//!   `OPENSSL_free`, which cleanses the memory. The parsed keys live in
//!   [`Parsed`](super::parsed::Parsed).
//! * **Everything else** stays on the `rsa` crate: verification and OAEP encryption (public
//!   data), key generation, PKCS#8 import and normalisation, the public half of a private key,
//!   and the declared-size parsing below (one-off operations, no request data).

use aws_lc_rs::rsa::{KeyPair, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey};
use aws_lc_rs::signature::{self as lc_sig, RsaEncoding};
use aws_lc_rs::{digest as lc_digest, rand::SystemRandom};
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

fn parse_private(der: &[u8]) -> Result<PrivateKey, CryptoError> {
    PrivateKey::from_pkcs8_der(der).map_err(|_| CryptoError::MalformedKey)
}

/// The AWS-LC signing key of a PKCS#8 document (checked by AWS-LC's `RSA_check_key`).
pub(super) fn parse_signer(der: &[u8]) -> Result<KeyPair, CryptoError> {
    KeyPair::from_pkcs8(der).map_err(|_| CryptoError::MalformedKey)
}

/// The AWS-LC OAEP decryption key of a PKCS#8 document.
pub(super) fn parse_decrypter(der: &[u8]) -> Result<OaepPrivateDecryptingKey, CryptoError> {
    aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(der)
        .map_err(|_| CryptoError::MalformedKey)
        .and_then(|key| OaepPrivateDecryptingKey::new(key).map_err(|_| CryptoError::MalformedKey))
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

/// AWS-LC's encoding for a scheme and hash: PSS with salt = hash length, or PKCS#1 v1.5.
fn encoding(
    scheme: RsaSigScheme,
    hash: DigestAlg,
) -> Result<&'static dyn RsaEncoding, CryptoError> {
    Ok(match (scheme, hash) {
        (RsaSigScheme::Pss, DigestAlg::Sha256) => &lc_sig::RSA_PSS_SHA256,
        (RsaSigScheme::Pss, DigestAlg::Sha384) => &lc_sig::RSA_PSS_SHA384,
        (RsaSigScheme::Pss, DigestAlg::Sha512) => &lc_sig::RSA_PSS_SHA512,
        (RsaSigScheme::Pkcs1v15, DigestAlg::Sha256) => &lc_sig::RSA_PKCS1_SHA256,
        (RsaSigScheme::Pkcs1v15, DigestAlg::Sha384) => &lc_sig::RSA_PKCS1_SHA384,
        (RsaSigScheme::Pkcs1v15, DigestAlg::Sha512) => &lc_sig::RSA_PKCS1_SHA512,
        (RsaSigScheme::Pss | RsaSigScheme::Pkcs1v15, DigestAlg::Sm3) => {
            return Err(CryptoError::Mismatch);
        }
    })
}

fn lc_digest_alg(hash: DigestAlg) -> Result<&'static lc_digest::Algorithm, CryptoError> {
    match hash {
        DigestAlg::Sha256 => Ok(&lc_digest::SHA256),
        DigestAlg::Sha384 => Ok(&lc_digest::SHA384),
        DigestAlg::Sha512 => Ok(&lc_digest::SHA512),
        DigestAlg::Sm3 => Err(CryptoError::Mismatch),
    }
}

/// Signs with AWS-LC: the message is hashed inside (`Message::Raw`), or the caller's digest is
/// padded as it is (`Message::Digest`, `KeyPair::sign_digest`).
pub(super) fn sign(
    key: &KeyPair,
    scheme: RsaSigScheme,
    hash: DigestAlg,
    message: Message<'_>,
) -> Result<Vec<u8>, CryptoError> {
    if let Message::Digest(h) = message {
        check_digest_len(hash, h)?;
    }
    let encoding = encoding(scheme, hash)?;
    let mut sig = vec![0u8; key.public_modulus_len()];
    let signed = match message {
        // AWS-LC ignores the RNG argument (ring's API): it uses its own DRBG.
        Message::Raw(m) => key.sign(encoding, &SystemRandom::new(), m, &mut sig),
        Message::Digest(h) => {
            let digest = lc_digest::Digest::import_less_safe(h, lc_digest_alg(hash)?)
                .map_err(|_| CryptoError::OperationFailed)?;
            key.sign_digest(encoding, &digest, &mut sig)
        }
    };
    signed.map_err(|_| CryptoError::OperationFailed)?;
    Ok(sig)
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

/// Decrypts with AWS-LC into a buffer that wipes itself (the plaintext never sits in an
/// unprotected allocation on our side; AWS-LC cleanses its own buffers when it frees them).
/// Every failure — wrong length, out of range, bad padding, label mismatch — is the one
/// `DecryptionFailed`: no padding oracle.
pub(super) fn oaep_decrypt(
    key: &OaepPrivateDecryptingKey,
    ciphertext: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let mut len = 0;
    let mut plaintext = SecretBytes::from_fn(key.min_output_size(), |out| {
        key.decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, out, None)
            .map(|pt| len = pt.len())
    })
    .map_err(|_| CryptoError::DecryptionFailed)?;
    plaintext.expose_secret_mut().truncate(len);
    Ok(plaintext)
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

/// Whether a PKCS#8 RSA private key's public exponent is one the KMS refuses: even, or below
/// 65537 (e = 1 makes "encryption" the identity; e = 3 invites the small-exponent attacks;
/// FIPS 186-5 §A.1.1 asks for at least 65537).
pub(super) fn weak_exponent_pkcs8(der: &[u8]) -> bool {
    use rsa::pkcs1::der::Decode;
    let Ok(info) = rsa::pkcs8::PrivateKeyInfoRef::from_der(der) else {
        return false;
    };
    if info.algorithm.oid != RSA_ENCRYPTION {
        return false;
    }
    let Ok(key) =
        rsa::pkcs1::RsaPrivateKey::<rsa::pkcs1::UintRef<'_>>::from_der(info.private_key.as_bytes())
    else {
        return false;
    };
    let e = key.public_exponent.as_bytes();
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    !odd || bit_len(e) < 17
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

#[cfg(test)]
mod tests {
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::DecodePrivateKey;
    use sha2::Sha256;

    use super::*;
    use crate::alg::{DigestAlg, RsaSigScheme};

    /// The OpenSSL-made key of the self-tests (PKCS#8, as `openssl genpkey` writes it).
    const OPENSSL_PEM: &str = include_str!("../selftest/rsa_kat.key.pem");

    /// AWS-LC takes the documents the `rsa` crate writes (generation, and import's normalised
    /// copy) and the original OpenSSL document, for both of its key types, and sees the same key.
    fn assert_aws_lc_accepts(pkcs8: &[u8]) {
        let ours = parse_private(pkcs8).unwrap();
        let signer = parse_signer(pkcs8).unwrap();
        let decrypter = parse_decrypter(pkcs8).unwrap();
        let modulus_bytes = ours.n().bit_width().div_ceil(8) as usize;
        assert_eq!(signer.public_modulus_len(), modulus_bytes);
        assert_eq!(decrypter.key_size_bytes(), modulus_bytes);
        let pkcs1 = ours.to_public_key().to_pkcs1_der().unwrap();
        assert_eq!(
            aws_lc_rs::signature::KeyPair::public_key(&signer).as_ref(),
            pkcs1.as_bytes(),
            "AWS-LC parsed the same public key"
        );

        // Signatures verify with the rsa crate; PKCS#1 v1.5 is byte-identical to its signature.
        let spki = public_spki(pkcs8).unwrap();
        for scheme in [RsaSigScheme::Pss, RsaSigScheme::Pkcs1v15] {
            for hash in [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
                let sig = sign(&signer, scheme, hash, Message::Raw(b"m")).unwrap();
                assert_eq!(sig.len(), modulus_bytes);
                assert_eq!(
                    verify(&spki, scheme, hash, Message::Raw(b"m"), &sig),
                    Ok(true),
                    "{scheme:?} {hash:?}"
                );
            }
        }
        let theirs = ours
            .pkcs1v15_sign_with_rng::<Sha256, _>(&mut SysRng, b"m")
            .unwrap();
        let sig = sign(
            &signer,
            RsaSigScheme::Pkcs1v15,
            DigestAlg::Sha256,
            Message::Raw(b"m"),
        );
        assert_eq!(sig.unwrap(), theirs);

        // OAEP: the rsa crate's ciphertexts decrypt; anything else is the one opaque error.
        let ct = oaep_encrypt(&spki, b"secret").unwrap();
        assert_eq!(
            oaep_decrypt(&decrypter, &ct).unwrap().expose_secret(),
            b"secret"
        );
        let empty = oaep_encrypt(&spki, b"").unwrap();
        assert!(oaep_decrypt(&decrypter, &empty).unwrap().is_empty());
        let mut flipped = ct.clone();
        flipped[modulus_bytes / 2] ^= 1;
        let longer = [ct.as_slice(), &[0]].concat();
        let bad: [&[u8]; 5] = [&flipped, &ct[1..], &longer, &[], &[0xff; 512]];
        for bad in bad {
            assert_eq!(
                oaep_decrypt(&decrypter, bad).err(),
                Some(CryptoError::DecryptionFailed)
            );
        }
    }

    #[test]
    fn aws_lc_accepts_generated_keys() {
        for bits in [2048, 3072] {
            assert_aws_lc_accepts(generate(bits).unwrap().expose_secret());
        }
    }

    #[test]
    fn aws_lc_accepts_imported_keys_before_and_after_normalisation() {
        let doc = PrivateKey::from_pkcs8_pem(OPENSSL_PEM)
            .unwrap()
            .to_pkcs8_der()
            .unwrap();
        // The same bytes as the PEM's (rsa writes the same DER back).
        assert_aws_lc_accepts(doc.as_bytes());
        let (bits, normalised) = import_pkcs8(doc.as_bytes()).unwrap();
        assert_eq!(bits, 2048);
        assert_aws_lc_accepts(normalised.expose_secret());
    }

    #[test]
    fn garbage_and_the_wrong_hash_are_refused() {
        assert_eq!(
            parse_signer(b"\x30\x00").err(),
            Some(CryptoError::MalformedKey)
        );
        assert_eq!(parse_decrypter(b"").err(), Some(CryptoError::MalformedKey));
        let der = generate(2048).unwrap();
        let signer = parse_signer(der.expose_secret()).unwrap();
        let pss = RsaSigScheme::Pss;
        assert_eq!(
            sign(&signer, pss, DigestAlg::Sm3, Message::Raw(b"m")).err(),
            Some(CryptoError::Mismatch)
        );
        assert_eq!(
            sign(&signer, pss, DigestAlg::Sha256, Message::Digest(&[0; 48])).err(),
            Some(CryptoError::OperationFailed)
        );
        assert!(sign(&signer, pss, DigestAlg::Sha384, Message::Digest(&[0; 48])).is_ok());
    }
}
