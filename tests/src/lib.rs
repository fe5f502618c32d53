//! Tests of the KMS as a whole, across crates, and the end-to-end harness they share.
//!
//! The harness follows STYLE.md §3.5: real certificates made in the test ([`pki`]: a CA, a
//! server certificate for `localhost`/`127.0.0.1`, client certificates per role, plus the odd
//! ones — a client from another CA, a certificate with no subject), a throwaway sled store, the
//! real server started in-process with `kms_server::run` on `127.0.0.1:0` over real mutual TLS
//! ([`server`]), and tonic clients over our own rustls connector ([`net`]). [`world::World`] puts
//! them together: an initialised, unsealed server with an admin, two apps in different
//! namespaces, an auditor and an unregistered stranger, each with typed clients. [`pg::Cluster`]
//! is the same for several nodes sharing one PostgreSQL database (`tests/multinode.rs`).
//! [`gm_pki`] adds the same callers with SM2 certificates, and a world can be started over the
//! GM transport (RFC 8998 only) as well as the standard one. [`dev::DevServer`] is the other
//! shape of the same server: set up as `kms-server dev` sets it up (dev PKI, CLI profiles, one
//! unseal share), on a runtime of its own, for `kms-cli`'s tests that run the `kms` binary.
//!
//! `tests/e2e.rs` is the one end-to-end binary; `tests/workspace.rs` checks what spans crates
//! without a server (the self-test command against the algorithm list and policy).

// A harness whose setup step fails should fail the test that called it, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod dev;
pub mod gm_pki;
pub mod net;
pub mod pg;
pub mod pki;
pub mod server;
pub mod world;
