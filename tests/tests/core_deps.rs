//! `kms-core` builds with no runtime and no networking (issue 17): its normal dependency tree,
//! as `cargo tree` resolves it from the lock file, holds none of the crates below. The PostgreSQL
//! store lives in `kms-store-postgres`, which only the server (and tests) depend on.

// Test helpers count as test code (clippy's allow-unwrap-in-tests) only under cfg(test).
#![cfg(test)]

use std::path::Path;
use std::process::Command;

/// Crates that would mean an async runtime or network I/O in the core.
const FORBIDDEN: [&str; 7] = [
    "tokio",
    "tokio-postgres",
    "deadpool",
    "deadpool-postgres",
    "hyper",
    "tonic",
    "socket2",
];

/// The package names in `cargo tree -p kms-core -e normal --features FEATURES` (offline, from
/// the lock file; nothing is built).
fn core_dependencies(features: &str) -> Vec<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root");
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "kms-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--features",
            features,
        ])
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // Lines read `name vX.Y.Z (path)` with ` (*)` for repeats.
    let names: Vec<String> = stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(
        names.iter().any(|n| n == "kms-core"),
        "cargo tree did not list kms-core:\n{stdout}"
    );
    names
}

fn assert_no_runtime(features: &str) {
    let names = core_dependencies(features);
    let found: Vec<&str> = FORBIDDEN
        .iter()
        .copied()
        .filter(|forbidden| names.iter().any(|n| n == forbidden))
        .collect();
    assert!(
        found.is_empty(),
        "kms-core (features `{features}`) must build without a runtime or network stack, but its \
         normal dependency tree contains: {}. Move the code needing it into a crate of its own \
         (as kms-store-postgres); `cargo tree -p kms-core -e normal -i {}` shows who pulls it in.",
        found.join(", "),
        found[0]
    );
}

#[test]
fn kms_core_has_no_runtime_or_network_dependency() {
    assert_no_runtime("");
}

/// The test utilities (the store conformance suite) add no runtime either.
#[test]
fn kms_core_test_util_has_no_runtime_or_network_dependency() {
    assert_no_runtime("test-util");
}
