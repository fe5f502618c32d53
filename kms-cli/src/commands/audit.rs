//! `kms audit public-key | export | verify` and `kms inventory export | verify` (OPS-1, OPS-2).
//!
//! The exports come from the server; verification is offline: it needs only the exported file
//! and the audit public key (`kms_core::audit::verify`, `kms_core::verify_inventory`), never a
//! connection. A file that does not verify is exit code 1, like an invalid signature.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use kms_core::audit::{Broken, Line};
use kms_core::crypto::PublicKey;
use kms_core::keys::state::KeyState;
use kms_core::policy::Policy;
use kms_core::{Inventory, verify_inventory};
use kms_proto::v1::{ExportAuditRequest, ExportInventoryRequest, GetAuditPublicKeyRequest};
use serde_json::{Value, json};

use super::{Ctx, progress, system::partial_path};
use crate::error::{CliError, ExitKind};
use crate::files::{self, WriteOpts};
use crate::output::{fields, print_json, time};

/// How much of a broken line the error shows.
const SHOWN_LINE_CHARS: usize = 160;

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// True when `out` names a file (not absent, not `-`).
fn to_file(out: Option<&Path>) -> bool {
    out.is_some_and(|p| p != Path::new("-"))
}

const TEXT: WriteOpts = WriteOpts {
    base64: false,
    binary: false,
    private: false,
};

// ---------------------------------------------------------------------------------------------
// From the server.

pub(super) async fn public_key(ctx: &Ctx, out: Option<PathBuf>) -> Result<(), CliError> {
    let resp = ctx
        .audit()
        .get_audit_public_key(GetAuditPublicKeyRequest {})
        .await?
        .into_inner();
    let out = out.as_deref();
    if to_file(out) {
        files::write_output(out, resp.public_key_pem.as_bytes(), TEXT)?;
    }
    if ctx.json {
        let mut value = json!({
            "key_id": resp.key_id,
            "key_version": resp.key_version,
        });
        if to_file(out) {
            value["out"] = json!(out);
        } else {
            value["public_key_pem"] = json!(resp.public_key_pem);
            value["public_key_der"] = json!(files::base64(&resp.public_key_der));
        }
        return print_json(&value);
    }
    match out {
        Some(path) if to_file(out) => files::println(&format!(
            "audit public key (key {}, version {}) written to {}",
            resp.key_id,
            resp.key_version,
            path.display()
        )),
        Some(_) | None => files::write_stdout(resp.public_key_pem.as_bytes()),
    }
}

/// Lines of each kind in a run of exported lines.
#[derive(Default)]
struct Counts {
    records: u64,
    checkpoints: u64,
    bytes: u64,
}

impl Counts {
    fn add(&mut self, chunk: &str) {
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        for line in chunk.lines() {
            match serde_json::from_str::<Line>(line) {
                Ok(Line::Record(_)) => self.records += 1,
                Ok(Line::Checkpoint(_)) => self.checkpoints += 1,
                // Counting is for the summary only; `kms audit verify` judges the lines.
                Err(_) => {}
            }
        }
    }
}

pub(super) async fn export(ctx: &Ctx, out: Option<PathBuf>) -> Result<(), CliError> {
    let mut stream = ctx
        .audit()
        .export_audit(ExportAuditRequest {})
        .await?
        .into_inner();
    let mut counts = Counts::default();
    let out = out.filter(|p| p != Path::new("-"));
    let Some(out) = out else {
        // To stdout as it arrives: the lines are JSON already, with or without --json.
        while let Some(chunk) = stream.message().await? {
            counts.add(&chunk.lines);
            files::write_stdout(chunk.lines.as_bytes())?;
        }
        return Ok(());
    };
    // Written beside the target and renamed at the end, so a failed export leaves no file that
    // looks complete (a cut trail would not verify anyway, but need not be left to confuse).
    let partial = partial_path(&out);
    let partial_shown = shown(&partial);
    let mut file = fs::File::create(&partial).map_err(|e| CliError::io(&partial_shown, &e))?;
    let bar = progress(None, "audit export");
    let result = async {
        while let Some(chunk) = stream.message().await? {
            file.write_all(chunk.lines.as_bytes())
                .map_err(|e| CliError::io(&partial_shown, &e))?;
            counts.add(&chunk.lines);
            bar.inc(u64::try_from(chunk.lines.len()).unwrap_or(0));
        }
        file.sync_all()
            .map_err(|e| CliError::io(&partial_shown, &e))?;
        fs::rename(&partial, &out).map_err(|e| CliError::io(&shown(&out), &e))
    }
    .await;
    bar.finish_and_clear();
    if let Err(e) = result {
        // Best effort: the partial file is useless either way.
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    if ctx.json {
        print_json(&json!({
            "out": out,
            "records": counts.records,
            "checkpoints": counts.checkpoints,
            "bytes": counts.bytes,
        }))
    } else {
        files::println(&format!(
            "audit trail written to {}: {}, {}; check it with `kms audit verify {} --public-key PEM`",
            out.display(),
            plural(counts.records, "record"),
            plural(counts.checkpoints, "signed checkpoint"),
            out.display()
        ))
    }
}

pub(super) async fn inventory_export(ctx: &Ctx, out: Option<PathBuf>) -> Result<(), CliError> {
    let resp = ctx
        .audit()
        .export_inventory(ExportInventoryRequest {})
        .await?
        .into_inner();
    let mut text = resp.json;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let out = out.as_deref();
    if !to_file(out) {
        // The inventory is JSON already, with or without --json.
        return files::write_stdout(text.as_bytes());
    }
    files::write_output(out, text.as_bytes(), TEXT)?;
    // What the server says it signed, for the summary line only (verification is offline).
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let keys = value["keys"].as_array().map_or(0, Vec::len);
    let signer = value["signed_by_key_id"].as_str().unwrap_or("?");
    let version = value["signed_by_key_version"].as_u64().unwrap_or(0);
    if ctx.json {
        print_json(&json!({
            "out": out,
            "keys": keys,
            "signed_by_key_id": signer,
            "signed_by_key_version": version,
        }))
    } else {
        files::println(&format!(
            "inventory of {} written to {} (signed by audit key {signer}, version {version})",
            plural(u64::try_from(keys).unwrap_or(u64::MAX), "key"),
            out.map(Path::display)
                .map_or_else(String::new, |d| d.to_string())
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Offline.

/// Reads the audit public key from a PEM file.
fn load_public_key(path: &Path) -> Result<PublicKey, CliError> {
    let raw = files::read_input(Some(path))?;
    let text = std::str::from_utf8(&raw).map_err(|_| {
        CliError::usage(format!("{} is not a PEM file", path.display()))
            .with_hint("give the PEM that `kms audit public-key --out PEM` wrote")
    })?;
    PublicKey::from_spki_pem(Policy::default(), text).map_err(|e| {
        CliError::usage(format!(
            "{} is not a usable public key: {e}",
            path.display()
        ))
        .with_hint("give the PEM that `kms audit public-key --out PEM` wrote")
    })
}

fn fingerprint(public: &PublicKey) -> String {
    hex::encode(public.fingerprint_sm3())
}

/// The file as text; bytes that are not UTF-8 break the line they are on.
fn read_text(path: &Path) -> Result<Result<String, Broken>, CliError> {
    let raw = files::read_input(Some(path))?;
    match String::from_utf8(raw.to_vec()) {
        Ok(text) => Ok(Ok(text)),
        Err(e) => {
            let good = e.utf8_error().valid_up_to();
            let line = raw
                .get(..good)
                .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
                + 1;
            Ok(Err(Broken {
                line,
                problem: format!("not UTF-8 text (byte {} of the file)", good + 1),
            }))
        }
    }
}

/// The first `SHOWN_LINE_CHARS` characters of line `n` (1-based), for the error.
fn excerpt(text: &str, n: usize) -> Option<String> {
    let line = text.lines().nth(n.checked_sub(1)?)?;
    let mut out: String = line.chars().take(SHOWN_LINE_CHARS).collect();
    if line.chars().count() > SHOWN_LINE_CHARS {
        out.push('…');
    }
    Some(out)
}

pub(super) fn verify_trail(file: &Path, public_key: &Path, json: bool) -> Result<(), CliError> {
    let public = load_public_key(public_key)?;
    let text = read_text(file)?;
    let outcome = text
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|t| kms_core::audit::verify(t, &public));
    match outcome {
        Ok(v) => {
            if json {
                return print_json(&json!({
                    "valid": true,
                    "file": file,
                    "records": v.records,
                    "checkpoints": v.checkpoints,
                    "last_hash": v.last_hash,
                    "records_by_node": v.records_by_node,
                    "public_key_sm3": fingerprint(&public),
                }));
            }
            files::println(&format!(
                "audit trail verified: {}, {}, unbroken to the closing checkpoint\n{}",
                plural(v.records, "record"),
                plural(v.checkpoints, "signed checkpoint"),
                fields(&[
                    ("file", shown(file)),
                    ("records by node", nodes_line(&v.records_by_node)),
                    ("last record hash (SM3)", v.last_hash),
                    ("audit key fingerprint (SM3)", fingerprint(&public)),
                ])
                .trim_end()
            ))
        }
        Err(broken) => {
            let shown_line = broken.line;
            let line_text = text.as_ref().ok().and_then(|t| excerpt(t, shown_line));
            if json {
                print_json(&json!({
                    "valid": false,
                    "file": file,
                    "line": broken.line,
                    "problem": broken.problem,
                    "text": line_text,
                }))?;
            }
            let mut hint = format!(
                "the trail was changed after it was exported, or {} is not the key that signed it",
                public_key.display()
            );
            if let Some(t) = line_text {
                hint.push_str(&format!("; line {shown_line} reads: {t}"));
            }
            Err(CliError::new(
                ExitKind::VerificationFailed,
                format!(
                    "the audit trail does not verify: {} line {}: {}",
                    file.display(),
                    broken.line,
                    broken.problem
                ),
            )
            .with_hint(hint))
        }
    }
}

/// "3 nodes: 1a2b3c4d 120, 5e6f7a8b 98, …": several servers on one database write one chain,
/// each record naming the node (server process) that wrote it.
fn nodes_line(nodes: &std::collections::BTreeMap<String, u64>) -> String {
    let each: Vec<String> = nodes.iter().map(|(n, c)| format!("{n} {c}")).collect();
    format!(
        "{}: {}",
        plural(u64::try_from(nodes.len()).unwrap_or(u64::MAX), "node"),
        each.join(", ")
    )
}

/// Where the signed summary disagrees with the signed key list (a server bug, but an auditor
/// should not have to find it by hand).
fn inconsistencies(inv: &Inventory) -> Vec<String> {
    let mut found = Vec::new();
    let n = u64::try_from(inv.keys.len()).unwrap_or(u64::MAX);
    let s = &inv.summary;
    if s.total_keys != n {
        found.push(format!(
            "the summary counts {} keys, the list holds {n}",
            s.total_keys
        ));
    }
    for (what, counts) in [("algorithm", &s.by_algorithm), ("state", &s.by_state)] {
        let sum: u64 = counts.values().sum();
        if sum != n {
            found.push(format!("the counts by {what} add up to {sum}, not {n}"));
        }
    }
    let ids = |pred: &dyn Fn(&kms_core::InventoryKey) -> bool| -> BTreeSet<&str> {
        inv.keys
            .iter()
            .filter(|k| pred(k))
            .map(|k| k.key_id.as_str())
            .collect()
    };
    let checks: [(&str, BTreeSet<&str>, BTreeSet<&str>); 3] = [
        (
            "overdue for rotation",
            listed(&s.overdue_for_rotation),
            ids(&|k| k.overdue_for_rotation),
        ),
        (
            "forbidden by policy",
            listed(&s.forbidden_by_policy),
            ids(&|k| !k.allowed_by_policy),
        ),
        (
            "compromised",
            s.compromised.iter().map(|c| c.key_id.as_str()).collect(),
            ids(&|k| k.state == KeyState::Compromised || k.compromised_at.is_some()),
        ),
    ];
    for (what, summary, keys) in checks {
        if summary != keys {
            found.push(format!(
                "the summary lists {} key(s) as {what}, the key list marks {}",
                summary.len(),
                keys.len()
            ));
        }
    }
    if s.all_keys_allowed_by_policy != s.forbidden_by_policy.is_empty() {
        found.push(
            "all_keys_allowed_by_policy contradicts the list of keys forbidden by policy"
                .to_owned(),
        );
    }
    found
}

fn listed(v: &[String]) -> BTreeSet<&str> {
    v.iter().map(String::as_str).collect()
}

/// `1 record`, `2 records`.
fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `name n, name n`; names as the rest of the CLI shows them (`PENDING_DESTRUCTION` →
/// `pending-destruction`; algorithm names are lower case already).
fn counts_line(counts: &std::collections::BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "-".to_owned();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{} {v}", k.to_ascii_lowercase().replace('_', "-")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ids_line(ids: &[String]) -> String {
    if ids.is_empty() {
        "0".to_owned()
    } else {
        format!("{}: {}", ids.len(), ids.join(", "))
    }
}

fn ms_time(ms: Option<u64>) -> String {
    ms.map_or_else(|| "never".to_owned(), |ms| time(ms / 1000))
}

pub(super) fn verify_inventory_file(
    file: &Path,
    public_key: &Path,
    json: bool,
) -> Result<(), CliError> {
    let public = load_public_key(public_key)?;
    let problem = match read_text(file)? {
        Err(broken) => format!("line {}: {}", broken.line, broken.problem),
        Ok(text) => match verify_inventory(&text, &public) {
            Ok(inv) => {
                let found = inconsistencies(&inv);
                if found.is_empty() {
                    return print_inventory(file, &public, &inv, json);
                }
                format!(
                    "it is signed, but its summary disagrees with its key list: {}",
                    found.join("; ")
                )
            }
            Err(e) => e.0,
        },
    };
    if json {
        print_json(&json!({ "valid": false, "file": file, "problem": problem }))?;
    }
    Err(CliError::new(
        ExitKind::VerificationFailed,
        format!(
            "the inventory does not verify: {}: {problem}",
            file.display()
        ),
    )
    .with_hint(format!(
        "the inventory was changed after it was exported, or {} is not the key that signed it",
        public_key.display()
    )))
}

fn print_inventory(
    file: &Path,
    public: &PublicKey,
    inv: &Inventory,
    json: bool,
) -> Result<(), CliError> {
    let s = &inv.summary;
    if json {
        return print_json(&json!({
            "valid": true,
            "file": file,
            "generated_at": inv.generated_at,
            "policy": inv.policy,
            "signed_by_key_id": inv.signed_by_key_id,
            "signed_by_key_version": inv.signed_by_key_version,
            "public_key_sm3": fingerprint(public),
            "keys": inv.keys.len(),
            "by_algorithm": s.by_algorithm,
            "by_state": s.by_state,
            "overdue_for_rotation": s.overdue_for_rotation,
            "compromised": s.compromised,
            "without_rotation_period": s.without_rotation_period,
            "forbidden_by_policy": s.forbidden_by_policy,
            "all_keys_allowed_by_policy": s.all_keys_allowed_by_policy,
        }));
    }
    let compromised = if s.compromised.is_empty() {
        "0".to_owned()
    } else {
        let each: Vec<String> = s
            .compromised
            .iter()
            .map(|c| {
                format!(
                    "{} (compromised {}, last use {})",
                    c.key_id,
                    c.compromised_at.map_or_else(|| "-".to_owned(), time),
                    ms_time(c.last_use_ms)
                )
            })
            .collect();
        format!("{}: {}", each.len(), each.join(", "))
    };
    let forbidden = if s.forbidden_by_policy.is_empty() && s.all_keys_allowed_by_policy {
        format!(
            "none: every key's algorithm is allowed by the {} policy",
            inv.policy
        )
    } else {
        ids_line(&s.forbidden_by_policy)
    };
    let text = fields(&[
        ("file", shown(file)),
        ("generated", time(inv.generated_at)),
        ("policy", inv.policy.clone()),
        (
            "signed by",
            format!(
                "audit key {} version {}",
                inv.signed_by_key_id, inv.signed_by_key_version
            ),
        ),
        ("audit key fingerprint (SM3)", fingerprint(public)),
        ("keys", inv.keys.len().to_string()),
        ("by algorithm", counts_line(&s.by_algorithm)),
        ("by state", counts_line(&s.by_state)),
        ("overdue for rotation", ids_line(&s.overdue_for_rotation)),
        ("compromised", compromised),
        (
            "without rotation period",
            s.without_rotation_period.len().to_string(),
        ),
        ("forbidden by policy", forbidden),
    ]);
    files::println(&format!("inventory verified\n{}", text.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_one_based() {
        let text = "first\nsecond\n";
        assert_eq!(excerpt(text, 1).as_deref(), Some("first"));
        assert_eq!(excerpt(text, 2).as_deref(), Some("second"));
        assert_eq!(excerpt(text, 3), None);
        assert_eq!(excerpt(text, 0), None);
        let long = "x".repeat(SHOWN_LINE_CHARS + 10);
        let shown = excerpt(&long, 1).unwrap();
        assert_eq!(shown.chars().count(), SHOWN_LINE_CHARS + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn bytes_that_are_not_utf8_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        fs::write(&path, b"{\"a\":1}\n{\"b\":\xff}\n").unwrap();
        let broken = read_text(&path).unwrap().unwrap_err();
        assert_eq!(broken.line, 2);
        assert!(broken.problem.contains("not UTF-8"), "{}", broken.problem);
    }

    #[test]
    fn plurals_and_count_lines() {
        assert_eq!(plural(1, "record"), "1 record");
        assert_eq!(plural(0, "signed checkpoint"), "0 signed checkpoints");
        let counts: std::collections::BTreeMap<String, u64> = [
            ("ENABLED".to_owned(), 2),
            ("PENDING_DESTRUCTION".to_owned(), 1),
        ]
        .into();
        assert_eq!(counts_line(&counts), "enabled 2, pending-destruction 1");
        assert_eq!(counts_line(&std::collections::BTreeMap::new()), "-");
    }

    #[test]
    fn nodes_line_names_every_writer() {
        let nodes: std::collections::BTreeMap<String, u64> =
            [("1a2b3c4d".to_owned(), 120), ("5e6f7a8b".to_owned(), 98)].into();
        assert_eq!(nodes_line(&nodes), "2 nodes: 1a2b3c4d 120, 5e6f7a8b 98");
        let one: std::collections::BTreeMap<String, u64> = [("n".to_owned(), 1)].into();
        assert_eq!(nodes_line(&one), "1 node: n 1");
    }

    #[test]
    fn counts_records_and_checkpoints() {
        let mut counts = Counts::default();
        counts.add("not json\n");
        assert_eq!((counts.records, counts.checkpoints), (0, 0));
        assert_eq!(counts.bytes, 9);
    }
}
