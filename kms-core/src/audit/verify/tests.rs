use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::layout::sign_with_newest as sign_checkpoint;
use crate::audit::writer::{AuditLog, CheckpointPolicy, Signer};
use crate::audit::{Event, Flag, Format, Operation, Outcome, Record, Role};
use crate::store::MemoryStore;

/// A fresh SM2 audit key: its signer (as `Kms::audit_signer`) and public half.
fn audit_key() -> (Signer, PublicKey) {
    crate::audit::writer::ephemeral_signer("audit-key").unwrap()
}

fn event(i: u64) -> Event {
    Event {
        request_id: format!("r{i}"),
        principal: "app-a".into(),
        role: Role::App,
        operation: Operation::Encrypt,
        key_id: Some("k".into()),
        key_version: Some(1),
        outcome: if i.is_multiple_of(3) {
            Outcome::PermissionDenied
        } else {
            Outcome::Ok
        },
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

/// A real export of `records` records written alternately by nodes n1 and n2 on one store,
/// with a checkpoint every `every` records, and the key that signed it.
struct Trail {
    text: String,
    signer: Signer,
    public: PublicKey,
}

impl Trail {
    fn new(records: u64, every: u64) -> Self {
        let (signer, public) = audit_key();
        Self::with_key(records, every, signer, public)
    }

    fn with_key(records: u64, every: u64, signer: Signer, public: PublicKey) -> Self {
        let store: Arc<dyn crate::store::Store> = Arc::new(MemoryStore::new());
        let policy = CheckpointPolicy {
            every_records: every,
            every: Duration::from_secs(3600),
        };
        let logs = [
            AuditLog::start(store.clone(), "n1", signer.clone(), policy),
            AuditLog::start(store, "n2", signer.clone(), policy),
        ];
        for i in 0..records {
            let log = &logs[usize::from(i % 2 == 1)];
            log.append_blocking(event(i)).unwrap();
        }
        logs[0].checkpoint_now().unwrap();
        let text = logs[0].export().unwrap();
        for log in &logs {
            log.stop();
        }
        Self {
            text,
            signer,
            public,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.text.lines().map(str::to_owned).collect()
    }

    fn record(&self, seq: u64) -> Record {
        self.text
            .lines()
            .find_map(|l| match serde_json::from_str::<Line>(l).unwrap() {
                Line::Record(r) if r.seq == seq => Some(r),
                Line::Record(_) | Line::Checkpoint(_) => None,
            })
            .unwrap()
    }

    /// A signed closing checkpoint over record `seq` claiming `hash`.
    fn closing_over(&self, seq: u64, hash: &str) -> String {
        let cp = sign_checkpoint(&self.signer, Format::CURRENT, "n1", seq, hash, true)
            .unwrap()
            .unwrap();
        serde_json::to_string(&Line::Checkpoint(cp)).unwrap()
    }

    /// A signed closing checkpoint over record `seq` of this trail.
    fn closing(&self, seq: u64) -> String {
        self.closing_over(seq, &self.record(seq).hash().unwrap())
    }

    /// The trail cut into archive segments ending at each of `ends`, then the live export
    /// (the rest, ending with the export's own closing checkpoint). Each file after the
    /// first starts with the closing line of the file before.
    fn cut(&self, ends: &[u64]) -> Vec<String> {
        let lines = self.lines();
        let (last, body) = lines.split_last().unwrap();
        let mut files = Vec::new();
        let mut anchor: Option<(u64, String)> = None;
        for end in ends.iter().copied().map(Some).chain([None]) {
            let from = anchor.as_ref().map_or(1, |(seq, _)| seq + 1);
            let mut out: Vec<String> = anchor.iter().map(|(_, l)| l.clone()).collect();
            for l in body {
                let seq = match serde_json::from_str::<Line>(l).unwrap() {
                    Line::Record(r) => r.seq,
                    Line::Checkpoint(cp) => cp.seq,
                };
                if seq >= from && end.is_none_or(|e| seq <= e) {
                    out.push(l.clone());
                }
            }
            let close = end.map_or_else(|| last.clone(), |e| self.closing(e));
            out.push(close.clone());
            files.push(join(&out));
            anchor = end.map(|e| (e, close));
        }
        files
    }
}

fn join(lines: &[String]) -> String {
    lines.join("\n") + "\n"
}

/// The verifier as it was before streaming (all lines in memory, the lookahead by index),
/// with the anchor rule added: the independent reference the streaming verifier must match.
fn reference(text: &str, public: &PublicKey) -> Result<Verified, Broken> {
    let mut running = GENESIS.to_owned();
    let mut next_seq: Option<u64> = None;
    let mut anchor: Option<Checkpoint> = None;
    let mut records = 0u64;
    let mut checkpoints = 0u64;
    let mut records_by_node: BTreeMap<String, u64> = BTreeMap::new();
    let mut last: Option<(usize, Line)> = None;
    let mut last_record_line: Option<usize> = None;
    let lines: Vec<&str> = text.lines().collect();
    for (i, raw) in lines.iter().copied().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() {
            return Err(broken(n, "empty line"));
        }
        let line: Line =
            serde_json::from_str(raw).map_err(|e| broken(n, format!("not an audit line: {e}")))?;
        match &line {
            Line::Record(r) => {
                let expected = next_seq.unwrap_or(1);
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
                                 checkpoint of record {}): the anchor is from another trail, \
                                 or the record was edited",
                                r.seq, a.seq
                            ),
                        ));
                    }
                    if let (Some(prev_line), Some(next)) = (last_record_line, lines.get(i + 1))
                        && vouches_for(
                            next,
                            &r.hash().unwrap(),
                            &Trust::new(&public.to_audit_keys()),
                        )
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
                if serde_json::to_string(&line).unwrap() != raw {
                    return Err(broken(
                        n,
                        format!("record {} is not in canonical form (edited)", r.seq),
                    ));
                }
                running = r.hash().unwrap();
                last_record_line = Some(n);
                next_seq = Some(r.seq + 1);
                records += 1;
                *records_by_node.entry(r.node.clone()).or_default() += 1;
            }
            Line::Checkpoint(cp) if n == 1 && cp.seq > 0 => {
                if !checkpoint_signature_valid(cp, public) {
                    return Err(broken(
                        n,
                        "the anchor (the checkpoint on the first line) does not verify with \
                         the audit public key",
                    ));
                }
                if !cp.closes_export {
                    return Err(broken(
                        n,
                        format!(
                            "the first line is a checkpoint for record {} that does not close \
                             an export: an anchor must be the closing checkpoint of the \
                             previous segment",
                            cp.seq
                        ),
                    ));
                }
                running.clone_from(&cp.last_hash);
                next_seq = Some(cp.seq + 1);
                checkpoints += 1;
                anchor = Some(cp.clone());
                // The anchor closed the previous file, not this one.
                last = Some((n, Line::Record(Record::default_for_tests())));
                continue;
            }
            Line::Checkpoint(cp) => {
                let covered = next_seq.map_or(0, |s| s - 1);
                if cp.seq != covered || cp.last_hash != running {
                    return Err(broken(
                        n,
                        format!(
                            "checkpoint for record {} does not match the chain (ends at record {covered})",
                            cp.seq
                        ),
                    ));
                }
                if !checkpoint_signature_valid(cp, public) {
                    return Err(broken(
                        n,
                        "checkpoint signature does not verify with the audit public key",
                    ));
                }
                checkpoints += 1;
            }
        }
        last = Some((n, line));
    }
    match last {
        Some((_, Line::Checkpoint(cp))) if cp.closes_export => Ok(Verified {
            records,
            checkpoints,
            last_hash: running,
            records_by_node,
            last_seq: next_seq.map_or(0, |s| s - 1),
            anchor,
            transitions: Vec::new(),
        }),
        Some((n, _)) => Err(broken(
            n,
            "the export does not end with its closing signed checkpoint (truncated or appended to)",
        )),
        None => Err(broken(1, "empty export")),
    }
}

impl Record {
    fn default_for_tests() -> Self {
        Self {
            format: Format::CURRENT,
            seq: 0,
            time_ms: 0,
            node: String::new(),
            request_id: String::new(),
            principal: String::new(),
            role: Role::Unregistered,
            operation: Operation::parse(""),
            key_id: None,
            key_version: None,
            outcome: Outcome::Unknown,
            context_hmac: None,
            flags: vec![],
            transport: None,
            traceparent: None,
            transfer: None,
            batch_id: None,
            pepper: None,
            count: None,
            transition: None,
            prev: String::new(),
        }
    }
}

/// Every way of running the verifier on `text` gives the reference's answer: `verify`,
/// and `verify_reader` over buffers too small to hold a line.
fn check_agrees(text: &str, public: &PublicKey) -> Result<Verified, Broken> {
    let expected = reference(text, public);
    assert_eq!(verify(text, public), expected, "verify on {text:?}");
    for capacity in [1, 7, 64] {
        let reader = BufReader::with_capacity(capacity, text.as_bytes());
        assert_eq!(
            verify_reader(reader, public),
            expected,
            "verify_reader (buffer {capacity}) on {text:?}"
        );
    }
    expected
}

/// Line edits of a file: deleting, duplicating, swapping with the next, replacing with any
/// other line or an empty one, editing characters, cutting after it.
fn mutations(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let n = lines.len();
    for i in 0..n {
        let mut t = lines.to_vec();
        t.remove(i);
        out.push(join(&t));
        let mut t = lines.to_vec();
        t.insert(i, lines[i].clone());
        out.push(join(&t));
        if i + 1 < n {
            let mut t = lines.to_vec();
            t.swap(i, i + 1);
            out.push(join(&t));
        }
        for j in (0..n).filter(|&j| j != i) {
            let mut t = lines.to_vec();
            t[i].clone_from(&lines[j]);
            out.push(join(&t));
        }
        for blank in ["", " "] {
            let mut t = lines.to_vec();
            blank.clone_into(&mut t[i]);
            out.push(join(&t));
        }
        for at in (0..lines[i].len()).step_by(5) {
            let mut bytes = lines[i].clone().into_bytes();
            bytes[at] = match bytes[at] {
                b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => bytes[at] + 1,
                b'9' => b'0',
                b'z' | b'Z' => b'a',
                _ => b'x',
            };
            let mut t = lines.to_vec();
            t[i] = String::from_utf8(bytes).unwrap();
            out.push(join(&t));
        }
        out.push(join(&lines[..=i]));
        out.push(lines[..=i].join("\n"));
    }
    out.push(lines.join("\r\n") + "\r\n");
    out.push(lines.join("\n"));
    out.push(String::new());
    out.push("\n".to_owned());
    out
}

#[test]
fn an_untouched_export_verifies_from_the_genesis() {
    let t = Trail::new(25, 10);
    let v = check_agrees(&t.text, &t.public).unwrap();
    assert_eq!(v.records, 25);
    assert!(v.checkpoints >= 3, "two intermediate and the closing one");
    assert_eq!((v.first_seq(), v.last_seq), (1, 25));
    assert_eq!(v.anchor, None);
    assert_eq!(v.last_hash, t.record(25).hash().unwrap());
    let by_node: Vec<(&str, u64)> = v
        .records_by_node
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(by_node, [("n1", 13), ("n2", 12)]);
}

#[test]
fn anchored_files_verify_and_report_their_anchor() {
    let t = Trail::new(12, 5);
    let files = t.cut(&[4, 9]);
    let first = check_agrees(&files[0], &t.public).unwrap();
    assert_eq!(
        (first.first_seq(), first.last_seq, first.records),
        (1, 4, 4)
    );
    assert_eq!(first.anchor, None);
    let middle = check_agrees(&files[1], &t.public).unwrap();
    let anchor = middle.anchor.clone().unwrap();
    assert_eq!((anchor.seq, anchor.closes_export), (4, true));
    assert_eq!(anchor.last_hash, first.last_hash);
    assert_eq!(
        (middle.first_seq(), middle.last_seq, middle.records),
        (5, 9, 5)
    );
    // Every line is counted: the anchor is a checkpoint that verified.
    assert_eq!(
        middle.records + middle.checkpoints,
        u64::try_from(files[1].lines().count()).unwrap()
    );
    let live = check_agrees(&files[2], &t.public).unwrap();
    assert_eq!(live.anchor.as_ref().unwrap().seq, 9);
    assert_eq!((live.first_seq(), live.last_seq, live.records), (10, 12, 3));
    assert_eq!(live.last_hash, t.record(12).hash().unwrap());
}

#[test]
fn an_anchor_with_no_record_after_it_verifies_but_an_anchor_alone_does_not() {
    let t = Trail::new(6, 100);
    let close = t.closing(6);
    let v = check_agrees(&join(&[close.clone(), t.closing(6)]), &t.public).unwrap();
    assert_eq!((v.records, v.checkpoints, v.last_seq), (0, 2, 6));
    assert_eq!(v.first_seq(), 7);
    // The anchor closed the previous file: this one has no closing checkpoint of its own.
    let e = check_agrees(&join(&[close]), &t.public).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.problem.contains("closing"), "{e}");
}

#[test]
fn an_anchor_that_does_not_verify_breaks_line_1() {
    let t = Trail::new(8, 100);
    let files = t.cut(&[4]);
    let lines: Vec<String> = files[1].lines().map(str::to_owned).collect();
    // A signature over something else (another valid closing checkpoint's).
    let other: Checkpoint = match serde_json::from_str(&t.closing(5)).unwrap() {
        Line::Checkpoint(cp) => cp,
        Line::Record(_) => unreachable!(),
    };
    let Line::Checkpoint(mut anchor) = serde_json::from_str(&lines[0]).unwrap() else {
        unreachable!()
    };
    anchor.signature = other.signature;
    let mut edited = lines.clone();
    edited[0] = serde_json::to_string(&Line::Checkpoint(anchor)).unwrap();
    let e = check_agrees(&join(&edited), &t.public).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.problem.contains("anchor"), "{e}");
    // A signed field edited.
    let mut edited = lines.clone();
    edited[0] = lines[0].replacen("\"seq\":4", "\"seq\":3", 1);
    assert_ne!(edited[0], lines[0]);
    assert_eq!(check_agrees(&join(&edited), &t.public).unwrap_err().line, 1);
    // Another KMS's audit key.
    let (_, stranger) = audit_key();
    let e = check_agrees(&files[1], &stranger).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.problem.contains("anchor"), "{e}");
    // A validly signed checkpoint that did not close an export is no anchor.
    let mid = sign_checkpoint(
        &t.signer,
        Format::CURRENT,
        "n1",
        4,
        &t.record(4).hash().unwrap(),
        false,
    )
    .unwrap()
    .unwrap();
    let mut edited = lines;
    edited[0] = serde_json::to_string(&Line::Checkpoint(mid)).unwrap();
    let e = check_agrees(&join(&edited), &t.public).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.problem.contains("does not close an export"), "{e}");
}

#[test]
fn an_anchor_over_another_hash_breaks_the_first_record() {
    let t = Trail::new(8, 100);
    let files = t.cut(&[4]);
    let mut lines: Vec<String> = files[1].lines().map(str::to_owned).collect();
    // Validly signed, right seq, but the hash of record 3 rather than record 4.
    lines[0] = t.closing_over(4, &t.record(3).hash().unwrap());
    let e = check_agrees(&join(&lines), &t.public).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.problem.contains("does not chain to the anchor"), "{e}");
}

#[test]
fn an_anchor_followed_by_the_wrong_record_breaks_it() {
    let t = Trail::new(8, 100);
    let files = t.cut(&[4]);
    let lines: Vec<String> = files[1].lines().map(str::to_owned).collect();
    for (seq, expected) in [(5, 6), (3, 4)] {
        // An anchor for another record: the record after it has the wrong seq.
        let mut edited = lines.clone();
        edited[0] = t.closing(seq);
        let e = check_agrees(&join(&edited), &t.public).unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(
            e.problem,
            format!("record seq 5 where {expected} was expected (deleted or reordered)")
        );
    }
    // The first record after the anchor deleted.
    let mut edited = lines;
    edited.remove(1);
    let e = check_agrees(&join(&edited), &t.public).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.problem.starts_with("record seq 6 where 5"), "{e}");
}

#[test]
fn edits_inside_an_anchored_file_are_named_like_anywhere_else() {
    let t = Trail::new(12, 100);
    let files = t.cut(&[4]);
    let lines: Vec<String> = files[1].lines().map(str::to_owned).collect();
    // Line 3 holds record 6; record 7 on line 4 still chains to the original, so the
    // verifier names line 3 as the edited one.
    assert!(lines[2].contains("\"seq\":6,"));
    let mut edited = lines.clone();
    edited[2] = lines[2].replacen("\"app-a\"", "\"app-z\"", 1);
    let e = check_agrees(&join(&edited), &t.public).unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.problem.contains("record 6 was edited"), "{e}");
    // The last record edited: the closing checkpoint no longer matches.
    let last = lines
        .iter()
        .rposition(|l| l.contains("\"type\":\"record\""))
        .unwrap();
    let mut edited = lines.clone();
    edited[last] = lines[last].replacen("\"app-a\"", "\"app-z\"", 1);
    assert_ne!(edited[last], lines[last]);
    let e = check_agrees(&join(&edited), &t.public).unwrap_err();
    assert_eq!(e.line, last + 2, "the checkpoint after it: {e}");
    // Cut before its closing checkpoint.
    let e = check_agrees(&join(&lines[..lines.len() - 1]), &t.public).unwrap_err();
    assert!(e.problem.contains("closing"), "{e}");
}

/// The catalogue of `kms::tests::audit::every_kind_of_tampering_is_caught_at_its_line`,
/// here checked for agreement between the reference, `verify` and `verify_reader`.
#[test]
fn every_kind_of_tampering_is_caught_at_its_line_by_every_verifier() {
    let t = Trail::new(12, 5);
    let owned = t.lines();
    for (i, l) in owned.iter().enumerate() {
        for (from, to) in [
            ("\"OK\"", "\"NOT_FOUND\""),
            ("\"app-a\"", "\"app-b\""),
            ("\"r1", "\"x1"),
            ("\"Crypto/Encrypt\"", "\"Crypto/Decrypt\""),
        ] {
            if l.contains(from) && l.contains("\"type\":\"record\"") {
                let mut e = owned.clone();
                e[i] = l.replacen(from, to, 1);
                let broken = check_agrees(&join(&e), &t.public).unwrap_err();
                assert!(
                    broken.line <= i + 2,
                    "edit on line {} at {}",
                    i + 1,
                    broken.line
                );
            }
        }
    }
    let rec = owned
        .iter()
        .position(|l| l.contains("\"seq\":4,") && l.contains("\"type\":\"record\""))
        .unwrap();
    let mut e = owned.clone();
    e[rec] = owned[rec].replacen("\"app-a\"", "\"app-z\"", 1);
    assert_eq!(
        check_agrees(&join(&e), &t.public).unwrap_err().line,
        rec + 1
    );
    let mut e = owned.clone();
    e.remove(3);
    assert_eq!(check_agrees(&join(&e), &t.public).unwrap_err().line, 4);
    let mut e = owned.clone();
    e.swap(1, 2);
    assert_eq!(check_agrees(&join(&e), &t.public).unwrap_err().line, 2);
    let cut = owned
        .iter()
        .position(|l| l.contains("\"closes_export\":false"))
        .unwrap();
    let cut_short = check_agrees(&join(&owned[..=cut]), &t.public).unwrap_err();
    assert!(cut_short.problem.contains("closing"), "{cut_short}");
    // Another KMS's key: the first checkpoint is the first line that does not verify.
    let (_, stranger) = audit_key();
    let first_checkpoint = owned
        .iter()
        .position(|l| l.contains("\"type\":\"checkpoint\""))
        .unwrap();
    assert_eq!(
        check_agrees(&t.text, &stranger).unwrap_err(),
        broken(
            first_checkpoint + 1,
            "checkpoint signature does not verify with the audit public key"
        )
    );
}

#[test]
fn streaming_agrees_with_the_reference_on_every_line_edit() {
    let t = Trail::new(6, 2);
    let files = t.cut(&[3]);
    for text in [&t.text, &files[0], &files[1]] {
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut failures = 0;
        for mutated in mutations(&lines) {
            if check_agrees(&mutated, &t.public).is_err() {
                failures += 1;
            }
        }
        assert!(
            failures > 100,
            "the mutations should mostly break: {failures}"
        );
    }
}

#[test]
fn line_endings_bytes_and_long_lines() {
    let t = Trail::new(3, 100);
    // CRLF and no final line ending verify, as with `str::lines`.
    let crlf = t.text.replace('\n', "\r\n");
    assert_eq!(check_agrees(&crlf, &t.public).unwrap().records, 3);
    let bare = t.text.trim_end();
    assert_eq!(check_agrees(bare, &t.public).unwrap().records, 3);
    // Bytes that are not UTF-8 break their line and name the byte.
    let mut bytes = t.text.clone().into_bytes();
    let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    bytes[second + 3] = 0xff;
    let e = verify_reader(bytes.as_slice(), &t.public).unwrap_err();
    assert_eq!(e.line, 2);
    assert_eq!(
        e.problem,
        format!("not UTF-8 text (byte {} of the file)", second + 4)
    );
    // A line longer than the bound is refused without reading it whole.
    let long = format!("{}\n", "x".repeat(MAX_LINE_BYTES + 10));
    let e = verify_reader(format!("{}\n{long}", t.lines()[0]).as_bytes(), &t.public);
    let e = e.unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.problem.contains("longer than"), "{e}");
}

#[test]
fn a_read_error_breaks_the_line_it_is_on() {
    struct Failing<'a>(&'a [u8]);
    impl std::io::Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = self.0.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let t = Trail::new(3, 100);
    let first = format!("{}\n", t.lines()[0]);
    let e = verify_reader(BufReader::new(Failing(first.as_bytes())), &t.public).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.problem.contains("disk on fire"), "{e}");
}

fn chain(
    files: &[(&str, &String)],
    public: &PublicKey,
    start: Start,
) -> Result<VerifiedFiles, ChainError> {
    verify_files(
        files.iter().map(|(name, text)| (*name, text.as_bytes())),
        public,
        start,
    )
}

#[test]
fn a_chain_of_segments_verifies_as_one_trail() {
    let t = Trail::new(12, 5);
    let f = t.cut(&[4, 9]);
    let whole = verify(&t.text, &t.public).unwrap();
    let names = ["audit-1-4.jsonl", "audit-5-9.jsonl", "live.jsonl"];
    let files: Vec<(&str, &String)> = names.iter().copied().zip(&f).collect();
    for start in [Start::Genesis, Start::GenesisOrAnchor] {
        let v = chain(&files, &t.public, start).unwrap();
        assert!(v.complete_from_genesis);
        assert_eq!(v.anchor, None);
        assert_eq!((v.first_seq, v.last_seq, v.records), (1, 12, 12));
        assert_eq!(v.last_hash, whole.last_hash);
        assert_eq!(v.records_by_node, whole.records_by_node);
        let names_back: Vec<&str> = v.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names_back, names);
        // Each file's own checkpoints, the anchors not counted twice.
        let lines: usize = f.iter().map(|t| t.lines().count()).sum();
        assert_eq!(v.records + v.checkpoints, u64::try_from(lines).unwrap() - 2);
    }
    // One file is a chain of one.
    let v = chain(&[("all.jsonl", &t.text)], &t.public, Start::Genesis).unwrap();
    assert_eq!(
        (v.records, v.checkpoints),
        (whole.records, whole.checkpoints)
    );
    // The incremental form gives each file's result as it goes.
    let mut c = FileChain::new(Start::Genesis, &t.public);
    assert_eq!(c.add("a", f[0].as_bytes()).unwrap().last_seq, 4);
    assert_eq!(c.add("b", f[1].as_bytes()).unwrap().last_seq, 9);
    assert_eq!(c.finish().unwrap().last_seq, 9);
    assert_eq!(
        FileChain::new(Start::Genesis, &t.public)
            .finish()
            .unwrap_err(),
        ChainError::NoFiles
    );
}

#[test]
fn a_chain_from_an_anchor_needs_the_callers_consent() {
    let t = Trail::new(12, 5);
    let f = t.cut(&[4, 9]);
    let files = [("audit-5-9.jsonl", &f[1]), ("live.jsonl", &f[2])];
    let e = chain(&files, &t.public, Start::Genesis).unwrap_err();
    assert_eq!(
        e,
        ChainError::StartsAtAnchor {
            file: "audit-5-9.jsonl".into(),
            anchor_seq: 4
        }
    );
    assert!(e.to_string().contains("starts after record 4"), "{e}");
    let v = chain(&files, &t.public, Start::GenesisOrAnchor).unwrap();
    assert!(!v.complete_from_genesis);
    assert_eq!(v.anchor.as_ref().unwrap().seq, 4);
    assert_eq!((v.first_seq, v.last_seq, v.records), (5, 12, 8));
}

#[test]
fn missing_swapped_overlapping_and_foreign_files_are_named() {
    let t = Trail::new(12, 5);
    let f = t.cut(&[4, 9]);
    let (a, b, live) = (
        ("a.jsonl", &f[0]),
        ("b.jsonl", &f[1]),
        ("live.jsonl", &f[2]),
    );
    let err = |files: &[(&str, &String)], start| chain(files, &t.public, start).unwrap_err();

    // The middle segment missing.
    let e = err(&[a, live], Start::Genesis);
    assert_eq!(e.file(), Some("live.jsonl"));
    assert_eq!(
        e.to_string(),
        "live.jsonl starts after record 9 but the previous file a.jsonl ends at record 4: a \
         segment is missing (records 5 to 9), or the files are out of order"
    );
    // Two segments swapped.
    let e = err(&[a, live, b], Start::Genesis);
    assert!(e.to_string().contains("a segment is missing"), "{e}");
    let e = err(&[b, a, live], Start::GenesisOrAnchor);
    assert_eq!(e.file(), Some("a.jsonl"));
    assert!(
        e.to_string().contains("a.jsonl starts at the genesis"),
        "{e}"
    );
    let e = err(&[a, live, b], Start::GenesisOrAnchor);
    assert_eq!(e.file(), Some("live.jsonl"));
    // A file repeated: it overlaps itself.
    let e = err(&[a, b, b], Start::Genesis);
    assert_eq!(e.file(), Some("b.jsonl"));
    assert!(e.to_string().contains("already runs to record 9"), "{e}");
    assert!(e.to_string().contains("overlap"), "{e}");
    // Overlapping cuts: the second file starts inside the first.
    let g = t.cut(&[7]);
    let e = err(&[b, ("live7.jsonl", &g[1])], Start::GenesisOrAnchor);
    assert!(e.to_string().contains("starts after record 7"), "{e}");
    assert!(e.to_string().contains("overlap"), "{e}");
    // Same seq, other trail (same key): the hashes differ.
    let other = Trail::with_key(12, 5, t.signer.clone(), t.public.clone());
    let o = other.cut(&[4, 9]);
    let e = err(&[a, ("other-b.jsonl", &o[1])], Start::Genesis);
    assert!(e.to_string().contains("different trails"), "{e}");
    // A file that is broken on its own names itself and its line.
    let mut lines: Vec<String> = f[1].lines().map(str::to_owned).collect();
    lines[2] = lines[2].replacen("\"app-a\"", "\"app-z\"", 1);
    let bad = join(&lines);
    let e = err(&[a, ("b.jsonl", &bad), live], Start::Genesis);
    let ChainError::Broken { file, broken } = &e else {
        panic!("{e:?}")
    };
    assert_eq!((file.as_str(), broken.line), ("b.jsonl", 3));
    assert!(e.to_string().starts_with("b.jsonl line 3: "), "{e}");
    assert_eq!(err(&[], Start::Genesis), ChainError::NoFiles);
}

// ---------------------------------------------------------------------------------------------
// Formats.

/// A store holding a trail of `n` records and a checkpoint as format V1 wrote them (no
/// `format` field, no domain prefix), signed by `signer`: what an upgraded server finds.
fn v1_store(signer: &Signer, n: u64) -> Arc<dyn crate::store::Store> {
    use crate::audit::layout::{TAIL, Tail, checkpoint_key, record_key};
    use crate::store::{Batch, Store, Tree};
    let store = MemoryStore::new();
    let mut batch = Batch::new();
    let mut prev = GENESIS.to_owned();
    for seq in 1..=n {
        let e = event(seq);
        let r = Record {
            format: Format::V1,
            seq,
            time_ms: 1_700_000_000_000 + seq,
            node: "old".into(),
            request_id: e.request_id,
            principal: e.principal,
            role: e.role,
            operation: e.operation,
            key_id: e.key_id,
            key_version: e.key_version,
            outcome: e.outcome,
            context_hmac: e.context_hmac,
            flags: vec![Flag::KeyCompromised],
            transport: None,
            traceparent: None,
            transfer: None,
            batch_id: None,
            pepper: None,
            count: None,
            transition: None,
            prev: prev.clone(),
        };
        let json = r.to_json().unwrap();
        // Exactly the bytes version 1 hashed: the bare JSON.
        assert_eq!(r.canonical().unwrap(), json);
        prev = r.hash().unwrap();
        batch.put(Tree::Audit, record_key(seq), json);
    }
    let cp = sign_checkpoint(signer, Format::V1, "old", n, &prev, false)
        .unwrap()
        .unwrap();
    batch.put(
        Tree::Audit,
        checkpoint_key(n, cp.time_ms),
        serde_json::to_vec(&cp).unwrap(),
    );
    let tail = Tail {
        seq: n,
        hash: prev,
        checkpointed_seq: n,
        signers: Vec::new(),
    };
    batch.put(Tree::Audit, TAIL, serde_json::to_vec(&tail).unwrap());
    store.apply(&batch).unwrap();
    Arc::new(store)
}

/// A v1 trail of 4 records continued by the current writer with 5 more, exported.
fn upgraded_trail() -> Trail {
    let (signer, public) = audit_key();
    let store = v1_store(&signer, 4);
    let log = AuditLog::start(
        store,
        "new",
        signer.clone(),
        CheckpointPolicy {
            every_records: 3,
            every: Duration::from_secs(3600),
        },
    );
    for i in 5..10 {
        log.append_blocking(event(i)).unwrap();
    }
    let text = log.export().unwrap();
    log.stop();
    Trail {
        text,
        signer,
        public,
    }
}

#[test]
fn the_current_format_frames_what_is_hashed_and_signed() {
    let t = Trail::new(4, 2);
    for line in t.lines() {
        assert!(line.ends_with(",\"format\":2}"), "{line}");
        match serde_json::from_str::<Line>(&line).unwrap() {
            Line::Record(r) => {
                assert_eq!(r.format, Format::V2);
                let canonical = r.canonical().unwrap();
                assert_eq!(
                    canonical,
                    [b"kms-audit-record\0v2\0".as_slice(), &r.to_json().unwrap()].concat()
                );
                assert_eq!(r.hash().unwrap(), crate::audit::chain_hash(&canonical));
            }
            Line::Checkpoint(cp) => {
                assert_eq!(cp.format, Format::V2);
                let signed = cp.signed_bytes().unwrap();
                assert!(signed.starts_with(b"kms-audit-checkpoint\0v2\0{"));
                assert!(checkpoint_signature_valid(&cp, &t.public));
                // The same checkpoint read as V1 is another message: its signature fails.
                let as_v1 = Checkpoint {
                    format: Format::V1,
                    ..cp
                };
                assert!(!checkpoint_signature_valid(&as_v1, &t.public));
            }
        }
    }
}

#[test]
fn a_v1_trail_continued_by_an_upgraded_writer_verifies_as_one() {
    let t = upgraded_trail();
    let lines = t.lines();
    let formats: Vec<(bool, bool)> = lines
        .iter()
        .map(|l| {
            (
                l.contains("\"type\":\"record\""),
                l.contains("\"format\":2"),
            )
        })
        .collect();
    // Four V1 records and the V1 checkpoint over them, then V2 only.
    assert_eq!(
        formats[..5],
        [
            (true, false),
            (true, false),
            (true, false),
            (true, false),
            (false, false)
        ]
    );
    assert!(formats[5..].iter().all(|&(_, v2)| v2), "{lines:#?}");
    let v = check_agrees(&t.text, &t.public).unwrap();
    assert_eq!((v.records, v.last_seq), (9, 9));
    let by_node: Vec<(&str, u64)> = v
        .records_by_node
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(by_node, [("new", 5), ("old", 4)]);
    // The first V2 record chains to the last V1 record's V1 hash.
    assert_eq!(t.record(5).prev, t.record(4).hash().unwrap());
    // Segments cut across the upgrade verify as one trail too.
    let files = t.cut(&[3, 6]);
    let named: Vec<(&str, &String)> = ["a", "b", "live"].into_iter().zip(&files).collect();
    let all = chain(&named, &t.public, Start::Genesis).unwrap();
    assert_eq!((all.records, all.last_seq), (9, 9));
}

#[test]
fn a_line_moved_to_another_format_breaks_where_it_is() {
    let t = upgraded_trail();
    let lines = t.lines();
    let edit = |i: usize, from: &str, to: &str| {
        let mut e = lines.clone();
        assert!(e[i].contains(from), "{}", e[i]);
        e[i] = e[i].replacen(from, to, 1);
        check_agrees(&join(&e), &t.public).unwrap_err()
    };
    // Line 6 is record 5, the first V2 record; line 7 is record 6, which vouches for it.
    assert!(lines[5].contains("\"seq\":5,") && lines[6].contains("\"seq\":6,"));
    assert_eq!(
        edit(5, ",\"format\":2}", "}"),
        broken(
            6,
            "record 5 was edited: the record after it no longer chains to it"
        )
    );
    // A V1 record claiming V2.
    assert_eq!(
        edit(1, "\"}", "\",\"format\":2}"),
        broken(
            2,
            "record 2 was edited: the record after it no longer chains to it"
        )
    );
    // The V1 checkpoint (line 5) claiming V2, and the last (V2) checkpoint claiming V1.
    assert_eq!(
        edit(4, "\"}", "\",\"format\":2}"),
        broken(
            5,
            "checkpoint signature does not verify with the audit public key"
        )
    );
    let last = lines.len() - 1;
    assert_eq!(
        edit(last, ",\"format\":2}", "}"),
        broken(
            last + 1,
            "checkpoint signature does not verify with the audit public key"
        )
    );
    // Version 1 is written by leaving the field out; versions after 2 are not known.
    let e = edit(5, "\"format\":2}", "\"format\":1}");
    assert_eq!(e.line, 6);
    assert!(
        e.problem.starts_with(
            "not an audit line: audit format 1 is written by leaving the format field out"
        ),
        "{e}"
    );
    let e = edit(5, "\"format\":2}", "\"format\":3}");
    assert_eq!(e.line, 6);
    assert!(
        e.problem
            .starts_with("not an audit line: audit format 3 is not known to this version"),
        "{e}"
    );
}

#[test]
fn names_this_version_does_not_know_verify_and_keep_their_bytes() {
    let (signer, public) = audit_key();
    let store: Arc<dyn crate::store::Store> = Arc::new(MemoryStore::new());
    let log = AuditLog::start(store, "n1", signer, CheckpointPolicy::default());
    let odd = Event {
        role: Role::parse("operator"),
        operation: Operation::from_path("/kms.v1.Crypto/Retired"),
        outcome: Outcome::parse("NOT_A_CODE"),
        flags: vec![Flag::parse("from-the-future"), Flag::ExportIncomplete],
        ..event(1)
    };
    let written = log.append_blocking(odd).unwrap();
    let text = log.export().unwrap();
    log.stop();
    assert!(
        text.contains(
            "\"role\":\"operator\",\"operation\":\"Crypto/Retired\",\"key_id\":\"k\",\
             \"key_version\":1,\"outcome\":\"NOT_A_CODE\",\"context_hmac\":null,\
             \"flags\":[\"from-the-future\",\"export-incomplete\"]"
        ),
        "{text}"
    );
    assert_eq!(check_agrees(&text, &public).unwrap().records, 1);
    let Line::Record(back) = serde_json::from_str(text.lines().next().unwrap()).unwrap() else {
        panic!("the first line is a record");
    };
    assert_eq!(back, written);
    assert!(!back.role.is_known() && !back.operation.is_known() && !back.outcome.is_known());
    assert_eq!(back.flags[1], Flag::ExportIncomplete);
}

/// The records of the real v1 fixture (`tests/fixtures/audit-v1/export.jsonl`), stored as the
/// v1 server stored them, continued by the current writer: the export holds the v1 lines byte
/// for byte, then v2 lines, and verifies as one chain. (The fixture's own checkpoints are left
/// out: the key that signed them is gone, and the export is checked with one key.)
#[test]
fn the_v1_fixture_continued_by_the_current_writer_verifies() {
    use crate::audit::layout::{TAIL, Tail, record_key};
    use crate::store::{Batch, Store, Tree};
    let fixture = include_str!("../../../tests/fixtures/audit-v1/export.jsonl");
    let v1_records: Vec<&str> = fixture
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"record\","))
        .collect();
    assert_eq!(v1_records.len(), 9);
    let store = MemoryStore::new();
    let mut batch = Batch::new();
    let mut tail = Tail {
        seq: 0,
        hash: GENESIS.to_owned(),
        checkpointed_seq: 0,
        signers: Vec::new(),
    };
    for line in &v1_records {
        let Line::Record(r) = serde_json::from_str(line).unwrap() else {
            unreachable!()
        };
        assert_eq!(r.format, Format::V1);
        assert_eq!(r.prev, tail.hash);
        tail.seq = r.seq;
        tail.hash = r.hash().unwrap();
        batch.put(Tree::Audit, record_key(r.seq), r.to_json().unwrap());
    }
    batch.put(Tree::Audit, TAIL, serde_json::to_vec(&tail).unwrap());
    store.apply(&batch).unwrap();

    let (signer, public) = audit_key();
    let log = AuditLog::start(
        Arc::new(store),
        "upgraded",
        signer,
        CheckpointPolicy::default(),
    );
    for i in 10..13 {
        log.append_blocking(event(i)).unwrap();
    }
    let text = log.export().unwrap();
    log.stop();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..9],
        v1_records[..],
        "the v1 lines are exported unchanged"
    );
    assert!(
        lines[9].starts_with("{\"type\":\"record\",\"seq\":10,")
            && lines[9].ends_with(",\"format\":2}"),
        "{}",
        lines[9]
    );
    let v = check_agrees(&text, &public).unwrap();
    assert_eq!((v.records, v.last_seq), (12, 12));
}

/// A store that remembers how many entries each batch it applied held, and can refuse them.
struct Batches {
    inner: MemoryStore,
    sizes: std::sync::Mutex<Vec<usize>>,
    broken: std::sync::atomic::AtomicBool,
}

impl crate::store::Store for Batches {
    fn name(&self) -> &'static str {
        "batches"
    }
    fn get(
        &self,
        tree: crate::store::Tree,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
        self.inner.get(tree, key)
    }
    fn scan_prefix(
        &self,
        tree: crate::store::Tree,
        prefix: &[u8],
    ) -> Result<Vec<crate::store::Entry>, crate::store::StoreError> {
        self.inner.scan_prefix(tree, prefix)
    }
    fn apply(&self, batch: &crate::store::Batch) -> Result<(), crate::store::StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::store::StoreError::Unavailable("disk full".into()));
        }
        self.sizes.lock().unwrap().push(batch.len());
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), crate::store::StoreError> {
        Ok(())
    }
}

/// The items of a batch call (`AuditLog::append_all`) are written as one store batch (one
/// group commit), in order and next to each other in the chain, with their batch id inside the
/// hashed bytes; when that write fails, every item fails and nothing is written.
#[test]
fn a_group_of_events_is_one_atomic_write_and_its_batch_id_is_chained() {
    let (signer, public) = audit_key();
    let store = Arc::new(Batches {
        inner: MemoryStore::new(),
        sizes: std::sync::Mutex::default(),
        broken: std::sync::atomic::AtomicBool::new(false),
    });
    let log = AuditLog::start(store.clone(), "n1", signer, CheckpointPolicy::default());
    log.append_blocking(event(0)).unwrap();
    let items: Vec<Event> = (0..50)
        .map(|i| Event {
            request_id: format!("b1.{i}"),
            batch_id: Some("b1".into()),
            pepper: None,
            ..event(i)
        })
        .collect();
    let append_all = |events: Vec<Event>| {
        let (tx, rx) = std::sync::mpsc::channel();
        log.append_all(
            events,
            Box::new(move |r| {
                tx.send(r).unwrap();
            }),
        );
        rx.recv().unwrap()
    };
    let written = append_all(items.clone()).unwrap();
    let seqs: Vec<u64> = written.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (2..52).collect::<Vec<u64>>());
    assert!(
        written
            .iter()
            .zip(&items)
            .all(|(r, e)| r.request_id == e.request_id && r.batch_id.as_deref() == Some("b1"))
    );
    // One record, then 50 records in one batch (each with the new tail and its precondition).
    assert_eq!(*store.sizes.lock().unwrap(), [3, 52]);
    // Nothing to write completes at once.
    assert_eq!(append_all(Vec::new()).unwrap(), []);

    store
        .broken
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e = append_all(items).unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
    store
        .broken
        .store(false, std::sync::atomic::Ordering::SeqCst);

    let text = log.export().unwrap();
    log.stop();
    assert_eq!(check_agrees(&text, &public).unwrap().records, 51);
    let line = text.lines().nth(1).unwrap();
    assert!(
        line.contains("\"request_id\":\"b1.0\",") && line.contains(",\"batch_id\":\"b1\","),
        "{line}"
    );
    // The batch id is chained: moving an item to another batch is found at its line.
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut edited = lines.clone();
    edited[1] = lines[1].replacen("\"batch_id\":\"b1\"", "\"batch_id\":\"b2\"", 1);
    let e = check_agrees(&join(&edited), &public).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.problem.contains("was edited"), "{e}");
    // A record without a batch id has none in its bytes.
    assert!(!lines[0].contains("batch_id"), "{}", lines[0]);
}
