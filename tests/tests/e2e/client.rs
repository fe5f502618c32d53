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

/// The data-protection methods (issue 22): tokens and back with per-value refusals, a sealed
/// password hashed and verified, a signed request verified once and then called a replay, which
/// the client does not retry into.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_protection_calls_through_the_typed_client() {
    use kms_client::{RequestBody, RequestVerdict, SignedRequest};
    use kms_core::signed_request::{self as sr, RequestScheme};

    let w = World::start().await;
    let tok = key(&w, Purpose::Tokenize, "sm4-ff1").await;
    let login = key(&w, Purpose::Password, "sm2").await;
    let pepper = key(&w, Purpose::Pepper, "hmac-sm3").await;
    let mac = key(&w, Purpose::Mac, "hmac-sm3").await;
    let kms = Client::connect(&connection(&w, &w.pki.app)).await.unwrap();
    let ctx = Context::from([("partner".to_owned(), "acme".to_owned())]);

    let tokens = kms
        .tokenize(&tok, "pan", &ctx, &["6222020000001237", "12ab"])
        .await
        .unwrap();
    assert_eq!(tokens.key_version, 1);
    let token = tokens.results[0].as_ref().unwrap().to_string();
    assert!(
        token.starts_with("622202") && token.ends_with("1237"),
        "{token}"
    );
    assert_ne!(token, "6222020000001237");
    assert_eq!(
        tokens.results[1].as_ref().unwrap_err().code,
        Code::InvalidArgument
    );
    assert!(!format!("{tokens:?}").contains("622202"));
    let back = kms
        .detokenize(&tok, 1, "pan", &ctx, &[&token])
        .await
        .unwrap();
    assert_eq!(
        back.results[0].as_ref().unwrap().as_str(),
        "6222020000001237"
    );

    // The mobile app's part: seal {password, timestamp, nonce} to the password key.
    let policy = kms_core::policy::Policy::from_config(kms_core::policy::PolicyMode::Standard);
    let public = kms.get_public_key(&login).await.unwrap();
    let public = kms_core::crypto::PublicKey::from_spki_der(policy, &public.der).unwrap();
    let to = policy
        .approve(kms_core::alg::Purpose::Password, public.spec())
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let seal = |password: &str, nonce: u8| {
        let plain =
            kms_core::crypto::password_hash::encode_sealed(password, now, &[nonce; 16]).unwrap();
        kms_core::crypto::encrypt_to_public_key(&to, &public, plain.expose_secret()).unwrap()
    };
    let stored = kms
        .hash_password(
            &login,
            &pepper,
            &seal("Sesame-0pen-42", 1),
            &["13800138000"],
        )
        .await
        .unwrap();
    assert!(stored.hash.starts_with("$kms-pepper$"));
    assert!(!format!("{stored:?}").contains("kms-pepper"));
    let check = kms
        .verify_password(&login, &seal("Sesame-0pen-42", 2), &stored.hash)
        .await
        .unwrap();
    assert!(check.matched && check.rehashed.is_none());
    let wrong = kms
        .verify_password(&login, &seal("Sesame-0pen-43", 3), &stored.hash)
        .await
        .unwrap();
    assert!(!wrong.matched);
    let replayed = kms
        .verify_password(&login, &seal("Sesame-0pen-42", 2), &stored.hash)
        .await
        .unwrap_err();
    assert_eq!(
        (replayed.code(), replayed.attempts()),
        (Code::AlreadyExists, 1)
    );

    // A partner's request, signed here with the shared MAC key over the canonical string.
    let nonce = *b"client-nonce-001";
    let parts = sr::RequestParts {
        method: "POST",
        path: "/v1/orders",
        timestamp: now,
        nonce: &nonce,
        body: sr::RequestBody::Bytes(b"{}"),
    };
    let canonical = sr::canonical(RequestScheme::HmacSm3, &parts).unwrap();
    let tag = kms.generate_mac(&mac, &canonical).await.unwrap().mac;
    let request = SignedRequest {
        scheme: "hmac-sm3",
        signature: &tag,
        timestamp: now,
        nonce: &nonce,
        method: "POST",
        path: "/v1/orders",
        body: RequestBody::Bytes(b"{}"),
    };
    let first = kms.verify_request(&mac, request).await.unwrap();
    assert!(first.ok(), "{first:?}");
    assert_eq!(first.key_version, 1);
    let again = kms.verify_request(&mac, request).await.unwrap();
    assert_eq!(again.verdict, RequestVerdict::Replayed);
    let digest = RequestScheme::HmacSm3.body_digest(b"{}");
    let tampered = kms
        .verify_request(
            &mac,
            SignedRequest {
                path: "/v1/orders/2",
                body: RequestBody::Digest(&digest),
                ..request
            },
        )
        .await
        .unwrap();
    assert_eq!(tampered.verdict, RequestVerdict::BadSignature);
    let bad = kms
        .verify_request(
            &mac,
            SignedRequest {
                scheme: "ecdsa",
                ..request
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}
