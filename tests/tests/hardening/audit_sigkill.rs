//! The real `kms-server serve` on its sled store, killed with SIGKILL while apps call it (issue
//! 20 item 2: the live audit log). Every call the server answered must have its record in the
//! trail after a restart (a response leaves only once its record is durable), the trail must
//! verify with the audit key, and it must go on. In the second round the kill is followed by a
//! torn last record, as a power loss in the middle of a write leaves one: the restarted server
//! says it cut the unfinished bytes and carries on from the last whole record.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kms_core::audit::{Line, verify};
use kms_core::store::AUDIT_DIR;
use kms_proto::v1;
use kms_tests::net::{self, MODERN};
use kms_tests::pki::{Identity, Pki, subjects};
use kms_tests::world::{Clients, holders, plain_shares, unseal_by_holders};

use crate::child::ChildServer;

/// Calls answered before each kill.
const ANSWERED_BEFORE_KILL: usize = 150;

async fn connect(addr: std::net::SocketAddr, pki: &Pki, who: &Identity) -> Clients {
    let config = net::client_config(pki.ca.cert_pem(), Some(who), MODERN);
    Clients::new(net::channel(addr, config).await.unwrap())
}

/// A well-formed W3C traceparent unique to call `n`: the record of the call carries it, so an
/// answered call can be found in the trail.
fn traceparent(n: u64) -> String {
    format!("00-{:032x}-{:016x}-01", u128::from(n) + 1, 7)
}

/// Keeps four app connections calling GenerateRandom until the server dies; returns the
/// traceparents of the calls it answered.
async fn call_until_killed(server: ChildServer, pki: &Pki, round: u64) -> BTreeSet<String> {
    let answered = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(AtomicU64::new(round << 32));
    let alive = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let app = connect(server.addr, pki, &pki.app).await;
        let (answered, next, alive) =
            (Arc::clone(&answered), Arc::clone(&next), Arc::clone(&alive));
        tasks.push(tokio::spawn(async move {
            let mut crypto = app.crypto.clone();
            while alive.load(Ordering::SeqCst) {
                let tp = traceparent(next.fetch_add(1, Ordering::SeqCst));
                let mut req = tonic::Request::new(v1::GenerateRandomRequest { length: 16 });
                req.metadata_mut()
                    .insert("traceparent", tp.parse().unwrap());
                match crypto.generate_random(req).await {
                    Ok(_) => {
                        answered.lock().unwrap().insert(tp);
                    }
                    // The server is gone: every call from now on fails.
                    Err(_) => return,
                }
            }
        }));
    }
    while answered.lock().unwrap().len() < ANSWERED_BEFORE_KILL {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Killed with calls in flight: groups are being written.
    let (status, _) = tokio::task::spawn_blocking(move || server.kill())
        .await
        .unwrap();
    assert!(!status.success(), "{status}");
    alive.store(false, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    // Every task has ended: the set is this function's alone.
    Arc::into_inner(answered).unwrap().into_inner().unwrap()
}

/// The whole trail, as an auditor exports it.
async fn export_audit(auditor: &Clients) -> String {
    let mut stream = auditor
        .audit
        .clone()
        .export_audit(v1::ExportAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        text.push_str(&chunk.lines);
    }
    text
}

/// The audit public key, as an auditor fetches it.
async fn audit_public_key(auditor: &Clients) -> kms_core::crypto::PublicKey {
    let der = auditor
        .audit
        .clone()
        .get_audit_public_key(v1::GetAuditPublicKeyRequest {})
        .await
        .unwrap()
        .into_inner()
        .public_key_der;
    kms_core::crypto::PublicKey::from_spki_der(kms_core::policy::Policy::default(), &der).unwrap()
}

/// The live log's last segment.
fn last_segment(data: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = fs::read_dir(data.join("store").join(AUDIT_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

/// Restarts the server, unseals it, exports and verifies the trail; every answered call must be
/// in it. Returns the server and the number of records.
async fn restart_and_check(
    config: &Path,
    pki: &Pki,
    shares: &[String],
    answered: &BTreeSet<String>,
    why: &str,
) -> (ChildServer, u64) {
    let server = ChildServer::start(config, &[]);
    let admin = connect(server.addr, pki, &pki.admin).await;
    let custodian = connect(server.addr, pki, &pki.custodian).await;
    unseal_by_holders(shares, &admin, &custodian).await;
    let auditor = connect(server.addr, pki, &pki.auditor).await;
    let public = audit_public_key(&auditor).await;
    let export = export_audit(&auditor).await;
    let verified = verify(&export, &public).unwrap_or_else(|e| panic!("{why}: {e}"));
    let recorded: BTreeSet<String> = export
        .lines()
        .filter_map(|l| match serde_json::from_str::<Line>(l) {
            Ok(Line::Record(r)) => r.traceparent,
            _ => None,
        })
        .collect();
    let lost: Vec<&String> = answered.difference(&recorded).collect();
    assert!(
        lost.is_empty(),
        "{why}: {} answered calls have no record, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    (server, verified.records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_loses_no_answered_call_and_a_torn_record_is_cut() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("server.pem"), &pki.server.cert_pem).unwrap();
    fs::write(dir.join("server-key.pem"), &*pki.server.key_pem).unwrap();
    fs::write(dir.join("ca.pem"), pki.ca.cert_pem()).unwrap();
    let config = dir.join("kms.toml");
    fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\naudit_checkpoint_records = 25\n\
         [tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\nclient_ca = \"ca.pem\"\n",
    )
    .unwrap();
    let data = dir.join("data");

    // Initialise, unseal, register the app and an auditor.
    let server = ChildServer::start(&config, &[]);
    let admin = connect(server.addr, &pki, &pki.admin).await;
    let token = fs::read_to_string(data.join(kms_server::bootstrap::TOKEN_FILE)).unwrap();
    let init = admin
        .system
        .clone()
        .init(v1::InitRequest {
            shares: 3,
            threshold: 2,
            holders: holders(),
            init_token: token.trim().to_owned(),
            ..v1::InitRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let shares = plain_shares(&init);
    let custodian = connect(server.addr, &pki, &pki.custodian).await;
    unseal_by_holders(&shares, &admin, &custodian).await;
    for (subject, role, namespace) in [
        (subjects::APP, "app", subjects::APP_NS),
        (subjects::AUDITOR, "auditor", ""),
    ] {
        admin
            .keys
            .clone()
            .add_principal(v1::AddPrincipalRequest {
                subject: subject.to_owned(),
                role: role.to_owned(),
                namespace: namespace.to_owned(),
            })
            .await
            .unwrap();
    }

    // Round 1: killed under load.
    let answered = call_until_killed(server, &pki, 1).await;
    let (server, first) =
        restart_and_check(&config, &pki, &shares, &answered, "after the kill").await;

    // Round 2: killed under load, then the last record torn as a power loss would leave it.
    let mut all = answered;
    all.extend(call_until_killed(server, &pki, 2).await);
    let segment = last_segment(&data);
    let text = fs::read(&segment).unwrap();
    let last_record = text[..text.len() - 1]
        .split(|&b| b == b'\n')
        .rev()
        .find(|l| l.starts_with(b"{\"type\":\"record\""))
        .unwrap()
        .to_vec();
    let torn = &last_record[..last_record.len() / 2];
    fs::write(&segment, [text.as_slice(), torn].concat()).unwrap();
    let (server, second) =
        restart_and_check(&config, &pki, &shares, &all, "after a torn record").await;
    assert!(
        second > first + ANSWERED_BEFORE_KILL as u64,
        "{first} {second}"
    );
    let (status, lines) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let log: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let warning = log
        .iter()
        .find(|l| l.contains("the audit log ended in an unfinished write"))
        .unwrap_or_else(|| panic!("no warning about the cut in:\n{}", log.join("")));
    assert!(warning.contains("\"level\":\"WARN\""), "{warning}");
    // The torn half record, and whatever unfinished line the kill itself left before it.
    let cut: usize = warning
        .split("\"cut_bytes\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{warning}"));
    assert!(
        cut >= torn.len(),
        "cut {cut} of {} torn bytes: {warning}",
        torn.len()
    );
}
