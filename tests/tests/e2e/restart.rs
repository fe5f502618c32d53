//! Restart: stop the server (its shutdown future), start a new one on the same sled directory.
//! Keys, aliases, grants and principals survive; the new server comes back sealed — UNAVAILABLE
//! for anything that needs a key — and works after the administrators unseal it again.

use kms_proto::v1::{self, Purpose};
use kms_tests::pki::subjects::{self, APP_NS, OTHER_APP_NS};
use kms_tests::world::{THRESHOLD, World};
use tonic::Code;

use crate::common::{
    SECRET, SigOpts, ctx, dec, enc, expect_err, has_request_id, key_req, mac_req, sign_req,
    verify_mac_req, verify_req,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_survive_a_restart_and_the_server_comes_back_sealed() {
    let w = World::start().await;
    let enc_key = w
        .create_key_with_alias(APP_NS, Purpose::Encrypt, "sm4-gcm", "durable")
        .await
        .key_id;
    let sign = w.create_key(APP_NS, Purpose::Sign, "sm2").await.key_id;
    let mac = w
        .create_key(APP_NS, Purpose::Mac, "hmac-sha256")
        .await
        .key_id;
    w.admin
        .keys
        .clone()
        .create_grant(v1::CreateGrantRequest {
            key: enc_key.clone(),
            grantee_namespace: OTHER_APP_NS.to_owned(),
            operations: vec!["decrypt".to_owned()],
        })
        .await
        .unwrap();
    let rotated = w
        .admin_key_op(kms_tests::world::KeyOp::Rotate, &enc_key)
        .await;
    assert_eq!(rotated.current_version, 2);
    let mut c = w.app.crypto.clone();
    let context = ctx(&[("k", "v")]);
    let ct = c
        .encrypt(enc("durable", SECRET, &context))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let sig = c
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
    let keys_before = w
        .admin
        .keys
        .clone()
        .list_keys(v1::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    drop(c);

    let w = w.restart().await;

    // Sealed: status says so, and nothing that needs a key works.
    let s = w
        .admin
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(s.initialized && s.sealed, "{s:?}");
    assert_eq!((s.shares, s.threshold), (3, THRESHOLD));
    let mut c = w.app.crypto.clone();
    let sealed = |r: tonic::Status| {
        crate::common::assert_no_secret(&r);
        assert_eq!(r.code(), Code::Unavailable, "{r:?}");
        assert!(r.message().contains("sealed"), "{r:?}");
        assert!(has_request_id(&r), "{r:?}");
    };
    sealed(
        c.encrypt(enc("durable", SECRET, &context))
            .await
            .unwrap_err(),
    );
    sealed(c.decrypt(dec(&ct, &context)).await.unwrap_err());
    sealed(
        c.sign(sign_req(&sign, SECRET, SigOpts::default()))
            .await
            .unwrap_err(),
    );
    sealed(
        c.generate_random(v1::GenerateRandomRequest { length: 8 })
            .await
            .unwrap_err(),
    );
    sealed(
        w.admin
            .keys
            .clone()
            .list_keys(v1::ListKeysRequest::default())
            .await
            .unwrap_err(),
    );
    // Only share holders unseal, one share per call, each their own.
    let r = w
        .app
        .system
        .clone()
        .unseal(v1::UnsealRequest {
            share: w.shares[0].clone(),
        })
        .await;
    expect_err(r, Code::PermissionDenied, subjects::APP);
    let mut sys = w.admin.system.clone();
    let first = sys
        .unseal(v1::UnsealRequest {
            share: w.shares[0].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.sealed);
    assert_eq!((first.progress, first.threshold), (1, THRESHOLD));
    // The same share twice does not count twice.
    let again = sys
        .unseal(v1::UnsealRequest {
            share: w.shares[0].clone(),
        })
        .await;
    expect_err(again, Code::InvalidArgument, "already");
    // A mistyped share is refused without hinting at the right one.
    let mut custodian = w.custodian.system.clone();
    let mut typo = w.shares[1].clone().into_bytes();
    let i = typo.len() / 2;
    typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
    let r = custodian
        .unseal(v1::UnsealRequest {
            share: String::from_utf8(typo).unwrap(),
        })
        .await;
    let s = expect_err(r, Code::InvalidArgument, "share");
    assert!(!s.message().contains(&w.shares[1]), "{s:?}");
    let done = custodian
        .unseal(v1::UnsealRequest {
            share: w.shares[1].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!done.sealed, "{done:?}");

    // Everything is back: keys, versions, aliases, grants, principals.
    let keys_after = w
        .admin
        .keys
        .clone()
        .list_keys(v1::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys_after, keys_before);
    let d = c.decrypt(dec(&ct, &context)).await.unwrap().into_inner();
    assert_eq!((d.plaintext.as_slice(), d.key_version), (SECRET, 2));
    let fresh = c
        .encrypt(enc("durable", SECRET, &context))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (fresh.key_id.as_str(), fresh.key_version),
        (enc_key.as_str(), 2)
    );
    let v = c
        .verify(verify_req(&sign, SECRET, &sig, SigOpts::default(), None))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    let v = c
        .verify_mac(verify_mac_req(&mac, SECRET, &tag, None))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    let granted = w
        .other_app
        .crypto
        .clone()
        .decrypt(dec(&ct, &context))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.plaintext, SECRET);
    let me = w
        .auditor
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (me.caller_subject.as_str(), me.caller_role.as_str()),
        (subjects::AUDITOR, "auditor")
    );
    let d = w
        .auditor
        .keys
        .clone()
        .describe_key(key_req(&enc_key))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(d.aliases, ["durable"]);

    // Sealing by hand has the same effect, and unsealing undoes it.
    w.admin
        .system
        .clone()
        .seal(v1::SealRequest {})
        .await
        .unwrap();
    sealed(c.decrypt(dec(&ct, &context)).await.unwrap_err());
    w.unseal().await;
    c.decrypt(dec(&ct, &context)).await.unwrap();
    w.stop().await;
}
