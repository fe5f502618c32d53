//! `kms tokenize` and `kms detokenize`: CSV columns replaced by tokens (or tokens by values)
//! through `kms.v1.Tokenization`, in calls of at most 1000 values.
//!
//! The CSV is read whole (`crate::csv`), the chosen columns' non-empty cells go to the server
//! in order, and the table is written back with those cells replaced; every other cell, the
//! header (`--header`) and empty cells pass through unchanged. If any value is refused, nothing
//! is written: a half-tokenised file would mix tokens with the values they were meant to hide.
//! The error names the first refused cell by row and column (never its content).
//!
//! The key version matters: tokens do not carry it, and detokenising needs it. `kms tokenize`
//! prints it on stderr (`tokenized N values with key K version V`; with `--json`, one JSON
//! object), so stdout stays the CSV.

use std::collections::HashMap;

use kms_proto::v1::{self, DetokenizeRequest, TokenizeRequest, token_result};
use serde::Serialize;
use tonic::Code;
use zeroize::Zeroizing;

use super::Ctx;
use crate::args::{DetokenizeArgs, TokenColumns, TokenizeArgs};
use crate::csv;
use crate::error::{CliError, ExitKind};
use crate::files;

/// The API's most values per call.
const MAX_VALUES: usize = 1000;

/// Where a cell is: its record and field, both from 0.
#[derive(Clone, Copy)]
struct Cell {
    record: usize,
    field: usize,
}

/// What the command prints on stderr when it is done.
#[derive(Serialize)]
struct Summary<'a> {
    operation: &'static str,
    key_id: &'a str,
    key_version: u32,
    /// Records read, the header included.
    records: usize,
    /// Cells replaced.
    values: usize,
    /// Set by Tokenize: the key makes one-way pseudonyms.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pseudonyms: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    key_compromised: bool,
}

/// The cells of `columns` to replace: every non-empty one, after the header.
fn cells(table: &csv::Table, args: &TokenColumns) -> Result<Vec<Cell>, CliError> {
    let mut out = Vec::new();
    let skip = usize::from(args.header);
    for (record, fields) in table.records.iter().enumerate().skip(skip) {
        for &column in &args.columns {
            let field = usize::try_from(column.saturating_sub(1)).unwrap_or(usize::MAX);
            let Some(value) = fields.get(field) else {
                return Err(CliError::usage(format!(
                    "row {} has {} fields; --column {column} is beyond them",
                    record + 1,
                    fields.len()
                )));
            };
            if !value.is_empty() {
                out.push(Cell { record, field });
            }
        }
    }
    Ok(out)
}

fn context(args: &TokenColumns) -> HashMap<String, String> {
    args.context.iter().cloned().collect()
}

/// A refused cell as the command's error: row and column, the server's words.
fn refused(cell: Cell, e: &v1::ItemError, failed: usize, total: usize) -> CliError {
    CliError::new(
        ExitKind::from_code(Code::from_i32(e.code)),
        format!(
            "{failed} of {total} cells were refused, so nothing was written; the first, row {} \
             column {}: {}",
            cell.record + 1,
            cell.field + 1,
            e.message
        ),
    )
    .with_hint("fix or remove those cells, or check --format and --column")
}

/// Puts each result into its cell; the first refusal (and how many) if any was refused.
fn place(
    table: &mut csv::Table,
    cells: &[Cell],
    results: Vec<v1::TokenResult>,
    first_failure: &mut Option<(Cell, v1::ItemError)>,
    failed: &mut usize,
) -> Result<(), CliError> {
    if results.len() != cells.len() {
        return Err(CliError::other(format!(
            "the server answered {} results for {} values",
            results.len(),
            cells.len()
        )));
    }
    for (&cell, r) in cells.iter().zip(results) {
        match r.result {
            Some(token_result::Result::Ok(s)) => {
                let text = Zeroizing::new(s.into_bytes());
                if let Some(slot) = table
                    .records
                    .get_mut(cell.record)
                    .and_then(|f| f.get_mut(cell.field))
                {
                    slot.clear();
                    slot.extend_from_slice(&text);
                }
            }
            Some(token_result::Result::Error(e)) => {
                *failed += 1;
                first_failure.get_or_insert((cell, e));
            }
            None => return Err(CliError::other("the server answered an empty result")),
        }
    }
    Ok(())
}

/// The cells' current contents, as the request's strings (each chunk's).
fn strings(table: &csv::Table, cells: &[Cell]) -> Result<Vec<String>, CliError> {
    cells
        .iter()
        .map(|c| {
            let bytes = table
                .records
                .get(c.record)
                .and_then(|f| f.get(c.field))
                .ok_or_else(|| CliError::other("a cell went missing"))?;
            String::from_utf8(bytes.clone()).map_err(|_| {
                CliError::usage(format!(
                    "row {} column {} is not UTF-8 text",
                    c.record + 1,
                    c.field + 1
                ))
            })
        })
        .collect()
}

fn summary(ctx: &Ctx, s: &Summary<'_>) -> Result<(), CliError> {
    if ctx.json {
        let line = serde_json::to_string(s)
            .map_err(|e| CliError::other(format!("cannot write the summary: {e}")))?;
        eprintln!("{line}");
    } else {
        eprintln!(
            "{} {} values in {} rows with key {} version {}{}",
            s.operation,
            s.values,
            s.records,
            s.key_id,
            s.key_version,
            if s.pseudonyms {
                " (pseudonyms: one-way)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn finish(
    table: &csv::Table,
    args: &TokenColumns,
    first_failure: Option<(Cell, v1::ItemError)>,
    failed: usize,
    total: usize,
) -> Result<(), CliError> {
    if let Some((cell, e)) = first_failure {
        return Err(refused(cell, &e, failed, total));
    }
    files::write_output(
        args.io.out.as_deref(),
        &csv::write(table),
        files::WriteOpts {
            base64: false,
            binary: false,
            private: true,
        },
    )
}

fn read(args: &TokenColumns) -> Result<(csv::Table, Vec<Cell>), CliError> {
    let raw = files::read_input(args.io.input.as_deref())?;
    let table = csv::parse(&raw).map_err(|e| CliError::usage(e.to_string()))?;
    let cells = cells(&table, args)?;
    Ok((table, cells))
}

/// `kms tokenize --key K --column N [--format F] [--header] [--context K=V]`.
pub(super) async fn tokenize(ctx: &Ctx, a: TokenizeArgs) -> Result<(), CliError> {
    let args = &a.columns;
    let (mut table, cells) = read(args)?;
    let mut client = ctx.tokens();
    let (mut failed, mut first_failure) = (0, None);
    let mut used: Option<(String, u32, bool)> = None;
    for chunk in cells.chunks(MAX_VALUES) {
        let resp = client
            .tokenize(TokenizeRequest {
                key: args.key.clone(),
                format: args.format.name().to_owned(),
                context: context(args),
                values: strings(&table, chunk)?,
            })
            .await?
            .into_inner();
        // A rotation between two calls would split the file over two versions, which one
        // --key-version could not detokenise.
        if let Some((_, version, _)) = &used
            && *version != resp.key_version
        {
            return Err(CliError::new(
                ExitKind::Other,
                "the key rotated while the file was tokenised; nothing was written: run again",
            ));
        }
        used = Some((resp.key_id.clone(), resp.key_version, resp.pseudonyms));
        place(
            &mut table,
            chunk,
            resp.results,
            &mut first_failure,
            &mut failed,
        )?;
    }
    finish(&table, args, first_failure, failed, cells.len())?;
    let (key_id, key_version, pseudonyms) = used.unwrap_or_default();
    summary(
        ctx,
        &Summary {
            operation: "tokenized",
            key_id: &key_id,
            key_version,
            records: table.records.len(),
            values: cells.len(),
            pseudonyms,
            key_compromised: false,
        },
    )
}

/// `kms detokenize --key K --key-version V --column N [--format F] [--header] [--context K=V]`.
pub(super) async fn detokenize(ctx: &Ctx, a: DetokenizeArgs) -> Result<(), CliError> {
    let args = &a.columns;
    let (mut table, cells) = read(args)?;
    let mut client = ctx.tokens();
    let (mut failed, mut first_failure) = (0, None);
    let mut key_id = String::new();
    let mut compromised = false;
    for chunk in cells.chunks(MAX_VALUES) {
        let resp = client
            .detokenize(DetokenizeRequest {
                key: args.key.clone(),
                key_version: a.key_version,
                format: args.format.name().to_owned(),
                context: context(args),
                tokens: strings(&table, chunk)?,
            })
            .await?
            .into_inner();
        key_id.clone_from(&resp.key_id);
        compromised |= resp.key_compromised;
        place(
            &mut table,
            chunk,
            resp.results,
            &mut first_failure,
            &mut failed,
        )?;
    }
    if compromised {
        super::crypto::compromised_warning(&key_id);
    }
    finish(&table, args, first_failure, failed, cells.len())?;
    summary(
        ctx,
        &Summary {
            operation: "detokenized",
            key_id: &key_id,
            key_version: a.key_version,
            records: table.records.len(),
            values: cells.len(),
            pseudonyms: false,
            key_compromised: compromised,
        },
    )
}
