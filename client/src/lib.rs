//! For applications that call the KMS.
//!
//! - [`Client`]: every data-plane call over mutual TLS (standard TLS, RFC 8998 or TLCP), from a
//!   profile or explicit PEMs; UNAVAILABLE retried with backoff, a deadline per call, errors that
//!   name the server's request id, secrets in wiped buffers.
//! - The data-protection services (issue 22) as more [`Client`] methods: `tokenize`,
//!   `detokenize`, `hash_password`, `verify_password`, `verify_request` ([`data_protection`]).
//! - [`connect`] and [`profile`]: the channel and the profile files the CLI uses too.
//! - [`envelope`]: encrypt data of any size under one data key from `GenerateDataKey`, streamed
//!   in authenticated frames with constant memory (the format is in `docs/ENVELOPE.md`).
//!
//! ```
//! use std::collections::BTreeMap;
//! use kms_client::envelope::{self, Algorithm, Header};
//!
//! // In an application both come from `GenerateDataKey` (plaintext and ciphertext).
//! let data_key = [7u8; 16];
//! let wrapped_key = b"the KMS's ciphertext of the data key".to_vec();
//! let context = BTreeMap::from([("file".to_owned(), "report.pdf".to_owned())]);
//!
//! let mut sealed = Vec::new();
//! envelope::seal(Algorithm::Sm4Gcm, &data_key, &wrapped_key, &context, 4096,
//!                &b"any amount of data"[..], &mut sealed)?;
//!
//! let mut input = &sealed[..];
//! let header = Header::read_from(&mut input)?;
//! // Here an application calls `Decrypt(header.wrapped_key, header.context)` for the key.
//! assert_eq!(header.context, context);
//! let mut plain = Vec::new();
//! envelope::open(&header, &data_key, input, &mut plain)?;
//! assert_eq!(plain, b"any amount of data");
//! # Ok::<(), kms_client::envelope::EnvelopeError>(())
//! ```

mod client;
pub mod connect;
pub mod data_protection;
pub mod envelope;
pub mod profile;

pub use data_protection::{
    ItemRefusal, PasswordCheck, PasswordHash, RequestBody, RequestCheck, SignedRequest, Tokens,
};
pub use kms_proto::v1::RequestVerdict;

pub use client::{
    Client, ConnectError, Context, DataKey, Decrypted, Encrypted, KmsError, Mac, PublicKey, Retry,
    SignOptions, Signature, Verified,
};
