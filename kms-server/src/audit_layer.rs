//! The audit step of every RPC (OPS-1), as a tower layer around the whole router, so no handler
//! can skip it: each request gets a request id and an [`AuditNote`] that handlers fill in; when
//! the response is ready, its record is written (group commit) and the response leaves only once
//! the record is durable. If it cannot be written, the response is replaced by UNAVAILABLE:
//! the operation's result is withheld (fail closed).
//!
//! The one exception: a connection whose certificate the gate refuses (not registered, no
//! subject) gets one record, for its first refusal; the rest are counted on the connection
//! (`gate::Denials`) and logged at most once a second, so a stranger's thousands of streams
//! cost neither thousands of records nor thousands of log lines.
//!
//! A batch call (`kms.v1.CryptoBatch`, [`Operation::batch_item`]) that succeeds is recorded as
//! its items, one record each, as if they had come one by one (the single call's operation
//! name), each with the batch id, all in one group commit. Its handler declares the batch
//! ([`AuditSlot::begin_batch`]) and fills one note per item ([`AuditSlot::item`]), settling
//! each item's outcome. The layer holds the items to account: a successful batch response
//! whose items are not all declared and settled is withheld (INTERNAL) rather than let out
//! with items the trail does not hold. A batch refused as a whole gets one record under its
//! own operation name, with its own request id as batch id.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use kms_core::audit::writer::AuditLog;
use kms_core::audit::{Event, Flag, Operation, Outcome, Role};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::identity::PeerInfo;

/// What handlers add to a request's audit record.
#[derive(Clone, Debug, Default)]
pub struct AuditNote {
    pub principal: Option<String>,
    /// `None` until the caller is identified: recorded as [`Role::Unregistered`].
    pub role: Option<Role>,
    pub key_id: Option<String>,
    pub key_version: Option<u32>,
    pub context_hmac: Option<String>,
    pub flags: Vec<Flag>,
    /// Import and export: how the material was wrapped, to which public key.
    pub transfer: Option<kms_core::audit::KeyTransfer>,
    /// The password shield: the pepper key and version used (`key_id` is the password key).
    pub pepper: Option<kms_core::audit::PepperUse>,
    /// A batch item's outcome, settled by its handler from the item's result; `None` for a
    /// call (its outcome is its response's gRPC code) and for an item not settled yet.
    pub outcome: Option<Outcome>,
    /// A batch call's items ([`AuditSlot::begin_batch`]); `None` for every other call.
    pub batch: Option<BatchNote>,
    /// How many values the call handled (`kms.v1.Tokenization`); never the values.
    pub count: Option<u32>,
}

/// The items of a batch call, as its handler declared and filled them.
#[derive(Clone, Debug, Default)]
pub struct BatchNote {
    /// How many items the request holds.
    pub expected: usize,
    /// Each item's request id and note, in the request's order.
    pub items: Vec<(String, Arc<Mutex<AuditNote>>)>,
}

/// A request's id and its note, in the request's extensions.
#[derive(Clone, Debug)]
pub struct AuditSlot {
    pub request_id: String,
    pub note: Arc<Mutex<AuditNote>>,
}

impl AuditSlot {
    pub fn update(&self, f: impl FnOnce(&mut AuditNote)) {
        f(&mut self
            .note
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// Declares this call a batch of `items` items: its success leaves the layer only once
    /// that many items have notes with settled outcomes.
    pub fn begin_batch(&self, items: usize) {
        self.update(|n| {
            n.batch = Some(BatchNote {
                expected: items,
                items: Vec::with_capacity(items),
            });
        });
    }

    /// The slot of this batch's next item, named `request_id`: a note of its own that starts
    /// from the call's principal and role.
    #[must_use]
    pub fn item(&self, request_id: String) -> Self {
        let mut call = self
            .note
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let note = Arc::new(Mutex::new(AuditNote {
            principal: call.principal.clone(),
            role: call.role.clone(),
            ..AuditNote::default()
        }));
        call.batch
            .get_or_insert_with(BatchNote::default)
            .items
            .push((request_id.clone(), Arc::clone(&note)));
        Self { request_id, note }
    }
}

/// The events of a successful batch's items, or why they cannot stand for it: not declared,
/// not as many as the request held, or one without a settled outcome.
fn item_events(
    note: &AuditNote,
    item_op: &Operation,
    batch_id: &str,
    principal: &str,
    transport: Option<&String>,
    traceparent: Option<&String>,
) -> Result<Vec<Event>, String> {
    let Some(batch) = &note.batch else {
        return Err("the handler declared no batch".into());
    };
    if batch.items.len() != batch.expected || batch.expected == 0 {
        return Err(format!(
            "{} of {} items have notes",
            batch.items.len(),
            batch.expected
        ));
    }
    batch
        .items
        .iter()
        .map(|(request_id, item)| {
            let item = item
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let Some(outcome) = item.outcome else {
                return Err(format!("item {request_id} has no outcome"));
            };
            Ok(Event {
                request_id: request_id.clone(),
                principal: item.principal.unwrap_or_else(|| principal.to_owned()),
                role: item.role.unwrap_or(Role::Unregistered),
                operation: item_op.clone(),
                key_id: item.key_id,
                key_version: item.key_version,
                outcome,
                context_hmac: item.context_hmac,
                flags: item.flags,
                transport: transport.cloned(),
                traceparent: traceparent.cloned(),
                // Batch items are data-plane calls: no key material moves.
                transfer: None,
                batch_id: Some(batch_id.to_owned()),
                pepper: None,
                count: None,
            })
        })
        .collect()
}

/// Paths not audited: health probes and reflection carry no key operation and would flood the
/// trail.
fn audited(path: &str) -> bool {
    !(path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection."))
}

#[derive(Clone)]
pub struct AuditLayer {
    log: Arc<AuditLog>,
    ids: crate::services::RequestIds,
    gate: Option<crate::gate::Gate>,
    denial_log: Arc<crate::front_door::Throttle>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl AuditLayer {
    #[must_use]
    pub fn new(log: Arc<AuditLog>, ids: crate::services::RequestIds) -> Self {
        Self {
            log,
            ids,
            gate: None,
            denial_log: Arc::new(crate::front_door::Throttle::new(
                std::time::Duration::from_secs(1),
            )),
            metrics: None,
        }
    }

    /// Counts every call (method, code, time, in flight), the gate's refusals and the audit
    /// writes' latency into `metrics` (`metrics.rs`), when given.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Admits calls through `gate` before their bodies are read (`gate.rs`).
    #[must_use]
    pub fn with_gate(mut self, gate: crate::gate::Gate) -> Self {
        self.gate = Some(gate);
        self
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuditService {
            inner,
            log: Arc::clone(&self.log),
            ids: self.ids.clone(),
            gate: self.gate.clone(),
            denial_log: Arc::clone(&self.denial_log),
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    log: Arc<AuditLog>,
    ids: crate::services::RequestIds,
    gate: Option<crate::gate::Gate>,
    denial_log: Arc<crate::front_door::Throttle>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Counts a gate denial in the metrics, by its reason (never the subject).
fn count_denial(metrics: Option<&crate::metrics::Metrics>, refusal: &crate::status::Refusal) {
    if let (Some(m), Some(reason)) = (metrics, crate::gate::denial_reason(refusal)) {
        m.gate_refused(reason);
    }
}

/// The future of a call, counted in the metrics (method, code, time) when it completes, or as
/// CANCELLED when it is dropped first.
fn counted<E: Send + 'static>(
    inflight: Option<crate::metrics::InFlight>,
    call: Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>,
) -> Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>> {
    match inflight {
        None => call,
        Some(mut inflight) => Box::pin(async move {
            let result = call.await;
            if let Ok(resp) = &result {
                inflight.answered(grpc_code(resp));
            }
            result
        }),
    }
}

/// Logs a gate denial, at most one line a second for all of them together, with how many there
/// were since the last line.
fn log_denial(throttle: &crate::front_door::Throttle, refusal: &crate::status::Refusal) {
    if let Some(refused) = throttle.tick() {
        tracing::warn!(
            refused,
            latest = %refusal,
            "requests refused at the gate (unregistered or unnamed certificates); \
             one audit record per connection, the rest counted"
        );
    }
}

/// The gRPC code of a response (OK when its headers carry none: a stream's status comes in its
/// trailers, after the record is written).
fn grpc_code(resp: &http::Response<Body>) -> tonic::Code {
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// A gRPC code as the audit trail records it.
pub(crate) const fn outcome(code: tonic::Code) -> Outcome {
    match code {
        tonic::Code::Ok => Outcome::Ok,
        tonic::Code::Cancelled => Outcome::Cancelled,
        tonic::Code::Unknown => Outcome::Unknown,
        tonic::Code::InvalidArgument => Outcome::InvalidArgument,
        tonic::Code::DeadlineExceeded => Outcome::DeadlineExceeded,
        tonic::Code::NotFound => Outcome::NotFound,
        tonic::Code::AlreadyExists => Outcome::AlreadyExists,
        tonic::Code::PermissionDenied => Outcome::PermissionDenied,
        tonic::Code::ResourceExhausted => Outcome::ResourceExhausted,
        tonic::Code::FailedPrecondition => Outcome::FailedPrecondition,
        tonic::Code::Aborted => Outcome::Aborted,
        tonic::Code::OutOfRange => Outcome::OutOfRange,
        tonic::Code::Unimplemented => Outcome::Unimplemented,
        tonic::Code::Internal => Outcome::Internal,
        tonic::Code::Unavailable => Outcome::Unavailable,
        tonic::Code::DataLoss => Outcome::DataLoss,
        tonic::Code::Unauthenticated => Outcome::Unauthenticated,
    }
}

/// `status` with its message naming `request_id`, marked (see [`crate::status::NamesRequest`])
/// so that the layer leaves it as it is. For refusals raised below the one error map (tonic's
/// own, the layer's).
#[must_use]
pub fn naming_request(status: &Status, request_id: &str) -> Status {
    crate::status::named(
        Status::with_details_and_metadata(
            status.code(),
            format!("{} (request {request_id})", status.message()),
            status.details().to_vec().into(),
            status.metadata().clone(),
        ),
        request_id,
    )
}

/// Whether a refusal already names this request's id: marked by the one error map
/// (`status::to_status`, `status::worker_failed`) or by [`naming_request`]. The message is never
/// read: text a caller got into it (a key or alias name holding "(request …)") neither hides
/// the real id nor stands in for it.
fn names_request(status: &Status, request_id: &str) -> bool {
    std::error::Error::source(status)
        .and_then(|e| e.downcast_ref::<crate::status::NamesRequest>())
        .is_some_and(|m| m.request_id() == request_id)
}

/// Every refusal names its request id exactly once, wherever it was raised (limits, parsing,
/// the core), so a caller's report can be matched with the server log and the audit record.
/// The refusal is read from the response's extensions (tonic puts the `Status` there), or from
/// its headers when a layer below answered without one.
fn with_request_id(
    resp: http::Response<Body>,
    request_id: &str,
    path: &str,
) -> http::Response<Body> {
    let status = resp
        .extensions()
        .get::<Status>()
        .cloned()
        .or_else(|| Status::from_header_map(resp.headers()));
    match status {
        Some(s) if s.code() != tonic::Code::Ok && !names_request(&s, request_id) => {
            let s = if s.message().is_empty() && s.code() == tonic::Code::Unimplemented {
                Status::unimplemented(format!("no such method: {path}"))
            } else {
                s
            };
            naming_request(&s, request_id).into_http()
        }
        Some(_) | None => resp,
    }
}

async fn write(
    log: Arc<AuditLog>,
    event: Event,
    metrics: Option<&crate::metrics::Metrics>,
) -> Result<kms_core::audit::Record, String> {
    let started = std::time::Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel();
    log.append(
        event,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    let written = rx.await;
    if let Some(m) = metrics {
        m.audit_written(started.elapsed());
    }
    match written {
        Ok(Ok(record)) => Ok(record),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the audit writer stopped".into()),
    }
}

/// Writes `events` together, in one group commit (a batch call's items).
async fn write_all(
    log: Arc<AuditLog>,
    events: Vec<Event>,
    metrics: Option<&crate::metrics::Metrics>,
) -> Result<Vec<kms_core::audit::Record>, String> {
    let started = std::time::Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel();
    log.append_all(
        events,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    let written = rx.await;
    if let Some(m) = metrics {
        m.audit_written(started.elapsed());
    }
    match written {
        Ok(Ok(records)) => Ok(records),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the audit writer stopped".into()),
    }
}

/// A written record to the structured log too, for a SIEM (no secrets: the record has none).
fn log_record(record: &kms_core::audit::Record) {
    tracing::info!(
        target: "kms::audit",
        seq = record.seq,
        request_id = record.request_id,
        principal = record.principal,
        role = record.role.as_str(),
        operation = record.operation.as_str(),
        key_id = record.key_id.as_deref().unwrap_or(""),
        key_version = record.key_version.unwrap_or(0),
        outcome = record.outcome.as_str(),
        flags = record
            .flags
            .iter()
            .map(Flag::as_str)
            .collect::<Vec<_>>()
            .join(","),
        transport = record.transport.as_deref().unwrap_or(""),
        traceparent = record.traceparent.as_deref().unwrap_or(""),
        batch_id = record.batch_id.as_deref().unwrap_or(""),
        "audit"
    );
}

impl<S> Service<http::Request<Body>> for AuditService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let subject_of = |req: &http::Request<Body>| {
            req.extensions()
                .get::<PeerInfo>()
                .and_then(|p| p.subject.clone())
        };
        let cert_key = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.cert_key.clone());
        let inflight = self.metrics.as_ref().map(|m| m.request(&path));
        let metrics = self.metrics.clone();
        if !audited(&path) {
            // Health and reflection: registered principals only, and not recorded.
            let Some(gate) = self.gate.clone() else {
                return counted(inflight, Box::pin(self.inner.call(req)));
            };
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            let subject = subject_of(&req);
            let request_id = self.ids.next();
            let denial_log = Arc::clone(&self.denial_log);
            return counted(
                inflight,
                Box::pin(async move {
                    match gate
                        .admit_peer(subject.as_deref(), cert_key.as_ref(), &path)
                        .await
                    {
                        // A store that cannot answer cannot say who is registered; health must
                        // still say NOT_SERVING then, and reflection reveals nothing secret.
                        Ok(crate::gate::Admission::Principal(_))
                        | Err(crate::status::Refusal::Core(_)) => inner.call(req).await,
                        Ok(crate::gate::Admission::Bootstrap) => {
                            let refusal = crate::status::Refusal::UnknownPrincipal {
                                subject: subject.unwrap_or_default(),
                            };
                            log_denial(&denial_log, &refusal);
                            count_denial(metrics.as_deref(), &refusal);
                            Ok(crate::status::to_status_unlogged(refusal, &request_id).into_http())
                        }
                        Err(refusal) => {
                            log_denial(&denial_log, &refusal);
                            count_denial(metrics.as_deref(), &refusal);
                            Ok(crate::status::to_status_unlogged(refusal, &request_id).into_http())
                        }
                    }
                }),
            );
        }
        // The clone that was readied serves this call; the fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let log = Arc::clone(&self.log);
        let request_id = self.ids.next();
        let slot = AuditSlot {
            request_id: request_id.clone(),
            note: Arc::default(),
        };
        let (subject, transport, denials) =
            req.extensions()
                .get::<PeerInfo>()
                .map_or((None, None, None), |p| {
                    (
                        p.subject.clone(),
                        p.transport.clone(),
                        Some(Arc::clone(&p.denials)),
                    )
                });
        // The caller's trace context, when well formed, so its request can be found in the
        // trail; a malformed or oversized header is left out, never trimmed to fit.
        let traceparent = req
            .headers()
            .get("traceparent")
            .and_then(|v| kms_core::audit::traceparent(v.as_bytes()));
        req.extensions_mut().insert(slot.clone());
        let operation = Operation::from_path(&path);
        // The call and its audit record run as a task of their own: if the client goes away,
        // hyper drops this future, but an operation that started must still be recorded (OPS-1).
        let gate = self.gate.clone();
        let denial_log = Arc::clone(&self.denial_log);
        let call = async move {
            let refused_before = !log.healthy();
            // The gate decides on the certificate alone: a refused call's body is never read.
            let admitted = match (&gate, refused_before) {
                (Some(gate), false) => Some(
                    gate.admit_peer(subject.as_deref(), cert_key.as_ref(), &path)
                        .await,
                ),
                (None, _) | (_, true) => None,
            };
            let resp = if refused_before {
                naming_request(
                    &Status::unavailable(
                        "the audit trail cannot be written; operations are refused",
                    ),
                    &request_id,
                )
                .into_http()
            } else {
                let admitted = match admitted {
                    Some(Err(refusal)) => Err(refusal),
                    Some(Ok(crate::gate::Admission::Principal(p))) => {
                        slot.update(|n| {
                            n.principal = Some(p.subject.clone());
                            n.role = Some(Role::from(&p.role));
                        });
                        req.extensions_mut().insert(crate::gate::Admitted(p));
                        Ok(())
                    }
                    Some(Ok(crate::gate::Admission::Bootstrap)) | None => Ok(()),
                };
                match admitted {
                    Err(refusal) if crate::gate::is_denial(&refusal) => {
                        log_denial(&denial_log, &refusal);
                        count_denial(metrics.as_deref(), &refusal);
                        let status = crate::status::to_status_unlogged(refusal, &request_id);
                        // One record per connection: later denials are counted, and answered
                        // without touching the trail.
                        if let Some(d) = denials.as_ref().filter(|d| !d.claim_record()) {
                            d.count_unrecorded();
                            return Ok(status.into_http());
                        }
                        status.into_http()
                    }
                    Err(refusal) => crate::status::to_status(refusal, &request_id).into_http(),
                    Ok(()) => {
                        // Audit before effect: a call that may change state runs only once its
                        // intent is durable in the trail; its outcome record follows.
                        let intent_written = if operation.changes_state() {
                            let note = slot
                                .note
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .clone();
                            let intent = Event {
                                request_id: request_id.clone(),
                                principal: note
                                    .principal
                                    .or_else(|| subject.clone())
                                    .unwrap_or_else(|| "unknown".into()),
                                role: note.role.unwrap_or(Role::Unregistered),
                                operation: operation.clone(),
                                key_id: None,
                                key_version: None,
                                outcome: Outcome::Unknown,
                                context_hmac: None,
                                flags: vec![Flag::Intent],
                                transport: transport.clone(),
                                traceparent: traceparent.clone(),
                                transfer: None,
                                batch_id: None,
                                pepper: None,
                                count: None,
                            };
                            write(Arc::clone(&log), intent, metrics.as_deref())
                                .await
                                .map(drop)
                        } else {
                            Ok(())
                        };
                        match intent_written {
                            Ok(_) => inner.call(req).await?,
                            Err(e) => {
                                tracing::error!(request_id, error = %e, "intent record not written; the call did not run");
                                naming_request(
                                    &Status::unavailable(
                                        "the audit record could not be written, so nothing was done",
                                    ),
                                    &request_id,
                                )
                                .into_http()
                            }
                        }
                    }
                }
            };
            let mut resp = with_request_id(resp, &request_id, &path);
            let note = slot
                .note
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let principal = note
                .principal
                .clone()
                .or(subject)
                .unwrap_or_else(|| "unknown".into());
            let code = grpc_code(&resp);
            let mut event = Event {
                request_id: request_id.clone(),
                principal: principal.clone(),
                role: note.role.clone().unwrap_or(Role::Unregistered),
                operation: operation.clone(),
                key_id: note.key_id.clone(),
                key_version: note.key_version,
                outcome: outcome(code),
                context_hmac: note.context_hmac.clone(),
                flags: note.flags.clone(),
                transport: transport.clone(),
                traceparent: traceparent.clone(),
                batch_id: None,
                pepper: note.pepper.clone(),
                count: note.count,
                transfer: note.transfer.clone(),
            };
            let written = match operation.batch_item() {
                None => write(log, event, metrics.as_deref()).await.map(|r| vec![r]),
                Some(item_op) => {
                    event.batch_id = Some(request_id.clone());
                    let events = if code == tonic::Code::Ok {
                        item_events(
                            &note,
                            &item_op,
                            &request_id,
                            &principal,
                            transport.as_ref(),
                            traceparent.as_ref(),
                        )
                        .unwrap_or_else(|why| {
                            // A handler bug: its items would leave unrecorded. Withheld.
                            tracing::error!(request_id, why, "batch items not all noted; response withheld");
                            resp = naming_request(
                                &Status::internal(
                                    "the batch's items were not all recorded, so its results are withheld",
                                ),
                                &request_id,
                            )
                            .into_http();
                            event.outcome = Outcome::Internal;
                            vec![event]
                        })
                    } else {
                        vec![event]
                    };
                    write_all(log, events, metrics.as_deref()).await
                }
            };
            match written {
                Ok(records) => {
                    for record in &records {
                        log_record(record);
                    }
                    Ok(resp)
                }
                Err(e) => {
                    tracing::error!(request_id, error = %e, "audit record not written; response withheld");
                    Ok(naming_request(
                        &Status::unavailable(
                            "the audit record could not be written, so the result is withheld",
                        ),
                        &request_id,
                    )
                    .into_http())
                }
            }
        };
        // Counted inside the task: a client that goes away does not end the call early.
        let call = counted(inflight, Box::pin(call));
        Box::pin(async move {
            match tokio::spawn(call).await {
                Ok(r) => r,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Ok(Status::unavailable("the server is shutting down").into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use kms_core::store::{Batch, Entry, MemoryStore, Store, StoreError, Tree};

    use super::*;

    /// Every code is recorded under the name format v1 wrote: tonic's `Debug` name in
    /// screaming snake case (the v1 code, kept here as the reference).
    #[test]
    fn outcomes_name_every_code_as_version_1_did() {
        fn screaming(name: &str) -> String {
            let mut out = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_uppercase() && i > 0 && name != "OK" {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
        for n in 0..=16 {
            let code = tonic::Code::from_i32(n);
            let o = outcome(code);
            assert!(o.is_known(), "{code:?}");
            assert_eq!(o.as_str(), screaming(&format!("{code:?}")), "{code:?}");
        }
        assert_eq!(
            outcome(tonic::Code::PermissionDenied),
            Outcome::PermissionDenied
        );
        assert_eq!(Outcome::KNOWN.len(), 17);
    }

    /// Every RPC of the `.proto` files is a known [`Operation`] under the name the layer gives
    /// its path, and every known operation is an RPC: a method added to the API without its
    /// variant would be audited only as `Other`.
    #[test]
    fn every_rpc_in_the_protos_is_a_known_operation() {
        let protos = [
            include_str!("../../proto/kms/v1/admin.proto"),
            include_str!("../../proto/kms/v1/audit.proto"),
            include_str!("../../proto/kms/v1/crypto.proto"),
            include_str!("../../proto/kms/v1/password.proto"),
            include_str!("../../proto/kms/v1/request.proto"),
            include_str!("../../proto/kms/v1/system.proto"),
            include_str!("../../proto/kms/v1/tokenize.proto"),
        ];
        let mut rpcs = Vec::new();
        for text in protos {
            let mut service = None;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next();
                } else if let Some(rest) = line.strip_prefix("rpc ") {
                    let method = rest.split('(').next().unwrap().trim();
                    rpcs.push(format!("/kms.v1.{}/{method}", service.unwrap()));
                }
            }
        }
        let rpc_ops = Operation::KNOWN
            .iter()
            .filter(|op| op.service() != Some(kms_core::audit::Service::Scheduler))
            .count();
        assert_eq!(rpcs.len(), rpc_ops, "{rpcs:#?}");
        for path in &rpcs {
            let op = Operation::from_path(path);
            assert!(op.is_known(), "{path} has no Operation variant");
            assert_eq!(format!("/kms.v1.{op}"), *path);
        }
    }

    fn refusal_of(resp: &http::Response<Body>) -> (tonic::Code, String) {
        let s = Status::from_header_map(resp.headers()).unwrap();
        (s.code(), s.message().to_owned())
    }

    /// Every refusal names its request id exactly once, whoever built it; a caller's text that
    /// looks like a request id neither hides the real one nor replaces it.
    #[test]
    fn every_refusal_names_its_request_id_exactly_once() {
        let id = "ab12cd34-7";
        let path = "/kms.v1.Crypto/Encrypt";
        let named = |status: Status| refusal_of(&with_request_id(status.into_http(), id, path));
        // From the one error map: already named, left alone.
        let mapped = crate::status::to_status(kms_core::Error::Sealed, id);
        assert_eq!(
            named(mapped.clone()),
            (mapped.code(), mapped.message().to_owned())
        );
        // Marked by naming_request: left alone.
        let marked = naming_request(&Status::resource_exhausted("slow down"), id);
        assert_eq!(
            named(marked),
            (
                tonic::Code::ResourceExhausted,
                format!("slow down (request {id})")
            )
        );
        // Raised without an id (limits, parsing): named.
        assert_eq!(
            named(Status::invalid_argument("plaintext too large")),
            (
                tonic::Code::InvalidArgument,
                format!("plaintext too large (request {id})")
            )
        );
        // Another request's id in the text, even at the end: this one's is still added.
        for text in [
            "no key named x (request 00000000-1) here",
            "no key named x (request 00000000-1)",
        ] {
            let (code, message) = named(Status::not_found(text));
            assert_eq!(code, tonic::Code::NotFound);
            assert_eq!(message, format!("{text} (request {id})"));
            assert_eq!(message.matches(id).count(), 1);
        }
        // An unknown method says which.
        assert_eq!(
            named(Status::unimplemented("")),
            (
                tonic::Code::Unimplemented,
                format!("no such method: {path} (request {id})")
            )
        );
        // A success is not a refusal.
        let ok = with_request_id(http::Response::new(Body::empty()), id, path);
        assert!(Status::from_header_map(ok.headers()).is_none());
        // A refusal below the layer that tonic did not build: read from its headers.
        let mut bare = http::Response::new(Body::empty());
        bare.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
        assert_eq!(
            refusal_of(&with_request_id(bare, id, path)),
            (tonic::Code::ResourceExhausted, format!(" (request {id})"))
        );
    }

    /// A store whose audit tree can be made unwritable.
    struct Flaky {
        inner: MemoryStore,
        broken: AtomicBool,
    }

    impl Store for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(tree, key)
        }
        fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
            self.inner.scan_prefix(tree, prefix)
        }
        fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
            if self.broken.load(Ordering::SeqCst) && batch.trees().contains(&Tree::Audit) {
                return Err(StoreError::Unavailable("disk full".into()));
            }
            self.inner.apply(batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    /// An inner service that counts calls and answers OK.
    #[derive(Clone)]
    struct Counting(Arc<AtomicUsize>);

    impl Service<http::Request<Body>> for Counting {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(http::Response::new(Body::empty())))
        }
    }

    /// A flaky store, its audit log, and the layer around a service that counts its calls.
    fn audited_counter() -> (
        Arc<Flaky>,
        Arc<AuditLog>,
        Arc<AtomicUsize>,
        AuditService<Counting>,
    ) {
        let store = Arc::new(Flaky {
            inner: MemoryStore::new(),
            broken: AtomicBool::new(false),
        });
        let log = Arc::new(AuditLog::start(
            store.clone(),
            "t",
            kms_core::audit::signer::never_signs(),
            Default::default(),
        ));
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = AuditLayer::new(Arc::clone(&log), crate::services::RequestIds::new())
            .layer(Counting(calls.clone()));
        (store, log, calls, svc)
    }

    fn request() -> http::Request<Body> {
        http::Request::builder()
            .uri("/kms.v1.Crypto/Encrypt")
            .body(Body::empty())
            .unwrap()
    }

    fn status_of(resp: &http::Response<Body>) -> tonic::Code {
        grpc_code(resp)
    }

    #[tokio::test]
    async fn records_every_call_and_fails_closed_when_the_trail_cannot_be_written() {
        let (store, log, calls, mut svc) = audited_counter();

        let ok = svc.call(request()).await.unwrap();
        assert_eq!(status_of(&ok), tonic::Code::Ok);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            store.scan_prefix(Tree::Audit, b"r").unwrap().len(),
            1,
            "one record per call"
        );

        // The audit store becomes unwritable: the result of the call in flight is withheld ...
        store.broken.store(true, Ordering::SeqCst);
        let withheld = svc.call(request()).await.unwrap();
        assert_eq!(status_of(&withheld), tonic::Code::Unavailable);
        // ... and the next operation is refused without running at all.
        let refused = svc.call(request()).await.unwrap();
        assert_eq!(status_of(&refused), tonic::Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // When the store recovers, the refusal itself is recorded and service resumes.
        store.broken.store(false, Ordering::SeqCst);
        let _ = svc.call(request()).await.unwrap();
        let back = svc.call(request()).await.unwrap();
        assert_eq!(status_of(&back), tonic::Code::Ok);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        log.stop();
    }

    /// Audit before effect (issue 18 item 3): a state-changing call runs only after its intent
    /// record is durable; if the intent cannot be written, the call does not run at all. Its
    /// outcome record follows under the same request id. Calls that change nothing get one
    /// record, as before.
    #[tokio::test]
    async fn a_state_changing_call_runs_only_after_its_intent_is_recorded() {
        let (store, log, calls, mut svc) = audited_counter();
        let create = || {
            http::Request::builder()
                .uri("/kms.v1.KeyAdmin/CreateKey")
                .body(Body::empty())
                .unwrap()
        };
        let records = || -> Vec<kms_core::audit::Record> {
            store
                .scan_prefix(Tree::Audit, b"r")
                .unwrap()
                .iter()
                .filter_map(|(_, v)| serde_json::from_slice(v).ok())
                .collect()
        };

        let ok = svc.call(create()).await.unwrap();
        assert_eq!(status_of(&ok), tonic::Code::Ok);
        let written = records();
        assert_eq!(written.len(), 2, "an intent and an outcome");
        assert_eq!(written[0].flags, vec![Flag::Intent]);
        assert_eq!(written[0].outcome, Outcome::Unknown);
        assert_eq!(written[1].outcome, Outcome::Ok);
        assert!(written[1].flags.is_empty());
        assert_eq!(written[0].request_id, written[1].request_id);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // The trail cannot take the intent: the call never runs.
        store.broken.store(true, Ordering::SeqCst);
        let refused = svc.call(create()).await.unwrap();
        assert_eq!(status_of(&refused), tonic::Code::Unavailable);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the call ran without its intent"
        );
        log.stop();
    }

    #[tokio::test]
    async fn health_probes_are_not_audited() {
        let store = Arc::new(MemoryStore::new());
        let log = Arc::new(AuditLog::start(
            store.clone(),
            "t",
            kms_core::audit::signer::never_signs(),
            Default::default(),
        ));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = AuditLayer::new(Arc::clone(&log), crate::services::RequestIds::new())
            .layer(Counting(calls));
        let req = http::Request::builder()
            .uri("/grpc.health.v1.Health/Check")
            .body(Body::empty())
            .unwrap();
        svc.call(req).await.unwrap();
        assert!(store.scan_prefix(Tree::Audit, b"r").unwrap().is_empty());
        log.stop();
    }

    /// What a batch handler does with its request's slot.
    type Fill = Arc<dyn Fn(&AuditSlot) + Send + Sync>;

    /// An inner service that plays a batch handler: it fills the request's slot as `fill`
    /// says and answers with `code`.
    #[derive(Clone)]
    struct Batcher {
        fill: Fill,
        code: tonic::Code,
    }

    impl Service<http::Request<Body>> for Batcher {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: http::Request<Body>) -> Self::Future {
            let slot = req.extensions().get::<AuditSlot>().unwrap().clone();
            slot.update(|n| {
                n.principal = Some("kms://app".into());
                n.role = Some(Role::App);
            });
            (self.fill)(&slot);
            let resp = if self.code == tonic::Code::Ok {
                http::Response::new(Body::empty())
            } else {
                Status::new(self.code, "refused").into_http()
            };
            std::future::ready(Ok(resp))
        }
    }

    /// Declares a batch of `expected` and settles `outcomes` items, each with its own key.
    fn batch_of(
        expected: usize,
        outcomes: &[Option<Outcome>],
    ) -> Arc<dyn Fn(&AuditSlot) + Send + Sync> {
        let outcomes = outcomes.to_vec();
        Arc::new(move |slot: &AuditSlot| {
            slot.begin_batch(expected);
            for (i, outcome) in outcomes.iter().enumerate() {
                let item = slot.item(format!("{}.{i}", slot.request_id));
                item.update(|n| {
                    n.key_id = Some(format!("key-{i}"));
                    n.outcome = outcome.clone();
                });
            }
        })
    }

    /// The records a batch call left, after running it through the layer with `fill` and
    /// `code`, and the code the caller got.
    async fn batch_records(
        fill: Fill,
        code: tonic::Code,
    ) -> (tonic::Code, Vec<kms_core::audit::Record>) {
        let store = Arc::new(MemoryStore::new());
        let log = Arc::new(AuditLog::start(
            store.clone(),
            "t",
            kms_core::audit::signer::never_signs(),
            Default::default(),
        ));
        let mut svc = AuditLayer::new(Arc::clone(&log), crate::services::RequestIds::new())
            .layer(Batcher { fill, code });
        let req = http::Request::builder()
            .uri("/kms.v1.CryptoBatch/BatchEncrypt")
            .body(Body::empty())
            .unwrap();
        let resp = svc.call(req).await.unwrap();
        log.stop();
        let records = store
            .scan_prefix(Tree::Audit, b"r")
            .unwrap()
            .iter()
            .filter_map(|(_, v)| serde_json::from_slice(v).ok())
            .collect();
        (status_of(&resp), records)
    }

    /// A batch that ran is recorded as its items, each under the single call's name, with its
    /// own request id, key and outcome and the batch id: as if they had come one by one.
    #[tokio::test]
    async fn a_batch_is_recorded_as_its_items() {
        let outcomes = [
            Some(Outcome::Ok),
            Some(Outcome::NotFound),
            Some(Outcome::FailedPrecondition),
        ];
        let (code, records) = batch_records(batch_of(3, &outcomes), tonic::Code::Ok).await;
        assert_eq!(code, tonic::Code::Ok);
        assert_eq!(records.len(), 3, "{records:#?}");
        let batch_id = records[0].batch_id.clone().unwrap();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.operation, Operation::Encrypt);
            assert_eq!(r.request_id, format!("{batch_id}.{i}"));
            assert_eq!(r.batch_id.as_deref(), Some(batch_id.as_str()));
            assert_eq!(r.key_id.as_deref(), Some(format!("key-{i}").as_str()));
            assert_eq!(Some(r.outcome.clone()), outcomes[i]);
            assert_eq!((r.principal.as_str(), &r.role), ("kms://app", &Role::App));
            assert_eq!(r.seq, u64::try_from(i).unwrap() + 1);
        }
    }

    /// The items cannot escape the trail: a successful batch response whose items were not all
    /// declared and settled is withheld, and the batch is recorded as INTERNAL.
    #[tokio::test]
    async fn a_batch_whose_items_were_not_all_noted_is_withheld() {
        let cases: [(&str, Fill); 4] = [
            ("no batch declared", Arc::new(|_: &AuditSlot| {})),
            (
                "fewer items than declared",
                batch_of(3, &[Some(Outcome::Ok), Some(Outcome::Ok)]),
            ),
            (
                "an item not settled",
                batch_of(2, &[Some(Outcome::Ok), None]),
            ),
            ("an empty batch", batch_of(0, &[])),
        ];
        for (what, fill) in cases {
            let (code, records) = batch_records(fill, tonic::Code::Ok).await;
            assert_eq!(code, tonic::Code::Internal, "{what}");
            assert_eq!(records.len(), 1, "{what}: {records:#?}");
            let r = &records[0];
            assert_eq!(r.operation, Operation::BatchEncrypt, "{what}");
            assert_eq!(r.outcome, Outcome::Internal, "{what}");
            assert_eq!(r.batch_id.as_ref(), Some(&r.request_id), "{what}");
        }
    }

    /// A batch refused as a whole leaves one record under its own name, whatever its handler
    /// noted of items before it failed.
    #[tokio::test]
    async fn a_batch_refused_as_a_whole_is_one_record() {
        let (code, records) = batch_records(
            batch_of(2, &[Some(Outcome::Ok)]),
            tonic::Code::InvalidArgument,
        )
        .await;
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert_eq!(records.len(), 1, "{records:#?}");
        assert_eq!(records[0].operation, Operation::BatchEncrypt);
        assert_eq!(records[0].outcome, Outcome::InvalidArgument);
        assert_eq!(records[0].batch_id.as_ref(), Some(&records[0].request_id));
        assert_eq!(records[0].key_id, None);
    }
}
