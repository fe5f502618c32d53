//! Init, unseal, seal, status, backup and restore (`kms.v1.System`).

use std::pin::Pin;
use std::sync::Arc;

use kms_core::authz::authorize;
use kms_core::hierarchy::share::Share;
use kms_core::{Error, UnsealProgress};
use kms_proto::v1::{self, system_server::System};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::status::{Refusal, to_status, worker_failed};

/// Backups go out in chunks of this size.
const CHUNK: usize = 1024 * 1024;
/// The largest restore accepted (the whole file is held in memory to check it before writing).
const MAX_RESTORE_BYTES: usize = 1024 * 1024 * 1024;

type BackupStream = Pin<Box<dyn Stream<Item = Result<v1::BackupChunk, Status>> + Send>>;

/// Moves an unseal share out of a request's string field into a [`Share`] (which wipes itself)
/// and wipes the field, as `take_secret` does for byte fields.
fn take_share(field: &mut String) -> Share {
    let share = Share::from_text(field);
    zeroize::Zeroize::zeroize(field);
    share
}

/// `kms.v1.System`: the one service that holds the core's [`kms_core::System`] handle, for init
/// and restore (which no principal can be authorised for: there are none yet). Everything else
/// goes through [`Shared`] like every handler.
#[derive(Clone)]
pub struct SystemService {
    shared: Shared,
    owner: Arc<kms_core::System>,
}

impl SystemService {
    #[must_use]
    pub fn new(shared: Shared, owner: Arc<kms_core::System>) -> Self {
        Self { shared, owner }
    }
}

impl std::ops::Deref for SystemService {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Shared {
    /// Before init, any certificate the CA issued may initialise (there are no principals yet).
    /// `request_id` is the audit slot's (see [`Shared::slot`]), never a literal.
    async fn uninitialised(&self, request_id: &str) -> Result<bool, Status> {
        let kms = Arc::clone(&self.kms);
        let status = tokio::task::spawn_blocking(move || kms.status())
            .await
            .map_err(|_| worker_failed(request_id))?
            .map_err(|e| to_status(e, request_id))?;
        Ok(!status.initialized)
    }
}

#[tonic::async_trait]
impl System for SystemService {
    async fn status(
        &self,
        req: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let (_, request_id) = self.slot(&req);
        let (caller_subject, caller_role) = if self.uninitialised(&request_id).await? {
            (
                Shared::subject(&req).map_err(|e| to_status(e, &request_id))?,
                String::new(),
            )
        } else {
            let call = self.identify(&req).await?;
            (
                call.principal.subject.clone(),
                call.principal.role.name().to_owned(),
            )
        };
        let kms = Arc::clone(&self.kms);
        let s = tokio::task::spawn_blocking(move || kms.status())
            .await
            .map_err(|_| worker_failed(&request_id))?
            .map_err(|e| to_status(e, &request_id))?;
        Ok(Response::new(v1::StatusResponse {
            initialized: s.initialized,
            sealed: s.sealed,
            shares: s.shares.into(),
            threshold: s.threshold.into(),
            unseal_progress: s.progress.into(),
            policy: s.policy.to_owned(),
            store: s.store.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            caller_subject,
            caller_role,
        }))
    }

    async fn init(
        &self,
        req: Request<v1::InitRequest>,
    ) -> Result<Response<v1::InitResponse>, Status> {
        let (_, request_id) = self.slot(&req);
        let refuse = |r: Refusal| to_status(r, &request_id);
        if !self.uninitialised(&request_id).await? {
            return Err(refuse(Refusal::AlreadyInitialised));
        }
        let subject = Shared::subject(&req).map_err(refuse)?;
        let m = req.into_inner();
        let shares = u8::try_from(m.shares)
            .map_err(|_| refuse(Refusal::BadRequest("shares must be 1 to 255".into())))?;
        let threshold = u8::try_from(m.threshold)
            .map_err(|_| refuse(Refusal::BadRequest("threshold must be 1 to 255".into())))?;
        let admin = if m.admin_subject.is_empty() {
            subject
        } else {
            m.admin_subject
        };
        let owner = Arc::clone(&self.owner);
        let who = admin.clone();
        let out = tokio::task::spawn_blocking(move || owner.init(shares, threshold, &who))
            .await
            .map_err(|_| worker_failed(&request_id))?
            .map_err(|e| to_status(e, &request_id))?;
        tracing::warn!(
            admin,
            shares,
            threshold,
            "KMS initialised; unseal shares were returned to the caller"
        );
        Ok(Response::new(v1::InitResponse {
            shares: out
                .shares
                .iter()
                .map(|s| s.expose_text().to_owned())
                .collect(),
            threshold: out.threshold.into(),
            admin_subject: admin,
        }))
    }

    async fn unseal(
        &self,
        req: Request<v1::UnsealRequest>,
    ) -> Result<Response<v1::UnsealResponse>, Status> {
        let call = self.identify(&req).await?;
        let share = take_share(&mut req.into_inner().share);
        let progress = self
            .run(&call, move |kms, p| kms.unseal(&authorize(p)?, &share))
            .await?;
        let (sealed, progress, threshold) = match progress {
            UnsealProgress::NeedMore { have, threshold } => (true, have, threshold),
            UnsealProgress::Unsealed => (false, 0, 0),
        };
        Ok(Response::new(v1::UnsealResponse {
            sealed,
            progress: progress.into(),
            threshold: threshold.into(),
        }))
    }

    async fn seal(
        &self,
        req: Request<v1::SealRequest>,
    ) -> Result<Response<v1::SealResponse>, Status> {
        let call = self.identify(&req).await?;
        self.run(&call, move |kms, p| kms.seal(&authorize(p)?))
            .await?;
        tracing::warn!(by = call.principal.subject, "KMS sealed");
        Ok(Response::new(v1::SealResponse {}))
    }

    type BackupStream = BackupStream;

    async fn backup(
        &self,
        req: Request<v1::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let call = self.identify(&req).await?;
        // Under dual control the backup is taken with its released approval (`approvals.rs`).
        let approval = call.check(super::approvals::approval_of(&req))?;
        let bytes = self
            .run(&call, move |kms, p| match approval {
                Some(id) => kms.backup(&kms.release(&authorize(p)?, &id)?),
                None => kms.backup(&authorize(p)?),
            })
            .await?;
        let chunks: Vec<Result<v1::BackupChunk, Status>> = bytes
            .chunks(CHUNK)
            .map(|c| Ok(v1::BackupChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn restore(
        &self,
        req: Request<Streaming<v1::RestoreChunk>>,
    ) -> Result<Response<v1::RestoreResponse>, Status> {
        let (_, request_id) = self.slot(&req);
        let refuse = |r: Refusal| to_status(r, &request_id);
        if !self.uninitialised(&request_id).await? {
            return Err(refuse(Refusal::RestoreNeedsEmptyStore));
        }
        let mut stream = req.into_inner();
        let mut shares = Vec::new();
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            let mut chunk = chunk?;
            shares.extend(chunk.shares.iter_mut().map(take_share));
            // The chunk's data is a backup (ciphertext) and needs no wiping.
            if data.len() + chunk.data.len() > MAX_RESTORE_BYTES {
                return Err(refuse(Refusal::BadRequest(
                    "the backup is larger than 1 GiB".into(),
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        let owner = Arc::clone(&self.owner);
        let entries = tokio::task::spawn_blocking(move || owner.restore(&data, &shares))
            .await
            .map_err(|_| worker_failed(&request_id))?
            .map_err(|e: Error| to_status(e, &request_id))?;
        tracing::warn!(entries, "store restored from a backup; the KMS is sealed");
        Ok(Response::new(v1::RestoreResponse { entries }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_taken_share_leaves_the_request_field_wiped() {
        let mut field = String::from("  kms-share-1-00aa  ");
        let share = super::take_share(&mut field);
        assert_eq!(share.expose_text(), "kms-share-1-00aa");
        // `zeroize` for a String overwrites its bytes, then empties it.
        assert!(field.is_empty());
    }
}
