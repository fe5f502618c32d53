//! The KMS's own SM2 audit key: created at init in the system namespace, kept in the hierarchy
//! like any other key, used only to sign audit checkpoints and inventories. Its public half is
//! for auditors.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{CreateKeyRequest, Kms, PublicKeyOutput, Unsealed};
use crate::alg::{KeySpec, Purpose, SM2_DEFAULT_ID, SignatureRequest};
use crate::crypto::{self, Message, PublicKey};
use crate::envelope::EncryptionContext;
use crate::error::Error;
use crate::hierarchy::wrap::{self, Derived};
use crate::hierarchy::{Kek, RootKey};
use crate::keys::{Alias, KeyRef, Namespace};
use crate::store::{Batch, Tree};

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
        self.prepare_key(&vault, &req, batch)?;
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
