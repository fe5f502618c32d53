//! Envelope encryption of data of any size, streamed in constant memory (issue 21 item 2).
//!
//! One message = one data key from the KMS (`GenerateDataKey`), kept in the header only as the
//! KMS's ciphertext of it, then the payload in authenticated frames. The byte layout is in
//! `docs/ENVELOPE.md`; `examples/envelope/decrypt.py` is an independent reference decryptor.
//!
//! What the frames guarantee, each by construction:
//! - **altered data** fails its frame's tag;
//! - **reordered or dropped frames** fail: the frame index is in the nonce;
//! - **truncation** fails: only the last frame is marked final (in the nonce), and a stream
//!   that ends without it is refused;
//! - **frames swapped between messages** fail: each message has its own frame key, derived
//!   from its data key and a random 32-byte salt;
//! - **a changed header or context** fails every frame: the header's digest is each frame's AAD
//!   (and the KMS binds the context to the wrapped data key as well).
//!
//! Opening writes each frame's plaintext once that frame is authenticated, so a consumer sees
//! verified bytes only — but it must not act on the output before [`open`] returns `Ok`, which
//! is when truncation is ruled out. (The CLI writes to a temporary file and renames it.)

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use aes_gcm::aead::array::Array;
use aes_gcm::{AeadInOut, Aes256Gcm, AesGcm, KeyInit};
use sha2::Digest as _;
use sm4::Sm4;
use sm4::cipher::consts::U12;
use zeroize::Zeroizing;

type Sm4Gcm = AesGcm<Sm4, U12>;

pub const MAGIC: [u8; 4] = *b"KMSF";
pub const VERSION: u8 = 1;
/// Plaintext bytes per frame unless told otherwise: 64 KiB.
pub const DEFAULT_FRAME_LEN: u32 = 64 * 1024;
pub const MIN_FRAME_LEN: u32 = 16;
pub const MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;
pub const SALT_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
/// The largest encryption context a header may carry.
pub const MAX_CONTEXT_LEN: usize = 64 * 1024;
const INFO: &[u8] = b"kms-stream-v1 frame key";

/// The frame AEAD, which follows the data key's spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sm4Gcm,
    Aes256Gcm,
}

impl Algorithm {
    const fn code(self) -> u8 {
        match self {
            Self::Sm4Gcm => 1,
            Self::Aes256Gcm => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Sm4Gcm),
            2 => Some(Self::Aes256Gcm),
            _ => None,
        }
    }

    /// The data key's length: 16 bytes (SM4) or 32 (AES-256).
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            Self::Sm4Gcm => 16,
            Self::Aes256Gcm => 32,
        }
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sm4Gcm => "SM4-GCM",
            Self::Aes256Gcm => "AES-256-GCM",
        }
    }

    /// The header digest: SM3 for SM4 messages, SHA-256 for AES messages (GM stays GM).
    fn digest(self, bytes: &[u8]) -> [u8; 32] {
        match self {
            Self::Sm4Gcm => sm3::Sm3::digest(bytes).into(),
            Self::Aes256Gcm => sha2::Sha256::digest(bytes).into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("not a KMS streaming envelope (it does not start with KMSF)")]
    NotAnEnvelope,
    #[error("envelope version {0} is not supported (this reader knows version 1)")]
    Version(u8),
    #[error("malformed envelope header: {0}")]
    Header(&'static str),
    #[error("the data key is {got} bytes; {algorithm} needs {want}")]
    KeyLength {
        algorithm: &'static str,
        got: usize,
        want: usize,
    },
    #[error(
        "frame {index} failed authentication: the data was cut short, altered, reordered or taken from \
         another message, or the data key or context is not this message's"
    )]
    Frame { index: u32 },
    #[error("the envelope is truncated: it ends after {frames} frame(s) without its final frame")]
    Truncated { frames: u32 },
    #[error("the message is too long for one envelope (2^32 frames)")]
    TooLong,
    #[error("the frame length must be {MIN_FRAME_LEN} to {MAX_FRAME_LEN} bytes")]
    FrameLen,
    #[error("the encryption context is larger than {MAX_CONTEXT_LEN} bytes")]
    ContextTooLarge,
    #[error("no randomness available for the salt")]
    Rng,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// An envelope's header: how to get its data key back, and how its frames are cut.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub algorithm: Algorithm,
    pub frame_len: u32,
    /// The data key as the KMS encrypted it: give it to `Decrypt` with [`Header::context`].
    pub wrapped_key: Vec<u8>,
    /// The encryption context the data key was made with.
    pub context: BTreeMap<String, String>,
    salt: [u8; SALT_LEN],
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Context values may be personal data: only their number is shown.
        f.debug_struct("Header")
            .field("algorithm", &self.algorithm)
            .field("frame_len", &self.frame_len)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("context_entries", &self.context.len())
            .finish_non_exhaustive()
    }
}

/// The KMS's canonical context encoding: u32 count, then each pair as u32-length-prefixed key
/// and value, in key order (all big-endian), the same bytes the KMS binds as AAD.
fn canonical_context(context: &BTreeMap<String, String>) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::new();
    let len = |n: usize| u32::try_from(n).map_err(|_| EnvelopeError::ContextTooLarge);
    out.extend_from_slice(&len(context.len())?.to_be_bytes());
    for (k, v) in context {
        out.extend_from_slice(&len(k.len())?.to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&len(v.len())?.to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    if out.len() > MAX_CONTEXT_LEN {
        return Err(EnvelopeError::ContextTooLarge);
    }
    Ok(out)
}

/// A reader over a byte slice for the header's fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        if self.0.len() < n {
            return Err(EnvelopeError::Header("the context is cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<usize, EnvelopeError> {
        let b: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| EnvelopeError::Header("the context is cut short"))?;
        usize::try_from(u32::from_be_bytes(b)).map_err(|_| EnvelopeError::ContextTooLarge)
    }

    fn string(&mut self) -> Result<String, EnvelopeError> {
        let n = self.u32()?;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| EnvelopeError::Header("a context entry is not UTF-8"))
    }
}

fn parse_context(bytes: &[u8]) -> Result<BTreeMap<String, String>, EnvelopeError> {
    let mut f = Fields(bytes);
    let count = f.u32()?;
    let mut out = BTreeMap::new();
    for _ in 0..count {
        let k = f.string()?;
        let v = f.string()?;
        if out
            .keys()
            .next_back()
            .is_some_and(|last: &String| *last >= k)
        {
            return Err(EnvelopeError::Header(
                "context keys are not in canonical order",
            ));
        }
        out.insert(k, v);
    }
    if !f.0.is_empty() {
        return Err(EnvelopeError::Header("bytes follow the context"));
    }
    Ok(out)
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn fill<R: Read>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn read_exact<R: Read>(
    input: &mut R,
    n: usize,
    what: &'static str,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut buf = vec![0u8; n];
    if fill(input, &mut buf)? != n {
        return Err(EnvelopeError::Header(what));
    }
    Ok(buf)
}

impl Header {
    fn new(
        algorithm: Algorithm,
        frame_len: u32,
        wrapped_key: &[u8],
        context: &BTreeMap<String, String>,
    ) -> Result<Self, EnvelopeError> {
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame_len) {
            return Err(EnvelopeError::FrameLen);
        }
        let key_len = u16::try_from(wrapped_key.len())
            .map_err(|_| EnvelopeError::Header("the wrapped data key is over 65535 bytes"))?;
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|_| EnvelopeError::Rng)?;
        let ctx = canonical_context(context)?;
        let ctx_len = u32::try_from(ctx.len()).map_err(|_| EnvelopeError::ContextTooLarge)?;
        let mut bytes = Vec::with_capacity(48 + wrapped_key.len() + ctx.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.push(VERSION);
        bytes.push(algorithm.code());
        bytes.extend_from_slice(&frame_len.to_be_bytes());
        bytes.extend_from_slice(&salt);
        bytes.extend_from_slice(&key_len.to_be_bytes());
        bytes.extend_from_slice(wrapped_key);
        bytes.extend_from_slice(&ctx_len.to_be_bytes());
        bytes.extend_from_slice(&ctx);
        Ok(Self {
            algorithm,
            frame_len,
            wrapped_key: wrapped_key.to_vec(),
            context: context.clone(),
            salt,
            bytes,
        })
    }

    /// Reads and checks a header from the start of an envelope; the frames follow in `input`.
    ///
    /// # Errors
    /// What is wrong with the header, or the read's I/O error.
    pub fn read_from<R: Read>(input: &mut R) -> Result<Self, EnvelopeError> {
        let mut fixed = read_exact(input, MAGIC.len(), "it is cut short")?;
        if fixed[..] != MAGIC {
            return Err(EnvelopeError::NotAnEnvelope);
        }
        fixed.extend(read_exact(
            input,
            1 + 1 + 4 + SALT_LEN + 2,
            "it is cut short",
        )?);
        if fixed[4] != VERSION {
            return Err(EnvelopeError::Version(fixed[4]));
        }
        let algorithm = Algorithm::from_code(fixed[5])
            .ok_or(EnvelopeError::Header("unknown algorithm code"))?;
        let frame_len = u32::from_be_bytes([fixed[6], fixed[7], fixed[8], fixed[9]]);
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame_len) {
            return Err(EnvelopeError::FrameLen);
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&fixed[10..10 + SALT_LEN]);
        let key_len = usize::from(u16::from_be_bytes([fixed[42], fixed[43]]));
        if key_len == 0 {
            return Err(EnvelopeError::Header("the wrapped data key is empty"));
        }
        let wrapped_key = read_exact(input, key_len, "the wrapped data key is cut short")?;
        let ctx_len_bytes = read_exact(input, 4, "it is cut short")?;
        let ctx_len = usize::try_from(u32::from_be_bytes([
            ctx_len_bytes[0],
            ctx_len_bytes[1],
            ctx_len_bytes[2],
            ctx_len_bytes[3],
        ]))
        .map_err(|_| EnvelopeError::ContextTooLarge)?;
        if ctx_len > MAX_CONTEXT_LEN {
            return Err(EnvelopeError::ContextTooLarge);
        }
        let ctx = read_exact(input, ctx_len, "the context is cut short")?;
        let context = parse_context(&ctx)?;
        let mut bytes = fixed;
        bytes.extend_from_slice(&wrapped_key);
        bytes.extend_from_slice(&ctx_len_bytes);
        bytes.extend_from_slice(&ctx);
        Ok(Self {
            algorithm,
            frame_len,
            wrapped_key,
            context,
            salt,
            bytes,
        })
    }
}

/// One message's frame key and AAD.
struct Frames {
    algorithm: Algorithm,
    key: Zeroizing<Vec<u8>>,
    aad: [u8; 32],
}

impl Frames {
    fn new(header: &Header, data_key: &[u8]) -> Result<Self, EnvelopeError> {
        let algorithm = header.algorithm;
        if data_key.len() != algorithm.key_len() {
            return Err(EnvelopeError::KeyLength {
                algorithm: algorithm.name(),
                got: data_key.len(),
                want: algorithm.key_len(),
            });
        }
        let aad = algorithm.digest(&header.bytes);
        let mut info = INFO.to_vec();
        info.extend_from_slice(&aad);
        let mut key = Zeroizing::new(vec![0u8; algorithm.key_len()]);
        let expanded = match algorithm {
            Algorithm::Sm4Gcm => {
                hkdf::Hkdf::<sm3::Sm3>::new(Some(&header.salt), data_key).expand(&info, &mut key)
            }
            Algorithm::Aes256Gcm => hkdf::Hkdf::<sha2::Sha256>::new(Some(&header.salt), data_key)
                .expand(&info, &mut key),
        };
        // 16 or 32 bytes are far below HKDF's limit.
        expanded.map_err(|_| EnvelopeError::Header("frame key derivation failed"))?;
        Ok(Self {
            algorithm,
            key,
            aad,
        })
    }

    /// 7 zero bytes ‖ frame index (u32, big-endian) ‖ 1 on the final frame, else 0.
    fn nonce(index: u32, last: bool) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[7..11].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        n
    }

    fn seal(&self, index: u32, last: bool, buf: &mut Vec<u8>) -> Result<(), EnvelopeError> {
        let nonce = Array::from(Self::nonce(index, last));
        let tag = match self.algorithm {
            Algorithm::Sm4Gcm => Sm4Gcm::new_from_slice(&self.key)
                .map_err(|_| EnvelopeError::Frame { index })?
                .encrypt_inout_detached(&nonce, &self.aad, buf.as_mut_slice().into()),
            Algorithm::Aes256Gcm => Aes256Gcm::new_from_slice(&self.key)
                .map_err(|_| EnvelopeError::Frame { index })?
                .encrypt_inout_detached(&nonce, &self.aad, buf.as_mut_slice().into()),
        }
        .map_err(|_| EnvelopeError::Frame { index })?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    fn open(&self, index: u32, last: bool, buf: &mut Vec<u8>) -> Result<(), EnvelopeError> {
        let frame = EnvelopeError::Frame { index };
        let ct_len = buf.len().checked_sub(TAG_LEN).ok_or(frame)?;
        let (ct, tag) = buf.split_at_mut(ct_len);
        let tag = Array::try_from(&*tag).map_err(|_| EnvelopeError::Frame { index })?;
        let nonce = Array::from(Self::nonce(index, last));
        match self.algorithm {
            Algorithm::Sm4Gcm => Sm4Gcm::new_from_slice(&self.key)
                .map_err(|_| EnvelopeError::Frame { index })?
                .decrypt_inout_detached(&nonce, &self.aad, ct.into(), &tag),
            Algorithm::Aes256Gcm => Aes256Gcm::new_from_slice(&self.key)
                .map_err(|_| EnvelopeError::Frame { index })?
                .decrypt_inout_detached(&nonce, &self.aad, ct.into(), &tag),
        }
        .map_err(|_| EnvelopeError::Frame { index })?;
        buf.truncate(ct_len);
        Ok(())
    }
}

/// Encrypts `input` into `output` as one envelope under `data_key` (the plaintext data key from
/// `GenerateDataKey`, whose `ciphertext` is `wrapped_key`, made with `context`). Memory stays at
/// one frame. Returns the number of plaintext bytes.
///
/// # Errors
/// A bad frame length, data key length or context; the randomness source; I/O.
pub fn seal<R: Read, W: Write>(
    algorithm: Algorithm,
    data_key: &[u8],
    wrapped_key: &[u8],
    context: &BTreeMap<String, String>,
    frame_len: u32,
    mut input: R,
    mut output: W,
) -> Result<u64, EnvelopeError> {
    let header = Header::new(algorithm, frame_len, wrapped_key, context)?;
    let frames = Frames::new(&header, data_key)?;
    output.write_all(&header.bytes)?;
    let frame = usize::try_from(frame_len).map_err(|_| EnvelopeError::FrameLen)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(frame + TAG_LEN));
    let mut total = 0u64;
    let mut index = 0u32;
    loop {
        buf.clear();
        buf.resize(frame, 0);
        let got = fill(&mut input, &mut buf)?;
        buf.truncate(got);
        // A full frame is never the last: a message that is a whole number of frames ends with
        // an empty final frame, so a reader needs no look-ahead.
        let last = got < frame;
        frames.seal(index, last, &mut buf)?;
        output.write_all(&buf)?;
        total += u64::try_from(got).unwrap_or(u64::MAX);
        if last {
            output.flush()?;
            return Ok(total);
        }
        index = index.checked_add(1).ok_or(EnvelopeError::TooLong)?;
    }
}

/// Decrypts the frames after `header` (read with [`Header::read_from`]) from `input` into
/// `output`, with the data key the KMS returned for `header.wrapped_key`. Each frame is
/// written once authenticated; the whole is authentic only when this returns `Ok`.
///
/// # Errors
/// The first frame that fails (bytes appended after the final frame make it fail), a missing
/// final frame, or I/O.
pub fn open<R: Read, W: Write>(
    header: &Header,
    data_key: &[u8],
    mut input: R,
    mut output: W,
) -> Result<u64, EnvelopeError> {
    let frames = Frames::new(header, data_key)?;
    let full = usize::try_from(header.frame_len).map_err(|_| EnvelopeError::FrameLen)? + TAG_LEN;
    let mut buf = Zeroizing::new(Vec::with_capacity(full));
    let mut total = 0u64;
    let mut index = 0u32;
    loop {
        buf.clear();
        buf.resize(full, 0);
        let got = fill(&mut input, &mut buf)?;
        if got < TAG_LEN {
            // A final frame has at least its tag: anything less means it is missing or cut.
            return Err(EnvelopeError::Truncated { frames: index });
        }
        buf.truncate(got);
        let last = got < full;
        frames.open(index, last, &mut buf)?;
        output.write_all(&buf)?;
        total += u64::try_from(buf.len()).unwrap_or(u64::MAX);
        // Only a frame that ends the input is shorter than a full one, so nothing can follow
        // the final frame: bytes appended to it make it fail to authenticate.
        if last {
            output.flush()?;
            return Ok(total);
        }
        index = index.checked_add(1).ok_or(EnvelopeError::TooLong)?;
    }
}
