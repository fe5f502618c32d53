//! Every output option works with special files (issue 21 item 6): `--out /dev/null` and a FIFO
//! are written in place, never replaced, renamed, chmod-ed or removed (the CLI may run as root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::Path;

use common::{DevServer, describe, ok};

fn dev_null_is_intact() {
    let m = std::fs::metadata("/dev/null").unwrap();
    assert!(
        m.file_type().is_char_device(),
        "/dev/null is no longer a device"
    );
    assert_eq!(
        m.permissions().mode() & 0o777,
        0o666,
        "/dev/null's mode changed"
    );
    assert!(!Path::new("/dev/null.partial").exists());
}

#[test]
fn every_output_can_be_dev_null() {
    let server = DevServer::start();
    ok(&server.kms(
        "admin",
        &["key", "create", "--purpose", "encrypt", "--alias", "d"],
    ));
    ok(&server.kms(
        "admin",
        &["key", "create", "--purpose", "sign", "--alias", "s"],
    ));
    server.write("in.txt", b"some data");
    ok(&server.kms(
        "app",
        &["encrypt", "--key", "d", "--in", "in.txt", "--out", "in.kms"],
    ));
    server.write("big.bin", vec![7u8; 300_000]);
    for (profile, args) in [
        (
            "app",
            vec![
                "encrypt",
                "--key",
                "d",
                "--in",
                "in.txt",
                "--out",
                "/dev/null",
            ],
        ),
        (
            "app",
            vec!["decrypt", "--in", "in.kms", "--out", "/dev/null"],
        ),
        (
            "app",
            vec![
                "encrypt",
                "--envelope",
                "--key",
                "d",
                "--in",
                "big.bin",
                "--out",
                "/dev/null",
            ],
        ),
        (
            "app",
            vec!["sign", "--key", "s", "--in", "in.txt", "--out", "/dev/null"],
        ),
        ("app", vec!["public-key", "s", "--out", "/dev/null"]),
        (
            "app",
            vec![
                "datakey",
                "--key",
                "d",
                "--spec",
                "sm4",
                "--out",
                "/dev/null",
            ],
        ),
        ("app", vec!["random", "--bytes", "32", "--out", "/dev/null"]),
        ("auditor", vec!["audit", "export", "--out", "/dev/null"]),
        ("auditor", vec!["audit", "public-key", "--out", "/dev/null"]),
        ("admin", vec!["backup", "--out", "/dev/null"]),
    ] {
        let out = server.kms(profile, &args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        dev_null_is_intact();
    }
}

#[test]
fn a_fifo_output_is_written_in_place() {
    let server = DevServer::start();
    ok(&server.kms(
        "admin",
        &["key", "create", "--purpose", "encrypt", "--alias", "d"],
    ));
    server.write("big.bin", vec![9u8; 200_000]);
    let fifo = server.cwd().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    ok(&server.kms(
        "app",
        &[
            "encrypt",
            "--envelope",
            "--key",
            "d",
            "--in",
            "big.bin",
            "--out",
            "pipe",
        ],
    ));
    let sealed = reader.join().unwrap();
    assert!(
        sealed.len() > 200_000,
        "{} bytes through the FIFO",
        sealed.len()
    );
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(!server.cwd().join("pipe.partial").exists());
    // What went through the FIFO decrypts.
    server.write("sealed.kmsf", &sealed);
    ok(&server.kms(
        "app",
        &["decrypt", "--in", "sealed.kmsf", "--out", "back.bin"],
    ));
    assert_eq!(server.read("back.bin"), vec![9u8; 200_000]);
}
