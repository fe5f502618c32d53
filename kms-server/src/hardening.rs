//! Process hardening: the ONE module allowed `unsafe` (four libc calls, each commented).
//!
//! Keys must not reach swap or a core dump (KEY-3): memory is locked with `mlockall`, core dumps
//! are disabled with `RLIMIT_CORE = 0`, and the process is marked non-dumpable so that ptrace
//! attach and /proc/PID/mem are refused to other processes of the same user. Whatever the
//! server writes (store, audit archive, dev PKI) is its owner's alone: the umask is set to 077
//! whatever the caller's was, and the data directory is made 0700 ([`private_dir`]).
#![allow(unsafe_code)]

/// What hardening achieved; the server logs it at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hardening {
    pub memory_locked: Result<(), String>,
    pub core_dumps_disabled: Result<(), String>,
    pub non_dumpable: Result<(), String>,
    /// The file mode creation mask the caller had, now replaced by 077.
    pub previous_umask: u32,
}

impl Default for Hardening {
    fn default() -> Self {
        Self {
            memory_locked: Ok(()),
            core_dumps_disabled: Ok(()),
            non_dumpable: Ok(()),
            previous_umask: 0o077,
        }
    }
}

/// A libc call's result: `Ok` for 0, else the errno it left, read at once (before the next
/// call can overwrite it).
fn checked(rc: libc::c_int) -> Result<(), String> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// Applies every measure it can and reports each.
#[must_use]
pub fn harden() -> Hardening {
    // MCL_ONFAULT: lock pages as they are first touched rather than every page mapped. The
    // allocator reserves far more address space than it uses (~1 GB against ~95 MB resident);
    // locking it all up front would fail allocations under a finite RLIMIT_MEMLOCK.
    // SAFETY: mlockall takes flags only and touches no Rust-managed memory.
    let memory_locked = checked(unsafe {
        libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT)
    });
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `zero` is a valid rlimit that outlives the call; setrlimit only reads it.
    let core_dumps_disabled = checked(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) });
    // SAFETY: PR_SET_DUMPABLE takes one integer argument; the rest are ignored.
    let non_dumpable = checked(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) });
    // SAFETY: umask takes a mode and returns the previous one; it cannot fail.
    let previous_umask = unsafe { libc::umask(0o077) };
    Hardening {
        memory_locked,
        core_dumps_disabled,
        non_dumpable,
        previous_umask,
    }
}

/// Logs what was and was not achieved, so an operator can see why (the server keeps running).
pub fn log(h: &Hardening) {
    for (what, r) in [
        ("memory locked (mlockall)", &h.memory_locked),
        ("core dumps disabled", &h.core_dumps_disabled),
        ("process non-dumpable", &h.non_dumpable),
    ] {
        match r {
            Ok(()) => tracing::info!(measure = what, "hardening applied"),
            Err(e) => tracing::warn!(measure = what, reason = %e, "hardening not applied"),
        }
    }
    tracing::info!(
        previous = format!("{:03o}", h.previous_umask),
        "files are created owner-only (umask 077)"
    );
}

/// Creates `dir` (and its parents) if needed and makes it 0700, whatever it was: the store,
/// the audit archive and the dev PKI live below it.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
