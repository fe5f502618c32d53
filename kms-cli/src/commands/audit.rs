//! `kms audit public-key | export | verify` and `kms inventory export | verify` (OPS-1, OPS-2).
//!
//! The exports come from the server; verification is offline: it needs only the exported files
//! and the audit public key (`kms_core::audit::verify_files`, `kms_core::verify_inventory`),
//! never a connection. A file that does not verify is exit code 1, like an invalid signature.
//! Audit files are streamed (archive segments and exports reach hundreds of MB); several are
//! verified as one trail, each continuing the one before.

use std::fs;
use std::io::{self, BufRead, BufReader, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use kms_core::audit::{AuditKeys, Broken, ChainError, FileChain, Line, Start, VerifiedFiles};
use kms_core::crypto::PublicKey;
use kms_core::policy::{Policy, PolicyMode};
use kms_core::{Inventory, InventoryError, verify_inventory};
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
    // Every version, oldest first, as one PEM bundle: `kms audit verify` takes it whole, and a
    // trail that spans rotations needs every version (or the first, with the trail's
    // transition records). A server that lists no versions gives its one key.
    let bundle: String = if resp.versions.is_empty() {
        resp.public_key_pem.clone()
    } else {
        resp.versions
            .iter()
            .map(|v| v.public_key_pem.as_str())
            .collect()
    };
    let out = out.as_deref();
    if to_file(out) {
        files::write_output(out, bundle.as_bytes(), TEXT)?;
    }
    let versions: Vec<Value> = resp
        .versions
        .iter()
        .map(|v| {
            json!({
                "version": v.version,
                "fingerprint_sm3": v.fingerprint_sm3,
                "created_at": v.created_at,
                "public_key_pem": v.public_key_pem,
            })
        })
        .collect();
    if ctx.json {
        let mut value = json!({
            "key_id": resp.key_id,
            "key_version": resp.key_version,
            "versions": versions,
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
            "audit public key (key {}, {}, newest {}) written to {}",
            resp.key_id,
            plural(
                u64::try_from(resp.versions.len().max(1)).unwrap_or(u64::MAX),
                "version"
            ),
            resp.key_version,
            path.display()
        )),
        Some(_) | None => files::write_stdout(bundle.as_bytes()),
    }
}

/// Lines of each kind in a run of exported lines.
#[derive(Default)]
struct Counts {
    records: u64,
    checkpoints: u64,
    bytes: u64,
    /// The record an anchored export continues after (its earlier records are archived).
    anchored_after: Option<u64>,
}

impl Counts {
    fn add(&mut self, chunk: &str) {
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        for line in chunk.lines() {
            match serde_json::from_str::<Line>(line) {
                Ok(Line::Record(_)) => self.records += 1,
                Ok(Line::Checkpoint(cp)) => {
                    if self.records == 0 && self.checkpoints == 0 && cp.seq > 0 {
                        self.anchored_after = Some(cp.seq);
                    }
                    self.checkpoints += 1;
                }
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
    let special = files::is_special(&out);
    let partial = if special {
        out.clone()
    } else {
        partial_path(&out)
    };
    let partial_shown = shown(&partial);
    let mut file = if special {
        files::open_special(&out)?
    } else {
        fs::File::create(&partial).map_err(|e| CliError::io(&partial_shown, &e))?
    };
    let bar = progress(None, "audit export");
    let result = async {
        while let Some(chunk) = stream.message().await? {
            file.write_all(chunk.lines.as_bytes())
                .map_err(|e| CliError::io(&partial_shown, &e))?;
            counts.add(&chunk.lines);
            bar.inc(u64::try_from(chunk.lines.len()).unwrap_or(0));
        }
        if special {
            return Ok(());
        }
        file.sync_all()
            .map_err(|e| CliError::io(&partial_shown, &e))?;
        fs::rename(&partial, &out).map_err(|e| CliError::io(&shown(&out), &e))
    }
    .await;
    bar.finish_and_clear();
    if let Err(e) = result {
        // Best effort: the partial file is useless either way. A special file is the output
        // itself (`/dev/null`): never removed.
        if !special {
            let _ = fs::remove_file(&partial);
        }
        return Err(e);
    }
    if ctx.json {
        print_json(&json!({
            "out": out,
            "records": counts.records,
            "checkpoints": counts.checkpoints,
            "bytes": counts.bytes,
            "continues_after_record": counts.anchored_after,
        }))
    } else {
        let check = match counts.anchored_after {
            // The live trail starts where the last archive segment ended: the segments must be
            // verified with it for the trail to be complete from its first record.
            Some(seq) => format!(
                "it continues after record {seq}, which is in the server's audit archive \
                 segments; check the whole trail with `kms audit verify ARCHIVE/audit-*.jsonl {} \
                 --public-key PEM` (or this file alone with --from-anchor)",
                out.display()
            ),
            None => format!(
                "check it with `kms audit verify {} --public-key PEM`",
                out.display()
            ),
        };
        files::println(&format!(
            "audit trail written to {}: {}, {}; {check}",
            out.display(),
            plural(counts.records, "record"),
            plural(counts.checkpoints, "signed checkpoint"),
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

const PEM_END: &str = "-----END PUBLIC KEY-----";

/// Reads the audit public keys from a PEM file: one key, or the bundle of every version that
/// `kms audit public-key` writes (PEM blocks one after another, oldest first).
fn load_public_keys(path: &Path) -> Result<AuditKeys, CliError> {
    let raw = files::read_input(Some(path))?;
    let hint = "give the PEM that `kms audit public-key --out PEM` wrote (every version), or \
                its first block (the oldest version)";
    let text = std::str::from_utf8(&raw).map_err(|_| {
        CliError::usage(format!("{} is not a PEM file", path.display())).with_hint(hint)
    })?;
    let unusable = |e: kms_core::Error| {
        CliError::usage(format!(
            "{} is not a usable public key: {e}",
            path.display()
        ))
        .with_hint(hint)
    };
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find(PEM_END) {
        let (block, after) = rest.split_at(end + PEM_END.len());
        keys.push(
            PublicKey::from_spki_pem(Policy::from_config(PolicyMode::GmOnly), block.trim())
                .map_err(unusable)?,
        );
        rest = after;
    }
    if keys.is_empty() {
        // Not one block: the parser says what is wrong with the text.
        keys.push(
            PublicKey::from_spki_pem(Policy::from_config(PolicyMode::GmOnly), text)
                .map_err(unusable)?,
        );
    }
    Ok(AuditKeys::new(keys))
}

fn fingerprint(public: &PublicKey) -> String {
    hex::encode(public.fingerprint_sm3())
}

fn fingerprints(keys: &AuditKeys) -> String {
    keys.keys()
        .iter()
        .map(fingerprint)
        .collect::<Vec<_>>()
        .join(", ")
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

/// The first `SHOWN_LINE_CHARS` characters of line `n` (1-based), for the error. Reads only as
/// far as that line, and at most a few bytes per character of it.
fn excerpt(mut reader: impl BufRead, n: usize) -> Option<String> {
    for _ in 1..n {
        if reader.skip_until(b'\n').ok()? == 0 {
            return None;
        }
    }
    n.checked_sub(1)?;
    // A character is at most 4 bytes: enough for SHOWN_LINE_CHARS of them and one more.
    let cap = SHOWN_LINE_CHARS * 4 + 4;
    let mut buf = Vec::new();
    let read = reader
        .by_ref()
        .take(u64::try_from(cap).unwrap_or(u64::MAX))
        .read_until(b'\n', &mut buf)
        .ok()?;
    if read == 0 {
        return None;
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let mut out: String = line.chars().take(SHOWN_LINE_CHARS).collect();
    if line.chars().count() > SHOWN_LINE_CHARS {
        out.push('…');
    }
    Some(out)
}

/// The excerpt of line `n` of a file (`None` for stdin, which cannot be read again).
fn excerpt_of(path: &Path, n: usize) -> Option<String> {
    if path == Path::new("-") {
        return None;
    }
    excerpt(BufReader::new(fs::File::open(path).ok()?), n)
}

/// A trail file (or stdin for `-`), read as a stream: files reach hundreds of MB.
fn open_trail(path: &Path) -> Result<Box<dyn BufRead>, CliError> {
    if path == Path::new("-") {
        if io::stdin().is_terminal() {
            eprintln!("(reading stdin until end of input: Ctrl-D)");
        }
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = fs::File::open(path).map_err(|e| CliError::io(&shown(path), &e))?;
    Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
}

/// `kms audit verify FILE... --public-key PEM [--from-anchor]`: each file alone, streamed, and
/// the files as one trail in the order given (`kms_core::audit::verify_files`).
pub(super) fn verify_trail(
    paths: &[PathBuf],
    public_key: &Path,
    from_anchor: bool,
    json: bool,
) -> Result<(), CliError> {
    let keys = load_public_keys(public_key)?;
    if paths.iter().filter(|p| *p == Path::new("-")).count() > 1 {
        return Err(CliError::usage("stdin (`-`) can be given only once"));
    }
    let start = if from_anchor {
        Start::GenesisOrAnchor
    } else {
        Start::Genesis
    };
    let mut chain = FileChain::new(start, &keys);
    for path in paths {
        let reader = open_trail(path)?;
        if let Err(e) = chain.add(&shown(path), reader) {
            return chain_failure(path, &e, public_key, json);
        }
    }
    match chain.finish() {
        Ok(v) => print_verified(&v, &keys, json),
        Err(e) => Err(CliError::usage(e.to_string())),
    }
}

fn print_verified(v: &VerifiedFiles, keys: &AuditKeys, json: bool) -> Result<(), CliError> {
    let anchor_seq = v.anchor.as_ref().map(|a| a.seq);
    let transitions: Vec<Value> = v
        .transitions
        .iter()
        .map(|t| {
            json!({
                "from_version": t.from_version,
                "to_version": t.to_version,
                "to_fingerprint_sm3": t.to_fingerprint,
            })
        })
        .collect();
    if json {
        let files: Vec<Value> = v
            .files
            .iter()
            .map(|f| {
                json!({
                    "file": f.name,
                    "first_seq": f.verified.first_seq(),
                    "last_seq": f.verified.last_seq,
                    "records": f.verified.records,
                    "checkpoints": f.verified.checkpoints,
                    "anchor_seq": f.verified.anchor.as_ref().map(|a| a.seq),
                })
            })
            .collect();
        let mut value = json!({
            "valid": true,
            "files": files,
            "records": v.records,
            "checkpoints": v.checkpoints,
            "first_seq": v.first_seq,
            "last_seq": v.last_seq,
            "complete_from_genesis": v.complete_from_genesis,
            "anchor_seq": anchor_seq,
            "last_hash": v.last_hash,
            "records_by_node": v.records_by_node,
            "public_key_sm3": keys.keys().first().map(fingerprint),
            "public_keys_sm3": keys.keys().iter().map(fingerprint).collect::<Vec<_>>(),
            "key_transitions": transitions,
        });
        if let [one] = v.files.as_slice() {
            value["file"] = json!(one.name);
        }
        return print_json(&value);
    }
    let heading = if v.files.len() == 1 {
        format!(
            "audit trail verified: {}, {}, unbroken to the closing checkpoint",
            plural(v.records, "record"),
            plural(v.checkpoints, "signed checkpoint"),
        )
    } else {
        format!(
            "audit trail verified: {}, {}, {}, each file unbroken to its closing checkpoint and \
             continuing the one before",
            plural(u64::try_from(v.files.len()).unwrap_or(u64::MAX), "file"),
            plural(v.records, "record"),
            plural(v.checkpoints, "signed checkpoint"),
        )
    };
    let names: Vec<&str> = v.files.iter().map(|f| f.name.as_str()).collect();
    let (file_field, file_value) = match names.as_slice() {
        [one] => ("file", (*one).to_owned()),
        [first, .., last] if names.len() > 4 => (
            "files",
            format!("{}: {first} … {last} (in this order)", names.len()),
        ),
        many => (
            "files",
            format!("{}: {} (in this order)", many.len(), many.join(", ")),
        ),
    };
    let records = if v.last_seq >= v.first_seq {
        format!("{} to {}", v.first_seq, v.last_seq)
    } else {
        "none".to_owned()
    };
    let complete = match anchor_seq {
        None => "yes: every record from the genesis (record 1) is verified".to_owned(),
        Some(n) => format!(
            "no: starts after record {n} (earlier records are in archive segments not given here)"
        ),
    };
    files::println(&format!(
        "{heading}\n{}",
        fields(&[
            (file_field, file_value),
            ("records", records),
            ("complete from genesis", complete),
            ("records by node", nodes_line(&v.records_by_node)),
            ("last record hash (SM3)", v.last_hash.clone()),
            ("audit key fingerprint (SM3)", fingerprints(keys)),
            ("audit key transitions", transitions_line(v)),
        ])
        .trim_end()
    ))
}

/// The error for a chain that does not verify (exit code 1), after the JSON report if asked.
fn chain_failure(
    path: &Path,
    e: &ChainError,
    public_key: &Path,
    json: bool,
) -> Result<(), CliError> {
    let (line, line_text) = match e {
        ChainError::Broken { broken, .. } => (Some(broken.line), excerpt_of(path, broken.line)),
        ChainError::NoFiles
        | ChainError::StartsAtAnchor { .. }
        | ChainError::DoesNotContinue { .. } => (None, None),
    };
    if json {
        let mut value = json!({
            "valid": false,
            "file": path,
            "line": line,
            "problem": match e {
                ChainError::Broken { broken, .. } => broken.problem.clone(),
                ChainError::NoFiles
                | ChainError::StartsAtAnchor { .. }
                | ChainError::DoesNotContinue { .. } => e.to_string(),
            },
            "text": line_text,
        });
        if let ChainError::DoesNotContinue { previous, .. } = e {
            value["previous_file"] = json!(previous);
        }
        print_json(&value)?;
    }
    let error = match e {
        ChainError::Broken { broken, .. } => {
            let mut hint = format!(
                "the trail was changed after it was exported, or {} does not hold the key that \
                 signed it (after a rotation of the audit key, give the bundle `kms audit \
                 public-key --out PEM` writes: every version, or its first, the oldest)",
                public_key.display()
            );
            if let Some(t) = line_text {
                hint.push_str(&format!("; line {} reads: {t}", broken.line));
            }
            CliError::new(
                ExitKind::VerificationFailed,
                format!(
                    "the audit trail does not verify: {} line {}: {}",
                    path.display(),
                    broken.line,
                    broken.problem
                ),
            )
            .with_hint(hint)
        }
        ChainError::StartsAtAnchor { anchor_seq, .. } => CliError::new(
            ExitKind::VerificationFailed,
            format!("the audit files are incomplete: {e}"),
        )
        .with_hint(format!(
            "give the archive segments before it first (segment names sort in chain order: \
             `kms audit verify archive/audit-*.jsonl live.jsonl --public-key PEM`), or pass \
             --from-anchor to verify only the records after record {anchor_seq}"
        )),
        ChainError::DoesNotContinue { .. } => CliError::new(
            ExitKind::VerificationFailed,
            format!("the audit files do not form one trail: {e}"),
        )
        .with_hint(
            "give every file of the trail once, in chain order: the archive segments oldest \
             first (`archive/audit-*.jsonl` sorts that way), then the live export",
        ),
        ChainError::NoFiles => CliError::usage(e.to_string()),
    };
    Err(error)
}

/// "none", or "2: version 1 → 2 (record 40), 2 → 3 (record 97)".
fn transitions_line(v: &VerifiedFiles) -> String {
    if v.transitions.is_empty() {
        return "none".to_owned();
    }
    let each: Vec<String> = v
        .transitions
        .iter()
        .map(|t| format!("version {} → {}", t.from_version, t.to_version))
        .collect();
    format!("{}: {}", each.len(), each.join(", "))
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
    let keys = load_public_keys(public_key)?;
    let (problem, signed_but_inconsistent) = match read_text(file)? {
        Err(broken) => (format!("line {}: {}", broken.line, broken.problem), false),
        Ok(text) => {
            // The inventory is signed by the newest version: tried first; the error reported
            // is the newest key's unless another key finds the signature good.
            let mut first_error = None;
            for public in keys.keys().iter().rev() {
                match verify_inventory(&text, public) {
                    Ok(inv) => return print_inventory(file, public, &inv, json),
                    Err(e @ InventoryError::Inconsistent(_)) => {
                        first_error = Some((e.to_string(), true));
                        break;
                    }
                    Err(e) => {
                        first_error.get_or_insert((e.to_string(), false));
                    }
                }
            }
            first_error.unwrap_or_else(|| ("no audit public key given".to_owned(), false))
        }
    };
    if json {
        print_json(&json!({ "valid": false, "file": file, "problem": problem }))?;
    }
    let hint = if signed_but_inconsistent {
        "the signature is good, so the server that signed it is at fault: keep the file and \
         report it; `kms key list` shows the keys as they are now"
            .to_owned()
    } else {
        format!(
            "the inventory was changed after it was exported, or {} is not the key that signed it",
            public_key.display()
        )
    };
    Err(CliError::new(
        ExitKind::VerificationFailed,
        format!(
            "the inventory does not verify: {}: {problem}",
            file.display()
        ),
    )
    .with_hint(hint))
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
        let text = b"first\r\nsecond\n".as_slice();
        assert_eq!(excerpt(text, 1).as_deref(), Some("first"));
        assert_eq!(excerpt(text, 2).as_deref(), Some("second"));
        assert_eq!(excerpt(text, 3), None);
        assert_eq!(excerpt(text, 0), None);
        let long = "x".repeat(SHOWN_LINE_CHARS + 10);
        let shown = excerpt(long.as_bytes(), 1).unwrap();
        assert_eq!(shown.chars().count(), SHOWN_LINE_CHARS + 1);
        assert!(shown.ends_with('…'));
        // Wide characters: the excerpt counts characters, not bytes.
        let wide = format!("a\n{}\n", "审".repeat(SHOWN_LINE_CHARS * 3));
        let shown = excerpt(wide.as_bytes(), 2).unwrap();
        assert_eq!(shown.chars().count(), SHOWN_LINE_CHARS + 1);
        assert!(shown.starts_with('审') && shown.ends_with('…'));
        let exact = "y".repeat(SHOWN_LINE_CHARS);
        assert_eq!(excerpt(exact.as_bytes(), 1), Some(exact));
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
