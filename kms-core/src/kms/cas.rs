//! Compare-and-swap writes: the one retry loop behind every read-modify-write of the store.
//!
//! Several nodes may share a store, so a write that depends on what was read carries that read
//! as a precondition; the store checks it under its lock and refuses with a conflict if another
//! writer got there first. [`Kms::cas_update`] re-reads and retries such writes a bounded number
//! of times; [`Kms::update`] is its use for one key record.

use super::Kms;
use crate::authz::{GrantOp, Principal};
use crate::error::Error;
use crate::keys::KeyRef;
use crate::keys::record::KeyRecord;
use crate::store::{Batch, StoreError};

/// How many times a read-modify-write is retried when another writer got there first.
const CAS_RETRIES: usize = 8;

/// What one attempt of a compare-and-swap decided after reading.
pub(super) enum Cas<T> {
    /// Apply the batch (its preconditions name what was read); `T` is the result if it lands.
    Write(Batch, T),
    /// Nothing to write (e.g. another writer already did the work): finish with `T`.
    Done(T),
}

/// Adds to `batch` the write of `record` with its revision bumped, on condition that the stored
/// bytes are still `old`.
pub(super) fn put_record(
    batch: &mut Batch,
    record: &mut KeyRecord,
    old: Vec<u8>,
) -> Result<(), Error> {
    record.revision += 1;
    batch.require(record.tree(), record.id.as_bytes().as_slice(), Some(old));
    batch.put(
        record.tree(),
        record.id.as_bytes().as_slice(),
        record.encode()?,
    );
    Ok(())
}

impl Kms {
    /// Runs `attempt` (read, decide, build a batch with preconditions) and applies its batch,
    /// again from a fresh read each time the store reports a conflict. `Ok(None)` means still
    /// contended after every retry; each caller decides what that means for it (an error to
    /// the client, or "the next scheduler round looks again"). Errors from `attempt` and
    /// store errors other than a conflict end the loop at once.
    pub(super) fn cas_update<T>(
        &self,
        mut attempt: impl FnMut() -> Result<Cas<T>, Error>,
    ) -> Result<Option<T>, Error> {
        for _ in 0..CAS_RETRIES {
            let (batch, out) = match attempt()? {
                Cas::Write(batch, out) => (batch, out),
                Cas::Done(out) => return Ok(Some(out)),
            };
            match self.store.apply(&batch) {
                Ok(()) => return Ok(Some(out)),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Read-modify-write of a key record that `principal` may reach for `op`: `change` edits
    /// the record and may add writes of its own (with their preconditions) to the batch.
    pub(super) fn update<T>(
        &self,
        principal: &Principal,
        key: &KeyRef,
        op: GrantOp,
        mut change: impl FnMut(&mut KeyRecord, &mut Batch) -> Result<T, Error>,
    ) -> Result<(KeyRecord, T), Error> {
        self.cas_update(|| {
            let (mut record, old) = self.reach(principal, key, op)?;
            let mut batch = Batch::new();
            let out = change(&mut record, &mut batch)?;
            put_record(&mut batch, &mut record, old)?;
            Ok(Cas::Write(batch, (record, out)))
        })?
        .ok_or_else(|| {
            Error::FailedPrecondition("the key is being changed concurrently; retry".into())
        })
    }
}
