//! The signed key inventory (OPS-2): every key with its algorithm, state, versions, dates and
//! rotation schedule, a summary of what needs attention, and an SM2 signature by the audit key,
//! so auditors can check it offline.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::Kms;
use crate::alg::{KeySpec, Purpose, SM2_DEFAULT_ID, SignatureRequest};
use crate::audit::Record;
use crate::authz::{Authorized, ops};
use crate::crypto::{self, Message, PublicKey};
use crate::error::Error;
use crate::keys::state::KeyState;
use crate::policy::{ApprovedDigest, Policy};
use crate::store::Tree;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryVersion {
    pub version: u32,
    pub created_at: u64,
    pub destroyed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryKey {
    pub key_id: String,
    pub aliases: Vec<String>,
    pub namespace: String,
    pub purpose: Purpose,
    pub algorithm: KeySpec,
    pub state: KeyState,
    pub created_at: u64,
    pub versions: Vec<InventoryVersion>,
    pub rotation_period_seconds: Option<u64>,
    pub last_rotated_at: Option<u64>,
    pub next_rotation_at: Option<u64>,
    pub overdue_for_rotation: bool,
    pub compromised_at: Option<u64>,
    pub destroy_at: Option<u64>,
    pub destroyed_at: Option<u64>,
    /// SM3 of the newest version's SubjectPublicKeyInfo DER, hex (asymmetric keys).
    pub public_key_sm3: Option<String>,
    /// Whether the policy in force allows this key's algorithm for new protection.
    pub allowed_by_policy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompromisedKey {
    pub key_id: String,
    pub compromised_at: Option<u64>,
    /// The last successful data-plane use of the key (milliseconds since the epoch), if any;
    /// administration (describe, compromise, rotate) is not use. Only the audit records still
    /// in the store are searched: uses archived to segment files are not counted.
    pub last_use_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub total_keys: u64,
    pub by_algorithm: BTreeMap<String, u64>,
    pub by_state: BTreeMap<String, u64>,
    pub overdue_for_rotation: Vec<String>,
    pub compromised: Vec<CompromisedKey>,
    pub without_rotation_period: Vec<String>,
    pub forbidden_by_policy: Vec<String>,
    /// True when no stored key uses an algorithm the current policy forbids.
    pub all_keys_allowed_by_policy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub format: u8,
    pub generated_at: u64,
    pub policy: String,
    pub keys: Vec<InventoryKey>,
    pub summary: Summary,
    pub signed_by_key_id: String,
    pub signed_by_key_version: u32,
    /// SM2 (SM3, default ID) DER signature, hex, over the canonical JSON with this field empty.
    pub signature: String,
}

impl Inventory {
    fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Self {
            signature: String::new(),
            ..self.clone()
        })
        .unwrap_or_default()
    }
}

/// Why an inventory does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InventoryError(pub String);

/// Verifies an exported inventory with the audit public key, offline.
pub fn verify_inventory(text: &str, public: &PublicKey) -> Result<Inventory, InventoryError> {
    let inv: Inventory = serde_json::from_str(text)
        .map_err(|e| InventoryError(format!("not a KMS inventory: {e}")))?;
    let policy = Policy::GM_FORMATS;
    let open = policy
        .approve_open(Purpose::Sign, KeySpec::Sm2)
        .map_err(|e| InventoryError(e.to_string()))?;
    let scheme = policy
        .approve_verify(
            open,
            SignatureRequest::Sm2 {
                id: SM2_DEFAULT_ID.to_owned(),
            },
        )
        .map_err(|e| InventoryError(e.to_string()))?;
    let sig = hex::decode(&inv.signature)
        .map_err(|_| InventoryError("the signature is not hex".into()))?;
    match crypto::verify(&scheme, public, Message::Raw(&inv.signed_bytes()), &sig) {
        Ok(true) => Ok(inv),
        Ok(false) | Err(_) => Err(InventoryError(
            "the signature does not verify: the inventory was altered or signed by another key"
                .into(),
        )),
    }
}

/// Audit records read per page when looking for keys' last use: bounded memory, however long
/// the trail.
const USE_SCAN_PAGE: usize = 1000;

impl Kms {
    /// The newest successful data-plane use of each key, from the audit records still in the
    /// store (records archived to segment files are not read: a use older than the hot trail
    /// shows as none). Paged, so a trail of millions of records is never held at once.
    fn last_data_plane_use(&self) -> Result<HashMap<String, u64>, Error> {
        let mut last_use: HashMap<String, u64> = HashMap::new();
        let mut from = b"r".to_vec();
        loop {
            let page = self
                .store
                .scan_range(Tree::Audit, &from, b"s", USE_SCAN_PAGE)?;
            for (_, v) in &page {
                if let Ok(r) = serde_json::from_slice::<Record>(v)
                    && let Some(id) = r.key_id
                    && r.outcome == "OK"
                    && r.operation.starts_with("Crypto/")
                {
                    let e = last_use.entry(id).or_insert(0);
                    *e = (*e).max(r.time_ms);
                }
            }
            match page.last() {
                Some((k, _)) if page.len() == USE_SCAN_PAGE => {
                    // The next key after `k` in byte order.
                    from = [k.as_slice(), &[0]].concat();
                }
                Some(_) | None => return Ok(last_use),
            }
        }
    }

    /// Builds and signs the inventory (admins and auditors).
    pub fn inventory(
        &self,
        auth: &Authorized<'_, ops::ExportInventory>,
    ) -> Result<Inventory, Error> {
        self.begin(auth)?;
        let now = self.now();
        let policy = self.config.policy;
        let last_use = self.last_data_plane_use()?;
        let mut records = self.all_records()?;
        records.sort_by_key(|r| (r.created_at, r.id));
        let mut keys = Vec::with_capacity(records.len());
        let mut summary = Summary {
            total_keys: 0,
            by_algorithm: BTreeMap::new(),
            by_state: BTreeMap::new(),
            overdue_for_rotation: Vec::new(),
            compromised: Vec::new(),
            without_rotation_period: Vec::new(),
            forbidden_by_policy: Vec::new(),
            all_keys_allowed_by_policy: true,
        };
        for r in &records {
            let id = r.id.to_string();
            let allowed = policy.allows(r.spec);
            let overdue = r.overdue(now);
            summary.total_keys += 1;
            *summary
                .by_algorithm
                .entry(r.spec.name().to_owned())
                .or_default() += 1;
            *summary
                .by_state
                .entry(r.state.name().to_owned())
                .or_default() += 1;
            if overdue {
                summary.overdue_for_rotation.push(id.clone());
            }
            if r.state == KeyState::Compromised || r.compromised_at.is_some() {
                summary.compromised.push(CompromisedKey {
                    key_id: id.clone(),
                    compromised_at: r.compromised_at,
                    last_use_ms: last_use.get(&id).copied(),
                });
            }
            if r.rotation_period.is_none() && r.state != KeyState::Destroyed {
                summary.without_rotation_period.push(id.clone());
            }
            if !allowed {
                summary.forbidden_by_policy.push(id.clone());
                summary.all_keys_allowed_by_policy = false;
            }
            keys.push(InventoryKey {
                key_id: id,
                aliases: r.aliases.iter().map(ToString::to_string).collect(),
                namespace: r.namespace.to_string(),
                purpose: r.purpose,
                algorithm: r.spec,
                state: r.state,
                created_at: r.created_at,
                versions: r
                    .versions
                    .iter()
                    .map(|v| InventoryVersion {
                        version: v.version,
                        created_at: v.created_at,
                        destroyed: v.wrapped.is_none(),
                    })
                    .collect(),
                rotation_period_seconds: r.rotation_period,
                last_rotated_at: r.last_rotated_at,
                next_rotation_at: r.next_rotation_at,
                overdue_for_rotation: overdue,
                compromised_at: r.compromised_at,
                destroy_at: r.destroy_at,
                destroyed_at: r.destroyed_at,
                public_key_sm3: r
                    .newest()
                    .and_then(|v| v.public_key.as_ref())
                    .map(|der| hex::encode(crypto::digest(ApprovedDigest::SM3, der))),
                allowed_by_policy: allowed,
            });
        }
        let mut inv = Inventory {
            format: 1,
            generated_at: now,
            policy: policy.mode().name().to_owned(),
            keys,
            summary,
            signed_by_key_id: String::new(),
            signed_by_key_version: 0,
            signature: String::new(),
        };
        let template = inv.clone();
        let (key_id, version, sig) = self.sign_as_audit_key(&|id: &str, v: u32| {
            Inventory {
                signed_by_key_id: id.to_owned(),
                signed_by_key_version: v,
                ..template.clone()
            }
            .signed_bytes()
        })?;
        inv.signed_by_key_id = key_id;
        inv.signed_by_key_version = version;
        inv.signature = hex::encode(sig);
        Ok(inv)
    }
}
