//! `kms-server` exactly as shipped — its `main` is this one call to [`kms_server::run_cli`] —
//! built as a binary of this package so that the tests here can run the real server as a child
//! process: Cargo sets `CARGO_BIN_EXE_<name>` only for a package's own binaries, and builds only
//! those before its integration tests (a path to `target/debug/kms-server` could be stale).

use std::io;
use std::process::ExitCode;

fn main() -> ExitCode {
    let code = kms_server::run_cli(std::env::args_os(), &mut io::stdout(), &mut io::stderr());
    ExitCode::from(code)
}
