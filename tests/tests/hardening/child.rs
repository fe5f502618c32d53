//! The real `kms-server serve` as a child process, its stdout and stderr captured line by line
//! (as bytes: a secret logged raw need not be UTF-8). Killed on drop, so a failing test leaves no
//! server behind.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary: `kms-server`'s `main`, built in this package (see `src/bin/`).
const BIN: &str = env!("CARGO_BIN_EXE_kms-server-under-test");

type Lines = Arc<Mutex<Vec<Vec<u8>>>>;

pub(crate) struct ChildServer {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    stderr: Lines,
    stdout: Lines,
    readers: Vec<JoinHandle<()>>,
}

fn reader(
    stream: impl Read + Send + 'static,
    lines: Lines,
    addr: Option<mpsc::Sender<SocketAddr>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if let Some(tx) = &addr
                && let Some(a) = listening_address(&line)
            {
                let _ = tx.send(a);
            }
            lines.lock().unwrap().push(line);
        }
    })
}

/// The address in the "serving" line of the JSON log.
fn listening_address(line: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(line).ok()?;
    if !text.contains("serving kms.v1") {
        return None;
    }
    let rest = &text[text.find("\"address\":\"")? + "\"address\":\"".len()..];
    rest[..rest.find('"')?].parse().ok()
}

impl ChildServer {
    /// `kms-server serve --config CONFIG` with the given environment; waits until it listens.
    pub(crate) fn start(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "KMS_LOG",
            "RUST_LOG",
            "KMS_LISTEN",
            "KMS_DATA_DIR",
            "KMS_STORAGE",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("start kms-server");
        let pid = child.id();
        let stderr: Lines = Arc::default();
        let stdout: Lines = Arc::default();
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            reader(child.stderr.take().unwrap(), Arc::clone(&stderr), Some(tx)),
            reader(child.stdout.take().unwrap(), Arc::clone(&stdout), None),
        ];
        let mut server = Self {
            child,
            pid,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            stderr,
            stdout,
            readers,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(100)) {
                server.addr = addr;
                return server;
            }
            let exited = server.child.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let _ = server.child.kill();
                let _ = server.child.wait();
                panic!(
                    "kms-server did not start ({exited:?}):\n{}",
                    String::from_utf8_lossy(&server.stderr.lock().unwrap().concat())
                );
            }
        }
    }

    /// Every line the server wrote to stderr (its log) and stdout so far.
    pub(crate) fn lines(&self) -> Vec<Vec<u8>> {
        let mut all = self.stderr.lock().unwrap().clone();
        all.extend(self.stdout.lock().unwrap().iter().cloned());
        all
    }

    /// SIGTERM (a graceful stop: drain, last audit checkpoint, keys wiped), then waits for the
    /// exit and for the output to be read to its end.
    pub(crate) fn terminate(mut self) -> (ExitStatus, Vec<Vec<u8>>) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {}", self.pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "kms-server did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        (status, self.lines())
    }
}

impl ChildServer {
    /// SIGKILL (no drain, no last checkpoint: what a crash does), then waits for the exit and
    /// for the output to be read to its end.
    pub(crate) fn kill(mut self) -> (ExitStatus, Vec<Vec<u8>>) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        (status, self.lines())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
