//! The GCM invocation budget (NIST SP 800-38D §8.3): with random 96-bit nonces, one key may
//! encrypt at most 2^32 times, or the chance of a repeated nonce — which gives away the
//! authentication key and the XOR of two plaintexts — grows past 2^-32. At 10 000 encryptions a
//! second one key version reaches that in five days.
//!
//! Every SM4-GCM and AES-256-GCM key version counts its encryptions in its stored record
//! (`KeyVersion::gcm_invocations`), conservatively: a node reserves a block of invocations with a
//! compare-and-swap write *before* using them, and hands them out from memory. What a node
//! reserved but did not use when it stops is lost, never reused, so the stored count only
//! over-states. When the newest version's budget (`KmsConfig::gcm_invocation_limit`) is spent,
//! the reserving write also rotates the key: the new version takes the block, and older versions
//! still decrypt. With several nodes on one database each reservation is one conditional write
//! of the record, so no two nodes hand out the same invocations.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Kms;
use super::cas::{Cas, put_record};
use crate::error::Error;
use crate::keys::KeyId;
use crate::keys::record::KeyRecord;
use crate::store::Batch;

/// NIST SP 800-38D §8.3: at most 2^32 invocations of GCM with random 96-bit IVs per key.
pub const GCM_INVOCATION_LIMIT: u64 = 1 << 32;
/// The most a node reserves at once: 65 536 encryptions cost one store write, and a crash
/// forfeits at most that many of a version's 2^32.
const MAX_BLOCK: u64 = 1 << 16;

/// Invocations reserved by this node and not yet used, per key version, and the lock that lets
/// one caller at a time reserve a block.
#[derive(Default)]
pub(super) struct Leases {
    left: Mutex<HashMap<KeyId, (u32, u64)>>,
    reserving: Mutex<()>,
}

impl Leases {
    /// Takes one invocation of `version` from this node's reserve, if it has one.
    fn take(&self, id: KeyId, version: u32) -> bool {
        let mut leases = self
            .left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match leases.get_mut(&id) {
            Some((v, left)) if *v == version && *left > 0 => {
                *left -= 1;
                true
            }
            Some(_) | None => false,
        }
    }

    /// Records a fresh reserve for `version` (replacing any for an older one).
    fn grant(&self, id: KeyId, version: u32, count: u64) {
        let mut leases = self
            .left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        leases.insert(id, (version, count));
    }

    pub(super) fn clear(&self) {
        self.left
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

/// Whether encryptions with keys of this record count against a GCM budget.
fn counted(record: &KeyRecord) -> bool {
    matches!(
        record.spec,
        crate::alg::KeySpec::Sm4Gcm | crate::alg::KeySpec::Aes256Gcm
    )
}

impl Kms {
    /// The version new protection under `record` uses, with one GCM invocation of it accounted
    /// for: from this node's reserve, or by reserving a block (and rotating the key when the
    /// newest version's budget is spent). Returns the record as it now stands when it was
    /// written, and the version to use.
    pub(super) fn spend_invocation(
        &self,
        vault: &super::Unsealed,
        record: &KeyRecord,
    ) -> Result<(Option<KeyRecord>, u32), Error> {
        let newest = record
            .newest()
            .map(|v| v.version)
            .ok_or(crate::CryptoError::MalformedKey)?;
        if !counted(record) || self.leases.take(record.id, newest) {
            return Ok((None, newest));
        }
        // Callers that run out together (64 requests in flight when a block ends) wait for the
        // first one's block instead of each reserving its own: racing, they conflicted with each
        // other in the store until some gave up with an error to the client, and each block
        // that landed replaced the one before it, forfeiting its invocations. Held only while a
        // block is reserved, once per up to 65,536 encryptions of a key.
        let _one_reservation = self
            .leases
            .reserving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.leases.take(record.id, newest) {
            return Ok((None, newest));
        }
        let limit = self.config.gcm_invocation_limit.max(1);
        let block = MAX_BLOCK.min(limit.div_ceil(64)).max(1);
        let id = record.id;
        let reserved = self.cas_update(|| {
            let (mut record, old) = self.load(id)?;
            let version = record
                .newest()
                .map(|v| (v.version, v.gcm_invocations))
                .ok_or(crate::CryptoError::MalformedKey)?;
            let (version, grant) = match limit.saturating_sub(version.1).min(block) {
                // Spent: rotate in this same write (`last_rotated_at` shows it).
                0 => (self.add_version(&mut record, vault)?, block.min(limit)),
                grant => (version.0, grant),
            };
            if let Some(v) = record.versions.iter_mut().find(|v| v.version == version) {
                v.gcm_invocations = v.gcm_invocations.saturating_add(grant);
            }
            let mut batch = Batch::new();
            put_record(&mut batch, &mut record, old)?;
            Ok(Cas::Write(batch, (record, version, grant)))
        })?;
        let (record, version, grant) = reserved.ok_or_else(|| {
            Error::FailedPrecondition("the key is being changed concurrently; retry".into())
        })?;
        // One of the block is this call's.
        self.leases.grant(id, version, grant.saturating_sub(1));
        Ok((Some(record), version))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::alg::{KeySpec, Purpose};
    use crate::authz::{Principal, Role};
    use crate::envelope::{self, EncryptionContext};
    use crate::keys::{KeyId, KeyRef, Namespace};
    use crate::store::{Batch, Entry, MemoryStore, Store, StoreError, Tree};
    use crate::{CreateKeyRequest, KmsConfig, TestKms};

    struct Node {
        kms: TestKms,
        app: Principal,
    }

    /// A node over `store` with a GCM budget of `limit`. Without a share it initialises the
    /// store (and makes one encrypt key); it returns the share the others unseal with.
    fn node(store: &Arc<dyn Store>, limit: u64, share: Option<&str>) -> (Node, KeyId, String) {
        let config = KmsConfig {
            gcm_invocation_limit: limit,
            ..KmsConfig::default()
        };
        let kms = TestKms::open(Arc::clone(store), config);
        let app = Principal::new(
            "app",
            Role::App {
                namespace: Namespace::new("a").unwrap(),
            },
        )
        .unwrap();
        let init = share.is_none();
        let share = match share {
            Some(s) => s.to_owned(),
            None => kms.init(1, 1, "admin").unwrap().shares[0]
                .expose_text()
                .to_owned(),
        };
        kms.unseal_with(&crate::hierarchy::share::Share::from_text(&share))
            .unwrap();
        let mut key = None;
        if init {
            let admin = kms.principal("admin").unwrap().unwrap();
            kms.add_principal(&admin, "app", app.role.clone()).unwrap();
            let info = kms
                .create_key(
                    &admin,
                    CreateKeyRequest {
                        namespace: Namespace::new("a").unwrap(),
                        purpose: Purpose::Encrypt,
                        spec: KeySpec::Sm4Gcm,
                        alias: None,
                        rotation_period: None,
                        description: String::new(),
                    },
                )
                .unwrap();
            key = Some(info.id);
        }
        let key = key.or_else(|| {
            let admin = kms.principal("admin").ok()??;
            kms.list_keys(&admin, None).ok()?.first().map(|k| k.id)
        });
        (Node { kms, app }, key.unwrap(), share)
    }

    fn version_of(blob: &[u8]) -> u32 {
        envelope::parse(blob).unwrap().header.key_version
    }

    fn stored_invocations(n: &Node, id: KeyId) -> Vec<(u32, u64)> {
        let (record, _) = n.kms.kms().load(id).unwrap();
        record
            .versions
            .iter()
            .map(|v| (v.version, v.gcm_invocations))
            .collect()
    }

    #[test]
    fn a_spent_version_rotates_the_key_and_old_ciphertexts_still_open() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (n, id, _) = node(&store, 3, None);
        let key = KeyRef::Id(id);
        let ctx = EncryptionContext::default();
        let blobs: Vec<Vec<u8>> = (0..7)
            .map(|i| {
                n.kms
                    .encrypt(&n.app, &key, &ctx, format!("m{i}").as_bytes())
                    .unwrap()
                    .ciphertext
            })
            .collect();
        let versions: Vec<u32> = blobs.iter().map(|b| version_of(b)).collect();
        assert_eq!(versions, [1, 1, 1, 2, 2, 2, 3]);
        for (i, b) in blobs.iter().enumerate() {
            let out = n.kms.decrypt(&n.app, &ctx, b).unwrap();
            assert_eq!(out.plaintext.expose_secret(), format!("m{i}").as_bytes());
        }
        // Data keys count too.
        let dk = n
            .kms
            .generate_data_key(
                &n.app,
                &key,
                crate::alg::DataKeySpec::Sm4,
                &ctx,
                crate::DataKeyMode::WithoutPlaintext,
            )
            .unwrap();
        assert_eq!(dk.key_version, 3);
        assert_eq!(stored_invocations(&n, id), [(1, 3), (2, 3), (3, 2)]);
    }

    #[test]
    fn nodes_never_hand_out_more_than_the_budget_between_them_even_across_restarts() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let limit = 10;
        let (a, id, share) = node(&store, limit, None);
        let key = KeyRef::Id(id);
        let ctx = EncryptionContext::default();
        let (b, _, _) = node(&store, limit, Some(&share));
        let mut per_version = std::collections::BTreeMap::<u32, u64>::new();
        for i in 0..25 {
            let n = if i % 3 == 0 { &a } else { &b };
            let blob = n.kms.encrypt(&n.app, &key, &ctx, b"x").unwrap().ciphertext;
            *per_version.entry(version_of(&blob)).or_default() += 1;
        }
        // A restarted node forfeits what the old one reserved and never reuses it.
        drop(b);
        let (b2, _, _) = node(&store, limit, Some(&share));
        let blob = b2
            .kms
            .encrypt(&b2.app, &key, &ctx, b"x")
            .unwrap()
            .ciphertext;
        *per_version.entry(version_of(&blob)).or_default() += 1;
        assert!(per_version.values().all(|&n| n <= limit), "{per_version:?}");
        for (version, reserved) in stored_invocations(&a, id) {
            let used = per_version.get(&version).copied().unwrap_or(0);
            assert!(
                used <= reserved && reserved <= limit,
                "v{version}: {used} > {reserved}"
            );
        }
        assert_eq!(per_version.values().sum::<u64>(), 26);
    }

    #[test]
    fn blocks_are_a_sixty_fourth_of_the_budget_at_most_65536() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (n, id, _) = node(&store, 6400, None);
        let ctx = EncryptionContext::default();
        n.kms.encrypt(&n.app, &KeyRef::Id(id), &ctx, b"x").unwrap();
        n.kms.encrypt(&n.app, &KeyRef::Id(id), &ctx, b"x").unwrap();
        // One reservation of 100 covers both.
        assert_eq!(stored_invocations(&n, id), [(1, 100)]);
        let store2: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (full, id2, _) = node(&store2, super::GCM_INVOCATION_LIMIT, None);
        full.kms
            .encrypt(&full.app, &KeyRef::Id(id2), &ctx, b"x")
            .unwrap();
        assert_eq!(stored_invocations(&full, id2), [(1, 65_536)]);
    }

    /// A memory store whose writes of key records take a while, so that callers who run out of
    /// a block together all read the record before any of them has written it.
    struct SlowKeyWrites(MemoryStore);

    impl Store for SlowKeyWrites {
        fn name(&self) -> &'static str {
            "slow-key-writes"
        }
        fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.get(tree, key)
        }
        fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
            self.0.scan_prefix(tree, prefix)
        }
        fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
            if batch.trees().contains(&Tree::EncryptKeys) {
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            self.0.apply(batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn callers_that_run_out_together_share_one_reservation_and_none_fails() {
        // Budget 64,000: blocks of 1,000. Eight threads encrypt 4,000 times between them, so
        // every 1,000 calls they all run out of the node's block at once.
        let store: Arc<dyn Store> = Arc::new(SlowKeyWrites(MemoryStore::new()));
        let (n, id, _) = node(&store, 64_000, None);
        let n = Arc::new(n);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let n = Arc::clone(&n);
                std::thread::spawn(move || {
                    let ctx = EncryptionContext::default();
                    (0..500)
                        .map(|_| {
                            n.kms
                                .encrypt(&n.app, &KeyRef::Id(id), &ctx, b"x")
                                .map(|_| ())
                        })
                        .filter(Result::is_err)
                        .count()
                })
            })
            .collect();
        let failed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(failed, 0, "encryptions failed while blocks were reserved");
        // One lease at a time: what is reserved but unused is less than one block. Racing
        // reservations each replaced the node's lease and forfeited the rest of the one before.
        let stored = stored_invocations(&n, id);
        assert_eq!(stored.len(), 1, "{stored:?}");
        let reserved = stored[0].1;
        assert!(
            (4_000..4_000 + 1_000).contains(&reserved),
            "reserved {reserved} for 4,000 encryptions"
        );
    }
}
