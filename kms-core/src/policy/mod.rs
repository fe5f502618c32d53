//! The one module that decides what is allowed (ALG-3, ALG-4, KEY-5).
//!
//! Every cryptographic function in [`crate::crypto`] takes a token that only this module can
//! make: [`Approved`] for a key, [`ApprovedSignature`] for a signature scheme, [`ApprovedDigest`]
//! for a hash. Skipping the policy is therefore a compile error, not a review finding.
//!
//! Tokens come in two strengths. `Approved<Protect>` allows new protection (encrypt, sign,
//! generate, MAC); `Approved<Open>` only opens what exists (decrypt, verify, verify a MAC, decrypt
//! an asymmetric ciphertext). A GM-only policy switched on after non-GM keys exist approves those
//! keys for `Open` only, so old data can still be read and re-encrypted under SM4, but nothing new
//! is protected with AES, RSA or SHA-2. Every `Protect` token converts into an `Open` one.

pub mod names;

use core::fmt;
use core::marker::PhantomData;

use crate::alg::{
    DataKeySpec, DigestAlg, KeySpec, PasswordHashAlg, Purpose, RsaSigScheme, SM2_MAX_ID_LEN,
    SignatureRequest,
};

/// Which algorithms a deployment allows: the built-in set, or its GM-only subset (ALG-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PolicyMode {
    /// GM algorithms first, with AES-256-GCM, RSA ≥ 2048 and SHA-2 alongside (ALG-1, ALG-2).
    #[default]
    Standard,
    /// SM2, SM3 and SM4 only (ALG-4).
    GmOnly,
}

impl PolicyMode {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::GmOnly => "gm-only",
        }
    }
}

/// Why the policy said no. Messages name the algorithm, the rule and the clause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("algorithm {input:?} is forbidden: {algorithm}: {reason} (rule {rule}; {clause})")]
    Forbidden {
        input: String,
        algorithm: &'static str,
        reason: &'static str,
        rule: &'static str,
        clause: &'static str,
    },
    #[error("unknown {kind} {input:?}; this KMS offers: {allowed}")]
    Unknown {
        input: String,
        kind: &'static str,
        allowed: String,
    },
    #[error(
        "{algorithm} is not allowed by the gm-only policy, which allows SM2, SM3 and SM4 only (rule ALG-4)"
    )]
    NotGm { algorithm: &'static str },
    #[error("a {spec} key cannot be used for {purpose} (rule KEY-5: one purpose per key)")]
    WrongPurpose { spec: KeySpec, purpose: Purpose },
    #[error("{requested} signatures cannot be made or checked with a {spec} key")]
    SchemeMismatch {
        spec: KeySpec,
        requested: &'static str,
    },
    #[error("SM2 distinguishing ID must be 1 to {max} bytes, got {len}")]
    BadSm2Id { len: usize, max: usize },
    #[error(
        "RSA keys of {bits} bits are not allowed: 2048, 3072 or 4096 only (rule ALG-3; T/NIFA 33-2025 §6.5.1 c 1))"
    )]
    RsaKeySize { bits: usize },
}

/// Marker: the token allows new protection (encrypt, sign, MAC, generate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protect;
/// Marker: the token allows opening existing protection only (decrypt, verify).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Open;

/// Proof that the policy approved `spec` for `purpose`. Private fields: only [`Policy`] makes one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Approved<U = Protect> {
    purpose: Purpose,
    spec: KeySpec,
    _use: PhantomData<U>,
}

impl<U> Approved<U> {
    #[must_use]
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    #[must_use]
    pub fn spec(&self) -> KeySpec {
        self.spec
    }
}

impl Approved<Protect> {
    /// Anything approved for protection may also open.
    #[must_use]
    pub fn for_open(self) -> Approved<Open> {
        Approved {
            purpose: self.purpose,
            spec: self.spec,
            _use: PhantomData,
        }
    }
}

impl Approved<Protect> {
    /// The default scheme (SM2 with the default ID; RSA-PSS with SHA-256) for a key this token
    /// already approved for signing: the pairwise-consistency test of a fresh or imported key.
    pub(crate) fn default_signature(self) -> Result<ApprovedSignature<Protect>, PolicyError> {
        Policy::check_token(&self, Purpose::Sign)?;
        let request =
            SignatureRequest::default_for(self.spec).ok_or(PolicyError::WrongPurpose {
                spec: self.spec,
                purpose: Purpose::Sign,
            })?;
        // The mode was enforced when the key was approved; the defaults add no algorithm
        // beyond the key's own (SM2 → SM3, RSA → SHA-256).
        let scheme = Policy {
            mode: PolicyMode::Standard,
        }
        .signature_scheme(self.spec, request, false)?;
        Ok(ApprovedSignature { key: self, scheme })
    }
}

impl ApprovedSignature<Protect> {
    /// Anything approved for signing may also verify.
    #[must_use]
    pub fn for_open(self) -> ApprovedSignature<Open> {
        ApprovedSignature {
            key: self.key.for_open(),
            scheme: self.scheme,
        }
    }
}

impl<U> fmt::Debug for Approved<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Approved({} for {})", self.spec, self.purpose)
    }
}

/// A signature scheme the policy approved for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedSignature<U = Protect> {
    key: Approved<U>,
    scheme: SignatureScheme,
}

/// The concrete scheme behind an [`ApprovedSignature`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureScheme {
    Sm2 {
        id: String,
    },
    Rsa {
        scheme: RsaSigScheme,
        hash: DigestAlg,
    },
}

impl<U> ApprovedSignature<U> {
    #[must_use]
    pub fn key(&self) -> &Approved<U> {
        &self.key
    }

    #[must_use]
    pub fn scheme(&self) -> &SignatureScheme {
        &self.scheme
    }
}

/// A digest the policy approved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApprovedDigest(DigestAlg);

impl ApprovedDigest {
    /// SM3, which every policy mode approves (it is the GM hash; a GM-only policy is the
    /// narrowest there is). For formats that fix SM3 whatever the deployment's policy: the audit
    /// chain, share checksums, key fingerprints, the hierarchy's HKDF.
    pub const SM3: Self = Self(DigestAlg::Sm3);

    #[must_use]
    pub fn alg(self) -> DigestAlg {
        self.0
    }
}

/// A data-key spec approved under an encryption key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApprovedDataKey(DataKeySpec);

impl ApprovedDataKey {
    #[must_use]
    pub fn spec(self) -> DataKeySpec {
        self.0
    }
}

/// A password-hash function the policy approved (issue 22 item 2): `Protect` for a new hash
/// (the mode's own function), `Open` to verify a stored one (either function, so that hashes
/// made before a switch to GM-only still verify and are re-hashed on the next match).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApprovedPasswordHash<U = Protect> {
    alg: PasswordHashAlg,
    _use: PhantomData<U>,
}

impl<U> ApprovedPasswordHash<U> {
    #[must_use]
    pub fn alg(&self) -> PasswordHashAlg {
        self.alg
    }
}

/// The policy in force. Built once from configuration; it can only narrow the built-in set.
///
/// There is no `Default` outside tests (the `test-util` feature): code must use the policy it
/// was configured with, never conjure a laxer one. Nor can one be built field by field:
///
/// ```compile_fail
/// use kms_core::policy::{Policy, PolicyMode};
/// let p = Policy { mode: PolicyMode::Standard };
/// ```
///
/// Inside `kms-core` nothing calls [`Policy::from_config`] (`kms-core/tests/construction.rs`
/// checks the sources): the core receives its policy in [`KmsConfig`](crate::KmsConfig).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    mode: PolicyMode,
}

#[cfg(any(test, feature = "test-util"))]
impl Default for Policy {
    /// For tests only: the standard mode.
    fn default() -> Self {
        Self {
            mode: PolicyMode::Standard,
        }
    }
}

impl Policy {
    /// The narrowest policy (GM only), for formats that fix GM algorithms whatever the
    /// deployment's policy: audit checkpoints and inventories (SM2 with SM3), the first
    /// hierarchy's HMAC-SM3 derivation. Every mode allows what this allows, so using it never
    /// approves what the configured policy would refuse.
    pub(crate) const GM_FORMATS: Self = Self {
        mode: PolicyMode::GmOnly,
    };

    /// The policy a deployment configured (`policy = "gm-only"` in the server's configuration,
    /// `--policy` in offline tools).
    #[must_use]
    pub fn from_config(mode: PolicyMode) -> Self {
        Self { mode }
    }

    #[must_use]
    pub fn mode(self) -> PolicyMode {
        self.mode
    }

    /// Whether new protection with `spec` is allowed.
    #[must_use]
    pub fn allows(self, spec: KeySpec) -> bool {
        match self.mode {
            PolicyMode::Standard => true,
            PolicyMode::GmOnly => spec.is_gm(),
        }
    }

    /// The token must have been approved for exactly `purpose` (KEY-5).
    fn check_token<U>(key: &Approved<U>, purpose: Purpose) -> Result<(), PolicyError> {
        if key.purpose == purpose {
            Ok(())
        } else {
            Err(PolicyError::WrongPurpose {
                spec: key.spec,
                purpose,
            })
        }
    }

    fn check_purpose(spec: KeySpec, purpose: Purpose) -> Result<(), PolicyError> {
        if spec.supports(purpose) {
            Ok(())
        } else {
            Err(PolicyError::WrongPurpose { spec, purpose })
        }
    }

    /// Approves creating a key, or using one to protect new data.
    pub fn approve(
        self,
        purpose: Purpose,
        spec: KeySpec,
    ) -> Result<Approved<Protect>, PolicyError> {
        Self::check_purpose(spec, purpose)?;
        if !self.allows(spec) {
            return Err(PolicyError::NotGm {
                algorithm: spec.name(),
            });
        }
        Ok(Approved {
            purpose,
            spec,
            _use: PhantomData,
        })
    }

    /// Approves opening existing protection. Any built-in spec may open data it protected, even
    /// under a GM-only policy, so that old data can be migrated (see the module docs).
    pub fn approve_open(
        self,
        purpose: Purpose,
        spec: KeySpec,
    ) -> Result<Approved<Open>, PolicyError> {
        Self::check_purpose(spec, purpose)?;
        Ok(Approved {
            purpose,
            spec,
            _use: PhantomData,
        })
    }

    fn signature_scheme(
        self,
        spec: KeySpec,
        request: SignatureRequest,
        enforce_mode: bool,
    ) -> Result<SignatureScheme, PolicyError> {
        match (spec, request) {
            (KeySpec::Sm2, SignatureRequest::Sm2 { id }) => {
                if id.is_empty() || id.len() > SM2_MAX_ID_LEN {
                    return Err(PolicyError::BadSm2Id {
                        len: id.len(),
                        max: SM2_MAX_ID_LEN,
                    });
                }
                Ok(SignatureScheme::Sm2 { id })
            }
            (
                KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096,
                SignatureRequest::Rsa { scheme, hash },
            ) => {
                if hash == DigestAlg::Sm3 {
                    return Err(PolicyError::SchemeMismatch {
                        spec,
                        requested: "RSA with SM3",
                    });
                }
                if enforce_mode && self.mode == PolicyMode::GmOnly {
                    return Err(PolicyError::NotGm {
                        algorithm: hash.name(),
                    });
                }
                Ok(SignatureScheme::Rsa { scheme, hash })
            }
            (KeySpec::Sm2, SignatureRequest::Rsa { .. }) => Err(PolicyError::SchemeMismatch {
                spec,
                requested: "RSA",
            }),
            (_, SignatureRequest::Sm2 { .. }) => Err(PolicyError::SchemeMismatch {
                spec,
                requested: "SM2",
            }),
            (_, SignatureRequest::Rsa { .. }) => Err(PolicyError::SchemeMismatch {
                spec,
                requested: "RSA",
            }),
        }
    }

    /// Approves a signature scheme for signing with an approved key.
    pub fn approve_signature(
        self,
        key: Approved<Protect>,
        request: SignatureRequest,
    ) -> Result<ApprovedSignature<Protect>, PolicyError> {
        Self::check_token(&key, Purpose::Sign)?;
        let scheme = self.signature_scheme(key.spec, request, true)?;
        Ok(ApprovedSignature { key, scheme })
    }

    /// Approves a signature scheme for verification.
    pub fn approve_verify(
        self,
        key: Approved<Open>,
        request: SignatureRequest,
    ) -> Result<ApprovedSignature<Open>, PolicyError> {
        Self::check_token(&key, Purpose::Sign)?;
        let scheme = self.signature_scheme(key.spec, request, false)?;
        Ok(ApprovedSignature { key, scheme })
    }

    /// Approves a digest for hashing.
    pub fn approve_digest(self, alg: DigestAlg) -> Result<ApprovedDigest, PolicyError> {
        if self.mode == PolicyMode::GmOnly && !alg.is_gm() {
            return Err(PolicyError::NotGm {
                algorithm: alg.name(),
            });
        }
        Ok(ApprovedDigest(alg))
    }

    /// Approves handing out a data key of `spec` under an approved encryption key.
    pub fn approve_data_key(
        self,
        key: Approved<Protect>,
        spec: DataKeySpec,
    ) -> Result<ApprovedDataKey, PolicyError> {
        Self::check_token(&key, Purpose::Encrypt)?;
        if self.mode == PolicyMode::GmOnly && !spec.is_gm() {
            return Err(PolicyError::NotGm {
                algorithm: spec.name(),
            });
        }
        Ok(ApprovedDataKey(spec))
    }

    /// The password-hash function new hashes use: argon2id (RFC 9106) under the standard
    /// policy, PBKDF2-HMAC-SM3 under the GM-only one (ALG-4: argon2 is built on BLAKE2b).
    #[must_use]
    pub fn password_hash(self) -> ApprovedPasswordHash<Protect> {
        let alg = match self.mode {
            PolicyMode::Standard => PasswordHashAlg::Argon2id,
            PolicyMode::GmOnly => PasswordHashAlg::Pbkdf2Sm3,
        };
        ApprovedPasswordHash {
            alg,
            _use: PhantomData,
        }
    }

    /// Approves verifying a stored hash of `alg`: every mode verifies both functions, as it
    /// opens old data (see the module docs); a match under a mode whose own function is
    /// another is re-hashed with it.
    #[must_use]
    pub fn approve_password_verify(self, alg: PasswordHashAlg) -> ApprovedPasswordHash<Open> {
        ApprovedPasswordHash {
            alg,
            _use: PhantomData,
        }
    }

    /// Checks an RSA modulus size met on an import path (ALG-3: nothing under 2048 bits).
    pub fn check_rsa_bits(self, bits: usize) -> Result<KeySpec, PolicyError> {
        let spec = match bits {
            2048 => KeySpec::Rsa2048,
            3072 => KeySpec::Rsa3072,
            4096 => KeySpec::Rsa4096,
            _ => return Err(PolicyError::RsaKeySize { bits }),
        };
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gm_only_narrows_to_sm_algorithms() {
        let gm = Policy::from_config(PolicyMode::GmOnly);
        for spec in KeySpec::ALL {
            for purpose in Purpose::ALL.into_iter().filter(|p| spec.supports(*p)) {
                assert_eq!(gm.approve(purpose, spec).is_ok(), spec.is_gm(), "{spec}");
                // Opening stays possible so that old data can be migrated.
                assert!(gm.approve_open(purpose, spec).is_ok());
            }
        }
        assert!(matches!(
            gm.approve_digest(DigestAlg::Sha256),
            Err(PolicyError::NotGm { .. })
        ));
        assert!(gm.approve_digest(DigestAlg::Sm3).is_ok());
        let enc = gm.approve(Purpose::Encrypt, KeySpec::Sm4Gcm).unwrap();
        assert!(matches!(
            gm.approve_data_key(enc, DataKeySpec::Aes256),
            Err(PolicyError::NotGm { .. })
        ));
        assert!(gm.approve_data_key(enc, DataKeySpec::Sm4).is_ok());
    }

    #[test]
    fn purpose_is_enforced() {
        let p = Policy::default();
        let e = p.approve(Purpose::Sign, KeySpec::Sm4Gcm).unwrap_err();
        assert!(e.to_string().contains("KEY-5"), "{e}");
        assert!(matches!(
            p.approve(Purpose::Encrypt, KeySpec::Sm2),
            Err(PolicyError::WrongPurpose {
                spec: KeySpec::Sm2,
                purpose: Purpose::Encrypt
            })
        ));
        assert!(matches!(
            p.approve(Purpose::Mac, KeySpec::Aes256Gcm),
            Err(PolicyError::WrongPurpose {
                spec: KeySpec::Aes256Gcm,
                purpose: Purpose::Mac
            })
        ));
    }

    #[test]
    fn signature_schemes_must_fit_the_key() {
        let p = Policy::default();
        let sm2 = p.approve(Purpose::Sign, KeySpec::Sm2).unwrap();
        let rsa_req = SignatureRequest::Rsa {
            scheme: RsaSigScheme::Pss,
            hash: DigestAlg::Sha256,
        };
        assert!(matches!(
            p.approve_signature(sm2, rsa_req.clone()),
            Err(PolicyError::SchemeMismatch {
                spec: KeySpec::Sm2,
                requested: "RSA"
            })
        ));
        assert!(matches!(
            p.approve_signature(sm2, SignatureRequest::Sm2 { id: String::new() }),
            Err(PolicyError::BadSm2Id { len: 0, .. })
        ));
        let long = "i".repeat(SM2_MAX_ID_LEN + 1);
        assert!(matches!(
            p.approve_signature(sm2, SignatureRequest::Sm2 { id: long }),
            Err(PolicyError::BadSm2Id { len, max: SM2_MAX_ID_LEN }) if len == SM2_MAX_ID_LEN + 1
        ));
        let rsa = p.approve(Purpose::Sign, KeySpec::Rsa2048).unwrap();
        assert!(p.approve_signature(rsa, rsa_req).is_ok());
        let sm3 = SignatureRequest::Rsa {
            scheme: RsaSigScheme::Pss,
            hash: DigestAlg::Sm3,
        };
        assert!(matches!(
            p.approve_signature(rsa, sm3),
            Err(PolicyError::SchemeMismatch {
                spec: KeySpec::Rsa2048,
                requested: "RSA with SM3"
            })
        ));
        let dec = p.approve(Purpose::AsymmetricDecrypt, KeySpec::Sm2).unwrap();
        assert!(matches!(
            p.approve_signature(dec, SignatureRequest::default_for(KeySpec::Sm2).unwrap()),
            Err(PolicyError::WrongPurpose {
                spec: KeySpec::Sm2,
                purpose: Purpose::Sign
            })
        ));
    }

    #[test]
    fn rsa_sizes_below_2048_are_refused() {
        let p = Policy::default();
        for bits in [512, 1024, 1536, 2047, 2049, 8192] {
            assert_eq!(
                p.check_rsa_bits(bits),
                Err(PolicyError::RsaKeySize { bits }),
                "{bits}"
            );
        }
        assert_eq!(p.check_rsa_bits(3072).unwrap(), KeySpec::Rsa3072);
    }
}
