//! Storage seam: a handful of byte-oriented operations that every backend (sled and memory here,
//! PostgreSQL in `kms-store-postgres`) implements with the same guarantees.
//!
//! The trait is synchronous on purpose: the server runs core calls on a blocking pool, and the
//! PostgreSQL backend (`PostgresStore` in the `kms-store-postgres` crate) drives its async driver
//! on a small runtime of its own behind this synchronous face, so the core stays free of async,
//! tokio and networking.
//!
//! Every backend, in this crate or another, passes the same checks: `conformance`, compiled for
//! this crate's tests and, for other crates' tests, with the `test-util` feature.
//!
//! Only wrapped (encrypted) bytes reach this layer; typing and encoding happen one layer up.

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
pub mod copy;
mod journal;
mod memory;
mod nonces;
mod sled;

use std::fmt;
use std::sync::Arc;

pub use self::memory::MemoryStore;
pub use self::nonces::{MAX_NONCE_SCOPE, NonceOutcome};
pub use self::sled::{AUDIT_DIR, SledStore};

/// A `(key, value)` pair as returned by [`Store::scan_prefix`] and [`Store::scan_range`].
pub type Entry = (Vec<u8>, Vec<u8>);

/// Closed set of trees. Sign, encrypt and MAC keys live apart (KEY-5).
///
/// A closed enum rather than free-form names so that a typo cannot silently create a new tree,
/// and so that a backend can create every tree up front.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    Meta,
    Seal,
    Namespaces,
    EncryptKeys,
    SignKeys,
    AsymmetricDecryptKeys,
    MacKeys,
    Aliases,
    Grants,
    Principals,
    Audit,
}

impl Tree {
    /// Every tree, in declaration order (backends index per-tree handles by position here).
    pub const ALL: [Self; 11] = [
        Self::Meta,
        Self::Seal,
        Self::Namespaces,
        Self::EncryptKeys,
        Self::SignKeys,
        Self::AsymmetricDecryptKeys,
        Self::MacKeys,
        Self::Aliases,
        Self::Grants,
        Self::Principals,
        Self::Audit,
    ];

    /// Persisted identifier: sled tree names and SQL column values are derived from it, so these
    /// strings must never change once data has been written.
    pub fn name(self) -> &'static str {
        match self {
            Self::Meta => "meta",
            Self::Seal => "seal",
            Self::Namespaces => "namespaces",
            Self::EncryptKeys => "encrypt_keys",
            Self::SignKeys => "sign_keys",
            Self::AsymmetricDecryptKeys => "asymmetric_decrypt_keys",
            Self::MacKeys => "mac_keys",
            Self::Aliases => "aliases",
            Self::Grants => "grants",
            Self::Principals => "principals",
            Self::Audit => "audit",
        }
    }

    /// Position in [`Tree::ALL`]; lets backends keep per-tree handles in a plain array.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One write in a [`Batch`].
///
/// Exhaustive on purpose: a new kind of write must make every backend fail to compile until it
/// handles it.
#[derive(Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put {
        tree: Tree,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        tree: Tree,
        key: Vec<u8>,
    },
}

impl BatchOp {
    pub fn tree(&self) -> Tree {
        match self {
            Self::Put { tree, .. } | Self::Delete { tree, .. } => *tree,
        }
    }

    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. } | Self::Delete { key, .. } => key,
        }
    }
}

/// Keys and values are redacted to their lengths so that a batch can be logged or shown in a
/// panic message without leaking stored bytes.
impl fmt::Debug for BatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put { tree, key, value } => f
                .debug_struct("Put")
                .field("tree", tree)
                .field("key_len", &key.len())
                .field("value_len", &value.len())
                .finish(),
            Self::Delete { tree, key } => f
                .debug_struct("Delete")
                .field("tree", tree)
                .field("key_len", &key.len())
                .finish(),
        }
    }
}

/// A compare-before-write condition of a [`Batch`]: `key` in `tree` must hold exactly `expected`
/// (`None` = absent) in the state the batch is applied to.
#[derive(Clone, PartialEq, Eq)]
pub struct Precondition {
    pub tree: Tree,
    pub key: Vec<u8>,
    pub expected: Option<Vec<u8>>,
}

impl Precondition {
    /// Whether `current` (the stored value, `None` if absent) satisfies this condition.
    pub fn holds(&self, current: Option<&[u8]>) -> bool {
        self.expected.as_deref() == current
    }
}

/// Redacted like [`BatchOp`]'s `Debug`.
impl fmt::Debug for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Precondition")
            .field("tree", &self.tree)
            .field("key_len", &self.key.len())
            .field("expected_len", &self.expected.as_ref().map(Vec::len))
            .finish()
    }
}

/// An atomic unit of writes, possibly spanning several trees, guarded by optional preconditions.
///
/// Writes apply in insertion order, so a later write to the same key wins. Preconditions are
/// evaluated against the state *before* any write of this batch, whatever order they were added
/// in; a batch whose preconditions fail writes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<BatchOp>,
    preconditions: Vec<Precondition>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the batch neither writes nor checks anything.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.preconditions.is_empty()
    }

    /// Number of entries: writes plus preconditions (consistent with [`Batch::is_empty`]).
    pub fn len(&self) -> usize {
        self.ops.len() + self.preconditions.len()
    }

    pub fn put(
        &mut self,
        tree: Tree,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.ops.push(BatchOp::Put {
            tree,
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Deleting an absent key is not an error, so callers need no read before a delete.
    pub fn delete(&mut self, tree: Tree, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Delete {
            tree,
            key: key.into(),
        });
        self
    }

    /// Optimistic concurrency: the whole batch applies only if, at commit time, `key` in `tree`
    /// currently holds exactly `expected` (`None` = absent). Otherwise [`Store::apply`] returns
    /// [`StoreError::Conflict`] and nothing is written. This is what keeps several writers (several
    /// servers on one database later) from losing each other's updates: read, build the batch with
    /// `require` on what was read, and retry from the read on `Conflict`.
    pub fn require(
        &mut self,
        tree: Tree,
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
    ) -> &mut Self {
        self.preconditions.push(Precondition {
            tree,
            key: key.into(),
            expected,
        });
        self
    }

    /// Writes in the order they must be applied.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    pub fn preconditions(&self) -> &[Precondition] {
        &self.preconditions
    }

    /// Every tree the batch writes or checks, ascending and without duplicates, so that a backend
    /// can lock or open exactly those trees for its transaction.
    pub fn trees(&self) -> Vec<Tree> {
        let mut trees: Vec<Tree> = self
            .ops
            .iter()
            .map(BatchOp::tree)
            .chain(self.preconditions.iter().map(|p| p.tree))
            .collect();
        trees.sort_unstable();
        trees.dedup();
        trees
    }
}

/// Storage failures. Messages name trees and backend reasons only, never keys or values, because
/// these errors are logged and may travel to clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A [`Batch::require`] precondition did not hold; nothing was written. Retry from the read.
    #[error("store precondition failed in tree `{tree}`")]
    Conflict { tree: Tree },
    /// The backend cannot serve the request now (lock poisoned, database closed, backend bug);
    /// the outcome of a failed `apply` is unknown.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend found its own data inconsistent.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// The operating system refused a read or write; the outcome of a failed `apply` is unknown.
    #[error("store I/O error")]
    Io(#[source] std::io::Error),
}

/// A key-value store with atomic, durable, conditional multi-tree batches.
///
/// Implementations must pass every check in `store::conformance` (feature `test-util`).
pub trait Store: Send + Sync + 'static {
    /// Backend name for logs and diagnostics (e.g. `"sled"`).
    fn name(&self) -> &'static str;

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// All entries whose key starts with prefix, in ascending byte order of key.
    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;

    /// The first `limit` entries with `from <= key < to`, in ascending byte order of key; empty
    /// when `from >= to` or `limit` is 0.
    ///
    /// For trees too large to read whole (the audit trail): a reader pages through a range,
    /// starting each page just after the last key of the one before, and holds one page at a
    /// time. The default filters a prefix scan, so it is correct but reads everything under the
    /// bounds' common prefix; every real backend overrides it with a bounded read.
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
        let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
        Ok(self
            .scan_prefix(tree, &from[..common])?
            .into_iter()
            .filter(|(k, _)| k.as_slice() >= from && k.as_slice() < to)
            .take(limit)
            .collect())
    }

    /// Atomic across trees; checks every precondition; durable (flushed to disk) before `Ok`.
    ///
    /// `Err(Conflict)` guarantees nothing was written. Any other error leaves the outcome
    /// unknown (the write may or may not survive), so callers re-read before deciding.
    fn apply(&self, batch: &Batch) -> Result<(), StoreError>;

    fn flush(&self) -> Result<(), StoreError>;

    /// Whether reads are served from this process's memory or local disk in microseconds (an
    /// embedded store), so that the server may read on an async executor thread instead of
    /// handing the call to a blocking pool. A networked database keeps the default, `false`.
    fn reads_are_local(&self) -> bool {
        false
    }

    /// The live audit log this store keeps its audit trail in instead of [`Tree::Audit`]
    /// (`crate::audit::live`): the embedded sled store does, so that a record costs about its
    /// own size on disk. `None`, the default: the trail is in [`Tree::Audit`], as several nodes
    /// on one database need it.
    fn audit_files(&self) -> Option<Arc<crate::audit::live::LiveLog>> {
        None
    }

    /// Whether the backend can serve calls right now (a networked backend probes its server).
    /// Embedded backends are reachable whenever they are open, hence the default.
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The replay guard's memory (`crate::replay`): records `scope` as seen until `expires_at`
    /// (Unix seconds) and says whether it was new at `now`.
    ///
    /// - [`NonceOutcome::New`]: not seen, or seen with an expiry at or before `now` (an expired
    ///   entry, swept or not, counts as absent); it is now recorded until `expires_at`.
    /// - [`NonceOutcome::Seen`]: recorded with an expiry after `now`; nothing changes.
    /// - [`NonceOutcome::Full`]: new, but `max_live` unexpired entries are already held, even
    ///   after sweeping the expired ones: nothing was recorded (fail closed: a live entry is
    ///   never evicted to make room, since evicting one would reopen its replay).
    ///
    /// Of two calls with the same scope, on one node or several on one database, at most one is
    /// told `New`. Entries are kept apart from the [`Tree`]s: they are not keys or metadata, are
    /// not backed up, copied or migrated, and expire by themselves. `scope` is at most
    /// [`MAX_NONCE_SCOPE`] bytes and never holds a nonce in clear (the guard stores its SM3).
    ///
    /// The default refuses: a store that keeps no nonces must not let a replay through.
    /// Wrappers forward it like every other method.
    fn record_nonce(
        &self,
        scope: &[u8],
        expires_at: u64,
        now: u64,
        max_live: u64,
    ) -> Result<NonceOutcome, StoreError> {
        let _ = (scope, expires_at, now, max_live);
        Err(StoreError::Unavailable(format!(
            "the {} store keeps no replay nonces",
            self.name()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_tree_at_its_index() {
        for (i, tree) in Tree::ALL.iter().enumerate() {
            assert_eq!(tree.index(), i, "{tree}");
        }
    }

    #[test]
    fn tree_names_are_unique_snake_case() {
        let mut names: Vec<&str> = Tree::ALL.iter().map(|t| t.name()).collect();
        for name in &names {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Tree::ALL.len());
    }

    #[test]
    fn batch_debug_redacts_bytes() {
        let mut batch = Batch::new();
        batch
            .put(Tree::Meta, b"key".to_vec(), b"secret-value".to_vec())
            .require(Tree::Seal, b"k".to_vec(), Some(b"secret-expected".to_vec()));
        let shown = format!("{batch:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(!shown.contains("115, 101, 99"), "{shown}"); // "sec" as a byte list
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.trees(), vec![Tree::Meta, Tree::Seal]);
    }

    #[test]
    fn conflict_message_names_only_the_tree() {
        let err = StoreError::Conflict {
            tree: Tree::SignKeys,
        };
        assert_eq!(
            err.to_string(),
            "store precondition failed in tree `sign_keys`"
        );
    }
}
