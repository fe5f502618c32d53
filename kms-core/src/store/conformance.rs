//! Behaviours every [`Store`] backend must show, one `pub fn` each, so that sled, memory and any
//! later backend are held to the same contract (the way rustls runs one API suite per provider).
//!
//! Test code only: compiled for this crate's tests and with the `test-util` feature (other
//! crates' store tests, e.g. `kms-store-postgres`), never into a normal build. Each check panics
//! with a message naming the backend and the broken behaviour. Checks write under their own key
//! namespace, clear it before starting and again on success, and compare scans against a
//! snapshot taken first, so they tolerate unrelated data and can share one store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Batch, Entry, MAX_NONCE_SCOPE, NonceOutcome, Store, StoreError, Tree};

/// Namespace of one behaviour's keys; the leading NUL keeps them apart from real records.
fn ns(behaviour: &str, suffix: &[u8]) -> Vec<u8> {
    let mut key = format!("\0conformance/{behaviour}/").into_bytes();
    key.extend_from_slice(suffix);
    key
}

// Helpers are `#[track_caller]` so a failure points at the line of the check that broke.

#[track_caller]
fn get(store: &dyn Store, tree: Tree, key: &[u8]) -> Option<Vec<u8>> {
    match store.get(tree, key) {
        Ok(value) => value,
        Err(e) => panic!("[{}] get from {tree} failed: {e}", store.name()),
    }
}

#[track_caller]
fn scan(store: &dyn Store, tree: Tree, prefix: &[u8]) -> Vec<Entry> {
    match store.scan_prefix(tree, prefix) {
        Ok(entries) => entries,
        Err(e) => panic!("[{}] scan of {tree} failed: {e}", store.name()),
    }
}

#[track_caller]
fn apply(store: &dyn Store, batch: &Batch, what: &str) {
    if let Err(e) = store.apply(batch) {
        panic!("[{}] {what}: apply failed: {e}", store.name());
    }
}

#[track_caller]
fn expect_conflict(store: &dyn Store, batch: &Batch, expected_tree: Tree, what: &str) {
    let name = store.name();
    let Err(StoreError::Conflict { tree }) = store.apply(batch) else {
        panic!("[{name}] {what}: expected StoreError::Conflict in {expected_tree}");
    };
    assert_eq!(
        tree, expected_tree,
        "[{name}] {what}: Conflict names the wrong tree"
    );
}

#[track_caller]
fn put_one(store: &dyn Store, tree: Tree, key: &[u8], value: &[u8]) {
    let mut batch = Batch::new();
    batch.put(tree, key, value);
    apply(store, &batch, "single put");
}

/// Deletes every key under `prefix` in `trees`, so a check starts from (and leaves) a clean slate.
#[track_caller]
fn clear(store: &dyn Store, trees: &[Tree], prefix: &[u8]) {
    let mut batch = Batch::new();
    for &tree in trees {
        for (key, _) in scan(store, tree, prefix) {
            batch.delete(tree, key);
        }
    }
    apply(store, &batch, "clearing conformance keys");
}

#[track_caller]
fn assert_value(store: &dyn Store, tree: Tree, key: &[u8], expected: Option<&[u8]>, what: &str) {
    let actual = get(store, tree, key);
    assert!(
        actual.as_deref() == expected,
        "[{}] {what}: {tree} holds {} bytes (present: {}), expected {} bytes (present: {})",
        store.name(),
        actual.as_ref().map_or(0, Vec::len),
        actual.is_some(),
        expected.map_or(0, <[u8]>::len),
        expected.is_some(),
    );
}

/// Put, overwrite, read back and delete one key; an empty value is distinct from absence.
pub fn round_trip(store: &dyn Store) {
    let name = store.name();
    assert!(!name.is_empty(), "store name must not be empty");
    let tree = Tree::Meta;
    let key = ns("round_trip", b"k");
    clear(store, &[tree], &ns("round_trip", b""));

    assert_value(store, tree, &key, None, "absent before put");
    put_one(store, tree, &key, b"first");
    assert_value(store, tree, &key, Some(b"first"), "after put");
    put_one(store, tree, &key, b"second, longer value");
    assert_value(
        store,
        tree,
        &key,
        Some(b"second, longer value"),
        "after overwrite",
    );
    put_one(store, tree, &key, b"");
    assert_value(store, tree, &key, Some(b""), "empty value is present");

    let mut batch = Batch::new();
    batch.delete(tree, key.as_slice());
    apply(store, &batch, "delete");
    assert_value(store, tree, &key, None, "after delete");
    store
        .flush()
        .unwrap_or_else(|e| panic!("[{name}] flush failed: {e}"));
}

/// The same key in every tree holds independent values; a delete in one tree touches no other.
pub fn trees_are_isolated(store: &dyn Store) {
    let key = ns("isolation", b"k");
    clear(store, &Tree::ALL, &ns("isolation", b""));

    let mut batch = Batch::new();
    for tree in Tree::ALL {
        batch.put(tree, key.as_slice(), tree.name());
    }
    apply(store, &batch, "put same key in every tree");
    for tree in Tree::ALL {
        assert_value(store, tree, &key, Some(tree.name().as_bytes()), "isolation");
        let found = scan(store, tree, &key);
        assert!(
            found == vec![(key.clone(), tree.name().as_bytes().to_vec())],
            "[{}] scan of {tree} sees {} entries for a key written once per tree",
            store.name(),
            found.len()
        );
    }

    let mut batch = Batch::new();
    batch.delete(Tree::SignKeys, key.as_slice());
    apply(store, &batch, "delete in one tree");
    for tree in Tree::ALL {
        let expected = (tree != Tree::SignKeys).then_some(tree.name().as_bytes());
        assert_value(store, tree, &key, expected, "delete in sign_keys only");
    }
    clear(store, &Tree::ALL, &ns("isolation", b""));
}

/// Prefix scans return exactly the matching keys in ascending byte order, including prefixes that
/// are byte prefixes of other keys, the empty prefix (whole tree) and keys full of 0xFF bytes
/// (where a naive "increment the last byte" upper bound overflows).
pub fn prefix_scan_is_ordered(store: &dyn Store) {
    let tree = Tree::Aliases;
    let base = ns("scan", b"");
    // All-0xFF prefixes are checked too, so some keys live outside the NUL namespace.
    let high = b"\xff\xffconformance/scan/".to_vec();
    clear(store, &[tree], &base);
    clear(store, &[tree], &high);

    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = scan(store, tree, b"").into_iter().collect();
    let suffixes: [&[u8]; 16] = [
        b"\xff\xff",
        b"ab\x00",
        b"a",
        b"",
        b"b",
        b"abc",
        b"a\xff\xff\x00",
        b"ab",
        b"\x80",
        b"aa",
        b"a\xff",
        b"\x00",
        b"\xff",
        b"a\xff\xff",
        b"\x7f",
        b"ac",
    ];
    let mut batch = Batch::new();
    for (i, suffix) in suffixes.iter().enumerate() {
        for root in [&base, &high] {
            let mut key = root.clone();
            key.extend_from_slice(suffix);
            let value = format!("value {i}").into_bytes();
            model.insert(key.clone(), value.clone());
            batch.put(tree, key, value);
        }
    }
    apply(store, &batch, "writing scan keys");
    // A deleted key must vanish from scans.
    let gone = [base.as_slice(), b"ac"].concat();
    model.remove(&gone);
    let mut batch = Batch::new();
    batch.delete(tree, gone);
    apply(store, &batch, "deleting one scan key");

    let mut prefixes: Vec<Vec<u8>> = vec![b"".to_vec(), b"\xff".to_vec(), b"\xff\xff".to_vec()];
    for root in [&base, &high] {
        for suffix in [
            &b""[..],
            b"a",
            b"ab",
            b"a\xff",
            b"a\xff\xff",
            b"\xff",
            b"zz",
            b"ac",
        ] {
            prefixes.push([root.as_slice(), suffix].concat());
        }
    }
    for prefix in &prefixes {
        let expected: Vec<Entry> = model
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let actual = scan(store, tree, prefix);
        assert!(
            actual == expected,
            "[{}] scan of {tree} with a {}-byte prefix (hex {}) returned {} entries, expected {} in \
             ascending key order",
            store.name(),
            prefix.len(),
            hex::encode(prefix),
            actual.len(),
            expected.len()
        );
    }
    clear(store, &[tree], &base);
    clear(store, &[tree], &high);
}

#[track_caller]
fn range(store: &dyn Store, tree: Tree, from: &[u8], to: &[u8], limit: usize) -> Vec<Entry> {
    match store.scan_range(tree, from, to, limit) {
        Ok(entries) => entries,
        Err(e) => panic!("[{}] range scan of {tree} failed: {e}", store.name()),
    }
}

/// Range scans return the first `limit` keys with `from <= key < to` in ascending byte order:
/// `from` included, `to` excluded, keys that extend `to` (`to ‖ 0x00`) excluded, keys of other
/// trees never, reversed or empty bounds and a zero limit give nothing, and paging (each page
/// starting just after the last key of the one before) walks a range exactly once.
pub fn range_scan_is_bounded_and_ordered(store: &dyn Store) {
    let tree = Tree::MacKeys;
    let base = ns("range", b"");
    clear(store, &[tree, Tree::Aliases], &base);

    let suffixes: [&[u8]; 14] = [
        b"",
        b"\x00",
        b"a",
        b"a\x00",
        b"ab",
        b"ab\x00",
        b"ab\xff",
        b"abc",
        b"b",
        b"b\x00",
        b"\x7f",
        b"\x80",
        b"\xff",
        b"\xff\xff",
    ];
    let key = |suffix: &[u8]| [base.as_slice(), suffix].concat();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut batch = Batch::new();
    for (i, suffix) in suffixes.iter().enumerate() {
        let value = format!("range {i}").into_bytes();
        model.insert(key(suffix), value.clone());
        batch.put(tree, key(suffix), value);
    }
    // The same keys in another tree must never show up.
    for suffix in suffixes {
        batch.put(Tree::Aliases, key(suffix), b"other tree".to_vec());
    }
    apply(store, &batch, "writing range keys");

    let bounds: [(&[u8], &[u8]); 9] = [
        (b"", b"\xff\xff\xff"),
        (b"a", b"b"),
        (b"a", b"ab"),
        (b"a\x00", b"ab\x00"),
        (b"ab", b"abc"),
        (b"ab\x00", b"ab\xff"),
        (b"\x7f", b"\xff"),
        (b"b", b"b\x00"),
        (b"\x00", b"\x01"),
    ];
    for (from, to) in bounds {
        let (from, to) = (key(from), key(to));
        let all: Vec<Entry> = model
            .iter()
            .filter(|(k, _)| **k >= from && **k < to)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for limit in [1, 2, 3, all.len(), all.len() + 1, usize::MAX] {
            let expected: Vec<Entry> = all.iter().take(limit).cloned().collect();
            let actual = range(store, tree, &from, &to, limit);
            assert!(
                actual == expected,
                "[{}] range scan [{}, {}) limit {limit} returned {} entries, expected {} in \
                 ascending key order",
                store.name(),
                hex::encode(&from),
                hex::encode(&to),
                actual.len(),
                expected.len()
            );
        }
        // Paging by two reassembles the range exactly.
        let mut paged = Vec::new();
        let mut next = from.clone();
        loop {
            let page = range(store, tree, &next, &to, 2);
            let Some((last, _)) = page.last() else { break };
            next = [last.as_slice(), b"\x00"].concat();
            paged.extend(page);
        }
        assert!(
            paged == all,
            "[{}] paging through [{}, {}) returned {} entries, expected {}",
            store.name(),
            hex::encode(&from),
            hex::encode(&to),
            paged.len(),
            all.len()
        );
    }
    for (from, to, limit, what) in [
        (key(b"b"), key(b"a"), 10, "reversed bounds"),
        (key(b"a"), key(b"a"), 10, "empty bounds"),
        (key(b""), key(b"\xff\xff\xff"), 0, "a zero limit"),
    ] {
        assert!(
            range(store, tree, &from, &to, limit).is_empty(),
            "[{}] a range scan with {what} must return nothing",
            store.name()
        );
    }
    clear(store, &[tree, Tree::Aliases], &base);
}

/// 1000 keys written in scrambled order come back complete and byte-ordered (so "10" < "9").
pub fn many_keys_scan_in_order(store: &dyn Store) {
    const COUNT: usize = 1000;
    let tree = Tree::Grants;
    let base = ns("many", b"");
    clear(store, &[tree], &base);

    let key = |i: usize| [base.as_slice(), i.to_string().as_bytes()].concat();
    let mut batch = Batch::new();
    for step in 0..COUNT {
        // 617 is coprime with 1000, so this visits every index once, out of order.
        let i = step * 617 % COUNT;
        batch.put(tree, key(i), i.to_le_bytes().to_vec());
    }
    apply(store, &batch, "writing 1000 keys in one batch");

    let mut expected: Vec<Entry> = (0..COUNT)
        .map(|i| (key(i), i.to_le_bytes().to_vec()))
        .collect();
    expected.sort();
    let actual = scan(store, tree, &base);
    assert_eq!(actual.len(), COUNT, "[{}] scan lost keys", store.name());
    assert!(
        actual == expected,
        "[{}] scan of 1000 keys is not in ascending byte order",
        store.name()
    );
    let ones = scan(store, tree, &key(1));
    assert_eq!(
        ones.len(),
        111,
        "[{}] prefix \"1\" must match 1, 10-19 and 100-199",
        store.name()
    );
    clear(store, &[tree], &base);
}

/// 1 MiB values survive put, scan, overwrite and a precondition comparing the whole value.
pub fn large_values(store: &dyn Store) {
    const SIZE: usize = 1 << 20;
    let tree = Tree::Seal;
    let key = ns("large", b"k");
    clear(store, &[tree], &ns("large", b""));

    let big: Vec<u8> = (0..SIZE)
        .map(|i| u8::try_from(i * 31 % 251).unwrap_or(0))
        .collect();
    put_one(store, tree, &key, &big);
    assert_value(store, tree, &key, Some(&big), "1 MiB value");
    assert!(
        scan(store, tree, &key) == vec![(key.clone(), big.clone())],
        "[{}] scan does not return the 1 MiB value intact",
        store.name()
    );

    let mut other = big.clone();
    other.reverse();
    let mut batch = Batch::new();
    batch
        .require(tree, key.as_slice(), Some(other.clone()))
        .put(tree, key.as_slice(), b"never".to_vec());
    expect_conflict(store, &batch, tree, "1 MiB precondition mismatch");
    let mut batch = Batch::new();
    batch
        .require(tree, key.as_slice(), Some(big))
        .put(tree, key.as_slice(), other.clone());
    apply(store, &batch, "1 MiB guarded overwrite");
    assert_value(store, tree, &key, Some(&other), "1 MiB overwrite");
    clear(store, &[tree], &ns("large", b""));
}

/// Deleting an absent key succeeds and leaves it absent, alone or next to other writes.
pub fn delete_of_missing_key_is_ok(store: &dyn Store) {
    let tree = Tree::Principals;
    let missing = ns("delete_missing", b"never-written");
    let other = ns("delete_missing", b"other");
    clear(store, &[tree], &ns("delete_missing", b""));

    let mut batch = Batch::new();
    batch.delete(tree, missing.as_slice());
    apply(store, &batch, "delete of a missing key");
    assert_value(store, tree, &missing, None, "missing key after delete");

    let mut batch = Batch::new();
    batch
        .delete(tree, missing.as_slice())
        .delete(tree, missing.as_slice())
        .put(tree, other.as_slice(), b"v".to_vec());
    apply(store, &batch, "delete of a missing key next to a put");
    assert_value(
        store,
        tree,
        &missing,
        None,
        "missing key after double delete",
    );
    assert_value(store, tree, &other, Some(b"v"), "put next to deletes");
    clear(store, &[tree], &ns("delete_missing", b""));
}

/// Writes in one batch apply in order: the last write to a key wins.
pub fn batch_ops_apply_in_order(store: &dyn Store) {
    let tree = Tree::Namespaces;
    let a = ns("order", b"a");
    let b = ns("order", b"b");
    let c = ns("order", b"c");
    clear(store, &[tree], &ns("order", b""));

    let mut batch = Batch::new();
    batch
        .put(tree, a.as_slice(), b"1".to_vec())
        .put(tree, a.as_slice(), b"2".to_vec())
        .put(tree, b.as_slice(), b"1".to_vec())
        .delete(tree, b.as_slice())
        .delete(tree, c.as_slice())
        .put(tree, c.as_slice(), b"3".to_vec());
    apply(store, &batch, "ordered writes");
    assert_value(store, tree, &a, Some(b"2"), "put then put");
    assert_value(store, tree, &b, None, "put then delete");
    assert_value(store, tree, &c, Some(b"3"), "delete then put");
    clear(store, &[tree], &ns("order", b""));
}

/// An empty batch succeeds and changes nothing.
pub fn empty_batch_is_a_no_op(store: &dyn Store) {
    let batch = Batch::new();
    assert!(batch.is_empty());
    apply(store, &batch, "empty batch");
}

/// `require` on absent, exact and mismatching values; preconditions see the state before the
/// batch's own writes; a precondition-only batch checks without writing.
pub fn preconditions(store: &dyn Store) {
    let tree = Tree::EncryptKeys;
    let key = ns("preconditions", b"k");
    let witness = ns("preconditions", b"witness");
    clear(store, &[tree], &ns("preconditions", b""));

    // Absent holds for an absent key, even though the same batch then writes it.
    let mut batch = Batch::new();
    batch
        .put(tree, key.as_slice(), b"v1".to_vec())
        .require(tree, key.as_slice(), None);
    apply(store, &batch, "require absent on an absent key");
    assert_value(store, tree, &key, Some(b"v1"), "create guarded by absence");

    let mut batch = Batch::new();
    batch
        .require(tree, key.as_slice(), None)
        .put(tree, key.as_slice(), b"v2".to_vec());
    expect_conflict(store, &batch, tree, "require absent on a present key");
    assert_value(
        store,
        tree,
        &key,
        Some(b"v1"),
        "unchanged after absent-conflict",
    );

    for wrong in [&b"v2"[..], b"v", b"v1\x00", b""] {
        let mut batch = Batch::new();
        batch
            .require(tree, key.as_slice(), Some(wrong.to_vec()))
            .put(tree, key.as_slice(), b"v2".to_vec());
        expect_conflict(store, &batch, tree, "require a different value");
        assert_value(store, tree, &key, Some(b"v1"), "unchanged after mismatch");
    }

    let mut batch = Batch::new();
    batch
        .require(tree, key.as_slice(), Some(b"v1".to_vec()))
        .put(tree, key.as_slice(), b"v2".to_vec());
    apply(store, &batch, "require the exact current value");
    assert_value(store, tree, &key, Some(b"v2"), "guarded update");

    // Precondition-only batches: a pure check.
    let mut batch = Batch::new();
    batch.require(tree, key.as_slice(), Some(b"v2".to_vec()));
    apply(store, &batch, "precondition-only batch that holds");
    let mut batch = Batch::new();
    batch.require(tree, witness.as_slice(), Some(b"x".to_vec()));
    expect_conflict(
        store,
        &batch,
        tree,
        "precondition-only batch on an absent key",
    );

    let mut batch = Batch::new();
    batch.delete(tree, key.as_slice());
    apply(store, &batch, "delete");
    let mut batch = Batch::new();
    batch
        .require(tree, key.as_slice(), Some(b"v2".to_vec()))
        .put(tree, witness.as_slice(), b"w".to_vec());
    expect_conflict(store, &batch, tree, "require a value on a deleted key");
    assert_value(store, tree, &witness, None, "no write after conflict");
    clear(store, &[tree], &ns("preconditions", b""));
}

/// A batch spanning several trees whose precondition fails writes nothing in any tree; with the
/// precondition fixed, every write lands.
pub fn batch_is_atomic_across_trees(store: &dyn Store) {
    let trees = [
        Tree::SignKeys,
        Tree::EncryptKeys,
        Tree::AsymmetricDecryptKeys,
        Tree::Meta,
        Tree::Grants,
        Tree::MacKeys,
        Tree::Audit,
    ];
    let key = ns("atomic", b"k");
    let guard = ns("atomic", b"guard");
    clear(store, &trees, &ns("atomic", b""));

    let mut setup = Batch::new();
    setup
        .put(Tree::Grants, key.as_slice(), b"old".to_vec())
        .put(Tree::MacKeys, guard.as_slice(), b"g1".to_vec());
    apply(store, &setup, "atomicity setup");

    let build = |mac_expected: &[u8], audit_expected: Option<Vec<u8>>| {
        let mut batch = Batch::new();
        batch
            .put(Tree::SignKeys, key.as_slice(), b"sign".to_vec())
            .put(Tree::EncryptKeys, key.as_slice(), b"encrypt".to_vec())
            .put(
                Tree::AsymmetricDecryptKeys,
                key.as_slice(),
                b"decrypt".to_vec(),
            )
            .put(Tree::Meta, key.as_slice(), b"meta".to_vec())
            .delete(Tree::Grants, key.as_slice())
            .require(Tree::MacKeys, guard.as_slice(), Some(mac_expected.to_vec()))
            .require(Tree::Audit, guard.as_slice(), audit_expected)
            .put(Tree::MacKeys, guard.as_slice(), b"g2".to_vec());
        batch
    };
    let unchanged = |what: &str| {
        for tree in [
            Tree::SignKeys,
            Tree::EncryptKeys,
            Tree::AsymmetricDecryptKeys,
            Tree::Meta,
        ] {
            assert_value(store, tree, &key, None, what);
        }
        assert_value(store, Tree::Grants, &key, Some(b"old"), what);
        assert_value(store, Tree::MacKeys, &guard, Some(b"g1"), what);
    };

    expect_conflict(
        store,
        &build(b"wrong", None),
        Tree::MacKeys,
        "first precondition fails",
    );
    unchanged("nothing written after a failed first precondition");
    expect_conflict(
        store,
        &build(b"g1", Some(b"x".to_vec())),
        Tree::Audit,
        "second precondition fails",
    );
    unchanged("nothing written after a failed second precondition");

    apply(
        store,
        &build(b"g1", None),
        "atomic batch with holding preconditions",
    );
    assert_value(store, Tree::SignKeys, &key, Some(b"sign"), "atomic commit");
    assert_value(
        store,
        Tree::EncryptKeys,
        &key,
        Some(b"encrypt"),
        "atomic commit",
    );
    assert_value(
        store,
        Tree::AsymmetricDecryptKeys,
        &key,
        Some(b"decrypt"),
        "atomic commit",
    );
    assert_value(store, Tree::Meta, &key, Some(b"meta"), "atomic commit");
    assert_value(store, Tree::Grants, &key, None, "atomic commit");
    assert_value(store, Tree::MacKeys, &guard, Some(b"g2"), "atomic commit");
    clear(store, &trees, &ns("atomic", b""));
}

/// Several threads doing read-modify-write increments guarded by `require`, retrying on
/// `Conflict`, end with the exact total, and every committed value was committed exactly once
/// (each commit also logs its new counter value in a second tree).
pub fn concurrent_appliers_lose_no_updates(store: &dyn Store) {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 25;
    const MAX_ATTEMPTS: usize = 100_000;
    let name = store.name();
    let counter = ns("concurrency", b"counter");
    let log = ns("concurrency", b"log/");
    clear(store, &[Tree::Meta, Tree::Audit], &ns("concurrency", b""));

    let increment = |thread: u64| {
        for attempt in 0.. {
            assert!(
                attempt < MAX_ATTEMPTS,
                "[{name}] increment still conflicting after {MAX_ATTEMPTS} attempts"
            );
            let current = get(store, Tree::Meta, &counter);
            let value = match current.as_deref() {
                None => 0,
                Some(bytes) => u64::from_be_bytes(
                    bytes
                        .try_into()
                        .unwrap_or_else(|_| panic!("[{name}] counter is not 8 bytes")),
                ),
            };
            let next = (value + 1).to_be_bytes();
            let mut batch = Batch::new();
            batch
                .require(Tree::Meta, counter.as_slice(), current)
                .put(Tree::Meta, counter.as_slice(), next.to_vec())
                .put(
                    Tree::Audit,
                    [log.as_slice(), &next].concat(),
                    thread.to_be_bytes().to_vec(),
                );
            match store.apply(&batch) {
                Ok(()) => return,
                Err(StoreError::Conflict { tree: Tree::Meta }) => {}
                Err(e) => panic!("[{name}] concurrent increment failed: {e}"),
            }
        }
    };
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            scope.spawn(move || {
                for _ in 0..PER_THREAD {
                    increment(thread);
                }
            });
        }
    });

    let total = THREADS * PER_THREAD;
    let final_value = get(store, Tree::Meta, &counter)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(u64::from_be_bytes);
    assert_eq!(
        final_value,
        Some(total),
        "[{name}] counter after {total} concurrent guarded increments (lost update?)"
    );
    let logged: Vec<Vec<u8>> = scan(store, Tree::Audit, &log)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let expected: Vec<Vec<u8>> = (1..=total)
        .map(|n| [log.as_slice(), &n.to_be_bytes()].concat())
        .collect();
    assert!(
        logged == expected,
        "[{name}] {} commits logged for {total} increments: some batch applied partly or twice",
        logged.len()
    );
    clear(store, &[Tree::Meta, Tree::Audit], &ns("concurrency", b""));
}

/// Data written through `apply` is visible after the store is dropped and reopened from the same
/// location, including deletes and a guarded update made after the first reopen.
///
/// `open` must return a fresh handle on the same persistent location each time; each handle is
/// dropped before the next `open`.
pub fn durable_after_reopen(open: &dyn Fn() -> Box<dyn Store>) {
    let key = ns("durable", b"k");
    let gone = ns("durable", b"gone");
    let big: Vec<u8> = (0..64 * 1024_usize)
        .map(|i| u8::try_from(i % 253).unwrap_or(0))
        .collect();
    let value = |tree: Tree| format!("{}-durable", tree.name()).into_bytes();

    {
        let store = open();
        clear(&*store, &Tree::ALL, &ns("durable", b""));
        let mut batch = Batch::new();
        for tree in Tree::ALL {
            batch.put(tree, key.as_slice(), value(tree));
        }
        batch.put(Tree::Seal, gone.as_slice(), big.clone()).put(
            Tree::Audit,
            gone.as_slice(),
            b"x".to_vec(),
        );
        apply(&*store, &batch, "durable writes");
        let mut batch = Batch::new();
        batch.delete(Tree::Audit, gone.as_slice());
        apply(&*store, &batch, "durable delete");
    }
    {
        let store = open();
        for tree in Tree::ALL {
            assert_value(&*store, tree, &key, Some(&value(tree)), "after reopen");
        }
        assert_value(
            &*store,
            Tree::Seal,
            &gone,
            Some(&big),
            "64 KiB value after reopen",
        );
        assert_value(&*store, Tree::Audit, &gone, None, "delete after reopen");
        let mut batch = Batch::new();
        batch
            .require(Tree::Meta, key.as_slice(), Some(value(Tree::Meta)))
            .put(Tree::Meta, key.as_slice(), b"updated".to_vec());
        apply(&*store, &batch, "guarded update after reopen");
    }
    {
        let store = open();
        assert_value(
            &*store,
            Tree::Meta,
            &key,
            Some(b"updated"),
            "after second reopen",
        );
        assert_value(
            &*store,
            Tree::Seal,
            &key,
            Some(&value(Tree::Seal)),
            "after second reopen",
        );
        clear(&*store, &Tree::ALL, &ns("durable", b""));
    }
}

/// Runs every check that needs no reopen, in sequence on one store.
/// A time base for one nonce check, later than every expiry an earlier check in this process
/// wrote (each writes expiries under `base + 10_000`): at its start, whatever earlier checks
/// recorded has expired, so checks sharing one store do not see each other's entries as live.
fn nonce_time_base() -> u64 {
    static RUN: AtomicU64 = AtomicU64::new(0);
    (1 << 40) + RUN.fetch_add(1, Ordering::SeqCst) * 100_000
}

#[track_caller]
fn record(store: &dyn Store, scope: &[u8], expires_at: u64, now: u64, max: u64) -> NonceOutcome {
    match store.record_nonce(scope, expires_at, now, max) {
        Ok(outcome) => outcome,
        Err(e) => panic!("[{}] record_nonce failed: {e}", store.name()),
    }
}

/// A nonce scope is new once, seen until its expiry, new again from its expiry on; scopes are
/// apart; of many racing callers exactly one is told `New`; malformed scopes are refused.
pub fn nonces_are_recorded_once(store: &dyn Store) {
    let name = store.name();
    let base = nonce_time_base();
    let max = 1_000_000;
    let one = ns("nonces", b"one");
    let two = ns("nonces", b"two");
    assert_eq!(
        record(store, &one, base + 300, base, max),
        NonceOutcome::New,
        "[{name}] first"
    );
    assert_eq!(
        record(store, &one, base + 300, base + 10, max),
        NonceOutcome::Seen,
        "[{name}] the same scope again"
    );
    assert_eq!(
        record(store, &two, base + 300, base + 10, max),
        NonceOutcome::New,
        "[{name}] another scope"
    );
    assert_eq!(
        record(store, &one, base + 9_000, base + 299, max),
        NonceOutcome::Seen,
        "[{name}] a second before expiry"
    );
    assert_eq!(
        record(store, &one, base + 600, base + 300, max),
        NonceOutcome::New,
        "[{name}] at its expiry, the entry counts as absent"
    );
    assert_eq!(
        record(store, &one, base + 600, base + 301, max),
        NonceOutcome::Seen,
        "[{name}] recorded again, with the new expiry"
    );

    for scope in [Vec::new(), vec![b'x'; MAX_NONCE_SCOPE + 1]] {
        assert!(
            store.record_nonce(&scope, base + 300, base, max).is_err(),
            "[{name}] a scope of {} bytes must be refused",
            scope.len()
        );
    }

    let raced = ns("nonces", b"raced");
    let winners = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                if record(store, &raced, base + 300, base + 20, max) == NonceOutcome::New {
                    winners.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(
        winners.load(Ordering::SeqCst),
        1,
        "[{name}] of eight racing callers exactly one is told the nonce is new"
    );
}

/// At its bound a store refuses new scopes (`Full`) without evicting a live one, still answers
/// `Seen` for those it holds, and makes room again once entries expire.
pub fn nonces_are_bounded(store: &dyn Store) {
    let name = store.name();
    let base = nonce_time_base();
    let max = 3;
    for scope in [b"a", b"b", b"c"] {
        assert_eq!(
            record(store, &ns("bounded", scope), base + 100, base, max),
            NonceOutcome::New,
            "[{name}] below the bound"
        );
    }
    let extra = ns("bounded", b"d");
    for attempt in 0..2 {
        assert_eq!(
            record(store, &extra, base + 100, base + 1 + attempt, max),
            NonceOutcome::Full,
            "[{name}] at the bound a new scope is refused"
        );
    }
    assert_eq!(
        record(store, &ns("bounded", b"a"), base + 100, base + 5, max),
        NonceOutcome::Seen,
        "[{name}] a full store evicted nothing"
    );
    assert_eq!(
        record(store, &extra, base + 200, base + 100, max),
        NonceOutcome::New,
        "[{name}] once the others expired there is room"
    );
    assert_eq!(
        record(store, &ns("bounded", b"e"), base + 200, base + 101, max),
        NonceOutcome::New,
        "[{name}] the expired entries were swept, not just the first"
    );
}

/// Nonces survive a reopen of the same persistent store until they expire.
///
/// `open` as for [`durable_after_reopen`].
pub fn nonces_survive_reopen(open: &dyn Fn() -> Box<dyn Store>) {
    let base = nonce_time_base();
    let scope = ns("nonces-durable", b"k");
    {
        let store = open();
        assert_eq!(
            record(&*store, &scope, base + 300, base, 10),
            NonceOutcome::New
        );
    }
    let store = open();
    let name = store.name();
    assert_eq!(
        record(&*store, &scope, base + 300, base + 1, 10),
        NonceOutcome::Seen,
        "[{name}] a nonce recorded before the reopen is seen after it"
    );
    assert_eq!(
        record(&*store, &scope, base + 600, base + 300, 10),
        NonceOutcome::New,
        "[{name}] and expires as before"
    );
}

pub fn run_all(store: &dyn Store) {
    round_trip(store);
    trees_are_isolated(store);
    prefix_scan_is_ordered(store);
    range_scan_is_bounded_and_ordered(store);
    many_keys_scan_in_order(store);
    large_values(store);
    delete_of_missing_key_is_ok(store);
    batch_ops_apply_in_order(store);
    empty_batch_is_a_no_op(store);
    preconditions(store);
    batch_is_atomic_across_trees(store);
    concurrent_appliers_lose_no_updates(store);
    nonces_are_recorded_once(store);
    nonces_are_bounded(store);
}

/// One `#[test]` per check for a backend, given `$with: fn(impl FnOnce(&dyn Store))` that builds
/// a fresh store and runs the check on it; separate tests name the failing behaviour directly.
/// Reached as [`conformance_tests!`](crate::store::conformance::conformance_tests) (exported at
/// the crate root only because `macro_rules!` cannot be exported from a module).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_tests {
    ($with:path) => {
        #[test]
        fn conformance_round_trip() {
            $with($crate::store::conformance::round_trip);
        }
        #[test]
        fn conformance_trees_are_isolated() {
            $with($crate::store::conformance::trees_are_isolated);
        }
        #[test]
        fn conformance_prefix_scan_is_ordered() {
            $with($crate::store::conformance::prefix_scan_is_ordered);
        }
        #[test]
        fn conformance_range_scan_is_bounded_and_ordered() {
            $with($crate::store::conformance::range_scan_is_bounded_and_ordered);
        }
        #[test]
        fn conformance_many_keys_scan_in_order() {
            $with($crate::store::conformance::many_keys_scan_in_order);
        }
        #[test]
        fn conformance_large_values() {
            $with($crate::store::conformance::large_values);
        }
        #[test]
        fn conformance_delete_of_missing_key_is_ok() {
            $with($crate::store::conformance::delete_of_missing_key_is_ok);
        }
        #[test]
        fn conformance_batch_ops_apply_in_order() {
            $with($crate::store::conformance::batch_ops_apply_in_order);
        }
        #[test]
        fn conformance_empty_batch_is_a_no_op() {
            $with($crate::store::conformance::empty_batch_is_a_no_op);
        }
        #[test]
        fn conformance_preconditions() {
            $with($crate::store::conformance::preconditions);
        }
        #[test]
        fn conformance_batch_is_atomic_across_trees() {
            $with($crate::store::conformance::batch_is_atomic_across_trees);
        }
        #[test]
        fn conformance_concurrent_appliers_lose_no_updates() {
            $with($crate::store::conformance::concurrent_appliers_lose_no_updates);
        }
        #[test]
        fn conformance_nonces_are_recorded_once() {
            $with($crate::store::conformance::nonces_are_recorded_once);
        }
        #[test]
        fn conformance_nonces_are_bounded() {
            $with($crate::store::conformance::nonces_are_bounded);
        }
        /// Also proves the checks clean up after themselves and can share one store.
        #[test]
        fn conformance_run_all_twice_on_one_store() {
            $with(|store: &dyn $crate::store::Store| {
                $crate::store::conformance::run_all(store);
                $crate::store::conformance::run_all(store);
            });
        }
    };
}
pub use crate::__store_conformance_tests as conformance_tests;
