//! Error messages of `sign`, `verify` and `asym-decrypt` against the real server (issue 21
//! item 6): each says what the input must be, and none points at an option the command lacks.
//!
//! - SM2 ciphertext that is not GM/T 0009 DER: the hint names that format (and says when the
//!   input is not DER at all); no `--context` hint, which `asym-decrypt` has no option for.
//! - `--prehashed` with `--sm2-id`: a usage error (the ID is inside the caller's digest).
//! - An SM2 prehashed digest of the wrong length: the hint says "32 bytes" and how long the
//!   input was, for `sign` (refused) and `verify` (not valid, or refused).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DevServer, describe, fails, json, ok};

/// `kms --json key create …` as the admin.
fn create_key(server: &DevServer, args: &[&str]) {
    let mut all = vec!["--json", "key", "create"];
    all.extend_from_slice(args);
    json(&server.kms("admin", &all));
}

#[test]
fn sm2_ciphertext_that_is_not_gmt_0009_der_says_what_is_expected() {
    let server = DevServer::start();
    create_key(
        &server,
        &["--purpose", "asymmetric-decrypt", "--alias", "sm2-inbox"],
    );
    // Raw C1C3C2 as some libraries write it: 04 ‖ x ‖ y ‖ SM3 hash ‖ ciphertext.
    let mut raw = vec![0x04];
    raw.extend((1..=64 + 32 + 16).map(|i: u32| u8::try_from(i % 251).unwrap()));
    server.write("raw.sm2", &raw);
    let stderr = fails(
        &server.kms(
            "app",
            &["asym-decrypt", "--key", "sm2-inbox", "--in", "raw.sm2"],
        ),
        6,
        "decryption failed",
    );
    assert!(stderr.contains("GM/T 0009 DER"), "{stderr}");
    assert!(stderr.contains("This input is not DER"), "{stderr}");
    assert!(stderr.contains("C1C3C2"), "{stderr}");
    assert!(!stderr.contains("--context"), "{stderr}");

    // GM/T 0009 DER from OpenSSL, one byte of its ciphertext flipped: the format is named, and
    // this input is not called "not DER".
    ok(&server.kms(
        "app",
        &["public-key", "sm2-inbox", "--out", "sm2-inbox.pem"],
    ));
    server.write("secret.txt", "for the KMS only");
    let out = std::process::Command::new("openssl")
        .args([
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            "sm2-inbox.pem",
            "-in",
            "secret.txt",
            "-out",
            "secret.sm2",
        ])
        .current_dir(server.cwd())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let mut der = server.read("secret.sm2");
    *der.last_mut().unwrap() ^= 1;
    server.write("tampered.sm2", &der);
    let stderr = fails(
        &server.kms(
            "app",
            &["asym-decrypt", "--key", "sm2-inbox", "--in", "tampered.sm2"],
        ),
        6,
        "decryption failed",
    );
    assert!(stderr.contains("GM/T 0009 DER"), "{stderr}");
    assert!(!stderr.contains("not DER"), "{stderr}");
    assert!(!stderr.contains("--context"), "{stderr}");

    // The symmetric `decrypt`, which has --context, still points at it.
    let stderr = fails(
        &server.kms("app", &["decrypt", "--in", "tampered.sm2"]),
        6,
        "",
    );
    assert!(!stderr.contains("GM/T 0009"), "{stderr}");
}

#[test]
fn prehashed_with_an_sm2_id_is_a_usage_error() {
    let server = DevServer::start();
    server.write("d", [7u8; 32]);
    server.write("sig", [0u8; 8]);
    for args in [
        &[
            "sign",
            "--key",
            "K",
            "--prehashed",
            "--sm2-id",
            "alice",
            "--in",
            "d",
        ][..],
        &[
            "verify",
            "--key",
            "K",
            "--sm2-id",
            "alice",
            "--prehashed",
            "--in",
            "d",
            "--signature",
            "sig",
        ][..],
    ] {
        let stderr = fails(&server.kms("app", args), 2, "cannot be used with");
        assert!(stderr.contains("--sm2-id"), "{stderr}");
        assert!(stderr.contains("--prehashed"), "{stderr}");
    }
}

#[test]
fn an_sm2_digest_of_the_wrong_length_says_32_bytes() {
    let server = DevServer::start();
    create_key(&server, &["--purpose", "sign", "--alias", "signer"]);
    server.write("d20", [7u8; 20]);
    server.write("d48", [7u8; 48]);
    server.write("d32", [7u8; 32]);
    let sign = |input: &str| {
        server.kms(
            "app",
            &[
                "sign",
                "--key",
                "signer",
                "--prehashed",
                "--in",
                input,
                "--out",
                "sig",
            ],
        )
    };
    // Refused by the server's length check (32, 48 or 64) and by SM2's own (32).
    for (input, len) in [("d20", 20), ("d48", 48)] {
        let stderr = fails(&sign(input), 6, "32 bytes");
        assert!(stderr.contains("an SM2 digest is 32 bytes"), "{stderr}");
        assert!(
            stderr.contains(&format!("This input is {len} bytes")),
            "{stderr}"
        );
    }
    // The right length signs, and verifies as a digest.
    ok(&sign("d32"));
    let verify = |input: &str| {
        server.kms(
            "app",
            &[
                "verify",
                "--key",
                "signer",
                "--prehashed",
                "--in",
                input,
                "--signature",
                "sig",
            ],
        )
    };
    ok(&verify("d32"));
    // Refused outright (20), or "not valid" (48, which RSA would take): both say 32 bytes.
    let stderr = fails(&verify("d20"), 6, "an SM2 digest is 32 bytes");
    assert!(stderr.contains("This input is 20 bytes"), "{stderr}");
    let stderr = fails(&verify("d48"), 1, "the signature is not valid");
    assert!(stderr.contains("an SM2 digest is 32 bytes"), "{stderr}");
    // A wrong signature over a 32-byte digest keeps the general hint.
    server.write("d32b", [8u8; 32]);
    let stderr = fails(&verify("d32b"), 1, "the signature is not valid");
    assert!(!stderr.contains("32 bytes"), "{stderr}");
}
