//! The sm2sig_sm3 CertificateVerify signature (RFC 8998 §3.2.1) judged by OpenSSL 3: what
//! OpenSSL signs with the ID "TLSv1.3+GM+Cipher+Suite" verifies here, what is signed here
//! verifies in OpenSSL with that ID and not with the default one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use kms_gmtls::sign::{SM2_SM3, Sm2SigningKey, TLS13_SM2_ID, verify_tls13};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::sign::SigningKey;

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command-line tool (apt-get install openssl)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The content a client signs (RFC 8446 §4.4.3) over a fixed transcript hash.
fn content() -> Vec<u8> {
    let mut m = vec![0x20; 64];
    m.extend_from_slice(b"TLS 1.3, client CertificateVerify\x00");
    m.extend_from_slice(&[0x5A; 32]);
    m
}

#[test]
fn openssl_and_this_crate_agree_on_the_tls13_sm2_signature() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(openssl(d, &["genpkey", "-algorithm", "SM2", "-out", "key.pem"]).0);
    assert!(
        openssl(
            d,
            &[
                "pkey", "-in", "key.pem", "-pubout", "-outform", "DER", "-out", "pub.der"
            ]
        )
        .0
    );
    assert!(openssl(d, &["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"]).0);
    std::fs::write(d.join("content"), content()).unwrap();
    let spki = std::fs::read(d.join("pub.der")).unwrap();
    let tls_id = format!("distid:{TLS13_SM2_ID}");

    // OpenSSL signs, we verify.
    let (ok, out) = openssl(
        d,
        &[
            "pkeyutl",
            "-sign",
            "-inkey",
            "key.pem",
            "-rawin",
            "-digest",
            "sm3",
            "-pkeyopt",
            &tls_id,
            "-in",
            "content",
            "-out",
            "openssl.sig",
        ],
    );
    assert!(ok, "{out}");
    let sig = std::fs::read(d.join("openssl.sig")).unwrap();
    verify_tls13(&spki, &content(), &sig).expect("OpenSSL's TLS 1.3 SM2 signature");

    // We sign, OpenSSL verifies with the TLS 1.3 ID and refuses it under the default ID.
    let pem = std::fs::read(d.join("key.pem")).unwrap();
    let key = Sm2SigningKey::from_der(&PrivateKeyDer::from_pem_slice(&pem).unwrap()).unwrap();
    let sig = key
        .choose_scheme(&[SM2_SM3])
        .unwrap()
        .sign(&content())
        .unwrap();
    std::fs::write(d.join("ours.sig"), &sig).unwrap();
    let verify = |id: &str| {
        openssl(
            d,
            &[
                "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-digest", "sm3",
                "-pkeyopt", id, "-in", "content", "-sigfile", "ours.sig",
            ],
        )
    };
    let (ok, out) = verify(&tls_id);
    assert!(
        ok && out.contains("Signature Verified Successfully"),
        "{out}"
    );
    let (ok, out) = verify("distid:1234567812345678");
    assert!(!ok, "verified under the certificate ID: {out}");
}
