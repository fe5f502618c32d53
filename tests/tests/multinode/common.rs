//! Requests and waiting helpers shared by the multi-node modules.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use kms_proto::v1::{self, Purpose};
use kms_tests::pki::subjects::APP_NS;
use kms_tests::world::Clients;
use tonic::{Code, Status};

pub(crate) const SECRET: &[u8] = b"multi-node plaintext";

pub(crate) fn enc(key: &str, plaintext: &[u8]) -> v1::EncryptRequest {
    v1::EncryptRequest {
        key: key.to_owned(),
        plaintext: plaintext.to_vec(),
        context: HashMap::new(),
    }
}

pub(crate) fn dec(ciphertext: &[u8]) -> v1::DecryptRequest {
    v1::DecryptRequest {
        ciphertext: ciphertext.to_vec(),
        context: HashMap::new(),
    }
}

pub(crate) fn key_req(key: &str) -> v1::KeyRequest {
    v1::KeyRequest {
        key: key.to_owned(),
    }
}

/// An SM4-GCM key in the app's namespace, made by `admin`.
pub(crate) async fn create_key(
    admin: &Clients,
    rotation_period: Option<u64>,
) -> Result<String, Status> {
    Ok(admin
        .keys
        .clone()
        .create_key(v1::CreateKeyRequest {
            namespace: APP_NS.to_owned(),
            purpose: Purpose::Encrypt.into(),
            algorithm: "sm4-gcm".to_owned(),
            alias: String::new(),
            rotation_period_seconds: rotation_period,
            description: String::new(),
            origin: String::new(),
            exportable: false,
        })
        .await?
        .into_inner()
        .key
        .unwrap()
        .key_id)
}

/// Encrypts as `app`; the ciphertext and the version used.
pub(crate) async fn encrypt(app: &Clients, key: &str) -> Result<(Vec<u8>, u32), Status> {
    let r = app.crypto.clone().encrypt(enc(key, SECRET)).await?;
    let r = r.into_inner();
    Ok((r.ciphertext, r.key_version))
}

pub(crate) async fn describe(admin: &Clients, key: &str) -> v1::KeyMetadata {
    admin
        .keys
        .clone()
        .describe_key(key_req(key))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
}

/// Polls `probe` until it returns `Some`, at most `limit`; the value and how long it took.
pub(crate) async fn until<T, F, Fut>(limit: Duration, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return (v, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `Some(status)` once `result` is a refusal with `code`.
pub(crate) fn refused<T>(result: Result<T, Status>, code: Code) -> Option<Status> {
    match result {
        Err(s) if s.code() == code => Some(s),
        Err(_) | Ok(_) => None,
    }
}

/// The whole audit trail, exported through `auditor`'s node.
pub(crate) async fn export_audit(auditor: &Clients) -> String {
    let mut stream = auditor
        .audit
        .clone()
        .export_audit(v1::ExportAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        text.push_str(&chunk.lines);
    }
    text
}

/// The audit public key, as an auditor fetches it.
pub(crate) async fn audit_public_key(auditor: &Clients) -> kms_core::crypto::PublicKey {
    let der = auditor
        .audit
        .clone()
        .get_audit_public_key(v1::GetAuditPublicKeyRequest {})
        .await
        .unwrap()
        .into_inner()
        .public_key_der;
    kms_core::crypto::PublicKey::from_spki_der(kms_core::policy::Policy::default(), &der).unwrap()
}
