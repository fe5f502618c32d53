use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::TestKms;
use crate::alg::{DataKeySpec, KeySpec, Purpose, SignatureParams};
use crate::authz::{GrantOp, Principal, Role};
use crate::clock::{DAY, ManualClock};
use crate::crypto::Message;
use crate::envelope::EncryptionContext;
use crate::hierarchy::share::Share;
use crate::keys::state::KeyState;
use crate::keys::{Alias, KeyRef, Namespace};
use crate::policy::Policy;
use crate::store::MemoryStore;
use crate::{CreateKeyRequest, CryptoError, DataKeyMode, UnsealError};

pub(crate) struct Fixture {
    pub(crate) kms: TestKms,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) admin: Principal,
    pub(crate) app: Principal,
    pub(crate) other_app: Principal,
    pub(crate) auditor: Principal,
    pub(crate) shares: Vec<Share>,
}

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

pub(crate) fn fixture_with(store: Arc<dyn Store>, shares: u8, threshold: u8) -> Fixture {
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let kms = TestKms::with_clock(store, KmsConfig::default(), clock.clone());
    let out = kms.init(shares, threshold, "admin").unwrap();
    for s in out.shares.iter().take(usize::from(threshold)) {
        kms.unseal_with(s).unwrap();
    }
    assert!(!kms.is_sealed());
    let admin = kms.principal("admin").unwrap().unwrap();
    let app = kms
        .add_principal(&admin, "app-a", Role::App { namespace: ns("a") })
        .unwrap();
    let other_app = kms
        .add_principal(&admin, "app-b", Role::App { namespace: ns("b") })
        .unwrap();
    let auditor = kms.add_principal(&admin, "auditor", Role::Auditor).unwrap();
    Fixture {
        kms,
        clock,
        admin,
        app,
        other_app,
        auditor,
        shares: out.shares,
    }
}

pub(crate) fn fixture() -> Fixture {
    fixture_with(Arc::new(MemoryStore::new()), 3, 2)
}

fn create(
    f: &Fixture,
    namespace: &str,
    purpose: Purpose,
    spec: KeySpec,
    alias: Option<&str>,
) -> KeyInfo {
    f.kms
        .create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: ns(namespace),
                purpose,
                spec,
                alias: alias.map(|a| Alias::new(a).unwrap()),
                rotation_period: None,
                description: String::new(),
            },
        )
        .unwrap()
}

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs.iter().map(|(k, v)| (*k, *v)).collect()
}

#[test]
fn encrypt_decrypt_round_trip_through_aliases_and_ids() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, Some("orders"));
    let c = ctx(&[("order", "42")]);
    let by_alias = KeyRef::parse("orders", &ns("a")).unwrap();
    let out = f.kms.encrypt(&f.app, &by_alias, &c, b"card 6222").unwrap();
    assert_eq!(out.key_id, key.id);
    let back = f.kms.decrypt(&f.app, &c, &out.ciphertext).unwrap();
    assert_eq!(back.plaintext.expose_secret(), b"card 6222");
    assert!(!back.key_compromised);
    // Wrong context, tampered blob: refused, uniformly.
    let e = f
        .kms
        .decrypt(&f.app, &ctx(&[("order", "43")]), &out.ciphertext)
        .unwrap_err();
    assert_eq!(e.to_string(), "decryption failed");
    let mut t = out.ciphertext;
    *t.last_mut().unwrap() ^= 1;
    assert!(matches!(
        f.kms.decrypt(&f.app, &c, &t),
        Err(Error::Crypto(CryptoError::DecryptionFailed))
    ));
}

#[test]
fn rotation_keeps_old_versions_working_and_uses_the_newest() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Encrypt, KeySpec::Aes256Gcm, None);
    let r = KeyRef::Id(key.id);
    let c = EncryptionContext::default();
    let v1 = f.kms.encrypt(&f.app, &r, &c, b"old").unwrap();
    for expected in 2..=4 {
        let info = f.kms.rotate_key(&f.admin, &r).unwrap();
        assert_eq!(info.current_version(), expected);
        assert_eq!(
            f.kms.encrypt(&f.app, &r, &c, b"new").unwrap().key_version,
            expected
        );
    }
    assert_eq!(v1.key_version, 1);
    assert_eq!(
        f.kms
            .decrypt(&f.app, &c, &v1.ciphertext)
            .unwrap()
            .plaintext
            .expose_secret(),
        b"old"
    );
    // Re-encrypt moves old data to the newest version without exposing it.
    let moved = f
        .kms
        .reencrypt(&f.app, &v1.ciphertext, &c, None, &c)
        .unwrap();
    assert_eq!(moved.key_version, 4);
    assert_eq!(
        f.kms
            .decrypt(&f.app, &c, &moved.ciphertext)
            .unwrap()
            .plaintext
            .expose_secret(),
        b"old"
    );
}

#[test]
fn signatures_verify_across_rotations_and_purposes_are_kept_apart() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Sign, KeySpec::Sm2, None);
    let r = KeyRef::Id(key.id);
    let s1 = f
        .kms
        .sign(&f.app, &r, Message::Raw(b"m"), &SignatureParams::default())
        .unwrap();
    f.kms.rotate_key(&f.admin, &r).unwrap();
    let s2 = f
        .kms
        .sign(&f.app, &r, Message::Raw(b"m"), &SignatureParams::default())
        .unwrap();
    assert_eq!((s1.key_version, s2.key_version), (1, 2));
    for s in [&s1, &s2] {
        let v = f
            .kms
            .verify(
                &f.app,
                &r,
                Message::Raw(b"m"),
                &s.signature,
                &SignatureParams::default(),
                None,
            )
            .unwrap();
        assert!(v.valid);
        assert_eq!(v.key_version, s.key_version);
    }
    assert!(
        !f.kms
            .verify(
                &f.app,
                &r,
                Message::Raw(b"x"),
                &s1.signature,
                &SignatureParams::default(),
                None
            )
            .unwrap()
            .valid
    );
    // A signing key cannot encrypt, and an encryption key cannot sign (KEY-5).
    assert!(matches!(
        f.kms
            .encrypt(&f.app, &r, &EncryptionContext::default(), b"x"),
        Err(Error::Policy(_))
    ));
    let enc = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
    assert!(matches!(
        f.kms.sign(
            &f.app,
            &KeyRef::Id(enc.id),
            Message::Raw(b"m"),
            &SignatureParams::default()
        ),
        Err(Error::Policy(_))
    ));
    // RSA parameters on an SM2 key are refused by policy.
    let rsa_params = SignatureParams {
        hash: Some(crate::alg::DigestAlg::Sha256),
        ..SignatureParams::default()
    };
    assert!(matches!(
        f.kms.sign(&f.app, &r, Message::Raw(b"m"), &rsa_params),
        Err(Error::Policy(_))
    ));
}

#[test]
fn data_keys_in_three_modes() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
    let r = KeyRef::Id(key.id);
    let c = ctx(&[("app", "pay")]);
    let with = f
        .kms
        .generate_data_key(&f.app, &r, DataKeySpec::Sm4, &c, DataKeyMode::WithPlaintext)
        .unwrap();
    let pt = with.plaintext.unwrap();
    assert_eq!(pt.len(), 16);
    let opened = f.kms.decrypt(&f.app, &c, &with.ciphertext).unwrap();
    assert!(opened.plaintext.ct_eq(&pt));
    let without = f
        .kms
        .generate_data_key(
            &f.app,
            &r,
            DataKeySpec::Aes256,
            &c,
            DataKeyMode::WithoutPlaintext,
        )
        .unwrap();
    assert!(without.plaintext.is_none());
    assert_eq!(
        f.kms
            .decrypt(&f.app, &c, &without.ciphertext)
            .unwrap()
            .plaintext
            .len(),
        32
    );
    // Encrypted to the caller's SM2 public key (KEY-4): only its private half opens it.
    let wrap_key = create(&f, "a", Purpose::AsymmetricDecrypt, KeySpec::Sm2, None);
    let public = f
        .kms
        .get_public_key(&f.app, &KeyRef::Id(wrap_key.id), None)
        .unwrap()
        .public_key;
    let to = f
        .kms
        .generate_data_key(
            &f.app,
            &r,
            DataKeySpec::Sm4,
            &c,
            DataKeyMode::EncryptedTo(public),
        )
        .unwrap();
    assert!(to.plaintext.is_none());
    let sent = to.encrypted_to_caller.unwrap();
    let got = f
        .kms
        .asymmetric_decrypt(&f.app, &KeyRef::Id(wrap_key.id), &sent, None)
        .unwrap();
    assert!(
        got.plaintext
            .ct_eq(&f.kms.decrypt(&f.app, &c, &to.ciphertext).unwrap().plaintext)
    );
}

#[test]
fn macs_and_random() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Mac, KeySpec::HmacSm3, None);
    let r = KeyRef::Id(key.id);
    let tag = f.kms.generate_mac(&f.app, &r, b"data").unwrap();
    assert!(
        f.kms
            .verify_mac(&f.app, &r, b"data", &tag.signature, None)
            .unwrap()
            .valid
    );
    assert!(
        !f.kms
            .verify_mac(&f.app, &r, b"datA", &tag.signature, None)
            .unwrap()
            .valid
    );
    f.kms.rotate_key(&f.admin, &r).unwrap();
    assert!(
        f.kms
            .verify_mac(&f.app, &r, b"data", &tag.signature, None)
            .unwrap()
            .valid
    );
    assert_eq!(f.kms.generate_random(&f.app, 32).unwrap().len(), 32);
    for len in [0, MAX_RANDOM_BYTES + 1] {
        assert!(
            matches!(
                f.kms.generate_random(&f.app, len),
                Err(Error::InvalidArgument(ref e)) if e.field == "length"
            ),
            "{len}"
        );
    }
}

#[test]
fn state_effects_on_use() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
    let r = KeyRef::Id(key.id);
    let c = EncryptionContext::default();
    let blob = f.kms.encrypt(&f.app, &r, &c, b"x").unwrap().ciphertext;

    f.kms.disable_key(&f.admin, &r).unwrap();
    assert!(matches!(
        f.kms.encrypt(&f.app, &r, &c, b"x"),
        Err(Error::InvalidState {
            state: KeyState::Disabled,
            ..
        })
    ));
    assert!(matches!(
        f.kms.decrypt(&f.app, &c, &blob),
        Err(Error::InvalidState {
            state: KeyState::Disabled,
            op: "decrypt",
            ..
        })
    ));
    f.kms.enable_key(&f.admin, &r).unwrap();

    f.kms.mark_compromised(&f.admin, &r).unwrap();
    assert!(matches!(
        f.kms.encrypt(&f.app, &r, &c, b"x"),
        Err(Error::InvalidState {
            state: KeyState::Compromised,
            ..
        })
    ));
    assert!(matches!(
        f.kms
            .generate_data_key(&f.app, &r, DataKeySpec::Sm4, &c, DataKeyMode::WithPlaintext),
        Err(Error::InvalidState {
            state: KeyState::Compromised,
            op: "generate data keys",
            ..
        })
    ));
    assert!(matches!(
        f.kms.rotate_key(&f.admin, &r),
        Err(Error::InvalidState {
            state: KeyState::Compromised,
            op: "rotation",
            ..
        })
    ));
    let d = f.kms.decrypt(&f.app, &c, &blob).unwrap();
    assert!(
        d.key_compromised,
        "decrypt with a compromised key is flagged"
    );
    assert!(
        matches!(
            f.kms.enable_key(&f.admin, &r),
            Err(Error::InvalidState {
                state: KeyState::Compromised,
                op: "enable",
                ..
            })
        ),
        "compromise is one way"
    );

    f.kms.schedule_destruction(&f.admin, &r, Some(7)).unwrap();
    assert!(matches!(
        f.kms.decrypt(&f.app, &c, &blob),
        Err(Error::InvalidState {
            state: KeyState::PendingDestruction,
            op: "decrypt",
            ..
        })
    ));
    assert!(matches!(
        f.kms.schedule_destruction(&f.admin, &r, Some(7)),
        Err(Error::InvalidState {
            state: KeyState::PendingDestruction,
            op: "schedule destruction",
            ..
        })
    ));
    let back = f.kms.cancel_destruction(&f.admin, &r).unwrap();
    assert_eq!(
        back.state,
        KeyState::Compromised,
        "cancel returns a compromised key to COMPROMISED"
    );

    for days in [6, 91] {
        assert!(
            matches!(
                f.kms.schedule_destruction(&f.admin, &r, Some(days)),
                Err(Error::InvalidArgument(ref e)) if e.field == "waiting period"
            ),
            "{days}"
        );
    }
    let pending = f.kms.schedule_destruction(&f.admin, &r, Some(7)).unwrap();
    assert_eq!(pending.destroy_at, Some(f.clock.now() + 7 * DAY));
    f.clock.advance(7 * DAY - 1);
    assert!(f.kms.destroy_due().unwrap().is_empty());
    f.clock.advance(1);
    assert_eq!(f.kms.destroy_due().unwrap(), vec![key.id]);
    let gone = f.kms.describe_key(&f.admin, &r).unwrap();
    assert_eq!(gone.state, KeyState::Destroyed);
    assert!(gone.versions.iter().all(|v| v.destroyed));
    assert!(matches!(
        f.kms.decrypt(&f.app, &c, &blob),
        Err(Error::InvalidState {
            state: KeyState::Destroyed,
            op: "decrypt",
            ..
        })
    ));
    // The wrapped material is gone from the store itself.
    let raw = f
        .kms
        .store()
        .get(Tree::EncryptKeys, key.id.as_bytes())
        .unwrap()
        .unwrap();
    let rec = KeyRecord::decode(&raw).unwrap();
    assert!(rec.versions.iter().all(|v| v.wrapped.is_none()));
}

#[test]
fn scheduled_rotation_happens_when_due() {
    let f = fixture();
    let key = f
        .kms
        .create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: ns("a"),
                purpose: Purpose::Encrypt,
                spec: KeySpec::Sm4Gcm,
                alias: None,
                rotation_period: Some(DAY),
                description: "rotates daily".into(),
            },
        )
        .unwrap();
    assert_eq!(key.next_rotation_at, Some(f.clock.now() + DAY));
    assert!(f.kms.due_for_rotation().unwrap().is_empty());
    f.clock.advance(DAY);
    assert_eq!(f.kms.due_for_rotation().unwrap(), vec![key.id]);
    assert_eq!(f.kms.rotate_due().unwrap(), vec![(key.id, 2)]);
    assert!(
        f.kms.rotate_due().unwrap().is_empty(),
        "a due rotation happens once"
    );
    let r = KeyRef::Id(key.id);
    assert!(matches!(
        f.kms.set_rotation_period(&f.admin, &r, Some(DAY - 1)),
        Err(Error::InvalidArgument(ref e)) if e.field == "rotation period"
    ));
    let off = f.kms.set_rotation_period(&f.admin, &r, None).unwrap();
    assert_eq!(off.next_rotation_at, None);
}

#[test]
fn namespaces_and_grants_bound_reach() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, Some("shared"));
    let r = KeyRef::Id(key.id);
    let c = EncryptionContext::default();
    // Another namespace's key looks missing.
    assert!(matches!(
        f.kms.encrypt(&f.other_app, &r, &c, b"x"),
        Err(Error::NotFound { what: "key", .. })
    ));
    let blob = f.kms.encrypt(&f.app, &r, &c, b"x").unwrap().ciphertext;
    assert!(matches!(
        f.kms.decrypt(&f.other_app, &c, &blob),
        Err(Error::NotFound { what: "key", .. })
    ));
    f.kms
        .create_grant(&f.admin, &r, ns("b"), vec![GrantOp::Decrypt])
        .unwrap();
    assert!(f.kms.decrypt(&f.other_app, &c, &blob).is_ok());
    assert!(
        matches!(
            f.kms.encrypt(&f.other_app, &r, &c, b"x"),
            Err(Error::NotFound { what: "key", .. })
        ),
        "the grant is for decrypt only"
    );
    assert_eq!(f.kms.list_grants(&f.auditor, None).unwrap().len(), 1);
    f.kms.revoke_grant(&f.admin, &r, &ns("b")).unwrap();
    assert!(matches!(
        f.kms.decrypt(&f.other_app, &c, &blob),
        Err(Error::NotFound { what: "key", .. })
    ));
    // Apps see only their namespace's keys.
    create(&f, "b", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
    assert_eq!(f.kms.list_keys(&f.app, None).unwrap().len(), 1);
    // Auditors see every key, the KMS's own audit key included.
    assert_eq!(f.kms.list_keys(&f.auditor, None).unwrap().len(), 3);
    // Roles: admins cannot encrypt, apps cannot create keys, auditors cannot rotate.
    assert!(matches!(
        f.kms.encrypt(&f.admin, &r, &c, b"x"),
        Err(Error::PermissionDenied { op: "encrypt", .. })
    ));
    assert!(matches!(
        f.kms.rotate_key(&f.auditor, &r),
        Err(Error::PermissionDenied {
            op: "rotate keys",
            ..
        })
    ));
    assert!(matches!(
        f.kms.disable_key(&f.app, &r),
        Err(Error::PermissionDenied {
            op: "disable keys",
            ..
        })
    ));
}

#[test]
fn aliases_are_unique_per_namespace() {
    let f = fixture();
    let k1 = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, Some("x"));
    create(&f, "b", Purpose::Encrypt, KeySpec::Sm4Gcm, Some("x"));
    let dup = f.kms.create_key(
        &f.admin,
        CreateKeyRequest {
            namespace: ns("a"),
            purpose: Purpose::Encrypt,
            spec: KeySpec::Sm4Gcm,
            alias: Some(Alias::new("x").unwrap()),
            rotation_period: None,
            description: String::new(),
        },
    );
    assert!(matches!(dup, Err(Error::AlreadyExists { .. })));
    let k3 = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
    assert!(matches!(
        f.kms
            .create_alias(&f.admin, &KeyRef::Id(k3.id), Alias::new("x").unwrap()),
        Err(Error::AlreadyExists { .. })
    ));
    f.kms
        .create_alias(&f.admin, &KeyRef::Id(k1.id), Alias::new("y").unwrap())
        .unwrap();
    f.kms
        .delete_alias(&f.admin, &ns("a"), &Alias::new("x").unwrap())
        .unwrap();
    assert!(matches!(
        f.kms
            .describe_key(&f.admin, &KeyRef::parse("a:x", &ns("a")).unwrap()),
        Err(Error::NotFound { what: "alias", .. })
    ));
    assert_eq!(
        f.kms
            .describe_key(&f.admin, &KeyRef::parse("a:y", &ns("a")).unwrap())
            .unwrap()
            .id,
        k1.id
    );
}

#[test]
fn sealed_refuses_everything_and_unseal_needs_threshold_shares() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
    let r = KeyRef::Id(key.id);
    let c = EncryptionContext::default();
    let blob = f.kms.encrypt(&f.app, &r, &c, b"x").unwrap().ciphertext;
    f.kms.seal(&f.admin).unwrap();
    assert!(matches!(
        f.kms.encrypt(&f.app, &r, &c, b"x"),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        f.kms.decrypt(&f.app, &c, &blob),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        f.kms.create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: ns("a"),
                purpose: Purpose::Mac,
                spec: KeySpec::HmacSm3,
                alias: None,
                rotation_period: None,
                description: String::new(),
            }
        ),
        Err(Error::Sealed)
    ));
    assert!(matches!(f.kms.rotate_key(&f.admin, &r), Err(Error::Sealed)));
    assert!(f.kms.status().unwrap().sealed);
    // One share of a 2-of-3 is not enough; the same share twice is refused, and so is a
    // second share from the same person (shares count people).
    assert_eq!(
        f.kms.unseal(&f.admin, &f.shares[2]).unwrap(),
        UnsealProgress::NeedMore {
            have: 1,
            threshold: 2
        }
    );
    assert!(matches!(
        f.kms.unseal(&f.admin, &f.shares[2]),
        Err(Error::Unseal(UnsealError::Duplicate))
    ));
    assert!(matches!(
        f.kms.unseal(&f.admin, &f.shares[0]),
        Err(Error::Unseal(UnsealError::AlreadyGave))
    ));
    assert!(f.kms.is_sealed());
    let admin2 = f.kms.principal("admin").unwrap().map(|mut p| {
        p.subject = "second-admin".into();
        p
    });
    assert_eq!(
        f.kms.unseal(&admin2.unwrap(), &f.shares[0]).unwrap(),
        UnsealProgress::Unsealed
    );
    assert!(matches!(
        f.kms.unseal(&f.admin, &f.shares[1]),
        Err(Error::Unseal(UnsealError::AlreadyUnsealed))
    ));
    assert_eq!(
        f.kms
            .decrypt(&f.app, &c, &blob)
            .unwrap()
            .plaintext
            .expose_secret(),
        b"x"
    );
    // Apps may not unseal.
    f.kms.seal_now();
    assert!(matches!(
        f.kms.unseal(&f.app, &f.shares[0]),
        Err(Error::PermissionDenied { op: "unseal", .. })
    ));
}

#[test]
fn shares_from_another_kms_or_corrupted_are_refused() {
    let f = fixture();
    let g = fixture();
    f.kms.seal_now();
    assert!(matches!(
        f.kms.unseal_with(&g.shares[0]),
        Err(Error::Unseal(UnsealError::WrongSet))
    ));
    let text = f.shares[0].expose_text();
    let flipped: String = text
        .char_indices()
        .map(|(i, c)| {
            if i == text.len() - 3 {
                if c == 'a' { 'b' } else { 'a' }
            } else {
                c
            }
        })
        .collect();
    assert!(matches!(
        f.kms.unseal_with(&Share::from_text(&flipped)),
        Err(Error::Unseal(UnsealError::Corrupt))
    ));
    assert!(f.kms.is_sealed());
    assert!(matches!(
        f.kms.init(3, 2, "admin2"),
        Err(Error::AlreadyExists { .. })
    ));
}

#[test]
fn swapped_records_fail_to_unwrap() {
    let f = fixture();
    let k1 = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
    let k2 = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
    let k3 = create(&f, "b", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
    let store = f.kms.store().clone();
    let get = |id: &KeyId| {
        KeyRecord::decode(
            &store
                .get(Tree::EncryptKeys, id.as_bytes())
                .unwrap()
                .unwrap(),
        )
        .unwrap()
    };
    let put = |r: &KeyRecord| {
        let mut b = Batch::new();
        b.put(r.tree(), r.id.as_bytes().to_vec(), r.encode().unwrap());
        store.apply(&b).unwrap();
    };
    let c = EncryptionContext::default();
    // k1's material moved into k2's record (another key, same namespace).
    let mut r2 = get(&k2.id);
    r2.versions[0].wrapped = get(&k1.id).versions[0].wrapped.clone();
    put(&r2);
    f.kms.kms().cache.clear();
    assert!(matches!(
        f.kms.encrypt(&f.app, &KeyRef::Id(k2.id), &c, b"x"),
        Err(Error::Crypto(CryptoError::DecryptionFailed))
    ));
    // k1's material moved into k3's record (another namespace).
    let mut r3 = get(&k3.id);
    r3.versions[0].wrapped = get(&k1.id).versions[0].wrapped.clone();
    put(&r3);
    assert!(matches!(
        f.kms.encrypt(&f.other_app, &KeyRef::Id(k3.id), &c, b"x"),
        Err(Error::Crypto(CryptoError::DecryptionFailed))
    ));
    // k1's record relabelled as a MAC key (another purpose) fails too.
    let mut r1 = get(&k1.id);
    r1.purpose = Purpose::Mac;
    r1.spec = KeySpec::HmacSm3;
    let mut b = Batch::new();
    b.put(
        Tree::MacKeys,
        r1.id.as_bytes().to_vec(),
        r1.encode().unwrap(),
    );
    b.put(Tree::Meta, layout::key_index(&r1.id), vec![3]);
    store.apply(&b).unwrap();
    let fresh = TestKms::with_clock(store.clone(), KmsConfig::default(), f.clock.clone());
    for s in f.shares.iter().take(2) {
        fresh.unseal_with(s).unwrap();
    }
    assert!(matches!(
        fresh.generate_mac(&f.app, &KeyRef::Id(k1.id), b"x"),
        Err(Error::Crypto(CryptoError::DecryptionFailed))
    ));
    // And a version number changed in place fails (AAD binds the version). A key of its own:
    // k1 is indexed as a MAC key by now, so its encrypt would stop at the purpose check.
    let k4 = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
    let mut r4 = get(&k4.id);
    r4.versions[0].version = 2;
    put(&r4);
    f.kms.kms().cache.clear();
    let r = f.kms.encrypt(&f.app, &KeyRef::Id(k4.id), &c, b"x");
    assert!(
        matches!(r, Err(Error::Crypto(CryptoError::DecryptionFailed))),
        "{r:?}"
    );
}

#[test]
fn the_cache_is_bounded_cleared_on_seal_and_can_be_off() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
    f.kms
        .encrypt(
            &f.app,
            &KeyRef::Id(key.id),
            &EncryptionContext::default(),
            b"x",
        )
        .unwrap();
    assert_eq!(f.kms.kms().cache.len(), 1);
    f.kms.seal_now();
    assert_eq!(f.kms.kms().cache.len(), 0);
    let off = TestKms::with_clock(
        f.kms.store().clone(),
        KmsConfig {
            cache_ttl: Duration::ZERO,
            ..KmsConfig::default()
        },
        f.clock.clone(),
    );
    for s in f.shares.iter().take(2) {
        off.unseal_with(s).unwrap();
    }
    off.encrypt(
        &f.app,
        &KeyRef::Id(key.id),
        &EncryptionContext::default(),
        b"x",
    )
    .unwrap();
    assert_eq!(off.kms().cache.len(), 0);
}

#[test]
fn the_last_admin_cannot_be_removed_and_principals_are_unique() {
    let f = fixture();
    assert!(matches!(
        f.kms.remove_principal(&f.admin, "admin"),
        Err(Error::FailedPrecondition(ref m)) if m.contains("last administrator")
    ));
    assert!(matches!(
        f.kms.add_principal(&f.admin, "app-a", Role::Auditor),
        Err(Error::AlreadyExists { .. })
    ));
    f.kms
        .add_principal(&f.admin, "admin2", Role::Admin)
        .unwrap();
    f.kms.remove_principal(&f.admin, "admin").unwrap();
    assert_eq!(f.kms.list_principals(&f.auditor).unwrap().len(), 4);
}

#[test]
fn gm_only_policy_blocks_new_non_gm_use_but_opens_old_data() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let f = fixture_with(store.clone(), 1, 1);
    let aes = create(&f, "a", Purpose::Encrypt, KeySpec::Aes256Gcm, None);
    let c = EncryptionContext::default();
    let blob = f
        .kms
        .encrypt(&f.app, &KeyRef::Id(aes.id), &c, b"old")
        .unwrap()
        .ciphertext;
    let gm = TestKms::with_clock(
        store,
        KmsConfig {
            policy: Policy::from_config(crate::policy::PolicyMode::GmOnly),
            ..KmsConfig::default()
        },
        f.clock.clone(),
    );
    gm.unseal_with(&f.shares[0]).unwrap();
    assert!(matches!(
        gm.encrypt(&f.app, &KeyRef::Id(aes.id), &c, b"x"),
        Err(Error::Policy(_))
    ));
    assert_eq!(
        gm.decrypt(&f.app, &c, &blob)
            .unwrap()
            .plaintext
            .expose_secret(),
        b"old"
    );
    let sm4 = gm
        .create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: ns("a"),
                purpose: Purpose::Encrypt,
                spec: KeySpec::Sm4Gcm,
                alias: None,
                rotation_period: None,
                description: String::new(),
            },
        )
        .unwrap();
    let moved = gm
        .reencrypt(&f.app, &blob, &c, Some(&KeyRef::Id(sm4.id)), &c)
        .unwrap();
    assert_eq!(
        gm.decrypt(&f.app, &c, &moved.ciphertext)
            .unwrap()
            .plaintext
            .expose_secret(),
        b"old"
    );
}

#[test]
fn backup_round_trip_and_tamper_detection() {
    let f = fixture();
    let key = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, Some("b"));
    let c = EncryptionContext::default();
    let blob = f
        .kms
        .encrypt(&f.app, &KeyRef::Id(key.id), &c, b"kept")
        .unwrap()
        .ciphertext;
    assert!(matches!(
        f.kms.backup(&f.app),
        Err(Error::PermissionDenied {
            op: "back up the store",
            ..
        })
    ));
    let backup = f.kms.backup(&f.admin).unwrap();

    let fresh = || {
        TestKms::with_clock(
            Arc::new(MemoryStore::new()),
            KmsConfig::default(),
            f.clock.clone(),
        )
    };
    // Every flipped byte is refused, and nothing is written.
    for i in (0..backup.len()).step_by(7) {
        let mut t = backup.clone();
        t[i] ^= 0x20;
        let target = fresh();
        let r = target.restore(&t, &f.shares[..2]);
        assert!(
            matches!(
                r,
                Err(Error::InvalidArgument(ref e)) if e.field == "backup"
            ) || matches!(
                r,
                Err(Error::Unseal(UnsealError::WrongSet | UnsealError::Mismatch))
            ),
            "flip at {i}: {r:?}"
        );
        assert!(!target.status().unwrap().initialized);
    }
    assert!(matches!(
        fresh().restore(&backup[..backup.len() - 1], &f.shares[..2]),
        Err(Error::InvalidArgument(ref e))
            if e.field == "backup" && e.problem.contains("integrity check failed")
    ));
    // Too few shares, or another KMS's shares: refused.
    assert!(matches!(
        fresh().restore(&backup, &f.shares[..1]),
        Err(Error::Unseal(UnsealError::Mismatch))
    ));
    let g = fixture();
    assert!(matches!(
        fresh().restore(&backup, &g.shares[..2]),
        Err(Error::Unseal(UnsealError::WrongSet))
    ));

    let target = fresh();
    assert!(target.restore(&backup, &f.shares[1..3]).unwrap() > 0);
    assert!(target.is_sealed());
    assert!(
        matches!(
            target.restore(&backup, &f.shares[1..3]),
            Err(Error::FailedPrecondition(ref m)) if m.contains("empty store")
        ),
        "restore needs an empty store"
    );
    target.unseal_with(&f.shares[0]).unwrap();
    target.unseal_with(&f.shares[2]).unwrap();
    assert_eq!(
        target
            .decrypt(&f.app, &c, &blob)
            .unwrap()
            .plaintext
            .expose_secret(),
        b"kept"
    );
    let by_alias = KeyRef::parse("b", &ns("a")).unwrap();
    assert_eq!(target.describe_key(&f.admin, &by_alias).unwrap().id, key.id);
}

mod audit {
    use super::*;
    use crate::audit::writer::{AuditLog, CheckpointPolicy};
    use crate::audit::{Event, verify};

    fn event(i: usize, key: Option<String>) -> Event {
        Event {
            request_id: format!("r{i}"),
            principal: "app-a".into(),
            role: "app".into(),
            operation: "Encrypt".into(),
            key_id: key,
            key_version: Some(1),
            outcome: if i.is_multiple_of(3) {
                "PERMISSION_DENIED".into()
            } else {
                "OK".into()
            },
            context_hmac: None,
            flags: vec![],
            transport: None,
            traceparent: None,
            transfer: None,
            batch_id: None,
            pepper: None,
            count: None,
        }
    }

    fn trail(
        records: usize,
        every: u64,
    ) -> (Arc<TestKms>, AuditLog, String, crate::crypto::PublicKey) {
        let f = fixture();
        let kms = Arc::new(f.kms);
        let log = AuditLog::start(
            kms.store().clone(),
            "n1",
            kms.audit_signer(),
            CheckpointPolicy {
                every_records: every,
                every: Duration::from_secs(3600),
            },
        );
        for i in 0..records {
            log.append_blocking(event(i, Some("k".into()))).unwrap();
        }
        log.checkpoint_now().unwrap();
        let text = log.export().unwrap();
        let public = kms.audit_public_key().unwrap().public_key;
        (kms, log, text, public)
    }

    /// The inventory pages through the trail: a use in the third page of records still counts,
    /// and only successful data-plane uses do.
    #[test]
    fn inventory_finds_a_compromised_keys_last_use_beyond_the_first_pages() {
        last_use_beyond_the_first_pages(fixture());
    }

    /// The same with the trail in a sled store's live log.
    #[test]
    fn inventory_finds_a_last_use_in_the_live_log() {
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(&tmp.path().join("store")).unwrap();
        last_use_beyond_the_first_pages(fixture_with(Arc::new(store), 3, 2));
    }

    fn last_use_beyond_the_first_pages(f: Fixture) {
        let key = create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None);
        f.kms
            .mark_compromised(&f.admin, &KeyRef::Id(key.id))
            .unwrap();
        let kms = Arc::new(f.kms);
        let log = AuditLog::start(
            kms.store().clone(),
            "n1",
            kms.audit_signer(),
            CheckpointPolicy::default(),
        );
        let id = key.id.to_string();
        let not_use = |i: usize, operation: &str, outcome: &str| Event {
            operation: operation.into(),
            outcome: outcome.into(),
            ..event(i, Some(id.clone()))
        };
        for i in 0..2_500 {
            let e = if i % 2 == 0 {
                not_use(i, "Admin/DescribeKey", "OK")
            } else {
                not_use(i, "Crypto/Decrypt", "PERMISSION_DENIED")
            };
            log.append_blocking(e).unwrap();
        }
        let used = log
            .append_blocking(not_use(2_500, "Crypto/Decrypt", "OK"))
            .unwrap();
        log.append_blocking(not_use(2_501, "Admin/RotateKey", "OK"))
            .unwrap();
        let inventory = kms.inventory(&f.auditor).unwrap();
        let found = inventory
            .summary
            .compromised
            .iter()
            .find(|c| c.key_id == id)
            .expect("the compromised key is listed");
        assert_eq!(found.last_use_ms, Some(used.time_ms));
        log.stop();
    }

    #[test]
    fn an_untouched_export_verifies() {
        let (_, _, text, public) = trail(25, 10);
        let v = verify(&text, &public).unwrap();
        assert_eq!(v.records, 25);
        assert!(v.checkpoints >= 2);
        assert!(
            text.lines()
                .last()
                .unwrap()
                .contains("\"closes_export\":true")
        );
    }

    #[test]
    fn every_kind_of_tampering_is_caught_at_its_line() {
        let (_, _, text, public) = trail(12, 5);
        let lines: Vec<&str> = text.lines().collect();
        let join = |v: &[String]| v.join("\n") + "\n";
        let owned: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
        // Editing any field of any record.
        for (i, l) in lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("\"type\":\"record\""))
        {
            for (from, to) in [
                ("\"OK\"", "\"NOT_FOUND\""),
                ("\"app-a\"", "\"app-b\""),
                ("\"r1", "\"x1"),
                ("\"Encrypt\"", "\"Decrypt\""),
            ] {
                if l.contains(from) {
                    let mut t = owned.clone();
                    t[i] = l.replacen(from, to, 1);
                    let e = verify(&join(&t), &public).unwrap_err();
                    assert!(
                        e.line <= i + 2,
                        "edit on line {} reported at {}",
                        i + 1,
                        e.line
                    );
                }
            }
        }
        // An edited record is named at its own line when the next line still vouches for the next record.
        let rec = owned
            .iter()
            .position(|l| l.contains("\"seq\":4,") && l.contains("\"type\":\"record\""))
            .unwrap();
        let mut t = owned.clone();
        t[rec] = owned[rec].replacen("\"app-a\"", "\"app-z\"", 1);
        assert_eq!(verify(&join(&t), &public).unwrap_err().line, rec + 1);
        // Deleting a record.
        let mut t = owned.clone();
        t.remove(3);
        assert_eq!(verify(&join(&t), &public).unwrap_err().line, 4);
        // Reordering two records.
        let mut t = owned.clone();
        t.swap(1, 2);
        assert_eq!(verify(&join(&t), &public).unwrap_err().line, 2);
        // Truncating the tail, even exactly after an intermediate checkpoint.
        let mut t = owned.clone();
        t.pop();
        let e = verify(&join(&t), &public).unwrap_err();
        assert!(e.problem.contains("closing"), "{e}");
        let cut = owned
            .iter()
            .position(|l| l.contains("\"closes_export\":false"))
            .unwrap();
        assert!(
            verify(&join(&owned[..=cut]), &public)
                .unwrap_err()
                .problem
                .contains("closing")
        );
        // Replacing a checkpoint signature (with a valid signature over something else).
        let last = owned.len() - 1;
        let other = owned[cut]
            .split("\"signature\":\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"}")
            .to_owned();
        let mine = owned[last]
            .split("\"signature\":\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"}")
            .to_owned();
        let mut t = owned.clone();
        t[last] = owned[last].replace(&mine, &other);
        assert!(
            verify(&join(&t), &public)
                .unwrap_err()
                .problem
                .contains("signature")
        );
        // Another KMS's audit key does not verify this trail.
        let (_, _, _, stranger) = trail(1, 5);
        let e = verify(&text, &stranger).unwrap_err();
        assert!(e.problem.contains("signature"), "{e}");
    }

    #[test]
    fn group_commit_orders_concurrent_appends_into_one_chain() {
        let f = fixture();
        let kms = Arc::new(f.kms);
        let log = Arc::new(AuditLog::start(
            kms.store().clone(),
            "n1",
            kms.audit_signer(),
            CheckpointPolicy::default(),
        ));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        log.append_blocking(event(t * 100 + i, None)).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let text = log.export().unwrap();
        assert_eq!(
            verify(&text, &kms.audit_public_key().unwrap().public_key)
                .unwrap()
                .records,
            400
        );
    }

    #[test]
    fn checkpoints_come_every_n_records_and_every_t_seconds() {
        let f = fixture();
        let kms = Arc::new(f.kms);
        let store = kms.store().clone();
        let checkpoints = || store.scan_prefix(Tree::Audit, b"c").unwrap().len();
        let log = AuditLog::start(
            store.clone(),
            "n1",
            kms.audit_signer(),
            CheckpointPolicy {
                every_records: 3,
                every: Duration::from_millis(200),
            },
        );
        for i in 0..3 {
            log.append_blocking(event(i, None)).unwrap();
        }
        // The checkpoint is written just after the records it covers are acknowledged.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while checkpoints() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let after_three = checkpoints();
        assert!(after_three >= 1, "a checkpoint after every 3 records");
        log.append_blocking(event(9, None)).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            checkpoints() > after_three,
            "a checkpoint after T seconds with new records"
        );
        let before_stop = checkpoints();
        log.append_blocking(event(10, None)).unwrap();
        log.stop();
        assert!(checkpoints() > before_stop, "a checkpoint at shutdown");
    }

    #[test]
    fn inventory_verifies_and_every_edit_fails() {
        let f = fixture();
        let k = create(&f, "a", Purpose::Sign, KeySpec::Sm2, Some("signer"));
        f.kms.mark_compromised(&f.admin, &KeyRef::Id(k.id)).unwrap();
        create(&f, "a", Purpose::Encrypt, KeySpec::Aes256Gcm, None);
        // A partner's public key (here: the signer's own), imported: origin public-only.
        let spki = k.versions[0].public_key_der.clone().unwrap();
        f.kms
            .import_public_key(
                &f.admin,
                ImportPublicKeyRequest {
                    namespace: ns("a"),
                    purpose: Purpose::Sign,
                    public_key: crate::crypto::PublicKey::from_spki_der(Policy::default(), &spki)
                        .unwrap(),
                    alias: None,
                    description: String::new(),
                },
            )
            .unwrap();
        assert!(matches!(
            f.kms.inventory(&f.app),
            Err(Error::PermissionDenied {
                op: "export the key inventory",
                ..
            })
        ));
        let inv = f.kms.inventory(&f.auditor).unwrap();
        assert_eq!(inv.summary.total_keys, 4, "three keys and the audit key");
        let outside: Vec<_> = inv
            .keys
            .iter()
            .filter(|k| k.origin == crate::keys::record::Origin::PublicOnly)
            .collect();
        assert_eq!(outside.len(), 1);
        assert!(!outside[0].versions[0].destroyed);
        assert_eq!(inv.summary.compromised.len(), 1);
        assert!(inv.summary.all_keys_allowed_by_policy);
        let text = serde_json::to_string_pretty(&inv).unwrap();
        let public = f.kms.audit_public_key().unwrap().public_key;
        crate::verify_inventory(&text, &public).unwrap();
        for (from, to) in [
            ("\"COMPROMISED\"", "\"ENABLED\""),
            ("\"aes-256-gcm\"", "\"sm4-gcm\""),
            ("\"signer\"", "\"other\""),
            ("\"public-only\"", "\"generated\""),
        ] {
            let edited = text.replacen(from, to, 1);
            assert_ne!(edited, text);
            assert!(
                matches!(
                    crate::verify_inventory(&edited, &public),
                    Err(crate::InventoryError::BadSignature)
                ),
                "{from}"
            );
        }
        // Matches the key list.
        let listed = f.kms.list_keys(&f.auditor, None).unwrap();
        assert_eq!(listed.len(), inv.keys.len());
    }

    /// Rotating the KMS audit key (as an administrator does) hands the trail over at once: the
    /// transition record, signed by the old version, follows the rotation's own record, and
    /// the export verifies from the oldest version alone or from every version exported.
    #[test]
    fn rotating_the_audit_key_hands_the_trail_over_and_it_verifies_across_two_rotations() {
        use crate::audit::{AuditKeys, Line, Operation, Outcome};
        let f = fixture();
        let audit = KeyRef::parse("kms-system:audit-signing", &ns("a")).unwrap();
        let admin = f.admin.clone();
        let kms = Arc::new(f.kms);
        let log = AuditLog::start(
            kms.store().clone(),
            "n1",
            kms.audit_signer(),
            CheckpointPolicy {
                every_records: 1000,
                every: Duration::from_secs(3600),
            },
        );
        for round in 0..2u32 {
            for i in 0..3 {
                log.append_blocking(event(i, Some("k".into()))).unwrap();
            }
            let rotated = kms.rotate_key(&admin, &audit).unwrap();
            assert_eq!(rotated.current_version(), round + 2);
            log.append_blocking(Event {
                operation: Operation::RotateKey,
                outcome: Outcome::Ok,
                key_id: Some(rotated.id.to_string()),
                key_version: Some(round + 2),
                ..Event::default()
            })
            .unwrap();
            log.append_blocking(event(9, None)).unwrap();
            // The transition is in the store before the export asks for it.
            let text = log.export().unwrap();
            let lines: Vec<Line> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let at = lines
                .iter()
                .position(|l| {
                    matches!(l, Line::Record(r)
                        if r.transition.as_ref().is_some_and(|t| t.to_version == round + 2))
                })
                .unwrap();
            assert!(
                matches!(&lines[at - 1], Line::Record(r) if r.operation == Operation::RotateKey),
                "{:?}",
                lines[at - 1]
            );
        }
        let text = log.export().unwrap();
        log.stop();
        let versions = kms.audit_public_keys().unwrap();
        assert_eq!(
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let oldest = versions[0].public_key.clone();
        let all = AuditKeys::new(versions.iter().map(|v| v.public_key.clone()).collect());
        let v = verify(&text, &oldest).unwrap();
        assert_eq!(v, verify(&text, &all).unwrap());
        assert_eq!(
            v.transitions
                .iter()
                .map(|t| (t.from_version, t.to_version))
                .collect::<Vec<_>>(),
            [(1, 2), (2, 3)]
        );
        assert_eq!(kms.audit_public_key().unwrap().key_version, 3);
    }
}

#[test]
fn the_audit_key_cannot_be_stopped_by_an_administrator() {
    let f = fixture();
    let audit = KeyRef::parse("kms-system:audit-signing", &ns("a")).unwrap();
    for result in [
        f.kms.disable_key(&f.admin, &audit),
        f.kms.mark_compromised(&f.admin, &audit),
        f.kms.schedule_destruction(&f.admin, &audit, Some(7)),
    ] {
        assert!(
            matches!(result, Err(Error::FailedPrecondition(_))),
            "{result:?}"
        );
    }
    assert!(matches!(
        f.kms
            .create_grant(&f.admin, &audit, ns("a"), vec![GrantOp::Sign]),
        Err(Error::FailedPrecondition(_))
    ));
    let alias = Alias::new("audit-signing").unwrap();
    assert!(matches!(
        f.kms.delete_alias(
            &f.admin,
            &Namespace::existing("kms-system").unwrap(),
            &alias
        ),
        Err(Error::FailedPrecondition(_))
    ));
    assert!(f.kms.audit_public_key().is_ok());
    assert_eq!(
        f.kms
            .rotate_key(&f.admin, &audit)
            .unwrap()
            .current_version(),
        2
    );
    assert!(matches!(
        f.kms.sign(
            &f.app,
            &audit,
            Message::Raw(b"x"),
            &SignatureParams::default()
        ),
        Err(Error::NotFound { what: "key", .. })
    ));
    assert!(matches!(
        f.kms.add_principal(
            &f.admin,
            "sneaky",
            Role::App {
                namespace: Namespace::existing("kms-system").unwrap()
            }
        ),
        Err(Error::InvalidArgument(ref e)) if e.field == "namespace" && e.problem.contains("reserved")
    ));
}

/// The refusal of `field` whose message contains `part`.
fn refused<T: core::fmt::Debug>(r: Result<T, Error>, field: &str, part: &str) {
    match r {
        Err(Error::InvalidArgument(e)) if e.field == field && e.problem.contains(part) => {}
        other => panic!("expected invalid {field} ({part}), got {other:?}"),
    }
}

/// An app of namespace `namespace`, registered by the fixture's admin.
fn app_in(f: &Fixture, subject: &str, namespace: &str) -> Principal {
    f.kms
        .add_principal(
            &f.admin,
            subject,
            Role::App {
                namespace: ns(namespace),
            },
        )
        .unwrap()
}

/// Issue 18, item 5: a `reencrypt` grant was a `decrypt` grant — the grantee re-encrypted the
/// owner's ciphertext into a key of its own and decrypted that. Now the destination must be in
/// the source key's namespace unless a `reencrypt-to` grant names it.
#[test]
fn r18_a_reencrypt_grant_does_not_reencrypt_into_the_grantees_own_key() {
    let f = fixture();
    let c = EncryptionContext::default();
    let source = KeyRef::Id(create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None).id);
    let sibling = KeyRef::Id(create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None).id);
    let own = KeyRef::Id(create(&f, "b", Purpose::Encrypt, KeySpec::Sm4Gcm, None).id);
    let blob = f
        .kms
        .encrypt(&f.app, &source, &c, b"owner's secret")
        .unwrap()
        .ciphertext;
    f.kms
        .create_grant(&f.admin, &source, ns("b"), vec![GrantOp::ReEncrypt])
        .unwrap();
    // The escalation: into the grantee's own key (which it may decrypt) is refused.
    match f.kms.reencrypt(&f.other_app, &blob, &c, Some(&own), &c) {
        Err(Error::PermissionDenied { op, .. }) => {
            assert!(op.contains("outside the source key's namespace"), "{op}");
            assert!(op.contains("reencrypt-to"), "{op}");
        }
        other => panic!("{other:?}"),
    }
    // Within the source key's namespace it works: onto the same key's newest version…
    let same = f.kms.reencrypt(&f.other_app, &blob, &c, None, &c).unwrap();
    assert_eq!(KeyRef::Id(same.key_id), source);
    // …and onto a sibling key once the grantee reaches it for re-encryption.
    assert!(matches!(
        f.kms.reencrypt(&f.other_app, &blob, &c, Some(&sibling), &c),
        Err(Error::NotFound { what: "key", .. })
    ));
    f.kms
        .create_grant(&f.admin, &sibling, ns("b"), vec![GrantOp::ReEncrypt])
        .unwrap();
    let moved = f
        .kms
        .reencrypt(&f.other_app, &blob, &c, Some(&sibling), &c)
        .unwrap();
    // The grantee still cannot read it; the owner can.
    assert!(matches!(
        f.kms.decrypt(&f.other_app, &c, &moved.ciphertext),
        Err(Error::NotFound { what: "key", .. })
    ));
    let back = f.kms.decrypt(&f.app, &c, &moved.ciphertext).unwrap();
    assert_eq!(back.plaintext.expose_secret(), b"owner's secret");
    // `decrypt` does not imply re-encryption from the key, nor `reencrypt-to` into it.
    f.kms
        .create_grant(
            &f.admin,
            &source,
            ns("b"),
            vec![GrantOp::Decrypt, GrantOp::ReEncryptTo],
        )
        .unwrap();
    assert!(matches!(
        f.kms.reencrypt(&f.other_app, &blob, &c, None, &c),
        Err(Error::NotFound { what: "key", .. })
    ));
}

/// A `reencrypt-to` grant on a key of a third namespace lets a grantee move data there; the
/// owner of the source may re-encrypt between its own keys freely, but not into another
/// namespace's key without that grant.
#[test]
fn reencrypt_to_grants_open_destinations_in_other_namespaces() {
    let f = fixture();
    let c = EncryptionContext::default();
    let app_c = app_in(&f, "app-c", "c");
    let source = KeyRef::Id(create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None).id);
    let owners_other = KeyRef::Id(create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None).id);
    let third = KeyRef::Id(create(&f, "c", Purpose::Encrypt, KeySpec::Sm4Gcm, None).id);
    let blob = f
        .kms
        .encrypt(&f.app, &source, &c, b"moving")
        .unwrap()
        .ciphertext;
    // The owner, between its own keys: allowed.
    f.kms
        .reencrypt(&f.app, &blob, &c, Some(&owners_other), &c)
        .unwrap();
    // The owner, into namespace c's key: out of reach until c's key is granted.
    assert!(matches!(
        f.kms.reencrypt(&f.app, &blob, &c, Some(&third), &c),
        Err(Error::NotFound { what: "key", .. })
    ));
    // A `reencrypt` (from) grant on the destination is reach, but not a licence to move data
    // out of the source key's namespace.
    f.kms
        .create_grant(&f.admin, &third, ns("a"), vec![GrantOp::ReEncrypt])
        .unwrap();
    assert!(matches!(
        f.kms.reencrypt(&f.app, &blob, &c, Some(&third), &c),
        Err(Error::PermissionDenied { .. })
    ));
    f.kms
        .create_grant(&f.admin, &third, ns("a"), vec![GrantOp::ReEncryptTo])
        .unwrap();
    let out = f
        .kms
        .reencrypt(&f.app, &blob, &c, Some(&third), &c)
        .unwrap();
    assert_eq!(KeyRef::Id(out.key_id), third);
    let read = f.kms.decrypt(&app_c, &c, &out.ciphertext).unwrap();
    assert_eq!(read.plaintext.expose_secret(), b"moving");
    // A grantee with `reencrypt` on the source and `reencrypt-to` on c's key may move it too.
    f.kms
        .create_grant(&f.admin, &source, ns("b"), vec![GrantOp::ReEncrypt])
        .unwrap();
    f.kms
        .create_grant(&f.admin, &third, ns("b"), vec![GrantOp::ReEncryptTo])
        .unwrap();
    let out = f
        .kms
        .reencrypt(&f.other_app, &blob, &c, Some(&third), &c)
        .unwrap();
    assert_eq!(KeyRef::Id(out.key_id), third);
    // A `reencrypt-to` grant alone does not open the key as a source.
    let from_third = f
        .kms
        .encrypt(&app_c, &third, &c, b"c's")
        .unwrap()
        .ciphertext;
    assert!(matches!(
        f.kms
            .reencrypt(&f.other_app, &from_third, &c, Some(&third), &c),
        Err(Error::NotFound { what: "key", .. })
    ));
}

#[test]
fn grants_fit_the_key_purpose_and_cross_a_namespace_boundary() {
    let f = fixture();
    let enc = KeyRef::Id(create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None).id);
    let sign = KeyRef::Id(create(&f, "a", Purpose::Sign, KeySpec::Sm2, None).id);
    let asym = KeyRef::Id(create(&f, "a", Purpose::AsymmetricDecrypt, KeySpec::Sm2, None).id);
    let mac = KeyRef::Id(create(&f, "a", Purpose::Mac, KeySpec::HmacSm3, None).id);
    let grant =
        |key: &KeyRef, to: Namespace, ops: Vec<GrantOp>| f.kms.create_grant(&f.admin, key, to, ops);
    for (key, op) in [
        (&enc, GrantOp::Sign),
        (&enc, GrantOp::GetPublicKey),
        (&sign, GrantOp::Decrypt),
        (&sign, GrantOp::ReEncryptTo),
        (&asym, GrantOp::Decrypt),
        (&mac, GrantOp::Decrypt),
        (&mac, GrantOp::Verify),
    ] {
        refused(
            grant(key, ns("b"), vec![GrantOp::Describe, op]),
            "grant operation",
            &format!("{} does not fit", op.name()),
        );
    }
    // The message lists what does fit.
    refused(
        grant(&mac, ns("b"), vec![GrantOp::Sign]),
        "grant operation",
        "it can be granted: generate-mac, verify-mac, describe",
    );
    // Every fitting operation is accepted, for every purpose.
    for (key, purpose) in [
        (&enc, Purpose::Encrypt),
        (&sign, Purpose::Sign),
        (&asym, Purpose::AsymmetricDecrypt),
        (&mac, Purpose::Mac),
    ] {
        let g = grant(key, ns("b"), GrantOp::fitting(purpose)).unwrap();
        assert_eq!(g.ops.len(), GrantOp::fitting(purpose).len());
    }
    // Not to the key's own namespace.
    refused(
        grant(&enc, ns("a"), vec![GrantOp::Decrypt]),
        "grantee",
        "belongs to namespace a",
    );
    // Not to kms-system, however it is spelled.
    for system in ["kms-system", "KMS-System", "kms-system.", "kms-system.."] {
        refused(
            grant(
                &enc,
                Namespace::existing(system).unwrap(),
                vec![GrantOp::Decrypt],
            ),
            "grantee",
            "reserved",
        );
    }
    // A grantee is a new name: the strict rule.
    refused(
        grant(
            &enc,
            Namespace::existing("Ledger").unwrap(),
            vec![GrantOp::Decrypt],
        ),
        "namespace",
        "lower-case",
    );
    assert_eq!(f.kms.list_grants(&f.auditor, None).unwrap().len(), 4);
}

#[test]
fn new_namespaces_subjects_and_periods_are_validated() {
    let f = fixture();
    let req = |namespace: Namespace, rotation_period| CreateKeyRequest {
        namespace,
        purpose: Purpose::Encrypt,
        spec: KeySpec::Sm4Gcm,
        alias: None,
        rotation_period,
        description: String::new(),
    };
    // Keys: upper case, reserved names in any casing or with a trailing dot.
    refused(
        f.kms.create_key(
            &f.admin,
            req(Namespace::existing("Payments").unwrap(), None),
        ),
        "namespace",
        "lower-case",
    );
    for system in ["kms-system", "Kms-System", "kms-system."] {
        refused(
            f.kms
                .create_key(&f.admin, req(Namespace::existing(system).unwrap(), None)),
            "namespace",
            "reserved",
        );
    }
    // Apps: the same rule for the namespace, and a safe subject.
    refused(
        f.kms.add_principal(
            &f.admin,
            "kms://upper",
            Role::App {
                namespace: Namespace::existing("Upper").unwrap(),
            },
        ),
        "namespace",
        "lower-case",
    );
    refused(
        f.kms.add_principal(
            &f.admin,
            "kms://sneaky",
            Role::App {
                namespace: Namespace::existing("KMS-SYSTEM.").unwrap(),
            },
        ),
        "namespace",
        "reserved",
    );
    for bad in [
        "kms://\u{0430}pp",
        "kms://app\n",
        " kms://app",
        "a  b",
        "tab\there",
    ] {
        refused(
            f.kms.add_principal(&f.admin, bad, Role::Auditor),
            "subject",
            "printable ASCII",
        );
    }
    for good in ["spiffe://kms.test/app-payments", "Payment Gateway 01"] {
        f.kms.add_principal(&f.admin, good, Role::Auditor).unwrap();
    }
    // Rotation periods: 1 day to 3650 days; destruction waits: 7 to 90 days.
    refused(
        f.kms.create_key(&f.admin, req(ns("a"), Some(u64::MAX))),
        "rotation period",
        "3650 days",
    );
    let key = KeyRef::Id(f.kms.create_key(&f.admin, req(ns("a"), None)).unwrap().id);
    for bad in [DAY - 1, 3650 * DAY + 1, u64::MAX] {
        refused(
            f.kms.set_rotation_period(&f.admin, &key, Some(bad)),
            "rotation period",
            "1 day to 3650 days",
        );
    }
    f.kms
        .set_rotation_period(&f.admin, &key, Some(3650 * DAY))
        .unwrap();
    for bad in [0, 6, 91, u32::MAX] {
        refused(
            f.kms.schedule_destruction(&f.admin, &key, Some(bad)),
            "waiting period",
            "7 to 90 days",
        );
    }
}

/// Validation applies to new input only: principals and grants stored before the strict rule
/// (an upper-case namespace, a non-ASCII subject) load, keep working and can be revoked.
#[test]
fn records_stored_before_the_strict_rule_still_load_and_work() {
    let f = fixture();
    let c = EncryptionContext::default();
    let key = KeyRef::Id(create(&f, "a", Purpose::Encrypt, KeySpec::Sm4Gcm, None).id);
    let KeyRef::Id(id) = key else { unreachable!() };
    let blob = f.kms.encrypt(&f.app, &key, &c, b"old").unwrap().ciphertext;
    let legacy = Namespace::existing("Legacy.NS").unwrap();
    let subject = "kms://zo\u{eb}";
    let mut batch = Batch::new();
    batch.put(
        Tree::Principals,
        subject.as_bytes(),
        format!(r#"{{"subject":"{subject}","role":"app","namespace":"Legacy.NS","created_at":1}}"#)
            .into_bytes(),
    );
    batch.put(
        Tree::Grants,
        layout::grant(&id, &legacy),
        format!(r#"{{"key_id":"{id}","grantee":"Legacy.NS","ops":["decrypt"],"created_at":1}}"#)
            .into_bytes(),
    );
    f.kms.store().apply(&batch).unwrap();
    let old = f.kms.principal(subject).unwrap().unwrap();
    assert_eq!(
        old.role,
        Role::App {
            namespace: legacy.clone()
        }
    );
    assert_eq!(
        f.kms
            .decrypt(&old, &c, &blob)
            .unwrap()
            .plaintext
            .expose_secret(),
        b"old"
    );
    let grants = f.kms.list_grants(&f.auditor, Some(&key)).unwrap();
    assert_eq!(grants[0].grantee, legacy);
    assert!(f.kms.list_principals(&f.auditor).unwrap().contains(&old));
    f.kms.revoke_grant(&f.admin, &key, &legacy).unwrap();
    assert!(matches!(
        f.kms.decrypt(&old, &c, &blob),
        Err(Error::NotFound { what: "key", .. })
    ));
}

#[test]
fn descriptions_refuse_terminal_controls() {
    let f = fixture();
    for bad in ["line\nbreak", "esc\u{1b}[2J", "nul\0", "cr\r"] {
        let r = f.kms.create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: ns("a"),
                purpose: Purpose::Encrypt,
                spec: KeySpec::Sm4Gcm,
                alias: None,
                rotation_period: None,
                description: bad.into(),
            },
        );
        assert!(
            matches!(&r, Err(Error::InvalidArgument(e)) if e.field == "description"
                && e.problem.contains("control characters")),
            "{bad:?}: {r:?}"
        );
    }
    let ok = f
        .kms
        .create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: ns("a"),
                purpose: Purpose::Encrypt,
                spec: KeySpec::Sm4Gcm,
                alias: None,
                rotation_period: None,
                description: "支付 — card keys, rotated yearly".into(),
            },
        )
        .unwrap();
    assert!(ok.description.starts_with("支付"));
}

mod custody {
    use super::*;
    use crate::authz::authorize;
    use crate::custody::{Holder, InitPlan, ShareForm};

    fn plain(form: &ShareForm) -> &Share {
        match form {
            ShareForm::Plain(s) => s,
            ShareForm::Encrypted { .. } => panic!("no key was given"),
        }
    }

    fn with_holders(break_glass: bool) -> (TestKms, Vec<Share>, [Principal; 3]) {
        let config = KmsConfig {
            unseal_break_glass: break_glass,
            ..KmsConfig::default()
        };
        let kms = TestKms::open(Arc::new(MemoryStore::new()), config);
        let issued = kms
            .init_plan(&InitPlan {
                admin: "alice".into(),
                threshold: 2,
                holders: ["alice", "bob", "carol"]
                    .into_iter()
                    .map(|s| Holder {
                        subject: s.into(),
                        public_key: None,
                    })
                    .collect(),
                shares: 0,
            })
            .unwrap();
        let shares = issued
            .shares
            .iter()
            .map(|s| Share::from_text(plain(&s.form).expose_text()))
            .collect();
        let who = |s: &str| kms.principal(s).unwrap().unwrap();
        let people = [who("alice"), who("bob"), who("carol")];
        assert_eq!(people[0].role, Role::Admin);
        assert_eq!(people[1].role, Role::Custodian);
        (kms, shares, people)
    }

    #[test]
    fn shares_are_given_by_their_holders_only() {
        let (kms, shares, [alice, bob, carol]) = with_holders(false);
        assert!(matches!(
            kms.kms().unseal(&authorize(&bob).unwrap(), &shares[0]),
            Err(Error::Unseal(UnsealError::NotHolder))
        ));
        assert_eq!(kms.status().unwrap().progress, 0);
        let u = kms
            .kms()
            .unseal(&authorize(&alice).unwrap(), &shares[0])
            .unwrap();
        assert!(!u.break_glass);
        let u = kms
            .kms()
            .unseal(&authorize(&carol).unwrap(), &shares[2])
            .unwrap();
        assert_eq!(
            (u.progress, u.break_glass),
            (UnsealProgress::Unsealed, false)
        );
    }

    #[test]
    fn break_glass_accepts_anothers_share_and_says_so() {
        let (kms, shares, [alice, bob, _]) = with_holders(true);
        let u = kms
            .kms()
            .unseal(&authorize(&bob).unwrap(), &shares[0])
            .unwrap();
        assert!(u.break_glass);
        // Still one share per person, break-glass or not.
        assert!(matches!(
            kms.kms().unseal(&authorize(&bob).unwrap(), &shares[1]),
            Err(Error::Unseal(UnsealError::AlreadyGave))
        ));
        let u = kms
            .kms()
            .unseal(&authorize(&alice).unwrap(), &shares[2])
            .unwrap();
        assert_eq!(
            (u.progress, u.break_glass),
            (UnsealProgress::Unsealed, true)
        );
    }

    #[test]
    fn holders_named_twice_or_too_few_are_refused_and_nothing_is_written() {
        let kms = TestKms::open(Arc::new(MemoryStore::new()), KmsConfig::default());
        let plan = |holders: &[&str], threshold| InitPlan {
            admin: "alice".into(),
            threshold,
            holders: holders
                .iter()
                .map(|s| Holder {
                    subject: (*s).into(),
                    public_key: None,
                })
                .collect(),
            shares: 0,
        };
        assert!(matches!(
            kms.init_plan(&plan(&["alice", "bob", "alice"], 2)),
            Err(Error::InvalidArgument(e)) if e.field == "holders"
        ));
        assert!(matches!(
            kms.init_plan(&plan(&["alice", "bob"], 3)),
            Err(Error::InvalidArgument(e)) if e.field == "threshold"
        ));
        assert!(matches!(
            kms.init_plan(&plan(&["alice", "bad\u{7}name"], 2)),
            Err(Error::InvalidArgument(e)) if e.field == "subject"
        ));
        assert!(!kms.status().unwrap().initialized);
    }
}

/// A backup carries the trail wherever its store keeps it (as audit tree entries), and a restore
/// puts it where the target keeps it: into a sled store's live log, replacing what the empty
/// store had recorded, and back into a memory store's tree. The writer then continues the
/// restored chain, and the trail verifies.
#[test]
fn a_backup_carries_the_trail_between_a_tree_and_a_live_log() {
    use crate::audit::writer::{AuditLog, CheckpointPolicy};
    use crate::audit::{Event, Operation, Outcome, verify};
    let event = |i: usize| Event {
        request_id: format!("r{i}"),
        principal: "app-a".into(),
        role: crate::audit::Role::App,
        operation: Operation::Encrypt,
        key_id: None,
        key_version: None,
        outcome: Outcome::Ok,
        context_hmac: None,
        flags: vec![],
        transport: None,
        traceparent: None,
        transfer: None,
        batch_id: None,
        pepper: None,
        count: None,
    };
    let policy = CheckpointPolicy {
        every_records: 4,
        every: Duration::from_secs(3600),
    };
    let f = fixture();
    let source = Arc::new(f.kms);
    let log = AuditLog::start(source.store().clone(), "n1", source.audit_signer(), policy);
    for i in 0..10 {
        log.append_blocking(event(i)).unwrap();
    }
    log.stop();
    let backup = source.backup(&f.admin).unwrap();
    let public = source.audit_public_key().unwrap().public_key;

    // Into a sled store whose live log already holds records of its own.
    let tmp = tempfile::tempdir().unwrap();
    let sled: Arc<dyn Store> =
        Arc::new(crate::store::SledStore::open(&tmp.path().join("store")).unwrap());
    let target = Arc::new(TestKms::open(Arc::clone(&sled), KmsConfig::default()));
    let log = AuditLog::start(Arc::clone(&sled), "n2", target.audit_signer(), policy);
    log.append_blocking(event(100)).unwrap();
    log.append_blocking(event(101)).unwrap();
    assert!(target.restore(&backup, &f.shares[..2]).unwrap() > 0);
    target.unseal_with(&f.shares[0]).unwrap();
    target.unseal_with(&f.shares[1]).unwrap();
    let r = log.append_blocking(event(11)).unwrap();
    assert_eq!(r.seq, 11, "the restored chain goes on");
    let export = log.export().unwrap();
    let verified = verify(&export, &public).unwrap();
    assert_eq!(verified.records, 11);
    assert_eq!(verified.records_by_node.get("n1"), Some(&10));
    assert!(
        !export.contains("\"r100\""),
        "the empty store's records are replaced"
    );
    let again = target.backup(&f.admin).unwrap();
    log.stop();

    // And from the live log back into a memory store's tree.
    let memory = TestKms::open(Arc::new(MemoryStore::new()), KmsConfig::default());
    assert!(memory.restore(&again, &f.shares[..2]).unwrap() > 0);
    memory.unseal_with(&f.shares[0]).unwrap();
    memory.unseal_with(&f.shares[1]).unwrap();
    let memory = Arc::new(memory);
    let log = AuditLog::start(memory.store().clone(), "n3", memory.audit_signer(), policy);
    let verified = verify(&log.export().unwrap(), &public).unwrap();
    assert_eq!(verified.records, 11);
    log.stop();
}
