//! The fixed keys every target and seed uses (public test keys from `data/`, see its README).
//!
//! Built once per process: the RSA import runs a pairwise-consistency test, which costs far more
//! than one fuzz input.

use std::sync::LazyLock;

use kms_core::alg::{KeySpec, Purpose};
use kms_core::crypto::{self, PublicKey};
use kms_core::policy::Policy;
use kms_core::{KeyMaterial, SecretBytes};

const SM2_PKCS8: &[u8] = include_bytes!("../data/sm2_key.pk8.der");
const RSA_PKCS8: &[u8] = include_bytes!("../data/rsa2048_key.pk8.der");
/// The PKCS#8 documents themselves, as seeds of the `private_key` target.
pub const PRIVATE_KEYS: [(&str, &[u8]); 3] = [
    ("sm2", SM2_PKCS8),
    ("rsa2048", RSA_PKCS8),
    ("rsa3072", RSA3072_PKCS8),
];
const RSA3072_PKCS8: &[u8] = include_bytes!("../data/rsa3072_key.pk8.der");

/// The message the signature seeds sign and the signature targets verify.
pub const SIGNED_MESSAGE: &[u8] = b"kms fuzz corpus: signed message";

fn import(purpose: Purpose, der: &[u8]) -> KeyMaterial {
    match crypto::import_private_key(Policy::default(), purpose, der) {
        Ok(key) => key,
        Err(e) => panic!("fixture key does not import for {purpose}: {e}"),
    }
}

fn symmetric(spec: KeySpec, byte: u8, len: usize) -> KeyMaterial {
    let raw = SecretBytes::from_vec(vec![byte; len]);
    match Policy::default()
        .approve(Purpose::Encrypt, spec)
        .map_err(kms_core::Error::from)
        .and_then(|approved| KeyMaterial::import_symmetric(&approved, raw))
    {
        Ok(key) => key,
        Err(e) => panic!("fixture {spec} key does not import: {e}"),
    }
}

fn public(key: &KeyMaterial) -> PublicKey {
    match crypto::public_key_of(key) {
        Ok(p) => p,
        Err(e) => panic!("fixture public key: {e}"),
    }
}

static SM2_DECRYPT: LazyLock<KeyMaterial> =
    LazyLock::new(|| import(Purpose::AsymmetricDecrypt, SM2_PKCS8));
static SM2_SIGN: LazyLock<KeyMaterial> = LazyLock::new(|| import(Purpose::Sign, SM2_PKCS8));
static SM2_PUBLIC: LazyLock<PublicKey> = LazyLock::new(|| public(&SM2_SIGN));
static RSA_DECRYPT: LazyLock<KeyMaterial> =
    LazyLock::new(|| import(Purpose::AsymmetricDecrypt, RSA_PKCS8));
static RSA_SIGN: LazyLock<KeyMaterial> = LazyLock::new(|| import(Purpose::Sign, RSA_PKCS8));
static RSA_PUBLIC: LazyLock<PublicKey> = LazyLock::new(|| public(&RSA_SIGN));
static RSA3072_WRAP: LazyLock<KeyMaterial> =
    LazyLock::new(|| import(Purpose::AsymmetricDecrypt, RSA3072_PKCS8));
static SM4: LazyLock<KeyMaterial> = LazyLock::new(|| symmetric(KeySpec::Sm4Gcm, 0x34, 16));
static AES: LazyLock<KeyMaterial> = LazyLock::new(|| symmetric(KeySpec::Aes256Gcm, 0xa5, 32));

/// The SM2 key as an ASYMMETRIC_DECRYPT key.
#[must_use]
pub fn sm2_decrypt() -> &'static KeyMaterial {
    &SM2_DECRYPT
}

/// The SM2 key as a SIGN key; it also plays the KMS audit key for audit and inventory files.
#[must_use]
pub fn sm2_sign() -> &'static KeyMaterial {
    &SM2_SIGN
}

/// The SM2 public key (the "audit public key" of the audit and inventory targets).
#[must_use]
pub fn sm2_public() -> &'static PublicKey {
    &SM2_PUBLIC
}

/// The RSA-2048 key as an ASYMMETRIC_DECRYPT key.
#[must_use]
pub fn rsa_decrypt() -> &'static KeyMaterial {
    &RSA_DECRYPT
}

/// The RSA-2048 key as a SIGN key.
#[must_use]
pub fn rsa_sign() -> &'static KeyMaterial {
    &RSA_SIGN
}

/// The RSA-2048 public key.
#[must_use]
pub fn rsa_public() -> &'static PublicKey {
    &RSA_PUBLIC
}

/// The RSA-3072 key as an ASYMMETRIC_DECRYPT key: the KMS's import wrapping key for the RSA
/// wrapping specs.
#[must_use]
pub fn rsa3072_wrap() -> &'static KeyMaterial {
    &RSA3072_WRAP
}

/// The ENCRYPT key for a ciphertext blob's algorithm (SM4-GCM or AES-256-GCM).
#[must_use]
pub fn blob_key(spec: KeySpec) -> Option<&'static KeyMaterial> {
    match spec {
        KeySpec::Sm4Gcm => Some(&SM4),
        KeySpec::Aes256Gcm => Some(&AES),
        KeySpec::Sm2
        | KeySpec::Rsa2048
        | KeySpec::Rsa3072
        | KeySpec::Rsa4096
        | KeySpec::HmacSm3
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1 => None,
    }
}

fn sm2_signature_scheme() -> kms_core::policy::ApprovedSignature<kms_core::policy::Protect> {
    let policy = Policy::default();
    let signed = policy
        .approve(Purpose::Sign, KeySpec::Sm2)
        .and_then(|approved| {
            policy.approve_signature(
                approved,
                kms_core::alg::SignatureRequest::Sm2 {
                    id: kms_core::alg::SM2_DEFAULT_ID.to_owned(),
                },
            )
        });
    match signed {
        Ok(s) => s,
        Err(e) => panic!("policy refuses SM2 signing: {e}"),
    }
}

/// Signs `bytes` with the SM2 fixture key, default distinguishing ID: how the KMS audit key
/// signs checkpoints and inventories.
#[must_use]
pub fn sm2_sign_bytes(bytes: &[u8]) -> Vec<u8> {
    match crypto::sign(
        &sm2_signature_scheme(),
        sm2_sign(),
        crypto::Message::Raw(bytes),
    ) {
        Ok(sig) => sig,
        Err(e) => panic!("fixture SM2 signing failed: {e}"),
    }
}

/// An audit-log signer backed by the SM2 fixture key, as `Kms::audit_signer` is backed by the
/// KMS audit key.
#[must_use]
pub fn audit_signer() -> kms_core::audit::writer::Signer {
    std::sync::Arc::new(FixtureAuditKey)
}

/// The SM2 fixture key as version 1 of an audit key that is never rotated.
struct FixtureAuditKey;

impl kms_core::audit::writer::AuditSigner for FixtureAuditKey {
    fn newest(&self) -> Option<kms_core::audit::writer::SigningKey> {
        Some(kms_core::audit::writer::SigningKey {
            key_id: "00000000-0000-4000-8000-00000000f022".to_owned(),
            version: 1,
            public_key: crypto::public_key_of(sm2_sign()).ok()?,
        })
    }

    fn sign(&self, version: u32, message: &[u8]) -> Option<Vec<u8>> {
        (version == 1).then(|| sm2_sign_bytes(message))
    }
}

/// Re-signs an inventory with the SM2 fixture key, by the rule `verify_inventory` checks: the
/// signature covers the canonical JSON with the `signature` field empty.
#[must_use]
pub fn sign_inventory(mut inventory: kms_core::Inventory) -> kms_core::Inventory {
    inventory.signature = String::new();
    let bytes = match serde_json::to_vec(&inventory) {
        Ok(b) => b,
        Err(e) => panic!("inventory does not serialize: {e}"),
    };
    inventory.signature = hex::encode(sm2_sign_bytes(&bytes));
    inventory
}
