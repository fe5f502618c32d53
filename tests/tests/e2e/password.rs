//! The password shield end to end (issue 22 item 2), over real mutual TLS, with the client's
//! side done outside the KMS's code and the hashes judged outside it:
//!
//! - the sealed structure is written by `tests/judges/password.py` from docs/FORMATS.md and
//!   encrypted by OpenSSL (`pkeyutl -encrypt`: SM2, GM/T 0009 DER; RSA-OAEP-SHA-256);
//! - the pepper key's material is imported (wrapped by OpenSSL), so the judge knows it and
//!   checks the stored hashes: argon2id with the Argon2 reference implementation
//!   (`argon2-cffi`), PBKDF2-HMAC-SM3 written out over GmSSL's HMAC-SM3 (`gmssl-pyx`);
//! - refusals (stale, future, replayed, weak) carry their codes over the wire, and the audit
//!   trail names both keys and the outcome, never the password, the hash or the nonce.

use std::path::Path;
use std::process::Command;

use kms_proto::v1::{self, Purpose};
use kms_server::tls::Transport;
use kms_tests::pki::subjects::APP_NS;
use kms_tests::world::World;
use tonic::Code;

use crate::common::{Scratch, audit_records, expect_err, import_known_key, openssl_ok};

const PEPPER_HEX: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// `python3 judges/password.py args…`, which must succeed; its one line of stdout.
fn judge(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("judges/password.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "password.py {args:?}: {}\n(install: python3 -m pip install gmssl-pyx==2.1.0 argon2-cffi)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A password key, and what a mobile app ships of it: its public key (PEM).
struct Login {
    id: String,
    pem: String,
    rsa: bool,
}

impl Login {
    async fn create(w: &World, algorithm: &str, dir: &Scratch) -> Self {
        let key = w.create_key(APP_NS, Purpose::Password, algorithm).await;
        let pem = w
            .app
            .crypto
            .clone()
            .get_public_key(v1::GetPublicKeyRequest {
                key: key.key_id.clone(),
                key_version: None,
            })
            .await
            .unwrap()
            .into_inner()
            .public_key_pem;
        Self {
            pem: dir.write(&format!("{}.pem", key.key_id), pem),
            id: key.key_id,
            rsa: algorithm.starts_with("rsa"),
        }
    }

    /// The app's seal, made outside the KMS: the judge writes the structure, OpenSSL encrypts.
    fn seal(&self, dir: &Scratch, password: &str, timestamp: u64) -> Vec<u8> {
        let nonce = hex::encode(kms_core::crypto::rng::random_public(16).unwrap());
        let plain =
            hex::decode(judge(&["seal", password, &timestamp.to_string(), &nonce])).unwrap();
        let input = dir.write("sealed.plain", plain);
        let output = dir.path("sealed.bin");
        let output = output.to_str().unwrap();
        let mut args = vec![
            "pkeyutl", "-encrypt", "-pubin", "-inkey", &self.pem, "-in", &input, "-out", output,
        ];
        if self.rsa {
            args.extend([
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ]);
        }
        openssl_ok(&args);
        std::fs::read(output).unwrap()
    }
}

/// A pepper key whose material is [`PEPPER_HEX`], imported wrapped by OpenSSL (SM2).
async fn known_pepper(w: &World, dir: &Scratch) -> String {
    import_known_key(w, dir, Purpose::Pepper, "hmac-sm3", "", PEPPER_HEX).await
}

fn hash_req(login: &Login, pepper: &str, sealed: Vec<u8>, ids: &[&str]) -> v1::HashPasswordRequest {
    v1::HashPasswordRequest {
        password_key: login.id.clone(),
        pepper_key: pepper.to_owned(),
        sealed_password: sealed,
        identifiers: ids.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn verify_req(login: &Login, sealed: Vec<u8>, stored: &str) -> v1::VerifyPasswordRequest {
    v1::VerifyPasswordRequest {
        password_key: login.id.clone(),
        sealed_password: sealed,
        stored_hash: stored.to_owned(),
        identifiers: Vec::new(),
    }
}

/// Standard policy: SM2 and RSA-3072 password keys sealed by OpenSSL; argon2id hashes the
/// reference implementation verifies with the pepper; match, no match; the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openssl_sealed_passwords_hash_to_argon2id_the_reference_implementation_verifies() {
    let w = World::start().await;
    let dir = Scratch::new();
    let pepper = known_pepper(&w, &dir).await;
    let mut shield = w.app.password.clone();
    for algorithm in ["sm2", "rsa-3072"] {
        let login = Login::create(&w, algorithm, &dir).await;
        let password = format!("Correct-horse-{algorithm}-9");
        let out = shield
            .hash_password(hash_req(
                &login,
                &pepper,
                login.seal(&dir, &password, now()),
                &["13800138000"],
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.pepper_key_id, pepper);
        assert_eq!((out.pepper_key_version, out.password_key_version), (1, 1));
        assert!(
            out.hash
                .starts_with(&format!("$kms-pepper$k={pepper},v=1$argon2id$v=19$")),
            "{}",
            out.hash
        );
        // The outside judge: HMAC-SM3 pepper, then argon2-cffi on the PHC string after the prefix.
        assert_eq!(
            judge(&["verify", &out.hash, PEPPER_HEX, &password]),
            "match"
        );
        assert_eq!(
            judge(&["verify", &out.hash, PEPPER_HEX, "Correct-horse-x-9"]),
            "no-match"
        );
        let ok = shield
            .verify_password(verify_req(
                &login,
                login.seal(&dir, &password, now()),
                &out.hash,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(ok.matched && !ok.weak && ok.rehashed.is_empty(), "{ok:?}");
        let no = shield
            .verify_password(verify_req(
                &login,
                login.seal(&dir, "Wrong-horse-1", now()),
                &out.hash,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!no.matched && no.rehashed.is_empty());
    }
    let (trail, records) = audit_records(&w, "PasswordShield/").await;
    assert_eq!(records.len(), 6, "{records:#?}");
    for r in &records {
        assert_eq!(r["outcome"], "OK", "{r}");
        assert_eq!(r["pepper"]["key_id"], pepper, "{r}");
        assert_eq!(r["pepper"]["key_version"], 1, "{r}");
        assert!(r["key_id"].as_str().is_some_and(|k| k.len() == 36), "{r}");
    }
    let flags: Vec<String> = records.iter().map(|r| r["flags"].to_string()).collect();
    assert_eq!(
        flags,
        [r#"[]"#, r#"["match"]"#, r#"["no-match"]"#].repeat(2),
        "{flags:?}"
    );
    assert!(
        !trail.contains("Correct-horse") && !trail.contains("$argon2id$"),
        "{trail}"
    );
    w.stop().await;
}

/// GM-only policy: PBKDF2-HMAC-SM3, recomputed by the judge over GmSSL's HMAC-SM3; RSA
/// password keys cannot be made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_gm_only_the_hash_is_pbkdf2_hmac_sm3_as_gmssl_computes_it() {
    let w = World::start_over(kms_server::Settings::default(), Transport::GmOnly).await;
    let dir = Scratch::new();
    let pepper = known_pepper(&w, &dir).await;
    let login = Login::create(&w, "sm2", &dir).await;
    let out = w
        .app
        .password
        .clone()
        .hash_password(hash_req(
            &login,
            &pepper,
            login.seal(&dir, "密码-Passw0rd", now()),
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(out.hash.contains(",v=1$pbkdf2-sm3$i="), "{}", out.hash);
    assert!(out.hash.contains(",l=32$"), "{}", out.hash);
    assert_eq!(
        judge(&["verify", &out.hash, PEPPER_HEX, "密码-Passw0rd"]),
        "match"
    );
    assert_eq!(
        judge(&["verify", &out.hash, PEPPER_HEX, "密码-Passw0rD"]),
        "no-match"
    );
    let refused = w
        .admin
        .keys
        .clone()
        .create_key(v1::CreateKeyRequest {
            namespace: APP_NS.to_owned(),
            purpose: Purpose::Password.into(),
            algorithm: "rsa-3072".to_owned(),
            ..v1::CreateKeyRequest::default()
        })
        .await;
    expect_err(refused, Code::InvalidArgument, "gm-only");
    w.stop().await;
}

/// Stale, future, replayed and weak seals carry their codes and messages over the wire, and
/// the audit trail flags each; a rotated pepper re-peppers on the next match.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_are_flagged_in_the_audit_and_a_rotated_pepper_re_peppers() {
    let w = World::start().await;
    let dir = Scratch::new();
    let pepper = w
        .create_key(APP_NS, Purpose::Pepper, "hmac-sm3")
        .await
        .key_id;
    let login = Login::create(&w, "sm2", &dir).await;
    let mut shield = w.app.password.clone();
    let good = login.seal(&dir, "Passw0rd-2024", now());
    let stored = shield
        .hash_password(hash_req(&login, &pepper, good.clone(), &[]))
        .await
        .unwrap()
        .into_inner()
        .hash;
    expect_err(
        shield
            .hash_password(hash_req(&login, &pepper, good, &[]))
            .await,
        Code::AlreadyExists,
        "already used",
    );
    for (ts, what) in [(now() - 600, "past"), (now() + 600, "future")] {
        let sealed = login.seal(&dir, "Passw0rd-2024", ts);
        let s = expect_err(
            shield
                .hash_password(hash_req(&login, &pepper, sealed, &[]))
                .await,
            Code::InvalidArgument,
            "outside the ±300 s window",
        );
        assert!(!s.message().contains("Passw0rd"), "{what}: {s:?}");
    }
    let weak = login.seal(&dir, "zhang13800138000", now());
    let s = expect_err(
        shield
            .hash_password(hash_req(&login, &pepper, weak, &["Alice", "13800138000"]))
            .await,
        Code::InvalidArgument,
        "contains user identifier 1",
    );
    assert!(
        !s.message().contains("13800138000") && !s.message().contains("zhang"),
        "{s:?}"
    );
    // Pepper rotation: the old hash matches and comes back re-peppered with version 2.
    w.admin
        .keys
        .clone()
        .rotate_key(v1::KeyRequest {
            key: pepper.clone(),
        })
        .await
        .unwrap();
    let v = shield
        .verify_password(verify_req(
            &login,
            login.seal(&dir, "Passw0rd-2024", now()),
            &stored,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(v.matched && v.pepper_key_version == 1, "{v:?}");
    assert!(v.rehashed.contains(",v=2$argon2id$"), "{}", v.rehashed);
    let v = shield
        .verify_password(verify_req(
            &login,
            login.seal(&dir, "Passw0rd-2024", now()),
            &v.rehashed,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        v.matched && v.rehashed.is_empty() && v.pepper_key_version == 2,
        "{v:?}"
    );

    let (trail, records) = audit_records(&w, "PasswordShield/").await;
    let seen: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap().to_owned(),
                r["flags"].to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("OK", "[]"),
        ("ALREADY_EXISTS", r#"["replayed"]"#),
        ("INVALID_ARGUMENT", r#"["stale"]"#),
        ("INVALID_ARGUMENT", r#"["stale"]"#),
        ("INVALID_ARGUMENT", r#"["weak-password"]"#),
        ("OK", r#"["match","rehashed"]"#),
        ("OK", r#"["match"]"#),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(seen, want);
    assert!(
        records.iter().all(|r| r["key_id"] == login.id),
        "{records:#?}"
    );
    assert_eq!(records[5]["pepper"]["key_version"], 1);
    assert_eq!(records[6]["pepper"]["key_version"], 2);
    for secret in ["Passw0rd-2024", "zhang", "13800138000", "$argon2id$"] {
        assert!(!trail.contains(secret), "{secret} in the audit trail");
    }
    w.stop().await;
}
