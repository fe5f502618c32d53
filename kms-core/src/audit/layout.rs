//! How the audit trail sits in the store: record and checkpoint keys, the tail, and the signed
//! checkpoint. Shared by the writer (appends) and the export (reads).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::writer::Signer;
use super::{Checkpoint, GENESIS};
use crate::store::{Store, StoreError, Tree};

pub(super) const TAIL: &[u8] = b"tail";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Tail {
    pub(super) seq: u64,
    pub(super) hash: String,
    pub(super) checkpointed_seq: u64,
}

pub(super) fn record_key(seq: u64) -> Vec<u8> {
    [b"r".as_slice(), &seq.to_be_bytes()].concat()
}

pub(super) fn checkpoint_key(seq: u64, time_ms: u64) -> Vec<u8> {
    [b"c".as_slice(), &seq.to_be_bytes(), &time_ms.to_be_bytes()].concat()
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn read_tail(store: &dyn Store) -> Result<(Tail, Option<Vec<u8>>), StoreError> {
    match store.get(Tree::Audit, TAIL)? {
        Some(bytes) => {
            let tail = serde_json::from_slice(&bytes)
                .map_err(|_| StoreError::Corrupt("audit tail does not decode".into()))?;
            Ok((tail, Some(bytes)))
        }
        None => Ok((
            Tail {
                seq: 0,
                hash: GENESIS.to_owned(),
                checkpointed_seq: 0,
            },
            None,
        )),
    }
}

pub(super) fn sign_checkpoint(
    signer: &Signer,
    node: &str,
    seq: u64,
    hash: &str,
    closes_export: bool,
) -> Option<Checkpoint> {
    let mut cp = Checkpoint {
        seq,
        time_ms: now_ms(),
        node: node.to_owned(),
        last_hash: hash.to_owned(),
        closes_export,
        key_id: String::new(),
        key_version: 0,
        signature: String::new(),
    };
    let template = cp.clone();
    let (key_id, version, sig) = signer(&|key_id: &str, version: u32| {
        Checkpoint {
            key_id: key_id.to_owned(),
            key_version: version,
            ..template.clone()
        }
        .signed_bytes()
    })?;
    cp.key_id = key_id;
    cp.key_version = version;
    cp.signature = hex::encode(sig);
    Some(cp)
}
