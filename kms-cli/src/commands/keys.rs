//! `kms key …`

use kms_proto::v1::{
    CreateAliasRequest, CreateKeyRequest, DeleteAliasRequest, ImportPublicKeyRequest, KeyMetadata,
    KeyRequest, ListKeysRequest, Purpose, ScheduleKeyDestructionRequest, SetRotationPolicyRequest,
};
use serde_json::json;

use super::Ctx;
use super::transfer;
use crate::args::{KeyCommand, OriginArg, PurposeArg};
use crate::error::CliError;
use crate::files;
use crate::output::{KeyJson, key_details, key_table, print_json, state_name, time};
use crate::period::format_period;

/// The wire purpose for `--purpose`.
pub(crate) const fn purpose(p: PurposeArg) -> Purpose {
    match p {
        PurposeArg::Encrypt => Purpose::Encrypt,
        PurposeArg::Sign => Purpose::Sign,
        PurposeArg::AsymmetricDecrypt => Purpose::AsymmetricDecrypt,
        PurposeArg::Mac => Purpose::Mac,
        PurposeArg::Password => Purpose::Password,
        PurposeArg::Pepper => Purpose::Pepper,
        PurposeArg::Tokenize => Purpose::Tokenize,
    }
}

/// The key spec `kms key create` uses when `--algorithm` is left out: the GM algorithm.
pub(crate) const fn default_algorithm(p: PurposeArg) -> &'static str {
    match p {
        PurposeArg::Encrypt => "sm4-gcm",
        PurposeArg::Sign | PurposeArg::AsymmetricDecrypt | PurposeArg::Password => "sm2",
        PurposeArg::Mac | PurposeArg::Pepper => "hmac-sm3",
        PurposeArg::Tokenize => "sm4-ff1",
    }
}

pub(super) async fn run(ctx: &Ctx, cmd: KeyCommand) -> Result<(), CliError> {
    let mut admin = ctx.admin();
    let key = match cmd {
        KeyCommand::Create {
            purpose: p,
            algorithm,
            alias,
            namespace,
            rotation_period,
            description,
            origin,
            exportable,
        } => {
            let resp = admin
                .create_key(CreateKeyRequest {
                    namespace: namespace.unwrap_or_default(),
                    purpose: purpose(p).into(),
                    algorithm: algorithm.unwrap_or_else(|| default_algorithm(p).to_owned()),
                    alias: alias.unwrap_or_default(),
                    rotation_period_seconds: rotation_period,
                    description: description.unwrap_or_default(),
                    origin: match origin {
                        OriginArg::Generated => "generated",
                        OriginArg::External => "external",
                    }
                    .to_owned(),
                    exportable,
                })
                .await?;
            let key = metadata(resp.into_inner().key)?;
            // People and scripts alike want the id: `K=$(kms key create …)`.
            return if ctx.json {
                print_json(&KeyJson::from(&key))
            } else {
                files::println(&key.key_id)
            };
        }
        KeyCommand::ImportParams {
            key,
            wrapping_spec,
            wrapping_key_spec,
            out,
        } => {
            return transfer::import_params(ctx, key, wrapping_spec, wrapping_key_spec, &out).await;
        }
        KeyCommand::Import {
            key,
            input,
            token,
            material,
            wrap_locally: _,
            wrapping_spec,
            expires_in,
        } => {
            let source = match (input, token, material) {
                (Some(input), Some(token), None) => transfer::Source::Wrapped { input, token },
                (None, None, Some(material)) => transfer::Source::Local {
                    material,
                    wrapping_spec,
                },
                _ => {
                    return Err(CliError::usage(
                        "give --in FILE --token TOKEN (wrapped outside), or --material FILE \
                         --wrap-locally",
                    ));
                }
            };
            return transfer::import(ctx, key, source, expires_in).await;
        }
        KeyCommand::Export {
            key,
            to,
            wrapping_spec,
            version,
            out,
            approval,
        } => {
            return transfer::export(
                ctx,
                transfer::ExportArgs {
                    key,
                    to,
                    wrapping_spec,
                    version,
                    out,
                    approval,
                },
            )
            .await;
        }
        KeyCommand::ImportPublic {
            purpose: p,
            input,
            alias,
            namespace,
            description,
        } => {
            let public_key = std::fs::read(&input)
                .map_err(|e| CliError::io(&input.display().to_string(), &e))?;
            let resp = admin
                .import_public_key(ImportPublicKeyRequest {
                    namespace: namespace.unwrap_or_default(),
                    purpose: purpose(p).into(),
                    public_key,
                    alias: alias.unwrap_or_default(),
                    description: description.unwrap_or_default(),
                })
                .await?;
            let key = metadata(resp.into_inner().key)?;
            return if ctx.json {
                print_json(&KeyJson::from(&key))
            } else {
                files::println(&key.key_id)
            };
        }
        KeyCommand::List { namespace } => {
            let resp = admin
                .list_keys(ListKeysRequest {
                    namespace: namespace.unwrap_or_default(),
                })
                .await?
                .into_inner();
            return if ctx.json {
                let keys: Vec<KeyJson> = resp.keys.iter().map(KeyJson::from).collect();
                print_json(&keys)
            } else if resp.keys.is_empty() {
                files::println("no keys")
            } else {
                files::println(key_table(&resp.keys).trim_end())
            };
        }
        KeyCommand::Describe { key } => {
            let key = metadata(
                admin
                    .describe_key(KeyRequest { key })
                    .await?
                    .into_inner()
                    .key,
            )?;
            return if ctx.json {
                print_json(&KeyJson::from(&key))
            } else {
                files::println(key_details(&key).trim_end())
            };
        }
        KeyCommand::RemoveAlias { alias, namespace } => {
            admin
                .delete_alias(DeleteAliasRequest {
                    namespace: namespace.unwrap_or_default(),
                    alias: alias.clone(),
                })
                .await?;
            return if ctx.json {
                print_json(&json!({ "removed_alias": alias }))
            } else {
                files::println(&format!("alias {alias} removed"))
            };
        }
        KeyCommand::Rotate { key } => admin.rotate_key(KeyRequest { key }).await?,
        KeyCommand::SetRotation { key, period } => {
            admin
                .set_rotation_policy(SetRotationPolicyRequest {
                    key,
                    rotation_period_seconds: period.seconds(),
                })
                .await?
        }
        KeyCommand::Enable { key } => admin.enable_key(KeyRequest { key }).await?,
        KeyCommand::Disable { key } => admin.disable_key(KeyRequest { key }).await?,
        KeyCommand::Compromise { key } => admin.mark_compromised(KeyRequest { key }).await?,
        KeyCommand::ScheduleDestruction { key, days } => {
            admin
                .schedule_key_destruction(ScheduleKeyDestructionRequest {
                    key,
                    pending_days: days.unwrap_or(0),
                })
                .await?
        }
        KeyCommand::CancelDestruction { key } => {
            admin.cancel_key_destruction(KeyRequest { key }).await?
        }
        KeyCommand::Alias { key, alias } => {
            admin
                .create_alias(CreateAliasRequest { key, alias })
                .await?
        }
    };
    let key = metadata(key.into_inner().key)?;
    if ctx.json {
        print_json(&KeyJson::from(&key))
    } else {
        files::println(&summary(&key))
    }
}

fn metadata(key: Option<KeyMetadata>) -> Result<KeyMetadata, CliError> {
    key.ok_or_else(|| CliError::other("the server's answer carried no key"))
}

/// One line after a change: id, state, version, and what is scheduled.
fn summary(k: &KeyMetadata) -> String {
    let mut line = format!(
        "key {}: {}, version {}",
        k.key_id,
        state_name(k.state()),
        k.current_version
    );
    match k.rotation_period_seconds {
        Some(s) => line.push_str(&format!(", rotates every {}", format_period(s))),
        None => line.push_str(", manual rotation"),
    }
    if let Some(at) = k.destroy_at {
        line.push_str(&format!(", to be destroyed at {}", time(at)));
    }
    if !k.aliases.is_empty() {
        line.push_str(&format!(", aliases {}", k.aliases.join(",")));
    }
    line
}
