//! Bring your own key and controlled export (issue 19), judged by outside tools end to end:
//!
//! - OpenSSL (`pkeyutl -encrypt` SM2 and RSA-OAEP-SHA-256, `enc -id-aes256-wrap-pad`) and GmSSL
//!   (`gmssl-pyx`, SM2) wrap the material for each wrapping spec; the KMS imports it.
//! - Imported keys then make outputs those tools accept: an imported SM2 key's signature
//!   verifies under the public key OpenSSL derives from the original; for imported SM4 and
//!   AES-256 keys, Python builds ciphertext blobs from docs/FORMATS.md (with GmSSL's SM4-GCM and
//!   `cryptography`'s AES-GCM) that the KMS decrypts, and opens the KMS's own blobs.
//! - An exported key, unwrapped by OpenSSL with the recipient's private key, equals what was
//!   imported (every spec), and an exported SM2 key pair's public half is the KMS's.
//! - Import and export records in the audit trail name the wrapping spec and the public key's
//!   SM3, never the material; the inventory lists origin, fingerprint and exports.

use std::path::Path;
use std::process::Command;

use kms_proto::v1::{self, Purpose};
use kms_tests::pki::subjects::APP_NS;
use kms_tests::world::World;
use serde_json::Value;
use tonic::Code;

use crate::common::{ctx, dec, enc, expect_err, openssl, openssl_ok, sign_req};

fn judge() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("judges/transfer.py")
}

/// `python3 judges/transfer.py args…`, which must succeed; its one line of stdout.
fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(judge())
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "transfer.py {args:?}: {}\n(install: python3 -m pip install cryptography gmssl-pyx==2.1.0)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> String {
        self.0.path().join(name).to_str().unwrap().to_owned()
    }
    fn write(&self, name: &str, data: &[u8]) -> String {
        std::fs::write(self.path(name), data).unwrap();
        self.path(name)
    }
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

async fn create(
    w: &World,
    purpose: Purpose,
    algorithm: &str,
    origin: &str,
    exportable: bool,
) -> v1::KeyMetadata {
    w.admin
        .keys
        .clone()
        .create_key(v1::CreateKeyRequest {
            namespace: APP_NS.to_owned(),
            purpose: purpose.into(),
            algorithm: algorithm.to_owned(),
            origin: origin.to_owned(),
            exportable,
            ..v1::CreateKeyRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
}

async fn params(w: &World, key: &str, spec: &str, wks: &str) -> v1::ImportParametersResponse {
    w.admin
        .keys
        .clone()
        .get_import_parameters(v1::GetImportParametersRequest {
            key: key.to_owned(),
            wrapping_spec: spec.to_owned(),
            wrapping_key_spec: wks.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn import(
    w: &World,
    key: &str,
    token: &str,
    wrapped: Vec<u8>,
) -> Result<v1::KeyMetadata, tonic::Status> {
    w.admin
        .keys
        .clone()
        .import_key_material(v1::ImportKeyMaterialRequest {
            key: key.to_owned(),
            import_token: token.to_owned(),
            wrapped_material: wrapped,
            expires_at: None,
        })
        .await
        .map(|r| r.into_inner().key.unwrap())
}

/// OpenSSL's `sm2` wrap: GM/T 0009 SM2 encryption to the wrapping public key.
fn openssl_sm2(d: &Dir, pem: &str, material: &str) -> Vec<u8> {
    let wrap_pem = d.write("wrap.pem", pem.as_bytes());
    openssl_ok(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        &wrap_pem,
        "-in",
        material,
        "-out",
        &d.path("wrapped"),
    ]);
    d.read("wrapped")
}

const OAEP_SHA256: [&str; 6] = [
    "-pkeyopt",
    "rsa_padding_mode:oaep",
    "-pkeyopt",
    "rsa_oaep_md:sha256",
    "-pkeyopt",
    "rsa_mgf1_md:sha256",
];

/// OpenSSL's `rsa-oaep-sha256` wrap.
fn openssl_oaep(d: &Dir, pem: &str, material: &str) -> Vec<u8> {
    let wrap_pem = d.write("wrap.pem", pem.as_bytes());
    let mut args = vec!["pkeyutl", "-encrypt", "-pubin", "-inkey", &wrap_pem];
    args.extend(OAEP_SHA256);
    let out = d.path("wrapped");
    args.extend(["-in", material, "-out", &out]);
    openssl_ok(&args);
    d.read("wrapped")
}

/// OpenSSL's `rsa-aes-kwp` wrap, as the README gives it: a fresh AES-256 key sealed by
/// RSA-OAEP-SHA-256, then the material wrapped under it with AES-KWP (RFC 5649).
fn openssl_rsa_aes_kwp(d: &Dir, pem: &str, material: &str) -> Vec<u8> {
    let kwp_key = d.path("kwp.key");
    openssl_ok(&["rand", "-out", &kwp_key, "32"]);
    let mut sealed = openssl_oaep(d, pem, &kwp_key);
    let hex_key = hex::encode(std::fs::read(&kwp_key).unwrap());
    let out = d.path("kwp.part");
    openssl_ok(&[
        "enc",
        "-id-aes256-wrap-pad",
        "-K",
        &hex_key,
        "-iv",
        "A65959A6",
        "-in",
        material,
        "-out",
        &out,
    ]);
    sealed.extend(std::fs::read(&out).unwrap());
    sealed
}

/// Imported SM4 and AES-256 keys: material wrapped by OpenSSL (rsa-oaep-sha256) and GmSSL
/// (sm2); then Python's blobs open in the KMS and the KMS's blobs open in Python.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn symmetric_keys_wrapped_outside_work_with_blobs_built_outside() {
    let w = World::start().await;
    let d = Dir::new();
    let context = ctx(&[("table", "accounts"), ("row", "42")]);
    let context_json = r#"{"table":"accounts","row":"42"}"#;
    for (algorithm, spec, len) in [
        ("aes-256-gcm", "rsa-oaep-sha256", 32),
        ("sm4-gcm", "sm2", 16),
    ] {
        let key = create(&w, Purpose::Encrypt, algorithm, "external", false).await;
        assert_eq!(key.state(), v1::KeyState::PendingImport);
        assert_eq!(key.origin, "imported");
        let material = d.path("material");
        openssl_ok(&["rand", "-out", &material, &len.to_string()]);
        let raw = std::fs::read(&material).unwrap();
        let p = params(&w, &key.key_id, spec, "").await;
        assert!(p.import_token.starts_with("imp-"), "{}", p.import_token);
        let wrapped = if spec == "sm2" {
            let pem = d.write("gmssl.pem", p.wrapping_public_key_pem.as_bytes());
            hex::decode(python(&["gmssl-sm2-wrap", &pem, &hex::encode(&raw)])).unwrap()
        } else {
            openssl_oaep(&d, &p.wrapping_public_key_pem, &material)
        };
        let done = import(&w, &key.key_id, &p.import_token, wrapped.clone())
            .await
            .unwrap();
        assert_eq!(done.state(), v1::KeyState::Enabled, "{algorithm}");
        assert_eq!(done.material_fingerprint.len(), 64);
        // The token is spent.
        expect_err(
            w.admin
                .keys
                .clone()
                .import_key_material(v1::ImportKeyMaterialRequest {
                    key: key.key_id.clone(),
                    import_token: p.import_token.clone(),
                    wrapped_material: wrapped,
                    expires_at: None,
                })
                .await,
            Code::FailedPrecondition,
            "imports once",
        );

        // Python → KMS.
        let blob = python(&[
            "seal",
            &hex::encode(&raw),
            &key.key_id,
            "1",
            context_json,
            &hex::encode(b"from outside"),
            algorithm,
        ]);
        let opened = w
            .app
            .crypto
            .clone()
            .decrypt(dec(&hex::decode(blob).unwrap(), &context))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(opened.plaintext, b"from outside", "{algorithm}");
        // KMS → Python.
        let sealed = w
            .app
            .crypto
            .clone()
            .encrypt(enc(&key.key_id, b"from the KMS", &context))
            .await
            .unwrap()
            .into_inner()
            .ciphertext;
        let plain = python(&[
            "open",
            &hex::encode(&raw),
            context_json,
            &hex::encode(sealed),
        ]);
        assert_eq!(hex::decode(plain).unwrap(), b"from the KMS", "{algorithm}");
    }
}

/// An SM2 private key made by OpenSSL, wrapped by OpenSSL with rsa-aes-kwp under an RSA-4096
/// wrapping key: the KMS signs with it and OpenSSL verifies under the public key it derives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_sm2_key_from_openssl_signs_what_openssl_verifies() {
    let w = World::start().await;
    let d = Dir::new();
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "SM2",
        "-out",
        &d.path("partner.key"),
    ]);
    openssl_ok(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &d.path("partner.key"),
        "-outform",
        "DER",
        "-out",
        &d.path("partner.p8"),
    ]);
    openssl_ok(&[
        "pkey",
        "-in",
        &d.path("partner.key"),
        "-pubout",
        "-out",
        &d.path("partner.pub"),
    ]);
    let key = create(&w, Purpose::Sign, "sm2", "external", false).await;
    let p = params(&w, &key.key_id, "rsa-aes-kwp", "rsa-4096").await;
    assert!(
        String::from_utf8(openssl_ok(&[
            "pkey",
            "-pubin",
            "-in",
            &d.write("wrap.pem", p.wrapping_public_key_pem.as_bytes()),
            "-noout",
            "-text"
        ]))
        .unwrap()
        .contains("4096 bit")
    );
    let wrapped = openssl_rsa_aes_kwp(&d, &p.wrapping_public_key_pem, &d.path("partner.p8"));
    let done = import(&w, &key.key_id, &p.import_token, wrapped)
        .await
        .unwrap();
    // The fingerprint is SM3 of the public key's DER, as OpenSSL computes it.
    let der = openssl_ok(&[
        "pkey",
        "-pubin",
        "-in",
        &d.path("partner.pub"),
        "-outform",
        "DER",
    ]);
    let digest = openssl(&["dgst", "-sm3", "-r"], &der);
    let sm3 = String::from_utf8(digest.stdout).unwrap();
    assert_eq!(done.material_fingerprint, sm3.split(' ').next().unwrap());

    let message = b"pay 100.00 CNY";
    let sig = w
        .app
        .crypto
        .clone()
        .sign(sign_req(&key.key_id, message, Default::default()))
        .await
        .unwrap()
        .into_inner()
        .signature;
    d.write("msg", message);
    d.write("sig", &sig);
    let out = openssl_ok(&[
        "dgst",
        "-sm3",
        "-verify",
        &d.path("partner.pub"),
        "-sigopt",
        "distid:1234567812345678",
        "-signature",
        &d.path("sig"),
        &d.path("msg"),
    ]);
    assert!(String::from_utf8_lossy(&out).contains("Verified OK"));
}

/// Exports, unwrapped by OpenSSL with the recipient's private key: equal to what was imported
/// (every spec); a generated SM2 key pair leaves as a PKCS#8 whose public half is the KMS's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_unwrapped_by_openssl_equal_what_went_in() {
    let w = World::start().await;
    let d = Dir::new();
    openssl_ok(&["genpkey", "-algorithm", "SM2", "-out", &d.path("sm2.key")]);
    let sm2_pub = openssl_ok(&["pkey", "-in", &d.path("sm2.key"), "-pubout"]);
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:3072",
        "-out",
        &d.path("rsa.key"),
    ]);
    let rsa_pub = openssl_ok(&["pkey", "-in", &d.path("rsa.key"), "-pubout"]);

    let key = create(&w, Purpose::Encrypt, "sm4-gcm", "external", true).await;
    assert!(key.exportable);
    let material = d.path("material");
    openssl_ok(&["rand", "-out", &material, "16"]);
    let p = params(&w, &key.key_id, "sm2", "").await;
    let wrapped = openssl_sm2(&d, &p.wrapping_public_key_pem, &material);
    import(&w, &key.key_id, &p.import_token, wrapped)
        .await
        .unwrap();
    let original = std::fs::read(&material).unwrap();

    let export = |to: &[u8], spec: &str| v1::ExportKeyRequest {
        key: key.key_id.clone(),
        version: 0,
        recipient_public_key: to.to_vec(),
        wrapping_spec: spec.to_owned(),
    };
    let mut keys = w.admin.keys.clone();
    for (spec, to) in [
        ("sm2", &sm2_pub),
        ("rsa-oaep-sha256", &rsa_pub),
        ("rsa-aes-kwp", &rsa_pub),
    ] {
        let out = keys
            .export_key(export(to, spec))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((out.version, out.algorithm.as_str()), (1, "sm4-gcm"));
        let wrapped = d.write("exported", &out.wrapped_material);
        let opened = match spec {
            "sm2" => openssl_ok(&[
                "pkeyutl",
                "-decrypt",
                "-inkey",
                &d.path("sm2.key"),
                "-in",
                &wrapped,
            ]),
            "rsa-oaep-sha256" => {
                let key_path = d.path("rsa.key");
                let mut a = vec!["pkeyutl", "-decrypt", "-inkey", key_path.as_str()];
                a.extend(OAEP_SHA256);
                a.extend(["-in", wrapped.as_str()]);
                openssl_ok(&a)
            }
            _ => {
                // The first 384 bytes (the modulus length) are the sealed AES key.
                let (sealed, kwp) = out.wrapped_material.split_at(384);
                let sealed_path = d.write("sealed", sealed);
                let kwp_path = d.write("kwp", kwp);
                let key_path = d.path("rsa.key");
                let mut a = vec!["pkeyutl", "-decrypt", "-inkey", key_path.as_str()];
                a.extend(OAEP_SHA256);
                a.extend(["-in", sealed_path.as_str()]);
                let aes = hex::encode(openssl_ok(&a));
                openssl_ok(&[
                    "enc",
                    "-d",
                    "-id-aes256-wrap-pad",
                    "-K",
                    &aes,
                    "-iv",
                    "A65959A6",
                    "-in",
                    &kwp_path,
                ])
            }
        };
        assert_eq!(opened, original, "{spec}");
    }

    // A key pair generated here, exported: OpenSSL reads the PKCS#8 and derives the same public key.
    let pair = create(&w, Purpose::Sign, "sm2", "generated", true).await;
    let out = keys
        .export_key(v1::ExportKeyRequest {
            key: pair.key_id.clone(),
            version: 0,
            recipient_public_key: sm2_pub.clone(),
            wrapping_spec: "sm2".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let wrapped = d.write("pair", &out.wrapped_material);
    let pkcs8 = openssl_ok(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        &d.path("sm2.key"),
        "-in",
        &wrapped,
    ]);
    let p8 = d.write("pair.p8", &pkcs8);
    let derived = openssl_ok(&[
        "pkey", "-inform", "DER", "-in", &p8, "-pubout", "-outform", "DER",
    ]);
    assert_eq!(derived, pair.versions[0].public_key_der);

    // A key not created exportable does not leave.
    let fixed = create(&w, Purpose::Encrypt, "sm4-gcm", "generated", false).await;
    expect_err(
        keys.export_key(v1::ExportKeyRequest {
            key: fixed.key_id.clone(),
            version: 0,
            recipient_public_key: sm2_pub.clone(),
            wrapping_spec: "sm2".to_owned(),
        })
        .await,
        Code::FailedPrecondition,
        "not exportable",
    );
    // An SM2 recipient for an RSA spec.
    expect_err(
        keys.export_key(export(&sm2_pub, "rsa-aes-kwp")).await,
        Code::InvalidArgument,
        "cannot receive",
    );

    // The trail: each import and export names its spec and public key, never the material.
    let trail = crate::common::audit_export(&w).await;
    let records: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["operation"] == "KeyAdmin/ExportKey" && r["outcome"] == "OK")
        .collect();
    assert_eq!(records.len(), 4, "{trail}");
    let sm2_der = openssl_ok(&[
        "pkey",
        "-in",
        &d.path("sm2.key"),
        "-pubout",
        "-outform",
        "DER",
    ]);
    let sm2_sm3 = String::from_utf8(openssl(&["dgst", "-sm3", "-r"], &sm2_der).stdout).unwrap();
    assert_eq!(records[0]["transfer"]["wrapping_spec"], "sm2");
    assert_eq!(
        records[0]["transfer"]["public_key_sm3"],
        sm2_sm3.split(' ').next().unwrap()
    );
    assert_eq!(records[2]["transfer"]["wrapping_spec"], "rsa-aes-kwp");
    let imports = trail
        .lines()
        .filter(|l| l.contains("KeyAdmin/ImportKeyMaterial") && l.contains("\"transfer\""))
        .count();
    assert_eq!(imports, 1, "{trail}");
    assert!(
        !trail.contains(&hex::encode(&original)),
        "material in the trail"
    );

    // The inventory lists the exports, and it verifies.
    let inv = w
        .auditor
        .audit
        .clone()
        .export_inventory(v1::ExportInventoryRequest {})
        .await
        .unwrap()
        .into_inner();
    let doc: Value = serde_json::from_str(&inv.json).unwrap();
    let entry = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key.key_id)
        .unwrap();
    assert_eq!(entry["origin"], "imported");
    assert_eq!(entry["exportable"], true);
    assert_eq!(entry["exports"].as_array().unwrap().len(), 3);
    assert_eq!(entry["exports"][1]["wrapping_spec"], "rsa-oaep-sha256");
    assert_eq!(entry["import"]["fingerprint"].as_str().unwrap().len(), 64);
}

/// Imported material with an expiry: the scheduler deletes it at the date, the key waits for
/// import again, the trail records the scheduler's intent and outcome, and the same material
/// brings the key back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_deletes_expired_material_and_records_it() {
    let w = World::start_with(kms_server::Settings {
        scheduler_interval: std::time::Duration::from_millis(50),
        ..kms_server::Settings::default()
    })
    .await;
    let d = Dir::new();
    let key = create(&w, Purpose::Encrypt, "sm4-gcm", "external", false).await;
    let material = d.path("material");
    openssl_ok(&["rand", "-out", &material, "16"]);
    let p = params(&w, &key.key_id, "sm2", "").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let done = w
        .admin
        .keys
        .clone()
        .import_key_material(v1::ImportKeyMaterialRequest {
            key: key.key_id.clone(),
            import_token: p.import_token,
            wrapped_material: openssl_sm2(&d, &p.wrapping_public_key_pem, &material),
            expires_at: Some(now + 2),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(done.material_expires_at, Some(now + 2));
    let context = ctx(&[("k", "v")]);
    let sealed = w
        .app
        .crypto
        .clone()
        .encrypt(enc(&key.key_id, b"kept", &context))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let mut state = done.state();
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let k = w
            .admin
            .keys
            .clone()
            .describe_key(v1::KeyRequest {
                key: key.key_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        state = k.state();
        if state == v1::KeyState::PendingImport {
            assert!(!k.versions[0].destroyed, "expired is not destroyed");
            assert_eq!(k.material_expires_at, None);
            break;
        }
    }
    assert_eq!(state, v1::KeyState::PendingImport, "not expired in 10 s");
    expect_err(
        w.app.crypto.clone().decrypt(dec(&sealed, &context)).await,
        Code::FailedPrecondition,
        "PENDING_IMPORT",
    );
    let trail = crate::common::audit_export(&w).await;
    let sweeps: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["operation"] == "Scheduler/ExpireKeyMaterial")
        .collect();
    assert_eq!(sweeps.len(), 2, "intent and outcome: {trail}");
    assert_eq!(sweeps[0]["flags"][0], "intent", "{}", sweeps[0]);
    assert_eq!(sweeps[1]["outcome"], "OK", "{}", sweeps[1]);
    assert_eq!(sweeps[1]["key_id"], key.key_id.as_str());

    // The same material again: usable, and the old ciphertext opens.
    let p = params(&w, &key.key_id, "sm2", "").await;
    import(
        &w,
        &key.key_id,
        &p.import_token,
        openssl_sm2(&d, &p.wrapping_public_key_pem, &material),
    )
    .await
    .unwrap();
    let opened = w
        .app
        .crypto
        .clone()
        .decrypt(dec(&sealed, &context))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.plaintext, b"kept");
}

/// Garbage in each new field: INVALID_ARGUMENT or FAILED_PRECONDITION naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_in_every_field_is_named() {
    let w = World::start().await;
    let mut keys = w.admin.keys.clone();
    expect_err(
        keys.create_key(v1::CreateKeyRequest {
            namespace: APP_NS.to_owned(),
            purpose: Purpose::Encrypt.into(),
            algorithm: "sm4-gcm".to_owned(),
            origin: "somewhere".to_owned(),
            ..v1::CreateKeyRequest::default()
        })
        .await,
        Code::InvalidArgument,
        "invalid origin",
    );
    expect_err(
        keys.create_key(v1::CreateKeyRequest {
            namespace: APP_NS.to_owned(),
            purpose: Purpose::Encrypt.into(),
            algorithm: "sm4-gcm".to_owned(),
            origin: "external".to_owned(),
            rotation_period_seconds: Some(90 * 86_400),
            ..v1::CreateKeyRequest::default()
        })
        .await,
        Code::InvalidArgument,
        "cannot rotate on a schedule",
    );
    let key = create(&w, Purpose::Encrypt, "sm4-gcm", "external", true).await;
    let bad_params = |spec: &str, wks: &str| v1::GetImportParametersRequest {
        key: key.key_id.clone(),
        wrapping_spec: spec.to_owned(),
        wrapping_key_spec: wks.to_owned(),
    };
    expect_err(
        keys.get_import_parameters(bad_params("aes-kw", "")).await,
        Code::InvalidArgument,
        "invalid wrapping_spec",
    );
    expect_err(
        keys.get_import_parameters(bad_params("rsa-aes-kwp", "rsa-2048"))
            .await,
        Code::InvalidArgument,
        "cannot serve rsa-aes-kwp",
    );
    expect_err(
        keys.get_import_parameters(bad_params("rsa-oaep-sha256", "rsa-1024"))
            .await,
        Code::InvalidArgument,
        "rsa-1024",
    );
    let import =
        |token: &str, wrapped: &[u8], expires_at: Option<u64>| v1::ImportKeyMaterialRequest {
            key: key.key_id.clone(),
            import_token: token.to_owned(),
            wrapped_material: wrapped.to_vec(),
            expires_at,
        };
    expect_err(
        keys.import_key_material(import("imp-xyz", b"x", None))
            .await,
        Code::InvalidArgument,
        "invalid import token",
    );
    let p = params(&w, &key.key_id, "sm2", "").await;
    expect_err(
        keys.import_key_material(import(&p.import_token, &[0x30; 200], None))
            .await,
        Code::InvalidArgument,
        "invalid wrapped key material",
    );
    expect_err(
        keys.import_key_material(import(&p.import_token, b"x", Some(1)))
            .await,
        Code::InvalidArgument,
        "invalid expires_at",
    );
    expect_err(
        keys.import_key_material(import(&p.import_token, b"x", Some(u64::MAX)))
            .await,
        Code::InvalidArgument,
        "invalid expires_at",
    );
    let export = |to: &[u8], spec: &str, version: u32| v1::ExportKeyRequest {
        key: key.key_id.clone(),
        version,
        recipient_public_key: to.to_vec(),
        wrapping_spec: spec.to_owned(),
    };
    expect_err(
        keys.export_key(export(b"not a key", "sm2", 0)).await,
        Code::InvalidArgument,
        "invalid public key",
    );
    expect_err(
        keys.export_key(export(p.wrapping_public_key_pem.as_bytes(), "sm3", 0))
            .await,
        Code::InvalidArgument,
        "invalid wrapping_spec",
    );
    // Waiting for import: nothing to export yet.
    expect_err(
        keys.export_key(export(p.wrapping_public_key_pem.as_bytes(), "sm2", 0))
            .await,
        Code::FailedPrecondition,
        "PENDING_IMPORT",
    );
}
