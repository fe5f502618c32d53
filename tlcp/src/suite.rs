//! The four TLCP cipher suites of GB/T 38636-2020 §6.4.5.2.2 that the KMS serves.

use std::fmt;

/// A TLCP cipher suite: SM2 key exchange (ECC: the pre-master secret SM2-encrypted to the
/// server's encryption certificate; ECDHE: SM2 key agreement, GB/T 32918.3, with the
/// encryption keys of both sides), SM4 in GCM or CBC mode, SM3 for the PRF and the CBC MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CipherSuite {
    /// `ECDHE_SM4_GCM_SM3` (0xE051).
    EcdheSm4GcmSm3,
    /// `ECC_SM4_GCM_SM3` (0xE053).
    EccSm4GcmSm3,
    /// `ECDHE_SM4_CBC_SM3` (0xE011).
    EcdheSm4CbcSm3,
    /// `ECC_SM4_CBC_SM3` (0xE013).
    EccSm4CbcSm3,
}

/// How records are protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bulk {
    /// SM4-GCM, 4-byte implicit salt + 8-byte explicit nonce (RFC 5288 layout).
    Gcm,
    /// SM4-CBC with a per-record explicit IV, MAC-then-encrypt with HMAC-SM3.
    Cbc,
}

impl CipherSuite {
    /// Every suite, in the server's default order of preference: forward-secret first, GCM
    /// before CBC.
    pub const ALL: [Self; 4] = [
        Self::EcdheSm4GcmSm3,
        Self::EccSm4GcmSm3,
        Self::EcdheSm4CbcSm3,
        Self::EccSm4CbcSm3,
    ];

    /// The code point on the wire.
    #[must_use]
    pub const fn id(self) -> u16 {
        match self {
            Self::EcdheSm4GcmSm3 => 0xE051,
            Self::EccSm4GcmSm3 => 0xE053,
            Self::EcdheSm4CbcSm3 => 0xE011,
            Self::EccSm4CbcSm3 => 0xE013,
        }
    }

    /// The suite for a code point, if it is one of ours.
    #[must_use]
    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The standard's name, e.g. `ECC_SM4_GCM_SM3`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::EcdheSm4GcmSm3 => "ECDHE_SM4_GCM_SM3",
            Self::EccSm4GcmSm3 => "ECC_SM4_GCM_SM3",
            Self::EcdheSm4CbcSm3 => "ECDHE_SM4_CBC_SM3",
            Self::EccSm4CbcSm3 => "ECC_SM4_CBC_SM3",
        }
    }

    /// Tongsuo's (OpenSSL-style) name, e.g. `ECC-SM2-SM4-GCM-SM3`.
    #[must_use]
    pub const fn tongsuo_name(self) -> &'static str {
        match self {
            Self::EcdheSm4GcmSm3 => "ECDHE-SM2-SM4-GCM-SM3",
            Self::EccSm4GcmSm3 => "ECC-SM2-SM4-GCM-SM3",
            Self::EcdheSm4CbcSm3 => "ECDHE-SM2-SM4-CBC-SM3",
            Self::EccSm4CbcSm3 => "ECC-SM2-SM4-CBC-SM3",
        }
    }

    /// Whether the key exchange is ECDHE (SM2 key agreement; needs the client's encryption
    /// certificate) rather than ECC (SM2 encryption of the pre-master secret).
    #[must_use]
    pub const fn is_ecdhe(self) -> bool {
        matches!(self, Self::EcdheSm4GcmSm3 | Self::EcdheSm4CbcSm3)
    }

    pub(crate) const fn bulk(self) -> Bulk {
        match self {
            Self::EcdheSm4GcmSm3 | Self::EccSm4GcmSm3 => Bulk::Gcm,
            Self::EcdheSm4CbcSm3 | Self::EccSm4CbcSm3 => Bulk::Cbc,
        }
    }
}

impl fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Bulk {
    /// HMAC-SM3 key length in the key block (none for GCM).
    pub(crate) const fn mac_key_len(self) -> usize {
        match self {
            Self::Gcm => 0,
            Self::Cbc => 32,
        }
    }

    /// SM4 key length.
    pub(crate) const fn key_len(self) -> usize {
        16
    }

    /// IV length in the key block: the GCM salt, or a CBC IV (unused: records carry their own).
    pub(crate) const fn iv_len(self) -> usize {
        match self {
            Self::Gcm => 4,
            Self::Cbc => 16,
        }
    }
}
