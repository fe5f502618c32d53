//! The throwaway server itself: it starts, answers, survives a stop and start with its data, and
//! leaves nothing behind — also when its process is killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kms_test_postgres::{Server, TempSchema, admin_sql};

fn is_listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn starts_answers_restarts_and_keeps_what_was_committed() {
    let server = Server::start().unwrap();
    assert_ne!(server.port(), 5432, "never the machine's default port");
    let url = server.url();
    admin_sql(
        &url,
        "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)",
    )
    .unwrap();
    assert_eq!(
        admin_sql(&url, "SHOW listen_addresses").unwrap(),
        vec![vec![Some("127.0.0.1".to_owned())]]
    );

    server.stop().unwrap();
    assert!(!is_listening(server.port()));
    let err = admin_sql(&url, "SELECT 1").unwrap_err();
    assert!(err.contains("connecting to the test PostgreSQL"), "{err}");

    server.start_again().unwrap();
    assert_eq!(
        admin_sql(&url, "SELECT v FROM kept").unwrap(),
        vec![vec![Some("42".to_owned())]]
    );
    let port = server.port();
    let dir = admin_sql(&url, "SHOW data_directory").unwrap()[0][0]
        .clone()
        .unwrap();
    drop(server);
    assert!(!is_listening(port), "dropped, yet still listening");
    assert!(
        !Path::new(&dir).exists(),
        "dropped, yet {dir} is still there"
    );
}

#[test]
fn a_temp_schema_is_dropped_with_its_tables() {
    let server = Server::start().unwrap();
    let name = {
        let schema = TempSchema::on(server.url(), "kms_tp");
        admin_sql(
            &server.url(),
            &format!(
                "CREATE SCHEMA \"{0}\"; CREATE TABLE \"{0}\".t (v int)",
                schema.name()
            ),
        )
        .unwrap();
        schema.name().to_owned()
    };
    let left = admin_sql(
        &server.url(),
        &format!("SELECT 1 FROM pg_namespace WHERE nspname = '{name}'"),
    )
    .unwrap();
    assert!(left.is_empty(), "schema {name} outlived its guard");
}

#[test]
fn a_killed_process_leaves_no_server_and_no_directory() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kms-test-postgres"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_owned();
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url:?}"));
    let dir = admin_sql(&url, "SHOW data_directory").unwrap()[0][0]
        .clone()
        .unwrap();
    assert!(Path::new(&dir).is_dir());

    child.kill().unwrap(); // SIGKILL: no destructor runs; only the watchdog can clean up
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (is_listening(port) || Path::new(&dir).exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_listening(port), "the server outlived its process");
    assert!(!Path::new(&dir).exists(), "{dir} outlived its process");
}
