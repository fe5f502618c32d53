//! Initialisation, unsealing and sealing (KEY-2).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::custody::{self, Given, InitPlan, IssuedShare, ShareForm, ShareRecord};
use super::{Kms, Unsealed, read_lock, store_corrupt, write_lock};
use crate::alg::KeySpec;
use crate::authz::{Authorized, Principal, Role, ops};
use crate::crypto::rng;
use crate::error::{Error, UnsealError};
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
    /// Each share's holder and commitment (format 2); empty for a KMS initialised before
    /// holders existed, whose shares are unbound (see `custody.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) issued: Vec<ShareRecord>,
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

/// The shares made at `init` without holders; give each to a different administrator.
#[derive(Debug)]
pub struct InitOutput {
    pub shares: Vec<Share>,
    pub threshold: u8,
}

/// The shares made at `init` with holders: one per holder, encrypted where it has a key.
#[derive(Debug)]
pub struct Issued {
    pub shares: Vec<IssuedShare>,
    pub threshold: u8,
}

/// Where an unseal stands after one more share, and whether the share was accepted only by
/// break-glass (given by someone other than its holder; the caller's record says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsealing {
    pub progress: UnsealProgress,
    pub break_glass: bool,
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

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Given>> {
        self.pending_shares
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Initialises an empty store with `shares` unbound shares (no holders): for the dev mode
    /// and tests. See [`Kms::init_plan`].
    pub(super) fn init(&self, shares: u8, threshold: u8, admin: &str) -> Result<InitOutput, Error> {
        let issued = self.init_plan(&InitPlan {
            admin: admin.to_owned(),
            threshold,
            holders: Vec::new(),
            shares,
        })?;
        let shares = issued
            .shares
            .into_iter()
            .filter_map(|s| match s.form {
                ShareForm::Plain(share) => Some(share),
                ShareForm::Encrypted { .. } => None,
            })
            .collect();
        Ok(InitOutput {
            shares,
            threshold: issued.threshold,
        })
    }

    /// Initialises an empty store: a random root key sealed under a random unseal key split
    /// M-of-N, one share per holder (encrypted to the holder's key when given; see
    /// `custody.rs`), `plan.admin` registered as the first administrator and every other holder
    /// as a custodian. The KMS stays sealed. Exactly once per store: a second `init`, from this
    /// node or another, fails.
    pub(super) fn init_plan(&self, plan: &InitPlan) -> Result<Issued, Error> {
        let shares = plan.check()?;
        let threshold = plan.threshold;
        let wrap_alg = self.config.wrap;
        if !self.config.policy.allows(wrap_alg.spec()) {
            return Err(crate::policy::PolicyError::NotGm {
                algorithm: wrap_alg.spec().name(),
            }
            .into());
        }
        let mut admin = Principal::new(&plan.admin, Role::Admin)?;
        admin.created_at = self.now();
        let mut set_id = [0u8; SET_ID_LEN];
        rng::fill(&mut set_id)?;
        let unseal = UnsealKey::generate(wrap_alg)?;
        let root = RootKey::generate(wrap_alg)?;
        let policy = &self.config.policy;
        let sealed_root = wrap::seal_root(policy, &unseal, &set_id, &root)?;
        let made = share::split_unseal_key(&unseal, shares, threshold, set_id)?;
        let mut records = Vec::with_capacity(made.len());
        let mut issued = Vec::with_capacity(made.len());
        for (i, s) in made.into_iter().enumerate() {
            let parsed = share::parse(&s)?;
            let holder = plan.holders.get(i);
            records.push(ShareRecord {
                x: parsed.x(),
                holder: holder.map(|h| h.subject.clone()),
                commitment: custody::commitment(&parsed),
            });
            issued.push(custody::issue(policy, holder, s)?);
        }
        let config = SealConfig {
            format: 2,
            wrap: wrap_alg.spec(),
            shares,
            threshold,
            set_id: hex::encode(set_id),
            initialized_at: self.now(),
            issued: records,
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
        let custodians = plan
            .holders
            .iter()
            .filter(|h| h.subject != admin.subject)
            .map(|h| {
                let mut p = Principal::new(&h.subject, Role::Custodian)?;
                p.created_at = self.now();
                Ok(p)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        for p in std::iter::once(&admin).chain(&custodians) {
            batch.put(
                Tree::Principals,
                p.subject.as_bytes(),
                serde_json::to_vec(p).map_err(|_| store_corrupt("principal"))?,
            );
        }
        match self.store.apply(&batch) {
            Ok(()) => Ok(Issued {
                shares: issued,
                threshold,
            }),
            Err(StoreError::Conflict { .. }) => Err(Error::AlreadyExists {
                what: "KMS",
                name: "initialization".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives one share, as the proof's principal. When `threshold` shares from distinct givers
    /// are in, the root key is unsealed. The custody rules (`custody.rs`) decide which shares
    /// count; a refused share leaves the others' progress as it was.
    pub fn unseal(
        &self,
        proof: &Authorized<'_, ops::Unseal>,
        share_text: &Share,
    ) -> Result<Unsealing, Error> {
        if !self.is_sealed() {
            return Err(UnsealError::AlreadyUnsealed.into());
        }
        self.give(share_text, Some(&proof.principal().subject))
    }

    /// Unseal without a principal: for the dev mode's local share file and for restore. Already
    /// unsealed is not an error here (a local restart path).
    pub(super) fn unseal_with(&self, share_text: &Share) -> Result<UnsealProgress, Error> {
        if !self.is_sealed() {
            return Ok(UnsealProgress::Unsealed);
        }
        Ok(self.give(share_text, None)?.progress)
    }

    fn give(&self, share_text: &Share, giver: Option<&str>) -> Result<Unsealing, Error> {
        let cfg = self.seal_config()?.ok_or(UnsealError::NotInitialized)?;
        let set_id = cfg.set_id_bytes()?;
        let parsed = share::parse(share_text)?;
        if parsed.set_id != set_id || parsed.threshold != cfg.threshold {
            return Err(UnsealError::WrongSet.into());
        }
        let mut pending = self.pending();
        let break_glass = custody::admit(
            &cfg.issued,
            &pending,
            &parsed,
            giver,
            self.config.unseal_break_glass,
        )?;
        pending.push(Given {
            share: parsed,
            giver: giver.map(str::to_owned),
        });
        let have = u8::try_from(pending.len()).unwrap_or(u8::MAX);
        if have < cfg.threshold {
            return Ok(Unsealing {
                progress: UnsealProgress::NeedMore {
                    have,
                    threshold: cfg.threshold,
                },
                break_glass,
            });
        }
        // With commitments every share in is good, so this combination opens the root key; a
        // KMS without them (unbound shares) starts over on a mismatch.
        let taken: Vec<_> = std::mem::take(&mut *pending)
            .into_iter()
            .map(|g| g.share)
            .collect();
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
        Ok(Unsealing {
            progress: UnsealProgress::Unsealed,
            break_glass,
        })
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
