//! The server's CPU time from Linux's own accounting, and the process behind a local endpoint.
//!
//! Read from `/proc` only (no `libc`: the workspace denies `unsafe`):
//! - CPU time: fields 14 and 15 (`utime`, `stime`) of `/proc/PID/stat`, in clock ticks. They
//!   count every thread of the process, those that have exited included.
//! - Ticks per second: `getconf CLK_TCK` (what `sysconf(_SC_CLK_TCK)` returns), read once.
//! - The process listening on a local port: the socket's inode in `/proc/net/tcp{,6}` (state
//!   `0A`, LISTEN), then the process with an fd linked to `socket:[INODE]`.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::process::Command;

/// CPU time (user + system) of process `pid`, in clock ticks.
///
/// # Errors
/// When `/proc/PID/stat` cannot be read or is not in the expected form.
pub(crate) fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_cpu(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat is not in the expected form"),
        )
    })
}

/// `utime + stime` from the text of a `/proc/PID/stat` file. The second field, the command
/// name in parentheses, may itself hold spaces and parentheses: fields are counted from the last
/// `)`.
fn parse_stat_cpu(text: &str) -> Option<u64> {
    let (_, rest) = text.rsplit_once(')')?;
    // After the name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// Resident set size of process `pid`, in KiB (`VmRSS` of `/proc/PID/status`).
///
/// # Errors
/// When the file cannot be read or has no `VmRSS` line (a kernel thread, a zombie).
pub(crate) fn rss_kib(pid: u32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss_kib(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/status has no VmRSS line"),
        )
    })
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
}

/// Clock ticks per second, as `getconf CLK_TCK` prints it.
///
/// # Errors
/// A message when `getconf` cannot be run or prints something else than a positive number.
pub(crate) fn clock_ticks_per_second() -> Result<u64, String> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .map_err(|e| format!("cannot run `getconf CLK_TCK`: {e}"))?;
    if !out.status.success() {
        return Err(format!("`getconf CLK_TCK` failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) | Err(_) => Err(format!(
            "`getconf CLK_TCK` printed {:?}, not a tick rate",
            text.trim()
        )),
    }
}

/// Whether `host` names this machine's loopback (or the wildcard address), where a listening
/// socket can be looked up.
pub(crate) fn is_local_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// The process listening on TCP `port` on this machine.
///
/// # Errors
/// A message saying why none (or more than one) was found.
pub(crate) fn find_listener(port: u16) -> Result<u32, String> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        // tcp6 is absent when IPv6 is off: not an error.
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return Err(format!("no socket listens on port {port} on this machine"));
    }
    let mut pids = BTreeSet::new();
    let procs = fs::read_dir("/proc").map_err(|e| format!("cannot list /proc: {e}"))?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes of other users cannot be looked into (or have exited): skip them.
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = fs::read_link(fd.path())
                && let Some(inode) = socket_inode(&link.to_string_lossy())
                && inodes.contains(&inode)
            {
                pids.insert(pid);
                break;
            }
        }
    }
    let mut found = pids.into_iter();
    match (found.next(), found.next()) {
        (Some(pid), None) => Ok(pid),
        (None, _) => Err(format!(
            "a socket listens on port {port}, but its process cannot be seen (another user's?)"
        )),
        (Some(a), Some(b)) => Err(format!(
            "several processes hold the socket listening on port {port} ({a}, {b}, …)"
        )),
    }
}

/// The inodes of the LISTEN sockets on `port` in a `/proc/net/tcp` or `tcp6` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            let (_, port_hex) = local.rsplit_once(':')?;
            let local_port = u16::from_str_radix(port_hex, 16).ok()?;
            (*state == LISTEN && local_port == port && inode != 0).then_some(inode)
        })
        .collect()
}

/// `INODE` from an fd link `socket:[INODE]`.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_counts_from_the_last_parenthesis() {
        let line = "1234 (kms (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 \
                    123 456 789\n";
        assert_eq!(parse_stat_cpu(line), Some(325));
        assert_eq!(parse_stat_cpu("1234 (short) S 1 2"), None);
        assert_eq!(parse_stat_cpu("no parenthesis"), None);
    }

    #[test]
    fn rss_is_read_from_the_vmrss_line() {
        let status = "Name:\tkms-server\nVmPeak:\t  99999 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        assert_eq!(parse_rss_kib(status), Some(20480));
        assert_eq!(parse_rss_kib("Name:\tkthreadd\n"), None);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn our_own_cpu_time_and_the_tick_rate_can_be_read() {
        let ticks = cpu_ticks(std::process::id()).unwrap();
        // Nothing to compare with but that it parses; a busy loop makes it non-decreasing.
        assert!(cpu_ticks(std::process::id()).unwrap() >= ticks);
        assert!(clock_ticks_per_second().unwrap() > 0);
    }

    #[test]
    fn listening_sockets_are_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1DDB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1DDB 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n\
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 7643), vec![4242]);
        assert_eq!(listening_inodes(table, 22), vec![17]);
        assert!(listening_inodes(table, 80).is_empty());
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
    }

    #[test]
    fn a_listener_of_this_process_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(find_listener(port), Ok(std::process::id()));
        drop(listener);
        assert_eq!(
            find_listener(port),
            Err(format!("no socket listens on port {port} on this machine"))
        );
    }

    #[test]
    fn only_loopback_hosts_are_local() {
        for local in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "0.0.0.0"] {
            assert!(is_local_host(local), "{local}");
        }
        for remote in ["kms.example", "10.0.0.1", "2001:db8::1"] {
            assert!(!is_local_host(remote), "{remote}");
        }
    }
}
