//! The real `kms-server serve`'s log with real calls over mutual TLS (issue 20 item 3): by
//! default a successful call writes no line (its audit record has it) and a refusal one WARN line
//! naming its request id; with `[log] requests = "info"` every call has its line as well.

use std::path::Path;

use kms_proto::v1;
use kms_tests::net::{self, MODERN};
use kms_tests::pki::Pki;
use kms_tests::world::Clients;

use crate::child::ChildServer;

/// Starts a server whose kms.toml ends with `extra`, makes one call that succeeds (Status) and
/// one that is refused (Init with a wrong init token), stops it, and returns its JSON log lines
/// from after it listened, with the refusal's request id.
async fn two_calls(dir: &Path, extra: &str) -> (Vec<serde_json::Value>, String) {
    let pki = Pki::new();
    std::fs::write(dir.join("server.pem"), &pki.server.cert_pem).unwrap();
    std::fs::write(dir.join("server-key.pem"), &*pki.server.key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), pki.ca.cert_pem()).unwrap();
    let config = dir.join("kms.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [tls]\ncert = \"server.pem\"\nkey = \"server-key.pem\"\nclient_ca = \"ca.pem\"\n{extra}"
        ),
    )
    .unwrap();
    let server = ChildServer::start(&config, &[]);
    let started = server.lines().len();
    let channel = net::channel(
        server.addr,
        net::client_config(pki.ca.cert_pem(), Some(&pki.admin), MODERN),
    )
    .await
    .unwrap();
    let mut system = Clients::new(channel).system;
    system.status(v1::StatusRequest {}).await.unwrap();
    let refused = system
        .init(v1::InitRequest {
            shares: 1,
            threshold: 1,
            init_token: "not-the-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let message = refused.message();
    let id = message[message.rfind("(request ").unwrap() + "(request ".len()..]
        .trim_end_matches(')')
        .to_owned();
    let (status, lines) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let json = lines[started..]
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    (json, id)
}

fn request_id(line: &serde_json::Value) -> Option<&str> {
    line["fields"]["request_id"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_only_the_refusal_is_logged_at_warn_with_its_request_id() {
    let tmp = tempfile::tempdir().unwrap();
    let (lines, id) = two_calls(tmp.path(), "").await;
    let per_request: Vec<_> = lines.iter().filter(|l| request_id(l).is_some()).collect();
    assert_eq!(per_request.len(), 1, "{per_request:#?}");
    let refusal = per_request[0];
    assert_eq!(refusal["level"], "WARN", "{refusal}");
    assert_eq!(refusal["fields"]["message"], "request refused", "{refusal}");
    assert_eq!(request_id(refusal), Some(id.as_str()), "{refusal}");
    assert!(
        !lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["target"] == "kms::audit"),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_requests_info_each_call_has_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (lines, id) = two_calls(tmp.path(), "[log]\nrequests = \"info\"\n").await;
    let per_call: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == "kms::audit")
        .map(|l| l["fields"]["operation"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(per_call, ["System/Status", "System/Init"], "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN" && request_id(l) == Some(id.as_str())),
        "{lines:#?}"
    );
}
