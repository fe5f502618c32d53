//! The data plane: `encrypt`, `decrypt`, `datakey`, `reencrypt`, `sign`, `verify`, `public-key`,
//! `asym-decrypt`, `mac`, `verify-mac`, `random`.
//!
//! Inputs are read into wiped buffers and moved (not copied) into the request. Outputs go to
//! `--out` or stdout; with `--json` and no `--out`, binary results are base64 fields of one JSON
//! object instead.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use kms_proto::v1::{
    AsymmetricDecryptRequest, DecryptRequest, EncryptRequest, GenerateDataKeyRequest,
    GenerateMacRequest, GenerateRandomRequest, GetPublicKeyRequest, MessageType, ReEncryptRequest,
    SignRequest, VerifyMacRequest, VerifyRequest,
};
use serde_json::{Map, Value, json};
use std::io::Read as _;

use zeroize::Zeroizing;

use super::{Ctx, progress_items, warn};
use crate::args::{
    AsymDecryptArgs, DataKeySpec, DatakeyArgs, DecryptArgs, EncryptArgs, HashArg, MacArgs,
    PublicKeyArgs, RandomArgs, ReencryptArgs, SchemeArg, SignArgs, SignOptions, VerifyArgs,
    VerifyMacArgs,
};
use crate::error::{CliError, ExitKind};
use crate::files::{self, WriteOpts};
use crate::output::print_json;

fn context(pairs: Vec<(String, String)>) -> HashMap<String, String> {
    pairs.into_iter().collect()
}

/// Moves the bytes out of a wiped buffer into a request field (no copy is left behind).
fn take(mut buf: Zeroizing<Vec<u8>>) -> Vec<u8> {
    std::mem::take(&mut *buf)
}

/// Where a result goes, and what JSON says about it.
struct Emit<'a> {
    /// `--out`.
    out: Option<&'a Path>,
    /// The JSON field that carries the bytes when there is no `--out`.
    field: &'static str,
    opts: WriteOpts,
}

/// Writes `data` as `emit` says; with `--json`, prints `meta` plus the data (base64) or the
/// output path.
fn emit(
    ctx: &Ctx,
    emit: &Emit<'_>,
    data: &[u8],
    mut meta: Map<String, Value>,
) -> Result<(), CliError> {
    let to_file = emit.out.is_some_and(|p| p != Path::new("-"));
    if ctx.json {
        if to_file {
            files::write_output(emit.out, data, emit.opts)?;
            meta.insert("out".to_owned(), json!(emit.out));
        } else {
            meta.insert(emit.field.to_owned(), json!(files::base64(data)));
        }
        return print_json(&Value::Object(meta));
    }
    files::write_output(emit.out, data, emit.opts)
}

fn meta(key_id: &str, key_version: u32) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("key_id".to_owned(), json!(key_id));
    m.insert("key_version".to_owned(), json!(key_version));
    m
}

fn binary(base64: bool) -> WriteOpts {
    WriteOpts {
        base64,
        binary: true,
        private: false,
    }
}

fn plaintext(base64: bool) -> WriteOpts {
    WriteOpts {
        base64,
        binary: false,
        private: true,
    }
}

/// Decrypting under a compromised key still works; say what to do about it.
fn envelope_magic_len() -> u64 {
    u64::try_from(kms_client::envelope::MAGIC.len()).unwrap_or(u64::MAX)
}

pub(super) fn compromised_warning(key_id: &str) {
    warn(&format!(
        "key {key_id} is marked compromised: re-protect this data under another key"
    ));
}

pub(super) async fn encrypt(ctx: &Ctx, a: EncryptArgs) -> Result<(), CliError> {
    if let Some(lines) = &a.batch {
        return super::batch::encrypt(ctx, lines, a.key.as_deref(), a.io.out.as_deref()).await;
    }
    // Clap requires --key without --batch; this only keeps the types honest.
    let key = a
        .key
        .ok_or_else(|| CliError::usage("--key is required (or --batch FILE)"))?;
    if a.envelope {
        let pairs = a.context.into_iter().collect();
        return super::envelope::encrypt(
            ctx,
            key,
            pairs,
            a.io.input.as_deref(),
            a.io.out.as_deref(),
        )
        .await;
    }
    let data = files::read_input(a.io.input.as_deref())?;
    let resp = ctx
        .crypto()
        .encrypt(EncryptRequest {
            key,
            plaintext: take(data),
            context: context(a.context),
        })
        .await?
        .into_inner();
    let target = Emit {
        out: a.io.out.as_deref(),
        field: "ciphertext",
        opts: binary(a.base64),
    };
    emit(
        ctx,
        &target,
        &resp.ciphertext,
        meta(&resp.key_id, resp.key_version),
    )
}

pub(super) async fn decrypt(ctx: &Ctx, a: DecryptArgs) -> Result<(), CliError> {
    if let Some(lines) = &a.batch {
        return super::batch::decrypt(ctx, lines, a.io.out.as_deref()).await;
    }
    let data = if a.base64 {
        files::read_maybe_base64(a.io.input.as_deref(), true, "the ciphertext")?
    } else {
        // A streaming envelope is recognised by its first bytes and never read whole.
        let (mut reader, len) = super::envelope::input(a.io.input.as_deref())?;
        let mut head = Zeroizing::new(Vec::new());
        (&mut reader)
            .take(envelope_magic_len())
            .read_to_end(&mut head)
            .map_err(|e| CliError::io("the input", &e))?;
        if super::envelope::is_envelope(&head) {
            let reader = Box::new(std::io::Cursor::new(head.to_vec()).chain(reader));
            let pairs = a.context.into_iter().collect();
            return super::envelope::decrypt(ctx, pairs, reader, len, a.io.out.as_deref()).await;
        }
        reader
            .read_to_end(&mut head)
            .map_err(|e| CliError::io("the input", &e))?;
        head
    };
    let resp = ctx
        .crypto()
        .decrypt(DecryptRequest {
            ciphertext: take(data),
            context: context(a.context),
        })
        .await?
        .into_inner();
    if resp.key_compromised {
        compromised_warning(&resp.key_id);
    }
    let mut m = meta(&resp.key_id, resp.key_version);
    m.insert("key_compromised".to_owned(), json!(resp.key_compromised));
    let pt = Zeroizing::new(resp.plaintext);
    let target = Emit {
        out: a.io.out.as_deref(),
        field: "plaintext",
        opts: plaintext(false),
    };
    emit(ctx, &target, &pt, m)
}

pub(super) async fn datakey(ctx: &Ctx, a: DatakeyArgs) -> Result<(), CliError> {
    if a.no_plaintext && a.plaintext_out.is_some() {
        return Err(CliError::usage(
            "--plaintext-out and --no-plaintext contradict each other",
        ));
    }
    let request = GenerateDataKeyRequest {
        key: a.key,
        key_spec: match a.spec {
            DataKeySpec::Sm4 => "sm4",
            DataKeySpec::Aes256 => "aes-256",
        }
        .to_owned(),
        context: context(a.context),
        wrap_to_public_key: match &a.wrap_to {
            Some(path) => {
                fs::read(path).map_err(|e| CliError::io(&path.display().to_string(), &e))?
            }
            None => Vec::new(),
        },
    };
    let mut crypto = ctx.crypto();
    let resp = if a.no_plaintext {
        crypto.generate_data_key_without_plaintext(request).await?
    } else {
        crypto.generate_data_key(request).await?
    }
    .into_inner();
    let pt = Zeroizing::new(resp.plaintext);

    if let Some(path) = &a.out {
        files::write_file(path, &resp.ciphertext, false)?;
    }
    if let Some(path) = &a.plaintext_out {
        files::write_file(path, &pt, true)?;
    }
    let wrapped = (a.wrap_to.is_some()).then_some(&resp.plaintext_encrypted);
    if let (Some(path), Some(bytes)) = (&a.wrapped_out, wrapped) {
        files::write_file(path, bytes, false)?;
    }
    if ctx.json {
        let mut m = meta(&resp.key_id, resp.key_version);
        if let Some(bytes) = wrapped {
            match &a.wrapped_out {
                Some(path) => m.insert("wrapped_out".to_owned(), json!(path)),
                None => m.insert("wrapped".to_owned(), json!(files::base64(bytes))),
            };
        }
        match &a.out {
            Some(path) => m.insert("ciphertext_out".to_owned(), json!(path)),
            None => m.insert(
                "ciphertext".to_owned(),
                json!(files::base64(&resp.ciphertext)),
            ),
        };
        match (&a.plaintext_out, a.no_plaintext) {
            (Some(path), _) => {
                m.insert("plaintext_out".to_owned(), json!(path));
            }
            (None, false) if wrapped.is_none() => {
                let b64 = Zeroizing::new(files::base64(&pt));
                m.insert("plaintext".to_owned(), json!(b64.as_str()));
            }
            (None, _) => {}
        }
        return print_json(&Value::Object(m));
    }
    let mut lines = vec![
        format!("key_id       {}", resp.key_id),
        format!("key_version  {}", resp.key_version),
    ];
    match &a.out {
        Some(path) => lines.push(format!("ciphertext   written to {}", path.display())),
        None => lines.push(format!("ciphertext   {}", files::base64(&resp.ciphertext))),
    }
    match (&a.plaintext_out, a.no_plaintext) {
        (Some(path), _) => lines.push(format!(
            "plaintext    written to {} (mode 0600)",
            path.display()
        )),
        (None, false) if wrapped.is_none() => {
            lines.push(format!("plaintext    {}", files::base64(&pt)));
        }
        (None, _) => {}
    }
    match (wrapped, &a.wrapped_out) {
        (Some(_), Some(path)) => lines.push(format!("wrapped      written to {}", path.display())),
        (Some(bytes), None) => lines.push(format!("wrapped      {}", files::base64(bytes))),
        (None, _) => {}
    }
    let text = Zeroizing::new(lines.join("\n"));
    files::println(&text)
}

pub(super) async fn reencrypt(ctx: &Ctx, a: ReencryptArgs) -> Result<(), CliError> {
    let source_context = context(a.context);
    // Without --dest-context the new ciphertext keeps the context it had: re-encrypting under a
    // newer version must not quietly unbind it (an empty map would mean "no context").
    let destination_context = if a.dest_context.is_empty() {
        source_context.clone()
    } else {
        context(a.dest_context)
    };
    let destination_key = a.key.unwrap_or_default();
    let mut crypto = ctx.crypto();
    let request = |ciphertext: Vec<u8>| ReEncryptRequest {
        ciphertext,
        source_context: source_context.clone(),
        destination_key: destination_key.clone(),
        destination_context: destination_context.clone(),
    };

    if a.files.is_empty() {
        let data = files::read_maybe_base64(a.io.input.as_deref(), a.base64, "the ciphertext")?;
        let resp = crypto.re_encrypt(request(take(data))).await?.into_inner();
        let target = Emit {
            out: a.io.out.as_deref(),
            field: "ciphertext",
            opts: binary(a.base64),
        };
        return emit(
            ctx,
            &target,
            &resp.ciphertext,
            meta(&resp.key_id, resp.key_version),
        );
    }

    // Bulk: each file in place, replaced atomically (write beside, then rename).
    let bar = progress_items(
        u64::try_from(a.files.len()).unwrap_or(u64::MAX),
        "re-encrypt",
    );
    let mut done = Vec::with_capacity(a.files.len());
    for path in &a.files {
        let shown = path.display().to_string();
        let data = fs::read(path).map_err(|e| CliError::io(&shown, &e))?;
        let resp = crypto
            .re_encrypt(request(data))
            .await
            .map_err(|s| {
                let mut e = CliError::from(s);
                e.message = format!("{shown}: {}", e.message);
                e
            })?
            .into_inner();
        let tmp = temp_beside(path);
        fs::write(&tmp, &resp.ciphertext)
            .map_err(|e| CliError::io(&tmp.display().to_string(), &e))?;
        fs::rename(&tmp, path).map_err(|e| CliError::io(&shown, &e))?;
        bar.inc(1);
        done.push(json!({ "file": path, "key_id": resp.key_id, "key_version": resp.key_version }));
    }
    bar.finish_and_clear();
    if ctx.json {
        print_json(&done)
    } else {
        files::println(&format!("re-encrypted {} file(s)", done.len()))
    }
}

fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(ToOwned::to_owned).unwrap_or_default();
    name.push(".kms-reencrypt");
    path.with_file_name(name)
}

/// The parts of a sign/verify request that `SignOptions` sets.
struct SignParams {
    key: String,
    message_type: MessageType,
    sm2_id: String,
    rsa_scheme: String,
    hash: String,
}

fn sign_params(o: SignOptions) -> SignParams {
    SignParams {
        key: o.key,
        message_type: if o.prehashed {
            MessageType::Digest
        } else {
            MessageType::Raw
        },
        sm2_id: o.sm2_id.unwrap_or_default(),
        rsa_scheme: o
            .scheme
            .map(|s| match s {
                SchemeArg::Pss => "pss",
                SchemeArg::Pkcs1v15 => "pkcs1v15",
            })
            .unwrap_or_default()
            .to_owned(),
        hash: o
            .hash
            .map(|h| match h {
                HashArg::Sha256 => "sha256",
                HashArg::Sha384 => "sha384",
                HashArg::Sha512 => "sha512",
            })
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The length of the SM2 prehash `e = SM3(Z_A ‖ M)`.
const SM2_DIGEST_LEN: usize = 32;

/// For `--prehashed` input of `len` bytes that an SM2 key cannot take: what it must be. The
/// server knows the key's algorithm but says only "32, 48 or 64 bytes" (any digest it accepts)
/// or that the operation failed; the caller who sent 20 or 48 bytes to an SM2 key needs "32".
fn digest_hint(prehashed_len: Option<usize>) -> Option<String> {
    prehashed_len
        .filter(|&len| len != SM2_DIGEST_LEN)
        .map(|len| {
            format!(
                "with --prehashed the input is the digest itself, in binary: an SM2 digest is \
                 {SM2_DIGEST_LEN} bytes (SM3 of Z_A ‖ M); an RSA digest is as long as --hash's \
                 output (32, 48 or 64 bytes). This input is {len} bytes"
            )
        })
}

/// A refused sign or verify, with [`digest_hint`] when the input was a digest of the wrong
/// length for SM2.
fn signing_refused(status: &tonic::Status, prehashed_len: Option<usize>) -> CliError {
    let err = CliError::from_status(status);
    match digest_hint(prehashed_len) {
        Some(hint) if status.code() == tonic::Code::InvalidArgument => err.with_hint(hint),
        Some(_) | None => err,
    }
}

pub(super) async fn sign(ctx: &Ctx, a: SignArgs) -> Result<(), CliError> {
    let p = sign_params(a.options);
    let message = files::read_input(a.io.input.as_deref())?;
    let prehashed_len = (p.message_type == MessageType::Digest).then(|| message.len());
    let resp = ctx
        .crypto()
        .sign(SignRequest {
            key: p.key,
            message: take(message),
            message_type: p.message_type.into(),
            sm2_id: p.sm2_id,
            rsa_scheme: p.rsa_scheme,
            hash: p.hash,
        })
        .await
        .map_err(|s| signing_refused(&s, prehashed_len))?
        .into_inner();
    let target = Emit {
        out: a.io.out.as_deref(),
        field: "signature",
        opts: binary(a.base64),
    };
    emit(
        ctx,
        &target,
        &resp.signature,
        meta(&resp.key_id, resp.key_version),
    )
}

pub(super) async fn verify(ctx: &Ctx, a: VerifyArgs) -> Result<(), CliError> {
    let p = sign_params(a.options);
    let signature = files::read_maybe_base64(Some(&a.signature), a.base64, "the signature")?;
    let message = files::read_input(a.input.as_deref())?;
    let prehashed_len = (p.message_type == MessageType::Digest).then(|| message.len());
    let resp = ctx
        .crypto()
        .verify(VerifyRequest {
            key: p.key,
            message: take(message),
            message_type: p.message_type.into(),
            sm2_id: p.sm2_id,
            rsa_scheme: p.rsa_scheme,
            hash: p.hash,
            signature: signature.to_vec(),
            key_version: a.key_version,
        })
        .await
        .map_err(|s| signing_refused(&s, prehashed_len))?
        .into_inner();
    let checked = Checked::Signature {
        key_compromised: resp.key_compromised,
    };
    // An SM2 key given a 48- or 64-byte digest answers "not valid": say why it cannot be.
    let valid = resp.valid;
    report_validity(ctx, checked, valid, &resp.key_id, resp.key_version).map_err(|e| {
        match digest_hint(prehashed_len).filter(|_| !valid) {
            Some(hint) => e.with_hint(hint),
            None => e,
        }
    })
}

/// What `verify` / `verify-mac` checked.
#[derive(Clone, Copy)]
enum Checked {
    /// A signature (the answer says whether the key is compromised).
    Signature { key_compromised: bool },
    /// A MAC tag.
    MacTag,
}

/// Prints the outcome of a verification; invalid is an error with exit code 1.
fn report_validity(
    ctx: &Ctx,
    checked: Checked,
    valid: bool,
    key_id: &str,
    key_version: u32,
) -> Result<(), CliError> {
    let (what, hint) = match checked {
        Checked::Signature { key_compromised } => {
            if key_compromised {
                warn(&format!(
                    "key {key_id} is marked compromised: whoever holds it may have made this signature"
                ));
            }
            (
                "signature",
                "check the key, the data, and --prehashed, --sm2-id, --scheme and --hash",
            )
        }
        Checked::MacTag => ("MAC tag", "check the key and the data"),
    };
    if ctx.json {
        let mut m = meta(key_id, key_version);
        m.insert("valid".to_owned(), json!(valid));
        if let Checked::Signature { key_compromised } = checked {
            m.insert("key_compromised".to_owned(), json!(key_compromised));
        }
        print_json(&Value::Object(m))?;
    } else if valid {
        files::println(&format!(
            "{what} valid (key {key_id}, version {key_version})"
        ))?;
    }
    if valid {
        Ok(())
    } else {
        Err(CliError::new(
            ExitKind::VerificationFailed,
            format!("the {what} is not valid"),
        )
        .with_hint(hint))
    }
}

pub(super) async fn public_key(ctx: &Ctx, a: PublicKeyArgs) -> Result<(), CliError> {
    let resp = ctx
        .crypto()
        .get_public_key(GetPublicKeyRequest {
            key: a.key,
            key_version: a.key_version,
        })
        .await?
        .into_inner();
    if ctx.json && a.out.is_none() {
        let mut m = meta(&resp.key_id, resp.key_version);
        m.insert("algorithm".to_owned(), json!(resp.algorithm));
        m.insert("public_key_pem".to_owned(), json!(resp.public_key_pem));
        m.insert(
            "public_key_der".to_owned(),
            json!(files::base64(&resp.public_key_der)),
        );
        return print_json(&Value::Object(m));
    }
    let (data, opts) = if a.der {
        (resp.public_key_der, binary(false))
    } else {
        (
            resp.public_key_pem.into_bytes(),
            WriteOpts {
                base64: false,
                binary: false,
                private: false,
            },
        )
    };
    let target = Emit {
        out: a.out.as_deref(),
        field: "public_key",
        opts,
    };
    let mut m = meta(&resp.key_id, resp.key_version);
    m.insert("algorithm".to_owned(), json!(resp.algorithm));
    emit(ctx, &target, &data, m)
}

/// Whether `data` is one whole DER SEQUENCE (tag, definite length, nothing after): the outer
/// shape of a GM/T 0009 SM2 ciphertext. Only to word an error; the server decides.
fn is_der_sequence(data: &[u8]) -> bool {
    let Some((&0x30, rest)) = data.split_first() else {
        return false;
    };
    let Some((&first, rest)) = rest.split_first() else {
        return false;
    };
    let (len, body) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let Some((len_bytes, body)) = rest.split_at_checked(n) else {
                return false;
            };
            (
                len_bytes
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)),
                body,
            )
        }
        _ => return false,
    };
    body.len() == len
}

/// A refused `asym-decrypt`: the server's "decryption failed" says nothing of the format
/// (deliberately: no oracle), and the generic hint's `--context` is no option of this command.
/// Say what an SM2 ciphertext must be, and whether this input even has its shape.
fn asym_decrypt_refused(status: &tonic::Status, der_shaped: bool) -> CliError {
    let err = CliError::from_status(status);
    if status.code() != tonic::Code::InvalidArgument
        || !status.message().contains("decryption failed")
    {
        return err;
    }
    let shape = if der_shaped {
        ""
    } else {
        " This input is not DER (raw C1C3C2 or C1C2C3 bytes, as some libraries write, must be \
         converted to it first)."
    };
    err.with_hint(format!(
        "the ciphertext is damaged or not for this key. SM2 ciphertext must be GM/T 0009 DER: \
         SEQUENCE {{ x INTEGER, y INTEGER, hash OCTET STRING (32 bytes), ciphertext OCTET STRING \
         }}, as OpenSSL and GmSSL write it.{shape} RSA ciphertext must be RSA-OAEP to \
         this key's public key"
    ))
}

pub(super) async fn asym_decrypt(ctx: &Ctx, a: AsymDecryptArgs) -> Result<(), CliError> {
    let data = files::read_maybe_base64(a.io.input.as_deref(), a.base64, "the ciphertext")?;
    let der_shaped = is_der_sequence(&data);
    let resp = ctx
        .crypto()
        .asymmetric_decrypt(AsymmetricDecryptRequest {
            key: a.key,
            ciphertext: take(data),
            key_version: a.key_version,
        })
        .await
        .map_err(|s| asym_decrypt_refused(&s, der_shaped))?
        .into_inner();
    if resp.key_compromised {
        compromised_warning(&resp.key_id);
    }
    let pt = Zeroizing::new(resp.plaintext);
    let target = Emit {
        out: a.io.out.as_deref(),
        field: "plaintext",
        opts: plaintext(false),
    };
    let mut m = meta(&resp.key_id, resp.key_version);
    m.insert("key_compromised".to_owned(), json!(resp.key_compromised));
    emit(ctx, &target, &pt, m)
}

pub(super) async fn mac(ctx: &Ctx, a: MacArgs) -> Result<(), CliError> {
    let data = files::read_input(a.io.input.as_deref())?;
    let resp = ctx
        .crypto()
        .generate_mac(GenerateMacRequest {
            key: a.key,
            data: take(data),
        })
        .await?
        .into_inner();
    let target = Emit {
        out: a.io.out.as_deref(),
        field: "mac",
        opts: binary(a.base64),
    };
    emit(
        ctx,
        &target,
        &resp.mac,
        meta(&resp.key_id, resp.key_version),
    )
}

pub(super) async fn verify_mac(ctx: &Ctx, a: VerifyMacArgs) -> Result<(), CliError> {
    let tag = files::read_maybe_base64(Some(&a.tag), a.base64, "the tag")?;
    let data = files::read_input(a.input.as_deref())?;
    let resp = ctx
        .crypto()
        .verify_mac(VerifyMacRequest {
            key: a.key,
            data: take(data),
            mac: tag.to_vec(),
            key_version: a.key_version,
        })
        .await?
        .into_inner();
    report_validity(
        ctx,
        Checked::MacTag,
        resp.valid,
        &resp.key_id,
        resp.key_version,
    )
}

pub(super) async fn random(ctx: &Ctx, a: RandomArgs) -> Result<(), CliError> {
    let resp = ctx
        .crypto()
        .generate_random(GenerateRandomRequest { length: a.bytes })
        .await?
        .into_inner();
    let bytes = Zeroizing::new(resp.random);
    let target = Emit {
        out: a.out.as_deref(),
        field: "random",
        opts: WriteOpts {
            base64: a.base64,
            binary: true,
            private: true,
        },
    };
    emit(ctx, &target, &bytes, Map::new())
}
