//! Every data-plane RPC end to end, as an app in its own namespace: what goes in comes back out,
//! and what the server returns is usable by outside tools (OpenSSL) and by the core's public
//! primitives.

use kms_core::crypto::{PublicKey, encrypt_to_public_key};
use kms_core::policy::Policy;
use kms_proto::v1::{self, Purpose};
use kms_tests::pki::subjects::APP_NS;
use kms_tests::world::World;
use sha2::Digest as _;
use tonic::Code;

use crate::common::{
    SECRET, SECRET_CONTEXT, Scratch, SigOpts, asym_req, ctx, data_key_req, dec, enc, expect_code,
    expect_err, mac_req, openssl, openssl_ok, public_key_req, sign_req, verify_mac_req, verify_req,
};

/// `e = SM3(Z_A ‖ M)` (GB/T 32918.2 A1–A2) for an SM2 public key given as SubjectPublicKeyInfo
/// DER, computed here from the standard's curve parameters, independently of the server.
fn sm2_digest(spki_der: &[u8], id: &str, message: &[u8]) -> Vec<u8> {
    use sm3::{Digest, Sm3};
    const A: &str = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC";
    const B: &str = "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93";
    const GX: &str = "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7";
    const GY: &str = "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0";
    // The BIT STRING of an uncompressed point ends the SPKI: 04 ‖ x ‖ y.
    let point = &spki_der[spki_der.len() - 65..];
    assert_eq!(point[0], 0x04, "not an uncompressed SM2 point");
    let entl = u16::try_from(id.len() * 8).unwrap();
    let mut z = Sm3::new();
    z.update(entl.to_be_bytes());
    z.update(id.as_bytes());
    for hex_field in [A, B, GX, GY] {
        z.update(hex::decode(hex_field).unwrap());
    }
    z.update(&point[1..]);
    let z = z.finalize();
    Sm3::new()
        .chain_update(z)
        .chain_update(message)
        .finalize()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn encrypt_decrypt_and_reencrypt_with_context() {
    let w = World::start().await;
    let sm4 = w
        .create_key_with_alias(APP_NS, Purpose::Encrypt, "sm4-gcm", "orders")
        .await;
    let aes = w.create_key(APP_NS, Purpose::Encrypt, "AES_256_GCM").await;
    assert_eq!(sm4.algorithm, "sm4-gcm");
    assert_eq!(aes.algorithm, "aes-256-gcm");
    let mut c = w.app.crypto.clone();
    let context = ctx(&[("tenant", SECRET_CONTEXT), ("table", "orders")]);

    for key in [
        sm4.key_id.as_str(),
        "orders",
        &format!("{APP_NS}:orders"),
        aes.key_id.as_str(),
    ] {
        let out = c
            .encrypt(enc(key, SECRET, &context))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.key_version, 1);
        assert!(out.key_id == sm4.key_id || out.key_id == aes.key_id);
        assert!(
            !out.ciphertext.windows(SECRET.len()).any(|w| w == SECRET),
            "the ciphertext contains the plaintext"
        );
        let back = c
            .decrypt(dec(&out.ciphertext, &context))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(back.plaintext, SECRET);
        assert_eq!(back.key_id, out.key_id);
        assert_eq!(back.key_version, 1);
        assert!(!back.key_compromised);
        // The context is bound: none, or a different one, does not open it.
        for wrong in [
            ctx(&[]),
            ctx(&[("tenant", SECRET_CONTEXT)]),
            ctx(&[("tenant", "x"), ("table", "orders")]),
        ] {
            let r = c.decrypt(dec(&out.ciphertext, &wrong)).await;
            expect_err(r, Code::InvalidArgument, "decryption failed");
        }
    }
    // Two encryptions of the same plaintext differ (random nonces).
    let a = c
        .encrypt(enc("orders", SECRET, &context))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .encrypt(enc("orders", SECRET, &context))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(a.ciphertext, b.ciphertext);
    // Empty plaintext is fine.
    let empty = c
        .encrypt(enc("orders", b"", &ctx(&[])))
        .await
        .unwrap()
        .into_inner();
    let back = c
        .decrypt(dec(&empty.ciphertext, &ctx(&[])))
        .await
        .unwrap()
        .into_inner();
    assert!(back.plaintext.is_empty());

    // ReEncrypt: to another key and context, without the plaintext leaving the server.
    let moved = c
        .re_encrypt(v1::ReEncryptRequest {
            ciphertext: a.ciphertext.clone(),
            source_context: context.clone(),
            destination_key: aes.key_id.clone(),
            destination_context: ctx(&[("moved", "yes")]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.key_id, aes.key_id);
    let back = c
        .decrypt(dec(&moved.ciphertext, &ctx(&[("moved", "yes")])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.plaintext, SECRET);
    assert_eq!(back.key_id, aes.key_id);
    // The source context is checked.
    let r = c
        .re_encrypt(v1::ReEncryptRequest {
            ciphertext: a.ciphertext.clone(),
            source_context: ctx(&[]),
            destination_key: String::new(),
            destination_context: ctx(&[]),
        })
        .await;
    expect_err(r, Code::InvalidArgument, "decryption failed");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_keys_in_plaintext_without_and_wrapped_to_a_public_key() {
    let w = World::start().await;
    let master = w
        .create_key(APP_NS, Purpose::Encrypt, "sm4-gcm")
        .await
        .key_id;
    let sm2 = w
        .create_key(APP_NS, Purpose::AsymmetricDecrypt, "sm2")
        .await
        .key_id;
    let mut c = w.app.crypto.clone();
    let context = ctx(&[("file", "report.pdf")]);

    for (spec, len) in [("sm4", 16), ("aes-256", 32), ("", 16)] {
        let dk = c
            .generate_data_key(data_key_req(&master, spec, &context))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(dk.plaintext.len(), len, "{spec}");
        assert!(dk.plaintext_encrypted.is_empty());
        assert_eq!(dk.key_id, master);
        assert_eq!(dk.key_version, 1);
        // The wrapped copy is an ordinary ciphertext under the master key.
        let opened = c
            .decrypt(dec(&dk.ciphertext, &context))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(opened.plaintext, dk.plaintext);
    }

    let dk = c
        .generate_data_key_without_plaintext(data_key_req(&master, "aes-256", &context))
        .await
        .unwrap()
        .into_inner();
    assert!(dk.plaintext.is_empty() && dk.plaintext_encrypted.is_empty());
    let opened = c
        .decrypt(dec(&dk.ciphertext, &context))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.plaintext.len(), 32);

    // Wrapped to the public half of an SM2 key (DER, then PEM): the data key never crosses the
    // wire in clear; the holder of the private half (here the KMS key itself) opens it.
    let public = c
        .get_public_key(public_key_req(&sm2, None))
        .await
        .unwrap()
        .into_inner();
    for wrap in [
        public.public_key_der.clone(),
        public.public_key_pem.clone().into_bytes(),
    ] {
        let mut req = data_key_req(&master, "sm4", &context);
        req.wrap_to_public_key = wrap;
        let dk = c.generate_data_key(req).await.unwrap().into_inner();
        assert!(
            dk.plaintext.is_empty(),
            "a wrapped data key came back in clear too"
        );
        assert!(!dk.plaintext_encrypted.is_empty());
        let unwrapped = c
            .asymmetric_decrypt(asym_req(&sm2, &dk.plaintext_encrypted, None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(unwrapped.plaintext.len(), 16);
        let opened = c
            .decrypt(dec(&dk.ciphertext, &context))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(opened.plaintext, unwrapped.plaintext);
    }
    // Wrapping makes no sense without plaintext.
    let mut req = data_key_req(&master, "sm4", &context);
    req.wrap_to_public_key = public.public_key_der.clone();
    let r = c.generate_data_key_without_plaintext(req).await;
    expect_err(r, Code::InvalidArgument, "wrap_to_public_key");
    // Garbage is not a public key.
    let mut req = data_key_req(&master, "sm4", &context);
    req.wrap_to_public_key = b"not a key".to_vec();
    expect_code(c.generate_data_key(req).await, Code::InvalidArgument);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sm2_signatures_default_and_custom_id_and_prehashed() {
    let w = World::start().await;
    let key = w.create_key(APP_NS, Purpose::Sign, "sm2").await.key_id;
    let mut c = w.app.crypto.clone();
    let public = c
        .get_public_key(public_key_req(&key, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(public.algorithm, "sm2");
    let dir = Scratch::new();
    let pub_pem = dir.write("sm2.pub.pem", &public.public_key_pem);
    let msg_path = dir.write("msg", SECRET);
    let openssl_verifies = |sig: &[u8], id: &str| {
        let sig_path = dir.write("sig", sig);
        let distid = format!("distid:{id}");
        let out = openssl(
            &[
                "dgst",
                "-sm3",
                "-verify",
                &pub_pem,
                "-sigopt",
                &distid,
                "-signature",
                &sig_path,
                &msg_path,
            ],
            b"",
        );
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
    };

    let default = SigOpts::default();
    let custom = SigOpts {
        sm2_id: "alice@kms.test",
        ..SigOpts::default()
    };
    for (opts, id) in [(default, "1234567812345678"), (custom, "alice@kms.test")] {
        let sig = c
            .sign(sign_req(&key, SECRET, opts))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(sig.key_id, key);
        assert_eq!(sig.key_version, 1);
        assert_eq!(
            sig.signature[0], 0x30,
            "SM2 signatures are DER SEQUENCE {{ r, s }}"
        );
        let v = c
            .verify(verify_req(&key, SECRET, &sig.signature, opts, None))
            .await
            .unwrap()
            .into_inner();
        assert!(v.valid && !v.key_compromised);
        assert_eq!(v.key_version, 1);
        assert!(
            openssl_verifies(&sig.signature, id),
            "OpenSSL rejects the {id} signature"
        );
        // The ID is bound: the other ID does not verify it.
        let other = if opts.sm2_id.is_empty() {
            custom
        } else {
            default
        };
        let v = c
            .verify(verify_req(&key, SECRET, &sig.signature, other, None))
            .await
            .unwrap()
            .into_inner();
        assert!(!v.valid);
        // Nor does another message.
        let v = c
            .verify(verify_req(
                &key,
                b"another message",
                &sig.signature,
                opts,
                None,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!v.valid);
    }

    // Prehashed: the caller computes e = SM3(Z_A ‖ M) itself and sends only e.
    let e = sm2_digest(&public.public_key_der, "1234567812345678", SECRET);
    let digest = SigOpts {
        digest: true,
        ..SigOpts::default()
    };
    let sig = c
        .sign(sign_req(&key, &e, digest))
        .await
        .unwrap()
        .into_inner();
    for (message, opts) in [(&e[..], digest), (SECRET, default)] {
        let v = c
            .verify(verify_req(&key, message, &sig.signature, opts, None))
            .await
            .unwrap()
            .into_inner();
        assert!(v.valid, "a prehashed SM2 signature must verify as {opts:?}");
    }
    assert!(openssl_verifies(&sig.signature, "1234567812345678"));
    // RSA options make no sense for an SM2 key.
    let r = c
        .sign(sign_req(
            &key,
            SECRET,
            SigOpts {
                scheme: "pss",
                ..SigOpts::default()
            },
        ))
        .await;
    expect_code(r, Code::InvalidArgument);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rsa_signatures_pss_and_pkcs1v15_over_sha256_and_sha384() {
    let w = World::start().await;
    let key = w.create_key(APP_NS, Purpose::Sign, "rsa-2048").await.key_id;
    let mut c = w.app.crypto.clone();
    let public = c
        .get_public_key(public_key_req(&key, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(public.algorithm, "rsa-2048");
    let dir = Scratch::new();
    let pub_pem = dir.write("rsa.pub.pem", &public.public_key_pem);
    let text = String::from_utf8(openssl_ok(&[
        "pkey", "-pubin", "-in", &pub_pem, "-noout", "-text",
    ]))
    .unwrap();
    assert!(text.contains("2048 bit"), "{text}");
    let msg_path = dir.write("msg", SECRET);

    for (scheme, hash) in [
        ("pss", "sha256"),
        ("pss", "sha384"),
        ("pkcs1v15", "sha256"),
        ("pkcs1v15", "sha384"),
    ] {
        let opts = SigOpts {
            scheme,
            hash,
            ..SigOpts::default()
        };
        let sig = c
            .sign(sign_req(&key, SECRET, opts))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(sig.signature.len(), 256, "{scheme}/{hash}");
        let v = c
            .verify(verify_req(&key, SECRET, &sig.signature, opts, None))
            .await
            .unwrap()
            .into_inner();
        assert!(v.valid, "{scheme}/{hash}");
        // The scheme is bound.
        let other = SigOpts {
            scheme: if scheme == "pss" { "pkcs1v15" } else { "pss" },
            hash,
            ..SigOpts::default()
        };
        let v = c
            .verify(verify_req(&key, SECRET, &sig.signature, other, None))
            .await
            .unwrap()
            .into_inner();
        assert!(!v.valid, "{scheme}/{hash} verified as {other:?}");
        // OpenSSL agrees (PSS: salt = hash length, MGF1 with the same hash).
        let sig_path = dir.write("sig", &sig.signature);
        let dgst = format!("-{hash}");
        let mut args = vec!["dgst", dgst.as_str(), "-verify", pub_pem.as_str()];
        let mgf1 = format!("rsa_mgf1_md:{hash}");
        let saltlen = format!("rsa_pss_saltlen:{}", if hash == "sha256" { 32 } else { 48 });
        if scheme == "pss" {
            args.extend([
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                &saltlen,
                "-sigopt",
                &mgf1,
            ]);
        } else {
            args.extend(["-sigopt", "rsa_padding_mode:pkcs1"]);
        }
        args.extend(["-signature", sig_path.as_str(), msg_path.as_str()]);
        let out = openssl(&args, b"");
        assert!(
            out.status.success(),
            "OpenSSL rejects {scheme}/{hash}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Defaults: PSS over SHA-256.
    let sig = c
        .sign(sign_req(&key, SECRET, SigOpts::default()))
        .await
        .unwrap()
        .into_inner();
    let pss256 = SigOpts {
        scheme: "pss",
        hash: "sha256",
        ..SigOpts::default()
    };
    let v = c
        .verify(verify_req(&key, SECRET, &sig.signature, pss256, None))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);

    // Prehashed: the plain SHA-256 of the message.
    let digest = sha2::Sha256::digest(SECRET).to_vec();
    let pkcs_digest = SigOpts {
        digest: true,
        scheme: "pkcs1v15",
        hash: "sha256",
        ..SigOpts::default()
    };
    let sig = c
        .sign(sign_req(&key, &digest, pkcs_digest))
        .await
        .unwrap()
        .into_inner();
    let pkcs_raw = SigOpts {
        digest: false,
        ..pkcs_digest
    };
    let v = c
        .verify(verify_req(&key, SECRET, &sig.signature, pkcs_raw, None))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    // A digest of the wrong length is refused.
    let r = c.sign(sign_req(&key, &digest[..20], pkcs_digest)).await;
    expect_err(r, Code::InvalidArgument, "digest");
    // An SM2 id makes no sense for an RSA key.
    let r = c
        .sign(sign_req(
            &key,
            SECRET,
            SigOpts {
                sm2_id: "x",
                ..SigOpts::default()
            },
        ))
        .await;
    expect_code(r, Code::InvalidArgument);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asymmetric_decrypt_sm2_and_rsa_oaep() {
    let w = World::start().await;
    let sm2 = w
        .create_key(APP_NS, Purpose::AsymmetricDecrypt, "sm2")
        .await
        .key_id;
    let rsa = w
        .create_key(APP_NS, Purpose::AsymmetricDecrypt, "rsa-2048")
        .await
        .key_id;
    let mut c = w.app.crypto.clone();
    let dir = Scratch::new();
    let msg_path = dir.write("msg", SECRET);
    for (key, oaep) in [(&sm2, false), (&rsa, true)] {
        let public = c
            .get_public_key(public_key_req(key, None))
            .await
            .unwrap()
            .into_inner();
        // With the core's public primitive.
        let pk = PublicKey::from_spki_der(Policy::default(), &public.public_key_der).unwrap();
        let ct = encrypt_to_public_key(
            &Policy::default()
                .approve(kms_core::alg::Purpose::AsymmetricDecrypt, pk.spec())
                .unwrap(),
            &pk,
            SECRET,
        )
        .unwrap();
        let out = c
            .asymmetric_decrypt(asym_req(key, &ct, None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.plaintext, SECRET);
        assert_eq!(out.key_version, 1);
        assert!(!out.key_compromised);
        // With OpenSSL (SM2: GM/T 0009 DER; RSA: OAEP with SHA-256 and MGF1-SHA-256).
        let pub_pem = dir.write("pub.pem", &public.public_key_pem);
        let ct_path = dir.path("ct").to_str().unwrap().to_owned();
        let mut args = vec![
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            pub_pem.as_str(),
            "-in",
            msg_path.as_str(),
            "-out",
            ct_path.as_str(),
        ];
        if oaep {
            args.extend([
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ]);
        }
        openssl_ok(&args);
        let ct = std::fs::read(&ct_path).unwrap();
        let out = c
            .asymmetric_decrypt(asym_req(key, &ct, Some(1)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.plaintext, SECRET);
        // A damaged ciphertext fails, without saying more.
        let mut bad = ct.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let r = c.asymmetric_decrypt(asym_req(key, &bad, None)).await;
        expect_err(r, Code::InvalidArgument, "decryption failed");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn public_keys_load_in_openssl() {
    let w = World::start().await;
    let sign = w.create_key(APP_NS, Purpose::Sign, "sm2").await;
    let decrypt = w
        .create_key(APP_NS, Purpose::AsymmetricDecrypt, "sm2")
        .await;
    let mut c = w.app.crypto.clone();
    let dir = Scratch::new();
    for meta in [&sign, &decrypt] {
        let public = c
            .get_public_key(public_key_req(&meta.key_id, None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(public.key_id, meta.key_id);
        assert_eq!(public.key_version, 1);
        // The same key the metadata shows.
        assert_eq!(public.public_key_der, meta.versions[0].public_key_der);
        assert!(
            public
                .public_key_pem
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        let pem = dir.write("k.pem", &public.public_key_pem);
        let text = String::from_utf8(openssl_ok(&[
            "pkey", "-pubin", "-in", &pem, "-noout", "-text",
        ]))
        .unwrap();
        assert!(text.contains("SM2") || text.contains("256 bit"), "{text}");
        // PEM and DER are the same key.
        let der_path = dir.path("k.der").to_str().unwrap().to_owned();
        openssl_ok(&[
            "pkey", "-pubin", "-in", &pem, "-outform", "DER", "-out", &der_path,
        ]);
        assert_eq!(std::fs::read(&der_path).unwrap(), public.public_key_der);
    }
    // Auditors and admins may read public keys too.
    for clients in [&w.admin, &w.auditor] {
        let p = clients
            .crypto
            .clone()
            .get_public_key(public_key_req(&sign.key_id, None))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.public_key_der, sign.versions[0].public_key_der);
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn macs_generate_and_verify() {
    let w = World::start().await;
    let mut c = w.app.crypto.clone();
    for (alg, len) in [
        ("hmac-sm3", 32),
        ("hmac-sha256", 32),
        ("hmac-sha384", 48),
        ("hmac-sha512", 64),
    ] {
        let key = w.create_key(APP_NS, Purpose::Mac, alg).await.key_id;
        let tag = c
            .generate_mac(mac_req(&key, SECRET))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(tag.mac.len(), len, "{alg}");
        assert_eq!(tag.key_version, 1);
        // Deterministic.
        let again = c
            .generate_mac(mac_req(&key, SECRET))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.mac, tag.mac);
        for version in [None, Some(1)] {
            let v = c
                .verify_mac(verify_mac_req(&key, SECRET, &tag.mac, version))
                .await
                .unwrap()
                .into_inner();
            assert!(v.valid, "{alg}");
        }
        let v = c
            .verify_mac(verify_mac_req(&key, b"other data", &tag.mac, None))
            .await
            .unwrap()
            .into_inner();
        assert!(!v.valid);
        let mut bad = tag.mac.clone();
        bad[0] ^= 0x80;
        let v = c
            .verify_mac(verify_mac_req(&key, SECRET, &bad, None))
            .await
            .unwrap()
            .into_inner();
        assert!(!v.valid);
        let v = c
            .verify_mac(verify_mac_req(&key, SECRET, &tag.mac[..16], None))
            .await
            .unwrap()
            .into_inner();
        assert!(!v.valid, "a truncated tag must not verify");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_bytes() {
    let w = World::start().await;
    let mut c = w.app.crypto.clone();
    for len in [1u32, 32, 1024] {
        let r = c
            .generate_random(v1::GenerateRandomRequest { length: len })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.random.len(), len as usize);
    }
    let a = c
        .generate_random(v1::GenerateRandomRequest { length: 32 })
        .await
        .unwrap()
        .into_inner();
    let b = c
        .generate_random(v1::GenerateRandomRequest { length: 32 })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(a.random, b.random);
    for len in [0u32, 1025, u32::MAX] {
        let r = c
            .generate_random(v1::GenerateRandomRequest { length: len })
            .await;
        expect_err(r, Code::InvalidArgument, "1024");
    }
    w.stop().await;
}
