//! Ciphertext blob v1: what `Encrypt` returns and `Decrypt` takes.
//!
//! ```text
//! offset  len  field
//!      0    2  magic "KM"
//!      2    1  format version (1)
//!      3    1  algorithm code (1 = sm4-gcm, 2 = aes-256-gcm)
//!      4   16  key id (UUID)
//!     20    4  key version (big-endian, ≥ 1)
//!     24   12  nonce (random)
//!     36    …  ciphertext ‖ 16-byte tag
//! ```
//!
//! The 36 header bytes and the caller's encryption context are both bound as AAD
//! (`AAD = header ‖ canonical(context)`), so a swapped header field or a different context fails
//! to decrypt. Decrypt needs no key id from the caller: the header names the key. The parser
//! rejects every malformed input with an error and never panics.

use std::collections::BTreeMap;
use std::fmt;

use uuid::Uuid;

use crate::alg::KeySpec;
use crate::crypto::{self, AEAD_NONCE_LEN, AEAD_TAG_LEN};
use crate::error::{Error, InvalidInput};
use crate::policy::{Approved, Open, Protect};
use crate::secret::{KeyMaterial, SecretBytes};

pub const MAGIC: [u8; 2] = *b"KM";
pub const FORMAT_V1: u8 = 1;
pub const HEADER_LEN: usize = 36;
/// The smallest valid blob: a header and a tag around an empty plaintext.
pub const MIN_LEN: usize = HEADER_LEN + AEAD_TAG_LEN;

/// The caller's encryption context: string pairs bound to the ciphertext as AAD. Its `Debug`
/// shows only the number of entries, since values may be personal data.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    #[must_use]
    pub fn new(pairs: BTreeMap<String, String>) -> Self {
        Self(pairs)
    }

    #[must_use]
    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Unambiguous encoding: count, then each pair as length-prefixed key and value, in key order.
    #[must_use]
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            4 + self
                .0
                .iter()
                .map(|(k, v)| 8 + k.len() + v.len())
                .sum::<usize>(),
        );
        push_len(&mut out, self.0.len());
        for (k, v) in &self.0 {
            push_len(&mut out, k.len());
            out.extend_from_slice(k.as_bytes());
            push_len(&mut out, v.len());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // Contexts are bounded far below 4 GiB by the request limits; saturate rather than wrap.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

impl fmt::Debug for EncryptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionContext({} entries)", self.0.len())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for EncryptionContext {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// The parsed, public part of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub spec: KeySpec,
    pub key_id: Uuid,
    pub key_version: u32,
    pub nonce: [u8; AEAD_NONCE_LEN],
}

impl Header {
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC);
        h[2] = FORMAT_V1;
        h[3] = self.spec.code();
        h[4..20].copy_from_slice(self.key_id.as_bytes());
        h[20..24].copy_from_slice(&self.key_version.to_be_bytes());
        h[24..36].copy_from_slice(&self.nonce);
        h
    }
}

/// A parsed blob borrowing the caller's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Envelope<'a> {
    pub header: Header,
    header_bytes: &'a [u8],
    body: &'a [u8],
}

fn bad(problem: &'static str) -> Error {
    InvalidInput::new("ciphertext", problem).into()
}

/// Parses a blob. Every malformed input is an `InvalidArgument` error saying what is wrong.
pub fn parse(blob: &[u8]) -> Result<Envelope<'_>, Error> {
    if blob.len() < MIN_LEN {
        return Err(bad("too short to be a KMS ciphertext"));
    }
    let (header_bytes, body) = blob.split_at(HEADER_LEN);
    if header_bytes[0..2] != MAGIC {
        return Err(bad("not a KMS ciphertext (bad magic)"));
    }
    if header_bytes[2] != FORMAT_V1 {
        return Err(bad("unsupported ciphertext format version"));
    }
    let spec = match KeySpec::from_code(header_bytes[3]) {
        Some(s @ (KeySpec::Sm4Gcm | KeySpec::Aes256Gcm)) => s,
        Some(
            KeySpec::Sm2
            | KeySpec::Rsa2048
            | KeySpec::Rsa3072
            | KeySpec::Rsa4096
            | KeySpec::HmacSm3
            | KeySpec::HmacSha256
            | KeySpec::HmacSha384
            | KeySpec::HmacSha512
            | KeySpec::Sm4Ff1
            | KeySpec::Aes256Ff1,
        )
        | None => return Err(bad("unknown algorithm code")),
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&header_bytes[4..20]);
    let mut ver = [0u8; 4];
    ver.copy_from_slice(&header_bytes[20..24]);
    let key_version = u32::from_be_bytes(ver);
    if key_version == 0 {
        return Err(bad("key version 0 does not exist"));
    }
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    nonce.copy_from_slice(&header_bytes[24..36]);
    Ok(Envelope {
        header: Header {
            spec,
            key_id: Uuid::from_bytes(id),
            key_version,
            nonce,
        },
        header_bytes,
        body,
    })
}

fn aad(header: &[u8], context: &EncryptionContext) -> Vec<u8> {
    let ctx = context.canonical_bytes();
    let mut aad = Vec::with_capacity(header.len() + ctx.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(&ctx);
    aad
}

/// Encrypts `plaintext` under `key` (version `key_version` of key `key_id`) into a new blob.
/// The plaintext is copied once, into the output buffer, and encrypted there in place.
pub fn seal(
    approved: &Approved<Protect>,
    key: &KeyMaterial,
    key_id: Uuid,
    key_version: u32,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    if key_version == 0 {
        return Err(InvalidInput::new("key version", "versions start at 1").into());
    }
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    crypto::rng::fill(&mut nonce)?;
    let header = Header {
        spec: key.spec(),
        key_id,
        key_version,
        nonce,
    }
    .encode();
    let mut body = Vec::with_capacity(plaintext.len() + AEAD_TAG_LEN);
    body.extend_from_slice(plaintext);
    crypto::seal_in_place(approved, key, &nonce, &aad(&header, context), &mut body)?;
    let mut blob = Vec::with_capacity(HEADER_LEN + body.len());
    blob.extend_from_slice(&header);
    blob.append(&mut body);
    Ok(blob)
}

/// Decrypts a parsed blob. The key must be the one the header names (the caller looks it up).
pub fn open(
    approved: &Approved<Open>,
    key: &KeyMaterial,
    envelope: &Envelope<'_>,
    context: &EncryptionContext,
) -> Result<SecretBytes, Error> {
    if envelope.header.spec != key.spec() {
        return Err(crate::CryptoError::DecryptionFailed.into());
    }
    let mut buf = SecretBytes::copy_from_slice(envelope.body);
    crypto::open_in_place(
        approved,
        key,
        &envelope.header.nonce,
        &aad(envelope.header_bytes, context),
        buf.expose_secret_mut(),
    )?;
    Ok(buf)
}
