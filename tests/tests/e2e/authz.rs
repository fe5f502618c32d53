//! Authorisation (KEY-9): every RPC × every role from one table — allowed calls work, the others
//! are PERMISSION_DENIED, an unknown certificate is PERMISSION_DENIED everywhere — plus the
//! namespace boundary between apps and what grants open in it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};

use kms_core::crypto::{PublicKey, encrypt_to_public_key};
use kms_core::policy::Policy;
use kms_proto::v1::{self, Purpose};
use kms_server::tls::Transport;
use kms_tests::pki::subjects::{self, APP_NS, OTHER_APP_NS};
use kms_tests::world::{Clients, KeyOp, World};
use prost::Message as _;
use tonic::{Code, Status};

use crate::common::{err, expect_code, expect_err, has_request_id};

/// The callers of the matrix: the three roles and a certificate nobody registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Admin,
    App,
    Auditor,
    Stranger,
}

impl Who {
    const ALL: [Self; 4] = [Self::Stranger, Self::Auditor, Self::App, Self::Admin];

    fn clients(self, w: &World) -> &Clients {
        match self {
            Self::Admin => &w.admin,
            Self::App => &w.app,
            Self::Auditor => &w.auditor,
            Self::Stranger => &w.stranger,
        }
    }

    fn subject(self) -> &'static str {
        match self {
            Self::Admin => subjects::ADMIN,
            Self::App => subjects::APP,
            Self::Auditor => subjects::AUDITOR,
            Self::Stranger => subjects::STRANGER,
        }
    }
}

/// Every RPC of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    // kms.v1.Crypto
    Encrypt,
    Decrypt,
    ReEncrypt,
    GenerateDataKey,
    GenerateDataKeyWithoutPlaintext,
    Sign,
    Verify,
    AsymmetricDecrypt,
    GetPublicKey,
    GenerateMac,
    VerifyMac,
    GenerateRandom,
    // kms.v1.CryptoBatch
    BatchEncrypt,
    BatchDecrypt,
    BatchReEncrypt,
    BatchGenerateDataKey,
    BatchSign,
    BatchVerify,
    BatchGenerateMac,
    BatchVerifyMac,
    // kms.v1.Tokenization
    Tokenize,
    Detokenize,
    // kms.v1.KeyAdmin
    CreateKey,
    ImportPublicKey,
    GetImportParameters,
    ImportKeyMaterial,
    ExportKey,
    DescribeKey,
    ListKeys,
    RotateKey,
    SetRotationPolicy,
    EnableKey,
    DisableKey,
    MarkCompromised,
    ScheduleKeyDestruction,
    CancelKeyDestruction,
    CreateAlias,
    DeleteAlias,
    CreateGrant,
    RevokeGrant,
    ListGrants,
    AddPrincipal,
    RemovePrincipal,
    ListPrincipals,
    Approve,
    Reject,
    ListApprovals,
    // kms.v1.System
    Status,
    Init,
    Unseal,
    Seal,
    Backup,
    Restore,
    // kms.v1.Audit
    GetAuditPublicKey,
    ExportAudit,
    ExportInventory,
    // kms.v1.PasswordShield
    HashPassword,
    VerifyPassword,
    // kms.v1.RequestVerification
    VerifyRequest,
}

/// What a role gets from an initialised, unsealed KMS.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Allowed for the roles marked (admin, app, auditor); PERMISSION_DENIED for the others and
    /// for unregistered certificates.
    Roles {
        admin: bool,
        app: bool,
        auditor: bool,
    },
    /// Only meaningful before init (any CA-issued certificate may call it then); afterwards every
    /// caller, registered or not, gets this code.
    BeforeInitOnly(Code),
}

const ADMIN: Expect = Expect::Roles {
    admin: true,
    app: false,
    auditor: false,
};
const APP: Expect = Expect::Roles {
    admin: false,
    app: true,
    auditor: false,
};
const EVERYONE: Expect = Expect::Roles {
    admin: true,
    app: true,
    auditor: true,
};
const AUDITOR: Expect = Expect::Roles {
    admin: false,
    app: false,
    auditor: true,
};
const ADMIN_AUDITOR: Expect = Expect::Roles {
    admin: true,
    app: false,
    auditor: true,
};

/// The matrix: RPC, its gRPC path, and who may call it.
const MATRIX: &[(Rpc, &str, Expect)] = &[
    (Rpc::Encrypt, "/kms.v1.Crypto/Encrypt", APP),
    (Rpc::Decrypt, "/kms.v1.Crypto/Decrypt", APP),
    (Rpc::ReEncrypt, "/kms.v1.Crypto/ReEncrypt", APP),
    (Rpc::GenerateDataKey, "/kms.v1.Crypto/GenerateDataKey", APP),
    (
        Rpc::GenerateDataKeyWithoutPlaintext,
        "/kms.v1.Crypto/GenerateDataKeyWithoutPlaintext",
        APP,
    ),
    (Rpc::Sign, "/kms.v1.Crypto/Sign", APP),
    (Rpc::Verify, "/kms.v1.Crypto/Verify", APP),
    (
        Rpc::AsymmetricDecrypt,
        "/kms.v1.Crypto/AsymmetricDecrypt",
        APP,
    ),
    (Rpc::GetPublicKey, "/kms.v1.Crypto/GetPublicKey", EVERYONE),
    (Rpc::GenerateMac, "/kms.v1.Crypto/GenerateMac", APP),
    (Rpc::VerifyMac, "/kms.v1.Crypto/VerifyMac", APP),
    (Rpc::GenerateRandom, "/kms.v1.Crypto/GenerateRandom", APP),
    // A batch is refused as a whole to a role its items are refused to.
    (Rpc::BatchEncrypt, "/kms.v1.CryptoBatch/BatchEncrypt", APP),
    (Rpc::BatchDecrypt, "/kms.v1.CryptoBatch/BatchDecrypt", APP),
    (
        Rpc::BatchReEncrypt,
        "/kms.v1.CryptoBatch/BatchReEncrypt",
        APP,
    ),
    (
        Rpc::BatchGenerateDataKey,
        "/kms.v1.CryptoBatch/BatchGenerateDataKey",
        APP,
    ),
    (Rpc::BatchSign, "/kms.v1.CryptoBatch/BatchSign", APP),
    (Rpc::BatchVerify, "/kms.v1.CryptoBatch/BatchVerify", APP),
    (
        Rpc::BatchGenerateMac,
        "/kms.v1.CryptoBatch/BatchGenerateMac",
        APP,
    ),
    (
        Rpc::BatchVerifyMac,
        "/kms.v1.CryptoBatch/BatchVerifyMac",
        APP,
    ),
    // Tokens are data: apps only (detokenize is a right of its own, see `tokenize.rs`).
    (Rpc::Tokenize, "/kms.v1.Tokenization/Tokenize", APP),
    (Rpc::Detokenize, "/kms.v1.Tokenization/Detokenize", APP),
    (Rpc::CreateKey, "/kms.v1.KeyAdmin/CreateKey", ADMIN),
    (
        Rpc::ImportPublicKey,
        "/kms.v1.KeyAdmin/ImportPublicKey",
        ADMIN,
    ),
    (
        Rpc::GetImportParameters,
        "/kms.v1.KeyAdmin/GetImportParameters",
        ADMIN,
    ),
    (
        Rpc::ImportKeyMaterial,
        "/kms.v1.KeyAdmin/ImportKeyMaterial",
        ADMIN,
    ),
    (Rpc::ExportKey, "/kms.v1.KeyAdmin/ExportKey", ADMIN),
    (Rpc::DescribeKey, "/kms.v1.KeyAdmin/DescribeKey", EVERYONE),
    (Rpc::ListKeys, "/kms.v1.KeyAdmin/ListKeys", EVERYONE),
    (Rpc::RotateKey, "/kms.v1.KeyAdmin/RotateKey", ADMIN),
    (
        Rpc::SetRotationPolicy,
        "/kms.v1.KeyAdmin/SetRotationPolicy",
        ADMIN,
    ),
    (Rpc::EnableKey, "/kms.v1.KeyAdmin/EnableKey", ADMIN),
    (Rpc::DisableKey, "/kms.v1.KeyAdmin/DisableKey", ADMIN),
    (
        Rpc::MarkCompromised,
        "/kms.v1.KeyAdmin/MarkCompromised",
        ADMIN,
    ),
    (
        Rpc::ScheduleKeyDestruction,
        "/kms.v1.KeyAdmin/ScheduleKeyDestruction",
        ADMIN,
    ),
    (
        Rpc::CancelKeyDestruction,
        "/kms.v1.KeyAdmin/CancelKeyDestruction",
        ADMIN,
    ),
    (Rpc::CreateAlias, "/kms.v1.KeyAdmin/CreateAlias", ADMIN),
    (Rpc::DeleteAlias, "/kms.v1.KeyAdmin/DeleteAlias", ADMIN),
    (Rpc::CreateGrant, "/kms.v1.KeyAdmin/CreateGrant", ADMIN),
    (Rpc::RevokeGrant, "/kms.v1.KeyAdmin/RevokeGrant", ADMIN),
    (
        Rpc::ListGrants,
        "/kms.v1.KeyAdmin/ListGrants",
        ADMIN_AUDITOR,
    ),
    (Rpc::AddPrincipal, "/kms.v1.KeyAdmin/AddPrincipal", ADMIN),
    (
        Rpc::RemovePrincipal,
        "/kms.v1.KeyAdmin/RemovePrincipal",
        ADMIN,
    ),
    (
        Rpc::ListPrincipals,
        "/kms.v1.KeyAdmin/ListPrincipals",
        ADMIN_AUDITOR,
    ),
    (Rpc::Approve, "/kms.v1.KeyAdmin/Approve", ADMIN),
    (Rpc::Reject, "/kms.v1.KeyAdmin/Reject", ADMIN),
    (
        Rpc::ListApprovals,
        "/kms.v1.KeyAdmin/ListApprovals",
        ADMIN_AUDITOR,
    ),
    (Rpc::Status, "/kms.v1.System/Status", EVERYONE),
    (
        Rpc::Init,
        "/kms.v1.System/Init",
        Expect::BeforeInitOnly(Code::AlreadyExists),
    ),
    (Rpc::Unseal, "/kms.v1.System/Unseal", ADMIN),
    (Rpc::Seal, "/kms.v1.System/Seal", ADMIN),
    (Rpc::Backup, "/kms.v1.System/Backup", ADMIN),
    (
        Rpc::Restore,
        "/kms.v1.System/Restore",
        Expect::BeforeInitOnly(Code::FailedPrecondition),
    ),
    (
        Rpc::GetAuditPublicKey,
        "/kms.v1.Audit/GetAuditPublicKey",
        EVERYONE,
    ),
    (Rpc::ExportAudit, "/kms.v1.Audit/ExportAudit", AUDITOR),
    (
        Rpc::ExportInventory,
        "/kms.v1.Audit/ExportInventory",
        ADMIN_AUDITOR,
    ),
    // A password is data like any plaintext: applications only.
    (
        Rpc::HashPassword,
        "/kms.v1.PasswordShield/HashPassword",
        APP,
    ),
    (
        Rpc::VerifyPassword,
        "/kms.v1.PasswordShield/VerifyPassword",
        APP,
    ),
    // For the gateways in front of the apps: applications only.
    (
        Rpc::VerifyRequest,
        "/kms.v1.RequestVerification/VerifyRequest",
        APP,
    ),
];

/// A call on a request that does not exist: NOT_FOUND means the role check let it through.
fn missing_request<T>(result: Result<T, Status>) -> Result<(), Status> {
    match result {
        Err(s) if s.code() == Code::NotFound && s.message().contains("apr-00 not found") => Ok(()),
        Err(s) => Err(s),
        Ok(_) => panic!("apr-00 does not exist"),
    }
}

/// Keys and artefacts the data-plane calls need, all in the app's namespace.
/// A new SM4 key of the app namespace, made by the admin.
async fn fresh_key(w: &World, origin: &str, exportable: bool) -> String {
    w.admin
        .keys
        .clone()
        .create_key(v1::CreateKeyRequest {
            namespace: APP_NS.to_owned(),
            purpose: Purpose::Encrypt.into(),
            algorithm: "sm4-gcm".to_owned(),
            origin: origin.to_owned(),
            exportable,
            ..v1::CreateKeyRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .key_id
}

/// `material` wrapped by spec sm2 to a PEM public key (the outside tools' part is judged in
/// `import_export.rs`).
fn sm2_wrapped(pem: &str, material: &[u8]) -> Vec<u8> {
    use kms_core::crypto::PublicKey;
    use kms_core::crypto::transport::{WrappingSpec, wrap};
    let policy = Policy::default();
    let public = PublicKey::from_spki_pem(policy, pem).unwrap();
    let approved = policy
        .approve(kms_core::alg::Purpose::AsymmetricDecrypt, public.spec())
        .unwrap();
    wrap(&approved, WrappingSpec::Sm2, &public, material).unwrap()
}

struct Fixture {
    enc: String,
    sign: String,
    asym: String,
    mac: String,
    /// An sm4-ff1 tokenize key, and a token it made of [`MATRIX_PAN`] (version 1, no context).
    tok: String,
    token: String,
    /// For admin operations that leave the key usable (rotate, aliases, grants).
    scratch: String,
    ciphertext: Vec<u8>,
    signature: Vec<u8>,
    tag: Vec<u8>,
    asym_ciphertext: Vec<u8>,
    /// The password shield's keys, the password key's public key (SPKI DER), and a stored
    /// hash of [`MATRIX_PASSWORD`].
    password: String,
    pepper: String,
    password_public: Vec<u8>,
    stored_hash: String,
    counter: AtomicU32,
}

const MATRIX_PASSWORD: &str = "matrix-passw0rd";

/// A password sealed as a mobile app seals it (a sealed password is good once: one per call).
fn sealed_password(public_der: &[u8]) -> Vec<u8> {
    let policy = Policy::default();
    let public = PublicKey::from_spki_der(policy, public_der).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let nonce = kms_core::crypto::rng::random_public(16).unwrap();
    let plain =
        kms_core::crypto::password_hash::encode_sealed(MATRIX_PASSWORD, now, &nonce).unwrap();
    encrypt_to_public_key(
        &policy
            .approve(kms_core::alg::Purpose::Password, public.spec())
            .unwrap(),
        &public,
        plain.expose_secret(),
    )
    .unwrap()
}

impl Fixture {
    async fn new(w: &World) -> Self {
        let enc = w.create_key(APP_NS, Purpose::Encrypt, "sm4-gcm").await;
        let sign = w.create_key(APP_NS, Purpose::Sign, "sm2").await;
        let asym = w
            .create_key(APP_NS, Purpose::AsymmetricDecrypt, "sm2")
            .await;
        let mac = w.create_key(APP_NS, Purpose::Mac, "hmac-sm3").await;
        let tok = w.create_key(APP_NS, Purpose::Tokenize, "sm4-ff1").await;
        let token = match w
            .app
            .tokens
            .clone()
            .tokenize(tokenize_request(&tok.key_id))
            .await
            .unwrap()
            .into_inner()
            .results[0]
            .result
            .clone()
        {
            Some(v1::token_result::Result::Ok(t)) => t,
            Some(v1::token_result::Result::Error(e)) => panic!("{}", e.message),
            None => panic!("no result"),
        };
        // A second encryption algorithm where the policy has one (gm-only has SM4 alone).
        let second = match w.transport {
            Transport::Standard => "aes-256-gcm",
            Transport::GmOnly => "sm4-gcm",
        };
        let scratch = w.create_key(APP_NS, Purpose::Encrypt, second).await;
        let password = w.create_key(APP_NS, Purpose::Password, "sm2").await;
        let pepper = w.create_key(APP_NS, Purpose::Pepper, "hmac-sm3").await;
        let password_public = password.versions[0].public_key_der.clone();
        let mut crypto = w.app.crypto.clone();
        let ciphertext = crypto
            .encrypt(v1::EncryptRequest {
                key: enc.key_id.clone(),
                plaintext: b"matrix".to_vec(),
                context: HashMap::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .ciphertext;
        let signature = crypto
            .sign(sign_request(&sign.key_id))
            .await
            .unwrap()
            .into_inner()
            .signature;
        let tag = crypto
            .generate_mac(v1::GenerateMacRequest {
                key: mac.key_id.clone(),
                data: b"matrix".to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
            .mac;
        let public =
            PublicKey::from_spki_der(Policy::default(), &asym.versions[0].public_key_der).unwrap();
        let asym_ciphertext = encrypt_to_public_key(
            &Policy::default()
                .approve(kms_core::alg::Purpose::AsymmetricDecrypt, public.spec())
                .unwrap(),
            &public,
            b"matrix",
        )
        .unwrap();
        let stored_hash = w
            .app
            .password
            .clone()
            .hash_password(v1::HashPasswordRequest {
                password_key: password.key_id.clone(),
                pepper_key: pepper.key_id.clone(),
                sealed_password: sealed_password(&password_public),
                identifiers: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .hash;
        Self {
            password: password.key_id,
            pepper: pepper.key_id,
            password_public,
            stored_hash,
            enc: enc.key_id,
            sign: sign.key_id,
            asym: asym.key_id,
            mac: mac.key_id,
            tok: tok.key_id,
            token,
            scratch: scratch.key_id,
            ciphertext,
            signature,
            tag,
            asym_ciphertext,
            counter: AtomicU32::new(0),
        }
    }

    fn unique(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// A fresh key (so a state change by one caller does not affect the next).
    async fn fresh(&self, w: &World) -> String {
        w.create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
            .await
            .key_id
    }
}

fn sign_request(key: &str) -> v1::SignRequest {
    v1::SignRequest {
        key: key.to_owned(),
        message: b"matrix".to_vec(),
        message_type: v1::MessageType::Raw.into(),
        sm2_id: String::new(),
        rsa_scheme: String::new(),
        hash: String::new(),
    }
}

/// The one item of a batch response succeeded (the call itself was allowed).
macro_rules! one_ok {
    ($resp:expr, $oneof:ident) => {{
        let r = $resp.into_inner();
        assert_eq!(r.results.len(), 1, "one result per item");
        match &r.results[0].result {
            Some(v1::$oneof::Result::Ok(_)) => Ok(()),
            other => panic!("the batch's item failed: {other:?}"),
        }
    }};
}

/// A card number (Luhn-valid) the matrix tokenises.
const MATRIX_PAN: &str = "6222020200112233446";

fn tokenize_request(key: &str) -> v1::TokenizeRequest {
    v1::TokenizeRequest {
        key: key.to_owned(),
        format: "pan".to_owned(),
        context: HashMap::new(),
        values: vec![MATRIX_PAN.to_owned()],
    }
}

fn key(k: &str) -> v1::KeyRequest {
    v1::KeyRequest { key: k.to_owned() }
}

/// Makes one call of `rpc` as `c`, after whatever setup (as the admin) makes it valid, so that
/// an allowed caller succeeds.
async fn call(w: &World, fx: &Fixture, rpc: Rpc, c: &Clients) -> Result<(), Status> {
    let mut crypto = c.crypto.clone();
    let mut batch = c.batch.clone();
    let mut keys = c.keys.clone();
    let mut system = c.system.clone();
    let mut audit = c.audit.clone();
    let mut password = c.password.clone();
    match rpc {
        Rpc::Encrypt => crypto
            .encrypt(v1::EncryptRequest {
                key: fx.enc.clone(),
                plaintext: b"m".to_vec(),
                context: HashMap::new(),
            })
            .await
            .map(drop),
        Rpc::Decrypt => crypto
            .decrypt(v1::DecryptRequest {
                ciphertext: fx.ciphertext.clone(),
                context: HashMap::new(),
            })
            .await
            .map(drop),
        Rpc::ReEncrypt => crypto
            .re_encrypt(v1::ReEncryptRequest {
                ciphertext: fx.ciphertext.clone(),
                source_context: HashMap::new(),
                destination_key: String::new(),
                destination_context: HashMap::new(),
            })
            .await
            .map(drop),
        Rpc::GenerateDataKey | Rpc::GenerateDataKeyWithoutPlaintext => {
            let req = v1::GenerateDataKeyRequest {
                key: fx.enc.clone(),
                key_spec: "sm4".to_owned(),
                context: HashMap::new(),
                wrap_to_public_key: Vec::new(),
            };
            if rpc == Rpc::GenerateDataKey {
                crypto.generate_data_key(req).await.map(drop)
            } else {
                crypto
                    .generate_data_key_without_plaintext(req)
                    .await
                    .map(drop)
            }
        }
        Rpc::Sign => crypto.sign(sign_request(&fx.sign)).await.map(drop),
        Rpc::Verify => {
            let r = crypto
                .verify(v1::VerifyRequest {
                    key: fx.sign.clone(),
                    message: b"matrix".to_vec(),
                    message_type: v1::MessageType::Raw.into(),
                    sm2_id: String::new(),
                    rsa_scheme: String::new(),
                    hash: String::new(),
                    signature: fx.signature.clone(),
                    key_version: None,
                })
                .await?;
            assert!(r.get_ref().valid);
            Ok(())
        }
        Rpc::AsymmetricDecrypt => {
            let r = crypto
                .asymmetric_decrypt(v1::AsymmetricDecryptRequest {
                    key: fx.asym.clone(),
                    ciphertext: fx.asym_ciphertext.clone(),
                    key_version: None,
                })
                .await?;
            assert_eq!(r.get_ref().plaintext, b"matrix");
            Ok(())
        }
        Rpc::GetPublicKey => crypto
            .get_public_key(v1::GetPublicKeyRequest {
                key: fx.sign.clone(),
                key_version: None,
            })
            .await
            .map(drop),
        Rpc::GenerateMac => crypto
            .generate_mac(v1::GenerateMacRequest {
                key: fx.mac.clone(),
                data: b"m".to_vec(),
            })
            .await
            .map(drop),
        Rpc::VerifyMac => {
            let r = crypto
                .verify_mac(v1::VerifyMacRequest {
                    key: fx.mac.clone(),
                    data: b"matrix".to_vec(),
                    mac: fx.tag.clone(),
                    key_version: None,
                })
                .await?;
            assert!(r.get_ref().valid);
            Ok(())
        }
        Rpc::GenerateRandom => crypto
            .generate_random(v1::GenerateRandomRequest { length: 16 })
            .await
            .map(drop),
        Rpc::BatchEncrypt => one_ok!(
            batch
                .batch_encrypt(v1::BatchEncryptRequest {
                    items: vec![v1::EncryptRequest {
                        key: fx.enc.clone(),
                        plaintext: b"m".to_vec(),
                        context: HashMap::new(),
                    }],
                })
                .await?,
            batch_encrypt_result
        ),
        Rpc::BatchDecrypt => one_ok!(
            batch
                .batch_decrypt(v1::BatchDecryptRequest {
                    items: vec![v1::DecryptRequest {
                        ciphertext: fx.ciphertext.clone(),
                        context: HashMap::new(),
                    }],
                })
                .await?,
            batch_decrypt_result
        ),
        Rpc::BatchReEncrypt => one_ok!(
            batch
                .batch_re_encrypt(v1::BatchReEncryptRequest {
                    items: vec![v1::ReEncryptRequest {
                        ciphertext: fx.ciphertext.clone(),
                        ..v1::ReEncryptRequest::default()
                    }],
                })
                .await?,
            batch_re_encrypt_result
        ),
        Rpc::BatchGenerateDataKey => one_ok!(
            batch
                .batch_generate_data_key(v1::BatchGenerateDataKeyRequest {
                    items: vec![v1::GenerateDataKeyRequest {
                        key: fx.enc.clone(),
                        key_spec: "sm4".to_owned(),
                        ..v1::GenerateDataKeyRequest::default()
                    }],
                })
                .await?,
            batch_generate_data_key_result
        ),
        Rpc::BatchSign => one_ok!(
            batch
                .batch_sign(v1::BatchSignRequest {
                    items: vec![sign_request(&fx.sign)],
                })
                .await?,
            batch_sign_result
        ),
        Rpc::BatchVerify => one_ok!(
            batch
                .batch_verify(v1::BatchVerifyRequest {
                    items: vec![v1::VerifyRequest {
                        key: fx.sign.clone(),
                        message: b"matrix".to_vec(),
                        signature: fx.signature.clone(),
                        ..v1::VerifyRequest::default()
                    }],
                })
                .await?,
            batch_verify_result
        ),
        Rpc::BatchGenerateMac => one_ok!(
            batch
                .batch_generate_mac(v1::BatchGenerateMacRequest {
                    items: vec![v1::GenerateMacRequest {
                        key: fx.mac.clone(),
                        data: b"m".to_vec(),
                    }],
                })
                .await?,
            batch_generate_mac_result
        ),
        Rpc::BatchVerifyMac => one_ok!(
            batch
                .batch_verify_mac(v1::BatchVerifyMacRequest {
                    items: vec![v1::VerifyMacRequest {
                        key: fx.mac.clone(),
                        data: b"matrix".to_vec(),
                        mac: fx.tag.clone(),
                        key_version: None,
                    }],
                })
                .await?,
            batch_verify_mac_result
        ),
        Rpc::Tokenize => {
            let r = c
                .tokens
                .clone()
                .tokenize(tokenize_request(&fx.tok))
                .await?
                .into_inner();
            assert_eq!(r.results.len(), 1, "one result per value");
            match &r.results[0].result {
                Some(v1::token_result::Result::Ok(_)) => Ok(()),
                Some(v1::token_result::Result::Error(e)) => {
                    panic!("the value failed: {}", e.message)
                }
                None => panic!("no result"),
            }
        }
        Rpc::Detokenize => {
            let r = c
                .tokens
                .clone()
                .detokenize(v1::DetokenizeRequest {
                    key: fx.tok.clone(),
                    key_version: 1,
                    format: "pan".to_owned(),
                    context: HashMap::new(),
                    tokens: vec![fx.token.clone()],
                })
                .await?
                .into_inner();
            match &r.results[..] {
                [
                    v1::TokenResult {
                        result: Some(v1::token_result::Result::Ok(value)),
                    },
                ] => assert_eq!(value, MATRIX_PAN),
                other => panic!("{other:?}"),
            }
            Ok(())
        }
        Rpc::CreateKey => keys
            .create_key(v1::CreateKeyRequest {
                namespace: APP_NS.to_owned(),
                purpose: Purpose::Encrypt.into(),
                algorithm: "sm4-gcm".to_owned(),
                alias: String::new(),
                rotation_period_seconds: None,
                description: "made by the matrix".to_owned(),
                origin: String::new(),
                exportable: false,
            })
            .await
            .map(drop),
        Rpc::ImportPublicKey => {
            let spki = w
                .app
                .crypto
                .clone()
                .get_public_key(v1::GetPublicKeyRequest {
                    key: fx.sign.clone(),
                    key_version: None,
                })
                .await
                .unwrap()
                .into_inner()
                .public_key_der;
            keys.import_public_key(v1::ImportPublicKeyRequest {
                namespace: APP_NS.to_owned(),
                purpose: Purpose::Sign.into(),
                public_key: spki,
                ..v1::ImportPublicKeyRequest::default()
            })
            .await
            .map(drop)
        }
        Rpc::GetImportParameters => {
            let k = fresh_key(w, "external", false).await;
            keys.get_import_parameters(v1::GetImportParametersRequest {
                key: k,
                wrapping_spec: "sm2".to_owned(),
                wrapping_key_spec: String::new(),
            })
            .await
            .map(drop)
        }
        Rpc::ImportKeyMaterial => {
            // Key and parameters made by the admin; only the import is the role's.
            let k = fresh_key(w, "external", false).await;
            let p = w
                .admin
                .keys
                .clone()
                .get_import_parameters(v1::GetImportParametersRequest {
                    key: k.clone(),
                    wrapping_spec: "sm2".to_owned(),
                    wrapping_key_spec: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            keys.import_key_material(v1::ImportKeyMaterialRequest {
                key: k,
                import_token: p.import_token,
                wrapped_material: sm2_wrapped(&p.wrapping_public_key_pem, &[0x11; 16]),
                expires_at: None,
            })
            .await
            .map(drop)
        }
        Rpc::ExportKey => {
            let k = fresh_key(w, "generated", true).await;
            let recipient = w
                .app
                .crypto
                .clone()
                .get_public_key(v1::GetPublicKeyRequest {
                    key: fx.asym.clone(),
                    key_version: None,
                })
                .await
                .unwrap()
                .into_inner()
                .public_key_der;
            keys.export_key(v1::ExportKeyRequest {
                key: k,
                version: 0,
                recipient_public_key: recipient,
                wrapping_spec: "sm2".to_owned(),
            })
            .await
            .map(drop)
        }
        Rpc::DescribeKey => keys.describe_key(key(&fx.enc)).await.map(drop),
        Rpc::ListKeys => keys
            .list_keys(v1::ListKeysRequest {
                namespace: String::new(),
            })
            .await
            .map(drop),
        Rpc::RotateKey => keys.rotate_key(key(&fx.scratch)).await.map(drop),
        Rpc::SetRotationPolicy => keys
            .set_rotation_policy(v1::SetRotationPolicyRequest {
                key: fx.scratch.clone(),
                rotation_period_seconds: Some(30 * 86_400),
            })
            .await
            .map(drop),
        Rpc::EnableKey => {
            let k = fx.fresh(w).await;
            w.admin_key_op(KeyOp::Disable, &k).await;
            keys.enable_key(key(&k)).await.map(drop)
        }
        Rpc::DisableKey => {
            let k = fx.fresh(w).await;
            keys.disable_key(key(&k)).await.map(drop)
        }
        Rpc::MarkCompromised => {
            let k = fx.fresh(w).await;
            keys.mark_compromised(key(&k)).await.map(drop)
        }
        Rpc::ScheduleKeyDestruction => {
            let k = fx.fresh(w).await;
            keys.schedule_key_destruction(v1::ScheduleKeyDestructionRequest {
                key: k,
                pending_days: 7,
            })
            .await
            .map(drop)
        }
        Rpc::CancelKeyDestruction => {
            let k = fx.fresh(w).await;
            w.admin_key_op(KeyOp::ScheduleDestruction, &k).await;
            keys.cancel_key_destruction(key(&k)).await.map(drop)
        }
        Rpc::CreateAlias => keys
            .create_alias(v1::CreateAliasRequest {
                key: fx.scratch.clone(),
                alias: fx.unique("alias"),
            })
            .await
            .map(drop),
        Rpc::DeleteAlias => {
            let alias = fx.unique("doomed");
            w.admin
                .keys
                .clone()
                .create_alias(v1::CreateAliasRequest {
                    key: fx.scratch.clone(),
                    alias: alias.clone(),
                })
                .await
                .unwrap();
            keys.delete_alias(v1::DeleteAliasRequest {
                namespace: APP_NS.to_owned(),
                alias,
            })
            .await
            .map(drop)
        }
        Rpc::CreateGrant => keys
            .create_grant(v1::CreateGrantRequest {
                key: fx.scratch.clone(),
                grantee_namespace: fx.unique("grantee"),
                operations: vec!["encrypt".to_owned()],
            })
            .await
            .map(drop),
        Rpc::RevokeGrant => {
            let grantee = fx.unique("revokee");
            w.admin
                .keys
                .clone()
                .create_grant(v1::CreateGrantRequest {
                    key: fx.scratch.clone(),
                    grantee_namespace: grantee.clone(),
                    operations: vec!["decrypt".to_owned()],
                })
                .await
                .unwrap();
            keys.revoke_grant(v1::RevokeGrantRequest {
                key: fx.scratch.clone(),
                grantee_namespace: grantee,
            })
            .await
            .map(drop)
        }
        Rpc::ListGrants => keys
            .list_grants(v1::ListGrantsRequest { key: String::new() })
            .await
            .map(drop),
        Rpc::AddPrincipal => keys
            .add_principal(v1::AddPrincipalRequest {
                subject: format!("spiffe://kms.test/{}", fx.unique("added")),
                role: "app".to_owned(),
                namespace: "added".to_owned(),
            })
            .await
            .map(drop),
        Rpc::RemovePrincipal => {
            let subject = format!("spiffe://kms.test/{}", fx.unique("removed"));
            w.admin
                .keys
                .clone()
                .add_principal(v1::AddPrincipalRequest {
                    subject: subject.clone(),
                    role: "auditor".to_owned(),
                    namespace: String::new(),
                })
                .await
                .unwrap();
            keys.remove_principal(v1::RemovePrincipalRequest { subject })
                .await
                .map(drop)
        }
        Rpc::ListPrincipals => keys.list_principals(v1::Empty {}).await.map(drop),
        // Dual control is off here, so there is no request to decide: past the role check, a
        // missing request is the answer (`tests/tests/e2e/approvals.rs` has the real thing).
        Rpc::Approve => missing_request(
            keys.approve(v1::ApproveRequest {
                id: "apr-00".to_owned(),
                digest: String::new(),
            })
            .await,
        ),
        Rpc::Reject => missing_request(
            keys.reject(v1::RejectRequest {
                id: "apr-00".to_owned(),
                reason: String::new(),
            })
            .await,
        ),
        Rpc::ListApprovals => keys
            .list_approvals(v1::ListApprovalsRequest::default())
            .await
            .map(drop),
        Rpc::Status => system.status(v1::StatusRequest {}).await.map(drop),
        Rpc::Init => system
            .init(v1::InitRequest {
                shares: 3,
                threshold: 2,
                ..v1::InitRequest::default()
            })
            .await
            .map(drop),
        Rpc::Unseal => {
            // An unsealed KMS refuses every unseal (FAILED_PRECONDITION), so seal it first; the
            // caller gives the admin's share, the custodian completes (or the world unseals).
            w.admin
                .system
                .clone()
                .seal(v1::SealRequest {})
                .await
                .unwrap();
            let r = system
                .unseal(v1::UnsealRequest {
                    share: w.shares[0].clone(),
                })
                .await;
            match &r {
                Ok(progress) => {
                    assert!(progress.get_ref().sealed);
                    w.custodian
                        .system
                        .clone()
                        .unseal(v1::UnsealRequest {
                            share: w.shares[1].clone(),
                        })
                        .await
                        .unwrap();
                }
                Err(_) => w.unseal().await,
            }
            r.map(drop)
        }
        Rpc::Seal => {
            system.seal(v1::SealRequest {}).await?;
            let s = w
                .admin
                .system
                .clone()
                .status(v1::StatusRequest {})
                .await
                .unwrap();
            assert!(s.get_ref().sealed);
            w.unseal().await;
            Ok(())
        }
        Rpc::Backup => {
            let mut stream = system.backup(v1::BackupRequest {}).await?.into_inner();
            let first = stream.message().await?.expect("a backup has data");
            assert!(!first.data.is_empty());
            Ok(())
        }
        Rpc::Restore => {
            let chunk = v1::RestoreChunk {
                shares: Vec::new(),
                data: b"not a backup".to_vec(),
                ..v1::RestoreChunk::default()
            };
            system
                .restore(tokio_stream::iter(vec![chunk]))
                .await
                .map(drop)
        }
        Rpc::GetAuditPublicKey => {
            let r = audit
                .get_audit_public_key(v1::GetAuditPublicKeyRequest {})
                .await?;
            assert!(!r.get_ref().public_key_der.is_empty());
            Ok(())
        }
        Rpc::ExportAudit => {
            let mut stream = audit
                .export_audit(v1::ExportAuditRequest {})
                .await?
                .into_inner();
            let first = stream.message().await?.expect("the trail has records");
            assert!(!first.lines.is_empty());
            Ok(())
        }
        Rpc::ExportInventory => {
            let r = audit
                .export_inventory(v1::ExportInventoryRequest {})
                .await?;
            assert!(r.get_ref().json.contains(&fx.enc));
            Ok(())
        }
        Rpc::HashPassword => password
            .hash_password(v1::HashPasswordRequest {
                password_key: fx.password.clone(),
                pepper_key: fx.pepper.clone(),
                sealed_password: sealed_password(&fx.password_public),
                identifiers: Vec::new(),
            })
            .await
            .map(drop),
        Rpc::VerifyPassword => {
            let r = password
                .verify_password(v1::VerifyPasswordRequest {
                    password_key: fx.password.clone(),
                    sealed_password: sealed_password(&fx.password_public),
                    stored_hash: fx.stored_hash.clone(),
                    identifiers: Vec::new(),
                })
                .await?;
            assert!(r.get_ref().matched);
            Ok(())
        }
        // Through the role check, the request gets its verdict (a junk tag: a bad signature).
        Rpc::VerifyRequest => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let r = c
                .requests
                .clone()
                .verify_request(v1::SignedRequest {
                    key: fx.mac.clone(),
                    scheme: "hmac-sm3".to_owned(),
                    signature: vec![0; 32],
                    timestamp: now,
                    nonce: b"matrix-nonce".to_vec(),
                    method: "GET".to_owned(),
                    path: "/".to_owned(),
                    ..v1::SignedRequest::default()
                })
                .await?;
            assert_eq!(r.get_ref().verdict(), v1::RequestVerdict::BadSignature);
            Ok(())
        }
    }
}

/// The table names every method of every kms.v1 service, and nothing else.
#[test]
fn the_matrix_covers_every_rpc_of_the_api() {
    let fds = prost_types::FileDescriptorSet::decode(kms_proto::FILE_DESCRIPTOR_SET).unwrap();
    let api: BTreeSet<String> = fds
        .file
        .iter()
        .filter(|f| f.package() == "kms.v1")
        .flat_map(|f| {
            f.service.iter().flat_map(move |s| {
                s.method
                    .iter()
                    .map(move |m| format!("/{}.{}/{}", f.package(), s.name(), m.name()))
            })
        })
        .collect();
    let table: BTreeSet<String> = MATRIX.iter().map(|(_, p, _)| (*p).to_owned()).collect();
    assert_eq!(table.len(), MATRIX.len(), "a path is listed twice");
    assert_eq!(api, table, "the matrix and the API disagree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_for_every_role() {
    every_rpc_for_every_role_on(World::start().await).await;
}

/// The same matrix over RFC 8998 only (SM2 client certificates, the gm-only policy): roles do
/// not depend on the transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_for_every_role_over_rfc8998() {
    let w = World::start_over(kms_server::Settings::default(), Transport::GmOnly).await;
    every_rpc_for_every_role_on(w).await;
}

/// And over TLCP (GB/T 38636), double SM2 certificates, on the gm-only policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_for_every_role_over_tlcp() {
    let w = World::start_via(kms_server::Settings::default(), Transport::GmOnly, true).await;
    every_rpc_for_every_role_on(w).await;
}

async fn every_rpc_for_every_role_on(w: World) {
    let fx = Fixture::new(&w).await;
    let mut checked = 0;
    for &(rpc, path, expect) in MATRIX {
        for who in Who::ALL {
            let result = call(&w, &fx, rpc, who.clients(&w)).await;
            let allowed = match (expect, who) {
                (Expect::BeforeInitOnly(code), _) => {
                    let s = result.expect_err(path);
                    assert_eq!(s.code(), code, "{path} as {who:?}: {s:?}");
                    checked += 1;
                    continue;
                }
                (_, Who::Stranger) => false,
                (Expect::Roles { admin, .. }, Who::Admin) => admin,
                (Expect::Roles { app, .. }, Who::App) => app,
                (Expect::Roles { auditor, .. }, Who::Auditor) => auditor,
            };
            match result {
                Ok(()) => assert!(allowed, "{path} as {who:?} should be PERMISSION_DENIED"),
                Err(s) => {
                    assert!(!allowed, "{path} as {who:?} should work: {s:?}");
                    assert_eq!(s.code(), Code::PermissionDenied, "{path} as {who:?}: {s:?}");
                    assert!(
                        s.message().contains(who.subject()),
                        "{path} as {who:?}: the message should name the caller: {s:?}"
                    );
                    assert!(has_request_id(&s), "{path} as {who:?}: {s:?}");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, MATRIX.len() * Who::ALL.len());
    // Still unsealed and serving after the Seal row.
    let s = w
        .auditor
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!s.sealed);
    assert_eq!(s.caller_role, "auditor");
    w.stop().await;
}

/// A certificate from the right CA that names nobody (no SAN URI, no CN) gets through TLS but
/// not past identification, before and after init.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_without_subject_is_refused() {
    let w = World::start().await;
    let nobody = w.connect(&w.pki.anonymous).await;
    let r = nobody.system.clone().status(v1::StatusRequest {}).await;
    let s = expect_code(r, Code::Unauthenticated);
    assert!(s.message().contains("subject"), "{s:?}");
    let r = nobody
        .crypto
        .clone()
        .generate_random(v1::GenerateRandomRequest { length: 8 })
        .await;
    expect_err(r, Code::Unauthenticated, "subject");
    let r = nobody
        .keys
        .clone()
        .list_keys(v1::ListKeysRequest::default())
        .await;
    expect_err(r, Code::Unauthenticated, "subject");
    w.app
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap();
    w.stop().await;
}

fn encrypt_req(key: &str) -> v1::EncryptRequest {
    v1::EncryptRequest {
        key: key.to_owned(),
        plaintext: b"between namespaces".to_vec(),
        context: HashMap::new(),
    }
}

fn decrypt_req(ct: &[u8]) -> v1::DecryptRequest {
    v1::DecryptRequest {
        ciphertext: ct.to_vec(),
        context: HashMap::new(),
    }
}

async fn grant(w: &World, key_id: &str, ops: &[&str]) -> v1::GrantInfo {
    w.admin
        .keys
        .clone()
        .create_grant(v1::CreateGrantRequest {
            key: key_id.to_owned(),
            grantee_namespace: OTHER_APP_NS.to_owned(),
            operations: ops.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// An app cannot use another namespace's key — it looks exactly like a missing key (NOT_FOUND,
/// so ids cannot be probed) — until an admin grants its namespace, and then only for the
/// operations granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apps_use_other_namespaces_keys_only_as_granted() {
    let w = World::start().await;
    let k = w
        .create_key_with_alias(APP_NS, Purpose::Encrypt, "sm4-gcm", "shared")
        .await
        .key_id;
    let s = w.create_key(APP_NS, Purpose::Sign, "sm2").await.key_id;
    let mut owner = w.app.crypto.clone();
    let mut other = w.other_app.crypto.clone();
    let mut other_keys = w.other_app.keys.clone();
    let ct = owner
        .encrypt(encrypt_req(&k))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let by_alias = format!("{APP_NS}:shared");

    // No grant: nothing reaches the key, by id or by qualified alias.
    expect_code(other.encrypt(encrypt_req(&k)).await, Code::NotFound);
    expect_code(other.encrypt(encrypt_req(&by_alias)).await, Code::NotFound);
    // The bare alias resolves in the caller's own namespace, where it does not exist.
    expect_code(other.encrypt(encrypt_req("shared")).await, Code::NotFound);
    expect_code(other.decrypt(decrypt_req(&ct)).await, Code::NotFound);
    expect_code(other_keys.describe_key(key(&k)).await, Code::NotFound);
    expect_code(other.sign(sign_request(&s)).await, Code::NotFound);
    let pk = other
        .get_public_key(v1::GetPublicKeyRequest {
            key: s.clone(),
            key_version: None,
        })
        .await;
    expect_code(pk, Code::NotFound);
    let listed = other_keys
        .list_keys(v1::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.keys.is_empty(), "{listed:?}");
    // Asking for the other namespace explicitly does not widen an app's listing.
    let listed = other_keys
        .list_keys(v1::ListKeysRequest {
            namespace: APP_NS.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.keys.iter().all(|m| m.namespace == OTHER_APP_NS),
        "{listed:?}"
    );

    // Grant encrypt only.
    let g = grant(&w, &k, &["encrypt"]).await;
    assert_eq!(g.operations, ["encrypt"]);
    let mine = other.encrypt(encrypt_req(&k)).await.unwrap().into_inner();
    assert_eq!(mine.key_id, k);
    other.encrypt(encrypt_req(&by_alias)).await.unwrap();
    expect_code(other.decrypt(decrypt_req(&ct)).await, Code::NotFound);
    expect_code(
        other.decrypt(decrypt_req(&mine.ciphertext)).await,
        Code::NotFound,
    );
    expect_code(other_keys.describe_key(key(&k)).await, Code::NotFound);
    let dk = other
        .generate_data_key(v1::GenerateDataKeyRequest {
            key: k.clone(),
            ..Default::default()
        })
        .await;
    expect_code(dk, Code::NotFound);
    // The owner reads what the grantee wrote.
    let back = owner
        .decrypt(decrypt_req(&mine.ciphertext))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.plaintext, b"between namespaces");

    // A new grant replaces the old one: decrypt and describe, no longer encrypt.
    grant(&w, &k, &["decrypt", "describe"]).await;
    let opened = other.decrypt(decrypt_req(&ct)).await.unwrap().into_inner();
    assert_eq!(opened.plaintext, b"between namespaces");
    let d = other_keys.describe_key(key(&k)).await.unwrap().into_inner();
    assert_eq!(d.key.unwrap().namespace, APP_NS);
    expect_code(other.encrypt(encrypt_req(&k)).await, Code::NotFound);
    let grants = w
        .auditor
        .keys
        .clone()
        .list_grants(v1::ListGrantsRequest { key: k.clone() })
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].grantee_namespace, OTHER_APP_NS);
    assert_eq!(grants[0].operations, ["decrypt", "describe"]);

    // A sign grant on the signing key: sign works, verify was not granted.
    grant(&w, &s, &["sign"]).await;
    let sig = other.sign(sign_request(&s)).await.unwrap().into_inner();
    let verify = other
        .verify(v1::VerifyRequest {
            key: s.clone(),
            message: b"matrix".to_vec(),
            signature: sig.signature.clone(),
            ..Default::default()
        })
        .await;
    expect_code(verify, Code::NotFound);
    let ok = owner
        .verify(v1::VerifyRequest {
            key: s.clone(),
            message: b"matrix".to_vec(),
            signature: sig.signature,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.valid);

    // Revoked: back to nothing.
    w.admin
        .keys
        .clone()
        .revoke_grant(v1::RevokeGrantRequest {
            key: k.clone(),
            grantee_namespace: OTHER_APP_NS.to_owned(),
        })
        .await
        .unwrap();
    expect_code(other.decrypt(decrypt_req(&ct)).await, Code::NotFound);
    // The owner never lost anything.
    owner.decrypt(decrypt_req(&ct)).await.unwrap();
    w.stop().await;
}

/// The KMS's own audit key (namespace `kms-system`) is protected from admins: they cannot create
/// keys there, nor disable, compromise, destroy or grant it — any of which would stop the audit
/// trail's signatures. Deleting its alias has the same effect (the server finds the audit key by
/// that alias), so it must be refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_keys_alias_cannot_be_deleted() {
    let w = World::start().await;
    let r = w
        .admin
        .keys
        .clone()
        .delete_alias(v1::DeleteAliasRequest {
            namespace: kms_core::SYSTEM_NAMESPACE.to_owned(),
            alias: kms_core::AUDIT_KEY_ALIAS.to_owned(),
        })
        .await;
    let s = err(r);
    assert!(
        matches!(s.code(), Code::FailedPrecondition | Code::PermissionDenied),
        "{s:?}"
    );
    let mut audit = w.auditor.audit.clone();
    audit
        .get_audit_public_key(v1::GetAuditPublicKeyRequest {})
        .await
        .unwrap();
    audit
        .export_inventory(v1::ExportInventoryRequest {})
        .await
        .unwrap();
    let mut lines = audit
        .export_audit(v1::ExportAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(lines.message().await.unwrap().is_some());
    w.stop().await;
}

/// The other ways an admin could touch the audit key are refused, and it still signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_key_is_out_of_reach_of_admins_and_apps() {
    let w = World::start().await;
    let audit_key = format!(
        "{}:{}",
        kms_core::SYSTEM_NAMESPACE,
        kms_core::AUDIT_KEY_ALIAS
    );
    let mut keys = w.admin.keys.clone();
    for r in [
        keys.disable_key(key(&audit_key)).await,
        keys.mark_compromised(key(&audit_key)).await,
        keys.schedule_key_destruction(v1::ScheduleKeyDestructionRequest {
            key: audit_key.clone(),
            pending_days: 7,
        })
        .await,
    ] {
        expect_err(r, Code::FailedPrecondition, kms_core::SYSTEM_NAMESPACE);
    }
    let r = keys
        .create_grant(v1::CreateGrantRequest {
            key: audit_key.clone(),
            grantee_namespace: APP_NS.to_owned(),
            operations: vec!["sign".to_owned()],
        })
        .await;
    expect_err(r, Code::FailedPrecondition, kms_core::SYSTEM_NAMESPACE);
    let r = keys
        .create_key(v1::CreateKeyRequest {
            namespace: kms_core::SYSTEM_NAMESPACE.to_owned(),
            purpose: Purpose::Sign.into(),
            algorithm: "sm2".to_owned(),
            ..Default::default()
        })
        .await;
    // A reserved name: the request is what is wrong (issue 18, item 5).
    expect_err(r, Code::InvalidArgument, "reserved");
    let r = keys
        .add_principal(v1::AddPrincipalRequest {
            subject: "spiffe://kms.test/impostor".to_owned(),
            role: "app".to_owned(),
            namespace: kms_core::SYSTEM_NAMESPACE.to_owned(),
        })
        .await;
    expect_err(r, Code::InvalidArgument, "reserved");
    // No app reaches it.
    let r = w.app.crypto.clone().sign(sign_request(&audit_key)).await;
    expect_code(r, Code::NotFound);
    // And the trail still exports, signed.
    let public = w
        .auditor
        .audit
        .clone()
        .get_audit_public_key(v1::GetAuditPublicKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!public.public_key_der.is_empty());
    let mut lines = w
        .auditor
        .audit
        .clone()
        .export_audit(v1::ExportAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = lines.message().await.unwrap().unwrap();
    assert!(!first.lines.is_empty());
    w.stop().await;
}

/// Issue 18 item 6: health and reflection answer registered principals only; the gate refuses
/// an unregistered certificate before any service runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_answers_registered_principals_only() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let w = World::start().await;
    let ask = |who: &kms_tests::pki::Identity| {
        let config =
            kms_tests::net::client_config(w.pki.ca.cert_pem(), Some(who), kms_tests::net::MODERN);
        let addr = w.server.addr;
        async move {
            let mut health =
                HealthClient::new(kms_tests::net::channel(addr, config).await.unwrap());
            health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status)
        }
    };
    assert_eq!(
        ask(&w.pki.auditor).await.unwrap(),
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let refused = ask(&w.pki.stranger).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("is not a registered principal"),
        "{refused:?}"
    );
    w.stop().await;
}

fn reencrypt_req(ct: &[u8], destination: &str) -> v1::ReEncryptRequest {
    v1::ReEncryptRequest {
        ciphertext: ct.to_vec(),
        source_context: HashMap::new(),
        destination_key: destination.to_owned(),
        destination_context: HashMap::new(),
    }
}

async fn grant_to(
    w: &World,
    key_id: &str,
    grantee: &str,
    ops: &[&str],
) -> Result<tonic::Response<v1::GrantInfo>, Status> {
    w.admin
        .keys
        .clone()
        .create_grant(v1::CreateGrantRequest {
            key: key_id.to_owned(),
            grantee_namespace: grantee.to_owned(),
            operations: ops.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
}

/// Issue 18, item 5, over gRPC: a `reencrypt` grant was a `decrypt` grant — the grantee
/// re-encrypted the owner's ciphertext into its own key and decrypted that. Now that is
/// PERMISSION_DENIED; re-encryption stays within the source key's namespace, and a
/// `reencrypt-to` grant is what opens a destination elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r18_a_reencrypt_grant_is_not_a_decrypt_grant() {
    let w = World::start().await;
    let source = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let grantees_own = w
        .create_key(OTHER_APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let mut owner = w.app.crypto.clone();
    let mut grantee = w.other_app.crypto.clone();
    let ct = owner
        .encrypt(encrypt_req(&source))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    grant(&w, &source, &["reencrypt"]).await;

    // The escalation path: into the grantee's own key, then decrypt. Refused at the first step.
    let r = grantee.re_encrypt(reencrypt_req(&ct, &grantees_own)).await;
    expect_err(
        r,
        Code::PermissionDenied,
        "outside the source key's namespace",
    );
    let r = grantee.re_encrypt(reencrypt_req(&ct, &grantees_own)).await;
    expect_err(r, Code::PermissionDenied, "reencrypt-to");
    // Re-encrypting onto the source key's newest version is what the grant is for.
    let same = grantee
        .re_encrypt(reencrypt_req(&ct, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.key_id, source);
    expect_code(
        grantee.decrypt(decrypt_req(&same.ciphertext)).await,
        Code::NotFound,
    );
    let back = owner
        .decrypt(decrypt_req(&same.ciphertext))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.plaintext, b"between namespaces");

    // A `reencrypt-to` grant on the grantee's key names a destination outside the source's
    // namespace: the owner may now move its data there, and the grantee reads it — because an
    // administrator said so in those words.
    let r = owner.re_encrypt(reencrypt_req(&ct, &grantees_own)).await;
    expect_code(r, Code::NotFound);
    grant_to(&w, &grantees_own, APP_NS, &["reencrypt-to"])
        .await
        .unwrap();
    let moved = owner
        .re_encrypt(reencrypt_req(&ct, &grantees_own))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.key_id, grantees_own);
    let read = grantee
        .decrypt(decrypt_req(&moved.ciphertext))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.plaintext, b"between namespaces");
    // The grants list names the new operation.
    let grants = w
        .auditor
        .keys
        .clone()
        .list_grants(v1::ListGrantsRequest {
            key: grantees_own.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(grants[0].operations, ["reencrypt-to"]);
    w.stop().await;
}

/// Grants fit the key's purpose and cross a namespace boundary; new namespaces are lower-case
/// and not reserved; subjects are printable ASCII; a namespace goes with role app only; and
/// rotation periods are bounded. Each is INVALID_ARGUMENT naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grants_names_subjects_and_periods_are_validated() {
    let w = World::start().await;
    let enc = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let mac = w.create_key(APP_NS, Purpose::Mac, "hmac-sm3").await.key_id;
    let mut keys = w.admin.keys.clone();

    let r = grant_to(&w, &enc, OTHER_APP_NS, &["encrypt", "sign"]).await;
    expect_err(r, Code::InvalidArgument, "sign does not fit");
    let r = grant_to(&w, &mac, OTHER_APP_NS, &["decrypt"]).await;
    expect_err(
        r,
        Code::InvalidArgument,
        "it can be granted: generate-mac, verify-mac, describe",
    );
    let r = grant_to(&w, &enc, APP_NS, &["decrypt"]).await;
    expect_err(
        r,
        Code::InvalidArgument,
        "whose apps use it without a grant",
    );
    for system in ["kms-system", "KMS-System", "kms-system."] {
        let r = grant_to(&w, &enc, system, &["decrypt"]).await;
        expect_err(r, Code::InvalidArgument, "reserved");
    }
    let r = grant_to(&w, &enc, "Ledger", &["decrypt"]).await;
    expect_err(r, Code::InvalidArgument, "lower-case");
    grant_to(
        &w,
        &enc,
        OTHER_APP_NS,
        &["reencrypt", "reencrypt-to", "describe"],
    )
    .await
    .unwrap();

    // New namespaces: keys and app principals.
    for (namespace, part) in [
        ("Payments", "lower-case"),
        ("payments.", "lower-case"),
        ("KMS-SYSTEM", "reserved"),
        ("kms-system..", "reserved"),
    ] {
        let r = keys
            .create_key(v1::CreateKeyRequest {
                namespace: namespace.to_owned(),
                purpose: Purpose::Encrypt.into(),
                algorithm: "sm4-gcm".to_owned(),
                ..Default::default()
            })
            .await;
        expect_err(r, Code::InvalidArgument, part);
        let r = keys
            .add_principal(v1::AddPrincipalRequest {
                subject: "spiffe://kms.test/new-app".to_owned(),
                role: "app".to_owned(),
                namespace: namespace.to_owned(),
            })
            .await;
        expect_err(r, Code::InvalidArgument, part);
    }
    // Subjects: printable ASCII only (a Cyrillic "а" is not an "a"), no control characters.
    for subject in [
        "spiffe://kms.test/\u{0430}pp",
        "kms://app\r\nforged",
        " kms://app",
    ] {
        let r = keys
            .add_principal(v1::AddPrincipalRequest {
                subject: subject.to_owned(),
                role: "auditor".to_owned(),
                namespace: String::new(),
            })
            .await;
        expect_err(r, Code::InvalidArgument, "printable ASCII");
    }
    // A namespace with role admin or auditor is an error, not silently dropped.
    for role in ["admin", "auditor"] {
        let r = keys
            .add_principal(v1::AddPrincipalRequest {
                subject: format!("spiffe://kms.test/new-{role}"),
                role: role.to_owned(),
                namespace: APP_NS.to_owned(),
            })
            .await;
        expect_err(r, Code::InvalidArgument, "only with role app");
    }
    // Rotation periods: at most ten years.
    let r = keys
        .set_rotation_policy(v1::SetRotationPolicyRequest {
            key: enc.clone(),
            rotation_period_seconds: Some(3651 * 86_400),
        })
        .await;
    expect_err(r, Code::InvalidArgument, "1 day to 3650 days");
    keys.set_rotation_policy(v1::SetRotationPolicyRequest {
        key: enc.clone(),
        rotation_period_seconds: Some(3650 * 86_400),
    })
    .await
    .unwrap();
    w.stop().await;
}

/// Issue 18 item 6: with `health_probe` set, a plain loopback port answers gRPC health to
/// anyone local (an orchestrator's probe) and serves nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loopback_probe_port_serves_health_and_nothing_else() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let probe = free.local_addr().unwrap();
    drop(free);
    let settings = kms_server::Settings {
        health_probe: Some(probe),
        ..kms_server::Settings::default()
    };
    let w = World::start_with(settings).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{probe}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // The API is not on it.
    let r = v1::system_client::SystemClient::new(channel)
        .status(v1::StatusRequest {})
        .await;
    assert_eq!(r.unwrap_err().code(), Code::Unimplemented);
    w.stop().await;
}
