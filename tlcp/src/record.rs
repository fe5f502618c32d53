//! The TLCP record layer (GB/T 38636-2020 §6.3): framing and record protection.
//!
//! ```text
//! record    = type(1) ‖ version 0x0101 (2) ‖ length(2) ‖ fragment
//! GCM       = explicit_nonce(8) ‖ SM4-GCM(salt(4) ‖ explicit_nonce, aad, plaintext) ‖ tag(16)
//!             aad = seq(8) ‖ type ‖ version ‖ plaintext length(2)
//! CBC       = IV(16) ‖ SM4-CBC(IV, plaintext ‖ HMAC-SM3(mac_key, seq ‖ type ‖ version ‖
//!             length ‖ plaintext) ‖ padding)
//! ```
//!
//! CBC records are checked MAC-then-pad in constant time as far as the padding and the MAC
//! comparison go (`subtle`); the HMAC input length still depends on the padding length (the
//! "Lucky 13" timing channel is narrowed, not closed: prefer the GCM suites).

use aes_gcm::aead::array::Array;
use aes_gcm::{AeadInOut as _, AesGcm, KeyInit as _};
use hmac::Mac as _;
use sm4::Sm4;
use sm4::cipher::consts::U12;
use sm4::cipher::{BlockCipherDecrypt as _, BlockCipherEncrypt as _};
use subtle::{ConstantTimeEq as _, ConstantTimeLess as _};
use zeroize::Zeroizing;

use crate::error::TlcpError;
use crate::suite::{Bulk, CipherSuite};

/// The protocol version of TLCP, on every record and in both hellos.
pub(crate) const VERSION: [u8; 2] = [0x01, 0x01];
/// Largest plaintext fragment.
pub(crate) const MAX_PLAINTEXT: usize = 1 << 14;
/// Largest protected fragment (RFC 5246 §6.2.3 allowance).
pub(crate) const MAX_FRAGMENT: usize = MAX_PLAINTEXT + 2048;
pub(crate) const HEADER_LEN: usize = 5;

pub(crate) const CHANGE_CIPHER_SPEC: u8 = 20;
pub(crate) const ALERT: u8 = 21;
pub(crate) const HANDSHAKE: u8 = 22;
pub(crate) const APPLICATION_DATA: u8 = 23;

type Sm4Gcm = AesGcm<Sm4, U12>;
type HmacSm3 = hmac::Hmac<sm3::Sm3>;

const TAG_LEN: usize = 16;
const EXPLICIT_NONCE_LEN: usize = 8;
const BLOCK: usize = 16;
const MAC_LEN: usize = 32;

enum Protection {
    Gcm {
        cipher: Box<Sm4Gcm>,
        salt: [u8; 4],
    },
    Cbc {
        cipher: Box<Sm4>,
        mac_key: Zeroizing<Vec<u8>>,
    },
}

/// The keys and sequence number of one direction once ChangeCipherSpec has switched it on.
pub(crate) struct DirectionKeys {
    protection: Protection,
    seq: u64,
}

/// The two directions' key material, cut from the key block.
pub(crate) struct KeyBlock {
    pub(crate) client: DirectionKeys,
    pub(crate) server: DirectionKeys,
}

impl KeyBlock {
    /// Cuts `client_mac ‖ server_mac ‖ client_key ‖ server_key ‖ client_iv ‖ server_iv`.
    pub(crate) fn new(suite: CipherSuite, block: &[u8]) -> Result<Self, TlcpError> {
        let bulk = suite.bulk();
        let (m, k, i) = (bulk.mac_key_len(), bulk.key_len(), bulk.iv_len());
        let mut r = crate::codec::Reader::new(block, "key block");
        let (cm, sm) = (r.take(m)?, r.take(m)?);
        let (ck, sk) = (r.take(k)?, r.take(k)?);
        let (ci, si) = (r.take(i)?, r.take(i)?);
        Ok(Self {
            client: DirectionKeys::new(bulk, cm, ck, ci)?,
            server: DirectionKeys::new(bulk, sm, sk, si)?,
        })
    }

    pub(crate) fn len(suite: CipherSuite) -> usize {
        let bulk = suite.bulk();
        2 * (bulk.mac_key_len() + bulk.key_len() + bulk.iv_len())
    }
}

fn header(typ: u8, len: usize) -> [u8; HEADER_LEN] {
    let len = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    [typ, VERSION[0], VERSION[1], len[0], len[1]]
}

fn bad_key(_: impl Sized) -> TlcpError {
    TlcpError::Config("bad key length".into())
}

impl DirectionKeys {
    fn new(bulk: Bulk, mac_key: &[u8], key: &[u8], iv: &[u8]) -> Result<Self, TlcpError> {
        let protection = match bulk {
            Bulk::Gcm => Protection::Gcm {
                cipher: Box::new(Sm4Gcm::new_from_slice(key).map_err(bad_key)?),
                salt: iv.try_into().map_err(bad_key)?,
            },
            Bulk::Cbc => Protection::Cbc {
                cipher: Box::new(
                    <Sm4 as sm4::cipher::KeyInit>::new_from_slice(key).map_err(bad_key)?,
                ),
                mac_key: Zeroizing::new(mac_key.to_vec()),
            },
        };
        Ok(Self { protection, seq: 0 })
    }

    fn next_seq(&mut self) -> Result<[u8; 8], TlcpError> {
        let seq = self.seq;
        // A connection must end before its sequence number wraps.
        self.seq = seq
            .checked_add(1)
            .ok_or(TlcpError::Config("record sequence number exhausted".into()))?;
        Ok(seq.to_be_bytes())
    }

    /// Appends the protected record carrying `plaintext` (at most [`MAX_PLAINTEXT`]) to `out`.
    pub(crate) fn seal(
        &mut self,
        typ: u8,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TlcpError> {
        debug_assert!(plaintext.len() <= MAX_PLAINTEXT);
        let seq = self.next_seq()?;
        let len = u16::try_from(plaintext.len())
            .map_err(|_| TlcpError::RecordOverflow(plaintext.len()))?;
        let mac_header = mac_header(&seq, typ, len);
        match &self.protection {
            Protection::Gcm { cipher, salt } => {
                out.extend_from_slice(&header(typ, EXPLICIT_NONCE_LEN + plaintext.len() + TAG_LEN));
                out.extend_from_slice(&seq);
                let start = out.len();
                out.extend_from_slice(plaintext);
                let nonce = gcm_nonce(salt, &seq);
                let tag = cipher
                    .encrypt_inout_detached(&nonce, &mac_header, out[start..].as_mut().into())
                    .map_err(|_| TlcpError::Config("SM4-GCM encryption failed".into()))?;
                out.extend_from_slice(&tag);
            }
            Protection::Cbc { cipher, mac_key } => {
                let mac = hmac_sm3(mac_key, &mac_header, plaintext);
                let unpadded = plaintext.len() + MAC_LEN;
                let pad = BLOCK - 1 - unpadded % BLOCK;
                let body_len = BLOCK + unpadded + pad + 1;
                out.extend_from_slice(&header(typ, body_len));
                let mut iv = [0u8; BLOCK];
                getrandom::fill(&mut iv).map_err(|_| TlcpError::Rng)?;
                out.extend_from_slice(&iv);
                let start = out.len();
                out.extend_from_slice(plaintext);
                out.extend_from_slice(&mac);
                let pad_byte = u8::try_from(pad).unwrap_or(0);
                out.resize(out.len() + pad + 1, pad_byte);
                cbc_encrypt(cipher, &iv, &mut out[start..]);
            }
        }
        Ok(())
    }

    /// Checks and strips the protection of a record body in place; `body` then holds the
    /// plaintext.
    pub(crate) fn open(&mut self, typ: u8, body: &mut Vec<u8>) -> Result<(), TlcpError> {
        let seq = self.next_seq()?;
        match &self.protection {
            Protection::Gcm { cipher, salt } => {
                let pt_len = body
                    .len()
                    .checked_sub(EXPLICIT_NONCE_LEN + TAG_LEN)
                    .ok_or(TlcpError::BadRecordMac)?;
                if pt_len > MAX_PLAINTEXT {
                    return Err(TlcpError::RecordOverflow(pt_len));
                }
                let len = u16::try_from(pt_len).map_err(|_| TlcpError::RecordOverflow(pt_len))?;
                let aad = mac_header(&seq, typ, len);
                let (explicit, rest) = body.split_at_mut(EXPLICIT_NONCE_LEN);
                let explicit: [u8; 8] = (&*explicit)
                    .try_into()
                    .map_err(|_| TlcpError::BadRecordMac)?;
                let (ct, tag) = rest.split_at_mut(pt_len);
                let tag = Array::try_from(&*tag).map_err(|_| TlcpError::BadRecordMac)?;
                cipher
                    .decrypt_inout_detached(&gcm_nonce(salt, &explicit), &aad, ct.into(), &tag)
                    .map_err(|_| TlcpError::BadRecordMac)?;
                body.truncate(EXPLICIT_NONCE_LEN + pt_len);
                body.drain(..EXPLICIT_NONCE_LEN);
            }
            Protection::Cbc { cipher, mac_key } => {
                // IV + at least one block holding the MAC and one padding length byte.
                let ct_len = body.len().saturating_sub(BLOCK);
                if body.len() < BLOCK + MAC_LEN + BLOCK || !ct_len.is_multiple_of(BLOCK) {
                    return Err(TlcpError::BadRecordMac);
                }
                let (iv, ct) = body.split_at_mut(BLOCK);
                let iv: [u8; BLOCK] = (&*iv).try_into().map_err(|_| TlcpError::BadRecordMac)?;
                cbc_decrypt(cipher, &iv, ct);
                let pt_len = cbc_check(mac_key, &seq, typ, ct)?;
                if pt_len > MAX_PLAINTEXT {
                    return Err(TlcpError::RecordOverflow(pt_len));
                }
                body.truncate(BLOCK + pt_len);
                body.drain(..BLOCK);
            }
        }
        Ok(())
    }
}

fn mac_header(seq: &[u8; 8], typ: u8, len: u16) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[..8].copy_from_slice(seq);
    h[8] = typ;
    h[9..11].copy_from_slice(&VERSION);
    h[11..].copy_from_slice(&len.to_be_bytes());
    h
}

fn gcm_nonce(salt: &[u8; 4], explicit: &[u8; 8]) -> Array<u8, U12> {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(explicit);
    Array::from(n)
}

fn hmac_sm3(key: &[u8], header: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = <HmacSm3 as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSm3 as hmac::KeyInit>::new(&Default::default()));
    mac.update(header);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Checks the padding and MAC of a decrypted CBC fragment `ct` (plaintext ‖ MAC ‖ padding)
/// without branching on secret data until the final verdict; returns the plaintext length.
fn cbc_check(mac_key: &[u8], seq: &[u8; 8], typ: u8, ct: &[u8]) -> Result<usize, TlcpError> {
    let n = ct.len(); // ≥ 48, a multiple of 16
    let pad = usize::from(ct[n - 1]);
    // Padding fits when pad + 1 + MAC_LEN ≤ n.
    let fits = !((n as u64).ct_lt(&((pad + 1 + MAC_LEN) as u64)));
    let mut good = fits;
    // Check the last 256 bytes (or all there are) so the work does not depend on `pad`.
    let check = n.min(256);
    for i in 1..=check {
        let in_pad = !((pad as u64 + 1).ct_lt(&(i as u64)));
        let byte_ok = ct[n - i].ct_eq(&ct[n - 1]);
        good &= !in_pad | byte_ok;
    }
    let pad_len = if bool::from(fits) { pad + 1 } else { 0 };
    let pt_len = n - MAC_LEN - pad_len;
    let len = u16::try_from(pt_len).map_err(|_| TlcpError::BadRecordMac)?;
    let expected = hmac_sm3(mac_key, &mac_header(seq, typ, len), &ct[..pt_len]);
    good &= expected.ct_eq(&ct[pt_len..pt_len + MAC_LEN]);
    if bool::from(good) {
        Ok(pt_len)
    } else {
        Err(TlcpError::BadRecordMac)
    }
}

fn cbc_encrypt(cipher: &Sm4, iv: &[u8; BLOCK], data: &mut [u8]) {
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(BLOCK) {
        let mut block = Array::<u8, sm4::cipher::consts::U16>::default();
        for (b, (c, p)) in block.iter_mut().zip(chunk.iter().zip(prev.iter())) {
            *b = c ^ p;
        }
        cipher.encrypt_block(&mut block);
        chunk.copy_from_slice(&block);
        prev.copy_from_slice(&block);
    }
}

fn cbc_decrypt(cipher: &Sm4, iv: &[u8; BLOCK], data: &mut [u8]) {
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(BLOCK) {
        let mut block = Array::<u8, sm4::cipher::consts::U16>::default();
        block.copy_from_slice(chunk);
        let saved = block;
        cipher.decrypt_block(&mut block);
        for (c, (b, p)) in chunk.iter_mut().zip(block.iter().zip(prev.iter())) {
            *c = b ^ p;
        }
        prev.copy_from_slice(&saved);
    }
}

/// The header of the record at the start of `buf`, once 5 bytes are there: type, version,
/// fragment length. Refuses fragments longer than TLCP allows.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<(u8, u16, usize)>, TlcpError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let version = u16::from_be_bytes([h[1], h[2]]);
    let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
    if len > MAX_FRAGMENT {
        return Err(TlcpError::RecordOverflow(len));
    }
    Ok(Some((h[0], version, len)))
}

/// Appends an unprotected record.
pub(crate) fn plain_record(typ: u8, fragment: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&header(typ, fragment.len()));
    out.extend_from_slice(fragment);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pair(suite: CipherSuite) -> (DirectionKeys, DirectionKeys) {
        let block: Vec<u8> = (0..KeyBlock::len(suite)).map(|i| i as u8).collect();
        (
            KeyBlock::new(suite, &block).unwrap().client,
            KeyBlock::new(suite, &block).unwrap().client,
        )
    }

    #[test]
    fn round_trip_and_tamper_every_suite() {
        for suite in CipherSuite::ALL {
            let (mut tx, mut rx) = pair(suite);
            for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 1000, MAX_PLAINTEXT] {
                let pt: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let mut rec = Vec::new();
                tx.seal(APPLICATION_DATA, &pt, &mut rec).unwrap();
                let (typ, _, flen) = parse_header(&rec).unwrap().unwrap();
                assert_eq!(flen, rec.len() - HEADER_LEN);
                let mut body = rec[HEADER_LEN..].to_vec();
                rx.open(typ, &mut body).unwrap();
                assert_eq!(body, pt, "{suite} len {len}");
            }
            // Flip one bit anywhere after the explicit nonce/IV: refused.
            let mut rec = Vec::new();
            tx.seal(APPLICATION_DATA, b"hello", &mut rec).unwrap();
            for i in HEADER_LEN..rec.len() {
                let (_, mut rx2) = pair(suite);
                let (mut tx2, _) = pair(suite);
                let mut r2 = Vec::new();
                tx2.seal(APPLICATION_DATA, b"hello", &mut r2).unwrap();
                r2[i] ^= 0x01;
                let mut body = r2[HEADER_LEN..].to_vec();
                assert!(
                    matches!(
                        rx2.open(APPLICATION_DATA, &mut body),
                        Err(TlcpError::BadRecordMac)
                    ),
                    "{suite}: flipped byte {i} accepted"
                );
            }
            // Replayed/reordered (sequence number mismatch) and retyped records: refused.
            let (mut tx3, mut rx3) = pair(suite);
            let mut r3 = Vec::new();
            tx3.seal(APPLICATION_DATA, b"one", &mut r3).unwrap();
            let mut body = r3[HEADER_LEN..].to_vec();
            assert!(
                matches!(rx3.open(HANDSHAKE, &mut body), Err(TlcpError::BadRecordMac)),
                "{suite}: application data accepted as a handshake record"
            );
            let mut body = r3[HEADER_LEN..].to_vec();
            assert!(
                matches!(
                    rx3.open(APPLICATION_DATA, &mut body),
                    Err(TlcpError::BadRecordMac)
                ),
                "{suite}: seq 1 accepted seq 0"
            );
        }
    }

    #[test]
    fn short_and_misaligned_cbc_bodies_are_refused() {
        let (_, mut rx) = pair(CipherSuite::EccSm4CbcSm3);
        for len in [0usize, 16, 47, 63, 65] {
            let mut body = vec![0u8; len];
            assert!(matches!(
                rx.open(APPLICATION_DATA, &mut body),
                Err(TlcpError::BadRecordMac)
            ));
        }
        let (_, mut rx) = pair(CipherSuite::EccSm4GcmSm3);
        let mut body = vec![0u8; 23];
        assert!(matches!(
            rx.open(APPLICATION_DATA, &mut body),
            Err(TlcpError::BadRecordMac)
        ));
    }

    #[test]
    fn oversized_fragments_are_refused() {
        let h = [23, 1, 1, 0x48, 0x01];
        assert!(matches!(
            parse_header(&h),
            Err(TlcpError::RecordOverflow(_))
        ));
        assert!(parse_header(&h[..4]).unwrap().is_none());
    }
}
