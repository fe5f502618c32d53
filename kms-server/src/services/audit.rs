//! The audit trail and the inventory, for auditors (`kms.v1.Audit`).

use std::pin::Pin;
use std::time::{Duration, Instant};

use std::sync::Arc;

use kms_core::audit::export::AuditExport;
use kms_core::audit::writer::AuditLog;
use kms_core::audit::{Event, Flag, Operation, Role};
use kms_core::authz::{authorize, ops};
use kms_core::store::StoreError;
use kms_proto::v1::{self, audit_server::Audit};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::status::{Refusal, to_status};

type Lines = Pin<Box<dyn Stream<Item = Result<v1::AuditChunk, Status>> + Send>>;

/// Lines per streamed chunk (about 400 KiB).
const LINES_PER_CHUNK: usize = 1000;
/// Chunks between the export thread and the client: the most one export buffers.
const CHUNKS_IN_FLIGHT: usize = 4;
/// A client that takes no chunk for this long loses its export, so that a stalled client (its
/// HTTP/2 stack still answers pings) does not keep the export thread forever.
const CLIENT_STALL: Duration = Duration::from_secs(120);
/// The longest nap of the export thread while the channel is full.
const FULL_NAP: Duration = Duration::from_millis(20);

/// The flag on the second audit record of an export that did not reach its end.
pub const EXPORT_INCOMPLETE: Flag = Flag::ExportIncomplete;

/// Sends one item from a plain thread, waiting while the channel is full for at most
/// [`CLIENT_STALL`]. It naps and retries rather than wait on a tokio timer: a timer used from
/// outside the runtime panics if the runtime shuts down meanwhile (server shutdown mid-export).
fn send_or_give_up(
    tx: &mpsc::Sender<Result<v1::AuditChunk, Status>>,
    mut item: Result<v1::AuditChunk, Status>,
) -> Result<(), (tonic::Code, &'static str)> {
    let deadline = Instant::now() + CLIENT_STALL;
    let mut nap = Duration::from_millis(1);
    loop {
        match tx.try_send(item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err((tonic::Code::Cancelled, "went away")),
            Err(TrySendError::Full(back)) => {
                if Instant::now() >= deadline {
                    return Err((
                        tonic::Code::DeadlineExceeded,
                        "took no data for two minutes",
                    ));
                }
                item = back;
                std::thread::sleep(nap);
                nap = (nap * 2).min(FULL_NAP);
            }
        }
    }
}

/// Runs on the export thread: reads the export and sends it in chunks; a failure (records
/// archived meanwhile, a store error) ends the stream with its status. Stops early when the
/// client has gone or stalls.
///
/// The audit layer recorded the export as it began (its response headers said OK), before any
/// line left. An export that then does not reach its closing checkpoint gets a second record
/// with the same request id, the code it ended with and [`EXPORT_INCOMPLETE`], so the trail never
/// shows an export as whole that was not (OPS-1).
fn stream_export(
    export: AuditExport,
    tx: &mpsc::Sender<Result<v1::AuditChunk, Status>>,
    log: &AuditLog,
    begun: Event,
) {
    let request_id = begun.request_id.clone();
    let send = |item| send_or_give_up(tx, item);
    let mut client_lost = None;
    let mut lines = String::new();
    let mut count = 0;
    let result = export.write_to(&mut |line| {
        lines.push_str(line);
        count += 1;
        if count >= LINES_PER_CHUNK {
            count = 0;
            let chunk = v1::AuditChunk {
                lines: std::mem::take(&mut lines),
            };
            if let Err((code, why)) = send(Ok(chunk)) {
                client_lost = Some((code, why));
                return Err(StoreError::Unavailable(format!("the client {why}")));
            }
        }
        Ok(())
    });
    let ended = match (result, client_lost) {
        (_, Some(lost)) => Err(lost),
        (Ok(()), None) if lines.is_empty() => Ok(()),
        (Ok(()), None) => send(Ok(v1::AuditChunk { lines })),
        (Err(e), None) => {
            let status = to_status(kms_core::Error::from(e), &request_id);
            let code = status.code();
            // Sent or not, the export failed.
            let _ = send(Err(status));
            Err((code, "got an error in place of the rest of the trail"))
        }
    };
    let Err((code, why)) = ended else {
        return;
    };
    tracing::info!(request_id, "audit export incomplete: the client {why}");
    let record = Event {
        outcome: crate::audit_layer::outcome(code),
        flags: vec![EXPORT_INCOMPLETE],
        ..begun
    };
    if let Err(e) = log.append_blocking(record) {
        tracing::error!(request_id, error = %e, "the incomplete export could not be recorded");
    }
}

#[tonic::async_trait]
impl Audit for Shared {
    async fn get_audit_public_key(
        &self,
        req: Request<v1::GetAuditPublicKeyRequest>,
    ) -> Result<Response<v1::AuditPublicKeyResponse>, Status> {
        let call = self.identify(&req).await?;
        let (out, versions) = self
            .run(&call, |kms, _| {
                Ok((kms.audit_public_key()?, kms.audit_public_keys()?))
            })
            .await?;
        call.note_key(&out.key_id, Some(out.key_version));
        Ok(Response::new(v1::AuditPublicKeyResponse {
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
            public_key_pem: out.public_key.to_pem(),
            public_key_der: out.public_key.spki_der().to_vec(),
            versions: versions
                .iter()
                .map(|v| v1::AuditKeyVersion {
                    version: v.version,
                    fingerprint_sm3: kms_core::audit::fingerprint(&v.public_key),
                    public_key_pem: v.public_key.to_pem(),
                    public_key_der: v.public_key.spki_der().to_vec(),
                    created_at: v.created_at,
                })
                .collect(),
        }))
    }

    type ExportAuditStream = Lines;

    /// Streams the export: authorisation, the sealed check and the export's start (anchor,
    /// tail, the signed closing checkpoint) run first, so a refusal is the call's status; the
    /// lines then come from a thread of their own through a bounded channel, so neither side
    /// ever holds the trail whole and a slow client slows the reader instead of filling memory.
    async fn export_audit(
        &self,
        req: Request<v1::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        let call = self.identify(&req).await?;
        let log = call.check(self.audit.clone().ok_or(Refusal::NoAuditTrail))?;
        let reader = Arc::clone(&log);
        let export = self
            .run(&call, move |kms, p| {
                authorize::<ops::ExportAudit>(p)?;
                if kms.is_sealed() {
                    return Err(kms_core::Error::Sealed);
                }
                reader.begin_export().map_err(kms_core::Error::from)
            })
            .await?;
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let begun = Event {
            request_id: call.request_id.clone(),
            principal: call.principal.subject.clone(),
            role: Role::from(&call.principal.role),
            // As the audit layer names the call that began it.
            operation: Operation::ExportAudit,
            ..Event::default()
        };
        // A thread of its own rather than the blocking pool: an export of a long trail to a slow
        // client lasts as long as the client takes, and must not hold one of the pool's few
        // threads that every request needs.
        let spawned = std::thread::Builder::new()
            .name("kms-audit-export".into())
            .spawn(move || stream_export(export, &tx, &log, begun));
        if let Err(e) = spawned {
            return Err(to_status(
                Refusal::AuditUnavailable(format!("no thread for the export: {e}")),
                &call.request_id,
            ));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn export_inventory(
        &self,
        req: Request<v1::ExportInventoryRequest>,
    ) -> Result<Response<v1::InventoryResponse>, Status> {
        let call = self.identify(&req).await?;
        let inv = self
            .run(&call, |kms, p| kms.inventory(&authorize(p)?))
            .await?;
        let json = call.check(
            serde_json::to_string_pretty(&inv).map_err(|_| Refusal::Encoding("the inventory")),
        )?;
        Ok(Response::new(v1::InventoryResponse { json }))
    }
}
