//! The one mapping from core errors to gRPC status (API-4). The caller gets a clear message with
//! no secret in it and a request id; the server log gets the detail under the same id.

use kms_core::store::StoreError;
use kms_core::{CryptoError, Error, PasswordRefusal, UnsealError};
use tonic::{Code, Status};

/// The gRPC code a core error maps to (also for the scheduler's outcome records).
pub(crate) fn code_of(e: &Error) -> Code {
    match e {
        Error::Unseal(
            UnsealError::NotInitialized | UnsealError::AlreadyUnsealed | UnsealError::AlreadyGave,
        ) => Code::FailedPrecondition,
        Error::Unseal(UnsealError::NotHolder) => Code::PermissionDenied,
        Error::Policy(_) | Error::InvalidArgument(_) | Error::Unseal(_) => Code::InvalidArgument,
        Error::Crypto(c) => match c {
            CryptoError::DecryptionFailed | CryptoError::OperationFailed => Code::InvalidArgument,
            CryptoError::Rng | CryptoError::MalformedKey | CryptoError::Mismatch => Code::Internal,
            _ => Code::Internal,
        },
        Error::NotFound { .. } => Code::NotFound,
        Error::AlreadyExists { .. } => Code::AlreadyExists,
        Error::InvalidState { .. }
        | Error::FailedPrecondition(_)
        | Error::ApprovalPending { .. } => Code::FailedPrecondition,
        Error::PermissionDenied { .. } => Code::PermissionDenied,
        Error::ResourceExhausted(_) => Code::ResourceExhausted,
        Error::Sealed => Code::Unavailable,
        // The password shield: a weak or stale password is the request's fault; a replayed
        // seal names something that was already used.
        Error::Password(p) => match p {
            PasswordRefusal::Weak(_) | PasswordRefusal::Stale { .. } => Code::InvalidArgument,
            PasswordRefusal::Replayed => Code::AlreadyExists,
            _ => Code::InvalidArgument,
        },
        Error::Store(s) => match s {
            StoreError::Conflict { .. } => Code::Aborted,
            StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::Corrupt(_) | StoreError::Io(_) => Code::Internal,
            _ => Code::Internal,
        },
        _ => Code::Internal,
    }
}

/// Why the server refuses a request: a core error, or one of the refusals the server makes
/// itself (identity, limits, its own state). Conversions, limits and handlers return it; only
/// [`to_status`] turns it into a `Status`, with the request id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error(transparent)]
    Core(#[from] Error),
    /// A request field is missing or out of range (what and why, in the caller's terms).
    #[error("{0}")]
    BadRequest(std::borrow::Cow<'static, str>),
    #[error("no usable client certificate subject (SAN URI or CN)")]
    NoSubject,
    /// The connection's certificate was revoked (`[tls] client_crl`) after it connected.
    #[error("the client certificate has been revoked")]
    CertificateRevoked,
    #[error("{subject} is not a registered principal; an administrator must add it")]
    UnknownPrincipal { subject: String },
    #[error("rate limit of {rate} requests/s (burst {burst}) exceeded for {subject}; retry later")]
    RateLimited {
        rate: f64,
        burst: f64,
        subject: String,
    },
    /// A batch took more tokens (one per item) than the caller's bucket held: none was taken.
    #[error(
        "rate limit of {rate} requests/s (burst {burst}) exceeded for {subject}: a batch counts \
         each of its {items} items as a request; retry later, or send smaller batches"
    )]
    RateLimitedBatch {
        items: usize,
        rate: f64,
        burst: f64,
        subject: String,
    },
    /// A batch over `[limits] max_batch_items` or `max_batch_bytes`: none of its items is done.
    #[error(
        "the batch holds {len} {unit}; the limit is {limit} {unit} per call, and none of its \
         items was done"
    )]
    BatchTooLarge {
        len: usize,
        limit: usize,
        unit: &'static str,
    },
    #[error("{field} is {len} bytes; the limit is {limit} bytes")]
    TooLarge {
        field: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("the KMS is already initialised")]
    AlreadyInitialised,
    /// Init or restore from a certificate that is not a bootstrap identity, without the token.
    #[error(
        "{subject} may not {what}: only a bootstrap identity (bootstrap_admins in the server's \
         config) may, or a caller with the one-time init token the server wrote at first start"
    )]
    NotBootstrap { subject: String, what: &'static str },
    #[error("restore needs an uninitialised KMS; this one is initialised")]
    RestoreNeedsEmptyStore,
    #[error("this server keeps no audit trail")]
    NoAuditTrail,
    /// The audit trail cannot serve an export now (what the store said is in the log).
    #[error("the audit trail cannot be exported now: {0}")]
    AuditUnavailable(String),
    /// A response could not be encoded: a bug, never the caller's fault.
    #[error("{0} could not be encoded")]
    Encoding(&'static str),
}

impl From<kms_core::InvalidInput> for Refusal {
    fn from(e: kms_core::InvalidInput) -> Self {
        Self::Core(e.into())
    }
}

impl From<kms_core::policy::PolicyError> for Refusal {
    fn from(e: kms_core::policy::PolicyError) -> Self {
        Self::Core(e.into())
    }
}

fn refusal_code(r: &Refusal) -> Code {
    match r {
        Refusal::Core(e) => code_of(e),
        Refusal::NoSubject | Refusal::CertificateRevoked => Code::Unauthenticated,
        Refusal::UnknownPrincipal { .. } => Code::PermissionDenied,
        Refusal::RateLimited { .. } | Refusal::RateLimitedBatch { .. } => Code::ResourceExhausted,
        Refusal::BadRequest(_) | Refusal::TooLarge { .. } | Refusal::BatchTooLarge { .. } => {
            Code::InvalidArgument
        }
        Refusal::AlreadyInitialised => Code::AlreadyExists,
        Refusal::NotBootstrap { .. } => Code::PermissionDenied,
        Refusal::RestoreNeedsEmptyStore => Code::FailedPrecondition,
        Refusal::NoAuditTrail | Refusal::AuditUnavailable(_) => Code::Unavailable,
        Refusal::Encoding(_) => Code::Internal,
    }
}

/// The one map from a refusal to a status, logging it with the request id. Internal errors keep
/// their detail in the log only; everything else is already safe to show (core errors are built
/// from safe fields, the server's own refusals name only the caller's input and limits).
pub fn to_status(e: impl Into<Refusal>, request_id: &str) -> Status {
    let e = e.into();
    let code = refusal_code(&e);
    if matches!(code, Code::Internal | Code::Unavailable | Code::Aborted) {
        tracing::error!(request_id, code = ?code, error = %e, "request failed");
    } else {
        // A refusal is worth a line even when the per-call lines are off (`logging.rs`).
        tracing::warn!(request_id, code = ?code, error = %e, "request refused");
    }
    unlogged(&e, code, request_id)
}

/// As [`to_status`] without the log line, for refusals that come in floods (an unregistered
/// certificate's requests, refused at the gate), which the caller logs rate-limited instead.
pub fn to_status_unlogged(e: impl Into<Refusal>, request_id: &str) -> Status {
    let e = e.into();
    let code = refusal_code(&e);
    unlogged(&e, code, request_id)
}

fn unlogged(e: &Refusal, code: Code, request_id: &str) -> Status {
    let shown = if code == Code::Internal {
        "internal error; the server log has the detail".to_owned()
    } else {
        e.to_string()
    };
    let mut status = Status::new(code, format!("{shown} (request {request_id})"));
    if let Refusal::Core(Error::ApprovalPending { id, .. }) = e
        && let Ok(value) = id.parse()
    {
        // For clients that want the id without reading the message (the CLI prints it).
        status.metadata_mut().insert(APPROVAL_ID, value);
    }
    named(status, request_id)
}

/// The benchmark floor's answer to every method but Encrypt (`server::run_floor`): it is no
/// KMS, and says so.
#[must_use]
pub fn not_in_the_floor() -> Status {
    Status::unimplemented("the benchmark floor answers Encrypt only")
}

/// The metadata key naming a dual-control request: on the refusal that filed it, and on the
/// Backup call that takes a released approval.
pub const APPROVAL_ID: &str = "kms-approval-id";

/// The source of a [`Status`] whose message already names its request id: how the audit layer
/// knows not to name it again, without reading the message.
#[derive(Debug)]
pub struct NamesRequest {
    request_id: String,
}

impl NamesRequest {
    #[must_use]
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl std::fmt::Display for NamesRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request {}", self.request_id)
    }
}

impl std::error::Error for NamesRequest {}

/// Marks `status` (whose message names `request_id`) as naming it.
#[must_use]
pub fn named(mut status: Status, request_id: &str) -> Status {
    status.set_source(std::sync::Arc::new(NamesRequest {
        request_id: request_id.to_owned(),
    }));
    status
}

/// A handler's worker task panicked or was cancelled: the one map for that case too, so the
/// caller still gets the request id.
pub fn worker_failed(request_id: &str) -> Status {
    tracing::error!(request_id, "worker task failed");
    named(
        Status::internal(format!("worker failed (request {request_id})")),
        request_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_core::keys::state::KeyState;

    #[test]
    fn every_class_gets_its_code() {
        let cases: Vec<(Error, Code)> = vec![
            (Error::Sealed, Code::Unavailable),
            (
                Error::NotFound {
                    what: "key",
                    name: "x".into(),
                },
                Code::NotFound,
            ),
            (
                Error::PermissionDenied {
                    principal: "p".into(),
                    op: "encrypt",
                },
                Code::PermissionDenied,
            ),
            (
                Error::InvalidState {
                    key: "k".into(),
                    state: KeyState::Disabled,
                    op: "encrypt",
                },
                Code::FailedPrecondition,
            ),
            (
                Error::Crypto(CryptoError::DecryptionFailed),
                Code::InvalidArgument,
            ),
            (Error::Crypto(CryptoError::Rng), Code::Internal),
            (
                Error::Store(StoreError::Corrupt("secret detail".into())),
                Code::Internal,
            ),
            (
                kms_core::InvalidInput::new("x", "y").into(),
                Code::InvalidArgument,
            ),
        ];
        for (e, code) in cases {
            let shown = e.to_string();
            let s = to_status(e, "r1");
            assert_eq!(s.code(), code, "{shown}");
            assert!(s.message().contains("request r1"));
        }
        let s = to_status(
            Error::Store(StoreError::Corrupt("secret detail".into())),
            "r2",
        );
        assert!(
            !s.message().contains("secret detail"),
            "internal detail must stay in the log"
        );
    }

    /// A refusal that filed an approval request names its id in the metadata too.
    #[test]
    fn a_pending_approval_names_its_id_in_the_metadata() {
        let s = to_status(
            Error::ApprovalPending {
                id: "apr-0123456789abcdef".into(),
                operation: "backup",
                needed: 2,
            },
            "r-1",
        );
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.metadata().get(APPROVAL_ID).and_then(|v| v.to_str().ok()),
            Some("apr-0123456789abcdef")
        );
        assert!(
            s.message()
                .contains("another administrator runs `kms approve apr-0123456789abcdef`"),
            "{}",
            s.message()
        );
        assert!(
            to_status(Error::Sealed, "r-2")
                .metadata()
                .get(APPROVAL_ID)
                .is_none()
        );
    }

    /// Every core error variant, and every variant of the errors it wraps, through the one map:
    /// the code, the request id in the message, and no secret detail for internal errors.
    /// The core enums are `#[non_exhaustive]`, so a new variant cannot break a match here;
    /// add it to this list when it is added to the core.
    #[test]
    fn every_core_error_variant_maps() {
        use kms_core::alg::{KeySpec, Purpose};
        use kms_core::policy::PolicyError;
        const SECRET: &str = "s3cret-detail";
        let cases: Vec<(Error, Code)> = vec![
            (
                Error::Policy(PolicyError::NotGm { algorithm: "aes" }),
                Code::InvalidArgument,
            ),
            (
                Error::Policy(PolicyError::WrongPurpose {
                    spec: KeySpec::Sm4Gcm,
                    purpose: Purpose::Sign,
                }),
                Code::InvalidArgument,
            ),
            (
                Error::InvalidArgument(kms_core::InvalidInput::new("f", "bad")),
                Code::InvalidArgument,
            ),
            (
                Error::Crypto(CryptoError::DecryptionFailed),
                Code::InvalidArgument,
            ),
            (Error::Crypto(CryptoError::Rng), Code::Internal),
            (Error::Crypto(CryptoError::MalformedKey), Code::Internal),
            (Error::Crypto(CryptoError::Mismatch), Code::Internal),
            (
                Error::Crypto(CryptoError::OperationFailed),
                Code::InvalidArgument,
            ),
            (
                Error::NotFound {
                    what: "key",
                    name: "k".into(),
                },
                Code::NotFound,
            ),
            (
                Error::AlreadyExists {
                    what: "alias",
                    name: "a".into(),
                },
                Code::AlreadyExists,
            ),
            (
                Error::InvalidState {
                    key: "k".into(),
                    state: KeyState::Disabled,
                    op: "encrypt",
                },
                Code::FailedPrecondition,
            ),
            (
                Error::FailedPrecondition("not now".into()),
                Code::FailedPrecondition,
            ),
            (
                Error::ApprovalPending {
                    id: "apr-0123456789abcdef".into(),
                    operation: "backup",
                    needed: 2,
                },
                Code::FailedPrecondition,
            ),
            (
                Error::PermissionDenied {
                    principal: "p".into(),
                    op: "encrypt",
                },
                Code::PermissionDenied,
            ),
            (Error::Sealed, Code::Unavailable),
            (Error::Unseal(UnsealError::Corrupt), Code::InvalidArgument),
            (Error::Unseal(UnsealError::WrongSet), Code::InvalidArgument),
            (Error::Unseal(UnsealError::Duplicate), Code::InvalidArgument),
            (Error::Unseal(UnsealError::Mismatch), Code::InvalidArgument),
            (
                Error::Unseal(UnsealError::NotInitialized),
                Code::FailedPrecondition,
            ),
            (
                Error::Unseal(UnsealError::AlreadyUnsealed),
                Code::FailedPrecondition,
            ),
            (
                Error::Unseal(UnsealError::AlreadyGave),
                Code::FailedPrecondition,
            ),
            (
                Error::Unseal(UnsealError::NotHolder),
                Code::PermissionDenied,
            ),
            (
                Error::Store(StoreError::Conflict {
                    tree: kms_core::store::Tree::Meta,
                }),
                Code::Aborted,
            ),
            (
                Error::Store(StoreError::Unavailable("down".into())),
                Code::Unavailable,
            ),
            (
                Error::Password(PasswordRefusal::Weak(
                    kms_core::crypto::password_hash::Weakness::NoDigit,
                )),
                Code::InvalidArgument,
            ),
            (
                Error::Password(PasswordRefusal::Stale {
                    skew: 301,
                    window: 300,
                }),
                Code::InvalidArgument,
            ),
            (
                Error::Password(PasswordRefusal::Replayed),
                Code::AlreadyExists,
            ),
            (
                Error::Store(StoreError::Corrupt(SECRET.into())),
                Code::Internal,
            ),
            (
                Error::Store(StoreError::Io(std::io::Error::other(SECRET))),
                Code::Internal,
            ),
            (
                Error::ResourceExhausted("the replay guard is full".into()),
                Code::ResourceExhausted,
            ),
        ];
        for (e, code) in cases {
            let shown = e.to_string();
            let s = to_status(e, "rq-7");
            assert_eq!(s.code(), code, "{shown}");
            assert!(s.message().ends_with("(request rq-7)"), "{}", s.message());
            assert!(!s.message().contains(SECRET), "{}", s.message());
        }
        let w = worker_failed("rq-8");
        assert_eq!(w.code(), Code::Internal);
        assert!(w.message().contains("(request rq-8)"));
    }

    /// Every refusal the server makes itself, through the same map.
    #[test]
    fn every_server_refusal_maps() {
        let cases: Vec<(Refusal, Code, &str)> = vec![
            (
                Refusal::BadRequest("key is required".into()),
                Code::InvalidArgument,
                "key is required",
            ),
            (
                Refusal::NoSubject,
                Code::Unauthenticated,
                "client certificate",
            ),
            (
                Refusal::CertificateRevoked,
                Code::Unauthenticated,
                "client certificate has been revoked",
            ),
            (
                Refusal::UnknownPrincipal {
                    subject: "spiffe://x".into(),
                },
                Code::PermissionDenied,
                "spiffe://x is not a registered principal",
            ),
            (
                Refusal::RateLimited {
                    rate: 1.0,
                    burst: 2.0,
                    subject: "s".into(),
                },
                Code::ResourceExhausted,
                "rate limit of 1 requests/s",
            ),
            (
                Refusal::RateLimitedBatch {
                    items: 5,
                    rate: 1.0,
                    burst: 2.0,
                    subject: "s".into(),
                },
                Code::ResourceExhausted,
                "a batch counts each of its 5 items as a request",
            ),
            (
                Refusal::BatchTooLarge {
                    len: 1001,
                    limit: 1000,
                    unit: "items",
                },
                Code::InvalidArgument,
                "the batch holds 1001 items; the limit is 1000 items per call, and none of its items was done",
            ),
            (
                Refusal::TooLarge {
                    field: "plaintext",
                    len: 9,
                    limit: 8,
                },
                Code::InvalidArgument,
                "plaintext is 9 bytes; the limit is 8 bytes",
            ),
            (
                Refusal::AlreadyInitialised,
                Code::AlreadyExists,
                "already initialised",
            ),
            (
                Refusal::RestoreNeedsEmptyStore,
                Code::FailedPrecondition,
                "uninitialised",
            ),
            (
                Refusal::NotBootstrap {
                    subject: "kms://x".into(),
                    what: "initialise the KMS",
                },
                Code::PermissionDenied,
                "kms://x may not initialise the KMS: only a bootstrap identity",
            ),
            (Refusal::NoAuditTrail, Code::Unavailable, "no audit trail"),
            (
                Refusal::AuditUnavailable("busy".into()),
                Code::Unavailable,
                "cannot be exported now: busy",
            ),
            (
                Refusal::Encoding("inventory"),
                Code::Internal,
                "internal error",
            ),
            (
                kms_core::InvalidInput::new("key", "is required").into(),
                Code::InvalidArgument,
                "invalid key: is required",
            ),
        ];
        for (r, code, text) in cases {
            let s = to_status(r, "rq-9");
            assert_eq!(s.code(), code, "{}", s.message());
            assert!(s.message().contains(text), "{}", s.message());
            assert!(s.message().ends_with("(request rq-9)"), "{}", s.message());
        }
    }
}
