//! Replays the checked-in fuzz corpus and the kept regressions through the fuzz targets, as an
//! ordinary test: `fuzz/corpus/<target>/*` and `fuzz/regressions/<target>/*` for every target in
//! [`kms_fuzz_targets::TARGETS`]. A missing or empty corpus folder fails the test, and so does a
//! fuzz target file without a corpus or a corpus without a target.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use kms_fuzz_targets::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// Runs every file through `target`, naming each file that panics.
fn replay(name: &str, target: fn(&[u8]), inputs: &[PathBuf]) -> Vec<String> {
    let mut failed = Vec::new();
    for path in inputs {
        let data = fs::read(path).unwrap();
        if panic::catch_unwind(|| target(&data)).is_err() {
            failed.push(format!("{name}: {}", path.display()));
        }
    }
    failed
}

#[test]
fn every_target_has_a_fuzz_binary_and_a_corpus() {
    let listed: BTreeSet<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    let binaries: BTreeSet<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    let binaries: BTreeSet<&str> = binaries.iter().map(String::as_str).collect();
    assert_eq!(
        listed, binaries,
        "TARGETS and fuzz/fuzz_targets/*.rs differ"
    );
    let corpora: BTreeSet<String> = fs::read_dir(fuzz_dir().join("corpus"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let corpora: BTreeSet<&str> = corpora.iter().map(String::as_str).collect();
    assert_eq!(listed, corpora, "TARGETS and fuzz/corpus/* differ");
}

#[test]
fn corpus_and_regressions_replay_without_panics() {
    let mut failed = Vec::new();
    let mut total = 0usize;
    for (name, target) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name}/ is missing or empty: the replay would test nothing"
        );
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        total += corpus.len() + regressions.len();
        failed.extend(replay(name, *target, &corpus));
        failed.extend(replay(name, *target, &regressions));
    }
    assert!(
        failed.is_empty(),
        "inputs that panic:\n{}",
        failed.join("\n")
    );
    eprintln!("replayed {total} inputs through {} targets", TARGETS.len());
}

/// The replay can fail: a target that panics on some input is reported with the file's name.
#[test]
fn replay_reports_a_panicking_input() {
    let dir = std::env::temp_dir().join(format!("kms-fuzz-replay-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("boom"), b"boom").unwrap();
    fs::write(dir.join("fine"), b"fine").unwrap();
    fn picky(data: &[u8]) {
        assert_ne!(data, b"boom", "found it");
    }
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let failed = replay("picky", picky, &files(&dir));
    panic::set_hook(hook);
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].ends_with("boom"), "{failed:?}");
}
