//! `kms-server migrate --from sled:PATH --to postgres:URL`: moves a one-node deployment's store
//! into PostgreSQL so that several nodes can serve it.
//!
//! Every tree is copied byte for byte (key material stays wrapped: no unseal, no shares), into an
//! empty schema only, and the copy is verified by per-tree entry counts and SM3 checksums over
//! the sorted entries of both sides, which are printed so an operator can keep them with the
//! change record. The source server must be stopped (sled's lock refuses a second opener).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kms_core::SecretBytes;
use kms_core::store::SledStore;
use kms_core::store::copy::{self, CopyReport};
use kms_store_postgres::{PostgresOptions, PostgresStore};

use crate::cli::{EXIT_FAILED, EXIT_OK};

/// What `migrate` was asked to do.
#[derive(Debug)]
pub(crate) struct MigrateArgs {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) schema: String,
    pub(crate) password_file: Option<PathBuf>,
}

/// `sled:PATH` → PATH.
fn sled_path(from: &str) -> Result<PathBuf, String> {
    let path = from
        .strip_prefix("sled:")
        .filter(|p| !p.is_empty())
        .ok_or("--from must be sled:PATH (the store directory, DATA_DIR/store)")?;
    let path = PathBuf::from(path);
    // sled would silently create an empty store anywhere; only an existing one may be read.
    if !path.join("conf").is_file() {
        let hint = if path.join("store").join("conf").is_file() {
            format!("; did you mean sled:{}", path.join("store").display())
        } else {
            String::new()
        };
        return Err(format!(
            "{} is not a sled store (no conf file){hint}",
            path.display()
        ));
    }
    Ok(path)
}

/// `postgres:URL` (or a bare `postgres://` URL) → URL.
fn postgres_url(to: &str) -> Result<String, String> {
    if to.starts_with("postgres://") || to.starts_with("postgresql://") {
        return Ok(to.to_owned());
    }
    to.strip_prefix("postgres:")
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| "--to must be postgres:URL (a URL without a password)".to_owned())
}

fn password(file: Option<&Path>) -> Result<Option<SecretBytes>, String> {
    let env = std::env::var("KMS_POSTGRES_PASSWORD")
        .ok()
        .map(zeroize::Zeroizing::new);
    match (file, env) {
        (Some(_), Some(_)) => {
            Err("set --password-file or KMS_POSTGRES_PASSWORD, not both".to_owned())
        }
        (Some(path), None) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            );
            let line = text.lines().next().unwrap_or("");
            Ok(Some(SecretBytes::copy_from_slice(line.as_bytes())))
        }
        (None, Some(text)) => Ok(Some(SecretBytes::copy_from_slice(text.as_bytes()))),
        (None, None) => Ok(None),
    }
}

fn print_report(report: &CopyReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:>10} {:>10}  sm3 (source = target)",
        "tree", "source", "target"
    )?;
    for (s, t) in report.source.iter().zip(&report.target) {
        writeln!(
            out,
            "{:<24} {:>10} {:>10}  {}",
            s.tree.name(),
            s.entries,
            t.entries,
            s.sm3
        )?;
    }
    let total: u64 = report.source.iter().map(|s| s.entries).sum();
    writeln!(
        out,
        "verified: {total} entries copied; every tree's count and SM3 checksum match on both sides"
    )
}

pub(crate) fn migrate_command(args: &MigrateArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match run(args, out) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            EXIT_FAILED
        }
    }
}

fn run(args: &MigrateArgs, out: &mut dyn Write) -> Result<(), String> {
    let from = sled_path(&args.from)?;
    let url = postgres_url(&args.to)?;
    let options = PostgresOptions {
        url,
        password: password(args.password_file.as_deref())?,
        schema: args.schema.clone(),
        pool_size: 4,
        // A large batch (1000 entries or 8 MiB) must fit in one statement's bound.
        timeout: Duration::from_secs(60),
    };
    let source = SledStore::open(&from).map_err(|e| {
        format!(
            "cannot open {} (is a server still running on it?): {e}",
            from.display()
        )
    })?;
    let target = PostgresStore::open(options)
        .map_err(|e| format!("cannot open the PostgreSQL store: {e}"))?;
    let _ = writeln!(
        out,
        "copying {} into {target:?} (bytes as stored; key material stays wrapped)",
        from.display()
    );
    let report = copy::copy_all(&source, &target).map_err(|e| e.to_string())?;
    print_report(&report, out).map_err(|e| format!("cannot write the report: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_their_backend() {
        // The error type is a message (a String); the message is what the operator sees.
        let usage = "--from must be sled:PATH (the store directory, DATA_DIR/store)";
        assert_eq!(sled_path("postgres:x").unwrap_err(), usage);
        assert_eq!(sled_path("sled:").unwrap_err(), usage);
        let dir = tempfile::tempdir().unwrap();
        let e = sled_path(&format!("sled:{}", dir.path().display())).unwrap_err();
        assert!(e.contains("not a sled store"), "{e}");
        assert_eq!(
            postgres_url("postgres:postgres://kms@db/kms").unwrap(),
            "postgres://kms@db/kms"
        );
        assert_eq!(
            postgres_url("postgres://kms@db/kms").unwrap(),
            "postgres://kms@db/kms"
        );
        assert_eq!(
            postgres_url("postgres:host=db user=kms").unwrap(),
            "host=db user=kms"
        );
        let usage = "--to must be postgres:URL (a URL without a password)";
        assert_eq!(postgres_url("sled:/x").unwrap_err(), usage);
        assert_eq!(postgres_url("postgres:").unwrap_err(), usage);
    }
}
