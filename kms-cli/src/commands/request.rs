//! `kms request sign | verify`: signed requests (issue 22 item 3; docs/FORMATS.md, "The signed
//! request").
//!
//! `sign` is what a partner does, for tests, scripts and the README: it builds the canonical
//! string with `kms_core::signed_request` and signs it with a KMS key (`Sign`, `GenerateMac`)
//! or, with no server, a PKCS#8 private key. Its JSON output carries the fields a gateway would
//! receive as headers. `verify` is what a gateway does: it forwards those fields and the body to
//! `VerifyRequest` and reports the verdict.

use std::path::Path;

use kms_core::alg::{DigestAlg, Purpose, RsaSigScheme, SignatureParams};
use kms_core::crypto::{self, Message};
use kms_core::policy::{Policy, PolicyMode};
use kms_core::signed_request::{self, RequestBody, RequestParts, RequestScheme};
use kms_proto::v1::request_verification_client::RequestVerificationClient;
use kms_proto::v1::{GenerateMacRequest, MessageType, RequestVerdict, SignRequest, SignedRequest};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Ctx;
use crate::args::{RequestSignArgs, RequestVerifyArgs};
use crate::error::{CliError, ExitKind};
use crate::files;
use crate::output::print_json;

/// The signed request as `sign` prints it and `verify --signed` reads it. No `Debug`: its
/// path may hold an account number.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedJson {
    scheme: String,
    method: String,
    path: String,
    timestamp: u64,
    /// Hex.
    nonce: String,
    /// Base64.
    signature: String,
}

fn scheme(name: &str) -> Result<RequestScheme, CliError> {
    RequestScheme::parse(name).ok_or_else(|| {
        CliError::usage(format!(
            "{name:?} is not a request scheme: use sm2, hmac-sm3 or rsa-pss"
        ))
    })
}

fn unhex(text: &str, what: &str) -> Result<Vec<u8>, CliError> {
    hex::decode(text.trim()).map_err(|e| CliError::usage(format!("{what} is not hex: {e}")))
}

/// The fixed signature parameters of each scheme (docs/FORMATS.md).
fn params(scheme: RequestScheme) -> SignatureParams {
    match scheme {
        RequestScheme::RsaPss => SignatureParams {
            rsa_scheme: Some(RsaSigScheme::Pss),
            hash: Some(DigestAlg::Sha256),
            sm2_id: None,
        },
        RequestScheme::Sm2 | RequestScheme::HmacSm3 => SignatureParams::default(),
    }
}

/// Signs locally with a PKCS#8 private key (a partner's own, never a KMS key).
fn sign_locally(path: &Path, scheme: RequestScheme, canonical: &[u8]) -> Result<Vec<u8>, CliError> {
    if scheme == RequestScheme::HmacSm3 {
        return Err(CliError::usage(
            "hmac-sm3 signs with a KMS key: give --key (the MAC key shared with the partner)",
        ));
    }
    let policy = Policy::from_config(PolicyMode::Standard);
    let file = files::read_input(Some(path))?;
    let invalid = |e: kms_core::Error| CliError::usage(format!("{}: {e}", path.display()));
    let der = crypto::pkcs8_shape::der_from_pem_or_der(&file).map_err(invalid)?;
    let key =
        crypto::import_private_key(policy, Purpose::Sign, der.expose_secret()).map_err(invalid)?;
    let refused = |e: kms_core::policy::PolicyError| CliError::usage(e.to_string());
    let request = params(scheme).resolve(key.spec()).map_err(refused)?;
    let approved = policy.approve(Purpose::Sign, key.spec()).map_err(refused)?;
    let signing = policy
        .approve_signature(approved, request)
        .map_err(refused)?;
    crypto::sign(&signing, &key, Message::Raw(canonical))
        .map_err(|e| CliError::other(format!("signing failed: {e}")))
}

/// `kms request sign`: also offline, with `--private-key` (`ctx` is `None` then).
pub(super) async fn sign(ctx: Option<&Ctx>, a: RequestSignArgs) -> Result<(), CliError> {
    let scheme = scheme(&a.scheme)?;
    let body = files::read_input(a.io.input.as_deref())?;
    let timestamp = a.timestamp.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let nonce = match &a.nonce {
        Some(h) => unhex(h, "--nonce")?,
        None => crypto::rng::random_public(16).map_err(|e| CliError::other(e.to_string()))?,
    };
    let parts = RequestParts {
        method: &a.method,
        path: &a.path,
        timestamp,
        nonce: &nonce,
        body: RequestBody::Bytes(&body),
    };
    let canonical = signed_request::canonical(scheme, &parts)
        .map_err(|m| CliError::usage(format!("the request is malformed: {m}")))?;
    let signature = match (&a.private_key, &a.key, ctx) {
        (Some(path), _, _) => sign_locally(path, scheme, &canonical)?,
        (None, Some(key), Some(ctx)) if scheme == RequestScheme::HmacSm3 => {
            ctx.crypto()
                .generate_mac(GenerateMacRequest {
                    key: key.clone(),
                    data: canonical,
                })
                .await?
                .into_inner()
                .mac
        }
        (None, Some(key), Some(ctx)) => {
            let p = params(scheme);
            ctx.crypto()
                .sign(SignRequest {
                    key: key.clone(),
                    message: canonical,
                    message_type: MessageType::Raw.into(),
                    sm2_id: String::new(),
                    rsa_scheme: p
                        .rsa_scheme
                        .map(|s| s.name().to_owned())
                        .unwrap_or_default(),
                    hash: p.hash.map(|h| h.name().to_owned()).unwrap_or_default(),
                })
                .await?
                .into_inner()
                .signature
        }
        (None, _, _) => return Err(CliError::usage("give --key or --private-key")),
    };
    let out = SignedJson {
        scheme: scheme.name().to_owned(),
        method: a.method,
        path: a.path,
        timestamp,
        nonce: hex::encode(&nonce),
        signature: files::base64(&signature),
    };
    let text = serde_json::to_string_pretty(&out)
        .map_err(|e| CliError::other(format!("cannot write JSON: {e}")))?;
    match &a.io.out {
        Some(path) => files::write_file(path, format!("{text}\n").as_bytes(), false),
        None => files::println(&text),
    }
}

fn verdict_name(v: RequestVerdict) -> &'static str {
    match v {
        RequestVerdict::Ok => "ok",
        RequestVerdict::BadSignature => "bad-signature",
        RequestVerdict::Stale => "stale",
        RequestVerdict::Replayed => "replayed",
        RequestVerdict::Malformed => "malformed",
        RequestVerdict::Unspecified => "unspecified",
    }
}

/// `kms request verify`.
pub(super) async fn verify(ctx: &Ctx, a: RequestVerifyArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&a.signed)
        .map_err(|e| CliError::io(&a.signed.display().to_string(), &e))?;
    let signed: SignedJson = serde_json::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "{} is not a signed request: {e}",
            a.signed.display()
        ))
        .with_hint("it is what `kms request sign` prints")
    })?;
    let (body, body_digest) = match &a.body_digest {
        Some(h) => (Vec::new(), unhex(h, "--body-digest")?),
        None => (files::read_input(a.input.as_deref())?.to_vec(), Vec::new()),
    };
    let signature = files::decode_base64(signed.signature.as_bytes(), "the signature")?;
    let resp = RequestVerificationClient::new(ctx.channel.clone())
        .verify_request(SignedRequest {
            key: a.key,
            scheme: signed.scheme,
            signature: signature.to_vec(),
            timestamp: signed.timestamp,
            nonce: unhex(&signed.nonce, "the nonce")?,
            method: signed.method,
            path: signed.path,
            body,
            body_digest,
        })
        .await?
        .into_inner();
    let verdict = resp.verdict();
    if ctx.json {
        print_json(&json!({
            "verdict": verdict_name(verdict),
            "reason": resp.reason,
            "key_id": resp.key_id,
            "key_version": resp.key_version,
            "key_compromised": resp.key_compromised,
        }))?;
    } else if verdict == RequestVerdict::Ok {
        files::println("ok")?;
    }
    if resp.key_compromised {
        super::warn("the key that verified this request is marked compromised");
    }
    if verdict == RequestVerdict::Ok {
        return Ok(());
    }
    let mut message = format!("the request is {}", verdict_name(verdict));
    if !resp.reason.is_empty() {
        message = format!("{message}: {}", resp.reason);
    }
    Err(CliError::new(ExitKind::VerificationFailed, message))
}
