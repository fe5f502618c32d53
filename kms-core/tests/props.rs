//! Property tests (proptest): the ciphertext blob, algorithm-name refusals (ALG-3), the GM-only
//! policy (ALG-4), and sign/verify, encrypt/decrypt and MAC round trips.
//!
//! Asymmetric keys are generated once per test binary (RSA generation is slow in a debug build)
//! and shared by every case.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use kms_core::alg::{DigestAlg, KeySpec, Purpose, RsaSigScheme, SignatureRequest};
use kms_core::crypto::{self, Message, PublicKey};
use kms_core::envelope::{self, EncryptionContext, HEADER_LEN, Header, MIN_LEN};
use kms_core::policy::names::{parse_digest, parse_key_spec};
use kms_core::policy::{Policy, PolicyError, PolicyMode};
use kms_core::{CryptoError, Error, InvalidInput, KeyMaterial};
use proptest::prelude::*;
use proptest::sample::Index;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Keys, made once
// ---------------------------------------------------------------------------------------------

fn generate(purpose: Purpose, spec: KeySpec) -> KeyMaterial {
    let approved = Policy::default().approve(purpose, spec).unwrap();
    crypto::generate(&approved).unwrap()
}

static SM4_KEY: LazyLock<KeyMaterial> =
    LazyLock::new(|| generate(Purpose::Encrypt, KeySpec::Sm4Gcm));
static SM4_KEY_2: LazyLock<KeyMaterial> =
    LazyLock::new(|| generate(Purpose::Encrypt, KeySpec::Sm4Gcm));
static AES_KEY: LazyLock<KeyMaterial> =
    LazyLock::new(|| generate(Purpose::Encrypt, KeySpec::Aes256Gcm));
static SM2_SIGN: LazyLock<KeyMaterial> = LazyLock::new(|| generate(Purpose::Sign, KeySpec::Sm2));
static SM2_DECRYPT: LazyLock<KeyMaterial> =
    LazyLock::new(|| generate(Purpose::AsymmetricDecrypt, KeySpec::Sm2));
static RSA_SIGN: LazyLock<KeyMaterial> =
    LazyLock::new(|| generate(Purpose::Sign, KeySpec::Rsa2048));
static RSA_DECRYPT: LazyLock<KeyMaterial> =
    LazyLock::new(|| generate(Purpose::AsymmetricDecrypt, KeySpec::Rsa2048));

fn envelope_key(spec: KeySpec) -> &'static KeyMaterial {
    match spec {
        KeySpec::Sm4Gcm => &SM4_KEY,
        KeySpec::Aes256Gcm => &AES_KEY,
        other @ (KeySpec::Sm2
        | KeySpec::Rsa2048
        | KeySpec::Rsa3072
        | KeySpec::Rsa4096
        | KeySpec::HmacSm3
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512
        | KeySpec::Sm4Ff1
        | KeySpec::Aes256Ff1) => panic!("{other} is not an envelope spec"),
    }
}

fn envelope_spec() -> impl Strategy<Value = KeySpec> {
    prop_oneof![Just(KeySpec::Sm4Gcm), Just(KeySpec::Aes256Gcm)]
}

fn context() -> impl Strategy<Value = EncryptionContext> {
    proptest::collection::btree_map(".{0,12}", ".{0,24}", 0..6).prop_map(EncryptionContext::new)
}

/// ASCII contexts whose keys and values are never empty, so one byte can always be changed.
fn ascii_context() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map("[ -~]{1,8}", "[ -~]{1,16}", 1..6)
}

fn seal(spec: KeySpec, id: Uuid, version: u32, ctx: &EncryptionContext, pt: &[u8]) -> Vec<u8> {
    let approved = Policy::default().approve(Purpose::Encrypt, spec).unwrap();
    envelope::seal(&approved, envelope_key(spec), id, version, ctx, pt).unwrap()
}

/// Parses and opens `blob` with the key its header names (or `key` if given).
fn open_with(key: &KeyMaterial, blob: &[u8], ctx: &EncryptionContext) -> Result<Vec<u8>, Error> {
    let env = envelope::parse(blob)?;
    let open = Policy::default()
        .approve_open(Purpose::Encrypt, key.spec())
        .unwrap();
    envelope::open(&open, key, &env, ctx).map(|pt| pt.expose_secret().to_vec())
}

fn open(spec: KeySpec, blob: &[u8], ctx: &EncryptionContext) -> Result<Vec<u8>, Error> {
    open_with(envelope_key(spec), blob, ctx)
}

/// Whether `r` is the one opaque failure of authenticated decryption (no oracle).
fn decryption_failed(r: &Result<Vec<u8>, Error>) -> bool {
    matches!(r, Err(Error::Crypto(CryptoError::DecryptionFailed)))
}

/// Whether `r` is the parser's refusal of a malformed blob, saying `problem`.
fn malformed(r: &Result<Vec<u8>, Error>, problem: &str) -> bool {
    matches!(
        r,
        Err(Error::InvalidArgument(InvalidInput { field: "ciphertext", problem: p })) if p == problem
    )
}

/// How opening `blob` with bit `bit` of byte `i` flipped must fail: the parser names a broken
/// magic, format version, algorithm code or a zero key version (no flip of one bit turns code 1
/// into 2 or back); any other change fails authentication, since the header is AAD.
fn refused_after_flip(r: &Result<Vec<u8>, Error>, blob: &[u8], i: usize, bit: u8) -> bool {
    let mut version = [0u8; 4];
    version.copy_from_slice(&blob[20..24]);
    if (20..24).contains(&i) {
        version[i - 20] ^= 1 << bit;
    }
    match i {
        0 | 1 => malformed(r, "not a KMS ciphertext (bad magic)"),
        2 => malformed(r, "unsupported ciphertext format version"),
        3 => malformed(r, "unknown algorithm code"),
        20..=23 if version == [0; 4] => malformed(r, "key version 0 does not exist"),
        _ => decryption_failed(r),
    }
}

// ---------------------------------------------------------------------------------------------
// Envelope
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn envelope_round_trips(
        spec in envelope_spec(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..4096),
        ctx in context(),
        id in any::<[u8; 16]>().prop_map(Uuid::from_bytes),
        version in 1..=u32::MAX,
    ) {
        let blob = seal(spec, id, version, &ctx, &plaintext);
        prop_assert_eq!(blob.len(), HEADER_LEN + plaintext.len() + 16);
        let env = envelope::parse(&blob).unwrap();
        prop_assert_eq!(env.header.spec, spec);
        prop_assert_eq!(env.header.key_id, id);
        prop_assert_eq!(env.header.key_version, version);
        prop_assert_eq!(&env.header.encode()[..], &blob[..HEADER_LEN]);
        prop_assert_eq!(&open(spec, &blob, &ctx).unwrap(), &plaintext);
        // A fresh nonce each time: sealing twice never gives the same blob.
        let again = seal(spec, id, version, &ctx, &plaintext);
        prop_assert_ne!(&again[24..36], &blob[24..36]);
        prop_assert_eq!(open(spec, &again, &ctx).unwrap(), plaintext);
    }

    #[test]
    fn envelope_any_bit_flip_fails(
        spec in envelope_spec(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..256),
        ctx in context(),
        at in any::<Index>(),
        bit in 0u8..8,
    ) {
        let blob = seal(spec, Uuid::new_v4(), 1, &ctx, &plaintext);
        let i = at.index(blob.len());
        let mut bad = blob.clone();
        bad[i] ^= 1 << bit;
        let region = match i {
            0..=23 => "header",
            24..=35 => "nonce",
            _ if i >= blob.len() - 16 => "tag",
            _ => "ciphertext",
        };
        let r = open(spec, &bad, &ctx);
        prop_assert!(
            refused_after_flip(&r, &blob, i, bit),
            "flipped bit {} of byte {} ({}): {:?}", bit, i, region, r.err()
        );
        prop_assert_eq!(open(spec, &blob, &ctx).unwrap(), plaintext);
    }

    #[test]
    fn envelope_every_bit_flip_of_a_short_blob_fails(
        spec in envelope_spec(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let ctx: EncryptionContext = [("tenant", "a")].into_iter().collect();
        let blob = seal(spec, Uuid::new_v4(), 7, &ctx, &plaintext);
        for i in 0..blob.len() {
            for bit in 0..8 {
                let mut bad = blob.clone();
                bad[i] ^= 1 << bit;
                let r = open(spec, &bad, &ctx);
                prop_assert!(refused_after_flip(&r, &blob, i, bit), "byte {} bit {}: {:?}", i, bit, r.err());
            }
        }
    }

    #[test]
    fn envelope_context_one_byte_different_fails(
        spec in envelope_spec(),
        pairs in ascii_context(),
        which in any::<Index>(),
        in_key in any::<bool>(),
        pos in any::<Index>(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let ctx = EncryptionContext::new(pairs.clone());
        let blob = seal(spec, Uuid::new_v4(), 1, &ctx, &plaintext);
        let (k, v) = pairs.iter().nth(which.index(pairs.len())).unwrap();
        let mut changed = pairs.clone();
        if in_key {
            let mut bytes = k.clone().into_bytes();
            let p = pos.index(bytes.len());
            bytes[p] ^= 0x01; // ASCII stays ASCII
            let value = changed.remove(k).unwrap();
            changed.insert(String::from_utf8(bytes).unwrap(), value);
        } else {
            let mut bytes = v.clone().into_bytes();
            let p = pos.index(bytes.len());
            bytes[p] ^= 0x01;
            changed.insert(k.clone(), String::from_utf8(bytes).unwrap());
        }
        let changed = EncryptionContext::new(changed);
        prop_assert_ne!(&changed, &ctx);
        let r = open(spec, &blob, &changed);
        prop_assert!(decryption_failed(&r), "{:?}", r.err());
        prop_assert_eq!(open(spec, &blob, &ctx).unwrap(), plaintext);
    }

    #[test]
    fn envelope_context_extra_or_missing_pair_fails(
        spec in envelope_spec(),
        pairs in proptest::collection::btree_map(".{0,8}", ".{0,16}", 0..5),
        extra_key in ".{0,8}",
        extra_value in ".{0,16}",
        plaintext in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        prop_assume!(!pairs.contains_key(&extra_key));
        let small = EncryptionContext::new(pairs.clone());
        let mut bigger = pairs;
        bigger.insert(extra_key, extra_value);
        let big = EncryptionContext::new(bigger);

        let blob = seal(spec, Uuid::new_v4(), 1, &small, &plaintext);
        let r = open(spec, &blob, &big);
        prop_assert!(decryption_failed(&r), "extra pair: {:?}", r.err());
        let blob = seal(spec, Uuid::new_v4(), 1, &big, &plaintext);
        let r = open(spec, &blob, &small);
        prop_assert!(decryption_failed(&r), "missing pair: {:?}", r.err());
        prop_assert_eq!(open(spec, &blob, &big).unwrap(), plaintext);
    }

    #[test]
    fn envelope_wrong_key_fails(
        plaintext in proptest::collection::vec(any::<u8>(), 0..128),
        ctx in context(),
    ) {
        let blob = seal(KeySpec::Sm4Gcm, Uuid::new_v4(), 1, &ctx, &plaintext);
        let r = open_with(&SM4_KEY_2, &blob, &ctx);
        prop_assert!(decryption_failed(&r), "{:?}", r.err());
        // A key of the other algorithm is refused before any decryption, with the same error.
        let r = open_with(&AES_KEY, &blob, &ctx);
        prop_assert!(decryption_failed(&r), "{:?}", r.err());
        let blob = seal(KeySpec::Aes256Gcm, Uuid::new_v4(), 1, &ctx, &plaintext);
        let r = open_with(&SM4_KEY, &blob, &ctx);
        prop_assert!(decryption_failed(&r), "{:?}", r.err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn envelope_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        let r = envelope::parse(&bytes).map(|_| Vec::new());
        if bytes.len() < MIN_LEN {
            prop_assert!(malformed(&r, "too short to be a KMS ciphertext"), "{:?}", r);
        }
    }

    #[test]
    fn envelope_parse_of_well_formed_headers(
        code in prop_oneof![Just(1u8), Just(2u8), any::<u8>()],
        version_byte in prop_oneof![Just(1u8), any::<u8>()],
        key_version in prop_oneof![Just(0u32), 1..=u32::MAX],
        middle in any::<[u8; 32]>(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut middle = middle;
        middle[16..20].copy_from_slice(&key_version.to_be_bytes());
        let mut blob = vec![b'K', b'M', version_byte, code];
        blob.extend_from_slice(&middle);
        blob.extend_from_slice(&body);
        let r = envelope::parse(&blob);
        // The parser's checks, in its order; the first that fails names the refusal.
        let refusal = if blob.len() < MIN_LEN {
            Some("too short to be a KMS ciphertext")
        } else if version_byte != 1 {
            Some("unsupported ciphertext format version")
        } else if !matches!(code, 1 | 2) {
            Some("unknown algorithm code")
        } else if key_version == 0 {
            Some("key version 0 does not exist")
        } else {
            None
        };
        match (r, refusal) {
            (Ok(env), None) => {
                prop_assert_eq!(&env.header.encode()[..], &blob[..HEADER_LEN]);
                prop_assert_eq!(env.header.key_version, key_version);
            }
            (r, Some(problem)) => {
                let r = r.map(|_| Vec::new());
                prop_assert!(
                    malformed(&r, problem),
                    "code {} version {} key version {} len {}: {:?}, wanted {:?}",
                    code, version_byte, key_version, blob.len(), r, problem
                );
            }
            (Err(e), None) => prop_assert!(false, "code {} version {} len {}: {}", code, version_byte, blob.len(), e),
        }
    }

    #[test]
    fn envelope_parse_of_truncated_blobs_fails(
        spec in envelope_spec(),
        plaintext in proptest::collection::vec(any::<u8>(), 0..32),
        cut in any::<Index>(),
    ) {
        let blob = seal(spec, Uuid::new_v4(), 1, &EncryptionContext::default(), &plaintext);
        let keep = cut.index(MIN_LEN);
        let r = envelope::parse(&blob[..keep]).map(|_| Vec::new());
        prop_assert!(malformed(&r, "too short to be a KMS ciphertext"), "{:?}", r);
        // Cutting into the body (but not below MIN_LEN) parses, and fails to open.
        if blob.len() > MIN_LEN {
            let keep = MIN_LEN + cut.index(blob.len() - MIN_LEN);
            let r = open(spec, &blob[..keep], &EncryptionContext::default());
            prop_assert!(decryption_failed(&r), "{:?}", r.err());
        }
    }
}

#[test]
fn envelope_header_encoding_is_as_documented() {
    let id = Uuid::from_bytes([0x11; 16]);
    let h = Header {
        spec: KeySpec::Aes256Gcm,
        key_id: id,
        key_version: 0x0102_0304,
        nonce: [0xee; 12],
    }
    .encode();
    assert_eq!(&h[0..2], b"KM");
    assert_eq!(h[2], 1);
    assert_eq!(h[3], 2);
    assert_eq!(&h[4..20], &[0x11; 16]);
    assert_eq!(&h[20..24], &[1, 2, 3, 4]);
    assert_eq!(&h[24..36], &[0xee; 12]);
}

#[test]
fn envelope_wrong_purpose_is_refused_by_policy() {
    let p = Policy::default();
    for spec in [KeySpec::Sm4Gcm, KeySpec::Aes256Gcm] {
        for purpose in [Purpose::Sign, Purpose::Mac, Purpose::AsymmetricDecrypt] {
            let e = p.approve(purpose, spec).unwrap_err();
            assert!(matches!(e, PolicyError::WrongPurpose { .. }), "{e}");
            assert!(e.to_string().contains("KEY-5"), "{e}");
            assert_eq!(
                p.approve_open(purpose, spec).err(),
                Some(PolicyError::WrongPurpose { spec, purpose })
            );
        }
    }
}

/// Key versions start at 1 (the header's documented range is "≥ 1"): `seal` refuses version 0
/// rather than write a blob that `parse` would refuse in turn, and `parse` refuses a header that
/// names version 0 even when the rest of the blob is well formed.
#[test]
fn envelope_key_version_zero_is_refused() {
    let ctx = EncryptionContext::default();
    let approved = Policy::default()
        .approve(Purpose::Encrypt, KeySpec::Sm4Gcm)
        .unwrap();
    let e = envelope::seal(&approved, &SM4_KEY, Uuid::new_v4(), 0, &ctx, b"secret")
        .expect_err("a blob sealed under key version 0");
    assert!(
        matches!(
            &e,
            Error::InvalidArgument(InvalidInput { field: "key version", problem })
                if problem == "versions start at 1"
        ),
        "{e}"
    );
    let mut blob = seal(KeySpec::Sm4Gcm, Uuid::new_v4(), 1, &ctx, b"secret");
    blob[20..24].copy_from_slice(&0u32.to_be_bytes());
    let r = open(KeySpec::Sm4Gcm, &blob, &ctx);
    assert!(
        malformed(&r, "key version 0 does not exist"),
        "{:?}",
        r.err()
    );
}

// ---------------------------------------------------------------------------------------------
// Forbidden names (ALG-3)
// ---------------------------------------------------------------------------------------------

const FORBIDDEN_SPECS: &[&str] = &[
    "DES",
    "DES-CBC",
    "3DES",
    "TDEA",
    "TDES",
    "DESede",
    "DES-EDE3-CBC",
    "TripleDES",
    "RC2",
    "RC2-40-CBC",
    "RC4",
    "ARC4",
    "ARCFOUR",
    "RC4-HMAC-MD5",
    "Blowfish",
    "BF-CBC",
    "MD4",
    "MD5",
    "HMAC-MD5",
    "SHA-1",
    "SHA1",
    "HMAC-SHA1",
    "SM4-ECB",
    "AES-256-ECB",
    "AES-128-ECB",
    "RSA/ECB/PKCS1Padding",
    "RSA-512",
    "RSA-1024",
    "RSA-1536",
    "RSA512",
    "RSAES-PKCS1-v1_5",
    "RSAES_PKCS1_V1_5",
    "PKCS1v15Enc",
    "AES-256-CBC",
    "AES-256-CTR",
    "AES-256-CFB",
    "AES-256-OFB",
    "AES-128-CFB8",
    "SM4-CBC",
    "SM4-CTR",
    "SM4-OFB",
    "SM4-CFB",
];

const FORBIDDEN_DIGESTS: &[&str] = &[
    "md5",
    "MD5",
    "Md-5",
    "md4",
    "sha1",
    "SHA-1",
    "sha_1",
    "SHA 1",
    "SHA",
    "sha-0",
    "SHA1withRSA",
];

/// `name` in a random casing with random `-`, `_` or space separators inserted anywhere.
fn mangled(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(names).prop_flat_map(|name| {
        let n = name.chars().count();
        (
            Just(name),
            proptest::collection::vec(any::<bool>(), n),
            proptest::collection::vec(
                proptest::option::weighted(0.3, prop_oneof![Just('-'), Just('_'), Just(' ')]),
                n + 1,
            ),
        )
            .prop_map(move |(name, upper, seps)| {
                let mut out = String::new();
                for (i, c) in name.chars().enumerate() {
                    if let Some(s) = seps[i] {
                        out.push(s);
                    }
                    out.push(if upper[i] {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    });
                }
                if let Some(s) = seps[n] {
                    out.push(s);
                }
                out
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn forbidden_key_specs_are_refused_with_alg_3(name in mangled(FORBIDDEN_SPECS)) {
        let e = parse_key_spec(&name).expect_err("forbidden name accepted");
        prop_assert!(matches!(e, PolicyError::Forbidden { .. }), "{:?}: {}", name, e);
        let msg = e.to_string();
        prop_assert!(msg.contains("ALG-3"), "{:?}: {}", name, msg);
    }

    #[test]
    fn forbidden_digests_are_refused_with_alg_3(name in mangled(FORBIDDEN_DIGESTS)) {
        let e = parse_digest(&name).expect_err("forbidden digest accepted");
        let msg = e.to_string();
        prop_assert!(msg.contains("ALG-3"), "{:?}: {}", name, msg);
    }

    #[test]
    fn allowed_names_parse_in_any_casing(name in mangled(&[
        "SM4-GCM", "AES-256-GCM", "SM2", "RSA-2048", "RSA-3072", "RSA-4096",
        "HMAC-SM3", "HMAC-SHA256", "HMAC-SHA384", "HMAC-SHA512",
    ])) {
        // The other side of the deny list: nothing allowed is refused because of mangling.
        prop_assert!(parse_key_spec(&name).is_ok(), "{:?}", name);
    }
}

#[test]
fn every_allowed_digest_parses() {
    for d in DigestAlg::ALL {
        assert_eq!(parse_digest(d.name()).unwrap(), d);
    }
}

// ---------------------------------------------------------------------------------------------
// GM-only policy (ALG-4)
// ---------------------------------------------------------------------------------------------

#[test]
fn gm_only_refuses_every_non_gm_spec() {
    let gm = Policy::from_config(PolicyMode::GmOnly);
    let mut refused = 0;
    let mut allowed = 0;
    for spec in KeySpec::ALL {
        for purpose in Purpose::ALL {
            let r = gm.approve(purpose, spec);
            if !spec.supports(purpose) {
                assert_eq!(
                    r.err(),
                    Some(PolicyError::WrongPurpose { spec, purpose }),
                    "{spec} for {purpose}"
                );
                continue;
            }
            if spec.is_gm() {
                assert!(r.is_ok(), "{spec} for {purpose}");
                allowed += 1;
            } else {
                let e = r.expect_err("non-GM spec approved under gm-only");
                assert!(matches!(e, PolicyError::NotGm { .. }), "{e}");
                assert!(e.to_string().contains("ALG-4"), "{e}");
                refused += 1;
            }
        }
    }
    // AES (encrypt), RSA ×3 (sign, decrypt), RSA-3072 and 4096 (password), HMAC-SHA-2 ×3 (mac),
    // AES-FF1 (tokenize).
    assert_eq!(refused, 1 + 3 * 2 + 2 + 3 + 1);
    // SM4 (encrypt), SM2 (sign, decrypt, password), HMAC-SM3 (mac, pepper, tokenize), SM4-FF1
    // (tokenize).
    assert_eq!(allowed, 8);
    for d in DigestAlg::ALL {
        assert_eq!(gm.approve_digest(d).is_ok(), d.is_gm(), "{d}");
    }
    // RSA public keys are refused too.
    let rsa_pub = crypto::public_key_of(&RSA_SIGN).unwrap();
    let e = PublicKey::from_spki_der(gm, rsa_pub.spki_der()).unwrap_err();
    assert!(e.to_string().contains("ALG-4"), "{e}");
    let sm2_pub = crypto::public_key_of(&SM2_SIGN).unwrap();
    assert!(PublicKey::from_spki_der(gm, sm2_pub.spki_der()).is_ok());
    // No new RSA signatures (no Protect token, above), but old ones stay verifiable.
    let open = gm.approve_open(Purpose::Sign, KeySpec::Rsa2048).unwrap();
    assert!(
        gm.approve_verify(
            open,
            SignatureRequest::default_for(KeySpec::Rsa2048).unwrap()
        )
        .is_ok(),
        "old RSA signatures must stay verifiable under gm-only"
    );
}

// ---------------------------------------------------------------------------------------------
// RSA keys under 2048 bits (ALG-3)
// ---------------------------------------------------------------------------------------------

#[test]
fn rsa_keys_under_2048_bits_are_refused() {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let policy = Policy::default();
    for bits in [1024usize, 1536] {
        let small = rsa::PrivateKey::new(&mut getrandom::SysRng, bits).unwrap();
        let pkcs8 = small.to_pkcs8_der().unwrap();
        for purpose in [Purpose::Sign, Purpose::AsymmetricDecrypt] {
            let e = crypto::import_private_key(policy, purpose, pkcs8.as_bytes())
                .expect_err("short RSA private key imported");
            let msg = e.to_string();
            assert!(
                msg.contains("2048") && msg.contains("ALG-3"),
                "{bits}: {msg}"
            );
        }
        let spki = small.to_public_key().to_public_key_der().unwrap();
        let e = PublicKey::from_spki_der(policy, spki.as_bytes())
            .expect_err("short RSA public key accepted");
        let msg = e.to_string();
        assert!(
            msg.contains("2048") && msg.contains("ALG-3"),
            "{bits}: {msg}"
        );
        let pem = spki
            .to_pem("PUBLIC KEY", rsa::pkcs8::LineEnding::LF)
            .unwrap();
        let e = PublicKey::from_spki_pem(policy, &pem).expect_err("short RSA PEM key accepted");
        assert!(
            matches!(e, Error::Policy(PolicyError::RsaKeySize { bits: b }) if b == bits),
            "{bits}: {e}"
        );
    }
    // The 2048-bit keys we generate pass the same checks.
    let public = crypto::public_key_of(&RSA_SIGN).unwrap();
    assert_eq!(
        PublicKey::from_spki_der(policy, public.spki_der())
            .unwrap()
            .spec(),
        KeySpec::Rsa2048
    );
}

// ---------------------------------------------------------------------------------------------
// Sign / verify
// ---------------------------------------------------------------------------------------------

fn sig_tokens(
    key: &KeyMaterial,
    request: SignatureRequest,
) -> (
    kms_core::policy::ApprovedSignature,
    kms_core::policy::ApprovedSignature<kms_core::policy::Open>,
) {
    let p = Policy::default();
    let approved = p.approve(Purpose::Sign, key.spec()).unwrap();
    let verify = p
        .approve_verify(approved.for_open(), request.clone())
        .unwrap();
    (p.approve_signature(approved, request).unwrap(), verify)
}

fn changed(msg: &[u8], at: Index) -> Vec<u8> {
    let mut other = msg.to_vec();
    if other.is_empty() {
        other.push(0);
    } else {
        let i = at.index(other.len());
        other[i] ^= 0x01;
    }
    other
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sm2_sign_verify_round_trip(
        msg in proptest::collection::vec(any::<u8>(), 0..1024),
        id in "[ -~]{1,64}",
        at in any::<Index>(),
    ) {
        let key = &*SM2_SIGN;
        let public = crypto::public_key_of(key).unwrap();
        let (sign, verify) = sig_tokens(key, SignatureRequest::Sm2 { id: id.clone() });
        let sig = crypto::sign(&sign, key, Message::Raw(&msg)).unwrap();
        prop_assert_eq!(crypto::verify(&verify, &public, Message::Raw(&msg), &sig), Ok(true));
        prop_assert_eq!(
            crypto::verify(&verify, &public, Message::Raw(&changed(&msg, at)), &sig),
            Ok(false)
        );
        let (_, other_id) = sig_tokens(key, SignatureRequest::Sm2 { id: format!("{id}!") });
        prop_assert_eq!(crypto::verify(&other_id, &public, Message::Raw(&msg), &sig), Ok(false));
        let other_key = crypto::public_key_of(&SM2_DECRYPT).unwrap();
        prop_assert_eq!(crypto::verify(&verify, &other_key, Message::Raw(&msg), &sig), Ok(false));
        let bad_sig = changed(&sig, at);
        prop_assert_ne!(crypto::verify(&verify, &public, Message::Raw(&msg), &bad_sig), Ok(true));
    }

    #[test]
    fn rsa_sign_verify_round_trip(
        msg in proptest::collection::vec(any::<u8>(), 0..1024),
        scheme in prop_oneof![Just(RsaSigScheme::Pss), Just(RsaSigScheme::Pkcs1v15)],
        hash in prop_oneof![Just(DigestAlg::Sha256), Just(DigestAlg::Sha384), Just(DigestAlg::Sha512)],
        at in any::<Index>(),
    ) {
        let key = &*RSA_SIGN;
        let public = crypto::public_key_of(key).unwrap();
        let (sign, verify) = sig_tokens(key, SignatureRequest::Rsa { scheme, hash });
        let sig = crypto::sign(&sign, key, Message::Raw(&msg)).unwrap();
        prop_assert_eq!(sig.len(), 256);
        prop_assert_eq!(crypto::verify(&verify, &public, Message::Raw(&msg), &sig), Ok(true));
        let digest = crypto::digest(Policy::default().approve_digest(hash).unwrap(), &msg);
        prop_assert_eq!(crypto::verify(&verify, &public, Message::Digest(&digest), &sig), Ok(true));
        // Signing the digest gives a signature over the same message.
        let sig2 = crypto::sign(&sign, key, Message::Digest(&digest)).unwrap();
        prop_assert_eq!(crypto::verify(&verify, &public, Message::Raw(&msg), &sig2), Ok(true));
        if scheme == RsaSigScheme::Pkcs1v15 {
            prop_assert_eq!(&sig, &sig2, "PKCS#1 v1.5 is deterministic");
        }
        prop_assert_eq!(
            crypto::verify(&verify, &public, Message::Raw(&changed(&msg, at)), &sig),
            Ok(false)
        );
        prop_assert_ne!(
            crypto::verify(&verify, &public, Message::Raw(&msg), &changed(&sig, at)),
            Ok(true)
        );
        let other_hash = if hash == DigestAlg::Sha256 { DigestAlg::Sha512 } else { DigestAlg::Sha256 };
        let (_, wrong) = sig_tokens(key, SignatureRequest::Rsa { scheme, hash: other_hash });
        prop_assert_ne!(crypto::verify(&wrong, &public, Message::Raw(&msg), &sig), Ok(true));
        let other_scheme = match scheme {
            RsaSigScheme::Pss => RsaSigScheme::Pkcs1v15,
            RsaSigScheme::Pkcs1v15 => RsaSigScheme::Pss,
        };
        let (_, wrong) = sig_tokens(key, SignatureRequest::Rsa { scheme: other_scheme, hash });
        prop_assert_ne!(crypto::verify(&wrong, &public, Message::Raw(&msg), &sig), Ok(true));
    }
}

// ---------------------------------------------------------------------------------------------
// Asymmetric encryption
// ---------------------------------------------------------------------------------------------

fn decrypt(key: &KeyMaterial, ct: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let open = Policy::default()
        .approve_open(Purpose::AsymmetricDecrypt, key.spec())
        .unwrap();
    crypto::asymmetric_decrypt(&open, key, ct).map(|pt| pt.expose_secret().to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sm2_encrypt_decrypt_round_trip(
        msg in proptest::collection::vec(any::<u8>(), 1..1024),
        at in any::<Index>(),
    ) {
        let key = &*SM2_DECRYPT;
        let public = crypto::public_key_of(key).unwrap();
        let ct = crypto::encrypt_to_public_key(&Policy::default().approve(Purpose::AsymmetricDecrypt, public.spec()).unwrap(), &public, &msg).unwrap();
        prop_assert_eq!(&decrypt(key, &ct).unwrap(), &msg);
        prop_assert_eq!(decrypt(key, &changed(&ct, at)).err(), Some(CryptoError::DecryptionFailed), "tampered SM2 ciphertext");
        prop_assert_eq!(decrypt(&SM2_SIGN, &ct).err(), Some(CryptoError::DecryptionFailed), "another key");
    }

    #[test]
    fn rsa_oaep_encrypt_decrypt_round_trip(
        msg in proptest::collection::vec(any::<u8>(), 0..=190),
        at in any::<Index>(),
    ) {
        let key = &*RSA_DECRYPT;
        let public = crypto::public_key_of(key).unwrap();
        let ct = crypto::encrypt_to_public_key(&Policy::default().approve(Purpose::AsymmetricDecrypt, public.spec()).unwrap(), &public, &msg).unwrap();
        prop_assert_eq!(ct.len(), 256);
        prop_assert_eq!(&decrypt(key, &ct).unwrap(), &msg);
        prop_assert_eq!(decrypt(key, &changed(&ct, at)).err(), Some(CryptoError::DecryptionFailed), "tampered OAEP ciphertext");
        prop_assert_eq!(decrypt(&RSA_SIGN, &ct).err(), Some(CryptoError::DecryptionFailed), "another key");
    }
}

#[test]
fn asymmetric_encryption_limits() {
    let rsa = crypto::public_key_of(&RSA_DECRYPT).unwrap();
    // 191 bytes is one more than OAEP-SHA-256 fits in a 2048-bit modulus (256 - 2·32 - 2 = 190).
    assert_eq!(
        crypto::encrypt_to_public_key(
            &Policy::default()
                .approve(Purpose::AsymmetricDecrypt, rsa.spec())
                .unwrap(),
            &rsa,
            &[1; 191]
        ),
        Err(CryptoError::OperationFailed)
    );
    // An SM2 ciphertext of the empty message either round-trips or is refused; never a panic.
    let sm2 = crypto::public_key_of(&SM2_DECRYPT).unwrap();
    if let Ok(ct) = crypto::encrypt_to_public_key(
        &Policy::default()
            .approve(Purpose::AsymmetricDecrypt, sm2.spec())
            .unwrap(),
        &sm2,
        b"",
    ) {
        assert_eq!(decrypt(&SM2_DECRYPT, &ct).unwrap(), b"");
    }
    // A sign-purpose token cannot decrypt.
    let ct = crypto::encrypt_to_public_key(
        &Policy::default()
            .approve(Purpose::AsymmetricDecrypt, sm2.spec())
            .unwrap(),
        &sm2,
        b"pin",
    )
    .unwrap();
    let sign_token = Policy::default()
        .approve_open(Purpose::Sign, KeySpec::Sm2)
        .unwrap();
    assert_eq!(
        crypto::asymmetric_decrypt(&sign_token, &SM2_DECRYPT, &ct).err(),
        Some(CryptoError::Mismatch)
    );
}

// ---------------------------------------------------------------------------------------------
// MAC
// ---------------------------------------------------------------------------------------------

static MAC_KEYS: LazyLock<Vec<(KeyMaterial, KeyMaterial)>> = LazyLock::new(|| {
    [
        KeySpec::HmacSm3,
        KeySpec::HmacSha256,
        KeySpec::HmacSha384,
        KeySpec::HmacSha512,
    ]
    .into_iter()
    .map(|s| (generate(Purpose::Mac, s), generate(Purpose::Mac, s)))
    .collect()
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn mac_round_trip(
        which in 0usize..4,
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        at in any::<Index>(),
    ) {
        let (key, other) = &MAC_KEYS[which];
        let spec = key.spec();
        let p = Policy::default();
        let approved = p.approve(Purpose::Mac, spec).unwrap();
        let open = approved.for_open();
        let tag = crypto::mac(&approved, key, &data).unwrap();
        prop_assert_eq!(tag.len(), spec.hmac_digest().unwrap().output_len());
        prop_assert_eq!(&crypto::mac(&approved, key, &data).unwrap(), &tag, "deterministic");
        prop_assert_eq!(crypto::verify_mac(&open, key, &data, &tag), Ok(true));
        prop_assert_eq!(crypto::verify_mac(&open, key, &changed(&data, at), &tag), Ok(false));
        prop_assert_eq!(crypto::verify_mac(&open, key, &data, &changed(&tag, at)), Ok(false));
        prop_assert_ne!(crypto::verify_mac(&open, key, &data, &tag[..tag.len() - 1]), Ok(true));
        prop_assert_ne!(crypto::verify_mac(&open, key, &data, &[]), Ok(true));
        prop_assert_eq!(crypto::verify_mac(&open, other, &data, &tag), Ok(false));
    }
}
