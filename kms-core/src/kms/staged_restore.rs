//! Restore by share holders (issue 18 item 1: "Restore follows the same rules").
//!
//! A backup opens only with its shares. Given all at once by one caller, that would let one
//! person who holds (or collected) every share restore a store alone. So a backup whose
//! threshold is above one is *staged*: the node keeps it in memory, checked only for its form,
//! and the holders named in the backup's own seal configuration then give their shares one by
//! one, under the same custody rules as an unseal (`custody.rs`): each share only from its
//! holder (or break-glass), one per person, a bad share refused on its own. When the threshold
//! is reached the backup is opened, authenticated and written, and the KMS is unsealed with the
//! root key those shares opened. Nothing is written before that.
//!
//! The staging is this node's alone and lasts until the process ends or another backup is
//! staged; a store that is initialised meanwhile (by another node) makes the final write fail.

use std::sync::MutexGuard;

use super::Kms;
use super::custody::{self, Given};
use super::system::SealConfig;
use crate::error::{Error, UnsealError};
use crate::hierarchy::share::{self, Share};

/// A backup waiting for its holders' shares.
pub(super) struct Staged {
    backup: Vec<u8>,
    config: SealConfig,
    given: Vec<Given>,
}

/// What a staged backup needs: how many shares, from whom (`None`: unbound shares).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedRestore {
    pub threshold: u8,
    pub holders: Vec<Option<String>>,
}

/// Where a staged restore stands after one more share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreProgress {
    NeedMore {
        have: u8,
        threshold: u8,
    },
    /// Written and unsealed: this many entries.
    Restored {
        entries: u64,
    },
}

impl Kms {
    fn staged(&self) -> MutexGuard<'_, Option<Staged>> {
        self.staged_restore
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The threshold and holders a backup names (from its clear header; nothing is opened).
    pub(super) fn inspect_backup(backup: &[u8]) -> Result<StagedRestore, Error> {
        let config = Self::backup_seal_config(backup)?;
        Ok(StagedRestore {
            threshold: config.threshold,
            holders: config.issued.iter().map(|r| r.holder.clone()).collect(),
        })
    }

    /// Stages `backup` for its holders (replacing one staged before). The store must be empty.
    pub(super) fn stage_restore(&self, backup: Vec<u8>) -> Result<StagedRestore, Error> {
        if self.status()?.initialized {
            return Err(Error::FailedPrecondition(
                "restore needs an empty store; this one is initialised".into(),
            ));
        }
        let config = Self::backup_seal_config(&backup)?;
        let info = Self::inspect_backup(&backup)?;
        *self.staged() = Some(Staged {
            backup,
            config,
            given: Vec::new(),
        });
        Ok(info)
    }

    /// Whether a backup is staged on this node.
    #[must_use]
    pub fn restore_staged(&self) -> bool {
        self.staged().is_some()
    }

    /// One holder's share towards the staged restore, given by `giver` (a certificate
    /// subject). Returns the progress and whether break-glass let the share in.
    pub(super) fn give_restore_share(
        &self,
        share_text: &Share,
        giver: &str,
    ) -> Result<(RestoreProgress, bool), Error> {
        let mut guard = self.staged();
        let staged = guard.as_mut().ok_or(UnsealError::NotInitialized)?;
        let set_id = staged.config.set_id_bytes()?;
        let parsed = share::parse(share_text)?;
        if parsed.set_id() != set_id || parsed.threshold() != staged.config.threshold {
            return Err(UnsealError::WrongSet.into());
        }
        let break_glass = custody::admit(
            &staged.config.issued,
            &staged.given,
            &parsed,
            Some(giver),
            self.config.unseal_break_glass,
        )?;
        staged.given.push(Given {
            share: parsed,
            giver: Some(giver.to_owned()),
        });
        let have = u8::try_from(staged.given.len()).unwrap_or(u8::MAX);
        let threshold = staged.config.threshold;
        if have < threshold {
            return Ok((RestoreProgress::NeedMore { have, threshold }, break_glass));
        }
        let Staged { backup, given, .. } = guard.take().ok_or(UnsealError::NotInitialized)?;
        drop(guard);
        let parsed: Vec<_> = given.into_iter().map(|g| g.share).collect();
        let entries = self.restore_parsed(&backup, &parsed, true)?;
        Ok((RestoreProgress::Restored { entries }, break_glass))
    }
}
