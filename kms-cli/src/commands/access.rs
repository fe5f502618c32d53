//! `kms principal …` and `kms grant …`

use kms_proto::v1::{
    AddPrincipalRequest, CreateGrantRequest, Empty, GrantInfo, ListGrantsRequest, PrincipalInfo,
    RemovePrincipalRequest, RevokeGrantRequest,
};
use serde::Serialize;
use serde_json::json;

use super::Ctx;
use crate::args::{GrantCommand, PrincipalCommand, RoleArg};
use crate::error::CliError;
use crate::files;
use crate::output::{print_json, table, time};

#[derive(Serialize)]
struct PrincipalJson<'a> {
    subject: &'a str,
    role: &'a str,
    namespace: &'a str,
    created_at: u64,
}

impl<'a> From<&'a PrincipalInfo> for PrincipalJson<'a> {
    fn from(p: &'a PrincipalInfo) -> Self {
        Self {
            subject: &p.subject,
            role: &p.role,
            namespace: &p.namespace,
            created_at: p.created_at,
        }
    }
}

#[derive(Serialize)]
struct GrantJson<'a> {
    key_id: &'a str,
    namespace: &'a str,
    operations: &'a [String],
    created_at: u64,
}

impl<'a> From<&'a GrantInfo> for GrantJson<'a> {
    fn from(g: &'a GrantInfo) -> Self {
        Self {
            key_id: &g.key_id,
            namespace: &g.grantee_namespace,
            operations: &g.operations,
            created_at: g.created_at,
        }
    }
}

const fn role_name(r: RoleArg) -> &'static str {
    match r {
        RoleArg::App => "app",
        RoleArg::Admin => "admin",
        RoleArg::Auditor => "auditor",
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-" } else { s }.to_owned()
}

pub(super) async fn principal(ctx: &Ctx, cmd: PrincipalCommand) -> Result<(), CliError> {
    let mut admin = ctx.admin();
    match cmd {
        PrincipalCommand::Add {
            subject,
            role,
            namespace,
        } => {
            let p = admin
                .add_principal(AddPrincipalRequest {
                    subject,
                    role: role_name(role).to_owned(),
                    namespace: namespace.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if ctx.json {
                return print_json(&PrincipalJson::from(&p));
            }
            let place = if p.namespace.is_empty() {
                String::new()
            } else {
                format!(" in namespace {}", p.namespace)
            };
            files::println(&format!("added {} as {}{place}", p.subject, p.role))
        }
        PrincipalCommand::List => {
            let resp = admin.list_principals(Empty {}).await?.into_inner();
            if ctx.json {
                let list: Vec<PrincipalJson<'_>> =
                    resp.principals.iter().map(PrincipalJson::from).collect();
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = resp
                .principals
                .iter()
                .map(|p| {
                    vec![
                        p.subject.clone(),
                        p.role.clone(),
                        or_dash(&p.namespace),
                        time(p.created_at),
                    ]
                })
                .collect();
            files::println(table(&["SUBJECT", "ROLE", "NAMESPACE", "CREATED"], &rows).trim_end())
        }
        PrincipalCommand::Remove { subject } => {
            admin
                .remove_principal(RemovePrincipalRequest {
                    subject: subject.clone(),
                })
                .await?;
            if ctx.json {
                print_json(&json!({ "removed": subject }))
            } else {
                files::println(&format!("removed {subject}"))
            }
        }
    }
}

pub(super) async fn grant(ctx: &Ctx, cmd: GrantCommand) -> Result<(), CliError> {
    let mut admin = ctx.admin();
    match cmd {
        GrantCommand::Add {
            key,
            namespace,
            ops,
        } => {
            let g = admin
                .create_grant(CreateGrantRequest {
                    key,
                    grantee_namespace: namespace,
                    operations: ops,
                })
                .await?
                .into_inner();
            if ctx.json {
                return print_json(&GrantJson::from(&g));
            }
            files::println(&format!(
                "granted {} on key {} to namespace {}",
                g.operations.join(","),
                g.key_id,
                g.grantee_namespace
            ))
        }
        GrantCommand::List { key } => {
            let resp = admin
                .list_grants(ListGrantsRequest {
                    key: key.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if ctx.json {
                let list: Vec<GrantJson<'_>> = resp.grants.iter().map(GrantJson::from).collect();
                return print_json(&list);
            }
            if resp.grants.is_empty() {
                return files::println("no grants");
            }
            let rows: Vec<Vec<String>> = resp
                .grants
                .iter()
                .map(|g| {
                    vec![
                        g.key_id.clone(),
                        g.grantee_namespace.clone(),
                        g.operations.join(","),
                        time(g.created_at),
                    ]
                })
                .collect();
            files::println(
                table(&["KEY_ID", "NAMESPACE", "OPERATIONS", "CREATED"], &rows).trim_end(),
            )
        }
        GrantCommand::Remove { key, namespace } => {
            admin
                .revoke_grant(RevokeGrantRequest {
                    key: key.clone(),
                    grantee_namespace: namespace.clone(),
                })
                .await?;
            if ctx.json {
                print_json(&json!({ "revoked": { "key": key, "namespace": namespace } }))
            } else {
                files::println(&format!(
                    "revoked the grant on {key} to namespace {namespace}"
                ))
            }
        }
    }
}
