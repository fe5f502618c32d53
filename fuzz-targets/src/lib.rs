//! Fuzz target bodies for every parser of outside bytes, as plain functions.
//!
//! `fuzz/fuzz_targets/<name>.rs` (cargo-fuzz, libFuzzer) is a one-line call of the function of
//! the same name, and `tests/replay.rs` runs the checked-in corpus `fuzz/corpus/<name>/` and the
//! regressions `fuzz/regressions/<name>/` through the same functions under `cargo test`.
//!
//! Every target asserts "an error, never a panic": any panic (an `assert!` below included) is a
//! finding. Where a serializer exists the target also checks the round trip (parse → serialize →
//! parse gives the same value), and decryption targets check that every failure is the one
//! opaque error (no oracle).
//!
//! | target | parser | how the server or CLI meets it |
//! | --- | --- | --- |
//! | `envelope` | `envelope::parse` + `open` | `Decrypt`, `ReEncrypt` ciphertext blobs |
//! | `sm2_ciphertext` | `crypto::asymmetric_decrypt` (SM2, GM/T 0009 DER) | `AsymmetricDecrypt` |
//! | `rsa_ciphertext` | `crypto::asymmetric_decrypt` (RSA-OAEP) | `AsymmetricDecrypt` |
//! | `sm2_signature` | `crypto::verify` (SM2 DER signature) | `Verify`, audit checkpoints |
//! | `rsa_signature` | `crypto::verify` (PSS and PKCS#1 v1.5) | `Verify` |
//! | `public_key` | `PublicKey::from_spki_der` / `from_spki_pem` | `GenerateDataKey` wrap-to key, CLI |
//! | `certificate` | `identity::subject_of` (+ PEM) | the client certificate → principal |
//! | `unseal_share` | `hierarchy::share::{parse, combine}` | `Unseal`, `Restore`, dev share file |
//! | `backup` | `Kms::restore` | `Restore`, `kms restore` |
//! | `audit_file` | `audit::verify`, `verify_reader`, `verify_files` | `kms audit verify` (offline) |
//! | `inventory_file` | `verify_inventory` | `kms inventory verify` (offline) |
//! | `algorithm_names` | `policy::names`, key refs, namespaces, aliases, roles, grant ops | every name field |
//! | `proto_request` | prost decoding + `kms_server::convert` | every gRPC request |
//! | `sm2_cert_chain` | `kms_gmtls::x509::{verify_chain, cert_identity, sm2_public_key_of}` | SM2 peer certificates (GM transport) |
//! | `wrapped_material` | `crypto::transport::unwrap` (sm2, rsa-oaep-sha256, rsa-aes-kwp) | `ImportKeyMaterial` |
//! | `private_key` | `pkcs8_shape`, `crypto::import_private_key` (PKCS#8, PEM) | `ImportKeyMaterial`, `kms key import --wrap-locally` |
//! | `tls13_sm2_verify` | `kms_gmtls` `Sm2ClientVerifier`, `Sm2ServerVerifier`, `sign::verify_tls13` | SM2 chains and sm2sig_sm3 CertificateVerify |
//! | `sealed_password` | `password_hash::parse_sealed` (+ the strength rules) | `HashPassword`, `VerifyPassword` (once decrypted) |
//! | `stored_hash` | `password_hash::StoredHash::parse` | `VerifyPassword`'s stored hash |
//! | `token_values` | `crypto::tokenize` (format names, alphabets, PAN and Luhn rules, FF1, pseudonyms) | `Tokenize`, `Detokenize` values and tokens |
//! | `token_csv` | `kms_cli::csv` (RFC 4180 read and write) | `kms tokenize`, `kms detokenize` |
//! | `signed_request` | `signed_request::{check_shape, canonical}` | `VerifyRequest`'s method, path, nonce, body and digest |

pub mod fixtures;
pub mod gmtls;
pub mod proto;

use std::sync::Arc;

use kms_core::alg::{KeySpec, Purpose, RsaSigScheme, SM2_DEFAULT_ID, SignatureRequest};
use kms_core::authz::{GrantOp, Principal, Role};
use kms_core::crypto::{self, Message, PublicKey};
use kms_core::envelope::{self, EncryptionContext, HEADER_LEN};
use kms_core::hierarchy::share::{self, Share};
use kms_core::keys::{Alias, KeyRef, Namespace};
use kms_core::policy::{Policy, PolicyMode, names};
use kms_core::store::MemoryStore;
use kms_core::{CryptoError, Error, KmsConfig, TestKms, UnsealProgress};

pub use gmtls::{sm2_cert_chain, tls13_sm2_verify};
pub use proto::proto_request;

/// A fuzz target: takes any bytes, returns only by not panicking.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("envelope", envelope),
    ("sm2_ciphertext", sm2_ciphertext),
    ("rsa_ciphertext", rsa_ciphertext),
    ("sm2_signature", sm2_signature),
    ("rsa_signature", rsa_signature),
    ("public_key", public_key),
    ("certificate", certificate),
    ("unseal_share", unseal_share),
    ("backup", backup),
    ("audit_file", audit_file),
    ("inventory_file", inventory_file),
    ("algorithm_names", algorithm_names),
    ("proto_request", proto_request),
    ("sm2_cert_chain", sm2_cert_chain),
    ("tls13_sm2_verify", tls13_sm2_verify),
    ("wrapped_material", wrapped_material),
    ("private_key", private_key),
    ("sealed_password", sealed_password),
    ("stored_hash", stored_hash),
    ("token_values", token_values),
    ("token_csv", token_csv),
    ("signed_request", signed_request),
];

fn policies() -> [Policy; 2] {
    [Policy::default(), Policy::from_config(PolicyMode::GmOnly)]
}

fn is_decryption_failed(e: &Error) -> bool {
    matches!(e, Error::Crypto(CryptoError::DecryptionFailed))
}

/// The ciphertext blob: parse, and open with the fixture key of the header's algorithm.
pub fn envelope(data: &[u8]) {
    let Ok(blob) = envelope::parse(data) else {
        return;
    };
    // Round trip: the parsed header encodes to the bytes it was parsed from.
    assert_eq!(
        blob.header.encode().as_slice(),
        &data[..HEADER_LEN],
        "header round trip"
    );
    let spec = blob.header.spec;
    let Some(key) = fixtures::blob_key(spec) else {
        panic!("parse accepted a non-AEAD algorithm: {spec}");
    };
    let policy = Policy::default();
    let Ok(protect) = policy.approve(Purpose::Encrypt, spec) else {
        panic!("policy refuses {spec}");
    };
    let open = protect.for_open();
    let empty = EncryptionContext::default();
    match envelope::open(&open, key, &blob, &empty) {
        Ok(plaintext) => {
            // Only the seeds, sealed under the fixture key, get here. Another context must not
            // open it, and re-sealing the plaintext under the same header fields round-trips.
            let other: EncryptionContext = [("fuzz", "other")].into_iter().collect();
            let refused = envelope::open(&open, key, &blob, &other);
            assert!(
                refused.as_ref().is_err_and(is_decryption_failed),
                "a different context opened the blob"
            );
            let Ok(sealed) = envelope::seal(
                &protect,
                key,
                blob.header.key_id,
                blob.header.key_version,
                &empty,
                plaintext.expose_secret(),
            ) else {
                panic!("re-seal failed");
            };
            let Ok(again) = envelope::parse(&sealed) else {
                panic!("our own blob does not parse");
            };
            assert_eq!(again.header.key_id, blob.header.key_id);
            assert_eq!(again.header.key_version, blob.header.key_version);
            let Ok(reopened) = envelope::open(&open, key, &again, &empty) else {
                panic!("our own blob does not open");
            };
            assert!(reopened.ct_eq(&plaintext), "re-sealed plaintext differs");
        }
        // Every failure after parsing is the one opaque error (no oracle).
        Err(e) => assert!(is_decryption_failed(&e), "non-uniform decrypt error: {e:?}"),
    }
}

fn asymmetric(data: &[u8], spec: KeySpec, key: &kms_core::KeyMaterial) {
    let Ok(protect) = Policy::default().approve(Purpose::AsymmetricDecrypt, spec) else {
        panic!("policy refuses {spec} keys");
    };
    let open = protect.for_open();
    match crypto::asymmetric_decrypt(&open, key, data) {
        Ok(plaintext) => {
            // Round trip: the plaintext encrypted again to the public key decrypts to itself.
            let Ok(public) = crypto::public_key_of(key) else {
                panic!("no public key");
            };
            let Ok(ct) =
                crypto::encrypt_to_public_key(&protect, &public, plaintext.expose_secret())
            else {
                panic!("a decrypted plaintext does not encrypt again");
            };
            let Ok(again) = crypto::asymmetric_decrypt(&open, key, &ct) else {
                panic!("our own ciphertext does not decrypt");
            };
            assert!(again.ct_eq(&plaintext), "round trip changed the plaintext");
        }
        // One error for every cause: malformed DER, point off the curve, bad C3, bad padding.
        Err(e) => assert_eq!(
            e,
            CryptoError::DecryptionFailed,
            "non-uniform decrypt error"
        ),
    }
}

/// SM2 ciphertexts (GM/T 0009 DER) decrypted with the fixture SM2 key.
pub fn sm2_ciphertext(data: &[u8]) {
    asymmetric(data, KeySpec::Sm2, fixtures::sm2_decrypt());
}

/// RSA-OAEP-SHA-256 ciphertexts decrypted with the fixture RSA-2048 key.
pub fn rsa_ciphertext(data: &[u8]) {
    asymmetric(data, KeySpec::Rsa2048, fixtures::rsa_decrypt());
}

fn verify(public: &PublicKey, request: SignatureRequest, message: &[u8], sig: &[u8]) -> bool {
    let policy = Policy::default();
    let spec = public.spec();
    let Ok(open) = policy.approve_open(Purpose::Sign, spec) else {
        panic!("policy refuses {spec} verification");
    };
    let Ok(scheme) = policy.approve_verify(open, request) else {
        panic!("policy refuses the signature scheme");
    };
    match crypto::verify(&scheme, public, Message::Raw(message), sig) {
        Ok(valid) => valid,
        // Errors are for unusable keys only; a bad signature is `Ok(false)`.
        Err(e) => panic!("verify errored on signature bytes: {e}"),
    }
}

/// SM2 signatures (DER `SEQUENCE { r, s }`) over the fixed message, with the fixture key.
pub fn sm2_signature(data: &[u8]) {
    let request = || SignatureRequest::Sm2 {
        id: SM2_DEFAULT_ID.to_owned(),
    };
    if verify(
        fixtures::sm2_public(),
        request(),
        fixtures::SIGNED_MESSAGE,
        data,
    ) {
        // Round trip: a valid signature is canonical DER (no second encoding of (r, s)).
        let Ok(sig) = sm2::dsa::Signature::from_der(data) else {
            panic!("a verified signature does not parse");
        };
        assert_eq!(sig.to_der().to_vec(), data, "signature not canonical");
        // The same signature must not verify another message.
        assert!(!verify(
            fixtures::sm2_public(),
            request(),
            b"another message",
            data
        ));
    }
}

/// RSA signatures over the fixed message, as PSS and as PKCS#1 v1.5 (SHA-256).
pub fn rsa_signature(data: &[u8]) {
    let public = fixtures::rsa_public();
    let request = |scheme| SignatureRequest::Rsa {
        scheme,
        hash: kms_core::alg::DigestAlg::Sha256,
    };
    let _pss = verify(
        public,
        request(RsaSigScheme::Pss),
        fixtures::SIGNED_MESSAGE,
        data,
    );
    if verify(
        public,
        request(RsaSigScheme::Pkcs1v15),
        fixtures::SIGNED_MESSAGE,
        data,
    ) {
        // PKCS#1 v1.5 is deterministic: the only valid signature is the one we make.
        let policy = Policy::default();
        let Ok(scheme) = policy
            .approve(Purpose::Sign, KeySpec::Rsa2048)
            .and_then(|a| policy.approve_signature(a, request(RsaSigScheme::Pkcs1v15)))
        else {
            panic!("policy refuses RSA signing");
        };
        let Ok(ours) = crypto::sign(
            &scheme,
            fixtures::rsa_sign(),
            Message::Raw(fixtures::SIGNED_MESSAGE),
        ) else {
            panic!("RSA signing failed");
        };
        assert_eq!(ours, data, "a second PKCS#1 v1.5 signature verified");
    }
}

/// Caller-supplied public keys: SPKI DER and PEM, under both policies.
pub fn public_key(data: &[u8]) {
    for policy in policies() {
        if let Ok(key) = PublicKey::from_spki_der(policy, data) {
            check_public_key_round_trip(policy, &key);
        }
        if let Ok(text) = std::str::from_utf8(data)
            && let Ok(key) = PublicKey::from_spki_pem(policy, text)
        {
            check_public_key_round_trip(policy, &key);
        }
    }
}

fn check_public_key_round_trip(policy: Policy, key: &PublicKey) {
    let Ok(from_der) = PublicKey::from_spki_der(policy, key.spki_der()) else {
        panic!("canonical DER of an accepted key is refused");
    };
    assert_eq!(&from_der, key, "DER round trip");
    let Ok(from_pem) = PublicKey::from_spki_pem(policy, &key.to_pem()) else {
        panic!("our own PEM is refused");
    };
    assert_eq!(&from_pem, key, "PEM round trip");
    // An accepted key is usable: encrypting a short secret to it works.
    if let Err(e) = crypto::encrypt_to_public_key(
        &policy
            .approve(Purpose::AsymmetricDecrypt, key.spec())
            .unwrap_or_else(|e| panic!("{e}")),
        key,
        b"fuzz",
    ) {
        panic!("accepted {} key cannot encrypt: {e}", key.spec());
    }
}

/// Client certificates (DER, or PEM as in files): the principal the server derives.
pub fn certificate(data: &[u8]) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let ders: Vec<Vec<u8>> = if data.starts_with(b"-----BEGIN") {
        CertificateDer::pem_slice_iter(data)
            .take(4)
            .filter_map(Result::ok)
            .map(|c| c.as_ref().to_vec())
            .collect()
    } else {
        vec![data.to_vec()]
    };
    let scheme = kms_devpki::client_identity("");
    for der in ders {
        let Some(subject) = kms_server::identity::subject_of(&der) else {
            continue;
        };
        assert_eq!(
            kms_server::identity::subject_of(&der).as_deref(),
            Some(subject.as_str()),
            "subject_of is not deterministic"
        );
        // What the server does with it next: look up (or register) a principal by subject.
        let _ = Principal::new(&subject, Role::Auditor);
        if let Some(name) = subject.strip_prefix(&scheme) {
            let _ = kms_devpki::validate_subject(name);
        }
    }
}

/// Unseal shares as typed, one per line (at most 8): parse each, then combine those that parse.
pub fn unseal_share(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parsed = Vec::new();
    for line in text.lines().take(8) {
        let Ok(p) = share::parse(&Share::from_text(line)) else {
            continue;
        };
        // Round trip: the share in its canonical text form (lower-case hex) parses the same.
        let Ok(canonical) = share::parse(&Share::from_text(&line.to_ascii_lowercase())) else {
            panic!("canonical form of an accepted share is refused");
        };
        assert_eq!(
            (p.set_id(), p.threshold(), p.x()),
            (canonical.set_id(), canonical.threshold(), canonical.x())
        );
        parsed.push(p);
    }
    if !parsed.is_empty() {
        // Any mix of shares (other sets, other lengths, repeated x, threshold 0) is an error
        // or some key, never a panic: a wrong key is caught by the sealed root key's tag.
        let _ = share::combine(&parsed);
    }
}

fn fresh_kms() -> TestKms {
    TestKms::open(Arc::new(MemoryStore::new()), KmsConfig::default())
}

/// Splits a backup seed into its shares (text lines before the first blank line) and the
/// backup file (everything after it).
#[must_use]
pub fn split_backup_input(data: &[u8]) -> (Vec<Share>, &[u8]) {
    let Some(at) = data.windows(2).position(|w| w == b"\n\n") else {
        return (Vec::new(), data);
    };
    let text = String::from_utf8_lossy(&data[..at]);
    let shares = text.lines().take(8).map(Share::from_text).collect();
    (shares, &data[at + 2..])
}

/// Joins shares and a backup file into one input for [`backup`].
#[must_use]
pub fn join_backup_input(shares: &[Share], backup: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in shares {
        out.extend_from_slice(s.expose_text().as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(backup);
    out
}

/// Backup files restored with the shares that come with them, into an empty in-memory store.
pub fn backup(data: &[u8]) {
    let (shares, file) = split_backup_input(data);
    let kms = fresh_kms();
    let Ok(entries) = kms.restore(file, &shares) else {
        return;
    };
    // Round trip: the restored KMS unseals with the same shares, and its own backup restores
    // the same number of entries elsewhere.
    let mut unsealed = false;
    for s in &shares {
        match kms.unseal_with(s) {
            Ok(UnsealProgress::Unsealed) => {
                unsealed = true;
                break;
            }
            Ok(UnsealProgress::NeedMore { .. }) | Err(_) => {}
        }
    }
    assert!(
        unsealed,
        "a restored backup does not unseal with its shares"
    );
    let Ok(admin) = Principal::new("fuzz-admin", Role::Admin) else {
        panic!("principal");
    };
    let Ok(again) = kms.backup(&admin) else {
        panic!("the restored KMS cannot back up");
    };
    let other = fresh_kms();
    assert_eq!(
        other.restore(&again, &shares).ok(),
        Some(entries),
        "backup of a restore"
    );
}

/// Exported audit trails (JSON Lines) verified with the fixture audit public key, in memory
/// (`audit::verify`) and streamed (`audit::verify_reader`, through buffers smaller than a
/// line): both must give the same answer, down to the broken line and its problem. The input as
/// a chain of one file (`audit::verify_files`) must agree too.
pub fn audit_file(data: &[u8]) {
    use kms_core::audit::{self, Start};

    let public = fixtures::sm2_public();
    let Ok(text) = std::str::from_utf8(data) else {
        // Streamed, bytes that are not UTF-8 break the line they are on.
        let lines = data.split(|&b| b == b'\n').count();
        match audit::verify_reader(data, public) {
            Ok(_) => panic!("a file that is not UTF-8 verified"),
            Err(broken) => assert!(
                broken.line >= 1 && broken.line <= lines,
                "error names line {} of {lines}",
                broken.line
            ),
        }
        return;
    };
    let lines = text.lines().count();
    let in_memory = audit::verify(text, public);
    for capacity in [1, 13, 8192] {
        let streamed =
            audit::verify_reader(std::io::BufReader::with_capacity(capacity, data), public);
        assert_eq!(
            streamed, in_memory,
            "streamed (buffer {capacity}) and in-memory differ"
        );
    }
    for start in [Start::Genesis, Start::GenesisOrAnchor] {
        let chained = audit::verify_files([("fuzz.jsonl", data)], public, start);
        let from_anchor_refused =
            start == Start::Genesis && in_memory.as_ref().is_ok_and(|v| v.anchor.is_some());
        assert_eq!(
            chained.is_ok(),
            in_memory.is_ok() && !from_anchor_refused,
            "a chain of one file disagrees with the file"
        );
        if let (Ok(chain), Ok(one)) = (&chained, &in_memory) {
            assert_eq!(
                (
                    chain.records,
                    chain.checkpoints,
                    chain.last_seq,
                    &chain.last_hash
                ),
                (one.records, one.checkpoints, one.last_seq, &one.last_hash),
                "a chain of one file counts differently"
            );
            assert_eq!(chain.complete_from_genesis, one.anchor.is_none());
        }
    }
    match in_memory {
        Ok(verified) => {
            assert_eq!(
                usize::try_from(verified.records + verified.checkpoints).ok(),
                Some(lines),
                "every line is a record or a checkpoint"
            );
            assert!(verified.first_seq() <= verified.last_seq.saturating_add(1));
            // An anchor is a signed closing checkpoint on the first line.
            if let Some(anchor) = &verified.anchor {
                assert!(anchor.closes_export && anchor.seq >= 1, "anchor {anchor:?}");
                assert!(audit::checkpoint_signature_valid(anchor, public));
            }
            // Round trip: each line parses, re-serializes and parses to the same value.
            for raw in text.lines() {
                let Ok(line) = serde_json::from_str::<audit::Line>(raw) else {
                    panic!("a verified line does not parse");
                };
                let Ok(out) = serde_json::to_string(&line) else {
                    panic!("a line does not serialize");
                };
                let Ok(back) = serde_json::from_str::<audit::Line>(&out) else {
                    panic!("a serialized line does not parse");
                };
                assert_eq!(back, line, "audit line round trip");
            }
        }
        Err(broken) => assert!(
            broken.line >= 1 && broken.line <= lines.max(1),
            "error names line {} of {lines}",
            broken.line
        ),
    }
}

/// Exported inventories verified with the fixture audit public key.
pub fn inventory_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(inventory) = kms_core::verify_inventory(text, fixtures::sm2_public()) else {
        return;
    };
    // Round trip: the parsed inventory, serialized again, verifies and parses to itself.
    let Ok(out) = serde_json::to_string(&inventory) else {
        panic!("inventory does not serialize");
    };
    let Ok(back) = kms_core::verify_inventory(&out, fixtures::sm2_public()) else {
        panic!("a re-serialized inventory does not verify");
    };
    assert_eq!(back, inventory, "inventory round trip");
}

/// Every name a caller types: algorithm names (policy::names), key references, namespaces,
/// aliases, roles and grant operations.
pub fn algorithm_names(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    let s = input.as_ref();

    let norm = names::normalize(s);
    assert_eq!(names::normalize(&norm), norm, "normalize is not idempotent");

    check_name(names::parse_key_spec(s), |spec| {
        names::parse_key_spec(spec.name()) == Ok(spec)
    });
    check_name(names::parse_digest(s), |d| {
        names::parse_digest(d.name()) == Ok(d)
    });
    check_name(names::parse_rsa_sig_scheme(s), |r| {
        names::parse_rsa_sig_scheme(r.name()) == Ok(r)
    });
    check_name(names::parse_data_key_spec(s), |d| {
        names::parse_data_key_spec(d.name()) == Ok(d)
    });
    check_name(names::parse_rsa_encryption_padding(s), |()| true);

    if let Ok(ns) = Namespace::new(s) {
        assert_eq!(Namespace::new(ns.as_str()).ok(), Some(ns.clone()));
        // A new name is also a valid stored one (records written now load later), never a
        // reserved one.
        assert_eq!(Namespace::existing(s).ok(), Some(ns.clone()));
        assert!(!ns.is_reserved() && ns.check_new().is_ok());
    }
    if let Ok(ns) = Namespace::existing(s) {
        assert_eq!(Namespace::existing(ns.as_str()).ok(), Some(ns.clone()));
    }
    if let Ok(alias) = Alias::new(s) {
        assert_eq!(Alias::new(alias.as_str()).ok(), Some(alias));
    }
    if let Ok(op) = GrantOp::parse(s) {
        assert_eq!(GrantOp::parse(op.name()).ok(), Some(op));
    }
    let Ok(home) = Namespace::new("fuzz") else {
        panic!("namespace");
    };
    if let Ok(key) = KeyRef::parse(s, &home) {
        assert_eq!(
            KeyRef::parse(&key.to_string(), &home).ok(),
            Some(key),
            "key reference round trip"
        );
    }
    let _ = kms_server::convert::role(s, s);
    let _ = kms_server::convert::signature_params(s, s, s);
}

/// A parsed name must come back from its canonical name; a refusal must be a short, printable
/// message (it is sent to the caller and logged).
fn check_name<T: Copy, E: std::fmt::Display>(parsed: Result<T, E>, round_trip: impl Fn(T) -> bool) {
    match parsed {
        Ok(v) => assert!(round_trip(v), "name round trip"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.len() < 1024, "error message of {} bytes", msg.len());
            assert!(
                !msg.chars().any(char::is_control),
                "control character in {msg:?}"
            );
        }
    }
}

/// Wrapped key material as `ImportKeyMaterial` opens it: the first byte picks the spec (and the
/// fixture wrapping key: SM2, or RSA-3072 for the RSA specs), the rest is the wrapped bytes.
/// Every failure is the one opaque error; what opens wraps again and opens to itself.
pub fn wrapped_material(data: &[u8]) {
    use kms_core::crypto::transport::{self, WrappingSpec};
    let Some((&selector, wrapped)) = data.split_first() else {
        return;
    };
    let spec = WrappingSpec::ALL[usize::from(selector) % WrappingSpec::ALL.len()];
    let key = if spec == WrappingSpec::Sm2 {
        fixtures::sm2_decrypt()
    } else {
        fixtures::rsa3072_wrap()
    };
    let Ok(protect) = Policy::default().approve(Purpose::AsymmetricDecrypt, key.spec()) else {
        panic!("policy refuses the wrapping key");
    };
    let open = protect.for_open();
    match transport::unwrap(&open, spec, key, wrapped) {
        Ok(material) => {
            let Ok(public) = crypto::public_key_of(key) else {
                panic!("no public key");
            };
            let Ok(again) = transport::wrap(&protect, spec, &public, material.expose_secret())
            else {
                panic!("opened material does not wrap again by {}", spec.name());
            };
            let Ok(round) = transport::unwrap(&open, spec, key, &again) else {
                panic!("our own wrap does not open");
            };
            assert!(round.ct_eq(&material), "round trip changed the material");
        }
        Err(e) => assert_eq!(e, CryptoError::DecryptionFailed, "non-uniform unwrap error"),
    }
}

/// A private key file as import and `--wrap-locally` read it: PEM or DER, then the PKCS#8 shape
/// check and the import for each asymmetric purpose under both policies. An accepted key
/// exports to a PKCS#8 that imports again to the same public key.
pub fn private_key(data: &[u8]) {
    use kms_core::crypto::pkcs8_shape;
    let Ok(der) = pkcs8_shape::der_from_pem_or_der(data) else {
        return;
    };
    let der = der.expose_secret();
    let shape = pkcs8_shape::problem(der);
    for policy in policies() {
        for purpose in [Purpose::Sign, Purpose::AsymmetricDecrypt] {
            let Ok(key) = crypto::import_private_key(policy, purpose, der) else {
                continue;
            };
            assert!(
                shape.is_none(),
                "accepted a document the shape check refuses"
            );
            let Ok(exported) = crypto::export_material(&key) else {
                panic!("an imported key does not export");
            };
            let Ok(again) = crypto::import_private_key(policy, purpose, exported.expose_secret())
            else {
                panic!("an exported key does not import again");
            };
            assert_eq!(
                crypto::public_key_of(&again).ok(),
                crypto::public_key_of(&key).ok(),
                "export changed the key"
            );
        }
    }
}

/// A decrypted sealed password as the password shield reads it (docs/FORMATS.md): what parses
/// encodes back to the same bytes, and the strength rules take any password it yields.
pub fn sealed_password(data: &[u8]) {
    use kms_core::crypto::password_hash::{self as ph, StrengthRules};
    let Ok(opened) = ph::parse_sealed(kms_core::SecretBytes::copy_from_slice(data)) else {
        return;
    };
    let Ok(again) = ph::encode_sealed(opened.expose_password(), opened.timestamp(), opened.nonce())
    else {
        panic!("a parsed sealed password does not encode");
    };
    assert_eq!(
        again.expose_secret(),
        data,
        "the round trip changed the bytes"
    );
    let ids = [String::from_utf8_lossy(opened.nonce()).into_owned()];
    let _ = ph::check_strength(opened.expose_password(), &StrengthRules::DEFAULT, &ids);
}

/// A stored password hash as `VerifyPassword` reads it: only the canonical form parses, so
/// what parses writes back to the same string (and parses to the same value). No hash is
/// computed: the cost bounds are the parser's to enforce.
pub fn stored_hash(data: &[u8]) {
    use kms_core::crypto::password_hash::StoredHash;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = StoredHash::parse(text) else {
        return;
    };
    assert_eq!(parsed.to_phc(), text, "not the canonical form");
    assert_eq!(StoredHash::parse(&parsed.to_phc()).ok(), Some(parsed));
}

/// A fixed key of a tokenize spec (its bytes are public test data).
fn token_key(spec: KeySpec) -> kms_core::KeyMaterial {
    let len = match spec {
        KeySpec::Sm4Ff1 => 16,
        KeySpec::Aes256Ff1
        | KeySpec::HmacSm3
        | KeySpec::Sm4Gcm
        | KeySpec::Aes256Gcm
        | KeySpec::Sm2
        | KeySpec::Rsa2048
        | KeySpec::Rsa3072
        | KeySpec::Rsa4096
        | KeySpec::HmacSha256
        | KeySpec::HmacSha384
        | KeySpec::HmacSha512 => 32,
    };
    let Ok(approved) = Policy::default().approve(Purpose::Tokenize, spec) else {
        panic!("{spec} is not a tokenize spec");
    };
    let bytes: Vec<u8> = (0..len).map(|i| 0x5a ^ i).collect();
    kms_core::KeyMaterial::import_symmetric(&approved, kms_core::SecretBytes::from_vec(bytes))
        .unwrap_or_else(|e| panic!("fixture token key: {e}"))
}

/// A refusal of a value or token: `InvalidArgument` on the field, short and printable, never
/// repeating the input.
fn check_token_refusal(e: &Error, field: &str, input: &[u8]) {
    let Error::InvalidArgument(i) = e else {
        panic!("a value was refused with {e:?}, not INVALID_ARGUMENT");
    };
    assert_eq!(i.field, field);
    let msg = e.to_string();
    assert!(
        msg.len() < 1024 && !msg.chars().any(char::is_control),
        "{msg:?}"
    );
    if input.len() >= 8 {
        assert!(
            !msg.as_bytes().windows(input.len()).any(|w| w == input),
            "the message repeats the input"
        );
    }
}

/// Token values (`crypto::tokenize`): the first byte picks the key (sm4-ff1, aes-256-ff1,
/// hmac-sm3) and the format; the bytes up to the first newline are a context value, the rest
/// the value. The format name parser also reads the value. A token keeps the value's length,
/// alphabet and a PAN's kept digits, has the Luhn property its format promises, and (FF1) goes
/// back to the value; a string that detokenises tokenises back to itself; refusals are
/// INVALID_ARGUMENT naming the field, never the input.
pub fn token_values(data: &[u8]) {
    use kms_core::crypto::tokenize::{Detokenizer, TokenFormat, Tokenizer, luhn_valid};
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let spec = [KeySpec::Sm4Ff1, KeySpec::Aes256Ff1, KeySpec::HmacSm3][usize::from(selector % 3)];
    let format = TokenFormat::ALL[usize::from(selector / 3 % 4)];
    let (context_value, value) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => rest.split_at(i),
        None => (&[][..], rest),
    };
    let value = value.strip_prefix(b"\n").unwrap_or(value);
    if let Ok(f) = TokenFormat::parse(&String::from_utf8_lossy(value)) {
        assert_eq!(TokenFormat::parse(f.name()).ok(), Some(f));
    }
    let context: EncryptionContext =
        [("fuzz", String::from_utf8_lossy(context_value).into_owned())]
            .into_iter()
            .collect();
    let key = token_key(spec);
    let policy = Policy::default();
    let Ok(approved) = policy.approve(Purpose::Tokenize, spec) else {
        panic!("approve");
    };
    let Ok(t) = Tokenizer::new(&approved, &key, format, &context) else {
        panic!("tokenizer");
    };
    let Ok(open) = policy.approve_open(Purpose::Tokenize, spec) else {
        panic!("approve_open");
    };
    let d = Detokenizer::new(&open, &key, format, &context).ok();
    assert_eq!(d.is_some(), t.reversible());
    let digits =
        |s: &[u8]| -> Vec<u16> { s.iter().map(|&c| u16::from(c.wrapping_sub(b'0'))).collect() };
    let is_pan = matches!(format, TokenFormat::Pan | TokenFormat::PanLuhnInvalid);
    match t.tokenize(value) {
        Ok(token) => {
            let token = token.expose_secret();
            assert_eq!(token.len(), value.len());
            assert!(token.iter().all(|c| format.alphabet().chars().contains(c)));
            if is_pan {
                assert_eq!(token.get(..6), value.get(..6));
                assert_eq!(token.get(token.len() - 4..), value.get(value.len() - 4..));
                assert_eq!(luhn_valid(&digits(token)), format == TokenFormat::Pan);
            }
            if let Some(d) = &d {
                match d.detokenize(token) {
                    Ok(back) => assert_eq!(back.expose_secret(), value, "round trip"),
                    Err(e) => panic!("a token did not detokenise: {e}"),
                }
            }
        }
        Err(e) => check_token_refusal(&e, "value", value),
    }
    if let Some(d) = &d {
        match d.detokenize(value) {
            Ok(v) => match t.tokenize(v.expose_secret()) {
                Ok(again) => assert_eq!(again.expose_secret(), value, "detokenise, tokenise"),
                Err(e) => panic!("a detokenised value did not tokenise: {e}"),
            },
            Err(e) => check_token_refusal(&e, "token", value),
        }
    }
}

/// The CSV of `kms tokenize` (`kms_cli::csv`): an error names a line within the input, never
/// a panic; what parses writes out and parses back to the same records.
pub fn token_csv(data: &[u8]) {
    match kms_cli::csv::parse(data) {
        Ok(table) => {
            let written = kms_cli::csv::write(&table);
            let Ok(again) = kms_cli::csv::parse(&written) else {
                panic!("written CSV does not parse");
            };
            assert_eq!(*again.records, *table.records, "CSV round trip");
            if !table.records.is_empty() {
                assert_eq!(again.crlf, table.crlf);
            }
        }
        Err(e) => {
            let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
            assert!(e.line >= 1 && e.line <= lines, "{e} of {lines} lines");
        }
    }
}

/// The fields of a signed request, as the target reads them from its input: a scheme selector
/// byte, then method, path, nonce and body separated by 0x00 (the body takes the rest), and a
/// fixed timestamp. The selector's high bit makes the body a digest.
#[must_use]
pub fn split_signed_request(data: &[u8]) -> Option<(u8, [&[u8]; 4])> {
    let (&selector, rest) = data.split_first()?;
    let mut fields = rest.splitn(4, |&b| b == 0);
    let parts = [
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    ];
    Some((selector, parts))
}

/// A signed request's fields as `VerifyRequest` takes them: the shape check and the canonical
/// string agree (a request is malformed for one exactly when it is for the other), and a
/// canonical string has six lines that read back to the fields, so no field can shift another.
pub fn signed_request(data: &[u8]) {
    use kms_core::signed_request::{
        RequestBody, RequestParts, RequestScheme, canonical, check_shape,
    };
    let Some((selector, [method, path, nonce, body])) = split_signed_request(data) else {
        return;
    };
    let scheme = RequestScheme::ALL[usize::from(selector & 0x7f) % RequestScheme::ALL.len()];
    let (Ok(method), Ok(path)) = (std::str::from_utf8(method), std::str::from_utf8(path)) else {
        return;
    };
    let body = if selector & 0x80 == 0 {
        RequestBody::Bytes(body)
    } else {
        RequestBody::Digest(body)
    };
    let parts = RequestParts {
        method,
        path,
        timestamp: 1_764_806_400,
        nonce,
        body,
    };
    let built = canonical(scheme, &parts);
    assert_eq!(
        built.is_ok(),
        check_shape(scheme, &parts, b"signature").is_ok(),
        "the shape check and the canonical string disagree"
    );
    let Ok(built) = built else { return };
    let text = String::from_utf8(built).expect("a canonical string is ASCII");
    let lines: Vec<&str> = text.split('\n').collect();
    let digest = match body {
        RequestBody::Bytes(b) => scheme.body_digest(b).to_vec(),
        RequestBody::Digest(d) => d.to_vec(),
    };
    assert_eq!(
        lines,
        [
            "KMS-REQUEST-V1",
            method,
            path,
            "1764806400",
            &hex::encode(nonce),
            &hex::encode(digest),
        ],
        "the canonical string does not read back to its fields"
    );
}
