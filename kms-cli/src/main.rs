//! `kms`, the KMS command-line client; everything is in the library (`kms_cli::main_with`).

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(kms_cli::main_with(std::env::args_os()))
}
