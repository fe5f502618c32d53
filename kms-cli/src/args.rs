//! The command line as clap parses it (the "low args"; `resolve` turns them into settings).
//!
//! Names follow issue 5. Files are binary by default; `--base64` switches a command's binary
//! input or output (named in its help) to base64 text. `--in`/`--out` left out, or given as `-`,
//! mean stdin/stdout; binary output to a terminal is shown as base64.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use kms_core::authz::GrantOp;

use crate::period::{Rotation, parse_period, parse_rotation};

/// The values `kms grant add --ops` takes: the core's grant operations by name, so the CLI
/// offers exactly what the server accepts and a new operation needs no second list.
fn grant_operations() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(GrantOp::ALL.map(GrantOp::name))
}

/// `kms`: the KMS command-line client.
#[derive(Debug, Parser)]
#[command(
    name = "kms",
    version,
    about = "Command-line client for the KMS: administration, audit and application commands over mTLS",
    after_help = "Connection: --profile NAME|FILE (or KMS_PROFILE), else KMS_ENDPOINT, KMS_CA, KMS_CERT and KMS_KEY.\n\
                  Exit codes: 0 ok, 1 verification failed, 2 usage, 3 permission denied, 4 not found,\n\
                  5 unavailable/sealed/cannot connect, 6 invalid argument or state, 7 other."
)]
pub struct Args {
    /// Connection profile: a name (looked up in $KMS_HOME/profiles/ and ./kms-dev/profiles/) or a
    /// TOML file.
    #[arg(long, global = true, value_name = "NAME|FILE")]
    pub profile: Option<String>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Deadline for each request, e.g. 30s, 5m.
    #[arg(long, global = true, value_name = "PERIOD", value_parser = parse_period, default_value = "60s")]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `kms` command: the ones that talk to a server, then the offline ones.
#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Remote(Remote),
    /// The audit trail: the audit public key, the signed export, and its offline verification.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The signed key inventory: export it, and verify it offline.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// List the key specs this KMS offers, the purposes each can serve, and which are GM algorithms.
    Algorithms {
        /// Only the specs a GM-only policy allows (SM2, SM3, SM4).
        #[arg(long)]
        gm_only: bool,
    },
    /// Make client certificates from a dev CA (the folder `kms-server dev` made).
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Load the server with one operation for a while: requests/s, latency percentiles, errors,
    /// and the server's CPU time per request.
    Bench(BenchArgs),
    /// Print a shell completion script, e.g. `kms completions bash > /etc/bash_completion.d/kms`.
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// The commands that talk to a KMS server.
#[derive(Debug, Subcommand)]
pub enum Remote {
    /// Show whether the server is initialised and sealed, and who it thinks you are.
    Status,
    /// Initialise a new KMS: make the root key and split its unseal key into shares.
    Init(InitArgs),
    /// Give an unseal share (asked for without echo, or read from --share-file).
    Unseal {
        /// File(s) holding shares, one per line (`-` for stdin); each is given in turn.
        #[arg(long = "share-file", value_name = "FILE")]
        share_files: Vec<PathBuf>,
    },
    /// Seal the KMS: forget the root key until it is unsealed again.
    Seal,
    /// Create, list, inspect and change keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Register who may call the KMS, and in which role.
    #[command(subcommand)]
    Principal(PrincipalCommand),
    /// Let another namespace use a key.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Encrypt data under a key (up to the server's limit, 64 KiB by default).
    Encrypt(EncryptArgs),
    /// Decrypt a ciphertext made by `kms encrypt` (it names its own key).
    Decrypt(DecryptArgs),
    /// Make a data key for envelope encryption.
    Datakey(DatakeyArgs),
    /// Re-encrypt ciphertexts under a key's newest version, or another key, without exposing them.
    Reencrypt(ReencryptArgs),
    /// Sign a message (or a digest, with --prehashed).
    Sign(SignArgs),
    /// Verify a signature; exits 0 only if it is valid (1 if not).
    Verify(VerifyArgs),
    /// Export a key's public key (PEM, or DER with --der).
    PublicKey(PublicKeyArgs),
    /// Decrypt data encrypted to a key's public key (SM2 or RSA-OAEP).
    AsymDecrypt(AsymDecryptArgs),
    /// Compute a MAC tag.
    Mac(MacArgs),
    /// Verify a MAC tag; exits 0 only if it is valid (1 if not).
    VerifyMac(VerifyMacArgs),
    /// Random bytes from the server's CSPRNG.
    Random(RandomArgs),
    /// The password shield: seal a password as a mobile app does, hash it, verify it.
    #[command(subcommand)]
    Password(PasswordCommand),
    /// Replace CSV columns by tokens of the same format (a tokenize key): card numbers keep
    /// their first 6 and last 4 digits. Prints the key version to stderr; detokenising needs it.
    Tokenize(TokenizeArgs),
    /// Turn the tokens in CSV columns back into values, with the key version that made them.
    Detokenize(DetokenizeArgs),
    /// Signed requests (docs/FORMATS.md, "The signed request"): sign one as a partner does,
    /// verify one as a gateway does (verdict and replay guard).
    #[command(subcommand)]
    Request(RequestCommand),
    /// Download an encrypted backup of the whole store.
    Backup {
        /// Where to write it (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Under dual control: the approved request (`apr-…`) that the first call filed.
        #[arg(long, value_name = "ID")]
        approval: Option<String>,
    },
    /// Approve another administrator's pending request (dual control); the approval that
    /// reaches the quorum runs it.
    Approve {
        /// The request id, `apr-…`.
        id: String,
        /// Approve only if the request's parameters digest is this one (as `kms approvals list
        /// --json` shows).
        #[arg(long, value_name = "HEX")]
        digest: Option<String>,
    },
    /// Reject a pending request (dual control): it ends and never runs.
    Reject {
        /// The request id, `apr-…`.
        id: String,
        /// Why (kept with the request).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Requests for approval (dual control).
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Restore a backup into an uninitialised server; needs the backup's unseal shares.
    Restore {
        /// The backup file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// A 1-of-1 backup's share file. Without it the server stages the backup, and its share
        /// holders each give their own share with `kms unseal`.
        #[arg(long = "share-file", value_name = "FILE")]
        share_files: Vec<PathBuf>,
        /// The server's one-time init token (its DATA_DIR/init-token), unless you are one of its
        /// bootstrap_admins.
        #[arg(long, value_name = "FILE")]
        init_token_file: Option<PathBuf>,
    },
}

/// `kms init`: who holds the shares, how many unseal, who administers.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Share holders, one share each, comma-separated certificate subjects, e.g.
    /// kms://alice,kms://bob,kms://carol. Holders other than the admin become custodians.
    #[arg(
        long,
        value_name = "SUBJECTS",
        value_delimiter = ',',
        conflicts_with = "shares"
    )]
    pub holders: Vec<String>,
    /// Encrypt a holder's share to its public key (SM2 or RSA, PEM): SUBJECT=FILE; repeat.
    #[arg(long = "holder-key", value_name = "SUBJECT=FILE", requires = "holders")]
    pub holder_keys: Vec<String>,
    /// Without holders: how many unbound shares to make (all shown to you).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=255))]
    pub shares: Option<u32>,
    /// How many shares, from distinct holders, it takes to unseal.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=255))]
    pub threshold: u32,
    /// The first administrator's subject (default: your certificate's), e.g. kms://admin.
    #[arg(long, value_name = "SUBJECT")]
    pub admin: Option<String>,
    /// Write each share to DIR (mode 0600) instead of printing it: share-N.txt in plaintext,
    /// share-N.sm2 / share-N.rsa when encrypted to the holder's key.
    #[arg(long, value_name = "DIR")]
    pub share_dir: Option<PathBuf>,
    /// The server's one-time init token (its DATA_DIR/init-token), unless you are one of its
    /// bootstrap_admins.
    #[arg(long, value_name = "FILE")]
    pub init_token_file: Option<PathBuf>,
}

/// Where a new key's material comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OriginArg {
    Generated,
    External,
}

/// How key material is wrapped on its way in or out (issue 19).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WrappingSpecArg {
    /// GM/T 0009 SM2 encryption of the material.
    Sm2,
    /// RSA-OAEP with SHA-256 (material up to 318 bytes under RSA-3072).
    RsaOaepSha256,
    /// RSA-OAEP-SHA-256 of an AES-256 key, then AES key wrap with padding (RFC 5649).
    RsaAesKwp,
}

impl WrappingSpecArg {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sm2 => "sm2",
            Self::RsaOaepSha256 => "rsa-oaep-sha256",
            Self::RsaAesKwp => "rsa-aes-kwp",
        }
    }
}

/// `kms key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; prints its id.
    Create {
        /// What the key is for (fixed for its life).
        #[arg(long, value_enum)]
        purpose: PurposeArg,
        /// Key spec (see `kms algorithms`); default: sm4-gcm, sm2 or hmac-sm3 by purpose.
        #[arg(long, value_name = "NAME")]
        algorithm: Option<String>,
        /// An alias to reach the key by.
        #[arg(long)]
        alias: Option<String>,
        /// The namespace the key belongs to (default: "default"): 1 to 63 of a-z, 0-9, '-', '_',
        /// '.', starting and ending with a letter or digit, and not kms-system.
        #[arg(long)]
        namespace: Option<String>,
        /// Rotate automatically this often, e.g. 90d.
        #[arg(long, value_name = "PERIOD", value_parser = parse_period)]
        rotation_period: Option<u64>,
        /// Free text shown with the key.
        #[arg(long)]
        description: Option<String>,
        /// `external`: no material until `kms key import` brings it (the key is
        /// pending-import meanwhile); default `generated` here from the CSPRNG.
        #[arg(long, value_enum, default_value = "generated")]
        origin: OriginArg,
        /// The material may leave, wrapped to a recipient (`kms key export`); fixed for life.
        #[arg(long)]
        exportable: bool,
    },
    /// For a key of origin external: a one-time wrapping public key (written to --out, PEM)
    /// and an import token (printed), valid 24 hours, for wrapping the material outside.
    ImportParams {
        /// Key id or alias.
        key: String,
        /// How the material will be wrapped.
        #[arg(long, value_enum)]
        wrapping_spec: WrappingSpecArg,
        /// The RSA specs' wrapping key: rsa-3072 (default) or rsa-4096.
        #[arg(long, value_name = "SPEC")]
        wrapping_key_spec: Option<String>,
        /// Where to write the wrapping public key (PEM).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Import key material into a key of origin external: a file wrapped outside with the
    /// token of `kms key import-params` (--in, --token), or a local key file wrapped here for
    /// you (--material, --wrap-locally: raw key bytes, or a PKCS#8 private key, PEM or DER).
    Import {
        /// Key id or alias.
        key: String,
        /// The wrapped material (binary).
        #[arg(long = "in", value_name = "FILE", conflicts_with_all = ["material", "wrap_locally"], requires = "token")]
        input: Option<PathBuf>,
        /// The import token from `kms key import-params`.
        #[arg(long)]
        token: Option<String>,
        /// The plain key file, wrapped by this command before it leaves (with --wrap-locally).
        #[arg(long, value_name = "FILE", requires = "wrap_locally")]
        material: Option<PathBuf>,
        /// Get import parameters and wrap --material here: no OpenSSL recipe needed.
        #[arg(long, requires = "material")]
        wrap_locally: bool,
        /// With --wrap-locally: the wrapping spec (default sm2).
        #[arg(long, value_enum, default_value = "sm2")]
        wrapping_spec: WrappingSpecArg,
        /// Delete the material after this long (e.g. 365d); the key then waits for import again.
        #[arg(long, value_name = "PERIOD", value_parser = parse_period)]
        expires_in: Option<u64>,
    },
    /// Export a key created --exportable, wrapped to a recipient's public key; never plaintext.
    Export {
        /// Key id or alias.
        key: String,
        /// The recipient's public key (PEM or DER SubjectPublicKeyInfo): SM2 for sm2, RSA-3072
        /// or RSA-4096 for the RSA specs.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        #[arg(long, value_enum)]
        wrapping_spec: WrappingSpecArg,
        /// The version (default: the newest).
        #[arg(long)]
        version: Option<u32>,
        /// Where to write the wrapped material (binary).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Under dual control: the approved request's id (`kms approvals list`).
        #[arg(long, value_name = "ID")]
        approval: Option<String>,
    },
    /// Register a partner's SM2 or RSA (>= 2048) public key: `--purpose sign` verifies its
    /// signatures, `--purpose asymmetric-decrypt` is for encrypting to it. Prints the key id.
    ImportPublic {
        /// `sign` (verify only) or `asymmetric-decrypt` (encrypt to it).
        #[arg(long, value_enum)]
        purpose: PurposeArg,
        /// The public key: PEM (`PUBLIC KEY`) or DER SubjectPublicKeyInfo.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// An alias to reach the key by.
        #[arg(long)]
        alias: Option<String>,
        /// The namespace the key belongs to (default: "default").
        #[arg(long)]
        namespace: Option<String>,
        /// Free text shown with the key.
        #[arg(long)]
        description: Option<String>,
    },
    /// List keys.
    List {
        /// Only this namespace (default: every namespace you may see).
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Show one key in full.
    Describe {
        /// Key id or alias (`namespace:alias` for another namespace's).
        key: String,
    },
    /// Add a new version; new work uses it, old versions still decrypt and verify.
    Rotate {
        /// Key id or alias.
        key: String,
    },
    /// Set the automatic rotation period (e.g. 90d), or `off`.
    SetRotation {
        /// Key id or alias.
        key: String,
        /// A period such as 90d, 12h, 2w, or `off`.
        #[arg(value_parser = parse_rotation)]
        period: Rotation,
    },
    /// Enable a disabled key.
    Enable {
        /// Key id or alias.
        key: String,
    },
    /// Disable a key (reversible): no operation uses it until it is enabled.
    Disable {
        /// Key id or alias.
        key: String,
    },
    /// Mark a key compromised (one way): no new encryption or signing, decrypt/verify flagged.
    Compromise {
        /// Key id or alias.
        key: String,
    },
    /// Schedule a key's destruction after a waiting period (cancellable until then).
    ScheduleDestruction {
        /// Key id or alias.
        key: String,
        /// Days to wait, 7 to 90 (default 30).
        #[arg(long, value_parser = clap::value_parser!(u32).range(7..=90))]
        days: Option<u32>,
    },
    /// Cancel a scheduled destruction.
    CancelDestruction {
        /// Key id or alias.
        key: String,
    },
    /// Give a key an alias.
    Alias {
        /// Key id or alias.
        key: String,
        /// The new alias.
        alias: String,
    },
    /// Remove an alias (the key stays).
    RemoveAlias {
        /// The alias.
        alias: String,
        /// Its namespace (default: "default").
        #[arg(long)]
        namespace: Option<String>,
    },
}

/// `kms approvals …`
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending requests, and what became of the others.
    List {
        /// Only this request.
        #[arg(long, value_name = "ID")]
        id: Option<String>,
    },
}

/// `kms principal …`
#[derive(Debug, Subcommand)]
pub enum PrincipalCommand {
    /// Register a client certificate subject (its SAN URI, else CN), e.g. kms://app2.
    Add {
        /// The subject, e.g. kms://billing: printable ASCII, no leading, trailing or double spaces.
        subject: String,
        /// The role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The application's namespace (role app only; refused with admin and auditor; default
        /// "default"). A new namespace is 1 to 63 of a-z, 0-9, '-', '_', '.', starting and ending
        /// with a letter or digit, and not kms-system.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// List registered principals.
    List,
    /// Remove a principal.
    Remove {
        /// The subject.
        subject: String,
    },
}

/// `kms grant …`
#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Let the apps of another namespace use a key for some operations.
    Add {
        /// Key id or alias.
        key: String,
        /// The namespace to grant to: not the key's own, not kms-system.
        #[arg(long)]
        namespace: String,
        /// Operations, comma-separated; they must fit the key's purpose. Encrypt keys: encrypt,
        /// decrypt, reencrypt, reencrypt-to, generate-data-key; sign keys: sign, verify,
        /// get-public-key; asymmetric-decrypt keys: asymmetric-decrypt, get-public-key; MAC keys:
        /// generate-mac, verify-mac; tokenize keys: tokenize, detokenize (each its own right);
        /// any key: describe. `reencrypt` lets the namespace
        /// re-encrypt from this key into keys of the key's own namespace (as sensitive as
        /// decrypt); `reencrypt-to` lets it re-encrypt into this key from any key it may
        /// re-encrypt from.
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..,
              value_parser = grant_operations())]
        ops: Vec<String>,
    },
    /// List grants (on one key, or all).
    List {
        /// Only grants on this key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Revoke a namespace's grant on a key.
    Remove {
        /// Key id or alias.
        key: String,
        /// The namespace the grant is for.
        #[arg(long)]
        namespace: String,
    },
}

/// `kms audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Export the audit key's public half (PEM), which verifies audit and inventory exports:
    /// every version of the key, oldest first, as one PEM bundle (the key may have been
    /// rotated; `--json` lists each version with its SM3 fingerprint).
    PublicKey {
        /// Output file (default: stdout).
        #[arg(long, value_name = "PEM")]
        out: Option<PathBuf>,
    },
    /// Download the whole audit trail (JSON Lines, ending with a fresh signed checkpoint).
    /// Auditors only.
    Export {
        /// Output file (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Verify an exported trail offline (no server): the hash chain, every checkpoint signature,
    /// and the closing checkpoint. Exits 0 only if it verifies (1 if not, naming the first
    /// broken line).
    ///
    /// Several files are verified as one trail, in the order given: the archive segments oldest
    /// first, then the live export. Each must verify alone and start with the closing
    /// checkpoint of the file before it (its anchor). Segment names
    /// (`audit-<first seq>-<last seq>.jsonl`, zero-padded) sort in chain order, so
    /// `kms audit verify archive/audit-*.jsonl live.jsonl --public-key audit.pem` checks the
    /// whole trail. The first file must start at the genesis (record 1) unless --from-anchor
    /// is given.
    ///
    /// When the audit key was rotated, the trail holds a transition record, signed by the old
    /// version, for each new one: the bundle of every version verifies it, and so does the
    /// oldest version alone. An edited or dropped transition fails.
    Verify {
        /// The exported trail, or several files of one trail in chain order (`-` for stdin).
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// The audit public key (PEM, from `kms audit public-key`): the bundle of every
        /// version, or only the oldest.
        #[arg(long, value_name = "PEM")]
        public_key: PathBuf,
        /// Accept a first file that starts at an anchor (the closing checkpoint of an archive
        /// segment not given): only the records after it are verified, not that the trail is
        /// complete from the genesis.
        #[arg(long)]
        from_anchor: bool,
    },
}

/// `kms inventory …`
#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Download the signed inventory of every key (JSON). Auditors and administrators.
    Export {
        /// Output file (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Verify an exported inventory offline (no server) and summarise it. Exits 0 only if it
    /// verifies (1 if not).
    Verify {
        /// The exported inventory (`-` for stdin).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The audit public key (PEM, from `kms audit public-key`; a bundle of every version
        /// is tried newest first).
        #[arg(long, value_name = "PEM")]
        public_key: PathBuf,
    },
}

/// `kms pki …`
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Issue a client certificate (SAN URI kms://SUBJECT) and a CLI profile for it.
    Issue {
        /// The subject, e.g. `app2`; the principal becomes kms://app2.
        subject: String,
        /// The folder with the dev CA (ca.pem, ca-key.pem).
        #[arg(long, value_name = "DIR", default_value = crate::resolve::DEV_DIR)]
        ca_dir: PathBuf,
        /// Where to write certs/SUBJECT.pem, certs/SUBJECT-key.pem and profiles/SUBJECT.toml
        /// (default: the CA folder).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// The server endpoint written into the profile.
        #[arg(long, default_value = "https://127.0.0.1:7443")]
        endpoint: String,
        /// SM2 certificates from the dev SM2 CA (ca-sm2.pem): a signing certificate, a TLCP
        /// encryption certificate, and the profile SUBJECT-gm speaking RFC 8998.
        #[arg(long)]
        gm: bool,
    },
}

/// Key purposes, as `--purpose` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PurposeArg {
    /// SM4-GCM, AES-256-GCM; data keys.
    Encrypt,
    /// SM2, RSA-PSS, RSA PKCS#1 v1.5.
    Sign,
    /// SM2 encryption, RSA-OAEP.
    AsymmetricDecrypt,
    /// HMAC-SM3, HMAC-SHA-2.
    Mac,
    /// The password shield's sealing key: SM2, RSA-3072, RSA-4096 (`kms password`).
    Password,
    /// The password shield's pepper: HMAC-SM3 (`kms password`).
    Pepper,
    /// Tokens: SM4-FF1, AES-256-FF1 (reversible), HMAC-SM3 (one-way pseudonyms).
    Tokenize,
}

/// Principal roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Crypto operations in its namespace and by grant.
    App,
    /// Key lifecycle, grants, principals; never data plaintext.
    Admin,
    /// Read-only inventory and audit.
    Auditor,
}

/// Data key specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataKeySpec {
    /// 128-bit SM4 key.
    Sm4,
    /// 256-bit AES key.
    #[value(name = "aes-256")]
    Aes256,
}

/// RSA signature schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemeArg {
    /// RSASSA-PSS (the server's default).
    Pss,
    /// RSASSA-PKCS1-v1_5.
    Pkcs1v15,
}

/// RSA hashes (SM2 always uses SM3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HashArg {
    /// SHA-256 (the server's default).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// `--in FILE` / `--out FILE`; absent or `-` means stdin/stdout.
#[derive(Debug, Clone, ClapArgs)]
pub struct InOut {
    /// Input file (default: stdin).
    #[arg(long = "in", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `kms encrypt`
#[derive(Debug, ClapArgs)]
pub struct EncryptArgs {
    /// Key id or alias (with --batch: the key of lines that name none).
    #[arg(long, required_unless_present = "batch")]
    pub key: Option<String>,
    /// Encryption context entry, bound to the ciphertext; repeat for more.
    #[arg(long = "context", value_name = "K=V", value_parser = parse_key_value)]
    pub context: Vec<(String, String)>,
    #[command(flatten)]
    pub io: InOut,
    /// Write the ciphertext as base64 text.
    #[arg(long)]
    pub base64: bool,
    /// Any size, streamed: one data key for the message, then the data in authenticated
    /// 64 KiB frames (docs/ENVELOPE.md); `kms decrypt` recognises the result.
    #[arg(long, conflicts_with = "base64")]
    pub envelope: bool,
    /// Many items through the batch RPC: a JSON Lines file, one
    /// {"key": …, "plaintext": BASE64, "context": {…}} per line; writes one JSON line per item,
    /// in order, to --out or stdout: {"ciphertext": BASE64, "key_id", "key_version", "context"}
    /// or {"error": {"code", "message"}} (`kms decrypt --batch` reads it back).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["context", "input", "base64", "envelope"])]
    pub batch: Option<PathBuf>,
}

/// The token formats (docs/FORMATS.md "Tokens").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenFormatArg {
    /// Decimal digits, at least 6.
    Digits,
    /// 0-9, A-Z, a-z (case-sensitive), at least 4.
    Alphanumeric,
    /// Card numbers (16-19 digits, Luhn-valid): first 6 and last 4 kept, Luhn-valid tokens.
    Pan,
    /// As pan, but every token fails the Luhn check (cannot be mistaken for a card).
    PanLuhnInvalid,
}

impl TokenFormatArg {
    /// The name the API takes.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Digits => "digits",
            Self::Alphanumeric => "alphanumeric",
            Self::Pan => "pan",
            Self::PanLuhnInvalid => "pan-luhn-invalid",
        }
    }
}

/// What `kms tokenize` and `kms detokenize` share: the CSV columns and the key.
#[derive(Debug, ClapArgs)]
pub struct TokenColumns {
    /// Key id or alias (a key of purpose tokenize).
    #[arg(long)]
    pub key: String,
    /// The columns to replace, counted from 1; comma-separated or repeated.
    #[arg(long = "column", value_name = "N", value_delimiter = ',', required = true,
          num_args = 1.., value_parser = clap::value_parser!(u32).range(1..))]
    pub columns: Vec<u32>,
    /// The format of the columns' values.
    #[arg(long, value_enum, default_value_t = TokenFormatArg::Pan)]
    pub format: TokenFormatArg,
    /// The first row is a header: passed through unchanged.
    #[arg(long)]
    pub header: bool,
    /// Encryption context entry, bound into every token (FF1's tweak); repeat for more. The
    /// same context is needed to detokenise.
    #[arg(long = "context", value_name = "K=V", value_parser = parse_key_value)]
    pub context: Vec<(String, String)>,
    // CSV in (default: stdin) and out (default: stdout); empty cells stay empty.
    #[command(flatten)]
    pub io: InOut,
}

/// `kms tokenize`
#[derive(Debug, ClapArgs)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub columns: TokenColumns,
}

/// `kms detokenize`
#[derive(Debug, ClapArgs)]
pub struct DetokenizeArgs {
    #[command(flatten)]
    pub columns: TokenColumns,
    /// The key version that made the tokens (`kms tokenize` prints it).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub key_version: u32,
}

/// `kms decrypt`
#[derive(Debug, ClapArgs)]
pub struct DecryptArgs {
    /// The encryption context the ciphertext was made with; repeat for more.
    #[arg(long = "context", value_name = "K=V", value_parser = parse_key_value)]
    pub context: Vec<(String, String)>,
    #[command(flatten)]
    pub io: InOut,
    /// The ciphertext input is base64 text.
    #[arg(long)]
    pub base64: bool,
    /// Many items through the batch RPC: a JSON Lines file of {"ciphertext": BASE64,
    /// "context": {…}} (what `kms encrypt --batch` writes); writes one JSON line per item, in
    /// order: {"plaintext": BASE64, "key_id", "key_version", "key_compromised"} or
    /// {"error": {"code", "message"}} (an error line in the input is passed on).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["context", "input", "base64"])]
    pub batch: Option<PathBuf>,
}

/// `kms datakey`
#[derive(Debug, ClapArgs)]
pub struct DatakeyArgs {
    /// The ENCRYPT key that wraps the data key.
    #[arg(long)]
    pub key: String,
    /// The data key's spec.
    #[arg(long, value_enum)]
    pub spec: DataKeySpec,
    /// Return only the wrapped data key.
    #[arg(long)]
    pub no_plaintext: bool,
    /// Encryption context entry; repeat for more.
    #[arg(long = "context", value_name = "K=V", value_parser = parse_key_value)]
    pub context: Vec<(String, String)>,
    /// Write the wrapped data key (binary) here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the plaintext data key (binary, mode 0600) here.
    #[arg(long, value_name = "FILE")]
    pub plaintext_out: Option<PathBuf>,
    /// Return the data key encrypted to this SM2 or RSA public key (PEM or DER) instead of in
    /// the clear: SM2 (GM/T 0009 DER) or RSA-OAEP-SHA-256, for a partner system to open.
    #[arg(long, value_name = "PEM", conflicts_with_all = ["no_plaintext", "plaintext_out"])]
    pub wrap_to: Option<PathBuf>,
    /// With --wrap-to: write the encrypted data key (binary) here.
    #[arg(long, value_name = "FILE", requires = "wrap_to")]
    pub wrapped_out: Option<PathBuf>,
}

/// `kms reencrypt`
#[derive(Debug, ClapArgs)]
pub struct ReencryptArgs {
    /// Destination key (default: the same key's newest version). Data of another namespace's
    /// key can only go to a key of that namespace, unless the destination key was granted to
    /// your namespace with `reencrypt-to`.
    #[arg(long)]
    pub key: Option<String>,
    /// The context the ciphertext was made with; repeat for more.
    #[arg(long = "context", value_name = "K=V", value_parser = parse_key_value)]
    pub context: Vec<(String, String)>,
    /// The context for the new ciphertext; repeat for more (default: the same as --context).
    #[arg(long = "dest-context", value_name = "K=V", value_parser = parse_key_value)]
    pub dest_context: Vec<(String, String)>,
    #[command(flatten)]
    pub io: InOut,
    /// Input and output are base64 text.
    #[arg(long)]
    pub base64: bool,
    /// Re-encrypt these ciphertext files in place (binary), with a progress bar.
    #[arg(value_name = "FILE", conflicts_with_all = ["input", "out"])]
    pub files: Vec<PathBuf>,
}

/// Signing options shared by `sign` and `verify`.
#[derive(Debug, Clone, ClapArgs)]
pub struct SignOptions {
    /// Key id or alias.
    #[arg(long)]
    pub key: String,
    /// The input is a digest computed by the caller (SM2: SM3(Z_A ‖ M); RSA: the plain hash).
    #[arg(long)]
    pub prehashed: bool,
    /// SM2 distinguishing ID (default 1234567812345678). Not with --prehashed: the ID goes
    /// into Z_A, which the caller's digest already holds, so the server could not use it.
    #[arg(long, value_name = "ID", conflicts_with = "prehashed")]
    pub sm2_id: Option<String>,
    /// RSA signature scheme.
    #[arg(long, value_enum)]
    pub scheme: Option<SchemeArg>,
    /// RSA hash.
    #[arg(long, value_enum)]
    pub hash: Option<HashArg>,
}

/// `kms sign`
#[derive(Debug, ClapArgs)]
pub struct SignArgs {
    #[command(flatten)]
    pub options: SignOptions,
    #[command(flatten)]
    pub io: InOut,
    /// Write the signature as base64 text.
    #[arg(long)]
    pub base64: bool,
}

/// `kms verify`
#[derive(Debug, ClapArgs)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub options: SignOptions,
    /// The signed message (default: stdin).
    #[arg(long = "in", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// The signature file.
    #[arg(long, value_name = "FILE")]
    pub signature: PathBuf,
    /// The signature file is base64 text.
    #[arg(long)]
    pub base64: bool,
    /// Check against this key version only (default: every version, newest first).
    #[arg(long)]
    pub key_version: Option<u32>,
}

/// `kms public-key`
#[derive(Debug, ClapArgs)]
pub struct PublicKeyArgs {
    /// Key id or alias.
    pub key: String,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write DER (SubjectPublicKeyInfo) instead of PEM.
    #[arg(long)]
    pub der: bool,
    /// This version's public key (default: the newest).
    #[arg(long)]
    pub key_version: Option<u32>,
}

/// `kms asym-decrypt`
#[derive(Debug, ClapArgs)]
pub struct AsymDecryptArgs {
    /// Key id or alias.
    #[arg(long)]
    pub key: String,
    #[command(flatten)]
    pub io: InOut,
    /// The ciphertext input is base64 text.
    #[arg(long)]
    pub base64: bool,
    /// Decrypt with this key version (default: the newest).
    #[arg(long)]
    pub key_version: Option<u32>,
}

/// `kms password …` (issue 22 item 2; docs/FORMATS.md, "The sealed password").
#[derive(Debug, Subcommand)]
pub enum PasswordCommand {
    /// Seal a password to a password key's public key, as the mobile app does: the password
    /// (read without echo on a terminal, else the first line of --in or stdin), the current
    /// time and a random nonce, encrypted with SM2 or RSA-OAEP-SHA-256.
    Seal(PasswordSealArgs),
    /// Hash a sealed password: prints the stored-hash string to keep.
    Hash(PasswordHashArgs),
    /// Verify a sealed password against a stored hash; exits 0 on a match, 1 if not.
    Verify(PasswordVerifyArgs),
}

/// `kms password seal`
#[derive(Debug, ClapArgs)]
pub struct PasswordSealArgs {
    /// The password key (id or alias): its public key comes from the server (GetPublicKey).
    #[arg(
        long,
        required_unless_present = "public_key",
        conflicts_with = "public_key"
    )]
    pub key: Option<String>,
    /// Seal to this public key (PEM) instead, with no server: what an app that ships the key
    /// does.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    #[command(flatten)]
    pub io: InOut,
    /// Write the sealed password as base64 text.
    #[arg(long)]
    pub base64: bool,
    /// Seal with this timestamp (Unix seconds) instead of the current time: for tests of the
    /// freshness window.
    #[arg(long, value_name = "SECONDS")]
    pub timestamp: Option<u64>,
}

/// `kms password hash`
#[derive(Debug, ClapArgs)]
pub struct PasswordHashArgs {
    /// The password key (id or alias) the password was sealed to.
    #[arg(long)]
    pub key: String,
    /// The pepper key (id or alias).
    #[arg(long)]
    pub pepper: String,
    #[command(flatten)]
    pub io: InOut,
    /// The sealed password input is base64 text.
    #[arg(long)]
    pub base64: bool,
    /// A user identifier the password must not contain (a phone number, a user name); repeat
    /// for several.
    #[arg(long = "identifier", value_name = "TEXT")]
    pub identifiers: Vec<String>,
}

/// `kms password verify`
#[derive(Debug, ClapArgs)]
pub struct PasswordVerifyArgs {
    /// The password key (id or alias) the password was sealed to.
    #[arg(long)]
    pub key: String,
    /// The file holding the stored hash (`kms password hash`'s output).
    #[arg(long, value_name = "FILE")]
    pub hash_file: PathBuf,
    /// The sealed password (default: stdin).
    #[arg(long = "in", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Where a re-hashed string goes when the server returns one (default: printed).
    #[arg(long, value_name = "FILE")]
    pub rehash_out: Option<PathBuf>,
    /// The sealed password input is base64 text.
    #[arg(long)]
    pub base64: bool,
    /// Check a matching password against today's strength rules with these identifiers.
    #[arg(long = "identifier", value_name = "TEXT")]
    pub identifiers: Vec<String>,
}

/// `kms request …` (issue 22 item 3).
#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Sign a request as a partner does: the canonical string of the method, path, current
    /// time, a random nonce and the body (--in, default stdin), signed with a KMS key (--key)
    /// or, with no server, a PKCS#8 private key (--private-key). Prints the signed request as
    /// JSON: what `kms request verify --signed` reads.
    Sign(RequestSignArgs),
    /// Verify a signed request as a gateway does: prints the verdict (ok, bad-signature,
    /// stale, replayed, malformed); exits 0 only on ok (1 otherwise). A request verifies once.
    Verify(RequestVerifyArgs),
}

/// `kms request sign`
#[derive(Debug, ClapArgs)]
pub struct RequestSignArgs {
    /// sm2, hmac-sm3 or rsa-pss.
    #[arg(long)]
    pub scheme: String,
    /// Sign with this KMS key (id or alias): Sign for sm2 and rsa-pss, GenerateMac for hmac-sm3.
    #[arg(
        long,
        required_unless_present = "private_key",
        conflicts_with = "private_key"
    )]
    pub key: Option<String>,
    /// Sign locally with this PKCS#8 private key (PEM or DER; SM2 or RSA), with no server.
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<PathBuf>,
    /// The HTTP method, upper case.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// The request target as sent (query included).
    #[arg(long)]
    pub path: String,
    #[command(flatten)]
    pub io: InOut,
    /// Sign with this timestamp (Unix seconds) instead of the current time.
    #[arg(long, value_name = "SECONDS")]
    pub timestamp: Option<u64>,
    /// Sign with this nonce (hex) instead of 16 random bytes.
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
}

/// `kms request verify`
#[derive(Debug, ClapArgs)]
pub struct RequestVerifyArgs {
    /// The key (id or alias) that checks it: the partner's public key or the shared MAC key.
    #[arg(long)]
    pub key: String,
    /// The signed request, as `kms request sign` prints it (JSON: scheme, method, path,
    /// timestamp, nonce in hex, signature in base64).
    #[arg(long, value_name = "FILE")]
    pub signed: PathBuf,
    /// The body (default: stdin), unless --body-digest is given.
    #[arg(long = "in", value_name = "FILE", conflicts_with = "body_digest")]
    pub input: Option<PathBuf>,
    /// The body's digest in hex (32 bytes: SM3, or SHA-256 for rsa-pss) instead of the body.
    #[arg(long, value_name = "HEX")]
    pub body_digest: Option<String>,
}

/// `kms mac`
#[derive(Debug, ClapArgs)]
pub struct MacArgs {
    /// Key id or alias.
    #[arg(long)]
    pub key: String,
    #[command(flatten)]
    pub io: InOut,
    /// Write the tag as base64 text.
    #[arg(long)]
    pub base64: bool,
}

/// `kms verify-mac`
#[derive(Debug, ClapArgs)]
pub struct VerifyMacArgs {
    /// Key id or alias.
    #[arg(long)]
    pub key: String,
    /// The data (default: stdin).
    #[arg(long = "in", value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// The tag file.
    #[arg(long, value_name = "FILE")]
    pub tag: PathBuf,
    /// The tag file is base64 text.
    #[arg(long)]
    pub base64: bool,
    /// Check against this key version only.
    #[arg(long)]
    pub key_version: Option<u32>,
}

/// `kms random`
#[derive(Debug, ClapArgs)]
pub struct RandomArgs {
    /// How many bytes, 1 to 1024.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub bytes: u32,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write base64 text.
    #[arg(long)]
    pub base64: bool,
}

/// `kms bench --op`: exactly the load tool's operations, with their help.
fn bench_operations() -> impl clap::builder::TypedValueParser<Value = kms_load::Op> {
    use clap::builder::TypedValueParser as _;
    let values =
        kms_load::Op::ALL.map(|op| clap::builder::PossibleValue::new(op.name()).help(op.help()));
    clap::builder::PossibleValuesParser::new(values)
        .try_map(|name: String| kms_load::Op::from_name(&name).ok_or("unknown operation"))
}

/// `kms bench`
#[derive(Debug, ClapArgs)]
#[command(
    after_help = "Server CPU time is read from /proc/PID/stat of the server process: \
                        --server-pid, or found as the process listening on a local endpoint's port.\n\
                        Exits non-zero if any request failed (after printing the results)."
)]
pub struct BenchArgs {
    /// The operation.
    #[arg(long, value_parser = bench_operations())]
    pub op: kms_load::Op,
    /// Key id or alias.
    #[arg(long)]
    pub key: String,
    /// Payload bytes (default 1024; asym-decrypt 32; datakey: the data key's length, 16 or 32).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(0..=4_194_304))]
    pub size: Option<u32>,
    /// Seconds to measure, 1 to 600.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub duration: u64,
    /// Concurrent request loops, 1 to 4096.
    #[arg(long, value_name = "C", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Connections (each its own TCP, TLS and HTTP/2) the loops are spread over, 1 to 4096.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub connections: u32,
    /// Seconds of load before measuring starts, 0 to 60.
    #[arg(long, value_name = "SECS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(0..=60))]
    pub warmup: u64,
    /// Paced load: this many requests per second in total, spread evenly over the loops
    /// (default: each loop sends again as soon as it has its answer). Latency is then measured
    /// from each request's scheduled time, so a stalled server is not hidden by sending less.
    #[arg(long, value_name = "REQ_PER_S",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub rate: Option<u64>,
    /// The server's process id, for its CPU time (default: found for a local endpoint).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Print progress to stderr each second even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Send N copies of the item per call through the batch RPC (1 to 1000; not asym-decrypt):
    /// requests are then calls, and items/s and server CPU per item are reported too.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: Option<u32>,
    /// The pepper key (id or alias) of `--op hash-password`, whose --key is the password key.
    #[arg(long, value_name = "KEY")]
    pub pepper: Option<String>,
    /// The MAC key's bytes (a file, as imported with `kms key import --material`) that
    /// `--op verify-request` signs each request with, as the partner; --key is that MAC key.
    #[arg(long, value_name = "FILE")]
    pub partner_key: Option<PathBuf>,
}

/// Parses `key=value` (the value may contain `=`; the key may not be empty).
///
/// # Errors
/// A message for clap when there is no `=` or the key is empty.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        Some(_) | None => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(line: &str) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("kms").chain(line.split_whitespace()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Args::command().debug_assert();
    }

    /// Every command of issue 5, as a user would type it.
    const LINES: &[&str] = &[
        "algorithms --gm-only",
        "status",
        "--profile admin --json status",
        "approve apr-00ff",
        "approve apr-00ff --digest abcd",
        "reject apr-00ff --reason no",
        "approvals list",
        "approvals list --id apr-00ff",
        "backup --out b.kmsbak --approval apr-00ff",
        "init --shares 3 --threshold 2",
        "init --shares 1 --threshold 1 --admin kms://admin --share-dir shares",
        "unseal",
        "unseal --share-file a --share-file b",
        "seal",
        "key create --purpose encrypt --algorithm sm4-gcm --alias orders --namespace billing --rotation-period 90d",
        "key create --purpose sign",
        "key create --purpose asymmetric-decrypt --algorithm rsa-3072",
        "key create --purpose mac --description tags",
        "key list",
        "key list --namespace billing",
        "key describe K",
        "key rotate K",
        "key set-rotation K 12h",
        "key set-rotation K off",
        "key enable K",
        "key disable K",
        "key compromise K",
        "key schedule-destruction K --days 7",
        "key schedule-destruction K",
        "key cancel-destruction K",
        "key alias K orders",
        "key remove-alias orders --namespace billing",
        "principal add kms://app2 --role app --namespace billing",
        "principal add kms://root --role admin",
        "principal list",
        "principal remove kms://app2",
        "grant add K --namespace other --ops encrypt,decrypt",
        "grant add K --namespace other --ops sign --ops verify",
        "grant list",
        "grant list --key K",
        "grant remove K --namespace other",
        "encrypt --key K --context app=x --context user=y --in f --out g",
        "encrypt --key K --base64",
        "encrypt --batch items.jsonl",
        "encrypt --batch items.jsonl --key K --out sealed.jsonl",
        "decrypt --context app=x --in g --out f",
        "decrypt --base64",
        "decrypt --batch sealed.jsonl --out opened.jsonl",
        "datakey --key K --spec sm4",
        "datakey --key K --spec aes-256 --no-plaintext --out wrapped",
        "datakey --key K --spec sm4 --plaintext-out pt --context a=b",
        "reencrypt --in a --out b",
        "reencrypt --key D --context a=1 --dest-context b=2 --base64",
        "reencrypt --key D f1 f2 f3",
        "sign --key K --in m --out sig",
        "sign --key K --prehashed --in d --out sig",
        "sign --key K --sm2-id alice@example --in m --out sig",
        "sign --key K --scheme pkcs1v15 --hash sha384 --in m --out sig --base64",
        "verify --key K --in m --signature sig",
        "verify --key K --scheme pss --hash sha512 --in m --signature sig --key-version 2 --base64",
        "public-key K",
        "public-key K --out k.pem",
        "public-key K --der --key-version 1 --out k.der",
        "asym-decrypt --key K --in ct --out pt",
        "mac --key K --in f --out tag",
        "verify-mac --key K --in f --tag tag",
        "random --bytes 32",
        "random --bytes 1024 --out r --base64",
        "backup --out b.kmsbak",
        "restore --in b.kmsbak --share-file s1 --share-file s2",
        "restore --in b.kmsbak",
        "pki issue app2",
        "pki issue app2 --ca-dir dev --out-dir out --endpoint https://localhost:7443",
        "audit public-key",
        "audit public-key --out audit.pem",
        "audit export --out audit.jsonl",
        "--json audit export",
        "audit verify audit.jsonl --public-key audit.pem",
        "audit verify a.jsonl b.jsonl live.jsonl --public-key audit.pem",
        "audit verify live.jsonl --public-key audit.pem --from-anchor",
        "inventory export",
        "inventory export --out inventory.json",
        "inventory verify inventory.json --public-key audit.pem",
        "bench --op encrypt --key K",
        "bench --op encrypt --key K --batch 100",
        "--json bench --op asym-decrypt --key K --size 64 --duration 5 --concurrency 64 --connections 4 --warmup 0 --server-pid 1 --progress",
        "completions bash",
        "completions zsh",
        "--timeout 5m status",
    ];

    #[test]
    fn every_command_parses() {
        for line in LINES {
            if let Err(e) = parse(line) {
                panic!("kms {line}: {e}");
            }
        }
    }

    #[test]
    fn every_command_has_help() {
        fn walk(cmd: &clap::Command, path: &mut Vec<String>) {
            let mut argv: Vec<String> = vec!["kms".to_owned()];
            argv.extend(path.iter().cloned());
            argv.push("--help".to_owned());
            let err = Args::try_parse_from(&argv).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DisplayHelp, "{argv:?}");
            assert!(err.to_string().contains("Usage: kms"), "{argv:?}");
            for sub in cmd.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                path.push(sub.get_name().to_owned());
                walk(sub, path);
                path.pop();
            }
        }
        let cmd = Args::command();
        walk(&cmd, &mut Vec::new());
        let names: Vec<&str> = cmd.get_subcommands().map(clap::Command::get_name).collect();
        for expected in [
            "status",
            "init",
            "unseal",
            "seal",
            "key",
            "principal",
            "grant",
            "encrypt",
            "decrypt",
            "datakey",
            "reencrypt",
            "sign",
            "verify",
            "public-key",
            "asym-decrypt",
            "mac",
            "verify-mac",
            "random",
            "backup",
            "restore",
            "approve",
            "reject",
            "approvals",
            "audit",
            "inventory",
            "pki",
            "completions",
            "algorithms",
        ] {
            assert!(names.contains(&expected), "missing {expected}: {names:?}");
        }
    }

    #[test]
    fn parsed_values_land_in_the_right_fields() {
        let args = parse("--json key create --purpose sign --rotation-period 1d").unwrap();
        assert!(args.json);
        let Command::Remote(Remote::Key(KeyCommand::Create {
            purpose,
            algorithm,
            rotation_period,
            ..
        })) = args.command
        else {
            panic!("{:?}", args.command);
        };
        assert_eq!(purpose, PurposeArg::Sign);
        assert_eq!(algorithm, None);
        assert_eq!(rotation_period, Some(86_400));

        let args = parse("grant add K --namespace n --ops encrypt,decrypt,describe").unwrap();
        let Command::Remote(Remote::Grant(GrantCommand::Add { ops, .. })) = args.command else {
            panic!("{:?}", args.command);
        };
        assert_eq!(ops, ["encrypt", "decrypt", "describe"]);

        let args = parse("encrypt --key K --context a=b=c --context x=").unwrap();
        let Command::Remote(Remote::Encrypt(e)) = args.command else {
            panic!("{:?}", args.command);
        };
        assert_eq!(
            e.context,
            [
                ("a".to_owned(), "b=c".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );

        let args = parse("key set-rotation K off").unwrap();
        let Command::Remote(Remote::Key(KeyCommand::SetRotation { period, .. })) = args.command
        else {
            panic!("{:?}", args.command);
        };
        assert_eq!(period, Rotation::Off);
        assert_eq!(parse("status").unwrap().timeout, 60);

        let args = parse("audit verify a.jsonl b.jsonl --public-key k.pem --from-anchor").unwrap();
        let Command::Audit(AuditCommand::Verify {
            files,
            public_key,
            from_anchor,
        }) = args.command
        else {
            panic!("{:?}", args.command);
        };
        assert_eq!(files, [PathBuf::from("a.jsonl"), PathBuf::from("b.jsonl")]);
        assert_eq!(public_key, PathBuf::from("k.pem"));
        assert!(from_anchor);
        let args = parse("audit verify a.jsonl --public-key k.pem").unwrap();
        let Command::Audit(AuditCommand::Verify { from_anchor, .. }) = args.command else {
            panic!("{:?}", args.command);
        };
        assert!(!from_anchor);
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for line in [
            "key create --purpose encrypt --rotation-period 90",
            "key create --purpose storage",
            "key set-rotation K sometimes",
            "key schedule-destruction K --days 3",
            "grant add K --namespace n --ops launch-missiles",
            "grant add K --namespace n",
            "encrypt --key K --context novalue",
            "encrypt --key K --context =v",
            "random --bytes 0",
            "random --bytes 1025",
            "datakey --key K --spec des",
            "sign --key K --scheme raw",
            "init --shares 0 --threshold 1",
            "reencrypt --in a f1",
            "verify --key K --in m",
            "completions tcsh",
            "audit verify audit.jsonl",
            "audit verify --public-key audit.pem",
            "inventory verify",
            "audit export extra",
            "nonsense",
        ] {
            let err = parse(line).unwrap_err();
            assert_eq!(err.exit_code(), 2, "kms {line}: {err}");
        }
    }

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(parse_key_value("a=b"), Ok(("a".to_owned(), "b".to_owned())));
        assert_eq!(
            parse_key_value("a"),
            Err("expected KEY=VALUE, got \"a\"".to_owned())
        );
        assert_eq!(
            parse_key_value("=b"),
            Err("expected KEY=VALUE, got \"=b\"".to_owned())
        );
    }

    /// `--ops` takes every grant operation of the core, one at a time and all together, and
    /// nothing else: its possible values are the core's names, in the core's order.
    #[test]
    fn grant_ops_are_exactly_the_cores_grant_operations() {
        let core: Vec<&str> = GrantOp::ALL.iter().map(|op| op.name()).collect();
        let command = Args::command();
        let add = command
            .find_subcommand("grant")
            .and_then(|g| g.find_subcommand("add"))
            .expect("kms grant add");
        let ops = add
            .get_arguments()
            .find(|a| a.get_id() == "ops")
            .expect("--ops");
        let offered: Vec<String> = ops
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_owned())
            .collect();
        assert_eq!(offered, core);

        for name in &core {
            let args = parse(&format!("grant add K --namespace n --ops {name}")).unwrap();
            let Command::Remote(Remote::Grant(GrantCommand::Add { ops, .. })) = args.command else {
                panic!("{:?}", args.command);
            };
            assert_eq!(ops, [*name]);
            assert_eq!(GrantOp::parse(name).ok().map(GrantOp::name), Some(*name));
        }
        let args = parse(&format!(
            "grant add K --namespace n --ops {}",
            core.join(",")
        ))
        .unwrap();
        let Command::Remote(Remote::Grant(GrantCommand::Add { ops, .. })) = args.command else {
            panic!("{:?}", args.command);
        };
        assert_eq!(ops, core);

        for other in ["launch-missiles", "destroy", "create"] {
            let err = parse(&format!("grant add K --namespace n --ops {other}")).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::InvalidValue,
                "--ops {other:?}: {err}"
            );
        }
    }
}
