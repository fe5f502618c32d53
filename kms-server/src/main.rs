//! `kms-server`: parses the command line and hands it to [`kms_server::run_cli`]; nothing else.

use std::io;
use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: the request path allocates many short-lived buffers (TLS
/// records, HTTP/2 frames, protobuf messages), and glibc spent ~15 % of the server's CPU on them
/// (docs/BENCHMARKS.md). Secrets are wiped by their own types before they are freed, whatever
/// the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let code = kms_server::run_cli(std::env::args_os(), &mut io::stdout(), &mut io::stderr());
    ExitCode::from(code)
}
