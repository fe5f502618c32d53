//! The CLI over the GM transport (issue 16): a `tls = "gm"` profile speaks RFC 8998 (TLS 1.3,
//! TLS_SM4_GCM_SM3, curveSM2, SM2 certificates) to a dev server, every call's audit record says
//! so, and `kms pki issue --gm` makes a working SM2 identity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DevServer, describe};

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn gm_profiles_encrypt_decrypt_and_the_audit_records_the_gm_suite() {
    let mut server = DevServer::start();
    let profile = std::fs::read_to_string(server.path("kms-dev/profiles/app-gm.toml")).unwrap();
    assert!(profile.contains("tls = \"gm\""), "{profile}");

    ok(&server.kms(
        "admin-gm",
        &[
            "key",
            "create",
            "--purpose",
            "encrypt",
            "--algorithm",
            "sm4-gcm",
            "--alias",
            "gm",
        ],
    ));
    server.write("card.txt", "card 6222 0000 1111 2222\n");
    ok(&server.kms(
        "app-gm",
        &[
            "encrypt",
            "--key",
            "gm",
            "--context",
            "order=42",
            "--in",
            "card.txt",
            "--out",
            "card.kms",
        ],
    ));
    // What one transport encrypted, the other decrypts: same principal, same keys.
    ok(&server.kms(
        "app",
        &[
            "decrypt",
            "--context",
            "order=42",
            "--in",
            "card.kms",
            "--out",
            "card.out",
        ],
    ));
    assert_eq!(server.read("card.txt"), server.read("card.out"));

    ok(&server.kms("auditor-gm", &["audit", "export", "--out", "audit.jsonl"]));
    let trail = String::from_utf8(server.read("audit.jsonl")).unwrap();
    let transport_of = |operation: &str| -> Vec<String> {
        trail
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["operation"] == operation)
            .map(|r| r["transport"].as_str().unwrap_or("none").to_owned())
            .collect()
    };
    assert_eq!(transport_of("Crypto/Encrypt"), ["TLSv1.3 TLS_SM4_GCM_SM3"]);
    let decrypts = transport_of("Crypto/Decrypt");
    assert_eq!(decrypts.len(), 1);
    assert_eq!(decrypts, ["TLSv1.3 TLS_AES_256_GCM_SHA384"]);
    server.stop();
}

#[test]
fn pki_issue_gm_makes_an_sm2_identity_that_connects() {
    let mut server = DevServer::start();
    let endpoint = format!("https://{}", server.addr);
    let out = ok(&server.kms_offline(&[
        "pki",
        "issue",
        "app2",
        "--gm",
        "--ca-dir",
        "kms-dev",
        "--endpoint",
        &endpoint,
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["profile"]
            .as_str()
            .unwrap()
            .ends_with("profiles/app2-gm.toml"),
        "{v}"
    );
    assert!(
        v["enc_cert"]
            .as_str()
            .unwrap()
            .ends_with("certs/app2-sm2-enc.pem"),
        "{v}"
    );
    // Unregistered: the server knows the certificate's subject, and refuses the call by role.
    let denied = server.kms("app2-gm", &["random", "--bytes", "8"]);
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("kms://app2"), "{err}");
    // Registered by an admin (over RFC 8998 too), it works.
    ok(&server.kms(
        "admin-gm",
        &[
            "principal",
            "add",
            "kms://app2",
            "--role",
            "app",
            "--namespace",
            "default",
        ],
    ));
    let random = server.kms("app2-gm", &["random", "--bytes", "8"]);
    assert!(random.status.success(), "{}", describe(&random));
    assert_eq!(random.stdout.len(), 8, "raw bytes on stdout");

    // A GM profile whose CA file holds no SM2 CA is refused before connecting.
    let text = std::fs::read_to_string(server.path("kms-dev/profiles/app2-gm.toml")).unwrap();
    server.write(
        "kms-dev/profiles/bad-gm.toml",
        text.replace("../ca-sm2.pem", "../ca.pem"),
    );
    let bad = server.kms("bad-gm", &["status"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("needs an SM2 CA"), "{err}");
    server.stop();
}

#[test]
fn tlcp_profiles_sign_verify_and_the_audit_records_tlcp() {
    let mut server = DevServer::start();
    let profile = std::fs::read_to_string(server.path("kms-dev/profiles/app-tlcp.toml")).unwrap();
    assert!(
        profile.contains("tls = \"tlcp\"") && profile.contains("enc_key"),
        "{profile}"
    );
    ok(&server.kms(
        "admin-tlcp",
        &[
            "key",
            "create",
            "--purpose",
            "sign",
            "--algorithm",
            "sm2",
            "--alias",
            "seal",
        ],
    ));
    server.write("doc.txt", "contract 42\n");
    ok(&server.kms(
        "app-tlcp",
        &[
            "sign", "--key", "seal", "--in", "doc.txt", "--out", "doc.sig",
        ],
    ));
    ok(&server.kms(
        "app-tlcp",
        &[
            "verify",
            "--key",
            "seal",
            "--in",
            "doc.txt",
            "--signature",
            "doc.sig",
        ],
    ));
    ok(&server.kms("auditor-tlcp", &["audit", "export", "--out", "audit.jsonl"]));
    let trail = String::from_utf8(server.read("audit.jsonl")).unwrap();
    let tlcp: Vec<String> = trail
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["operation"] == "Crypto/Sign" || r["operation"] == "Crypto/Verify")
        .map(|r| r["transport"].as_str().unwrap_or("none").to_owned())
        .collect();
    assert_eq!(
        tlcp,
        ["TLCP ECDHE_SM4_GCM_SM3", "TLCP ECDHE_SM4_GCM_SM3"],
        "{trail}"
    );

    // A TLCP profile without its encryption pair says what is missing.
    let without: String = profile
        .lines()
        .filter(|l| !l.starts_with("enc_"))
        .map(|l| format!("{l}\n"))
        .collect();
    server.write("kms-dev/profiles/half-tlcp.toml", without);
    let half = server.kms("half-tlcp", &["status"]);
    assert!(!half.status.success());
    let err = String::from_utf8_lossy(&half.stderr);
    assert!(err.contains("needs enc_cert and enc_key"), "{err}");
    server.stop();
}
