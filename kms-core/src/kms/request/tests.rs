//! The verdicts and their order, with the KMS's own keys signing (the outside judges, OpenSSL
//! and GmSSL, sign in the end-to-end tests).

use std::sync::Arc;

use super::*;
use crate::alg::KeySpec;
use crate::authz::Principal;
use crate::clock::ManualClock;
use crate::keys::{Alias, Namespace};
use crate::policy::{Policy, PolicyMode};
use crate::signed_request::RequestBody;
use crate::store::{MemoryStore, Store};
use crate::{CreateKeyRequest, KmsConfig, TestKms};

const NOW: u64 = 1_700_000_000;

struct F {
    kms: TestKms,
    clock: Arc<ManualClock>,
    admin: Principal,
    app: Principal,
    other: Principal,
}

fn fixture() -> F {
    fixture_with(PolicyMode::Standard)
}

fn fixture_with(mode: PolicyMode) -> F {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(NOW));
    let config = KmsConfig::new(Policy::from_config(mode));
    let (kms, admin, _) = TestKms::unsealed(store, config, clock.clone()).unwrap();
    let app = kms.add_app(&admin, "gw-a", "a").unwrap();
    let other = kms.add_app(&admin, "gw-b", "b").unwrap();
    F {
        kms,
        clock,
        admin,
        app,
        other,
    }
}

fn create(f: &F, purpose: Purpose, spec: KeySpec, alias: &str) -> KeyRef {
    let info = f
        .kms
        .create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: Namespace::new("a").unwrap(),
                purpose,
                spec,
                alias: Some(Alias::new(alias).unwrap()),
                rotation_period: None,
                description: String::new(),
            },
        )
        .unwrap();
    KeyRef::Id(info.id)
}

fn parts<'a>(ts: u64, nonce: &'a [u8], body: &'a [u8]) -> RequestParts<'a> {
    RequestParts {
        method: "POST",
        path: "/v1/payments?batch=7",
        timestamp: ts,
        nonce,
        body: RequestBody::Bytes(body),
    }
}

/// What the partner does: sign the canonical string (here with the KMS's own key).
fn sign(f: &F, key: &KeyRef, scheme: RequestScheme, p: &RequestParts<'_>) -> Vec<u8> {
    let canonical = signed_request::canonical(scheme, p).unwrap();
    match scheme {
        RequestScheme::HmacSm3 => f.kms.generate_mac(&f.app, key, &canonical).unwrap(),
        RequestScheme::Sm2 => f
            .kms
            .sign(
                &f.app,
                key,
                Message::Raw(&canonical),
                &SignatureParams::default(),
            )
            .unwrap(),
        RequestScheme::RsaPss => f
            .kms
            .sign(
                &f.app,
                key,
                Message::Raw(&canonical),
                &SignatureParams {
                    rsa_scheme: Some(RsaSigScheme::Pss),
                    hash: Some(DigestAlg::Sha256),
                    sm2_id: None,
                },
            )
            .unwrap(),
    }
    .signature
}

fn verdict(
    f: &F,
    key: &KeyRef,
    scheme: RequestScheme,
    p: &RequestParts<'_>,
    sig: &[u8],
) -> RequestVerdict {
    f.kms
        .verify_request(&f.app, key, scheme, p, sig)
        .unwrap()
        .verdict
}

#[test]
fn every_scheme_verifies_once_then_calls_it_a_replay() {
    let f = fixture();
    for (scheme, purpose, spec, alias) in [
        (
            RequestScheme::Sm2,
            Purpose::Sign,
            KeySpec::Sm2,
            "partner-sm2",
        ),
        (
            RequestScheme::HmacSm3,
            Purpose::Mac,
            KeySpec::HmacSm3,
            "partner-mac",
        ),
        (
            RequestScheme::RsaPss,
            Purpose::Sign,
            KeySpec::Rsa2048,
            "partner-rsa",
        ),
    ] {
        let key = create(&f, purpose, spec, alias);
        let p = parts(NOW, b"nonce-0001-abcdef", b"{\"amount\":100}");
        let sig = sign(&f, &key, scheme, &p);
        let out = f
            .kms
            .verify_request(&f.app, &key, scheme, &p, &sig)
            .unwrap();
        assert_eq!(out.verdict, RequestVerdict::Ok, "{scheme}");
        assert_eq!(out.key_version, 1);
        assert!(!out.key_compromised);
        assert_eq!(
            verdict(&f, &key, scheme, &p, &sig),
            RequestVerdict::Replayed
        );
        // The same nonce under another key is another nonce.
        let other_key = create(&f, purpose, spec, &format!("{alias}-2"));
        let sig2 = sign(&f, &other_key, scheme, &p);
        assert_eq!(
            verdict(&f, &other_key, scheme, &p, &sig2),
            RequestVerdict::Ok
        );
    }
}

#[test]
fn any_change_to_a_signed_field_is_a_bad_signature() {
    let f = fixture();
    let key = create(&f, Purpose::Sign, KeySpec::Sm2, "partner");
    let p = parts(NOW, b"nonce-0002-abcdef", b"{\"amount\":100}");
    let sig = sign(&f, &key, RequestScheme::Sm2, &p);
    let changed = [
        RequestParts { method: "PUT", ..p },
        RequestParts {
            path: "/v1/payments?batch=8",
            ..p
        },
        RequestParts {
            timestamp: NOW + 1,
            ..p
        },
        RequestParts {
            nonce: b"nonce-0002-abcdeF",
            ..p
        },
        RequestParts {
            body: RequestBody::Bytes(b"{\"amount\":900}"),
            ..p
        },
    ];
    for c in changed {
        assert_eq!(
            verdict(&f, &key, RequestScheme::Sm2, &c, &sig),
            RequestVerdict::BadSignature,
            "{c:?}"
        );
    }
    let mut flipped = sig.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(
        verdict(&f, &key, RequestScheme::Sm2, &p, &flipped),
        RequestVerdict::BadSignature
    );
    assert_eq!(
        verdict(&f, &key, RequestScheme::Sm2, &p, b"not DER at all"),
        RequestVerdict::BadSignature
    );
    // Forgeries consumed no nonce: the genuine request still goes through once.
    assert_eq!(
        verdict(&f, &key, RequestScheme::Sm2, &p, &sig),
        RequestVerdict::Ok
    );
    // A digest of the body stands for the body.
    let p2 = parts(NOW, b"nonce-0003-abcdef", b"body");
    let sig2 = sign(&f, &key, RequestScheme::Sm2, &p2);
    let digest = RequestScheme::Sm2.body_digest(b"body");
    let by_digest = RequestParts {
        body: RequestBody::Digest(&digest),
        ..p2
    };
    assert_eq!(
        verdict(&f, &key, RequestScheme::Sm2, &by_digest, &sig2),
        RequestVerdict::Ok
    );
}

#[test]
fn stale_in_either_direction_and_checked_before_the_signature() {
    let f = fixture();
    let key = create(&f, Purpose::Mac, KeySpec::HmacSm3, "partner");
    let window = f.kms.replay_guard().settings().window.as_secs();
    for ts in [NOW - window - 1, NOW + window + 1, 0, u64::MAX] {
        let p = parts(ts, b"nonce-0004-abcdef", b"");
        let sig = sign(&f, &key, RequestScheme::HmacSm3, &p);
        assert_eq!(
            verdict(&f, &key, RequestScheme::HmacSm3, &p, &sig),
            RequestVerdict::Stale {
                skew: ts.abs_diff(NOW)
            }
        );
        // A stale request with a bad signature is still just stale.
        assert!(matches!(
            verdict(&f, &key, RequestScheme::HmacSm3, &p, &[0; 32]),
            RequestVerdict::Stale { .. }
        ));
    }
    // At the edges of the window it is fresh.
    for (i, ts) in [NOW - window, NOW + window].into_iter().enumerate() {
        let nonce = format!("nonce-edge-{i}-abc");
        let p = parts(ts, nonce.as_bytes(), b"");
        let sig = sign(&f, &key, RequestScheme::HmacSm3, &p);
        assert_eq!(
            verdict(&f, &key, RequestScheme::HmacSm3, &p, &sig),
            RequestVerdict::Ok
        );
    }
    // A replay after the window is stale, not a fresh request.
    let p = parts(NOW, b"nonce-0005-abcdef", b"");
    let sig = sign(&f, &key, RequestScheme::HmacSm3, &p);
    assert_eq!(
        verdict(&f, &key, RequestScheme::HmacSm3, &p, &sig),
        RequestVerdict::Ok
    );
    f.clock.advance(window + 2);
    assert!(matches!(
        verdict(&f, &key, RequestScheme::HmacSm3, &p, &sig),
        RequestVerdict::Stale { .. }
    ));
}

fn malformed(v: RequestVerdict) -> Malformed {
    let RequestVerdict::Malformed(m) = v else {
        panic!("not malformed: {v:?}")
    };
    m
}

#[test]
fn malformed_fields_come_first_and_name_the_field() {
    let f = fixture();
    let key = create(&f, Purpose::Sign, KeySpec::Sm2, "partner");
    let p = parts(0, b"short", b"");
    // Malformed beats stale and the signature.
    assert_eq!(
        malformed(verdict(&f, &key, RequestScheme::Sm2, &p, b"sig")).field,
        "nonce"
    );
    let huge = vec![7u8; 1 << 20];
    let p = parts(NOW, &huge, b"");
    let m = malformed(verdict(&f, &key, RequestScheme::Sm2, &p, b"sig"));
    assert_eq!(m.field, "nonce");
    assert!(m.problem.contains("1048576 bytes"), "{}", m.problem);
    let p = RequestParts {
        path: "/a\nPOST",
        ..parts(NOW, b"nonce-0006-abcdef", b"")
    };
    assert_eq!(
        malformed(verdict(&f, &key, RequestScheme::Sm2, &p, b"sig")).field,
        "path"
    );
}

#[test]
fn the_key_must_be_reachable_usable_and_of_the_scheme() {
    let f = fixture();
    let sm2 = create(&f, Purpose::Sign, KeySpec::Sm2, "partner");
    let enc = create(&f, Purpose::Encrypt, KeySpec::Sm4Gcm, "data");
    let p = parts(NOW, b"nonce-0007-abcdef", b"");
    let sig = sign(&f, &sm2, RequestScheme::Sm2, &p);
    let call =
        |who: &Principal, key: &KeyRef, scheme| f.kms.verify_request(who, key, scheme, &p, &sig);
    assert!(matches!(
        call(&f.app, &sm2, RequestScheme::RsaPss),
        Err(Error::InvalidArgument(InvalidInput {
            field: "scheme",
            ..
        }))
    ));
    assert!(matches!(
        call(&f.app, &sm2, RequestScheme::HmacSm3),
        Err(Error::Policy(
            crate::policy::PolicyError::WrongPurpose { .. }
        ))
    ));
    assert!(matches!(
        call(&f.app, &enc, RequestScheme::Sm2),
        Err(Error::Policy(
            crate::policy::PolicyError::WrongPurpose { .. }
        ))
    ));
    assert!(matches!(
        call(&f.other, &sm2, RequestScheme::Sm2),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        call(&f.admin, &sm2, RequestScheme::Sm2),
        Err(Error::PermissionDenied { .. })
    ));
    // A compromised key verifies, flagged (KEY-8); a disabled one refuses.
    f.kms.mark_compromised(&f.admin, &sm2).unwrap();
    let out = call(&f.app, &sm2, RequestScheme::Sm2).unwrap();
    assert_eq!(out.verdict, RequestVerdict::Ok);
    assert!(out.key_compromised);
    let mac = create(&f, Purpose::Mac, KeySpec::HmacSm3, "partner-mac");
    f.kms.disable_key(&f.admin, &mac).unwrap();
    assert!(matches!(
        f.kms
            .verify_request(&f.app, &mac, RequestScheme::HmacSm3, &p, &[0; 32]),
        Err(Error::InvalidState { .. })
    ));
}

#[test]
fn a_signature_by_an_older_version_verifies_after_rotation() {
    let f = fixture();
    let key = create(&f, Purpose::Mac, KeySpec::HmacSm3, "partner");
    let p = parts(NOW, b"nonce-0008-abcdef", b"x");
    let sig = sign(&f, &key, RequestScheme::HmacSm3, &p);
    f.kms.rotate_key(&f.admin, &key).unwrap();
    let out = f
        .kms
        .verify_request(&f.app, &key, RequestScheme::HmacSm3, &p, &sig)
        .unwrap();
    assert_eq!((out.verdict, out.key_version), (RequestVerdict::Ok, 1));
}

/// Under the GM-only policy HMAC-SM3 and SM2 requests verify; RSA-PSS has no key to use (the
/// policy refuses RSA keys), and naming it for an SM2 key is the caller's error.
#[test]
fn gm_only_verifies_the_gm_schemes() {
    let f = fixture_with(PolicyMode::GmOnly);
    let rsa = f.kms.create_key(
        &f.admin,
        CreateKeyRequest {
            namespace: Namespace::new("a").unwrap(),
            purpose: Purpose::Sign,
            spec: KeySpec::Rsa2048,
            alias: None,
            rotation_period: None,
            description: String::new(),
        },
    );
    assert!(matches!(rsa, Err(Error::Policy(_))), "{rsa:?}");
    for (scheme, purpose, spec, alias) in [
        (RequestScheme::Sm2, Purpose::Sign, KeySpec::Sm2, "gm-sm2"),
        (
            RequestScheme::HmacSm3,
            Purpose::Mac,
            KeySpec::HmacSm3,
            "gm-mac",
        ),
    ] {
        let key = create(&f, purpose, spec, alias);
        let p = parts(NOW, b"gm-only-nonce-01", b"body");
        let sig = sign(&f, &key, scheme, &p);
        assert_eq!(verdict(&f, &key, scheme, &p, &sig), RequestVerdict::Ok);
        if scheme == RequestScheme::Sm2 {
            assert!(matches!(
                f.kms
                    .verify_request(&f.app, &key, RequestScheme::RsaPss, &p, &sig),
                Err(Error::InvalidArgument(InvalidInput {
                    field: "scheme",
                    ..
                }))
            ));
        }
    }
}
