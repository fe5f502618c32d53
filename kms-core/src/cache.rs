//! The unwrapped-key cache (KEY-3): bounded in size and in time, zeroized on eviction and seal.
//!
//! Key versions are immutable, so a cached version is never stale; what may change (state, the
//! newest version, grants) is always read from the store, never cached here. A lifetime of zero
//! turns the cache off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::keys::KeyId;
use crate::secret::KeyMaterial;

type Entries = HashMap<(KeyId, u32), (Arc<KeyMaterial>, Instant)>;

pub(crate) struct KeyCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<Entries>,
    /// Lookups answered from the cache, and lookups that had to unwrap (the cache off, or the
    /// version not in it or expired): the server's metrics (`Kms::cache_stats`).
    hits: AtomicU64,
    misses: AtomicU64,
}

impl KeyCache {
    #[must_use]
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A poisoned lock only means another thread panicked mid-operation; the map is still
        // consistent (every operation is a single insert or remove).
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self, id: KeyId, version: u32) -> Option<Arc<KeyMaterial>> {
        let found = self.lookup(id, version);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn lookup(&self, id: KeyId, version: u32) -> Option<Arc<KeyMaterial>> {
        if !self.enabled() {
            return None;
        }
        let mut map = self.lock();
        match map.get(&(id, version)) {
            Some((key, at)) if at.elapsed() < self.ttl => Some(Arc::clone(key)),
            Some(_) => {
                map.remove(&(id, version));
                None
            }
            None => None,
        }
    }

    /// Hits and misses since the start, and the versions held now.
    pub(crate) fn stats(&self) -> (u64, u64, usize) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.lock().len(),
        )
    }

    pub(crate) fn insert(&self, id: KeyId, version: u32, key: Arc<KeyMaterial>) {
        if !self.enabled() {
            return;
        }
        let mut map = self.lock();
        let ttl = self.ttl;
        map.retain(|_, (_, at)| at.elapsed() < ttl);
        if map.len() >= self.capacity
            && let Some(oldest) = map.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert((id, version), (key, Instant::now()));
    }

    /// Drops one key's versions (destruction).
    pub(crate) fn forget(&self, id: KeyId) {
        self.lock().retain(|(k, _), _| *k != id);
    }

    /// Drops everything (seal). Each `KeyMaterial` wipes itself when its last `Arc` goes.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::alg::KeySpec;
    use crate::secret::SecretBytes;

    fn material() -> Arc<KeyMaterial> {
        Arc::new(KeyMaterial::new(
            KeySpec::Sm4Gcm,
            SecretBytes::from_vec(vec![7; 16]),
        ))
    }

    /// Hits and misses count every lookup, the cache off included (every lookup a miss).
    #[test]
    fn lookups_are_counted_as_hits_and_misses() {
        let cache = KeyCache::new(Duration::from_secs(60), 10);
        let id = KeyId::random().unwrap();
        assert!(cache.get(id, 1).is_none());
        cache.insert(id, 1, material());
        assert!(cache.get(id, 1).is_some());
        assert!(cache.get(id, 1).is_some());
        assert!(cache.get(id, 2).is_none());
        assert_eq!(cache.stats(), (2, 2, 1));

        let off = KeyCache::new(Duration::ZERO, 10);
        off.insert(id, 1, material());
        assert!(off.get(id, 1).is_none());
        assert_eq!(off.stats(), (0, 1, 0));
    }
}
