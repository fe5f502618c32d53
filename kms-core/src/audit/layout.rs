//! How the audit trail sits in the store: record and checkpoint keys, the tail, the archive
//! anchor, and the signed checkpoint. Shared by the writer (appends), the export (reads) and the
//! archiver (moves the oldest records to segment files).
//!
//! Keys in [`Tree::Audit`]:
//!
//! - `r ‖ seq` (u64 BE) → the record's JSON ([`super::Record::to_json`]; the chain hashes
//!   it as [`super::Record::canonical`] frames it for the record's format);
//! - `c ‖ seq ‖ time_ms` (u64 BE each) → a signed checkpoint over the chain up to `seq`;
//! - `tail` → [`Tail`], owned by the writer (its batches are conditional on it);
//! - `anchor` → the signed closing checkpoint of the last archive segment, owned by the archiver;
//!   absent while nothing is archived. Records and checkpoints with `seq <= anchor.seq` are in
//!   segment files: readers start after the anchor, and the archiver deletes what is left of
//!   them.

use std::cell::Cell;
use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::writer::Signer;
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
            },
            None,
        )),
    }
}

/// A checkpoint over record `seq` (chain hash `hash`) in `format`, signed now; `None` while the
/// signer cannot sign (the KMS is sealed). Writers pass [`Format::CURRENT`].
///
/// The [`Signer`] asks for the bytes to sign by a function that cannot fail, so an encoding
/// error inside it is kept aside and returned after the signer is done: the signature over the
/// empty stand-in is then thrown away, never used.
pub(super) fn sign_checkpoint(
    signer: &Signer,
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
        key_id: String::new(),
        key_version: 0,
        signature: String::new(),
    };
    let template = cp.clone();
    let failed = Cell::new(None);
    let signed = signer(&|key_id: &str, version: u32| {
        let bytes = Checkpoint {
            key_id: key_id.to_owned(),
            key_version: version,
            ..template.clone()
        }
        .signed_bytes();
        bytes.unwrap_or_else(|e| {
            failed.set(Some(e));
            Vec::new()
        })
    });
    if let Some(e) = failed.take() {
        return Err(e);
    }
    let Some((key_id, version, sig)) = signed else {
        return Ok(None);
    };
    cp.key_id = key_id;
    cp.key_version = version;
    cp.signature = hex::encode(sig);
    Ok(Some(cp))
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
