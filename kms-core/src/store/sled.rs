//! Embedded default backend on sled 0.34.
//!
//! sled serialises all multi-tree transactions behind one process-wide lock, so preconditions read
//! inside the transaction cannot be invalidated before commit; sled's file lock keeps a second
//! process (or a second open in this one) out of the same directory.
//!
//! The audit trail is not in sled: it lives in append-only segment files under `audit/`
//! ([`LiveLog`], returned by [`Store::audit_files`]), and a store written before that has its
//! trail moved there when it is first opened. Keys and metadata stay in sled.
//!
//! Batches are made durable by the store's own [`Journal`] in the same directory rather than by a
//! sled flush per batch (see `journal.rs` for why). One mutex orders the sled transaction and
//! the journal append together, so the journal holds batches in the order sled applied them, and
//! replaying it after a crash on top of whatever sled had persisted yields the state that was
//! acknowledged.
//!
//! The replay guard's nonces ([`Store::record_nonce`]) live in two sled trees of their own,
//! `replay_nonces` (scope → expiry) and `replay_nonce_expiry` (expiry ‖ scope, for the sweep),
//! outside [`Tree`], so they are never backed up, copied or migrated. They are written through
//! sled alone, not the journal, and [`Store::record_nonce`] flushes sled before it answers
//! `New`, so a nonce told fresh survives a crash (see `crate::replay` for what that costs).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ::sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use ::sled::{Config, Db, Transactional};

use super::journal::Journal;
use super::nonces::{SWEEP_EVERY, check_scope};
use super::{Batch, BatchOp, Entry, NonceOutcome, Store, StoreError, Tree};
use crate::audit::live::{LiveLog, Recovered};

/// The journal's file name inside the store's directory (sled ignores files it does not own).
const JOURNAL_FILE: &str = "kms-journal";
/// The live audit log's directory inside the store's directory.
pub const AUDIT_DIR: &str = "audit";
/// When the journal passes this size, sled is flushed and the journal emptied: about 16,000 audit
/// records, one sled flush for all of them, and a bounded replay after a crash.
const JOURNAL_LIMIT: u64 = 8 * 1024 * 1024;

/// How long [`SledStore::open`] waits for a just-dropped handle to release the directory lock;
/// observed releases take milliseconds, so this only bounds the wait when the lock is truly taken.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// The replay guard's sled trees (names persisted: never change them).
const NONCES_TREE: &str = "replay_nonces";
const NONCE_EXPIRY_TREE: &str = "replay_nonce_expiry";

/// sled 0.34 reports a held lock only as an `Other` I/O error with this fixed text (the OS error is
/// flattened into the message), so the text is the only signal; the crate version is pinned.
fn is_lock_busy(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::Other && err.to_string().contains("could not acquire lock")
}

/// One `sled::Db` with one `sled::Tree` per [`Tree`], opened once and kept: opening a tree takes
/// a lock and a lookup, which every request would otherwise pay.
pub struct SledStore {
    db: Db,
    /// Indexed by [`Tree::index`].
    trees: Vec<::sled::Tree>,
    path: PathBuf,
    journal: Mutex<Journal>,
    /// The audit trail: append-only segment files, not sled's audit tree (see
    /// `crate::audit::live` for why).
    live: Arc<LiveLog>,
    /// Replay nonces: scope → expiry (8 bytes big-endian).
    nonces: ::sled::Tree,
    /// The same entries keyed expiry ‖ scope, so that a sweep reads only what expired.
    nonce_expiry: ::sled::Tree,
    /// Held for the whole of a nonce call: the live count stays exact, and a check-then-insert
    /// of one scope cannot interleave with another's.
    nonce_state: Mutex<NonceState>,
}

/// The sled store's count of live nonce entries and its sweep schedule.
struct NonceState {
    /// Entries in `nonces` (expired ones included until swept).
    entries: u64,
    /// No sweep before this time unless the store is at its bound.
    next_sweep: u64,
}

/// sled's page cache. Its default is 1 GiB, and the audit trail (one record per request) fills
/// it: a 25-minute benchmark grew the server's RSS from 74 MiB to 1.28 GiB, all of it locked in
/// RAM by mlockall. Keys and metadata are a few MiB even for large deployments; the audit records
/// are written once and read only by exports, so a small cache costs nothing on the request path.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl SledStore {
    /// Opens (creating if needed) the database in directory `path` and every tree in [`Tree::ALL`].
    ///
    /// sled releases its directory lock only once the background work of a dropped handle has
    /// finished (its own test suite blocks on the lock for this reason), so a reopen in the same
    /// process, as in restart and durability tests, can briefly find the lock held: `open` waits up
    /// to two seconds for it. A lock held by another live handle still fails, after that wait.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match Self::open_once(path) {
                Err(StoreError::Io(e)) if is_lock_busy(&e) && Instant::now() < deadline => {
                    thread::sleep(LOCK_RETRY);
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Self, StoreError> {
        let db = Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(map_err)?;
        let trees = Tree::ALL
            .iter()
            .map(|tree| db.open_tree(tree.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err)?;
        let nonces = db.open_tree(NONCES_TREE).map_err(map_err)?;
        let nonce_expiry = db.open_tree(NONCE_EXPIRY_TREE).map_err(map_err)?;
        let (journal, recovered) = Journal::open(&path.join(JOURNAL_FILE))?;
        let live = Arc::new(LiveLog::open(&path.join(AUDIT_DIR))?);
        // Counting walks the tree once per open; it is bounded by the configured cap.
        let entries = nonces.len() as u64;
        let store = Self {
            db,
            trees,
            path: path.to_path_buf(),
            journal: Mutex::new(journal),
            live,
            nonces,
            nonce_expiry,
            nonce_state: Mutex::new(NonceState {
                entries,
                next_sweep: 0,
            }),
        };
        // Batches acknowledged before a crash, some perhaps already in sled: writing them again
        // in order is harmless (their preconditions held when they were first applied).
        for batch in &recovered {
            store.transact(batch, false)?;
        }
        // A store from before the live log: its trail moves out of the audit tree, once.
        store.live.take_over_tree_trail(&store)?;
        store.flush()?;
        Ok(store)
    }

    fn lock_journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `batch` as one sled transaction, checking its preconditions when `check`; durable
    /// only once sled is flushed.
    fn transact(&self, batch: &Batch, check: bool) -> Result<(), StoreError> {
        let touched = batch.trees();
        if touched.is_empty() {
            // sled cannot run a transaction over zero trees, and there is nothing to write.
            return Ok(());
        }
        let handles: Vec<&::sled::Tree> = touched.iter().map(|&t| self.tree(t)).collect();
        // Transaction views come in `touched` order; map each tree to its view's position.
        let mut slot = [0_usize; Tree::ALL.len()];
        for (position, tree) in touched.iter().enumerate() {
            slot[tree.index()] = position;
        }
        let preconditions = if check { batch.preconditions() } else { &[] };
        let outcome = Transactional::<Tree>::transaction(
            handles.as_slice(),
            |views: &Vec<TransactionalTree>| {
                let view = |tree: Tree| &views[slot[tree.index()]];
                // All checks before any write, so preconditions see the pre-batch state.
                for pre in preconditions {
                    let current = view(pre.tree).get(&pre.key)?;
                    if !pre.holds(current.as_deref()) {
                        return Err(ConflictableTransactionError::Abort(pre.tree));
                    }
                }
                for op in batch.ops() {
                    match op {
                        BatchOp::Put { tree, key, value } => {
                            view(*tree).insert(key.as_slice(), value.as_slice())?;
                        }
                        BatchOp::Delete { tree, key } => {
                            view(*tree).remove(key.as_slice())?;
                        }
                    }
                }
                Ok(())
            },
        );
        match outcome {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(tree)) => Err(StoreError::Conflict { tree }),
            Err(TransactionError::Storage(e)) => Err(map_err(e)),
        }
    }

    fn tree(&self, tree: Tree) -> &::sled::Tree {
        &self.trees[tree.index()]
    }

    fn lock_nonces(&self) -> MutexGuard<'_, NonceState> {
        self.nonce_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes every nonce entry whose expiry is at or before `now`. The scope entry goes before
    /// its index entry, so an interrupted sweep leaves at worst an index entry without its
    /// scope, which the next sweep removes; never a scope no sweep would find.
    fn sweep_nonces(&self, state: &mut NonceState, now: u64) -> Result<(), StoreError> {
        let bound = now.saturating_add(1).to_be_bytes();
        let mut scopes = ::sled::Batch::default();
        let mut index = ::sled::Batch::default();
        let mut removed = 0_u64;
        for entry in self.nonce_expiry.range(..bound.as_slice()) {
            let (key, _) = entry.map_err(map_err)?;
            if key.len() < 8 {
                index.remove(key);
                continue;
            }
            let (expiry, scope) = key.split_at(8);
            // The scope may have been recorded again since (an expired entry reused): only
            // an entry still holding this expiry goes.
            if self.nonces.get(scope).map_err(map_err)?.as_deref() == Some(expiry) {
                scopes.remove(scope);
                removed += 1;
            }
            index.remove(key);
        }
        self.nonces.apply_batch(scopes).map_err(map_err)?;
        self.nonce_expiry.apply_batch(index).map_err(map_err)?;
        state.entries = state.entries.saturating_sub(removed);
        state.next_sweep = now.saturating_add(SWEEP_EVERY);
        Ok(())
    }

    /// What opening the live audit log cut from an append a crash left unfinished, if anything
    /// (worth a warning: the records were never acknowledged).
    #[must_use]
    pub fn audit_recovery(&self) -> Option<&Recovered> {
        self.live.recovered()
    }
}

/// Shows the location only, never stored bytes.
impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store for SledStore {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn reads_are_local(&self) -> bool {
        true
    }

    fn audit_files(&self) -> Option<Arc<LiveLog>> {
        Some(Arc::clone(&self.live))
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.tree(tree).get(key).map_err(map_err)?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.tree(tree)
            .scan_prefix(prefix)
            .map(|entry| {
                let (k, v) = entry.map_err(map_err)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn scan_range(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        if from >= to || limit == 0 {
            return Ok(Vec::new());
        }
        self.tree(tree)
            .range(from..to)
            .take(limit)
            .map(|entry| {
                let (k, v) = entry.map_err(map_err)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut journal = self.lock_journal();
        self.transact(batch, true)?;
        if batch.ops().is_empty() {
            return Ok(());
        }
        journal.append(batch)?;
        if journal.len() >= JOURNAL_LIMIT {
            self.db.flush().map_err(map_err)?;
            journal.reset()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut journal = self.lock_journal();
        self.db.flush().map_err(map_err)?;
        journal.reset()
    }

    fn record_nonce(
        &self,
        scope: &[u8],
        expires_at: u64,
        now: u64,
        max_live: u64,
    ) -> Result<NonceOutcome, StoreError> {
        check_scope(scope)?;
        let mut state = self.lock_nonces();
        if now >= state.next_sweep {
            self.sweep_nonces(&mut state, now)?;
        }
        let index_key = |expiry: &[u8], scope: &[u8]| [expiry, scope].concat();
        let expiry = expires_at.to_be_bytes();
        match self.nonces.get(scope).map_err(map_err)? {
            Some(held) => {
                let held_until = <[u8; 8]>::try_from(held.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("a replay nonce entry".into()))?;
                if held_until > now {
                    return Ok(NonceOutcome::Seen);
                }
                // Expired, not swept yet: the entry is reused, the count stays.
                self.nonce_expiry
                    .remove(index_key(held.as_ref(), scope))
                    .map_err(map_err)?;
            }
            None => {
                if state.entries >= max_live {
                    self.sweep_nonces(&mut state, now)?;
                    if state.entries >= max_live {
                        return Ok(NonceOutcome::Full);
                    }
                }
                state.entries += 1;
            }
        }
        // Index first: a crash between the two leaves an index entry the sweep removes.
        self.nonce_expiry
            .insert(index_key(expiry.as_slice(), scope), Vec::new())
            .map_err(map_err)?;
        self.nonces
            .insert(scope, expiry.to_vec())
            .map_err(map_err)?;
        // On disk before the caller hears New (a lost nonce reopens its replay), or the call fails.
        // Unlocked first: concurrent callers then share sled's write and fsync (group commit).
        drop(state);
        self.db.flush().map_err(map_err)?;
        Ok(NonceOutcome::New)
    }
}

/// Keeps sled's own reasons (static text about sled internals) but drops the payloads that could
/// echo stored bytes, such as the tree name in `CollectionNotFound`.
fn map_err(err: ::sled::Error) -> StoreError {
    match err {
        ::sled::Error::Io(e) => StoreError::Io(e),
        ::sled::Error::Corruption { .. } => {
            StoreError::Corrupt("sled detected corruption in its log".to_owned())
        }
        ::sled::Error::CollectionNotFound(_) => {
            StoreError::Unavailable("sled tree not found".to_owned())
        }
        ::sled::Error::Unsupported(reason) => {
            StoreError::Unavailable(format!("sled unsupported operation: {reason}"))
        }
        ::sled::Error::ReportableBug(reason) => {
            StoreError::Unavailable(format!("sled internal error: {reason}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SledStore;
    use crate::store::{Batch, Store, StoreError, Tree, conformance};

    fn with_store(test: impl FnOnce(&dyn Store)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open sled");
        test(&store);
    }

    crate::store::conformance::conformance_tests!(with_store);

    #[test]
    fn durable_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open =
            || -> Box<dyn Store> { Box::new(SledStore::open(dir.path()).expect("open sled")) };
        conformance::durable_after_reopen(&open);
    }

    #[test]
    fn nonces_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open =
            || -> Box<dyn Store> { Box::new(SledStore::open(dir.path()).expect("open sled")) };
        conformance::nonces_survive_reopen(&open);
    }

    /// The live count is read back at open: a reopened store at its bound still refuses.
    #[test]
    fn the_nonce_bound_holds_across_a_reopen() {
        use crate::store::NonceOutcome;
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path()).expect("open sled");
            for scope in [b"a", b"b"] {
                assert_eq!(
                    store.record_nonce(scope, 200, 100, 2).expect("record"),
                    NonceOutcome::New
                );
            }
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.record_nonce(b"c", 200, 101, 2).expect("record"),
            NonceOutcome::Full
        );
        assert_eq!(
            store.record_nonce(b"c", 300, 200, 2).expect("record"),
            NonceOutcome::New,
            "swept at expiry"
        );
    }

    #[test]
    fn second_open_of_same_path_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = SledStore::open(dir.path()).expect("open sled");
        let second = SledStore::open(dir.path());
        assert!(
            matches!(second, Err(StoreError::Io(_))),
            "expected a lock error, got {second:?}"
        );
    }

    /// A batch that reached the journal but not sled's own files (a crash before sled's flush)
    /// is there after the next open, and the journal is emptied once sled holds it.
    #[test]
    fn journaled_batches_are_replayed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open sled");
        let mut first = Batch::new();
        first.put(Tree::Meta, b"a".to_vec(), b"1".to_vec());
        store.apply(&first).expect("apply");
        drop(store);
        let journal_path = dir.path().join(super::JOURNAL_FILE);
        let (mut journal, found) = super::Journal::open(&journal_path).expect("journal");
        assert_eq!(
            found.len(),
            1,
            "an applied batch waits in the journal until sled's flush"
        );
        let mut lost = Batch::new();
        lost.put(Tree::Meta, b"b".to_vec(), b"2".to_vec());
        lost.delete(Tree::Meta, b"a".to_vec());
        journal.append(&lost).expect("append");
        drop(journal);

        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.get(Tree::Meta, b"b").expect("get"),
            Some(b"2".to_vec())
        );
        assert_eq!(store.get(Tree::Meta, b"a").expect("get"), None);
        drop(store);
        let (_, found) = super::Journal::open(&journal_path).expect("journal");
        assert!(found.is_empty());
    }

    /// The journal does not grow past its bound: sled is flushed and the journal emptied.
    #[test]
    fn the_journal_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open sled");
        let journal_path = dir.path().join(super::JOURNAL_FILE);
        let value = vec![7u8; 1024 * 1024];
        let rounds = super::JOURNAL_LIMIT / 1024 / 1024 + 2;
        for i in 0..rounds {
            let mut batch = Batch::new();
            batch.put(Tree::Audit, i.to_be_bytes().to_vec(), value.clone());
            store.apply(&batch).expect("apply");
            let len = std::fs::metadata(&journal_path).expect("journal").len();
            assert!(len < super::JOURNAL_LIMIT + 2 * 1024 * 1024, "{len}");
        }
        assert!(std::fs::metadata(&journal_path).expect("journal").len() < 4 * 1024 * 1024);
        drop(store);
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.scan_prefix(Tree::Audit, b"").expect("scan").len() as u64,
            rounds
        );
    }

    #[test]
    fn debug_shows_no_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open sled");
        let mut batch = Batch::new();
        batch.put(Tree::Meta, b"k".to_vec(), b"secret".to_vec());
        store.apply(&batch).expect("apply");
        let shown = format!("{store:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
