//! The password shield (issue 22 item 2): `HashPassword` and `VerifyPassword`.
//!
//! A client (a mobile app) seals `{password, timestamp, nonce}` (the structure of
//! [`crate::crypto::password_hash`]) to a PASSWORD key's public key; the application server
//! forwards the ciphertext and keeps only the stored hash. Inside the KMS, on every path and in
//! this order:
//!
//! 1. both keys are reached (namespace or grant `hash-password` / `verify-password`) and their
//!    purpose, state and policy checked, before anything is decrypted;
//! 2. the sealed password is opened with the password key (newest version first, so apps that
//!    still ship an older public key keep working after a rotation);
//! 3. its timestamp must be within `window_seconds` of the KMS's clock, and its nonce new
//!    (the replay guard of `crate::replay`, domain `password`, remembered until the timestamp
//!    leaves the window), so a captured ciphertext cannot be replayed;
//! 4. `HashPassword` applies the strength rules, then hashes: HMAC-SM3 of the password under the
//!    pepper key's newest version (the pepper), then argon2id (standard policy) or
//!    PBKDF2-HMAC-SM3 (GM-only) with a fresh salt; the stored string names the pepper key and
//!    version. `VerifyPassword` recomputes with the stored salt and cost under the version the
//!    hash names, and compares in constant time. On a match under an older pepper version, an
//!    older cost or another function than the policy's, it also returns a new hash to store
//!    (re-peppered with the newest version: pepper rotation is `RotateKey` on the pepper key).
//!
//! The password exists only in the decrypted buffer ([`UnsealedPassword`]), its lower-case copy
//! and the pepper output, all zeroizing; errors, `Debug` and the audit name rules and keys only.

use std::time::Duration;

use super::Kms;
use crate::alg::Purpose;
use crate::authz::{Authorized, GrantOp, Op, Operation, ops};
use crate::crypto;
use crate::crypto::password_hash::{
    self, Cost, HASH_LEN, SALT_LEN, StoredHash, StrengthRules, UnsealedPassword,
};
use crate::error::{CryptoError, Error, InvalidInput, PasswordRefusal};
use crate::keys::record::KeyRecord;
use crate::keys::state::KeyState;
use crate::keys::{KeyId, KeyRef};
use crate::policy::{Approved, Open, Protect};
use crate::replay::{Freshness, ReplayGuard, ReplaySettings};

/// The longest sealed-password ciphertext (an RSA-4096 block is 512 bytes; SM2 adds 97 to 110
/// bytes to the structure's 303 at most).
pub const MAX_SEALED_CIPHERTEXT: usize = 1024;
/// At most this many user identifiers per call, each 1 to 256 bytes.
pub const MAX_IDENTIFIERS: usize = 16;
pub const MAX_IDENTIFIER_BYTES: usize = 256;

/// The password shield's settings (`[password]` in the server's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordSettings {
    /// How far a sealed password's timestamp may be from the KMS's clock, either way.
    pub window_seconds: u64,
    pub rules: StrengthRules,
    /// Argon2id cost of new hashes under the standard policy: memory (KiB), passes, lanes.
    pub argon2_m_kib: u32,
    pub argon2_t: u32,
    pub argon2_p: u32,
    /// PBKDF2-HMAC-SM3 iterations of new hashes under the GM-only policy.
    pub pbkdf2_iterations: u32,
}

impl PasswordSettings {
    /// ±300 s; length ≥ 8 with letters and digits and no user identifier; costs of about 50 ms
    /// per hash on the development machine (2 cores; measured with RustCrypto's crates in a
    /// release build, the fastest of 15 runs): argon2id with 32 MiB, 3 passes, 1 lane (49 ms;
    /// above OWASP's 19 MiB × 2 minimum, with memory rather than passes bought), and
    /// PBKDF2-HMAC-SM3 with 150 000 iterations (0.29 to 0.45 µs each: 44 to 68 ms). `kms bench
    /// --op hash-password` measures the whole call.
    pub const DEFAULT: Self = Self {
        window_seconds: 300,
        rules: StrengthRules::DEFAULT,
        argon2_m_kib: 32 * 1024,
        argon2_t: 3,
        argon2_p: 1,
        pbkdf2_iterations: 150_000,
    };

    /// The cost new hashes of `alg` get.
    #[must_use]
    pub fn cost(&self, alg: crate::alg::PasswordHashAlg) -> Cost {
        match alg {
            crate::alg::PasswordHashAlg::Argon2id => Cost::Argon2id {
                m_kib: self.argon2_m_kib,
                t: self.argon2_t,
                p: self.argon2_p,
            },
            crate::alg::PasswordHashAlg::Pbkdf2Sm3 => Cost::Pbkdf2Sm3 {
                iterations: self.pbkdf2_iterations,
            },
        }
    }
}

impl Default for PasswordSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What `HashPassword` returns. Its `Debug` shows the hash's length only.
pub struct HashPasswordOutput {
    /// The stored-hash string (`$kms-pepper$…`) for the application to keep.
    pub hash: String,
    pub password_key: KeyId,
    pub password_key_version: u32,
    pub pepper_key: KeyId,
    pub pepper_key_version: u32,
}

/// What `VerifyPassword` returns: match or no match, and nothing about why not. Its `Debug`
/// shows whether there is a re-hash, not the hash.
pub struct VerifyPasswordOutput {
    pub matched: bool,
    /// On a match whose hash is out of date (older pepper version, other cost or function): the
    /// new hash the application should store in its place.
    pub rehashed: Option<String>,
    /// On a match: the password breaks today's strength rules (with the identifiers given), so
    /// the application may ask the user to change it. Always false on no match.
    pub weak: bool,
    pub password_key: KeyId,
    pub password_key_version: u32,
    pub pepper_key: KeyId,
    /// The version the stored hash names (the rehash, if any, uses the newest).
    pub pepper_key_version: u32,
    /// The password or pepper key is compromised (KEY-8: allowed to verify, flagged).
    pub key_compromised: bool,
}

impl core::fmt::Debug for HashPasswordOutput {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HashPasswordOutput")
            .field("hash_len", &self.hash.len())
            .field("password_key", &self.password_key)
            .field("password_key_version", &self.password_key_version)
            .field("pepper_key", &self.pepper_key)
            .field("pepper_key_version", &self.pepper_key_version)
            .finish()
    }
}

impl core::fmt::Debug for VerifyPasswordOutput {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VerifyPasswordOutput")
            .field("matched", &self.matched)
            .field("rehashed", &self.rehashed.is_some())
            .field("weak", &self.weak)
            .field("password_key", &self.password_key)
            .field("password_key_version", &self.password_key_version)
            .field("pepper_key", &self.pepper_key)
            .field("pepper_key_version", &self.pepper_key_version)
            .field("key_compromised", &self.key_compromised)
            .finish()
    }
}

fn check_identifiers(identifiers: &[String]) -> Result<(), Error> {
    if identifiers.len() > MAX_IDENTIFIERS {
        return Err(InvalidInput::new("identifiers", "at most 16 per call").into());
    }
    if identifiers
        .iter()
        .any(|i| i.is_empty() || i.len() > MAX_IDENTIFIER_BYTES)
    {
        return Err(InvalidInput::new("identifiers", "each must be 1 to 256 bytes").into());
    }
    Ok(())
}

fn check_sealed_len(sealed: &[u8]) -> Result<(), Error> {
    if sealed.is_empty() || sealed.len() > MAX_SEALED_CIPHERTEXT {
        return Err(InvalidInput::new(
            "sealed password",
            "must be 1 to 1024 bytes of SM2 or RSA-OAEP ciphertext",
        )
        .into());
    }
    Ok(())
}

impl Kms {
    /// The password key, reached and checked for opening a sealed password.
    fn password_key<O: Operation>(
        &self,
        auth: &Authorized<'_, O>,
        key: &KeyRef,
        grant: GrantOp,
    ) -> Result<(KeyRecord, Approved<Open>), Error> {
        let (record, _) = self.reach(auth.principal(), key, grant)?;
        self.check_open(&record, O::OP, Purpose::Password)?;
        let approved = self
            .config
            .policy
            .approve_open(record.purpose, record.spec)?;
        Ok((record, approved))
    }

    /// Opens a sealed password with the key's versions, newest first.
    fn open_sealed(
        &self,
        vault: &super::Unsealed,
        record: &KeyRecord,
        approved: &Approved<Open>,
        sealed: &[u8],
    ) -> Result<(UnsealedPassword, u32), Error> {
        for v in record.versions.iter().rev() {
            let material = self.material(vault, record, v.version)?;
            if let Ok(plaintext) = crypto::asymmetric_decrypt(approved, &material, sealed) {
                return Ok((password_hash::parse_sealed(plaintext)?, v.version));
            }
        }
        Err(CryptoError::DecryptionFailed.into())
    }

    /// Freshness, then the nonce: a sealed password is good once, within the window.
    fn admit_sealed(&self, key: KeyId, opened: &UnsealedPassword) -> Result<(), Error> {
        let window = self.config.password.window_seconds;
        let skew = opened.timestamp().abs_diff(self.now());
        if skew > window {
            return Err(PasswordRefusal::Stale { skew, window }.into());
        }
        if self.password_nonce_is_new(key, opened.nonce(), opened.timestamp())? {
            Ok(())
        } else {
            Err(PasswordRefusal::Replayed.into())
        }
    }

    /// Records the nonce with the replay guard (`crate::replay`, issue 22 item 3) under the
    /// domain `password` and the password key's id, until the timestamp leaves the window, and
    /// says whether it was new. The guard keeps SM3 of the nonce only, on every node of the
    /// store; at its bound it refuses (RESOURCE_EXHAUSTED) rather than forget a live nonce.
    fn password_nonce_is_new(
        &self,
        key: KeyId,
        nonce: &[u8],
        timestamp: u64,
    ) -> Result<bool, Error> {
        let guard = ReplayGuard::new(
            &*self.store,
            ReplaySettings {
                window: Duration::from_secs(self.config.password.window_seconds),
                max_entries: self.config.replay.max_entries,
            },
        );
        match guard.remember("password", &key.to_string(), nonce, timestamp, self.now())? {
            Freshness::Fresh => Ok(true),
            Freshness::Replayed => Ok(false),
            // `admit_sealed` checked the window with the same clock and width just before.
            Freshness::Stale => Err(PasswordRefusal::Stale {
                skew: timestamp.abs_diff(self.now()),
                window: self.config.password.window_seconds,
            }
            .into()),
        }
    }

    /// A new stored hash of `password` under the pepper key's version `pepper_version`.
    fn new_hash(
        &self,
        pepper_ok: &Approved<Protect>,
        pepper: &KeyRecord,
        pepper_version: u32,
        vault: &super::Unsealed,
        password: &str,
    ) -> Result<String, Error> {
        let hash_fn = self.config.policy.password_hash();
        let cost = self.config.password.cost(hash_fn.alg());
        let material = self.material(vault, pepper, pepper_version)?;
        let peppered = password_hash::pepper(pepper_ok, &material, password)?;
        let salt = crypto::rng::random_public(SALT_LEN)?;
        let hash = password_hash::derive(&hash_fn, cost, &peppered, &salt, HASH_LEN)?;
        Ok(StoredHash {
            pepper_key: pepper.id.0,
            pepper_version,
            cost,
            salt,
            hash: hash.expose_secret().to_vec(),
        }
        .to_phc())
    }

    /// Opens a sealed password, checks it is fresh, new and strong, and returns a stored hash
    /// of it under the pepper key's newest version (module docs).
    ///
    /// # Errors
    /// Reach, purpose, state and policy of either key (as every data-plane call); a sealed
    /// password that does not decrypt or parse; [`PasswordRefusal`] for a stale, replayed or
    /// weak one.
    pub fn hash_password(
        &self,
        auth: &Authorized<'_, ops::HashPassword>,
        password_key: &KeyRef,
        pepper_key: &KeyRef,
        sealed: &[u8],
        identifiers: &[String],
    ) -> Result<HashPasswordOutput, Error> {
        check_identifiers(identifiers)?;
        check_sealed_len(sealed)?;
        let vault = self.begin(auth)?;
        let (record, open) = self.password_key(auth, password_key, GrantOp::HashPassword)?;
        let (pepper, _) = self.reach(auth.principal(), pepper_key, GrantOp::HashPassword)?;
        let pepper_ok = self.check_protect(&pepper, Op::HashPassword, Purpose::Pepper)?;
        let pepper_version = pepper
            .newest()
            .map(|v| v.version)
            .ok_or(CryptoError::MalformedKey)?;
        let (opened, version) = self.open_sealed(&vault, &record, &open, sealed)?;
        self.admit_sealed(record.id, &opened)?;
        password_hash::check_strength(
            opened.expose_password(),
            &self.config.password.rules,
            identifiers,
        )
        .map_err(PasswordRefusal::Weak)?;
        let hash = self.new_hash(
            &pepper_ok,
            &pepper,
            pepper_version,
            &vault,
            opened.expose_password(),
        )?;
        Ok(HashPasswordOutput {
            hash,
            password_key: record.id,
            password_key_version: version,
            pepper_key: pepper.id,
            pepper_key_version: pepper_version,
        })
    }

    /// Opens a sealed password and checks it against a stored hash: match or no match only,
    /// with a new hash to store when the old one is out of date (module docs).
    ///
    /// # Errors
    /// As [`Kms::hash_password`] (no strength refusal: a weak but correct password matches,
    /// flagged `weak`), and a stored hash that does not parse.
    pub fn verify_password(
        &self,
        auth: &Authorized<'_, ops::VerifyPassword>,
        password_key: &KeyRef,
        sealed: &[u8],
        stored: &str,
        identifiers: &[String],
    ) -> Result<VerifyPasswordOutput, Error> {
        check_identifiers(identifiers)?;
        check_sealed_len(sealed)?;
        let parsed = StoredHash::parse(stored)?;
        let vault = self.begin(auth)?;
        let (record, open) = self.password_key(auth, password_key, GrantOp::VerifyPassword)?;
        let (pepper, _) = self.reach(
            auth.principal(),
            &KeyRef::Id(KeyId(parsed.pepper_key)),
            GrantOp::VerifyPassword,
        )?;
        self.check_open(&pepper, Op::VerifyPassword, Purpose::Pepper)?;
        let pepper_open = self
            .config
            .policy
            .approve_open(pepper.purpose, pepper.spec)?;
        if pepper.version(parsed.pepper_version).is_none() {
            return Err(Error::NotFound {
                what: "pepper key version",
                name: format!("{}/{}", pepper.id, parsed.pepper_version),
            });
        }
        let hash_fn = self
            .config
            .policy
            .approve_password_verify(parsed.cost.alg());
        let (opened, version) = self.open_sealed(&vault, &record, &open, sealed)?;
        self.admit_sealed(record.id, &opened)?;
        let material = self.material(&vault, &pepper, parsed.pepper_version)?;
        let peppered = password_hash::pepper(&pepper_open, &material, opened.expose_password())?;
        let again = password_hash::derive(
            &hash_fn,
            parsed.cost,
            &peppered,
            &parsed.salt,
            parsed.hash.len(),
        )?;
        // Constant time over the whole hash (`subtle`), whatever the stored length.
        let matched = again.ct_eq(&crate::SecretBytes::copy_from_slice(&parsed.hash));
        let key_compromised =
            record.state == KeyState::Compromised || pepper.state == KeyState::Compromised;
        let mut out = VerifyPasswordOutput {
            matched,
            rehashed: None,
            weak: false,
            password_key: record.id,
            password_key_version: version,
            pepper_key: pepper.id,
            pepper_key_version: parsed.pepper_version,
            key_compromised,
        };
        if !matched {
            return Ok(out);
        }
        out.weak = password_hash::check_strength(
            opened.expose_password(),
            &self.config.password.rules,
            identifiers,
        )
        .is_err();
        // Re-hash what is out of date, when the pepper key may still protect (a disabled or
        // compromised pepper verifies, but makes nothing new).
        let newest = pepper.newest().map_or(0, |v| v.version);
        let policy_fn = self.config.policy.password_hash().alg();
        let current_cost = self.config.password.cost(policy_fn);
        let stale = newest != parsed.pepper_version
            || parsed.cost != current_cost
            || parsed.salt.len() != SALT_LEN
            || parsed.hash.len() != HASH_LEN;
        if stale
            && let Ok(pepper_ok) = self.check_protect(&pepper, Op::VerifyPassword, Purpose::Pepper)
        {
            out.rehashed = Some(self.new_hash(
                &pepper_ok,
                &pepper,
                newest,
                &vault,
                opened.expose_password(),
            )?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
