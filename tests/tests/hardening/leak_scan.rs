//! Secret-leak scans (issue 8, part 3; API-4, KEY-2, KEY-3, OPS-1, OPS-3).
//!
//! The real `kms-server serve` runs as a child process with `KMS_LOG=trace` (its most verbose:
//! every crate's trace events, `log` records included). A scripted session uses known secrets —
//! plaintexts, contexts, MAC data, messages to sign, asymmetric plaintexts, random bytes, data
//! keys the server returns, passwords, signed requests' bodies, nonces and path queries —
//! including in requests the server refuses. Afterwards, the
//! hierarchy is opened from outside with the unseal shares (as an operator could) to learn every
//! key's material, the root key, the KEKs and the derived keys. Then every log line, every error
//! the client received, the audit export, the inventory export, every file of the store and a
//! backup are searched for every secret in raw, hex, base64 (three alignments, two alphabets) and
//! `Debug` form. None may appear; public keys, exported on purpose, are not searched for.
//!
//! The same process's hardening is read from /proc: core dumps off (`Max core file size` 0) and
//! memory locked (`VmLck` > 0) — or, where the measure failed, the log says so and why.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kms_core::crypto::{PublicKey, encrypt_to_public_key};
use kms_core::envelope::EncryptionContext;
use kms_core::hierarchy::wrap::{self, Derived, WrapAlg};
use kms_core::keys::Namespace;
use kms_core::keys::record::KeyRecord;
use kms_core::store::{SledStore, Store, Tree};
use kms_proto::v1::{self, Purpose};
use kms_tests::net::{self, MODERN};
use kms_tests::pki::{Identity, Pki, subjects};
use kms_tests::world::Clients;
use prost::Message as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;
use tonic::Status;

use crate::child::ChildServer;
use crate::common::{SigOpts, asym_req, dec, enc, mac_req, sign_req, verify_mac_req, verify_req};
use crate::scan::{Needle, Scanner, needles_for};
use crate::wire::{pb_bytes_field, raw_unary};

const SHARE_PREFIX: &str = "kms-share-1-";

/// Known secrets, made fresh per run (so that nothing here can be in the binary or a
/// previous run's files).
struct Secrets {
    seed: Vec<u8>,
    /// label → bytes, everything that must not appear.
    all: Vec<(String, Vec<u8>)>,
}

impl Secrets {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Self {
            seed: format!("{nanos}-{}", std::process::id()).into_bytes(),
            all: Vec::new(),
        }
    }

    /// `len` pseudo-random bytes for `label`.
    fn binary(&mut self, label: &str, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0u32;
        while out.len() < len {
            let mut h = sha2::Sha256::new();
            h.update(&self.seed);
            h.update(label.as_bytes());
            h.update(i.to_be_bytes());
            out.extend_from_slice(&h.finalize());
            i += 1;
        }
        out.truncate(len);
        self.keep(label, &out);
        out
    }

    /// A printable secret for `label` (what a context value or a card number looks like).
    fn text(&mut self, label: &str) -> String {
        let s = format!(
            "LEAK-{label}-{}",
            hex::encode(self.binary(&format!("{label}/t"), 12))
        );
        self.keep(label, s.as_bytes());
        s
    }

    /// Something the server produced or learnt that must not be shown again.
    fn keep(&mut self, label: &str, bytes: &[u8]) {
        self.all.push((label.to_owned(), bytes.to_vec()));
    }
}

/// Every error the client got back, as text to search.
#[derive(Default)]
struct Refusals(Vec<(String, Status)>);

impl Refusals {
    /// Records the error of a call that must fail.
    fn expect_err<T: std::fmt::Debug>(&mut self, what: &str, r: Result<T, Status>) {
        match r {
            Ok(v) => panic!("{what}: expected a refusal, got {v:?}"),
            Err(s) => self.0.push((what.to_owned(), s)),
        }
    }

    fn haystacks(&self) -> Vec<(String, Vec<u8>)> {
        self.0
            .iter()
            .map(|(what, s)| {
                let text = format!(
                    "{}\n{:?}\n{}",
                    s.message(),
                    s.metadata(),
                    String::from_utf8_lossy(s.details())
                );
                (format!("the error of {what}"), text.into_bytes())
            })
            .collect()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

async fn connect(addr: std::net::SocketAddr, pki: &Pki, who: &Identity) -> Clients {
    let config = net::client_config(pki.ca.cert_pem(), Some(who), MODERN);
    Clients::new(net::channel(addr, config).await.unwrap())
}

fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What the session made that the extraction checks itself against.
struct Session {
    shares: Vec<String>,
    /// A blob under the SM4 key's first version, its context and plaintext.
    blob: (Vec<u8>, HashMap<String, String>, Vec<u8>),
    refusals: Refusals,
    audit: String,
    inventory: String,
    backup: Vec<u8>,
    key_ids: Vec<String>,
}

/// The scripted session: init and unseal, keys of every purpose, every data-plane RPC with
/// known secrets, refused requests carrying secrets, then the audit and inventory exports and a
/// backup.
#[allow(clippy::too_many_lines)]
async fn session(
    addr: std::net::SocketAddr,
    pki: &Pki,
    s: &mut Secrets,
    data_dir: &Path,
) -> Session {
    let admin = connect(addr, pki, &pki.admin).await;
    let mut refusals = Refusals::default();
    // No bootstrap_admins in the config: init takes the one-time token the server wrote, which
    // is a secret like the others (never in a log, the audit trail or the store).
    let token = fs::read_to_string(data_dir.join(kms_server::bootstrap::TOKEN_FILE)).unwrap();
    let token = token.trim().to_owned();
    s.keep("init token", token.as_bytes());
    let init = admin
        .system
        .clone()
        .init(v1::InitRequest {
            shares: 3,
            threshold: 2,
            holders: kms_tests::world::holders(),
            init_token: token,
            ..v1::InitRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let shares = kms_tests::world::plain_shares(&init);
    for (i, share) in shares.iter().enumerate() {
        s.keep(&format!("unseal share {i}"), share.as_bytes());
    }
    let mut system = admin.system.clone();
    let unseal = |share: &str| v1::UnsealRequest {
        share: share.to_owned(),
    };
    system.unseal(unseal(&shares[0])).await.unwrap();
    // A share with one digit changed, and a share given twice: refused, without echoing it.
    let mut typo = shares[1].clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'0' { b'1' } else { b'0' };
    let typo = String::from_utf8(typo).unwrap();
    s.keep("mistyped share", typo.as_bytes());
    refusals.expect_err("a mistyped share", system.unseal(unseal(&typo)).await);
    refusals.expect_err(
        "a share given twice",
        system.unseal(unseal(&shares[0])).await,
    );
    let custodian = connect(addr, pki, &pki.custodian).await;
    let done = custodian
        .system
        .clone()
        .unseal(unseal(&shares[1]))
        .await
        .unwrap()
        .into_inner();
    assert!(!done.sealed);
    let mut keys = admin.keys.clone();
    for (subject, role, ns) in [
        (subjects::APP, "app", subjects::APP_NS),
        (subjects::AUDITOR, "auditor", ""),
    ] {
        keys.add_principal(v1::AddPrincipalRequest {
            subject: subject.to_owned(),
            role: role.to_owned(),
            namespace: ns.to_owned(),
        })
        .await
        .unwrap();
    }
    let mut key_ids = Vec::new();
    let mut create = async |purpose: Purpose, algorithm: &str, alias: &str| -> String {
        let id = keys
            .create_key(v1::CreateKeyRequest {
                namespace: subjects::APP_NS.to_owned(),
                purpose: purpose.into(),
                algorithm: algorithm.to_owned(),
                alias: alias.to_owned(),
                rotation_period_seconds: None,
                description: format!("leak scan {algorithm}"),
                origin: String::new(),
                exportable: false,
            })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap()
            .key_id;
        key_ids.push(id.clone());
        id
    };
    let sm4 = create(Purpose::Encrypt, "sm4-gcm", "leak-sm4").await;
    let aes = create(Purpose::Encrypt, "aes-256-gcm", "leak-aes").await;
    let sm2_sign = create(Purpose::Sign, "sm2", "").await;
    let rsa_sign = create(Purpose::Sign, "rsa-2048", "").await;
    let sm2_asym = create(Purpose::AsymmetricDecrypt, "sm2", "").await;
    let rsa_asym = create(Purpose::AsymmetricDecrypt, "rsa-2048", "").await;
    let hmac_sm3 = create(Purpose::Mac, "hmac-sm3", "").await;
    let hmac_sha = create(Purpose::Mac, "hmac-sha256", "").await;
    let login = create(Purpose::Password, "sm2", "leak-login").await;
    let pepper = create(Purpose::Pepper, "hmac-sm3", "leak-pepper").await;

    let app = connect(addr, pki, &pki.app).await;
    let mut c = app.crypto.clone();
    let context = ctx(&[
        ("customer", &s.text("context value")),
        ("account", &s.text("context value 2")),
    ]);
    let context2 = ctx(&[("card", &s.text("re-encrypt context value"))]);
    let plain_text = s.text("plaintext (text)").into_bytes();
    let plain_bin = s.binary("plaintext (binary)", 48);

    // Encrypt, decrypt, re-encrypt.
    let blob = c
        .encrypt(enc(&sm4, &plain_text, &context))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    let blob_aes = c
        .encrypt(enc(&aes, &plain_bin, &context))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    for b in [&blob, &blob_aes] {
        c.decrypt(dec(b, &context)).await.unwrap();
    }
    let moved = c
        .re_encrypt(v1::ReEncryptRequest {
            ciphertext: blob.clone(),
            source_context: context.clone(),
            destination_key: aes.clone(),
            destination_context: context2.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    assert_eq!(
        c.decrypt(dec(&moved, &context2))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        plain_text
    );
    // Data keys: in plaintext, without (then decrypted), and wrapped to a public key.
    for (spec, key) in [("sm4", &sm4), ("aes-256", &aes)] {
        let dk = c
            .generate_data_key(v1::GenerateDataKeyRequest {
                key: key.clone(),
                key_spec: spec.to_owned(),
                context: context.clone(),
                wrap_to_public_key: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner();
        s.keep(&format!("{spec} data key (plaintext)"), &dk.plaintext);
    }
    let dk = c
        .generate_data_key_without_plaintext(v1::GenerateDataKeyRequest {
            key: sm4.clone(),
            key_spec: "aes-256".to_owned(),
            context: context.clone(),
            wrap_to_public_key: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let plain = c.decrypt(dec(&dk.ciphertext, &context)).await.unwrap();
    s.keep(
        "data key (without plaintext, then decrypted)",
        &plain.into_inner().plaintext,
    );
    let sm2_pub = c
        .get_public_key(v1::GetPublicKeyRequest {
            key: sm2_asym.clone(),
            key_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    let dk = c
        .generate_data_key(v1::GenerateDataKeyRequest {
            key: aes.clone(),
            key_spec: "sm4".to_owned(),
            context: context.clone(),
            wrap_to_public_key: sm2_pub.public_key_pem.into_bytes(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dk.plaintext.is_empty());
    let opened = c
        .asymmetric_decrypt(asym_req(&sm2_asym, &dk.plaintext_encrypted, None))
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    s.keep("data key (wrapped to a public key)", &opened);
    // Asymmetric decryption of client-sealed secrets.
    let policy = kms_core::policy::Policy::default();
    for (key, label) in [(&sm2_asym, "SM2"), (&rsa_asym, "RSA-OAEP")] {
        let der = c
            .get_public_key(v1::GetPublicKeyRequest {
                key: key.clone(),
                key_version: None,
            })
            .await
            .unwrap()
            .into_inner()
            .public_key_der;
        let pin = s.binary(&format!("{label} sealed PIN"), 24);
        let public = PublicKey::from_spki_der(policy, &der).unwrap();
        let sealed = encrypt_to_public_key(
            &kms_core::policy::Policy::default()
                .approve(kms_core::alg::Purpose::AsymmetricDecrypt, public.spec())
                .unwrap(),
            &public,
            &pin,
        )
        .unwrap();
        let out = c
            .asymmetric_decrypt(asym_req(key, &sealed, None))
            .await
            .unwrap();
        assert_eq!(out.into_inner().plaintext, pin);
    }
    // Signatures over secret messages, and MACs over secret data.
    for key in [&sm2_sign, &rsa_sign] {
        let message = s.binary(&format!("message signed by {key}"), 40);
        let sig = c
            .sign(sign_req(key, &message, SigOpts::default()))
            .await
            .unwrap()
            .into_inner()
            .signature;
        let v = c
            .verify(verify_req(key, &message, &sig, SigOpts::default(), None))
            .await
            .unwrap();
        assert!(v.into_inner().valid);
    }
    for key in [&hmac_sm3, &hmac_sha] {
        let data = s.text(&format!("MAC data for {key}")).into_bytes();
        let tag = c
            .generate_mac(mac_req(key, &data))
            .await
            .unwrap()
            .into_inner()
            .mac;
        let v = c
            .verify_mac(verify_mac_req(key, &data, &tag, None))
            .await
            .unwrap();
        assert!(v.into_inner().valid);
    }
    // The password shield (issue 22 item 2): the password, the nonce, the identifiers and the
    // stored hash must appear nowhere but in the responses that carry them.
    let login_der = c
        .get_public_key(v1::GetPublicKeyRequest {
            key: login.clone(),
            key_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .public_key_der;
    let login_public = PublicKey::from_spki_der(policy, &login_der).unwrap();
    let to_login = policy
        .approve(kms_core::alg::Purpose::Password, login_public.spec())
        .unwrap();
    let seal_password = |s: &mut Secrets, label: &str, password: &str| -> Vec<u8> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let nonce = s.binary(&format!("{label} nonce"), 16);
        let plain = kms_core::crypto::password_hash::encode_sealed(password, now, &nonce).unwrap();
        encrypt_to_public_key(&to_login, &login_public, plain.expose_secret()).unwrap()
    };
    let password = s.text("password");
    let identifier = s.text("user identifier");
    let mut shield = app.password.clone();
    let hash_req = |sealed: Vec<u8>, identifiers: Vec<String>| v1::HashPasswordRequest {
        password_key: login.clone(),
        pepper_key: pepper.clone(),
        sealed_password: sealed,
        identifiers,
    };
    let sealed = seal_password(s, "hash", &password);
    let stored = shield
        .hash_password(hash_req(sealed.clone(), vec![identifier.clone()]))
        .await
        .unwrap()
        .into_inner()
        .hash;
    // Its prefix names the pepper key (public); what follows, and the hash bytes, are not.
    let inner = &stored[stored.find("$argon2id$").expect("an argon2id hash")..];
    s.keep("stored password hash (PHC)", inner.as_bytes());
    let parsed = kms_core::crypto::password_hash::StoredHash::parse(&stored).unwrap();
    s.keep("stored password hash (bytes)", &parsed.hash);
    let verify_req = |sealed: Vec<u8>| v1::VerifyPasswordRequest {
        password_key: login.clone(),
        sealed_password: sealed,
        stored_hash: stored.clone(),
        identifiers: vec![identifier.clone()],
    };
    let ok = shield
        .verify_password(verify_req(seal_password(s, "verify", &password)))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.matched);
    let wrong = s.text("wrong password");
    let no = shield
        .verify_password(verify_req(seal_password(s, "verify wrong", &wrong)))
        .await
        .unwrap()
        .into_inner();
    assert!(!no.matched);
    refusals.expect_err(
        "a replayed sealed password",
        shield
            .hash_password(hash_req(sealed, vec![identifier.clone()]))
            .await,
    );
    let weak = format!("{password}{identifier}");
    s.keep("weak password", weak.as_bytes());
    refusals.expect_err(
        "a password containing the user identifier",
        shield
            .hash_password(hash_req(
                seal_password(s, "weak", &weak),
                vec![identifier.clone()],
            ))
            .await,
    );
    // Request verification (issue 22 item 3): the partner's body, its nonce and the query of
    // its path must appear nowhere (the trail names the key and the verdict; the store keeps
    // SM3 of the nonce; Debug prints lengths). Every verdict's path is taken, and a refusal.
    let mut requests = app.requests.clone();
    let body = s.text("signed request body").into_bytes();
    let query = s.text("signed-request-query");
    let path = format!("/v1/transfers?account={query}");
    let signed_request = |nonce: &[u8], body: &[u8], tag: Vec<u8>, ts: u64| v1::SignedRequest {
        key: hmac_sm3.clone(),
        scheme: "hmac-sm3".to_owned(),
        signature: tag,
        timestamp: ts,
        nonce: nonce.to_vec(),
        method: "POST".to_owned(),
        path: path.clone(),
        body: body.to_vec(),
        body_digest: Vec::new(),
    };
    let mut verdicts = Vec::new();
    for round in 0..2 {
        let nonce = s.binary(&format!("signed request nonce {round}"), 16);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let canonical = format!(
            "KMS-REQUEST-V1\nPOST\n{path}\n{now}\n{}\n{}",
            hex::encode(&nonce),
            hex::encode(sm3::Sm3::digest(&body))
        );
        let tag = c
            .generate_mac(mac_req(&hmac_sm3, canonical.as_bytes()))
            .await
            .unwrap()
            .into_inner()
            .mac;
        let good = signed_request(&nonce, &body, tag.clone(), now);
        let mut by_digest = good.clone();
        by_digest.body_digest = sm3::Sm3::digest(&body).to_vec();
        by_digest.body.clear();
        let mut malformed = good.clone();
        malformed.path = format!("/v1/transfers?account={query} x");
        for req in [
            signed_request(&nonce, b"another body", tag.clone(), now),
            signed_request(&nonce, &body, tag.clone(), now - 3600),
            malformed,
            if round == 0 { good.clone() } else { by_digest },
            good.clone(),
        ] {
            let out = requests.verify_request(req).await.unwrap().into_inner();
            verdicts.push((out.verdict(), out.reason));
        }
        let mut both = good;
        both.body_digest = sm3::Sm3::digest(&body).to_vec();
        refusals.expect_err(
            "a signed request with its body and its digest",
            requests.verify_request(both).await,
        );
    }
    use v1::RequestVerdict::{BadSignature, Malformed, Ok as Verified, Replayed, Stale};
    assert_eq!(
        verdicts.iter().map(|v| v.0).collect::<Vec<_>>(),
        [BadSignature, Stale, Malformed, Verified, Replayed].repeat(2),
        "{verdicts:?}"
    );
    // The reasons go back to the gateway: none repeats what it was given.
    for (_, reason) in &verdicts {
        assert!(
            !reason.contains(&query) && !reason.contains("LEAK-"),
            "{reason}"
        );
    }
    let random = c
        .generate_random(v1::GenerateRandomRequest { length: 32 })
        .await
        .unwrap()
        .into_inner()
        .random;
    s.keep("random bytes", &random);
    // Rotation: the new versions are used too.
    for key in [&sm4, &hmac_sm3] {
        keys.rotate_key(v1::KeyRequest { key: key.clone() })
            .await
            .unwrap();
    }
    let after_rotation = s.binary("plaintext after rotation", 32);
    c.encrypt(enc(&sm4, &after_rotation, &context))
        .await
        .unwrap();
    let data = s.binary("MAC data after rotation", 32);
    c.generate_mac(mac_req(&hmac_sm3, &data)).await.unwrap();

    // Refused requests that carry secrets: none may come back in the error, or go to the log.
    let wrong_context = ctx(&[("customer", &s.text("wrong context value"))]);
    refusals.expect_err(
        "decrypt with the wrong context",
        c.decrypt(dec(&blob, &wrong_context)).await,
    );
    let mut tampered = blob.clone();
    tampered[40] ^= 1;
    refusals.expect_err(
        "decrypt of a tampered blob",
        c.decrypt(dec(&tampered, &context)).await,
    );
    let oversized: Vec<u8> = plain_text
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024 + 1)
        .collect();
    refusals.expect_err(
        "encrypt of 64 KiB + 1",
        c.encrypt(enc(&sm4, &oversized, &context)).await,
    );
    let refused_message = s.binary("message refused (wrong purpose)", 40);
    refusals.expect_err(
        "sign with an encryption key",
        c.sign(sign_req(&sm4, &refused_message, SigOpts::default()))
            .await,
    );
    let junk = s.binary("junk asymmetric ciphertext", 120);
    refusals.expect_err(
        "asymmetric decrypt of junk",
        c.asymmetric_decrypt(asym_req(&sm2_asym, &junk, None)).await,
    );
    let bad_public = s.binary("junk public key", 64);
    refusals.expect_err(
        "a data key wrapped to junk",
        c.generate_data_key(v1::GenerateDataKeyRequest {
            key: sm4.clone(),
            key_spec: "sm4".to_owned(),
            context: context.clone(),
            wrap_to_public_key: bad_public,
        })
        .await,
    );
    let digest_message = s.binary("digest refused (wrong length)", 33);
    refusals.expect_err(
        "sign a 33-byte digest",
        c.sign(sign_req(
            &sm2_sign,
            &digest_message,
            SigOpts {
                digest: true,
                ..SigOpts::default()
            },
        ))
        .await,
    );
    // Below the typed client: a context value that is not UTF-8 around a secret, and a
    // plaintext in a request that cannot be decoded.
    let config = net::client_config(pki.ca.cert_pem(), Some(&pki.app), MODERN);
    let ch = net::channel(addr, config).await.unwrap();
    let secret_value = s.text("context value in an undecodable request");
    let mut bad_value = secret_value.clone().into_bytes();
    bad_value.push(0xff);
    let mut body = v1::EncryptRequest {
        key: sm4.clone(),
        plaintext: s.binary("plaintext in an undecodable request", 32),
        context: HashMap::new(),
    }
    .encode_to_vec();
    body.extend(pb_bytes_field(
        3,
        &[pb_bytes_field(1, b"k"), pb_bytes_field(2, &bad_value)].concat(),
    ));
    refusals.expect_err(
        "an undecodable encrypt",
        raw_unary(ch.clone(), "/kms.v1.Crypto/Encrypt", body).await,
    );
    let mut sign = v1::SignRequest {
        key: sm2_sign.clone(),
        message: s.binary("message with a bad message_type", 40),
        ..Default::default()
    }
    .encode_to_vec();
    sign.extend([0x18, 0x07]);
    refusals.expect_err(
        "sign with message_type 7",
        raw_unary(ch, "/kms.v1.Crypto/Sign", sign).await,
    );

    // The exports, and a backup.
    let auditor = connect(addr, pki, &pki.auditor).await;
    let mut audit = String::new();
    let mut stream = auditor
        .audit
        .clone()
        .export_audit(v1::ExportAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    while let Some(chunk) = stream.message().await.unwrap() {
        audit.push_str(&chunk.lines);
    }
    let inventory = auditor
        .audit
        .clone()
        .export_inventory(v1::ExportInventoryRequest {})
        .await
        .unwrap()
        .into_inner()
        .json;
    let mut backup = Vec::new();
    let mut stream = admin
        .system
        .clone()
        .backup(v1::BackupRequest {})
        .await
        .unwrap()
        .into_inner();
    while let Some(chunk) = stream.message().await.unwrap() {
        backup.extend_from_slice(&chunk.data);
    }
    Session {
        shares,
        blob: (blob, context, plain_text),
        refusals,
        audit,
        inventory,
        backup,
        key_ids,
    }
}

/// What opening the hierarchy from outside yields.
struct Extracted {
    /// label → secret material.
    secrets: Vec<(String, Vec<u8>)>,
    /// Public keys of every version (windows of RSA private keys found in these are public).
    publics: Vec<Vec<u8>>,
    /// Wrapped material as the store keeps it (hex), to show the scan reads the store.
    wrapped_hex: Vec<(String, Vec<u8>)>,
    /// The sealed root key (hex), which a backup carries in its clear header.
    sealed_root_hex: Vec<u8>,
}

/// Opens the stopped server's store with the shares: unseal key → root key → KEKs → every key
/// version's material; and the derived backup and context-HMAC keys. Checks the extraction
/// against a blob the server made.
fn extract(
    store_dir: &Path,
    shares: &[String],
    blob: &(Vec<u8>, HashMap<String, String>, Vec<u8>),
) -> Extracted {
    let store = Arc::new(SledStore::open(store_dir).unwrap());
    let mut secrets = Vec::new();
    let mut set_id = None;
    let mut threshold = 0;
    let raws: Vec<blahaj::Share> = shares[..2]
        .iter()
        .map(|s| {
            let body = hex::decode(s.strip_prefix(SHARE_PREFIX).unwrap()).unwrap();
            let id: [u8; 8] = body[..8].try_into().unwrap();
            set_id = Some(id);
            threshold = body[8];
            blahaj::Share::try_from(&body[9..body.len() - 8]).unwrap()
        })
        .collect();
    for (i, s) in shares.iter().enumerate() {
        let body = hex::decode(s.strip_prefix(SHARE_PREFIX).unwrap()).unwrap();
        secrets.push((format!("share {i} y"), body[10..body.len() - 8].to_vec()));
    }
    let unseal = blahaj::Sharks(threshold).recover(&raws).unwrap();
    secrets.push(("unseal key".into(), unseal.clone()));
    let sealed_root = store.get(Tree::Seal, b"root").unwrap().unwrap();
    let root = wrap::forensic::unwrap(&unseal, &wrap::root_aad(&set_id.unwrap()), &sealed_root)
        .expect("the shares open the sealed root key");
    secrets.push(("root key".into(), root.expose_secret().to_vec()));
    let mut keks = HashMap::new();
    for (k, v) in store.scan_prefix(Tree::Namespaces, &[]).unwrap() {
        // Stored names, `kms-system` among them: the rule for names that exist.
        let n = Namespace::existing(std::str::from_utf8(&k).unwrap()).unwrap();
        let kek = wrap::forensic::unwrap(root.expose_secret(), &wrap::kek_aad(&n), &v).unwrap();
        secrets.push((format!("KEK of {n}"), kek.expose_secret().to_vec()));
        keks.insert(n, kek);
    }
    let mut publics = Vec::new();
    let mut wrapped_hex = Vec::new();
    let mut checked = false;
    // Each key tree once: tokenize keys share the encrypt keys' tree, password keys and
    // peppers the asymmetric-decrypt and MAC keys' trees.
    for tree in KeyRecord::KEY_TREES {
        for (_, bytes) in store.scan_prefix(tree, &[]).unwrap() {
            let r = KeyRecord::decode(&bytes).unwrap();
            for v in &r.versions {
                let Some(wrapped) = v.wrapped.clone() else {
                    continue;
                };
                let aad = wrap::key_aad(r.id, v.version, &r.namespace, r.purpose, r.spec);
                let material =
                    wrap::forensic::unwrap(keks[&r.namespace].expose_secret(), &aad, &wrapped)
                        .unwrap();
                let at = format!("{} {} v{}", r.spec, r.id, v.version);
                // The extracted SM4 key opens the server's blob: the needles are the real keys.
                let (ct, context, plaintext) = blob;
                if ct[4..20] == *r.id.as_bytes() && v.version == 1 {
                    let mut framed = vec![1, ct[3]];
                    framed.extend_from_slice(&ct[24..]);
                    let mut aad = ct[..36].to_vec();
                    let context: EncryptionContext = context.clone().into_iter().collect();
                    aad.extend_from_slice(&context.canonical_bytes());
                    let opened =
                        wrap::forensic::unwrap(material.expose_secret(), &aad, &framed).unwrap();
                    assert_eq!(opened.expose_secret(), &plaintext[..]);
                    checked = true;
                }
                secrets.push((format!("{at} material"), material.expose_secret().to_vec()));
                wrapped_hex.push((format!("wrapped {at}"), hex::encode(&wrapped).into_bytes()));
                if let Some(p) = &v.public_key {
                    publics.push(p.clone());
                }
            }
        }
    }
    assert!(checked, "no extracted key opened the session's blob");
    // The keys the KMS derives from its root, computed here from the extracted root key.
    for what in [
        Derived::BackupKey(WrapAlg::SM4_GCM),
        Derived::AuditContextHmac,
    ] {
        let k = wrap::forensic::derive(root.expose_secret(), what).unwrap();
        secrets.push((format!("derived key {what:?}"), k.expose_secret().to_vec()));
    }
    drop(store);
    // Wait for sled to let go of the directory, so that the files are complete.
    drop(SledStore::open(store_dir).unwrap());
    Extracted {
        secrets,
        publics,
        wrapped_hex,
        sealed_root_hex: hex::encode(sealed_root).into_bytes(),
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let t = entry.file_type().unwrap();
        if t.is_dir() {
            files_under(&entry.path(), out);
        } else if t.is_file() {
            out.push(entry.path());
        }
    }
}

/// `(field, value in kB)` lines of /proc/PID/status.
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {field}:\n{status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The soft and hard limits of one row of /proc/PID/limits.
fn proc_limit(pid: u32, name: &str) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("/proc/{pid}/limits has no {name}:\n{limits}"));
    let mut fields = line[name.len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

/// The log line of one hardening measure: applied, or not applied with its reason.
fn hardening_line<'a>(log: &'a [String], measure: &str) -> &'a str {
    log.iter()
        .find(|l| l.contains(measure) && l.contains("hardening"))
        .unwrap_or_else(|| panic!("the log says nothing about hardening measure {measure:?}"))
}

/// 3b: core dumps off and memory locked — read from /proc — or the log says why not.
fn check_hardening(pid: u32, log: &[String]) -> String {
    let mut report = Vec::new();
    let (soft, hard) = proc_limit(pid, "Max core file size");
    let core_line = hardening_line(log, "core dumps disabled");
    if soft == "0" && hard == "0" {
        assert!(core_line.contains("hardening applied"), "{core_line}");
        report.push("core dumps: limit 0/0".to_owned());
    } else {
        assert!(
            core_line.contains("hardening not applied") && core_line.contains("\"reason\""),
            "core file size is {soft}/{hard} and the log does not say why: {core_line}"
        );
        report.push(format!(
            "core dumps NOT disabled ({soft}/{hard}): {core_line}"
        ));
    }
    let locked = proc_status_kb(pid, "VmLck");
    let lock_line = hardening_line(log, "memory locked (mlockall)");
    if locked > 0 {
        assert!(lock_line.contains("hardening applied"), "{lock_line}");
        let rss = proc_status_kb(pid, "VmRSS");
        report.push(format!("memory locked: VmLck {locked} kB (VmRSS {rss} kB)"));
    } else {
        assert!(
            lock_line.contains("hardening not applied") && lock_line.contains("\"reason\""),
            "VmLck is 0 and the log does not say why: {lock_line}"
        );
        report.push(format!("memory NOT locked: {lock_line}"));
    }
    let dumpable = hardening_line(log, "process non-dumpable");
    assert!(
        dumpable.contains("hardening applied") || dumpable.contains("\"reason\""),
        "{dumpable}"
    );
    report.join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(clippy::too_many_lines)]
async fn no_secret_in_logs_errors_audit_store_or_backup() {
    let started = std::time::Instant::now();
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, "server.pem", &pki.server.cert_pem);
    write(dir, "server-key.pem", &pki.server.key_pem);
    write(dir, "ca.pem", pki.ca.cert_pem());
    let config = write(
        dir,
        "kms.toml",
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\naudit_checkpoint_records = 25\n\
         [tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\nclient_ca = \"ca.pem\"\n",
    );
    let server = ChildServer::start(&config, &[("KMS_LOG", "trace")]);
    let mut secrets = Secrets::new();
    let session = session(server.addr, &pki, &mut secrets, &dir.join("data")).await;

    // 3b, while the process runs.
    let running_log: Vec<String> = server
        .lines()
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let hardening = check_hardening(server.pid, &running_log);

    let (status, lines) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(
        status.success(),
        "kms-server exited with {status}; its last lines:\n{}",
        lines
            .iter()
            .rev()
            .take(20)
            .rev()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<String>()
    );
    let backup_path = write(dir, "kms.backup", "");
    fs::write(&backup_path, &session.backup).unwrap();

    let store_dir = dir.join("data").join("store");
    let (shares, blob) = (session.shares.clone(), session.blob.clone());
    let sd = store_dir.clone();
    let extracted = tokio::task::spawn_blocking(move || extract(&sd, &shares, &blob))
        .await
        .unwrap();

    // The needles: what the session used and got, what the hierarchy holds, the TLS key.
    let mut needles: Vec<Needle> = Vec::new();
    for (label, bytes) in secrets.all.iter().chain(&extracted.secrets) {
        needles_for(label, bytes, &extracted.publics, &mut needles);
    }
    // The server's TLS key: its public half is in the certificate (which TLS sends, and the log
    // may show), so windows found there are not searched for.
    let tls_key = PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).unwrap();
    let tls_cert: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pki.server.cert_pem.as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect();
    needles_for(
        "server TLS private key",
        tls_key.secret_der(),
        &tls_cert,
        &mut needles,
    );
    let scanner = Scanner::new(&needles);

    // The haystacks.
    let mut hay: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        hay.push((format!("log line {i}"), l.clone()));
    }
    hay.extend(session.refusals.haystacks());
    hay.push((
        "the audit export".into(),
        session.audit.clone().into_bytes(),
    ));
    hay.push((
        "the inventory export".into(),
        session.inventory.clone().into_bytes(),
    ));
    let mut files = Vec::new();
    files_under(&store_dir, &mut files);
    let mut store_bytes = 0;
    for f in &files {
        let bytes = fs::read(f).unwrap();
        store_bytes += bytes.len();
        hay.push((
            format!("store file {}", f.strip_prefix(dir).unwrap().display()),
            bytes,
        ));
    }
    hay.push(("the backup file".into(), fs::read(&backup_path).unwrap()));

    let mut leaks = Vec::new();
    for (what, bytes) in &hay {
        for (label, offset) in scanner.scan(bytes) {
            let around = &bytes[offset.saturating_sub(80)..(offset + 120).min(bytes.len())];
            leaks.push(format!(
                "{label} in {what} at byte {offset}: …{}…",
                String::from_utf8_lossy(around)
            ));
        }
    }

    // The scan must have looked at real content: the log is at trace level and names requests;
    // the errors carry request ids; the audit export names the keys; the store holds the wrapped
    // keys and their ids; the backup carries the sealed root key.
    let log_text = String::from_utf8_lossy(&lines.concat()).into_owned();
    let store_all: Vec<u8> = hay
        .iter()
        .filter(|(w, _)| w.starts_with("store file"))
        .flat_map(|(_, b)| b.clone())
        .collect();
    let contains = |h: &[u8], n: &[u8]| h.windows(n.len()).any(|w| w == n);
    let mut missing = Vec::new();
    if !log_text.contains("\"level\":\"TRACE\"") {
        missing.push("TRACE lines in the log".to_owned());
    }
    if !log_text.contains("kms::audit") && !log_text.contains("request") {
        missing.push("request records in the log".to_owned());
    }
    for (what, s) in &session.refusals.0 {
        if !s.message().contains("(request ") {
            missing.push(format!(
                "a request id in the error of {what}: {:?}",
                s.message()
            ));
        }
    }
    for id in &session.key_ids {
        if !session.audit.contains(id.as_str()) {
            missing.push(format!("key {id} in the audit export"));
        }
        if !contains(&store_all, id.as_bytes()) {
            missing.push(format!("key {id} in the store files"));
        }
        if !log_text.contains(id.as_str()) {
            missing.push(format!("key {id} in the log"));
        }
    }
    for (what, hex) in &extracted.wrapped_hex {
        if !contains(&store_all, hex) {
            missing.push(format!("{what} in the store files"));
        }
    }
    if !contains(&session.backup, &extracted.sealed_root_hex) {
        missing.push("the sealed root key in the backup header".to_owned());
    }
    eprintln!(
        "leak scan: {} needles ({} secrets) over {} log lines ({} bytes), {} errors, {} bytes of \
         audit, {} store files ({store_bytes} bytes), a {}-byte backup; {hardening}; {:?}",
        needles.len(),
        secrets.all.len() + extracted.secrets.len() + 1,
        lines.len(),
        log_text.len(),
        session.refusals.0.len(),
        session.audit.len(),
        files.len(),
        session.backup.len(),
        started.elapsed()
    );
    assert!(
        missing.is_empty(),
        "the scan did not see what it must see, so it proves nothing: {missing:#?}"
    );
    leaks.sort();
    leaks.dedup();
    assert!(
        leaks.is_empty(),
        "{} secret spellings found:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
