//! Key transport specs (issue 19: keys move in and out only wrapped), judged by outside tools:
//! OpenSSL opens what the KMS wraps and wraps what the KMS opens (`sm2`, `rsa-oaep-sha256`);
//! Python's `cryptography` builds and opens `rsa-aes-kwp` (RSA-OAEP-SHA-256 of an AES-256 key,
//! then RFC 5649 AES key wrap with padding, AWS's `RSA_AES_KEY_WRAP_SHA_256` layout). Damaged
//! or cut blobs and keys that do not fit a spec are refused with the error that says so.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use kms_core::alg::Purpose;
use kms_core::crypto::transport::{self, WrappingSpec};
use kms_core::crypto::{self, PublicKey};
use kms_core::policy::Policy;
use kms_core::{CryptoError, KeyMaterial};

fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (required judge): {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An OpenSSL key: its PEM path, PKCS#8 DER and public key.
struct Key {
    pem: std::path::PathBuf,
    pub_pem: std::path::PathBuf,
    material: KeyMaterial,
    public: PublicKey,
}

fn openssl_key(dir: &Path, name: &str, args: &[&str]) -> Key {
    let pem = dir.join(format!("{name}.pem"));
    let mut all = vec!["genpkey"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-out", p(&pem)]);
    run("openssl", &all, None);
    let der = run(
        "openssl",
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            p(&pem),
            "-outform",
            "DER",
        ],
        None,
    )
    .stdout;
    let pub_pem = dir.join(format!("{name}.pub.pem"));
    run(
        "openssl",
        &["pkey", "-in", p(&pem), "-pubout", "-out", p(&pub_pem)],
        None,
    );
    let policy = Policy::default();
    let material = crypto::import_private_key(policy, Purpose::AsymmetricDecrypt, &der).unwrap();
    let public =
        PublicKey::from_spki_pem(policy, &std::fs::read_to_string(&pub_pem).unwrap()).unwrap();
    Key {
        pem,
        pub_pem,
        material,
        public,
    }
}

fn wrap(spec: WrappingSpec, key: &Key, material: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let approved = Policy::default()
        .approve(Purpose::AsymmetricDecrypt, key.public.spec())
        .unwrap();
    transport::wrap(&approved, spec, &key.public, material)
}

fn unwrap(spec: WrappingSpec, key: &Key, wrapped: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let approved = Policy::default()
        .approve_open(Purpose::AsymmetricDecrypt, key.material.spec())
        .unwrap();
    transport::unwrap(&approved, spec, &key.material, wrapped).map(|s| s.expose_secret().to_vec())
}

const OAEP: [&str; 6] = [
    "-pkeyopt",
    "rsa_padding_mode:oaep",
    "-pkeyopt",
    "rsa_oaep_md:sha256",
    "-pkeyopt",
    "rsa_mgf1_md:sha256",
];

fn pkeyutl(dir: &Path, op: &str, key: &Path, pubin: bool, opts: &[&str], input: &[u8]) -> Vec<u8> {
    let in_path = dir.join("in.bin");
    std::fs::write(&in_path, input).unwrap();
    let mut args = vec!["pkeyutl", op, "-inkey", p(key)];
    if pubin {
        args.push("-pubin");
    }
    args.extend_from_slice(opts);
    args.extend_from_slice(&["-in", p(&in_path)]);
    run("openssl", &args, None).stdout
}

/// Material of the sizes import carries: an SM4 key, an AES-256 / HMAC key, a PKCS#8 SM2 key.
fn materials() -> Vec<Vec<u8>> {
    vec![
        crypto::rng::random_public(16).unwrap(),
        crypto::rng::random_public(32).unwrap(),
        crypto::rng::random_public(138).unwrap(),
    ]
}

#[test]
fn sm2_and_rsa_oaep_wraps_open_with_openssl_and_the_other_way() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sm2 = openssl_key(d, "sm2", &["-algorithm", "SM2"]);
    let rsa = openssl_key(
        d,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
    );
    for m in materials() {
        let w = wrap(WrappingSpec::Sm2, &sm2, &m).unwrap();
        assert_eq!(pkeyutl(d, "-decrypt", &sm2.pem, false, &[], &w), m);
        let w = pkeyutl(d, "-encrypt", &sm2.pub_pem, true, &[], &m);
        assert_eq!(unwrap(WrappingSpec::Sm2, &sm2, &w).unwrap(), m);

        let w = wrap(WrappingSpec::RsaOaepSha256, &rsa, &m).unwrap();
        assert_eq!(pkeyutl(d, "-decrypt", &rsa.pem, false, &OAEP, &w), m);
        let w = pkeyutl(d, "-encrypt", &rsa.pub_pem, true, &OAEP, &m);
        assert_eq!(unwrap(WrappingSpec::RsaOaepSha256, &rsa, &w).unwrap(), m);
    }
}

/// Python: unwrap what the KMS wrapped (first argument "open"), or wrap for the KMS ("make").
const PY_KWP: &str = r#"
import sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding, aes_key_unwrap_with_padding
import os
mode, key_path = sys.argv[1], sys.argv[2]
data = sys.stdin.buffer.read()
oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
if mode == "open":
    key = serialization.load_pem_private_key(open(key_path, "rb").read(), password=None)
    n = key.key_size // 8
    aes = key.decrypt(data[:n], oaep)
    sys.stdout.buffer.write(aes_key_unwrap_with_padding(aes, data[n:]))
else:
    key = serialization.load_pem_public_key(open(key_path, "rb").read())
    aes = os.urandom(32)
    sys.stdout.buffer.write(key.encrypt(aes, oaep) + aes_key_wrap_with_padding(aes, data))
"#;

#[test]
fn rsa_aes_kwp_wraps_open_with_python_cryptography_and_the_other_way() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rsa = openssl_key(
        d,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
    );
    // An RSA-2048 private key's PKCS#8, too large for OAEP under RSA-3072: what this spec is for.
    let big = run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-outform",
            "DER",
        ],
        None,
    )
    .stdout;
    assert!(big.len() > 1000);
    assert!(matches!(
        wrap(WrappingSpec::RsaOaepSha256, &rsa, &big),
        Err(CryptoError::OperationFailed)
    ));
    let mut all = materials();
    all.push(big);
    all.push(vec![0x5a; 7]);
    for m in all {
        let w = wrap(WrappingSpec::RsaAesKwp, &rsa, &m).unwrap();
        assert_eq!(w.len(), 384 + m.len().div_ceil(8) * 8 + 8);
        let opened = run("python3", &["-c", PY_KWP, "open", p(&rsa.pem)], Some(&w)).stdout;
        assert_eq!(opened, m, "{} bytes", m.len());
        let made = run(
            "python3",
            &["-c", PY_KWP, "make", p(&rsa.pub_pem)],
            Some(&m),
        )
        .stdout;
        assert_eq!(unwrap(WrappingSpec::RsaAesKwp, &rsa, &made).unwrap(), m);
    }
}

#[test]
fn damaged_or_cut_wraps_and_keys_that_do_not_fit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sm2 = openssl_key(d, "sm2", &["-algorithm", "SM2"]);
    let rsa = openssl_key(
        d,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
    );
    let rsa2048 = openssl_key(
        d,
        "rsa2048",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let m = b"0123456789abcdef0123456789abcdef".to_vec();
    for (spec, key) in [
        (WrappingSpec::Sm2, &sm2),
        (WrappingSpec::RsaOaepSha256, &rsa),
        (WrappingSpec::RsaAesKwp, &rsa),
    ] {
        let w = wrap(spec, key, &m).unwrap();
        for cut in [0, 1, w.len() / 2, w.len() - 1] {
            assert_eq!(
                unwrap(spec, key, &w[..cut]),
                Err(CryptoError::DecryptionFailed),
                "{spec:?} cut to {cut}"
            );
        }
        for i in [0, w.len() / 2, w.len() - 1] {
            let mut bad = w.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                unwrap(spec, key, &bad),
                Err(CryptoError::DecryptionFailed),
                "{spec:?} flipped at {i}"
            );
        }
    }
    // A spec and a key that do not go together.
    assert_eq!(
        wrap(WrappingSpec::Sm2, &rsa, &m),
        Err(CryptoError::Mismatch)
    );
    assert_eq!(
        wrap(WrappingSpec::RsaAesKwp, &sm2, &m),
        Err(CryptoError::Mismatch)
    );
    // RSA wrapping keys are 3072 or 4096 bits.
    assert_eq!(
        wrap(WrappingSpec::RsaOaepSha256, &rsa2048, &m),
        Err(CryptoError::Mismatch)
    );
    assert_eq!(
        unwrap(WrappingSpec::RsaAesKwp, &rsa2048, &[0; 300]),
        Err(CryptoError::Mismatch)
    );
    for name in ["sm2", "RSA-OAEP-SHA256", " rsa-aes-kwp "] {
        assert!(WrappingSpec::parse(name).is_some(), "{name}");
    }
    assert_eq!(WrappingSpec::parse("rsa-pkcs1"), None);
}
