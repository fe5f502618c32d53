//! Parsed forms of private keys, made once per key version in memory instead of once per request.
//!
//! Parsing is not free: an RSA PKCS#8 document is decoded and its key checked (AWS-LC's
//! `RSA_check_key`) on every load, and an SM2 signing key computes its public point (a scalar
//! multiplication, about as costly as the signature itself) and Z_A. The parsed form lives beside the raw bytes in
//! [`KeyMaterial`](crate::secret::KeyMaterial), so it is bounded by the key cache and dies, wiped,
//! with the key version it belongs to (KEY-3).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use aws_lc_rs::rsa::{KeyPair, OaepPrivateDecryptingKey};
use sm2::NonZeroScalar;
use sm2::dsa::SigningKey;

use crate::error::CryptoError;

/// Signing keys kept per SM2 key version: one per distinguishing ID seen, for the few IDs an
/// application uses (usually only the default). Further IDs are served without caching.
const MAX_SM2_IDS: usize = 4;

/// The lazily parsed form of one key version's private key.
#[derive(Default)]
pub(crate) struct Parsed(OnceLock<Form>);

enum Form {
    Rsa(RsaPrivate),
    Sm2(Mutex<Vec<Arc<Sm2Signer>>>),
}

/// AWS-LC's parsed forms of one RSA private key, each made on first use: a key version serves
/// one purpose, so in practice only one of them is ever built, but this type does not rely on
/// it. AWS-LC frees (and cleanses) the key when the form drops.
#[derive(Default)]
struct RsaPrivate {
    signer: OnceLock<KeyPair>,
    decrypter: OnceLock<OaepPrivateDecryptingKey>,
}

/// `lock`'s value, made by `parse` on first use. Two threads may both parse; either value is
/// the same key, and the loser's copy is dropped.
fn parsed_once<T>(
    lock: &OnceLock<T>,
    parse: impl FnOnce() -> Result<T, CryptoError>,
) -> Result<&T, CryptoError> {
    if let Some(value) = lock.get() {
        return Ok(value);
    }
    let _ = lock.set(parse()?);
    lock.get().ok_or(CryptoError::MalformedKey)
}

impl Parsed {
    /// One of the RSA key's parsed forms, made on first use.
    fn rsa_part<T>(
        &self,
        part: fn(&RsaPrivate) -> &OnceLock<T>,
        parse: impl Fn() -> Result<T, CryptoError>,
    ) -> Result<&T, CryptoError> {
        if self.0.get().is_none() {
            // Parse before claiming the slot: bytes that are not an RSA key leave it free.
            let fresh = RsaPrivate::default();
            let _ = part(&fresh).set(parse()?);
            let _ = self.0.set(Form::Rsa(fresh));
        }
        match self.0.get() {
            Some(Form::Rsa(key)) => parsed_once(part(key), parse),
            Some(Form::Sm2(_)) | None => Err(CryptoError::Mismatch),
        }
    }

    /// The RSA signing key, decoded from its PKCS#8 document on first use.
    pub(crate) fn rsa_signer(&self, pkcs8: &[u8]) -> Result<&KeyPair, CryptoError> {
        self.rsa_part(|k| &k.signer, || super::rsa::parse_signer(pkcs8))
    }

    /// The RSA-OAEP decryption key, decoded from its PKCS#8 document on first use.
    pub(crate) fn rsa_decrypter(
        &self,
        pkcs8: &[u8],
    ) -> Result<&OaepPrivateDecryptingKey, CryptoError> {
        self.rsa_part(|k| &k.decrypter, || super::rsa::parse_decrypter(pkcs8))
    }

    /// The SM2 signing key for distinguishing ID `id`, built from the private scalar on first use.
    pub(crate) fn sm2_signer(
        &self,
        scalar: &[u8],
        id: &str,
    ) -> Result<Arc<Sm2Signer>, CryptoError> {
        let Form::Sm2(signers) = self.0.get_or_init(|| Form::Sm2(Mutex::default())) else {
            return Err(CryptoError::Mismatch);
        };
        let mut signers = signers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = signers.iter().find(|s| &*s.id == id) {
            return Ok(Arc::clone(found));
        }
        let signer = Arc::new(Sm2Signer::new(scalar, id)?);
        if signers.len() < MAX_SM2_IDS {
            signers.push(Arc::clone(&signer));
        }
        Ok(signer)
    }
}

/// An SM2 signing key bound to one distinguishing ID.
pub(crate) struct Sm2Signer {
    id: Box<str>,
    key: SigningKey,
}

impl Sm2Signer {
    fn new(scalar: &[u8], id: &str) -> Result<Self, CryptoError> {
        Ok(Self {
            id: id.into(),
            key: SigningKey::from_slice(id, scalar).map_err(|_| CryptoError::MalformedKey)?,
        })
    }

    pub(crate) fn key(&self) -> &SigningKey {
        &self.key
    }
}

/// The sm2 crate's `SigningKey` neither zeroizes itself nor gives mutable access to its scalar.
/// Assigning a whole new value writes over the old one in place, so the secret scalar is
/// replaced by the scalar one; `black_box` keeps the compiler from discarding that store as dead
/// before the allocation is freed.
impl Drop for Sm2Signer {
    fn drop(&mut self) {
        let mut one = [0u8; 32];
        one[31] = 1;
        if let Ok(scalar) = NonZeroScalar::try_from(one.as_slice())
            && let Ok(blank) = SigningKey::from_nonzero_scalar(&self.id, scalar)
        {
            self.key = blank;
        }
        std::hint::black_box(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rsa::{KeyPair, OaepPrivateDecryptingKey};

    use crate::alg::{KeySpec, Purpose, SignatureRequest};
    use crate::crypto::{self, Message};
    use crate::error::CryptoError;
    use crate::policy::Policy;

    /// One key version serves several distinguishing IDs, more than it caches: each signature
    /// verifies under its own ID only, so no cached signer is handed out for the wrong ID.
    #[test]
    fn cached_sm2_signers_stay_bound_to_their_id() {
        let policy = Policy::default();
        let approved = policy.approve(Purpose::Sign, KeySpec::Sm2).unwrap();
        let key = crypto::generate(&approved).unwrap();
        let public = crypto::public_key_of(&key).unwrap();
        let ids: Vec<String> = (0..super::MAX_SM2_IDS + 2)
            .map(|i| format!("id-{i}"))
            .collect();
        for round in 0..2 {
            for id in &ids {
                let request = SignatureRequest::Sm2 { id: id.clone() };
                let sign_ok = policy.approve_signature(approved, request).unwrap();
                let sig = crypto::sign(&sign_ok, &key, Message::Raw(b"m")).unwrap();
                for other in &ids {
                    let verify_ok = policy
                        .approve_verify(
                            approved.for_open(),
                            SignatureRequest::Sm2 { id: other.clone() },
                        )
                        .unwrap();
                    let valid =
                        crypto::verify(&verify_ok, &public, Message::Raw(b"m"), &sig).unwrap();
                    assert_eq!(
                        valid,
                        id == other,
                        "round {round}: signed {id}, verified {other}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_parsed_rsa_key_is_reused_and_signs_correctly() {
        let policy = Policy::default();
        let approved = policy.approve(Purpose::Sign, KeySpec::Rsa2048).unwrap();
        let key = crypto::generate(&approved).unwrap();
        let public = crypto::public_key_of(&key).unwrap();
        let request = SignatureRequest::default_for(KeySpec::Rsa2048).unwrap();
        let sign_ok = policy.approve_signature(approved, request.clone()).unwrap();
        let verify_ok = policy.approve_verify(approved.for_open(), request).unwrap();
        let first: *const KeyPair = key.parsed().rsa_signer(key.expose_secret()).unwrap();
        for _ in 0..2 {
            let sig = crypto::sign(&sign_ok, &key, Message::Raw(b"m")).unwrap();
            assert!(crypto::verify(&verify_ok, &public, Message::Raw(b"m"), &sig).unwrap());
        }
        let again: *const KeyPair = key.parsed().rsa_signer(key.expose_secret()).unwrap();
        assert_eq!(first, again, "parsed once, then reused");
        // The same parsed form also serves OAEP (the purpose is checked elsewhere), once.
        let dec: *const OaepPrivateDecryptingKey =
            key.parsed().rsa_decrypter(key.expose_secret()).unwrap();
        let dec_again: *const OaepPrivateDecryptingKey =
            key.parsed().rsa_decrypter(key.expose_secret()).unwrap();
        assert_eq!(dec, dec_again);
        // An RSA key version never yields an SM2 signer.
        assert!(matches!(
            key.parsed().sm2_signer(key.expose_secret(), "x"),
            Err(CryptoError::Mismatch)
        ));
    }

    #[test]
    fn an_sm2_key_version_never_yields_an_rsa_key_and_garbage_does_not_parse() {
        let policy = Policy::default();
        let approved = policy.approve(Purpose::Sign, KeySpec::Sm2).unwrap();
        let key = crypto::generate(&approved).unwrap();
        assert!(matches!(
            key.parsed().rsa_signer(key.expose_secret()),
            Err(CryptoError::Mismatch)
        ));
        let parsed = super::Parsed::default();
        assert!(matches!(
            parsed.rsa_signer(b"not a key"),
            Err(CryptoError::MalformedKey)
        ));
        assert!(matches!(
            parsed.rsa_decrypter(b"not a key"),
            Err(CryptoError::MalformedKey)
        ));
        // Asking an SM2 key for an RSA form first leaves it usable for SM2.
        let fresh = super::Parsed::default();
        assert!(matches!(
            fresh.rsa_signer(key.expose_secret()),
            Err(CryptoError::MalformedKey)
        ));
        assert!(fresh.sm2_signer(key.expose_secret(), "id").is_ok());
    }
}
