//! Key states and rotation as the data plane sees them (KEY-7, KEY-8): a disabled key does
//! nothing until enabled; a compromised key opens old data (flagged) but protects nothing new,
//! for good; a key pending destruction does nothing, and cancelling returns it disabled; rotation
//! keeps every old version working while new work uses the newest.

use kms_core::crypto::{PublicKey, encrypt_to_public_key};
use kms_core::policy::Policy;
use kms_proto::v1::{self, KeyState, Purpose};
use kms_tests::pki::subjects::APP_NS;
use kms_tests::world::{KeyOp, World};
use tonic::Code;

use crate::common::{
    SECRET, SigOpts, asym_req, ctx, data_key_req, dec, enc, expect_err, has_request_id, key_req,
    mac_req, public_key_req, sign_req, verify_mac_req, verify_req,
};

/// One key of each kind in the app's namespace, with something made by each while enabled.
struct Keys {
    enc: String,
    other_enc: String,
    sign: String,
    mac: String,
    asym: String,
    ciphertext: Vec<u8>,
    signature: Vec<u8>,
    tag: Vec<u8>,
    /// Made with `asym`'s public key.
    asym_ciphertext: Vec<u8>,
}

impl Keys {
    async fn new(w: &World) -> Self {
        let enc_key = w
            .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
            .await
            .key_id;
        let other_enc = w
            .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
            .await
            .key_id;
        let sign = w.create_key(APP_NS, Purpose::Sign, "sm2").await.key_id;
        let mac = w.create_key(APP_NS, Purpose::Mac, "hmac-sm3").await.key_id;
        let asym = w
            .create_key(APP_NS, Purpose::AsymmetricDecrypt, "sm2")
            .await;
        let asym_ciphertext = encrypt_to_public_key(
            &Policy::default()
                .approve(
                    kms_core::alg::Purpose::AsymmetricDecrypt,
                    PublicKey::from_spki_der(Policy::default(), &asym.versions[0].public_key_der)
                        .unwrap()
                        .spec(),
                )
                .unwrap(),
            &PublicKey::from_spki_der(Policy::default(), &asym.versions[0].public_key_der).unwrap(),
            SECRET,
        )
        .unwrap();
        let mut c = w.app.crypto.clone();
        let ciphertext = c
            .encrypt(enc(&enc_key, SECRET, &ctx(&[])))
            .await
            .unwrap()
            .into_inner()
            .ciphertext;
        let signature = c
            .sign(sign_req(&sign, SECRET, SigOpts::default()))
            .await
            .unwrap()
            .into_inner()
            .signature;
        let tag = c
            .generate_mac(mac_req(&mac, SECRET))
            .await
            .unwrap()
            .into_inner()
            .mac;
        Self {
            enc: enc_key,
            other_enc,
            sign,
            mac,
            asym: asym.key_id,
            ciphertext,
            signature,
            tag,
            asym_ciphertext,
        }
    }

    async fn state(&self, w: &World, key: &str) -> KeyState {
        let m = w
            .auditor
            .keys
            .clone()
            .describe_key(key_req(key))
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        m.state()
    }

    async fn all(&self, w: &World, op: KeyOp) {
        for k in [&self.enc, &self.sign, &self.mac, &self.asym] {
            w.admin_key_op(op, k).await;
        }
    }
}

fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) {
    expect_err(r, Code::FailedPrecondition, "COMPROMISED");
}

/// Every use of every key fails with FAILED_PRECONDITION naming the state.
async fn nothing_works(w: &World, k: &Keys, state: &str) {
    let mut c = w.app.crypto.clone();
    let fp = |r: tonic::Status| {
        crate::common::assert_no_secret(&r);
        assert_eq!(r.code(), Code::FailedPrecondition, "{r:?}");
        assert!(r.message().contains(state), "{r:?} does not name {state}");
        assert!(has_request_id(&r), "{r:?}");
    };
    fp(c.encrypt(enc(&k.enc, SECRET, &ctx(&[]))).await.unwrap_err());
    fp(c.decrypt(dec(&k.ciphertext, &ctx(&[]))).await.unwrap_err());
    fp(c.generate_data_key(data_key_req(&k.enc, "sm4", &ctx(&[])))
        .await
        .unwrap_err());
    fp(
        c.generate_data_key_without_plaintext(data_key_req(&k.enc, "sm4", &ctx(&[])))
            .await
            .unwrap_err(),
    );
    fp(c.re_encrypt(v1::ReEncryptRequest {
        ciphertext: k.ciphertext.clone(),
        destination_key: k.other_enc.clone(),
        ..Default::default()
    })
    .await
    .unwrap_err());
    fp(c.sign(sign_req(&k.sign, SECRET, SigOpts::default()))
        .await
        .unwrap_err());
    fp(c.verify(verify_req(
        &k.sign,
        SECRET,
        &k.signature,
        SigOpts::default(),
        None,
    ))
    .await
    .unwrap_err());
    fp(c.generate_mac(mac_req(&k.mac, SECRET)).await.unwrap_err());
    fp(c.verify_mac(verify_mac_req(&k.mac, SECRET, &k.tag, None))
        .await
        .unwrap_err());
    fp(
        c.asymmetric_decrypt(asym_req(&k.asym, &k.asym_ciphertext, None))
            .await
            .unwrap_err(),
    );
}

/// Every use of every key works.
async fn everything_works(w: &World, k: &Keys) {
    let mut c = w.app.crypto.clone();
    c.encrypt(enc(&k.enc, SECRET, &ctx(&[]))).await.unwrap();
    let d = c
        .decrypt(dec(&k.ciphertext, &ctx(&[])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, SECRET);
    assert!(!d.key_compromised);
    let d = c
        .asymmetric_decrypt(asym_req(&k.asym, &k.asym_ciphertext, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, SECRET);
    assert!(!d.key_compromised);
    c.generate_data_key(data_key_req(&k.enc, "sm4", &ctx(&[])))
        .await
        .unwrap();
    c.sign(sign_req(&k.sign, SECRET, SigOpts::default()))
        .await
        .unwrap();
    let v = c
        .verify(verify_req(
            &k.sign,
            SECRET,
            &k.signature,
            SigOpts::default(),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid && !v.key_compromised);
    c.generate_mac(mac_req(&k.mac, SECRET)).await.unwrap();
    assert!(
        c.verify_mac(verify_mac_req(&k.mac, SECRET, &k.tag, None))
            .await
            .unwrap()
            .into_inner()
            .valid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disabled_keys_do_nothing_until_enabled() {
    let w = World::start().await;
    let k = Keys::new(&w).await;
    k.all(&w, KeyOp::Disable).await;
    assert_eq!(k.state(&w, &k.enc).await, KeyState::Disabled);
    nothing_works(&w, &k, "DISABLED").await;
    // The public half of a disabled key is still public.
    w.app
        .crypto
        .clone()
        .get_public_key(public_key_req(&k.sign, None))
        .await
        .unwrap();
    k.all(&w, KeyOp::Enable).await;
    assert_eq!(k.state(&w, &k.enc).await, KeyState::Enabled);
    everything_works(&w, &k).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compromised_keys_open_old_data_flagged_and_protect_nothing_new() {
    let w = World::start().await;
    let k = Keys::new(&w).await;
    k.all(&w, KeyOp::Compromise).await;
    let meta = w
        .admin
        .keys
        .clone()
        .describe_key(key_req(&k.enc))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(meta.state(), KeyState::Compromised);
    assert!(meta.compromised_at.is_some());

    let mut c = w.app.crypto.clone();
    refused(c.encrypt(enc(&k.enc, SECRET, &ctx(&[]))).await);
    refused(
        c.generate_data_key(data_key_req(&k.enc, "sm4", &ctx(&[])))
            .await,
    );
    refused(c.sign(sign_req(&k.sign, SECRET, SigOpts::default())).await);
    refused(c.generate_mac(mac_req(&k.mac, SECRET)).await);
    // Re-encrypting under the compromised key itself is new protection: refused.
    refused(
        c.re_encrypt(v1::ReEncryptRequest {
            ciphertext: k.ciphertext.clone(),
            ..Default::default()
        })
        .await,
    );

    // Old data still opens, flagged so the caller re-protects it.
    let d = c
        .decrypt(dec(&k.ciphertext, &ctx(&[])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, SECRET);
    assert!(d.key_compromised);
    let v = c
        .verify(verify_req(
            &k.sign,
            SECRET,
            &k.signature,
            SigOpts::default(),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid && v.key_compromised);
    let v = c
        .verify_mac(verify_mac_req(&k.mac, SECRET, &k.tag, None))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    let d = c
        .asymmetric_decrypt(asym_req(&k.asym, &k.asym_ciphertext, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, SECRET);
    assert!(d.key_compromised);
    // … and moves to a healthy key.
    let moved = c
        .re_encrypt(v1::ReEncryptRequest {
            ciphertext: k.ciphertext.clone(),
            destination_key: k.other_enc.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.key_id, k.other_enc);
    let d = c
        .decrypt(dec(&moved.ciphertext, &ctx(&[])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, SECRET);
    assert!(!d.key_compromised);

    // One way: it cannot be enabled again, nor rotated.
    let mut keys = w.admin.keys.clone();
    expect_err(
        keys.enable_key(key_req(&k.enc)).await,
        Code::FailedPrecondition,
        "COMPROMISED",
    );
    expect_err(
        keys.rotate_key(key_req(&k.enc)).await,
        Code::FailedPrecondition,
        "COMPROMISED",
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_pending_destruction_do_nothing_and_cancelling_returns_them_disabled() {
    let w = World::start().await;
    let k = Keys::new(&w).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    k.all(&w, KeyOp::ScheduleDestruction).await;
    let meta = w
        .auditor
        .keys
        .clone()
        .describe_key(key_req(&k.enc))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(meta.state(), KeyState::PendingDestruction);
    let destroy_at = meta.destroy_at.unwrap();
    assert!(
        (before + 7 * 86_400..=before + 7 * 86_400 + 120).contains(&destroy_at),
        "destroy_at {destroy_at} is not 7 days from now"
    );
    nothing_works(&w, &k, "PENDING_DESTRUCTION").await;
    // The waiting period has bounds.
    let other = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    for days in [1, 6, 91] {
        let r = w
            .admin
            .keys
            .clone()
            .schedule_key_destruction(v1::ScheduleKeyDestructionRequest {
                key: other.clone(),
                pending_days: days,
            })
            .await;
        expect_err(r, Code::InvalidArgument, "7");
    }

    k.all(&w, KeyOp::CancelDestruction).await;
    assert_eq!(k.state(&w, &k.enc).await, KeyState::Disabled);
    nothing_works(&w, &k, "DISABLED").await;
    k.all(&w, KeyOp::Enable).await;
    everything_works(&w, &k).await;

    // A compromised key that is scheduled and cancelled stays compromised.
    w.admin_key_op(KeyOp::Compromise, &k.enc).await;
    w.admin_key_op(KeyOp::ScheduleDestruction, &k.enc).await;
    let m = w.admin_key_op(KeyOp::CancelDestruction, &k.enc).await;
    assert_eq!(m.state(), KeyState::Compromised);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_keeps_old_versions_working_and_new_work_uses_the_newest() {
    let w = World::start().await;
    let k = Keys::new(&w).await;
    let asym = w
        .create_key(APP_NS, Purpose::AsymmetricDecrypt, "sm2")
        .await;
    let v1_public = asym.versions[0].public_key_der.clone();
    let asym_ct = encrypt_to_public_key(
        &Policy::default()
            .approve(
                kms_core::alg::Purpose::AsymmetricDecrypt,
                PublicKey::from_spki_der(Policy::default(), &v1_public)
                    .unwrap()
                    .spec(),
            )
            .unwrap(),
        &PublicKey::from_spki_der(Policy::default(), &v1_public).unwrap(),
        SECRET,
    )
    .unwrap();
    let mut c = w.app.crypto.clone();
    let context = ctx(&[("purpose", "rotation")]);
    let old_ct = c
        .encrypt(enc(&k.enc, SECRET, &context))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;

    for key in [&k.enc, &k.sign, &k.mac, &asym.key_id] {
        let m = w.admin_key_op(KeyOp::Rotate, key).await;
        assert_eq!(m.current_version, 2);
        assert_eq!(m.versions.len(), 2);
        assert!(m.last_rotated_at.is_some());
    }

    // Encryption: new work under v2, old blobs still open with v1, ReEncrypt moves them up.
    let new = c
        .encrypt(enc(&k.enc, SECRET, &context))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(new.key_version, 2);
    for (ct, version) in [(&old_ct, 1), (&k.ciphertext, 1), (&new.ciphertext, 2)] {
        let cx = if version == 1 && ct == &k.ciphertext {
            ctx(&[])
        } else {
            context.clone()
        };
        let d = c.decrypt(dec(ct, &cx)).await.unwrap().into_inner();
        assert_eq!(d.plaintext, SECRET);
        assert_eq!(d.key_version, version);
    }
    let up = c
        .re_encrypt(v1::ReEncryptRequest {
            ciphertext: old_ct.clone(),
            source_context: context.clone(),
            destination_key: String::new(),
            destination_context: context.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((up.key_id.as_str(), up.key_version), (k.enc.as_str(), 2));
    let dk = c
        .generate_data_key(data_key_req(&k.enc, "sm4", &context))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dk.key_version, 2);

    // Signatures: the old one verifies with v1 (tried newest first), not when v2 is named.
    let v = c
        .verify(verify_req(
            &k.sign,
            SECRET,
            &k.signature,
            SigOpts::default(),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    assert_eq!(v.key_version, 1);
    let v = c
        .verify(verify_req(
            &k.sign,
            SECRET,
            &k.signature,
            SigOpts::default(),
            Some(2),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!v.valid);
    let s2 = c
        .sign(sign_req(&k.sign, SECRET, SigOpts::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s2.key_version, 2);
    let v = c
        .verify(verify_req(
            &k.sign,
            SECRET,
            &s2.signature,
            SigOpts::default(),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v.valid, v.key_version), (true, 2));
    // Public keys: newest by default, v1 on request.
    let p2 = c
        .get_public_key(public_key_req(&asym.key_id, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.key_version, 2);
    assert_ne!(p2.public_key_der, v1_public);
    let p1 = c
        .get_public_key(public_key_req(&asym.key_id, Some(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.public_key_der, v1_public);
    let missing = c
        .get_public_key(public_key_req(&asym.key_id, Some(9)))
        .await;
    expect_err(missing, Code::NotFound, "version");
    // Asymmetric decryption of something made for v1.
    let d = c
        .asymmetric_decrypt(asym_req(&asym.key_id, &asym_ct, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((d.plaintext.as_slice(), d.key_version), (SECRET, 1));

    // MACs: the old tag verifies with v1; new tags come from v2.
    let v = c
        .verify_mac(verify_mac_req(&k.mac, SECRET, &k.tag, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v.valid, v.key_version), (true, 1));
    let t2 = c
        .generate_mac(mac_req(&k.mac, SECRET))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t2.key_version, 2);
    assert_ne!(t2.mac, k.tag);

    // A rotation policy: at least a day.
    let mut keys = w.admin.keys.clone();
    let r = keys
        .set_rotation_policy(v1::SetRotationPolicyRequest {
            key: k.enc.clone(),
            rotation_period_seconds: Some(3600),
        })
        .await;
    expect_err(r, Code::InvalidArgument, "day");
    let m = keys
        .set_rotation_policy(v1::SetRotationPolicyRequest {
            key: k.enc.clone(),
            rotation_period_seconds: Some(90 * 86_400),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(m.rotation_period_seconds, Some(90 * 86_400));
    assert!(m.next_rotation_at.is_some());
    w.stop().await;
}
