//! `kms bench`: the command-line face of the load generator in `kms-load`. It turns the
//! arguments into a [`kms_load::Plan`], connects `--connections` mTLS channels with the usual
//! profile or `KMS_*` settings (so the server sees the profile's principal), runs the load, and
//! prints the report: `--json` as one object, otherwise an aligned table. A run in which any
//! request failed prints its results and then exits non-zero.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use kms_load::{Failure, LoadError, Options, Plan, PlanError, Report};

use super::connect_error;
use crate::args::BenchArgs;
use crate::client::{self, Target};
use crate::error::{CliError, ExitKind};
use crate::output::{fields, print_json};
use crate::resolve;

/// Runs `kms bench` on the load generator's own multi-threaded runtime.
pub(super) fn run(
    a: BenchArgs,
    profile: Option<&str>,
    json: bool,
    timeout: Duration,
) -> Result<(), CliError> {
    let plan = Plan::new(options(a)?).map_err(|e| plan_error(&e))?;
    let runtime = kms_load::runtime()
        .map_err(|e| CliError::other(format!("cannot start the async runtime: {e}")))?;
    let report = runtime.block_on(bench(&plan, profile, timeout))?;
    print(&report, json)?;
    if report.errors > 0 {
        let first = report.first_error.as_deref().unwrap_or("(no message)");
        return Err(CliError::other(format!(
            "{} of {} requests failed; the first: {first}",
            report.errors,
            report.requests + report.errors
        ))
        .with_hint("the results above count the successful requests only"));
    }
    Ok(())
}

fn options(a: BenchArgs) -> Result<Options, CliError> {
    let partner_key = match &a.partner_key {
        Some(path) => Some(std::sync::Arc::new(kms_core::SecretBytes::copy_from_slice(
            &crate::files::read_input(Some(path))?,
        ))),
        None => None,
    };
    Ok(Options {
        op: a.op,
        key: a.key,
        size: a.size,
        duration: Duration::from_secs(a.duration),
        warmup: Duration::from_secs(a.warmup),
        concurrency: a.concurrency,
        connections: a.connections,
        rate: a.rate,
        server_pid: a.server_pid,
        progress: a.progress || std::io::stderr().is_terminal(),
        batch: a.batch,
        pepper: a.pepper,
        partner_key,
    })
}

fn plan_error(e: &PlanError) -> CliError {
    let usage = CliError::usage(e.to_string());
    match e {
        PlanError::IdleConnections { .. } => {
            usage.with_hint("give at least one request loop per connection")
        }
        PlanError::DataKeySize(_) => {
            usage.with_hint("for --op datakey, --size is 16 (an SM4 data key) or 32 (AES-256)")
        }
        PlanError::ServerPid { .. } => usage.with_hint(
            "give the PID of the kms-server process on this machine, or leave --server-pid out",
        ),
        PlanError::NoLoops => usage,
        PlanError::NoPepper => usage.with_hint(
            "--op hash-password takes the password key as --key and the pepper key as --pepper",
        ),
        PlanError::NoPartnerKey => usage.with_hint(
            "--op verify-request takes the MAC key as --key and its bytes as --partner-key FILE",
        ),
        PlanError::Batch { .. } => usage.with_hint(
            "--batch N (1 to 1000) goes with encrypt, decrypt, datakey, sign, verify, mac or tokenize",
        ),
    }
}

async fn bench(plan: &Plan, profile: Option<&str>, timeout: Duration) -> Result<Report, CliError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let env = |name: &str| std::env::var(name).ok();
    let settings = resolve::settings(profile, &env, &cwd)?;
    let conn = resolve::connection(&settings, Some(timeout))?;
    let target = Target::parse(&conn.endpoint).map_err(|e| connect_error(&e, &settings))?;
    let mut channels = Vec::with_capacity(plan.connections() as usize);
    for _ in 0..plan.connections() {
        let channel = client::connect(&conn)
            .await
            .map_err(|e| connect_error(&e, &settings))?;
        channels.push(channel);
    }
    kms_load::run(plan, channels, (&target.host, target.port))
        .await
        .map_err(|e| load_error(plan, e))
}

/// A failure before the load starts, said in terms of the bench: which step, and (for a
/// refused argument, such as a key of another purpose) which purpose the operation needs.
fn load_error(plan: &Plan, err: LoadError) -> CliError {
    let op = plan.op().name();
    match err {
        LoadError::Probe { step, failure } => {
            let cause = match &failure {
                Failure::Status(status) => CliError::from_status(status),
                Failure::SignatureInvalid | Failure::Verdict(_) => {
                    CliError::new(ExitKind::VerificationFailed, failure.to_string())
                }
                Failure::Item(code, message) => CliError::new(
                    ExitKind::from_code(*code),
                    format!("an item of the batch failed: {message}"),
                ),
                Failure::PlaintextLength { .. }
                | Failure::BatchLength { .. }
                | Failure::Sealing(_) => {
                    CliError::other(failure.to_string())
                }
            };
            let mut out = CliError::new(
                cause.kind,
                format!(
                    "--op {op} with key {:?}: {step} failed: {}",
                    plan.key(),
                    cause.message
                ),
            );
            out.hint = if cause.kind == ExitKind::InvalidArgument {
                Some(format!(
                    "--op {op} needs a key of purpose {} (`kms key describe {}` shows the key's purpose)",
                    plan.op().purpose(),
                    plan.key()
                ))
            } else {
                cause.hint
            };
            out
        }
        LoadError::PayloadTooLong { .. } => CliError::usage(err.to_string()).with_hint(
            "RSA-OAEP-SHA-256 takes at most 190 bytes (RSA-2048) or 318 (RSA-3072): give a smaller --size",
        ),
        LoadError::NoBatchForm(_) => CliError::usage(err.to_string()),
        LoadError::NoConnection | LoadError::PublicKey(_) | LoadError::Loop(_) => {
            CliError::other(err.to_string())
        }
    }
}

fn print(report: &Report, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(report);
    }
    crate::files::println(fields(&report.rows()).trim_end())
}
