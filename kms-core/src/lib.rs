//! # kms-core
//!
//! The key-management service's core: the closed set of algorithms and the policy that approves
//! them, secret types, primitives, the ciphertext blob, the key hierarchy, key records and their
//! states, the [`Kms`] facade, the audit trail, self-tests, and the storage seam with its sled and
//! in-memory backends.
//!
//! No networking and no async runtime: everything here is synchronous and the server decides
//! where it runs; the PostgreSQL store is a crate of its own (`kms-store-postgres`). The server
//! owns the transport, identity and the audit layer; this crate owns the middle of every call:
//!
//! ```text
//! authz::authorize::<Op>(principal) → Authorized<Op>   (role × operation matrix)
//!   → Kms method (takes the proof); the KMS must be unsealed
//!   → key lookup and reach (own namespace or a grant; out of reach looks like not found)
//!   → purpose and state → policy: Approved<Protect> or Approved<Open>
//!   → key version unwrapped under its namespace KEK, or taken from the cache
//!   → primitive (takes the token) → output → the server's audit record (audit::writer)
//! ```
//!
//! [`policy::Policy`], built only from configuration, hands out approval tokens; every
//! [`crypto`] function takes one, the hierarchy's own wraps and derivations included, so no
//! primitive runs without policy (ALG-3). Init, local unseal, restore, the sweeps and audit
//! signing live on [`System`], which only the server's system service and scheduler hold. Key
//! bytes live only in [`SecretBytes`] / [`KeyMaterial`] and the hierarchy's level types, which
//! wipe themselves (KEY-3). `ARCHITECTURE.md` at the repository root maps the rest.

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
pub mod replay;
mod secret;
pub mod selftest;
pub mod signed_request;
pub mod store;

pub use error::{CryptoError, Error, InvalidInput, PasswordRefusal, UnsealError};
pub use kms::audit_key::{AUDIT_KEY_ALIAS, AuditKeyVersion, SYSTEM_NAMESPACE};
pub use kms::inventory::{
    CompromisedKey, CountedBy, Inconsistency, Inventory, InventoryError, InventoryKey,
    InventoryVersion, Marking, Summary, verify_inventory,
};
pub use kms::metrics::{CacheStats, KeyCounts};
/// For tests only (`test-util`): a KMS whose methods take the caller's principal.
#[cfg(any(test, feature = "test-util"))]
pub use kms::testing::TestKms;
pub use kms::{
    ApprovalLog, ApprovalParams, ApprovalRequest, ApprovalState, CreateKeyRequest, DataKeyMode,
    DataKeyOutput, DecryptOutput, EncryptOutput, GCM_INVOCATION_LIMIT, HashPasswordOutput,
    InitOutput, KeyInfo, Kms, KmsConfig, MAX_IDENTIFIER_BYTES, MAX_IDENTIFIERS, MAX_RANDOM_BYTES,
    MAX_SEALED_CIPHERTEXT, PasswordSettings, PublicKeyOutput, Quorum, RequestVerdict, Sensitive,
    SignOutput, Status, Sweep, SweepLog, SweepOutcome, System, TokenOutput, UnsealProgress,
    Unsealing, VerifyOutput, VerifyPasswordOutput, VerifyRequestOutput, VersionInfo,
};
pub use kms::{
    ExportKeyRequest, ExportOutput, IMPORT_TOKEN_TTL, ImportMaterialRequest, ImportParameters,
    ImportPublicKeyRequest, ImportedKey, Issued, KeyOptions, MAX_TOKEN_VALUES, RestoreProgress,
    StagedRestore, custody,
};
pub use secret::{KeyMaterial, SecretBytes};
