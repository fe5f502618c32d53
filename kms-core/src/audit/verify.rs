//! Offline verification of exported audit files: one file ([`verify_reader`], and [`verify`] for
//! text in memory) and an ordered chain of files ([`verify_files`], [`FileChain`]).
//!
//! # What one file proves
//!
//! A file is JSON Lines: records, checkpoints, and a last line that is a checkpoint with
//! `closes_export: true`. Every record must carry the next `seq` and the SM3 hash of the record
//! before it, every checkpoint must cover the chain so far and carry a valid SM2 signature of the
//! audit key, and the file must end with its closing checkpoint (so a cut file fails). Hashes
//! and signatures are checked over the bytes each line's own [`super::Format`] defines, so
//! lines of format V1 and V2 may follow each other (a trail continued by an upgraded server).
//!
//! A file starts either at the **genesis** (its first record is record 1 and chains to
//! [`GENESIS`]) or at an **anchor**: a first line that is the signed closing checkpoint of the
//! previous archive segment (with `seq` ≥ 1). The anchor's signature must verify, and the chain
//! continues from it: the next record is `anchor.seq + 1` and chains to `anchor.last_hash`.
//!
//! **Security:** a file with an anchor proves only the records after the anchor. That the
//! trail is complete from the genesis is proved only by the chain of files: the oldest segment
//! starts at the genesis, and every later file's anchor is the closing checkpoint of the file
//! before it ([`verify_files`] with [`Start::Genesis`]). The anchor alone says nothing about
//! whether the records before it still exist or were ever intact; a signed checkpoint only
//! fixes their hash.
//!
//! # Audit key rotation
//!
//! The verifier is given one audit public key or several ([`AuditKeys`]): every version, as
//! `kms audit public-key` exports them, or only the oldest. The first signed line of a trail
//! may be signed by any key given; a later version is trusted only from the transition record
//! that introduces it ([`super::KeyTransition`], signed by a version already trusted). So a
//! trail that spans rotations verifies from its oldest key, and an edited transition (its
//! signature fails), a dropped one (the chain breaks, and the next checkpoint is signed by a
//! version nothing introduced) or a checkpoint by a version never handed over fails. Trust
//! carries over from file to file in a [`FileChain`].
//!
//! # Streaming
//!
//! [`verify_reader`] reads one line at a time (at most [`MAX_LINE_BYTES`] each), so memory does
//! not grow with the file, apart from the count of records per node. Naming an edited record
//! needs the line after the one that does not chain: that line is read ahead only then.

use std::collections::BTreeMap;
use std::io::{BufRead, Read as _};

use super::{Checkpoint, EncodeError, GENESIS, KeyTransition, Line, Record, fingerprint};
use crate::alg::{KeySpec, Purpose, SM2_DEFAULT_ID, SignatureRequest};
use crate::crypto::{self, Message, PublicKey};
use crate::policy::Policy;

/// The longest line [`verify_reader`] accepts. Real lines are well under 1 KiB; the bound keeps
/// a malformed or hostile file from making the verifier buffer it whole.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// What verification of one file found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    /// Signed checkpoints that verified, the anchor (if any) included: every line of a verified
    /// file is counted in `records` or `checkpoints`.
    pub checkpoints: u64,
    pub last_hash: String,
    /// Records per writing node (each server process has its own node id). Several nodes on one
    /// database append to the one chain, which the database serialises, so their records
    /// interleave in `seq` order and verify like a single writer's.
    pub records_by_node: BTreeMap<String, u64>,
    /// The `seq` the closing checkpoint covers: the last record's, or the anchor's when the file
    /// has no record after it (0 for an empty trail).
    pub last_seq: u64,
    /// The checkpoint the file starts from; `None` when the file starts at the genesis. A file
    /// with an anchor proves only the records after it (see the module documentation).
    pub anchor: Option<Checkpoint>,
    /// The audit key transitions the file holds, in order: each verified with the version it
    /// hands over from.
    pub transitions: Vec<KeyTransition>,
}

impl Verified {
    /// The `seq` of the file's first record (if it has one): 1, or the anchor's `seq` + 1.
    #[must_use]
    pub fn first_seq(&self) -> u64 {
        self.anchor.as_ref().map_or(1, |a| a.seq.saturating_add(1))
    }
}

/// The first problem, with its 1-based line number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct Broken {
    pub line: usize,
    pub problem: String,
}

fn broken(line: usize, problem: impl Into<String>) -> Broken {
    Broken {
        line,
        problem: problem.into(),
    }
}

/// The audit public keys a verifier is given: the one key of a trail never rotated, the oldest
/// key of one that was (the later ones are introduced by the trail's transition records), or
/// every version as `kms audit public-key` exports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditKeys {
    keys: Vec<PublicKey>,
}

impl AuditKeys {
    #[must_use]
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self { keys }
    }

    #[must_use]
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }
}

/// What a verifier accepts as its keys: one [`PublicKey`] or [`AuditKeys`]. (A trait object
/// rather than a generic, so that callers pass `&key` as they always did.)
pub trait ToAuditKeys {
    fn to_audit_keys(&self) -> AuditKeys;
}

impl ToAuditKeys for PublicKey {
    fn to_audit_keys(&self) -> AuditKeys {
        AuditKeys::new(vec![self.clone()])
    }
}

impl ToAuditKeys for AuditKeys {
    fn to_audit_keys(&self) -> AuditKeys {
        self.clone()
    }
}

impl From<&PublicKey> for AuditKeys {
    fn from(key: &PublicKey) -> Self {
        Self::new(vec![key.clone()])
    }
}

impl From<PublicKey> for AuditKeys {
    fn from(key: PublicKey) -> Self {
        Self::new(vec![key])
    }
}

impl From<Vec<PublicKey>> for AuditKeys {
    fn from(keys: Vec<PublicKey>) -> Self {
        Self::new(keys)
    }
}

/// Which audit key versions a checkpoint may be signed by at a point of the trail.
///
/// The first signed line of a trail (its first checkpoint, its anchor, or a transition before
/// either) may be signed by any key given; its key is trusted from then on. After that, a key
/// is trusted only once a verified transition record has introduced it, even when it was given
/// too: a checkpoint signed by a version the trail has not handed over to fails. Checkpoints
/// written before rotations were tracked name no fingerprint and may be signed by any key
/// given (there were no transitions then to introduce one).
#[derive(Clone, Debug)]
struct Trust {
    given: Vec<(String, PublicKey)>,
    trusted: Vec<(String, PublicKey)>,
    /// A signed line has been checked: the given keys no longer stand in for transitions.
    started: bool,
}

/// The first 16 hex digits of a fingerprint, as errors show it.
fn short(fp: &str) -> &str {
    fp.get(..16).unwrap_or(fp)
}

impl Trust {
    fn new(keys: &AuditKeys) -> Self {
        Self {
            given: keys
                .keys
                .iter()
                .map(|k| (fingerprint(k), k.clone()))
                .collect(),
            trusted: Vec::new(),
            started: false,
        }
    }

    fn find<'a>(list: &'a [(String, PublicKey)], fp: &str) -> Option<&'a PublicKey> {
        list.iter().find(|(f, _)| f == fp).map(|(_, k)| k)
    }

    fn trust(&mut self, fp: &str, key: &PublicKey) {
        if Self::find(&self.trusted, fp).is_none() {
            self.trusted.push((fp.to_owned(), key.clone()));
        }
    }

    /// Every key that may sign here, for naming an edited record (trusted keys first).
    fn any_valid(&self, cp: &Checkpoint) -> bool {
        self.trusted
            .iter()
            .chain(&self.given)
            .any(|(_, k)| checkpoint_signature_valid(cp, k))
    }

    /// The key checkpoint `cp` on line `n` must verify with; made trusted if it is the first.
    fn checkpoint_key(&mut self, n: usize, cp: &Checkpoint) -> Result<Option<PublicKey>, Broken> {
        let Some(fp) = &cp.key_fingerprint else {
            // Written before rotations were tracked: any key given or trusted.
            let key = self
                .trusted
                .iter()
                .chain(&self.given)
                .find(|(_, k)| checkpoint_signature_valid(cp, k))
                .map(|(f, k)| (f.clone(), k.clone()));
            self.started = true;
            return Ok(key.map(|(f, k)| {
                self.trust(&f, &k);
                k
            }));
        };
        if let Some(key) = Self::find(&self.trusted, fp) {
            self.started = true;
            return Ok(Some(key.clone()));
        }
        let given = Self::find(&self.given, fp).cloned();
        match given {
            Some(key) if !self.started => {
                self.started = true;
                self.trust(fp, &key);
                Ok(Some(key))
            }
            Some(_) => Err(broken(
                n,
                format!(
                    "checkpoint for record {} is signed by audit key version {} (sm3 {}), which no \
                     transition record before it introduced: a transition record was dropped, or \
                     the key is not this trail's",
                    cp.seq,
                    cp.key_version,
                    short(fp)
                ),
            )),
            // Not a key of this trail at all: the signature check fails it, as it did before
            // keys had versions (and as an edited fingerprint must).
            None => Ok(None),
        }
    }

    /// Checks the transition carried by record `r` on line `n`, and trusts the version it
    /// introduces.
    fn transition(&mut self, n: usize, r: &Record, t: &KeyTransition) -> Result<(), Broken> {
        let from = match Self::find(&self.trusted, &t.from_fingerprint) {
            Some(k) => Some(k.clone()),
            None if !self.started => Self::find(&self.given, &t.from_fingerprint).cloned(),
            None => None,
        };
        let Some(from) = from else {
            return Err(broken(
                n,
                format!(
                    "record {} hands the audit key over from version {} (sm3 {}), which is not \
                     trusted at this point of the trail (neither given nor introduced before)",
                    r.seq,
                    t.from_version,
                    short(&t.from_fingerprint)
                ),
            ));
        };
        let edited = || {
            broken(
                n,
                format!(
                    "record {} is an audit key transition (version {} to {}) whose signature by \
                     version {} does not verify: the transition record was edited",
                    r.seq, t.from_version, t.to_version, t.from_version
                ),
            )
        };
        let signed = r.transition_signed_bytes().map_err(unencodable(n))?;
        let der = hex::decode(&t.signature).map_err(|_| edited())?;
        if !signature_over(&signed, &der, &from) {
            return Err(edited());
        }
        let to = hex::decode(&t.to_public_key)
            .ok()
            .and_then(|der| PublicKey::from_spki_der(Policy::GM_FORMATS, &der).ok())
            .filter(|k| fingerprint(k) == t.to_fingerprint && k.spec() == KeySpec::Sm2)
            .ok_or_else(|| {
                broken(
                    n,
                    format!(
                        "record {}: the new audit key version {} is not an SM2 public key with the \
                         fingerprint the transition names",
                        r.seq, t.to_version
                    ),
                )
            })?;
        if t.to_version <= t.from_version || r.key_version != Some(t.to_version) {
            return Err(broken(
                n,
                format!(
                    "record {}: an audit key transition must name a newer version (from {} to {})",
                    r.seq, t.from_version, t.to_version
                ),
            ));
        }
        self.started = true;
        self.trust(&t.to_fingerprint, &to);
        Ok(())
    }
}

/// Checks a checkpoint's signature with the audit public key, over the bytes its format
/// signs. False too when the checkpoint cannot be encoded (nothing it could be checked against).
#[must_use]
pub fn checkpoint_signature_valid(cp: &Checkpoint, public: &PublicKey) -> bool {
    signature_valid(cp, public).unwrap_or(false)
}

/// [`checkpoint_signature_valid`], telling an encoding failure apart from a bad signature.
fn signature_valid(cp: &Checkpoint, public: &PublicKey) -> Result<bool, EncodeError> {
    let signed = cp.signed_bytes()?;
    let Ok(der) = hex::decode(&cp.signature) else {
        return Ok(false);
    };
    Ok(signature_over(&signed, &der, public))
}

/// Whether `der` is an SM2 (SM3, default ID) signature of `signed` by `public`.
fn signature_over(signed: &[u8], der: &[u8], public: &PublicKey) -> bool {
    let policy = Policy::GM_FORMATS;
    let Ok(open) = policy.approve_open(Purpose::Sign, KeySpec::Sm2) else {
        return false;
    };
    let Ok(sig) = policy.approve_verify(
        open,
        SignatureRequest::Sm2 {
            id: SM2_DEFAULT_ID.to_owned(),
        },
    ) else {
        return false;
    };
    crypto::verify(&sig, public, Message::Raw(signed), der) == Ok(true)
}

/// Whether `line` (the one after a record) confirms that record's hash: a record chaining to it,
/// or a validly signed checkpoint over it.
fn vouches_for(line: &str, hash: &str, trust: &Trust) -> bool {
    match serde_json::from_str::<Line>(line) {
        Ok(Line::Record(next)) => next.prev == hash,
        Ok(Line::Checkpoint(cp)) => cp.last_hash == hash && trust.any_valid(&cp),
        Err(_) => false,
    }
}

/// A line's encoding failure as the problem of line `n`.
fn unencodable(n: usize) -> impl FnOnce(EncodeError) -> Broken {
    move |e| broken(n, e.to_string())
}

/// One line as read: its 1-based number and its text without the line ending.
type ReadLine = (usize, Result<String, Broken>);

/// Splits a reader into lines exactly as `str::lines` does (`\n`, or `\r\n`; a last line without
/// an ending counts), one line in memory at a time, plus at most one read ahead.
struct Lines<R> {
    reader: R,
    /// Lines read so far.
    n: usize,
    /// Bytes read so far (to name the offset of a byte that is not UTF-8).
    offset: u64,
    /// A line read ahead by [`Lines::peek`].
    ahead: Option<ReadLine>,
    /// Set after the end or an error: nothing more is read.
    done: bool,
}

impl<R: BufRead> Lines<R> {
    const fn new(reader: R) -> Self {
        Self {
            reader,
            n: 0,
            offset: 0,
            ahead: None,
            done: false,
        }
    }

    fn read(&mut self) -> Option<ReadLine> {
        if self.done {
            return None;
        }
        let n = self.n + 1;
        let mut buf = Vec::new();
        let limit = u64::try_from(MAX_LINE_BYTES)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let len = match (&mut self.reader).take(limit).read_until(b'\n', &mut buf) {
            Ok(0) => {
                self.done = true;
                return None;
            }
            Ok(len) => len,
            Err(e) => {
                self.done = true;
                return Some((n, Err(broken(n, format!("cannot read the file: {e}")))));
            }
        };
        self.n = n;
        let start = self.offset;
        self.offset = start.saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        } else if buf.len() > MAX_LINE_BYTES {
            self.done = true;
            return Some((
                n,
                Err(broken(
                    n,
                    format!("longer than {MAX_LINE_BYTES} bytes: not an audit line"),
                )),
            ));
        }
        match String::from_utf8(buf) {
            Ok(text) => Some((n, Ok(text))),
            Err(e) => {
                self.done = true;
                let at = u64::try_from(e.utf8_error().valid_up_to()).unwrap_or(u64::MAX);
                Some((
                    n,
                    Err(broken(
                        n,
                        format!(
                            "not UTF-8 text (byte {} of the file)",
                            start.saturating_add(at).saturating_add(1)
                        ),
                    )),
                ))
            }
        }
    }

    fn next_line(&mut self) -> Option<ReadLine> {
        self.ahead.take().or_else(|| self.read())
    }

    /// The line after the last one returned, read ahead (`None` at the end or if unreadable).
    fn peek(&mut self) -> Option<&str> {
        if self.ahead.is_none() {
            self.ahead = self.read();
        }
        match &self.ahead {
            Some((_, Ok(text))) => Some(text),
            Some((_, Err(_))) | None => None,
        }
    }
}

/// Verifies an exported trail (JSON Lines) with the audit public key, offline: text already in
/// memory. The same as [`verify_reader`] over its bytes.
pub fn verify(text: &str, keys: &dyn ToAuditKeys) -> Result<Verified, Broken> {
    verify_reader(text.as_bytes(), keys)
}

/// Verifies one exported audit file (JSON Lines) with the audit public key, offline, reading it
/// line by line: memory does not grow with the file (beyond the count of records per node).
///
/// The file starts at the genesis (record 1, chained to [`GENESIS`]) or at an anchor: a first
/// line that is a signed closing checkpoint over record `seq` ≥ 1, the last line of the previous
/// archive segment. The chain then continues from it (record `seq + 1`, chained to its
/// `last_hash`) and [`Verified::anchor`] holds it. The anchor does not close this file: the
/// file still needs its own closing checkpoint.
///
/// **Security:** an anchored file proves only the records after its anchor. That the trail is
/// complete from the genesis is proved only by the chain of files ([`verify_files`] with
/// [`Start::Genesis`]).
///
/// # Errors
/// The first line that does not verify, with what is wrong. A record whose successor still
/// vouches for the one after it is named as the edited one. Bytes that are not UTF-8, a line
/// over [`MAX_LINE_BYTES`] and a read error break the line they are on.
pub fn verify_reader(reader: impl BufRead, keys: &dyn ToAuditKeys) -> Result<Verified, Broken> {
    verify_trusting(reader, &mut Trust::new(&keys.to_audit_keys()))
}

/// [`verify_reader`] from a trust state (a chain of files carries it from file to file).
fn verify_trusting(reader: impl BufRead, trust: &mut Trust) -> Result<Verified, Broken> {
    let mut lines = Lines::new(reader);
    let mut transitions = Vec::new();
    let mut running = GENESIS.to_owned();
    let mut next_seq: u64 = 1;
    let mut anchor: Option<Checkpoint> = None;
    let mut records = 0u64;
    let mut checkpoints = 0u64;
    let mut records_by_node: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_record_line: Option<usize> = None;
    // The last line read, and whether it is a closing checkpoint (the anchor is not: it closed
    // the previous file).
    let mut end: Option<(usize, bool)> = None;
    while let Some((n, raw)) = lines.next_line() {
        let raw = raw?;
        if raw.trim().is_empty() {
            return Err(broken(n, "empty line"));
        }
        let line: Line =
            serde_json::from_str(&raw).map_err(|e| broken(n, format!("not an audit line: {e}")))?;
        let closes = match &line {
            Line::Record(r) => {
                let expected = next_seq;
                if r.seq != expected {
                    return Err(broken(
                        n,
                        format!(
                            "record seq {} where {expected} was expected (deleted or reordered)",
                            r.seq
                        ),
                    ));
                }
                if r.prev != running {
                    if let Some(a) = &anchor
                        && last_record_line.is_none()
                    {
                        return Err(broken(
                            n,
                            format!(
                                "record {} does not chain to the anchor on line 1 (the closing \
                                 checkpoint of record {}): the anchor is from another trail, or \
                                 the record was edited",
                                r.seq, a.seq
                            ),
                        ));
                    }
                    // If this record is itself vouched for by the line after it, the one before
                    // it is the edited one: name that line. (The line after is read only here.)
                    let hash = r.hash().map_err(unencodable(n))?;
                    if let Some(prev_line) = last_record_line
                        && lines
                            .peek()
                            .is_some_and(|next| vouches_for(next, &hash, trust))
                    {
                        return Err(broken(
                            prev_line,
                            format!(
                                "record {} was edited: the record after it no longer chains to it",
                                r.seq - 1
                            ),
                        ));
                    }
                    return Err(broken(
                        n,
                        format!(
                            "record {} does not chain to the record before it (edited, deleted or reordered)",
                            r.seq
                        ),
                    ));
                }
                // Re-serializing must reproduce the line exactly, so no field was reformatted.
                if serde_json::to_string(&line).map_err(|e| broken(n, e.to_string()))? != raw {
                    return Err(broken(
                        n,
                        format!("record {} is not in canonical form (edited)", r.seq),
                    ));
                }
                if let Some(t) = &r.transition {
                    trust.transition(n, r, t)?;
                    transitions.push(KeyTransition::clone(t));
                }
                next_seq = r
                    .seq
                    .checked_add(1)
                    .ok_or_else(|| broken(n, format!("record seq {} is out of range", r.seq)))?;
                running = r.hash().map_err(unencodable(n))?;
                last_record_line = Some(n);
                records += 1;
                // Counted without allocating a node name per record.
                match records_by_node.get_mut(&r.node) {
                    Some(count) => *count += 1,
                    None => {
                        records_by_node.insert(r.node.clone(), 1);
                    }
                }
                false
            }
            // A checkpoint on the first line that covers records is an anchor: the chain
            // continues from it. (One over record 0 is the checkpoint of an empty trail, which
            // starts at the genesis and is checked like any other.)
            Line::Checkpoint(cp) if n == 1 && cp.seq > 0 => {
                let key = trust.checkpoint_key(n, cp)?;
                if !key.is_some_and(|k| signature_valid(cp, &k).unwrap_or(false)) {
                    return Err(broken(
                        n,
                        "the anchor (the checkpoint on the first line) does not verify with the \
                         audit public key",
                    ));
                }
                if !cp.closes_export {
                    return Err(broken(
                        n,
                        format!(
                            "the first line is a checkpoint for record {} that does not close an \
                             export: an anchor must be the closing checkpoint of the previous \
                             segment",
                            cp.seq
                        ),
                    ));
                }
                next_seq = cp.seq.checked_add(1).ok_or_else(|| {
                    broken(n, format!("anchor for record {} is out of range", cp.seq))
                })?;
                running.clone_from(&cp.last_hash);
                checkpoints += 1;
                anchor = Some(cp.clone());
                false
            }
            Line::Checkpoint(cp) => {
                let key = trust.checkpoint_key(n, cp)?;
                let covered = next_seq - 1;
                if cp.seq != covered || cp.last_hash != running {
                    return Err(broken(
                        n,
                        format!(
                            "checkpoint for record {} does not match the chain (ends at record {covered})",
                            cp.seq
                        ),
                    ));
                }
                let valid = match &key {
                    Some(k) => signature_valid(cp, k).map_err(unencodable(n))?,
                    None => false,
                };
                if !valid {
                    return Err(broken(
                        n,
                        "checkpoint signature does not verify with the audit public key",
                    ));
                }
                checkpoints += 1;
                cp.closes_export
            }
        };
        end = Some((n, closes));
    }
    match end {
        Some((_, true)) => Ok(Verified {
            records,
            checkpoints,
            last_hash: running,
            records_by_node,
            last_seq: next_seq - 1,
            anchor,
            transitions,
        }),
        Some((n, false)) => Err(broken(
            n,
            "the export does not end with its closing signed checkpoint (truncated or appended to)",
        )),
        None => Err(broken(1, "empty export")),
    }
}

// ---------------------------------------------------------------------------------------------
// A chain of files.

/// Where the first file of a chain may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At the genesis only: the files must hold the whole trail, from record 1.
    Genesis,
    /// At the genesis or at an anchor. With an anchor, only the records after it are proved;
    /// the earlier ones are in segments not given (see the module documentation).
    GenesisOrAnchor,
}

/// One verified file of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedFile {
    /// The name it was given under (usually its path).
    pub name: String,
    pub verified: Verified,
}

/// What verification of a chain of files found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedFiles {
    /// Each file, in chain order.
    pub files: Vec<VerifiedFile>,
    /// Records in all files (no record is in two files).
    pub records: u64,
    /// Distinct signed checkpoints: an anchor that repeats the previous file's closing
    /// checkpoint is counted once.
    pub checkpoints: u64,
    /// The `seq` of the first record: 1 when complete from the genesis.
    pub first_seq: u64,
    /// The `seq` the last file's closing checkpoint covers.
    pub last_seq: u64,
    /// The hash the last file's closing checkpoint covers.
    pub last_hash: String,
    /// Records per writing node, over all files.
    pub records_by_node: BTreeMap<String, u64>,
    /// The first file's anchor; `None` when the chain starts at the genesis.
    pub anchor: Option<Checkpoint>,
    /// The audit key transitions in all files, in order.
    pub transitions: Vec<KeyTransition>,
    /// Whether the chain starts at the genesis, i.e. the files prove the whole trail up to
    /// `last_seq`. False only with [`Start::GenesisOrAnchor`] and a first file with an anchor.
    pub complete_from_genesis: bool,
}

/// Why a chain of files does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// No file was given.
    #[error("no audit file given")]
    NoFiles,
    /// A file does not verify on its own.
    #[error("{file} line {}: {}", broken.line, broken.problem)]
    Broken { file: String, broken: Broken },
    /// The first file starts at an anchor, but the chain must start at the genesis.
    #[error(
        "{file} starts after record {anchor_seq}, not at the genesis: the segments before it are \
         missing"
    )]
    StartsAtAnchor { file: String, anchor_seq: u64 },
    /// A file verifies on its own but does not continue the file before it: a missing segment,
    /// an overlap, files out of order, or files of different trails. `problem` names both files.
    #[error("{problem}")]
    DoesNotContinue {
        file: String,
        previous: String,
        problem: String,
    },
}

impl ChainError {
    /// The file the problem was found in (`None` for [`ChainError::NoFiles`]).
    #[must_use]
    pub fn file(&self) -> Option<&str> {
        match self {
            Self::NoFiles => None,
            Self::Broken { file, .. }
            | Self::StartsAtAnchor { file, .. }
            | Self::DoesNotContinue { file, .. } => Some(file),
        }
    }
}

/// Verifies audit files one after another as one trail: each file alone ([`verify_reader`]),
/// and each continuing the one before. For callers that open the files one at a time;
/// [`verify_files`] does it for a list.
///
/// The audit key trust carries from file to file: a version introduced by a transition record
/// in one segment signs the later ones.
#[derive(Debug)]
pub struct FileChain {
    start: Start,
    files: Vec<VerifiedFile>,
    trust: Trust,
}

impl FileChain {
    /// A chain verified with `keys` (see [`AuditKeys`]).
    #[must_use]
    pub fn new(start: Start, keys: &dyn ToAuditKeys) -> Self {
        Self {
            start,
            files: Vec::new(),
            trust: Trust::new(&keys.to_audit_keys()),
        }
    }

    /// Verifies the next file of the chain. After an error the chain is unchanged; a caller
    /// stops at the first error.
    ///
    /// # Errors
    /// The file does not verify, the first file starts at an anchor but the chain must start
    /// at the genesis, or the file does not continue the one before (its anchor must be the
    /// previous file's closing checkpoint: the same `seq` and `last_hash`).
    pub fn add(&mut self, name: &str, reader: impl BufRead) -> Result<&Verified, ChainError> {
        let mut trust = self.trust.clone();
        let verified =
            verify_trusting(reader, &mut trust).map_err(|broken| ChainError::Broken {
                file: name.to_owned(),
                broken,
            })?;
        self.check_join(name, &verified)?;
        self.trust = trust;
        self.files.push(VerifiedFile {
            name: name.to_owned(),
            verified,
        });
        self.files
            .last()
            .map(|f| &f.verified)
            .ok_or(ChainError::NoFiles)
    }

    fn check_join(&self, name: &str, next: &Verified) -> Result<(), ChainError> {
        let Some(prev) = self.files.last() else {
            return match (&next.anchor, self.start) {
                (Some(a), Start::Genesis) => Err(ChainError::StartsAtAnchor {
                    file: name.to_owned(),
                    anchor_seq: a.seq,
                }),
                (Some(_), Start::GenesisOrAnchor) | (None, _) => Ok(()),
            };
        };
        let (p, ends) = (&prev.name, prev.verified.last_seq);
        let problem = match &next.anchor {
            None => format!(
                "{name} starts at the genesis (record 1) but follows {p}, which ends at record \
                 {ends}: the files are out of order, or {name} does not continue {p}"
            ),
            Some(a) if a.seq > ends => format!(
                "{name} starts after record {} but the previous file {p} ends at record {ends}: a \
                 segment is missing (records {} to {}), or the files are out of order",
                a.seq,
                ends.saturating_add(1),
                a.seq
            ),
            Some(a) if a.seq < ends => format!(
                "{name} starts after record {} but the previous file {p} already runs to record \
                 {ends}: the files overlap, or are out of order",
                a.seq
            ),
            Some(a) if a.last_hash != prev.verified.last_hash => format!(
                "{name} starts after record {} and {p} ends there, but at another hash: the \
                 files are from different trails",
                a.seq
            ),
            Some(_) => return Ok(()),
        };
        Err(ChainError::DoesNotContinue {
            file: name.to_owned(),
            previous: p.clone(),
            problem,
        })
    }

    /// The result over every file added.
    ///
    /// # Errors
    /// [`ChainError::NoFiles`] when no file was added.
    pub fn finish(self) -> Result<VerifiedFiles, ChainError> {
        let (Some(first), Some(last)) = (self.files.first(), self.files.last()) else {
            return Err(ChainError::NoFiles);
        };
        let first_seq = first.verified.first_seq();
        let anchor = first.verified.anchor.clone();
        let (last_seq, last_hash) = (last.verified.last_seq, last.verified.last_hash.clone());
        let mut records = 0u64;
        let mut checkpoints = 0u64;
        let mut records_by_node: BTreeMap<String, u64> = BTreeMap::new();
        let mut transitions = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            let v = &f.verified;
            transitions.extend(v.transitions.iter().cloned());
            records = records.saturating_add(v.records);
            // Each later file's anchor is the previous file's closing checkpoint.
            let repeated = u64::from(i > 0 && v.anchor.is_some());
            checkpoints = checkpoints.saturating_add(v.checkpoints.saturating_sub(repeated));
            for (node, count) in &v.records_by_node {
                let total = records_by_node.entry(node.clone()).or_default();
                *total = total.saturating_add(*count);
            }
        }
        Ok(VerifiedFiles {
            files: self.files,
            records,
            checkpoints,
            first_seq,
            last_seq,
            last_hash,
            records_by_node,
            complete_from_genesis: anchor.is_none(),
            anchor,
            transitions,
        })
    }
}

/// Verifies an ordered list of named audit files as one trail: archive segments oldest first,
/// then the live export. Segment files are named `audit-<first seq>-<last seq>.jsonl` with
/// zero-padded numbers, so sorting the names gives the chain order.
///
/// Each file must verify alone; the first must start at the genesis unless `start` is
/// [`Start::GenesisOrAnchor`]; every later file's anchor must be the previous file's closing
/// checkpoint (same `seq` and `last_hash`).
///
/// **Security:** only a result with `complete_from_genesis` proves the whole trail up to
/// `last_seq`. With [`Start::GenesisOrAnchor`] and an anchored first file, the records before
/// the anchor are not checked at all: the anchor's signature fixes their hash, not that they
/// still exist.
///
/// # Errors
/// The first problem, naming its file (see [`ChainError`]).
pub fn verify_files<S: AsRef<str>, R: BufRead>(
    files: impl IntoIterator<Item = (S, R)>,
    keys: &dyn ToAuditKeys,
    start: Start,
) -> Result<VerifiedFiles, ChainError> {
    let mut chain = FileChain::new(start, keys);
    for (name, reader) in files {
        chain.add(name.as_ref(), reader)?;
    }
    chain.finish()
}

#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod tests;
