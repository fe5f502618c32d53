//! `kms status | init | unseal | seal | backup | restore`.

use std::fs;
use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use kms_proto::v1::{
    BackupRequest, InitRequest, RestoreChunk, SealRequest, StatusRequest, UnsealRequest,
};
use serde::Serialize;
use serde_json::json;
use tokio_stream::StreamExt as _;
use zeroize::Zeroizing;

use super::{Ctx, progress};
use crate::error::CliError;
use crate::files;
use crate::output::{fields, print_json};

/// Restore uploads the backup in pieces this size.
const RESTORE_CHUNK: usize = 64 * 1024;

#[derive(Serialize)]
struct StatusJson {
    initialized: bool,
    sealed: bool,
    shares: u32,
    threshold: u32,
    unseal_progress: u32,
    policy: String,
    store: String,
    version: String,
    caller_subject: String,
    caller_role: String,
}

pub(super) async fn status(ctx: &Ctx) -> Result<(), CliError> {
    let s = ctx.system().status(StatusRequest {}).await?.into_inner();
    if ctx.json {
        return print_json(&StatusJson {
            initialized: s.initialized,
            sealed: s.sealed,
            shares: s.shares,
            threshold: s.threshold,
            unseal_progress: s.unseal_progress,
            policy: s.policy,
            store: s.store,
            version: s.version,
            caller_subject: s.caller_subject,
            caller_role: s.caller_role,
        });
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let unseal = if !s.initialized {
        "-".to_owned()
    } else if s.sealed {
        format!(
            "{} of {} shares given ({} made)",
            s.unseal_progress, s.threshold, s.shares
        )
    } else {
        format!("{} of {} shares unseal it", s.threshold, s.shares)
    };
    let caller = if s.caller_subject.is_empty() {
        "(not registered)".to_owned()
    } else if s.caller_role.is_empty() {
        s.caller_subject
    } else {
        format!("{} ({})", s.caller_subject, s.caller_role)
    };
    let mut text = fields(&[
        ("initialized", yes_no(s.initialized)),
        ("sealed", yes_no(s.sealed)),
        ("unseal", unseal),
        ("policy", s.policy),
        ("store", s.store),
        ("version", s.version),
        ("you", caller),
    ]);
    if !s.initialized {
        text.push_str("\nnext: `kms init --shares N --threshold M`\n");
    } else if s.sealed {
        text.push_str("\nnext: `kms unseal` (each administrator gives a share)\n");
    }
    files::println(text.trim_end())
}

pub(super) async fn init(
    ctx: &Ctx,
    shares: u32,
    threshold: u32,
    admin: Option<String>,
    share_dir: Option<PathBuf>,
) -> Result<(), CliError> {
    if threshold > shares {
        return Err(CliError::usage(format!(
            "--threshold {threshold} is more than --shares {shares}"
        ))
        .with_hint("the threshold is how many of the shares it takes to unseal"));
    }
    let resp = ctx
        .system()
        .init(InitRequest {
            shares,
            threshold,
            admin_subject: admin.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let made: Vec<Zeroizing<String>> = resp.shares.into_iter().map(Zeroizing::new).collect();

    let mut share_files = Vec::new();
    if let Some(dir) = &share_dir {
        fs::create_dir_all(dir).map_err(|e| CliError::io(&dir.display().to_string(), &e))?;
        for (i, share) in made.iter().enumerate() {
            let path = dir.join(format!("share-{}.txt", i + 1));
            let line = Zeroizing::new(format!("{}\n", share.as_str()));
            files::write_file(&path, line.as_bytes(), true)?;
            share_files.push(path);
        }
    }

    if ctx.json {
        let mut value = json!({
            "admin_subject": resp.admin_subject,
            "threshold": resp.threshold,
        });
        if share_dir.is_some() {
            value["share_files"] = json!(share_files);
        } else {
            let plain: Vec<&str> = made.iter().map(|s| s.as_str()).collect();
            value["shares"] = json!(plain);
        }
        return print_json(&value);
    }
    let mut text = format!(
        "initialised: {} shares, {} needed to unseal; first administrator: {}\n",
        made.len(),
        resp.threshold,
        resp.admin_subject
    );
    if share_dir.is_some() {
        text.push_str("shares written (mode 0600), one per administrator:\n");
        for path in &share_files {
            text.push_str(&format!("  {}\n", path.display()));
        }
    } else {
        text.push_str(
            "unseal shares, shown once: give each to a different administrator and keep them apart:\n",
        );
        for (i, share) in made.iter().enumerate() {
            text.push_str(&format!("  share {}: {}\n", i + 1, share.as_str()));
        }
    }
    text.push_str(&format!(
        "next: `kms unseal` by {} administrator(s)",
        resp.threshold
    ));
    let text = Zeroizing::new(text);
    files::println(&text)
}

pub(super) async fn unseal(ctx: &Ctx, share_files: &[PathBuf]) -> Result<(), CliError> {
    let shares = if share_files.is_empty() {
        vec![prompt_secret("Unseal share: ")?]
    } else {
        files::read_shares(share_files)?
    };
    let mut system = ctx.system();
    let mut last = None;
    for mut share in shares {
        let resp = system
            .unseal(UnsealRequest {
                share: std::mem::take(&mut *share),
            })
            .await?
            .into_inner();
        let done = !resp.sealed;
        last = Some(resp);
        if done {
            break;
        }
    }
    let Some(resp) = last else {
        return Err(CliError::usage("no share given"));
    };
    if ctx.json {
        return print_json(&json!({
            "sealed": resp.sealed,
            "progress": resp.progress,
            "threshold": resp.threshold,
        }));
    }
    if resp.sealed {
        files::println(&format!(
            "share accepted: {} of {}; still sealed",
            resp.progress, resp.threshold
        ))
    } else {
        files::println("unsealed")
    }
}

pub(super) async fn seal(ctx: &Ctx) -> Result<(), CliError> {
    ctx.system().seal(SealRequest {}).await?;
    if ctx.json {
        print_json(&json!({ "sealed": true }))
    } else {
        files::println("sealed")
    }
}

pub(super) async fn backup(
    ctx: &Ctx,
    out: &Path,
    approval: Option<String>,
) -> Result<(), CliError> {
    let mut request = tonic::Request::new(BackupRequest {});
    if let Some(id) = approval {
        let value = id.parse().map_err(|_| {
            CliError::usage(format!("--approval {id:?} is not an approval request id"))
        })?;
        request
            .metadata_mut()
            .insert(super::approvals::APPROVAL_ID, value);
    }
    let mut stream = ctx.system().backup(request).await.map_err(|s| {
        let e = CliError::from_status(&s);
        match super::approvals::pending_id(&s) {
            Some(id) => e.with_hint(format!(
                "another administrator runs `kms approve {id}`; then run this again with --approval {id}"
            )),
            None => e,
        }
    })?.into_inner();
    // Written beside the target and renamed at the end, so a failed backup leaves no file that
    // looks complete.
    let partial = partial_path(out);
    let shown = partial.display().to_string();
    let mut file = files::create_private(&partial)?;
    let bar = progress(None, "backup");
    let mut total: u64 = 0;
    let result = async {
        while let Some(chunk) = stream.message().await? {
            file.write_all(&chunk.data)
                .map_err(|e| CliError::io(&shown, &e))?;
            let n = u64::try_from(chunk.data.len()).unwrap_or(u64::MAX);
            total = total.saturating_add(n);
            bar.inc(n);
        }
        file.sync_all().map_err(|e| CliError::io(&shown, &e))?;
        fs::rename(&partial, out).map_err(|e| CliError::io(&out.display().to_string(), &e))
    }
    .await;
    bar.finish_and_clear();
    if let Err(e) = result {
        // Best effort: the partial file is useless either way.
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    if ctx.json {
        print_json(&json!({ "path": out, "bytes": total }))
    } else {
        files::println(&format!(
            "backup written to {} ({total} bytes)",
            out.display()
        ))
    }
}

pub(super) async fn restore(
    ctx: &Ctx,
    input: &Path,
    share_files: &[PathBuf],
) -> Result<(), CliError> {
    let data = fs::read(input).map_err(|e| CliError::io(&input.display().to_string(), &e))?;
    if data.is_empty() {
        return Err(CliError::usage(format!("{} is empty", input.display())));
    }
    let shares = if share_files.is_empty() {
        prompt_shares()?
    } else {
        files::read_shares(share_files)?
    };
    // The first message carries the shares; the chunks are cut as the upload pulls them.
    let mut first_shares: Option<Vec<String>> = Some(
        shares
            .into_iter()
            .map(|mut share| std::mem::take(&mut *share))
            .collect(),
    );
    let total = data.len();
    let pieces = total.div_ceil(RESTORE_CHUNK);
    let bar = progress(u64::try_from(total).ok(), "restore");
    let counter = bar.clone();
    let stream = tokio_stream::iter(0..pieces).map(move |i| {
        let start = i * RESTORE_CHUNK;
        let piece = &data[start..total.min(start + RESTORE_CHUNK)];
        counter.inc(u64::try_from(piece.len()).unwrap_or(0));
        RestoreChunk {
            shares: first_shares.take().unwrap_or_default(),
            data: piece.to_vec(),
        }
    });
    let result = ctx.system().restore(stream).await;
    bar.finish_and_clear();
    let resp = result?.into_inner();
    if ctx.json {
        print_json(&json!({ "entries": resp.entries }))
    } else {
        files::println(&format!(
            "restored {} entries; the KMS is sealed until unsealed with the backup's shares",
            resp.entries
        ))
    }
}

pub(super) fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(ToOwned::to_owned).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// Reads one secret: without echo from the terminal, or a line from stdin when it is not one.
fn prompt_secret(prompt: &str) -> Result<Zeroizing<String>, CliError> {
    let raw = if io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(prompt).map_err(|e| CliError::io("the terminal", &e))?,
        )
    } else {
        let mut line = Zeroizing::new(String::new());
        io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::io("stdin", &e))?;
        line
    };
    let share = Zeroizing::new(raw.trim().to_owned());
    if share.is_empty() {
        return Err(
            CliError::usage("no share given").with_hint("paste a share, or use --share-file")
        );
    }
    Ok(share)
}

/// Asks for shares until an empty answer (terminal), or reads them one per line (stdin).
fn prompt_shares() -> Result<Vec<Zeroizing<String>>, CliError> {
    if !io::stdin().is_terminal() {
        return files::read_shares(&[PathBuf::from("-")]);
    }
    let mut shares = Vec::new();
    loop {
        let prompt = format!("Unseal share {} (empty to finish): ", shares.len() + 1);
        let raw = Zeroizing::new(
            rpassword::prompt_password(prompt).map_err(|e| CliError::io("the terminal", &e))?,
        );
        let share = raw.trim();
        if share.is_empty() {
            break;
        }
        shares.push(Zeroizing::new(share.to_owned()));
    }
    if shares.is_empty() {
        return Err(CliError::usage("no share given"));
    }
    Ok(shares)
}
