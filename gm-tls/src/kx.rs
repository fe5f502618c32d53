//! Key exchange on curveSM2 (RFC 8998 §3.1.2, group 0x0029): ephemeral ECDH on sm2p256v1 with
//! uncompressed points as key shares and the x-coordinate of the shared point as the secret,
//! exactly as TLS 1.3 does for secp256r1 (it is not the SM2 key-agreement protocol).

use elliptic_curve::Generate;
use elliptic_curve::ecdh::EphemeralSecret;
use elliptic_curve::sec1::ToSec1Point;
use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved};
use sm2::{PublicKey, Sm2};

/// curveSM2's code point (RFC 8998 §2).
pub const CURVE_SM2: NamedGroup = NamedGroup::Unknown(0x0029);

/// Length of an uncompressed point: 0x04 ‖ x ‖ y.
const SHARE_LEN: usize = 65;

#[derive(Debug)]
pub struct CurveSm2;

pub static CURVE_SM2_KX: CurveSm2 = CurveSm2;

impl SupportedKxGroup for CurveSm2 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let secret = EphemeralSecret::<Sm2>::try_generate_from_rng(&mut getrandom::SysRng)
            .map_err(|_| Error::FailedToGetRandomBytes)?;
        let share = secret.public_key().to_sec1_point(false).as_bytes().to_vec();
        Ok(Box::new(CurveSm2Exchange { secret, share }))
    }

    fn name(&self) -> NamedGroup {
        CURVE_SM2
    }
}

/// One handshake's ephemeral key (wiped on drop by `elliptic-curve`).
struct CurveSm2Exchange {
    secret: EphemeralSecret<Sm2>,
    share: Vec<u8>,
}

impl ActiveKeyExchange for CurveSm2Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        // Only uncompressed points (RFC 8446 §4.2.8.2); from_sec1_bytes rejects points off the
        // curve and the identity.
        if peer_pub_key.len() != SHARE_LEN || peer_pub_key.first() != Some(&0x04) {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        let peer = PublicKey::from_sec1_bytes(peer_pub_key)
            .map_err(|_| Error::from(PeerMisbehaved::InvalidKeyShare))?;
        let shared = self.secret.diffie_hellman(&peer);
        Ok(SharedSecret::from(&shared.raw_secret_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.share
    }

    fn group(&self) -> NamedGroup {
        CURVE_SM2
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn both_sides_agree_and_shares_are_uncompressed_points() {
        let a = CURVE_SM2_KX.start().unwrap();
        let b = CURVE_SM2_KX.start().unwrap();
        assert_eq!(a.pub_key().len(), SHARE_LEN);
        assert_eq!(a.pub_key()[0], 0x04);
        let b_pub = b.pub_key().to_vec();
        let a_pub = a.pub_key().to_vec();
        let s1 = a.complete(&b_pub).unwrap();
        let s2 = b.complete(&a_pub).unwrap();
        assert_eq!(s1.secret_bytes(), s2.secret_bytes());
        assert_eq!(s1.secret_bytes().len(), 32);
    }

    #[test]
    fn bad_shares_are_refused_as_invalid() {
        let share = CURVE_SM2_KX.start().unwrap().pub_key().to_vec();
        let mut off_curve = share.clone();
        off_curve[64] ^= 1;
        let mut compressed = vec![0x02];
        compressed.extend_from_slice(&share[1..33]);
        let identity = [0u8; 1];
        // A P-256 point (the generator) is not on sm2p256v1.
        let p256_g = hex::decode(
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
             4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        )
        .unwrap();
        for bad in [
            &off_curve[..],
            &compressed,
            &identity,
            &share[..64],
            &[],
            &p256_g,
        ] {
            let kx = CURVE_SM2_KX.start().unwrap();
            let Err(err) = kx.complete(bad) else {
                panic!("accepted {}", hex::encode(bad));
            };
            assert_eq!(
                err,
                Error::PeerMisbehaved(PeerMisbehaved::InvalidKeyShare),
                "{}",
                hex::encode(bad)
            );
        }
    }
}
