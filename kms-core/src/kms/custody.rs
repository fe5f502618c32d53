//! Who holds the unseal shares, and the rules an unseal follows (issue 18: M-of-N for real).
//!
//! At init each share is issued to a named holder and, when the holder's public key is given,
//! encrypted to it (SM2, GM/T 0009 C1C3C2 DER, or RSA-OAEP-SHA-256), so that the response, and
//! any file it is saved to, never holds several plaintext shares. Holders who are not the
//! initialising administrator are registered as custodians: they may give their share and read
//! the status, nothing else.
//!
//! The seal configuration keeps, per share, its holder and an SM3 commitment to it. Unseal then
//! counts *people*, not shares:
//! - a share is accepted only from its holder (or from anyone with the server's break-glass
//!   setting on, and then the record is flagged);
//! - each giver counts once: one person with every share cannot unseal alone;
//! - a share that fails its commitment is refused on its own, and the shares other holders gave
//!   stay counted;
//! - an unseal of an unsealed KMS is refused, not a silent success.
//!
//! Shares of a KMS initialised without holders (before this rule, or with `shares` alone) are
//! unbound: anyone the matrix lets unseal may give any of them, but still once per person.

use serde::{Deserialize, Serialize};

use crate::alg::{KeySpec, Purpose};
use crate::authz::{Principal, Role};
use crate::crypto::{self, PublicKey};
use crate::error::{Error, InvalidInput, UnsealError};
use crate::hierarchy::share::{ParsedShare, Share};
use crate::policy::{ApprovedDigest, Policy};

/// A share holder named at init.
#[derive(Debug)]
pub struct Holder {
    /// The holder's certificate subject (as a principal is named).
    pub subject: String,
    /// When given, the share is issued encrypted to this key and never in plaintext.
    pub public_key: Option<PublicKey>,
}

/// What `init` is asked to do.
#[derive(Debug)]
pub struct InitPlan {
    /// The first administrator.
    pub admin: String,
    pub threshold: u8,
    /// One share per holder. Empty: `shares` unbound shares, all returned to the caller.
    pub holders: Vec<Holder>,
    /// The number of unbound shares, when no holders are named.
    pub shares: u8,
}

/// One share as init hands it out.
#[derive(Debug)]
pub struct IssuedShare {
    /// Its holder, when holders were named.
    pub holder: Option<String>,
    pub form: ShareForm,
}

/// A share in the clear (for its holder only) or encrypted to the holder's public key.
#[derive(Debug)]
pub enum ShareForm {
    Plain(Share),
    Encrypted {
        /// The recipient key's algorithm: SM2 or RSA (OAEP-SHA-256).
        spec: KeySpec,
        ciphertext: Vec<u8>,
        /// SM3 of the recipient's SPKI DER, so the holder can tell which key to use.
        recipient_sm3: [u8; 32],
    },
}

/// One issued share as the seal configuration remembers it (nothing secret).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct ShareRecord {
    pub(super) x: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) holder: Option<String>,
    /// Hex SM3 commitment to the share's payload (see [`commitment`]).
    pub(super) commitment: String,
}

/// A share given towards the next unseal, and by whom.
pub(super) struct Given {
    pub(super) share: ParsedShare,
    /// `None` for the local (dev mode, restore) path, which has no caller.
    pub(super) giver: Option<String>,
}

/// The SM3 commitment to a share: domain-separated, over the share's whole payload. The payload
/// is a random point of a degree-(M-1) polynomial, so its hash reveals nothing usable.
pub(super) fn commitment(share: &ParsedShare) -> String {
    let mut input = b"kms unseal share commitment v1\0".to_vec();
    input.extend_from_slice(&share.set_id());
    input.push(share.threshold());
    input.extend_from_slice(share.payload());
    let d = crypto::digest(ApprovedDigest::SM3, &input);
    zeroize::Zeroize::zeroize(&mut input);
    hex::encode(d)
}

impl InitPlan {
    /// Checks the plan: a threshold within the shares, holders named once each, valid subjects.
    /// Returns the number of shares to make.
    pub(super) fn check(&self) -> Result<u8, Error> {
        let shares = if self.holders.is_empty() {
            self.shares
        } else {
            if self.shares != 0 && usize::from(self.shares) != self.holders.len() {
                return Err(InvalidInput::new(
                    "shares",
                    "with holders named, there is one share per holder",
                )
                .into());
            }
            u8::try_from(self.holders.len())
                .map_err(|_| InvalidInput::new("holders", "at most 255 holders"))?
        };
        if self.threshold == 0 || self.threshold > shares {
            return Err(InvalidInput::new(
                "threshold",
                "must be between 1 and the number of shares",
            )
            .into());
        }
        for (i, h) in self.holders.iter().enumerate() {
            Principal::new(&h.subject, Role::Custodian)?;
            if self.holders[..i].iter().any(|o| o.subject == h.subject) {
                return Err(InvalidInput::new(
                    "holders",
                    format!(
                        "{} is named twice: each holder holds one share, so that M shares \
                         always means M people",
                        h.subject
                    ),
                )
                .into());
            }
        }
        Ok(shares)
    }
}

/// Issues `share` to `holder`: encrypted to its public key when it has one.
pub(super) fn issue(
    policy: &Policy,
    holder: Option<&Holder>,
    share: Share,
) -> Result<IssuedShare, Error> {
    let Some(holder) = holder else {
        return Ok(IssuedShare {
            holder: None,
            form: ShareForm::Plain(share),
        });
    };
    let form = match &holder.public_key {
        None => ShareForm::Plain(share),
        Some(key) => {
            let approved = policy.approve(Purpose::AsymmetricDecrypt, key.spec())?;
            let ciphertext =
                crypto::encrypt_to_public_key(&approved, key, share.expose_text().as_bytes())?;
            ShareForm::Encrypted {
                spec: key.spec(),
                ciphertext,
                recipient_sm3: key.fingerprint_sm3(),
            }
        }
    };
    Ok(IssuedShare {
        holder: Some(holder.subject.clone()),
        form,
    })
}

/// How a share given by `giver` stands against the issued shares and those already given.
/// `Ok(true)` when it was accepted only because break-glass is on.
pub(super) fn admit(
    records: &[ShareRecord],
    pending: &[Given],
    share: &ParsedShare,
    giver: Option<&str>,
    break_glass: bool,
) -> Result<bool, Error> {
    if pending.iter().any(|g| g.share.x() == share.x()) {
        return Err(UnsealError::Duplicate.into());
    }
    if let Some(giver) = giver
        && pending.iter().any(|g| g.giver.as_deref() == Some(giver))
    {
        return Err(UnsealError::AlreadyGave.into());
    }
    // Unbound shares (a KMS initialised before holders existed) carry no record.
    let Some(record) = records.iter().find(|r| r.x == share.x()) else {
        return if records.is_empty() {
            Ok(false)
        } else {
            Err(UnsealError::Corrupt.into())
        };
    };
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        commitment(share).as_bytes(),
        record.commitment.as_bytes(),
    )) {
        return Err(UnsealError::Corrupt.into());
    }
    match (&record.holder, giver) {
        (Some(holder), Some(giver)) if holder != giver => {
            if break_glass {
                Ok(true)
            } else {
                Err(UnsealError::NotHolder.into())
            }
        }
        _ => Ok(false),
    }
}
