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
}
