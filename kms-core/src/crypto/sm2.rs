//! SM2 signatures (GB/T 32918.2, SM3 with Z_A) and encryption (GB/T 32918.4, GM/T 0009 DER).
//!
//! Key material is the 32-byte private scalar. The sm2 crate's key types neither zeroize on drop
//! nor redact `Debug` (`DecryptingKey` prints its scalar), so they live only inside these
//! functions and are never formatted.

use signature::hazmat::{PrehashVerifier, RandomizedPrehashSigner};
use signature::{RandomizedSigner, Verifier};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};
use sm2::pkcs8::der::Decode;
use sm2::pkcs8::{DecodePublicKey, EncodePublicKey};
use sm2::pke::EncryptingKey;
use sm2::{PublicKey as Sm2PublicKey, SecretKey};

use super::Message;
use super::rng::SysRng;
use crate::error::CryptoError;
use crate::secret::SecretBytes;

/// Length of `e = SM3(Z_A ‖ M)`, the SM2 prehash.
const PREHASH_LEN: usize = 32;

/// Signs with a key already bound to its distinguishing ID (see [`super::parsed`]).
pub(super) fn sign(key: &SigningKey, message: Message<'_>) -> Result<Vec<u8>, CryptoError> {
    // Randomized (hedged) signing: fresh OS randomness is mixed into the RFC 6979 nonce.
    let sig: Signature = match message {
        Message::Raw(m) => key.try_sign_with_rng(&mut SysRng, m),
        Message::Digest(e) => {
            if e.len() != PREHASH_LEN {
                return Err(CryptoError::OperationFailed);
            }
            key.sign_prehash_with_rng(&mut SysRng, e)
        }
    }
    .map_err(|_| CryptoError::OperationFailed)?;
    Ok(sig.to_der().to_vec())
}

pub(super) fn verify(
    spki: &[u8],
    id: &str,
    message: Message<'_>,
    der_sig: &[u8],
) -> Result<bool, CryptoError> {
    let public = Sm2PublicKey::from_public_key_der(spki).map_err(|_| CryptoError::MalformedKey)?;
    let key = VerifyingKey::new(id, public).map_err(|_| CryptoError::MalformedKey)?;
    let Ok(sig) = Signature::from_der(der_sig) else {
        return Ok(false);
    };
    let ok = match message {
        Message::Raw(m) => key.verify(m, &sig).is_ok(),
        Message::Digest(e) => e.len() == PREHASH_LEN && key.verify_prehash(e, &sig).is_ok(),
    };
    Ok(ok)
}

pub(super) fn encrypt(spki: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let public = Sm2PublicKey::from_public_key_der(spki).map_err(|_| CryptoError::MalformedKey)?;
    EncryptingKey::new(public)
        .encrypt_der(&mut SysRng, plaintext)
        .map_err(|_| CryptoError::OperationFailed)
}

/// Length of C3 = SM3(x2 ‖ M ‖ y2) and of one KDF block.
const SM3_LEN: usize = 32;
/// Length of one coordinate of a point on sm2p256v1.
const COORD_LEN: usize = 32;

/// The parts of a GM/T 0009-2012 §7.2 ciphertext, all public:
/// `SEQUENCE { XCoordinate INTEGER, YCoordinate INTEGER, HASH OCTET STRING, CipherText OCTET
/// STRING }`. The coordinates are left-padded to 32 bytes.
struct CiphertextDer<'a> {
    x: [u8; COORD_LEN],
    y: [u8; COORD_LEN],
    c3: &'a [u8],
    c2: &'a [u8],
}

/// Strict DER: minimal INTEGERs, definite lengths, no trailing bytes.
fn parse_der(der: &[u8]) -> Option<CiphertextDer<'_>> {
    use sm2::pkcs8::der::asn1::{OctetStringRef, UintRef};
    use sm2::pkcs8::der::{Reader, SliceReader};

    fn coordinate(v: &[u8]) -> Option<[u8; COORD_LEN]> {
        let pad = COORD_LEN.checked_sub(v.len())?;
        let mut out = [0u8; COORD_LEN];
        out[pad..].copy_from_slice(v);
        Some(out)
    }

    let mut reader = SliceReader::new(der).ok()?;
    let (x, y, c3, c2) = reader
        .sequence(|r| {
            let x = UintRef::decode(r)?;
            let y = UintRef::decode(r)?;
            let c3 = <&OctetStringRef>::decode(r)?;
            let c2 = <&OctetStringRef>::decode(r)?;
            Ok::<_, sm2::pkcs8::der::Error>((x, y, c3, c2))
        })
        .ok()?;
    reader.finish().ok()?;
    Some(CiphertextDer {
        x: coordinate(x.as_bytes())?,
        y: coordinate(y.as_bytes())?,
        c3: c3.as_bytes(),
        c2: c2.as_bytes(),
    })
}

/// SM2 decryption, GB/T 32918.4-2016 §7.1 steps B1–B7, written out here rather than taken from
/// the `sm2` crate, whose `decrypt*` compares C3 with `!=` (not constant time), skips the
/// "t is all zero" check, leaves `(x2, y2)` and the KDF state unwiped on its stack, and (in
/// `decrypt_der`) drops a rejected candidate plaintext without wiping it.
///
/// Everything derived from the private key — `[d]C1 = (x2, y2)`, the KDF output `t` and the
/// candidate plaintext `M'` — lives in zeroizing buffers. The C3 comparison and the all-zero
/// check are folded into one constant-time [`Choice`](subtle::Choice), and every failure after
/// parsing is the same [`CryptoError::DecryptionFailed`], so neither the error nor a branch on
/// secret data tells a bad C3 from a bad C2 (no oracle). Parsing errors (B1) only depend on
/// public bytes.
pub(super) fn decrypt(scalar: &[u8], der: &[u8]) -> Result<SecretBytes, CryptoError> {
    use sm2::elliptic_curve::Group;
    use sm2::elliptic_curve::sec1::{Coordinates, FromSec1Point, ToSec1Point};
    use sm2::{AffinePoint, NonZeroScalar, ProjectivePoint, Sec1Point};
    use sm3::{Digest, Sm3};
    use subtle::ConstantTimeEq;
    use zeroize::{Zeroize, Zeroizing};

    const FAILED: CryptoError = CryptoError::DecryptionFailed;

    // B1: C1 from C, and C1 must be a point of the curve. The DER form carries C1's affine
    // coordinates, so the identity (which has none) cannot even be written; `from_sec1_point`
    // checks the curve equation and that both coordinates are below p.
    let ct = parse_der(der).ok_or(FAILED)?;
    if ct.c3.len() != SM3_LEN || ct.c2.is_empty() {
        // klen = 0 is not a ciphertext: t would be empty, and our encryption refuses it too.
        return Err(FAILED);
    }
    let encoded = Sec1Point::from_affine_coordinates(&ct.x.into(), &ct.y.into(), false);
    let c1: AffinePoint = Option::from(AffinePoint::from_sec1_point(&encoded)).ok_or(FAILED)?;
    let c1 = ProjectivePoint::from(c1);
    // B2: S = [h]C1 must not be the point at infinity; h = 1 on sm2p256v1, so S = C1.
    if bool::from(c1.is_identity()) {
        return Err(FAILED);
    }

    // B3: [d]C1 = (x2, y2), kept as x2 ‖ y2 in a zeroizing buffer.
    let mut d = NonZeroScalar::try_from(scalar).map_err(|_| CryptoError::MalformedKey)?;
    let mut shared_projective = c1 * d.as_ref();
    d.zeroize();
    let mut shared = shared_projective.to_affine();
    shared_projective.zeroize();
    let mut z = Zeroizing::new([0u8; 2 * COORD_LEN]);
    let mut shared_sec1 = shared.to_sec1_point(false);
    shared.zeroize();
    let copied = match shared_sec1.coordinates() {
        Coordinates::Uncompressed { x, y } => {
            z[..COORD_LEN].copy_from_slice(x);
            z[COORD_LEN..].copy_from_slice(y);
            true
        }
        Coordinates::Identity | Coordinates::Compact { .. } | Coordinates::Compressed { .. } => {
            false
        }
    };
    shared_sec1.zeroize();
    if !copied {
        // [d]C1 = O cannot happen for C1 ≠ O and d in [1, n-1] on a prime-order curve.
        return Err(FAILED);
    }

    // B4 and B5: t = KDF(x2 ‖ y2, klen) with SM3, M' = C2 ⊕ t, computed block by block into the
    // zeroizing plaintext buffer; `t_any` ORs every byte of t for the all-zero check.
    let mut plaintext = SecretBytes::copy_from_slice(ct.c2);
    let mut t_any = 0u8;
    let mut block = Zeroizing::new([0u8; SM3_LEN]);
    for (i, chunk) in plaintext
        .expose_secret_mut()
        .chunks_mut(SM3_LEN)
        .enumerate()
    {
        let counter = u32::try_from(i + 1).map_err(|_| FAILED)?;
        let mut h = Sm3::new();
        h.update(&z[..]);
        h.update(counter.to_be_bytes());
        let mut out = h.finalize();
        block.copy_from_slice(&out);
        out.as_mut_slice().zeroize();
        for (m, t) in chunk.iter_mut().zip(block.iter()) {
            t_any |= *t;
            *m ^= *t;
        }
    }

    // B6: u = SM3(x2 ‖ M' ‖ y2), compared with C3 in constant time; together with "t is not all
    // zero" (B4) this is one Choice and one branch.
    let mut h = Sm3::new();
    h.update(&z[..COORD_LEN]);
    h.update(plaintext.expose_secret());
    h.update(&z[COORD_LEN..]);
    let u = h.finalize();
    let ok = u.as_slice().ct_eq(ct.c3) & !t_any.ct_eq(&0);
    if bool::from(ok) {
        // B7: M'.
        Ok(plaintext)
    } else {
        // The candidate M' is wiped as `plaintext` drops here.
        drop(plaintext);
        Err(FAILED)
    }
}

pub(super) fn public_spki(scalar: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let secret = SecretKey::from_slice(scalar).map_err(|_| CryptoError::MalformedKey)?;
    let doc = secret
        .public_key()
        .to_public_key_der()
        .map_err(|_| CryptoError::MalformedKey)?;
    Ok(doc.as_bytes().to_vec())
}

/// A fresh private scalar from the OS CSPRNG.
pub(super) fn generate() -> Result<SecretBytes, CryptoError> {
    use sm2::elliptic_curve::Generate;
    let secret = SecretKey::try_generate_from_rng(&mut SysRng).map_err(|_| CryptoError::Rng)?;
    // `to_bytes` returns a plain array: copy it into the zeroizing buffer, then wipe it.
    let mut bytes = secret.to_bytes();
    let out = SecretBytes::copy_from_slice(&bytes);
    zeroize::Zeroize::zeroize(bytes.as_mut_slice());
    Ok(out)
}

/// The PKCS#8 `PrivateKeyInfo` (DER, with the public key) of a scalar, as OpenSSL writes SM2
/// keys: for export, wrapped (issue 19).
pub(super) fn to_pkcs8(scalar: &[u8]) -> Result<SecretBytes, CryptoError> {
    use sm2::pkcs8::EncodePrivateKey;
    let secret = SecretKey::from_slice(scalar).map_err(|_| CryptoError::MalformedKey)?;
    let doc = secret
        .to_pkcs8_der()
        .map_err(|_| CryptoError::MalformedKey)?;
    // SecretDocument wipes itself on drop; this copy is the one handed on.
    Ok(SecretBytes::copy_from_slice(doc.as_bytes()))
}

/// Accepts a PKCS#8 SM2 private key and returns its scalar.
pub(super) fn import_pkcs8(der: &[u8]) -> Result<SecretBytes, CryptoError> {
    use sm2::pkcs8::DecodePrivateKey;
    let secret = SecretKey::from_pkcs8_der(der).map_err(|_| CryptoError::MalformedKey)?;
    let mut bytes = secret.to_bytes();
    let out = SecretBytes::copy_from_slice(&bytes);
    zeroize::Zeroize::zeroize(bytes.as_mut_slice());
    Ok(out)
}

/// Whether an SPKI document holds an SM2 public key.
pub(super) fn parse_public(spki: &[u8]) -> Option<Vec<u8>> {
    let key = Sm2PublicKey::from_public_key_der(spki).ok()?;
    key.to_public_key_der().ok().map(|d| d.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GM/T 0003.5-2012 / GB/T 32918.5-2017 Annex C (encryption on the recommended curve), as in
    /// `tests/data/sm2_enc.json`'s `standard` vector.
    const ANNEX_C_D: &str = "3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8";
    const ANNEX_C_MSG: &[u8] = b"encryption standard";
    const ANNEX_C_X1: &str = "04ebfc718e8d1798620432268e77feb6415e2ede0e073c0f4f640ecd2e149a73";
    const ANNEX_C_Y1: &str = "e858f9d81e5430a57b36daab8f950a3c64e6ee6a63094d99283aff767e124df0";
    const ANNEX_C_C3: &str = "59983c18f809e262923c53aec295d30383b54e39d609d160afcb1908d0bd8766";
    const ANNEX_C_C2: &str = "21886ca989ca9c7d58087307ca93092d651efa";
    const ANNEX_C_DER: &str = "307c022004ebfc718e8d1798620432268e77feb6415e2ede0e073c0f4f640ecd2e\
        149a73022100e858f9d81e5430a57b36daab8f950a3c64e6ee6a63094d99283aff767e124df0042059983c18f8\
        09e262923c53aec295d30383b54e39d609d160afcb1908d0bd8766041321886ca989ca9c7d58087307ca93092d\
        651efa";
    /// The field prime p of sm2p256v1.
    const P: &str = "fffffffeffffffffffffffffffffffffffffffff00000000ffffffffffffffff";

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(char::is_whitespace, "")).unwrap()
    }

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(u8::try_from(len).unwrap());
        } else if len < 0x100 {
            out.extend_from_slice(&[0x81, u8::try_from(len).unwrap()]);
        } else {
            out.push(0x82);
            out.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    /// A minimal DER INTEGER for a non-negative big-endian number.
    fn uint(v: &[u8]) -> Vec<u8> {
        let start = v.iter().position(|&b| b != 0).unwrap_or(v.len() - 1);
        let mut c = v[start..].to_vec();
        if c[0] & 0x80 != 0 {
            c.insert(0, 0);
        }
        tlv(0x02, &c)
    }

    fn ciphertext(x: &[u8], y: &[u8], c3: &[u8], c2: &[u8]) -> Vec<u8> {
        let body = [uint(x), uint(y), tlv(0x04, c3), tlv(0x04, c2)].concat();
        tlv(0x30, &body)
    }

    fn annex_c() -> Vec<u8> {
        ciphertext(
            &h(ANNEX_C_X1),
            &h(ANNEX_C_Y1),
            &h(ANNEX_C_C3),
            &h(ANNEX_C_C2),
        )
    }

    #[test]
    fn gb_t_32918_5_annex_c_decrypts() {
        assert_eq!(
            annex_c(),
            h(ANNEX_C_DER),
            "the test's DER encoder matches the vector"
        );
        let pt = decrypt(&h(ANNEX_C_D), &h(ANNEX_C_DER)).unwrap();
        assert_eq!(pt.expose_secret(), ANNEX_C_MSG);
    }

    #[test]
    fn tampered_c3_or_c2_fails_with_one_error() {
        let d = h(ANNEX_C_D);
        let (c3, c2) = (h(ANNEX_C_C3), h(ANNEX_C_C2));
        for i in 0..c3.len() {
            for bit in [0x01, 0x80] {
                let mut bad = c3.clone();
                bad[i] ^= bit;
                let der = ciphertext(&h(ANNEX_C_X1), &h(ANNEX_C_Y1), &bad, &c2);
                assert_eq!(decrypt(&d, &der).err(), Some(CryptoError::DecryptionFailed));
            }
        }
        for i in 0..c2.len() {
            let mut bad = c2.clone();
            bad[i] ^= 0x01;
            let der = ciphertext(&h(ANNEX_C_X1), &h(ANNEX_C_Y1), &h(ANNEX_C_C3), &bad);
            assert_eq!(decrypt(&d, &der).err(), Some(CryptoError::DecryptionFailed));
        }
        // Truncating or extending C2 changes klen, and so t and u.
        for c2 in [&c2[..c2.len() - 1], &[c2.as_slice(), &[0]].concat()[..]] {
            let der = ciphertext(&h(ANNEX_C_X1), &h(ANNEX_C_Y1), &h(ANNEX_C_C3), c2);
            assert_eq!(decrypt(&d, &der).err(), Some(CryptoError::DecryptionFailed));
        }
    }

    #[test]
    fn c1_off_the_curve_is_refused() {
        let d = h(ANNEX_C_D);
        let (x, y) = (h(ANNEX_C_X1), h(ANNEX_C_Y1));
        let (c3, c2) = (h(ANNEX_C_C3), h(ANNEX_C_C2));
        let mut x_plus_one = x.clone();
        x_plus_one[31] ^= 0x01;
        let mut y_flipped = y.clone();
        y_flipped[0] ^= 0x01;
        let zero = [0u8; 32];
        let p = h(P);
        // x + p: the same residue, but not a canonical coordinate (33 bytes is refused too).
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (x_plus_one, y.clone()),
            (x.clone(), y_flipped),
            (zero.to_vec(), zero.to_vec()),
            (p.clone(), y.clone()),
            (x.clone(), p),
            ([[1u8].as_slice(), &x].concat(), y),
        ];
        for (cx, cy) in cases {
            let der = ciphertext(&cx, &cy, &c3, &c2);
            assert_eq!(decrypt(&d, &der).err(), Some(CryptoError::DecryptionFailed));
        }
    }

    #[test]
    fn malformed_der_is_refused() {
        let d = h(ANNEX_C_D);
        let good = h(ANNEX_C_DER);
        let (x, y) = (h(ANNEX_C_X1), h(ANNEX_C_Y1));
        let (c3, c2) = (h(ANNEX_C_C3), h(ANNEX_C_C2));
        let mut non_minimal_x = vec![0x02, 0x21, 0x00];
        non_minimal_x.extend_from_slice(&x);
        let non_minimal = tlv(
            0x30,
            &[non_minimal_x, uint(&y), tlv(0x04, &c3), tlv(0x04, &c2)].concat(),
        );
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            good[..good.len() - 1].to_vec(),
            [good.as_slice(), &[0]].concat(),
            ciphertext(&x, &y, &c3, &[]),
            ciphertext(&x, &y, &c3[..31], &c2),
            ciphertext(&x, &y, &[c3.as_slice(), &[0]].concat(), &c2),
            non_minimal,
            // The GB/T 32918.4 C1 ‖ C3 ‖ C2 concatenation is not the interop format.
            [&[0x04], x.as_slice(), &y, &c3, &c2].concat(),
        ];
        for der in cases {
            assert_eq!(decrypt(&d, &der).err(), Some(CryptoError::DecryptionFailed));
        }
    }

    #[test]
    fn round_trips_and_agrees_with_the_sm2_crate() {
        let scalar = generate().unwrap();
        let spki = public_spki(scalar.expose_secret()).unwrap();
        let reference = sm2::pke::DecryptingKey::from_slice(scalar.expose_secret()).unwrap();
        for len in [1usize, 2, 31, 32, 33, 63, 64, 65, 100, 1000] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let der = encrypt(&spki, &msg).unwrap();
            let ours = decrypt(scalar.expose_secret(), &der).unwrap();
            assert_eq!(ours.expose_secret(), msg.as_slice(), "{len} bytes");
            assert_eq!(reference.decrypt_der(&der).unwrap(), msg, "{len} bytes");
        }
        // Another key's ciphertext fails like a tampered one.
        let other = generate().unwrap();
        let der = encrypt(&spki, b"for someone else").unwrap();
        assert_eq!(
            decrypt(other.expose_secret(), &der).err(),
            Some(CryptoError::DecryptionFailed)
        );
    }
}
