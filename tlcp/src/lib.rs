//! TLCP (GB/T 38636-2020, formerly GM/T 0024; protocol version 0x0101) over tokio, for the
//! KMS's 国密SSL listener: a pure-Rust implementation over the RustCrypto SM2/SM3/SM4 crates,
//! with SM2 certificate verification from [`kms_gmtls::x509`]. See `README.md` for why.
//!
//! ```text
//!  TcpStream ──► accept(Arc<TlcpServerConfig>, io) ──► TlcpStream<IO> ──► hyper / tonic
//!                    │                                    ├ peer_certificates(): [sign, enc, chain…]
//!                    └ handshake (server.rs)              └ suite_name(): "ECC_SM4_GCM_SM3" …
//! ```
//!
//! Suites: `ECC_SM4_GCM_SM3` (0xE053), `ECC_SM4_CBC_SM3` (0xE013), `ECDHE_SM4_GCM_SM3`
//! (0xE051), `ECDHE_SM4_CBC_SM3` (0xE011). Double certificates on both sides; the server
//! always requires the client's signing and encryption certificates, chained to a configured
//! SM2 client CA. No session resumption, no renegotiation, no compression.
//!
//! Modules, in the order a connection uses them:
//!
//! - `config`: certificates and keys from PEM, trust anchors, peer certificate checks;
//! - `messages`: handshake message bodies; `codec`: bounds-checked wire reading;
//! - `server` / `client`: the two handshake state machines;
//! - `kx`: SM2 signatures, the ECC pre-master secret, SM2 key agreement (ECDHE);
//! - `prf`: the SM3 PRF, master secret, key block, Finished;
//! - `record`: record framing and SM4-GCM / SM4-CBC + HMAC-SM3 protection;
//! - `conn`: handshake messages over records; `stream`: the established connection.

mod alert;
mod client;
mod codec;
mod config;
mod conn;
mod error;
mod kx;
mod messages;
mod prf;
mod record;
mod server;
mod stream;
mod suite;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

pub use config::{DEFAULT_HANDSHAKE_TIMEOUT, DoubleCert, TlcpClientConfig, TlcpServerConfig};
pub use error::{CertRole, TlcpError};
pub use stream::TlcpStream;
pub use suite::CipherSuite;

use conn::Conn;

/// Runs the server handshake on `io` (client authentication required) and returns the
/// established stream.
///
/// Needs a tokio runtime with the time driver (the handshake is bounded by
/// [`TlcpServerConfig::handshake_timeout`]).
///
/// # Errors
///
/// Any [`TlcpError`]; before returning it, the matching fatal alert is sent to the client
/// (best effort). Notably [`TlcpError::NotTlcp`] for a TLS (or other) client,
/// [`TlcpError::Certificate`] for a client certificate that does not chain to the client CA,
/// [`TlcpError::UnexpectedEof`] for a truncated handshake.
pub async fn accept<IO>(config: Arc<TlcpServerConfig>, io: IO) -> Result<TlcpStream<IO>, TlcpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = config.handshake_timeout;
    let mut conn = Conn::new(io);
    let result = tokio::time::timeout(timeout, server::handshake(&config, &mut conn))
        .await
        .unwrap_or(Err(TlcpError::Timeout(timeout)));
    finish(conn, result).await
}

/// Runs the client handshake on `io` and returns the established stream.
///
/// # Errors
///
/// Any [`TlcpError`] (the matching fatal alert is sent first, best effort).
pub async fn connect<IO>(config: Arc<TlcpClientConfig>, io: IO) -> Result<TlcpStream<IO>, TlcpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = config.handshake_timeout;
    let mut conn = Conn::new(io);
    let result = tokio::time::timeout(timeout, client::handshake(&config, &mut conn))
        .await
        .unwrap_or(Err(TlcpError::Timeout(timeout)));
    finish(conn, result).await
}

async fn finish<IO>(
    mut conn: Conn<IO>,
    result: Result<server::Negotiated, TlcpError>,
) -> Result<TlcpStream<IO>, TlcpError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match result {
        Ok(negotiated) => {
            let (io, rbuf, read_keys, write_keys) = conn.into_parts()?;
            Ok(TlcpStream::new(io, rbuf, read_keys, write_keys, negotiated))
        }
        Err(e) => {
            // Bounded too: a peer that does not read must not hold the task.
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.send_alert_for(&e)).await;
            Err(e)
        }
    }
}
