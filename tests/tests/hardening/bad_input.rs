//! The bad-input catalogue (issue 8, part 2; API-4, API-5): every class of bad input a client can
//! send, thrown at a running server over real mutual TLS. Each case gets an exact status and a
//! message that says what is wrong (short, with a request id, with no secret); after each class
//! a good request still succeeds, on an old connection and a new one; and at the end the key
//! inventory — every key listed and described, everything made with the keys before the run
//! re-opened — is exactly what it was before.
//!
//! `e2e/errors.rs` has the first cases of some classes (the 64 KiB and 8 KiB limits on the main
//! RPCs, a few bit flips, forbidden algorithm names); the cases here extend those classes to every
//! RPC and every byte position and add the ones below the typed client: malformed protobuf,
//! non-UTF-8 strings, odd certificates, stalled handshakes, vanished clients and floods, and
//! tokens (issue 22: empty values, values outside the alphabet, domains below 10^6, 1 MiB values,
//! tokens of the wrong format), and signed requests (issue 22 item 3: call errors refused, every
//! malformed field and stale timestamp an OK answer whose verdict and reason are checked).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kms_proto::v1::{self, Purpose};
use kms_server::Settings;
use kms_server::limits::Limits;
use kms_tests::net::{self, MODERN, TLS12_ONLY, TLS13_ONLY};
use kms_tests::pki::{Identity, subjects};
use kms_tests::world::{Clients, World};
use prost::Message as _;
use rcgen::{CustomExtension, ExtendedKeyUsagePurpose, date_time_ymd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::catalogue::{Catalogue, without_request_id};
use crate::common::{
    SECRET, SECRET_CONTEXT, Scratch, SigOpts, all_output, asym_req, ctx, data_key_req, dec, enc,
    key_req, mac_req, openssl, public_key_req, sign_req, verify_mac_req, verify_req,
};
use crate::fixture::{Fixture, HANDSHAKE_TIMEOUT, Made, fixture_context};
use crate::wire::{
    PARTIAL_CLIENT_HELLO, RawH2, closed_by_server_within, grpc_message, pb_bytes_field, pb_varint,
    raw_unary,
};

const KIB: usize = 1024;

/// `SECRET` repeated to `len` bytes.
fn secret_bytes(len: usize) -> Vec<u8> {
    SECRET.iter().copied().cycle().take(len).collect()
}

/// A context of `len` bytes (key "k" plus a value made of the secret context marker).
fn big_context(len: usize) -> HashMap<String, String> {
    let value: String = SECRET_CONTEXT.chars().cycle().take(len - 1).collect();
    ctx(&[("k", &value)])
}

/// Every operation of the data plane that takes a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Encrypt,
    DataKey,
    DataKeyWithoutPlaintext,
    ReEncryptTo,
    Sign,
    Verify,
    AsymmetricDecrypt,
    GetPublicKey,
    Mac,
    VerifyMac,
}

const OPS: [Op; 10] = [
    Op::Encrypt,
    Op::DataKey,
    Op::DataKeyWithoutPlaintext,
    Op::ReEncryptTo,
    Op::Sign,
    Op::Verify,
    Op::AsymmetricDecrypt,
    Op::GetPublicKey,
    Op::Mac,
    Op::VerifyMac,
];

impl Op {
    /// The purpose a key needs for this operation (`None`: sign or asymmetric-decrypt keys).
    fn purpose(self) -> Option<Purpose> {
        match self {
            Self::Encrypt | Self::DataKey | Self::DataKeyWithoutPlaintext | Self::ReEncryptTo => {
                Some(Purpose::Encrypt)
            }
            Self::Sign | Self::Verify => Some(Purpose::Sign),
            Self::AsymmetricDecrypt => Some(Purpose::AsymmetricDecrypt),
            Self::Mac | Self::VerifyMac => Some(Purpose::Mac),
            Self::GetPublicKey => None,
        }
    }

    /// The words a refusal for the wrong purpose names.
    fn purpose_word(self) -> &'static str {
        match self {
            Self::Encrypt | Self::DataKey | Self::DataKeyWithoutPlaintext | Self::ReEncryptTo => {
                "encrypt"
            }
            Self::Sign | Self::Verify => "sign",
            Self::AsymmetricDecrypt => "asymmetric",
            Self::Mac | Self::VerifyMac => "mac",
            Self::GetPublicKey => "public key",
        }
    }
}

/// Runs `op` with `key` as the app, with well-formed other fields (`sealed`: a ciphertext for
/// asymmetric decryption).
async fn run_op(fx: &Fixture, op: Op, key: &str, sealed: &[u8]) -> Result<String, Status> {
    let mut c = fx.w.app.crypto.clone();
    let none = ctx(&[("tenant", SECRET_CONTEXT)]);
    Ok(match op {
        Op::Encrypt => format!(
            "{:?}",
            c.encrypt(enc(key, SECRET, &none)).await?.get_ref().key_id
        ),
        Op::DataKey => format!(
            "{:?}",
            c.generate_data_key(data_key_req(key, "sm4", &none))
                .await?
                .get_ref()
                .key_id
        ),
        Op::DataKeyWithoutPlaintext => format!(
            "{:?}",
            c.generate_data_key_without_plaintext(data_key_req(key, "aes-256", &none))
                .await?
                .get_ref()
                .key_id
        ),
        Op::ReEncryptTo => format!(
            "{:?}",
            c.re_encrypt(v1::ReEncryptRequest {
                ciphertext: fx.blob.clone(),
                source_context: fixture_context(),
                destination_key: key.to_owned(),
                destination_context: none,
            })
            .await?
            .get_ref()
            .key_id
        ),
        Op::Sign => format!(
            "{} bytes",
            c.sign(sign_req(key, SECRET, SigOpts::default()))
                .await?
                .get_ref()
                .signature
                .len()
        ),
        Op::Verify => format!(
            "valid={}",
            c.verify(verify_req(
                key,
                SECRET,
                b"not a signature",
                SigOpts::default(),
                None
            ))
            .await?
            .get_ref()
            .valid
        ),
        Op::AsymmetricDecrypt => format!(
            "{} bytes",
            c.asymmetric_decrypt(asym_req(key, sealed, None))
                .await?
                .get_ref()
                .plaintext
                .len()
        ),
        Op::GetPublicKey => format!(
            "{} bytes",
            c.get_public_key(public_key_req(key, None))
                .await?
                .get_ref()
                .public_key_der
                .len()
        ),
        Op::Mac => format!(
            "{} bytes",
            c.generate_mac(mac_req(key, SECRET))
                .await?
                .get_ref()
                .mac
                .len()
        ),
        Op::VerifyMac => format!(
            "valid={}",
            c.verify_mac(verify_mac_req(key, SECRET, b"not a tag", None))
                .await?
                .get_ref()
                .valid
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// The classes.

/// Empty fields: a missing key reference on every RPC that takes one is INVALID_ARGUMENT naming
/// the field; empty payloads that are legitimate (plaintext, message, MAC data) work.
async fn empty_fields(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "empty fields";
    // (An empty ReEncrypt destination is documented as "the same key", so it is not here.)
    for op in OPS.into_iter().filter(|op| *op != Op::ReEncryptTo) {
        let r = run_op(fx, op, "", &fx.sm2_sealed).await;
        cat.refused(
            CLASS,
            &format!("{op:?}: key \"\""),
            r,
            Code::InvalidArgument,
            &["key is required"],
        );
    }
    let mut admin = fx.w.admin.keys.clone();
    cat.refused(
        CLASS,
        "DescribeKey: key \"\"",
        admin.describe_key(key_req("")).await,
        Code::InvalidArgument,
        &["key is required"],
    );
    cat.refused(
        CLASS,
        "RotateKey: key \"\"",
        admin.rotate_key(key_req("")).await,
        Code::InvalidArgument,
        &["key is required"],
    );
    cat.refused(
        CLASS,
        "CreateKey: no purpose, no algorithm",
        admin.create_key(v1::CreateKeyRequest::default()).await,
        Code::InvalidArgument,
        &["purpose is required"],
    );
    cat.refused(
        CLASS,
        "CreateKey: no algorithm",
        admin
            .create_key(v1::CreateKeyRequest {
                purpose: Purpose::Encrypt.into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["unknown key spec", "sm4-gcm"],
    );
    let mut c = fx.w.app.crypto.clone();
    cat.refused(
        CLASS,
        "GenerateRandom: length 0",
        c.generate_random(v1::GenerateRandomRequest { length: 0 })
            .await,
        Code::InvalidArgument,
        &["length", "1 to 1024"],
    );
    // Empty but meaningful: they work, and round-trip.
    let none = ctx(&[]);
    if let Some(r) = cat.accepted(
        CLASS,
        "Encrypt: empty plaintext",
        c.encrypt(enc(&fx.keys.sm4.id, b"", &none)).await,
    ) {
        let back = c.decrypt(dec(&r.into_inner().ciphertext, &none)).await;
        let ok = back
            .as_ref()
            .is_ok_and(|b| b.get_ref().plaintext.is_empty());
        cat.check(
            CLASS,
            "Decrypt: of the empty plaintext",
            ok,
            format!("{back:?}"),
        );
    }
    if let Some(r) = cat.accepted(
        CLASS,
        "Sign: empty message",
        c.sign(sign_req(&fx.keys.sm2_sign.id, b"", SigOpts::default()))
            .await,
    ) {
        let sig = r.into_inner().signature;
        let v = c
            .verify(verify_req(
                &fx.keys.sm2_sign.id,
                b"",
                &sig,
                SigOpts::default(),
                None,
            ))
            .await;
        let ok = v.as_ref().is_ok_and(|v| v.get_ref().valid);
        cat.check(CLASS, "Verify: empty message", ok, format!("{v:?}"));
    }
    cat.accepted(
        CLASS,
        "GenerateMac: empty data",
        c.generate_mac(mac_req(&fx.keys.hmac_sm3.id, b"")).await,
    );
    for (case, r) in [
        (
            "Verify: empty signature is invalid, not an error",
            c.verify(verify_req(
                &fx.keys.sm2_sign.id,
                SECRET,
                b"",
                SigOpts::default(),
                None,
            ))
            .await
            .map(|r| r.into_inner().valid),
        ),
        (
            "VerifyMac: empty tag is invalid, not an error",
            c.verify_mac(verify_mac_req(&fx.keys.hmac_sm3.id, SECRET, b"", None))
                .await
                .map(|r| r.into_inner().valid),
        ),
    ] {
        let ok = matches!(r, Ok(false));
        cat.check(CLASS, case, ok, format!("{r:?}"));
    }
    // An empty context key or value is a context like any other: bound, and required.
    let odd = ctx(&[("", "")]);
    if let Some(r) = cat.accepted(
        CLASS,
        "Encrypt: context {\"\": \"\"}",
        c.encrypt(enc(&fx.keys.sm4.id, SECRET, &odd)).await,
    ) {
        let ct = r.into_inner().ciphertext;
        cat.refused(
            CLASS,
            "Decrypt: without the {\"\": \"\"} context",
            c.decrypt(dec(&ct, &none)).await,
            Code::InvalidArgument,
            &["decryption failed"],
        );
        cat.accepted(
            CLASS,
            "Decrypt: with the {\"\": \"\"} context",
            c.decrypt(dec(&ct, &odd)).await,
        );
    }
}

/// Oversized fields beyond those `e2e/errors.rs` covers: key references, SM2 IDs, algorithm
/// and option names, ciphertexts, signatures, tags, public keys, contexts in every position.
async fn oversized_fields(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "oversized fields";
    let mut c = fx.w.app.crypto.clone();
    let none = ctx(&[]);
    let long_ref = "a".repeat(10 * KIB);
    for op in OPS {
        let r = run_op(fx, op, &long_ref, &fx.sm2_sealed).await;
        cat.refused(
            CLASS,
            &format!("{op:?}: 10 KiB alias"),
            r,
            Code::InvalidArgument,
            &["alias", "128"],
        );
    }
    let qualified = format!("{}:{}", "n".repeat(5 * KIB), "a".repeat(5 * KIB));
    cat.refused(
        CLASS,
        "Encrypt: 10 KiB namespace:alias",
        c.encrypt(enc(&qualified, SECRET, &none)).await,
        Code::InvalidArgument,
        &["namespace", "64"],
    );
    cat.refused(
        CLASS,
        "Encrypt: 129-character alias",
        c.encrypt(enc(&"b".repeat(129), SECRET, &none)).await,
        Code::InvalidArgument,
        &["alias", "128"],
    );
    cat.refused(
        CLASS,
        "DescribeKey: 10 KiB alias",
        fx.w.admin
            .keys
            .clone()
            .describe_key(key_req(&long_ref))
            .await,
        Code::InvalidArgument,
        &["alias"],
    );
    cat.refused(
        CLASS,
        "AsymmetricDecrypt: 64 KiB + 1 ciphertext",
        c.asymmetric_decrypt(asym_req(
            &fx.keys.sm2_asym.id,
            &secret_bytes(64 * KIB + 1),
            None,
        ))
        .await,
        Code::InvalidArgument,
        &["ciphertext", "65536"],
    );
    // A blob over the plaintext limit but inside the message limit: its header is real.
    let mut big_blob = fx.blob[..36].to_vec();
    big_blob.extend(secret_bytes(70 * KIB));
    cat.refused(
        CLASS,
        "Decrypt: 70 KiB blob under a real header",
        c.decrypt(dec(&big_blob, &fixture_context())).await,
        Code::InvalidArgument,
        &["decryption failed"],
    );
    cat.refused(
        CLASS,
        "ReEncrypt: source context 8 KiB + 1",
        c.re_encrypt(v1::ReEncryptRequest {
            ciphertext: fx.blob.clone(),
            source_context: big_context(8 * KIB + 1),
            destination_key: String::new(),
            destination_context: none.clone(),
        })
        .await,
        Code::InvalidArgument,
        &["context", "8192"],
    );
    cat.refused(
        CLASS,
        "DataKeyWithoutPlaintext: context 8 KiB + 1",
        c.generate_data_key_without_plaintext(data_key_req(
            &fx.keys.sm4.id,
            "sm4",
            &big_context(8 * KIB + 1),
        ))
        .await,
        Code::InvalidArgument,
        &["context", "8192"],
    );
    let many: HashMap<String, String> = (0..1200)
        .map(|i| (format!("k{i:04}"), "v1".to_owned()))
        .collect();
    cat.refused(
        CLASS,
        "Encrypt: 1200 small context entries (8.4 KiB)",
        c.encrypt(enc(&fx.keys.sm4.id, SECRET, &many)).await,
        Code::InvalidArgument,
        &["context", "8192"],
    );
    let sign = &fx.keys.sm2_sign.id;
    for (len, ok) in [
        (1024, true),
        (1025, false),
        (8 * KIB, false),
        (60 * KIB, false),
    ] {
        let id = "i".repeat(len);
        let o = SigOpts {
            sm2_id: &id,
            ..SigOpts::default()
        };
        let r = c.sign(sign_req(sign, SECRET, o)).await;
        if ok {
            cat.accepted(CLASS, &format!("Sign: SM2 ID of {len} bytes"), r);
        } else {
            cat.refused(
                CLASS,
                &format!("Sign: SM2 ID of {len} bytes"),
                r,
                Code::InvalidArgument,
                &["SM2 distinguishing ID", "1 to 1024 bytes"],
            );
            cat.refused(
                CLASS,
                &format!("Verify: SM2 ID of {len} bytes"),
                c.verify(verify_req(sign, SECRET, b"sig", o, None)).await,
                Code::InvalidArgument,
                &["SM2 distinguishing ID"],
            );
        }
    }
    for (field, o) in [
        (
            "hash",
            SigOpts {
                hash: "sha256-but-much-longer",
                ..SigOpts::default()
            },
        ),
        (
            "rsa_scheme",
            SigOpts {
                scheme: "pss-but-much-longer",
                ..SigOpts::default()
            },
        ),
    ] {
        cat.refused(
            CLASS,
            &format!("Sign: unknown {field}"),
            c.sign(sign_req(&fx.keys.rsa_sign.id, SECRET, o)).await,
            Code::InvalidArgument,
            &["unknown"],
        );
    }
    let huge_name = "x".repeat(10 * KIB);
    let o = SigOpts {
        hash: &huge_name,
        ..SigOpts::default()
    };
    cat.refused(
        CLASS,
        "Sign: 10 KiB hash name",
        c.sign(sign_req(&fx.keys.rsa_sign.id, SECRET, o)).await,
        Code::InvalidArgument,
        &["unknown digest", "…", "sha256"],
    );
    cat.refused(
        CLASS,
        "GenerateDataKey: 10 KiB key spec",
        c.generate_data_key(data_key_req(&fx.keys.sm4.id, &huge_name, &none))
            .await,
        Code::InvalidArgument,
        &["spec"],
    );
    cat.refused(
        CLASS,
        "CreateKey: 10 KiB algorithm name",
        fx.w.admin
            .keys
            .clone()
            .create_key(v1::CreateKeyRequest {
                namespace: subjects::APP_NS.to_owned(),
                purpose: Purpose::Encrypt.into(),
                algorithm: huge_name.clone(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["unknown key spec", "…", "sm4-gcm"],
    );
    for (case, r) in [
        (
            "Verify: 64 KiB signature is invalid",
            c.verify(verify_req(
                sign,
                SECRET,
                &secret_bytes(64 * KIB),
                SigOpts::default(),
                None,
            ))
            .await
            .map(|r| r.into_inner().valid),
        ),
        (
            "VerifyMac: 64 KiB tag is invalid",
            c.verify_mac(verify_mac_req(
                &fx.keys.hmac_sm3.id,
                SECRET,
                &secret_bytes(64 * KIB),
                None,
            ))
            .await
            .map(|r| r.into_inner().valid),
        ),
    ] {
        let ok = matches!(r, Ok(false));
        cat.check(CLASS, case, ok, format!("{r:?}"));
    }
    let mut req = data_key_req(&fx.keys.sm4.id, "sm4", &none);
    req.wrap_to_public_key = secret_bytes(60 * KIB);
    cat.refused(
        CLASS,
        "GenerateDataKey: 60 KiB of junk as the public key",
        c.generate_data_key(req).await,
        Code::InvalidArgument,
        &["public key"],
    );
    for length in [1025, u32::MAX] {
        cat.refused(
            CLASS,
            &format!("GenerateRandom: length {length}"),
            c.generate_random(v1::GenerateRandomRequest { length })
                .await,
            Code::InvalidArgument,
            &["1 to 1024"],
        );
    }
}

/// Every data-plane operation with every purpose and algorithm family of key: the matching
/// purpose works, every other one is refused naming KEY-5 (or, for public keys of symmetric
/// keys, FAILED_PRECONDITION saying there is none; Encrypt with an asymmetric-decrypt key is
/// encryption to its public key, which binds no context); options of the other algorithm family and
/// data-key specs that are not symmetric ciphers are refused.
async fn wrong_key_types(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "wrong key type";
    for key in fx.keys.healthy() {
        let sealed = if key.id == fx.keys.rsa_asym.id {
            &fx.rsa_sealed
        } else {
            &fx.sm2_sealed
        };
        for op in OPS {
            let case = format!("{op:?} with {:?} {}", key.purpose, key.algorithm);
            let r = run_op(fx, op, &key.id, sealed).await;
            let fits = match op.purpose() {
                Some(p) => p == key.purpose,
                None => matches!(key.purpose, Purpose::Sign | Purpose::AsymmetricDecrypt),
            };
            if fits {
                cat.accepted(CLASS, &case, r);
            } else if op == Op::Encrypt && key.purpose == Purpose::AsymmetricDecrypt {
                // Encrypt with an asymmetric-decrypt key encrypts to its public key (issue 19):
                // the context these cases send cannot be bound to it, and that is what is said.
                cat.refused(
                    CLASS,
                    &case,
                    r,
                    Code::InvalidArgument,
                    &["binds no context"],
                );
            } else if op == Op::GetPublicKey {
                cat.refused(
                    CLASS,
                    &case,
                    r,
                    Code::FailedPrecondition,
                    &["has no public key"],
                );
            } else {
                cat.refused(
                    CLASS,
                    &case,
                    r,
                    Code::InvalidArgument,
                    &["KEY-5", key.algorithm, op.purpose_word()],
                );
            }
        }
    }
    let mut c = fx.w.app.crypto.clone();
    let with = |sm2_id, scheme, hash| SigOpts {
        sm2_id,
        scheme,
        hash,
        ..SigOpts::default()
    };
    for (case, key, o, words) in [
        (
            "Sign: SM2 ID with an RSA key",
            &fx.keys.rsa_sign.id,
            with("alice@example", "", ""),
            &["SM2 distinguishing ID", "rsa-2048"][..],
        ),
        (
            "Sign: RSA scheme with an SM2 key",
            &fx.keys.sm2_sign.id,
            with("", "pss", ""),
            &["RSA scheme", "sm2"][..],
        ),
        (
            "Sign: SHA-256 with an SM2 key",
            &fx.keys.sm2_sign.id,
            with("", "", "sha256"),
            &["hash", "sm2"][..],
        ),
        (
            "Sign: SM3 with an RSA key",
            &fx.keys.rsa_sign.id,
            with("", "", "sm3"),
            &["RSA with SM3"][..],
        ),
    ] {
        cat.refused(
            CLASS,
            case,
            c.sign(sign_req(key, SECRET, o)).await,
            Code::InvalidArgument,
            words,
        );
        cat.refused(
            CLASS,
            &case.replace("Sign", "Verify"),
            c.verify(verify_req(key, SECRET, b"sig", o, None)).await,
            Code::InvalidArgument,
            words,
        );
    }
    for spec in ["hmac-sm3", "sm2", "rsa-2048", "sm4-gcm-but-not"] {
        cat.refused(
            CLASS,
            &format!("GenerateDataKey: key spec {spec:?}"),
            c.generate_data_key(data_key_req(&fx.keys.sm4.id, spec, &ctx(&[])))
                .await,
            Code::InvalidArgument,
            &["spec"],
        );
    }
    // An SM4 blob relabelled as AES-256-GCM: the header no longer matches the key.
    let mut relabelled = fx.blob.clone();
    relabelled[3] = 2;
    cat.refused(
        CLASS,
        "Decrypt: SM4 blob relabelled AES-256-GCM",
        c.decrypt(dec(&relabelled, &fixture_context())).await,
        Code::InvalidArgument,
        &[],
    );
    // A DIGEST of the wrong length.
    let digest = SigOpts {
        digest: true,
        ..SigOpts::default()
    };
    cat.refused(
        CLASS,
        "Sign: 31-byte DIGEST",
        c.sign(sign_req(&fx.keys.sm2_sign.id, &[7; 31], digest))
            .await,
        Code::InvalidArgument,
        &["digest", "32, 48 or 64"],
    );
}

/// Keys that do not exist, and keys in every state that is not enabled. (Disabled, pending and
/// compromised keys are checked per RPC by `e2e/lifecycle.rs`; destroyed keys and unknown ids
/// on every RPC are new here.)
async fn unusable_keys(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "unknown/unusable keys";
    let ghost = "5f0c7a2e-9d1b-4c3a-8e6f-0a1b2c3d4e5f";
    for op in OPS {
        let r = run_op(fx, op, ghost, &fx.sm2_sealed).await;
        cat.refused(
            CLASS,
            &format!("{op:?}: unknown key id"),
            r,
            Code::NotFound,
            &["key", ghost, "not found"],
        );
        let r = run_op(fx, op, "payments:no-such-alias", &fx.sm2_sealed).await;
        cat.refused(
            CLASS,
            &format!("{op:?}: unknown alias"),
            r,
            Code::NotFound,
            &["no-such-alias", "not found"],
        );
    }
    for (state, quad) in &fx.keys.by_state {
        for key in quad {
            for op in OPS {
                let fits = match op.purpose() {
                    Some(p) => p == key.purpose,
                    None => matches!(key.purpose, Purpose::Sign | Purpose::AsymmetricDecrypt),
                };
                if !fits {
                    continue;
                }
                let sealed = fx
                    .made
                    .iter()
                    .find_map(|m| match m {
                        Made::Sealed {
                            key: k, ciphertext, ..
                        } if *k == key.id => Some(ciphertext.clone()),
                        Made::Blob { .. }
                        | Made::Signature { .. }
                        | Made::Tag { .. }
                        | Made::Sealed { .. } => None,
                    })
                    .unwrap_or_default();
                let case = format!("{op:?} with a {state} {}", key.algorithm);
                let r = run_op(fx, op, &key.id, &sealed).await;
                // What each state still allows (KEY-8): public keys while the key exists;
                // opening and checking old work while it is compromised.
                let allowed = match *state {
                    "destroyed" => false,
                    "compromised" => matches!(
                        op,
                        Op::Verify | Op::AsymmetricDecrypt | Op::VerifyMac | Op::GetPublicKey
                    ),
                    _ => op == Op::GetPublicKey,
                };
                if allowed {
                    cat.accepted(CLASS, &case, r);
                } else {
                    let named = state.replace(' ', "_");
                    cat.refused(
                        CLASS,
                        &case,
                        r,
                        Code::FailedPrecondition,
                        &[&named, "not allowed"],
                    );
                }
            }
        }
    }
    // Work made before the destruction can no longer be opened or checked.
    let (_, destroyed) = fx
        .keys
        .by_state
        .iter()
        .find(|(s, _)| *s == "destroyed")
        .unwrap();
    let blob = fx
        .made
        .iter()
        .find_map(|m| match m {
            Made::Blob { ciphertext, .. } if ciphertext[4..20] == uuid_bytes(&destroyed[0].id) => {
                Some(ciphertext.clone())
            }
            Made::Blob { .. } | Made::Signature { .. } | Made::Tag { .. } | Made::Sealed { .. } => {
                None
            }
        })
        .unwrap();
    let mut c = fx.w.app.crypto.clone();
    cat.refused(
        CLASS,
        "Decrypt: a blob of a destroyed key",
        c.decrypt(dec(&blob, &fixture_context())).await,
        Code::FailedPrecondition,
        &["destroyed"],
    );
    cat.refused(
        CLASS,
        "ReEncrypt: a blob of a destroyed key",
        c.re_encrypt(v1::ReEncryptRequest {
            ciphertext: blob,
            source_context: fixture_context(),
            destination_key: fx.keys.sm4.id.clone(),
            destination_context: ctx(&[]),
        })
        .await,
        Code::FailedPrecondition,
        &["destroyed"],
    );
    for (case, version) in [("key version 0", 0), ("key version 99", 99)] {
        cat.refused(
            CLASS,
            &format!("GetPublicKey: {case}"),
            c.get_public_key(public_key_req(&fx.keys.sm2_sign.id, Some(version)))
                .await,
            Code::NotFound,
            &["version"],
        );
        cat.refused(
            CLASS,
            &format!("VerifyMac: {case}"),
            c.verify_mac(verify_mac_req(
                &fx.keys.hmac_sm3.id,
                SECRET,
                b"t",
                Some(version),
            ))
            .await,
            Code::NotFound,
            &["version"],
        );
    }
}

fn uuid_bytes(s: &str) -> Vec<u8> {
    hex::decode(s.replace('-', "")).unwrap()
}

/// Every byte of a blob flipped, and the blob cut at every length: the header fields get the
/// status their meaning calls for (malformed → INVALID_ARGUMENT, another key or version →
/// NOT_FOUND) and everything under the AEAD (nonce, body, tag, and the header bytes that still
/// parse) fails with one uniform message. The same for SM2 and RSA-OAEP ciphertexts.
async fn tampered_ciphertexts(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "tampered ciphertexts";
    let mut c = fx.w.app.crypto.clone();
    let context = fixture_context();
    let good = c
        .encrypt(enc(&fx.keys.sm4.id, b"twelve bytes", &context))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    assert_eq!(good.len(), 36 + 12 + 16);
    let mut uniform: Vec<String> = Vec::new();
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 1 << (i % 8);
        let (class_of_byte, code, words): (&str, Code, &[&str]) = match i {
            0..=1 => ("magic", Code::InvalidArgument, &["ciphertext"]),
            2 => ("format version", Code::InvalidArgument, &["version"]),
            3 => ("algorithm", Code::InvalidArgument, &["algorithm"]),
            4..=19 => ("key id", Code::NotFound, &["not found"]),
            20..=23 if u32::from_be_bytes(b[20..24].try_into().unwrap()) == 0 => {
                ("key version (0)", Code::InvalidArgument, &["version"])
            }
            20..=23 => ("key version", Code::NotFound, &["version", "not found"]),
            24..=35 => ("nonce", Code::InvalidArgument, &["decryption failed"]),
            36..=47 => ("body", Code::InvalidArgument, &["decryption failed"]),
            _ => ("tag", Code::InvalidArgument, &["decryption failed"]),
        };
        let r = c.decrypt(dec(&b, &context)).await;
        if let Some(s) = cat.refused(
            CLASS,
            &format!(
                "Decrypt: bit {} of byte {i} ({class_of_byte}) flipped",
                i % 8
            ),
            r,
            code,
            words,
        ) && i >= 24
        {
            uniform.push(without_request_id(&s).to_owned());
        }
    }
    for len in 0..good.len() {
        let r = c.decrypt(dec(&good[..len], &context)).await;
        let words: &[&str] = if len >= 36 + 16 {
            &["decryption failed"]
        } else {
            &["ciphertext"]
        };
        if let Some(s) = cat.refused(
            CLASS,
            &format!("Decrypt: cut to {len} bytes"),
            r,
            Code::InvalidArgument,
            words,
        ) && len >= 36 + 16
        {
            uniform.push(without_request_id(&s).to_owned());
        }
    }
    // The same under ReEncrypt and for a data key's blob.
    let dk = c
        .generate_data_key(data_key_req(&fx.keys.aes.id, "sm4", &context))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    for (what, i) in [("nonce", 30), ("body", 40), ("tag", dk.len() - 1)] {
        let mut b = dk.clone();
        b[i] ^= 0x40;
        if let Some(s) = cat.refused(
            CLASS,
            &format!("Decrypt: data key blob, {what} flipped"),
            c.decrypt(dec(&b, &context)).await,
            Code::InvalidArgument,
            &["decryption failed"],
        ) {
            uniform.push(without_request_id(&s).to_owned());
        }
        if let Some(s) = cat.refused(
            CLASS,
            &format!("ReEncrypt: data key blob, {what} flipped"),
            c.re_encrypt(v1::ReEncryptRequest {
                ciphertext: b,
                source_context: context.clone(),
                destination_key: String::new(),
                destination_context: ctx(&[]),
            })
            .await,
            Code::InvalidArgument,
            &["decryption failed"],
        ) {
            uniform.push(without_request_id(&s).to_owned());
        }
    }
    uniform.sort();
    uniform.dedup();
    cat.check(
        CLASS,
        "one message for every AEAD failure (no oracle)",
        uniform.len() == 1,
        format!("{uniform:?}"),
    );

    // SM2 (GM/T 0009 DER: SEQUENCE { x, y, C3, C2 }) and RSA-OAEP: every byte of the SM2
    // ciphertext, and a spread of the RSA one, flipped; cut short; extended.
    let mut asym_messages: Vec<String> = Vec::new();
    for (key, sealed, step) in [
        (&fx.keys.sm2_asym.id, &fx.sm2_sealed, 1),
        (&fx.keys.rsa_asym.id, &fx.rsa_sealed, 17),
    ] {
        let alg = if step == 1 { "SM2" } else { "RSA-OAEP" };
        let mut variants: Vec<(String, Vec<u8>)> = (0..sealed.len())
            .step_by(step)
            .map(|i| {
                let mut b = sealed.clone();
                b[i] ^= 1 << (i % 8);
                (format!("byte {i} flipped"), b)
            })
            .collect();
        variants.push((
            "cut by one byte".into(),
            sealed[..sealed.len() - 1].to_vec(),
        ));
        variants.push(("cut in half".into(), sealed[..sealed.len() / 2].to_vec()));
        variants.push(("one byte appended".into(), [&sealed[..], &[0]].concat()));
        for (what, b) in variants {
            if let Some(s) = cat.refused(
                CLASS,
                &format!("AsymmetricDecrypt {alg}: {what}"),
                c.asymmetric_decrypt(asym_req(key, &b, None)).await,
                Code::InvalidArgument,
                &["decryption failed"],
            ) {
                asym_messages.push(without_request_id(&s).to_owned());
            }
        }
    }
    asym_messages.sort();
    asym_messages.dedup();
    cat.check(
        CLASS,
        "one message for every SM2/RSA decryption failure",
        asym_messages.len() == 1,
        format!("{asym_messages:?}"),
    );
    // The originals still open.
    let back = c.decrypt(dec(&good, &context)).await;
    let ok = back
        .as_ref()
        .is_ok_and(|b| b.get_ref().plaintext == b"twelve bytes");
    cat.check(
        CLASS,
        "the untouched blob still opens",
        ok,
        format!("{back:?}"),
    );
}

/// Contexts one byte (or one entry) away from the one the blob is bound to: all fail alike.
async fn contexts_one_byte_apart(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "context one byte off";
    let mut c = fx.w.app.crypto.clone();
    let base = ctx(&[("tenant", "acme-0001"), ("purpose", SECRET_CONTEXT)]);
    let blob = c
        .encrypt(enc(&fx.keys.aes.id, SECRET, &base))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let with = |pairs: &[(&str, &str)]| ctx(pairs);
    let cases: Vec<(&str, HashMap<String, String>)> = vec![
        (
            "value's last byte",
            with(&[("tenant", "acme-0002"), ("purpose", SECRET_CONTEXT)]),
        ),
        (
            "key's last byte",
            with(&[("tenanu", "acme-0001"), ("purpose", SECRET_CONTEXT)]),
        ),
        (
            "key's case",
            with(&[("Tenant", "acme-0001"), ("purpose", SECRET_CONTEXT)]),
        ),
        (
            "trailing space",
            with(&[("tenant", "acme-0001 "), ("purpose", SECRET_CONTEXT)]),
        ),
        (
            "trailing NUL",
            with(&[("tenant", "acme-0001\0"), ("purpose", SECRET_CONTEXT)]),
        ),
        (
            "one byte moved from key to value",
            with(&[("tenan", "tacme-0001"), ("purpose", SECRET_CONTEXT)]),
        ),
        (
            "values swapped",
            with(&[("tenant", SECRET_CONTEXT), ("purpose", "acme-0001")]),
        ),
        ("entry missing", with(&[("tenant", "acme-0001")])),
        (
            "entry added",
            with(&[
                ("tenant", "acme-0001"),
                ("purpose", SECRET_CONTEXT),
                ("x", ""),
            ]),
        ),
        (
            "empty key added",
            with(&[
                ("tenant", "acme-0001"),
                ("purpose", SECRET_CONTEXT),
                ("", ""),
            ]),
        ),
        ("no context", with(&[])),
    ];
    let mut messages = Vec::new();
    for (what, context) in &cases {
        for (rpc, r) in [
            ("Decrypt", c.decrypt(dec(&blob, context)).await.map(|_| ())),
            (
                "ReEncrypt",
                c.re_encrypt(v1::ReEncryptRequest {
                    ciphertext: blob.clone(),
                    source_context: context.clone(),
                    destination_key: fx.keys.sm4.id.clone(),
                    destination_context: base.clone(),
                })
                .await
                .map(|_| ()),
            ),
        ] {
            if let Some(s) = cat.refused(
                CLASS,
                &format!("{rpc}: {what}"),
                r,
                Code::InvalidArgument,
                &["decryption failed"],
            ) {
                messages.push(without_request_id(&s).to_owned());
            }
        }
    }
    // Unicode: a precomposed "é" and "e" + combining accent look alike and are different bytes.
    let nfc = ctx(&[("name", "caf\u{e9}")]);
    let nfd = ctx(&[("name", "cafe\u{301}")]);
    let b = c
        .encrypt(enc(&fx.keys.sm4.id, SECRET, &nfc))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    if let Some(s) = cat.refused(
        CLASS,
        "Decrypt: NFD spelling of an NFC context",
        c.decrypt(dec(&b, &nfd)).await,
        Code::InvalidArgument,
        &["decryption failed"],
    ) {
        messages.push(without_request_id(&s).to_owned());
    }
    messages.sort();
    messages.dedup();
    cat.check(
        CLASS,
        "one message for every wrong context",
        messages.len() == 1,
        format!("{messages:?}"),
    );
    let back = c.decrypt(dec(&blob, &base)).await;
    let ok = back.as_ref().is_ok_and(|b| b.get_ref().plaintext == SECRET);
    cat.check(
        CLASS,
        "the right context still opens",
        ok,
        format!("{back:?}"),
    );
}

/// SM2 distinguishing IDs: empty is the GM/T 0009 default; one byte off does not verify; too
/// long is refused (above); not UTF-8 cannot be decoded (the field is a proto `string`, so the
/// bytes go in raw, as a `bytes` field of the same tag would send them).
async fn sm2_ids(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "SM2 IDs";
    let key = &fx.keys.sm2_sign.id;
    let mut c = fx.w.app.crypto.clone();
    let id = |sm2_id| SigOpts {
        sm2_id,
        ..SigOpts::default()
    };
    let sig_default = c
        .sign(sign_req(key, SECRET, id("")))
        .await
        .unwrap()
        .into_inner()
        .signature;
    for (case, verify_id, want) in [
        (
            "signed with \"\", verified with the default ID",
            "1234567812345678",
            true,
        ),
        (
            "signed with \"\", verified with the default ID one byte off",
            "1234567812345679",
            false,
        ),
        (
            "signed with \"\", verified with a NUL-extended default ID",
            "1234567812345678\0",
            false,
        ),
    ] {
        let r = c
            .verify(verify_req(key, SECRET, &sig_default, id(verify_id), None))
            .await
            .map(|r| r.into_inner().valid);
        cat.check(
            CLASS,
            case,
            r.as_ref().ok() == Some(&want),
            format!("{r:?}"),
        );
    }
    let odd = "id\0with\u{7f}controls\u{1b}[0m";
    let sig_odd = c
        .sign(sign_req(key, SECRET, id(odd)))
        .await
        .unwrap()
        .into_inner()
        .signature;
    let r = c
        .verify(verify_req(key, SECRET, &sig_odd, id(odd), None))
        .await
        .map(|r| r.into_inner().valid);
    cat.check(
        CLASS,
        "control characters: signs and verifies",
        r.as_ref().ok() == Some(&true),
        format!("{r:?}"),
    );

    // Not UTF-8: a second field 4 with raw bytes (the last occurrence wins in proto3).
    let ch = app_channel(fx).await;
    let mut body = v1::SignRequest {
        key: key.clone(),
        message: SECRET.to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    body.extend(pb_bytes_field(4, &[0xff, 0xfe, b'i', b'd', 0xc3, 0x28]));
    cat.refused(
        CLASS,
        "Sign: SM2 ID not UTF-8",
        raw_unary(ch.clone(), "/kms.v1.Crypto/Sign", body).await,
        Code::InvalidArgument,
        &["sm2_id", "UTF-8"],
    );
    let mut body = v1::VerifyRequest {
        key: key.clone(),
        message: SECRET.to_vec(),
        signature: sig_default,
        ..Default::default()
    }
    .encode_to_vec();
    body.extend(pb_bytes_field(4, &[0xed, 0xa0, 0x80])); // an encoded surrogate
    cat.refused(
        CLASS,
        "Verify: SM2 ID an encoded UTF-16 surrogate",
        raw_unary(ch, "/kms.v1.Crypto/Verify", body).await,
        Code::InvalidArgument,
        &["sm2_id", "UTF-8"],
    );
}

/// The password shield (issue 22 item 2): sealed passwords that are empty, too large (a 1 MiB
/// nonce inside the seal), not ciphertext, not the structure (each field out of range), stale
/// or far in the future, replayed; identifiers and stored hashes out of range; keys of another
/// purpose.
async fn sealed_passwords(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "password shield";
    let (login, pepper) = (&fx.keys.password.id, &fx.keys.pepper.id);
    let der =
        fx.w.app
            .crypto
            .clone()
            .get_public_key(public_key_req(login, None))
            .await
            .unwrap()
            .into_inner()
            .public_key_der;
    let policy = kms_core::policy::Policy::default();
    let public = kms_core::crypto::PublicKey::from_spki_der(policy, &der).unwrap();
    let to = policy
        .approve(kms_core::alg::Purpose::Password, public.spec())
        .unwrap();
    let encrypt =
        |plain: &[u8]| kms_core::crypto::encrypt_to_public_key(&to, &public, plain).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The structure written out (docs/FORMATS.md), with any field value.
    let structure = |ts: u64, nonce: &[u8], password: &[u8]| -> Vec<u8> {
        let mut b = b"KPW1".to_vec();
        b.extend_from_slice(&ts.to_be_bytes());
        b.push(u8::try_from(nonce.len()).unwrap_or(u8::MAX));
        b.extend_from_slice(nonce);
        b.extend_from_slice(
            &u16::try_from(password.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        b.extend_from_slice(password);
        b
    };
    let mut counter = 0u8;
    let mut nonce = || {
        counter += 1;
        let mut n = kms_core::crypto::rng::random_public(16).unwrap();
        n[0] = counter;
        n
    };
    let mut shield = fx.w.app.password.clone();
    let hash = |sealed: Vec<u8>, identifiers: Vec<String>| v1::HashPasswordRequest {
        password_key: login.clone(),
        pepper_key: pepper.clone(),
        sealed_password: sealed,
        identifiers,
    };
    let password: &[u8] = b"S3cret-passw0rd";
    for (case, sealed, words) in [
        (
            "empty sealed password",
            Vec::new(),
            &["sealed password", "1 to 1024"][..],
        ),
        (
            "a 60 KiB nonce inside the seal",
            encrypt(
                &[
                    b"KPW1".as_slice(),
                    &[0; 9],
                    &vec![7; 60 * KIB],
                    &[0, 8],
                    password,
                ]
                .concat(),
            ),
            &["sealed password", "too large"][..],
        ),
        (
            "junk, not SM2 ciphertext",
            secret_bytes(200),
            &["decryption failed"][..],
        ),
        (
            "decrypts, but JSON instead of the structure",
            encrypt(b"{\"password\":\"x\"}"),
            &["KPW1"][..],
        ),
        (
            "nonce of 15 bytes",
            encrypt(&structure(now, &[1; 15], password)),
            &["nonce must be 16 to 32 bytes"][..],
        ),
        (
            "nonce of 33 bytes",
            encrypt(&structure(now, &[1; 33], password)),
            &["nonce must be 16 to 32 bytes"][..],
        ),
        (
            "empty password",
            encrypt(&structure(now, &nonce(), b"")),
            &["password must be 1 to 256 bytes"][..],
        ),
        (
            "password of 257 bytes",
            encrypt(&structure(now, &nonce(), &[b'a'; 257])),
            &["password must be 1 to 256 bytes"][..],
        ),
        (
            "password not UTF-8",
            encrypt(&structure(now, &nonce(), b"passw0rd\xff")),
            &["not UTF-8"][..],
        ),
        (
            "a byte after the password",
            encrypt(&[structure(now, &nonce(), password).as_slice(), b"!"].concat()),
            &["bytes after the password"][..],
        ),
        (
            "timestamp one hour in the future",
            encrypt(&structure(now + 3600, &nonce(), password)),
            &["outside the", "window"][..],
        ),
        (
            "timestamp far in the future (u64::MAX)",
            encrypt(&structure(u64::MAX, &nonce(), password)),
            &["outside the", "window"][..],
        ),
        (
            "timestamp 0",
            encrypt(&structure(0, &nonce(), password)),
            &["outside the", "window"][..],
        ),
    ] {
        cat.refused(
            CLASS,
            &format!("HashPassword: {case}"),
            shield.hash_password(hash(sealed, Vec::new())).await,
            Code::InvalidArgument,
            words,
        );
    }
    // A 1 MiB nonce makes a message past the server's limit: refused before it is decoded,
    // naming the limit (as every oversized message, `e2e/errors.rs`).
    let huge = encrypt(
        &[
            b"KPW1".as_slice(),
            &[0; 9],
            &vec![7; 1024 * KIB],
            &[0, 8],
            password,
        ]
        .concat(),
    );
    let max = Limits::default().max_message_bytes().to_string();
    cat.refused(
        CLASS,
        "HashPassword: a 1 MiB nonce inside the seal",
        shield.hash_password(hash(huge, Vec::new())).await,
        Code::OutOfRange,
        &[&max],
    );
    for (case, ids, words) in [
        (
            "an empty identifier",
            vec![String::new()],
            &["identifiers", "1 to 256 bytes"][..],
        ),
        (
            "17 identifiers",
            vec!["13800138000".to_owned(); 17],
            &["identifiers"][..],
        ),
        (
            "an identifier of 300 bytes",
            vec!["1".repeat(300)],
            &["identifiers", "too large"][..],
        ),
    ] {
        let sealed = encrypt(&structure(now, &nonce(), password));
        cat.refused(
            CLASS,
            &format!("HashPassword: {case}"),
            shield.hash_password(hash(sealed, ids)).await,
            Code::InvalidArgument,
            words,
        );
    }
    for (case, pw, words) in [
        (
            "a password of 7 characters",
            b"abc1234".as_slice(),
            &["too weak", "fewer than 8 characters"][..],
        ),
        (
            "a password without a digit",
            b"abcdefghij",
            &["too weak", "no digit"][..],
        ),
        (
            "a password without a letter",
            b"1234567890",
            &["too weak", "no letter"][..],
        ),
        (
            "a password containing the phone number",
            b"me13800138000",
            &["too weak", "identifier 0"][..],
        ),
    ] {
        let sealed = encrypt(&structure(now, &nonce(), pw));
        cat.refused(
            CLASS,
            &format!("HashPassword: {case}"),
            shield
                .hash_password(hash(sealed, vec!["13800138000".to_owned()]))
                .await,
            Code::InvalidArgument,
            words,
        );
    }
    let good = encrypt(&structure(now, &nonce(), password));
    let stored = cat
        .accepted(
            CLASS,
            "HashPassword: a good sealed password",
            shield.hash_password(hash(good.clone(), Vec::new())).await,
        )
        .map(|r| r.into_inner().hash)
        .unwrap_or_default();
    cat.refused(
        CLASS,
        "HashPassword: the same sealed password again (replay)",
        shield.hash_password(hash(good, Vec::new())).await,
        Code::AlreadyExists,
        &["already used"],
    );
    let verify = |sealed: Vec<u8>, stored: String| v1::VerifyPasswordRequest {
        password_key: login.clone(),
        sealed_password: sealed,
        stored_hash: stored,
        identifiers: Vec::new(),
    };
    for (case, stored_hash, words) in [
        (
            "an empty stored hash",
            String::new(),
            &["stored hash", "$kms-pepper$"][..],
        ),
        (
            "a bare argon2id PHC string",
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_owned(),
            &["stored hash", "$kms-pepper$"][..],
        ),
        (
            "a stored hash of 600 characters",
            format!("{stored}{}", "A".repeat(600)),
            &["stored hash", "too large"][..],
        ),
        (
            "a stored hash with its cost raised past the bound",
            stored.replacen(
                &format!("m={},", kms_core::PasswordSettings::DEFAULT.argon2_m_kib),
                "m=1000000,",
                1,
            ),
            &["stored hash", "argon2id m must be"][..],
        ),
    ] {
        let sealed = encrypt(&structure(now, &nonce(), password));
        cat.refused(
            CLASS,
            &format!("VerifyPassword: {case}"),
            shield.verify_password(verify(sealed, stored_hash)).await,
            Code::InvalidArgument,
            words,
        );
    }
    let sealed = encrypt(&structure(now, &nonce(), password));
    let matched = shield
        .verify_password(verify(sealed, stored.clone()))
        .await
        .map(|r| r.into_inner().matched);
    cat.check(
        CLASS,
        "VerifyPassword: the right password matches",
        matched.as_ref().ok() == Some(&true),
        format!("{matched:?}"),
    );
    // Keys of another purpose, either way round.
    let sealed = encrypt(&structure(now, &nonce(), password));
    cat.refused(
        CLASS,
        "HashPassword: an asymmetric-decrypt key as the password key",
        shield
            .hash_password(v1::HashPasswordRequest {
                password_key: fx.keys.sm2_asym.id.clone(),
                ..hash(sealed.clone(), Vec::new())
            })
            .await,
        Code::InvalidArgument,
        &["cannot be used for password", "KEY-5"],
    );
    cat.refused(
        CLASS,
        "HashPassword: a MAC key as the pepper",
        shield
            .hash_password(v1::HashPasswordRequest {
                pepper_key: fx.keys.hmac_sm3.id.clone(),
                ..hash(sealed, Vec::new())
            })
            .await,
        Code::InvalidArgument,
        &["cannot be used for pepper", "KEY-5"],
    );
}

async fn app_channel(fx: &Fixture) -> Channel {
    let config = net::client_config(fx.w.pki.ca.cert_pem(), Some(&fx.w.pki.app), MODERN);
    net::channel(fx.w.server.addr, config).await.unwrap()
}

/// Request bodies that are not the message they claim to be. Protobuf decode failures are
/// INVALID_ARGUMENT (the sender's fault, `kms_proto::codec`; prost alone says INTERNAL), with
/// a message saying it is not valid protobuf and prost's words naming the field and problem; out-of-range enums decode (proto3 keeps
/// unknown values) and are refused by the conversion.
async fn malformed_protobuf(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "malformed protobuf";
    let ch = app_channel(fx).await;
    let key = fx.keys.sm4.id.as_bytes();
    // Field 15 (unknown, so skipped) as a varint that never ends within ten bytes.
    let mut varint_overflow = vec![0x78];
    varint_overflow.extend([0xff; 11]);
    let mut bad_map_entry = pb_bytes_field(1, key);
    bad_map_entry.extend(pb_bytes_field(
        3,
        &[pb_bytes_field(1, &[0xc0, 0xaf]), pb_bytes_field(2, b"v")].concat(),
    ));
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "length past the end",
            vec![0x0a, 0x64, b'a', b'b'],
            &["decode"],
        ),
        ("wire type 7", vec![0x0f, 0x00], &["wire type"]),
        ("field number 0", vec![0x02, 0x00], &["tag"]),
        ("varint of 11 bytes", varint_overflow, &["invalid varint"]),
        (
            "string field sent as varint",
            vec![0x08, 0x01],
            &["wire type"],
        ),
        (
            "key not UTF-8",
            pb_bytes_field(1, &[b'k', 0xc3]),
            &["key", "UTF-8"],
        ),
        ("context key not UTF-8", bad_map_entry, &["UTF-8"]),
        ("a lone byte", vec![0x80], &["decode"]),
    ];
    for (what, body, words) in cases {
        let mut w = vec!["not valid protobuf", "failed to decode"];
        w.extend_from_slice(words);
        cat.refused(
            CLASS,
            &format!("Encrypt: {what}"),
            raw_unary(ch.clone(), "/kms.v1.Crypto/Encrypt", body).await,
            Code::InvalidArgument,
            &w,
        );
    }
    // From an unregistered certificate the body is never read: the gate refuses on the
    // certificate alone (issue 18 item 6), so the same bytes get PERMISSION_DENIED.
    let stranger_config =
        net::client_config(fx.w.pki.ca.cert_pem(), Some(&fx.w.pki.stranger), MODERN);
    let stranger = net::channel(fx.w.server.addr, stranger_config)
        .await
        .unwrap();
    cat.refused(
        CLASS,
        "Encrypt from an unregistered certificate: a lone byte",
        raw_unary(stranger, "/kms.v1.Crypto/Encrypt", vec![0x80]).await,
        Code::PermissionDenied,
        &["is not a registered principal"],
    );
    // Decodes, then the conversion refuses it.
    cat.refused(
        CLASS,
        "Encrypt: empty body (every field default)",
        raw_unary(ch.clone(), "/kms.v1.Crypto/Encrypt", Vec::new()).await,
        Code::InvalidArgument,
        &["key is required"],
    );
    let mut sign = v1::SignRequest {
        key: fx.keys.sm2_sign.id.clone(),
        message: SECRET.to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    sign.push(0x18);
    pb_varint(&mut sign, 7);
    cat.refused(
        CLASS,
        "Sign: message_type 7",
        raw_unary(ch.clone(), "/kms.v1.Crypto/Sign", sign).await,
        Code::InvalidArgument,
        &["message_type", "RAW or DIGEST"],
    );
    let admin_config = net::client_config(fx.w.pki.ca.cert_pem(), Some(&fx.w.pki.admin), MODERN);
    let admin = net::channel(fx.w.server.addr, admin_config).await.unwrap();
    let mut create = v1::CreateKeyRequest {
        namespace: subjects::APP_NS.to_owned(),
        algorithm: "sm4-gcm".to_owned(),
        ..Default::default()
    }
    .encode_to_vec();
    create.push(0x10);
    pb_varint(&mut create, 99);
    cat.refused(
        CLASS,
        "CreateKey: purpose 99",
        raw_unary(admin, "/kms.v1.KeyAdmin/CreateKey", create).await,
        Code::InvalidArgument,
        &["purpose"],
    );
    // Unknown fields are skipped (proto3): the request works.
    let mut extra = v1::EncryptRequest {
        key: fx.keys.sm4.id.clone(),
        plaintext: b"with an unknown field".to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    extra.extend(pb_bytes_field(99, b"ignored"));
    cat.accepted(
        CLASS,
        "Encrypt: unknown field 99",
        raw_unary(ch.clone(), "/kms.v1.Crypto/Encrypt", extra).await,
    );
    for path in [
        "/kms.v1.Crypto/Nope",
        "/kms.v2.Crypto/Encrypt",
        "/kms.v1.Nope/Encrypt",
    ] {
        cat.refused(
            CLASS,
            &format!("unknown method {path}"),
            raw_unary(ch.clone(), path, Vec::new()).await,
            Code::Unimplemented,
            &[],
        );
    }
}

/// What a client whose certificate the server refuses sees: the handshake's error, or (TLS 1.3,
/// where the client finishes first) the alert on its first read.
async fn tls_refusal(
    w: &World,
    identity: &Identity,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> String {
    let config = net::client_config(w.pki.ca.cert_pem(), Some(identity), versions);
    let seen = match net::handshake(w.server.addr, config.clone()).await {
        Err(e) => e.to_string(),
        Ok(mut stream) => {
            let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 64];
            match stream.read(&mut buf).await {
                Ok(0) => "connection closed".to_owned(),
                Ok(n) => format!("read {n} bytes: the server accepted the certificate"),
                Err(e) => e.to_string(),
            }
        }
    };
    if let Ok(ch) = net::channel(w.server.addr, config).await
        && let Ok(r) = Clients::new(ch).system.status(v1::StatusRequest {}).await
    {
        return format!("an RPC got an answer: {r:?}");
    }
    seen
}

/// Client certificates the CA issued but that are not fit for use: each is refused in the
/// handshake with the alert that says why. (No certificate, another CA, TLS 1.1 and a
/// certificate naming nobody are covered by `e2e/tls.rs` and `e2e/authz.rs`.)
async fn malformed_certificates(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "certificates";
    let ca = &fx.w.pki.ca;
    let uri = subjects::APP;
    let cases: Vec<(&str, Identity, &str)> = vec![
        (
            "expired",
            ca.client_uri_with(uri, |p| {
                p.not_before = date_time_ymd(2020, 1, 1);
                p.not_after = date_time_ymd(2021, 1, 1);
            }),
            "CertificateExpired",
        ),
        (
            "not yet valid",
            ca.client_uri_with(uri, |p| {
                p.not_before = date_time_ymd(2090, 1, 1);
                p.not_after = date_time_ymd(2091, 1, 1);
            }),
            "CertificateExpired",
        ),
        (
            "server-auth EKU only",
            ca.client_uri_with(uri, |p| {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }),
            "UnsupportedCertificate",
        ),
    ];
    for (what, identity, alert) in cases {
        for (v, versions) in [("TLS 1.3", TLS13_ONLY), ("TLS 1.2", TLS12_ONLY)] {
            let seen = tls_refusal(&fx.w, &identity, versions).await;
            cat.check(
                CLASS,
                &format!("{what} client certificate, {v}"),
                seen.contains(alert),
                format!("refused: {seen}"),
            );
        }
    }
    // rustls will not even present a certificate with an unknown critical extension (it parses
    // its own certificate), so OpenSSL presents it.
    let odd = ca.client_uri_with(uri, |p| {
        let mut ext =
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 1], vec![0x05, 0x00]);
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
    });
    let dir = Scratch::new();
    let ca_file = dir.write("ca.pem", ca.cert_pem());
    let cert = dir.write("odd.pem", &odd.cert_pem);
    let key = dir.write("odd-key.pem", &odd.key_pem);
    let connect = fx.w.server.addr.to_string();
    for version in ["-tls1_3", "-tls1_2"] {
        let out = openssl(
            &[
                "s_client",
                "-connect",
                &connect,
                "-servername",
                "localhost",
                "-CAfile",
                &ca_file,
                "-cert",
                &cert,
                "-key",
                &key,
                version,
                "-ign_eof",
            ],
            b"",
        );
        let text = all_output(&out);
        cat.check(
            CLASS,
            &format!("unknown critical extension (OpenSSL {version})"),
            !out.status.success() && text.contains("alert certificate unknown"),
            format!(
                "{:?}: {}",
                out.status.code(),
                text.lines()
                    .find(|l| l.contains("alert"))
                    .unwrap_or("no alert")
            ),
        );
    }
    // The positive control: the same CA, the same subject, a proper certificate.
    let fine = ca.client_uri_with(uri, |_| {});
    let config = net::client_config(ca.cert_pem(), Some(&fine), MODERN);
    let r = match net::channel(fx.w.server.addr, config).await {
        Ok(ch) => Clients::new(ch)
            .system
            .status(v1::StatusRequest {})
            .await
            .map(|r| r.into_inner().caller_subject),
        Err(e) => Err(Status::unavailable(e.to_string())),
    };
    cat.check(
        CLASS,
        "a proper certificate for the same subject",
        r.as_deref().ok() == Some(uri),
        format!("{r:?}"),
    );
}

/// Clients that stall inside the TLS handshake (a partial ClientHello, or nothing at all) are
/// dropped after the handshake timeout, and others are served meanwhile. A client that finishes
/// TLS and then stalls inside HTTP/2 does not stop others either (whether the server ever drops
/// it is `stalled_http2_clients_are_dropped`).
async fn slow_clients(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "slow clients";
    let addr = fx.w.server.addr;
    let patience = HANDSHAKE_TIMEOUT + Duration::from_secs(5);
    let opened = Instant::now();
    let mut partial = Vec::new();
    for _ in 0..16 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(PARTIAL_CLIENT_HELLO).await.unwrap();
        partial.push(tcp);
    }
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Others are served while seventeen handshakes hang.
    let started = Instant::now();
    fx.still_serves("16 partial ClientHellos").await;
    let served_in = started.elapsed();
    cat.check(
        CLASS,
        "served while 17 handshakes stall",
        served_in < HANDSHAKE_TIMEOUT,
        format!("a good request took {served_in:?}"),
    );
    // Each is dropped once the timeout has passed, and not long after. (The server's clock
    // starts at its accept, a little after our connect.)
    let early = HANDSHAKE_TIMEOUT - Duration::from_millis(50);
    let late = HANDSHAKE_TIMEOUT + Duration::from_secs(4);
    let mut lifetimes = Vec::new();
    for stream in partial.iter_mut().chain([&mut silent]) {
        let closed = closed_by_server_within(stream, patience).await;
        lifetimes.push(closed.map(|_| opened.elapsed()));
    }
    let (first, rest) = lifetimes.split_first().unwrap();
    for (what, lifetime) in [
        ("a partial ClientHello", first),
        ("a silent TCP connection", rest.last().unwrap()),
    ] {
        cat.check(
            CLASS,
            &format!("{what}: dropped after the handshake timeout ({HANDSHAKE_TIMEOUT:?})"),
            lifetime.is_some_and(|d| d >= early && d <= late),
            format!("open for {lifetime:?}"),
        );
    }
    let all = lifetimes
        .iter()
        .all(|d| d.is_some_and(|d| d >= early && d <= late));
    cat.check(
        CLASS,
        "all 17 dropped in time",
        all,
        format!("open for {lifetimes:?}"),
    );
    // Past TLS: the preface cut short; a HEADERS frame cut short.
    let config = net::client_config(fx.w.pki.ca.cert_pem(), Some(&fx.w.pki.app), MODERN);
    let mut preface = net::handshake(addr, config.clone()).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut cut = RawH2::open(addr, config).await;
    cut.send(&[0x00, 0x00, 0x64, 0x01, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00])
        .await;
    let started = Instant::now();
    fx.still_serves("HTTP/2 clients stalled after TLS").await;
    cat.check(
        CLASS,
        "served while HTTP/2 preface and frame stall",
        started.elapsed() < Duration::from_secs(5),
        format!("a good request took {:?}", started.elapsed()),
    );
    drop((preface, cut));
}

/// Clients that vanish mid-request: after the HEADERS, inside the message, right after a
/// complete request, inside the TLS handshake, and while a response stream is being read.
async fn abrupt_disconnects(fx: &Fixture, cat: &mut Catalogue) {
    const CLASS: &str = "abrupt disconnects";
    let addr = fx.w.server.addr;
    let config = net::client_config(fx.w.pki.ca.cert_pem(), Some(&fx.w.pki.app), MODERN);
    let encrypt = v1::EncryptRequest {
        key: fx.keys.sm4.id.clone(),
        plaintext: SECRET.to_vec(),
        context: fixture_context(),
    }
    .encode_to_vec();
    let message = grpc_message(&encrypt);
    let cases: [(&str, Vec<u8>, bool); 3] = [
        ("after the HEADERS", Vec::new(), false),
        (
            "inside the message",
            message[..message.len() / 2].to_vec(),
            false,
        ),
        ("right after a complete request", message.clone(), true),
    ];
    for (what, data, end) in cases {
        let mut h2 = RawH2::open(addr, config.clone()).await;
        h2.headers(1, "/kms.v1.Crypto/Encrypt", false).await;
        if !data.is_empty() || end {
            h2.data(1, &data, end).await;
        }
        h2.vanish();
        fx.still_serves(what).await;
        cat.check(
            CLASS,
            &format!("Encrypt, client gone {what}"),
            true,
            "served others after".into(),
        );
    }
    // Many streams on one connection, then gone.
    let mut h2 = RawH2::open(addr, config.clone()).await;
    for stream in (1..40).step_by(2) {
        h2.headers(stream, "/kms.v1.Crypto/Encrypt", false).await;
        h2.data(stream, &message, true).await;
    }
    h2.vanish();
    fx.still_serves("20 streams abandoned").await;
    cat.check(
        CLASS,
        "20 complete requests, client gone",
        true,
        "served others after".into(),
    );
    // Inside the TLS handshake.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(PARTIAL_CLIENT_HELLO).await.unwrap();
    drop(tcp);
    fx.still_serves("a partial ClientHello, then gone").await;
    cat.check(
        CLASS,
        "inside the ClientHello",
        true,
        "served others after".into(),
    );
    // While reading a server stream (the audit export), as the auditor.
    let auditor = fx.w.connect(&fx.w.pki.auditor).await;
    let mut stream = auditor
        .audit
        .clone()
        .export_audit(v1::ExportAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await;
    drop((stream, auditor));
    fx.still_serves("an abandoned audit export").await;
    cat.check(
        CLASS,
        "ExportAudit abandoned after the first chunk",
        matches!(first, Ok(Some(_))),
        format!("first chunk: {:?}", first.map(|c| c.map(|c| c.lines.len()))),
    );
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// The first value's own error as a status (a refused value is its result, not the call's).
fn first_value(r: Result<tonic::Response<v1::TokenizeResponse>, Status>) -> Result<String, Status> {
    let results = r?.into_inner().results;
    match results.first().and_then(|x| x.result.clone()) {
        Some(v1::token_result::Result::Ok(t)) => Ok(t),
        Some(v1::token_result::Result::Error(e)) => {
            Err(Status::new(Code::from_i32(e.code), e.message))
        }
        None => Err(Status::internal("no result")),
    }
}

fn first_token(
    r: Result<tonic::Response<v1::DetokenizeResponse>, Status>,
) -> Result<String, Status> {
    let results = r?.into_inner().results;
    match results.first().and_then(|x| x.result.clone()) {
        Some(v1::token_result::Result::Ok(t)) => Ok(t),
        Some(v1::token_result::Result::Error(e)) => {
            Err(Status::new(Code::from_i32(e.code), e.message))
        }
        None => Err(Status::internal("no result")),
    }
}

/// Tokens (issue 22 item 4): empty values, values outside the alphabet, domains below 10^6,
/// PANs failing the Luhn check, 1 MiB values, tokens of the wrong format, a missing key
/// version, pseudonym keys, keys of another purpose; whole calls and single values.
async fn token_inputs(fx: &Fixture, tok: &str, pseudo: &str, cat: &mut Catalogue) {
    const CLASS: &str = "tokens";
    let mut t = fx.w.app.tokens.clone();
    let req = |key: &str, format: &str, values: Vec<String>| v1::TokenizeRequest {
        key: key.to_owned(),
        format: format.to_owned(),
        context: HashMap::new(),
        values,
    };
    let one = |v: &str| vec![v.to_owned()];
    cat.refused(
        CLASS,
        "Tokenize: key \"\"",
        t.tokenize(req("", "pan", one("4111111111111111"))).await,
        Code::InvalidArgument,
        &["key is required"],
    );
    cat.refused(
        CLASS,
        "Tokenize: format \"\"",
        t.tokenize(req(tok, "", one("4111111111111111"))).await,
        Code::InvalidArgument,
        &[
            "invalid format",
            "digits, alphanumeric, pan, pan-luhn-invalid",
        ],
    );
    cat.refused(
        CLASS,
        "Tokenize: no values",
        t.tokenize(req(tok, "pan", Vec::new())).await,
        Code::InvalidArgument,
        &["at least one value"],
    );
    cat.refused(
        CLASS,
        "Tokenize: 1001 values",
        t.tokenize(req(tok, "digits", vec!["123456".to_owned(); 1001]))
            .await,
        Code::InvalidArgument,
        &["1001 items", "limit is 1000"],
    );
    cat.refused(
        CLASS,
        "Tokenize: an encrypt key",
        t.tokenize(req(&fx.keys.sm4.id, "pan", one("4111111111111111")))
            .await,
        Code::InvalidArgument,
        &["cannot be used for tokenize"],
    );
    for (case, format, value, words) in [
        (
            "value \"\"",
            "digits",
            String::new(),
            &["invalid value: is empty"][..],
        ),
        (
            "value outside the digits",
            "digits",
            "12a456".to_owned(),
            &["character 3 is outside the digits alphabet"][..],
        ),
        (
            "value outside the alphanumerics",
            "alphanumeric",
            "ab_cd".to_owned(),
            &["character 3 is outside the alphanumeric alphabet"][..],
        ),
        (
            "non-ASCII value",
            "alphanumeric",
            "abcé".to_owned(),
            &["character 4 is outside"][..],
        ),
        (
            "5 digits: domain 10^5",
            "digits",
            "12345".to_owned(),
            &["below the minimum of 10^6"][..],
        ),
        (
            "15-digit PAN: domain 10^5",
            "pan",
            "378282246310005".to_owned(),
            &["below the minimum of 10^6", "at least 16 digits"][..],
        ),
        (
            "PAN failing Luhn",
            "pan",
            "4111111111111112".to_owned(),
            &["fails the luhn check"][..],
        ),
        (
            "1 MiB value",
            "digits",
            "7".repeat(1024 * 1024),
            &["longer than 256 characters"][..],
        ),
    ] {
        cat.refused(
            CLASS,
            &format!("Tokenize: {case}"),
            first_value(t.tokenize(req(tok, format, vec![value])).await),
            Code::InvalidArgument,
            words,
        );
    }
    let dreq = |key: &str, version: u32, format: &str, token: &str| v1::DetokenizeRequest {
        key: key.to_owned(),
        key_version: version,
        format: format.to_owned(),
        context: HashMap::new(),
        tokens: vec![token.to_owned()],
    };
    cat.refused(
        CLASS,
        "Detokenize: key version 0",
        t.detokenize(dreq(tok, 0, "pan", "4111111111111111")).await,
        Code::InvalidArgument,
        &["key version", "is required"],
    );
    cat.refused(
        CLASS,
        "Detokenize: key version 99",
        t.detokenize(dreq(tok, 99, "pan", "4111111111111111")).await,
        Code::NotFound,
        &["key version"],
    );
    cat.refused(
        CLASS,
        "Detokenize: a pseudonym key",
        t.detokenize(dreq(pseudo, 1, "pan", "4111111111111111"))
            .await,
        Code::FailedPrecondition,
        &["pseudonyms are one-way"],
    );
    cat.refused(
        CLASS,
        "Detokenize: pan token failing Luhn",
        first_token(t.detokenize(dreq(tok, 1, "pan", "4111111111111112")).await),
        Code::InvalidArgument,
        &["not a token of format pan"],
    );
    cat.refused(
        CLASS,
        "Detokenize: pan-luhn-invalid token passing Luhn",
        first_token(
            t.detokenize(dreq(tok, 1, "pan-luhn-invalid", "4111111111111111"))
                .await,
        ),
        Code::InvalidArgument,
        &["passes the luhn check"],
    );
    cat.refused(
        CLASS,
        "Detokenize: digits token with a letter",
        first_token(t.detokenize(dreq(tok, 1, "digits", "12345x")).await),
        Code::InvalidArgument,
        &["invalid token", "outside the digits alphabet"],
    );
}

/// What a verdict's reason must be.
#[derive(Clone, Copy, Debug)]
enum Reason<'a> {
    /// Exactly this text.
    Is(&'a str),
    /// Text containing each of these.
    Says(&'a [&'a str]),
    /// None (OK, BAD_SIGNATURE, REPLAYED carry no reason).
    Empty,
}

/// Records a request-verification answer that must be an OK call with `want` and `reason`: a
/// verdict is not a refusal, so the catalogue checks it as a value, with a refusal's other
/// rules (short, no secret).
fn verdict(
    cat: &mut Catalogue,
    case: &str,
    result: Result<tonic::Response<v1::VerifyRequestResponse>, Status>,
    want: v1::RequestVerdict,
    reason: Reason<'_>,
) {
    const CLASS: &str = "request verification";
    let out = match result {
        Ok(r) => r.into_inner(),
        Err(s) => {
            crate::common::assert_no_secret(&s);
            cat.check(
                CLASS,
                case,
                false,
                format!("{:?} (!): expected an answer {want:?}: {s:?}", s.code()),
            );
            return;
        }
    };
    let got = out.verdict();
    let mut problems = Vec::new();
    if got != want {
        problems.push(format!("verdict {got:?}, expected {want:?}"));
    }
    let reason_ok = match reason {
        Reason::Is(text) => out.reason == text,
        Reason::Says(words) => words.iter().all(|w| out.reason.contains(w)),
        Reason::Empty => out.reason.is_empty(),
    };
    if !reason_ok {
        problems.push(format!("reason {:?}, expected {reason:?}", out.reason));
    }
    let secret = std::str::from_utf8(SECRET).unwrap();
    if out.reason.contains(secret) || out.reason.contains(&hex::encode(SECRET)) {
        problems.push("the reason holds the body".to_owned());
    }
    if out.reason.len() > crate::catalogue::MAX_MESSAGE {
        problems.push(format!("the reason is {} bytes long", out.reason.len()));
    }
    // A version is named only when a signature verified.
    let verified = matches!(got, v1::RequestVerdict::Ok | v1::RequestVerdict::Replayed);
    if verified != (out.key_version > 0) {
        problems.push(format!("key version {} for {got:?}", out.key_version));
    }
    let outcome = if out.reason.is_empty() {
        format!("OK {got:?}")
    } else {
        format!("OK {got:?}: {}", out.reason)
    };
    if problems.is_empty() {
        cat.check(CLASS, case, true, outcome);
    } else {
        cat.check(
            CLASS,
            case,
            false,
            format!("{outcome} — {}", problems.join("; ")),
        );
    }
}

/// Signed requests (issue 22 item 3): errors are for the call (no key, a scheme unknown or not
/// the key's, a key of another purpose or out of reach, both body forms, a message past the
/// limit); everything about the request itself is an OK answer with a verdict, MALFORMED with
/// the broken rule in exact words, STALE with the window, checked in that order and before any
/// signature, so the shape cases need none. The request is signed by the fixture's HMAC-SM3
/// key (`GenerateMac` over the canonical string written out here from docs/FORMATS.md), and
/// its body is [`SECRET`], which no reason may echo.
async fn signed_requests(fx: &Fixture, cat: &mut Catalogue) {
    use sm3::Digest as _;
    use v1::RequestVerdict::{BadSignature, Malformed, Ok as Verified, Replayed, Stale};
    const CLASS: &str = "request verification";
    let mac_key = fx.keys.hmac_sm3.id.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (method, path) = ("POST", "/v1/transfers?channel=mobile");
    let canonical = |ts: u64, nonce: &[u8]| {
        format!(
            "KMS-REQUEST-V1\n{method}\n{path}\n{ts}\n{}\n{}",
            hex::encode(nonce),
            hex::encode(sm3::Sm3::digest(SECRET))
        )
    };
    let nonce = format!("bad-input-{now}").into_bytes();
    let tag =
        fx.w.app
            .crypto
            .clone()
            .generate_mac(mac_req(&mac_key, canonical(now, &nonce).as_bytes()))
            .await
            .unwrap()
            .into_inner()
            .mac;
    let good = v1::SignedRequest {
        key: mac_key.clone(),
        scheme: "hmac-sm3".to_owned(),
        signature: tag,
        timestamp: now,
        nonce: nonce.clone(),
        method: method.to_owned(),
        path: path.to_owned(),
        body: SECRET.to_vec(),
        body_digest: Vec::new(),
    };
    let with = |f: &dyn Fn(&mut v1::SignedRequest)| {
        let mut r = good.clone();
        f(&mut r);
        r
    };
    let mut rv = fx.w.app.requests.clone();

    // The call itself is wrong: a refusal, and the request's nonce is not used.
    let max = Limits::default().max_message_bytes().to_string();
    let disabled_mac = fx.keys.by_state[0].1[3].id.clone();
    for (case, req, code, words) in [
        (
            "key \"\"",
            with(&|r| r.key.clear()),
            Code::InvalidArgument,
            &["key is required"][..],
        ),
        (
            "an unknown key",
            with(&|r| r.key = "no-such-partner".to_owned()),
            Code::NotFound,
            &["no-such-partner"][..],
        ),
        (
            "scheme \"ecdsa\"",
            with(&|r| r.scheme = "ecdsa".to_owned()),
            Code::InvalidArgument,
            &[
                "\"ecdsa\" is not a request scheme",
                "use sm2, hmac-sm3 or rsa-pss",
            ][..],
        ),
        (
            "scheme \"\"",
            with(&|r| r.scheme.clear()),
            Code::InvalidArgument,
            &["\"\" is not a request scheme"][..],
        ),
        (
            "scheme hmac-sm3 with an HMAC-SHA256 key",
            with(&|r| r.key.clone_from(&fx.keys.hmac_sha256.id)),
            Code::InvalidArgument,
            &["hmac-sm3 cannot be checked with key", "hmac-sha256 key"][..],
        ),
        (
            "scheme rsa-pss with an SM2 key",
            with(&|r| {
                r.key.clone_from(&fx.keys.sm2_sign.id);
                r.scheme = "rsa-pss".to_owned();
            }),
            Code::InvalidArgument,
            &["rsa-pss cannot be checked with key", "sm2 key"][..],
        ),
        (
            "scheme sm2 with the HMAC-SM3 key",
            with(&|r| r.scheme = "sm2".to_owned()),
            Code::InvalidArgument,
            &["cannot be used for sign"][..],
        ),
        (
            "a disabled MAC key",
            with(&|r| r.key.clone_from(&disabled_mac)),
            Code::FailedPrecondition,
            &["disabled"][..],
        ),
        (
            "body and body_digest both set",
            with(&|r| r.body_digest = sm3::Sm3::digest(SECRET).to_vec()),
            Code::InvalidArgument,
            &["give the body or its digest", "not both"][..],
        ),
        // Past the server's message limit: refused before it is decoded, naming the limit.
        (
            "a 1 MiB nonce",
            with(&|r| r.nonce = vec![0x5a; 1024 * KIB]),
            Code::OutOfRange,
            &[max.as_str()][..],
        ),
    ] {
        cat.refused(
            CLASS,
            &format!("VerifyRequest: {case}"),
            rv.verify_request(req).await,
            code,
            words,
        );
    }

    // The request is malformed: an answer naming the field and its rule, before the clock
    // and the key are consulted.
    let nonce_of = |n: usize| format!("nonce must be 8 to 64 bytes; it is {n} bytes");
    let digest_of =
        |n: usize| format!("body digest must be the 32-byte SM3 of the body; it is {n} bytes");
    let visible = |at: usize| {
        format!("path must be visible ASCII (percent-encode the rest); byte {at} is not")
    };
    for (case, req, reason) in [
        ("nonce \"\"", with(&|r| r.nonce.clear()), nonce_of(0)),
        (
            "nonce of 7 bytes",
            with(&|r| r.nonce = vec![7; 7]),
            nonce_of(7),
        ),
        (
            "nonce of 65 bytes",
            with(&|r| r.nonce = vec![7; 65]),
            nonce_of(65),
        ),
        (
            "nonce of 4 KiB",
            with(&|r| r.nonce = vec![7; 4 * KIB]),
            nonce_of(4 * KIB),
        ),
        (
            "a 7-byte nonce and timestamp 0 (malformed comes first)",
            with(&|r| {
                r.nonce = vec![7; 7];
                r.timestamp = 0;
            }),
            nonce_of(7),
        ),
        (
            "method \"\"",
            with(&|r| r.method.clear()),
            "method must be 1 to 16 letters; it is 0 bytes".to_owned(),
        ),
        (
            "method \"post\"",
            with(&|r| r.method = "post".to_owned()),
            "method must be upper-case ASCII letters (GET, POST)".to_owned(),
        ),
        (
            "path \"\"",
            with(&|r| r.path.clear()),
            "path must start with '/'".to_owned(),
        ),
        (
            "path without a leading '/'",
            with(&|r| r.path = "v1/transfers".to_owned()),
            "path must start with '/'".to_owned(),
        ),
        (
            "path with a space",
            with(&|r| r.path = "/v1/a b".to_owned()),
            visible(5),
        ),
        (
            "path with a line feed (a shifted field)",
            with(&|r| r.path = "/v1/a\nPOST".to_owned()),
            visible(5),
        ),
        (
            "path with non-ASCII",
            with(&|r| r.path = "/v1/caf\u{e9}".to_owned()),
            visible(7),
        ),
        (
            "body digest of 31 bytes",
            with(&|r| {
                r.body.clear();
                r.body_digest = vec![1; 31];
            }),
            digest_of(31),
        ),
        (
            "body digest of 33 bytes",
            with(&|r| {
                r.body.clear();
                r.body_digest = vec![1; 33];
            }),
            digest_of(33),
        ),
        (
            "signature \"\"",
            with(&|r| r.signature.clear()),
            "signature must be 1 to 1024 bytes; it is 0 bytes".to_owned(),
        ),
        (
            "signature of 2 KiB",
            with(&|r| r.signature = vec![0x30; 2 * KIB]),
            "signature must be 1 to 1024 bytes; it is 2048 bytes".to_owned(),
        ),
    ] {
        verdict(
            cat,
            &format!("VerifyRequest: {case}"),
            rv.verify_request(req).await,
            Malformed,
            Reason::Is(&reason),
        );
    }

    // Outside the window (±300 s by default), either way: stale, before the signature (these
    // timestamps are not the signed one).
    for (case, ts) in [
        ("timestamp 0", 0),
        ("timestamp u64::MAX", u64::MAX),
        ("timestamp now + 3600 s", now + 3600),
    ] {
        verdict(
            cat,
            &format!("VerifyRequest: {case}"),
            rv.verify_request(with(&|r| r.timestamp = ts)).await,
            Stale,
            Reason::Says(&["outside the window of ±300 s"]),
        );
    }

    // A forgery uses up no nonce: the genuine request then verifies once, and is a replay after.
    verdict(
        cat,
        "VerifyRequest: another body under the same tag",
        rv.verify_request(with(&|r| r.body = b"another body".to_vec()))
            .await,
        BadSignature,
        Reason::Empty,
    );
    verdict(
        cat,
        "VerifyRequest: the genuine request",
        rv.verify_request(good.clone()).await,
        Verified,
        Reason::Empty,
    );
    verdict(
        cat,
        "VerifyRequest: the genuine request again (replay)",
        rv.verify_request(good.clone()).await,
        Replayed,
        Reason::Empty,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_class_of_bad_input_is_refused_and_nothing_stored_changes() {
    let started = Instant::now();
    let fx = Fixture::build().await;
    // Tokenize keys for the token class, made before the snapshot like every other key.
    let tok =
        fx.w.create_key(subjects::APP_NS, Purpose::Tokenize, "sm4-ff1")
            .await
            .key_id;
    let pseudo =
        fx.w.create_key(subjects::APP_NS, Purpose::Tokenize, "hmac-sm3")
            .await
            .key_id;
    let before = fx.snapshot().await;
    before.assert_meaningful(&fx);
    eprintln!("fixture ready in {:?}", started.elapsed());
    let mut cat = Catalogue::default();
    empty_fields(&fx, &mut cat).await;
    fx.still_serves("empty fields").await;
    oversized_fields(&fx, &mut cat).await;
    fx.still_serves("oversized fields").await;
    wrong_key_types(&fx, &mut cat).await;
    fx.still_serves("wrong key types").await;
    unusable_keys(&fx, &mut cat).await;
    fx.still_serves("unusable keys").await;
    tampered_ciphertexts(&fx, &mut cat).await;
    fx.still_serves("tampered ciphertexts").await;
    contexts_one_byte_apart(&fx, &mut cat).await;
    fx.still_serves("contexts").await;
    sm2_ids(&fx, &mut cat).await;
    fx.still_serves("SM2 IDs").await;
    sealed_passwords(&fx, &mut cat).await;
    fx.still_serves("sealed passwords").await;
    malformed_protobuf(&fx, &mut cat).await;
    fx.still_serves("malformed protobuf").await;
    malformed_certificates(&fx, &mut cat).await;
    fx.still_serves("certificates").await;
    slow_clients(&fx, &mut cat).await;
    fx.still_serves("slow clients").await;
    abrupt_disconnects(&fx, &mut cat).await;
    fx.still_serves("abrupt disconnects").await;
    token_inputs(&fx, &tok, &pseudo, &mut cat).await;
    fx.still_serves("tokens").await;
    signed_requests(&fx, &mut cat).await;
    fx.still_serves("signed requests").await;

    let after = fx.snapshot().await;
    let cases = cat.len();
    cat.finish();
    assert_eq!(
        before.listed.len(),
        after.listed.len(),
        "keys were added or lost"
    );
    for (b, a) in before.listed.iter().zip(&after.listed) {
        assert_eq!(b, a, "a key's metadata changed");
    }
    assert_eq!(before.described, after.described);
    assert_eq!(before.rechecked, after.rechecked);
    eprintln!(
        "{cases} cases; {} keys and {} outputs unchanged; {:?}",
        after.listed.len(),
        after.rechecked.len(),
        started.elapsed()
    );
    fx.w.stop().await;
}

/// API-5: a flood past the rate limit gets RESOURCE_EXHAUSTED for the flooding principal only,
/// saying what the limit is; once the bucket refills the same principal is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_is_refused_then_service_resumes() {
    const RATE: f64 = 20.0;
    const BURST: f64 = 10.0;
    let settings = Settings {
        limits: Limits {
            rate_per_second: RATE,
            burst: BURST,
            ..Limits::default()
        },
        ..Settings::default()
    };
    let w = World::start_with(settings).await;
    let key = w
        .create_key(subjects::APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    // Let the app's bucket fill (its subject's first token came with the first call).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(w.connect(&w.pki.app).await);
    }
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..120 {
        let mut c = conns[i % conns.len()].crypto.clone();
        let key = key.clone();
        calls.spawn(async move {
            c.encrypt(enc(&key, SECRET, &ctx(&[("t", SECRET_CONTEXT)])))
                .await
                .map(|_| ())
        });
    }
    // Meanwhile another principal is served.
    w.other_app
        .crypto
        .clone()
        .generate_random(v1::GenerateRandomRequest { length: 8 })
        .await
        .expect("another principal is served during the flood");
    let mut ok = 0;
    let mut refused = Vec::new();
    while let Some(r) = calls.join_next().await {
        match r.unwrap() {
            Ok(()) => ok += 1,
            Err(s) => refused.push(s),
        }
    }
    let took = started.elapsed().as_secs_f64();
    for s in &refused {
        crate::common::assert_no_secret(s);
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        for word in [
            "rate limit",
            "20 requests/s",
            "burst 10",
            "retry",
            subjects::APP,
        ] {
            assert!(s.message().contains(word), "{s:?} does not say {word:?}");
        }
        assert!(crate::common::has_request_id(s), "{s:?}");
    }
    let allowed = BURST + RATE * took + 1.0;
    assert!(
        f64::from(ok) <= allowed,
        "{ok} served in {took:.2}s, at most {allowed:.0} allowed"
    );
    assert!(refused.len() >= 60, "only {} of 120 refused", refused.len());
    // The bucket refills: the flooding principal is served again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = w
        .app
        .crypto
        .clone()
        .encrypt(enc(&key, b"after the flood", &ctx(&[])))
        .await;
    assert!(back.is_ok(), "not served after the flood: {back:?}");
    eprintln!(
        "flood: {ok} served, {} refused in {took:.2}s",
        refused.len()
    );
    w.stop().await;
}

/// API-5 for callers the KMS does not know: a certificate the CA issued to a subject that was
/// never registered is refused (PERMISSION_DENIED) — but each refusal still costs a store lookup
/// and a durable audit record, so a flood of them must hit the rate limit like anyone's.
///
/// Found by this catalogue (issue 8): `Shared::identify` took a token only after the principal
/// was found, so unregistered subjects were never limited. Since issue 18 every unregistered
/// certificate draws on one shared bucket (`unregistered_rate_per_second`, `unregistered_burst`)
/// and gets no bucket of its own, so they cannot grow the rate table either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_from_an_unregistered_certificate_is_rate_limited() {
    let settings = Settings {
        limits: Limits {
            unregistered_rate_per_second: 20.0,
            unregistered_burst: 10.0,
            ..Limits::default()
        },
        ..Settings::default()
    };
    let w = World::start_with(settings).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let mut c = w.stranger.crypto.clone();
        calls.spawn(async move {
            c.generate_random(v1::GenerateRandomRequest { length: 8 })
                .await
                .map(|_| ())
        });
    }
    let mut codes = Vec::new();
    while let Some(r) = calls.join_next().await {
        codes.push(r.unwrap().map_err(|s| s.code()));
    }
    let limited = codes
        .iter()
        .filter(|c| **c == Err(Code::ResourceExhausted))
        .count();
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Err(Code::ResourceExhausted | Code::PermissionDenied))),
        "{codes:?}"
    );
    assert!(
        limited >= 30,
        "only {limited} of 60 requests from an unregistered certificate were rate limited"
    );
    w.stop().await;
}

/// A client that finishes TLS and then stalls inside HTTP/2 (a preface cut short, a frame cut
/// short, or nothing at all) holds a connection slot — and with `max_connections` of them, the
/// server. It should be dropped like a stalled handshake is.
///
/// Found by this catalogue (issue 8): such a connection stayed open forever. The server now reads
/// the HTTP/2 preface within `handshake_timeout` and pings idle connections
/// (`Settings::http2_keepalive`), dropping a peer that does not answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_http2_clients_are_dropped() {
    let settings = Settings {
        handshake_timeout: HANDSHAKE_TIMEOUT,
        http2_keepalive: Duration::from_secs(1),
        ..Settings::default()
    };
    let w = World::start_with(settings).await;
    let addr = w.server.addr;
    let config = net::client_config(w.pki.ca.cert_pem(), Some(&w.pki.app), MODERN);
    let mut silent = net::handshake(addr, config.clone()).await.unwrap();
    let mut preface = net::handshake(addr, config.clone()).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut cut = RawH2::open(addr, config).await;
    cut.send(&[0x00, 0x00, 0x64, 0x01, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00])
        .await;
    let patience = Duration::from_secs(15);
    let (a, b, c) = tokio::join!(
        closed_by_server_within(&mut silent, patience),
        closed_by_server_within(&mut preface, patience),
        closed_by_server_within(&mut cut.tls, patience),
    );
    let open: Vec<&str> = [
        ("silent after TLS", a),
        ("preface cut short", b),
        ("HEADERS frame cut short", c),
    ]
    .into_iter()
    .filter(|(_, closed)| closed.is_none())
    .map(|(what, _)| what)
    .collect();
    assert!(open.is_empty(), "still open after {patience:?}: {open:?}");
    w.stop().await;
}

/// OPS-1: every key operation is in the audit trail. A client that sends a complete request and
/// disconnects before the answer still caused the operation (the core ran it), so the trail must
/// still record it.
///
/// Found by this catalogue (issue 8): hyper dropped the service future on reset, so the record
/// written after the handler returned was lost while the core call completed. The audit layer
/// now runs each call and its record as a task of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operation_whose_client_vanished_is_still_audited() {
    let w = World::start().await;
    let config = net::client_config(w.pki.ca.cert_pem(), Some(&w.pki.admin), MODERN);
    let create = v1::CreateKeyRequest {
        namespace: subjects::APP_NS.to_owned(),
        purpose: Purpose::Sign.into(),
        algorithm: "rsa-3072".to_owned(),
        alias: "vanished-client".to_owned(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut h2 = RawH2::open(w.server.addr, config).await;
    h2.headers(1, "/kms.v1.KeyAdmin/CreateKey", false).await;
    h2.data(1, &grpc_message(&create), true).await;
    // Long enough for the server to read the request and start generating, far too short for
    // RSA-3072 key generation to finish.
    tokio::time::sleep(Duration::from_millis(50)).await;
    h2.vanish();
    // The core finishes the key anyway (wait for it).
    let mut keys = w.admin.keys.clone();
    let mut created = None;
    for _ in 0..100 {
        if let Ok(r) = keys.describe_key(key_req("payments:vanished-client")).await {
            created = r.into_inner().key;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(key) = created else {
        // Not created at all is consistent too (nothing happened, nothing to audit).
        w.stop().await;
        return;
    };
    let trail = crate::common::audit_export(&w).await;
    let record = trail
        .lines()
        .find(|l| l.contains("CreateKey") && l.contains(&key.key_id));
    assert!(
        record.is_some(),
        "key {} was created by a request whose client vanished, and the audit trail has no \
         CreateKey record for it",
        key.key_id
    );
    w.stop().await;
}
