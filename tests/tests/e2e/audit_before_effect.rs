//! Audit before effect (issue 18 item 3), shown by failing the audit store at each step of a
//! state-changing call: when the intent record cannot be written nothing changes; when the
//! intent is written but the outcome cannot be, the change may have happened, and the trail
//! still holds its intent (outcome UNKNOWN) under the call's request id. No state change is ever
//! without a durable record.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use kms_core::audit::{Flag, Outcome, Record};
use kms_core::store::{Batch, Entry, MemoryStore, Store, StoreError, Tree};
use kms_core::{KmsConfig, System};
use kms_proto::v1;
use kms_server::Settings;
use kms_tests::pki::{Pki, subjects};
use kms_tests::server::TestServer;
use kms_tests::world::{Clients, holders, plain_shares, unseal_by_holders};
use tonic::{Code, Status};

/// A store that takes `fuse` more audit writes, then refuses them (negative: no limit).
/// Everything else passes through.
struct AuditFuse {
    inner: MemoryStore,
    fuse: AtomicI64,
}

impl Store for AuditFuse {
    fn name(&self) -> &'static str {
        "audit-fuse"
    }
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(tree, key)
    }
    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan_prefix(tree, prefix)
    }
    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.trees().contains(&Tree::Audit) {
            let left = self.fuse.load(Ordering::SeqCst);
            if left == 0 {
                return Err(StoreError::Unavailable(
                    "the audit disk is full (test)".into(),
                ));
            }
            if left > 0 {
                self.fuse.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl AuditFuse {
    fn records(&self) -> Vec<Record> {
        self.inner
            .scan_prefix(Tree::Audit, b"r")
            .unwrap()
            .iter()
            .filter_map(|(_, v)| serde_json::from_slice(v).ok())
            .collect()
    }
}

/// The state a call changes, read back through the API after the store is repaired.
#[derive(Clone, Copy, Debug)]
enum Step {
    RotateKey,
    DisableKey,
    MarkCompromised,
    ScheduleKeyDestruction,
    SetRotationPolicy,
    CreateAlias,
    AddPrincipal,
}

impl Step {
    const ALL: [Self; 7] = [
        Self::RotateKey,
        Self::DisableKey,
        Self::MarkCompromised,
        Self::ScheduleKeyDestruction,
        Self::SetRotationPolicy,
        Self::CreateAlias,
        Self::AddPrincipal,
    ];

    fn operation(self) -> &'static str {
        match self {
            Self::RotateKey => "KeyAdmin/RotateKey",
            Self::DisableKey => "KeyAdmin/DisableKey",
            Self::MarkCompromised => "KeyAdmin/MarkCompromised",
            Self::ScheduleKeyDestruction => "KeyAdmin/ScheduleKeyDestruction",
            Self::SetRotationPolicy => "KeyAdmin/SetRotationPolicy",
            Self::CreateAlias => "KeyAdmin/CreateAlias",
            Self::AddPrincipal => "KeyAdmin/AddPrincipal",
        }
    }

    async fn call(self, admin: &Clients, key: &str, tag: &str) -> Result<(), Status> {
        let mut keys = admin.keys.clone();
        let req = || v1::KeyRequest {
            key: key.to_owned(),
        };
        match self {
            Self::RotateKey => keys.rotate_key(req()).await.map(drop),
            Self::DisableKey => keys.disable_key(req()).await.map(drop),
            Self::MarkCompromised => keys.mark_compromised(req()).await.map(drop),
            Self::ScheduleKeyDestruction => keys
                .schedule_key_destruction(v1::ScheduleKeyDestructionRequest {
                    key: key.to_owned(),
                    pending_days: 7,
                })
                .await
                .map(drop),
            Self::SetRotationPolicy => keys
                .set_rotation_policy(v1::SetRotationPolicyRequest {
                    key: key.to_owned(),
                    rotation_period_seconds: Some(30 * 86_400),
                })
                .await
                .map(drop),
            Self::CreateAlias => keys
                .create_alias(v1::CreateAliasRequest {
                    key: key.to_owned(),
                    alias: format!("alias-{tag}"),
                })
                .await
                .map(drop),
            Self::AddPrincipal => keys
                .add_principal(v1::AddPrincipalRequest {
                    subject: format!("kms://auditor-{tag}"),
                    role: "auditor".into(),
                    namespace: String::new(),
                })
                .await
                .map(drop),
        }
    }

    /// Whether the call's effect is in the store.
    async fn happened(self, admin: &Clients, key: &str, tag: &str) -> bool {
        if let Self::AddPrincipal = self {
            let list = admin
                .keys
                .clone()
                .list_principals(v1::Empty {})
                .await
                .unwrap()
                .into_inner();
            let subject = format!("kms://auditor-{tag}");
            return list.principals.iter().any(|p| p.subject == subject);
        }
        let k = admin
            .keys
            .clone()
            .describe_key(v1::KeyRequest {
                key: key.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        match self {
            Self::RotateKey => k.versions.len() == 2,
            Self::DisableKey => k.state() == v1::KeyState::Disabled,
            Self::MarkCompromised => k.state() == v1::KeyState::Compromised,
            Self::ScheduleKeyDestruction => k.state() == v1::KeyState::PendingDestruction,
            Self::SetRotationPolicy => k.rotation_period_seconds == Some(30 * 86_400),
            Self::CreateAlias => k.aliases.contains(&format!("alias-{tag}")),
            Self::AddPrincipal => unreachable!("handled above"),
        }
    }
}

struct Rig {
    store: Arc<AuditFuse>,
    server: TestServer,
    admin: Clients,
}

async fn rig() -> Rig {
    let pki = Pki::new();
    let store = Arc::new(AuditFuse {
        inner: MemoryStore::new(),
        fuse: AtomicI64::new(-1),
    });
    let kms = Arc::new(System::open(
        Arc::clone(&store) as Arc<dyn Store>,
        KmsConfig::default(),
    ));
    let server = TestServer::start_with_kms(&pki, kms, Settings::default()).await;
    let admin = Clients::connect(&server, &pki, &pki.admin).await;
    let custodian = Clients::connect(&server, &pki, &pki.custodian).await;
    let init = admin
        .system
        .clone()
        .init(v1::InitRequest {
            threshold: 2,
            holders: holders(),
            ..v1::InitRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(init.admin_subject, subjects::ADMIN);
    unseal_by_holders(&plain_shares(&init), &admin, &custodian).await;
    Rig {
        store,
        server,
        admin,
    }
}

async fn new_key(admin: &Clients) -> String {
    admin
        .keys
        .clone()
        .create_key(v1::CreateKeyRequest {
            namespace: "payments".into(),
            purpose: v1::Purpose::Encrypt.into(),
            algorithm: "sm4-gcm".into(),
            ..v1::CreateKeyRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .key_id
}

/// Mends the store. The trail refuses the first call after a failed write (fail-closed: it
/// records that refusal, which tells it the store works again); later calls run.
async fn repair(rig: &Rig) {
    rig.store.fuse.store(-1, Ordering::SeqCst);
    let first = rig.admin.system.clone().status(v1::StatusRequest {}).await;
    if let Err(s) = first {
        assert_eq!(s.code(), Code::Unavailable, "{s:?}");
        assert!(
            s.message().contains("audit trail cannot be written"),
            "{s:?}"
        );
    }
    rig.admin
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .expect("the trail takes records again");
}

fn of_operation<'a>(records: &'a [Record], op: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r.operation.as_str() == op)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_audit_store_at_each_step_never_leaves_an_unrecorded_change() {
    let rig = rig().await;
    for (i, step) in Step::ALL.into_iter().enumerate() {
        // Step 1: the intent cannot be written. Refused, and nothing changes.
        let key = new_key(&rig.admin).await;
        let tag = format!("{i}-intent");
        rig.store.fuse.store(0, Ordering::SeqCst);
        let r = step.call(&rig.admin, &key, &tag).await;
        repair(&rig).await;
        let s = r.expect_err(step.operation());
        assert_eq!(s.code(), Code::Unavailable, "{step:?}: {s:?}");
        assert!(
            !step.happened(&rig.admin, &key, &tag).await,
            "{step:?} took effect without its intent record"
        );
        assert!(
            of_operation(&rig.store.records(), step.operation()).is_empty(),
            "{step:?}: nothing ran, so nothing is recorded as run"
        );

        // Step 2: the intent is written, the outcome cannot be.
        let key = new_key(&rig.admin).await;
        let tag = format!("{i}-outcome");
        rig.store.fuse.store(1, Ordering::SeqCst);
        let r = step.call(&rig.admin, &key, &tag).await;
        repair(&rig).await;
        // The call ran (its intent was durable) but its answer is withheld: the caller hears
        // UNAVAILABLE, and the trail reads "intended, outcome unknown" — never an unrecorded
        // change. An operator reconciles from the intent's request id.
        assert!(step.happened(&rig.admin, &key, &tag).await, "{step:?}");
        let s = r.expect_err(step.operation());
        assert_eq!(s.code(), Code::Unavailable, "{step:?}: {s:?}");
        let records = rig.store.records();
        let mine = of_operation(&records, step.operation());
        assert_eq!(mine.len(), 1, "{step:?}: only the intent: {mine:?}");
        assert_eq!(mine[0].flags, [Flag::Intent], "{step:?}");
        assert_eq!(mine[0].outcome, Outcome::Unknown, "{step:?}");
        assert_eq!(mine[0].principal, subjects::ADMIN);
        assert!(s.message().contains(&mine[0].request_id), "{step:?}: {s:?}");

        // Step 3: the store is well again: the call runs and reads intent, then OK.
        let key = new_key(&rig.admin).await;
        let tag = format!("{i}-ok");
        step.call(&rig.admin, &key, &tag)
            .await
            .unwrap_or_else(|s| panic!("{step:?} after repair: {s:?}"));
        assert!(step.happened(&rig.admin, &key, &tag).await, "{step:?}");
    }
    let Rig { server, admin, .. } = rig;
    drop(admin);
    server.stop().await.unwrap();
}
