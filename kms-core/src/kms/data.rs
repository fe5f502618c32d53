//! The data plane: encrypt, decrypt, re-encrypt, data keys, sign, verify, asymmetric decrypt,
//! public keys, MACs and random bytes. Each checks role, reach, purpose, state and policy before
//! touching key material.

use std::sync::Arc;

use super::{Kms, Unsealed, store_corrupt};
use crate::alg::{DataKeySpec, Purpose, SignatureParams};
use crate::authz::{self, Authorized, DataKeyOperation, GrantOp, Op, Operation, ReEncryptTo, ops};
use crate::crypto::{self, Message, PublicKey};
use crate::envelope::{self, EncryptionContext};
use crate::error::{CryptoError, Error, InvalidInput};
use crate::keys::record::KeyRecord;
use crate::keys::state::KeyState;
use crate::keys::{KeyId, KeyRef};
use crate::policy::{Approved, Open, Protect};
use crate::secret::{KeyMaterial, SecretBytes};

/// The most random bytes one call returns.
pub const MAX_RANDOM_BYTES: usize = 1024;

#[derive(Debug)]
pub struct EncryptOutput {
    pub ciphertext: Vec<u8>,
    pub key_id: KeyId,
    pub key_version: u32,
}

#[derive(Debug)]
pub struct DecryptOutput {
    pub plaintext: SecretBytes,
    pub key_id: KeyId,
    pub key_version: u32,
    /// The key is compromised: the caller should re-protect this data under another key.
    pub key_compromised: bool,
}

/// How a data key is returned.
#[derive(Debug, Clone)]
pub enum DataKeyMode {
    /// Plaintext and ciphertext (GenerateDataKey).
    WithPlaintext,
    /// Ciphertext only (GenerateDataKeyWithoutPlaintext).
    WithoutPlaintext,
    /// Ciphertext, and the plaintext encrypted to this public key (SM2 or RSA-OAEP), so the key
    /// never crosses the wire in clear even inside TLS (KEY-4).
    EncryptedTo(PublicKey),
}

#[derive(Debug)]
pub struct DataKeyOutput {
    /// The data key encrypted under the master key (a ciphertext blob).
    pub ciphertext: Vec<u8>,
    pub plaintext: Option<SecretBytes>,
    /// The data key encrypted to the caller's public key.
    pub encrypted_to_caller: Option<Vec<u8>>,
    pub key_id: KeyId,
    pub key_version: u32,
}

#[derive(Debug)]
pub struct PublicKeyOutput {
    pub public_key: PublicKey,
    pub key_id: KeyId,
    pub key_version: u32,
}

#[derive(Debug)]
pub struct SignOutput {
    pub signature: Vec<u8>,
    pub key_id: KeyId,
    pub key_version: u32,
}

#[derive(Debug)]
pub struct VerifyOutput {
    pub valid: bool,
    pub key_id: KeyId,
    /// The version whose public key accepted the signature (or was tried, if invalid).
    pub key_version: u32,
    pub key_compromised: bool,
}

fn wrong_purpose(record: &KeyRecord, want: Purpose) -> Error {
    crate::policy::PolicyError::WrongPurpose {
        spec: record.spec,
        purpose: want,
    }
    .into()
}

impl Kms {
    /// Reach + purpose + state + policy for new protection with the newest version.
    pub(super) fn for_protect<O: Operation>(
        &self,
        auth: &Authorized<'_, O>,
        key: &KeyRef,
        purpose: Purpose,
    ) -> Result<(Arc<Unsealed>, KeyRecord, Approved<Protect>), Error> {
        let op = O::OP;
        let vault = self.begin(auth)?;
        let grant_op = op.grant_op().ok_or(CryptoError::Mismatch)?;
        let (record, _) = self.reach(auth.principal(), key, grant_op)?;
        let approved = self.check_protect(&record, op, purpose)?;
        Ok((vault, record, approved))
    }

    /// Purpose + state + policy for new protection with a key already reached.
    pub(super) fn check_protect(
        &self,
        record: &KeyRecord,
        op: Op,
        purpose: Purpose,
    ) -> Result<Approved<Protect>, Error> {
        if record.purpose != purpose {
            return Err(wrong_purpose(record, purpose));
        }
        if !record.state.allows_protect() {
            return Err(Error::InvalidState {
                key: record.id.to_string(),
                state: record.state,
                op: op.name(),
            });
        }
        Ok(self.config.policy.approve(record.purpose, record.spec)?)
    }

    /// Reach + purpose + state + policy for opening existing protection.
    pub(super) fn for_open<O: Operation>(
        &self,
        auth: &Authorized<'_, O>,
        key: &KeyRef,
        purpose: Purpose,
    ) -> Result<(Arc<Unsealed>, KeyRecord, Approved<Open>), Error> {
        let op = O::OP;
        let vault = self.begin(auth)?;
        let grant_op = op.grant_op().ok_or(CryptoError::Mismatch)?;
        let (record, _) = self.reach(auth.principal(), key, grant_op)?;
        self.check_open(&record, op, purpose)?;
        let approved = self
            .config
            .policy
            .approve_open(record.purpose, record.spec)?;
        Ok((vault, record, approved))
    }

    pub(super) fn check_open(
        &self,
        record: &KeyRecord,
        op: Op,
        purpose: Purpose,
    ) -> Result<(), Error> {
        if record.purpose != purpose {
            return Err(wrong_purpose(record, purpose));
        }
        if !record.state.allows_open() {
            return Err(Error::InvalidState {
                key: record.id.to_string(),
                state: record.state,
                op: op.name(),
            });
        }
        Ok(())
    }

    /// The newest version's material for new protection, with its use counted against the
    /// GCM budget (`gcm_budget.rs`), which may rotate the key: `record` is updated to match.
    fn newest_material(
        &self,
        vault: &Unsealed,
        record: &mut KeyRecord,
    ) -> Result<(u32, Arc<KeyMaterial>), Error> {
        let (updated, version) = self.spend_invocation(vault, record)?;
        if let Some(updated) = updated {
            *record = updated;
        }
        Ok((version, self.material(vault, record, version)?))
    }

    /// Encrypts up to the caller's limit of plaintext under the newest version (ciphertext blob).
    pub fn encrypt(
        &self,
        auth: &Authorized<'_, ops::Encrypt>,
        key: &KeyRef,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<EncryptOutput, Error> {
        let vault = self.begin(auth)?;
        let (mut record, _) = self.reach(auth.principal(), key, GrantOp::Encrypt)?;
        if record.purpose == Purpose::AsymmetricDecrypt {
            return self.encrypt_to_public_key(&record, context, plaintext);
        }
        let approved = self.check_protect(&record, Op::Encrypt, Purpose::Encrypt)?;
        let (version, material) = self.newest_material(&vault, &mut record)?;
        let ciphertext = envelope::seal(
            &approved,
            &material,
            record.id.0,
            version,
            context,
            plaintext,
        )?;
        Ok(EncryptOutput {
            ciphertext,
            key_id: record.id,
            key_version: version,
        })
    }

    /// Encrypt with an asymmetric-decrypt key (generated here, or a partner's public-only key):
    /// SM2 (GM/T 0009 DER) or RSA-OAEP-SHA-256 to its newest public key, so applications
    /// encrypt to a partner through the same RPC (issue 19). The holder of the private key
    /// opens it (`AsymmetricDecrypt` here, for a generated key). Public-key encryption binds no
    /// context, so one given is refused rather than silently dropped.
    fn encrypt_to_public_key(
        &self,
        record: &KeyRecord,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<EncryptOutput, Error> {
        let approved = self.check_protect(record, Op::Encrypt, Purpose::AsymmetricDecrypt)?;
        if !context.is_empty() {
            return Err(InvalidInput::new(
                "context",
                "encryption to a public key binds no context: leave it empty",
            )
            .into());
        }
        let newest = record
            .newest()
            .ok_or_else(|| store_corrupt("key record without versions"))?;
        let der = newest
            .public_key
            .clone()
            .ok_or_else(|| store_corrupt("asymmetric key version without its public key"))?;
        let public = PublicKey::from_trusted(record.spec, der)?;
        let ciphertext = crypto::encrypt_to_public_key(&approved, &public, plaintext)?;
        Ok(EncryptOutput {
            ciphertext,
            key_id: record.id,
            key_version: newest.version,
        })
    }

    /// Decrypts a blob; the blob names its key and version.
    pub fn decrypt(
        &self,
        auth: &Authorized<'_, ops::Decrypt>,
        context: &EncryptionContext,
        ciphertext: &[u8],
    ) -> Result<DecryptOutput, Error> {
        self.decrypt_as(auth, context, ciphertext)
    }

    fn decrypt_as<O: Operation>(
        &self,
        auth: &Authorized<'_, O>,
        context: &EncryptionContext,
        ciphertext: &[u8],
    ) -> Result<DecryptOutput, Error> {
        let env = envelope::parse(ciphertext)?;
        let key = KeyRef::Id(KeyId(env.header.key_id));
        let (vault, record, approved) = self.for_open(auth, &key, Purpose::Encrypt)?;
        let material = self.material(&vault, &record, env.header.key_version)?;
        let plaintext = envelope::open(&approved, &material, &env, context)?;
        Ok(DecryptOutput {
            plaintext,
            key_id: record.id,
            key_version: env.header.key_version,
            key_compromised: record.state == KeyState::Compromised,
        })
    }

    /// Decrypts and re-encrypts under the newest version of `destination` (or of the same key)
    /// without the plaintext ever leaving the KMS.
    ///
    /// Who may move data where is the re-encryption model of [`crate::authz`]: from the source
    /// key by its own namespace or a `reencrypt` grant; into a destination of the source key's
    /// namespace within the caller's reach, or into any key a `reencrypt-to` grant names. Both
    /// keys are checked before anything is decrypted.
    pub fn reencrypt(
        &self,
        auth: &Authorized<'_, ops::ReEncrypt>,
        ciphertext: &[u8],
        source_context: &EncryptionContext,
        destination: Option<&KeyRef>,
        destination_context: &EncryptionContext,
    ) -> Result<EncryptOutput, Error> {
        let principal = auth.principal();
        let env = envelope::parse(ciphertext)?;
        let source_ref = KeyRef::Id(KeyId(env.header.key_id));
        let vault = self.begin(auth)?;
        // Rule 1 (from): the source's namespace or a `reencrypt` grant on it.
        let (source, _) = self.reach_with(principal, &source_ref, |record, grant| {
            authz::may_reencrypt_from(principal, record, grant)
        })?;
        self.check_open(&source, Op::ReEncrypt, Purpose::Encrypt)?;
        let open = self
            .config
            .policy
            .approve_open(source.purpose, source.spec)?;
        // Rule 2 (to): checked on the destination record before the source is opened.
        let dest_ref = destination.cloned().unwrap_or(source_ref);
        let mut verdict = ReEncryptTo::OutOfReach;
        let (mut record, _) = self.reach_with(principal, &dest_ref, |record, grant| {
            verdict = authz::reencrypt_destination(principal, &source.namespace, record, grant);
            verdict != ReEncryptTo::OutOfReach
        })?;
        match verdict {
            ReEncryptTo::Allowed => {}
            // `OutOfReach` has already become NotFound in `reach_with`; listed for completeness.
            ReEncryptTo::OutOfReach | ReEncryptTo::OutsideSourceNamespace => {
                return Err(Error::PermissionDenied {
                    principal: principal.to_string(),
                    op: "re-encrypt into a key outside the source key's namespace \
                         without a reencrypt-to grant on it",
                });
            }
        }
        let approved = self.check_protect(&record, Op::ReEncrypt, Purpose::Encrypt)?;
        let source_material = self.material(&vault, &source, env.header.key_version)?;
        let plaintext = envelope::open(&open, &source_material, &env, source_context)?;
        let (version, material) = self.newest_material(&vault, &mut record)?;
        let ciphertext = envelope::seal(
            &approved,
            &material,
            record.id.0,
            version,
            destination_context,
            plaintext.expose_secret(),
        )?;
        Ok(EncryptOutput {
            ciphertext,
            key_id: record.id,
            key_version: version,
        })
    }

    /// A fresh data key for envelope encryption, returned encrypted under the master key and,
    /// depending on `mode`, in plaintext or encrypted to the caller's public key.
    ///
    /// A proof for [`ops::GenerateDataKeyWithoutPlaintext`] covers only
    /// [`DataKeyMode::WithoutPlaintext`]; a proof for [`ops::GenerateDataKey`] covers every mode.
    pub fn generate_data_key<O: DataKeyOperation>(
        &self,
        auth: &Authorized<'_, O>,
        key: &KeyRef,
        spec: DataKeySpec,
        context: &EncryptionContext,
        mode: DataKeyMode,
    ) -> Result<DataKeyOutput, Error> {
        let wants_plaintext = !matches!(mode, DataKeyMode::WithoutPlaintext);
        if wants_plaintext && !O::PLAINTEXT {
            return Err(Error::PermissionDenied {
                principal: auth.principal().to_string(),
                op: Op::GenerateDataKey.name(),
            });
        }
        let (vault, mut record, approved) = self.for_protect(auth, key, Purpose::Encrypt)?;
        let data_key_spec = self.config.policy.approve_data_key(approved, spec)?;
        let data_key = crypto::generate_data_key(data_key_spec)?;
        let (version, material) = self.newest_material(&vault, &mut record)?;
        let ciphertext = envelope::seal(
            &approved,
            &material,
            record.id.0,
            version,
            context,
            data_key.expose_secret(),
        )?;
        let (plaintext, encrypted_to_caller) = match mode {
            DataKeyMode::WithPlaintext => (Some(data_key), None),
            DataKeyMode::WithoutPlaintext => (None, None),
            DataKeyMode::EncryptedTo(public) => {
                let to_caller = self
                    .config
                    .policy
                    .approve(Purpose::AsymmetricDecrypt, public.spec())?;
                (
                    None,
                    Some(crypto::encrypt_to_public_key(
                        &to_caller,
                        &public,
                        data_key.expose_secret(),
                    )?),
                )
            }
        };
        Ok(DataKeyOutput {
            ciphertext,
            plaintext,
            encrypted_to_caller,
            key_id: record.id,
            key_version: version,
        })
    }

    /// Signs a message or a digest with the newest version.
    pub fn sign(
        &self,
        auth: &Authorized<'_, ops::Sign>,
        key: &KeyRef,
        message: Message<'_>,
        params: &SignatureParams,
    ) -> Result<SignOutput, Error> {
        let (vault, mut record, approved) = self.for_protect(auth, key, Purpose::Sign)?;
        let request = params.resolve(record.spec)?;
        let scheme = self.config.policy.approve_signature(approved, request)?;
        let (version, material) = self.newest_material(&vault, &mut record)?;
        check_message(message)?;
        let signature = crypto::sign(&scheme, &material, message)?;
        Ok(SignOutput {
            signature,
            key_id: record.id,
            key_version: version,
        })
    }

    /// Verifies with one version, or with every version newest first when none is named, so
    /// that signatures made before a rotation still verify (KEY-7).
    pub fn verify(
        &self,
        auth: &Authorized<'_, ops::Verify>,
        key: &KeyRef,
        message: Message<'_>,
        signature: &[u8],
        params: &SignatureParams,
        version: Option<u32>,
    ) -> Result<VerifyOutput, Error> {
        let (_, record, approved) = self.for_open(auth, key, Purpose::Sign)?;
        let request = params.resolve(record.spec)?;
        let scheme = self.config.policy.approve_verify(approved, request)?;
        check_message(message)?;
        let mut tried = 0;
        for v in candidate_versions(&record, version)? {
            tried = v.version;
            let Some(der) = &v.public_key else { continue };
            let public = PublicKey::from_trusted(record.spec, der.clone())?;
            if crypto::verify(&scheme, &public, message, signature)? {
                return Ok(VerifyOutput {
                    valid: true,
                    key_id: record.id,
                    key_version: v.version,
                    key_compromised: record.state == KeyState::Compromised,
                });
            }
        }
        Ok(VerifyOutput {
            valid: false,
            key_id: record.id,
            key_version: tried,
            key_compromised: record.state == KeyState::Compromised,
        })
    }

    /// Decrypts an SM2 or RSA-OAEP ciphertext made with one of the key's public keys (API-3).
    pub fn asymmetric_decrypt(
        &self,
        auth: &Authorized<'_, ops::AsymmetricDecrypt>,
        key: &KeyRef,
        ciphertext: &[u8],
        version: Option<u32>,
    ) -> Result<DecryptOutput, Error> {
        let (vault, record, approved) = self.for_open(auth, key, Purpose::AsymmetricDecrypt)?;
        if ciphertext.is_empty() {
            return Err(InvalidInput::new("ciphertext", "is empty").into());
        }
        for v in candidate_versions(&record, version)? {
            let material = self.material(&vault, &record, v.version)?;
            if let Ok(plaintext) = crypto::asymmetric_decrypt(&approved, &material, ciphertext) {
                return Ok(DecryptOutput {
                    plaintext,
                    key_id: record.id,
                    key_version: v.version,
                    key_compromised: record.state == KeyState::Compromised,
                });
            }
        }
        Err(CryptoError::DecryptionFailed.into())
    }

    /// The public key of a version (newest by default). Works in any state but destroyed.
    pub fn get_public_key(
        &self,
        auth: &Authorized<'_, ops::GetPublicKey>,
        key: &KeyRef,
        version: Option<u32>,
    ) -> Result<PublicKeyOutput, Error> {
        self.begin(auth)?;
        let (record, _) = self.reach(auth.principal(), key, GrantOp::GetPublicKey)?;
        match record.purpose {
            // A password key's public key is what the mobile app ships (issue 22 item 2).
            Purpose::Sign | Purpose::AsymmetricDecrypt | Purpose::Password => {}
            Purpose::Encrypt | Purpose::Mac | Purpose::Pepper | Purpose::Tokenize => {
                return Err(Error::FailedPrecondition(
                    format!(
                        "key {} is a symmetric {} key and has no public key",
                        record.id, record.spec
                    )
                    .into(),
                ));
            }
        }
        if record.state == KeyState::Destroyed {
            return Err(Error::InvalidState {
                key: record.id.to_string(),
                state: record.state,
                op: Op::GetPublicKey.name(),
            });
        }
        let v = candidate_versions(&record, version)?
            .into_iter()
            .next()
            .ok_or(CryptoError::MalformedKey)?;
        let der = v.public_key.clone().ok_or(CryptoError::MalformedKey)?;
        Ok(PublicKeyOutput {
            public_key: PublicKey::from_trusted(record.spec, der)?,
            key_id: record.id,
            key_version: v.version,
        })
    }

    /// An HMAC tag with the newest version.
    pub fn generate_mac(
        &self,
        auth: &Authorized<'_, ops::GenerateMac>,
        key: &KeyRef,
        data: &[u8],
    ) -> Result<SignOutput, Error> {
        let (vault, mut record, approved) = self.for_protect(auth, key, Purpose::Mac)?;
        let (version, material) = self.newest_material(&vault, &mut record)?;
        let signature = crypto::mac(&approved, &material, data)?;
        Ok(SignOutput {
            signature,
            key_id: record.id,
            key_version: version,
        })
    }

    /// Checks a tag in constant time against one version, or every version newest first.
    pub fn verify_mac(
        &self,
        auth: &Authorized<'_, ops::VerifyMac>,
        key: &KeyRef,
        data: &[u8],
        tag: &[u8],
        version: Option<u32>,
    ) -> Result<VerifyOutput, Error> {
        let (vault, record, approved) = self.for_open(auth, key, Purpose::Mac)?;
        let mut tried = 0;
        for v in candidate_versions(&record, version)? {
            tried = v.version;
            let material = self.material(&vault, &record, v.version)?;
            if crypto::verify_mac(&approved, &material, data, tag)? {
                return Ok(VerifyOutput {
                    valid: true,
                    key_id: record.id,
                    key_version: v.version,
                    key_compromised: record.state == KeyState::Compromised,
                });
            }
        }
        Ok(VerifyOutput {
            valid: false,
            key_id: record.id,
            key_version: tried,
            key_compromised: record.state == KeyState::Compromised,
        })
    }

    /// Random bytes from the OS CSPRNG (ALG-6), at most 1024 per call.
    pub fn generate_random(
        &self,
        auth: &Authorized<'_, ops::GenerateRandom>,
        len: usize,
    ) -> Result<SecretBytes, Error> {
        self.begin(auth)?;
        if len == 0 || len > MAX_RANDOM_BYTES {
            return Err(InvalidInput::new("length", "must be 1 to 1024 bytes").into());
        }
        Ok(crypto::rng::random_secret(len)?)
    }
}

fn check_message(message: Message<'_>) -> Result<(), Error> {
    if let Message::Digest(d) = message
        && !matches!(d.len(), 32 | 48 | 64)
    {
        return Err(InvalidInput::new("digest", "must be 32, 48 or 64 bytes").into());
    }
    Ok(())
}

/// The versions to try: the one named, or all with material (or public keys), newest first.
fn candidate_versions(
    record: &KeyRecord,
    version: Option<u32>,
) -> Result<Vec<&crate::keys::record::KeyVersion>, Error> {
    match version {
        Some(v) => record
            .version(v)
            .map(|kv| vec![kv])
            .ok_or_else(|| Error::NotFound {
                what: "key version",
                name: format!("{}/{v}", record.id),
            }),
        None => Ok(record.versions.iter().rev().collect()),
    }
}
