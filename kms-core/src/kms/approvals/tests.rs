//! Dual control in the core: one store, a manual clock, three administrators.

use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::alg::{KeySpec, Purpose};
use crate::authz::{GrantOp, authorize};
use crate::clock::{Clock, ManualClock};
use crate::keys::state::KeyState;
use crate::keys::{KeyId, Namespace};
use crate::kms::{CreateKeyRequest, KmsConfig, System};
use crate::store::{MemoryStore, Store};

#[derive(Default)]
struct Trail(Mutex<Vec<Event>>);

impl ApprovalLog for Trail {
    fn append(&self, event: Event) -> bool {
        self.0.lock().unwrap().push(event);
        true
    }
}

struct Fx {
    kms: System,
    clock: Arc<ManualClock>,
    trail: Arc<Trail>,
    a: Principal,
    b: Principal,
    c: Principal,
    key: KeyId,
}

/// Admins a, b and c (registered without dual control), an encrypt key, and a KMS on the
/// same store with `approvals` of every sensitive operation.
fn fixture(approvals: u8) -> Fx {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let setup = System::with_clock(
        Arc::clone(&store),
        KmsConfig::default(),
        Arc::clone(&clock) as Arc<dyn Clock>,
    );
    let init = setup.init(1, 1, "a").unwrap();
    setup.unseal_with(&init.shares[0]).unwrap();
    let a = setup.principal("a").unwrap().unwrap();
    for s in ["b", "c"] {
        setup
            .add_principal(&authorize(&a).unwrap(), s, Role::Admin)
            .unwrap();
    }
    let key = setup
        .create_key(
            &authorize(&a).unwrap(),
            CreateKeyRequest {
                namespace: Namespace::new("app").unwrap(),
                purpose: Purpose::Encrypt,
                spec: KeySpec::Sm4Gcm,
                alias: None,
                rotation_period: None,
                description: String::new(),
            },
        )
        .unwrap()
        .id;
    let config = KmsConfig {
        quorum: Quorum::new(approvals, &Sensitive::ALL, Duration::from_secs(3600)).unwrap(),
        ..KmsConfig::default()
    };
    let kms = System::with_clock(store, config, Arc::clone(&clock) as Arc<dyn Clock>);
    kms.unseal_with(&init.shares[0]).unwrap();
    let trail = Arc::new(Trail::default());
    kms.set_approval_log(Arc::clone(&trail) as Arc<dyn ApprovalLog>);
    let who = |s: &str| kms.principal(s).unwrap().unwrap();
    Fx {
        a: who("a"),
        b: who("b"),
        c: who("c"),
        kms,
        clock,
        trail,
        key,
    }
}

fn pending_id(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::ApprovalPending { id, .. }) => id,
        other => panic!("expected a pending request, got {other:?}"),
    }
}

impl Fx {
    fn destroy(&self, who: &Principal) -> Result<crate::KeyInfo, Error> {
        self.kms
            .schedule_destruction(&authorize(who).unwrap(), &KeyRef::Id(self.key), Some(7))
    }
    fn state(&self) -> KeyState {
        self.kms
            .describe_key(&authorize(&self.a).unwrap(), &KeyRef::Id(self.key))
            .unwrap()
            .state
    }
    fn approve(&self, who: &Principal, id: &str) -> Result<ApprovalRequest, Error> {
        self.kms.approve(&authorize(who).unwrap(), id, None)
    }
}

#[test]
fn the_first_call_files_a_request_and_the_quorum_runs_it_once() {
    let fx = fixture(2);
    let id = pending_id(fx.destroy(&fx.a));
    assert!(id.starts_with("apr-") && id.len() == 20, "{id}");
    assert_eq!(fx.state(), KeyState::Enabled, "nothing ran");
    // The same call again names the same request.
    assert_eq!(pending_id(fx.destroy(&fx.a)), id);
    let message = fx.destroy(&fx.a).unwrap_err().to_string();
    assert!(
        message.contains("needs the approval of 2 administrators")
            && message.contains(&format!("kms approve {id}")),
        "{message}"
    );
    let done = fx.approve(&fx.b, &id).unwrap();
    assert_eq!(done.state, ApprovalState::Executed, "{done:?}");
    assert!(
        done.result
            .as_deref()
            .unwrap()
            .contains("pending destruction")
    );
    assert_eq!(fx.state(), KeyState::PendingDestruction);
    // Once: a later approval finds nothing to run.
    assert!(matches!(
        fx.approve(&fx.c, &id),
        Err(Error::FailedPrecondition(m)) if m.contains("executed, no longer pending")
    ));
}

#[test]
fn the_requester_cannot_approve_and_one_admin_counts_once() {
    let fx = fixture(3);
    let id = pending_id(fx.destroy(&fx.a));
    assert!(matches!(
        fx.approve(&fx.a, &id),
        Err(Error::PermissionDenied { op, .. }) if op.starts_with("approve their own request")
    ));
    let after_b = fx.approve(&fx.b, &id).unwrap();
    assert_eq!(
        (after_b.state, after_b.approvers),
        (ApprovalState::Pending, vec!["b".to_owned()])
    );
    assert!(matches!(
        fx.approve(&fx.b, &id),
        Err(Error::AlreadyExists {
            what: "approval",
            ..
        })
    ));
    assert_eq!(
        fx.state(),
        KeyState::Enabled,
        "b twice is not a quorum of 3"
    );
    assert_eq!(
        fx.approve(&fx.c, &id).unwrap().state,
        ApprovalState::Executed
    );
    assert_eq!(fx.state(), KeyState::PendingDestruction);
}

#[test]
fn reject_ends_a_request_and_expiry_ends_it_too() {
    let fx = fixture(2);
    let id = pending_id(fx.destroy(&fx.a));
    let rejected = fx
        .kms
        .reject(&authorize(&fx.c).unwrap(), &id, "not this key")
        .unwrap();
    assert_eq!(rejected.state, ApprovalState::Rejected);
    assert_eq!(rejected.rejected_by.as_deref(), Some("c"));
    assert!(matches!(
        fx.approve(&fx.b, &id),
        Err(Error::FailedPrecondition(m)) if m.contains("rejected")
    ));
    assert_eq!(fx.state(), KeyState::Enabled);

    // A new request (the old one is over), left to expire.
    let id2 = pending_id(fx.destroy(&fx.a));
    assert_ne!(id2, id);
    fx.clock.advance(3601);
    let listed = fx.kms.list_approvals(&authorize(&fx.b).unwrap()).unwrap();
    let state_of = |i: &str| listed.iter().find(|r| r.id == i).unwrap().state;
    assert_eq!(
        (listed.len(), state_of(&id), state_of(&id2)),
        (2, ApprovalState::Rejected, ApprovalState::Expired)
    );
    assert_eq!(fx.kms.expire_approvals().unwrap(), 1);
    assert_eq!(fx.kms.expire_approvals().unwrap(), 0, "marked once");
    assert!(matches!(
        fx.approve(&fx.b, &id2),
        Err(Error::FailedPrecondition(m)) if m.contains("expired")
    ));
    assert_eq!(fx.state(), KeyState::Enabled);
}

#[test]
fn an_approval_runs_the_stored_parameters_and_names_them_by_digest() {
    let fx = fixture(2);
    let id = pending_id(fx.destroy(&fx.a));
    // A request for other parameters is another request, with another digest.
    let other = pending_id(fx.kms.schedule_destruction(
        &authorize(&fx.a).unwrap(),
        &KeyRef::Id(fx.key),
        Some(30),
    ));
    assert_ne!(other, id);
    let all = fx.kms.list_approvals(&authorize(&fx.b).unwrap()).unwrap();
    let digest = |i: &str| all.iter().find(|r| r.id == i).unwrap().digest.clone();
    assert_ne!(digest(&id), digest(&other));
    // Approving `id` with the digest of `other` is refused.
    assert!(matches!(
        fx.kms.approve(&authorize(&fx.b).unwrap(), &id, Some(&digest(&other))),
        Err(Error::FailedPrecondition(m)) if m.contains("not the request you reviewed")
    ));
    let done = fx
        .kms
        .approve(&authorize(&fx.b).unwrap(), &id, Some(&digest(&id)))
        .unwrap();
    assert_eq!(done.state, ApprovalState::Executed);
    let info = fx
        .kms
        .describe_key(&authorize(&fx.a).unwrap(), &KeyRef::Id(fx.key))
        .unwrap();
    // 7 days, as `id` said, not `other`'s 30.
    assert_eq!(
        info.destroy_at,
        Some(fx.clock.now() + 7 * crate::clock::DAY)
    );
}

#[test]
fn a_backup_is_released_once_to_its_requester_only() {
    let fx = fixture(2);
    let id = pending_id(fx.kms.backup(&authorize(&fx.a).unwrap()));
    let approved = fx.approve(&fx.b, &id).unwrap();
    assert_eq!(approved.state, ApprovalState::Approved);
    assert!(matches!(
        fx.kms
            .release(&authorize::<ops::Backup>(&fx.b).unwrap(), &id),
        Err(Error::PermissionDenied { .. })
    ));
    let auth = authorize::<ops::Backup>(&fx.a).unwrap();
    let proof = fx.kms.release(&auth, &id).unwrap();
    assert_eq!(proof.approval(), Some(id.as_str()));
    assert!(fx.kms.backup(&proof).unwrap().starts_with(b"KMSB"));
    assert!(matches!(
        fx.kms.release(&auth, &id),
        Err(Error::FailedPrecondition(m)) if m.contains("released, not approved")
    ));
    // An approval of one operation is not a release of another.
    let grant = pending_id(fx.kms.create_grant(
        &authorize(&fx.a).unwrap(),
        &KeyRef::Id(fx.key),
        Namespace::new("other").unwrap(),
        vec![GrantOp::Encrypt],
    ));
    assert!(matches!(
        fx.kms.release(&auth, &grant),
        Err(Error::FailedPrecondition(m)) if m.contains("is for create-grant, not back up")
    ));
}

#[test]
fn every_covered_operation_waits_and_others_do_not() {
    let fx = fixture(2);
    let a = &fx.a;
    let key = KeyRef::Id(fx.key);
    pending_id(fx.kms.mark_compromised(&authorize(a).unwrap(), &key));
    pending_id(
        fx.kms
            .set_rotation_period(&authorize(a).unwrap(), &key, Some(30 * 86400)),
    );
    pending_id(
        fx.kms
            .add_principal(&authorize(a).unwrap(), "d", Role::Admin),
    );
    pending_id(fx.kms.remove_principal(&authorize(a).unwrap(), "c"));
    // Apps and auditors come and go on one administrator's word; so do rotations.
    fx.kms
        .add_principal(&authorize(a).unwrap(), "aud", Role::Auditor)
        .unwrap();
    fx.kms
        .remove_principal(&authorize(a).unwrap(), "aud")
        .unwrap();
    fx.kms.rotate_key(&authorize(a).unwrap(), &key).unwrap();
    let mut waiting: Vec<&str> = fx
        .kms
        .list_approvals(&authorize(a).unwrap())
        .unwrap()
        .iter()
        .map(|r| r.params.sensitive().name())
        .collect();
    waiting.sort_unstable();
    assert_eq!(
        waiting,
        [
            "add-admin",
            "mark-compromised",
            "remove-admin",
            "set-rotation-policy"
        ]
    );
}

#[test]
fn one_administrator_alone_needs_no_quorum_and_dual_control_can_be_off() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = KmsConfig {
        quorum: Quorum::two_of_every_sensitive_operation(),
        ..KmsConfig::default()
    };
    let kms = System::open(store, config);
    let init = kms.init(1, 1, "a").unwrap();
    kms.unseal_with(&init.shares[0]).unwrap();
    let a = kms.principal("a").unwrap().unwrap();
    // The only administrator adds the second: nobody else could approve it.
    kms.add_principal(&authorize(&a).unwrap(), "b", Role::Admin)
        .unwrap();
    // Now there are two: the third needs both.
    pending_id(kms.add_principal(&authorize(&a).unwrap(), "c", Role::Admin));
    assert!(!Quorum::off().covers(Sensitive::Backup));
    assert!(matches!(
        Quorum::new(0, &[], Quorum::DEFAULT_TTL),
        Err(Error::InvalidArgument(e)) if e.field == "approvals"
    ));
    assert!(matches!(
        Sensitive::parse("export"),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        Sensitive::parse("remove-admin").unwrap(),
        Sensitive::RemoveAdmin
    );
}

#[test]
fn every_step_is_recorded_under_the_approval_id() {
    let fx = fixture(2);
    let id = pending_id(fx.destroy(&fx.a));
    fx.approve(&fx.b, &id).unwrap();
    let rejected = pending_id(
        fx.kms
            .mark_compromised(&authorize(&fx.a).unwrap(), &KeyRef::Id(fx.key)),
    );
    fx.kms
        .reject(&authorize(&fx.b).unwrap(), &rejected, "")
        .unwrap();
    let expired = pending_id(
        fx.kms
            .add_principal(&authorize(&fx.a).unwrap(), "d", Role::Admin),
    );
    fx.clock.advance(3601);
    fx.kms.expire_approvals().unwrap();
    let trail = fx.trail.0.lock().unwrap();
    let steps = |id: &str| -> Vec<(String, String, String, Vec<String>)> {
        trail
            .iter()
            .filter(|e| e.request_id == id)
            .map(|e| {
                (
                    e.principal.clone(),
                    e.operation.to_string(),
                    e.outcome.to_string(),
                    e.flags.iter().map(ToString::to_string).collect(),
                )
            })
            .collect()
    };
    let s = |x: &str| x.to_owned();
    assert_eq!(
        steps(&id),
        [
            (
                s("a"),
                s("KeyAdmin/ScheduleKeyDestruction"),
                s("FAILED_PRECONDITION"),
                vec![s("approval-requested")]
            ),
            (s("b"), s("KeyAdmin/Approve"), s("OK"), vec![]),
            (
                s("a"),
                s("KeyAdmin/ScheduleKeyDestruction"),
                s("UNKNOWN"),
                vec![s("intent"), s("quorum-approved")]
            ),
            (
                s("a"),
                s("KeyAdmin/ScheduleKeyDestruction"),
                s("OK"),
                vec![s("quorum-approved")]
            ),
        ]
    );
    assert_eq!(
        steps(&rejected)[1],
        (s("b"), s("KeyAdmin/Reject"), s("OK"), vec![])
    );
    assert_eq!(
        steps(&expired)[1],
        (
            s("kms-scheduler"),
            s("KeyAdmin/AddPrincipal"),
            s("DEADLINE_EXCEEDED"),
            vec![s("approval-expired")]
        )
    );
    assert!(
        trail
            .iter()
            .filter(|e| e.request_id == id)
            .all(|e| e.key_id == Some(fx.key.to_string()))
    );
}

#[test]
fn a_requester_who_is_no_longer_an_administrator_gets_nothing_run() {
    let fx = fixture(2);
    let id = pending_id(fx.destroy(&fx.a));
    // B asks to remove A; C agrees.
    let removal = pending_id(fx.kms.remove_principal(&authorize(&fx.b).unwrap(), "a"));
    assert_eq!(
        fx.approve(&fx.c, &removal).unwrap().state,
        ApprovalState::Executed
    );
    let failed = fx.approve(&fx.b, &id).unwrap();
    assert_eq!(failed.state, ApprovalState::Failed);
    assert_eq!(
        failed.result.as_deref(),
        Some("a is no longer an administrator")
    );
    assert_eq!(fx.state(), KeyState::Enabled);
    let trail = fx.trail.0.lock().unwrap();
    let last = trail.iter().rev().find(|e| e.request_id == id).unwrap();
    assert_eq!(
        (last.outcome.as_str(), last.flags.clone()),
        ("FAILED_PRECONDITION", vec![Flag::QuorumApproved])
    );
}
