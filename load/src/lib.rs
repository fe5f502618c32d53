//! The load generator behind `kms bench`: load a running KMS with one data-plane operation over
//! gRPC and measure it. The CLI parses the command line, makes the mTLS channels and prints the
//! [`Report`]; everything between is here.
//!
//! The run, in order:
//! 1. The caller connects [`Plan::connections`] separate channels (each its own TCP, TLS and
//!    HTTP/2 connection), so the server sees the caller's principal.
//! 2. [`run`] prepares the one request every loop sends: a payload of `size` bytes; for
//!    `decrypt`, `verify` and `asym-decrypt` an input made first (one Encrypt, one Sign, or
//!    GetPublicKey and an encryption to that public key here on the client).
//! 3. It sends it once as a probe: a key of the wrong purpose, a missing grant or a sealed server
//!    stops the run here ([`LoadError::Probe`] with the server's status), before any load.
//! 4. It runs `concurrency` request loops, spread round-robin over the channels, for `warmup`
//!    then `duration`. A loop sends, awaits the answer, and sends again; latency is the time
//!    around the RPC's await (the request is built before the clock starts). Only requests that
//!    complete inside the measured window count.
//! 5. It reads the server's CPU time (`utime + stime` of its process, see [`procfs`]) at the
//!    start and end of the window and divides by the requests completed in it.
//!
//! The [`Report`]: requests/s, p50/p99/p999 latency (an HDR histogram at microsecond
//! resolution), errors and the first error's message, and CPU time per request of the server and
//! of this client.

mod procfs;

use std::io;
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

/// The payload size when `size` is left out: 1 KiB, but 32 bytes (a data key) for
/// `asym-decrypt`, which RSA-OAEP limits, and 16 (an SM4 key) for `datakey`.
const DEFAULT_SIZE: u32 = 1024;
const DEFAULT_ASYM_SIZE: u32 = 32;
/// The longest latency the histogram holds (longer ones are recorded as this): 10 minutes.
const MAX_LATENCY_US: u64 = 600_000_000;

/// The operations a run can load the server with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Encrypt `size` bytes (an ENCRYPT key).
    Encrypt,
    /// Decrypt a ciphertext of `size` bytes made first (an ENCRYPT key).
    Decrypt,
    /// Generate a data key of 16 (SM4, the default) or 32 (AES-256) bytes.
    Datakey,
    /// Sign a `size` byte message (a SIGN key).
    Sign,
    /// Verify a signature made first (a SIGN key).
    Verify,
    /// Decrypt `size` bytes (default 32) encrypted here to the key's public key.
    AsymDecrypt,
    /// MAC `size` bytes (a MAC key).
    Mac,
}

impl Op {
    /// The operation's name as `kms bench --op` takes it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::Datakey => "datakey",
            Self::Sign => "sign",
            Self::Verify => "verify",
            Self::AsymDecrypt => "asym-decrypt",
            Self::Mac => "mac",
        }
    }

    /// The key purpose the operation needs, as `kms key create --purpose` takes it.
    #[must_use]
    pub const fn purpose(self) -> &'static str {
        match self {
            Self::Encrypt | Self::Decrypt | Self::Datakey => "encrypt",
            Self::Sign | Self::Verify => "sign",
            Self::AsymDecrypt => "asymmetric-decrypt",
            Self::Mac => "mac",
        }
    }
}

/// What the caller asks for; [`Plan::new`] checks it.
#[derive(Clone, Debug)]
pub struct Options {
    /// The operation.
    pub op: Op,
    /// Key id or alias.
    pub key: String,
    /// Payload bytes (`None`: 1024; 32 for asym-decrypt; for datakey the data key's length, 16
    /// or 32, default 16).
    pub size: Option<u32>,
    /// How long to measure.
    pub duration: Duration,
    /// How long to load the server before measuring.
    pub warmup: Duration,
    /// Concurrent request loops (at least 1).
    pub concurrency: u32,
    /// Connections the loops are spread over (at least 1, at most `concurrency`).
    pub connections: u32,
    /// Paced load: this many requests per second in total, spread evenly over the loops.
    pub rate: Option<u64>,
    /// The server's process id, for its CPU time (`None`: found for a local endpoint).
    pub server_pid: Option<u32>,
    /// Print a progress line to stderr each second.
    pub progress: bool,
}

/// Why [`Options`] cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// More connections than request loops: some connections would stay idle.
    #[error(
        "--connections {connections} is more than --concurrency {concurrency}: some connections would stay idle"
    )]
    IdleConnections {
        /// Connections asked for.
        connections: u32,
        /// Request loops asked for.
        concurrency: u32,
    },
    /// A loop count or connection count of zero.
    #[error("--concurrency and --connections must be at least 1")]
    NoLoops,
    /// `datakey` with a size that is no data key length.
    #[error("--size {0} is not a data key length")]
    DataKeySize(u32),
    /// The CPU time of the process given cannot be read.
    #[error("--server-pid {pid}: cannot read its CPU time: {source}")]
    ServerPid {
        /// The process id given.
        pid: u32,
        /// Why it cannot be read.
        source: io::Error,
    },
}

/// A checked run.
#[derive(Debug)]
pub struct Plan {
    op: Op,
    key: String,
    size: u32,
    duration: Duration,
    warmup: Duration,
    concurrency: u32,
    connections: u32,
    server_pid: Option<u32>,
    progress: bool,
    /// Time between two sends of one loop, when the load is paced (`rate`).
    period: Option<Duration>,
}

impl Plan {
    /// Checks `options` and fills in the default size.
    ///
    /// # Errors
    /// [`PlanError`]: idle connections, no loops, a data key size other than 16 or 32, or a
    /// server process whose CPU time cannot be read.
    pub fn new(options: Options) -> Result<Self, PlanError> {
        let o = options;
        if o.concurrency == 0 || o.connections == 0 {
            return Err(PlanError::NoLoops);
        }
        if o.connections > o.concurrency {
            return Err(PlanError::IdleConnections {
                connections: o.connections,
                concurrency: o.concurrency,
            });
        }
        let size = match (o.op, o.size) {
            (Op::Datakey, None | Some(16 | 32)) => o.size.unwrap_or(16),
            (Op::Datakey, Some(other)) => return Err(PlanError::DataKeySize(other)),
            (Op::AsymDecrypt, size) => size.unwrap_or(DEFAULT_ASYM_SIZE),
            (Op::Encrypt | Op::Decrypt | Op::Sign | Op::Verify | Op::Mac, size) => {
                size.unwrap_or(DEFAULT_SIZE)
            }
        };
        if let Some(pid) = o.server_pid {
            procfs::cpu_ticks(pid).map_err(|source| PlanError::ServerPid { pid, source })?;
        }
        #[allow(clippy::cast_precision_loss)] // a rate of at most 10^7 is exact in an f64
        let period = o
            .rate
            .filter(|&r| r > 0)
            .map(|r| Duration::from_secs_f64(f64::from(o.concurrency) / r as f64));
        Ok(Self {
            op: o.op,
            key: o.key,
            size,
            duration: o.duration,
            warmup: o.warmup,
            concurrency: o.concurrency,
            connections: o.connections,
            server_pid: o.server_pid,
            progress: o.progress,
            period,
        })
    }

    /// The operation.
    #[must_use]
    pub const fn op(&self) -> Op {
        self.op
    }

    /// The key id or alias.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How many channels [`run`] wants.
    #[must_use]
    pub const fn connections(&self) -> u32 {
        self.connections
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The server refused or failed the call, or the connection failed (a status with a
    /// source was made on this side: the server never answered).
    #[error("{}", status_message(.0))]
    Status(tonic::Status),
    /// The server found the prepared signature invalid.
    #[error("the server found the prepared signature invalid")]
    SignatureInvalid,
    /// The server returned a plaintext of another length than was encrypted.
    #[error("the server returned {got} bytes of plaintext, not {want}")]
    PlaintextLength {
        /// Bytes returned.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

/// The server's message, else the code's description; for a transport failure, its causes.
fn status_message(status: &tonic::Status) -> String {
    if let Some(source) = std::error::Error::source(status) {
        let mut out = format!("the connection to the server failed: {source}");
        let mut next = source.source();
        while let Some(cause) = next {
            out.push_str(&format!(": {cause}"));
            next = cause.source();
        }
        return out;
    }
    if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    }
}

/// Why a run stopped before it could report.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No channel was given.
    #[error("no connection was made")]
    NoConnection,
    /// A step before the load failed: preparing the input, or the first request.
    #[error("{step} failed: {failure}")]
    Probe {
        /// Which step, e.g. "the first request".
        step: &'static str,
        /// Why.
        failure: Failure,
    },
    /// The key's public key (asym-decrypt) is not one the client can encrypt to.
    #[error("the key's public key cannot be used here: {0}")]
    PublicKey(String),
    /// The payload cannot be encrypted to the key's public key (too long for RSA-OAEP).
    #[error("cannot encrypt {len} bytes to the key's public key: {reason}")]
    PayloadTooLong {
        /// The payload's length.
        len: usize,
        /// Why.
        reason: String,
    },
    /// A request loop panicked or was cancelled.
    #[error("a request loop failed: {0}")]
    Loop(String),
}

/// The multi-threaded runtime a run needs (one worker per core), not the single-threaded one of
/// a CLI command: the client must not be what limits the rate.
///
/// # Errors
/// When the runtime cannot be started.
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
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
    /// length, is a failure too.
    async fn send(self, client: &mut CryptoClient<Channel>) -> Result<(), Failure> {
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
                    return Err(Failure::SignatureInvalid);
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

const fn check_len(got: usize, want: usize) -> Result<(), Failure> {
    if got == want {
        Ok(())
    } else {
        Err(Failure::PlaintextLength { got, want })
    }
}

/// `size` bytes of a fixed pattern (the content does not matter to any operation measured).
fn payload(size: u32) -> Vec<u8> {
    (0..size)
        .map(|i| (i.wrapping_mul(31).wrapping_add(7) & 0xff) as u8)
        .collect()
}

fn probe(step: &'static str) -> impl FnOnce(tonic::Status) -> LoadError {
    move |status| LoadError::Probe {
        step,
        failure: Failure::Status(status),
    }
}

/// Makes the request for `plan.op`, with the inputs that need the server made first.
async fn prepare(plan: &Plan, client: &mut CryptoClient<Channel>) -> Result<Request, LoadError> {
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
        Op::Encrypt => Request::Encrypt(EncryptRequest {
            key,
            plaintext: data,
            context: Default::default(),
        }),
        Op::Decrypt => {
            let made = client
                .encrypt(EncryptRequest {
                    key,
                    plaintext: data,
                    context: Default::default(),
                })
                .await
                .map_err(probe("making the ciphertext to decrypt (Encrypt)"))?
                .into_inner();
            Request::Decrypt(
                DecryptRequest {
                    ciphertext: made.ciphertext,
                    context: Default::default(),
                },
                len,
            )
        }
        Op::Datakey => Request::DataKey(GenerateDataKeyRequest {
            key,
            key_spec: if plan.size == 32 { "aes-256" } else { "sm4" }.to_owned(),
            context: Default::default(),
            wrap_to_public_key: Vec::new(),
        }),
        Op::Sign => Request::Sign(sign),
        Op::Verify => {
            let signature = client
                .sign(sign.clone())
                .await
                .map_err(probe("making the signature to verify (Sign)"))?
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
        Op::AsymDecrypt => {
            let public = client
                .get_public_key(GetPublicKeyRequest {
                    key: key.clone(),
                    key_version: None,
                })
                .await
                .map_err(probe("fetching the public key (GetPublicKey)"))?
                .into_inner();
            let policy = kms_core::policy::Policy::new(kms_core::policy::PolicyMode::Standard);
            let public = kms_core::crypto::PublicKey::from_spki_der(policy, &public.public_key_der)
                .map_err(|e| LoadError::PublicKey(e.to_string()))?;
            let ciphertext =
                kms_core::crypto::encrypt_to_public_key(&public, &data).map_err(|e| {
                    LoadError::PayloadTooLong {
                        len,
                        reason: e.to_string(),
                    }
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
        Op::Mac => Request::Mac(GenerateMacRequest { key, data }),
    })
}

/// Where the server's CPU time comes from, or why it is unknown.
enum ServerCpu {
    Known { pid: u32, auto: bool, clk_tck: u64 },
    Unknown(String),
}

/// The server's process: `plan.server_pid`, else the process listening on the endpoint's port
/// when the endpoint is this machine's loopback.
fn server_cpu(plan: &Plan, endpoint: (&str, u16)) -> ServerCpu {
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
    let (host, port) = endpoint;
    if !procfs::is_local_host(host) {
        return ServerCpu::Unknown(format!(
            "the endpoint {host} is not on this machine's loopback; pass --server-pid if the server runs here"
        ));
    }
    match procfs::find_listener(port) {
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
                    result.first_error.get_or_insert_with(|| e.to_string());
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

/// Everything a run measured; `kms bench --json` prints it as is.
#[derive(Debug, Serialize)]
pub struct Report {
    pub op: &'static str,
    pub key: String,
    pub size: u32,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub concurrency: u32,
    pub connections: u32,
    /// Successful requests completed inside the window.
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub server_pid: Option<u32>,
    /// `flag` (--server-pid) or `auto` (the process listening on the endpoint's port).
    pub server_pid_source: Option<&'static str>,
    /// The server's CPU seconds in the window.
    pub server_cpu_s: Option<f64>,
    /// Server CPU seconds per second of the window: how many cores it kept busy.
    pub server_cpu_cores: Option<f64>,
    /// Server CPU time (user + system) per request completed in the window (failed ones included).
    pub server_cpu_us_per_request: Option<f64>,
    /// Why the server's CPU time is unknown, when it is.
    pub server_cpu_note: Option<String>,
    /// This client's own CPU time per request.
    pub client_cpu_us_per_request: Option<f64>,
    /// The tick rate of the CPU accounting (`getconf CLK_TCK`).
    pub clock_ticks_per_s: Option<u64>,
    /// The paced load asked for with `--rate` (`None`: unpaced).
    pub target_requests_per_s: Option<f64>,
    /// The server's resident memory at the start and end of the window and its highest sample
    /// (one a second), in MiB: flat over a long run means no leak.
    pub server_rss_mib_start: Option<f64>,
    pub server_rss_mib_end: Option<f64>,
    pub server_rss_mib_max: Option<f64>,
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

/// Runs `plan` over `channels` (one per connection, already connected; at least one) to the
/// server at `endpoint` (host and port, to find its process when `server_pid` was not given).
///
/// # Errors
/// [`LoadError`]: no channel, or a failure before the load starts (preparing the input, the
/// probe request). Failures during the load are counted in the [`Report`], not returned.
pub async fn run(
    plan: &Plan,
    channels: Vec<Channel>,
    endpoint: (&str, u16),
) -> Result<Report, LoadError> {
    let cpu_source = server_cpu(plan, endpoint);
    let mut first = CryptoClient::new(channels.first().cloned().ok_or(LoadError::NoConnection)?);
    let request = prepare(plan, &mut first).await?;
    request
        .clone()
        .send(&mut first)
        .await
        .map_err(|failure| LoadError::Probe {
            step: "the first request",
            failure,
        })?;

    let started = Instant::now();
    let window = Window {
        start: started + plan.warmup,
        end: started + plan.warmup + plan.duration,
    };
    let done = Arc::new(AtomicU64::new(0));
    let request = Arc::new(request);
    let loops: Vec<_> = (0..plan.concurrency as usize)
        .zip(channels.iter().cycle())
        .map(|(i, channel)| {
            // Paced loops start spread over one period, not all at once.
            #[allow(clippy::cast_precision_loss)] // i < 4096
            let pacing = plan
                .period
                .map(|p| (p.mul_f64(i as f64 / f64::from(plan.concurrency)), p));
            tokio::spawn(request_loop(
                CryptoClient::new(channel.clone()),
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
        let result = handle.await.map_err(|e| LoadError::Loop(e.to_string()))?;
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
        op: plan.op.name(),
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
    /// The report as labelled rows, in the order `kms bench` prints them.
    #[must_use]
    pub fn rows(&self) -> Vec<(&'static str, String)> {
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
        vec![
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
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(op: Op) -> Options {
        Options {
            op,
            key: "k".to_owned(),
            size: None,
            duration: Duration::from_secs(2),
            warmup: Duration::ZERO,
            concurrency: 4,
            connections: 2,
            rate: None,
            server_pid: None,
            progress: false,
        }
    }

    #[test]
    fn plans_fill_in_sizes_and_refuse_what_cannot_run() {
        let size = |op, size| {
            Plan::new(Options {
                size,
                ..options(op)
            })
            .map(|p| p.size)
        };
        assert_eq!(size(Op::Encrypt, None).ok(), Some(DEFAULT_SIZE));
        assert_eq!(size(Op::AsymDecrypt, None).ok(), Some(DEFAULT_ASYM_SIZE));
        assert_eq!(size(Op::Datakey, None).ok(), Some(16));
        assert_eq!(size(Op::Datakey, Some(32)).ok(), Some(32));
        assert!(matches!(
            size(Op::Datakey, Some(24)),
            Err(PlanError::DataKeySize(24))
        ));

        let idle = Plan::new(Options {
            connections: 5,
            ..options(Op::Mac)
        });
        assert!(matches!(
            idle,
            Err(PlanError::IdleConnections {
                connections: 5,
                concurrency: 4
            })
        ));
        let none = Plan::new(Options {
            concurrency: 0,
            connections: 0,
            ..options(Op::Mac)
        });
        assert!(matches!(none, Err(PlanError::NoLoops)));
        // No process has the largest pid.
        let pid = Plan::new(Options {
            server_pid: Some(u32::MAX),
            ..options(Op::Mac)
        });
        assert!(
            matches!(pid, Err(PlanError::ServerPid { pid: u32::MAX, ref source }) if source.kind() == io::ErrorKind::NotFound),
            "{pid:?}"
        );

        // 4 loops sharing 100 requests/s: each sends every 40 ms.
        let paced = Plan::new(Options {
            rate: Some(100),
            ..options(Op::Sign)
        })
        .unwrap();
        assert_eq!(paced.period, Some(Duration::from_millis(40)));
        assert_eq!(
            (paced.op(), paced.key(), paced.connections()),
            (Op::Sign, "k", 2)
        );
    }

    #[test]
    fn op_names_are_those_of_the_command_line() {
        let all = [
            Op::Encrypt,
            Op::Decrypt,
            Op::Datakey,
            Op::Sign,
            Op::Verify,
            Op::AsymDecrypt,
            Op::Mac,
        ];
        let names: Vec<_> = all.iter().map(|op| op.name()).collect();
        assert_eq!(
            names,
            [
                "encrypt",
                "decrypt",
                "datakey",
                "sign",
                "verify",
                "asym-decrypt",
                "mac"
            ]
        );
        assert_eq!(Op::Verify.purpose(), "sign");
        assert_eq!(Op::AsymDecrypt.purpose(), "asymmetric-decrypt");
    }

    #[test]
    fn the_report_divides_cpu_time_by_the_requests_completed() {
        let plan = Plan::new(options(Op::Encrypt)).unwrap();
        let mut latency = histogram();
        for us in [1_000, 2_000, 3_000] {
            latency.record(us).unwrap();
        }
        let cpu = ServerCpu::Known {
            pid: 7,
            auto: true,
            clk_tck: 100,
        };
        let before = CpuSample {
            server: Some(1_000),
            client: Some(10),
        };
        // 2 server ticks at 100/s = 20 ms over 3 + 1 completed requests: 5000 µs each.
        let after = CpuSample {
            server: Some(1_002),
            client: Some(11),
        };
        let rss = Rss {
            start_kib: 1024,
            end_kib: 2048,
            max_kib: 4096,
        };
        let r = report(
            &plan,
            &latency,
            1,
            Some("sealed".to_owned()),
            &cpu,
            (before, after),
            Some(rss),
        );
        assert_eq!(r.requests, 3);
        assert_eq!(r.errors, 1);
        assert_eq!(r.first_error.as_deref(), Some("sealed"));
        assert!((r.requests_per_s - 1.5).abs() < 1e-9, "{r:?}");
        assert!((r.p50_ms - 2.0).abs() < 0.01, "{r:?}");
        assert_eq!(r.server_pid, Some(7));
        assert_eq!(r.server_pid_source, Some("auto"));
        assert_eq!(r.server_cpu_us_per_request, Some(5_000.0));
        assert_eq!(r.client_cpu_us_per_request, Some(2_500.0));
        assert_eq!(r.server_cpu_cores, Some(0.01));
        assert_eq!(
            (
                r.server_rss_mib_start,
                r.server_rss_mib_end,
                r.server_rss_mib_max
            ),
            (Some(1.0), Some(2.0), Some(4.0))
        );
        let rows = r.rows();
        let row = |name: &str| {
            rows.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(row("requests").as_deref(), Some("3"));
        assert_eq!(row("first error").as_deref(), Some("sealed"));

        // A server whose CPU time stopped being readable says so instead of a number.
        let gone = CpuSample {
            server: None,
            client: Some(11),
        };
        let r = report(&plan, &latency, 0, None, &cpu, (before, gone), None);
        assert_eq!(r.server_cpu_us_per_request, None);
        assert_eq!(
            r.server_cpu_note.as_deref(),
            Some("the server process's CPU time could not be read (did it exit?)")
        );
    }

    #[test]
    fn failures_read_as_the_server_said_them() {
        assert_eq!(
            Failure::Status(tonic::Status::failed_precondition("key is disabled")).to_string(),
            "key is disabled"
        );
        assert_eq!(
            Failure::Status(tonic::Status::new(tonic::Code::Unavailable, "")).to_string(),
            tonic::Code::Unavailable.description()
        );
        assert_eq!(
            Failure::PlaintextLength { got: 3, want: 4 }.to_string(),
            "the server returned 3 bytes of plaintext, not 4"
        );
    }
}
