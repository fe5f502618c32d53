//! Tokenize and Detokenize (issue 22 item 1, OPS-5): many values per call under one key
//! version, one format and one encryption context, each value with its own result.
//!
//! Both check, as every data-plane call: the proof of the matrix (`ops::Tokenize`,
//! `ops::Detokenize`: two operations and two grant operations, so a namespace granted
//! `tokenize` cannot turn tokens back), the unsealed KMS, the key's reach, purpose tokenize,
//! state (new tokens need an enabled key; detokenising works while compromised, flagged) and
//! policy (a gm-only policy makes no new AES-FF1 tokens but still opens old ones).
//!
//! **Which version.** A format-preserving token has no room for a header, so it cannot say
//! which key version made it, and FF1 has no integrity: the wrong version gives a wrong value
//! that looks right. So Tokenize uses the newest version and returns its number, and
//! Detokenize takes that number and never guesses; the caller keeps it beside the tokens (as
//! the CLI's `--json` output does) or knows it from when the tokens were made. Versions stay
//! usable for detokenising after rotation, like old versions decrypt (KEY-7).
//!
//! **Pseudonym keys** (`hmac-sm3`, purpose tokenize) tokenise one way: Detokenize on them is
//! FAILED_PRECONDITION before any value is looked at.
//!
//! The crypto is `crypto/tokenize.rs`; the formats are in `docs/FORMATS.md`.

use super::Kms;
use crate::alg::{KeySpec, Purpose};
use crate::authz::{Authorized, ops};
use crate::crypto::tokenize::{Detokenizer, TokenFormat, Tokenizer};
use crate::envelope::EncryptionContext;
use crate::error::{CryptoError, Error, InvalidInput};
use crate::keys::KeyId;
use crate::keys::KeyRef;
use crate::keys::state::KeyState;
use crate::secret::SecretBytes;

/// The most values one call may carry.
pub const MAX_TOKEN_VALUES: usize = 1000;

/// What Tokenize or Detokenize made: one result per value, in order, and the key version
/// used.
#[derive(Debug)]
pub struct TokenOutput {
    pub results: Vec<Result<SecretBytes, Error>>,
    pub key_id: KeyId,
    pub key_version: u32,
    /// Detokenize with a compromised key: allowed, and flagged in the audit (KEY-8).
    pub key_compromised: bool,
    /// Whether the key makes one-way pseudonyms (`hmac-sm3`).
    pub pseudonyms: bool,
}

impl TokenOutput {
    /// How many values succeeded.
    #[must_use]
    pub fn succeeded(&self) -> usize {
        self.results.iter().filter(|r| r.is_ok()).count()
    }
}

fn check_count(values: usize) -> Result<(), Error> {
    if values == 0 {
        return Err(InvalidInput::new("values", "at least one value is needed").into());
    }
    if values > MAX_TOKEN_VALUES {
        return Err(InvalidInput::new(
            "values",
            format!("at most {MAX_TOKEN_VALUES} values per call"),
        )
        .into());
    }
    Ok(())
}

impl Kms {
    /// Tokens for `values` with the key's newest version.
    ///
    /// # Errors
    /// For the whole call: reach, purpose, state, policy, no values or too many. A value that
    /// does not fit the format is that value's own `InvalidArgument` in the results.
    pub fn tokenize(
        &self,
        auth: &Authorized<'_, ops::Tokenize>,
        key: &KeyRef,
        format: TokenFormat,
        context: &EncryptionContext,
        values: &[SecretBytes],
    ) -> Result<TokenOutput, Error> {
        check_count(values.len())?;
        let (vault, record, approved) = self.for_protect(auth, key, Purpose::Tokenize)?;
        let version = record
            .newest()
            .map(|v| v.version)
            .ok_or(CryptoError::MalformedKey)?;
        let material = self.material(&vault, &record, version)?;
        let tokenizer = Tokenizer::new(&approved, &material, format, context)?;
        let results = values
            .iter()
            .map(|v| tokenizer.tokenize(v.expose_secret()))
            .collect();
        Ok(TokenOutput {
            results,
            key_id: record.id,
            key_version: version,
            key_compromised: false,
            pseudonyms: !tokenizer.reversible(),
        })
    }

    /// The values of `tokens`, made by Tokenize with version `version` of the key under the
    /// same format and context.
    ///
    /// # Errors
    /// For the whole call: reach, purpose, state, a pseudonym key (FAILED_PRECONDITION), a
    /// version that is 0 (INVALID_ARGUMENT) or does not exist (NOT_FOUND), no tokens or too
    /// many. A token that does not fit the format is that token's own `InvalidArgument`.
    pub fn detokenize(
        &self,
        auth: &Authorized<'_, ops::Detokenize>,
        key: &KeyRef,
        version: u32,
        format: TokenFormat,
        context: &EncryptionContext,
        tokens: &[SecretBytes],
    ) -> Result<TokenOutput, Error> {
        check_count(tokens.len())?;
        if version == 0 {
            return Err(InvalidInput::new(
                "key version",
                "is required: the version Tokenize returned (a format-preserving token cannot \
                 say which version made it)",
            )
            .into());
        }
        let (vault, record, approved) = self.for_open(auth, key, Purpose::Tokenize)?;
        if record.spec == KeySpec::HmacSm3 {
            return Err(Error::FailedPrecondition(
                format!(
                    "key {} is an hmac-sm3 pseudonym key: pseudonyms are one-way and cannot be \
                     detokenised",
                    record.id
                )
                .into(),
            ));
        }
        let material = self.material(&vault, &record, version)?;
        let detokenizer = Detokenizer::new(&approved, &material, format, context)?;
        let results = tokens
            .iter()
            .map(|t| detokenizer.detokenize(t.expose_secret()))
            .collect();
        Ok(TokenOutput {
            results,
            key_id: record.id,
            key_version: version,
            key_compromised: record.state == KeyState::Compromised,
            pseudonyms: false,
        })
    }
}

#[cfg(test)]
mod tests;
