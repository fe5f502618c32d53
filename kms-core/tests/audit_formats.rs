//! The audit files of every format verify with the current code: the fixture in
//! `tests/fixtures/audit-v1/` was written by format v1, the one in
//! `tests/fixtures/audit-rotated/` across two rotations of the audit key (see their READMEs). That a v1 trail
//! continued by the current writer verifies as one is tested beside the verifier
//! (`audit::verify::tests`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use kms_core::audit::{
    AuditKeys, Broken, ChainError, Flag, Format, Line, Operation, Outcome, Role, Start, verify,
    verify_files,
};
use kms_core::crypto::PublicKey;
use kms_core::policy::Policy;

fn v1(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audit-v1")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn v1_key() -> PublicKey {
    PublicKey::from_spki_pem(Policy::default(), &read(&v1("audit-public-key.pem"))).unwrap()
}

/// The segment files of the v1 fixture then its anchored export, in chain order.
fn v1_chain() -> Vec<(String, String)> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(v1("archive"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let mut files: Vec<(String, String)> = segments
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                read(p),
            )
        })
        .collect();
    files.push((
        "anchored-export.jsonl".into(),
        read(&v1("anchored-export.jsonl")),
    ));
    files
}

#[test]
fn a_v1_export_verifies() {
    let v = verify(&read(&v1("export.jsonl")), &v1_key()).unwrap();
    assert_eq!((v.records, v.checkpoints, v.last_seq), (9, 3, 9));
    assert_eq!(v.anchor, None);
    assert_eq!(v.records_by_node.get("node-fixture"), Some(&9));
}

#[test]
fn v1_segments_and_an_anchored_v1_export_verify_as_one_trail() {
    let files = v1_chain();
    assert_eq!(files.len(), 3);
    let v = verify_files(
        files.iter().map(|(n, t)| (n.as_str(), t.as_bytes())),
        &v1_key(),
        Start::Genesis,
    )
    .unwrap();
    assert!(v.complete_from_genesis);
    assert_eq!((v.first_seq, v.last_seq, v.records), (1, 9, 9));
    let whole = verify(&read(&v1("export.jsonl")), &v1_key()).unwrap();
    assert_eq!(v.last_hash, whole.last_hash);
}

#[test]
fn a_tampered_v1_export_is_named_at_its_line() {
    let text = read(&v1("export.jsonl"));
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Line 2 is record 2, a decrypt with a compromised key: hiding the flag is caught there,
    // since record 3 still chains to the original.
    assert!(lines[1].contains("\"flags\":[\"key-compromised\"]"));
    lines[1] = lines[1].replacen("[\"key-compromised\"]", "[]", 1);
    let e = verify(&(lines.join("\n") + "\n"), &v1_key()).unwrap_err();
    assert_eq!(
        e,
        Broken {
            line: 2,
            problem: "record 2 was edited: the record after it no longer chains to it".into()
        }
    );
}

#[test]
fn a_tampered_v1_segment_breaks_the_chain_at_its_file_and_line() {
    let mut files = v1_chain();
    // The first segment's closing checkpoint claims another time: its signature fails.
    let (name, text) = &mut files[0];
    let last = text.lines().last().unwrap().to_owned();
    let edited = last.replacen("\"time_ms\":1", "\"time_ms\":2", 1);
    assert_ne!(edited, last);
    *text = text.replace(&last, &edited);
    let name = name.clone();
    let e = verify_files(
        files.iter().map(|(n, t)| (n.as_str(), t.as_bytes())),
        &v1_key(),
        Start::Genesis,
    )
    .unwrap_err();
    assert_eq!(
        e,
        ChainError::Broken {
            file: name,
            broken: Broken {
                line: 4,
                problem: "checkpoint signature does not verify with the audit public key".into()
            }
        }
    );
}

/// Every line of every v1 file parses into the typed record, in format V1, and re-serialises to
/// its exact bytes (which is what lets its hash and signature be checked).
#[test]
fn v1_lines_parse_into_typed_values_and_keep_their_bytes() {
    let mut texts = vec![read(&v1("export.jsonl"))];
    texts.extend(v1_chain().into_iter().map(|(_, t)| t));
    for text in &texts {
        for raw in text.lines() {
            let line: Line = serde_json::from_str(raw).unwrap();
            assert_eq!(serde_json::to_string(&line).unwrap(), raw);
            let format = match &line {
                Line::Record(r) => r.format,
                Line::Checkpoint(cp) => cp.format,
            };
            assert_eq!(format, Format::V1, "{raw}");
        }
    }
    let records: Vec<_> = read(&v1("export.jsonl"))
        .lines()
        .filter_map(|l| match serde_json::from_str(l).unwrap() {
            Line::Record(r) => Some(r),
            Line::Checkpoint(_) => None,
        })
        .collect();
    let typed: Vec<(Role, Operation, Outcome, Vec<Flag>)> = records
        .iter()
        .map(|r| {
            (
                r.role.clone(),
                r.operation.clone(),
                r.outcome.clone(),
                r.flags.clone(),
            )
        })
        .collect();
    let no_such_method = Operation::from_path("/kms.v1.Crypto/NoSuchMethod");
    assert_eq!(
        typed,
        [
            (Role::App, Operation::Encrypt, Outcome::Ok, vec![]),
            (
                Role::App,
                Operation::Decrypt,
                Outcome::Ok,
                vec![Flag::KeyCompromised]
            ),
            (Role::Admin, Operation::CreateKey, Outcome::Ok, vec![]),
            (
                Role::Unregistered,
                Operation::Encrypt,
                Outcome::PermissionDenied,
                vec![]
            ),
            (
                Role::Unregistered,
                no_such_method.clone(),
                Outcome::Unimplemented,
                vec![]
            ),
            (
                Role::Auditor,
                Operation::ExportAudit,
                Outcome::Cancelled,
                vec![Flag::ExportIncomplete]
            ),
            (Role::App, Operation::Sign, Outcome::InvalidArgument, vec![]),
            (
                Role::Admin,
                Operation::Unseal,
                Outcome::FailedPrecondition,
                vec![]
            ),
            (
                Role::App,
                Operation::Verify,
                Outcome::Ok,
                vec![Flag::KeyCompromised]
            ),
        ]
    );
    // The one name the server does not have stays as written.
    assert!(!no_such_method.is_known());
    assert_eq!(no_such_method.as_str(), "Crypto/NoSuchMethod");
    assert_eq!(
        records[1].transport.as_deref(),
        Some("TLCP ECC_SM4_GCM_SM3")
    );
    assert_eq!(records[5].transport, None);
}

/// Taking the `format` field as 2 on a v1 line is caught: the bytes hashed change.
#[test]
fn a_v1_record_relabelled_v2_is_named_at_its_line() {
    let text = read(&v1("export.jsonl"));
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines[2].starts_with("{\"type\":\"record\",\"seq\":3,"));
    lines[2] = lines[2].replacen("\"}", "\",\"format\":2}", 1);
    let relabelled = lines.join("\n") + "\n";
    assert_ne!(relabelled, text);
    assert_eq!(
        verify(&relabelled, &v1_key()).unwrap_err(),
        Broken {
            line: 3,
            problem: "record 3 was edited: the record after it no longer chains to it".into()
        }
    );
}

// ---------------------------------------------------------------------------------------------
// A trail across two rotations of the audit key (`tests/fixtures/audit-rotated/`).

fn rotated(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audit-rotated")
        .join(name)
}

/// The bundle `kms audit public-key` writes: every version, one PEM block each.
fn rotated_keys() -> AuditKeys {
    let text = read(&rotated("audit-public-keys.pem"));
    let end = "-----END PUBLIC KEY-----";
    AuditKeys::new(
        text.split_inclusive(end)
            .filter(|block| block.contains(end))
            .map(|block| PublicKey::from_spki_pem(Policy::default(), block.trim()).unwrap())
            .collect(),
    )
}

fn rotated_oldest() -> PublicKey {
    PublicKey::from_spki_pem(Policy::default(), &read(&rotated("oldest.pem"))).unwrap()
}

#[test]
fn a_trail_across_two_rotations_verifies_with_every_key_or_the_oldest() {
    let keys = rotated_keys();
    assert_eq!(keys.keys().len(), 3);
    assert_eq!(keys.keys()[0], rotated_oldest());
    let text = read(&rotated("export.jsonl"));
    let v = verify(&text, &rotated_oldest()).unwrap();
    assert_eq!(v, verify(&text, &keys).unwrap());
    assert_eq!((v.records, v.last_seq), (13, 13));
    let handed: Vec<(u32, u32)> = v
        .transitions
        .iter()
        .map(|t| (t.from_version, t.to_version))
        .collect();
    assert_eq!(handed, [(1, 2), (2, 3)]);
    // Only the last version given: the first transition's signer is unknown.
    let newest = keys.keys()[2].clone();
    let e = verify(&text, &newest).unwrap_err();
    assert_eq!(e.line, 5);
    assert!(e.problem.contains("not trusted at this point"), "{e}");
}

#[test]
fn rotated_segments_and_the_anchored_export_verify_as_one_trail() {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(rotated("archive"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let mut files: Vec<(String, String)> = segments
        .iter()
        .map(|p| (p.display().to_string(), read(p)))
        .collect();
    files.push((
        "anchored-export.jsonl".into(),
        read(&rotated("anchored-export.jsonl")),
    ));
    for keys in [AuditKeys::from(rotated_oldest()), rotated_keys()] {
        let v = verify_files(
            files.iter().map(|(n, t)| (n.as_str(), t.as_bytes())),
            &keys,
            Start::Genesis,
        )
        .unwrap();
        assert_eq!((v.first_seq, v.last_seq, v.records), (1, 13, 13));
        assert_eq!(v.transitions.len(), 2);
    }
}

#[test]
fn an_edited_or_dropped_transition_in_the_rotated_fixture_fails() {
    let text = read(&rotated("export.jsonl"));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[10].contains("\"transition\":{"), "{}", lines[10]);
    // Edited: handed over to version 4 instead of 3.
    let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    edited[10] = lines[10].replacen("\"to_version\":3", "\"to_version\":4", 1);
    assert_ne!(edited[10], lines[10]);
    assert_eq!(
        verify(&(edited.join("\n") + "\n"), &rotated_oldest()).unwrap_err(),
        Broken {
            line: 11,
            problem: "record 10 is an audit key transition (version 2 to 4) whose signature by \
                      version 2 does not verify: the transition record was edited"
                .into()
        }
    );
    // Dropped: the checkpoint after it is signed by a version nothing introduced.
    let mut dropped = lines.clone();
    dropped.remove(10);
    let e = verify(&(dropped.join("\n") + "\n"), &rotated_keys()).unwrap_err();
    assert_eq!(e.line, 11);
    assert!(
        e.problem
            .contains("which no transition record before it introduced"),
        "{e}"
    );
}
