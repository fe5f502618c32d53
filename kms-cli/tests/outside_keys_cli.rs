//! `kms key import-public` against the real server (issue 19 items 3 and 4): a partner's SM2
//! key made by OpenSSL is imported, OpenSSL signs, `kms verify` accepts the signature and
//! refuses a changed message; `kms sign` with it is refused; describe shows its origin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{DevServer, describe, fails, json, ok};

fn openssl(server: &DevServer, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(server.path("."))
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
}

#[test]
fn a_partners_sm2_key_imported_with_the_cli_verifies_openssls_signatures() {
    let server = DevServer::start();
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
            "partner.pub.pem",
        ],
    );
    server.write("msg.txt", b"pay 100.00 CNY to account 6222 0000 0000 0001");
    openssl(
        &server,
        &[
            "dgst",
            "-sm3",
            "-sign",
            "partner.key",
            "-sigopt",
            "distid:1234567812345678",
            "-out",
            "msg.sig",
            "msg.txt",
        ],
    );
    let v = json(&server.kms(
        "admin",
        &[
            "--json",
            "key",
            "import-public",
            "--purpose",
            "sign",
            "--in",
            "partner.pub.pem",
            "--alias",
            "partner",
        ],
    ));
    assert_eq!(v["origin"], "public-only", "{v}");
    assert_eq!(v["algorithm"], "sm2", "{v}");
    let text = ok(&server.kms("admin", &["key", "describe", "partner"]));
    assert!(text.contains("public-only"), "{text}");

    let out = server.kms(
        "app",
        &[
            "verify",
            "--key",
            "partner",
            "--in",
            "msg.txt",
            "--signature",
            "msg.sig",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    server.write(
        "other.txt",
        b"pay 999.00 CNY to account 6222 0000 0000 0001",
    );
    let out = server.kms(
        "app",
        &[
            "verify",
            "--key",
            "partner",
            "--in",
            "other.txt",
            "--signature",
            "msg.sig",
        ],
    );
    assert!(
        !out.status.success(),
        "a changed message verified: {}",
        describe(&out)
    );
    fails(
        &server.kms_in("app", &["sign", "--key", "partner"], b"x"),
        6,
        "outside public key",
    );
    fails(
        &server.kms(
            "app",
            &[
                "key",
                "import-public",
                "--purpose",
                "sign",
                "--in",
                "partner.pub.pem",
            ],
        ),
        3,
        "",
    );
}
