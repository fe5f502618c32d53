//! Request verification on two nodes (issue 22 item 3): the replay guard keeps its nonces in
//! the database every node shares, so a signed request verified on one node is a replay on the
//! other, and copies of one request sent to both nodes at once verify exactly once — decided by
//! the database's insert of the nonce, not by timing.
//!
//! The partner's key is an HMAC-SM3 key made in the KMS; the canonical string is written out
//! here from docs/FORMATS.md ("The signed request") and its tag made with `GenerateMac`. (That
//! an outside signer agrees with the KMS is `e2e/request_verify.rs`'s, with OpenSSL.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kms_proto::v1::{self, Purpose, RequestVerdict};
use kms_server::Settings;
use kms_tests::pg::Cluster;
use kms_tests::pki::subjects::APP_NS;
use kms_tests::world::Clients;
use sm3::Digest as _;
use tokio::sync::Barrier;

use crate::common::export_audit;

const BODY: &[u8] = br#"{"from":"6222020000000001","to":"6222020000000002","amount":"100.00"}"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HMAC-SM3 key in the app's namespace: the key the partner shares with the gateway.
async fn partner_key(admin: &Clients) -> String {
    admin
        .keys
        .clone()
        .create_key(v1::CreateKeyRequest {
            namespace: APP_NS.to_owned(),
            purpose: Purpose::Mac.into(),
            algorithm: "hmac-sm3".to_owned(),
            alias: "partner-mac".to_owned(),
            ..v1::CreateKeyRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .key_id
}

/// The partner's request `POST /v1/transfers` with `nonce`, stamped now and tagged by `key`
/// (`GenerateMac` through `app`).
async fn signed(app: &Clients, key: &str, nonce: &[u8]) -> v1::SignedRequest {
    let (method, path, ts) = ("POST", "/v1/transfers?channel=mobile", now());
    let canonical = format!(
        "KMS-REQUEST-V1\n{method}\n{path}\n{ts}\n{}\n{}",
        hex::encode(nonce),
        hex::encode(sm3::Sm3::digest(BODY))
    );
    let tag = app
        .crypto
        .clone()
        .generate_mac(v1::GenerateMacRequest {
            key: key.to_owned(),
            data: canonical.into_bytes(),
        })
        .await
        .unwrap()
        .into_inner()
        .mac;
    v1::SignedRequest {
        key: key.to_owned(),
        scheme: "hmac-sm3".to_owned(),
        signature: tag,
        timestamp: ts,
        nonce: nonce.to_vec(),
        method: method.to_owned(),
        path: path.to_owned(),
        body: BODY.to_vec(),
        body_digest: Vec::new(),
    }
}

async fn verify(app: &Clients, req: v1::SignedRequest) -> RequestVerdict {
    let out = app
        .requests
        .clone()
        .verify_request(req)
        .await
        .unwrap()
        .into_inner();
    assert!(out.reason.is_empty(), "{out:?}");
    out.verdict()
}

/// How many VerifyRequest records of the trail carry `flag`.
fn flagged(trail: &str, flag: &str) -> usize {
    trail
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["operation"] == "RequestVerification/VerifyRequest")
        .filter(|r| {
            r["flags"]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f == flag))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_verified_on_one_node_is_a_replay_on_the_other() {
    let c = Cluster::start(2, Settings::default()).await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let key = partner_key(&a.admin).await;
    let stamp = now();

    // A first, then B.
    let first = signed(&a.app, &key, format!("a-then-b-{stamp}").as_bytes()).await;
    assert_eq!(verify(&a.app, first.clone()).await, RequestVerdict::Ok);
    assert_eq!(
        verify(&b.app, first.clone()).await,
        RequestVerdict::Replayed
    );
    assert_eq!(verify(&a.app, first).await, RequestVerdict::Replayed);

    // B first, then A.
    let second = signed(&b.app, &key, format!("b-then-a-{stamp}").as_bytes()).await;
    assert_eq!(verify(&b.app, second.clone()).await, RequestVerdict::Ok);
    assert_eq!(
        verify(&a.app, second.clone()).await,
        RequestVerdict::Replayed
    );
    assert_eq!(verify(&b.app, second).await, RequestVerdict::Replayed);

    // A forgery on A uses up no nonce anywhere: the genuine request then verifies on B, once.
    let third = signed(&a.app, &key, format!("forged-on-a-{stamp}").as_bytes()).await;
    let mut forged = third.clone();
    forged.body = br#"{"amount":"999999.00"}"#.to_vec();
    assert_eq!(verify(&a.app, forged).await, RequestVerdict::BadSignature);
    assert_eq!(verify(&b.app, third.clone()).await, RequestVerdict::Ok);
    assert_eq!(verify(&a.app, third).await, RequestVerdict::Replayed);

    // The one trail (written by both nodes) says the same.
    let trail = export_audit(&b.auditor).await;
    assert_eq!(flagged(&trail, "verified"), 3);
    assert_eq!(flagged(&trail, "replayed"), 5);
    assert_eq!(flagged(&trail, "bad-signature"), 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_of_one_request_sent_to_both_nodes_at_once_verify_exactly_once() {
    const ROUNDS: usize = 8;
    const COPIES: usize = 16;
    let c = Cluster::start(2, Settings::default()).await;
    let key = partner_key(&c.nodes[0].admin).await;
    let stamp = now();
    // Which node's copy verified, per round: both should win some over the rounds, which
    // shows the copies really overlapped (printed, not asserted: a scheduler may favour one).
    let mut winners = BTreeMap::<usize, usize>::new();
    for round in 0..ROUNDS {
        let req = signed(
            &c.nodes[round % 2].app,
            &key,
            format!("race-{round}-{stamp}").as_bytes(),
        )
        .await;
        let start = Arc::new(Barrier::new(COPIES));
        let mut tasks = Vec::new();
        for copy in 0..COPIES {
            // The first copy spawned goes to each node in turn, round by round.
            let node = (copy + round) % 2;
            let app = c.nodes[node].app.clone();
            let req = req.clone();
            let start = Arc::clone(&start);
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                (node, verify(&app, req).await)
            }));
        }
        let mut ok = Vec::new();
        let mut replayed = 0;
        for t in tasks {
            match t.await.unwrap() {
                (node, RequestVerdict::Ok) => ok.push(node),
                (_, RequestVerdict::Replayed) => replayed += 1,
                (node, other) => panic!("round {round}: node {node} answered {other:?}"),
            }
        }
        assert_eq!(ok.len(), 1, "round {round}: OK on nodes {ok:?}");
        assert_eq!(replayed, COPIES - 1, "round {round}");
        *winners.entry(ok[0]).or_default() += 1;
    }
    println!("{ROUNDS} rounds of {COPIES} copies over 2 nodes; rounds won by node: {winners:?}");

    let trail = export_audit(&c.nodes[1].auditor).await;
    assert_eq!(flagged(&trail, "verified"), ROUNDS);
    assert_eq!(flagged(&trail, "replayed"), ROUNDS * (COPIES - 1));
    c.stop().await;
}
