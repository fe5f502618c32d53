//! Request verification with a replay guard (issue 22 item 3): `VerifyRequest`.
//!
//! A gateway hands the KMS a partner's signed request ([`crate::signed_request`]): the scheme,
//! signature, timestamp, nonce, method, path and body (or its digest). The key is a sign key
//! (`sm2`, `rsa-pss`; usually a partner's public key imported with `ImportPublicKey`) or an
//! HMAC-SM3 MAC key shared with the partner. In this order:
//!
//! 1. the key is reached (namespace or grant `verify-request`), its purpose, state and policy
//!    checked, and the scheme must be the key's own: a caller error otherwise, no verdict;
//! 2. **malformed**: a field whose shape breaks the canonical string's rules;
//! 3. **stale**: a timestamp outside ± the replay window (`[replay] window_seconds`);
//! 4. **bad signature**: no version of the key verifies it (newest first, so partners keep
//!    working across a rotation);
//! 5. **replayed**: the nonce is recorded with the replay guard (domain `request`, the key's
//!    id) only now, so a forged request cannot use up a genuine one's nonce; a nonce seen
//!    within the window is a replay, on every node sharing the store.
//!
//! Each verdict is an answer (the call is OK) and is audited as a flag; the body, nonce and
//! signature never reach the trail.

use super::Kms;
use crate::alg::{DigestAlg, KeySpec, Purpose, RsaSigScheme, SignatureParams};
use crate::authz::{Authorized, ops};
use crate::crypto::{self, Message, PublicKey};
use crate::error::{Error, InvalidInput};
use crate::keys::record::KeyRecord;
use crate::keys::state::KeyState;
use crate::keys::{KeyId, KeyRef};
use crate::replay::Freshness;
use crate::signed_request::{self, Malformed, RequestParts, RequestScheme};

/// What a signed request turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Signed by the key, fresh, and its nonce new (now recorded).
    Ok,
    BadSignature,
    /// Its timestamp is this many seconds from the KMS's clock, more than the window.
    Stale {
        skew: u64,
    },
    Replayed,
    Malformed(Malformed),
}

/// What `VerifyRequest` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyRequestOutput {
    pub verdict: RequestVerdict,
    pub key_id: KeyId,
    /// The version that verified the signature; 0 when none did (or none was tried).
    pub key_version: u32,
    /// The key is compromised (KEY-8: verification is allowed, and flagged).
    pub key_compromised: bool,
}

/// Whether `spec` is a key the scheme can use.
fn scheme_fits(scheme: RequestScheme, spec: KeySpec) -> bool {
    match scheme {
        RequestScheme::Sm2 => spec == KeySpec::Sm2,
        RequestScheme::RsaPss => {
            matches!(spec, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096)
        }
        RequestScheme::HmacSm3 => spec == KeySpec::HmacSm3,
    }
}

impl Kms {
    /// Checks a partner's signed request (module docs).
    ///
    /// # Errors
    /// Reach, purpose, state and policy of the key (as every data-plane call); a scheme that is
    /// not the key's; a store failure or a full nonce store (RESOURCE_EXHAUSTED). Everything
    /// about the request itself is a [`RequestVerdict`], not an error.
    pub fn verify_request(
        &self,
        auth: &Authorized<'_, ops::VerifyRequest>,
        key: &KeyRef,
        scheme: RequestScheme,
        parts: &RequestParts<'_>,
        signature: &[u8],
    ) -> Result<VerifyRequestOutput, Error> {
        let purpose = match scheme {
            RequestScheme::Sm2 | RequestScheme::RsaPss => Purpose::Sign,
            RequestScheme::HmacSm3 => Purpose::Mac,
        };
        let (vault, record, approved) = self.for_open(auth, key, purpose)?;
        if !scheme_fits(scheme, record.spec) {
            return Err(InvalidInput::new(
                "scheme",
                format!(
                    "{scheme} cannot be checked with key {}, a {} key",
                    record.id, record.spec
                ),
            )
            .into());
        }
        let answer = |verdict, key_version| VerifyRequestOutput {
            verdict,
            key_id: record.id,
            key_version,
            key_compromised: record.state == KeyState::Compromised,
        };
        if let Err(m) = signed_request::check_shape(scheme, parts, signature) {
            return Ok(answer(RequestVerdict::Malformed(m), 0));
        }
        let guard = self.replay_guard();
        let now = self.now();
        if !guard.within_window(parts.timestamp, now) {
            let skew = parts.timestamp.abs_diff(now);
            return Ok(answer(RequestVerdict::Stale { skew }, 0));
        }
        let canonical = match signed_request::canonical(scheme, parts) {
            Ok(c) => c,
            Err(m) => return Ok(answer(RequestVerdict::Malformed(m), 0)),
        };
        let version = match scheme {
            RequestScheme::HmacSm3 => {
                let mut good = None;
                for v in record.versions.iter().rev() {
                    let material = self.material(&vault, &record, v.version)?;
                    // A tag of the wrong length is as bad as a wrong one.
                    if crypto::verify_mac(&approved, &material, &canonical, signature)
                        .unwrap_or(false)
                    {
                        good = Some(v.version);
                        break;
                    }
                }
                good
            }
            RequestScheme::Sm2 | RequestScheme::RsaPss => {
                self.signed_by(&record, approved, scheme, &canonical, signature)?
            }
        };
        let Some(version) = version else {
            return Ok(answer(RequestVerdict::BadSignature, 0));
        };
        let verdict = match guard.remember(
            "request",
            &record.id.to_string(),
            parts.nonce,
            parts.timestamp,
            now,
        )? {
            Freshness::Fresh => RequestVerdict::Ok,
            Freshness::Replayed => RequestVerdict::Replayed,
            // The window was checked above with the same clock reading and width.
            Freshness::Stale => RequestVerdict::Stale {
                skew: parts.timestamp.abs_diff(now),
            },
        };
        Ok(answer(verdict, version))
    }

    /// The newest version of a sign key whose public key verifies `signature` over `canonical`
    /// under the scheme's fixed parameters (SM2 default ID; PSS over SHA-256), if any.
    fn signed_by(
        &self,
        record: &KeyRecord,
        approved: crate::policy::Approved<crate::policy::Open>,
        scheme: RequestScheme,
        canonical: &[u8],
        signature: &[u8],
    ) -> Result<Option<u32>, Error> {
        let params = match scheme {
            RequestScheme::RsaPss => SignatureParams {
                rsa_scheme: Some(RsaSigScheme::Pss),
                hash: Some(DigestAlg::Sha256),
                sm2_id: None,
            },
            RequestScheme::Sm2 | RequestScheme::HmacSm3 => SignatureParams::default(),
        };
        let request = params.resolve(record.spec)?;
        let checked = self.config.policy.approve_verify(approved, request)?;
        for v in record.versions.iter().rev() {
            let Some(der) = &v.public_key else { continue };
            let public = PublicKey::from_trusted(record.spec, der.clone())?;
            // A signature that does not even parse is as bad as one that does not verify.
            if crypto::verify(&checked, &public, Message::Raw(canonical), signature)
                .unwrap_or(false)
            {
                return Ok(Some(v.version));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
