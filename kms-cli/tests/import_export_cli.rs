//! `kms key import-params`, `kms key import` and `kms key export` against the real server
//! (issue 19): every refusal has its exit code and says what is wrong, and under dual control
//! an export is released to its requester for exactly what was approved. The README's block
//! (the happy paths, with OpenSSL) runs in `readme_quickstart.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DevServer, describe, fails, filed_id, json, ok};

fn external(server: &DevServer, alias: &str, algorithm: &str, purpose: &str, exportable: bool) {
    let mut args = vec![
        "--json",
        "key",
        "create",
        "--purpose",
        purpose,
        "--algorithm",
        algorithm,
        "--origin",
        "external",
        "--alias",
        alias,
    ];
    if exportable {
        args.push("--exportable");
    }
    let key = json(&server.kms("admin", &args));
    assert_eq!(key["state"], "pending-import", "{key}");
    assert_eq!(key["origin"], "imported", "{key}");
    assert_eq!(key["exportable"], exportable, "{key}");
}

fn openssl(server: &DevServer, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(server.cwd())
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
}

#[test]
fn bad_material_tokens_and_keys_are_named_and_change_nothing() {
    let server = DevServer::start();
    external(&server, "in", "sm4-gcm", "encrypt", false);

    // Wrong length, wrapped locally: the server names the length; the key still waits.
    server.write("short.key", [7u8; 15]);
    fails(
        &server.kms(
            "admin",
            &[
                "key",
                "import",
                "in",
                "--material",
                "short.key",
                "--wrap-locally",
            ],
        ),
        6,
        "must be 16 bytes",
    );
    // A traditional (PKCS#1) PEM private key for --wrap-locally: the conversion is named.
    openssl(
        &server,
        &["genrsa", "-traditional", "-out", "pkcs1.pem", "2048"],
    );
    fails(
        &server.kms(
            "admin",
            &[
                "key",
                "import",
                "in",
                "--material",
                "pkcs1.pem",
                "--wrap-locally",
            ],
        ),
        6,
        "openssl pkcs8 -topk8 -nocrypt",
    );
    // --in without --token, and neither source.
    server.write("x.bin", b"x");
    fails(
        &server.kms("admin", &["key", "import", "in", "--in", "x.bin"]),
        2,
        "--token",
    );
    fails(
        &server.kms("admin", &["key", "import", "in"]),
        2,
        "--material",
    );
    // A token that is not one; garbage wrapped under a real token (which stays usable).
    fails(
        &server.kms(
            "admin",
            &["key", "import", "in", "--in", "x.bin", "--token", "nope"],
        ),
        6,
        "not an import token",
    );
    let token = ok(&server.kms(
        "admin",
        &[
            "key",
            "import-params",
            "in",
            "--wrapping-spec",
            "rsa-oaep-sha256",
            "--out",
            "wrap.pem",
        ],
    ));
    let token = token.trim();
    fails(
        &server.kms(
            "admin",
            &["key", "import", "in", "--in", "x.bin", "--token", token],
        ),
        6,
        "cannot be opened",
    );
    let key = json(&server.kms("admin", &["--json", "key", "describe", "in"]));
    assert_eq!(key["state"], "pending-import", "{key}");
    // --json: the token, the spec, the file and the expiry.
    let p = json(&server.kms(
        "admin",
        &[
            "--json",
            "key",
            "import-params",
            "in",
            "--wrapping-spec",
            "rsa-aes-kwp",
            "--wrapping-key-spec",
            "rsa-4096",
            "--out",
            "wrap4096.pem",
        ],
    ));
    assert!(
        p["import_token"].as_str().unwrap().starts_with("imp-"),
        "{p}"
    );
    assert_eq!(p["wrapping_spec"], "rsa-aes-kwp", "{p}");
    assert_eq!(p["wrapping_public_key_file"], "wrap4096.pem", "{p}");
    assert!(
        server
            .read("wrap4096.pem")
            .starts_with(b"-----BEGIN PUBLIC KEY-----")
    );

    // The same token, now with good material wrapped by OpenSSL: imported; then spent.
    openssl(&server, &["rand", "-out", "good.key", "16"]);
    openssl(
        &server,
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            "wrap.pem",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
            "-in",
            "good.key",
            "-out",
            "good.wrapped",
        ],
    );
    let args = [
        "key",
        "import",
        "in",
        "--in",
        "good.wrapped",
        "--token",
        token,
    ];
    let line = ok(&server.kms("admin", &args));
    assert!(line.contains("imported: enabled (material SM3 "), "{line}");
    fails(&server.kms("admin", &args), 6, "imports once");
    // Other material never replaces it.
    server.write("other.key", [9u8; 16]);
    fails(
        &server.kms(
            "admin",
            &[
                "key",
                "import",
                "in",
                "--material",
                "other.key",
                "--wrap-locally",
            ],
        ),
        6,
        "holds other material",
    );
    // Not exportable; and an app may not export at all.
    openssl(
        &server,
        &["genpkey", "-algorithm", "SM2", "-out", "partner.key"],
    );
    openssl(
        &server,
        &[
            "pkey",
            "-in",
            "partner.key",
            "-pubout",
            "-out",
            "partner.pem",
        ],
    );
    let export = [
        "key",
        "export",
        "in",
        "--to",
        "partner.pem",
        "--wrapping-spec",
        "sm2",
        "--out",
        "out.bin",
    ];
    fails(&server.kms("admin", &export), 6, "not exportable");
    fails(&server.kms("app", &export), 3, "may not export keys");
    // A generated key takes no material.
    ok(&server.kms(
        "admin",
        &[
            "key",
            "create",
            "--purpose",
            "encrypt",
            "--alias",
            "made-here",
        ],
    ));
    fails(
        &server.kms(
            "admin",
            &[
                "key",
                "import-params",
                "made-here",
                "--wrapping-spec",
                "sm2",
                "--out",
                "w.pem",
            ],
        ),
        6,
        "origin generated",
    );
}

#[test]
fn under_dual_control_an_export_waits_for_a_second_admin() {
    let server = DevServer::start_dual_control(2);
    ok(&server.kms(
        "admin",
        &[
            "key",
            "create",
            "--purpose",
            "encrypt",
            "--exportable",
            "--alias",
            "leaves",
        ],
    ));
    openssl(
        &server,
        &["genpkey", "-algorithm", "SM2", "-out", "partner.key"],
    );
    openssl(
        &server,
        &[
            "pkey",
            "-in",
            "partner.key",
            "-pubout",
            "-out",
            "partner.pem",
        ],
    );
    openssl(
        &server,
        &["genpkey", "-algorithm", "SM2", "-out", "other.key"],
    );
    openssl(
        &server,
        &["pkey", "-in", "other.key", "-pubout", "-out", "other.pem"],
    );
    let export = |to: &str| {
        vec![
            "key".to_owned(),
            "export".to_owned(),
            "leaves".to_owned(),
            "--to".to_owned(),
            to.to_owned(),
            "--wrapping-spec".to_owned(),
            "sm2".to_owned(),
            "--out".to_owned(),
            "leaves.bin".to_owned(),
        ]
    };
    let first: Vec<String> = export("partner.pem");
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let stderr = fails(
        &server.kms("admin", &first),
        6,
        "export-key needs the approval of 2 administrators",
    );
    let id = filed_id(&stderr);
    assert!(stderr.contains(&format!("--approval {id}")), "{stderr}");
    ok(&server.kms("admin2", &["approve", &id]));
    // Released for another recipient: refused (and spent).
    let other: Vec<String> = export("other.pem");
    let mut other: Vec<&str> = other.iter().map(String::as_str).collect();
    other.extend(["--approval", &id]);
    fails(&server.kms("admin", &other), 6, "not this export");
    // A new request, approved, used for what it named.
    let stderr = fails(&server.kms("admin", &first), 6, "pending request");
    let id = filed_id(&stderr);
    ok(&server.kms("admin2", &["approve", &id]));
    let mut with = first.clone();
    with.extend(["--approval", &id]);
    let line = ok(&server.kms("admin", &with));
    assert!(line.contains("exported (sm2)"), "{line}");
    openssl(
        &server,
        &[
            "pkeyutl",
            "-decrypt",
            "-inkey",
            "partner.key",
            "-in",
            "leaves.bin",
            "-out",
            "leaves.key",
        ],
    );
    assert_eq!(server.read("leaves.key").len(), 16);
}
