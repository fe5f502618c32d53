//! What dual control stores and is configured with: the covered operations ([`Sensitive`]),
//! the settings ([`Quorum`]), a request's parameters ([`Params`]) and the request itself
//! ([`ApprovalRequest`]). The rules are in the parent module.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::Operation as AuditOp;
use crate::authz::{GrantOp, Op};
use crate::error::{Error, InvalidInput};
use crate::keys::{KeyId, Namespace};
use crate::kms::store_corrupt;

/// An operation that may be put under dual control. The names are the configuration's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sensitive {
    ScheduleKeyDestruction,
    MarkCompromised,
    /// Registering a principal with the role admin.
    AddAdmin,
    /// Removing a principal whose role is admin.
    RemoveAdmin,
    /// Every grant (grants always give another namespace a key).
    CreateGrant,
    /// Setting or clearing a key's rotation period.
    SetRotationPolicy,
    /// Released to the requester rather than run by the approval.
    Backup,
    /// Exporting a key's material wrapped to a recipient (issue 19 item 2); released, like a
    /// backup, for exactly the parameters approved.
    ExportKey,
}

impl Sensitive {
    pub const ALL: [Self; 8] = [
        Self::ScheduleKeyDestruction,
        Self::MarkCompromised,
        Self::AddAdmin,
        Self::RemoveAdmin,
        Self::CreateGrant,
        Self::SetRotationPolicy,
        Self::Backup,
        Self::ExportKey,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::ScheduleKeyDestruction => "schedule-key-destruction",
            Self::MarkCompromised => "mark-compromised",
            Self::AddAdmin => "add-admin",
            Self::RemoveAdmin => "remove-admin",
            Self::CreateGrant => "create-grant",
            Self::SetRotationPolicy => "set-rotation-policy",
            Self::Backup => "backup",
            Self::ExportKey => "export-key",
        }
    }

    /// # Errors
    /// `InvalidArgument` naming the accepted names.
    pub fn parse(name: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                InvalidInput::new(
                    "dual control operation",
                    format!("unknown; use one of: {}", names.join(", ")),
                )
                .into()
            })
    }

    /// The authorisation matrix's operation.
    #[must_use]
    pub fn op(self) -> Op {
        match self {
            Self::ScheduleKeyDestruction => Op::ScheduleKeyDestruction,
            Self::MarkCompromised => Op::MarkCompromised,
            Self::AddAdmin => Op::AddPrincipal,
            Self::RemoveAdmin => Op::RemovePrincipal,
            Self::CreateGrant => Op::CreateGrant,
            Self::SetRotationPolicy => Op::SetRotationPolicy,
            Self::Backup => Op::Backup,
            Self::ExportKey => Op::ExportKey,
        }
    }

    /// Whether the quorum releases the operation to its requester (it hands them data) rather
    /// than running it.
    #[must_use]
    pub fn is_released(self) -> bool {
        matches!(self, Self::Backup | Self::ExportKey)
    }

    /// The RPC the audit trail names for it.
    pub(super) fn audit_operation(self) -> AuditOp {
        match self {
            Self::ScheduleKeyDestruction => AuditOp::ScheduleKeyDestruction,
            Self::MarkCompromised => AuditOp::MarkCompromised,
            Self::AddAdmin => AuditOp::AddPrincipal,
            Self::RemoveAdmin => AuditOp::RemovePrincipal,
            Self::CreateGrant => AuditOp::CreateGrant,
            Self::SetRotationPolicy => AuditOp::SetRotationPolicy,
            Self::Backup => AuditOp::Backup,
            Self::ExportKey => AuditOp::ExportKey,
        }
    }

    fn bit(self) -> u16 {
        let i = Self::ALL.iter().position(|s| *s == self).unwrap_or(0);
        1 << i
    }
}

/// The dual-control settings: how many distinct administrators a covered operation needs (the
/// requester included; 1 turns dual control off), which operations, and how long a request
/// waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    approvals: u8,
    operations: u16,
    ttl: Duration,
}

impl Quorum {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
    pub const MAX_APPROVALS: u8 = 16;

    /// Dual control off: every operation runs on one administrator's word.
    #[must_use]
    pub fn off() -> Self {
        Self {
            approvals: 1,
            operations: 0,
            ttl: Self::DEFAULT_TTL,
        }
    }

    /// `approvals` distinct administrators (1 to 16) for each of `operations`; requests expire
    /// after `ttl` (1 minute to 30 days).
    ///
    /// # Errors
    /// `InvalidArgument` for a count or lifetime out of range.
    pub fn new(approvals: u8, operations: &[Sensitive], ttl: Duration) -> Result<Self, Error> {
        if !(1..=Self::MAX_APPROVALS).contains(&approvals) {
            return Err(
                InvalidInput::new("approvals", "must be 1 to 16 (1: dual control off)").into(),
            );
        }
        if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(30 * 24 * 3600) {
            return Err(
                InvalidInput::new("approval lifetime", "must be 1 minute to 30 days").into(),
            );
        }
        Ok(Self {
            approvals,
            operations: operations.iter().fold(0, |m, s| m | s.bit()),
            ttl,
        })
    }

    /// The default outside dev mode: 2 administrators for every [`Sensitive`] operation, 24 h.
    #[must_use]
    pub fn two_of_every_sensitive_operation() -> Self {
        Self {
            approvals: 2,
            operations: Sensitive::ALL.iter().fold(0, |m, s| m | s.bit()),
            ttl: Self::DEFAULT_TTL,
        }
    }

    #[must_use]
    pub fn approvals(&self) -> u8 {
        self.approvals
    }

    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether `op` needs more than one administrator.
    #[must_use]
    pub fn covers(&self, op: Sensitive) -> bool {
        self.approvals > 1 && self.operations & op.bit() != 0
    }
}

/// A covered operation with its parameters, exactly as the core runs it. Keys are stored by id,
/// resolved when the request is made: an approval of "destroy alias X" destroys the key X named
/// then, whatever X names later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "kebab-case")]
pub enum Params {
    ScheduleKeyDestruction {
        key: KeyId,
        days: Option<u32>,
    },
    MarkCompromised {
        key: KeyId,
    },
    AddAdmin {
        subject: String,
    },
    RemoveAdmin {
        subject: String,
    },
    CreateGrant {
        key: KeyId,
        grantee: Namespace,
        ops: Vec<GrantOp>,
    },
    SetRotationPolicy {
        key: KeyId,
        period: Option<u64>,
    },
    Backup,
    ExportKey {
        key: KeyId,
        version: u32,
        wrapping_spec: String,
        /// SM3 of the recipient's SubjectPublicKeyInfo DER, hex.
        recipient_sm3: String,
    },
}

impl Params {
    #[must_use]
    pub fn sensitive(&self) -> Sensitive {
        match self {
            Self::ScheduleKeyDestruction { .. } => Sensitive::ScheduleKeyDestruction,
            Self::MarkCompromised { .. } => Sensitive::MarkCompromised,
            Self::AddAdmin { .. } => Sensitive::AddAdmin,
            Self::RemoveAdmin { .. } => Sensitive::RemoveAdmin,
            Self::CreateGrant { .. } => Sensitive::CreateGrant,
            Self::SetRotationPolicy { .. } => Sensitive::SetRotationPolicy,
            Self::Backup => Sensitive::Backup,
            Self::ExportKey { .. } => Sensitive::ExportKey,
        }
    }

    /// The key the operation concerns, if any.
    #[must_use]
    pub fn key(&self) -> Option<KeyId> {
        match self {
            Self::ScheduleKeyDestruction { key, .. }
            | Self::MarkCompromised { key }
            | Self::CreateGrant { key, .. }
            | Self::SetRotationPolicy { key, .. }
            | Self::ExportKey { key, .. } => Some(*key),
            Self::AddAdmin { .. } | Self::RemoveAdmin { .. } | Self::Backup => None,
        }
    }

    /// The parameters in words, for listings.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::ScheduleKeyDestruction { key, days } => match days {
                Some(d) => format!("key {key}, after {d} days"),
                None => format!("key {key}"),
            },
            Self::MarkCompromised { key } => format!("key {key}"),
            Self::AddAdmin { subject } | Self::RemoveAdmin { subject } => {
                format!("principal {subject}")
            }
            Self::CreateGrant { key, grantee, ops } => {
                let ops: Vec<&str> = ops.iter().map(|o| o.name()).collect();
                format!("key {key} to namespace {grantee}: {}", ops.join(", "))
            }
            Self::SetRotationPolicy { key, period } => match period {
                Some(p) => format!("key {key}, every {p} s"),
                None => format!("key {key}, rotation off"),
            },
            Self::Backup => "the whole store".to_owned(),
            Self::ExportKey {
                key,
                version,
                wrapping_spec,
                recipient_sm3,
            } => format!(
                "key {key} version {version}, wrapped ({wrapping_spec}) to the public key with \
                 SM3 {recipient_sm3}"
            ),
        }
    }
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalState {
    /// Waiting for approvals.
    Pending,
    /// The quorum was reached and one node is running the operation (if it stays here, that
    /// node stopped mid-way: the outcome is unknown and it is never run again).
    Executing,
    /// Ran; `result` says what it did.
    Executed,
    /// Ran and failed, or could not run; `result` says why.
    Failed,
    /// The quorum released the operation; the requester may now call it once.
    Approved,
    /// The requester took the released operation.
    Released,
    Rejected,
    Expired,
}

impl ApprovalState {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Executing => "executing",
            Self::Executed => "executed",
            Self::Failed => "failed",
            Self::Approved => "approved",
            Self::Released => "released",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }
}

/// A request for approval, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    pub params: Params,
    /// Hex SM3 of the parameters' canonical JSON: what an approver may name to approve exactly
    /// what they saw.
    pub digest: String,
    pub requester: String,
    pub created_at: u64,
    pub expires_at: u64,
    /// Distinct administrators needed, the requester included.
    pub needed: u8,
    /// Administrators who approved, in order (never the requester, never twice).
    pub approvers: Vec<String>,
    pub state: ApprovalState,
    /// Who rejected it, if anyone.
    pub rejected_by: Option<String>,
    /// What the execution did or why it failed; the rejection's reason.
    pub result: Option<String>,
}

impl ApprovalRequest {
    pub(super) fn encode(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|_| store_corrupt("approval request"))
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes).map_err(|_| store_corrupt("approval request"))
    }

    /// The state with expiry applied: a pending request past its time reads as expired even
    /// before the scheduler marks it.
    #[must_use]
    pub fn state_at(&self, now: u64) -> ApprovalState {
        if matches!(self.state, ApprovalState::Pending | ApprovalState::Approved)
            && now >= self.expires_at
        {
            ApprovalState::Expired
        } else {
            self.state
        }
    }
}
