//! A throwaway PostgreSQL server for the tests and the benchmarks (issue 15).
//!
//! Nothing has to be running on the machine: [`url`] gives the URL of a server that this process
//! started for itself on first use — a fresh cluster (`initdb`) in a temporary directory, listening
//! on a free loopback port with its Unix socket in the same directory, trust authentication for
//! the superuser `postgres` — shared by every test of the process. `KMS_TEST_POSTGRES_URL`, when
//! set, names an existing server instead and nothing is started.
//!
//! A test that must stop and start the database itself (a restart under load) takes a
//! [`Server`] of its own, so it never disturbs the tests beside it.
//!
//! Clean-up does not depend on the process ending well: each server has a watchdog process that
//! holds the read end of a pipe whose write end only this process holds. When this process ends
//! — normally, by a panic, by `abort` or by SIGKILL — the pipe closes, and the watchdog stops the
//! server (`pg_ctl stop -m immediate`) and removes its directory. A [`Server`] dropped earlier
//! does the same at once.
//!
//! PostgreSQL refuses to run as root; when the tests run as root, the server runs as the
//! `postgres` system user (Debian's package creates it) or, failing that, `nobody`, and its
//! directory is made theirs.

mod binaries;
mod server;
mod sql;
mod user;

use std::sync::OnceLock;

pub use server::Server;
pub use sql::{TempSchema, admin_sql};

/// Names an existing server for the tests instead of a throwaway one.
pub const URL_ENV: &str = "KMS_TEST_POSTGRES_URL";

/// The URL of the test database: `KMS_TEST_POSTGRES_URL` if set, else that of this process's
/// throwaway server, started on the first call.
///
/// # Panics
/// When no server is named and none can be started (e.g. the PostgreSQL binaries are missing);
/// the message says what to install and how to name an existing server instead.
#[must_use]
pub fn url() -> String {
    if let Ok(url) = std::env::var(URL_ENV) {
        return url;
    }
    static SHARED: OnceLock<Result<Server, String>> = OnceLock::new();
    match SHARED.get_or_init(Server::start) {
        Ok(server) => server.url(),
        Err(e) => panic!("{e}"),
    }
}
