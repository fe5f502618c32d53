//! Request verification (`kms.v1.RequestVerification`, issue 22 item 3): a thin handler over
//! `Kms::verify_request` (`kms-core/src/kms/request.rs`).
//!
//! Every verdict is an OK answer; the audit record names the key and version and carries the
//! verdict as a flag (`verified`, `bad-signature`, `stale`, `replayed`, `malformed`), never the
//! body, nonce, path or signature. A verification records a nonce (a store write on success),
//! so it runs on the blocking pool.

use kms_core::audit::Flag;
use kms_core::authz::authorize;
use kms_core::signed_request::{RequestBody, RequestParts, RequestScheme};
use kms_core::{InvalidInput, RequestVerdict};
use kms_proto::v1::{self, request_verification_server::RequestVerification};
use tonic::{Request, Response, Status};

use super::Shared;
use crate::convert;
use crate::status::to_status;

fn scheme(name: &str) -> Result<RequestScheme, InvalidInput> {
    RequestScheme::parse(name).ok_or_else(|| {
        InvalidInput::new(
            "scheme",
            format!(
                "{:?} is not a request scheme; use sm2, hmac-sm3 or rsa-pss",
                name.chars().take(32).collect::<String>()
            ),
        )
    })
}

#[tonic::async_trait]
impl RequestVerification for Shared {
    async fn verify_request(
        &self,
        req: Request<v1::SignedRequest>,
    ) -> Result<Response<v1::VerifyRequestResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        let scheme = call.check(scheme(&m.scheme))?;
        if !m.body.is_empty() && !m.body_digest.is_empty() {
            return Err(to_status(
                InvalidInput::new(
                    "body",
                    "give the body or its digest (body_digest), not both",
                ),
                &call.request_id,
            ));
        }
        // Bodies as large as any payload (64 KiB by default); larger ones go as their digest.
        call.check(self.limits.check_payload("body", m.body.len()))?;
        call.note_key(&m.key, None);
        let out = self
            .run(&call, move |kms, p| {
                let body = if m.body_digest.is_empty() {
                    RequestBody::Bytes(&m.body)
                } else {
                    RequestBody::Digest(&m.body_digest)
                };
                let parts = RequestParts {
                    method: &m.method,
                    path: &m.path,
                    timestamp: m.timestamp,
                    nonce: &m.nonce,
                    body,
                };
                kms.verify_request(&authorize(p)?, &key, scheme, &parts, &m.signature)
            })
            .await?;
        call.note_use(&out.key_id, out.key_version, out.key_compromised);
        let (verdict, flag, reason) = match out.verdict {
            RequestVerdict::Ok => (v1::RequestVerdict::Ok, Flag::RequestVerified, String::new()),
            RequestVerdict::BadSignature => (
                v1::RequestVerdict::BadSignature,
                Flag::BadSignature,
                String::new(),
            ),
            RequestVerdict::Stale { skew } => (
                v1::RequestVerdict::Stale,
                Flag::Stale,
                format!(
                    "the timestamp is {skew} s from the KMS's clock, outside the window of ±{} s",
                    self.kms.replay_guard().settings().window.as_secs()
                ),
            ),
            RequestVerdict::Replayed => {
                (v1::RequestVerdict::Replayed, Flag::Replayed, String::new())
            }
            RequestVerdict::Malformed(m) => (
                v1::RequestVerdict::Malformed,
                Flag::Malformed,
                m.to_string(),
            ),
        };
        call.note_flag(flag);
        Ok(Response::new(v1::VerifyRequestResponse {
            verdict: verdict.into(),
            reason,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
            key_compromised: out.key_compromised,
        }))
    }
}
