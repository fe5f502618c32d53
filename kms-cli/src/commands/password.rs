//! `kms password seal | hash | verify`: the password shield (issue 22 item 2).
//!
//! `seal` is what a mobile app does, for tests, scripts and the README: it builds the sealed
//! structure (`kms_core::crypto::password_hash::encode_sealed`, docs/FORMATS.md) from the
//! password, the current time and a random nonce, and encrypts it to the password key's public
//! key. `hash` and `verify` forward a sealed password to the server. The password is read
//! without echo from a terminal, kept in wiped buffers, and never printed.

use std::io::{self, IsTerminal as _};
use std::path::Path;

use kms_core::alg::Purpose;
use kms_core::crypto::PublicKey;
use kms_core::crypto::password_hash::{NONCE_LEN, encode_sealed};
use kms_core::policy::{Policy, PolicyMode};
use kms_proto::v1::password_shield_client::PasswordShieldClient;
use kms_proto::v1::{GetPublicKeyRequest, HashPasswordRequest, VerifyPasswordRequest};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::Ctx;
use crate::args::{PasswordCommand, PasswordHashArgs, PasswordSealArgs, PasswordVerifyArgs};
use crate::error::{CliError, ExitKind};
use crate::files::{self, WriteOpts};
use crate::output::print_json;

pub(super) async fn run(ctx: &Ctx, cmd: PasswordCommand) -> Result<(), CliError> {
    match cmd {
        PasswordCommand::Seal(a) => seal(Some(ctx), ctx.json, a).await,
        PasswordCommand::Hash(a) => hash(ctx, a).await,
        PasswordCommand::Verify(a) => verify(ctx, a).await,
    }
}

fn client(ctx: &Ctx) -> PasswordShieldClient<tonic::transport::Channel> {
    PasswordShieldClient::new(ctx.channel.clone())
}

/// The password: without echo from a terminal, else the first line of the input (its line
/// ending removed, nothing else).
fn read_password(input: Option<&Path>) -> Result<Zeroizing<String>, CliError> {
    if input.is_none() && io::stdin().is_terminal() {
        return rpassword::prompt_password("password: ")
            .map(Zeroizing::new)
            .map_err(|e| CliError::io("the terminal", &e));
    }
    let raw = files::read_input(input)?;
    let text =
        std::str::from_utf8(&raw).map_err(|_| CliError::usage("the password is not UTF-8 text"))?;
    let line = text.split('\n').next().unwrap_or_default();
    Ok(Zeroizing::new(
        line.strip_suffix('\r').unwrap_or(line).to_owned(),
    ))
}

/// `kms password seal`: also offline, with `--public-key` (`ctx` is `None` then).
pub(super) async fn seal(
    ctx: Option<&Ctx>,
    json: bool,
    a: PasswordSealArgs,
) -> Result<(), CliError> {
    // Any spec a password key can have; the server's own policy decides what it opens.
    let policy = Policy::from_config(PolicyMode::Standard);
    let public = match (&a.public_key, &a.key, ctx) {
        (Some(path), _, _) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| CliError::io(&path.display().to_string(), &e))?;
            PublicKey::from_spki_pem(policy, &pem)
        }
        (None, Some(key), Some(ctx)) => {
            let resp = ctx
                .crypto()
                .get_public_key(GetPublicKeyRequest {
                    key: key.clone(),
                    key_version: None,
                })
                .await?
                .into_inner();
            PublicKey::from_spki_der(policy, &resp.public_key_der)
        }
        (None, _, _) => return Err(CliError::usage("give --key or --public-key")),
    }
    .map_err(|e| CliError::usage(format!("the password key's public key: {e}")))?;
    let to = policy
        .approve(Purpose::Password, public.spec())
        .map_err(|e| CliError::usage(e.to_string()))?;
    let password = read_password(a.io.input.as_deref())?;
    let timestamp = a.timestamp.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let nonce = kms_core::crypto::rng::random_public(*NONCE_LEN.start())
        .map_err(|e| CliError::other(e.to_string()))?;
    let plain =
        encode_sealed(&password, timestamp, &nonce).map_err(|e| CliError::usage(e.to_string()))?;
    let sealed = kms_core::crypto::encrypt_to_public_key(&to, &public, plain.expose_secret())
        .map_err(|e| CliError::other(format!("sealing failed: {e}")))?;
    if json && a.io.out.is_none() {
        return print_json(&json!({
            "sealed_password": files::base64(&sealed),
            "algorithm": public.spec().name(),
            "timestamp": timestamp,
        }));
    }
    files::write_output(
        a.io.out.as_deref(),
        &sealed,
        WriteOpts {
            base64: a.base64,
            binary: true,
            private: false,
        },
    )
}

async fn hash(ctx: &Ctx, a: PasswordHashArgs) -> Result<(), CliError> {
    let sealed = files::read_maybe_base64(a.io.input.as_deref(), a.base64, "the sealed password")?;
    let resp = client(ctx)
        .hash_password(HashPasswordRequest {
            password_key: a.key,
            pepper_key: a.pepper,
            sealed_password: sealed.to_vec(),
            identifiers: a.identifiers,
        })
        .await?
        .into_inner();
    if ctx.json && a.io.out.is_none() {
        return print_json(&json!({
            "hash": resp.hash,
            "password_key_id": resp.password_key_id,
            "password_key_version": resp.password_key_version,
            "pepper_key_id": resp.pepper_key_id,
            "pepper_key_version": resp.pepper_key_version,
        }));
    }
    files::write_output(
        a.io.out.as_deref(),
        format!("{}\n", resp.hash).as_bytes(),
        WriteOpts {
            base64: false,
            binary: false,
            private: true,
        },
    )
}

async fn verify(ctx: &Ctx, a: PasswordVerifyArgs) -> Result<(), CliError> {
    let stored = Zeroizing::new(
        std::fs::read_to_string(&a.hash_file)
            .map_err(|e| CliError::io(&a.hash_file.display().to_string(), &e))?,
    );
    let stored = stored.lines().next().unwrap_or_default().trim().to_owned();
    let sealed = files::read_maybe_base64(a.input.as_deref(), a.base64, "the sealed password")?;
    let resp = client(ctx)
        .verify_password(VerifyPasswordRequest {
            password_key: a.key,
            sealed_password: sealed.to_vec(),
            stored_hash: stored,
            identifiers: a.identifiers,
        })
        .await?
        .into_inner();
    if let (Some(path), false) = (&a.rehash_out, resp.rehashed.is_empty()) {
        files::write_file(path, format!("{}\n", resp.rehashed).as_bytes(), true)?;
    }
    if ctx.json {
        let mut m = json!({
            "match": resp.matched,
            "weak": resp.weak,
            "password_key_id": resp.password_key_id,
            "password_key_version": resp.password_key_version,
            "pepper_key_id": resp.pepper_key_id,
            "pepper_key_version": resp.pepper_key_version,
            "key_compromised": resp.key_compromised,
        });
        if !resp.rehashed.is_empty() && a.rehash_out.is_none() {
            m["rehashed"] = Value::String(resp.rehashed.clone());
        }
        print_json(&m)?;
    } else if resp.matched {
        files::println("match")?;
        if resp.weak {
            super::warn("the password breaks today's strength rules: ask the user for a new one");
        }
        if !resp.rehashed.is_empty() {
            match &a.rehash_out {
                Some(path) => files::println(&format!(
                    "the hash was out of date: store the new one in {}",
                    path.display()
                ))?,
                None => files::println(&format!("rehashed: {}", resp.rehashed))?,
            }
        }
    }
    if resp.matched {
        Ok(())
    } else {
        Err(
            CliError::new(ExitKind::VerificationFailed, "the password does not match")
                .with_hint("check the password, the password key and the stored hash"),
        )
    }
}
