//! SM2 signatures in the TLS 1.3 handshake (RFC 8998 §3.2.1, scheme sm2sig_sm3 = 0x0708): the
//! CertificateVerify of either side is an SM2 signature with SM3 whose distinguishing ID is
//! "TLSv1.3+GM+Cipher+Suite", over the content RFC 8446 §4.4.3 defines. (Certificates are signed
//! with the default ID 1234567812345678 instead: see [`crate::x509`].)

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{Error, SignatureAlgorithm, SignatureScheme};
use signature::{RandomizedSigner, Verifier};
use sm2::dsa::{Signature, VerifyingKey};
use sm2::pkcs8::DecodePrivateKey;
use sm2::pkcs8::{DecodePublicKey, EncodePublicKey};
use sm2::{PublicKey, SecretKey};

/// sm2sig_sm3's code point (RFC 8998 §2).
pub const SM2_SM3: SignatureScheme = SignatureScheme::Unknown(0x0708);

/// The distinguishing ID of TLS 1.3 CertificateVerify signatures (RFC 8998 §3.2.1).
pub const TLS13_SM2_ID: &str = "TLSv1.3+GM+Cipher+Suite";

/// SM2 has no TLS 1.2 `SignatureAlgorithm`; rustls uses this only to pair TLS 1.2 suites with
/// keys, and no TLS 1.2 suite is paired with it, so an SM2 key is never used below TLS 1.3.
const SM2_SIGNATURE_ALGORITHM: SignatureAlgorithm = SignatureAlgorithm::Unknown(0xE2);

/// An SM2 private key that signs TLS 1.3 CertificateVerify messages. The scalar lives in the
/// `sm2` crate's `SecretKey`, which wipes itself on drop; the ID-bound signing key derived from
/// it exists only for the length of one signature.
pub struct Sm2SigningKey {
    secret: Arc<SecretKey>,
}

impl fmt::Debug for Sm2SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sm2SigningKey(..)")
    }
}

impl Sm2SigningKey {
    /// From a PKCS#8 `PrivateKeyInfo` whose key is on sm2p256v1; anything else is refused.
    pub fn from_der(key: &PrivateKeyDer<'_>) -> Result<Self, Error> {
        let PrivateKeyDer::Pkcs8(pkcs8) = key else {
            return Err(Error::General(
                "an SM2 key must be PKCS#8 (\"PRIVATE KEY\")".into(),
            ));
        };
        let secret = SecretKey::from_pkcs8_der(pkcs8.secret_pkcs8_der()).map_err(|_| {
            Error::General("the private key is not an SM2 (sm2p256v1) PKCS#8 key".into())
        })?;
        Ok(Self {
            secret: Arc::new(secret),
        })
    }

    /// Whether PKCS#8 DER holds an SM2 key (used to tell SM2 from other keys in one config).
    #[must_use]
    pub fn is_sm2_pkcs8(der: &[u8]) -> bool {
        SecretKey::from_pkcs8_der(der).is_ok()
    }
}

impl SigningKey for Sm2SigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&SM2_SM3).then(|| {
            Box::new(Sm2Signer {
                secret: Arc::clone(&self.secret),
            }) as Box<dyn Signer>
        })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'static>> {
        // Lets rustls check that a configured certificate holds this very key.
        let der = self.secret.public_key().to_public_key_der().ok()?;
        Some(SubjectPublicKeyInfoDer::from(der.as_bytes().to_vec()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SM2_SIGNATURE_ALGORITHM
    }
}

struct Sm2Signer {
    secret: Arc<SecretKey>,
}

impl fmt::Debug for Sm2Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sm2Signer(..)")
    }
}

impl Signer for Sm2Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let key = sm2::dsa::SigningKey::new(TLS13_SM2_ID, &self.secret)
            .map_err(|_| Error::General("SM2 signing key".into()))?;
        // Hedged: fresh OS randomness is mixed into the RFC 6979 nonce.
        let sig: Signature = key
            .try_sign_with_rng(&mut getrandom::SysRng, message)
            .map_err(|_| Error::General("SM2 signing failed".into()))?;
        Ok(sig.to_der().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SM2_SM3
    }
}

/// Checks a TLS 1.3 CertificateVerify signature made with sm2sig_sm3 by the key in `spki_der`
/// (the peer's certificate's SubjectPublicKeyInfo).
pub fn verify_tls13(spki_der: &[u8], message: &[u8], der_signature: &[u8]) -> Result<(), Error> {
    let public = PublicKey::from_public_key_der(spki_der)
        .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    verify_tls13_with(public, message, der_signature)
}

/// As [`verify_tls13`], with the peer's key already taken from its certificate.
pub fn verify_tls13_with(
    public: PublicKey,
    message: &[u8],
    der_signature: &[u8],
) -> Result<(), Error> {
    let key = VerifyingKey::new(TLS13_SM2_ID, public)
        .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    let sig = Signature::from_der(der_signature)
        .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    key.verify(message, &sig)
        .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::BadSignature))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use sm2::elliptic_curve::Generate;
    use sm2::pkcs8::EncodePrivateKey;

    use super::*;

    /// The RFC 8446 §4.4.3 content a server signs: 64 spaces, the context string, a zero byte,
    /// the transcript hash.
    fn server_content(transcript_hash: &[u8]) -> Vec<u8> {
        let mut m = vec![0x20; 64];
        m.extend_from_slice(b"TLS 1.3, server CertificateVerify\x00");
        m.extend_from_slice(transcript_hash);
        m
    }

    fn key() -> (Sm2SigningKey, Vec<u8>) {
        let secret = SecretKey::try_generate_from_rng(&mut getrandom::SysRng).unwrap();
        let spki = secret.public_key().to_public_key_der().unwrap().to_vec();
        let pkcs8 = secret.to_pkcs8_der().unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec()));
        (Sm2SigningKey::from_der(&der).unwrap(), spki)
    }

    #[test]
    fn signs_with_the_tls13_id_and_verifies_only_with_it() {
        let (key, spki) = key();
        assert!(
            key.choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
                .is_none()
        );
        let signer = key
            .choose_scheme(&[SignatureScheme::ED25519, SM2_SM3])
            .unwrap();
        assert_eq!(signer.scheme(), SM2_SM3);
        let content = server_content(&[0xAB; 32]);
        let sig = signer.sign(&content).unwrap();
        verify_tls13(&spki, &content, &sig).unwrap();

        // The same signature does not verify under the certificate ID: the ID is bound into Z_A.
        let public = PublicKey::from_public_key_der(&spki).unwrap();
        let default_id = VerifyingKey::new("1234567812345678", public).unwrap();
        let parsed = Signature::from_der(&sig).unwrap();
        assert!(default_id.verify(&content, &parsed).is_err());

        // Every refusal is the one TLS alert-worthy error, whatever the cause.
        let bad = Err(Error::InvalidCertificate(
            rustls::CertificateError::BadSignature,
        ));
        let mut other = content.clone();
        other[70] ^= 1;
        assert_eq!(verify_tls13(&spki, &other, &sig), bad);
        assert_eq!(verify_tls13(&spki, &content, &sig[..sig.len() - 1]), bad);
        let (_, other_spki) = self::key();
        assert_eq!(verify_tls13(&other_spki, &content, &sig), bad);
        assert_eq!(verify_tls13(&[0x30, 0x00], &content, &sig), bad);
    }

    #[test]
    fn only_sm2_pkcs8_keys_are_accepted_and_debug_hides_them() {
        let (key, _) = key();
        assert_eq!(format!("{key:?}"), "Sm2SigningKey(..)");
        let sec1 = PrivateKeyDer::Sec1(vec![0x30, 0x00].into());
        assert_eq!(
            Sm2SigningKey::from_der(&sec1).unwrap_err(),
            Error::General("an SM2 key must be PKCS#8 (\"PRIVATE KEY\")".into())
        );
        let garbage = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![0x30, 0x03, 1, 2, 3]));
        assert_eq!(
            Sm2SigningKey::from_der(&garbage).unwrap_err(),
            Error::General("the private key is not an SM2 (sm2p256v1) PKCS#8 key".into())
        );
    }
}
