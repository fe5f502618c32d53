//! Several KMS nodes on one PostgreSQL database (issue 9), for the multi-node tests.
//!
//! - [`Schema`]: a freshly named schema per test on the test process's throwaway PostgreSQL
//!   (`kms-test-postgres`; `KMS_TEST_POSTGRES_URL` names an existing server instead), dropped
//!   when the value goes, also when the test panics, so tests in parallel never share state.
//! - [`Cluster`]: N in-process nodes, each the real server (`kms_server::run` over mutual TLS)
//!   over a KMS with its *own* [`PostgresStore`] (own pool, own runtime) on that one schema —
//!   what N processes would have. Node 0 initialises; every node is unsealed on its own with the
//!   shares, as operators would.
//! - [`Proxy`]: a TCP proxy between one node and PostgreSQL that a test can cut (refusing, or
//!   silently swallowing connections) and restore, to take the database away from one node
//!   without touching the server the other tests share. (A test that restarts the server itself
//!   takes a `kms_test_postgres::Server` of its own and [`Cluster::start_on`] a schema there.)
//! - [`terminate_backends`]: `pg_terminate_backend` of one node's connections only (matched by
//!   their `application_name`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kms_core::clock::{Clock, SystemClock};
use kms_core::store::Store;
use kms_core::{KmsConfig, System};
use kms_proto::v1;
use kms_server::Settings;
use kms_store_postgres::{PostgresOptions, PostgresStore};
use kms_test_postgres::TempSchema;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::pki::{Pki, subjects};
use crate::server::TestServer;
use crate::world::{Clients, SHARES, THRESHOLD, unseal_by_holders};

/// The test database's URL: the throwaway server of this test process, or the one
/// `KMS_TEST_POSTGRES_URL` names.
#[must_use]
pub fn url() -> String {
    kms_test_postgres::url()
}

/// The test database's address, for a proxy in front of it.
#[must_use]
pub fn upstream() -> SocketAddr {
    let config: tokio_postgres::Config = url().parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}").parse().unwrap()
}

/// Runs `sql` on the test database over a connection of its own and returns every row's columns
/// as text; callable from sync code, async code and `Drop` alike.
pub fn admin_sql(sql: &str) -> Vec<Vec<Option<String>>> {
    kms_test_postgres::admin_sql(&url(), sql).unwrap()
}

/// Terminates every server connection whose `application_name` is `app` (one node's pool);
/// returns how many.
#[must_use]
pub fn terminate_backends(app: &str) -> usize {
    admin_sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
    ))
    .len()
}

/// A schema of its own, dropped (with everything in it) when this value is dropped.
pub struct Schema {
    pub name: String,
    temp: TempSchema,
}

impl Schema {
    /// A fresh schema on the test database.
    #[must_use]
    pub fn new() -> Self {
        Self::on(url())
    }

    /// A fresh schema on the server at `url` (e.g. a test's own [`kms_test_postgres::Server`]).
    #[must_use]
    pub fn on(url: String) -> Self {
        let temp = TempSchema::on(url, "kms_mn");
        Self {
            name: temp.name().to_owned(),
            temp,
        }
    }

    /// The server it lives on.
    #[must_use]
    pub fn url(&self) -> &str {
        self.temp.url()
    }

    /// Store options for this schema, through `via` (a proxy) when given; the connections carry
    /// `application_name` = `app` so that a test can find them.
    #[must_use]
    pub fn options(&self, app: &str, via: Option<SocketAddr>) -> PostgresOptions {
        let base = match via {
            Some(addr) => {
                let config: tokio_postgres::Config = self.url().parse().unwrap();
                format!(
                    "postgres://{}@{addr}/{}",
                    config.get_user().unwrap_or("postgres"),
                    config.get_dbname().unwrap_or("postgres")
                )
            }
            None => self.url().to_owned(),
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        PostgresOptions {
            schema: self.name.clone(),
            pool_size: 8,
            timeout: Duration::from_secs(2),
            ..PostgresOptions::new(format!("{base}{sep}application_name={app}"))
        }
    }

    /// Opens a store on this schema (off the async executor: opening blocks).
    pub async fn open(&self, options: PostgresOptions) -> Arc<PostgresStore> {
        Arc::new(
            tokio::task::spawn_blocking(move || PostgresStore::open(options))
                .await
                .unwrap()
                .unwrap(),
        )
    }
}

impl Default for Schema {
    fn default() -> Self {
        Self::new()
    }
}

/// What a [`Proxy`] does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ProxyMode {
    /// Forward to PostgreSQL.
    Open = 0,
    /// Close every connection at once (the database is down: connection refused / reset).
    Refuse = 1,
    /// Accept and never answer (a network black hole: only timeouts end a call).
    BlackHole = 2,
    /// Forward, but at the next COMMIT pass it on and cut that connection before the answer
    /// comes back (the transaction committed; the client cannot know), then forward again.
    CutAfterCommit = 3,
    /// Forward, but cut the connection at the next COMMIT without passing it on (the server
    /// rolls the transaction back; the client cannot know either), then forward again.
    CutBeforeCommit = 4,
}

/// A simple-query message `COMMIT` as tokio-postgres sends it: type `Q`, length 11, the text
/// and its NUL.
const COMMIT_MESSAGE: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

/// Forwards one connection, cutting it at a COMMIT when the proxy is armed to (one shot).
async fn forward(mut client: TcpStream, upstream: SocketAddr, state: Arc<ProxyState>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut server_read, mut server_write) = server.into_split();
    let (mut client_read, mut client_write) = client.split();
    // Set before a COMMIT is passed on to be cut after: its answer must not get through.
    let muted = std::sync::atomic::AtomicBool::new(false);
    let back = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if muted.load(Ordering::SeqCst) || client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let on = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            let commit = chunk
                .windows(COMMIT_MESSAGE.len())
                .any(|w| w == COMMIT_MESSAGE);
            let armed = state.mode.load(Ordering::SeqCst);
            let cut = commit
                && (armed == ProxyMode::CutAfterCommit as u8
                    || armed == ProxyMode::CutBeforeCommit as u8)
                && state
                    .mode
                    .compare_exchange(
                        armed,
                        ProxyMode::Open as u8,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .is_ok();
            if cut {
                state.cuts.fetch_add(1, Ordering::SeqCst);
                if armed == ProxyMode::CutAfterCommit as u8 {
                    muted.store(true, Ordering::SeqCst);
                    let _ = server_write.write_all(chunk).await;
                    let _ = server_write.flush().await;
                    // The answer (read and dropped by the other direction, which then ends
                    // the connection) shows the server has committed; this bounds the wait.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                return;
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    // Whichever direction ends first ends the connection (both sockets close on return).
    tokio::select! {
        () = back => {}
        () = on => {}
    }
}

struct ProxyState {
    mode: AtomicU8,
    live: Mutex<Vec<AbortHandle>>,
    /// Connections cut at a COMMIT so far.
    cuts: std::sync::atomic::AtomicUsize,
}

/// A TCP proxy to PostgreSQL on its own thread and runtime, stopped when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    #[must_use]
    pub fn start(upstream: SocketAddr) -> Self {
        let state = Arc::new(ProxyState {
            mode: AtomicU8::new(ProxyMode::Open as u8),
            live: Mutex::new(Vec::new()),
            cuts: std::sync::atomic::AtomicUsize::new(0),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let mut held = Vec::new();
                loop {
                    let (client, _) = tokio::select! {
                        r = listener.accept() => r.unwrap(),
                        _ = &mut stopped => return,
                    };
                    match shared.mode.load(Ordering::SeqCst) {
                        0 | 3 | 4 => {
                            let task = tokio::spawn(forward(client, upstream, Arc::clone(&shared)));
                            shared.live.lock().unwrap().push(task.abort_handle());
                        }
                        1 => drop(client),
                        _ => held.push(client),
                    }
                }
            });
        });
        Self {
            addr: addr_rx.recv().unwrap(),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Connections cut at a COMMIT so far ([`ProxyMode::CutAfterCommit`],
    /// [`ProxyMode::CutBeforeCommit`]).
    #[must_use]
    pub fn commit_cuts(&self) -> usize {
        self.state.cuts.load(Ordering::SeqCst)
    }

    /// Switches mode; [`ProxyMode::Refuse`] and [`ProxyMode::BlackHole`] also cut every live
    /// connection (the COMMIT-cutting modes wait for a COMMIT).
    pub fn set(&self, mode: ProxyMode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
        if matches!(mode, ProxyMode::Refuse | ProxyMode::BlackHole) {
            for task in self.state.live.lock().unwrap().drain(..) {
                task.abort();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(ProxyMode::Refuse);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One node: a KMS over its own store, served over mutual TLS, with clients per role.
pub struct Node {
    /// The `application_name` of its database connections.
    pub app_name: String,
    pub kms: Arc<System>,
    pub store: Arc<PostgresStore>,
    pub server: TestServer,
    pub admin: Clients,
    pub app: Clients,
    pub auditor: Clients,
    /// The second share holder.
    pub custodian: Clients,
}

/// How to build one node.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeSpec {
    /// Reach PostgreSQL through this proxy instead of directly.
    pub via: Option<SocketAddr>,
}

/// N nodes on one schema. Nodes are stopped before the schema is dropped (field order).
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub pki: Arc<Pki>,
    pub shares: Vec<String>,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub schema: Schema,
}

impl Cluster {
    /// `n` nodes reaching the database directly, on the system clock.
    pub async fn start(n: usize, settings: Settings) -> Self {
        Self::start_with(
            &vec![NodeSpec::default(); n],
            settings,
            Arc::new(SystemClock),
        )
        .await
    }

    /// One node per spec on a fresh schema of the test database: node 0 initialises the KMS;
    /// every node is unsealed through its own API; the app, other app and auditor are registered
    /// through node 0.
    pub async fn start_with(specs: &[NodeSpec], settings: Settings, clock: Arc<dyn Clock>) -> Self {
        Self::start_on(Schema::new(), specs, settings, clock).await
    }

    /// As [`Cluster::start_with`], on `schema` (which may live on a server of the test's own).
    pub async fn start_on(
        schema: Schema,
        specs: &[NodeSpec],
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let pki = Arc::new(Pki::new());
        let mut cluster = Self {
            nodes: Vec::new(),
            pki,
            shares: Vec::new(),
            settings,
            clock,
            schema,
        };
        for (i, spec) in specs.iter().enumerate() {
            let node = cluster.add_node(i, *spec).await;
            if i == 0 {
                let init = node
                    .admin
                    .system
                    .clone()
                    .init(v1::InitRequest {
                        shares: SHARES,
                        threshold: THRESHOLD,
                        holders: crate::world::holders(),
                        ..v1::InitRequest::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                cluster.shares = crate::world::plain_shares(&init);
            }
            cluster.unseal(&node).await;
            if i == 0 {
                for (subject, role, ns) in [
                    (subjects::APP, "app", subjects::APP_NS),
                    (subjects::OTHER_APP, "app", subjects::OTHER_APP_NS),
                    (subjects::AUDITOR, "auditor", ""),
                ] {
                    node.admin
                        .keys
                        .clone()
                        .add_principal(v1::AddPrincipalRequest {
                            subject: subject.to_owned(),
                            role: role.to_owned(),
                            namespace: ns.to_owned(),
                        })
                        .await
                        .unwrap();
                }
            }
            cluster.nodes.push(node);
        }
        cluster
    }

    /// `n` nodes on a schema that already holds an initialised KMS (e.g. one `kms-server
    /// migrate` filled), each unsealed with `shares`; nothing is registered.
    pub async fn adopt(
        schema: Schema,
        pki: Arc<Pki>,
        shares: Vec<String>,
        n: usize,
        settings: Settings,
    ) -> Self {
        let mut cluster = Self {
            nodes: Vec::new(),
            pki,
            shares,
            settings,
            clock: Arc::new(SystemClock),
            schema,
        };
        for i in 0..n {
            let node = cluster.add_node(i, NodeSpec::default()).await;
            cluster.unseal(&node).await;
            cluster.nodes.push(node);
        }
        cluster
    }

    /// A node (sealed) on this cluster's schema.
    pub async fn add_node(&self, index: usize, spec: NodeSpec) -> Node {
        let app_name = format!("{}_n{index}", self.schema.name);
        let store = self
            .schema
            .open(self.schema.options(&app_name, spec.via))
            .await;
        let dyn_store: Arc<dyn Store> = Arc::clone(&store) as Arc<dyn Store>;
        let kms = Arc::new(System::with_clock(
            dyn_store,
            KmsConfig::default(),
            Arc::clone(&self.clock),
        ));
        let server =
            TestServer::start_with_kms(&self.pki, Arc::clone(&kms), self.settings.clone()).await;
        Node {
            admin: Clients::connect(&server, &self.pki, &self.pki.admin).await,
            app: Clients::connect(&server, &self.pki, &self.pki.app).await,
            auditor: Clients::connect(&server, &self.pki, &self.pki.auditor).await,
            custodian: Clients::connect(&server, &self.pki, &self.pki.custodian).await,
            app_name,
            kms,
            store,
            server,
        }
    }

    /// Gives `node` threshold shares, one per call, each by its holder (the admin, then the
    /// custodian).
    pub async fn unseal(&self, node: &Node) {
        unseal_by_holders(&self.shares, &node.admin, &node.custodian).await;
        assert!(!node.kms.is_sealed(), "node did not unseal");
    }

    /// Stops every node, then drops the schema.
    pub async fn stop(mut self) {
        for node in self.nodes.drain(..) {
            let Node {
                server,
                admin,
                app,
                auditor,
                custodian,
                ..
            } = node;
            drop((admin, app, auditor, custodian));
            server.stop().await.unwrap();
        }
    }
}
