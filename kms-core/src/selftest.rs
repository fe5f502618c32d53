//! Power-on self-tests, as cryptographic modules must run them (GM/T 0028 §5.x, FIPS 140-3 §7.10).
//!
//! [`run`] performs a known-answer test for every algorithm the policy enables and a
//! pairwise-consistency test on freshly generated key pairs, and reports each result. The server
//! refuses to serve if any fails. Known answers come from the standards (GB/T 32905 SM3,
//! RFC 8998 SM4-GCM, RFC 4231 HMAC, the GCM specification's test case 14) or were made by OpenSSL
//! with fixed public test keys (see `selftest/README.md`).

use std::fmt;
use std::time::{Duration, Instant};

use sm2::pkcs8::der::pem;

use crate::alg::{DigestAlg, KeySpec, PasswordHashAlg, Purpose, RsaSigScheme, SignatureRequest};
use crate::crypto::{self, Message};
use crate::policy::{Policy, PolicyMode};
use crate::secret::{KeyMaterial, SecretBytes};

const MESSAGE: &[u8] = b"kms self-test message";
const SM2_KEY: &str = include_str!("selftest/sm2_kat.key.pem");
const SM2_SIG: &str = include_str!("selftest/sm2_kat_sig.hex");
const SM2_CT: &str = include_str!("selftest/sm2_kat_ct.hex");
const RSA_KEY: &str = include_str!("selftest/rsa_kat.key.pem");
const RSA_PKCS1_SIG: &str = include_str!("selftest/rsa_kat_pkcs1v15_sha256.hex");
const RSA_OAEP_CT: &str = include_str!("selftest/rsa_kat_oaep_sha256.hex");

/// One self-test's outcome.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: &'static str,
    pub passed: bool,
    /// What failed, without secrets (known-answer mismatches name the step only).
    pub detail: Option<&'static str>,
    pub elapsed: Duration,
}

/// All self-test outcomes, in the order they ran.
#[derive(Debug, Clone)]
pub struct Report {
    pub results: Vec<TestResult>,
}

impl Report {
    #[must_use]
    pub fn all_passed(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(|r| r.passed)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            let status = if r.passed { "PASS" } else { "FAIL" };
            write!(
                f,
                "{status}  {:<28} {:>8.1} ms",
                r.name,
                r.elapsed.as_secs_f64() * 1000.0
            )?;
            if let Some(d) = r.detail {
                write!(f, "  ({d})")?;
            }
            writeln!(f)?;
        }
        let failed = self.results.iter().filter(|r| !r.passed).count();
        write!(f, "{} passed, {failed} failed", self.results.len() - failed)
    }
}

type Check = fn(Policy) -> Result<(), &'static str>;

/// The self-tests, with the key spec or digest that gates each under the policy.
const TESTS: &[(&str, Gate, Check)] = &[
    ("csprng", Gate::Always, csprng),
    ("sm3", Gate::Digest(DigestAlg::Sm3), |p| {
        digest_kat(
            p,
            DigestAlg::Sm3,
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0",
        )
    }),
    ("sha256", Gate::Digest(DigestAlg::Sha256), |p| {
        digest_kat(
            p,
            DigestAlg::Sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
    }),
    ("sha384", Gate::Digest(DigestAlg::Sha384), |p| {
        digest_kat(
            p,
            DigestAlg::Sha384,
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
        )
    }),
    ("sha512", Gate::Digest(DigestAlg::Sha512), |p| {
        digest_kat(
            p,
            DigestAlg::Sha512,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        )
    }),
    ("sm4-gcm", Gate::Spec(KeySpec::Sm4Gcm), sm4_gcm),
    ("aes-256-gcm", Gate::Spec(KeySpec::Aes256Gcm), aes_gcm),
    ("hmac-sm3", Gate::Spec(KeySpec::HmacSm3), |p| {
        hmac_kat(
            p,
            KeySpec::HmacSm3,
            "2e87f1d16862e6d964b50a5200bf2b10b764faa9680a296a2405f24bec39f882",
        )
    }),
    ("hmac-sha256", Gate::Spec(KeySpec::HmacSha256), |p| {
        hmac_kat(
            p,
            KeySpec::HmacSha256,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        )
    }),
    ("hmac-sha384", Gate::Spec(KeySpec::HmacSha384), |p| {
        hmac_kat(
            p,
            KeySpec::HmacSha384,
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
        )
    }),
    ("hmac-sha512", Gate::Spec(KeySpec::HmacSha512), |p| {
        hmac_kat(
            p,
            KeySpec::HmacSha512,
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        )
    }),
    ("sm4-ff1", Gate::Spec(KeySpec::Sm4Ff1), sm4_ff1),
    ("aes-256-ff1", Gate::Spec(KeySpec::Aes256Ff1), aes_256_ff1),
    ("sm2-sign", Gate::Spec(KeySpec::Sm2), sm2_sign),
    ("sm2-encrypt", Gate::Spec(KeySpec::Sm2), sm2_encrypt),
    ("sm2-keygen-pct", Gate::Spec(KeySpec::Sm2), |p| {
        keygen_pct(p, KeySpec::Sm2)
    }),
    ("rsa-sign", Gate::Spec(KeySpec::Rsa2048), rsa_sign),
    ("rsa-oaep", Gate::Spec(KeySpec::Rsa2048), rsa_oaep),
    ("rsa-2048-keygen-pct", Gate::Spec(KeySpec::Rsa2048), |p| {
        keygen_pct(p, KeySpec::Rsa2048)
    }),
    // The password shield's functions (issue 22 item 2); answers from the Argon2 reference
    // implementation and PBKDF2 written out over GmSSL's HMAC-SM3 (tests/judges/password.py).
    (
        "argon2id",
        Gate::PasswordHash(PasswordHashAlg::Argon2id),
        |p| {
            password_hash_kat(
                p,
                crypto::password_hash::Cost::Argon2id {
                    m_kib: 64,
                    t: 3,
                    p: 1,
                },
                b"somesalt",
                "b9e3bfda58fb95f1e1e479af4e01bfade5a0dba34d400a254f770462674169e6",
            )
        },
    ),
    (
        "pbkdf2-sm3",
        Gate::PasswordHash(PasswordHashAlg::Pbkdf2Sm3),
        |p| {
            password_hash_kat(
                p,
                crypto::password_hash::Cost::Pbkdf2Sm3 { iterations: 4096 },
                b"salt",
                "b6e8f2074c87432b78f62e5ced980fdff89e86af2f693dab1638e2b3683045dd",
            )
        },
    ),
];

#[derive(Clone, Copy)]
enum Gate {
    Always,
    Spec(KeySpec),
    Digest(DigestAlg),
    /// A password-hash function new hashes may use: PBKDF2-HMAC-SM3 always, argon2id under the
    /// standard policy.
    PasswordHash(PasswordHashAlg),
}

impl Gate {
    fn enabled(self, policy: Policy) -> bool {
        match self {
            Self::Always => true,
            Self::Spec(spec) => policy.allows(spec),
            Self::Digest(d) => policy.approve_digest(d).is_ok(),
            Self::PasswordHash(alg) => alg.is_gm() || policy.mode() == PolicyMode::Standard,
        }
    }
}

/// Runs every self-test the policy enables.
#[must_use]
pub fn run(policy: Policy) -> Report {
    let results = TESTS
        .iter()
        .filter(|(_, gate, _)| gate.enabled(policy))
        .map(|(name, _, check)| {
            let start = Instant::now();
            // A panic inside a primitive is a failed self-test, not a crashed server.
            let outcome = std::panic::catch_unwind(|| check(policy)).unwrap_or(Err("panicked"));
            TestResult {
                name,
                passed: outcome.is_ok(),
                detail: outcome.err(),
                elapsed: start.elapsed(),
            }
        })
        .collect();
    Report { results }
}

fn unhex(s: &str) -> Result<Vec<u8>, &'static str> {
    hex::decode(s.trim()).map_err(|_| "bad built-in vector")
}

fn pem_der(text: &str) -> Result<SecretBytes, &'static str> {
    let (_, der) = pem::decode_vec(text.as_bytes()).map_err(|_| "bad built-in key")?;
    Ok(SecretBytes::from_vec(der))
}

fn expect(ok: bool, what: &'static str) -> Result<(), &'static str> {
    if ok { Ok(()) } else { Err(what) }
}

fn csprng(_: Policy) -> Result<(), &'static str> {
    let a = crypto::rng::random_public(32).map_err(|_| "rng failed")?;
    let b = crypto::rng::random_public(32).map_err(|_| "rng failed")?;
    expect(
        a != b && a.iter().any(|&x| x != 0),
        "repeated or zero output",
    )
}

fn digest_kat(policy: Policy, alg: DigestAlg, expected: &str) -> Result<(), &'static str> {
    let approved = policy.approve_digest(alg).map_err(|_| "not approved")?;
    expect(
        crypto::digest(approved, b"abc") == unhex(expected)?,
        "known answer mismatch",
    )
}

fn fixed_key(spec: KeySpec, hex_key: &str) -> Result<KeyMaterial, &'static str> {
    Ok(KeyMaterial::new(
        spec,
        SecretBytes::from_vec(unhex(hex_key)?),
    ))
}

/// RFC 8998 appendix A.1.
fn sm4_gcm(policy: Policy) -> Result<(), &'static str> {
    aead_kat(
        policy,
        KeySpec::Sm4Gcm,
        "0123456789abcdeffedcba9876543210",
        "00001234567800000000abcd",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccddddddddddddddddeeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa",
        "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d83de3541e4c2b58177e065a9bf7b62ec",
    )
}

/// The GCM specification's test case 14 (AES-256, zero key, zero IV, one zero block).
fn aes_gcm(policy: Policy) -> Result<(), &'static str> {
    aead_kat(
        policy,
        KeySpec::Aes256Gcm,
        "0000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000",
        "",
        "00000000000000000000000000000000",
        "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919",
    )
}

fn aead_kat(
    policy: Policy,
    spec: KeySpec,
    key: &str,
    nonce: &str,
    aad: &str,
    plaintext: &str,
    ct_and_tag: &str,
) -> Result<(), &'static str> {
    let approved = policy
        .approve(Purpose::Encrypt, spec)
        .map_err(|_| "not approved")?;
    let key = fixed_key(spec, key)?;
    let nonce: [u8; 12] = unhex(nonce)?
        .try_into()
        .map_err(|_| "bad built-in vector")?;
    let aad = unhex(aad)?;
    let mut buf = unhex(plaintext)?;
    crypto::seal_in_place(&approved, &key, &nonce, &aad, &mut buf).map_err(|_| "encrypt failed")?;
    expect(buf == unhex(ct_and_tag)?, "known answer mismatch")?;
    let open = approved.for_open();
    let mut tampered = buf.clone();
    if let Some(last) = tampered.last_mut() {
        *last ^= 1;
    }
    expect(
        crypto::open_in_place(&open, &key, &nonce, &aad, &mut tampered).is_err(),
        "tampered tag accepted",
    )?;
    crypto::open_in_place(&open, &key, &nonce, &aad, &mut buf).map_err(|_| "decrypt failed")?;
    expect(buf == unhex(plaintext)?, "decrypt mismatch")
}

/// RFC 4231 test case 2 (HMAC-SM3 answer from OpenSSL's `dgst -sm3 -hmac`).
fn hmac_kat(policy: Policy, spec: KeySpec, expected: &str) -> Result<(), &'static str> {
    let approved = policy
        .approve(Purpose::Mac, spec)
        .map_err(|_| "not approved")?;
    let key = KeyMaterial::new(spec, SecretBytes::copy_from_slice(b"Jefe"));
    let data = b"what do ya want for nothing?";
    let tag = crypto::mac(&approved, &key, data).map_err(|_| "mac failed")?;
    expect(tag == unhex(expected)?, "known answer mismatch")?;
    let open = approved.for_open();
    expect(
        crypto::verify_mac(&open, &key, data, &tag) == Ok(true),
        "valid tag refused",
    )?;
    expect(
        crypto::verify_mac(&open, &key, b"other", &tag) == Ok(false),
        "wrong tag accepted",
    )
}

/// A password-hash function over the password `password` and `salt`.
fn password_hash_kat(
    policy: Policy,
    cost: crypto::password_hash::Cost,
    salt: &[u8],
    expected: &str,
) -> Result<(), &'static str> {
    let approved = policy.approve_password_verify(cost.alg());
    let password = SecretBytes::copy_from_slice(b"password");
    let out = crypto::password_hash::derive(&approved, cost, &password, salt, 32)
        .map_err(|_| "hash failed")?;
    expect(
        out.expose_secret() == unhex(expected)?.as_slice(),
        "known answer mismatch",
    )
}

fn numerals(digits: &str) -> Vec<u16> {
    digits.bytes().map(|b| u16::from(b - b'0')).collect()
}

/// FF1 both ways on one known answer (radix 10, tweak "9876543210").
fn ff1_kat(policy: Policy, spec: KeySpec, key: &str, ct: &str) -> Result<(), &'static str> {
    let approved = policy
        .approve(Purpose::Tokenize, spec)
        .map_err(|_| "not approved")?;
    let key = fixed_key(spec, key)?;
    let tweak = b"9876543210";
    let pt = numerals("0123456789");
    let got = crypto::tokenize::ff1_known_answer(&approved, &key, 10, tweak, pt.clone(), true)
        .map_err(|_| "encrypt failed")?;
    expect(got == numerals(ct), "known answer mismatch")?;
    let back = crypto::tokenize::ff1_known_answer(&approved, &key, 10, tweak, got, false)
        .map_err(|_| "decrypt failed")?;
    expect(back == pt, "decrypt mismatch")
}

/// SM4-FF1: the GB/T 32907 example key; the answer is `tests/judges/ff1.py`'s (FF1 written from
/// SP 800-38G over GmSSL's SM4, checked against NIST's AES samples).
fn sm4_ff1(policy: Policy) -> Result<(), &'static str> {
    ff1_kat(
        policy,
        KeySpec::Sm4Ff1,
        "0123456789abcdeffedcba9876543210",
        "0167303662",
    )
}

/// AES-256-FF1: NIST SP 800-38G sample 8.
fn aes_256_ff1(policy: Policy) -> Result<(), &'static str> {
    ff1_kat(
        policy,
        KeySpec::Aes256Ff1,
        "2b7e151628aed2a6abf7158809cf4f3cef4359d8d580aa4f7f036d6f04fc6a94",
        "1001623463",
    )
}

fn import(policy: Policy, purpose: Purpose, pem_text: &str) -> Result<KeyMaterial, &'static str> {
    let der = pem_der(pem_text)?;
    crypto::import_private_key(policy, purpose, der.expose_secret())
        .map_err(|_| "built-in key refused")
}

fn sign_and_verify(
    policy: Policy,
    key: &KeyMaterial,
    request: SignatureRequest,
    known: Option<&[u8]>,
) -> Result<(), &'static str> {
    let approved = policy
        .approve(Purpose::Sign, key.spec())
        .map_err(|_| "not approved")?;
    let public = crypto::public_key_of(key).map_err(|_| "no public key")?;
    let verify = policy
        .approve_verify(approved.for_open(), request.clone())
        .map_err(|_| "not approved")?;
    if let Some(sig) = known {
        expect(
            crypto::verify(&verify, &public, Message::Raw(MESSAGE), sig) == Ok(true),
            "known signature refused",
        )?;
    }
    let sign = policy
        .approve_signature(approved, request)
        .map_err(|_| "not approved")?;
    let sig = crypto::sign(&sign, key, Message::Raw(MESSAGE)).map_err(|_| "sign failed")?;
    expect(
        crypto::verify(&verify, &public, Message::Raw(MESSAGE), &sig) == Ok(true),
        "own signature refused",
    )?;
    expect(
        crypto::verify(&verify, &public, Message::Raw(b"other"), &sig) == Ok(false),
        "wrong message accepted",
    )
}

fn sm2_sign(policy: Policy) -> Result<(), &'static str> {
    let key = import(policy, Purpose::Sign, SM2_KEY)?;
    sign_and_verify(
        policy,
        &key,
        SignatureRequest::default_for(KeySpec::Sm2).ok_or("no default")?,
        Some(&unhex(SM2_SIG)?),
    )
}

fn sm2_encrypt(policy: Policy) -> Result<(), &'static str> {
    asym_kat(policy, SM2_KEY, SM2_CT)
}

fn asym_kat(policy: Policy, key_pem: &str, known_ct: &str) -> Result<(), &'static str> {
    let key = import(policy, Purpose::AsymmetricDecrypt, key_pem)?;
    let approved = policy
        .approve_open(Purpose::AsymmetricDecrypt, key.spec())
        .map_err(|_| "not approved")?;
    let pt = crypto::asymmetric_decrypt(&approved, &key, &unhex(known_ct)?)
        .map_err(|_| "known ciphertext refused")?;
    expect(pt.expose_secret() == MESSAGE, "known answer mismatch")?;
    let public = crypto::public_key_of(&key).map_err(|_| "no public key")?;
    let to_public = policy
        .approve(Purpose::AsymmetricDecrypt, key.spec())
        .map_err(|_| "not approved")?;
    let ct = crypto::encrypt_to_public_key(&to_public, &public, MESSAGE)
        .map_err(|_| "encrypt failed")?;
    let pt = crypto::asymmetric_decrypt(&approved, &key, &ct).map_err(|_| "round trip failed")?;
    expect(pt.expose_secret() == MESSAGE, "round trip mismatch")
}

fn rsa_sign(policy: Policy) -> Result<(), &'static str> {
    let key = import(policy, Purpose::Sign, RSA_KEY)?;
    // PKCS#1 v1.5 is deterministic: our signature must equal OpenSSL's byte for byte.
    let approved = policy
        .approve(Purpose::Sign, key.spec())
        .map_err(|_| "not approved")?;
    let pkcs1 = SignatureRequest::Rsa {
        scheme: RsaSigScheme::Pkcs1v15,
        hash: DigestAlg::Sha256,
    };
    let sign = policy
        .approve_signature(approved, pkcs1.clone())
        .map_err(|_| "not approved")?;
    let sig = crypto::sign(&sign, &key, Message::Raw(MESSAGE)).map_err(|_| "sign failed")?;
    expect(sig == unhex(RSA_PKCS1_SIG)?, "known answer mismatch")?;
    sign_and_verify(policy, &key, pkcs1, None)?;
    sign_and_verify(
        policy,
        &key,
        SignatureRequest::Rsa {
            scheme: RsaSigScheme::Pss,
            hash: DigestAlg::Sha256,
        },
        None,
    )
}

fn rsa_oaep(policy: Policy) -> Result<(), &'static str> {
    asym_kat(policy, RSA_KEY, RSA_OAEP_CT)
}

fn keygen_pct(policy: Policy, spec: KeySpec) -> Result<(), &'static str> {
    for purpose in [Purpose::Sign, Purpose::AsymmetricDecrypt] {
        let approved = policy.approve(purpose, spec).map_err(|_| "not approved")?;
        // `generate` runs the pairwise-consistency test itself and fails if it does not hold.
        crypto::generate(&approved).map_err(|_| "generation or consistency test failed")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyMode;

    #[test]
    fn every_self_test_passes_under_the_standard_policy() {
        let report = run(Policy::default());
        assert!(report.all_passed(), "{report}");
        assert_eq!(report.results.len(), TESTS.len());
    }

    #[test]
    fn gm_only_runs_only_gm_tests() {
        let report = run(Policy::from_config(PolicyMode::GmOnly));
        assert!(report.all_passed(), "{report}");
        let names: Vec<_> = report.results.iter().map(|r| r.name).collect();
        assert!(names.contains(&"sm2-sign") && names.contains(&"sm4-gcm"));
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("rsa") || n.starts_with("aes") || n.contains("sha"))
        );
    }
}
