//! Outside public keys (issue 19 item 3): a partner's key, made and used by OpenSSL, registered
//! with `ImportPublicKey` verifies the partner's signatures through the same `Verify` RPC, and
//! `Encrypt` with it encrypts to the partner; nothing signs, decrypts or rotates with it; weak
//! or unfit keys are refused.

use kms_proto::v1::{self, Purpose};
use kms_tests::pki::subjects::APP_NS;
use kms_tests::world::World;
use tonic::Code;

use crate::common::{expect_err, openssl_ok};

fn import(public_key: &[u8], purpose: Purpose, alias: &str) -> v1::ImportPublicKeyRequest {
    v1::ImportPublicKeyRequest {
        namespace: APP_NS.to_owned(),
        purpose: purpose.into(),
        public_key: public_key.to_vec(),
        alias: alias.to_owned(),
        description: "partner bank's signing key".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partners_public_key_verifies_its_signatures_and_does_nothing_else() {
    let w = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    openssl_ok(&["genpkey", "-algorithm", "SM2", "-out", &path("partner.key")]);
    let pem = openssl_ok(&["pkey", "-in", &path("partner.key"), "-pubout"]);
    let message = b"transfer 100.00 CNY to 6222 0000 0000 0001";
    std::fs::write(path("msg"), message).unwrap();
    openssl_ok(&[
        "dgst",
        "-sm3",
        "-sign",
        &path("partner.key"),
        "-sigopt",
        "distid:1234567812345678",
        "-out",
        &path("sig"),
        &path("msg"),
    ]);
    let signature = std::fs::read(path("sig")).unwrap();

    let k = w
        .admin
        .keys
        .clone()
        .import_public_key(import(&pem, Purpose::Sign, "partner-sig"))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(k.origin, "public-only");
    assert_eq!(k.algorithm, "sm2");
    assert_eq!(k.versions.len(), 1);
    assert!(!k.versions[0].destroyed, "{k:?}");

    let verify = |signature: Vec<u8>| v1::VerifyRequest {
        key: "partner-sig".to_owned(),
        message: message.to_vec(),
        signature,
        ..v1::VerifyRequest::default()
    };
    let ok = w
        .app
        .crypto
        .clone()
        .verify(verify(signature.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        ok.valid,
        "OpenSSL's signature verifies under the imported key"
    );
    let mut bad = signature.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let no = w
        .app
        .crypto
        .clone()
        .verify(verify(bad))
        .await
        .unwrap()
        .into_inner();
    assert!(!no.valid);

    // The same public key comes back out, as OpenSSL wrote it.
    let back = w
        .app
        .crypto
        .clone()
        .get_public_key(v1::GetPublicKeyRequest {
            key: "partner-sig".to_owned(),
            key_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        back.public_key_pem.trim(),
        String::from_utf8(pem).unwrap().trim()
    );

    // No private half here: no signing, no rotation.
    let r = w
        .app
        .crypto
        .clone()
        .sign(v1::SignRequest {
            key: "partner-sig".to_owned(),
            message: message.to_vec(),
            ..v1::SignRequest::default()
        })
        .await;
    expect_err(r, Code::FailedPrecondition, "outside public key");
    let r = w
        .admin
        .keys
        .clone()
        .rotate_key(v1::KeyRequest {
            key: format!("{APP_NS}:partner-sig"),
        })
        .await;
    expect_err(
        r,
        Code::FailedPrecondition,
        "import the partner's new public key",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_encryption_partner_key_cannot_decrypt_and_unfit_keys_are_refused() {
    let w = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:3072",
        "-out",
        &path("rsa.key"),
    ]);
    let rsa = openssl_ok(&[
        "pkey",
        "-in",
        &path("rsa.key"),
        "-pubout",
        "-outform",
        "DER",
    ]);
    let k = w
        .admin
        .keys
        .clone()
        .import_public_key(import(&rsa, Purpose::AsymmetricDecrypt, "partner-enc"))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(
        (k.origin.as_str(), k.algorithm.as_str()),
        ("public-only", "rsa-3072")
    );
    // Encrypting to the partner through the same Encrypt RPC: RSA-OAEP-SHA-256 that the
    // partner's private key (OpenSSL here) opens. A context cannot be bound, so it is refused.
    let secret = b"PIN block for the partner";
    let sealed = w
        .app
        .crypto
        .clone()
        .encrypt(v1::EncryptRequest {
            key: "partner-enc".to_owned(),
            plaintext: secret.to_vec(),
            ..v1::EncryptRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sealed.ciphertext.len(), 384);
    std::fs::write(path("sealed"), &sealed.ciphertext).unwrap();
    let opened = openssl_ok(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        &path("rsa.key"),
        "-in",
        &path("sealed"),
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
    ]);
    assert_eq!(opened, secret);
    let r = w
        .app
        .crypto
        .clone()
        .encrypt(v1::EncryptRequest {
            key: "partner-enc".to_owned(),
            plaintext: secret.to_vec(),
            context: [("k".to_owned(), "v".to_owned())].into(),
        })
        .await;
    expect_err(r, Code::InvalidArgument, "binds no context");
    let r = w
        .app
        .crypto
        .clone()
        .asymmetric_decrypt(v1::AsymmetricDecryptRequest {
            key: "partner-enc".to_owned(),
            ciphertext: vec![0; 384],
            ..v1::AsymmetricDecryptRequest::default()
        })
        .await;
    expect_err(
        r,
        Code::FailedPrecondition,
        "only its owner holds the private key",
    );

    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        &path("weak.key"),
    ]);
    let weak = openssl_ok(&["pkey", "-in", &path("weak.key"), "-pubout"]);
    for (req, needle) in [
        (import(&weak, Purpose::Sign, ""), "2048"),
        (import(&rsa, Purpose::Encrypt, ""), "purpose"),
        (import(b"not a key", Purpose::Sign, ""), "public key"),
    ] {
        let r = w.admin.keys.clone().import_public_key(req).await;
        expect_err(r, Code::InvalidArgument, needle);
    }
    // Apps do not import keys.
    let r = w
        .app
        .keys
        .clone()
        .import_public_key(import(&rsa, Purpose::Sign, ""))
        .await;
    expect_err(r, Code::PermissionDenied, "import outside public keys");
}
