//! The `kms-server` command line: `serve`, `check-config`, `migrate`, `selftest` (and `dev`).

use std::ffi::OsString;
use std::io::Write;

use clap::{Parser, Subcommand};
use kms_core::policy::{Policy, PolicyMode};
use kms_core::selftest;

use crate::logging::LogFormat;

/// Exit status when every self-test passed.
pub const EXIT_OK: u8 = 0;
/// Exit status when a self-test failed (or the output could not be written).
pub const EXIT_FAILED: u8 = 1;

/// A rate for `--rate-limit`: a finite number above zero.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{text:?} is not a rate above zero (requests per second)"
        )),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "kms-server",
    version,
    about = "KMS server for GM and international algorithms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a development KMS: dev PKI, 1-of-1 unseal share in a file, CLI profiles. NOT for
    /// production.
    Dev {
        /// Folder for the PKI, profiles, share and store (reused when it exists).
        #[arg(long, default_value = "kms-dev")]
        dir: std::path::PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
        /// Address of the TLCP (GB/T 38636) listener.
        #[arg(long, default_value = "127.0.0.1:7444")]
        tlcp_listen: String,
        /// Run the gm-only policy: SM2/SM3/SM4 keys only, and RFC 8998 (TLS_SM4_GCM_SM3,
        /// curveSM2, SM2 certificates) only on the wire; the profiles speak RFC 8998.
        #[arg(long)]
        gm_only: bool,
        /// Log lines as text or JSON (default: text on a terminal, JSON otherwise).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
        /// Sustained requests (batch items count one each) per second per principal, the
        /// burst twice that; `serve` takes `[limits] rate_per_second`. The benchmarks raise it
        /// so that batches measure the server, not the limiter.
        #[arg(long, default_value_t = 20_000.0, value_parser = positive_rate)]
        rate_limit: f64,
    },
    /// Serve the KMS over mutual TLS with the given configuration file (TOML).
    Serve {
        /// Path to the configuration file.
        #[arg(long, short)]
        config: std::path::PathBuf,
        /// Log lines as text or JSON (default: `[log] format`, else text on a terminal and JSON
        /// otherwise).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Check a production configuration file without serving: files readable, private keys
    /// private, certificates valid for their use and not expired, policy and certificates in
    /// agreement, data directory private. Exit 1 listing every problem, 0 with a summary.
    CheckConfig {
        /// Path to the configuration file.
        config: std::path::PathBuf,
    },
    /// Copy a stopped server's sled store into an empty PostgreSQL schema (bytes as stored: key
    /// material stays wrapped), verified by per-tree counts and SM3 checksums on both sides.
    Migrate {
        /// The source: sled:PATH, where PATH is the store directory (DATA_DIR/store).
        #[arg(long)]
        from: String,
        /// The target: postgres:URL, with no password in the URL (use --password-file or
        /// KMS_POSTGRES_PASSWORD).
        #[arg(long)]
        to: String,
        /// The schema to create and fill; it must be empty. Nodes then use it as postgres_schema.
        #[arg(long, default_value = "kms")]
        schema: String,
        /// A file whose first line is the PostgreSQL password.
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
    },
    /// The benchmarks' transport floor: the server's TLS, HTTP/2 and tonic stack answering
    /// Encrypt with its plaintext (no crypto, no audit), with a dev folder's certificates
    /// (`bench/run.py` loads it beside the KMS). NOT a KMS.
    #[command(hide = true)]
    Floor {
        /// A dev folder made by `kms-server dev`.
        #[arg(long, default_value = "kms-dev")]
        dir: std::path::PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7445")]
        listen: String,
    },
    /// Run the power-on self-tests and print each algorithm's result; exit 1 if any failed.
    Selftest {
        /// Test only what a GM-only policy allows (SM2, SM3, SM4).
        #[arg(long)]
        gm_only: bool,
    },
}

/// Runs `kms-server` with `args` (the program name first), writing normal output to `out` and
/// diagnostics to `err`. Returns the process exit status: 0 on success, 1 when a self-test
/// failed, 2 for a usage error.
pub fn run_cli<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that go to stdout with status 0.
            let rendered = e.render();
            // Best effort: there is nowhere left to report a failed write of a usage message.
            let _ = if e.use_stderr() {
                write!(err, "{rendered}")
            } else {
                write!(out, "{rendered}")
            };
            return u8::try_from(e.exit_code()).unwrap_or(EXIT_FAILED);
        }
    };
    match cli.command {
        Command::Serve { config, log_format } => {
            crate::serve::serve_command(&config, log_format, err)
        }
        Command::Dev {
            dir,
            listen,
            tlcp_listen,
            gm_only,
            log_format,
            rate_limit,
        } => {
            let transport = if gm_only {
                crate::tls::Transport::GmOnly
            } else {
                crate::tls::Transport::Standard
            };
            crate::dev::dev_command(
                &crate::dev::DevArgs {
                    dir,
                    listen,
                    tlcp_listen,
                    transport,
                    log_format,
                    rate_limit,
                },
                out,
                err,
            )
        }
        Command::Floor { dir, listen } => crate::dev::floor_command(&dir, &listen, err),
        Command::CheckConfig { config } => {
            crate::check_config::check_config_command(&config, out, err)
        }
        Command::Migrate {
            from,
            to,
            schema,
            password_file,
        } => crate::migrate::migrate_command(
            &crate::migrate::MigrateArgs {
                from,
                to,
                schema,
                password_file,
            },
            out,
            err,
        ),
        Command::Selftest { gm_only } => {
            let mode = if gm_only {
                PolicyMode::GmOnly
            } else {
                PolicyMode::Standard
            };
            selftest_command(mode, out)
        }
    }
}

/// `kms-server selftest`: runs every self-test `mode` enables and prints the report.
fn selftest_command(mode: PolicyMode, out: &mut dyn Write) -> u8 {
    let report = selftest::run(Policy::from_config(mode));
    let written = writeln!(out, "self-tests (policy: {})", mode.name())
        .and_then(|()| writeln!(out, "{report}"));
    if report.all_passed() && written.is_ok() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}
