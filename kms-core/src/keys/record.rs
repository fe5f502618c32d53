//! The stored form of a key: metadata plus every version's wrapped material.
//!
//! Records are `[format version byte] ‖ JSON`. Only wrapped (encrypted) material is ever in a
//! record, so the store, its logs and its backups see ciphertext only (KEY-2).

use serde::{Deserialize, Serialize};

use super::state::KeyState;
use super::{Alias, KeyId, Namespace};
use crate::alg::{KeySpec, Purpose};
use crate::clock::{DAY, UnixSeconds};
use crate::error::{Error, InvalidInput};
use crate::store::{StoreError, Tree};

pub const RECORD_FORMAT: u8 = 1;

/// The shortest rotation period allowed.
pub const MIN_ROTATION_PERIOD: u64 = DAY;
/// The longest rotation period allowed: ten years. A longer one is no schedule at all (KEY-7),
/// and the bound keeps `now + period` far from overflow in every computation of the next date.
pub const MAX_ROTATION_PERIOD: u64 = 3650 * DAY;
/// Waiting period bounds for destruction, in days.
pub const MIN_DESTRUCTION_DAYS: u32 = 7;
pub const MAX_DESTRUCTION_DAYS: u32 = 90;
pub const DEFAULT_DESTRUCTION_DAYS: u32 = 30;

/// One version of a key. Versions are immutable once written, except that destruction removes
/// the wrapped material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    pub version: u32,
    pub created_at: UnixSeconds,
    /// The material wrapped under the namespace KEK; `None` once destroyed.
    #[serde(with = "hex_opt")]
    pub wrapped: Option<Vec<u8>>,
    /// SPKI DER of asymmetric keys (public, kept so public keys need no unwrap).
    #[serde(with = "hex_opt", default)]
    pub public_key: Option<Vec<u8>>,
    /// GCM encryptions reserved for this version so far, never fewer than were made (see
    /// `kms/gcm_budget.rs`). Absent (0) in records written before the budget was kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gcm_invocations: u64,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where a key's material came from (issue 19).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Generated inside the KMS from its CSPRNG (every key made before origins existed).
    #[default]
    Generated,
    /// An outside party's public key only: it verifies (purpose sign) or is encrypted to
    /// (purpose asymmetric-decrypt); there is no private half here to sign or decrypt with.
    PublicOnly,
    /// Material brought in wrapped (`ImportKeyMaterial`, KEY-4); until it is, the key is
    /// `PENDING_IMPORT` and has no version.
    Imported,
}

impl Origin {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Generated => "generated",
            Self::PublicOnly => "public-only",
            Self::Imported => "imported",
        }
    }

    #[allow(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's skip_serializing_if passes a reference"
    )]
    pub(crate) fn is_generated(&self) -> bool {
        *self == Self::Generated
    }
}

/// What was imported into a key of origin `imported` (issue 19 item 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportInfo {
    /// SM3 fingerprint of the material (see `kms/import_export.rs`), hex: the same material may
    /// be imported again, other material never.
    pub fingerprint: String,
    /// When the material was first imported.
    pub imported_at: UnixSeconds,
    /// When the material was last imported (the same material, again).
    pub last_imported_at: UnixSeconds,
    /// When the material is deleted and the key returns to `PENDING_IMPORT`, if ever.
    pub expires_at: Option<UnixSeconds>,
    /// When the material was deleted at its expiry (it may be imported again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<UnixSeconds>,
}

/// One export of a key's material (issue 19 item 2): never the material, only where it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportEvent {
    pub at: UnixSeconds,
    pub version: u32,
    /// The wrapping spec's name (`sm2`, `rsa-oaep-sha256`, `rsa-aes-kwp`).
    pub wrapping_spec: String,
    /// SM3 of the recipient's SubjectPublicKeyInfo DER, hex.
    pub recipient_sm3: String,
    /// The administrator who exported it.
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: KeyId,
    pub namespace: Namespace,
    pub purpose: Purpose,
    pub spec: KeySpec,
    pub state: KeyState,
    pub description: String,
    pub aliases: Vec<Alias>,
    pub created_at: UnixSeconds,
    pub versions: Vec<KeyVersion>,
    /// Seconds between automatic rotations, if scheduled (KEY-7).
    pub rotation_period: Option<u64>,
    pub last_rotated_at: Option<UnixSeconds>,
    pub next_rotation_at: Option<UnixSeconds>,
    pub compromised_at: Option<UnixSeconds>,
    pub destroy_at: Option<UnixSeconds>,
    pub destroyed_at: Option<UnixSeconds>,
    /// Bumped on every change; with the stored bytes as a precondition it makes updates safe
    /// when several servers share one store.
    pub revision: u64,
    /// Absent in records of generated keys (and of every key stored before origins existed).
    #[serde(default, skip_serializing_if = "Origin::is_generated")]
    pub origin: Origin,
    /// Whether the material may leave wrapped to a recipient (`ExportKey`); fixed at creation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exportable: bool,
    /// Origin `imported`: what was imported and when it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportInfo>,
    /// Every export of this key's material, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<ExportEvent>,
}

impl KeyRecord {
    /// The tree that holds keys of `purpose`: sign, encrypt and MAC keys are stored apart (KEY-5).
    /// Tokenize keys (FF1 and pseudonym keys) sit with the encrypt keys: secret keys that
    /// protect data, never sign keys; a tree of their own would add a store tree (and an
    /// on-disk code) to every backend for no separation the record's purpose does not give.
    #[must_use]
    pub fn tree_for(purpose: Purpose) -> Tree {
        match purpose {
            Purpose::Encrypt | Purpose::Tokenize => Tree::EncryptKeys,
            Purpose::Sign => Tree::SignKeys,
            // Password keys are decryption keys, peppers MAC keys: each is stored with its kind
            // (sign keys stay apart from both).
            Purpose::AsymmetricDecrypt | Purpose::Password => Tree::AsymmetricDecryptKeys,
            Purpose::Mac | Purpose::Pepper => Tree::MacKeys,
        }
    }

    /// Every tree that holds key records, once each (several purposes share one: scan these,
    /// not `tree_for` of every purpose).
    pub const KEY_TREES: [Tree; 4] = [
        Tree::EncryptKeys,
        Tree::SignKeys,
        Tree::AsymmetricDecryptKeys,
        Tree::MacKeys,
    ];

    #[must_use]
    pub fn tree(&self) -> Tree {
        Self::tree_for(self.purpose)
    }

    #[must_use]
    pub fn newest(&self) -> Option<&KeyVersion> {
        self.versions.last()
    }

    #[must_use]
    pub fn version(&self, v: u32) -> Option<&KeyVersion> {
        self.versions.iter().find(|kv| kv.version == v)
    }

    /// Whether a version without material lost it to destruction: a public-only key never had
    /// any, and imported material that expired may come back.
    #[must_use]
    pub fn material_was_destroyed(&self) -> bool {
        self.state == KeyState::Destroyed || self.origin == Origin::Generated
    }

    /// Origin `imported` with no material to use: never imported, or expired.
    #[must_use]
    pub fn awaits_import(&self) -> bool {
        self.origin == Origin::Imported && self.versions.iter().all(|v| v.wrapped.is_none())
    }

    #[must_use]
    pub fn overdue(&self, now: UnixSeconds) -> bool {
        self.state == KeyState::Enabled && self.next_rotation_at.is_some_and(|t| t <= now)
    }

    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out = vec![RECORD_FORMAT];
        serde_json::to_writer(&mut out, self)
            .map_err(|_| StoreError::Corrupt("key record could not be encoded".into()))
            .map_err(Error::Store)?;
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        match bytes.split_first() {
            Some((&RECORD_FORMAT, json)) => serde_json::from_slice(json).map_err(|_| {
                Error::Store(StoreError::Corrupt("key record does not decode".into()))
            }),
            Some(_) | None => Err(Error::Store(StoreError::Corrupt(
                "unknown key record format".into(),
            ))),
        }
    }
}

/// Checks a rotation period (1 day to 3650 days).
pub fn check_rotation_period(secs: u64) -> Result<u64, Error> {
    if !(MIN_ROTATION_PERIOD..=MAX_ROTATION_PERIOD).contains(&secs) {
        return Err(
            InvalidInput::new("rotation period", "must be 1 day to 3650 days (ten years)").into(),
        );
    }
    Ok(secs)
}

/// Checks a destruction waiting period in days (7–90).
pub fn check_destruction_days(days: u32) -> Result<u32, Error> {
    if !(MIN_DESTRUCTION_DAYS..=MAX_DESTRUCTION_DAYS).contains(&days) {
        return Err(InvalidInput::new("waiting period", "must be 7 to 90 days").into());
    }
    Ok(days)
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let o: Option<String> = Option::deserialize(d)?;
        o.map(|h| hex::decode(h).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `KEY_TREES` holds every purpose's tree, once.
    #[test]
    fn key_trees_hold_every_purpose_once() {
        for p in Purpose::ALL {
            assert!(
                KeyRecord::KEY_TREES.contains(&KeyRecord::tree_for(p)),
                "{p}"
            );
        }
        let mut trees = KeyRecord::KEY_TREES.to_vec();
        trees.dedup();
        assert_eq!(trees.len(), KeyRecord::KEY_TREES.len());
        assert_eq!(KeyRecord::tree_for(Purpose::Tokenize), Tree::EncryptKeys);
    }
}
