//! `kms encrypt --envelope` and `kms decrypt` of envelopes (issue 21 item 2) against the real
//! server: files of any size for SM4 and AES keys, the Python reference decryptor
//! (`examples/envelope/decrypt.py`) opening what the CLI wrote with the data key the KMS gives
//! back, a tampered file refused without leaving output, and 100 MiB through stdin and stdout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{DevServer, describe, fails, json, ok};
use serde_json::Value;

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: incompressible enough, and reproducible.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn reference_decryptor() -> String {
    format!(
        "{}/../examples/envelope/decrypt.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn envelopes_round_trip_and_the_reference_decryptor_opens_them() {
    let server = DevServer::start();
    for (alias, algorithm, name) in [
        ("env-sm4", "sm4-gcm", "SM4-GCM"),
        ("env-aes", "aes-256-gcm", "AES-256-GCM"),
    ] {
        json(&server.kms(
            "admin",
            &[
                "--json",
                "key",
                "create",
                "--purpose",
                "encrypt",
                "--algorithm",
                algorithm,
                "--alias",
                alias,
            ],
        ));
        // Larger than the KMS's own 64 KiB plaintext limit, and not a whole number of frames.
        let plain = pseudo_random(3 * 65_536 + 1234, 7);
        server.write("plain.bin", &plain);
        let v = json(&server.kms(
            "app",
            &[
                "--json",
                "encrypt",
                "--envelope",
                "--key",
                alias,
                "--context",
                "doc=q3",
                "--in",
                "plain.bin",
                "--out",
                "sealed.kmsf",
            ],
        ));
        assert_eq!(v["bytes"], plain.len(), "{v}");
        assert_eq!(v["algorithm"], name, "{v}");
        assert!(!server.path("sealed.kmsf.partial").exists());
        let sealed = server.read("sealed.kmsf");
        assert!(sealed.starts_with(b"KMSF"));

        // The CLI recognises the envelope; the context travels inside it.
        ok(&server.kms(
            "app",
            &["decrypt", "--in", "sealed.kmsf", "--out", "back.bin"],
        ));
        assert_eq!(server.read("back.bin"), plain, "{alias}");

        // The reference decryptor: header → the KMS decrypts the data key → frames.
        let py = |args: &[&str]| {
            let out = Command::new("python3")
                .arg(reference_decryptor())
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", describe(&out));
            out.stdout
        };
        let sealed_path = server.path("sealed.kmsf");
        let sealed_path = sealed_path.to_str().unwrap();
        let header: Value = serde_json::from_slice(&py(&["header", sealed_path])).unwrap();
        assert_eq!(header["algorithm"], name);
        assert_eq!(header["context"]["doc"], "q3");
        let wrapped = header["wrapped_key"].as_str().unwrap();
        let dk = json(&server.kms_in(
            "app",
            &["--json", "decrypt", "--base64", "--context", "doc=q3"],
            wrapped.as_bytes(),
        ));
        let data_key = B64.decode(dk["plaintext"].as_str().unwrap()).unwrap();
        let opened = py(&["open", sealed_path, &hex(&data_key)]);
        assert_eq!(opened, plain, "{alias}: the reference decryptor");

        // One flipped byte in the middle: refused, and no output file is left behind.
        let mut bad = sealed.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x20;
        server.write("bad.kmsf", &bad);
        fails(
            &server.kms("app", &["decrypt", "--in", "bad.kmsf", "--out", "bad.out"]),
            2,
            "failed authentication",
        );
        assert!(!server.path("bad.out").exists() && !server.path("bad.out.partial").exists());
        // The envelope's own context is the one that counts: another is an error.
        fails(
            &server.kms(
                "app",
                &["decrypt", "--in", "sealed.kmsf", "--context", "doc=q4"],
            ),
            2,
            "differs from the context",
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 100 MiB from a file through `kms encrypt --envelope` to stdout, piped into `kms decrypt` from
/// stdin to stdout, compared as it arrives.
#[test]
fn one_hundred_mib_streams_through_stdin_and_stdout() {
    const LEN: usize = 100 * 1024 * 1024;
    let server = DevServer::start();
    json(&server.kms(
        "admin",
        &[
            "--json",
            "key",
            "create",
            "--purpose",
            "encrypt",
            "--alias",
            "stream",
        ],
    ));
    let plain = pseudo_random(LEN, 11);
    server.write("big.bin", &plain);
    let profile = "kms-dev/profiles/app.toml";
    let mut enc = server
        .command()
        .args([
            "--profile",
            profile,
            "encrypt",
            "--envelope",
            "--key",
            "stream",
        ])
        .args(["--in", "big.bin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut dec = server
        .command()
        .args(["--profile", profile, "decrypt"])
        .stdin(Stdio::from(enc.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = dec.stdout.take().unwrap();
    let mut seen = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(seen + n <= LEN, "more output than input");
        assert!(
            buf[..n] == plain[seen..seen + n],
            "differs near byte {seen}"
        );
        seen += n;
    }
    let enc = enc.wait_with_output().unwrap();
    let dec = dec.wait_with_output().unwrap();
    assert!(enc.status.success(), "{}", describe(&enc));
    assert!(dec.status.success(), "{}", describe(&dec));
    assert_eq!(seen, LEN);
    std::io::stderr().flush().unwrap();
}
