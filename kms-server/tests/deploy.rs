//! `deploy/`: the systemd unit verifies with `systemd-analyze` and keeps its hardening, and the
//! sample production configuration passes `check-config` once its paths point at real files.

#![cfg(test)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../../deploy/kms-server.service");
const SAMPLE: &str = include_str!("../../deploy/kms.toml.sample");
const BIN: &str = env!("CARGO_BIN_EXE_kms-server");

/// The unit with its binary path pointing at the one just built (verify checks that it is
/// executable), written as `DIR/kms-server.service`.
fn unit_here(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("kms-server.service");
    std::fs::write(&path, UNIT.replace("/usr/local/bin/kms-server", BIN)).unwrap();
    path
}

fn systemd_analyze() -> Option<()> {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => Some(()),
        _ => {
            eprintln!("SKIPPED: systemd-analyze is not installed; the unit was not verified");
            None
        }
    }
}

#[test]
fn the_unit_verifies_with_no_warning_and_a_low_exposure() {
    if systemd_analyze().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_here(dir.path());
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // Unknown keys and bad values are only warnings to verify: any line naming the file fails.
    assert!(!err.contains("kms-server.service:"), "{err}");

    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let exposure: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for kms-server.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{out}");
}

#[test]
fn the_unit_keeps_the_hardening_the_server_relies_on() {
    let lines: Vec<&str> = UNIT.lines().map(str::trim).collect();
    for setting in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/kms",
        "PrivateTmp=yes",
        "MemoryDenyWriteExecute=yes",
        "LimitCORE=0",
        // mlockall without CAP_IPC_LOCK: the limit, not a capability.
        "LimitMEMLOCK=infinity",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "UMask=0077",
        "ExecStartPre=/usr/local/bin/kms-server check-config /etc/kms/kms.toml",
    ] {
        assert!(lines.contains(&setting), "{setting} missing from the unit");
    }
    // The unit's writable directory is the sample's data_dir.
    assert!(SAMPLE.contains("data_dir = \"/var/lib/kms\""));
}

#[test]
fn the_sample_config_passes_check_config_with_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let ca = kms_devpki::DevCa::generate().unwrap();
    ca.write_dir(&tls).unwrap();
    std::fs::copy(tls.join("ca.pem"), tls.join("clients-ca.pem")).unwrap();
    ca.issue_server(&["kms.example"])
        .unwrap()
        .write(&tls, "server")
        .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let text = SAMPLE
        .replace("/etc/kms/tls", &tls.display().to_string())
        .replace("/var/lib/kms", &data.display().to_string());
    let config = dir.path().join("kms.toml");
    std::fs::write(&config, text).unwrap();

    let o = Command::new(BIN)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(": ok (policy standard, storage sled"), "{out}");
}
