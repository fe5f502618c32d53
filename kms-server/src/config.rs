//! Server configuration: a TOML file with environment overrides. Secrets are never inline
//! (OPS-4): the TLS key is a file path, and unseal shares are never part of the configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kms_core::audit::archive::ArchivePolicy;
use kms_core::hierarchy::wrap::WrapAlg;
use kms_core::policy::{Policy, PolicyMode, names};
use kms_core::{KmsConfig, SecretBytes};
use kms_store_postgres::{PostgresOptions, check_schema_name, parse_url};
use serde::Deserialize;

use crate::limits::Limits;
use crate::server::Settings;

/// The configured store backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    Sled,
    Postgres,
}

/// The first line of a password file, without its line ending; the file's text is wiped.
fn read_password_file(path: &Path) -> Result<SecretBytes, ConfigError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        ConfigError::Read {
            path: path.into(),
            source,
        }
    })?);
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{}: the PostgreSQL password file is empty",
            path.display()
        )));
    }
    Ok(SecretBytes::copy_from_slice(line.as_bytes()))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM file; never inline).
    pub key: PathBuf,
    /// The CA(s) that client certificates must chain to (PEM; SM2 and other CAs may be mixed).
    pub client_ca: PathBuf,
    /// An SM2 certificate chain served beside `cert` to clients that offer RFC 8998's
    /// TLS_SM4_GCM_SM3 with sm2sig_sm3 (policy standard). Under gm-only, `cert` itself must be
    /// SM2 and this is not used.
    pub gm_cert: Option<PathBuf>,
    /// The SM2 certificate's private key (PEM file; never inline).
    pub gm_key: Option<PathBuf>,
    /// Revoked client certificates: CRLs of the client CAs (PEM "X509 CRL" blocks or one DER
    /// CRL), re-read when the file changes (a bad new file keeps the previous CRLs in force).
    /// Checked on the TLS port and the TLCP listener.
    #[serde(default)]
    pub client_crl: Option<PathBuf>,
    /// How often `client_crl` is checked for changes (seconds; default 5).
    #[serde(default = "default_crl_poll")]
    pub client_crl_poll_seconds: u64,
}

const fn default_crl_poll() -> u64 {
    5
}

/// The TLCP (GB/T 38636) listener: 国密SSL clients and gateways with double certificates.
/// Client certificates (signing and encryption) must chain to an SM2 CA in `[tls] client_ca`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlcpFiles {
    /// Where it listens, e.g. `0.0.0.0:7444`.
    pub listen: String,
    /// The server's signing certificate chain and key (PEM files; never inline).
    pub sign_cert: PathBuf,
    pub sign_key: PathBuf,
    /// The server's encryption certificate and key.
    pub enc_cert: PathBuf,
    pub enc_key: PathBuf,
}

/// `[metrics]`: Prometheus metrics on a listener of their own (`metrics.rs`); omitted, none.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where they are served, e.g. `127.0.0.1:9464`: plain HTTP on a loopback address; on any
    /// other, HTTPS with the `[tls]` certificate, to client certificates of registered auditors.
    pub listen: String,
    /// Keys by state are counted (one scan of every key record) at most this often, however
    /// often Prometheus scrapes; 0 counts at every scrape.
    #[serde(default = "default_keys_refresh")]
    pub keys_refresh_seconds: u64,
}

const fn default_keys_refresh() -> u64 {
    30
}

/// `[dual_control]`: which operations need several administrators (issue 18, item 2;
/// `kms-core/src/kms/approvals.rs`). Omitted: 2 administrators for every covered operation,
/// requests valid 24 hours. `kms-server dev` runs with dual control off.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DualControl {
    /// Distinct administrators an operation needs, the requester included; 1 turns dual
    /// control off. Never more than the administrators registered.
    pub approvals: u8,
    /// Covered operations: schedule-key-destruction, mark-compromised, add-admin, remove-admin,
    /// create-grant, set-rotation-policy, backup. (Restore follows the bootstrap rules.)
    pub operations: Vec<String>,
    /// How long a request waits for its approvals.
    pub request_ttl_seconds: u64,
}

impl Default for DualControl {
    fn default() -> Self {
        Self {
            approvals: 2,
            operations: kms_core::Sensitive::ALL
                .iter()
                .map(|s| s.name().to_owned())
                .collect(),
            request_ttl_seconds: kms_core::Quorum::DEFAULT_TTL.as_secs(),
        }
    }
}

impl DualControl {
    /// The core's settings.
    ///
    /// # Errors
    /// An unknown operation name, or a count or lifetime out of range.
    pub fn quorum(&self) -> Result<kms_core::Quorum, ConfigError> {
        let bad = |e: kms_core::Error| ConfigError::Invalid(format!("[dual_control] {e}"));
        let operations = self
            .operations
            .iter()
            .map(|name| kms_core::Sensitive::parse(name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        kms_core::Quorum::new(
            self.approvals,
            &operations,
            Duration::from_secs(self.request_ttl_seconds),
        )
        .map_err(bad)
    }
}

/// `[replay]`: the replay guard of `VerifyRequest` (and of every call that takes a timestamp and
/// a nonce; `kms-core/src/replay.rs`). Omitted: ±300 seconds, at most 1,000,000 live nonces.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// A request's timestamp may differ from the server's clock by this much either way; its
    /// nonce is remembered that long. 1 to 86400.
    pub window_seconds: u64,
    /// Live nonces kept; at the bound new requests are refused (RESOURCE_EXHAUSTED) rather
    /// than a live nonce forgotten. At least 1000.
    pub max_entries: u64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        let d = kms_core::replay::ReplaySettings::default();
        Self {
            window_seconds: d.window.as_secs(),
            max_entries: d.max_entries,
        }
    }
}

impl ReplayConfig {
    /// The core's settings.
    ///
    /// # Errors
    /// A window or bound out of range.
    pub fn settings(&self) -> Result<kms_core::replay::ReplaySettings, ConfigError> {
        if !(1..=86_400).contains(&self.window_seconds) {
            return Err(ConfigError::Invalid(format!(
                "[replay] window_seconds is {}; it must be 1 to 86400",
                self.window_seconds
            )));
        }
        if self.max_entries < 1000 {
            return Err(ConfigError::Invalid(format!(
                "[replay] max_entries is {}; it must be at least 1000",
                self.max_entries
            )));
        }
        Ok(kms_core::replay::ReplaySettings {
            window: Duration::from_secs(self.window_seconds),
            max_entries: self.max_entries,
        })
    }
}

/// `[password]`: the password shield (issue 22 item 2; `kms-core/src/kms/password.rs`).
/// Omitted: ±300 s, at least 8 characters with letters and digits and no user identifier,
/// argon2id with 32 MiB × 3 passes × 1 lane (standard policy) and PBKDF2-HMAC-SM3 with 150 000
/// iterations (gm-only), each about 50 ms here (`kms bench --op hash-password`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// How far a sealed password's timestamp may be from the server's clock (seconds).
    pub window_seconds: u64,
    /// Fewest characters a new password may have.
    pub min_length: usize,
    pub require_letter: bool,
    pub require_digit: bool,
    /// Refuse a password that contains a user identifier the caller passes.
    pub refuse_identifiers: bool,
    /// Argon2id cost of new hashes (standard policy): memory in KiB, passes, lanes.
    pub argon2_memory_kib: u32,
    pub argon2_passes: u32,
    pub argon2_lanes: u32,
    /// PBKDF2-HMAC-SM3 iterations of new hashes (gm-only policy).
    pub pbkdf2_iterations: u32,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        let d = kms_core::PasswordSettings::DEFAULT;
        Self {
            window_seconds: d.window_seconds,
            min_length: d.rules.min_chars,
            require_letter: d.rules.require_letter,
            require_digit: d.rules.require_digit,
            refuse_identifiers: d.rules.refuse_identifiers,
            argon2_memory_kib: d.argon2_m_kib,
            argon2_passes: d.argon2_t,
            argon2_lanes: d.argon2_p,
            pbkdf2_iterations: d.pbkdf2_iterations,
        }
    }
}

impl PasswordConfig {
    /// The core's settings, within what a stored hash may ask for
    /// (`kms_core::crypto::password_hash`: memory 8·lanes to 262 144 KiB, 1 to 16 passes, 1 to
    /// 8 lanes, 1 000 to 2 000 000 iterations) and a window of 1 s to 1 hour.
    ///
    /// # Errors
    /// A value out of those ranges, named.
    pub fn settings(&self) -> Result<kms_core::PasswordSettings, ConfigError> {
        use kms_core::crypto::password_hash as ph;
        let bad = |what: &str| ConfigError::Invalid(format!("[password] {what}"));
        if !(1..=3600).contains(&self.window_seconds) {
            return Err(bad("window_seconds must be 1 to 3600"));
        }
        if !(1..=ph::PASSWORD_MAX_BYTES).contains(&self.min_length) {
            return Err(bad("min_length must be 1 to 256"));
        }
        if !(1..=ph::MAX_ARGON2_P).contains(&self.argon2_lanes)
            || !(1..=ph::MAX_ARGON2_T).contains(&self.argon2_passes)
            || self.argon2_memory_kib < 8 * self.argon2_lanes
            || self.argon2_memory_kib > ph::MAX_ARGON2_M_KIB
        {
            return Err(bad(
                "argon2 cost must be 1 to 8 lanes, 1 to 16 passes and 8·lanes to 262144 KiB",
            ));
        }
        if !(1_000..=ph::MAX_PBKDF2_ITERATIONS).contains(&self.pbkdf2_iterations) {
            return Err(bad("pbkdf2_iterations must be 1000 to 2000000"));
        }
        Ok(kms_core::PasswordSettings {
            window_seconds: self.window_seconds,
            rules: ph::StrengthRules {
                min_chars: self.min_length,
                require_letter: self.require_letter,
                require_digit: self.require_digit,
                refuse_identifiers: self.refuse_identifiers,
            },
            argon2_m_kib: self.argon2_memory_kib,
            argon2_t: self.argon2_passes,
            argon2_p: self.argon2_lanes,
            pbkdf2_iterations: self.pbkdf2_iterations,
        })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: String,
    /// Where the embedded store lives (`DATA_DIR/store`).
    pub data_dir: PathBuf,
    /// "sled" (default: the embedded store in `DATA_DIR/store`, one node) or "postgres" (any
    /// number of nodes share one database).
    pub storage: String,
    /// PostgreSQL connection URL, without a password (OPS-4), e.g.
    /// `postgres://kms@db.internal:5432/kms`.
    pub postgres_url: Option<String>,
    /// A file whose first line is the PostgreSQL password; or set `KMS_POSTGRES_PASSWORD`.
    pub postgres_password_file: Option<PathBuf>,
    /// The schema holding the store's tables; nodes that share one key set use the same one.
    pub postgres_schema: String,
    /// Most connections one node opens.
    pub postgres_pool_size: usize,
    /// Bound on every database call (pool wait, connect, statement, lock wait), in seconds.
    pub postgres_timeout_seconds: u64,
    /// "standard" or "gm-only" (ALG-4).
    pub policy: String,
    /// AEAD for the key hierarchy: "sm4-gcm" (default) or "aes-256-gcm".
    pub wrap: String,
    /// Certificate subjects that may initialise (or restore into) an empty KMS. When empty, the
    /// server writes a one-time init token to `DATA_DIR/init-token` (0600) at start instead,
    /// and init needs it (`bootstrap.rs`).
    pub bootstrap_admins: Vec<String>,
    /// Whether an unseal share may be given by someone other than the holder it was issued to
    /// (a break-glass setting; such unseals are flagged `break-glass` in the audit trail).
    pub unseal_break_glass: bool,
    pub tls: Option<TlsFiles>,
    /// A TLCP listener beside the TLS port (optional; allowed under both policies).
    pub tlcp: Option<TlcpFiles>,
    pub limits: Limits,
    /// Lifetime of unwrapped keys in memory; 0 disables the cache (KEY-3).
    pub cache_ttl_seconds: u64,
    pub cache_capacity: usize,
    /// Encryptions one SM4-GCM or AES-256-GCM key version may make before the key rotates on
    /// its own: 1 to 2^32 (NIST SP 800-38D §8.3, random 96-bit nonces), default 2^32.
    pub gcm_invocation_limit: u64,
    pub scheduler_interval_seconds: u64,
    /// A plain loopback address (e.g. "127.0.0.1:7445") serving only gRPC health, for a local
    /// probe; unset for none.
    pub health_probe_listen: Option<String>,
    /// A signed audit checkpoint after this many records ...
    pub audit_checkpoint_records: u64,
    /// ... and at least this often (seconds), and at shutdown.
    pub audit_checkpoint_seconds: u64,
    /// Where archive segments of the audit trail go (`DATA_DIR/audit-archive` when unset).
    pub audit_archive_dir: Option<PathBuf>,
    /// Records the store keeps before the oldest are archived to segment files; 0 never
    /// archives. Bounds the store's (and sled's in-memory page index's) growth.
    pub audit_hot_records: u64,
    /// Records per archive segment file; at least 1, at most `audit_hot_records`.
    pub audit_segment_records: u64,
    /// How often (seconds) the archiver looks. Often, so that each look archives about one
    /// segment: a minute's backlog archived at once is a burst of disk and CPU work that shows
    /// in request latencies.
    pub audit_archive_seconds: u64,
    pub dual_control: DualControl,
    /// `[replay]`: the window and bound of the replay guard.
    pub replay: ReplayConfig,
    /// `[password]`: the password shield's window, strength rules and hash costs.
    pub password: PasswordConfig,
    /// `[log]`: the log's format and whether each call gets an INFO line (`logging.rs`).
    pub log: crate::logging::LogConfig,
    /// `[metrics]`: Prometheus metrics; unset for none.
    pub metrics: Option<MetricsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7443".into(),
            data_dir: PathBuf::from("kms-data"),
            storage: "sled".into(),
            postgres_url: None,
            postgres_password_file: None,
            postgres_schema: PostgresOptions::DEFAULT_SCHEMA.into(),
            postgres_pool_size: PostgresOptions::DEFAULT_POOL_SIZE,
            postgres_timeout_seconds: PostgresOptions::DEFAULT_TIMEOUT.as_secs(),
            policy: "standard".into(),
            wrap: "sm4-gcm".into(),
            bootstrap_admins: Vec::new(),
            unseal_break_glass: false,
            tls: None,
            tlcp: None,
            limits: Limits::default(),
            cache_ttl_seconds: 300,
            cache_capacity: 10_000,
            gcm_invocation_limit: kms_core::GCM_INVOCATION_LIMIT,
            health_probe_listen: None,
            scheduler_interval_seconds: 60,
            audit_checkpoint_records: 1000,
            audit_checkpoint_seconds: 60,
            audit_archive_dir: None,
            audit_hot_records: ArchivePolicy::DEFAULT_HOT_RECORDS,
            audit_segment_records: ArchivePolicy::DEFAULT_SEGMENT_RECORDS,
            audit_archive_seconds: ArchivePolicy::DEFAULT_EVERY.as_secs(),
            dual_control: DualControl::default(),
            replay: ReplayConfig::default(),
            password: PasswordConfig::default(),
            log: crate::logging::LogConfig::default(),
            metrics: None,
        }
    }
}

impl Config {
    /// Reads `path`, then applies `KMS_*` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.message().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.apply_env(|k| std::env::var(k).ok());
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    /// Environment overrides, for containers: KMS_LISTEN, KMS_DATA_DIR, KMS_POLICY, KMS_TLS_CERT,
    /// KMS_TLS_KEY, KMS_TLS_CLIENT_CA, KMS_STORAGE, KMS_POSTGRES_URL, KMS_POSTGRES_SCHEMA,
    /// KMS_POSTGRES_PASSWORD_FILE, KMS_AUDIT_ARCHIVE_DIR. (KMS_POSTGRES_PASSWORD itself is read
    /// only when the store opens, and never kept in the configuration.)
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("KMS_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("KMS_STORAGE") {
            self.storage = v;
        }
        if let Some(v) = get("KMS_POSTGRES_URL") {
            self.postgres_url = Some(v);
        }
        if let Some(v) = get("KMS_POSTGRES_SCHEMA") {
            self.postgres_schema = v;
        }
        if let Some(v) = get("KMS_POSTGRES_PASSWORD_FILE") {
            self.postgres_password_file = Some(v.into());
        }
        if let Some(v) = get("KMS_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("KMS_AUDIT_ARCHIVE_DIR") {
            self.audit_archive_dir = Some(v.into());
        }
        if let Some(v) = get("KMS_POLICY") {
            self.policy = v;
        }
        let (cert, key, ca) = (
            get("KMS_TLS_CERT"),
            get("KMS_TLS_KEY"),
            get("KMS_TLS_CLIENT_CA"),
        );
        if cert.is_some() || key.is_some() || ca.is_some() {
            let mut tls = self.tls.clone().unwrap_or(TlsFiles {
                cert: "".into(),
                key: "".into(),
                client_ca: "".into(),
                gm_cert: None,
                gm_key: None,
                client_crl: None,
                client_crl_poll_seconds: default_crl_poll(),
            });
            if let Some(v) = cert {
                tls.cert = v.into();
            }
            if let Some(v) = key {
                tls.key = v.into();
            }
            if let Some(v) = ca {
                tls.client_ca = v.into();
            }
            self.tls = Some(tls);
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        if let Some(p) = &mut self.audit_archive_dir {
            fix(p);
        }
        if let Some(p) = &mut self.postgres_password_file {
            fix(p);
        }
        if let Some(t) = &mut self.tls {
            fix(&mut t.cert);
            fix(&mut t.key);
            fix(&mut t.client_ca);
            for p in [&mut t.gm_cert, &mut t.gm_key, &mut t.client_crl]
                .into_iter()
                .flatten()
            {
                fix(p);
            }
        }
        if let Some(t) = &mut self.tlcp {
            for p in [
                &mut t.sign_cert,
                &mut t.sign_key,
                &mut t.enc_cert,
                &mut t.enc_key,
            ] {
                fix(p);
            }
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.policy()?;
        self.dual_control.quorum()?;
        self.wrap_alg()?;
        self.storage()?;
        let tls = self.tls.as_ref().ok_or_else(|| {
            ConfigError::Invalid(
                "[tls] cert, key and client_ca are required: there is no plaintext port".into(),
            )
        })?;
        let gm = [
            ("tls.gm_cert", &tls.gm_cert),
            ("tls.gm_key", &tls.gm_key),
            ("tls.client_crl", &tls.client_crl),
        ];
        for (what, p) in [
            ("tls.cert", &tls.cert),
            ("tls.key", &tls.key),
            ("tls.client_ca", &tls.client_ca),
        ]
        .into_iter()
        .chain(
            gm.into_iter()
                .filter_map(|(w, p)| p.as_ref().map(|p| (w, p))),
        ) {
            let s = p.to_string_lossy();
            if s.contains("-----BEGIN") {
                return Err(ConfigError::Invalid(format!(
                    "{what} must be a file path; secrets are never inline (OPS-4)"
                )));
            }
            if s.is_empty() {
                return Err(ConfigError::Invalid(format!("{what} is required")));
            }
        }
        if self.limits.max_connections == 0
            || self.limits.rate_per_second <= 0.0
            || self.limits.max_batch_items == 0
            || self.limits.max_batch_bytes == 0
        {
            return Err(ConfigError::Invalid("limits must be positive".into()));
        }
        self.health_probe()?;
        self.metrics_listen()?;
        if !(1..=kms_core::GCM_INVOCATION_LIMIT).contains(&self.gcm_invocation_limit) {
            return Err(ConfigError::Invalid(format!(
                "gcm_invocation_limit must be 1 to 2^32 ({}): NIST SP 800-38D allows no more \
                 encryptions per key with random 96-bit nonces; got {}",
                kms_core::GCM_INVOCATION_LIMIT,
                self.gcm_invocation_limit
            )));
        }
        self.audit_archive()?;
        self.replay.settings()?;
        self.password.settings()?;
        Ok(())
    }

    /// The loopback address of the plain health probe port, if any.
    pub fn health_probe(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(text) = &self.health_probe_listen else {
            return Ok(None);
        };
        let addr: std::net::SocketAddr = text.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "health_probe_listen must be an IP address and port, like 127.0.0.1:7445; got {text:?}"
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "health_probe_listen must be a loopback address (the probe port has no TLS); got {addr}"
            )));
        }
        Ok(Some(addr))
    }

    /// The metrics listener's address, if `[metrics]` is there.
    pub fn metrics_listen(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(m) = &self.metrics else {
            return Ok(None);
        };
        m.listen.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "[metrics] listen must be an IP address and port, like 127.0.0.1:9464 (plain \
                 HTTP on loopback) or 0.0.0.0:9464 (mutual TLS, auditors only); got {:?}",
                m.listen
            ))
        })
    }

    /// Where and when the audit trail is archived; `None` when `audit_hot_records` is 0.
    pub fn audit_archive(&self) -> Result<Option<ArchivePolicy>, ConfigError> {
        let policy = ArchivePolicy {
            dir: self
                .audit_archive_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("audit-archive")),
            hot_records: self.audit_hot_records,
            segment_records: self.audit_segment_records,
            every: Duration::from_secs(self.audit_archive_seconds.max(1)),
        };
        if !policy.enabled() {
            return Ok(None);
        }
        if policy.segment_records == 0 {
            return Err(ConfigError::Invalid(
                "audit_segment_records must be at least 1 (or set audit_hot_records = 0 to never \
                 archive the audit trail)"
                    .into(),
            ));
        }
        if policy.segment_records > policy.hot_records {
            return Err(ConfigError::Invalid(format!(
                "audit_segment_records ({}) must not exceed audit_hot_records ({}): a segment \
                 would archive records the store is meant to keep",
                policy.segment_records, policy.hot_records
            )));
        }
        policy
            .check()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(Some(policy))
    }

    /// What the API port speaks: the policy reaches the transport (issue 16).
    pub fn transport(&self) -> Result<crate::tls::Transport, ConfigError> {
        Ok(match self.policy()?.mode() {
            PolicyMode::GmOnly => crate::tls::Transport::GmOnly,
            PolicyMode::Standard => crate::tls::Transport::Standard,
        })
    }

    pub fn policy(&self) -> Result<Policy, ConfigError> {
        match names::normalize(&self.policy).as_str() {
            "standard" => Ok(Policy::from_config(PolicyMode::Standard)),
            "gmonly" => Ok(Policy::from_config(PolicyMode::GmOnly)),
            _ => Err(ConfigError::Invalid(
                "policy must be \"standard\" or \"gm-only\"".into(),
            )),
        }
    }

    pub fn wrap_alg(&self) -> Result<WrapAlg, ConfigError> {
        let spec = names::parse_key_spec(&self.wrap)
            .map_err(|e| ConfigError::Invalid(format!("wrap: {e}")))?;
        WrapAlg::new(spec).map_err(|e| ConfigError::Invalid(format!("wrap: {e}")))
    }

    /// Which store to open; for PostgreSQL, everything but the password (see
    /// [`Config::postgres_options`]).
    pub fn storage(&self) -> Result<StorageKind, ConfigError> {
        match self.storage.trim().to_ascii_lowercase().as_str() {
            "sled" => Ok(StorageKind::Sled),
            "postgres" | "postgresql" => {
                let url = self.postgres_url.as_deref().ok_or_else(|| {
                    ConfigError::Invalid(
                        "storage = \"postgres\" needs postgres_url (without a password)".into(),
                    )
                })?;
                parse_url(url).map_err(|e| ConfigError::Invalid(format!("postgres_url: {e}")))?;
                check_schema_name(&self.postgres_schema)
                    .map_err(|e| ConfigError::Invalid(format!("postgres_schema: {e}")))?;
                if self.postgres_pool_size == 0 || self.postgres_timeout_seconds == 0 {
                    return Err(ConfigError::Invalid(
                        "postgres_pool_size and postgres_timeout_seconds must be positive".into(),
                    ));
                }
                Ok(StorageKind::Postgres)
            }
            _ => Err(ConfigError::Invalid(
                "storage must be \"sled\" or \"postgres\"".into(),
            )),
        }
    }

    /// The PostgreSQL store's options, with the password read now from
    /// `postgres_password_file` or `KMS_POSTGRES_PASSWORD` (`env` looks variables up). Setting
    /// both is refused, so which one is in force is never a guess.
    pub fn postgres_options(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<PostgresOptions, ConfigError> {
        let url = self.postgres_url.clone().ok_or_else(|| {
            ConfigError::Invalid("storage = \"postgres\" needs postgres_url".into())
        })?;
        let from_env = env("KMS_POSTGRES_PASSWORD").map(zeroize::Zeroizing::new);
        let password = match (&self.postgres_password_file, from_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "set postgres_password_file or KMS_POSTGRES_PASSWORD, not both".into(),
                ));
            }
            (Some(path), None) => Some(read_password_file(path)?),
            (None, Some(text)) => Some(SecretBytes::copy_from_slice(text.as_bytes())),
            (None, None) => None,
        };
        Ok(PostgresOptions {
            url,
            password,
            schema: self.postgres_schema.clone(),
            pool_size: self.postgres_pool_size,
            timeout: Duration::from_secs(self.postgres_timeout_seconds),
        })
    }

    pub fn kms_config(&self) -> Result<KmsConfig, ConfigError> {
        Ok(KmsConfig {
            policy: self.policy()?,
            wrap: self.wrap_alg()?,
            cache_ttl: Duration::from_secs(self.cache_ttl_seconds),
            cache_capacity: self.cache_capacity,
            gcm_invocation_limit: self.gcm_invocation_limit,
            unseal_break_glass: self.unseal_break_glass,
            quorum: self.dual_control.quorum()?,
            replay: self.replay.settings()?,
            password: self.password.settings()?,
        })
    }

    /// The server's settings. Call on a validated configuration ([`Config::load`] validates);
    /// an invalid archive setting turns archiving off here.
    #[must_use]
    pub fn settings(&self) -> Settings {
        Settings {
            audit_archive: self.audit_archive().ok().flatten(),
            limits: self.limits,
            scheduler_interval: Duration::from_secs(self.scheduler_interval_seconds.max(1)),
            health_probe: self.health_probe().ok().flatten(),
            crl_poll_interval: Duration::from_secs(
                self.tls
                    .as_ref()
                    .map_or(5, |t| t.client_crl_poll_seconds)
                    .max(1),
            ),
            checkpoints: kms_core::audit::writer::CheckpointPolicy {
                every_records: self.audit_checkpoint_records.max(1),
                every: Duration::from_secs(self.audit_checkpoint_seconds.max(1)),
            },
            bootstrap: crate::bootstrap::Bootstrap::admins(self.bootstrap_admins.clone()),
            metrics: self.metrics_listen().ok().flatten().map(|listen| {
                crate::metrics::MetricsSettings {
                    listen,
                    keys_refresh: Duration::from_secs(
                        self.metrics.as_ref().map_or(30, |m| m.keys_refresh_seconds),
                    ),
                    metrics: std::sync::Arc::new(crate::metrics::Metrics::new()),
                }
            }),
            ..Settings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("kms.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn loads_resolves_paths_and_applies_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "listen = \"127.0.0.1:9\"\npolicy = \"gm-only\"\n[tls]\ncert = \"s.pem\"\nkey = \"s.key\"\nclient_ca = \"ca.pem\"\n[limits]\nmax_plaintext_bytes = 1024\nmax_batch_items = 100\nmax_batch_bytes = 65536\n",
        );
        let c = Config::load(&p).unwrap();
        assert_eq!(c.tls.as_ref().unwrap().cert, dir.path().join("s.pem"));
        assert_eq!(c.limits.max_plaintext_bytes, 1024);
        assert_eq!(
            (c.limits.max_batch_items, c.limits.max_batch_bytes),
            (100, 65536)
        );
        assert_eq!(c.policy().unwrap().mode(), PolicyMode::GmOnly);
        let mut c2 = c;
        c2.apply_env(|k| (k == "KMS_LISTEN").then(|| "0.0.0.0:1".to_string()));
        assert_eq!(c2.listen, "0.0.0.0:1");
    }

    const TLS: &str = "[tls]\ncert = \"a\"\nkey = \"b\"\nclient_ca = \"c\"\n";

    #[test]
    fn the_client_crl_is_a_path_resolved_beside_the_config_and_polled() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &format!("{TLS}client_crl = \"clients.crl\"\nclient_crl_poll_seconds = 2\n"),
        );
        let c = Config::load(&p).unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.client_crl, Some(dir.path().join("clients.crl")));
        assert_eq!(c.settings().crl_poll_interval, Duration::from_secs(2));
        // Without one: no CRL, polled every 5 s if one is added.
        let plain = Config::load(&write(dir.path(), TLS)).unwrap();
        assert_eq!(plain.tls.as_ref().unwrap().client_crl, None);
        assert_eq!(plain.settings().crl_poll_interval, Duration::from_secs(5));
        let inline = write(
            dir.path(),
            &format!("{TLS}client_crl = \"-----BEGIN X509 CRL-----\"\n"),
        );
        let err = Config::load(&inline).unwrap_err().to_string();
        assert!(err.contains("tls.client_crl must be a file path"), "{err}");
    }

    #[test]
    fn dual_control_is_on_by_default_and_configurable() {
        use kms_core::Sensitive;
        let dir = tempfile::tempdir().unwrap();
        let q = Config::load(&write(dir.path(), TLS))
            .unwrap()
            .kms_config()
            .unwrap()
            .quorum;
        assert_eq!(q.approvals(), 2);
        assert!(Sensitive::ALL.iter().all(|s| q.covers(*s)));
        let q = Config::load(&write(
            dir.path(),
            &format!(
                "{TLS}[dual_control]\napprovals = 3\noperations = [\"backup\"]\nrequest_ttl_seconds = 600\n"
            ),
        ))
        .unwrap()
        .kms_config()
        .unwrap()
        .quorum;
        assert_eq!((q.approvals(), q.ttl().as_secs()), (3, 600));
        assert!(q.covers(Sensitive::Backup) && !q.covers(Sensitive::CreateGrant));
        let off = Config::load(&write(
            dir.path(),
            &format!("{TLS}[dual_control]\napprovals = 1\n"),
        ))
        .unwrap()
        .kms_config()
        .unwrap()
        .quorum;
        assert!(!off.covers(Sensitive::Backup));
        let bad = Config::load(&write(
            dir.path(),
            &format!("{TLS}[dual_control]\noperations = [\"export\"]\n"),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("[dual_control]") && bad.contains("use one of: schedule-key-destruction"),
            "{bad}"
        );
    }

    #[test]
    fn the_health_probe_port_is_loopback_only() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write(
            dir.path(),
            &format!("health_probe_listen = \"127.0.0.1:7445\"\n{TLS}"),
        );
        let c = Config::load(&ok).unwrap();
        assert_eq!(
            c.settings().health_probe,
            Some("127.0.0.1:7445".parse().unwrap())
        );
        for (bad, why) in [
            ("0.0.0.0:7445", "loopback"),
            ("localhost", "IP address and port"),
        ] {
            let p = write(
                dir.path(),
                &format!("health_probe_listen = \"{bad}\"\n{TLS}"),
            );
            let e = Config::load(&p).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid(m) if m.starts_with("health_probe_listen") && m.contains(why)),
                "{e}"
            );
        }
    }

    #[test]
    fn the_gcm_budget_is_one_to_two_to_the_32() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&write(dir.path(), TLS)).unwrap();
        assert_eq!(c.kms_config().unwrap().gcm_invocation_limit, 1 << 32);
        let small = write(dir.path(), &format!("gcm_invocation_limit = 3\n{TLS}"));
        let c = Config::load(&small).unwrap();
        assert_eq!(c.kms_config().unwrap().gcm_invocation_limit, 3);
        for bad in ["0", "4294967297"] {
            let p = write(dir.path(), &format!("gcm_invocation_limit = {bad}\n{TLS}"));
            let e = Config::load(&p).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid(m) if m.starts_with("gcm_invocation_limit must be 1 to 2^32")),
                "{e}"
            );
        }
    }

    #[test]
    fn storage_defaults_to_sled_and_postgres_needs_a_url() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&write(dir.path(), TLS)).unwrap();
        assert_eq!(c.storage().unwrap(), StorageKind::Sled);
        let no_url = write(dir.path(), &format!("storage = \"postgres\"\n{TLS}"));
        assert!(
            Config::load(&no_url)
                .unwrap_err()
                .to_string()
                .contains("needs postgres_url")
        );
        let bogus = write(dir.path(), &format!("storage = \"mongo\"\n{TLS}"));
        let e = Config::load(&bogus).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid(m) if m == "storage must be \"sled\" or \"postgres\""),
            "{e}"
        );
        let bad_schema = write(
            dir.path(),
            &format!(
                "storage = \"postgres\"\npostgres_url = \"postgres://kms@db/kms\"\npostgres_schema = \"a;b\"\n{TLS}"
            ),
        );
        assert!(
            Config::load(&bad_schema)
                .unwrap_err()
                .to_string()
                .contains("postgres_schema")
        );
    }

    #[test]
    fn postgres_url_with_a_password_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        for url in [
            "postgres://kms:s3cr3t-pw@db:5432/kms",
            "host=db user=kms password=s3cr3t-pw",
        ] {
            let p = write(
                dir.path(),
                &format!("storage = \"postgres\"\npostgres_url = \"{url}\"\n{TLS}"),
            );
            let e = Config::load(&p).unwrap_err().to_string();
            assert!(e.contains("contains a password"), "{e}");
            assert!(e.contains("KMS_POSTGRES_PASSWORD"), "{e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn postgres_password_comes_from_a_file_or_the_environment_never_both() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg.pw"), "from-file\n").unwrap();
        let p = write(
            dir.path(),
            &format!(
                "storage = \"postgres\"\npostgres_url = \"postgres://kms@db:5432/kms\"\npostgres_password_file = \"pg.pw\"\npostgres_schema = \"kms_a\"\n{TLS}"
            ),
        );
        let c = Config::load(&p).unwrap();
        assert_eq!(c.storage().unwrap(), StorageKind::Postgres);
        let o = c.postgres_options(|_| None).unwrap();
        assert_eq!(o.password.as_ref().unwrap().expose_secret(), b"from-file");
        assert_eq!(o.schema, "kms_a");
        assert!(!format!("{o:?} {c:?}").contains("from-file"));
        let both = c.postgres_options(|k| (k == "KMS_POSTGRES_PASSWORD").then(|| "env".into()));
        assert!(both.unwrap_err().to_string().contains("not both"));

        let mut c = c;
        c.postgres_password_file = None;
        let o = c
            .postgres_options(|k| (k == "KMS_POSTGRES_PASSWORD").then(|| "from-env".into()))
            .unwrap();
        assert_eq!(o.password.as_ref().unwrap().expose_secret(), b"from-env");
        assert!(c.postgres_options(|_| None).unwrap().password.is_none());
        c.apply_env(|k| match k {
            "KMS_STORAGE" => Some("sled".into()),
            "KMS_POSTGRES_SCHEMA" => Some("kms_b".into()),
            _ => None,
        });
        assert_eq!(c.storage().unwrap(), StorageKind::Sled);
        assert_eq!(c.postgres_schema, "kms_b");
    }

    #[test]
    fn audit_archive_defaults_under_the_data_dir_and_sizes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&write(dir.path(), &format!("data_dir = \"d\"\n{TLS}"))).unwrap();
        let policy = c.audit_archive().unwrap().unwrap();
        assert_eq!(policy.dir, dir.path().join("d").join("audit-archive"));
        assert_eq!(policy.hot_records, 1_000_000);
        assert_eq!(policy.segment_records, 100_000);
        assert_eq!(policy.every, Duration::from_secs(5));
        assert_eq!(c.settings().audit_archive, Some(policy));

        let c = Config::load(&write(
            dir.path(),
            &format!(
                "audit_archive_dir = \"segments\"\naudit_hot_records = 50\n\
                 audit_segment_records = 20\naudit_archive_seconds = 2\n{TLS}"
            ),
        ))
        .unwrap();
        let policy = c.settings().audit_archive.unwrap();
        assert_eq!(policy.dir, dir.path().join("segments"));
        assert_eq!((policy.hot_records, policy.segment_records), (50, 20));
        assert_eq!(policy.every, Duration::from_secs(2));
        let mut env = c;
        env.apply_env(|k| (k == "KMS_AUDIT_ARCHIVE_DIR").then(|| "/srv/audit".into()));
        assert_eq!(
            env.audit_archive().unwrap().unwrap().dir,
            Path::new("/srv/audit")
        );

        // 0 never archives, whatever the segment size.
        let off = Config::load(&write(
            dir.path(),
            &format!("audit_hot_records = 0\naudit_segment_records = 0\n{TLS}"),
        ))
        .unwrap();
        assert_eq!(off.audit_archive().unwrap(), None);
        assert_eq!(off.settings().audit_archive, None);

        for (text, needle) in [
            (
                "audit_segment_records = 0\n",
                "audit_segment_records must be at least 1",
            ),
            (
                "audit_hot_records = 10\naudit_segment_records = 11\n",
                "audit_segment_records (11) must not exceed audit_hot_records (10)",
            ),
        ] {
            let e = Config::load(&write(dir.path(), &format!("{text}{TLS}")))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn refuses_inline_secrets_unknown_fields_and_no_tls() {
        let dir = tempfile::tempdir().unwrap();
        let inline = write(
            dir.path(),
            "[tls]\ncert = \"a\"\nkey = \"-----BEGIN PRIVATE KEY-----\"\nclient_ca = \"c\"\n",
        );
        assert!(
            Config::load(&inline)
                .unwrap_err()
                .to_string()
                .contains("never inline")
        );
        let unknown = write(dir.path(), "bogus = 1\n");
        let e = Config::load(&unknown).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Parse { message, .. } if message.contains("unknown field `bogus`")),
            "{e}"
        );
        let none = write(dir.path(), "listen = \"127.0.0.1:1\"\n");
        assert!(
            Config::load(&none)
                .unwrap_err()
                .to_string()
                .contains("no plaintext port")
        );
        let weak = write(
            dir.path(),
            "wrap = \"des\"\n[tls]\ncert = \"a\"\nkey = \"b\"\nclient_ca = \"c\"\n",
        );
        assert!(
            Config::load(&weak)
                .unwrap_err()
                .to_string()
                .contains("ALG-3")
        );
    }

    /// `[metrics]` is off unless present; its address must be an IP and port (plain HTTP on
    /// loopback, mutual TLS elsewhere, decided by the server), and its key-count interval
    /// defaults to 30 s.
    #[test]
    fn metrics_are_off_by_default_and_their_address_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let off = Config::load(&write(dir.path(), TLS)).unwrap();
        assert!(off.settings().metrics.is_none());
        let on = Config::load(&write(
            dir.path(),
            &format!("{TLS}[metrics]\nlisten = \"0.0.0.0:9464\"\n"),
        ))
        .unwrap();
        let m = on.settings().metrics.unwrap();
        assert_eq!(m.listen, "0.0.0.0:9464".parse().unwrap());
        assert_eq!(m.keys_refresh, Duration::from_secs(30));
        let refresh = Config::load(&write(
            dir.path(),
            &format!("{TLS}[metrics]\nlisten = \"127.0.0.1:9464\"\nkeys_refresh_seconds = 0\n"),
        ))
        .unwrap();
        assert_eq!(
            refresh.settings().metrics.unwrap().keys_refresh,
            Duration::ZERO
        );
        let bad = Config::load(&write(
            dir.path(),
            &format!("{TLS}[metrics]\nlisten = \"localhost:9464\"\n"),
        ))
        .unwrap_err();
        assert!(
            matches!(&bad, ConfigError::Invalid(m) if m.starts_with("[metrics] listen must be an IP address and port")),
            "{bad}"
        );
        let unknown = Config::load(&write(
            dir.path(),
            &format!("{TLS}[metrics]\nlisten = \"127.0.0.1:9464\"\npath = \"/m\"\n"),
        ))
        .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `path`"),
            "{unknown}"
        );
    }

    #[test]
    fn the_replay_window_is_300_seconds_by_default_and_configurable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.toml");
        std::fs::write(&path, TLS).unwrap();
        let config = Config::load(&path).unwrap();
        let kms = config.kms_config().unwrap();
        assert_eq!(kms.replay.window, Duration::from_secs(300));
        assert_eq!(kms.replay.max_entries, 1_000_000);
        std::fs::write(
            &path,
            format!("{TLS}[replay]\nwindow_seconds = 60\nmax_entries = 5000\n"),
        )
        .unwrap();
        let kms = Config::load(&path).unwrap().kms_config().unwrap();
        assert_eq!(kms.replay.window, Duration::from_secs(60));
        assert_eq!(kms.replay.max_entries, 5000);
        for (bad, says) in [
            ("window_seconds = 0", "window_seconds is 0"),
            ("window_seconds = 100000", "1 to 86400"),
            ("max_entries = 10", "at least 1000"),
        ] {
            std::fs::write(&path, format!("{TLS}[replay]\n{bad}\n")).unwrap();
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
