//! Embedded default backend on sled 0.34.
//!
//! sled serialises all multi-tree transactions behind one process-wide lock, so preconditions read
//! inside the transaction cannot be invalidated before commit; sled's file lock keeps a second
//! process (or a second open in this one) out of the same directory.

use std::fmt;
use std::path::{Path, PathBuf};

use ::sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use ::sled::{Config, Db, Transactional};

use super::{Batch, BatchOp, Entry, Store, StoreError, Tree};

/// One `sled::Db` with one `sled::Tree` per [`Tree`], opened once and kept: opening a tree takes
/// a lock and a lookup, which every request would otherwise pay.
pub struct SledStore {
    db: Db,
    /// Indexed by [`Tree::index`].
    trees: Vec<::sled::Tree>,
    path: PathBuf,
}

impl SledStore {
    /// Opens (creating if needed) the database in directory `path` and every tree in [`Tree::ALL`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Config::new().path(path).open().map_err(map_err)?;
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
