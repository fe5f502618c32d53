//! The server's log: no line per successful call by default (the audit trail has it), one WARN
//! line naming the request id per refusal, per-call lines back with `[log] requests = "info"`;
//! and `--log-format` deciding between JSON and text (issues 20 item 3, 21 item 6).

#![cfg(test)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use kms_server::logging::{self, LogFormat, REQUEST_TARGET, RequestLines};
use kms_server::status::{Refusal, to_status};

/// A writer into a shared buffer, for a subscriber whose output the test reads.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// One successful call and one refused call, as the server logs them: the audit layer's
/// per-call line for each (its target and level are pinned below against its source) and
/// `status::to_status` for the refusal. Returns the JSON lines written.
fn two_calls(requests: RequestLines, kms_log: Option<&str>) -> Vec<serde_json::Value> {
    let out = Captured::default();
    let writer = out.clone();
    let directive = logging::filter_directive(requests, kms_log);
    let subscriber =
        logging::subscriber(LogFormat::Json, &directive, move || writer.clone(), false);
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "kms::audit", request_id = "req-ok", outcome = "ok", "audit");
        let status = to_status(Refusal::BadRequest("key is required".into()), "req-refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        tracing::info!(target: "kms::audit", request_id = "req-refused", outcome = "invalid-argument", "audit");
    });
    out.lines()
}

fn request_id(line: &serde_json::Value) -> &str {
    line["fields"]["request_id"].as_str().unwrap_or("")
}

#[test]
fn the_audit_layer_writes_its_per_call_line_at_info_under_the_request_target() {
    // The filter above names the target; if the audit layer's line moved, the default would
    // silently log every call again (or never).
    let source = include_str!("../src/audit_layer.rs");
    let at = source
        .find(&format!("target: \"{REQUEST_TARGET}\""))
        .expect("the audit layer's per-call line uses logging::REQUEST_TARGET");
    let before = &source[..at];
    assert!(
        before.trim_end().ends_with("tracing::info!("),
        "the per-call line is no longer tracing::info!; update logging::filter_directive"
    );
}

#[test]
fn by_default_a_successful_call_writes_nothing_and_a_refusal_one_warn_line() {
    let lines = two_calls(RequestLines::Debug, None);
    assert!(
        lines.iter().all(|l| l["level"] != "INFO"),
        "INFO lines by default: {lines:#?}"
    );
    assert!(
        lines.iter().all(|l| request_id(l) != "req-ok"),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["level"], "WARN");
    assert_eq!(request_id(&lines[0]), "req-refused");
    assert_eq!(lines[0]["fields"]["message"], "request refused");
    assert!(
        lines[0]["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("key is required"),
        "{lines:#?}"
    );
}

#[test]
fn with_requests_info_every_call_has_its_line() {
    let lines = two_calls(RequestLines::Info, None);
    let per_call: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == REQUEST_TARGET)
        .map(request_id)
        .collect();
    assert_eq!(per_call, ["req-ok", "req-refused"], "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN" && request_id(l) == "req-refused")
    );
}

#[test]
fn kms_log_overrides_the_default_filter() {
    let lines = two_calls(RequestLines::Debug, Some("debug"));
    assert!(
        lines.iter().any(|l| request_id(l) == "req-ok"),
        "{lines:#?}"
    );
    let lines = two_calls(RequestLines::Info, Some("error"));
    assert!(lines.is_empty(), "{lines:#?}");
}

/// The first line `kms-server dev` writes to stderr with `--log-format FORMAT` (stderr a pipe).
fn first_dev_line(format: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kms-server"));
    cmd.arg("dev")
        .arg("--dir")
        .arg(dir.path().join("dev"))
        .args(["--listen", "127.0.0.1:0", "--tlcp-listen", "127.0.0.1:0"])
        .env_remove("KMS_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(f) = format {
        cmd.args(["--log-format", f]);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn log_format_json_and_human_from_a_child_process() {
    // Not a terminal: JSON unless told otherwise.
    for format in [None, Some("json")] {
        let line = first_dev_line(format);
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{format:?}: {e}: {line:?}"));
        assert_eq!(v["fields"]["message"], "self-test passed", "{line}");
    }
    let line = first_dev_line(Some("human"));
    assert!(
        serde_json::from_str::<serde_json::Value>(&line).is_err(),
        "{line}"
    );
    assert!(
        line.contains("INFO") && line.contains("self-test passed"),
        "{line}"
    );
    // No colour codes in a pipe.
    assert!(!line.contains('\u{1b}'), "{line:?}");
}
