//! The typed Rust client (`kms-client`, issue 21 item 1) against the real server over mutual
//! TLS: every data-plane call, errors that name the server's request id, UNAVAILABLE retried
//! (a sealed server unsealed while the client waits) and nothing else retried, deadlines.

use std::time::Duration;

use kms_client::connect::Connection;
use kms_client::{Client, Context, Retry, SignOptions};
use kms_proto::v1::{self, Purpose};
use kms_tests::pki::subjects::APP_NS;
use kms_tests::world::World;
use tonic::Code;

fn connection(w: &World, who: &kms_tests::pki::Identity) -> Connection {
    Connection::from_pem(
        format!("https://localhost:{}", w.server.addr.port()),
        w.pki.ca.cert_pem(),
        who.cert_pem.clone(),
        who.key_pem.clone(),
        Some(Duration::from_secs(10)),
    )
}

async fn key(w: &World, purpose: Purpose, algorithm: &str) -> String {
    w.admin
        .keys
        .clone()
        .create_key(v1::CreateKeyRequest {
            namespace: APP_NS.to_owned(),
            purpose: purpose.into(),
            algorithm: algorithm.to_owned(),
            ..v1::CreateKeyRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .key_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_data_plane_call_through_the_typed_client() {
    let w = World::start().await;
    let enc = key(&w, Purpose::Encrypt, "sm4-gcm").await;
    let other = key(&w, Purpose::Encrypt, "aes-256-gcm").await;
    let sign = key(&w, Purpose::Sign, "sm2").await;
    let mac = key(&w, Purpose::Mac, "hmac-sm3").await;
    let asym = key(&w, Purpose::AsymmetricDecrypt, "sm2").await;
    let kms = Client::connect(&connection(&w, &w.pki.app)).await.unwrap();
    let ctx = Context::from([("order".to_owned(), "42".to_owned())]);

    let sealed = kms.encrypt(&enc, b"card 6222", &ctx).await.unwrap();
    assert_eq!(
        (sealed.key_id.as_str(), sealed.key_version),
        (enc.as_str(), 1)
    );
    let opened = kms.decrypt(&sealed.ciphertext, &ctx).await.unwrap();
    assert_eq!(&opened.plaintext[..], b"card 6222");
    assert!(format!("{opened:?}").contains("9 bytes"));
    let moved = kms
        .reencrypt(&sealed.ciphertext, &ctx, &other, &Context::new())
        .await
        .unwrap();
    assert_eq!(moved.key_id, other);
    let back = kms
        .decrypt(&moved.ciphertext, &Context::new())
        .await
        .unwrap();
    assert_eq!(&back.plaintext[..], b"card 6222");

    let dk = kms.generate_data_key(&enc, "sm4", &ctx).await.unwrap();
    assert_eq!(dk.plaintext.len(), 16);
    let dk_again = kms.decrypt(&dk.ciphertext, &ctx).await.unwrap();
    assert_eq!(dk_again.plaintext, dk.plaintext);
    let wrapped_only = kms
        .generate_data_key_without_plaintext(&enc, "sm4", &ctx)
        .await
        .unwrap();
    assert_eq!(
        kms.decrypt(&wrapped_only.ciphertext, &ctx)
            .await
            .unwrap()
            .plaintext
            .len(),
        16
    );

    let sig = kms
        .sign(&sign, b"pay 100", &SignOptions::default())
        .await
        .unwrap();
    assert!(
        kms.verify(&sign, b"pay 100", &sig.signature, &SignOptions::default())
            .await
            .unwrap()
            .valid
    );
    assert!(
        !kms.verify(&sign, b"pay 999", &sig.signature, &SignOptions::default())
            .await
            .unwrap()
            .valid
    );
    let public = kms.get_public_key(&sign).await.unwrap();
    assert_eq!(public.algorithm, "sm2");
    assert!(public.pem.starts_with("-----BEGIN PUBLIC KEY-----"));

    let tag = kms.generate_mac(&mac, b"row").await.unwrap();
    assert!(kms.verify_mac(&mac, b"row", &tag.mac).await.unwrap().valid);
    assert!(!kms.verify_mac(&mac, b"rox", &tag.mac).await.unwrap().valid);

    // Encrypt to an asymmetric-decrypt key (its public key), then AsymmetricDecrypt.
    let to_public = kms
        .encrypt(&asym, b"for the inbox", &Context::new())
        .await
        .unwrap();
    let inbox = kms
        .asymmetric_decrypt(&asym, &to_public.ciphertext)
        .await
        .unwrap();
    assert_eq!(&inbox.plaintext[..], b"for the inbox");
    assert_eq!(kms.generate_random(32).await.unwrap().len(), 32);

    // A refusal: its code, the server's message and the request id it names; not retried.
    let e = kms
        .decrypt(&sealed.ciphertext, &Context::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("decryption failed"), "{e}");
    let id = e.request_id().expect("the message names the request");
    assert!(e.message().ends_with(&format!("(request {id})")), "{e}");
    assert_eq!(e.attempts(), 1);
    let missing = kms.encrypt("no-such-key", b"x", &ctx).await.unwrap_err();
    assert_eq!((missing.code(), missing.attempts()), (Code::NotFound, 1));
}

/// A sealed server answers UNAVAILABLE: the client waits and retries, and succeeds once the
/// holders have unsealed it; with retries off it gets UNAVAILABLE at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unavailable_is_retried_until_the_server_is_back() {
    let w = World::start().await;
    let enc = key(&w, Purpose::Encrypt, "sm4-gcm").await;
    let kms = Client::connect(&connection(&w, &w.pki.app)).await.unwrap();
    w.admin
        .system
        .clone()
        .seal(v1::SealRequest {})
        .await
        .unwrap();
    let once = kms
        .clone()
        .with_retry(Retry::never())
        .encrypt(&enc, b"x", &Context::new())
        .await
        .unwrap_err();
    assert_eq!((once.code(), once.attempts()), (Code::Unavailable, 1));
    assert!(once.message().contains("sealed"), "{once}");

    let patient = kms.with_retry(Retry {
        attempts: 20,
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    });
    let waiting = tokio::spawn(async move { patient.encrypt(&enc, b"x", &Context::new()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.unseal().await;
    let done = waiting.await.unwrap().unwrap();
    assert_eq!(done.key_version, 1);
}

/// The deadline bounds the retries too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_deadline_bounds_the_retries() {
    let w = World::start().await;
    let enc = key(&w, Purpose::Encrypt, "sm4-gcm").await;
    let kms = Client::connect(&connection(&w, &w.pki.app))
        .await
        .unwrap()
        .with_timeout(Some(Duration::from_millis(400)))
        .with_retry(Retry {
            attempts: 100,
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
        });
    w.admin
        .system
        .clone()
        .seal(v1::SealRequest {})
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let e = kms.encrypt(&enc, b"x", &Context::new()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.attempts() > 1 && e.attempts() < 100, "{}", e.attempts());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A bad profile or connection setting is a connect error naming what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_settings_are_named() {
    let w = World::start().await;
    let mut conn = connection(&w, &w.pki.app);
    conn.endpoint = "http://localhost:1".to_owned();
    let e = Client::connect(&conn).await.unwrap_err();
    assert!(e.to_string().contains("mTLS"), "{e}");
    let e = Client::from_profile("no/such/profile.toml".as_ref())
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot read profile no/such/profile.toml"),
        "{e}"
    );
}
