//! The typed fields of an audit record: who called ([`Role`]), what was called
//! ([`Operation`]), how it ended ([`Outcome`]) and what must stand out ([`Flag`]).
//!
//! Each serialises to exactly the string that format version 1 wrote for it, so the JSON Lines
//! export does not change for any value a server has written.
//!
//! A name none of an enum's variants has is kept as written: see [`Unrecognised`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name that none of an enum's variants has, kept byte for byte.
///
/// Every enum has an `Other` variant holding the [`Unrecognised`] name as written, and parsing
/// never fails. Parsing strictly was rejected, for three reasons:
///
/// - verifying a trail checks its integrity, not its vocabulary. A line is hashed as it
///   re-serialises, so it must parse and re-serialise to its exact bytes: a strict parse would
///   report an intact export from an older version (an operation that has since been removed)
///   or from a newer node of the same chain during a rolling upgrade as "not an audit line",
///   which an auditor cannot tell from tampering;
/// - the server records a call to a method it does not have (UNIMPLEMENTED) under the path the
///   client sent, so an operation that is not one of ours is a value the trail really holds;
/// - the inventory reads the stored records, and must not skip one for a name it does not know.
///
/// An [`Unrecognised`] is made only by parsing a name that matches no variant, so a known name
/// always becomes its variant: `Other` never stands for a name a variant has, and matching on
/// the variants is exact.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Unrecognised(String);

impl Unrecognised {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Unrecognised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An enum of names with an `Other` variant, serialised as its name.
macro_rules! names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A name this version does not know, as written (see [`Unrecognised`]).
            Other(Unrecognised),
        }

        impl $name {
            /// Every variant this version knows.
            pub const KNOWN: &'static [Self] = &[$(Self::$variant),+];

            /// The name as written in the trail.
            #[must_use]
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $text, )+
                    Self::Other(name) => name.as_str(),
                }
            }

            /// The variant with this name, or `Other` for a name this version does not know.
            #[must_use]
            pub fn parse(name: &str) -> Self {
                match name {
                    $( $text => Self::$variant, )+
                    _ => Self::Other(Unrecognised(name.to_owned())),
                }
            }

            /// Whether this version knows the name (it is not `Other`).
            #[must_use]
            pub const fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<&str> for $name {
            fn from(name: &str) -> Self {
                Self::parse(name)
            }
        }

        impl From<String> for $name {
            fn from(name: String) -> Self {
                Self::parse(&name)
            }
        }

        /// Compares the name as written, for callers that hold names as text.
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::from)
            }
        }
    };
}

names! {
    /// The caller's role as the audit trail names it.
    pub enum Role {
        /// An application server ([`crate::authz::Role::App`]).
        App = "app",
        Admin = "admin",
        Auditor = "auditor",
        /// A holder of one unseal share ([`crate::authz::Role::Custodian`]).
        Custodian = "custodian",
        /// A caller the server could not identify as a registered principal: no usable
        /// certificate, an unregistered subject, or a refusal before identification.
        Unregistered = "unregistered",
        /// The server's own scheduler (due rotations and destructions), principal
        /// [`SCHEDULER_PRINCIPAL`].
        Scheduler = "scheduler",
        /// The KMS itself: the audit writer's key transitions, principal
        /// [`AUDIT_WRITER_PRINCIPAL`].
        System = "system",
    }
}

/// The principal the scheduler's records name.
pub const SCHEDULER_PRINCIPAL: &str = "kms-scheduler";

/// The principal of the audit writer's own records (audit key transitions).
pub const AUDIT_WRITER_PRINCIPAL: &str = "kms-audit-writer";

impl From<&crate::authz::Role> for Role {
    fn from(role: &crate::authz::Role) -> Self {
        match role {
            crate::authz::Role::App { .. } => Self::App,
            crate::authz::Role::Admin => Self::Admin,
            crate::authz::Role::Auditor => Self::Auditor,
            crate::authz::Role::Custodian => Self::Custodian,
        }
    }
}

names! {
    /// The audited gRPC method, named `Service/Method` as in its path `/kms.v1.Service/Method`.
    /// A path the server has no method for is kept as `Other` (the call was still audited).
    pub enum Operation {
        Encrypt = "Crypto/Encrypt",
        Decrypt = "Crypto/Decrypt",
        ReEncrypt = "Crypto/ReEncrypt",
        GenerateDataKey = "Crypto/GenerateDataKey",
        GenerateDataKeyWithoutPlaintext = "Crypto/GenerateDataKeyWithoutPlaintext",
        Sign = "Crypto/Sign",
        Verify = "Crypto/Verify",
        AsymmetricDecrypt = "Crypto/AsymmetricDecrypt",
        GetPublicKey = "Crypto/GetPublicKey",
        GenerateMac = "Crypto/GenerateMac",
        VerifyMac = "Crypto/VerifyMac",
        GenerateRandom = "Crypto/GenerateRandom",
        /// A batch call, recorded under this name only when it is refused as a whole (limits,
        /// role, rate, the trail): a batch that runs is recorded as one record per item, under
        /// the item's own operation ([`Operation::batch_item`]).
        BatchEncrypt = "CryptoBatch/BatchEncrypt",
        BatchDecrypt = "CryptoBatch/BatchDecrypt",
        BatchReEncrypt = "CryptoBatch/BatchReEncrypt",
        BatchGenerateDataKey = "CryptoBatch/BatchGenerateDataKey",
        BatchSign = "CryptoBatch/BatchSign",
        BatchVerify = "CryptoBatch/BatchVerify",
        BatchGenerateMac = "CryptoBatch/BatchGenerateMac",
        BatchVerifyMac = "CryptoBatch/BatchVerifyMac",
        /// Values into tokens (one record per call, with the count of values; never a value).
        Tokenize = "Tokenization/Tokenize",
        /// Tokens back into values (one record per call, with the count).
        Detokenize = "Tokenization/Detokenize",
        CreateKey = "KeyAdmin/CreateKey",
        ImportPublicKey = "KeyAdmin/ImportPublicKey",
        GetImportParameters = "KeyAdmin/GetImportParameters",
        ImportKeyMaterial = "KeyAdmin/ImportKeyMaterial",
        ExportKey = "KeyAdmin/ExportKey",
        DescribeKey = "KeyAdmin/DescribeKey",
        ListKeys = "KeyAdmin/ListKeys",
        RotateKey = "KeyAdmin/RotateKey",
        SetRotationPolicy = "KeyAdmin/SetRotationPolicy",
        EnableKey = "KeyAdmin/EnableKey",
        DisableKey = "KeyAdmin/DisableKey",
        MarkCompromised = "KeyAdmin/MarkCompromised",
        ScheduleKeyDestruction = "KeyAdmin/ScheduleKeyDestruction",
        CancelKeyDestruction = "KeyAdmin/CancelKeyDestruction",
        CreateAlias = "KeyAdmin/CreateAlias",
        DeleteAlias = "KeyAdmin/DeleteAlias",
        CreateGrant = "KeyAdmin/CreateGrant",
        RevokeGrant = "KeyAdmin/RevokeGrant",
        ListGrants = "KeyAdmin/ListGrants",
        AddPrincipal = "KeyAdmin/AddPrincipal",
        RemovePrincipal = "KeyAdmin/RemovePrincipal",
        ListPrincipals = "KeyAdmin/ListPrincipals",
        Approve = "KeyAdmin/Approve",
        Reject = "KeyAdmin/Reject",
        ListApprovals = "KeyAdmin/ListApprovals",
        GetAuditPublicKey = "Audit/GetAuditPublicKey",
        ExportAudit = "Audit/ExportAudit",
        ExportInventory = "Audit/ExportInventory",
        Status = "System/Status",
        Init = "System/Init",
        Unseal = "System/Unseal",
        Seal = "System/Seal",
        Backup = "System/Backup",
        Restore = "System/Restore",
        /// A due rotation the scheduler made (not an RPC).
        ScheduledRotation = "Scheduler/RotateKey",
        /// A due destruction the scheduler carried out (not an RPC).
        ScheduledDestruction = "Scheduler/DestroyKey",
        /// Imported material deleted at its expiry by the scheduler (not an RPC).
        ScheduledImportExpiry = "Scheduler/ExpireKeyMaterial",
        /// The audit writer handed the audit key over to a new version (not an RPC).
        AuditKeyTransition = "Scheduler/AuditKeyTransition",
        /// The password shield (issue 22 item 2): `key_id` is the password key, `pepper` the
        /// pepper key; flags say what became of the password (never the password, hash or
        /// nonce).
        HashPassword = "PasswordShield/HashPassword",
        VerifyPassword = "PasswordShield/VerifyPassword",
        /// A partner's signed request checked (issue 22 item 3): `key_id` is the key that
        /// checked it; the verdict is a flag (`verified`, `bad-signature`, `stale`, `replayed`,
        /// `malformed`). Never the body, the nonce or the signature.
        VerifyRequest = "RequestVerification/VerifyRequest",
    }
}

/// The gRPC service of an [`Operation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Crypto,
    /// The batch forms of the data plane (`kms.v1.CryptoBatch`).
    CryptoBatch,
    /// Tokens (`kms.v1.Tokenization`, issue 22): data plane, values in batches of their own.
    Tokenization,
    KeyAdmin,
    Audit,
    System,
    /// The server's own background work — the scheduler, and the audit writer's key
    /// transitions: no RPC has it.
    Scheduler,
    /// `kms.v1.PasswordShield` (issue 22 item 2).
    PasswordShield,
    /// `kms.v1.RequestVerification` (issue 22 item 3).
    RequestVerification,
}

/// The gRPC package of the audited services: paths are `/kms.v1.Service/Method`.
const PATH_PREFIX: &str = "/kms.v1.";

impl Operation {
    /// The operation a request path names, as the audit layer records it: the path without
    /// `/kms.v1.` (removed as often as it repeats, as version 1 did), `Other` when it is not
    /// one of our methods.
    #[must_use]
    pub fn from_path(path: &str) -> Self {
        let op = Self::parse(path.trim_start_matches(PATH_PREFIX));
        // A request cannot pose as the scheduler: no RPC has its names.
        if op.service() == Some(Service::Scheduler) {
            return Self::Other(Unrecognised(path.to_owned()));
        }
        op
    }

    /// Whether a successful call changes what the KMS holds (keys, grants, principals, seal
    /// state, the store): such calls get an intent record before they run. Unknown operations
    /// are treated as changing state.
    #[must_use]
    pub const fn changes_state(&self) -> bool {
        match self.service() {
            // The data plane uses keys and changes none (the password shield's nonces are
            // bookkeeping, like GCM budgets); the audit service only reads.
            Some(
                Service::Crypto
                | Service::CryptoBatch
                | Service::PasswordShield
                | Service::Tokenization
                | Service::RequestVerification
                | Service::Audit,
            ) => false,
            Some(Service::KeyAdmin | Service::System | Service::Scheduler) | None => !matches!(
                self,
                Self::DescribeKey
                    | Self::ListKeys
                    | Self::ListGrants
                    | Self::ListPrincipals
                    | Self::ListApprovals
                    | Self::Status
                    | Self::Backup
                    // Written by the audit writer itself, atomically with the hand-over.
                    | Self::AuditKeyTransition
            ),
        }
    }

    /// The operation of each item of a batch operation, under which the item is recorded (the
    /// trail reads as if the items had come one by one); `None` for every other operation.
    #[must_use]
    pub const fn batch_item(&self) -> Option<Self> {
        match self {
            Self::BatchEncrypt => Some(Self::Encrypt),
            Self::BatchDecrypt => Some(Self::Decrypt),
            Self::BatchReEncrypt => Some(Self::ReEncrypt),
            Self::BatchGenerateDataKey => Some(Self::GenerateDataKey),
            Self::BatchSign => Some(Self::Sign),
            Self::BatchVerify => Some(Self::Verify),
            Self::BatchGenerateMac => Some(Self::GenerateMac),
            Self::BatchVerifyMac => Some(Self::VerifyMac),
            Self::Encrypt
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
            | Self::Tokenize
            | Self::Detokenize
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
            | Self::Approve
            | Self::Reject
            | Self::ListApprovals
            | Self::GetAuditPublicKey
            | Self::ExportAudit
            | Self::ExportInventory
            | Self::Status
            | Self::Init
            | Self::Unseal
            | Self::Seal
            | Self::Backup
            | Self::Restore
            | Self::ScheduledRotation
            | Self::ScheduledImportExpiry
            | Self::ScheduledDestruction
            | Self::AuditKeyTransition
            | Self::HashPassword
            | Self::VerifyPassword
            | Self::VerifyRequest
            | Self::Other(_) => None,
        }
    }

    /// The service of a known operation.
    #[must_use]
    pub const fn service(&self) -> Option<Service> {
        match self {
            Self::Encrypt
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
            | Self::GenerateRandom => Some(Service::Crypto),
            Self::BatchEncrypt
            | Self::BatchDecrypt
            | Self::BatchReEncrypt
            | Self::BatchGenerateDataKey
            | Self::BatchSign
            | Self::BatchVerify
            | Self::BatchGenerateMac
            | Self::BatchVerifyMac => Some(Service::CryptoBatch),
            Self::Tokenize | Self::Detokenize => Some(Service::Tokenization),
            Self::CreateKey
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
            | Self::Approve
            | Self::Reject
            | Self::ListApprovals => Some(Service::KeyAdmin),
            Self::GetAuditPublicKey | Self::ExportAudit | Self::ExportInventory => {
                Some(Service::Audit)
            }
            Self::Status
            | Self::Init
            | Self::Unseal
            | Self::Seal
            | Self::Backup
            | Self::Restore => Some(Service::System),
            Self::ScheduledRotation
            | Self::ScheduledDestruction
            | Self::ScheduledImportExpiry
            | Self::AuditKeyTransition => Some(Service::Scheduler),
            Self::HashPassword | Self::VerifyPassword => Some(Service::PasswordShield),
            Self::VerifyRequest => Some(Service::RequestVerification),
            Self::Other(_) => None,
        }
    }
}

names! {
    /// How the call ended: its gRPC status code, named as in the gRPC specification
    /// (`PERMISSION_DENIED`).
    pub enum Outcome {
        Ok = "OK",
        Cancelled = "CANCELLED",
        Unknown = "UNKNOWN",
        InvalidArgument = "INVALID_ARGUMENT",
        DeadlineExceeded = "DEADLINE_EXCEEDED",
        NotFound = "NOT_FOUND",
        AlreadyExists = "ALREADY_EXISTS",
        PermissionDenied = "PERMISSION_DENIED",
        ResourceExhausted = "RESOURCE_EXHAUSTED",
        FailedPrecondition = "FAILED_PRECONDITION",
        Aborted = "ABORTED",
        OutOfRange = "OUT_OF_RANGE",
        Unimplemented = "UNIMPLEMENTED",
        Internal = "INTERNAL",
        Unavailable = "UNAVAILABLE",
        DataLoss = "DATA_LOSS",
        Unauthenticated = "UNAUTHENTICATED",
    }
}

names! {
    /// Something about a call that must stand out in the trail.
    pub enum Flag {
        /// A compromised key was used to decrypt or verify: allowed, but flagged (KEY-8).
        KeyCompromised = "key-compromised",
        /// An export that was recorded as begun did not reach its closing checkpoint: the
        /// second record of that request (OPS-1).
        ExportIncomplete = "export-incomplete",
        /// Written before a state-changing call runs, with outcome `UNKNOWN`: the call's own
        /// record, with the same request id, follows (issue 18: audit before effect).
        Intent = "intent",
        /// An unseal share given by someone other than the holder it was issued to, allowed
        /// only because the server's `unseal_break_glass` is on (issue 18).
        BreakGlass = "break-glass",
        /// Dual control: the call filed an approval request instead of running.
        ApprovalRequested = "approval-requested",
        /// Dual control: the request expired unapproved.
        ApprovalExpired = "approval-expired",
        /// Dual control: run (or released) on a quorum of approvals; request id = approval id.
        QuorumApproved = "quorum-approved",
        /// A timestamped request (a sealed password, a signed request) outside the freshness
        /// window.
        Stale = "stale",
        /// A nonce seen before within the window: the request was a replay.
        Replayed = "replayed",
        /// HashPassword refused the password under the strength rules (INVALID_ARGUMENT).
        WeakPassword = "weak-password",
        /// VerifyPassword: the password matched the stored hash.
        PasswordMatch = "match",
        /// VerifyPassword: it did not (the call itself is OK).
        PasswordNoMatch = "no-match",
        /// VerifyPassword matched an out-of-date hash and returned a new one to store.
        Rehashed = "rehashed",
        /// VerifyRequest: the signature is good and the request fresh and new.
        RequestVerified = "verified",
        /// VerifyRequest: the signature does not verify under any version of the key.
        BadSignature = "bad-signature",
        /// VerifyRequest: a field of the request has the wrong shape (docs/FORMATS.md).
        Malformed = "malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every known name parses to its variant and back, and serialises as the bare string.
    fn round_trips<T>(known: &[T])
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug + fmt::Display,
        T: for<'a> From<&'a str>,
    {
        for v in known {
            let name = v.to_string();
            assert_eq!(&T::from(name.as_str()), v);
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), v);
        }
    }

    #[test]
    fn known_names_round_trip_as_version_1_wrote_them() {
        round_trips(Role::KNOWN);
        round_trips(Operation::KNOWN);
        round_trips(Outcome::KNOWN);
        round_trips(Flag::KNOWN);
        assert_eq!(Outcome::PermissionDenied.as_str(), "PERMISSION_DENIED");
        assert_eq!(Outcome::Ok.as_str(), "OK");
        assert_eq!(Flag::KeyCompromised.as_str(), "key-compromised");
        assert_eq!(Role::Unregistered.as_str(), "unregistered");
        assert_eq!(Operation::ExportAudit.as_str(), "Audit/ExportAudit");
    }

    #[test]
    fn unknown_names_are_kept_byte_for_byte_and_never_shadow_a_variant() {
        for name in [
            "Crypto/NoSuchMethod",
            "",
            "/other.v2.Thing/Do",
            "Ok",
            "crypto/encrypt",
        ] {
            let op = Operation::parse(name);
            assert!(
                matches!(&op, Operation::Other(u) if u.as_str() == name),
                "{op:?}"
            );
            assert_eq!(
                serde_json::to_string(&op).unwrap(),
                serde_json::to_string(name).unwrap()
            );
            let back: Operation =
                serde_json::from_str(&serde_json::to_string(&op).unwrap()).unwrap();
            assert_eq!(back, op);
        }
        assert_eq!(
            Outcome::parse("Ok"),
            Outcome::Other(Unrecognised("Ok".into()))
        );
        assert!(!Role::parse("operator").is_known());
        assert_eq!(Role::parse("admin"), Role::Admin);
        // Text that needs escaping survives too.
        let odd = Flag::parse("a \"quoted\"\nflag");
        let json = serde_json::to_string(&odd).unwrap();
        assert_eq!(serde_json::from_str::<Flag>(&json).unwrap(), odd);
    }

    #[test]
    fn operations_come_from_paths_and_know_their_service() {
        assert_eq!(
            Operation::from_path("/kms.v1.Crypto/Encrypt"),
            Operation::Encrypt
        );
        assert_eq!(
            Operation::from_path("/kms.v1.System/Unseal").service(),
            Some(Service::System)
        );
        let unknown = Operation::from_path("/kms.v1.Crypto/NoSuchMethod");
        assert_eq!(unknown.as_str(), "Crypto/NoSuchMethod");
        assert_eq!(unknown.service(), None);
        let posing = Operation::from_path("/kms.v1.Scheduler/RotateKey");
        assert_eq!(posing.service(), None, "a request posing as the scheduler");
        assert_ne!(posing, Operation::ScheduledRotation);
        assert!(unknown.as_str().starts_with("Crypto/"));
        assert_eq!(
            Operation::from_path("/elsewhere/X").as_str(),
            "/elsewhere/X"
        );
        for op in Operation::KNOWN {
            let service = op.service().unwrap();
            let prefix = format!("{service:?}/");
            assert!(op.as_str().starts_with(&prefix), "{op} in {service:?}");
        }
    }

    #[test]
    fn only_calls_that_change_what_the_kms_holds_get_intents() {
        let changing: Vec<&str> = Operation::KNOWN
            .iter()
            .filter(|op| op.changes_state())
            .map(Operation::as_str)
            .collect();
        assert_eq!(
            changing,
            [
                "KeyAdmin/CreateKey",
                "KeyAdmin/ImportPublicKey",
                "KeyAdmin/GetImportParameters",
                "KeyAdmin/ImportKeyMaterial",
                "KeyAdmin/ExportKey",
                "KeyAdmin/RotateKey",
                "KeyAdmin/SetRotationPolicy",
                "KeyAdmin/EnableKey",
                "KeyAdmin/DisableKey",
                "KeyAdmin/MarkCompromised",
                "KeyAdmin/ScheduleKeyDestruction",
                "KeyAdmin/CancelKeyDestruction",
                "KeyAdmin/CreateAlias",
                "KeyAdmin/DeleteAlias",
                "KeyAdmin/CreateGrant",
                "KeyAdmin/RevokeGrant",
                "KeyAdmin/AddPrincipal",
                "KeyAdmin/RemovePrincipal",
                "KeyAdmin/Approve",
                "KeyAdmin/Reject",
                "System/Init",
                "System/Unseal",
                "System/Seal",
                "System/Restore",
                "Scheduler/RotateKey",
                "Scheduler/DestroyKey",
                "Scheduler/ExpireKeyMaterial",
            ]
        );
        // What this version does not know is treated as changing state.
        assert!(Operation::from_path("/kms.v1.KeyAdmin/Future").changes_state());
    }

    /// Each batch operation's items are recorded as the single call of the same name, and
    /// only batch operations have items.
    #[test]
    fn batch_items_are_recorded_as_their_single_calls() {
        let batches: Vec<(&str, String)> = Operation::KNOWN
            .iter()
            .filter_map(|op| op.batch_item().map(|item| (op.as_str(), item.to_string())))
            .collect();
        assert_eq!(
            batches,
            [
                ("CryptoBatch/BatchEncrypt", "Crypto/Encrypt"),
                ("CryptoBatch/BatchDecrypt", "Crypto/Decrypt"),
                ("CryptoBatch/BatchReEncrypt", "Crypto/ReEncrypt"),
                ("CryptoBatch/BatchGenerateDataKey", "Crypto/GenerateDataKey"),
                ("CryptoBatch/BatchSign", "Crypto/Sign"),
                ("CryptoBatch/BatchVerify", "Crypto/Verify"),
                ("CryptoBatch/BatchGenerateMac", "Crypto/GenerateMac"),
                ("CryptoBatch/BatchVerifyMac", "Crypto/VerifyMac"),
            ]
            .map(|(batch, item)| (batch, item.to_owned()))
        );
        for op in Operation::KNOWN {
            assert_eq!(
                op.batch_item().is_some(),
                op.service() == Some(Service::CryptoBatch),
                "{op}"
            );
            assert!(
                op.batch_item()
                    .is_none_or(|item| item.batch_item().is_none())
            );
        }
    }

    #[test]
    fn authz_roles_map_to_their_audit_names() {
        use crate::authz::Role as AuthzRole;
        let admin = AuthzRole::Admin;
        let auditor = AuthzRole::Auditor;
        assert_eq!(Role::from(&admin).as_str(), admin.name());
        assert_eq!(Role::from(&auditor).as_str(), auditor.name());
    }
}
