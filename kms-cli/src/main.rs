//! `kms`, the KMS command-line client.
//!
//! Today it works offline only: `kms algorithms` lists the key specs this KMS offers. The admin,
//! auditor and application commands over gRPC come with the server's API.

mod algorithms;
mod args;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Args, Command};

fn main() -> ExitCode {
    let args = Args::parse();
    let mut stdout = io::stdout().lock();
    let result = match args.command {
        Command::Algorithms { gm_only } => algorithms::run(gm_only, &mut stdout),
    };
    match result.and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`kms algorithms | head -1`) is not worth a message.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kms: cannot write output: {e}");
            ExitCode::FAILURE
        }
    }
}
