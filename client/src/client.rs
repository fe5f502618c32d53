//! The typed data-plane client: every `kms.v1.Crypto` call as an async method over one mutual-TLS
//! channel, with retries on UNAVAILABLE only, a deadline per call, and errors that carry the
//! server's request id.
//!
//! Only UNAVAILABLE is retried (the server sealed, restarting, or its audit trail momentarily
//! unwritable: nothing was done, so a repeat is safe); every other status is the answer. Each
//! data-plane call is free of side effects but its audit record, so a retried call is at worst
//! recorded twice. Plaintexts and data keys come back in [`Zeroizing`] buffers, and no type here
//! prints secret bytes in `Debug`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use kms_proto::v1::crypto_client::CryptoClient;
use kms_proto::v1::{self, MessageType};
use tonic::transport::Channel;
use tonic::{Code, Status};
use zeroize::Zeroizing;

use crate::connect::{self, ClientError, Connection};
use crate::profile::{self, ProfileError};

/// An encryption context: string pairs bound to the ciphertext (the same pairs open it).
pub type Context = HashMap<String, String>;

/// How calls are retried when the server answers UNAVAILABLE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included (1: no retry).
    pub attempts: u32,
    /// The wait before the second attempt; each later wait doubles, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Retry {
    /// Four attempts, waiting about 50, 100 and 200 ms (each wait ±25 % so that many clients
    /// do not return in step).
    fn default() -> Self {
        Self {
            attempts: 4,
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl Retry {
    /// No retries.
    #[must_use]
    pub const fn never() -> Self {
        Self {
            attempts: 1,
            first_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        let base = self
            .first_backoff
            .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        // ±25 %: a random factor in [0.75, 1.25).
        let mut b = [0u8; 2];
        let jitter = if getrandom::fill(&mut b).is_ok() {
            f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
        } else {
            0.5
        };
        base.mul_f64(0.75 + jitter / 2.0)
    }
}

/// A refusal from the KMS (or the transport): its gRPC code, the server's message and the
/// request id the message names, to quote to the KMS's operators.
#[derive(Clone, PartialEq, Eq)]
pub struct KmsError {
    code: Code,
    message: String,
    attempts: u32,
}

impl KmsError {
    fn from_status(s: &Status, attempts: u32) -> Self {
        Self {
            code: s.code(),
            message: s.message().to_owned(),
            attempts,
        }
    }

    /// The gRPC status code (INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND, …).
    #[must_use]
    pub fn code(&self) -> Code {
        self.code
    }

    /// The server's message: what is wrong, never key bytes or plaintext.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request id the server named (`… (request 6f1c…-12)`), which its log and audit
    /// record carry too.
    #[must_use]
    pub fn request_id(&self) -> Option<&str> {
        let start = self.message.rfind("(request ")? + "(request ".len();
        let rest = &self.message[start..];
        rest.strip_suffix(')').filter(|id| !id.contains(' '))
    }

    /// How many attempts were made (more than one only for UNAVAILABLE).
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl fmt::Debug for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for KmsError {}

/// Why a [`Client`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Connect(#[from] ClientError),
}

/// A ciphertext and the key version that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encrypted {
    /// The self-describing blob (`docs/FORMATS.md`); Decrypt needs only it and the context.
    pub ciphertext: Vec<u8>,
    pub key_id: String,
    pub key_version: u32,
}

/// A plaintext, wiped when dropped; `Debug` shows its length only.
pub struct Decrypted {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub key_id: String,
    pub key_version: u32,
    /// The key was marked compromised: re-protect this data under another key.
    pub key_compromised: bool,
}

impl fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decrypted")
            .field("plaintext", &format_args!("{} bytes", self.plaintext.len()))
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .field("key_compromised", &self.key_compromised)
            .finish()
    }
}

/// A data key for envelope encryption: use `plaintext` locally and drop it; keep `ciphertext`.
pub struct DataKey {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub ciphertext: Vec<u8>,
    pub key_id: String,
    pub key_version: u32,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &format_args!("{} bytes", self.plaintext.len()))
            .field(
                "ciphertext",
                &format_args!("{} bytes", self.ciphertext.len()),
            )
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .finish()
    }
}

/// How to sign or verify; the defaults are the key's (SM2 with the default ID, RSA-PSS with
/// SHA-256).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignOptions {
    /// The message is a digest the caller computed (SM2: SM3(Z_A ‖ M), 32 bytes).
    pub prehashed: bool,
    pub sm2_id: Option<String>,
    /// `pss` or `pkcs1v15`.
    pub rsa_scheme: Option<String>,
    /// `sha256`, `sha384`, `sha512` (RSA) or `sm3`.
    pub hash: Option<String>,
}

/// A signature and the key version that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub signature: Vec<u8>,
    pub key_id: String,
    pub key_version: u32,
}

/// A verification's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub valid: bool,
    pub key_id: String,
    /// The version that accepted the signature (or was tried last).
    pub key_version: u32,
    pub key_compromised: bool,
}

/// A MAC and the key version that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mac {
    pub mac: Vec<u8>,
    pub key_id: String,
    pub key_version: u32,
}

/// A public key (SM2 or RSA), as DER SubjectPublicKeyInfo and PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: String,
    pub key_version: u32,
    pub algorithm: String,
    pub der: Vec<u8>,
    pub pem: String,
}

/// The data-plane client. Cheap to clone (one shared HTTP/2 connection).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use kms_client::{Client, Context};
///
/// let kms = Client::from_profile("kms-dev/profiles/app.toml".as_ref()).await?;
/// let context = Context::from([("order".to_owned(), "42".to_owned())]);
/// let sealed = kms.encrypt("payments", b"card 6222 0000 1111 2222", &context).await?;
/// let opened = kms.decrypt(&sealed.ciphertext, &context).await?;
/// assert_eq!(&opened.plaintext[..], b"card 6222 0000 1111 2222");
///
/// // A refusal names the server's request id, for the operators.
/// if let Err(e) = kms.decrypt(&sealed.ciphertext, &Context::new()).await {
///     eprintln!("{} (request {:?})", e.code(), e.request_id());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    retry: Retry,
    timeout: Option<Duration>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects with explicit settings (PEM contents, endpoint, TLS mode, deadline).
    ///
    /// # Errors
    /// [`ConnectError::Connect`] when the settings are unusable or the server cannot be reached.
    pub async fn connect(conn: &Connection) -> Result<Self, ConnectError> {
        let channel = connect::connect(conn).await?;
        Ok(Self::from_channel(channel, conn.timeout))
    }

    /// Connects with a profile file (as `kms-server dev` writes them), a 30 s deadline per
    /// call and the default [`Retry`].
    ///
    /// # Errors
    /// [`ConnectError::Profile`] when the profile or a file it names cannot be read.
    pub async fn from_profile(path: &Path) -> Result<Self, ConnectError> {
        let conn = profile::load(path, Some(Duration::from_secs(30)))?;
        Self::connect(&conn).await
    }

    /// Over a channel made elsewhere (e.g. [`connect::connect`]).
    #[must_use]
    pub fn from_channel(channel: Channel, timeout: Option<Duration>) -> Self {
        Self {
            channel,
            retry: Retry::default(),
            timeout,
        }
    }

    /// The same client with another retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The same client with another deadline per call (`None`: none), counted from the first
    /// attempt. Retries stop when the attempt after the next wait would have less time left
    /// than that wait.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs one call: the request is built afresh for each attempt (so no copy of it outlives
    /// the attempt), UNAVAILABLE is retried with backoff, anything else is the answer.
    pub(crate) async fn call<Req, Resp, Fut>(
        &self,
        build: impl Fn() -> Req,
        send: impl Fn(Channel, tonic::Request<Req>) -> Fut,
    ) -> Result<Resp, KmsError>
    where
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.call_with(true, build, send).await
    }

    /// [`Client::call`], or a single attempt when `retry` is false: for calls that use up a
    /// nonce (a signed request, a sealed password), where an UNAVAILABLE seen here may follow
    /// a call the server did carry out (a connection lost on the way back), and a repeat would
    /// be answered "replayed".
    pub(crate) async fn call_with<Req, Resp, Fut>(
        &self,
        retry: bool,
        build: impl Fn() -> Req,
        send: impl Fn(Channel, tonic::Request<Req>) -> Fut,
    ) -> Result<Resp, KmsError>
    where
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let started = Instant::now();
        let attempts = if retry { self.retry.attempts.max(1) } else { 1 };
        let mut attempt = 1;
        loop {
            let mut request = tonic::Request::new(build());
            if let Some(t) = self.timeout {
                request.set_timeout(t.saturating_sub(started.elapsed()));
            }
            match send(self.channel.clone(), request).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(s) if s.code() == Code::Unavailable && attempt < attempts => {
                    let wait = self.retry.backoff(attempt - 1);
                    // The next attempt must keep at least as long as the wait before it:
                    // one sent with a few milliseconds left would only time out (CANCELLED),
                    // hiding the server's answer.
                    if self
                        .timeout
                        .is_some_and(|t| started.elapsed() + wait.saturating_mul(2) >= t)
                    {
                        return Err(KmsError::from_status(&s, attempt));
                    }
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(s) => return Err(KmsError::from_status(&s, attempt)),
            }
        }
    }

    /// Encrypts up to the server's limit (64 KiB by default) under `key` (id or alias), bound
    /// to `context`. For more, use a data key and [`crate::envelope`].
    ///
    /// # Errors
    /// [`KmsError`]: e.g. NOT_FOUND (no such key in reach), FAILED_PRECONDITION (key state).
    pub async fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        context: &Context,
    ) -> Result<Encrypted, KmsError> {
        let r = self
            .call(
                || v1::EncryptRequest {
                    key: key.to_owned(),
                    plaintext: plaintext.to_vec(),
                    context: context.clone(),
                },
                |ch, req| async move { CryptoClient::new(ch).encrypt(req).await },
            )
            .await?;
        Ok(Encrypted {
            ciphertext: r.ciphertext,
            key_id: r.key_id,
            key_version: r.key_version,
        })
    }

    /// Decrypts a blob from [`Client::encrypt`] with the same context.
    ///
    /// # Errors
    /// [`KmsError`]: INVALID_ARGUMENT "decryption failed" for a wrong context or a damaged blob.
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        context: &Context,
    ) -> Result<Decrypted, KmsError> {
        let mut r = self
            .call(
                || v1::DecryptRequest {
                    ciphertext: ciphertext.to_vec(),
                    context: context.clone(),
                },
                |ch, req| async move { CryptoClient::new(ch).decrypt(req).await },
            )
            .await?;
        Ok(Decrypted {
            plaintext: Zeroizing::new(std::mem::take(&mut r.plaintext)),
            key_id: r.key_id,
            key_version: r.key_version,
            key_compromised: r.key_compromised,
        })
    }

    /// Re-encrypts a blob under `destination_key` without the plaintext leaving the KMS.
    ///
    /// # Errors
    /// [`KmsError`] as for decrypt and encrypt.
    pub async fn reencrypt(
        &self,
        ciphertext: &[u8],
        source_context: &Context,
        destination_key: &str,
        destination_context: &Context,
    ) -> Result<Encrypted, KmsError> {
        let r = self
            .call(
                || v1::ReEncryptRequest {
                    ciphertext: ciphertext.to_vec(),
                    source_context: source_context.clone(),
                    destination_key: destination_key.to_owned(),
                    destination_context: destination_context.clone(),
                },
                |ch, req| async move { CryptoClient::new(ch).re_encrypt(req).await },
            )
            .await?;
        Ok(Encrypted {
            ciphertext: r.ciphertext,
            key_id: r.key_id,
            key_version: r.key_version,
        })
    }

    /// A fresh data key of `spec` (`sm4` or `aes-256`), returned in plaintext and encrypted
    /// under `key` with `context`.
    ///
    /// # Errors
    /// [`KmsError`]: INVALID_ARGUMENT for a spec the key cannot make.
    pub async fn generate_data_key(
        &self,
        key: &str,
        spec: &str,
        context: &Context,
    ) -> Result<DataKey, KmsError> {
        let mut r = self
            .call(
                || v1::GenerateDataKeyRequest {
                    key: key.to_owned(),
                    key_spec: spec.to_owned(),
                    context: context.clone(),
                    wrap_to_public_key: Vec::new(),
                },
                |ch, req| async move { CryptoClient::new(ch).generate_data_key(req).await },
            )
            .await?;
        Ok(DataKey {
            plaintext: Zeroizing::new(std::mem::take(&mut r.plaintext)),
            ciphertext: r.ciphertext,
            key_id: r.key_id,
            key_version: r.key_version,
        })
    }

    /// A data key in its encrypted form only (to be decrypted later, elsewhere).
    ///
    /// # Errors
    /// [`KmsError`] as for [`Client::generate_data_key`].
    pub async fn generate_data_key_without_plaintext(
        &self,
        key: &str,
        spec: &str,
        context: &Context,
    ) -> Result<Encrypted, KmsError> {
        let r = self
            .call(
                || v1::GenerateDataKeyRequest {
                    key: key.to_owned(),
                    key_spec: spec.to_owned(),
                    context: context.clone(),
                    wrap_to_public_key: Vec::new(),
                },
                |ch, req| async move {
                    CryptoClient::new(ch)
                        .generate_data_key_without_plaintext(req)
                        .await
                },
            )
            .await?;
        Ok(Encrypted {
            ciphertext: r.ciphertext,
            key_id: r.key_id,
            key_version: r.key_version,
        })
    }

    fn sign_fields(o: &SignOptions) -> (i32, String, String, String) {
        let t = if o.prehashed {
            MessageType::Digest
        } else {
            MessageType::Raw
        };
        (
            t.into(),
            o.sm2_id.clone().unwrap_or_default(),
            o.rsa_scheme.clone().unwrap_or_default(),
            o.hash.clone().unwrap_or_default(),
        )
    }

    /// Signs `message` (or its digest, with [`SignOptions::prehashed`]) with a sign key.
    ///
    /// # Errors
    /// [`KmsError`]: INVALID_ARGUMENT for options of the other algorithm family.
    pub async fn sign(
        &self,
        key: &str,
        message: &[u8],
        options: &SignOptions,
    ) -> Result<Signature, KmsError> {
        let (message_type, sm2_id, rsa_scheme, hash) = Self::sign_fields(options);
        let r = self
            .call(
                || v1::SignRequest {
                    key: key.to_owned(),
                    message: message.to_vec(),
                    message_type,
                    sm2_id: sm2_id.clone(),
                    rsa_scheme: rsa_scheme.clone(),
                    hash: hash.clone(),
                },
                |ch, req| async move { CryptoClient::new(ch).sign(req).await },
            )
            .await?;
        Ok(Signature {
            signature: r.signature,
            key_id: r.key_id,
            key_version: r.key_version,
        })
    }

    /// Verifies a signature with any version of the key (or the one given).
    ///
    /// # Errors
    /// [`KmsError`] for a refused call; an invalid signature is `Ok` with `valid: false`.
    pub async fn verify(
        &self,
        key: &str,
        message: &[u8],
        signature: &[u8],
        options: &SignOptions,
    ) -> Result<Verified, KmsError> {
        let (message_type, sm2_id, rsa_scheme, hash) = Self::sign_fields(options);
        let r = self
            .call(
                || v1::VerifyRequest {
                    key: key.to_owned(),
                    message: message.to_vec(),
                    message_type,
                    sm2_id: sm2_id.clone(),
                    rsa_scheme: rsa_scheme.clone(),
                    hash: hash.clone(),
                    signature: signature.to_vec(),
                    key_version: None,
                },
                |ch, req| async move { CryptoClient::new(ch).verify(req).await },
            )
            .await?;
        Ok(Verified {
            valid: r.valid,
            key_id: r.key_id,
            key_version: r.key_version,
            key_compromised: r.key_compromised,
        })
    }

    /// Decrypts an SM2 (GM/T 0009 DER) or RSA-OAEP-SHA-256 ciphertext made to the key's
    /// public key.
    ///
    /// # Errors
    /// [`KmsError`]: INVALID_ARGUMENT "decryption failed" for a damaged ciphertext.
    pub async fn asymmetric_decrypt(
        &self,
        key: &str,
        ciphertext: &[u8],
    ) -> Result<Decrypted, KmsError> {
        let mut r = self
            .call(
                || v1::AsymmetricDecryptRequest {
                    key: key.to_owned(),
                    ciphertext: ciphertext.to_vec(),
                    key_version: None,
                },
                |ch, req| async move { CryptoClient::new(ch).asymmetric_decrypt(req).await },
            )
            .await?;
        Ok(Decrypted {
            plaintext: Zeroizing::new(std::mem::take(&mut r.plaintext)),
            key_id: r.key_id,
            key_version: r.key_version,
            key_compromised: r.key_compromised,
        })
    }

    /// The newest public key of a sign or asymmetric-decrypt key.
    ///
    /// # Errors
    /// [`KmsError`]: FAILED_PRECONDITION for a symmetric key.
    pub async fn get_public_key(&self, key: &str) -> Result<PublicKey, KmsError> {
        let r = self
            .call(
                || v1::GetPublicKeyRequest {
                    key: key.to_owned(),
                    key_version: None,
                },
                |ch, req| async move { CryptoClient::new(ch).get_public_key(req).await },
            )
            .await?;
        Ok(PublicKey {
            key_id: r.key_id,
            key_version: r.key_version,
            algorithm: r.algorithm,
            der: r.public_key_der,
            pem: r.public_key_pem,
        })
    }

    /// A MAC of `data` (HMAC-SM3 or HMAC-SHA-2, by the key).
    ///
    /// # Errors
    /// [`KmsError`] for a refused call.
    pub async fn generate_mac(&self, key: &str, data: &[u8]) -> Result<Mac, KmsError> {
        let r = self
            .call(
                || v1::GenerateMacRequest {
                    key: key.to_owned(),
                    data: data.to_vec(),
                },
                |ch, req| async move { CryptoClient::new(ch).generate_mac(req).await },
            )
            .await?;
        Ok(Mac {
            mac: r.mac,
            key_id: r.key_id,
            key_version: r.key_version,
        })
    }

    /// Checks a MAC in constant time on the server.
    ///
    /// # Errors
    /// [`KmsError`] for a refused call; a wrong MAC is `Ok` with `valid: false`.
    pub async fn verify_mac(
        &self,
        key: &str,
        data: &[u8],
        mac: &[u8],
    ) -> Result<Verified, KmsError> {
        let r = self
            .call(
                || v1::VerifyMacRequest {
                    key: key.to_owned(),
                    data: data.to_vec(),
                    mac: mac.to_vec(),
                    key_version: None,
                },
                |ch, req| async move { CryptoClient::new(ch).verify_mac(req).await },
            )
            .await?;
        Ok(Verified {
            valid: r.valid,
            key_id: r.key_id,
            key_version: r.key_version,
            key_compromised: false,
        })
    }

    /// `length` bytes from the KMS's CSPRNG, wiped when dropped.
    ///
    /// # Errors
    /// [`KmsError`]: INVALID_ARGUMENT above the server's limit.
    pub async fn generate_random(&self, length: u32) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let mut r = self
            .call(
                || v1::GenerateRandomRequest { length },
                |ch, req| async move { CryptoClient::new(ch).generate_random(req).await },
            )
            .await?;
        Ok(Zeroizing::new(std::mem::take(&mut r.random)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_id_is_read_from_the_message() {
        let e = KmsError::from_status(
            &Status::invalid_argument("decryption failed (request 6f1c2a-12)"),
            1,
        );
        assert_eq!(e.request_id(), Some("6f1c2a-12"));
        assert_eq!(e.code(), Code::InvalidArgument);
        let none = KmsError::from_status(&Status::unavailable("connection refused"), 4);
        assert_eq!(none.request_id(), None);
        assert_eq!(none.attempts(), 4);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let r = Retry {
            attempts: 10,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        };
        for (retry, base) in [(0, 100), (1, 200), (2, 400), (3, 400), (30, 400)] {
            let w = r.backoff(retry).as_millis();
            assert!(
                (base * 3 / 4..=base * 5 / 4).contains(&w),
                "retry {retry}: {w} ms"
            );
        }
    }

    #[test]
    fn secrets_print_as_lengths() {
        let d = Decrypted {
            plaintext: Zeroizing::new(b"top secret".to_vec()),
            key_id: "k".into(),
            key_version: 1,
            key_compromised: false,
        };
        assert!(!format!("{d:?}").contains("top secret"));
        assert!(format!("{d:?}").contains("10 bytes"));
        let k = DataKey {
            plaintext: Zeroizing::new(vec![0x41; 16]),
            ciphertext: vec![1, 2],
            key_id: "k".into(),
            key_version: 1,
        };
        assert!(!format!("{k:?}").contains("65"), "{k:?}");
    }
}
