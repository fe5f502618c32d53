//! The seed corpus: real inputs made with the real code (blobs, ciphertexts, signatures, keys,
//! certificates, shares, backups, audit exports, inventories, names, requests, SM2 certificate
//! chains and sm2sig_sm3 CertificateVerify signatures).
//!
//! `seeds_take_the_success_paths` checks on every run that the seeds are accepted, so that the
//! targets' round-trip branches stay reachable. To write them into `fuzz/corpus/<target>/`
//! (then minimise with `cargo fuzz cmin`, see `fuzz/README.md`):
//!
//! ```text
//! cargo test -p kms-fuzz-targets --test seeds -- --ignored write_seed_corpus
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kms_core::alg::{DigestAlg, KeySpec, Purpose, RsaSigScheme, SM2_DEFAULT_ID, SignatureRequest};
use kms_core::audit::Event;
use kms_core::audit::writer::{AuditLog, CheckpointPolicy};
use kms_core::authz::{Principal, Role};
use kms_core::crypto::{self, Message};
use kms_core::envelope::{self, EncryptionContext};
use kms_core::keys::{Alias, Namespace};
use kms_core::policy::Policy;
use kms_core::store::MemoryStore;
use kms_core::{CreateKeyRequest, KmsConfig, TestKms};
use kms_fuzz_targets::gmtls::{SERVER_NAME, join_gm_input, split_gm_input};
use kms_fuzz_targets::{TARGETS, fixtures, join_backup_input};
use kms_gmtls::x509::{LeafSpec, Sm2Ca, Sm2CertifiedKey, Usage};
use kms_proto::v1;

struct Seed {
    target: &'static str,
    name: String,
    data: Vec<u8>,
}

fn seed(target: &'static str, name: impl Into<String>, data: impl Into<Vec<u8>>) -> Seed {
    Seed {
        target,
        name: name.into(),
        data: data.into(),
    }
}

fn envelope_seeds(out: &mut Vec<Seed>) {
    let policy = Policy::default();
    for spec in [KeySpec::Sm4Gcm, KeySpec::Aes256Gcm] {
        let key = fixtures::blob_key(spec).unwrap();
        let approved = policy.approve(Purpose::Encrypt, spec).unwrap();
        let id = uuid_from(spec.code());
        for len in [0usize, 1, 17, 100] {
            let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let blob =
                envelope::seal(&approved, key, id, 1, &EncryptionContext::default(), &pt).unwrap();
            out.push(seed("envelope", format!("{spec}-{len}"), blob));
        }
        let ctx: EncryptionContext = [("tenant", "acme")].into_iter().collect();
        let blob = envelope::seal(&approved, key, id, 7, &ctx, b"with a context").unwrap();
        out.push(seed("envelope", format!("{spec}-context"), blob));
    }
}

fn uuid_from(byte: u8) -> uuid::Uuid {
    uuid::Uuid::from_bytes([byte; 16])
}

fn asymmetric_seeds(out: &mut Vec<Seed>) {
    for (target, public) in [
        ("sm2_ciphertext", fixtures::sm2_public()),
        ("rsa_ciphertext", fixtures::rsa_public()),
    ] {
        for len in [1usize, 32, 33, 100] {
            let pt: Vec<u8> = (0..len).map(|i| (i * 3) as u8).collect();
            let to = Policy::default()
                .approve(Purpose::AsymmetricDecrypt, public.spec())
                .unwrap();
            let ct = crypto::encrypt_to_public_key(&to, public, &pt).unwrap();
            out.push(seed(target, format!("len-{len}"), ct));
        }
    }
    // GB/T 32918.5 Annex C: another key's ciphertext (parses, does not decrypt).
    out.push(seed(
        "sm2_ciphertext",
        "gb-t-32918-5-annex-c",
        hex::decode(
            "307c022004ebfc718e8d1798620432268e77feb6415e2ede0e073c0f4f640ecd2e149a73022100e858f9d8\
             1e5430a57b36daab8f950a3c64e6ee6a63094d99283aff767e124df0042059983c18f809e262923c53ae\
             c295d30383b54e39d609d160afcb1908d0bd8766041321886ca989ca9c7d58087307ca93092d651efa",
        )
        .unwrap(),
    ));
}

fn sign(key: &kms_core::KeyMaterial, request: SignatureRequest) -> Vec<u8> {
    let policy = Policy::default();
    let approved = policy.approve(Purpose::Sign, key.spec()).unwrap();
    let scheme = policy.approve_signature(approved, request).unwrap();
    crypto::sign(&scheme, key, Message::Raw(fixtures::SIGNED_MESSAGE)).unwrap()
}

fn signature_seeds(out: &mut Vec<Seed>) {
    for i in 0..2 {
        let sig = sign(
            fixtures::sm2_sign(),
            SignatureRequest::Sm2 {
                id: SM2_DEFAULT_ID.to_owned(),
            },
        );
        out.push(seed("sm2_signature", format!("valid-{i}"), sig));
    }
    for scheme in [RsaSigScheme::Pss, RsaSigScheme::Pkcs1v15] {
        let sig = sign(
            fixtures::rsa_sign(),
            SignatureRequest::Rsa {
                scheme,
                hash: DigestAlg::Sha256,
            },
        );
        out.push(seed("rsa_signature", scheme.name(), sig));
    }
}

fn public_key_seeds(out: &mut Vec<Seed>) {
    for (name, key) in [
        ("sm2", fixtures::sm2_public()),
        ("rsa2048", fixtures::rsa_public()),
    ] {
        out.push(seed("public_key", format!("{name}.der"), key.spki_der()));
        out.push(seed("public_key", format!("{name}.pem"), key.to_pem()));
    }
}

fn certificate_seeds(out: &mut Vec<Seed>) {
    let ca = kms_devpki::DevCa::generate().unwrap();
    let client = ca.issue_client("fuzz-app").unwrap();
    let server = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    for (name, pem) in [
        ("client", client.cert_pem),
        ("server", server.cert_pem),
        ("ca", ca.cert_pem()),
    ] {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        out.push(seed("certificate", format!("{name}.der"), der.as_ref()));
        out.push(seed("certificate", format!("{name}.pem"), pem));
    }
}

/// An SM2 root, an intermediate under it, and leaves under each.
struct Sm2Pki {
    root: Sm2Ca,
    intermediate: Sm2CertifiedKey,
    server: Sm2CertifiedKey,
    client: Sm2CertifiedKey,
    /// A TLS client leaf of the intermediate.
    deep: Sm2CertifiedKey,
    /// A root with the same name as `root` and another key.
    other_root: Sm2Ca,
}

fn sm2_pki() -> Sm2Pki {
    let root = Sm2Ca::generate("KMS Fuzz Root CA", 3650).unwrap();
    let intermediate = root
        .issue(&LeafSpec::new("KMS Fuzz Intermediate CA", Usage::Ca, 365))
        .unwrap();
    let mut server = LeafSpec::new("kms.fuzz", Usage::TlsServer, 30);
    server.dns_names = vec![SERVER_NAME.into(), "kms.fuzz".into()];
    server.ip_addresses = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    let mut client = LeafSpec::new("fuzz-app", Usage::TlsClient, 30);
    client.uris = vec!["kms://principal/fuzz-app".into()];
    let sub_ca = Sm2Ca::from_pem(&intermediate.cert_pem, &intermediate.key_pem).unwrap();
    Sm2Pki {
        server: root.issue(&server).unwrap(),
        client: root.issue(&client).unwrap(),
        deep: sub_ca.issue(&client).unwrap(),
        other_root: Sm2Ca::generate("KMS Fuzz Root CA", 3650).unwrap(),
        intermediate,
        root,
    }
}

/// A time inside every certificate of `pki`: five minutes after the leaves were issued.
fn sm2_now(leaf: &[u8]) -> u64 {
    let id = kms_gmtls::x509::cert_identity(leaf).unwrap();
    u64::try_from(id.not_before_unix).unwrap() + 600
}

fn sm2_cert_chain_seeds(out: &mut Vec<Seed>, pki: &Sm2Pki) {
    let root = pki.root.cert_der();
    let (server, client) = (&pki.server.cert_der[..], &pki.client.cert_der[..]);
    let (deep, intermediate) = (&pki.deep.cert_der[..], &pki.intermediate.cert_der[..]);
    let now = sm2_now(server);
    let not_after = kms_gmtls::x509::cert_identity(server)
        .unwrap()
        .not_after_unix;
    // The signature's last byte (the end of s) and a byte of the serial: still strict DER.
    let mut bad_signature = server.to_vec();
    *bad_signature.last_mut().unwrap() ^= 0x01;
    let mut serial_flipped = server.to_vec();
    serial_flipped[20] ^= 0x01;
    let chains: [(&str, u64, Vec<&[u8]>); 12] = [
        ("valid-server", now, vec![server, root]),
        ("valid-client", now, vec![client, root]),
        (
            "valid-via-intermediate",
            now,
            vec![deep, root, intermediate],
        ),
        ("leaf-only", now, vec![server]),
        ("missing-intermediate", now, vec![deep, root]),
        ("wrong-anchor", now, vec![server, pki.other_root.cert_der()]),
        (
            "expired",
            u64::try_from(not_after).unwrap() + 1,
            vec![server, root],
        ),
        ("not-yet-valid", now - 3600, vec![server, root]),
        ("ca-as-leaf", now, vec![intermediate, root]),
        ("bad-signature", now, vec![&bad_signature, root]),
        ("serial-flipped", now, vec![&serial_flipped, root]),
        ("truncated", now, vec![&server[..server.len() / 2], root]),
    ];
    for (name, at, pieces) in chains {
        out.push(seed("sm2_cert_chain", name, join_gm_input(at, &pieces)));
    }
}

/// RFC 8446 §4.4.3: what a TLS 1.3 peer signs in its CertificateVerify.
fn certificate_verify_content(side: &str, transcript_hash: u8) -> Vec<u8> {
    let mut m = vec![0x20; 64];
    m.extend_from_slice(format!("TLS 1.3, {side} CertificateVerify\0").as_bytes());
    m.extend_from_slice(&[transcript_hash; 32]);
    m
}

fn tls13_sign(leaf: &Sm2CertifiedKey, content: &[u8]) -> Vec<u8> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    use rustls::sign::SigningKey;
    let der = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let key = kms_gmtls::sign::Sm2SigningKey::from_der(&der).unwrap();
    let signer = key.choose_scheme(&[kms_gmtls::sign::SM2_SM3]).unwrap();
    signer.sign(content).unwrap()
}

fn tls13_sm2_verify_seeds(out: &mut Vec<Seed>, pki: &Sm2Pki) {
    use sm2::pkcs8::EncodePublicKey;
    let root = pki.root.cert_der();
    let (server, client) = (&pki.server.cert_der[..], &pki.client.cert_der[..]);
    let now = sm2_now(client);
    let client_says = certificate_verify_content("client", 0xc1);
    let server_says = certificate_verify_content("server", 0x5e);
    let by_client = tls13_sign(&pki.client, &client_says);
    let by_server = tls13_sign(&pki.server, &server_says);
    let client_spki = kms_gmtls::x509::sm2_public_key_of(client)
        .unwrap()
        .to_public_key_der()
        .unwrap();
    let dev = kms_devpki::DevCa::generate().unwrap();
    let dev_client = dev.issue_client("fuzz-app").unwrap();
    let der = |pem: &str| {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let (dev_leaf, dev_root) = (der(&dev_client.cert_pem), der(&dev.cert_pem()));
    let inputs: [(&str, u64, [&[u8]; 4]); 7] = [
        (
            "valid-client",
            now,
            [client, root, &client_says, &by_client],
        ),
        (
            "valid-server",
            now,
            [server, root, &server_says, &by_server],
        ),
        (
            "other-content",
            now,
            [client, root, &server_says, &by_client],
        ),
        ("other-key", now, [client, root, &server_says, &by_server]),
        (
            "spki",
            now,
            [client_spki.as_bytes(), root, &client_says, &by_client],
        ),
        (
            "expired-chain",
            u64::MAX / 2,
            [client, root, &client_says, &by_client],
        ),
        (
            "not-sm2",
            now,
            [&dev_leaf, &dev_root, &client_says, &by_client],
        ),
    ];
    for (name, at, pieces) in inputs {
        out.push(seed("tls13_sm2_verify", name, join_gm_input(at, &pieces)));
    }
}

/// A KMS in memory, initialised 2-of-3, unsealed, with a few keys of each kind.
struct World {
    kms: TestKms,
    shares: Vec<kms_core::hierarchy::share::Share>,
    admin: Principal,
}

fn world() -> World {
    let kms = TestKms::open(Arc::new(MemoryStore::new()), KmsConfig::default());
    let init = kms.init(3, 2, "kms://fuzz-admin").unwrap();
    for s in &init.shares[..2] {
        kms.unseal_with(s).unwrap();
    }
    let admin = Principal::new("kms://fuzz-admin", Role::Admin).unwrap();
    let ns = Namespace::new("payments").unwrap();
    for (purpose, spec, alias) in [
        (Purpose::Encrypt, KeySpec::Sm4Gcm, Some("orders")),
        (Purpose::Encrypt, KeySpec::Aes256Gcm, None),
        (Purpose::Sign, KeySpec::Sm2, Some("signer")),
        (Purpose::Mac, KeySpec::HmacSm3, None),
    ] {
        kms.create_key(
            &admin,
            CreateKeyRequest {
                namespace: ns.clone(),
                purpose,
                spec,
                alias: alias.map(|a| Alias::new(a).unwrap()),
                rotation_period: Some(86_400 * 30),
                description: format!("fuzz seed {spec}"),
            },
        )
        .unwrap();
    }
    World {
        kms,
        shares: init.shares,
        admin,
    }
}

fn share_and_backup_seeds(out: &mut Vec<Seed>, w: &World) {
    let texts: Vec<&str> = w.shares.iter().map(|s| s.expose_text()).collect();
    out.push(seed("unseal_share", "one", texts[0]));
    let (prefix, hex) = texts[1].split_at("kms-share-1-".len());
    out.push(seed(
        "unseal_share",
        "upper-case-hex",
        format!("{prefix}{}", hex.to_uppercase()),
    ));
    out.push(seed("unseal_share", "all-three", texts.join("\n")));
    let backup = w.kms.backup(&w.admin).unwrap();
    out.push(seed(
        "backup",
        "two-shares",
        join_backup_input(&w.shares[..2], &backup),
    ));
    out.push(seed(
        "backup",
        "three-shares",
        join_backup_input(&w.shares, &backup),
    ));
}

/// The part of an export after record `after`, as retention files it: the signed closing
/// checkpoint of the segment before (the anchor), then the records and checkpoints after it,
/// then the export's own closing checkpoint.
fn anchored_segment(export: &str, after: u64) -> String {
    use kms_core::audit::{Checkpoint, Format, Line};

    let lines: Vec<Line> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hash = lines
        .iter()
        .find_map(|l| match l {
            Line::Record(r) if r.seq == after => Some(r.hash().unwrap()),
            Line::Record(_) | Line::Checkpoint(_) => None,
        })
        .unwrap();
    let mut anchor = Checkpoint {
        format: Format::CURRENT,
        seq: after,
        time_ms: 1_700_000_000_000,
        node: "node-1".into(),
        last_hash: hash,
        closes_export: true,
        key_id: "00000000-0000-4000-8000-00000000f022".into(),
        key_version: 1,
        key_fingerprint: None,
        signature: String::new(),
    };
    anchor.signature = hex::encode(fixtures::sm2_sign_bytes(&anchor.signed_bytes().unwrap()));
    let mut out = serde_json::to_string(&Line::Checkpoint(anchor)).unwrap() + "\n";
    for line in &lines {
        let seq = match line {
            Line::Record(r) => r.seq,
            Line::Checkpoint(cp) => cp.seq,
        };
        if seq > after {
            out.push_str(&serde_json::to_string(line).unwrap());
            out.push('\n');
        }
    }
    out
}

fn audit_and_inventory_seeds(out: &mut Vec<Seed>, w: &World) {
    for (name, events) in [("short", 1u64), ("checkpointed", 7)] {
        let log = AuditLog::start(
            Arc::new(MemoryStore::new()),
            "node-1",
            fixtures::audit_signer(),
            CheckpointPolicy {
                every_records: 3,
                every: Duration::from_secs(3600),
            },
        );
        for i in 0..events {
            log.append_blocking(Event {
                request_id: format!("req-{i}"),
                principal: "kms://fuzz-app".into(),
                role: "app".into(),
                operation: "Crypto/Encrypt".into(),
                key_id: Some("6f1c2a7e-33b1-4c55-9c7e-2b8f5d1e0a11".into()),
                key_version: Some(1),
                outcome: if i % 3 == 2 {
                    "PERMISSION_DENIED"
                } else {
                    "OK"
                }
                .into(),
                context_hmac: (i % 2 == 0).then(|| "ab".repeat(32)),
                flags: if i == 4 {
                    vec!["key-compromised".into()]
                } else {
                    Vec::new()
                },
                transport: None,
                traceparent: None,
                transfer: None,
                batch_id: None,
                pepper: None,
                count: None,
            })
            .unwrap();
        }
        let text = log.export().unwrap();
        log.stop();
        if name == "checkpointed" {
            out.push(seed("audit_file", "anchored", anchored_segment(&text, 3)));
        }
        out.push(seed("audit_file", name, text));
    }
    let inventory = fixtures::sign_inventory(w.kms.inventory(&w.admin).unwrap());
    out.push(seed(
        "inventory_file",
        "pretty",
        serde_json::to_string_pretty(&inventory).unwrap(),
    ));
    out.push(seed(
        "inventory_file",
        "compact",
        serde_json::to_string(&inventory).unwrap(),
    ));
}

fn name_seeds(out: &mut Vec<Seed>) {
    let names = [
        "sm4-gcm",
        "AES_256_GCM",
        "sm2",
        "RSA-3072",
        "hmac-sm3",
        "hmac-sha512",
        "SHA-256",
        "sm3",
        "pss",
        "pkcs1-v1_5",
        "oaep-sha256",
        "aes-256",
        "DES",
        "rsa-1024",
        "SM4-ECB",
        "aes-256-cbc",
        "md5",
        "payments:orders",
        "6f1c2a7e-33b1-4c55-9c7e-2b8f5d1e0a11",
        "orders/card-pan",
        "app",
        "generate-data-key",
    ];
    for n in names {
        out.push(seed("algorithm_names", n.replace(['/', ':'], "_"), n));
    }
}

fn request(selector: u8, m: &impl prost::Message) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(&m.encode_to_vec());
    out
}

fn proto_seeds(out: &mut Vec<Seed>) {
    let ctx: std::collections::HashMap<String, String> =
        [("tenant".to_owned(), "acme".to_owned())].into();
    let reqs = [
        (
            "encrypt",
            request(
                0,
                &v1::EncryptRequest {
                    key: "orders".into(),
                    plaintext: b"card".to_vec(),
                    context: ctx.clone(),
                },
            ),
        ),
        (
            "decrypt",
            request(
                1,
                &v1::DecryptRequest {
                    ciphertext: vec![b'K', b'M', 1, 1],
                    context: ctx.clone(),
                },
            ),
        ),
        (
            "data-key",
            request(
                3,
                &v1::GenerateDataKeyRequest {
                    key: "payments:orders".into(),
                    key_spec: "aes-256".into(),
                    context: ctx,
                    wrap_to_public_key: fixtures::sm2_public().spki_der().to_vec(),
                },
            ),
        ),
        (
            "verify",
            request(
                5,
                &v1::VerifyRequest {
                    key: "6f1c2a7e-33b1-4c55-9c7e-2b8f5d1e0a11".into(),
                    message: b"m".to_vec(),
                    message_type: 1,
                    sm2_id: String::new(),
                    rsa_scheme: "pss".into(),
                    hash: "sha256".into(),
                    signature: vec![0x30, 0x00],
                    key_version: Some(2),
                },
            ),
        ),
        (
            "create-key",
            request(
                12,
                &v1::CreateKeyRequest {
                    namespace: "payments".into(),
                    purpose: 1,
                    algorithm: "sm4-gcm".into(),
                    alias: "orders".into(),
                    rotation_period_seconds: Some(86_400),
                    description: "d".into(),
                    origin: String::new(),
                    exportable: false,
                },
            ),
        ),
        (
            "create-grant",
            request(
                18,
                &v1::CreateGrantRequest {
                    key: "orders".into(),
                    grantee_namespace: "billing".into(),
                    operations: vec!["encrypt,decrypt".into(), "describe".into()],
                },
            ),
        ),
        (
            "add-principal",
            request(
                21,
                &v1::AddPrincipalRequest {
                    subject: "kms://billing".into(),
                    role: "app".into(),
                    namespace: "billing".into(),
                },
            ),
        ),
        (
            "unseal",
            request(
                24,
                &v1::UnsealRequest {
                    share: "kms-share-1-00".into(),
                },
            ),
        ),
    ];
    for (name, bytes) in reqs {
        out.push(seed("proto_request", name, bytes));
    }
}

/// Material wrapped by each spec to the fixture wrapping keys: a 16- and a 32-byte secret, and
/// the SM2 PKCS#8 (the RSA one too for rsa-aes-kwp, too large for OAEP).
fn wrapped_material_seeds(out: &mut Vec<Seed>) {
    use kms_core::crypto::transport::{WrappingSpec, wrap};
    let sm2_p8 = fixtures::PRIVATE_KEYS[0].1;
    let rsa_p8 = fixtures::PRIVATE_KEYS[1].1;
    for (selector, spec) in WrappingSpec::ALL.into_iter().enumerate() {
        let key = if spec == WrappingSpec::Sm2 {
            fixtures::sm2_decrypt()
        } else {
            fixtures::rsa3072_wrap()
        };
        let public = crypto::public_key_of(key).unwrap();
        let approved = Policy::default()
            .approve(Purpose::AsymmetricDecrypt, public.spec())
            .unwrap();
        let mut materials: Vec<(&str, &[u8])> = vec![
            ("sm4", &[0x34; 16]),
            ("aes", &[0xa5; 32]),
            ("sm2-pkcs8", sm2_p8),
        ];
        if spec == WrappingSpec::RsaAesKwp {
            materials.push(("rsa-pkcs8", rsa_p8));
        }
        for (name, material) in materials {
            let mut data = vec![u8::try_from(selector).unwrap()];
            data.extend(wrap(&approved, spec, &public, material).unwrap());
            out.push(seed(
                "wrapped_material",
                format!("{}-{name}", spec.name()),
                data,
            ));
        }
    }
}

/// The fixture keys as DER and PEM, one with attributes, and an encrypted PKCS#8 shape.
fn private_key_seeds(out: &mut Vec<Seed>) {
    use sm2::pkcs8::der::pem::{LineEnding, encode_string};
    for (name, der) in fixtures::PRIVATE_KEYS {
        out.push(seed("private_key", format!("{name}.der"), der));
        let pem = encode_string("PRIVATE KEY", LineEnding::LF, der).unwrap();
        out.push(seed("private_key", format!("{name}.pem"), pem));
    }
    let mut with_attributes = fixtures::PRIVATE_KEYS[0].1.to_vec();
    with_attributes.extend_from_slice(&[0xa0, 0x00]);
    with_attributes[2] += 2;
    out.push(seed("private_key", "attributes", with_attributes));
    out.push(seed(
        "private_key",
        "encrypted",
        hex::decode("3012300906052b0e03021a0500040500010203ff").unwrap(),
    ));
}

/// Sealed structures as clients write them, and stored hashes as the KMS writes them (the
/// known answers of `kms-core/src/crypto/password_hash/tests.rs`).
fn password_seeds(out: &mut Vec<Seed>) {
    use kms_core::crypto::password_hash::encode_sealed;
    for (name, password, nonce_len) in [
        ("ascii", "Passw0rd!", 16),
        ("cjk", "密码密码密码12", 32),
        ("longest", &"p".repeat(256)[..], 32),
    ] {
        let nonce: Vec<u8> = (0..nonce_len).map(|i| i as u8).collect();
        let sealed = encode_sealed(password, 1_733_250_000, &nonce).unwrap();
        out.push(seed("sealed_password", name, sealed.expose_secret()));
    }
    for (name, stored) in [
        (
            "argon2id",
            "$kms-pepper$k=6f1c3a52-9d0e-4c1b-8a7e-2b4d5f6a7b8c,v=3$argon2id$v=19$m=64,t=3,p=1$paWlpaWlpaWlpaWlpaWlpQ$S8tEB8T6FgJtZAJbeP+XEPHIhwXzCYDMnqrOnsYaVZg",
        ),
        (
            "pbkdf2-sm3",
            "$kms-pepper$k=6f1c3a52-9d0e-4c1b-8a7e-2b4d5f6a7b8c,v=3$pbkdf2-sm3$i=1000,l=32$paWlpaWlpaWlpaWlpaWlpQ$P//JmXBlhxwuFfjxEO0CVhwZehLBjcycnZo0hbwKymc",
        ),
    ] {
        out.push(seed("stored_hash", name, stored));
    }
}

fn all_seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    password_seeds(&mut out);
    wrapped_material_seeds(&mut out);
    private_key_seeds(&mut out);
    envelope_seeds(&mut out);
    asymmetric_seeds(&mut out);
    signature_seeds(&mut out);
    public_key_seeds(&mut out);
    certificate_seeds(&mut out);
    let w = world();
    share_and_backup_seeds(&mut out, &w);
    audit_and_inventory_seeds(&mut out, &w);
    name_seeds(&mut out);
    proto_seeds(&mut out);
    let pki = sm2_pki();
    sm2_cert_chain_seeds(&mut out, &pki);
    tls13_sm2_verify_seeds(&mut out, &pki);
    token_seeds(&mut out);
    signed_request_seeds(&mut out);
    out
}

/// Requests as gateways forward them: each scheme, a body and a digest, an empty body, the
/// longest path and nonce allowed (all valid: they take the success path).
fn signed_request_seeds(out: &mut Vec<Seed>) {
    let join = |selector: u8, fields: [&[u8]; 4]| {
        let mut data = vec![selector];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                data.push(0);
            }
            data.extend_from_slice(f);
        }
        data
    };
    let body = br#"{"amount":"100.00"}"#;
    let path = b"/v1/transfers?channel=mobile";
    out.push(seed(
        "signed_request",
        "sm2-body",
        join(0, [b"POST", path, b"0123456789abcdef", body]),
    ));
    out.push(seed(
        "signed_request",
        "hmac-sm3-empty",
        join(1, [b"GET", b"/", b"nonce-01", b""]),
    ));
    out.push(seed(
        "signed_request",
        "rsa-pss-body",
        join(2, [b"PUT", path, &[0xa5; 64], body]),
    ));
    out.push(seed(
        "signed_request",
        "sm2-digest",
        join(0x80, [b"POST", path, b"0123456789abcdef", &[0x5a; 32]]),
    ));
    let long_path = format!("/{}", "p".repeat(8191));
    out.push(seed(
        "signed_request",
        "longest-path",
        join(1, [b"DELETE", long_path.as_bytes(), b"12345678", b"x"]),
    ));
}

/// Token values for every key spec and format (`token_values`: selector byte, context, `\n`,
/// value), and CSV files (`token_csv`): the valid ones take the success paths.
fn token_seeds(out: &mut Vec<Seed>) {
    let values: [&[u8]; 4] = [
        b"123456789012",
        b"Customer42xY",
        b"6222020200112233446",
        b"4111111111111111",
    ];
    for (spec, spec_name) in ["sm4", "aes", "hmac"].into_iter().enumerate() {
        for (format, value) in values.iter().enumerate() {
            let selector = u8::try_from(format * 3 + spec).unwrap();
            let name = crypto::tokenize::TokenFormat::ALL[format].name();
            out.push(seed(
                "token_values",
                format!("{spec_name}-{name}"),
                [&[selector][..], b"cards\n", value].concat(),
            ));
        }
    }
    for (name, csv) in [
        (
            "crlf",
            &b"id,pan,\"name, given\"\r\n1,6222020200112233446,\"Li, \"\"Lei\"\"\"\r\n2,,x\r\n"[..],
        ),
        ("lf", b"a,b\nc,d"),
        ("quoted-newline", b"\"multi\nline\",2\n"),
    ] {
        out.push(seed("token_csv", name, csv));
    }
}

#[test]
fn seeds_take_the_success_paths() {
    let seeds = all_seeds();
    for (name, target) in TARGETS {
        assert!(
            seeds.iter().any(|s| s.target == *name),
            "no seed for target {name}"
        );
        for s in seeds.iter().filter(|s| s.target == *name) {
            target(&s.data);
        }
    }
    let policy = Policy::default();
    for s in &seeds {
        let ok = match s.target {
            "envelope" => {
                let blob = envelope::parse(&s.data).unwrap();
                let key = fixtures::blob_key(blob.header.spec).unwrap();
                let open = policy
                    .approve_open(Purpose::Encrypt, blob.header.spec)
                    .unwrap();
                s.name.ends_with("context")
                    || envelope::open(&open, key, &blob, &EncryptionContext::default()).is_ok()
            }
            "sm2_ciphertext" | "rsa_ciphertext" => {
                let (spec, key) = if s.target == "sm2_ciphertext" {
                    (KeySpec::Sm2, fixtures::sm2_decrypt())
                } else {
                    (KeySpec::Rsa2048, fixtures::rsa_decrypt())
                };
                let open = policy
                    .approve_open(Purpose::AsymmetricDecrypt, spec)
                    .unwrap();
                s.name.starts_with("gb-t")
                    || crypto::asymmetric_decrypt(&open, key, &s.data).is_ok()
            }
            "backup" => {
                let (shares, file) = kms_fuzz_targets::split_backup_input(&s.data);
                let fresh = TestKms::open(Arc::new(MemoryStore::new()), KmsConfig::default());
                fresh.restore(file, &shares).is_ok()
            }
            "audit_file" => kms_core::audit::verify(
                std::str::from_utf8(&s.data).unwrap(),
                fixtures::sm2_public(),
            )
            .is_ok_and(|v| v.anchor.is_some() == (s.name == "anchored")),
            "wrapped_material" => {
                use kms_core::crypto::transport::{WrappingSpec, unwrap};
                let spec = WrappingSpec::ALL[usize::from(s.data[0])];
                let key = if spec == WrappingSpec::Sm2 {
                    fixtures::sm2_decrypt()
                } else {
                    fixtures::rsa3072_wrap()
                };
                let open = policy
                    .approve_open(Purpose::AsymmetricDecrypt, key.spec())
                    .unwrap();
                unwrap(&open, spec, key, &s.data[1..]).is_ok()
            }
            "private_key" => {
                let der = crypto::pkcs8_shape::der_from_pem_or_der(&s.data).unwrap();
                let imported =
                    crypto::import_private_key(policy, Purpose::Sign, der.expose_secret()).is_ok();
                let refused_by_shape = s.name == "attributes" || s.name == "encrypted";
                imported != refused_by_shape
            }
            "sealed_password" => {
                crypto::password_hash::parse_sealed(kms_core::SecretBytes::copy_from_slice(&s.data))
                    .is_ok()
            }
            "stored_hash" => {
                crypto::password_hash::StoredHash::parse(std::str::from_utf8(&s.data).unwrap())
                    .is_ok()
            }
            "inventory_file" => kms_core::verify_inventory(
                std::str::from_utf8(&s.data).unwrap(),
                fixtures::sm2_public(),
            )
            .is_ok(),
            "unseal_share" => {
                kms_core::hierarchy::share::parse(&kms_core::hierarchy::share::Share::from_text(
                    std::str::from_utf8(&s.data)
                        .unwrap()
                        .lines()
                        .next()
                        .unwrap(),
                ))
                .is_ok()
            }
            // The `valid-*` chains verify, and only they.
            "sm2_cert_chain" => {
                let (now, pieces) = split_gm_input(&s.data, 3);
                let anchors: Vec<&[u8]> = pieces.iter().skip(1).take(1).copied().collect();
                let verified = kms_gmtls::x509::verify_chain(
                    pieces[0],
                    pieces.get(2..).unwrap_or_default(),
                    &anchors,
                    now,
                    kms_gmtls::x509::Purpose::Any,
                );
                verified.is_ok() == s.name.starts_with("valid")
            }
            // The `valid-*` and `spki` signatures verify with the first piece's key, and
            // only they.
            "tls13_sm2_verify" => {
                use sm2::pkcs8::EncodePublicKey;
                let (_, pieces) = split_gm_input(&s.data, 4);
                let spki = if s.name == "spki" {
                    pieces[0].to_vec()
                } else {
                    kms_gmtls::x509::sm2_public_key_of(pieces[0]).map_or_else(
                        |_| Vec::new(),
                        |k| k.to_public_key_der().unwrap().as_bytes().to_vec(),
                    )
                };
                let valid = kms_gmtls::sign::verify_tls13(&spki, pieces[2], pieces[3]).is_ok();
                valid
                    == (s.name.starts_with("valid")
                        || s.name == "spki"
                        || s.name == "expired-chain")
            }
            "token_values" => {
                use kms_core::crypto::tokenize::{TokenFormat, Tokenizer};
                let spec = [KeySpec::Sm4Ff1, KeySpec::Aes256Ff1, KeySpec::HmacSm3]
                    [usize::from(s.data[0] % 3)];
                let format = TokenFormat::ALL[usize::from(s.data[0] / 3 % 4)];
                let approved = policy.approve(Purpose::Tokenize, spec).unwrap();
                let raw = vec![0u8; if spec == KeySpec::Sm4Ff1 { 16 } else { 32 }];
                let key = kms_core::KeyMaterial::import_symmetric(
                    &approved,
                    kms_core::SecretBytes::from_vec(raw),
                )
                .unwrap();
                let context: EncryptionContext = [("fuzz", "cards")].into_iter().collect();
                // After the selector byte (which may itself be a newline: 10).
                let value = s.data[1..].splitn(2, |&b| b == b'\n').nth(1).unwrap();
                Tokenizer::new(&approved, &key, format, &context)
                    .unwrap()
                    .tokenize(value)
                    .is_ok()
            }
            "token_csv" => kms_cli::csv::parse(&s.data).is_ok(),
            "signed_request" => {
                use kms_core::signed_request::{RequestBody, RequestParts, RequestScheme};
                let (selector, [method, path, nonce, body]) =
                    kms_fuzz_targets::split_signed_request(&s.data).unwrap();
                let parts = RequestParts {
                    method: std::str::from_utf8(method).unwrap(),
                    path: std::str::from_utf8(path).unwrap(),
                    timestamp: 1_764_806_400,
                    nonce,
                    body: if selector & 0x80 == 0 {
                        RequestBody::Bytes(body)
                    } else {
                        RequestBody::Digest(body)
                    },
                };
                let scheme = RequestScheme::ALL[usize::from(selector & 0x7f) % 3];
                kms_core::signed_request::canonical(scheme, &parts).is_ok()
            }
            _ => true,
        };
        assert!(ok, "seed {}/{} is not accepted", s.target, s.name);
    }
}

/// Writes the seeds into `fuzz/corpus/<target>/seed-<name>` (run by hand, then `cargo fuzz cmin`).
#[test]
#[ignore = "writes into fuzz/corpus; run by hand when the formats change"]
fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for s in all_seeds() {
        let dir = root.join(s.target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{}", s.name)), &s.data).unwrap();
    }
}
