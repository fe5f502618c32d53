//! What a connection must pass before its TLS handshake (issue 18 item 6): a cap per source
//! address, so that one host's idle sockets cannot take every slot of the connection cap, and a
//! first-byte deadline, so that a socket that never starts a handshake frees its slot in seconds
//! rather than after the whole handshake timeout. Refusals are logged at most once a second,
//! with a count, so a flood cannot flood the log too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Connections open per source address.
#[derive(Clone, Default)]
pub(crate) struct PerSource {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in its source's count; given back on drop.
pub(crate) struct SourceSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerSource {
    /// A place for one more connection from `ip`, unless it already has `max`.
    pub(crate) fn admit(&self, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            open: Arc::clone(&self.open),
            ip,
        })
    }

    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            // Forget sources with nothing open: the map holds only live sources.
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Counts refusals of one kind and says whether to log now (at most once per `every`), and how
/// many were refused since the last line.
pub(crate) struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(refusals since the last line, this one included)` when a line is due.
    pub(crate) fn tick(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.1 += 1;
        let now = Instant::now();
        if state
            .0
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            return None;
        }
        state.0 = Some(now);
        Some(std::mem::take(&mut state.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_at_most_its_share_and_gets_it_back() {
        let per = PerSource::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<SourceSlot> = (0..3).map(|_| per.admit(a, 3).unwrap()).collect();
        assert!(per.admit(a, 3).is_none());
        let other = per.admit(b, 3);
        assert!(other.is_some(), "another source is not affected");
        drop(held);
        assert_eq!(per.open_from(a), 0);
        assert!(per.admit(a, 3).is_some());
    }

    #[test]
    fn the_throttle_logs_once_per_interval_with_the_count() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.tick(), Some(1));
        assert_eq!(t.tick(), None);
        assert_eq!(t.tick(), None);
        let fast = Throttle::new(Duration::ZERO);
        assert_eq!(fast.tick(), Some(1));
        assert_eq!(fast.tick(), Some(1));
    }
}
