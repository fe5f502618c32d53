//! Criterion benchmarks for every kms-core primitive, driven through the public, policy-checked
//! API exactly as the service calls it.
//!
//! Keys are made once per group with `crypto::generate(&policy.approve(..)?)`, outside the timed
//! closures. Numbers therefore include what the API does on every call: token/key checks, and for
//! the asymmetric algorithms decoding the stored key material (PKCS#8 for RSA, the scalar for SM2)
//! and the public key (SPKI) each time. Key generation of SM2 and RSA includes the pairwise
//! consistency test that `generate` always runs.
//!
//! Run with `cargo bench -p kms-core --bench primitives -- --noplot`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use kms_core::KeyMaterial;
use kms_core::alg::{DataKeySpec, DigestAlg, KeySpec, Purpose, RsaSigScheme, SignatureRequest};
use kms_core::crypto::{self, AEAD_NONCE_LEN, AEAD_TAG_LEN, Message};
use kms_core::envelope::{self, EncryptionContext};
use kms_core::policy::Policy;
use uuid::Uuid;

/// Plaintext sizes for the AEADs.
const AEAD_SIZES: [usize; 3] = [64, 1024, 16 * 1024];
/// Input size for the envelope, MAC and digest benchmarks.
const KIB: usize = 1024;
/// Message signed by the signature benchmarks (hashed inside the primitive).
const SIGN_MSG: &[u8; 32] = b"kms-core benchmark message 32 B!";
/// Secret encrypted to a public key (a data key's size).
const PKE_PLAINTEXT: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

fn policy() -> Policy {
    Policy::default()
}

/// A fresh key of `spec` for `purpose`, through policy and the public generator.
fn key(purpose: Purpose, spec: KeySpec) -> KeyMaterial {
    let approved = policy().approve(purpose, spec).expect("policy approves");
    crypto::generate(&approved).expect("key generation")
}

/// Deterministic, non-trivial input bytes.
fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

fn bench_aead(c: &mut Criterion, spec: KeySpec) {
    let policy = policy();
    let seal_ok = policy
        .approve(Purpose::Encrypt, spec)
        .expect("policy approves");
    let open_ok = policy
        .approve_open(Purpose::Encrypt, spec)
        .expect("policy approves open");
    let key = crypto::generate(&seal_ok).expect("key generation");
    let nonce = [7u8; AEAD_NONCE_LEN];
    let aad = b"benchmark aad";

    let mut group = c.benchmark_group(spec.name());
    for size in AEAD_SIZES {
        let plaintext = data(size);
        let mut ciphertext = plaintext.clone();
        crypto::seal_in_place(&seal_ok, &key, &nonce, aad, &mut ciphertext).expect("seal");
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_with_input(BenchmarkId::new("seal", size), &plaintext, |b, pt| {
            b.iter_batched_ref(
                || {
                    let mut buf = Vec::with_capacity(pt.len() + AEAD_TAG_LEN);
                    buf.extend_from_slice(pt);
                    buf
                },
                |buf| {
                    crypto::seal_in_place(&seal_ok, &key, &nonce, black_box(aad), buf)
                        .expect("seal");
                },
                BatchSize::SmallInput,
            );
        });

        group.bench_with_input(BenchmarkId::new("open", size), &ciphertext, |b, ct| {
            b.iter_batched_ref(
                || ct.clone(),
                |buf| {
                    crypto::open_in_place(&open_ok, &key, &nonce, black_box(aad), buf)
                        .expect("open");
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn aead(c: &mut Criterion) {
    bench_aead(c, KeySpec::Sm4Gcm);
    bench_aead(c, KeySpec::Aes256Gcm);
}

fn bench_envelope(c: &mut Criterion) {
    let policy = policy();
    let key_id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let context: EncryptionContext = [("tenant", "bench"), ("purpose", "benchmark")]
        .into_iter()
        .collect();
    let plaintext = data(KIB);

    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Bytes(KIB as u64));
    for spec in [KeySpec::Sm4Gcm, KeySpec::Aes256Gcm] {
        let seal_ok = policy
            .approve(Purpose::Encrypt, spec)
            .expect("policy approves");
        let open_ok = policy
            .approve_open(Purpose::Encrypt, spec)
            .expect("policy approves open");
        let key = crypto::generate(&seal_ok).expect("key generation");
        let blob =
            envelope::seal(&seal_ok, &key, key_id, 1, &context, &plaintext).expect("envelope seal");

        group.bench_function(
            BenchmarkId::new(format!("seal/{}", spec.name()), KIB),
            |b| {
                b.iter(|| {
                    envelope::seal(&seal_ok, &key, key_id, 1, &context, black_box(&plaintext))
                        .expect("envelope seal")
                });
            },
        );

        // Parse + open: the whole decrypt path for a blob.
        group.bench_function(
            BenchmarkId::new(format!("open/{}", spec.name()), KIB),
            |b| {
                b.iter(|| {
                    let env = envelope::parse(black_box(&blob)).expect("parse");
                    envelope::open(&open_ok, &key, &env, &context).expect("envelope open")
                });
            },
        );
    }
    group.finish();
}

fn bench_sm2(c: &mut Criterion) {
    let policy = policy();
    let mut group = c.benchmark_group("sm2");
    // Encryption and key generation take about a millisecond on a busy machine.
    group.sample_size(50);

    // Signatures (SM3 with Z_A over the default distinguishing ID).
    let sign_approved = policy
        .approve(Purpose::Sign, KeySpec::Sm2)
        .expect("policy approves");
    let sign_key = crypto::generate(&sign_approved).expect("key generation");
    let sign_public = crypto::public_key_of(&sign_key).expect("public key");
    let request = SignatureRequest::default_for(KeySpec::Sm2).expect("default request");
    let sig_ok = policy
        .approve_signature(sign_approved, request.clone())
        .expect("policy approves signature");
    let ver_ok = policy
        .approve_verify(sign_approved.for_open(), request)
        .expect("policy approves verify");
    let signature =
        crypto::sign(&sig_ok, &sign_key, Message::Raw(SIGN_MSG)).expect("sm2 signature");

    group.bench_function("sign", |b| {
        b.iter(|| {
            crypto::sign(&sig_ok, &sign_key, Message::Raw(black_box(SIGN_MSG))).expect("sign")
        });
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            let ok = crypto::verify(
                &ver_ok,
                &sign_public,
                Message::Raw(black_box(SIGN_MSG)),
                black_box(&signature),
            )
            .expect("verify");
            assert!(ok);
        });
    });

    // Public-key encryption (GM/T 0009 DER) of a 32-byte secret.
    let dec_key = key(Purpose::AsymmetricDecrypt, KeySpec::Sm2);
    let dec_public = crypto::public_key_of(&dec_key).expect("public key");
    // Approved once, outside the measured loops: the benchmark times the primitive.
    let to_dec = policy
        .approve(Purpose::AsymmetricDecrypt, KeySpec::Sm2)
        .expect("policy approves the key");
    let dec_ok = to_dec.for_open();
    let ciphertext =
        crypto::encrypt_to_public_key(&to_dec, &dec_public, PKE_PLAINTEXT).expect("encrypt");

    group.bench_function(BenchmarkId::new("encrypt", PKE_PLAINTEXT.len()), |b| {
        b.iter(|| {
            crypto::encrypt_to_public_key(&to_dec, &dec_public, black_box(PKE_PLAINTEXT))
                .expect("encrypt")
        });
    });
    group.bench_function(BenchmarkId::new("decrypt", PKE_PLAINTEXT.len()), |b| {
        b.iter(|| {
            crypto::asymmetric_decrypt(&dec_ok, &dec_key, black_box(&ciphertext)).expect("decrypt")
        });
    });
    group.finish();
}

fn bench_rsa(c: &mut Criterion, spec: KeySpec) {
    let policy = policy();
    let mut group = c.benchmark_group(spec.name());
    // Private-key operations take milliseconds; fewer samples keep the suite short.
    group.sample_size(20);

    let sign_approved = policy
        .approve(Purpose::Sign, spec)
        .expect("policy approves");
    let sign_key = crypto::generate(&sign_approved).expect("key generation");
    let public = crypto::public_key_of(&sign_key).expect("public key");

    for scheme in [RsaSigScheme::Pss, RsaSigScheme::Pkcs1v15] {
        let request = SignatureRequest::Rsa {
            scheme,
            hash: DigestAlg::Sha256,
        };
        let sig_ok = policy
            .approve_signature(sign_approved, request.clone())
            .expect("policy approves signature");
        let ver_ok = policy
            .approve_verify(sign_approved.for_open(), request)
            .expect("policy approves verify");
        let signature =
            crypto::sign(&sig_ok, &sign_key, Message::Raw(SIGN_MSG)).expect("rsa signature");
        let name = format!("{}-sha256", scheme.name());

        group.bench_function(format!("sign/{name}"), |b| {
            b.iter(|| {
                crypto::sign(&sig_ok, &sign_key, Message::Raw(black_box(SIGN_MSG))).expect("sign")
            });
        });
        group.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| {
                let ok = crypto::verify(
                    &ver_ok,
                    &public,
                    Message::Raw(black_box(SIGN_MSG)),
                    black_box(&signature),
                )
                .expect("verify");
                assert!(ok);
            });
        });
    }

    // RSAES-OAEP with SHA-256 of a 32-byte secret.
    let dec_key = key(Purpose::AsymmetricDecrypt, spec);
    let dec_public = crypto::public_key_of(&dec_key).expect("public key");
    // Approved once, outside the measured loops: the benchmark times the primitive.
    let to_dec = policy
        .approve(Purpose::AsymmetricDecrypt, spec)
        .expect("policy approves the key");
    let dec_ok = to_dec.for_open();
    let ciphertext =
        crypto::encrypt_to_public_key(&to_dec, &dec_public, PKE_PLAINTEXT).expect("encrypt");
    group.bench_function("decrypt/oaep-sha256", |b| {
        b.iter(|| {
            crypto::asymmetric_decrypt(&dec_ok, &dec_key, black_box(&ciphertext)).expect("decrypt")
        });
    });
    group.finish();
}

fn rsa(c: &mut Criterion) {
    bench_rsa(c, KeySpec::Rsa2048);
    bench_rsa(c, KeySpec::Rsa3072);
}

fn bench_mac(c: &mut Criterion) {
    let policy = policy();
    let input = data(KIB);
    let mut group = c.benchmark_group("mac");
    group.throughput(Throughput::Bytes(KIB as u64));
    for spec in [KeySpec::HmacSm3, KeySpec::HmacSha256] {
        let approved = policy.approve(Purpose::Mac, spec).expect("policy approves");
        let key = crypto::generate(&approved).expect("key generation");
        group.bench_function(BenchmarkId::new(spec.name(), KIB), |b| {
            b.iter(|| crypto::mac(&approved, &key, black_box(&input)).expect("mac"));
        });
    }
    group.finish();
}

/// Card numbers into tokens (format pan: FF1 over the middle digits, walked until the token is
/// Luhn-valid), SM4-FF1, AES-256-FF1 and HMAC-SM3 pseudonyms: the raw figure for `kms bench
/// --op tokenize`. A thousand distinct numbers per iteration, because the walk's length depends
/// on the key and the number (about ten FF1 rounds on average, one to dozens for a single
/// number): the median over one number would measure that number's walk.
fn bench_tokenize(c: &mut Criterion) {
    use kms_core::crypto::tokenize::{TokenFormat, Tokenizer, luhn_valid};
    const PANS: u64 = 1000;
    let pans: Vec<Vec<u8>> = (0..PANS)
        .map(|i| {
            let body = format!("622202{:09}", i * 7919);
            let digits: Vec<u16> = body.bytes().map(|b| u16::from(b - b'0')).collect();
            let check = (0..10u16)
                .find(|d| luhn_valid(&[digits.clone(), vec![*d]].concat()))
                .expect("a check digit exists");
            format!("{body}{check}").into_bytes()
        })
        .collect();
    let policy = policy();
    let mut group = c.benchmark_group("tokenize");
    group.throughput(Throughput::Elements(PANS));
    for spec in [KeySpec::Sm4Ff1, KeySpec::Aes256Ff1, KeySpec::HmacSm3] {
        let approved = policy
            .approve(Purpose::Tokenize, spec)
            .expect("policy approves");
        let key = crypto::generate(&approved).expect("key generation");
        let tokens = Tokenizer::new(
            &approved,
            &key,
            TokenFormat::Pan,
            &EncryptionContext::default(),
        )
        .expect("tokenizer");
        group.bench_function(BenchmarkId::new(spec.name(), "pan-1000"), |b| {
            b.iter(|| {
                for pan in &pans {
                    black_box(tokens.tokenize(black_box(pan)).expect("token"));
                }
            });
        });
    }
    group.finish();
}

fn bench_digest(c: &mut Criterion) {
    let policy = policy();
    let input = data(KIB);
    let mut group = c.benchmark_group("digest");
    group.throughput(Throughput::Bytes(KIB as u64));
    for alg in [DigestAlg::Sm3, DigestAlg::Sha256] {
        let approved = policy.approve_digest(alg).expect("policy approves");
        group.bench_function(BenchmarkId::new(alg.name(), KIB), |b| {
            b.iter(|| crypto::digest(approved, black_box(&input)));
        });
    }
    group.finish();
}

fn bench_keygen(c: &mut Criterion) {
    let policy = policy();
    let mut group = c.benchmark_group("keygen");
    group.sample_size(50);

    let sm4 = policy
        .approve(Purpose::Encrypt, KeySpec::Sm4Gcm)
        .expect("policy approves");
    group.bench_function("sm4-gcm", |b| {
        b.iter(|| crypto::generate(black_box(&sm4)).expect("keygen"));
    });

    // Includes the pairwise-consistency sign/verify that `generate` runs on every key pair.
    let sm2 = policy
        .approve(Purpose::Sign, KeySpec::Sm2)
        .expect("policy approves");
    group.bench_function("sm2", |b| {
        b.iter(|| crypto::generate(black_box(&sm2)).expect("keygen"));
    });

    for spec in [DataKeySpec::Sm4, DataKeySpec::Aes256] {
        let kek = policy
            .approve(Purpose::Encrypt, KeySpec::Sm4Gcm)
            .expect("policy approves");
        let approved = policy
            .approve_data_key(kek, spec)
            .expect("policy approves data key");
        group.bench_function(format!("data-key/{}", spec.name()), |b| {
            b.iter(|| crypto::generate_data_key(black_box(approved)).expect("data key"));
        });
    }
    group.finish();

    // RSA key generation is slow and its time varies with the primes found: few flat samples.
    let mut group = c.benchmark_group("keygen-rsa");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    let rsa = policy
        .approve(Purpose::Sign, KeySpec::Rsa2048)
        .expect("policy approves");
    group.bench_function("rsa-2048", |b| {
        b.iter(|| crypto::generate(black_box(&rsa)).expect("keygen"));
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// The primitive crates alone, keys parsed once outside the timed closure: the floor that the
/// server's CPU time per request is compared with in docs/BENCHMARKS.md.
fn bench_raw(c: &mut Criterion) {
    use signature::{RandomizedSigner as _, Verifier as _};

    use sm2::elliptic_curve::Generate as _;

    let mut group = c.benchmark_group("raw");
    group.sample_size(20);
    let mut rng = getrandom::SysRng;

    let sm2_secret = sm2::SecretKey::try_generate_from_rng(&mut rng).expect("sm2 key");
    let signer =
        sm2::dsa::SigningKey::new(kms_core::alg::SM2_DEFAULT_ID, &sm2_secret).expect("sm2 key");
    let verifier = signer.verifying_key().clone();
    let sig: sm2::dsa::Signature = signer.try_sign_with_rng(&mut rng, SIGN_MSG).expect("sign");
    group.bench_function("sm2-sign", |b| {
        b.iter(|| -> sm2::dsa::Signature {
            signer
                .try_sign_with_rng(&mut getrandom::SysRng, black_box(SIGN_MSG))
                .expect("sign")
        });
    });
    group.bench_function("sm2-verify", |b| {
        b.iter(|| verifier.verify(black_box(SIGN_MSG), &sig).expect("verify"));
    });
    let decrypter = sm2::pke::DecryptingKey::new(sm2_secret);
    let sm2_ct = decrypter
        .encrypting_key()
        .encrypt_der(&mut rng, PKE_PLAINTEXT)
        .expect("encrypt");
    group.bench_function("sm2-decrypt", |b| {
        b.iter(|| decrypter.decrypt_der(black_box(&sm2_ct)).expect("decrypt"));
    });

    // RSA private-key operations run in AWS-LC (aws-lc-rs) in production; the rsa crate's PSS
    // signature stays measured as "-rsa-crate" for the comparison in docs/BENCHMARKS.md.
    for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072] {
        use rsa::pkcs8::EncodePrivateKey as _;

        let bits = if spec == KeySpec::Rsa2048 { 2048 } else { 3072 };
        let private = rsa::PrivateKey::new(&mut rng, bits).expect("rsa key");
        let pkcs8 = private.to_pkcs8_der().expect("pkcs8");
        let signer = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8.as_bytes()).expect("aws-lc key");
        let lc_rng = aws_lc_rs::rand::SystemRandom::new();
        let mut sig = vec![0u8; signer.public_modulus_len()];
        group.bench_function(format!("{}-sign-pss", spec.name()), |b| {
            b.iter(|| {
                signer
                    .sign(
                        &aws_lc_rs::signature::RSA_PSS_SHA256,
                        &lc_rng,
                        black_box(SIGN_MSG),
                        &mut sig,
                    )
                    .expect("sign");
            });
        });
        if spec == KeySpec::Rsa2048 {
            group.bench_function(format!("{}-sign-pss-rsa-crate", spec.name()), |b| {
                b.iter(|| {
                    private
                        .pss_sign_with_rng::<sha2::Sha256, _>(
                            &mut getrandom::SysRng,
                            black_box(SIGN_MSG),
                        )
                        .expect("sign")
                });
            });
        }
        let ct = private
            .to_public_key()
            .oaep_encrypt_with_rng::<sha2::Sha256, _>(&mut rng, PKE_PLAINTEXT)
            .expect("encrypt");
        let decrypter = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(
            aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(pkcs8.as_bytes()).expect("aws-lc key"),
        )
        .expect("oaep key");
        let mut out = vec![0u8; decrypter.min_output_size()];
        group.bench_function(format!("{}-oaep-decrypt", spec.name()), |b| {
            b.iter(|| {
                decrypter
                    .decrypt(
                        &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
                        black_box(&ct),
                        &mut out,
                        None,
                    )
                    .expect("decrypt")
                    .len()
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = aead, bench_envelope, bench_sm2, rsa, bench_mac, bench_tokenize, bench_digest, bench_keygen, bench_raw
}
criterion_main!(benches);
