//! The `Kms` facade: the single path every caller uses.
//!
//! Each public method that touches keys, grants or principals takes an
//! [`Authorized`] proof for its one operation, which only [`authz::authorize`] makes (the
//! role × operation matrix). It then checks, in this order and on every path: the KMS being
//! unsealed, the key's reach (namespace or grant), its purpose and state, and the policy — before
//! any key material is unwrapped. Operations no API caller may invoke (init, local unseal,
//! restore, sweeps, audit signing) are reachable only through the [`System`] handle that opened
//! the KMS; root-derived secrets never leave the crate. Operations under dual control also need
//! a quorum of administrators (`approvals.rs`).

pub(crate) mod approvals;
pub(crate) mod audit_key;
mod backup;
mod cas;
pub mod custody;
mod data;
mod gcm_budget;
mod grants;
mod import_export;
pub(crate) mod inventory;
mod lifecycle;
pub(crate) mod metrics;
mod outside_keys;
mod password;
mod principals;
mod request;
mod staged_restore;
pub(crate) mod sweeps;
mod system;
mod system_handle;
#[cfg(any(test, feature = "test-util"))]
pub(crate) mod testing;
mod tokenize;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use approvals::{
    ApprovalLog, ApprovalRequest, ApprovalState, Params as ApprovalParams, Quorum, Sensitive,
};
pub use data::{
    DataKeyMode, DataKeyOutput, DecryptOutput, EncryptOutput, MAX_RANDOM_BYTES, PublicKeyOutput,
    SignOutput, VerifyOutput,
};
pub use gcm_budget::GCM_INVOCATION_LIMIT;
pub use import_export::{
    ExportKeyRequest, ExportOutput, IMPORT_TOKEN_TTL, ImportMaterialRequest, ImportParameters,
    ImportedKey,
};
pub use lifecycle::{CreateKeyRequest, KeyInfo, KeyOptions, VersionInfo};
pub use outside_keys::ImportPublicKeyRequest;
pub use password::{
    HashPasswordOutput, MAX_IDENTIFIER_BYTES, MAX_IDENTIFIERS, MAX_SEALED_CIPHERTEXT,
    PasswordSettings, VerifyPasswordOutput,
};
pub use request::{RequestVerdict, VerifyRequestOutput};
pub use staged_restore::{RestoreProgress, StagedRestore};
pub use sweeps::{Sweep, SweepLog, SweepOutcome};
pub use system::{InitOutput, Issued, Status, UnsealProgress, Unsealing};
pub use system_handle::System;
pub use tokenize::{MAX_TOKEN_VALUES, TokenOutput};

use crate::alg::Purpose;
use crate::authz::{self, Authorized, Grant, GrantOp, Operation, Principal};
use crate::cache::KeyCache;
use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::hierarchy::wrap::{self, Derived, VersionAad, WrapAlg};
use crate::hierarchy::{Kek, RootKey};
use crate::keys::record::KeyRecord;
use crate::keys::{KeyId, KeyRef, Namespace};
use crate::policy::Policy;
use crate::secret::KeyMaterial;
use crate::store::{Batch, Store, StoreError, Tree};

/// Settings of the core.
#[derive(Clone, Copy, Debug)]
pub struct KmsConfig {
    pub policy: Policy,
    /// The AEAD that wraps root key, KEKs and key versions (SM4-GCM by default).
    pub wrap: WrapAlg,
    /// How long an unwrapped key version may stay in memory; zero disables the cache (KEY-3).
    pub cache_ttl: Duration,
    pub cache_capacity: usize,
    /// Encryptions one SM4-GCM or AES-256-GCM key version may make before the key rotates
    /// (`kms/gcm_budget.rs`); at most 2^32 (NIST SP 800-38D §8.3).
    pub gcm_invocation_limit: u64,
    /// Whether an unseal share may be given by someone other than its holder (recorded with
    /// the `break-glass` flag). Off by default.
    pub unseal_break_glass: bool,
    /// Dual control: which operations need several administrators (`kms/approvals.rs`).
    pub quorum: Quorum,
    /// The password shield (`kms/password.rs`): window, strength rules, hash costs.
    pub password: PasswordSettings,
    /// The replay guard's window and bound (`crate::replay`).
    pub replay: crate::replay::ReplaySettings,
}

impl KmsConfig {
    /// The configured policy with the default wrap (SM4-GCM) and cache (5 minutes, 10 000
    /// versions).
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            wrap: WrapAlg::SM4_GCM,
            cache_ttl: Duration::from_secs(300),
            cache_capacity: 10_000,
            gcm_invocation_limit: GCM_INVOCATION_LIMIT,
            unseal_break_glass: false,
            quorum: Quorum::off(),
            password: PasswordSettings::DEFAULT,
            replay: crate::replay::ReplaySettings::default(),
        }
    }
}

/// For tests: the standard policy (see [`Policy`]'s `Default`).
#[cfg(any(test, feature = "test-util"))]
impl Default for KmsConfig {
    fn default() -> Self {
        Self::new(Policy::default())
    }
}

/// What exists only while unsealed.
struct Unsealed {
    root: RootKey,
    wrap: WrapAlg,
    keks: RwLock<HashMap<Namespace, Arc<Kek>>>,
}

/// The key-management service core.
pub struct Kms {
    store: Arc<dyn Store>,
    config: KmsConfig,
    clock: Arc<dyn Clock>,
    vault: RwLock<Option<Arc<Unsealed>>>,
    pending_shares: Mutex<Vec<custody::Given>>,
    /// A backup waiting for its holders' shares (`staged_restore.rs`).
    staged_restore: Mutex<Option<staged_restore::Staged>>,
    cache: KeyCache,
    /// GCM invocations this node reserved and has not used yet.
    leases: gcm_budget::Leases,
    /// Key id → purpose (immutable, so safe to remember forever): which tree holds the record.
    purposes: RwLock<HashMap<KeyId, Purpose>>,
    /// Where the approval steps are recorded (the server's audit trail).
    approval_log: approvals::SharedLog,
}

/// Store keys of the bookkeeping entries.
mod layout {
    pub(super) const KEY_INDEX: &[u8] = b"keyidx/";

    pub(super) fn key_index(id: &super::KeyId) -> Vec<u8> {
        [KEY_INDEX, id.as_bytes().as_slice()].concat()
    }

    pub(super) fn alias(ns: &super::Namespace, alias: &str) -> Vec<u8> {
        [ns.as_str().as_bytes(), &[0], alias.as_bytes()].concat()
    }

    pub(super) fn grant(id: &super::KeyId, ns: &super::Namespace) -> Vec<u8> {
        [id.as_bytes().as_slice(), ns.as_str().as_bytes()].concat()
    }
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn store_corrupt(what: &str) -> Error {
    Error::Store(StoreError::Corrupt(format!("{what} does not decode")))
}

impl Kms {
    /// Opens a KMS over a store. It starts sealed, whatever state it was left in.
    fn open(store: Arc<dyn Store>, config: KmsConfig) -> Self {
        Self::with_clock(store, config, Arc::new(SystemClock))
    }

    fn with_clock(store: Arc<dyn Store>, config: KmsConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            cache: KeyCache::new(config.cache_ttl, config.cache_capacity),
            leases: gcm_budget::Leases::default(),
            config,
            clock,
            vault: RwLock::new(None),
            pending_shares: Mutex::new(Vec::new()),
            staged_restore: Mutex::new(None),
            purposes: RwLock::new(HashMap::new()),
            approval_log: RwLock::new(None),
        }
    }

    #[must_use]
    pub fn policy(&self) -> Policy {
        self.config.policy
    }

    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The replay guard over this KMS's store, with the configured window and bound.
    #[must_use]
    pub fn replay_guard(&self) -> crate::replay::ReplayGuard<'_> {
        crate::replay::ReplayGuard::new(&*self.store, self.config.replay)
    }

    /// The KMS's clock (Unix seconds), the one the replay guard's window is measured on.
    #[must_use]
    pub fn clock_now(&self) -> u64 {
        self.clock.now()
    }

    fn unsealed(&self) -> Result<Arc<Unsealed>, Error> {
        read_lock(&self.vault).clone().ok_or(Error::Sealed)
    }

    /// The caller holds a proof of authorisation (see [`authz::authorize`]), so here only: the
    /// KMS is unsealed.
    fn begin<O: Operation>(&self, _proof: &Authorized<'_, O>) -> Result<Arc<Unsealed>, Error> {
        self.unsealed()
    }

    /// The namespace KEK, created on first use (KEY-6).
    fn kek(&self, vault: &Unsealed, ns: &Namespace) -> Result<Arc<Kek>, Error> {
        if let Some(k) = read_lock(&vault.keks).get(ns) {
            return Ok(Arc::clone(k));
        }
        let policy = &self.config.policy;
        let kek = match self.store.get(Tree::Namespaces, ns.as_str().as_bytes())? {
            Some(wrapped) => wrap::unwrap_kek(policy, &vault.root, ns, &wrapped)?,
            None => {
                let fresh = Kek::generate(vault.wrap)?;
                let wrapped = wrap::wrap_kek(policy, &vault.root, ns, &fresh)?;
                let mut batch = Batch::new();
                batch.require(Tree::Namespaces, ns.as_str().as_bytes(), None);
                batch.put(Tree::Namespaces, ns.as_str().as_bytes(), wrapped);
                match self.store.apply(&batch) {
                    Ok(()) => fresh,
                    // Another writer created it first: use theirs.
                    Err(StoreError::Conflict { .. }) => {
                        let theirs = self
                            .store
                            .get(Tree::Namespaces, ns.as_str().as_bytes())?
                            .ok_or_else(|| store_corrupt("namespace key"))?;
                        wrap::unwrap_kek(policy, &vault.root, ns, &theirs)?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let kek = Arc::new(kek);
        write_lock(&vault.keks).insert(ns.clone(), Arc::clone(&kek));
        Ok(kek)
    }

    fn purpose_of(&self, id: KeyId) -> Result<Option<Purpose>, Error> {
        if let Some(p) = read_lock(&self.purposes).get(&id) {
            return Ok(Some(*p));
        }
        let Some(bytes) = self.store.get(Tree::Meta, &layout::key_index(&id))? else {
            return Ok(None);
        };
        let purpose = match bytes.as_slice() {
            [0] => Purpose::Encrypt,
            [1] => Purpose::Sign,
            [2] => Purpose::AsymmetricDecrypt,
            [3] => Purpose::Mac,
            [4] => Purpose::Tokenize,
            [5] => Purpose::Password,
            [6] => Purpose::Pepper,
            _ => return Err(store_corrupt("key index")),
        };
        write_lock(&self.purposes).insert(id, purpose);
        Ok(Some(purpose))
    }

    fn purpose_code(p: Purpose) -> u8 {
        match p {
            Purpose::Encrypt => 0,
            Purpose::Sign => 1,
            Purpose::AsymmetricDecrypt => 2,
            Purpose::Mac => 3,
            Purpose::Tokenize => 4,
            Purpose::Password => 5,
            Purpose::Pepper => 6,
        }
    }

    /// Loads a key record by id, with the stored bytes (for compare-and-swap updates).
    fn load(&self, id: KeyId) -> Result<(KeyRecord, Vec<u8>), Error> {
        let not_found = || Error::NotFound {
            what: "key",
            name: id.to_string(),
        };
        let purpose = self.purpose_of(id)?.ok_or_else(not_found)?;
        let bytes = self
            .store
            .get(KeyRecord::tree_for(purpose), id.as_bytes())?
            .ok_or_else(not_found)?;
        Ok((KeyRecord::decode(&bytes)?, bytes))
    }

    fn resolve_id(&self, key: &KeyRef) -> Result<KeyId, Error> {
        match key {
            KeyRef::Id(id) => Ok(*id),
            KeyRef::Alias(ns, alias) => {
                let bytes = self
                    .store
                    .get(Tree::Aliases, &layout::alias(ns, alias.as_str()))?
                    .ok_or_else(|| Error::NotFound {
                        what: "alias",
                        name: key.to_string(),
                    })?;
                let raw: [u8; 16] = bytes.try_into().map_err(|_| store_corrupt("alias"))?;
                Ok(KeyId(uuid::Uuid::from_bytes(raw)))
            }
        }
    }

    /// Finds a key and checks that `principal` may reach it for `op` (own namespace or grant).
    /// A key out of reach looks exactly like a missing one, so ids cannot be probed.
    fn reach(
        &self,
        principal: &Principal,
        key: &KeyRef,
        op: GrantOp,
    ) -> Result<(KeyRecord, Vec<u8>), Error> {
        self.reach_with(principal, key, |record, grant| {
            authz::may_use_key(principal, record, op, grant)
        })
    }

    /// [`Kms::reach`] with the rule given: `allowed` sees the record and the caller's
    /// namespace's grant on it (for an app outside the key's namespace).
    fn reach_with(
        &self,
        principal: &Principal,
        key: &KeyRef,
        allowed: impl FnOnce(&KeyRecord, Option<&Grant>) -> bool,
    ) -> Result<(KeyRecord, Vec<u8>), Error> {
        let id = self.resolve_id(key)?;
        let (record, bytes) = self.load(id)?;
        let grant = self.grant_for(principal, &record)?;
        if allowed(&record, grant.as_ref()) {
            Ok((record, bytes))
        } else {
            Err(Error::NotFound {
                what: "key",
                name: key.to_string(),
            })
        }
    }

    /// The grant of an app's namespace on a key of another namespace, if any.
    fn grant_for(&self, principal: &Principal, record: &KeyRecord) -> Result<Option<Grant>, Error> {
        match &principal.role {
            authz::Role::App { namespace } if *namespace != record.namespace => {
                self.grant(record.id, namespace)
            }
            authz::Role::App { .. }
            | authz::Role::Admin
            | authz::Role::Auditor
            | authz::Role::Custodian => Ok(None),
        }
    }

    fn grant(&self, id: KeyId, ns: &Namespace) -> Result<Option<Grant>, Error> {
        match self.store.get(Tree::Grants, &layout::grant(&id, ns))? {
            Some(b) => Ok(Some(
                serde_json::from_slice(&b).map_err(|_| store_corrupt("grant"))?,
            )),
            None => Ok(None),
        }
    }

    /// The unwrapped material of one version, from the cache or the store.
    fn material(
        &self,
        vault: &Unsealed,
        record: &KeyRecord,
        version: u32,
    ) -> Result<Arc<KeyMaterial>, Error> {
        if let Some(k) = self.cache.get(record.id, version) {
            return Ok(k);
        }
        let kv = record.version(version).ok_or_else(|| Error::NotFound {
            what: "key version",
            name: format!("{}/{version}", record.id),
        })?;
        if record.origin == crate::keys::record::Origin::PublicOnly {
            return Err(lifecycle::public_only(
                record,
                "used to sign or decrypt: only its owner holds the private key",
            ));
        }
        let wrapped = kv.wrapped.as_ref().ok_or_else(|| Error::InvalidState {
            key: record.id.to_string(),
            state: record.state,
            op: "use destroyed material",
        })?;
        let kek = self.kek(vault, &record.namespace)?;
        let at = VersionAad::new(
            record.id,
            version,
            &record.namespace,
            record.purpose,
            record.spec,
        );
        let key = Arc::new(wrap::unwrap_version(
            &self.config.policy,
            &kek,
            &at,
            wrapped,
        )?);
        self.cache.insert(record.id, version, Arc::clone(&key));
        Ok(key)
    }

    /// Wraps fresh material as a version of `record` (namespace KEK, AAD binding everything).
    fn wrap_version(
        &self,
        vault: &Unsealed,
        record: &KeyRecord,
        version: u32,
        key: &KeyMaterial,
    ) -> Result<Vec<u8>, Error> {
        let kek = self.kek(vault, &record.namespace)?;
        let at = VersionAad::new(
            record.id,
            version,
            &record.namespace,
            record.purpose,
            record.spec,
        );
        wrap::wrap_version(&self.config.policy, &kek, &at, key)
    }

    /// A key derived from the root key for one named use; never leaves the crate.
    pub(crate) fn derived_key(&self, what: Derived) -> Result<KeyMaterial, Error> {
        let vault = self.unsealed()?;
        wrap::derive(&vault.root, what)
    }
}

#[cfg(test)]
mod tests;
