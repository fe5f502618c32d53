//! The signed key inventory (OPS-2): every key with its algorithm, state, versions, dates and
//! rotation schedule, a summary of what needs attention, and an SM2 signature by the audit key,
//! so auditors can check it offline. [`verify_inventory`] checks the signature and then that the
//! summary agrees with the key list; each disagreement is an [`Inconsistency`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::Kms;
use crate::alg::{KeySpec, Purpose, SM2_DEFAULT_ID, SignatureRequest};
use crate::audit::{Outcome, Service};
use crate::authz::{Authorized, ops};
use crate::crypto::{self, Message, PublicKey};
use crate::error::Error;
use crate::keys::record::{ExportEvent, ImportInfo, Origin};
use crate::keys::state::KeyState;
use crate::policy::{ApprovedDigest, Policy};

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
    /// Where the key's material came from; absent for keys generated here (and in inventories
    /// written before origins existed), `public-only` for an outside public key (issue 19).
    #[serde(default, skip_serializing_if = "Origin::is_generated")]
    pub origin: Origin,
    /// Whether the material may leave wrapped (issue 19); absent when not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exportable: bool,
    /// Origin `imported`: the material's SM3 fingerprint, when it was imported, its expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportInfo>,
    /// Every export of the material: when, which version, which spec, to which public key
    /// (SM3 of its SPKI), by whom.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<ExportEvent>,
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
#[non_exhaustive]
pub enum InventoryError {
    /// The text is not the JSON of an inventory (serde's reason).
    #[error("not a KMS inventory: {0}")]
    NotAnInventory(String),
    /// The policy refuses to verify an SM2 signature (the reason).
    #[error("{0}")]
    Unverifiable(String),
    /// The `signature` field is not hex.
    #[error("the signature is not hex")]
    SignatureNotHex,
    /// The signature does not verify under the public key given.
    #[error("the signature does not verify: the inventory was altered or signed by another key")]
    BadSignature,
    /// The signature verifies, but the signed summary contradicts the signed key list: the
    /// server that signed it is at fault, and neither half can be trusted for the other.
    #[error(
        "it is signed, but its summary disagrees with its key list: {}",
        join(.0)
    )]
    Inconsistent(Vec<Inconsistency>),
}

fn join(found: &[Inconsistency]) -> String {
    let each: Vec<String> = found.iter().map(ToString::to_string).collect();
    each.join("; ")
}

/// A count of the summary that the key list can contradict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountedBy {
    /// `summary.by_algorithm`.
    Algorithm,
    /// `summary.by_state`.
    State,
}

/// A list of the summary that names keys which the key list marks one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marking {
    /// `summary.overdue_for_rotation` against `overdue_for_rotation` of each key.
    OverdueForRotation,
    /// `summary.forbidden_by_policy` against `allowed_by_policy` of each key.
    ForbiddenByPolicy,
    /// `summary.compromised` against each key's state and `compromised_at`.
    Compromised,
}

impl std::fmt::Display for CountedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Algorithm => "algorithm",
            Self::State => "state",
        })
    }
}

impl std::fmt::Display for Marking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OverdueForRotation => "overdue for rotation",
            Self::ForbiddenByPolicy => "forbidden by policy",
            Self::Compromised => "compromised",
        })
    }
}

/// One way an inventory's summary disagrees with its key list.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Inconsistency {
    /// `summary.total_keys` is not the length of the key list.
    #[error("the summary counts {summary} keys, the list holds {listed}")]
    TotalKeys {
        /// What the summary says.
        summary: u64,
        /// How many keys are listed.
        listed: u64,
    },
    /// The counts by algorithm or by state do not add up to the keys listed.
    #[error("the counts by {by} add up to {sum}, not {listed}")]
    Counts {
        /// Which counts.
        by: CountedBy,
        /// Their sum.
        sum: u64,
        /// How many keys are listed.
        listed: u64,
    },
    /// The summary names other keys than the key list marks.
    #[error(
        "the summary lists {} key(s) as {marking}, the key list marks {}",
        .summary.len(),
        .listed.len()
    )]
    Marked {
        /// Which list.
        marking: Marking,
        /// The key ids the summary names, sorted.
        summary: Vec<String>,
        /// The key ids the key list marks, sorted.
        listed: Vec<String>,
    },
    /// `all_keys_allowed_by_policy` says the opposite of `forbidden_by_policy`.
    #[error("all_keys_allowed_by_policy contradicts the list of keys forbidden by policy")]
    AllAllowedContradicted,
}

/// Verifies an exported inventory with the audit public key, offline: the signature, then that
/// the signed summary agrees with the signed key list.
///
/// # Errors
/// [`InventoryError`]: the text does not parse, the signature does not verify, or the summary
/// contradicts the key list ([`InventoryError::Inconsistent`], every disagreement found).
pub fn verify_inventory(text: &str, public: &PublicKey) -> Result<Inventory, InventoryError> {
    let inv: Inventory =
        serde_json::from_str(text).map_err(|e| InventoryError::NotAnInventory(e.to_string()))?;
    let policy = Policy::GM_FORMATS;
    let open = policy
        .approve_open(Purpose::Sign, KeySpec::Sm2)
        .map_err(|e| InventoryError::Unverifiable(e.to_string()))?;
    let scheme = policy
        .approve_verify(
            open,
            SignatureRequest::Sm2 {
                id: SM2_DEFAULT_ID.to_owned(),
            },
        )
        .map_err(|e| InventoryError::Unverifiable(e.to_string()))?;
    let sig = hex::decode(&inv.signature).map_err(|_| InventoryError::SignatureNotHex)?;
    match crypto::verify(&scheme, public, Message::Raw(&inv.signed_bytes()), &sig) {
        Ok(true) => {}
        Ok(false) | Err(_) => return Err(InventoryError::BadSignature),
    }
    let found = inconsistencies(&inv);
    if found.is_empty() {
        Ok(inv)
    } else {
        Err(InventoryError::Inconsistent(found))
    }
}

/// Where the summary disagrees with the key list. The server builds both from one pass over
/// the keys, so any finding is a server bug; an auditor should not have to find it by hand.
fn inconsistencies(inv: &Inventory) -> Vec<Inconsistency> {
    let mut found = Vec::new();
    let listed = u64::try_from(inv.keys.len()).unwrap_or(u64::MAX);
    let s = &inv.summary;
    if s.total_keys != listed {
        found.push(Inconsistency::TotalKeys {
            summary: s.total_keys,
            listed,
        });
    }
    for (by, counts) in [
        (CountedBy::Algorithm, &s.by_algorithm),
        (CountedBy::State, &s.by_state),
    ] {
        // Saturating: a forged count near u64::MAX must not overflow the sum.
        let sum = counts.values().fold(0u64, |a, &c| a.saturating_add(c));
        if sum != listed {
            found.push(Inconsistency::Counts { by, sum, listed });
        }
    }
    let marked = |pred: &dyn Fn(&InventoryKey) -> bool| -> BTreeSet<&str> {
        inv.keys
            .iter()
            .filter(|k| pred(k))
            .map(|k| k.key_id.as_str())
            .collect()
    };
    let checks: [(Marking, BTreeSet<&str>, BTreeSet<&str>); 3] = [
        (
            Marking::OverdueForRotation,
            s.overdue_for_rotation.iter().map(String::as_str).collect(),
            marked(&|k| k.overdue_for_rotation),
        ),
        (
            Marking::ForbiddenByPolicy,
            s.forbidden_by_policy.iter().map(String::as_str).collect(),
            marked(&|k| !k.allowed_by_policy),
        ),
        (
            Marking::Compromised,
            s.compromised.iter().map(|c| c.key_id.as_str()).collect(),
            marked(&|k| k.state == KeyState::Compromised || k.compromised_at.is_some()),
        ),
    ];
    for (marking, summary, listed) in checks {
        if summary != listed {
            let owned = |ids: BTreeSet<&str>| ids.into_iter().map(str::to_owned).collect();
            found.push(Inconsistency::Marked {
                marking,
                summary: owned(summary),
                listed: owned(listed),
            });
        }
    }
    if s.all_keys_allowed_by_policy != s.forbidden_by_policy.is_empty() {
        found.push(Inconsistency::AllAllowedContradicted);
    }
    found
}

impl Kms {
    /// The newest successful data-plane use of each key, from the audit records the trail still
    /// holds after its archive anchor (records archived to segment files are not read: a use
    /// older than the hot trail shows as none). One record at a time, so a trail of millions
    /// of records is never held at once.
    fn last_data_plane_use(&self) -> Result<HashMap<String, u64>, Error> {
        let mut last_use: HashMap<String, u64> = HashMap::new();
        crate::audit::trail::for_each_hot_record(&self.store, &mut |r| {
            let data_plane = matches!(
                r.operation.service(),
                Some(
                    Service::Crypto
                        | Service::PasswordShield
                        | Service::Tokenization
                        | Service::RequestVerification
                )
            );
            if r.outcome != Outcome::Ok || !data_plane {
                return;
            }
            // A password-shield call used two keys: the password key and its pepper.
            let pepper = r.pepper.map(|p| p.key_id);
            for id in r.key_id.into_iter().chain(pepper) {
                let e = last_use.entry(id).or_insert(0);
                *e = (*e).max(r.time_ms);
            }
        })?;
        Ok(last_use)
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
                        destroyed: v.wrapped.is_none() && r.material_was_destroyed(),
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
                origin: r.origin,
                exportable: r.exportable,
                import: r.import.clone(),
                exports: r.exports.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::KeyMaterial;

    const A: &str = "00000000-0000-4000-8000-00000000000a";
    const B: &str = "00000000-0000-4000-8000-00000000000b";

    fn key(id: &str, spec: KeySpec, state: KeyState) -> InventoryKey {
        InventoryKey {
            key_id: id.to_owned(),
            aliases: Vec::new(),
            namespace: "default".to_owned(),
            purpose: Purpose::Sign,
            algorithm: spec,
            state,
            created_at: 1,
            versions: vec![InventoryVersion {
                version: 1,
                created_at: 1,
                destroyed: false,
            }],
            rotation_period_seconds: None,
            last_rotated_at: None,
            next_rotation_at: None,
            overdue_for_rotation: false,
            compromised_at: None,
            destroy_at: None,
            destroyed_at: None,
            public_key_sm3: None,
            allowed_by_policy: true,
            origin: Origin::Generated,
            exportable: false,
            import: None,
            exports: Vec::new(),
        }
    }

    /// Two keys, A overdue and compromised, B forbidden by policy; the summary agrees.
    fn consistent() -> Inventory {
        let mut a = key(A, KeySpec::Sm2, KeyState::Compromised);
        a.overdue_for_rotation = true;
        a.compromised_at = Some(5);
        let mut b = key(B, KeySpec::Rsa2048, KeyState::Enabled);
        b.allowed_by_policy = false;
        Inventory {
            format: 1,
            generated_at: 10,
            policy: "gm-only".to_owned(),
            keys: vec![a, b],
            summary: Summary {
                total_keys: 2,
                by_algorithm: [("sm2".to_owned(), 1), ("rsa-2048".to_owned(), 1)].into(),
                by_state: [("COMPROMISED".to_owned(), 1), ("ENABLED".to_owned(), 1)].into(),
                overdue_for_rotation: vec![A.to_owned()],
                compromised: vec![CompromisedKey {
                    key_id: A.to_owned(),
                    compromised_at: Some(5),
                    last_use_ms: None,
                }],
                without_rotation_period: vec![A.to_owned(), B.to_owned()],
                forbidden_by_policy: vec![B.to_owned()],
                all_keys_allowed_by_policy: false,
            },
            signed_by_key_id: A.to_owned(),
            signed_by_key_version: 1,
            signature: String::new(),
        }
    }

    fn audit_key() -> (KeyMaterial, PublicKey) {
        let approved = Policy::default()
            .approve(Purpose::Sign, KeySpec::Sm2)
            .unwrap();
        let key = crypto::generate(&approved).unwrap();
        let public = crypto::public_key_of(&key).unwrap();
        (key, public)
    }

    /// The inventory as exported: signed by `key` over its canonical bytes.
    fn signed(mut inv: Inventory, key: &KeyMaterial) -> String {
        let policy = Policy::default();
        let scheme = policy
            .approve_signature(
                policy.approve(Purpose::Sign, KeySpec::Sm2).unwrap(),
                SignatureRequest::Sm2 {
                    id: SM2_DEFAULT_ID.to_owned(),
                },
            )
            .unwrap();
        let sig = crypto::sign(&scheme, key, Message::Raw(&inv.signed_bytes())).unwrap();
        inv.signature = hex::encode(sig);
        serde_json::to_string_pretty(&inv).unwrap()
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|&id| id.to_owned()).collect()
    }

    #[test]
    fn a_consistent_inventory_has_no_findings() {
        assert_eq!(inconsistencies(&consistent()), []);
    }

    #[test]
    fn each_disagreement_is_reported_as_itself() {
        let mut inv = consistent();
        inv.summary.total_keys = 3;
        assert_eq!(
            inconsistencies(&inv),
            [Inconsistency::TotalKeys {
                summary: 3,
                listed: 2
            }]
        );

        let mut inv = consistent();
        inv.summary.by_algorithm.insert("sm2".to_owned(), 2);
        inv.summary.by_state.remove("ENABLED");
        assert_eq!(
            inconsistencies(&inv),
            [
                Inconsistency::Counts {
                    by: CountedBy::Algorithm,
                    sum: 3,
                    listed: 2
                },
                Inconsistency::Counts {
                    by: CountedBy::State,
                    sum: 1,
                    listed: 2
                },
            ]
        );

        // A count forged near u64::MAX saturates instead of overflowing.
        let mut inv = consistent();
        inv.summary.by_state.insert("ENABLED".to_owned(), u64::MAX);
        assert_eq!(
            inconsistencies(&inv),
            [Inconsistency::Counts {
                by: CountedBy::State,
                sum: u64::MAX,
                listed: 2
            }]
        );

        let mut inv = consistent();
        inv.keys[0].overdue_for_rotation = false;
        assert_eq!(
            inconsistencies(&inv),
            [Inconsistency::Marked {
                marking: Marking::OverdueForRotation,
                summary: ids(&[A]),
                listed: ids(&[]),
            }]
        );

        // The compromised key restated as enabled (state and date): the summary still names it.
        let mut inv = consistent();
        inv.keys[0].state = KeyState::Enabled;
        inv.keys[0].compromised_at = None;
        inv.summary.by_state = [("ENABLED".to_owned(), 2)].into();
        assert_eq!(
            inconsistencies(&inv),
            [Inconsistency::Marked {
                marking: Marking::Compromised,
                summary: ids(&[A]),
                listed: ids(&[]),
            }]
        );

        // A forbidden key dropped from the summary's list: the list and the flag both disagree.
        let mut inv = consistent();
        inv.summary.forbidden_by_policy.clear();
        assert_eq!(
            inconsistencies(&inv),
            [
                Inconsistency::Marked {
                    marking: Marking::ForbiddenByPolicy,
                    summary: ids(&[]),
                    listed: ids(&[B]),
                },
                Inconsistency::AllAllowedContradicted,
            ]
        );

        let mut inv = consistent();
        inv.summary.all_keys_allowed_by_policy = true;
        assert_eq!(
            inconsistencies(&inv),
            [Inconsistency::AllAllowedContradicted]
        );
    }

    #[test]
    fn a_signed_inventory_that_contradicts_itself_is_refused_with_its_findings() {
        let (key, public) = audit_key();
        let good = consistent();
        let verified = verify_inventory(&signed(good.clone(), &key), &public).unwrap();
        assert_eq!(
            Inventory {
                signature: String::new(),
                ..verified
            },
            good
        );

        let mut bad = consistent();
        bad.summary.total_keys = 1;
        bad.summary.overdue_for_rotation.push(B.to_owned());
        let err = verify_inventory(&signed(bad, &key), &public).unwrap_err();
        assert_eq!(
            err,
            InventoryError::Inconsistent(vec![
                Inconsistency::TotalKeys {
                    summary: 1,
                    listed: 2
                },
                Inconsistency::Marked {
                    marking: Marking::OverdueForRotation,
                    summary: ids(&[A, B]),
                    listed: ids(&[A]),
                },
            ])
        );
        assert_eq!(
            err.to_string(),
            "it is signed, but its summary disagrees with its key list: the summary counts 1 \
             keys, the list holds 2; the summary lists 2 key(s) as overdue for rotation, the key \
             list marks 1"
        );
    }

    #[test]
    fn the_signature_is_checked_before_the_contents() {
        let (key, public) = audit_key();
        let (_, other) = audit_key();
        let mut bad = consistent();
        bad.summary.total_keys = 1;
        let text = signed(bad, &key);
        // An inconsistent inventory under the wrong key is a bad signature, not a finding.
        assert_eq!(
            verify_inventory(&text, &other),
            Err(InventoryError::BadSignature)
        );
        let mut unsigned = consistent();
        unsigned.signature = "not hex".to_owned();
        assert_eq!(
            verify_inventory(&serde_json::to_string(&unsigned).unwrap(), &public),
            Err(InventoryError::SignatureNotHex)
        );
        assert!(matches!(
            verify_inventory("{\"format\": 1}", &public),
            Err(InventoryError::NotAnInventory(_))
        ));
    }
}
