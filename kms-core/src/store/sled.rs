//! Embedded default backend on sled 0.34.
//!
//! sled serialises all multi-tree transactions behind one process-wide lock, so preconditions read
//! inside the transaction cannot be invalidated before commit; sled's file lock keeps a second
//! process (or a second open in this one) out of the same directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use ::sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use ::sled::{Config, Db, Transactional};

use super::{Batch, BatchOp, Entry, Store, StoreError, Tree};

/// How long [`SledStore::open`] waits for a just-dropped handle to release the directory lock;
/// observed releases take milliseconds, so this only bounds the wait when the lock is truly taken.
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_RETRY: Duration = Duration::from_millis(5);

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
        Ok(Self {
            db,
            trees,
            path: path.to_path_buf(),
        })
    }

    fn tree(&self, tree: Tree) -> &::sled::Tree {
        &self.trees[tree.index()]
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

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let touched = batch.trees();
        if touched.is_empty() {
            // sled cannot run a transaction over zero trees, and there is nothing to make durable.
            return Ok(());
        }
        let handles: Vec<&::sled::Tree> = touched.iter().map(|&t| self.tree(t)).collect();
        // Transaction views come in `touched` order; map each tree to its view's position.
        let mut slot = [0_usize; Tree::ALL.len()];
        for (position, tree) in touched.iter().enumerate() {
            slot[tree.index()] = position;
        }
        let outcome = Transactional::<Tree>::transaction(
            handles.as_slice(),
            |views: &Vec<TransactionalTree>| {
                let view = |tree: Tree| &views[slot[tree.index()]];
                // All checks before any write, so preconditions see the pre-batch state.
                for pre in batch.preconditions() {
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
            Ok(()) => self.flush(),
            Err(TransactionError::Abort(tree)) => Err(StoreError::Conflict { tree }),
            Err(TransactionError::Storage(e)) => Err(map_err(e)),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(map_err)
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
    fn second_open_of_same_path_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = SledStore::open(dir.path()).expect("open sled");
        let second = SledStore::open(dir.path());
        assert!(
            matches!(second, Err(StoreError::Io(_))),
            "expected a lock error, got {second:?}"
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
