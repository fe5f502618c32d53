//! What the backends share for [`Store::record_nonce`](super::Store::record_nonce): its outcome,
//! the scope bound, and the in-memory table the memory store keeps (sled keeps the same shape in
//! two trees of its own, PostgreSQL in a table).
//!
//! Each backend holds, per scope, the time its entry expires, and an index by expiry so that
//! expired entries are swept oldest first without reading live ones. Entries are counted, so a
//! flood of fresh nonces meets a bound ([`NonceOutcome::Full`]) instead of filling the disk.

use std::collections::{BTreeSet, HashMap};

/// The longest scope a store accepts: a domain, a key id and a 32-byte digest fit easily, and a
/// longer one is a caller's bug, not a row to write.
pub const MAX_NONCE_SCOPE: usize = 256;

/// How often (in the caller's seconds) a backend sweeps expired entries on its own; a store at
/// its bound sweeps at once whatever the time.
pub(crate) const SWEEP_EVERY: u64 = 1;

/// What [`Store::record_nonce`](super::Store::record_nonce) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceOutcome {
    /// Not seen within its lifetime: recorded now.
    New,
    /// Seen, and its entry has not expired: a replay.
    Seen,
    /// New, but the store holds its bound of live entries: nothing was recorded.
    Full,
}

/// The one scope check every backend makes before writing.
pub(crate) fn check_scope(scope: &[u8]) -> Result<(), super::StoreError> {
    if scope.is_empty() || scope.len() > MAX_NONCE_SCOPE {
        return Err(super::StoreError::Unavailable(format!(
            "a replay nonce scope must be 1 to {MAX_NONCE_SCOPE} bytes (a caller's bug)"
        )));
    }
    Ok(())
}

/// The memory store's nonces: scope → expiry, and the same pairs ordered by expiry.
#[derive(Default)]
pub(crate) struct NonceTable {
    by_scope: HashMap<Vec<u8>, u64>,
    by_expiry: BTreeSet<(u64, Vec<u8>)>,
    /// No sweep before this time unless the table is full.
    next_sweep: u64,
}

impl NonceTable {
    pub(crate) fn len(&self) -> usize {
        self.by_scope.len()
    }

    /// Drops every entry whose expiry is at or before `now`.
    pub(crate) fn sweep(&mut self, now: u64) {
        while let Some((expiry, _)) = self.by_expiry.first() {
            if *expiry > now {
                break;
            }
            if let Some((expiry, scope)) = self.by_expiry.pop_first()
                && self.by_scope.get(&scope) == Some(&expiry)
            {
                self.by_scope.remove(&scope);
            }
        }
        self.next_sweep = now.saturating_add(SWEEP_EVERY);
    }

    pub(crate) fn record(
        &mut self,
        scope: &[u8],
        expires_at: u64,
        now: u64,
        max_live: u64,
    ) -> NonceOutcome {
        if now >= self.next_sweep {
            self.sweep(now);
        }
        if let Some(&expiry) = self.by_scope.get(scope) {
            if expiry > now {
                return NonceOutcome::Seen;
            }
            // Expired but not swept yet: the slot is reused, the count does not grow.
            self.by_expiry.remove(&(expiry, scope.to_vec()));
            self.by_scope.insert(scope.to_vec(), expires_at);
            self.by_expiry.insert((expires_at, scope.to_vec()));
            return NonceOutcome::New;
        }
        if self.len() as u64 >= max_live {
            self.sweep(now);
            if self.len() as u64 >= max_live {
                return NonceOutcome::Full;
            }
        }
        self.by_scope.insert(scope.to_vec(), expires_at);
        self.by_expiry.insert((expires_at, scope.to_vec()));
        NonceOutcome::New
    }
}

#[cfg(test)]
mod tests {
    use super::{NonceOutcome, NonceTable};

    #[test]
    fn the_table_sweeps_what_expired_and_keeps_its_bound() {
        let mut table = NonceTable::default();
        assert_eq!(table.record(b"a", 110, 100, 2), NonceOutcome::New);
        assert_eq!(table.record(b"a", 120, 105, 2), NonceOutcome::Seen);
        assert_eq!(table.record(b"b", 130, 105, 2), NonceOutcome::New);
        assert_eq!(table.record(b"c", 130, 105, 2), NonceOutcome::Full);
        // `a` expires at 110: its room is free again, and it is new again.
        assert_eq!(table.record(b"c", 140, 110, 2), NonceOutcome::New);
        assert_eq!(table.len(), 2);
        assert_eq!(table.record(b"a", 150, 111, 3), NonceOutcome::New);
        table.sweep(1_000);
        assert_eq!(table.len(), 0);
    }
}
