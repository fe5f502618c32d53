//! The README's quick start, executed: the shell block between `<!-- quickstart:begin -->` and
//! `<!-- quickstart:end -->` runs with `bash -euo pipefail` against a real dev server, with the
//! built `kms` first on the PATH, so the README cannot rot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{DevServer, describe};

const BEGIN: &str = "<!-- quickstart:begin -->";
const END: &str = "<!-- quickstart:end -->";

/// The commands of the quick start block: the text inside its one fenced `sh` block.
fn quickstart(readme: &str) -> String {
    let start = readme
        .find(BEGIN)
        .expect("README has the quickstart:begin marker")
        + BEGIN.len();
    let len = readme[start..]
        .find(END)
        .expect("README has the quickstart:end marker after the begin marker");
    let block = readme[start..start + len].trim();
    let body = block
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .unwrap_or_else(|| panic!("the quick start is not one ```sh block:\n{block}"));
    assert!(!body.contains("```"), "more than one code block:\n{block}");
    body.trim().to_owned()
}

#[test]
fn the_quickstart_block_is_one_shell_block() {
    let readme = "intro\n<!-- quickstart:begin -->\n```sh\necho a\necho b\n```\n<!-- quickstart:end -->\nrest";
    assert_eq!(quickstart(readme), "echo a\necho b");
}

#[test]
fn readme_quick_start_runs_against_a_real_dev_server() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let script = quickstart(&readme);
    assert!(
        script.contains("kms "),
        "the quick start uses kms:\n{script}"
    );

    let mut server = DevServer::start();
    server.write("quickstart.sh", &script);

    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kms")).parent().unwrap();
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "quickstart.sh"])
        .current_dir(server.cwd())
        .env("PATH", path);
    for var in [
        "KMS_PROFILE",
        "KMS_HOME",
        "KMS_ENDPOINT",
        "KMS_CA",
        "KMS_CERT",
        "KMS_KEY",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "the README quick start failed:\n{script}\n{}",
        describe(&out)
    );

    for file in [
        "card.txt",
        "card.kms",
        "card.out",
        "card.sig",
        "contracts.pem",
    ] {
        let bytes = server.read(file);
        assert!(!bytes.is_empty(), "{file} is empty");
    }
    assert_eq!(server.read("card.txt"), server.read("card.out"));
    assert_ne!(server.read("card.txt"), server.read("card.kms"));
    let pem = String::from_utf8(server.read("contracts.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    // OpenSSL said so on stdout, too.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Verified OK"), "{}", describe(&out));

    server.stop();
}
