//! Request limits (API-5): sizes of payloads and contexts, and per-principal rate limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::status::Refusal;
use serde::Deserialize;

/// Configurable bounds. Defaults: 64 KiB of plaintext, 8 KiB of context, batches of 1000 items
/// and 4 MiB.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest plaintext (or message, or MAC data) one request may carry.
    pub max_plaintext_bytes: usize,
    /// Largest encryption context, counting every key and value byte.
    pub max_context_bytes: usize,
    /// Sustained requests per second per principal.
    pub rate_per_second: f64,
    /// Requests a principal may burst above the sustained rate.
    pub burst: f64,
    /// Concurrent TLS connections the server accepts.
    pub max_connections: usize,
    /// Concurrent connections (handshaking or open) from one source address.
    pub max_connections_per_source: usize,
    /// HTTP/2 streams (concurrent requests) one connection may have open.
    pub max_streams_per_connection: u32,
    /// Requests per second that every unregistered certificate together may make (each costs
    /// a principal lookup and an audit record before it is refused).
    pub unregistered_rate_per_second: f64,
    /// ... and their burst.
    pub unregistered_burst: f64,
    /// Items one batch call (`kms.v1.CryptoBatch`) may hold. Each counts against the rate
    /// limit, so a batch larger than `burst` is always refused.
    pub max_batch_items: usize,
    /// Bytes one batch call's request may take, encoded.
    pub max_batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_plaintext_bytes: 64 * 1024,
            max_context_bytes: 8 * 1024,
            rate_per_second: 20_000.0,
            burst: 40_000.0,
            max_connections: 1024,
            max_connections_per_source: 64,
            max_streams_per_connection: 128,
            unregistered_rate_per_second: 50.0,
            unregistered_burst: 100.0,
            max_batch_items: 1000,
            max_batch_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The largest gRPC message to decode: a payload, a context and room for the rest.
    #[must_use]
    pub fn max_message_bytes(&self) -> usize {
        self.max_plaintext_bytes + self.max_context_bytes + 16 * 1024
    }

    /// The largest batch message to decode: `max_batch_bytes` and one single call's worth more,
    /// so that a batch somewhat over its limit is refused by [`Limits::check_batch`] with a
    /// message naming the limit; one far over it is refused before it is decoded.
    #[must_use]
    pub fn max_batch_message_bytes(&self) -> usize {
        self.max_batch_bytes
            .saturating_add(self.max_message_bytes())
    }

    /// A batch of `items` items, `encoded_len` bytes as a message: at least one item, and
    /// within both batch limits.
    pub fn check_batch(&self, items: usize, encoded_len: usize) -> Result<(), Refusal> {
        if items == 0 {
            return Err(Refusal::BadRequest(
                "a batch needs at least one item".into(),
            ));
        }
        if items > self.max_batch_items {
            return Err(Refusal::BatchTooLarge {
                len: items,
                limit: self.max_batch_items,
                unit: "items",
            });
        }
        if encoded_len > self.max_batch_bytes {
            return Err(Refusal::BatchTooLarge {
                len: encoded_len,
                limit: self.max_batch_bytes,
                unit: "bytes",
            });
        }
        Ok(())
    }

    pub fn check_payload(&self, field: &'static str, len: usize) -> Result<(), Refusal> {
        if len > self.max_plaintext_bytes {
            return Err(Refusal::TooLarge {
                field,
                len,
                limit: self.max_plaintext_bytes,
            });
        }
        Ok(())
    }

    pub fn check_context<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<(), Refusal> {
        let len: usize = pairs.into_iter().map(|(k, v)| k.len() + v.len()).sum();
        if len > self.max_context_bytes {
            return Err(Refusal::TooLarge {
                field: "encryption context",
                len,
                limit: self.max_context_bytes,
            });
        }
        Ok(())
    }
}

/// Token buckets: one per registered principal (so the table is as large as the registry, not
/// as the number of certificate subjects a CA ever issued), and one small bucket that every
/// unregistered certificate shares.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    unregistered: Mutex<(f64, Instant)>,
    unregistered_rate: f64,
    unregistered_burst: f64,
}

/// Refills `bucket` for the time since it was last used and takes `n` tokens if they are all
/// there (else none).
fn take(bucket: &mut (f64, Instant), rate: f64, burst: f64, now: Instant, n: f64) -> bool {
    let (tokens, last) = bucket;
    *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
    *last = now;
    if *tokens >= n {
        *tokens -= n;
        true
    } else {
        false
    }
}

impl RateLimiter {
    #[must_use]
    pub fn new(limits: &Limits) -> Self {
        Self {
            rate: limits.rate_per_second,
            burst: limits.burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
            unregistered: Mutex::new((limits.unregistered_burst.max(1.0), Instant::now())),
            unregistered_rate: limits.unregistered_rate_per_second,
            unregistered_burst: limits.unregistered_burst.max(1.0),
        }
    }

    /// Takes `requests` tokens for the registered principal `subject` (one per call, one per
    /// item of a batch), all or none, or says when to come back.
    pub fn check(&self, subject: &str, requests: usize) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets
            .entry(subject.to_owned())
            .or_insert((self.burst, now));
        // Counts far below 2^52 are exact in an f64.
        #[allow(clippy::cast_precision_loss)]
        let n = requests as f64;
        if take(bucket, self.rate, self.burst, now, n) {
            Ok(())
        } else if requests > 1 {
            Err(Refusal::RateLimitedBatch {
                items: requests,
                rate: self.rate,
                burst: self.burst,
                subject: subject.to_owned(),
            })
        } else {
            Err(Refusal::RateLimited {
                rate: self.rate,
                burst: self.burst,
                subject: subject.to_owned(),
            })
        }
    }

    /// Takes one token from the bucket all unregistered certificates share.
    pub fn check_unregistered(&self, subject: &str) -> Result<(), Refusal> {
        let mut bucket = self
            .unregistered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if take(
            &mut bucket,
            self.unregistered_rate,
            self.unregistered_burst,
            Instant::now(),
            1.0,
        ) {
            Ok(())
        } else {
            Err(Refusal::RateLimited {
                rate: self.unregistered_rate,
                burst: self.unregistered_burst,
                subject: format!("{subject} (one bucket for every unregistered certificate)"),
            })
        }
    }

    /// How many principals have a bucket.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_past_the_burst_per_principal() {
        let limits = Limits {
            rate_per_second: 0.001,
            burst: 3.0,
            ..Limits::default()
        };
        let rl = RateLimiter::new(&limits);
        for _ in 0..3 {
            rl.check("a", 1).unwrap();
        }
        assert!(matches!(
            rl.check("a", 1),
            Err(Refusal::RateLimited { subject, .. }) if subject == "a"
        ));
        rl.check("b", 1).unwrap();
    }

    /// A batch takes one token per item, all at once or none: the items count as requests.
    #[test]
    fn a_batch_takes_a_token_per_item_or_none() {
        let rl = RateLimiter::new(&Limits {
            rate_per_second: 0.001,
            burst: 10.0,
            ..Limits::default()
        });
        rl.check("a", 7).unwrap();
        // 3 left: a batch of 4 is refused whole and takes nothing ...
        assert!(matches!(
            rl.check("a", 4),
            Err(Refusal::RateLimitedBatch { items: 4, subject, .. }) if subject == "a"
        ));
        // ... so 3 single calls still pass, and the next is refused.
        for _ in 0..3 {
            rl.check("a", 1).unwrap();
        }
        assert!(matches!(rl.check("a", 1), Err(Refusal::RateLimited { .. })));
        // A batch larger than the burst never passes.
        assert!(rl.check("b", 11).is_err());
        rl.check("b", 10).unwrap();
    }

    #[test]
    fn batches_are_bounded_by_items_and_bytes() {
        let l = Limits::default();
        assert!(l.check_batch(1000, 4 * 1024 * 1024).is_ok());
        assert!(matches!(
            l.check_batch(1001, 10),
            Err(Refusal::BatchTooLarge {
                len: 1001,
                limit: 1000,
                unit: "items"
            })
        ));
        assert!(matches!(
            l.check_batch(1, 4 * 1024 * 1024 + 1),
            Err(Refusal::BatchTooLarge {
                len: 4_194_305,
                limit: 4_194_304,
                unit: "bytes"
            })
        ));
        assert!(matches!(
            l.check_batch(0, 0),
            Err(Refusal::BadRequest(m)) if m.contains("at least one item")
        ));
        assert_eq!(
            l.max_batch_message_bytes(),
            4 * 1024 * 1024 + l.max_message_bytes()
        );
    }

    #[test]
    fn unregistered_certificates_share_one_small_bucket_and_no_table_entry() {
        let rl = RateLimiter::new(&Limits {
            unregistered_rate_per_second: 0.001,
            unregistered_burst: 20.0,
            ..Limits::default()
        });
        for i in 0..20 {
            rl.check_unregistered(&format!("stranger-{i}")).unwrap();
        }
        assert!(matches!(
            rl.check_unregistered("stranger-99"),
            Err(Refusal::RateLimited { burst, .. }) if burst == 20.0
        ));
        assert_eq!(rl.tracked(), 0, "strangers add no entries");
        // Registered principals keep their own buckets, untouched by the strangers.
        rl.check("app", 1).unwrap();
        assert_eq!(rl.tracked(), 1);
    }

    #[test]
    fn sizes_are_bounded() {
        let l = Limits::default();
        assert!(l.check_payload("plaintext", 64 * 1024).is_ok());
        assert!(matches!(
            l.check_payload("plaintext", 64 * 1024 + 1),
            Err(Refusal::TooLarge {
                field: "plaintext",
                len: 65537,
                limit: 65536
            })
        ));
        let big = "v".repeat(8 * 1024);
        let ctx: HashMap<String, String> = [("k".to_string(), big)].into();
        assert!(matches!(
            l.check_context(&ctx),
            Err(Refusal::TooLarge {
                field: "encryption context",
                len: 8193,
                limit: 8192
            })
        ));
    }
}
