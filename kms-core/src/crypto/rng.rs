//! Random numbers come only from the operating system's CSPRNG (ALG-6, KEY-1).

use crate::error::CryptoError;
use crate::secret::SecretBytes;

/// The OS generator, as the `rand_core` RNG the primitive crates take.
pub(crate) use getrandom::SysRng;

/// Fills `buf` from the OS CSPRNG.
pub fn fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|_| CryptoError::Rng)
}

/// `len` random bytes, filled in place inside a zeroizing buffer.
pub fn random_secret(len: usize) -> Result<SecretBytes, CryptoError> {
    SecretBytes::from_fn(len, fill)
}

/// `len` random bytes that are not secret (nonces, identifiers).
pub fn random_public(len: usize) -> Result<Vec<u8>, CryptoError> {
    let mut v = vec![0u8; len];
    fill(&mut v)?;
    Ok(v)
}
