//! The password shield's primitives (issue 22 item 2): the sealed-password structure a client
//! encrypts to a password key, the strength rules, the pepper, argon2id and PBKDF2-HMAC-SM3, and
//! the stored-hash string. `kms/password.rs` puts them together; `docs/FORMATS.md` describes
//! both formats for the people who write clients and verifiers.
//!
//! # The sealed password
//!
//! What a client (a mobile app) encrypts to the password key's public key, SM2 (GM/T 0009 DER,
//! C1C3C2) or RSA-OAEP-SHA-256, length-prefixed so that no field can be read two ways:
//!
//! ```text
//! "KPW1"                     4 bytes: magic and version
//! timestamp                  8 bytes: Unix seconds, unsigned big-endian
//! nonce length               1 byte:  16 to 32
//! nonce                      that many random bytes
//! password length            2 bytes: 1 to 256, unsigned big-endian
//! password                   that many bytes of UTF-8
//! ```
//!
//! Nothing may follow. At most 303 bytes, which fits RSA-3072's OAEP-SHA-256 limit (318).
//!
//! # The stored hash
//!
//! A prefix naming the pepper, then a standard PHC string (salt and hash in B64: the standard
//! alphabet without padding):
//!
//! ```text
//! $kms-pepper$k=<pepper key id>,v=<pepper key version>$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>
//! $kms-pepper$k=<pepper key id>,v=<pepper key version>$pbkdf2-sm3$i=<iterations>,l=<hash bytes>$<salt>$<hash>
//! ```
//!
//! The password the inner string hashes is the 32-byte HMAC-SM3 of the UTF-8 password under
//! that pepper key version. So the part after the prefix is what any argon2 library verifies
//! (and PBKDF2 with HMAC-SM3 reproduces), given that HMAC — which only the KMS can compute.

use core::fmt;
use core::ops::Range;

use base64ct::{Base64Unpadded, Encoding};
use zeroize::Zeroizing;

use super::mac::mac_raw;
use crate::alg::{DigestAlg, KeySpec, PasswordHashAlg, Purpose};
use crate::error::{CryptoError, InvalidInput};
use crate::policy::{Approved, ApprovedPasswordHash};
use crate::secret::{KeyMaterial, SecretBytes};

/// The sealed structure's magic and version.
pub const SEALED_MAGIC: &[u8; 4] = b"KPW1";
/// Nonce lengths the sealed structure allows (128 to 256 bits).
pub const NONCE_LEN: core::ops::RangeInclusive<usize> = 16..=32;
/// The longest password, in UTF-8 bytes (NIST SP 800-63B asks for at least 64 characters).
pub const PASSWORD_MAX_BYTES: usize = 256;
/// Fixed part of the sealed structure: magic, timestamp, nonce length, password length.
const SEALED_FIXED: usize = 4 + 8 + 1 + 2;
/// The longest sealed structure.
pub const SEALED_MAX: usize = SEALED_FIXED + 32 + PASSWORD_MAX_BYTES;

/// Salt and hash lengths of new hashes.
pub const SALT_LEN: usize = 16;
pub const HASH_LEN: usize = 32;

/// The prefix of a stored hash.
pub const PEPPER_PREFIX: &str = "$kms-pepper$";

/// The longest stored-hash string accepted (a real one is under 160 characters).
pub const STORED_MAX_LEN: usize = 512;

/// The most expensive cost a stored hash may ask for. A stored hash comes from the caller, so
/// without a bound one request could hold a gigabyte or a CPU for minutes; these are several
/// times the defaults.
pub const MAX_ARGON2_M_KIB: u32 = 256 * 1024;
pub const MAX_ARGON2_T: u32 = 16;
pub const MAX_ARGON2_P: u32 = 8;
pub const MAX_PBKDF2_ITERATIONS: u32 = 2_000_000;

/// A sealed password opened inside the KMS: the decrypted structure in its zeroizing buffer,
/// with the positions of its fields. It is not `Clone` or `Serialize`, and its `Debug` shows
/// lengths only:
///
/// ```compile_fail
/// fn needs_clone<T: Clone>() {}
/// needs_clone::<kms_core::crypto::password_hash::UnsealedPassword>();
/// ```
///
/// ```compile_fail
/// # use kms_core::crypto::password_hash::parse_sealed;
/// let p = parse_sealed(kms_core::SecretBytes::from_vec(Vec::new())).unwrap();
/// let _json = serde_json::to_string(&p); // UnsealedPassword is not Serialize
/// ```
pub struct UnsealedPassword {
    plaintext: SecretBytes,
    timestamp: u64,
    nonce: Range<usize>,
    password: Range<usize>,
}

impl UnsealedPassword {
    /// When the client sealed it (Unix seconds, the client's clock).
    #[must_use]
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The client's nonce: not secret, but never recorded in clear either.
    #[must_use]
    pub fn nonce(&self) -> &[u8] {
        self.plaintext
            .expose_secret()
            .get(self.nonce.clone())
            .unwrap_or_default()
    }

    /// The password. Every call site is a place where it is used: keep them few.
    #[must_use]
    pub fn expose_password(&self) -> &str {
        // `parse_sealed` checked that these bytes are UTF-8; were they not, the empty string
        // (refused as too short, and matching no hash) is the safe answer.
        self.plaintext
            .expose_secret()
            .get(self.password.clone())
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

impl fmt::Debug for UnsealedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UnsealedPassword(timestamp = {}, nonce len = {}, password len = {})",
            self.timestamp,
            self.nonce.len(),
            self.password.len()
        )
    }
}

fn sealed_error(problem: &'static str) -> InvalidInput {
    InvalidInput::new("sealed password", problem)
}

/// Reads the sealed structure (module docs) out of a decrypted buffer, which it keeps. The
/// errors say what is wrong, never what the bytes were.
///
/// # Errors
/// [`InvalidInput`] (field `sealed password`) for anything but one exact structure.
pub fn parse_sealed(plaintext: SecretBytes) -> Result<UnsealedPassword, InvalidInput> {
    let b = plaintext.expose_secret();
    if b.len() < SEALED_FIXED || b.get(..4) != Some(SEALED_MAGIC.as_slice()) {
        return Err(sealed_error(
            "does not start with KPW1 (docs/FORMATS.md, the sealed password)",
        ));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(b.get(4..12).ok_or_else(|| sealed_error("is truncated"))?);
    let timestamp = u64::from_be_bytes(ts);
    let nonce_len = usize::from(*b.get(12).ok_or_else(|| sealed_error("is truncated"))?);
    if !NONCE_LEN.contains(&nonce_len) {
        return Err(sealed_error("nonce must be 16 to 32 bytes"));
    }
    let nonce = 13..13 + nonce_len;
    let at = nonce.end;
    let len_bytes = b
        .get(at..at + 2)
        .ok_or_else(|| sealed_error("is truncated"))?;
    let password_len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
    if password_len == 0 || password_len > PASSWORD_MAX_BYTES {
        return Err(sealed_error("password must be 1 to 256 bytes"));
    }
    let password = at + 2..at + 2 + password_len;
    match b.len().cmp(&password.end) {
        core::cmp::Ordering::Less => return Err(sealed_error("is truncated")),
        core::cmp::Ordering::Greater => {
            return Err(sealed_error("has bytes after the password"));
        }
        core::cmp::Ordering::Equal => {}
    }
    if b.get(password.clone())
        .is_none_or(|p| core::str::from_utf8(p).is_err())
    {
        return Err(sealed_error("password is not UTF-8"));
    }
    Ok(UnsealedPassword {
        plaintext,
        timestamp,
        nonce,
        password,
    })
}

/// Builds the sealed structure: what a client encrypts (`kms password seal`, the tests).
///
/// # Errors
/// [`InvalidInput`] when the nonce or password is outside the structure's limits.
pub fn encode_sealed(
    password: &str,
    timestamp: u64,
    nonce: &[u8],
) -> Result<SecretBytes, InvalidInput> {
    if !NONCE_LEN.contains(&nonce.len()) {
        return Err(sealed_error("nonce must be 16 to 32 bytes"));
    }
    let len = u16::try_from(password.len())
        .ok()
        .filter(|l| (1..=PASSWORD_MAX_BYTES).contains(&usize::from(*l)))
        .ok_or_else(|| sealed_error("password must be 1 to 256 bytes"))?;
    let total = SEALED_FIXED + nonce.len() + password.len();
    SecretBytes::from_fn(total, |out| {
        let (magic, rest) = out.split_at_mut(4);
        magic.copy_from_slice(SEALED_MAGIC);
        let (ts, rest) = rest.split_at_mut(8);
        ts.copy_from_slice(&timestamp.to_be_bytes());
        let (n_len, rest) = rest.split_at_mut(1);
        // The range check above keeps it within a byte.
        n_len[0] = u8::try_from(nonce.len()).map_err(|_| sealed_error("nonce is too long"))?;
        let (n, rest) = rest.split_at_mut(nonce.len());
        n.copy_from_slice(nonce);
        let (p_len, p) = rest.split_at_mut(2);
        p_len.copy_from_slice(&len.to_be_bytes());
        p.copy_from_slice(password.as_bytes());
        Ok(())
    })
}

/// The strength rules (server configuration `[password]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrengthRules {
    /// Fewest characters (Unicode scalar values, not bytes).
    pub min_chars: usize,
    /// At least one letter (Unicode alphabetic: Latin, CJK, …).
    pub require_letter: bool,
    /// At least one digit (Unicode numeric, so full-width digits count).
    pub require_digit: bool,
    /// Refuse a password that contains any of the user identifiers the caller gives (a phone
    /// number, a user name), case-insensitively.
    pub refuse_identifiers: bool,
}

impl StrengthRules {
    /// Length ≥ 8, letters and digits, no user identifier.
    pub const DEFAULT: Self = Self {
        min_chars: 8,
        require_letter: true,
        require_digit: true,
        refuse_identifiers: true,
    };
}

/// Which strength rule a password breaks. Never says more about the password than that.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Weakness {
    #[error("it has fewer than {min} characters")]
    TooShort { min: usize },
    #[error("it has no letter")]
    NoLetter,
    #[error("it has no digit")]
    NoDigit,
    /// `index` counts the request's identifiers from 0.
    #[error("it contains user identifier {index} (compared case-insensitively)")]
    ContainsIdentifier { index: usize },
}

/// Lower case, into a buffer reserved up front so that no reallocation leaves a copy of the
/// password in freed memory (lower case is at most 1.5 times as long in UTF-8).
fn lowercase_secret(s: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(s.len().saturating_mul(3)));
    for c in s.chars() {
        out.extend(c.to_lowercase());
    }
    out
}

/// Applies the rules to a password, in the order listed in [`Weakness`]; the first rule broken
/// is the answer.
///
/// # Errors
/// The [`Weakness`] found.
pub fn check_strength(
    password: &str,
    rules: &StrengthRules,
    identifiers: &[String],
) -> Result<(), Weakness> {
    if password.chars().count() < rules.min_chars {
        return Err(Weakness::TooShort {
            min: rules.min_chars,
        });
    }
    if rules.require_letter && !password.chars().any(char::is_alphabetic) {
        return Err(Weakness::NoLetter);
    }
    if rules.require_digit && !password.chars().any(char::is_numeric) {
        return Err(Weakness::NoDigit);
    }
    if rules.refuse_identifiers && !identifiers.is_empty() {
        let lower = lowercase_secret(password);
        for (index, id) in identifiers.iter().enumerate() {
            let id = id.to_lowercase();
            if !id.is_empty() && lower.contains(id.as_str()) {
                return Err(Weakness::ContainsIdentifier { index });
            }
        }
    }
    Ok(())
}

/// The pepper: HMAC-SM3 of the UTF-8 password under a pepper key version. Its 32 bytes are the
/// "password" argon2id or PBKDF2 hashes.
///
/// # Errors
/// [`CryptoError::Mismatch`] when the token is not a pepper key's or does not fit the key.
pub fn pepper<U>(
    approved: &Approved<U>,
    key: &KeyMaterial,
    password: &str,
) -> Result<SecretBytes, CryptoError> {
    if approved.purpose() != Purpose::Pepper
        || approved.spec() != key.spec()
        || key.spec() != KeySpec::HmacSm3
    {
        return Err(CryptoError::Mismatch);
    }
    mac_raw(DigestAlg::Sm3, key.expose_secret(), password.as_bytes()).map(SecretBytes::from_vec)
}

/// A hash function and its cost, as a stored hash names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cost {
    /// Argon2id version 19 (0x13): memory in KiB, passes, lanes.
    Argon2id { m_kib: u32, t: u32, p: u32 },
    /// PBKDF2 with HMAC-SM3.
    Pbkdf2Sm3 { iterations: u32 },
}

impl Cost {
    #[must_use]
    pub fn alg(self) -> PasswordHashAlg {
        match self {
            Self::Argon2id { .. } => PasswordHashAlg::Argon2id,
            Self::Pbkdf2Sm3 { .. } => PasswordHashAlg::Pbkdf2Sm3,
        }
    }

    /// Whether a stored hash may ask for this much work (module constants), and whether the
    /// numbers make sense to the function at all.
    fn check(self) -> Result<(), &'static str> {
        match self {
            Self::Argon2id { m_kib, t, p } => {
                if !(1..=MAX_ARGON2_P).contains(&p) {
                    return Err("argon2id p must be 1 to 8");
                }
                if !(1..=MAX_ARGON2_T).contains(&t) {
                    return Err("argon2id t must be 1 to 16");
                }
                if m_kib < 8 * p || m_kib > MAX_ARGON2_M_KIB {
                    return Err("argon2id m must be 8·p to 262144 KiB");
                }
                Ok(())
            }
            Self::Pbkdf2Sm3 { iterations } => {
                if (1..=MAX_PBKDF2_ITERATIONS).contains(&iterations) {
                    Ok(())
                } else {
                    Err("pbkdf2-sm3 i must be 1 to 2000000")
                }
            }
        }
    }
}

/// Hashes the peppered password with `cost`, which must be the approved function's.
///
/// # Errors
/// [`CryptoError::Mismatch`] when the cost is not the approved function's;
/// [`CryptoError::OperationFailed`] for parameters the function refuses.
pub fn derive<U>(
    approved: &ApprovedPasswordHash<U>,
    cost: Cost,
    peppered: &SecretBytes,
    salt: &[u8],
    out_len: usize,
) -> Result<SecretBytes, CryptoError> {
    if approved.alg() != cost.alg() {
        return Err(CryptoError::Mismatch);
    }
    cost.check().map_err(|_| CryptoError::OperationFailed)?;
    match cost {
        Cost::Argon2id { m_kib, t, p } => {
            let params = argon2::Params::new(m_kib, t, p, Some(out_len))
                .map_err(|_| CryptoError::OperationFailed)?;
            let argon =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            SecretBytes::from_fn(out_len, |out| {
                argon
                    .hash_password_into(peppered.expose_secret(), salt, out)
                    .map_err(|_| CryptoError::OperationFailed)
            })
        }
        Cost::Pbkdf2Sm3 { iterations } => SecretBytes::from_fn(out_len, |out| {
            pbkdf2::pbkdf2_hmac::<sm3::Sm3>(peppered.expose_secret(), salt, iterations, out);
            Ok(())
        }),
    }
}

/// A stored hash (module docs), parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHash {
    pub pepper_key: uuid::Uuid,
    pub pepper_version: u32,
    pub cost: Cost,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Lengths only: a hash is material for an offline guess, so it is not printed either.
impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredHash")
            .field("pepper_key", &self.pepper_key)
            .field("pepper_version", &self.pepper_version)
            .field("cost", &self.cost)
            .field("salt_len", &self.salt.len())
            .field("hash_len", &self.hash.len())
            .finish()
    }
}

fn hash_error(problem: &'static str) -> InvalidInput {
    InvalidInput::new("stored hash", problem)
}

/// A decimal PHC parameter value: digits only, no leading zero, within `u32`.
fn decimal(s: &str) -> Result<u32, InvalidInput> {
    let canonical = !s.is_empty()
        && s.len() <= 10
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return Err(hash_error("a parameter is not a decimal number"));
    }
    s.parse()
        .map_err(|_| hash_error("a parameter is out of range"))
}

/// `name=value` pairs in exactly the order given.
fn params<'a, const N: usize>(s: &'a str, names: [&str; N]) -> Result<[&'a str; N], InvalidInput> {
    let mut out = [""; N];
    let mut parts = s.split(',');
    for (slot, name) in out.iter_mut().zip(names) {
        let part = parts
            .next()
            .ok_or_else(|| hash_error("parameters are missing"))?;
        *slot = part
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
            .ok_or_else(|| hash_error("parameters are not the expected ones, in order"))?;
    }
    if parts.next().is_some() {
        return Err(hash_error("has parameters this KMS does not know"));
    }
    Ok(out)
}

fn b64(s: &str, what: &'static str) -> Result<Vec<u8>, InvalidInput> {
    Base64Unpadded::decode_vec(s).map_err(|_| hash_error(what))
}

impl StoredHash {
    /// Parses exactly the canonical form this module writes (module docs): one way to write
    /// each hash, so the string can be compared, and a cost within the bounds.
    ///
    /// # Errors
    /// [`InvalidInput`] (field `stored hash`) saying what is wrong, never echoing the string.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        if s.len() > STORED_MAX_LEN {
            return Err(hash_error("is longer than 512 characters"));
        }
        let rest = s
            .strip_prefix(PEPPER_PREFIX)
            .ok_or_else(|| hash_error("does not start with $kms-pepper$"))?;
        let (pepper, inner) = rest
            .split_once('$')
            .ok_or_else(|| hash_error("has no hash after the pepper"))?;
        let [k, v] = params(pepper, ["k", "v"])?;
        let pepper_key = uuid::Uuid::try_parse(k)
            .ok()
            .filter(|u| u.hyphenated().to_string() == k)
            .ok_or_else(|| hash_error("pepper key id is not a lower-case UUID"))?;
        let pepper_version = decimal(v)?;
        if pepper_version == 0 {
            return Err(hash_error("pepper version must be 1 or more"));
        }
        let fields: Vec<&str> = inner.split('$').collect();
        let (cost, salt, hash) = match fields.as_slice() {
            ["argon2id", "v=19", p, salt, hash] => {
                let [m, t, p] = params(p, ["m", "t", "p"])?;
                let cost = Cost::Argon2id {
                    m_kib: decimal(m)?,
                    t: decimal(t)?,
                    p: decimal(p)?,
                };
                (cost, *salt, *hash)
            }
            ["argon2id", v, ..] if *v != "v=19" => {
                return Err(hash_error("argon2id must be version 19, $v=19$"));
            }
            ["pbkdf2-sm3", p, salt, hash] => {
                let [i, l] = params(p, ["i", "l"])?;
                let cost = Cost::Pbkdf2Sm3 {
                    iterations: decimal(i)?,
                };
                let l = decimal(l)?;
                let hash_bytes = b64(hash, "hash is not B64")?;
                if usize::try_from(l).ok() != Some(hash_bytes.len()) {
                    return Err(hash_error("l does not match the hash's length"));
                }
                (cost, *salt, *hash)
            }
            _ => {
                return Err(hash_error(
                    "is neither $argon2id$ nor $pbkdf2-sm3$ with its fields",
                ));
            }
        };
        cost.check().map_err(hash_error)?;
        let salt = b64(salt, "salt is not B64")?;
        let hash = b64(hash, "hash is not B64")?;
        if !(8..=64).contains(&salt.len()) {
            return Err(hash_error("salt must be 8 to 64 bytes"));
        }
        if !(16..=64).contains(&hash.len()) {
            return Err(hash_error("hash must be 16 to 64 bytes"));
        }
        Ok(Self {
            pepper_key,
            pepper_version,
            cost,
            salt,
            hash,
        })
    }

    /// The standard PHC string after the pepper prefix, what outside verifiers read.
    #[must_use]
    pub fn inner_phc(&self) -> String {
        let salt = Base64Unpadded::encode_string(&self.salt);
        let hash = Base64Unpadded::encode_string(&self.hash);
        match self.cost {
            Cost::Argon2id { m_kib, t, p } => {
                format!("$argon2id$v=19$m={m_kib},t={t},p={p}${salt}${hash}")
            }
            Cost::Pbkdf2Sm3 { iterations } => format!(
                "$pbkdf2-sm3$i={iterations},l={}${salt}${hash}",
                self.hash.len()
            ),
        }
    }

    /// The whole stored string: the pepper prefix and [`StoredHash::inner_phc`].
    #[must_use]
    pub fn to_phc(&self) -> String {
        format!(
            "{PEPPER_PREFIX}k={},v={}{}",
            self.pepper_key.hyphenated(),
            self.pepper_version,
            self.inner_phc()
        )
    }
}

#[cfg(test)]
mod tests;
