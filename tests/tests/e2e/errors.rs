//! Bad input (API-4, API-5): oversized messages, unknown keys, malformed ciphertexts, forbidden
//! algorithm names, wrong purposes and rate limits each get the right status and a message that
//! says what is wrong — and never carries the plaintext or the context — and the server keeps
//! serving afterwards.

use std::collections::HashMap;

use kms_proto::v1::{self, Purpose};
use kms_server::Settings;
use kms_server::limits::Limits;
use kms_tests::pki::subjects::APP_NS;
use kms_tests::world::World;
use tonic::{Code, Status};

use crate::common::{
    SECRET, SECRET_CONTEXT, Scratch, SigOpts, assert_no_secret, asym_req, ctx, data_key_req, dec,
    enc, err, expect_code, expect_err, has_request_id, key_req, mac_req, openssl_ok,
    public_key_req, sign_req, verify_mac_req, verify_req,
};

const KIB: usize = 1024;

/// `SECRET` repeated to `len` bytes.
fn secret_bytes(len: usize) -> Vec<u8> {
    SECRET.iter().copied().cycle().take(len).collect()
}

/// A context of about `len` bytes, every value made of the secret context marker.
fn big_context(len: usize) -> HashMap<String, String> {
    let value: String = SECRET_CONTEXT.chars().cycle().take(len).collect();
    ctx(&[("k", &value)])
}

/// The app can still encrypt and decrypt, and a fresh connection still gets served.
async fn still_serves(w: &World) {
    let key = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let mut c = w.app.crypto.clone();
    let out = c
        .encrypt(enc(&key, b"still here", &ctx(&[])))
        .await
        .unwrap()
        .into_inner();
    let back = c
        .decrypt(dec(&out.ciphertext, &ctx(&[])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.plaintext, b"still here");
    let fresh = w.connect(&w.pki.app).await;
    fresh
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_payloads_and_contexts_are_refused_naming_the_limit() {
    let w = World::start().await;
    let key = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let sign = w.create_key(APP_NS, Purpose::Sign, "sm2").await.key_id;
    let mac = w.create_key(APP_NS, Purpose::Mac, "hmac-sm3").await.key_id;
    let mut c = w.app.crypto.clone();
    let none = ctx(&[]);

    // Exactly at the limits: fine.
    let at_limit = c
        .encrypt(enc(
            &key,
            &secret_bytes(64 * KIB),
            &big_context(8 * KIB - 1),
        ))
        .await
        .unwrap()
        .into_inner();
    let back = c
        .decrypt(dec(&at_limit.ciphertext, &big_context(8 * KIB - 1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.plaintext.len(), 64 * KIB);

    // One byte over the plaintext limit: INVALID_ARGUMENT naming the field and the limit.
    let over = secret_bytes(64 * KIB + 1);
    let s = expect_err(
        c.encrypt(enc(&key, &over, &none)).await,
        Code::InvalidArgument,
        "65536",
    );
    assert!(s.message().contains("plaintext"), "{s:?}");
    let s = expect_err(
        c.sign(sign_req(&sign, &over, SigOpts::default())).await,
        Code::InvalidArgument,
        "65536",
    );
    assert!(s.message().contains("message"), "{s:?}");
    expect_err(
        c.verify(verify_req(&sign, &over, b"sig", SigOpts::default(), None))
            .await,
        Code::InvalidArgument,
        "65536",
    );
    expect_err(
        c.generate_mac(mac_req(&mac, &over)).await,
        Code::InvalidArgument,
        "65536",
    );
    expect_err(
        c.verify_mac(verify_mac_req(&mac, &over, b"tag", None))
            .await,
        Code::InvalidArgument,
        "65536",
    );

    // Over the context limit, wherever a context goes.
    let big = big_context(8 * KIB + 1);
    let s = expect_err(
        c.encrypt(enc(&key, SECRET, &big)).await,
        Code::InvalidArgument,
        "8192",
    );
    assert!(s.message().contains("context"), "{s:?}");
    expect_err(
        c.decrypt(dec(&at_limit.ciphertext, &big)).await,
        Code::InvalidArgument,
        "8192",
    );
    expect_err(
        c.generate_data_key(data_key_req(&key, "sm4", &big)).await,
        Code::InvalidArgument,
        "8192",
    );
    expect_err(
        c.re_encrypt(v1::ReEncryptRequest {
            ciphertext: at_limit.ciphertext.clone(),
            source_context: big_context(8 * KIB - 1),
            destination_key: String::new(),
            destination_context: big.clone(),
        })
        .await,
        Code::InvalidArgument,
        "8192",
    );

    // Far over: the message is refused before it is decoded, by tonic's own limit (payload +
    // context + 16 KiB = 90112 bytes), as OUT_OF_RANGE in tonic 0.14.
    let huge = secret_bytes(256 * KIB);
    let max = Limits::default().max_message_bytes().to_string();
    let too_big = [
        err(c.encrypt(enc(&key, &huge, &none)).await),
        err(c.decrypt(dec(&huge, &none)).await),
        err(c.generate_mac(mac_req(&mac, &huge)).await),
    ];
    for s in too_big {
        assert!(
            matches!(s.code(), Code::ResourceExhausted | Code::OutOfRange),
            "{s:?}"
        );
        assert!(s.message().contains(&max), "{s:?} does not name the limit");
        assert_no_secret(&s);
    }

    still_serves(&w).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_keys_are_not_found() {
    let w = World::start().await;
    let mut c = w.app.crypto.clone();
    let ghost = "0b9e6a8e-7f1e-4d5b-9c39-3f4a0d2c1b7e";
    let s = expect_code(
        c.encrypt(enc(ghost, SECRET, &ctx(&[]))).await,
        Code::NotFound,
    );
    assert!(s.message().contains(ghost), "{s:?}");
    let s = expect_code(
        c.encrypt(enc("no-such-alias", SECRET, &ctx(&[]))).await,
        Code::NotFound,
    );
    assert!(s.message().contains("no-such-alias"), "{s:?}");
    expect_code(
        c.sign(sign_req(ghost, SECRET, SigOpts::default())).await,
        Code::NotFound,
    );
    expect_code(
        c.get_public_key(public_key_req(ghost, None)).await,
        Code::NotFound,
    );
    expect_code(
        c.generate_mac(mac_req("ledger:nothing", SECRET)).await,
        Code::NotFound,
    );
    expect_code(
        w.admin.keys.clone().describe_key(key_req(ghost)).await,
        Code::NotFound,
    );
    expect_code(
        w.admin
            .keys
            .clone()
            .rotate_key(key_req("default:nothing"))
            .await,
        Code::NotFound,
    );
    // A well-formed blob naming a key that does not exist.
    let key = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let mut ct = c
        .encrypt(enc(&key, SECRET, &ctx(&[])))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    ct[4..20].copy_from_slice(&uuid_bytes(ghost));
    expect_code(c.decrypt(dec(&ct, &ctx(&[]))).await, Code::NotFound);
    // No key at all.
    expect_err(
        c.encrypt(enc("", SECRET, &ctx(&[]))).await,
        Code::InvalidArgument,
        "key",
    );
    still_serves(&w).await;
    w.stop().await;
}

fn uuid_bytes(s: &str) -> Vec<u8> {
    hex::decode(s.replace('-', "")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_ciphertexts_are_invalid_argument() {
    let w = World::start().await;
    let key = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let asym = w
        .create_key(APP_NS, Purpose::AsymmetricDecrypt, "sm2")
        .await
        .key_id;
    let mut c = w.app.crypto.clone();
    let context = ctx(&[("tenant", SECRET_CONTEXT)]);
    let good = c
        .encrypt(enc(&key, SECRET, &context))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let flip = |i: usize| {
        let mut b = good.clone();
        b[i] ^= 0x01;
        b
    };
    let last = good.len() - 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("the plaintext itself", SECRET.to_vec()),
        ("magic only", b"KM".to_vec()),
        ("header only", good[..36].to_vec()),
        ("truncated tag", good[..good.len() - 1].to_vec()),
        ("bad magic", flip(0)),
        ("unknown format version", flip(2)),
        ("unknown algorithm", flip(3)),
        ("key version 0", flip(23)),
        ("nonce", flip(30)),
        ("body", flip(40)),
        ("tag", flip(last)),
        ("trailing byte", [good.as_slice(), &[0]].concat()),
    ];
    for (what, ct) in cases {
        let s = err(c.decrypt(dec(&ct, &context)).await);
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
        assert!(!s.message().is_empty(), "{what}");
        assert!(has_request_id(&s), "{what}: {s:?}");
        assert_no_secret(&s);
    }
    // A well-formed blob naming a version the key does not have.
    let mut v9 = good.clone();
    v9[20..24].copy_from_slice(&9u32.to_be_bytes());
    expect_err(
        c.decrypt(dec(&v9, &context)).await,
        Code::NotFound,
        "version",
    );
    // Asymmetric: junk is INVALID_ARGUMENT and says no more than "decryption failed".
    for junk in [SECRET.to_vec(), vec![0x30, 0x03, 0x02, 0x01, 0x00]] {
        let r = c.asymmetric_decrypt(asym_req(&asym, &junk, None)).await;
        expect_err(r, Code::InvalidArgument, "decryption failed");
    }
    expect_code(
        c.asymmetric_decrypt(asym_req(&asym, b"", None)).await,
        Code::InvalidArgument,
    );
    // The good one still opens.
    let back = c.decrypt(dec(&good, &context)).await.unwrap().into_inner();
    assert_eq!(back.plaintext, SECRET);
    still_serves(&w).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forbidden_algorithm_names_are_refused_citing_alg3() {
    let w = World::start().await;
    let mut keys = w.admin.keys.clone();
    let create = |purpose: Purpose, algorithm: &str| v1::CreateKeyRequest {
        namespace: APP_NS.to_owned(),
        purpose: purpose.into(),
        algorithm: algorithm.to_owned(),
        ..Default::default()
    };
    for (purpose, name, what) in [
        (Purpose::Encrypt, "DES", "DES"),
        (Purpose::Sign, "rsa-1024", "2048"),
        (Purpose::AsymmetricDecrypt, "RSA_1024", "2048"),
        (Purpose::Encrypt, "SM4-ECB", "ECB"),
        (Purpose::Encrypt, "aes-256-cbc", "CBC"),
        (Purpose::Encrypt, "3des", "3DES"),
        (Purpose::Encrypt, "rc4", "RC4"),
        (Purpose::Mac, "hmac-md5", "MD5"),
        (Purpose::Mac, "HMAC-SHA1", "SHA-1"),
    ] {
        let s = expect_err(
            keys.create_key(create(purpose, name)).await,
            Code::InvalidArgument,
            "ALG-3",
        );
        assert!(s.message().contains("forbidden"), "{name}: {s:?}");
        assert!(s.message().contains(what), "{name}: {s:?} does not say why");
    }
    // Unknown names list what is offered.
    let s = expect_err(
        keys.create_key(create(Purpose::Encrypt, "twofish")).await,
        Code::InvalidArgument,
        "unknown",
    );
    assert!(s.message().contains("sm4-gcm"), "{s:?}");
    // The same names are refused wherever an algorithm is named.
    let enc_key = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let sign = w.create_key(APP_NS, Purpose::Sign, "sm2").await.key_id;
    let mut c = w.app.crypto.clone();
    for spec in ["DES", "sm4-ecb", "rc4"] {
        expect_err(
            c.generate_data_key(data_key_req(&enc_key, spec, &ctx(&[])))
                .await,
            Code::InvalidArgument,
            "ALG-3",
        );
    }
    // A caller's public key for wrapping data keys passes the same policy.
    let dir = Scratch::new();
    let weak = dir.path("rsa1024.pem").to_str().unwrap().to_owned();
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        &weak,
    ]);
    let weak_pub = dir.path("rsa1024.pub.pem").to_str().unwrap().to_owned();
    openssl_ok(&["pkey", "-in", &weak, "-pubout", "-out", &weak_pub]);
    let mut req = data_key_req(&enc_key, "sm4", &ctx(&[]));
    req.wrap_to_public_key = std::fs::read(&weak_pub).unwrap();
    let s = expect_err(
        c.generate_data_key(req).await,
        Code::InvalidArgument,
        "ALG-3",
    );
    assert!(s.message().contains("1024"), "{s:?}");
    for hash in ["sha1", "MD5"] {
        let o = SigOpts {
            hash,
            ..SigOpts::default()
        };
        expect_err(
            c.sign(sign_req(&sign, SECRET, o)).await,
            Code::InvalidArgument,
            "ALG-3",
        );
    }
    // Nothing was created by any of it.
    let listed = w
        .auditor
        .keys
        .clone()
        .list_keys(v1::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(
        listed
            .iter()
            .all(|k| ["sm4-gcm", "sm2"].contains(&k.algorithm.as_str())),
        "{listed:?}"
    );
    still_serves(&w).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_purpose_is_refused_with_the_reason() {
    let w = World::start().await;
    let enc_key = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let sign = w.create_key(APP_NS, Purpose::Sign, "sm2").await.key_id;
    let mac = w.create_key(APP_NS, Purpose::Mac, "hmac-sm3").await.key_id;
    let mut c = w.app.crypto.clone();
    let none = ctx(&[]);

    // (what, result, words the message must contain)
    let mut seen: Vec<(&str, Status, &[&str])> = Vec::new();
    seen.push((
        "encrypt with a signing key",
        err(c.encrypt(enc(&sign, SECRET, &none)).await),
        &["KEY-5", "encrypt"],
    ));
    seen.push((
        "data key from a MAC key",
        err(c.generate_data_key(data_key_req(&mac, "sm4", &none)).await),
        &["KEY-5"],
    ));
    seen.push((
        "sign with an encryption key",
        err(c.sign(sign_req(&enc_key, SECRET, SigOpts::default())).await),
        &["KEY-5", "sign"],
    ));
    seen.push((
        "verify with a MAC key",
        err(c
            .verify(verify_req(&mac, SECRET, b"sig", SigOpts::default(), None))
            .await),
        &["KEY-5"],
    ));
    seen.push((
        "MAC with an encryption key",
        err(c.generate_mac(mac_req(&enc_key, SECRET)).await),
        &["KEY-5"],
    ));
    seen.push((
        "verify a MAC with a signing key",
        err(c
            .verify_mac(verify_mac_req(&sign, SECRET, b"tag", None))
            .await),
        &["KEY-5"],
    ));
    seen.push((
        "asymmetric decrypt with a signing key",
        err(c.asymmetric_decrypt(asym_req(&sign, b"ct", None)).await),
        &["KEY-5"],
    ));
    seen.push((
        "public key of a symmetric key",
        err(c.get_public_key(public_key_req(&enc_key, None)).await),
        &["no public key"],
    ));
    let mut keys = w.admin.keys.clone();
    for (purpose, alg) in [
        (Purpose::Sign, "sm4-gcm"),
        (Purpose::Mac, "sm2"),
        (Purpose::Encrypt, "hmac-sm3"),
    ] {
        let r = keys
            .create_key(v1::CreateKeyRequest {
                namespace: APP_NS.to_owned(),
                purpose: purpose.into(),
                algorithm: alg.to_owned(),
                ..Default::default()
            })
            .await;
        seen.push((
            "a key spec created for the wrong purpose",
            err(r),
            &["KEY-5"],
        ));
    }
    for (what, s, words) in &seen {
        assert!(
            matches!(s.code(), Code::InvalidArgument | Code::FailedPrecondition),
            "{what}: {s:?}"
        );
        for word in *words {
            assert!(
                s.message().contains(word),
                "{what}: {s:?} does not say {word:?}"
            );
        }
        assert_no_secret(s);
    }
    still_serves(&w).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_are_per_principal_and_resource_exhausted() {
    let settings = Settings {
        limits: Limits {
            rate_per_second: 0.001,
            burst: 10.0,
            ..Limits::default()
        },
        ..Settings::default()
    };
    let w = World::start_with(settings).await;
    let mut c = w.app.crypto.clone();
    for i in 0..10 {
        c.generate_random(v1::GenerateRandomRequest { length: 8 })
            .await
            .unwrap_or_else(|s| panic!("call {i} within the burst: {s:?}"));
    }
    for _ in 0..3 {
        let s = expect_err(
            c.generate_random(v1::GenerateRandomRequest { length: 8 })
                .await,
            Code::ResourceExhausted,
            "rate limit",
        );
        assert!(s.message().contains("retry"), "{s:?}");
    }
    // Every RPC counts, not just the one that ran out.
    expect_code(
        w.app.system.clone().status(v1::StatusRequest {}).await,
        Code::ResourceExhausted,
    );
    let r = c
        .encrypt(enc("anything", SECRET, &ctx(&[("t", SECRET_CONTEXT)])))
        .await;
    expect_code(r, Code::ResourceExhausted);
    // Other principals have their own buckets: the server still serves them.
    w.other_app
        .crypto
        .clone()
        .generate_random(v1::GenerateRandomRequest { length: 8 })
        .await
        .unwrap();
    w.auditor
        .keys
        .clone()
        .list_keys(v1::ListKeysRequest::default())
        .await
        .unwrap();
    w.stop().await;
}

/// API-4 asks for a uniform message; the status mapping's format is "<what is wrong> (request
/// <id>)", so the caller can quote the id and the operator find the detail in the log. Every
/// refusal should carry it, whichever layer refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_refusal_carries_a_request_id() {
    let settings = Settings {
        limits: Limits {
            rate_per_second: 0.001,
            burst: 30.0,
            ..Limits::default()
        },
        ..Settings::default()
    };
    let w = World::start_with(settings).await;
    let key = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let sign = w.create_key(APP_NS, Purpose::Sign, "sm2").await.key_id;
    let mut c = w.app.crypto.clone();
    let mut keys = w.admin.keys.clone();
    let none = ctx(&[]);
    let mut seen: Vec<(&str, Status)> = vec![
        (
            "unknown key (core)",
            err(c.encrypt(enc("nothing-here", SECRET, &none)).await),
        ),
        (
            "wrong purpose (core)",
            err(c.encrypt(enc(&sign, SECRET, &none)).await),
        ),
        (
            "malformed ciphertext (core)",
            err(c.decrypt(dec(b"junk", &none)).await),
        ),
        (
            "role (core)",
            err(w
                .admin
                .crypto
                .clone()
                .encrypt(enc(&key, SECRET, &none))
                .await),
        ),
        (
            "plaintext over the limit (limits)",
            err(c
                .encrypt(enc(&key, &secret_bytes(64 * KIB + 1), &none))
                .await),
        ),
        (
            "context over the limit (limits)",
            err(c
                .encrypt(enc(&key, SECRET, &big_context(8 * KIB + 1)))
                .await),
        ),
        (
            "forbidden algorithm (conversion)",
            err(keys
                .create_key(v1::CreateKeyRequest {
                    namespace: APP_NS.to_owned(),
                    purpose: Purpose::Encrypt.into(),
                    algorithm: "DES".to_owned(),
                    ..Default::default()
                })
                .await),
        ),
        (
            "bad signature option (conversion)",
            err(c
                .sign(sign_req(
                    &sign,
                    SECRET,
                    SigOpts {
                        hash: "sha1",
                        ..SigOpts::default()
                    },
                ))
                .await),
        ),
        (
            "empty key reference (conversion)",
            err(c.encrypt(enc("", SECRET, &none)).await),
        ),
    ];
    let nobody = w.connect(&w.pki.anonymous).await;
    seen.push((
        "certificate without a subject (identify)",
        err(nobody.system.clone().status(v1::StatusRequest {}).await),
    ));
    seen.push((
        "second init (system)",
        err(w
            .admin
            .system
            .clone()
            .init(v1::InitRequest {
                shares: 1,
                threshold: 1,
                ..v1::InitRequest::default()
            })
            .await),
    ));
    // Exhaust the app's bucket for the rate-limit refusal.
    let rate = loop {
        if let Err(s) = c
            .generate_random(v1::GenerateRandomRequest { length: 1 })
            .await
        {
            break s;
        }
    };
    seen.push(("rate limit (limits)", rate));
    let missing: Vec<String> = seen
        .iter()
        .filter(|(_, s)| !has_request_id(s))
        .map(|(what, s)| format!("{what}: {:?} {:?}", s.code(), s.message()))
        .collect();
    assert!(
        missing.is_empty(),
        "refusals without a request id:\n{}",
        missing.join("\n")
    );
    w.stop().await;
}
