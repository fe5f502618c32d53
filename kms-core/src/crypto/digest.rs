//! SM3 (GB/T 32905) and SHA-2 digests.

use sha2::Digest as _;

use crate::alg::DigestAlg;
use crate::policy::ApprovedDigest;

/// Hashes `data` with an approved digest.
#[must_use]
pub fn digest(alg: ApprovedDigest, data: &[u8]) -> Vec<u8> {
    match alg.alg() {
        DigestAlg::Sm3 => sm3::Sm3::digest(data).to_vec(),
        DigestAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
        DigestAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
        DigestAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
    }
}
