//! Runs the built `kms` binary the way a user would.

// Test helpers count as test code (clippy's allow-unwrap-in-tests) only under cfg(test).
#![cfg(test)]

use std::process::{Command, Output};

fn kms(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kms"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout_of(args: &[&str]) -> String {
    let output = kms(args);
    assert!(output.status.success(), "kms {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// `(spec, purposes, gm)` for every row after the header.
fn rows(stdout: &str) -> Vec<(String, String, String)> {
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["SPEC", "PURPOSES", "GM"]);
    lines
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols.len(), 3, "{line:?}");
            (cols[0].into(), cols[1].into(), cols[2].into())
        })
        .collect()
}

#[test]
fn algorithms_lists_every_canonical_spec_once() {
    let rows = rows(&stdout_of(&["algorithms"]));
    let expected = [
        ("sm4-gcm", "encrypt", "yes"),
        ("aes-256-gcm", "encrypt", "no"),
        ("sm2", "sign,asymmetric-decrypt", "yes"),
        ("rsa-2048", "sign,asymmetric-decrypt", "no"),
        ("rsa-3072", "sign,asymmetric-decrypt", "no"),
        ("rsa-4096", "sign,asymmetric-decrypt", "no"),
        ("hmac-sm3", "mac", "yes"),
        ("hmac-sha256", "mac", "no"),
        ("hmac-sha384", "mac", "no"),
        ("hmac-sha512", "mac", "no"),
    ];
    let rows: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn algorithms_gm_only_lists_sm2_sm3_sm4_only() {
    let rows = rows(&stdout_of(&["algorithms", "--gm-only"]));
    let names: Vec<&str> = rows.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names, ["sm4-gcm", "sm2", "hmac-sm3"]);
    assert!(rows.iter().all(|(_, _, gm)| gm == "yes"));
}

#[test]
fn version_names_the_binary_and_the_crate_version() {
    let stdout = stdout_of(&["--version"]);
    assert_eq!(stdout.trim(), format!("kms {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_the_algorithms_command() {
    let stdout = stdout_of(&["--help"]);
    assert!(stdout.contains("Usage: kms"), "{stdout}");
    assert!(stdout.contains("algorithms"), "{stdout}");
}

#[test]
fn unknown_command_is_a_usage_error() {
    let output = kms(&["encrypt-everything"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("Usage: kms"), "{stderr}");
}

#[test]
fn algorithms_json_lists_specs_with_purposes() {
    let stdout = stdout_of(&["--json", "algorithms", "--gm-only"]);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows[0]["spec"], "sm4-gcm");
    assert_eq!(
        rows[1]["purposes"],
        serde_json::json!(["sign", "asymmetric-decrypt"])
    );
    assert_eq!(rows[2]["gm"], true);
}

#[test]
fn completions_are_generated_for_common_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let stdout = stdout_of(&["completions", shell]);
        assert!(stdout.contains("kms"), "{shell}");
        assert!(stdout.contains("schedule-destruction"), "{shell}");
    }
}

/// A command that needs a server, with no connection settings at all.
fn kms_without_settings(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kms"));
    for var in [
        "KMS_PROFILE",
        "KMS_HOME",
        "KMS_ENDPOINT",
        "KMS_CA",
        "KMS_CERT",
        "KMS_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(dir.path()).args(args).output().unwrap()
}

#[test]
fn no_connection_settings_is_a_usage_error_with_a_hint() {
    let output = kms_without_settings(&["status"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr.lines().next().unwrap(),
        "error: no KMS server connection configured"
    );
    assert!(
        stderr
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("hint: pass --profile"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_profile_name_is_a_usage_error() {
    let output = kms_without_settings(&["--profile", "nobody", "key", "list"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("error: no profile named \"nobody\""),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
}

#[test]
fn every_subcommand_help_exits_zero() {
    for args in [
        &["key", "create", "--help"][..],
        &["grant", "add", "--help"],
        &["sign", "--help"],
        &["pki", "issue", "--help"],
    ] {
        let output = kms(args);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(stdout.contains("Usage: kms"), "{args:?}: {stdout}");
    }
}
