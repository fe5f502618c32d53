//! Outside public keys (issue 19 item 3): a partner's SM2 or RSA public key registered as a key
//! of its own, so applications verify the partner's signatures (purpose sign) and encrypt to it
//! (purpose asymmetric-decrypt) through the same RPCs, policy, grants and audit as any key.
//!
//! Such a key has origin `public-only`: one version holding the SPKI and no wrapped material.
//! Whatever needs the private half — signing, decrypting, rotating — is refused with
//! FAILED_PRECONDITION saying why; the partner's next key is imported as a new key.

use super::lifecycle::check_description;
use super::{KeyInfo, Kms};
use crate::alg::Purpose;
use crate::authz::{Authorized, ops};
use crate::crypto::PublicKey;
use crate::error::{Error, InvalidInput};
use crate::keys::record::{KeyRecord, KeyVersion, Origin};
use crate::keys::state::KeyState;
use crate::keys::{Alias, KeyId, Namespace};
use crate::store::{Batch, StoreError, Tree};

/// What `import_public_key` needs.
#[derive(Clone, Debug)]
pub struct ImportPublicKeyRequest {
    pub namespace: Namespace,
    /// [`Purpose::Sign`] (verify only) or [`Purpose::AsymmetricDecrypt`] (encrypt to it).
    pub purpose: Purpose,
    /// Parsed under the configured policy: RSA under 2048 bits, or any non-SM2 key under
    /// gm-only, never gets here.
    pub public_key: PublicKey,
    pub alias: Option<Alias>,
    pub description: String,
}

impl Kms {
    /// Registers an outside public key as a `public-only` key of `namespace`.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a purpose a public key cannot serve or a bad description; the
    /// policy's refusal of the key's algorithm; ALREADY_EXISTS for a taken alias.
    pub fn import_public_key(
        &self,
        auth: &Authorized<'_, ops::ImportPublicKey>,
        req: ImportPublicKeyRequest,
    ) -> Result<KeyInfo, Error> {
        self.begin(auth)?;
        req.namespace.check_new()?;
        if !matches!(req.purpose, Purpose::Sign | Purpose::AsymmetricDecrypt) {
            return Err(InvalidInput::new(
                "purpose",
                "an outside public key is for verifying (sign) or encrypting to \
                 (asymmetric-decrypt)",
            )
            .into());
        }
        let spec = req.public_key.spec();
        self.config.policy.approve(req.purpose, spec)?;
        check_description(&req.description)?;
        let now = self.now();
        let record = KeyRecord {
            id: KeyId::random()?,
            namespace: req.namespace.clone(),
            purpose: req.purpose,
            spec,
            state: KeyState::Enabled,
            description: req.description.clone(),
            aliases: req.alias.iter().cloned().collect(),
            created_at: now,
            versions: vec![KeyVersion {
                version: 1,
                created_at: now,
                wrapped: None,
                public_key: Some(req.public_key.spki_der().to_vec()),
                gcm_invocations: 0,
            }],
            rotation_period: None,
            last_rotated_at: None,
            next_rotation_at: None,
            compromised_at: None,
            destroy_at: None,
            destroyed_at: None,
            revision: 1,
            origin: Origin::PublicOnly,
            exportable: false,
            import: None,
            exports: Vec::new(),
        };
        let mut batch = Batch::new();
        self.stage_new_record(&record, req.alias.as_ref(), &mut batch)?;
        match self.store.apply(&batch) {
            Ok(()) => Ok(KeyInfo::from_record(&record)),
            Err(StoreError::Conflict {
                tree: Tree::Aliases,
            }) => Err(Error::AlreadyExists {
                what: "alias",
                name: format!(
                    "{}:{}",
                    req.namespace,
                    req.alias.map(String::from).unwrap_or_default()
                ),
            }),
            Err(e) => Err(e.into()),
        }
    }
}
