//! Who reaches the services at all (issue 18 item 6): the audit layer asks the gate with the
//! certificate's subject *before* the request's body is read, so an unregistered certificate
//! costs a lookup and one small denial record, never a decoded message; health and reflection
//! answer registered principals only. Before the first principal exists (an uninitialised KMS)
//! only the calls that bring one into being — status, init, restore, and the unseal shares of a
//! staged restore — pass, and their handlers check the rest.

use std::sync::Arc;

use kms_core::Kms;
use kms_core::authz::Principal;

use crate::limits::RateLimiter;
use crate::status::Refusal;

/// The calls an unregistered certificate may make: what bootstraps an empty KMS. The handlers
/// refuse them once it is initialised.
const BOOTSTRAP: &[&str] = &[
    "/kms.v1.System/Status",
    "/kms.v1.System/Init",
    "/kms.v1.System/Restore",
    // A staged restore's holders are not registered until it is written (`staged_restore.rs`).
    "/kms.v1.System/Unseal",
];

/// The principal the gate found, for the handler (which then need not look it up again).
#[derive(Clone, Debug)]
pub struct Admitted(pub Principal);

/// What the gate decided.
#[derive(Debug)]
pub enum Admission {
    /// A registered principal.
    Principal(Principal),
    /// Not registered, but a bootstrap call: the handler decides.
    Bootstrap,
}

#[derive(Clone)]
pub struct Gate {
    kms: Arc<Kms>,
    rate: Arc<RateLimiter>,
}

impl Gate {
    #[must_use]
    pub fn new(kms: Arc<Kms>, rate: Arc<RateLimiter>) -> Self {
        Self { kms, rate }
    }

    /// Admits a call to `path` from the certificate subject `subject`, or says why not.
    pub async fn admit(&self, subject: Option<&str>, path: &str) -> Result<Admission, Refusal> {
        let subject = subject.ok_or(Refusal::NoSubject)?;
        let found = if self.kms.store().reads_are_local() {
            self.kms.principal(subject)
        } else {
            let kms = Arc::clone(&self.kms);
            let lookup = subject.to_owned();
            tokio::task::spawn_blocking(move || kms.principal(&lookup))
                .await
                .map_err(|_| {
                    Refusal::Core(kms_core::Error::FailedPrecondition(
                        "the principal lookup did not finish".into(),
                    ))
                })?
        }?;
        match found {
            Some(p) => Ok(Admission::Principal(p)),
            None if BOOTSTRAP.contains(&path) => Ok(Admission::Bootstrap),
            None => {
                self.rate.check_unregistered(subject)?;
                Err(Refusal::UnknownPrincipal {
                    subject: subject.to_owned(),
                })
            }
        }
    }
}
