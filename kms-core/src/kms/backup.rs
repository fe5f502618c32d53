//! Backup and restore of the whole store (OPS-3).
//!
//! A backup is one file: the store's entries, still wrapped as they are stored, encrypted and
//! authenticated under a key derived from the root key. Its clear header carries only what is
//! already safe to store in the clear (the seal configuration and the root key sealed under the
//! unseal key). Restoring needs the unseal shares: they rebuild the unseal key, which opens the
//! root key, which opens and authenticates the payload — before anything is written.
//!
//! ```text
//! "KMSB" ‖ format (1) ‖ u32 header length ‖ header (JSON) ‖ nonce (12) ‖ AEAD(payload) ‖ tag
//! payload = entries of (tree code ‖ u32 key length ‖ key ‖ u32 value length ‖ value)
//! AAD = everything before the nonce
//! ```
//!
//! Format 2 derives the backup key with HKDF-SM3 ([`wrap::derive`]); format 1, written before
//! issue 17, with HMAC-SM3(root, label). Restore reads both; backups are written as format 2.

use serde::{Deserialize, Serialize};

use super::approvals::{Params, Sensitive};
use super::system::{CONFIG, ROOT, SealConfig};
use super::{Kms, store_corrupt};
use crate::alg::Purpose;
use crate::authz::{Authorized, ops};
use crate::crypto::{self, AEAD_NONCE_LEN, AEAD_TAG_LEN, rng};
use crate::error::{CryptoError, Error, InvalidInput, UnsealError};
use crate::hierarchy::share::{self, ParsedShare, Share};
use crate::hierarchy::wrap::{self, Derived, WrapAlg};
use crate::store::{Batch, Tree};

const MAGIC: &[u8; 4] = b"KMSB";
/// What `backup` writes.
const FORMAT: u8 = 2;
/// The first format, still restored (`kms-core/tests/hierarchy_v1.rs`).
const FORMAT_V1: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    created_at: u64,
    /// The seal configuration, as stored.
    seal_config: String,
    /// The root key sealed under the unseal key, hex.
    sealed_root: String,
    entries: u64,
}

fn tree_code(t: Tree) -> u8 {
    // Tree::ALL's order is the on-disk code; the conformance suite pins it.
    Tree::ALL
        .iter()
        .position(|x| *x == t)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

fn push(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), Error> {
    let len = u32::try_from(bytes.len()).map_err(|_| store_corrupt("oversized entry"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn bad_backup(problem: &'static str) -> Error {
    InvalidInput::new("backup", problem).into()
}

impl Kms {
    /// Writes a backup of every tree. Only administrators, only while unsealed, and under dual
    /// control only with a released approval (`approvals.rs`, [`Kms::release`]).
    pub fn backup(&self, auth: &Authorized<'_, ops::Backup>) -> Result<Vec<u8>, Error> {
        let vault = self.begin(auth)?;
        self.quorum(auth, Sensitive::Backup, || Ok(Params::Backup))?;
        let config = self
            .store
            .get(Tree::Seal, CONFIG)?
            .ok_or_else(|| store_corrupt("seal config"))?;
        let root = self
            .store
            .get(Tree::Seal, ROOT)?
            .ok_or_else(|| store_corrupt("sealed root key"))?;
        let mut payload = Vec::new();
        let mut entries = 0u64;
        for tree in Tree::ALL {
            if tree == Tree::Seal {
                continue;
            }
            // The trail wherever the store keeps it (its tree, or its live log), as tree
            // entries: a backup reads the same whatever the backend.
            let stored = if tree == Tree::Audit {
                crate::audit::trail::audit_entries(&self.store)?
            } else {
                self.store.scan_prefix(tree, &[])?
            };
            for (k, v) in stored {
                payload.push(tree_code(tree));
                push(&mut payload, &k)?;
                push(&mut payload, &v)?;
                entries += 1;
            }
        }
        let header = Header {
            created_at: self.now(),
            seal_config: String::from_utf8(config).map_err(|_| store_corrupt("seal config"))?,
            sealed_root: hex::encode(root),
            entries,
        };
        let header = serde_json::to_vec(&header).map_err(|_| store_corrupt("backup header"))?;
        let mut out =
            Vec::with_capacity(9 + header.len() + AEAD_NONCE_LEN + payload.len() + AEAD_TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        push(&mut out, &header)?;
        let mut nonce = [0u8; AEAD_NONCE_LEN];
        rng::fill(&mut nonce)?;
        let key = wrap::derive(&vault.root, Derived::BackupKey(vault.wrap))?;
        let approved = self.config.policy.approve(Purpose::Encrypt, key.spec())?;
        crypto::seal_in_place(&approved, &key, &nonce, &out, &mut payload)?;
        out.extend_from_slice(&nonce);
        out.append(&mut payload);
        Ok(out)
    }

    /// Restores a backup into this KMS's store, which must be empty (never initialised).
    /// The backup's integrity is checked with the shares' key before anything is written;
    /// afterwards the KMS is sealed and unseals with the same shares as the backed-up one.
    pub(super) fn restore(&self, backup: &[u8], shares: &[Share]) -> Result<u64, Error> {
        let parsed = shares
            .iter()
            .map(share::parse)
            .collect::<Result<Vec<_>, _>>()?;
        self.restore_parsed(backup, &parsed, false)
    }

    /// [`Kms::restore`] from parsed shares; with `unseal`, the KMS is left unsealed with the
    /// root key the shares opened (the staged restore, whose shares came from their holders).
    pub(super) fn restore_parsed(
        &self,
        backup: &[u8],
        parsed: &[ParsedShare],
        unseal: bool,
    ) -> Result<u64, Error> {
        if self.store.get(Tree::Seal, CONFIG)?.is_some() {
            return Err(Error::FailedPrecondition(
                "restore needs an empty store; this one is initialised".into(),
            ));
        }
        let Parsed {
            format,
            header,
            config,
            aad,
            nonce,
            sealed,
        } = parse_backup(backup)?;

        // Shares → unseal key → root key → backup key, checking each step.
        let set_id = config.set_id_bytes()?;
        if parsed.iter().any(|s| s.set_id != set_id) {
            return Err(UnsealError::WrongSet.into());
        }
        if parsed.len() < usize::from(config.threshold) {
            return Err(UnsealError::Mismatch.into());
        }
        let wrap_alg = WrapAlg::new(config.wrap)?;
        let unseal_key = share::combine_unseal_key(parsed, wrap_alg)?;
        let sealed_root =
            hex::decode(&header.sealed_root).map_err(|_| bad_backup("header does not decode"))?;
        let policy = &self.config.policy;
        let root = wrap::open_root(policy, &unseal_key, &set_id, &sealed_root)
            .map_err(|_| Error::Unseal(UnsealError::Mismatch))?;
        let key = if format == FORMAT_V1 {
            wrap::derive_v1_backup_key(&root, wrap_alg)?
        } else {
            wrap::derive(&root, Derived::BackupKey(wrap_alg))?
        };
        let approved = policy.approve_open(Purpose::Encrypt, key.spec())?;
        let mut payload = crate::SecretBytes::copy_from_slice(sealed);
        crypto::open_in_place(&approved, &key, &nonce, aad, payload.expose_secret_mut())
            .map_err(|_| -> Error { CryptoError::DecryptionFailed.into() })
            .map_err(|_| {
                bad_backup("integrity check failed: the file is damaged or was altered")
            })?;

        let mut batch = Batch::new();
        batch.require(Tree::Seal, CONFIG, None);
        batch.put(Tree::Seal, CONFIG, header.seal_config.into_bytes());
        batch.put(Tree::Seal, ROOT, sealed_root);
        let mut p = payload.expose_secret();
        let mut count = 0u64;
        let mut trail = Vec::new();
        while let Some((&code, rest)) = p.split_first() {
            let tree = *Tree::ALL
                .get(usize::from(code))
                .ok_or_else(|| bad_backup("unknown tree"))?;
            let (k, rest) = take(rest)?;
            let (v, rest) = take(rest)?;
            if tree == Tree::Audit {
                trail.push((k.to_vec(), v.to_vec()));
            } else {
                batch.put(tree, k.to_vec(), v.to_vec());
            }
            p = rest;
            count += 1;
        }
        if count != header.entries {
            return Err(bad_backup("entry count does not match the header"));
        }
        // The trail first: a store keeping it in a live log replaces the log now (a crash
        // before the batch below leaves the store empty, and the restore is simply run again);
        // a store keeping it in its tree gets it back to write in the same batch.
        if let Some(entries) = crate::audit::trail::restore_entries(&self.store, trail)? {
            for (k, v) in entries {
                batch.put(Tree::Audit, k, v);
            }
        }
        self.store.apply(&batch)?;
        if unseal {
            *super::write_lock(&self.vault) = Some(std::sync::Arc::new(super::Unsealed {
                root,
                wrap: wrap_alg,
                keks: std::sync::RwLock::new(std::collections::HashMap::new()),
            }));
        }
        Ok(count)
    }

    /// The seal configuration a backup carries in its clear header (threshold, holders).
    pub(super) fn backup_seal_config(backup: &[u8]) -> Result<SealConfig, Error> {
        Ok(parse_backup(backup)?.config)
    }
}

/// A backup's parts, its header decoded (nothing opened yet).
struct Parsed<'a> {
    format: u8,
    header: Header,
    config: SealConfig,
    aad: &'a [u8],
    nonce: [u8; AEAD_NONCE_LEN],
    sealed: &'a [u8],
}

fn parse_backup(backup: &[u8]) -> Result<Parsed<'_>, Error> {
    let rest = backup
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad_backup("not a KMS backup"))?;
    let (&format, rest) = rest.split_first().ok_or_else(|| bad_backup("truncated"))?;
    if format != FORMAT && format != FORMAT_V1 {
        return Err(bad_backup("unsupported backup format"));
    }
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad_backup("truncated"))?;
    let header_len =
        usize::try_from(u32::from_be_bytes(len_bytes)).map_err(|_| bad_backup("truncated"))?;
    let header_end = 4usize
        .checked_add(header_len)
        .ok_or_else(|| bad_backup("truncated"))?;
    let header_bytes = rest
        .get(4..header_end)
        .ok_or_else(|| bad_backup("truncated"))?;
    let aad_len = MAGIC.len() + 1 + header_end;
    let aad = &backup[..aad_len];
    let header: Header =
        serde_json::from_slice(header_bytes).map_err(|_| bad_backup("header does not decode"))?;
    let body = &rest[header_end..];
    if body.len() < AEAD_NONCE_LEN + AEAD_TAG_LEN {
        return Err(bad_backup("truncated"));
    }
    let (nonce, sealed) = body.split_at(AEAD_NONCE_LEN);
    let nonce: [u8; AEAD_NONCE_LEN] = nonce.try_into().map_err(|_| bad_backup("truncated"))?;
    let config: SealConfig = serde_json::from_str(&header.seal_config)
        .map_err(|_| bad_backup("header does not decode"))?;
    Ok(Parsed {
        format,
        header,
        config,
        aad,
        nonce,
        sealed,
    })
}

fn take(b: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    let len: [u8; 4] = b
        .get(..4)
        .and_then(|x| x.try_into().ok())
        .ok_or_else(|| bad_backup("truncated entry"))?;
    let len =
        usize::try_from(u32::from_be_bytes(len)).map_err(|_| bad_backup("truncated entry"))?;
    let end = 4usize
        .checked_add(len)
        .ok_or_else(|| bad_backup("truncated entry"))?;
    let v = b.get(4..end).ok_or_else(|| bad_backup("truncated entry"))?;
    Ok((v, &b[end..]))
}
