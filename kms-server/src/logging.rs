//! The server's log (stderr): its format and which lines it keeps.
//!
//! Every call already has an audit record, so the log does not repeat it by default (issue 20
//! item 3): the per-call lines (target [`REQUEST_TARGET`], written by the audit layer) are off
//! unless `[log] requests = "info"`, while refusals and failures stay in at WARN/ERROR with
//! their request id (`status.rs`). `KMS_LOG` (an `EnvFilter` directive) replaces the whole
//! default filter, as before.
//!
//! The format is human-readable on a terminal and JSON otherwise (what log shippers read), unless
//! `--log-format` or `[log] format` says which (issue 21 item 6).

use std::io::IsTerminal;

use serde::Deserialize;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// The target of the one per-call line the audit layer writes beside each record.
pub const REQUEST_TARGET: &str = "kms::audit";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event, coloured on a terminal.
    Human,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The format in force: the command line's, else the configuration's, else human on a
    /// terminal and JSON otherwise.
    #[must_use]
    pub fn choose(flag: Option<Self>, config: Option<Self>, stderr_is_terminal: bool) -> Self {
        flag.or(config).unwrap_or(if stderr_is_terminal {
            Self::Human
        } else {
            Self::Json
        })
    }
}

/// The level of the per-call lines: `debug` (default) keeps them out of the default filter,
/// `info` writes one per call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLines {
    #[default]
    Debug,
    Info,
}

/// `[log]` in kms.toml.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "human" or "json"; unset: human on a terminal, JSON otherwise.
    pub format: Option<LogFormat>,
    /// "debug" (default) or "info": the level of the one line per call.
    pub requests: RequestLines,
}

/// The filter directive: `KMS_LOG` when set, else INFO with the per-call lines at the level
/// `requests` asks for. (The audit layer writes them at INFO under [`REQUEST_TARGET`]; "debug"
/// lets only that target's warnings through, so they show again under `KMS_LOG=debug`.)
#[must_use]
pub fn filter_directive(requests: RequestLines, kms_log: Option<&str>) -> String {
    if let Some(d) = kms_log.filter(|d| !d.trim().is_empty()) {
        return d.to_owned();
    }
    match requests {
        RequestLines::Debug => format!("info,{REQUEST_TARGET}=warn"),
        RequestLines::Info => format!("info,{REQUEST_TARGET}=debug"),
    }
}

/// The subscriber writing `format` lines through `writer`, filtered by `directive` (an invalid
/// directive falls back to the default filter rather than logging nothing).
pub fn subscriber<W>(
    format: LogFormat,
    directive: &str,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_new(directive).unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(filter_directive(RequestLines::Debug, None))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(builder.json().finish()),
        LogFormat::Human => Box::new(builder.with_ansi(ansi).finish()),
    }
}

/// Installs the process's log on stderr, written by a worker thread through a buffer: a request
/// only formats its line and queues it; the worker writes whatever has queued in one system
/// call. Not lossy: when the queue is full, logging waits rather than drops lines. Keep the
/// returned guard alive until exit: dropping it flushes what is queued.
pub(crate) fn init(
    flag: Option<LogFormat>,
    config: LogConfig,
) -> tracing_appender::non_blocking::WorkerGuard {
    let terminal = std::io::stderr().is_terminal();
    let format = LogFormat::choose(flag, config.format, terminal);
    let directive = filter_directive(config.requests, std::env::var("KMS_LOG").ok().as_deref());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("kms-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    // Already installed (a test calling the command twice in one process): keep the first.
    let _ = subscriber(format, &directive, writer, terminal).try_init();
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_config_then_the_terminal() {
        use LogFormat::{Human, Json};
        assert_eq!(LogFormat::choose(None, None, true), Human);
        assert_eq!(LogFormat::choose(None, None, false), Json);
        assert_eq!(LogFormat::choose(None, Some(Human), false), Human);
        assert_eq!(LogFormat::choose(None, Some(Json), true), Json);
        assert_eq!(LogFormat::choose(Some(Json), Some(Human), true), Json);
        assert_eq!(LogFormat::choose(Some(Human), Some(Json), false), Human);
    }

    #[test]
    fn kms_log_replaces_the_default_filter() {
        assert_eq!(
            filter_directive(RequestLines::Debug, None),
            "info,kms::audit=warn"
        );
        assert_eq!(
            filter_directive(RequestLines::Info, None),
            "info,kms::audit=debug"
        );
        assert_eq!(
            filter_directive(RequestLines::Debug, Some("trace")),
            "trace"
        );
        assert_eq!(
            filter_directive(RequestLines::Info, Some("  ")),
            "info,kms::audit=debug"
        );
    }

    #[test]
    fn log_config_reads_format_and_requests_and_refuses_unknown_keys() {
        let c: LogConfig = toml::from_str("format = \"json\"\nrequests = \"info\"").unwrap();
        assert_eq!(c.format, Some(LogFormat::Json));
        assert_eq!(c.requests, RequestLines::Info);
        let d: LogConfig = toml::from_str("").unwrap();
        assert_eq!((d.format, d.requests), (None, RequestLines::Debug));
        let e = toml::from_str::<LogConfig>("requests = \"trace\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
        let e = toml::from_str::<LogConfig>("level = \"info\"").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
