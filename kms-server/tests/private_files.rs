//! What the server writes is its owner's alone, whatever umask it was started with (issue 18
//! item 7): `kms-server dev` under `umask 000` makes its directory 0700, writes nothing that
//! group or others could change, and nothing secret (store, share, private keys, audit archive)
//! that they could read. Certificates and profiles are public (0644, inside the 0700 folder).

#![cfg(test)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u32)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        out.push((entry.path(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            walk(&entry.path(), out);
        }
    }
}

#[test]
fn dev_under_umask_000_writes_owner_only_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kms-dev");
    let script = format!(
        "umask 000; exec '{}' dev --dir '{}' --listen 127.0.0.1:0 --tlcp-listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_kms-server"),
        dir.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Ready once it prints where it listens (after the PKI, profiles, share and store exist).
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening") {
                let _ = tx.send(());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(120));
    // Give sled a moment to have written its files.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut found = Vec::new();
    if ready.is_ok() {
        walk(&dir, &mut found);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready.is_ok(), "kms-server dev did not start");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(
        found.len() > 10,
        "only {} entries under {}",
        found.len(),
        dir.display()
    );
    let public = |p: &Path| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        (name.ends_with(".pem") && !name.contains("key"))
            || p.parent().is_some_and(|d| d.ends_with("profiles"))
    };
    let open: Vec<String> = found
        .iter()
        .filter(|(p, mode)| mode & 0o022 != 0 || (!public(p) && mode & 0o077 != 0))
        .map(|(p, mode)| format!("{:03o} {}", mode, p.display()))
        .collect();
    assert!(open.is_empty(), "open to others:\n{}", open.join("\n"));
    // The store and the share are among what was checked.
    assert!(found.iter().any(|(p, _)| p.starts_with(dir.join("store"))));
}
