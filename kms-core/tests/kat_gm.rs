//! Known-answer tests for the GM algorithms, from the standards' own examples.
//!
//! * SM3: GB/T 32905-2016 (GM/T 0004-2012) Appendix A (`data/sm3.json`).
//! * SM4 block cipher: GB/T 32907-2016 (GM/T 0002-2012) Appendix A examples 1 and 2
//!   (`data/sm4.json`), through the `sm4` crate the core builds its GCM on.
//! * SM4-GCM: RFC 8998 Appendix A.1 (`data/sm4_gcm.json`), through the core's AEAD.
//! * SM2 signatures: GM/T 0003.5 Annex A and OpenSSL/GmSSL-made signatures (`data/sm2_sign.json`).
//! * SM2 encryption: GM/T 0003.5 Annex C and OpenSSL/GmSSL-made ciphertexts (`data/sm2_enc.json`).
//!
//! See `tests/data/README.md` for where every vector comes from.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use kms_core::alg::{DigestAlg, KeySpec, Purpose, SM2_DEFAULT_ID, SignatureRequest};
use kms_core::crypto::{self, Message, PublicKey};
use kms_core::policy::{Policy, PolicyError, PolicyMode};
use kms_core::{CryptoError, Error, InvalidInput, KeyMaterial, SecretBytes};
use serde_json::Value;
use sm2::pkcs8::{EncodePrivateKey, EncodePublicKey};

fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

fn load(name: &str) -> Value {
    let path = data_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn vectors(file: &Value) -> &Vec<Value> {
    file["vectors"].as_array().expect("`vectors` array")
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("field {name} missing in {v}"))
}

fn hex_field(v: &Value, name: &str) -> Vec<u8> {
    hex::decode(field(v, name)).unwrap_or_else(|e| panic!("field {name} is not hex: {e}"))
}

fn policies() -> [Policy; 2] {
    [Policy::default(), Policy::from_config(PolicyMode::GmOnly)]
}

// ---------------------------------------------------------------------------------------------
// SM3
// ---------------------------------------------------------------------------------------------

#[test]
fn sm3_gbt_32905_examples() {
    let file = load("sm3.json");
    let mut n = 0;
    for policy in policies() {
        let approved = policy.approve_digest(DigestAlg::Sm3).unwrap();
        for v in vectors(&file) {
            let msg = hex_field(v, "msg_hex");
            let expected = hex_field(v, "digest_hex");
            assert_eq!(
                crypto::digest(approved, &msg),
                expected,
                "{}",
                field(v, "comment")
            );
            n += 1;
        }
    }
    assert_eq!(n, 2 * 3, "every SM3 vector under both policies");
}

#[test]
fn sm3_detects_a_one_bit_change() {
    let approved = Policy::default().approve_digest(DigestAlg::Sm3).unwrap();
    let a = crypto::digest(approved, b"abc");
    let b = crypto::digest(approved, b"abb");
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
}

// ---------------------------------------------------------------------------------------------
// SM4 block cipher (GB/T 32907 Appendix A), through the `sm4` crate used by the core's SM4-GCM
// ---------------------------------------------------------------------------------------------

fn sm4_chain(v: &Value) {
    use sm4::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
    let key = hex_field(v, "key_hex");
    let plaintext = hex_field(v, "plaintext_hex");
    let expected = hex_field(v, "ciphertext_hex");
    let iterations = v["iterations"].as_u64().expect("iterations");
    let cipher = sm4::Sm4::new_from_slice(&key).unwrap();
    let mut block = sm4::cipher::Block::<sm4::Sm4>::try_from(plaintext.as_slice()).unwrap();
    for _ in 0..iterations {
        cipher.encrypt_block(&mut block);
    }
    assert_eq!(
        block.as_slice(),
        expected.as_slice(),
        "{}",
        field(v, "comment")
    );
    for _ in 0..iterations {
        cipher.decrypt_block(&mut block);
    }
    assert_eq!(
        block.as_slice(),
        plaintext.as_slice(),
        "{}",
        field(v, "comment")
    );
}

#[test]
fn sm4_gbt_32907_example_1() {
    let file = load("sm4.json");
    let ones: Vec<&Value> = vectors(&file)
        .iter()
        .filter(|v| v["iterations"].as_u64() == Some(1))
        .collect();
    assert_eq!(ones.len(), 1);
    for v in ones {
        sm4_chain(v);
    }
}

#[test]
#[ignore = "slow: 1,000,000 chained SM4 encryptions and decryptions (run with --ignored)"]
fn sm4_gbt_32907_example_2_million_iterations() {
    let file = load("sm4.json");
    let many: Vec<&Value> = vectors(&file)
        .iter()
        .filter(|v| v["iterations"].as_u64() == Some(1_000_000))
        .collect();
    assert_eq!(many.len(), 1);
    for v in many {
        sm4_chain(v);
    }
}

// ---------------------------------------------------------------------------------------------
// SM4-GCM (RFC 8998 A.1) through the core's AEAD
// ---------------------------------------------------------------------------------------------

fn sm4_key(policy: Policy, raw: Vec<u8>) -> KeyMaterial {
    policy
        .approve(Purpose::Encrypt, KeySpec::Sm4Gcm)
        .map_err(Error::from)
        .and_then(|approved| KeyMaterial::import_symmetric(&approved, SecretBytes::from_vec(raw)))
        .unwrap()
}

#[test]
fn sm4_gcm_rfc_8998_a1() {
    let file = load("sm4_gcm.json");
    let mut n = 0;
    for policy in policies() {
        for v in vectors(&file) {
            let comment = field(v, "comment");
            let key = sm4_key(policy, hex_field(v, "key_hex"));
            let nonce: [u8; 12] = hex_field(v, "iv_hex").try_into().unwrap();
            let aad = hex_field(v, "aad_hex");
            let plaintext = hex_field(v, "plaintext_hex");
            let mut expected = hex_field(v, "ciphertext_hex");
            expected.extend_from_slice(&hex_field(v, "tag_hex"));

            let approved = policy.approve(Purpose::Encrypt, KeySpec::Sm4Gcm).unwrap();
            let mut buf = plaintext.clone();
            crypto::seal_in_place(&approved, &key, &nonce, &aad, &mut buf).unwrap();
            assert_eq!(hex::encode(&buf), hex::encode(&expected), "{comment}");

            let open = approved.for_open();
            let mut buf = expected.clone();
            crypto::open_in_place(&open, &key, &nonce, &aad, &mut buf).unwrap();
            assert_eq!(buf, plaintext, "{comment}");

            // Every single-bit change of ciphertext, tag, AAD or nonce is refused.
            for i in 0..expected.len() {
                let mut bad = expected.clone();
                bad[i] ^= 0x01;
                assert_eq!(
                    crypto::open_in_place(&open, &key, &nonce, &aad, &mut bad),
                    Err(CryptoError::DecryptionFailed),
                    "{comment}: flipped byte {i}"
                );
            }
            for i in 0..aad.len() {
                let mut bad_aad = aad.clone();
                bad_aad[i] ^= 0x80;
                let mut buf = expected.clone();
                assert_eq!(
                    crypto::open_in_place(&open, &key, &nonce, &bad_aad, &mut buf),
                    Err(CryptoError::DecryptionFailed),
                    "{comment}: AAD byte {i}"
                );
            }
            let mut buf = expected.clone();
            assert_eq!(
                crypto::open_in_place(&open, &key, &nonce, &[], &mut buf),
                Err(CryptoError::DecryptionFailed),
                "{comment}: AAD left out"
            );
            for i in 0..nonce.len() {
                let mut bad_nonce = nonce;
                bad_nonce[i] ^= 0x01;
                let mut buf = expected.clone();
                assert_eq!(
                    crypto::open_in_place(&open, &key, &bad_nonce, &aad, &mut buf),
                    Err(CryptoError::DecryptionFailed),
                    "{comment}: nonce byte {i}"
                );
            }
            // A truncated body (shorter than a tag) is an error, not a panic.
            let mut short = expected[..15].to_vec();
            assert_eq!(
                crypto::open_in_place(&open, &key, &nonce, &aad, &mut short),
                Err(CryptoError::DecryptionFailed),
                "{comment}: 15-byte body"
            );
            n += 1;
        }
    }
    assert_eq!(n, 2, "RFC 8998 A.1 under both policies");
}

#[test]
fn sm4_gcm_key_import_checks_length_and_policy() {
    let p = Policy::default();
    for len in [0usize, 15, 17, 32] {
        let r = p
            .approve(Purpose::Encrypt, KeySpec::Sm4Gcm)
            .map_err(Error::from)
            .and_then(|approved| {
                KeyMaterial::import_symmetric(&approved, SecretBytes::from_vec(vec![7; len]))
            });
        let e = r.expect_err("SM4 key of the wrong length accepted");
        assert!(
            matches!(&e, Error::InvalidArgument(InvalidInput { field: "key", problem })
                if problem == "a sm4-gcm key must be 16 bytes"),
            "{len}: {e}"
        );
    }
    // SM4 keys are encryption keys only (KEY-5).
    let r = p
        .approve(Purpose::Mac, KeySpec::Sm4Gcm)
        .map_err(Error::from)
        .and_then(|approved| {
            KeyMaterial::import_symmetric(&approved, SecretBytes::from_vec(vec![7; 16]))
        });
    assert!(
        matches!(
            r,
            Err(Error::Policy(PolicyError::WrongPurpose {
                spec: KeySpec::Sm4Gcm,
                purpose: Purpose::Mac
            }))
        ),
        "{:?}",
        r.err()
    );
    // The GM-only policy keeps SM4 and refuses AES (ALG-4).
    let gm = Policy::from_config(PolicyMode::GmOnly);
    let r = gm
        .approve(Purpose::Encrypt, KeySpec::Aes256Gcm)
        .map_err(Error::from)
        .and_then(|approved| {
            KeyMaterial::import_symmetric(&approved, SecretBytes::from_vec(vec![7; 32]))
        });
    let e = r.unwrap_err().to_string();
    assert!(e.contains("ALG-4"), "{e}");
}

#[test]
fn sm4_gcm_key_of_another_spec_is_a_mismatch() {
    let p = Policy::default();
    let key = sm4_key(p, vec![1; 16]);
    let aes = p.approve(Purpose::Encrypt, KeySpec::Aes256Gcm).unwrap();
    let mut buf = b"data".to_vec();
    assert_eq!(
        crypto::seal_in_place(&aes, &key, &[0; 12], b"", &mut buf),
        Err(CryptoError::Mismatch)
    );
    assert_eq!(buf, b"data", "a refused seal must not touch the buffer");
}

// ---------------------------------------------------------------------------------------------
// SM2
// ---------------------------------------------------------------------------------------------

/// SPKI DER for an uncompressed SEC1 point, through the `sm2` crate.
fn spki_from_point(point: &[u8]) -> Vec<u8> {
    sm2::PublicKey::from_sec1_bytes(point)
        .unwrap()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// PKCS#8 DER for a 32-byte private scalar, through the `sm2` crate.
fn pkcs8_from_scalar(scalar: &[u8]) -> Vec<u8> {
    sm2::SecretKey::from_slice(scalar)
        .unwrap()
        .to_pkcs8_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

fn sm2_id(v: &Value) -> String {
    let id = String::from_utf8(hex_field(v, "id_hex")).unwrap();
    assert_eq!(id, field(v, "id_ascii"));
    id
}

fn sm2_verify_token(
    policy: Policy,
    id: &str,
) -> kms_core::policy::ApprovedSignature<kms_core::policy::Open> {
    let open = policy.approve_open(Purpose::Sign, KeySpec::Sm2).unwrap();
    policy
        .approve_verify(open, SignatureRequest::Sm2 { id: id.to_owned() })
        .unwrap()
}

#[test]
fn sm2_sign_vectors_are_consistent() {
    // The vectors themselves: e = SM3(Z_A ‖ M), and the DER signature holds (r, s).
    let file = load("sm2_sign.json");
    let sm3 = Policy::default().approve_digest(DigestAlg::Sm3).unwrap();
    for v in vectors(&file) {
        let mut za_m = hex_field(v, "za_hex");
        za_m.extend_from_slice(&hex_field(v, "msg_hex"));
        assert_eq!(
            crypto::digest(sm3, &za_m),
            hex_field(v, "e_hex"),
            "{}",
            field(v, "comment")
        );
        let sig = sm2::dsa::Signature::from_der(&hex_field(v, "signature_der_hex")).unwrap();
        let mut rs = hex_field(v, "r_hex");
        rs.extend_from_slice(&hex_field(v, "s_hex"));
        assert_eq!(sig.to_bytes().as_slice(), rs.as_slice());
    }
}

#[test]
fn sm2_gmt_0003_5_annex_a_signature_verifies() {
    let file = load("sm2_sign.json");
    let v = vectors(&file)
        .iter()
        .find(|v| field(v, "kind") == "standard")
        .expect("the GM/T 0003.5 Annex A example");
    assert_eq!(sm2_id(v), SM2_DEFAULT_ID);
    // The published values (GM/T 0003.5 Annex A): r = f5a03b06…20b3, s = b1b6aa29…c1aa.
    let (r, s) = (field(v, "r_hex"), field(v, "s_hex"));
    assert!(r.starts_with("f5a03b06") && r.ends_with("20b3"), "{r}");
    assert!(s.starts_with("b1b6aa29") && s.ends_with("c1aa"), "{s}");
    for policy in policies() {
        let public =
            PublicKey::from_spki_der(policy, &spki_from_point(&hex_field(v, "public_key_hex")))
                .unwrap();
        assert_eq!(public.spec(), KeySpec::Sm2);
        let token = sm2_verify_token(policy, SM2_DEFAULT_ID);
        let msg = hex_field(v, "msg_hex");
        assert_eq!(msg, b"message digest");
        let sig = hex_field(v, "signature_der_hex");
        assert_eq!(
            crypto::verify(&token, &public, Message::Raw(&msg), &sig),
            Ok(true)
        );
        assert_eq!(
            crypto::verify(
                &token,
                &public,
                Message::Digest(&hex_field(v, "e_hex")),
                &sig
            ),
            Ok(true)
        );
        assert_eq!(
            crypto::verify(&token, &public, Message::Raw(b"message digesT"), &sig),
            Ok(false)
        );
    }
}

#[test]
fn sm2_every_signature_vector_verifies_raw_and_prehashed() {
    let file = load("sm2_sign.json");
    let mut raw_ok = 0;
    let mut prehash_ok = 0;
    for v in vectors(&file) {
        let comment = field(v, "comment");
        let id = sm2_id(v);
        let msg = hex_field(v, "msg_hex");
        let e = hex_field(v, "e_hex");
        let sig = hex_field(v, "signature_der_hex");
        let spki = spki_from_point(&hex_field(v, "public_key_hex"));
        for policy in policies() {
            let public = PublicKey::from_spki_der(policy, &spki).unwrap();
            let token = sm2_verify_token(policy, &id);

            assert_eq!(
                crypto::verify(&token, &public, Message::Raw(&msg), &sig),
                Ok(true),
                "{comment}"
            );
            raw_ok += 1;
            assert_eq!(
                crypto::verify(&token, &public, Message::Digest(&e), &sig),
                Ok(true),
                "{comment} (prehash)"
            );
            prehash_ok += 1;

            // Negative cases: another message, another ID, a modified signature, another digest.
            let mut other = msg.clone();
            other.push(0);
            assert_eq!(
                crypto::verify(&token, &public, Message::Raw(&other), &sig),
                Ok(false),
                "{comment}: longer message accepted"
            );
            let wrong_id = sm2_verify_token(policy, &format!("{id}x"));
            assert_eq!(
                crypto::verify(&wrong_id, &public, Message::Raw(&msg), &sig),
                Ok(false),
                "{comment}: wrong distinguishing ID accepted"
            );
            let mut bad_sig = sig.clone();
            let last = bad_sig.len() - 1;
            bad_sig[last] ^= 0x01;
            assert_eq!(
                crypto::verify(&token, &public, Message::Raw(&msg), &bad_sig),
                Ok(false),
                "{comment}: modified s accepted"
            );
            let mut bad_e = e.clone();
            bad_e[0] ^= 0x80;
            assert_eq!(
                crypto::verify(&token, &public, Message::Digest(&bad_e), &sig),
                Ok(false),
                "{comment}: wrong digest accepted"
            );
            // A digest of the wrong length is not valid either.
            assert_ne!(
                crypto::verify(&token, &public, Message::Digest(&e[..31]), &sig),
                Ok(true)
            );
            // Garbage instead of DER.
            assert_ne!(
                crypto::verify(&token, &public, Message::Raw(&msg), &sig[..sig.len() - 1]),
                Ok(true)
            );
        }
    }
    assert_eq!(raw_ok, 8 * 2, "every sm2_sign.json vector, both policies");
    assert_eq!(prehash_ok, 8 * 2);
}

#[test]
fn sm2_vector_private_keys_import_and_sign() {
    // The vectors' private keys import through PKCS#8, give the vectors' public keys, and sign
    // messages that verify under the vector's ID (and not under another ID).
    let file = load("sm2_sign.json");
    let policy = Policy::default();
    let mut n = 0;
    let mut seen = std::collections::BTreeSet::new();
    for v in vectors(&file) {
        let scalar = field(v, "private_key_hex").to_owned();
        let id = sm2_id(v);
        if !seen.insert((scalar.clone(), id.clone())) {
            continue;
        }
        let key = crypto::import_private_key(
            policy,
            Purpose::Sign,
            &pkcs8_from_scalar(&hex::decode(&scalar).unwrap()),
        )
        .unwrap();
        assert_eq!(key.spec(), KeySpec::Sm2);
        let public = crypto::public_key_of(&key).unwrap();
        assert_eq!(
            public.spki_der(),
            spki_from_point(&hex_field(v, "public_key_hex"))
        );

        let approved = policy.approve(Purpose::Sign, KeySpec::Sm2).unwrap();
        let req = SignatureRequest::Sm2 { id: id.clone() };
        let sign = policy.approve_signature(approved, req).unwrap();
        let msg = hex_field(v, "msg_hex");
        let sig = crypto::sign(&sign, &key, Message::Raw(&msg)).unwrap();
        assert_eq!(
            crypto::verify(
                &sm2_verify_token(policy, &id),
                &public,
                Message::Raw(&msg),
                &sig
            ),
            Ok(true)
        );
        // Prehash signing with the vector's e verifies against the raw message.
        let sig = crypto::sign(&sign, &key, Message::Digest(&hex_field(v, "e_hex"))).unwrap();
        assert_eq!(
            crypto::verify(
                &sm2_verify_token(policy, &id),
                &public,
                Message::Raw(&msg),
                &sig
            ),
            Ok(true)
        );
        assert_eq!(
            crypto::verify(
                &sm2_verify_token(policy, "another id"),
                &public,
                Message::Raw(&msg),
                &sig
            ),
            Ok(false)
        );
        n += 1;
    }
    // Two keys with the default ID, two with ALICE123@YAHOO.COM (the Annex A key and an
    // OpenSSL key), and the other OpenSSL key with the default ID.
    assert_eq!(n, 4);
}

#[test]
fn sm2_every_encryption_vector_decrypts() {
    let file = load("sm2_enc.json");
    let mut n = 0;
    for policy in policies() {
        let open = policy
            .approve_open(Purpose::AsymmetricDecrypt, KeySpec::Sm2)
            .unwrap();
        for v in vectors(&file) {
            let comment = field(v, "comment");
            let key = crypto::import_private_key(
                policy,
                Purpose::AsymmetricDecrypt,
                &pkcs8_from_scalar(&hex_field(v, "private_key_hex")),
            )
            .unwrap();
            let public = crypto::public_key_of(&key).unwrap();
            assert_eq!(
                public.spki_der(),
                spki_from_point(&hex_field(v, "public_key_hex"))
            );

            let msg = hex_field(v, "msg_hex");
            let der = hex_field(v, "ciphertext_der_hex");
            let pt = crypto::asymmetric_decrypt(&open, &key, &der).unwrap();
            assert_eq!(pt.expose_secret(), msg.as_slice(), "{comment}");
            n += 1;

            // The C1C3C2 concatenation is not the interop format (GM/T 0009 DER is).
            let raw = hex_field(v, "ciphertext_c1c3c2_hex");
            assert_eq!(
                crypto::asymmetric_decrypt(&open, &key, &raw).err(),
                Some(CryptoError::DecryptionFailed),
                "{comment}"
            );

            // Tampering with C3 (hash) or C2 (ciphertext) is detected.
            let c3 = hex_field(v, "c3_hex");
            let c2 = hex_field(v, "c2_hex");
            let c3_at = find(&der, &c3).expect("C3 inside the DER");
            let c2_at = find(&der, &c2).expect("C2 inside the DER");
            for at in [c3_at, c3_at + c3.len() - 1, c2_at, c2_at + c2.len() - 1] {
                let mut bad = der.clone();
                bad[at] ^= 0x01;
                assert_eq!(
                    crypto::asymmetric_decrypt(&open, &key, &bad).err(),
                    Some(CryptoError::DecryptionFailed),
                    "{comment}: tampered byte {at}"
                );
            }
            // Truncated DER.
            assert_eq!(
                crypto::asymmetric_decrypt(&open, &key, &der[..der.len() - 1]).err(),
                Some(CryptoError::DecryptionFailed),
                "{comment}: truncated DER"
            );
        }
    }
    assert_eq!(n, 8 * 2, "every sm2_enc.json vector, both policies");
}

#[test]
fn sm2_encryption_vector_needs_the_right_key() {
    let file = load("sm2_enc.json");
    let policy = Policy::default();
    let v = vectors(&file)
        .iter()
        .find(|v| field(v, "kind") == "standard")
        .expect("the GM/T 0003.5 Annex C example");
    assert_eq!(hex_field(v, "msg_hex"), b"encryption standard");
    // Another vector's key cannot decrypt the Annex C ciphertext.
    let other = vectors(&file)
        .iter()
        .find(|w| field(w, "private_key_hex") != field(v, "private_key_hex"))
        .unwrap();
    let key = crypto::import_private_key(
        policy,
        Purpose::AsymmetricDecrypt,
        &pkcs8_from_scalar(&hex_field(other, "private_key_hex")),
    )
    .unwrap();
    let open = policy
        .approve_open(Purpose::AsymmetricDecrypt, KeySpec::Sm2)
        .unwrap();
    assert_eq!(
        crypto::asymmetric_decrypt(&open, &key, &hex_field(v, "ciphertext_der_hex")).err(),
        Some(CryptoError::DecryptionFailed)
    );
    // A decryption key must not be approved for signing, and vice versa (KEY-5 tokens).
    let sign_open = policy.approve_open(Purpose::Sign, KeySpec::Sm2).unwrap();
    assert_eq!(
        crypto::asymmetric_decrypt(&sign_open, &key, &hex_field(v, "ciphertext_der_hex")).err(),
        Some(CryptoError::Mismatch)
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
