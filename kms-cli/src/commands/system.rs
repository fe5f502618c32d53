//! `kms status | init | unseal | seal | backup | restore`.

use std::fs;
use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use kms_proto::v1::{
    BackupRequest, InitRequest, IssuedShare, RestoreChunk, SealRequest, ShareHolder, StatusRequest,
    UnsealRequest,
};
use serde::Serialize;
use serde_json::json;
use tokio_stream::StreamExt as _;
use zeroize::Zeroizing;

use super::{Ctx, progress};
use crate::args::InitArgs;
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
        text.push_str("\nnext: `kms init --holders SUBJECT,SUBJECT,... --threshold M`\n");
    } else if s.sealed {
        text.push_str("\nnext: `kms unseal` (each share holder gives their own share)\n");
    }
    files::println(text.trim_end())
}

/// Reads the init token file (its first line), if one was given.
fn init_token(path: Option<&Path>) -> Result<Zeroizing<String>, CliError> {
    let Some(path) = path else {
        return Ok(Zeroizing::new(String::new()));
    };
    let text = Zeroizing::new(
        fs::read_to_string(path).map_err(|e| CliError::io(&path.display().to_string(), &e))?,
    );
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or_default().trim().to_owned(),
    ))
}

/// The holders as the request names them, with the public keys `--holder-key` gave.
fn share_holders(args: &InitArgs) -> Result<Vec<ShareHolder>, CliError> {
    let mut holders: Vec<ShareHolder> = args
        .holders
        .iter()
        .map(|h| ShareHolder {
            subject: h.trim().to_owned(),
            public_key_pem: String::new(),
        })
        .collect();
    for given in &args.holder_keys {
        let (subject, file) = given.split_once('=').ok_or_else(|| {
            CliError::usage(format!("--holder-key {given}: expected SUBJECT=FILE"))
        })?;
        let holder = holders
            .iter_mut()
            .find(|h| h.subject == subject)
            .ok_or_else(|| {
                CliError::usage(format!(
                    "--holder-key names {subject}, who is not in --holders"
                ))
            })?;
        holder.public_key_pem = fs::read_to_string(file).map_err(|e| CliError::io(file, &e))?;
    }
    Ok(holders)
}

/// A file name part from a holder's subject: letters, digits, `-` and `.` kept.
fn file_part(subject: &str) -> String {
    let s: String = subject
        .rsplit("//")
        .next()
        .unwrap_or(subject)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_matches('_').to_owned()
}

pub(super) async fn init(ctx: &Ctx, args: InitArgs) -> Result<(), CliError> {
    let shares = match (args.shares, args.holders.len()) {
        (Some(n), 0) => n,
        (None, 0) => {
            return Err(CliError::usage("name the share holders with --holders")
                .with_hint("e.g. --holders kms://alice,kms://bob,kms://carol --threshold 2"));
        }
        (_, n) => u32::try_from(n).unwrap_or(u32::MAX),
    };
    if args.threshold > shares {
        let made = if args.holders.is_empty() {
            format!("--shares {shares}")
        } else {
            format!("the {shares} holders")
        };
        return Err(CliError::usage(format!(
            "--threshold {} is more than {made}",
            args.threshold
        ))
        .with_hint("the threshold is how many of the shares, from distinct holders, unseal"));
    }
    let holders = share_holders(&args)?;
    let token = init_token(args.init_token_file.as_deref())?;
    let resp = ctx
        .system()
        .init(InitRequest {
            shares: if holders.is_empty() { shares } else { 0 },
            threshold: args.threshold,
            admin_subject: args.admin.clone().unwrap_or_default(),
            holders,
            init_token: token.to_string(),
        })
        .await?
        .into_inner();
    // Unbound shares (no holders) read as issued shares without a holder.
    let issued: Vec<IssuedShare> = if resp.issued.is_empty() {
        resp.shares
            .into_iter()
            .map(|share| IssuedShare {
                share,
                ..IssuedShare::default()
            })
            .collect()
    } else {
        resp.issued
    };
    let issued: Vec<(IssuedShare, Zeroizing<String>)> = issued
        .into_iter()
        .map(|mut s| {
            let plain = Zeroizing::new(std::mem::take(&mut s.share));
            (s, plain)
        })
        .collect();

    let mut share_files = Vec::new();
    if let Some(dir) = &args.share_dir {
        fs::create_dir_all(dir).map_err(|e| CliError::io(&dir.display().to_string(), &e))?;
        for (i, (s, plain)) in issued.iter().enumerate() {
            let who = file_part(&s.holder);
            let stem = if who.is_empty() {
                format!("share-{}", i + 1)
            } else {
                format!("share-{}-{who}", i + 1)
            };
            let path = match s.encryption.as_str() {
                "" => {
                    let line = Zeroizing::new(format!("{}\n", plain.as_str()));
                    let path = dir.join(format!("{stem}.txt"));
                    files::write_file(&path, line.as_bytes(), true)?;
                    path
                }
                alg => {
                    let ext = if alg == "sm2" { "sm2" } else { "rsa" };
                    let path = dir.join(format!("{stem}.{ext}"));
                    files::write_file(&path, &s.encrypted_share, true)?;
                    path
                }
            };
            share_files.push(path);
        }
    }

    if ctx.json {
        let mut value = json!({
            "admin_subject": resp.admin_subject,
            "threshold": resp.threshold,
        });
        if args.share_dir.is_some() {
            value["share_files"] = json!(share_files);
        } else if args.holders.is_empty() {
            let plain: Vec<&str> = issued.iter().map(|(_, p)| p.as_str()).collect();
            value["shares"] = json!(plain);
        } else {
            let list: Vec<serde_json::Value> = issued
                .iter()
                .map(|(s, plain)| {
                    json!({
                        "holder": s.holder,
                        "share": plain.as_str(),
                        "encryption": s.encryption,
                        "encrypted_share": files::base64(&s.encrypted_share),
                        "recipient_sm3": s.recipient_sm3,
                    })
                })
                .collect();
            value["shares"] = json!(list);
        }
        return print_json(&value);
    }
    let mut text = format!(
        "initialised: {} shares, {} from distinct holders unseal; first administrator: {}\n",
        issued.len(),
        resp.threshold,
        resp.admin_subject
    );
    if args.share_dir.is_some() {
        text.push_str("shares written (mode 0600), one per holder:\n");
        for path in &share_files {
            text.push_str(&format!("  {}\n", path.display()));
        }
    } else {
        text.push_str("unseal shares, shown once: give each to its holder only:\n");
        for (i, (s, plain)) in issued.iter().enumerate() {
            let holder = if s.holder.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.holder)
            };
            if s.encryption.is_empty() {
                text.push_str(&format!("  share {}{holder}: {}\n", i + 1, plain.as_str()));
            } else {
                text.push_str(&format!(
                    "  share {}{holder}: encrypted ({}) to key sm3:{}: {}\n",
                    i + 1,
                    s.encryption,
                    s.recipient_sm3,
                    files::base64(&s.encrypted_share)
                ));
            }
        }
    }
    if issued.iter().any(|(s, _)| !s.encryption.is_empty()) {
        text.push_str(
            "an encrypted share opens with its holder's private key, e.g. \
             `openssl pkeyutl -decrypt -inkey holder.key -in share-1-alice.sm2 | kms unseal --share-file -`\n",
        );
    }
    text.push_str(&format!(
        "next: `kms unseal` by {} of the holders, each with their own share",
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
            "restored_entries": resp.restored_entries,
        }));
    }
    if resp.sealed {
        files::println(&format!(
            "share accepted: {} of {}; still sealed",
            resp.progress, resp.threshold
        ))
    } else if resp.restored_entries > 0 {
        files::println(&format!(
            "restored {} entries; unsealed",
            resp.restored_entries
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
    let special = files::is_special(out);
    let partial = if special {
        out.to_owned()
    } else {
        partial_path(out)
    };
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
        if special {
            return Ok(());
        }
        file.sync_all().map_err(|e| CliError::io(&shown, &e))?;
        fs::rename(&partial, out).map_err(|e| CliError::io(&out.display().to_string(), &e))
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
    init_token_file: Option<&Path>,
) -> Result<(), CliError> {
    let token = init_token(init_token_file)?;
    let data = fs::read(input).map_err(|e| CliError::io(&input.display().to_string(), &e))?;
    if data.is_empty() {
        return Err(CliError::usage(format!("{} is empty", input.display())));
    }
    // Without shares the server stages the backup for its holders (one `kms unseal` each).
    let shares = if share_files.is_empty() {
        Vec::new()
    } else {
        files::read_shares(share_files)?
    };
    // The first message carries the shares; the chunks are cut as the upload pulls them.
    let mut first_token = Some(token.to_string());
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
            init_token: first_token.take().unwrap_or_default(),
        }
    });
    let result = ctx.system().restore(stream).await;
    bar.finish_and_clear();
    let resp = result?.into_inner();
    if ctx.json {
        return print_json(&json!({
            "entries": resp.entries,
            "staged": resp.staged,
            "threshold": resp.threshold,
            "holders": resp.holders,
        }));
    }
    if resp.staged {
        let who = if resp.holders.is_empty() {
            "holders of its shares".to_owned()
        } else {
            resp.holders.join(", ")
        };
        files::println(&format!(
            "staged on this server: written once {} of its share holders ({who}) each run \
             `kms unseal` with their own share",
            resp.threshold
        ))
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
