//! Import and export in the core (issue 19): round trips, single-use tokens, every refusal
//! leaving the key as it was, expiry, exportability and dual control. The wrapping here is the
//! KMS's own transport code playing the outside party; the outside tools judge the same flows
//! end to end in `tests/tests/e2e/import_export.rs`.

use crate::alg::{KeySpec, Purpose, SignatureParams};
use crate::authz::{Principal, authorize, ops};
use crate::clock::Clock;
use crate::crypto::transport::{self, WrappingSpec};
use crate::crypto::{self, Message, PublicKey};
use crate::envelope::EncryptionContext;
use crate::error::Error;
use crate::keys::record::Origin;
use crate::keys::state::KeyState;
use crate::keys::{KeyRef, Namespace};
use crate::kms::tests::{Fixture, fixture};
use crate::kms::{ApprovalState, KeyInfo, KmsConfig, Quorum, Sensitive};
use crate::policy::Policy;
use crate::{CreateKeyRequest, ExportKeyRequest, ImportMaterialRequest, KeyOptions};

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

fn external(f: &Fixture, purpose: Purpose, spec: KeySpec) -> KeyInfo {
    f.kms
        .create_key_with(
            &f.admin,
            CreateKeyRequest {
                namespace: ns("a"),
                purpose,
                spec,
                alias: None,
                rotation_period: None,
                description: String::new(),
            },
            KeyOptions {
                external: true,
                exportable: false,
            },
        )
        .unwrap()
}

/// What an outside party does with import parameters: wrap `material` to the public key.
fn wrap_to(public: &PublicKey, spec: WrappingSpec, material: &[u8]) -> Vec<u8> {
    let approved = Policy::default()
        .approve(Purpose::AsymmetricDecrypt, public.spec())
        .unwrap();
    transport::wrap(&approved, spec, public, material).unwrap()
}

/// Import parameters for `key`, and `material` wrapped by them.
fn prepared(f: &Fixture, key: &KeyInfo, spec: WrappingSpec, material: &[u8]) -> (String, Vec<u8>) {
    let p = f
        .kms
        .get_import_parameters(&f.admin, &KeyRef::Id(key.id), spec, None)
        .unwrap();
    assert_eq!(p.key_id, key.id);
    assert_eq!(p.expires_at, f.clock.now() + crate::IMPORT_TOKEN_TTL);
    let wrapped = wrap_to(&p.wrapping_public_key, spec, material);
    (p.token, wrapped)
}

fn import(
    f: &Fixture,
    key: &KeyInfo,
    token: &str,
    wrapped: &[u8],
    expires_at: Option<u64>,
) -> Result<KeyInfo, Error> {
    f.kms
        .import_key_material(
            &f.admin,
            ImportMaterialRequest {
                key: KeyRef::Id(key.id),
                token: token.to_owned(),
                wrapped: wrapped.to_vec(),
                expires_at,
            },
        )
        .map(|done| done.info)
}

/// `r` failed with `code`'s error kind and a message containing `part`.
fn refused<T: core::fmt::Debug>(r: Result<T, Error>, precondition: bool, part: &str) {
    let e = r.expect_err(part);
    let kind_ok = if precondition {
        matches!(e, Error::FailedPrecondition(_))
    } else {
        matches!(e, Error::InvalidArgument(_))
    };
    assert!(kind_ok && e.to_string().contains(part), "{part}: got {e:?}");
}

fn state(f: &Fixture, key: &KeyInfo) -> KeyState {
    f.kms
        .describe_key(&f.admin, &KeyRef::Id(key.id))
        .unwrap()
        .state
}

fn ctx() -> EncryptionContext {
    [("table", "accounts")].into_iter().collect()
}

#[test]
fn an_external_key_waits_for_its_material_then_works_and_takes_it_again_once() {
    let f = fixture();
    let key = external(&f, Purpose::Encrypt, KeySpec::Sm4Gcm);
    assert_eq!(
        (key.state, key.origin),
        (KeyState::PendingImport, Origin::Imported)
    );
    assert!(key.versions.is_empty() && key.import.is_none());
    let r = KeyRef::Id(key.id);
    assert!(matches!(
        f.kms.encrypt(&f.app, &r, &ctx(), b"x"),
        Err(Error::InvalidState {
            state: KeyState::PendingImport,
            ..
        })
    ));
    // Enable cannot make a key without material usable.
    assert!(matches!(
        f.kms.enable_key(&f.admin, &r),
        Err(Error::InvalidState { .. })
    ));

    let material = [0x5au8; 16];
    let (token, wrapped) = prepared(&f, &key, WrappingSpec::Sm2, &material);
    let done = import(&f, &key, &token, &wrapped, None).unwrap();
    assert_eq!(done.state, KeyState::Enabled);
    let info = done.import.unwrap();
    assert_eq!(info.imported_at, f.clock.now());
    assert_eq!(info.fingerprint.len(), 64);
    let ct = f.kms.encrypt(&f.app, &r, &ctx(), b"row 1").unwrap();
    assert_eq!(
        f.kms
            .decrypt(&f.app, &ctx(), &ct.ciphertext)
            .unwrap()
            .plaintext
            .expose_secret(),
        b"row 1"
    );

    // The token imported once.
    refused(
        import(&f, &key, &token, &wrapped, None),
        true,
        "imports once",
    );
    // The same material again, with a new token: accepted, same fingerprint, state kept.
    f.kms.disable_key(&f.admin, &r).unwrap();
    let (token2, wrapped2) = prepared(&f, &key, WrappingSpec::RsaOaepSha256, &material);
    let again = import(&f, &key, &token2, &wrapped2, None).unwrap();
    assert_eq!(again.state, KeyState::Disabled);
    assert_eq!(again.import.unwrap().fingerprint, info.fingerprint);
    // Other material never replaces it.
    let (token3, wrapped3) = prepared(&f, &key, WrappingSpec::Sm2, &[0xa5u8; 16]);
    refused(
        import(&f, &key, &token3, &wrapped3, None),
        true,
        "holds other material",
    );
    // Rotation would mix origins.
    refused(f.kms.rotate_key(&f.admin, &r), true, "not rotated here");
}

#[test]
fn every_bad_input_is_named_and_changes_nothing() {
    let f = fixture();
    let key = external(&f, Purpose::Encrypt, KeySpec::Aes256Gcm);
    let other = external(&f, Purpose::Encrypt, KeySpec::Aes256Gcm);
    let good = [7u8; 32];
    let (token, wrapped) = prepared(&f, &key, WrappingSpec::RsaAesKwp, &good);

    refused(
        import(&f, &key, "imp-zz", &wrapped, None),
        false,
        "not an import token",
    );
    refused(
        import(&f, &key, "", &wrapped, None),
        false,
        "not an import token",
    );
    refused(
        import(
            &f,
            &key,
            "imp-00000000000000000000000000000000",
            &wrapped,
            None,
        ),
        true,
        "unknown here",
    );
    refused(
        import(&f, &other, &token, &wrapped, None),
        true,
        "was issued for key",
    );
    refused(
        import(&f, &key, &token, &wrapped[..wrapped.len() - 8], None),
        false,
        "cannot be opened",
    );
    let mut flipped = wrapped.clone();
    flipped[400] ^= 1;
    refused(
        import(&f, &key, &token, &flipped, None),
        false,
        "cannot be opened",
    );
    refused(
        import(&f, &key, &token, b"", None),
        false,
        "cannot be opened",
    );
    // A 16-byte key for AES-256, opened fine: the length is named.
    let (t_short, w_short) = prepared(&f, &key, WrappingSpec::RsaAesKwp, &[1u8; 16]);
    refused(
        import(&f, &key, &t_short, &w_short, None),
        false,
        "must be 32 bytes",
    );
    // Expiry in the past.
    let now = f.clock.now();
    refused(
        import(&f, &key, &token, &wrapped, Some(now)),
        false,
        "expires_at",
    );
    // A generated key takes no material.
    let generated = f
        .kms
        .create_key(
            &f.admin,
            CreateKeyRequest {
                namespace: ns("a"),
                purpose: Purpose::Encrypt,
                spec: KeySpec::Aes256Gcm,
                alias: None,
                rotation_period: None,
                description: String::new(),
            },
        )
        .unwrap();
    refused(
        f.kms
            .get_import_parameters(&f.admin, &KeyRef::Id(generated.id), WrappingSpec::Sm2, None),
        true,
        "origin generated",
    );
    // A wrapping key the spec cannot use.
    refused(
        f.kms.get_import_parameters(
            &f.admin,
            &KeyRef::Id(key.id),
            WrappingSpec::Sm2,
            Some(KeySpec::Rsa3072),
        ),
        false,
        "cannot serve sm2",
    );
    // Nothing above changed the key or used the token: the good import still works.
    assert_eq!(state(&f, &key), KeyState::PendingImport);
    assert_eq!(
        import(&f, &key, &token, &wrapped, None).unwrap().state,
        KeyState::Enabled
    );

    // An expired token.
    let (late, late_wrapped) = prepared(&f, &other, WrappingSpec::Sm2, &good);
    f.clock.advance(crate::IMPORT_TOKEN_TTL);
    refused(
        import(&f, &other, &late, &late_wrapped, None),
        true,
        "expired at",
    );
    assert_eq!(state(&f, &other), KeyState::PendingImport);
}

#[test]
fn an_imported_sm2_key_signs_under_its_own_public_key_and_wrong_keys_are_refused() {
    let f = fixture();
    let key = external(&f, Purpose::Sign, KeySpec::Sm2);
    // The outside party's key pair, as PKCS#8.
    let approved = Policy::default()
        .approve(Purpose::Sign, KeySpec::Sm2)
        .unwrap();
    let outside = crypto::generate(&approved).unwrap();
    let pkcs8 = crypto::export_material(&outside).unwrap();
    let spki = crypto::public_key_of(&outside).unwrap();

    // An RSA key offered for an SM2 key: named.
    let rsa_approved = Policy::default()
        .approve(Purpose::Sign, KeySpec::Rsa2048)
        .unwrap();
    let rsa = crypto::export_material(&crypto::generate(&rsa_approved).unwrap()).unwrap();
    let (t, w) = prepared(&f, &key, WrappingSpec::RsaAesKwp, rsa.expose_secret());
    refused(import(&f, &key, &t, &w, None), false, "but key");
    // Raw 32 bytes are not a PKCS#8.
    let (t, w) = prepared(&f, &key, WrappingSpec::Sm2, &[9u8; 32]);
    refused(import(&f, &key, &t, &w, None), false, "not a DER PKCS#8");

    let (t, w) = prepared(&f, &key, WrappingSpec::Sm2, pkcs8.expose_secret());
    let done = import(&f, &key, &t, &w, None).unwrap();
    assert_eq!(
        done.versions[0].public_key_der.as_deref(),
        Some(spki.spki_der())
    );
    assert_eq!(
        done.import.unwrap().fingerprint,
        hex::encode(spki.fingerprint_sm3())
    );
    let sig = f
        .kms
        .sign(
            &f.app,
            &KeyRef::Id(key.id),
            Message::Raw(b"pay 100"),
            &SignatureParams::default(),
        )
        .unwrap();
    let policy = Policy::default();
    let params = policy
        .approve_verify(
            policy
                .approve(Purpose::Sign, KeySpec::Sm2)
                .unwrap()
                .for_open(),
            SignatureParams::default().resolve(KeySpec::Sm2).unwrap(),
        )
        .unwrap();
    assert!(crypto::verify(&params, &spki, Message::Raw(b"pay 100"), &sig.signature).unwrap());
}

#[test]
fn imported_material_expires_and_the_same_material_brings_the_key_back() {
    let f = fixture();
    let key = external(&f, Purpose::Encrypt, KeySpec::Sm4Gcm);
    let r = KeyRef::Id(key.id);
    let material = [3u8; 16];
    let (t, w) = prepared(&f, &key, WrappingSpec::Sm2, &material);
    let at = f.clock.now() + 3600;
    import(&f, &key, &t, &w, Some(at)).unwrap();
    let ct = f.kms.encrypt(&f.app, &r, &ctx(), b"kept").unwrap();
    assert!(f.kms.expire_imports_due().unwrap().is_empty(), "not yet");
    f.clock.advance(3600);
    assert_eq!(f.kms.expire_imports_due().unwrap(), vec![key.id]);
    assert!(f.kms.expire_imports_due().unwrap().is_empty(), "once");
    let expired = f.kms.describe_key(&f.admin, &r).unwrap();
    assert_eq!(expired.state, KeyState::PendingImport);
    assert!(!expired.versions[0].destroyed, "expired, not destroyed");
    assert!(expired.import.as_ref().unwrap().expired_at.is_some());
    assert!(matches!(
        f.kms.decrypt(&f.app, &ctx(), &ct.ciphertext),
        Err(Error::InvalidState { .. })
    ));
    let (t, w) = prepared(&f, &key, WrappingSpec::Sm2, &material);
    import(&f, &key, &t, &w, None).unwrap();
    assert_eq!(
        f.kms
            .decrypt(&f.app, &ctx(), &ct.ciphertext)
            .unwrap()
            .plaintext
            .expose_secret(),
        b"kept"
    );
}

fn exportable(f: &Fixture, external_origin: bool) -> KeyInfo {
    f.kms
        .create_key_with(
            &f.admin,
            CreateKeyRequest {
                namespace: ns("a"),
                purpose: Purpose::Encrypt,
                spec: KeySpec::Sm4Gcm,
                alias: None,
                rotation_period: None,
                description: String::new(),
            },
            KeyOptions {
                external: external_origin,
                exportable: true,
            },
        )
        .unwrap()
}

/// A recipient key pair (the partner system), and its public half.
fn recipient(spec: KeySpec) -> (crate::KeyMaterial, PublicKey) {
    let approved = Policy::default()
        .approve(Purpose::AsymmetricDecrypt, spec)
        .unwrap();
    let key = crypto::generate(&approved).unwrap();
    let public = crypto::public_key_of(&key).unwrap();
    (key, public)
}

fn export(
    f: &Fixture,
    who: &Principal,
    key: &KeyInfo,
    to: &PublicKey,
    spec: WrappingSpec,
) -> Result<crate::ExportOutput, Error> {
    f.kms.export_key(
        who,
        ExportKeyRequest {
            key: KeyRef::Id(key.id),
            version: None,
            recipient: to.clone(),
            wrapping_spec: spec,
        },
    )
}

#[test]
fn exports_are_wrapped_recorded_and_only_of_exportable_keys() {
    let f = fixture();
    let key = exportable(&f, true);
    let material = [0x42u8; 16];
    let (t, w) = prepared(&f, &key, WrappingSpec::Sm2, &material);
    import(&f, &key, &t, &w, None).unwrap();
    for spec in WrappingSpec::ALL {
        let (private, public) = recipient(if spec == WrappingSpec::Sm2 {
            KeySpec::Sm2
        } else {
            KeySpec::Rsa3072
        });
        let out = export(&f, &f.admin, &key, &public, spec).unwrap();
        assert_eq!((out.version, out.spec), (1, KeySpec::Sm4Gcm));
        assert_eq!(out.recipient_sm3, hex::encode(public.fingerprint_sm3()));
        let open = Policy::default()
            .approve(Purpose::AsymmetricDecrypt, private.spec())
            .unwrap()
            .for_open();
        let opened = transport::unwrap(&open, spec, &private, &out.wrapped).unwrap();
        assert_eq!(opened.expose_secret(), material, "{}", spec.name());
    }
    let described = f.kms.describe_key(&f.admin, &KeyRef::Id(key.id)).unwrap();
    assert!(described.exportable);
    assert_eq!(described.exports, 3);
    let inv = f.kms.inventory(&f.auditor).unwrap();
    let listed = inv
        .keys
        .iter()
        .find(|k| k.key_id == key.id.to_string())
        .unwrap();
    assert_eq!(listed.exports.len(), 3);
    assert_eq!(listed.exports[0].by, "admin");
    assert_eq!(listed.exports[2].wrapping_spec, "rsa-aes-kwp");

    // A recipient that does not fit the spec; a key not created exportable; an app.
    let (_, sm2_public) = recipient(KeySpec::Sm2);
    refused(
        export(&f, &f.admin, &key, &sm2_public, WrappingSpec::RsaAesKwp),
        false,
        "cannot receive",
    );
    let plain = external(&f, Purpose::Encrypt, KeySpec::Sm4Gcm);
    refused(
        export(&f, &f.admin, &plain, &sm2_public, WrappingSpec::Sm2),
        true,
        "not exportable",
    );
    assert!(matches!(
        export(&f, &f.app, &key, &sm2_public, WrappingSpec::Sm2),
        Err(Error::PermissionDenied { .. })
    ));
    // A compromised key does not leave.
    f.kms
        .mark_compromised(&f.admin, &KeyRef::Id(key.id))
        .unwrap();
    assert!(matches!(
        export(&f, &f.admin, &key, &sm2_public, WrappingSpec::Sm2),
        Err(Error::InvalidState { op: "export", .. })
    ));
}

#[test]
fn under_dual_control_an_export_is_released_for_exactly_what_was_approved() {
    let store: std::sync::Arc<dyn crate::store::Store> =
        std::sync::Arc::new(crate::store::MemoryStore::new());
    let f = crate::kms::tests::fixture_with(std::sync::Arc::clone(&store), 3, 2);
    let second = f
        .kms
        .add_principal(&f.admin, "admin-2", crate::authz::Role::Admin)
        .unwrap();
    let key = exportable(&f, false);
    // Reopen the same store under a quorum of 2 for exports.
    let config = KmsConfig {
        quorum: Quorum::new(2, &[Sensitive::ExportKey], Quorum::DEFAULT_TTL).unwrap(),
        ..KmsConfig::default()
    };
    let kms = crate::TestKms::with_clock(store, config, f.clock.clone());
    for s in f.shares.iter().take(2) {
        kms.unseal_with(s).unwrap();
    }
    let (_, public) = recipient(KeySpec::Sm2);
    let req = |to: &PublicKey| ExportKeyRequest {
        key: KeyRef::Id(key.id),
        version: None,
        recipient: to.clone(),
        wrapping_spec: WrappingSpec::Sm2,
    };
    let Err(Error::ApprovalPending { id, .. }) = kms.export_key(&f.admin, req(&public)) else {
        panic!("the first export call files a request");
    };
    let approved = kms
        .kms()
        .approve(&authorize(&second).unwrap(), &id, None)
        .unwrap();
    assert_eq!(approved.state, ApprovalState::Approved);
    // Released to the requester, for another recipient: refused, and the release is spent.
    let (_, other) = recipient(KeySpec::Sm2);
    let auth = authorize::<ops::ExportKey>(&f.admin).unwrap();
    let released = kms.kms().release(&auth, &id).unwrap();
    refused(
        kms.kms().export_key(&released, req(&other)),
        true,
        "not this export",
    );
    // A new request, approved, released and used for what it named.
    let Err(Error::ApprovalPending { id, .. }) = kms.export_key(&f.admin, req(&public)) else {
        panic!("a new request");
    };
    kms.kms()
        .approve(&authorize(&second).unwrap(), &id, None)
        .unwrap();
    let released = kms.kms().release(&auth, &id).unwrap();
    let out = kms.kms().export_key(&released, req(&public)).unwrap();
    assert_eq!(out.recipient_sm3, hex::encode(public.fingerprint_sm3()));
}

/// An RSA PKCS#8 re-encoded with another public exponent (the rest unchanged): what a broken or
/// hostile exporter could send. `rsa` refuses to make such keys, so the DER is edited.
fn rsa_pkcs8_with_exponent(pkcs8: &[u8], e: &[u8]) -> Vec<u8> {
    use rsa::pkcs1::der::{Decode, Encode};
    use rsa::pkcs1::{RsaPrivateKey, UintRef};
    let info = rsa::pkcs8::PrivateKeyInfoRef::from_der(pkcs8).unwrap();
    let mut key = RsaPrivateKey::<UintRef<'_>>::from_der(info.private_key.as_bytes()).unwrap();
    key.public_exponent = UintRef::new(e).unwrap();
    let inner = key.to_der().unwrap();
    let edited = rsa::pkcs8::PrivateKeyInfoRef::new(
        info.algorithm,
        rsa::pkcs8::der::asn1::OctetStringRef::new(&inner).unwrap(),
    );
    edited.to_der().unwrap()
}

#[test]
fn hostile_private_keys_are_refused_by_name() {
    let f = fixture();
    let sm2 = external(&f, Purpose::Sign, KeySpec::Sm2);
    let rsa = external(&f, Purpose::Sign, KeySpec::Rsa2048);
    let approved = Policy::default()
        .approve(Purpose::Sign, KeySpec::Sm2)
        .unwrap();
    let good = crypto::export_material(&crypto::generate(&approved).unwrap()).unwrap();
    let good = good.expose_secret().to_vec();

    // SM2 scalars 0 and n (the curve order): the same document with its 32 scalar bytes
    // replaced. The scalar follows `04 20` inside the inner ECPrivateKey.
    let at = good
        .windows(4)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04])
        .map(|i| i + 5)
        .unwrap();
    let n =
        hex::decode("fffffffeffffffffffffffffffffffff7203df6b21c6052b53bbf40939d54123").unwrap();
    for scalar in [vec![0u8; 32], n] {
        let mut bad = good.clone();
        bad[at..at + 32].copy_from_slice(&scalar);
        let (t, w) = prepared(&f, &sm2, WrappingSpec::Sm2, &bad);
        refused(import(&f, &sm2, &t, &w, None), false, "private key");
        assert_eq!(state(&f, &sm2), KeyState::PendingImport);
    }

    // Attributes, and an encrypted PKCS#8.
    let mut with_attributes = good;
    with_attributes.extend_from_slice(&[0xa0, 0x00]);
    with_attributes[2] += 2;
    let (t, w) = prepared(&f, &sm2, WrappingSpec::Sm2, &with_attributes);
    refused(
        import(&f, &sm2, &t, &w, None),
        false,
        "attributes are not accepted",
    );
    let encrypted = hex::decode("3012300906052b0e03021a0500040500010203ff").unwrap();
    let (t, w) = prepared(&f, &sm2, WrappingSpec::Sm2, &encrypted);
    refused(import(&f, &sm2, &t, &w, None), false, "encrypted PKCS#8");

    // RSA: e = 1 and e = 3 refused by name; a 1024-bit key by the policy (ALG-3).
    let rsa_approved = Policy::default()
        .approve(Purpose::Sign, KeySpec::Rsa2048)
        .unwrap();
    let rsa_good = crypto::export_material(&crypto::generate(&rsa_approved).unwrap()).unwrap();
    for e in [[0x01u8].as_slice(), [0x03].as_slice()] {
        let bad = rsa_pkcs8_with_exponent(rsa_good.expose_secret(), e);
        let (t, w) = prepared(&f, &rsa, WrappingSpec::RsaAesKwp, &bad);
        refused(import(&f, &rsa, &t, &w, None), false, "public exponent");
    }
    let small = {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::PrivateKey::new(&mut crypto::rng::SysRng, 1024).unwrap();
        key.to_pkcs8_der().unwrap().as_bytes().to_vec()
    };
    let (t, w) = prepared(&f, &rsa, WrappingSpec::RsaAesKwp, &small);
    let e = import(&f, &rsa, &t, &w, None).unwrap_err();
    assert!(
        matches!(e, Error::Policy(_)) && e.to_string().contains("1024 bits"),
        "{e:?}"
    );
    assert_eq!(state(&f, &rsa), KeyState::PendingImport);
    // And the good one still goes in with a token that every refusal left unused.
    let (t, w) = prepared(&f, &rsa, WrappingSpec::RsaAesKwp, rsa_good.expose_secret());
    assert_eq!(
        import(&f, &rsa, &t, &w, None).unwrap().state,
        KeyState::Enabled
    );
}

#[test]
fn the_inventory_shows_origin_material_and_exports_and_edits_to_them_fail() {
    let f = fixture();
    let key = exportable(&f, true);
    let (t, w) = prepared(&f, &key, WrappingSpec::Sm2, &[0x24u8; 16]);
    let at = f.clock.now() + 30 * crate::clock::DAY;
    import(&f, &key, &t, &w, Some(at)).unwrap();
    let (_, public) = recipient(KeySpec::Sm2);
    export(&f, &f.admin, &key, &public, WrappingSpec::Sm2).unwrap();
    let inv = f.kms.inventory(&f.auditor).unwrap();
    let entry = inv
        .keys
        .iter()
        .find(|k| k.key_id == key.id.to_string())
        .unwrap();
    assert_eq!(entry.origin, Origin::Imported);
    assert!(entry.exportable);
    assert_eq!(entry.import.as_ref().unwrap().expires_at, Some(at));
    assert_eq!(entry.exports.len(), 1);
    let text = serde_json::to_string_pretty(&inv).unwrap();
    let audit_public = f.kms.audit_public_key().unwrap().public_key;
    crate::verify_inventory(&text, &audit_public).unwrap();
    let fp = &entry.import.as_ref().unwrap().fingerprint;
    let recipient_sm3 = &entry.exports[0].recipient_sm3;
    for (from, to) in [
        ("\"imported\"", "\"generated\""),
        ("\"exportable\": true", "\"exportable\": false"),
        (fp.as_str(), &"0".repeat(64)),
        (recipient_sm3.as_str(), &"1".repeat(64)),
        (
            "\"wrapping_spec\": \"sm2\"",
            "\"wrapping_spec\": \"rsa-aes-kwp\"",
        ),
    ] {
        let edited = text.replacen(from, to, 1);
        assert_ne!(edited, text, "{from}");
        assert!(
            matches!(
                crate::verify_inventory(&edited, &audit_public),
                Err(crate::InventoryError::BadSignature)
            ),
            "{from}"
        );
    }
    // Removing the export event altogether fails too.
    let start = text.find("\"exports\"").unwrap();
    let end = start + text[start..].find(']').unwrap() + 1;
    let without = format!("{}\"exports\": []{}", &text[..start], &text[end..]);
    assert!(crate::verify_inventory(&without, &audit_public).is_err());
}
