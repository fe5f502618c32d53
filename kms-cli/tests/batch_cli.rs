//! `kms encrypt --batch` and `kms decrypt --batch` (issue 20 item 1) against the real server:
//! JSON Lines in, one JSON line out per item in order, through the batch RPC in batches within
//! the server's limits; refused items are error lines with their code and message, the command
//! then exits with the first failure's code; a malformed input line stops it before anything is
//! sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{DevServer, describe, fails, json, ok};
use serde_json::{Value, json};

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn jsonl(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

/// 1200 items (two batches: the server takes 1000 at most), one with an unknown key and a third
/// of them without a key (the `--key` default): encrypt, then decrypt the output as it is; the
/// error line passes through, every other line opens to its plaintext; the trail holds one
/// record per item in two batches. A wrong context fails its line alone; bad input stops the
/// command before anything is sent.
#[test]
fn batch_jsonl_round_trips_through_encrypt_and_decrypt() {
    let server = DevServer::start();
    let key = json(&server.kms(
        "admin",
        &[
            "--json",
            "key",
            "create",
            "--purpose",
            "encrypt",
            "--alias",
            "rows",
        ],
    ));
    let key_id = key["key_id"].as_str().unwrap().to_owned();
    let items: Vec<Value> = (0..1200)
        .map(|i| {
            let plaintext = B64.encode(format!("row {i}"));
            match i {
                5 => json!({"key": "ghost", "plaintext": plaintext}),
                i if i % 3 == 0 => json!({"plaintext": plaintext, "context": {"row": i.to_string()}}),
                i => json!({"key": "rows", "plaintext": plaintext, "context": {"row": i.to_string()}}),
            }
        })
        .collect();
    server.write("items.jsonl", jsonl(&items));

    // One item failed: every line is written, then the command fails with NOT_FOUND's code.
    let out = server.kms(
        "app",
        &[
            "encrypt",
            "--batch",
            "items.jsonl",
            "--key",
            "rows",
            "--out",
            "sealed.jsonl",
        ],
    );
    let stderr = fails(
        &out,
        4,
        "1 of 1200 items failed; the first, line 6: alias default:ghost not found",
    );
    assert!(
        stderr.contains("hint: every line of the output"),
        "{stderr}"
    );
    let sealed = lines(&String::from_utf8(server.read("sealed.jsonl")).unwrap());
    assert_eq!(sealed.len(), 1200);
    for (i, line) in sealed.iter().enumerate() {
        if i == 5 {
            assert_eq!(line["error"]["code"], "NOT_FOUND", "{line}");
            let message = line["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("alias default:ghost not found (request "),
                "{message}"
            );
            assert!(line.get("ciphertext").is_none(), "{line}");
            continue;
        }
        assert_eq!(line["key_id"], key_id.as_str(), "line {}: {line}", i + 1);
        assert_eq!(line["key_version"], 1);
        assert_eq!(line["context"]["row"], i.to_string());
        assert!(!b64(&line["ciphertext"]).is_empty());
    }

    // The encrypt output decrypts as it is; the error line passes through, so lines still align.
    ok(&server.kms(
        "app",
        &[
            "decrypt",
            "--batch",
            "sealed.jsonl",
            "--out",
            "opened.jsonl",
        ],
    ));
    let opened_text = String::from_utf8(server.read("opened.jsonl")).unwrap();
    let opened = lines(&opened_text);
    assert_eq!(opened.len(), 1200);
    for (i, line) in opened.iter().enumerate() {
        if i == 5 {
            assert_eq!(line, &sealed[5]);
            continue;
        }
        assert_eq!(
            b64(&line["plaintext"]),
            format!("row {i}").as_bytes(),
            "{line}"
        );
        assert_eq!(line["key_id"], key_id.as_str());
        assert_eq!(line["key_compromised"], false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(server.path("opened.jsonl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "plaintext output is private");
    }

    // A wrong context fails its own line (INVALID_ARGUMENT: exit 6); the others open.
    let mut tampered = sealed;
    tampered[7]["context"]["row"] = json!("999");
    server.write("tampered.jsonl", jsonl(&tampered[..10]));
    let out = server.kms("app", &["decrypt", "--batch", "tampered.jsonl"]);
    fails(
        &out,
        6,
        "1 of 10 items failed; the first, line 8: decryption failed",
    );
    let got = lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(got.len(), 10, "{}", describe(&out));
    assert_eq!(got[7]["error"]["code"], "INVALID_ARGUMENT");
    assert_eq!(b64(&got[8]["plaintext"]), b"row 8");

    // The trail: one Crypto/Encrypt record per item, in two batches (1000 and 200), and as many
    // Crypto/Decrypt records as there were ciphertexts.
    ok(&server.kms("auditor", &["audit", "export", "--out", "audit.jsonl"]));
    let trail = lines(&String::from_utf8(server.read("audit.jsonl")).unwrap());
    let mut batches = std::collections::BTreeMap::<String, usize>::new();
    for r in trail.iter().filter(|r| r["operation"] == "Crypto/Encrypt") {
        let id = r["batch_id"].as_str().expect("every item has its batch id");
        *batches.entry(id.to_owned()).or_default() += 1;
    }
    let mut sizes: Vec<usize> = batches.values().copied().collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [200, 1000]);
    let decrypts = trail
        .iter()
        .filter(|r| r["operation"] == "Crypto/Decrypt")
        .count();
    assert_eq!(decrypts, 1199 + 9);

    // Malformed input stops the command before anything is sent, naming the line.
    server.write(
        "bad.jsonl",
        "{\"key\":\"rows\",\"plaintext\":\"eA==\"}\n{\"key\":\"rows\",\"plaintext\":\"not base64!\"}\n",
    );
    let out = server.kms(
        "app",
        &["encrypt", "--batch", "bad.jsonl", "--out", "never.jsonl"],
    );
    fails(&out, 2, "--batch input line 2");
    assert!(!server.path("never.jsonl").exists());
    server.write(
        "blank.jsonl",
        "{\"key\":\"rows\",\"plaintext\":\"eA==\"}\n\n",
    );
    fails(
        &server.kms("app", &["encrypt", "--batch", "blank.jsonl"]),
        2,
        "--batch input line 2 is empty",
    );
    server.write("typo.jsonl", "{\"key\":\"rows\",\"plaintex\":\"eA==\"}\n");
    fails(
        &server.kms("app", &["encrypt", "--batch", "typo.jsonl"]),
        2,
        "unknown field `plaintex`",
    );
    // No key anywhere.
    server.write("nokey.jsonl", "{\"plaintext\":\"eA==\"}\n");
    fails(
        &server.kms("app", &["encrypt", "--batch", "nokey.jsonl"]),
        2,
        "no \"key\"",
    );
    // An admin may not encrypt: the whole batch is refused, as the single call.
    server.write("one.jsonl", "{\"key\":\"rows\",\"plaintext\":\"eA==\"}\n");
    fails(
        &server.kms("admin", &["encrypt", "--batch", "one.jsonl"]),
        3,
        "may not encrypt in batches",
    );
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}
