//! The tamper-evident audit trail (OPS-1).
//!
//! Every request leaves one [`Record`]; each record carries the SM3 hash of the one before, so
//! deleting, reordering or editing a record breaks the chain. At intervals, and at the end of
//! every export, a [`Checkpoint`] signed with the KMS audit key (SM2) covers the chain so far.
//! An export is JSON Lines; [`verify`] needs only the file and the audit public key, and names
//! the first line that does not verify.

mod export;
mod layout;
pub mod writer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alg::{DigestAlg, KeySpec, Purpose, SM2_DEFAULT_ID, SignatureRequest};
use crate::crypto::{self, Message, PublicKey};
use crate::policy::Policy;

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
    hex::encode(crypto::digest::digest_raw(DigestAlg::Sm3, canonical))
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

/// What verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub checkpoints: u64,
    pub last_hash: String,
    /// Records per writing node (each server process has its own node id). Several nodes on one
    /// database append to the one chain, which the database serialises, so their records
    /// interleave in `seq` order and verify like a single writer's.
    pub records_by_node: BTreeMap<String, u64>,
}

/// The first problem, with its 1-based line number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct Broken {
    pub line: usize,
    pub problem: String,
}

fn broken(line: usize, problem: impl Into<String>) -> Broken {
    Broken {
        line,
        problem: problem.into(),
    }
}

/// Checks a checkpoint's signature with the audit public key.
#[must_use]
pub fn checkpoint_signature_valid(cp: &Checkpoint, public: &PublicKey) -> bool {
    let policy = Policy::default();
    let Ok(open) = policy.approve_open(Purpose::Sign, KeySpec::Sm2) else {
        return false;
    };
    let Ok(sig) = policy.approve_verify(
        open,
        SignatureRequest::Sm2 {
            id: SM2_DEFAULT_ID.to_owned(),
        },
    ) else {
        return false;
    };
    let Ok(der) = hex::decode(&cp.signature) else {
        return false;
    };
    crypto::verify(&sig, public, Message::Raw(&cp.signed_bytes()), &der) == Ok(true)
}

/// Whether `line` (the one after a record) confirms that record's hash: a record chaining to it,
/// or a validly signed checkpoint over it.
fn vouches_for(line: &str, hash: &str, public: &PublicKey) -> bool {
    match serde_json::from_str::<Line>(line) {
        Ok(Line::Record(next)) => next.prev == hash,
        Ok(Line::Checkpoint(cp)) => cp.last_hash == hash && checkpoint_signature_valid(&cp, public),
        Err(_) => false,
    }
}

/// Verifies an exported trail (JSON Lines) with the audit public key, offline.
pub fn verify(text: &str, public: &PublicKey) -> Result<Verified, Broken> {
    let mut running = GENESIS.to_owned();
    let mut next_seq: Option<u64> = None;
    let mut records = 0u64;
    let mut checkpoints = 0u64;
    let mut records_by_node: BTreeMap<String, u64> = BTreeMap::new();
    let mut last: Option<(usize, Line)> = None;
    let mut last_record_line: Option<usize> = None;
    let lines: Vec<&str> = text.lines().collect();
    for (i, raw) in lines.iter().copied().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() {
            return Err(broken(n, "empty line"));
        }
        let line: Line =
            serde_json::from_str(raw).map_err(|e| broken(n, format!("not an audit line: {e}")))?;
        match &line {
            Line::Record(r) => {
                let expected = next_seq.unwrap_or(1);
                if r.seq != expected {
                    return Err(broken(
                        n,
                        format!(
                            "record seq {} where {expected} was expected (deleted or reordered)",
                            r.seq
                        ),
                    ));
                }
                if r.prev != running {
                    // If this record is itself vouched for by the line after it, the one before
                    // it is the edited one: name that line.
                    if let (Some(prev_line), Some(next)) = (last_record_line, lines.get(i + 1))
                        && vouches_for(next, &r.hash(), public)
                    {
                        return Err(broken(
                            prev_line,
                            format!(
                                "record {} was edited: the record after it no longer chains to it",
                                r.seq - 1
                            ),
                        ));
                    }
                    return Err(broken(
                        n,
                        format!(
                            "record {} does not chain to the record before it (edited, deleted or reordered)",
                            r.seq
                        ),
                    ));
                }
                // Re-serializing must reproduce the line exactly, so no field was reformatted.
                if serde_json::to_string(&line).map_err(|e| broken(n, e.to_string()))? != raw {
                    return Err(broken(
                        n,
                        format!("record {} is not in canonical form (edited)", r.seq),
                    ));
                }
                running = r.hash();
                last_record_line = Some(n);
                next_seq = Some(r.seq + 1);
                records += 1;
                *records_by_node.entry(r.node.clone()).or_default() += 1;
            }
            Line::Checkpoint(cp) => {
                let covered = next_seq.map_or(0, |s| s - 1);
                if cp.seq != covered || cp.last_hash != running {
                    return Err(broken(
                        n,
                        format!(
                            "checkpoint for record {} does not match the chain (ends at record {covered})",
                            cp.seq
                        ),
                    ));
                }
                if !checkpoint_signature_valid(cp, public) {
                    return Err(broken(
                        n,
                        "checkpoint signature does not verify with the audit public key",
                    ));
                }
                checkpoints += 1;
            }
        }
        last = Some((n, line));
    }
    match last {
        Some((_, Line::Checkpoint(cp))) if cp.closes_export => Ok(Verified {
            records,
            checkpoints,
            last_hash: running,
            records_by_node,
        }),
        Some((n, _)) => Err(broken(
            n,
            "the export does not end with its closing signed checkpoint (truncated or appended to)",
        )),
        None => Err(broken(1, "empty export")),
    }
}
