//! The tamper-evident audit trail (OPS-1).
//!
//! Every request leaves one [`Record`]; each record carries the SM3 hash of the one before, so
//! deleting, reordering or editing a record breaks the chain. At intervals, and at the end of
//! every export, a [`Checkpoint`] signed with the KMS audit key (SM2) covers the chain so far.
//! An export is JSON Lines; [`verify`] (text) and [`verify_reader`] (streaming) need only the
//! file and the audit public key, and name the first line that does not verify.
//!
//! With retention, the oldest records move to archive segment files; each segment and every
//! later export starts with an *anchor*, the signed closing checkpoint of the file before.
//! [`verify_files`] checks such files in order as one trail. An anchored file alone proves only
//! the records after its anchor; that the trail is complete from the genesis is proved only by
//! the chain of files, from a first file that starts at the genesis.

pub mod archive;
pub mod export;
mod layout;
mod verify;
pub mod writer;

use serde::{Deserialize, Serialize};

pub use self::verify::{
    Broken, ChainError, FileChain, MAX_LINE_BYTES, Start, Verified, VerifiedFile, VerifiedFiles,
    checkpoint_signature_valid, verify, verify_files, verify_reader,
};
use crate::crypto;

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the server knows about a request when it finishes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub request_id: String,
    pub principal: String,
    pub role: String,
    pub operation: String,
    pub key_id: Option<String>,
    pub key_version: Option<u32>,
    /// The gRPC status code name ("OK", "PERMISSION_DENIED", …).
    pub outcome: String,
    /// HMAC-SM3 of the encryption context under a key derived from the root key: equal
    /// contexts can be correlated, but the context itself is never recorded.
    pub context_hmac: Option<String>,
    /// E.g. "key-compromised" when a compromised key was used to decrypt or verify.
    pub flags: Vec<String>,
    /// The protocol and suite the caller's connection negotiated ("TLSv1.3 TLS_SM4_GCM_SM3");
    /// `None` for what did not come over the API.
    pub transport: Option<String>,
}

/// One audit record, as stored and exported (field order is the canonical order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub time_ms: u64,
    pub node: String,
    pub request_id: String,
    pub principal: String,
    pub role: String,
    pub operation: String,
    pub key_id: Option<String>,
    pub key_version: Option<u32>,
    pub outcome: String,
    pub context_hmac: Option<String>,
    pub flags: Vec<String>,
    /// The caller's negotiated protocol and suite. Left out of the canonical bytes when absent,
    /// so records written before it existed keep their hashes and still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// SM3 of the previous record's canonical bytes ([`GENESIS`] for the first).
    pub prev: String,
}

impl Record {
    /// The canonical bytes: the record serialized as JSON in field order.
    #[must_use]
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    #[must_use]
    pub fn hash(&self) -> String {
        chain_hash(&self.canonical())
    }
}

/// The chain hash of a record given its canonical bytes (for callers that already hold them).
#[must_use]
pub fn chain_hash(canonical: &[u8]) -> String {
    hex::encode(crypto::digest(
        crate::policy::ApprovedDigest::SM3,
        canonical,
    ))
}

/// A signed statement that the chain up to record `seq` hashes to `last_hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: u64,
    pub time_ms: u64,
    pub node: String,
    pub last_hash: String,
    /// True only for the checkpoint that closes an export: a file cut after an earlier
    /// checkpoint then fails to verify.
    pub closes_export: bool,
    pub key_id: String,
    pub key_version: u32,
    /// SM2 (SM3, default ID) DER signature over the checkpoint's canonical bytes with this field
    /// empty, hex.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes the signature covers.
    #[must_use]
    pub fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Self {
            signature: String::new(),
            ..self.clone()
        };
        serde_json::to_vec(&unsigned).unwrap_or_default()
    }
}

/// One line of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Line {
    Record(Record),
    Checkpoint(Checkpoint),
}
