//! What a run measured: latency, errors, and the server's CPU time and memory from `/proc`.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::request::Window;
use crate::{Plan, procfs};

/// Where the server's CPU time comes from, or why it is unknown.
pub(crate) enum ServerCpu {
    Known { pid: u32, auto: bool, clk_tck: u64 },
    Unknown(String),
}

/// The server's process: `plan.server_pid`, else the process listening on the endpoint's port
/// when the endpoint is this machine's loopback.
pub(crate) fn server_cpu(plan: &Plan, endpoint: (&str, u16)) -> ServerCpu {
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
    /// Successful requests (calls) completed inside the window.
    pub requests: u64,
    pub requests_per_s: f64,
    /// Items per call (`--batch`; 1 for single calls).
    pub items_per_call: u32,
    /// Items of the successful requests, and their rate.
    pub items: u64,
    pub items_per_s: f64,
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
    /// ... and per item of those requests (as per request without `--batch`).
    pub server_cpu_us_per_item: Option<f64>,
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
pub(crate) struct CpuSample {
    server: Option<u64>,
    client: Option<u64>,
}

pub(crate) fn sample(server: &ServerCpu) -> CpuSample {
    CpuSample {
        server: match server {
            ServerCpu::Known { pid, .. } => procfs::cpu_ticks(*pid).ok(),
            ServerCpu::Unknown(_) => None,
        },
        client: procfs::cpu_ticks(std::process::id()).ok(),
    }
}

/// The server's resident memory over the window: first, last and highest sample (one a second).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rss {
    start_kib: u64,
    end_kib: u64,
    max_kib: u64,
}

/// Samples the server's RSS each second until the window ends; `None` when it cannot be read.
pub(crate) async fn rss_during(cpu_source: &ServerCpu, window: Window) -> Option<Rss> {
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
pub(crate) fn report(
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
        items_per_call: plan.items_per_call(),
        items: requests * u64::from(plan.items_per_call()),
        items_per_s: (requests * u64::from(plan.items_per_call())) as f64 / secs,
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
        server_cpu_us_per_item: per_request(server_us)
            .map(|us| us / f64::from(plan.items_per_call())),
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
            ("items/request", self.items_per_call.to_string()),
            ("items/s", format!("{:.1}", self.items_per_s)),
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
            ("server CPU/item", opt(self.server_cpu_us_per_item, "µs")),
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
    use crate::request::histogram;
    use crate::{Op, Options};

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
        assert_eq!((r.items, r.items_per_call), (3, 1));
        assert_eq!(r.server_cpu_us_per_item, Some(5_000.0));
        // In batches of 10: the same calls carry ten times the items, each a tenth of the CPU.
        let batched = Plan::new(Options {
            batch: Some(10),
            ..options(Op::Encrypt)
        })
        .unwrap();
        let r = report(&batched, &latency, 1, None, &cpu, (before, after), None);
        assert_eq!((r.requests, r.items, r.items_per_call), (3, 30, 10));
        assert!((r.items_per_s - 15.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.server_cpu_us_per_request, Some(5_000.0));
        assert_eq!(r.server_cpu_us_per_item, Some(500.0));
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
}
