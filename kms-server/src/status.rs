//! The one mapping from core errors to gRPC status (API-4). The caller gets a clear message with
//! no secret in it and a request id; the server log gets the detail under the same id.

use kms_core::store::StoreError;
use kms_core::{CryptoError, Error, UnsealError};
use tonic::{Code, Status};

fn code_of(e: &Error) -> Code {
    match e {
        Error::Policy(_) | Error::InvalidArgument(_) | Error::Unseal(_) => Code::InvalidArgument,
        Error::Crypto(c) => match c {
            CryptoError::DecryptionFailed | CryptoError::OperationFailed => Code::InvalidArgument,
            CryptoError::Rng | CryptoError::MalformedKey | CryptoError::Mismatch => Code::Internal,
            _ => Code::Internal,
        },
        Error::NotFound { .. } => Code::NotFound,
        Error::AlreadyExists { .. } => Code::AlreadyExists,
        Error::InvalidState { .. } | Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::PermissionDenied { .. } => Code::PermissionDenied,
        Error::Sealed => Code::Unavailable,
        Error::Store(s) => match s {
            StoreError::Conflict { .. } => Code::Aborted,
            StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::Corrupt(_) | StoreError::Io(_) => Code::Internal,
            _ => Code::Internal,
        },
        _ => Code::Internal,
    }
}

/// Maps an error, logging it with the request id. Internal errors keep their detail in the log
/// only; everything else is already safe to show (core errors are built from safe fields).
pub fn to_status(e: &Error, request_id: &str) -> Status {
    let code = code_of(e);
    let shown = if code == Code::Internal {
        "internal error; the server log has the detail".to_owned()
    } else {
        e.to_string()
    };
    if matches!(e, Error::Unseal(UnsealError::NotInitialized)) {
        return Status::failed_precondition(format!("{shown} (request {request_id})"));
    }
    if matches!(code, Code::Internal | Code::Unavailable | Code::Aborted) {
        tracing::error!(request_id, code = ?code, error = %e, "request failed");
    } else {
        tracing::info!(request_id, code = ?code, error = %e, "request refused");
    }
    Status::new(code, format!("{shown} (request {request_id})"))
}

/// A handler's worker task panicked or was cancelled: the one map for that case too, so the
/// caller still gets the request id.
pub fn worker_failed(request_id: &str) -> Status {
    tracing::error!(request_id, "worker task failed");
    Status::internal(format!("worker failed (request {request_id})"))
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
            let s = to_status(&e, "r1");
            assert_eq!(s.code(), code, "{e}");
            assert!(s.message().contains("request r1"));
        }
        let s = to_status(
            &Error::Store(StoreError::Corrupt("secret detail".into())),
            "r2",
        );
        assert!(
            !s.message().contains("secret detail"),
            "internal detail must stay in the log"
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
                Error::Store(StoreError::Corrupt(SECRET.into())),
                Code::Internal,
            ),
            (
                Error::Store(StoreError::Io(std::io::Error::other(SECRET))),
                Code::Internal,
            ),
        ];
        for (e, code) in cases {
            let s = to_status(&e, "rq-7");
            assert_eq!(s.code(), code, "{e}");
            assert!(s.message().ends_with("(request rq-7)"), "{}", s.message());
            assert!(!s.message().contains(SECRET), "{}", s.message());
        }
        let w = worker_failed("rq-8");
        assert_eq!(w.code(), Code::Internal);
        assert!(w.message().contains("(request rq-8)"));
    }
}
