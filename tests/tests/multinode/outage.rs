//! A node that loses the database: it refuses with UNAVAILABLE (never hangs: every database call
//! is bounded, 2 s in these tests), its health probe says so, the other node keeps serving, and
//! when the database is back the node serves again by itself, without a restart. Nothing any node
//! acknowledged is lost. The database is taken away from one node only, through a proxy the test
//! controls (cut: connections reset and refused; black hole: connections accepted and never
//! answered), and by terminating that node's server connections (`pg_terminate_backend`) — the
//! test process's shared PostgreSQL server is never restarted. The one test that restarts the
//! database server does it to a server of its own.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms_core::clock::SystemClock;
use kms_server::Settings;
use kms_test_postgres::Server;
use kms_tests::pg::{self, Cluster, NodeSpec, Proxy, ProxyMode, Schema};
use kms_tests::world::Clients;
use tonic::Code;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::common::{create_key, describe, encrypt, refused, until};

/// A call on a node without its database must end within this: each store call is bounded by
/// 2 s here, and a refused request makes at most a few in a row (its own read, then its audit
/// record, possibly queued behind another group); measured: about 6 s in a black hole.
const REFUSAL_BOUND: Duration = Duration::from_secs(15);

/// Keeps creating keys through `admin` until told to stop; records the acknowledged ones.
fn writer(
    admin: Clients,
    acked: Arc<Mutex<Vec<String>>>,
    refusals: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            match tokio::time::timeout(REFUSAL_BOUND, create_key(&admin, None)).await {
                Ok(Ok(id)) => acked.lock().unwrap().push(id),
                Ok(Err(s)) => {
                    assert_eq!(s.code(), Code::Unavailable, "unexpected refusal: {s:?}");
                    refusals.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => panic!("a call hung for {REFUSAL_BOUND:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Every creation a node acknowledged is there, read back through `admin` (any node).
async fn assert_none_lost(admin: &Clients, acked: &[String]) {
    for id in acked {
        assert_eq!(
            describe(admin, id).await.key_id,
            *id,
            "acknowledged key lost"
        );
    }
}

async fn health(node: &pg::Node) -> bool {
    let kms = Arc::clone(&node.kms);
    tokio::task::spawn_blocking(move || kms.store_health().is_ok())
        .await
        .unwrap()
}

/// What the node's gRPC health service says of the whole server ("" service), as the node's
/// admin sees it over mutual TLS; polled until it is `want` or 5 s have passed.
async fn grpc_health_becomes(c: &Cluster, node: &pg::Node, want: ServingStatus) -> bool {
    let config = kms_tests::net::client_config(
        c.pki.ca.cert_pem(),
        Some(&c.pki.admin),
        kms_tests::net::MODERN,
    );
    let channel = kms_tests::net::channel(node.server.addr, config)
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status);
        if matches!(got, Ok(s) if s == want as i32) {
            return true;
        }
        if Instant::now() > deadline {
            println!("health of {}: {got:?}, wanted {want:?}", node.app_name);
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Encrypts on `app` until it is refused with UNAVAILABLE; checks no call hangs.
async fn until_refused(app: &Clients, key: &str) -> Duration {
    let started = Instant::now();
    loop {
        let r = tokio::time::timeout(REFUSAL_BOUND, encrypt(app, key))
            .await
            .expect("a call on a node without its database hung");
        if refused(r, Code::Unavailable).is_some() {
            return started.elapsed();
        }
        assert!(started.elapsed() < 2 * REFUSAL_BOUND, "never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_served(app: &Clients, key: &str) -> Duration {
    until(Duration::from_secs(20), || async {
        tokio::time::timeout(REFUSAL_BOUND, encrypt(app, key))
            .await
            .expect("a call hung")
            .ok()
    })
    .await
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_the_database_refuses_then_recovers_by_itself() {
    let proxy = Proxy::start(pg::upstream());
    let c = Cluster::start_with(
        &[
            NodeSpec {
                via: Some(proxy.addr),
            },
            NodeSpec::default(),
        ],
        Settings {
            health_interval: Duration::from_millis(100),
            ..Settings::default()
        },
        Arc::new(SystemClock),
    )
    .await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let key = create_key(&b.admin, None).await.unwrap();
    encrypt(&a.app, &key).await.unwrap();

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (refused_a, refused_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let writers = [
        writer(
            a.admin.clone(),
            Arc::clone(&acked),
            Arc::clone(&refused_a),
            Arc::clone(&stop),
        ),
        writer(
            b.admin.clone(),
            Arc::clone(&acked),
            Arc::clone(&refused_b),
            Arc::clone(&stop),
        ),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;

    for mode in [ProxyMode::Refuse, ProxyMode::BlackHole] {
        proxy.set(mode);
        let took = until_refused(&a.app, &key).await;
        println!("{mode:?}: node A refused with UNAVAILABLE after {took:?}");
        assert!(!health(a).await, "{mode:?}: A's health probe still passes");
        assert!(
            grpc_health_becomes(&c, a, ServingStatus::NotServing).await,
            "{mode:?}: A's gRPC health service does not say NOT_SERVING"
        );
        assert!(grpc_health_becomes(&c, b, ServingStatus::Serving).await);
        // The other node serves on, reads and writes.
        assert!(health(b).await);
        encrypt(&b.app, &key)
            .await
            .expect("B serves while A is cut off");
        create_key(&b.admin, None)
            .await
            .expect("B writes while A is cut off");

        proxy.set(ProxyMode::Open);
        let took = until_served(&a.app, &key).await;
        println!("{mode:?}: node A served again {took:?} after the database came back");
        assert!(health(a).await);
        assert!(
            grpc_health_becomes(&c, a, ServingStatus::Serving).await,
            "{mode:?}: A's gRPC health service does not come back to SERVING"
        );
    }

    // Its connections terminated under it, a node does not even fail a call: a broken
    // connection is dropped and the call retried on a fresh one.
    for round in 0..3 {
        let killed = pg::terminate_backends(&a.app_name);
        assert!(
            killed > 0,
            "round {round}: node A had no connection to terminate"
        );
        encrypt(&a.app, &key)
            .await
            .unwrap_or_else(|e| panic!("round {round}: first call after terminate: {e}"));
    }

    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    println!(
        "acknowledged creations: {}; UNAVAILABLE on A: {}, on B: {}",
        acked.len(),
        refused_a.load(Ordering::SeqCst),
        refused_b.load(Ordering::SeqCst)
    );
    assert_eq!(
        refused_b.load(Ordering::SeqCst),
        0,
        "B refused while A was cut off"
    );
    assert!(
        refused_a.load(Ordering::SeqCst) > 0,
        "A never noticed the outage"
    );
    assert_none_lost(&a.admin, &acked).await;
    c.stop().await;
}

/// The database server itself restarts under load (not a proxy): both nodes refuse with
/// UNAVAILABLE while it is down, serve again by themselves when it is back, and every creation
/// acknowledged before, during or after is there. The server is this test's own throwaway one,
/// so the tests beside it never notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarts_under_load() {
    let database = Arc::new(
        tokio::task::spawn_blocking(Server::start)
            .await
            .unwrap()
            .unwrap(),
    );
    let c = Cluster::start_on(
        Schema::on(database.url()),
        &[NodeSpec::default(), NodeSpec::default()],
        Settings {
            health_interval: Duration::from_millis(100),
            ..Settings::default()
        },
        Arc::new(SystemClock),
    )
    .await;
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let key = create_key(&a.admin, None).await.unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = [a, b]
        .iter()
        .map(|n| {
            writer(
                n.admin.clone(),
                Arc::clone(&acked),
                Arc::clone(&refused),
                Arc::clone(&stop),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let db = Arc::clone(&database);
    tokio::task::spawn_blocking(move || db.stop())
        .await
        .unwrap()
        .expect("could not stop PostgreSQL");
    let took = until_refused(&a.app, &key).await;
    println!("database stopped: node A refused with UNAVAILABLE after {took:?}");
    assert!(grpc_health_becomes(&c, b, ServingStatus::NotServing).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let db = Arc::clone(&database);
    tokio::task::spawn_blocking(move || db.start_again())
        .await
        .unwrap()
        .expect("could not start PostgreSQL again");
    for node in [a, b] {
        let took = until_served(&node.app, &key).await;
        println!(
            "database back: {} served again after {took:?}",
            node.app_name
        );
        assert!(grpc_health_becomes(&c, node, ServingStatus::Serving).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    println!(
        "acknowledged creations: {}; refused with UNAVAILABLE: {}",
        acked.len(),
        refused.load(Ordering::SeqCst)
    );
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "no node noticed the restart"
    );
    assert_none_lost(&b.admin, &acked).await;
    c.stop().await;
}

/// A connection lost while COMMIT is under way leaves the store not knowing whether its batch
/// committed. It reads the rows on a fresh connection and decides: every write there, done (the
/// proxy passed the COMMIT on and cut the answer); the guarded key unchanged, not committed,
/// so it runs the batch again (the proxy cut before passing it on). Either way the caller gets
/// success, and the batch is in the store once. Before, both were UNAVAILABLE, and an audit
/// append cut so stopped the node's calls until the next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_commit_answer_is_lost_is_judged_from_the_rows() {
    use kms_core::store::{Batch, Store, Tree};
    let schema = Schema::new();
    let proxy = Proxy::start(pg::upstream());
    let store = schema
        .open(schema.options("commit-cut", Some(proxy.addr)))
        .await;
    for (round, mode) in [ProxyMode::CutAfterCommit, ProxyMode::CutBeforeCommit]
        .into_iter()
        .enumerate()
    {
        let store = Arc::clone(&store);
        let cuts = proxy.commit_cuts();
        proxy.set(mode);
        let seq = format!("{round}");
        let (result, tail, record) = tokio::task::spawn_blocking(move || {
            let old = store.get(Tree::Meta, b"cut-tail").unwrap();
            let mut batch = Batch::new();
            batch.require(Tree::Meta, b"cut-tail".to_vec(), old);
            batch.put(Tree::Meta, b"cut-tail".to_vec(), seq.clone().into_bytes());
            batch.put(
                Tree::Meta,
                format!("cut-rec-{seq}").into_bytes(),
                b"x".to_vec(),
            );
            let result = store.apply(&batch);
            let tail = store.get(Tree::Meta, b"cut-tail").unwrap();
            let record = store
                .get(Tree::Meta, format!("cut-rec-{seq}").as_bytes())
                .unwrap();
            (result, tail, record)
        })
        .await
        .unwrap();
        assert_eq!(proxy.commit_cuts(), cuts + 1, "{mode:?}: no COMMIT was cut");
        assert!(result.is_ok(), "{mode:?}: {result:?}");
        assert_eq!(
            tail.as_deref(),
            Some(format!("{round}").as_bytes()),
            "{mode:?}"
        );
        assert_eq!(record.as_deref(), Some(&b"x"[..]), "{mode:?}");
    }
}
