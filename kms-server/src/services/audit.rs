//! The audit trail and the inventory, for auditors (`kms.v1.Audit`).

use std::pin::Pin;

use kms_core::authz::{self, Op};
use kms_proto::v1::{self, audit_server::Audit};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::Shared;

type Lines = Pin<Box<dyn Stream<Item = Result<v1::AuditChunk, Status>> + Send>>;

/// Lines per streamed chunk.
const LINES_PER_CHUNK: usize = 1000;

#[tonic::async_trait]
impl Audit for Shared {
    async fn get_audit_public_key(
        &self,
        req: Request<v1::GetAuditPublicKeyRequest>,
    ) -> Result<Response<v1::AuditPublicKeyResponse>, Status> {
        let call = self.identify(&req).await?;
        let out = self.run(&call, |kms, _| kms.audit_public_key()).await?;
        call.note_key(&out.key_id, Some(out.key_version));
        Ok(Response::new(v1::AuditPublicKeyResponse {
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
            public_key_pem: out.public_key.to_pem(),
            public_key_der: out.public_key.spki_der().to_vec(),
        }))
    }

    type ExportAuditStream = Lines;

    async fn export_audit(
        &self,
        req: Request<v1::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        let call = self.identify(&req).await?;
        let log = self
            .audit
            .clone()
            .ok_or_else(|| Status::unavailable("this server keeps no audit trail"))?;
        let text = self
            .run(&call, move |kms, p| {
                authz::authorize(p, Op::ExportAudit)?;
                if kms.is_sealed() {
                    return Err(kms_core::Error::Sealed);
                }
                log.export().map_err(kms_core::Error::from)
            })
            .await?;
        let lines: Vec<&str> = text.lines().collect();
        let chunks: Vec<Result<v1::AuditChunk, Status>> = lines
            .chunks(LINES_PER_CHUNK)
            .map(|c| {
                Ok(v1::AuditChunk {
                    lines: c.iter().map(|l| format!("{l}\n")).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn export_inventory(
        &self,
        req: Request<v1::ExportInventoryRequest>,
    ) -> Result<Response<v1::InventoryResponse>, Status> {
        let call = self.identify(&req).await?;
        let inv = self.run(&call, |kms, p| kms.inventory(p)).await?;
        let json = serde_json::to_string_pretty(&inv)
            .map_err(|_| Status::internal("inventory encoding failed"))?;
        Ok(Response::new(v1::InventoryResponse { json }))
    }
}
