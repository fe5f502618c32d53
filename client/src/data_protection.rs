//! The financial data-protection services (issue 22) as [`Client`] methods: tokens
//! (`kms.v1.Tokenization`), the password shield (`kms.v1.PasswordShield`) and request
//! verification (`kms.v1.RequestVerification`).
//!
//! Values, detokenised values and hashes come back in [`Zeroizing`] buffers. The calls that use
//! up a nonce (`hash_password`, `verify_password`, `verify_request`) are never retried: an
//! UNAVAILABLE seen here can follow a call the server carried out, and a repeat would be
//! refused as a replay.

use std::fmt;

use kms_proto::v1::password_shield_client::PasswordShieldClient;
use kms_proto::v1::request_verification_client::RequestVerificationClient;
use kms_proto::v1::tokenization_client::TokenizationClient;
use kms_proto::v1::{self, RequestVerdict};
use zeroize::Zeroizing;

use crate::client::{Client, Context, KmsError};

/// Why one value of a batch was refused: its gRPC code and the server's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemRefusal {
    pub code: tonic::Code,
    pub message: String,
}

fn item_results(results: Vec<v1::TokenResult>) -> Vec<Result<Zeroizing<String>, ItemRefusal>> {
    results
        .into_iter()
        .map(|r| match r.result {
            Some(v1::token_result::Result::Ok(v)) => Ok(Zeroizing::new(v)),
            Some(v1::token_result::Result::Error(e)) => Err(ItemRefusal {
                code: tonic::Code::from_i32(e.code),
                message: e.message,
            }),
            None => Err(ItemRefusal {
                code: tonic::Code::Internal,
                message: "the server sent an empty result".to_owned(),
            }),
        })
        .collect()
}

/// Tokens (or detokenised values), one result per input in order, and the key version:
/// detokenising needs it. `Debug` shows counts only.
pub struct Tokens {
    pub results: Vec<Result<Zeroizing<String>, ItemRefusal>>,
    pub key_id: String,
    pub key_version: u32,
    /// Tokenize: the key makes one-way pseudonyms (hmac-sm3). Detokenize: the key is
    /// compromised (allowed, flagged in the audit trail).
    pub flag: bool,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ok = self.results.iter().filter(|r| r.is_ok()).count();
        f.debug_struct("Tokens")
            .field("ok", &ok)
            .field("refused", &(self.results.len() - ok))
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

/// A stored password hash to keep; `Debug` shows its length only.
pub struct PasswordHash {
    pub hash: Zeroizing<String>,
    pub pepper_key_id: String,
    pub pepper_key_version: u32,
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("hash_len", &self.hash.len())
            .field("pepper_key_id", &self.pepper_key_id)
            .field("pepper_key_version", &self.pepper_key_version)
            .finish()
    }
}

/// Match or no match; on a match, a new hash to store when the old one is out of date.
pub struct PasswordCheck {
    pub matched: bool,
    pub rehashed: Option<Zeroizing<String>>,
    /// A matching password breaks today's strength rules.
    pub weak: bool,
    pub key_compromised: bool,
}

impl fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordCheck")
            .field("matched", &self.matched)
            .field("rehashed", &self.rehashed.is_some())
            .field("weak", &self.weak)
            .field("key_compromised", &self.key_compromised)
            .finish()
    }
}

/// A partner's request as the gateway received it (docs/FORMATS.md, "The signed request").
#[derive(Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `sm2`, `hmac-sm3` or `rsa-pss`.
    pub scheme: &'a str,
    pub signature: &'a [u8],
    pub timestamp: u64,
    pub nonce: &'a [u8],
    pub method: &'a str,
    pub path: &'a str,
    pub body: RequestBody<'a>,
}

/// The body, or its 32-byte digest (SM3, or SHA-256 for rsa-pss) when it is large.
#[derive(Clone, Copy)]
pub enum RequestBody<'a> {
    Bytes(&'a [u8]),
    Digest(&'a [u8]),
}

/// The server's verdict on a signed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestCheck {
    pub verdict: RequestVerdict,
    /// What was wrong, for a stale or malformed request.
    pub reason: String,
    pub key_id: String,
    pub key_version: u32,
    pub key_compromised: bool,
}

impl RequestCheck {
    /// Signed by the key, fresh and new: the gateway may pass the request on.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.verdict == RequestVerdict::Ok
    }
}

impl Client {
    /// Values into tokens of `format` (`digits`, `alphanumeric`, `pan`, `pan-luhn-invalid`),
    /// 1 to 1000 per call, each with its own result.
    ///
    /// # Errors
    /// [`KmsError`] for a call refused as a whole (key, role, size); a value refused alone is
    /// an [`ItemRefusal`] in its place.
    pub async fn tokenize(
        &self,
        key: &str,
        format: &str,
        context: &Context,
        values: &[&str],
    ) -> Result<Tokens, KmsError> {
        let r = self
            .call(
                || v1::TokenizeRequest {
                    key: key.to_owned(),
                    format: format.to_owned(),
                    context: context.clone(),
                    values: values.iter().map(|v| (*v).to_owned()).collect(),
                },
                |ch, req| async move { TokenizationClient::new(ch).tokenize(req).await },
            )
            .await?;
        Ok(Tokens {
            results: item_results(r.results),
            key_id: r.key_id,
            key_version: r.key_version,
            flag: r.pseudonyms,
        })
    }

    /// Tokens back into values, with the version [`Client::tokenize`] returned. Needs the
    /// `detokenize` right, never implied by `tokenize`.
    ///
    /// # Errors
    /// As [`Client::tokenize`]; FAILED_PRECONDITION for a pseudonym key.
    pub async fn detokenize(
        &self,
        key: &str,
        key_version: u32,
        format: &str,
        context: &Context,
        tokens: &[&str],
    ) -> Result<Tokens, KmsError> {
        let r = self
            .call(
                || v1::DetokenizeRequest {
                    key: key.to_owned(),
                    key_version,
                    format: format.to_owned(),
                    context: context.clone(),
                    tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
                },
                |ch, req| async move { TokenizationClient::new(ch).detokenize(req).await },
            )
            .await?;
        Ok(Tokens {
            results: item_results(r.results),
            key_id: r.key_id,
            key_version: r.key_version,
            flag: r.key_compromised,
        })
    }

    /// A stored hash of a sealed password (docs/FORMATS.md, "The sealed password"), which must
    /// not contain any of `identifiers`. Not retried.
    ///
    /// # Errors
    /// [`KmsError`]: INVALID_ARGUMENT naming the rule a weak or stale password broke,
    /// ALREADY_EXISTS for a replayed seal.
    pub async fn hash_password(
        &self,
        password_key: &str,
        pepper_key: &str,
        sealed: &[u8],
        identifiers: &[&str],
    ) -> Result<PasswordHash, KmsError> {
        let r = self
            .call_with(
                false,
                || v1::HashPasswordRequest {
                    password_key: password_key.to_owned(),
                    pepper_key: pepper_key.to_owned(),
                    sealed_password: sealed.to_vec(),
                    identifiers: identifiers.iter().map(|i| (*i).to_owned()).collect(),
                },
                |ch, req| async move { PasswordShieldClient::new(ch).hash_password(req).await },
            )
            .await?;
        Ok(PasswordHash {
            hash: Zeroizing::new(r.hash),
            pepper_key_id: r.pepper_key_id,
            pepper_key_version: r.pepper_key_version,
        })
    }

    /// Checks a sealed password against a stored hash. Not retried.
    ///
    /// # Errors
    /// As [`Client::hash_password`] (no strength refusal); a wrong password is `Ok` with
    /// `matched: false`.
    pub async fn verify_password(
        &self,
        password_key: &str,
        sealed: &[u8],
        stored_hash: &str,
    ) -> Result<PasswordCheck, KmsError> {
        let r = self
            .call_with(
                false,
                || v1::VerifyPasswordRequest {
                    password_key: password_key.to_owned(),
                    sealed_password: sealed.to_vec(),
                    stored_hash: stored_hash.to_owned(),
                    identifiers: Vec::new(),
                },
                |ch, req| async move { PasswordShieldClient::new(ch).verify_password(req).await },
            )
            .await?;
        Ok(PasswordCheck {
            matched: r.matched,
            rehashed: (!r.rehashed.is_empty()).then(|| Zeroizing::new(r.rehashed)),
            weak: r.weak,
            key_compromised: r.key_compromised,
        })
    }

    /// The server's verdict on a partner's signed request, checked with `key` (the partner's
    /// public key or the shared MAC key). Not retried: the nonce is used up by a success.
    ///
    /// # Errors
    /// [`KmsError`] for the call itself (an unknown scheme, a key out of reach); everything
    /// about the request is the [`RequestCheck`]'s verdict.
    pub async fn verify_request(
        &self,
        key: &str,
        request: SignedRequest<'_>,
    ) -> Result<RequestCheck, KmsError> {
        let (body, body_digest) = match request.body {
            RequestBody::Bytes(b) => (b, &[][..]),
            RequestBody::Digest(d) => (&[][..], d),
        };
        let r = self
            .call_with(
                false,
                || v1::SignedRequest {
                    key: key.to_owned(),
                    scheme: request.scheme.to_owned(),
                    signature: request.signature.to_vec(),
                    timestamp: request.timestamp,
                    nonce: request.nonce.to_vec(),
                    method: request.method.to_owned(),
                    path: request.path.to_owned(),
                    body: body.to_vec(),
                    body_digest: body_digest.to_vec(),
                },
                |ch, req| async move {
                    RequestVerificationClient::new(ch)
                        .verify_request(req)
                        .await
                },
            )
            .await?;
        let verdict = r.verdict();
        Ok(RequestCheck {
            verdict,
            reason: r.reason,
            key_id: r.key_id,
            key_version: r.key_version,
            key_compromised: r.key_compromised,
        })
    }
}
