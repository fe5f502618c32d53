//! The core's error type. Every variant carries typed data; `Display` is built from safe fields
//! only, so an error can be shown to a caller or logged without leaking a secret (API-4).

use std::borrow::Cow;

use crate::policy::PolicyError;

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
