//! The command line as clap parses it.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kms", version, about = "Command-line client for the KMS")]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List the key specs this KMS offers, the purposes each can serve, and which are GM algorithms.
    Algorithms {
        /// Only the specs a GM-only policy allows (SM2, SM3, SM4).
        #[arg(long)]
        gm_only: bool,
    },
}
