//! Tokens (issue 22 item 1, OPS-5): values replaced by tokens of the same format, either
//! reversibly (FF1 over SM4 or AES-256, [`super::ff1`]) or one way (pseudonyms: HMAC-SM3).
//!
//! `docs/FORMATS.md` ("Tokens") is the reference for everything here; `tests/judges/ff1.py`
//! implements it again from that text and judges this one. In short:
//!
//! - **Formats** ([`TokenFormat`]): `digits` (alphabet `0-9`, radix 10), `alphanumeric`
//!   (`0-9A-Za-z` in that order, radix 62, case-sensitive: `a` and `A` are different
//!   numerals, and tokens mix cases), `pan` and `pan-luhn-invalid` (a card number of 13 to 19
//!   digits that passes the Luhn check; the first 6 and last 4 digits are kept and the middle
//!   is tokenised).
//! - **Minimum domain**: radix^length of the part that is tokenised must be at least 10^6
//!   (NIST SP 800-38G Rev. 1), so `digits` needs 6 characters, `alphanumeric` 4 and a PAN 16
//!   digits; smaller values are refused, saying so.
//! - **Tweak**: `"kms-tokenize/v1" ‖ 0 ‖ format name ‖ 0 ‖ canonical(context)`, so that a
//!   token depends on its format and on the caller's encryption context.
//! - **PANs** keep their Luhn property by cycle walking: FF1 is applied to the middle digits
//!   again until the whole number passes the Luhn check (about ten times on average). A
//!   walk over a permutation comes back to where it started, so it always ends, and the walk
//!   back with FF1.Decrypt stops at the original value, the first Luhn-valid number on the
//!   way. `pan-luhn-invalid` then adds 1 (mod 10) to the last middle digit: the Luhn check
//!   catches every single-digit change, so every such token fails it and cannot be mistaken
//!   for a card; detokenising undoes that step first. The domain counted for a PAN is that of
//!   its middle digits (10^(n−10)), on which FF1 runs; only a tenth of them are Luhn-valid.
//! - **Pseudonyms** (an `hmac-sm3` key of purpose tokenize): the tokenised part becomes
//!   numerals drawn without bias from HMAC-SM3 blocks over the whole value; a PAN's last
//!   middle digit then sets its Luhn property as above. One way, deterministic, and not
//!   unique: two values may share a pseudonym.
//!
//! Messages name the field, a position or a length, never a value or token (API-4). The
//! values' numerals pass through buffers that are wiped on drop where they are ours; those
//! `fpe` makes inside FF1 are not.

use hmac::{Hmac, KeyInit, Mac};
use zeroize::Zeroizing;

use super::ff1::Ff1;
use crate::alg::{KeySpec, Purpose};
use crate::envelope::EncryptionContext;
use crate::error::{CryptoError, Error, InvalidInput};
use crate::policy::{Approved, Open, Protect};
use crate::secret::{KeyMaterial, SecretBytes};

/// The smallest domain (radix^length of what is tokenised) accepted.
pub const MIN_DOMAIN: u64 = 1_000_000;
/// The longest value or token accepted, in characters.
pub const MAX_VALUE_CHARS: usize = 256;
/// Cycle-walking steps before a PAN is given up: the chance of needing more is 0.9^1000.
const MAX_WALK: usize = 1000;
/// A PAN keeps this many leading and trailing digits.
pub const PAN_KEPT_HEAD: usize = 6;
pub const PAN_KEPT_TAIL: usize = 4;
/// The lengths of a PAN (ISO/IEC 7812).
const PAN_LENGTHS: std::ops::RangeInclusive<usize> = 13..=19;

const TWEAK_LABEL: &[u8] = b"kms-tokenize/v1";
const PSEUDONYM_LABEL: &[u8] = b"kms-pseudonym/v1";

/// The characters a format tokenises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alphabet {
    /// `0123456789`, radix 10.
    Digits,
    /// `0-9`, `A-Z`, `a-z` (numerals 0–61 in that order), radix 62. Case-sensitive.
    Alphanumeric,
}

impl Alphabet {
    const DIGITS: &'static [u8] = b"0123456789";
    const ALPHANUMERIC: &'static [u8] =
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    /// The alphabet's characters, numeral 0 first.
    #[must_use]
    pub fn chars(self) -> &'static [u8] {
        match self {
            Self::Digits => Self::DIGITS,
            Self::Alphanumeric => Self::ALPHANUMERIC,
        }
    }

    #[must_use]
    pub fn radix(self) -> u16 {
        match self {
            Self::Digits => 10,
            Self::Alphanumeric => 62,
        }
    }

    fn numeral(self, c: u8) -> Option<u16> {
        match (self, c) {
            (Self::Digits | Self::Alphanumeric, b'0'..=b'9') => Some(u16::from(c - b'0')),
            (Self::Alphanumeric, b'A'..=b'Z') => Some(u16::from(c - b'A') + 10),
            (Self::Alphanumeric, b'a'..=b'z') => Some(u16::from(c - b'a') + 36),
            (Self::Digits | Self::Alphanumeric, _) => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Digits => "digits alphabet (0-9)",
            Self::Alphanumeric => "alphanumeric alphabet (0-9, A-Z, a-z)",
        }
    }
}

/// What a value looks like, and so what its token looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenFormat {
    /// Decimal digits, all tokenised.
    Digits,
    /// `0-9A-Za-z`, all tokenised, case-sensitive.
    Alphanumeric,
    /// A card number: first 6 and last 4 digits kept, Luhn-valid tokens.
    Pan,
    /// A card number: first 6 and last 4 digits kept, tokens that always fail the Luhn check.
    PanLuhnInvalid,
}

impl TokenFormat {
    pub const ALL: [Self; 4] = [
        Self::Digits,
        Self::Alphanumeric,
        Self::Pan,
        Self::PanLuhnInvalid,
    ];

    /// The name requests use, and the one bound into the tweak.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Digits => "digits",
            Self::Alphanumeric => "alphanumeric",
            Self::Pan => "pan",
            Self::PanLuhnInvalid => "pan-luhn-invalid",
        }
    }

    /// A format by name (ASCII case ignored).
    ///
    /// # Errors
    /// [`InvalidInput`] on field `format`, listing the names.
    pub fn parse(input: &str) -> Result<Self, InvalidInput> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(input))
            .ok_or_else(|| {
                InvalidInput::new(
                    "format",
                    "unknown; use one of: digits, alphanumeric, pan, pan-luhn-invalid",
                )
            })
    }

    #[must_use]
    pub fn alphabet(self) -> Alphabet {
        match self {
            Self::Alphanumeric => Alphabet::Alphanumeric,
            Self::Digits | Self::Pan | Self::PanLuhnInvalid => Alphabet::Digits,
        }
    }

    fn is_pan(self) -> bool {
        match self {
            Self::Pan | Self::PanLuhnInvalid => true,
            Self::Digits | Self::Alphanumeric => false,
        }
    }

    /// The shortest value whose tokenised part reaches [`MIN_DOMAIN`].
    #[must_use]
    pub fn min_len(self) -> usize {
        let radix = u64::from(self.alphabet().radix());
        let mut len = 0;
        let mut domain = 1u64;
        while domain < MIN_DOMAIN {
            domain = domain.saturating_mul(radix);
            len += 1;
        }
        if self.is_pan() {
            len + PAN_KEPT_HEAD + PAN_KEPT_TAIL
        } else {
            len
        }
    }
}

/// Whether a digit string passes the Luhn check (ISO/IEC 7812-1 Annex B).
#[must_use]
pub fn luhn_valid(digits: &[u16]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Which side of the mapping a string is: what the caller holds, or a token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Value,
    Token,
}

impl Side {
    fn field(self) -> &'static str {
        match self {
            Self::Value => "value",
            Self::Token => "token",
        }
    }
}

/// A string as its format reads it: every character's numeral, and the range that is
/// tokenised (the rest is kept).
struct Split {
    numerals: Zeroizing<Vec<u16>>,
    start: usize,
    end: usize,
}

/// Reads `input` as `format` says, checking length, alphabet, the Luhn property a PAN or a
/// token of a PAN format must have, and the minimum domain.
fn split(format: TokenFormat, input: &[u8], side: Side) -> Result<Split, InvalidInput> {
    let field = side.field();
    if input.is_empty() {
        return Err(InvalidInput::new(field, "is empty"));
    }
    if input.len() > MAX_VALUE_CHARS {
        return Err(InvalidInput::new(
            field,
            format!("is longer than {MAX_VALUE_CHARS} characters"),
        ));
    }
    let alphabet = format.alphabet();
    let mut numerals = Zeroizing::new(Vec::with_capacity(input.len()));
    for (i, &c) in input.iter().enumerate() {
        let n = alphabet.numeral(c).ok_or_else(|| {
            InvalidInput::new(
                field,
                format!(
                    "character {} is outside the {} of format {}",
                    i + 1,
                    alphabet.describe(),
                    format.name()
                ),
            )
        })?;
        numerals.push(n);
    }
    let len = numerals.len();
    let (start, end) = if format.is_pan() {
        if !PAN_LENGTHS.contains(&len) {
            return Err(InvalidInput::new(
                field,
                format!("has {len} digits; a PAN has 13 to 19"),
            ));
        }
        check_pan_luhn(format, &mut numerals, side)?;
        (PAN_KEPT_HEAD, len - PAN_KEPT_TAIL)
    } else {
        (0, len)
    };
    check_domain(format, end - start, field)?;
    Ok(Split {
        numerals,
        start,
        end,
    })
}

/// A PAN must pass the Luhn check; so must a `pan` token, and a `pan-luhn-invalid` token must
/// fail it and pass it once its last middle digit is stepped back (which this does).
fn check_pan_luhn(format: TokenFormat, digits: &mut [u16], side: Side) -> Result<(), InvalidInput> {
    let field = side.field();
    let valid = luhn_valid(digits);
    match (side, format) {
        (Side::Value, TokenFormat::Digits | TokenFormat::Alphanumeric)
        | (Side::Token, TokenFormat::Digits | TokenFormat::Alphanumeric) => Ok(()),
        (Side::Value, TokenFormat::Pan | TokenFormat::PanLuhnInvalid) if valid => Ok(()),
        (Side::Value, TokenFormat::Pan | TokenFormat::PanLuhnInvalid) => Err(InvalidInput::new(
            field,
            "fails the Luhn check: the pan formats take card numbers (use format digits for \
             other numbers)",
        )),
        (Side::Token, TokenFormat::Pan) if valid => Ok(()),
        (Side::Token, TokenFormat::Pan) => Err(InvalidInput::new(
            field,
            "fails the Luhn check, so it is not a token of format pan",
        )),
        (Side::Token, TokenFormat::PanLuhnInvalid) if valid => Err(InvalidInput::new(
            field,
            "passes the Luhn check, so it is not a token of format pan-luhn-invalid",
        )),
        (Side::Token, TokenFormat::PanLuhnInvalid) => {
            step_last_middle(digits, 9);
            if luhn_valid(digits) {
                Ok(())
            } else {
                Err(InvalidInput::new(
                    field,
                    "is not a token of format pan-luhn-invalid (stepping back its last middle \
                     digit does not give a Luhn-valid number)",
                ))
            }
        }
    }
}

/// Adds `by` (mod 10) to a PAN's last middle digit, the one before the kept last four.
fn step_last_middle(digits: &mut [u16], by: u16) {
    if let Some(pos) = digits.len().checked_sub(PAN_KEPT_TAIL + 1)
        && let Some(d) = digits.get_mut(pos)
    {
        *d = (*d + by) % 10;
    }
}

fn check_domain(format: TokenFormat, len: usize, field: &'static str) -> Result<(), InvalidInput> {
    let radix = u64::from(format.alphabet().radix());
    let mut domain = 1u64;
    for _ in 0..len {
        domain = domain.saturating_mul(radix);
        if domain >= MIN_DOMAIN {
            return Ok(());
        }
    }
    let why = if format.is_pan() {
        format!(
            "; a PAN keeps its first {PAN_KEPT_HEAD} and last {PAN_KEPT_TAIL} digits, so format {} \
             needs at least {} digits",
            format.name(),
            format.min_len()
        )
    } else {
        format!(
            "; format {} needs at least {} characters",
            format.name(),
            format.min_len()
        )
    };
    Err(InvalidInput::new(
        field,
        format!(
            "the domain of its tokenised part ({radix}^{len} = {domain}) is below the minimum \
             of 10^6 (NIST SP 800-38G Rev. 1){why}"
        ),
    ))
}

/// `label ‖ 0 ‖ format name ‖ 0 ‖ canonical(context)`: the FF1 tweak, and the start of every
/// pseudonym's HMAC input.
fn bound_prefix(label: &[u8], format: TokenFormat, context: &EncryptionContext) -> Vec<u8> {
    [
        label,
        &[0],
        format.name().as_bytes(),
        &[0],
        &context.canonical_bytes(),
    ]
    .concat()
}

/// How a key makes tokens.
enum Engine<'k> {
    Ff1(Box<Ff1>),
    Pseudonym(&'k KeyMaterial),
}

/// Tokens of one format, under one key version and one context: built once per call and used
/// for every value of the call.
pub struct Tokenizer<'k> {
    engine: Engine<'k>,
    format: TokenFormat,
    /// The FF1 tweak, or the pseudonyms' HMAC prefix.
    prefix: Vec<u8>,
}

/// The way back from format-preserving tokens (never from pseudonyms).
pub struct Detokenizer(Tokenizer<'static>);

impl<'k> Tokenizer<'k> {
    /// Tokens with `key`, which the policy approved for purpose tokenize.
    ///
    /// # Errors
    /// `Mismatch` when the approval is for another purpose or spec than the key's.
    pub fn new(
        approved: &Approved<Protect>,
        key: &'k KeyMaterial,
        format: TokenFormat,
        context: &EncryptionContext,
    ) -> Result<Self, CryptoError> {
        if approved.purpose() != Purpose::Tokenize || approved.spec() != key.spec() {
            return Err(CryptoError::Mismatch);
        }
        let (engine, label) = match key.spec() {
            spec @ (KeySpec::Sm4Ff1 | KeySpec::Aes256Ff1) => (
                Engine::Ff1(Box::new(Ff1::new(
                    spec,
                    key.expose_secret(),
                    u32::from(format.alphabet().radix()),
                )?)),
                TWEAK_LABEL,
            ),
            KeySpec::HmacSm3 => (Engine::Pseudonym(key), PSEUDONYM_LABEL),
            KeySpec::Sm4Gcm
            | KeySpec::Aes256Gcm
            | KeySpec::Sm2
            | KeySpec::Rsa2048
            | KeySpec::Rsa3072
            | KeySpec::Rsa4096
            | KeySpec::HmacSha256
            | KeySpec::HmacSha384
            | KeySpec::HmacSha512 => return Err(CryptoError::Mismatch),
        };
        Ok(Self {
            engine,
            format,
            prefix: bound_prefix(label, format, context),
        })
    }

    /// Whether the tokens can be turned back (FF1), or are pseudonyms (HMAC-SM3).
    #[must_use]
    pub fn reversible(&self) -> bool {
        match self.engine {
            Engine::Ff1(_) => true,
            Engine::Pseudonym(_) => false,
        }
    }

    /// The token of one value.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (field `value`) when the value does not fit the format;
    /// `OperationFailed` in the 0.9^1000 case of a PAN whose walk does not end.
    pub fn tokenize(&self, value: &[u8]) -> Result<SecretBytes, Error> {
        let mut s = split(self.format, value, Side::Value)?;
        match &self.engine {
            Engine::Ff1(ff1) => {
                if self.format.is_pan() {
                    walk(ff1, &self.prefix, &mut s, Direction::Forward)?;
                } else {
                    let x = std::mem::take(&mut *s.numerals);
                    *s.numerals = same_len(x.len(), ff1.encrypt(&self.prefix, x)?)?;
                }
            }
            Engine::Pseudonym(key) => {
                let len = s.end - s.start;
                let drawn = Zeroizing::new(pseudonym_numerals(
                    key,
                    &self.prefix,
                    value,
                    self.format.alphabet().radix(),
                    len,
                )?);
                let middle = s
                    .numerals
                    .get_mut(s.start..s.end)
                    .ok_or(CryptoError::OperationFailed)?;
                middle.copy_from_slice(&drawn);
                if self.format.is_pan() {
                    make_luhn_valid(&mut s.numerals);
                }
            }
        }
        if self.format == TokenFormat::PanLuhnInvalid {
            step_last_middle(&mut s.numerals, 1);
        }
        render(self.format.alphabet(), &s.numerals)
    }
}

impl Detokenizer {
    /// The way back with `key`, which the policy approved for opening under purpose tokenize.
    ///
    /// # Errors
    /// `Mismatch` for another purpose or spec, or for a pseudonym key (HMAC-SM3): pseudonyms
    /// are one way (the core says so to the caller before it gets here).
    pub fn new(
        approved: &Approved<Open>,
        key: &KeyMaterial,
        format: TokenFormat,
        context: &EncryptionContext,
    ) -> Result<Self, CryptoError> {
        if approved.purpose() != Purpose::Tokenize || approved.spec() != key.spec() {
            return Err(CryptoError::Mismatch);
        }
        match key.spec() {
            spec @ (KeySpec::Sm4Ff1 | KeySpec::Aes256Ff1) => Ok(Self(Tokenizer {
                engine: Engine::Ff1(Box::new(Ff1::new(
                    spec,
                    key.expose_secret(),
                    u32::from(format.alphabet().radix()),
                )?)),
                format,
                prefix: bound_prefix(TWEAK_LABEL, format, context),
            })),
            KeySpec::HmacSm3
            | KeySpec::Sm4Gcm
            | KeySpec::Aes256Gcm
            | KeySpec::Sm2
            | KeySpec::Rsa2048
            | KeySpec::Rsa3072
            | KeySpec::Rsa4096
            | KeySpec::HmacSha256
            | KeySpec::HmacSha384
            | KeySpec::HmacSha512 => Err(CryptoError::Mismatch),
        }
    }

    /// The value of one token.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (field `token`) when the token does not fit the format: a
    /// wrong alphabet or length, or a PAN token with the wrong Luhn property.
    pub fn detokenize(&self, token: &[u8]) -> Result<SecretBytes, Error> {
        let t = &self.0;
        let Engine::Ff1(ff1) = &t.engine else {
            return Err(CryptoError::Mismatch.into());
        };
        // For pan-luhn-invalid this also steps the last middle digit back.
        let mut s = split(t.format, token, Side::Token)?;
        if t.format.is_pan() {
            walk(ff1, &t.prefix, &mut s, Direction::Back)?;
        } else {
            let y = std::mem::take(&mut *s.numerals);
            *s.numerals = same_len(y.len(), ff1.decrypt(&t.prefix, y)?)?;
        }
        render(t.format.alphabet(), &s.numerals)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Back,
}

/// Cycle walking on a PAN's middle digits: FF1 (or its inverse) until the whole number passes
/// the Luhn check.
fn walk(ff1: &Ff1, tweak: &[u8], s: &mut Split, direction: Direction) -> Result<(), Error> {
    for _ in 0..MAX_WALK {
        let middle = s
            .numerals
            .get_mut(s.start..s.end)
            .ok_or(CryptoError::OperationFailed)?;
        let x = middle.to_vec();
        let y = Zeroizing::new(match direction {
            Direction::Forward => ff1.encrypt(tweak, x)?,
            Direction::Back => ff1.decrypt(tweak, x)?,
        });
        if y.len() != middle.len() {
            return Err(CryptoError::OperationFailed.into());
        }
        middle.copy_from_slice(&y);
        if luhn_valid(&s.numerals) {
            return Ok(());
        }
    }
    Err(CryptoError::OperationFailed.into())
}

/// FF1 keeps the length; anything else is a failure, not a different-length token.
fn same_len(len: usize, out: Vec<u16>) -> Result<Vec<u16>, CryptoError> {
    if out.len() == len {
        Ok(out)
    } else {
        Err(CryptoError::OperationFailed)
    }
}

/// Sets a PAN's last middle digit to the one digit that makes it pass the Luhn check.
fn make_luhn_valid(digits: &mut [u16]) {
    for _ in 0..10 {
        if luhn_valid(digits) {
            return;
        }
        step_last_middle(digits, 1);
    }
}

/// `count` numerals below `radix` from HMAC-SM3 blocks `HMAC(K, prefix ‖ u32(len) ‖ value ‖
/// u32(j))`, j = 0, 1, …: a byte below `256 − 256 mod radix` gives `byte mod radix`, any other
/// is skipped (no bias).
fn pseudonym_numerals(
    key: &KeyMaterial,
    prefix: &[u8],
    value: &[u8],
    radix: u16,
    count: usize,
) -> Result<Vec<u16>, CryptoError> {
    let limit = 256 - (256 % radix);
    let len = u32::try_from(value.len()).map_err(|_| CryptoError::OperationFailed)?;
    let mut out = Vec::with_capacity(count);
    let mut block = 0u32;
    while out.len() < count {
        let mut mac = <Hmac<sm3::Sm3> as KeyInit>::new_from_slice(key.expose_secret())
            .map_err(|_| CryptoError::MalformedKey)?;
        mac.update(prefix);
        mac.update(&len.to_be_bytes());
        mac.update(value);
        mac.update(&block.to_be_bytes());
        let bytes = Zeroizing::new(mac.finalize().into_bytes().to_vec());
        for &b in bytes.iter() {
            if out.len() < count && u16::from(b) < limit {
                out.push(u16::from(b) % radix);
            }
        }
        block = block.checked_add(1).ok_or(CryptoError::OperationFailed)?;
    }
    Ok(out)
}

fn render(alphabet: Alphabet, numerals: &[u16]) -> Result<SecretBytes, Error> {
    let chars = alphabet.chars();
    let mut out = Vec::with_capacity(numerals.len());
    for &n in numerals {
        out.push(
            *chars
                .get(usize::from(n))
                .ok_or(CryptoError::OperationFailed)?,
        );
    }
    Ok(SecretBytes::from_vec(out))
}

/// Bare FF1 (no format, no tweak of ours) under a key approved for tokenize: the self-tests'
/// known answers (NIST's samples for AES-256, `tests/judges/ff1.py`'s for SM4).
///
/// # Errors
/// `Mismatch` for another purpose or spec than the key's, or a key that is not FF1;
/// `OperationFailed` for numerals FF1 refuses.
pub fn ff1_known_answer(
    approved: &Approved<Protect>,
    key: &KeyMaterial,
    radix: u32,
    tweak: &[u8],
    numerals: Vec<u16>,
    encrypt: bool,
) -> Result<Vec<u16>, CryptoError> {
    if approved.purpose() != Purpose::Tokenize || approved.spec() != key.spec() {
        return Err(CryptoError::Mismatch);
    }
    let ff1 = Ff1::new(key.spec(), key.expose_secret(), radix)?;
    if encrypt {
        ff1.encrypt(tweak, numerals)
    } else {
        ff1.decrypt(tweak, numerals)
    }
}

/// For the fuzz target: reads `input` as a value of `format` (every check of a request's value),
/// without a key. Never panics.
///
/// # Errors
/// What a request with this value would get.
pub fn check_value(format: TokenFormat, input: &[u8]) -> Result<(), InvalidInput> {
    split(format, input, Side::Value).map(drop)
}

#[cfg(test)]
mod tests;
