use std::sync::Arc;

use super::*;
use crate::TestKms;
use crate::alg::{KeySpec, PasswordHashAlg};
use crate::authz::Principal;
use crate::clock::{Clock, ManualClock};
use crate::crypto::password_hash::{Weakness, encode_sealed};
use crate::hierarchy::share::Share;
use crate::keys::{Alias, Namespace};
use crate::policy::{Policy, PolicyMode};
use crate::store::{MemoryStore, Store, Tree};
use crate::{CreateKeyRequest, KmsConfig};

const NOW: u64 = 1_700_000_000;

struct F {
    kms: TestKms,
    clock: Arc<ManualClock>,
    store: Arc<dyn Store>,
    shares: Vec<Share>,
    admin: Principal,
    app: Principal,
    other: Principal,
}

/// Cheap costs: these tests are about the flow, the known answers about the functions.
fn config(mode: PolicyMode) -> KmsConfig {
    let mut c = KmsConfig::new(Policy::from_config(mode));
    c.password = PasswordSettings {
        argon2_m_kib: 64,
        argon2_t: 1,
        argon2_p: 1,
        pbkdf2_iterations: 100,
        ..PasswordSettings::DEFAULT
    };
    c
}

fn open(store: Arc<dyn Store>, config: KmsConfig, shares: &[Share]) -> (TestKms, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW));
    let kms = TestKms::with_clock(store, config, clock.clone());
    for s in shares.iter().take(2) {
        kms.unseal_with(s).unwrap();
    }
    (kms, clock)
}

fn fixture(mode: PolicyMode) -> F {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(NOW));
    let (kms, admin, shares) =
        TestKms::unsealed(Arc::clone(&store), config(mode), clock.clone()).unwrap();
    let app = kms.add_app(&admin, "app-a", "a").unwrap();
    let other = kms.add_app(&admin, "app-b", "b").unwrap();
    F {
        kms,
        clock,
        store,
        shares,
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

/// What the mobile app does: the structure, encrypted to the password key's public key.
fn seal_at(f: &F, key: &KeyRef, password: &str, timestamp: u64, nonce: u8) -> Vec<u8> {
    let public = f.kms.get_public_key(&f.app, key, None).unwrap().public_key;
    let to = f
        .kms
        .policy()
        .approve(Purpose::Password, public.spec())
        .unwrap();
    let plain = encode_sealed(password, timestamp, &[nonce; 16]).unwrap();
    crypto::encrypt_to_public_key(&to, &public, plain.expose_secret()).unwrap()
}

fn seal(f: &F, key: &KeyRef, password: &str, nonce: u8) -> Vec<u8> {
    seal_at(f, key, password, f.clock.now(), nonce)
}

fn hash(
    f: &F,
    who: &Principal,
    pw: &KeyRef,
    pepper: &KeyRef,
    sealed: &[u8],
    ids: &[&str],
) -> Result<HashPasswordOutput, Error> {
    let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    f.kms.hash_password(who, pw, pepper, sealed, &ids)
}

fn verify(
    f: &F,
    who: &Principal,
    pw: &KeyRef,
    sealed: &[u8],
    stored: &str,
) -> Result<VerifyPasswordOutput, Error> {
    f.kms.verify_password(who, pw, sealed, stored, &[])
}

fn keys(f: &F, spec: KeySpec) -> (KeyRef, KeyRef) {
    let name = spec.name();
    (
        create(f, Purpose::Password, spec, &format!("login-{name}")),
        create(
            f,
            Purpose::Pepper,
            KeySpec::HmacSm3,
            &format!("pepper-{name}"),
        ),
    )
}

#[test]
fn hash_then_verify_round_trips_under_both_policies_and_every_password_key() {
    for (mode, specs, alg) in [
        (
            PolicyMode::Standard,
            &[KeySpec::Sm2, KeySpec::Rsa3072][..],
            PasswordHashAlg::Argon2id,
        ),
        (
            PolicyMode::GmOnly,
            &[KeySpec::Sm2][..],
            PasswordHashAlg::Pbkdf2Sm3,
        ),
    ] {
        let f = fixture(mode);
        for &spec in specs {
            let (pw, pepper) = keys(&f, spec);
            let out = hash(
                &f,
                &f.app,
                &pw,
                &pepper,
                &seal(&f, &pw, "Tr0ub4dor&3", 1),
                &[],
            )
            .unwrap();
            let parsed = StoredHash::parse(&out.hash).unwrap();
            assert_eq!(parsed.cost.alg(), alg, "{mode:?} {spec}");
            assert_eq!((out.pepper_key_version, out.password_key_version), (1, 1));
            assert_eq!(KeyRef::Id(out.pepper_key), pepper);
            assert!(out.hash.starts_with(&format!(
                "$kms-pepper$k={},v=1${}$",
                out.pepper_key,
                alg.name()
            )));
            let ok = verify(&f, &f.app, &pw, &seal(&f, &pw, "Tr0ub4dor&3", 2), &out.hash).unwrap();
            assert!(ok.matched && !ok.weak && ok.rehashed.is_none(), "{ok:?}");
            let no = verify(&f, &f.app, &pw, &seal(&f, &pw, "Tr0ub4dor&4", 3), &out.hash).unwrap();
            assert!(!no.matched && !no.weak && no.rehashed.is_none());
            // Two hashes of one password differ (fresh salts).
            let again = hash(
                &f,
                &f.app,
                &pw,
                &pepper,
                &seal(&f, &pw, "Tr0ub4dor&3", 4),
                &[],
            )
            .unwrap();
            assert_ne!(again.hash, out.hash);
        }
    }
}

#[test]
fn weak_passwords_are_refused_rule_by_rule_and_name_no_secret() {
    let f = fixture(PolicyMode::Standard);
    let (pw, pepper) = keys(&f, KeySpec::Sm2);
    for (n, (password, ids, weakness)) in [
        ("abc123", &[][..], Weakness::TooShort { min: 8 }),
        ("12345678", &[][..], Weakness::NoLetter),
        ("abcdefgh", &[][..], Weakness::NoDigit),
        (
            "Zhang13800138000",
            &["x", "13800138000"][..],
            Weakness::ContainsIdentifier { index: 1 },
        ),
        (
            "myALICEpw1",
            &["alice"][..],
            Weakness::ContainsIdentifier { index: 0 },
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let sealed = seal(&f, &pw, password, u8::try_from(n).unwrap());
        let e = hash(&f, &f.app, &pw, &pepper, &sealed, ids).unwrap_err();
        assert!(
            matches!(&e, Error::Password(PasswordRefusal::Weak(w)) if *w == weakness),
            "{e}"
        );
        assert!(!e.to_string().contains(password), "{e}");
    }
    // Identifiers themselves are bounded.
    let sealed = seal(&f, &pw, "fine1234", 100);
    assert!(matches!(
        hash(&f, &f.app, &pw, &pepper, &sealed, &[""]),
        Err(Error::InvalidArgument(e)) if e.field == "identifiers"
    ));
    let many = vec!["x"; 17];
    assert!(matches!(
        hash(&f, &f.app, &pw, &pepper, &sealed, &many),
        Err(Error::InvalidArgument(e)) if e.field == "identifiers"
    ));
}

#[test]
fn stale_and_future_timestamps_are_refused_and_the_window_edge_is_fresh() {
    let f = fixture(PolicyMode::Standard);
    let (pw, pepper) = keys(&f, KeySpec::Sm2);
    for (ts, fresh) in [
        (NOW - 300, true),
        (NOW + 300, true),
        (NOW - 301, false),
        (NOW + 301, false),
        (0, false),
        (u64::MAX, false),
    ] {
        let sealed = seal_at(&f, &pw, "Passw0rd!", ts, (ts % 251) as u8);
        let r = hash(&f, &f.app, &pw, &pepper, &sealed, &[]);
        if fresh {
            assert!(r.is_ok(), "{ts}: {r:?}");
        } else {
            assert!(
                matches!(
                    &r,
                    Err(Error::Password(PasswordRefusal::Stale { window: 300, .. }))
                ),
                "{ts}: {r:?}"
            );
        }
    }
}

#[test]
fn a_sealed_password_is_good_once_and_its_nonce_is_forgotten_after_the_window() {
    let f = fixture(PolicyMode::Standard);
    let (pw, pepper) = keys(&f, KeySpec::Sm2);
    let sealed = seal(&f, &pw, "Passw0rd!", 9);
    let stored = hash(&f, &f.app, &pw, &pepper, &sealed, &[]).unwrap().hash;
    assert!(matches!(
        hash(&f, &f.app, &pw, &pepper, &sealed, &[]),
        Err(Error::Password(PasswordRefusal::Replayed))
    ));
    // The login ciphertext cannot be replayed either, by any caller.
    let login = seal(&f, &pw, "Passw0rd!", 10);
    assert!(verify(&f, &f.app, &pw, &login, &stored).unwrap().matched);
    assert!(matches!(
        verify(&f, &f.app, &pw, &login, &stored),
        Err(Error::Password(PasswordRefusal::Replayed))
    ));
    // A nonce is kept as long as its timestamp could be fresh, then forgotten: a new seal may
    // reuse it (the stale one is still refused, as stale).
    f.clock.advance(601);
    let reused = seal(&f, &pw, "Passw0rd!", 10);
    assert!(verify(&f, &f.app, &pw, &reused, &stored).unwrap().matched);
    assert!(matches!(
        verify(&f, &f.app, &pw, &login, &stored),
        Err(Error::Password(PasswordRefusal::Stale { .. }))
    ));
    // Nothing in the key store's trees holds the nonce (the guard keeps its SM3 apart).
    for tree in Tree::ALL {
        for (k, v) in f.store.scan_prefix(tree, b"").unwrap() {
            for nonce in [[9u8; 16], [10u8; 16]] {
                let found = |b: &[u8]| b.windows(16).any(|w| w == nonce.as_slice());
                assert!(!found(&k) && !found(&v), "{tree:?}");
            }
        }
    }
}

#[test]
fn tampered_or_malformed_sealed_passwords_are_refused() {
    let f = fixture(PolicyMode::Standard);
    let (pw, pepper) = keys(&f, KeySpec::Sm2);
    let mut sealed = seal(&f, &pw, "Passw0rd!", 1);
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    assert!(matches!(
        hash(&f, &f.app, &pw, &pepper, &sealed, &[]),
        Err(Error::Crypto(CryptoError::DecryptionFailed))
    ));
    assert!(matches!(
        hash(&f, &f.app, &pw, &pepper, &[], &[]),
        Err(Error::InvalidArgument(e)) if e.field == "sealed password"
    ));
    assert!(matches!(
        hash(&f, &f.app, &pw, &pepper, &[0; 1025], &[]),
        Err(Error::InvalidArgument(e)) if e.field == "sealed password"
    ));
    // Decrypts, but is not the structure.
    let public = f.kms.get_public_key(&f.app, &pw, None).unwrap().public_key;
    let to = f
        .kms
        .policy()
        .approve(Purpose::Password, public.spec())
        .unwrap();
    let junk = crypto::encrypt_to_public_key(&to, &public, b"{\"password\":\"x\"}").unwrap();
    assert!(matches!(
        hash(&f, &f.app, &pw, &pepper, &junk, &[]),
        Err(Error::InvalidArgument(e)) if e.field == "sealed password" && e.problem.contains("KPW1")
    ));
    // A stored hash that does not parse, before anything is decrypted.
    let good = seal(&f, &pw, "Passw0rd!", 2);
    assert!(matches!(
        verify(&f, &f.app, &pw, &good, "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
        Err(Error::InvalidArgument(e)) if e.field == "stored hash"
    ));
}

#[test]
fn keys_of_other_purposes_are_refused_for_either_role() {
    let f = fixture(PolicyMode::Standard);
    let (pw, pepper) = keys(&f, KeySpec::Sm2);
    let decrypt = create(&f, Purpose::AsymmetricDecrypt, KeySpec::Sm2, "decrypt");
    let mac = create(&f, Purpose::Mac, KeySpec::HmacSm3, "mac");
    let sealed = seal(&f, &pw, "Passw0rd!", 1);
    let wrong = |r: Result<HashPasswordOutput, Error>, want: Purpose| {
        assert!(
            matches!(&r, Err(Error::Policy(crate::policy::PolicyError::WrongPurpose { purpose, .. })) if *purpose == want),
            "{r:?}"
        );
    };
    wrong(
        hash(&f, &f.app, &decrypt, &pepper, &sealed, &[]),
        Purpose::Password,
    );
    wrong(hash(&f, &f.app, &pw, &mac, &sealed, &[]), Purpose::Pepper);
    wrong(hash(&f, &f.app, &pw, &pw, &sealed, &[]), Purpose::Pepper);
    // Neither key serves the other operations: a pepper is no MAC key, a password key no
    // asymmetric-decrypt key.
    assert!(f.kms.generate_mac(&f.app, &pepper, b"x").is_err());
    assert!(
        f.kms
            .asymmetric_decrypt(&f.app, &pw, &sealed, None)
            .is_err()
    );
    // RSA-2048 and other HMACs cannot be created for the shield.
    for (purpose, spec) in [
        (Purpose::Password, KeySpec::Rsa2048),
        (Purpose::Pepper, KeySpec::HmacSha256),
        (Purpose::Password, KeySpec::HmacSm3),
    ] {
        let r = f.kms.create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: Namespace::new("a").unwrap(),
                purpose,
                spec,
                alias: None,
                rotation_period: None,
                description: String::new(),
            },
        );
        assert!(
            matches!(
                r,
                Err(Error::Policy(
                    crate::policy::PolicyError::WrongPurpose { .. }
                ))
            ),
            "{spec}"
        );
    }
}

#[test]
fn roles_and_grants_bound_who_may_hash_and_verify() {
    let f = fixture(PolicyMode::Standard);
    let (pw, pepper) = keys(&f, KeySpec::Sm2);
    let sealed = seal(&f, &pw, "Passw0rd!", 1);
    // Administrators and auditors never handle passwords.
    assert!(matches!(
        hash(&f, &f.admin, &pw, &pepper, &sealed, &[]),
        Err(Error::PermissionDenied {
            op: "hash passwords",
            ..
        })
    ));
    let stored = hash(&f, &f.app, &pw, &pepper, &sealed, &[]).unwrap().hash;
    assert!(matches!(
        verify(&f, &f.admin, &pw, &seal(&f, &pw, "Passw0rd!", 2), &stored),
        Err(Error::PermissionDenied {
            op: "verify passwords",
            ..
        })
    ));
    // Another namespace reaches neither key without grants, then each grant opens its own
    // operation on each key.
    let not_found = |r: Result<VerifyPasswordOutput, Error>| {
        assert!(
            matches!(r, Err(Error::NotFound { what: "key", .. })),
            "{r:?}"
        );
    };
    not_found(verify(
        &f,
        &f.other,
        &pw,
        &seal(&f, &pw, "Passw0rd!", 3),
        &stored,
    ));
    let grant = |key: &KeyRef, op| {
        f.kms
            .create_grant(&f.admin, key, Namespace::new("b").unwrap(), vec![op])
            .unwrap();
    };
    grant(&pw, GrantOp::VerifyPassword);
    not_found(verify(
        &f,
        &f.other,
        &pw,
        &seal(&f, &pw, "Passw0rd!", 4),
        &stored,
    ));
    grant(&pepper, GrantOp::VerifyPassword);
    assert!(
        verify(&f, &f.other, &pw, &seal(&f, &pw, "Passw0rd!", 5), &stored)
            .unwrap()
            .matched
    );
    // verify-password is not hash-password.
    assert!(matches!(
        hash(
            &f,
            &f.other,
            &pw,
            &pepper,
            &seal(&f, &pw, "Passw0rd!", 6),
            &[]
        ),
        Err(Error::NotFound { .. })
    ));
    // A grant of a shield operation on a key of another purpose is refused when made.
    let enc = create(&f, Purpose::Encrypt, KeySpec::Sm4Gcm, "enc");
    assert!(matches!(
        f.kms.create_grant(
            &f.admin,
            &enc,
            Namespace::new("b").unwrap(),
            vec![GrantOp::HashPassword]
        ),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn rotating_the_pepper_re_peppers_on_the_next_match() {
    let f = fixture(PolicyMode::Standard);
    let (pw, pepper) = keys(&f, KeySpec::Sm2);
    let old = hash(
        &f,
        &f.app,
        &pw,
        &pepper,
        &seal(&f, &pw, "Passw0rd!", 1),
        &[],
    )
    .unwrap()
    .hash;
    f.kms.rotate_key(&f.admin, &pepper).unwrap();
    // New hashes use the newest pepper version.
    let new = hash(
        &f,
        &f.app,
        &pw,
        &pepper,
        &seal(&f, &pw, "Passw0rd!", 2),
        &[],
    )
    .unwrap();
    assert_eq!(new.pepper_key_version, 2);
    // The old hash still verifies with version 1, and comes back re-peppered with version 2.
    let v = verify(&f, &f.app, &pw, &seal(&f, &pw, "Passw0rd!", 3), &old).unwrap();
    assert!(v.matched);
    assert_eq!(v.pepper_key_version, 1);
    let re = v.rehashed.expect("re-peppered");
    assert_eq!(StoredHash::parse(&re).unwrap().pepper_version, 2);
    let again = verify(&f, &f.app, &pw, &seal(&f, &pw, "Passw0rd!", 4), &re).unwrap();
    assert!(again.matched && again.rehashed.is_none());
    // No re-hash on a wrong password, and none tells it apart from a right one's absence.
    let wrong = verify(&f, &f.app, &pw, &seal(&f, &pw, "Passw0rd?", 5), &old).unwrap();
    assert!(!wrong.matched && wrong.rehashed.is_none());
    // A hash naming a version the key does not have.
    let bad = old.replacen(",v=1$", ",v=9$", 1);
    assert!(matches!(
        verify(&f, &f.app, &pw, &seal(&f, &pw, "Passw0rd!", 6), &bad),
        Err(Error::NotFound {
            what: "pepper key version",
            ..
        })
    ));
    // A rotated password key still opens seals made to its old public key.
    let to_v1 = seal(&f, &pw, "Passw0rd!", 7);
    f.kms.rotate_key(&f.admin, &pw).unwrap();
    let v = verify(&f, &f.app, &pw, &to_v1, &re).unwrap();
    assert!(v.matched);
    assert_eq!(v.password_key_version, 1);
}

#[test]
fn a_new_cost_or_policy_re_hashes_on_the_next_match_and_weak_matches_are_flagged() {
    let f = fixture(PolicyMode::Standard);
    let (pw, pepper) = keys(&f, KeySpec::Sm2);
    let argon = hash(
        &f,
        &f.app,
        &pw,
        &pepper,
        &seal(&f, &pw, "phone13800138000", 1),
        &[],
    )
    .unwrap()
    .hash;
    // Same store, GM-only policy with another cost: the argon2id hash still verifies, and comes
    // back as PBKDF2-HMAC-SM3.
    drop(f.kms);
    let (kms, clock) = open(Arc::clone(&f.store), config(PolicyMode::GmOnly), &f.shares);
    let g = F { kms, clock, ..f };
    let ids = vec!["13800138000".to_owned()];
    let v = g
        .kms
        .verify_password(
            &g.app,
            &pw,
            &seal(&g, &pw, "phone13800138000", 2),
            &argon,
            &ids,
        )
        .unwrap();
    assert!(v.matched && v.weak, "contains the identifier given: {v:?}");
    let re = StoredHash::parse(v.rehashed.as_deref().unwrap()).unwrap();
    assert_eq!(re.cost, Cost::Pbkdf2Sm3 { iterations: 100 });
    let v = verify(
        &g,
        &g.app,
        &pw,
        &seal(&g, &pw, "phone13800138000", 3),
        &re.to_phc(),
    )
    .unwrap();
    assert!(v.matched && v.rehashed.is_none() && !v.weak);
}
