//! The front door (issue 18 item 6) under a raw HTTP/2 client: what an unregistered certificate's
//! stalled streams cost the server.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kms_proto::v1;
use kms_tests::net::{self, MODERN};
use kms_tests::pki::subjects;
use kms_tests::world::World;
use tonic::Code;

/// The server's resident set, from /proc (the server runs in this process, so the client's
/// memory counts too: the bound holds for the server with room to spare).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// The live audit trail's records, exported by the auditor.
async fn audit_records(w: &World) -> Vec<kms_core::audit::Record> {
    crate::common::audit_export(w)
        .await
        .lines()
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(kms_core::audit::Line::Record(r)) => Some(r),
            _ => None,
        })
        .collect()
}

/// A raw HTTP/2 connection over mutual TLS with the stranger's certificate (issued by the CA,
/// never registered).
async fn stranger_h2(w: &World) -> h2::client::SendRequest<Bytes> {
    let config = net::client_config(w.pki.ca.cert_pem(), Some(&w.pki.stranger), MODERN);
    let tls = net::handshake(w.server.addr, config).await.unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// Opens a stream that announces a 60 KiB Encrypt message, sends 16 bytes of it and stalls:
/// the body never completes. The send half is returned so that the stream stays open.
fn stall(
    send: &mut h2::client::SendRequest<Bytes>,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    stall_on(send, "/kms.v1.Crypto/Encrypt")
}

/// As [`stall`], on the RPC at `path`.
fn stall_on(
    send: &mut h2::client::SendRequest<Bytes>,
    path: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    let mut partial = vec![0u8];
    partial.extend_from_slice(&(60u32 * 1024).to_be_bytes());
    partial.extend_from_slice(&[0x0a; 11]);
    // The server may have answered (and closed the stream) already: it does not wait for bodies.
    let _ = body.send_data(Bytes::from(partial), false);
    (resp, body)
}

/// The gRPC status of a trailers-only response.
fn grpc_status(resp: &http::Response<h2::RecvStream>) -> (Code, String) {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let code = Code::from_i32(header("grpc-status").parse().unwrap_or(2));
    (code, percent_decoded(&header("grpc-message")))
}

/// grpc-message is percent-encoded (gRPC over HTTP/2 spec).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], text.get(i + 1..i + 3)) {
            (b'%', Some(hex)) if u8::from_str_radix(hex, 16).is_ok() => {
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// Issue 18: "5,000 stalled streams from an unregistered certificate leave RSS growth under
/// 50 MB and no more than one audit record per connection". 40 connections × 125 streams (under
/// the 128-stream cap), each stream's body announced and never finished. Every stream is refused
/// at the gate before its body is read (PERMISSION_DENIED, or RESOURCE_EXHAUSTED once the
/// unregistered certificates' shared bucket is empty); each connection's first refusal is
/// recorded, naming the stranger, and the other 4,960 are only counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_streams_from_an_unregistered_certificate_cost_one_record_per_connection() {
    const CONNECTIONS: usize = 40;
    const STREAMS: usize = 125;
    let w = World::start().await;
    let recorded_before = audit_records(&w)
        .await
        .iter()
        .filter(|r| r.principal == subjects::STRANGER)
        .count();
    // Warm the server's paths (allocator pools, the h2 and TLS code) before the baseline.
    {
        let mut warm = stranger_h2(&w).await;
        let held: Vec<_> = (0..STREAMS).map(|_| stall(&mut warm)).collect();
        for (resp, _) in held {
            resp.await.unwrap();
        }
    }
    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        conns.push(stranger_h2(&w).await);
    }
    let mut held = Vec::new();
    for send in &mut conns {
        for _ in 0..STREAMS {
            held.push(stall(send));
        }
    }
    let mut bodies = Vec::new();
    let mut codes = std::collections::HashMap::<Code, usize>::new();
    for (resp, body) in held {
        let resp = tokio::time::timeout(Duration::from_secs(20), resp)
            .await
            .expect("a stalled stream was not answered")
            .unwrap();
        let (code, message) = grpc_status(&resp);
        if code == Code::PermissionDenied {
            assert!(
                message.contains("spiffe://kms.test/stranger is not a registered principal"),
                "{message}"
            );
        } else {
            assert_eq!(code, Code::ResourceExhausted, "{message}");
            assert!(
                message.contains("one bucket for every unregistered certificate"),
                "{message}"
            );
        }
        *codes.entry(code).or_default() += 1;
        // The streams stay open on the client's side until the end of the test.
        bodies.push((resp, body));
    }
    let elapsed = started.elapsed();
    let rss_after = rss_bytes();
    assert_eq!(codes.values().sum::<usize>(), CONNECTIONS * STREAMS);
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "{} stalled streams in {elapsed:?}: RSS {} → {} KiB; outcomes {codes:?}",
        CONNECTIONS * STREAMS,
        rss_before >> 10,
        rss_after >> 10
    );
    assert!(
        growth < 50 * 1024 * 1024,
        "RSS grew {} MiB ({} → {} MiB) for {} stalled streams",
        growth >> 20,
        rss_before >> 20,
        rss_after >> 20,
        CONNECTIONS * STREAMS
    );
    assert!(
        elapsed < Duration::from_secs(30),
        "5,000 refusals took {elapsed:?}"
    );

    // At most one record per connection: the warm-up's and the 40 others', each naming the
    // stranger, refused, with the role of an unregistered caller.
    let records: Vec<_> = audit_records(&w)
        .await
        .into_iter()
        .filter(|r| r.principal == subjects::STRANGER)
        .collect();
    let new = records.len() - recorded_before;
    eprintln!("{new} audit records naming the stranger");
    assert!(
        (1..=CONNECTIONS + 1).contains(&new),
        "{new} audit records for {} connections (outcomes {codes:?})",
        CONNECTIONS + 1
    );
    for r in &records[recorded_before..] {
        assert!(
            matches!(
                r.outcome.as_str(),
                "PERMISSION_DENIED" | "RESOURCE_EXHAUSTED"
            ),
            "{r:?}"
        );
        assert_eq!(r.role.as_str(), "unregistered", "{r:?}");
        assert_eq!(r.operation.as_str(), "Crypto/Encrypt", "{r:?}");
    }
    // A registered client is served meanwhile.
    w.app
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .expect("a registered client was not served");
    drop((bodies, conns));
    w.stop().await;
}

/// The calls that bootstrap an empty KMS are open to unregistered certificates only until it is
/// initialised; after that the gate refuses them too, before their bodies are read, with what
/// the handler would say. Otherwise each stalled Init would hold a handler waiting for its body
/// and write an intent record first (Init changes state): one record per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_bootstrap_calls_after_init_are_refused_at_the_gate_once_per_connection() {
    let w = World::start().await;
    let before = audit_records(&w).await.len();
    let mut send = stranger_h2(&w).await;
    let mut held = Vec::new();
    for (path, code, fragment) in [
        (
            "/kms.v1.System/Init",
            Code::AlreadyExists,
            "already initialised",
        ),
        (
            "/kms.v1.System/Restore",
            Code::FailedPrecondition,
            "restore needs an uninitialised KMS",
        ),
        (
            "/kms.v1.System/Status",
            Code::PermissionDenied,
            "not a registered principal",
        ),
    ] {
        for _ in 0..20 {
            let (resp, body) = stall_on(&mut send, path);
            let resp = tokio::time::timeout(Duration::from_secs(5), resp)
                .await
                .unwrap_or_else(|_| panic!("a stalled {path} waited for its body"))
                .unwrap();
            let (got, message) = grpc_status(&resp);
            assert_eq!(got, code, "{path}: {message}");
            assert!(message.contains(fragment), "{path}: {message}");
            held.push((resp, body));
        }
    }
    let new: Vec<_> = audit_records(&w).await.split_off(before);
    let strangers: Vec<_> = new
        .iter()
        .filter(|r| r.principal == subjects::STRANGER)
        .collect();
    assert_eq!(strangers.len(), 1, "{strangers:?}");
    assert_eq!(strangers[0].operation.as_str(), "System/Init");
    assert_eq!(strangers[0].outcome.as_str(), "ALREADY_EXISTS");
    assert!(strangers[0].flags.is_empty(), "no intent record: {new:?}");
    drop((held, send));
    w.stop().await;
}
