//! Audit retention end to end: a real server configured from a tiny TOML (50 hot records, 20 per
//! segment, the archiver looking every second) archives segment files while requests come in;
//! the files and a live export over gRPC chain into one trail that verifies from the genesis.
//! And the export itself: streamed in chunks of whole lines, fixed when it begins.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_core::audit::{Start, verify_files};
use kms_core::store::{SledStore, Store, Tree};
use kms_proto::v1;
use kms_server::config::Config;
use kms_tests::world::World;

use crate::common::audit_export;

const HOT: u64 = 50;
const SEGMENT: u64 = 20;

/// The segment files in `dir` as `(first, last, path)`, in chain order.
fn segments(dir: &Path) -> Vec<(u64, u64, PathBuf)> {
    let mut found: Vec<(u64, u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| {
                let path = e.ok()?.path();
                let name = path.file_name()?.to_str()?.to_owned();
                let range = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
                let (first, last) = range.split_once('-')?;
                Some((first.parse().ok()?, last.parse().ok()?, path))
            })
            .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The audit public key, as an auditor fetches it.
async fn audit_public_key(w: &World) -> kms_core::crypto::PublicKey {
    let der = w
        .auditor
        .audit
        .clone()
        .get_audit_public_key(v1::GetAuditPublicKeyRequest {})
        .await
        .unwrap()
        .into_inner()
        .public_key_der;
    kms_core::crypto::PublicKey::from_spki_der(kms_core::policy::Policy::default(), &der).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segments_and_the_live_export_chain_into_one_trail_from_the_genesis() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("audit-archive");
    let toml = tmp.path().join("kms.toml");
    std::fs::write(
        &toml,
        format!(
            "data_dir = \"data\"\naudit_archive_dir = \"audit-archive\"\n\
             audit_hot_records = {HOT}\naudit_segment_records = {SEGMENT}\n\
             audit_checkpoint_records = 7\naudit_checkpoint_seconds = 1\naudit_archive_seconds = 1\n\
             [tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\nclient_ca = \"ca.pem\"\n"
        ),
    )
    .unwrap();
    let config = Config::load(&toml).unwrap();
    let settings = config.settings();
    assert_eq!(settings.audit_archive.as_ref().unwrap().dir, archive);
    let w = World::start_with(settings).await;

    // ~150 audited requests on top of the world's setup (init, unseal, principals).
    let mut crypto = w.app.crypto.clone();
    for i in 0..150 {
        crypto
            .generate_random(v1::GenerateRandomRequest { length: 8 })
            .await
            .unwrap_or_else(|s| panic!("request {i}: {s:?}"));
    }
    // Once caught up the store holds at most HOT records: archived through at least 100.
    let deadline = Instant::now() + Duration::from_secs(30);
    while segments(&archive)
        .last()
        .is_none_or(|(_, last, _)| *last < 100)
    {
        assert!(
            Instant::now() < deadline,
            "no segment reached record 100 in 30 s: {:?}",
            segments(&archive)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Caught up: no new segment for longer than the archiver's interval.
    loop {
        let before = segments(&archive).len();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if segments(&archive).len() == before {
            break;
        }
        assert!(Instant::now() < deadline, "the archiver never caught up");
    }

    let public = audit_public_key(&w).await;
    let live = audit_export(&w).await;

    // Stop the server (and its archiver) before looking at the files and the store.
    let World { server, dir, .. } = w;
    server.stop().await.unwrap();

    // Each file alone: the export starts at an anchor, the closing checkpoint of the last
    // segment archived before it began; the segments up to that one come before it (a later
    // segment may have been written after the export began).
    let verify = |text: &str| kms_core::audit::verify(text, &public).unwrap();
    let live_alone = verify(&live);
    let anchor = live_alone.anchor.clone().unwrap();
    assert!(anchor.closes_export && anchor.seq >= 100, "{anchor:?}");
    let files: Vec<(u64, u64, PathBuf)> = segments(&archive)
        .into_iter()
        .filter(|(_, last, _)| *last <= anchor.seq)
        .collect();
    let expected: Vec<(u64, u64)> = (0..anchor.seq / SEGMENT)
        .map(|i| (i * SEGMENT + 1, (i + 1) * SEGMENT))
        .collect();
    assert_eq!(
        files.iter().map(|(f, l, _)| (*f, *l)).collect::<Vec<_>>(),
        expected,
        "segments of {SEGMENT} records from record 1 up to the export's anchor"
    );

    // The chain, file by file: the first segment starts at record 1 with no anchor; every later
    // file (the export last) starts with a checkpoint over the same seq and hash as the previous
    // file's closing checkpoint — the very same line — and goes on with the next record.
    let texts: Vec<String> = files
        .iter()
        .map(|(_, _, p)| std::fs::read_to_string(p).unwrap())
        .chain([live.clone()])
        .collect();
    let alone: Vec<_> = texts.iter().map(|t| verify(t)).collect();
    assert_eq!(alone[0].anchor, None);
    assert_eq!(alone[0].first_seq(), 1);
    assert!(
        texts[0]
            .lines()
            .next()
            .unwrap()
            .starts_with("{\"type\":\"record\",\"seq\":1,")
    );
    for i in 1..texts.len() {
        let (before, after) = (&alone[i - 1], &alone[i]);
        let opening = after.anchor.as_ref().unwrap();
        assert_eq!(
            (opening.seq, &opening.last_hash),
            (before.last_seq, &before.last_hash),
            "file {i} does not start where file {} ends",
            i - 1
        );
        assert_eq!(
            texts[i].lines().next(),
            texts[i - 1].lines().last(),
            "file {i} opens with file {}'s closing line",
            i - 1
        );
        let next = format!("{{\"type\":\"record\",\"seq\":{},", before.last_seq + 1);
        assert!(
            texts[i].lines().nth(1).unwrap().starts_with(&next),
            "file {i} continues with record {}",
            before.last_seq + 1
        );
    }

    // And as one trail: complete from the genesis, every record once.
    let mut named: Vec<(String, Box<dyn std::io::BufRead>)> = files
        .iter()
        .map(|(_, _, p)| {
            let reader: Box<dyn std::io::BufRead> =
                Box::new(BufReader::new(std::fs::File::open(p).unwrap()));
            (p.display().to_string(), reader)
        })
        .collect();
    named.push(("live export".into(), Box::new(live.as_bytes())));
    let verified = verify_files(named, &public, Start::Genesis).unwrap();
    assert!(verified.complete_from_genesis);
    assert_eq!(verified.first_seq, 1);
    assert_eq!(verified.last_seq, live_alone.last_seq);
    assert_eq!(verified.records, live_alone.last_seq);
    assert!(verified.records >= 156, "{} records", verified.records);

    // The archiver left no partial file, and the store keeps only the hot records.
    let strays: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".jsonl"))
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
    let store_dir = dir.path().to_owned();
    let hot = tokio::task::spawn_blocking(move || {
        // The sled store keeps its trail in its live log: the records its segments hold.
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&store_dir).unwrap());
        assert!(store.scan_prefix(Tree::Audit, b"").unwrap().is_empty());
        kms_core::audit::held_records(&store).unwrap()
    })
    .await
    .unwrap();
    assert!(
        hot <= HOT + 2,
        "the store holds {hot} records, more than the hot window"
    );
}

/// `n` concurrent app calls, each leaving one audit record.
async fn random_calls(w: &World, n: usize) {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let mut crypto = w.app.crypto.clone();
            tokio::spawn(async move {
                crypto
                    .generate_random(v1::GenerateRandomRequest { length: 8 })
                    .await
                    .unwrap();
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
}

/// A trail of more than a thousand lines comes in several chunks of at most a thousand whole
/// lines each, and holds exactly the records written before the export began (not its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_export_streams_in_chunks_of_whole_lines() {
    let w = World::start().await;
    random_calls(&w, 1200).await;
    let mut stream = w
        .auditor
        .audit
        .clone()
        .export_audit(v1::ExportAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        chunks.push(chunk.lines);
    }
    assert!(chunks.len() >= 2, "{} chunks", chunks.len());
    for chunk in &chunks {
        assert!(chunk.ends_with('\n'), "a chunk ends inside a line");
        assert!(chunk.lines().count() <= 1000);
    }
    let text = chunks.concat();
    let public = audit_public_key(&w).await;
    let verified = kms_core::audit::verify(&text, &public).unwrap();
    // The world's setup (init, two unseals, three principals: each an intent record and an
    // outcome record) and the 1200 calls (random generation, which changes nothing: one each).
    assert_eq!(verified.records, 2 * 6 + 1200);
    assert_eq!(verified.anchor, None);
    w.stop().await;
}

/// An export the client abandons part way gets a second record with the same request id: the
/// first (written as the export began) says OK, the second says how it ended.
#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_export_is_recorded_as_incomplete() {
    let w = World::start().await;
    // More lines than the export thread's channel and the HTTP/2 windows hold, so the export
    // cannot have finished when the client lets go.
    for _ in 0..20 {
        random_calls(&w, 1000).await;
    }
    let mut stream = w
        .auditor
        .audit
        .clone()
        .export_audit(v1::ExportAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.lines.ends_with('\n'));
    drop(stream);

    let records = |text: &str| -> Vec<kms_core::audit::Record> {
        text.lines()
            .filter_map(|l| match serde_json::from_str(l) {
                Ok(kms_core::audit::Line::Record(r)) => Some(r),
                _ => None,
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (begun, ended) = loop {
        let all = records(&audit_export(&w).await);
        let ended = all
            .iter()
            .find(|r| r.flags == ["export-incomplete"])
            .cloned();
        if let Some(ended) = ended {
            let begun = all
                .iter()
                .find(|r| r.request_id == ended.request_id && r.flags.is_empty())
                .cloned()
                .expect("the export's first record");
            break (begun, ended);
        }
        assert!(
            Instant::now() < deadline,
            "no record of the abandoned export"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(begun.operation, "Audit/ExportAudit");
    assert_eq!(begun.outcome, "OK");
    assert_eq!(ended.operation, "Audit/ExportAudit");
    assert_eq!(ended.outcome, "CANCELLED");
    assert_eq!(ended.role, "auditor");
    assert_eq!(ended.principal, begun.principal);
    assert!(ended.seq > begun.seq);
    w.stop().await;
}
