//! The KMS's own SM2 audit key: created at init in the system namespace, kept in the hierarchy
//! like any other key, used only to sign audit checkpoints and inventories. Its public half is
//! for auditors.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{CreateKeyRequest, Kms, PublicKeyOutput, Unsealed};
use crate::alg::{KeySpec, Purpose, SM2_DEFAULT_ID, SignatureRequest};
use crate::audit::writer::Signer;
use crate::crypto::{self, Message, PublicKey};
use crate::envelope::EncryptionContext;
use crate::error::Error;
use crate::hierarchy::wrap::{self, WrapAlg};
use crate::hierarchy::{Kek, RootKey};
use crate::keys::{Alias, KeyRef, Namespace};
use crate::secret::SecretBytes;
use crate::store::{Batch, Tree};

/// The namespace of the KMS's own keys; no application or administrator creates keys here.
pub const SYSTEM_NAMESPACE: &str = "kms-system";
pub const AUDIT_KEY_ALIAS: &str = "audit-signing";
const CONTEXT_LABEL: &str = "kms/audit/context-hmac/v1";

fn audit_ref() -> Result<KeyRef, Error> {
    Ok(KeyRef::Alias(
        Namespace::new(SYSTEM_NAMESPACE)?,
        Alias::new(AUDIT_KEY_ALIAS)?,
    ))
}

impl Kms {
    /// During init: the system namespace's KEK and the audit key, added to the init batch.
    pub(super) fn prepare_audit_key(
        &self,
        root: &SecretBytes,
        wrap_alg: WrapAlg,
        batch: &mut Batch,
    ) -> Result<(), Error> {
        let ns = Namespace::new(SYSTEM_NAMESPACE)?;
        let kek = crypto::rng::random_secret(wrap_alg.key_len())?;
        let wrapped_kek = wrap::wrap(wrap_alg, root, &wrap::kek_aad(&ns), kek.expose_secret())?;
        batch.put(Tree::Namespaces, ns.as_str().as_bytes(), wrapped_kek);
        let mut keks = HashMap::new();
        keks.insert(ns.clone(), Arc::new(Kek(kek)));
        let vault = Unsealed {
            root: RootKey(SecretBytes::copy_from_slice(root.expose_secret())),
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
    pub fn sign_as_audit_key(
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
        let policy = crate::policy::Policy::default();
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

    /// The audit writer's signer, bound to this KMS.
    pub fn audit_signer(self: &Arc<Self>) -> Signer {
        let kms = Arc::clone(self);
        Arc::new(move |make| kms.sign_as_audit_key(make).ok())
    }

    /// HMAC-SM3 of an encryption context under a root-derived key, hex; `None` when empty or
    /// sealed. Auditors can see that two requests used the same context, never what it was.
    #[must_use]
    pub fn context_hmac(&self, context: &EncryptionContext) -> Option<String> {
        if context.is_empty() {
            return None;
        }
        let key = self.derived_secret(CONTEXT_LABEL, 32).ok()?;
        crypto::mac::mac_raw(
            crate::alg::DigestAlg::Sm3,
            key.expose_secret(),
            &context.canonical_bytes(),
        )
        .ok()
        .map(hex::encode)
    }
}
