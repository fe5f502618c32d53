//! # kms-core
//!
//! The key-management service's core, with no networking: the closed set of algorithms and the
//! policy that approves them, secret types, primitives, the ciphertext blob, self-tests, and the
//! storage seam.
//!
//! Data flows one way on every path:
//!
//! ```text
//! request → identity → authorisation → policy → key lookup (unwrap under KEK)
//!         → primitive → audit record → response
//! ```
//!
//! This crate owns the middle of that line. [`policy::Policy`] hands out approval tokens;
//! [`crypto`] functions take them, so no primitive runs without policy (ALG-3). Key bytes live
//! only in [`SecretBytes`] / [`KeyMaterial`], which wipe themselves (KEY-3).

pub mod alg;
pub mod audit;
pub mod authz;
mod cache;
pub mod clock;
pub mod crypto;
pub mod envelope;
mod error;
pub mod hierarchy;
pub mod keys;
mod kms;
pub mod policy;
mod secret;
pub mod selftest;
pub mod store;

pub use error::{CryptoError, Error, InvalidInput, UnsealError};
pub use kms::audit_key::{AUDIT_KEY_ALIAS, SYSTEM_NAMESPACE};
pub use kms::inventory::{
    CompromisedKey, Inventory, InventoryError, InventoryKey, InventoryVersion, Summary,
    verify_inventory,
};
pub use kms::{
    CreateKeyRequest, DataKeyMode, DataKeyOutput, DecryptOutput, EncryptOutput, InitOutput,
    KeyInfo, Kms, KmsConfig, MAX_RANDOM_BYTES, PublicKeyOutput, SignOutput, Status, UnsealProgress,
    VerifyOutput, VersionInfo,
};
pub use secret::{KeyMaterial, SecretBytes};
