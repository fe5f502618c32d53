//! Dual control over the API: `KeyAdmin/Approve`, `Reject` and `ListApprovals` (issue 18,
//! item 2). The rules, and what makes them hold on every path, are in the core
//! (`kms-core/src/kms/approvals.rs`); these handlers only convert.

use kms_core::ApprovalRequest;
use kms_core::authz::authorize;
use kms_proto::v1;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::status::Refusal;

/// A request as the API shows it.
#[must_use]
pub fn approval_info(r: &ApprovalRequest) -> v1::ApprovalInfo {
    v1::ApprovalInfo {
        id: r.id.clone(),
        operation: r.params.sensitive().name().to_owned(),
        parameters: r.params.describe(),
        digest: r.digest.clone(),
        requester: r.requester.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        needed: u32::from(r.needed),
        approvers: r.approvers.clone(),
        state: r.state.name().to_owned(),
        rejected_by: r.rejected_by.clone().unwrap_or_default(),
        result: r.result.clone().unwrap_or_default(),
        key_id: r.params.key().map(|k| k.to_string()).unwrap_or_default(),
    }
}

/// An approval id as the caller gave it: `apr-` and hex, nothing else reaches the store.
fn approval_id(id: &str) -> Result<String, Refusal> {
    let ok = id.strip_prefix("apr-").is_some_and(|hex| {
        !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if ok {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(Refusal::BadRequest(
            "id must be an approval request id, `apr-` and hex digits (as `kms approvals list` shows)"
                .into(),
        ))
    }
}

/// The approval id a Backup call carries in its metadata, if any.
pub fn approval_of<T>(req: &Request<T>) -> Result<Option<String>, Refusal> {
    match req.metadata().get(crate::status::APPROVAL_ID) {
        None => Ok(None),
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                Refusal::BadRequest("kms-approval-id must be an approval request id".into())
            })?;
            approval_id(text).map(Some)
        }
    }
}

impl Shared {
    pub(super) async fn approve_call(
        &self,
        req: Request<v1::ApproveRequest>,
    ) -> Result<Response<v1::ApprovalInfo>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let id = call.check(approval_id(&m.id))?;
        let digest = (!m.digest.is_empty()).then_some(m.digest);
        let r = self
            .run(&call, move |kms, p| {
                kms.approve(&authorize(p)?, &id, digest.as_deref())
            })
            .await?;
        if let Some(key) = r.params.key() {
            call.note_key(&key, None);
        }
        Ok(Response::new(approval_info(&r)))
    }

    pub(super) async fn reject_call(
        &self,
        req: Request<v1::RejectRequest>,
    ) -> Result<Response<v1::ApprovalInfo>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let id = call.check(approval_id(&m.id))?;
        let r = self
            .run(&call, move |kms, p| {
                kms.reject(&authorize(p)?, &id, &m.reason)
            })
            .await?;
        if let Some(key) = r.params.key() {
            call.note_key(&key, None);
        }
        Ok(Response::new(approval_info(&r)))
    }

    pub(super) async fn list_approvals_call(
        &self,
        req: Request<v1::ListApprovalsRequest>,
    ) -> Result<Response<v1::ListApprovalsResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let only = if m.id.is_empty() {
            None
        } else {
            Some(call.check(approval_id(&m.id))?)
        };
        let all = self
            .run(&call, move |kms, p| kms.list_approvals(&authorize(p)?))
            .await?;
        Ok(Response::new(v1::ListApprovalsResponse {
            approvals: all
                .iter()
                .filter(|r| only.as_ref().is_none_or(|id| r.id == *id))
                .map(approval_info)
                .collect(),
        }))
    }
}
