//! Keys moving in and out (issue 19; KEY-4: key material crosses the boundary only wrapped).
//!
//! **Import.** A key created with origin external has no material and is `PENDING_IMPORT`.
//! [`Kms::get_import_parameters`] makes a one-time wrapping key pair for that key and one
//! wrapping spec (`crypto/transport.rs`), stores its private half wrapped under the key's
//! namespace KEK, and returns the public half and a token. [`Kms::import_key_material`] opens
//! the wrapped material with it, checks the material against the key's spec and the policy, and
//! writes it as version 1 in the same store batch that marks the token used: a token imports
//! once, and a crash leaves either the token unused and the key as it was, or both done. A
//! failed attempt (damaged file, wrong material) changes nothing and does not use the token.
//! The same material may be imported again (same SM3 fingerprint); other material never.
//! Imported material may carry an expiry, at which the scheduler deletes it and the key waits
//! for import again ([`Kms::expire_imports_due`], audited like every sweep).
//!
//! **Export.** Only a key created `exportable` (fixed for life) leaves, only wrapped to a
//! recipient's public key by a wrapping spec, only by an administrator, under dual control when
//! configured (released to the requester for exactly the parameters approved, like a backup).
//! Every export is kept in the key record (and so in the signed inventory): when, which version,
//! which spec, the recipient's SM3 fingerprint, by whom. No RPC ever returns plaintext material.

use serde::{Deserialize, Serialize};

use super::approvals::{Params, Sensitive};
use super::cas::{Cas, put_record};
use super::sweeps::{Sweep, SweepLog};
use super::{KeyInfo, Kms, Unsealed, store_corrupt};
use crate::alg::{KeySpec, Purpose};
use crate::authz::{Authorized, GrantOp, ops};
use crate::crypto::transport::{self, WrappingSpec};
use crate::crypto::{self, PublicKey};
use crate::error::{CryptoError, Error, InvalidInput};
use crate::hierarchy::wrap::{self, VersionAad};
use crate::keys::record::{ExportEvent, ImportInfo, KeyRecord, KeyVersion, Origin};
use crate::keys::state::KeyState;
use crate::keys::{KeyId, KeyRef};
use crate::policy::ApprovedDigest;
use crate::secret::{KeyMaterial, SecretBytes};
use crate::store::{Batch, Tree};

/// How long import parameters stay usable (issue 19: 24 hours by default).
pub const IMPORT_TOKEN_TTL: u64 = 24 * 3600;

/// The longest expiry an import may set: ten years, as the longest rotation period.
const MAX_MATERIAL_LIFETIME: u64 = 3650 * crate::clock::DAY;

/// Where tokens live in [`Tree::Meta`].
const TOKEN_PREFIX: &[u8] = b"import-token/";
/// How tokens are written for people and programs.
const TOKEN_TEXT_PREFIX: &str = "imp-";

/// What `GetImportParameters` returns: the public half of a one-time wrapping key.
#[derive(Clone, Debug)]
pub struct ImportParameters {
    pub key_id: KeyId,
    pub token: String,
    pub wrapping_spec: WrappingSpec,
    pub wrapping_public_key: PublicKey,
    pub expires_at: u64,
}

/// What `ImportKeyMaterial` needs.
#[derive(Clone, Debug)]
pub struct ImportMaterialRequest {
    pub key: KeyRef,
    pub token: String,
    /// The material wrapped by the token's spec to its public key; opaque until opened.
    pub wrapped: Vec<u8>,
    /// When the material is to be deleted (the key then waits for import again).
    pub expires_at: Option<u64>,
}

/// An import done: the key as it is now, and how the material came (for the audit record).
#[derive(Clone, Debug)]
pub struct ImportedKey {
    pub info: KeyInfo,
    pub wrapping_spec: WrappingSpec,
    /// SM3 of the one-time wrapping key's SubjectPublicKeyInfo DER, hex.
    pub wrapping_key_sm3: String,
}

/// What `ExportKey` needs.
#[derive(Clone, Debug)]
pub struct ExportKeyRequest {
    pub key: KeyRef,
    /// `None`: the newest version.
    pub version: Option<u32>,
    /// Parsed under the policy: RSA under 2048 bits, or anything but SM2 under gm-only, never
    /// gets here.
    pub recipient: PublicKey,
    pub wrapping_spec: WrappingSpec,
}

/// An export: the material wrapped to the recipient, never the material.
#[derive(Clone, Debug)]
pub struct ExportOutput {
    pub key_id: KeyId,
    pub version: u32,
    pub spec: KeySpec,
    pub wrapping_spec: WrappingSpec,
    pub wrapped: Vec<u8>,
    /// SM3 of the recipient's SubjectPublicKeyInfo DER, hex.
    pub recipient_sm3: String,
}

/// A token as stored: the one-time wrapping key's private half, wrapped under the namespace
/// KEK with the token id as its binding, until the token is used.
#[derive(Serialize, Deserialize)]
struct StoredToken {
    key: KeyId,
    wrapping_spec: String,
    wrapping_key_spec: KeySpec,
    /// Hex; emptied when the token is used.
    wrapped_private: String,
    issued_by: String,
    created_at: u64,
    expires_at: u64,
    #[serde(default)]
    used_at: Option<u64>,
}

impl StoredToken {
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes).map_err(|_| store_corrupt("import token"))
    }

    fn encode(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|_| store_corrupt("import token"))
    }
}

fn token_key(id: KeyId) -> Vec<u8> {
    [TOKEN_PREFIX, id.as_bytes().as_slice()].concat()
}

fn token_text(id: KeyId) -> String {
    format!("{TOKEN_TEXT_PREFIX}{}", hex::encode(id.as_bytes()))
}

fn parse_token(text: &str) -> Result<KeyId, Error> {
    let bad = || {
        Error::from(InvalidInput::new(
            "import token",
            "not an import token (imp- and 32 hex digits, as GetImportParameters returns it)",
        ))
    };
    let hex_part = text
        .trim()
        .strip_prefix(TOKEN_TEXT_PREFIX)
        .ok_or_else(bad)?;
    let raw: [u8; 16] = hex::decode(hex_part)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    Ok(KeyId(uuid::Uuid::from_bytes(raw)))
}

/// The AAD that binds a token's wrapped private key to the token (version 0 is no key version).
fn token_aad(token: KeyId, record: &KeyRecord, spec: KeySpec) -> VersionAad {
    VersionAad::new(
        token,
        0,
        &record.namespace,
        Purpose::AsymmetricDecrypt,
        spec,
    )
}

/// The SM3 fingerprint of key material, hex: of the SubjectPublicKeyInfo for a key pair (as the
/// inventory's `public_key_sm3`, and as anyone holding the public key computes it), of a
/// domain-separated encoding for a secret key (so the value is no plain hash of the key).
fn fingerprint(key: &KeyMaterial) -> Result<String, Error> {
    match key.spec() {
        KeySpec::Sm2 | KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            Ok(hex::encode(crypto::public_key_of(key)?.fingerprint_sm3()))
        }
        spec @ (KeySpec::Sm4Gcm
        | KeySpec::Aes256Gcm
        | KeySpec::HmacSm3
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1) => {
            let input = SecretBytes::from_vec(
                [
                    b"kms import fingerprint v1\0".as_slice(),
                    spec.name().as_bytes(),
                    b"\0",
                    key.expose_secret(),
                ]
                .concat(),
            );
            Ok(hex::encode(crypto::digest(
                ApprovedDigest::SM3,
                input.expose_secret(),
            )))
        }
    }
}

/// Opened material as a key of `record`'s spec, or what is wrong with it.
fn material_for(
    policy: crate::policy::Policy,
    record: &KeyRecord,
    raw: SecretBytes,
) -> Result<KeyMaterial, Error> {
    match record.spec {
        KeySpec::Sm2 | KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let key = crypto::import_private_key(policy, record.purpose, raw.expose_secret())?;
            if key.spec() != record.spec {
                return Err(InvalidInput::new(
                    "key material",
                    format!(
                        "a {} private key, but key {} is {}",
                        key.spec(),
                        record.id,
                        record.spec
                    ),
                )
                .into());
            }
            Ok(key)
        }
        KeySpec::Sm4Gcm
        | KeySpec::Aes256Gcm
        | KeySpec::HmacSm3
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1 => {
            let approved = policy.approve(record.purpose, record.spec)?;
            KeyMaterial::import_symmetric(&approved, raw).map_err(|e| {
                if let Error::InvalidArgument(i) = e {
                    InvalidInput::new("key material", i.problem).into()
                } else {
                    e
                }
            })
        }
    }
}

fn not_imported_origin(record: &KeyRecord) -> Error {
    Error::FailedPrecondition(
        format!(
            "key {} is of origin {}: only a key created with origin external takes imported \
             material",
            record.id,
            record.origin.name()
        )
        .into(),
    )
}

impl Kms {
    /// Makes a one-time wrapping key for importing material into `key` by `spec`. The RSA specs
    /// take `wrapping_key_spec` RSA-3072 (default) or RSA-4096; `sm2` an SM2 key.
    ///
    /// # Errors
    /// FAILED_PRECONDITION for a key not of origin imported; INVALID_STATE for a key being
    /// destroyed; INVALID_ARGUMENT for a wrapping key spec the spec cannot use; the policy's
    /// refusal (RSA under gm-only).
    pub fn get_import_parameters(
        &self,
        auth: &Authorized<'_, ops::GetImportParameters>,
        key: &KeyRef,
        spec: WrappingSpec,
        wrapping_key_spec: Option<KeySpec>,
    ) -> Result<ImportParameters, Error> {
        let vault = self.begin(auth)?;
        let (record, _) = self.reach(auth.principal(), key, GrantOp::Describe)?;
        check_importable(&record)?;
        let wks = match (spec, wrapping_key_spec) {
            (WrappingSpec::Sm2, None | Some(KeySpec::Sm2)) => KeySpec::Sm2,
            (WrappingSpec::RsaOaepSha256 | WrappingSpec::RsaAesKwp, None) => KeySpec::Rsa3072,
            (_, Some(s)) if spec.fits(s) => s,
            (_, Some(s)) => {
                return Err(InvalidInput::new(
                    "wrapping key spec",
                    format!(
                        "{s} cannot serve {}: sm2 takes an SM2 wrapping key, the RSA specs \
                         RSA-3072 or RSA-4096",
                        spec.name()
                    ),
                )
                .into());
            }
        };
        let approved = self
            .config
            .policy
            .approve(Purpose::AsymmetricDecrypt, wks)?;
        let private = crypto::generate(&approved)?;
        let public = crypto::public_key_of(&private)?;
        let token = KeyId::random()?;
        let kek = self.kek(&vault, &record.namespace)?;
        let wrapped = wrap::wrap_version(
            &self.config.policy,
            &kek,
            &token_aad(token, &record, wks),
            &private,
        )?;
        let now = self.now();
        let stored = StoredToken {
            key: record.id,
            wrapping_spec: spec.name().to_owned(),
            wrapping_key_spec: wks,
            wrapped_private: hex::encode(wrapped),
            issued_by: auth.principal().subject.clone(),
            created_at: now,
            expires_at: now.saturating_add(IMPORT_TOKEN_TTL),
            used_at: None,
        };
        let mut batch = Batch::new();
        batch.require(Tree::Meta, token_key(token), None);
        batch.put(Tree::Meta, token_key(token), stored.encode()?);
        self.store.apply(&batch)?;
        Ok(ImportParameters {
            key_id: record.id,
            token: token_text(token),
            wrapping_spec: spec,
            wrapping_public_key: public,
            expires_at: stored.expires_at,
        })
    }

    /// Imports wrapped material into a key of origin imported with `token` (see the module
    /// docs). The key is `ENABLED` afterwards when it was waiting; a re-import of the same
    /// material keeps its state and sets the new expiry.
    ///
    /// # Errors
    /// INVALID_ARGUMENT: a malformed token, a past or too distant expiry, wrapped material
    /// that the token's key cannot open, material that is not a key of this key's spec (wrong
    /// length, curve or size, an encrypted PKCS#8 or one with attributes, a bad RSA exponent,
    /// an SM2 scalar out of range); FAILED_PRECONDITION: an unknown, used or expired token, a
    /// token of another key, a key not of origin imported, other material than the key holds.
    pub fn import_key_material(
        &self,
        auth: &Authorized<'_, ops::ImportKeyMaterial>,
        req: ImportMaterialRequest,
    ) -> Result<ImportedKey, Error> {
        let vault = self.begin(auth)?;
        let token_id = parse_token(&req.token)?;
        let now = self.now();
        if let Some(at) = req.expires_at
            && (at <= now || at - now > MAX_MATERIAL_LIFETIME)
        {
            return Err(InvalidInput::new(
                "expires_at",
                "must be in the future and at most ten years away",
            )
            .into());
        }
        let (record, _) = self.reach(auth.principal(), &req.key, GrantOp::Describe)?;
        check_importable(&record)?;
        let (token, _) = self.usable_token(token_id, &req.token, &record, now)?;
        let (key, wrapping_key_sm3) =
            self.open_import(&vault, token_id, &token, &record, &req.wrapped)?;
        let fp = fingerprint(&key)?;
        let public_key = if record.purpose.is_asymmetric() {
            Some(crypto::public_key_of(&key)?.spki_der().to_vec())
        } else {
            None
        };
        let wrapped = self.wrap_version(&vault, &record, 1, &key)?;
        let written = self
            .cas_update(|| {
                let (mut record, old) = self.load(record.id)?;
                check_importable(&record)?;
                let (mut token, token_old) =
                    self.usable_token(token_id, &req.token, &record, now)?;
                if let Some(held) = &record.import
                    && held.fingerprint != fp
                {
                    return Err(Error::FailedPrecondition(
                        format!(
                            "key {} holds other material (SM3 fingerprint {}); imported \
                             material is never replaced: import this material into a new key",
                            record.id, held.fingerprint
                        )
                        .into(),
                    ));
                }
                match record.versions.first_mut() {
                    Some(v) if v.wrapped.is_none() => v.wrapped = Some(wrapped.clone()),
                    Some(_) => {}
                    None => record.versions.push(KeyVersion {
                        version: 1,
                        created_at: now,
                        wrapped: Some(wrapped.clone()),
                        public_key: public_key.clone(),
                        gcm_invocations: 0,
                    }),
                }
                if record.state == KeyState::PendingImport {
                    record.state = KeyState::Enabled;
                }
                record.import = Some(ImportInfo {
                    fingerprint: fp.clone(),
                    imported_at: record.import.as_ref().map_or(now, |i| i.imported_at),
                    last_imported_at: now,
                    expires_at: req.expires_at,
                    expired_at: None,
                });
                token.used_at = Some(now);
                token.wrapped_private.clear();
                let mut batch = Batch::new();
                put_record(&mut batch, &mut record, old)?;
                batch.require(Tree::Meta, token_key(token_id), Some(token_old));
                batch.put(Tree::Meta, token_key(token_id), token.encode()?);
                Ok(Cas::Write(batch, record))
            })?
            .ok_or_else(|| {
                Error::FailedPrecondition("the key is being changed concurrently; retry".into())
            })?;
        self.cache.forget(written.id);
        Ok(ImportedKey {
            info: KeyInfo::from_record(&written),
            wrapping_spec: WrappingSpec::parse(&token.wrapping_spec)
                .ok_or_else(|| store_corrupt("import token wrapping spec"))?,
            wrapping_key_sm3,
        })
    }

    /// The token `id` if it may import into `record` now, with its stored bytes.
    fn usable_token(
        &self,
        id: KeyId,
        text: &str,
        record: &KeyRecord,
        now: u64,
    ) -> Result<(StoredToken, Vec<u8>), Error> {
        let text = text.trim();
        let bytes = self.store.get(Tree::Meta, &token_key(id))?.ok_or_else(|| {
            Error::FailedPrecondition(
                format!("import token {text} is unknown here: get import parameters first").into(),
            )
        })?;
        let token = StoredToken::decode(&bytes)?;
        if let Some(at) = token.used_at {
            return Err(Error::FailedPrecondition(
                format!(
                    "import token {text} was used at {at} (Unix time); a token imports once: get \
                     new import parameters"
                )
                .into(),
            ));
        }
        if token.expires_at <= now {
            return Err(Error::FailedPrecondition(
                format!(
                    "import token {text} expired at {} (Unix time); get new import parameters",
                    token.expires_at
                )
                .into(),
            ));
        }
        if token.key != record.id {
            return Err(Error::FailedPrecondition(
                format!(
                    "import token {text} was issued for key {}, not key {}",
                    token.key, record.id
                )
                .into(),
            ));
        }
        Ok((token, bytes))
    }

    /// Opens `wrapped` with the token's private key and reads it as a key of `record`'s spec.
    fn open_import(
        &self,
        vault: &Unsealed,
        token_id: KeyId,
        token: &StoredToken,
        record: &KeyRecord,
        wrapped: &[u8],
    ) -> Result<(KeyMaterial, String), Error> {
        let spec = WrappingSpec::parse(&token.wrapping_spec)
            .ok_or_else(|| store_corrupt("import token wrapping spec"))?;
        let policy = self.config.policy;
        let kek = self.kek(vault, &record.namespace)?;
        let sealed =
            hex::decode(&token.wrapped_private).map_err(|_| store_corrupt("import token key"))?;
        let private = wrap::unwrap_version(
            &policy,
            &kek,
            &token_aad(token_id, record, token.wrapping_key_spec),
            &sealed,
        )?;
        let approved = policy
            .approve(Purpose::AsymmetricDecrypt, token.wrapping_key_spec)?
            .for_open();
        let raw = transport::unwrap(&approved, spec, &private, wrapped).map_err(|e| {
            if e == CryptoError::DecryptionFailed {
                Error::from(InvalidInput::new(
                    "wrapped key material",
                    format!(
                        "cannot be opened with this token's wrapping key by {}: wrapped to \
                         another public key or by another spec, cut short, or damaged",
                        spec.name()
                    ),
                ))
            } else {
                e.into()
            }
        })?;
        let wrapping_key_sm3 = hex::encode(crypto::public_key_of(&private)?.fingerprint_sm3());
        Ok((material_for(policy, record, raw)?, wrapping_key_sm3))
    }

    /// Exports one version of an exportable key wrapped to `req.recipient` (see the module
    /// docs). Under dual control the first call files an approval request; the requester
    /// repeats the call with the released approval, for exactly the same parameters.
    ///
    /// # Errors
    /// FAILED_PRECONDITION for a key not created exportable, an approval for other parameters;
    /// INVALID_STATE for a key that is not enabled or disabled; NOT_FOUND for a version
    /// without material; INVALID_ARGUMENT for a recipient that does not fit the spec, or
    /// material too large for `rsa-oaep-sha256`.
    pub fn export_key(
        &self,
        auth: &Authorized<'_, ops::ExportKey>,
        req: ExportKeyRequest,
    ) -> Result<ExportOutput, Error> {
        let vault = self.begin(auth)?;
        let (record, _) = self.reach(auth.principal(), &req.key, GrantOp::Describe)?;
        if !record.exportable {
            return Err(Error::FailedPrecondition(
                format!(
                    "key {} is not exportable: only a key created exportable leaves the KMS \
                     (fixed when it was created)",
                    record.id
                )
                .into(),
            ));
        }
        if !matches!(record.state, KeyState::Enabled | KeyState::Disabled) {
            return Err(Error::InvalidState {
                key: record.id.to_string(),
                state: record.state,
                op: "export",
            });
        }
        let version = match req.version {
            Some(v) => v,
            None => record.newest().map(|v| v.version).ok_or_else(|| {
                Error::FailedPrecondition(format!("key {} has no material", record.id).into())
            })?,
        };
        let spec = req.wrapping_spec;
        if !spec.fits(req.recipient.spec()) {
            return Err(InvalidInput::new(
                "recipient public key",
                format!(
                    "a {} key cannot receive by {}: sm2 needs an SM2 public key, the RSA specs \
                     RSA-3072 or RSA-4096",
                    req.recipient.spec(),
                    spec.name()
                ),
            )
            .into());
        }
        let approved = self
            .config
            .policy
            .approve(Purpose::AsymmetricDecrypt, req.recipient.spec())?;
        let recipient_sm3 = hex::encode(req.recipient.fingerprint_sm3());
        let params = Params::ExportKey {
            key: record.id,
            version,
            wrapping_spec: spec.name().to_owned(),
            recipient_sm3: recipient_sm3.clone(),
        };
        self.quorum(auth, Sensitive::ExportKey, || Ok(params.clone()))?;
        if let Some(id) = auth.approval() {
            let approved_for = self.approved_params(id)?;
            if approved_for != params {
                return Err(Error::FailedPrecondition(
                    format!(
                        "approval request {id} was for {}, not this export",
                        approved_for.describe()
                    )
                    .into(),
                ));
            }
        }
        let material = self.material(&vault, &record, version)?;
        let plain = crypto::export_material(&material)?;
        let wrapped = transport::wrap(&approved, spec, &req.recipient, plain.expose_secret())
            .map_err(|e| {
                if e == CryptoError::OperationFailed && spec == WrappingSpec::RsaOaepSha256 {
                    Error::from(InvalidInput::new(
                        "wrapping spec",
                        "the material is too large for rsa-oaep-sha256: use rsa-aes-kwp",
                    ))
                } else {
                    e.into()
                }
            })?;
        // The export is in the record before the wrapped material leaves.
        let event = ExportEvent {
            at: self.now(),
            version,
            wrapping_spec: spec.name().to_owned(),
            recipient_sm3: recipient_sm3.clone(),
            by: auth.principal().subject.clone(),
        };
        self.update(auth.principal(), &req.key, GrantOp::Describe, |r, _| {
            r.exports.push(event.clone());
            Ok(())
        })?;
        Ok(ExportOutput {
            key_id: record.id,
            version,
            spec: record.spec,
            wrapping_spec: spec,
            wrapped,
            recipient_sm3,
        })
    }

    /// Deletes imported material whose expiry has come (see the module docs); runs on every
    /// node, each expiry once, by the same re-read-and-swap as the other sweeps.
    pub(super) fn expire_imports_due(&self, log: &dyn SweepLog) -> Result<Vec<KeyId>, Error> {
        let now = self.now();
        let due: Vec<KeyId> = self
            .all_records()?
            .into_iter()
            .filter(|r| expiry_due(r, now))
            .map(|r| r.id)
            .collect();
        self.sweep_each(log, Sweep::ImportExpiry, due, |id| self.expire_if_due(id))
    }

    fn expire_if_due(&self, id: KeyId) -> Result<bool, Error> {
        let expired = self.cas_update(|| {
            let (mut record, old) = self.load(id)?;
            let now = self.now();
            if !expiry_due(&record, now) {
                return Ok(Cas::Done(false));
            }
            for v in &mut record.versions {
                v.wrapped = None;
            }
            if matches!(record.state, KeyState::Enabled | KeyState::Disabled) {
                record.state = KeyState::PendingImport;
            }
            if let Some(i) = &mut record.import {
                i.expires_at = None;
                i.expired_at = Some(now);
            }
            let mut batch = Batch::new();
            put_record(&mut batch, &mut record, old)?;
            Ok(Cas::Write(batch, true))
        })?;
        Ok(expired.unwrap_or(false))
    }
}

/// Imported material whose expiry has come and which is still there.
fn expiry_due(r: &KeyRecord, now: u64) -> bool {
    r.origin == Origin::Imported
        && r.import
            .as_ref()
            .and_then(|i| i.expires_at)
            .is_some_and(|t| t <= now)
        && r.versions.iter().any(|v| v.wrapped.is_some())
}

/// Whether material may be imported into `record` at all (origin and state).
fn check_importable(record: &KeyRecord) -> Result<(), Error> {
    if record.origin != Origin::Imported {
        return Err(not_imported_origin(record));
    }
    match record.state {
        KeyState::PendingImport
        | KeyState::Enabled
        | KeyState::Disabled
        | KeyState::Compromised => Ok(()),
        KeyState::PendingDestruction | KeyState::Destroyed => Err(Error::InvalidState {
            key: record.id.to_string(),
            state: record.state,
            op: "import key material",
        }),
    }
}

#[cfg(test)]
mod tests;
