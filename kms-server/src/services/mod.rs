//! Thin gRPC handlers: identify the caller, check limits, convert, call the one `Kms` method on
//! the blocking pool, convert back. Authorisation, policy and state checks live in the core and
//! cannot be skipped from here.

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod batch;
pub mod crypto;
pub mod password;
pub mod request;
pub mod system;
pub mod tokenize;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kms_core::Kms;
use kms_core::audit::{Flag, Role};
use kms_core::authz::Principal;
use tonic::{Request, Status};

use crate::audit_layer::AuditSlot;
use crate::identity::PeerInfo;
use crate::limits::{Limits, RateLimiter};
use crate::status::{Refusal, to_status, worker_failed};

/// Request ids: a random per-process prefix (ids from several nodes do not collide) and a
/// counter.
#[derive(Clone)]
pub struct RequestIds {
    node: Arc<str>,
    counter: Arc<AtomicU64>,
}

impl RequestIds {
    #[must_use]
    pub fn new() -> Self {
        let node = kms_core::crypto::rng::random_public(4)
            .map(hex::encode)
            .unwrap_or_else(|_| "node".into());
        Self {
            node: node.into(),
            counter: Arc::new(AtomicU64::new(1)),
        }
    }

    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    #[must_use]
    pub fn next(&self) -> String {
        format!(
            "{}-{}",
            self.node,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct Shared {
    pub kms: Arc<Kms>,
    pub limits: Limits,
    rate: Arc<RateLimiter>,
    ids: RequestIds,
    pub(crate) audit: Option<Arc<kms_core::audit::writer::AuditLog>>,
    /// The store answers reads from this process in microseconds (sled), so light calls may run
    /// on the async worker instead of paying two thread hand-offs to the blocking pool.
    pub(crate) local_reads: bool,
}

/// Largest payload a light call handles on the async worker: SM4-GCM over 16 KiB takes about
/// 0.25 ms here, past which a worker held that long would delay every other connection's I/O.
pub(crate) const INLINE_MAX_BYTES: usize = 16 * 1024;

/// One request's identity and its audit note.
pub struct Call {
    pub request_id: String,
    pub principal: Principal,
    slot: Option<AuditSlot>,
}

impl Call {
    /// Records the key a request used (its resolved id and version) in the audit note.
    pub fn note_key(&self, key_id: &impl ToString, version: Option<u32>) {
        if let Some(s) = &self.slot {
            s.update(|n| {
                n.key_id = Some(key_id.to_string());
                n.key_version = version;
            });
        }
    }

    pub fn note_context(&self, hmac: Option<String>) {
        if let Some(s) = &self.slot {
            s.update(|n| n.context_hmac = hmac);
        }
    }

    /// Records the key and version a decrypt/verify used, flagged when the key is compromised
    /// (KEY-8: such uses are allowed but must stand out in the audit trail).
    pub fn note_use(&self, key_id: &impl ToString, version: u32, key_compromised: bool) {
        self.note_key(key_id, Some(version));
        if key_compromised {
            self.note_flag(Flag::KeyCompromised);
        }
    }

    /// A refusal as this request's status (through the one map, with its request id).
    pub fn check<T, E: Into<Refusal>>(&self, r: Result<T, E>) -> Result<T, Status> {
        r.map_err(|e| to_status(e, &self.request_id))
    }

    pub fn note_flag(&self, flag: Flag) {
        if let Some(s) = &self.slot {
            s.update(|n| n.flags.push(flag));
        }
    }

    /// Records how many values the call handled (tokenisation: never the values).
    pub fn note_count(&self, count: usize) {
        if let Some(s) = &self.slot {
            s.update(|n| n.count = Some(u32::try_from(count).unwrap_or(u32::MAX)));
        }
    }

    /// Records how key material was wrapped on its way in or out (never the material).
    pub fn note_transfer(&self, wrapping_spec: &str, public_key_sm3: &str) {
        if let Some(s) = &self.slot {
            s.update(|n| {
                n.transfer = Some(kms_core::audit::KeyTransfer {
                    wrapping_spec: wrapping_spec.to_owned(),
                    public_key_sm3: public_key_sm3.to_owned(),
                });
            });
        }
    }
    /// Declares this call a batch of `items` items (the audit layer then holds the response to
    /// as many settled items, [`Call::item`], [`Call::settle`]).
    pub fn begin_batch(&self, items: usize) {
        if let Some(s) = &self.slot {
            s.begin_batch(items);
        }
    }

    /// The call of item `index` of this batch: the same principal, request id
    /// `<batch id>.<index>`, and an audit note of its own in the batch's slot, which the
    /// single call's code fills as it would its own.
    #[must_use]
    pub fn item(&self, index: usize) -> Self {
        let request_id = format!("{}.{index}", self.request_id);
        Self {
            slot: self.slot.as_ref().map(|s| s.item(request_id.clone())),
            request_id,
            principal: self.principal.clone(),
        }
    }

    /// Settles a batch item: its outcome goes into its audit note, and an error becomes the
    /// item's own status (code and message, which names the item's request id).
    pub fn settle<T>(&self, result: Result<T, Status>) -> Result<T, kms_proto::v1::ItemError> {
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        if let Some(s) = &self.slot {
            s.update(|n| n.outcome = Some(crate::audit_layer::outcome(code)));
        }
        result.map_err(|s| kms_proto::v1::ItemError {
            code: s.code().into(),
            message: s.message().to_owned(),
        })
    }
}

impl Shared {
    #[must_use]
    pub fn new(kms: Arc<Kms>, limits: Limits, ids: RequestIds) -> Self {
        Self {
            rate: Arc::new(RateLimiter::new(&limits)),
            limits,
            ids,
            audit: None,
            local_reads: kms.store().reads_are_local(),
            kms,
        }
    }

    /// The rate limiter, shared with the gate (`gate.rs`), which refuses unregistered
    /// certificates from the same shared bucket.
    pub(crate) fn rate_limiter(&self) -> Arc<RateLimiter> {
        Arc::clone(&self.rate)
    }

    /// The audit layer's slot for this request, if any, and the request id.
    pub(crate) fn slot<T>(&self, req: &Request<T>) -> (Option<AuditSlot>, String) {
        let slot = req.extensions().get::<AuditSlot>().cloned();
        let id = slot
            .as_ref()
            .map_or_else(|| self.ids.next(), |s| s.request_id.clone());
        (slot, id)
    }

    /// The subject of the caller's certificate.
    pub fn subject<T>(req: &Request<T>) -> Result<String, Refusal> {
        req.extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.subject.clone())
            .ok_or(Refusal::NoSubject)
    }

    /// Identifies a registered principal and applies its rate limit. An unknown certificate
    /// gets PERMISSION_DENIED.
    pub async fn identify<T>(&self, req: &Request<T>) -> Result<Call, Status> {
        let call = self.identify_unmetered(req).await?;
        call.check(self.rate.check(&call.principal.subject, 1))?;
        Ok(call)
    }

    /// [`Shared::identify`] without taking from the principal's rate bucket: for a batch,
    /// which takes one token per item once its size is known to be within the limits
    /// ([`Shared::meter`]).
    pub(crate) async fn identify_unmetered<T>(&self, req: &Request<T>) -> Result<Call, Status> {
        let (slot, request_id) = self.slot(req);
        let subject = Self::subject(req).map_err(|e| to_status(e, &request_id))?;
        let admitted = req
            .extensions()
            .get::<crate::gate::Admitted>()
            .map(|a| a.0.clone());
        let found = if let Some(p) = admitted {
            // The gate looked it up for this very request.
            Ok(Some(p))
        } else if self.local_reads {
            self.kms.principal(&subject)
        } else {
            let kms = Arc::clone(&self.kms);
            let lookup = subject.clone();
            tokio::task::spawn_blocking(move || kms.principal(&lookup))
                .await
                .map_err(|_| worker_failed(&request_id))?
        };
        let Some(principal) = found.map_err(|e| to_status(e, &request_id))? else {
            // Unregistered certificates share one small bucket and get no entry of their own
            // (API-5): a CA's worth of subjects cannot grow the table or drown the log.
            self.rate
                .check_unregistered(&subject)
                .map_err(|e| to_status(e, &request_id))?;
            return Err(to_status(
                Refusal::UnknownPrincipal { subject },
                &request_id,
            ));
        };
        if let Some(s) = &slot {
            s.update(|n| {
                n.principal = Some(principal.subject.clone());
                n.role = Some(Role::from(&principal.role));
            });
        }
        Ok(Call {
            request_id,
            principal,
            slot,
        })
    }

    /// Takes `items` tokens from the caller's rate bucket at once, or none (a batch counts each
    /// item as a request, API-5).
    pub(crate) fn meter(&self, call: &Call, items: usize) -> Result<(), Status> {
        call.check(self.rate.check(&call.principal.subject, items))
    }

    /// Runs a light core call: symmetric crypto over at most `payload_len` bytes and store
    /// reads, no store write and no public-key operation. With a local store and a small payload
    /// it runs right here on the async worker (microseconds: cheaper than the hand-off), else on
    /// the blocking pool like [`Shared::run`].
    pub async fn run_light<R, F>(&self, call: &Call, payload_len: usize, f: F) -> Result<R, Status>
    where
        R: Send + 'static,
        F: FnOnce(&Kms, &Principal) -> Result<R, kms_core::Error> + Send + 'static,
    {
        if self.local_reads && payload_len <= INLINE_MAX_BYTES {
            return f(&self.kms, &call.principal).map_err(|e| to_status(e, &call.request_id));
        }
        self.run(call, f).await
    }

    /// Runs a core call on the blocking pool (public-key crypto, store writes, anything that may
    /// take milliseconds) and maps its error.
    pub async fn run<R, F>(&self, call: &Call, f: F) -> Result<R, Status>
    where
        R: Send + 'static,
        F: FnOnce(&Kms, &Principal) -> Result<R, kms_core::Error> + Send + 'static,
    {
        let kms = Arc::clone(&self.kms);
        let principal = call.principal.clone();
        let out = tokio::task::spawn_blocking(move || f(&kms, &principal))
            .await
            .map_err(|_| worker_failed(&call.request_id))?;
        out.map_err(|e| to_status(e, &call.request_id))
    }
}
