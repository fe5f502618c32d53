//! Helpers shared by the end-to-end modules: status assertions, secret markers, OpenSSL.

use std::fmt::Debug;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use tonic::{Code, Response, Status};

/// Plaintext the tests send; no error message may ever contain it (API-4).
pub(crate) const SECRET: &[u8] = b"TOP-SECRET-PLAINTEXT-5b1e2d7c";
/// A context value the tests send; contexts may hold personal data, so it stays out of messages.
pub(crate) const SECRET_CONTEXT: &str = "customer-4711-private-context";

/// The status of a call that must fail with `code`.
#[track_caller]
pub(crate) fn expect_code<T: Debug>(result: Result<Response<T>, Status>, code: Code) -> Status {
    match result {
        Ok(r) => panic!("expected {code:?}, got success: {:?}", r.get_ref()),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            assert_no_secret(&s);
            s
        }
    }
}

/// The status of a call that must fail with `code` and a message containing `needle`
/// (case-insensitive).
#[track_caller]
pub(crate) fn expect_err<T: Debug>(
    result: Result<Response<T>, Status>,
    code: Code,
    needle: &str,
) -> Status {
    let s = expect_code(result, code);
    assert!(
        s.message().to_lowercase().contains(&needle.to_lowercase()),
        "{code:?} message {:?} does not mention {needle:?}",
        s.message()
    );
    s
}

/// The status of a call that must fail (any code); it carries no secret either.
#[track_caller]
pub(crate) fn err<T: Debug>(result: Result<Response<T>, Status>) -> Status {
    match result {
        Ok(r) => panic!("expected a refusal, got success: {:?}", r.get_ref()),
        Err(s) => {
            assert_no_secret(&s);
            s
        }
    }
}

/// The message carries a request id, `(request <node>-<n>)`, as the one status mapping writes
/// (`<node>-<n>.<index>` for an item of a batch).
#[must_use]
pub(crate) fn has_request_id(s: &Status) -> bool {
    let m = s.message();
    // Exactly once: the layer must not name a request the error map already named.
    m.matches("(request ").count() == 1
        && m.find("(request ").is_some_and(|i| {
            let rest = &m[i + "(request ".len()..];
            rest.find(')').is_some_and(|end| {
                end > 0
                    && rest[..end]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            })
        })
}

/// No secret marker in the message or the metadata, in any spelling.
#[track_caller]
pub(crate) fn assert_no_secret(s: &Status) {
    let secret = std::str::from_utf8(SECRET).unwrap();
    let hex_secret = hex::encode(SECRET);
    let haystacks = [
        s.message().to_owned(),
        format!("{:?}", s.metadata()),
        String::from_utf8_lossy(s.details()).into_owned(),
    ];
    for h in &haystacks {
        for needle in [secret, hex_secret.as_str(), SECRET_CONTEXT] {
            assert!(!h.contains(needle), "a secret leaked into a status: {h:?}");
        }
    }
}

/// A scratch directory for files handed to OpenSSL.
pub(crate) struct Scratch(tempfile::TempDir);

impl Scratch {
    pub(crate) fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    pub(crate) fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> String {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_owned()
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// Runs `openssl args…` (under `timeout`, so a hung connection fails the test instead of
/// hanging it) with `stdin`; returns the output whatever the exit status.
pub(crate) fn openssl(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg("20")
        .arg("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the e2e tests need `openssl` (OpenSSL 3) and `timeout` on PATH");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// `openssl` that must succeed; returns stdout.
pub(crate) fn openssl_ok(args: &[&str]) -> Vec<u8> {
    let out = openssl(args, b"");
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Stdout and stderr together, for matching on OpenSSL's messages.
pub(crate) fn all_output(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// Request builders
// ---------------------------------------------------------------------------------------------

use std::collections::HashMap;

use kms_proto::v1;

/// An encryption context from pairs.
pub(crate) fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(crate) fn enc(
    key: &str,
    plaintext: &[u8],
    context: &HashMap<String, String>,
) -> v1::EncryptRequest {
    v1::EncryptRequest {
        key: key.to_owned(),
        plaintext: plaintext.to_vec(),
        context: context.clone(),
    }
}

pub(crate) fn dec(ciphertext: &[u8], context: &HashMap<String, String>) -> v1::DecryptRequest {
    v1::DecryptRequest {
        ciphertext: ciphertext.to_vec(),
        context: context.clone(),
    }
}

/// How to sign: message type, SM2 id, RSA scheme, hash (empty strings: the key's defaults).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SigOpts<'a> {
    pub(crate) digest: bool,
    pub(crate) sm2_id: &'a str,
    pub(crate) scheme: &'a str,
    pub(crate) hash: &'a str,
}

impl SigOpts<'_> {
    fn message_type(self) -> i32 {
        if self.digest {
            v1::MessageType::Digest.into()
        } else {
            v1::MessageType::Raw.into()
        }
    }
}

pub(crate) fn sign_req(key: &str, message: &[u8], o: SigOpts<'_>) -> v1::SignRequest {
    v1::SignRequest {
        key: key.to_owned(),
        message: message.to_vec(),
        message_type: o.message_type(),
        sm2_id: o.sm2_id.to_owned(),
        rsa_scheme: o.scheme.to_owned(),
        hash: o.hash.to_owned(),
    }
}

pub(crate) fn verify_req(
    key: &str,
    message: &[u8],
    signature: &[u8],
    o: SigOpts<'_>,
    key_version: Option<u32>,
) -> v1::VerifyRequest {
    v1::VerifyRequest {
        key: key.to_owned(),
        message: message.to_vec(),
        message_type: o.message_type(),
        sm2_id: o.sm2_id.to_owned(),
        rsa_scheme: o.scheme.to_owned(),
        hash: o.hash.to_owned(),
        signature: signature.to_vec(),
        key_version,
    }
}

pub(crate) fn mac_req(key: &str, data: &[u8]) -> v1::GenerateMacRequest {
    v1::GenerateMacRequest {
        key: key.to_owned(),
        data: data.to_vec(),
    }
}

pub(crate) fn verify_mac_req(
    key: &str,
    data: &[u8],
    mac: &[u8],
    key_version: Option<u32>,
) -> v1::VerifyMacRequest {
    v1::VerifyMacRequest {
        key: key.to_owned(),
        data: data.to_vec(),
        mac: mac.to_vec(),
        key_version,
    }
}

pub(crate) fn data_key_req(
    key: &str,
    spec: &str,
    context: &HashMap<String, String>,
) -> v1::GenerateDataKeyRequest {
    v1::GenerateDataKeyRequest {
        key: key.to_owned(),
        key_spec: spec.to_owned(),
        context: context.clone(),
        wrap_to_public_key: Vec::new(),
    }
}

pub(crate) fn asym_req(
    key: &str,
    ciphertext: &[u8],
    key_version: Option<u32>,
) -> v1::AsymmetricDecryptRequest {
    v1::AsymmetricDecryptRequest {
        key: key.to_owned(),
        ciphertext: ciphertext.to_vec(),
        key_version,
    }
}

pub(crate) fn public_key_req(key: &str, key_version: Option<u32>) -> v1::GetPublicKeyRequest {
    v1::GetPublicKeyRequest {
        key: key.to_owned(),
        key_version,
    }
}

pub(crate) fn key_req(key: &str) -> v1::KeyRequest {
    v1::KeyRequest {
        key: key.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Keys known outside the KMS, and the audit trail
// ---------------------------------------------------------------------------------------------

/// A symmetric key of the app namespace whose bytes the test knows (a pepper, a MAC key shared
/// with a partner): created with origin external, its material wrapped by OpenSSL (SM2) to the
/// KMS's import key and imported. Returns the key id.
pub(crate) async fn import_known_key(
    w: &kms_tests::world::World,
    dir: &Scratch,
    purpose: v1::Purpose,
    algorithm: &str,
    alias: &str,
    material_hex: &str,
) -> String {
    let mut keys = w.admin.keys.clone();
    let id = keys
        .create_key(v1::CreateKeyRequest {
            namespace: kms_tests::pki::subjects::APP_NS.to_owned(),
            purpose: purpose.into(),
            algorithm: algorithm.to_owned(),
            origin: "external".to_owned(),
            alias: alias.to_owned(),
            ..v1::CreateKeyRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .key_id;
    let p = keys
        .get_import_parameters(v1::GetImportParametersRequest {
            key: id.clone(),
            wrapping_spec: "sm2".to_owned(),
            wrapping_key_spec: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let wrap = dir.write("wrap.pem", p.wrapping_public_key_pem);
    let material = dir.write("known.key", hex::decode(material_hex).unwrap());
    let wrapped = dir.path("known.wrapped");
    openssl_ok(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        &wrap,
        "-in",
        &material,
        "-out",
        wrapped.to_str().unwrap(),
    ]);
    keys.import_key_material(v1::ImportKeyMaterialRequest {
        key: id.clone(),
        import_token: p.import_token,
        wrapped_material: std::fs::read(&wrapped).unwrap(),
        expires_at: None,
    })
    .await
    .unwrap();
    id
}

/// The live export over gRPC. An export overtaken by the archiver (its records were archived
/// while it read them) says so and is simply asked for again.
pub(crate) async fn audit_export(w: &kms_tests::world::World) -> String {
    for _ in 0..5 {
        let mut stream = w
            .auditor
            .audit
            .clone()
            .export_audit(v1::ExportAuditRequest {})
            .await
            .unwrap()
            .into_inner();
        let mut text = String::new();
        let overtaken = loop {
            match stream.message().await {
                Ok(Some(chunk)) => text.push_str(&chunk.lines),
                Ok(None) => break false,
                Err(s) if s.code() == Code::Unavailable && s.message().contains("export again") => {
                    break true;
                }
                Err(s) => panic!("export failed: {s:?}"),
            }
        };
        if !overtaken {
            return text;
        }
    }
    panic!("five exports in a row were overtaken by the archiver");
}

/// The whole audit trail as the auditor exports it (JSON Lines, [`audit_export`]),
/// and its records of the operations whose names start with `prefix` (`"PasswordShield/"`).
pub(crate) async fn audit_records(
    w: &kms_tests::world::World,
    prefix: &str,
) -> (String, Vec<serde_json::Value>) {
    let text = audit_export(w).await;
    let records = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| {
            r["type"] == "record"
                && r["operation"]
                    .as_str()
                    .is_some_and(|o| o.starts_with(prefix))
        })
        .collect();
    (text, records)
}
