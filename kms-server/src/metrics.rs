//! Prometheus metrics (issue 21 item 4): the text exposition format (version 0.0.4) on a
//! listener of its own, `[metrics] listen`, off by default.
//!
//! - **Where the numbers come from.** [`Metrics`] holds what the server counts as it goes: the
//!   audit layer (`audit_layer.rs`) sees every RPC, its gRPC code and how long it took, and the
//!   gate's refusals; the accept loop (`server.rs`) sees the connections refused before a
//!   request; the scheduler counts its runs and failures; [`TimedStore`] times every store call.
//!   What the core knows (the key cache, the audit queue, keys by state and overdue) is read
//!   from its plain getters at scrape time ([`Scrape`]); the core has no metrics library.
//! - **Labels are fixed words only**: RPC names (`Crypto/Encrypt`; a path the server has no
//!   method for is `other`, so a caller cannot mint series), gRPC code names, key states, store
//!   operations, sweeps and refusal reasons. Never a key id, alias, namespace, principal or
//!   anything from a certificate (`metrics_move_with_real_calls_name_no_key_or_principal_and_
//!   pass_promtool` in `tests/tests/hardening/metrics.rs` searches the whole exposition).
//! - **Who may read them.** On a loopback address the listener speaks plain HTTP (whoever can
//!   reach loopback is on the host already, like the health probe port). On any other address
//!   it speaks HTTPS with the API port's certificate, client CAs, CRLs and policy, and answers
//!   only a client certificate whose subject is a registered principal with role `auditor`
//!   (checked on every request, so removing the principal takes effect at once); others get
//!   403. Metrics reveal load and key counts, not secrets, but an outsider should learn neither.
//! - **Bounded cost.** Keys by state need a scan of every key record: done at most once every
//!   `[metrics] keys_refresh_seconds` (default 30), however often it is scraped. At most
//!   [`MAX_CONNECTIONS`] scrape connections are open at once, and a request's head must arrive
//!   within the handshake timeout (10 s on loopback).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_core::audit::Operation;
use kms_core::audit::writer::AuditLog;
use kms_core::authz::Role;
use kms_core::store::{Batch, Entry, Store, StoreError, Tree};
use kms_core::{KeyCounts, System};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Scrape connections open at once; a Prometheus server needs one.
pub const MAX_CONNECTIONS: usize = 16;

/// The path the metrics are served at.
pub const PATH: &str = "/metrics";

/// Request latency buckets, in seconds: 0.5 ms (a cached symmetric call) to 10 s.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Store call buckets, in seconds: 50 µs (an embedded read) to 5 s (the PostgreSQL timeout).
const STORE_BUCKETS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    5.0,
];

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCode {
    rpc: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SweepLabel {
    sweep: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Why a connection was dropped before it made a request (`server.rs`, `accept_loop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its source address had `max_connections_per_source` open already.
    PerSourceLimit,
    /// `max_connections` were open already.
    ConnectionCap,
    /// Nothing came within the first-byte deadline.
    FirstByteDeadline,
    /// Closed (or failed) before sending a byte.
    ClosedBeforeHandshake,
    /// The TLS or TLCP handshake, or the HTTP/2 preface, failed.
    HandshakeFailed,
    /// The handshake and preface did not finish within the handshake timeout.
    HandshakeTimeout,
    /// The client certificate is revoked, found after the handshake (a resumed TLS session, or
    /// TLCP, whose verifier knows no CRLs); a full TLS handshake that the CRL verifier refuses
    /// is a [`Refused::HandshakeFailed`].
    Revoked,
}

impl Refused {
    /// Every reason, so each series exists from the start (at zero).
    pub const ALL: [Self; 7] = [
        Self::PerSourceLimit,
        Self::ConnectionCap,
        Self::FirstByteDeadline,
        Self::ClosedBeforeHandshake,
        Self::HandshakeFailed,
        Self::HandshakeTimeout,
        Self::Revoked,
    ];

    /// The label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PerSourceLimit => "per_source_limit",
            Self::ConnectionCap => "connection_cap",
            Self::FirstByteDeadline => "first_byte_deadline",
            Self::ClosedBeforeHandshake => "closed_before_handshake",
            Self::HandshakeFailed => "handshake_failed",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Revoked => "revoked",
        }
    }
}

/// The scheduler's sweeps, as its metrics name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepName {
    Rotation,
    Destruction,
    ImportExpiry,
    ApprovalExpiry,
    /// The run's task itself failed (panicked or was cancelled).
    Task,
}

impl SweepName {
    pub const ALL: [Self; 5] = [
        Self::Rotation,
        Self::Destruction,
        Self::ImportExpiry,
        Self::ApprovalExpiry,
        Self::Task,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rotation => "rotation",
            Self::Destruction => "destruction",
            Self::ImportExpiry => "import_expiry",
            Self::ApprovalExpiry => "approval_expiry",
            Self::Task => "task",
        }
    }
}

impl From<kms_core::Sweep> for SweepName {
    fn from(s: kms_core::Sweep) -> Self {
        match s {
            kms_core::Sweep::Rotation => Self::Rotation,
            kms_core::Sweep::Destruction => Self::Destruction,
            kms_core::Sweep::ImportExpiry => Self::ImportExpiry,
        }
    }
}

/// The gRPC code's canonical name (as in the gRPC spec's status code table).
#[must_use]
pub const fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Paths served beside `kms.v1` that keep their own name.
const OTHER_METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The `rpc` label of a request path: `Service/Method` for the KMS's own methods (as the audit
/// trail names them), the full name for health and reflection, `other` for anything else, so
/// that the paths a caller makes up never become series.
#[must_use]
pub fn rpc_label(path: &str) -> String {
    let op = Operation::from_path(path);
    if op.is_known() {
        return op.as_str().to_owned();
    }
    if OTHER_METHODS.contains(&path) {
        return path.trim_start_matches('/').to_owned();
    }
    "other".to_owned()
}

/// What the server counts as it runs. One per server; shared by the audit layer, the accept
/// loops, the scheduler and the store wrapper.
pub struct Metrics {
    registry: Registry,
    requests: Family<RpcCode, Counter>,
    request_duration: HistogramFamily<Rpc>,
    in_flight: Gauge,
    connections_refused: Family<Reason, Counter>,
    gate_refusals: Family<Reason, Counter>,
    store_duration: HistogramFamily<Op>,
    audit_write_duration: Histogram,
    scheduler_runs: Counter,
    scheduler_failures: Family<SweepLabel, Counter>,
    scheduler_changes: Family<SweepLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

/// The gate's refusal reasons (`gate::denial_reason`), listed so each series starts at zero.
const GATE_REASONS: [&str; 5] = [
    "no_subject",
    "revoked",
    "unregistered",
    "rate_limited",
    "bootstrap_closed",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kms");
        let requests = Family::<RpcCode, Counter>::default();
        registry.register(
            "requests",
            "RPCs answered, by method and gRPC status code (a stream counts when its response starts)",
            requests.clone(),
        );
        let request_duration: HistogramFamily<Rpc> =
            Family::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response, its audit record durable, by method",
            Unit::Seconds,
            request_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "RPCs being handled now",
            in_flight.clone(),
        );
        // Every reason's series exists from the start, at zero: a series that appears only
        // with its first event reads as missing data until then.
        let connections_refused = Family::<Reason, Counter>::default();
        for r in Refused::ALL {
            let _ = connections_refused.get_or_create(&Reason { reason: r.as_str() });
        }
        registry.register(
            "connections_refused",
            "Connections dropped before any request, by reason",
            connections_refused.clone(),
        );
        let gate_refusals = Family::<Reason, Counter>::default();
        for reason in GATE_REASONS {
            let _ = gate_refusals.get_or_create(&Reason { reason });
        }
        registry.register(
            "gate_refusals",
            "Requests refused at the gate on their certificate alone, before their body is read, by reason",
            gate_refusals.clone(),
        );
        let store_duration: HistogramFamily<Op> = Family::new_with_constructor(store_histogram);
        registry.register_with_unit(
            "store_operation_duration",
            "Time of each call to the store, by operation",
            Unit::Seconds,
            store_duration.clone(),
        );
        let audit_write_duration = request_histogram();
        registry.register_with_unit(
            "audit_write_duration",
            "Time from handing an RPC's audit record to the writer to it being durable (queue and group commit)",
            Unit::Seconds,
            audit_write_duration.clone(),
        );
        let scheduler_runs = Counter::default();
        registry.register(
            "scheduler_runs",
            "Runs of the scheduler (rotation, destruction, import expiry, approval expiry) while unsealed",
            scheduler_runs.clone(),
        );
        let scheduler_failures = Family::<SweepLabel, Counter>::default();
        let scheduler_changes = Family::<SweepLabel, Counter>::default();
        for s in SweepName::ALL {
            let label = SweepLabel { sweep: s.as_str() };
            let _ = scheduler_failures.get_or_create(&label);
            if s != SweepName::Task {
                let _ = scheduler_changes.get_or_create(&label);
            }
        }
        registry.register(
            "scheduler_failures",
            "Scheduler sweeps that failed, and scheduled changes to one key that failed, by sweep",
            scheduler_failures.clone(),
        );
        registry.register(
            "scheduler_changes",
            "Keys the scheduler rotated, destroyed or expired, and approval requests it expired, by sweep",
            scheduler_changes.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            in_flight,
            connections_refused,
            gate_refusals,
            store_duration,
            audit_write_duration,
            scheduler_runs,
            scheduler_failures,
            scheduler_changes,
        }
    }

    /// A request has arrived; the guard counts it as answered (with the code it is given, or
    /// CANCELLED if it is dropped first) when it goes.
    #[must_use]
    pub fn request(self: &Arc<Self>, path: &str) -> InFlight {
        self.in_flight.inc();
        InFlight {
            metrics: Arc::clone(self),
            rpc: rpc_label(path),
            started: Instant::now(),
            code: None,
        }
    }

    pub fn refused(&self, reason: Refused) {
        self.connections_refused
            .get_or_create(&Reason {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A gate refusal (`gate::denial_reason`).
    pub fn gate_refused(&self, reason: &'static str) {
        self.gate_refusals.get_or_create(&Reason { reason }).inc();
    }

    pub fn audit_written(&self, took: Duration) {
        self.audit_write_duration.observe(took.as_secs_f64());
    }

    pub fn scheduler_ran(&self) {
        self.scheduler_runs.inc();
    }

    pub fn scheduler_failed(&self, sweep: SweepName) {
        self.scheduler_failures
            .get_or_create(&SweepLabel {
                sweep: sweep.as_str(),
            })
            .inc();
    }

    pub fn scheduler_changed(&self, sweep: SweepName, n: usize) {
        self.scheduler_changes
            .get_or_create(&SweepLabel {
                sweep: sweep.as_str(),
            })
            .inc_by(n as u64);
    }

    fn store_call(&self, op: &'static str, took: Duration) {
        self.store_duration
            .get_or_create(&Op { op })
            .observe(took.as_secs_f64());
    }

    /// `store`, with every call timed into `kms_store_operation_duration_seconds`.
    #[must_use]
    pub fn timed_store(self: &Arc<Self>, store: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(TimedStore {
            inner: store,
            metrics: Arc::clone(self),
        })
    }
}

/// One request being handled (see [`Metrics::request`]).
pub struct InFlight {
    metrics: Arc<Metrics>,
    rpc: String,
    started: Instant,
    code: Option<tonic::Code>,
}

impl InFlight {
    /// The code the request was answered with.
    pub fn answered(&mut self, code: tonic::Code) {
        self.code = Some(code);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let m = &self.metrics;
        m.in_flight.dec();
        let code = code_name(self.code.unwrap_or(tonic::Code::Cancelled));
        let rpc = std::mem::take(&mut self.rpc);
        m.request_duration
            .get_or_create(&Rpc { rpc: rpc.clone() })
            .observe(self.started.elapsed().as_secs_f64());
        m.requests.get_or_create(&RpcCode { rpc, code }).inc();
    }
}

/// A store that times every call (`[metrics]` on). Forwards everything, the provided methods
/// included, so the backend's own `scan_range`, locality and health stay in force.
struct TimedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    fn timed<T>(&self, op: &'static str, f: impl FnOnce(&dyn Store) -> T) -> T {
        let started = Instant::now();
        let out = f(&*self.inner);
        self.metrics.store_call(op, started.elapsed());
        out
    }
}

impl Store for TimedStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed("get", |s| s.get(tree, key))
    }
    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.timed("scan", |s| s.scan_prefix(tree, prefix))
    }
    fn scan_range(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.timed("scan", |s| s.scan_range(tree, from, to, limit))
    }
    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        self.timed("apply", |s| s.apply(batch))
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.timed("flush", Store::flush)
    }
    fn reads_are_local(&self) -> bool {
        self.inner.reads_are_local()
    }
    fn health(&self) -> Result<(), StoreError> {
        self.timed("health", Store::health)
    }
}

/// `[metrics]` in force: where to listen, how often keys are counted, and the counters.
#[derive(Clone, Debug)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
    /// The key counts are recomputed at most this often (0: at every scrape).
    pub keys_refresh: Duration,
    pub metrics: Arc<Metrics>,
}

/// What a scrape reads besides the counters: the core's getters and the connection slots.
pub(crate) struct Scrape {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) owner: Arc<System>,
    pub(crate) audit: Arc<AuditLog>,
    /// The API's connection slots (`Limits::max_connections` of them) and their number.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) max_connections: usize,
    pub(crate) keys_refresh: Duration,
    /// The last key counts and when they were made; one scrape at a time recomputes them.
    pub(crate) keys: tokio::sync::Mutex<Option<(Instant, KeyCounts)>>,
    pub(crate) key_errors: crate::front_door::Throttle,
}

/// What changes between scrapes, read at each.
struct Live {
    initialized: Option<bool>,
    sealed: bool,
    keys: Option<KeyCounts>,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn to_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl Scrape {
    /// The key counts, recomputed when older than `keys_refresh`; on a store error the last
    /// ones (or none), and a warning at most once a minute.
    async fn key_counts(&self) -> Option<KeyCounts> {
        let mut cached = self.keys.lock().await;
        if let Some((at, counts)) = cached.as_ref()
            && at.elapsed() < self.keys_refresh
        {
            return Some(counts.clone());
        }
        let owner = Arc::clone(&self.owner);
        match tokio::task::spawn_blocking(move || owner.key_counts()).await {
            Ok(Ok(counts)) => {
                *cached = Some((Instant::now(), counts.clone()));
                Some(counts)
            }
            Ok(Err(e)) => {
                if self.key_errors.tick().is_some() {
                    tracing::warn!(error = %e, "metrics: keys could not be counted");
                }
                cached.as_ref().map(|(_, c)| c.clone())
            }
            Err(_) => cached.as_ref().map(|(_, c)| c.clone()),
        }
    }

    async fn live(&self) -> Live {
        let owner = Arc::clone(&self.owner);
        let initialized = tokio::task::spawn_blocking(move || owner.status())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|s| s.initialized);
        Live {
            initialized,
            sealed: self.owner.is_sealed(),
            keys: self.key_counts().await,
        }
    }

    /// The exposition: the counters, then what was read now.
    pub(crate) async fn render(&self) -> Result<String, std::fmt::Error> {
        let live = self.live().await;
        let mut now = Registry::with_prefix("kms");
        gauge(
            &mut now,
            "sealed",
            "1 while the KMS is sealed (no key can be used), 0 once unsealed",
            i64::from(live.sealed),
        );
        if let Some(i) = live.initialized {
            gauge(
                &mut now,
                "initialized",
                "1 once the KMS has been initialised",
                i64::from(i),
            );
        }
        gauge(
            &mut now,
            "audit_queue_depth",
            "Audit records handed to the writer and not yet durable",
            to_i64(self.audit.queue_depth()),
        );
        gauge(
            &mut now,
            "audit_healthy",
            "1 while the audit trail can be written; 0 means operations are refused",
            i64::from(self.audit.healthy()),
        );
        let cache = self.owner.cache_stats();
        counter(
            &mut now,
            "key_cache_hits",
            "Key version lookups answered from the unwrapped-key cache",
            cache.hits,
        );
        counter(
            &mut now,
            "key_cache_misses",
            "Key version lookups that unwrapped under the KEK (every lookup with the cache off)",
            cache.misses,
        );
        gauge(
            &mut now,
            "key_cache_entries",
            "Unwrapped key versions held in the cache now",
            to_i64(cache.entries),
        );
        gauge(
            &mut now,
            "connections_open",
            "Connections holding a slot of the connection cap (TLS and TLCP)",
            to_i64(
                self.max_connections
                    .saturating_sub(self.slots.available_permits()),
            ),
        );
        if let Some(keys) = live.keys {
            let by_state = Family::<State, Gauge>::default();
            for (state, n) in &keys.by_state {
                by_state
                    .get_or_create(&State {
                        state: state.name().to_ascii_lowercase(),
                    })
                    .set(to_i64(*n));
            }
            now.register("keys", "Keys by state", by_state);
            gauge(
                &mut now,
                "keys_overdue_for_rotation",
                "Enabled keys whose scheduled rotation has come (the scheduler's next run rotates them)",
                to_i64(keys.overdue_for_rotation),
            );
        }
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.metrics.registry)?;
        prometheus_client::encoding::prometheus_text::encode(&mut out, &now)?;
        Ok(out)
    }
}

/// How a scrape connection is secured: plain on loopback, else mutual TLS and an auditor.
pub(crate) enum Access {
    Loopback,
    Auditors {
        tls: tokio_rustls::TlsAcceptor,
        revocation: Option<Arc<crate::revocation::Revocation>>,
        handshake_timeout: Duration,
    },
}

impl Access {
    /// For a listener on `addr`: plain on loopback, else the API port's TLS configuration
    /// speaking HTTP/1.1 (ALPN), with a session cache of its own.
    pub(crate) fn for_address(
        addr: SocketAddr,
        api: &rustls::ServerConfig,
        revocation: Option<Arc<crate::revocation::Revocation>>,
        handshake_timeout: Duration,
    ) -> Self {
        if addr.ip().is_loopback() {
            return Self::Loopback;
        }
        let mut config = api.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(64);
        Self::Auditors {
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            revocation,
            handshake_timeout,
        }
    }
}

type Response = http::Response<String>;

fn text(status: http::StatusCode, body: impl Into<String>) -> Response {
    let mut r = http::Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Who is scraping over TLS: the client certificate's subject (`None`: it names nothing).
#[derive(Clone)]
struct Scraper {
    subject: Option<String>,
}

/// Whether `who` may read the metrics: on loopback anyone; over TLS a registered auditor.
async fn allowed(scrape: &Scrape, who: Option<&Scraper>) -> Result<(), Response> {
    let Some(who) = who else {
        return Ok(());
    };
    let denied = || {
        text(
            http::StatusCode::FORBIDDEN,
            "the metrics are for the certificate of a registered principal with role auditor\n",
        )
    };
    let Some(subject) = who.subject.clone() else {
        return Err(denied());
    };
    let kms = Arc::clone(scrape.owner.kms());
    match tokio::task::spawn_blocking(move || kms.principal(&subject)).await {
        Ok(Ok(Some(p))) if p.role == Role::Auditor => Ok(()),
        Ok(Ok(_)) => Err(denied()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the scraper's principal could not be read");
            Err(text(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read to check the certificate\n",
            ))
        }
        Err(_) => Err(text(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "the check did not finish\n",
        )),
    }
}

async fn answer(
    scrape: Arc<Scrape>,
    who: Option<Scraper>,
    req: http::Request<hyper::body::Incoming>,
) -> Response {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return text(http::StatusCode::METHOD_NOT_ALLOWED, "GET /metrics only\n");
    }
    if req.uri().path() != PATH {
        return text(
            http::StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if let Err(refused) = allowed(&scrape, who.as_ref()).await {
        return refused;
    }
    match scrape.render().await {
        Ok(body) => {
            let mut r = text(http::StatusCode::OK, body);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            );
            r
        }
        Err(_) => text(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n",
        ),
    }
}

/// Serves one connection's HTTP/1.1 requests.
async fn serve_connection<S>(scrape: Arc<Scrape>, who: Option<Scraper>, io: S, timeout: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let scrape = Arc::clone(&scrape);
        let who = who.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(scrape, who, req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "metrics connection ended with an error");
    }
}

/// Accepts scrape connections until `stop` changes.
pub(crate) async fn serve(
    listener: TcpListener,
    access: Access,
    scrape: Arc<Scrape>,
    mut stop: watch::Receiver<bool>,
) {
    let access = Arc::new(access);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let full = crate::front_door::Throttle::new(Duration::from_secs(1));
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if let Some(refused) = full.tick() {
                tracing::warn!(%remote, max = MAX_CONNECTIONS, refused, "metrics: connections refused at the cap");
            }
            continue;
        };
        let scrape = Arc::clone(&scrape);
        let access = Arc::clone(&access);
        tokio::spawn(async move {
            let _slot = slot;
            match &*access {
                Access::Loopback => {
                    serve_connection(scrape, None, tcp, Duration::from_secs(10)).await;
                }
                Access::Auditors {
                    tls,
                    revocation,
                    handshake_timeout,
                } => {
                    let accepted = tokio::time::timeout(*handshake_timeout, tls.accept(tcp)).await;
                    let stream = match accepted {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(%remote, error = %e, "metrics: handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%remote, "metrics: handshake timed out");
                            return;
                        }
                    };
                    let leaf = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .cloned();
                    // A resumed session presents no certificate to the verifier: check again.
                    if let (Some(r), Some(c)) = (revocation, &leaf)
                        && r.is_revoked(c)
                    {
                        tracing::info!(%remote, "metrics: a revoked client certificate (resumed session)");
                        return;
                    }
                    let who = Scraper {
                        subject: leaf.and_then(|c| crate::identity::subject_of(&c)),
                    };
                    serve_connection(scrape, Some(who), stream, *handshake_timeout).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Only the KMS's methods and the health and reflection methods name their series;
    /// anything a caller makes up is `other`.
    #[test]
    fn rpc_labels_are_fixed_words() {
        assert_eq!(rpc_label("/kms.v1.Crypto/Encrypt"), "Crypto/Encrypt");
        assert_eq!(
            rpc_label("/kms.v1.CryptoBatch/BatchSign"),
            "CryptoBatch/BatchSign"
        );
        assert_eq!(
            rpc_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        for made_up in [
            "/kms.v1.Crypto/Encrypt2",
            "/kms.v1.Scheduler/RotateKey",
            "/grpc.health.v1.Health/Anything",
            "/payments-key-1234",
            "",
        ] {
            assert_eq!(rpc_label(made_up), "other", "{made_up}");
        }
    }

    /// Every code has its gRPC name, and the request guard counts what it is told, or
    /// CANCELLED when dropped unanswered.
    #[test]
    fn requests_are_counted_with_their_code_and_time() {
        let m = Arc::new(Metrics::new());
        let mut r = m.request("/kms.v1.Crypto/Encrypt");
        assert_eq!(m.in_flight.get(), 1);
        r.answered(tonic::Code::NotFound);
        drop(r);
        drop(m.request("/kms.v1.Crypto/Decrypt"));
        assert_eq!(m.in_flight.get(), 0);
        let count = |rpc: &str, code| {
            m.requests
                .get_or_create(&RpcCode {
                    rpc: rpc.into(),
                    code,
                })
                .get()
        };
        assert_eq!(count("Crypto/Encrypt", "NOT_FOUND"), 1);
        assert_eq!(count("Crypto/Decrypt", "CANCELLED"), 1);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains("kms_requests_total{rpc=\"Crypto/Encrypt\",code=\"NOT_FOUND\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("kms_request_duration_seconds_count{rpc=\"Crypto/Encrypt\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("kms_connections_refused_total{reason=\"per_source_limit\"} 0"),
            "{out}"
        );
    }
}
