//! Init, unseal, seal, status, backup and restore (`kms.v1.System`).

use std::pin::Pin;
use std::sync::Arc;

use kms_core::alg::KeySpec;
use kms_core::audit::Flag;
use kms_core::authz::authorize;
use kms_core::crypto::PublicKey;
use kms_core::custody::{Holder, InitPlan, IssuedShare, ShareForm};
use kms_core::hierarchy::share::Share;
use kms_core::policy::Policy;
use kms_core::{Error, RestoreProgress, UnsealProgress};
use kms_proto::v1::{self, system_server::System};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use zeroize::Zeroizing;

use super::Shared;
use crate::bootstrap::Bootstrap;
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
    bootstrap: Bootstrap,
}

impl SystemService {
    #[must_use]
    pub fn new(shared: Shared, owner: Arc<kms_core::System>, bootstrap: Bootstrap) -> Self {
        Self {
            shared,
            owner,
            bootstrap,
        }
    }
}

/// The holders an init request names, their public keys parsed under the configured policy
/// (an RSA key under 2048 bits, or a non-GM key under gm-only, is refused).
fn holders(policy: Policy, given: Vec<v1::ShareHolder>) -> Result<Vec<Holder>, Refusal> {
    given
        .into_iter()
        .map(|h| {
            let public_key = if h.public_key_pem.trim().is_empty() {
                None
            } else {
                Some(PublicKey::from_spki_pem(policy, &h.public_key_pem)?)
            };
            Ok(Holder {
                subject: h.subject,
                public_key,
            })
        })
        .collect()
}

fn issued_share(s: IssuedShare) -> v1::IssuedShare {
    let holder = s.holder.unwrap_or_default();
    match s.form {
        ShareForm::Plain(share) => v1::IssuedShare {
            holder,
            share: share.expose_text().to_owned(),
            ..v1::IssuedShare::default()
        },
        ShareForm::Encrypted {
            spec,
            ciphertext,
            recipient_sm3,
        } => v1::IssuedShare {
            holder,
            share: String::new(),
            encrypted_share: ciphertext,
            encryption: if spec == KeySpec::Sm2 {
                "sm2"
            } else {
                "rsa-oaep-sha256"
            }
            .to_owned(),
            recipient_sm3: hex::encode(recipient_sm3),
        },
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
        mut req: Request<v1::InitRequest>,
    ) -> Result<Response<v1::InitResponse>, Status> {
        let (slot, request_id) = self.slot(&req);
        let refuse = |r: Refusal| to_status(r, &request_id);
        if !self.uninitialised(&request_id).await? {
            return Err(refuse(Refusal::AlreadyInitialised));
        }
        let subject = Shared::subject(&req).map_err(refuse)?;
        let token = Zeroizing::new(std::mem::take(&mut req.get_mut().init_token));
        self.bootstrap
            .admit(&subject, &token, "initialise the KMS")
            .map_err(refuse)?;
        let m = req.into_inner();
        let shares = u8::try_from(m.shares)
            .map_err(|_| refuse(Refusal::BadRequest("shares must be 0 to 255".into())))?;
        let threshold = u8::try_from(m.threshold)
            .map_err(|_| refuse(Refusal::BadRequest("threshold must be 1 to 255".into())))?;
        let admin = if m.admin_subject.is_empty() {
            subject.clone()
        } else {
            m.admin_subject
        };
        let plan = InitPlan {
            admin: admin.clone(),
            threshold,
            holders: holders(self.kms.policy(), m.holders).map_err(refuse)?,
            shares,
        };
        let holder_names: Vec<String> = plan.holders.iter().map(|h| h.subject.clone()).collect();
        if let Some(slot) = slot {
            slot.update(|n| n.principal = Some(subject.clone()));
        }
        let owner = Arc::clone(&self.owner);
        let out = tokio::task::spawn_blocking(move || owner.init_plan(&plan))
            .await
            .map_err(|_| worker_failed(&request_id))?
            .map_err(|e| to_status(e, &request_id))?;
        self.bootstrap.spend();
        tracing::warn!(
            admin,
            by = subject,
            holders = ?holder_names,
            shares = out.shares.len(),
            threshold,
            "KMS initialised; the unseal shares were returned to the caller"
        );
        let (shares, issued) = if holder_names.is_empty() {
            let plain = out
                .shares
                .into_iter()
                .filter_map(|s| match s.form {
                    ShareForm::Plain(share) => Some(share.expose_text().to_owned()),
                    ShareForm::Encrypted { .. } => None,
                })
                .collect();
            (plain, Vec::new())
        } else {
            (
                Vec::new(),
                out.shares.into_iter().map(issued_share).collect(),
            )
        };
        Ok(Response::new(v1::InitResponse {
            shares,
            threshold: out.threshold.into(),
            admin_subject: admin,
            issued,
        }))
    }

    async fn unseal(
        &self,
        mut req: Request<v1::UnsealRequest>,
    ) -> Result<Response<v1::UnsealResponse>, Status> {
        let (_, request_id) = self.slot(&req);
        if self.uninitialised(&request_id).await? && self.kms.restore_staged() {
            let share = take_share(&mut req.get_mut().share);
            return self.give_restore_share(&req, share, &request_id).await;
        }
        let call = self.identify(&req).await?;
        let share = take_share(&mut req.into_inner().share);
        let unsealing = self
            .run(&call, move |kms, p| kms.unseal(&authorize(p)?, &share))
            .await?;
        if unsealing.break_glass {
            call.note_flag(Flag::BreakGlass);
            tracing::warn!(
                by = call.principal.subject,
                request_id = call.request_id,
                "break-glass unseal: a share was given by someone other than its holder"
            );
        }
        let (sealed, progress, threshold) = match unsealing.progress {
            UnsealProgress::NeedMore { have, threshold } => (true, have, threshold),
            UnsealProgress::Unsealed => (false, 0, 0),
        };
        Ok(Response::new(v1::UnsealResponse {
            sealed,
            progress: progress.into(),
            threshold: threshold.into(),
            restored_entries: 0,
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
        let subject = Shared::subject(&req).map_err(refuse)?;
        let mut stream = req.into_inner();
        let mut shares = Vec::new();
        let mut data = Vec::new();
        let mut first = true;
        while let Some(chunk) = stream.next().await {
            let mut chunk = chunk?;
            if std::mem::take(&mut first) {
                let token = Zeroizing::new(std::mem::take(&mut chunk.init_token));
                self.bootstrap
                    .admit(&subject, &token, "restore into the KMS")
                    .map_err(refuse)?;
            }
            shares.extend(chunk.shares.iter_mut().map(take_share));
            // The chunk's data is a backup (ciphertext) and needs no wiping.
            if data.len() + chunk.data.len() > MAX_RESTORE_BYTES {
                return Err(refuse(Refusal::BadRequest(
                    "the backup is larger than 1 GiB".into(),
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        let staged =
            kms_core::System::inspect_backup(&data).map_err(|e| to_status(e, &request_id))?;
        let owner = Arc::clone(&self.owner);
        if shares.is_empty() {
            let info = tokio::task::spawn_blocking(move || owner.stage_restore(data))
                .await
                .map_err(|_| worker_failed(&request_id))?
                .map_err(|e| to_status(e, &request_id))?;
            tracing::warn!(
                by = subject,
                threshold = info.threshold,
                "a backup is staged on this node; it is written once its holders give their shares"
            );
            return Ok(Response::new(v1::RestoreResponse {
                entries: 0,
                staged: true,
                threshold: info.threshold.into(),
                holders: info.holders.into_iter().flatten().collect(),
            }));
        }
        if staged.threshold > 1 {
            return Err(refuse(Refusal::BadRequest(
                format!(
                    "this backup needs {} shares from distinct holders: restore it without \
                     shares, then each holder gives theirs with `kms unseal`",
                    staged.threshold
                )
                .into(),
            )));
        }
        let entries = tokio::task::spawn_blocking(move || owner.restore(&data, &shares))
            .await
            .map_err(|_| worker_failed(&request_id))?
            .map_err(|e: Error| to_status(e, &request_id))?;
        self.bootstrap.spend();
        tracing::warn!(
            entries,
            by = subject,
            "store restored from a backup; the KMS is sealed"
        );
        Ok(Response::new(v1::RestoreResponse {
            entries,
            ..v1::RestoreResponse::default()
        }))
    }
}

impl SystemService {
    /// A share towards the backup staged on this node, from the caller's certificate subject
    /// (its holders are not registered until it is written; the custody rules check the giver
    /// against the holder the backup names).
    async fn give_restore_share<T>(
        &self,
        req: &Request<T>,
        share: Share,
        request_id: &str,
    ) -> Result<Response<v1::UnsealResponse>, Status> {
        let subject = Shared::subject(req).map_err(|e| to_status(e, request_id))?;
        let (slot, _) = self.slot(req);
        let owner = Arc::clone(&self.owner);
        let giver = subject.clone();
        let (progress, break_glass) =
            tokio::task::spawn_blocking(move || owner.give_restore_share(&share, &giver))
                .await
                .map_err(|_| worker_failed(request_id))?
                .map_err(|e| to_status(e, request_id))?;
        if let Some(slot) = slot {
            slot.update(|n| {
                n.principal = Some(subject.clone());
                if break_glass {
                    n.flags.push(Flag::BreakGlass);
                }
            });
        }
        Ok(Response::new(match progress {
            RestoreProgress::NeedMore { have, threshold } => v1::UnsealResponse {
                sealed: true,
                progress: have.into(),
                threshold: threshold.into(),
                restored_entries: 0,
            },
            RestoreProgress::Restored { entries } => {
                self.bootstrap.spend();
                tracing::warn!(
                    entries,
                    by = subject,
                    "staged backup restored by its holders; the KMS is unsealed"
                );
                v1::UnsealResponse {
                    sealed: false,
                    progress: 0,
                    threshold: 0,
                    restored_entries: entries,
                }
            }
        }))
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
