//! Where the trail is kept: the seam between what the trail means (the writer, the export, the
//! archiver, the inventory's last-use search) and how its lines are stored.
//!
//! Two implementations:
//!
//! - [`TreeTrail`]: the store's [`Tree::Audit`], keyed as `layout.rs` describes. Every backend
//!   can hold it; the PostgreSQL backend does, so that several nodes on one database extend one
//!   chain (its batches are conditional on the `tail` key).
//! - [`super::live::LiveLog`]: append-only segment files in the export format beside an
//!   embedded store, written with one `write` and one `fdatasync` per group. The sled backend
//!   keeps its trail there ([`Store::audit_files`]): a record costs about its own size on disk
//!   instead of sled's page rewrites.
//!
//! [`trail_of`] picks the one a store uses. Both keep one contract: an append is all its lines or
//! (after a crash) a prefix of them, never a part of a line; it is durable when `append`
//! returns `Ok`; it happens only on the tail the writer read ([`StoreError::Conflict`]
//! otherwise); reads return acknowledged lines only, in chain order.

use std::sync::Arc;

use super::layout::{
    ANCHOR, RangeReader, ReadError, Stored, TAIL, Tail, checkpoint_key, checkpoint_key_after,
    read_anchor, read_tail, record_key, record_key_after,
};
use super::{Checkpoint, Record};
use crate::store::{Batch, Entry, Store, StoreError, Tree};

/// What the writer read as the tail, to make its append conditional on it: the stored tail's
/// bytes for [`TreeTrail`], a generation for the live log. `None`: no tail yet.
pub(super) type Token = Option<Vec<u8>>;

/// One line to append, already encoded ([`Record::to_json`], or the checkpoint's JSON).
pub(super) enum Appended {
    Record {
        seq: u64,
        json: Vec<u8>,
    },
    Checkpoint {
        seq: u64,
        time_ms: u64,
        json: Vec<u8>,
    },
}

/// The lines a reader walks, one at a time.
pub(super) type Lines<'a> = Box<dyn Iterator<Item = Result<Stored, ReadError>> + 'a>;

/// The storage of one trail. See the module documentation for the contract.
pub(super) trait Trail: Send + Sync {
    /// The tail, and the token [`Trail::append`] compares.
    fn tail(&self) -> Result<(Tail, Token), StoreError>;

    /// Appends `lines` in order and makes `tail` the new tail, if the tail is still the one
    /// `expected` names (else [`StoreError::Conflict`], nothing written). Durable when `Ok`.
    fn append(&self, expected: Token, lines: &[Appended], tail: &Tail) -> Result<(), StoreError>;

    /// The archive anchor and its bytes (compared by [`Trail::move_anchor`]).
    fn anchor(&self) -> Result<Option<(Checkpoint, Vec<u8>)>, StoreError>;

    /// Makes `closing` the anchor if the anchor is still `expected` (else
    /// [`StoreError::Conflict`]). Durable when `Ok`.
    fn move_anchor(
        &self,
        expected: Option<Vec<u8>>,
        closing: &Checkpoint,
    ) -> Result<(), StoreError>;

    /// Record `seq`'s JSON, if the trail holds it.
    fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Records `first..=last` and the checkpoints over them, in export order (each record, then
    /// the checkpoints with its `seq`); a record that is not there ends the walk with
    /// [`ReadError::Missing`]. Empty when `first > last`.
    fn read(&self, first: u64, last: u64) -> Result<Lines<'_>, StoreError>;

    /// Forgets the records and checkpoints up to `archived` (the anchor's `seq`): they are in
    /// segment files. Readers never ask for them again.
    fn sweep(&self, archived: u64) -> Result<(), StoreError>;

    /// The whole trail as [`Tree::Audit`] entries (`layout.rs`), in key order: what a backup
    /// carries and what a copy to another backend writes.
    fn entries(&self) -> Result<Vec<Entry>, StoreError>;

    /// How many records the trail still holds (archived ones not swept yet included).
    fn held(&self) -> Result<u64, StoreError>;
}

/// The trail `store` keeps: its live log when it has one, else its [`Tree::Audit`].
pub(super) fn trail_of(store: &Arc<dyn Store>) -> Arc<dyn Trail> {
    match store.audit_files() {
        Some(files) => files,
        None => Arc::new(TreeTrail {
            store: Arc::clone(store),
        }),
    }
}

/// The trail in the store's [`Tree::Audit`] (see `layout.rs` for the keys).
pub(super) struct TreeTrail {
    store: Arc<dyn Store>,
}

impl Trail for TreeTrail {
    fn tail(&self) -> Result<(Tail, Token), StoreError> {
        read_tail(&*self.store)
    }

    fn append(&self, expected: Token, lines: &[Appended], tail: &Tail) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        for line in lines {
            match line {
                Appended::Record { seq, json } => {
                    batch.put(Tree::Audit, record_key(*seq), json.clone());
                }
                Appended::Checkpoint { seq, time_ms, json } => {
                    batch.put(Tree::Audit, checkpoint_key(*seq, *time_ms), json.clone());
                }
            }
        }
        batch.require(Tree::Audit, TAIL, expected);
        batch.put(
            Tree::Audit,
            TAIL,
            serde_json::to_vec(tail).map_err(|_| StoreError::Corrupt("audit tail".into()))?,
        );
        self.store.apply(&batch)
    }

    fn anchor(&self) -> Result<Option<(Checkpoint, Vec<u8>)>, StoreError> {
        read_anchor(&*self.store)
    }

    fn move_anchor(
        &self,
        expected: Option<Vec<u8>>,
        closing: &Checkpoint,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.require(Tree::Audit, ANCHOR, expected);
        batch.put(
            Tree::Audit,
            ANCHOR,
            serde_json::to_vec(closing)
                .map_err(|_| StoreError::Corrupt("audit archive anchor".into()))?,
        );
        self.store.apply(&batch)
    }

    fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(Tree::Audit, &record_key(seq))
    }

    fn read(&self, first: u64, last: u64) -> Result<Lines<'_>, StoreError> {
        Ok(Box::new(RangeReader::new(&*self.store, first, last)))
    }

    /// In batches of [`super::archive::SWEEP_BATCH`] keys: PostgreSQL takes one advisory lock
    /// per key a batch writes, from a table every session shares.
    fn sweep(&self, archived: u64) -> Result<(), StoreError> {
        let batch_keys = super::archive::SWEEP_BATCH;
        for (from, to) in [
            (b"r".to_vec(), record_key_after(archived)),
            (b"c".to_vec(), checkpoint_key_after(archived)),
        ] {
            loop {
                let page = self.store.scan_range(Tree::Audit, &from, &to, batch_keys)?;
                if page.is_empty() {
                    break;
                }
                let mut batch = Batch::new();
                for (key, _) in &page {
                    batch.delete(Tree::Audit, key.clone());
                }
                self.store.apply(&batch)?;
                if page.len() < batch_keys {
                    break;
                }
            }
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        self.store.scan_prefix(Tree::Audit, b"")
    }

    fn held(&self) -> Result<u64, StoreError> {
        let mut held = 0u64;
        let mut from = b"r".to_vec();
        loop {
            let page = self
                .store
                .scan_range(Tree::Audit, &from, b"s", super::layout::PAGE)?;
            held += page.len() as u64;
            match page.last() {
                Some((k, _)) if page.len() == super::layout::PAGE => {
                    from = [k.as_slice(), &[0]].concat();
                }
                Some(_) | None => return Ok(held),
            }
        }
    }
}

/// The whole trail of `store` as [`Tree::Audit`] entries, in key order, wherever it is kept:
/// what a backup of the store carries and what a copy to another backend writes.
///
/// # Errors
/// Store or file errors.
pub(crate) fn audit_entries(store: &Arc<dyn Store>) -> Result<Vec<Entry>, StoreError> {
    trail_of(store).entries()
}

/// Replaces the trail of a store that keeps it in a live log with `entries` ([`Tree::Audit`]
/// entries, as [`audit_entries`] gives them), and returns `None`; returns the entries untouched
/// when the store keeps its trail in its tree (the caller writes them with its own batch).
///
/// # Errors
/// The entries are not a trail, or file errors; the live log is unchanged then.
pub(crate) fn restore_entries(
    store: &Arc<dyn Store>,
    entries: Vec<Entry>,
) -> Result<Option<Vec<Entry>>, StoreError> {
    match store.audit_files() {
        Some(files) => files.replace_with(&entries).map(|()| None),
        None => Ok(Some(entries)),
    }
}

/// Calls `each` with every record the trail of `store` holds after its archive anchor, in
/// order, one at a time (bounded memory, however long the trail). A record that does not decode
/// is skipped: the verifier, not this search, is where a damaged trail is reported.
///
/// # Errors
/// Store or file errors.
pub(crate) fn for_each_hot_record(
    store: &Arc<dyn Store>,
    each: &mut dyn FnMut(Record),
) -> Result<(), StoreError> {
    let trail = trail_of(store);
    let first = trail.anchor()?.map_or(0, |(cp, _)| cp.seq) + 1;
    let (tail, _) = trail.tail()?;
    for stored in trail.read(first, tail.seq)? {
        match stored {
            Ok(Stored::Record(_, bytes)) => {
                if let Ok(record) = serde_json::from_slice(&bytes) {
                    each(record);
                }
            }
            Ok(Stored::Checkpoint(_)) => {}
            // Archived since the anchor was read: records older than the hot trail are not
            // searched anyway.
            Err(ReadError::Missing(_)) => return Ok(()),
            Err(ReadError::Store(e)) => return Err(e),
        }
    }
    Ok(())
}

/// How many records the trail of `store` still holds: in its tree, or in its live log's files
/// (archived ones that are not swept yet included).
///
/// # Errors
/// Store or file errors.
pub fn held_records(store: &Arc<dyn Store>) -> Result<u64, StoreError> {
    trail_of(store).held()
}

/// A record or checkpoint as one line of an export or a segment file, `\n` included: the stored
/// JSON with the `type` tag first, exactly as serde writes a [`Line`] (a test checks).
pub(super) fn line_bytes(tag: LineTag, json: &[u8]) -> Result<Vec<u8>, StoreError> {
    let body = json
        .strip_prefix(b"{")
        .ok_or_else(|| StoreError::Corrupt("an audit line is not a JSON object".into()))?;
    let prefix = tag.prefix();
    let mut line = Vec::with_capacity(prefix.len() + body.len() + 1);
    line.extend_from_slice(prefix);
    line.extend_from_slice(body);
    line.push(b'\n');
    Ok(line)
}

/// The type of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LineTag {
    Record,
    Checkpoint,
}

impl LineTag {
    pub(super) const fn prefix(self) -> &'static [u8] {
        match self {
            Self::Record => b"{\"type\":\"record\",",
            Self::Checkpoint => b"{\"type\":\"checkpoint\",",
        }
    }

    /// The type of `line` (no line ending) and its stored JSON (the line without its tag), or
    /// `None` when it does not start with a tag this code writes.
    pub(super) fn split(line: &[u8]) -> Option<(Self, Vec<u8>)> {
        [Self::Record, Self::Checkpoint]
            .into_iter()
            .find_map(|tag| {
                line.strip_prefix(tag.prefix())
                    .map(|body| (tag, [b"{".as_slice(), body].concat()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Format, GENESIS, Line, Operation, Outcome, Role};

    fn record() -> Record {
        Record {
            seq: 3,
            time_ms: 1,
            node: "n1".into(),
            request_id: "r3".into(),
            principal: "app".into(),
            role: Role::App,
            operation: Operation::Encrypt,
            key_id: Some("k".into()),
            key_version: Some(2),
            outcome: Outcome::Ok,
            context_hmac: None,
            flags: Vec::new(),
            transport: None,
            traceparent: None,
            transfer: None,
            batch_id: Some("b".into()),
            pepper: None,
            count: None,
            transition: None,
            prev: GENESIS.into(),
            format: Format::CURRENT,
        }
    }

    /// The live log writes lines by putting the tag in front of the stored JSON; that must be
    /// byte for byte what an export writes for the same line, or its files would not verify.
    #[test]
    fn a_tagged_line_is_what_serde_writes_and_splits_back() {
        let r = record();
        let json = r.to_json().unwrap();
        let mut expected = serde_json::to_vec(&Line::Record(r)).unwrap();
        expected.push(b'\n');
        let line = line_bytes(LineTag::Record, &json).unwrap();
        assert_eq!(line, expected);
        let (tag, back) = LineTag::split(&line[..line.len() - 1]).unwrap();
        assert_eq!((tag, back), (LineTag::Record, json));

        let (signer, _) = crate::audit::writer::ephemeral_signer("k").unwrap();
        let cp = crate::audit::layout::sign_with_newest(
            &signer,
            Format::CURRENT,
            "n1",
            3,
            GENESIS,
            false,
        )
        .unwrap()
        .unwrap();
        let json = serde_json::to_vec(&cp).unwrap();
        let mut expected = serde_json::to_vec(&Line::Checkpoint(cp)).unwrap();
        expected.push(b'\n');
        assert_eq!(line_bytes(LineTag::Checkpoint, &json).unwrap(), expected);
        assert!(LineTag::split(b"{\"type\":\"other\",\"seq\":1}").is_none());
    }
}
