//! Tokens (`kms.v1.Tokenization`, issue 22 item 1) over real mutual TLS: per-value results in
//! order, tokens that detokenise with the version Tokenize returned (also after rotation),
//! detokenise as a right of its own, one-way pseudonyms, whole-call refusals, the gm-only
//! policy, and one audit record per call with the key, version and count — never a value or a
//! token.

use std::collections::HashMap;

use kms_proto::v1::{self, Purpose};
use kms_server::Settings;
use kms_server::tls::Transport;
use kms_tests::pki::subjects::{APP_NS, OTHER_APP_NS};
use kms_tests::world::{KeyOp, World};
use serde_json::Value;
use tonic::Code;

use crate::common::{SECRET_CONTEXT, expect_err, has_request_id};

/// Luhn-valid card numbers of 16 to 19 digits.
const PANS: [&str; 3] = [
    "6222020200112233446",
    "4111111111111111",
    "5500005555555559",
];

fn context() -> HashMap<String, String> {
    [("customer".to_owned(), SECRET_CONTEXT.to_owned())].into()
}

fn tokenize(key: &str, format: &str, values: &[&str]) -> v1::TokenizeRequest {
    v1::TokenizeRequest {
        key: key.to_owned(),
        format: format.to_owned(),
        context: context(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

fn detokenize(key: &str, version: u32, format: &str, tokens: &[String]) -> v1::DetokenizeRequest {
    v1::DetokenizeRequest {
        key: key.to_owned(),
        key_version: version,
        format: format.to_owned(),
        context: context(),
        tokens: tokens.to_vec(),
    }
}

/// Each result as the string, or `Err((code, message))`.
fn outcomes(results: &[v1::TokenResult]) -> Vec<Result<String, (Code, String)>> {
    results
        .iter()
        .map(|r| match &r.result {
            Some(v1::token_result::Result::Ok(s)) => Ok(s.clone()),
            Some(v1::token_result::Result::Error(e)) => {
                Err((Code::from_i32(e.code), e.message.clone()))
            }
            None => panic!("a result without a value or an error"),
        })
        .collect()
}

fn oks(results: &[v1::TokenResult]) -> Vec<String> {
    outcomes(results)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e:?}")))
        .collect()
}

async fn records(w: &World) -> Vec<Value> {
    crate::common::audit_export(w)
        .await
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "record")
        .collect()
}

fn luhn_valid(s: &str) -> bool {
    kms_core::crypto::tokenize::luhn_valid(
        &s.bytes().map(|b| u16::from(b - b'0')).collect::<Vec<_>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_round_trip_with_per_value_results_and_one_record_per_call() {
    let w = World::start().await;
    let key = w
        .create_key_with_alias(APP_NS, Purpose::Tokenize, "sm4-ff1", "pan-tokens")
        .await;
    let mut tokens = w.app.tokens.clone();
    let values = [
        PANS[0],
        "4111111111111112",
        PANS[1],
        "",
        PANS[2],
        "411111111111",
    ];
    let out = tokens
        .tokenize(tokenize("pan-tokens", "pan", &values))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (out.key_id.as_str(), out.key_version),
        (key.key_id.as_str(), 1)
    );
    assert!(!out.pseudonyms);
    let got = outcomes(&out.results);
    let want: [(usize, &str); 3] = [
        (1, "fails the Luhn check"),
        (3, "invalid value: is empty"),
        (5, "has 12 digits; a PAN has 13 to 19"),
    ];
    let mut made = Vec::new();
    for (i, r) in got.iter().enumerate() {
        match (r, want.iter().find(|(j, _)| *j == i)) {
            (Ok(token), None) => {
                assert_eq!(token.len(), values[i].len());
                assert_eq!(token[..6], values[i][..6]);
                assert_eq!(token[token.len() - 4..], values[i][values[i].len() - 4..]);
                assert!(luhn_valid(token), "format pan: Luhn-valid tokens");
                assert_ne!(token, values[i]);
                made.push(token.clone());
            }
            (Err((code, message)), Some((_, needle))) => {
                assert_eq!(*code, Code::InvalidArgument, "{message}");
                assert!(
                    message.contains(needle),
                    "{message:?} does not say {needle:?}"
                );
                let status = tonic::Status::new(*code, message.clone());
                assert!(has_request_id(&status), "{message}");
                assert!(
                    message.contains(&format!(".{i})")),
                    "names value {i}: {message}"
                );
                assert!(!message.contains("4111111111111112"), "{message}");
            }
            (other, expected) => panic!("value {i}: {other:?}, expected {expected:?}"),
        }
    }
    let back = tokens
        .detokenize(detokenize("pan-tokens", 1, "pan", &made))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(oks(&back.results), PANS);
    assert!(!back.key_compromised);
    // Another context gives other values back (the tweak binds it), never an error.
    let mut other = detokenize("pan-tokens", 1, "pan", &made);
    other.context = HashMap::new();
    let wrong = tokens.detokenize(other).await.unwrap().into_inner();
    assert_ne!(oks(&wrong.results), PANS);

    // The trail: one record per call, with key, version and the count of values done.
    let records = records(&w).await;
    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["operation"]
                .as_str()
                .is_some_and(|o| o.starts_with("Tokenization/"))
        })
        .collect();
    assert_eq!(calls.len(), 3, "{calls:#?}");
    for (r, (op, count, context)) in calls.iter().zip([
        ("Tokenization/Tokenize", 3, true),
        ("Tokenization/Detokenize", 3, true),
        // The call with an empty context: nothing to correlate.
        ("Tokenization/Detokenize", 3, false),
    ]) {
        assert_eq!(r["operation"], op);
        assert_eq!(r["key_id"], key.key_id.as_str());
        assert_eq!(r["key_version"], 1);
        assert_eq!(r["count"], count);
        assert_eq!(r["outcome"], "OK");
        assert_eq!(
            r["context_hmac"].is_string(),
            context,
            "the context is correlated by its HMAC, never recorded: {r}"
        );
    }
    let trail = crate::common::audit_export(&w).await;
    for secret in PANS.iter().map(|p| (*p).to_owned()).chain(made) {
        assert!(!trail.contains(&secret), "a value or token in the trail");
    }
    assert!(!trail.contains(SECRET_CONTEXT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_format_round_trips_and_luhn_invalid_tokens_never_pass_luhn() {
    let w = World::start().await;
    let key = w.create_key(APP_NS, Purpose::Tokenize, "aes-256-ff1").await;
    let mut tokens = w.app.tokens.clone();
    for (format, values) in [
        (
            "digits",
            vec!["123456", "00000000000000000000", "9876543210123"],
        ),
        ("alphanumeric", vec!["aB3z", "Customer42", "ZZZZzzzz0000"]),
        ("pan", PANS.to_vec()),
        ("pan-luhn-invalid", PANS.to_vec()),
    ] {
        let out = tokens
            .tokenize(tokenize(&key.key_id, format, &values))
            .await
            .unwrap()
            .into_inner();
        let made = oks(&out.results);
        if format == "pan-luhn-invalid" {
            assert!(made.iter().all(|t| !luhn_valid(t)), "{format}");
        }
        let back = tokens
            .detokenize(detokenize(&key.key_id, out.key_version, format, &made))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(oks(&back.results), values, "{format}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn detokenize_is_a_right_of_its_own_and_pseudonyms_are_one_way() {
    let w = World::start().await;
    // A key of the other app's namespace, which the app reaches only by grant.
    let key = w
        .create_key(OTHER_APP_NS, Purpose::Tokenize, "sm4-ff1")
        .await;
    let made = oks(&w
        .other_app
        .tokens
        .clone()
        .tokenize(tokenize(&key.key_id, "pan", &PANS))
        .await
        .unwrap()
        .into_inner()
        .results);
    let mut app = w.app.tokens.clone();
    expect_err(
        app.tokenize(tokenize(&key.key_id, "pan", &PANS)).await,
        Code::NotFound,
        "not found",
    );
    let grant = |ops: &[&str]| v1::CreateGrantRequest {
        key: key.key_id.clone(),
        grantee_namespace: APP_NS.to_owned(),
        operations: ops.iter().map(|s| (*s).to_owned()).collect(),
    };
    w.admin
        .keys
        .clone()
        .create_grant(grant(&["tokenize"]))
        .await
        .unwrap();
    let theirs = app
        .tokenize(tokenize(&key.key_id, "pan", &PANS))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(oks(&theirs.results), made);
    // Tokenize does not give detokenize.
    expect_err(
        app.detokenize(detokenize(&key.key_id, 1, "pan", &made))
            .await,
        Code::NotFound,
        "not found",
    );
    w.admin
        .keys
        .clone()
        .create_grant(grant(&["tokenize", "detokenize"]))
        .await
        .unwrap();
    let back = app
        .detokenize(detokenize(&key.key_id, 1, "pan", &made))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(oks(&back.results), PANS);
    // Admins and auditors are not on the data plane.
    for c in [&w.admin, &w.auditor] {
        expect_err(
            c.tokens
                .clone()
                .detokenize(detokenize(&key.key_id, 1, "pan", &made))
                .await,
            Code::PermissionDenied,
            "may not detokenize",
        );
    }

    let pseudo = w.create_key(APP_NS, Purpose::Tokenize, "hmac-sm3").await;
    let p1 = app
        .tokenize(tokenize(&pseudo.key_id, "pan-luhn-invalid", &PANS))
        .await
        .unwrap()
        .into_inner();
    assert!(p1.pseudonyms);
    let p2 = app
        .tokenize(tokenize(&pseudo.key_id, "pan-luhn-invalid", &PANS))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(oks(&p1.results), oks(&p2.results), "deterministic");
    assert!(oks(&p1.results).iter().all(|t| !luhn_valid(t)));
    expect_err(
        app.detokenize(detokenize(
            &pseudo.key_id,
            1,
            "pan-luhn-invalid",
            &oks(&p1.results),
        ))
        .await,
        Code::FailedPrecondition,
        "pseudonyms are one-way",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_stay_detokenisable_after_rotation_with_their_version() {
    let w = World::start().await;
    let key = w.create_key(APP_NS, Purpose::Tokenize, "sm4-ff1").await;
    let mut tokens = w.app.tokens.clone();
    let v1_tokens = oks(&tokens
        .tokenize(tokenize(&key.key_id, "digits", &["123456789012"]))
        .await
        .unwrap()
        .into_inner()
        .results);
    w.admin_key_op(KeyOp::Rotate, &key.key_id).await;
    let v2 = tokens
        .tokenize(tokenize(&key.key_id, "digits", &["123456789012"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v2.key_version, 2);
    assert_ne!(oks(&v2.results), v1_tokens);
    let back = tokens
        .detokenize(detokenize(&key.key_id, 1, "digits", &v1_tokens))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(oks(&back.results), ["123456789012"]);
    expect_err(
        tokens
            .detokenize(detokenize(&key.key_id, 0, "digits", &v1_tokens))
            .await,
        Code::InvalidArgument,
        "invalid key version: is required",
    );
    expect_err(
        tokens
            .detokenize(detokenize(&key.key_id, 7, "digits", &v1_tokens))
            .await,
        Code::NotFound,
        "key version",
    );
    // Compromised: no new tokens; detokenising still works and is flagged.
    w.admin_key_op(KeyOp::Compromise, &key.key_id).await;
    expect_err(
        tokens
            .tokenize(tokenize(&key.key_id, "digits", &["123456789012"]))
            .await,
        Code::FailedPrecondition,
        "compromised",
    );
    let flagged = tokens
        .detokenize(detokenize(&key.key_id, 1, "digits", &v1_tokens))
        .await
        .unwrap()
        .into_inner();
    assert!(flagged.key_compromised);
    let records = records(&w).await;
    let last = records
        .iter()
        .rev()
        .find(|r| r["operation"] == "Tokenization/Detokenize")
        .unwrap();
    assert!(
        last["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "key-compromised"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_calls_are_refused_whole_and_bad_values_one_by_one() {
    let w = World::start().await;
    let key = w.create_key(APP_NS, Purpose::Tokenize, "sm4-ff1").await;
    let enc = w.create_key(APP_NS, Purpose::Encrypt, "sm4-gcm").await;
    let mut tokens = w.app.tokens.clone();
    expect_err(
        tokens
            .tokenize(tokenize(&key.key_id, "iban", &["123456"]))
            .await,
        Code::InvalidArgument,
        "invalid format: unknown; use one of: digits, alphanumeric, pan, pan-luhn-invalid",
    );
    expect_err(
        tokens.tokenize(tokenize(&key.key_id, "digits", &[])).await,
        Code::InvalidArgument,
        "at least one value",
    );
    let many = vec!["123456"; 1001];
    expect_err(
        tokens
            .tokenize(tokenize(&key.key_id, "digits", &many))
            .await,
        Code::InvalidArgument,
        "the limit is 1000 items per call",
    );
    expect_err(
        tokens
            .tokenize(tokenize(&enc.key_id, "digits", &["123456"]))
            .await,
        Code::InvalidArgument,
        "tokenize",
    );
    expect_err(
        tokens.tokenize(tokenize("", "digits", &["123456"])).await,
        Code::InvalidArgument,
        "key is required",
    );
    let out = tokens
        .tokenize(tokenize(
            &key.key_id,
            "alphanumeric",
            &["abc", "ab-cd", "abcd", &"x".repeat(257)],
        ))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<Option<(Code, String)>> = outcomes(&out.results)
        .into_iter()
        .map(Result::err)
        .collect();
    let (code, m) = got[0].clone().unwrap();
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        m.contains("(62^3 = 238328) is below the minimum of 10^6"),
        "{m}"
    );
    assert!(
        got[1]
            .clone()
            .unwrap()
            .1
            .contains("character 3 is outside the alphanumeric alphabet")
    );
    assert!(got[2].is_none());
    assert!(
        got[3]
            .clone()
            .unwrap()
            .1
            .contains("longer than 256 characters")
    );
    // A token of the wrong Luhn kind is refused, value by value.
    let valid = oks(&tokens
        .tokenize(tokenize(&key.key_id, "pan", &PANS[..1]))
        .await
        .unwrap()
        .into_inner()
        .results);
    let back = tokens
        .detokenize(detokenize(&key.key_id, 1, "pan-luhn-invalid", &valid))
        .await
        .unwrap()
        .into_inner();
    let (code, m) = outcomes(&back.results)[0].clone().unwrap_err();
    assert_eq!(code, Code::InvalidArgument);
    assert!(m.contains("passes the Luhn check, so it is not a token of format pan-luhn-invalid"));
}

/// gm-only (over RFC 8998): no aes-256-ff1 keys; sm4-ff1 and pseudonyms work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gm_only_refuses_aes_ff1_keys_and_tokenises_with_sm4() {
    let w = World::start_over(Settings::default(), Transport::GmOnly).await;
    let refused = w
        .admin
        .keys
        .clone()
        .create_key(v1::CreateKeyRequest {
            namespace: APP_NS.to_owned(),
            purpose: Purpose::Tokenize.into(),
            algorithm: "aes-256-ff1".to_owned(),
            ..v1::CreateKeyRequest::default()
        })
        .await;
    expect_err(refused, Code::InvalidArgument, "aes-256-ff1");
    for spec in ["sm4-ff1", "hmac-sm3"] {
        let key = w.create_key(APP_NS, Purpose::Tokenize, spec).await;
        let out = w
            .app
            .tokens
            .clone()
            .tokenize(tokenize(&key.key_id, "pan", &PANS))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(oks(&out.results).len(), 3, "{spec}");
    }
}
