//! Wrapping one level of the hierarchy under the one above, with an AEAD the policy approves and
//! an AAD that binds where the key belongs; and the keys derived from the root key.
//!
//! Wrapped form: `version (1) ‖ algorithm code ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.

use super::{Kek, RootKey, UnsealKey};
use crate::alg::{KeySpec, Purpose};
use crate::crypto::{self, AEAD_NONCE_LEN, AEAD_TAG_LEN};
use crate::error::{CryptoError, Error};
use crate::keys::{KeyId, Namespace};
use crate::policy::{ApprovedDigest, Policy};
use crate::secret::{KeyMaterial, SecretBytes};

const WRAP_FORMAT: u8 = 1;
const PREFIX: usize = 2 + AEAD_NONCE_LEN;

/// The AEAD used for the hierarchy's own wraps. Only GCM specs are valid here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrapAlg(KeySpec);

impl WrapAlg {
    pub const SM4_GCM: Self = Self(KeySpec::Sm4Gcm);
    pub const AES_256_GCM: Self = Self(KeySpec::Aes256Gcm);

    pub fn new(spec: KeySpec) -> Result<Self, Error> {
        match spec {
            KeySpec::Sm4Gcm | KeySpec::Aes256Gcm => Ok(Self(spec)),
            KeySpec::Sm2
            | KeySpec::Rsa2048
            | KeySpec::Rsa3072
            | KeySpec::Rsa4096
            | KeySpec::HmacSm3
            | KeySpec::HmacSha256
            | KeySpec::HmacSha384
            | KeySpec::HmacSha512
            | KeySpec::Sm4Ff1
            | KeySpec::Aes256Ff1 => Err(crate::policy::PolicyError::WrongPurpose {
                spec,
                purpose: Purpose::Encrypt,
            }
            .into()),
        }
    }

    #[must_use]
    pub fn spec(self) -> KeySpec {
        self.0
    }

    /// A level key's algorithm (level keys are made only for wrap algorithms).
    pub(super) fn of(key: &KeyMaterial) -> Self {
        Self(key.spec())
    }

    /// Length of keys used with this AEAD.
    #[must_use]
    pub fn key_len(self) -> usize {
        match self.0 {
            KeySpec::Aes256Gcm => 32,
            KeySpec::Sm4Gcm
            | KeySpec::Sm2
            | KeySpec::Rsa2048
            | KeySpec::Rsa3072
            | KeySpec::Rsa4096
            | KeySpec::HmacSm3
            | KeySpec::HmacSha256
            | KeySpec::HmacSha384
            | KeySpec::HmacSha512
            | KeySpec::Sm4Ff1
            | KeySpec::Aes256Ff1 => 16,
        }
    }
}

/// Encrypts `secret` under `key` (a level key's material), binding `aad`.
fn seal(policy: &Policy, key: &KeyMaterial, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, Error> {
    let approved = policy.approve(Purpose::Encrypt, key.spec())?;
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    crypto::rng::fill(&mut nonce)?;
    let mut out = Vec::with_capacity(PREFIX + secret.len() + AEAD_TAG_LEN);
    out.push(WRAP_FORMAT);
    out.push(key.spec().code());
    out.extend_from_slice(&nonce);
    let mut body = Vec::with_capacity(secret.len() + AEAD_TAG_LEN);
    body.extend_from_slice(secret);
    let sealed = crypto::seal_in_place(&approved, key, &nonce, aad, &mut body);
    if sealed.is_err() {
        zeroize::Zeroize::zeroize(&mut body);
    }
    sealed?;
    out.append(&mut body);
    Ok(out)
}

/// Decrypts what [`seal`] made; any mismatch of key, AAD or bytes is `DecryptionFailed`.
fn open(
    policy: &Policy,
    key: &KeyMaterial,
    aad: &[u8],
    wrapped: &[u8],
) -> Result<SecretBytes, Error> {
    if wrapped.len() < PREFIX + AEAD_TAG_LEN || wrapped[0] != WRAP_FORMAT {
        return Err(CryptoError::DecryptionFailed.into());
    }
    // The algorithm byte must name the key's own algorithm: a wrap cannot switch AEADs.
    if KeySpec::from_code(wrapped[1]) != Some(key.spec()) {
        return Err(CryptoError::DecryptionFailed.into());
    }
    let approved = policy.approve_open(Purpose::Encrypt, key.spec())?;
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    nonce.copy_from_slice(&wrapped[2..PREFIX]);
    let mut buf = SecretBytes::copy_from_slice(&wrapped[PREFIX..]);
    crypto::open_in_place(&approved, key, &nonce, aad, buf.expose_secret_mut())?;
    Ok(buf)
}

/// The root key sealed under the unseal key (stored at init).
pub fn seal_root(
    policy: &Policy,
    unseal: &UnsealKey,
    set_id: &[u8],
    root: &RootKey,
) -> Result<Vec<u8>, Error> {
    seal(policy, &unseal.0, &root_aad(set_id), root.0.expose_secret())
}

/// The root key from its sealed form.
pub fn open_root(
    policy: &Policy,
    unseal: &UnsealKey,
    set_id: &[u8],
    sealed: &[u8],
) -> Result<RootKey, Error> {
    let bytes = open(policy, &unseal.0, &root_aad(set_id), sealed)?;
    Ok(RootKey::from_bytes(unseal.alg(), bytes))
}

/// A namespace KEK wrapped under the root key.
pub fn wrap_kek(
    policy: &Policy,
    root: &RootKey,
    namespace: &Namespace,
    kek: &Kek,
) -> Result<Vec<u8>, Error> {
    seal(policy, &root.0, &kek_aad(namespace), kek.0.expose_secret())
}

/// A namespace KEK from its wrapped form.
pub fn unwrap_kek(
    policy: &Policy,
    root: &RootKey,
    namespace: &Namespace,
    wrapped: &[u8],
) -> Result<Kek, Error> {
    let bytes = open(policy, &root.0, &kek_aad(namespace), wrapped)?;
    Ok(Kek::from_bytes(root.alg(), bytes))
}

/// Where a key version belongs: the AAD its wrap binds, and the spec its material is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionAad {
    aad: Vec<u8>,
    spec: KeySpec,
}

impl VersionAad {
    /// A version moved to another key, version, namespace, purpose or algorithm fails to
    /// unwrap.
    #[must_use]
    pub fn new(
        id: KeyId,
        version: u32,
        namespace: &Namespace,
        purpose: Purpose,
        spec: KeySpec,
    ) -> Self {
        Self {
            aad: key_aad(id, version, namespace, purpose, spec),
            spec,
        }
    }
}

/// A key version's material wrapped under its namespace KEK.
pub fn wrap_version(
    policy: &Policy,
    kek: &Kek,
    at: &VersionAad,
    material: &KeyMaterial,
) -> Result<Vec<u8>, Error> {
    if material.spec() != at.spec {
        return Err(CryptoError::Mismatch.into());
    }
    seal(policy, &kek.0, &at.aad, material.expose_secret())
}

/// A key version's material from its wrapped form.
pub fn unwrap_version(
    policy: &Policy,
    kek: &Kek,
    at: &VersionAad,
    wrapped: &[u8],
) -> Result<KeyMaterial, Error> {
    let bytes = open(policy, &kek.0, &at.aad, wrapped)?;
    Ok(KeyMaterial::new(at.spec, bytes))
}

/// The uses of keys derived from the root key. Each has its own HKDF label and length, so no
/// two uses can share a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Derived {
    /// Encrypts backups (its AEAD is the store's wrap algorithm).
    BackupKey(WrapAlg),
    /// Keys the HMAC-SM3 of encryption contexts in audit records.
    AuditContextHmac,
}

impl Derived {
    fn label(self) -> &'static [u8] {
        match self {
            Self::BackupKey(_) => b"backup-key",
            Self::AuditContextHmac => b"audit-context-hmac",
        }
    }

    /// The derived key's length: the AEAD's key length, or SM3's output for HMAC-SM3.
    #[must_use]
    pub fn key_len(self) -> usize {
        match self {
            Self::BackupKey(alg) => alg.key_len(),
            Self::AuditContextHmac => 32,
        }
    }

    /// The spec the derived key is used as.
    #[must_use]
    pub fn spec(self) -> KeySpec {
        match self {
            Self::BackupKey(alg) => alg.spec(),
            Self::AuditContextHmac => KeySpec::HmacSm3,
        }
    }
}

/// HKDF-SM3 salt: names this scheme, so its keys differ from any other use of the root key.
const DERIVE_SALT: &[u8] = b"kms-core/hierarchy/derive/v2";

/// A key derived from the root key for one named use: HKDF-SM3 (RFC 5869) with the info
/// `label ‖ 0x00 ‖ length (u16, big-endian)`, so a use asking for another length gets an
/// unrelated key.
pub fn derive(root: &RootKey, what: Derived) -> Result<KeyMaterial, Error> {
    let len = what.key_len();
    let len16 = u16::try_from(len).map_err(|_| CryptoError::Mismatch)?;
    let mut info = what.label().to_vec();
    info.push(0);
    info.extend_from_slice(&len16.to_be_bytes());
    let okm = crypto::kdf::hkdf(
        ApprovedDigest::SM3,
        DERIVE_SALT,
        root.0.expose_secret(),
        &info,
        len,
    )?;
    Ok(KeyMaterial::new(what.spec(), okm))
}

/// The first hierarchy's derivation, HMAC-SM3(root, label) truncated: read-only, for opening
/// backups of format 1 (`kms/backup.rs`). Nothing new is derived this way.
pub(crate) fn derive_v1_backup_key(root: &RootKey, alg: WrapAlg) -> Result<KeyMaterial, Error> {
    const V1_LABEL: &str = "kms/backup/v1";
    let as_mac_key = KeyMaterial::new(
        KeySpec::HmacSm3,
        SecretBytes::copy_from_slice(root.0.expose_secret()),
    );
    let approved = Policy::GM_FORMATS.approve(Purpose::Mac, KeySpec::HmacSm3)?;
    let mut tag = crypto::mac(&approved, &as_mac_key, V1_LABEL.as_bytes())?;
    let len = alg.key_len();
    let out = SecretBytes::copy_from_slice(tag.get(..len).ok_or(CryptoError::Mismatch)?);
    zeroize::Zeroize::zeroize(&mut tag);
    Ok(KeyMaterial::new(alg.spec(), out))
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// AAD for a root key sealed under the unseal key.
#[must_use]
pub fn root_aad(set_id: &[u8]) -> Vec<u8> {
    let mut aad = b"kms/root/v1".to_vec();
    push_field(&mut aad, set_id);
    aad
}

/// AAD for a namespace KEK wrapped under the root key.
#[must_use]
pub fn kek_aad(namespace: &Namespace) -> Vec<u8> {
    let mut aad = b"kms/kek/v1".to_vec();
    push_field(&mut aad, namespace.as_str().as_bytes());
    aad
}

/// AAD for a key version wrapped under its namespace KEK: a record moved to another key,
/// version, namespace, purpose or algorithm fails to unwrap.
#[must_use]
pub fn key_aad(
    id: KeyId,
    version: u32,
    namespace: &Namespace,
    purpose: Purpose,
    spec: KeySpec,
) -> Vec<u8> {
    let mut aad = b"kms/key/v1".to_vec();
    push_field(&mut aad, id.as_bytes());
    push_field(&mut aad, &version.to_be_bytes());
    push_field(&mut aad, namespace.as_str().as_bytes());
    push_field(&mut aad, purpose.name().as_bytes());
    push_field(&mut aad, spec.name().as_bytes());
    aad
}

/// Raw access for the leak scan (`tests/tests/hardening/leak_scan.rs`), which must prove that
/// the needles it searches for are the real keys by extracting them on its own. Only with the
/// `test-util` feature: never in a shipped build.
#[cfg(feature = "test-util")]
pub mod forensic {
    use super::{DERIVE_SALT, Derived, open};
    use crate::error::Error;
    use crate::policy::{ApprovedDigest, Policy};
    use crate::secret::{KeyMaterial, SecretBytes};

    /// Opens any wrap with the raw bytes of the key above it (its algorithm is the one the wrap
    /// names).
    pub fn unwrap(key: &[u8], aad: &[u8], wrapped: &[u8]) -> Result<SecretBytes, Error> {
        let spec = wrapped
            .get(1)
            .and_then(|&c| crate::alg::KeySpec::from_code(c))
            .ok_or(crate::error::CryptoError::DecryptionFailed)?;
        let key = KeyMaterial::new(spec, SecretBytes::copy_from_slice(key));
        open(&Policy::default(), &key, aad, wrapped)
    }

    /// [`super::derive`] from the root key's raw bytes.
    pub fn derive(root: &[u8], what: Derived) -> Result<SecretBytes, Error> {
        let len = what.key_len();
        let mut info = what.label().to_vec();
        info.push(0);
        info.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        Ok(crate::crypto::kdf::hkdf(
            ApprovedDigest::SM3,
            DERIVE_SALT,
            root,
            &info,
            len,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Namespace;

    fn policy() -> Policy {
        Policy::default()
    }

    fn ns() -> Namespace {
        Namespace::new("payments").unwrap()
    }

    #[test]
    fn every_level_round_trips_and_binds_its_place() {
        for alg in [WrapAlg::SM4_GCM, WrapAlg::AES_256_GCM] {
            let p = policy();
            let root = RootKey::generate(alg).unwrap();
            let kek = Kek::generate(alg).unwrap();
            let w = wrap_kek(&p, &root, &ns(), &kek).unwrap();
            let back = unwrap_kek(&p, &root, &ns(), &w).unwrap();
            assert_eq!(back.0.expose_secret(), kek.0.expose_secret());
            // Another namespace, another root key, any flipped byte, a cut: all DecryptionFailed.
            let other_ns = Namespace::new("other").unwrap();
            let fails = |r: Result<Kek, Error>| {
                matches!(r, Err(Error::Crypto(CryptoError::DecryptionFailed)))
            };
            assert!(fails(unwrap_kek(&p, &root, &other_ns, &w)));
            assert!(fails(unwrap_kek(
                &p,
                &RootKey::generate(alg).unwrap(),
                &ns(),
                &w
            )));
            for i in 0..w.len() {
                let mut t = w.clone();
                t[i] ^= 0x01;
                assert!(fails(unwrap_kek(&p, &root, &ns(), &t)), "byte {i}");
            }
            assert!(fails(unwrap_kek(&p, &root, &ns(), &w[..w.len() - 1])));
            assert!(fails(unwrap_kek(&p, &root, &ns(), &[])));

            let id = KeyId(uuid::Uuid::from_bytes([3; 16]));
            let at = VersionAad::new(id, 1, &ns(), Purpose::Encrypt, KeySpec::Sm4Gcm);
            let material =
                KeyMaterial::new(KeySpec::Sm4Gcm, crypto::rng::random_secret(16).unwrap());
            let wv = wrap_version(&p, &kek, &at, &material).unwrap();
            let opened = unwrap_version(&p, &kek, &at, &wv).unwrap();
            assert_eq!(opened.expose_secret(), material.expose_secret());
            assert_eq!(opened.spec(), KeySpec::Sm4Gcm);
            let v2 = VersionAad::new(id, 2, &ns(), Purpose::Encrypt, KeySpec::Sm4Gcm);
            assert!(matches!(
                unwrap_version(&p, &kek, &v2, &wv),
                Err(Error::Crypto(CryptoError::DecryptionFailed))
            ));
            // Material of another spec than its place says is refused before wrapping.
            let wrong = VersionAad::new(id, 1, &ns(), Purpose::Encrypt, KeySpec::Aes256Gcm);
            assert!(matches!(
                wrap_version(&p, &kek, &wrong, &material),
                Err(Error::Crypto(CryptoError::Mismatch))
            ));
        }
    }

    #[test]
    fn the_root_opens_only_with_its_unseal_key_and_set() {
        let p = policy();
        let alg = WrapAlg::SM4_GCM;
        let unseal = UnsealKey::generate(alg).unwrap();
        let root = RootKey::generate(alg).unwrap();
        let sealed = seal_root(&p, &unseal, b"set-1", &root).unwrap();
        let back = open_root(&p, &unseal, b"set-1", &sealed).unwrap();
        assert_eq!(back.0.expose_secret(), root.0.expose_secret());
        assert!(matches!(
            open_root(&p, &unseal, b"set-2", &sealed),
            Err(Error::Crypto(CryptoError::DecryptionFailed))
        ));
        assert!(matches!(
            open_root(&p, &UnsealKey::generate(alg).unwrap(), b"set-1", &sealed),
            Err(Error::Crypto(CryptoError::DecryptionFailed))
        ));
    }

    #[test]
    fn a_wrap_cannot_switch_its_aead() {
        let p = policy();
        let root = RootKey::generate(WrapAlg::SM4_GCM).unwrap();
        let kek = Kek::generate(WrapAlg::SM4_GCM).unwrap();
        let mut w = wrap_kek(&p, &root, &ns(), &kek).unwrap();
        w[1] = KeySpec::Aes256Gcm.code();
        assert!(matches!(
            unwrap_kek(&p, &root, &ns(), &w),
            Err(Error::Crypto(CryptoError::DecryptionFailed))
        ));
    }

    #[test]
    fn derived_keys_are_separated_by_use_and_length() {
        let root = RootKey::generate(WrapAlg::SM4_GCM).unwrap();
        let backup16 = derive(&root, Derived::BackupKey(WrapAlg::SM4_GCM)).unwrap();
        let backup32 = derive(&root, Derived::BackupKey(WrapAlg::AES_256_GCM)).unwrap();
        let context = derive(&root, Derived::AuditContextHmac).unwrap();
        assert_eq!(
            (
                backup16.expose_secret().len(),
                backup32.expose_secret().len()
            ),
            (16, 32)
        );
        assert_eq!(
            (backup16.spec(), context.spec()),
            (KeySpec::Sm4Gcm, KeySpec::HmacSm3)
        );
        // The 16-byte key is not a prefix of the 32-byte one: the length is in the info.
        assert_ne!(backup16.expose_secret(), &backup32.expose_secret()[..16]);
        assert_ne!(&context.expose_secret()[..16], backup16.expose_secret());
        // Deterministic for one root, different for another.
        let again = derive(&root, Derived::AuditContextHmac).unwrap();
        assert_eq!(again.expose_secret(), context.expose_secret());
        let other = RootKey::generate(WrapAlg::SM4_GCM).unwrap();
        assert_ne!(
            derive(&other, Derived::AuditContextHmac)
                .unwrap()
                .expose_secret(),
            context.expose_secret()
        );
    }

    #[test]
    fn key_aad_differs_in_every_field() {
        let id = KeyId(uuid::Uuid::from_bytes([1; 16]));
        let ns = Namespace::new("a").unwrap();
        let base = key_aad(id, 1, &ns, Purpose::Encrypt, KeySpec::Sm4Gcm);
        assert_ne!(
            base,
            key_aad(
                KeyId(uuid::Uuid::from_bytes([2; 16])),
                1,
                &ns,
                Purpose::Encrypt,
                KeySpec::Sm4Gcm
            )
        );
        assert_ne!(base, key_aad(id, 2, &ns, Purpose::Encrypt, KeySpec::Sm4Gcm));
        assert_ne!(
            base,
            key_aad(
                id,
                1,
                &Namespace::new("b").unwrap(),
                Purpose::Encrypt,
                KeySpec::Sm4Gcm
            )
        );
        assert_ne!(base, key_aad(id, 1, &ns, Purpose::Mac, KeySpec::Sm4Gcm));
        assert_ne!(
            base,
            key_aad(id, 1, &ns, Purpose::Encrypt, KeySpec::Aes256Gcm)
        );
    }
}
