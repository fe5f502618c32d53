//! `CliError`: one message line, an optional hint line, and the exit code that goes with it.
//!
//! Every failure the user sees goes through here, printed as
//! ```text
//! error: <message>
//! hint: <what to do about it>
//! ```
//! The exit code says what kind of failure it was, so scripts can tell "denied" from "not found"
//! from "the server is down" without parsing text (see [`ExitKind`]).

use std::fmt;
use std::io;

use tonic::Code;

/// What kind of failure ended the command; each kind has its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// 1: `verify` / `verify-mac` ran and the signature or tag is not valid.
    VerificationFailed,
    /// 2: the command line or the connection settings are wrong.
    Usage,
    /// 3: the server refused: wrong role, no grant, or an unaccepted certificate.
    PermissionDenied,
    /// 4: no such key, alias, principal or grant.
    NotFound,
    /// 5: the server is sealed, down, unreachable, or asks to come back later.
    Unavailable,
    /// 6: the server rejected an argument, or the key or server is in the wrong state for it.
    InvalidArgument,
    /// 7: anything else (local I/O, internal server errors, …).
    Other,
}

impl ExitKind {
    /// The process exit code.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::VerificationFailed => 1,
            Self::Usage => 2,
            Self::PermissionDenied => 3,
            Self::NotFound => 4,
            Self::Unavailable => 5,
            Self::InvalidArgument => 6,
            Self::Other => 7,
        }
    }

    /// The kind for a gRPC status code.
    #[must_use]
    pub const fn from_code(code: Code) -> Self {
        match code {
            // `Ok` never arrives as an error; treat it as "other" rather than success.
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss => Self::Other,
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::AlreadyExists => Self::InvalidArgument,
            Code::NotFound => Self::NotFound,
            Code::PermissionDenied | Code::Unauthenticated => Self::PermissionDenied,
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
                Self::Unavailable
            }
        }
    }
}

/// A failure as the user sees it.
#[derive(Debug)]
pub struct CliError {
    /// The kind, which sets the exit code.
    pub kind: ExitKind,
    /// One line: what went wrong.
    pub message: String,
    /// One line: what to do about it.
    pub hint: Option<String>,
}

impl CliError {
    /// A failure of `kind` with `message` and no hint.
    pub fn new(kind: ExitKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitKind::Usage, message)
    }

    /// A local failure that fits no other kind (exit 7).
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ExitKind::Other, message)
    }

    /// Adds (or replaces) the hint line.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A failed read or write of a local file; `what` names it ("--in file", "stdout", a path).
    pub fn io(what: &str, err: &io::Error) -> Self {
        Self::other(format!("{what}: {err}"))
    }

    /// The exit code.
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        self.kind.code()
    }

    /// A gRPC status from the server, with a hint that fits its code.
    #[must_use]
    pub fn from_status(status: &tonic::Status) -> Self {
        let code = status.code();
        let message = if status.message().is_empty() {
            code.description().to_owned()
        } else {
            status.message().to_owned()
        };
        // A status with a source was made on this side from a transport failure: the server never
        // answered. With TLS 1.3 that is also how a server's refusal of our certificate shows.
        if let Some(source) = std::error::Error::source(status) {
            return Self::new(
                ExitKind::Unavailable,
                format!("the connection to the server failed: {}", chain(source)),
            )
            .with_hint(
                "is the server still running? If so, it may refuse your client certificate: \
                 is it issued by the CA the server trusts?",
            );
        }
        let hint = match status
            .metadata()
            .get("kms-approval-id")
            .and_then(|v| v.to_str().ok())
        {
            // Dual control filed a request: say what happens next.
            Some(id) => Some(format!(
                "it runs once approved: another administrator runs `kms approve {}` (`kms approvals list` shows it)",
                crate::output::printable(id)
            )),
            None => hint_for(code, &message),
        };
        Self {
            kind: ExitKind::from_code(code),
            message,
            hint,
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

impl fmt::Display for CliError {
    /// `error: <message>` and, when there is one, `\nhint: <hint>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

fn hint_for(code: Code, message: &str) -> Option<String> {
    let hint = match code {
        Code::Unavailable if message.to_ascii_lowercase().contains("sealed") => {
            "the KMS is sealed: administrators run `kms unseal` until the threshold is reached"
        }
        Code::Unavailable => "is the server running? `kms status` checks the connection",
        Code::ResourceExhausted => "the server is limiting requests; try again shortly",
        Code::DeadlineExceeded => {
            "the server did not answer in time; try again, or raise --timeout"
        }
        Code::PermissionDenied => {
            "your principal lacks the role or grant for this; `kms status` shows who the server thinks you are"
        }
        Code::Unauthenticated => {
            "the server did not accept your client certificate; check the profile's cert and key"
        }
        Code::NotFound => "check the key id or alias with `kms key list`",
        Code::FailedPrecondition => {
            "the key's or the server's state does not allow this; `kms key describe K` or `kms status` shows it"
        }
        Code::InvalidArgument if message.contains("decryption failed") => {
            "the ciphertext is damaged, or the --context pairs differ from the ones it was encrypted with"
        }
        Code::InvalidArgument | Code::OutOfRange => {
            "see `kms <command> --help` for what is accepted"
        }
        Code::AlreadyExists => {
            "it exists already: `kms status`, `kms key list` or `kms principal list` show what there is"
        }
        Code::Unimplemented => "the server does not offer this operation (is it an older version?)",
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::Aborted
        | Code::Internal
        | Code::DataLoss => return None,
    };
    Some(hint.to_owned())
}

/// The message of an error and its sources, joined by `": "`, without repeats.
pub use kms_client::connect::chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let cases = [
            (Code::PermissionDenied, 3),
            (Code::Unauthenticated, 3),
            (Code::NotFound, 4),
            (Code::Unavailable, 5),
            (Code::ResourceExhausted, 5),
            (Code::DeadlineExceeded, 5),
            (Code::InvalidArgument, 6),
            (Code::FailedPrecondition, 6),
            (Code::AlreadyExists, 6),
            (Code::OutOfRange, 6),
            (Code::Internal, 7),
            (Code::Unknown, 7),
            (Code::Unimplemented, 7),
            (Code::DataLoss, 7),
        ];
        for (code, exit) in cases {
            assert_eq!(ExitKind::from_code(code).code(), exit, "{code:?}");
        }
        assert_eq!(ExitKind::VerificationFailed.code(), 1);
        assert_eq!(ExitKind::Usage.code(), 2);
    }

    #[test]
    fn a_sealed_server_gets_the_unseal_hint() {
        let err = CliError::from(tonic::Status::unavailable("the KMS is sealed"));
        assert_eq!(err.exit_code(), 5);
        assert!(err.hint.as_deref().unwrap().contains("kms unseal"));
        let shown = err.to_string();
        assert!(
            shown.starts_with("error: the KMS is sealed\nhint: "),
            "{shown}"
        );
    }

    #[test]
    fn a_failed_decryption_points_at_the_context() {
        let err = CliError::from(tonic::Status::invalid_argument(
            "decryption failed (request 1)",
        ));
        assert_eq!(err.exit_code(), 6);
        assert!(err.hint.unwrap().contains("--context"));
    }

    #[test]
    fn an_empty_status_message_falls_back_to_the_code() {
        let err = CliError::from(tonic::Status::new(Code::NotFound, ""));
        assert_eq!(err.message, Code::NotFound.description());
        assert_eq!(err.exit_code(), 4);
    }

    #[test]
    fn a_transport_failure_is_unavailable_with_its_cause() {
        let status = tonic::Status::from_error(Box::new(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "stream closed because of a broken pipe",
        )));
        let err = CliError::from(status);
        assert_eq!(err.exit_code(), 5);
        assert!(err.message.contains("broken pipe"), "{}", err.message);
        assert!(err.hint.unwrap().contains("client certificate"));
    }

    #[test]
    fn chain_joins_sources_once() {
        let inner = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = io::Error::other(inner);
        assert_eq!(chain(&outer), "connection refused");
    }
}
