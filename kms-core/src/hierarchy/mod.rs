//! The key hierarchy (KEY-2, KEY-6):
//!
//! ```text
//! unseal shares (M of N, Shamir) → unseal key → root key (sealed in the store)
//! root key → one KEK per application namespace
//! namespace KEK → every version of every key in that namespace
//!                 (AAD = key id, version, namespace, purpose, algorithm)
//! ```
//!
//! Nothing above a data key is ever stored in plaintext. Every wrap is an AEAD from the policy
//! (SM4-GCM by default, AES-256-GCM allowed), never ECB and never key-as-password.

pub mod share;
pub mod wrap;

use core::fmt;

use crate::secret::SecretBytes;

macro_rules! secret_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        pub struct $name(pub(crate) SecretBytes);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(len = {})"), self.0.len())
            }
        }
    };
}

secret_newtype!(
    /// The key that seals the root key; exists only while shares are being combined.
    UnsealKey
);
secret_newtype!(
    /// The root of the hierarchy; held in memory only while unsealed.
    RootKey
);
secret_newtype!(
    /// One application namespace's key-encryption key.
    Kek
);
