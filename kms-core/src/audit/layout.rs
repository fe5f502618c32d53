//! How the audit trail sits in a store's [`Tree::Audit`] (`trail::TreeTrail`, the PostgreSQL
//! and memory stores): record and checkpoint keys, the tail, the archive anchor, and the signed
//! checkpoint; and the tail and checkpoint signing every trail shares. The same keys are the
//! interchange form of any trail: a backup carries them, a copy to another backend writes them,
//! and the live log (`live.rs`) reads and writes them there.
//!
//! Keys in [`Tree::Audit`]:
//!
//! - `r ‖ seq` (u64 BE) → the record's JSON ([`super::Record::to_json`]; the chain hashes
//!   it as [`super::Record::canonical`] frames it for the record's format);
//! - `c ‖ seq ‖ time_ms` (u64 BE each) → a signed checkpoint over the chain up to `seq`;
//! - `tail` → [`Tail`], owned by the writer (its batches are conditional on it); it also names
//!   the audit key versions the trail has been handed over to ([`Trusted`]), so that every
//!   writer, export and archive run signs with a version the trail has introduced;
//! - `anchor` → the signed closing checkpoint of the last archive segment, owned by the archiver;
//!   absent while nothing is archived. Records and checkpoints with `seq <= anchor.seq` are in
//!   segment files: readers start after the anchor, and the archiver deletes what is left of
//!   them.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::signer::{Signer, SigningKey};
use super::{Checkpoint, EncodeError, Format, GENESIS};
use crate::store::{Entry, Store, StoreError, Tree};

pub(super) const TAIL: &[u8] = b"tail";
pub(super) const ANCHOR: &[u8] = b"anchor";

/// Entries read per store call when walking the trail: bounds the memory of an export or an
/// archive run to one page (about 400 KiB of records) whatever the trail's length.
pub(super) const PAGE: usize = 1000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Tail {
    pub(super) seq: u64,
    pub(super) hash: String,
    pub(super) checkpointed_seq: u64,
    /// The audit key versions the trail signs with, oldest first: the one adopted when the
    /// trail (or this version of the software) began, then one per transition record. Absent
    /// in tails written before rotations were tracked; the newest version is adopted then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) signers: Vec<Trusted>,
}

/// An audit key version the trail signs with from record `since` on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Trusted {
    pub(super) since: u64,
    pub(super) key_id: String,
    pub(super) version: u32,
    pub(super) fingerprint: String,
}

impl Trusted {
    pub(super) fn of(key: &SigningKey, since: u64) -> Self {
        Self {
            since,
            key_id: key.key_id.clone(),
            version: key.version,
            fingerprint: key.fingerprint(),
        }
    }
}

impl Tail {
    /// The version checkpoints over record `seq` are signed with: the last one introduced at or
    /// before it (the first one for records older than every entry).
    pub(super) fn signer_at(&self, seq: u64) -> Option<&Trusted> {
        self.signers
            .iter()
            .rev()
            .find(|t| t.since <= seq)
            .or_else(|| self.signers.first())
    }

    /// The version new checkpoints are signed with.
    pub(super) fn current_signer(&self) -> Option<&Trusted> {
        self.signers.last()
    }

    /// `newest` when it is a later version of the key the trail signs with: the trail must be
    /// handed over to it (a transition record) before it signs anything.
    pub(super) fn handover_to(&self, newest: Option<SigningKey>) -> Option<SigningKey> {
        let current = self.current_signer()?;
        newest.filter(|n| n.key_id == current.key_id && n.version > current.version)
    }

    /// Adopts `newest` when the trail names no version yet (a new trail, or one written before
    /// rotations were tracked): nothing came before that a transition could hand over from.
    pub(super) fn adopt(&mut self, newest: Option<&SigningKey>) {
        if self.signers.is_empty()
            && let Some(key) = newest
        {
            self.signers.push(Trusted::of(key, self.seq));
        }
    }
}

pub(super) fn record_key(seq: u64) -> Vec<u8> {
    [b"r".as_slice(), &seq.to_be_bytes()].concat()
}

pub(super) fn checkpoint_key(seq: u64, time_ms: u64) -> Vec<u8> {
    [b"c".as_slice(), &seq.to_be_bytes(), &time_ms.to_be_bytes()].concat()
}

/// The first key after every record with `seq <= last`.
pub(super) fn record_key_after(last: u64) -> Vec<u8> {
    last.checked_add(1)
        .map_or_else(|| vec![b'r' + 1], record_key)
}

/// The first checkpoint key with a `seq` of at least `seq` (whatever its time).
pub(super) fn checkpoint_key_from(seq: u64) -> Vec<u8> {
    [b"c".as_slice(), &seq.to_be_bytes()].concat()
}

/// The first key after every checkpoint with `seq <= last`.
pub(super) fn checkpoint_key_after(last: u64) -> Vec<u8> {
    last.checked_add(1)
        .map_or_else(|| vec![b'c' + 1], checkpoint_key_from)
}

/// The `seq` of a record or checkpoint key.
pub(super) fn key_seq(key: &[u8]) -> Result<u64, StoreError> {
    key.get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("an audit key is too short to hold a seq".into()))
}

/// The archive anchor and its stored bytes (the precondition of the next archive batch);
/// `None` while nothing is archived.
pub(super) fn read_anchor(store: &dyn Store) -> Result<Option<(Checkpoint, Vec<u8>)>, StoreError> {
    match store.get(Tree::Audit, ANCHOR)? {
        Some(bytes) => {
            let cp = serde_json::from_slice(&bytes)
                .map_err(|_| StoreError::Corrupt("audit archive anchor does not decode".into()))?;
            Ok(Some((cp, bytes)))
        }
        None => Ok(None),
    }
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
                signers: Vec::new(),
            },
            None,
        )),
    }
}

/// The version to sign a checkpoint over record `seq` with: the trail's own record of it, or
/// the newest version when the trail names none yet. `None` when neither can be read.
pub(super) fn signer_for(signer: &Signer, tail: &Tail, seq: u64) -> Option<Trusted> {
    tail.signer_at(seq)
        .cloned()
        .or_else(|| signer.newest().map(|k| Trusted::of(&k, seq)))
}

/// A checkpoint over record `seq` (chain hash `hash`) in `format`, signed now with version
/// `key` of the audit key; `None` while the signer cannot sign (the KMS is sealed). Writers pass
/// [`Format::CURRENT`].
pub(super) fn sign_checkpoint(
    signer: &Signer,
    key: &Trusted,
    format: Format,
    node: &str,
    seq: u64,
    hash: &str,
    closes_export: bool,
) -> Result<Option<Checkpoint>, EncodeError> {
    let mut cp = Checkpoint {
        format,
        seq,
        time_ms: now_ms(),
        node: node.to_owned(),
        last_hash: hash.to_owned(),
        closes_export,
        key_id: key.key_id.clone(),
        key_version: key.version,
        // Format V1 (what tests of old trails write) predates key versions in checkpoints.
        key_fingerprint: (format != Format::V1).then(|| key.fingerprint.clone()),
        signature: String::new(),
    };
    let Some(sig) = signer.sign(key.version, &cp.signed_bytes()?) else {
        return Ok(None);
    };
    cp.signature = hex::encode(sig);
    Ok(Some(cp))
}

/// [`sign_checkpoint`] with the signer's newest version, for tests that make lines by hand.
#[cfg(test)]
pub(super) fn sign_with_newest(
    signer: &Signer,
    format: Format,
    node: &str,
    seq: u64,
    hash: &str,
    closes_export: bool,
) -> Result<Option<Checkpoint>, EncodeError> {
    let Some(newest) = signer.newest() else {
        return Ok(None);
    };
    let key = Trusted::of(&newest, seq);
    sign_checkpoint(signer, &key, format, node, seq, hash, closes_export)
}

/// One stored line of the trail, as [`RangeReader`] yields it.
pub(super) enum Stored {
    /// A record's `seq` and its stored JSON.
    Record(u64, Vec<u8>),
    /// A checkpoint's stored JSON.
    Checkpoint(Vec<u8>),
}

/// Why a [`RangeReader`] stopped early.
pub(super) enum ReadError {
    Store(StoreError),
    /// Record `seq` is not in the store: archived (deleted) since the reader began, or lost.
    Missing(u64),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Walks one key range of [`Tree::Audit`] a page at a time.
struct Pager<'a> {
    store: &'a dyn Store,
    /// The next page starts here: just after the last key already read.
    from: Vec<u8>,
    to: Vec<u8>,
    page: VecDeque<Entry>,
    /// The last page was short: nothing is left in the range.
    exhausted: bool,
}

impl<'a> Pager<'a> {
    fn new(store: &'a dyn Store, from: Vec<u8>, to: Vec<u8>) -> Self {
        Self {
            store,
            from,
            to,
            page: VecDeque::new(),
            exhausted: false,
        }
    }

    fn fill(&mut self) -> Result<(), StoreError> {
        if self.page.is_empty() && !self.exhausted {
            let page = self
                .store
                .scan_range(Tree::Audit, &self.from, &self.to, PAGE)?;
            self.exhausted = page.len() < PAGE;
            if let Some((last, _)) = page.last() {
                // The smallest key greater than `last`.
                self.from = [last.as_slice(), &[0]].concat();
            }
            self.page = page.into();
        }
        Ok(())
    }

    fn peek(&mut self) -> Result<Option<&Entry>, StoreError> {
        self.fill()?;
        Ok(self.page.front())
    }

    fn next(&mut self) -> Result<Option<Entry>, StoreError> {
        self.fill()?;
        Ok(self.page.pop_front())
    }
}

/// Reads records `first..=last` and the checkpoints over them in export order — each record,
/// then the checkpoints with its `seq` — holding one page of each at a time.
///
/// Every record of the range must be there: a missing one ends the walk with
/// [`ReadError::Missing`] (the caller tells "archived meanwhile" from "lost" by the anchor).
pub(super) struct RangeReader<'a> {
    records: Pager<'a>,
    checkpoints: Pager<'a>,
    next_seq: u64,
    /// Records still to come.
    remaining: u64,
    /// The last record yielded: checkpoints up to it are due before the next record.
    yielded: Option<u64>,
    failed: bool,
}

impl<'a> RangeReader<'a> {
    /// Empty when `first > last`.
    pub(super) fn new(store: &'a dyn Store, first: u64, last: u64) -> Self {
        Self {
            records: Pager::new(store, record_key(first), record_key_after(last)),
            checkpoints: Pager::new(
                store,
                checkpoint_key_from(first),
                checkpoint_key_after(last),
            ),
            next_seq: first,
            remaining: if first > last { 0 } else { last - first + 1 },
            yielded: None,
            failed: false,
        }
    }

    fn step(&mut self) -> Result<Option<Stored>, ReadError> {
        if let Some(upto) = self.yielded
            && let Some((key, _)) = self.checkpoints.peek()?
            && key_seq(key)? <= upto
        {
            return Ok(self
                .checkpoints
                .next()?
                .map(|(_, bytes)| Stored::Checkpoint(bytes)));
        }
        if self.remaining == 0 {
            return Ok(None);
        }
        let expected = self.next_seq;
        let Some((key, bytes)) = self.records.next()? else {
            return Err(ReadError::Missing(expected));
        };
        if key_seq(&key)? != expected {
            return Err(ReadError::Missing(expected));
        }
        self.remaining -= 1;
        self.next_seq = expected.saturating_add(1);
        self.yielded = Some(expected);
        Ok(Some(Stored::Record(expected, bytes)))
    }
}

impl Iterator for RangeReader<'_> {
    type Item = Result<Stored, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let step = self.step();
        self.failed = step.is_err();
        step.transpose()
    }
}
