//! PostgreSQL backend of `kms-core`'s [`Store`]: several KMS nodes share one database (issue 9).
//!
//! A crate of its own (issue 17) so that `kms-core` builds with no runtime and no networking: the
//! server enables it for `storage = "postgres"` and `kms-server migrate`.
//!
//! # Layout
//!
//! One table per store, `SCHEMA.kv (tree text, key bytea, value bytea, primary key (tree, key))`,
//! in a schema of its own (`kms` by default), plus `SCHEMA.schema_version`, which records each
//! applied entry of `MIGRATIONS`. `bytea` compares like `memcmp` (shorter first on a common
//! prefix), which is exactly the byte order [`Store::scan_prefix`] promises, so scans are one
//! index range walk.
//!
//! # Atomic, conditional batches across processes
//!
//! [`Store::apply`] is one transaction at READ COMMITTED. Before reading or writing anything it
//! takes a transaction-scoped advisory lock (`pg_advisory_xact_lock`) for *every* key the batch
//! checks or writes, in ascending lock-id order. Any two batches that touch a common key are
//! therefore serialised by the database until the first one commits (two-phase locking), whichever
//! node or process they come from; acquiring the locks in one global order rules out deadlocks.
//! Advisory locks, unlike `SELECT … FOR UPDATE`, also lock keys that do not exist yet, which is
//! what a `require(…, None)` (create-if-absent) needs. Preconditions are then read — each
//! statement at READ COMMITTED sees everything committed before it started, so after the locks
//! the reads are current — and compared; a failed one rolls back and reports
//! [`StoreError::Conflict`]. `Ok` is returned only once `COMMIT` has returned, so with the
//! server's `synchronous_commit` (checked at open; `off` is refused) nothing is acknowledged
//! before it is durable.
//!
//! # Replay nonces
//!
//! [`Store::record_nonce`] keeps its entries in `SCHEMA.replay_nonces (scope bytea primary key,
//! expires_at bigint)`, apart from `kv`: one statement, `INSERT … ON CONFLICT (scope) DO UPDATE
//! … WHERE expires_at <= now`, both records a new nonce and reuses the row of an expired one; the
//! primary key makes two nodes that insert one scope at once wait on each other, and the second
//! sees the first's row and is told `Seen`. Expired rows are deleted by a sweep each node runs
//! every [`NONCE_SWEEP_EVERY`] seconds, which also counts the live rows; a node adds its own
//! inserts to that count between sweeps and, when the count reaches the bound, sweeps and counts
//! again (at most once a second) before refusing. The bound is therefore held per node
//! exactly and across nodes to within what the others inserted since this node's last count.
//!
//! # Sync face, async driver
//!
//! The trait is synchronous and is called from blocking-pool threads, plain threads (the audit
//! writer) and sometimes from inside a caller's async runtime, where `block_on` would panic. So
//! the store owns a small runtime: each call is spawned on it and the caller waits on a channel.
//!
//! # Failures
//!
//! Every call is bounded by [`PostgresOptions::timeout`] (pool wait, connect, statements, lock
//! waits) and fails with [`StoreError::Unavailable`] rather than hanging. A connection that broke
//! (database restart, `pg_terminate_backend`, network cut) is dropped from the pool rather than
//! reused, and a call that failed on such a connection before anything could have committed is
//! retried on a fresh one, so a node recovers by itself when the database returns. A batch whose
//! connection broke during COMMIT (outcome unknown) is judged from what the database holds once
//! reconnected ([`landed`]): every write there means it committed; a precondition on a key it
//! writes that still holds means it did not, and it is retried; anything else is the error.
//! Messages carry
//! SQLSTATE codes and OS reasons only: PostgreSQL's own error texts may quote stored keys (a
//! constraint violation's DETAIL does), and the password never appears anywhere.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use sha2::{Digest, Sha256};
use tokio::time::{Instant, timeout_at};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

use kms_core::SecretBytes;
use kms_core::store::{
    Batch, BatchOp, Entry, MAX_NONCE_SCOPE, NonceOutcome, Store, StoreError, Tree,
};

/// Schema migrations, in order. Entry `i` brings the schema to version `i + 1`; `{schema}` stands
/// for the quoted schema name. Append only: an applied entry must never change.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "key-value table",
        "CREATE TABLE {schema}.kv (\
             tree text COLLATE \"C\" NOT NULL, \
             key bytea NOT NULL, \
             value bytea NOT NULL, \
             PRIMARY KEY (tree, key))",
    ),
    (
        "replay nonces",
        "CREATE TABLE {schema}.replay_nonces (\
             scope bytea PRIMARY KEY, \
             expires_at bigint NOT NULL); \
         CREATE INDEX replay_nonces_expiry ON {schema}.replay_nonces (expires_at)",
    ),
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// First half of the two-part advisory lock that serialises migrations; the two-part lock space
/// never overlaps the one-part space that batches lock keys in.
const MIGRATION_LOCK: i32 = 0x4b4d_5331; // "KMS1"

/// Seconds between a node's sweeps of expired replay nonces (each also counts the live rows).
pub const NONCE_SWEEP_EVERY: u64 = 10;

/// How many times a call is tried when its connection turns out to be broken before anything
/// could have committed (stale pooled connections after a database restart).
const ATTEMPTS: usize = 3;

/// How to reach the database.
pub struct PostgresOptions {
    /// A `postgres://` URL or a `key=value` connection string, without a password.
    pub url: String,
    /// The password, if the server asks for one; it comes from a file or the environment, never
    /// from the URL (OPS-4).
    pub password: Option<SecretBytes>,
    /// The schema holding this store's tables; created at open if missing.
    pub schema: String,
    /// Most connections this store opens.
    pub pool_size: usize,
    /// Bound on every call: pool wait, connect, each statement and lock wait.
    pub timeout: Duration,
}

impl PostgresOptions {
    pub const DEFAULT_SCHEMA: &'static str = "kms";
    pub const DEFAULT_POOL_SIZE: usize = 16;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Defaults for everything but the URL.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            schema: Self::DEFAULT_SCHEMA.to_owned(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// The password shows as presence only.
impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a connection URL is refused before anything connects.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// The text does not parse; the parser's message is withheld because it may echo parts of
    /// the URL.
    #[error("not a valid PostgreSQL connection URL or key=value string")]
    Malformed,
    #[error(
        "the PostgreSQL URL contains a password; secrets are never inline (OPS-4): put it in \
         postgres_password_file or the KMS_POSTGRES_PASSWORD environment variable"
    )]
    InlinePassword,
    #[error(
        "sslmode=require is not supported by this build (no TLS to PostgreSQL): use a Unix socket \
         or loopback, or a TLS-terminating proxy next to each node"
    )]
    TlsRequired,
}

/// Parses a connection URL and checks it carries no password.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, UrlError> {
    let config = tokio_postgres::Config::from_str(url).map_err(|_| UrlError::Malformed)?;
    if config.get_password().is_some() {
        return Err(UrlError::InlinePassword);
    }
    match config.get_ssl_mode() {
        SslMode::Require => Err(UrlError::TlsRequired),
        SslMode::Disable | SslMode::Prefer => Ok(config),
        // `SslMode` is non-exhaustive; a future mode may demand TLS too, which NoTls cannot give.
        _ => Err(UrlError::TlsRequired),
    }
}

/// Schema names are spliced into SQL (identifiers cannot be bound), so only plain lower-case
/// identifiers are accepted, and they are quoted as well.
pub fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let mut bytes = schema.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if first_ok && rest_ok && schema.len() <= 63 && !schema.starts_with("pg_") {
        Ok(())
    } else {
        Err(StoreError::Unavailable(
            "postgres_schema must be 1 to 63 characters of a-z, 0-9 and _, starting with a letter \
             or _, and not pg_"
                .into(),
        ))
    }
}

/// Statements, with the schema spliced in once at open.
struct Sql {
    get: String,
    scan_from: String,
    scan_range: String,
    scan_bounded: String,
    lock: String,
    read_many: String,
    upsert: String,
    delete: String,
    nonce_insert: String,
    nonce_held: String,
    nonce_sweep: String,
    nonce_count: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let kv = format!("\"{schema}\".kv");
        let nonces = format!("\"{schema}\".replay_nonces");
        Self {
            get: format!("SELECT value FROM {kv} WHERE tree = $1 AND key = $2"),
            scan_from: format!(
                "SELECT key, value FROM {kv} WHERE tree = $1 AND key >= $2 ORDER BY key"
            ),
            scan_range: format!(
                "SELECT key, value FROM {kv} WHERE tree = $1 AND key >= $2 AND key < $3 \
                 ORDER BY key"
            ),
            scan_bounded: format!(
                "SELECT key, value FROM {kv} WHERE tree = $1 AND key >= $2 AND key < $3 \
                 ORDER BY key LIMIT $4"
            ),
            // A function scan yields the array's elements in order, so the locks are taken in
            // the (ascending) order the caller sorted them in.
            lock: "SELECT count(pg_advisory_xact_lock(l)) FROM unnest($1::int8[]) AS l".into(),
            read_many: format!(
                "SELECT kv.tree, kv.key, kv.value FROM {kv} AS kv \
                 JOIN unnest($1::text[], $2::bytea[]) AS p(tree, key) \
                 ON kv.tree = p.tree AND kv.key = p.key"
            ),
            upsert: format!(
                "INSERT INTO {kv} (tree, key, value) \
                 SELECT tree, key, value FROM unnest($1::text[], $2::bytea[], $3::bytea[]) \
                 AS w(tree, key, value) \
                 ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value"
            ),
            delete: format!(
                "DELETE FROM {kv} AS kv USING unnest($1::text[], $2::bytea[]) AS d(tree, key) \
                 WHERE kv.tree = d.tree AND kv.key = d.key"
            ),
            nonce_insert: format!(
                "INSERT INTO {nonces} AS n (scope, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (scope) DO UPDATE SET expires_at = EXCLUDED.expires_at \
                 WHERE n.expires_at <= $3"
            ),
            nonce_held: format!("SELECT 1 FROM {nonces} WHERE scope = $1 AND expires_at > $2"),
            nonce_sweep: format!("DELETE FROM {nonces} WHERE expires_at <= $1"),
            nonce_count: format!("SELECT count(*) FROM {nonces}"),
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` when
/// there is none (empty or all-0xFF prefix: the scan has no upper bound).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut upper = prefix[..=last].to_vec();
    upper[last] += 1;
    Some(upper)
}

/// One call, owned so that it can move to the store's runtime.
enum Call {
    Get(Tree, Vec<u8>),
    Scan(Tree, Vec<u8>),
    /// `from`, `to` (exclusive), at most this many rows.
    Range(Tree, Vec<u8>, Vec<u8>, i64),
    Apply(Batch),
    Health,
    /// Record `scope` until `expires_at` unless held past `now`.
    NonceInsert {
        scope: Vec<u8>,
        expires_at: i64,
        now: i64,
    },
    /// Whether `scope` is held past `now`.
    NonceHeld {
        scope: Vec<u8>,
        now: i64,
    },
    /// Delete the rows expired at `now`, then count the rest.
    NonceSweep {
        now: i64,
    },
}

enum Reply {
    Value(Option<Vec<u8>>),
    Entries(Vec<Entry>),
    Done,
    Flag(bool),
    Count(u64),
}

/// A failed attempt and whether the connection it ran on is still fit for use.
struct Failure {
    error: StoreError,
    /// The connection is broken: drop it instead of returning it to the pool.
    broken: bool,
    /// Nothing can have committed, so the call may run again on another connection.
    repeatable: bool,
}

impl Failure {
    /// A driver error before COMMIT was sent: nothing committed.
    fn before_commit(e: &tokio_postgres::Error) -> Self {
        let (error, broken) = classify(e);
        Self {
            error,
            broken,
            repeatable: true,
        }
    }

    /// A driver error from COMMIT itself: the outcome is unknown.
    fn at_commit(e: &tokio_postgres::Error) -> Self {
        let (error, broken) = classify(e);
        Self {
            error,
            broken,
            repeatable: false,
        }
    }

    fn conflict(tree: Tree) -> Self {
        Self {
            error: StoreError::Conflict { tree },
            broken: false,
            repeatable: false,
        }
    }
}

/// Whether a batch whose COMMIT went unanswered committed, judged from the stored values of the
/// keys it writes and checks (`current`, by tree name and key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Landed {
    /// Every write is there (a transaction commits whole).
    Yes,
    /// A precondition on a key the batch changes still holds: had the batch committed, that key
    /// would hold the batch's value. (A writer that put the old value back in between would
    /// fool this; the store's conditional writers never do: the audit tail is a hash chain,
    /// key records carry versions.)
    No,
    /// Neither: another writer may have changed the keys since.
    Unknown,
}

fn landed(batch: &Batch, current: &HashMap<(String, Vec<u8>), Vec<u8>>) -> Landed {
    let mut effects: HashMap<(String, Vec<u8>), Option<&[u8]>> = HashMap::new();
    for op in batch.ops() {
        let effect = match op {
            BatchOp::Put { value, .. } => Some(value.as_slice()),
            BatchOp::Delete { .. } => None,
        };
        effects.insert((op.tree().name().to_owned(), op.key().to_vec()), effect);
    }
    let now = |k: &(String, Vec<u8>)| current.get(k).map(Vec::as_slice);
    if effects.iter().all(|(k, effect)| now(k) == *effect) {
        return Landed::Yes;
    }
    let disproved = batch.preconditions().iter().any(|p| {
        let k = (p.tree.name().to_owned(), p.key.clone());
        effects
            .get(&k)
            .is_some_and(|effect| *effect != p.expected.as_deref() && p.holds(now(&k)))
    });
    if disproved {
        Landed::No
    } else {
        Landed::Unknown
    }
}

/// Maps a driver error to a [`StoreError`] built from safe parts (SQLSTATE, OS reason), and says
/// whether the connection is broken.
fn classify(e: &tokio_postgres::Error) -> (StoreError, bool) {
    if e.is_closed() {
        return (
            StoreError::Unavailable("the PostgreSQL connection was closed".into()),
            true,
        );
    }
    if let Some(state) = e.code() {
        let code = state.code();
        let (what, broken) = match code {
            _ if code.starts_with("08") => ("connection failure", true),
            "57P01" | "57P02" | "57P03" => ("the database is shutting down or starting", true),
            "53300" => ("too many connections", true),
            "57014" => ("statement timed out or was cancelled", false),
            "55P03" => ("lock wait timed out", false),
            "40001" | "40P01" => ("serialization failure or deadlock", false),
            "42P01" | "3F000" => ("the store's schema or table is missing", false),
            _ => ("database error", false),
        };
        return (
            StoreError::Unavailable(format!("PostgreSQL: {what} (SQLSTATE {code})")),
            broken,
        );
    }
    // Not from the server: connecting, I/O or protocol. Only an OS error's text is kept.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return (
                StoreError::Unavailable(format!("cannot reach PostgreSQL: {io}")),
                true,
            );
        }
        source = s.source();
    }
    (
        StoreError::Unavailable("PostgreSQL connection or protocol error".into()),
        true,
    )
}

fn pool_error(e: PoolError, timeout: Duration) -> StoreError {
    match e {
        PoolError::Backend(e) => classify(&e).0,
        PoolError::Timeout(kind) => {
            let what = match kind {
                TimeoutType::Wait => "no free PostgreSQL connection",
                TimeoutType::Create => "no new PostgreSQL connection",
                TimeoutType::Recycle => "no PostgreSQL connection check",
            };
            StoreError::Unavailable(format!("{what} within {} ms", timeout.as_millis()))
        }
        PoolError::Closed => StoreError::Unavailable("the PostgreSQL pool is closed".into()),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            StoreError::Unavailable("the PostgreSQL pool is misconfigured".into())
        }
    }
}

/// What the runtime's tasks share.
struct Inner {
    pool: Pool,
    sql: Sql,
    schema: String,
    timeout: Duration,
}

impl Inner {
    /// Advisory lock id of one key: 64 bits of SHA-256 over schema, tree and key, so that
    /// stores in other schemas of the same database (parallel tests, other deployments) rarely
    /// contend. A collision only serialises two unrelated batches.
    fn lock_id(&self, tree: Tree, key: &[u8]) -> i64 {
        let digest = Sha256::new()
            .chain_update(self.schema.as_bytes())
            .chain_update([0])
            .chain_update(tree.name().as_bytes())
            .chain_update([0])
            .chain_update(key)
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }

    /// Runs `call` with a pooled connection under the call's deadline, retrying on a fresh
    /// connection when one turns out broken before anything committed.
    async fn run(&self, call: &Call) -> Result<Reply, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let timed_out = || {
            StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {} ms",
                self.timeout.as_millis()
            ))
        };
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let mut conn = match timeout_at(deadline, self.pool.get()).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(pool_error(e, self.timeout)),
                Err(_) => return Err(timed_out()),
            };
            match timeout_at(deadline, self.attempt(&mut conn, call)).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(failure)) => {
                    if failure.broken {
                        drop(Object::take(conn));
                        self.drop_idle();
                    }
                    if failure.broken
                        && !failure.repeatable
                        && let Call::Apply(batch) = call
                    {
                        // COMMIT went unanswered: did the batch land?
                        match self.landed_after(batch, deadline).await {
                            Some(Landed::Yes) => return Ok(Reply::Done),
                            Some(Landed::No) => {
                                last = Some(failure.error);
                                continue;
                            }
                            Some(Landed::Unknown) | None => return Err(failure.error),
                        }
                    }
                    if !(failure.broken && failure.repeatable) {
                        return Err(failure.error);
                    }
                    last = Some(failure.error);
                }
                Err(_) => {
                    // Cut off mid-protocol: the connection's state is unknown, so it goes (the
                    // server rolls back an open transaction when the socket closes).
                    drop(Object::take(conn));
                    self.drop_idle();
                    return Err(timed_out());
                }
            }
        }
        Err(last.unwrap_or_else(timed_out))
    }

    /// What a batch whose COMMIT went unanswered did, read on a fresh connection: `None` when
    /// that read fails too.
    async fn landed_after(&self, batch: &Batch, deadline: Instant) -> Option<Landed> {
        let conn = timeout_at(deadline, self.pool.get()).await.ok()?.ok()?;
        let (trees, keys): (Vec<&str>, Vec<&[u8]>) = batch
            .ops()
            .iter()
            .map(|op| (op.tree().name(), op.key()))
            .chain(
                batch
                    .preconditions()
                    .iter()
                    .map(|p| (p.tree.name(), p.key.as_slice())),
            )
            .unzip();
        let read = async {
            let stmt = conn.prepare_cached(&self.sql.read_many).await?;
            conn.query(&stmt, &[&trees, &keys]).await
        };
        let rows = timeout_at(deadline, read).await.ok()?.ok()?;
        let mut current = HashMap::new();
        for row in &rows {
            let tree: String = row.try_get(0).ok()?;
            let key: Vec<u8> = row.try_get(1).ok()?;
            let value: Vec<u8> = row.try_get(2).ok()?;
            current.insert((tree, key), value);
        }
        Some(landed(batch, &current))
    }

    /// One broken connection usually means the idle ones are broken too (the database
    /// restarted, the network was cut) even if their drivers have not noticed yet; trying them
    /// one by one could use up a call's attempts, so they all go and the next call connects anew.
    fn drop_idle(&self) {
        drop(self.pool.retain(|_, _| false));
    }

    async fn attempt(&self, conn: &mut Object, call: &Call) -> Result<Reply, Failure> {
        match call {
            Call::Get(tree, key) => {
                let stmt = conn
                    .prepare_cached(&self.sql.get)
                    .await
                    .map_err(|e| Failure::before_commit(&e))?;
                let row = conn
                    .query_opt(&stmt, &[&tree.name(), key])
                    .await
                    .map_err(|e| Failure::before_commit(&e))?;
                let value = row
                    .map(|r| r.try_get::<_, Vec<u8>>(0))
                    .transpose()
                    .map_err(|e| Failure::before_commit(&e))?;
                Ok(Reply::Value(value))
            }
            Call::Scan(tree, prefix) => {
                let rows = match successor(prefix) {
                    Some(upper) => {
                        let stmt = conn
                            .prepare_cached(&self.sql.scan_range)
                            .await
                            .map_err(|e| Failure::before_commit(&e))?;
                        conn.query(&stmt, &[&tree.name(), prefix, &upper]).await
                    }
                    None => {
                        let stmt = conn
                            .prepare_cached(&self.sql.scan_from)
                            .await
                            .map_err(|e| Failure::before_commit(&e))?;
                        conn.query(&stmt, &[&tree.name(), prefix]).await
                    }
                }
                .map_err(|e| Failure::before_commit(&e))?;
                let entries = rows
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<Vec<Entry>, tokio_postgres::Error>>()
                    .map_err(|e| Failure::before_commit(&e))?;
                Ok(Reply::Entries(entries))
            }
            Call::Range(tree, from, to, limit) => {
                let stmt = conn
                    .prepare_cached(&self.sql.scan_bounded)
                    .await
                    .map_err(|e| Failure::before_commit(&e))?;
                let rows = conn
                    .query(&stmt, &[&tree.name(), from, to, limit])
                    .await
                    .map_err(|e| Failure::before_commit(&e))?;
                let entries = rows
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<Vec<Entry>, tokio_postgres::Error>>()
                    .map_err(|e| Failure::before_commit(&e))?;
                Ok(Reply::Entries(entries))
            }
            Call::Apply(batch) => self.apply(conn, batch).await.map(|()| Reply::Done),
            Call::Health => {
                conn.simple_query("SELECT 1")
                    .await
                    .map_err(|e| Failure::before_commit(&e))?;
                Ok(Reply::Done)
            }
            Call::NonceInsert {
                scope,
                expires_at,
                now,
            } => {
                let stmt = conn
                    .prepare_cached(&self.sql.nonce_insert)
                    .await
                    .map_err(|e| Failure::before_commit(&e))?;
                // One autocommitted statement: a failure may have committed it, so it is not
                // repeated (a repeat would find its own row and report a replay).
                let rows = conn
                    .execute(&stmt, &[scope, expires_at, now])
                    .await
                    .map_err(|e| Failure::at_commit(&e))?;
                Ok(Reply::Flag(rows == 1))
            }
            Call::NonceHeld { scope, now } => {
                let stmt = conn
                    .prepare_cached(&self.sql.nonce_held)
                    .await
                    .map_err(|e| Failure::before_commit(&e))?;
                let row = conn
                    .query_opt(&stmt, &[scope, now])
                    .await
                    .map_err(|e| Failure::before_commit(&e))?;
                Ok(Reply::Flag(row.is_some()))
            }
            Call::NonceSweep { now } => {
                let sweep = conn
                    .prepare_cached(&self.sql.nonce_sweep)
                    .await
                    .map_err(|e| Failure::before_commit(&e))?;
                conn.execute(&sweep, &[now])
                    .await
                    .map_err(|e| Failure::before_commit(&e))?;
                let count = conn
                    .prepare_cached(&self.sql.nonce_count)
                    .await
                    .map_err(|e| Failure::before_commit(&e))?;
                let live: i64 = conn
                    .query_one(&count, &[])
                    .await
                    .map_err(|e| Failure::before_commit(&e))?
                    .try_get(0)
                    .map_err(|e| Failure::before_commit(&e))?;
                Ok(Reply::Count(u64::try_from(live).unwrap_or(0)))
            }
        }
    }

    async fn apply(&self, conn: &mut Object, batch: &Batch) -> Result<(), Failure> {
        let tx = conn
            .transaction()
            .await
            .map_err(|e| Failure::before_commit(&e))?;

        let mut locks: Vec<i64> = batch
            .preconditions()
            .iter()
            .map(|p| self.lock_id(p.tree, &p.key))
            .chain(
                batch
                    .ops()
                    .iter()
                    .map(|op| self.lock_id(op.tree(), op.key())),
            )
            .collect();
        locks.sort_unstable();
        locks.dedup();
        let stmt = tx
            .prepare_cached(&self.sql.lock)
            .await
            .map_err(|e| Failure::before_commit(&e))?;
        tx.query_one(&stmt, &[&locks])
            .await
            .map_err(|e| Failure::before_commit(&e))?;

        if !batch.preconditions().is_empty() {
            let trees: Vec<&str> = batch
                .preconditions()
                .iter()
                .map(|p| p.tree.name())
                .collect();
            let keys: Vec<&[u8]> = batch
                .preconditions()
                .iter()
                .map(|p| p.key.as_slice())
                .collect();
            let stmt = tx
                .prepare_cached(&self.sql.read_many)
                .await
                .map_err(|e| Failure::before_commit(&e))?;
            let rows = tx
                .query(&stmt, &[&trees, &keys])
                .await
                .map_err(|e| Failure::before_commit(&e))?;
            let mut current: HashMap<(String, Vec<u8>), Vec<u8>> = HashMap::new();
            for row in &rows {
                let tree: String = row.try_get(0).map_err(|e| Failure::before_commit(&e))?;
                let key: Vec<u8> = row.try_get(1).map_err(|e| Failure::before_commit(&e))?;
                let value: Vec<u8> = row.try_get(2).map_err(|e| Failure::before_commit(&e))?;
                current.insert((tree, key), value);
            }
            // In the batch's order, so the first failing precondition names the tree.
            for p in batch.preconditions() {
                let now = current
                    .get(&(p.tree.name().to_owned(), p.key.clone()))
                    .map(Vec::as_slice);
                if !p.holds(now) {
                    // Best effort: a failed rollback still ends the transaction when the
                    // connection is next used or dropped.
                    let _ = tx.rollback().await;
                    return Err(Failure::conflict(p.tree));
                }
            }
        }

        // Writes apply in order and the last write to a key wins, so only each key's last write
        // matters; one statement per kind then writes every key once.
        let mut last: HashMap<(Tree, &[u8]), Option<&[u8]>> = HashMap::new();
        for op in batch.ops() {
            let effect = match op {
                BatchOp::Put { value, .. } => Some(value.as_slice()),
                BatchOp::Delete { .. } => None,
            };
            last.insert((op.tree(), op.key()), effect);
        }
        let (mut put_trees, mut put_keys, mut put_values) = (Vec::new(), Vec::new(), Vec::new());
        let (mut del_trees, mut del_keys) = (Vec::new(), Vec::new());
        for ((tree, key), effect) in last {
            match effect {
                Some(value) => {
                    put_trees.push(tree.name());
                    put_keys.push(key);
                    put_values.push(value);
                }
                None => {
                    del_trees.push(tree.name());
                    del_keys.push(key);
                }
            }
        }
        if !put_keys.is_empty() {
            let stmt = tx
                .prepare_cached(&self.sql.upsert)
                .await
                .map_err(|e| Failure::before_commit(&e))?;
            tx.execute(&stmt, &[&put_trees, &put_keys, &put_values])
                .await
                .map_err(|e| Failure::before_commit(&e))?;
        }
        if !del_keys.is_empty() {
            let stmt = tx
                .prepare_cached(&self.sql.delete)
                .await
                .map_err(|e| Failure::before_commit(&e))?;
            tx.execute(&stmt, &[&del_trees, &del_keys])
                .await
                .map_err(|e| Failure::before_commit(&e))?;
        }
        tx.commit().await.map_err(|e| Failure::at_commit(&e))
    }

    /// Creates the schema if needed and applies every pending migration, all in one transaction
    /// under an advisory lock, so nodes starting together migrate once.
    async fn migrate(&self) -> Result<i32, StoreError> {
        let fail = |e: tokio_postgres::Error| classify(&e).0;
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| pool_error(e, self.timeout))?;
        let quoted = format!("\"{}\"", self.schema);
        let tx = conn.transaction().await.map_err(fail)?;
        let schema_lock = {
            let digest = Sha256::digest(self.schema.as_bytes());
            i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
        };
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&MIGRATION_LOCK, &schema_lock],
        )
        .await
        .map_err(fail)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {quoted}; \
             CREATE TABLE IF NOT EXISTS {quoted}.schema_version (\
                 version integer PRIMARY KEY, \
                 description text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await
        .map_err(fail)?;
        let current: i32 = tx
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {quoted}.schema_version"),
                &[],
            )
            .await
            .map_err(fail)?
            .try_get(0)
            .map_err(fail)?;
        if current > SCHEMA_VERSION {
            return Err(StoreError::Unavailable(format!(
                "the database schema is at version {current}, newer than this build's \
                 {SCHEMA_VERSION}: upgrade the server"
            )));
        }
        for (version, (description, sql)) in (1..).zip(MIGRATIONS.iter()) {
            if version <= current {
                continue;
            }
            tx.batch_execute(&sql.replace("{schema}", &quoted))
                .await
                .map_err(fail)?;
            tx.execute(
                &format!(
                    "INSERT INTO {quoted}.schema_version (version, description) VALUES ($1, $2)"
                ),
                &[&version, description],
            )
            .await
            .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(current)
    }

    /// `synchronous_commit = off` acknowledges commits before they are durable, which a KMS must
    /// not do; every other setting (local, on, remote_write, remote_apply) is durable locally.
    async fn check_durability(&self) -> Result<(), StoreError> {
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| pool_error(e, self.timeout))?;
        let row = conn
            .query_one("SELECT current_setting('synchronous_commit')", &[])
            .await
            .map_err(|e| classify(&e).0)?;
        let setting: String = row.try_get(0).map_err(|e| classify(&e).0)?;
        if setting == "off" {
            return Err(StoreError::Unavailable(
                "PostgreSQL has synchronous_commit = off: commits would be acknowledged before \
                 they are durable; set it to on (or local) for the KMS's role or database"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A [`Store`] on PostgreSQL; any number of processes may open the same schema.
pub struct PostgresStore {
    inner: Arc<Inner>,
    /// Always `Some` until dropped; taken in `Drop` to shut down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
    /// For `Debug`: where the store lives, without the password.
    target: String,
    /// This node's view of the replay nonce table (see the module doc).
    nonces: std::sync::Mutex<NonceView>,
}

/// A node's count of live replay nonces and its sweep schedule.
#[derive(Default)]
struct NonceView {
    /// Live rows at the last sweep plus this node's inserts since.
    live: u64,
    /// The next scheduled sweep.
    next_sweep: u64,
    /// The last sweep forced by the bound (at most one a second).
    last_forced: Option<u64>,
}

impl PostgresStore {
    /// Connects, creates or migrates the schema, and checks the server acknowledges commits only
    /// once durable. Fails with [`StoreError::Unavailable`] when the database cannot be reached
    /// within the timeout.
    pub fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        check_schema_name(&options.schema)?;
        let mut config =
            parse_url(&options.url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if let Some(password) = &options.password {
            config.password(password.expose_secret());
        }
        let ms = options.timeout.as_millis().max(1);
        // Server-side bounds too, so a statement or lock wait cut off by the client does not
        // keep running, and a node that vanished mid-transaction does not hold its locks.
        let bounds = format!(
            "-c statement_timeout={ms} -c lock_timeout={ms} \
             -c idle_in_transaction_session_timeout={}",
            ms.saturating_mul(2)
        );
        let options_text = match config.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {bounds}"),
            Some(_) | None => bounds,
        };
        config.options(options_text);
        if config.get_application_name().is_none() {
            config.application_name("kms-server");
        }
        config
            .connect_timeout(options.timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(options.timeout.saturating_mul(2));
        let target = describe(&config, &options.schema);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kms-postgres")
            .enable_all()
            .build()
            .map_err(StoreError::Io)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .build()
            .map_err(|_| StoreError::Unavailable("cannot build the PostgreSQL pool".into()))?;
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                sql: Sql::new(&options.schema),
                schema: options.schema,
                timeout: options.timeout,
            }),
            runtime: Some(runtime),
            target,
            nonces: std::sync::Mutex::new(NonceView::default()),
        };
        store.block(|inner| async move {
            inner.migrate().await?;
            inner.check_durability().await
        })?;
        Ok(store)
    }

    /// The schema version the database is at (after open, always [`SCHEMA_VERSION`]).
    pub fn schema_version(&self) -> Result<i32, StoreError> {
        self.block(|inner| async move {
            let conn = inner
                .pool
                .get()
                .await
                .map_err(|e| pool_error(e, inner.timeout))?;
            let row = conn
                .query_one(
                    &format!(
                        "SELECT coalesce(max(version), 0) FROM \"{}\".schema_version",
                        inner.schema
                    ),
                    &[],
                )
                .await
                .map_err(|e| classify(&e).0)?;
            row.try_get(0).map_err(|e| classify(&e).0)
        })
    }

    /// Runs `work` on the store's runtime and waits for it from this (synchronous) thread.
    fn block<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the PostgreSQL store is closed".into()))?;
        let (tx, rx) = mpsc::sync_channel(1);
        let fut = work(Arc::clone(&self.inner));
        runtime.spawn(async move {
            // The caller may have given up waiting; nobody is left to tell.
            let _ = tx.send(fut.await);
        });
        // Every call bounds itself by the timeout; this only guards against a lost task.
        let grace = self.inner.timeout.saturating_mul(3);
        rx.recv_timeout(grace).unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the PostgreSQL call was lost".into(),
            ))
        })
    }

    fn call(&self, call: Call) -> Result<Reply, StoreError> {
        self.block(|inner| async move { inner.run(&call).await })
    }

    fn nonce_flag(&self, call: Call) -> Result<bool, StoreError> {
        match self.call(call)? {
            Reply::Flag(flag) => Ok(flag),
            Reply::Value(_) | Reply::Entries(_) | Reply::Done | Reply::Count(_) => {
                Err(unexpected())
            }
        }
    }

    /// Sweeps the expired nonces and sets this node's count to the rows left.
    fn sweep_nonces(&self, view: &mut NonceView, now: u64) -> Result<(), StoreError> {
        let now_sql = i64::try_from(now).unwrap_or(i64::MAX);
        match self.call(Call::NonceSweep { now: now_sql })? {
            Reply::Count(live) => {
                view.live = live;
                view.next_sweep = now.saturating_add(NONCE_SWEEP_EVERY);
                Ok(())
            }
            Reply::Value(_) | Reply::Entries(_) | Reply::Done | Reply::Flag(_) => Err(unexpected()),
        }
    }
}

/// `host:port/dbname schema S` for diagnostics; never the password.
fn describe(config: &tokio_postgres::Config, schema: &str) -> String {
    let host = config
        .get_hosts()
        .first()
        .map_or_else(String::new, |h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        });
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("{host}:{port}/{db} schema {schema}")
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.inner.pool.close();
        // Dropping a runtime blocks, which panics inside an async context (tests, and the
        // server's own runtime drop the KMS there); shutting down in the background does not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Where the store is, never the password or stored bytes.
impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Store for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.call(Call::Get(tree, key.to_vec()))? {
            Reply::Value(v) => Ok(v),
            Reply::Entries(_) | Reply::Done | Reply::Flag(_) | Reply::Count(_) => Err(unexpected()),
        }
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        match self.call(Call::Scan(tree, prefix.to_vec()))? {
            Reply::Entries(e) => Ok(e),
            Reply::Value(_) | Reply::Done | Reply::Flag(_) | Reply::Count(_) => Err(unexpected()),
        }
    }

    fn scan_range(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        if from >= to || limit == 0 {
            return Ok(Vec::new());
        }
        // LIMIT takes a bigint; a larger limit than it holds means "no limit" anyway.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self.call(Call::Range(tree, from.to_vec(), to.to_vec(), limit))? {
            Reply::Entries(e) => Ok(e),
            Reply::Value(_) | Reply::Done | Reply::Flag(_) | Reply::Count(_) => Err(unexpected()),
        }
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.call(Call::Apply(batch.clone()))? {
            Reply::Done => Ok(()),
            Reply::Value(_) | Reply::Entries(_) | Reply::Flag(_) | Reply::Count(_) => {
                Err(unexpected())
            }
        }
    }

    /// Every `apply` is durable when it returns (COMMIT with synchronous_commit), so there is
    /// nothing left to flush.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn health(&self) -> Result<(), StoreError> {
        match self.call(Call::Health)? {
            Reply::Done => Ok(()),
            Reply::Value(_) | Reply::Entries(_) | Reply::Flag(_) | Reply::Count(_) => {
                Err(unexpected())
            }
        }
    }

    fn record_nonce(
        &self,
        scope: &[u8],
        expires_at: u64,
        now: u64,
        max_live: u64,
    ) -> Result<NonceOutcome, StoreError> {
        if scope.is_empty() || scope.len() > MAX_NONCE_SCOPE {
            return Err(StoreError::Unavailable(format!(
                "a replay nonce scope must be 1 to {MAX_NONCE_SCOPE} bytes (a caller's bug)"
            )));
        }
        let now_sql = i64::try_from(now).unwrap_or(i64::MAX);
        let expires_sql = i64::try_from(expires_at).unwrap_or(i64::MAX);
        // The view is held across the calls so that this node's count stays its own; the
        // database, not this lock, decides between nodes.
        let mut view = self
            .nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now >= view.next_sweep {
            self.sweep_nonces(&mut view, now)?;
        }
        if view.live >= max_live {
            if view.last_forced.is_none_or(|last| now > last) {
                view.last_forced = Some(now);
                self.sweep_nonces(&mut view, now)?;
            }
            if view.live >= max_live {
                let held = self.nonce_flag(Call::NonceHeld {
                    scope: scope.to_vec(),
                    now: now_sql,
                })?;
                return Ok(if held {
                    NonceOutcome::Seen
                } else {
                    NonceOutcome::Full
                });
            }
        }
        let recorded = self.nonce_flag(Call::NonceInsert {
            scope: scope.to_vec(),
            expires_at: expires_sql,
            now: now_sql,
        })?;
        if recorded {
            // An expired row reused counts again until the next sweep: an overcount, which errs
            // towards the bound.
            view.live += 1;
            Ok(NonceOutcome::New)
        } else {
            Ok(NonceOutcome::Seen)
        }
    }
}

fn unexpected() -> StoreError {
    StoreError::Unavailable("internal error: mismatched PostgreSQL reply".into())
}

#[cfg(test)]
mod tests;
