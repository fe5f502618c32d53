//! No plaintext key on disk (issue 3): after creating keys of every kind the standard policy allows
//! (and rotating some), every byte of every file of the sled store, and of a backup, is scanned for
//! each key's raw material, in raw, hex and base64 form. None may appear.
//!
//! The material is taken from outside the KMS, with the public API only: the unseal shares (which
//! an operator holds) are combined with `blahaj` into the unseal key; that opens the sealed root
//! key in the store; the root key opens each namespace KEK; each KEK opens every key version's
//! wrapped material, with the same AADs the KMS uses. Each extracted key is then checked against
//! the KMS's own output (a decrypted blob, an HMAC tag, the public key), so the needles are the
//! real keys. Also searched: the shares, the unseal key, the root key, the KEKs, the backup key,
//! plaintext data keys from `GenerateDataKey`, and every plaintext encrypted or decrypted.
//!
//! A scan that finds nothing known cannot fail, so the test also requires that the public keys,
//! the wrapped material and the key ids *are* found in the store files.
//!
//! RSA-3072/4096 are slow to generate in debug builds; set `KMS_TEST_SLOW_RSA=1` to include them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kms_core::alg::{DataKeySpec, KeySpec, Purpose, SignatureParams};
use kms_core::authz::{Principal, Role};
use kms_core::crypto::tokenize::{TokenFormat, Tokenizer, luhn_valid};
use kms_core::crypto::{Message, encrypt_to_public_key};
use kms_core::envelope::EncryptionContext;
use kms_core::hierarchy::share::Share;
use kms_core::hierarchy::wrap::{self, Derived, WrapAlg};
use kms_core::keys::record::KeyRecord;
use kms_core::keys::{KeyId, KeyRef, Namespace};
use kms_core::store::{SledStore, Store, Tree};
use kms_core::{CreateKeyRequest, DataKeyMode, KmsConfig, SecretBytes, TestKms};

const SHARE_PREFIX: &str = "kms-share-1-";
/// Materials longer than this are searched as overlapping windows, so a partial leak (an RSA
/// prime or exponent without the rest of the PKCS#8 document) is caught too.
const WINDOW: usize = 32;
const STRIDE: usize = 8;

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

fn ctx() -> EncryptionContext {
    [("purpose", "no-plaintext-on-disk")].into_iter().collect()
}

fn random(len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    getrandom::fill(&mut b).unwrap();
    b
}

/// Every (purpose, spec) the standard policy allows, RSA above 2048 bits only on request.
fn kinds(kms: &TestKms) -> Vec<(Purpose, KeySpec)> {
    let slow = std::env::var_os("KMS_TEST_SLOW_RSA").is_some();
    let mut out = Vec::new();
    for purpose in Purpose::ALL {
        for spec in KeySpec::ALL {
            let big_rsa = spec.rsa_bits().is_some_and(|b| b > 2048);
            if spec.supports(purpose) && kms.policy().allows(spec) && (slow || !big_rsa) {
                out.push((purpose, spec));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Needles and the scanner.

struct Needle {
    label: String,
    bytes: Vec<u8>,
}

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64(alphabet: &[u8; 64], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    out
}

/// The base64 characters that encode `data` wherever it sits in a larger base64 stream: for each
/// of the three alignments, the characters that depend on `data` alone.
fn base64_forms(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for shift in 0..3 {
        let mut padded = vec![0u8; shift];
        padded.extend_from_slice(data);
        for alphabet in [B64_STD, B64_URL] {
            let enc = base64(alphabet, &padded);
            // Skip characters mixing in the zero prefix, and the last group (may mix the suffix).
            let start = if shift == 0 { 0 } else { 4 };
            let end = (padded.len() / 3) * 4;
            if end > start + 8 {
                out.push(enc[start..end].to_vec());
            }
        }
    }
    out
}

/// Raw, hex (both cases) and base64 forms of `secret`, or of its windows if it is long. Windows
/// that also occur in a public key (the modulus inside an RSA private key) are left out.
fn needles_for(label: &str, secret: &[u8], public: &[Vec<u8>], out: &mut Vec<Needle>) {
    assert!(secret.len() >= 8, "{label}: too short to search for");
    let pieces: Vec<(String, &[u8])> = if secret.len() <= WINDOW + WINDOW / 2 {
        vec![(label.to_owned(), secret)]
    } else {
        (0..=secret.len() - WINDOW)
            .step_by(STRIDE)
            .map(|i| {
                (
                    format!("{label}[{i}..{}]", i + WINDOW),
                    &secret[i..i + WINDOW],
                )
            })
            .filter(|(_, w)| !public.iter().any(|p| contains(p, w)))
            .collect()
    };
    assert!(!pieces.is_empty(), "{label}: nothing private to search for");
    for (name, piece) in pieces {
        out.push(Needle {
            label: format!("{name} raw"),
            bytes: piece.to_vec(),
        });
        out.push(Needle {
            label: format!("{name} hex"),
            bytes: hex::encode(piece).into_bytes(),
        });
        out.push(Needle {
            label: format!("{name} HEX"),
            bytes: hex::encode_upper(piece).into_bytes(),
        });
        for (i, b) in base64_forms(piece).into_iter().enumerate() {
            out.push(Needle {
                label: format!("{name} base64#{i}"),
                bytes: b,
            });
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Finds every occurrence of any needle in one pass: a bitmap of hashed 4-byte prefixes filters
/// the positions, and a map from prefix to needles confirms.
struct Scanner<'a> {
    needles: &'a [Needle],
    by_prefix: HashMap<u32, Vec<usize>>,
    bitmap: Vec<u64>,
}

const BITMAP_BITS: u32 = 22;

fn prefix_hash(p: u32) -> usize {
    (p.wrapping_mul(0x9E37_79B1) >> (32 - BITMAP_BITS)) as usize
}

impl<'a> Scanner<'a> {
    fn new(needles: &'a [Needle]) -> Self {
        let mut by_prefix: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut bitmap = vec![0u64; (1 << BITMAP_BITS) / 64];
        for (i, n) in needles.iter().enumerate() {
            let p = u32::from_le_bytes(n.bytes[..4].try_into().unwrap());
            by_prefix.entry(p).or_default().push(i);
            let h = prefix_hash(p);
            bitmap[h / 64] |= 1 << (h % 64);
        }
        Self {
            needles,
            by_prefix,
            bitmap,
        }
    }

    /// `(needle index, offset)` of every hit.
    fn scan(&self, hay: &[u8]) -> Vec<(usize, usize)> {
        let mut hits = Vec::new();
        if hay.len() < 4 {
            return hits;
        }
        for i in 0..=hay.len() - 4 {
            let p = u32::from_le_bytes([hay[i], hay[i + 1], hay[i + 2], hay[i + 3]]);
            let h = prefix_hash(p);
            if self.bitmap[h / 64] & (1 << (h % 64)) == 0 {
                continue;
            }
            if let Some(list) = self.by_prefix.get(&p) {
                for &n in list {
                    if hay[i..].starts_with(&self.needles[n].bytes) {
                        hits.push((n, i));
                    }
                }
            }
        }
        hits
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let t = entry.file_type().unwrap();
        if t.is_dir() {
            files_under(&entry.path(), out);
        } else if t.is_file() {
            out.push(entry.path());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hierarchy, opened from outside.

/// Combines the shares into the unseal key, as `blahaj` (the KMS's Shamir crate) does.
/// Share text: prefix ‖ hex(set id (8) ‖ threshold (1) ‖ x (1) ‖ y ‖ checksum (8)).
fn unseal_key_from_shares(shares: &[&Share]) -> (Vec<u8>, [u8; 8]) {
    let mut set_id = None;
    let mut threshold = 0;
    let raws: Vec<blahaj::Share> = shares
        .iter()
        .map(|s| {
            let body = hex::decode(s.expose_text().strip_prefix(SHARE_PREFIX).unwrap()).unwrap();
            let id: [u8; 8] = body[..8].try_into().unwrap();
            assert!(set_id.is_none_or(|s| s == id));
            set_id = Some(id);
            threshold = body[8];
            blahaj::Share::try_from(&body[9..body.len() - 8]).unwrap()
        })
        .collect();
    let key = blahaj::Sharks(threshold).recover(&raws).unwrap();
    (key, set_id.unwrap())
}

/// An encryption key checked against a blob the KMS made: the blob is re-framed as a wrapped key
/// (`1 ‖ algorithm code ‖ nonce ‖ ciphertext ‖ tag`) and opened with `wrap::unwrap`, AAD = the
/// blob's 36-byte header ‖ the context's canonical bytes (see `envelope`).
fn open_blob_with(key: &[u8], blob: &[u8], context: &EncryptionContext) -> Vec<u8> {
    let mut framed = vec![1, blob[3]];
    framed.extend_from_slice(&blob[24..]);
    let mut aad = blob[..36].to_vec();
    aad.extend_from_slice(&context.canonical_bytes());
    wrap::forensic::unwrap(key, &aad, &framed)
        .unwrap()
        .expose_secret()
        .to_vec()
}

fn hmac_with(spec: KeySpec, key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    fn run<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = <M as KeyInit>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }
    match spec {
        KeySpec::HmacSm3 => run::<Hmac<sm3::Sm3>>(key, data),
        KeySpec::HmacSha256 => run::<Hmac<sha2::Sha256>>(key, data),
        KeySpec::HmacSha384 => run::<Hmac<sha2::Sha384>>(key, data),
        KeySpec::HmacSha512 => run::<Hmac<sha2::Sha512>>(key, data),
        KeySpec::Sm4Gcm
        | KeySpec::Aes256Gcm
        | KeySpec::Sm2
        | KeySpec::Rsa2048
        | KeySpec::Rsa3072
        | KeySpec::Rsa4096
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1 => panic!("{spec} is not an HMAC spec"),
    }
}

/// The SPKI of an extracted private key: SM2 scalar or RSA PKCS#8 document.
fn spki_of(spec: KeySpec, private: &[u8]) -> Vec<u8> {
    match spec {
        KeySpec::Sm2 => {
            use sm2::pkcs8::EncodePublicKey;
            let secret = sm2::SecretKey::from_slice(private).unwrap();
            secret
                .public_key()
                .to_public_key_der()
                .unwrap()
                .as_bytes()
                .to_vec()
        }
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
            let key = rsa::PrivateKey::from_pkcs8_der(private).unwrap();
            key.to_public_key()
                .to_public_key_der()
                .unwrap()
                .as_bytes()
                .to_vec()
        }
        KeySpec::Sm4Gcm
        | KeySpec::Aes256Gcm
        | KeySpec::HmacSm3
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1 => panic!("{spec} has no public key"),
    }
}

/// One key version's material as extracted, with what the KMS says about it.
struct Extracted {
    id: KeyId,
    version: u32,
    spec: KeySpec,
    material: Vec<u8>,
    public_key: Option<Vec<u8>>,
    wrapped: Vec<u8>,
}

/// What the test saw the KMS produce, to check extracted keys against.
#[derive(Default)]
struct Observed {
    /// (key id, version) → (blob, plaintext) from `encrypt`.
    blobs: HashMap<(KeyId, u32), (Vec<u8>, Vec<u8>)>,
    /// (key id, version) → (data, tag) from `generate_mac`.
    tags: HashMap<(KeyId, u32), (Vec<u8>, Vec<u8>)>,
    /// (key id, version) → (card number, token) from `tokenize` (format pan, this test's context).
    tokens: HashMap<(KeyId, u32), (Vec<u8>, Vec<u8>)>,
    /// Plaintexts that went in or came out of the KMS and must not be stored: label, bytes.
    secrets: Vec<(String, Vec<u8>)>,
    /// (pepper key id, version) → (password, stored hash) from `hash_password`.
    hashes: HashMap<(KeyId, u32), (String, String)>,
}

/// The password shield's keys of namespace a, each used with the other.
#[derive(Clone, Copy, Default)]
struct Shield {
    password: Option<KeyId>,
    pepper: Option<KeyId>,
}

/// Hashes a fresh password with the two keys; the password must never be stored, and the
/// hash lets the extracted pepper version be checked.
fn hash_with(kms: &TestKms, app: &Principal, password: KeyId, pepper: KeyId, seen: &mut Observed) {
    let pw = KeyRef::Id(password);
    let public = kms.get_public_key(app, &pw, None).unwrap().public_key;
    let to = kms_core::policy::Policy::default()
        .approve(Purpose::Password, public.spec())
        .unwrap();
    let secret = format!("Pw{}", hex::encode(random(12)));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let plain = kms_core::crypto::password_hash::encode_sealed(&secret, now, &random(16)).unwrap();
    let sealed = encrypt_to_public_key(&to, &public, plain.expose_secret()).unwrap();
    let out = kms
        .hash_password(app, &pw, &KeyRef::Id(pepper), &sealed, &[])
        .unwrap();
    seen.secrets.push((
        format!("password hashed with {pepper}"),
        secret.clone().into_bytes(),
    ));
    seen.hashes
        .insert((pepper, out.pepper_key_version), (secret, out.hash));
}

fn use_key(
    kms: &TestKms,
    app: &Principal,
    key: &kms_core::KeyInfo,
    asym_peer: Option<KeyId>,
    shield: Shield,
    seen: &mut Observed,
) {
    let r = KeyRef::Id(key.id);
    let v = key.current_version();
    let tag = format!("{} {} v{v}", key.spec, key.id);
    match key.purpose {
        Purpose::Encrypt => {
            let plaintext = random(32);
            let out = kms.encrypt(app, &r, &ctx(), &plaintext).unwrap();
            assert_eq!(out.key_version, v);
            let back = kms.decrypt(app, &ctx(), &out.ciphertext).unwrap();
            assert_eq!(back.plaintext.expose_secret(), plaintext);
            seen.secrets
                .push((format!("plaintext under {tag}"), plaintext.clone()));
            seen.blobs.insert((key.id, v), (out.ciphertext, plaintext));
            for spec in [DataKeySpec::Sm4, DataKeySpec::Aes256] {
                let dk = kms
                    .generate_data_key(app, &r, spec, &ctx(), DataKeyMode::WithPlaintext)
                    .unwrap();
                let plain = dk.plaintext.unwrap().expose_secret().to_vec();
                assert_eq!(plain.len(), spec.key_len());
                let back = kms.decrypt(app, &ctx(), &dk.ciphertext).unwrap();
                assert_eq!(back.plaintext.expose_secret(), plain);
                seen.secrets
                    .push((format!("{} data key under {tag}", spec.name()), plain));
            }
            // A data key encrypted to a public key the caller holds (here: a KMS key of its own).
            if let Some(peer) = asym_peer {
                let peer = KeyRef::Id(peer);
                let public = kms.get_public_key(app, &peer, None).unwrap().public_key;
                let dk = kms
                    .generate_data_key(
                        app,
                        &r,
                        DataKeySpec::Sm4,
                        &ctx(),
                        DataKeyMode::EncryptedTo(public),
                    )
                    .unwrap();
                assert!(dk.plaintext.is_none());
                let sealed = dk.encrypted_to_caller.unwrap();
                let plain = kms.asymmetric_decrypt(app, &peer, &sealed, None).unwrap();
                let back = kms.decrypt(app, &ctx(), &dk.ciphertext).unwrap();
                assert_eq!(
                    back.plaintext.expose_secret(),
                    plain.plaintext.expose_secret()
                );
                seen.secrets.push((
                    format!("data key encrypted-to-caller under {tag}"),
                    plain.plaintext.expose_secret().to_vec(),
                ));
            }
        }
        Purpose::Sign => {
            let out = kms
                .sign(
                    app,
                    &r,
                    Message::Raw(b"scan me"),
                    &SignatureParams::default(),
                )
                .unwrap();
            assert_eq!(out.key_version, v);
            let ok = kms
                .verify(
                    app,
                    &r,
                    Message::Raw(b"scan me"),
                    &out.signature,
                    &SignatureParams::default(),
                    None,
                )
                .unwrap();
            assert!(ok.valid);
        }
        Purpose::AsymmetricDecrypt => {
            let out = kms.get_public_key(app, &r, None).unwrap();
            assert_eq!(out.key_version, v);
            let public = out.public_key;
            let secret = random(32);
            let sealed = encrypt_to_public_key(
                &kms_core::policy::Policy::default()
                    .approve(Purpose::AsymmetricDecrypt, public.spec())
                    .unwrap(),
                &public,
                &secret,
            )
            .unwrap();
            let out = kms.asymmetric_decrypt(app, &r, &sealed, None).unwrap();
            assert_eq!(out.plaintext.expose_secret(), secret);
            assert_eq!(out.key_version, v);
            seen.secrets
                .push((format!("asymmetric plaintext for {tag}"), secret));
        }
        Purpose::Mac => {
            let data = random(40);
            let out = kms.generate_mac(app, &r, &data).unwrap();
            assert_eq!(out.key_version, v);
            seen.tags.insert((key.id, v), (data, out.signature));
        }
        Purpose::Password => {
            if let Some(pepper) = shield.pepper {
                hash_with(kms, app, key.id, pepper, seen);
            }
        }
        Purpose::Pepper => {
            if let Some(password) = shield.password {
                hash_with(kms, app, password, key.id, seen);
            }
        }
        Purpose::Tokenize => {
            // A fresh 19-digit card number that passes the Luhn check.
            let mut digits: Vec<u16> = random(19).iter().map(|b| u16::from(b % 10)).collect();
            while !luhn_valid(&digits) {
                digits[18] = (digits[18] + 1) % 10;
            }
            let pan: Vec<u8> = digits
                .iter()
                .map(|&d| b'0' + u8::try_from(d).unwrap())
                .collect();
            let out = kms
                .tokenize(
                    app,
                    &r,
                    TokenFormat::Pan,
                    &ctx(),
                    &[SecretBytes::copy_from_slice(&pan)],
                )
                .unwrap();
            assert_eq!(out.key_version, v);
            let token = out.results[0].as_ref().unwrap().expose_secret().to_vec();
            seen.secrets
                .push((format!("card number under {tag}"), pan.clone()));
            seen.secrets
                .push((format!("token under {tag}"), token.clone()));
            seen.tokens.insert((key.id, v), (pan, token));
        }
    }
}

/// The token an extracted tokenize key makes of `pan` (format pan, this test's context).
fn token_with(spec: KeySpec, material: &[u8], pan: &[u8]) -> Vec<u8> {
    let approved = kms_core::policy::Policy::default()
        .approve(Purpose::Tokenize, spec)
        .unwrap();
    let key =
        kms_core::KeyMaterial::import_symmetric(&approved, SecretBytes::copy_from_slice(material))
            .unwrap();
    Tokenizer::new(&approved, &key, TokenFormat::Pan, &ctx())
        .unwrap()
        .tokenize(pan)
        .unwrap()
        .expose_secret()
        .to_vec()
}

#[test]
fn no_plaintext_key_material_in_store_files_or_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let backup_path = tmp.path().join("kms.backup");
    let store = Arc::new(SledStore::open(&store_dir).unwrap());
    let kms = TestKms::open(Arc::clone(&store) as Arc<dyn Store>, KmsConfig::default());
    let init = kms.init(3, 2, "admin").unwrap();
    kms.unseal_with(&init.shares[0]).unwrap();
    kms.unseal_with(&init.shares[2]).unwrap();
    assert!(!kms.is_sealed());
    let admin = kms.principal("admin").unwrap().unwrap();
    let app = kms
        .add_principal(&admin, "app-a", Role::App { namespace: ns("a") })
        .unwrap();
    let app_b = kms
        .add_principal(&admin, "app-b", Role::App { namespace: ns("b") })
        .unwrap();

    // Keys of every kind in namespace a, and one in b (a second KEK).
    let mut keys = Vec::new();
    let kinds = kinds(&kms);
    for (namespace, (purpose, spec)) in kinds
        .iter()
        .map(|k| ("a", *k))
        .chain([("b", (Purpose::Encrypt, KeySpec::Sm4Gcm))])
    {
        let info = kms
            .create_key(
                &admin,
                CreateKeyRequest {
                    namespace: ns(namespace),
                    purpose,
                    spec,
                    alias: None,
                    rotation_period: None,
                    description: format!("{purpose} {spec}"),
                },
            )
            .unwrap();
        keys.push(info);
    }
    let asym_peer = keys
        .iter()
        .find(|k| k.purpose == Purpose::AsymmetricDecrypt && k.spec == KeySpec::Sm2)
        .map(|k| k.id);
    let in_a = |purpose| {
        keys.iter()
            .find(|k| k.purpose == purpose && k.namespace == ns("a"))
            .map(|k| k.id)
    };
    let shield = Shield {
        password: in_a(Purpose::Password),
        pepper: in_a(Purpose::Pepper),
    };
    assert!(shield.password.is_some() && shield.pepper.is_some());
    let mut seen = Observed::default();
    let principal_for = |k: &kms_core::KeyInfo| {
        if k.namespace == ns("a") {
            app.clone()
        } else {
            app_b.clone()
        }
    };
    for k in &keys {
        let peer = asym_peer.filter(|_| k.namespace == ns("a"));
        use_key(&kms, &principal_for(k), k, peer, shield, &mut seen);
    }
    // Rotate every other key (the first twice), and use the new versions.
    for (i, k) in keys.iter_mut().enumerate().filter(|(i, _)| i % 2 == 0) {
        let times = if i == 0 { 2 } else { 1 };
        for _ in 0..times {
            *k = kms.rotate_key(&admin, &KeyRef::Id(k.id)).unwrap();
            let peer = asym_peer.filter(|_| k.namespace == ns("a"));
            use_key(&kms, &principal_for(k), k, peer, shield, &mut seen);
        }
    }

    // Open the hierarchy from outside, with the shares an operator holds.
    let (unseal, set_id) = unseal_key_from_shares(&[&init.shares[1], &init.shares[2]]);
    let sealed_root = store.get(Tree::Seal, b"root").unwrap().unwrap();
    let root = wrap::forensic::unwrap(&unseal, &wrap::root_aad(&set_id), &sealed_root)
        .expect("the unseal key from the shares opens the sealed root key");
    let mut keks: HashMap<Namespace, Vec<u8>> = HashMap::new();
    for (k, v) in store.scan_prefix(Tree::Namespaces, &[]).unwrap() {
        // Stored names, `kms-system` among them: the rule for names that exist.
        let n = Namespace::existing(std::str::from_utf8(&k).unwrap()).unwrap();
        let kek = wrap::forensic::unwrap(root.expose_secret(), &wrap::kek_aad(&n), &v).unwrap();
        keks.insert(n, kek.expose_secret().to_vec());
    }
    assert!(keks.contains_key(&ns("a")) && keks.contains_key(&ns("b")));
    let mut extracted = Vec::new();
    let mut records = Vec::new();
    // Each key tree once: tokenize keys share the encrypt keys' tree, password keys and
    // peppers the asymmetric-decrypt and MAC keys' trees.
    for tree in KeyRecord::KEY_TREES {
        for (_, bytes) in store.scan_prefix(tree, &[]).unwrap() {
            let r = KeyRecord::decode(&bytes).unwrap();
            let kek = SecretBytes::copy_from_slice(&keks[&r.namespace]);
            for v in &r.versions {
                let wrapped = v.wrapped.clone().unwrap();
                let aad = wrap::key_aad(r.id, v.version, &r.namespace, r.purpose, r.spec);
                let material = wrap::forensic::unwrap(kek.expose_secret(), &aad, &wrapped).unwrap();
                extracted.push(Extracted {
                    id: r.id,
                    version: v.version,
                    spec: r.spec,
                    material: material.expose_secret().to_vec(),
                    public_key: v.public_key.clone(),
                    wrapped,
                });
            }
            records.push(r);
        }
    }
    // The store may also hold keys the KMS keeps for itself (they are searched for too).
    let ours = |id: KeyId| keys.iter().any(|k| k.id == id);
    let expected_versions: usize = keys.iter().map(|k| k.versions.len()).sum();
    assert_eq!(records.iter().filter(|r| ours(r.id)).count(), keys.len());
    assert_eq!(
        extracted.iter().filter(|e| ours(e.id)).count(),
        expected_versions
    );

    // Each extracted key is the real one: it opens the KMS's blobs, reproduces its tags, or
    // yields its public key. Every version of every key this test made is checked.
    for e in &extracted {
        let at = format!("{} {} v{}", e.spec, e.id, e.version);
        let checked = match e.spec {
            KeySpec::Sm4Gcm | KeySpec::Aes256Gcm => seen
                .blobs
                .get(&(e.id, e.version))
                .map(|(blob, plaintext)| {
                    let opened = open_blob_with(&e.material, blob, &ctx());
                    assert_eq!(&opened, plaintext, "{at}");
                })
                .is_some(),
            KeySpec::HmacSm3 | KeySpec::HmacSha256 | KeySpec::HmacSha384 | KeySpec::HmacSha512 => {
                let tag = seen.tags.get(&(e.id, e.version)).map(|(data, tag)| {
                    assert_eq!(&hmac_with(e.spec, &e.material, data), tag, "{at}");
                });
                // A pepper: its HMAC of the password, hashed as the stored hash says, is the
                // stored hash.
                let hash = seen
                    .hashes
                    .get(&(e.id, e.version))
                    .map(|(password, stored)| {
                        use kms_core::crypto::password_hash::{StoredHash, derive};
                        let parsed = StoredHash::parse(stored).unwrap();
                        let peppered = SecretBytes::from_vec(hmac_with(
                            e.spec,
                            &e.material,
                            password.as_bytes(),
                        ));
                        let approved = kms.policy().approve_password_verify(parsed.cost.alg());
                        let again = derive(
                            &approved,
                            parsed.cost,
                            &peppered,
                            &parsed.salt,
                            parsed.hash.len(),
                        )
                        .unwrap();
                        assert_eq!(again.expose_secret(), parsed.hash.as_slice(), "{at}");
                    });
                // An hmac-sm3 key of purpose tokenize makes pseudonyms instead.
                tag.or(hash).is_some()
                    || seen
                        .tokens
                        .get(&(e.id, e.version))
                        .map(|(pan, token)| {
                            assert_eq!(&token_with(e.spec, &e.material, pan), token, "{at}");
                        })
                        .is_some()
            }
            KeySpec::Sm4Ff1 | KeySpec::Aes256Ff1 => seen
                .tokens
                .get(&(e.id, e.version))
                .map(|(pan, token)| {
                    assert_eq!(&token_with(e.spec, &e.material, pan), token, "{at}");
                })
                .is_some(),
            KeySpec::Sm2 | KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let public = e.public_key.as_ref().unwrap();
                assert_eq!(&spki_of(e.spec, &e.material), public, "{at}");
                true
            }
        };
        assert!(checked || !ours(e.id), "{at}: not cross-checked");
    }

    // What must never be stored in the clear.
    let publics: Vec<Vec<u8>> = extracted
        .iter()
        .filter_map(|e| e.public_key.clone())
        .collect();
    let mut needles = Vec::new();
    for e in &extracted {
        let label = format!("{} {} v{} material", e.spec, e.id, e.version);
        needles_for(&label, &e.material, &publics, &mut needles);
    }
    needles_for("unseal key", &unseal, &[], &mut needles);
    needles_for("root key", root.expose_secret(), &[], &mut needles);
    for (n, kek) in &keks {
        needles_for(&format!("KEK of {n}"), kek, &[], &mut needles);
    }
    // The keys derived from the root, computed here from the extracted root key.
    let backup_key =
        wrap::forensic::derive(root.expose_secret(), Derived::BackupKey(WrapAlg::SM4_GCM)).unwrap();
    let context_key =
        wrap::forensic::derive(root.expose_secret(), Derived::AuditContextHmac).unwrap();
    needles_for(
        "audit context HMAC key",
        context_key.expose_secret(),
        &[],
        &mut needles,
    );
    needles_for("backup key", backup_key.expose_secret(), &[], &mut needles);
    for (i, s) in init.shares.iter().enumerate() {
        needles_for(
            &format!("share {i}"),
            s.expose_text().as_bytes(),
            &[],
            &mut needles,
        );
        let body = hex::decode(s.expose_text().strip_prefix(SHARE_PREFIX).unwrap()).unwrap();
        needles_for(
            &format!("share {i} y"),
            &body[10..body.len() - 8],
            &[],
            &mut needles,
        );
    }
    for (label, s) in &seen.secrets {
        needles_for(label, s, &[], &mut needles);
    }

    // What must be there: the scan is only meaningful if it finds the known public bytes.
    let mut present = Vec::new();
    for e in &extracted {
        let at = format!("{} {} v{}", e.spec, e.id, e.version);
        present.push(Needle {
            label: format!("wrapped {at}"),
            bytes: hex::encode(&e.wrapped).into_bytes(),
        });
        if let Some(p) = &e.public_key {
            present.push(Needle {
                label: format!("public key {at}"),
                bytes: hex::encode(p).into_bytes(),
            });
        }
    }
    for k in &keys {
        present.push(Needle {
            label: format!("key id {}", k.id),
            bytes: k.id.as_bytes().to_vec(),
        });
    }

    // The backup, written to a file as an operator would.
    let backup = kms.backup(&admin).unwrap();
    fs::write(&backup_path, &backup).unwrap();
    let backup_present = [Needle {
        label: "sealed root key (backup header)".into(),
        bytes: hex::encode(&sealed_root).into_bytes(),
    }];

    // Close everything, and wait for sled to let go of the directory (a reopen waits for the
    // lock), so the files are complete.
    drop(kms);
    drop(store);
    drop(SledStore::open(&store_dir).unwrap());

    let mut files = Vec::new();
    files_under(&store_dir, &mut files);
    let mut scanned = Vec::new();
    let mut store_bytes = 0;
    for f in &files {
        let bytes = fs::read(f).unwrap();
        store_bytes += bytes.len();
        scanned.push((f.clone(), bytes));
    }
    scanned.push((backup_path.clone(), fs::read(&backup_path).unwrap()));
    assert!(store_bytes > 0, "no store bytes to scan");

    let secret_scanner = Scanner::new(&needles);
    let present_scanner = Scanner::new(&present);
    let backup_scanner = Scanner::new(&backup_present);
    let mut leaks = Vec::new();
    let mut found = vec![false; present.len()];
    let mut backup_found = false;
    for (path, bytes) in &scanned {
        for (n, off) in secret_scanner.scan(bytes) {
            leaks.push(format!(
                "{} at {}:{off}",
                needles[n].label,
                path.strip_prefix(tmp.path()).unwrap().display()
            ));
        }
        if *path == backup_path {
            backup_found |= !backup_scanner.scan(bytes).is_empty();
        } else {
            for (n, _) in present_scanner.scan(bytes) {
                found[n] = true;
            }
        }
    }
    let missing: Vec<&str> = present
        .iter()
        .zip(&found)
        .filter(|(_, f)| !**f)
        .map(|(n, _)| n.label.as_str())
        .collect();
    eprintln!(
        "scanned {} store files ({store_bytes} bytes) and a {}-byte backup for {} needles \
         ({} keys made here + {} of the KMS's own, {} versions, {} KEKs, kinds: {})",
        files.len(),
        backup.len(),
        needles.len(),
        keys.len(),
        records.len() - keys.len(),
        extracted.len(),
        keks.len(),
        kinds
            .iter()
            .map(|(p, s)| format!("{p}/{s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        missing.is_empty(),
        "the scan missed bytes known to be stored, so it proves nothing: {missing:#?}"
    );
    assert!(backup_found, "the scan missed the backup's clear header");
    assert!(leaks.is_empty(), "secrets on disk:\n{}", leaks.join("\n"));
}

/// The scanner finds what it should in every form, so the test above cannot pass by not looking.
#[test]
fn scanner_finds_every_form() {
    let secret = random(40);
    let long = random(300);
    let mut needles = Vec::new();
    needles_for("short", &secret, &[], &mut needles);
    needles_for("long", &long, &[long[..100].to_vec()], &mut needles);
    let scanner = Scanner::new(&needles);
    let mut embeds: Vec<Vec<u8>> = vec![
        secret.clone(),
        hex::encode(&secret).into_bytes(),
        hex::encode_upper(&secret).into_bytes(),
    ];
    for prefix in 0..3 {
        let mut data = random(prefix);
        data.extend_from_slice(&secret);
        data.extend_from_slice(&random(2));
        embeds.push(base64(B64_STD, &data));
        embeds.push(base64(B64_URL, &data));
    }
    for e in embeds {
        let mut hay = random(1000);
        hay.extend_from_slice(&e);
        hay.extend_from_slice(&random(1000));
        assert!(
            scanner
                .scan(&hay)
                .iter()
                .any(|(n, _)| needles[*n].label.starts_with("short")),
            "missed {}",
            String::from_utf8_lossy(&e)
        );
    }
    // A private slice of a long secret (past the public part) is found on its own.
    let mut hay = random(500);
    hay.extend_from_slice(&long[150..190]);
    assert!(
        scanner
            .scan(&hay)
            .iter()
            .any(|(n, _)| needles[*n].label.starts_with("long"))
    );
    // The public part alone is not a needle.
    let mut hay = random(500);
    hay.extend_from_slice(&long[..100]);
    assert!(
        !scanner
            .scan(&hay)
            .iter()
            .any(|(n, _)| needles[*n].label.starts_with("long"))
    );
    assert!(scanner.scan(&random(5000)).is_empty());
}
