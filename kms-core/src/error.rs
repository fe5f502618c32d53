//! The core's error type. Every variant carries typed data; `Display` is built from safe fields
//! only, so an error can be shown to a caller or logged without leaking a secret (API-4).

use std::borrow::Cow;

use crate::keys::state::KeyState;
use crate::policy::PolicyError;
use crate::store::StoreError;

/// Everything that can go wrong in the core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy refused an algorithm, a parameter or a use (ALG-3, ALG-4, KEY-5).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The caller's input is malformed; the message says which field and why.
    #[error(transparent)]
    InvalidArgument(#[from] InvalidInput),
    /// A cryptographic operation failed. Deliberately opaque: no oracle.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// No such key, alias, namespace, grant or principal.
    #[error("{what} {name} not found")]
    NotFound { what: &'static str, name: String },
    /// The thing exists already (an alias, a principal, an initialized store).
    #[error("{what} {name} already exists")]
    AlreadyExists { what: &'static str, name: String },
    /// The key's state does not allow the operation (KEY-8).
    #[error("key {key} is {state}: {op} is not allowed")]
    InvalidState {
        key: String,
        state: KeyState,
        op: &'static str,
    },
    /// Something else about the current situation forbids the operation.
    #[error("{0}")]
    FailedPrecondition(Cow<'static, str>),
    /// A bounded resource is full: the call is refused rather than something live evicted (the
    /// replay guard's nonces). Retrying later can succeed.
    #[error("{0}")]
    ResourceExhausted(Cow<'static, str>),
    /// The caller may not do this (KEY-9).
    #[error("{principal} may not {op}")]
    PermissionDenied { principal: String, op: &'static str },
    /// The KMS is sealed: nothing but status and unseal works.
    #[error("the KMS is sealed; unseal it with the administrators' shares")]
    Sealed,
    /// Unseal share problems.
    #[error(transparent)]
    Unseal(#[from] UnsealError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The password shield refused a sealed password (issue 22 item 2).
    #[error(transparent)]
    Password(#[from] PasswordRefusal),
    /// The operation needs the approval of other administrators (dual control): it did not
    /// run, and pending request `id` waits for them (`kms/approvals.rs`).
    #[error(
        "{operation} needs the approval of {needed} administrators: pending request {id}; \
         another administrator runs `kms approve {id}` (or `kms reject {id}`)"
    )]
    ApprovalPending {
        id: String,
        operation: &'static str,
        needed: u8,
    },
}

/// Why the password shield refused a sealed password that it could open. Never carries the
/// password, the nonce or anything derived from them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordRefusal {
    /// The password breaks a strength rule (`[password]` in the server's configuration).
    #[error("the password is too weak: {0}")]
    Weak(crate::crypto::password_hash::Weakness),
    /// The sealed password's timestamp is further than the window from the KMS's clock.
    #[error(
        "the sealed password's timestamp is {skew} s from the KMS's clock, outside the ±{window} s window: seal it again with the current time"
    )]
    Stale { skew: u64, window: u64 },
    /// The sealed password's nonce was seen before within the window: a replay.
    #[error(
        "the sealed password was already used (its nonce was seen within the window): seal it again"
    )]
    Replayed,
}

/// Malformed input: which field, and what is wrong with it. Never carries the input's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub problem: Cow<'static, str>,
}

impl InvalidInput {
    pub fn new(field: &'static str, problem: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

/// Opaque cryptographic failures. The variants say which step failed, never why in detail: a
/// decryption error must not tell a padding failure from a tag failure (no oracle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Authentication or decryption of a ciphertext failed (wrong key, context or tampering).
    #[error("decryption failed")]
    DecryptionFailed,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
    /// Stored or imported key material could not be decoded for its algorithm.
    #[error("key material is malformed")]
    MalformedKey,
    /// The token, key and operation do not belong together (a bug in the caller, not bad input).
    #[error("key and operation do not match")]
    Mismatch,
    /// The primitive refused the operation (e.g. a message too long for RSA-OAEP).
    #[error("the cryptographic operation failed")]
    OperationFailed,
}

/// What went wrong with unseal shares (KEY-2). A share never yields a wrong key: each carries a
/// checksum, and the reconstructed key must open the sealed root key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsealError {
    #[error("the share is malformed or mistyped (its checksum does not match)")]
    Corrupt,
    #[error("the share belongs to a different KMS initialization")]
    WrongSet,
    #[error("this share was already given")]
    Duplicate,
    #[error("the shares do not reconstruct the unseal key")]
    Mismatch,
    #[error("the KMS is not initialized")]
    NotInitialized,
    #[error(
        "you have already given a share towards this unseal; the next must come from another holder"
    )]
    AlreadyGave,
    #[error("this share was issued to another holder; only its holder may give it")]
    NotHolder,
    #[error("the KMS is already unsealed")]
    AlreadyUnsealed,
}
