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
//! 5. It reads the server's CPU time (`utime + stime` of its process, from `/proc/PID/stat`)
//!    at the start and end of the window and divides by the requests completed in it.
//!
//! The [`Report`]: requests/s, p50/p99/p999 latency (an HDR histogram at microsecond
//! resolution), errors and the first error's message, and CPU time per request of the server and
//! of this client.
//!
//! With [`Options::batch`], every request is a batch call (`kms.v1.CryptoBatch`) of that many
//! copies of the item: latency is per call, and the report adds items/s and the server's CPU
//! time per item. A batch counts as failed when any of its items failed.

mod error;
mod procfs;
mod report;
mod request;

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

pub use crate::error::{Failure, LoadError, PlanError};
pub use crate::report::Report;
use crate::report::{report, rss_during, sample, server_cpu};
use crate::request::{Clients, Window, histogram, prepare, request_loop, show_progress};

/// The payload size when `size` is left out: 1 KiB, but 32 bytes (a data key) for
/// `asym-decrypt`, which RSA-OAEP limits, and 16 (an SM4 key) for `datakey`.
const DEFAULT_SIZE: u32 = 1024;
const DEFAULT_ASYM_SIZE: u32 = 32;
/// The benchmark password's length (`hash-password`): a typical 14-character password.
const HASH_PASSWORD_LEN: u32 = 14;
/// The longest latency the histogram holds (longer ones are recorded as this): 10 minutes.
const MAX_LATENCY_US: u64 = 600_000_000;
/// The most items a batch may hold (the server's default `max_batch_items`).
const MAX_BATCH: u32 = 1000;

/// The operations a run can load the server with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Encrypt,
    Decrypt,
    Datakey,
    Sign,
    Verify,
    AsymDecrypt,
    Mac,
    /// The password shield's HashPassword (issue 22 item 2), each request a fresh seal.
    HashPassword,
    /// Tokenize card numbers (format pan), `--batch` of them per call (issue 22).
    Tokenize,
    /// VerifyRequest of a request signed here with HMAC-SM3 for each send (issue 22 item 3):
    /// a fresh nonce every time, so every request passes the replay guard once.
    VerifyRequest,
}

impl Op {
    /// Every operation, in the order `kms bench --help` lists them.
    pub const ALL: [Self; 10] = [
        Self::Encrypt,
        Self::Decrypt,
        Self::Datakey,
        Self::Sign,
        Self::Verify,
        Self::AsymDecrypt,
        Self::Mac,
        Self::HashPassword,
        Self::Tokenize,
        Self::VerifyRequest,
    ];

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
            Self::HashPassword => "hash-password",
            Self::Tokenize => "tokenize",
            Self::VerifyRequest => "verify-request",
        }
    }

    /// What the operation sends, for `kms bench --help`.
    #[must_use]
    pub const fn help(self) -> &'static str {
        match self {
            Self::Encrypt => "Encrypt --size bytes (an ENCRYPT key)",
            Self::Decrypt => "Decrypt a ciphertext of --size bytes made first (an ENCRYPT key)",
            Self::Datakey => {
                "Generate a data key of --size 16 (SM4, the default) or 32 (AES-256) bytes"
            }
            Self::Sign => "Sign a --size byte message (a SIGN key)",
            Self::Verify => "Verify a signature made first (a SIGN key)",
            Self::AsymDecrypt => {
                "Decrypt --size bytes (default 32) encrypted here to the key's public key"
            }
            Self::Mac => "MAC --size bytes (a MAC key)",
            Self::HashPassword => {
                "HashPassword with a password sealed here for each request (a PASSWORD key, and a PEPPER key as --pepper)"
            }
            Self::Tokenize => {
                "Tokenize --batch distinct 16-digit card numbers per call, format pan (a TOKENIZE key)"
            }
            Self::VerifyRequest => {
                "VerifyRequest of a --size byte body signed here with HMAC-SM3, a new nonce each time (a MAC key, its bytes as --partner-key)"
            }
        }
    }

    /// The operation named `name` (as [`Op::name`] gives it).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    /// The key purpose the operation needs, as `kms key create --purpose` takes it.
    #[must_use]
    pub const fn purpose(self) -> &'static str {
        match self {
            Self::Encrypt | Self::Decrypt | Self::Datakey => "encrypt",
            Self::Sign | Self::Verify => "sign",
            Self::AsymDecrypt => "asymmetric-decrypt",
            Self::Mac => "mac",
            Self::HashPassword => "password",
            Self::Tokenize => "tokenize",
            Self::VerifyRequest => "mac",
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
    /// Items per call through the batch RPC (1 to 1000); `None`: the single RPC.
    pub batch: Option<u32>,
    /// The pepper key (id or alias) of `hash-password`.
    pub pepper: Option<String>,
    /// The HMAC-SM3 key's bytes of `verify-request` (the partner's copy of the MAC key).
    pub partner_key: Option<Arc<kms_core::SecretBytes>>,
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
    /// Items per batch call, when the load goes through the batch RPC.
    batch: Option<u32>,
    /// The pepper key of `hash-password`.
    pepper: Option<String>,
    /// The MAC key's bytes of `verify-request`.
    partner_key: Option<Arc<kms_core::SecretBytes>>,
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
            // The password's length, not a payload: fixed.
            (Op::HashPassword, _) => HASH_PASSWORD_LEN,
            (
                Op::Encrypt
                | Op::Decrypt
                | Op::Sign
                | Op::Verify
                | Op::Mac
                | Op::Tokenize
                | Op::VerifyRequest,
                size,
            ) => size.unwrap_or(DEFAULT_SIZE),
        };
        if let Some(n) = o.batch {
            let why = match o.op {
                Op::AsymDecrypt => Some("asymmetric decryption has no batch form"),
                Op::HashPassword => Some("the password shield has no batch form"),
                Op::VerifyRequest => Some("request verification has no batch form"),
                Op::Encrypt
                | Op::Decrypt
                | Op::Datakey
                | Op::Sign
                | Op::Verify
                | Op::Mac
                | Op::Tokenize => {
                    (!(1..=MAX_BATCH).contains(&n)).then_some("a batch holds 1 to 1000 items")
                }
            };
            if let Some(why) = why {
                return Err(PlanError::Batch {
                    op: o.op.name(),
                    size: n,
                    why,
                });
            }
        }
        if o.op == Op::HashPassword && o.pepper.is_none() {
            return Err(PlanError::NoPepper);
        }
        if o.op == Op::VerifyRequest && o.partner_key.is_none() {
            return Err(PlanError::NoPartnerKey);
        }
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
            batch: o.batch,
            pepper: o.pepper,
            partner_key: o.partner_key,
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

    /// Items per call (1 without `--batch`).
    #[must_use]
    pub fn items_per_call(&self) -> u32 {
        self.batch.unwrap_or(1)
    }

    /// How many channels [`run`] wants.
    #[must_use]
    pub const fn connections(&self) -> u32 {
        self.connections
    }
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
    let mut first = Clients::new(channels.first().cloned().ok_or(LoadError::NoConnection)?);
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
                Clients::new(channel.clone()),
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
            batch: None,
            pepper: None,
            partner_key: None,
        }
    }

    #[test]
    fn batches_fit_the_batch_rpcs() {
        let plan = |op, batch| {
            Plan::new(Options {
                batch,
                ..options(op)
            })
        };
        assert_eq!(plan(Op::Encrypt, Some(100)).unwrap().items_per_call(), 100);
        assert_eq!(plan(Op::Encrypt, None).unwrap().items_per_call(), 1);
        assert!(plan(Op::Mac, Some(1000)).is_ok());
        for (op, n, why) in [
            (Op::Encrypt, 0, "a batch holds 1 to 1000 items"),
            (Op::Sign, 1001, "a batch holds 1 to 1000 items"),
            (
                Op::AsymDecrypt,
                10,
                "asymmetric decryption has no batch form",
            ),
        ] {
            match plan(op, Some(n)) {
                Err(PlanError::Batch { size, why: w, .. }) => assert_eq!((size, w), (n, why)),
                other => panic!("{op:?} {n}: {other:?}"),
            }
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
        // The password shield needs its pepper key, and has no batch form.
        assert!(matches!(
            Plan::new(options(Op::HashPassword)),
            Err(PlanError::NoPepper)
        ));
        let pepper = || Some("pepper".to_owned());
        assert!(matches!(
            Plan::new(Options {
                batch: Some(10),
                pepper: pepper(),
                ..options(Op::HashPassword)
            }),
            Err(PlanError::Batch { .. })
        ));
        assert!(
            Plan::new(Options {
                pepper: pepper(),
                ..options(Op::HashPassword)
            })
            .is_ok()
        );
        // Request verification signs with the partner's copy of the MAC key; no batch form.
        assert!(matches!(
            Plan::new(options(Op::VerifyRequest)),
            Err(PlanError::NoPartnerKey)
        ));
        let partner = || Some(Arc::new(kms_core::SecretBytes::from_vec(vec![7; 32])));
        assert!(matches!(
            Plan::new(Options {
                batch: Some(10),
                partner_key: partner(),
                ..options(Op::VerifyRequest)
            }),
            Err(PlanError::Batch { .. })
        ));
        assert!(
            Plan::new(Options {
                partner_key: partner(),
                ..options(Op::VerifyRequest)
            })
            .is_ok()
        );
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
            Op::HashPassword,
            Op::Tokenize,
            Op::VerifyRequest,
        ];
        assert_eq!(all, Op::ALL);
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
                "mac",
                "hash-password",
                "tokenize",
                "verify-request"
            ]
        );
        assert_eq!(Op::VerifyRequest.purpose(), "mac");
        assert_eq!(Op::Verify.purpose(), "sign");
        assert_eq!(Op::HashPassword.purpose(), "password");
        assert_eq!(Op::AsymDecrypt.purpose(), "asymmetric-decrypt");
    }
}
