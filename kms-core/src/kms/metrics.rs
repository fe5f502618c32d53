//! What the server's metrics read from the core (issue 21 item 4): plain numbers, with no
//! metrics library. The core stays free of exposition formats and networking; `kms-server`
//! (`kms-server/src/metrics.rs`) turns these into Prometheus series at scrape time.
//!
//! Nothing here names a key, a namespace or a principal: the key counts are per state only,
//! and the cache numbers are totals.

use crate::error::Error;
use crate::keys::state::KeyState;

use super::System;

/// The unwrapped-key cache (KEY-3) since the start: lookups answered from it, lookups that had
/// to unwrap under the KEK (the cache off counts every lookup here), and versions held now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

/// How many keys are in each state, and how many are overdue for rotation (enabled, with a
/// rotation period whose next rotation has passed: what the scheduler's next run rotates).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyCounts {
    /// Every state of [`KeyState::ALL`], in that order, zeros included (a series that
    /// disappears reads as missing data, not as zero).
    pub by_state: Vec<(KeyState, u64)>,
    pub overdue_for_rotation: u64,
}

impl System {
    /// The key cache's numbers (no store access).
    #[must_use]
    pub fn cache_stats(&self) -> CacheStats {
        let (hits, misses, entries) = self.cache.stats();
        CacheStats {
            hits,
            misses,
            entries,
        }
    }

    /// Counts every key record by state, and those overdue for rotation. One scan of every
    /// key tree (the cost of the scheduler's own look for due keys): call it at a bounded rate.
    /// Records are metadata, readable while sealed.
    ///
    /// # Errors
    /// The store cannot be read, or a record does not decode.
    pub fn key_counts(&self) -> Result<KeyCounts, Error> {
        let now = self.now();
        let mut by_state: Vec<(KeyState, u64)> = KeyState::ALL.iter().map(|s| (*s, 0)).collect();
        let mut overdue_for_rotation = 0;
        for record in self.all_records()? {
            if let Some((_, n)) = by_state.iter_mut().find(|(s, _)| *s == record.state) {
                *n += 1;
            }
            if record.overdue(now) {
                overdue_for_rotation += 1;
            }
        }
        Ok(KeyCounts {
            by_state,
            overdue_for_rotation,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};

    use crate::audit::writer::{AuditLog, Completion};
    use crate::audit::{Event, signer::never_signs};
    use crate::store::{Batch, Entry, MemoryStore, Store, StoreError, Tree};

    /// A store whose writes wait while the test holds its gate.
    struct Gated {
        inner: MemoryStore,
        gate: Mutex<()>,
        entered: Mutex<mpsc::Sender<()>>,
    }

    impl Store for Gated {
        fn name(&self) -> &'static str {
            "gated"
        }
        fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(tree, key)
        }
        fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
            self.inner.scan_prefix(tree, prefix)
        }
        fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
            let _ = self.entered.lock().unwrap().send(());
            let _held = self.gate.lock().unwrap();
            self.inner.apply(batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn event(n: usize) -> Event {
        Event {
            request_id: format!("r{n}"),
            principal: "kms://test".into(),
            ..Event::default()
        }
    }

    /// The audit queue depth counts every event handed in until its record is written: while
    /// the writer is held in the store, the events behind it wait; once it is let go, none do.
    #[test]
    fn the_audit_queue_depth_counts_events_until_they_are_written() {
        let (entered_tx, entered) = mpsc::channel();
        let store = Arc::new(Gated {
            inner: MemoryStore::new(),
            gate: Mutex::new(()),
            entered: Mutex::new(entered_tx),
        });
        let log = AuditLog::start(store.clone(), "t", never_signs(), Default::default());
        assert_eq!(log.queue_depth(), 0);
        let (done_tx, done) = mpsc::channel();
        let completion = |tx: mpsc::Sender<bool>| -> Completion {
            Box::new(move |r| {
                let _ = tx.send(r.is_ok());
            })
        };
        let held = store.gate.lock().unwrap();
        log.append(event(0), completion(done_tx.clone()));
        entered.recv().unwrap();
        // The writer is inside the store with the first event; three more queue behind it.
        log.append(event(1), completion(done_tx.clone()));
        log.append_all(
            vec![event(2), event(3)],
            Box::new(move |r| {
                let _ = done_tx.send(r.is_ok());
            }),
        );
        assert_eq!(log.queue_depth(), 4);
        drop(held);
        for _ in 0..3 {
            assert!(done.recv().unwrap());
        }
        log.stop();
        assert_eq!(log.queue_depth(), 0);
    }
}
