//! The supply-chain check, offline: the rules of the repository's `deny.toml` (the cargo-deny
//! format) applied to `Cargo.lock`, `cargo metadata` and a local RustSec advisory database.
//!
//! Why not cargo-deny itself: `cargo install cargo-deny --locked` took 11m40s on this 2-core
//! machine, longer than the rest of CI's checks together. This crate implements the subset of
//! cargo-deny that `deny.toml` uses, reading the same file, so cargo-deny (where installed) and
//! this check agree:
//!
//! * **advisories**: every locked crate against the database's `crates/<name>/*.md` front matter
//!   (`[versions] patched` / `unaffected`, semver requirements); vulnerabilities, `unmaintained`
//!   and `unsound` advisories are errors unless `[advisories] ignore` lists them with a reason;
//!   `notice` advisories are warnings; withdrawn advisories are skipped.
//! * **licenses**: every non-private package's SPDX expression must be satisfied by
//!   `[licenses] allow` (`AND`, `OR`, `WITH`, parentheses, and the old `/` for `OR`).
//! * **sources**: only `[sources] allow-registry` registries (crates.io) and `allow-git` repos.
//! * **bans**: `[bans] deny` crates may not appear at all, except as a direct dependency of the
//!   crates an entry's `wrappers` names (every package that depends on it, per `Cargo.lock`,
//!   must be one of them); entries with `deny-multiple-versions = true` may not appear in two
//!   versions (minus `[bans] skip`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use semver::{Version, VersionReq};
use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// The part of `deny.toml` this check applies.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Config {
    pub advisories: Advisories,
    pub licenses: Licenses,
    pub bans: Bans,
    pub sources: Sources,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Advisories {
    pub ignore: Vec<Ignore>,
    /// ISO 8601 duration, days only (`P365D`): how old the database snapshot may be.
    pub maximum_db_staleness: Option<String>,
}

/// An ignored advisory; the reason is mandatory here (cargo-deny only allows it).
#[derive(Debug, Deserialize)]
pub struct Ignore {
    pub id: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Licenses {
    pub allow: Vec<String>,
    pub private: Private,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Private {
    /// Skip packages that are not published (`publish = false`).
    pub ignore: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Bans {
    pub deny: Vec<Ban>,
    pub skip: Vec<Skip>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Ban {
    /// `name` or `name@version`.
    #[serde(rename = "crate")]
    pub krate: String,
    #[serde(default)]
    pub deny_multiple_versions: bool,
    /// The only crates allowed to depend on the banned crate directly (cargo-deny's
    /// `wrappers`); empty: no crate may.
    #[serde(default)]
    pub wrappers: Vec<String>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Deserialize)]
pub struct Skip {
    /// `name@version`: this version is left out of duplicate detection.
    #[serde(rename = "crate")]
    pub krate: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Sources {
    pub allow_registry: Vec<String>,
    pub allow_git: Vec<String>,
}

/// One `[[package]]` of `Cargo.lock`.
#[derive(Debug, Clone, Deserialize)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    /// `None` for path (workspace) packages.
    pub source: Option<String>,
    /// Direct dependencies as the lock writes them: `name`, `name version` or
    /// `name version (source)`.
    #[serde(default)]
    pub dependencies: Vec<String>,
}

impl LockedPackage {
    /// Whether this package depends directly on `name` at `version`. The lock names the version
    /// only when several versions of `name` are locked.
    fn depends_on(&self, name: &str, version: &str) -> bool {
        self.dependencies.iter().any(|d| {
            let mut words = d.split_whitespace();
            words.next() == Some(name) && words.next().is_none_or(|v| v == version)
        })
    }
}

#[derive(Deserialize)]
struct LockFile {
    #[serde(default)]
    package: Vec<LockedPackage>,
}

/// Parses `Cargo.lock`.
///
/// # Errors
/// When the file is not a lock file.
pub fn parse_lock(text: &str) -> Result<Vec<LockedPackage>, String> {
    toml::from_str::<LockFile>(text)
        .map(|l| l.package)
        .map_err(|e| format!("Cargo.lock does not parse: {e}"))
}

/// What `cargo metadata` says about one package's license.
#[derive(Debug, Clone, Deserialize)]
pub struct MetadataPackage {
    pub name: String,
    pub version: String,
    pub license: Option<String>,
    pub source: Option<String>,
    /// `Some([])` for `publish = false`.
    pub publish: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetadataPackage>,
}

/// Parses `cargo metadata --format-version 1` output.
///
/// # Errors
/// When the text is not cargo metadata.
pub fn parse_metadata(json: &str) -> Result<Vec<MetadataPackage>, String> {
    serde_json::from_str::<Metadata>(json)
        .map(|m| m.packages)
        .map_err(|e| format!("cargo metadata output does not parse: {e}"))
}

/// One RustSec advisory, from the TOML front matter of its Markdown file.
#[derive(Debug, Clone)]
pub struct Advisory {
    pub id: String,
    pub package: String,
    pub title: String,
    /// `None` for vulnerabilities; `unmaintained`, `unsound` or `notice` otherwise.
    pub informational: Option<String>,
    pub withdrawn: bool,
    pub patched: Vec<VersionReq>,
    pub unaffected: Vec<VersionReq>,
}

#[derive(Deserialize)]
struct FrontMatter {
    advisory: AdvisoryMeta,
    #[serde(default)]
    versions: VersionsMeta,
}

#[derive(Deserialize)]
struct AdvisoryMeta {
    id: String,
    package: String,
    #[serde(default)]
    informational: Option<String>,
    #[serde(default)]
    withdrawn: Option<toml::Value>,
}

#[derive(Default, Deserialize)]
struct VersionsMeta {
    #[serde(default)]
    patched: Vec<String>,
    #[serde(default)]
    unaffected: Vec<String>,
}

/// RustSec writes `^ 0.3.1` and `>=0.3.20`; semver wants no space after the operator.
fn parse_req(text: &str) -> Result<VersionReq, String> {
    let normalized: Vec<String> = text
        .split(',')
        .map(|c| {
            let c = c.trim();
            let op_len = c
                .find(|ch: char| ch.is_ascii_digit() || ch == '*')
                .unwrap_or(c.len());
            let (op, rest) = c.split_at(op_len);
            format!("{}{}", op.trim(), rest.trim())
        })
        .collect();
    VersionReq::parse(&normalized.join(", "))
        .map_err(|e| format!("version requirement {text:?}: {e}"))
}

/// Parses one advisory file (Markdown with a ```` ```toml ```` front matter block).
///
/// # Errors
/// When the front matter is missing or malformed.
pub fn parse_advisory(text: &str) -> Result<Advisory, String> {
    let body = text
        .strip_prefix("```toml")
        .and_then(|rest| rest.split_once("\n```"))
        .map(|(front, _)| front)
        .ok_or("no ```toml front matter")?;
    let fm: FrontMatter = toml::from_str(body).map_err(|e| e.to_string())?;
    let title = text
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .unwrap_or_default()
        .to_owned();
    let reqs = |v: &[String]| {
        v.iter()
            .map(|r| parse_req(r))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Advisory {
        id: fm.advisory.id,
        package: fm.advisory.package,
        title,
        informational: fm.advisory.informational,
        withdrawn: fm.advisory.withdrawn.is_some(),
        patched: reqs(&fm.versions.patched)?,
        unaffected: reqs(&fm.versions.unaffected)?,
    })
}

impl Advisory {
    /// Affected = neither patched nor unaffected. A pre-release is matched on its release
    /// version too, since semver requirements never match pre-releases of other versions.
    #[must_use]
    pub fn affects(&self, version: &Version) -> bool {
        let release = Version::new(version.major, version.minor, version.patch);
        let hit = |r: &VersionReq| r.matches(version) || r.matches(&release);
        !self.patched.iter().any(hit) && !self.unaffected.iter().any(hit)
    }
}

/// Loads the advisories for `names` from a RustSec database folder (`crates/<name>/*.md`).
///
/// # Errors
/// When a file cannot be read or parsed.
pub fn load_advisories<'a>(
    db: &Path,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Advisory>, String> {
    let mut out = Vec::new();
    for name in names.into_iter().collect::<BTreeSet<_>>() {
        let dir = db.join("crates").join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
        {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            out.push(parse_advisory(&text).map_err(|e| format!("{}: {e}", path.display()))?);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// SPDX license expressions
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Id(String),
    And,
    Or,
    With,
    Open,
    Close,
}

fn tokens(expr: &str) -> Vec<Token> {
    let spaced = expr
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ");
    spaced
        .split_whitespace()
        .map(|w| match w {
            "AND" => Token::And,
            "OR" => Token::Or,
            "WITH" => Token::With,
            "(" => Token::Open,
            ")" => Token::Close,
            id => Token::Id(id.to_owned()),
        })
        .collect()
}

/// Recursive descent: `or := and ("OR" and)*`, `and := with ("AND" with)*`,
/// `with := atom ("WITH" id)?`, `atom := id | "(" or ")"`. An `A WITH B` term is satisfied
/// only by an allow entry `A WITH B`.
struct Spdx<'a> {
    tokens: Vec<Token>,
    at: usize,
    allowed: &'a dyn Fn(&str) -> bool,
}

impl Spdx<'_> {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn or(&mut self) -> Result<bool, String> {
        let mut v = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            v |= self.and()?;
        }
        Ok(v)
    }

    fn and(&mut self) -> Result<bool, String> {
        let mut v = self.with()?;
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            v &= self.with()?;
        }
        Ok(v)
    }

    fn with(&mut self) -> Result<bool, String> {
        match self.next() {
            Some(Token::Open) => {
                let v = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(v),
                    _ => Err("unbalanced parentheses".into()),
                }
            }
            Some(Token::Id(id)) => {
                if self.peek() == Some(&Token::With) {
                    self.at += 1;
                    match self.next() {
                        Some(Token::Id(exception)) => {
                            Ok((self.allowed)(&format!("{id} WITH {exception}")))
                        }
                        _ => Err("WITH without an exception".into()),
                    }
                } else {
                    Ok((self.allowed)(&id))
                }
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

/// Whether an SPDX expression is satisfied by the allowed licenses.
///
/// # Errors
/// When the expression does not parse.
pub fn license_allowed(expr: &str, allow: &[String]) -> Result<bool, String> {
    let is_allowed = |id: &str| allow.iter().any(|a| a == id);
    let mut p = Spdx {
        tokens: tokens(expr),
        at: 0,
        allowed: &is_allowed,
    };
    let v = p.or()?;
    if p.at != p.tokens.len() {
        return Err(format!("trailing tokens in {expr:?}"));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// The check
// ---------------------------------------------------------------------------------------------

/// What the check found. Any error fails it.
#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub ignored: Vec<String>,
}

impl Report {
    #[must_use]
    pub fn passed(&self) -> bool {
        self.errors.is_empty()
    }

    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        for i in &self.ignored {
            let _ = writeln!(out, "ignored: {i}");
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        out
    }
}

fn spec_matches(spec: &str, name: &str, version: &Version) -> Result<bool, String> {
    match spec.split_once('@') {
        None => Ok(spec == name),
        Some((n, v)) => Ok(n == name && parse_req(&format!("={v}"))?.matches(version)),
    }
}

fn version_of(p: &LockedPackage) -> Result<Version, String> {
    Version::parse(&p.version).map_err(|e| format!("{} {}: {e}", p.name, p.version))
}

/// Applies the configuration to the locked packages, their metadata and the advisories.
#[must_use]
pub fn check(
    config: &Config,
    lock: &[LockedPackage],
    metadata: Option<&[MetadataPackage]>,
    advisories: &[Advisory],
) -> Report {
    let mut r = Report::default();
    check_advisories(config, lock, advisories, &mut r);
    check_sources(config, lock, &mut r);
    check_bans(config, lock, &mut r);
    match metadata {
        Some(m) => check_licenses(config, m, &mut r),
        None => r
            .warnings
            .push("licenses not checked: no cargo metadata".into()),
    }
    r
}

fn check_advisories(config: &Config, lock: &[LockedPackage], db: &[Advisory], r: &mut Report) {
    let mut used = BTreeSet::new();
    for ig in &config.advisories.ignore {
        if ig.reason.trim().is_empty() {
            r.errors
                .push(format!("advisory ignore {} has no written reason", ig.id));
        }
    }
    for p in lock {
        let Ok(version) = version_of(p) else {
            r.errors.push(format!(
                "{} has an unparsable version {}",
                p.name, p.version
            ));
            continue;
        };
        for a in db.iter().filter(|a| a.package == p.name && !a.withdrawn) {
            if !a.affects(&version) {
                continue;
            }
            let kind = a.informational.as_deref().unwrap_or("vulnerability");
            let what = format!("{} {} {}: {kind}: {}", a.id, p.name, p.version, a.title);
            if let Some(ig) = config.advisories.ignore.iter().find(|i| i.id == a.id) {
                used.insert(a.id.clone());
                r.ignored
                    .push(format!("{what} (reason: {})", ig.reason.trim()));
            } else if kind == "notice" {
                r.warnings.push(what);
            } else {
                r.errors.push(what);
            }
        }
    }
    for ig in &config.advisories.ignore {
        if !used.contains(&ig.id) {
            r.warnings.push(format!(
                "advisory ignore {} matches nothing in the tree: remove it",
                ig.id
            ));
        }
    }
}

fn check_sources(config: &Config, lock: &[LockedPackage], r: &mut Report) {
    for p in lock {
        let Some(source) = &p.source else { continue };
        let ok = if let Some(url) = source.strip_prefix("registry+") {
            config.sources.allow_registry.iter().any(|a| a == url)
        } else if let Some(url) = source.strip_prefix("sparse+") {
            // crates.io's sparse index is the same registry as its git index.
            url == "https://index.crates.io/"
                && config
                    .sources
                    .allow_registry
                    .iter()
                    .any(|a| a == "https://github.com/rust-lang/crates.io-index")
        } else if let Some(url) = source.strip_prefix("git+") {
            let repo = url.split(['?', '#']).next().unwrap_or(url);
            config.sources.allow_git.iter().any(|a| a == repo)
        } else {
            false
        };
        if !ok {
            r.errors.push(format!(
                "{} {} comes from {source}, which [sources] does not allow",
                p.name, p.version
            ));
        }
    }
}

fn check_bans(config: &Config, lock: &[LockedPackage], r: &mut Report) {
    for ban in &config.bans.deny {
        if ban.reason.trim().is_empty() {
            r.errors
                .push(format!("ban of {} has no written reason", ban.krate));
        }
    }
    let mut versions: BTreeMap<&str, Vec<&LockedPackage>> = BTreeMap::new();
    for p in lock {
        let Ok(version) = version_of(p) else { continue };
        for ban in config
            .bans
            .deny
            .iter()
            .filter(|b| !b.deny_multiple_versions)
        {
            match spec_matches(&ban.krate, &p.name, &version) {
                Ok(true) => {
                    if let Some(e) = banned(ban, p, lock) {
                        r.errors.push(e);
                    }
                }
                Ok(false) => {}
                Err(e) => r.errors.push(e),
            }
        }
        let skipped = config
            .bans
            .skip
            .iter()
            .any(|s| spec_matches(&s.krate, &p.name, &version).unwrap_or(false));
        if !skipped {
            versions.entry(&p.name).or_default().push(p);
        }
    }
    for s in &config.bans.skip {
        if s.reason.trim().is_empty() {
            r.errors.push(format!(
                "duplicate skip of {} has no written reason",
                s.krate
            ));
        }
    }
    for (name, ps) in versions.iter().filter(|(_, ps)| ps.len() > 1) {
        let list: Vec<&str> = ps.iter().map(|p| p.version.as_str()).collect();
        let strict = config
            .bans
            .deny
            .iter()
            .any(|b| b.deny_multiple_versions && b.krate == *name);
        let msg = format!(
            "{name} is locked in {} versions: {}",
            list.len(),
            list.join(", ")
        );
        if strict {
            r.errors.push(msg);
        } else {
            r.warnings.push(msg);
        }
    }
}

/// The error for a banned package, or `None` when `ban.wrappers` allows every package that
/// depends on it. A package nothing depends on is not allowed by wrappers: it is a root, or
/// the lock does not say who pulls it.
fn banned(ban: &Ban, p: &LockedPackage, lock: &[LockedPackage]) -> Option<String> {
    let reason = ban.reason.trim();
    let prefix = format!("{} {} is banned", p.name, p.version);
    if ban.wrappers.is_empty() {
        return Some(format!("{prefix}: {reason}"));
    }
    let dependents: Vec<&str> = lock
        .iter()
        .filter(|d| d.depends_on(&p.name, &p.version))
        .map(|d| d.name.as_str())
        .collect();
    let outside: Vec<&str> = dependents
        .iter()
        .copied()
        .filter(|d| !ban.wrappers.iter().any(|w| w == d))
        .collect();
    if dependents.is_empty() {
        Some(format!(
            "{prefix} except under {}, and nothing in the lock depends on it: {reason}",
            ban.wrappers.join(", ")
        ))
    } else if outside.is_empty() {
        None
    } else {
        Some(format!(
            "{prefix} except under {}, but {} depends on it: {reason}",
            ban.wrappers.join(", "),
            outside.join(", ")
        ))
    }
}

fn check_licenses(config: &Config, metadata: &[MetadataPackage], r: &mut Report) {
    let allow = &config.licenses.allow;
    let mut used = BTreeSet::new();
    for p in metadata {
        let private = p.publish.as_ref().is_some_and(Vec::is_empty) || p.source.is_none();
        if private && config.licenses.private.ignore {
            continue;
        }
        let Some(expr) = p.license.as_deref() else {
            r.errors.push(format!(
                "{} {} declares no SPDX license expression",
                p.name, p.version
            ));
            continue;
        };
        match license_allowed(expr, allow) {
            Ok(true) => {
                for a in allow {
                    if tokens(expr).contains(&Token::Id(a.clone())) {
                        used.insert(a.clone());
                    }
                }
            }
            Ok(false) => r.errors.push(format!(
                "{} {}: license {expr:?} is not satisfied by [licenses] allow",
                p.name, p.version
            )),
            Err(e) => r
                .errors
                .push(format!("{} {}: license {expr:?}: {e}", p.name, p.version)),
        }
    }
    for a in allow
        .iter()
        .filter(|a| !used.contains(*a) && !a.contains(" WITH "))
    {
        r.warnings
            .push(format!("license {a} is allowed but no package uses it"));
    }
}

/// Days since the Unix epoch of a `YYYY-MM-DD` date (proleptic Gregorian).
#[must_use]
pub fn days_from_civil(date: &str) -> Option<i64> {
    let mut parts = date.get(..10)?.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Parses `P<n>D`.
#[must_use]
pub fn staleness_days(duration: &str) -> Option<i64> {
    duration.strip_prefix('P')?.strip_suffix('D')?.parse().ok()
}

#[cfg(test)]
mod tests;
