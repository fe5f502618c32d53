//! The `kms` binary against a stand-in gRPC server over real mutual TLS.
//!
//! The stand-in implements the kms.v1 services with canned, checkable answers (a "ciphertext" is
//! the context and plaintext spelled out, a signature is the message with a prefix). It exists to
//! test what the CLI does — the mTLS channel, profiles, files and stdin/stdout, base64, JSON,
//! error lines and exit codes — without the real server; the end-to-end tests against
//! `kms-server` check the KMS itself.

// Test helpers count as test code (clippy's allow-unwrap-in-tests) only under cfg(test).
#![cfg(test)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::{fs, io::Write as _};

use kms_devpki::{self as devpki, DevCa};
use kms_proto::v1::crypto_server::{Crypto, CryptoServer};
use kms_proto::v1::key_admin_server::{KeyAdmin, KeyAdminServer};
use kms_proto::v1::system_server::{System, SystemServer};
use kms_proto::v1::*;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

type Reply<T> = Result<Response<T>, Status>;

const KEY_ID: &str = "7f1c0c8e-0000-4000-8000-000000000001";

// ---------------------------------------------------------------------------------------------
// The stand-in server.

/// The caller's SAN URI, from the verified client certificate.
fn caller<T>(req: &Request<T>) -> String {
    let certs = req.peer_certs().unwrap();
    let (_, cert) = X509Certificate::from_der(&certs[0]).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .find_map(|n| {
            if let GeneralName::URI(u) = n {
                Some((*u).to_owned())
            } else {
                None
            }
        })
        .unwrap()
}

fn is_admin<T>(req: &Request<T>) -> Result<(), Status> {
    let who = caller(req);
    if who == "kms://admin" {
        Ok(())
    } else {
        Err(Status::permission_denied(format!("{who} is not an admin")))
    }
}

fn key_meta(key: &str) -> Result<KeyMetadata, Status> {
    match key {
        "missing" => Err(Status::not_found("no key named missing")),
        "sealed" => Err(Status::unavailable("the KMS is sealed")),
        _ => Ok(KeyMetadata {
            key_id: KEY_ID.to_owned(),
            namespace: "default".to_owned(),
            purpose: Purpose::Encrypt.into(),
            algorithm: "sm4-gcm".to_owned(),
            state: KeyState::Enabled.into(),
            created_at: 1_700_000_000,
            current_version: 1,
            versions: vec![KeyVersionInfo {
                version: 1,
                created_at: 1_700_000_000,
                destroyed: false,
                public_key_der: Vec::new(),
            }],
            ..KeyMetadata::default()
        }),
    }
}

fn key_reply(key: &str, change: impl FnOnce(&mut KeyMetadata)) -> Reply<KeyResponse> {
    let mut meta = key_meta(key)?;
    change(&mut meta);
    Ok(Response::new(KeyResponse { key: Some(meta) }))
}

/// "Ciphertext": `CT|k=v,…|plaintext`, so the test can check what reached the server.
fn seal_blob(context: &std::collections::HashMap<String, String>, pt: &[u8]) -> Vec<u8> {
    let sorted: BTreeMap<_, _> = context.iter().collect();
    let ctx: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut out = format!("CT|{}|", ctx.join(",")).into_bytes();
    out.extend_from_slice(pt);
    out
}

fn open_blob(
    context: &std::collections::HashMap<String, String>,
    ct: &[u8],
) -> Result<Vec<u8>, Status> {
    let prefix = seal_blob(context, b"");
    ct.strip_prefix(prefix.as_slice())
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Status::invalid_argument("decryption failed"))
}

struct Mock;

#[tonic::async_trait]
impl System for Mock {
    async fn status(&self, req: Request<StatusRequest>) -> Reply<StatusResponse> {
        let who = caller(&req);
        let role = if who == "kms://admin" { "admin" } else { "app" };
        Ok(Response::new(StatusResponse {
            initialized: true,
            sealed: false,
            shares: 1,
            threshold: 1,
            unseal_progress: 0,
            policy: "standard".to_owned(),
            store: "memory".to_owned(),
            version: "mock".to_owned(),
            caller_subject: who,
            caller_role: role.to_owned(),
        }))
    }

    async fn init(&self, req: Request<InitRequest>) -> Reply<InitResponse> {
        let who = caller(&req);
        let r = req.into_inner();
        Ok(Response::new(InitResponse {
            shares: (1..=r.shares).map(|i| format!("share-{i}")).collect(),
            threshold: r.threshold,
            admin_subject: if r.admin_subject.is_empty() {
                who
            } else {
                r.admin_subject
            },
            issued: Vec::new(),
        }))
    }

    async fn unseal(&self, req: Request<UnsealRequest>) -> Reply<UnsealResponse> {
        match req.into_inner().share.as_str() {
            "good" => Ok(Response::new(UnsealResponse {
                sealed: false,
                progress: 0,
                threshold: 2,
                restored_entries: 0,
            })),
            "partial" => Ok(Response::new(UnsealResponse {
                sealed: true,
                progress: 1,
                threshold: 2,
                restored_entries: 0,
            })),
            _ => Err(Status::invalid_argument("not a valid share")),
        }
    }

    async fn seal(&self, req: Request<SealRequest>) -> Reply<SealResponse> {
        is_admin(&req)?;
        Ok(Response::new(SealResponse {}))
    }

    type BackupStream = Pin<Box<dyn Stream<Item = Result<BackupChunk, Status>> + Send>>;

    async fn backup(&self, req: Request<BackupRequest>) -> Reply<Self::BackupStream> {
        is_admin(&req)?;
        let chunks = (0..3).map(|i| {
            Ok(BackupChunk {
                data: format!("chunk-{i};").into_bytes(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn restore(&self, req: Request<Streaming<RestoreChunk>>) -> Reply<RestoreResponse> {
        let mut stream = req.into_inner();
        let mut entries = 0u64;
        let mut first = true;
        while let Some(chunk) = stream.message().await? {
            if first && chunk.shares != ["good"] {
                return Err(Status::invalid_argument(
                    "the shares do not open this backup",
                ));
            }
            first = false;
            entries += u64::try_from(chunk.data.len()).unwrap();
        }
        Ok(Response::new(RestoreResponse {
            entries,
            ..RestoreResponse::default()
        }))
    }
}

#[tonic::async_trait]
impl Crypto for Mock {
    async fn encrypt(&self, req: Request<EncryptRequest>) -> Reply<EncryptResponse> {
        let r = req.into_inner();
        key_meta(&r.key)?;
        Ok(Response::new(EncryptResponse {
            ciphertext: seal_blob(&r.context, &r.plaintext),
            key_id: KEY_ID.to_owned(),
            key_version: 1,
        }))
    }

    async fn decrypt(&self, req: Request<DecryptRequest>) -> Reply<DecryptResponse> {
        let r = req.into_inner();
        Ok(Response::new(DecryptResponse {
            plaintext: open_blob(&r.context, &r.ciphertext)?,
            key_id: KEY_ID.to_owned(),
            key_version: 1,
            key_compromised: false,
        }))
    }

    async fn re_encrypt(&self, req: Request<ReEncryptRequest>) -> Reply<ReEncryptResponse> {
        let r = req.into_inner();
        let pt = open_blob(&r.source_context, &r.ciphertext)?;
        Ok(Response::new(ReEncryptResponse {
            ciphertext: seal_blob(&r.destination_context, &pt),
            key_id: if r.destination_key.is_empty() {
                KEY_ID.to_owned()
            } else {
                r.destination_key
            },
            key_version: 2,
        }))
    }

    async fn generate_data_key(
        &self,
        req: Request<GenerateDataKeyRequest>,
    ) -> Reply<GenerateDataKeyResponse> {
        let r = req.into_inner();
        let len = if r.key_spec == "sm4" { 16 } else { 32 };
        Ok(Response::new(GenerateDataKeyResponse {
            ciphertext: b"WRAPPED".to_vec(),
            plaintext: vec![0x11; len],
            plaintext_encrypted: Vec::new(),
            key_id: KEY_ID.to_owned(),
            key_version: 1,
        }))
    }

    async fn generate_data_key_without_plaintext(
        &self,
        req: Request<GenerateDataKeyRequest>,
    ) -> Reply<GenerateDataKeyResponse> {
        let mut resp = self.generate_data_key(req).await?.into_inner();
        resp.plaintext.clear();
        Ok(Response::new(resp))
    }

    async fn sign(&self, req: Request<SignRequest>) -> Reply<SignResponse> {
        let r = req.into_inner();
        let mut signature = format!("SIG:{}:{}:", r.message_type, r.sm2_id).into_bytes();
        signature.extend_from_slice(&r.message);
        Ok(Response::new(SignResponse {
            signature,
            key_id: KEY_ID.to_owned(),
            key_version: 1,
        }))
    }

    async fn verify(&self, req: Request<VerifyRequest>) -> Reply<VerifyResponse> {
        let r = req.into_inner();
        let mut expected = format!("SIG:{}:{}:", r.message_type, r.sm2_id).into_bytes();
        expected.extend_from_slice(&r.message);
        Ok(Response::new(VerifyResponse {
            valid: expected == r.signature,
            key_id: KEY_ID.to_owned(),
            key_version: 1,
            key_compromised: false,
        }))
    }

    async fn asymmetric_decrypt(
        &self,
        req: Request<AsymmetricDecryptRequest>,
    ) -> Reply<AsymmetricDecryptResponse> {
        let r = req.into_inner();
        Ok(Response::new(AsymmetricDecryptResponse {
            plaintext: r.ciphertext.iter().rev().copied().collect(),
            key_id: KEY_ID.to_owned(),
            key_version: 1,
            key_compromised: true,
        }))
    }

    async fn get_public_key(
        &self,
        req: Request<GetPublicKeyRequest>,
    ) -> Reply<GetPublicKeyResponse> {
        key_meta(&req.into_inner().key)?;
        Ok(Response::new(GetPublicKeyResponse {
            key_id: KEY_ID.to_owned(),
            key_version: 1,
            algorithm: "sm2".to_owned(),
            public_key_der: vec![1, 2, 3],
            public_key_pem: "-----BEGIN PUBLIC KEY-----\nAQID\n-----END PUBLIC KEY-----\n"
                .to_owned(),
        }))
    }

    async fn generate_mac(&self, req: Request<GenerateMacRequest>) -> Reply<GenerateMacResponse> {
        let r = req.into_inner();
        let mut mac = b"MAC:".to_vec();
        mac.extend_from_slice(&r.data);
        Ok(Response::new(GenerateMacResponse {
            mac,
            key_id: KEY_ID.to_owned(),
            key_version: 1,
        }))
    }

    async fn verify_mac(&self, req: Request<VerifyMacRequest>) -> Reply<VerifyMacResponse> {
        let r = req.into_inner();
        let mut expected = b"MAC:".to_vec();
        expected.extend_from_slice(&r.data);
        Ok(Response::new(VerifyMacResponse {
            valid: expected == r.mac,
            key_id: KEY_ID.to_owned(),
            key_version: 1,
        }))
    }

    async fn generate_random(
        &self,
        req: Request<GenerateRandomRequest>,
    ) -> Reply<GenerateRandomResponse> {
        let n = usize::try_from(req.into_inner().length).unwrap();
        Ok(Response::new(GenerateRandomResponse { random: vec![7; n] }))
    }
}

#[tonic::async_trait]
impl KeyAdmin for Mock {
    async fn create_key(&self, req: Request<CreateKeyRequest>) -> Reply<KeyResponse> {
        is_admin(&req)?;
        let r = req.into_inner();
        if r.algorithm == "des" {
            return Err(Status::invalid_argument("DES: forbidden by ALG-3"));
        }
        key_reply("new", |k| {
            k.purpose = r.purpose;
            k.algorithm = r.algorithm;
            k.namespace = if r.namespace.is_empty() {
                "default".to_owned()
            } else {
                r.namespace
            };
            k.rotation_period_seconds = r.rotation_period_seconds;
            if !r.alias.is_empty() {
                k.aliases = vec![r.alias];
            }
        })
    }

    async fn import_public_key(&self, req: Request<ImportPublicKeyRequest>) -> Reply<KeyResponse> {
        is_admin(&req)?;
        let r = req.into_inner();
        if !String::from_utf8_lossy(&r.public_key).contains("BEGIN PUBLIC KEY") {
            return Err(Status::invalid_argument(
                "invalid public key: not a PEM document",
            ));
        }
        key_reply("imported", |k| {
            k.purpose = r.purpose;
            k.algorithm = "sm2".to_owned();
            k.origin = "public-only".to_owned();
        })
    }

    // Import and export are tried against the real server (`outside_keys_cli.rs`,
    // `import_export_cli.rs`): the mock only says so.
    async fn get_import_parameters(
        &self,
        _: Request<GetImportParametersRequest>,
    ) -> Reply<ImportParametersResponse> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn import_key_material(
        &self,
        _: Request<ImportKeyMaterialRequest>,
    ) -> Reply<KeyResponse> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn export_key(&self, _: Request<ExportKeyRequest>) -> Reply<ExportKeyResponse> {
        Err(Status::unimplemented("not in the mock"))
    }

    async fn describe_key(&self, req: Request<KeyRequest>) -> Reply<KeyResponse> {
        key_reply(&req.into_inner().key, |_| {})
    }

    async fn list_keys(&self, _req: Request<ListKeysRequest>) -> Reply<ListKeysResponse> {
        let mut second = key_meta("x")?;
        second.key_id = "7f1c0c8e-0000-4000-8000-000000000002".to_owned();
        second.purpose = Purpose::Sign.into();
        second.algorithm = "sm2".to_owned();
        second.state = KeyState::Compromised.into();
        Ok(Response::new(ListKeysResponse {
            keys: vec![key_meta("x")?, second],
        }))
    }

    async fn rotate_key(&self, req: Request<KeyRequest>) -> Reply<KeyResponse> {
        key_reply(&req.into_inner().key, |k| k.current_version = 2)
    }

    async fn set_rotation_policy(
        &self,
        req: Request<SetRotationPolicyRequest>,
    ) -> Reply<KeyResponse> {
        let r = req.into_inner();
        if r.rotation_period_seconds.is_some_and(|s| s < 86_400) {
            return Err(Status::invalid_argument(
                "the rotation period must be at least one day",
            ));
        }
        key_reply(&r.key, |k| {
            k.rotation_period_seconds = r.rotation_period_seconds
        })
    }

    async fn enable_key(&self, req: Request<KeyRequest>) -> Reply<KeyResponse> {
        key_reply(&req.into_inner().key, |_| {})
    }

    async fn disable_key(&self, req: Request<KeyRequest>) -> Reply<KeyResponse> {
        key_reply(&req.into_inner().key, |k| {
            k.state = KeyState::Disabled.into()
        })
    }

    async fn mark_compromised(&self, req: Request<KeyRequest>) -> Reply<KeyResponse> {
        key_reply(&req.into_inner().key, |k| {
            k.state = KeyState::Compromised.into()
        })
    }

    async fn schedule_key_destruction(
        &self,
        req: Request<ScheduleKeyDestructionRequest>,
    ) -> Reply<KeyResponse> {
        let r = req.into_inner();
        if r.key == "guarded" {
            // What a server under dual control answers the first call.
            let mut s = Status::failed_precondition(
                "schedule-key-destruction needs the approval of 2 administrators: pending \
                 request apr-00ff (request r-1)",
            );
            s.metadata_mut()
                .insert("kms-approval-id", "apr-00ff".parse().unwrap());
            return Err(s);
        }
        let days = if r.pending_days == 0 {
            30
        } else {
            r.pending_days
        };
        key_reply(&r.key, |k| {
            k.state = KeyState::PendingDestruction.into();
            k.destroy_at = Some(1_700_000_000 + u64::from(days) * 86_400);
        })
    }

    async fn cancel_key_destruction(&self, req: Request<KeyRequest>) -> Reply<KeyResponse> {
        key_reply(&req.into_inner().key, |k| {
            k.state = KeyState::Disabled.into()
        })
    }

    async fn create_alias(&self, req: Request<CreateAliasRequest>) -> Reply<KeyResponse> {
        let r = req.into_inner();
        key_reply(&r.key, |k| k.aliases = vec![r.alias])
    }

    async fn delete_alias(&self, _req: Request<DeleteAliasRequest>) -> Reply<Empty> {
        Ok(Response::new(Empty {}))
    }

    async fn create_grant(&self, req: Request<CreateGrantRequest>) -> Reply<GrantInfo> {
        let r = req.into_inner();
        Ok(Response::new(GrantInfo {
            key_id: KEY_ID.to_owned(),
            grantee_namespace: r.grantee_namespace,
            operations: r.operations,
            created_at: 1_700_000_000,
        }))
    }

    async fn revoke_grant(&self, _req: Request<RevokeGrantRequest>) -> Reply<Empty> {
        Ok(Response::new(Empty {}))
    }

    async fn list_grants(&self, _req: Request<ListGrantsRequest>) -> Reply<ListGrantsResponse> {
        Ok(Response::new(ListGrantsResponse {
            grants: vec![GrantInfo {
                key_id: KEY_ID.to_owned(),
                grantee_namespace: "billing".to_owned(),
                operations: vec!["encrypt".to_owned(), "decrypt".to_owned()],
                created_at: 1_700_000_000,
            }],
        }))
    }

    async fn add_principal(&self, req: Request<AddPrincipalRequest>) -> Reply<PrincipalInfo> {
        is_admin(&req)?;
        let r = req.into_inner();
        Ok(Response::new(PrincipalInfo {
            subject: r.subject,
            role: r.role,
            namespace: r.namespace,
            created_at: 1_700_000_000,
        }))
    }

    async fn remove_principal(&self, req: Request<RemovePrincipalRequest>) -> Reply<Empty> {
        if req.into_inner().subject == "kms://nobody" {
            return Err(Status::not_found("no principal kms://nobody"));
        }
        Ok(Response::new(Empty {}))
    }

    async fn approve(&self, req: Request<ApproveRequest>) -> Reply<ApprovalInfo> {
        let r = req.into_inner();
        if r.id != "apr-00ff" {
            return Err(Status::not_found(format!(
                "approval request {} not found",
                r.id
            )));
        }
        let mut a = approval();
        a.approvers = vec!["kms://admin".to_owned()];
        a.state = "executed".to_owned();
        a.result = "key k-1 is pending destruction".to_owned();
        Ok(Response::new(a))
    }

    async fn reject(&self, req: Request<RejectRequest>) -> Reply<ApprovalInfo> {
        let r = req.into_inner();
        let mut a = approval();
        a.state = "rejected".to_owned();
        a.rejected_by = "kms://admin".to_owned();
        a.result = r.reason;
        Ok(Response::new(a))
    }

    async fn list_approvals(
        &self,
        _req: Request<ListApprovalsRequest>,
    ) -> Reply<ListApprovalsResponse> {
        Ok(Response::new(ListApprovalsResponse {
            approvals: vec![approval()],
        }))
    }

    async fn list_principals(&self, _req: Request<Empty>) -> Reply<ListPrincipalsResponse> {
        Ok(Response::new(ListPrincipalsResponse {
            principals: vec![
                PrincipalInfo {
                    subject: "kms://admin".to_owned(),
                    role: "admin".to_owned(),
                    namespace: String::new(),
                    created_at: 1_700_000_000,
                },
                PrincipalInfo {
                    subject: "kms://app".to_owned(),
                    role: "app".to_owned(),
                    namespace: "default".to_owned(),
                    created_at: 1_700_000_000,
                },
            ],
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Harness: one dev PKI and one server for the whole test binary.

struct Harness {
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate().unwrap();
        ca.write_dir(dir.path()).unwrap();
        let server = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        let addr = start_server(&ca.cert_pem(), &server.cert_pem, &server.key_pem);
        let endpoint = format!("https://127.0.0.1:{}", addr.port());
        for subject in ["admin", "app"] {
            devpki::write_client_bundle(&ca, dir.path(), subject, &endpoint).unwrap();
        }
        // A client whose certificate another CA issued, and one that trusts another CA for the
        // server.
        let rogue = DevCa::generate().unwrap();
        let rogue_dir = dir.path().join("rogue");
        rogue.write_dir(&rogue_dir).unwrap();
        devpki::write_client_bundle(&rogue, &rogue_dir, "admin", &endpoint).unwrap();
        let text = devpki::profile_toml(
            &endpoint,
            Path::new("../ca.pem"),
            Path::new("../../certs/admin.pem"),
            Path::new("../../certs/admin-key.pem"),
        );
        fs::write(rogue_dir.join("profiles/trusts-rogue.toml"), text).unwrap();
        let text = devpki::profile_toml(
            &endpoint,
            Path::new("../../ca.pem"),
            Path::new("../certs/admin.pem"),
            Path::new("../certs/admin-key.pem"),
        );
        fs::write(rogue_dir.join("profiles/rogue-client.toml"), text).unwrap();
        Harness { dir, addr }
    })
}

fn start_server(ca_pem: &str, cert_pem: &str, key_pem: &str) -> SocketAddr {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        // Failed handshakes (an untrusted client) are dropped here.
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                        }
                    });
                }
            });
            tonic::transport::Server::builder()
                .add_service(SystemServer::new(Mock))
                .add_service(CryptoServer::new(Mock))
                .add_service(KeyAdminServer::new(Mock))
                .serve_with_incoming(ReceiverStream::new(rx))
                .await
                .unwrap();
        });
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Running `kms`.

fn profile(name: &str) -> String {
    harness()
        .dir
        .path()
        .join(format!("profiles/{name}.toml"))
        .to_string_lossy()
        .into_owned()
}

fn kms_cmd(profile_name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kms"));
    for var in [
        "KMS_PROFILE",
        "KMS_HOME",
        "KMS_ENDPOINT",
        "KMS_CA",
        "KMS_CERT",
        "KMS_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.arg("--profile").arg(profile(profile_name)).args(args);
    cmd
}

fn kms_as(profile_name: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = kms_cmd(profile_name, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The stand-in's one approval request, pending.
fn approval() -> ApprovalInfo {
    ApprovalInfo {
        id: "apr-00ff".to_owned(),
        operation: "schedule-key-destruction".to_owned(),
        parameters: "key k-1, after 7 days".to_owned(),
        digest: "ab".repeat(32),
        requester: "kms://other-admin".to_owned(),
        created_at: 1_700_000_000,
        expires_at: 1_700_086_400,
        needed: 2,
        approvers: Vec::new(),
        state: "pending".to_owned(),
        rejected_by: String::new(),
        result: String::new(),
        key_id: "k-1".to_owned(),
    }
}

#[test]
fn dual_control_requests_are_listed_approved_and_rejected() {
    let text = ok(&kms(&["approvals", "list"]));
    assert!(
        text.starts_with("ID ")
            && text.contains("apr-00ff  schedule-key-destruction  pending  kms://other-admin  1/2")
            && text.contains("key k-1, after 7 days"),
        "{text}"
    );
    let text = ok(&kms(&["approve", "apr-00ff"]));
    assert!(
        text.contains("state           executed")
            && text.contains("result          key k-1 is pending destruction"),
        "{text}"
    );
    let v = json(&kms(&[
        "--json",
        "reject",
        "apr-00ff",
        "--reason",
        "wrong key",
    ]));
    assert_eq!(
        (v["state"].as_str(), v["result"].as_str()),
        (Some("rejected"), Some("wrong key"))
    );
    fails(
        &kms(&["approve", "apr-0bad"]),
        4,
        "approval request apr-0bad not found",
    );
    // The first call of a covered operation: the id, and what to do next.
    let stderr = fails(
        &kms(&["key", "schedule-destruction", "guarded"]),
        6,
        "pending request apr-00ff",
    );
    assert!(
        stderr.contains(
            "hint: it runs once approved: another administrator runs `kms approve apr-00ff`"
        ),
        "{stderr}"
    );
}

fn kms(args: &[&str]) -> Output {
    kms_as("admin", args, b"")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

/// Asserts the exit code and the `error:` / `hint:` lines; returns stderr.
fn fails(out: &Output, code: i32, message_part: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(message_part), "{stderr}");
    stderr
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// System.

#[test]
fn status_shows_the_principal_from_the_client_certificate() {
    let text = ok(&kms(&["status"]));
    assert!(text.contains("kms://admin (admin)"), "{text}");
    let v = json(&kms_as("app", &["--json", "status"], b""));
    assert_eq!(v["caller_subject"], "kms://app");
    assert_eq!(v["initialized"], true);
    assert_eq!(v["sealed"], false);
}

#[test]
fn the_kms_environment_variables_work_without_a_profile() {
    let h = harness();
    let d = h.dir.path();
    let out = Command::new(env!("CARGO_BIN_EXE_kms"))
        .env_remove("KMS_PROFILE")
        .env("KMS_ENDPOINT", format!("localhost:{}", h.addr.port()))
        .env("KMS_CA", d.join(devpki::CA_CERT_FILE))
        .env("KMS_CERT", d.join("certs/app.pem"))
        .env("KMS_KEY", d.join("certs/app-key.pem"))
        .args(["--json", "status"])
        .output()
        .unwrap();
    assert_eq!(json(&out)["caller_subject"], "kms://app");
}

#[test]
fn init_prints_or_writes_the_shares() {
    let v = json(&kms(&[
        "--json",
        "init",
        "--shares",
        "3",
        "--threshold",
        "2",
    ]));
    assert_eq!(
        v["shares"],
        serde_json::json!(["share-1", "share-2", "share-3"])
    );
    assert_eq!(v["admin_subject"], "kms://admin");

    let dir = tmp();
    let shares = dir.path().join("shares");
    let text = ok(&kms(&[
        "init",
        "--shares",
        "2",
        "--threshold",
        "2",
        "--admin",
        "kms://root",
        "--share-dir",
        path_str(&shares),
    ]));
    assert!(text.contains("kms://root"), "{text}");
    assert_eq!(
        fs::read_to_string(shares.join("share-2.txt")).unwrap(),
        "share-2\n"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(shares.join("share-1.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    fails(
        &kms(&["init", "--shares", "2", "--threshold", "3"]),
        2,
        "more than --shares",
    );
}

#[test]
fn unseal_takes_shares_from_files_or_stdin() {
    let dir = tmp();
    let file = dir.path().join("s");
    fs::write(&file, "partial\ngood\n").unwrap();
    assert_eq!(
        ok(&kms(&["unseal", "--share-file", path_str(&file)])).trim(),
        "unsealed"
    );
    let text = ok(&kms_as("admin", &["unseal"], b"partial\n"));
    assert_eq!(text.trim(), "share accepted: 1 of 2; still sealed");
    let v = json(&kms_as(
        "admin",
        &["--json", "unseal", "--share-file", "-"],
        b"good\n",
    ));
    assert_eq!(v["sealed"], false);
    fails(
        &kms_as("admin", &["unseal"], b"wrong\n"),
        6,
        "not a valid share",
    );
    fails(&kms_as("admin", &["unseal"], b"\n"), 2, "no share given");
}

#[test]
fn seal_is_for_admins() {
    assert_eq!(ok(&kms(&["seal"])).trim(), "sealed");
    let err = fails(
        &kms_as("app", &["seal"], b""),
        3,
        "kms://app is not an admin",
    );
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn backup_and_restore_stream_through_files() {
    let dir = tmp();
    let backup = dir.path().join("kms.bak");
    let v = json(&kms(&["--json", "backup", "--out", path_str(&backup)]));
    assert_eq!(v["bytes"], 24);
    assert_eq!(
        fs::read_to_string(&backup).unwrap(),
        "chunk-0;chunk-1;chunk-2;"
    );
    assert!(!dir.path().join("kms.bak.partial").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    fails(
        &kms_as("app", &["backup", "--out", path_str(&backup)], b""),
        3,
        "not an admin",
    );
    assert!(
        backup.exists(),
        "a refused backup must not remove an earlier one"
    );

    // Larger than one restore chunk, to cross the chunk boundary.
    let big = dir.path().join("big.bak");
    fs::write(&big, vec![b'x'; 200_000]).unwrap();
    let shares = dir.path().join("shares");
    fs::write(&shares, "good\n").unwrap();
    let v = json(&kms(&[
        "--json",
        "restore",
        "--in",
        path_str(&big),
        "--share-file",
        path_str(&shares),
    ]));
    assert_eq!(v["entries"], 200_000);
    fs::write(&shares, "bad\n").unwrap();
    fails(
        &kms(&[
            "restore",
            "--in",
            path_str(&big),
            "--share-file",
            path_str(&shares),
        ]),
        6,
        "shares do not open",
    );
}

// ---------------------------------------------------------------------------------------------
// Keys, principals, grants.

#[test]
fn key_create_prints_the_id_and_json_carries_the_key_object() {
    assert_eq!(
        ok(&kms(&["key", "create", "--purpose", "encrypt"])).trim(),
        KEY_ID
    );
    let v = json(&kms(&[
        "--json",
        "key",
        "create",
        "--purpose",
        "sign",
        "--alias",
        "signer",
        "--rotation-period",
        "90d",
    ]));
    assert_eq!(v["key_id"], KEY_ID);
    assert_eq!(v["purpose"], "sign");
    assert_eq!(v["algorithm"], "sm2", "the default for sign is SM2");
    assert_eq!(v["state"], "enabled");
    assert_eq!(v["versions"][0]["version"], 1);
    assert_eq!(v["rotation_period_seconds"], 90 * 86_400);
    assert_eq!(v["aliases"][0], "signer");
    let v = json(&kms(&[
        "--json",
        "key",
        "create",
        "--purpose",
        "mac",
        "--namespace",
        "billing",
    ]));
    assert_eq!(v["algorithm"], "hmac-sm3");
    assert_eq!(v["namespace"], "billing");

    fails(
        &kms_as("app", &["key", "create", "--purpose", "encrypt"], b""),
        3,
        "not an admin",
    );
    fails(
        &kms(&[
            "key",
            "create",
            "--purpose",
            "encrypt",
            "--algorithm",
            "des",
        ]),
        6,
        "DES: forbidden by ALG-3",
    );
}

#[test]
fn key_list_and_describe() {
    let text = ok(&kms(&["key", "list"]));
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "KEY_ID",
            "NAMESPACE",
            "PURPOSE",
            "ALGORITHM",
            "STATE",
            "VERSION",
            "ROTATION",
            "ALIASES"
        ]
    );
    assert!(text.contains("compromised"), "{text}");
    let v = json(&kms(&["--json", "key", "list"]));
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["purpose"], "sign");

    let text = ok(&kms(&["key", "describe", "orders"]));
    assert!(text.contains("algorithm"), "{text}");
    assert!(text.contains("2023-11-14T22:13:20Z"), "{text}");
    let err = fails(
        &kms(&["key", "describe", "missing"]),
        4,
        "no key named missing",
    );
    assert!(err.contains("hint: check the key id or alias"), "{err}");
}

#[test]
fn key_lifecycle_commands() {
    let v = json(&kms(&["--json", "key", "rotate", "K"]));
    assert_eq!(v["current_version"], 2);
    let text = ok(&kms(&["key", "set-rotation", "K", "2w"]));
    assert!(text.contains("rotates every 2w"), "{text}");
    let v = json(&kms(&["--json", "key", "set-rotation", "K", "off"]));
    assert!(v["rotation_period_seconds"].is_null());
    fails(
        &kms(&["key", "set-rotation", "K", "12h"]),
        6,
        "at least one day",
    );
    assert!(ok(&kms(&["key", "disable", "K"])).contains("disabled"));
    assert!(ok(&kms(&["key", "enable", "K"])).contains("enabled"));
    assert_eq!(
        json(&kms(&["--json", "key", "compromise", "K"]))["state"],
        "compromised"
    );
    let v = json(&kms(&[
        "--json",
        "key",
        "schedule-destruction",
        "K",
        "--days",
        "7",
    ]));
    assert_eq!(v["state"], "pending-destruction");
    assert_eq!(v["destroy_at"], 1_700_000_000 + 7 * 86_400);
    assert!(ok(&kms(&["key", "schedule-destruction", "K"])).contains("to be destroyed at"));
    assert!(ok(&kms(&["key", "cancel-destruction", "K"])).contains("disabled"));
    assert!(ok(&kms(&["key", "alias", "K", "orders"])).contains("aliases orders"));
    assert!(ok(&kms(&["key", "remove-alias", "orders"])).contains("removed"));
    fails(&kms(&["key", "rotate", "sealed"]), 5, "sealed");
}

#[test]
fn principals_and_grants() {
    let text = ok(&kms(&[
        "principal",
        "add",
        "kms://billing",
        "--role",
        "app",
        "--namespace",
        "billing",
    ]));
    assert_eq!(
        text.trim(),
        "added kms://billing as app in namespace billing"
    );
    let v = json(&kms(&[
        "--json",
        "principal",
        "add",
        "kms://aud",
        "--role",
        "auditor",
    ]));
    assert_eq!(v["role"], "auditor");
    let text = ok(&kms(&["principal", "list"]));
    assert!(text.starts_with("SUBJECT"), "{text}");
    assert!(text.contains("kms://app"), "{text}");
    assert_eq!(
        json(&kms(&["--json", "principal", "list"]))[1]["namespace"],
        "default"
    );
    ok(&kms(&["principal", "remove", "kms://billing"]));
    fails(
        &kms(&["principal", "remove", "kms://nobody"]),
        4,
        "no principal",
    );

    let v = json(&kms(&[
        "--json",
        "grant",
        "add",
        "K",
        "--namespace",
        "billing",
        "--ops",
        "encrypt,decrypt",
    ]));
    assert_eq!(v["operations"], serde_json::json!(["encrypt", "decrypt"]));
    assert_eq!(v["namespace"], "billing");
    let text = ok(&kms(&["grant", "list", "--key", "K"]));
    assert!(text.contains("encrypt,decrypt"), "{text}");
    ok(&kms(&["grant", "remove", "K", "--namespace", "billing"]));
}

// ---------------------------------------------------------------------------------------------
// Data plane.

#[test]
fn encrypt_and_decrypt_round_trip_through_files_and_pipes() {
    let dir = tmp();
    let pt = dir.path().join("pt");
    let ct = dir.path().join("ct");
    let back = dir.path().join("back");
    fs::write(&pt, b"attack at dawn").unwrap();
    ok(&kms(&[
        "encrypt",
        "--key",
        "K",
        "--context",
        "app=orders",
        "--context",
        "id=7",
        "--in",
        path_str(&pt),
        "--out",
        path_str(&ct),
    ]));
    assert_eq!(fs::read(&ct).unwrap(), b"CT|app=orders,id=7|attack at dawn");
    ok(&kms(&[
        "decrypt",
        "--context",
        "app=orders",
        "--context",
        "id=7",
        "--in",
        path_str(&ct),
        "--out",
        path_str(&back),
    ]));
    assert_eq!(fs::read(&back).unwrap(), b"attack at dawn");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&back).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Wrong context: the server's decryption error, exit 6.
    fails(
        &kms(&["decrypt", "--in", path_str(&ct)]),
        6,
        "decryption failed",
    );

    // stdin → stdout, base64 in between.
    let b64 = ok(&kms_as(
        "app",
        &["encrypt", "--key", "K", "--base64"],
        b"hello",
    ));
    assert_eq!(b64.trim(), "Q1R8fGhlbGxv");
    let plain = kms_as("app", &["decrypt", "--base64"], b64.as_bytes());
    assert_eq!(ok(&plain), "hello");

    // JSON carries the ciphertext in base64.
    let v = json(&kms_as("app", &["--json", "encrypt", "--key", "K"], b"hi"));
    assert_eq!(v["ciphertext"], "Q1R8fGhp");
    assert_eq!(v["key_id"], KEY_ID);
    fails(
        &kms_as("app", &["encrypt", "--key", "sealed"], b"x"),
        5,
        "sealed",
    );
    let err = fails(
        &kms_as("app", &["encrypt", "--key", "sealed"], b"x"),
        5,
        "sealed",
    );
    assert!(err.contains("hint: the KMS is sealed"), "{err}");
    fails(
        &kms_as("app", &["encrypt", "--key", "missing"], b"x"),
        4,
        "missing",
    );
    fails(
        &kms_as("app", &["decrypt", "--base64"], b"!!"),
        2,
        "not valid base64",
    );
    fails(
        &kms(&["encrypt", "--key", "K", "--in", "/nonexistent/file"]),
        7,
        "/nonexistent/file",
    );
}

#[test]
fn datakey_json_carries_plaintext_and_ciphertext() {
    let v = json(&kms_as(
        "app",
        &["--json", "datakey", "--key", "K", "--spec", "sm4"],
        b"",
    ));
    assert_eq!(v["plaintext"], "EREREREREREREREREREREQ==");
    assert_eq!(v["ciphertext"], "V1JBUFBFRA==");
    let v = json(&kms_as(
        "app",
        &[
            "--json",
            "datakey",
            "--key",
            "K",
            "--spec",
            "aes-256",
            "--no-plaintext",
        ],
        b"",
    ));
    assert!(v.get("plaintext").is_none(), "{v}");
    let dir = tmp();
    let wrapped = dir.path().join("w");
    let key = dir.path().join("k");
    let text = ok(&kms_as(
        "app",
        &[
            "datakey",
            "--key",
            "K",
            "--spec",
            "aes-256",
            "--out",
            path_str(&wrapped),
            "--plaintext-out",
            path_str(&key),
        ],
        b"",
    ));
    assert!(text.contains("written to"), "{text}");
    assert_eq!(fs::read(&wrapped).unwrap(), b"WRAPPED");
    assert_eq!(fs::read(&key).unwrap(), vec![0x11; 32]);
}

#[test]
fn reencrypt_one_blob_or_many_files_in_place() {
    let out = kms_as(
        "app",
        &[
            "reencrypt",
            "--key",
            "D",
            "--context",
            "a=1",
            "--dest-context",
            "b=2",
        ],
        b"CT|a=1|secret",
    );
    assert_eq!(ok(&out).as_bytes(), b"CT|b=2|secret");
    let dir = tmp();
    let files: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("f{i}"))).collect();
    for f in &files {
        fs::write(f, b"CT||data").unwrap();
    }
    let mut args = vec!["--json", "reencrypt", "--dest-context", "v=2"];
    args.extend(files.iter().map(|f| path_str(f)));
    let v = json(&kms_as("app", &args, b""));
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["key_version"], 2);
    for f in &files {
        assert_eq!(fs::read(f).unwrap(), b"CT|v=2|data");
    }
}

#[test]
fn sign_and_verify_exit_zero_only_when_valid() {
    let dir = tmp();
    let msg = dir.path().join("msg");
    let sig = dir.path().join("sig");
    fs::write(&msg, b"contract").unwrap();
    ok(&kms_as(
        "app",
        &[
            "sign",
            "--key",
            "S",
            "--sm2-id",
            "alice",
            "--in",
            path_str(&msg),
            "--out",
            path_str(&sig),
        ],
        b"",
    ));
    assert_eq!(fs::read(&sig).unwrap(), b"SIG:0:alice:contract");
    let text = ok(&kms_as(
        "app",
        &[
            "verify",
            "--key",
            "S",
            "--sm2-id",
            "alice",
            "--in",
            path_str(&msg),
            "--signature",
            path_str(&sig),
        ],
        b"",
    ));
    assert!(text.starts_with("signature valid"), "{text}");
    // A different ID (or message) does not verify: exit 1.
    let out = kms_as(
        "app",
        &[
            "verify",
            "--key",
            "S",
            "--in",
            path_str(&msg),
            "--signature",
            path_str(&sig),
        ],
        b"",
    );
    fails(&out, 1, "the signature is not valid");
    let out = kms_as(
        "app",
        &[
            "--json",
            "verify",
            "--key",
            "S",
            "--in",
            path_str(&msg),
            "--signature",
            path_str(&sig),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);

    // Prehashed, base64 signature.
    let b64 = ok(&kms_as(
        "app",
        &["sign", "--key", "S", "--prehashed", "--base64"],
        b"digest",
    ));
    let sig64 = dir.path().join("sig64");
    fs::write(&sig64, &b64).unwrap();
    ok(&kms_as(
        "app",
        &[
            "verify",
            "--key",
            "S",
            "--prehashed",
            "--base64",
            "--signature",
            path_str(&sig64),
        ],
        b"digest",
    ));
}

#[test]
fn public_key_asym_decrypt_mac_and_random() {
    let dir = tmp();
    let pem = dir.path().join("k.pem");
    ok(&kms_as(
        "app",
        &["public-key", "S", "--out", path_str(&pem)],
        b"",
    ));
    assert!(
        fs::read_to_string(&pem)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let der = dir.path().join("k.der");
    ok(&kms_as(
        "app",
        &["public-key", "S", "--der", "--out", path_str(&der)],
        b"",
    ));
    assert_eq!(fs::read(&der).unwrap(), [1, 2, 3]);
    let v = json(&kms_as("app", &["--json", "public-key", "S"], b""));
    assert_eq!(v["algorithm"], "sm2");
    fails(
        &kms_as("app", &["public-key", "missing"], b""),
        4,
        "missing",
    );

    let out = kms_as("app", &["asym-decrypt", "--key", "D"], b"olleh");
    assert_eq!(ok(&out), "hello");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: key") && stderr.contains("compromised"),
        "{stderr}"
    );

    let tag = dir.path().join("tag");
    ok(&kms_as(
        "app",
        &["mac", "--key", "M", "--out", path_str(&tag)],
        b"data",
    ));
    assert_eq!(fs::read(&tag).unwrap(), b"MAC:data");
    let text = ok(&kms_as(
        "app",
        &["verify-mac", "--key", "M", "--tag", path_str(&tag)],
        b"data",
    ));
    assert!(text.starts_with("MAC tag valid"), "{text}");
    fails(
        &kms_as(
            "app",
            &["verify-mac", "--key", "M", "--tag", path_str(&tag)],
            b"other",
        ),
        1,
        "the MAC tag is not valid",
    );

    let out = kms_as("app", &["random", "--bytes", "16"], b"");
    assert_eq!(ok(&out).as_bytes(), [7; 16]);
    let v = json(&kms_as("app", &["--json", "random", "--bytes", "3"], b""));
    assert_eq!(v["random"], "BwcH");
    assert_eq!(
        ok(&kms_as("app", &["random", "--bytes", "3", "--base64"], b"")),
        "BwcH\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Connection failures.

#[test]
fn nothing_listening_is_unavailable() {
    let dir = tmp();
    // Bind and drop, so the port is (very likely) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = harness().dir.path();
    let text = devpki::profile_toml(
        &format!("https://127.0.0.1:{port}"),
        &d.join(devpki::CA_CERT_FILE),
        &d.join("certs/admin.pem"),
        &d.join("certs/admin-key.pem"),
    );
    let moved = dir.path().join("moved.toml");
    fs::write(&moved, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kms"))
        .args(["--profile", path_str(&moved), "status"])
        .output()
        .unwrap();
    let err = fails(&out, 5, "cannot connect to");
    assert!(err.contains("hint: is the server running?"), "{err}");
}

#[test]
fn a_server_from_another_ca_is_refused() {
    let p = harness()
        .dir
        .path()
        .join("rogue/profiles/trusts-rogue.toml");
    let out = kms_as_path(&p, &["status"]);
    let err = fails(&out, 5, "cannot connect to");
    assert!(err.contains("CA"), "{err}");
}

#[test]
fn a_client_from_another_ca_is_refused() {
    let p = harness()
        .dir
        .path()
        .join("rogue/profiles/rogue-client.toml");
    let out = kms_as_path(&p, &["status"]);
    let err = fails(&out, 5, "the connection to the server failed");
    assert!(
        err.contains(
            "hint: is the server still running? If so, it may refuse your client certificate"
        ),
        "{err}"
    );
}

fn kms_as_path(profile: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kms"))
        .arg("--profile")
        .arg(profile)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn pki_issue_makes_a_working_client() {
    let h = harness();
    let out_dir = tmp();
    let endpoint = format!("https://localhost:{}", h.addr.port());
    let v = json(
        &Command::new(env!("CARGO_BIN_EXE_kms"))
            .args([
                "--json",
                "pki",
                "issue",
                "billing",
                "--ca-dir",
                path_str(h.dir.path()),
                "--out-dir",
            ])
            .arg(out_dir.path())
            .args(["--endpoint", &endpoint])
            .output()
            .unwrap(),
    );
    assert_eq!(v["principal"], "kms://billing");
    // The new profile's paths are relative to it; the CA it names is in --out-dir, so copy it.
    fs::copy(
        h.dir.path().join(devpki::CA_CERT_FILE),
        out_dir.path().join(devpki::CA_CERT_FILE),
    )
    .unwrap();
    let profile = PathBuf::from(v["profile"].as_str().unwrap());
    let status = json(&kms_as_path(&profile, &["--json", "status"]));
    assert_eq!(status["caller_subject"], "kms://billing");

    let out = Command::new(env!("CARGO_BIN_EXE_kms"))
        .args([
            "pki",
            "issue",
            "../evil",
            "--ca-dir",
            path_str(h.dir.path()),
        ])
        .output()
        .unwrap();
    fails(&out, 2, "invalid subject");
    let out = Command::new(env!("CARGO_BIN_EXE_kms"))
        .args(["pki", "issue", "x", "--ca-dir", "/nonexistent"])
        .output()
        .unwrap();
    let err = fails(&out, 2, "cannot load the dev CA");
    assert!(err.contains("hint: --ca-dir"), "{err}");
}
