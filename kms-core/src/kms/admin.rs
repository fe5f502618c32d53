//! Key administration: create, describe, list, rotate, state changes, aliases, grants and
//! principals (KEY-5, KEY-7, KEY-8, KEY-9).

use super::{CAS_RETRIES, Kms, layout, store_corrupt};
use crate::alg::{KeySpec, Purpose};
use crate::authz::{self, Grant, GrantOp, Op, Principal, Role};
use crate::clock::DAY;
use crate::crypto;
use crate::error::Error;
use crate::keys::record::{KeyRecord, KeyVersion, check_destruction_days, check_rotation_period};
use crate::keys::state::{KeyState, Transition, next_state};
use crate::keys::{Alias, KeyId, KeyRef, Namespace};
use crate::store::{Batch, StoreError, Tree};

/// The KMS's own keys (the audit key) may be rotated and described, but not disabled,
/// compromised, destroyed or granted: that would silently stop the audit trail's signatures.
fn refuse_system_key(record: &KeyRecord, what: &'static str) -> Result<(), Error> {
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

/// Pending destruction whose waiting period has ended.
fn destruction_due(r: &KeyRecord, now: u64) -> bool {
    r.state == KeyState::PendingDestruction && r.destroy_at.is_some_and(|t| t <= now)
}

/// What `create_key` needs.
#[derive(Clone, Debug)]
pub struct CreateKeyRequest {
    pub namespace: Namespace,
    pub purpose: Purpose,
    pub spec: KeySpec,
    pub alias: Option<Alias>,
    /// Seconds between automatic rotations (at least one day), if any.
    pub rotation_period: Option<u64>,
    pub description: String,
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
                    destroyed: v.wrapped.is_none(),
                    public_key_der: v.public_key.clone(),
                })
                .collect(),
            rotation_period: r.rotation_period,
            last_rotated_at: r.last_rotated_at,
            next_rotation_at: r.next_rotation_at,
            compromised_at: r.compromised_at,
            destroy_at: r.destroy_at,
            destroyed_at: r.destroyed_at,
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
        principal: &Principal,
        req: CreateKeyRequest,
    ) -> Result<KeyInfo, Error> {
        let vault = self.begin(principal, Op::CreateKey)?;
        if req.namespace.as_str() == super::audit_key::SYSTEM_NAMESPACE {
            return Err(Error::PermissionDenied {
                principal: principal.to_string(),
                op: "create keys in the system namespace",
            });
        }
        let mut batch = Batch::new();
        let record = self.prepare_key(&vault, &req, &mut batch)?;
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
        batch: &mut Batch,
    ) -> Result<KeyRecord, Error> {
        let approved = self.config.policy.approve(req.purpose, req.spec)?;
        let rotation_period = req.rotation_period.map(check_rotation_period).transpose()?;
        if req.description.len() > 1024 {
            return Err(crate::InvalidInput::new("description", "at most 1024 bytes").into());
        }
        let now = self.now();
        let id = KeyId::random()?;
        let material = crypto::generate(&approved)?;
        let public_key = match req.purpose {
            Purpose::Sign | Purpose::AsymmetricDecrypt => {
                Some(crypto::public_key_of(&material)?.spki_der().to_vec())
            }
            Purpose::Encrypt | Purpose::Mac => None,
        };
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
        };
        let wrapped = self.wrap_version(vault, &record, 1, &material)?;
        record.versions.push(KeyVersion {
            version: 1,
            created_at: now,
            wrapped: Some(wrapped),
            public_key,
        });
        batch.require(record.tree(), id.as_bytes().as_slice(), None);
        batch.put(record.tree(), id.as_bytes().as_slice(), record.encode()?);
        batch.put(
            Tree::Meta,
            layout::key_index(&id),
            vec![Self::purpose_code(record.purpose)],
        );
        if let Some(alias) = &req.alias {
            let k = layout::alias(&req.namespace, alias.as_str());
            batch.require(Tree::Aliases, k.clone(), None);
            batch.put(Tree::Aliases, k, id.as_bytes().to_vec());
        }
        Ok(record)
    }
    pub fn describe_key(&self, principal: &Principal, key: &KeyRef) -> Result<KeyInfo, Error> {
        self.begin(principal, Op::DescribeKey)?;
        let (record, _) = self.reach(principal, key, GrantOp::Describe)?;
        Ok(KeyInfo::from_record(&record))
    }

    /// Every key (admins, auditors) or every key of the app's namespace, optionally filtered.
    pub fn list_keys(
        &self,
        principal: &Principal,
        namespace: Option<&Namespace>,
    ) -> Result<Vec<KeyInfo>, Error> {
        self.begin(principal, Op::ListKeys)?;
        let filter = match &principal.role {
            Role::App { namespace: own } => Some(own),
            Role::Admin | Role::Auditor => namespace,
        };
        let mut out = Vec::new();
        for purpose in Purpose::ALL {
            for (_, bytes) in self.store.scan_prefix(KeyRecord::tree_for(purpose), &[])? {
                let r = KeyRecord::decode(&bytes)?;
                if filter.is_none_or(|ns| *ns == r.namespace) {
                    out.push(KeyInfo::from_record(&r));
                }
            }
        }
        out.sort_by_key(|k| (k.created_at, k.id));
        Ok(out)
    }

    /// Every key record, for the inventory and for system tasks.
    pub(crate) fn all_records(&self) -> Result<Vec<KeyRecord>, Error> {
        let mut out = Vec::new();
        for purpose in Purpose::ALL {
            for (_, bytes) in self.store.scan_prefix(KeyRecord::tree_for(purpose), &[])? {
                out.push(KeyRecord::decode(&bytes)?);
            }
        }
        Ok(out)
    }

    fn add_version(&self, record: &mut KeyRecord, vault: &super::Unsealed) -> Result<u32, Error> {
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
        let public_key = match record.purpose {
            Purpose::Sign | Purpose::AsymmetricDecrypt => {
                Some(crypto::public_key_of(&material)?.spki_der().to_vec())
            }
            Purpose::Encrypt | Purpose::Mac => None,
        };
        let wrapped = self.wrap_version(vault, record, version, &material)?;
        let now = self.now();
        record.versions.push(KeyVersion {
            version,
            created_at: now,
            wrapped: Some(wrapped),
            public_key,
        });
        record.last_rotated_at = Some(now);
        record.next_rotation_at = record.rotation_period.map(|p| now.saturating_add(p));
        Ok(version)
    }

    /// Adds a version; new work uses it, old versions still decrypt and verify (KEY-7).
    pub fn rotate_key(&self, principal: &Principal, key: &KeyRef) -> Result<KeyInfo, Error> {
        let vault = self.begin(principal, Op::RotateKey)?;
        let (record, _) = self.update(principal, key, GrantOp::Describe, |r, _| {
            self.add_version(r, &vault)
        })?;
        Ok(KeyInfo::from_record(&record))
    }

    /// Sets or clears the rotation period (at least one day).
    pub fn set_rotation_period(
        &self,
        principal: &Principal,
        key: &KeyRef,
        period: Option<u64>,
    ) -> Result<KeyInfo, Error> {
        self.begin(principal, Op::SetRotationPolicy)?;
        let period = period.map(check_rotation_period).transpose()?;
        let now = self.now();
        let (record, ()) = self.update(principal, key, GrantOp::Describe, |r, _| {
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

    fn transition(
        &self,
        principal: &Principal,
        key: &KeyRef,
        op: Op,
        t: Transition,
        days: Option<u32>,
    ) -> Result<KeyInfo, Error> {
        self.begin(principal, op)?;
        let days = days.map(check_destruction_days).transpose()?;
        let now = self.now();
        let (record, ()) = self.update(principal, key, GrantOp::Describe, |r, _| {
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
            r.state = to;
            Ok(())
        })?;
        Ok(KeyInfo::from_record(&record))
    }

    pub fn enable_key(&self, principal: &Principal, key: &KeyRef) -> Result<KeyInfo, Error> {
        self.transition(principal, key, Op::EnableKey, Transition::Enable, None)
    }

    pub fn disable_key(&self, principal: &Principal, key: &KeyRef) -> Result<KeyInfo, Error> {
        self.transition(principal, key, Op::DisableKey, Transition::Disable, None)
    }

    /// Stops a compromised key at once: no new encryption or signing; decrypt and verify still
    /// work and are flagged (KEY-8). One way.
    pub fn mark_compromised(&self, principal: &Principal, key: &KeyRef) -> Result<KeyInfo, Error> {
        self.transition(
            principal,
            key,
            Op::MarkCompromised,
            Transition::Compromise,
            None,
        )
    }

    /// Schedules destruction after `days` (7–90, default 30).
    pub fn schedule_destruction(
        &self,
        principal: &Principal,
        key: &KeyRef,
        days: Option<u32>,
    ) -> Result<KeyInfo, Error> {
        let days = Some(days.unwrap_or(crate::keys::record::DEFAULT_DESTRUCTION_DAYS));
        self.transition(
            principal,
            key,
            Op::ScheduleKeyDestruction,
            Transition::ScheduleDestruction,
            days,
        )
    }

    pub fn cancel_destruction(
        &self,
        principal: &Principal,
        key: &KeyRef,
    ) -> Result<KeyInfo, Error> {
        self.transition(
            principal,
            key,
            Op::CancelKeyDestruction,
            Transition::CancelDestruction,
            None,
        )
    }

    /// Keys whose rotation is due now.
    pub fn due_for_rotation(&self) -> Result<Vec<KeyId>, Error> {
        let now = self.now();
        Ok(self
            .all_records()?
            .into_iter()
            .filter(|r| r.overdue(now))
            .map(|r| r.id)
            .collect())
    }

    /// Rotates every key that is due; runs on every node (the scheduler), and each due rotation
    /// still happens exactly once (see [`Kms::rotate_if_due`]). A key that cannot be rotated
    /// now (disabled meanwhile, refused by policy) is skipped; a store failure stops the round
    /// and is returned, and the next round retries whatever is still due.
    pub fn rotate_due(&self) -> Result<Vec<(KeyId, u32)>, Error> {
        let vault = self.unsealed()?;
        let mut done = Vec::new();
        for id in self.due_for_rotation()? {
            match self.rotate_if_due(&vault, id) {
                Ok(Some(version)) => done.push((id, version)),
                Ok(None) => {}
                Err(Error::Store(e @ (StoreError::Unavailable(_) | StoreError::Io(_)))) => {
                    return Err(Error::Store(e));
                }
                Err(_) => {}
            }
        }
        Ok(done)
    }

    /// One key's scheduled rotation, at most once per due date whatever the number of nodes: the
    /// record is re-read and the due check repeated on every attempt, and the new version is
    /// written with the record as read as a precondition, which the store checks under its lock
    /// (a database lock on PostgreSQL). Of several nodes racing, one commits; the others' writes
    /// fail the precondition, and on re-reading they find the key no longer due and write
    /// nothing. A rotation whose outcome is unknown (store error after the write was sent) is
    /// not retried here: the next round re-reads and sees whether it landed.
    fn rotate_if_due(&self, vault: &super::Unsealed, id: KeyId) -> Result<Option<u32>, Error> {
        for _ in 0..CAS_RETRIES {
            let (mut record, old) = self.load(id)?;
            if !record.overdue(self.now()) {
                return Ok(None);
            }
            let version = self.add_version(&mut record, vault)?;
            if self.swap_record(&mut record, old)? {
                return Ok(Some(version));
            }
        }
        // Still contended after every retry: another node keeps changing the key; the next
        // round looks again.
        Ok(None)
    }

    /// Writes `record` (revision bumped) if the stored bytes are still `old`; false when another
    /// writer changed it first.
    fn swap_record(&self, record: &mut KeyRecord, old: Vec<u8>) -> Result<bool, Error> {
        record.revision += 1;
        let mut batch = Batch::new();
        batch.require(record.tree(), record.id.as_bytes().as_slice(), Some(old));
        batch.put(
            record.tree(),
            record.id.as_bytes().as_slice(),
            record.encode()?,
        );
        match self.store.apply(&batch) {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Destroys every key whose waiting period has ended: the wrapped material of every version
    /// is deleted from the store; metadata stays for auditors (KEY-8). Runs on every node; each
    /// destruction happens once, by the same re-read-and-swap as [`Kms::rotate_if_due`].
    ///
    /// Each node also drops from its own cache the material of keys that *another* node
    /// destroyed recently (the cache outlives a destruction elsewhere by at most one scheduler
    /// interval, never its lifetime): such material is unusable anyway, since every use reads
    /// the key's state from the store first, but it should not stay in memory (KEY-3).
    pub fn destroy_due(&self) -> Result<Vec<KeyId>, Error> {
        let now = self.now();
        let records = self.all_records()?;
        let cached_for = self.config.cache_ttl.as_secs().saturating_add(1);
        for r in &records {
            if r.state == KeyState::Destroyed
                && r.destroyed_at
                    .is_some_and(|t| t.saturating_add(cached_for) >= now)
            {
                self.cache.forget(r.id);
            }
        }
        let due: Vec<KeyId> = records
            .into_iter()
            .filter(|r| destruction_due(r, now))
            .map(|r| r.id)
            .collect();
        let mut done = Vec::new();
        for id in due {
            match self.destroy_if_due(id) {
                Ok(true) => {
                    self.cache.forget(id);
                    done.push(id);
                }
                Ok(false) => {}
                Err(Error::Store(e @ (StoreError::Unavailable(_) | StoreError::Io(_)))) => {
                    return Err(Error::Store(e));
                }
                Err(_) => {}
            }
        }
        Ok(done)
    }

    fn destroy_if_due(&self, id: KeyId) -> Result<bool, Error> {
        for _ in 0..CAS_RETRIES {
            let (mut record, old) = self.load(id)?;
            let now = self.now();
            if !destruction_due(&record, now) {
                return Ok(false);
            }
            for v in &mut record.versions {
                v.wrapped = None;
            }
            record.state = KeyState::Destroyed;
            record.destroyed_at = Some(now);
            if self.swap_record(&mut record, old)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds an alias in the key's own namespace (unique per namespace).
    pub fn create_alias(
        &self,
        principal: &Principal,
        key: &KeyRef,
        alias: Alias,
    ) -> Result<KeyInfo, Error> {
        self.begin(principal, Op::CreateAlias)?;
        let (record, ()) = self
            .update(principal, key, GrantOp::Describe, |r, batch| {
                let k = layout::alias(&r.namespace, alias.as_str());
                batch.require(Tree::Aliases, k.clone(), None);
                batch.put(Tree::Aliases, k, r.id.as_bytes().to_vec());
                if !r.aliases.contains(&alias) {
                    r.aliases.push(alias.clone());
                }
                Ok(())
            })
            .map_err(|e| {
                // The alias precondition keeps failing on every retry: it exists already.
                if matches!(e, Error::FailedPrecondition(_)) {
                    Error::AlreadyExists {
                        what: "alias",
                        name: alias.to_string(),
                    }
                } else {
                    e
                }
            })?;
        Ok(KeyInfo::from_record(&record))
    }

    pub fn delete_alias(
        &self,
        principal: &Principal,
        namespace: &Namespace,
        alias: &Alias,
    ) -> Result<(), Error> {
        self.begin(principal, Op::DeleteAlias)?;
        let key = KeyRef::Alias(namespace.clone(), alias.clone());
        self.update(principal, &key, GrantOp::Describe, |r, batch| {
            refuse_system_key(r, "deleting an alias")?;
            batch.delete(Tree::Aliases, layout::alias(namespace, alias.as_str()));
            r.aliases.retain(|a| a != alias);
            Ok(())
        })?;
        Ok(())
    }

    /// Lets namespace `grantee` perform `ops` with a key (KEY-9). Replaces an existing grant.
    pub fn create_grant(
        &self,
        principal: &Principal,
        key: &KeyRef,
        grantee: Namespace,
        ops: Vec<GrantOp>,
    ) -> Result<Grant, Error> {
        self.begin(principal, Op::CreateGrant)?;
        refuse_system_key(&self.reach(principal, key, GrantOp::Describe)?.0, "grant")?;
        if ops.is_empty() {
            return Err(
                crate::InvalidInput::new("operations", "name at least one operation").into(),
            );
        }
        let (record, _) = self.reach(principal, key, GrantOp::Describe)?;
        let mut ops = ops;
        ops.sort();
        ops.dedup();
        let grant = Grant {
            key_id: record.id,
            grantee,
            ops,
            created_at: self.now(),
        };
        let mut batch = Batch::new();
        batch.put(
            Tree::Grants,
            layout::grant(&record.id, &grant.grantee),
            serde_json::to_vec(&grant).map_err(|_| store_corrupt("grant"))?,
        );
        self.store.apply(&batch)?;
        Ok(grant)
    }

    pub fn revoke_grant(
        &self,
        principal: &Principal,
        key: &KeyRef,
        grantee: &Namespace,
    ) -> Result<(), Error> {
        self.begin(principal, Op::RevokeGrant)?;
        let (record, _) = self.reach(principal, key, GrantOp::Describe)?;
        let k = layout::grant(&record.id, grantee);
        if self.store.get(Tree::Grants, &k)?.is_none() {
            return Err(Error::NotFound {
                what: "grant",
                name: format!("{} to {grantee}", record.id),
            });
        }
        let mut batch = Batch::new();
        batch.delete(Tree::Grants, k);
        self.store.apply(&batch)?;
        Ok(())
    }

    /// Grants on one key, or on every key.
    pub fn list_grants(
        &self,
        principal: &Principal,
        key: Option<&KeyRef>,
    ) -> Result<Vec<Grant>, Error> {
        self.begin(principal, Op::ListGrants)?;
        let prefix = match key {
            Some(k) => self
                .reach(principal, k, GrantOp::Describe)?
                .0
                .id
                .as_bytes()
                .to_vec(),
            None => Vec::new(),
        };
        self.store
            .scan_prefix(Tree::Grants, &prefix)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|_| store_corrupt("grant")))
            .collect()
    }

    /// Registers a principal with a role. Apps' namespaces get their KEK now.
    pub fn add_principal(
        &self,
        principal: &Principal,
        subject: &str,
        role: Role,
    ) -> Result<Principal, Error> {
        let vault = self.begin(principal, Op::AddPrincipal)?;
        if let Role::App { namespace } = &role
            && namespace.as_str() == super::audit_key::SYSTEM_NAMESPACE
        {
            return Err(crate::InvalidInput::new(
                "namespace",
                "kms-system is reserved for the KMS's own keys",
            )
            .into());
        }
        let mut new = Principal::new(subject, role)?;
        new.created_at = self.now();
        if let Role::App { namespace } = &new.role {
            self.kek(&vault, namespace)?;
        }
        let mut batch = Batch::new();
        batch.require(Tree::Principals, subject.as_bytes(), None);
        batch.put(
            Tree::Principals,
            subject.as_bytes(),
            serde_json::to_vec(&new).map_err(|_| store_corrupt("principal"))?,
        );
        match self.store.apply(&batch) {
            Ok(()) => Ok(new),
            Err(StoreError::Conflict { .. }) => Err(Error::AlreadyExists {
                what: "principal",
                name: subject.to_owned(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a principal. The last administrator cannot be removed (nobody could manage keys).
    pub fn remove_principal(&self, principal: &Principal, subject: &str) -> Result<(), Error> {
        self.begin(principal, Op::RemovePrincipal)?;
        for _ in 0..CAS_RETRIES {
            let Some(old) = self.store.get(Tree::Principals, subject.as_bytes())? else {
                return Err(Error::NotFound {
                    what: "principal",
                    name: subject.to_owned(),
                });
            };
            let target: Principal =
                serde_json::from_slice(&old).map_err(|_| store_corrupt("principal"))?;
            if target.role == Role::Admin {
                let admins = self
                    .list_principals_unchecked()?
                    .iter()
                    .filter(|p| p.role == Role::Admin)
                    .count();
                if admins <= 1 {
                    return Err(Error::FailedPrecondition(
                        "the last administrator cannot be removed".into(),
                    ));
                }
            }
            let mut batch = Batch::new();
            batch.require(Tree::Principals, subject.as_bytes(), Some(old));
            batch.delete(Tree::Principals, subject.as_bytes());
            match self.store.apply(&batch) {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::FailedPrecondition(
            "the principal is being changed concurrently; retry".into(),
        ))
    }

    pub fn list_principals(&self, principal: &Principal) -> Result<Vec<Principal>, Error> {
        authz::authorize(principal, Op::ListPrincipals)?;
        self.list_principals_unchecked()
    }

    fn list_principals_unchecked(&self) -> Result<Vec<Principal>, Error> {
        self.store
            .scan_prefix(Tree::Principals, &[])?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|_| store_corrupt("principal")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::kms::KmsConfig;
    use crate::store::{MemoryStore, Store};

    /// Two nodes on one store: B's reaper destroys a key whose material A has cached; A's own
    /// reaper, finding nothing left to destroy, still drops that material from its cache.
    #[test]
    fn a_node_forgets_material_that_another_node_destroyed() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let node = || {
            Kms::with_clock(
                Arc::clone(&store),
                KmsConfig::default(),
                Arc::clone(&clock) as Arc<dyn Clock>,
            )
        };
        let (a, b) = (node(), node());
        let init = a.init(1, 1, "admin").expect("init");
        a.unseal_with(&init.shares[0]).expect("unseal a");
        b.unseal_with(&init.shares[0]).expect("unseal b");
        let admin = a.principal("admin").expect("read").expect("admin");
        let key = a
            .create_key(
                &admin,
                CreateKeyRequest {
                    namespace: Namespace::new("app").expect("ns"),
                    purpose: Purpose::Encrypt,
                    spec: KeySpec::Sm4Gcm,
                    alias: None,
                    rotation_period: None,
                    description: String::new(),
                },
            )
            .expect("create");
        let (record, _) = a.load(key.id).expect("load");
        a.material(&a.unsealed().expect("vault"), &record, 1)
            .expect("use");
        assert!(a.cache.get(key.id, 1).is_some(), "A caches the version");

        b.schedule_destruction(&admin, &KeyRef::Id(key.id), Some(7))
            .expect("schedule");
        clock.advance(8 * DAY);
        assert_eq!(b.destroy_due().expect("reap on B"), vec![key.id]);
        assert!(a.cache.get(key.id, 1).is_some(), "A's cache is its own");
        assert!(
            a.destroy_due().expect("reap on A").is_empty(),
            "destroyed once"
        );
        assert!(a.cache.get(key.id, 1).is_none(), "A dropped the material");
    }
}
