//! Copying a whole store to another backend (sled → PostgreSQL when a deployment outgrows one
//! node), and the per-tree summaries that prove the copy complete.
//!
//! Bytes are copied as stored: key material stays wrapped under its KEKs, and the copy needs no
//! unseal. A store that keeps its audit trail in a live log (sled) reads and writes it here as
//! the [`Tree::Audit`] entries a tree would hold, so the copy and its summary are the same
//! whichever backend keeps the trail where. A summary is, per tree, the entry count and an SM3 digest over the entries in key
//! order (`u32 BE key length ‖ key ‖ u32 BE value length ‖ value` each), so two stores agree
//! exactly when their summaries do.

use sm3::{Digest, Sm3};

use super::{Batch, Entry, Store, StoreError, Tree};

/// Most entries in one copy batch.
const BATCH_ENTRIES: usize = 1000;
/// Most key and value bytes in one copy batch (one entry may exceed it alone).
const BATCH_BYTES: usize = 8 << 20;

/// One tree's fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSummary {
    pub tree: Tree,
    pub entries: u64,
    /// SM3 over the tree's entries in key order, hex.
    pub sm3: String,
}

/// Why a copy did not happen or did not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    #[error("the {side} store: {source}")]
    Store {
        side: &'static str,
        #[source]
        source: StoreError,
    },
    #[error(
        "the target store is not empty (tree `{tree}` has entries); copy only into an empty store"
    )]
    TargetNotEmpty { tree: Tree },
    #[error("the source store is empty: nothing to copy (is the path the store directory?)")]
    SourceEmpty,
    #[error(
        "verification failed: tree `{tree}` differs after the copy (source and target summaries disagree)"
    )]
    Mismatch { tree: Tree },
}

/// Every entry of `tree`, the audit trail's from the live log when the store keeps it there.
fn entries_of(store: &dyn Store, tree: Tree) -> Result<Vec<Entry>, StoreError> {
    match (tree, store.audit_files()) {
        (Tree::Audit, Some(live)) => live.tree_entries(),
        _ => store.scan_prefix(tree, b""),
    }
}

/// The summary of every tree of `store`, in [`Tree::ALL`] order.
pub fn summarize(store: &dyn Store) -> Result<Vec<TreeSummary>, StoreError> {
    Tree::ALL
        .iter()
        .map(|&tree| {
            let entries = entries_of(store, tree)?;
            let mut hash = Sm3::new();
            for (key, value) in &entries {
                hash.update(len_prefix(key.len())?);
                hash.update(key);
                hash.update(len_prefix(value.len())?);
                hash.update(value);
            }
            Ok(TreeSummary {
                tree,
                entries: u64::try_from(entries.len()).unwrap_or(u64::MAX),
                sm3: hex::encode(hash.finalize()),
            })
        })
        .collect()
}

fn len_prefix(len: usize) -> Result<[u8; 4], StoreError> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| StoreError::Corrupt("an entry larger than 4 GiB".into()))
}

/// What a verified copy did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    /// The source's summary, equal to the target's after the copy.
    pub source: Vec<TreeSummary>,
    pub target: Vec<TreeSummary>,
}

/// Copies every tree of `from` into the empty store `to`, then verifies that both summaries are
/// equal. Refuses a non-empty target (a copy must never merge two key sets) and an empty
/// source. Nothing must write to either store meanwhile: a change during the copy shows up as
/// a mismatch.
pub fn copy_all(from: &dyn Store, to: &dyn Store) -> Result<CopyReport, CopyError> {
    let source_err = |source| CopyError::Store {
        side: "source",
        source,
    };
    let target_err = |source| CopyError::Store {
        side: "target",
        source,
    };
    for tree in Tree::ALL {
        if !entries_of(to, tree).map_err(target_err)?.is_empty() {
            return Err(CopyError::TargetNotEmpty { tree });
        }
    }
    let source = summarize(from).map_err(source_err)?;
    if source.iter().all(|s| s.entries == 0) {
        return Err(CopyError::SourceEmpty);
    }
    for tree in Tree::ALL {
        let entries = entries_of(from, tree).map_err(source_err)?;
        if let (Tree::Audit, Some(live)) = (tree, to.audit_files()) {
            live.replace_with(&entries).map_err(target_err)?;
            continue;
        }
        let mut batch = Batch::new();
        let mut bytes = 0usize;
        for (key, value) in entries {
            bytes = bytes.saturating_add(key.len() + value.len());
            // Absent now, as checked above: a concurrent writer makes the copy fail, not merge.
            batch.require(tree, key.clone(), None);
            batch.put(tree, key, value);
            if batch.len() >= 2 * BATCH_ENTRIES || bytes >= BATCH_BYTES {
                to.apply(&batch).map_err(target_err)?;
                batch = Batch::new();
                bytes = 0;
            }
        }
        to.apply(&batch).map_err(target_err)?;
    }
    to.flush().map_err(target_err)?;
    let target = summarize(to).map_err(target_err)?;
    for (s, t) in source.iter().zip(&target) {
        if s != t {
            return Err(CopyError::Mismatch { tree: s.tree });
        }
    }
    Ok(CopyReport { source, target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn filled() -> MemoryStore {
        let store = MemoryStore::new();
        let mut batch = Batch::new();
        for tree in Tree::ALL {
            for i in 0..(3 * BATCH_ENTRIES / 2) {
                batch.put(tree, format!("{i:05}").into_bytes(), vec![7; i % 50]);
            }
        }
        batch.put(Tree::Seal, b"big".to_vec(), vec![1; BATCH_BYTES + 1]);
        store.apply(&batch).expect("fill");
        store
    }

    #[test]
    fn copies_every_tree_and_verifies() {
        let from = filled();
        let to = MemoryStore::new();
        let report = copy_all(&from, &to).expect("copy");
        assert_eq!(report.source, report.target);
        assert_eq!(summarize(&to).expect("summary"), report.source);
        let seal = report
            .source
            .iter()
            .find(|s| s.tree == Tree::Seal)
            .expect("seal");
        assert_eq!(
            seal.entries,
            u64::try_from(3 * BATCH_ENTRIES / 2 + 1).expect("fits")
        );
        assert_eq!(
            to.get(Tree::Seal, b"big").expect("get").map(|v| v.len()),
            Some(BATCH_BYTES + 1)
        );
    }

    #[test]
    fn refuses_a_non_empty_target_and_an_empty_source() {
        let from = filled();
        let to = MemoryStore::new();
        let mut batch = Batch::new();
        batch.put(Tree::Grants, b"x".to_vec(), b"y".to_vec());
        to.apply(&batch).expect("put");
        assert!(matches!(
            copy_all(&from, &to),
            Err(CopyError::TargetNotEmpty { tree: Tree::Grants })
        ));
        assert!(matches!(
            copy_all(&MemoryStore::new(), &MemoryStore::new()),
            Err(CopyError::SourceEmpty)
        ));
    }

    #[test]
    fn summaries_differ_when_any_byte_differs() {
        let a = filled();
        let b = MemoryStore::new();
        copy_all(&a, &b).expect("copy");
        let mut batch = Batch::new();
        batch.put(Tree::Audit, b"00001".to_vec(), vec![7, 7]);
        b.apply(&batch).expect("edit");
        let (sa, sb) = (summarize(&a).expect("a"), summarize(&b).expect("b"));
        for (x, y) in sa.iter().zip(&sb) {
            assert_eq!(x == y, x.tree != Tree::Audit, "{}", x.tree);
        }
    }
}
