//! The data plane (`kms.v1.Crypto`).
//!
//! The operations that also come in batches (`services/batch.rs`) are written once, as a
//! [`DataOp`]: `prepare` checks and converts one request and notes what its audit record needs,
//! its [`Work`] is the core call (which takes the operation's `Authorized` proof), and `finish`
//! notes the key the core used and builds the response. The single RPC runs the three steps for
//! its request; a batch runs the same three for each item, so an item is checked, authorised
//! and recorded exactly as the single call.

use kms_core::authz::{Principal, authorize, ops};
use kms_core::policy::names;
use kms_core::{DataKeyMode, Kms, SecretBytes};
use kms_proto::v1::{self, crypto_server::Crypto};
use tonic::{Request, Response, Status};

use super::{Call, Shared};
use crate::convert;
use crate::status::{Refusal, to_status};

/// Moves a secret byte field out of a request into a zeroizing buffer.
fn take_secret(field: &mut Vec<u8>) -> SecretBytes {
    SecretBytes::from_vec(std::mem::take(field))
}

/// A core call, run on behalf of the caller's principal.
pub(crate) type CoreCall<R> =
    Box<dyn FnOnce(&Kms, &Principal) -> Result<R, kms_core::Error> + Send>;

/// The core call of one request, made by [`DataOp::prepare`].
pub(crate) struct Work<R> {
    pub(crate) weight: Weight,
    pub(crate) run: CoreCall<R>,
}

/// What a core call costs, which decides where it may run ([`Shared::run_light`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Weight {
    /// Symmetric crypto over this many bytes and store reads: no store write, no public key.
    Light(usize),
    /// Public-key work.
    Heavy,
}

impl<R> Work<R> {
    fn light(
        bytes: usize,
        run: impl FnOnce(&Kms, &Principal) -> Result<R, kms_core::Error> + Send + 'static,
    ) -> Self {
        Self {
            weight: Weight::Light(bytes),
            run: Box::new(run),
        }
    }

    fn heavy(
        run: impl FnOnce(&Kms, &Principal) -> Result<R, kms_core::Error> + Send + 'static,
    ) -> Self {
        Self {
            weight: Weight::Heavy,
            run: Box::new(run),
        }
    }
}

/// One data-plane operation in three steps, shared by its single RPC and its batch form.
pub(crate) trait DataOp {
    type Request: Send + 'static;
    type Response: Send + 'static;
    type Out: Send + 'static;

    /// Checks the request's limits and fields, converts it, notes key and context in the
    /// call's audit note, and returns the core call.
    fn prepare(shared: &Shared, call: &Call, m: Self::Request) -> Result<Work<Self::Out>, Status>;

    /// Notes what the core used and builds the response.
    fn finish(call: &Call, out: Self::Out) -> Self::Response;
}

impl Shared {
    /// A single data-plane call: identify (one token of the rate limit), then the three steps.
    async fn single<O: DataOp>(
        &self,
        req: Request<O::Request>,
    ) -> Result<Response<O::Response>, Status> {
        let call = self.identify(&req).await?;
        let work = O::prepare(self, &call, req.into_inner())?;
        let out = self.execute(&call, work).await?;
        Ok(Response::new(O::finish(&call, out)))
    }

    /// Runs one core call where its weight allows.
    async fn execute<R: Send + 'static>(&self, call: &Call, work: Work<R>) -> Result<R, Status> {
        match work.weight {
            Weight::Light(bytes) => self.run_light(call, bytes, work.run).await,
            Weight::Heavy => self.run(call, work.run).await,
        }
    }
}

pub(crate) enum Encrypt {}

impl DataOp for Encrypt {
    type Request = v1::EncryptRequest;
    type Response = v1::EncryptResponse;
    type Out = kms_core::EncryptOutput;

    fn prepare(
        shared: &Shared,
        call: &Call,
        mut m: Self::Request,
    ) -> Result<Work<Self::Out>, Status> {
        call.check(shared.limits.check_payload("plaintext", m.plaintext.len()))?;
        call.check(shared.limits.check_context(&m.context))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let ctx = convert::context(std::mem::take(&mut m.context));
        call.note_context(shared.kms.context_hmac(&ctx));
        let plaintext = take_secret(&mut m.plaintext);
        Ok(Work::light(plaintext.len(), move |kms, p| {
            kms.encrypt(&authorize(p)?, &key, &ctx, plaintext.expose_secret())
        }))
    }

    fn finish(call: &Call, out: Self::Out) -> Self::Response {
        call.note_key(&out.key_id, Some(out.key_version));
        v1::EncryptResponse {
            ciphertext: out.ciphertext,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }
    }
}

pub(crate) enum Decrypt {}

impl DataOp for Decrypt {
    type Request = v1::DecryptRequest;
    type Response = v1::DecryptResponse;
    type Out = kms_core::DecryptOutput;

    fn prepare(shared: &Shared, call: &Call, m: Self::Request) -> Result<Work<Self::Out>, Status> {
        call.check(shared.limits.check_context(&m.context))?;
        let ctx = convert::context(m.context);
        call.note_context(shared.kms.context_hmac(&ctx));
        let ct = m.ciphertext;
        Ok(Work::light(ct.len(), move |kms, p| {
            kms.decrypt(&authorize(p)?, &ctx, &ct)
        }))
    }

    fn finish(call: &Call, out: Self::Out) -> Self::Response {
        call.note_use(&out.key_id, out.key_version, out.key_compromised);
        v1::DecryptResponse {
            plaintext: out.plaintext.into_unprotected_vec(),
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
            key_compromised: out.key_compromised,
        }
    }
}

pub(crate) enum ReEncrypt {}

impl DataOp for ReEncrypt {
    type Request = v1::ReEncryptRequest;
    type Response = v1::ReEncryptResponse;
    type Out = kms_core::EncryptOutput;

    fn prepare(shared: &Shared, call: &Call, m: Self::Request) -> Result<Work<Self::Out>, Status> {
        call.check(shared.limits.check_context(&m.source_context))?;
        call.check(shared.limits.check_context(&m.destination_context))?;
        let dest = if m.destination_key.is_empty() {
            None
        } else {
            Some(call.check(convert::key_ref(&m.destination_key, &call.principal))?)
        };
        let src_ctx = convert::context(m.source_context);
        call.note_context(shared.kms.context_hmac(&src_ctx));
        let dst_ctx = convert::context(m.destination_context);
        let ct = m.ciphertext;
        Ok(Work::light(ct.len(), move |kms, p| {
            kms.reencrypt(&authorize(p)?, &ct, &src_ctx, dest.as_ref(), &dst_ctx)
        }))
    }

    fn finish(call: &Call, out: Self::Out) -> Self::Response {
        call.note_key(&out.key_id, Some(out.key_version));
        v1::ReEncryptResponse {
            ciphertext: out.ciphertext,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }
    }
}

/// GenerateDataKey (`PLAINTEXT`) and GenerateDataKeyWithoutPlaintext.
pub(crate) enum DataKey<const PLAINTEXT: bool> {}

impl<const PLAINTEXT: bool> DataOp for DataKey<PLAINTEXT> {
    type Request = v1::GenerateDataKeyRequest;
    type Response = v1::GenerateDataKeyResponse;
    type Out = kms_core::DataKeyOutput;

    fn prepare(shared: &Shared, call: &Call, m: Self::Request) -> Result<Work<Self::Out>, Status> {
        call.check(shared.limits.check_context(&m.context))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let spec = call.check(names::parse_data_key_spec(if m.key_spec.is_empty() {
            "sm4"
        } else {
            &m.key_spec
        }))?;
        let policy = shared.kms.policy();
        let mode = match (PLAINTEXT, m.wrap_to_public_key.is_empty()) {
            (true, true) => DataKeyMode::WithPlaintext,
            (false, true) => DataKeyMode::WithoutPlaintext,
            (true, false) => DataKeyMode::EncryptedTo(
                call.check(convert::public_key(policy, &m.wrap_to_public_key))?,
            ),
            (false, false) => {
                return Err(to_status(
                    Refusal::BadRequest(
                        "wrap_to_public_key applies to GenerateDataKey, not GenerateDataKeyWithoutPlaintext"
                            .into(),
                    ),
                    &call.request_id,
                ));
            }
        };
        let wrap_to_caller = matches!(mode, DataKeyMode::EncryptedTo(_));
        let ctx = convert::context(m.context);
        call.note_context(shared.kms.context_hmac(&ctx));
        let work = move |kms: &Kms, p: &Principal| {
            // The proof names the operation the caller asked for: no plaintext, or some form of it.
            if matches!(mode, DataKeyMode::WithoutPlaintext) {
                let proof = authorize::<ops::GenerateDataKeyWithoutPlaintext>(p)?;
                kms.generate_data_key(&proof, &key, spec, &ctx, mode)
            } else {
                let proof = authorize::<ops::GenerateDataKey>(p)?;
                kms.generate_data_key(&proof, &key, spec, &ctx, mode)
            }
        };
        // Encrypting the data key to the caller's public key is public-key work.
        Ok(if wrap_to_caller {
            Work::heavy(work)
        } else {
            Work::light(0, work)
        })
    }

    fn finish(call: &Call, out: Self::Out) -> Self::Response {
        call.note_key(&out.key_id, Some(out.key_version));
        v1::GenerateDataKeyResponse {
            ciphertext: out.ciphertext,
            plaintext: out
                .plaintext
                .map(SecretBytes::into_unprotected_vec)
                .unwrap_or_default(),
            plaintext_encrypted: out.encrypted_to_caller.unwrap_or_default(),
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }
    }
}

pub(crate) enum Sign {}

impl DataOp for Sign {
    type Request = v1::SignRequest;
    type Response = v1::SignResponse;
    type Out = kms_core::SignOutput;

    fn prepare(
        shared: &Shared,
        call: &Call,
        mut m: Self::Request,
    ) -> Result<Work<Self::Out>, Status> {
        call.check(shared.limits.check_payload("message", m.message.len()))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let params = call.check(convert::signature_params(&m.sm2_id, &m.rsa_scheme, &m.hash))?;
        let kind = call.check(convert::message_kind(m.message_type))?;
        let message = take_secret(&mut m.message);
        Ok(Work::heavy(move |kms, p| {
            kms.sign(
                &authorize(p)?,
                &key,
                kind.of(message.expose_secret()),
                &params,
            )
        }))
    }

    fn finish(call: &Call, out: Self::Out) -> Self::Response {
        call.note_key(&out.key_id, Some(out.key_version));
        v1::SignResponse {
            signature: out.signature,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }
    }
}

pub(crate) enum Verify {}

impl DataOp for Verify {
    type Request = v1::VerifyRequest;
    type Response = v1::VerifyResponse;
    type Out = kms_core::VerifyOutput;

    fn prepare(
        shared: &Shared,
        call: &Call,
        mut m: Self::Request,
    ) -> Result<Work<Self::Out>, Status> {
        call.check(shared.limits.check_payload("message", m.message.len()))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let params = call.check(convert::signature_params(&m.sm2_id, &m.rsa_scheme, &m.hash))?;
        let kind = call.check(convert::message_kind(m.message_type))?;
        let message = take_secret(&mut m.message);
        Ok(Work::heavy(move |kms, p| {
            kms.verify(
                &authorize(p)?,
                &key,
                kind.of(message.expose_secret()),
                &m.signature,
                &params,
                m.key_version,
            )
        }))
    }

    fn finish(call: &Call, out: Self::Out) -> Self::Response {
        call.note_use(&out.key_id, out.key_version, out.key_compromised);
        v1::VerifyResponse {
            valid: out.valid,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
            key_compromised: out.key_compromised,
        }
    }
}

pub(crate) enum GenerateMac {}

impl DataOp for GenerateMac {
    type Request = v1::GenerateMacRequest;
    type Response = v1::GenerateMacResponse;
    type Out = kms_core::SignOutput;

    fn prepare(
        shared: &Shared,
        call: &Call,
        mut m: Self::Request,
    ) -> Result<Work<Self::Out>, Status> {
        call.check(shared.limits.check_payload("data", m.data.len()))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let data = take_secret(&mut m.data);
        Ok(Work::light(data.len(), move |kms, p| {
            kms.generate_mac(&authorize(p)?, &key, data.expose_secret())
        }))
    }

    fn finish(call: &Call, out: Self::Out) -> Self::Response {
        call.note_key(&out.key_id, Some(out.key_version));
        v1::GenerateMacResponse {
            mac: out.signature,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }
    }
}

pub(crate) enum VerifyMac {}

impl DataOp for VerifyMac {
    type Request = v1::VerifyMacRequest;
    type Response = v1::VerifyMacResponse;
    type Out = kms_core::VerifyOutput;

    fn prepare(
        shared: &Shared,
        call: &Call,
        mut m: Self::Request,
    ) -> Result<Work<Self::Out>, Status> {
        call.check(shared.limits.check_payload("data", m.data.len()))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let data = take_secret(&mut m.data);
        Ok(Work::light(data.len(), move |kms, p| {
            kms.verify_mac(
                &authorize(p)?,
                &key,
                data.expose_secret(),
                &m.mac,
                m.key_version,
            )
        }))
    }

    fn finish(call: &Call, out: Self::Out) -> Self::Response {
        call.note_use(&out.key_id, out.key_version, out.key_compromised);
        v1::VerifyMacResponse {
            valid: out.valid,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }
    }
}

#[tonic::async_trait]
impl Crypto for Shared {
    async fn encrypt(
        &self,
        req: Request<v1::EncryptRequest>,
    ) -> Result<Response<v1::EncryptResponse>, Status> {
        self.single::<Encrypt>(req).await
    }

    async fn decrypt(
        &self,
        req: Request<v1::DecryptRequest>,
    ) -> Result<Response<v1::DecryptResponse>, Status> {
        self.single::<Decrypt>(req).await
    }

    async fn re_encrypt(
        &self,
        req: Request<v1::ReEncryptRequest>,
    ) -> Result<Response<v1::ReEncryptResponse>, Status> {
        self.single::<ReEncrypt>(req).await
    }

    async fn generate_data_key(
        &self,
        req: Request<v1::GenerateDataKeyRequest>,
    ) -> Result<Response<v1::GenerateDataKeyResponse>, Status> {
        self.single::<DataKey<true>>(req).await
    }

    async fn generate_data_key_without_plaintext(
        &self,
        req: Request<v1::GenerateDataKeyRequest>,
    ) -> Result<Response<v1::GenerateDataKeyResponse>, Status> {
        self.single::<DataKey<false>>(req).await
    }

    async fn sign(
        &self,
        req: Request<v1::SignRequest>,
    ) -> Result<Response<v1::SignResponse>, Status> {
        self.single::<Sign>(req).await
    }

    async fn verify(
        &self,
        req: Request<v1::VerifyRequest>,
    ) -> Result<Response<v1::VerifyResponse>, Status> {
        self.single::<Verify>(req).await
    }

    async fn asymmetric_decrypt(
        &self,
        req: Request<v1::AsymmetricDecryptRequest>,
    ) -> Result<Response<v1::AsymmetricDecryptResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        call.check(self.limits.check_payload("ciphertext", m.ciphertext.len()))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let out = self
            .run(&call, move |kms, p| {
                kms.asymmetric_decrypt(&authorize(p)?, &key, &m.ciphertext, m.key_version)
            })
            .await?;
        call.note_use(&out.key_id, out.key_version, out.key_compromised);
        Ok(Response::new(v1::AsymmetricDecryptResponse {
            plaintext: out.plaintext.into_unprotected_vec(),
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
            key_compromised: out.key_compromised,
        }))
    }

    async fn get_public_key(
        &self,
        req: Request<v1::GetPublicKeyRequest>,
    ) -> Result<Response<v1::GetPublicKeyResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let out = self
            .run(&call, move |kms, p| {
                kms.get_public_key(&authorize(p)?, &key, m.key_version)
            })
            .await?;
        call.note_key(&out.key_id, Some(out.key_version));
        Ok(Response::new(v1::GetPublicKeyResponse {
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
            algorithm: out.public_key.spec().name().to_owned(),
            public_key_pem: out.public_key.to_pem(),
            public_key_der: out.public_key.spki_der().to_vec(),
        }))
    }

    async fn generate_mac(
        &self,
        req: Request<v1::GenerateMacRequest>,
    ) -> Result<Response<v1::GenerateMacResponse>, Status> {
        self.single::<GenerateMac>(req).await
    }

    async fn verify_mac(
        &self,
        req: Request<v1::VerifyMacRequest>,
    ) -> Result<Response<v1::VerifyMacResponse>, Status> {
        self.single::<VerifyMac>(req).await
    }

    async fn generate_random(
        &self,
        req: Request<v1::GenerateRandomRequest>,
    ) -> Result<Response<v1::GenerateRandomResponse>, Status> {
        let call = self.identify(&req).await?;
        let len = usize::try_from(req.into_inner().length).unwrap_or(usize::MAX);
        let random = self
            .run_light(&call, len, move |kms, p| {
                kms.generate_random(&authorize(p)?, len)
            })
            .await?;
        Ok(Response::new(v1::GenerateRandomResponse {
            random: random.into_unprotected_vec(),
        }))
    }
}
