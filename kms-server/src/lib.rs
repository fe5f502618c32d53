//! The KMS server: `kms-core` behind gRPC over mutual TLS.
//!
//! ```text
//! TCP → rustls (TLS 1.3/1.2, AEAD suites, client certificate required) → identity (SAN URI, else
//! CN) → registered principal + rate limit → limits → Kms (authorisation, policy, key lookup,
//! primitive) → status mapping → response
//! ```
//!
//! [`server::run`] serves on a listener until a shutdown future completes (tests call it on
//! 127.0.0.1:0); [`run_cli`] is the whole binary.

pub mod audit_layer;
mod cli;
pub mod config;
pub mod convert;
pub mod dev;
pub mod devpki;
pub mod hardening;
pub mod identity;
pub mod limits;
mod migrate;
mod serve;
pub mod server;
pub mod services;
pub mod status;
pub mod tls;

pub use cli::{EXIT_FAILED, EXIT_OK, run_cli};
pub use server::{ServeError, Settings, TlcpListener, run, run_with_tlcp};
