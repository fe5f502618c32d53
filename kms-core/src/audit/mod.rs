//! The tamper-evident audit trail (OPS-1).
//!
//! Every request leaves one [`Record`]; each record carries the SM3 hash of the one before, so
//! deleting, reordering or editing a record breaks the chain. At intervals, and at the end of
//! every export, a [`Checkpoint`] signed with the KMS audit key (SM2) covers the chain so far.
//! An export is JSON Lines; [`verify`] (text) and [`verify_reader`] (streaming) need only the
//! file and the audit public key, and name the first line that does not verify.
//!
//! With retention, the oldest records move to archive segment files; each segment and every
//! later export starts with an *anchor*, the signed closing checkpoint of the file before.
//! [`verify_files`] checks such files in order as one trail. An anchored file alone proves only
//! the records after its anchor; that the trail is complete from the genesis is proved only by
//! the chain of files, from a first file that starts at the genesis.
//!
//! The audit key may be rotated. Every checkpoint names the version that signed it and that
//! version's SM3 fingerprint; before a new version signs anything, the writer appends a
//! *transition record* ([`KeyTransition`]) signed by the old version that introduces the new
//! one ([`signer`]). A verifier given only the oldest key ([`AuditKeys`]) follows the
//! transitions forward; an edited or dropped transition, or a checkpoint by a version no
//! transition introduced, fails.
//!
//! A record's role, operation, outcome and flags are enums ([`Role`], [`Operation`],
//! [`Outcome`], [`Flag`]) that serialise to the names version 1 wrote, and keep a name they do
//! not know as written (`Other`), so older and newer trails still parse and verify
//! ([`Unrecognised`] says why).
//!
//! What is hashed and signed is explicit and versioned ([`Format`]): a record's chain hash is
//! SM3 of [`Record::canonical`], a checkpoint's signature covers [`Checkpoint::signed_bytes`].
//! Format V2, written now, puts a domain prefix ([`RECORD_DOMAIN`], [`CHECKPOINT_DOMAIN`])
//! before the JSON and says `"format":2` in the line; format V1 lines have no `format` field
//! and are the bare JSON. Each line is checked in its own format, so a trail that an upgraded
//! server continued verifies as one. Encoding errors are returned ([`EncodeError`]), never
//! replaced by empty bytes.

pub mod archive;
pub mod export;
mod layout;
pub mod live;
pub mod signer;
pub(crate) mod trail;
mod verify;
mod vocab;
pub mod writer;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

pub use self::trail::held_records;
pub use self::verify::{
    AuditKeys, Broken, ChainError, FileChain, MAX_LINE_BYTES, Start, ToAuditKeys, Verified,
    VerifiedFile, VerifiedFiles, checkpoint_signature_valid, verify, verify_files, verify_reader,
};
pub use self::vocab::{
    AUDIT_WRITER_PRINCIPAL, Flag, Operation, Outcome, Role, SCHEDULER_PRINCIPAL, Service,
    Unrecognised,
};
use crate::crypto;

/// A W3C Trace Context `traceparent` header value as the trail records it, or `None` when
/// `value` is not exactly `00-<32 hex>-<16 hex>-<2 hex>` (lower-case hex, the trace and parent
/// ids not all zeros, as the W3C rules say). The length is checked first, so a caller cannot
/// make the record longer than those 55 bytes; anything else (another version, extra fields,
/// upper case) is dropped rather than recorded: it is the caller's word, only for matching.
#[must_use]
pub fn traceparent(value: &[u8]) -> Option<String> {
    const LEN: usize = 2 + 1 + 32 + 1 + 16 + 1 + 2;
    if value.len() != LEN {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    (parts.next().is_none()
        && version == "00"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && !zero(trace)
        && !zero(parent))
    .then(|| text.to_owned())
}

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the server knows about a request when it finishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub request_id: String,
    pub principal: String,
    pub role: Role,
    pub operation: Operation,
    pub key_id: Option<String>,
    pub key_version: Option<u32>,
    /// The gRPC status code the caller got.
    pub outcome: Outcome,
    /// HMAC-SM3 of the encryption context under a key derived from the root key: equal
    /// contexts can be correlated, but the context itself is never recorded.
    pub context_hmac: Option<String>,
    /// E.g. [`Flag::KeyCompromised`] when a compromised key was used to decrypt or verify.
    pub flags: Vec<Flag>,
    /// The protocol and suite the caller's connection negotiated ("TLSv1.3 TLS_SM4_GCM_SM3");
    /// `None` for what did not come over the API.
    pub transport: Option<String>,
    /// The caller's W3C `traceparent`, when it sent a well-formed one ([`traceparent`]), so
    /// that an application's request can be matched to its record.
    pub traceparent: Option<String>,
    /// Key material moved in or out (issue 19): how it was wrapped and to which public key.
    pub transfer: Option<KeyTransfer>,
    /// The request id of the batch call this event is an item of (or, for a batch refused as
    /// a whole, its own); `None` for single calls.
    pub batch_id: Option<String>,
    /// The password shield's second key (issue 22 item 2): the pepper key and version a
    /// `HashPassword` or `VerifyPassword` used; `key_id` names the password key.
    pub pepper: Option<PepperUse>,
    /// How many values the call handled, for calls that carry many values of their own
    /// (`kms.v1.Tokenization`: values tokenised or detokenised); never the values.
    pub count: Option<u32>,
}

/// The pepper key a password-shield call used: its id and version, never a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PepperUse {
    pub key_id: String,
    pub key_version: u32,
}

/// How key material crossed the boundary, as the trail records it: never the material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyTransfer {
    /// `sm2`, `rsa-oaep-sha256` or `rsa-aes-kwp`.
    pub wrapping_spec: String,
    /// SM3 (hex) of the SubjectPublicKeyInfo the material was wrapped to: the recipient's for
    /// an export, the KMS's one-time wrapping key's for an import.
    pub public_key_sm3: String,
}

/// For tests and tools that set only the fields they care about: an unregistered caller, an
/// empty operation name (as version 1's all-empty default wrote) and outcome `UNKNOWN`, so that
/// an event nobody finished never claims success.
impl Default for Event {
    fn default() -> Self {
        Self {
            request_id: String::new(),
            principal: String::new(),
            role: Role::Unregistered,
            operation: Operation::parse(""),
            key_id: None,
            key_version: None,
            outcome: Outcome::Unknown,
            context_hmac: None,
            flags: Vec::new(),
            transport: None,
            traceparent: None,
            transfer: None,
            batch_id: None,
            pepper: None,
            count: None,
        }
    }
}

/// The encoding of a record or checkpoint: which bytes its hash (records) or signature
/// (checkpoints) covers. Written as a `format` field, absent for version 1, so lines written
/// before versions existed keep their exact bytes and still verify; a verifier takes each line's
/// encoding from the line itself, so one file may mix them (a trail continued by an upgraded
/// server, or several nodes of one chain during a rolling upgrade).
///
/// A line cannot be moved to another encoding unnoticed: the field is inside the bytes that are
/// hashed or signed, and the two encodings of one line differ, so the record after it (or the
/// signature) no longer matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// The bare `serde_json` bytes of the struct (the signature field empty for checkpoints).
    #[default]
    V1,
    /// [`RECORD_DOMAIN`] or [`CHECKPOINT_DOMAIN`], then the `serde_json` bytes as for `V1`
    /// (which now hold `"format":2`). The prefix keeps a record's hash input and a checkpoint's
    /// signed message apart from each other and from anything else the audit key signs.
    V2,
}

/// What precedes a version 2 record's JSON in the bytes that are hashed.
pub const RECORD_DOMAIN: &[u8] = b"kms-audit-record\0v2\0";
/// What precedes a version 2 checkpoint's JSON in the bytes that are signed.
pub const CHECKPOINT_DOMAIN: &[u8] = b"kms-audit-checkpoint\0v2\0";

impl Format {
    /// What this version writes.
    pub const CURRENT: Self = Self::V2;

    /// Version 1 is written by leaving the field out (by reference: serde's
    /// `skip_serializing_if` passes one).
    const fn is_v1(&self) -> bool {
        matches!(self, Self::V1)
    }

    /// `json` framed for hashing or signing: as is for V1, after `domain` for V2.
    fn frame(self, domain: &[u8], json: Vec<u8>) -> Vec<u8> {
        match self {
            Self::V1 => json,
            Self::V2 => [domain, &json].concat(),
        }
    }
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(match self {
            Self::V1 => 1,
            Self::V2 => 2,
        })
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u64::deserialize(deserializer)? {
            2 => Ok(Self::V2),
            // Never written: a line with it would not re-serialise to its own bytes.
            1 => Err(de::Error::custom(
                "audit format 1 is written by leaving the format field out",
            )),
            n => Err(de::Error::custom(format!(
                "audit format {n} is not known to this version (written by a newer one?)"
            ))),
        }
    }
}

/// A record or checkpoint could not be turned into the bytes that are stored, hashed or
/// signed. Nothing is then written, hashed or signed: an empty message must never stand in.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the audit {what}: {source}")]
pub struct EncodeError {
    what: &'static str,
    #[source]
    source: serde_json::Error,
}

fn to_json(what: &'static str, value: &impl Serialize) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(value).map_err(|source| EncodeError { what, source })
}

/// One audit record, as stored and exported (field order is the canonical order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub time_ms: u64,
    pub node: String,
    pub request_id: String,
    pub principal: String,
    pub role: Role,
    pub operation: Operation,
    pub key_id: Option<String>,
    pub key_version: Option<u32>,
    pub outcome: Outcome,
    pub context_hmac: Option<String>,
    pub flags: Vec<Flag>,
    /// The caller's negotiated protocol and suite. Left out of the canonical bytes when absent,
    /// so records written before it existed keep their hashes and still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The caller's W3C `traceparent` ([`traceparent`]). Like `transport`: outside the
    /// canonical bytes when absent (older records keep their hashes), inside them, and so
    /// covered by the chain, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Key material moved in or out ([`KeyTransfer`]); like `transport`, outside the canonical
    /// bytes when absent. Boxed: rare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Box<KeyTransfer>>,
    /// The request id of the batch call (`kms.v1.CryptoBatch`) whose item this record is; the
    /// item's own `request_id` is the batch id, a dot and the item's index. On the one record
    /// of a batch refused as a whole it equals the record's `request_id`. Like `traceparent`:
    /// absent, and outside the canonical bytes, on every other record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// The pepper key of a password-shield call ([`PepperUse`]); like `batch_id`: absent, and
    /// outside the canonical bytes, on every other record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pepper: Option<PepperUse>,
    /// How many values the call handled (`kms.v1.Tokenization`: values tokenised or
    /// detokenised), never the values themselves. Like `batch_id`: absent, and outside the
    /// canonical bytes, on every record of another call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Only on the record that hands the audit key over to a new version ([`KeyTransition`]);
    /// absent, and so outside the canonical bytes, on every other record. Boxed: rare, and
    /// larger than the rest of a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<Box<KeyTransition>>,
    /// SM3 of the previous record's canonical bytes ([`GENESIS`] for the first).
    pub prev: String,
    /// How the record is hashed; absent (V1) in records written before formats existed. Last,
    /// so that a line still starts with its `type` and `seq` for tools that look for them.
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
}

impl Record {
    /// The record as stored, and as exported after the line's `"type":"record"`: its JSON in
    /// field order.
    ///
    /// # Errors
    /// The record does not serialise.
    pub fn to_json(&self) -> Result<Vec<u8>, EncodeError> {
        to_json("record", self)
    }

    /// The canonical bytes, which the chain hashes: the JSON, after [`RECORD_DOMAIN`] in
    /// format V2.
    ///
    /// # Errors
    /// The record does not serialise.
    pub fn canonical(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(self.format.frame(RECORD_DOMAIN, self.to_json()?))
    }

    /// The record's chain hash: SM3 of [`Record::canonical`], hex.
    ///
    /// # Errors
    /// The record does not serialise.
    pub fn hash(&self) -> Result<String, EncodeError> {
        Ok(chain_hash(&self.canonical()?))
    }

    /// What the old key version signs in a transition record: [`TRANSITION_DOMAIN`], then the
    /// whole record's JSON with the transition's `signature` empty. The record's `seq` and
    /// `prev` are inside, so a transition cannot be moved to another place or another trail.
    ///
    /// # Errors
    /// The record does not serialise.
    pub fn transition_signed_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut unsigned = self.clone();
        if let Some(t) = &mut unsigned.transition {
            t.signature = String::new();
        }
        Ok([TRANSITION_DOMAIN, &to_json("transition", &unsigned)?].concat())
    }
}

/// What precedes a transition record's JSON in the bytes the old key version signs.
pub const TRANSITION_DOMAIN: &[u8] = b"kms-audit-key-transition\0v1\0";

/// The hand-over of the audit key from one version to the next, carried by one record of the
/// trail and signed by the OLD version: whoever trusts the old key can trust the new one from
/// this record on, so the trail verifies from its oldest key forward through every rotation.
/// The record is chained like any other, so dropping it breaks the chain, and its signature
/// covers the whole record, so editing any of it breaks the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyTransition {
    /// The audit key (the same key before and after: only its version changes).
    pub key_id: String,
    pub from_version: u32,
    /// [`fingerprint`] of the old version's public key.
    pub from_fingerprint: String,
    pub to_version: u32,
    /// [`fingerprint`] of the new version's public key.
    pub to_fingerprint: String,
    /// The new version's public key, SPKI DER, hex: a verifier given only the oldest key
    /// learns every later one from the trail itself.
    pub to_public_key: String,
    /// SM2 (SM3, default ID) DER signature by `from_version` over
    /// [`Record::transition_signed_bytes`], hex.
    pub signature: String,
}

/// The SM3 fingerprint of a public key as the trail writes it: SM3 of its SPKI DER, hex.
#[must_use]
pub fn fingerprint(public: &crypto::PublicKey) -> String {
    hex::encode(public.fingerprint_sm3())
}

/// The chain hash of a record given its canonical bytes ([`Record::canonical`]).
#[must_use]
pub fn chain_hash(canonical: &[u8]) -> String {
    hex::encode(crypto::digest(
        crate::policy::ApprovedDigest::SM3,
        canonical,
    ))
}

/// A signed statement that the chain up to record `seq` hashes to `last_hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: u64,
    pub time_ms: u64,
    pub node: String,
    pub last_hash: String,
    /// True only for the checkpoint that closes an export: a file cut after an earlier
    /// checkpoint then fails to verify.
    pub closes_export: bool,
    pub key_id: String,
    pub key_version: u32,
    /// [`fingerprint`] of the signing version's public key. Absent in checkpoints written
    /// before audit key rotation was tracked: those verify with any key given. A checkpoint
    /// that names it must be signed by a key the verifier trusts at that point of the trail
    /// (given, or introduced by a [`KeyTransition`] before it). It is inside the signed bytes,
    /// so it cannot be removed to escape that rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// SM2 (SM3, default ID) DER signature over [`Checkpoint::signed_bytes`], hex.
    pub signature: String,
    /// What the signature covers; absent (V1) in checkpoints written before formats existed.
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
}

impl Checkpoint {
    /// The bytes the signature covers: the checkpoint's JSON with `signature` empty, after
    /// [`CHECKPOINT_DOMAIN`] in format V2.
    ///
    /// # Errors
    /// The checkpoint does not serialise.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let unsigned = Self {
            signature: String::new(),
            ..self.clone()
        };
        Ok(self
            .format
            .frame(CHECKPOINT_DOMAIN, to_json("checkpoint", &unsigned)?))
    }
}

/// One line of an export.
// Lines are read and written one at a time, never held in bulk, so the records' size does not
// multiply; boxing would only add an allocation per line.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Line {
    Record(Record),
    Checkpoint(Checkpoint),
}

#[cfg(test)]
mod traceparent_tests {
    use super::*;

    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn only_a_well_formed_version_00_traceparent_is_kept() {
        assert_eq!(traceparent(TRACE.as_bytes()).as_deref(), Some(TRACE));
        let long = format!("{TRACE}{}", "0".repeat(10_000));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            long.as_str(),
        ] {
            assert_eq!(traceparent(bad.as_bytes()), None, "{bad:?}");
        }
        // Not UTF-8 at the right length.
        let mut bytes = TRACE.as_bytes().to_vec();
        bytes[5] = 0xff;
        assert_eq!(traceparent(&bytes), None);
    }

    fn record(traceparent: Option<&str>) -> Record {
        Record {
            seq: 7,
            time_ms: 1,
            node: "n1".into(),
            request_id: "r7".into(),
            principal: "app".into(),
            role: Role::Unregistered,
            operation: Operation::parse("Crypto/GenerateRandom"),
            key_id: None,
            key_version: None,
            outcome: Outcome::Ok,
            context_hmac: None,
            flags: Vec::new(),
            transport: None,
            traceparent: traceparent.map(str::to_owned),
            transfer: None,
            batch_id: None,
            pepper: None,
            count: None,
            transition: None,
            prev: GENESIS.into(),
            format: Format::CURRENT,
        }
    }

    /// Absent, the field is not in the hashed bytes (records written before it keep their
    /// hashes); present, it is, so editing or removing it changes the chain hash.
    #[test]
    fn the_traceparent_is_hashed_when_present_and_absent_from_the_bytes_otherwise() {
        let without = record(None);
        let canonical = String::from_utf8(without.canonical().unwrap()).unwrap();
        assert!(!canonical.contains("traceparent"), "{canonical}");
        let with = record(Some(TRACE));
        let canonical = String::from_utf8(with.canonical().unwrap()).unwrap();
        assert!(
            canonical.contains(&format!("\"traceparent\":\"{TRACE}\"")),
            "{canonical}"
        );
        let edited = record(Some(&TRACE.replace("4736", "4737")));
        let hashes = [
            without.hash().unwrap(),
            with.hash().unwrap(),
            edited.hash().unwrap(),
        ];
        assert_ne!(hashes[0], hashes[1]);
        assert_ne!(hashes[1], hashes[2]);
        // And a line with it parses back to the same record.
        let parsed: Record = serde_json::from_slice(&with.to_json().unwrap()).unwrap();
        assert_eq!(parsed, with);
    }
}
