//! `kms-server`: parses the command line and hands it to [`kms_server::run_cli`]; nothing else.

use std::io;
use std::process::ExitCode;

fn main() -> ExitCode {
    let code = kms_server::run_cli(std::env::args_os(), &mut io::stdout(), &mut io::stderr());
    ExitCode::from(code)
}
