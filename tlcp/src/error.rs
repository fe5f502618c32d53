//! The one error type of the crate, and the alert each error sends to the peer.

use std::fmt;
use std::time::Duration;

use kms_gmtls::x509;

/// Which of the four TLCP certificates an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertRole {
    /// The server's signing certificate (signs ServerKeyExchange).
    ServerSign,
    /// The server's encryption certificate (key exchange).
    ServerEnc,
    /// The client's signing certificate (signs CertificateVerify).
    ClientSign,
    /// The client's encryption certificate (ECDHE key exchange).
    ClientEnc,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ServerSign => "server signing",
            Self::ServerEnc => "server encryption",
            Self::ClientSign => "client signing",
            Self::ClientEnc => "client encryption",
        })
    }
}

/// Why a TLCP handshake or connection failed.
///
/// Errors raised by this side also send a fatal alert to the peer (best effort) before the
/// connection is dropped; [`TlcpError::alert`] says which.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlcpError {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The connection closed in the middle of the handshake (a truncated handshake).
    #[error("the peer closed the connection during the handshake")]
    UnexpectedEof,
    /// The handshake did not finish within the configured time.
    #[error("the TLCP handshake did not finish within {0:?}")]
    Timeout(Duration),
    /// The peer speaks another protocol or version (e.g. a TLS 1.2/1.3 ClientHello).
    #[error("the peer does not speak TLCP: record/hello version {0:#06x}, TLCP is 0x0101")]
    NotTlcp(u16),
    /// No cipher suite both sides enable.
    #[error("no shared TLCP cipher suite: the peer offered {offered:04x?}")]
    NoSharedSuite {
        /// The suites the client offered (or the one the server chose, on the client side).
        offered: Vec<u16>,
    },
    /// A message or record does not parse.
    #[error("malformed {0}")]
    Decode(&'static str),
    /// A message arrived out of order.
    #[error("unexpected message: expected {expected}, got {got}")]
    UnexpectedMessage {
        /// What the state machine waited for.
        expected: &'static str,
        /// What came (content type or handshake type).
        got: String,
    },
    /// A record longer than TLCP allows.
    #[error("record too long: {0} bytes")]
    RecordOverflow(usize),
    /// A protected record failed its MAC (CBC) or tag (GCM) check, or its padding is wrong.
    #[error("bad record MAC: the record was altered or the keys disagree")]
    BadRecordMac,
    /// The peer sent no (or only one of the two) certificates.
    #[error("the peer sent no {0} certificate")]
    MissingCertificate(CertRole),
    /// A peer certificate failed chain verification (unknown CA, expired, malformed, not SM2…).
    #[error("{role} certificate refused: {source}")]
    Certificate {
        /// Which certificate.
        role: CertRole,
        /// What the verifier found.
        #[source]
        source: x509::Error,
    },
    /// A peer certificate's keyUsage does not allow its TLCP role.
    #[error("{role} certificate refused: keyUsage lacks {needed}")]
    KeyUsage {
        /// Which certificate.
        role: CertRole,
        /// The bit(s) it should have.
        needed: &'static str,
    },
    /// A ServerKeyExchange or CertificateVerify signature does not verify.
    #[error("bad {0} signature")]
    BadSignature(&'static str),
    /// The key exchange failed (pre-master secret does not decrypt, bad point…).
    #[error("key exchange failed: {0}")]
    KeyExchange(&'static str),
    /// The peer's Finished does not match the transcript.
    #[error("the peer's Finished does not match the handshake transcript")]
    BadFinished,
    /// The peer sent a fatal alert (or a warning during the handshake).
    #[error("the peer sent alert {description} ({code})")]
    AlertReceived {
        /// Alert description code.
        code: u8,
        /// Its name.
        description: &'static str,
    },
    /// Bad configuration (PEM, keys that do not match certificates, …).
    #[error("TLCP configuration: {0}")]
    Config(String),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
}

impl TlcpError {
    /// The alert this side sends when it fails with this error; `None` when no alert is due
    /// (the transport is gone, or the peer already sent one).
    #[must_use]
    pub fn alert(&self) -> Option<u8> {
        use crate::alert::*;
        match self {
            Self::Io(_) | Self::UnexpectedEof | Self::AlertReceived { .. } => None,
            Self::Timeout(_) | Self::Config(_) | Self::Rng => Some(INTERNAL_ERROR),
            Self::NotTlcp(_) => Some(PROTOCOL_VERSION),
            Self::NoSharedSuite { .. } | Self::MissingCertificate(_) => Some(HANDSHAKE_FAILURE),
            Self::Decode(_) => Some(DECODE_ERROR),
            Self::UnexpectedMessage { .. } => Some(UNEXPECTED_MESSAGE),
            Self::RecordOverflow(_) => Some(RECORD_OVERFLOW),
            Self::BadRecordMac => Some(BAD_RECORD_MAC),
            Self::Certificate { source, .. } => Some(certificate_alert(source)),
            Self::KeyUsage { .. } => Some(UNSUPPORTED_CERTIFICATE),
            Self::BadSignature(_) | Self::KeyExchange(_) | Self::BadFinished => Some(DECRYPT_ERROR),
        }
    }
}

/// The alert for a refused peer certificate.
fn certificate_alert(error: &x509::Error) -> u8 {
    use crate::alert::*;
    if matches!(error, x509::Error::UnknownIssuer { .. }) {
        UNKNOWN_CA
    } else if matches!(
        error,
        x509::Error::Expired { .. } | x509::Error::NotYetValid { .. }
    ) {
        CERTIFICATE_EXPIRED
    } else if matches!(
        error,
        x509::Error::WrongKeyAlgorithm { .. }
            | x509::Error::WrongCurve { .. }
            | x509::Error::WrongSignatureAlgorithm { .. }
    ) {
        UNSUPPORTED_CERTIFICATE
    } else {
        BAD_CERTIFICATE
    }
}

impl From<TlcpError> for std::io::Error {
    fn from(e: TlcpError) -> Self {
        if let TlcpError::Io(io) = e {
            return io;
        }
        let kind = if matches!(e, TlcpError::UnexpectedEof) {
            std::io::ErrorKind::UnexpectedEof
        } else {
            std::io::ErrorKind::InvalidData
        };
        Self::new(kind, e)
    }
}
