//! Who may do what (KEY-9): principals, roles, grants, and the one authorisation matrix.
//!
//! A principal is the subject of a client certificate (its SAN URI, else its CN), registered by
//! an administrator with one role. Separation of duties: apps use keys (their namespace's, or
//! keys granted to it) but manage nothing; admins manage keys, grants and principals but never
//! see plaintext data; auditors read the inventory and the audit trail only.
//!
//! # Grants
//!
//! A [`Grant`] lets the apps of one namespace (the grantee) perform some [`GrantOp`]s with one
//! key of another namespace. A grant means what it says, and nothing more:
//!
//! - **Its operations fit the key's purpose** ([`GrantOp::fits`]): an encrypt key can be granted
//!   `encrypt`, `decrypt`, `reencrypt`, `reencrypt-to`, `generate-data-key`; a sign key `sign`,
//!   `verify`, `get-public-key`, `verify-request`; an asymmetric-decrypt key
//!   `asymmetric-decrypt`, `get-public-key`; a MAC key `generate-mac`, `verify-mac`,
//!   `verify-request`; a password key `get-public-key`,
//!   `hash-password`, `verify-password`; a pepper key `hash-password`, `verify-password`; a
//!   tokenize key `tokenize`, `detokenize` (each its own right); every key `describe`. Anything
//!   else could never be used (KEY-5) and is refused when the grant is made. The password shield
//!   needs its grant on both keys it uses.
//! - **It crosses a namespace boundary.** No grant to the key's own namespace (its apps have
//!   every use already, and such a grant would be a second, misleading source of rights) and
//!   none to `kms-system` (no app lives there).
//!
//! # Re-encryption (`ReEncrypt`)
//!
//! ReEncrypt opens a ciphertext under its *source* key S and seals the plaintext under a
//! *destination* key D (S itself when none is named) without the plaintext leaving the KMS.
//! The anchor is AWS KMS's split into `ReEncryptFrom` and `ReEncryptTo`. For an app of
//! namespace C ([`may_reencrypt_from`], [`reencrypt_destination`]):
//!
//! 1. **From S**: C owns S, or C holds a grant on S that includes `reencrypt`. This is a
//!    decrypt-level right: the plaintext is handled on C's behalf. `decrypt` alone does not
//!    imply it (an operation is given by name, never by another).
//! 2. **To D**, one of:
//!    - D is in **S's namespace** and in C's reach for re-encryption: C owns D, or C holds a
//!      grant on D that includes `reencrypt` or `reencrypt-to`. The data stays with the keys of
//!      the namespace that protected it (rotation onto S's newest version, or a move to a newer
//!      key of the same owner).
//!    - C holds a grant on D that includes **`reencrypt-to`**, wherever D lives: an
//!      administrator said in so many words that C may move data into D.
//!
//! So a grantee can never re-encrypt another namespace's data into a key of its own: D would be
//! outside S's namespace, and a `reencrypt-to` grant on C's own key cannot exist (no grants to
//! a key's own namespace). Before this rule a `reencrypt` grant was a `decrypt` grant in
//! disguise: re-encrypt into an own key, then decrypt. Giving C the plaintext of S's data now
//! takes grants that say so: `decrypt` on S, or `reencrypt` on S together with `decrypt` on a
//! destination that rule 2 lets C re-encrypt into.
//!
//! A destination outside C's reach is `NotFound` (as every key out of reach: ids cannot be
//! probed); one in reach that breaks rule 2 is `PermissionDenied`, since the caller sees it.

use core::fmt;
use core::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::alg::Purpose;
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
    /// A key custodian: holds one unseal share and may give it, nothing else (issue 18: the
    /// share holders named at init who are not administrators).
    Custodian,
}

impl Role {
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::App { .. } => "app",
            Self::Admin => "admin",
            Self::Auditor => "auditor",
            Self::Custodian => "custodian",
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

    /// A principal to register. The subject must be 1 to 512 characters of printable ASCII
    /// (`' '` to `'~'`), with no space at either end and no two spaces in a row: SAN URIs
    /// (`kms://app`, `spiffe://domain/workload`) and common names such as `Payment Gateway`
    /// pass, while control characters, look-alike letters from other scripts (no homoglyphs:
    /// `kms://аpp` with a Cyrillic `а` is refused) and subjects that differ only in spacing
    /// cannot be registered. Principals stored before this rule load unchanged (serde does not
    /// call this), so a registered subject keeps working.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (field `subject`) saying what a subject may contain.
    pub fn new(subject: &str, role: Role) -> Result<Self, Error> {
        let printable = subject.bytes().all(|b| (b' '..=b'~').contains(&b));
        let ok = !subject.is_empty()
            && subject.len() <= Self::MAX_SUBJECT_LEN
            && printable
            && !subject.starts_with(' ')
            && !subject.ends_with(' ')
            && !subject.contains("  ");
        if !ok {
            return Err(InvalidInput::new(
                "subject",
                "must be 1 to 512 printable ASCII characters (no control or non-ASCII characters), \
                 without leading, trailing or repeated spaces",
            )
            .into());
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
            Role::Admin | Role::Auditor | Role::Custodian => {
                write!(f, "{} ({})", self.subject, self.role.name())
            }
        }
    }
}

/// The operations, listed once: the [`Op`] enum, [`Op::ALL`] and one marker type per
/// operation in [`ops`] (for [`Authorized`]) are all made from this list.
macro_rules! operations {
    ($($name:ident),* $(,)?) => {
        /// Every operation of the KMS, as the authorisation matrix sees it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Op {
            $($name),*
        }

        impl Op {
            pub const ALL: [Self; [$(Op::$name),*].len()] = [$(Self::$name),*];
        }

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
    };
}

operations!(
    Status,
    Unseal,
    Seal,
    CreateKey,
    ImportPublicKey,
    GetImportParameters,
    ImportKeyMaterial,
    ExportKey,
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
    BatchEncrypt,
    BatchDecrypt,
    BatchReEncrypt,
    BatchGenerateDataKey,
    BatchSign,
    BatchVerify,
    BatchGenerateMac,
    BatchVerifyMac,
    ExportInventory,
    ExportAudit,
    Approve,
    Reject,
    ListApprovals,
    HashPassword,
    VerifyPassword,
    Tokenize,
    Detokenize,
    VerifyRequest,
);

impl Op {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Unseal => "unseal",
            Self::Seal => "seal",
            Self::CreateKey => "create keys",
            Self::ImportPublicKey => "import outside public keys",
            Self::GetImportParameters => "get import parameters",
            Self::ImportKeyMaterial => "import key material",
            Self::ExportKey => "export keys",
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
            Self::BatchEncrypt => "encrypt in batches",
            Self::BatchDecrypt => "decrypt in batches",
            Self::BatchReEncrypt => "re-encrypt in batches",
            Self::BatchGenerateDataKey => "generate data keys in batches",
            Self::BatchSign => "sign in batches",
            Self::BatchVerify => "verify in batches",
            Self::BatchGenerateMac => "generate MACs in batches",
            Self::BatchVerifyMac => "verify MACs in batches",
            Self::ExportInventory => "export the key inventory",
            Self::ExportAudit => "export the audit trail",
            Self::Approve => "approve requests",
            Self::Reject => "reject requests",
            Self::ListApprovals => "list approval requests",
            Self::HashPassword => "hash passwords",
            Self::VerifyPassword => "verify passwords",
            Self::Tokenize => "tokenize",
            Self::Detokenize => "detokenize",
            Self::VerifyRequest => "verify signed requests",
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
            Self::HashPassword => Some(GrantOp::HashPassword),
            Self::VerifyPassword => Some(GrantOp::VerifyPassword),
            Self::Tokenize => Some(GrantOp::Tokenize),
            Self::Detokenize => Some(GrantOp::Detokenize),
            Self::VerifyRequest => Some(GrantOp::VerifyRequest),
            Self::Status
            | Self::Unseal
            | Self::Seal
            | Self::CreateKey
            | Self::ImportPublicKey
            | Self::GetImportParameters
            | Self::ImportKeyMaterial
            | Self::ExportKey
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
            // A batch uses no key itself: each item is authorised as its own operation.
            | Self::BatchEncrypt
            | Self::BatchDecrypt
            | Self::BatchReEncrypt
            | Self::BatchGenerateDataKey
            | Self::BatchSign
            | Self::BatchVerify
            | Self::BatchGenerateMac
            | Self::BatchVerifyMac
            | Self::ExportInventory
            | Self::ExportAudit
            | Self::Approve
            | Self::Reject
            | Self::ListApprovals => None,
        }
    }

    /// The operation of each item of a batch operation. A batch call is first authorised as a
    /// whole (its own row of the matrix, which is its items' row), then every item again as
    /// the single call, with the [`Authorized`] proof the core's method requires.
    #[must_use]
    pub fn batch_item(self) -> Option<Self> {
        match self {
            Self::BatchEncrypt => Some(Self::Encrypt),
            Self::BatchDecrypt => Some(Self::Decrypt),
            Self::BatchReEncrypt => Some(Self::ReEncrypt),
            Self::BatchGenerateDataKey => Some(Self::GenerateDataKey),
            Self::BatchSign => Some(Self::Sign),
            Self::BatchVerify => Some(Self::Verify),
            Self::BatchGenerateMac => Some(Self::GenerateMac),
            Self::BatchVerifyMac => Some(Self::VerifyMac),
            Self::Status
            | Self::Unseal
            | Self::Seal
            | Self::CreateKey
            | Self::ImportPublicKey
            | Self::GetImportParameters
            | Self::ImportKeyMaterial
            | Self::ExportKey
            | Self::DescribeKey
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
            | Self::Encrypt
            | Self::Decrypt
            | Self::ReEncrypt
            | Self::GenerateDataKey
            | Self::GenerateDataKeyWithoutPlaintext
            | Self::Sign
            | Self::Verify
            | Self::AsymmetricDecrypt
            | Self::GetPublicKey
            | Self::GenerateMac
            | Self::VerifyMac
            | Self::GenerateRandom
            | Self::ExportInventory
            | Self::ExportAudit
            | Self::Approve
            | Self::Reject
            | Self::ListApprovals
            | Self::HashPassword
            | Self::VerifyPassword
            // Tokenize and Detokenize carry their own values in batches: no item operation.
            | Self::Tokenize
            | Self::Detokenize
            // One request, one key: no batch form.
            | Self::VerifyRequest => None,
        }
    }
}

/// The authorisation matrix, role × operation. The only place roles are checked.
#[must_use]
pub fn allowed(role: &Role, op: Op) -> bool {
    // Custodians hold an unseal share: they may read status and give it, nothing else.
    if let Role::Custodian = role {
        return matches!(op, Op::Status | Op::Unseal);
    }
    let (app, admin, auditor) = match op {
        // Everyone known may read status, describe/list keys (apps: within reach) and public keys.
        Op::Status | Op::DescribeKey | Op::ListKeys | Op::GetPublicKey => (true, true, true),
        // Key lifecycle, grants, principals and sealing: administrators only.
        Op::Unseal
        | Op::Seal
        | Op::CreateKey
        | Op::ImportPublicKey
        | Op::GetImportParameters
        | Op::ImportKeyMaterial
        | Op::ExportKey
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
        | Op::Backup
        | Op::Approve
        | Op::Reject => (false, true, false),
        Op::ListGrants | Op::ListPrincipals | Op::ExportInventory | Op::ListApprovals => {
            (false, true, true)
        }
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
        | Op::GenerateRandom
        // The password shield (issue 22 item 2): a password is data like any plaintext.
        | Op::HashPassword
        | Op::VerifyPassword
        | Op::Tokenize
        | Op::Detokenize
        // Request verification (issue 22 item 3): for the gateways in front of the apps.
        | Op::VerifyRequest => (true, false, false),
        // Batches of the data plane: as their items (`Op::batch_item`), applications only.
        Op::BatchEncrypt
        | Op::BatchDecrypt
        | Op::BatchReEncrypt
        | Op::BatchGenerateDataKey
        | Op::BatchSign
        | Op::BatchVerify
        | Op::BatchGenerateMac
        | Op::BatchVerifyMac => (true, false, false),
        Op::ExportAudit => (false, false, true),
    };
    match role {
        Role::App { .. } => app,
        Role::Admin => admin,
        Role::Auditor => auditor,
        Role::Custodian => false,
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
///
/// A proof made by [`authorize`] carries no approval: an operation that needs dual control
/// (`kms/approvals.rs`) refuses it and files a pending request instead. Only the approvals path
/// of the core makes a proof that carries one ([`Authorized::approval`]).
pub struct Authorized<'a, O: Operation> {
    principal: &'a Principal,
    /// The approval request whose quorum this proof stands on, if any.
    approval: Option<&'a str>,
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

    /// The approval request (`apr-…`) whose quorum this proof carries: `None` for every proof
    /// [`authorize`] makes.
    #[must_use]
    pub fn approval(&self) -> Option<&'a str> {
        self.approval
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
            approval: None,
            _op: PhantomData,
        })
    } else {
        Err(Error::PermissionDenied {
            principal: principal.to_string(),
            op: O::OP.name(),
        })
    }
}

/// [`authorize`], for a request whose quorum of approvals was reached (`kms/approvals.rs`, the
/// only caller): the matrix still applies to the principal.
pub(crate) fn authorize_approved<'a, O: Operation>(
    principal: &'a Principal,
    approval: &'a str,
) -> Result<Authorized<'a, O>, Error> {
    let mut proof = authorize::<O>(principal)?;
    proof.approval = Some(approval);
    Ok(proof)
}

/// Operations a grant can give another namespace on a key. Names (and the stored serde names)
/// are stable: stored grants and scripts use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantOp {
    Encrypt,
    Decrypt,
    /// Re-encrypt *from* the key (decrypt-level; see the module doc).
    ReEncrypt,
    /// Re-encrypt *into* the key, from a key of any namespace (see the module doc).
    ReEncryptTo,
    GenerateDataKey,
    Sign,
    Verify,
    AsymmetricDecrypt,
    GetPublicKey,
    GenerateMac,
    VerifyMac,
    Describe,
    /// The password shield (issue 22 item 2), on a password key or a pepper key.
    HashPassword,
    VerifyPassword,
    /// Values into tokens with a tokenize key.
    Tokenize,
    /// Tokens back into values: its own right, never implied by `tokenize` (re-identifying
    /// de-identified data is the sensitive direction).
    Detokenize,
    /// Signed requests checked with a sign key (a partner's public key) or a MAC key.
    VerifyRequest,
}

impl GrantOp {
    /// Every grant operation; the CLI's accepted values are made from this list.
    pub const ALL: [Self; 17] = [
        Self::Encrypt,
        Self::Decrypt,
        Self::ReEncrypt,
        Self::ReEncryptTo,
        Self::GenerateDataKey,
        Self::Sign,
        Self::Verify,
        Self::AsymmetricDecrypt,
        Self::GetPublicKey,
        Self::GenerateMac,
        Self::VerifyMac,
        Self::Describe,
        Self::HashPassword,
        Self::VerifyPassword,
        Self::Tokenize,
        Self::Detokenize,
        Self::VerifyRequest,
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
            Self::ReEncryptTo => "reencrypt-to",
            Self::HashPassword => "hash-password",
            Self::VerifyPassword => "verify-password",
            Self::Tokenize => "tokenize",
            Self::Detokenize => "detokenize",
            Self::VerifyRequest => "verify-request",
        }
    }

    /// Whether the operation can ever be used on a key of `purpose` (KEY-5): the table of the
    /// module doc. A grant of an operation that does not fit is refused.
    #[must_use]
    pub fn fits(self, purpose: Purpose) -> bool {
        match self {
            Self::Describe => true,
            // Encrypt with an asymmetric-decrypt key encrypts to its public key (a partner's).
            Self::Encrypt => matches!(purpose, Purpose::Encrypt | Purpose::AsymmetricDecrypt),
            Self::Decrypt | Self::ReEncrypt | Self::ReEncryptTo | Self::GenerateDataKey => {
                purpose == Purpose::Encrypt
            }
            Self::Sign | Self::Verify => purpose == Purpose::Sign,
            Self::AsymmetricDecrypt => purpose == Purpose::AsymmetricDecrypt,
            Self::GetPublicKey => purpose.is_asymmetric(),
            Self::GenerateMac | Self::VerifyMac => purpose == Purpose::Mac,
            // Both keys of the shield: the password key opens, the pepper peppers.
            Self::HashPassword | Self::VerifyPassword => {
                matches!(purpose, Purpose::Password | Purpose::Pepper)
            }
            Self::Tokenize | Self::Detokenize => purpose == Purpose::Tokenize,
            Self::VerifyRequest => matches!(purpose, Purpose::Sign | Purpose::Mac),
        }
    }

    /// The operations that fit a key of `purpose`, in [`GrantOp::ALL`] order.
    #[must_use]
    pub fn fitting(purpose: Purpose) -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|op| op.fits(purpose))
            .collect()
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
        Role::Custodian => false,
        Role::App { namespace } => {
            *namespace == record.namespace
                || grant.is_some_and(|g| {
                    g.grantee == *namespace && g.key_id == record.id && g.ops.contains(&op)
                })
        }
    }
}

/// Rule 1 of re-encryption (module doc): whether `principal` may re-encrypt *from* `source`,
/// given its namespace's grant on that key, if any.
#[must_use]
pub fn may_reencrypt_from(
    principal: &Principal,
    source: &KeyRecord,
    grant: Option<&Grant>,
) -> bool {
    may_use_key(principal, source, GrantOp::ReEncrypt, grant)
}

/// What rule 2 of re-encryption says about a destination key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReEncryptTo {
    /// The destination may receive the data.
    Allowed,
    /// The destination is not in the caller's reach at all: report it as missing.
    OutOfReach,
    /// The caller reaches the destination, but it is outside the source key's namespace and no
    /// `reencrypt-to` grant names it.
    OutsideSourceNamespace,
}

/// Rule 2 of re-encryption (module doc): whether `principal` may re-encrypt data of a key in
/// `source_namespace` *into* `destination`, given its namespace's grant on the destination.
/// Admins and auditors never get here (the matrix keeps the data plane to apps).
#[must_use]
pub fn reencrypt_destination(
    principal: &Principal,
    source_namespace: &Namespace,
    destination: &KeyRecord,
    grant: Option<&Grant>,
) -> ReEncryptTo {
    let Role::App { namespace } = &principal.role else {
        return ReEncryptTo::Allowed;
    };
    let granted = |op| {
        grant.is_some_and(|g| {
            g.grantee == *namespace && g.key_id == destination.id && g.ops.contains(&op)
        })
    };
    if granted(GrantOp::ReEncryptTo) {
        return ReEncryptTo::Allowed;
    }
    let in_reach = *namespace == destination.namespace || granted(GrantOp::ReEncrypt);
    if !in_reach {
        ReEncryptTo::OutOfReach
    } else if destination.namespace == *source_namespace {
        ReEncryptTo::Allowed
    } else {
        ReEncryptTo::OutsideSourceNamespace
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
        for role in [&app, &Role::Admin, &Role::Auditor, &Role::Custodian] {
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
            Op::HashPassword,
            Op::VerifyPassword,
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
        let custodian: Vec<Op> = Op::ALL
            .into_iter()
            .filter(|&op| allowed(&Role::Custodian, op))
            .collect();
        assert_eq!(custodian, [Op::Status, Op::Unseal]);
    }

    #[test]
    fn subjects_are_printable_ascii_without_confusable_spacing() {
        for good in [
            "kms://app",
            "spiffe://kms.test/app-payments",
            "Payment Gateway",
            "CN=x,O=y",
            &"a".repeat(512),
        ] {
            assert!(Principal::new(good, Role::Auditor).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "kms://\u{0430}pp",
            "kms://app\u{200b}",
            "a\u{0}b",
            "a\tb",
            " a",
            "a ",
            "a  b",
            &"a".repeat(513),
        ] {
            assert!(
                matches!(Principal::new(bad, Role::Auditor), Err(Error::InvalidArgument(e)) if e.field == "subject"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn grant_ops_fit_purposes_and_keep_their_names() {
        let names: Vec<&str> = GrantOp::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(
            names,
            [
                "encrypt",
                "decrypt",
                "reencrypt",
                "reencrypt-to",
                "generate-data-key",
                "sign",
                "verify",
                "asymmetric-decrypt",
                "get-public-key",
                "generate-mac",
                "verify-mac",
                "describe",
                "hash-password",
                "verify-password",
                "tokenize",
                "detokenize",
                "verify-request"
            ]
        );
        assert_eq!(
            GrantOp::parse("ReEncrypt-To").unwrap(),
            GrantOp::ReEncryptTo
        );
        assert_eq!(GrantOp::parse("reencrypt").unwrap(), GrantOp::ReEncrypt);
        // Stored grants keep their serde names.
        assert_eq!(
            serde_json::to_string(&[GrantOp::ReEncrypt, GrantOp::ReEncryptTo]).unwrap(),
            r#"["re-encrypt","re-encrypt-to"]"#
        );
        let fit = |p| -> Vec<&str> { GrantOp::fitting(p).into_iter().map(GrantOp::name).collect() };
        assert_eq!(
            fit(Purpose::Encrypt),
            [
                "encrypt",
                "decrypt",
                "reencrypt",
                "reencrypt-to",
                "generate-data-key",
                "describe"
            ]
        );
        assert_eq!(
            fit(Purpose::Sign),
            [
                "sign",
                "verify",
                "get-public-key",
                "describe",
                "verify-request"
            ]
        );
        assert_eq!(
            fit(Purpose::AsymmetricDecrypt),
            [
                "encrypt",
                "asymmetric-decrypt",
                "get-public-key",
                "describe"
            ]
        );
        assert_eq!(
            fit(Purpose::Mac),
            ["generate-mac", "verify-mac", "describe", "verify-request"]
        );
        assert_eq!(
            fit(Purpose::Password),
            [
                "get-public-key",
                "describe",
                "hash-password",
                "verify-password"
            ]
        );
        assert_eq!(
            fit(Purpose::Pepper),
            ["describe", "hash-password", "verify-password"]
        );
        assert_eq!(
            fit(Purpose::Tokenize),
            ["describe", "tokenize", "detokenize"]
        );
        // Every key operation's grant op fits the purpose that operation needs.
        for (op, purpose) in [
            (Op::Encrypt, Purpose::Encrypt),
            (Op::Decrypt, Purpose::Encrypt),
            (Op::ReEncrypt, Purpose::Encrypt),
            (Op::GenerateDataKey, Purpose::Encrypt),
            (Op::Sign, Purpose::Sign),
            (Op::Verify, Purpose::Sign),
            (Op::AsymmetricDecrypt, Purpose::AsymmetricDecrypt),
            (Op::GenerateMac, Purpose::Mac),
            (Op::VerifyMac, Purpose::Mac),
            (Op::HashPassword, Purpose::Password),
            (Op::HashPassword, Purpose::Pepper),
            (Op::VerifyPassword, Purpose::Password),
            (Op::VerifyPassword, Purpose::Pepper),
            (Op::Tokenize, Purpose::Tokenize),
            (Op::Detokenize, Purpose::Tokenize),
            (Op::VerifyRequest, Purpose::Sign),
            (Op::VerifyRequest, Purpose::Mac),
        ] {
            assert!(op.grant_op().unwrap().fits(purpose), "{op:?}");
        }
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
        fn op_of<O: Operation>() -> Op {
            O::OP
        }
        assert_eq!(Op::ALL.len(), 56);
        assert_eq!(op_of::<ops::Encrypt>(), Op::Encrypt);
        assert_eq!(op_of::<ops::ExportAudit>(), Op::ExportAudit);
        let names: std::collections::HashSet<&str> = Op::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names.len(), Op::ALL.len(), "two operations share a name");
    }

    /// A batch's row is its items' row, for every role: a batch never lets a role do what the
    /// single call would not, nor refuses what it would allow.
    #[test]
    fn batch_rows_are_their_items_rows() {
        let app = Role::App {
            namespace: Namespace::new("a").unwrap(),
        };
        let batches: Vec<(Op, Op)> = Op::ALL
            .into_iter()
            .filter_map(|op| op.batch_item().map(|item| (op, item)))
            .collect();
        assert_eq!(
            batches,
            [
                (Op::BatchEncrypt, Op::Encrypt),
                (Op::BatchDecrypt, Op::Decrypt),
                (Op::BatchReEncrypt, Op::ReEncrypt),
                (Op::BatchGenerateDataKey, Op::GenerateDataKey),
                (Op::BatchSign, Op::Sign),
                (Op::BatchVerify, Op::Verify),
                (Op::BatchGenerateMac, Op::GenerateMac),
                (Op::BatchVerifyMac, Op::VerifyMac),
            ]
        );
        for (batch, item) in batches {
            for role in [&app, &Role::Admin, &Role::Auditor, &Role::Custodian] {
                assert_eq!(
                    allowed(role, batch),
                    allowed(role, item),
                    "{batch:?} {role:?}"
                );
            }
            assert!(allowed(&app, batch) && !allowed(&Role::Admin, batch));
            // A batch proof reaches no key: only the item's own proof does.
            assert_eq!(batch.grant_op(), None);
            assert!(item.grant_op().is_some());
        }
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
