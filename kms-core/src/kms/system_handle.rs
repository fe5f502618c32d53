//! [`System`]: the one handle for what no API caller may invoke directly — initialising,
//! unsealing with a local share, restoring, the scheduler's sweeps and signing with the audit key.
//!
//! The server's system service and scheduler hold it; everything else holds only the
//! [`Kms`] it hands out, whose methods each require an [`Authorized`](crate::authz::Authorized)
//! proof. So these operations cannot be reached from a request handler by mistake:
//!
//! ```compile_fail
//! # fn f(kms: &kms_core::Kms, backup: &[u8]) {
//! let _ = kms.restore(backup, &[]); // only `System::restore` exists
//! # }
//! ```
//!
//! ```compile_fail
//! # fn f(kms: &kms_core::Kms) {
//! let _ = kms.rotate_due(); // the scheduler's sweep is `System::rotate_due`
//! # }
//! ```

use std::sync::Arc;

use super::custody::InitPlan;
use super::sweeps::SweepLog;
use super::{InitOutput, Issued, Kms, KmsConfig, RestoreProgress, StagedRestore, UnsealProgress};
use crate::audit::writer::Signer;
use crate::clock::Clock;
use crate::error::Error;
use crate::hierarchy::share::Share;
use crate::keys::KeyId;
use crate::store::Store;

/// The owner of a [`Kms`]: opens it and runs its system operations.
pub struct System {
    kms: Arc<Kms>,
}

/// The owner may do whatever a [`Kms`] holder may.
impl std::ops::Deref for System {
    type Target = Kms;

    fn deref(&self) -> &Kms {
        &self.kms
    }
}

impl System {
    /// Opens a KMS over a store. It starts sealed, whatever state it was left in.
    pub fn open(store: Arc<dyn Store>, config: KmsConfig) -> Self {
        Self {
            kms: Arc::new(Kms::open(store, config)),
        }
    }

    pub fn with_clock(store: Arc<dyn Store>, config: KmsConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            kms: Arc::new(Kms::with_clock(store, config, clock)),
        }
    }

    /// The KMS for request handlers: every method there needs an authorisation proof.
    #[must_use]
    pub fn kms(&self) -> &Arc<Kms> {
        &self.kms
    }

    /// Initialises an empty store: a random root key sealed under a random unseal key split into
    /// `shares` shares with threshold `threshold`, and `admin` registered as the first
    /// administrator. The KMS stays sealed; unseal it with the shares. Exactly once per store:
    /// a second `init`, from this node or another, fails.
    pub fn init(&self, shares: u8, threshold: u8, admin: &str) -> Result<InitOutput, Error> {
        self.kms.init(shares, threshold, admin)
    }

    /// Initialises an empty store with each share issued to a named holder (encrypted to the
    /// holder's key when given) and every holder but the admin registered as a custodian
    /// (`custody.rs`).
    pub fn init_plan(&self, plan: &InitPlan) -> Result<Issued, Error> {
        self.kms.init_plan(plan)
    }

    /// Gives one share without a principal: the dev mode's local share file, and tests. (Over
    /// the API an administrator unseals with [`Kms::unseal`].)
    pub fn unseal_with(&self, share: &Share) -> Result<UnsealProgress, Error> {
        self.kms.unseal_with(share)
    }

    /// Seals without a principal (graceful shutdown).
    pub fn seal_now(&self) {
        self.kms.seal_now();
    }

    /// Restores a backup into this KMS's store, which must be empty (never initialised).
    /// The backup's integrity is checked with the shares' key before anything is written;
    /// afterwards the KMS is sealed and unseals with the same shares as the backed-up one.
    pub fn restore(&self, backup: &[u8], shares: &[Share]) -> Result<u64, Error> {
        self.kms.restore(backup, shares)
    }

    /// The threshold and holders a backup names, read from its clear header.
    pub fn inspect_backup(backup: &[u8]) -> Result<StagedRestore, Error> {
        Kms::inspect_backup(backup)
    }

    /// Stages a backup for its share holders (`staged_restore.rs`): nothing is written until
    /// shares from `threshold` distinct holders are in.
    pub fn stage_restore(&self, backup: Vec<u8>) -> Result<StagedRestore, Error> {
        self.kms.stage_restore(backup)
    }

    /// One share towards the staged restore, given by the certificate subject `giver`; the
    /// last one writes the backup and unseals. The flag says whether break-glass let it in.
    pub fn give_restore_share(
        &self,
        share: &Share,
        giver: &str,
    ) -> Result<(RestoreProgress, bool), Error> {
        self.kms.give_restore_share(share, giver)
    }

    /// Keys whose rotation is due now.
    pub fn due_for_rotation(&self) -> Result<Vec<KeyId>, Error> {
        self.kms.due_for_rotation()
    }

    /// The scheduler's rotation sweep (see `sweeps.rs`): every due key rotated exactly once
    /// across all nodes.
    pub fn rotate_due(&self) -> Result<Vec<(KeyId, u32)>, Error> {
        self.kms.rotate_due(&super::sweeps::Unlogged)
    }

    /// [`System::rotate_due`] with each key's intent and outcome given to `log` (the server's
    /// audit trail): a key whose intent the log refuses is not rotated this round.
    pub fn rotate_due_logged(&self, log: &dyn SweepLog) -> Result<Vec<(KeyId, u32)>, Error> {
        self.kms.rotate_due(log)
    }

    /// The scheduler's destruction sweep (see `sweeps.rs`).
    pub fn destroy_due(&self) -> Result<Vec<KeyId>, Error> {
        self.kms.destroy_due(&super::sweeps::Unlogged)
    }

    /// [`System::destroy_due`] with each key's intent and outcome given to `log`.
    pub fn destroy_due_logged(&self, log: &dyn SweepLog) -> Result<Vec<KeyId>, Error> {
        self.kms.destroy_due(log)
    }

    /// The scheduler's import-expiry sweep (`import_export.rs`): imported material whose
    /// expiry has come is deleted, and its key waits for import again.
    pub fn expire_imports_due(&self) -> Result<Vec<KeyId>, Error> {
        self.kms.expire_imports_due(&super::sweeps::Unlogged)
    }

    /// [`System::expire_imports_due`] with each key's intent and outcome given to `log`.
    pub fn expire_imports_due_logged(&self, log: &dyn SweepLog) -> Result<Vec<KeyId>, Error> {
        self.kms.expire_imports_due(log)
    }

    /// Where the approval steps of dual control are recorded (the server's audit trail).
    pub fn set_approval_log(&self, log: Arc<dyn super::ApprovalLog>) {
        self.kms.attach_approval_log(log);
    }

    /// Marks approval requests past their expiry as expired (the scheduler; each is marked
    /// and recorded once across all nodes). How many this call marked.
    pub fn expire_approvals(&self) -> Result<usize, Error> {
        self.kms.expire_approvals()
    }

    /// Signs with the audit key's newest version: `(key id, version, DER signature)`.
    /// `make` builds the bytes for that key id and version.
    pub fn sign_as_audit_key(
        &self,
        make: &dyn Fn(&str, u32) -> Vec<u8>,
    ) -> Result<(String, u32, Vec<u8>), Error> {
        self.kms.sign_as_audit_key(make)
    }

    /// The audit writer's signer, bound to this KMS.
    #[must_use]
    pub fn audit_signer(&self) -> Signer {
        self.kms.audit_signer()
    }
}
