//! OpenSSL 3 as the independent judge of our SM2 certificates, both ways: `openssl` must read
//! and verify what [`Sm2Ca`] issues, and [`verify_chain`] must accept (and refuse) what
//! `openssl` issues.
//!
//! OpenSSL 3.0 facts these tests rely on (found on 3.0.19):
//! * `openssl verify` checks SM2 signatures with its own default ID unless told
//!   `-vfyopt distid:1234567812345678` (there is no `-sm2-id` option);
//! * that option only applies to the certificate being verified, so a root → intermediate →
//!   leaf chain fails at depth 1 even when OpenSSL made it itself; each link is therefore
//!   verified on its own (`-partial_chain` with the intermediate as the trust anchor).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use kms_gmtls::x509::{
    Error, LeafSpec, Purpose, Sm2Ca, Usage, cert_identity, sm2_public_key_of, verify_chain,
};

const DISTID: &str = "distid:1234567812345678";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `openssl args…` in `dir`; returns (success, stdout + stderr).
fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command-line tool is a test prerequisite (.ci/prerequisites)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, text) = openssl(dir, args);
    assert!(ok, "openssl {args:?} failed:\n{text}");
    text
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn der_of(dir: &Path, pem_file: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(dir.join(pem_file)).unwrap();
    let (label, der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
    assert_eq!(label, "CERTIFICATE");
    der
}

#[test]
fn openssl_reads_and_verifies_what_we_issue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Sm2Ca::generate("KMS Interop CA", 365).unwrap();
    let mut server = LeafSpec::new("kms.example", Usage::TlsServer, 30);
    server.dns_names.push("kms.example".into());
    server.ip_addresses.push("127.0.0.1".parse().unwrap());
    let server = ca.issue(&server).unwrap();
    let mut client = LeafSpec::new("app", Usage::TlsClient, 30);
    client.uris.push("kms://principal/app".into());
    let client = ca.issue(&client).unwrap();
    write(d, "ca.pem", ca.cert_pem());
    write(d, "server.pem", &server.cert_pem);
    write(d, "server.key", &server.key_pem);
    write(d, "client.pem", &client.cert_pem);

    let text = openssl_ok(d, &["x509", "-in", "ca.pem", "-noout", "-text"]);
    for expected in [
        "Version: 3 (0x2)",
        "Signature Algorithm: SM2-with-SM3",
        "ASN1 OID: SM2",
        "X509v3 Basic Constraints: critical\n                CA:TRUE",
        "X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign",
        "X509v3 Subject Key Identifier",
    ] {
        assert!(text.contains(expected), "CA lacks {expected:?}:\n{text}");
    }
    let text = openssl_ok(d, &["x509", "-in", "server.pem", "-noout", "-text"]);
    for expected in [
        "Signature Algorithm: SM2-with-SM3",
        "Issuer: CN = KMS Interop CA",
        "Subject: CN = kms.example",
        "ASN1 OID: SM2",
        "X509v3 Basic Constraints: critical\n                CA:FALSE",
        "X509v3 Key Usage: critical\n                Digital Signature",
        "X509v3 Extended Key Usage: \n                TLS Web Server Authentication",
        "DNS:kms.example, IP Address:127.0.0.1",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(
            text.contains(expected),
            "server cert lacks {expected:?}:\n{text}"
        );
    }
    let text = openssl_ok(d, &["x509", "-in", "client.pem", "-noout", "-text"]);
    assert!(text.contains("URI:kms://principal/app"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");

    let verify = |purpose: &str, file: &str| {
        openssl(
            d,
            &[
                "verify", "-vfyopt", DISTID, "-purpose", purpose, "-CAfile", "ca.pem", file,
            ],
        )
    };
    let (ok, text) = verify("sslserver", "server.pem");
    assert!(ok && text.contains("server.pem: OK"), "{text}");
    let (ok, text) = verify("sslclient", "client.pem");
    assert!(ok && text.contains("client.pem: OK"), "{text}");
    // OpenSSL agrees with our extendedKeyUsage: a server certificate is no client certificate.
    let (ok, text) = verify("sslclient", "server.pem");
    assert!(!ok, "{text}");

    // The PKCS#8 key we hand out is the certificate's key, as OpenSSL reads both.
    let from_key = openssl_ok(d, &["pkey", "-in", "server.key", "-pubout"]);
    let from_cert = openssl_ok(d, &["x509", "-in", "server.pem", "-noout", "-pubkey"]);
    assert_eq!(from_key, from_cert);
}

#[test]
fn openssl_verifies_each_link_of_our_intermediate_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Sm2Ca::generate("KMS Root", 365).unwrap();
    let issued = root
        .issue(&LeafSpec::new("KMS Issuing CA", Usage::Ca, 200))
        .unwrap();
    let issuing = Sm2Ca::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
    let leaf = issuing
        .issue(&LeafSpec::new("node-1", Usage::TlsServer, 30))
        .unwrap();
    write(d, "root.pem", root.cert_pem());
    write(d, "int.pem", &issued.cert_pem);
    write(d, "leaf.pem", &leaf.cert_pem);

    let text = openssl_ok(d, &["x509", "-in", "int.pem", "-noout", "-text"]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    let text = openssl_ok(
        d,
        &[
            "verify", "-vfyopt", DISTID, "-CAfile", "root.pem", "int.pem",
        ],
    );
    assert!(text.contains("int.pem: OK"), "{text}");
    let text = openssl_ok(
        d,
        &[
            "verify",
            "-vfyopt",
            DISTID,
            "-partial_chain",
            "-purpose",
            "sslserver",
            "-CAfile",
            "int.pem",
            "leaf.pem",
        ],
    );
    assert!(text.contains("leaf.pem: OK"), "{text}");
}

/// An OpenSSL-made SM2 CA in `d`: `ca.key` (PKCS#8) and `ca.pem`, with the given extensions.
fn openssl_ca(d: &Path, cn: &str, days: &str, key_usage: &str) {
    openssl_ok(d, &["genpkey", "-algorithm", "SM2", "-out", "ca.key"]);
    openssl_ok(
        d,
        &[
            "req", "-x509", "-new", "-key", "ca.key", "-sm3", "-sigopt", DISTID, "-subj", cn,
            "-days", days, "-addext", key_usage, "-out", "ca.pem",
        ],
    );
}

/// An OpenSSL-made leaf `{name}.pem` signed by `ca.pem`/`ca.key` in `d`. `key_alg` is the
/// `genpkey` algorithm arguments, `sign_opts` the extra signing options, `ext` the extensions.
fn openssl_leaf(d: &Path, name: &str, key_alg: &[&str], sign_opts: &[&str], ext: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let pem = format!("{name}.pem");
    let ext_file = format!("{name}.ext");
    write(d, &ext_file, ext);
    let mut genpkey = vec!["genpkey"];
    genpkey.extend_from_slice(key_alg);
    genpkey.extend_from_slice(&["-out", &key]);
    openssl_ok(d, &genpkey);
    let subj = format!("/CN={name}");
    let mut req = vec!["req", "-new", "-key", &key, "-subj", &subj, "-out", &csr];
    if key_alg.contains(&"SM2") {
        req.extend_from_slice(&["-sm3", "-sigopt", DISTID]);
    }
    openssl_ok(d, &req);
    let mut x509 = vec![
        "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "30",
        "-extfile", &ext_file, "-out", &pem,
    ];
    if key_alg.contains(&"SM2") {
        x509.extend_from_slice(&["-vfyopt", DISTID]);
    }
    x509.extend_from_slice(sign_opts);
    openssl_ok(d, &x509);
}

const SM2_KEY: &[&str] = &["-algorithm", "SM2"];
const SM3_DEFAULT_ID: &[&str] = &["-sm3", "-sigopt", DISTID];
const SERVER_EXT: &str = "basicConstraints=critical,CA:FALSE\n\
                          keyUsage=critical,digitalSignature\n\
                          extendedKeyUsage=serverAuth\n\
                          subjectAltName=DNS:ossl.example,URI:kms://principal/ossl\n";

#[test]
fn what_openssl_issues_passes_verify_chain_and_our_ca_can_continue_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl_ca(
        d,
        "/CN=OpenSSL SM2 CA",
        "365",
        "keyUsage=critical,keyCertSign,cRLSign",
    );
    openssl_leaf(d, "server", SM2_KEY, SM3_DEFAULT_ID, SERVER_EXT);
    let ca_der = der_of(d, "ca.pem");
    let leaf_der = der_of(d, "server.pem");

    let chain = verify_chain(&leaf_der, &[], &[&ca_der], now(), Purpose::ServerAuth).unwrap();
    assert_eq!(chain.leaf.common_name.as_deref(), Some("server"));
    assert_eq!(chain.leaf.dns_names, ["ossl.example"]);
    assert_eq!(chain.leaf.uris, ["kms://principal/ossl"]);
    assert_eq!(sm2_public_key_of(&leaf_der).unwrap(), chain.leaf_public_key);
    let err = verify_chain(&leaf_der, &[], &[&ca_der], now(), Purpose::ClientAuth).unwrap_err();
    assert!(matches!(err, Error::WrongPurpose { .. }), "{err}");

    // Our issuer loads OpenSSL's CA and key; OpenSSL and we both accept what it then signs.
    let ca_pem = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(d.join("ca.key")).unwrap();
    let ca = Sm2Ca::from_pem(&ca_pem, &ca_key).unwrap();
    let ours = ca
        .issue(&LeafSpec::new("ours", Usage::TlsClient, 30))
        .unwrap();
    verify_chain(&ours.cert_der, &[], &[&ca_der], now(), Purpose::ClientAuth).unwrap();
    write(d, "ours.pem", &ours.cert_pem);
    let text = openssl_ok(
        d,
        &["verify", "-vfyopt", DISTID, "-CAfile", "ca.pem", "ours.pem"],
    );
    assert!(text.contains("ours.pem: OK"), "{text}");
}

#[test]
fn openssl_made_certificates_that_must_be_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A CA valid for one day, so its expiry can be tested while its leaf is still valid.
    openssl_ca(
        d,
        "/CN=Short CA",
        "1",
        "keyUsage=critical,keyCertSign,cRLSign",
    );
    let ca_der = der_of(d, "ca.pem");
    let anchors = [ca_der.as_slice()];

    // Signed with OpenSSL's own default distinguishing ID instead of 1234567812345678.
    openssl_leaf(d, "no-distid", SM2_KEY, &["-sm3"], SERVER_EXT);
    let err = verify_chain(
        &der_of(d, "no-distid.pem"),
        &[],
        &anchors,
        now(),
        Purpose::Any,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::BadSignature { subject } if subject == "CN=no-distid"),
        "{err}"
    );

    // SM2-with-SM3 signature, but a P-256 subject key.
    openssl_leaf(
        d,
        "p256-key",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        SM3_DEFAULT_ID,
        SERVER_EXT,
    );
    let p256_key = der_of(d, "p256-key.pem");
    let err = verify_chain(&p256_key, &[], &anchors, now(), Purpose::Any).unwrap_err();
    assert!(
        matches!(&err, Error::WrongCurve { found, .. } if found == "1.2.840.10045.3.1.7"),
        "{err}"
    );
    assert!(err.to_string().contains("1.2.840.10045.3.1.7"), "{err}");
    assert!(matches!(
        sm2_public_key_of(&p256_key),
        Err(Error::WrongCurve { .. })
    ));

    // A critical extension we do not process.
    openssl_leaf(
        d,
        "odd-critical",
        SM2_KEY,
        SM3_DEFAULT_ID,
        "basicConstraints=critical,CA:FALSE\n1.2.3.4=critical,ASN1:UTF8String:x\n",
    );
    let err = verify_chain(
        &der_of(d, "odd-critical.pem"),
        &[],
        &anchors,
        now(),
        Purpose::Any,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedCriticalExtension { oid, .. } if oid == "1.2.3.4"),
        "{err}"
    );

    // The leaf (30 days) outlives the CA (1 day): two days on, the CA is what expired.
    openssl_leaf(d, "outlives", SM2_KEY, SM3_DEFAULT_ID, SERVER_EXT);
    let leaf = der_of(d, "outlives.pem");
    verify_chain(&leaf, &[], &anchors, now(), Purpose::ServerAuth).unwrap();
    let leaf_id = cert_identity(&leaf).unwrap();
    let two_days_on = now() + 2 * 86_400;
    assert!(leaf_id.not_after_unix > i64::try_from(two_days_on).unwrap());
    let err = verify_chain(&leaf, &[], &anchors, two_days_on, Purpose::ServerAuth).unwrap_err();
    assert!(
        matches!(&err, Error::Expired { subject, .. } if subject == "CN=Short CA"),
        "{err}"
    );
}

#[test]
fn an_openssl_ca_without_key_cert_sign_is_not_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl_ca(
        d,
        "/CN=Signing-only CA",
        "365",
        "keyUsage=critical,digitalSignature",
    );
    openssl_leaf(d, "leaf", SM2_KEY, SM3_DEFAULT_ID, SERVER_EXT);
    let ca_der = der_of(d, "ca.pem");
    let err = verify_chain(
        &der_of(d, "leaf.pem"),
        &[],
        &[&ca_der],
        now(),
        Purpose::ServerAuth,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::NotCa { reason, .. } if *reason == "keyUsage lacks keyCertSign"),
        "{err}"
    );
    let ca_pem = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(d.join("ca.key")).unwrap();
    assert!(matches!(
        Sm2Ca::from_pem(&ca_pem, &ca_key),
        Err(Error::NotCa { .. })
    ));
}
