//! Audit key rotation (issue 18, item 4): a trail that spans rotations verifies from its oldest
//! key (the transition records introduce the later ones) and from every key; an edited or
//! dropped transition, and a checkpoint by a version no transition introduced, fail.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::archive::{ArchiveOutcome, ArchivePolicy};
use crate::audit::layout::sign_with_newest;
use crate::audit::writer::{AuditLog, CheckpointPolicy, MemorySigner, Signer};
use crate::audit::{Event, Format, Operation, Outcome, Role};
use crate::store::{MemoryStore, Store};

fn event(i: u64) -> Event {
    Event {
        request_id: format!("r{i}"),
        principal: "app-a".into(),
        role: Role::App,
        operation: Operation::Encrypt,
        outcome: Outcome::Ok,
        ..Event::default()
    }
}

fn policy() -> CheckpointPolicy {
    CheckpointPolicy {
        every_records: 3,
        every: Duration::from_secs(3600),
    }
}

/// A trail whose audit key is rotated twice: once after the first record, before any
/// checkpoint, and once mid-trail. Two writers (nodes) share the store.
struct Rotated {
    key: Arc<MemorySigner>,
    logs: [AuditLog; 2],
}

impl Rotated {
    fn new() -> Self {
        let key = MemorySigner::new("audit-key").unwrap();
        let signer: Signer = key.clone();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let logs = [
            AuditLog::start(Arc::clone(&store), "n1", signer.clone(), policy()),
            AuditLog::start(Arc::clone(&store), "n2", signer, policy()),
        ];
        let t = Self { key, logs };
        t.append(0..1);
        assert_eq!(t.key.rotate().unwrap(), 2);
        t.append(1..8);
        assert_eq!(t.key.rotate().unwrap(), 3);
        t.append(8..14);
        t
    }

    fn append(&self, range: std::ops::Range<u64>) {
        for i in range {
            self.logs[usize::from(i % 2 == 1)]
                .append_blocking(event(i))
                .unwrap();
        }
    }

    fn export(&self) -> String {
        self.logs[0].export().unwrap()
    }

    fn oldest(&self) -> PublicKey {
        self.key.public_key(1).unwrap()
    }

    fn all(&self) -> AuditKeys {
        AuditKeys::new(self.key.public_keys())
    }
}

impl Drop for Rotated {
    fn drop(&mut self) {
        for log in &self.logs {
            log.stop();
        }
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The 0-based index of the transition record to `version`.
fn transition_line(lines: &[String], version: u32) -> usize {
    lines
        .iter()
        .position(|l| {
            matches!(serde_json::from_str::<Line>(l),
                Ok(Line::Record(r)) if r.transition.as_ref().is_some_and(|t| t.to_version == version))
        })
        .unwrap()
}

#[test]
fn a_trail_across_two_rotations_verifies_from_its_oldest_key_and_from_every_key() {
    let t = Rotated::new();
    let text = t.export();
    let from_oldest = verify(&text, &t.oldest()).unwrap();
    assert_eq!(from_oldest, verify(&text, &t.all()).unwrap());
    assert_eq!(from_oldest.records, 16, "14 events and 2 transitions");
    let versions: Vec<(u32, u32)> = from_oldest
        .transitions
        .iter()
        .map(|t| (t.from_version, t.to_version))
        .collect();
    assert_eq!(versions, [(1, 2), (2, 3)]);
    let key3 = t.key.public_key(3).unwrap();
    assert_eq!(
        from_oldest.transitions[1].to_fingerprint,
        fingerprint(&key3)
    );
    // Every checkpoint names its version and that version's fingerprint; the export closes
    // with the newest.
    let checkpoints: Vec<Checkpoint> = text
        .lines()
        .filter_map(|l| match serde_json::from_str::<Line>(l).unwrap() {
            Line::Checkpoint(cp) => Some(cp),
            Line::Record(_) => None,
        })
        .collect();
    for cp in &checkpoints {
        let key = t.key.public_key(cp.key_version).unwrap();
        assert_eq!(
            cp.key_fingerprint.as_deref(),
            Some(fingerprint(&key).as_str())
        );
    }
    assert_eq!(checkpoints.last().unwrap().key_version, 3);
    // The transition records are the writer's own, in the trail's vocabulary.
    let lines = lines(&text);
    let Ok(Line::Record(r)) = serde_json::from_str::<Line>(&lines[transition_line(&lines, 2)])
    else {
        unreachable!()
    };
    assert_eq!(r.operation, Operation::AuditKeyTransition);
    assert_eq!(r.role, Role::System);
    assert_eq!(r.principal, crate::audit::AUDIT_WRITER_PRINCIPAL);
    // A later key alone is not the trail's: version 1 signed its first signed line, the
    // transition to version 2.
    let broken = verify(&text, &t.key.public_key(2).unwrap()).unwrap_err();
    assert_eq!(broken.line, transition_line(&lines, 2) + 1);
    assert!(
        broken
            .problem
            .contains("hands the audit key over from version 1 (sm3 ")
            && broken
                .problem
                .contains("which is not trusted at this point of the trail"),
        "{broken}"
    );
}

#[test]
fn two_writers_hand_over_once() {
    let t = Rotated::new();
    t.key.rotate().unwrap();
    t.logs[0].checkpoint_now().unwrap();
    t.logs[1].checkpoint_now().unwrap();
    let text = t.export();
    let v = verify(&text, &t.oldest()).unwrap();
    assert_eq!(v.transitions.len(), 3);
    assert_eq!(v.transitions[2].to_version, 4);
}

#[test]
fn an_edited_transition_record_fails_at_its_line() {
    let t = Rotated::new();
    let text = t.export();
    let owned = lines(&text);
    let i = transition_line(&owned, 3);
    let Ok(Line::Record(r)) = serde_json::from_str::<Line>(&owned[i]) else {
        unreachable!()
    };
    let expected = Broken {
        line: i + 1,
        problem: format!(
            "record {} is an audit key transition (version 2 to 3) whose signature by version 2 \
             does not verify: the transition record was edited",
            r.seq
        ),
    };
    // Another key swapped in (with its fingerprint), an edited time, a forged signature.
    let stranger = MemorySigner::new("x").unwrap().public_key(1).unwrap();
    let Some(tr) = &r.transition else {
        unreachable!()
    };
    let edits = [
        owned[i]
            .replacen(&tr.to_public_key, &hex::encode(stranger.spki_der()), 1)
            .replacen(&tr.to_fingerprint, &fingerprint(&stranger), 1),
        owned[i].replacen(
            &format!("\"time_ms\":{}", r.time_ms),
            &format!("\"time_ms\":{}", r.time_ms + 1),
            1,
        ),
        owned[i].replacen(&tr.signature, &tr.signature.replace('a', "b"), 1),
    ];
    for edited in edits {
        assert_ne!(edited, owned[i]);
        let mut e = owned.clone();
        e[i] = edited;
        for keys in [AuditKeys::from(t.oldest()), t.all()] {
            assert_eq!(verify(&join(&e), &keys).unwrap_err(), expected);
        }
    }
}

#[test]
fn a_dropped_transition_record_fails() {
    let t = Rotated::new();
    let owned = lines(&t.export());
    // The second transition: the first is the trail's first signed line, whose drop the
    // chain shows (the checkpoint after it no longer matches).
    let first = transition_line(&owned, 2);
    let mut e = owned.clone();
    e.remove(first);
    for keys in [AuditKeys::from(t.oldest()), t.all()] {
        let broken = verify(&join(&e), &keys).unwrap_err();
        assert_eq!(broken.line, first + 1, "{broken}");
    }
    let i = transition_line(&owned, 3);
    let mut e = owned;
    e.remove(i);
    // The checkpoint after it (signed by version 3) is the line that fails.
    let with_every_key = verify(&join(&e), &t.all()).unwrap_err();
    assert_eq!(with_every_key.line, i + 1);
    assert!(
        with_every_key
            .problem
            .contains("signed by audit key version 3")
            && with_every_key
                .problem
                .contains("which no transition record before it introduced"),
        "{with_every_key}"
    );
    let from_oldest = verify(&join(&e), &t.oldest()).unwrap_err();
    assert_eq!(from_oldest.line, i + 1, "{from_oldest}");
}

#[test]
fn a_checkpoint_by_a_version_no_transition_introduced_fails() {
    let key = MemorySigner::new("audit-key").unwrap();
    let signer: Signer = key.clone();
    let log = AuditLog::start(Arc::new(MemoryStore::new()), "n1", signer.clone(), policy());
    for i in 0..4 {
        log.append_blocking(event(i)).unwrap();
    }
    let text = log.export().unwrap();
    log.stop();
    // Version 2 exists, but nothing in the trail hands over to it: a closing checkpoint signed
    // by it stands in for the one version 1 signed.
    key.rotate().unwrap();
    let mut owned = lines(&text);
    let Ok(Line::Checkpoint(closing)) = serde_json::from_str::<Line>(owned.last().unwrap()) else {
        unreachable!()
    };
    let forged = sign_with_newest(
        &signer,
        Format::CURRENT,
        "n1",
        closing.seq,
        &closing.last_hash,
        true,
    )
    .unwrap()
    .unwrap();
    assert_eq!(forged.key_version, 2);
    let n = owned.len();
    owned[n - 1] = serde_json::to_string(&Line::Checkpoint(forged)).unwrap();
    let text = join(&owned);
    let with_every_key = verify(&text, &AuditKeys::new(key.public_keys())).unwrap_err();
    assert_eq!(with_every_key.line, n);
    assert!(
        with_every_key
            .problem
            .contains("which no transition record before it introduced"),
        "{with_every_key}"
    );
    assert_eq!(
        verify(&text, &key.public_key(1).unwrap()).unwrap_err(),
        Broken {
            line: n,
            problem: "checkpoint signature does not verify with the audit public key".into()
        }
    );
}

/// Archive segments cut across both rotations chain with the export from the oldest key: each
/// segment's closing checkpoint is signed by the version the trail had at its last record.
#[test]
fn archive_segments_across_rotations_verify_from_the_oldest_key() {
    let t = Rotated::new();
    let dir = tempfile::tempdir().unwrap();
    let archive = ArchivePolicy {
        dir: dir.path().to_owned(),
        hot_records: 3,
        segment_records: 3,
        every: Duration::from_secs(3600),
    };
    let mut segments = 0;
    while let ArchiveOutcome::Archived(_) = t.logs[1].archive_once(&archive).unwrap() {
        segments += 1;
    }
    assert_eq!(segments, 5, "16 records, 3 per segment, at most 3 kept hot");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut texts: Vec<(String, String)> = files
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(p).unwrap()))
        .collect();
    texts.push(("export".into(), t.export()));
    let chain = |keys: AuditKeys| {
        verify_files(
            texts.iter().map(|(n, t)| (n.as_str(), t.as_bytes())),
            &keys,
            Start::Genesis,
        )
    };
    let v = chain(AuditKeys::from(t.oldest())).unwrap();
    assert_eq!(v.records, 16);
    assert_eq!(v.transitions.len(), 2);
    assert_eq!(chain(t.all()).unwrap(), v);
    // A segment after the first rotation, alone, verifies with every key given (its anchor may
    // be signed by a later version), but not from the oldest key: the transition is before it.
    let last_segment = &texts[texts.len() - 2].1;
    verify(last_segment, &t.all()).unwrap();
    assert_eq!(
        verify(last_segment, &t.oldest()).unwrap_err(),
        Broken {
            line: 1,
            problem: "the anchor (the checkpoint on the first line) does not verify with the \
                      audit public key"
                .into()
        }
    );
}
