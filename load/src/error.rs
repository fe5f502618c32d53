//! Why a run cannot start, why one request failed, and why a run stopped before it could
//! report.

use std::io;

/// Why [`Options`](crate::Options) cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// More connections than request loops: some connections would stay idle.
    #[error(
        "--connections {connections} is more than --concurrency {concurrency}: some connections would stay idle"
    )]
    IdleConnections {
        /// Connections asked for.
        connections: u32,
        /// Request loops asked for.
        concurrency: u32,
    },
    /// A loop count or connection count of zero.
    #[error("--concurrency and --connections must be at least 1")]
    NoLoops,
    /// `datakey` with a size that is no data key length.
    #[error("--size {0} is not a data key length")]
    DataKeySize(u32),
    /// `--batch` with an operation that has no batch form, or a size out of range.
    #[error("--batch {size} with --op {op}: {why}")]
    Batch {
        op: &'static str,
        size: u32,
        why: &'static str,
    },
    /// `hash-password` without `--pepper`.
    #[error("--op hash-password needs --pepper, the pepper key")]
    NoPepper,
    /// `verify-request` without `--partner-key`.
    #[error("--op verify-request needs --partner-key, the MAC key's bytes the partner signs with")]
    NoPartnerKey,
    /// The CPU time of the process given cannot be read.
    #[error("--server-pid {pid}: cannot read its CPU time: {source}")]
    ServerPid {
        /// The process id given.
        pid: u32,
        /// Why it cannot be read.
        source: io::Error,
    },
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The server refused or failed the call, or the connection failed (a status with a
    /// source was made on this side: the server never answered).
    #[error("{}", status_message(.0))]
    Status(tonic::Status),
    /// The server found the prepared signature invalid.
    #[error("the server found the prepared signature invalid")]
    SignatureInvalid,
    /// An item of a batch failed (its code and message).
    #[error("an item of the batch failed: {0:?}: {1}")]
    Item(tonic::Code, String),
    /// The server returned another number of results than the batch had items.
    #[error("the server returned {got} results for a batch of {want}")]
    BatchLength {
        /// Results returned.
        got: usize,
        /// Items sent.
        want: usize,
    },
    /// The server's verdict on a signed request was not OK (`verify-request`).
    #[error("the request was not verified: {0}")]
    Verdict(String),
    /// This side could not seal a password (`hash-password`) or sign a request
    /// (`verify-request`).
    #[error("sealing or signing failed: {0}")]
    Sealing(String),
    /// The server returned a plaintext of another length than was encrypted.
    #[error("the server returned {got} bytes of plaintext, not {want}")]
    PlaintextLength {
        /// Bytes returned.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

/// The server's message, else the code's description; for a transport failure, its causes.
fn status_message(status: &tonic::Status) -> String {
    if let Some(source) = std::error::Error::source(status) {
        let mut out = format!("the connection to the server failed: {source}");
        let mut next = source.source();
        while let Some(cause) = next {
            out.push_str(&format!(": {cause}"));
            next = cause.source();
        }
        return out;
    }
    if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    }
}

/// Why a run stopped before it could report.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No channel was given.
    #[error("no connection was made")]
    NoConnection,
    /// A step before the load failed: preparing the input, or the first request.
    #[error("{step} failed: {failure}")]
    Probe {
        /// Which step, e.g. "the first request".
        step: &'static str,
        /// Why.
        failure: Failure,
    },
    /// The key's public key (asym-decrypt) is not one the client can encrypt to.
    #[error("the key's public key cannot be used here: {0}")]
    PublicKey(String),
    /// The payload cannot be encrypted to the key's public key (too long for RSA-OAEP).
    #[error("cannot encrypt {len} bytes to the key's public key: {reason}")]
    PayloadTooLong {
        /// The payload's length.
        len: usize,
        /// Why.
        reason: String,
    },
    /// A request loop panicked or was cancelled.
    #[error("a request loop failed: {0}")]
    Loop(String),
    /// The operation has no batch RPC (`Plan::new` refuses such a plan first).
    #[error("--op {0} has no batch form")]
    NoBatchForm(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_the_server_said_them() {
        assert_eq!(
            Failure::Status(tonic::Status::failed_precondition("key is disabled")).to_string(),
            "key is disabled"
        );
        assert_eq!(
            Failure::Status(tonic::Status::new(tonic::Code::Unavailable, "")).to_string(),
            tonic::Code::Unavailable.description()
        );
        assert_eq!(
            Failure::PlaintextLength { got: 3, want: 4 }.to_string(),
            "the server returned 3 bytes of plaintext, not 4"
        );
    }
}
