//! Output for people (aligned tables, `field  value` listings) and for scripts (`--json`).
//!
//! Names in both are the CLI's own vocabulary: purposes as `--purpose` takes them (`encrypt`,
//! `asymmetric-decrypt`, …), states in lower case (`enabled`, `pending-destruction`, …). JSON
//! times are Unix seconds; tables show them as RFC 3339 UTC.

use kms_proto::v1::{KeyMetadata, KeyState, KeyVersionInfo, Purpose};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::CliError;
use crate::files;
use crate::period::format_period;

/// `text` safe to print to a terminal: control characters (escape sequences, carriage returns,
/// NULs) and other invisible characters become `\u{…}` escapes, so a key description or alias
/// cannot move the cursor, rewrite earlier lines or hide in the output.
#[must_use]
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if !text.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Columns padded to their widest cell, two spaces apart; no trailing spaces. Cells are made
/// [`printable`].
#[must_use]
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|&h| h.to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `field  value` lines, fields padded to the widest; values made [`printable`].
#[must_use]
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let line = format!("{k:<width$}  {}", printable(v));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// RFC 3339 UTC for Unix seconds; `-` for 0, the raw number if out of range.
#[must_use]
pub fn time(secs: u64) -> String {
    if secs == 0 {
        return "-".to_owned();
    }
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

fn opt_time(secs: Option<u64>) -> String {
    secs.map_or_else(|| "-".to_owned(), time)
}

/// A purpose as `--purpose` takes it.
#[must_use]
pub const fn purpose_name(p: Purpose) -> &'static str {
    match p {
        Purpose::Unspecified => "unspecified",
        Purpose::Encrypt => "encrypt",
        Purpose::Sign => "sign",
        Purpose::AsymmetricDecrypt => "asymmetric-decrypt",
        Purpose::Mac => "mac",
        Purpose::Password => "password",
        Purpose::Pepper => "pepper",
        Purpose::Tokenize => "tokenize",
    }
}

/// A key state in lower case.
#[must_use]
pub const fn state_name(s: KeyState) -> &'static str {
    match s {
        KeyState::Unspecified => "unspecified",
        KeyState::Enabled => "enabled",
        KeyState::Disabled => "disabled",
        KeyState::Compromised => "compromised",
        KeyState::PendingDestruction => "pending-destruction",
        KeyState::Destroyed => "destroyed",
        KeyState::PendingImport => "pending-import",
    }
}

/// One key version in JSON.
#[derive(Debug, Serialize)]
pub struct VersionJson {
    /// 1, 2, …
    pub version: u32,
    /// Unix seconds.
    pub created_at: u64,
    /// Material wiped.
    pub destroyed: bool,
    /// SubjectPublicKeyInfo DER, base64 (SIGN and ASYMMETRIC_DECRYPT keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_der: Option<String>,
}

/// A key in JSON: `key_id`, `purpose`, `algorithm`, `state`, `versions` and the rest.
#[derive(Debug, Serialize)]
pub struct KeyJson {
    /// UUID.
    pub key_id: String,
    /// The key's namespace.
    pub namespace: String,
    /// `encrypt`, `sign`, `asymmetric-decrypt` or `mac`.
    pub purpose: &'static str,
    /// Canonical key spec (`sm4-gcm`, `sm2`, …).
    pub algorithm: String,
    /// `enabled`, `disabled`, `compromised`, `pending-destruction`, `destroyed` or
    /// `pending-import`.
    pub state: &'static str,
    /// Free text.
    pub description: String,
    /// Aliases in the key's namespace.
    pub aliases: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// The version new work uses.
    pub current_version: u32,
    /// `generated` (inside the KMS), `imported` (material brought in wrapped) or
    /// `public-only` (an outside public key).
    pub origin: String,
    /// The material may leave, wrapped (`kms key export`).
    pub exportable: bool,
    /// Origin imported: SM3 (hex) of the material (of its public key for a key pair).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub material_fingerprint: String,
    /// Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported_at: Option<u64>,
    /// Unix seconds: when the imported material is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub material_expires_at: Option<u64>,
    /// How many times the material was exported.
    pub exports: u32,
    /// Every version.
    pub versions: Vec<VersionJson>,
    /// Seconds between automatic rotations, `null` when manual.
    pub rotation_period_seconds: Option<u64>,
    /// Unix seconds.
    pub last_rotated_at: Option<u64>,
    /// Unix seconds.
    pub next_rotation_at: Option<u64>,
    /// Unix seconds.
    pub compromised_at: Option<u64>,
    /// Unix seconds: when a scheduled destruction happens.
    pub destroy_at: Option<u64>,
    /// Unix seconds.
    pub destroyed_at: Option<u64>,
}

impl From<&KeyMetadata> for KeyJson {
    fn from(k: &KeyMetadata) -> Self {
        Self {
            key_id: k.key_id.clone(),
            namespace: k.namespace.clone(),
            purpose: purpose_name(k.purpose()),
            algorithm: k.algorithm.clone(),
            state: state_name(k.state()),
            description: k.description.clone(),
            aliases: k.aliases.clone(),
            created_at: k.created_at,
            current_version: k.current_version,
            origin: k.origin.clone(),
            exportable: k.exportable,
            material_fingerprint: k.material_fingerprint.clone(),
            imported_at: k.imported_at,
            material_expires_at: k.material_expires_at,
            exports: k.exports,
            versions: k.versions.iter().map(VersionJson::from).collect(),
            rotation_period_seconds: k.rotation_period_seconds,
            last_rotated_at: k.last_rotated_at,
            next_rotation_at: k.next_rotation_at,
            compromised_at: k.compromised_at,
            destroy_at: k.destroy_at,
            destroyed_at: k.destroyed_at,
        }
    }
}

impl From<&KeyVersionInfo> for VersionJson {
    fn from(v: &KeyVersionInfo) -> Self {
        Self {
            version: v.version,
            created_at: v.created_at,
            destroyed: v.destroyed,
            public_key_der: (!v.public_key_der.is_empty())
                .then(|| files::base64(&v.public_key_der)),
        }
    }
}

/// The `kms key list` table.
#[must_use]
pub fn key_table(keys: &[KeyMetadata]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.key_id.clone(),
                k.namespace.clone(),
                purpose_name(k.purpose()).to_owned(),
                k.algorithm.clone(),
                state_name(k.state()).to_owned(),
                k.current_version.to_string(),
                k.rotation_period_seconds
                    .map_or_else(|| "-".to_owned(), format_period),
                if k.aliases.is_empty() {
                    "-".to_owned()
                } else {
                    k.aliases.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "KEY_ID",
            "NAMESPACE",
            "PURPOSE",
            "ALGORITHM",
            "STATE",
            "VERSION",
            "ROTATION",
            "ALIASES",
        ],
        &rows,
    )
}

/// The `kms key describe` listing.
#[must_use]
pub fn key_details(k: &KeyMetadata) -> String {
    let mut out = fields(&[
        ("key_id", k.key_id.clone()),
        ("namespace", k.namespace.clone()),
        ("purpose", purpose_name(k.purpose()).to_owned()),
        ("algorithm", k.algorithm.clone()),
        ("origin", k.origin.clone()),
        (
            "exportable",
            if k.exportable {
                format!("yes ({} exports)", k.exports)
            } else {
                "no".to_owned()
            },
        ),
        ("state", state_name(k.state()).to_owned()),
        ("description", k.description.clone()),
        ("aliases", k.aliases.join(", ")),
        ("created", time(k.created_at)),
        ("current_version", k.current_version.to_string()),
        (
            "rotation",
            k.rotation_period_seconds.map_or_else(
                || "manual".to_owned(),
                |s| format!("every {}", format_period(s)),
            ),
        ),
        ("last_rotated", opt_time(k.last_rotated_at)),
        ("next_rotation", opt_time(k.next_rotation_at)),
        ("compromised", opt_time(k.compromised_at)),
        ("destroy_at", opt_time(k.destroy_at)),
        ("destroyed", opt_time(k.destroyed_at)),
    ]);
    if !k.material_fingerprint.is_empty() {
        out.push_str(&fields(&[
            ("material_sm3", k.material_fingerprint.clone()),
            ("imported", opt_time(k.imported_at)),
            ("material_expires", opt_time(k.material_expires_at)),
        ]));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = k
        .versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                time(v.created_at),
                if v.destroyed { "yes" } else { "no" }.to_owned(),
                if v.public_key_der.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{} bytes", v.public_key_der.len())
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &["VERSION", "CREATED", "DESTROYED", "PUBLIC_KEY"],
        &rows,
    ));
    out
}

/// Prints `value` as pretty JSON on stdout.
///
/// # Errors
/// When stdout cannot be written.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::other(format!("cannot encode JSON: {e}")))?;
    files::println(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_in_values_are_printed_as_escapes() {
        assert_eq!(printable("plain, 中文"), "plain, 中文");
        assert_eq!(
            printable("evil\u{1b}[2J\rgone\u{202e}"),
            "evil\\u{1b}[2J\\u{d}gone\\u{202e}"
        );
        let t = table(&["A"], &[vec!["x\ny".into()]]);
        assert_eq!(t, "A\nx\\u{a}y\n");
        assert_eq!(fields(&[("d", "a\u{7}".into())]), "d  a\\u{7}\n");
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned(), "x".to_owned()],
            vec!["bbbb".to_owned(), "v".to_owned(), String::new()],
        ];
        let text = table(&["K", "VALUE", "Z"], &rows);
        assert_eq!(text, "K     VALUE       Z\na     long value  x\nbbbb  v\n");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn key_json_carries_the_documented_fields() {
        let key = KeyMetadata {
            key_id: "k1".to_owned(),
            purpose: Purpose::Sign.into(),
            algorithm: "sm2".to_owned(),
            state: KeyState::PendingDestruction.into(),
            current_version: 2,
            versions: vec![
                KeyVersionInfo {
                    version: 1,
                    created_at: 1,
                    destroyed: false,
                    public_key_der: vec![1, 2],
                },
                KeyVersionInfo {
                    version: 2,
                    ..KeyVersionInfo::default()
                },
            ],
            rotation_period_seconds: Some(86_400),
            ..KeyMetadata::default()
        };
        let json = serde_json::to_value(KeyJson::from(&key)).unwrap();
        assert_eq!(json["key_id"], "k1");
        assert_eq!(json["purpose"], "sign");
        assert_eq!(json["algorithm"], "sm2");
        assert_eq!(json["state"], "pending-destruction");
        assert_eq!(json["versions"].as_array().unwrap().len(), 2);
        assert_eq!(json["versions"][0]["public_key_der"], "AQI=");
        assert!(json["versions"][1].get("public_key_der").is_none());
        assert_eq!(json["rotation_period_seconds"], 86_400);
        let table = key_table(&[key]);
        assert!(table.contains("pending-destruction"), "{table}");
        assert!(table.contains("1d"), "{table}");
    }
}
