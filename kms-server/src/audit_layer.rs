//! The audit step of every RPC (OPS-1), as a tower layer around the whole router, so no handler
//! can skip it: each request gets a request id and an [`AuditNote`] that handlers fill in; when
//! the response is ready, its record is written (group commit) and the response leaves only once
//! the record is durable. If it cannot be written, the response is replaced by UNAVAILABLE:
//! the operation's result is withheld (fail closed).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use kms_core::audit::Event;
use kms_core::audit::writer::AuditLog;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::identity::PeerInfo;

/// What handlers add to a request's audit record.
#[derive(Clone, Debug, Default)]
pub struct AuditNote {
    pub principal: Option<String>,
    pub role: Option<String>,
    pub key_id: Option<String>,
    pub key_version: Option<u32>,
    pub context_hmac: Option<String>,
    pub flags: Vec<String>,
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
}

impl AuditLayer {
    #[must_use]
    pub fn new(log: Arc<AuditLog>, ids: crate::services::RequestIds) -> Self {
        Self { log, ids }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuditService {
            inner,
            log: Arc::clone(&self.log),
            ids: self.ids.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    log: Arc<AuditLog>,
    ids: crate::services::RequestIds,
}

fn grpc_code_name(resp: &http::Response<Body>) -> String {
    let code = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
    format!("{code:?}")
}

/// A gRPC code as the audit trail names it: `PERMISSION_DENIED`.
pub(crate) fn code_name(code: tonic::Code) -> String {
    screaming(&format!("{code:?}"))
}

/// "OK", "PermissionDenied" → "OK", "PERMISSION_DENIED".
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

/// Every refusal names its request id, wherever it was raised (limits, parsing, the core), so a
/// caller's report can be matched with the server log and the audit record.
fn with_request_id(
    resp: http::Response<Body>,
    request_id: &str,
    path: &str,
) -> http::Response<Body> {
    match Status::from_header_map(resp.headers()) {
        Some(s) if s.code() != tonic::Code::Ok && !s.message().contains("(request ") => {
            let message = if s.message().is_empty() && s.code() == tonic::Code::Unimplemented {
                format!("no such method: {path}")
            } else {
                s.message().to_owned()
            };
            Status::new(s.code(), format!("{message} (request {request_id})")).into_http()
        }
        Some(_) | None => resp,
    }
}

async fn write(log: Arc<AuditLog>, event: Event) -> Result<kms_core::audit::Record, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    log.append(
        event,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    match rx.await {
        Ok(Ok(record)) => Ok(record),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the audit writer stopped".into()),
    }
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
        if !audited(&path) {
            return Box::pin(self.inner.call(req));
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
        let (subject, transport) = req
            .extensions()
            .get::<PeerInfo>()
            .map_or((None, None), |p| (p.subject.clone(), p.transport.clone()));
        req.extensions_mut().insert(slot.clone());
        let operation = path.trim_start_matches("/kms.v1.").to_owned();
        // The call and its audit record run as a task of their own: if the client goes away,
        // hyper drops this future, but an operation that started must still be recorded (OPS-1).
        let call = async move {
            let refused_before = !log.healthy();
            let resp = if refused_before {
                Status::unavailable(format!(
                    "the audit trail cannot be written; operations are refused (request {request_id})"
                ))
                .into_http()
            } else {
                inner.call(req).await?
            };
            let resp = with_request_id(resp, &request_id, &path);
            let note = slot
                .note
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let event = Event {
                request_id: request_id.clone(),
                principal: note
                    .principal
                    .or(subject)
                    .unwrap_or_else(|| "unknown".into()),
                role: note.role.unwrap_or_else(|| "unregistered".into()),
                operation,
                key_id: note.key_id,
                key_version: note.key_version,
                outcome: screaming(&grpc_code_name(&resp)),
                context_hmac: note.context_hmac,
                flags: note.flags,
                transport,
            };
            match write(log, event).await {
                Ok(record) => {
                    // Also to the structured log, for a SIEM (no secrets: the record has none).
                    tracing::info!(
                        target: "kms::audit",
                        seq = record.seq,
                        request_id = record.request_id,
                        principal = record.principal,
                        role = record.role,
                        operation = record.operation,
                        key_id = record.key_id.as_deref().unwrap_or(""),
                        key_version = record.key_version.unwrap_or(0),
                        outcome = record.outcome,
                        flags = record.flags.join(","),
                        transport = record.transport.as_deref().unwrap_or(""),
                        "audit"
                    );
                    Ok(resp)
                }
                Err(e) => {
                    tracing::error!(request_id, error = %e, "audit record not written; response withheld");
                    Ok(Status::unavailable(format!(
                        "the audit record could not be written, so the result is withheld (request {request_id})"
                    ))
                    .into_http())
                }
            }
        };
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

    #[test]
    fn code_names_are_screaming_snake_case() {
        assert_eq!(screaming("Ok"), "OK");
        assert_eq!(screaming("PermissionDenied"), "PERMISSION_DENIED");
        assert_eq!(screaming("InvalidArgument"), "INVALID_ARGUMENT");
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

    fn request() -> http::Request<Body> {
        http::Request::builder()
            .uri("/kms.v1.Crypto/Encrypt")
            .body(Body::empty())
            .unwrap()
    }

    fn status_of(resp: &http::Response<Body>) -> String {
        grpc_code_name(resp)
    }

    #[tokio::test]
    async fn records_every_call_and_fails_closed_when_the_trail_cannot_be_written() {
        let store = Arc::new(Flaky {
            inner: MemoryStore::new(),
            broken: AtomicBool::new(false),
        });
        let log = Arc::new(AuditLog::start(
            store.clone(),
            "t",
            Arc::new(|_| None),
            Default::default(),
        ));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = AuditLayer::new(Arc::clone(&log), crate::services::RequestIds::new())
            .layer(Counting(calls.clone()));

        let ok = svc.call(request()).await.unwrap();
        assert_eq!(status_of(&ok), "Ok");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            store.scan_prefix(Tree::Audit, b"r").unwrap().len(),
            1,
            "one record per call"
        );

        // The audit store becomes unwritable: the result of the call in flight is withheld ...
        store.broken.store(true, Ordering::SeqCst);
        let withheld = svc.call(request()).await.unwrap();
        assert_eq!(status_of(&withheld), "Unavailable");
        // ... and the next operation is refused without running at all.
        let refused = svc.call(request()).await.unwrap();
        assert_eq!(status_of(&refused), "Unavailable");
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // When the store recovers, the refusal itself is recorded and service resumes.
        store.broken.store(false, Ordering::SeqCst);
        let _ = svc.call(request()).await.unwrap();
        let back = svc.call(request()).await.unwrap();
        assert_eq!(status_of(&back), "Ok");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        log.stop();
    }

    #[tokio::test]
    async fn health_probes_are_not_audited() {
        let store = Arc::new(MemoryStore::new());
        let log = Arc::new(AuditLog::start(
            store.clone(),
            "t",
            Arc::new(|_| None),
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
}
