//! Dual control over the API (issue 18, item 2): a covered operation files a request on its
//! first call; other administrators approve or reject it; the quorum runs it once, as its
//! requester; a backup is released to its requester once; requests expire; every step is in the
//! audit trail under the request's id.

use std::sync::Arc;
use std::time::Duration;

use kms_core::clock::{Clock, ManualClock};
use kms_core::store::{MemoryStore, Store};
use kms_core::{KmsConfig, Quorum, Sensitive, System};
use kms_proto::v1::{self, Purpose};
use kms_server::Settings;
use kms_tests::pki::Pki;
use kms_tests::pki::subjects::{ADMIN, APP_NS, AUDITOR};
use kms_tests::server::TestServer;
use kms_tests::world::Clients;
use tonic::{Code, Status};

const B: &str = "spiffe://kms.test/admin-b";
const C: &str = "spiffe://kms.test/admin-c";
/// How long a request waits in these tests.
const TTL: u64 = 3600;

/// A server under dual control (`approvals` of every covered operation) with admins A (the
/// initial one), B and C, an auditor, and a manual clock.
struct Quorate {
    clock: Arc<ManualClock>,
    server: TestServer,
    a: Clients,
    b: Clients,
    c: Clients,
    auditor: Clients,
}

impl Quorate {
    async fn start(approvals: u8) -> Self {
        let pki = Pki::new();
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let config = KmsConfig {
            quorum: Quorum::new(approvals, &Sensitive::ALL, Duration::from_secs(TTL)).unwrap(),
            ..KmsConfig::default()
        };
        let kms = Arc::new(System::with_clock(
            store,
            config,
            Arc::clone(&clock) as Arc<dyn Clock>,
        ));
        let init = kms.init(1, 1, ADMIN).unwrap();
        kms.unseal_with(&init.shares[0]).unwrap();
        let settings = Settings {
            scheduler_interval: Duration::from_millis(50),
            ..Settings::default()
        };
        let server = TestServer::start_with_kms(&pki, kms, settings).await;
        let (b_id, c_id) = (
            pki.ca.client_uri(B, "admin-b"),
            pki.ca.client_uri(C, "admin-c"),
        );
        let a = Clients::connect(&server, &pki, &pki.admin).await;
        let b = Clients::connect(&server, &pki, &b_id).await;
        let c = Clients::connect(&server, &pki, &c_id).await;
        let auditor = Clients::connect(&server, &pki, &pki.auditor).await;
        add(&a, AUDITOR, "auditor").await.unwrap();
        Self {
            clock,
            server,
            a,
            b,
            c,
            auditor,
        }
    }

    async fn key(&self) -> String {
        self.a
            .keys
            .clone()
            .create_key(v1::CreateKeyRequest {
                namespace: APP_NS.to_owned(),
                purpose: Purpose::Encrypt.into(),
                algorithm: "sm4-gcm".to_owned(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap()
            .key_id
    }

    async fn state(&self, key: &str) -> i32 {
        self.a
            .keys
            .clone()
            .describe_key(v1::KeyRequest {
                key: key.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap()
            .state
    }

    async fn list(&self, id: &str) -> v1::ApprovalInfo {
        let mut all = self
            .auditor
            .keys
            .clone()
            .list_approvals(v1::ListApprovalsRequest { id: id.to_owned() })
            .await
            .unwrap()
            .into_inner()
            .approvals;
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }
}

async fn add(who: &Clients, subject: &str, role: &str) -> Result<v1::PrincipalInfo, Status> {
    who.keys
        .clone()
        .add_principal(v1::AddPrincipalRequest {
            subject: subject.to_owned(),
            role: role.to_owned(),
            namespace: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn approve(who: &Clients, id: &str, digest: &str) -> Result<v1::ApprovalInfo, Status> {
    who.keys
        .clone()
        .approve(v1::ApproveRequest {
            id: id.to_owned(),
            digest: digest.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn destroy(who: &Clients, key: &str) -> Result<v1::KeyResponse, Status> {
    who.keys
        .clone()
        .schedule_key_destruction(v1::ScheduleKeyDestructionRequest {
            key: key.to_owned(),
            pending_days: 7,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The request a refusal filed: FAILED_PRECONDITION, the id in the message and the metadata.
fn filed<T: std::fmt::Debug>(result: Result<T, Status>) -> String {
    let s = result.expect_err("a covered operation must not run on one administrator's call");
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    let id = s
        .metadata()
        .get("kms-approval-id")
        .and_then(|v| v.to_str().ok())
        .expect("kms-approval-id metadata")
        .to_owned();
    assert!(
        s.message().contains(&format!("pending request {id}"))
            && s.message().contains(&format!("`kms approve {id}`")),
        "{s:?}"
    );
    id
}

fn refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, part: &str) {
    let s = result.expect_err(part);
    assert_eq!(s.code(), code, "{s:?}");
    assert!(s.message().contains(part), "{part:?} in {s:?}");
}

async fn backup(who: &Clients, approval: Option<&str>) -> Result<Vec<u8>, Status> {
    let mut req = tonic::Request::new(v1::BackupRequest {});
    if let Some(id) = approval {
        req.metadata_mut()
            .insert("kms-approval-id", id.parse().unwrap());
    }
    let mut stream = who.system.clone().backup(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await? {
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

/// The audit trail's records, exported by the auditor.
async fn records(auditor: &Clients) -> Vec<serde_json::Value> {
    let mut stream = auditor
        .audit
        .clone()
        .export_audit(v1::ExportAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        text.push_str(&chunk.lines);
    }
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["type"] == "record")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_distinct_admins_runs_an_operation_once_as_its_requester() {
    let q = Quorate::start(3).await;
    // Bootstrap: A is the only administrator, so A adds B alone. With two, a third needs both
    // (the quorum never exceeds the administrators there are).
    add(&q.a, B, "admin").await.unwrap();
    let add_c = filed(add(&q.a, C, "admin").await);
    refused(
        approve(&q.a, &add_c, "").await,
        Code::PermissionDenied,
        "may not approve their own request",
    );
    let added = approve(&q.b, &add_c, "").await.unwrap();
    assert_eq!(added.state, "executed", "{added:?}");
    assert_eq!(added.result, format!("administrator {C} added"));

    // Three administrators: all three for a destruction.
    let key = q.key().await;
    let other = q.key().await;
    let id = filed(destroy(&q.a, &key).await);
    assert_eq!(
        filed(destroy(&q.a, &key).await),
        id,
        "the same call, the same request"
    );
    let other_id = filed(destroy(&q.a, &other).await);
    assert_ne!(other_id, id);
    let after_b = approve(&q.b, &id, "").await.unwrap();
    assert_eq!(
        (
            after_b.state.as_str(),
            after_b.approvers.as_slice(),
            after_b.needed
        ),
        ("pending", [B.to_owned()].as_slice(), 3)
    );
    refused(
        approve(&q.b, &id, "").await,
        Code::AlreadyExists,
        "approvals must come from distinct administrators",
    );
    assert_eq!(
        q.state(&key).await,
        v1::KeyState::Enabled as i32,
        "B twice is not C"
    );
    // The digest binds the approval to the parameters the approver reviewed.
    let digest = q.list(&id).await.digest;
    let other_digest = q.list(&other_id).await.digest;
    assert_ne!(digest, other_digest);
    refused(
        approve(&q.c, &id, &other_digest).await,
        Code::FailedPrecondition,
        "not the request you reviewed",
    );
    let done = approve(&q.c, &id, &digest).await.unwrap();
    assert_eq!(done.state, "executed", "{done:?}");
    assert!(done.result.contains("pending destruction"), "{done:?}");
    assert_eq!(done.key_id, key);
    assert_eq!(q.state(&key).await, v1::KeyState::PendingDestruction as i32);
    assert_eq!(
        q.state(&other).await,
        v1::KeyState::Enabled as i32,
        "only what was approved"
    );
    refused(
        approve(&q.c, &id, "").await,
        Code::FailedPrecondition,
        "is executed, no longer pending",
    );
    q.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_expired_requests_never_run_and_every_step_is_audited() {
    let q = Quorate::start(2).await;
    add(&q.a, B, "admin").await.unwrap();
    let key = q.key().await;

    let rejected = filed(
        q.a.keys
            .clone()
            .mark_compromised(v1::KeyRequest { key: key.clone() })
            .await,
    );
    let r =
        q.b.keys
            .clone()
            .reject(v1::RejectRequest {
                id: rejected.clone(),
                reason: "wrong key".to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        (r.state.as_str(), r.rejected_by.as_str(), r.result.as_str()),
        ("rejected", B, "wrong key")
    );
    refused(
        approve(&q.b, &rejected, "").await,
        Code::FailedPrecondition,
        "is rejected",
    );
    assert_eq!(q.state(&key).await, v1::KeyState::Enabled as i32);

    let expired = filed(
        q.a.keys
            .clone()
            .create_grant(v1::CreateGrantRequest {
                key: key.clone(),
                grantee_namespace: "ledger".to_owned(),
                operations: vec!["encrypt".to_owned()],
            })
            .await,
    );
    q.clock.advance(TTL + 1);
    // Listed as expired at once; the first to notice (the scheduler's next round, or this
    // approval) marks it, and records that once.
    assert_eq!(q.list(&expired).await.state, "expired");
    refused(
        approve(&q.b, &expired, "").await,
        Code::FailedPrecondition,
        "expired",
    );
    let grants =
        q.a.keys
            .clone()
            .list_grants(v1::ListGrantsRequest { key: key.clone() })
            .await
            .unwrap()
            .into_inner()
            .grants;
    assert!(grants.is_empty(), "{grants:?}");

    // A backup: released to its requester once.
    let b_up = filed(backup(&q.a, None).await);
    refused(
        backup(&q.a, Some(&b_up)).await,
        Code::FailedPrecondition,
        "is pending, not approved",
    );
    assert_eq!(approve(&q.b, &b_up, "").await.unwrap().state, "approved");
    refused(
        backup(&q.b, Some(&b_up)).await,
        Code::PermissionDenied,
        "another administrator's approval",
    );
    assert!(
        backup(&q.a, Some(&b_up))
            .await
            .unwrap()
            .starts_with(b"KMSB")
    );
    refused(
        backup(&q.a, Some(&b_up)).await,
        Code::FailedPrecondition,
        "is released, not approved",
    );

    // Executed, with every step under the request's id.
    let executed = filed(destroy(&q.a, &key).await);
    approve(&q.b, &executed, "").await.unwrap();

    let trail = records(&q.auditor).await;
    let steps = |id: &str| -> Vec<String> {
        trail
            .iter()
            .filter(|r| r["request_id"] == id)
            .map(|r| {
                let flags: Vec<&str> = r["flags"]
                    .as_array()
                    .map(|f| f.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                format!(
                    "{} {} {} [{}]",
                    r["principal"].as_str().unwrap(),
                    r["operation"].as_str().unwrap(),
                    r["outcome"].as_str().unwrap(),
                    flags.join(",")
                )
            })
            .collect()
    };
    assert_eq!(
        steps(&executed),
        [
            format!(
                "{ADMIN} KeyAdmin/ScheduleKeyDestruction FAILED_PRECONDITION [approval-requested]"
            ),
            format!("{B} KeyAdmin/Approve OK []"),
            format!("{ADMIN} KeyAdmin/ScheduleKeyDestruction UNKNOWN [intent,quorum-approved]"),
            format!("{ADMIN} KeyAdmin/ScheduleKeyDestruction OK [quorum-approved]"),
        ]
    );
    assert_eq!(
        steps(&rejected),
        [
            format!("{ADMIN} KeyAdmin/MarkCompromised FAILED_PRECONDITION [approval-requested]"),
            format!("{B} KeyAdmin/Reject OK []"),
        ]
    );
    assert_eq!(
        steps(&expired),
        [
            format!("{ADMIN} KeyAdmin/CreateGrant FAILED_PRECONDITION [approval-requested]"),
            "kms-scheduler KeyAdmin/CreateGrant DEADLINE_EXCEEDED [approval-expired]".to_owned(),
        ]
    );
    assert_eq!(
        steps(&b_up),
        [
            format!("{ADMIN} System/Backup FAILED_PRECONDITION [approval-requested]"),
            format!("{B} KeyAdmin/Approve OK []"),
            format!("{ADMIN} System/Backup OK [quorum-approved]"),
        ]
    );
    // The calls themselves are recorded by the audit layer as every RPC is, under their own
    // request ids.
    let calls = |op: &str, who: &str, outcome: &str| {
        trail
            .iter()
            .filter(|r| !r["request_id"].as_str().unwrap().starts_with("apr-"))
            .filter(|r| r["operation"] == op && r["principal"] == who && r["outcome"] == outcome)
            .count()
    };
    assert_eq!(calls("KeyAdmin/Approve", B, "OK"), 2);
    assert_eq!(calls("KeyAdmin/Reject", B, "OK"), 1);
    assert_eq!(
        calls(
            "KeyAdmin/ScheduleKeyDestruction",
            ADMIN,
            "FAILED_PRECONDITION"
        ),
        1
    );
    assert_eq!(calls("System/Backup", ADMIN, "OK"), 1);
    q.server.stop().await.unwrap();
}
