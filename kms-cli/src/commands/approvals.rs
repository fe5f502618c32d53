//! `kms approve`, `kms reject` and `kms approvals list`: dual control (issue 18, item 2).

use kms_proto::v1::{ApprovalInfo, ApproveRequest, ListApprovalsRequest, RejectRequest};
use serde::Serialize;

use super::Ctx;
use crate::args::ApprovalsCommand;
use crate::error::CliError;
use crate::files;
use crate::output::{fields, print_json, printable, table, time};

/// The metadata key that names a request, on the refusal that filed it and on `kms backup
/// --approval`.
pub(super) const APPROVAL_ID: &str = "kms-approval-id";

/// The request a refusal filed, if it did.
pub(super) fn pending_id(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(APPROVAL_ID)
        .and_then(|v| v.to_str().ok())
        .map(|s| printable(s).into_owned())
}

#[derive(Serialize)]
struct ApprovalJson<'a> {
    id: &'a str,
    operation: &'a str,
    parameters: &'a str,
    digest: &'a str,
    key_id: &'a str,
    requester: &'a str,
    approvers: &'a [String],
    needed: u32,
    state: &'a str,
    rejected_by: &'a str,
    result: &'a str,
    created_at: u64,
    expires_at: u64,
}

impl<'a> From<&'a ApprovalInfo> for ApprovalJson<'a> {
    fn from(a: &'a ApprovalInfo) -> Self {
        Self {
            id: &a.id,
            operation: &a.operation,
            parameters: &a.parameters,
            digest: &a.digest,
            key_id: &a.key_id,
            requester: &a.requester,
            approvers: &a.approvers,
            needed: a.needed,
            state: &a.state,
            rejected_by: &a.rejected_by,
            result: &a.result,
            created_at: a.created_at,
            expires_at: a.expires_at,
        }
    }
}

/// How many distinct administrators agree so far, of how many.
fn tally(a: &ApprovalInfo) -> String {
    format!("{}/{}", a.approvers.len() + 1, a.needed)
}

fn details(a: &ApprovalInfo) -> String {
    let mut pairs = vec![
        ("id", a.id.clone()),
        ("operation", a.operation.clone()),
        ("parameters", a.parameters.clone()),
        ("digest", a.digest.clone()),
        ("requester", a.requester.clone()),
        ("approved by", a.approvers.join(", ")),
        ("administrators", tally(a)),
        ("state", a.state.clone()),
        ("expires", time(a.expires_at)),
    ];
    if !a.rejected_by.is_empty() {
        pairs.push(("rejected by", a.rejected_by.clone()));
    }
    if !a.result.is_empty() {
        pairs.push(("result", a.result.clone()));
    }
    fields(&pairs)
}

fn show(ctx: &Ctx, a: &ApprovalInfo, next: Option<String>) -> Result<(), CliError> {
    if ctx.json {
        return print_json(&ApprovalJson::from(a));
    }
    let mut text = details(a);
    if let Some(line) = next {
        text.push_str(&line);
    }
    files::println(text.trim_end())
}

pub(super) async fn approve(ctx: &Ctx, id: String, digest: Option<String>) -> Result<(), CliError> {
    let a = ctx
        .admin()
        .approve(ApproveRequest {
            id,
            digest: digest.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let next = match a.state.as_str() {
        "pending" => Some(format!(
            "\nwaiting for more approvals ({} of {} administrators)",
            a.approvers.len() + 1,
            a.needed
        )),
        "approved" => Some(format!(
            "\n{} may now run the operation with --approval {}",
            printable(&a.requester),
            printable(&a.id)
        )),
        _ => None,
    };
    show(ctx, &a, next)
}

pub(super) async fn reject(ctx: &Ctx, id: String, reason: Option<String>) -> Result<(), CliError> {
    let a = ctx
        .admin()
        .reject(RejectRequest {
            id,
            reason: reason.unwrap_or_default(),
        })
        .await?
        .into_inner();
    show(ctx, &a, None)
}

pub(super) async fn run(ctx: &Ctx, cmd: ApprovalsCommand) -> Result<(), CliError> {
    let ApprovalsCommand::List { id } = cmd;
    let all = ctx
        .admin()
        .list_approvals(ListApprovalsRequest {
            id: id.unwrap_or_default(),
        })
        .await?
        .into_inner()
        .approvals;
    if ctx.json {
        let list: Vec<ApprovalJson<'_>> = all.iter().map(ApprovalJson::from).collect();
        return print_json(&list);
    }
    if all.is_empty() {
        return files::println("no approval requests");
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.operation.clone(),
                a.state.clone(),
                a.requester.clone(),
                tally(a),
                time(a.expires_at),
                a.parameters.clone(),
            ]
        })
        .collect();
    files::println(
        table(
            &[
                "ID",
                "OPERATION",
                "STATE",
                "REQUESTER",
                "ADMINS",
                "EXPIRES",
                "PARAMETERS",
            ],
            &rows,
        )
        .trim_end(),
    )
}
