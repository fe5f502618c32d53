//! The unwrapped-key cache (KEY-3): bounded in size and in time, zeroized on eviction and seal.
//!
//! Key versions are immutable, so a cached version is never stale; what may change (state, the
//! newest version, grants) is always read from the store, never cached here. A lifetime of zero
//! turns the cache off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::keys::KeyId;
use crate::secret::KeyMaterial;

type Entries = HashMap<(KeyId, u32), (Arc<KeyMaterial>, Instant)>;

pub(crate) struct KeyCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<Entries>,
}

impl KeyCache {
    #[must_use]
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
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
