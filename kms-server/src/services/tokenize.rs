//! Tokens (`kms.v1.Tokenization`, issue 22 item 1): Tokenize and Detokenize, many values per
//! call, each value with its own result (as a `CryptoBatch` item has).
//!
//! A call is, in order: identified (without taking from the rate limit yet); authorised by the
//! matrix's row for its operation (apps only; `Tokenize` and `Detokenize` are separate rows
//! and separate grant operations); held to the batch limits (`[limits] max_batch_items`,
//! `max_batch_bytes`) and the context limit; metered one rate token per value, all or none
//! (a value costs what a request costs, API-5); then one core call over all the values on the
//! blocking pool, which takes the operation's `Authorized` proof (reach, purpose, state and
//! policy inside the core, as ever).
//!
//! The audit layer writes one record per call: the key id and version, the outcome, and the
//! number of values that succeeded (`count`), never a value or a token. A value refused on its
//! own (outside the alphabet, domain below 10^6, …) is its result's error, naming the call's
//! request id and the value's index (`<request id>.<index>`); the call itself is OK.

use std::collections::HashMap;

use kms_core::SecretBytes;
use kms_core::authz::{Operation, authorize, ops};
use kms_core::crypto::tokenize::TokenFormat;
use kms_proto::v1::{self, tokenization_server::Tokenization};
use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{Call, Shared};
use crate::convert;
use crate::status::{Refusal, to_status};

/// What both RPCs check before the core runs: role, limits, rate, key, format, context.
struct Checked {
    call: Call,
    key: kms_core::keys::KeyRef,
    format: TokenFormat,
    context: kms_core::envelope::EncryptionContext,
    strings: Vec<SecretBytes>,
}

impl Shared {
    async fn check_tokens<O: Operation, T>(
        &self,
        req: &Request<T>,
        encoded_len: usize,
        key: &str,
        format: &str,
        context: HashMap<String, String>,
        strings: Vec<String>,
    ) -> Result<Checked, Status> {
        let call = self.identify_unmetered(req).await?;
        call.check(authorize::<O>(&call.principal).map(drop))?;
        // No values at all is the core's refusal (it names the field); any other count is held
        // to the batch limits and metered before anything is read.
        if !strings.is_empty() {
            call.check(self.limits.check_batch(strings.len(), encoded_len))?;
            self.meter(&call, strings.len())?;
        }
        call.check(self.limits.check_context(&context))?;
        let key = call.check(convert::key_ref(key, &call.principal))?;
        call.note_key(&key, None);
        let format = call.check(TokenFormat::parse(format))?;
        let context = convert::context(context);
        call.note_context(self.kms.context_hmac(&context));
        // Moved, not copied, into zeroizing buffers.
        let strings = strings
            .into_iter()
            .map(|s| SecretBytes::from_vec(s.into_bytes()))
            .collect();
        Ok(Checked {
            call,
            key,
            format,
            context,
            strings,
        })
    }
}

/// Each value's result: the string, or the error that value alone got, naming
/// `<request id>.<index>`.
fn results(call: &Call, out: Vec<Result<SecretBytes, kms_core::Error>>) -> Vec<v1::TokenResult> {
    out.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let id = format!("{}.{i}", call.request_id);
            let result = match r {
                Ok(s) => match String::from_utf8(s.into_unprotected_vec()) {
                    Ok(text) => v1::token_result::Result::Ok(text),
                    // Tokens and values are ASCII by construction: never reached.
                    Err(_) => item_error(&to_status(Refusal::Encoding("a token or value"), &id)),
                },
                Err(e) => item_error(&to_status(e, &id)),
            };
            v1::TokenResult {
                result: Some(result),
            }
        })
        .collect()
}

fn item_error(s: &Status) -> v1::token_result::Result {
    v1::token_result::Result::Error(v1::ItemError {
        code: s.code().into(),
        message: s.message().to_owned(),
    })
}

#[tonic::async_trait]
impl Tokenization for Shared {
    async fn tokenize(
        &self,
        mut req: Request<v1::TokenizeRequest>,
    ) -> Result<Response<v1::TokenizeResponse>, Status> {
        let encoded_len = req.get_ref().encoded_len();
        let m = std::mem::take(req.get_mut());
        let Checked {
            call,
            key,
            format,
            context,
            strings,
        } = self
            .check_tokens::<ops::Tokenize, _>(
                &req,
                encoded_len,
                &m.key,
                &m.format,
                m.context,
                m.values,
            )
            .await?;
        let out = self
            .run(&call, move |kms, p| {
                kms.tokenize(&authorize(p)?, &key, format, &context, &strings)
            })
            .await?;
        call.note_key(&out.key_id, Some(out.key_version));
        call.note_count(out.succeeded());
        Ok(Response::new(v1::TokenizeResponse {
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
            pseudonyms: out.pseudonyms,
            results: results(&call, out.results),
        }))
    }

    async fn detokenize(
        &self,
        mut req: Request<v1::DetokenizeRequest>,
    ) -> Result<Response<v1::DetokenizeResponse>, Status> {
        let encoded_len = req.get_ref().encoded_len();
        let m = std::mem::take(req.get_mut());
        let version = m.key_version;
        let Checked {
            call,
            key,
            format,
            context,
            strings,
        } = self
            .check_tokens::<ops::Detokenize, _>(
                &req,
                encoded_len,
                &m.key,
                &m.format,
                m.context,
                m.tokens,
            )
            .await?;
        let out = self
            .run(&call, move |kms, p| {
                kms.detokenize(&authorize(p)?, &key, version, format, &context, &strings)
            })
            .await?;
        call.note_use(&out.key_id, out.key_version, out.key_compromised);
        call.note_count(out.succeeded());
        Ok(Response::new(v1::DetokenizeResponse {
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
            key_compromised: out.key_compromised,
            results: results(&call, out.results),
        }))
    }
}
