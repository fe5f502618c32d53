//! Runs the built `kms-server` binary the way an operator would.

// Test helpers count as test code (clippy's allow-unwrap-in-tests) only under cfg(test).
#![cfg(test)]

use std::process::{Command, Output};

fn kms_server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kms-server"))
        .args(args)
        .output()
        .unwrap()
}

/// The test names of the report's `PASS`/`FAIL` lines.
fn test_names(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("PASS" | "FAIL") => words.next(),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn selftest_standard_policy_passes_and_lists_gm_and_international_algorithms() {
    let output = kms_server(&["selftest"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("self-tests (policy: standard)\n"),
        "{stdout}"
    );

    let names = test_names(&stdout);
    for expected in [
        "csprng",
        "sm3",
        "sm4-gcm",
        "hmac-sm3",
        "sm2-sign",
        "sm2-encrypt",
        "aes-256-gcm",
        "hmac-sha256",
        "rsa-sign",
        "rsa-oaep",
    ] {
        assert!(names.contains(&expected), "{expected} missing:\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let summary = format!("{} passed, 0 failed", names.len());
    assert_eq!(stdout.lines().last(), Some(summary.as_str()), "{stdout}");
}

#[test]
fn selftest_gm_only_runs_no_international_algorithm() {
    let output = kms_server(&["selftest", "--gm-only"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("self-tests (policy: gm-only)\n"),
        "{stdout}"
    );

    let names = test_names(&stdout);
    for expected in ["sm3", "sm4-gcm", "hmac-sm3", "sm2-sign", "sm2-encrypt"] {
        assert!(names.contains(&expected), "{expected} missing:\n{stdout}");
    }
    for name in &names {
        assert!(
            !(name.starts_with("rsa") || name.starts_with("aes") || name.contains("sha")),
            "{name} ran under a GM-only policy:\n{stdout}"
        );
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let output = kms_server(&["serve-everything"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("unrecognized subcommand"), "{stderr}");
    assert!(stderr.contains("Usage: kms-server"), "{stderr}");
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let output = kms_server(&[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("Usage: kms-server"), "{stderr}");
}

#[test]
fn dev_refuses_a_rate_limit_that_is_not_a_rate() {
    for bad in ["0", "-5", "NaN", "inf", "fast"] {
        let output = kms_server(&["dev", &format!("--rate-limit={bad}")]);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("is not a rate above zero (requests per second)"),
            "{bad}: {stderr}"
        );
    }
}
