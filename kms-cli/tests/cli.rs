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
        ("sm2", "sign,asymmetric-decrypt,password", "yes"),
        ("rsa-2048", "sign,asymmetric-decrypt", "no"),
        ("rsa-3072", "sign,asymmetric-decrypt,password", "no"),
        ("rsa-4096", "sign,asymmetric-decrypt,password", "no"),
        ("hmac-sm3", "mac,pepper,tokenize", "yes"),
        ("hmac-sha256", "mac", "no"),
        ("hmac-sha384", "mac", "no"),
        ("hmac-sha512", "mac", "no"),
        ("sm4-ff1", "tokenize", "yes"),
        ("aes-256-ff1", "tokenize", "no"),
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
    assert_eq!(names, ["sm4-gcm", "sm2", "hmac-sm3", "sm4-ff1"]);
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
        serde_json::json!(["sign", "asymmetric-decrypt", "password"])
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

/// `kms request sign --private-key` is the partner's side and needs no server: its usage
/// errors come before any connection setting is looked for, and name the rule.
#[test]
fn request_sign_offline_refuses_what_it_cannot_sign() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, b"{}").unwrap();
    let body = body.to_str().unwrap();
    // The key file is never read: each refusal comes first.
    let sign = |extra: &[&str]| {
        let mut args = vec![
            "request",
            "sign",
            "--private-key",
            "no-such-partner.key",
            "--path",
            "/v1/transfers",
            "--in",
            body,
        ];
        args.extend_from_slice(extra);
        kms_without_settings(&args)
    };
    for (extra, says) in [
        (
            &["--scheme", "hmac-sm3"][..],
            "error: hmac-sm3 signs with a KMS key: give --key (the MAC key shared with the partner)",
        ),
        (
            &["--scheme", "ecdsa"],
            "error: \"ecdsa\" is not a request scheme: use sm2, hmac-sm3 or rsa-pss",
        ),
        (
            &["--scheme", "sm2", "--method", "post"],
            "error: the request is malformed: method must be upper-case ASCII letters (GET, POST)",
        ),
        (
            &["--scheme", "sm2", "--nonce", "0102"],
            "error: the request is malformed: nonce must be 8 to 64 bytes; it is 2 bytes",
        ),
    ] {
        let output = sign(extra);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert_eq!(stderr.lines().next(), Some(says), "{extra:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{extra:?}");
    }
    // --key and --private-key are one or the other.
    let output = sign(&["--scheme", "sm2", "--key", "partner-sig"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot be used with"), "{stderr}");
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

/// `kms audit verify` over files made by the real audit writer with a fresh SM2 audit key, cut
/// into archive segments the way retention files them: each segment and the live export start
/// with the closing checkpoint of the file before (the anchor).
mod audit_verify {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};
    use std::sync::Arc;
    use std::time::Duration;

    use kms_core::audit::writer::{AuditLog, CheckpointPolicy, Signer};
    use kms_core::audit::{Checkpoint, Event, Format, Line};
    use kms_core::store::MemoryStore;
    use serde_json::Value;

    struct Trail {
        dir: tempfile::TempDir,
        signer: Signer,
        /// The whole export, from the genesis.
        lines: Vec<String>,
    }

    impl Trail {
        /// 12 records, a checkpoint every 5; `audit.pem` and `full.jsonl` in a fresh folder.
        fn new() -> Self {
            let (signer, public) = kms_core::audit::writer::ephemeral_signer("audit-key").unwrap();
            let log = AuditLog::start(
                Arc::new(MemoryStore::new()),
                "node-1",
                signer.clone(),
                CheckpointPolicy {
                    every_records: 5,
                    every: Duration::from_secs(3600),
                },
            );
            for i in 0..12 {
                log.append_blocking(Event {
                    request_id: format!("req-{i}"),
                    principal: "kms://app".into(),
                    role: "app".into(),
                    operation: "Crypto/Encrypt".into(),
                    outcome: "OK".into(),
                    ..Event::default()
                })
                .unwrap();
            }
            let text = log.export().unwrap();
            log.stop();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("audit.pem"), public.to_pem()).unwrap();
            std::fs::write(dir.path().join("full.jsonl"), &text).unwrap();
            Self {
                dir,
                signer,
                lines: text.lines().map(str::to_owned).collect(),
            }
        }

        fn seq_of(line: &str) -> (u64, Option<String>) {
            match serde_json::from_str::<Line>(line).unwrap() {
                Line::Record(r) => (r.seq, Some(r.hash().unwrap())),
                Line::Checkpoint(cp) => (cp.seq, None),
            }
        }

        /// A signed closing checkpoint over record `seq`.
        fn closing(&self, seq: u64) -> String {
            let hash = self
                .lines
                .iter()
                .find_map(|l| match Self::seq_of(l) {
                    (s, Some(hash)) if s == seq => Some(hash),
                    _ => None,
                })
                .unwrap();
            let key = self.signer.newest().unwrap();
            let mut cp = Checkpoint {
                format: Format::CURRENT,
                seq,
                time_ms: 1,
                node: "node-1".into(),
                last_hash: hash,
                closes_export: true,
                key_fingerprint: Some(key.fingerprint()),
                key_id: key.key_id,
                key_version: key.version,
                signature: String::new(),
            };
            let sig = self
                .signer
                .sign(key.version, &cp.signed_bytes().unwrap())
                .unwrap();
            cp.signature = hex::encode(sig);
            serde_json::to_string(&Line::Checkpoint(cp)).unwrap()
        }

        /// Writes `archive/audit-<first>-<last>.jsonl` for segments ending at `ends`, and
        /// `live.jsonl` with the rest; returns the segment paths (relative to the folder).
        fn cut(&self, ends: &[u64]) -> Vec<String> {
            std::fs::create_dir_all(self.dir.path().join("archive")).unwrap();
            let (last, body) = self.lines.split_last().unwrap();
            let mut anchor: Option<(u64, String)> = None;
            let mut segments = Vec::new();
            for end in ends.iter().copied().map(Some).chain([None]) {
                let from = anchor.as_ref().map_or(1, |(seq, _)| seq + 1);
                let mut out: Vec<String> = anchor.iter().map(|(_, l)| l.clone()).collect();
                out.extend(
                    body.iter()
                        .filter(|l| {
                            let (seq, _) = Self::seq_of(l);
                            seq >= from && end.is_none_or(|e| seq <= e)
                        })
                        .cloned(),
                );
                let close = end.map_or_else(|| last.clone(), |e| self.closing(e));
                out.push(close.clone());
                let name = match end {
                    Some(e) => format!("archive/audit-{from:020}-{e:020}.jsonl"),
                    None => "live.jsonl".to_owned(),
                };
                std::fs::write(self.dir.path().join(&name), out.join("\n") + "\n").unwrap();
                if end.is_some() {
                    segments.push(name);
                }
                anchor = end.map(|e| (e, close));
            }
            segments
        }

        fn kms(&self, args: &[&str]) -> Output {
            Command::new(env!("CARGO_BIN_EXE_kms"))
                .current_dir(self.dir.path())
                .args(args)
                .output()
                .unwrap()
        }

        fn verify(&self, files: &[&str], extra: &[&str]) -> Output {
            let mut args = vec!["audit", "verify"];
            args.extend_from_slice(files);
            args.extend_from_slice(&["--public-key", "audit.pem"]);
            args.extend_from_slice(extra);
            self.kms(&args)
        }

        fn verify_json(&self, files: &[&str], extra: &[&str]) -> (Option<i32>, Value) {
            let mut args = vec!["--json", "audit", "verify"];
            args.extend_from_slice(files);
            args.extend_from_slice(&["--public-key", "audit.pem"]);
            args.extend_from_slice(extra);
            let out = self.kms(&args);
            let v = serde_json::from_slice(&out.stdout).unwrap();
            (out.status.code(), v)
        }
    }

    fn text(out: &Output) -> (String, String) {
        (
            String::from_utf8(out.stdout.clone()).unwrap(),
            String::from_utf8(out.stderr.clone()).unwrap(),
        )
    }

    /// The archive folder as a shell glob lists it: sorted by name.
    fn globbed(dir: &Path) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir.join("archive"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| format!("archive/{}", p.file_name().unwrap().to_str().unwrap()))
            .collect()
    }

    #[test]
    fn segments_and_the_live_export_verify_as_one_trail() {
        let t = Trail::new();
        // Ends chosen so that the unpadded numbers would sort wrongly (10 before 4).
        let segments = t.cut(&[4, 10]);
        let globbed = globbed(t.dir.path());
        assert_eq!(globbed, segments, "segment names sort in chain order");
        let mut files: Vec<&str> = globbed.iter().map(String::as_str).collect();
        files.push("live.jsonl");

        let out = t.verify(&files, &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("3 files, 12 records,"), "{stdout}");
        assert!(stdout.contains("continuing the one before"), "{stdout}");
        assert!(stdout.contains("1 to 12"), "{stdout}");
        assert!(
            stdout.contains("yes: every record from the genesis"),
            "{stdout}"
        );

        let (code, v) = t.verify_json(&files, &[]);
        assert_eq!(code, Some(0), "{v}");
        assert_eq!(v["valid"], true);
        assert_eq!(v["records"], 12);
        assert_eq!(
            (v["first_seq"].as_u64(), v["last_seq"].as_u64()),
            (Some(1), Some(12))
        );
        assert_eq!(v["complete_from_genesis"], true);
        assert_eq!(v["anchor_seq"], Value::Null);
        let per_file: Vec<(u64, u64)> = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["first_seq"].as_u64().unwrap(),
                    f["last_seq"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(per_file, [(1, 4), (5, 10), (11, 12)]);
        assert_eq!(v["files"][1]["anchor_seq"], 4);

        // One whole export, as before: the same counts, from the genesis.
        let out = t.verify(&["full.jsonl"], &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("12 records, "), "{stdout}");
        assert!(
            stdout.contains("unbroken to the closing checkpoint"),
            "{stdout}"
        );
        let (_, v) = t.verify_json(&["full.jsonl"], &[]);
        assert_eq!(v["file"], "full.jsonl");
        assert_eq!(v["last_seq"], 12);
    }

    #[test]
    fn a_missing_segment_fails_naming_the_files() {
        let t = Trail::new();
        let segments = t.cut(&[4, 9]);
        let out = t.verify(&[&segments[0], "live.jsonl"], &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(
            stderr.contains(&format!(
                "live.jsonl starts after record 9 but the previous file {} ends at record 4: a \
                 segment is missing",
                segments[0]
            )),
            "{stderr}"
        );
        assert!(stderr.contains("hint: give every file"), "{stderr}");
        // Out of order: the same, at the file that does not follow.
        let out = t.verify(
            &[&segments[1], &segments[0], "live.jsonl"],
            &["--from-anchor"],
        );
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("starts at the genesis (record 1) but follows"),
            "{stderr}"
        );

        let (code, v) = t.verify_json(&[&segments[0], "live.jsonl"], &[]);
        assert_eq!(code, Some(1));
        assert_eq!(v["valid"], false);
        assert_eq!(v["file"], "live.jsonl");
        assert_eq!(v["previous_file"], segments[0].as_str());
        assert!(
            v["problem"]
                .as_str()
                .unwrap()
                .contains("a segment is missing"),
            "{v}"
        );
    }

    #[test]
    fn a_first_file_at_an_anchor_needs_from_anchor() {
        let t = Trail::new();
        let segments = t.cut(&[4, 9]);
        let files = [segments[1].as_str(), "live.jsonl"];
        let out = t.verify(&files, &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(
            stderr.contains("the audit files are incomplete"),
            "{stderr}"
        );
        assert!(
            stderr.contains("starts after record 4, not at the genesis"),
            "{stderr}"
        );
        assert!(stderr.contains("--from-anchor"), "{stderr}");
        // The live export alone is the same case.
        assert_eq!(t.verify(&["live.jsonl"], &[]).status.code(), Some(1));

        let out = t.verify(&files, &["--from-anchor"]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        assert!(
            stdout.contains(
                "starts after record 4 (earlier records are in archive segments not given here)"
            ),
            "{stdout}"
        );
        assert!(stdout.contains("5 to 12"), "{stdout}");
        let (code, v) = t.verify_json(&["live.jsonl"], &["--from-anchor"]);
        assert_eq!(code, Some(0), "{v}");
        assert_eq!(v["complete_from_genesis"], false);
        assert_eq!(
            (v["anchor_seq"].as_u64(), v["first_seq"].as_u64()),
            (Some(9), Some(10))
        );
        // --from-anchor still accepts a chain that starts at the genesis, and says so.
        let (_, v) = t.verify_json(&["full.jsonl"], &["--from-anchor"]);
        assert_eq!(v["complete_from_genesis"], true);
    }

    #[test]
    fn an_edited_line_in_a_segment_names_the_file_and_the_line() {
        let t = Trail::new();
        let segments = t.cut(&[4, 9]);
        let path = t.dir.path().join(&segments[1]);
        let edited = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("\"req-6\"", "\"req-X\"", 1);
        std::fs::write(&path, edited).unwrap();
        let out = t.verify(&[&segments[0], &segments[1], "live.jsonl"], &[]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        // Record 7 (req-6) is on line 5: after the anchor, record 5, the checkpoint over it
        // (one every 5 records) and record 6.
        assert!(
            stderr.contains(&format!(
                "the audit trail does not verify: {} line 5: record 7 was edited",
                segments[1]
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains("line 5 reads: {\"type\":\"record\",\"seq\":7,"),
            "{stderr}"
        );
    }
}
