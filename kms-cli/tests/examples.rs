//! The Python and Node examples (issue 21 item 3), executed against a real dev server: the
//! README's "Python and Node" block, the shell blocks of `examples/python/README.md` and
//! `examples/node/README.md` as written, and each language opening what the other sealed.
//! Every program prints one JSON line per step; the steps are checked here (round trips equal,
//! another context and a tampered ciphertext refused with INVALID_ARGUMENT, a tampered sealed
//! file refused, SM2 signatures valid in the KMS and outside it, an altered message not).
//!
//! A missing interpreter or package fails the test with the command that installs it
//! (`.ci/prerequisites` runs them): these tests never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{DevServer, describe, json, sh_block};
use serde_json::Value;

const PYTHON_INSTALL: &str =
    "python3 -m pip install grpcio grpcio-tools cryptography gmssl-pyx==2.1.0";
const NODE_INSTALL: &str = "npm ci --ignore-scripts --prefix examples/node";

/// The steps of `demo`, in order.
const DEMO_STEPS: [&str; 11] = [
    "encrypt",
    "decrypt",
    "decrypt with another context",
    "decrypt tampered ciphertext",
    "envelope seal",
    "envelope open",
    "envelope open tampered",
    "sign",
    "verify",
    "verify altered message",
    "verify outside the KMS",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Fails, with how to install it, when an interpreter or a package the examples use is missing.
fn check_prerequisites() {
    let python = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, cryptography, gmssl_pyx"])
        .output();
    match python {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "examples/python needs Python packages: {PYTHON_INSTALL}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("python3 did not run ({e}): install Python 3.11+, then {PYTHON_INSTALL}"),
    }
    if let Err(e) = Command::new("node").arg("--version").output() {
        panic!("node did not run ({e}): apt-get install nodejs npm, then {NODE_INSTALL}");
    }
    let node_dir = repo().join("examples/node");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(node_dir.join("package.json")).unwrap()).unwrap();
    for package in manifest["dependencies"].as_object().unwrap().keys() {
        let installed = node_dir.join("node_modules").join(package);
        assert!(
            installed.join("package.json").exists(),
            "examples/node needs {package} in {}: from the repository root, {NODE_INSTALL}",
            installed.display()
        );
    }
}

/// A dev server whose folder has `examples` linked to the repository's, so that the READMEs'
/// commands, written for the repository root, run there as written. (Both programs find
/// `proto/` from their real path, through the link.)
fn server() -> DevServer {
    check_prerequisites();
    let server = DevServer::start();
    std::os::unix::fs::symlink(repo().join("examples"), server.path("examples")).unwrap();
    server
}

fn create_key(server: &DevServer, purpose: &str, algorithm: &str, alias: &str) {
    json(&server.kms(
        "admin",
        &[
            "--json",
            "key",
            "create",
            "--purpose",
            purpose,
            "--algorithm",
            algorithm,
            "--alias",
            alias,
        ],
    ));
}

/// Runs the shell block between `<!-- NAME:begin -->` and `<!-- NAME:end -->` of `markdown`
/// (relative to the repository root) in the server's folder; returns its step lines.
fn run_block(server: &DevServer, markdown: &str, name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join(markdown)).unwrap();
    let script = sh_block(
        &text,
        &format!("<!-- {name}:begin -->"),
        &format!("<!-- {name}:end -->"),
    );
    let file = format!("{name}.sh");
    server.write(&file, &script);
    let out = server.run_script(&file);
    assert!(
        out.status.success(),
        "the {name} block of {markdown} failed:\n{script}\n{}",
        describe(&out)
    );
    steps(&out)
}

/// The JSON lines of the examples in a program's stdout (`kms` prints other lines too).
fn steps(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.starts_with("{\"step\""))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Checks one run of `demo`: every step, in order, with what it must say.
#[track_caller]
fn check_demo(steps: &[Value], algorithm: &str, outside_tool: &str) {
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(names, DEMO_STEPS, "{steps:#?}");
    let step = |name: &str| &steps[DEMO_STEPS.iter().position(|s| *s == name).unwrap()];

    let encrypt = step("encrypt");
    assert_eq!(encrypt["key_version"], 1, "{encrypt}");
    // The 24-byte secret, a header naming key and version, a nonce and a tag.
    assert!(
        encrypt["ciphertext_bytes"].as_u64().unwrap() > 24 + 12 + 16,
        "{encrypt}"
    );
    let decrypt = step("decrypt");
    assert_eq!(decrypt["round_trip"], true, "{decrypt}");
    assert_eq!(decrypt["key_id"], encrypt["key_id"], "{decrypt}");
    for name in [
        "decrypt with another context",
        "decrypt tampered ciphertext",
    ] {
        let refused = step(name);
        assert_eq!(refused["code"], "INVALID_ARGUMENT", "{refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .starts_with("decryption failed (request "),
            "{refused}"
        );
    }

    let seal = step("envelope seal");
    assert_eq!(seal["algorithm"], algorithm, "{seal}");
    assert_eq!(seal["bytes"], 1 << 20, "{seal}");
    // The header with the encrypted data key, the nonce and the tag; the data itself.
    let overhead = seal["sealed_bytes"].as_u64().unwrap() - (1 << 20);
    assert!((3 + 40 + 12 + 16..200).contains(&overhead), "{seal}");
    assert_eq!(step("envelope open")["round_trip"], true, "{steps:#?}");
    let tampered = step("envelope open tampered");
    assert_eq!(tampered["refused"], true, "{tampered}");
    assert_eq!(
        tampered["message"], "the file does not authenticate",
        "{tampered}"
    );

    let sign = step("sign");
    // An SM2 DER SEQUENCE { r, s }: at most 72 bytes.
    assert!(
        (8..=72).contains(&sign["signature_bytes"].as_u64().unwrap()),
        "{sign}"
    );
    assert_eq!(step("verify")["valid"], true, "{steps:#?}");
    assert_eq!(step("verify altered message")["valid"], false, "{steps:#?}");
    let outside = step("verify outside the KMS");
    assert_eq!(outside["tool"], outside_tool, "{outside}");
    assert_eq!(outside["algorithm"], "sm2", "{outside}");
    assert_eq!(outside["valid"], true, "{outside}");
}

#[test]
fn the_readme_block_runs_both_examples_against_a_real_dev_server() {
    let mut server = server();
    // The quick start's keys, which the block uses.
    create_key(&server, "encrypt", "sm4-gcm", "payments");
    create_key(&server, "sign", "sm2", "contracts");
    let steps = run_block(&server, "README.md", "examples");
    assert_eq!(steps.len(), 2 * DEMO_STEPS.len(), "{steps:#?}");
    let (python, node) = steps.split_at(DEMO_STEPS.len());
    check_demo(python, "SM4-GCM", "gmssl-pyx");
    check_demo(node, "SM4-GCM", "sm-crypto-v2");
    // Both used the same keys.
    assert_eq!(python[0]["key_id"], node[0]["key_id"]);
    assert_eq!(python[7]["key_id"], node[7]["key_id"]);
    server.stop();
}

#[test]
fn the_example_readmes_run_as_written() {
    let mut server = server();
    for (markdown, name, algorithm, tool, file) in [
        (
            "examples/python/README.md",
            "python",
            "SM4-GCM",
            "gmssl-pyx",
            "orders",
        ),
        (
            "examples/node/README.md",
            "node",
            "AES-256-GCM",
            "sm-crypto-v2",
            "invoices",
        ),
    ] {
        let steps = run_block(&server, markdown, name);
        assert_eq!(steps.len(), DEMO_STEPS.len() + 2, "{steps:#?}");
        check_demo(&steps[..DEMO_STEPS.len()], algorithm, tool);
        let seal = &steps[DEMO_STEPS.len()];
        assert_eq!(seal["step"], "seal", "{seal}");
        assert_eq!(seal["algorithm"], algorithm, "{seal}");
        let plain = server.read(&format!("{file}.csv"));
        // More than Encrypt's 64 KiB: what envelope encryption is for.
        assert!(plain.len() > 65_536);
        let sealed = server.read(&format!("{file}.csv.sealed"));
        assert!(!sealed.windows(16).any(|w| plain.starts_with(w)));
        assert_eq!(steps[DEMO_STEPS.len() + 1]["step"], "open");
        assert_eq!(server.read(&format!("{file}.back.csv")), plain);
    }
    server.stop();
}

/// `python3 kms_example.py ARGS…` or `node kms_example.js ARGS…` in the server's folder, as the
/// dev `app` profile (or `profile`).
fn example(server: &DevServer, language: &str, profile: &str, args: &[&str]) -> Output {
    let (program, script) = match language {
        "python" => ("python3", "examples/python/kms_example.py"),
        _ => ("node", "examples/node/kms_example.js"),
    };
    Command::new(program)
        .arg(repo().join(script))
        .args(["--profile", &format!("kms-dev/profiles/{profile}.toml")])
        .args(args)
        .current_dir(server.cwd())
        .output()
        .unwrap()
}

/// Asserts exit status 1 and that stderr contains `part`.
#[track_caller]
fn refused(out: &Output, part: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(part), "wanted {part:?}: {}", describe(out));
}

#[test]
fn each_language_opens_what_the_other_sealed_and_both_refuse_what_does_not_open() {
    let mut server = server();
    create_key(&server, "encrypt", "sm4-gcm", "ledger-sm4");
    create_key(&server, "encrypt", "aes-256-gcm", "ledger-aes");
    let plain: Vec<u8> = (0..200_000u32).flat_map(u32::to_le_bytes).collect();
    server.write("ledger.bin", &plain);
    for (sealer, opener, key, algorithm) in [
        ("python", "node", "ledger-aes", "AES-256-GCM"),
        ("node", "python", "ledger-sm4", "SM4-GCM"),
    ] {
        let sealed = format!("ledger.{sealer}.sealed");
        let out = example(
            &server,
            sealer,
            "app",
            &[
                "seal",
                "--key",
                key,
                "--context",
                "ledger=2024",
                "ledger.bin",
                &sealed,
            ],
        );
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(steps(&out)[0]["algorithm"], algorithm, "{}", describe(&out));

        let opened = format!("ledger.{opener}.out");
        let out = example(
            &server,
            opener,
            "app",
            &["open", "--context", "ledger=2024", &sealed, &opened],
        );
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(steps(&out)[0]["bytes"], plain.len(), "{}", describe(&out));
        assert_eq!(
            server.read(&opened),
            plain,
            "{opener} opening {sealer}'s file"
        );

        // Another context: the KMS does not give the data key back.
        let out = example(
            &server,
            opener,
            "app",
            &["open", "--context", "ledger=2025", &sealed, "wrong.out"],
        );
        refused(&out, "the KMS said INVALID_ARGUMENT: decryption failed");
        // A changed byte of the data: the local AEAD refuses it.
        let mut bytes = server.read(&sealed);
        let last = bytes.len() - 1;
        bytes[last / 2] ^= 0x01;
        server.write("tampered.sealed", &bytes);
        let out = example(
            &server,
            opener,
            "app",
            &[
                "open",
                "--context",
                "ledger=2024",
                "tampered.sealed",
                "t.out",
            ],
        );
        refused(&out, "the file does not authenticate");
        assert!(!server.path("wrong.out").exists() && !server.path("t.out").exists());
    }
    // A GM transport profile is named, not tried: grpcio and grpc-js speak standard TLS only.
    for language in ["python", "node"] {
        let out = example(
            &server,
            language,
            "app-gm",
            &["open", "ledger.python.sealed", "x"],
        );
        refused(&out, "this example speaks standard TLS 1.3");
    }
    server.stop();
}
