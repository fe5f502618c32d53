//! The audit files of every format verify with the current code: the fixture in
//! `tests/fixtures/audit-v1/` was written by the first format (see its README).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use kms_core::audit::{Broken, ChainError, Start, verify, verify_files};
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
