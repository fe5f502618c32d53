//! Criterion benchmarks of the core's data-plane operations without the network: what one
//! `Kms` call costs on a real sled store, with every check the server path runs (role, unsealed,
//! reach by alias, purpose, state, policy) and the key-version cache warm. This is the ceiling
//! for the server: `kms bench` through gRPC and mTLS can only add to these times.
//!
//! Run with `cargo bench -p kms-core --bench core_ops -- --noplot`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kms_core::alg::{DataKeySpec, KeySpec, Purpose, RsaSigScheme, SignatureParams};
use kms_core::authz::{Principal, Role};
use kms_core::crypto::{self, Message};
use kms_core::envelope::EncryptionContext;
use kms_core::keys::{Alias, KeyRef, Namespace};
use kms_core::store::SledStore;
use kms_core::{CreateKeyRequest, DataKeyMode, KmsConfig, TestKms};

const KIB: usize = 1024;
const SIGN_MSG: &[u8; 32] = b"kms-core benchmark message 32 B!";
const SECRET32: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

struct World {
    kms: TestKms,
    app: Principal,
    ns: Namespace,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        let kms = TestKms::open(Arc::new(store), KmsConfig::default());
        let init = kms.init(1, 1, "admin").unwrap();
        kms.unseal_with(&init.shares[0]).unwrap();
        let admin = kms.principal("admin").unwrap().unwrap();
        let ns = Namespace::new("bench").unwrap();
        let app = kms
            .add_principal(
                &admin,
                "bench-app",
                Role::App {
                    namespace: ns.clone(),
                },
            )
            .unwrap();
        let world = Self {
            kms,
            app,
            ns,
            _dir: dir,
        };
        for (alias, purpose, spec) in [
            ("sm4", Purpose::Encrypt, KeySpec::Sm4Gcm),
            ("aes", Purpose::Encrypt, KeySpec::Aes256Gcm),
            ("sm2-sign", Purpose::Sign, KeySpec::Sm2),
            ("sm2-dec", Purpose::AsymmetricDecrypt, KeySpec::Sm2),
            ("rsa2048-sign", Purpose::Sign, KeySpec::Rsa2048),
            ("rsa2048-dec", Purpose::AsymmetricDecrypt, KeySpec::Rsa2048),
            ("rsa3072-sign", Purpose::Sign, KeySpec::Rsa3072),
            ("hmac", Purpose::Mac, KeySpec::HmacSm3),
        ] {
            world
                .kms
                .create_key(
                    &admin,
                    CreateKeyRequest {
                        namespace: world.ns.clone(),
                        purpose,
                        spec,
                        alias: Some(Alias::new(alias).unwrap()),
                        rotation_period: None,
                        description: String::new(),
                    },
                )
                .unwrap();
        }
        world
    }

    fn key(&self, alias: &str) -> KeyRef {
        KeyRef::parse(alias, &self.ns).unwrap()
    }
}

fn context() -> EncryptionContext {
    EncryptionContext::new(BTreeMap::from([("order".to_owned(), "42".to_owned())]))
}

fn symmetric(c: &mut Criterion, w: &World) {
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Bytes(KIB as u64));
    let ctx = context();
    let plaintext = vec![0x5a; KIB];
    for alias in ["sm4", "aes"] {
        let key = w.key(alias);
        group.bench_function(format!("encrypt/{alias}/1024"), |b| {
            b.iter(|| {
                w.kms
                    .encrypt(&w.app, &key, &ctx, black_box(&plaintext))
                    .unwrap()
            });
        });
        let ct = w.kms.encrypt(&w.app, &key, &ctx, &plaintext).unwrap();
        group.bench_function(format!("decrypt/{alias}/1024"), |b| {
            b.iter(|| {
                w.kms
                    .decrypt(&w.app, &ctx, black_box(&ct.ciphertext))
                    .unwrap()
            });
        });
    }
    let sm4 = w.key("sm4");
    group.bench_function("datakey/sm4", |b| {
        b.iter(|| {
            w.kms
                .generate_data_key(
                    &w.app,
                    &sm4,
                    DataKeySpec::Sm4,
                    &ctx,
                    DataKeyMode::WithPlaintext,
                )
                .unwrap()
        });
    });
    let hmac = w.key("hmac");
    group.bench_function("mac/hmac-sm3/1024", |b| {
        b.iter(|| {
            w.kms
                .generate_mac(&w.app, &hmac, black_box(&plaintext))
                .unwrap()
        });
    });
    group.finish();
}

fn asymmetric(c: &mut Criterion, w: &World) {
    let mut group = c.benchmark_group("core");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    let default = SignatureParams::default();
    for alias in ["sm2-sign", "rsa2048-sign", "rsa3072-sign"] {
        let key = w.key(alias);
        let params = if alias.starts_with("rsa") {
            SignatureParams {
                rsa_scheme: Some(RsaSigScheme::Pss),
                ..SignatureParams::default()
            }
        } else {
            default.clone()
        };
        group.bench_function(format!("sign/{alias}"), |b| {
            b.iter(|| {
                w.kms
                    .sign(&w.app, &key, Message::Raw(black_box(SIGN_MSG)), &params)
                    .unwrap()
            });
        });
        if alias == "sm2-sign" {
            let sig = w
                .kms
                .sign(&w.app, &key, Message::Raw(SIGN_MSG), &params)
                .unwrap();
            group.bench_function("verify/sm2-sign", |b| {
                b.iter(|| {
                    let out = w
                        .kms
                        .verify(
                            &w.app,
                            &key,
                            Message::Raw(SIGN_MSG),
                            black_box(&sig.signature),
                            &params,
                            None,
                        )
                        .unwrap();
                    assert!(out.valid);
                });
            });
        }
    }
    for alias in ["sm2-dec", "rsa2048-dec"] {
        let key = w.key(alias);
        let public = w.kms.get_public_key(&w.app, &key, None).unwrap().public_key;
        let ct = crypto::encrypt_to_public_key(
            &kms_core::policy::Policy::default()
                .approve(Purpose::AsymmetricDecrypt, public.spec())
                .unwrap(),
            &public,
            SECRET32,
        )
        .unwrap();
        group.bench_function(format!("asym-decrypt/{alias}"), |b| {
            b.iter(|| {
                w.kms
                    .asymmetric_decrypt(&w.app, &key, black_box(&ct), None)
                    .unwrap()
            });
        });
    }
    group.finish();
}

fn core_ops(c: &mut Criterion) {
    let world = World::new();
    symmetric(c, &world);
    asymmetric(c, &world);
}

criterion_group!(benches, core_ops);
criterion_main!(benches);
