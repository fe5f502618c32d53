//! What one node does, every other node sees: keys and aliases, ciphertexts, rotations, state
//! changes and grant removals. Key metadata (state, versions, grants, aliases, principals) is read
//! from the database on every request and never cached, so a change acknowledged by one node is
//! enforced by every other on its next request; the bound is 1 s and the tests hold the
//! nodes to it, printing what they measured.

use std::time::Duration;

use kms_proto::v1::{self, KeyState};
use kms_server::Settings;
use kms_tests::pg::Cluster;
use kms_tests::pki::subjects::OTHER_APP_NS;
use kms_tests::world::Clients;
use tonic::Code;

use crate::common::{SECRET, create_key, dec, describe, enc, encrypt, key_req, refused, until};

/// The bound the documentation states for a state change to reach every node.
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_and_its_ciphertexts_work_on_every_node() {
    let c = Cluster::start(3, Settings::default()).await;
    let key = create_key(&c.nodes[0].admin, None).await.unwrap();
    // An alias made on node 2 resolves on node 1.
    c.nodes[2]
        .admin
        .keys
        .clone()
        .create_alias(v1::CreateAliasRequest {
            key: key.clone(),
            alias: "orders".to_owned(),
        })
        .await
        .unwrap();
    for (i, from) in c.nodes.iter().enumerate() {
        let target = if i == 1 { "orders" } else { key.as_str() };
        let (ciphertext, version) = encrypt(&from.app, target).await.unwrap();
        assert_eq!(version, 1);
        for (j, to) in c.nodes.iter().enumerate() {
            let out = to
                .app
                .crypto
                .clone()
                .decrypt(dec(&ciphertext))
                .await
                .unwrap_or_else(|e| panic!("made on node {i}, decrypt on node {j}: {e}"))
                .into_inner();
            assert_eq!(out.plaintext, SECRET);
            assert_eq!(out.key_id, key);
        }
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_one_node_is_used_by_the_others_for_new_encryptions() {
    let c = Cluster::start(3, Settings::default()).await;
    let (a, b, other) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let key = create_key(&a.admin, None).await.unwrap();
    let (old, v1) = encrypt(&b.app, &key).await.unwrap();
    assert_eq!(v1, 1);
    let rotated = a
        .admin
        .keys
        .clone()
        .rotate_key(key_req(&key))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(rotated.versions.len(), 2);
    // The very next encryption on another node uses version 2.
    let (new, v2) = encrypt(&b.app, &key).await.unwrap();
    assert_eq!(v2, 2, "node B still encrypts under the old version");
    for ciphertext in [&old, &new] {
        let out = other
            .app
            .crypto
            .clone()
            .decrypt(dec(ciphertext))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.plaintext, SECRET);
    }
    assert_eq!(describe(&other.admin, &key).await.versions.len(), 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_compromise_and_grant_removal_on_one_node_hold_on_the_others_within_1s() {
    let c = Cluster::start(2, Settings::default()).await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let key = create_key(&a.admin, None).await.unwrap();
    let (before, _) = encrypt(&a.app, &key).await.unwrap();

    // Disable on B: A stops encrypting.
    b.admin
        .keys
        .clone()
        .disable_key(key_req(&key))
        .await
        .unwrap();
    let (_, took) = until(PROPAGATION_BOUND, || async {
        refused(encrypt(&a.app, &key).await, Code::FailedPrecondition)
    })
    .await;
    println!("disable on B refused on A after {took:?}");
    assert!(took < PROPAGATION_BOUND);
    a.admin
        .keys
        .clone()
        .enable_key(key_req(&key))
        .await
        .unwrap();
    encrypt(&b.app, &key)
        .await
        .expect("enabled on A, usable on B");

    // Compromise on B: A protects nothing new, still opens old data, flagged.
    b.admin
        .keys
        .clone()
        .mark_compromised(key_req(&key))
        .await
        .unwrap();
    let (_, took) = until(PROPAGATION_BOUND, || async {
        refused(encrypt(&a.app, &key).await, Code::FailedPrecondition)
    })
    .await;
    println!("compromise on B refused on A after {took:?}");
    assert!(took < PROPAGATION_BOUND);
    let opened = a
        .app
        .crypto
        .clone()
        .decrypt(dec(&before))
        .await
        .unwrap()
        .into_inner();
    assert!(opened.key_compromised);
    assert_eq!(
        describe(&a.admin, &key).await.state,
        KeyState::Compromised as i32
    );

    // A grant made on A is usable on B; revoked on B, it stops on A.
    let shared = create_key(&a.admin, None).await.unwrap();
    a.admin
        .keys
        .clone()
        .create_grant(v1::CreateGrantRequest {
            key: shared.clone(),
            grantee_namespace: OTHER_APP_NS.to_owned(),
            operations: vec!["encrypt".to_owned()],
        })
        .await
        .unwrap();
    let ledger_a = Clients::connect(&a.server, &c.pki, &c.pki.other_app).await;
    let ledger_b = Clients::connect(&b.server, &c.pki, &c.pki.other_app).await;
    ledger_b
        .crypto
        .clone()
        .encrypt(enc(&shared, SECRET))
        .await
        .expect("granted on A, used on B");
    b.admin
        .keys
        .clone()
        .revoke_grant(v1::RevokeGrantRequest {
            key: shared.clone(),
            grantee_namespace: OTHER_APP_NS.to_owned(),
        })
        .await
        .unwrap();
    let (_, took) = until(PROPAGATION_BOUND, || async {
        refused(
            ledger_a.crypto.clone().encrypt(enc(&shared, SECRET)).await,
            Code::NotFound,
        )
    })
    .await;
    println!("grant revoked on B refused on A after {took:?}");
    assert!(took < PROPAGATION_BOUND);
    c.stop().await;
}
