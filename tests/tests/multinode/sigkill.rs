//! A node killed with SIGKILL during a stream of writes. The victim is a real `kms-server serve`
//! process (this test binary re-executed as `sigkill::child_node`, which calls the same
//! `kms_server::run_cli` as the shipped binary's `main`) reading a TOML configuration with
//! `storage = "postgres"`, unsealed through its API like any node. While both nodes create keys
//! and encrypt, the child is killed; the in-process node must not fail a single call, every key
//! either node acknowledged must exist, and the audit trail both wrote must still verify.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms_server::Settings;
use kms_tests::net;
use kms_tests::pg::{self, Cluster};
use kms_tests::world::Clients;

use crate::common::{audit_public_key, create_key, describe, encrypt, export_audit};

/// Names the child's configuration file; unset, `child_node` returns at once.
const CHILD_ENV: &str = "KMS_MULTINODE_CHILD_CONFIG";
/// A child left behind (parent gone) exits by itself after this long.
const CHILD_MAX_RUN: Duration = Duration::from_secs(180);
/// How many keys the child must have acknowledged before it is killed.
const ACKED_BEFORE_KILL: usize = 15;

/// The child: `kms-server serve --config $KMS_MULTINODE_CHILD_CONFIG`.
#[test]
#[ignore = "a child process of a_node_killed_mid_stream_loses_no_acknowledged_write"]
fn child_node() {
    let Ok(config) = std::env::var(CHILD_ENV) else {
        return;
    };
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_MAX_RUN);
        std::process::exit(3);
    });
    let code = kms_server::run_cli(
        ["kms-server", "serve", "--config", config.as_str()],
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    std::process::exit(i32::from(code));
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_no_acknowledged_write() {
    let c = Cluster::start(1, Settings::default()).await;
    let a = &c.nodes[0];

    // The child's configuration: the cluster's PKI and schema, its own connections' name.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    file("server.pem", &c.pki.server.cert_pem);
    file("server.key", &c.pki.server.key_pem);
    file("ca.pem", c.pki.ca.cert_pem());
    let port = free_port();
    let sep = if pg::url().contains('?') { '&' } else { '?' };
    let config = file(
        "kms.toml",
        &format!(
            "listen = \"127.0.0.1:{port}\"\n\
             data_dir = \"data\"\n\
             storage = \"postgres\"\n\
             postgres_url = \"{}{sep}application_name={}_child\"\n\
             postgres_schema = \"{}\"\n\
             postgres_timeout_seconds = 2\n\
             [tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n",
            pg::url(),
            c.schema.name,
            c.schema.name
        ),
    );
    let stderr = std::fs::File::create(dir.path().join("child.stderr")).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sigkill::child_node", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &config)
        .env("KMS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let child_log = || std::fs::read_to_string(dir.path().join("child.stderr")).unwrap_or_default();

    // Wait for it to listen (self-tests run first), then unseal it as an operator would.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the child node exited:\n{}",
            child_log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the child node did not listen:\n{}",
            child_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect = |identity| {
        let config = net::client_config(c.pki.ca.cert_pem(), Some(identity), net::MODERN);
        async move { Clients::new(net::channel(addr, config).await.unwrap()) }
    };
    let k_admin = connect(&c.pki.admin).await;
    let k_app = connect(&c.pki.app).await;
    let k_custodian = connect(&c.pki.custodian).await;
    kms_tests::world::unseal_by_holders(&c.shares, &k_admin, &k_custodian).await;
    let shared = create_key(&k_admin, None).await.unwrap();
    encrypt(&a.app, &shared)
        .await
        .expect("made on the child, used on A");

    let acked_a = Arc::new(Mutex::new(Vec::new()));
    let acked_k = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // A must not fail one call, before, during or after the kill.
    let on_a = {
        let (admin, app, acked, stop, shared) = (
            a.admin.clone(),
            a.app.clone(),
            Arc::clone(&acked_a),
            Arc::clone(&stop),
            shared.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let id = create_key(&admin, None).await.expect("A failed a write");
                acked.lock().unwrap().push(id);
                encrypt(&app, &shared)
                    .await
                    .expect("A failed an encryption");
            }
        })
    };
    // The child writes until it dies; only acknowledged keys count.
    let on_k = {
        let (admin, app, acked, shared) = (
            k_admin.clone(),
            k_app.clone(),
            Arc::clone(&acked_k),
            shared.clone(),
        );
        tokio::spawn(async move {
            loop {
                match create_key(&admin, None).await {
                    Ok(id) => acked.lock().unwrap().push(id),
                    Err(_) => return,
                }
                if encrypt(&app, &shared).await.is_err() {
                    return;
                }
            }
        })
    };
    let started = Instant::now();
    while acked_k.lock().unwrap().len() < ACKED_BEFORE_KILL {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child acknowledged too little:\n{}",
            child_log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.0.kill().unwrap(); // SIGKILL
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    on_k.await.unwrap();
    let a_before = acked_a.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    on_a.await.expect("node A failed a call around the kill");
    let (acked_a, acked_k) = (
        acked_a.lock().unwrap().clone(),
        acked_k.lock().unwrap().clone(),
    );
    println!(
        "acknowledged: {} by the killed node, {} by A ({} after the kill)",
        acked_k.len(),
        acked_a.len(),
        acked_a.len() - a_before
    );
    assert!(
        acked_a.len() > a_before,
        "A made no progress after the kill"
    );
    for id in acked_k.iter().chain(&acked_a) {
        assert_eq!(
            describe(&a.admin, id).await.key_id,
            *id,
            "acknowledged key lost"
        );
    }

    // Both nodes' records are in one chain that still verifies.
    let text = export_audit(&a.auditor).await;
    let public = audit_public_key(&a.auditor).await;
    let verified = kms_core::audit::verify(&text, &public).unwrap();
    assert_eq!(
        verified.records_by_node.len(),
        2,
        "{:?}",
        verified.records_by_node
    );
    drop(child);
    c.stop().await;
}
