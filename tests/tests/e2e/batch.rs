//! Batches (`kms.v1.CryptoBatch`, issue 20 item 1) over real mTLS: each item gets what the single
//! call would have given it, in order (authorisation, grants, policy, key state and size limits
//! per item); the audit trail holds one record per item under the single call's name with the
//! batch id, as if the items had come one by one; a batch over a limit is refused whole with
//! nothing done; the rate limiter counts items.

use std::collections::HashMap;

use kms_proto::v1::{self, Purpose};
use kms_server::Settings;
use kms_server::limits::Limits;
use kms_tests::pki::subjects::{self, APP_NS, OTHER_APP_NS};
use kms_tests::world::{KeyOp, World};
use serde_json::Value;
use tonic::Code;

use crate::common::{SECRET_CONTEXT, ctx, dec, enc, expect_err, has_request_id};

/// One item's result as (code, message): `(Code::Ok, "")` for a response.
type Outcome = (Code, String);

/// Which of a batch's items succeeded and how the others failed, in order.
macro_rules! outcomes {
    ($results:expr, $oneof:ident) => {
        $results
            .iter()
            .map(|r| match &r.result {
                Some(v1::$oneof::Result::Ok(_)) => (Code::Ok, String::new()),
                Some(v1::$oneof::Result::Error(e)) => (Code::from_i32(e.code), e.message.clone()),
                None => panic!("an item without a result"),
            })
            .collect::<Vec<Outcome>>()
    };
}

/// The successful items' responses, by index.
macro_rules! oks {
    ($results:expr, $oneof:ident) => {
        $results
            .iter()
            .map(|r| match &r.result {
                Some(v1::$oneof::Result::Ok(ok)) => Some(ok.clone()),
                Some(v1::$oneof::Result::Error(_)) | None => None,
            })
            .collect::<Vec<_>>()
    };
}

/// Checks each item's code, and that a failed item's message says `needle` and names the item's
/// own request id `<batch>.<index>`; returns the batch id.
#[track_caller]
fn check_outcomes(got: &[Outcome], want: &[(Code, &str)]) -> String {
    assert_eq!(got.len(), want.len(), "one result per item: {got:#?}");
    let mut batch_id = None;
    for (i, ((code, message), (want_code, needle))) in got.iter().zip(want).enumerate() {
        assert_eq!(code, want_code, "item {i}: {message}");
        if *code == Code::Ok {
            continue;
        }
        assert!(
            message.to_lowercase().contains(&needle.to_lowercase()),
            "item {i}: {message:?} does not say {needle:?}"
        );
        assert!(!message.contains(SECRET_CONTEXT), "item {i}: {message}");
        let status = tonic::Status::new(*code, message.clone());
        assert!(has_request_id(&status), "item {i}: {message}");
        let id = message
            .rsplit_once("(request ")
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .unwrap();
        let (batch, index) = id.rsplit_once('.').unwrap();
        assert_eq!(index, i.to_string(), "item {i}: {message}");
        assert_eq!(*batch_id.get_or_insert_with(|| batch.to_owned()), batch);
    }
    batch_id.expect("at least one item failed")
}

/// The records of the live trail (checkpoints left out), as JSON.
async fn records(w: &World) -> Vec<Value> {
    crate::common::audit_export(w)
        .await
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "record")
        .collect()
}

/// The records of batch `id`.
fn of_batch<'a>(records: &'a [Value], id: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["batch_id"] == id).collect()
}

/// The whole trail verifies with the audit public key.
async fn trail_verifies(w: &World) {
    let der = w
        .auditor
        .audit
        .clone()
        .get_audit_public_key(v1::GetAuditPublicKeyRequest {})
        .await
        .unwrap()
        .into_inner()
        .public_key_der;
    let public =
        kms_core::crypto::PublicKey::from_spki_der(kms_core::policy::Policy::default(), &der)
            .unwrap();
    let trail = crate::common::audit_export(w).await;
    kms_core::audit::verify(&trail, &public).unwrap();
}

/// Grants the app's namespace `ops` on a key of the other app's namespace.
async fn grant_to_app(w: &World, key_id: &str, ops: &[&str]) {
    w.admin
        .keys
        .clone()
        .create_grant(v1::CreateGrantRequest {
            key: key_id.to_owned(),
            grantee_namespace: APP_NS.to_owned(),
            operations: ops.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
        .unwrap();
}

fn row(i: usize) -> HashMap<String, String> {
    ctx(&[("row", &i.to_string())])
}

/// A batch of mixed items: each gets the single call's answer, in order (a good key, an unknown
/// one, another namespace's key without a grant, a disabled key, a context over the limit, a key
/// granted for encrypt, one granted only for decrypt, a key of the wrong purpose, a plaintext
/// over the limit); the trail has one record per item under `Crypto/Encrypt` with the batch id,
/// its own request id, key and outcome. Then the mirror image for decrypt: a wrong context,
/// junk, a key granted for encrypt only, and a compromised key (allowed, flagged).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_batch_gets_per_item_results_in_order_and_one_record_each() {
    let w = World::start().await;
    let good = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let foreign = w
        .create_key(OTHER_APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let granted = w
        .create_key(OTHER_APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    grant_to_app(&w, &granted, &["encrypt"]).await;
    let decrypt_only = w
        .create_key(OTHER_APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    grant_to_app(&w, &decrypt_only, &["decrypt"]).await;
    let disabled = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    w.admin_key_op(KeyOp::Disable, &disabled).await;
    let sign = w.create_key(APP_NS, Purpose::Sign, "sm2").await.key_id;
    let ghost = "0b9e6a8e-7f1e-4d5b-9c39-3f4a0d2c1b7e";
    let big_context = ctx(&[("t", &"v".repeat(8 * 1024))]);

    let items = vec![
        enc(&good, b"item-0", &row(0)),
        enc(ghost, b"item-1", &row(1)),
        enc(&foreign, b"item-2", &row(2)),
        enc(&disabled, b"item-3", &row(3)),
        enc(&good, b"item-4", &big_context),
        enc(&granted, b"item-5", &row(5)),
        enc(&decrypt_only, b"item-6", &row(6)),
        enc(&sign, b"item-7", &row(7)),
        enc(&good, &vec![7u8; 64 * 1024 + 1], &row(8)),
        enc(&good, b"item-9", &ctx(&[("t", SECRET_CONTEXT)])),
    ];
    let resp = w
        .app
        .batch
        .clone()
        .batch_encrypt(v1::BatchEncryptRequest { items })
        .await
        .unwrap()
        .into_inner();
    let batch = check_outcomes(
        &outcomes!(resp.results, batch_encrypt_result),
        &[
            (Code::Ok, ""),
            (Code::NotFound, ghost),
            (Code::NotFound, &foreign),
            (Code::FailedPrecondition, "DISABLED: encrypt is not allowed"),
            (Code::InvalidArgument, "the limit is 8192 bytes"),
            (Code::Ok, ""),
            (Code::NotFound, &decrypt_only),
            (Code::InvalidArgument, "cannot be used for encrypt"),
            (Code::InvalidArgument, "plaintext is 65537 bytes"),
            (Code::Ok, ""),
        ],
    );
    let sealed = oks!(resp.results, batch_encrypt_result);
    let (ct0, ct5, ct9) = (
        sealed[0].clone().unwrap(),
        sealed[5].clone().unwrap(),
        sealed[9].clone().unwrap(),
    );
    assert_eq!((ct0.key_id.as_str(), ct0.key_version), (good.as_str(), 1));
    assert_eq!(ct5.key_id, granted);

    // The trail: one record per item, as if they had come one by one, plus the batch id.
    let all = records(&w).await;
    let mine = of_batch(&all, &batch);
    assert_eq!(mine.len(), 10, "{mine:#?}");
    let want = [
        ("OK", Some(good.as_str())),
        ("NOT_FOUND", Some(ghost)),
        ("NOT_FOUND", Some(foreign.as_str())),
        ("FAILED_PRECONDITION", Some(disabled.as_str())),
        // Refused at the size check, before its key was read (as the single call).
        ("INVALID_ARGUMENT", None),
        ("OK", Some(granted.as_str())),
        ("NOT_FOUND", Some(decrypt_only.as_str())),
        ("INVALID_ARGUMENT", Some(sign.as_str())),
        ("INVALID_ARGUMENT", None),
        ("OK", Some(good.as_str())),
    ];
    for (i, (r, (outcome, key))) in mine.iter().zip(want).enumerate() {
        assert_eq!(r["operation"], "Crypto/Encrypt", "{r}");
        assert_eq!(r["request_id"], format!("{batch}.{i}"), "{r}");
        assert_eq!(r["outcome"], outcome, "{r}");
        assert_eq!(r["principal"], subjects::APP, "{r}");
        assert_eq!(r["role"], "app", "{r}");
        assert_eq!(r["key_id"].as_str(), key, "item {i}: {r}");
        if outcome == "OK" {
            assert_eq!(r["key_version"], 1, "{r}");
            assert!(r["context_hmac"].is_string(), "{r}");
        }
        assert!(r["transport"].is_string(), "{r}");
    }
    // Consecutive in the chain, in the items' order.
    let seqs: Vec<u64> = mine.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1), "{seqs:?}");
    // The batch itself has no record of its own: it is its items.
    assert!(
        all.iter()
            .all(|r| r["operation"] != "CryptoBatch/BatchEncrypt"),
        "a batch that ran is recorded as its items"
    );

    // Decrypt, per item: the right context, a wrong one, junk, a key granted for encrypt only,
    // a compromised key (allowed, flagged).
    let compromised = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let ct_compromised = w
        .app
        .crypto
        .clone()
        .encrypt(enc(&compromised, b"old", &row(4)))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    w.admin_key_op(KeyOp::Compromise, &compromised).await;
    let items = vec![
        dec(&ct0.ciphertext, &row(0)),
        dec(&ct0.ciphertext, &row(1)),
        dec(b"junk", &row(2)),
        dec(&ct5.ciphertext, &row(5)),
        dec(&ct_compromised, &row(4)),
        dec(&ct9.ciphertext, &ctx(&[("t", SECRET_CONTEXT)])),
    ];
    let resp = w
        .app
        .batch
        .clone()
        .batch_decrypt(v1::BatchDecryptRequest { items })
        .await
        .unwrap()
        .into_inner();
    let batch = check_outcomes(
        &outcomes!(resp.results, batch_decrypt_result),
        &[
            (Code::Ok, ""),
            (Code::InvalidArgument, "decryption failed"),
            (Code::InvalidArgument, "ciphertext"),
            (Code::NotFound, &granted),
            (Code::Ok, ""),
            (Code::Ok, ""),
        ],
    );
    let opened = oks!(resp.results, batch_decrypt_result);
    let first = opened[0].as_ref().unwrap();
    assert_eq!(
        (first.plaintext.as_slice(), first.key_compromised),
        (&b"item-0"[..], false)
    );
    let old = opened[4].as_ref().unwrap();
    assert_eq!(
        (old.plaintext.as_slice(), old.key_compromised),
        (&b"old"[..], true)
    );
    assert_eq!(opened[5].as_ref().unwrap().plaintext, b"item-9");
    let all = records(&w).await;
    let mine = of_batch(&all, &batch);
    let got: Vec<(&str, &str)> = mine
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("Crypto/Decrypt", "OK"),
            ("Crypto/Decrypt", "INVALID_ARGUMENT"),
            ("Crypto/Decrypt", "INVALID_ARGUMENT"),
            ("Crypto/Decrypt", "NOT_FOUND"),
            ("Crypto/Decrypt", "OK"),
            ("Crypto/Decrypt", "OK"),
        ]
    );
    assert_eq!(mine[4]["flags"], serde_json::json!(["key-compromised"]));
    assert_eq!(mine[4]["key_id"], compromised.as_str());
    assert_eq!(mine[0]["flags"], serde_json::json!([]));
    trail_verifies(&w).await;
    w.stop().await;
}

/// Every batch RPC runs its items as the single call (a good item and a bad one each), and
/// records them under the single call's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_batch_rpc_runs_its_items_as_the_single_call() {
    let w = World::start().await;
    let enc_key = w
        .create_key(APP_NS, Purpose::Encrypt, "aes-256-gcm")
        .await
        .key_id;
    let to_key = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let sign_key = w.create_key(APP_NS, Purpose::Sign, "sm2").await.key_id;
    let mac_key = w.create_key(APP_NS, Purpose::Mac, "hmac-sm3").await.key_id;
    let mut batch = w.app.batch.clone();
    let mut crypto = w.app.crypto.clone();
    let ghost = "5f0c6f43-2f2e-4d8e-8a38-0e4b9c0d9a11";
    let mut ids = Vec::new();

    let ct = crypto
        .encrypt(enc(&enc_key, b"move me", &row(0)))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let r = batch
        .batch_re_encrypt(v1::BatchReEncryptRequest {
            items: vec![
                v1::ReEncryptRequest {
                    ciphertext: ct.clone(),
                    source_context: row(0),
                    destination_key: to_key.clone(),
                    destination_context: row(1),
                },
                v1::ReEncryptRequest {
                    ciphertext: ct,
                    source_context: row(0),
                    destination_key: ghost.to_owned(),
                    destination_context: row(1),
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    ids.push((
        "Crypto/ReEncrypt",
        check_outcomes(
            &outcomes!(r.results, batch_re_encrypt_result),
            &[(Code::Ok, ""), (Code::NotFound, ghost)],
        ),
    ));
    let moved = oks!(r.results, batch_re_encrypt_result)[0].clone().unwrap();
    assert_eq!(moved.key_id, to_key);
    let back = crypto
        .decrypt(dec(&moved.ciphertext, &row(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.plaintext, b"move me");

    let r = batch
        .batch_generate_data_key(v1::BatchGenerateDataKeyRequest {
            items: vec![
                v1::GenerateDataKeyRequest {
                    key: enc_key.clone(),
                    key_spec: "aes-256".to_owned(),
                    context: row(2),
                    wrap_to_public_key: Vec::new(),
                },
                v1::GenerateDataKeyRequest {
                    key: enc_key.clone(),
                    key_spec: "des".to_owned(),
                    context: row(2),
                    wrap_to_public_key: Vec::new(),
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    ids.push((
        "Crypto/GenerateDataKey",
        check_outcomes(
            &outcomes!(r.results, batch_generate_data_key_result),
            &[(Code::Ok, ""), (Code::InvalidArgument, "des")],
        ),
    ));
    let dk = oks!(r.results, batch_generate_data_key_result)[0]
        .clone()
        .unwrap();
    assert_eq!(dk.plaintext.len(), 32);
    let opened = crypto
        .decrypt(dec(&dk.ciphertext, &row(2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.plaintext, dk.plaintext);

    let sign_item = |key: &str| v1::SignRequest {
        key: key.to_owned(),
        message: b"pay 10".to_vec(),
        ..v1::SignRequest::default()
    };
    let r = batch
        .batch_sign(v1::BatchSignRequest {
            items: vec![sign_item(&sign_key), sign_item(&enc_key)],
        })
        .await
        .unwrap()
        .into_inner();
    ids.push((
        "Crypto/Sign",
        check_outcomes(
            &outcomes!(r.results, batch_sign_result),
            &[
                (Code::Ok, ""),
                (Code::InvalidArgument, "cannot be used for sign"),
            ],
        ),
    ));
    let signature = oks!(r.results, batch_sign_result)[0]
        .clone()
        .unwrap()
        .signature;
    let verify_item = |message: &[u8], key: &str| v1::VerifyRequest {
        key: key.to_owned(),
        message: message.to_vec(),
        signature: signature.clone(),
        ..v1::VerifyRequest::default()
    };
    let r = batch
        .batch_verify(v1::BatchVerifyRequest {
            items: vec![
                verify_item(b"pay 10", &sign_key),
                verify_item(b"pay 99", &sign_key),
                verify_item(b"pay 10", ghost),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    ids.push((
        "Crypto/Verify",
        check_outcomes(
            &outcomes!(r.results, batch_verify_result),
            &[(Code::Ok, ""), (Code::Ok, ""), (Code::NotFound, ghost)],
        ),
    ));
    let verdicts: Vec<Option<bool>> = oks!(r.results, batch_verify_result)
        .iter()
        .map(|v| v.as_ref().map(|v| v.valid))
        .collect();
    assert_eq!(verdicts, [Some(true), Some(false), None]);

    let r = batch
        .batch_generate_mac(v1::BatchGenerateMacRequest {
            items: vec![
                v1::GenerateMacRequest {
                    key: mac_key.clone(),
                    data: b"tag me".to_vec(),
                },
                v1::GenerateMacRequest {
                    key: sign_key.clone(),
                    data: b"tag me".to_vec(),
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    ids.push((
        "Crypto/GenerateMac",
        check_outcomes(
            &outcomes!(r.results, batch_generate_mac_result),
            &[
                (Code::Ok, ""),
                (Code::InvalidArgument, "cannot be used for mac"),
            ],
        ),
    ));
    let tag = oks!(r.results, batch_generate_mac_result)[0]
        .clone()
        .unwrap()
        .mac;
    let r = batch
        .batch_verify_mac(v1::BatchVerifyMacRequest {
            items: vec![
                v1::VerifyMacRequest {
                    key: mac_key.clone(),
                    data: b"tag me".to_vec(),
                    mac: tag.clone(),
                    key_version: None,
                },
                v1::VerifyMacRequest {
                    key: mac_key.clone(),
                    data: b"tag me".to_vec(),
                    mac: tag,
                    key_version: Some(9),
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    ids.push((
        "Crypto/VerifyMac",
        check_outcomes(
            &outcomes!(r.results, batch_verify_mac_result),
            &[(Code::Ok, ""), (Code::NotFound, "version")],
        ),
    ));
    assert!(
        oks!(r.results, batch_verify_mac_result)[0]
            .as_ref()
            .unwrap()
            .valid
    );

    let all = records(&w).await;
    for (operation, id) in &ids {
        let mine = of_batch(&all, id);
        assert!(mine.len() >= 2, "{operation}: {mine:#?}");
        for (i, r) in mine.iter().enumerate() {
            assert_eq!(r["operation"], *operation, "{r}");
            assert_eq!(r["request_id"], format!("{id}.{i}"), "{r}");
        }
    }
    trail_verifies(&w).await;
    w.stop().await;
}

/// A batch over a limit — too many items, too many bytes, none at all — is INVALID_ARGUMENT
/// naming the limit, and nothing of it is done: the trail has one record for the refused batch
/// under its own name and none for its items. At the limits, the batch runs. One far over the
/// byte limit is refused before it is decoded, naming that limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_over_a_limit_are_refused_whole_with_nothing_done() {
    let w = World::start().await;
    let key = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let mut batch = w.app.batch.clone();
    let items = |n: usize, size: usize| v1::BatchEncryptRequest {
        items: (0..n)
            .map(|_| enc(&key, &vec![1u8; size], &ctx(&[])))
            .collect(),
    };
    let mut refused = Vec::new();
    for (request, needle) in [
        (
            items(1001, 8),
            "the batch holds 1001 items; the limit is 1000 items per call, and none of its items was done",
        ),
        // 65 × 64 KiB ≈ 4.06 MiB of request.
        (items(65, 64 * 1024), "the limit is 4194304 bytes per call"),
        (items(0, 0), "a batch needs at least one item"),
    ] {
        let s = expect_err(
            batch.batch_encrypt(request).await,
            Code::InvalidArgument,
            needle,
        );
        assert!(has_request_id(&s), "{s:?}");
        refused.push(s);
    }
    // Far over: tonic refuses the message before decoding it (4 MiB and one single call's
    // worth, 90112 bytes).
    let s = batch.batch_encrypt(items(70, 64 * 1024)).await.unwrap_err();
    assert!(
        matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{s:?}"
    );
    assert!(s.message().contains("4284416"), "{s:?}");

    // At the limits: 1000 items run; so do 63 items of 64 KiB (an encoded request of about
    // 3.94 MiB, just under the limit).
    let ok = batch
        .batch_encrypt(items(1000, 8))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.results.len(), 1000);
    assert!(
        outcomes!(ok.results, batch_encrypt_result)
            .iter()
            .all(|(c, _)| *c == Code::Ok)
    );
    let near = items(63, 64 * 1024);
    assert!(prost::Message::encoded_len(&near) <= 4 * 1024 * 1024);
    let ok = batch.batch_encrypt(near).await.unwrap().into_inner();
    assert_eq!(ok.results.len(), 63);

    let all = records(&w).await;
    let whole: Vec<&Value> = all
        .iter()
        .filter(|r| r["operation"] == "CryptoBatch/BatchEncrypt")
        .collect();
    let outcomes: Vec<&str> = whole
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "OUT_OF_RANGE"
        ],
        "one record per refused batch"
    );
    for (r, s) in whole.iter().zip(&refused) {
        let id = r["request_id"].as_str().unwrap();
        assert_eq!(r["batch_id"], id, "{r}");
        assert!(s.message().contains(id), "{s:?} names its batch {id}");
        assert_eq!(r["principal"], subjects::APP, "{r}");
        // Nothing of the refused batch ran: no record of any of its items.
        assert_eq!(of_batch(&all, id).len(), 1, "{id}");
    }
    let encrypted = all
        .iter()
        .filter(|r| r["operation"] == "Crypto/Encrypt")
        .count();
    assert_eq!(
        encrypted,
        1000 + 63,
        "only the batches within the limits ran"
    );
    w.stop().await;
}

/// The rate limiter counts items: a batch takes one token per item, all or none, and a batch the
/// bucket cannot cover is refused whole (RESOURCE_EXHAUSTED) with none of its items done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limiter_counts_items_not_calls() {
    let w = World::start_with(Settings {
        limits: Limits {
            rate_per_second: 0.001,
            burst: 10.0,
            ..Limits::default()
        },
        ..Settings::default()
    })
    .await;
    // Keys are made by the admin, whose bucket is its own.
    let key = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let mut batch = w.app.batch.clone();
    let items = |n: usize| v1::BatchEncryptRequest {
        items: (0..n).map(|i| enc(&key, b"x", &row(i))).collect(),
    };
    let ran = batch.batch_encrypt(items(7)).await.unwrap().into_inner();
    assert_eq!(ran.results.len(), 7);
    // 3 tokens left: a batch of 4 is refused whole, and takes none ...
    let s = expect_err(
        batch.batch_encrypt(items(4)).await,
        Code::ResourceExhausted,
        "a batch counts each of its 4 items as a request",
    );
    assert!(s.message().contains(subjects::APP), "{s:?}");
    // ... so three single calls still pass, and the fourth is refused.
    let mut crypto = w.app.crypto.clone();
    for i in 0..3 {
        crypto
            .encrypt(enc(&key, b"x", &row(i)))
            .await
            .unwrap_or_else(|s| panic!("call {i} within the burst: {s:?}"));
    }
    expect_err(
        crypto.encrypt(enc(&key, b"x", &row(9))).await,
        Code::ResourceExhausted,
        "rate limit",
    );

    let all = records(&w).await;
    let encrypts = all
        .iter()
        .filter(|r| r["operation"] == "Crypto/Encrypt" && r["outcome"] == "OK")
        .count();
    assert_eq!(encrypts, 7 + 3);
    let refused: Vec<&Value> = all
        .iter()
        .filter(|r| r["operation"] == "CryptoBatch/BatchEncrypt")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["outcome"], "RESOURCE_EXHAUSTED");
    w.stop().await;
}
