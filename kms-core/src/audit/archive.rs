//! Retention of the audit trail: the oldest records move from the store to segment files.
//!
//! The store keeps the *hot* trail. Once it holds more than [`ArchivePolicy::hot_records`]
//! records, the oldest [`ArchivePolicy::segment_records`] go to a file
//! `audit-<first seq>-<last seq>.jsonl` (20 digits each, so names sort in chain order) in exactly
//! the export format: the previous segment's closing checkpoint (the *anchor*; none for the
//! first segment), the records and checkpoints of the range, and a closing checkpoint signed
//! now. Each segment file verifies on its own, and the files and a live export chain together:
//! every file's anchor is the closing checkpoint of the file before.
//!
//! # One run ([`archive_once`])
//!
//! 1. The closing checkpoint over the range's last record is signed first: while the KMS is
//!    sealed nothing is written ([`ArchiveOutcome::Sealed`]).
//! 2. The segment is streamed from the store a page at a time into a uniquely named
//!    `….jsonl.<nonce>.partial` file (the chain is checked on the way), which is fsynced.
//! 3. One conditional batch moves the anchor: `require(anchor == the anchor read)`,
//!    `put(anchor = the closing checkpoint)`. Whoever moves it first owns the range; a run that
//!    loses ([`StoreError::Conflict`]: another node archived first) deletes its partial file and
//!    stops ([`ArchiveOutcome::LostRace`]). The batch touches neither the `tail` key (the
//!    writer's precondition) nor any newer record, so appends carry on meanwhile.
//! 4. The winner renames its partial file to the segment name and fsyncs the directory.
//! 5. The archived records and checkpoints are deleted from the store (the *sweep*), in batches
//!    of [`SWEEP_BATCH`] keys. From step 3 on, every reader ignores them: exports and later
//!    segments start after the anchor.
//!
//! Why the anchor moves before the file gets its name, and why the sweep is separate from the
//! anchor batch:
//!
//! - Segment names are the same on every node for a range. If files were renamed before the
//!   batch, a loser sharing the directory would delete the winner's file when it cleans up.
//!   With the rename after the batch only the winner names a file, and a loser only ever
//!   deletes its own uniquely named partial.
//! - PostgreSQL takes one advisory lock per key a batch writes, in a lock table shared by every
//!   session (64 × max_connections entries by default): a batch deleting a 100,000-record
//!   segment fails with "out of shared memory", and a few thousand would starve other nodes.
//!   Deleting in small batches after the anchor has moved is safe because nothing reads below
//!   the anchor, and a sweep left half done is finished by the next run.
//!
//! # Crashes
//!
//! Each run first tidies up after earlier ones ([`tidy`]): the partial file whose closing
//! checkpoint is the anchor (a crash between the batch and the rename) becomes the segment file,
//! partial files of archived ranges that are cut short or already have their segment file are
//! deleted, and records below the anchor left by an interrupted sweep are deleted. A crash
//! before the batch leaves at most a partial file; the range is archived again by the next run.
//! A segment file already there under the same name but for another chain (a store restored
//! from a backup, then archived again) is never overwritten: it is renamed aside to
//! `….jsonl.<nonce>.superseded` and reported.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::export::line_text;
use super::layout::{ReadError, Stored, sign_checkpoint, signer_for};
use super::trail::{Trail, trail_of};
use super::writer::{AuditLog, Signer};
use super::{Checkpoint, EncodeError, Format, GENESIS, Line, Record};
use crate::store::{Store, StoreError};

/// Most keys one sweep batch deletes. Small enough for PostgreSQL's shared lock table (one
/// advisory lock per key, about 6,400 slots for every session together by default), large
/// enough that a 100,000-record segment takes a few hundred batches.
pub const SWEEP_BATCH: usize = 500;

/// When and where the hot trail is archived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePolicy {
    /// Where segment files go; created (mode 0700) when first needed.
    pub dir: PathBuf,
    /// Archive once the store holds more than this many records; 0 never archives.
    pub hot_records: u64,
    /// Records per segment file: at least 1, and at most `hot_records`, so that a run never
    /// archives records newer than the hot window.
    pub segment_records: u64,
    /// How often the archiver thread looks.
    pub every: Duration,
}

impl ArchivePolicy {
    pub const DEFAULT_HOT_RECORDS: u64 = 1_000_000;
    pub const DEFAULT_SEGMENT_RECORDS: u64 = 100_000;
    /// How often the archiver looks by default.
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(5);

    /// The defaults for segment files in `dir`: a million hot records, 100,000 per segment,
    /// looked at every [`Self::DEFAULT_EVERY`].
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            hot_records: Self::DEFAULT_HOT_RECORDS,
            segment_records: Self::DEFAULT_SEGMENT_RECORDS,
            every: Self::DEFAULT_EVERY,
        }
    }

    /// Whether anything is ever archived.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.hot_records > 0
    }

    /// Checks the sizes when archiving is on.
    ///
    /// # Errors
    /// [`ArchiveError::Policy`] naming the setting that is wrong.
    pub fn check(&self) -> Result<(), ArchiveError> {
        if !self.enabled() {
            return Ok(());
        }
        if self.segment_records == 0 {
            return Err(ArchiveError::Policy(
                "audit_segment_records must be at least 1 when archiving is on".into(),
            ));
        }
        if self.segment_records > self.hot_records {
            return Err(ArchiveError::Policy(format!(
                "audit_segment_records ({}) must not exceed audit_hot_records ({}): a segment \
                 would take records the hot store is meant to keep",
                self.segment_records, self.hot_records
            )));
        }
        if self.dir.as_os_str().is_empty() {
            return Err(ArchiveError::Policy(
                "audit_archive_dir must name a directory when archiving is on".into(),
            ));
        }
        Ok(())
    }
}

/// One segment written by a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub first: u64,
    pub last: u64,
    /// The segment file.
    pub path: PathBuf,
    /// Its closing checkpoint, now the store's anchor and the next segment's first line.
    pub closing: Checkpoint,
    /// A different file found under the segment's name, renamed to this path (see the module
    /// documentation); worth a warning.
    pub superseded: Option<PathBuf>,
}

/// What one run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveOutcome {
    /// A segment was archived; the store may still be over the limit.
    Archived(SegmentInfo),
    /// The store holds `hot` records, within the limit.
    UnderLimit { hot: u64 },
    /// Archiving is off (`hot_records` is 0).
    Disabled,
    /// The KMS is sealed, so the closing checkpoint cannot be signed; nothing was written.
    Sealed,
    /// Another node archived the range first; its file is the segment.
    LostRace,
}

impl ArchiveOutcome {
    /// The segment archived, if any.
    #[must_use]
    pub fn segment(&self) -> Option<&SegmentInfo> {
        match self {
            Self::Archived(s) => Some(s),
            Self::UnderLimit { .. } | Self::Disabled | Self::Sealed | Self::LostRace => None,
        }
    }
}

/// Why a run failed. The store and the directory are left consistent: the next run carries on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    #[error("audit archive: {0}")]
    Store(#[from] StoreError),
    #[error("audit archive: cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The stored trail does not chain; nothing is archived until someone looks.
    #[error("audit archive: the stored trail is inconsistent: {0}")]
    Chain(String),
    /// A line could not be encoded; nothing was hashed, signed or written in its place.
    #[error("audit archive: {0}")]
    Encode(#[from] EncodeError),
    #[error("audit archive settings: {0}")]
    Policy(String),
    #[error("audit archive: cannot start the archiver thread: {0}")]
    Thread(#[source] io::Error),
}

fn file_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::File {
        action,
        path,
        source,
    }
}

/// The segment file name for records `first..=last`.
#[must_use]
pub fn segment_file_name(first: u64, last: u64) -> String {
    format!("audit-{first:020}-{last:020}.jsonl")
}

/// `(first, last)` from a partial file's name, `audit-F-L.jsonl.<nonce>.partial`.
fn parse_partial_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("audit-")?.strip_suffix(".partial")?;
    let (range, _nonce) = rest.split_once(".jsonl.")?;
    let (first, last) = range.split_once('-')?;
    if first.len() != 20 || last.len() != 20 {
        return None;
    }
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// A name part no other run uses: random, or (without randomness) process, counter and time.
fn nonce() -> String {
    let mut bytes = [0u8; 8];
    if crate::crypto::rng::fill(&mut bytes).is_ok() {
        return hex::encode(bytes);
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        super::layout::now_ms()
    )
}

fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_error("sync the directory", dir))
}

/// Creates the archive directory, owner only (audit records name principals and keys).
fn ensure_dir(dir: &Path) -> Result<(), ArchiveError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(file_error("create", dir))
}

/// Deletes `path`; already gone is fine (another run tidied it).
fn remove_quietly(path: &Path) -> Result<(), ArchiveError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_error("delete", path)(e)),
    }
}

/// Archives one segment if the store holds more than the policy's hot records; see the module
/// documentation for the steps. Safe to run on several nodes at once: each range is archived
/// by exactly one of them.
///
/// # Errors
/// Store and file errors, an invalid policy, or a stored trail that does not chain. Nothing is
/// lost on an error: the next run tidies up and carries on.
pub fn archive_once(
    store: &Arc<dyn Store>,
    node: &str,
    signer: &Signer,
    policy: &ArchivePolicy,
) -> Result<ArchiveOutcome, ArchiveError> {
    archive_trail(&*trail_of(store), node, signer, policy)
}

/// [`archive_once`] over a trail.
fn archive_trail(
    store: &dyn Trail,
    node: &str,
    signer: &Signer,
    policy: &ArchivePolicy,
) -> Result<ArchiveOutcome, ArchiveError> {
    policy.check()?;
    if !policy.enabled() {
        return Ok(ArchiveOutcome::Disabled);
    }
    let anchor = store.anchor()?;
    let archived = anchor.as_ref().map_or(0, |(cp, _)| cp.seq);
    tidy(store, &policy.dir, anchor.as_ref().map(|(cp, _)| cp))?;

    let (tail, _) = store.tail()?;
    let hot = tail.seq.saturating_sub(archived);
    if hot <= policy.hot_records {
        return Ok(ArchiveOutcome::UnderLimit { hot });
    }
    let first = archived + 1;
    let last = archived.saturating_add(policy.segment_records.min(hot));
    let anchor_bytes = anchor.as_ref().map(|(_, bytes)| bytes.clone());
    let anchor = anchor.map(|(cp, _)| cp);

    let Some(last_bytes) = store.record(last)? else {
        return missing(store, anchor_bytes.as_deref(), last);
    };
    let last_hash = serde_json::from_slice::<Record>(&last_bytes)
        .map_err(|_| ArchiveError::Chain(format!("record {last} does not decode")))?
        .hash()?;
    // Signed by the version the trail signed with at record `last`, not necessarily the
    // newest: a transition after `last` is in a later file, and the segment must verify from
    // the oldest key without it.
    let Some(key) = signer_for(signer, &tail, last) else {
        return Ok(ArchiveOutcome::Sealed);
    };
    let Some(closing) =
        sign_checkpoint(signer, &key, Format::CURRENT, node, last, &last_hash, true)?
    else {
        return Ok(ArchiveOutcome::Sealed);
    };

    ensure_dir(&policy.dir)?;
    let partial = match write_segment(store, &policy.dir, anchor.as_ref(), first, last, &closing) {
        Ok(p) => p,
        Err(SegmentError::Missing(seq)) => return missing(store, anchor_bytes.as_deref(), seq),
        Err(SegmentError::Archive(e)) => return Err(e),
    };
    match commit(store, anchor_bytes, &closing) {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) => {
            remove_quietly(&partial)?;
            return Ok(ArchiveOutcome::LostRace);
        }
        // The outcome is unknown: the partial file stays, and the next run promotes it if the
        // anchor did move, or deletes it once the range is archived again.
        Err(e) => return Err(e.into()),
    }
    let path = policy.dir.join(segment_file_name(first, last));
    let superseded = publish(&partial, &path, &closing)?;
    // What racing runs left for this range, and the archived records.
    tidy(store, &policy.dir, Some(&closing))?;
    Ok(ArchiveOutcome::Archived(SegmentInfo {
        first,
        last,
        path,
        closing,
        superseded,
    }))
}

/// A record of the range is gone: archived by another node since this run read the anchor (it
/// lost the race), or lost from the store.
fn missing(
    store: &dyn Trail,
    anchor_read: Option<&[u8]>,
    seq: u64,
) -> Result<ArchiveOutcome, ArchiveError> {
    let now = store.anchor()?.map(|(_, bytes)| bytes);
    if now.as_deref() == anchor_read {
        Err(ArchiveError::Chain(format!(
            "record {seq} is missing from the store, though the anchor has not moved past it"
        )))
    } else {
        Ok(ArchiveOutcome::LostRace)
    }
}

/// Moves the anchor to `closing` if it is still what this run read.
fn commit(
    store: &dyn Trail,
    anchor_read: Option<Vec<u8>>,
    closing: &Checkpoint,
) -> Result<(), StoreError> {
    store.move_anchor(anchor_read, closing)
}

enum SegmentError {
    Archive(ArchiveError),
    /// Record `seq` was not in the store.
    Missing(u64),
}

impl From<ArchiveError> for SegmentError {
    fn from(e: ArchiveError) -> Self {
        Self::Archive(e)
    }
}

impl From<EncodeError> for SegmentError {
    fn from(e: EncodeError) -> Self {
        Self::Archive(e.into())
    }
}

/// Streams records `first..=last` (and their checkpoints) after the anchor line into a new
/// partial file, checking that they chain, then the closing line; fsyncs it and returns its
/// path. On any failure the partial file is deleted.
fn write_segment(
    store: &dyn Trail,
    dir: &Path,
    anchor: Option<&Checkpoint>,
    first: u64,
    last: u64,
    closing: &Checkpoint,
) -> Result<PathBuf, SegmentError> {
    let partial = dir.join(format!(
        "{}.{}.partial",
        segment_file_name(first, last),
        nonce()
    ));
    let written = write_lines(store, &partial, anchor, first, last, closing);
    if written.is_err() {
        // Best effort: a partial file left behind is deleted by a later run's tidy.
        let _ = fs::remove_file(&partial);
    }
    written.map(|()| partial)
}

fn write_lines(
    store: &dyn Trail,
    partial: &Path,
    anchor: Option<&Checkpoint>,
    first: u64,
    last: u64,
    closing: &Checkpoint,
) -> Result<(), SegmentError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(partial)
        .map_err(file_error("create", partial))?;
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let mut put = |line: &Line| -> Result<(), SegmentError> {
        let text = line_text(line).map_err(ArchiveError::from)?;
        out.write_all(text.as_bytes())
            .map_err(file_error("write", partial))?;
        Ok(())
    };

    let mut running = anchor.map_or_else(|| GENESIS.to_owned(), |a| a.last_hash.clone());
    let mut at = first - 1;
    if let Some(a) = anchor {
        put(&Line::Checkpoint(a.clone()))?;
    }
    for stored in store.read(first, last).map_err(ArchiveError::from)? {
        match stored {
            Ok(Stored::Record(seq, bytes)) => {
                let record: Record = serde_json::from_slice(&bytes)
                    .map_err(|_| ArchiveError::Chain(format!("record {seq} does not decode")))?;
                if record.seq != seq || record.prev != running {
                    return Err(ArchiveError::Chain(format!(
                        "record {seq} does not chain to the record before it"
                    ))
                    .into());
                }
                // The file must re-serialise to the stored bytes, or it would not verify.
                if record.to_json()? != bytes {
                    return Err(ArchiveError::Chain(format!(
                        "record {seq} is not stored in canonical form"
                    ))
                    .into());
                }
                running = record.hash()?;
                at = seq;
                put(&Line::Record(record))?;
            }
            Ok(Stored::Checkpoint(bytes)) => {
                let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|_| {
                    ArchiveError::Chain(format!("a checkpoint at record {at} does not decode"))
                })?;
                if cp.seq != at || cp.last_hash != running {
                    return Err(ArchiveError::Chain(format!(
                        "the checkpoint for record {} does not match the chain",
                        cp.seq
                    ))
                    .into());
                }
                put(&Line::Checkpoint(cp))?;
            }
            Err(ReadError::Missing(seq)) => return Err(SegmentError::Missing(seq)),
            Err(ReadError::Store(e)) => return Err(ArchiveError::from(e).into()),
        }
    }
    if at != last || running != closing.last_hash {
        return Err(ArchiveError::Chain(format!(
            "record {last} changed while it was being archived"
        ))
        .into());
    }
    put(&Line::Checkpoint(closing.clone()))?;
    let file = out
        .into_inner()
        .map_err(|e| file_error("write", partial)(e.into_error()))?;
    file.sync_all().map_err(file_error("sync", partial))?;
    Ok(())
}

/// Gives the winner's partial file its segment name, so that the file's closing checkpoint is
/// the store's anchor. A file already under that name for the same range of the same chain (one
/// left by a run that died before its batch) is replaced: the two differ only in their closing
/// signature. One for another chain is renamed aside, never overwritten; returns where it went.
fn publish(
    partial: &Path,
    path: &Path,
    closing: &Checkpoint,
) -> Result<Option<PathBuf>, ArchiveError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut superseded = None;
    if path.exists() {
        match closing_of(path)? {
            Some(cp) if cp.seq == closing.seq && cp.last_hash == closing.last_hash => {}
            Some(_) | None => {
                let aside = path.with_extension(format!("jsonl.{}.superseded", nonce()));
                fs::rename(path, &aside).map_err(file_error("set aside", path))?;
                superseded = Some(aside);
            }
        }
    }
    match fs::rename(partial, path) {
        Ok(()) => {}
        // A racing run's tidy found this partial, the anchor's, and already gave it this name.
        Err(e) if e.kind() == io::ErrorKind::NotFound && path.exists() => {}
        Err(e) => return Err(file_error("rename", partial)(e)),
    }
    sync_dir(dir)?;
    Ok(superseded)
}

/// The closing checkpoint on a file's last line, if it has one.
fn closing_of(path: &Path) -> Result<Option<Checkpoint>, ArchiveError> {
    // A checkpoint line is about 500 bytes; the last 8 KiB hold it.
    const TAIL_BYTES: u64 = 8 * 1024;
    let mut file = File::open(path).map_err(file_error("read", path))?;
    let len = file.metadata().map_err(file_error("read", path))?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .map_err(file_error("read", path))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)
        .map_err(file_error("read", path))?;
    let text = String::from_utf8_lossy(&tail);
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    Ok(match last.map(serde_json::from_str::<Line>) {
        Some(Ok(Line::Checkpoint(cp))) if cp.closes_export => Some(cp),
        Some(_) | None => None,
    })
}

/// The closing checkpoint of a partial file that holds a whole segment `first..=last`: an
/// anchor line unless it starts at record 1, every record chaining, checkpoints matching, and a
/// closing checkpoint as the very last line (the signatures are not checked: the file is this
/// KMS's own). `None` for a file cut short by a crash while it was written, or not a segment.
fn complete_segment(
    path: &Path,
    first: u64,
    last: u64,
) -> Result<Option<Checkpoint>, ArchiveError> {
    let file = File::open(path).map_err(file_error("read", path))?;
    let mut lines = BufReader::new(file).lines();
    // `None` at the end of the file and for a line that is not an audit line.
    let mut next = || -> Result<Option<Line>, ArchiveError> {
        match lines.next() {
            None => Ok(None),
            Some(Err(e)) if e.kind() == io::ErrorKind::InvalidData => Ok(None),
            Some(Err(e)) => Err(file_error("read", path)(e)),
            Some(Ok(text)) => Ok(serde_json::from_str(&text).ok()),
        }
    };
    let mut running = GENESIS.to_owned();
    let mut at = first - 1;
    let mut line = next()?;
    if first > 1 {
        match line {
            Some(Line::Checkpoint(a)) if a.seq == at && a.closes_export => running = a.last_hash,
            Some(_) | None => return Ok(None),
        }
        line = next()?;
    }
    loop {
        match line {
            Some(Line::Record(r)) if r.seq == at + 1 && r.seq <= last && r.prev == running => {
                running = r.hash()?;
                at = r.seq;
            }
            Some(Line::Checkpoint(cp)) if cp.seq == at && cp.last_hash == running => {
                if cp.closes_export {
                    break Ok((at == last && lines.next().is_none()).then_some(cp));
                }
            }
            Some(_) | None => return Ok(None),
        }
        line = next()?;
    }
}

/// Finishes what earlier runs left, given the anchor (records up to its `seq` are archived):
///
/// - a partial file of an archived range whose segment file exists, or that is not a whole
///   segment, is deleted;
/// - the winner's partial file of the last range (its closing checkpoint *is* the anchor: the
///   run died between the batch and the rename) becomes the segment file;
/// - any other whole partial file of an older range that has no segment file here is kept, as
///   `….jsonl.<nonce>.orphan`: it may be the only copy of a segment whose winner died and whose
///   anchor others have moved on from (or a stale file with other boundaries), so it is neither
///   deleted nor given a segment name that could overlap the real ones;
/// - the archived records and checkpoints still in the store are deleted.
///
/// Partial files of ranges not archived yet are left alone: a run may be writing one.
fn tidy(store: &dyn Trail, dir: &Path, anchor: Option<&Checkpoint>) -> Result<(), ArchiveError> {
    let Some(anchor) = anchor else {
        return Ok(());
    };
    let archived = anchor.seq;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // Nothing archived here (other nodes may hold this trail's segments).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return sweep(store, archived),
        Err(e) => return Err(file_error("list", dir)(e)),
    };
    let mut changed = false;
    for entry in entries {
        let entry = entry.map_err(file_error("list", dir))?;
        let name = entry.file_name();
        let Some((first, last)) = name.to_str().and_then(parse_partial_name) else {
            continue;
        };
        if last > archived || first == 0 || first > last {
            continue;
        }
        changed = true;
        let partial = entry.path();
        let path = dir.join(segment_file_name(first, last));
        if path.exists() {
            remove_quietly(&partial)?;
            continue;
        }
        let (target, action) = match complete_segment(&partial, first, last)? {
            None => {
                remove_quietly(&partial)?;
                continue;
            }
            Some(closing) if closing == *anchor => (path, "name"),
            Some(_) if last == archived => {
                // A run that lost the race for the last range.
                remove_quietly(&partial)?;
                continue;
            }
            Some(_) => (
                path.with_extension(format!("jsonl.{}.orphan", nonce())),
                "keep",
            ),
        };
        // It may have been written by another process that never synced it.
        File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(file_error("sync", &partial))?;
        match fs::rename(&partial, &target) {
            Ok(()) => {}
            // Another run's tidy got there first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(action, &partial)(e)),
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    sweep(store, archived)
}

/// Deletes the records and checkpoints with `seq <= archived` from the trail's storage (from a
/// store tree [`SWEEP_BATCH`] keys per batch: see the module documentation for why not in one).
fn sweep(store: &dyn Trail, archived: u64) -> Result<(), ArchiveError> {
    Ok(store.sweep(archived)?)
}

/// Told what every run of an [`Archiver`] did, to log it (the core has no logger).
pub type ArchiveReport = Arc<dyn Fn(&Result<ArchiveOutcome, ArchiveError>) + Send + Sync>;

/// The archiver thread (`kms-audit-archive`) of one node: it runs [`archive_once`] every
/// [`ArchivePolicy::every`], and again at once after each segment while the store is over the
/// limit.
pub struct Archiver {
    stop: Mutex<Option<Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Archiver {
    /// Starts the thread; with archiving off ([`ArchivePolicy::enabled`]) there is none.
    ///
    /// # Errors
    /// An invalid policy, or the thread cannot be started.
    pub fn start(
        store: &Arc<dyn Store>,
        node: &str,
        signer: Signer,
        policy: ArchivePolicy,
        report: ArchiveReport,
    ) -> Result<Self, ArchiveError> {
        Self::over(trail_of(store), node, signer, policy, report)
    }

    fn over(
        store: Arc<dyn Trail>,
        node: &str,
        signer: Signer,
        policy: ArchivePolicy,
        report: ArchiveReport,
    ) -> Result<Self, ArchiveError> {
        policy.check()?;
        if !policy.enabled() {
            return Ok(Self {
                stop: Mutex::new(None),
                thread: Mutex::new(None),
            });
        }
        let (tx, rx) = mpsc::channel::<()>();
        let node = node.to_owned();
        let thread = std::thread::Builder::new()
            .name("kms-audit-archive".into())
            .spawn(move || {
                loop {
                    // Segment after segment while over the limit, but stop between two when asked.
                    loop {
                        let outcome = archive_trail(&*store, &node, &signer, &policy);
                        report(&outcome);
                        let again = matches!(
                            outcome,
                            Ok(ArchiveOutcome::Archived(_) | ArchiveOutcome::LostRace)
                        );
                        if !matches!(rx.try_recv(), Err(TryRecvError::Empty)) {
                            return;
                        }
                        if !again {
                            break;
                        }
                    }
                    match rx.recv_timeout(policy.every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(ArchiveError::Thread)?;
        Ok(Self {
            stop: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Whether a thread runs (archiving is on).
    #[must_use]
    pub fn running(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Stops the thread, after the segment it may be writing, and waits for it (shutdown).
    pub fn stop(&self) {
        if let Some(tx) = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = tx.send(());
        }
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        self.stop();
    }
}

impl AuditLog {
    /// [`archive_once`] over this log's store, as this node, with its signer.
    ///
    /// # Errors
    /// As [`archive_once`].
    pub fn archive_once(&self, policy: &ArchivePolicy) -> Result<ArchiveOutcome, ArchiveError> {
        archive_trail(&*self.trail, &self.node, &self.signer, policy)
    }

    /// Starts an [`Archiver`] over this log's store, as this node, with its signer.
    ///
    /// # Errors
    /// As [`Archiver::start`].
    pub fn start_archiver(
        &self,
        policy: ArchivePolicy,
        report: ArchiveReport,
    ) -> Result<Archiver, ArchiveError> {
        Archiver::over(
            Arc::clone(&self.trail),
            &self.node,
            Arc::clone(&self.signer),
            policy,
            report,
        )
    }
}

#[cfg(test)]
mod tests;
