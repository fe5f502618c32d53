//! `kms key import-params`, `kms key import` and `kms key export` (issue 19): key material
//! moves in and out only wrapped. With `--wrap-locally` the CLI does the wrapping an admin
//! would otherwise do with OpenSSL, on this machine, so the plain key never travels.

use std::path::{Path, PathBuf};

use kms_core::crypto::PublicKey;
use kms_core::crypto::pkcs8_shape;
use kms_core::crypto::transport::{self, WrappingSpec};
use kms_core::policy::{Policy, PolicyMode};
use kms_proto::v1::{
    ExportKeyRequest, GetImportParametersRequest, ImportKeyMaterialRequest,
    ImportParametersResponse,
};
use serde::Serialize;
use zeroize::Zeroizing;

use super::Ctx;
use crate::args::WrappingSpecArg;
use crate::error::{CliError, ExitKind};
use crate::files;
use crate::output::{KeyJson, print_json};

/// Where the material of `kms key import` comes from.
pub(super) enum Source {
    /// Wrapped outside with the parameters of `kms key import-params`.
    Wrapped { input: PathBuf, token: String },
    /// A plain key file, wrapped here.
    Local {
        material: PathBuf,
        wrapping_spec: WrappingSpecArg,
    },
}

pub(super) struct ExportArgs {
    pub key: String,
    pub to: PathBuf,
    pub wrapping_spec: WrappingSpecArg,
    pub version: Option<u32>,
    pub out: PathBuf,
    pub approval: Option<String>,
}

#[derive(Serialize)]
struct ParamsJson<'a> {
    key_id: &'a str,
    import_token: &'a str,
    wrapping_spec: &'a str,
    wrapping_public_key_file: String,
    expires_at: u64,
}

#[derive(Serialize)]
struct ExportJson<'a> {
    key_id: &'a str,
    version: u32,
    algorithm: &'a str,
    wrapping_spec: &'a str,
    recipient_sm3: &'a str,
    out: String,
}

async fn params(
    ctx: &Ctx,
    key: String,
    spec: WrappingSpecArg,
    wrapping_key_spec: Option<String>,
) -> Result<ImportParametersResponse, CliError> {
    Ok(ctx
        .admin()
        .get_import_parameters(GetImportParametersRequest {
            key,
            wrapping_spec: spec.name().to_owned(),
            wrapping_key_spec: wrapping_key_spec.unwrap_or_default(),
        })
        .await?
        .into_inner())
}

pub(super) async fn import_params(
    ctx: &Ctx,
    key: String,
    spec: WrappingSpecArg,
    wrapping_key_spec: Option<String>,
    out: &Path,
) -> Result<(), CliError> {
    let p = params(ctx, key, spec, wrapping_key_spec).await?;
    files::write_file(out, p.wrapping_public_key_pem.as_bytes(), false)?;
    if ctx.json {
        print_json(&ParamsJson {
            key_id: &p.key_id,
            import_token: &p.import_token,
            wrapping_spec: &p.wrapping_spec,
            wrapping_public_key_file: out.display().to_string(),
            expires_at: p.expires_at,
        })
    } else {
        // The token alone on stdout: `TOKEN=$(kms key import-params …)`.
        files::println(&p.import_token)
    }
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| CliError::io(&path.display().to_string(), &e))
}

/// Wraps a plain key file to the one-time wrapping key, as an outside tool would.
fn wrap_locally(
    p: &ImportParametersResponse,
    spec: WrappingSpecArg,
    file: &[u8],
) -> Result<Vec<u8>, CliError> {
    let invalid = |e: kms_core::Error| CliError::new(ExitKind::InvalidArgument, e.to_string());
    let policy = Policy::from_config(PolicyMode::Standard);
    let public = PublicKey::from_spki_pem(policy, &p.wrapping_public_key_pem).map_err(invalid)?;
    let spec =
        WrappingSpec::parse(spec.name()).ok_or_else(|| CliError::other("unknown wrapping spec"))?;
    // A PEM private key becomes its DER; anything else (raw key bytes, DER) goes as it is,
    // and the server says what it must be.
    let material = pkcs8_shape::der_from_pem_or_der(file).map_err(invalid)?;
    let approved = policy
        .approve(kms_core::alg::Purpose::AsymmetricDecrypt, public.spec())
        .map_err(|e| invalid(e.into()))?;
    transport::wrap(&approved, spec, &public, material.expose_secret()).map_err(|_| {
        CliError::new(
            ExitKind::InvalidArgument,
            format!(
                "the material cannot be wrapped by {}: too large for rsa-oaep-sha256? use \
                 --wrapping-spec rsa-aes-kwp",
                spec.name()
            ),
        )
    })
}

pub(super) async fn import(
    ctx: &Ctx,
    key: String,
    source: Source,
    expires_in: Option<u64>,
) -> Result<(), CliError> {
    let (token, wrapped) = match source {
        Source::Wrapped { input, token } => (token, read(&input)?.to_vec()),
        Source::Local {
            material,
            wrapping_spec,
        } => {
            let file = read(&material)?;
            let p = params(ctx, key.clone(), wrapping_spec, None).await?;
            let wrapped = wrap_locally(&p, wrapping_spec, &file)?;
            (p.import_token, wrapped)
        }
    };
    let expires_at = expires_in.map(|d| now().saturating_add(d));
    let resp = ctx
        .admin()
        .import_key_material(ImportKeyMaterialRequest {
            key,
            import_token: token,
            wrapped_material: wrapped,
            expires_at,
        })
        .await?;
    let key = resp
        .into_inner()
        .key
        .ok_or_else(|| CliError::other("the server returned no key"))?;
    if ctx.json {
        print_json(&KeyJson::from(&key))
    } else {
        files::println(&format!(
            "{} imported: {} (material SM3 {})",
            key.key_id,
            crate::output::state_name(key.state()),
            key.material_fingerprint
        ))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) async fn export(ctx: &Ctx, a: ExportArgs) -> Result<(), CliError> {
    let recipient = read(&a.to)?.to_vec();
    let mut request = tonic::Request::new(ExportKeyRequest {
        key: a.key,
        version: a.version.unwrap_or(0),
        recipient_public_key: recipient,
        wrapping_spec: a.wrapping_spec.name().to_owned(),
    });
    if let Some(id) = &a.approval {
        let value = id.parse().map_err(|_| {
            CliError::usage(format!("--approval {id:?} is not an approval request id"))
        })?;
        request
            .metadata_mut()
            .insert(super::approvals::APPROVAL_ID, value);
    }
    let out = ctx
        .admin()
        .export_key(request)
        .await
        .map_err(|s| {
            let e = CliError::from_status(&s);
            match super::approvals::pending_id(&s) {
                Some(id) => e.with_hint(format!(
                    "another administrator runs `kms approve {id}`; then run this again with \
                     --approval {id}"
                )),
                None => e,
            }
        })?
        .into_inner();
    files::write_file(&a.out, &out.wrapped_material, false)?;
    if ctx.json {
        print_json(&ExportJson {
            key_id: &out.key_id,
            version: out.version,
            algorithm: &out.algorithm,
            wrapping_spec: &out.wrapping_spec,
            recipient_sm3: &out.recipient_sm3,
            out: a.out.display().to_string(),
        })
    } else {
        files::println(&format!(
            "{} version {} exported ({}) to the public key with SM3 {}: {}",
            out.key_id,
            out.version,
            out.wrapping_spec,
            out.recipient_sm3,
            a.out.display()
        ))
    }
}
