//! The audit key as the audit trail sees it: which version is newest, and signing with a
//! version the trail names.
//!
//! The writer never signs with "whatever is newest": it signs with the version the trail has
//! been handed over to (see [`super::KeyTransition`]). When the key's newest version is newer
//! than that, the writer first writes a transition record signed by the old version, then
//! signs with the new one. So however the key was rotated (on request, on another node), no
//! checkpoint is ever signed by a version the trail has not introduced.

use std::sync::{Arc, Mutex, PoisonError};

use crate::alg::{KeySpec, Purpose, SM2_DEFAULT_ID, SignatureRequest};
use crate::crypto::{self, Message, PublicKey};
use crate::policy::{ApprovedSignature, Policy};
use crate::secret::KeyMaterial;

/// One version of the audit key, public half only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    pub key_id: String,
    pub version: u32,
    pub public_key: PublicKey,
}

impl SigningKey {
    /// [`super::fingerprint`] of this version's public key.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        super::fingerprint(&self.public_key)
    }
}

/// The audit key, for the writer, the export and the archiver.
pub trait AuditSigner: Send + Sync {
    /// The newest version; `None` when it cannot be read (no KMS yet, the store failing).
    fn newest(&self) -> Option<SigningKey>;

    /// Signs `message` (raw: SM2 with SM3 and the default ID) with `version` of the key;
    /// `None` while the KMS is sealed or when that version cannot sign.
    fn sign(&self, version: u32, message: &[u8]) -> Option<Vec<u8>>;
}

/// What the writer, the export and the archiver sign with.
pub type Signer = Arc<dyn AuditSigner>;

/// An in-memory SM2 audit key with versions, for tests and tools that need signed trails
/// without a KMS. [`MemorySigner::rotate`] adds a version, as rotating the KMS audit key does.
pub struct MemorySigner {
    key_id: String,
    versions: Mutex<Vec<(PublicKey, KeyMaterial)>>,
}

fn sm2_scheme() -> Result<ApprovedSignature, crate::Error> {
    let policy = Policy::GM_FORMATS;
    let approved = policy.approve(Purpose::Sign, KeySpec::Sm2)?;
    Ok(policy.approve_signature(
        approved,
        SignatureRequest::Sm2 {
            id: SM2_DEFAULT_ID.to_owned(),
        },
    )?)
}

fn fresh_sm2() -> Result<(PublicKey, KeyMaterial), crate::Error> {
    let approved = Policy::GM_FORMATS.approve(Purpose::Sign, KeySpec::Sm2)?;
    let key = crypto::generate(&approved)?;
    Ok((crypto::public_key_of(&key)?, key))
}

impl MemorySigner {
    /// A key `key_id` with one fresh version (version 1).
    ///
    /// # Errors
    /// Key generation failed (no randomness).
    pub fn new(key_id: &str) -> Result<Arc<Self>, crate::Error> {
        Ok(Arc::new(Self {
            key_id: key_id.to_owned(),
            versions: Mutex::new(vec![fresh_sm2()?]),
        }))
    }

    /// Adds a fresh version and returns its number.
    ///
    /// # Errors
    /// Key generation failed (no randomness).
    pub fn rotate(&self) -> Result<u32, crate::Error> {
        let fresh = fresh_sm2()?;
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        versions.push(fresh);
        Ok(u32::try_from(versions.len()).unwrap_or(u32::MAX))
    }

    /// The public half of `version` (from 1).
    #[must_use]
    pub fn public_key(&self, version: u32) -> Option<PublicKey> {
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        self.versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
            .map(|(public, _)| public.clone())
    }

    /// Every version's public half, oldest first (what `kms audit public-key` exports).
    #[must_use]
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(public, _)| public.clone())
            .collect()
    }
}

impl AuditSigner for MemorySigner {
    fn newest(&self) -> Option<SigningKey> {
        let versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        let (public, _) = versions.last()?;
        Some(SigningKey {
            key_id: self.key_id.clone(),
            version: u32::try_from(versions.len()).ok()?,
            public_key: public.clone(),
        })
    }

    fn sign(&self, version: u32, message: &[u8]) -> Option<Vec<u8>> {
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        let versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, key) = versions.get(index)?;
        crypto::sign(&sm2_scheme().ok()?, key, Message::Raw(message)).ok()
    }
}

/// An audit key that never signs (and names no version): a KMS that stays sealed, for tests
/// of what happens without signatures.
#[must_use]
pub fn never_signs() -> Signer {
    struct Never;
    impl AuditSigner for Never {
        fn newest(&self) -> Option<SigningKey> {
            None
        }

        fn sign(&self, _version: u32, _message: &[u8]) -> Option<Vec<u8>> {
            None
        }
    }
    Arc::new(Never)
}
