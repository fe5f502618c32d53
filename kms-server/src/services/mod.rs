//! Thin gRPC handlers: identify the caller, check limits, convert, call the one `Kms` method on
//! the blocking pool, convert back. Authorisation, policy and state checks live in the core and
//! cannot be skipped from here.

pub mod admin;
pub mod crypto;
pub mod system;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kms_core::Kms;
use kms_core::authz::Principal;
use tonic::{Request, Status};

use crate::identity::PeerInfo;
use crate::limits::{Limits, RateLimiter};
use crate::status::to_status;

/// What every handler shares.
#[derive(Clone)]
pub struct Shared {
    pub kms: Arc<Kms>,
    pub limits: Limits,
    rate: Arc<RateLimiter>,
    /// Random per process, so request ids from several nodes do not collide.
    node: Arc<str>,
    counter: Arc<AtomicU64>,
}

/// One request's identity.
pub struct Call {
    pub request_id: String,
    pub principal: Principal,
}

impl Shared {
    #[must_use]
    pub fn new(kms: Arc<Kms>, limits: Limits) -> Self {
        let node = kms_core::crypto::rng::random_public(4)
            .map(hex::encode)
            .unwrap_or_else(|_| "node".into());
        Self {
            kms,
            rate: Arc::new(RateLimiter::new(&limits)),
            limits,
            node: node.into(),
            counter: Arc::new(AtomicU64::new(1)),
        }
    }

    fn request_id(&self) -> String {
        format!(
            "{}-{}",
            self.node,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The subject of the caller's certificate.
    pub fn subject<T>(req: &Request<T>) -> Result<String, Status> {
        req.extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.subject.clone())
            .ok_or_else(|| {
                Status::unauthenticated("no usable client certificate subject (SAN URI or CN)")
            })
    }

    /// Identifies a registered principal and applies its rate limit. An unknown certificate
    /// gets PERMISSION_DENIED.
    pub async fn identify<T>(&self, req: &Request<T>) -> Result<Call, Status> {
        let subject = Self::subject(req)?;
        let request_id = self.request_id();
        let kms = Arc::clone(&self.kms);
        let lookup = subject.clone();
        let principal = tokio::task::spawn_blocking(move || kms.principal(&lookup))
            .await
            .map_err(|_| Status::internal("worker failed"))?
            .map_err(|e| to_status(&e, &request_id))?
            .ok_or_else(|| {
                tracing::info!(request_id, subject, "unknown certificate subject");
                Status::permission_denied(format!(
                    "{subject} is not a registered principal; an administrator must add it (request {request_id})"
                ))
            })?;
        self.rate.check(&principal.subject)?;
        Ok(Call {
            request_id,
            principal,
        })
    }

    /// Runs a core call on the blocking pool (crypto and storage block) and maps its error.
    pub async fn run<R, F>(&self, call: &Call, f: F) -> Result<R, Status>
    where
        R: Send + 'static,
        F: FnOnce(&Kms, &Principal) -> Result<R, kms_core::Error> + Send + 'static,
    {
        let kms = Arc::clone(&self.kms);
        let principal = call.principal.clone();
        let out = tokio::task::spawn_blocking(move || f(&kms, &principal))
            .await
            .map_err(|_| {
                Status::internal(format!("worker failed (request {})", call.request_id))
            })?;
        out.map_err(|e| to_status(&e, &call.request_id))
    }
}
