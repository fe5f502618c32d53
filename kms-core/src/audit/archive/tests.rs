//! Archive segments on the memory store and on a real sled store in a temporary directory.

use std::collections::BTreeSet;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Barrier, Mutex};
use std::time::Instant;

use tempfile::TempDir;

use super::*;
use crate::audit::layout::{record_key, sign_with_newest};
use crate::audit::trail::Trail;
use crate::audit::writer::CheckpointPolicy;
use crate::audit::{Event, Operation, Outcome, Role, Start, VerifiedFiles, verify, verify_files};
use crate::crypto::PublicKey;
use crate::store::{Batch, Entry, MemoryStore, SledStore, Tree};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Sled,
}

/// A fresh SM2 audit key: a signer (as `Kms::audit_signer`) that returns `None` while `sealed`
/// is set, and the public half.
fn audit_key() -> (Signer, PublicKey, Arc<AtomicBool>) {
    let (inner, public) = crate::audit::writer::ephemeral_signer("audit-key").unwrap();
    let sealed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&sealed);
    let signer: Signer = Arc::new(Sealable {
        inner,
        sealed: flag,
    });
    (signer, public, sealed)
}

/// A signer that cannot sign while `sealed` is set, as the KMS audit key cannot.
struct Sealable {
    inner: Signer,
    sealed: Arc<AtomicBool>,
}

impl crate::audit::writer::AuditSigner for Sealable {
    fn newest(&self) -> Option<crate::audit::writer::SigningKey> {
        self.inner.newest()
    }

    fn sign(&self, version: u32, message: &[u8]) -> Option<Vec<u8>> {
        if self.sealed.load(Ordering::SeqCst) {
            return None;
        }
        self.inner.sign(version, message)
    }
}

fn event(i: u64) -> Event {
    Event {
        request_id: format!("r{i}"),
        principal: "app-a".into(),
        role: Role::App,
        operation: Operation::Encrypt,
        key_id: Some("k".into()),
        key_version: Some(1),
        outcome: Outcome::Ok,
        context_hmac: None,
        flags: vec![],
        transport: None,
        traceparent: None,
        transfer: None,
        batch_id: None,
        pepper: None,
        count: None,
    }
}

/// A store with an audit log writing to it (a checkpoint every 7 records), and a directory for
/// segments that does not exist yet.
struct Node {
    store: Arc<dyn Store>,
    /// Where the store keeps its trail (its tree, or its live log).
    trail: Arc<dyn Trail>,
    log: AuditLog,
    signer: Signer,
    public: PublicKey,
    sealed: Arc<AtomicBool>,
    dir: PathBuf,
    _tmp: TempDir,
}

impl Node {
    fn new(backend: Backend) -> Self {
        Self::on(backend, None)
    }

    fn on(backend: Backend, store: Option<Arc<dyn Store>>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let store = store.unwrap_or_else(|| match backend {
            Backend::Memory => Arc::new(MemoryStore::new()),
            Backend::Sled => Arc::new(SledStore::open(&tmp.path().join("store")).unwrap()),
        });
        let (signer, public, sealed) = audit_key();
        let log = AuditLog::start(
            Arc::clone(&store),
            "n1",
            Arc::clone(&signer),
            CheckpointPolicy {
                every_records: 7,
                every: Duration::from_secs(3600),
            },
        );
        Self {
            trail: trail_of(&store),
            store,
            log,
            signer,
            public,
            sealed,
            dir: tmp.path().join("archive").join("audit"),
            _tmp: tmp,
        }
    }

    fn append(&self, n: u64) {
        for i in 0..n {
            self.log.append_blocking(event(i)).unwrap();
        }
    }

    fn policy(&self, hot: u64, segment: u64) -> ArchivePolicy {
        ArchivePolicy {
            dir: self.dir.clone(),
            hot_records: hot,
            segment_records: segment,
            every: Duration::from_millis(20),
        }
    }

    fn archive(&self, policy: &ArchivePolicy) -> ArchiveOutcome {
        self.log.archive_once(policy).unwrap()
    }

    fn anchor(&self) -> Option<Checkpoint> {
        self.trail.anchor().unwrap().map(|(cp, _)| cp)
    }

    /// The seqs of the records (`r`) or checkpoints (`c`) the trail holds, as the keys of its
    /// tree layout name them.
    fn seqs(&self, prefix: &[u8]) -> Vec<u64> {
        self.trail
            .entries()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.len() > 8)
            .map(|(k, _)| super::super::layout::key_seq(k).unwrap())
            .collect()
    }

    /// The record seqs in the store.
    fn records(&self) -> Vec<u64> {
        self.seqs(b"r")
    }

    /// The checkpoint seqs in the store.
    fn checkpoints(&self) -> Vec<u64> {
        self.seqs(b"c")
    }

    /// The segment files, in chain order.
    fn segments(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
        files.sort();
        files
    }

    /// Every file in the directory that is not a segment.
    fn strays(&self) -> Vec<String> {
        fs::read_dir(&self.dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".jsonl"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The segment files then `export`, verified as one trail from the genesis.
    fn verify_all(&self, export: &str) -> VerifiedFiles {
        let mut files: Vec<(String, Box<dyn BufRead>)> = self
            .segments()
            .into_iter()
            .map(|p| {
                let reader: Box<dyn BufRead> = Box::new(BufReader::new(File::open(&p).unwrap()));
                (p.display().to_string(), reader)
            })
            .collect();
        files.push(("export".into(), Box::new(export.as_bytes())));
        verify_files(files, &self.public, Start::Genesis).unwrap()
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

fn parse(line: &str) -> Line {
    serde_json::from_str(line).unwrap()
}

fn first_line(text: &str) -> Line {
    parse(text.lines().next().unwrap())
}

fn last_line(text: &str) -> Line {
    parse(text.lines().last().unwrap())
}

fn expect_segment(outcome: &ArchiveOutcome) -> &SegmentInfo {
    outcome
        .segment()
        .unwrap_or_else(|| panic!("expected a segment, got {outcome:?}"))
}

// ---------------------------------------------------------------------------------------------

fn first_segment_verifies_on_its_own_and_leaves_the_store(backend: Backend) {
    let node = Node::new(backend);
    node.append(60);
    let policy = node.policy(25, 20);
    let outcome = node.archive(&policy);
    let s = expect_segment(&outcome);
    assert_eq!((s.first, s.last), (1, 20));
    assert_eq!(
        s.path,
        node.dir
            .join("audit-00000000000000000001-00000000000000000020.jsonl")
    );
    assert_eq!(s.superseded, None);

    // The file alone verifies: it starts at the genesis and closes over record 20.
    let text = read(&s.path);
    let v = verify(&text, &node.public).unwrap();
    assert_eq!(v.records, 20);
    assert_eq!(v.last_seq, 20);
    assert_eq!(v.anchor, None);
    assert_eq!(v.last_hash, s.closing.last_hash);
    assert!(
        v.checkpoints >= 3,
        "the writer's checkpoints at 7 and 14 and the closing one"
    );
    assert!(matches!(first_line(&text), Line::Record(r) if r.seq == 1));
    assert_eq!(last_line(&text), Line::Checkpoint(s.closing.clone()));
    assert!(s.closing.closes_export);
    for line in text.lines() {
        let seq = match parse(line) {
            Line::Record(r) => r.seq,
            Line::Checkpoint(c) => c.seq,
        };
        assert!((1..=20).contains(&seq), "line for {seq} in segment 1-20");
    }

    // The store keeps 21..=60 only, and the anchor is the segment's closing checkpoint.
    assert_eq!(node.records(), (21..=60).collect::<Vec<_>>());
    assert!(
        node.checkpoints().iter().all(|&c| c > 20),
        "{:?}",
        node.checkpoints()
    );
    assert!(!node.checkpoints().is_empty());
    assert_eq!(node.anchor().as_ref(), Some(&s.closing));
    assert!(node.strays().is_empty(), "{:?}", node.strays());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&node.dir),
            0o700,
            "the archive directory is owner only"
        );
        assert_eq!(mode(&s.path), 0o600, "segment files are owner only");
    }

    // 40 hot records are within 25? No: one more segment, then under the limit.
    let s2 = node.archive(&policy);
    assert_eq!(expect_segment(&s2).last, 40);
    assert_eq!(
        node.archive(&policy),
        ArchiveOutcome::UnderLimit { hot: 20 }
    );
}

#[test]
fn first_segment_verifies_on_its_own_and_leaves_the_store_memory() {
    first_segment_verifies_on_its_own_and_leaves_the_store(Backend::Memory);
}

#[test]
fn first_segment_verifies_on_its_own_and_leaves_the_store_sled() {
    first_segment_verifies_on_its_own_and_leaves_the_store(Backend::Sled);
}

fn segments_and_the_export_chain_from_the_genesis(backend: Backend) {
    let node = Node::new(backend);
    node.append(100);
    let policy = node.policy(25, 20);
    let mut ends = Vec::new();
    loop {
        match node.archive(&policy) {
            ArchiveOutcome::Archived(s) => ends.push((s.first, s.last)),
            ArchiveOutcome::UnderLimit { hot } => {
                assert_eq!(hot, 20);
                break;
            }
            other @ (ArchiveOutcome::Disabled
            | ArchiveOutcome::Sealed
            | ArchiveOutcome::LostRace) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ends, vec![(1, 20), (21, 40), (41, 60), (61, 80)]);

    // Each file starts with the closing line of the one before, byte for byte.
    let files = node.segments();
    assert_eq!(files.len(), 4);
    for pair in files.windows(2) {
        let (before, after) = (read(&pair[0]), read(&pair[1]));
        assert_eq!(
            before.lines().last().unwrap(),
            after.lines().next().unwrap(),
            "{} does not start where {} ends",
            pair[1].display(),
            pair[0].display()
        );
    }

    // The export starts with the anchor, the last segment's closing checkpoint.
    let export = node.log.export().unwrap();
    let anchor = node.anchor().unwrap();
    assert_eq!(anchor.seq, 80);
    assert_eq!(first_line(&export), Line::Checkpoint(anchor.clone()));
    assert_eq!(
        export.lines().next().unwrap(),
        read(&files[3]).lines().last().unwrap()
    );
    assert!(matches!(parse(export.lines().nth(1).unwrap()), Line::Record(r) if r.seq == 81));
    let alone = verify(&export, &node.public).unwrap();
    assert_eq!(alone.anchor, Some(anchor));
    assert_eq!((alone.records, alone.last_seq), (20, 100));

    let all = node.verify_all(&export);
    assert!(all.complete_from_genesis);
    assert_eq!((all.first_seq, all.last_seq, all.records), (1, 100, 100));
}

#[test]
fn segments_and_the_export_chain_from_the_genesis_memory() {
    segments_and_the_export_chain_from_the_genesis(Backend::Memory);
}

#[test]
fn segments_and_the_export_chain_from_the_genesis_sled() {
    segments_and_the_export_chain_from_the_genesis(Backend::Sled);
}

/// Two runs start together, again and again, on one store and one directory (as two nodes
/// sharing a database and a volume would): each range is archived by exactly one of them, and
/// the loser leaves nothing behind.
fn racing_archivers_archive_each_range_once(backend: Backend) {
    const ROUNDS: u64 = 12;
    let node = Node::new(backend);
    let other = AuditLog::start(
        Arc::clone(&node.store),
        "n2",
        Arc::clone(&node.signer),
        CheckpointPolicy::default(),
    );
    node.append(25);
    let policy = node.policy(25, 5);
    for round in 1..=ROUNDS {
        node.append(5);
        let barrier = Barrier::new(2);
        let outcomes: Vec<ArchiveOutcome> = std::thread::scope(|s| {
            let runs: Vec<_> = [&node.log, &other]
                .into_iter()
                .map(|log| {
                    let (barrier, policy) = (&barrier, &policy);
                    s.spawn(move || {
                        barrier.wait();
                        log.archive_once(policy).unwrap()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let won: Vec<&SegmentInfo> = outcomes
            .iter()
            .filter_map(ArchiveOutcome::segment)
            .collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one winner: {outcomes:?}"
        );
        assert_eq!((won[0].first, won[0].last), (round * 5 - 4, round * 5));
        assert!(
            outcomes.iter().all(|o| matches!(
                o,
                ArchiveOutcome::Archived(_)
                    | ArchiveOutcome::LostRace
                    | ArchiveOutcome::UnderLimit { hot: 25 }
            )),
            "round {round}: {outcomes:?}"
        );
        assert_eq!(node.segments().len() as u64, round);
        assert!(
            node.strays().is_empty(),
            "round {round}: {:?}",
            node.strays()
        );
        assert_eq!(
            node.records(),
            (round * 5 + 1..=round * 5 + 25).collect::<Vec<_>>()
        );
        assert_eq!(node.anchor().as_ref(), Some(&won[0].closing));
        // The winner's file closes with the anchor the store now holds.
        assert_eq!(
            last_line(&read(&won[0].path)),
            Line::Checkpoint(won[0].closing.clone())
        );
    }
    other.stop();
    let all = node.verify_all(&node.log.export().unwrap());
    assert_eq!(
        (all.records, all.last_seq),
        (25 + 5 * ROUNDS, 25 + 5 * ROUNDS)
    );
}

#[test]
fn racing_archivers_archive_each_range_once_memory() {
    racing_archivers_archive_each_range_once(Backend::Memory);
}

#[test]
fn racing_archivers_archive_each_range_once_sled() {
    racing_archivers_archive_each_range_once(Backend::Sled);
}

#[test]
fn a_sealed_kms_archives_nothing_until_unsealed() {
    let node = Node::new(Backend::Memory);
    node.append(40);
    let policy = node.policy(25, 10);
    node.sealed.store(true, Ordering::SeqCst);
    assert_eq!(node.archive(&policy), ArchiveOutcome::Sealed);
    assert!(!node.dir.exists(), "nothing is written while sealed");
    assert_eq!(node.records(), (1..=40).collect::<Vec<_>>());
    assert_eq!(node.anchor(), None);

    node.sealed.store(false, Ordering::SeqCst);
    assert_eq!(expect_segment(&node.archive(&policy)).last, 10);
}

/// Appends keep coming from two writers while the archiver thread runs: nothing newer than a
/// segment is touched, and the segments and the export hold every record exactly once.
fn records_appended_while_archiving_are_untouched(backend: Backend) {
    let node = Node::new(backend);
    let second = AuditLog::start(
        Arc::clone(&node.store),
        "n2",
        Arc::clone(&node.signer),
        CheckpointPolicy {
            every_records: 5,
            every: Duration::from_secs(3600),
        },
    );
    let policy = node.policy(20, 8);
    let archived = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&archived);
    let archiver = node
        .log
        .start_archiver(
            policy,
            Arc::new(move |outcome| match outcome {
                Ok(ArchiveOutcome::Archived(_)) => {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(e) => panic!("archiving failed: {e}"),
            }),
        )
        .unwrap();
    assert!(archiver.running());
    std::thread::scope(|s| {
        for log in [&node.log, &second] {
            s.spawn(move || {
                for i in 0..150 {
                    log.append_blocking(event(i)).unwrap();
                    if i % 10 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            });
        }
    });
    // The archiver catches up: at most 20 hot records after its next look.
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.records().len() > 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    archiver.stop();
    second.stop();
    assert!(!archiver.running());
    let hot = node.records();
    assert!(
        hot.len() <= 20 && !hot.is_empty(),
        "{} hot records",
        hot.len()
    );
    let anchor = node.anchor().unwrap();
    assert_eq!(
        hot,
        (anchor.seq + 1..=300).collect::<Vec<_>>(),
        "every record after the anchor is in the store"
    );
    assert!(archived.load(Ordering::SeqCst) >= 35);
    let all = node.verify_all(&node.log.export().unwrap());
    assert_eq!((all.records, all.last_seq), (300, 300));
    assert_eq!(all.records_by_node.get("n1"), Some(&150));
    assert_eq!(all.records_by_node.get("n2"), Some(&150));
}

#[test]
fn records_appended_while_archiving_are_untouched_memory() {
    records_appended_while_archiving_are_untouched(Backend::Memory);
}

#[test]
fn records_appended_while_archiving_are_untouched_sled() {
    records_appended_while_archiving_are_untouched(Backend::Sled);
}

/// The steps of a run up to the batch, without the batch: what a crash before it leaves.
fn written_not_committed(node: &Node, first: u64, last: u64) -> (PathBuf, Checkpoint) {
    let anchor = node.anchor();
    let bytes = node.trail.record(last).unwrap().unwrap();
    let hash = serde_json::from_slice::<Record>(&bytes)
        .unwrap()
        .hash()
        .unwrap();
    let closing = sign_with_newest(&node.signer, Format::CURRENT, "n1", last, &hash, true)
        .unwrap()
        .unwrap();
    ensure_dir(&node.dir).unwrap();
    let partial = match write_segment(
        &*node.trail,
        &node.dir,
        anchor.as_ref(),
        first,
        last,
        &closing,
    ) {
        Ok(p) => p,
        Err(SegmentError::Missing(seq)) => panic!("record {seq} missing"),
        Err(SegmentError::Archive(e)) => panic!("{e}"),
    };
    (partial, closing)
}

/// A run died after writing its file but before its batch, even after naming the file (the
/// order the partial name exists to avoid): the next run archives the range again, its file
/// replaces the old one, and the leftovers go.
fn a_crash_before_the_batch_is_harmless(backend: Backend) {
    let node = Node::new(backend);
    node.append(30);
    let policy = node.policy(25, 5);
    let (partial, _) = written_not_committed(&node, 1, 5);
    let (named, _) = written_not_committed(&node, 1, 5);
    let path = node.dir.join(segment_file_name(1, 5));
    fs::rename(&named, &path).unwrap();
    assert_eq!(node.anchor(), None, "no batch: the store is unchanged");
    assert_eq!(node.records().len(), 30);

    let outcome = node.archive(&policy);
    let s = expect_segment(&outcome);
    assert_eq!((s.first, s.last, &s.path), (1, 5, &path));
    assert_eq!(s.superseded, None, "the old file was of the same chain");
    assert_eq!(last_line(&read(&path)), Line::Checkpoint(s.closing.clone()));
    assert!(!partial.exists(), "the stale partial file is gone");
    assert!(node.strays().is_empty(), "{:?}", node.strays());
    assert_eq!(node.records(), (6..=30).collect::<Vec<_>>());
    let all = node.verify_all(&node.log.export().unwrap());
    assert_eq!(all.records, 30);
}

#[test]
fn a_crash_before_the_batch_is_harmless_memory() {
    a_crash_before_the_batch_is_harmless(Backend::Memory);
}

#[test]
fn a_crash_before_the_batch_is_harmless_sled() {
    a_crash_before_the_batch_is_harmless(Backend::Sled);
}

/// A run died after its batch but before naming its file and sweeping: the next run names the
/// file and deletes the archived records.
fn a_crash_after_the_batch_is_finished_by_the_next_run(backend: Backend) {
    let node = Node::new(backend);
    node.append(30);
    let policy = node.policy(25, 5);
    let (partial, closing) = written_not_committed(&node, 1, 5);
    commit(&*node.trail, None, &closing).unwrap();
    assert_eq!(node.records().len(), 30, "not swept yet");
    // Readers already skip what the anchor covers.
    let export = node.log.export().unwrap();
    assert_eq!(first_line(&export), Line::Checkpoint(closing.clone()));

    assert_eq!(
        node.archive(&policy),
        ArchiveOutcome::UnderLimit { hot: 25 }
    );
    let path = node.dir.join(segment_file_name(1, 5));
    assert!(!partial.exists());
    assert_eq!(last_line(&read(&path)), Line::Checkpoint(closing));
    assert_eq!(node.records(), (6..=30).collect::<Vec<_>>());
    assert!(node.checkpoints().iter().all(|&c| c > 5));
    let all = node.verify_all(&export);
    assert_eq!(all.records, 30);
}

#[test]
fn a_crash_after_the_batch_is_finished_by_the_next_run_memory() {
    a_crash_after_the_batch_is_finished_by_the_next_run(Backend::Memory);
}

#[test]
fn a_crash_after_the_batch_is_finished_by_the_next_run_sled() {
    a_crash_after_the_batch_is_finished_by_the_next_run(Backend::Sled);
}

/// A partial file cut short (a crash while writing it) is never named a segment.
#[test]
fn a_cut_partial_file_is_deleted_not_promoted() {
    let node = Node::new(Backend::Memory);
    node.append(30);
    let policy = node.policy(25, 5);
    let (partial, closing) = written_not_committed(&node, 1, 5);
    let text = read(&partial);
    let cut: Vec<&str> = text.lines().collect();
    fs::write(&partial, cut[..cut.len() - 1].join("\n") + "\n").unwrap();
    assert_eq!(complete_segment(&partial, 1, 5).unwrap(), None);
    commit(&*node.trail, None, &closing).unwrap();

    assert_eq!(
        node.archive(&policy),
        ArchiveOutcome::UnderLimit { hot: 25 }
    );
    assert!(!partial.exists());
    assert!(node.segments().is_empty(), "{:?}", node.segments());
    // A whole file passes the same check.
    let (whole, closing) = written_not_committed(&node, 6, 10);
    assert_eq!(complete_segment(&whole, 6, 10).unwrap(), Some(closing));
    // A line after the closing one: not a segment.
    let mut text = read(&whole);
    text.push_str("{}\n");
    fs::write(&whole, text).unwrap();
    assert_eq!(complete_segment(&whole, 6, 10).unwrap(), None);
}

/// A whole partial file of an older range that is not the anchor's and has no segment file here
/// (its winner died and others archived on, or it has other boundaries) is kept aside, never
/// named a segment and never deleted.
#[test]
fn an_older_whole_partial_file_is_kept_aside_not_named() {
    let node = Node::new(Backend::Memory);
    node.append(60);
    // A run that died before its batch, for records 1 to 20 ...
    let (stale, _) = written_not_committed(&node, 1, 20);
    // ... and a winner for 1 to 15 that died after its batch, then another node went on to 30.
    let (winner, closing) = written_not_committed(&node, 1, 15);
    commit(&*node.trail, None, &closing).unwrap();
    let anchor_bytes = node.trail.anchor().unwrap().map(|(_, bytes)| bytes);
    let policy = node.policy(30, 15);
    let elsewhere = Node::on(Backend::Memory, Some(Arc::clone(&node.store)));
    let second = elsewhere
        .log
        .archive_once(&elsewhere.policy(30, 15))
        .unwrap();
    assert_eq!(expect_segment(&second).first, 16);
    assert_ne!(
        node.trail.anchor().unwrap().map(|(_, bytes)| bytes),
        anchor_bytes
    );

    assert_eq!(
        node.archive(&policy),
        ArchiveOutcome::UnderLimit { hot: 30 }
    );
    assert!(!stale.exists() && !winner.exists());
    assert!(node.segments().is_empty(), "{:?}", node.segments());
    let mut kept = node.strays();
    kept.sort();
    assert_eq!(kept.len(), 2, "{kept:?}");
    for name in &kept {
        assert!(name.ends_with(".orphan"), "{name}");
    }
    let winner_kept = node.dir.join(&kept[0]);
    assert!(kept[0].starts_with(&segment_file_name(1, 15)));
    assert_eq!(
        last_line(&read(&winner_kept)),
        Line::Checkpoint(closing),
        "the only copy of segment 1-15 is kept"
    );
}

/// A store restored from a backup and archived again reaches names that hold segments of the
/// trail that was lost: those files are kept under another name, never overwritten.
#[test]
fn a_different_file_under_the_segment_name_is_set_aside() {
    let node = Node::new(Backend::Memory);
    node.append(30);
    let earlier = Node::new(Backend::Memory);
    earlier.append(30);
    let theirs = expect_segment(&earlier.archive(&earlier.policy(25, 5)))
        .path
        .clone();
    ensure_dir(&node.dir).unwrap();
    let path = node.dir.join(segment_file_name(1, 5));
    fs::copy(&theirs, &path).unwrap();

    let outcome = node.archive(&node.policy(25, 5));
    let s = expect_segment(&outcome);
    let aside = s.superseded.clone().unwrap();
    assert_eq!(
        read(&aside),
        read(&theirs),
        "the other chain's segment is kept"
    );
    assert!(
        aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with(".superseded")
    );
    assert_eq!(last_line(&read(&path)), Line::Checkpoint(s.closing.clone()));
}

/// An export that began before the archiver took its records says so, and the next one works.
#[test]
fn an_export_overtaken_by_the_archiver_says_so() {
    let node = Node::new(Backend::Memory);
    node.append(40);
    let export = node.log.begin_export().unwrap();
    assert_eq!(export.through(), 40);
    assert_eq!(export.anchor(), None);
    expect_segment(&node.archive(&node.policy(25, 10)));
    let err = export.write_to(&mut |_| Ok(())).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("archived during the export; export again"),
        "{err}"
    );
    let again = node.log.export().unwrap();
    assert_eq!(verify(&again, &node.public).unwrap().records, 30);
}

/// A record missing from the store with the anchor unmoved is reported as lost, not archived.
#[test]
fn a_record_lost_from_the_store_is_not_taken_for_archived() {
    let node = Node::new(Backend::Memory);
    node.append(40);
    let mut batch = Batch::new();
    batch.delete(Tree::Audit, record_key(3));
    node.store.apply(&batch).unwrap();

    let err = node.log.export().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("record 3 is missing"), "{err}");
    match node.log.archive_once(&node.policy(25, 10)) {
        Err(ArchiveError::Chain(m)) => assert!(m.contains("record 3"), "{m}"),
        other => panic!("expected a chain error, got {other:?}"),
    }
    assert!(node.segments().is_empty());
    assert!(node.strays().is_empty(), "{:?}", node.strays());
}

/// An edited record is not archived (the file would not verify, and the evidence would leave
/// the store).
#[test]
fn an_edited_record_stops_the_archiver() {
    let node = Node::new(Backend::Memory);
    node.append(40);
    let key = record_key(4);
    let bytes = node.store.get(Tree::Audit, &key).unwrap().unwrap();
    let edited = String::from_utf8(bytes)
        .unwrap()
        .replace("\"app-a\"", "\"app-b\"");
    let mut batch = Batch::new();
    batch.put(Tree::Audit, key, edited.into_bytes());
    node.store.apply(&batch).unwrap();
    match node.log.archive_once(&node.policy(25, 10)) {
        Err(ArchiveError::Chain(m)) => assert!(m.contains("record 5"), "{m}"),
        other => panic!("expected a chain error, got {other:?}"),
    }
    assert_eq!(node.anchor(), None);
    assert_eq!(node.records().len(), 40);
    assert!(node.strays().is_empty(), "{:?}", node.strays());
}

/// A store that remembers the largest batch applied to it.
struct Counting {
    inner: MemoryStore,
    largest: Mutex<usize>,
}

impl Store for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(tree, key)
    }
    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan_prefix(tree, prefix)
    }
    fn scan_range(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan_range(tree, from, to, limit)
    }
    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut largest = self.largest.lock().unwrap();
        *largest = (*largest).max(batch.len());
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Archived records are deleted a few hundred keys per batch, however large the segment: a
/// PostgreSQL batch takes one lock per key from a table every session shares.
#[test]
fn the_sweep_deletes_in_small_batches() {
    let counting = Arc::new(Counting {
        inner: MemoryStore::new(),
        largest: Mutex::new(0),
    });
    let node = Node::on(
        Backend::Memory,
        Some(Arc::clone(&counting) as Arc<dyn Store>),
    );
    node.append(1300);
    *counting.largest.lock().unwrap() = 0;
    let s = expect_segment(&node.archive(&node.policy(1200, 1200))).clone();
    assert_eq!((s.first, s.last), (1, 1200));
    assert_eq!(node.records(), (1201..=1300).collect::<Vec<_>>());
    assert!(node.checkpoints().iter().all(|&c| c > 1200));
    let largest = *counting.largest.lock().unwrap();
    assert!(largest <= SWEEP_BATCH, "a batch of {largest} entries");
    assert_eq!(verify(&read(&s.path), &node.public).unwrap().records, 1200);
}

#[test]
fn the_policy_is_checked() {
    let node = Node::new(Backend::Memory);
    node.append(10);
    for (hot, segment, needle) in [
        (10, 0, "at least 1"),
        (10, 11, "must not exceed audit_hot_records"),
    ] {
        let e = node
            .log
            .archive_once(&node.policy(hot, segment))
            .unwrap_err();
        assert!(matches!(e, ArchiveError::Policy(_)), "{e:?}");
        assert!(e.to_string().contains(needle), "{e}");
        let Err(ArchiveError::Policy(why)) = node
            .log
            .start_archiver(node.policy(hot, segment), Arc::new(|_| {}))
        else {
            panic!("the archiver started with a bad policy");
        };
        assert!(why.contains(needle), "{why}");
    }
    let mut no_dir = node.policy(5, 5);
    no_dir.dir = PathBuf::new();
    match no_dir.check() {
        Err(ArchiveError::Policy(why)) => assert!(why.contains("audit_archive_dir"), "{why}"),
        other => panic!("expected a policy error, got {other:?}"),
    }

    // 0 hot records: never archive, and no thread.
    let off = node.policy(0, 0);
    assert!(!off.enabled());
    assert_eq!(node.archive(&off), ArchiveOutcome::Disabled);
    let archiver = node.log.start_archiver(off, Arc::new(|_| {})).unwrap();
    assert!(!archiver.running());
    archiver.stop();
    assert_eq!(node.records().len(), 10);
    assert!(!node.dir.exists());
}

#[test]
fn partial_names_parse_only_when_well_formed() {
    let name = format!("{}.0123abcd.partial", segment_file_name(21, 40));
    assert_eq!(parse_partial_name(&name), Some((21, 40)));
    for bad in [
        "audit-21-40.jsonl.x.partial",
        "audit-00000000000000000021-00000000000000000040.jsonl",
        "audit-0000000000000000002x-00000000000000000040.jsonl.x.partial",
        "notes.partial",
    ] {
        assert_eq!(parse_partial_name(bad), None, "{bad}");
    }
}

#[test]
fn the_archiver_thread_archives_while_over_the_limit_and_stops() {
    let node = Node::new(Backend::Memory);
    node.append(100);
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let log = Arc::clone(&seen);
    let archiver = node
        .log
        .start_archiver(
            node.policy(25, 20),
            Arc::new(move |outcome| {
                if let Ok(ArchiveOutcome::Archived(s)) = outcome {
                    log.lock().unwrap().insert(s.last);
                }
            }),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.anchor().map(|a| a.seq) != Some(80) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    archiver.stop();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(*seen.lock().unwrap(), BTreeSet::from([20, 40, 60, 80]));
    assert_eq!(node.segments().len(), 4);
}
