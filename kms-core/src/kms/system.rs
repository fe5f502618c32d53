//! Initialisation, unsealing and sealing (KEY-2).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::{Kms, Unsealed, read_lock, store_corrupt, write_lock};
use crate::alg::KeySpec;
use crate::authz::{Authorized, Principal, Role, ops};
use crate::crypto::rng;
use crate::error::{Error, InvalidInput, UnsealError};
use crate::hierarchy::share::{self, SET_ID_LEN, Share};
use crate::hierarchy::wrap::{self, WrapAlg};
use crate::hierarchy::{RootKey, UnsealKey};
use crate::store::{Batch, StoreError, Tree};

pub(super) const CONFIG: &[u8] = b"config";
pub(super) const ROOT: &[u8] = b"root";

/// What `init` decided, stored in the clear (it holds no secret).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SealConfig {
    format: u8,
    pub(super) wrap: KeySpec,
    shares: u8,
    pub(super) threshold: u8,
    set_id: String,
    initialized_at: u64,
}

/// The KMS as `status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub initialized: bool,
    pub sealed: bool,
    pub shares: u8,
    pub threshold: u8,
    /// Shares given so far towards the next unseal.
    pub progress: u8,
    pub policy: &'static str,
    pub store: &'static str,
}

/// The shares made at `init`; give each to a different administrator.
#[derive(Debug)]
pub struct InitOutput {
    pub shares: Vec<Share>,
    pub threshold: u8,
}

/// Where an unseal stands after one more share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsealProgress {
    NeedMore { have: u8, threshold: u8 },
    Unsealed,
}

impl SealConfig {
    pub(super) fn set_id_bytes(&self) -> Result<[u8; SET_ID_LEN], Error> {
        hex::decode(&self.set_id)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| store_corrupt("seal config"))
    }
}

impl Kms {
    fn seal_config(&self) -> Result<Option<SealConfig>, Error> {
        match self.store.get(Tree::Seal, CONFIG)? {
            Some(b) => Ok(Some(
                serde_json::from_slice(&b).map_err(|_| store_corrupt("seal config"))?,
            )),
            None => Ok(None),
        }
    }

    /// Status: readable by anyone known, sealed or not.
    pub fn status(&self) -> Result<Status, Error> {
        let cfg = self.seal_config()?;
        let progress = u8::try_from(self.pending().len()).unwrap_or(u8::MAX);
        Ok(Status {
            initialized: cfg.is_some(),
            sealed: read_lock(&self.vault).is_none(),
            shares: cfg.as_ref().map_or(0, |c| c.shares),
            threshold: cfg.as_ref().map_or(0, |c| c.threshold),
            progress,
            policy: self.config.policy.mode().name(),
            store: self.store.name(),
        })
    }

    /// Probes the store (for PostgreSQL, a round trip to the database) and returns how long it
    /// took; for health reporting. Needs no principal and works sealed: it reveals nothing but
    /// reachability. A node whose store is unreachable refuses every request with UNAVAILABLE
    /// (each request reads the store first) and serves again as soon as the store answers.
    pub fn store_health(&self) -> Result<std::time::Duration, Error> {
        let started = std::time::Instant::now();
        self.store.health()?;
        Ok(started.elapsed())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<share::ParsedShare>> {
        self.pending_shares
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Initialises an empty store: a random root key sealed under a random unseal key split into
    /// `shares` shares with threshold `threshold`, and `admin` registered as the first
    /// administrator. The KMS stays sealed; unseal it with the shares. Exactly once per store:
    /// a second `init`, from this node or another, fails.
    pub(super) fn init(&self, shares: u8, threshold: u8, admin: &str) -> Result<InitOutput, Error> {
        if threshold == 0 || threshold > shares {
            return Err(InvalidInput::new(
                "threshold",
                "must be between 1 and the number of shares",
            )
            .into());
        }
        let wrap_alg = self.config.wrap;
        if !self.config.policy.allows(wrap_alg.spec()) {
            return Err(crate::policy::PolicyError::NotGm {
                algorithm: wrap_alg.spec().name(),
            }
            .into());
        }
        let mut admin = Principal::new(admin, Role::Admin)?;
        admin.created_at = self.now();
        let mut set_id = [0u8; SET_ID_LEN];
        rng::fill(&mut set_id)?;
        let unseal = UnsealKey::generate(wrap_alg)?;
        let root = RootKey::generate(wrap_alg)?;
        let policy = &self.config.policy;
        let sealed_root = wrap::seal_root(policy, &unseal, &set_id, &root)?;
        let out = share::split_unseal_key(&unseal, shares, threshold, set_id)?;
        let config = SealConfig {
            format: 1,
            wrap: wrap_alg.spec(),
            shares,
            threshold,
            set_id: hex::encode(set_id),
            initialized_at: self.now(),
        };
        let mut batch = Batch::new();
        batch.require(Tree::Seal, CONFIG, None);
        batch.put(
            Tree::Seal,
            CONFIG,
            serde_json::to_vec(&config).map_err(|_| store_corrupt("seal config"))?,
        );
        batch.put(Tree::Seal, ROOT, sealed_root);
        self.prepare_audit_key(root, &mut batch)?;
        batch.put(
            Tree::Principals,
            admin.subject.as_bytes(),
            serde_json::to_vec(&admin).map_err(|_| store_corrupt("principal"))?,
        );
        match self.store.apply(&batch) {
            Ok(()) => Ok(InitOutput {
                shares: out,
                threshold,
            }),
            Err(StoreError::Conflict { .. }) => Err(Error::AlreadyExists {
                what: "KMS",
                name: "initialization".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives one share. When `threshold` distinct valid shares are in, the root key is unsealed.
    /// A wrong combination clears the shares given so far and is an error, never a wrong key.
    pub fn unseal(
        &self,
        _proof: &Authorized<'_, ops::Unseal>,
        share_text: &Share,
    ) -> Result<UnsealProgress, Error> {
        self.unseal_with(share_text)
    }

    /// Unseal without a principal: for the dev mode's local share file and for restore.
    pub(super) fn unseal_with(&self, share_text: &Share) -> Result<UnsealProgress, Error> {
        if read_lock(&self.vault).is_some() {
            return Ok(UnsealProgress::Unsealed);
        }
        let cfg = self.seal_config()?.ok_or(UnsealError::NotInitialized)?;
        let set_id = cfg.set_id_bytes()?;
        let parsed = share::parse(share_text)?;
        if parsed.set_id != set_id || parsed.threshold != cfg.threshold {
            return Err(UnsealError::WrongSet.into());
        }
        let mut pending = self.pending();
        if pending.iter().any(|s| s.x == parsed.x) {
            return Err(UnsealError::Duplicate.into());
        }
        pending.push(parsed);
        let have = u8::try_from(pending.len()).unwrap_or(u8::MAX);
        if have < cfg.threshold {
            return Ok(UnsealProgress::NeedMore {
                have,
                threshold: cfg.threshold,
            });
        }
        let taken = std::mem::take(&mut *pending);
        drop(pending);
        let wrap_alg = WrapAlg::new(cfg.wrap)?;
        let unseal = share::combine_unseal_key(&taken, wrap_alg)?;
        let sealed_root = self
            .store
            .get(Tree::Seal, ROOT)?
            .ok_or_else(|| store_corrupt("sealed root key"))?;
        let root = wrap::open_root(&self.config.policy, &unseal, &set_id, &sealed_root)
            .map_err(|_| Error::Unseal(UnsealError::Mismatch))?;
        *write_lock(&self.vault) = Some(Arc::new(Unsealed {
            root,
            wrap: wrap_alg,
            keks: RwLock::new(HashMap::new()),
        }));
        Ok(UnsealProgress::Unsealed)
    }

    /// Seals: forgets the root key, every KEK and every cached key (each wipes itself).
    pub fn seal(&self, _proof: &Authorized<'_, ops::Seal>) -> Result<(), Error> {
        self.seal_now();
        Ok(())
    }

    /// Seals without a principal (graceful shutdown).
    pub(super) fn seal_now(&self) {
        *write_lock(&self.vault) = None;
        self.cache.clear();
        self.leases.clear();
        self.pending().clear();
    }

    #[must_use]
    pub fn is_sealed(&self) -> bool {
        read_lock(&self.vault).is_none()
    }
}
