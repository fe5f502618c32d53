//! Several KMS nodes on one PostgreSQL database, at the core (issue 9): each node is a `Kms`
//! over its own `PostgresStore` (own pool and runtime) on one schema, as separate processes
//! would be. Against the throwaway server `kms-test-postgres` starts for this test process (or the
//! one `KMS_TEST_POSTGRES_URL` names); every test makes its own schema and drops it, also on
//! failure.
//!
//! - Scheduled rotation and destruction run on every node and race, yet each due rotation and
//!   each due destruction happens exactly once (the nodes' own reports add up to the due count).
//! - Three audit writers on one database append to one chain that verifies, records from every
//!   node interleaved, none lost.
//! - Two nodes archive the trail at once: each range goes to exactly one node's segment file,
//!   and the segments and a live export chain from the genesis; a segment larger than the
//!   database's lock table archives too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kms_core::alg::{KeySpec, Purpose};
use kms_core::audit::Event;
use kms_core::audit::writer::{AuditLog, CheckpointPolicy};
use kms_core::clock::{Clock, DAY, ManualClock};
use kms_core::keys::state::KeyState;
use kms_core::keys::{KeyId, KeyRef, Namespace};
use kms_core::store::Store;
use kms_core::{CreateKeyRequest, KmsConfig, TestKms, UnsealProgress};
use kms_store_postgres::{PostgresOptions, PostgresStore};
use kms_test_postgres::TempSchema;

/// A fresh schema on the test database, dropped (with its tables) when this guard goes, on
/// panic too.
struct Schema(TempSchema);

impl Schema {
    fn new() -> Self {
        Self(TempSchema::new("kms_core"))
    }

    fn store(&self) -> Arc<dyn Store> {
        Arc::new(
            PostgresStore::open(PostgresOptions {
                schema: self.0.name().to_owned(),
                pool_size: 4,
                ..PostgresOptions::new(self.0.url().to_owned())
            })
            .unwrap(),
        )
    }
}

/// `n` unsealed nodes on `schema`, sharing `clock`; node 0 initialised the store.
fn nodes(schema: &Schema, n: usize, clock: &Arc<ManualClock>) -> Vec<Arc<TestKms>> {
    let open = || {
        Arc::new(TestKms::with_clock(
            schema.store(),
            KmsConfig::default(),
            Arc::clone(clock) as Arc<dyn Clock>,
        ))
    };
    let first = open();
    let init = first.init(1, 1, "admin").unwrap();
    let mut all = vec![first];
    all.extend((1..n).map(|_| open()));
    for kms in &all {
        assert_eq!(
            kms.unseal_with(&init.shares[0]).unwrap(),
            UnsealProgress::Unsealed
        );
    }
    all
}

/// Every node runs `work` `times` times at once, in threads; returns each node's results.
fn race<T: Send>(
    nodes: &[Arc<TestKms>],
    times: usize,
    work: impl Fn(&TestKms) -> T + Sync,
) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .flat_map(|kms| (0..times).map(move |_| kms))
            .map(|kms| s.spawn(|| work(kms)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn scheduled_rotation_and_destruction_happen_exactly_once_across_three_nodes() {
    const KEYS: usize = 9;
    let schema = Schema::new();
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let nodes = nodes(&schema, 3, &clock);
    let admin = nodes[0].principal("admin").unwrap().unwrap();
    let ids: Vec<KeyId> = (0..KEYS)
        .map(|i| {
            nodes[i % 3]
                .create_key(
                    &admin,
                    CreateKeyRequest {
                        namespace: Namespace::new("app").unwrap(),
                        purpose: Purpose::Encrypt,
                        spec: KeySpec::Sm4Gcm,
                        alias: None,
                        rotation_period: Some(DAY),
                        description: String::new(),
                    },
                )
                .unwrap()
                .id
        })
        .collect();
    let versions = |id: KeyId| {
        nodes[0]
            .describe_key(&admin, &KeyRef::Id(id))
            .unwrap()
            .versions
            .len()
    };

    for round in 1..=3 {
        // Not due yet: nothing happens, however often every node looks.
        let early: usize = race(&nodes, 2, |kms| kms.rotate_due().unwrap().len())
            .iter()
            .sum();
        assert_eq!(early, 0, "round {round}: rotated before due");
        clock.advance(DAY + 1);
        // Two threads per node, each calling rotate_due three times, all at once.
        let rotated: usize = race(&nodes, 2, |kms| {
            (0..3)
                .map(|_| kms.rotate_due().unwrap().len())
                .sum::<usize>()
        })
        .iter()
        .sum();
        assert_eq!(
            rotated, KEYS,
            "round {round}: each due rotation exactly once"
        );
        for id in &ids {
            assert_eq!(versions(*id), round + 1, "round {round}: key {id}");
        }
    }

    let doomed = &ids[..4];
    for id in doomed {
        nodes[1]
            .schedule_destruction(&admin, &KeyRef::Id(*id), Some(7))
            .unwrap();
    }
    clock.advance(8 * DAY);
    let destroyed: Vec<Vec<KeyId>> = race(&nodes, 2, |kms| kms.destroy_due().unwrap());
    let mut all: Vec<KeyId> = destroyed.into_iter().flatten().collect();
    all.sort_unstable();
    let mut expected = doomed.to_vec();
    expected.sort_unstable();
    assert_eq!(all, expected, "each due destruction exactly once");
    for id in doomed {
        let info = nodes[2].describe_key(&admin, &KeyRef::Id(*id)).unwrap();
        assert_eq!(info.state, KeyState::Destroyed);
        assert!(info.versions.iter().all(|v| v.destroyed));
    }
    // Destroyed keys are no longer due for rotation, the rest still rotate once each.
    clock.advance(DAY);
    let rotated: usize = race(&nodes, 2, |kms| kms.rotate_due().unwrap().len())
        .iter()
        .sum();
    assert_eq!(rotated, KEYS - doomed.len());
}

#[test]
fn three_audit_writers_on_one_database_make_one_verifiable_chain() {
    const PER_WRITER: usize = 60;
    const THREADS_PER_WRITER: usize = 3;
    let schema = Schema::new();
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let nodes = nodes(&schema, 3, &clock);
    let logs: Vec<(String, AuditLog)> = nodes
        .iter()
        .enumerate()
        .map(|(i, kms)| {
            let name = format!("node{i}");
            let log = AuditLog::start(
                Arc::clone(kms.store()),
                &name,
                kms.audit_signer(),
                CheckpointPolicy {
                    every_records: 25,
                    every: Duration::from_secs(60),
                },
            );
            (name, log)
        })
        .collect();
    std::thread::scope(|s| {
        for (name, log) in &logs {
            for t in 0..THREADS_PER_WRITER {
                s.spawn(move || {
                    for n in 0..PER_WRITER / THREADS_PER_WRITER {
                        log.append_blocking(encrypt_event(format!("{name}-{t}-{n}")))
                            .expect("a contended write must be retried, not refused");
                    }
                });
            }
        }
    });
    let text = logs[1].1.export().unwrap();
    for (_, log) in &logs {
        log.stop();
    }
    let public = nodes[2].audit_public_key().unwrap().public_key;
    let verified = kms_core::audit::verify(&text, &public).unwrap();
    let expected: BTreeMap<String, u64> = logs
        .iter()
        .map(|(name, _)| (name.clone(), PER_WRITER as u64))
        .collect();
    assert_eq!(verified.records_by_node, expected);
    assert_eq!(verified.records, 3 * PER_WRITER as u64);
    assert!(verified.checkpoints >= 2, "{verified:?}");
}

/// Every segment file in `dirs`, as `(first, last, path)`, in chain order.
/// A successful app encryption's audit event.
/// Issue 18, item 4: the audit key rotated on one node and then another while three nodes write
/// one chain on one database. No rotation record reaches the writers here, so each hand-over
/// happens at some writer's next checkpoint, on whichever node gets there first: exactly once
/// per rotation, and the export verifies from the oldest version alone.
#[test]
fn audit_key_rotations_are_handed_over_once_across_three_writers() {
    const PER_ROUND: usize = 10;
    let schema = Schema::new();
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let nodes = nodes(&schema, 3, &clock);
    let admin = nodes[0].principal("admin").unwrap().unwrap();
    let audit = KeyRef::parse("kms-system:audit-signing", &Namespace::new("app").unwrap()).unwrap();
    let oldest = nodes[2].audit_public_key().unwrap().public_key;
    let logs: Vec<(String, AuditLog)> = nodes
        .iter()
        .enumerate()
        .map(|(i, kms)| {
            let name = format!("node{i}");
            let log = AuditLog::start(
                Arc::clone(kms.store()),
                &name,
                kms.audit_signer(),
                CheckpointPolicy {
                    every_records: 4,
                    every: Duration::from_secs(60),
                },
            );
            (name, log)
        })
        .collect();
    // Rounds of writing, after the first two of which node 0, then node 1, rotates the key.
    for (round, rotator) in [Some(&nodes[0]), Some(&nodes[1]), None]
        .into_iter()
        .enumerate()
    {
        std::thread::scope(|s| {
            for (name, log) in &logs {
                s.spawn(move || {
                    for n in 0..PER_ROUND {
                        log.append_blocking(encrypt_event(format!("{name}-{round}-{n}")))
                            .unwrap();
                    }
                });
            }
        });
        if let Some(kms) = rotator {
            kms.rotate_key(&admin, &audit).unwrap();
        }
    }
    let text = logs[2].1.export().unwrap();
    for (_, log) in &logs {
        log.stop();
    }
    let verified = kms_core::audit::verify(&text, &oldest).unwrap();
    let handed: Vec<(u32, u32)> = verified
        .transitions
        .iter()
        .map(|t| (t.from_version, t.to_version))
        .collect();
    assert_eq!(handed, [(1, 2), (2, 3)]);
    assert_eq!(verified.records, 3 * 3 * PER_ROUND as u64 + 2);
    assert_eq!(
        text.lines().last().map(|l| l.contains("\"key_version\":3")),
        Some(true)
    );
}

fn encrypt_event(request_id: String) -> Event {
    Event {
        request_id,
        principal: "app".into(),
        role: "app".into(),
        operation: "Crypto/Encrypt".into(),
        outcome: "OK".into(),
        ..Event::default()
    }
}

fn segment_files(dirs: &[&std::path::Path]) -> Vec<(u64, u64, std::path::PathBuf)> {
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if let Some((first, last)) = name
                .strip_prefix("audit-")
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.split_once('-'))
            {
                found.push((first.parse().unwrap(), last.parse().unwrap(), path));
            } else {
                panic!("unexpected file {name} in an archive directory");
            }
        }
    }
    found.sort();
    found
}

/// The records in the store, by seq.
fn hot_records(store: &dyn Store) -> Vec<u64> {
    store
        .scan_prefix(kms_core::store::Tree::Audit, b"r")
        .unwrap()
        .iter()
        .map(|(k, _)| u64::from_be_bytes(k[1..9].try_into().unwrap()))
        .collect()
}

/// Two nodes on one database, each writing the trail and each running its archiver into a
/// directory of its own (as on two machines), all at once: every range is archived by exactly
/// one node, so every record ends up in exactly one segment file or in the hot store, and the
/// segments of both nodes and a live export chain into one trail from the genesis.
#[test]
fn two_archivers_on_one_database_archive_every_record_exactly_once() {
    use kms_core::audit::archive::{ArchiveOutcome, ArchivePolicy};
    const PER_NODE: u64 = 180;
    const HOT: u64 = 40;
    let schema = Schema::new();
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let nodes = nodes(&schema, 2, &clock);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let logs: Vec<AuditLog> = nodes
        .iter()
        .enumerate()
        .map(|(i, kms)| {
            AuditLog::start(
                Arc::clone(kms.store()),
                &format!("node{i}"),
                kms.audit_signer(),
                CheckpointPolicy {
                    every_records: 9,
                    every: Duration::from_secs(60),
                },
            )
        })
        .collect();
    let won = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let archivers: Vec<_> = logs
        .iter()
        .zip(&dirs)
        .map(|(log, dir)| {
            let (won, lost) = (Arc::clone(&won), Arc::clone(&lost));
            log.start_archiver(
                ArchivePolicy {
                    dir: dir.path().join("audit"),
                    hot_records: HOT,
                    segment_records: 15,
                    every: Duration::from_millis(5),
                },
                Arc::new(move |outcome| match outcome {
                    Ok(ArchiveOutcome::Archived(_)) => {
                        won.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(ArchiveOutcome::LostRace) => {
                        lost.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(e) => panic!("archiving failed: {e}"),
                }),
            )
            .unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        for (i, log) in logs.iter().enumerate() {
            for t in 0..3 {
                s.spawn(move || {
                    for n in 0..PER_NODE / 3 {
                        log.append_blocking(encrypt_event(format!("node{i}-{t}-{n}")))
                            .unwrap();
                    }
                });
            }
        }
    });
    let store = nodes[0].store();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while hot_records(&**store).len() as u64 > HOT {
        assert!(
            std::time::Instant::now() < deadline,
            "the archivers did not catch up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for archiver in &archivers {
        archiver.stop();
    }

    let dir_paths: Vec<std::path::PathBuf> = dirs.iter().map(|d| d.path().join("audit")).collect();
    let files = segment_files(&dir_paths.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    assert_eq!(
        files.len(),
        won.load(Ordering::SeqCst),
        "one file per range won"
    );
    // Contiguous from record 1, each range once, over both nodes' directories.
    let mut next = 1;
    for (first, last, path) in &files {
        assert_eq!(
            *first,
            next,
            "{} does not follow record {}",
            path.display(),
            next - 1
        );
        assert_eq!(last - first + 1, 15);
        next = last + 1;
    }
    // The rest is in the store, and nothing archived is.
    let total = 2 * PER_NODE;
    assert_eq!(hot_records(&**store), (next..=total).collect::<Vec<_>>());

    let text = logs[1].export().unwrap();
    for log in &logs {
        log.stop();
    }
    let public = nodes[0].audit_public_key().unwrap().public_key;
    let mut named: Vec<(String, Box<dyn std::io::BufRead>)> = files
        .iter()
        .map(|(_, _, p)| {
            let reader: Box<dyn std::io::BufRead> =
                Box::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
            (p.display().to_string(), reader)
        })
        .collect();
    named.push(("export".into(), Box::new(text.as_bytes())));
    let verified =
        kms_core::audit::verify_files(named, &public, kms_core::audit::Start::Genesis).unwrap();
    assert!(verified.complete_from_genesis);
    assert_eq!((verified.records, verified.last_seq), (total, total));
    let by_node: BTreeMap<String, u64> = (0..2).map(|i| (format!("node{i}"), PER_NODE)).collect();
    assert_eq!(verified.records_by_node, by_node);
    eprintln!(
        "{} segments archived, {} runs lost a race to the other node",
        won.load(Ordering::SeqCst),
        lost.load(Ordering::SeqCst)
    );
}

/// A segment larger than PostgreSQL's shared lock table (64 locks per connection slot by
/// default, about 6,400, plus spare shared memory: one transaction taking 14,000 advisory locks
/// fails with "out of shared memory" on the test server). Archiving it must not delete the
/// segment's keys in one batch (one lock per key), so the records are deleted in small batches.
#[test]
fn a_segment_larger_than_the_lock_table_archives_on_postgres() {
    use kms_core::audit::archive::{ArchiveOutcome, ArchivePolicy};
    const RECORDS: u64 = 15_100;
    const SEGMENT: u64 = 15_000;
    let schema = Schema::new();
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let nodes = nodes(&schema, 1, &clock);
    let store = Arc::clone(nodes[0].store());
    let log = AuditLog::start(
        Arc::clone(&store),
        "node0",
        nodes[0].audit_signer(),
        CheckpointPolicy {
            every_records: 1000,
            every: Duration::from_secs(60),
        },
    );
    // Many callers at once, so that group commit writes them in a few hundred batches.
    std::thread::scope(|s| {
        for t in 0..50 {
            let log = &log;
            s.spawn(move || {
                for n in 0..RECORDS / 50 {
                    log.append_blocking(encrypt_event(format!("{t}-{n}")))
                        .unwrap();
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let policy = ArchivePolicy {
        dir: dir.path().to_owned(),
        hot_records: SEGMENT,
        segment_records: SEGMENT,
        every: Duration::from_secs(60),
    };
    let outcome = log.archive_once(&policy).unwrap();
    let ArchiveOutcome::Archived(segment) = outcome else {
        panic!("expected a segment, got {outcome:?}");
    };
    assert_eq!((segment.first, segment.last), (1, SEGMENT));
    assert_eq!(
        hot_records(&*store),
        (SEGMENT + 1..=RECORDS).collect::<Vec<_>>()
    );
    let public = nodes[0].audit_public_key().unwrap().public_key;
    let text = std::fs::read_to_string(&segment.path).unwrap();
    assert_eq!(
        kms_core::audit::verify(&text, &public).unwrap().records,
        SEGMENT
    );
    let export = log.export().unwrap();
    log.stop();
    let alone = kms_core::audit::verify(&export, &public).unwrap();
    assert_eq!(alone.anchor.map(|a| a.seq), Some(SEGMENT));
    assert_eq!(alone.records, RECORDS - SEGMENT);
}
