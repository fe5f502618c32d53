//! Checks that hold across crates: what `kms-server selftest` prints against what `kms-core`'s
//! algorithm list and policy say.

// Test helpers count as test code (clippy's allow-unwrap-in-tests) only under cfg(test).
#![cfg(test)]

use kms_core::alg::{DigestAlg, KeySpec, PasswordHashAlg};
use kms_core::policy::{Policy, PolicyMode};

/// Runs `kms-server selftest [flags]` in-process; returns (exit status, stdout).
fn selftest(flags: &[&str]) -> (u8, String) {
    let args = ["kms-server", "selftest"].iter().chain(flags);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = kms_server::run_cli(args.copied(), &mut out, &mut err);
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    (status, String::from_utf8(out).unwrap())
}

/// The names of the tests the report says passed.
fn passed(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("PASS"))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect()
}

/// Whether a self-test named `test` exercises `spec`: it is named after the spec (`sm4-gcm`) or
/// one of its operations (`sm2-sign`, `sm2-encrypt`). The RSA sizes share one implementation,
/// which the `rsa-*` tests exercise at 2048 bits: self-tests are per algorithm, not per key size
/// (FIPS 140-3 IG 10.3.A).
fn covers(test: &str, spec: KeySpec) -> bool {
    let name = spec.name();
    test == name
        || test
            .strip_prefix(name)
            .is_some_and(|op| op.starts_with('-'))
        || (spec.rsa_bits().is_some() && test.starts_with("rsa-"))
}

fn check_policy(mode: PolicyMode, flags: &[&str]) {
    let policy = Policy::from_config(mode);
    let (status, stdout) = selftest(flags);
    assert_eq!(status, kms_server::EXIT_OK, "{stdout}");
    let passed = passed(&stdout);

    for spec in KeySpec::ALL {
        let tested = passed.iter().any(|t| covers(t, spec));
        if policy.allows(spec) {
            assert!(
                tested,
                "{} allowed but not self-tested:\n{stdout}",
                spec.name()
            );
        } else {
            assert!(
                !tested,
                "{} not allowed but self-tested:\n{stdout}",
                spec.name()
            );
        }
    }
    // The password shield's functions: PBKDF2-HMAC-SM3 always, argon2id where new hashes may
    // use it (the standard policy).
    for alg in PasswordHashAlg::ALL {
        assert_eq!(
            passed.contains(&alg.name()),
            alg.is_gm() || mode == PolicyMode::Standard,
            "{alg}:\n{stdout}"
        );
    }
    for digest in DigestAlg::ALL {
        let approved = policy.approve_digest(digest).is_ok();
        assert_eq!(
            passed.contains(&digest.name()),
            approved,
            "digest {} approved = {approved}:\n{stdout}",
            digest.name()
        );
    }
}

#[test]
fn selftest_covers_every_spec_the_standard_policy_allows() {
    check_policy(PolicyMode::Standard, &[]);
}

#[test]
fn selftest_covers_exactly_the_gm_only_specs() {
    check_policy(PolicyMode::GmOnly, &["--gm-only"]);
}
