//! The key hierarchy (KEY-2, KEY-6):
//!
//! ```text
//! unseal shares (M of N, Shamir) → unseal key → root key (sealed in the store)
//! root key → one KEK per application namespace
//!          → keys derived for one named use (HKDF-SM3: backup key, audit context HMAC key)
//! namespace KEK → every version of every key in that namespace
//!                 (AAD = key id, version, namespace, purpose, algorithm)
//! ```
//!
//! Nothing above a data key is ever stored in plaintext. Every wrap is an AEAD the policy
//! approved (SM4-GCM by default, AES-256-GCM allowed), never ECB and never key-as-password.
//!
//! Each level is its own type, and [`wrap`] has one pair of functions per level, so a wrong-level
//! unwrap does not compile: a key version cannot be unwrapped with the root key.
//!
//! ```compile_fail
//! use kms_core::hierarchy::{RootKey, wrap};
//! fn f(policy: &kms_core::policy::Policy, root: &RootKey, aad: &wrap::VersionAad, w: &[u8]) {
//!     let _ = wrap::unwrap_version(policy, root, aad, w);
//! }
//! ```
//!
//! The level keys have no public constructor and no public accessor: their bytes never leave
//! this module tree.

pub mod share;
pub mod wrap;

use core::fmt;

use crate::crypto::rng;
use crate::error::Error;
use crate::secret::{KeyMaterial, SecretBytes};
use wrap::WrapAlg;

macro_rules! level_key {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        pub struct $name(KeyMaterial);

        impl $name {
            /// Fresh random key for `alg` from the CSPRNG (KEY-1).
            pub(crate) fn generate(alg: WrapAlg) -> Result<Self, Error> {
                Ok(Self::from_bytes(alg, rng::random_secret(alg.key_len())?))
            }

            fn from_bytes(alg: WrapAlg, bytes: SecretBytes) -> Self {
                Self(KeyMaterial::new(alg.spec(), bytes))
            }

            /// The wrap algorithm this key is for.
            #[allow(dead_code, reason = "a KEK's algorithm is read from its wraps instead")]
            pub(crate) fn alg(&self) -> WrapAlg {
                WrapAlg::of(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }
    };
}

level_key!(
    /// The key that seals the root key; exists only while shares are being combined.
    UnsealKey
);
level_key!(
    /// The root of the hierarchy; held in memory only while unsealed.
    RootKey
);
level_key!(
    /// One application namespace's key-encryption key.
    Kek
);
