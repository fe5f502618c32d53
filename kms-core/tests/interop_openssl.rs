//! Interop with outside tools (REQUIREMENTS.md "Interop contract"): what the KMS writes, the
//! OpenSSL 3 CLI and Python's `cryptography` must read, and the other way round.
//!
//! * SM2 signatures (`openssl dgst -sm3 -sigopt distid:…`), default and non-default IDs.
//! * SM2 encryption in GM/T 0009 DER (`openssl pkeyutl -encrypt/-decrypt`).
//! * RSA-2048: PSS (salt = hash length, MGF1 with the same hash) and PKCS#1 v1.5 signatures over
//!   SHA-256 and SHA-384; OAEP with SHA-256 and MGF1-SHA-256.
//! * SubjectPublicKeyInfo PEM/DER both ways.
//! * SM4-GCM and AES-256-GCM envelopes opened (and made) by Python `cryptography`, since
//!   OpenSSL 3.0 has no SM4-GCM; the AAD (header ‖ canonical context) is rebuilt in Python from
//!   the documented format.
//!
//! These tools are required: a missing `openssl` or `python3`/`cryptography` is a test failure,
//! not a skip.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;

use kms_core::alg::{DigestAlg, KeySpec, Purpose, RsaSigScheme, SM2_DEFAULT_ID, SignatureRequest};
use kms_core::crypto::{self, Message, PublicKey};
use kms_core::envelope::{self, EncryptionContext, HEADER_LEN, Header};
use kms_core::policy::{Policy, PolicyMode};
use kms_core::{CryptoError, Error, InvalidInput, KeyMaterial, SecretBytes};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

fn spawn(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` was not found on PATH: the interop tests need the OpenSSL 3 CLI and \
             python3 with the `cryptography` package (≥ 42) installed"
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    };
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

static OPENSSL_VERSION: LazyLock<String> = LazyLock::new(|| {
    let out = spawn("openssl", &["version"], None);
    assert!(out.status.success(), "`openssl version` failed");
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        v.starts_with("OpenSSL 3."),
        "the interop tests need OpenSSL 3 (SM2 distid support), found {v:?}"
    );
    v
});

/// Runs `openssl args…`; returns the output whatever the exit status.
fn openssl_try(args: &[&str]) -> Output {
    LazyLock::force(&OPENSSL_VERSION);
    spawn("openssl", args, None)
}

/// Runs `openssl args…` and requires success.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = openssl_try(args);
    assert!(
        out.status.success(),
        "openssl {} failed ({}):\n{}",
        args.join(" "),
        OPENSSL_VERSION.as_str(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A scratch directory for key, message and signature files.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        s(&p)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn p(&self, name: &str) -> String {
        s(&self.path(name))
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn random(len: usize) -> Vec<u8> {
    crypto::rng::random_public(len).unwrap()
}

/// An OpenSSL-generated private key: PEM file, PKCS#8 DER and SPKI PEM of its public half.
struct OpensslKey {
    pem: String,
    pkcs8_der: Vec<u8>,
    pub_pem_path: String,
    pub_pem: String,
}

fn openssl_genpkey(dir: &Scratch, name: &str, args: &[&str]) -> OpensslKey {
    let pem = dir.p(&format!("{name}.pem"));
    let mut all = vec!["genpkey"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-out", &pem]);
    openssl(&all);
    assert!(
        std::fs::read_to_string(&pem)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"),
        "openssl genpkey did not write PKCS#8 PEM"
    );
    // OpenSSL 3.0's `pkey -outform DER` writes the *traditional* form (SEC1 ECPrivateKey,
    // PKCS#1 RSAPrivateKey), not PKCS#8; `pkcs8 -topk8` writes PKCS#8 DER.
    let der = dir.p(&format!("{name}.der"));
    openssl(&[
        "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER", "-out", &der,
    ]);
    let pub_pem_path = dir.p(&format!("{name}.pub.pem"));
    openssl(&["pkey", "-in", &pem, "-pubout", "-out", &pub_pem_path]);
    OpensslKey {
        pem,
        pkcs8_der: std::fs::read(&der).unwrap(),
        pub_pem: std::fs::read_to_string(&pub_pem_path).unwrap(),
        pub_pem_path,
    }
}

fn sm2_key(dir: &Scratch, name: &str) -> OpensslKey {
    openssl_genpkey(dir, name, &["-algorithm", "SM2"])
}

fn rsa_key(dir: &Scratch, name: &str, bits: u32) -> OpensslKey {
    let opt = format!("rsa_keygen_bits:{bits}");
    openssl_genpkey(dir, name, &["-algorithm", "RSA", "-pkeyopt", &opt])
}

// ---------------------------------------------------------------------------------------------
// Core keys, generated once (RSA generation is slow in a debug build)
// ---------------------------------------------------------------------------------------------

fn generate(purpose: Purpose, spec: KeySpec) -> KeyMaterial {
    let approved = Policy::default().approve(purpose, spec).unwrap();
    crypto::generate(&approved).unwrap()
}

static CORE_SM2_SIGN: LazyLock<KeyMaterial> =
    LazyLock::new(|| generate(Purpose::Sign, KeySpec::Sm2));
static CORE_SM2_DECRYPT: LazyLock<KeyMaterial> =
    LazyLock::new(|| generate(Purpose::AsymmetricDecrypt, KeySpec::Sm2));
static CORE_RSA_SIGN: LazyLock<KeyMaterial> =
    LazyLock::new(|| generate(Purpose::Sign, KeySpec::Rsa2048));
static CORE_RSA_DECRYPT: LazyLock<KeyMaterial> =
    LazyLock::new(|| generate(Purpose::AsymmetricDecrypt, KeySpec::Rsa2048));

fn sign(key: &KeyMaterial, request: SignatureRequest, msg: &[u8]) -> Vec<u8> {
    let p = Policy::default();
    let approved = p.approve(Purpose::Sign, key.spec()).unwrap();
    let token = p.approve_signature(approved, request).unwrap();
    crypto::sign(&token, key, Message::Raw(msg)).unwrap()
}

fn verify(public: &PublicKey, request: SignatureRequest, msg: &[u8], sig: &[u8]) -> bool {
    let p = Policy::default();
    let open = p.approve_open(Purpose::Sign, public.spec()).unwrap();
    let token = p.approve_verify(open, request).unwrap();
    crypto::verify(&token, public, Message::Raw(msg), sig).unwrap()
}

fn decrypt(key: &KeyMaterial, ct: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let open = Policy::default()
        .approve_open(Purpose::AsymmetricDecrypt, key.spec())
        .unwrap();
    crypto::asymmetric_decrypt(&open, key, ct).map(|pt| pt.expose_secret().to_vec())
}

fn sm2_request(id: &str) -> SignatureRequest {
    SignatureRequest::Sm2 { id: id.to_owned() }
}

fn messages() -> Vec<Vec<u8>> {
    vec![b"hello kms".to_vec(), Vec::new(), random(1000)]
}

const SM2_IDS: [&str; 3] = [SM2_DEFAULT_ID, "ALICE123@YAHOO.COM", "kms-interop-id"];

// ---------------------------------------------------------------------------------------------
// (a) SM2 signatures
// ---------------------------------------------------------------------------------------------

fn openssl_sm2_verify(pub_pem: &str, id: &str, msg: &str, sig: &str) -> bool {
    let distid = format!("distid:{id}");
    let out = openssl_try(&[
        "dgst",
        "-sm3",
        "-verify",
        pub_pem,
        "-sigopt",
        &distid,
        "-signature",
        sig,
        msg,
    ]);
    let ok = out.status.success();
    assert_eq!(
        ok,
        String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "exit status and output disagree"
    );
    ok
}

#[test]
fn sm2_core_signs_openssl_verifies() {
    let dir = Scratch::new();
    let public = crypto::public_key_of(&CORE_SM2_SIGN).unwrap();
    let pub_pem = dir.write("core.pub.pem", public.to_pem().as_bytes());
    let mut n = 0;
    for id in SM2_IDS {
        for (i, msg) in messages().iter().enumerate() {
            let sig = sign(&CORE_SM2_SIGN, sm2_request(id), msg);
            let msg_path = dir.write(&format!("m{i}"), msg);
            let sig_path = dir.write(&format!("s{i}"), &sig);
            assert!(
                openssl_sm2_verify(&pub_pem, id, &msg_path, &sig_path),
                "openssl refused a core SM2 signature (id {id:?}, {} bytes)",
                msg.len()
            );
            // The negative cases make sure openssl really checks.
            let other_id = if id == SM2_DEFAULT_ID {
                "ALICE123@YAHOO.COM"
            } else {
                SM2_DEFAULT_ID
            };
            assert!(!openssl_sm2_verify(
                &pub_pem, other_id, &msg_path, &sig_path
            ));
            let mut tampered = msg.clone();
            tampered.push(b'!');
            let t_path = dir.write(&format!("t{i}"), &tampered);
            assert!(!openssl_sm2_verify(&pub_pem, id, &t_path, &sig_path));
            n += 1;
        }
    }
    assert_eq!(n, 9);
}

#[test]
fn sm2_openssl_signs_core_verifies() {
    let dir = Scratch::new();
    let key = sm2_key(&dir, "sm2sign");
    // OpenSSL's PKCS#8 imports, and its SPKI PEM equals the imported key's public half.
    let imported = crypto::import_private_key(Policy::default(), Purpose::Sign, &key.pkcs8_der)
        .expect("OpenSSL SM2 PKCS#8 key refused");
    assert_eq!(imported.spec(), KeySpec::Sm2);
    let public = PublicKey::from_spki_pem(Policy::default(), &key.pub_pem).unwrap();
    assert_eq!(public, crypto::public_key_of(&imported).unwrap());

    let mut n = 0;
    for id in SM2_IDS {
        for (i, msg) in messages().iter().enumerate() {
            let msg_path = dir.write(&format!("m{i}"), msg);
            let sig_path = dir.p(&format!("s{i}"));
            let distid = format!("distid:{id}");
            openssl(&[
                "dgst", "-sm3", "-sign", &key.pem, "-sigopt", &distid, "-out", &sig_path, &msg_path,
            ]);
            let sig = std::fs::read(&sig_path).unwrap();
            assert!(
                verify(&public, sm2_request(id), msg, &sig),
                "core refused an OpenSSL SM2 signature (id {id:?}, {} bytes)",
                msg.len()
            );
            assert!(!verify(&public, sm2_request(&format!("{id}0")), msg, &sig));
            let mut tampered = msg.clone();
            tampered.push(0);
            assert!(!verify(&public, sm2_request(id), &tampered, &sig));

            // The imported OpenSSL key signs in the core; OpenSSL verifies with its own PEM.
            let ours = sign(&imported, sm2_request(id), msg);
            let ours_path = dir.write(&format!("o{i}"), &ours);
            assert!(openssl_sm2_verify(
                &key.pub_pem_path,
                id,
                &msg_path,
                &ours_path
            ));
            n += 1;
        }
    }
    assert_eq!(n, 9);
}

// ---------------------------------------------------------------------------------------------
// (b) SM2 encryption
// ---------------------------------------------------------------------------------------------

fn openssl_sm2_decrypt(dir: &Scratch, key_pem: &str, ct: &[u8]) -> Vec<u8> {
    let ct_path = dir.write("sm2.ct", ct);
    let pt_path = dir.p("sm2.pt");
    openssl(&[
        "pkeyutl", "-decrypt", "-inkey", key_pem, "-in", &ct_path, "-out", &pt_path,
    ]);
    dir.read("sm2.pt")
}

fn openssl_sm2_encrypt(dir: &Scratch, pub_pem: &str, msg: &[u8]) -> Vec<u8> {
    let msg_path = dir.write("sm2.msg", msg);
    let ct_path = dir.p("sm2.enc");
    openssl(&[
        "pkeyutl", "-encrypt", "-pubin", "-inkey", pub_pem, "-in", &msg_path, "-out", &ct_path,
    ]);
    dir.read("sm2.enc")
}

const SM2_SIZES: [usize; 5] = [1, 19, 32, 100, 1000];

#[test]
fn sm2_encryption_both_ways_with_an_openssl_key() {
    let dir = Scratch::new();
    let key = sm2_key(&dir, "sm2enc");
    let imported = crypto::import_private_key(
        Policy::default(),
        Purpose::AsymmetricDecrypt,
        &key.pkcs8_der,
    )
    .unwrap();
    let public = PublicKey::from_spki_pem(Policy::default(), &key.pub_pem).unwrap();
    for len in SM2_SIZES {
        let msg = random(len);
        // core → openssl
        let ct = crypto::encrypt_to_public_key(
            &Policy::default()
                .approve(Purpose::AsymmetricDecrypt, public.spec())
                .unwrap(),
            &public,
            &msg,
        )
        .unwrap();
        assert_eq!(openssl_sm2_decrypt(&dir, &key.pem, &ct), msg, "{len} bytes");
        // openssl → core
        let ct = openssl_sm2_encrypt(&dir, &key.pub_pem_path, &msg);
        assert_eq!(decrypt(&imported, &ct).unwrap(), msg, "{len} bytes");
        // C3 is checked.
        let mut bad = ct.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            decrypt(&imported, &bad).err(),
            Some(CryptoError::DecryptionFailed),
            "{len} bytes"
        );
    }
}

#[test]
fn sm2_openssl_encrypts_to_a_core_key() {
    let dir = Scratch::new();
    let public = crypto::public_key_of(&CORE_SM2_DECRYPT).unwrap();
    let pub_pem = dir.write("core.pub.pem", public.to_pem().as_bytes());
    for len in SM2_SIZES {
        let msg = random(len);
        let ct = openssl_sm2_encrypt(&dir, &pub_pem, &msg);
        assert_eq!(decrypt(&CORE_SM2_DECRYPT, &ct).unwrap(), msg, "{len} bytes");
    }
}

/// Lengths of the two leading DER INTEGERs (x1, y1) of a GM/T 0009 SM2 ciphertext.
fn coordinate_lengths(der: &[u8]) -> (usize, usize) {
    fn header(b: &[u8]) -> (usize, usize) {
        // (header length, content length) for short and one/two-byte long forms.
        match b[1] {
            n @ 0..=0x7f => (2, n as usize),
            0x81 => (3, b[2] as usize),
            0x82 => (4, (b[2] as usize) << 8 | b[3] as usize),
            other => panic!("unexpected DER length byte {other:#x}"),
        }
    }
    assert_eq!(der[0], 0x30);
    let (h, _) = header(der);
    let x = &der[h..];
    assert_eq!(x[0], 0x02);
    let (xh, xl) = header(x);
    let y = &x[xh + xl..];
    assert_eq!(y[0], 0x02);
    let (_, yl) = header(y);
    (xl, yl)
}

#[test]
fn sm2_ciphertexts_with_short_or_padded_coordinates_interoperate() {
    // x1 and y1 are minimal DER INTEGERs: 33 bytes when the top bit is set, and fewer than 32
    // when the top byte is zero (about 1 in 256 ciphertexts). Make core ciphertexts until both
    // shapes are seen and check that OpenSSL decrypts each.
    let dir = Scratch::new();
    let key = sm2_key(&dir, "sm2coords");
    let public = PublicKey::from_spki_pem(Policy::default(), &key.pub_pem).unwrap();
    let imported = crypto::import_private_key(
        Policy::default(),
        Purpose::AsymmetricDecrypt,
        &key.pkcs8_der,
    )
    .unwrap();
    let msg = b"coordinate shapes";
    let (mut short, mut padded) = (None, None);
    for _ in 0..20_000 {
        let ct = crypto::encrypt_to_public_key(
            &Policy::default()
                .approve(Purpose::AsymmetricDecrypt, public.spec())
                .unwrap(),
            &public,
            msg,
        )
        .unwrap();
        let (xl, yl) = coordinate_lengths(&ct);
        assert!(
            (1..=33).contains(&xl) && (1..=33).contains(&yl),
            "{xl} {yl}"
        );
        if xl < 32 || yl < 32 {
            short.get_or_insert(ct);
        } else if xl == 33 || yl == 33 {
            padded.get_or_insert(ct);
        }
        if short.is_some() && padded.is_some() {
            break;
        }
    }
    for ct in [
        short.expect("no short coordinate in 20000 tries"),
        padded.unwrap(),
    ] {
        assert_eq!(openssl_sm2_decrypt(&dir, &key.pem, &ct), msg);
        assert_eq!(decrypt(&imported, &ct).unwrap(), msg);
    }
}

// ---------------------------------------------------------------------------------------------
// (c) RSA-2048
// ---------------------------------------------------------------------------------------------

fn dgst_name(hash: DigestAlg) -> &'static str {
    match hash {
        DigestAlg::Sha256 => "-sha256",
        DigestAlg::Sha384 => "-sha384",
        DigestAlg::Sha512 => "-sha512",
        DigestAlg::Sm3 => "-sm3",
    }
}

/// `-sigopt` options for a scheme: PSS with salt = hash length and MGF1 over the same hash.
fn rsa_sigopts(scheme: RsaSigScheme, hash: DigestAlg) -> Vec<String> {
    match scheme {
        RsaSigScheme::Pkcs1v15 => vec!["-sigopt".into(), "rsa_padding_mode:pkcs1".into()],
        RsaSigScheme::Pss => vec![
            "-sigopt".into(),
            "rsa_padding_mode:pss".into(),
            "-sigopt".into(),
            format!("rsa_pss_saltlen:{}", hash.output_len()),
            "-sigopt".into(),
            format!("rsa_mgf1_md:{}", hash.name()),
        ],
    }
}

fn openssl_rsa_verify(
    pub_pem: &str,
    scheme: RsaSigScheme,
    hash: DigestAlg,
    msg: &str,
    sig: &str,
) -> bool {
    let opts = rsa_sigopts(scheme, hash);
    let mut args = vec!["dgst", dgst_name(hash), "-verify", pub_pem];
    args.extend(opts.iter().map(String::as_str));
    args.extend_from_slice(&["-signature", sig, msg]);
    let out = openssl_try(&args);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

const RSA_CASES: [(RsaSigScheme, DigestAlg); 4] = [
    (RsaSigScheme::Pss, DigestAlg::Sha256),
    (RsaSigScheme::Pss, DigestAlg::Sha384),
    (RsaSigScheme::Pkcs1v15, DigestAlg::Sha256),
    (RsaSigScheme::Pkcs1v15, DigestAlg::Sha384),
];

#[test]
fn rsa_core_signs_openssl_verifies() {
    let dir = Scratch::new();
    let public = crypto::public_key_of(&CORE_RSA_SIGN).unwrap();
    let pub_pem = dir.write("core.pub.pem", public.to_pem().as_bytes());
    let mut n = 0;
    for (scheme, hash) in RSA_CASES {
        for (i, msg) in messages().iter().enumerate() {
            let sig = sign(&CORE_RSA_SIGN, SignatureRequest::Rsa { scheme, hash }, msg);
            let msg_path = dir.write(&format!("m{i}"), msg);
            let sig_path = dir.write(&format!("s{i}"), &sig);
            assert!(
                openssl_rsa_verify(&pub_pem, scheme, hash, &msg_path, &sig_path),
                "openssl refused a core {scheme:?}/{hash} signature"
            );
            let t_path = dir.write(&format!("t{i}"), &[msg.as_slice(), b"!"].concat());
            assert!(!openssl_rsa_verify(
                &pub_pem, scheme, hash, &t_path, &sig_path
            ));
            n += 1;
        }
    }
    // PSS salt is exactly the hash length: a verifier insisting on another length refuses.
    let msg_path = dir.write("pss", b"salt length");
    let sig = sign(
        &CORE_RSA_SIGN,
        SignatureRequest::Rsa {
            scheme: RsaSigScheme::Pss,
            hash: DigestAlg::Sha256,
        },
        b"salt length",
    );
    let sig_path = dir.write("pss.sig", &sig);
    let out = openssl_try(&[
        "dgst",
        "-sha256",
        "-verify",
        &pub_pem,
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:20",
        "-signature",
        &sig_path,
        &msg_path,
    ]);
    assert!(
        !out.status.success(),
        "salt length 20 accepted for a salt-32 signature"
    );
    assert_eq!(n, 12);
}

#[test]
fn rsa_openssl_signs_core_verifies() {
    let dir = Scratch::new();
    let key = rsa_key(&dir, "rsasign", 2048);
    let public = PublicKey::from_spki_pem(Policy::default(), &key.pub_pem).unwrap();
    assert_eq!(public.spec(), KeySpec::Rsa2048);
    // OpenSSL's PKCS#8 RSA key imports too, with the same public half.
    let imported =
        crypto::import_private_key(Policy::default(), Purpose::Sign, &key.pkcs8_der).unwrap();
    assert_eq!(crypto::public_key_of(&imported).unwrap(), public);
    let mut n = 0;
    for (scheme, hash) in RSA_CASES {
        for (i, msg) in messages().iter().enumerate() {
            let msg_path = dir.write(&format!("m{i}"), msg);
            let sig_path = dir.p(&format!("s{i}"));
            let opts = rsa_sigopts(scheme, hash);
            let mut args = vec!["dgst", dgst_name(hash), "-sign", key.pem.as_str()];
            args.extend(opts.iter().map(String::as_str));
            args.extend_from_slice(&["-out", &sig_path, &msg_path]);
            openssl(&args);
            let sig = std::fs::read(&sig_path).unwrap();
            let req = SignatureRequest::Rsa { scheme, hash };
            assert!(
                verify(&public, req.clone(), msg, &sig),
                "core refused an OpenSSL {scheme:?}/{hash} signature"
            );
            assert!(!verify(
                &public,
                req,
                &[msg.as_slice(), b"!"].concat(),
                &sig
            ));
            n += 1;
        }
    }
    assert_eq!(n, 12);
    // The core verifies PSS with salt = hash length only: OpenSSL signatures with a 20-byte salt
    // or with OpenSSL's default (maximum) salt length are refused.
    let msg_path = dir.write("salt", b"salt length");
    let pss = SignatureRequest::Rsa {
        scheme: RsaSigScheme::Pss,
        hash: DigestAlg::Sha256,
    };
    for saltopt in [&["-sigopt", "rsa_pss_saltlen:20"][..], &[]] {
        let sig_path = dir.p("salt.sig");
        let mut args = vec![
            "dgst",
            "-sha256",
            "-sign",
            key.pem.as_str(),
            "-sigopt",
            "rsa_padding_mode:pss",
        ];
        args.extend_from_slice(saltopt);
        args.extend_from_slice(&["-out", &sig_path, &msg_path]);
        openssl(&args);
        let sig = std::fs::read(&sig_path).unwrap();
        assert!(
            !verify(&public, pss.clone(), b"salt length", &sig),
            "{saltopt:?}"
        );
    }
    // PKCS#1 v1.5 is deterministic: the imported key gives OpenSSL's signature byte for byte.
    let msg_path = dir.write("det", b"deterministic");
    let sig_path = dir.p("det.sig");
    openssl(&[
        "dgst", "-sha256", "-sign", &key.pem, "-out", &sig_path, &msg_path,
    ]);
    let ours = sign(
        &imported,
        SignatureRequest::Rsa {
            scheme: RsaSigScheme::Pkcs1v15,
            hash: DigestAlg::Sha256,
        },
        b"deterministic",
    );
    assert_eq!(ours, std::fs::read(&sig_path).unwrap());
}

const OAEP_SHA256: [&str; 6] = [
    "-pkeyopt",
    "rsa_padding_mode:oaep",
    "-pkeyopt",
    "rsa_oaep_md:sha256",
    "-pkeyopt",
    "rsa_mgf1_md:sha256",
];

fn openssl_pkeyutl(
    dir: &Scratch,
    op: &str,
    key: &str,
    pubin: bool,
    opts: &[&str],
    input: &[u8],
) -> Vec<u8> {
    let in_path = dir.write("pkeyutl.in", input);
    let out_path = dir.p("pkeyutl.out");
    let mut args = vec!["pkeyutl", op, "-inkey", key];
    if pubin {
        args.push("-pubin");
    }
    args.extend_from_slice(opts);
    args.extend_from_slice(&["-in", &in_path, "-out", &out_path]);
    openssl(&args);
    dir.read("pkeyutl.out")
}

#[test]
fn rsa_oaep_sha256_both_ways() {
    let dir = Scratch::new();
    let key = rsa_key(&dir, "rsaenc", 2048);
    let imported = crypto::import_private_key(
        Policy::default(),
        Purpose::AsymmetricDecrypt,
        &key.pkcs8_der,
    )
    .unwrap();
    let public = PublicKey::from_spki_pem(Policy::default(), &key.pub_pem).unwrap();
    for len in [0usize, 1, 32, 190] {
        let msg = random(len);
        // core → openssl
        let ct = crypto::encrypt_to_public_key(
            &Policy::default()
                .approve(Purpose::AsymmetricDecrypt, public.spec())
                .unwrap(),
            &public,
            &msg,
        )
        .unwrap();
        let pt = openssl_pkeyutl(&dir, "-decrypt", &key.pem, false, &OAEP_SHA256, &ct);
        assert_eq!(pt, msg, "{len} bytes");
        // openssl → core
        let ct = openssl_pkeyutl(
            &dir,
            "-encrypt",
            &key.pub_pem_path,
            true,
            &OAEP_SHA256,
            &msg,
        );
        assert_eq!(decrypt(&imported, &ct).unwrap(), msg, "{len} bytes");
    }
    // OpenSSL encrypting to a core-generated key.
    let core_pub = crypto::public_key_of(&CORE_RSA_DECRYPT).unwrap();
    let core_pem = dir.write("core.pub.pem", core_pub.to_pem().as_bytes());
    let msg = b"PIN 123456";
    let ct = openssl_pkeyutl(&dir, "-encrypt", &core_pem, true, &OAEP_SHA256, msg);
    assert_eq!(decrypt(&CORE_RSA_DECRYPT, &ct).unwrap(), msg);
}

#[test]
fn rsa_other_paddings_from_openssl_are_refused() {
    let dir = Scratch::new();
    let key = rsa_key(&dir, "rsaother", 2048);
    let imported = crypto::import_private_key(
        Policy::default(),
        Purpose::AsymmetricDecrypt,
        &key.pkcs8_der,
    )
    .unwrap();
    let msg = b"not for us";
    // OAEP with SHA-1 (OpenSSL's default OAEP digest) and PKCS#1 v1.5 encryption (ALG-3).
    let sha1 = openssl_pkeyutl(
        &dir,
        "-encrypt",
        &key.pub_pem_path,
        true,
        &["-pkeyopt", "rsa_padding_mode:oaep"],
        msg,
    );
    assert_eq!(
        decrypt(&imported, &sha1).err(),
        Some(CryptoError::DecryptionFailed),
        "OAEP-SHA-1 ciphertext"
    );
    let v15 = openssl_pkeyutl(
        &dir,
        "-encrypt",
        &key.pub_pem_path,
        true,
        &["-pkeyopt", "rsa_padding_mode:pkcs1"],
        msg,
    );
    assert_eq!(
        decrypt(&imported, &v15).err(),
        Some(CryptoError::DecryptionFailed),
        "PKCS#1 v1.5 ciphertext"
    );
}

// ---------------------------------------------------------------------------------------------
// (d) Public keys
// ---------------------------------------------------------------------------------------------

#[test]
fn core_public_keys_load_in_openssl() {
    let dir = Scratch::new();
    for (key, expect) in [
        (&*CORE_SM2_SIGN, ["Public-Key: (256 bit)", "SM2"]),
        (
            &*CORE_RSA_SIGN,
            ["Public-Key: (2048 bit)", "Exponent: 65537"],
        ),
    ] {
        let public = crypto::public_key_of(key).unwrap();
        let pem = public.to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        let path = dir.write("pub.pem", pem.as_bytes());
        let text = String::from_utf8(openssl(&[
            "pkey", "-pubin", "-in", &path, "-text", "-noout",
        ]))
        .unwrap();
        for e in expect {
            assert!(text.contains(e), "{e:?} not in openssl's output:\n{text}");
        }
        // OpenSSL re-encodes the key to the same DER, and the PEM parses back in the core.
        let der = openssl(&["pkey", "-pubin", "-in", &path, "-outform", "DER"]);
        assert_eq!(der, public.spki_der());
        assert_eq!(
            PublicKey::from_spki_pem(Policy::default(), &pem).unwrap(),
            public
        );
    }
}

#[test]
fn openssl_public_keys_parse_in_the_core() {
    let dir = Scratch::new();
    for (key, spec) in [
        (sm2_key(&dir, "sm2"), KeySpec::Sm2),
        (rsa_key(&dir, "rsa2048", 2048), KeySpec::Rsa2048),
        (rsa_key(&dir, "rsa3072", 3072), KeySpec::Rsa3072),
    ] {
        let from_pem = PublicKey::from_spki_pem(Policy::default(), &key.pub_pem).unwrap();
        assert_eq!(from_pem.spec(), spec);
        let der = openssl(&["pkey", "-in", &key.pem, "-pubout", "-outform", "DER"]);
        let from_der = PublicKey::from_spki_der(Policy::default(), &der).unwrap();
        assert_eq!(from_der, from_pem);
        assert_eq!(from_der.spki_der(), der);
        // Under the GM-only policy only the SM2 key is accepted (ALG-4).
        let gm = PublicKey::from_spki_pem(Policy::from_config(PolicyMode::GmOnly), &key.pub_pem);
        assert_eq!(gm.is_ok(), spec == KeySpec::Sm2, "{spec}");
    }
}

#[test]
fn openssl_keys_outside_the_policy_are_refused() {
    let dir = Scratch::new();
    let policy = Policy::default();
    // RSA-1024 (ALG-3), private and public.
    let small = rsa_key(&dir, "rsa1024", 1024);
    let e = PublicKey::from_spki_pem(policy, &small.pub_pem)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ALG-3") && e.contains("2048"), "{e}");
    let e = crypto::import_private_key(policy, Purpose::Sign, &small.pkcs8_der)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ALG-3") && e.contains("2048"), "{e}");
    // NIST P-256 is not SM2 even though both are 256-bit EC keys with the same SPKI shape.
    let p256 = openssl_genpkey(
        &dir,
        "p256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    const NOT_A_PUBLIC_KEY: &str = "not a DER SubjectPublicKeyInfo holding an SM2 or RSA key";
    const NOT_A_PRIVATE_KEY: &str = "not a PKCS#8 SM2 or RSA private key";
    // Ed25519 neither.
    let ed = openssl_genpkey(&dir, "ed25519", &["-algorithm", "ED25519"]);
    for (name, other) in [("P-256", &p256), ("Ed25519", &ed)] {
        let e = PublicKey::from_spki_pem(policy, &other.pub_pem).unwrap_err();
        assert!(invalid(&e, "public key", NOT_A_PUBLIC_KEY), "{name}: {e}");
        let e = crypto::import_private_key(policy, Purpose::Sign, &other.pkcs8_der).unwrap_err();
        assert!(invalid(&e, "private key", NOT_A_PRIVATE_KEY), "{name}: {e}");
    }
    // A private key PEM is not a public key.
    let sm2 = sm2_key(&dir, "sm2");
    let private_pem = std::fs::read_to_string(&sm2.pem).unwrap();
    let e = PublicKey::from_spki_pem(policy, &private_pem).unwrap_err();
    assert!(
        invalid(&e, "public key", "PEM label must be PUBLIC KEY"),
        "{e}"
    );
}

/// Whether `e` is the core's refusal of malformed input `field`, saying `problem`.
fn invalid(e: &Error, field: &str, problem: &str) -> bool {
    matches!(e, Error::InvalidArgument(InvalidInput { field: f, problem: p }) if *f == field && p == problem)
}

#[test]
fn openssl_rsa_512_is_refused_with_the_alg_3_error() {
    let dir = Scratch::new();
    let policy = Policy::default();
    let tiny = rsa_key(&dir, "rsa512", 512);
    let e = PublicKey::from_spki_pem(policy, &tiny.pub_pem)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ALG-3") && e.contains("2048"), "public: {e}");
    let e = crypto::import_private_key(policy, Purpose::Sign, &tiny.pkcs8_der)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ALG-3") && e.contains("2048"), "private: {e}");
}

// ---------------------------------------------------------------------------------------------
// (e) SM4-GCM and AES-256-GCM envelopes with Python `cryptography`
// ---------------------------------------------------------------------------------------------

/// Python side: reads a JSON list of jobs on stdin, prints a JSON list of results. AAD =
/// header ‖ canonical(context), with canonical(context) rebuilt here from the format documented
/// in envelope.rs: u32 BE count, then for each pair in key order u32 BE key length, key bytes,
/// u32 BE value length, value bytes.
const PY_AEAD: &str = r#"
import json, struct, sys
try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as e:
    print("MISSING-CRYPTOGRAPHY:", e)
    sys.exit(3)
try:
    Cipher(algorithms.SM4(bytes(16)), modes.GCM(bytes(12))).encryptor().finalize()
except Exception as e:
    import cryptography
    print("NO-SM4-GCM: cryptography", cryptography.__version__, repr(e))
    sys.exit(3)

def run(job):
    key, nonce, header, data = (bytes.fromhex(job[f]) for f in ("key", "nonce", "header", "data"))
    items = sorted((k.encode(), v.encode()) for k, v in job["ctx"].items())
    aad = header + struct.pack(">I", len(items))
    for k, v in items:
        aad += struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v
    if job["aad"] == "header-only":
        aad = header
    try:
        if job["op"] == "open":
            if job["alg"] == "sm4":
                d = Cipher(algorithms.SM4(key), modes.GCM(nonce, data[-16:])).decryptor()
                d.authenticate_additional_data(aad)
                out = d.update(data[:-16]) + d.finalize()
            else:
                out = AESGCM(key).decrypt(nonce, data, aad)
        else:
            if job["alg"] == "sm4":
                e = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
                e.authenticate_additional_data(aad)
                out = e.update(data) + e.finalize() + e.tag
            else:
                out = AESGCM(key).encrypt(nonce, data, aad)
    except InvalidTag:
        return {"invalid_tag": True}
    return {"ok": out.hex()}

print(json.dumps([run(job) for job in json.load(sys.stdin)]))
"#;

#[derive(Debug, PartialEq, Eq)]
enum Py {
    Ok(Vec<u8>),
    InvalidTag,
}

struct PyJob<'a> {
    op: &'static str,
    alg: &'static str,
    key: &'a [u8],
    nonce: &'a [u8],
    header: &'a [u8],
    data: &'a [u8],
    ctx: &'a EncryptionContext,
    aad: &'static str,
}

/// Runs all jobs in one python3 process (importing `cryptography` takes a while).
fn python_aead(jobs: &[PyJob<'_>]) -> Vec<Py> {
    let input: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "op": j.op, "alg": j.alg, "key": hex::encode(j.key),
                "nonce": hex::encode(j.nonce), "header": hex::encode(j.header),
                "data": hex::encode(j.data), "ctx": j.ctx.pairs(), "aad": j.aad,
            })
        })
        .collect();
    let input = serde_json::to_vec(&input).unwrap();
    let out = spawn("python3", &["-c", PY_AEAD], Some(&input));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) => {}
        Some(3) => panic!(
            "python3 is present but its `cryptography` package is missing or has no SM4-GCM \
             (need ≥ 42): {stdout}"
        ),
        _ => panic!(
            "python3 AEAD helper failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    let results: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(results.len(), jobs.len());
    results
        .into_iter()
        .map(|r| match r["ok"].as_str() {
            Some(h) => Py::Ok(hex::decode(h).unwrap()),
            None => {
                assert_eq!(r["invalid_tag"], true, "{r}");
                Py::InvalidTag
            }
        })
        .collect()
}

/// The documented canonical context encoding, built independently of `canonical_bytes`.
fn canonical(ctx: &EncryptionContext) -> Vec<u8> {
    let mut out = u32::try_from(ctx.pairs().len())
        .unwrap()
        .to_be_bytes()
        .to_vec();
    for (k, v) in ctx.pairs() {
        for part in [k.as_bytes(), v.as_bytes()] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap().to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

#[test]
fn envelopes_open_in_python_and_python_envelopes_open_in_the_core() {
    let policy = Policy::default();
    let contexts: [EncryptionContext; 3] = [
        EncryptionContext::default(),
        [("app", "payments"), ("user", "张三"), ("", "")]
            .into_iter()
            .collect(),
        [("order", "42"), ("b", "x"), ("a", "y")]
            .into_iter()
            .collect(),
    ];
    let plaintexts = [Vec::new(), b"hello interop".to_vec(), random(1000)];

    struct Case {
        spec: KeySpec,
        alg: &'static str,
        raw: Vec<u8>,
        ctx: usize,
        pt: Vec<u8>,
        core_blob: Vec<u8>,
        py_header: [u8; HEADER_LEN],
    }
    let mut cases = Vec::new();
    for (spec, alg, len) in [
        (KeySpec::Sm4Gcm, "sm4", 16),
        (KeySpec::Aes256Gcm, "aes", 32),
    ] {
        let raw = random(len);
        let key = policy
            .approve(Purpose::Encrypt, spec)
            .map_err(Error::from)
            .and_then(|approved| {
                KeyMaterial::import_symmetric(&approved, SecretBytes::copy_from_slice(&raw))
            })
            .unwrap();
        let approved = policy.approve(Purpose::Encrypt, spec).unwrap();
        for (c, ctx) in contexts.iter().enumerate() {
            assert_eq!(
                ctx.canonical_bytes(),
                canonical(ctx),
                "canonical encoding drifted"
            );
            for pt in &plaintexts {
                let id = Uuid::new_v4();
                let core_blob = envelope::seal(&approved, &key, id, 3, ctx, pt).unwrap();
                let py_header = Header {
                    spec,
                    key_id: id,
                    key_version: 9,
                    nonce: random(12).try_into().unwrap(),
                }
                .encode();
                cases.push(Case {
                    spec,
                    alg,
                    raw: raw.clone(),
                    ctx: c,
                    pt: pt.clone(),
                    core_blob,
                    py_header,
                });
            }
        }
    }

    // Per case: python opens the core blob, python opens it with the header alone as AAD (must
    // fail: even an empty context adds its 4-byte count), python seals a blob for the core.
    let mut jobs = Vec::new();
    for c in &cases {
        let (header, body) = c.core_blob.split_at(HEADER_LEN);
        for aad in ["full", "header-only"] {
            jobs.push(PyJob {
                op: "open",
                alg: c.alg,
                key: &c.raw,
                nonce: &header[24..36],
                header,
                data: body,
                ctx: &contexts[c.ctx],
                aad,
            });
        }
        jobs.push(PyJob {
            op: "seal",
            alg: c.alg,
            key: &c.raw,
            nonce: &c.py_header[24..36],
            header: &c.py_header,
            data: &c.pt,
            ctx: &contexts[c.ctx],
            aad: "full",
        });
    }
    let results = python_aead(&jobs);

    for (c, r) in cases.iter().zip(results.chunks(3)) {
        let spec = c.spec;
        let ctx = &contexts[c.ctx];
        assert_eq!(
            r[0],
            Py::Ok(c.pt.clone()),
            "python could not open a core {spec} envelope"
        );
        assert_eq!(
            r[1],
            Py::InvalidTag,
            "{spec}: the context is not bound into the AAD"
        );
        let Py::Ok(ct) = &r[2] else {
            panic!("python seal failed");
        };
        let key = policy
            .approve(Purpose::Encrypt, spec)
            .map_err(Error::from)
            .and_then(|approved| {
                KeyMaterial::import_symmetric(&approved, SecretBytes::copy_from_slice(&c.raw))
            })
            .unwrap();
        let open = policy.approve_open(Purpose::Encrypt, spec).unwrap();
        let blob = [c.py_header.as_slice(), ct].concat();
        let env = envelope::parse(&blob).unwrap();
        assert_eq!(env.header.key_version, 9);
        let got = envelope::open(&open, &key, &env, ctx).unwrap();
        assert_eq!(got.expose_secret(), c.pt.as_slice(), "{spec}");
        let other: EncryptionContext = [("other", "ctx")].into_iter().collect();
        let e = envelope::open(&open, &key, &env, &other).unwrap_err();
        assert!(
            matches!(e, Error::Crypto(CryptoError::DecryptionFailed)),
            "{spec}: {e}"
        );
    }
    assert_eq!(cases.len(), 2 * 3 * 3);
}
