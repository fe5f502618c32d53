//! Writes the audit fixture in `tests/fixtures/audit-v1/` with the code of this commit (run
//! once, by hand: `cargo test -p kms-core --test audit_v1_fixture -- --ignored`). The files are
//! kept so that later versions of the audit format are tested against exports the format of
//! this commit really wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kms_core::audit::archive::{ArchiveOutcome, ArchivePolicy};
use kms_core::audit::writer::{AuditLog, CheckpointPolicy, ephemeral_signer};
use kms_core::audit::{Event, Start, verify, verify_files};
use kms_core::store::{MemoryStore, Store};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit-v1")
}

/// The calls of the fixture: every role, operation shape, outcome, flag and transport the
/// server wrote at this commit, including a method that does not exist.
fn events() -> Vec<Event> {
    let tls = Some("TLSv1.3 TLS_SM4_GCM_SM3".to_owned());
    let tlcp = Some("TLCP ECC_SM4_GCM_SM3".to_owned());
    let key = Some("6f1c2a7e-33b1-4c55-9c7e-2b8f5d1e0a11".to_owned());
    let e = |n: u32, principal: &str, role: &str, operation: &str, outcome: &str| Event {
        request_id: format!("5eed0001-{n}"),
        principal: principal.into(),
        role: role.into(),
        operation: operation.into(),
        outcome: outcome.into(),
        ..Event::default()
    };
    vec![
        Event {
            key_id: key.clone(),
            key_version: Some(1),
            context_hmac: Some("ab".repeat(32)),
            transport: tls.clone(),
            ..e(1, "kms://app-a", "app", "Crypto/Encrypt", "OK")
        },
        Event {
            key_id: key.clone(),
            key_version: Some(1),
            flags: vec!["key-compromised".into()],
            transport: tlcp.clone(),
            ..e(2, "kms://app-a", "app", "Crypto/Decrypt", "OK")
        },
        Event {
            key_id: key.clone(),
            key_version: Some(1),
            transport: tls.clone(),
            ..e(3, "kms://admin", "admin", "KeyAdmin/CreateKey", "OK")
        },
        Event {
            transport: tls.clone(),
            ..e(
                4,
                "kms://stranger",
                "unregistered",
                "Crypto/Encrypt",
                "PERMISSION_DENIED",
            )
        },
        Event {
            transport: tls.clone(),
            ..e(
                5,
                "unknown",
                "unregistered",
                "Crypto/NoSuchMethod",
                "UNIMPLEMENTED",
            )
        },
        Event {
            flags: vec!["export-incomplete".into()],
            ..e(
                6,
                "kms://auditor",
                "auditor",
                "Audit/ExportAudit",
                "CANCELLED",
            )
        },
        Event {
            key_id: key.clone(),
            key_version: Some(2),
            transport: tls.clone(),
            ..e(7, "kms://app-a", "app", "Crypto/Sign", "INVALID_ARGUMENT")
        },
        Event {
            transport: tls,
            ..e(
                8,
                "kms://admin",
                "admin",
                "System/Unseal",
                "FAILED_PRECONDITION",
            )
        },
        Event {
            key_id: key,
            key_version: Some(2),
            flags: vec!["key-compromised".into()],
            transport: tlcp,
            ..e(9, "kms://app-a", "app", "Crypto/Verify", "OK")
        },
    ]
}

#[test]
#[ignore = "writes the fixture; run by hand, once per format"]
fn write_fixture() {
    let out = dir();
    std::fs::create_dir_all(&out).unwrap();
    let (signer, public) = ephemeral_signer("00000000-0000-4000-8000-0000000a0d17").unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let log = AuditLog::start(
        Arc::clone(&store),
        "node-fixture",
        signer,
        CheckpointPolicy {
            every_records: 4,
            every: Duration::from_secs(3600),
        },
    );
    for e in events() {
        log.append_blocking(e).unwrap();
    }
    let whole = log.export().unwrap();
    assert_eq!(verify(&whole, &public).unwrap().records, 9);

    // Records 1-3 and 4-6 to segment files, then the export that starts at the closing
    // checkpoint of the second.
    let policy = ArchivePolicy {
        dir: out.join("archive"),
        hot_records: 3,
        segment_records: 3,
        every: Duration::from_secs(3600),
    };
    let mut files = Vec::new();
    for _ in 0..2 {
        let outcome = log.archive_once(&policy).unwrap();
        let ArchiveOutcome::Archived(segment) = outcome else {
            panic!("expected a segment, got {outcome:?}");
        };
        let text = std::fs::read_to_string(&segment.path).unwrap();
        files.push((segment.path.display().to_string(), text));
    }
    let anchored = log.export().unwrap();
    log.stop();
    files.push(("anchored".to_owned(), anchored.clone()));
    let chained = verify_files(
        files.iter().map(|(n, t)| (n.as_str(), t.as_bytes())),
        &public,
        Start::Genesis,
    )
    .unwrap();
    assert_eq!((chained.records, chained.last_seq), (9, 9));

    std::fs::write(out.join("audit-public-key.pem"), public.to_pem()).unwrap();
    std::fs::write(out.join("export.jsonl"), whole).unwrap();
    std::fs::write(out.join("anchored-export.jsonl"), anchored).unwrap();
}
