//! In-memory backend: the reference model for the conformance suite and a fast store for unit
//! tests in this and other crates. Not durable.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::nonces::{NonceTable, check_scope};
use super::{Batch, BatchOp, Entry, NonceOutcome, Store, StoreError, Tree};

type Map = BTreeMap<(Tree, Vec<u8>), Vec<u8>>;

/// One map keyed by `(tree, key)`: ordering by tree first keeps each tree's keys contiguous and
/// byte-ordered, so a prefix scan is a single range walk.
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<Map>,
    /// The replay guard's nonces, apart from the trees as in every backend.
    nonces: Mutex<NonceTable>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Poisoning is ignored: `apply` checks every precondition before its first write, and the
    /// writes themselves cannot panic short of aborting on allocation failure, so a panic while
    /// the lock is held cannot leave a half-applied batch behind.
    fn lock(&self) -> MutexGuard<'_, Map> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Shows only the entry count, never stored bytes.
impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.lock().len())
            .finish()
    }
}

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn reads_are_local(&self) -> bool {
        true
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(&(tree, key.to_vec())).cloned())
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let start = (tree, prefix.to_vec());
        Ok(self
            .lock()
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(|((t, k), _)| *t == tree && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_range(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        // `BTreeMap::range` panics on reversed bounds; an empty range is the answer.
        if from >= to || limit == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .lock()
            .range((
                Bound::Included((tree, from.to_vec())),
                Bound::Excluded((tree, to.to_vec())),
            ))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut entries = self.lock();
        for pre in batch.preconditions() {
            let current = entries.get(&(pre.tree, pre.key.clone()));
            if !pre.holds(current.map(Vec::as_slice)) {
                return Err(StoreError::Conflict { tree: pre.tree });
            }
        }
        for op in batch.ops() {
            match op {
                BatchOp::Put { tree, key, value } => {
                    entries.insert((*tree, key.clone()), value.clone());
                }
                BatchOp::Delete { tree, key } => {
                    entries.remove(&(*tree, key.clone()));
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn record_nonce(
        &self,
        scope: &[u8],
        expires_at: u64,
        now: u64,
        max_live: u64,
    ) -> Result<NonceOutcome, StoreError> {
        check_scope(scope)?;
        // Poisoning ignored as for the entries: `record` cannot stop half-way but by aborting.
        let mut nonces = self.nonces.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(nonces.record(scope, expires_at, now, max_live))
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    use crate::store::Store;

    fn with_store(test: impl FnOnce(&dyn Store)) {
        test(&MemoryStore::new());
    }

    crate::store::conformance::conformance_tests!(with_store);

    #[test]
    fn debug_shows_no_bytes() {
        let store = MemoryStore::new();
        let mut batch = crate::store::Batch::new();
        batch.put(crate::store::Tree::Meta, b"k".to_vec(), b"secret".to_vec());
        store.apply(&batch).expect("apply");
        assert_eq!(format!("{store:?}"), "MemoryStore { entries: 1 }");
    }
}
