//! Who may do what (KEY-9): principals, roles, grants, and the one authorisation matrix.
//!
//! A principal is the subject of a client certificate (its SAN URI, else its CN), registered by
//! an administrator with one role. Separation of duties: apps use keys (their namespace's, or
//! keys granted to it) but manage nothing; admins manage keys, grants and principals but never
//! see plaintext data; auditors read the inventory and the audit trail only.

use core::fmt;
use core::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::error::{Error, InvalidInput};
use crate::keys::Namespace;
use crate::keys::record::KeyRecord;

/// A principal's role.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Role {
    /// An application server bound to one namespace.
    App { namespace: Namespace },
    /// A security administrator.
    Admin,
    /// An auditor.
    Auditor,
}

impl Role {
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::App { .. } => "app",
            Self::Admin => "admin",
            Self::Auditor => "auditor",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub subject: String,
    #[serde(flatten)]
    pub role: Role,
    #[serde(default)]
    pub created_at: u64,
}

impl Principal {
    pub const MAX_SUBJECT_LEN: usize = 512;

    pub fn new(subject: &str, role: Role) -> Result<Self, Error> {
        let ok = !subject.is_empty()
            && subject.len() <= Self::MAX_SUBJECT_LEN
            && subject.chars().all(|c| !c.is_control());
        if !ok {
            return Err(
                InvalidInput::new("subject", "must be 1 to 512 printable characters").into(),
            );
        }
        Ok(Self {
            subject: subject.to_owned(),
            role,
            created_at: 0,
        })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role {
            Role::App { namespace } => write!(f, "{} (app in {namespace})", self.subject),
            Role::Admin | Role::Auditor => write!(f, "{} ({})", self.subject, self.role.name()),
        }
    }
}

/// Every operation of the KMS, as the authorisation matrix sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Status,
    Unseal,
    Seal,
    CreateKey,
    DescribeKey,
    ListKeys,
    RotateKey,
    SetRotationPolicy,
    EnableKey,
    DisableKey,
    MarkCompromised,
    ScheduleKeyDestruction,
    CancelKeyDestruction,
    CreateAlias,
    DeleteAlias,
    CreateGrant,
    RevokeGrant,
    ListGrants,
    AddPrincipal,
    RemovePrincipal,
    ListPrincipals,
    Backup,
    Encrypt,
    Decrypt,
    ReEncrypt,
    GenerateDataKey,
    GenerateDataKeyWithoutPlaintext,
    Sign,
    Verify,
    AsymmetricDecrypt,
    GetPublicKey,
    GenerateMac,
    VerifyMac,
    GenerateRandom,
    ExportInventory,
    ExportAudit,
}

impl Op {
    pub const ALL: [Self; 36] = [
        Self::Status,
        Self::Unseal,
        Self::Seal,
        Self::CreateKey,
        Self::DescribeKey,
        Self::ListKeys,
        Self::RotateKey,
        Self::SetRotationPolicy,
        Self::EnableKey,
        Self::DisableKey,
        Self::MarkCompromised,
        Self::ScheduleKeyDestruction,
        Self::CancelKeyDestruction,
        Self::CreateAlias,
        Self::DeleteAlias,
        Self::CreateGrant,
        Self::RevokeGrant,
        Self::ListGrants,
        Self::AddPrincipal,
        Self::RemovePrincipal,
        Self::ListPrincipals,
        Self::Backup,
        Self::Encrypt,
        Self::Decrypt,
        Self::ReEncrypt,
        Self::GenerateDataKey,
        Self::GenerateDataKeyWithoutPlaintext,
        Self::Sign,
        Self::Verify,
        Self::AsymmetricDecrypt,
        Self::GetPublicKey,
        Self::GenerateMac,
        Self::VerifyMac,
        Self::GenerateRandom,
        Self::ExportInventory,
        Self::ExportAudit,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Unseal => "unseal",
            Self::Seal => "seal",
            Self::CreateKey => "create keys",
            Self::DescribeKey => "describe keys",
            Self::ListKeys => "list keys",
            Self::RotateKey => "rotate keys",
            Self::SetRotationPolicy => "set rotation policies",
            Self::EnableKey => "enable keys",
            Self::DisableKey => "disable keys",
            Self::MarkCompromised => "mark keys compromised",
            Self::ScheduleKeyDestruction => "schedule key destruction",
            Self::CancelKeyDestruction => "cancel key destruction",
            Self::CreateAlias => "create aliases",
            Self::DeleteAlias => "delete aliases",
            Self::CreateGrant => "create grants",
            Self::RevokeGrant => "revoke grants",
            Self::ListGrants => "list grants",
            Self::AddPrincipal => "add principals",
            Self::RemovePrincipal => "remove principals",
            Self::ListPrincipals => "list principals",
            Self::Backup => "back up the store",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::ReEncrypt => "re-encrypt",
            Self::GenerateDataKey => "generate data keys",
            Self::GenerateDataKeyWithoutPlaintext => "generate data keys without plaintext",
            Self::Sign => "sign",
            Self::Verify => "verify",
            Self::AsymmetricDecrypt => "decrypt with asymmetric keys",
            Self::GetPublicKey => "get public keys",
            Self::GenerateMac => "generate MACs",
            Self::VerifyMac => "verify MACs",
            Self::GenerateRandom => "generate random bytes",
            Self::ExportInventory => "export the key inventory",
            Self::ExportAudit => "export the audit trail",
        }
    }

    /// The grant operation this key operation needs, when it uses a key.
    #[must_use]
    pub fn grant_op(self) -> Option<GrantOp> {
        match self {
            Self::Encrypt => Some(GrantOp::Encrypt),
            Self::Decrypt => Some(GrantOp::Decrypt),
            Self::ReEncrypt => Some(GrantOp::ReEncrypt),
            Self::GenerateDataKey | Self::GenerateDataKeyWithoutPlaintext => {
                Some(GrantOp::GenerateDataKey)
            }
            Self::Sign => Some(GrantOp::Sign),
            Self::Verify => Some(GrantOp::Verify),
            Self::AsymmetricDecrypt => Some(GrantOp::AsymmetricDecrypt),
            Self::GetPublicKey => Some(GrantOp::GetPublicKey),
            Self::GenerateMac => Some(GrantOp::GenerateMac),
            Self::VerifyMac => Some(GrantOp::VerifyMac),
            Self::DescribeKey => Some(GrantOp::Describe),
            Self::Status
            | Self::Unseal
            | Self::Seal
            | Self::CreateKey
            | Self::ListKeys
            | Self::RotateKey
            | Self::SetRotationPolicy
            | Self::EnableKey
            | Self::DisableKey
            | Self::MarkCompromised
            | Self::ScheduleKeyDestruction
            | Self::CancelKeyDestruction
            | Self::CreateAlias
            | Self::DeleteAlias
            | Self::CreateGrant
            | Self::RevokeGrant
            | Self::ListGrants
            | Self::AddPrincipal
            | Self::RemovePrincipal
            | Self::ListPrincipals
            | Self::Backup
            | Self::GenerateRandom
            | Self::ExportInventory
            | Self::ExportAudit => None,
        }
    }
}

/// The authorisation matrix, role × operation. The only place roles are checked.
#[must_use]
pub fn allowed(role: &Role, op: Op) -> bool {
    let (app, admin, auditor) = match op {
        // Everyone known may read status, describe/list keys (apps: within reach) and public keys.
        Op::Status | Op::DescribeKey | Op::ListKeys | Op::GetPublicKey => (true, true, true),
        // Key lifecycle, grants, principals and sealing: administrators only.
        Op::Unseal
        | Op::Seal
        | Op::CreateKey
        | Op::RotateKey
        | Op::SetRotationPolicy
        | Op::EnableKey
        | Op::DisableKey
        | Op::MarkCompromised
        | Op::ScheduleKeyDestruction
        | Op::CancelKeyDestruction
        | Op::CreateAlias
        | Op::DeleteAlias
        | Op::CreateGrant
        | Op::RevokeGrant
        | Op::AddPrincipal
        | Op::RemovePrincipal
        | Op::Backup => (false, true, false),
        Op::ListGrants | Op::ListPrincipals | Op::ExportInventory => (false, true, true),
        // The data plane: applications only (admins never get plaintext of data).
        Op::Encrypt
        | Op::Decrypt
        | Op::ReEncrypt
        | Op::GenerateDataKey
        | Op::GenerateDataKeyWithoutPlaintext
        | Op::Sign
        | Op::Verify
        | Op::AsymmetricDecrypt
        | Op::GenerateMac
        | Op::VerifyMac
        | Op::GenerateRandom => (true, false, false),
        Op::ExportAudit => (false, false, true),
    };
    match role {
        Role::App { .. } => app,
        Role::Admin => admin,
        Role::Auditor => auditor,
    }
}

/// Kinds of operation at the type level: each [`Op`] has a marker type in [`ops`], so that a
/// [`Authorized`] proof names the one operation it allows.
pub trait Operation: sealed::Sealed {
    const OP: Op;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! operation_markers {
    ($($name:ident),* $(,)?) => {
        /// One marker type per [`Op`](super::Op), for [`Authorized`](super::Authorized).
        pub mod ops {
            $(
                #[doc = concat!("Marker for [`Op::", stringify!($name), "`](super::Op::", stringify!($name), ").")]
                #[derive(Debug)]
                pub enum $name {}
                impl super::sealed::Sealed for $name {}
                impl super::Operation for $name {
                    const OP: super::Op = super::Op::$name;
                }
            )*
        }

        /// Every marker's operation, in [`Op::ALL`]'s order (checked by a test).
        #[cfg(test)]
        const MARKED: &[Op] = &[$(<ops::$name as Operation>::OP),*];
    };
}

operation_markers!(
    Status,
    Unseal,
    Seal,
    CreateKey,
    DescribeKey,
    ListKeys,
    RotateKey,
    SetRotationPolicy,
    EnableKey,
    DisableKey,
    MarkCompromised,
    ScheduleKeyDestruction,
    CancelKeyDestruction,
    CreateAlias,
    DeleteAlias,
    CreateGrant,
    RevokeGrant,
    ListGrants,
    AddPrincipal,
    RemovePrincipal,
    ListPrincipals,
    Backup,
    Encrypt,
    Decrypt,
    ReEncrypt,
    GenerateDataKey,
    GenerateDataKeyWithoutPlaintext,
    Sign,
    Verify,
    AsymmetricDecrypt,
    GetPublicKey,
    GenerateMac,
    VerifyMac,
    GenerateRandom,
    ExportInventory,
    ExportAudit,
);

/// The data-key operations: one hands out the plaintext (or encrypts it to the caller), the
/// other only the wrapped copy.
pub trait DataKeyOperation: Operation {
    /// Whether the proof covers a plaintext (or caller-encrypted) data key.
    const PLAINTEXT: bool;
}

impl DataKeyOperation for ops::GenerateDataKey {
    const PLAINTEXT: bool = true;
}

impl DataKeyOperation for ops::GenerateDataKeyWithoutPlaintext {
    const PLAINTEXT: bool = false;
}

/// Proof that the matrix allowed `principal` to perform operation `O`. Every data-plane and
/// administrative method of [`Kms`](crate::Kms) takes one, and only [`authorize`] makes one,
/// so no call path reaches a key without the role check:
///
/// ```compile_fail
/// # use kms_core::authz::{Authorized, ops, Principal};
/// # fn f(p: &Principal) {
/// let forged: Authorized<'_, ops::Encrypt> = Authorized { principal: p, _op: Default::default() };
/// # }
/// ```
///
/// and a proof for one operation is not one for another:
///
/// ```compile_fail
/// # use kms_core::authz::{authorize, ops, Principal};
/// # use kms_core::keys::KeyRef;
/// # use kms_core::envelope::EncryptionContext;
/// # fn f(kms: &kms_core::Kms, p: &Principal, key: &KeyRef, ctx: &EncryptionContext) {
/// let verify_only = authorize::<ops::Verify>(p).unwrap();
/// let _ = kms.encrypt(&verify_only, key, ctx, b"data");
/// # }
/// ```
pub struct Authorized<'a, O: Operation> {
    principal: &'a Principal,
    _op: PhantomData<O>,
}

impl<'a, O: Operation> Authorized<'a, O> {
    /// Who was authorised.
    #[must_use]
    pub fn principal(&self) -> &'a Principal {
        self.principal
    }

    #[must_use]
    pub fn op(&self) -> Op {
        O::OP
    }
}

impl<O: Operation> fmt::Debug for Authorized<'_, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Authorized({} to {})", self.principal, O::OP.name())
    }
}

/// Checks the matrix for operation `O` and returns the proof the core's methods require.
pub fn authorize<O: Operation>(principal: &Principal) -> Result<Authorized<'_, O>, Error> {
    if allowed(&principal.role, O::OP) {
        Ok(Authorized {
            principal,
            _op: PhantomData,
        })
    } else {
        Err(Error::PermissionDenied {
            principal: principal.to_string(),
            op: O::OP.name(),
        })
    }
}

/// Operations a grant can give another namespace on a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantOp {
    Encrypt,
    Decrypt,
    ReEncrypt,
    GenerateDataKey,
    Sign,
    Verify,
    AsymmetricDecrypt,
    GetPublicKey,
    GenerateMac,
    VerifyMac,
    Describe,
}

impl GrantOp {
    pub const ALL: [Self; 11] = [
        Self::Encrypt,
        Self::Decrypt,
        Self::ReEncrypt,
        Self::GenerateDataKey,
        Self::Sign,
        Self::Verify,
        Self::AsymmetricDecrypt,
        Self::GetPublicKey,
        Self::GenerateMac,
        Self::VerifyMac,
        Self::Describe,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::ReEncrypt => "reencrypt",
            Self::GenerateDataKey => "generate-data-key",
            Self::Sign => "sign",
            Self::Verify => "verify",
            Self::AsymmetricDecrypt => "asymmetric-decrypt",
            Self::GetPublicKey => "get-public-key",
            Self::GenerateMac => "generate-mac",
            Self::VerifyMac => "verify-mac",
            Self::Describe => "describe",
        }
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        let norm = crate::policy::names::normalize(s);
        Self::ALL
            .into_iter()
            .find(|op| crate::policy::names::normalize(op.name()) == norm)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|o| o.name()).collect();
                InvalidInput::new(
                    "grant operation",
                    format!("unknown; use one of: {}", names.join(", ")),
                )
                .into()
            })
    }
}

/// A grant: namespace `grantee` may perform `ops` with key `key_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub key_id: crate::keys::KeyId,
    pub grantee: Namespace,
    pub ops: Vec<GrantOp>,
    pub created_at: u64,
}

/// Whether `principal` may use `record` for `op`: its own namespace's keys, or by grant.
/// Admins and auditors reach every key for the operations the matrix gives them.
#[must_use]
pub fn may_use_key(
    principal: &Principal,
    record: &KeyRecord,
    op: GrantOp,
    grant: Option<&Grant>,
) -> bool {
    match &principal.role {
        Role::Admin | Role::Auditor => true,
        Role::App { namespace } => {
            *namespace == record.namespace
                || grant.is_some_and(|g| {
                    g.grantee == *namespace && g.key_id == record.id && g.ops.contains(&op)
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_role_does_everything_and_admins_never_touch_data() {
        let app = Role::App {
            namespace: Namespace::new("a").unwrap(),
        };
        for role in [&app, &Role::Admin, &Role::Auditor] {
            assert!(
                Op::ALL.iter().any(|&op| !allowed(role, op)),
                "{role:?} can do everything"
            );
        }
        for op in [
            Op::Encrypt,
            Op::Decrypt,
            Op::GenerateDataKey,
            Op::AsymmetricDecrypt,
            Op::Sign,
        ] {
            assert!(
                !allowed(&Role::Admin, op) && !allowed(&Role::Auditor, op) && allowed(&app, op)
            );
        }
        for op in [
            Op::CreateKey,
            Op::CreateGrant,
            Op::AddPrincipal,
            Op::MarkCompromised,
        ] {
            assert!(
                allowed(&Role::Admin, op) && !allowed(&app, op) && !allowed(&Role::Auditor, op)
            );
        }
        assert!(
            allowed(&Role::Auditor, Op::ExportAudit) && !allowed(&Role::Admin, Op::ExportAudit)
        );
    }

    #[test]
    fn grant_ops_parse_any_spelling() {
        assert_eq!(
            GrantOp::parse("Generate_Data_Key").unwrap(),
            GrantOp::GenerateDataKey
        );
        assert!(matches!(
            GrantOp::parse("everything"),
            Err(Error::InvalidArgument(e)) if e.field == "grant operation" && e.problem.contains("use one of: encrypt")
        ));
    }

    #[test]
    fn every_operation_has_its_marker() {
        assert_eq!(MARKED, Op::ALL.as_slice());
    }

    #[test]
    fn proofs_follow_the_matrix() {
        let app = Principal::new(
            "app",
            Role::App {
                namespace: Namespace::new("a").unwrap(),
            },
        )
        .unwrap();
        let admin = Principal::new("admin", Role::Admin).unwrap();
        let proof = authorize::<ops::Encrypt>(&app).unwrap();
        assert_eq!((proof.op(), proof.principal()), (Op::Encrypt, &app));
        assert!(matches!(
            authorize::<ops::Encrypt>(&admin),
            Err(Error::PermissionDenied { op: "encrypt", .. })
        ));
        assert!(matches!(
            authorize::<ops::CreateKey>(&app),
            Err(Error::PermissionDenied {
                op: "create keys",
                ..
            })
        ));
    }
}
