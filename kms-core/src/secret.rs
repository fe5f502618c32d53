//! Secrets as types (KEY-3).
//!
//! Raw key bytes and caller plaintext live only in [`SecretBytes`]: the buffer is wiped when it is
//! dropped (on every path, errors included), it cannot be cloned or serialized, and its `Debug`
//! prints the length only. Bytes come out through [`SecretBytes::expose_secret`], a name meant to
//! be grepped for.
//!
//! The guarantees are kept by the compiler:
//!
//! ```compile_fail
//! let s = kms_core::SecretBytes::from_vec(vec![1, 2, 3]);
//! let _copy = s.clone(); // SecretBytes is not Clone
//! ```
//!
//! ```compile_fail
//! let s = kms_core::SecretBytes::from_vec(vec![1, 2, 3]);
//! let _json = serde_json::to_string(&s); // SecretBytes is not Serialize
//! ```
//!
//! ```compile_fail
//! fn needs_clone<T: Clone>() {}
//! needs_clone::<kms_core::KeyMaterial>(); // KeyMaterial is not Clone
//! ```
//!
//! ```compile_fail
//! let s = kms_core::SecretBytes::from_vec(vec![1, 2, 3]);
//! let _inner = s.0; // the buffer is private
//! ```

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::alg::KeySpec;

/// A heap buffer of secret bytes, zeroized on drop.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes` without copying them; they are wiped when this value drops.
    #[must_use]
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Allocates `len` zero bytes and lets `fill` write the secret in place, so that the secret
    /// never sits in a temporary on the stack (age's `init_with_mut`).
    pub fn from_fn<E>(
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Self, E> {
        let mut secret = Self(Zeroizing::new(vec![0u8; len]));
        fill(&mut secret.0)?;
        Ok(secret)
    }

    /// Copies a borrowed secret into a new owned buffer. The caller stays responsible for wiping
    /// the source.
    #[must_use]
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// The secret bytes. Every call site is a place where a secret is used: keep them few.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Hands the bytes to a container that does not wipe itself — a protobuf response field,
    /// at the last moment before it is sent. Named to stand out: every caller is a place where
    /// a secret leaves this type's protection.
    #[must_use]
    pub fn into_unprotected_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.0)
    }

    /// Mutable access for in-place cryptography (the buffer still wipes on drop).
    pub(crate) fn expose_secret_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality; there is deliberately no `PartialEq`.
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(len = {})", self.0.len())
    }
}

/// Raw key material of one key version, tagged with the key spec it belongs to.
///
/// Symmetric and HMAC keys hold the raw key; SM2 keys the 32-byte private scalar; RSA keys their
/// PKCS#8 DER private-key document. Only the crate's generators and the key-unwrapping code
/// construct it, so a server cannot turn request bytes into a key without going through policy.
pub struct KeyMaterial {
    spec: KeySpec,
    bytes: SecretBytes,
    /// The private key decoded for use, made on first use and dropped (wiped) with the bytes.
    parsed: crate::crypto::parsed::Parsed,
}

impl KeyMaterial {
    pub(crate) fn new(spec: KeySpec, bytes: SecretBytes) -> Self {
        Self {
            spec,
            bytes,
            parsed: crate::crypto::parsed::Parsed::default(),
        }
    }

    pub(crate) fn parsed(&self) -> &crate::crypto::parsed::Parsed {
        &self.parsed
    }

    #[must_use]
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The raw bytes, for the crypto adapters and the key-wrapping code only.
    pub(crate) fn expose_secret(&self) -> &[u8] {
        self.bytes.expose_secret()
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial({}, len = {})", self.spec, self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_length_not_bytes() {
        let s = SecretBytes::from_vec(vec![0xAB; 5]);
        let shown = format!("{s:?}");
        assert_eq!(shown, "SecretBytes(len = 5)");
        let km = KeyMaterial::new(KeySpec::Sm4Gcm, SecretBytes::from_vec(vec![0xCD; 16]));
        let shown = format!("{km:?}");
        assert!(!shown.to_lowercase().contains("cd"), "{shown}");
        assert!(shown.contains("len = 16"));
    }

    #[test]
    fn from_fn_fills_in_place_and_propagates_errors() {
        let s = SecretBytes::from_fn(4, |b| {
            b.copy_from_slice(&[1, 2, 3, 4]);
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(s.expose_secret(), &[1, 2, 3, 4]);
        assert_eq!(SecretBytes::from_fn(4, |_| Err("no")).err(), Some("no"));
    }

    #[test]
    fn ct_eq_compares_content_and_length() {
        let a = SecretBytes::from_vec(vec![1, 2, 3]);
        assert!(a.ct_eq(&SecretBytes::from_vec(vec![1, 2, 3])));
        assert!(!a.ct_eq(&SecretBytes::from_vec(vec![1, 2, 4])));
        assert!(!a.ct_eq(&SecretBytes::from_vec(vec![1, 2])));
    }
}
