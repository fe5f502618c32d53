//! Dual control (issue 18, item 2): sensitive operations run only once enough distinct
//! administrators have agreed.
//!
//! # The flow
//!
//! 1. Administrator A calls a [`Sensitive`] operation that the configured [`Quorum`] covers.
//!    The core does not run it: it stores an [`ApprovalRequest`] (id `apr-<hex>`, the operation
//!    and its parameters as the core will run them, their SM3 digest, A, creation and expiry)
//!    and answers [`Error::ApprovalPending`] naming the id. Repeating the same call while it is
//!    pending names the same request.
//! 2. Other administrators run [`Kms::approve`] or [`Kms::reject`] on the id. The requester
//!    cannot approve their own request (`PermissionDenied`), a second approval by the same
//!    administrator does not count (`AlreadyExists`), a rejection ends the request, and an
//!    expired request can no longer be approved (`FailedPrecondition`; the scheduler marks it
//!    expired, [`Kms::expire_approvals`]).
//! 3. When the approvals reach the quorum:
//!    - an operation that *changes state* runs inside the approving call, as the requester (who
//!      must still be a registered administrator), with the stored parameters: whoever
//!      approves cannot change what runs, and an approver who names a digest
//!      ([`Kms::approve`]'s `digest`) approves only those exact parameters. Its outcome is
//!      stored in the request.
//!    - an operation that *hands data to the requester* (a backup) is released instead: the
//!      requester repeats the call with the id and [`Kms::release`] gives the proof once.
//!
//! # Exactly once, on any number of nodes
//!
//! Every change of a request is a compare-and-swap on its stored bytes ([`Kms::cas_update`]).
//! The approval that reaches the quorum moves the request from `pending` to `executing` in one
//! such write; of several nodes (or callers) doing it at once, one write lands, and the others
//! re-read a request that is no longer pending and refuse. Only the node whose write landed runs
//! the operation. A release moves `approved` to `released` the same way. A node that dies while
//! `executing` leaves the request there: its effect is unknown, and it is never run twice.
//!
//! # Why no handler can skip it
//!
//! Each covered operation's core method (`schedule_destruction`, `mark_compromised`,
//! `add_principal` and `remove_principal` for administrators, `create_grant`,
//! `set_rotation_period`, `backup`) calls [`Kms::quorum`] with its parameters before it writes
//! anything. `quorum` lets a proof through only when it carries an approval
//! ([`Authorized::approval`]), and such proofs are made only here (`authz::authorize_approved`
//! is crate-private), for the stored request's operation and requester. A handler holding an
//! ordinary proof gets `ApprovalPending`, whatever it does.
//!
//! # Bootstrap
//!
//! The quorum is the configured number of approvals, but never more than the administrators
//! registered: a freshly initialised KMS with one administrator could otherwise never add a
//! second. Once two administrators exist, adding or removing one needs both.
//!
//! `Restore` is not covered: it runs before init, when no administrator exists, under the
//! bootstrap rules (issue 18, item 1).
//!
//! # Audit
//!
//! Every step writes a record through the [`ApprovalLog`] the server attaches, with request id
//! the approval id: requested (the operation, by the requester, flagged
//! `approval-requested`), each approval (`KeyAdmin/Approve`) or rejection (`KeyAdmin/Reject`),
//! expiry (by `kms-scheduler`, flagged `approval-expired`), and for the execution an intent
//! record before the operation runs and an outcome record after, both by the requester and
//! flagged `quorum-approved`; a release likewise. The calls themselves are recorded by the
//! audit layer as every RPC is.

mod model;

use std::sync::Arc;

pub use model::{ApprovalRequest, ApprovalState, Params, Quorum, Sensitive};

use super::cas::Cas;
use super::{Kms, read_lock, store_corrupt, write_lock};
use crate::alg::DigestAlg;
use crate::audit::{Event, Flag, Operation as AuditOp, Outcome, Role as AuditRole};
use crate::authz::{self, Authorized, Operation, Principal, Role, ops};
use crate::error::{Error, InvalidInput};
use crate::keys::KeyRef;
use crate::store::{Batch, Tree};

/// Where requests live: `approval/<id>` in [`Tree::Meta`].
const PREFIX: &[u8] = b"approval/";

fn store_key(id: &str) -> Vec<u8> {
    [PREFIX, id.as_bytes()].concat()
}

/// The audit trail as the approvals see it: each step's record, appended durably. `false` when
/// the trail could not take it; that vetoes an execution (its intent must be recorded first).
pub trait ApprovalLog: Send + Sync {
    fn append(&self, event: Event) -> bool;
}

/// The server attaches its trail with [`super::System::set_approval_log`]; until then (tests,
/// tools) nothing is recorded.
pub(super) type SharedLog = std::sync::RwLock<Option<Arc<dyn ApprovalLog>>>;

fn event(req: &ApprovalRequest, principal: &str, role: AuditRole, op: AuditOp) -> Event {
    Event {
        request_id: req.id.clone(),
        principal: principal.to_owned(),
        role,
        operation: op,
        key_id: req.params.key().map(|k| k.to_string()),
        ..Event::default()
    }
}

fn not_pending(req: &ApprovalRequest, now: u64) -> Error {
    Error::FailedPrecondition(
        format!(
            "approval request {} is {}, no longer pending",
            req.id,
            req.state_at(now).name()
        )
        .into(),
    )
}

impl Kms {
    fn log(&self, event: Event) -> bool {
        match read_lock(&self.approval_log).as_ref() {
            Some(log) => log.append(event),
            None => true,
        }
    }

    pub(super) fn attach_approval_log(&self, log: Arc<dyn ApprovalLog>) {
        *write_lock(&self.approval_log) = Some(log);
    }

    fn admins(&self) -> Result<usize, Error> {
        Ok(self
            .store
            .scan_prefix(Tree::Principals, &[])?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Principal>(&v).ok())
            .filter(|p| p.role == Role::Admin)
            .count())
    }

    fn digest_of(&self, params: &Params) -> Result<String, Error> {
        let bytes = serde_json::to_vec(params).map_err(|_| store_corrupt("approval request"))?;
        let sm3 = self.config.policy.approve_digest(DigestAlg::Sm3)?;
        Ok(hex::encode(crate::crypto::digest::digest(sm3, &bytes)))
    }

    fn approval(&self, id: &str) -> Result<(ApprovalRequest, Vec<u8>), Error> {
        let bytes = self
            .store
            .get(Tree::Meta, &store_key(id))?
            .ok_or_else(|| Error::NotFound {
                what: "approval request",
                name: id.to_owned(),
            })?;
        Ok((ApprovalRequest::decode(&bytes)?, bytes))
    }

    fn all_approvals(&self) -> Result<Vec<ApprovalRequest>, Error> {
        self.store
            .scan_prefix(Tree::Meta, PREFIX)?
            .iter()
            .map(|(_, v)| ApprovalRequest::decode(v))
            .collect()
    }

    /// The dual-control gate of a covered operation: `Ok` when `auth` may run it now (dual
    /// control off for it, fewer than two administrators to ask, or a proof that carries an
    /// approval); otherwise files a pending request for `params` (or finds the caller's
    /// identical one) and returns [`Error::ApprovalPending`].
    pub(super) fn quorum<O: Operation>(
        &self,
        auth: &Authorized<'_, O>,
        op: Sensitive,
        params: impl FnOnce() -> Result<Params, Error>,
    ) -> Result<(), Error> {
        let quorum = self.config.quorum;
        if !quorum.covers(op) || auth.approval().is_some() {
            return Ok(());
        }
        let needed = u8::try_from(self.admins()?)
            .unwrap_or(u8::MAX)
            .min(quorum.approvals());
        if needed <= 1 {
            return Ok(());
        }
        let params = params()?;
        let digest = self.digest_of(&params)?;
        let requester = &auth.principal().subject;
        let now = self.now();
        let pending = |r: &ApprovalRequest| Error::ApprovalPending {
            id: r.id.clone(),
            operation: op.name(),
            needed: r.needed,
        };
        if let Some(same) = self.all_approvals()?.into_iter().find(|r| {
            r.requester == *requester
                && r.digest == digest
                && r.state_at(now) == ApprovalState::Pending
        }) {
            return Err(pending(&same));
        }
        let id = format!("apr-{}", hex::encode(crate::crypto::rng::random_public(8)?));
        let ttl = quorum.ttl().as_secs();
        let req = ApprovalRequest {
            id: id.clone(),
            params,
            digest,
            requester: requester.clone(),
            created_at: now,
            expires_at: now.saturating_add(ttl),
            needed,
            approvers: Vec::new(),
            state: ApprovalState::Pending,
            rejected_by: None,
            result: None,
        };
        let mut batch = Batch::new();
        batch.require(Tree::Meta, store_key(&id), None);
        batch.put(Tree::Meta, store_key(&id), req.encode()?);
        self.store.apply(&batch)?;
        let mut e = event(&req, requester, AuditRole::Admin, op.audit_operation());
        e.outcome = Outcome::FailedPrecondition;
        e.flags = vec![Flag::ApprovalRequested];
        self.log(e);
        Err(pending(&req))
    }

    /// Approves request `id` as `auth`'s administrator. With `digest` (hex SM3, as listed), only
    /// a request with exactly those parameters is approved. When this approval reaches the
    /// quorum, a state-changing operation runs now, as its requester, and the request returned
    /// holds its outcome; a released operation (backup) becomes `approved` for its requester.
    ///
    /// # Errors
    /// `NotFound` (no such request); `PermissionDenied` (the requester approving their own
    /// request); `AlreadyExists` (this administrator approved it already); `FailedPrecondition`
    /// (not pending: expired, rejected, already approved or running; or another digest).
    pub fn approve(
        &self,
        auth: &Authorized<'_, ops::Approve>,
        id: &str,
        digest: Option<&str>,
    ) -> Result<ApprovalRequest, Error> {
        self.begin(auth)?;
        let me = &auth.principal().subject;
        let step = self
            .cas_update(|| {
                let (mut req, old) = self.approval(id)?;
                let now = self.now();
                let state = req.state_at(now);
                if state != ApprovalState::Pending {
                    return Ok(Cas::Done(Err(if req.state == ApprovalState::Pending {
                        self.expire(req, old)
                    } else {
                        not_pending(&req, now)
                    })));
                }
                if req.requester == *me {
                    return Err(Error::PermissionDenied {
                        principal: auth.principal().to_string(),
                        op: "approve their own request (another administrator must)",
                    });
                }
                if req.approvers.contains(me) {
                    return Err(Error::AlreadyExists {
                        what: "approval",
                        name: format!(
                            "of {id} by {me} (approvals must come from distinct administrators)"
                        ),
                    });
                }
                if let Some(d) = digest
                    && !d.eq_ignore_ascii_case(&req.digest)
                {
                    return Err(Error::FailedPrecondition(
                        format!(
                            "approval request {id} has parameters digest {}, not {d}: it is not \
                             the request you reviewed",
                            req.digest
                        )
                        .into(),
                    ));
                }
                req.approvers.push(me.clone());
                let reached = 1 + req.approvers.len() >= usize::from(req.needed);
                if reached {
                    req.state = if req.params.sensitive().is_released() {
                        ApprovalState::Approved
                    } else {
                        ApprovalState::Executing
                    };
                }
                let mut batch = Batch::new();
                batch.require(Tree::Meta, store_key(id), Some(old));
                batch.put(Tree::Meta, store_key(id), req.encode()?);
                Ok(Cas::Write(batch, Ok(req)))
            })?
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "the approval request is being changed concurrently; retry".into(),
                )
            })??;
        let mut e = event(&step, me, AuditRole::Admin, AuditOp::Approve);
        e.outcome = Outcome::Ok;
        self.log(e);
        if step.state == ApprovalState::Executing {
            return self.execute(step);
        }
        Ok(step)
    }

    /// Runs a request this node moved to `executing`, as its requester, and stores the outcome.
    fn execute(&self, mut req: ApprovalRequest) -> Result<ApprovalRequest, Error> {
        let op = req.params.sensitive();
        let mut intent = event(&req, &req.requester, AuditRole::Admin, op.audit_operation());
        intent.flags = vec![Flag::Intent, Flag::QuorumApproved];
        let outcome = if self.log(intent) {
            match self.principal(&req.requester) {
                Ok(Some(p)) if p.role == Role::Admin => self.run_approved(&p, &req.id, &req.params),
                Ok(Some(_) | None) => Err(Error::FailedPrecondition(
                    format!("{} is no longer an administrator", req.requester).into(),
                )),
                Err(e) => Err(e),
            }
        } else {
            Err(Error::Store(crate::store::StoreError::Unavailable(
                "the audit trail could not record the execution's intent; it did not run".into(),
            )))
        };
        let mut done = event(&req, &req.requester, AuditRole::Admin, op.audit_operation());
        done.flags = vec![Flag::QuorumApproved];
        done.outcome = match &outcome {
            Ok(_) => Outcome::Ok,
            Err(e) => outcome_of(e),
        };
        self.log(done);
        let (state, result) = match outcome {
            Ok(summary) => (ApprovalState::Executed, summary),
            Err(e) => (ApprovalState::Failed, e.to_string()),
        };
        // Only this node moved the request to `executing`, so nobody else writes it now.
        let (_, old) = self.approval(&req.id)?;
        req.state = state;
        req.result = Some(result);
        let mut batch = Batch::new();
        batch.require(Tree::Meta, store_key(&req.id), Some(old));
        batch.put(Tree::Meta, store_key(&req.id), req.encode()?);
        self.store.apply(&batch)?;
        Ok(req)
    }

    /// The covered operation itself, with a proof that carries the approval.
    fn run_approved(&self, p: &Principal, id: &str, params: &Params) -> Result<String, Error> {
        match params {
            Params::ScheduleKeyDestruction { key, days } => {
                let k = self.schedule_destruction(
                    &authz::authorize_approved(p, id)?,
                    &KeyRef::Id(*key),
                    *days,
                )?;
                Ok(format!(
                    "key {} is pending destruction (at {})",
                    k.id,
                    k.destroy_at.unwrap_or(0)
                ))
            }
            Params::MarkCompromised { key } => {
                let k =
                    self.mark_compromised(&authz::authorize_approved(p, id)?, &KeyRef::Id(*key))?;
                Ok(format!("key {} is marked compromised", k.id))
            }
            Params::AddAdmin { subject } => {
                self.add_principal(&authz::authorize_approved(p, id)?, subject, Role::Admin)?;
                Ok(format!("administrator {subject} added"))
            }
            Params::RemoveAdmin { subject } => {
                self.remove_principal(&authz::authorize_approved(p, id)?, subject)?;
                Ok(format!("administrator {subject} removed"))
            }
            Params::CreateGrant { key, grantee, ops } => {
                let g = self.create_grant(
                    &authz::authorize_approved(p, id)?,
                    &KeyRef::Id(*key),
                    grantee.clone(),
                    ops.clone(),
                )?;
                Ok(format!(
                    "grant on key {} to namespace {}",
                    g.key_id, g.grantee
                ))
            }
            Params::SetRotationPolicy { key, period } => {
                let k = self.set_rotation_period(
                    &authz::authorize_approved(p, id)?,
                    &KeyRef::Id(*key),
                    *period,
                )?;
                Ok(format!("key {} rotation period set", k.id))
            }
            Params::Backup | Params::ExportKey { .. } => Err(Error::FailedPrecondition(
                "a backup or an export is released to its requester, not run by an approval".into(),
            )),
        }
    }

    /// Marks an expired request so (recorded once, by whoever notices first) and returns the
    /// error the caller gets.
    fn expire(&self, req: ApprovalRequest, old: Vec<u8>) -> Error {
        let id = req.id.clone();
        self.mark_expired(req, old);
        Error::FailedPrecondition(
            format!("approval request {id} has expired; make the request again").into(),
        )
    }

    /// Moves a request to `expired` if it is still as `old` says, and records it; whether this
    /// call did it.
    fn mark_expired(&self, mut req: ApprovalRequest, old: Vec<u8>) -> bool {
        req.state = ApprovalState::Expired;
        let Ok(bytes) = req.encode() else {
            return false;
        };
        let mut batch = Batch::new();
        batch.require(Tree::Meta, store_key(&req.id), Some(old));
        batch.put(Tree::Meta, store_key(&req.id), bytes);
        if self.store.apply(&batch).is_err() {
            return false;
        }
        let mut e = event(
            &req,
            crate::audit::SCHEDULER_PRINCIPAL,
            AuditRole::Scheduler,
            req.params.sensitive().audit_operation(),
        );
        e.outcome = Outcome::DeadlineExceeded;
        e.flags = vec![Flag::ApprovalExpired];
        self.log(e);
        true
    }

    /// Rejects request `id`: it ends, and never runs. Any administrator may reject, the
    /// requester too (withdrawing it). `reason` (at most 512 printable characters) is stored.
    ///
    /// # Errors
    /// `NotFound`; `FailedPrecondition` when it is no longer pending; `InvalidArgument` for the
    /// reason.
    pub fn reject(
        &self,
        auth: &Authorized<'_, ops::Reject>,
        id: &str,
        reason: &str,
    ) -> Result<ApprovalRequest, Error> {
        self.begin(auth)?;
        if reason.len() > 512 || reason.chars().any(char::is_control) {
            return Err(InvalidInput::new(
                "reason",
                "at most 512 bytes, without control characters",
            )
            .into());
        }
        let me = &auth.principal().subject;
        let req = self
            .cas_update(|| {
                let (mut req, old) = self.approval(id)?;
                let now = self.now();
                let state = req.state_at(now);
                if state != ApprovalState::Pending {
                    return Ok(Cas::Done(Err(if req.state == ApprovalState::Pending {
                        self.expire(req, old)
                    } else {
                        not_pending(&req, now)
                    })));
                }
                req.state = ApprovalState::Rejected;
                req.rejected_by = Some(me.clone());
                req.result = (!reason.is_empty()).then(|| reason.to_owned());
                let mut batch = Batch::new();
                batch.require(Tree::Meta, store_key(id), Some(old));
                batch.put(Tree::Meta, store_key(id), req.encode()?);
                Ok(Cas::Write(batch, Ok(req)))
            })?
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "the approval request is being changed concurrently; retry".into(),
                )
            })??;
        let mut e = event(&req, me, AuditRole::Admin, AuditOp::Reject);
        e.outcome = Outcome::Ok;
        self.log(e);
        Ok(req)
    }

    /// Every request, oldest first: pending ones and what became of the others.
    pub fn list_approvals(
        &self,
        auth: &Authorized<'_, ops::ListApprovals>,
    ) -> Result<Vec<ApprovalRequest>, Error> {
        self.begin(auth)?;
        let now = self.now();
        let mut all = self.all_approvals()?;
        for r in &mut all {
            r.state = r.state_at(now);
        }
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    /// The parameters approval request `id` was made for: a released operation checks that
    /// it is used for exactly what was approved.
    pub(super) fn approved_params(&self, id: &str) -> Result<Params, Error> {
        Ok(self.approval(id)?.0.params)
    }

    /// The proof for a released operation (a backup) whose quorum was reached: only for its
    /// requester, only once (`approved` → `released` is one compare-and-swap), only for that
    /// operation.
    ///
    /// # Errors
    /// `NotFound`; `PermissionDenied` for anyone but the requester; `FailedPrecondition` when
    /// the request is for another operation, still waits for approvals, expired or was taken.
    pub fn release<'a, O: Operation>(
        &self,
        auth: &Authorized<'a, O>,
        id: &'a str,
    ) -> Result<Authorized<'a, O>, Error> {
        self.begin(auth)?;
        let me = auth.principal();
        let req = self
            .cas_update(|| {
                let (mut req, old) = self.approval(id)?;
                let op = req.params.sensitive();
                if op.op() != O::OP || !op.is_released() {
                    return Err(Error::FailedPrecondition(
                        format!(
                            "approval request {id} is for {}, not {}",
                            op.name(),
                            O::OP.name()
                        )
                        .into(),
                    ));
                }
                if req.requester != me.subject {
                    return Err(Error::PermissionDenied {
                        principal: me.to_string(),
                        op: "use another administrator's approval",
                    });
                }
                let now = self.now();
                let state = req.state_at(now);
                if state != ApprovalState::Approved {
                    return Ok(Cas::Done(Err(if req.state == ApprovalState::Approved {
                        self.expire(req, old)
                    } else {
                        Error::FailedPrecondition(
                            format!("approval request {id} is {}, not approved", state.name())
                                .into(),
                        )
                    })));
                }
                req.state = ApprovalState::Released;
                let mut batch = Batch::new();
                batch.require(Tree::Meta, store_key(id), Some(old));
                batch.put(Tree::Meta, store_key(id), req.encode()?);
                Ok(Cas::Write(batch, Ok(req)))
            })?
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "the approval request is being changed concurrently; retry".into(),
                )
            })??;
        let mut e = event(
            &req,
            &me.subject,
            AuditRole::Admin,
            req.params.sensitive().audit_operation(),
        );
        e.outcome = Outcome::Ok;
        e.flags = vec![Flag::QuorumApproved];
        self.log(e);
        authz::authorize_approved(me, id)
    }

    /// Marks every request past its expiry as expired (the scheduler, on every node; each
    /// request is marked and recorded once). Returns how many this call marked.
    pub(super) fn expire_approvals(&self) -> Result<usize, Error> {
        let now = self.now();
        let mut marked = 0;
        for (_, bytes) in self.store.scan_prefix(Tree::Meta, PREFIX)? {
            let req = ApprovalRequest::decode(&bytes)?;
            if req.state != req.state_at(now) && self.mark_expired(req, bytes) {
                marked += 1;
            }
        }
        Ok(marked)
    }
}

/// The audit outcome of a core error, without the server's map (the same classes).
fn outcome_of(e: &Error) -> Outcome {
    match e {
        Error::NotFound { .. } => Outcome::NotFound,
        Error::AlreadyExists { .. } => Outcome::AlreadyExists,
        Error::InvalidState { .. }
        | Error::FailedPrecondition(_)
        | Error::ApprovalPending { .. } => Outcome::FailedPrecondition,
        Error::PermissionDenied { .. } => Outcome::PermissionDenied,
        Error::ResourceExhausted(_) => Outcome::ResourceExhausted,
        Error::Policy(_) | Error::InvalidArgument(_) | Error::Unseal(_) => Outcome::InvalidArgument,
        Error::Sealed | Error::Store(_) => Outcome::Unavailable,
        Error::Crypto(_) => Outcome::Internal,
        // Not an approvable operation's error; mapped as the server maps it all the same.
        Error::Password(crate::error::PasswordRefusal::Replayed) => Outcome::AlreadyExists,
        Error::Password(_) => Outcome::InvalidArgument,
    }
}

#[cfg(test)]
mod tests;
