//! The closed set of algorithms this KMS offers (ALG-1, ALG-2).
//!
//! Only allowed algorithms are representable: DES, RC4, MD5, SHA-1, ECB, RSA-1024 and the rest of
//! ALG-3 have no variant here, so no configuration or request can reach them. Outside names are
//! turned into these types by [`crate::policy::names`], which explains every refusal.

use core::fmt;

use serde::{Deserialize, Serialize};

/// What a key may be used for, fixed at creation (KEY-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Symmetric authenticated encryption and data keys.
    Encrypt,
    /// Digital signatures.
    Sign,
    /// Public-key encryption outside, private-key decryption inside the KMS (API-3).
    AsymmetricDecrypt,
    /// Message authentication codes.
    Mac,
    /// The password shield's sealing key (issue 22 item 2): clients (a mobile app) encrypt a
    /// sealed password to its public key, and the KMS opens it only inside `HashPassword` and
    /// `VerifyPassword`. SM2, RSA-3072 or RSA-4096 (a sealed password does not fit the
    /// margin RSA-2048 leaves, and new RSA keys for long-lived secrets start at 3072 bits).
    Password,
    /// The password shield's pepper (issue 22 item 2): an HMAC-SM3 key the KMS holds and uses
    /// only inside `HashPassword` and `VerifyPassword`, never through the MAC operations.
    Pepper,
    /// Tokens of the value's own format (issue 22, OPS-5): reversible with FF1 keys
    /// (`sm4-ff1`, `aes-256-ff1`), one-way pseudonyms with `hmac-sm3` keys.
    Tokenize,
}

impl Purpose {
    pub const ALL: [Self; 7] = [
        Self::Encrypt,
        Self::Sign,
        Self::AsymmetricDecrypt,
        Self::Mac,
        Self::Password,
        Self::Pepper,
        Self::Tokenize,
    ];

    /// The canonical name every interface uses.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Sign => "sign",
            Self::AsymmetricDecrypt => "asymmetric-decrypt",
            Self::Mac => "mac",
            Self::Password => "password",
            Self::Pepper => "pepper",
            Self::Tokenize => "tokenize",
        }
    }

    /// Whether keys of this purpose have a public half (`GetPublicKey`, SubjectPublicKeyInfo in
    /// the inventory).
    #[must_use]
    pub fn is_asymmetric(self) -> bool {
        match self {
            Self::Sign | Self::AsymmetricDecrypt | Self::Password => true,
            Self::Encrypt | Self::Mac | Self::Pepper | Self::Tokenize => false,
        }
    }

    /// Whether the private key decrypts what clients encrypt to its public key (SM2 or
    /// RSA-OAEP): asymmetric-decrypt keys, and password keys inside the password shield.
    #[must_use]
    pub fn decrypts(self) -> bool {
        match self {
            Self::AsymmetricDecrypt | Self::Password => true,
            Self::Encrypt | Self::Sign | Self::Mac | Self::Pepper | Self::Tokenize => false,
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key's algorithm and size. Canonical names are what `name()` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeySpec {
    /// SM4 in GCM mode (RFC 8998), 128-bit key.
    #[serde(rename = "sm4-gcm")]
    Sm4Gcm,
    /// AES-256 in GCM mode.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// SM2 on the recommended 256-bit curve (GB/T 32918), for signing or encryption.
    #[serde(rename = "sm2")]
    Sm2,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
    #[serde(rename = "hmac-sm3")]
    HmacSm3,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
    /// FF1 (NIST SP 800-38G) over SM4, 128-bit key: format-preserving tokens.
    #[serde(rename = "sm4-ff1")]
    Sm4Ff1,
    /// FF1 over AES-256: format-preserving tokens (standard policy only).
    #[serde(rename = "aes-256-ff1")]
    Aes256Ff1,
}

impl KeySpec {
    pub const ALL: [Self; 12] = [
        Self::Sm4Gcm,
        Self::Aes256Gcm,
        Self::Sm2,
        Self::Rsa2048,
        Self::Rsa3072,
        Self::Rsa4096,
        Self::HmacSm3,
        Self::HmacSha256,
        Self::HmacSha384,
        Self::HmacSha512,
        Self::Sm4Ff1,
        Self::Aes256Ff1,
    ];

    /// The canonical name every interface uses.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sm4Gcm => "sm4-gcm",
            Self::Aes256Gcm => "aes-256-gcm",
            Self::Sm2 => "sm2",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa3072 => "rsa-3072",
            Self::Rsa4096 => "rsa-4096",
            Self::HmacSm3 => "hmac-sm3",
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha384 => "hmac-sha384",
            Self::HmacSha512 => "hmac-sha512",
            Self::Sm4Ff1 => "sm4-ff1",
            Self::Aes256Ff1 => "aes-256-ff1",
        }
    }

    /// A stable one-byte code, used in the ciphertext blob and in stored records.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Self::Sm4Gcm => 1,
            Self::Aes256Gcm => 2,
            Self::Sm2 => 3,
            Self::Rsa2048 => 4,
            Self::Rsa3072 => 5,
            Self::Rsa4096 => 6,
            Self::HmacSm3 => 7,
            Self::HmacSha256 => 8,
            Self::HmacSha384 => 9,
            Self::HmacSha512 => 10,
            Self::Sm4Ff1 => 11,
            Self::Aes256Ff1 => 12,
        }
    }

    #[must_use]
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Whether this is a GM (national) algorithm, the only ones a GM-only policy keeps (ALG-4).
    #[must_use]
    pub fn is_gm(self) -> bool {
        match self {
            Self::Sm4Gcm | Self::Sm2 | Self::HmacSm3 | Self::Sm4Ff1 => true,
            Self::Aes256Gcm
            | Self::Aes256Ff1
            | Self::Rsa2048
            | Self::Rsa3072
            | Self::Rsa4096
            | Self::HmacSha256
            | Self::HmacSha384
            | Self::HmacSha512 => false,
        }
    }

    /// Whether a key of this spec may serve `purpose` (KEY-5: one purpose per key, but SM2 and
    /// RSA keys may be created for either signing or decryption, and HMAC-SM3 keys for MACs or
    /// for pseudonyms, purpose tokenize).
    #[must_use]
    pub fn supports(self, purpose: Purpose) -> bool {
        match self {
            Self::Sm4Gcm | Self::Aes256Gcm => purpose == Purpose::Encrypt,
            Self::Sm2 | Self::Rsa3072 | Self::Rsa4096 => matches!(
                purpose,
                Purpose::Sign | Purpose::AsymmetricDecrypt | Purpose::Password
            ),
            Self::Rsa2048 => matches!(purpose, Purpose::Sign | Purpose::AsymmetricDecrypt),
            // The pepper is HMAC-SM3 under both policies: the issue fixes it, and one spec
            // means a stored hash's pepper needs no algorithm name of its own.
            Self::HmacSm3 => matches!(purpose, Purpose::Mac | Purpose::Pepper | Purpose::Tokenize),
            Self::HmacSha256 | Self::HmacSha384 | Self::HmacSha512 => purpose == Purpose::Mac,
            Self::Sm4Ff1 | Self::Aes256Ff1 => purpose == Purpose::Tokenize,
        }
    }

    /// RSA modulus size in bits, for RSA specs.
    #[must_use]
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            Self::Rsa2048 => Some(2048),
            Self::Rsa3072 => Some(3072),
            Self::Rsa4096 => Some(4096),
            Self::Sm4Gcm
            | Self::Aes256Gcm
            | Self::Sm2
            | Self::HmacSm3
            | Self::HmacSha256
            | Self::HmacSha384
            | Self::HmacSha512
            | Self::Sm4Ff1
            | Self::Aes256Ff1 => None,
        }
    }

    /// The digest an HMAC spec is built on.
    #[must_use]
    pub fn hmac_digest(self) -> Option<DigestAlg> {
        match self {
            Self::HmacSm3 => Some(DigestAlg::Sm3),
            Self::HmacSha256 => Some(DigestAlg::Sha256),
            Self::HmacSha384 => Some(DigestAlg::Sha384),
            Self::HmacSha512 => Some(DigestAlg::Sha512),
            Self::Sm4Gcm
            | Self::Aes256Gcm
            | Self::Sm2
            | Self::Rsa2048
            | Self::Rsa3072
            | Self::Rsa4096
            | Self::Sm4Ff1
            | Self::Aes256Ff1 => None,
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Digest algorithms (SM3 and SHA-2 only; MD5 and SHA-1 are not representable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlg {
    Sm3,
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlg {
    pub const ALL: [Self; 4] = [Self::Sm3, Self::Sha256, Self::Sha384, Self::Sha512];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sm3 => "sm3",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Output length in bytes.
    #[must_use]
    pub fn output_len(self) -> usize {
        match self {
            Self::Sm3 | Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    #[must_use]
    pub fn is_gm(self) -> bool {
        match self {
            Self::Sm3 => true,
            Self::Sha256 | Self::Sha384 | Self::Sha512 => false,
        }
    }
}

impl fmt::Display for DigestAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// RSA signature padding, chosen per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RsaSigScheme {
    /// RSASSA-PSS with MGF1 over the same hash and salt length = hash length.
    #[default]
    Pss,
    /// RSASSA-PKCS1-v1_5 (deterministic; kept for interop with existing verifiers).
    Pkcs1v15,
}

impl RsaSigScheme {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Pss => "pss",
            Self::Pkcs1v15 => "pkcs1v15",
        }
    }
}

/// The GM/T 0009 default SM2 distinguishing identifier.
pub const SM2_DEFAULT_ID: &str = "1234567812345678";

/// The longest SM2 distinguishing ID accepted. ENTL is a 16-bit count of *bits*, so the standard
/// allows up to 8191 bytes; real IDs are short, and a small bound keeps requests small.
pub const SM2_MAX_ID_LEN: usize = 1024;

/// How a signature is made, as a request asks for it (not yet approved by policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureRequest {
    /// SM2 with SM3 and a distinguishing ID (default [`SM2_DEFAULT_ID`]).
    Sm2 { id: String },
    /// RSA with a scheme and a SHA-2 hash.
    Rsa {
        scheme: RsaSigScheme,
        hash: DigestAlg,
    },
}

impl SignatureRequest {
    /// The default request for a key spec: SM2 with the default ID, or RSA-PSS over SHA-256.
    #[must_use]
    pub fn default_for(spec: KeySpec) -> Option<Self> {
        match spec {
            KeySpec::Sm2 => Some(Self::Sm2 {
                id: SM2_DEFAULT_ID.to_owned(),
            }),
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => Some(Self::Rsa {
                scheme: RsaSigScheme::Pss,
                hash: DigestAlg::Sha256,
            }),
            KeySpec::Sm4Gcm
            | KeySpec::Aes256Gcm
            | KeySpec::HmacSm3
            | KeySpec::HmacSha256
            | KeySpec::HmacSha384
            | KeySpec::HmacSha512
            | KeySpec::Sm4Ff1
            | KeySpec::Aes256Ff1 => None,
        }
    }
}

/// Signature parameters as a request gives them; absent fields take the key's defaults
/// (SM2: the GM/T 0009 default ID; RSA: PSS over SHA-256).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignatureParams {
    pub sm2_id: Option<String>,
    pub rsa_scheme: Option<RsaSigScheme>,
    pub hash: Option<DigestAlg>,
}

impl SignatureParams {
    /// The request these parameters make for a key of `spec`; parameters of the other
    /// algorithm family are an error rather than silently ignored.
    pub fn resolve(&self, spec: KeySpec) -> Result<SignatureRequest, crate::policy::PolicyError> {
        use crate::policy::PolicyError;
        match spec {
            KeySpec::Sm2 => {
                if self.rsa_scheme.is_some() || self.hash.is_some() {
                    return Err(PolicyError::SchemeMismatch {
                        spec,
                        requested: "an RSA scheme or hash",
                    });
                }
                Ok(SignatureRequest::Sm2 {
                    id: self
                        .sm2_id
                        .clone()
                        .unwrap_or_else(|| SM2_DEFAULT_ID.to_owned()),
                })
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                if self.sm2_id.is_some() {
                    return Err(PolicyError::SchemeMismatch {
                        spec,
                        requested: "an SM2 distinguishing ID",
                    });
                }
                Ok(SignatureRequest::Rsa {
                    scheme: self.rsa_scheme.unwrap_or_default(),
                    hash: self.hash.unwrap_or(DigestAlg::Sha256),
                })
            }
            KeySpec::Sm4Gcm
            | KeySpec::Aes256Gcm
            | KeySpec::HmacSm3
            | KeySpec::HmacSha256
            | KeySpec::HmacSha384
            | KeySpec::HmacSha512
            | KeySpec::Sm4Ff1
            | KeySpec::Aes256Ff1 => Err(PolicyError::SchemeMismatch {
                spec,
                requested: "a signature",
            }),
        }
    }
}

/// The two data-key specs `GenerateDataKey` hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataKeySpec {
    /// A 128-bit SM4 key.
    Sm4,
    /// A 256-bit AES key.
    Aes256,
}

impl DataKeySpec {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sm4 => "sm4",
            Self::Aes256 => "aes-256",
        }
    }

    #[must_use]
    pub fn key_len(self) -> usize {
        match self {
            Self::Sm4 => 16,
            Self::Aes256 => 32,
        }
    }

    #[must_use]
    pub fn is_gm(self) -> bool {
        match self {
            Self::Sm4 => true,
            Self::Aes256 => false,
        }
    }
}

/// The password-hash functions of the password shield (issue 22 item 2). New hashes use the
/// policy's own ([`crate::policy::Policy::password_hash`]): argon2id (RFC 9106) under the
/// standard policy, PBKDF2-HMAC-SM3 (RFC 8018 over GB/T 32905) under the GM-only one; either
/// verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PasswordHashAlg {
    Argon2id,
    Pbkdf2Sm3,
}

impl PasswordHashAlg {
    pub const ALL: [Self; 2] = [Self::Argon2id, Self::Pbkdf2Sm3];

    /// The PHC string identifier (`$argon2id$…`, `$pbkdf2-sm3$…`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Argon2id => "argon2id",
            Self::Pbkdf2Sm3 => "pbkdf2-sm3",
        }
    }

    #[must_use]
    pub fn is_gm(self) -> bool {
        match self {
            Self::Argon2id => false,
            Self::Pbkdf2Sm3 => true,
        }
    }
}

impl fmt::Display for PasswordHashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for spec in KeySpec::ALL {
            assert_eq!(KeySpec::from_code(spec.code()), Some(spec));
        }
        assert_eq!(KeySpec::from_code(0), None);
        assert_eq!(KeySpec::from_code(200), None);
    }

    #[test]
    fn serde_names_are_the_canonical_names() {
        for spec in KeySpec::ALL {
            assert_eq!(
                serde_json::to_string(&spec).unwrap(),
                format!("\"{}\"", spec.name())
            );
        }
        for p in Purpose::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.name())
            );
        }
    }

    #[test]
    fn every_spec_serves_at_least_one_purpose() {
        for spec in KeySpec::ALL {
            assert!(Purpose::ALL.into_iter().any(|p| spec.supports(p)), "{spec}");
        }
        assert!(!KeySpec::Sm4Gcm.supports(Purpose::Sign));
        assert!(!KeySpec::HmacSm3.supports(Purpose::Encrypt));
        assert!(KeySpec::Sm2.supports(Purpose::AsymmetricDecrypt));
        // Tokenize: the FF1 specs, and HMAC-SM3 for pseudonyms; FF1 keys serve nothing else.
        let tokenize: Vec<KeySpec> = KeySpec::ALL
            .into_iter()
            .filter(|s| s.supports(Purpose::Tokenize))
            .collect();
        assert_eq!(
            tokenize,
            [KeySpec::HmacSm3, KeySpec::Sm4Ff1, KeySpec::Aes256Ff1]
        );
        assert!(!KeySpec::Sm4Ff1.supports(Purpose::Encrypt));
        assert!(KeySpec::Sm4Ff1.is_gm() && !KeySpec::Aes256Ff1.is_gm());
    }

    #[test]
    fn password_keys_are_sm2_or_large_rsa_and_peppers_hmac_sm3() {
        let fit =
            |p| -> Vec<KeySpec> { KeySpec::ALL.into_iter().filter(|s| s.supports(p)).collect() };
        assert_eq!(
            fit(Purpose::Password),
            [KeySpec::Sm2, KeySpec::Rsa3072, KeySpec::Rsa4096]
        );
        assert_eq!(fit(Purpose::Pepper), [KeySpec::HmacSm3]);
        let decrypting: Vec<Purpose> = Purpose::ALL.into_iter().filter(|p| p.decrypts()).collect();
        assert_eq!(decrypting, [Purpose::AsymmetricDecrypt, Purpose::Password]);
        assert_eq!(PasswordHashAlg::Argon2id.name(), "argon2id");
        assert!(PasswordHashAlg::Pbkdf2Sm3.is_gm() && !PasswordHashAlg::Argon2id.is_gm());
    }
}
