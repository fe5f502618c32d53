//! Writes `tests/fixtures/audit-rotated/` (run once, then removed; see its README).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kms_core::audit::archive::ArchivePolicy;
use kms_core::audit::writer::{AuditLog, CheckpointPolicy, MemorySigner, Signer};
use kms_core::audit::{Event, Operation, Outcome, Role};
use kms_core::store::MemoryStore;

#[test]
#[ignore = "writes the fixture"]
fn write_the_rotated_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit-rotated");
    let key = MemorySigner::new("00000000-0000-4000-8000-0000000a0d17").unwrap();
    let signer: Signer = key.clone();
    let log = AuditLog::start(
        Arc::new(MemoryStore::new()),
        "node-1",
        signer,
        CheckpointPolicy {
            every_records: 4,
            every: Duration::from_secs(3600),
        },
    );
    let event = |i: u64, op: Operation| Event {
        request_id: format!("req-{i}"),
        principal: "kms://app".into(),
        role: Role::App,
        operation: op,
        outcome: Outcome::Ok,
        ..Event::default()
    };
    let mut i = 0;
    for _round in 0..2 {
        for _ in 0..3 {
            i += 1;
            log.append_blocking(event(i, Operation::Encrypt)).unwrap();
        }
        key.rotate().unwrap();
        i += 1;
        log.append_blocking(Event {
            principal: "kms://admin".into(),
            role: Role::Admin,
            key_id: Some("00000000-0000-4000-8000-0000000a0d17".into()),
            ..event(i, Operation::RotateKey)
        })
        .unwrap();
    }
    for _ in 0..3 {
        i += 1;
        log.append_blocking(event(i, Operation::Decrypt)).unwrap();
    }
    std::fs::write(dir.join("export.jsonl"), log.export().unwrap()).unwrap();
    let archive = ArchivePolicy {
        dir: dir.join("archive"),
        hot_records: 6,
        segment_records: 6,
        every: Duration::from_secs(3600),
    };
    while log.archive_once(&archive).unwrap().segment().is_some() {}
    std::fs::write(dir.join("anchored-export.jsonl"), log.export().unwrap()).unwrap();
    log.stop();
    let keys: String = key.public_keys().iter().map(|k| k.to_pem()).collect();
    std::fs::write(dir.join("audit-public-keys.pem"), keys).unwrap();
    std::fs::write(dir.join("oldest.pem"), key.public_key(1).unwrap().to_pem()).unwrap();
}
