//! The replay guard (API-6): a request carries a timestamp and a nonce; it is fresh when its
//! timestamp lies within ± the window of the KMS's clock and its nonce was not seen before
//! within that window.
//!
//! The nonces are remembered by the [`Store`] ([`Store::record_nonce`]): in memory, in sled
//! trees of their own that survive a restart, or in a PostgreSQL table that every node on the
//! database shares, so that a request accepted by one node is a replay on all of them. What is
//! stored is never the nonce itself but its scope, `domain ":" key id NUL SM3(nonce)`: a
//! partner's nonce is no secret, but the audit and the store need nothing more than its digest
//! (issue 22's rule: no nonce in clear anywhere).
//!
//! # Lifetimes and bounds
//!
//! A request stamped `t` is fresh while `|now − t| ≤ window`, that is until `t + window`; its
//! nonce is remembered until then, plus one second against rounding, and forgotten after:
//! a replay later than that is refused as stale instead. Timestamps are Unix seconds.
//!
//! The store holds at most [`ReplaySettings::max_entries`] live nonces. At the bound a new
//! nonce is refused ([`Error::ResourceExhausted`], RESOURCE_EXHAUSTED on the wire) rather than
//! a live one forgotten: forgetting one would let its request be replayed, refusing only slows
//! a flood down. Nonces are 8 to 64 bytes ([`MIN_NONCE_LEN`], [`MAX_NONCE_LEN`]).
//!
//! # Order of checks
//!
//! Callers check the window and the nonce's shape, then the request itself (a signature), and
//! only then record the nonce with [`ReplayGuard::remember`]. Recording last means that a
//! forged request cannot use up a legitimate caller's nonce: only a request that passed every
//! other check consumes one.
//!
//! # A crash on sled
//!
//! sled keeps recent writes in memory until a buffer fills or half a second passes, so the sled
//! store flushes it (write and fsync) after recording a nonce and before answering `New`: a
//! nonce told fresh is on disk, and after a crash (power loss, `kill -9`) its request is still a
//! replay. A flush that fails fails the call, so the request is refused, never accepted without
//! its nonce on disk. Another caller may meet the nonce as seen before its flush ends, which
//! refuses too. The flush runs outside the store's nonce lock: sled writes and syncs everything
//! pending at once, so concurrent callers share flushes instead of queueing for one each.
//! Measured with `ReplayGuard::remember` on a `SledStore` (release build, 2-core VM whose ext4
//! `fdatasync` takes about 0.15 ms, shared with other builds): 1 thread went from 53,000–60,000
//! to 8,700–10,300 nonces a second, 8 threads from 57,000–62,000 to 13,700–15,100 (8,300–9,200
//! when the flush held the lock); a slower disk costs more. `tests/durability.rs` kills a
//! process recording nonces and checks every one it was told was fresh. Several nodes on
//! PostgreSQL have the same guarantee (each nonce is committed before the answer).

use std::time::Duration;

use sm3::{Digest, Sm3};

use crate::error::{Error, InvalidInput};
use crate::store::{NonceOutcome, Store};

/// Fewest bytes a nonce may have: less is guessable enough to collide by chance.
pub const MIN_NONCE_LEN: usize = 8;
/// Most bytes a nonce may have: more buys nothing and costs every stored entry.
pub const MAX_NONCE_LEN: usize = 64;

/// How the guard is configured (`[replay]` in the server's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplaySettings {
    /// A request's timestamp may differ from the KMS's clock by this much either way.
    pub window: Duration,
    /// Live nonces the store may hold before new ones are refused.
    pub max_entries: u64,
}

impl ReplaySettings {
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
    pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
}

impl Default for ReplaySettings {
    fn default() -> Self {
        Self {
            window: Self::DEFAULT_WINDOW,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Whether a request is fresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Within the window, and its nonce is now recorded.
    Fresh,
    /// Outside the window (in the past or the future).
    Stale,
    /// Its nonce was seen within the window.
    Replayed,
}

/// The replay guard over one store. Cheap: build one per call.
#[derive(Clone, Copy)]
pub struct ReplayGuard<'a> {
    store: &'a dyn Store,
    settings: ReplaySettings,
}

impl<'a> ReplayGuard<'a> {
    #[must_use]
    pub fn new(store: &'a dyn Store, settings: ReplaySettings) -> Self {
        Self { store, settings }
    }

    #[must_use]
    pub fn settings(&self) -> ReplaySettings {
        self.settings
    }

    /// A nonce of [`MIN_NONCE_LEN`] to [`MAX_NONCE_LEN`] bytes.
    pub fn check_nonce(nonce: &[u8]) -> Result<(), InvalidInput> {
        if (MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len()) {
            Ok(())
        } else {
            Err(InvalidInput::new(
                "nonce",
                format!(
                    "must be {MIN_NONCE_LEN} to {MAX_NONCE_LEN} bytes; it is {} bytes",
                    nonce.len()
                ),
            ))
        }
    }

    /// Whether `timestamp` is within the window of `now` (both Unix seconds).
    #[must_use]
    pub fn within_window(&self, timestamp: u64, now: u64) -> bool {
        timestamp.abs_diff(now) <= self.settings.window.as_secs()
    }

    /// What the store keys a nonce by: never the nonce itself.
    #[must_use]
    pub fn scope(domain: &str, key_id: &str, nonce: &[u8]) -> Vec<u8> {
        let mut scope = Vec::with_capacity(domain.len() + key_id.len() + 2 + 32);
        scope.extend_from_slice(domain.as_bytes());
        scope.push(b':');
        scope.extend_from_slice(key_id.as_bytes());
        scope.push(0);
        scope.extend_from_slice(&Sm3::digest(nonce));
        scope
    }

    /// Checks the window and the nonce's shape, then records the nonce for `key_id` in `domain`
    /// (`"request"` for request verification, `"password"` for the password shield: the same
    /// nonce under two domains or keys is two nonces).
    ///
    /// # Errors
    ///
    /// A malformed nonce ([`Error::InvalidArgument`]), a store at its bound
    /// ([`Error::ResourceExhausted`]), or a store failure.
    pub fn remember(
        &self,
        domain: &str,
        key_id: &str,
        nonce: &[u8],
        timestamp: u64,
        now: u64,
    ) -> Result<Freshness, Error> {
        Self::check_nonce(nonce)?;
        if !self.within_window(timestamp, now) {
            return Ok(Freshness::Stale);
        }
        let expires_at = timestamp
            .saturating_add(self.settings.window.as_secs())
            .saturating_add(1);
        let scope = Self::scope(domain, key_id, nonce);
        match self
            .store
            .record_nonce(&scope, expires_at, now, self.settings.max_entries)?
        {
            NonceOutcome::New => Ok(Freshness::Fresh),
            NonceOutcome::Seen => Ok(Freshness::Replayed),
            NonceOutcome::Full => Err(Error::ResourceExhausted(
                format!(
                    "the replay guard holds its limit of {} live nonces (replay max_entries); \
                     new requests are refused until older nonces expire",
                    self.settings.max_entries
                )
                .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Freshness, MAX_NONCE_LEN, MIN_NONCE_LEN, ReplayGuard, ReplaySettings};
    use crate::error::Error;
    use crate::store::{MemoryStore, Store};

    const NOW: u64 = 1_800_000_000;

    fn guard(store: &dyn Store, max_entries: u64) -> ReplayGuard<'_> {
        ReplayGuard::new(
            store,
            ReplaySettings {
                window: Duration::from_secs(300),
                max_entries,
            },
        )
    }

    #[test]
    fn a_nonce_is_fresh_once_within_its_window() {
        let store = MemoryStore::new();
        let g = guard(&store, 100);
        let nonce = [7u8; 16];
        let remember = |n: &[u8], ts, now| g.remember("request", "k1", n, ts, now).unwrap();
        assert_eq!(remember(&nonce, NOW, NOW), Freshness::Fresh);
        assert_eq!(remember(&nonce, NOW, NOW + 1), Freshness::Replayed);
        // Another key or domain is another nonce.
        assert_eq!(
            g.remember("request", "k2", &nonce, NOW, NOW).unwrap(),
            Freshness::Fresh
        );
        assert_eq!(
            g.remember("password", "k1", &nonce, NOW, NOW).unwrap(),
            Freshness::Fresh
        );
        // Remembered for as long as its timestamp is within the window: to the last second.
        assert_eq!(remember(&nonce, NOW, NOW + 300), Freshness::Replayed);
        // After that the timestamp itself is stale.
        assert_eq!(remember(&nonce, NOW, NOW + 301), Freshness::Stale);
    }

    #[test]
    fn the_window_holds_both_ways() {
        let store = MemoryStore::new();
        let g = guard(&store, 100);
        assert!(g.within_window(NOW - 300, NOW));
        assert!(g.within_window(NOW + 300, NOW));
        assert!(!g.within_window(NOW - 301, NOW));
        assert!(!g.within_window(NOW + 301, NOW));
        assert!(!g.within_window(u64::MAX, NOW));
        assert!(!g.within_window(0, NOW));
        let stale = g
            .remember("request", "k", &[1; 16], NOW + 301, NOW)
            .unwrap();
        assert_eq!(stale, Freshness::Stale);
        // A stale request records nothing: the same nonce in the window is still fresh.
        let fresh = g.remember("request", "k", &[1; 16], NOW, NOW).unwrap();
        assert_eq!(fresh, Freshness::Fresh);
        // A future timestamp keeps its nonce until its own window closes.
        let nonce = [2u8; 16];
        let ahead = NOW + 200;
        assert_eq!(
            g.remember("request", "k", &nonce, ahead, NOW).unwrap(),
            Freshness::Fresh
        );
        assert_eq!(
            g.remember("request", "k", &nonce, ahead, NOW + 450)
                .unwrap(),
            Freshness::Replayed
        );
    }

    #[test]
    fn nonces_outside_their_bounds_are_refused() {
        let store = MemoryStore::new();
        let g = guard(&store, 100);
        for len in [0, MIN_NONCE_LEN - 1, MAX_NONCE_LEN + 1, 1024 * 1024] {
            let err = g
                .remember("request", "k", &vec![0; len], NOW, NOW)
                .unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument(e) if e.field == "nonce"),
                "{len}: {err}"
            );
        }
        for len in [MIN_NONCE_LEN, MAX_NONCE_LEN] {
            assert!(ReplayGuard::check_nonce(&vec![0; len]).is_ok());
        }
    }

    #[test]
    fn a_full_guard_refuses_and_forgets_nothing() {
        let store = MemoryStore::new();
        let g = guard(&store, 2);
        assert_eq!(
            g.remember("request", "k", &[1; 8], NOW, NOW).unwrap(),
            Freshness::Fresh
        );
        assert_eq!(
            g.remember("request", "k", &[2; 8], NOW, NOW).unwrap(),
            Freshness::Fresh
        );
        let err = g
            .remember("request", "k", &[3; 8], NOW, NOW)
            .expect_err("full");
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err}");
        assert!(err.to_string().contains("limit of 2 live nonces"), "{err}");
        assert_eq!(
            g.remember("request", "k", &[1; 8], NOW, NOW).unwrap(),
            Freshness::Replayed
        );
    }

    #[test]
    fn the_scope_holds_no_nonce_in_clear() {
        let nonce = b"a-nonce-in-clear-0123";
        let scope = ReplayGuard::scope("request", "k1", nonce);
        assert!(scope.starts_with(b"request:k1\0"));
        assert_eq!(scope.len(), "request:k1\0".len() + 32);
        assert!(!scope.windows(nonce.len()).any(|w| w == nonce));
    }
}
