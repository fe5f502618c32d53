//! The PostgreSQL store against a real server: the throwaway one `kms-test-postgres` starts for
//! this test process (or the one `KMS_TEST_POSTGRES_URL` names). Every test opens its own freshly
//! named schema and drops it when done, also when the test fails, so tests running in parallel
//! never share state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kms_core::store::{Batch, Store, StoreError, Tree, conformance};
use kms_test_postgres::{TempSchema, url};

use super::*;

/// A schema name no other test uses, dropped with its tables when the guard goes.
fn fresh_schema() -> (TempSchema, String) {
    let guard = TempSchema::new("kms_t");
    let name = guard.name().to_owned();
    (guard, name)
}

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        schema: schema.to_owned(),
        pool_size: 8,
        ..PostgresOptions::new(url())
    }
}

/// The first column of every row of `sql`, run outside any store.
fn admin_column(sql: &str) -> Vec<String> {
    kms_test_postgres::admin_sql(&url(), sql)
        .expect("admin SQL")
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect()
}

fn with_store(test: impl FnOnce(&dyn Store)) {
    let (_guard, schema) = fresh_schema();
    let store = PostgresStore::open(options(&schema)).expect("open the PostgreSQL store");
    test(&store);
}

conformance::conformance_tests!(with_store);

#[test]
fn durable_after_reopen() {
    let (_guard, schema) = fresh_schema();
    let open = || -> Box<dyn Store> {
        Box::new(PostgresStore::open(options(&schema)).expect("open the PostgreSQL store"))
    };
    conformance::durable_after_reopen(&open);
}

#[test]
fn nonces_survive_reopen() {
    let (_guard, schema) = fresh_schema();
    let open = || -> Box<dyn Store> {
        Box::new(PostgresStore::open(options(&schema)).expect("open the PostgreSQL store"))
    };
    conformance::nonces_survive_reopen(&open);
}

/// Two nodes on one database: of many callers racing on both with one nonce, exactly one is
/// told it is new, round after round; and a nonce one node recorded is a replay on the other.
#[test]
fn two_nodes_accept_a_nonce_once() {
    use kms_core::store::NonceOutcome;
    let (_guard, schema) = fresh_schema();
    let (a, b) = two_nodes(&schema);
    let now = 1_800_000_000;
    for round in 0..20u8 {
        let scope = vec![b'n', round];
        let winners = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..6u8 {
                let store: &dyn Store = if t % 2 == 0 { &a } else { &b };
                let scope = scope.clone();
                let winners = &winners;
                s.spawn(move || {
                    match store
                        .record_nonce(&scope, now + 300, now, 1_000_000)
                        .expect("record")
                    {
                        NonceOutcome::New => {
                            winners.fetch_add(1, Ordering::Relaxed);
                        }
                        NonceOutcome::Seen => {}
                        NonceOutcome::Full => panic!("far below the bound"),
                    }
                });
            }
        });
        assert_eq!(winners.load(Ordering::Relaxed), 1, "round {round}");
    }
    assert_eq!(
        a.record_nonce(b"one node", now + 300, now, 1_000_000)
            .expect("record"),
        NonceOutcome::New
    );
    assert_eq!(
        b.record_nonce(b"one node", now + 300, now + 1, 1_000_000)
            .expect("record"),
        NonceOutcome::Seen
    );
    // The sweep deletes expired rows whichever node wrote them.
    assert_eq!(
        b.record_nonce(b"later", now + 900, now + 600, 1_000_000)
            .expect("record"),
        NonceOutcome::New
    );
    let rows = admin_column(&format!("SELECT count(*) FROM \"{schema}\".replay_nonces"));
    assert_eq!(rows, vec!["1".to_owned()], "expired rows are deleted");
}

#[test]
fn successor_bounds_prefix_scans() {
    assert_eq!(successor(b""), None);
    assert_eq!(successor(b"\xff\xff"), None);
    assert_eq!(successor(b"a"), Some(b"b".to_vec()));
    assert_eq!(successor(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(successor(b"a\xfe\xff\xff"), Some(b"a\xff".to_vec()));
    assert_eq!(successor(b"\x00"), Some(b"\x01".to_vec()));
}

#[test]
fn schema_is_versioned_and_migrated_once() {
    let (_guard, schema) = fresh_schema();
    // Several nodes starting at once on an empty database: the advisory lock makes one migrate.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PostgresStore::open(options(&schema)).map(drop)))
            .collect();
        for h in handles {
            h.join().expect("thread").expect("concurrent open");
        }
    });
    let store = PostgresStore::open(options(&schema)).expect("reopen");
    assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
    let rows = admin_column(&format!(
        "SELECT version FROM \"{schema}\".schema_version ORDER BY version"
    ));
    let expected: Vec<String> = (1..=SCHEMA_VERSION).map(|v| v.to_string()).collect();
    assert_eq!(rows, expected, "each migration recorded exactly once");
    drop(store);

    // A database migrated by a newer build is refused rather than misread.
    admin_column(&format!(
        "INSERT INTO \"{schema}\".schema_version (version, description) VALUES ({}, 'future')",
        SCHEMA_VERSION + 1
    ));
    let err = PostgresStore::open(options(&schema)).expect_err("newer schema must be refused");
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[test]
fn urls_with_passwords_or_required_tls_are_refused() {
    for url in [
        "postgres://kms:hunter2@db.invalid:6543/test",
        "host=db.invalid user=kms password=hunter2 dbname=test",
    ] {
        assert_eq!(
            parse_url(url).unwrap_err(),
            UrlError::InlinePassword,
            "{url}"
        );
        let err = PostgresStore::open(PostgresOptions::new(url)).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("KMS_POSTGRES_PASSWORD"), "{shown}");
    }
    assert_eq!(
        parse_url("postgres://kms@127.0.0.1/test?sslmode=require").unwrap_err(),
        UrlError::TlsRequired
    );
    assert_eq!(
        parse_url("postgres://kms@127.0.0.1:notaport/test").unwrap_err(),
        UrlError::Malformed
    );
    assert!(parse_url("postgres://kms@db.invalid:6543/test?application_name=a").is_ok());
}

#[test]
fn schema_names_are_plain_identifiers() {
    for good in ["kms", "kms_prod_1", "_x"] {
        assert!(check_schema_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "KMS",
        "1kms",
        "kms\"; DROP",
        "a-b",
        "pg_kms",
        &"x".repeat(64),
    ] {
        let r = check_schema_name(bad);
        assert!(
            matches!(&r, Err(StoreError::Unavailable(m)) if m.starts_with("postgres_schema must be 1 to 63 characters")),
            "{bad}: {r:?}"
        );
    }
}

#[test]
fn debug_shows_neither_password_nor_bytes() {
    let mut opts = options("kms_debug");
    opts.password = Some(SecretBytes::copy_from_slice(b"hunter2"));
    let shown = format!("{opts:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");

    with_store(|store| {
        let mut batch = Batch::new();
        batch.put(Tree::Meta, b"k".to_vec(), b"secret".to_vec());
        store.apply(&batch).expect("apply");
    });
    let (_guard, schema) = fresh_schema();
    let mut opts = options(&schema);
    opts.password = Some(SecretBytes::copy_from_slice(b"hunter2"));
    // Trust auth ignores the password; the store must still never show it.
    let store = PostgresStore::open(opts).expect("open");
    let shown = format!("{store:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains(&schema), "{shown}");
}

#[test]
fn unreachable_database_fails_fast_with_unavailable() {
    let started = Instant::now();
    let opts = PostgresOptions {
        timeout: Duration::from_secs(2),
        ..PostgresOptions::new("postgres://postgres@127.0.0.1:1/test")
    };
    let err = PostgresStore::open(opts).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Two stores on one schema are two nodes: separate pools and runtimes, one database.
fn two_nodes(schema: &str) -> (PostgresStore, PostgresStore) {
    (
        PostgresStore::open(options(schema)).expect("node a"),
        PostgresStore::open(options(schema)).expect("node b"),
    )
}

#[test]
fn two_nodes_lose_no_guarded_updates() {
    const THREADS: u64 = 6;
    const PER_THREAD: u64 = 30;
    let (_guard, schema) = fresh_schema();
    let (a, b) = two_nodes(&schema);
    let counter = b"counter".to_vec();
    let conflicts = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store: &dyn Store = if t % 2 == 0 { &a } else { &b };
            let counter = &counter;
            let conflicts = &conflicts;
            s.spawn(move || {
                for _ in 0..PER_THREAD {
                    loop {
                        let current = store.get(Tree::Meta, counter).expect("get");
                        let n = current
                            .as_deref()
                            .map_or(0, |v| u64::from_be_bytes(v.try_into().expect("8 bytes")));
                        let mut batch = Batch::new();
                        batch
                            .require(Tree::Meta, counter.clone(), current)
                            .put(Tree::Meta, counter.clone(), (n + 1).to_be_bytes().to_vec())
                            .put(Tree::Audit, (n + 1).to_be_bytes().to_vec(), vec![1]);
                        match store.apply(&batch) {
                            Ok(()) => break,
                            Err(StoreError::Conflict { tree: Tree::Meta }) => {
                                conflicts.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("apply: {e}"),
                        }
                    }
                }
            });
        }
    });
    let total = THREADS * PER_THREAD;
    let value = a.get(Tree::Meta, &counter).expect("get").expect("present");
    assert_eq!(u64::from_be_bytes(value.try_into().expect("8")), total);
    assert_eq!(
        b.scan_prefix(Tree::Audit, b"").expect("scan").len(),
        usize::try_from(total).expect("fits"),
        "every increment committed exactly once"
    );
    assert!(
        conflicts.load(Ordering::Relaxed) > 0,
        "the test did not race (no conflicts seen)"
    );
}

#[test]
fn create_if_absent_has_one_winner_across_nodes() {
    let (_guard, schema) = fresh_schema();
    let (a, b) = two_nodes(&schema);
    for round in 0..20u8 {
        let key = vec![b'k', round];
        let winners = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..6u8 {
                let store: &dyn Store = if t % 2 == 0 { &a } else { &b };
                let key = key.clone();
                let winners = &winners;
                s.spawn(move || {
                    let mut batch = Batch::new();
                    batch.require(Tree::Namespaces, key.clone(), None).put(
                        Tree::Namespaces,
                        key,
                        vec![t],
                    );
                    match store.apply(&batch) {
                        Ok(()) => {
                            winners.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(StoreError::Conflict { tree }) => assert_eq!(tree, Tree::Namespaces),
                        Err(e) => panic!("apply: {e}"),
                    }
                });
            }
        });
        assert_eq!(winners.load(Ordering::Relaxed), 1, "round {round}");
    }
}

#[test]
fn a_blocked_call_fails_within_the_timeout_then_works() {
    let (_guard, schema) = fresh_schema();
    let store = PostgresStore::open(PostgresOptions {
        timeout: Duration::from_secs(1),
        ..options(&schema)
    })
    .expect("open");
    let lock = store.inner.lock_id(Tree::Meta, b"held");
    // Another session holds the key's lock in an open transaction.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (client, driver) = runtime.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&url(), NoTls)
            .await
            .expect("connect");
        let driver = tokio::spawn(conn);
        let tx = client.transaction().await.expect("begin");
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
            .await
            .expect("lock");
        // Leak the open transaction: it lives until the client drops.
        std::mem::forget(tx);
        (client, driver)
    });
    let started = Instant::now();
    let mut batch = Batch::new();
    batch.put(Tree::Meta, b"held".to_vec(), b"v".to_vec());
    let err = store.apply(&batch).expect_err("must not wait forever");
    let waited = started.elapsed();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    assert_eq!(store.get(Tree::Meta, b"held").expect("get"), None);
    drop(client);
    runtime.block_on(async {
        let _ = driver.await;
    });
    store
        .apply(&batch)
        .expect("works once the lock is released");
    assert_eq!(
        store.get(Tree::Meta, b"held").expect("get").as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn recovers_after_its_connections_are_terminated() {
    let (_guard, schema) = fresh_schema();
    let app = format!("kms-test-{schema}");
    let store = PostgresStore::open(PostgresOptions {
        url: format!("{}?application_name={app}", url()),
        ..options(&schema)
    })
    .expect("open");
    let mut batch = Batch::new();
    batch.put(Tree::Meta, b"k".to_vec(), b"v1".to_vec());
    store.apply(&batch).expect("apply");
    // Warm several pooled connections so that stale ones are what the next calls get.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| store.get(Tree::Meta, b"k").expect("get"));
        }
    });
    for round in 0..3 {
        let killed = admin_column(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
        ));
        assert!(
            !killed.is_empty(),
            "round {round}: no connection to terminate"
        );
        // The very next calls succeed: broken connections are dropped and the call is retried.
        assert_eq!(
            store
                .get(Tree::Meta, b"k")
                .expect("get after terminate")
                .as_deref(),
            Some(&b"v1"[..])
        );
        store.health().expect("health after terminate");
        let mut batch = Batch::new();
        batch
            .require(Tree::Meta, b"k".to_vec(), Some(b"v1".to_vec()))
            .put(Tree::Meta, b"k".to_vec(), b"v1".to_vec());
        store.apply(&batch).expect("apply after terminate");
    }
}

#[test]
fn usable_and_droppable_inside_an_async_runtime() {
    let (_guard, schema) = fresh_schema();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = Arc::new(PostgresStore::open(options(&schema)).expect("open"));
        let mut batch = Batch::new();
        batch.put(Tree::Meta, b"k".to_vec(), b"v".to_vec());
        store.apply(&batch).expect("apply inside a runtime");
        assert!(store.get(Tree::Meta, b"k").expect("get").is_some());
        // Dropped here, inside the runtime: must not panic.
    });
}

/// A batch whose COMMIT went unanswered is judged from what the database holds: its writes all
/// there (committed), its guarded key still at the expected value (not committed: retry), or
/// neither (unknown: the error stands). Shaped like the audit trail's append: records under new
/// keys, the tail guarded and moved.
#[test]
fn an_unanswered_commit_is_judged_from_the_rows() {
    let mut batch = Batch::new();
    batch.put(Tree::Audit, b"rec-7".to_vec(), b"seven".to_vec());
    batch.require(Tree::Audit, b"tail".to_vec(), Some(b"6".to_vec()));
    batch.put(Tree::Audit, b"tail".to_vec(), b"7".to_vec());
    batch.delete(Tree::Meta, b"scratch".to_vec());
    let row = |key: &[u8]| ("audit".to_owned(), key.to_vec());
    let held = |pairs: &[(&[u8], &[u8])]| -> HashMap<(String, Vec<u8>), Vec<u8>> {
        pairs.iter().map(|(k, v)| (row(k), v.to_vec())).collect()
    };
    assert_eq!(Tree::Audit.name(), "audit");
    // Committed: every write there, the deleted key absent.
    assert_eq!(
        landed(&batch, &held(&[(b"rec-7", b"seven"), (b"tail", b"7")])),
        Landed::Yes
    );
    // Not committed: the tail still expects what the batch moves it from.
    assert_eq!(landed(&batch, &held(&[(b"tail", b"6")])), Landed::No);
    // Another writer moved the tail on: it cannot be told.
    assert_eq!(
        landed(&batch, &held(&[(b"tail", b"8"), (b"rec-8", b"eight")])),
        Landed::Unknown
    );
    // The deleted key still there: not all writes landed.
    let mut with_scratch = held(&[(b"rec-7", b"seven"), (b"tail", b"7")]);
    with_scratch.insert(("meta".to_owned(), b"scratch".to_vec()), b"x".to_vec());
    assert_eq!(Tree::Meta.name(), "meta");
    assert_eq!(landed(&batch, &with_scratch), Landed::Unknown);
    // A batch with no guard on what it writes cannot be proved absent.
    let mut plain = Batch::new();
    plain.put(Tree::Audit, b"k".to_vec(), b"v".to_vec());
    assert_eq!(landed(&plain, &HashMap::new()), Landed::Unknown);
}
