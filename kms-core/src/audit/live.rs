//! The live audit log of an embedded store: the hot trail in append-only segment files, in the
//! export format (one JSON line per record or checkpoint, as `kms audit verify` and the archive
//! read them), written with group commit.
//!
//! # Why
//!
//! Kept in sled, every record cost sled's page rewrites: 5.7–7.3 KB written to disk for a
//! ~450-byte record, and sled's transaction was ~45 % of the writer's time. Here a group of
//! records is one `pwrite` of their lines at the end of the current file and one `fdatasync`,
//! so a record costs about its own size (a checkpoint every thousand records adds half a line).
//! Keys and metadata stay in the store. `bench/audit_io.py` measures it from `/proc/PID/io`:
//! with AES-256-GCM 1 KiB encrypts at 64 in flight on the 2-core CI machine, 5.4–5.7 KB were
//! written per ~409-byte record in sled (13.2–14.0×) and 650–720 bytes here (1.6–1.8×: each
//! sync also rewrites the partly filled last page and journals the new file size).
//!
//! # Files, in the store's directory under `audit/`
//!
//! - `live-<first seq, 20 digits>.jsonl`: segments, in chain order. The last one is written;
//!   a new one starts when it passes [`LiveLog::DEFAULT_ROLL_BYTES`] (before a group that has
//!   records) or when an archive sweep reaches it. Records and their checkpoints, each line
//!   exactly as an export writes it; a segment's first record is the seq its name says.
//! - `tail.json`: the tail ([`Tail`]) saved at a point of the chain: when the trail adopts its
//!   first audit key version (before the records it covers are written), after a key transition,
//!   when a segment starts, and by an import. The rest of the tail is read back from the lines
//!   after it, so opening reads only the last segment or two, never the whole hot trail.
//! - `anchor.json`: the archive anchor (the last segment file's closing checkpoint), moved by
//!   the archiver.
//! - `*.tmp`: a file being written before its rename; deleted when found at open.
//!
//! # Durability and failure
//!
//! An append is acknowledged only after its `fdatasync` returned: the writer completes its
//! callers then, so nothing is answered before its record is on disk. If the write or the sync
//! fails, the append fails (every caller of the group gets the error, and the server refuses
//! requests until a write succeeds again), and the bytes after the last acknowledged line are
//! cut before the next append: nothing unacknowledged ever precedes an acknowledged line.
//! Readers see acknowledged lines only (they stop at the length the last sync covered).
//!
//! # Crashes
//!
//! A crash (SIGKILL, power loss) can leave only the last append unfinished: the lines of one
//! group, perhaps with a line cut in two or a page of zeros among them. [`LiveLog::open`] reads
//! the last segment from the saved tail on, keeps every whole line that parses and continues
//! the chain, and cuts the file after the last of them ([`Recovered`] says how much). A whole
//! line that parses but does not continue the chain is not a torn write, and the log refuses to
//! open ([`StoreError::Corrupt`]) rather than drop anything after it. Renames are the only other
//! writes (a new `tail.json` or `anchor.json`, a swept segment, a replaced log) and each is
//! prepared in a `.tmp` file that is synced first, so a crash leaves the old file or the new.
//!
//! A group's records are acknowledged together or not at all, but after a crash a prefix of an
//! unacknowledged group may remain (as a record may remain of a call whose answer a crash
//! stopped): never part of a record, never a gap in the chain.
//!
//! # Archive
//!
//! The archiver copies the oldest records to its segment files as it does from a store, then
//! moves the anchor (`anchor.json`) and sweeps: segments wholly at or before the anchor are
//! deleted, and the one that straddles it is rewritten without its archived lines (the
//! current segment is first closed, so that the writer never touches a file being swept). A
//! crash during a sweep is finished at the next open: a segment whose successor starts at or
//! before the record after the anchor holds nothing hot and is deleted.
//!
//! # Several handles
//!
//! One [`LiveLog`] per store, shared: every audit writer and reader of the store uses the
//! store's one handle, whose mutex orders appends; the store's own directory lock keeps other
//! processes out.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::layout::{ANCHOR, ReadError, Stored, TAIL, Tail, Trusted, key_seq};
use super::trail::{Appended, LineTag, Lines, Token, Trail, line_bytes};
use super::{Checkpoint, GENESIS, Record};
use crate::store::{Batch, Entry, Store, StoreError, Tree};

const SEGMENT_PREFIX: &str = "live-";
const SEGMENT_SUFFIX: &str = ".jsonl";
const TAIL_FILE: &str = "tail.json";
const ANCHOR_FILE: &str = "anchor.json";
/// The tree tail a log was migrated from (see [`LiveLog::take_over_tree_trail`]).
const MIGRATED_FILE: &str = "migrated-from-tree";
const TMP_SUFFIX: &str = ".tmp";
/// A line longer than this is not one this code wrote (records are well under 1 KiB).
const MAX_LINE: usize = super::MAX_LINE_BYTES;
/// How much of a file a reader asks the kernel for at once.
const READ_CHUNK: usize = 256 * 1024;

/// What [`LiveLog::open`] had to do to a log left by a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The segment whose end was cut.
    pub segment: PathBuf,
    /// Bytes cut after the last whole line: an append that was never acknowledged.
    pub cut_bytes: u64,
    /// The last record kept: the chain continues after it.
    pub tail_seq: u64,
}

/// One segment file, open for reading (and, the last one, for appending).
#[derive(Clone)]
struct Segment {
    /// The seq its first record has (its name's number).
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes acknowledged: readers stop here, the next append writes here.
    len: u64,
}

struct State {
    /// In chain order; the last is written. Empty before the first record.
    segments: Vec<Segment>,
    tail: Tail,
    /// Bumped by every append and replacement: the token a conditional append compares.
    generation: u64,
    anchor: Option<(Checkpoint, Vec<u8>)>,
    /// A failed append may have left bytes after the last segment's `len`: cut them first.
    dirty: bool,
}

/// The live audit log of one embedded store. See the module documentation.
pub struct LiveLog {
    dir: PathBuf,
    roll_bytes: u64,
    state: Mutex<State>,
    /// One sweep at a time (the archivers of several logs on one store may race).
    sweeping: Mutex<()>,
    recovered: Option<Recovered>,
    /// Appends left that fail as if `fdatasync` had failed after the write (tests only).
    #[cfg(any(test, feature = "test-util"))]
    failing_syncs: std::sync::atomic::AtomicU32,
}

fn io(e: io::Error) -> StoreError {
    StoreError::Io(e)
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn segment_name(first: u64) -> String {
    format!("{SEGMENT_PREFIX}{first:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Audit records name principals and keys: owner only.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io)
}

fn open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Writes `bytes` to `dir/name` through a synced `.tmp` file and a rename, then syncs `dir`: a
/// crash leaves the old file or the new one.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut file = open_options().truncate(true).open(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, dir.join(name)).map_err(io)?;
    sync_dir(dir)
}

fn remove_if_there(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}

fn read_if_there(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// One line of a segment as read: where it starts, its bytes without `\n`, and whether it ended
/// with `\n` (a last line without one was cut).
struct RawLine {
    at: u64,
    bytes: Vec<u8>,
    whole: bool,
}

/// Reads a segment's lines up to `end` through positional reads (the file is shared).
struct LineReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    /// Where `buf` starts in the file.
    buf_at: u64,
}

impl LineReader {
    fn new(file: Arc<File>, end: u64) -> Self {
        Self {
            file,
            pos: 0,
            end,
            buf: Vec::new(),
            buf_at: 0,
        }
    }

    /// The next line, `None` at `end`.
    fn next_line(&mut self) -> Result<Option<RawLine>, StoreError> {
        let at = self.pos;
        if at >= self.end {
            return Ok(None);
        }
        loop {
            let start = usize::try_from(self.pos - self.buf_at).unwrap_or(usize::MAX);
            if let Some(i) = self
                .buf
                .get(start..)
                .and_then(|b| b.iter().position(|&c| c == b'\n'))
            {
                let bytes = self.buf[start..start + i].to_vec();
                self.pos += i as u64 + 1;
                return Ok(Some(RawLine {
                    at,
                    bytes,
                    whole: true,
                }));
            }
            let buffered_end = self.buf_at + self.buf.len() as u64;
            if buffered_end >= self.end || self.buf.len().saturating_sub(start) > MAX_LINE {
                // No line ending before the end (or a line no writer of this log makes).
                let bytes = self.buf.get(start..).unwrap_or_default().to_vec();
                self.pos = self.end;
                return Ok(Some(RawLine {
                    at,
                    bytes,
                    whole: false,
                }));
            }
            // Keep the unfinished line, read the next chunk after it.
            let keep = self.buf.split_off(start.min(self.buf.len()));
            self.buf = keep;
            self.buf_at = self.pos;
            let want = usize::try_from(self.end - buffered_end)
                .unwrap_or(usize::MAX)
                .min(READ_CHUNK);
            let old = self.buf.len();
            self.buf.resize(old + want, 0);
            let read = read_fully_at(&self.file, &mut self.buf[old..], buffered_end)?;
            self.buf.truncate(old + read);
            if read == 0 {
                // The file is shorter than `end` (it cannot be, but never loop).
                self.end = buffered_end;
            }
        }
    }
}

fn read_fully_at(file: &File, buf: &mut [u8], mut offset: u64) -> Result<usize, StoreError> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(done)
}

/// A line of a segment, parsed. (Not boxed: one is held at a time while a segment is read.)
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Record(Record, Vec<u8>),
    Checkpoint(Checkpoint, Vec<u8>),
}

impl Parsed {
    /// `None` for a line this log did not write whole (cut, zeros, another tag).
    fn of(line: &RawLine) -> Option<Self> {
        if !line.whole {
            return None;
        }
        let (tag, json) = LineTag::split(&line.bytes)?;
        match tag {
            LineTag::Record => serde_json::from_slice(&json)
                .ok()
                .map(|r| Self::Record(r, json)),
            LineTag::Checkpoint => serde_json::from_slice(&json)
                .ok()
                .map(|c| Self::Checkpoint(c, json)),
        }
    }

    fn seq(&self) -> u64 {
        match self {
            Self::Record(r, _) => r.seq,
            Self::Checkpoint(c, _) => c.seq,
        }
    }
}

/// The chain as the open reads it forward from a saved tail: the tail so far, checked line by
/// line.
struct Follow {
    tail: Tail,
}

impl Follow {
    /// Applies one line after the tail; `Err` names why it does not continue the chain.
    fn apply(&mut self, line: &Parsed) -> Result<(), String> {
        match line {
            Parsed::Record(r, _) => {
                if r.seq != self.tail.seq + 1 || r.prev != self.tail.hash {
                    return Err(format!(
                        "record {} does not continue the chain after record {}",
                        r.seq, self.tail.seq
                    ));
                }
                self.tail.hash = r.hash().map_err(|e| e.to_string())?;
                self.tail.seq = r.seq;
                if let Some(t) = &r.transition {
                    if self.tail.signers.is_empty() {
                        self.tail.signers.push(Trusted {
                            since: 0,
                            key_id: t.key_id.clone(),
                            version: t.from_version,
                            fingerprint: t.from_fingerprint.clone(),
                        });
                    }
                    self.tail.signers.push(Trusted {
                        since: r.seq,
                        key_id: t.key_id.clone(),
                        version: t.to_version,
                        fingerprint: t.to_fingerprint.clone(),
                    });
                }
            }
            Parsed::Checkpoint(cp, _) => {
                if cp.seq != self.tail.seq || cp.last_hash != self.tail.hash {
                    return Err(format!(
                        "a checkpoint for record {} does not match the chain at record {}",
                        cp.seq, self.tail.seq
                    ));
                }
                self.tail.checkpointed_seq = cp.seq;
                self.adopt_signer_of(cp);
            }
        }
        Ok(())
    }

    /// A trail whose tail names no audit key version yet (written before versions were
    /// tracked, or migrated so) takes the version of its first signed line.
    fn adopt_signer_of(&mut self, cp: &Checkpoint) {
        if self.tail.signers.is_empty()
            && let Some(fp) = &cp.key_fingerprint
        {
            self.tail.signers.push(Trusted {
                since: cp.seq,
                key_id: cp.key_id.clone(),
                version: cp.key_version,
                fingerprint: fp.clone(),
            });
        }
    }
}

impl LiveLog {
    /// A new segment starts once the current one holds this many bytes (about 70,000 records).
    pub const DEFAULT_ROLL_BYTES: u64 = 32 * 1024 * 1024;

    /// Opens (creating if needed) the live log in `dir`, finishing what a crash left (see the
    /// module documentation).
    ///
    /// # Errors
    /// File errors; [`StoreError::Corrupt`] when the files do not hold a trail that a crash
    /// could have left (a whole line that breaks the chain, a damaged segment before the last).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, Self::DEFAULT_ROLL_BYTES)
    }

    /// [`LiveLog::open`] with segments of about `roll_bytes` (tests make them small).
    ///
    /// # Errors
    /// As [`LiveLog::open`].
    pub fn open_with(dir: &Path, roll_bytes: u64) -> Result<Self, StoreError> {
        settle_replacement(dir)?;
        create_dir(dir)?;
        let (state, recovered) = load(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            roll_bytes: roll_bytes.max(1),
            state: Mutex::new(state),
            sweeping: Mutex::new(()),
            recovered,
            #[cfg(any(test, feature = "test-util"))]
            failing_syncs: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// What the open cut from a log left by a crash, if anything.
    #[must_use]
    pub fn recovered(&self) -> Option<&Recovered> {
        self.recovered.as_ref()
    }

    /// The directory of the log.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment files, in chain order (the last is the one written).
    #[must_use]
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.lock()
            .segments
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }

    /// The trail as [`Tree::Audit`] entries in key order (what the store's tree would hold):
    /// what a copy to another backend writes and a summary of the store hashes.
    ///
    /// # Errors
    /// File errors; a damaged segment.
    pub(crate) fn tree_entries(&self) -> Result<Vec<Entry>, StoreError> {
        Trail::entries(self)
    }

    /// Whether the log holds nothing: no line, no anchor, no saved tail.
    pub(crate) fn is_empty(&self) -> bool {
        let state = self.lock();
        state.tail.seq == 0
            && state.tail.signers.is_empty()
            && state.anchor.is_none()
            && state.segments.iter().all(|s| s.len == 0)
    }

    /// Makes the next `n` appends fail after writing their bytes, as if `fdatasync` had
    /// failed: what a failing disk does to the writer (tests of failing closed).
    #[cfg(any(test, feature = "test-util"))]
    pub fn fail_next_syncs(&self, n: u32) {
        self.failing_syncs
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(any(test, feature = "test-util"))]
    fn sync_fails(&self) -> bool {
        self.failing_syncs
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
    }

    #[cfg(not(any(test, feature = "test-util")))]
    #[allow(clippy::unused_self)]
    fn sync_fails(&self) -> bool {
        false
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a new segment for records from `first` on, saving the tail first so that an open
    /// reads from here.
    fn roll(&self, state: &mut State, first: u64) -> Result<(), StoreError> {
        save_tail(&self.dir, &state.tail)?;
        let path = self.dir.join(segment_name(first));
        let file = open_options().open(&path).map_err(io)?;
        // A file of that name can only be one a failed roll created: it holds nothing yet.
        file.set_len(0).map_err(io)?;
        file.sync_all().map_err(io)?;
        sync_dir(&self.dir)?;
        state.segments.push(Segment {
            first,
            path,
            file: Arc::new(file),
            len: 0,
        });
        Ok(())
    }

    /// Replaces the whole log with the trail `entries` hold ([`crate::store::Tree::Audit`]
    /// entries, as [`Trail::entries`] gives them): a restored backup, or a store's tree trail
    /// migrated here. Built beside the log and swapped in by renames, so a crash leaves the old
    /// log or the new one.
    ///
    /// # Errors
    /// The entries are not a whole trail ([`StoreError::Corrupt`]), or file errors; the log is
    /// unchanged then.
    pub(crate) fn replace_with(&self, entries: &[Entry]) -> Result<(), StoreError> {
        self.replace_marked(entries, None)
    }

    /// [`LiveLog::replace_with`], leaving `marker` in the new log's `migrated-from-tree` file.
    fn replace_marked(&self, entries: &[Entry], marker: Option<&[u8]>) -> Result<(), StoreError> {
        let _sweep = self.sweeping.lock().unwrap_or_else(PoisonError::into_inner);
        let mut state = self.lock();
        let staged = sibling(&self.dir, "new")?;
        if staged.exists() {
            fs::remove_dir_all(&staged).map_err(io)?;
        }
        create_dir(&staged)?;
        if let Some(marker) = marker {
            replace_file(&staged, MIGRATED_FILE, marker)?;
        }
        write_trail(&staged, entries)?;
        let old = sibling(&self.dir, "old")?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io)?;
        }
        fs::rename(&self.dir, &old).map_err(io)?;
        fs::rename(&staged, &self.dir).map_err(io)?;
        sync_dir(self.dir.parent().unwrap_or(Path::new(".")))?;
        fs::remove_dir_all(&old).map_err(io)?;
        let (loaded, _) = load(&self.dir)?;
        let generation = state.generation + 1;
        *state = loaded;
        state.generation = generation;
        Ok(())
    }
}

impl LiveLog {
    /// Moves a trail that `store` (the store this log belongs to) keeps in its
    /// [`crate::store::Tree::Audit`], as stores did before the live log, into this log, once:
    /// the log is built from the tree's entries (and marked with the tree's tail), then the
    /// tree's trail is deleted, its tail last. A crash before the log is in place leaves the tree
    /// as it was; one during the deletion is finished by the next open (the mark matches).
    ///
    /// # Errors
    /// Store or file errors; [`StoreError::Corrupt`] when the tree holds a trail and this log
    /// another one (a store used by an older version after its trail was moved): neither is
    /// dropped, and the store does not open until someone looks.
    pub(crate) fn take_over_tree_trail(&self, store: &dyn Store) -> Result<(), StoreError> {
        let Some(tree_tail) = store.get(Tree::Audit, TAIL)? else {
            return Ok(());
        };
        let migrated = read_if_there(&self.dir.join(MIGRATED_FILE))?;
        if migrated.as_deref() != Some(tree_tail.as_slice()) {
            if !self.is_empty() {
                return Err(corrupt(
                    "the store holds an audit trail in its audit tree and another in its live \
                     audit log (was it written by an older version after the trail moved?); \
                     neither is dropped",
                ));
            }
            let mut entries = store.scan_prefix(Tree::Audit, b"r")?;
            entries.extend(store.scan_prefix(Tree::Audit, b"c")?);
            entries.retain(|(k, _)| k.len() == 9 || k.len() == 17);
            entries.push((TAIL.to_vec(), tree_tail.clone()));
            if let Some(anchor) = store.get(Tree::Audit, ANCHOR)? {
                entries.push((ANCHOR.to_vec(), anchor));
            }
            self.replace_marked(&entries, Some(&tree_tail))?;
        }
        // The tree's copy, now in the log: deleted in small batches, the tail last.
        for prefix in [b"r".as_slice(), b"c".as_slice(), ANCHOR] {
            for chunk in store
                .scan_prefix(Tree::Audit, prefix)?
                .chunks(super::archive::SWEEP_BATCH)
            {
                let mut batch = Batch::new();
                for (key, _) in chunk {
                    batch.delete(Tree::Audit, key.clone());
                }
                store.apply(&batch)?;
            }
        }
        let mut batch = Batch::new();
        batch.delete(Tree::Audit, TAIL);
        store.apply(&batch)
    }
}

/// `dir` with `.kind` after its name (`audit.new`, `audit.old`).
fn sibling(dir: &Path, kind: &str) -> Result<PathBuf, StoreError> {
    let name = dir
        .file_name()
        .ok_or_else(|| corrupt("the audit log directory has no name"))?;
    let mut name = name.to_os_string();
    name.push(".");
    name.push(kind);
    Ok(dir.with_file_name(name))
}

/// Finishes or undoes a replacement a crash interrupted: `audit.old` present means the new log
/// was complete (it is renamed only once synced), so it is put in place if it is not yet;
/// `audit.new` alone was never complete and is dropped.
fn settle_replacement(dir: &Path) -> Result<(), StoreError> {
    let staged = sibling(dir, "new")?;
    let old = sibling(dir, "old")?;
    if old.exists() {
        if !dir.exists() {
            fs::rename(&staged, dir).map_err(io)?;
            sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
        }
        fs::remove_dir_all(&old).map_err(io)?;
    } else if staged.exists() {
        fs::remove_dir_all(&staged).map_err(io)?;
    }
    Ok(())
}

fn save_tail(dir: &Path, tail: &Tail) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(tail).map_err(|_| corrupt("audit tail"))?;
    replace_file(dir, TAIL_FILE, &bytes)
}

/// Writes a log holding the trail `entries` describe into the empty directory `dir`.
fn write_trail(dir: &Path, entries: &[Entry]) -> Result<(), StoreError> {
    let not_a_trail = |what: &str| corrupt(format!("not an audit trail: {what}"));
    let mut tail: Option<Tail> = None;
    let mut anchor: Option<(Checkpoint, Vec<u8>)> = None;
    let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut checkpoints: Vec<(u64, u64, Vec<u8>)> = Vec::new();
    for (key, value) in entries {
        if key.as_slice() == TAIL {
            tail = Some(serde_json::from_slice(value).map_err(|_| not_a_trail("the tail"))?);
        } else if key.as_slice() == ANCHOR {
            let cp = serde_json::from_slice(value).map_err(|_| not_a_trail("the anchor"))?;
            anchor = Some((cp, value.clone()));
        } else if key.first() == Some(&b'r') && key.len() == 9 {
            records.push((key_seq(key)?, value.clone()));
        } else if key.first() == Some(&b'c') && key.len() == 17 {
            let time = key
                .get(9..17)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| not_a_trail("a checkpoint key"))?;
            checkpoints.push((key_seq(key)?, time, value.clone()));
        } else {
            return Err(not_a_trail("a key of another kind"));
        }
    }
    let archived = anchor.as_ref().map_or(0, |(cp, _)| cp.seq);
    records.retain(|(seq, _)| *seq > archived);
    checkpoints.retain(|(seq, _, _)| *seq > archived);
    records.sort_by_key(|(seq, _)| *seq);
    checkpoints.sort_by_key(|(seq, time, _)| (*seq, *time));
    let tail_seq = tail.as_ref().map_or(0, |t| t.seq);
    let expected: Vec<u64> = (archived + 1..=tail_seq).collect();
    if records.iter().map(|(seq, _)| *seq).ne(expected) {
        return Err(not_a_trail(
            "its records after the anchor do not run one by one to its tail",
        ));
    }
    if let Some((_, bytes)) = &anchor {
        replace_file(dir, ANCHOR_FILE, bytes)?;
    }
    if let Some(t) = &tail {
        // The tail as it stood before its records: the open follows the lines from there
        // (and checks that they chain). Its key versions are the trail's own record of them.
        let start = Tail {
            seq: archived,
            hash: anchor
                .as_ref()
                .map_or_else(|| GENESIS.to_owned(), |(cp, _)| cp.last_hash.clone()),
            checkpointed_seq: archived,
            signers: t.signers.clone(),
        };
        save_tail(dir, &start)?;
    }
    if !records.is_empty() {
        let path = dir.join(segment_name(archived + 1));
        let file = open_options().open(&path).map_err(io)?;
        let mut out = io::BufWriter::with_capacity(READ_CHUNK, file);
        let mut cps = checkpoints.into_iter().peekable();
        for (seq, json) in &records {
            out.write_all(&line_bytes(LineTag::Record, json)?)
                .map_err(io)?;
            while let Some((_, _, cp)) = cps.next_if(|(s, _, _)| s == seq) {
                out.write_all(&line_bytes(LineTag::Checkpoint, &cp)?)
                    .map_err(io)?;
            }
        }
        if cps.next().is_some() {
            return Err(not_a_trail("a checkpoint past its last record"));
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
    }
    sync_dir(dir)
}

/// Reads the log in `dir`: the saved tail and anchor, the segments, and the lines after the
/// saved tail, cutting an unfinished last append.
fn load(dir: &Path) -> Result<(State, Option<Recovered>), StoreError> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) {
            remove_if_there(&entry.path())?;
        } else if let Some(first) = parse_segment_name(name) {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    let anchor = match read_if_there(&dir.join(ANCHOR_FILE))? {
        Some(bytes) => {
            let cp: Checkpoint = serde_json::from_slice(&bytes)
                .map_err(|_| corrupt("the audit archive anchor does not decode"))?;
            Some((cp, bytes))
        }
        None => None,
    };
    let archived = anchor.as_ref().map_or(0, |(cp, _)| cp.seq);
    // A segment whose successor starts at or before the first hot record holds nothing hot:
    // archived and left by a sweep a crash interrupted (or the original of one it rewrote).
    let mut changed = false;
    while firsts.len() > 1 && firsts[1] <= archived + 1 {
        remove_if_there(&dir.join(segment_name(firsts[0])))?;
        firsts.remove(0);
        changed = true;
    }
    if changed {
        sync_dir(dir)?;
    }
    let saved: Option<Tail> = match read_if_there(&dir.join(TAIL_FILE))? {
        Some(bytes) => Some(
            serde_json::from_slice(&bytes)
                .map_err(|_| corrupt("the saved audit tail does not decode"))?,
        ),
        None => None,
    };
    let mut segments = Vec::with_capacity(firsts.len());
    for first in firsts {
        let path = dir.join(segment_name(first));
        let file = open_options().open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        segments.push(Segment {
            first,
            path,
            file: Arc::new(file),
            len,
        });
    }
    // Follow the chain from the saved tail, or from the anchor (or the genesis) when none was
    // saved or the anchor has moved past it.
    let from_anchor = || {
        let mut follow = Follow {
            tail: Tail {
                seq: archived,
                hash: anchor
                    .as_ref()
                    .map_or_else(|| GENESIS.to_owned(), |(cp, _)| cp.last_hash.clone()),
                checkpointed_seq: archived,
                signers: saved
                    .as_ref()
                    .map(|t| t.signers.clone())
                    .unwrap_or_default(),
            },
        };
        if let Some((cp, _)) = &anchor {
            follow.adopt_signer_of(cp);
        }
        follow
    };
    let mut follow = match &saved {
        Some(t) if t.seq >= archived => Follow { tail: t.clone() },
        Some(_) | None => from_anchor(),
    };
    let start = follow.tail.seq;
    let count = segments.len();
    let mut recovered = None;
    let mut reached = false;
    // The segments that can hold lines after `start`: from the last one starting at or before
    // it.
    let from = segments
        .iter()
        .rposition(|s| s.first <= start.max(1))
        .unwrap_or(0);
    for (i, segment) in segments.iter_mut().enumerate().skip(from) {
        let last = i + 1 == count;
        let mut lines = LineReader::new(Arc::clone(&segment.file), segment.len);
        let mut cut_at = None;
        while let Some(raw) = lines.next_line()? {
            let Some(line) = Parsed::of(&raw) else {
                if last {
                    cut_at = Some(raw.at);
                    break;
                }
                return Err(corrupt(format!(
                    "audit segment {} is damaged at byte {} (not a whole audit line)",
                    segment.path.display(),
                    raw.at
                )));
            };
            // Lines up to the saved tail were acknowledged before it was saved; from the first
            // record after it, every line must continue the chain.
            if !reached {
                match &line {
                    Parsed::Record(r, _) if r.seq <= start => {
                        if r.seq == start
                            && r.hash().ok().as_deref() != Some(follow.tail.hash.as_str())
                        {
                            return Err(corrupt(format!(
                                "audit record {start} in {} is not the one the saved tail \
                                 names",
                                segment.path.display()
                            )));
                        }
                        continue;
                    }
                    Parsed::Checkpoint(cp, _) if cp.seq < start => continue,
                    Parsed::Record(..) => reached = true,
                    Parsed::Checkpoint(..) => {}
                }
            }
            if let Err(why) = follow.apply(&line) {
                return Err(corrupt(format!(
                    "audit segment {} at byte {}: {why}",
                    segment.path.display(),
                    raw.at
                )));
            }
        }
        if let Some(at) = cut_at {
            segment.file.set_len(at).map_err(io)?;
            segment.file.sync_all().map_err(io)?;
            recovered = Some(Recovered {
                segment: segment.path.clone(),
                cut_bytes: segment.len - at,
                tail_seq: follow.tail.seq,
            });
            segment.len = at;
        }
    }
    if follow.tail.seq < start {
        return Err(corrupt("the audit log ends before its saved tail"));
    }
    Ok((
        State {
            segments,
            tail: follow.tail,
            generation: 0,
            anchor,
            dirty: false,
        },
        recovered,
    ))
}

impl Trail for LiveLog {
    fn tail(&self) -> Result<(Tail, Token), StoreError> {
        let state = self.lock();
        Ok((
            state.tail.clone(),
            Some(state.generation.to_be_bytes().to_vec()),
        ))
    }

    fn append(&self, expected: Token, lines: &[Appended], tail: &Tail) -> Result<(), StoreError> {
        let mut state = self.lock();
        if expected.as_deref() != Some(state.generation.to_be_bytes().as_slice()) {
            return Err(StoreError::Conflict { tree: Tree::Audit });
        }
        if state.dirty {
            // What a failed append wrote after the acknowledged end.
            if let Some(current) = state.segments.last() {
                current.file.set_len(current.len).map_err(io)?;
                current.file.sync_data().map_err(io)?;
            }
            state.dirty = false;
        }
        let first_record = lines.iter().find_map(|l| match l {
            Appended::Record { seq, .. } => Some(*seq),
            Appended::Checkpoint { .. } => None,
        });
        let transitions = lines.iter().any(|l| match l {
            Appended::Record { json, .. } => is_transition(json),
            Appended::Checkpoint { .. } => false,
        });
        // A version adopted without a line saying so: saved before the lines it covers, or a
        // crash would lose which version the trail started from.
        if tail.signers != state.tail.signers && !transitions {
            let adopted = Tail {
                signers: tail.signers.clone(),
                ..state.tail.clone()
            };
            save_tail(&self.dir, &adopted)?;
            state.tail.signers.clone_from(&tail.signers);
        }
        // A new segment before a group with records once the current one is full, and before
        // anything when there is none (a log replaced by a trail whose records are all
        // archived holds no segment: its next checkpoint still needs a file).
        let full = state
            .segments
            .last()
            .is_none_or(|s| s.len >= self.roll_bytes);
        if state.segments.is_empty() || (full && first_record.is_some()) {
            let next = first_record.unwrap_or(state.tail.seq + 1);
            self.roll(&mut state, next)?;
        }
        let mut bytes = Vec::with_capacity(lines.len() * 512);
        for line in lines {
            let (tag, json) = match line {
                Appended::Record { json, .. } => (LineTag::Record, json),
                Appended::Checkpoint { json, .. } => (LineTag::Checkpoint, json),
            };
            bytes.extend_from_slice(&line_bytes(tag, json)?);
        }
        let Some(current) = state.segments.last() else {
            return Err(corrupt("the audit log has no segment to append to"));
        };
        let at = current.len;
        let written = current
            .file
            .write_all_at(&bytes, at)
            .and_then(|()| {
                if self.sync_fails() {
                    Err(io::Error::other("fdatasync failed (injected by a test)"))
                } else {
                    Ok(())
                }
            })
            .and_then(|()| current.file.sync_data());
        if let Err(e) = written {
            state.dirty = true;
            return Err(io(e));
        }
        if let Some(current) = state.segments.last_mut() {
            current.len = at + bytes.len() as u64;
        }
        state.tail = tail.clone();
        state.generation += 1;
        if transitions {
            // Best effort: the transition lines are durable, and an open finds them after an
            // older saved tail too; saving only shortens what it reads.
            let _ = save_tail(&self.dir, &state.tail);
        }
        Ok(())
    }

    fn anchor(&self) -> Result<Option<(Checkpoint, Vec<u8>)>, StoreError> {
        Ok(self.lock().anchor.clone())
    }

    fn move_anchor(
        &self,
        expected: Option<Vec<u8>>,
        closing: &Checkpoint,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.anchor.as_ref().map(|(_, bytes)| bytes) != expected.as_ref() {
            return Err(StoreError::Conflict { tree: Tree::Audit });
        }
        let bytes = serde_json::to_vec(closing).map_err(|_| corrupt("audit archive anchor"))?;
        replace_file(&self.dir, ANCHOR_FILE, &bytes)?;
        state.anchor = Some((closing.clone(), bytes));
        Ok(())
    }

    fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let segments = self.lock().segments.clone();
        let Some(i) = segments.iter().rposition(|s| s.first <= seq) else {
            return Ok(None);
        };
        for segment in &segments[i..] {
            let mut lines = LineReader::new(Arc::clone(&segment.file), segment.len);
            while let Some(raw) = lines.next_line()? {
                if let Some(Parsed::Record(r, json)) = Parsed::of(&raw) {
                    if r.seq == seq {
                        return Ok(Some(json));
                    }
                    if r.seq > seq {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(None)
    }

    fn read(&self, first: u64, last: u64) -> Result<Lines<'_>, StoreError> {
        if first > last {
            return Ok(Box::new(std::iter::empty()));
        }
        let segments = self.lock().segments.clone();
        let from = segments.iter().rposition(|s| s.first <= first);
        let segments = match from {
            Some(i) => segments[i..].to_vec(),
            // Swept: the records asked for are no longer here.
            None => Vec::new(),
        };
        Ok(Box::new(LiveReader {
            segments: segments.into_iter(),
            lines: None,
            next_seq: first,
            last,
            started: false,
            done: false,
        }))
    }

    fn sweep(&self, archived: u64) -> Result<(), StoreError> {
        let _sweep = self.sweeping.lock().unwrap_or_else(PoisonError::into_inner);
        let all = {
            let mut state = self.lock();
            // The segment being written holds archived records: close it, so that it can be
            // swept like the others (the writer only ever writes the last segment).
            let next = state.tail.seq + 1;
            if state
                .segments
                .last()
                .is_some_and(|s| s.first <= archived && s.len > 0)
            {
                self.roll(&mut state, next)?;
            }
            state.segments.clone()
        };
        // Every segment but the one being written, with the seq of its last record.
        for pair in all.windows(2) {
            let (segment, end) = (&pair[0], pair[1].first.saturating_sub(1));
            if segment.first > archived {
                break;
            }
            // Wholly archived: deleted. Straddling the anchor: its hot lines move to a new
            // segment first.
            let replacement = if end <= archived {
                None
            } else {
                Some(self.rewrite_after(segment, archived)?)
            };
            let mut state = self.lock();
            state.segments.retain(|s| s.first != segment.first);
            if let Some(new) = replacement {
                let at = state
                    .segments
                    .iter()
                    .position(|s| s.first > new.first)
                    .unwrap_or(state.segments.len());
                state.segments.insert(at, new);
            }
            drop(state);
            remove_if_there(&segment.path)?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        let (segments, tail, anchor) = {
            let state = self.lock();
            (
                state.segments.clone(),
                state.tail.clone(),
                state.anchor.clone(),
            )
        };
        let mut entries = Vec::new();
        if let Some((_, bytes)) = anchor {
            entries.push((ANCHOR.to_vec(), bytes));
        }
        if tail.seq > 0 || !tail.signers.is_empty() {
            entries.push((
                TAIL.to_vec(),
                serde_json::to_vec(&tail).map_err(|_| corrupt("audit tail"))?,
            ));
        }
        for segment in &segments {
            let mut lines = LineReader::new(Arc::clone(&segment.file), segment.len);
            while let Some(raw) = lines.next_line()? {
                match Parsed::of(&raw) {
                    Some(Parsed::Record(r, json)) => {
                        entries.push((super::layout::record_key(r.seq), json));
                    }
                    Some(Parsed::Checkpoint(cp, json)) => {
                        entries.push((super::layout::checkpoint_key(cp.seq, cp.time_ms), json));
                    }
                    None => {
                        return Err(corrupt(format!(
                            "audit segment {} is damaged at byte {}",
                            segment.path.display(),
                            raw.at
                        )));
                    }
                }
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    fn held(&self) -> Result<u64, StoreError> {
        let segments = self.lock().segments.clone();
        let mut held = 0;
        for segment in &segments {
            let mut lines = LineReader::new(Arc::clone(&segment.file), segment.len);
            while let Some(raw) = lines.next_line()? {
                if raw.bytes.starts_with(LineTag::Record.prefix()) {
                    held += 1;
                }
            }
        }
        Ok(held)
    }
}

impl LiveLog {
    /// Writes the lines of `segment` after record `archived` to a new segment named for the
    /// record after it, and returns it (the caller drops the old one).
    fn rewrite_after(&self, segment: &Segment, archived: u64) -> Result<Segment, StoreError> {
        let first = archived + 1;
        let name = segment_name(first);
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let file = open_options().truncate(true).open(&tmp).map_err(io)?;
        let mut out = io::BufWriter::with_capacity(READ_CHUNK, file);
        let mut lines = LineReader::new(Arc::clone(&segment.file), segment.len);
        while let Some(raw) = lines.next_line()? {
            let Some(line) = Parsed::of(&raw) else {
                return Err(corrupt(format!(
                    "audit segment {} is damaged at byte {}",
                    segment.path.display(),
                    raw.at
                )));
            };
            if line.seq() > archived {
                out.write_all(&raw.bytes).map_err(io)?;
                out.write_all(b"\n").map_err(io)?;
            }
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let path = self.dir.join(&name);
        fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&self.dir)?;
        Ok(Segment {
            first,
            path,
            file: Arc::new(file),
            len,
        })
    }
}

/// Whether a record's JSON carries a key transition (the field is absent on every other
/// record; a string value cannot hold the unescaped quotes).
fn is_transition(json: &[u8]) -> bool {
    json.windows(b"\"transition\":{".len())
        .any(|w| w == b"\"transition\":{")
}

/// [`Trail::read`] over a snapshot of the segments.
struct LiveReader {
    segments: std::vec::IntoIter<Segment>,
    lines: Option<LineReader>,
    /// The record expected next.
    next_seq: u64,
    last: u64,
    /// The range's first record has been yielded.
    started: bool,
    done: bool,
}

impl LiveReader {
    fn step(&mut self) -> Result<Option<Stored>, ReadError> {
        loop {
            let line = match &mut self.lines {
                Some(lines) => lines.next_line()?,
                None => None,
            };
            let Some(raw) = line else {
                match self.segments.next() {
                    Some(s) => {
                        self.lines = Some(LineReader::new(s.file, s.len));
                        continue;
                    }
                    None if self.next_seq > self.last => return Ok(None),
                    None => return Err(ReadError::Missing(self.next_seq)),
                }
            };
            let Some(line) = Parsed::of(&raw) else {
                return Err(ReadError::Store(corrupt(format!(
                    "an audit segment is damaged at byte {}",
                    raw.at
                ))));
            };
            match line {
                Parsed::Record(r, json) => {
                    if r.seq < self.next_seq {
                        continue;
                    }
                    if self.next_seq > self.last {
                        return Ok(None);
                    }
                    if r.seq != self.next_seq {
                        return Err(ReadError::Missing(self.next_seq));
                    }
                    self.next_seq += 1;
                    self.started = true;
                    return Ok(Some(Stored::Record(r.seq, json)));
                }
                // A checkpoint over the record just yielded; others are outside the range
                // (before its first record).
                Parsed::Checkpoint(cp, json) => {
                    if self.started && cp.seq + 1 == self.next_seq {
                        return Ok(Some(Stored::Checkpoint(json)));
                    }
                }
            }
        }
    }
}

impl Iterator for LiveReader {
    type Item = Result<Stored, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = self.step();
        self.done = !matches!(step, Ok(Some(_)));
        step.transpose()
    }
}

#[cfg(test)]
mod tests;
