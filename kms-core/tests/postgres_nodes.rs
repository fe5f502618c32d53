//! Several KMS nodes on one PostgreSQL database, at the core (issue 9): each node is a `Kms`
//! over its own `PostgresStore` (own pool and runtime) on one schema, as separate processes
//! would be. Against the real server on 127.0.0.1:5432 (`KMS_TEST_POSTGRES_URL` overrides);
//! every test makes its own schema and drops it, also on failure.
//!
//! - Scheduled rotation and destruction run on every node and race, yet each due rotation and
//!   each due destruction happens exactly once (the nodes' own reports add up to the due count).
//! - Three audit writers on one database append to one chain that verifies, records from every
//!   node interleaved, none lost.

#![cfg(feature = "postgres")]
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
use kms_core::store::{PostgresOptions, PostgresStore, Store};
use kms_core::{CreateKeyRequest, Kms, KmsConfig, UnsealProgress};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("KMS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A fresh schema, dropped (with its tables) when this guard goes, on panic too.
struct Schema(String);

impl Schema {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Self(format!(
            "kms_core_{}_{}_{nanos:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn store(&self) -> Arc<dyn Store> {
        Arc::new(
            PostgresStore::open(PostgresOptions {
                schema: self.0.clone(),
                pool_size: 4,
                ..PostgresOptions::new(url())
            })
            .unwrap(),
        )
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(conn);
            client.batch_execute(&sql).await.unwrap();
            drop(client);
            let _ = driver.await;
        });
    }
}

/// `n` unsealed nodes on `schema`, sharing `clock`; node 0 initialised the store.
fn nodes(schema: &Schema, n: usize, clock: &Arc<ManualClock>) -> Vec<Arc<Kms>> {
    let open = || {
        Arc::new(Kms::with_clock(
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
fn race<T: Send>(nodes: &[Arc<Kms>], times: usize, work: impl Fn(&Kms) -> T + Sync) -> Vec<T> {
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
                        log.append_blocking(Event {
                            request_id: format!("{name}-{t}-{n}"),
                            principal: "app".into(),
                            role: "app".into(),
                            operation: "Crypto/Encrypt".into(),
                            outcome: "OK".into(),
                            ..Event::default()
                        })
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
