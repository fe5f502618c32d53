//! Bootstrap and unseal, M-of-N for real (issue 18 item 1): init only from a bootstrap
//! identity or with the one-time init token; shares issued to named holders (encrypted to their
//! keys, which OpenSSL opens); unseal counting distinct holders, refusing a share from anyone
//! but its holder, keeping the others' progress when a bad share comes in, and refusing an
//! unseal of an unsealed KMS.

use kms_core::crypto::digest;
use kms_core::policy::ApprovedDigest;
use kms_proto::v1;
use kms_server::Settings;
use kms_server::bootstrap::Bootstrap;
use kms_tests::pki::{Pki, subjects};
use kms_tests::server::TestServer;
use kms_tests::world::{Clients, World, holders};
use tonic::Code;

use crate::common::{expect_err, has_request_id, openssl_ok};

fn unseal_req(share: &str) -> v1::UnsealRequest {
    v1::UnsealRequest {
        share: share.to_owned(),
    }
}

async fn progress(c: &Clients) -> (bool, u32) {
    let s = c
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    (s.sealed, s.unseal_progress)
}

async fn seal(w: &World) {
    w.admin
        .system
        .clone()
        .seal(v1::SealRequest {})
        .await
        .unwrap();
}

/// A certificate from the CA that is neither a bootstrap identity nor holding the init token
/// cannot initialise (nor restore); with the token it can, once; the token file is then gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_needs_a_bootstrap_identity_or_the_init_token() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let token_dir = tempfile::tempdir().unwrap();
    let bootstrap = Bootstrap::admins(vec!["kms://nobody-here".into()])
        .with_new_token(token_dir.path())
        .unwrap();
    let token_file = bootstrap.token_file().unwrap().to_owned();
    let settings = Settings {
        bootstrap,
        ..Settings::default()
    };
    let server = TestServer::start(&pki, dir.path(), settings).await;
    let stranger = Clients::connect(&server, &pki, &pki.stranger).await;
    let s = stranger
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!s.initialized && s.sealed);

    let init = |token: &str| v1::InitRequest {
        shares: 1,
        threshold: 1,
        admin_subject: subjects::ADMIN.to_owned(),
        init_token: token.to_owned(),
        ..v1::InitRequest::default()
    };
    for token in ["", "0000", "not the token"] {
        let r = stranger.system.clone().init(init(token)).await;
        let s = expect_err(r, Code::PermissionDenied, "may not initialise the KMS");
        assert!(s.message().contains(subjects::STRANGER), "{s:?}");
        assert!(has_request_id(&s), "{s:?}");
    }
    let restore = v1::RestoreChunk {
        data: b"not a backup".to_vec(),
        ..v1::RestoreChunk::default()
    };
    let r = stranger
        .system
        .clone()
        .restore(tokio_stream::iter(vec![restore]))
        .await;
    expect_err(r, Code::PermissionDenied, "may not restore into the KMS");
    assert!(
        token_file.exists(),
        "a refused init leaves the token unspent"
    );

    let token = std::fs::read_to_string(&token_file).unwrap();
    let out = stranger
        .system
        .clone()
        .init(init(token.trim()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.admin_subject, subjects::ADMIN);
    assert_eq!(out.shares.len(), 1);
    assert!(!token_file.exists(), "a spent token's file is removed");
    let again = stranger.system.clone().init(init(token.trim())).await;
    expect_err(again, Code::AlreadyExists, "already initialised");
    let r = stranger.system.clone().status(v1::StatusRequest {}).await;
    expect_err(r, Code::PermissionDenied, "not a registered principal");
    drop(stranger);
    server.stop().await.unwrap();
}

/// The admin holds three shares' worth of access to the API but one share: giving a second
/// share (anyone's) does not advance the unseal, and a share issued to another holder is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_holder_giving_every_share_does_not_unseal() {
    let w = World::start().await;
    seal(&w).await;
    let admin = w.admin.system.clone();
    let r = admin
        .clone()
        .unseal(unseal_req(&w.shares[0]))
        .await
        .unwrap()
        .into_inner();
    assert!(r.sealed);
    assert_eq!(r.progress, 1);
    for other in [&w.shares[1], &w.shares[2]] {
        let r = admin.clone().unseal(unseal_req(other)).await;
        expect_err(r, Code::FailedPrecondition, "already given a share");
        assert_eq!(progress(&w.admin).await, (true, 1));
    }
    // The custodian may not give the third holder's share either.
    let r = w
        .custodian
        .system
        .clone()
        .unseal(unseal_req(&w.shares[2]))
        .await;
    expect_err(r, Code::PermissionDenied, "issued to another holder");
    assert_eq!(progress(&w.admin).await, (true, 1));
    // Its own share completes the unseal.
    let r = w
        .custodian
        .system
        .clone()
        .unseal(unseal_req(&w.shares[1]))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.sealed);
    // Custodians hold a share and nothing else.
    let r = w
        .custodian
        .keys
        .clone()
        .list_keys(v1::ListKeysRequest::default())
        .await;
    expect_err(r, Code::PermissionDenied, "custodian");
    let r = w.custodian.system.clone().seal(v1::SealRequest {}).await;
    expect_err(r, Code::PermissionDenied, "custodian");
}

/// A share with a good checksum but not one of the issued shares, a share of another KMS and a
/// mistyped share are each refused, and the share already given stays counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_share_does_not_reset_other_holders_progress() {
    let w = World::start().await;
    let other = World::start().await;
    seal(&w).await;
    w.admin
        .system
        .clone()
        .unseal(unseal_req(&w.shares[0]))
        .await
        .unwrap();
    let custodian = w.custodian.system.clone();

    // The custodian's share with its secret part changed and its checksum made good again: it
    // passes the parser, and only the commitment stored at init tells it is not the one issued.
    let hex_body = w.shares[1].strip_prefix("kms-share-1-").unwrap();
    let mut body = hex::decode(hex_body).unwrap();
    let sum_at = body.len() - 8;
    body[12] ^= 0x01;
    let sum = digest(ApprovedDigest::SM3, &body[..sum_at]);
    body[sum_at..].copy_from_slice(&sum[..8]);
    let forged = format!("kms-share-1-{}", hex::encode(&body));

    let mut typo = w.shares[1].clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'0' { b'1' } else { b'0' };
    let typo = String::from_utf8(typo).unwrap();

    for (bad, needle) in [
        (forged.as_str(), "malformed"),
        (other.shares[1].as_str(), "different KMS initialization"),
        (typo.as_str(), "malformed"),
    ] {
        let r = custodian.clone().unseal(unseal_req(bad)).await;
        let s = expect_err(r, Code::InvalidArgument, needle);
        assert!(!s.message().contains(bad), "the share is echoed: {s:?}");
        assert_eq!(progress(&w.admin).await, (true, 1), "after {needle}");
    }
    let r = custodian
        .clone()
        .unseal(unseal_req(&w.shares[1]))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.sealed, "the admin's share still counted");
}

/// Unsealing an unsealed KMS is refused, not a silent success.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unseal_while_unsealed_is_failed_precondition() {
    let w = World::start().await;
    let r = w
        .admin
        .system
        .clone()
        .unseal(unseal_req(&w.shares[0]))
        .await;
    let s = expect_err(r, Code::FailedPrecondition, "already unsealed");
    assert!(has_request_id(&s), "{s:?}");
}

/// Shares issued to holders with public keys come back encrypted only (SM2 and RSA-OAEP), and
/// OpenSSL, holding the private keys, opens them into shares that unseal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shares_encrypted_to_holders_open_with_openssl_and_unseal() {
    let keys = tempfile::tempdir().unwrap();
    let path = |name: &str| keys.path().join(name).to_str().unwrap().to_owned();
    openssl_ok(&["genpkey", "-algorithm", "SM2", "-out", &path("sm2.key")]);
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:3072",
        "-out",
        &path("rsa.key"),
    ]);
    let public =
        |key: &str| String::from_utf8(openssl_ok(&["pkey", "-in", &path(key), "-pubout"])).unwrap();
    let mut named = holders();
    named[0].public_key_pem = public("sm2.key");
    named[1].public_key_pem = public("rsa.key");

    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&pki, dir.path(), Settings::default()).await;
    let admin = Clients::connect(&server, &pki, &pki.admin).await;
    let custodian = Clients::connect(&server, &pki, &pki.custodian).await;
    let init = admin
        .system
        .clone()
        .init(v1::InitRequest {
            threshold: 2,
            holders: named,
            ..v1::InitRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(init.shares.is_empty(), "no unbound plaintext shares");
    let holders_seen: Vec<&str> = init.issued.iter().map(|s| s.holder.as_str()).collect();
    assert_eq!(
        holders_seen,
        [subjects::ADMIN, subjects::CUSTODIAN, subjects::CUSTODIAN_2]
    );
    let (sm2, rsa, plain) = (&init.issued[0], &init.issued[1], &init.issued[2]);
    assert_eq!((sm2.encryption.as_str(), sm2.share.as_str()), ("sm2", ""));
    assert_eq!(
        (rsa.encryption.as_str(), rsa.share.as_str()),
        ("rsa-oaep-sha256", "")
    );
    assert!(plain.encrypted_share.is_empty() && plain.share.starts_with("kms-share-1-"));
    assert_eq!(sm2.recipient_sm3.len(), 64);

    std::fs::write(path("sm2.ct"), &sm2.encrypted_share).unwrap();
    std::fs::write(path("rsa.ct"), &rsa.encrypted_share).unwrap();
    let sm2_share = openssl_ok(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        &path("sm2.key"),
        "-in",
        &path("sm2.ct"),
    ]);
    let rsa_share = openssl_ok(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        &path("rsa.key"),
        "-in",
        &path("rsa.ct"),
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
    ]);
    let sm2_share = String::from_utf8(sm2_share).unwrap();
    let rsa_share = String::from_utf8(rsa_share).unwrap();
    assert!(sm2_share.starts_with("kms-share-1-") && rsa_share.starts_with("kms-share-1-"));

    let r = admin
        .system
        .clone()
        .unseal(unseal_req(&sm2_share))
        .await
        .unwrap()
        .into_inner();
    assert!(r.sealed);
    let r = custodian
        .system
        .clone()
        .unseal(unseal_req(&rsa_share))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.sealed);
    // The custodian was registered at init, as a custodian.
    let s = custodian
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.caller_role, "custodian");
    drop((admin, custodian));
    server.stop().await.unwrap();
}

/// A holder named twice, or a threshold above the holders, is refused before anything is made;
/// so is a holder key the policy forbids (RSA-1024).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_refuses_holders_named_twice_and_weak_holder_keys() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("rsa1024.key").to_str().unwrap().to_owned();
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        &key,
    ]);
    let weak = String::from_utf8(openssl_ok(&["pkey", "-in", &key, "-pubout"])).unwrap();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&pki, dir.path(), Settings::default()).await;
    let admin = Clients::connect(&server, &pki, &pki.admin).await;
    let mut twice = holders();
    twice[2].subject = subjects::CUSTODIAN.to_owned();
    let mut weak_key = holders();
    weak_key[1].public_key_pem = weak;
    for (named, threshold, needle) in [
        (twice, 2, "named twice"),
        (holders(), 4, "threshold"),
        (weak_key, 2, "2048"),
    ] {
        let r = admin
            .system
            .clone()
            .init(v1::InitRequest {
                threshold,
                holders: named,
                ..v1::InitRequest::default()
            })
            .await;
        expect_err(r, Code::InvalidArgument, needle);
    }
    let s = admin
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!s.initialized, "a refused init leaves the store empty");
    drop(admin);
    server.stop().await.unwrap();
}

/// A backup of a 2-of-3 KMS restores only as its holders say: one caller giving the shares in
/// the restore is refused; restored without shares it is staged, and then each holder gives
/// their own share (the admin's second share and the custodian giving the admin's are refused);
/// the last share writes it and unseals, and the keys work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restores_only_by_its_holders_shares() {
    let w = World::start().await;
    let key = w
        .create_key("payments", v1::Purpose::Encrypt, "sm4-gcm")
        .await;
    let ct = w
        .app
        .crypto
        .clone()
        .encrypt(v1::EncryptRequest {
            key: key.key_id.clone(),
            plaintext: b"kept across a restore".to_vec(),
            ..v1::EncryptRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let mut stream = w
        .admin
        .system
        .clone()
        .backup(v1::BackupRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut backup = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        backup.extend_from_slice(&chunk.data);
    }

    // A blank server, with the same PKI (the holders are the same people).
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&w.pki, dir.path(), Settings::default()).await;
    let admin = Clients::connect(&server, &w.pki, &w.pki.admin).await;
    let custodian = Clients::connect(&server, &w.pki, &w.pki.custodian).await;
    let restore = |shares: Vec<String>| {
        let chunk = v1::RestoreChunk {
            shares,
            data: backup.clone(),
            ..v1::RestoreChunk::default()
        };
        let mut system = admin.system.clone();
        async move { system.restore(tokio_stream::iter(vec![chunk])).await }
    };
    let r = restore(w.shares[..2].to_vec()).await;
    expect_err(
        r,
        Code::InvalidArgument,
        "needs 2 shares from distinct holders",
    );
    let staged = restore(Vec::new()).await.unwrap().into_inner();
    assert!(staged.staged);
    assert_eq!(staged.entries, 0);
    assert_eq!(staged.threshold, 2);
    assert_eq!(
        staged.holders,
        [subjects::ADMIN, subjects::CUSTODIAN, subjects::CUSTODIAN_2]
    );

    let r = admin
        .system
        .clone()
        .unseal(unseal_req(&w.shares[0]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.sealed, r.progress), (true, 1));
    let r = admin.system.clone().unseal(unseal_req(&w.shares[1])).await;
    expect_err(r, Code::FailedPrecondition, "already given a share");
    let r = custodian
        .system
        .clone()
        .unseal(unseal_req(&w.shares[2]))
        .await;
    expect_err(r, Code::PermissionDenied, "issued to another holder");
    // Nothing written yet: the store is still uninitialised.
    let s = admin
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!s.initialized);

    let r = custodian
        .system
        .clone()
        .unseal(unseal_req(&w.shares[1]))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.sealed);
    assert!(r.restored_entries > 0, "{r:?}");
    let app = Clients::connect(&server, &w.pki, &w.pki.app).await;
    let pt = app
        .crypto
        .clone()
        .decrypt(v1::DecryptRequest {
            ciphertext: ct,
            ..v1::DecryptRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    assert_eq!(pt, b"kept across a restore");
    drop((admin, custodian, app));
    server.stop().await.unwrap();
}
