//! The built `kms` binary run against a real dev KMS in-process, for the end-to-end tests.
//!
//! The server is the workspace's one in-process harness, `kms_tests::dev::DevServer` (in
//! `tests/src/dev.rs`): what `kms-server dev` does, in a fresh temporary folder that is also the
//! working directory of every `kms` run here. This module adds only what needs this package's
//! binary: running `kms` with a profile, and reading its exit code, stdout and stderr.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::io::Write as _;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The connection variables a test must not inherit from whoever runs it.
const KMS_ENV: [&str; 9] = [
    "KMS_TLS",
    "KMS_ENC_CERT",
    "KMS_ENC_KEY",
    "KMS_PROFILE",
    "KMS_HOME",
    "KMS_ENDPOINT",
    "KMS_CA",
    "KMS_CERT",
    "KMS_KEY",
];

/// The shared in-process dev server ([`kms_tests::dev::DevServer`], which derefs to it) and
/// the `kms` binary of this package run against it.
pub(crate) struct DevServer(kms_tests::dev::DevServer);

impl Deref for DevServer {
    type Target = kms_tests::dev::DevServer;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for DevServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl DevServer {
    /// See [`kms_tests::dev::DevServer::start`].
    pub(crate) fn start() -> Self {
        Self(kms_tests::dev::DevServer::start())
    }

    /// See [`kms_tests::dev::DevServer::start_blank`].
    pub(crate) fn start_blank() -> Self {
        Self(kms_tests::dev::DevServer::start_blank())
    }

    /// See [`kms_tests::dev::DevServer::start_dual_control`].
    pub(crate) fn start_dual_control(approvals: u8) -> Self {
        Self(kms_tests::dev::DevServer::start_dual_control(approvals))
    }

    /// `kms` in the working directory, with no connection settings but `args`.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kms"));
        for var in KMS_ENV {
            cmd.env_remove(var);
        }
        cmd.current_dir(self.cwd());
        cmd
    }

    /// `kms --profile kms-dev/profiles/PROFILE.toml ARGS…` with empty stdin.
    pub(crate) fn kms(&self, profile: &str, args: &[&str]) -> Output {
        self.kms_in(profile, args, b"")
    }

    /// As [`Self::kms`], with `stdin` piped in.
    pub(crate) fn kms_in(&self, profile: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = self.command();
        cmd.arg("--profile")
            .arg(format!("kms-dev/profiles/{profile}.toml"))
            .args(args);
        run(cmd, stdin)
    }

    /// Runs `script` (a file in [`Self::cwd`], where it also runs) with `bash -euo pipefail`,
    /// the built `kms` first on the `PATH` and no inherited connection settings: the README's
    /// shell blocks, executed as a reader would run them.
    pub(crate) fn run_script(&self, script: &str) -> Output {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_kms"))
            .parent()
            .expect("the kms binary is in a folder");
        let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .expect("PATH entries hold no separator");
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", script])
            .current_dir(self.cwd())
            .env("PATH", path);
        for var in KMS_ENV {
            cmd.env_remove(var);
        }
        cmd.output().expect("run bash")
    }

    /// `kms ARGS…` with no profile at all (offline commands).
    pub(crate) fn kms_offline(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run(cmd, b"")
    }
}

fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kms");
    let mut pipe = child.stdin.take().expect("stdin pipe");
    // A command that does not read stdin may exit first: a broken pipe is fine.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    child.wait_with_output().expect("wait for kms")
}

/// The text inside the one fenced `sh` block between the markers `begin` and `end` (HTML
/// comments such as `<!-- quickstart:begin -->`) of a Markdown file.
#[track_caller]
pub(crate) fn sh_block(markdown: &str, begin: &str, end: &str) -> String {
    let start = markdown
        .find(begin)
        .unwrap_or_else(|| panic!("the {begin} marker is missing"))
        + begin.len();
    let len = markdown[start..]
        .find(end)
        .unwrap_or_else(|| panic!("the {end} marker is missing after {begin}"));
    let block = markdown[start..start + len].trim();
    let body = block
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .unwrap_or_else(|| panic!("{begin} is not followed by one ```sh block:\n{block}"));
    assert!(!body.contains("```"), "more than one code block:\n{block}");
    body.trim().to_owned()
}

/// Everything about a finished `kms`, for assertion messages.
pub(crate) fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts success; returns stdout (lossily as text: use `out.stdout` for bytes).
#[track_caller]
pub(crate) fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts success; parses stdout as JSON.
#[track_caller]
pub(crate) fn json(out: &Output) -> serde_json::Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
}

/// Asserts the exit code, the `error: ` line and that stderr contains `part`; returns stderr.
#[track_caller]
pub(crate) fn fails(out: &Output, code: i32, part: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
    assert!(stderr.starts_with("error: "), "{}", describe(out));
    assert!(stderr.contains(part), "wanted {part:?}: {}", describe(out));
    stderr
}

/// The dual-control request id a refused first call names in its `error:` line.
pub(crate) fn filed_id(stderr: &str) -> String {
    let at = stderr
        .find("pending request apr-")
        .expect("a pending request")
        + 16;
    stderr[at..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .next()
        .unwrap()
        .to_owned()
}
