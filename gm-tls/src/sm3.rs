//! SM3 for rustls: the transcript hash, HMAC-SM3, and the TLS 1.3 key schedule's HKDF over it
//! (RFC 8998 §3.1: TLS_SM4_GCM_SM3 uses SM3 wherever TLS 1.3 uses the suite's hash).

use hmac::{KeyInit, Mac};
use rustls::crypto::hash::{self, HashAlgorithm};
use rustls::crypto::hmac as rhmac;
use rustls::crypto::tls13::HkdfUsingHmac;
use sm3::{Digest, Sm3};

/// SM3's output length in bytes.
pub const SM3_LEN: usize = 32;

/// SM3 has no TLS 1.2 `HashAlgorithm` code point; rustls only compares this value (a session is
/// resumed only under a suite with the same hash), so any value no other hash uses will do.
const SM3_HASH_ALGORITHM: HashAlgorithm = HashAlgorithm::Unknown(0xE3);

/// The transcript hash of the GM suites.
pub struct Sm3Hash;

pub static SM3: Sm3Hash = Sm3Hash;

impl hash::Hash for Sm3Hash {
    fn start(&self) -> Box<dyn hash::Context> {
        Box::new(Sm3Context(Sm3::new()))
    }

    fn hash(&self, data: &[u8]) -> hash::Output {
        hash::Output::new(&Sm3::digest(data))
    }

    fn output_len(&self) -> usize {
        SM3_LEN
    }

    fn algorithm(&self) -> HashAlgorithm {
        SM3_HASH_ALGORITHM
    }
}

struct Sm3Context(Sm3);

impl hash::Context for Sm3Context {
    fn fork_finish(&self) -> hash::Output {
        hash::Output::new(&self.0.clone().finalize())
    }

    fn fork(&self) -> Box<dyn hash::Context> {
        Box::new(Self(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> hash::Output {
        hash::Output::new(&self.0.finalize())
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

/// HMAC-SM3 (RFC 2104 over SM3), the PRF of the GM suites' HKDF.
pub struct HmacSm3;

pub static HMAC_SM3: HmacSm3 = HmacSm3;

/// HKDF-SM3 (RFC 5869 over HMAC-SM3), the TLS 1.3 key schedule of the GM suites.
pub static HKDF_SM3: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SM3);

type HmacSm3Impl = hmac::Hmac<Sm3>;

impl rhmac::Hmac for HmacSm3 {
    fn with_key(&self, key: &[u8]) -> Box<dyn rhmac::Key> {
        // HMAC takes keys of any length (longer ones are hashed first): this cannot fail.
        let mac = <HmacSm3Impl as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        Box::new(HmacSm3Key(mac))
    }

    fn hash_output_len(&self) -> usize {
        SM3_LEN
    }
}

/// A keyed HMAC-SM3 state; each tag is computed on a copy, so the key is set up once.
struct HmacSm3Key(HmacSm3Impl);

impl rhmac::Key for HmacSm3Key {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> rhmac::Tag {
        let mut mac = self.0.clone();
        mac.update(first);
        for part in middle {
            mac.update(part);
        }
        mac.update(last);
        rhmac::Tag::new(&mac.finalize().into_bytes())
    }

    fn tag_len(&self) -> usize {
        SM3_LEN
    }
}

#[cfg(test)]
mod tests {
    use rustls::crypto::hash::Hash;
    use rustls::crypto::hmac::Hmac;
    use rustls::crypto::tls13::{Hkdf, OkmBlock};

    use super::*;

    /// GB/T 32905-2016 Appendix A.1: SM3("abc").
    #[test]
    fn sm3_known_answer() {
        assert_eq!(
            hex::encode(SM3.hash(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        let mut ctx = SM3.start();
        ctx.update(b"a");
        let fork = ctx.fork();
        ctx.update(b"bc");
        assert_eq!(ctx.fork_finish().as_ref(), SM3.hash(b"abc").as_ref());
        assert_eq!(fork.finish().as_ref(), SM3.hash(b"a").as_ref());
    }

    /// HMAC-SM3 against a value computed with OpenSSL 3
    /// (`printf 'what do ya want for nothing?' | openssl dgst -sm3 -hmac Jefe`).
    #[test]
    fn hmac_sm3_known_answer() {
        let tag = HMAC_SM3
            .with_key(b"Jefe")
            .sign(&[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(tag),
            "2e87f1d16862e6d964b50a5200bf2b10b764faa9680a296a2405f24bec39f882"
        );
    }

    /// RFC 8446 §7.1 HKDF-Expand-Label, built by hand as rustls builds it.
    fn expand_label(
        expander: &dyn rustls::crypto::tls13::HkdfExpander,
        label: &[u8],
        context: &[u8],
        out: &mut [u8],
    ) {
        let len = u16::try_from(out.len()).unwrap().to_be_bytes();
        let label_len = [u8::try_from(6 + label.len()).unwrap()];
        let context_len = [u8::try_from(context.len()).unwrap()];
        expander
            .expand_slice(
                &[&len, &label_len, b"tls13 ", label, &context_len, context],
                out,
            )
            .unwrap();
    }

    /// The TLS 1.3 key schedule over SM3 against OpenSSL 3's HKDF (`openssl kdf -kdfopt
    /// digest:SM3 ... HKDF`): the early secret with no PSK, its "derived" secret, and the
    /// "key"/"iv" labels of a traffic secret of 0x11 bytes.
    #[test]
    fn hkdf_sm3_key_schedule_known_answers() {
        let zeros = [0u8; SM3_LEN];
        let early = HMAC_SM3.with_key(&zeros).sign(&[&zeros]);
        assert_eq!(
            hex::encode(&early),
            "a4f50a29c327e9acc4ddd4dbe32b75a6a1d77e4bbe823e3d71fdcc1a5fa52757"
        );
        // The expander rustls uses for the early secret agrees with the extracted PRK.
        let from_zero = HKDF_SM3.extract_from_zero_ikm(None);
        let early_expander = HKDF_SM3.expander_for_okm(&OkmBlock::new(early.as_ref()));
        let empty_hash = SM3.hash(b"");
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        expand_label(&*from_zero, b"derived", empty_hash.as_ref(), &mut a);
        expand_label(&*early_expander, b"derived", empty_hash.as_ref(), &mut b);
        assert_eq!(a, b);
        assert_eq!(
            hex::encode(a),
            "8bf1d43b3cb61da421895be55c07b3c1f49d7af9f9c728240cee1fc8039252f4"
        );

        let traffic = HKDF_SM3.expander_for_okm(&OkmBlock::new(&[0x11; 32]));
        let mut key = [0u8; 16];
        expand_label(&*traffic, b"key", b"", &mut key);
        assert_eq!(hex::encode(key), "a8e815dbe39de596821379eb0c31b6df");
        let mut iv = [0u8; 12];
        expand_label(&*traffic, b"iv", b"", &mut iv);
        assert_eq!(hex::encode(iv), "ab8886b7844e2ab447b118b5");
    }
}
