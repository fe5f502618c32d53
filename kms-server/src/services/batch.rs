//! Batches of the data plane (`kms.v1.CryptoBatch`): many items in one call, each run as the
//! single call would run it (issue 20 item 1).
//!
//! A batch is, in order:
//! 1. identified once (the certificate's principal), without taking from the rate limit yet;
//! 2. authorised as a whole by the matrix's row for the batch operation, which is its items'
//!    row (`authz::Op::batch_item`), so a role the single call refuses is refused the batch
//!    before anything is read;
//! 3. held to its limits (`Limits::check_batch`: at least one item, at most `max_batch_items`
//!    and `max_batch_bytes`) and then metered, one token per item, all or none;
//! 4. declared to the audit layer (`Call::begin_batch`), which from then on lets a successful
//!    response leave only with one settled note per item;
//! 5. each item prepared by the single call's own [`DataOp::prepare`] under its own [`Call`]
//!    (`Call::item`: request id `<batch id>.<index>`, its own audit note), so its limits, key
//!    reference and context are checked as the single call's and noted in its record;
//! 6. the prepared core calls run, each taking the `Authorized` proof of its single operation
//!    (role, then namespace and grants, policy and key state inside the core, as ever), inline
//!    when they are few and light, else spread over the blocking pool;
//! 7. each item finished by [`DataOp::finish`] and settled (`Call::settle`): its outcome in its
//!    note, an error as its own code and message.
//!
//! An item's failure at any step is that item's result alone. The audit layer then writes one
//! record per item, in one group commit, before the response leaves.

use std::num::NonZeroUsize;

use kms_core::authz::{Operation, Principal, authorize, ops};
use kms_core::{Error, Kms};
use kms_proto::v1::{self, crypto_batch_server::CryptoBatch};
use tonic::{Request, Response, Status};

use super::crypto::{
    DataKey, DataOp, Decrypt, Encrypt, GenerateMac, ReEncrypt, Sign, Verify, VerifyMac, Weight,
    Work,
};
use super::{Call, INLINE_MAX_BYTES, Shared};
use crate::status::{to_status, worker_failed};

/// What one item costs beyond its payload, in bytes of symmetric crypto (a key lookup, a proof,
/// a nonce): a batch of many small items is not cheap just because each item is.
const ITEM_OVERHEAD_BYTES: usize = 1024;

/// An item's result: the single call's response, or its own error.
type ItemResult<R> = Result<R, v1::ItemError>;

impl Shared {
    /// Runs a batch of `O` items, authorised as a whole by `B` (the batch's own row of the
    /// matrix); `encoded_len` is the request's encoded size. The results are in the items'
    /// order.
    async fn batch<O: DataOp, B: Operation, T: FromItem<O::Response>>(
        &self,
        encoded_len: usize,
        req: Request<Vec<O::Request>>,
    ) -> Result<Vec<T>, Status> {
        let call = self.identify_unmetered(&req).await?;
        call.check(authorize::<B>(&call.principal).map(drop))?;
        let items = req.into_inner();
        call.check(self.limits.check_batch(items.len(), encoded_len))?;
        self.meter(&call, items.len())?;
        call.begin_batch(items.len());

        let mut calls = Vec::with_capacity(items.len());
        let mut prepared = Vec::with_capacity(items.len());
        let mut works = Vec::with_capacity(items.len());
        for (index, m) in items.into_iter().enumerate() {
            let item = call.item(index);
            prepared.push(O::prepare(self, &item, m).map(|work| works.push(work)));
            calls.push(item);
        }
        let mut ran = self.run_items(&call, works).await?.into_iter();
        let results = calls
            .iter()
            .zip(prepared)
            .map(|(item, prepared)| {
                let out = prepared.and_then(|()| match ran.next() {
                    Some(Ok(out)) => Ok(O::finish(item, out)),
                    Some(Err(e)) => Err(to_status(e, &item.request_id)),
                    // One result per prepared item: never reached.
                    None => Err(worker_failed(&item.request_id)),
                });
                T::from_item(item.settle(out))
            })
            .collect();
        Ok(results)
    }

    /// Runs the items' core calls, in order: right here when they are few, light and the store
    /// is local (as a single light call would), else in parts over the blocking pool, one part
    /// per CPU, each part in order.
    async fn run_items<R: Send + 'static>(
        &self,
        call: &Call,
        works: Vec<Work<R>>,
    ) -> Result<Vec<Result<R, Error>>, Status> {
        let light: Option<usize> = works.iter().try_fold(0usize, |sum, w| match w.weight {
            Weight::Light(bytes) => Some(sum.saturating_add(bytes + ITEM_OVERHEAD_BYTES)),
            Weight::Heavy => None,
        });
        if self.local_reads && light.is_some_and(|bytes| bytes <= INLINE_MAX_BYTES) {
            return Ok(run_all(&self.kms, &call.principal, works));
        }
        let parts = std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .clamp(1, works.len().max(1));
        let per_part = works.len().div_ceil(parts).max(1);
        let mut works = works.into_iter();
        let mut tasks = Vec::with_capacity(parts);
        loop {
            let part: Vec<Work<R>> = works.by_ref().take(per_part).collect();
            if part.is_empty() {
                break;
            }
            let kms = std::sync::Arc::clone(&self.kms);
            let principal = call.principal.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                run_all(&kms, &principal, part)
            }));
        }
        let mut out = Vec::new();
        for task in tasks {
            out.extend(task.await.map_err(|_| worker_failed(&call.request_id))?);
        }
        Ok(out)
    }
}

/// Runs `works` one after the other, in order.
fn run_all<R>(kms: &Kms, principal: &Principal, works: Vec<Work<R>>) -> Vec<Result<R, Error>> {
    works.into_iter().map(|w| (w.run)(kms, principal)).collect()
}

/// A batch response's result type, made from one item's result.
trait FromItem<R> {
    fn from_item(r: ItemResult<R>) -> Self;
}

macro_rules! from_item {
    ($($result:ident, $oneof:ident, $response:ident;)*) => {
        $(
            impl FromItem<v1::$response> for v1::$result {
                fn from_item(r: ItemResult<v1::$response>) -> Self {
                    Self {
                        result: Some(match r {
                            Ok(ok) => v1::$oneof::Result::Ok(ok),
                            Err(e) => v1::$oneof::Result::Error(e),
                        }),
                    }
                }
            }
        )*
    };
}

from_item! {
    BatchEncryptResult, batch_encrypt_result, EncryptResponse;
    BatchDecryptResult, batch_decrypt_result, DecryptResponse;
    BatchReEncryptResult, batch_re_encrypt_result, ReEncryptResponse;
    BatchGenerateDataKeyResult, batch_generate_data_key_result, GenerateDataKeyResponse;
    BatchSignResult, batch_sign_result, SignResponse;
    BatchVerifyResult, batch_verify_result, VerifyResponse;
    BatchGenerateMacResult, batch_generate_mac_result, GenerateMacResponse;
    BatchVerifyMacResult, batch_verify_mac_result, VerifyMacResponse;
}

/// A batch request's encoded size (held to `max_batch_bytes`) and its items.
fn items<M: prost::Message, I>(req: Request<M>, items: impl FnOnce(M) -> I) -> (usize, Request<I>) {
    (req.get_ref().encoded_len(), req.map(items))
}

#[tonic::async_trait]
impl CryptoBatch for Shared {
    async fn batch_encrypt(
        &self,
        req: Request<v1::BatchEncryptRequest>,
    ) -> Result<Response<v1::BatchEncryptResponse>, Status> {
        let (len, req) = items(req, |m| m.items);
        let results = self
            .batch::<Encrypt, ops::BatchEncrypt, _>(len, req)
            .await?;
        Ok(Response::new(v1::BatchEncryptResponse { results }))
    }

    async fn batch_decrypt(
        &self,
        req: Request<v1::BatchDecryptRequest>,
    ) -> Result<Response<v1::BatchDecryptResponse>, Status> {
        let (len, req) = items(req, |m| m.items);
        let results = self
            .batch::<Decrypt, ops::BatchDecrypt, _>(len, req)
            .await?;
        Ok(Response::new(v1::BatchDecryptResponse { results }))
    }

    async fn batch_re_encrypt(
        &self,
        req: Request<v1::BatchReEncryptRequest>,
    ) -> Result<Response<v1::BatchReEncryptResponse>, Status> {
        let (len, req) = items(req, |m| m.items);
        let results = self
            .batch::<ReEncrypt, ops::BatchReEncrypt, _>(len, req)
            .await?;
        Ok(Response::new(v1::BatchReEncryptResponse { results }))
    }

    async fn batch_generate_data_key(
        &self,
        req: Request<v1::BatchGenerateDataKeyRequest>,
    ) -> Result<Response<v1::BatchGenerateDataKeyResponse>, Status> {
        let (len, req) = items(req, |m| m.items);
        let results = self
            .batch::<DataKey<true>, ops::BatchGenerateDataKey, _>(len, req)
            .await?;
        Ok(Response::new(v1::BatchGenerateDataKeyResponse { results }))
    }

    async fn batch_sign(
        &self,
        req: Request<v1::BatchSignRequest>,
    ) -> Result<Response<v1::BatchSignResponse>, Status> {
        let (len, req) = items(req, |m| m.items);
        let results = self.batch::<Sign, ops::BatchSign, _>(len, req).await?;
        Ok(Response::new(v1::BatchSignResponse { results }))
    }

    async fn batch_verify(
        &self,
        req: Request<v1::BatchVerifyRequest>,
    ) -> Result<Response<v1::BatchVerifyResponse>, Status> {
        let (len, req) = items(req, |m| m.items);
        let results = self.batch::<Verify, ops::BatchVerify, _>(len, req).await?;
        Ok(Response::new(v1::BatchVerifyResponse { results }))
    }

    async fn batch_generate_mac(
        &self,
        req: Request<v1::BatchGenerateMacRequest>,
    ) -> Result<Response<v1::BatchGenerateMacResponse>, Status> {
        let (len, req) = items(req, |m| m.items);
        let results = self
            .batch::<GenerateMac, ops::BatchGenerateMac, _>(len, req)
            .await?;
        Ok(Response::new(v1::BatchGenerateMacResponse { results }))
    }

    async fn batch_verify_mac(
        &self,
        req: Request<v1::BatchVerifyMacRequest>,
    ) -> Result<Response<v1::BatchVerifyMacResponse>, Status> {
        let (len, req) = items(req, |m| m.items);
        let results = self
            .batch::<VerifyMac, ops::BatchVerifyMac, _>(len, req)
            .await?;
        Ok(Response::new(v1::BatchVerifyMacResponse { results }))
    }
}
