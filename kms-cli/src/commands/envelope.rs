//! `kms encrypt --envelope` and the envelope half of `kms decrypt`: data of any size under one
//! data key per message, streamed in frames (`kms_client::envelope`, docs/ENVELOPE.md).
//!
//! Output to a file goes to `FILE.partial` first and is renamed only when the whole message
//! is done (for decryption: when the final frame has authenticated), so a failed or tampered
//! message never leaves a file that looks finished.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use kms_client::envelope::{self, Algorithm, DEFAULT_FRAME_LEN, EnvelopeError, Header};
use kms_proto::v1::{DecryptRequest, GenerateDataKeyRequest, KeyRequest};
use serde_json::json;
use zeroize::Zeroizing;

use super::{Ctx, progress, system::partial_path};
use crate::error::CliError;
use crate::output::print_json;

/// Where the output goes: a file (through FILE.partial), a special file written in place
/// (`/dev/null`, a FIFO), or stdout.
enum Sink {
    File { partial: PathBuf, out: PathBuf },
    Special(PathBuf),
    Stdout,
}

impl Sink {
    fn new(out: Option<&Path>) -> Self {
        match out {
            Some(p) if crate::files::is_special(p) => Self::Special(p.to_owned()),
            Some(p) if p != Path::new("-") => Self::File {
                partial: partial_path(p),
                out: p.to_owned(),
            },
            _ => Self::Stdout,
        }
    }

    fn writer(&self) -> Result<Box<dyn Write>, CliError> {
        match self {
            Self::File { partial, .. } => {
                let f = crate::files::create_private(partial)?;
                Ok(Box::new(BufWriter::new(f)))
            }
            Self::Special(p) => Ok(Box::new(BufWriter::new(crate::files::open_special(p)?))),
            Self::Stdout => Ok(Box::new(BufWriter::new(io::stdout().lock()))),
        }
    }

    /// Renames the finished output into place, or removes the partial file on failure.
    fn finish(&self, ok: bool) -> Result<(), CliError> {
        if let Self::File { partial, out } = self {
            if ok {
                fs::rename(partial, out)
                    .map_err(|e| CliError::io(&out.display().to_string(), &e))?;
            } else {
                let _ = fs::remove_file(partial);
            }
        }
        Ok(())
    }
}

pub(super) fn input(path: Option<&Path>) -> Result<(Box<dyn Read>, Option<u64>), CliError> {
    match path {
        Some(p) if p != Path::new("-") => {
            let f = fs::File::open(p).map_err(|e| CliError::io(&p.display().to_string(), &e))?;
            let len = f.metadata().ok().map(|m| m.len());
            Ok((Box::new(BufReader::new(f)), len))
        }
        _ => Ok((Box::new(io::stdin().lock()), None)),
    }
}

fn envelope_error(e: EnvelopeError) -> CliError {
    if let EnvelopeError::Io(e) = e {
        return CliError::io("the envelope stream", &e);
    }
    CliError::usage(e.to_string())
        .with_hint("the file is not an intact KMS envelope, or the context or key differs")
}

/// `kms encrypt --envelope`: one `GenerateDataKey` (SM4 under an SM4-GCM key, AES-256 under an
/// AES-256-GCM key), then the input sealed in frames to the output.
pub(super) async fn encrypt(
    ctx: &Ctx,
    key: String,
    context: BTreeMap<String, String>,
    input_path: Option<&Path>,
    out: Option<&Path>,
) -> Result<(), CliError> {
    let described = ctx
        .admin()
        .describe_key(KeyRequest { key: key.clone() })
        .await?
        .into_inner()
        .key
        .ok_or_else(|| CliError::usage("the server described no key"))?;
    let (algorithm, spec) = if described.algorithm == "aes-256-gcm" {
        (Algorithm::Aes256Gcm, "aes-256")
    } else {
        (Algorithm::Sm4Gcm, "sm4")
    };
    let dk = ctx
        .crypto()
        .generate_data_key(GenerateDataKeyRequest {
            key,
            key_spec: spec.to_owned(),
            context: context.clone().into_iter().collect::<HashMap<_, _>>(),
            wrap_to_public_key: Vec::new(),
        })
        .await?
        .into_inner();
    let data_key = Zeroizing::new(dk.plaintext);
    let (reader, len) = input(input_path)?;
    let bar = progress(len, "encrypt");
    let reader = bar.wrap_read(reader);
    let sink = Sink::new(out);
    let result = envelope::seal(
        algorithm,
        &data_key,
        &dk.ciphertext,
        &context,
        DEFAULT_FRAME_LEN,
        reader,
        sink.writer()?,
    );
    bar.finish_and_clear();
    sink.finish(result.is_ok())?;
    let bytes = result.map_err(envelope_error)?;
    report(ctx, out, &dk.key_id, dk.key_version, bytes, algorithm)
}

fn report(
    ctx: &Ctx,
    out: Option<&Path>,
    key_id: &str,
    key_version: u32,
    bytes: u64,
    algorithm: Algorithm,
) -> Result<(), CliError> {
    // With the data on stdout, nothing else may go there.
    let Some(path) = out.filter(|p| *p != Path::new("-")) else {
        return Ok(());
    };
    if ctx.json {
        return print_json(&json!({
            "key_id": key_id,
            "key_version": key_version,
            "bytes": bytes,
            "algorithm": algorithm.name(),
            "out": path,
        }));
    }
    crate::files::println(&format!(
        "{bytes} bytes, {} frames under a data key of {key_id} v{key_version}: {}",
        algorithm.name(),
        path.display()
    ))
}

/// Whether `head` starts an envelope (the magic), for `kms decrypt`'s auto-detection.
pub(super) fn is_envelope(head: &[u8]) -> bool {
    head.starts_with(&envelope::MAGIC)
}

/// `kms decrypt` of an envelope: the header's wrapped data key goes to `Decrypt` with the
/// header's context (a `--context` given must match it), then the frames are opened.
pub(super) async fn decrypt(
    ctx: &Ctx,
    given_context: BTreeMap<String, String>,
    mut reader: Box<dyn Read>,
    len: Option<u64>,
    out: Option<&Path>,
) -> Result<(), CliError> {
    let header = Header::read_from(&mut reader).map_err(envelope_error)?;
    if !given_context.is_empty() && given_context != header.context {
        return Err(CliError::usage(
            "--context differs from the context the envelope was made with",
        )
        .with_hint("leave --context out: an envelope carries its context"));
    }
    let dk = ctx
        .crypto()
        .decrypt(DecryptRequest {
            ciphertext: header.wrapped_key.clone(),
            context: header
                .context
                .clone()
                .into_iter()
                .collect::<HashMap<_, _>>(),
        })
        .await?
        .into_inner();
    if dk.key_compromised {
        super::crypto::compromised_warning(&dk.key_id);
    }
    let data_key = Zeroizing::new(dk.plaintext);
    let bar = progress(len, "decrypt");
    let reader = bar.wrap_read(reader);
    let sink = Sink::new(out);
    let result = envelope::open(&header, &data_key, reader, sink.writer()?);
    bar.finish_and_clear();
    sink.finish(result.is_ok())?;
    let bytes = result.map_err(envelope_error)?;
    report(
        ctx,
        out,
        &dk.key_id,
        dk.key_version,
        bytes,
        header.algorithm,
    )
}
