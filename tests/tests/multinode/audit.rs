//! Three nodes write one audit trail: each node's writer appends to the one chain in the
//! database (a lost race on its tail is retried, never an error), so the export from any node
//! verifies offline as a single chain, with each record naming the node that wrote it.

use kms_server::Settings;
use kms_tests::pg::Cluster;

use crate::common::{audit_public_key, create_key, encrypt, export_audit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_write_one_audit_trail_that_verifies() {
    const PER_NODE: usize = 25;
    let c = Cluster::start(3, Settings::default()).await;
    let key = create_key(&c.nodes[0].admin, None).await.unwrap();
    let mut tasks = Vec::new();
    for node in &c.nodes {
        for _ in 0..2 {
            let app = node.app.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..PER_NODE {
                    encrypt(&app, &key).await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let text = export_audit(&c.nodes[1].auditor).await;
    let public = audit_public_key(&c.nodes[2].auditor).await;
    let verified = kms_core::audit::verify(&text, &public).unwrap();
    println!(
        "{} records, {} checkpoints, by node: {:?}",
        verified.records, verified.checkpoints, verified.records_by_node
    );
    assert_eq!(
        verified.records_by_node.len(),
        3,
        "{:?}",
        verified.records_by_node
    );
    assert!(verified.records >= (3 * 2 * PER_NODE) as u64);
    assert!(
        verified
            .records_by_node
            .values()
            .all(|&n| n >= (2 * PER_NODE) as u64)
    );
    c.stop().await;
}
