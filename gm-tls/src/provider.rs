//! The crypto providers: GM only (RFC 8998 alone), and the standard set with the GM suite added
//! in front.

use std::sync::Arc;

use rustls::crypto::{CryptoProvider, KeyProvider, SupportedKxGroup, ring};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::SigningKey;
use rustls::{CipherSuite, CipherSuiteCommon, Error, SupportedCipherSuite, Tls13CipherSuite};

use crate::kx::CURVE_SM2_KX;
use crate::sign::Sm2SigningKey;
use crate::sm3::{HKDF_SM3, SM3};
use crate::sm4_gcm::SM4_GCM;

/// TLS_SM4_GCM_SM3's code point (RFC 8998 §2).
pub const TLS_SM4_GCM_SM3_ID: CipherSuite = CipherSuite::Unknown(0x00C6);

/// TLS_SM4_GCM_SM3 (RFC 8998): SM4-GCM records, SM3 transcript and HKDF.
pub static TLS13_SM4_GCM_SM3: SupportedCipherSuite =
    SupportedCipherSuite::Tls13(&Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: TLS_SM4_GCM_SM3_ID,
            hash_provider: &SM3,
            // As for AES-GCM (a 128-bit block cipher in GCM): 2^24 full records per key keeps
            // the distinguishing advantage below 2^-60 (rustls' own figure for AES-128-GCM).
            confidentiality_limit: 1 << 24,
        },
        hkdf_provider: &HKDF_SM3,
        aead_alg: &SM4_GCM,
        quic: None,
    });

/// The standard (non-GM) suites: AEAD with ephemeral key exchange only, as before.
fn standard_suites() -> Vec<SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// RFC 8998 only: TLS_SM4_GCM_SM3, curveSM2, SM2 keys. Nothing else can be negotiated.
#[must_use]
pub fn gm_only() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![TLS13_SM4_GCM_SM3],
        kx_groups: vec![&CURVE_SM2_KX],
        key_provider: &GM_KEYS,
        ..ring::default_provider()
    }
}

/// The standard suites and groups (ring), with the GM suite and curveSM2 first: a client that
/// offers them gets them.
#[must_use]
pub fn standard_with_gm() -> CryptoProvider {
    let ring = ring::default_provider();
    let mut kx_groups: Vec<&'static dyn SupportedKxGroup> = vec![&CURVE_SM2_KX];
    kx_groups.extend(ring.kx_groups.iter().copied());
    let mut cipher_suites = vec![TLS13_SM4_GCM_SM3];
    cipher_suites.extend(standard_suites());
    CryptoProvider {
        cipher_suites,
        kx_groups,
        key_provider: &STANDARD_KEYS,
        ..ring
    }
}

/// The standard suites only (ring), as the server had before GM transport.
#[must_use]
pub fn standard() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: standard_suites(),
        ..ring::default_provider()
    }
}

/// Loads SM2 keys; with `fallback`, any other key through ring.
#[derive(Debug)]
struct Sm2Keys {
    fallback: bool,
}

static GM_KEYS: Sm2Keys = Sm2Keys { fallback: false };
static STANDARD_KEYS: Sm2Keys = Sm2Keys { fallback: true };

impl KeyProvider for Sm2Keys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, Error> {
        if let PrivateKeyDer::Pkcs8(pkcs8) = &key_der
            && Sm2SigningKey::is_sm2_pkcs8(pkcs8.secret_pkcs8_der())
        {
            return Ok(Arc::new(Sm2SigningKey::from_der(&key_der)?));
        }
        if self.fallback {
            ring::default_provider()
                .key_provider
                .load_private_key(key_der)
        } else {
            Err(Error::General(
                "GM-only TLS needs an SM2 private key (PKCS#8 on sm2p256v1)".into(),
            ))
        }
    }
}
