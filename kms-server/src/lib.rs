//! The KMS server: `kms-core` behind gRPC over mutual TLS. A binary (`kms-server serve`, `dev`,
//! `migrate`, `selftest`: [`run_cli`]) and a library, so tests run the real server in-process.
//!
//! One request, from the socket to the response (module names; `ARCHITECTURE.md` at the
//! repository root walks an Encrypt call file by file):
//!
//! ```text
//! TCP ─┬─ server, TLS port ──── rustls (tls): TLS 1.3/1.2 AEAD suites, RFC 8998 in front
//!      │                         (RFC 8998 alone under gm-only); client certificate required,
//!      │                         and not revoked (revocation: [tls] client_crl, reloaded)
//!      └─ server, [tlcp] port ── kms_tlcp (tls::tlcp_config): TLCP, double SM2 certificates
//!   → HTTP/2 preface (both within the handshake timeout, under one connection cap)
//!   → identity: the principal's subject (SAN URI, else CN) and the negotiated transport
//!   → audit_layer: request id and audit note; UNAVAILABLE at once if the trail cannot be written
//!   → services: registered principal + rate limit, limits, convert (proto → core)
//!   → kms_core::Kms: authorisation, reach, state, policy, unwrap under the KEK, primitive
//!   → status: core error → gRPC status carrying the request id
//!   → audit_layer: the record made durable by kms_core::audit::writer, else UNAVAILABLE
//!   → response
//! ```
//!
//! The audit layer wraps the whole router, so no handler can skip it; health and reflection are
//! the only paths it does not record. [`server::run`] serves one listener until a shutdown future
//! completes (tests call it on 127.0.0.1:0), [`server::run_with_tlcp`] adds the TLCP listener,
//! and both seal the KMS (wipe every key) when they return. [`hardening`] is the one module
//! allowed `unsafe`. [`metrics`] serves Prometheus metrics on a listener of its own when
//! `[metrics]` is configured; the audit layer, the accept loop and the scheduler feed it.

pub mod audit_layer;
pub mod bootstrap;
mod check_config;
mod cli;
pub mod config;
pub mod convert;
pub mod dev;
mod front_door;
pub mod gate;
pub mod hardening;
pub mod identity;
pub mod limits;
pub mod logging;
pub mod metrics;
mod migrate;
pub mod revocation;
mod serve;
pub mod server;
pub mod services;
pub mod status;
pub mod tls;

pub use cli::{EXIT_FAILED, EXIT_OK, run_cli};
pub use server::{ServeError, Settings, TlcpListener, run, run_with_tlcp};
