//! The password shield (`kms.v1.PasswordShield`, issue 22 item 2): thin handlers over
//! `Kms::hash_password` and `Kms::verify_password` (`kms-core/src/kms/password.rs`).
//!
//! The audit record names the password key (`key_id`), the pepper key (`pepper`) and what
//! became of the password as flags: `weak-password`, `stale`, `replayed` on a refusal;
//! `match` / `no-match` (and `rehashed`) on a verification. Never the password, the hash, the
//! nonce or the identifiers. Hashing is deliberately slow (about 50 ms), so it runs on the
//! blocking pool.

use std::sync::OnceLock;

use kms_core::audit::{Flag, PepperUse};
use kms_core::authz::authorize;
use kms_core::{Error, PasswordRefusal};
use kms_proto::v1::{self, password_shield_server::PasswordShield};
use tonic::{Request, Response, Status};

use super::{Call, Shared};
use crate::convert;
use crate::status::to_status;

impl Call {
    /// Records the pepper key and version a password-shield call used.
    fn note_pepper(&self, key_id: &impl ToString, version: u32) {
        if let Some(s) = &self.slot {
            s.update(|n| {
                n.pepper = Some(PepperUse {
                    key_id: key_id.to_string(),
                    key_version: version,
                });
            });
        }
    }

    /// A core refusal as this call's status, with the flag saying which refusal it was.
    fn password_refusal(&self, e: Error) -> Status {
        if let Error::Password(r) = &e {
            let flag = match r {
                PasswordRefusal::Weak(_) => Some(Flag::WeakPassword),
                PasswordRefusal::Stale { .. } => Some(Flag::Stale),
                PasswordRefusal::Replayed => Some(Flag::Replayed),
                // A refusal added later shows as its code alone.
                _ => None,
            };
            if let Some(flag) = flag {
                self.note_flag(flag);
            }
        }
        to_status(e, &self.request_id)
    }
}

/// At most one password hash per core at a time: more only adds latency, and each argon2id
/// hash holds its memory cost (32 MiB by default) while it runs, so the queue bounds memory
/// too. Calls beyond it wait (their deadlines still apply).
fn hash_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, usize::from))
    })
}

/// Checks the sizes before anything is decoded further: ciphertext, identifiers, stored hash.
fn check_sizes(
    call: &Call,
    sealed: &[u8],
    identifiers: &[String],
    stored: Option<&str>,
) -> Result<(), Status> {
    let bad = |what: &'static str| {
        Err(to_status(
            Error::from(kms_core::InvalidInput::new(what, "is too large")),
            &call.request_id,
        ))
    };
    if sealed.len() > kms_core::MAX_SEALED_CIPHERTEXT {
        return bad("sealed password");
    }
    if identifiers.len() > kms_core::MAX_IDENTIFIERS
        || identifiers
            .iter()
            .any(|i| i.len() > kms_core::MAX_IDENTIFIER_BYTES)
    {
        return bad("identifiers");
    }
    if stored.is_some_and(|s| s.len() > kms_core::crypto::password_hash::STORED_MAX_LEN) {
        return bad("stored hash");
    }
    Ok(())
}

#[tonic::async_trait]
impl PasswordShield for Shared {
    async fn hash_password(
        &self,
        req: Request<v1::HashPasswordRequest>,
    ) -> Result<Response<v1::HashPasswordResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        check_sizes(&call, &m.sealed_password, &m.identifiers, None)?;
        let password_key = call.check(convert::key_ref(&m.password_key, &call.principal))?;
        let pepper_key = call.check(convert::key_ref(&m.pepper_key, &call.principal))?;
        call.note_key(&m.password_key, None);
        let sealed = m.sealed_password;
        let identifiers = m.identifiers;
        let _slot = hash_slots().acquire().await.ok();
        // The core's error is kept (not mapped inside `run`) so that its refusal names a flag.
        let out = self
            .run(&call, move |kms, p| {
                Ok(kms.hash_password(
                    &authorize(p)?,
                    &password_key,
                    &pepper_key,
                    &sealed,
                    &identifiers,
                ))
            })
            .await?
            .map_err(|e| call.password_refusal(e))?;
        call.note_key(&out.password_key, Some(out.password_key_version));
        call.note_pepper(&out.pepper_key, out.pepper_key_version);
        Ok(Response::new(v1::HashPasswordResponse {
            hash: out.hash,
            password_key_id: out.password_key.to_string(),
            password_key_version: out.password_key_version,
            pepper_key_id: out.pepper_key.to_string(),
            pepper_key_version: out.pepper_key_version,
        }))
    }

    async fn verify_password(
        &self,
        req: Request<v1::VerifyPasswordRequest>,
    ) -> Result<Response<v1::VerifyPasswordResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        check_sizes(
            &call,
            &m.sealed_password,
            &m.identifiers,
            Some(&m.stored_hash),
        )?;
        let password_key = call.check(convert::key_ref(&m.password_key, &call.principal))?;
        call.note_key(&m.password_key, None);
        let sealed = m.sealed_password;
        let stored = m.stored_hash;
        let identifiers = m.identifiers;
        let _slot = hash_slots().acquire().await.ok();
        let out = self
            .run(&call, move |kms, p| {
                Ok(kms.verify_password(
                    &authorize(p)?,
                    &password_key,
                    &sealed,
                    &stored,
                    &identifiers,
                ))
            })
            .await?
            .map_err(|e| call.password_refusal(e))?;
        call.note_use(
            &out.password_key,
            out.password_key_version,
            out.key_compromised,
        );
        call.note_pepper(&out.pepper_key, out.pepper_key_version);
        call.note_flag(if out.matched {
            Flag::PasswordMatch
        } else {
            Flag::PasswordNoMatch
        });
        if out.rehashed.is_some() {
            call.note_flag(Flag::Rehashed);
        }
        Ok(Response::new(v1::VerifyPasswordResponse {
            matched: out.matched,
            rehashed: out.rehashed.unwrap_or_default(),
            weak: out.weak,
            password_key_id: out.password_key.to_string(),
            password_key_version: out.password_key_version,
            pepper_key_id: out.pepper_key.to_string(),
            pepper_key_version: out.pepper_key_version,
            key_compromised: out.key_compromised,
        }))
    }
}
