//! What the scheduler runs on every node: due rotations and due destructions (KEY-7, KEY-8).
//! Each due change happens once however many nodes run the sweep, because every write is a
//! compare-and-swap against the record as re-read (see [`Kms::cas_update`]).

use super::Kms;
use super::cas::{Cas, put_record};
use crate::error::Error;
use crate::keys::KeyId;
use crate::keys::record::KeyRecord;
use crate::keys::state::KeyState;
use crate::store::{Batch, StoreError};

/// Which sweep a [`SweepLog`] hears about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    Rotation,
    Destruction,
    /// Imported material deleted at its expiry (`import_export.rs`).
    ImportExpiry,
}

/// How a sweep's change to one key ended.
#[derive(Debug)]
pub enum SweepOutcome<'a> {
    /// Rotated to this version, or destroyed (`None`).
    Done(Option<u32>),
    /// Not done by this node: no longer due when re-read (another node did it, or it was
    /// cancelled), or still contended.
    NotDue,
    /// The change failed.
    Failed(&'a Error),
}

/// The audit trail as the sweeps see it (issue 18: audit before effect). `intent` runs before
/// each key's change and may veto it (the trail could not take the intent: the key is skipped
/// and stays due); `outcome` runs after every attempt that `intent` allowed.
pub trait SweepLog {
    fn intent(&self, sweep: Sweep, key: KeyId) -> bool;
    fn outcome(&self, sweep: Sweep, key: KeyId, outcome: SweepOutcome<'_>);
}

/// No trail: for tests and tools that run sweeps outside a server.
pub(super) struct Unlogged;

impl SweepLog for Unlogged {
    fn intent(&self, _: Sweep, _: KeyId) -> bool {
        true
    }
    fn outcome(&self, _: Sweep, _: KeyId, _: SweepOutcome<'_>) {}
}

/// Pending destruction whose waiting period has ended.
fn destruction_due(r: &KeyRecord, now: u64) -> bool {
    r.state == KeyState::PendingDestruction && r.destroy_at.is_some_and(|t| t <= now)
}

impl Kms {
    /// Keys whose rotation is due now.
    pub(super) fn due_for_rotation(&self) -> Result<Vec<KeyId>, Error> {
        let now = self.now();
        Ok(self
            .all_records()?
            .into_iter()
            .filter(|r| r.overdue(now))
            .map(|r| r.id)
            .collect())
    }

    /// Rotates every key that is due; runs on every node (the scheduler), and each due rotation
    /// still happens exactly once (see [`Kms::rotate_if_due`]). A key that cannot be rotated
    /// now (disabled meanwhile, refused by policy) is skipped; a store failure stops the round
    /// and is returned, and the next round retries whatever is still due.
    pub(super) fn rotate_due(&self, log: &dyn SweepLog) -> Result<Vec<(KeyId, u32)>, Error> {
        let vault = self.unsealed()?;
        let mut done = Vec::new();
        for id in self.due_for_rotation()? {
            if !log.intent(Sweep::Rotation, id) {
                continue;
            }
            let result = self.rotate_if_due(&vault, id);
            log.outcome(
                Sweep::Rotation,
                id,
                match &result {
                    Ok(Some(v)) => SweepOutcome::Done(Some(*v)),
                    Ok(None) => SweepOutcome::NotDue,
                    Err(e) => SweepOutcome::Failed(e),
                },
            );
            match result {
                Ok(Some(version)) => done.push((id, version)),
                Ok(None) => {}
                Err(Error::Store(e @ (StoreError::Unavailable(_) | StoreError::Io(_)))) => {
                    return Err(Error::Store(e));
                }
                Err(_) => {}
            }
        }
        Ok(done)
    }

    /// One key's scheduled rotation, at most once per due date whatever the number of nodes: the
    /// record is re-read and the due check repeated on every attempt, and the new version is
    /// written with the record as read as a precondition, which the store checks under its lock
    /// (a database lock on PostgreSQL). Of several nodes racing, one commits; the others' writes
    /// fail the precondition, and on re-reading they find the key no longer due and write
    /// nothing. A rotation whose outcome is unknown (store error after the write was sent) is
    /// not retried here: the next round re-reads and sees whether it landed.
    fn rotate_if_due(&self, vault: &super::Unsealed, id: KeyId) -> Result<Option<u32>, Error> {
        let rotated = self.cas_update(|| {
            let (mut record, old) = self.load(id)?;
            if !record.overdue(self.now()) {
                return Ok(Cas::Done(None));
            }
            let version = self.add_version(&mut record, vault)?;
            let mut batch = Batch::new();
            put_record(&mut batch, &mut record, old)?;
            Ok(Cas::Write(batch, Some(version)))
        })?;
        // `None` from `cas_update`: still contended after every retry, another node keeps
        // changing the key; the next round looks again.
        Ok(rotated.flatten())
    }

    /// Destroys every key whose waiting period has ended: the wrapped material of every version
    /// is deleted from the store; metadata stays for auditors (KEY-8). Runs on every node; each
    /// destruction happens once, by the same re-read-and-swap as [`Kms::rotate_if_due`].
    ///
    /// Each node also drops from its own cache the material of keys that *another* node
    /// destroyed recently (the cache outlives a destruction elsewhere by at most one scheduler
    /// interval, never its lifetime): such material is unusable anyway, since every use reads
    /// the key's state from the store first, but it should not stay in memory (KEY-3).
    pub(super) fn destroy_due(&self, log: &dyn SweepLog) -> Result<Vec<KeyId>, Error> {
        let now = self.now();
        let records = self.all_records()?;
        let cached_for = self.config.cache_ttl.as_secs().saturating_add(1);
        for r in &records {
            if r.state == KeyState::Destroyed
                && r.destroyed_at
                    .is_some_and(|t| t.saturating_add(cached_for) >= now)
            {
                self.cache.forget(r.id);
            }
        }
        let due: Vec<KeyId> = records
            .into_iter()
            .filter(|r| destruction_due(r, now))
            .map(|r| r.id)
            .collect();
        self.sweep_each(log, Sweep::Destruction, due, |id| self.destroy_if_due(id))
    }

    /// One round of a sweep whose change to a key leaves no version behind (destruction, the
    /// expiry of imported material): for each key, the intent, the change (re-checked, at most
    /// once across nodes), the outcome, and the key's material dropped from this node's cache
    /// when done. A key whose change fails otherwise is skipped; a store failure stops the
    /// round and is returned, and the next round retries what is still due.
    pub(super) fn sweep_each(
        &self,
        log: &dyn SweepLog,
        sweep: Sweep,
        due: Vec<KeyId>,
        change: impl Fn(KeyId) -> Result<bool, Error>,
    ) -> Result<Vec<KeyId>, Error> {
        let mut done = Vec::new();
        for id in due {
            if !log.intent(sweep, id) {
                continue;
            }
            let result = change(id);
            log.outcome(
                sweep,
                id,
                match &result {
                    Ok(true) => SweepOutcome::Done(None),
                    Ok(false) => SweepOutcome::NotDue,
                    Err(e) => SweepOutcome::Failed(e),
                },
            );
            match result {
                Ok(true) => {
                    self.cache.forget(id);
                    done.push(id);
                }
                Ok(false) => {}
                Err(Error::Store(e @ (StoreError::Unavailable(_) | StoreError::Io(_)))) => {
                    return Err(Error::Store(e));
                }
                Err(_) => {}
            }
        }
        Ok(done)
    }

    /// Destroys one key if it is still due, as re-read on every attempt; false when it is not
    /// (another node destroyed it, or its destruction was cancelled) or still contended.
    fn destroy_if_due(&self, id: KeyId) -> Result<bool, Error> {
        let destroyed = self.cas_update(|| {
            let (mut record, old) = self.load(id)?;
            let now = self.now();
            if !destruction_due(&record, now) {
                return Ok(Cas::Done(false));
            }
            for v in &mut record.versions {
                v.wrapped = None;
            }
            record.state = KeyState::Destroyed;
            record.destroyed_at = Some(now);
            let mut batch = Batch::new();
            put_record(&mut batch, &mut record, old)?;
            Ok(Cas::Write(batch, true))
        })?;
        Ok(destroyed.unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::alg::{KeySpec, Purpose};
    use crate::authz::authorize;
    use crate::clock::{Clock, DAY, ManualClock};
    use crate::keys::{KeyRef, Namespace};
    use crate::kms::{CreateKeyRequest, KmsConfig};
    use crate::store::{MemoryStore, Store};

    /// Two nodes on one store: B's reaper destroys a key whose material A has cached; A's own
    /// reaper, finding nothing left to destroy, still drops that material from its cache.
    #[test]
    fn a_node_forgets_material_that_another_node_destroyed() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let node = || {
            Kms::with_clock(
                Arc::clone(&store),
                KmsConfig::default(),
                Arc::clone(&clock) as Arc<dyn Clock>,
            )
        };
        let (a, b) = (node(), node());
        let init = a.init(1, 1, "admin").expect("init");
        a.unseal_with(&init.shares[0]).expect("unseal a");
        b.unseal_with(&init.shares[0]).expect("unseal b");
        let admin = a.principal("admin").expect("read").expect("admin");
        let key = a
            .create_key(
                &authorize(&admin).expect("admin"),
                CreateKeyRequest {
                    namespace: Namespace::new("app").expect("ns"),
                    purpose: Purpose::Encrypt,
                    spec: KeySpec::Sm4Gcm,
                    alias: None,
                    rotation_period: None,
                    description: String::new(),
                },
            )
            .expect("create");
        let (record, _) = a.load(key.id).expect("load");
        a.material(&a.unsealed().expect("vault"), &record, 1)
            .expect("use");
        assert!(a.cache.get(key.id, 1).is_some(), "A caches the version");

        b.schedule_destruction(
            &authorize(&admin).expect("admin"),
            &KeyRef::Id(key.id),
            Some(7),
        )
        .expect("schedule");
        clock.advance(8 * DAY);
        assert_eq!(b.destroy_due(&Unlogged).expect("reap on B"), vec![key.id]);
        assert!(a.cache.get(key.id, 1).is_some(), "A's cache is its own");
        assert!(
            a.destroy_due(&Unlogged).expect("reap on A").is_empty(),
            "destroyed once"
        );
        assert!(a.cache.get(key.id, 1).is_none(), "A dropped the material");
    }
}
