//! `kms bench`: load a running server with one data-plane operation and measure it.
//!
//! The run, in order:
//! 1. Connect `--connections` separate mTLS channels (each its own TCP, TLS and HTTP/2
//!    connection) with the usual profile or `KMS_*` settings, so the server sees the profile's
//!    principal.
//! 2. Prepare the one request every loop sends: a payload of `--size` bytes; for `decrypt`,
//!    `verify` and `asym-decrypt` an input made first (one Encrypt, one Sign, or GetPublicKey and
//!    an encryption to that public key here on the client).
//! 3. Send it once as a probe: a key of the wrong purpose, a missing grant or a sealed server
//!    stops the run here with the server's message, before any load.
//! 4. Run `--concurrency` request loops, spread round-robin over the channels, for `--warmup`
//!    then `--duration` seconds. A loop sends, awaits the answer, and sends again; latency is the
//!    time around the RPC's await (the request is built before the clock starts). Only requests
//!    that complete inside the measured window count.
//! 5. Read the server's CPU time (`utime + stime` of its process, see [`procfs`]) at the start
//!    and end of the window; divide by the requests completed in it.
//!
//! Results: requests/s, p50/p99/p999 latency (an HDR histogram at microsecond resolution),
//! errors and the first error's message, and CPU time per request of the server and of this
//! client. `--json` prints them as one object; otherwise an aligned table. A run in which any
//! request failed prints its results and then exits non-zero.

mod procfs;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kms_proto::v1::crypto_client::CryptoClient;
use kms_proto::v1::{
    AsymmetricDecryptRequest, DecryptRequest, EncryptRequest, GenerateDataKeyRequest,
    GenerateMacRequest, GetPublicKeyRequest, MessageType, SignRequest, VerifyRequest,
};
use serde::Serialize;
use tonic::transport::Channel;

use super::connect_error;
use crate::args::{BenchArgs, BenchOp};
use crate::client::{self, Target};
use crate::error::{CliError, ExitKind};
use crate::output::{fields, print_json};
use crate::resolve;

/// The payload size when `--size` is left out: 1 KiB, but 32 bytes (a data key) for
/// `asym-decrypt`, which RSA-OAEP limits, and 16 (an SM4 key) for `datakey`.
const DEFAULT_SIZE: u32 = 1024;
const DEFAULT_ASYM_SIZE: u32 = 32;
/// The longest latency the histogram holds (longer ones are recorded as this): 10 minutes.
const MAX_LATENCY_US: u64 = 600_000_000;

/// Runs `kms bench` on a runtime of its own (multi-threaded, one worker per core), not the
/// single-threaded one of the other commands: the client must not be what limits the rate.
pub(super) fn run(
    a: BenchArgs,
    profile: Option<&str>,
    json: bool,
    timeout: Duration,
) -> Result<(), CliError> {
    let plan = Plan::new(a)?;
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| CliError::other(format!("cannot start the async runtime: {e}")))?;
    let report = runtime.block_on(bench(&plan, profile, timeout))?;
    report.print(json)?;
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

/// The checked command line.
struct Plan {
    op: BenchOp,
    key: String,
    size: u32,
    duration: Duration,
    warmup: Duration,
    concurrency: u32,
    connections: u32,
    server_pid: Option<u32>,
    progress: bool,
    /// Time between two sends of one loop, when the load is paced (`--rate`).
    period: Option<Duration>,
}

impl Plan {
    fn new(a: BenchArgs) -> Result<Self, CliError> {
        if a.connections > a.concurrency {
            return Err(CliError::usage(format!(
                "--connections {} is more than --concurrency {}: some connections would stay idle",
                a.connections, a.concurrency
            ))
            .with_hint("give at least one request loop per connection"));
        }
        let size = match (a.op, a.size) {
            (BenchOp::Datakey, None | Some(16 | 32)) => a.size.unwrap_or(16),
            (BenchOp::Datakey, Some(other)) => {
                return Err(
                    CliError::usage(format!("--size {other} is not a data key length")).with_hint(
                        "for --op datakey, --size is 16 (an SM4 data key) or 32 (AES-256)",
                    ),
                );
            }
            (BenchOp::AsymDecrypt, size) => size.unwrap_or(DEFAULT_ASYM_SIZE),
            (
                BenchOp::Encrypt
                | BenchOp::Decrypt
                | BenchOp::Sign
                | BenchOp::Verify
                | BenchOp::Mac,
                size,
            ) => size.unwrap_or(DEFAULT_SIZE),
        };
        if let Some(pid) = a.server_pid {
            procfs::cpu_ticks(pid).map_err(|e| {
                CliError::usage(format!("--server-pid {pid}: cannot read its CPU time: {e}"))
                    .with_hint("give the PID of the kms-server process on this machine, or leave --server-pid out")
            })?;
        }
        Ok(Self {
            op: a.op,
            key: a.key,
            size,
            duration: Duration::from_secs(a.duration),
            warmup: Duration::from_secs(a.warmup),
            concurrency: a.concurrency,
            connections: a.connections,
            server_pid: a.server_pid,
            progress: a.progress || std::io::stderr().is_terminal(),
            period: a
                .rate
                .map(|r| Duration::from_secs_f64(f64::from(a.concurrency) / r as f64)),
        })
    }
}

/// The name of an operation as `--op` takes it.
const fn op_name(op: BenchOp) -> &'static str {
    match op {
        BenchOp::Encrypt => "encrypt",
        BenchOp::Decrypt => "decrypt",
        BenchOp::Datakey => "datakey",
        BenchOp::Sign => "sign",
        BenchOp::Verify => "verify",
        BenchOp::AsymDecrypt => "asym-decrypt",
        BenchOp::Mac => "mac",
    }
}

/// The key purpose an operation needs, as `kms key create --purpose` takes it.
const fn op_purpose(op: BenchOp) -> &'static str {
    match op {
        BenchOp::Encrypt | BenchOp::Decrypt | BenchOp::Datakey => "encrypt",
        BenchOp::Sign | BenchOp::Verify => "sign",
        BenchOp::AsymDecrypt => "asymmetric-decrypt",
        BenchOp::Mac => "mac",
    }
}

/// The one request every loop sends (cloned per send).
#[derive(Clone)]
enum Request {
    Encrypt(EncryptRequest),
    Decrypt(DecryptRequest, usize),
    DataKey(GenerateDataKeyRequest),
    Sign(SignRequest),
    Verify(VerifyRequest),
    AsymDecrypt(AsymmetricDecryptRequest, usize),
    Mac(GenerateMacRequest),
}

impl Request {
    /// Sends it and checks the answer: a signature found invalid, or a plaintext of the wrong
    /// length, is an error too.
    async fn send(self, client: &mut CryptoClient<Channel>) -> Result<(), CliError> {
        match self {
            Self::Encrypt(r) => {
                client.encrypt(r).await?;
            }
            Self::Decrypt(r, len) => {
                let got = client.decrypt(r).await?.into_inner().plaintext.len();
                check_len(got, len)?;
            }
            Self::DataKey(r) => {
                client.generate_data_key(r).await?;
            }
            Self::Sign(r) => {
                client.sign(r).await?;
            }
            Self::Verify(r) => {
                if !client.verify(r).await?.into_inner().valid {
                    return Err(CliError::new(
                        ExitKind::VerificationFailed,
                        "the server found the prepared signature invalid",
                    ));
                }
            }
            Self::AsymDecrypt(r, len) => {
                let got = client
                    .asymmetric_decrypt(r)
                    .await?
                    .into_inner()
                    .plaintext
                    .len();
                check_len(got, len)?;
            }
            Self::Mac(r) => {
                client.generate_mac(r).await?;
            }
        }
        Ok(())
    }
}

fn check_len(got: usize, want: usize) -> Result<(), CliError> {
    if got == want {
        Ok(())
    } else {
        Err(CliError::other(format!(
            "the server returned {got} bytes of plaintext, not {want}"
        )))
    }
}

/// `size` bytes of a fixed pattern (the content does not matter to any operation measured).
fn payload(size: u32) -> Vec<u8> {
    (0..size)
        .map(|i| (i.wrapping_mul(31).wrapping_add(7) & 0xff) as u8)
        .collect()
}

/// Makes the request for `plan.op`, with the inputs that need the server made first.
async fn prepare(plan: &Plan, client: &mut CryptoClient<Channel>) -> Result<Request, CliError> {
    let key = plan.key.clone();
    let data = payload(plan.size);
    let len = data.len();
    let sign = SignRequest {
        key: key.clone(),
        message: data.clone(),
        message_type: MessageType::Raw.into(),
        sm2_id: String::new(),
        rsa_scheme: String::new(),
        hash: String::new(),
    };
    Ok(match plan.op {
        BenchOp::Encrypt => Request::Encrypt(EncryptRequest {
            key,
            plaintext: data,
            context: Default::default(),
        }),
        BenchOp::Decrypt => {
            let made = client
                .encrypt(EncryptRequest {
                    key,
                    plaintext: data,
                    context: Default::default(),
                })
                .await
                .map_err(|s| {
                    probe_error(plan, "making the ciphertext to decrypt (Encrypt)", s.into())
                })?
                .into_inner();
            Request::Decrypt(
                DecryptRequest {
                    ciphertext: made.ciphertext,
                    context: Default::default(),
                },
                len,
            )
        }
        BenchOp::Datakey => Request::DataKey(GenerateDataKeyRequest {
            key,
            key_spec: if plan.size == 32 { "aes-256" } else { "sm4" }.to_owned(),
            context: Default::default(),
            wrap_to_public_key: Vec::new(),
        }),
        BenchOp::Sign => Request::Sign(sign),
        BenchOp::Verify => {
            let signature = client
                .sign(sign.clone())
                .await
                .map_err(|s| probe_error(plan, "making the signature to verify (Sign)", s.into()))?
                .into_inner()
                .signature;
            Request::Verify(VerifyRequest {
                key: sign.key,
                message: sign.message,
                message_type: sign.message_type,
                sm2_id: sign.sm2_id,
                rsa_scheme: sign.rsa_scheme,
                hash: sign.hash,
                signature,
                key_version: None,
            })
        }
        BenchOp::AsymDecrypt => {
            let public = client
                .get_public_key(GetPublicKeyRequest {
                    key: key.clone(),
                    key_version: None,
                })
                .await
                .map_err(|s| probe_error(plan, "fetching the public key (GetPublicKey)", s.into()))?
                .into_inner();
            let policy =
                kms_core::policy::Policy::from_config(kms_core::policy::PolicyMode::Standard);
            let public = kms_core::crypto::PublicKey::from_spki_der(policy, &public.public_key_der)
                .map_err(|e| {
                    CliError::other(format!("the key's public key cannot be used here: {e}"))
                })?;
            let to_key = policy
                .approve(kms_core::alg::Purpose::AsymmetricDecrypt, public.spec())
                .map_err(|e| CliError::other(format!("the key cannot be encrypted to: {e}")))?;
            let ciphertext = kms_core::crypto::encrypt_to_public_key(&to_key, &public, &data).map_err(|e| {
                CliError::usage(format!(
                    "cannot encrypt {len} bytes to the key's public key: {e}"
                ))
                .with_hint("RSA-OAEP-SHA-256 takes at most 190 bytes (RSA-2048) or 318 (RSA-3072): give a smaller --size")
            })?;
            Request::AsymDecrypt(
                AsymmetricDecryptRequest {
                    key,
                    ciphertext,
                    key_version: None,
                },
                len,
            )
        }
        BenchOp::Mac => Request::Mac(GenerateMacRequest { key, data }),
    })
}

/// A failure before the load starts, said in terms of the bench: which step, and (for a
/// refused argument, such as a key of another purpose) which purpose the operation needs.
fn probe_error(plan: &Plan, step: &str, err: CliError) -> CliError {
    let op = op_name(plan.op);
    let mut out = CliError::new(
        err.kind,
        format!(
            "--op {op} with key {:?}: {step} failed: {}",
            plan.key, err.message
        ),
    );
    out.hint = if err.kind == ExitKind::InvalidArgument {
        Some(format!(
            "--op {op} needs a key of purpose {} (`kms key describe {}` shows the key's purpose)",
            op_purpose(plan.op),
            plan.key
        ))
    } else {
        err.hint
    };
    out
}

/// Where the server's CPU time comes from, or why it is unknown.
enum ServerCpu {
    Known { pid: u32, auto: bool, clk_tck: u64 },
    Unknown(String),
}

fn server_cpu(plan: &Plan, endpoint: &str) -> ServerCpu {
    let clk_tck = match procfs::clock_ticks_per_second() {
        Ok(t) => t,
        Err(e) => return ServerCpu::Unknown(e),
    };
    if let Some(pid) = plan.server_pid {
        return ServerCpu::Known {
            pid,
            auto: false,
            clk_tck,
        };
    }
    let target = match Target::parse(endpoint) {
        Ok(t) => t,
        Err(e) => return ServerCpu::Unknown(e.to_string()),
    };
    if !procfs::is_local_host(&target.host) {
        return ServerCpu::Unknown(format!(
            "the endpoint {} is not on this machine's loopback; pass --server-pid if the server runs here",
            target.host
        ));
    }
    match procfs::find_listener(target.port) {
        Ok(pid) => ServerCpu::Known {
            pid,
            auto: true,
            clk_tck,
        },
        Err(e) => ServerCpu::Unknown(format!("{e}; pass --server-pid")),
    }
}

/// What one request loop measured inside the window.
struct LoopResult {
    latency: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("constant bounds the crate accepts: low ≥ 1, high ≥ 2 × low, 3 digits")
}

/// The measured window, shared by every loop.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// One request loop. Unpaced, it sends again as soon as it has its answer. Paced, it sends on a
/// fixed schedule (`offset`, then every `period`) and measures each latency from the scheduled
/// time: a server that stalls is charged for the requests it delayed (no coordinated omission).
async fn request_loop(
    mut client: CryptoClient<Channel>,
    request: Arc<Request>,
    window: Window,
    done: Arc<AtomicU64>,
    pacing: Option<(Duration, Duration)>,
) -> LoopResult {
    let mut result = LoopResult {
        latency: histogram(),
        errors: 0,
        first_error: None,
    };
    let mut next = pacing.map(|(offset, _)| Instant::now() + offset);
    while Instant::now() < window.end {
        let message = Request::clone(&request);
        let sent = match (&mut next, pacing) {
            (Some(at), Some((_, period))) => {
                let scheduled = *at;
                tokio::time::sleep_until(tokio::time::Instant::from_std(scheduled)).await;
                *at = scheduled + period;
                scheduled
            }
            (None, _) | (Some(_), None) => Instant::now(),
        };
        let outcome = message.send(&mut client).await;
        let answered = Instant::now();
        done.fetch_add(1, Ordering::Relaxed);
        let counts = answered >= window.start && answered < window.end;
        match outcome {
            Ok(()) if counts => {
                let us =
                    u64::try_from(answered.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
                result.latency.saturating_record(us.max(1));
            }
            Ok(()) => {}
            Err(e) => {
                if counts {
                    result.errors += 1;
                    result.first_error.get_or_insert(e.message);
                }
                // A server that is down fails at once: do not spin.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    result
}

/// A line on stderr each second: the phase, requests so far, and the rate over the last second.
async fn show_progress(done: Arc<AtomicU64>, started: Instant, window: Window) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(started + Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    let mut last = 0;
    loop {
        let now = tick.tick().await.into_std();
        let total = done.load(Ordering::Relaxed);
        // The phase of the second that just ended.
        let phase = if now <= window.start {
            "warmup"
        } else {
            "measure"
        };
        let elapsed = now.duration_since(started).as_secs();
        eprintln!(
            "bench: {elapsed:>4}s  {phase:<7}  {total:>10} requests  {:>9}/s",
            total - last
        );
        last = total;
    }
}

/// Everything `kms bench` reports; `--json` prints it as is.
#[derive(Debug, Serialize)]
struct Report {
    op: &'static str,
    key: String,
    size: u32,
    duration_s: f64,
    warmup_s: f64,
    concurrency: u32,
    connections: u32,
    /// Successful requests completed inside the window.
    requests: u64,
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    mean_ms: f64,
    max_ms: f64,
    errors: u64,
    first_error: Option<String>,
    server_pid: Option<u32>,
    /// `flag` (--server-pid) or `auto` (the process listening on the endpoint's port).
    server_pid_source: Option<&'static str>,
    /// The server's CPU seconds in the window.
    server_cpu_s: Option<f64>,
    /// Server CPU seconds per second of the window: how many cores it kept busy.
    server_cpu_cores: Option<f64>,
    /// Server CPU time (user + system) per request completed in the window (failed ones included).
    server_cpu_us_per_request: Option<f64>,
    /// Why the server's CPU time is unknown, when it is.
    server_cpu_note: Option<String>,
    /// This client's own CPU time per request.
    client_cpu_us_per_request: Option<f64>,
    /// The tick rate of the CPU accounting (`getconf CLK_TCK`).
    clock_ticks_per_s: Option<u64>,
    /// The paced load asked for with `--rate` (`None`: unpaced).
    target_requests_per_s: Option<f64>,
    /// The server's resident memory at the start and end of the window and its highest sample
    /// (one a second), in MiB: flat over a long run means no leak.
    server_rss_mib_start: Option<f64>,
    server_rss_mib_end: Option<f64>,
    server_rss_mib_max: Option<f64>,
}

/// CPU ticks of the server and of this process at one moment.
#[derive(Clone, Copy)]
struct CpuSample {
    server: Option<u64>,
    client: Option<u64>,
}

fn sample(server: &ServerCpu) -> CpuSample {
    CpuSample {
        server: match server {
            ServerCpu::Known { pid, .. } => procfs::cpu_ticks(*pid).ok(),
            ServerCpu::Unknown(_) => None,
        },
        client: procfs::cpu_ticks(std::process::id()).ok(),
    }
}

async fn bench(plan: &Plan, profile: Option<&str>, timeout: Duration) -> Result<Report, CliError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let env = |name: &str| std::env::var(name).ok();
    let settings = resolve::settings(profile, &env, &cwd)?;
    let conn = resolve::connection(&settings, Some(timeout))?;
    let mut channels = Vec::with_capacity(plan.connections as usize);
    for _ in 0..plan.connections {
        let channel = client::connect(&conn)
            .await
            .map_err(|e| connect_error(&e, &settings))?;
        channels.push(channel);
    }
    let cpu_source = server_cpu(plan, &conn.endpoint);

    let mut first = CryptoClient::new(
        channels
            .first()
            .cloned()
            .ok_or_else(|| CliError::other("no connection was made"))?,
    );
    let request = prepare(plan, &mut first).await?;
    request
        .clone()
        .send(&mut first)
        .await
        .map_err(|e| probe_error(plan, "the first request", e))?;

    let started = Instant::now();
    let window = Window {
        start: started + plan.warmup,
        end: started + plan.warmup + plan.duration,
    };
    let done = Arc::new(AtomicU64::new(0));
    let request = Arc::new(request);
    let loops: Vec<_> = (0..plan.concurrency as usize)
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            // Paced loops start spread over one period, not all at once.
            let pacing = plan
                .period
                .map(|p| (p.mul_f64(i as f64 / f64::from(plan.concurrency)), p));
            tokio::spawn(request_loop(
                CryptoClient::new(channel),
                Arc::clone(&request),
                window,
                Arc::clone(&done),
                pacing,
            ))
        })
        .collect();
    let progress = plan
        .progress
        .then(|| tokio::spawn(show_progress(Arc::clone(&done), started, window)));

    tokio::time::sleep_until(tokio::time::Instant::from_std(window.start)).await;
    let before = sample(&cpu_source);
    let rss = rss_during(&cpu_source, window).await;
    let after = sample(&cpu_source);

    let mut latency = histogram();
    let mut errors = 0;
    let mut first_error = None;
    for handle in loops {
        let result = handle
            .await
            .map_err(|e| CliError::other(format!("a request loop failed: {e}")))?;
        // Same bounds on both sides: adding cannot fail.
        let _ = latency.add(&result.latency);
        errors += result.errors;
        if first_error.is_none() {
            first_error = result.first_error;
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    Ok(report(
        plan,
        &latency,
        errors,
        first_error,
        &cpu_source,
        (before, after),
        rss,
    ))
}

/// The server's resident memory over the window: first, last and highest sample (one a second).
#[derive(Clone, Copy, Debug, Default)]
struct Rss {
    start_kib: u64,
    end_kib: u64,
    max_kib: u64,
}

/// Samples the server's RSS each second until the window ends; `None` when it cannot be read.
async fn rss_during(cpu_source: &ServerCpu, window: Window) -> Option<Rss> {
    let ServerCpu::Known { pid, .. } = cpu_source else {
        tokio::time::sleep_until(tokio::time::Instant::from_std(window.end)).await;
        return None;
    };
    let mut rss: Option<Rss> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let sampled = procfs::rss_kib(*pid).ok();
        if let Some(kib) = sampled {
            let r = rss.get_or_insert(Rss {
                start_kib: kib,
                end_kib: kib,
                max_kib: kib,
            });
            r.end_kib = kib;
            r.max_kib = r.max_kib.max(kib);
        }
        let end = tokio::time::Instant::from_std(window.end);
        tokio::select! {
            _ = tick.tick() => {}
            () = tokio::time::sleep_until(end) => break,
        }
    }
    if let (Some(r), Ok(kib)) = (&mut rss, procfs::rss_kib(*pid)) {
        r.end_kib = kib;
        r.max_kib = r.max_kib.max(kib);
    }
    rss
}

#[allow(clippy::cast_precision_loss)] // counts and microseconds far below 2^52
fn report(
    plan: &Plan,
    latency: &Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    cpu_source: &ServerCpu,
    (before, after): (CpuSample, CpuSample),
    rss: Option<Rss>,
) -> Report {
    let requests = latency.len();
    let secs = plan.duration.as_secs_f64();
    let completed = requests + errors;
    let ms = |us: u64| us as f64 / 1000.0;
    let quantile = |q: f64| {
        if requests == 0 {
            0.0
        } else {
            ms(latency.value_at_quantile(q))
        }
    };
    let (pid, source, clk_tck, note) = match cpu_source {
        ServerCpu::Known { pid, auto, clk_tck } => (
            Some(*pid),
            Some(if *auto { "auto" } else { "flag" }),
            Some(*clk_tck),
            None,
        ),
        ServerCpu::Unknown(why) => (None, None, None, Some(why.clone())),
    };
    let cpu_us = |b: Option<u64>, a: Option<u64>| -> Option<f64> {
        let ticks = a?.checked_sub(b?)?;
        Some(ticks as f64 * 1e6 / clk_tck? as f64)
    };
    let per_request =
        |us: Option<f64>| us.filter(|_| completed > 0).map(|us| us / completed as f64);
    let server_us = cpu_us(before.server, after.server);
    let note = note.or_else(|| {
        (pid.is_some() && server_us.is_none())
            .then(|| "the server process's CPU time could not be read (did it exit?)".to_owned())
    });
    Report {
        op: op_name(plan.op),
        key: plan.key.clone(),
        size: plan.size,
        duration_s: secs,
        warmup_s: plan.warmup.as_secs_f64(),
        concurrency: plan.concurrency,
        connections: plan.connections,
        requests,
        requests_per_s: requests as f64 / secs,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        p999_ms: quantile(0.999),
        mean_ms: latency.mean() / 1000.0,
        max_ms: ms(latency.max()),
        errors,
        first_error,
        server_pid: pid,
        server_pid_source: source,
        server_cpu_s: server_us.map(|us| us / 1e6),
        server_cpu_cores: server_us.map(|us| us / 1e6 / secs),
        server_cpu_us_per_request: per_request(server_us),
        server_cpu_note: note,
        client_cpu_us_per_request: per_request(cpu_us(before.client, after.client)),
        clock_ticks_per_s: clk_tck,
        target_requests_per_s: plan
            .period
            .map(|p| f64::from(plan.concurrency) / p.as_secs_f64()),
        server_rss_mib_start: rss.map(|r| r.start_kib as f64 / 1024.0),
        server_rss_mib_end: rss.map(|r| r.end_kib as f64 / 1024.0),
        server_rss_mib_max: rss.map(|r| r.max_kib as f64 / 1024.0),
    }
}

impl Report {
    fn print(&self, json: bool) -> Result<(), CliError> {
        if json {
            return print_json(self);
        }
        let opt = |v: Option<f64>, unit: &str| {
            v.map_or_else(|| "unknown".to_owned(), |v| format!("{v:.1} {unit}"))
        };
        let server_cpu = match (self.server_cpu_us_per_request, &self.server_cpu_note) {
            (Some(us), _) => format!(
                "{us:.1} µs  (pid {}, {}; {:.2} cores busy)",
                self.server_pid.unwrap_or_default(),
                self.server_pid_source.unwrap_or("-"),
                self.server_cpu_cores.unwrap_or_default()
            ),
            (None, Some(note)) => format!("unknown: {note}"),
            (None, None) => "unknown".to_owned(),
        };
        let rows = [
            ("op", self.op.to_owned()),
            ("key", self.key.clone()),
            ("size", format!("{} B", self.size)),
            (
                "duration",
                format!("{} s (after {} s warmup)", self.duration_s, self.warmup_s),
            ),
            (
                "concurrency",
                format!(
                    "{} over {} connection(s)",
                    self.concurrency, self.connections
                ),
            ),
            ("requests", self.requests.to_string()),
            ("requests/s", format!("{:.1}", self.requests_per_s)),
            ("latency p50", format!("{:.3} ms", self.p50_ms)),
            ("latency p99", format!("{:.3} ms", self.p99_ms)),
            ("latency p99.9", format!("{:.3} ms", self.p999_ms)),
            ("latency mean", format!("{:.3} ms", self.mean_ms)),
            ("latency max", format!("{:.3} ms", self.max_ms)),
            ("errors", self.errors.to_string()),
            (
                "first error",
                self.first_error.clone().unwrap_or_else(|| "-".to_owned()),
            ),
            ("server CPU/request", server_cpu),
            (
                "server RSS",
                match (
                    self.server_rss_mib_start,
                    self.server_rss_mib_end,
                    self.server_rss_mib_max,
                ) {
                    (Some(a), Some(b), Some(m)) => {
                        format!("{a:.1} MiB at start, {b:.1} MiB at end, {m:.1} MiB highest")
                    }
                    _ => "unknown".to_owned(),
                },
            ),
            (
                "client CPU/request",
                opt(self.client_cpu_us_per_request, "µs"),
            ),
        ];
        crate::files::println(fields(&rows).trim_end())
    }
}
