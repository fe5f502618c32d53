use std::sync::Arc;

use super::*;
use crate::TestKms;
use crate::authz::{GrantOp, Principal};
use crate::keys::Namespace;
use crate::kms::KmsConfig;
use crate::kms::tests::{Fixture, fixture, fixture_with};
use crate::policy::Policy;
use crate::store::{MemoryStore, Store};
use crate::{CreateKeyRequest, KeyInfo};

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

fn create(f: &Fixture, namespace: &str, purpose: Purpose, spec: KeySpec) -> KeyInfo {
    f.kms
        .create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: ns(namespace),
                purpose,
                spec,
                alias: None,
                rotation_period: None,
                description: String::new(),
            },
        )
        .unwrap()
}

fn values(v: &[&str]) -> Vec<SecretBytes> {
    v.iter()
        .map(|s| SecretBytes::copy_from_slice(s.as_bytes()))
        .collect()
}

fn texts(out: &TokenOutput) -> Vec<String> {
    out.results
        .iter()
        .map(|r| String::from_utf8(r.as_ref().unwrap().expose_secret().to_vec()).unwrap())
        .collect()
}

fn secrets(t: &[String]) -> Vec<SecretBytes> {
    t.iter()
        .map(|s| SecretBytes::copy_from_slice(s.as_bytes()))
        .collect()
}

const PANS: [&str; 3] = [
    "6222020200112233446",
    "4111111111111111",
    "5500005555555559",
];

#[test]
fn tokens_round_trip_with_the_version_tokenize_returned_across_rotations() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Tokenize, KeySpec::Sm4Ff1);
    let r = KeyRef::Id(key.id);
    let c: EncryptionContext = [("table", "cards")].into_iter().collect();
    let v1 = f
        .kms
        .tokenize(&f.app, &r, TokenFormat::Pan, &c, &values(&PANS))
        .unwrap();
    assert_eq!((v1.key_id, v1.key_version, v1.succeeded()), (key.id, 1, 3));
    let t1 = texts(&v1);
    f.kms.rotate_key(&f.admin, &r).unwrap();
    let v2 = f
        .kms
        .tokenize(&f.app, &r, TokenFormat::Pan, &c, &values(&PANS))
        .unwrap();
    assert_eq!(v2.key_version, 2, "new tokens use the newest version");
    assert_ne!(texts(&v2), t1);
    // Old tokens still detokenise, with the version they were made with.
    let back = f
        .kms
        .detokenize(&f.app, &r, 1, TokenFormat::Pan, &c, &secrets(&t1))
        .unwrap();
    assert_eq!(texts(&back), PANS);
    assert!(!back.key_compromised);
    // The wrong version gives wrong values that look right: why the version is never guessed.
    let wrong = f
        .kms
        .detokenize(&f.app, &r, 2, TokenFormat::Pan, &c, &secrets(&t1))
        .unwrap();
    assert_ne!(texts(&wrong), PANS);
    assert!(matches!(
        f.kms.detokenize(&f.app, &r, 0, TokenFormat::Pan, &c, &secrets(&t1)),
        Err(Error::InvalidArgument(e)) if e.field == "key version" && e.problem.contains("is required")
    ));
    assert!(matches!(
        f.kms
            .detokenize(&f.app, &r, 9, TokenFormat::Pan, &c, &secrets(&t1)),
        Err(Error::NotFound {
            what: "key version",
            ..
        })
    ));
}

#[test]
fn each_value_has_its_own_result_and_calls_are_bounded() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Tokenize, KeySpec::Aes256Ff1);
    let r = KeyRef::Id(key.id);
    let c = EncryptionContext::default();
    let out = f
        .kms
        .tokenize(
            &f.app,
            &r,
            TokenFormat::Digits,
            &c,
            &values(&["12345678", "", "12x45678", "12345", "87654321"]),
        )
        .unwrap();
    assert_eq!(out.succeeded(), 2);
    let problems: Vec<String> = out
        .results
        .iter()
        .map(|r| {
            r.as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(problems[0], "");
    assert_eq!(problems[1], "invalid value: is empty");
    assert!(problems[2].contains("character 3 is outside the digits alphabet"));
    assert!(problems[3].contains("below the minimum of 10^6"));
    assert_eq!(problems[4], "");
    assert!(matches!(
        f.kms.tokenize(&f.app, &r, TokenFormat::Digits, &c, &[]),
        Err(Error::InvalidArgument(e)) if e.field == "values"
    ));
    let many = vec!["12345678"; MAX_TOKEN_VALUES + 1];
    assert!(matches!(
        f.kms.tokenize(&f.app, &r, TokenFormat::Digits, &c, &values(&many)),
        Err(Error::InvalidArgument(e)) if e.problem == "at most 1000 values per call"
    ));
    assert_eq!(
        f.kms
            .tokenize(&f.app, &r, TokenFormat::Digits, &c, &values(&many[1..]))
            .unwrap()
            .succeeded(),
        1000
    );
}

#[test]
fn keys_of_other_purposes_do_not_tokenize_and_tokenize_keys_do_nothing_else() {
    let f = fixture();
    let enc = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm);
    let c = EncryptionContext::default();
    let e = f
        .kms
        .tokenize(
            &f.app,
            &KeyRef::Id(enc.id),
            TokenFormat::Digits,
            &c,
            &values(&["123456"]),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Policy(_)), "{e:?}");
    assert!(e.to_string().contains("tokenize"), "{e}");
    let mac = create(&f, "b", Purpose::Mac, KeySpec::HmacSm3);
    assert!(matches!(
        f.kms.tokenize(
            &f.other_app,
            &KeyRef::Id(mac.id),
            TokenFormat::Digits,
            &c,
            &values(&["123456"])
        ),
        Err(Error::Policy(_))
    ));
    let tok = create(&f, "a", Purpose::Tokenize, KeySpec::Sm4Ff1);
    assert!(matches!(
        f.kms.encrypt(&f.app, &KeyRef::Id(tok.id), &c, b"x"),
        Err(Error::Policy(_))
    ));
    // FF1 specs serve tokenize only; hmac-sha256 never tokenises.
    for (purpose, spec) in [
        (Purpose::Encrypt, KeySpec::Sm4Ff1),
        (Purpose::Mac, KeySpec::Aes256Ff1),
        (Purpose::Tokenize, KeySpec::HmacSha256),
        (Purpose::Tokenize, KeySpec::Sm4Gcm),
    ] {
        let refused = f.kms.create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: ns("a"),
                purpose,
                spec,
                alias: None,
                rotation_period: None,
                description: String::new(),
            },
        );
        assert!(matches!(refused, Err(Error::Policy(_))), "{purpose} {spec}");
    }
}

/// The roles and grants: apps of the key's namespace do both; another namespace only what its
/// grant names (tokenize does not give detokenize); admins and auditors neither.
#[test]
fn tokenize_and_detokenize_are_separate_rights() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Tokenize, KeySpec::Sm4Ff1);
    let r = KeyRef::Id(key.id);
    let c = EncryptionContext::default();
    let v = values(&["4111111111111111"]);
    let token = texts(
        &f.kms
            .tokenize(&f.app, &r, TokenFormat::Pan, &c, &v)
            .unwrap(),
    );
    let t = secrets(&token);
    for who in [&f.admin, &f.auditor] {
        assert!(matches!(
            f.kms.tokenize(who, &r, TokenFormat::Pan, &c, &v),
            Err(Error::PermissionDenied { op: "tokenize", .. })
        ));
        assert!(matches!(
            f.kms.detokenize(who, &r, 1, TokenFormat::Pan, &c, &t),
            Err(Error::PermissionDenied {
                op: "detokenize",
                ..
            })
        ));
    }
    let other: &Principal = &f.other_app;
    let out_of_reach = |e: Result<TokenOutput, Error>| {
        assert!(
            matches!(e, Err(Error::NotFound { what: "key", .. })),
            "{e:?}"
        );
    };
    out_of_reach(f.kms.tokenize(other, &r, TokenFormat::Pan, &c, &v));
    f.kms
        .create_grant(&f.admin, &r, ns("b"), vec![GrantOp::Tokenize])
        .unwrap();
    let theirs = f.kms.tokenize(other, &r, TokenFormat::Pan, &c, &v).unwrap();
    assert_eq!(texts(&theirs), token, "same key, same token");
    out_of_reach(f.kms.detokenize(other, &r, 1, TokenFormat::Pan, &c, &t));
    f.kms
        .create_grant(&f.admin, &r, ns("b"), vec![GrantOp::Detokenize])
        .unwrap();
    let back = f
        .kms
        .detokenize(other, &r, 1, TokenFormat::Pan, &c, &t)
        .unwrap();
    assert_eq!(texts(&back), ["4111111111111111"]);
    // Grants of operations that do not fit a tokenize key are refused.
    assert!(matches!(
        f.kms
            .create_grant(&f.admin, &r, ns("b"), vec![GrantOp::Decrypt]),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn pseudonym_keys_are_one_way() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Tokenize, KeySpec::HmacSm3);
    let r = KeyRef::Id(key.id);
    let c = EncryptionContext::default();
    let v = values(&["6222020200112233446", "4111111111111111"]);
    let one = f
        .kms
        .tokenize(&f.app, &r, TokenFormat::PanLuhnInvalid, &c, &v)
        .unwrap();
    assert!(one.pseudonyms);
    let again = f
        .kms
        .tokenize(&f.app, &r, TokenFormat::PanLuhnInvalid, &c, &v)
        .unwrap();
    assert_eq!(texts(&one), texts(&again), "deterministic");
    let e = f
        .kms
        .detokenize(
            &f.app,
            &r,
            1,
            TokenFormat::PanLuhnInvalid,
            &c,
            &secrets(&texts(&one)),
        )
        .unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e:?}");
    assert!(e.to_string().contains("pseudonyms are one-way"), "{e}");
}

#[test]
fn key_states_apply() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Tokenize, KeySpec::Sm4Ff1);
    let r = KeyRef::Id(key.id);
    let c = EncryptionContext::default();
    let v = values(&["123456789"]);
    let t = secrets(&texts(
        &f.kms
            .tokenize(&f.app, &r, TokenFormat::Digits, &c, &v)
            .unwrap(),
    ));
    f.kms.mark_compromised(&f.admin, &r).unwrap();
    assert!(matches!(
        f.kms.tokenize(&f.app, &r, TokenFormat::Digits, &c, &v),
        Err(Error::InvalidState { .. })
    ));
    let back = f
        .kms
        .detokenize(&f.app, &r, 1, TokenFormat::Digits, &c, &t)
        .unwrap();
    assert!(back.key_compromised, "flagged for the audit");
    assert_eq!(texts(&back), ["123456789"]);
}

/// gm-only: no aes-256-ff1 keys and no new AES tokens, but old AES tokens still detokenise
/// (as old AES ciphertexts still decrypt).
#[test]
fn gm_only_refuses_aes_ff1_for_new_tokens_but_opens_old_ones() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let f = fixture_with(store.clone(), 1, 1);
    let aes = create(&f, "a", Purpose::Tokenize, KeySpec::Aes256Ff1);
    let r = KeyRef::Id(aes.id);
    let c = EncryptionContext::default();
    let v = values(&["123456789"]);
    let t = secrets(&texts(
        &f.kms
            .tokenize(&f.app, &r, TokenFormat::Digits, &c, &v)
            .unwrap(),
    ));
    let gm = TestKms::with_clock(
        store,
        KmsConfig {
            policy: Policy::from_config(crate::policy::PolicyMode::GmOnly),
            ..KmsConfig::default()
        },
        f.clock.clone(),
    );
    gm.unseal_with(&f.shares[0]).unwrap();
    let e = gm
        .create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: ns("a"),
                purpose: Purpose::Tokenize,
                spec: KeySpec::Aes256Ff1,
                alias: None,
                rotation_period: None,
                description: String::new(),
            },
        )
        .unwrap_err();
    assert!(matches!(e, Error::Policy(_)), "{e:?}");
    assert!(e.to_string().contains("aes-256-ff1"), "{e}");
    assert!(matches!(
        gm.tokenize(&f.app, &r, TokenFormat::Digits, &c, &v),
        Err(Error::Policy(_))
    ));
    let back = gm
        .detokenize(&f.app, &r, 1, TokenFormat::Digits, &c, &t)
        .unwrap();
    assert_eq!(texts(&back), ["123456789"]);
    // sm4-ff1 and hmac-sm3 pseudonym keys are GM algorithms.
    for spec in [KeySpec::Sm4Ff1, KeySpec::HmacSm3] {
        gm.create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: ns("a"),
                purpose: Purpose::Tokenize,
                spec,
                alias: None,
                rotation_period: None,
                description: String::new(),
            },
        )
        .unwrap();
    }
}

/// Tokenize keys are listed once (they share the encrypt keys' tree).
#[test]
fn tokenize_keys_are_listed_once() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Tokenize, KeySpec::Sm4Ff1);
    let listed = f.kms.list_keys(&f.admin, None).unwrap();
    assert_eq!(listed.iter().filter(|k| k.id == key.id).count(), 1);
    assert_eq!(
        f.kms
            .describe_key(&f.app, &KeyRef::Id(key.id))
            .unwrap()
            .purpose,
        Purpose::Tokenize
    );
}
