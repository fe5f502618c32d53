//! The `kms` binary end to end against the real server (issue 5, "Tests that must exist"; issue
//! 6 §4 for `audit` and `inventory`): every command, as the dev `admin`, `app` and `auditor`,
//! with `--json` parsed, and failures checked for their exit code and message.
//!
//! Each test has a dev server of its own (`common::DevServer`, in-process, on 127.0.0.1:0), so the
//! tests run in parallel and one that seals the KMS or counts audit records sees only its own
//! doing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{DevServer, describe, fails, filed_id, json, ok};
use serde_json::Value;

/// `kms --json key create …` as the admin; the key object.
fn create_key(server: &DevServer, args: &[&str]) -> Value {
    let mut all = vec!["--json", "key", "create"];
    all.extend_from_slice(args);
    json(&server.kms("admin", &all))
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------------
// System: status, init, unseal, seal, backup, restore; connection failures.

#[test]
fn init_and_unseal_a_blank_server() {
    let server = DevServer::start_blank();
    let text = ok(&server.kms("admin", &["status"]));
    assert!(text.contains("initialized  no"), "{text}");
    assert!(text.contains("kms init"), "{text}");

    // Without holders the CLI asks for them.
    fails(
        &server.kms("admin", &["init", "--threshold", "2"]),
        2,
        "name the share holders with --holders",
    );
    // The custodian's share is encrypted to its SM2 key (made by OpenSSL, which opens it too).
    let key = server.path("custodian.key");
    let key = key.to_str().unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
        out.stdout
    };
    openssl(&["genpkey", "-algorithm", "SM2", "-out", key]);
    server.write("custodian.pub", openssl(&["pkey", "-in", key, "-pubout"]));
    let v = json(&server.kms(
        "admin",
        &[
            "--json",
            "init",
            "--holders",
            "kms://admin,kms://custodian,kms://custodian-2",
            "--holder-key",
            &format!("kms://custodian={}", server.path("custodian.pub").display()),
            "--threshold",
            "2",
            "--share-dir",
            "shares",
        ],
    ));
    assert_eq!(v["admin_subject"], "kms://admin");
    assert_eq!(v["threshold"], 2);
    assert_eq!(v["share_files"].as_array().unwrap().len(), 3);
    assert!(v.get("shares").is_none(), "{v}");
    for name in [
        "share-1-admin.txt",
        "share-2-custodian.sm2",
        "share-3-custodian-2.txt",
    ] {
        assert!(!server.read(&format!("shares/{name}")).is_empty(), "{name}");
    }

    let v = json(&server.kms("admin", &["--json", "status"]));
    assert_eq!(v["initialized"], true);
    assert_eq!(v["sealed"], true);
    assert_eq!(v["shares"], 3);
    assert_eq!(v["threshold"], 2);
    fails(&server.kms("admin", &["key", "list"]), 5, "sealed");

    let v = json(&server.kms(
        "admin",
        &[
            "--json",
            "unseal",
            "--share-file",
            "shares/share-1-admin.txt",
        ],
    ));
    assert_eq!(v["sealed"], true);
    assert_eq!(v["progress"], 1);
    let text = ok(&server.kms("admin", &["status"]));
    assert!(text.contains("1 of 2 shares given"), "{text}");
    // The admin cannot give a second share: shares count people.
    fails(
        &server.kms(
            "admin",
            &["unseal", "--share-file", "shares/share-3-custodian-2.txt"],
        ),
        6,
        "already given a share",
    );
    // The custodian opens its share with its own key and gives it from stdin.
    let share = openssl(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        key,
        "-in",
        server
            .path("shares/share-2-custodian.sm2")
            .to_str()
            .unwrap(),
    ]);
    let text = ok(&server.kms_in("custodian", &["unseal"], &share));
    assert_eq!(text.trim(), "unsealed");
    let v = json(&server.kms("admin", &["--json", "status"]));
    assert_eq!(v["sealed"], false);
    assert_eq!(v["caller_subject"], "kms://admin");
    assert_eq!(v["caller_role"], "admin");

    let stderr = fails(
        &server.kms("admin", &["init", "--shares", "1", "--threshold", "1"]),
        6,
        "already initialised",
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    // Usage errors are caught before the server is asked.
    fails(
        &server.kms("admin", &["init", "--shares", "2", "--threshold", "3"]),
        2,
        "--threshold 3 is more than --shares 2",
    );

    // The new KMS has only its administrator: the app is unknown until registered.
    fails(&server.kms("app", &["random", "--bytes", "8"]), 3, "");
    ok(&server.kms("admin", &["principal", "add", "kms://app", "--role", "app"]));
    let v = json(&server.kms("app", &["--json", "random", "--bytes", "8"]));
    assert_eq!(b64(&v["random"]).len(), 8);
}

#[test]
fn seal_then_unseal_with_the_dev_share_file() {
    let server = DevServer::start();
    let key = create_key(&server, &["--purpose", "encrypt", "--alias", "seal-test"]);
    assert_eq!(key["state"], "enabled");
    fails(&server.kms("app", &["seal"]), 3, "");
    fails(&server.kms("auditor", &["seal"]), 3, "");

    let v = json(&server.kms("admin", &["--json", "seal"]));
    assert_eq!(v["sealed"], true);
    let v = json(&server.kms("admin", &["--json", "status"]));
    assert_eq!(v["sealed"], true);
    assert_eq!(v["initialized"], true);
    let stderr = fails(&server.kms("admin", &["key", "list"]), 5, "sealed");
    assert!(
        stderr.contains("hint: ") && stderr.contains("kms unseal"),
        "{stderr}"
    );
    fails(
        &server.kms_in("app", &["encrypt", "--key", "seal-test"], b"data"),
        5,
        "sealed",
    );
    fails(
        &server.kms("app", &["datakey", "--key", "seal-test", "--spec", "sm4"]),
        5,
        "sealed",
    );

    let text = ok(&server.kms(
        "admin",
        &["unseal", "--share-file", "kms-dev/unseal-share.txt"],
    ));
    assert_eq!(text.trim(), "unsealed");
    let v = json(&server.kms("admin", &["--json", "status"]));
    assert_eq!(v["sealed"], false);
    let ct = server.kms_in("app", &["encrypt", "--key", "seal-test"], b"after unseal");
    ok(&ct);
    let pt = server.kms_in("app", &["decrypt"], &ct.stdout);
    assert_eq!(ok(&pt), "after unseal");
}

#[test]
fn backup_and_restore_into_a_blank_server() {
    let source = DevServer::start();
    create_key(&source, &["--purpose", "encrypt", "--alias", "kept"]);
    let ct = source.kms_in(
        "app",
        &["encrypt", "--key", "kept", "--context", "a=1"],
        b"survives a restore",
    );
    ok(&ct);
    let v = json(&source.kms("admin", &["--json", "backup", "--out", "store.kmsbak"]));
    let bytes = v["bytes"].as_u64().unwrap();
    let backup = source.read("store.kmsbak");
    assert_eq!(u64::try_from(backup.len()).unwrap(), bytes);
    assert!(!source.path("store.kmsbak.partial").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(source.path("store.kmsbak"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    fails(
        &source.kms("app", &["backup", "--out", "app.kmsbak"]),
        3,
        "",
    );
    // An initialised KMS refuses a restore.
    fails(
        &source.kms(
            "admin",
            &[
                "restore",
                "--in",
                "store.kmsbak",
                "--share-file",
                "kms-dev/unseal-share.txt",
            ],
        ),
        6,
        "uninitialised",
    );

    let target = DevServer::start_blank();
    target.write("store.kmsbak", &backup);
    target.write("share.txt", source.read("kms-dev/unseal-share.txt"));
    target.write("card.kms", &ct.stdout);
    let v = json(&target.kms(
        "admin",
        &[
            "--json",
            "restore",
            "--in",
            "store.kmsbak",
            "--share-file",
            "share.txt",
        ],
    ));
    assert!(v["entries"].as_u64().unwrap() > 0, "{v}");
    let v = json(&target.kms("admin", &["--json", "status"]));
    assert_eq!(v["sealed"], true);
    ok(&target.kms("admin", &["unseal", "--share-file", "share.txt"]));
    let keys = json(&target.kms("admin", &["--json", "key", "list"]));
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["aliases"] == serde_json::json!(["kept"])),
        "{keys}"
    );
    let pt = target.kms("app", &["decrypt", "--context", "a=1", "--in", "card.kms"]);
    assert_eq!(ok(&pt), "survives a restore");
}

#[test]
fn a_stopped_server_is_unavailable() {
    let mut server = DevServer::start();
    ok(&server.kms("admin", &["status"]));
    server.stop();
    let stderr = fails(&server.kms("admin", &["status"]), 5, "cannot connect");
    assert!(stderr.contains("hint: "), "{stderr}");
    // No settings at all is a usage error, before any connection.
    fails(
        &server.kms_offline(&["status"]),
        2,
        "no KMS server connection",
    );
}

// ---------------------------------------------------------------------------------------------
// Keys, principals and grants.

#[test]
fn key_lifecycle_as_admin() {
    let server = DevServer::start();
    // Plain output is the id alone, for `K=$(kms key create …)`.
    let id = ok(&server.kms(
        "admin",
        &[
            "key",
            "create",
            "--purpose",
            "mac",
            "--algorithm",
            "hmac-sm3",
        ],
    ));
    let id = id.trim();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.matches('-').count(), 4, "{id}");

    let key = create_key(
        &server,
        &[
            "--purpose",
            "encrypt",
            "--algorithm",
            "sm4-gcm",
            "--alias",
            "orders",
            "--rotation-period",
            "90d",
            "--description",
            "order data",
        ],
    );
    let k = key["key_id"].as_str().unwrap().to_owned();
    assert_eq!(key["purpose"], "encrypt");
    assert_eq!(key["algorithm"], "sm4-gcm");
    assert_eq!(key["state"], "enabled");
    assert_eq!(key["namespace"], "default");
    assert_eq!(key["description"], "order data");
    assert_eq!(key["aliases"], serde_json::json!(["orders"]));
    assert_eq!(key["rotation_period_seconds"], 90 * 86_400);
    assert_eq!(key["current_version"], 1);
    assert_eq!(key["versions"].as_array().unwrap().len(), 1);
    assert!(key["next_rotation_at"].as_u64().is_some(), "{key}");

    // Defaults by purpose: the GM algorithms.
    let sign = create_key(&server, &["--purpose", "sign"]);
    assert_eq!(sign["algorithm"], "sm2");
    assert_eq!(sign["purpose"], "sign");
    assert!(sign["versions"][0]["public_key_der"].is_string(), "{sign}");
    let rsa = create_key(
        &server,
        &["--purpose", "asymmetric-decrypt", "--algorithm", "rsa-2048"],
    );
    assert_eq!(rsa["algorithm"], "rsa-2048");
    assert_eq!(rsa["purpose"], "asymmetric-decrypt");

    let list = json(&server.kms("admin", &["--json", "key", "list"]));
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    for want in [id, k.as_str(), sign["key_id"].as_str().unwrap()] {
        assert!(ids.contains(&want), "{want} not in {ids:?}");
    }
    for k in list.as_array().unwrap() {
        for field in ["key_id", "purpose", "algorithm", "state", "versions"] {
            assert!(k.get(field).is_some(), "{field} missing in {k}");
        }
    }
    let table = ok(&server.kms("admin", &["key", "list", "--namespace", "default"]));
    assert!(table.starts_with("KEY_ID"), "{table}");
    assert!(table.contains("orders") && table.contains("90d"), "{table}");

    let text = ok(&server.kms("admin", &["key", "describe", "orders"]));
    assert!(text.contains(&k) && text.contains("every 90d"), "{text}");
    let v = json(&server.kms("admin", &["--json", "key", "describe", &k]));
    assert_eq!(v["aliases"], serde_json::json!(["orders"]));

    let v = json(&server.kms("admin", &["--json", "key", "rotate", "orders"]));
    assert_eq!(v["current_version"], 2);
    assert_eq!(v["versions"].as_array().unwrap().len(), 2);
    let text = ok(&server.kms("admin", &["key", "rotate", "orders"]));
    assert!(text.contains("version 3"), "{text}");

    let v = json(&server.kms("admin", &["--json", "key", "set-rotation", "orders", "30d"]));
    assert_eq!(v["rotation_period_seconds"], 30 * 86_400);
    let v = json(&server.kms("admin", &["--json", "key", "set-rotation", "orders", "off"]));
    assert!(v["rotation_period_seconds"].is_null(), "{v}");

    let v = json(&server.kms("admin", &["--json", "key", "alias", &k, "orders-v2"]));
    let aliases = v["aliases"].as_array().unwrap();
    assert!(aliases.contains(&Value::from("orders-v2")), "{v}");
    let v = json(&server.kms("admin", &["--json", "key", "remove-alias", "orders-v2"]));
    assert_eq!(v["removed_alias"], "orders-v2");
    fails(
        &server.kms("admin", &["key", "describe", "orders-v2"]),
        4,
        "",
    );

    // Disabled: no use until enabled again.
    let ct = server.kms_in("app", &["encrypt", "--key", "orders"], b"before");
    ok(&ct);
    let v = json(&server.kms("admin", &["--json", "key", "disable", "orders"]));
    assert_eq!(v["state"], "disabled");
    fails(
        &server.kms_in("app", &["encrypt", "--key", "orders"], b"x"),
        6,
        "",
    );
    let v = json(&server.kms("admin", &["--json", "key", "enable", "orders"]));
    assert_eq!(v["state"], "enabled");

    // Destruction: scheduled, cancelled.
    let v = json(&server.kms(
        "admin",
        &[
            "--json",
            "key",
            "schedule-destruction",
            "orders",
            "--days",
            "7",
        ],
    ));
    assert_eq!(v["state"], "pending-destruction");
    assert!(v["destroy_at"].as_u64().is_some(), "{v}");
    let text = ok(&server.kms("admin", &["key", "describe", "orders"]));
    assert!(text.contains("pending-destruction"), "{text}");
    fails(&server.kms_in("app", &["decrypt"], &ct.stdout), 6, "");
    let v = json(&server.kms("admin", &["--json", "key", "cancel-destruction", "orders"]));
    assert_ne!(v["state"], "pending-destruction");
    assert!(v["destroy_at"].is_null(), "{v}");
    ok(&server.kms("admin", &["key", "enable", "orders"]));

    // Compromised: one way; no new encryption, old data still decrypts, with a warning.
    let v = json(&server.kms("admin", &["--json", "key", "compromise", "orders"]));
    assert_eq!(v["state"], "compromised");
    assert!(v["compromised_at"].as_u64().is_some(), "{v}");
    fails(
        &server.kms_in("app", &["encrypt", "--key", "orders"], b"x"),
        6,
        "",
    );
    let out = server.kms_in("app", &["decrypt"], &ct.stdout);
    assert_eq!(ok(&out), "before");
    assert!(stderr(&out).contains("compromised"), "{}", describe(&out));
    fails(&server.kms("admin", &["key", "enable", "orders"]), 6, "");

    // Failures: who may, what exists, what the policy allows.
    fails(
        &server.kms("app", &["key", "create", "--purpose", "encrypt"]),
        3,
        "",
    );
    fails(&server.kms("auditor", &["key", "rotate", &k]), 3, "");
    let stderr = fails(
        &server.kms("admin", &["key", "describe", "no-such-key"]),
        4,
        "",
    );
    assert!(
        stderr.contains("hint: ") && stderr.contains("kms key list"),
        "{stderr}"
    );
    fails(
        &server.kms(
            "admin",
            &["key", "rotate", "00000000-0000-4000-8000-000000000000"],
        ),
        4,
        "",
    );
    for forbidden in ["DES", "3des", "rc4", "aes-128-ecb", "rsa-1024"] {
        fails(
            &server.kms(
                "admin",
                &[
                    "key",
                    "create",
                    "--purpose",
                    "encrypt",
                    "--algorithm",
                    forbidden,
                ],
            ),
            6,
            "ALG-3",
        );
    }
    let stderr = fails(
        &server.kms(
            "admin",
            &[
                "key",
                "create",
                "--purpose",
                "encrypt",
                "--algorithm",
                "DES",
            ],
        ),
        6,
        "DES",
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    // One purpose per key (KEY-5).
    fails(
        &server.kms(
            "admin",
            &[
                "key",
                "create",
                "--purpose",
                "sign",
                "--algorithm",
                "sm4-gcm",
            ],
        ),
        6,
        "",
    );
    // An alias is unique in its namespace.
    fails(
        &server.kms(
            "admin",
            &["key", "create", "--purpose", "sign", "--alias", "orders"],
        ),
        6,
        "",
    );
    // Caught by clap before any connection.
    fails_usage(&server.kms("admin", &["key", "schedule-destruction", &k, "--days", "3"]));
    fails_usage(&server.kms("admin", &["key", "create", "--purpose", "storage"]));
}

/// A usage error, caught by clap before any connection: exit 2 and an `error:` line.
#[track_caller]
fn fails_usage(out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(2), "{}", describe(out));
    assert!(stderr(out).starts_with("error: "), "{}", describe(out));
}

#[test]
fn principals_and_grants() {
    let server = DevServer::start();
    let list = json(&server.kms("admin", &["--json", "principal", "list"]));
    let subjects: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["subject"].as_str().unwrap())
        .collect();
    for s in ["kms://admin", "kms://auditor", "kms://app"] {
        assert!(subjects.contains(&s), "{s} not in {subjects:?}");
    }
    let v = json(&server.kms(
        "admin",
        &[
            "--json",
            "principal",
            "add",
            "kms://billing",
            "--role",
            "app",
            "--namespace",
            "billing",
        ],
    ));
    assert_eq!(v["subject"], "kms://billing");
    assert_eq!(v["role"], "app");
    assert_eq!(v["namespace"], "billing");
    let table = ok(&server.kms("admin", &["principal", "list"]));
    assert!(table.starts_with("SUBJECT"), "{table}");
    assert!(
        table.contains("kms://billing") && table.contains("billing"),
        "{table}"
    );
    fails(
        &server.kms("app", &["principal", "add", "kms://x", "--role", "admin"]),
        3,
        "",
    );
    fails(
        &server.kms(
            "admin",
            &["principal", "add", "kms://billing", "--role", "app"],
        ),
        6,
        "",
    );

    // A certificate from the dev CA for kms://billing, through `kms pki`.
    let endpoint = format!("https://{}", server.addr);
    let v = json(&server.kms_offline(&[
        "--json",
        "pki",
        "issue",
        "billing",
        "--ca-dir",
        "kms-dev",
        "--endpoint",
        &endpoint,
    ]));
    assert!(v.to_string().contains("billing"), "{v}");
    assert!(server.path("kms-dev/profiles/billing.toml").is_file());
    let v = json(&server.kms("billing", &["--json", "status"]));
    assert_eq!(v["caller_subject"], "kms://billing");
    assert_eq!(v["caller_role"], "app");
    // A certificate the CA issued whose subject is not registered.
    ok(&server.kms_offline(&[
        "pki",
        "issue",
        "stranger",
        "--ca-dir",
        "kms-dev",
        "--endpoint",
        &endpoint,
    ]));
    fails(&server.kms("stranger", &["key", "list"]), 3, "");
    fails(&server.kms("stranger", &["random", "--bytes", "4"]), 3, "");

    // A key in namespace billing; the default app may use it only by grant.
    let key = create_key(
        &server,
        &[
            "--purpose",
            "encrypt",
            "--namespace",
            "billing",
            "--alias",
            "invoices",
        ],
    );
    assert_eq!(key["namespace"], "billing");
    let k = key["key_id"].as_str().unwrap().to_owned();
    let ct = server.kms_in("billing", &["encrypt", "--key", "invoices"], b"invoice 7");
    ok(&ct);
    server.write("invoice.kms", &ct.stdout);
    // Out of reach looks exactly like missing, so key ids cannot be probed.
    fails(
        &server.kms_in("app", &["encrypt", "--key", &k], b"x"),
        4,
        "not found",
    );
    fails(
        &server.kms("app", &["decrypt", "--in", "invoice.kms"]),
        4,
        "not found",
    );

    let v = json(&server.kms(
        "admin",
        &[
            "--json",
            "grant",
            "add",
            &k,
            "--namespace",
            "default",
            "--ops",
            "encrypt,decrypt",
        ],
    ));
    assert_eq!(v["key_id"], k.as_str());
    assert_eq!(v["namespace"], "default");
    assert_eq!(v["operations"], serde_json::json!(["encrypt", "decrypt"]));
    let grants = json(&server.kms("admin", &["--json", "grant", "list", "--key", &k]));
    assert_eq!(grants.as_array().unwrap().len(), 1, "{grants}");
    let table = ok(&server.kms("auditor", &["grant", "list"]));
    assert!(
        table.contains(&k) && table.contains("encrypt,decrypt"),
        "{table}"
    );
    // Granted: the default app decrypts billing's ciphertext and encrypts under its key.
    assert_eq!(
        ok(&server.kms("app", &["decrypt", "--in", "invoice.kms"])),
        "invoice 7"
    );
    ok(&server.kms_in("app", &["encrypt", "--key", &k], b"y"));
    // Not granted: signing or data keys.
    fails(
        &server.kms("app", &["datakey", "--key", &k, "--spec", "sm4"]),
        4,
        "not found",
    );
    fails(
        &server.kms(
            "app",
            &[
                "grant",
                "add",
                &k,
                "--namespace",
                "default",
                "--ops",
                "sign",
            ],
        ),
        3,
        "",
    );

    let v = json(&server.kms(
        "admin",
        &["--json", "grant", "remove", &k, "--namespace", "default"],
    ));
    assert_eq!(v["revoked"]["namespace"], "default");
    fails(
        &server.kms("app", &["decrypt", "--in", "invoice.kms"]),
        4,
        "not found",
    );
    let text = ok(&server.kms("admin", &["grant", "list"]));
    assert_eq!(text.trim(), "no grants");
    fails(
        &server.kms("admin", &["grant", "remove", &k, "--namespace", "default"]),
        4,
        "",
    );

    let v = json(&server.kms("admin", &["--json", "principal", "remove", "kms://billing"]));
    assert_eq!(v["removed"], "kms://billing");
    fails(&server.kms("billing", &["random", "--bytes", "4"]), 3, "");
    fails(
        &server.kms("admin", &["principal", "remove", "kms://billing"]),
        4,
        "",
    );
}

// ---------------------------------------------------------------------------------------------
// The data plane.

#[test]
fn encrypt_decrypt_datakey_and_reencrypt() {
    let server = DevServer::start();
    create_key(&server, &["--purpose", "encrypt", "--alias", "sm4"]);
    let aes = create_key(
        &server,
        &[
            "--purpose",
            "encrypt",
            "--algorithm",
            "aes-256-gcm",
            "--alias",
            "aes",
        ],
    );
    assert_eq!(aes["algorithm"], "aes-256-gcm");

    // Files, with a context bound to the ciphertext.
    server.write("card.txt", "card 6222 0000 1111 2222\n");
    ok(&server.kms(
        "app",
        &[
            "encrypt",
            "--key",
            "sm4",
            "--context",
            "order=42",
            "--context",
            "shop=7",
            "--in",
            "card.txt",
            "--out",
            "card.kms",
        ],
    ));
    assert_ne!(server.read("card.kms"), server.read("card.txt"));
    ok(&server.kms(
        "app",
        &[
            "decrypt",
            "--context",
            "shop=7",
            "--context",
            "order=42",
            "--in",
            "card.kms",
            "--out",
            "card.out",
        ],
    ));
    assert_eq!(server.read("card.out"), server.read("card.txt"));
    let stderr = fails(
        &server.kms(
            "app",
            &[
                "decrypt",
                "--context",
                "order=43",
                "--context",
                "shop=7",
                "--in",
                "card.kms",
            ],
        ),
        6,
        "decryption failed",
    );
    assert!(stderr.contains("--context"), "{stderr}");
    fails(&server.kms("app", &["decrypt", "--in", "card.kms"]), 6, "");
    // A damaged ciphertext.
    let mut bad = server.read("card.kms");
    let last = bad.len() - 1;
    bad[last] ^= 1;
    server.write("bad.kms", &bad);
    fails(
        &server.kms(
            "app",
            &[
                "decrypt",
                "--context",
                "order=42",
                "--context",
                "shop=7",
                "--in",
                "bad.kms",
            ],
        ),
        6,
        "",
    );

    // Pipes and base64.
    let ct = server.kms_in("app", &["encrypt", "--key", "aes", "--base64"], b"piped");
    let text = ok(&ct);
    assert!(B64.decode(text.trim()).is_ok(), "{text}");
    let pt = server.kms_in("app", &["decrypt", "--base64"], text.as_bytes());
    assert_eq!(ok(&pt), "piped");

    // JSON: the ciphertext and plaintext as base64 fields.
    let v = json(&server.kms_in("app", &["--json", "encrypt", "--key", "sm4"], b"json me"));
    assert_eq!(v["key_version"], 1);
    assert_eq!(v["key_id"].as_str().unwrap().len(), 36);
    let ct = b64(&v["ciphertext"]);
    let v = json(&server.kms_in("app", &["--json", "decrypt"], &ct));
    assert_eq!(b64(&v["plaintext"]), b"json me");
    assert_eq!(v["key_compromised"], false);

    // Admins and auditors never get data plaintext; unknown keys are not found.
    fails(
        &server.kms_in("admin", &["encrypt", "--key", "sm4"], b"x"),
        3,
        "",
    );
    fails(&server.kms_in("auditor", &["decrypt"], &ct), 3, "");
    fails(
        &server.kms_in("app", &["encrypt", "--key", "no-such-key"], b"x"),
        4,
        "",
    );

    // Data keys.
    let v = json(&server.kms(
        "app",
        &[
            "--json",
            "datakey",
            "--key",
            "sm4",
            "--spec",
            "sm4",
            "--context",
            "file=1",
        ],
    ));
    let dk = b64(&v["plaintext"]);
    assert_eq!(dk.len(), 16);
    let wrapped = b64(&v["ciphertext"]);
    assert!(wrapped.len() > 16);
    let v = json(&server.kms_in(
        "app",
        &["--json", "decrypt", "--context", "file=1"],
        &wrapped,
    ));
    assert_eq!(
        b64(&v["plaintext"]),
        dk,
        "the wrapped data key decrypts to the plaintext one"
    );
    let v = json(&server.kms(
        "app",
        &["--json", "datakey", "--key", "aes", "--spec", "aes-256"],
    ));
    assert_eq!(b64(&v["plaintext"]).len(), 32);
    let v = json(&server.kms(
        "app",
        &[
            "--json",
            "datakey",
            "--key",
            "sm4",
            "--spec",
            "sm4",
            "--no-plaintext",
        ],
    ));
    assert!(v.get("plaintext").is_none(), "{v}");
    assert!(v["ciphertext"].is_string(), "{v}");
    ok(&server.kms(
        "app",
        &[
            "datakey",
            "--key",
            "sm4",
            "--spec",
            "sm4",
            "--out",
            "dk.kms",
            "--plaintext-out",
            "dk.bin",
        ],
    ));
    assert_eq!(server.read("dk.bin").len(), 16);
    let out = server.kms("app", &["decrypt", "--in", "dk.kms"]);
    assert_eq!(out.stdout, server.read("dk.bin"), "{}", describe(&out));
    fails(
        &server.kms("admin", &["datakey", "--key", "sm4", "--spec", "sm4"]),
        3,
        "",
    );
    // A data key sealed to a partner's public key (SM2 and RSA, keys made by OpenSSL, which
    // opens the sealed copy): the same key the wrapped blob decrypts to, never shown in clear.
    for (alg, opts) in [
        ("SM2", &[][..]),
        (
            "RSA",
            &[
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ][..],
        ),
    ] {
        let key = server.path(&format!("partner-{alg}.key"));
        let key = key.to_str().unwrap();
        let mut keygen = vec!["genpkey", "-algorithm", alg, "-out", key];
        if alg == "RSA" {
            keygen.extend(["-pkeyopt", "rsa_keygen_bits:2048"]);
        }
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
            out.stdout
        };
        run(&keygen);
        server.write("partner.pub", run(&["pkey", "-in", key, "-pubout"]));
        let v = json(&server.kms(
            "app",
            &[
                "--json",
                "datakey",
                "--key",
                "sm4",
                "--spec",
                "aes-256",
                "--wrap-to",
                "partner.pub",
                "--out",
                "partner.kms",
                "--wrapped-out",
                "partner.sealed",
            ],
        ));
        assert!(v.get("plaintext").is_none(), "{v}");
        let mut open = vec!["pkeyutl", "-decrypt", "-inkey", key, "-in"];
        let sealed = server.path("partner.sealed");
        open.push(sealed.to_str().unwrap());
        open.extend_from_slice(opts);
        let dk = run(&open);
        assert_eq!(dk.len(), 32, "{alg}");
        let out = server.kms("app", &["decrypt", "--in", "partner.kms"]);
        assert_eq!(out.stdout, dk, "{alg}: {}", describe(&out));
    }
    fails(
        &server.kms(
            "app",
            &[
                "datakey",
                "--key",
                "sm4",
                "--spec",
                "sm4",
                "--wrap-to",
                "partner.pub",
                "--no-plaintext",
            ],
        ),
        2,
        "cannot be used with",
    );

    // Re-encrypt: under the newest version after a rotation, or under another key.
    ok(&server.kms("admin", &["key", "rotate", "sm4"]));
    let v = json(&server.kms(
        "app",
        &[
            "--json",
            "reencrypt",
            "--context",
            "order=42",
            "--context",
            "shop=7",
            "--in",
            "card.kms",
        ],
    ));
    assert_eq!(v["key_version"], 2);
    let moved = b64(&v["ciphertext"]);
    let v = json(&server.kms_in(
        "app",
        &[
            "--json",
            "decrypt",
            "--context",
            "order=42",
            "--context",
            "shop=7",
        ],
        &moved,
    ));
    assert_eq!(v["key_version"], 2);
    assert_eq!(b64(&v["plaintext"]), server.read("card.txt"));
    ok(&server.kms(
        "app",
        &[
            "reencrypt",
            "--context",
            "order=42",
            "--context",
            "shop=7",
            "--key",
            "aes",
            "--dest-context",
            "moved=yes",
            "--in",
            "card.kms",
            "--out",
            "card-aes.kms",
        ],
    ));
    let v = json(&server.kms(
        "app",
        &[
            "--json",
            "decrypt",
            "--context",
            "moved=yes",
            "--in",
            "card-aes.kms",
        ],
    ));
    assert_eq!(v["key_id"], aes["key_id"]);
    assert_eq!(b64(&v["plaintext"]), server.read("card.txt"));
    // Bulk, in place.
    for (i, name) in ["a.kms", "b.kms", "c.kms"].iter().enumerate() {
        let out = server.kms_in(
            "app",
            &["encrypt", "--key", "sm4"],
            format!("file {i}").as_bytes(),
        );
        let before = ok(&out);
        let _ = before;
        server.write(name, &out.stdout);
    }
    ok(&server.kms("admin", &["key", "rotate", "sm4"]));
    let v = json(&server.kms("app", &["--json", "reencrypt", "a.kms", "b.kms", "c.kms"]));
    let done = v.as_array().unwrap();
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|f| f["key_version"] == 3), "{v}");
    for (i, name) in ["a.kms", "b.kms", "c.kms"].iter().enumerate() {
        let v = json(&server.kms("app", &["--json", "decrypt", "--in", name]));
        assert_eq!(v["key_version"], 3);
        assert_eq!(b64(&v["plaintext"]), format!("file {i}").as_bytes());
    }
    assert!(!server.path("a.kms.kms-reencrypt").exists());
}

#[test]
fn sign_verify_public_key_asym_decrypt_mac_and_random() {
    let server = DevServer::start();
    create_key(&server, &["--purpose", "sign", "--alias", "contracts"]);
    server.write("contract.txt", "I owe you 100 yuan\n");
    server.write("forged.txt", "I owe you 900 yuan\n");

    // SM2: sign, verify (exit 0 only if valid), and the same with OpenSSL.
    ok(&server.kms(
        "app",
        &[
            "sign",
            "--key",
            "contracts",
            "--in",
            "contract.txt",
            "--out",
            "contract.sig",
        ],
    ));
    let text = ok(&server.kms(
        "app",
        &[
            "verify",
            "--key",
            "contracts",
            "--in",
            "contract.txt",
            "--signature",
            "contract.sig",
        ],
    ));
    assert!(text.contains("signature valid"), "{text}");
    let v = json(&server.kms(
        "app",
        &[
            "--json",
            "verify",
            "--key",
            "contracts",
            "--in",
            "contract.txt",
            "--signature",
            "contract.sig",
        ],
    ));
    assert_eq!(v["valid"], true);
    assert_eq!(v["key_compromised"], false);
    let out = server.kms(
        "app",
        &[
            "verify",
            "--key",
            "contracts",
            "--in",
            "forged.txt",
            "--signature",
            "contract.sig",
        ],
    );
    let stderr = fails(&out, 1, "signature is not valid");
    assert!(stderr.contains("hint: "), "{stderr}");
    let out = server.kms(
        "app",
        &[
            "--json",
            "verify",
            "--key",
            "contracts",
            "--in",
            "forged.txt",
            "--signature",
            "contract.sig",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    // A different SM2 ID is a different signature.
    fails(
        &server.kms(
            "app",
            &[
                "verify",
                "--key",
                "contracts",
                "--sm2-id",
                "alice@example",
                "--in",
                "contract.txt",
                "--signature",
                "contract.sig",
            ],
        ),
        1,
        "",
    );
    ok(&server.kms(
        "app",
        &[
            "sign",
            "--key",
            "contracts",
            "--sm2-id",
            "alice@example",
            "--in",
            "contract.txt",
            "--out",
            "alice.sig",
            "--base64",
        ],
    ));
    ok(&server.kms(
        "app",
        &[
            "verify",
            "--key",
            "contracts",
            "--sm2-id",
            "alice@example",
            "--in",
            "contract.txt",
            "--signature",
            "alice.sig",
            "--base64",
        ],
    ));
    ok(&server.kms(
        "app",
        &["public-key", "contracts", "--out", "contracts.pem"],
    ));
    openssl(
        &server,
        &[
            "dgst",
            "-sm3",
            "-verify",
            "contracts.pem",
            "-sigopt",
            "distid:1234567812345678",
            "-signature",
            "contract.sig",
            "contract.txt",
        ],
    );
    let v = json(&server.kms("auditor", &["--json", "public-key", "contracts"]));
    assert_eq!(v["algorithm"], "sm2");
    assert!(
        v["public_key_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN PUBLIC KEY")
    );
    ok(&server.kms(
        "app",
        &["public-key", "contracts", "--der", "--out", "contracts.der"],
    ));
    assert_eq!(b64(&v["public_key_der"]), server.read("contracts.der"));
    // After a rotation, old signatures still verify; --key-version pins one.
    ok(&server.kms("admin", &["key", "rotate", "contracts"]));
    ok(&server.kms(
        "app",
        &[
            "verify",
            "--key",
            "contracts",
            "--in",
            "contract.txt",
            "--signature",
            "contract.sig",
        ],
    ));
    fails(
        &server.kms(
            "app",
            &[
                "verify",
                "--key",
                "contracts",
                "--key-version",
                "2",
                "--in",
                "contract.txt",
                "--signature",
                "contract.sig",
            ],
        ),
        1,
        "",
    );
    // A sign key does not encrypt (KEY-5); admins do not sign.
    fails(
        &server.kms_in("app", &["encrypt", "--key", "contracts"], b"x"),
        6,
        "",
    );
    fails(
        &server.kms(
            "admin",
            &["sign", "--key", "contracts", "--in", "contract.txt"],
        ),
        3,
        "",
    );

    // RSA: PSS and PKCS#1 v1.5, with SHA-2 choices; a prehashed digest from OpenSSL.
    create_key(
        &server,
        &[
            "--purpose",
            "sign",
            "--algorithm",
            "rsa-2048",
            "--alias",
            "rsa-sign",
        ],
    );
    ok(&server.kms("app", &["public-key", "rsa-sign", "--out", "rsa-sign.pem"]));
    ok(&server.kms(
        "app",
        &[
            "sign",
            "--key",
            "rsa-sign",
            "--scheme",
            "pkcs1v15",
            "--hash",
            "sha384",
            "--in",
            "contract.txt",
            "--out",
            "rsa.sig",
        ],
    ));
    openssl(
        &server,
        &[
            "dgst",
            "-sha384",
            "-verify",
            "rsa-sign.pem",
            "-signature",
            "rsa.sig",
            "contract.txt",
        ],
    );
    ok(&server.kms(
        "app",
        &[
            "verify",
            "--key",
            "rsa-sign",
            "--scheme",
            "pkcs1v15",
            "--hash",
            "sha384",
            "--in",
            "contract.txt",
            "--signature",
            "rsa.sig",
        ],
    ));
    fails(
        &server.kms(
            "app",
            &[
                "verify",
                "--key",
                "rsa-sign",
                "--scheme",
                "pss",
                "--hash",
                "sha384",
                "--in",
                "contract.txt",
                "--signature",
                "rsa.sig",
            ],
        ),
        1,
        "",
    );
    openssl(
        &server,
        &[
            "dgst",
            "-sha256",
            "-binary",
            "-out",
            "contract.sha256",
            "contract.txt",
        ],
    );
    ok(&server.kms(
        "app",
        &[
            "sign",
            "--key",
            "rsa-sign",
            "--prehashed",
            "--hash",
            "sha256",
            "--in",
            "contract.sha256",
            "--out",
            "pss.sig",
        ],
    ));
    ok(&server.kms(
        "app",
        &[
            "verify",
            "--key",
            "rsa-sign",
            "--in",
            "contract.txt",
            "--signature",
            "pss.sig",
        ],
    ));
    openssl(
        &server,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "rsa-sign.pem",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:-2",
            "-signature",
            "pss.sig",
            "contract.txt",
        ],
    );

    // Asymmetric decryption: encrypt to the public key with OpenSSL, decrypt in the KMS.
    create_key(
        &server,
        &[
            "--purpose",
            "asymmetric-decrypt",
            "--algorithm",
            "rsa-2048",
            "--alias",
            "inbox",
        ],
    );
    ok(&server.kms("app", &["public-key", "inbox", "--out", "inbox.pem"]));
    server.write("secret.txt", "for the KMS only");
    openssl(
        &server,
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            "inbox.pem",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
            "-in",
            "secret.txt",
            "-out",
            "secret.rsa",
        ],
    );
    ok(&server.kms(
        "app",
        &[
            "asym-decrypt",
            "--key",
            "inbox",
            "--in",
            "secret.rsa",
            "--out",
            "secret.out",
        ],
    ));
    assert_eq!(server.read("secret.out"), b"for the KMS only");
    let v = json(&server.kms(
        "app",
        &[
            "--json",
            "asym-decrypt",
            "--key",
            "inbox",
            "--in",
            "secret.rsa",
        ],
    ));
    assert_eq!(b64(&v["plaintext"]), b"for the KMS only");
    create_key(
        &server,
        &["--purpose", "asymmetric-decrypt", "--alias", "sm2-inbox"],
    );
    ok(&server.kms(
        "app",
        &["public-key", "sm2-inbox", "--out", "sm2-inbox.pem"],
    ));
    openssl(
        &server,
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            "sm2-inbox.pem",
            "-in",
            "secret.txt",
            "-out",
            "secret.sm2",
        ],
    );
    ok(&server.kms(
        "app",
        &[
            "asym-decrypt",
            "--key",
            "sm2-inbox",
            "--in",
            "secret.sm2",
            "--out",
            "secret2.out",
        ],
    ));
    assert_eq!(server.read("secret2.out"), b"for the KMS only");
    fails(
        &server.kms(
            "app",
            &["asym-decrypt", "--key", "inbox", "--in", "secret.txt"],
        ),
        6,
        "",
    );
    fails(
        &server.kms(
            "admin",
            &["asym-decrypt", "--key", "inbox", "--in", "secret.rsa"],
        ),
        3,
        "",
    );

    // MAC.
    create_key(&server, &["--purpose", "mac", "--alias", "tags"]);
    ok(&server.kms(
        "app",
        &[
            "mac",
            "--key",
            "tags",
            "--in",
            "contract.txt",
            "--out",
            "c.tag",
        ],
    ));
    assert_eq!(server.read("c.tag").len(), 32, "HMAC-SM3 tags are 32 bytes");
    let text = ok(&server.kms(
        "app",
        &[
            "verify-mac",
            "--key",
            "tags",
            "--in",
            "contract.txt",
            "--tag",
            "c.tag",
        ],
    ));
    assert!(text.contains("MAC tag valid"), "{text}");
    fails(
        &server.kms(
            "app",
            &[
                "verify-mac",
                "--key",
                "tags",
                "--in",
                "forged.txt",
                "--tag",
                "c.tag",
            ],
        ),
        1,
        "MAC tag is not valid",
    );
    let v = json(&server.kms_in("app", &["--json", "mac", "--key", "tags"], b"abc"));
    assert_eq!(b64(&v["mac"]).len(), 32);
    let v = json(&server.kms(
        "app",
        &[
            "--json",
            "verify-mac",
            "--key",
            "tags",
            "--in",
            "contract.txt",
            "--tag",
            "c.tag",
        ],
    ));
    assert_eq!(v["valid"], true);
    fails(
        &server.kms_in("app", &["mac", "--key", "contracts"], b"abc"),
        6,
        "",
    );

    // Random bytes.
    let v = json(&server.kms("app", &["--json", "random", "--bytes", "32"]));
    let a = b64(&v["random"]);
    assert_eq!(a.len(), 32);
    let v = json(&server.kms("app", &["--json", "random", "--bytes", "32"]));
    assert_ne!(a, b64(&v["random"]));
    ok(&server.kms("app", &["random", "--bytes", "1024", "--out", "r.bin"]));
    assert_eq!(server.read("r.bin").len(), 1024);
    let text = ok(&server.kms("app", &["random", "--bytes", "16", "--base64"]));
    assert_eq!(B64.decode(text.trim()).unwrap().len(), 16);
    fails_usage(&server.kms("app", &["random", "--bytes", "1025"]));
}

/// Runs `openssl ARGS…` in the server's folder; asserts success.
#[track_caller]
fn openssl(server: &DevServer, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(server.cwd())
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
    stdout(&out)
}

// ---------------------------------------------------------------------------------------------
// Audit and inventory (issue 6).

/// Lines of the exported trail with `"operation":"<op>"`, as parsed JSON.
fn records_of<'a>(lines: &'a [Value], op: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["operation"] == op).collect()
}

/// Whether `haystack` contains `needle`, also as lower/upper hex and base64 (standard, no
/// padding, URL-safe).
fn leaks(haystack: &str, needle: &[u8]) -> Option<String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let forms = [
        String::from_utf8_lossy(needle).into_owned(),
        hex::encode(needle),
        hex::encode_upper(needle),
        B64.encode(needle),
        STANDARD_NO_PAD.encode(needle),
        URL_SAFE_NO_PAD.encode(needle),
    ];
    forms
        .into_iter()
        .filter(|f| f.len() >= 6)
        .find(|f| haystack.contains(f.as_str()))
}

#[test]
fn audit_trail_and_inventory_verify_offline() {
    let mut server = DevServer::start();
    const PLAINTEXT: &str = "PAN 6222-0211-3344-5566 secret";
    const CONTEXT: &str = "tenant-ctx-value-9f3a";
    let key = create_key(
        &server,
        &[
            "--purpose",
            "encrypt",
            "--alias",
            "audited",
            "--rotation-period",
            "90d",
        ],
    );
    let k = key["key_id"].as_str().unwrap().to_owned();
    let context = format!("tenant={CONTEXT}");

    // Three encryptions, one decryption, a data key; then one denied and one not-found encrypt.
    let mut last = Vec::new();
    for _ in 0..3 {
        let out = server.kms_in(
            "app",
            &["encrypt", "--key", "audited", "--context", &context],
            PLAINTEXT.as_bytes(),
        );
        ok(&out);
        last = out.stdout;
    }
    let out = server.kms_in("app", &["decrypt", "--context", &context], &last);
    assert_eq!(ok(&out), PLAINTEXT);
    let v = json(&server.kms(
        "app",
        &[
            "--json",
            "datakey",
            "--key",
            "audited",
            "--spec",
            "sm4",
            "--context",
            &context,
        ],
    ));
    let data_key = b64(&v["plaintext"]);
    fails(
        &server.kms_in(
            "auditor",
            &["encrypt", "--key", "audited"],
            PLAINTEXT.as_bytes(),
        ),
        3,
        "",
    );
    fails(
        &server.kms_in(
            "app",
            &["encrypt", "--key", "nowhere"],
            PLAINTEXT.as_bytes(),
        ),
        4,
        "",
    );
    // A compromised key, for the inventory.
    let bad = create_key(&server, &["--purpose", "sign", "--alias", "leaked"]);
    ok(&server.kms("admin", &["key", "compromise", "leaked"]));

    // The audit key: any registered principal may fetch it.
    let text = ok(&server.kms("auditor", &["audit", "public-key", "--out", "audit.pem"]));
    assert!(text.contains("audit.pem"), "{text}");
    let pem = String::from_utf8(server.read("audit.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let v = json(&server.kms("app", &["--json", "audit", "public-key"]));
    assert_eq!(v["public_key_pem"], pem.as_str());
    assert_eq!(v["key_version"], 1);
    let audit_key_id = v["key_id"].as_str().unwrap().to_owned();
    assert_eq!(ok(&server.kms("admin", &["audit", "public-key"])), pem);

    // Export: auditors only.
    fails(&server.kms("app", &["audit", "export"]), 3, "");
    fails(
        &server.kms("admin", &["audit", "export", "--out", "x.jsonl"]),
        3,
        "",
    );
    assert!(!server.path("x.jsonl").exists());
    let v = json(&server.kms(
        "auditor",
        &["--json", "audit", "export", "--out", "audit.jsonl"],
    ));
    let records = v["records"].as_u64().unwrap();
    let checkpoints = v["checkpoints"].as_u64().unwrap();
    assert!(checkpoints >= 1, "{v}");
    let trail = String::from_utf8(server.read("audit.jsonl")).unwrap();
    assert!(trail.ends_with('\n'));
    assert_eq!(
        u64::try_from(trail.lines().count()).unwrap(),
        records + checkpoints
    );
    // To stdout: the same trail plus what happened since (the export above, and a fresh
    // closing checkpoint).
    let to_stdout = ok(&server.kms("auditor", &["audit", "export"]));
    assert!(to_stdout.lines().count() > trail.lines().count());

    // The inventory: auditors and admins.
    let text = ok(&server.kms(
        "auditor",
        &["inventory", "export", "--out", "inventory.json"],
    ));
    assert!(text.contains("inventory.json"), "{text}");
    let v = json(&server.kms(
        "admin",
        &[
            "--json",
            "inventory",
            "export",
            "--out",
            "inventory-admin.json",
        ],
    ));
    assert_eq!(v["signed_by_key_id"], audit_key_id.as_str());
    assert!(v["keys"].as_u64().unwrap() >= 2, "{v}");
    let admin_inv = ok(&server.kms("admin", &["inventory", "export"]));
    let _: Value = serde_json::from_str(&admin_inv).unwrap();
    fails(&server.kms("app", &["inventory", "export"]), 3, "");
    let keys = json(&server.kms("admin", &["--json", "key", "list"]));

    // From here on, offline: no server.
    server.stop();
    fails(&server.kms("auditor", &["audit", "export"]), 5, "");

    let text = ok(&server.kms_offline(&[
        "audit",
        "verify",
        "audit.jsonl",
        "--public-key",
        "audit.pem",
    ]));
    assert!(
        text.contains(&format!(
            "{records} records, {checkpoints} signed checkpoint"
        )),
        "{text}"
    );
    let v = json(&server.kms_offline(&[
        "--json",
        "audit",
        "verify",
        "audit.jsonl",
        "--public-key",
        "audit.pem",
    ]));
    assert_eq!(v["valid"], true);
    assert_eq!(v["records"], records);
    assert_eq!(v["checkpoints"], checkpoints);

    // What the trail says: exactly the operations made, the denied and failed ones included.
    let lines: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let encrypts = records_of(&lines, "Crypto/Encrypt");
    let outcomes: Vec<(&str, &str)> = encrypts
        .iter()
        .map(|r| {
            (
                r["principal"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("kms://app", "OK"),
            ("kms://app", "OK"),
            ("kms://app", "OK"),
            ("kms://auditor", "PERMISSION_DENIED"),
            ("kms://app", "NOT_FOUND"),
        ],
        "{encrypts:#?}"
    );
    for r in &encrypts[..3] {
        assert_eq!(r["key_id"], k.as_str(), "{r}");
        assert_eq!(r["key_version"], 1, "{r}");
        assert_eq!(r["role"], "app", "{r}");
        assert!(
            r["context_hmac"].is_string(),
            "the context leaves a keyed hash: {r}"
        );
    }
    let hmacs: Vec<&Value> = encrypts[..3].iter().map(|r| &r["context_hmac"]).collect();
    assert!(
        hmacs.windows(2).all(|w| w[0] == w[1]),
        "equal contexts correlate"
    );
    let decrypts = records_of(&lines, "Crypto/Decrypt");
    assert_eq!(decrypts.len(), 1);
    assert_eq!(decrypts[0]["outcome"], "OK");
    assert_eq!(decrypts[0]["context_hmac"], *hmacs[0]);
    assert_eq!(records_of(&lines, "Crypto/GenerateDataKey").len(), 1);
    // State-changing calls leave an intent record before they run, then their outcome
    // (issue 18: audit before effect), under one request id.
    let creates = records_of(&lines, "KeyAdmin/CreateKey");
    let (intents, done): (Vec<&Value>, Vec<&Value>) = creates.iter().partition(|r| {
        r["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "intent"))
    });
    assert_eq!((intents.len(), done.len()), (2, 2), "{creates:#?}");
    assert!(
        done.iter()
            .all(|r| r["principal"] == "kms://admin" && r["outcome"] == "OK")
    );
    assert!(
        intents
            .iter()
            .all(|r| r["principal"] == "kms://admin" && r["outcome"] == "UNKNOWN")
    );
    for (i, d) in intents.iter().zip(&done) {
        assert_eq!(i["request_id"], d["request_id"]);
        assert!(
            i["seq"].as_u64() < d["seq"].as_u64(),
            "the intent comes first"
        );
    }
    assert_eq!(records_of(&lines, "KeyAdmin/MarkCompromised").len(), 2);
    let exports = records_of(&lines, "Audit/ExportAudit");
    let denied: Vec<&str> = exports
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        denied,
        ["PERMISSION_DENIED", "PERMISSION_DENIED"],
        "{exports:#?}"
    );
    assert_eq!(records_of(&lines, "Audit/GetAuditPublicKey").len(), 3);
    let last_line = lines.last().unwrap();
    assert_eq!(last_line["type"], "checkpoint");
    assert_eq!(last_line["closes_export"], true);
    assert_eq!(last_line["key_id"], audit_key_id.as_str());

    // …and never the plaintext, the data key or the context value, in any encoding.
    for (what, secret) in [
        ("plaintext", PLAINTEXT.as_bytes()),
        ("context value", CONTEXT.as_bytes()),
        ("data key", data_key.as_slice()),
    ] {
        for (file, text) in [("audit", &trail), ("inventory", &admin_inv)] {
            assert_eq!(
                leaks(text, secret),
                None,
                "the {what} is in the {file} export"
            );
        }
    }

    // Tampering: one byte of one record changes → exit 1, naming the line.
    let n = lines
        .iter()
        .position(|l| l["operation"] == "Crypto/Decrypt")
        .unwrap()
        + 1;
    let mut edited: Vec<String> = trail.lines().map(str::to_owned).collect();
    edited[n - 1] = edited[n - 1].replacen("\"outcome\":\"OK\"", "\"outcome\":\"OJ\"", 1);
    assert_ne!(edited[n - 1], trail.lines().nth(n - 1).unwrap());
    server.write("edited.jsonl", edited.join("\n") + "\n");
    let out = server.kms_offline(&[
        "audit",
        "verify",
        "edited.jsonl",
        "--public-key",
        "audit.pem",
    ]);
    // The edited record is named at its own line (the line after it still vouches for the next).
    let stderr = fails(
        &out,
        1,
        &format!("the audit trail does not verify: edited.jsonl line {n}: "),
    );
    assert!(stderr.contains("was edited"), "{stderr}");
    assert!(
        stderr.contains(&format!("line {n} reads: {{\"type\":\"record\"")),
        "{stderr}"
    );
    let out = server.kms_offline(&[
        "--json",
        "audit",
        "verify",
        "edited.jsonl",
        "--public-key",
        "audit.pem",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["line"], n);
    // Flip the byte itself, anywhere in the line: the time of a record.
    let mut bytes = server.read("audit.jsonl");
    let line_start = trail
        .lines()
        .take(n - 1)
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let digit = line_start
        + trail
            .lines()
            .nth(n - 1)
            .unwrap()
            .find("\"time_ms\":")
            .unwrap()
        + "\"time_ms\":".len()
        + 3;
    bytes[digit] = if bytes[digit] == b'9' {
        b'8'
    } else {
        bytes[digit] + 1
    };
    server.write("flipped.jsonl", &bytes);
    let stderr = fails(
        &server.kms_offline(&[
            "audit",
            "verify",
            "flipped.jsonl",
            "--public-key",
            "audit.pem",
        ]),
        1,
        &format!("flipped.jsonl line {n}:"),
    );
    assert!(stderr.contains("was edited"), "{stderr}");
    // A record deleted; the tail cut off; a signature replaced.
    let mut deleted: Vec<&str> = trail.lines().collect();
    deleted.remove(n - 1);
    server.write("deleted.jsonl", deleted.join("\n") + "\n");
    fails(
        &server.kms_offline(&[
            "audit",
            "verify",
            "deleted.jsonl",
            "--public-key",
            "audit.pem",
        ]),
        1,
        &format!("line {n}:"),
    );
    let all: Vec<&str> = trail.lines().collect();
    server.write("cut.jsonl", all[..all.len() - 1].join("\n") + "\n");
    fails(
        &server.kms_offline(&["audit", "verify", "cut.jsonl", "--public-key", "audit.pem"]),
        1,
        "closing signed checkpoint",
    );
    // Someone else's key: the first checkpoint's signature fails.
    let other = json(&DevServer::start().kms("auditor", &["--json", "audit", "public-key"]));
    let other_pem = other["public_key_pem"].as_str().unwrap();
    assert_ne!(other_pem, pem);
    server.write("other.pem", other_pem);
    fails(
        &server.kms_offline(&[
            "audit",
            "verify",
            "audit.jsonl",
            "--public-key",
            "other.pem",
        ]),
        1,
        "signature",
    );
    // Not a public key at all: a usage error.
    fails(
        &server.kms_offline(&[
            "audit",
            "verify",
            "audit.jsonl",
            "--public-key",
            "audit.jsonl",
        ]),
        2,
        "audit.jsonl",
    );
    fails(
        &server.kms_offline(&[
            "audit",
            "verify",
            "missing.jsonl",
            "--public-key",
            "audit.pem",
        ]),
        7,
        "missing.jsonl",
    );

    // The inventory verifies offline and agrees with the key list.
    let text = ok(&server.kms_offline(&[
        "inventory",
        "verify",
        "inventory.json",
        "--public-key",
        "audit.pem",
    ]));
    assert!(text.starts_with("inventory verified"), "{text}");
    assert!(
        text.contains(bad["key_id"].as_str().unwrap()),
        "the compromised key is named: {text}"
    );
    let v = json(&server.kms_offline(&[
        "--json",
        "inventory",
        "verify",
        "inventory.json",
        "--public-key",
        "audit.pem",
    ]));
    assert_eq!(v["valid"], true);
    assert_eq!(v["signed_by_key_id"], audit_key_id.as_str());
    assert_eq!(v["compromised"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["compromised"][0]["key_id"], bad["key_id"]);
    assert_eq!(v["overdue_for_rotation"], serde_json::json!([]));
    assert_eq!(v["forbidden_by_policy"], serde_json::json!([]));
    assert_eq!(v["all_keys_allowed_by_policy"], true);
    let inventory: Value = serde_json::from_slice(&server.read("inventory.json")).unwrap();
    let inv_ids: Vec<&str> = inventory["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(v["keys"], inv_ids.len());
    for listed in keys.as_array().unwrap() {
        let id = listed["key_id"].as_str().unwrap();
        assert!(
            inv_ids.contains(&id),
            "{id} is listed but not in the inventory"
        );
        let entry = inventory["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key_id"] == id)
            .unwrap();
        assert_eq!(entry["namespace"], listed["namespace"], "{entry}");
        assert_eq!(
            entry["versions"].as_array().unwrap().len(),
            listed["versions"].as_array().unwrap().len(),
            "{entry}"
        );
    }

    // An inventory edited in one field does not verify.
    let original = String::from_utf8(server.read("inventory.json")).unwrap();
    let edits = [
        ("\"COMPROMISED\"", "\"ENABLED\""),
        (
            "\"all_keys_allowed_by_policy\": true",
            "\"all_keys_allowed_by_policy\": false",
        ),
        (k.as_str(), "00000000-0000-4000-8000-000000000000"),
        ("\"audited\"", "\"audit3d\""),
    ];
    for (from, to) in edits {
        assert!(original.contains(from), "{from} not in the inventory");
        server.write("inventory-edited.json", original.replacen(from, to, 1));
        let out = server.kms_offline(&[
            "inventory",
            "verify",
            "inventory-edited.json",
            "--public-key",
            "audit.pem",
        ]);
        fails(&out, 1, "the inventory does not verify");
    }
    let out = server.kms_offline(&[
        "--json",
        "inventory",
        "verify",
        "inventory-edited.json",
        "--public-key",
        "audit.pem",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    fails(
        &server.kms_offline(&[
            "inventory",
            "verify",
            "audit.jsonl",
            "--public-key",
            "audit.pem",
        ]),
        1,
        "not a KMS inventory",
    );
    fails(
        &server.kms_offline(&[
            "inventory",
            "verify",
            "inventory.json",
            "--public-key",
            "other.pem",
        ]),
        1,
        "signature",
    );
}

/// Issue 18, item 4: the audit key is rotated twice (as an administrator rotates any key); each
/// rotation hands the trail over with a transition record signed by the old version.
/// `kms audit public-key` then writes every version, and the export verifies offline with that
/// bundle or with the oldest version alone; an edited or dropped transition record fails.
#[test]
fn the_audit_trail_verifies_offline_across_two_audit_key_rotations() {
    let mut server = DevServer::start();
    create_key(&server, &["--purpose", "encrypt", "--alias", "orders"]);
    let audit_key = format!(
        "{}:{}",
        kms_core::SYSTEM_NAMESPACE,
        kms_core::AUDIT_KEY_ALIAS
    );
    for round in 0..2 {
        for _ in 0..2 {
            ok(&server.kms_in("app", &["encrypt", "--key", "orders"], b"x"));
        }
        let v = json(&server.kms("admin", &["--json", "key", "rotate", &audit_key]));
        assert_eq!(v["current_version"], round + 2, "{v}");
    }
    ok(&server.kms_in("app", &["encrypt", "--key", "orders"], b"x"));

    let text = ok(&server.kms("auditor", &["audit", "public-key", "--out", "keys.pem"]));
    assert!(text.contains("3 versions, newest 3"), "{text}");
    let bundle = String::from_utf8(server.read("keys.pem")).unwrap();
    assert_eq!(bundle.matches("-----BEGIN PUBLIC KEY-----").count(), 3);
    let v = json(&server.kms("auditor", &["--json", "audit", "public-key"]));
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3);
    for (i, version) in versions.iter().enumerate() {
        assert_eq!(version["version"], i + 1);
        assert_eq!(version["fingerprint_sm3"].as_str().unwrap().len(), 64);
    }
    let oldest = versions[0]["public_key_pem"].as_str().unwrap().to_owned();
    let newest = versions[2]["public_key_pem"].as_str().unwrap().to_owned();
    server.write("oldest.pem", &oldest);
    server.write("newest.pem", &newest);
    ok(&server.kms("auditor", &["audit", "export", "--out", "audit.jsonl"]));
    ok(&server.kms(
        "auditor",
        &["inventory", "export", "--out", "inventory.json"],
    ));
    server.stop();

    // The inventory is signed by the newest version; the bundle holds it.
    let v = json(&server.kms_offline(&[
        "--json",
        "inventory",
        "verify",
        "inventory.json",
        "--public-key",
        "keys.pem",
    ]));
    assert_eq!(v["signed_by_key_version"], 3, "{v}");
    assert_eq!(v["public_key_sm3"], versions[2]["fingerprint_sm3"]);

    let verify =
        |file: &str, key: &str| server.kms_offline(&["audit", "verify", file, "--public-key", key]);
    for key in ["keys.pem", "oldest.pem"] {
        let text = ok(&verify("audit.jsonl", key));
        assert!(
            text.contains("audit key transitions")
                && text.contains("2: version 1 → 2, version 2 → 3"),
            "{text}"
        );
    }
    let v = json(&server.kms_offline(&[
        "--json",
        "audit",
        "verify",
        "audit.jsonl",
        "--public-key",
        "oldest.pem",
    ]));
    assert_eq!(v["key_transitions"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(
        v["key_transitions"][1]["to_fingerprint_sm3"],
        versions[2]["fingerprint_sm3"]
    );
    // The newest version alone is not where the trail's trust starts.
    fails(&verify("audit.jsonl", "newest.pem"), 1, "not trusted");

    let trail = String::from_utf8(server.read("audit.jsonl")).unwrap();
    let lines: Vec<&str> = trail.lines().collect();
    let transitions: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("\"transition\":{"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(transitions.len(), 2, "{trail}");
    // Each follows the administrator's audited rotation at once, before any other record.
    for &t in &transitions {
        let rotation: Value = serde_json::from_str(lines[t - 1]).unwrap();
        assert_eq!(
            rotation["operation"],
            "KeyAdmin/RotateKey",
            "{}",
            lines[t - 1]
        );
        assert_eq!(rotation["principal"], "kms://admin");
        assert_eq!(rotation["outcome"], "OK");
        let transition: Value = serde_json::from_str(lines[t]).unwrap();
        assert_eq!(transition["key_id"], rotation["key_id"]);
        assert_eq!(transition["principal"], "kms-audit-writer");
    }
    // Edited: the new key's fingerprint swapped for another's.
    let second = lines[transitions[1]];
    let fp3 = versions[2]["fingerprint_sm3"].as_str().unwrap();
    let fp1 = versions[0]["fingerprint_sm3"].as_str().unwrap();
    let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    edited[transitions[1]] = second.replacen(fp3, fp1, 1);
    server.write("edited.jsonl", &(edited.join("\n") + "\n"));
    for key in ["keys.pem", "oldest.pem"] {
        fails(
            &verify("edited.jsonl", key),
            1,
            &format!("edited.jsonl line {}: record ", transitions[1] + 1),
        );
        fails(
            &verify("edited.jsonl", key),
            1,
            "the transition record was edited",
        );
    }
    // Dropped: the checkpoint after it is signed by a version nothing introduced.
    let mut dropped: Vec<&str> = lines.clone();
    dropped.remove(transitions[1]);
    server.write("dropped.jsonl", &(dropped.join("\n") + "\n"));
    fails(
        &verify("dropped.jsonl", "keys.pem"),
        1,
        "which no transition record before it introduced",
    );
    fails(
        &verify("dropped.jsonl", "oldest.pem"),
        1,
        &format!("dropped.jsonl line {}: ", transitions[1] + 1),
    );
}

// ---------------------------------------------------------------------------------------------
// Dual control: `kms approve`, `kms reject`, `kms approvals list`, `kms backup --approval`.

#[test]
fn dual_control_with_the_cli_against_a_real_server() {
    let server = DevServer::start_dual_control(2);
    let key = create_key(&server, &["--purpose", "encrypt", "--alias", "old"]);
    let key_id = key["key_id"].as_str().unwrap().to_owned();
    let stderr = fails(
        &server.kms(
            "admin",
            &["key", "schedule-destruction", "old", "--days", "7"],
        ),
        6,
        "schedule-key-destruction needs the approval of 2 administrators: pending request apr-",
    );
    let id = filed_id(&stderr);
    assert!(
        stderr.contains(&format!(
            "hint: it runs once approved: another administrator runs `kms approve {id}`"
        )),
        "{stderr}"
    );
    // Listed for admins and auditors, with what will run.
    let list = ok(&server.kms("auditor", &["approvals", "list"]));
    let row: Vec<&str> = list
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("the request is listed")
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..5],
        [
            id.as_str(),
            "schedule-key-destruction",
            "pending",
            "kms://admin",
            "1/2"
        ],
        "{list}"
    );
    assert!(
        list.contains(&format!("key {key_id}, after 7 days")),
        "{list}"
    );
    fails(
        &server.kms("admin", &["approve", &id]),
        3,
        "may not approve their own request",
    );
    let done = json(&server.kms("admin2", &["--json", "approve", &id]));
    assert_eq!(done["state"], "executed", "{done}");
    assert_eq!(done["approvers"], serde_json::json!(["kms://admin2"]));
    let described = json(&server.kms("admin", &["--json", "key", "describe", "old"]));
    assert_eq!(described["state"], "pending-destruction", "{described}");

    // Rejected: it never runs.
    let id = filed_id(&fails(
        &server.kms("admin", &["key", "compromise", "old"]),
        6,
        "pending request",
    ));
    let text = ok(&server.kms("admin3", &["reject", &id, "--reason", "not this one"]));
    assert!(
        text.contains("state           rejected") && text.contains("result          not this one"),
        "{text}"
    );
    fails(&server.kms("admin2", &["approve", &id]), 6, "is rejected");

    // A backup: approved, then taken once by its requester.
    let id = filed_id(&fails(
        &server.kms("admin", &["backup", "--out", "b.kmsbak"]),
        6,
        "pending request",
    ));
    let text = ok(&server.kms("admin3", &["approve", &id]));
    assert!(
        text.contains(&format!(
            "kms://admin may now run the operation with --approval {id}"
        )),
        "{text}"
    );
    fails(
        &server.kms(
            "admin2",
            &["backup", "--out", "c.kmsbak", "--approval", &id],
        ),
        3,
        "another administrator's approval",
    );
    ok(&server.kms("admin", &["backup", "--out", "b.kmsbak", "--approval", &id]));
    assert!(server.read("b.kmsbak").starts_with(b"KMSB"));
    fails(
        &server.kms("admin", &["backup", "--out", "d.kmsbak", "--approval", &id]),
        6,
        "is released, not approved",
    );
}
