//! Exactly-once scheduled rotation with three nodes: every node runs the rotation scheduler (here
//! every 20 ms, on one shared manual clock so that a day passes when the test says so), all three
//! find the same keys due at once, and each due rotation still happens once — enforced by the
//! database (a compare-and-swap under a lock), not by timing.

use std::sync::Arc;
use std::time::Duration;

use kms_core::clock::{Clock, DAY, ManualClock};
use kms_server::Settings;
use kms_tests::pg::{Cluster, NodeSpec};

use crate::common::{create_key, describe, encrypt, export_audit, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_rotate_each_due_key_exactly_once() {
    const KEYS: usize = 6;
    const ROUNDS: usize = 4;
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let settings = Settings {
        scheduler_interval: Duration::from_millis(20),
        ..Settings::default()
    };
    let c = Cluster::start_with(
        &[NodeSpec::default(); 3],
        settings,
        Arc::clone(&clock) as Arc<dyn Clock>,
    )
    .await;
    let mut keys = Vec::new();
    for i in 0..KEYS {
        keys.push(create_key(&c.nodes[i % 3].admin, Some(DAY)).await.unwrap());
    }
    for round in 1..=ROUNDS {
        clock.advance(DAY + 1);
        let want = round + 1;
        for key in &keys {
            until(Duration::from_secs(20), || async {
                (describe(&c.nodes[0].admin, key).await.versions.len() >= want).then_some(())
            })
            .await;
        }
        // Give every scheduler many more ticks: a double rotation would show now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for key in &keys {
            let versions: Vec<u32> = describe(&c.nodes[round % 3].admin, key)
                .await
                .versions
                .iter()
                .map(|v| v.version)
                .collect();
            let expected: Vec<u32> = (1..=u32::try_from(want).unwrap()).collect();
            assert_eq!(versions, expected, "round {round}, key {key}");
        }
    }
    // Every node encrypts under the newest version.
    for node in &c.nodes {
        let (_, version) = encrypt(&node.app, &keys[0]).await.unwrap();
        assert_eq!(version, u32::try_from(ROUNDS + 1).unwrap());
    }
    // The trail holds, per key and round, one successful scheduled rotation naming the version
    // it made, each preceded by the scheduler's intent (issue 18: audit before effect); nodes
    // that lost the race recorded ABORTED, never a second OK.
    let text = export_audit(&c.nodes[0].auditor).await;
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["type"] == "record" && l["operation"] == "Scheduler/RotateKey")
        .collect();
    for key in &keys {
        let of_key: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| r["key_id"] == key.as_str())
            .collect();
        let ok: Vec<u64> = of_key
            .iter()
            .filter(|r| r["outcome"] == "OK")
            .map(|r| r["key_version"].as_u64().unwrap())
            .collect();
        assert_eq!(
            ok,
            (2..=u64::try_from(ROUNDS + 1).unwrap()).collect::<Vec<_>>(),
            "{key}"
        );
        let intents = of_key
            .iter()
            .filter(|r| {
                r["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "intent"))
            })
            .count();
        let outcomes = of_key.len() - intents;
        assert_eq!(intents, outcomes, "{key}: every intent has its outcome");
        assert!(
            of_key
                .iter()
                .all(|r| r["principal"] == "kms-scheduler" && r["role"] == "scheduler"),
            "{key}"
        );
        assert!(
            of_key
                .iter()
                .filter(|r| r["flags"].as_array().is_none_or(|f| f.is_empty()))
                .all(|r| r["outcome"] == "OK" || r["outcome"] == "ABORTED"),
            "{key}: {of_key:#?}"
        );
    }
    c.stop().await;
}
