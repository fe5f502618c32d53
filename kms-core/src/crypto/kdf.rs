//! HKDF (RFC 5869) over an approved digest: the key hierarchy's derivations from the root key.

use crate::error::CryptoError;
use crate::policy::ApprovedDigest;
use crate::secret::SecretBytes;

/// `HKDF-Expand(HKDF-Extract(salt, ikm), info, len)`. Lengths over what HKDF can give
/// (255 hash blocks) are refused, never truncated.
pub(crate) fn hkdf(
    digest: ApprovedDigest,
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    len: usize,
) -> Result<SecretBytes, CryptoError> {
    match digest.alg() {
        crate::alg::DigestAlg::Sm3 => {
            let kdf = hkdf::Hkdf::<sm3::Sm3>::new(Some(salt), ikm);
            SecretBytes::from_fn(len, |out| {
                kdf.expand(info, out).map_err(|_| CryptoError::Mismatch)
            })
        }
        // The hierarchy derives with SM3 only; other digests have no caller.
        crate::alg::DigestAlg::Sha256
        | crate::alg::DigestAlg::Sha384
        | crate::alg::DigestAlg::Sha512 => Err(CryptoError::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_past_255_blocks_are_refused_not_truncated() {
        let ok = hkdf(ApprovedDigest::SM3, b"salt", b"ikm", b"info", 255 * 32).unwrap();
        assert_eq!(ok.len(), 255 * 32);
        assert_eq!(
            hkdf(ApprovedDigest::SM3, b"salt", b"ikm", b"info", 255 * 32 + 1).unwrap_err(),
            CryptoError::Mismatch
        );
    }

    /// RFC 5869 test case 1's inputs over SM3; the expected bytes are from OpenSSL through
    /// Python `cryptography` (`HKDF(hashes.SM3(), 42, salt, info).derive(ikm)`), not this crate.
    #[test]
    fn known_answer_from_openssl() {
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let okm = hkdf(ApprovedDigest::SM3, &salt, &[0x0b; 22], &info, 42).unwrap();
        assert_eq!(
            hex::encode(okm.expose_secret()),
            "c69fe91b7aaee2dd5718d72dcaee0cce93f1b8e41f792da51261b6a517e68b36ed2c595572b01dfa359b"
        );
    }

    #[test]
    fn prefixes_agree_and_info_separates() {
        let a = hkdf(ApprovedDigest::SM3, b"s", b"ikm", b"one", 64).unwrap();
        let b = hkdf(ApprovedDigest::SM3, b"s", b"ikm", b"one", 16).unwrap();
        let c = hkdf(ApprovedDigest::SM3, b"s", b"ikm", b"two", 16).unwrap();
        assert_eq!(&a.expose_secret()[..16], b.expose_secret());
        assert_ne!(b.expose_secret(), c.expose_secret());
    }
}
