//! `run`: the KMS as a gRPC server over mutual TLS (mini-redis shape: listener, state and a
//! shutdown future in; tests call it directly on 127.0.0.1:0).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kms_core::audit::archive::{ArchiveError, ArchiveOutcome, ArchivePolicy, Archiver};
use kms_core::audit::writer::AuditLog;
use kms_core::audit::{Event, Flag, Operation, Outcome, Role as AuditRole, SCHEDULER_PRINCIPAL};
use kms_core::keys::KeyId;
use kms_core::{Kms, Sweep, SweepLog, SweepOutcome, System};
use kms_proto::v1::{
    audit_server::AuditServer, crypto_batch_server::CryptoBatchServer, crypto_server::CryptoServer,
    key_admin_server::KeyAdminServer, password_shield_server::PasswordShieldServer,
    request_verification_server::RequestVerificationServer, system_server::SystemServer,
    tokenization_server::TokenizationServer,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::audit_layer::AuditLayer;
use crate::gate::Gate;
use crate::identity::{PeerInfo, subject_of};
use crate::limits::Limits;
use crate::services::Shared;
use crate::services::system::SystemService;

/// How the server runs, beyond the core's own settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub limits: Limits,
    /// How often the rotation scheduler and the destruction reaper look for due work.
    pub scheduler_interval: Duration,
    /// A TLS handshake slower than this is dropped, and so is a client that has not sent the
    /// HTTP/2 preface this long after it (slow clients cannot hold slots).
    pub handshake_timeout: Duration,
    /// A connection that sends nothing this long after it is accepted is dropped before any
    /// handshake (idle sockets cannot hold slots for the whole handshake timeout).
    pub first_byte_timeout: Duration,
    /// HTTP/2 PING interval on idle connections; a peer that does not answer within
    /// `handshake_timeout` is dropped (a client stalled mid-frame cannot answer).
    pub http2_keepalive: Duration,
    /// When the audit trail is checkpointed (signed).
    pub checkpoints: kms_core::audit::writer::CheckpointPolicy,
    /// When the oldest audit records move from the store to segment files, and where; `None`
    /// never archives (the store then grows by one record per request, forever).
    pub audit_archive: Option<ArchivePolicy>,
    /// How often the store's reachability is probed for the gRPC health service.
    pub health_interval: Duration,
    /// A plain (no TLS) loopback port that serves the gRPC health service alone, for a local
    /// orchestrator's probe; `None` for none. The API port answers health to registered
    /// principals only.
    pub health_probe: Option<std::net::SocketAddr>,
    /// Who may initialise or restore an empty KMS (`bootstrap.rs`); by default nobody.
    pub bootstrap: crate::bootstrap::Bootstrap,
    /// The client CRLs in force (`[tls] client_crl`), also checked by the TLCP listener, and
    /// re-read from their file every `crl_poll_interval`; `None` for no revocation checks.
    pub revocation: Option<Arc<crate::revocation::Revocation>>,
    pub crl_poll_interval: Duration,
    /// `[metrics]`: the Prometheus listener and the counters the server keeps for it
    /// (`metrics.rs`); `None` for none (the default).
    pub metrics: Option<crate::metrics::MetricsSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            scheduler_interval: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(3),
            http2_keepalive: Duration::from_secs(20),
            checkpoints: kms_core::audit::writer::CheckpointPolicy::default(),
            audit_archive: None,
            health_interval: Duration::from_secs(5),
            health_probe: None,
            bootstrap: crate::bootstrap::Bootstrap::default(),
            revocation: None,
            crl_poll_interval: Duration::from_secs(5),
            metrics: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot listen for health probes on {0}: {1}")]
    Probe(std::net::SocketAddr, io::Error),
    #[error("the health probe port must be on a loopback address (it has no TLS), not {0}")]
    ProbeNotLoopback(std::net::SocketAddr),
    #[error("cannot listen for metrics on {0}: {1}")]
    Metrics(std::net::SocketAddr, io::Error),
}

/// What a connection's bytes run over once authenticated: rustls (TLS 1.3/1.2, RFC 8998) or
/// TLCP (GB/T 38636); both end in the same HTTP/2 server, identity, authorisation and audit.
trait SecureStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> SecureStream for T {}

/// An accepted, authenticated connection. Holds its slot of the connection cap until dropped.
struct TlsConn {
    inner: Box<dyn SecureStream>,
    /// The HTTP/2 preface, read before the connection was handed over, replayed to hyper.
    preface: [u8; PREFACE.len()],
    replayed: usize,
    peer: PeerInfo,
    _slot: OwnedSemaphorePermit,
    /// Its place in its source address's count (`front_door`).
    _source: crate::front_door::SourceSlot,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.replayed < PREFACE.len() {
            let n = (PREFACE.len() - self.replayed).min(buf.remaining());
            let from = self.replayed;
            buf.put_slice(&self.preface[from..from + n]);
            self.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// What an HTTP/2 client sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a listener speaks: TLS (rustls: TLS 1.3/1.2, RFC 8998) or TLCP (GB/T 38636).
#[derive(Clone)]
enum Protocol {
    /// TLS and the CRLs its clients are checked against once more after the handshake (a
    /// resumed session presents no certificate to the verifier).
    Tls(TlsAcceptor, Option<Arc<crate::revocation::Revocation>>),
    /// TLCP and the CRLs its clients are checked against (its own verifier has none).
    Tlcp(
        Arc<kms_tlcp::TlcpServerConfig>,
        Option<Arc<crate::revocation::Revocation>>,
    ),
}

/// A connection past its handshake and the HTTP/2 preface: who it is and what it negotiated.
struct Secured {
    stream: Box<dyn SecureStream>,
    preface: [u8; PREFACE.len()],
    subject: Option<String>,
    /// The client's (signing) certificate as CRLs name it.
    cert_key: Option<crate::revocation::CertKey>,
    transport: String,
}

impl Protocol {
    fn name(&self) -> &'static str {
        match self {
            Self::Tls(..) => "TLS",
            Self::Tlcp(..) => "TLCP",
        }
    }

    /// The handshake (which verifies the client certificate), then the HTTP/2 preface: a client
    /// must get this far within the handshake timeout. The principal is the SAN URI or CN of
    /// the client's (signing) certificate.
    async fn secure(&self, tcp: TcpStream) -> io::Result<Secured> {
        match self {
            Self::Tls(acceptor, revocation) => {
                let mut tls = acceptor.accept(tcp).await?;
                if let Some(r) = revocation
                    && tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .is_some_and(|c| r.is_revoked(c))
                {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "the client certificate is revoked (a resumed session)",
                    ));
                }
                let preface = read_preface(&mut tls).await?;
                let session = tls.get_ref().1;
                let leaf = session.peer_certificates().and_then(|c| c.first());
                let subject = leaf.and_then(|c| subject_of(c));
                let cert_key = leaf.and_then(|c| crate::revocation::CertKey::of(c));
                let transport = crate::tls::describe(
                    session.protocol_version(),
                    session.negotiated_cipher_suite().map(|s| s.suite()),
                );
                Ok(Secured {
                    stream: Box::new(tls),
                    preface,
                    subject,
                    cert_key,
                    transport,
                })
            }
            Self::Tlcp(config, revocation) => {
                let mut tlcp = kms_tlcp::accept(Arc::clone(config), tcp)
                    .await
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                // After the handshake (the TLCP verifier knows no CRLs): a revoked signing or
                // encryption certificate gets the connection closed before any request.
                if let Some(r) = revocation
                    && tlcp
                        .peer_certificates()
                        .iter()
                        .take(2)
                        .any(|c| r.is_revoked(c))
                {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "the client certificate is revoked",
                    ));
                }
                let preface = read_preface(&mut tlcp).await?;
                let leaf = tlcp.peer_certificates().first();
                let subject = leaf.and_then(|c| subject_of(c));
                let cert_key = leaf.and_then(|c| crate::revocation::CertKey::of(c));
                let transport = format!("TLCP {}", tlcp.suite_name());
                Ok(Secured {
                    stream: Box::new(tlcp),
                    preface,
                    subject,
                    cert_key,
                    transport,
                })
            }
        }
    }
}

/// The HTTP/2 client preface, checked.
async fn read_preface(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<[u8; 24]> {
    use tokio::io::AsyncReadExt;
    let mut preface = [0u8; 24];
    stream.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not HTTP/2"));
    }
    Ok(preface)
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP, enforces the connection cap (shared by every listener), completes the handshake
/// of `protocol` and hands authenticated connections to tonic.
async fn accept_loop(
    listener: TcpListener,
    protocol: Protocol,
    settings: Settings,
    slots: Arc<Semaphore>,
    conns: mpsc::Sender<Result<TlsConn, io::Error>>,
    mut stop: watch::Receiver<bool>,
) {
    let name = protocol.name();
    let sources = crate::front_door::PerSource::default();
    let per_source_refusals = crate::front_door::Throttle::new(Duration::from_secs(1));
    let cap_refusals = crate::front_door::Throttle::new(Duration::from_secs(1));
    let per_source = settings.limits.max_connections_per_source.max(1);
    let metrics = settings.metrics.as_ref().map(|m| Arc::clone(&m.metrics));
    let refused = move |reason: crate::metrics::Refused| {
        if let Some(m) = &metrics {
            m.refused(reason);
        }
    };
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(protocol = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Some(source_slot) = sources.admit(remote.ip(), per_source) else {
            refused(crate::metrics::Refused::PerSourceLimit);
            if let Some(refused) = per_source_refusals.tick() {
                tracing::warn!(protocol = name, source = %remote.ip(), max = per_source, refused, "connections refused: at the per-source cap");
            }
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused(crate::metrics::Refused::ConnectionCap);
            if let Some(refused) = cap_refusals.tick() {
                tracing::warn!(protocol = name, %remote, max = settings.limits.max_connections, refused, "connections refused: at the connection cap");
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let protocol = protocol.clone();
        let conns = conns.clone();
        let timeout = settings.handshake_timeout;
        let first_byte = settings.first_byte_timeout;
        let refused = refused.clone();
        tokio::spawn(async move {
            // Nothing sent yet is not a handshake begun: the slot goes back quickly. (`peek`,
            // not `readable`, whose readiness may be reported before any byte has come.)
            let mut first = [0u8; 1];
            match tokio::time::timeout(first_byte, tcp.peek(&mut first)).await {
                Ok(Ok(1..)) => {}
                Err(_) => {
                    refused(crate::metrics::Refused::FirstByteDeadline);
                    tracing::debug!(protocol = name, %remote, "no first byte in time");
                    return;
                }
                Ok(_) => {
                    refused(crate::metrics::Refused::ClosedBeforeHandshake);
                    tracing::debug!(protocol = name, %remote, "closed before its first byte");
                    return;
                }
            }
            match tokio::time::timeout(timeout, protocol.secure(tcp)).await {
                Ok(Ok(secured)) => {
                    let peer = PeerInfo {
                        remote: Some(remote),
                        subject: secured.subject,
                        transport: Some(secured.transport),
                        denials: Arc::default(),
                        cert_key: secured.cert_key,
                    };
                    let _ = conns
                        .send(Ok(TlsConn {
                            inner: secured.stream,
                            preface: secured.preface,
                            replayed: 0,
                            peer,
                            _slot: slot,
                            _source: source_slot,
                        }))
                        .await;
                }
                Ok(Err(e)) => {
                    refused(if e.kind() == io::ErrorKind::PermissionDenied {
                        crate::metrics::Refused::Revoked
                    } else {
                        crate::metrics::Refused::HandshakeFailed
                    });
                    tracing::info!(protocol = name, %remote, error = %e, "handshake refused");
                }
                Err(_) => {
                    refused(crate::metrics::Refused::HandshakeTimeout);
                    tracing::info!(protocol = name, %remote, "handshake timed out");
                }
            }
        });
    }
}

/// The scheduler's audit records (issue 18: audit before effect): one intent record before each
/// key's rotation or destruction, refused (the key stays due) when the trail cannot take it, and
/// one outcome record after, failures included. Principal `kms-scheduler`, role `scheduler`.
/// A key's failed change also counts in `kms_scheduler_failures_total`.
struct SchedulerLog(Arc<AuditLog>, Option<Arc<crate::metrics::Metrics>>);

impl SchedulerLog {
    fn event(sweep: Sweep, key: KeyId) -> Event {
        Event {
            request_id: format!("scheduler-{key}"),
            principal: SCHEDULER_PRINCIPAL.to_owned(),
            role: AuditRole::Scheduler,
            operation: match sweep {
                Sweep::Rotation => Operation::ScheduledRotation,
                Sweep::Destruction => Operation::ScheduledDestruction,
                Sweep::ImportExpiry => Operation::ScheduledImportExpiry,
            },
            key_id: Some(key.to_string()),
            ..Event::default()
        }
    }
}

impl SweepLog for SchedulerLog {
    fn intent(&self, sweep: Sweep, key: KeyId) -> bool {
        let mut event = Self::event(sweep, key);
        event.flags = vec![Flag::Intent];
        match self.0.append_blocking(event) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(%key, error = %e, "scheduler intent not recorded; the key stays due");
                false
            }
        }
    }

    fn outcome(&self, sweep: Sweep, key: KeyId, outcome: SweepOutcome<'_>) {
        let mut event = Self::event(sweep, key);
        event.outcome = match &outcome {
            SweepOutcome::Done(version) => {
                event.key_version = *version;
                Outcome::Ok
            }
            SweepOutcome::NotDue => Outcome::Aborted,
            SweepOutcome::Failed(e) => {
                if let Some(m) = &self.1 {
                    m.scheduler_failed(sweep.into());
                }
                tracing::warn!(%key, ?sweep, error = %e, "scheduled change failed");
                crate::audit_layer::outcome(crate::status::code_of(e))
            }
        };
        if let Err(e) = self.0.append_blocking(event) {
            tracing::error!(%key, error = %e, "scheduler outcome not recorded");
        }
    }
}

/// The approval steps of dual control, into the audit trail (`kms-core/src/kms/approvals.rs`).
/// Weak: the trail's signer holds the KMS, which holds this.
struct ApprovalTrail(std::sync::Weak<AuditLog>);

impl kms_core::ApprovalLog for ApprovalTrail {
    fn append(&self, event: Event) -> bool {
        let Some(log) = self.0.upgrade() else {
            return false;
        };
        match log.append_blocking(event) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "an approval step was not recorded");
                false
            }
        }
    }
}

/// Rotates what is due, destroys what has waited long enough and deletes imported material
/// whose expiry has come, until told to stop.
async fn scheduler(
    owner: Arc<System>,
    audit: Arc<AuditLog>,
    every: Duration,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    mut stop: watch::Receiver<bool>,
) {
    use crate::metrics::SweepName;
    let failed = |sweep: SweepName| {
        if let Some(m) = &metrics {
            m.scheduler_failed(sweep);
        }
    };
    let changed = |sweep: SweepName, n: usize| {
        if let Some(m) = &metrics {
            m.scheduler_changed(sweep, n);
        }
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if owner.is_sealed() {
            continue;
        }
        if let Some(m) = &metrics {
            m.scheduler_ran();
        }
        let k = Arc::clone(&owner);
        let log = SchedulerLog(Arc::clone(&audit), metrics.clone());
        let done = tokio::task::spawn_blocking(move || {
            (
                k.expire_approvals(),
                k.rotate_due_logged(&log),
                k.destroy_due_logged(&log),
                k.expire_imports_due_logged(&log),
            )
        })
        .await;
        match done {
            Ok((approvals, rotated, destroyed, expired)) => {
                match approvals {
                    Ok(n) => changed(SweepName::ApprovalExpiry, n),
                    Err(e) => {
                        failed(SweepName::ApprovalExpiry);
                        tracing::warn!(error = %e, "expiring approval requests failed");
                    }
                }
                match expired {
                    Ok(d) => {
                        changed(SweepName::ImportExpiry, d.len());
                        if !d.is_empty() {
                            tracing::warn!(
                                keys = d.len(),
                                "imported key material expired and deleted"
                            );
                        }
                    }
                    Err(e) => {
                        failed(SweepName::ImportExpiry);
                        tracing::warn!(error = %e, "import expiry sweep failed");
                    }
                }
                match rotated {
                    Ok(r) => {
                        changed(SweepName::Rotation, r.len());
                        if !r.is_empty() {
                            tracing::info!(keys = r.len(), "scheduled rotations done");
                        }
                    }
                    Err(e) => {
                        failed(SweepName::Rotation);
                        tracing::warn!(error = %e, "rotation scheduler failed");
                    }
                }
                match destroyed {
                    Ok(d) => {
                        changed(SweepName::Destruction, d.len());
                        if !d.is_empty() {
                            tracing::warn!(
                                keys = d.len(),
                                "keys destroyed after their waiting period"
                            );
                        }
                    }
                    Err(e) => {
                        failed(SweepName::Destruction);
                        tracing::warn!(error = %e, "destruction reaper failed");
                    }
                }
            }
            Err(e) => {
                failed(SweepName::Task);
                tracing::error!(error = %e, "scheduler task failed");
            }
        }
    }
}

/// Keeps the gRPC health service in step with the store: NOT_SERVING while the store cannot be
/// reached (a networked database that is down), SERVING again as soon as it answers. Requests are
/// refused with UNAVAILABLE by the store error itself; this tells load balancers before they send.
async fn store_health(
    kms: Arc<Kms>,
    reporter: tonic_health::server::HealthReporter,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    let mut was_up = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let k = Arc::clone(&kms);
        let up = matches!(
            tokio::task::spawn_blocking(move || k.store_health()).await,
            Ok(Ok(_))
        );
        if up != was_up {
            if up {
                tracing::info!(store = kms.store().name(), "store reachable again; serving");
            } else {
                tracing::error!(
                    store = kms.store().name(),
                    "store unreachable; health NOT_SERVING"
                );
            }
            was_up = up;
        }
        let status = if up {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        for service in [
            "",
            <CryptoServer<Shared> as tonic::server::NamedService>::NAME,
            <KeyAdminServer<Shared> as tonic::server::NamedService>::NAME,
            <SystemServer<SystemService> as tonic::server::NamedService>::NAME,
            <AuditServer<Shared> as tonic::server::NamedService>::NAME,
            <PasswordShieldServer<Shared> as tonic::server::NamedService>::NAME,
            <RequestVerificationServer<Shared> as tonic::server::NamedService>::NAME,
        ] {
            reporter.set_service_status(service, status).await;
        }
    }
}

/// Logs what an archiver run did: segments at info, failures as errors (the store keeps growing
/// until archiving works again, and nothing is lost meanwhile).
fn report_archive(outcome: &Result<ArchiveOutcome, ArchiveError>) {
    match outcome {
        Ok(ArchiveOutcome::Archived(s)) => {
            tracing::info!(
                first = s.first,
                last = s.last,
                path = %s.path.display(),
                "audit records archived to a segment file"
            );
            if let Some(aside) = &s.superseded {
                tracing::warn!(
                    path = %s.path.display(),
                    kept_as = %aside.display(),
                    "a segment file of another chain was under this name (a restored store?); \
                     it was kept under another name"
                );
            }
        }
        Ok(ArchiveOutcome::LostRace) => {
            tracing::debug!("another node archived the same audit segment first");
        }
        Ok(
            ArchiveOutcome::UnderLimit { .. } | ArchiveOutcome::Disabled | ArchiveOutcome::Sealed,
        ) => {}
        Err(e) => tracing::error!(
            error = %e,
            "audit archiving failed; the records stay in the store and the next run retries"
        ),
    }
}

/// Starts the audit archiver beside the audit log, if archiving is on. A failure to start is
/// logged, not fatal: the trail is still written, only kept in the store.
fn start_archiver(audit: &AuditLog, policy: Option<&ArchivePolicy>) -> Option<Archiver> {
    let policy = policy?.clone();
    let dir = policy.dir.display().to_string();
    match audit.start_archiver(policy, Arc::new(report_archive)) {
        Ok(archiver) => {
            tracing::info!(dir, "audit archiver started");
            Some(archiver)
        }
        Err(e) => {
            tracing::error!(error = %e, "the audit archiver did not start; the trail stays in the store");
            None
        }
    }
}

/// Serves until `shutdown` completes: in-flight calls finish, then every key is wiped (sealed).
pub async fn run(
    listener: TcpListener,
    owner: Arc<System>,
    tls: Arc<rustls::ServerConfig>,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_with_tlcp(listener, None, owner, tls, settings, shutdown).await
}

/// A TLCP listener and its configuration, served beside the TLS port.
pub type TlcpListener = (TcpListener, Arc<kms_tlcp::TlcpServerConfig>);

/// As [`run`], with a TLCP listener too (when given): one connection cap, one service.
pub async fn run_with_tlcp(
    listener: TcpListener,
    tlcp: Option<TlcpListener>,
    owner: Arc<System>,
    tls: Arc<rustls::ServerConfig>,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Bound first, so that a bad probe address stops the start before anything runs.
    let probe_listener = match settings.health_probe {
        Some(addr) if addr.ip().is_loopback() => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::Probe(addr, e))?;
            tracing::info!(address = %addr, "gRPC health on a plain loopback port");
            Some(listener)
        }
        Some(addr) => return Err(ServeError::ProbeNotLoopback(addr)),
        None => None,
    };
    let metrics_listener = match &settings.metrics {
        Some(m) => {
            let listener = TcpListener::bind(m.listen)
                .await
                .map_err(|e| ServeError::Metrics(m.listen, e))?;
            let access = crate::metrics::Access::for_address(
                m.listen,
                &tls,
                settings.revocation.clone(),
                settings.handshake_timeout,
            );
            let address = listener.local_addr().unwrap_or(m.listen);
            match &access {
                crate::metrics::Access::Loopback => {
                    tracing::info!(%address, "serving metrics over plain HTTP on loopback");
                }
                crate::metrics::Access::Auditors { .. } => tracing::info!(
                    %address,
                    "serving metrics over mutual TLS, to registered auditors"
                ),
            }
            Some((listener, access, Arc::clone(&m.metrics), m.keys_refresh))
        }
        None => None,
    };
    let metrics = settings.metrics.as_ref().map(|m| Arc::clone(&m.metrics));
    let kms = Arc::clone(owner.kms());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (conn_tx, conn_rx) = mpsc::channel(128);
    let slots = Arc::new(Semaphore::new(settings.limits.max_connections));
    let api_slots = Arc::clone(&slots);
    let tlcp_accept = tlcp.map(|(listener, config)| {
        tokio::spawn(accept_loop(
            listener,
            Protocol::Tlcp(config, settings.revocation.clone()),
            settings.clone(),
            Arc::clone(&slots),
            conn_tx.clone(),
            stop_rx.clone(),
        ))
    });
    let accept = tokio::spawn(accept_loop(
        listener,
        Protocol::Tls(TlsAcceptor::from(tls), settings.revocation.clone()),
        settings.clone(),
        slots,
        conn_tx,
        stop_rx.clone(),
    ));
    let ids = crate::services::RequestIds::new();
    let audit = Arc::new(AuditLog::start(
        Arc::clone(kms.store()),
        ids.node(),
        owner.audit_signer(),
        settings.checkpoints,
    ));
    owner.set_approval_log(Arc::new(ApprovalTrail(Arc::downgrade(&audit))));
    let archiver = start_archiver(&audit, settings.audit_archive.as_ref());
    let sched = tokio::spawn(scheduler(
        Arc::clone(&owner),
        Arc::clone(&audit),
        settings.scheduler_interval,
        metrics.clone(),
        stop_rx.clone(),
    ));
    let metrics_serve = metrics_listener.map(|(listener, access, counters, keys_refresh)| {
        let scrape = crate::metrics::Scrape {
            metrics: counters,
            owner: Arc::clone(&owner),
            audit: Arc::clone(&audit),
            slots: api_slots,
            max_connections: settings.limits.max_connections,
            keys_refresh,
            keys: tokio::sync::Mutex::new(None),
            key_errors: crate::front_door::Throttle::new(Duration::from_secs(60)),
        };
        tokio::spawn(crate::metrics::serve(
            listener,
            access,
            Arc::new(scrape),
            stop_rx.clone(),
        ))
    });
    let mut shared = Shared::new(Arc::clone(&kms), settings.limits, ids.clone());
    shared.audit = Some(Arc::clone(&audit));
    let max = settings.limits.max_message_bytes();
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<CryptoServer<Shared>>().await;
    health_reporter
        .set_serving::<KeyAdminServer<Shared>>()
        .await;
    health_reporter
        .set_serving::<SystemServer<SystemService>>()
        .await;
    health_reporter.set_serving::<AuditServer<Shared>>().await;
    health_reporter
        .set_serving::<PasswordShieldServer<Shared>>()
        .await;
    health_reporter
        .set_serving::<RequestVerificationServer<Shared>>()
        .await;
    let health_watch = tokio::spawn(store_health(
        Arc::clone(&kms),
        health_reporter.clone(),
        settings.health_interval,
        stop_rx.clone(),
    ));
    let probe = probe_listener.map(|listener| {
        let mut stop = stop_rx.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async move {
                        let _ = stop.changed().await;
                    },
                )
                .await;
        })
    });
    let crl_watch = settings
        .revocation
        .clone()
        .map(|r| tokio::spawn(r.watch(settings.crl_poll_interval, stop_rx.clone())));
    // Both reflection versions: grpcurl before 1.8.8, Python's grpcio-reflection and several
    // GUI clients speak only v1alpha. The gate admits either to registered principals only.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(kms_proto::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().ok();
    let reflection_v1alpha = reflection().build_v1alpha().ok();

    let stop_all = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let mut router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(settings.http2_keepalive))
        // Each connection's concurrent requests are bounded, so one peer cannot hold thousands
        // of stalled streams (and their buffers) open.
        .max_concurrent_streams(Some(settings.limits.max_streams_per_connection.max(1)))
        .http2_keepalive_timeout(Some(settings.handshake_timeout))
        .layer(
            AuditLayer::new(Arc::clone(&audit), ids)
                .with_gate(
                    Gate::new(Arc::clone(&kms), shared.rate_limiter())
                        .bootstrapped_by(Arc::clone(&owner))
                        .revoked_by(settings.revocation.clone()),
                )
                .with_metrics(metrics),
        )
        .add_service(health)
        .add_service(AuditServer::new(shared.clone()).max_decoding_message_size(max))
        .add_service(CryptoServer::new(shared.clone()).max_decoding_message_size(max))
        // Batches have a larger message limit of their own; the single calls keep theirs.
        .add_service(
            CryptoBatchServer::new(shared.clone())
                .max_decoding_message_size(settings.limits.max_batch_message_bytes()),
        )
        // Tokens come many per call: the batch limit applies (`services/tokenize.rs`).
        .add_service(
            TokenizationServer::new(shared.clone())
                .max_decoding_message_size(settings.limits.max_batch_message_bytes()),
        )
        .add_service(KeyAdminServer::new(shared.clone()).max_decoding_message_size(max))
        .add_service(PasswordShieldServer::new(shared.clone()).max_decoding_message_size(max))
        .add_service(RequestVerificationServer::new(shared.clone()).max_decoding_message_size(max))
        .add_service(
            SystemServer::new(SystemService::new(
                shared,
                Arc::clone(&owner),
                settings.bootstrap.clone(),
            ))
            .max_decoding_message_size(max),
        );
    if let Some(r) = reflection_v1 {
        router = router.add_service(r);
    }
    if let Some(r) = reflection_v1alpha {
        router = router.add_service(r);
    }
    let served = router
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), stop_all)
        .await;
    accept.abort();
    if let Some(t) = tlcp_accept {
        t.abort();
    }
    sched.abort();
    health_watch.abort();
    if let Some(t) = crl_watch {
        t.abort();
    }
    if let Some(p) = probe {
        p.abort();
    }
    if let Some(m) = metrics_serve {
        m.abort();
    }
    // The archiver first (it finishes the segment it may be writing), then a last signed
    // checkpoint over the trail, then wipe every key.
    let log = Arc::clone(&audit);
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(archiver) = archiver {
            archiver.stop();
        }
        log.stop();
    })
    .await;
    owner.seal_now();
    tracing::info!("server stopped; keys wiped");
    served.map_err(ServeError::from)
}

/// The transport floor of the benchmarks (issue 20 item 4): the same accept loop (front door,
/// handshake timeout, rustls configuration as given) and the same HTTP/2 settings as [`run`],
/// serving only `Crypto/Encrypt` as an echo of the plaintext — no key, no crypto, no audit, no
/// gate. `bench/run.py` loads it with the same tool as the KMS, so a KMS row divided by this
/// one is what the KMS itself costs on top of TLS, HTTP/2, tonic and the syscalls.
///
/// # Errors
/// When the listener's address cannot be read.
pub async fn run_floor(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (conn_tx, conn_rx) = mpsc::channel(128);
    let slots = Arc::new(Semaphore::new(settings.limits.max_connections));
    let accept = tokio::spawn(accept_loop(
        listener,
        Protocol::Tls(TlsAcceptor::from(tls), None),
        settings.clone(),
        slots,
        conn_tx,
        stop_rx,
    ));
    let stop_all = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let max = settings.limits.max_message_bytes();
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(settings.http2_keepalive))
        .max_concurrent_streams(Some(settings.limits.max_streams_per_connection.max(1)))
        .http2_keepalive_timeout(Some(settings.handshake_timeout))
        .add_service(CryptoServer::new(floor::Echo).max_decoding_message_size(max))
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), stop_all)
        .await;
    accept.abort();
    served.map_err(ServeError::from)
}

mod floor {
    //! The floor's one service: Encrypt answers with its plaintext; the rest is UNIMPLEMENTED.

    use kms_proto::v1::{self, crypto_server::Crypto};
    use tonic::{Request, Response, Status};

    pub(super) struct Echo;

    fn none<T>() -> Result<Response<T>, Status> {
        Err(crate::status::not_in_the_floor())
    }

    #[tonic::async_trait]
    impl Crypto for Echo {
        async fn encrypt(
            &self,
            req: Request<v1::EncryptRequest>,
        ) -> Result<Response<v1::EncryptResponse>, Status> {
            let m = req.into_inner();
            Ok(Response::new(v1::EncryptResponse {
                ciphertext: m.plaintext,
                key_id: m.key,
                key_version: 1,
            }))
        }
        async fn decrypt(
            &self,
            _: Request<v1::DecryptRequest>,
        ) -> Result<Response<v1::DecryptResponse>, Status> {
            none()
        }
        async fn re_encrypt(
            &self,
            _: Request<v1::ReEncryptRequest>,
        ) -> Result<Response<v1::ReEncryptResponse>, Status> {
            none()
        }
        async fn generate_data_key(
            &self,
            _: Request<v1::GenerateDataKeyRequest>,
        ) -> Result<Response<v1::GenerateDataKeyResponse>, Status> {
            none()
        }
        async fn generate_data_key_without_plaintext(
            &self,
            _: Request<v1::GenerateDataKeyRequest>,
        ) -> Result<Response<v1::GenerateDataKeyResponse>, Status> {
            none()
        }
        async fn sign(
            &self,
            _: Request<v1::SignRequest>,
        ) -> Result<Response<v1::SignResponse>, Status> {
            none()
        }
        async fn verify(
            &self,
            _: Request<v1::VerifyRequest>,
        ) -> Result<Response<v1::VerifyResponse>, Status> {
            none()
        }
        async fn asymmetric_decrypt(
            &self,
            _: Request<v1::AsymmetricDecryptRequest>,
        ) -> Result<Response<v1::AsymmetricDecryptResponse>, Status> {
            none()
        }
        async fn get_public_key(
            &self,
            _: Request<v1::GetPublicKeyRequest>,
        ) -> Result<Response<v1::GetPublicKeyResponse>, Status> {
            none()
        }
        async fn generate_mac(
            &self,
            _: Request<v1::GenerateMacRequest>,
        ) -> Result<Response<v1::GenerateMacResponse>, Status> {
            none()
        }
        async fn verify_mac(
            &self,
            _: Request<v1::VerifyMacRequest>,
        ) -> Result<Response<v1::VerifyMacResponse>, Status> {
            none()
        }
        async fn generate_random(
            &self,
            _: Request<v1::GenerateRandomRequest>,
        ) -> Result<Response<v1::GenerateRandomResponse>, Status> {
            none()
        }
    }
}
