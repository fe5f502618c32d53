//! The data plane (`kms.v1.Crypto`).

use kms_core::authz::{authorize, ops};
use kms_core::policy::names;
use kms_core::{DataKeyMode, SecretBytes};
use kms_proto::v1::{self, crypto_server::Crypto};
use tonic::{Request, Response, Status};

use super::Shared;
use crate::convert;
use crate::status::{Refusal, to_status};

/// Moves a secret byte field out of a request into a zeroizing buffer.
fn take_secret(field: &mut Vec<u8>) -> SecretBytes {
    SecretBytes::from_vec(std::mem::take(field))
}

#[tonic::async_trait]
impl Crypto for Shared {
    async fn encrypt(
        &self,
        req: Request<v1::EncryptRequest>,
    ) -> Result<Response<v1::EncryptResponse>, Status> {
        let call = self.identify(&req).await?;
        let mut m = req.into_inner();
        call.check(self.limits.check_payload("plaintext", m.plaintext.len()))?;
        call.check(self.limits.check_context(&m.context))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let ctx = convert::context(std::mem::take(&mut m.context));
        call.note_context(self.kms.context_hmac(&ctx));
        let plaintext = take_secret(&mut m.plaintext);
        let out = self
            .run_light(&call, plaintext.len(), move |kms, p| {
                kms.encrypt(&authorize(p)?, &key, &ctx, plaintext.expose_secret())
            })
            .await?;
        call.note_key(&out.key_id, Some(out.key_version));
        Ok(Response::new(v1::EncryptResponse {
            ciphertext: out.ciphertext,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }))
    }

    async fn decrypt(
        &self,
        req: Request<v1::DecryptRequest>,
    ) -> Result<Response<v1::DecryptResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        call.check(self.limits.check_context(&m.context))?;
        let ctx = convert::context(m.context);
        call.note_context(self.kms.context_hmac(&ctx));
        let ct = m.ciphertext;
        let out = self
            .run_light(&call, ct.len(), move |kms, p| {
                kms.decrypt(&authorize(p)?, &ctx, &ct)
            })
            .await?;
        call.note_use(&out.key_id, out.key_version, out.key_compromised);
        Ok(Response::new(v1::DecryptResponse {
            plaintext: out.plaintext.into_unprotected_vec(),
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
            key_compromised: out.key_compromised,
        }))
    }

    async fn re_encrypt(
        &self,
        req: Request<v1::ReEncryptRequest>,
    ) -> Result<Response<v1::ReEncryptResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        call.check(self.limits.check_context(&m.source_context))?;
        call.check(self.limits.check_context(&m.destination_context))?;
        let dest = if m.destination_key.is_empty() {
            None
        } else {
            Some(call.check(convert::key_ref(&m.destination_key, &call.principal))?)
        };
        let src_ctx = convert::context(m.source_context);
        call.note_context(self.kms.context_hmac(&src_ctx));
        let dst_ctx = convert::context(m.destination_context);
        let ct = m.ciphertext;
        let out = self
            .run_light(&call, ct.len(), move |kms, p| {
                kms.reencrypt(&authorize(p)?, &ct, &src_ctx, dest.as_ref(), &dst_ctx)
            })
            .await?;
        call.note_key(&out.key_id, Some(out.key_version));
        Ok(Response::new(v1::ReEncryptResponse {
            ciphertext: out.ciphertext,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }))
    }

    async fn generate_data_key(
        &self,
        req: Request<v1::GenerateDataKeyRequest>,
    ) -> Result<Response<v1::GenerateDataKeyResponse>, Status> {
        self.data_key(req, true).await
    }

    async fn generate_data_key_without_plaintext(
        &self,
        req: Request<v1::GenerateDataKeyRequest>,
    ) -> Result<Response<v1::GenerateDataKeyResponse>, Status> {
        self.data_key(req, false).await
    }

    async fn sign(
        &self,
        req: Request<v1::SignRequest>,
    ) -> Result<Response<v1::SignResponse>, Status> {
        let call = self.identify(&req).await?;
        let mut m = req.into_inner();
        call.check(self.limits.check_payload("message", m.message.len()))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let params = call.check(convert::signature_params(&m.sm2_id, &m.rsa_scheme, &m.hash))?;
        let kind = call.check(convert::message_kind(m.message_type))?;
        let message = take_secret(&mut m.message);
        let out = self
            .run(&call, move |kms, p| {
                kms.sign(
                    &authorize(p)?,
                    &key,
                    kind.of(message.expose_secret()),
                    &params,
                )
            })
            .await?;
        call.note_key(&out.key_id, Some(out.key_version));
        Ok(Response::new(v1::SignResponse {
            signature: out.signature,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }))
    }

    async fn verify(
        &self,
        req: Request<v1::VerifyRequest>,
    ) -> Result<Response<v1::VerifyResponse>, Status> {
        let call = self.identify(&req).await?;
        let mut m = req.into_inner();
        call.check(self.limits.check_payload("message", m.message.len()))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let params = call.check(convert::signature_params(&m.sm2_id, &m.rsa_scheme, &m.hash))?;
        let kind = call.check(convert::message_kind(m.message_type))?;
        let message = take_secret(&mut m.message);
        let out = self
            .run(&call, move |kms, p| {
                kms.verify(
                    &authorize(p)?,
                    &key,
                    kind.of(message.expose_secret()),
                    &m.signature,
                    &params,
                    m.key_version,
                )
            })
            .await?;
        call.note_use(&out.key_id, out.key_version, out.key_compromised);
        Ok(Response::new(v1::VerifyResponse {
            valid: out.valid,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
            key_compromised: out.key_compromised,
        }))
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
        let call = self.identify(&req).await?;
        let mut m = req.into_inner();
        call.check(self.limits.check_payload("data", m.data.len()))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let data = take_secret(&mut m.data);
        let out = self
            .run_light(&call, data.len(), move |kms, p| {
                kms.generate_mac(&authorize(p)?, &key, data.expose_secret())
            })
            .await?;
        call.note_key(&out.key_id, Some(out.key_version));
        Ok(Response::new(v1::GenerateMacResponse {
            mac: out.signature,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }))
    }

    async fn verify_mac(
        &self,
        req: Request<v1::VerifyMacRequest>,
    ) -> Result<Response<v1::VerifyMacResponse>, Status> {
        let call = self.identify(&req).await?;
        let mut m = req.into_inner();
        call.check(self.limits.check_payload("data", m.data.len()))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let data = take_secret(&mut m.data);
        let out = self
            .run_light(&call, data.len(), move |kms, p| {
                kms.verify_mac(
                    &authorize(p)?,
                    &key,
                    data.expose_secret(),
                    &m.mac,
                    m.key_version,
                )
            })
            .await?;
        call.note_use(&out.key_id, out.key_version, out.key_compromised);
        Ok(Response::new(v1::VerifyMacResponse {
            valid: out.valid,
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }))
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

impl Shared {
    async fn data_key(
        &self,
        req: Request<v1::GenerateDataKeyRequest>,
        with_plaintext: bool,
    ) -> Result<Response<v1::GenerateDataKeyResponse>, Status> {
        let call = self.identify(&req).await?;
        let m = req.into_inner();
        call.check(self.limits.check_context(&m.context))?;
        let key = call.check(convert::key_ref(&m.key, &call.principal))?;
        call.note_key(&m.key, None);
        let spec = call.check(names::parse_data_key_spec(if m.key_spec.is_empty() {
            "sm4"
        } else {
            &m.key_spec
        }))?;
        let policy = self.kms.policy();
        let mode = match (with_plaintext, m.wrap_to_public_key.is_empty()) {
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
        call.note_context(self.kms.context_hmac(&ctx));
        let work = move |kms: &kms_core::Kms, p: &kms_core::authz::Principal| {
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
        let out = if wrap_to_caller {
            self.run(&call, work).await?
        } else {
            self.run_light(&call, 0, work).await?
        };
        call.note_key(&out.key_id, Some(out.key_version));
        Ok(Response::new(v1::GenerateDataKeyResponse {
            ciphertext: out.ciphertext,
            plaintext: out
                .plaintext
                .map(SecretBytes::into_unprotected_vec)
                .unwrap_or_default(),
            plaintext_encrypted: out.encrypted_to_caller.unwrap_or_default(),
            key_id: out.key_id.to_string(),
            key_version: out.key_version,
        }))
    }
}
