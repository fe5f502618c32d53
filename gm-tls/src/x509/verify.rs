//! Chain verification for SM2-with-SM3 certificates (the RFC 5280 §6 subset the KMS needs).
//!
//! The path is built from the end-entity certificate upwards: a candidate issuer is any trust
//! anchor or unused intermediate whose subject is byte-for-byte the child's issuer (and whose
//! subjectKeyIdentifier equals the child's authorityKeyIdentifier when both exist). Trust
//! anchors are tried first, then intermediates depth-first. Each link checks, in order:
//!
//! 1. the issuer is a CA: basicConstraints cA, and keyCertSign if it has keyUsage;
//! 2. its pathLenConstraint covers the intermediates already below it;
//! 3. `now` is within its validity period;
//! 4. its extendedKeyUsage, when present, allows the purpose (or anyExtendedKeyUsage);
//! 5. its key is SM2, and the child's signature verifies with it (SM3, default ID).
//!
//! Trust anchors are checked like any other issuer (a CA, valid now, SM2) but their own
//! signature is not: they are trusted by configuration. The search is bounded by
//! [`MAX_CHAIN_LEN`] and by a budget of signature checks, so a peer that sends a pile of
//! intermediates with the same name cannot make it exponential.

use std::cell::Cell;
use std::fmt;

use signature::Verifier as _;

use super::identity::{CertIdentity, identity_of};
use super::parse::{Cert, display_name};
use super::{DEFAULT_DIST_ID, Error};

/// The most certificates one path may hold, end entity and trust anchor included.
pub const MAX_CHAIN_LEN: usize = 8;
/// Signature checks one verification may spend on path building before giving up.
const MAX_SIGNATURE_CHECKS: u32 = 64;

/// What the end-entity certificate is being used for, checked against its extendedKeyUsage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A TLS server (`id-kp-serverAuth`).
    ServerAuth,
    /// A TLS client (`id-kp-clientAuth`).
    ClientAuth,
    /// No extendedKeyUsage check (the caller checks the use itself).
    Any,
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ServerAuth => "serverAuth",
            Self::ClientAuth => "clientAuth",
            Self::Any => "any purpose",
        })
    }
}

/// A chain that verified.
#[derive(Clone, Debug)]
pub struct VerifiedChain {
    /// What the end-entity certificate says about its subject.
    pub leaf: CertIdentity,
    /// The end-entity certificate's SM2 key (for TLS CertificateVerify).
    pub leaf_public_key: sm2::PublicKey,
    /// Indices into the `intermediates` argument of the certificates used, leaf side first.
    pub intermediates_used: Vec<usize>,
    /// Index into the `trust_anchors` argument of the anchor the chain ends at.
    pub trust_anchor: usize,
}

/// Verifies that `end_entity_der` chains to one of `trust_anchors` through `intermediates`, at
/// `now_unix` (seconds since the Unix epoch), for `purpose`.
///
/// Every certificate given must parse strictly and be signed with SM2/SM3; every issuer key on
/// the path must be SM2; the end entity must not be a CA and its key must be SM2. See the module
/// documentation for the checks on each link. Never panics, whatever the input.
///
/// # Errors
///
/// The [`Error`] of the first check that failed: [`Error::Malformed`],
/// [`Error::WrongSignatureAlgorithm`], [`Error::WrongKeyAlgorithm`], [`Error::WrongCurve`],
/// [`Error::Expired`], [`Error::NotYetValid`], [`Error::CaAsEndEntity`], [`Error::WrongPurpose`],
/// [`Error::UnsupportedCriticalExtension`] for the end entity; for the path, the error of the
/// first candidate issuer tried ([`Error::NotCa`], [`Error::PathLenExceeded`],
/// [`Error::BadSignature`], …) or [`Error::UnknownIssuer`] when no candidate exists.
pub fn verify_chain(
    end_entity_der: &[u8],
    intermediates: &[&[u8]],
    trust_anchors: &[&[u8]],
    now_unix: u64,
    purpose: Purpose,
) -> Result<VerifiedChain, Error> {
    let leaf = Cert::parse(end_entity_der)?;
    let leaf_public_key = leaf.sm2_public_key()?;
    if leaf.basic_constraints.is_some_and(|bc| bc.ca) {
        return Err(Error::CaAsEndEntity {
            subject: leaf.subject,
        });
    }
    check_validity(&leaf, now_unix)?;
    check_purpose(&leaf, purpose, false)?;
    let leaf_identity = identity_of(&leaf)?;

    let search = Search {
        intermediates: parse_all(intermediates)?,
        anchors: parse_all(trust_anchors)?,
        now_unix,
        purpose,
        checks: Cell::new(0),
    };
    let mut path = Vec::new();
    let trust_anchor = search.extend(&leaf, &mut path)?;
    Ok(VerifiedChain {
        leaf: leaf_identity,
        leaf_public_key,
        intermediates_used: path,
        trust_anchor,
    })
}

fn parse_all<'a>(ders: &[&'a [u8]]) -> Result<Vec<Cert<'a>>, Error> {
    ders.iter().map(|der| Cert::parse(der)).collect()
}

struct Search<'a> {
    intermediates: Vec<Cert<'a>>,
    anchors: Vec<Cert<'a>>,
    now_unix: u64,
    purpose: Purpose,
    /// Signature checks spent so far (a `Cell` so the search can hold borrows of candidates).
    checks: Cell<u32>,
}

impl Search<'_> {
    /// Finds an issuer for `child` and, through it, a trust anchor; `path` holds the indices of
    /// the intermediates between the leaf and `child` (inclusive). Returns the anchor's index.
    fn extend(&self, child: &Cert<'_>, path: &mut Vec<usize>) -> Result<usize, Error> {
        // Leaf + path + the issuer we are about to add.
        if path.len() + 2 > MAX_CHAIN_LEN {
            return Err(Error::ChainTooLong { max: MAX_CHAIN_LEN });
        }
        let below = path.len();
        let mut first_error = None;

        for (i, anchor) in self.anchors.iter().enumerate() {
            if !anchor.may_have_issued(child) {
                continue;
            }
            match self.check_link(child, anchor, below) {
                Ok(()) => return Ok(i),
                Err(e @ Error::PathSearchExhausted { .. }) => return Err(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }

        for (i, candidate) in self.intermediates.iter().enumerate() {
            if path.contains(&i) || candidate.der == child.der || !candidate.may_have_issued(child)
            {
                continue;
            }
            let linked = self.check_link(child, candidate, below).and_then(|()| {
                path.push(i);
                let found = self.extend(candidate, path);
                if found.is_err() {
                    path.pop();
                }
                found
            });
            match linked {
                Ok(anchor) => return Ok(anchor),
                Err(e @ Error::PathSearchExhausted { .. }) => return Err(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }

        Err(first_error.unwrap_or_else(|| Error::UnknownIssuer {
            subject: child.subject.clone(),
            issuer: display_name(child.x509.issuer()),
        }))
    }

    /// Checks that `issuer` may have issued `child`, with `below` intermediates already under
    /// it, and that it did.
    fn check_link(&self, child: &Cert<'_>, issuer: &Cert<'_>, below: usize) -> Result<(), Error> {
        let checks = self.checks.get() + 1;
        self.checks.set(checks);
        if checks > MAX_SIGNATURE_CHECKS {
            return Err(Error::PathSearchExhausted {
                checks: MAX_SIGNATURE_CHECKS,
            });
        }

        let not_ca = |reason| Error::NotCa {
            subject: issuer.subject.clone(),
            reason,
        };
        match issuer.basic_constraints {
            None => return Err(not_ca("no basicConstraints extension")),
            Some(bc) if !bc.ca => return Err(not_ca("basicConstraints cA is false")),
            Some(bc) => {
                if let Some(limit) = bc.path_len
                    && u64::try_from(below).unwrap_or(u64::MAX) > u64::from(limit)
                {
                    return Err(Error::PathLenExceeded {
                        subject: issuer.subject.clone(),
                        limit,
                        below,
                    });
                }
            }
        }
        if issuer.key_usage.is_some_and(|ku| !ku.key_cert_sign) {
            return Err(not_ca("keyUsage lacks keyCertSign"));
        }
        check_validity(issuer, self.now_unix)?;
        check_purpose(issuer, self.purpose, true)?;

        let key = issuer.sm2_public_key()?;
        let bad_signature = || Error::BadSignature {
            subject: child.subject.clone(),
        };
        let key = sm2::dsa::VerifyingKey::new(DEFAULT_DIST_ID, key).map_err(|_| bad_signature())?;
        let signature =
            sm2::dsa::Signature::from_der(child.signature_der()).map_err(|_| bad_signature())?;
        key.verify(child.tbs_der(), &signature)
            .map_err(|_| bad_signature())
    }
}

fn check_validity(cert: &Cert<'_>, now_unix: u64) -> Result<(), Error> {
    let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
    let validity = cert.x509.validity();
    if now < validity.not_before.timestamp() {
        return Err(Error::NotYetValid {
            subject: cert.subject.clone(),
            not_before: validity.not_before.to_string(),
            now_unix,
        });
    }
    if now > validity.not_after.timestamp() {
        return Err(Error::Expired {
            subject: cert.subject.clone(),
            not_after: validity.not_after.to_string(),
            now_unix,
        });
    }
    Ok(())
}

/// An absent extendedKeyUsage allows every purpose. A present one must list the purpose; a CA
/// may list anyExtendedKeyUsage instead, an end entity may not (as OpenSSL and webpki).
fn check_purpose(cert: &Cert<'_>, purpose: Purpose, is_ca: bool) -> Result<(), Error> {
    let Some(eku) = &cert.ext_key_usage else {
        return Ok(());
    };
    let allowed = match purpose {
        Purpose::Any => true,
        Purpose::ServerAuth => eku.server_auth || (is_ca && eku.any),
        Purpose::ClientAuth => eku.client_auth || (is_ca && eku.any),
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::WrongPurpose {
            subject: cert.subject.clone(),
            purpose,
        })
    }
}
