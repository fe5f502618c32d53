//! `kms`, the KMS command-line client, as a library: the binary (`src/main.rs`) is [`main_with`]
//! and nothing else, so tests drive the same code.
//!
//! Layers (STYLE.md §3, §4 rule 8): [`args`] is what clap parses; [`resolve`] turns the connection
//! flags and environment into checked [`client::Connection`] settings; [`client`] builds the
//! mutual-TLS channel; the command modules call the gRPC API and print through [`output`] and
//! [`files`]; every failure is an [`error::CliError`] with a hint and an exit code.

mod algorithms;
pub mod args;
pub mod client;
mod commands;
pub mod csv;
pub mod error;
pub mod files;
pub mod output;
pub mod period;
pub mod resolve;

use std::ffi::OsString;

use clap::Parser as _;

pub use crate::error::{CliError, ExitKind};

/// Runs `kms` with `args` (the program name first) and returns the process exit code: 0 on
/// success, 2 for usage errors, and the [`ExitKind`] code of any other failure, after printing
/// `error: …` and `hint: …` to stderr.
pub fn main_with<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match args::Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            // --help and --version come this way too, to stdout with status 0. Best effort: there is
            // nowhere left to report a failed write of a usage message.
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(ExitKind::Usage.code());
        }
    };
    match commands::run(args) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("{err}");
            err.exit_code()
        }
    }
}
