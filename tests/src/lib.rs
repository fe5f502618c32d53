//! Tests of the KMS as a whole, across crates.
//!
//! This crate will hold the end-to-end harness (DESIGN.md, STYLE.md §3): a dev PKI made in the
//! test (CA, server, and app/admin/auditor client certificates), a throwaway sled store, the real
//! server started on `127.0.0.1:0` over real mutual TLS, and typed clients per role. Until the
//! server serves gRPC, `tests/workspace.rs` checks what exists: that the server's self-test
//! command covers every algorithm the policy allows.
