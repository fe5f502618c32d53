//! Key lifecycle: create, describe, list, rotate on request, rotation period and state
//! changes (KEY-5, KEY-7, KEY-8). What runs on a schedule is in `sweeps`.

use super::approvals::{Params, Sensitive};
use super::{Kms, layout};
use crate::alg::{KeySpec, Purpose};
use crate::authz::{Authorized, GrantOp, Operation, Role, ops};
use crate::clock::DAY;
use crate::crypto;
use crate::error::Error;
use crate::keys::record::{
    ImportInfo, KeyRecord, KeyVersion, Origin, check_destruction_days, check_rotation_period,
};
use crate::keys::state::{KeyState, Transition, next_state};
use crate::keys::{Alias, KeyId, KeyRef, Namespace};
use crate::store::{Batch, StoreError, Tree};

/// The KMS's own keys (the audit key) may be rotated and described, but not disabled,
/// compromised, destroyed or granted: that would silently stop the audit trail's signatures.
pub(super) fn refuse_system_key(record: &KeyRecord, what: &'static str) -> Result<(), Error> {
    if record.namespace.as_str() == super::audit_key::SYSTEM_NAMESPACE {
        return Err(Error::FailedPrecondition(
            format!(
                "{what} is not allowed on the KMS's own key {} (namespace kms-system)",
                record.id
            )
            .into(),
        ));
    }
    Ok(())
}

/// What `create_key` needs.
#[derive(Clone, Debug)]
pub struct CreateKeyRequest {
    pub namespace: Namespace,
    pub purpose: Purpose,
    pub spec: KeySpec,
    pub alias: Option<Alias>,
    /// Seconds between automatic rotations (1 to 3650 days), if any.
    pub rotation_period: Option<u64>,
    pub description: String,
}

/// How a new key's material is had and may leave (issue 19); the default is generated here,
/// never exported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyOptions {
    /// Origin `imported`: the key is made without material, `PENDING_IMPORT` until
    /// `ImportKeyMaterial` brings it.
    pub external: bool,
    /// The material may be exported, wrapped to a recipient (`ExportKey`); fixed for life.
    pub exportable: bool,
}

/// The refusal for what an outside public key cannot do (it has no private half here).
pub(super) fn public_only(record: &KeyRecord, what: &str) -> Error {
    Error::FailedPrecondition(
        format!(
            "key {} is an outside public key (origin public-only) and cannot be {what}",
            record.id
        )
        .into(),
    )
}

/// Descriptions are printed by the CLI and shown in inventories: bounded, no terminal controls.
pub(super) fn check_description(description: &str) -> Result<(), Error> {
    if description.len() > 1024 {
        return Err(crate::InvalidInput::new("description", "at most 1024 bytes").into());
    }
    if description.chars().any(char::is_control) {
        return Err(crate::InvalidInput::new(
            "description",
            "must not contain control characters (newlines, escapes, NUL)",
        )
        .into());
    }
    Ok(())
}

/// A version as callers see it (no material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u32,
    pub created_at: u64,
    pub destroyed: bool,
    pub public_key_der: Option<Vec<u8>>,
}

/// A key as callers see it: metadata only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: KeyId,
    pub namespace: Namespace,
    pub purpose: Purpose,
    pub spec: KeySpec,
    pub state: KeyState,
    pub description: String,
    pub aliases: Vec<Alias>,
    pub created_at: u64,
    pub versions: Vec<VersionInfo>,
    pub rotation_period: Option<u64>,
    pub last_rotated_at: Option<u64>,
    pub next_rotation_at: Option<u64>,
    pub compromised_at: Option<u64>,
    pub destroy_at: Option<u64>,
    pub destroyed_at: Option<u64>,
    pub origin: Origin,
    pub exportable: bool,
    /// Origin `imported`: the material's fingerprint, import time and expiry.
    pub import: Option<ImportInfo>,
    /// How many times the material was exported (the events are in the inventory).
    pub exports: usize,
}

impl KeyInfo {
    #[must_use]
    pub fn from_record(r: &KeyRecord) -> Self {
        Self {
            id: r.id,
            namespace: r.namespace.clone(),
            purpose: r.purpose,
            spec: r.spec,
            state: r.state,
            description: r.description.clone(),
            aliases: r.aliases.clone(),
            created_at: r.created_at,
            versions: r
                .versions
                .iter()
                .map(|v| VersionInfo {
                    version: v.version,
                    created_at: v.created_at,
                    destroyed: v.wrapped.is_none() && r.material_was_destroyed(),
                    public_key_der: v.public_key.clone(),
                })
                .collect(),
            rotation_period: r.rotation_period,
            last_rotated_at: r.last_rotated_at,
            next_rotation_at: r.next_rotation_at,
            compromised_at: r.compromised_at,
            destroy_at: r.destroy_at,
            destroyed_at: r.destroyed_at,
            origin: r.origin,
            exportable: r.exportable,
            import: r.import.clone(),
            exports: r.exports.len(),
        }
    }

    #[must_use]
    pub fn current_version(&self) -> u32 {
        self.versions.last().map_or(0, |v| v.version)
    }
}

impl Kms {
    /// Creates a key with fresh material from the CSPRNG (KEY-1), wrapped under its namespace's
    /// KEK, stored in its purpose's tree (KEY-5) and flushed before returning.
    pub fn create_key(
        &self,
        auth: &Authorized<'_, ops::CreateKey>,
        req: CreateKeyRequest,
    ) -> Result<KeyInfo, Error> {
        self.create_key_with(auth, req, KeyOptions::default())
    }

    /// [`Kms::create_key`] with its origin and exportability chosen.
    pub fn create_key_with(
        &self,
        auth: &Authorized<'_, ops::CreateKey>,
        req: CreateKeyRequest,
        options: KeyOptions,
    ) -> Result<KeyInfo, Error> {
        let vault = self.begin(auth)?;
        // A new key introduces its namespace: the strict rule, reserved names refused
        // (`kms-system` included, whose keys only init makes).
        req.namespace.check_new()?;
        let mut batch = Batch::new();
        let record = self.prepare_key(&vault, &req, options, &mut batch)?;
        match self.store.apply(&batch) {
            Ok(()) => Ok(KeyInfo::from_record(&record)),
            Err(StoreError::Conflict {
                tree: Tree::Aliases,
            }) => Err(Error::AlreadyExists {
                what: "alias",
                name: format!(
                    "{}:{}",
                    req.namespace,
                    req.alias.map(String::from).unwrap_or_default()
                ),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes a new key (material from the CSPRNG, KEY-1; wrapped under its namespace KEK) and
    /// adds its writes to `batch`.
    pub(super) fn prepare_key(
        &self,
        vault: &super::Unsealed,
        req: &CreateKeyRequest,
        options: KeyOptions,
        batch: &mut Batch,
    ) -> Result<KeyRecord, Error> {
        let approved = self.config.policy.approve(req.purpose, req.spec)?;
        let rotation_period = req.rotation_period.map(check_rotation_period).transpose()?;
        check_description(&req.description)?;
        if options.external && rotation_period.is_some() {
            return Err(crate::InvalidInput::new(
                "rotation period",
                "a key of origin external cannot rotate on a schedule: its next material \
                 comes from outside (import it into a new key)",
            )
            .into());
        }
        let now = self.now();
        let id = KeyId::random()?;
        let mut record = KeyRecord {
            id,
            namespace: req.namespace.clone(),
            purpose: req.purpose,
            spec: req.spec,
            state: KeyState::Enabled,
            description: req.description.clone(),
            aliases: req.alias.iter().cloned().collect(),
            created_at: now,
            versions: Vec::new(),
            rotation_period,
            last_rotated_at: None,
            next_rotation_at: rotation_period.map(|p| now.saturating_add(p)),
            compromised_at: None,
            destroy_at: None,
            destroyed_at: None,
            revision: 1,
            origin: Origin::Generated,
            exportable: options.exportable,
            import: None,
            exports: Vec::new(),
        };
        if options.external {
            record.origin = Origin::Imported;
            record.state = KeyState::PendingImport;
            self.stage_new_record(&record, req.alias.as_ref(), batch)?;
            return Ok(record);
        }
        let material = crypto::generate(&approved)?;
        let public_key = if req.purpose.is_asymmetric() {
            Some(crypto::public_key_of(&material)?.spki_der().to_vec())
        } else {
            None
        };
        let wrapped = self.wrap_version(vault, &record, 1, &material)?;
        record.versions.push(KeyVersion {
            version: 1,
            created_at: now,
            wrapped: Some(wrapped),
            public_key,
            gcm_invocations: 0,
        });
        self.stage_new_record(&record, req.alias.as_ref(), batch)?;
        Ok(record)
    }

    /// Adds a new key's record, its index entry and its alias (which must be free) to `batch`.
    pub(super) fn stage_new_record(
        &self,
        record: &KeyRecord,
        alias: Option<&Alias>,
        batch: &mut Batch,
    ) -> Result<(), Error> {
        let id = record.id;
        batch.require(record.tree(), id.as_bytes().as_slice(), None);
        batch.put(record.tree(), id.as_bytes().as_slice(), record.encode()?);
        batch.put(
            Tree::Meta,
            layout::key_index(&id),
            vec![Self::purpose_code(record.purpose)],
        );
        if let Some(alias) = alias {
            let k = layout::alias(&record.namespace, alias.as_str());
            batch.require(Tree::Aliases, k.clone(), None);
            batch.put(Tree::Aliases, k, id.as_bytes().to_vec());
        }
        Ok(())
    }

    pub fn describe_key(
        &self,
        auth: &Authorized<'_, ops::DescribeKey>,
        key: &KeyRef,
    ) -> Result<KeyInfo, Error> {
        self.begin(auth)?;
        let (record, _) = self.reach(auth.principal(), key, GrantOp::Describe)?;
        Ok(KeyInfo::from_record(&record))
    }

    /// Every key (admins, auditors) or every key of the app's namespace, optionally filtered.
    pub fn list_keys(
        &self,
        auth: &Authorized<'_, ops::ListKeys>,
        namespace: Option<&Namespace>,
    ) -> Result<Vec<KeyInfo>, Error> {
        self.begin(auth)?;
        let filter = match &auth.principal().role {
            Role::App { namespace: own } => Some(own),
            Role::Admin | Role::Auditor | Role::Custodian => namespace,
        };
        let mut out: Vec<KeyInfo> = self
            .all_records()?
            .iter()
            .filter(|r| filter.is_none_or(|ns| *ns == r.namespace))
            .map(KeyInfo::from_record)
            .collect();
        out.sort_by_key(|k| (k.created_at, k.id));
        Ok(out)
    }

    /// Every key record, for the inventory and for system tasks.
    pub(crate) fn all_records(&self) -> Result<Vec<KeyRecord>, Error> {
        let mut out = Vec::new();
        // Several purposes share a tree (tokenize keys with encrypt keys, password keys with
        // asymmetric-decrypt keys, peppers with MAC keys): each tree once.
        for tree in KeyRecord::KEY_TREES {
            for (_, bytes) in self.store.scan_prefix(tree, &[])? {
                out.push(KeyRecord::decode(&bytes)?);
            }
        }
        Ok(out)
    }

    /// Adds a fresh version to an enabled key's record (not yet written): shared by rotation on
    /// request and the scheduler's due rotations.
    pub(super) fn add_version(
        &self,
        record: &mut KeyRecord,
        vault: &super::Unsealed,
    ) -> Result<u32, Error> {
        if record.origin == Origin::PublicOnly {
            return Err(public_only(
                record,
                "rotated: import the partner's new public key",
            ));
        }
        if record.origin == Origin::Imported {
            // Generated material would make a key of two origins, and the owner of the
            // imported material would no longer hold all of it.
            return Err(Error::FailedPrecondition(
                format!(
                    "key {} has imported material (origin imported) and is not rotated here: \
                     import the new material into a new key",
                    record.id
                )
                .into(),
            ));
        }
        if record.state != KeyState::Enabled {
            return Err(Error::InvalidState {
                key: record.id.to_string(),
                state: record.state,
                op: "rotation",
            });
        }
        let approved = self.config.policy.approve(record.purpose, record.spec)?;
        let material = crypto::generate(&approved)?;
        let version = record.newest().map_or(1, |v| v.version.saturating_add(1));
        let public_key = if record.purpose.is_asymmetric() {
            Some(crypto::public_key_of(&material)?.spki_der().to_vec())
        } else {
            None
        };
        let wrapped = self.wrap_version(vault, record, version, &material)?;
        let now = self.now();
        record.versions.push(KeyVersion {
            version,
            created_at: now,
            wrapped: Some(wrapped),
            public_key,
            gcm_invocations: 0,
        });
        record.last_rotated_at = Some(now);
        record.next_rotation_at = record.rotation_period.map(|p| now.saturating_add(p));
        Ok(version)
    }

    /// Adds a version; new work uses it, old versions still decrypt and verify (KEY-7).
    pub fn rotate_key(
        &self,
        auth: &Authorized<'_, ops::RotateKey>,
        key: &KeyRef,
    ) -> Result<KeyInfo, Error> {
        let vault = self.begin(auth)?;
        let (record, _) = self.update(auth.principal(), key, GrantOp::Describe, |r, _| {
            self.add_version(r, &vault)
        })?;
        Ok(KeyInfo::from_record(&record))
    }

    /// Sets or clears the rotation period (1 to 3650 days).
    pub fn set_rotation_period(
        &self,
        auth: &Authorized<'_, ops::SetRotationPolicy>,
        key: &KeyRef,
        period: Option<u64>,
    ) -> Result<KeyInfo, Error> {
        self.begin(auth)?;
        let period = period.map(check_rotation_period).transpose()?;
        self.quorum(auth, Sensitive::SetRotationPolicy, || {
            Ok(Params::SetRotationPolicy {
                key: self.reach(auth.principal(), key, GrantOp::Describe)?.0.id,
                period,
            })
        })?;
        let now = self.now();
        let (record, ()) = self.update(auth.principal(), key, GrantOp::Describe, |r, _| {
            r.rotation_period = period;
            let base = r
                .last_rotated_at
                .unwrap_or(r.created_at)
                .max(now.saturating_sub(period.unwrap_or(0)));
            r.next_rotation_at = period.map(|p| base.saturating_add(p));
            Ok(())
        })?;
        Ok(KeyInfo::from_record(&record))
    }

    fn transition<O: Operation>(
        &self,
        auth: &Authorized<'_, O>,
        key: &KeyRef,
        t: Transition,
        days: Option<u32>,
    ) -> Result<KeyInfo, Error> {
        self.begin(auth)?;
        let days = days.map(check_destruction_days).transpose()?;
        let now = self.now();
        let (record, ()) = self.update(auth.principal(), key, GrantOp::Describe, |r, _| {
            refuse_system_key(r, t.name())?;
            let to = next_state(r.state, t, r.compromised_at.is_some()).ok_or_else(|| {
                Error::InvalidState {
                    key: r.id.to_string(),
                    state: r.state,
                    op: t.name(),
                }
            })?;
            match t {
                Transition::Compromise => r.compromised_at = Some(now),
                Transition::ScheduleDestruction => {
                    let d =
                        u64::from(days.unwrap_or(crate::keys::record::DEFAULT_DESTRUCTION_DAYS));
                    r.destroy_at = Some(now.saturating_add(d * DAY));
                }
                Transition::CancelDestruction => r.destroy_at = None,
                Transition::Enable | Transition::Disable | Transition::Destroy => {}
            }
            // An imported key whose destruction is cancelled before it had (or after it lost)
            // its material goes back to waiting for it, not to a usable-looking DISABLED.
            r.state = if t == Transition::CancelDestruction && r.awaits_import() {
                KeyState::PendingImport
            } else {
                to
            };
            Ok(())
        })?;
        Ok(KeyInfo::from_record(&record))
    }

    pub fn enable_key(
        &self,
        auth: &Authorized<'_, ops::EnableKey>,
        key: &KeyRef,
    ) -> Result<KeyInfo, Error> {
        self.transition(auth, key, Transition::Enable, None)
    }

    pub fn disable_key(
        &self,
        auth: &Authorized<'_, ops::DisableKey>,
        key: &KeyRef,
    ) -> Result<KeyInfo, Error> {
        self.transition(auth, key, Transition::Disable, None)
    }

    /// Stops a compromised key at once: no new encryption or signing; decrypt and verify still
    /// work and are flagged (KEY-8). One way.
    pub fn mark_compromised(
        &self,
        auth: &Authorized<'_, ops::MarkCompromised>,
        key: &KeyRef,
    ) -> Result<KeyInfo, Error> {
        self.begin(auth)?;
        self.quorum(auth, Sensitive::MarkCompromised, || {
            Ok(Params::MarkCompromised {
                key: self.reach(auth.principal(), key, GrantOp::Describe)?.0.id,
            })
        })?;
        self.transition(auth, key, Transition::Compromise, None)
    }

    /// Schedules destruction after `days` (7–90, default 30).
    pub fn schedule_destruction(
        &self,
        auth: &Authorized<'_, ops::ScheduleKeyDestruction>,
        key: &KeyRef,
        days: Option<u32>,
    ) -> Result<KeyInfo, Error> {
        let days = Some(days.unwrap_or(crate::keys::record::DEFAULT_DESTRUCTION_DAYS));
        self.begin(auth)?;
        days.map(check_destruction_days).transpose()?;
        self.quorum(auth, Sensitive::ScheduleKeyDestruction, || {
            Ok(Params::ScheduleKeyDestruction {
                key: self.reach(auth.principal(), key, GrantOp::Describe)?.0.id,
                days,
            })
        })?;
        self.transition(auth, key, Transition::ScheduleDestruction, days)
    }

    pub fn cancel_destruction(
        &self,
        auth: &Authorized<'_, ops::CancelKeyDestruction>,
        key: &KeyRef,
    ) -> Result<KeyInfo, Error> {
        self.transition(auth, key, Transition::CancelDestruction, None)
    }
}
