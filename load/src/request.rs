//! The one request every loop sends, made (with any input the server must make first) before
//! the load starts; the request loops and the progress line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kms_proto::v1::crypto_batch_client::CryptoBatchClient;
use kms_proto::v1::crypto_client::CryptoClient;
use kms_proto::v1::password_shield_client::PasswordShieldClient;
use kms_proto::v1::request_verification_client::RequestVerificationClient;
use kms_proto::v1::tokenization_client::TokenizationClient;
use kms_proto::v1::{
    self, AsymmetricDecryptRequest, DecryptRequest, EncryptRequest, GenerateDataKeyRequest,
    GenerateMacRequest, GetPublicKeyRequest, MessageType, SignRequest, VerifyRequest,
};
use tonic::transport::Channel;

use crate::{Failure, LoadError, MAX_LATENCY_US, Op, Plan};

/// The clients of one request loop, over its connection.
#[derive(Clone)]
pub(crate) struct Clients {
    crypto: CryptoClient<Channel>,
    batch: CryptoBatchClient<Channel>,
    password: PasswordShieldClient<Channel>,
    tokens: TokenizationClient<Channel>,
    requests: RequestVerificationClient<Channel>,
}

impl Clients {
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            crypto: CryptoClient::new(channel.clone()),
            password: PasswordShieldClient::new(channel.clone()),
            requests: RequestVerificationClient::new(channel.clone()),
            // A batch's answer may pass gRPC's usual 4 MiB receive limit (each item's ciphertext
            // is longer than its plaintext).
            batch: CryptoBatchClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024),
            tokens: TokenizationClient::new(channel).max_decoding_message_size(64 * 1024 * 1024),
        }
    }
}

/// The one request every loop sends (cloned per send).
#[derive(Clone)]
pub(crate) enum Request {
    Encrypt(EncryptRequest),
    Decrypt(DecryptRequest, usize),
    DataKey(GenerateDataKeyRequest),
    Sign(SignRequest),
    Verify(VerifyRequest),
    AsymDecrypt(AsymmetricDecryptRequest, usize),
    Mac(GenerateMacRequest),
    /// HashPassword, sealed afresh for each send (a sealed password is good once).
    HashPassword(Box<Sealer>),
    /// Card numbers to tokenise, as many as `--batch` says, in one call.
    Tokenize(v1::TokenizeRequest),
    /// VerifyRequest, signed afresh for each send (a signed request is good once).
    Signed(Box<Signer>),
    /// The same item, many times, through the batch RPC.
    Batch(Batch),
}

/// What `verify-request` needs to sign a request for each send, as a partner would: the MAC
/// key's bytes and the body. Nonces are a random prefix and a counter shared by every loop, so
/// no two sends of a run (or of two runs) repeat one.
#[derive(Clone)]
pub(crate) struct Signer {
    key: String,
    mac_key: Arc<kms_core::SecretBytes>,
    body: Vec<u8>,
    nonce_prefix: Vec<u8>,
    counter: Arc<AtomicU64>,
}

impl Signer {
    fn request(&self) -> Result<v1::SignedRequest, Failure> {
        use hmac::{Hmac, KeyInit, Mac};
        use kms_core::signed_request::{RequestBody, RequestParts, RequestScheme, canonical};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut nonce = self.nonce_prefix.clone();
        nonce.extend_from_slice(&self.counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let (method, path) = ("POST", "/bench/verify-request");
        let parts = RequestParts {
            method,
            path,
            timestamp: now,
            nonce: &nonce,
            body: RequestBody::Bytes(&self.body),
        };
        let text = canonical(RequestScheme::HmacSm3, &parts)
            .map_err(|m| Failure::Sealing(m.to_string()))?;
        let mut mac = <Hmac<sm3::Sm3> as KeyInit>::new_from_slice(self.mac_key.expose_secret())
            .map_err(|_| Failure::Sealing("the partner key is not an HMAC key".to_owned()))?;
        mac.update(&text);
        Ok(v1::SignedRequest {
            key: self.key.clone(),
            scheme: RequestScheme::HmacSm3.name().to_owned(),
            signature: mac.finalize().into_bytes().to_vec(),
            timestamp: now,
            nonce,
            method: method.to_owned(),
            path: path.to_owned(),
            body: self.body.clone(),
            body_digest: Vec::new(),
        })
    }
}

/// What `hash-password` needs to seal a password for each request, as a mobile app would: the
/// password key's public key, and the keys to name.
#[derive(Clone)]
pub(crate) struct Sealer {
    public: kms_core::crypto::PublicKey,
    to_key: kms_core::policy::Approved,
    password_key: String,
    pepper_key: String,
    password: String,
}

impl Sealer {
    /// A request with a new seal: the current time and a fresh random nonce.
    fn request(&self) -> Result<v1::HashPasswordRequest, Failure> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sealing = |e: &dyn std::fmt::Display| Failure::Sealing(e.to_string());
        let nonce = kms_core::crypto::rng::random_public(16).map_err(|e| sealing(&e))?;
        let plain = kms_core::crypto::password_hash::encode_sealed(&self.password, now, &nonce)
            .map_err(|e| sealing(&e))?;
        let sealed = kms_core::crypto::encrypt_to_public_key(
            &self.to_key,
            &self.public,
            plain.expose_secret(),
        )
        .map_err(|e| sealing(&e))?;
        Ok(v1::HashPasswordRequest {
            password_key: self.password_key.clone(),
            pepper_key: self.pepper_key.clone(),
            sealed_password: sealed,
            identifiers: Vec::new(),
        })
    }
}

/// A batch call of copies of one item (`--batch`).
#[derive(Clone)]
pub(crate) enum Batch {
    Encrypt(v1::BatchEncryptRequest),
    Decrypt(v1::BatchDecryptRequest, usize),
    DataKey(v1::BatchGenerateDataKeyRequest),
    Sign(v1::BatchSignRequest),
    Verify(v1::BatchVerifyRequest),
    Mac(v1::BatchGenerateMacRequest),
}

/// The items' results: each must be a response (checked by `ok`), and there must be one per
/// item.
macro_rules! check_items {
    ($results:expr, $want:expr, $oneof:ident, |$ok:ident| $check:expr) => {{
        let results = $results;
        if results.len() != $want {
            return Err(Failure::BatchLength {
                got: results.len(),
                want: $want,
            });
        }
        for r in results {
            match r.result {
                Some(v1::$oneof::Result::Ok($ok)) => $check?,
                Some(v1::$oneof::Result::Error(e)) => {
                    return Err(Failure::Item(tonic::Code::from_i32(e.code), e.message));
                }
                None => return Err(Failure::BatchLength { got: 0, want: 1 }),
            }
        }
        Ok(())
    }};
}

impl Batch {
    /// A batch of `n` copies of `single` (not [`Request::AsymDecrypt`], which has no batch
    /// form, nor a batch).
    fn of(single: Request, n: usize) -> Option<Self> {
        Some(match single {
            Request::Encrypt(r) => Self::Encrypt(v1::BatchEncryptRequest { items: vec![r; n] }),
            Request::Decrypt(r, len) => {
                Self::Decrypt(v1::BatchDecryptRequest { items: vec![r; n] }, len)
            }
            Request::DataKey(r) => {
                Self::DataKey(v1::BatchGenerateDataKeyRequest { items: vec![r; n] })
            }
            Request::Sign(r) => Self::Sign(v1::BatchSignRequest { items: vec![r; n] }),
            Request::Verify(r) => Self::Verify(v1::BatchVerifyRequest { items: vec![r; n] }),
            Request::Mac(r) => Self::Mac(v1::BatchGenerateMacRequest { items: vec![r; n] }),
            Request::AsymDecrypt(..)
            | Request::HashPassword(_)
            | Request::Tokenize(_)
            | Request::Signed(_)
            | Request::Batch(_) => return None,
        })
    }

    async fn send(self, client: &mut CryptoBatchClient<Channel>) -> Result<(), Failure> {
        let ok = |()| Ok::<(), Failure>(());
        match self {
            Self::Encrypt(r) => {
                let n = r.items.len();
                let results = client.batch_encrypt(r).await?.into_inner().results;
                check_items!(results, n, batch_encrypt_result, |_r| ok(()))
            }
            Self::Decrypt(r, len) => {
                let n = r.items.len();
                let results = client.batch_decrypt(r).await?.into_inner().results;
                check_items!(results, n, batch_decrypt_result, |r| check_len(
                    r.plaintext.len(),
                    len
                ))
            }
            Self::DataKey(r) => {
                let n = r.items.len();
                let results = client
                    .batch_generate_data_key(r)
                    .await?
                    .into_inner()
                    .results;
                check_items!(results, n, batch_generate_data_key_result, |_r| ok(()))
            }
            Self::Sign(r) => {
                let n = r.items.len();
                let results = client.batch_sign(r).await?.into_inner().results;
                check_items!(results, n, batch_sign_result, |_r| ok(()))
            }
            Self::Verify(r) => {
                let n = r.items.len();
                let results = client.batch_verify(r).await?.into_inner().results;
                check_items!(results, n, batch_verify_result, |r| if r.valid {
                    Ok(())
                } else {
                    Err(Failure::SignatureInvalid)
                })
            }
            Self::Mac(r) => {
                let n = r.items.len();
                let results = client.batch_generate_mac(r).await?.into_inner().results;
                check_items!(results, n, batch_generate_mac_result, |_r| ok(()))
            }
        }
    }
}

impl Request {
    /// Sends it and checks the answer: a signature found invalid, or a plaintext of the wrong
    /// length, is a failure too; so is any failed item of a batch.
    pub(crate) async fn send(self, clients: &mut Clients) -> Result<(), Failure> {
        let client = &mut clients.crypto;
        match self {
            Self::Encrypt(r) => {
                client.encrypt(r).await?;
            }
            Self::Decrypt(r, len) => {
                let got = client.decrypt(r).await?.into_inner().plaintext.len();
                check_len(got, len)?;
            }
            Self::DataKey(r) => {
                client.generate_data_key(r).await?;
            }
            Self::Sign(r) => {
                client.sign(r).await?;
            }
            Self::Verify(r) => {
                if !client.verify(r).await?.into_inner().valid {
                    return Err(Failure::SignatureInvalid);
                }
            }
            Self::AsymDecrypt(r, len) => {
                let got = client
                    .asymmetric_decrypt(r)
                    .await?
                    .into_inner()
                    .plaintext
                    .len();
                check_len(got, len)?;
            }
            Self::Mac(r) => {
                client.generate_mac(r).await?;
            }
            Self::HashPassword(sealer) => {
                clients.password.hash_password(sealer.request()?).await?;
            }
            Self::Tokenize(r) => {
                let n = r.values.len();
                let results = clients.tokens.tokenize(r).await?.into_inner().results;
                return check_items!(results, n, token_result, |_t| Ok::<(), Failure>(()));
            }
            Self::Signed(signer) => {
                let out = clients
                    .requests
                    .verify_request(signer.request()?)
                    .await?
                    .into_inner();
                if out.verdict() != v1::RequestVerdict::Ok {
                    return Err(Failure::Verdict(format!(
                        "{:?} {}",
                        out.verdict(),
                        out.reason
                    )));
                }
            }
            Self::Batch(b) => return b.send(&mut clients.batch).await,
        }
        Ok(())
    }
}

const fn check_len(got: usize, want: usize) -> Result<(), Failure> {
    if got == want {
        Ok(())
    } else {
        Err(Failure::PlaintextLength { got, want })
    }
}

/// `size` bytes of a fixed pattern (the content does not matter to any operation measured).
fn payload(size: u32) -> Vec<u8> {
    (0..size)
        .map(|i| (i.wrapping_mul(31).wrapping_add(7) & 0xff) as u8)
        .collect()
}

fn probe(step: &'static str) -> impl FnOnce(tonic::Status) -> LoadError {
    move |status| LoadError::Probe {
        step,
        failure: Failure::Status(status),
    }
}

/// Makes the request for `plan.op`, with the inputs that need the server made first: with
/// `plan.batch`, a batch of that many copies of the single request.
pub(crate) async fn prepare(plan: &Plan, clients: &mut Clients) -> Result<Request, LoadError> {
    if plan.op == Op::HashPassword {
        return prepare_hash_password(plan, &mut clients.crypto).await;
    }
    if plan.op == Op::VerifyRequest {
        // `Plan::new` refuses verify-request without its key.
        let preparing = |why: String| LoadError::Probe {
            step: "preparing the signed requests",
            failure: Failure::Sealing(why),
        };
        let mac_key = plan
            .partner_key
            .clone()
            .ok_or_else(|| preparing("no --partner-key".to_owned()))?;
        let nonce_prefix =
            kms_core::crypto::rng::random_public(8).map_err(|e| preparing(e.to_string()))?;
        return Ok(Request::Signed(Box::new(Signer {
            key: plan.key.clone(),
            mac_key,
            body: payload(plan.size),
            nonce_prefix,
            counter: Arc::new(AtomicU64::new(0)),
        })));
    }
    let single = prepare_single(plan, &mut clients.crypto).await?;
    match plan.batch {
        // Tokenize carries its values in one call already.
        _ if plan.op == Op::Tokenize => Ok(single),
        None => Ok(single),
        // `Plan::new` refuses a batch of an operation that has no batch form already.
        Some(n) => Batch::of(single, n as usize)
            .map(Request::Batch)
            .ok_or(LoadError::NoBatchForm(plan.op.name())),
    }
}

/// `hash-password`: the password key's public key, fetched once, seals every request.
async fn prepare_hash_password(
    plan: &Plan,
    client: &mut CryptoClient<Channel>,
) -> Result<Request, LoadError> {
    let public = client
        .get_public_key(GetPublicKeyRequest {
            key: plan.key.clone(),
            key_version: None,
        })
        .await
        .map_err(probe(
            "fetching the password key's public key (GetPublicKey)",
        ))?
        .into_inner();
    // Any spec a password key can have; the server's policy decides what it opens.
    let policy = kms_core::policy::Policy::from_config(kms_core::policy::PolicyMode::Standard);
    let public = kms_core::crypto::PublicKey::from_spki_der(policy, &public.public_key_der)
        .map_err(|e| LoadError::PublicKey(e.to_string()))?;
    let to_key = policy
        .approve(kms_core::alg::Purpose::Password, public.spec())
        .map_err(|e| LoadError::PublicKey(e.to_string()))?;
    // Letters and digits, as the default strength rules want.
    let password: String = "Bench-passw0rd"
        .chars()
        .cycle()
        .take(plan.size as usize)
        .collect();
    Ok(Request::HashPassword(Box::new(Sealer {
        public,
        to_key,
        password_key: plan.key.clone(),
        pepper_key: plan.pepper.clone().unwrap_or_default(),
        password,
    })))
}

/// The single request for `plan.op`.
async fn prepare_single(
    plan: &Plan,
    client: &mut CryptoClient<Channel>,
) -> Result<Request, LoadError> {
    let key = plan.key.clone();
    let data = payload(plan.size);
    let len = data.len();
    let sign = SignRequest {
        key: key.clone(),
        message: data.clone(),
        message_type: MessageType::Raw.into(),
        sm2_id: String::new(),
        rsa_scheme: String::new(),
        hash: String::new(),
    };
    Ok(match plan.op {
        Op::Encrypt => Request::Encrypt(EncryptRequest {
            key,
            plaintext: data,
            context: Default::default(),
        }),
        Op::Decrypt => {
            let made = client
                .encrypt(EncryptRequest {
                    key,
                    plaintext: data,
                    context: Default::default(),
                })
                .await
                .map_err(probe("making the ciphertext to decrypt (Encrypt)"))?
                .into_inner();
            Request::Decrypt(
                DecryptRequest {
                    ciphertext: made.ciphertext,
                    context: Default::default(),
                },
                len,
            )
        }
        Op::Datakey => Request::DataKey(GenerateDataKeyRequest {
            key,
            key_spec: if plan.size == 32 { "aes-256" } else { "sm4" }.to_owned(),
            context: Default::default(),
            wrap_to_public_key: Vec::new(),
        }),
        Op::Sign => Request::Sign(sign),
        Op::Verify => {
            let signature = client
                .sign(sign.clone())
                .await
                .map_err(probe("making the signature to verify (Sign)"))?
                .into_inner()
                .signature;
            Request::Verify(VerifyRequest {
                key: sign.key,
                message: sign.message,
                message_type: sign.message_type,
                sm2_id: sign.sm2_id,
                rsa_scheme: sign.rsa_scheme,
                hash: sign.hash,
                signature,
                key_version: None,
            })
        }
        Op::AsymDecrypt => {
            let public = client
                .get_public_key(GetPublicKeyRequest {
                    key: key.clone(),
                    key_version: None,
                })
                .await
                .map_err(probe("fetching the public key (GetPublicKey)"))?
                .into_inner();
            // The load tool only encrypts test bytes to the server's own key: any spec the
            // standard policy allows is fine here.
            let policy =
                kms_core::policy::Policy::from_config(kms_core::policy::PolicyMode::Standard);
            let public = kms_core::crypto::PublicKey::from_spki_der(policy, &public.public_key_der)
                .map_err(|e| LoadError::PublicKey(e.to_string()))?;
            let to_key = policy
                .approve(kms_core::alg::Purpose::AsymmetricDecrypt, public.spec())
                .map_err(|e| LoadError::PublicKey(e.to_string()))?;
            let ciphertext = kms_core::crypto::encrypt_to_public_key(&to_key, &public, &data)
                .map_err(|e| LoadError::PayloadTooLong {
                    len,
                    reason: e.to_string(),
                })?;
            Request::AsymDecrypt(
                AsymmetricDecryptRequest {
                    key,
                    ciphertext,
                    key_version: None,
                },
                len,
            )
        }
        Op::Mac => Request::Mac(GenerateMacRequest { key, data }),
        // Made by `prepare_hash_password` and `prepare`.
        Op::HashPassword | Op::VerifyRequest => {
            return Err(LoadError::NoBatchForm(plan.op.name()));
        }
        Op::Tokenize => Request::Tokenize(v1::TokenizeRequest {
            key,
            format: "pan".to_owned(),
            context: Default::default(),
            values: (0..plan.batch.unwrap_or(1)).map(card_number).collect(),
        }),
    })
}

/// The `i`-th of a run of distinct 16-digit card numbers that pass the Luhn check (so each
/// value walks its own FF1 cycle, as real card numbers do).
fn card_number(i: u32) -> String {
    let body: Vec<u32> = format!("622202{:09}", u64::from(i) * 7_919 % 1_000_000_000)
        .bytes()
        .map(|b| u32::from(b - b'0'))
        .collect();
    // The check digit: the Luhn sum of the body with doubling from its last digit.
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            if k % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    body.iter()
        .chain(std::iter::once(&check))
        .map(|d| char::from_digit(*d, 10).unwrap_or('0'))
        .collect()
}

/// What one request loop measured inside the window.
pub(crate) struct LoopResult {
    pub(crate) latency: Histogram<u64>,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("constant bounds the crate accepts: low ≥ 1, high ≥ 2 × low, 3 digits")
}

/// The measured window, shared by every loop.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

/// One request loop. Unpaced, it sends again as soon as it has its answer. Paced, it sends on a
/// fixed schedule (`offset`, then every `period`) and measures each latency from the scheduled
/// time: a server that stalls is charged for the requests it delayed (no coordinated omission).
pub(crate) async fn request_loop(
    mut client: Clients,
    request: Arc<Request>,
    window: Window,
    done: Arc<AtomicU64>,
    pacing: Option<(Duration, Duration)>,
) -> LoopResult {
    let mut result = LoopResult {
        latency: histogram(),
        errors: 0,
        first_error: None,
    };
    let mut next = pacing.map(|(offset, _)| Instant::now() + offset);
    while Instant::now() < window.end {
        let message = Request::clone(&request);
        let sent = match (&mut next, pacing) {
            (Some(at), Some((_, period))) => {
                let scheduled = *at;
                tokio::time::sleep_until(tokio::time::Instant::from_std(scheduled)).await;
                *at = scheduled + period;
                scheduled
            }
            (None, _) | (Some(_), None) => Instant::now(),
        };
        let outcome = message.send(&mut client).await;
        let answered = Instant::now();
        done.fetch_add(1, Ordering::Relaxed);
        let counts = answered >= window.start && answered < window.end;
        match outcome {
            Ok(()) if counts => {
                let us =
                    u64::try_from(answered.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
                result.latency.saturating_record(us.max(1));
            }
            Ok(()) => {}
            Err(e) => {
                if counts {
                    result.errors += 1;
                    result.first_error.get_or_insert_with(|| e.to_string());
                }
                // A server that is down fails at once: do not spin.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    result
}

/// A line on stderr each second: the phase, requests so far, and the rate over the last second.
pub(crate) async fn show_progress(done: Arc<AtomicU64>, started: Instant, window: Window) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(started + Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    let mut last = 0;
    loop {
        let now = tick.tick().await.into_std();
        let total = done.load(Ordering::Relaxed);
        // The phase of the second that just ended.
        let phase = if now <= window.start {
            "warmup"
        } else {
            "measure"
        };
        let elapsed = now.duration_since(started).as_secs();
        eprintln!(
            "bench: {elapsed:>4}s  {phase:<7}  {total:>10} requests  {:>9}/s",
            total - last
        );
        last = total;
    }
}
