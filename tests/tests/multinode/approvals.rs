//! Dual control with two nodes on one PostgreSQL database (issue 18, item 2): two
//! administrators each approve one request on both nodes at the same moment, round after round,
//! and each request runs exactly once; a released backup taken on both nodes at once is handed out once. Enforced
//! by the database (the request's compare-and-swap), not by timing.

use std::sync::Arc;

use kms_core::store::Store;
use kms_core::{KmsConfig, Quorum, Sensitive, System};
use kms_proto::v1;
use kms_server::Settings;
use kms_tests::pg::Schema;
use kms_tests::pki::Pki;
use kms_tests::pki::subjects::{ADMIN, AUDITOR};
use kms_tests::server::TestServer;
use kms_tests::world::Clients;
use tonic::{Code, Status};

use crate::common::{create_key, describe, export_audit};

const B: &str = "spiffe://kms.test/admin-b";
const C: &str = "spiffe://kms.test/admin-c";
const ROUNDS: usize = 16;

/// One node's clients: the three administrators.
struct Admins {
    a: Clients,
    b: Clients,
    c: Clients,
}

fn approval_id(s: &Status) -> String {
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    s.metadata()
        .get("kms-approval-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_owned()
}

async fn approve(who: &Clients, id: &str) -> Result<v1::ApprovalInfo, Status> {
    who.keys
        .clone()
        .approve(v1::ApproveRequest {
            id: id.to_owned(),
            digest: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn backup(who: &Clients, id: &str) -> Result<usize, Status> {
    let mut req = tonic::Request::new(v1::BackupRequest {});
    req.metadata_mut()
        .insert("kms-approval-id", id.parse().unwrap());
    let mut stream = who.system.clone().backup(req).await?.into_inner();
    let mut n = 0;
    while let Some(chunk) = stream.message().await? {
        n += chunk.data.len();
    }
    Ok(n)
}

/// Of two results, the successful one if either is (both succeeding is a double execution:
/// kept as an error to fail [`one_won`]).
fn first_ok<T: std::fmt::Debug>(x: Result<T, Status>, y: Result<T, Status>) -> Result<T, Status> {
    match (x, y) {
        (Ok(a), Ok(b)) => panic!("two approvals of one request both succeeded: {a:?} / {b:?}"),
        (Ok(a), Err(l)) | (Err(l), Ok(a)) => {
            assert!(
                matches!(l.code(), Code::FailedPrecondition | Code::AlreadyExists),
                "{l:?}"
            );
            Ok(a)
        }
        (Err(a), Err(b)) => {
            assert!(
                matches!(b.code(), Code::FailedPrecondition | Code::AlreadyExists),
                "{b:?}"
            );
            Err(a)
        }
    }
}

/// Of two racing calls, exactly one succeeded; the other was told the request had moved on.
fn one_won<T: std::fmt::Debug>(x: Result<T, Status>, y: Result<T, Status>, what: &str) -> T {
    let (won, lost) = match (x, y) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        (x, y) => panic!("{what}: exactly one must succeed: {x:?} / {y:?}"),
    };
    assert!(
        matches!(lost.code(), Code::FailedPrecondition | Code::AlreadyExists),
        "{what}: {lost:?}"
    );
    won
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_racing_on_two_nodes_run_each_request_exactly_once() {
    let schema = Schema::new();
    let pki = Pki::new();
    let config = KmsConfig {
        quorum: Quorum::new(2, &Sensitive::ALL, Quorum::DEFAULT_TTL).unwrap(),
        ..KmsConfig::default()
    };
    let mut kms = Vec::new();
    for i in 0..2 {
        let store = schema
            .open(schema.options(&format!("{}_n{i}", schema.name), None))
            .await;
        kms.push(Arc::new(System::open(store as Arc<dyn Store>, config)));
    }
    let init = kms[0].init(1, 1, ADMIN).unwrap();
    for k in &kms {
        k.unseal_with(&init.shares[0]).unwrap();
    }
    let mut servers = Vec::new();
    for k in &kms {
        servers.push(TestServer::start_with_kms(&pki, Arc::clone(k), Settings::default()).await);
    }
    let (b_id, c_id) = (
        pki.ca.client_uri(B, "admin-b"),
        pki.ca.client_uri(C, "admin-c"),
    );
    let mut nodes = Vec::new();
    for s in &servers {
        nodes.push(Admins {
            a: Clients::connect(s, &pki, &pki.admin).await,
            b: Clients::connect(s, &pki, &b_id).await,
            c: Clients::connect(s, &pki, &c_id).await,
        });
    }
    let auditor = Clients::connect(&servers[0], &pki, &pki.auditor).await;
    let add = |subject: &str, role: &str| v1::AddPrincipalRequest {
        subject: subject.to_owned(),
        role: role.to_owned(),
        namespace: String::new(),
    };
    let admin = &nodes[0].a;
    admin
        .keys
        .clone()
        .add_principal(add(AUDITOR, "auditor"))
        .await
        .unwrap();
    // The only administrator adds the second alone; the third needs both.
    admin
        .keys
        .clone()
        .add_principal(add(B, "admin"))
        .await
        .unwrap();
    let id = approval_id(
        &admin
            .keys
            .clone()
            .add_principal(add(C, "admin"))
            .await
            .unwrap_err(),
    );
    assert_eq!(approve(&nodes[1].b, &id).await.unwrap().state, "executed");

    let mut executed = Vec::new();
    for round in 0..ROUNDS {
        let key = create_key(admin, None).await.unwrap();
        let node = &nodes[round % 2];
        let id = approval_id(
            &node
                .a
                .keys
                .clone()
                .schedule_key_destruction(v1::ScheduleKeyDestructionRequest {
                    key: key.clone(),
                    pending_days: 7,
                })
                .await
                .unwrap_err(),
        );
        // Both other administrators, each on both nodes, at the same moment.
        let (w, x, y, z) = tokio::join!(
            approve(&nodes[0].b, &id),
            approve(&nodes[1].c, &id),
            approve(&nodes[1].b, &id),
            approve(&nodes[0].c, &id),
        );
        let (x, y) = (first_ok(w, x), first_ok(y, z));
        let won = one_won(x, y, &format!("round {round}"));
        assert_eq!(won.state, "executed", "round {round}: {won:?}");
        assert_eq!(won.approvers.len(), 1, "round {round}: {won:?}");
        assert_eq!(
            describe(admin, &key).await.state,
            v1::KeyState::PendingDestruction as i32
        );
        executed.push(id);
    }

    // A released backup taken on both nodes at once: handed out once.
    let id = approval_id(
        &nodes[0]
            .a
            .system
            .clone()
            .backup(v1::BackupRequest {})
            .await
            .map(drop)
            .unwrap_err(),
    );
    assert_eq!(approve(&nodes[1].b, &id).await.unwrap().state, "approved");
    let (x, y) = tokio::join!(backup(&nodes[0].a, &id), backup(&nodes[1].a, &id));
    assert!(one_won(x, y, "backup") > 0);

    // The trail (one chain, both nodes) holds, per request, one intent and one successful
    // outcome of the execution, each by the requester and under the request's id.
    let text = export_audit(&auditor).await;
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["type"] == "record")
        .collect();
    for id in &executed {
        let runs: Vec<(&str, &str)> = records
            .iter()
            .filter(|r| {
                r["request_id"] == id.as_str()
                    && r["operation"] == "KeyAdmin/ScheduleKeyDestruction"
                    && r["flags"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|x| x == "quorum-approved"))
            })
            .map(|r| {
                (
                    r["principal"].as_str().unwrap(),
                    r["outcome"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(runs, [(ADMIN, "UNKNOWN"), (ADMIN, "OK")], "{id}");
    }
    let released = records
        .iter()
        .filter(|r| r["request_id"] == id.as_str() && r["operation"] == "System/Backup")
        .filter(|r| r["outcome"] == "OK")
        .count();
    assert_eq!(released, 1, "one release record");

    drop((nodes, auditor));
    for s in servers {
        s.stop().await.unwrap();
    }
}
