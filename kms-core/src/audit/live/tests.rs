//! The live log under the audit writer: what it writes verifies, a torn last append is cut at
//! every byte and the chain goes on, a failed sync fails the group and leaves nothing behind,
//! crashes during a sweep or a replacement are finished at open, and a store's tree trail moves
//! in once.

use std::io::BufReader;
use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::audit::writer::{AuditLog, CheckpointPolicy, MemorySigner, Signer};
use crate::audit::{AuditKeys, Event, Line, Operation, Outcome, Role, Start, verify, verify_files};
use crate::crypto::PublicKey;
use crate::store::{MemoryStore, SledStore};

/// A memory store that keeps its trail in a live log (as the sled store does), with small
/// segments so that a few hundred records span several.
struct Beside {
    inner: MemoryStore,
    live: Arc<LiveLog>,
}

impl Store for Beside {
    fn name(&self) -> &'static str {
        "memory-beside-live-log"
    }
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(tree, key)
    }
    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan_prefix(tree, prefix)
    }
    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn audit_files(&self) -> Option<Arc<LiveLog>> {
        Some(Arc::clone(&self.live))
    }
}

const ROLL: u64 = 4096;

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

struct Node {
    live: Arc<LiveLog>,
    log: AuditLog,
}

/// A live log in `dir` (opened, so recovered) with a writer over it.
fn node(dir: &Path, signer: &Signer, every_records: u64) -> Node {
    let live = Arc::new(LiveLog::open_with(dir, ROLL).unwrap());
    let store: Arc<dyn Store> = Arc::new(Beside {
        inner: MemoryStore::new(),
        live: Arc::clone(&live),
    });
    let log = AuditLog::start(
        store,
        "n1",
        Arc::clone(signer),
        CheckpointPolicy {
            every_records,
            every: Duration::from_secs(3600),
        },
    );
    Node { live, log }
}

fn key() -> (Signer, PublicKey) {
    crate::audit::writer::ephemeral_signer("audit").unwrap()
}

fn append(node: &Node, range: std::ops::Range<u64>) {
    for i in range {
        node.log.append_blocking(event(i)).unwrap();
    }
}

/// Every line of every segment, in order.
fn segment_lines(live: &LiveLog) -> Vec<String> {
    live.segment_paths()
        .iter()
        .flat_map(|p| {
            fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_writer_over_a_live_log_writes_export_lines_that_verify_across_segments_and_reopens() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("audit");
    let (signer, public) = key();
    let n = node(&dir, &signer, 25);
    append(&n, 0..200);
    // The writer's own checkpoint after record 200 is written after that record's caller is
    // answered: wait for it, so that the export and the files hold the same lines.
    n.log.checkpoint_now().unwrap();
    let export = n.log.export().unwrap();
    let verified = verify(&export, &public).unwrap();
    assert_eq!(verified.records, 200);
    assert!(
        n.live.segment_paths().len() > 3,
        "{:?}",
        n.live.segment_paths()
    );
    // The segments hold exactly the export's lines, less its closing checkpoint: the export
    // format, line for line.
    let lines = segment_lines(&n.live);
    let exported: Vec<&str> = export.lines().collect();
    assert_eq!(lines.len() + 1, exported.len());
    assert_eq!(lines, exported[..exported.len() - 1]);
    for line in &lines {
        serde_json::from_str::<Line>(line).unwrap();
    }
    // Each segment starts with the record its name says.
    for path in n.live.segment_paths() {
        let first = parse_segment_name(path.file_name().unwrap().to_str().unwrap()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(&format!("{{\"type\":\"record\",\"seq\":{first},")),
            "{}",
            path.display()
        );
    }
    n.log.stop();
    drop(n);

    // Reopened (a restart): nothing to recover, and the chain goes on.
    let n = node(&dir, &signer, 25);
    assert_eq!(n.live.recovered(), None);
    append(&n, 200..230);
    let verified = verify(&n.log.export().unwrap(), &public).unwrap();
    assert_eq!(verified.records, 230);
    assert_eq!(super::super::trail::held_records(&beside(&n)).unwrap(), 230);
}

fn beside(n: &Node) -> Arc<dyn Store> {
    Arc::new(Beside {
        inner: MemoryStore::new(),
        live: Arc::clone(&n.live),
    })
}

/// Copies `from` (a log directory) to `to`, file by file.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A power loss or a SIGKILL in the middle of an append leaves part of its last line: whatever
/// byte the file ends at, the open cuts the unfinished line, the chain resumes from the last
/// whole record, and the trail verifies. Garbage after the last whole line (a page of zeros, the
/// start of a later page) is cut the same way.
#[test]
fn a_torn_last_record_is_cut_at_every_byte_and_the_chain_continues() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("audit");
    let (signer, public) = key();
    let n = node(&dir, &signer, 1000);
    append(&n, 0..12);
    let last = n.live.segment_paths().pop().unwrap();
    // Dropped without its last checkpoint: the file ends with record 12.
    drop(n);
    let full = fs::read(&last).unwrap();
    let line_start = full[..full.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let name = last.file_name().unwrap().to_owned();

    let mut damages: Vec<(String, Vec<u8>)> = (line_start + 1..full.len())
        .map(|cut| (format!("cut at byte {cut}"), full[..cut].to_vec()))
        .collect();
    let mut zeros = full[..line_start].to_vec();
    zeros.extend_from_slice(&[0; 700]);
    zeros.extend_from_slice(&full[line_start + 40..]);
    damages.push(("a page of zeros before the rest".into(), zeros));
    let mut garbage = full[..line_start].to_vec();
    garbage.extend_from_slice(b"{\"type\":\"record\",\"seq\":12,\"ti\n");
    damages.push(("a whole line that is not JSON".into(), garbage));

    for (i, (what, bytes)) in damages.iter().enumerate() {
        let copy = tmp.path().join(format!("copy-{i}"));
        copy_dir(&dir, &copy);
        fs::write(copy.join(&name), bytes).unwrap();
        let n = node(&copy, &signer, 1000);
        let recovered = n.live.recovered().cloned().expect(what);
        assert_eq!(recovered.tail_seq, 11, "{what}");
        assert_eq!(
            recovered.cut_bytes,
            (bytes.len() - line_start) as u64,
            "{what}"
        );
        assert_eq!(
            fs::read(copy.join(&name)).unwrap(),
            full[..line_start],
            "{what}"
        );
        // The chain continues from record 11.
        let r = n.log.append_blocking(event(99)).unwrap();
        assert_eq!(r.seq, 12, "{what}");
        let verified = verify(&n.log.export().unwrap(), &public).unwrap();
        assert_eq!(verified.records, 12, "{what}");
        n.log.stop();
    }
}

/// A whole line that parses but does not continue the chain is not what a torn write leaves:
/// the log does not open, rather than drop it and whatever follows.
#[test]
fn a_whole_line_that_breaks_the_chain_stops_the_open() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("audit");
    let (signer, _) = key();
    let n = node(&dir, &signer, 1000);
    append(&n, 0..5);
    let last = n.live.segment_paths().pop().unwrap();
    drop(n);
    let text = fs::read_to_string(&last).unwrap();
    let third = text.lines().nth(2).unwrap();
    // Record 3 again, edited, after record 5.
    let edited = third.replace("\"r2\"", "\"r9\"");
    fs::write(&last, format!("{text}{edited}\n")).unwrap();
    match LiveLog::open_with(&dir, ROLL) {
        Err(StoreError::Corrupt(why)) => {
            assert!(why.contains("does not continue the chain"), "{why}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

/// Damage in a segment before the last (acknowledged long ago) is never cut: reading it fails.
#[test]
fn damage_in_an_older_segment_is_reported_not_cut() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("audit");
    let (signer, _) = key();
    let n = node(&dir, &signer, 1000);
    append(&n, 0..60);
    let first = n.live.segment_paths()[0].clone();
    assert!(n.live.segment_paths().len() > 1);
    let mut bytes = fs::read(&first).unwrap();
    bytes[30] = b'#';
    fs::write(&first, &bytes).unwrap();
    let err = n.log.export().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("damaged"), "{err}");
}

/// When `fdatasync` fails the whole group fails (fail closed: the caller is told, the log is
/// unhealthy), the bytes it wrote are cut before the next append, and the next group continues
/// the chain from the last acknowledged record. A restart finds nothing to cut.
#[test]
fn a_failed_sync_fails_the_group_and_leaves_no_unacknowledged_line() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("audit");
    let (signer, public) = key();
    let n = node(&dir, &signer, 1000);
    append(&n, 0..3);
    n.live.fail_next_syncs(1);
    let err = n.log.append_blocking(event(100)).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string().contains("audit record not written"),
        "{err}"
    );
    assert!(!n.log.healthy(), "a failed write must stop service");
    // A batch's items fail together.
    n.live.fail_next_syncs(1);
    let (tx, rx) = std::sync::mpsc::channel();
    n.log.append_all(
        vec![event(101), event(102)],
        Box::new(move |r| tx.send(r.map(|v| v.len())).unwrap()),
    );
    assert!(rx.recv().unwrap().is_err());

    let r = n.log.append_blocking(event(3)).unwrap();
    assert_eq!(r.seq, 4);
    assert!(n.log.healthy());
    let export = n.log.export().unwrap();
    assert_eq!(verify(&export, &public).unwrap().records, 4);
    for lost in ["r100", "r101", "r102"] {
        assert!(!export.contains(&format!("\"{lost}\"")), "{lost}");
        assert!(
            !segment_lines(&n.live)
                .iter()
                .any(|l| l.contains(&format!("\"{lost}\""))),
            "{lost}"
        );
    }
    n.log.stop();
    drop(n);
    let n = node(&dir, &signer, 1000);
    assert_eq!(n.live.recovered(), None);
    assert_eq!(
        verify(&n.log.export().unwrap(), &public).unwrap().records,
        4
    );
}

/// The trail adopts its first audit key version with its first records; a rotation and a restart
/// before any checkpoint must not lose it, or the first checkpoint would be signed by a version
/// no transition introduced. The saved tail keeps it: the trail verifies from the oldest key.
#[test]
fn the_adopted_key_version_survives_a_restart_before_the_first_checkpoint() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("audit");
    let memory = MemorySigner::new("audit").unwrap();
    let signer: Signer = memory.clone();
    let n = node(&dir, &signer, 1000);
    append(&n, 0..4);
    // Gone without a checkpoint (a crash), then the key rotates.
    drop(n);
    memory.rotate().unwrap();
    let n = node(&dir, &signer, 1000);
    append(&n, 4..6);
    n.log.checkpoint_now().unwrap();
    let export = n.log.export().unwrap();
    let oldest = AuditKeys::new(vec![memory.public_key(1).unwrap()]);
    let verified = verify(&export, &oldest).unwrap();
    assert_eq!(verified.transitions.len(), 1);
    assert_eq!(verified.records, 7, "six records and the transition");
    n.log.stop();
    drop(n);
    // And after another restart the trail signs with version 2 (no second transition).
    let n = node(&dir, &signer, 1000);
    append(&n, 6..7);
    let verified = verify(&n.log.export().unwrap(), &oldest).unwrap();
    assert_eq!(verified.transitions.len(), 1);
    assert_eq!(verified.records, 8);
}

/// Archiving from a live log: the segments wholly archived are deleted, the one across the
/// anchor rewritten without its archived lines; a sweep a crash interrupted (the original left
/// beside its rewrite) is finished at the next open. Segment files and the export verify as one
/// trail from the genesis.
#[test]
fn archiving_sweeps_segments_and_a_crash_during_the_sweep_is_finished_at_open() {
    use crate::audit::archive::{ArchiveOutcome, ArchivePolicy};
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("audit");
    let archive = tmp.path().join("archive");
    let (signer, public) = key();
    let n = node(&dir, &signer, 7);
    append(&n, 0..120);
    let before: Vec<PathBuf> = n.live.segment_paths();
    let policy = ArchivePolicy {
        dir: archive,
        hot_records: 50,
        segment_records: 45,
        every: Duration::from_secs(60),
    };
    let ArchiveOutcome::Archived(s) = n.log.archive_once(&policy).unwrap() else {
        panic!("nothing archived");
    };
    assert_eq!((s.first, s.last), (1, 45));
    // Only hot lines are left, in segments that start after the anchor.
    let lines = segment_lines(&n.live);
    let first = serde_json::from_str::<Line>(&lines[0]).unwrap();
    assert!(
        matches!(first, Line::Record(ref r) if r.seq == 46),
        "{first:?}"
    );
    assert_eq!(super::super::trail::held_records(&beside(&n)).unwrap(), 75);
    let live_export = n.log.export().unwrap();
    let files = vec![
        (
            "segment".to_owned(),
            Box::new(BufReader::new(File::open(&s.path).unwrap())) as Box<dyn io::BufRead>,
        ),
        ("export".to_owned(), Box::new(live_export.as_bytes())),
    ];
    let verified = verify_files(files, &public, Start::Genesis).unwrap();
    assert_eq!(verified.records, 120);

    // A crash between the rewrite and the deletion of an original: it is still there, with
    // archived records only (as a wholly archived segment) or with hot ones too (as the one
    // rewritten); either way its successor starts at or before the first hot record.
    let original = before
        .iter()
        .find(|p| {
            let first = parse_segment_name(p.file_name().unwrap().to_str().unwrap()).unwrap();
            first <= 45 && !p.exists()
        })
        .unwrap()
        .clone();
    n.log.stop();
    drop(n);
    let mut text = String::new();
    for line in fs::read_to_string(&s.path).unwrap().lines() {
        if let Ok(Line::Record(r)) = serde_json::from_str::<Line>(line)
            && r.seq >= parse_segment_name(original.file_name().unwrap().to_str().unwrap()).unwrap()
        {
            text.push_str(line);
            text.push('\n');
        }
    }
    fs::write(&original, text).unwrap();
    let n = node(&dir, &signer, 7);
    assert!(
        !original.exists(),
        "the archived original is deleted at open"
    );
    assert_eq!(
        verify(&n.log.export().unwrap(), &public).unwrap().records,
        75
    );
}

/// A replacement (a restore, or a migration) a crash interrupted: with the new log complete
/// (the old one set aside) the new one is put in place; with the new one unfinished it is
/// dropped and the old one stays.
#[test]
fn a_replacement_interrupted_by_a_crash_is_finished_or_undone() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("audit");
    let (signer, public) = key();
    let n = node(&dir, &signer, 1000);
    append(&n, 0..5);
    n.log.stop();
    drop(n);
    // The first rename done, not the second.
    let old = tmp.path().join("audit.old");
    let staged = tmp.path().join("audit.new");
    copy_dir(&dir, &staged);
    fs::rename(&dir, &old).unwrap();
    let n = node(&dir, &signer, 1000);
    assert!(!old.exists() && !staged.exists());
    assert_eq!(
        verify(&n.log.export().unwrap(), &public).unwrap().records,
        5
    );
    n.log.stop();
    drop(n);
    // An unfinished new log only.
    fs::create_dir_all(&staged).unwrap();
    fs::write(staged.join(segment_name(1)), b"{\"type\":\"rec").unwrap();
    let n = node(&dir, &signer, 1000);
    assert!(!staged.exists());
    assert_eq!(
        verify(&n.log.export().unwrap(), &public).unwrap().records,
        5
    );
}

/// A sled store written before the live log has its trail in its audit tree: the first open
/// moves it into the log and empties the tree, the trail verifies and goes on. An open that
/// stopped while the tree was being emptied is finished; a tree trail beside a different live
/// log stops the open.
#[test]
fn a_sled_store_with_its_trail_in_the_tree_moves_it_to_the_live_log_once() {
    let (signer, public) = key();
    // An old trail: written to a memory store's tree by the same writer.
    let old = Arc::new(MemoryStore::new());
    let log = AuditLog::start(
        old.clone(),
        "n0",
        Arc::clone(&signer),
        CheckpointPolicy {
            every_records: 4,
            every: Duration::from_secs(3600),
        },
    );
    for i in 0..10 {
        log.append_blocking(event(i)).unwrap();
    }
    log.stop();
    let tree = old.scan_prefix(Tree::Audit, b"").unwrap();

    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("store");
    let put_tree = |entries: &[Entry]| {
        let store = SledStore::open(&path).unwrap();
        let mut batch = Batch::new();
        for (k, v) in entries {
            batch.put(Tree::Audit, k.clone(), v.clone());
        }
        store.apply(&batch).unwrap();
    };
    // A store with no live log yet (as an older version left it).
    put_tree(&tree);
    fs::remove_dir_all(path.join(crate::store::AUDIT_DIR)).unwrap();

    let store: Arc<dyn Store> = Arc::new(SledStore::open(&path).unwrap());
    assert!(store.scan_prefix(Tree::Audit, b"").unwrap().is_empty());
    let log = AuditLog::start(
        Arc::clone(&store),
        "n1",
        Arc::clone(&signer),
        CheckpointPolicy::default(),
    );
    log.append_blocking(event(10)).unwrap();
    let export = log.export().unwrap();
    let verified = verify(&export, &public).unwrap();
    assert_eq!(verified.records, 11);
    assert_eq!(verified.records_by_node.get("n0"), Some(&10));
    log.stop();
    drop(log);
    drop(store);

    // Stopped while emptying the tree: part of it is still there, with its tail.
    let tail_and_some: Vec<Entry> = tree
        .iter()
        .filter(|(k, _)| k.as_slice() == TAIL || k.first() == Some(&b'r'))
        .take(3)
        .cloned()
        .chain(tree.iter().filter(|(k, _)| k.as_slice() == TAIL).cloned())
        .collect();
    put_tree(&tail_and_some);
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&path).unwrap());
    assert!(store.scan_prefix(Tree::Audit, b"").unwrap().is_empty());
    let log = AuditLog::start(
        Arc::clone(&store),
        "n1",
        Arc::clone(&signer),
        CheckpointPolicy::default(),
    );
    assert_eq!(verify(&log.export().unwrap(), &public).unwrap().records, 11);
    log.stop();
    drop(log);
    drop(store);

    // Another tree trail beside the moved one: neither is dropped, the store does not open.
    let mut other = tree;
    if let Some((_, tail)) = other.iter_mut().find(|(k, _)| k.as_slice() == TAIL) {
        tail.push(b' ');
    }
    put_tree(&other);
    match SledStore::open(&path) {
        Err(StoreError::Corrupt(why)) => assert!(why.contains("neither is dropped"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
