//! The KMS's own SM2 audit key: created at init in the system namespace, kept in the hierarchy
//! like any other key, used only to sign audit checkpoints, the trail's key transitions and
//! inventories. Its public halves (every version) are for auditors.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{CreateKeyRequest, Kms, PublicKeyOutput, Unsealed};
use crate::alg::{KeySpec, Purpose, SM2_DEFAULT_ID, SignatureRequest};
use crate::audit::signer::{AuditSigner, Signer, SigningKey};
use crate::crypto::{self, Message, PublicKey};
use crate::envelope::EncryptionContext;
use crate::error::Error;
use crate::hierarchy::wrap::{self, Derived};
use crate::hierarchy::{Kek, RootKey};
use crate::keys::{Alias, KeyRef, Namespace};
use crate::store::{Batch, Tree};

/// One version of the audit key, public half.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditKeyVersion {
    pub key_id: crate::keys::KeyId,
    pub version: u32,
    pub created_at: u64,
    pub public_key: PublicKey,
}

/// The KMS audit key as the audit trail signs with it.
struct KmsAuditSigner(Arc<Kms>);

impl AuditSigner for KmsAuditSigner {
    fn newest(&self) -> Option<SigningKey> {
        self.0.audit_signing_key().ok()
    }

    fn sign(&self, version: u32, message: &[u8]) -> Option<Vec<u8>> {
        self.0.sign_with_audit_version(version, message).ok()
    }
}

/// The namespace of the KMS's own keys; no application or administrator creates keys here.
pub const SYSTEM_NAMESPACE: &str = "kms-system";
pub const AUDIT_KEY_ALIAS: &str = "audit-signing";

fn audit_ref() -> Result<KeyRef, Error> {
    Ok(KeyRef::Alias(
        Namespace::system(),
        Alias::new(AUDIT_KEY_ALIAS)?,
    ))
}

impl Kms {
    /// During init: the system namespace's KEK and the audit key, added to the init batch.
    pub(super) fn prepare_audit_key(&self, root: RootKey, batch: &mut Batch) -> Result<(), Error> {
        let ns = Namespace::system();
        let wrap_alg = root.alg();
        let kek = Kek::generate(wrap_alg)?;
        let wrapped_kek = wrap::wrap_kek(&self.config.policy, &root, &ns, &kek)?;
        batch.put(Tree::Namespaces, ns.as_str().as_bytes(), wrapped_kek);
        let mut keks = HashMap::new();
        keks.insert(ns.clone(), Arc::new(kek));
        let vault = Unsealed {
            root,
            wrap: wrap_alg,
            keks: RwLock::new(keks),
        };
        let req = CreateKeyRequest {
            namespace: ns,
            purpose: Purpose::Sign,
            spec: KeySpec::Sm2,
            alias: Some(Alias::new(AUDIT_KEY_ALIAS)?),
            rotation_period: None,
            description: "KMS audit key: signs audit checkpoints and key inventories".into(),
        };
        self.prepare_key(&vault, &req, super::lifecycle::KeyOptions::default(), batch)?;
        Ok(())
    }

    /// The audit key's public half (no principal needed: it is public).
    pub fn audit_public_key(&self) -> Result<PublicKeyOutput, Error> {
        let (record, _) = self.load(self.resolve_id(&audit_ref()?)?)?;
        let v = record.newest().ok_or(crate::CryptoError::MalformedKey)?;
        let der = v
            .public_key
            .clone()
            .ok_or(crate::CryptoError::MalformedKey)?;
        Ok(PublicKeyOutput {
            public_key: PublicKey::from_trusted(KeySpec::Sm2, der)?,
            key_id: record.id,
            key_version: v.version,
        })
    }

    /// Every version of the audit key, oldest first: what a verifier needs for a trail that
    /// spans rotations (or only the first, with the trail's transition records). No principal
    /// needed: they are public.
    pub fn audit_public_keys(&self) -> Result<Vec<AuditKeyVersion>, Error> {
        let (record, _) = self.load(self.resolve_id(&audit_ref()?)?)?;
        record
            .versions
            .iter()
            .map(|v| {
                let der = v
                    .public_key
                    .clone()
                    .ok_or(crate::CryptoError::MalformedKey)?;
                Ok(AuditKeyVersion {
                    key_id: record.id,
                    version: v.version,
                    created_at: v.created_at,
                    public_key: PublicKey::from_trusted(KeySpec::Sm2, der)?,
                })
            })
            .collect()
    }

    /// The audit key's newest version, as the audit writer signs with it once the trail has
    /// been handed over to it.
    fn audit_signing_key(&self) -> Result<SigningKey, Error> {
        let out = self.audit_public_key()?;
        Ok(SigningKey {
            key_id: out.key_id.to_string(),
            version: out.key_version,
            public_key: out.public_key,
        })
    }

    /// Signs `message` with `version` of the audit key: the audit trail names the version it
    /// signs with, which is the newest only once a transition record has handed over to it.
    fn sign_with_audit_version(&self, version: u32, message: &[u8]) -> Result<Vec<u8>, Error> {
        let vault = self.unsealed()?;
        let (record, _) = self.load(self.resolve_id(&audit_ref()?)?)?;
        let material = self.material(&vault, &record, version)?;
        let policy = self.config.policy;
        let approved = policy.approve(Purpose::Sign, KeySpec::Sm2)?;
        let scheme = policy.approve_signature(
            approved,
            SignatureRequest::Sm2 {
                id: SM2_DEFAULT_ID.to_owned(),
            },
        )?;
        Ok(crypto::sign(&scheme, &material, Message::Raw(message))?)
    }

    /// Signs with the audit key's newest version: `(key id, version, DER signature)`.
    /// `make` builds the bytes for that key id and version.
    pub(super) fn sign_as_audit_key(
        &self,
        make: &dyn Fn(&str, u32) -> Vec<u8>,
    ) -> Result<(String, u32, Vec<u8>), Error> {
        let vault = self.unsealed()?;
        let (record, _) = self.load(self.resolve_id(&audit_ref()?)?)?;
        let version = record
            .newest()
            .map(|v| v.version)
            .ok_or(crate::CryptoError::MalformedKey)?;
        let material = self.material(&vault, &record, version)?;
        let policy = self.config.policy;
        let approved = policy.approve(Purpose::Sign, KeySpec::Sm2)?;
        let scheme = policy.approve_signature(
            approved,
            SignatureRequest::Sm2 {
                id: SM2_DEFAULT_ID.to_owned(),
            },
        )?;
        let id = record.id.to_string();
        let sig = crypto::sign(&scheme, &material, Message::Raw(&make(&id, version)))?;
        Ok((id, version, sig))
    }

    /// The audit trail's signer, bound to this KMS.
    pub(super) fn audit_signer(self: &Arc<Self>) -> Signer {
        Arc::new(KmsAuditSigner(Arc::clone(self)))
    }

    /// HMAC-SM3 of an encryption context under a root-derived key, hex; `None` when empty or
    /// sealed. Auditors can see that two requests used the same context, never what it was.
    #[must_use]
    pub fn context_hmac(&self, context: &EncryptionContext) -> Option<String> {
        if context.is_empty() {
            return None;
        }
        let key = self.derived_key(Derived::AuditContextHmac).ok()?;
        let approved = self
            .config
            .policy
            .approve(Purpose::Mac, KeySpec::HmacSm3)
            .ok()?;
        crypto::mac(&approved, &key, &context.canonical_bytes())
            .ok()
            .map(hex::encode)
    }
}
