//! `kms bench` (issue 7 item 1) against the real dev server, in-process (`common::DevServer`).
//!
//! The server runs in this test process, so `--server-pid` is our own PID: its CPU time is the
//! server's plus this harness's (which only waits for `kms` meanwhile) and that of the other
//! test's server, so only its presence and sign are checked here, not its size. Runs are short:
//! one second measured, after one (or no) second of warmup.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DevServer, fails, json};
use serde_json::Value;

fn create_key(server: &DevServer, args: &[&str]) {
    let mut all = vec!["--json", "key", "create"];
    all.extend_from_slice(args);
    json(&server.kms("admin", &all));
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number: {v}"))
}

/// Runs `kms --json bench …` as the app and checks what every successful run must show.
fn bench(server: &DevServer, op: &str, key: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "--json",
        "bench",
        "--op",
        op,
        "--key",
        key,
        "--duration",
        "1",
        "--concurrency",
        "4",
        "--connections",
        "2",
    ];
    args.extend_from_slice(extra);
    let v = json(&server.kms("app", &args));
    assert_eq!(v["op"], op, "{v}");
    assert_eq!(v["concurrency"], 4, "{v}");
    assert_eq!(v["connections"], 2, "{v}");
    assert_eq!(num(&v, "duration_s"), 1.0, "{v}");
    let requests = num(&v, "requests");
    assert!(requests > 0.0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["first_error"].is_null(), "{v}");
    let (p50, p99, p999) = (num(&v, "p50_ms"), num(&v, "p99_ms"), num(&v, "p999_ms"));
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{v}");
    let rate = num(&v, "requests_per_s");
    let expected = requests / num(&v, "duration_s");
    assert!(
        (rate - expected).abs() <= 0.2 * expected,
        "rate {rate} vs {expected}: {v}"
    );
    v
}

#[test]
fn bench_measures_encrypt_and_sign_with_the_server_cpu() {
    let server = DevServer::start();
    create_key(
        &server,
        &[
            "--purpose",
            "encrypt",
            "--algorithm",
            "sm4-gcm",
            "--alias",
            "b-sm4",
        ],
    );
    create_key(
        &server,
        &[
            "--purpose",
            "sign",
            "--algorithm",
            "sm2",
            "--alias",
            "b-sm2",
        ],
    );
    let pid = std::process::id().to_string();

    let v = bench(
        &server,
        "encrypt",
        "b-sm4",
        &["--size", "1024", "--server-pid", &pid],
    );
    assert_eq!(v["size"], 1024, "{v}");
    assert_eq!(v["server_pid"], std::process::id(), "{v}");
    assert_eq!(v["server_pid_source"], "flag", "{v}");
    assert!(num(&v, "server_cpu_us_per_request") > 0.0, "{v}");
    assert!(v["server_cpu_note"].is_null(), "{v}");

    let v = bench(&server, "sign", "b-sm2", &["--server-pid", &pid]);
    assert!(num(&v, "server_cpu_us_per_request") > 0.0, "{v}");

    // Without --server-pid, the process listening on the local endpoint's port: this one.
    let v = bench(&server, "encrypt", "b-sm4", &["--warmup", "0"]);
    assert_eq!(v["server_pid"], std::process::id(), "{v}");
    assert_eq!(v["server_pid_source"], "auto", "{v}");
    assert!(num(&v, "server_cpu_us_per_request") > 0.0, "{v}");

    // Not a MAC key: refused before any load, with the purpose it needs.
    let out = server.kms(
        "app",
        &[
            "bench",
            "--op",
            "mac",
            "--key",
            "b-sm4",
            "--duration",
            "1",
            "--warmup",
            "0",
        ],
    );
    let stderr = fails(&out, 6, "--op mac with key \"b-sm4\"");
    assert!(stderr.contains("cannot be used for mac"), "{stderr}");
    assert!(stderr.contains("needs a key of purpose mac"), "{stderr}");
}

#[test]
fn bench_prints_a_table_and_refuses_bad_usage() {
    let server = DevServer::start();
    create_key(&server, &["--purpose", "mac", "--alias", "b-mac"]);
    let out = server.kms(
        "app",
        &[
            "bench",
            "--op",
            "mac",
            "--key",
            "b-mac",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--concurrency",
            "2",
        ],
    );
    let text = common::ok(&out);
    for row in ["requests/s", "latency p99", "errors", "server CPU/request"] {
        assert!(text.contains(row), "{text}");
    }
    // Stderr is not a terminal here: no progress lines without --progress.
    assert!(out.stderr.is_empty(), "{}", common::describe(&out));

    let usage = |args: &[&str], part: &str| {
        let mut all = vec!["bench", "--key", "b-mac"];
        all.extend_from_slice(args);
        let out = server.kms("app", &all);
        assert_eq!(out.status.code(), Some(2), "{}", common::describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(part), "wanted {part:?}: {stderr}");
    };
    usage(&["--op", "mac", "--concurrency", "0"], "--concurrency");
    usage(&["--op", "mac", "--concurrency", "5000"], "--concurrency");
    usage(&["--op", "mac", "--duration", "601"], "--duration");
    usage(&["--op", "frobnicate"], "invalid value 'frobnicate'");
    usage(
        &["--op", "mac", "--concurrency", "2", "--connections", "3"],
        "more than --concurrency",
    );
    usage(&["--op", "datakey", "--size", "24"], "16 (an SM4 data key)");

    // Wrong purposes, refused by the server on the first request (exit 6, the server's words).
    for (op, part) in [
        ("encrypt", "cannot be used for encrypt"),
        ("sign", "cannot be used for sign"),
        ("decrypt", "making the ciphertext to decrypt"),
    ] {
        let out = server.kms("app", &["bench", "--op", op, "--key", "b-mac"]);
        let stderr = fails(&out, 6, part);
        assert!(stderr.contains("hint: --op"), "{stderr}");
    }
    // A key that does not exist: not found (exit 4), before any load.
    fails(
        &server.kms("app", &["bench", "--op", "mac", "--key", "nope"]),
        4,
        "--op mac with key \"nope\"",
    );
}

/// `--batch N`: every call carries N items through the batch RPC; the report counts calls as
/// requests and adds items/s and the server's CPU per item. An item refused on the probe stops
/// the run with the server's words; an operation without a batch form is a usage error.
#[test]
fn bench_batches_report_items_and_cpu_per_item() {
    let server = DevServer::start();
    create_key(&server, &["--purpose", "encrypt", "--alias", "b-sm4"]);
    create_key(&server, &["--purpose", "sign", "--alias", "b-sm2"]);
    create_key(&server, &["--purpose", "tokenize", "--alias", "b-tok"]);
    let pid = std::process::id().to_string();
    // Tokenize carries its values in one call of its own RPC (`kms.v1.Tokenization`).
    for (op, key, items) in [
        ("encrypt", "b-sm4", 50u32),
        ("verify", "b-sm2", 5),
        ("tokenize", "b-tok", 200),
    ] {
        let v = bench(
            &server,
            op,
            key,
            &["--batch", &items.to_string(), "--server-pid", &pid],
        );
        let n = f64::from(items);
        assert_eq!(num(&v, "items_per_call"), n, "{v}");
        assert_eq!(num(&v, "items"), num(&v, "requests") * n, "{v}");
        let items_per_s = num(&v, "items_per_s");
        assert!(
            (items_per_s - num(&v, "requests_per_s") * n).abs() < 1e-6 * items_per_s,
            "{v}"
        );
        let per_item = num(&v, "server_cpu_us_per_item");
        assert!(per_item > 0.0, "{v}");
        assert!(
            (per_item * n - num(&v, "server_cpu_us_per_request")).abs() < 1e-6 * per_item * n,
            "{v}"
        );
    }
    // An item the server refuses (a sign key cannot encrypt): stopped at the probe.
    let out = server.kms(
        "app",
        &["bench", "--op", "encrypt", "--key", "b-sm2", "--batch", "3"],
    );
    let stderr = fails(&out, 6, "an item of the batch failed");
    assert!(stderr.contains("cannot be used for encrypt"), "{stderr}");
    let out = server.kms(
        "app",
        &[
            "bench",
            "--op",
            "asym-decrypt",
            "--key",
            "b-sm2",
            "--batch",
            "3",
        ],
    );
    fails(&out, 2, "asymmetric decryption has no batch form");
    let out = server.kms(
        "app",
        &[
            "bench", "--op", "encrypt", "--key", "b-sm4", "--batch", "1001",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", common::describe(&out));
}

/// `--op verify-request`: each request signed here with HMAC-SM3 under the partner's copy of
/// an imported MAC key and a new nonce, so every one verifies once (any other verdict is an
/// error). Without the key's bytes it is a usage error; with other bytes the first request's
/// verdict stops the run.
#[test]
fn bench_verify_request_signs_each_request_with_a_new_nonce() {
    let server = DevServer::start();
    create_key(
        &server,
        &[
            "--purpose",
            "mac",
            "--algorithm",
            "hmac-sm3",
            "--alias",
            "b-partner",
            "--origin",
            "external",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let partner = dir.path().join("partner.key");
    std::fs::write(&partner, [0x5a; 32]).unwrap();
    let partner = partner.to_str().unwrap();
    common::ok(&server.kms(
        "admin",
        &[
            "key",
            "import",
            "b-partner",
            "--material",
            partner,
            "--wrap-locally",
        ],
    ));
    let v = bench(
        &server,
        "verify-request",
        "b-partner",
        &["--partner-key", partner, "--size", "256"],
    );
    assert_eq!(v["size"], 256, "{v}");

    let out = server.kms(
        "app",
        &["bench", "--op", "verify-request", "--key", "b-partner"],
    );
    let stderr = fails(&out, 2, "--op verify-request needs --partner-key");
    assert!(stderr.contains("hint:"), "{stderr}");
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, [0xa5; 32]).unwrap();
    fails(
        &server.kms(
            "app",
            &[
                "bench",
                "--op",
                "verify-request",
                "--key",
                "b-partner",
                "--partner-key",
                wrong.to_str().unwrap(),
                "--duration",
                "1",
            ],
        ),
        1,
        "BadSignature",
    );
}
