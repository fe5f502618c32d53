//! `kms-supply-chain`: the offline supply-chain check (see the library docs).
//!
//! ```text
//! kms-supply-chain [--root DIR] [--db ADVISORY_DB] [--lock FILE] [--metadata FILE]
//! ```
//!
//! Defaults: `--root .`, `--db $KMS_ADVISORY_DB` or `<root>/../shared/advisory-db`,
//! `--lock <root>/Cargo.lock`, and the metadata from `cargo metadata --locked` for the host
//! target (offline first). Exits 1 when any rule is broken, 2 when the inputs are unusable.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{SystemTime, UNIX_EPOCH};

use kms_supply_chain::{
    Config, check, days_from_civil, load_advisories, parse_lock, parse_metadata, staleness_days,
};

struct Args {
    root: PathBuf,
    db: Option<PathBuf>,
    lock: Option<PathBuf>,
    metadata: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        root: PathBuf::from("."),
        db: std::env::var_os("KMS_ADVISORY_DB").map(PathBuf::from),
        lock: None,
        metadata: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .map(PathBuf::from)
                .ok_or(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--root" => a.root = value()?,
            "--db" => a.db = Some(value()?),
            "--lock" => a.lock = Some(value()?),
            "--metadata" => a.metadata = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn host() -> Result<String, String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|e| format!("rustc -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or_else(|| "rustc -vV names no host".to_owned())
}

fn cargo_metadata(root: &Path) -> Result<String, String> {
    let host = host()?;
    let run = |offline: bool| {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(root).args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            &host,
        ]);
        if offline {
            cmd.arg("--offline");
        }
        cmd.output()
    };
    for offline in [true, false] {
        let out = run(offline).map_err(|e| format!("cargo metadata: {e}"))?;
        if out.status.success() {
            return String::from_utf8(out.stdout).map_err(|e| e.to_string());
        }
        if !offline {
            return Err(format!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Err("cargo metadata failed".into())
}

/// The snapshot's date from `SNAPSHOT.txt` ("… commit <sha> (YYYY-MM-DD) …").
fn snapshot_date(db: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(db.join("SNAPSHOT.txt")).ok()?;
    let commit = text
        .split_whitespace()
        .skip_while(|w| *w != "commit")
        .nth(1)?
        .trim_end_matches(',')
        .to_owned();
    let open = text.find('(')?;
    let date = text.get(open + 1..open + 11)?.to_owned();
    Some((commit, date))
}

fn run() -> Result<bool, String> {
    let a = args()?;
    let config: Config =
        toml::from_str(&read(&a.root.join("deny.toml"))?).map_err(|e| format!("deny.toml: {e}"))?;
    let lock_path = a.lock.unwrap_or_else(|| a.root.join("Cargo.lock"));
    let lock = parse_lock(&read(&lock_path)?)?;
    let db =
        a.db.unwrap_or_else(|| a.root.join("..").join("shared").join("advisory-db"));
    if !db.join("crates").is_dir() {
        return Err(format!(
            "no RustSec database at {} (set --db or KMS_ADVISORY_DB)",
            db.display()
        ));
    }
    let metadata = match &a.metadata {
        Some(path) => read(path)?,
        None => cargo_metadata(&a.root)?,
    };
    let metadata = parse_metadata(&metadata)?;
    let advisories = load_advisories(&db, lock.iter().map(|p| p.name.as_str()))?;
    let mut report = check(&config, &lock, Some(&metadata), &advisories);

    match snapshot_date(&db) {
        Some((commit, date)) => {
            println!(
                "advisory database: {} (commit {commit}, {date})",
                db.display()
            );
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
                i64::try_from(d.as_secs() / 86_400).unwrap_or(i64::MAX)
            });
            let max = config
                .advisories
                .maximum_db_staleness
                .as_deref()
                .and_then(staleness_days);
            if let (Some(then), Some(max)) = (days_from_civil(&date), max)
                && now - then > max
            {
                report.errors.push(format!(
                    "the advisory database is {} days old (maximum-db-staleness allows {max}): refresh the snapshot",
                    now - then
                ));
            }
        }
        None => report
            .warnings
            .push("the advisory database has no SNAPSHOT.txt date".into()),
    }
    println!(
        "checked {} locked packages ({} with license metadata) against {} advisories",
        lock.len(),
        metadata.len(),
        advisories.len()
    );
    print!("{}", report.render());
    Ok(report.passed())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => {
            println!("supply chain: ok");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("supply chain: FAILED");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("supply chain: cannot check: {e}");
            ExitCode::from(2)
        }
    }
}
