//! GM transport for the KMS API (issue 16): TLS 1.3 with the RFC 8998 suite TLS_SM4_GCM_SM3 as
//! a rustls `CryptoProvider` over the RustCrypto SM2/SM3/SM4 crates, and SM2-with-SM3
//! certificates.
//!
//! - [`sm3`]: the transcript hash, HMAC-SM3 and HKDF-SM3 of the key schedule.
//! - [`sm4_gcm`]: SM4-GCM record protection.
//! - [`kx`]: ECDHE on curveSM2.
//! - [`sign`]: sm2sig_sm3 CertificateVerify signatures (ID "TLSv1.3+GM+Cipher+Suite").
//! - [`provider`]: the GM-only provider and the standard one with the GM suite in front.
//! - [`verifier`]: rustls verifiers for SM2 chains, with webpki for everything else.
//! - [`x509`]: SM2 certificates: issuance and chain verification.

pub mod kx;
pub mod provider;
pub mod sign;
pub mod sm3;
pub mod sm4_gcm;
pub mod verifier;
pub mod x509;
