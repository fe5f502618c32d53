//! Stores and backups written by the first key hierarchy (before issue 17's typed hierarchy and
//! HKDF-SM3 derivation) still open: `tests/data/hierarchy-v1/` (see its README).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kms_core::authz::{Principal, Role};
use kms_core::envelope::EncryptionContext;
use kms_core::hierarchy::share::Share;
use kms_core::keys::{Alias, KeyRef, Namespace};
use kms_core::store::{MemoryStore, SledStore, Store};
use kms_core::{Error, KmsConfig, TestKms, UnsealProgress};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hierarchy-v1")
        .join(name)
}

fn shares() -> Vec<Share> {
    std::fs::read_to_string(fixture("shares.txt"))
        .unwrap()
        .lines()
        .map(Share::from_text)
        .collect()
}

fn context() -> EncryptionContext {
    EncryptionContext::new(BTreeMap::from([("order".to_owned(), "42".to_owned())]))
}

fn app() -> Principal {
    Principal::new(
        "app",
        Role::App {
            namespace: Namespace::new("payments").unwrap(),
        },
    )
    .unwrap()
}

fn cards() -> KeyRef {
    KeyRef::Alias(
        Namespace::new("payments").unwrap(),
        Alias::new("cards").unwrap(),
    )
}

/// Copies the fixture store (sled writes to what it opens).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn unseal(kms: &TestKms) {
    let s = shares();
    kms.unseal_with(&s[0]).unwrap();
    assert_eq!(kms.unseal_with(&s[2]).unwrap(), UnsealProgress::Unsealed);
}

fn decrypts_the_v1_ciphertext(kms: &TestKms) {
    let ct = std::fs::read(fixture("ciphertext.bin")).unwrap();
    let out = kms.decrypt(&app(), &context(), &ct).unwrap();
    assert_eq!(
        out.plaintext.expose_secret(),
        b"written by the v1 hierarchy"
    );
    // Wrong context: the v1 blob still binds it.
    assert!(matches!(
        kms.decrypt(&app(), &EncryptionContext::default(), &ct),
        Err(Error::Crypto(kms_core::CryptoError::DecryptionFailed))
    ));
}

#[test]
fn a_v1_sled_store_opens_unseals_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("store"), dir.path());
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let kms = TestKms::open(store, KmsConfig::default());
    unseal(&kms);
    decrypts_the_v1_ciphertext(&kms);
    // New work goes on under the same keys.
    let again = kms.encrypt(&app(), &cards(), &context(), b"new").unwrap();
    let back = kms.decrypt(&app(), &context(), &again.ciphertext).unwrap();
    assert_eq!(back.plaintext.expose_secret(), b"new");
    // The context HMAC is now derived with HKDF-SM3: it differs from the v1 value, and is stable.
    let v1_hmac = std::fs::read_to_string(fixture("context_hmac.txt")).unwrap();
    let now = kms.context_hmac(&context()).unwrap();
    assert_ne!(now, v1_hmac.trim());
    assert_eq!(kms.context_hmac(&context()).unwrap(), now);
}

#[test]
fn a_v1_backup_restores_and_a_tampered_one_does_not() {
    let backup = std::fs::read(fixture("backup.bin")).unwrap();
    assert_eq!(backup[4], 1, "the fixture is a format-1 backup");
    let kms = TestKms::open(Arc::new(MemoryStore::new()), KmsConfig::default());
    let entries = kms.restore(&backup, &shares()[..2]).unwrap();
    assert!(entries > 0);
    unseal(&kms);
    decrypts_the_v1_ciphertext(&kms);

    let mut tampered = backup;
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let fresh = TestKms::open(Arc::new(MemoryStore::new()), KmsConfig::default());
    assert!(matches!(
        fresh.restore(&tampered, &shares()[..2]),
        Err(Error::InvalidArgument(e)) if e.problem.contains("integrity check failed")
    ));
}

#[test]
fn new_backups_are_format_2_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("store"), dir.path());
    let kms = TestKms::open(
        Arc::new(SledStore::open(dir.path()).unwrap()),
        KmsConfig::default(),
    );
    unseal(&kms);
    let admin = kms.principal("admin").unwrap().unwrap();
    let backup = kms.backup(&admin).unwrap();
    assert_eq!(&backup[..5], b"KMSB\x02");
    let restored = TestKms::open(Arc::new(MemoryStore::new()), KmsConfig::default());
    restored.restore(&backup, &shares()[1..]).unwrap();
    unseal(&restored);
    decrypts_the_v1_ciphertext(&restored);
}
