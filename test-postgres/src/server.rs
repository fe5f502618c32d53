//! One throwaway PostgreSQL cluster: created, started, stopped and started again, removed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use crate::binaries;
use crate::user::{self, Account};

/// Settings appended to the new cluster's `postgresql.conf`. The port is given at each start
/// (`-p`), so a start that lost a race for its port can simply try another.
const SETTINGS: &str = "
# kms-test-postgres: loopback only, socket beside the data directory
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
# several nodes, each with its own pool, in tests that run in parallel
max_connections = 300
";

/// Stops the server and removes its directory once this process is gone (stdin closes).
/// `$0` is pg_ctl, `$1` the data directory, `$2` the whole directory.
const WATCHDOG: &str =
    r#"cat >/dev/null 2>&1; "$0" -D "$1" stop -m immediate >/dev/null 2>&1; rm -rf "$2""#;

/// How many ports to try when another process takes the free port first.
const START_ATTEMPTS: usize = 5;

/// A PostgreSQL server of this process's own in a temporary directory; stopped and removed
/// when dropped, or by its watchdog when the process ends without dropping it.
pub struct Server {
    dir: TempDir,
    bin: PathBuf,
    account: Option<Account>,
    port: u16,
    /// Its stdin is the pipe whose closing tells the watchdog to clean up.
    watchdog: Child,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Creates a cluster (`initdb`) in a fresh temporary directory and starts it on a free
    /// loopback port. Errors say what failed, with PostgreSQL's own words.
    pub fn start() -> Result<Self, String> {
        let bin = binaries::find()?;
        let dir = tempfile::Builder::new()
            .prefix("kms-test-pg-")
            .tempdir()
            .map_err(|e| format!("a temporary directory for PostgreSQL: {e}"))?;
        let account = user::account_for(dir.path())?;
        if let Some(a) = account {
            std::os::unix::fs::chown(dir.path(), Some(a.uid), Some(a.gid))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            // A throwaway cluster: no need to wait for its files to reach the disk.
            .arg("--no-sync");
        run(account, &mut initdb, "initdb")?;
        let settings = SETTINGS.replace("{socket_dir}", &dir.path().display().to_string());
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .map_err(|e| format!("configuring the test cluster: {e}"))?;
        let watchdog = spawn_watchdog(&bin, account, dir.path(), &data)?;
        let mut server = Self {
            dir,
            bin,
            account,
            port: 0,
            watchdog,
        };
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            server.port = free_port()?;
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication, no password).
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The loopback port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (fast shutdown: sessions are ended, nothing committed is lost) and waits
    /// until it is gone. [`Server::start_again`] brings it back on the same port.
    pub fn stop(&self) -> Result<(), String> {
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"])
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        let log = self.dir.path().join("postgres.log");
        let port = format!("-p {}", self.port);
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-o",
            &port,
            "-l",
            &log.display().to_string(),
        ])
        .map_err(|e| format!("{e}\n{}", tail(&log)))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let mut command = Command::new(self.bin.join("pg_ctl"));
        command.arg("-D").arg(self.data()).args(args);
        run(self.account, &mut command, "pg_ctl")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        // Closing its stdin lets the watchdog finish (its own stop and removal find nothing).
        drop(self.watchdog.stdin.take());
        let _ = self.watchdog.wait();
    }
}

/// Runs `command` (as `account`, when given) and turns a failure into its output.
fn run(account: Option<Account>, command: &mut Command, what: &str) -> Result<(), String> {
    if let Some(a) = account {
        a.apply(command);
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn spawn_watchdog(
    bin: &Path,
    account: Option<Account>,
    dir: &Path,
    data: &Path,
) -> Result<Child, String> {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(WATCHDOG)
        .arg(bin.join("pg_ctl"))
        .arg(data)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own process group: a Ctrl-C at the terminal must not stop it before it cleans up.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    if let Some(a) = account {
        a.apply(&mut command);
    }
    command
        .spawn()
        .map_err(|e| format!("starting the PostgreSQL watchdog (sh): {e}"))
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free loopback port: {e}"))
}

/// The last lines of the server's log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
