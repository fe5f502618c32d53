//! The `kms-supply-chain` binary on the repository's own `deny.toml`: the real lock passes, and a
//! lock or metadata with a fabricated violation fails with exit code 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where .ci/supply-chain looks: $KMS_ADVISORY_DB, else ../shared beside the repository.
fn db() -> PathBuf {
    std::env::var_os("KMS_ADVISORY_DB")
        .map_or_else(|| repo().join("../shared/advisory-db"), PathBuf::from)
}

const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

fn metadata(packages: &[(&str, &str)]) -> String {
    let list: Vec<String> = packages
        .iter()
        .map(|(name, license)| {
            format!(
                r#"{{"name":"{name}","version":"1.0.0","license":"{license}","source":"{CRATES_IO}","publish":null}}"#
            )
        })
        .collect();
    format!(r#"{{"packages":[{}]}}"#, list.join(","))
}

/// Runs the binary with `deny.toml` from the repository and the given lock and metadata.
fn run(lock: &str, metadata: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("deny.toml"), dir.path().join("deny.toml")).unwrap();
    std::fs::write(dir.path().join("Cargo.lock"), lock).unwrap();
    std::fs::write(dir.path().join("metadata.json"), metadata).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kms-supply-chain"))
        .args(["--root".as_ref(), dir.path().as_os_str()])
        .args(["--db".as_ref(), db().as_os_str()])
        .args([
            "--metadata".as_ref(),
            dir.path().join("metadata.json").as_os_str(),
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn lock(packages: &[(&str, &str)]) -> String {
    let mut out = String::from("version = 4\n");
    for (name, version) in packages {
        out.push_str(&format!(
            "\n[[package]]\nname = \"{name}\"\nversion = \"{version}\"\nsource = \"{CRATES_IO}\"\n"
        ));
    }
    out
}

#[test]
fn the_repository_lock_passes() {
    let real = std::fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    let (code, out) = run(&real, &metadata(&[("serde", "MIT OR Apache-2.0")]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("supply chain: ok"), "{out}");
    // Ignored advisories are listed with their reasons, not dropped silently.
    assert!(
        out.contains("ignored: RUSTSEC-2023-0071 rsa 0.10."),
        "{out}"
    );
    assert!(
        out.contains("(reason: rsa 0.10 performs no private-key operation on request data"),
        "{out}"
    );
}

#[test]
fn a_known_vulnerable_version_fails() {
    // sharks 0.5: RUSTSEC-2024-0398 (biased Shamir coefficients), the reason we use blahaj.
    let (code, out) = run(&lock(&[("sharks", "0.5.0")]), &metadata(&[]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: RUSTSEC-2024-0398 sharks 0.5.0"),
        "{out}"
    );
}

#[test]
fn rsa_before_0_10_is_banned_although_its_advisory_is_ignored() {
    let (code, out) = run(
        &lock(&[("rsa", "0.9.8"), ("num-bigint-dig", "0.8.4")]),
        &metadata(&[]),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("num-bigint-dig 0.8.4 is banned"), "{out}");
}

#[test]
fn a_second_sm2_a_git_source_and_a_copyleft_license_fail() {
    let mut l = lock(&[("sm2", "0.13.3"), ("sm2", "0.14.0")]);
    l.push_str(
        "\n[[package]]\nname = \"sm4\"\nversion = \"0.6.0\"\nsource = \"git+https://github.com/x/y#abc\"\n",
    );
    let (code, out) = run(&l, &metadata(&[("gpl-thing", "GPL-3.0-only")]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("sm2 is locked in 2 versions"), "{out}");
    assert!(out.contains("git+https://github.com/x/y"), "{out}");
    assert!(out.contains("gpl-thing 1.0.0: license"), "{out}");
}

#[test]
fn aws_lc_is_allowed_under_kms_core_only() {
    let real = std::fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    assert!(
        real.contains("name = \"aws-lc-rs\""),
        "the lock has aws-lc-rs"
    );
    // rustls on its aws-lc-rs provider (its default) would add rustls as a dependent.
    let rustls = real
        .find("name = \"rustls\"\n")
        .expect("the lock has rustls");
    let list = "dependencies = [\n";
    let at = rustls + real[rustls..].find(list).expect("rustls has dependencies") + list.len();
    let switched = format!("{} \"aws-lc-rs\",\n{}", &real[..at], &real[at..]);
    let (code, out) = run(&switched, &metadata(&[]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is banned except under kms-core, but rustls depends on it"),
        "{out}"
    );
    // aws-lc-sys alone, with nothing depending on it, is banned outright.
    let (code, out) = run(&lock(&[("aws-lc-sys", "0.47.0")]), &metadata(&[]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("aws-lc-sys 0.47.0 is banned"), "{out}");
}
