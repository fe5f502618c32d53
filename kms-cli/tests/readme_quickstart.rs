//! The README's quick start, executed: the shell block between `<!-- quickstart:begin -->` and
//! `<!-- quickstart:end -->` runs with `bash -euo pipefail` against a real dev server, with the
//! built `kms` first on the PATH, so the README cannot rot. So does the GM transport block
//! (`<!-- gm:begin -->`), whose last command is the outside Tongsuo client, and the blocks of
//! import and export, the password shield, tokens and signed requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{DevServer, describe, sh_block};

const BEGIN: &str = "<!-- quickstart:begin -->";
const END: &str = "<!-- quickstart:end -->";
const GM_BEGIN: &str = "<!-- gm:begin -->";
const GM_END: &str = "<!-- gm:end -->";
const TRANSFER_BEGIN: &str = "<!-- transfer:begin -->";
const TRANSFER_END: &str = "<!-- transfer:end -->";
const PASSWORD_BEGIN: &str = "<!-- password:begin -->";
const PASSWORD_END: &str = "<!-- password:end -->";
const TOKENIZE_BEGIN: &str = "<!-- tokenize:begin -->";
const TOKENIZE_END: &str = "<!-- tokenize:end -->";
const REQUEST_BEGIN: &str = "<!-- request:begin -->";
const REQUEST_END: &str = "<!-- request:end -->";

/// The commands of the quick start block: the text inside its one fenced `sh` block.
fn quickstart(readme: &str) -> String {
    sh_block(readme, BEGIN, END)
}

#[test]
fn the_quickstart_block_is_one_shell_block() {
    let readme = "intro\n<!-- quickstart:begin -->\n```sh\necho a\necho b\n```\n<!-- quickstart:end -->\nrest";
    assert_eq!(quickstart(readme), "echo a\necho b");
}

#[test]
fn readme_quick_start_runs_against_a_real_dev_server() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let script = quickstart(&readme);
    assert!(
        script.contains("kms "),
        "the quick start uses kms:\n{script}"
    );

    let mut server = DevServer::start();
    server.write("quickstart.sh", &script);
    let out = server.run_script("quickstart.sh");
    assert!(
        out.status.success(),
        "the README quick start failed:\n{script}\n{}",
        describe(&out)
    );
    check_quickstart_files(&server, &out);
    server.stop();
}

#[test]
fn readme_gm_block_runs_against_a_real_dev_server_and_tongsuo_agrees() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let script = sh_block(&readme, GM_BEGIN, GM_END);
    assert!(script.contains("tongsuo_client.py"), "{script}");
    let mut server = DevServer::start();
    // The README names the dev server's default port and the repository's judge; this server
    // listens elsewhere, and runs in a folder of its own.
    let judges = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/judges/");
    let script = script
        .replace("--port 7443", &format!("--port {}", server.addr.port()))
        .replace(
            "--port 7444",
            &format!("--port {}", server.tlcp_addr.port()),
        )
        .replace("tests/judges/", &format!("{}/", judges.display()));
    server.write("gm.sh", &script);
    let out = server.run_script("gm.sh");
    assert!(
        out.status.success(),
        "the README GM block failed (Tongsuo's judge needs: python3 -m pip install tongsuopy==1.0.1 h2==4.4.1):\n{script}\n{}",
        describe(&out)
    );
    assert_eq!(server.read("account.txt"), server.read("account.out"));
    assert_eq!(server.read("account.txt"), server.read("account.tlcp"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdicts: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(verdicts.len(), 2, "{stdout}");
    let tlcp = &verdicts[0];
    assert_eq!(tlcp["protocol"], "NTLSv1.1", "{tlcp}");
    assert_eq!(tlcp["cipher"], "ECDHE-SM2-SM4-GCM-SM3", "{tlcp}");
    assert_eq!(tlcp["grpc_health"]["health_status"], "SERVING", "{tlcp}");
    let verdict = &verdicts[1];
    assert_eq!(verdict["cipher"], "TLS_SM4_GCM_SM3", "{verdict}");
    assert_eq!(verdict["group"], "curveSM2", "{verdict}");
    assert_eq!(
        verdict["server_certificate_verify"]["scheme_name"], "sm2sig_sm3",
        "{verdict}"
    );
    assert_eq!(
        verdict["grpc_health"]["health_status"], "SERVING",
        "{verdict}"
    );
    server.stop();
}

/// The README's import and export block (issue 19): OpenSSL wraps for `sm2` and `rsa-aes-kwp`,
/// the CLI wraps locally, and the exported key, opened by OpenSSL, is the imported one.
#[test]
fn readme_import_export_block_runs_against_a_real_dev_server() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let script = sh_block(&readme, TRANSFER_BEGIN, TRANSFER_END);
    assert!(script.contains("key import-params"), "{script}");
    let mut server = DevServer::start();
    server.write("transfer.sh", &script);
    let out = server.run_script("transfer.sh");
    assert!(
        out.status.success(),
        "the README import/export block failed:\n{script}\n{}",
        describe(&out)
    );
    assert_eq!(server.read("legacy.key"), server.read("legacy.back"));
    for (alias, algorithm) in [
        ("legacy-sm4", "sm4-gcm"),
        ("legacy-signer", "sm2"),
        ("legacy-mac", "hmac-sm3"),
    ] {
        let out = server.kms("admin", &["--json", "key", "describe", alias]);
        assert!(out.status.success(), "{}", describe(&out));
        let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(key["origin"], "imported", "{key}");
        assert_eq!(key["state"], "enabled", "{key}");
        assert_eq!(key["algorithm"], algorithm, "{key}");
        assert_eq!(key["material_fingerprint"].as_str().unwrap().len(), 64);
    }
    let out = server.kms("admin", &["--json", "key", "describe", "legacy-mac"]);
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(key["material_expires_at"].as_u64().is_some(), "{key}");
    let out = server.kms("admin", &["--json", "key", "describe", "legacy-sm4"]);
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(key["exports"], 1, "{key}");
    server.stop();
}

/// The README's password-shield block (issue 22 item 2): sealed by the CLI and by Python with
/// OpenSSL, hashed, verified (match, no match, replay refused), re-peppered after a rotation.
#[test]
fn readme_password_block_runs_against_a_real_dev_server() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let script = sh_block(&readme, PASSWORD_BEGIN, PASSWORD_END);
    assert!(script.contains("openssl pkeyutl -encrypt"), "{script}");
    let mut server = DevServer::start();
    server.write("password.sh", &script);
    let out = server.run_script("password.sh");
    assert!(
        out.status.success(),
        "the README password block failed:\n{script}\n{}",
        describe(&out)
    );
    let stored = String::from_utf8(server.read("user.hash")).unwrap();
    assert!(stored.starts_with("$kms-pepper$k="), "{stored}");
    assert!(stored.contains(",v=1$argon2id$v=19$m="), "{stored}");
    let new = String::from_utf8(server.read("user.hash.new")).unwrap();
    assert!(
        new.contains(",v=2$argon2id$"),
        "re-peppered with version 2: {new}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The CLI printed `match` for the login, and the JSON verdict after the rotation.
    assert!(stdout.lines().any(|l| l == "match"), "{}", describe(&out));
    // The last thing printed is the JSON object (possibly over several lines).
    let start = stdout.rfind("\n{").map_or(0, |i| i + 1);
    let verdict: serde_json::Value = serde_json::from_str(&stdout[start..]).unwrap();
    assert_eq!(verdict["match"], true, "{verdict}");
    assert_eq!(verdict["pepper_key_version"], 1, "{verdict}");
    // Neither the password nor the hash is in what the commands printed.
    assert!(!stdout.contains("Tr0ub4dor"), "{stdout}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("Tr0ub4dor"));
    server.stop();
}

fn luhn_valid(pan: &str) -> bool {
    kms_core::crypto::tokenize::luhn_valid(
        &pan.bytes().map(|b| u16::from(b - b'0')).collect::<Vec<_>>(),
    )
}

/// The README's tokens block (issue 22 item 1): a CSV column tokenised and detokenised back to
/// the same file, and one-way Luhn-invalid pseudonyms for test data.
#[test]
fn readme_tokenize_block_runs_against_a_real_dev_server() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let script = sh_block(&readme, TOKENIZE_BEGIN, TOKENIZE_END);
    assert!(script.contains("kms --profile $P tokenize"), "{script}");
    let mut server = DevServer::start();
    server.write("tokenize.sh", &script);
    let out = server.run_script("tokenize.sh");
    assert!(
        out.status.success(),
        "the README tokens block failed:\n{script}\n{}",
        describe(&out)
    );
    assert_eq!(server.read("cards.csv"), server.read("back.csv"));
    let rows = |file: &str| -> Vec<Vec<String>> {
        String::from_utf8(server.read(file))
            .unwrap()
            .lines()
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    };
    let cards = rows("cards.csv");
    for (file, luhn) in [("tokens.csv", true), ("test-data.csv", false)] {
        let tokens = rows(file);
        assert_eq!(tokens[0], cards[0], "{file}: the header passes through");
        for (t, c) in tokens[1..].iter().zip(&cards[1..]) {
            assert_eq!(t[..2], c[..2], "{file}: other columns untouched");
            let (token, pan) = (&t[2], &c[2]);
            assert_ne!(token, pan);
            assert_eq!(token.len(), pan.len());
            assert_eq!(token[..6], pan[..6]);
            assert_eq!(token[token.len() - 4..], pan[pan.len() - 4..]);
            assert_eq!(luhn_valid(token), luhn, "{file}: {token}");
        }
    }
    // `cut` printed the tokens; --json printed the last summary on stderr.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l == "pan"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tokenized 2 values in 3 rows with key ") && stderr.contains(" version 1"),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(summary["operation"], "tokenized", "{summary}");
    assert_eq!(summary["values"], 2, "{summary}");
    assert_eq!(summary["key_version"], 1, "{summary}");
    assert_eq!(summary["pseudonyms"], true, "{summary}");
    server.stop();
}

/// The README's signed-request block (issue 22 item 3): a partner's SM2 key made by OpenSSL,
/// imported public-only; a request signed offline with the private key verifies once as the
/// app (`ok`, exit 0), then is a replay (exit 1, the verdict on stderr).
#[test]
fn readme_request_block_runs_against_a_real_dev_server() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let script = sh_block(&readme, REQUEST_BEGIN, REQUEST_END);
    assert!(
        script.contains("kms request sign --private-key"),
        "{script}"
    );
    let mut server = DevServer::start();
    server.write("request.sh", &script);
    let out = server.run_script("request.sh");
    assert!(
        out.status.success(),
        "the README signed-request block failed:\n{script}\n{}",
        describe(&out)
    );
    // What the partner hands over: the fields the signature covers, as FORMATS.md has them.
    let signed: serde_json::Value = serde_json::from_slice(&server.read("signed.json")).unwrap();
    assert_eq!(signed["scheme"], "sm2", "{signed}");
    assert_eq!(signed["method"], "POST", "{signed}");
    assert_eq!(signed["path"], "/v1/transfers", "{signed}");
    assert_eq!(signed["nonce"].as_str().unwrap().len(), 32, "{signed}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        signed["timestamp"].as_u64().unwrap().abs_diff(now) < 300,
        "{signed}"
    );
    // The import printed the key's id; the first verification printed ok; the second exited 1
    // and said why on stderr.
    let described = server.kms("admin", &["--json", "key", "describe", "partner-sig"]);
    assert!(described.status.success(), "{}", describe(&described));
    let key: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    assert_eq!(key["algorithm"], "sm2", "{key}");
    assert_eq!(key["purpose"], "sign", "{key}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [key["key_id"].as_str().unwrap(), "ok", "exit status 1"],
        "{}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        ["error: the request is replayed"],
        "{}",
        describe(&out)
    );
    // `--json` prints the verdict whole (what the README says), still exiting 1.
    let again = server.kms(
        "app",
        &[
            "--json",
            "request",
            "verify",
            "--key",
            "partner-sig",
            "--signed",
            "signed.json",
            "--in",
            "body.json",
        ],
    );
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    let verdict: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(verdict["verdict"], "replayed", "{verdict}");
    assert_eq!(verdict["key_id"], key["key_id"], "{verdict}");
    assert_eq!(verdict["key_version"], 1, "{verdict}");
    // Signing with a KMS key (--key): an HMAC-SM3 key shared with the partner, through
    // GenerateMac; the verdict as JSON.
    let created = server.kms(
        "admin",
        &[
            "key",
            "create",
            "--purpose",
            "mac",
            "--algorithm",
            "hmac-sm3",
            "--alias",
            "gw-mac",
        ],
    );
    assert!(created.status.success(), "{}", describe(&created));
    let signed = server.kms(
        "app",
        &[
            "request",
            "sign",
            "--key",
            "gw-mac",
            "--scheme",
            "hmac-sm3",
            "--method",
            "PUT",
            "--path",
            "/v1/limits",
            "--in",
            "body.json",
            "--out",
            "mac-signed.json",
        ],
    );
    assert!(signed.status.success(), "{}", describe(&signed));
    let ok = server.kms(
        "app",
        &[
            "--json",
            "request",
            "verify",
            "--key",
            "gw-mac",
            "--signed",
            "mac-signed.json",
            "--in",
            "body.json",
        ],
    );
    assert!(ok.status.success(), "{}", describe(&ok));
    let verdict: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        (verdict["verdict"].as_str(), verdict["reason"].as_str()),
        (Some("ok"), Some("")),
        "{verdict}"
    );
    server.stop();
}

/// What the quick start leaves behind, and what OpenSSL said.
fn check_quickstart_files(server: &DevServer, out: &std::process::Output) {
    for file in [
        "card.txt",
        "card.kms",
        "card.out",
        "card.sig",
        "contracts.pem",
    ] {
        let bytes = server.read(file);
        assert!(!bytes.is_empty(), "{file} is empty");
    }
    assert_eq!(server.read("card.txt"), server.read("card.out"));
    assert_ne!(server.read("card.txt"), server.read("card.kms"));
    let pem = String::from_utf8(server.read("contracts.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    // OpenSSL said so on stdout, too.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Verified OK"), "{}", describe(out));
}
