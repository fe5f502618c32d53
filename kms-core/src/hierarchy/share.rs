//! Unseal shares: the unseal key split M-of-N with Shamir's scheme over GF(256) (the `blahaj`
//! crate, the maintained fork of `sharks` that fixed RUSTSEC-2024-0398's coefficient bias).
//!
//! A share as an administrator holds it is text: `kms-share-1-` followed by the hex of
//!
//! ```text
//! set id (8) ‖ threshold M (1) ‖ x (1) ‖ y (key length) ‖ checksum (8) = SM3(all before)[..8]
//! ```
//!
//! The checksum catches typos and corruption before a share is used; the set id catches a
//! share from another initialization; and the combined key must open the sealed root key, so
//! a wrong combination is an error, never a wrong key.

use core::fmt;

use blahaj::{Share as RawShare, Sharks};
use getrandom::rand_core::UnwrapErr;

use super::UnsealKey;
use super::wrap::WrapAlg;
use crate::crypto::digest;
use crate::crypto::rng::SysRng;
use crate::error::{Error, InvalidInput, UnsealError};
use crate::policy::ApprovedDigest;
use crate::secret::SecretBytes;

const PREFIX: &str = "kms-share-1-";
pub const SET_ID_LEN: usize = 8;
const CHECKSUM_LEN: usize = 8;

/// One administrator's share, as text. Zeroized on drop; `Debug` shows nothing secret.
pub struct Share(SecretBytes);

impl Share {
    /// The text form to hand to an administrator.
    #[must_use]
    pub fn expose_text(&self) -> &str {
        // Built from ASCII hex and a fixed prefix only.
        std::str::from_utf8(self.0.expose_secret()).unwrap_or_default()
    }

    /// Accepts a share as typed (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Self {
        Self(SecretBytes::copy_from_slice(text.trim().as_bytes()))
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Share(..)")
    }
}

/// A share decoded and checked, ready to combine. Public (with read-only access to its public
/// fields) so that the fuzz targets in `fuzz-targets/` reach the share parser; its secret part
/// never leaves this module.
pub struct ParsedShare {
    pub(crate) set_id: [u8; SET_ID_LEN],
    pub(crate) threshold: u8,
    pub(crate) x: u8,
    raw: SecretBytes,
}

impl ParsedShare {
    /// Which initialization the share belongs to.
    #[must_use]
    pub fn set_id(&self) -> [u8; SET_ID_LEN] {
        self.set_id
    }

    /// M, the number of shares that rebuild the unseal key.
    #[must_use]
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// The share's x coordinate (1 to 255 for shares we made).
    #[must_use]
    pub fn x(&self) -> u8 {
        self.x
    }

    /// The secret part (x ‖ y), for the custody commitment only.
    pub(crate) fn payload(&self) -> &[u8] {
        self.raw.expose_secret()
    }
}

impl fmt::Debug for ParsedShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ParsedShare(set {}, threshold {}, x {})",
            hex::encode(self.set_id),
            self.threshold,
            self.x
        )
    }
}

/// Splits the unseal key into `shares` shares, any `threshold` of which rebuild it.
pub(crate) fn split_unseal_key(
    key: &UnsealKey,
    shares: u8,
    threshold: u8,
    set_id: [u8; SET_ID_LEN],
) -> Result<Vec<Share>, Error> {
    split(key.0.expose_secret(), shares, threshold, set_id)
}

/// The unseal key from parsed shares; a length that does not fit `alg` is a wrong combination.
pub(crate) fn combine_unseal_key(shares: &[ParsedShare], alg: WrapAlg) -> Result<UnsealKey, Error> {
    let secret = combine(shares)?;
    if secret.len() != alg.key_len() {
        return Err(UnsealError::Mismatch.into());
    }
    Ok(UnsealKey::from_bytes(alg, secret))
}

fn split(
    secret: &[u8],
    shares: u8,
    threshold: u8,
    set_id: [u8; SET_ID_LEN],
) -> Result<Vec<Share>, Error> {
    if threshold == 0 || shares == 0 || threshold > shares {
        return Err(InvalidInput::new("shares", "need 1 ≤ threshold ≤ shares ≤ 255").into());
    }
    let mut rng = UnwrapErr(SysRng);
    let dealer = Sharks(threshold).dealer_rng(secret, &mut rng);
    let out = dealer
        .take(usize::from(shares))
        .map(|raw| {
            let xy = SecretBytes::from_vec(Vec::from(&raw));
            let mut body = Vec::with_capacity(SET_ID_LEN + 1 + xy.len() + CHECKSUM_LEN);
            body.extend_from_slice(&set_id);
            body.push(threshold);
            body.extend_from_slice(xy.expose_secret());
            let sum = digest(ApprovedDigest::SM3, &body);
            body.extend_from_slice(&sum[..CHECKSUM_LEN]);
            let mut text = String::with_capacity(PREFIX.len() + body.len() * 2);
            text.push_str(PREFIX);
            text.push_str(&hex::encode(&body));
            zeroize::Zeroize::zeroize(&mut body);
            Share(SecretBytes::from_vec(text.into_bytes()))
        })
        .collect();
    Ok(out)
}

/// Decodes a share and checks its checksum. Public for the fuzz targets (`fuzz-targets/`).
pub fn parse(share: &Share) -> Result<ParsedShare, Error> {
    let text = share.expose_text();
    let hex_part = text.strip_prefix(PREFIX).ok_or(UnsealError::Corrupt)?;
    let body = SecretBytes::from_vec(hex::decode(hex_part).map_err(|_| UnsealError::Corrupt)?);
    let b = body.expose_secret();
    if b.len() < SET_ID_LEN + 1 + 2 + CHECKSUM_LEN {
        return Err(UnsealError::Corrupt.into());
    }
    let (payload, sum) = b.split_at(b.len() - CHECKSUM_LEN);
    let expected = digest(ApprovedDigest::SM3, payload);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        &expected[..CHECKSUM_LEN],
        sum,
    )) {
        return Err(UnsealError::Corrupt.into());
    }
    let mut set_id = [0u8; SET_ID_LEN];
    set_id.copy_from_slice(&payload[..SET_ID_LEN]);
    let threshold = payload[SET_ID_LEN];
    let x = payload[SET_ID_LEN + 1];
    Ok(ParsedShare {
        set_id,
        threshold,
        x,
        raw: SecretBytes::copy_from_slice(&payload[SET_ID_LEN + 1..]),
    })
}

/// Rebuilds the secret from parsed shares (all from one set, at least `threshold` of them).
/// Public for the fuzz targets (`fuzz-targets/`); a wrong combination yields a key that fails
/// to open the sealed root key, which the callers check.
pub fn combine(shares: &[ParsedShare]) -> Result<SecretBytes, Error> {
    let threshold = shares.first().ok_or(UnsealError::Mismatch)?.threshold;
    let raws = shares
        .iter()
        .map(|s| RawShare::try_from(s.raw.expose_secret()).map_err(|_| UnsealError::Corrupt))
        .collect::<Result<Vec<_>, _>>()?;
    let secret = Sharks(threshold)
        .recover(&raws)
        .map_err(|_| UnsealError::Mismatch)?;
    Ok(SecretBytes::from_vec(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_threshold_shares_rebuild_the_secret() {
        let secret = crate::crypto::rng::random_secret(16).unwrap();
        let shares = split(secret.expose_secret(), 5, 3, [7; SET_ID_LEN]).unwrap();
        assert_eq!(shares.len(), 5);
        let parsed: Vec<_> = shares.iter().map(|s| parse(s).unwrap()).collect();
        for combo in [[0, 1, 2], [0, 2, 4], [1, 3, 4], [2, 3, 4]] {
            let picked: Vec<_> = combo.iter().map(|&i| parse(&shares[i]).unwrap()).collect();
            assert!(combine(&picked).unwrap().ct_eq(&secret));
        }
        // Two shares of a 3-of-5 split do not rebuild it.
        assert!(matches!(
            combine(&parsed[..2]),
            Err(Error::Unseal(UnsealError::Mismatch))
        ));
    }

    #[test]
    fn corrupted_shares_are_caught_by_the_checksum() {
        let secret = crate::crypto::rng::random_secret(16).unwrap();
        let shares = split(secret.expose_secret(), 2, 2, [1; SET_ID_LEN]).unwrap();
        let text = shares[0].expose_text().to_owned();
        for i in PREFIX.len()..text.len() {
            let mut t = text.clone().into_bytes();
            t[i] = if t[i] == b'0' { b'1' } else { b'0' };
            let typo = Share::from_text(std::str::from_utf8(&t).unwrap());
            assert!(
                matches!(parse(&typo), Err(Error::Unseal(UnsealError::Corrupt))),
                "typo at {i} accepted"
            );
        }
        assert!(matches!(
            parse(&Share::from_text("kms-share-1-zz")),
            Err(Error::Unseal(UnsealError::Corrupt))
        ));
        assert!(matches!(
            parse(&Share::from_text("")),
            Err(Error::Unseal(UnsealError::Corrupt))
        ));
        assert!(format!("{:?}", shares[0]) == "Share(..)");
    }

    #[test]
    fn bad_parameters_are_refused() {
        let secret = crate::crypto::rng::random_secret(16).unwrap();
        assert!(matches!(
            split(secret.expose_secret(), 2, 3, [0; SET_ID_LEN]),
            Err(Error::InvalidArgument(e)) if e.field == "shares"
        ));
        assert!(matches!(
            split(secret.expose_secret(), 0, 0, [0; SET_ID_LEN]),
            Err(Error::InvalidArgument(e)) if e.field == "shares"
        ));
    }
}
