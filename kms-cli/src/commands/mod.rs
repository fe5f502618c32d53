//! One file per command group; this file connects and dispatches.

mod access;
mod approvals;
mod audit;
mod batch;
mod bench;
mod crypto;
mod envelope;
mod keys;
mod password;
mod pki;
mod request;
mod system;
mod tokenize;
mod transfer;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory as _;
use indicatif::{ProgressBar, ProgressStyle};
use kms_proto::v1::audit_client::AuditClient;
use kms_proto::v1::crypto_batch_client::CryptoBatchClient;
use kms_proto::v1::crypto_client::CryptoClient;
use kms_proto::v1::key_admin_client::KeyAdminClient;
use kms_proto::v1::system_client::SystemClient;
use kms_proto::v1::tokenization_client::TokenizationClient;
use tonic::transport::Channel;

use crate::args::{
    Args, AuditCommand, Command, InventoryCommand, PasswordCommand, Remote, RequestCommand,
};
use crate::client::{self, ClientError};
use crate::error::{CliError, ExitKind};
use crate::resolve;

/// What every remote command gets: the channel and the output mode.
pub(crate) struct Ctx {
    /// `--json`.
    pub(crate) json: bool,
    /// The connected mTLS channel.
    channel: Channel,
}

impl Ctx {
    pub(crate) fn system(&self) -> SystemClient<Channel> {
        SystemClient::new(self.channel.clone())
    }

    pub(crate) fn admin(&self) -> KeyAdminClient<Channel> {
        KeyAdminClient::new(self.channel.clone())
    }

    pub(crate) fn crypto(&self) -> CryptoClient<Channel> {
        CryptoClient::new(self.channel.clone())
    }

    /// The batch client. A batch's answer can be larger than the request (each ciphertext adds
    /// its header and tag) and than gRPC's usual 4 MiB receive limit.
    pub(crate) fn batch(&self) -> CryptoBatchClient<Channel> {
        CryptoBatchClient::new(self.channel.clone()).max_decoding_message_size(64 * 1024 * 1024)
    }

    /// The tokenization client (answers of 1000 values fit gRPC's usual limit, but a server
    /// with a larger batch limit may answer more).
    pub(crate) fn tokens(&self) -> TokenizationClient<Channel> {
        TokenizationClient::new(self.channel.clone()).max_decoding_message_size(64 * 1024 * 1024)
    }

    pub(crate) fn audit(&self) -> AuditClient<Channel> {
        AuditClient::new(self.channel.clone())
    }
}

/// A command that needs the server.
enum Online {
    Remote(Remote),
    AuditPublicKey { out: Option<PathBuf> },
    AuditExport { out: Option<PathBuf> },
    InventoryExport { out: Option<PathBuf> },
}

/// Runs a parsed command line.
pub(crate) fn run(args: Args) -> Result<(), CliError> {
    let Args {
        profile,
        json,
        timeout,
        command,
    } = args;
    let online = match command {
        // Sealing to a public-key file is what a mobile app does: no server.
        Command::Remote(Remote::Password(PasswordCommand::Seal(a))) if a.public_key.is_some() => {
            return tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| CliError::other(format!("cannot start the async runtime: {e}")))?
                .block_on(password::seal(None, json, a));
        }
        // Signing with a private-key file is what a partner does: no server.
        Command::Remote(Remote::Request(RequestCommand::Sign(a))) if a.private_key.is_some() => {
            return tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| CliError::other(format!("cannot start the async runtime: {e}")))?
                .block_on(request::sign(None, a));
        }
        Command::Remote(remote) => Online::Remote(remote),
        // Verification is offline: the files and the public key, no connection settings needed.
        Command::Audit(AuditCommand::Verify {
            files,
            public_key,
            from_anchor,
        }) => {
            return audit::verify_trail(&files, &public_key, from_anchor, json);
        }
        Command::Inventory(InventoryCommand::Verify { file, public_key }) => {
            return audit::verify_inventory_file(&file, &public_key, json);
        }
        Command::Audit(AuditCommand::PublicKey { out }) => Online::AuditPublicKey { out },
        Command::Audit(AuditCommand::Export { out }) => Online::AuditExport { out },
        Command::Inventory(InventoryCommand::Export { out }) => Online::InventoryExport { out },
        Command::Algorithms { gm_only } => {
            if json {
                return crate::output::print_json(&crate::algorithms::rows(gm_only));
            }
            let mut out = Vec::new();
            crate::algorithms::run(gm_only, &mut out).map_err(|e| CliError::io("output", &e))?;
            return crate::files::write_stdout(&out);
        }
        Command::Pki(cmd) => return pki::run(cmd, json),
        // Its own multi-threaded runtime and connections: see bench.rs.
        Command::Bench(a) => {
            return bench::run(a, profile.as_deref(), json, Duration::from_secs(timeout));
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "kms", &mut out);
            return crate::files::write_stdout(&out);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::other(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let ctx = connect(profile.as_deref(), json, Duration::from_secs(timeout)).await?;
        match online {
            Online::Remote(remote) => dispatch(&ctx, remote).await,
            Online::AuditPublicKey { out } => audit::public_key(&ctx, out).await,
            Online::AuditExport { out } => audit::export(&ctx, out).await,
            Online::InventoryExport { out } => audit::inventory_export(&ctx, out).await,
        }
    })
}

async fn dispatch(ctx: &Ctx, command: Remote) -> Result<(), CliError> {
    match command {
        Remote::Status => system::status(ctx).await,
        Remote::Init(args) => system::init(ctx, args).await,
        Remote::Unseal { share_files } => system::unseal(ctx, &share_files).await,
        Remote::Seal => system::seal(ctx).await,
        Remote::Backup { out, approval } => system::backup(ctx, &out, approval).await,
        Remote::Approve { id, digest } => approvals::approve(ctx, id, digest).await,
        Remote::Reject { id, reason } => approvals::reject(ctx, id, reason).await,
        Remote::Approvals(cmd) => approvals::run(ctx, cmd).await,
        Remote::Restore {
            input,
            share_files,
            init_token_file,
        } => system::restore(ctx, &input, &share_files, init_token_file.as_deref()).await,
        Remote::Key(cmd) => keys::run(ctx, cmd).await,
        Remote::Principal(cmd) => access::principal(ctx, cmd).await,
        Remote::Grant(cmd) => access::grant(ctx, cmd).await,
        Remote::Encrypt(a) => crypto::encrypt(ctx, a).await,
        Remote::Decrypt(a) => crypto::decrypt(ctx, a).await,
        Remote::Datakey(a) => crypto::datakey(ctx, a).await,
        Remote::Reencrypt(a) => crypto::reencrypt(ctx, a).await,
        Remote::Sign(a) => crypto::sign(ctx, a).await,
        Remote::Verify(a) => crypto::verify(ctx, a).await,
        Remote::PublicKey(a) => crypto::public_key(ctx, a).await,
        Remote::AsymDecrypt(a) => crypto::asym_decrypt(ctx, a).await,
        Remote::Mac(a) => crypto::mac(ctx, a).await,
        Remote::VerifyMac(a) => crypto::verify_mac(ctx, a).await,
        Remote::Random(a) => crypto::random(ctx, a).await,
        Remote::Password(cmd) => password::run(ctx, cmd).await,
        Remote::Tokenize(a) => tokenize::tokenize(ctx, a).await,
        Remote::Detokenize(a) => tokenize::detokenize(ctx, a).await,
        Remote::Request(RequestCommand::Sign(a)) => request::sign(Some(ctx), a).await,
        Remote::Request(RequestCommand::Verify(a)) => request::verify(ctx, a).await,
    }
}

/// Resolves the connection settings, reads the PEM files, and connects.
async fn connect(profile: Option<&str>, json: bool, timeout: Duration) -> Result<Ctx, CliError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let env = |name: &str| std::env::var(name).ok();
    let settings = resolve::settings(profile, &env, &cwd)?;
    let conn = resolve::connection(&settings, Some(timeout))?;
    let channel = client::connect(&conn)
        .await
        .map_err(|e| connect_error(&e, &settings))?;
    Ok(Ctx { json, channel })
}

fn connect_error(err: &ClientError, settings: &resolve::Settings) -> CliError {
    let source = &settings.source;
    match err {
        ClientError::Endpoint { .. } => CliError::usage(err.to_string()).with_hint(format!(
            "fix the endpoint in the {source}, e.g. https://127.0.0.1:7443"
        )),
        ClientError::Pem(_) | ClientError::Tls(_) => CliError::usage(err.to_string())
            .with_hint(format!("check the ca, cert and key files of the {source}")),
        ClientError::Connect { detail, .. } => {
            let lower = detail.to_ascii_lowercase();
            let hint = if lower.contains("certificate") || lower.contains("unknownissuer") {
                format!(
                    "the TLS handshake failed: does the CA file of the {source} hold the CA that issued the server's certificate?"
                )
            } else {
                "is the server running? `kms-server dev` starts a local one".to_owned()
            };
            CliError::new(ExitKind::Unavailable, err.to_string()).with_hint(hint)
        }
    }
}

/// A progress bar on stderr when it is a terminal, else a hidden one. `total` in bytes, or
/// `None` for a spinner with a byte count.
pub(crate) fn progress(total: Option<u64>, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = total.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
    let template = if total.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A progress bar counting items (files) rather than bytes; hidden unless stderr is a terminal.
pub(crate) fn progress_items(total: u64, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

/// A warning line on stderr.
pub(crate) fn warn(text: &str) {
    eprintln!("warning: {text}");
}
