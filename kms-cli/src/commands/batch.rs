//! `kms encrypt --batch FILE` and `kms decrypt --batch FILE`: JSON Lines in, JSON Lines out,
//! through the batch RPCs (`kms.v1.CryptoBatch`), one output line per input line, in order.
//!
//! Encrypt reads lines `{"key": ID_OR_ALIAS, "plaintext": BASE64, "context": {K: V, …}}`
//! (`key` may be left out when `--key` is given; `context` is optional) and writes
//! `{"ciphertext": BASE64, "key_id": …, "key_version": …, "context": {…}}`: the context is
//! repeated, so the output is what `kms decrypt --batch` reads. Decrypt reads lines with
//! `ciphertext` and `context` (and ignores `key_id` and `key_version`) and writes
//! `{"plaintext": BASE64, "key_id": …, "key_version": …, "key_compromised": …}`. An item the
//! server refused is the line `{"error": {"code": "NOT_FOUND", "message": "…"}}`; decrypt
//! passes such a line through as it is, so line N of every output still belongs to line N of
//! the first input.
//!
//! The lines go to the server in batches within its default limits (1000 items, 4 MiB); the
//! command fails (after writing every line) when any item failed, with the first failure's exit
//! code. Plaintext is read into and written from wiped buffers; the decrypt output file is
//! private (0600).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use kms_proto::v1::{
    self, BatchDecryptRequest, BatchEncryptRequest, DecryptRequest, EncryptRequest,
    batch_decrypt_result, batch_encrypt_result,
};
use serde::{Deserialize, Serialize};
use tonic::Code;
use zeroize::Zeroizing;

use super::Ctx;
use crate::error::{CliError, ExitKind};
use crate::files;

/// The server's default limits (`[limits] max_batch_items`, `max_batch_bytes`), with room for
/// the message's own framing: a server configured lower refuses with a message naming its limit.
const MAX_ITEMS: usize = 1000;
const MAX_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;

/// A line of `kms encrypt --batch` input. The plaintext's base64 is borrowed from the wiped
/// input buffer (`Cow` only owns a copy when the JSON string has escapes, which base64 never
/// needs).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptLine<'a> {
    key: Option<String>,
    #[serde(borrow)]
    plaintext: Cow<'a, str>,
    #[serde(default)]
    context: HashMap<String, String>,
}

/// A line of `kms decrypt --batch` input: a ciphertext, or an earlier item's error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecryptLine {
    ciphertext: Option<String>,
    #[serde(default)]
    context: HashMap<String, String>,
    error: Option<ItemError>,
    // What `kms encrypt --batch` writes beside the ciphertext; not needed to decrypt.
    #[allow(dead_code)]
    key_id: Option<String>,
    #[allow(dead_code)]
    key_version: Option<u32>,
}

/// An item's error, as an output line carries it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemError {
    /// The gRPC code's name (`NOT_FOUND`).
    code: String,
    message: String,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    error: &'a ItemError,
}

#[derive(Serialize)]
struct EncryptedLine<'a> {
    ciphertext: String,
    key_id: &'a str,
    key_version: u32,
    // Sorted, so that equal contexts print alike.
    context: BTreeMap<&'a String, &'a String>,
}

#[derive(Serialize)]
struct DecryptedLine<'a> {
    plaintext: &'a str,
    key_id: &'a str,
    key_version: u32,
    key_compromised: bool,
}

/// The gRPC code's name as the specification writes it (and the audit trail records it).
const fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn item_error(e: &v1::ItemError) -> (Code, ItemError) {
    let code = Code::from_i32(e.code);
    (
        code,
        ItemError {
            code: code_name(code).to_owned(),
            message: e.message.clone(),
        },
    )
}

/// The input's lines, numbered from 1; a final newline ends the last line, an empty line
/// elsewhere is an error (it would shift every later output line).
fn lines(input: &[u8]) -> Result<Vec<(usize, &[u8])>, CliError> {
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    if body.is_empty() {
        return Err(CliError::usage("the --batch input has no lines"));
    }
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                Err(
                    CliError::usage(format!("--batch input line {} is empty", i + 1))
                        .with_hint("one JSON object per line, no blank lines"),
                )
            } else {
                Ok((i + 1, line))
            }
        })
        .collect()
}

fn bad_line(n: usize, e: impl std::fmt::Display) -> CliError {
    CliError::usage(format!("--batch input line {n}: {e}"))
}

/// The requests, in chunks within [`MAX_ITEMS`] and [`MAX_BYTES`] (`size` estimates one
/// request's encoded size).
fn chunks<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let n = size(&item);
        match out.last_mut() {
            Some(last) if last.len() < MAX_ITEMS && bytes + n <= MAX_BYTES => {
                bytes += n;
                last.push(item);
            }
            Some(_) | None => {
                bytes = n;
                out.push(vec![item]);
            }
        }
    }
    out
}

/// An encoded context's size, with each entry's framing.
fn context_size(context: &HashMap<String, String>) -> usize {
    context.iter().map(|(k, v)| k.len() + v.len() + 8).sum()
}

/// Counts failures as the lines are written, for the command's outcome.
#[derive(Default)]
struct Failures {
    count: usize,
    first: Option<(usize, Code, String)>,
}

impl Failures {
    fn add(&mut self, line: usize, code: Code, message: &str) {
        self.count += 1;
        self.first
            .get_or_insert_with(|| (line, code, message.to_owned()));
    }

    /// Ok when every item succeeded; else the first failure's kind and message.
    fn outcome(self, total: usize) -> Result<(), CliError> {
        let Some((line, code, message)) = self.first else {
            return Ok(());
        };
        Err(CliError::new(
            ExitKind::from_code(code),
            format!(
                "{} of {total} items failed; the first, line {line}: {message}",
                self.count
            ),
        )
        .with_hint("every line of the output says how its item went"))
    }
}

/// Appends `value` and a newline to the wiped output buffer.
fn push_line(out: &mut Zeroizing<Vec<u8>>, value: &impl Serialize) -> Result<(), CliError> {
    serde_json::to_writer(&mut **out, value)
        .map_err(|e| CliError::other(format!("cannot write an output line: {e}")))?;
    out.push(b'\n');
    Ok(())
}

fn write(out_path: Option<&Path>, data: &[u8], private: bool) -> Result<(), CliError> {
    files::write_output(
        out_path,
        data,
        files::WriteOpts {
            base64: false,
            binary: false,
            private,
        },
    )
}

/// `kms encrypt --batch FILE [--key DEFAULT] [--out FILE]`.
pub(super) async fn encrypt(
    ctx: &Ctx,
    input: &Path,
    default_key: Option<&str>,
    out_path: Option<&Path>,
) -> Result<(), CliError> {
    let raw = files::read_input(Some(input))?;
    let mut items = Vec::new();
    for (n, line) in lines(&raw)? {
        let parsed: EncryptLine<'_> = serde_json::from_slice(line).map_err(|e| bad_line(n, e))?;
        let key = parsed
            .key
            .or_else(|| default_key.map(str::to_owned))
            .ok_or_else(|| {
                bad_line(n, "no \"key\" (give one per line, or a default with --key)")
            })?;
        let plaintext = files::decode_base64(parsed.plaintext.as_bytes(), "\"plaintext\"")
            .map_err(|e| bad_line(n, e.message))?;
        items.push((
            n,
            EncryptRequest {
                key,
                plaintext: take(plaintext),
                context: parsed.context,
            },
        ));
    }
    let total = items.len();
    let mut out = Zeroizing::new(Vec::new());
    let mut failures = Failures::default();
    let mut client = ctx.batch();
    for chunk in chunks(items, |(_, r)| {
        r.key.len() + r.plaintext.len() + context_size(&r.context) + 16
    }) {
        let (numbers, requests): (Vec<usize>, Vec<EncryptRequest>) = chunk.into_iter().unzip();
        let contexts: Vec<HashMap<String, String>> =
            requests.iter().map(|r| r.context.clone()).collect();
        let results = client
            .batch_encrypt(BatchEncryptRequest { items: requests })
            .await?
            .into_inner()
            .results;
        if results.len() != numbers.len() {
            return Err(CliError::other(format!(
                "the server answered {} results for {} items",
                results.len(),
                numbers.len()
            )));
        }
        for ((n, context), result) in numbers.into_iter().zip(&contexts).zip(results) {
            match result.result {
                Some(batch_encrypt_result::Result::Ok(ok)) => push_line(
                    &mut out,
                    &EncryptedLine {
                        ciphertext: files::base64(&ok.ciphertext),
                        key_id: &ok.key_id,
                        key_version: ok.key_version,
                        context: context.iter().collect(),
                    },
                )?,
                Some(batch_encrypt_result::Result::Error(e)) => {
                    let (code, error) = item_error(&e);
                    failures.add(n, code, &error.message);
                    push_line(&mut out, &ErrorLine { error: &error })?;
                }
                None => return Err(CliError::other("the server answered an empty result")),
            }
        }
    }
    write(out_path, &out, false)?;
    failures.outcome(total)
}

/// `kms decrypt --batch FILE [--out FILE]`.
pub(super) async fn decrypt(
    ctx: &Ctx,
    input: &Path,
    out_path: Option<&Path>,
) -> Result<(), CliError> {
    let raw = files::read_input(Some(input))?;
    // Each line: a request to send, or an error to pass through.
    let mut parsed = Vec::new();
    for (n, line) in lines(&raw)? {
        let l: DecryptLine = serde_json::from_slice(line).map_err(|e| bad_line(n, e))?;
        parsed.push(match (l.ciphertext, l.error) {
            (Some(ct), None) => {
                let ciphertext = files::decode_base64(ct.as_bytes(), "\"ciphertext\"")
                    .map_err(|e| bad_line(n, e.message))?;
                (
                    n,
                    Ok(DecryptRequest {
                        ciphertext: take(ciphertext),
                        context: l.context,
                    }),
                )
            }
            (None, Some(error)) => (n, Err(error)),
            (Some(_), Some(_)) | (None, None) => {
                return Err(bad_line(
                    n,
                    "needs a \"ciphertext\" (or an \"error\" to pass on)",
                ));
            }
        });
    }
    let total = parsed.len();
    let requests: Vec<(usize, DecryptRequest)> = parsed
        .iter_mut()
        .filter_map(|(n, r)| r.as_mut().ok().map(|r| (*n, std::mem::take(r))))
        .collect();
    let mut answers: HashMap<usize, Result<v1::DecryptResponse, (Code, ItemError)>> =
        HashMap::with_capacity(requests.len());
    let mut client = ctx.batch();
    for chunk in chunks(requests, |(_, r)| {
        r.ciphertext.len() + context_size(&r.context) + 16
    }) {
        let (numbers, items): (Vec<usize>, Vec<DecryptRequest>) = chunk.into_iter().unzip();
        let results = client
            .batch_decrypt(BatchDecryptRequest { items })
            .await?
            .into_inner()
            .results;
        if results.len() != numbers.len() {
            return Err(CliError::other(format!(
                "the server answered {} results for {} items",
                results.len(),
                numbers.len()
            )));
        }
        for (n, result) in numbers.into_iter().zip(results) {
            let answer = match result.result {
                Some(batch_decrypt_result::Result::Ok(ok)) => Ok(ok),
                Some(batch_decrypt_result::Result::Error(e)) => Err(item_error(&e)),
                None => return Err(CliError::other("the server answered an empty result")),
            };
            answers.insert(n, answer);
        }
    }
    let mut out = Zeroizing::new(Vec::new());
    let mut failures = Failures::default();
    let mut warned = Vec::new();
    for (n, line) in parsed {
        match line {
            Err(passed) => push_line(&mut out, &ErrorLine { error: &passed })?,
            Ok(_) => match answers.remove(&n) {
                Some(Ok(ok)) => {
                    let plaintext = Zeroizing::new(files::base64(&Zeroizing::new(ok.plaintext)));
                    if ok.key_compromised && !warned.contains(&ok.key_id) {
                        super::crypto::compromised_warning(&ok.key_id);
                        warned.push(ok.key_id.clone());
                    }
                    push_line(
                        &mut out,
                        &DecryptedLine {
                            plaintext: &plaintext,
                            key_id: &ok.key_id,
                            key_version: ok.key_version,
                            key_compromised: ok.key_compromised,
                        },
                    )?;
                }
                Some(Err((code, error))) => {
                    failures.add(n, code, &error.message);
                    push_line(&mut out, &ErrorLine { error: &error })?;
                }
                None => return Err(CliError::other(format!("no result for line {n}"))),
            },
        }
    }
    write(out_path, &out, true)?;
    failures.outcome(total)
}

/// Moves the bytes out of a wiped buffer into a request field (no copy is left behind).
fn take(mut buf: Zeroizing<Vec<u8>>) -> Vec<u8> {
    std::mem::take(&mut *buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_and_blank_ones_refused() {
        let got: Vec<(usize, &[u8])> = lines(b"{\"a\":1}\r\n{\"b\":2}\n").unwrap();
        assert_eq!(got, [(1, &b"{\"a\":1}"[..]), (2, &b"{\"b\":2}"[..])]);
        let e = lines(b"{}\n\n{}\n").unwrap_err();
        assert_eq!(e.message, "--batch input line 2 is empty");
        assert!(lines(b"").is_err() && lines(b"\n").is_err());
    }

    #[test]
    fn chunks_keep_order_within_both_limits() {
        let items: Vec<usize> = (0..2500).collect();
        let parts = chunks(items, |_| 10);
        assert_eq!(
            parts.iter().map(Vec::len).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        assert_eq!(parts.concat(), (0..2500).collect::<Vec<_>>());
        // 64 KiB items: as many as fit under the byte budget.
        let parts = chunks(vec![0u8; 130], |_| 64 * 1024);
        assert_eq!(parts[0].len(), MAX_BYTES / (64 * 1024));
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 130);
    }

    #[test]
    fn codes_have_their_specification_names() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            let name = code_name(code);
            let spaced: String = format!("{code:?}")
                .chars()
                .flat_map(|c| {
                    let sep = c.is_uppercase().then_some('_');
                    sep.into_iter()
                        .chain(std::iter::once(c.to_ascii_uppercase()))
                })
                .collect();
            let want = if code == Code::Ok {
                "OK".to_owned()
            } else {
                spaced.trim_start_matches('_').to_owned()
            };
            assert_eq!(name, want);
        }
    }
}
