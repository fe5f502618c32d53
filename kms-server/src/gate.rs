//! Who reaches the services at all (issue 18 item 6): the audit layer asks the gate with the
//! certificate's subject *before* the request's body is read, so an unregistered certificate
//! costs a lookup and one small denial record, never a decoded message; health and reflection
//! answer registered principals only. Before the first principal exists (an uninitialised KMS)
//! only the calls that bring one into being — status, init, restore, and the unseal shares of a
//! staged restore — pass, and their handlers check the rest; once it is initialised, those calls
//! are refused here too (unseal then needs a registered holder), so that a stalled
//! Init from an unregistered certificate can neither hold a handler nor write an intent record.
//!
//! An unregistered certificate's refusals cost at most one audit record per connection
//! ([`Denials`]): the first refusal on a connection is recorded, naming the certificate's
//! subject; later ones on the same connection are counted and logged rate-limited. The
//! connection is kept open rather than closed after its first refusal: closing it would make
//! a client that retries pay, and make the server pay, a new handshake per refusal (dearer
//! than answering a HEADERS frame), and a close races the refusal's own bytes, so a client
//! misconfigured in good faith might see a reset instead of "not a registered principal".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kms_core::authz::Principal;
use kms_core::{Kms, System};

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

/// One connection's gate refusals (issue 18 item 6): whether one has been recorded yet, and how
/// many were not. Shared by every request of the connection (it rides in [`PeerInfo`]).
///
/// [`PeerInfo`]: crate::identity::PeerInfo
#[derive(Debug, Default)]
pub struct Denials {
    recorded: AtomicBool,
    unrecorded: AtomicU64,
}

impl Denials {
    /// Claims the connection's one audit record: `true` for its first refusal only.
    pub fn claim_record(&self) -> bool {
        !self.recorded.swap(true, Ordering::AcqRel)
    }

    /// Counts a refusal that is not recorded; returns how many there have been.
    pub fn count_unrecorded(&self) -> u64 {
        self.unrecorded.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Refusals on this connection that were counted, not recorded.
    #[must_use]
    pub fn unrecorded(&self) -> u64 {
        self.unrecorded.load(Ordering::Relaxed)
    }
}

/// Whether a gate refusal is a denial of the certificate itself (no subject, not registered,
/// a bootstrap call once the KMS is initialised, the unregistered certificates' shared bucket
/// empty), as opposed to the store failing: the
/// kind that is recorded once per connection and otherwise counted.
#[must_use]
pub fn is_denial(refusal: &Refusal) -> bool {
    matches!(
        refusal,
        Refusal::NoSubject
            | Refusal::CertificateRevoked
            | Refusal::UnknownPrincipal { .. }
            | Refusal::RateLimited { .. }
            | Refusal::AlreadyInitialised
            | Refusal::RestoreNeedsEmptyStore
    )
}

/// The metrics' name for a denial (`kms_gate_refusals_total{reason}`), `None` for a refusal
/// that is not one ([`is_denial`]). Fixed words: never the subject.
#[must_use]
pub fn denial_reason(refusal: &Refusal) -> Option<&'static str> {
    if !is_denial(refusal) {
        None
    } else if matches!(refusal, Refusal::NoSubject) {
        Some("no_subject")
    } else if matches!(refusal, Refusal::CertificateRevoked) {
        Some("revoked")
    } else if matches!(refusal, Refusal::UnknownPrincipal { .. }) {
        Some("unregistered")
    } else if matches!(refusal, Refusal::RateLimited { .. }) {
        Some("rate_limited")
    } else {
        // AlreadyInitialised, RestoreNeedsEmptyStore: a bootstrap call after init.
        Some("bootstrap_closed")
    }
}

#[derive(Clone)]
pub struct Gate {
    kms: Arc<Kms>,
    rate: Arc<RateLimiter>,
    /// Who says whether the KMS is initialised (bootstrap calls are refused at the gate once it
    /// is); `None` leaves that to the handlers.
    owner: Option<Arc<System>>,
    /// Set once the KMS is seen initialised: it never goes back.
    initialised: Arc<AtomicBool>,
    /// The client CRLs in force: a connection whose certificate they revoke is refused from
    /// its next request on, without waiting for it to reconnect.
    revocation: Option<Arc<crate::revocation::Revocation>>,
}

impl Gate {
    #[must_use]
    pub fn new(kms: Arc<Kms>, rate: Arc<RateLimiter>) -> Self {
        Self {
            kms,
            rate,
            owner: None,
            initialised: Arc::default(),
            revocation: None,
        }
    }

    /// Refuses calls on connections whose certificate `revocation` revokes.
    #[must_use]
    pub fn revoked_by(mut self, revocation: Option<Arc<crate::revocation::Revocation>>) -> Self {
        self.revocation = revocation;
        self
    }

    /// As [`Gate::admit`], first refusing a connection whose certificate (`cert_key`) has been
    /// revoked since it connected.
    pub async fn admit_peer(
        &self,
        subject: Option<&str>,
        cert_key: Option<&crate::revocation::CertKey>,
        path: &str,
    ) -> Result<Admission, Refusal> {
        if let (Some(r), Some(key)) = (&self.revocation, cert_key)
            && r.revokes(key)
        {
            return Err(Refusal::CertificateRevoked);
        }
        self.admit(subject, path).await
    }

    /// Refuses bootstrap calls from unregistered certificates once `owner` is initialised.
    #[must_use]
    pub fn bootstrapped_by(mut self, owner: Arc<System>) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Whether bootstrap calls are still open: no owner to ask, or an uninitialised KMS.
    async fn bootstrap_open(&self) -> Result<bool, Refusal> {
        let Some(owner) = &self.owner else {
            return Ok(true);
        };
        if self.initialised.load(Ordering::Acquire) {
            return Ok(false);
        }
        let status = if self.kms.store().reads_are_local() {
            owner.status()
        } else {
            let owner = Arc::clone(owner);
            tokio::task::spawn_blocking(move || owner.status())
                .await
                .map_err(|_| {
                    Refusal::Core(kms_core::Error::FailedPrecondition(
                        "the status lookup did not finish".into(),
                    ))
                })?
        }?;
        if status.initialized {
            self.initialised.store(true, Ordering::Release);
        }
        Ok(!status.initialized)
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
            None if BOOTSTRAP.contains(&path) => {
                if self.bootstrap_open().await? {
                    return Ok(Admission::Bootstrap);
                }
                // What the handler would have said, without reading the body.
                self.rate.check_unregistered(subject)?;
                Err(match path {
                    "/kms.v1.System/Init" => Refusal::AlreadyInitialised,
                    "/kms.v1.System/Restore" => Refusal::RestoreNeedsEmptyStore,
                    _ => Refusal::UnknownPrincipal {
                        subject: subject.to_owned(),
                    },
                })
            }
            None => {
                self.rate.check_unregistered(subject)?;
                Err(Refusal::UnknownPrincipal {
                    subject: subject.to_owned(),
                })
            }
        }
    }
}
