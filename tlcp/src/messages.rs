//! Encoding and parsing of the handshake message bodies (GB/T 38636-2020 §6.4.5).

use sm2::PublicKey;

use crate::codec::{Reader, put_u16, put_vec8, put_vec16, put_vec24};
use crate::error::TlcpError;
use crate::kx::CURVE_SM2;

const EXT_ALPN: u16 = 0x0010;
/// `ECCurveType.named_curve`.
const NAMED_CURVE: u8 = 3;

/// `gmt_unix_time(4) ‖ random_bytes(28)`.
pub(crate) fn new_random() -> Result<[u8; 32], TlcpError> {
    let mut r = [0u8; 32];
    getrandom::fill(&mut r[4..]).map_err(|_| TlcpError::Rng)?;
    let now = u32::try_from(crate::config::now_unix()).unwrap_or(u32::MAX);
    r[..4].copy_from_slice(&now.to_be_bytes());
    Ok(r)
}

/// The parts of a ClientHello the server uses.
pub(crate) struct ClientHello {
    pub(crate) version: u16,
    pub(crate) random: [u8; 32],
    pub(crate) suites: Vec<u16>,
    pub(crate) alpn: Vec<Vec<u8>>,
}

impl ClientHello {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, TlcpError> {
        const WHAT: &str = "ClientHello";
        let mut r = Reader::new(body, WHAT);
        let version = r.u16()?;
        let random = r
            .take(32)?
            .try_into()
            .map_err(|_| TlcpError::Decode(WHAT))?;
        let session_id = r.vec8()?;
        if session_id.len() > 32 {
            return Err(TlcpError::Decode(WHAT));
        }
        let suites_raw = r.vec16()?;
        if suites_raw.is_empty() || suites_raw.len() % 2 != 0 {
            return Err(TlcpError::Decode(WHAT));
        }
        let suites = suites_raw
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        let compression = r.vec8()?;
        if !compression.contains(&0) {
            return Err(TlcpError::Decode("ClientHello (no null compression)"));
        }
        let mut alpn = Vec::new();
        if !r.is_empty() {
            let mut exts = Reader::new(r.vec16()?, WHAT);
            while !exts.is_empty() {
                let typ = exts.u16()?;
                let data = exts.vec16()?;
                if typ == EXT_ALPN {
                    alpn = parse_alpn(data)?;
                }
            }
        }
        r.finish()?;
        Ok(Self {
            version,
            random,
            suites,
            alpn,
        })
    }

    pub(crate) fn encode(
        random: &[u8; 32],
        suites: &[u16],
        alpn: &[Vec<u8>],
    ) -> Result<Vec<u8>, TlcpError> {
        let mut b = Vec::new();
        b.extend_from_slice(&crate::record::VERSION);
        b.extend_from_slice(random);
        put_vec8(&mut b, &[])?;
        let mut s = Vec::new();
        for id in suites {
            put_u16(&mut s, *id);
        }
        put_vec16(&mut b, &s)?;
        put_vec8(&mut b, &[0])?;
        if !alpn.is_empty() {
            put_vec16(&mut b, &alpn_extension(alpn)?)?;
        }
        Ok(b)
    }
}

/// The parts of a ServerHello the client uses.
pub(crate) struct ServerHello {
    pub(crate) version: u16,
    pub(crate) random: [u8; 32],
    pub(crate) suite: u16,
    pub(crate) alpn: Option<Vec<u8>>,
}

impl ServerHello {
    pub(crate) fn encode(
        random: &[u8; 32],
        suite: u16,
        alpn: Option<&[u8]>,
    ) -> Result<Vec<u8>, TlcpError> {
        let mut b = Vec::new();
        b.extend_from_slice(&crate::record::VERSION);
        b.extend_from_slice(random);
        // No session ID: sessions are not resumed.
        put_vec8(&mut b, &[])?;
        put_u16(&mut b, suite);
        b.push(0);
        if let Some(proto) = alpn {
            put_vec16(&mut b, &alpn_extension(&[proto.to_vec()])?)?;
        }
        Ok(b)
    }

    pub(crate) fn parse(body: &[u8]) -> Result<Self, TlcpError> {
        const WHAT: &str = "ServerHello";
        let mut r = Reader::new(body, WHAT);
        let version = r.u16()?;
        let random = r
            .take(32)?
            .try_into()
            .map_err(|_| TlcpError::Decode(WHAT))?;
        let session_id = r.vec8()?;
        if session_id.len() > 32 {
            return Err(TlcpError::Decode(WHAT));
        }
        let suite = r.u16()?;
        if r.u8()? != 0 {
            return Err(TlcpError::Decode("ServerHello (compression)"));
        }
        let mut alpn = None;
        if !r.is_empty() {
            let mut exts = Reader::new(r.vec16()?, WHAT);
            while !exts.is_empty() {
                let typ = exts.u16()?;
                let data = exts.vec16()?;
                if typ == EXT_ALPN {
                    let mut list = parse_alpn(data)?;
                    if list.len() != 1 {
                        return Err(TlcpError::Decode("ServerHello ALPN"));
                    }
                    alpn = list.pop();
                }
            }
        }
        r.finish()?;
        Ok(Self {
            version,
            random,
            suite,
            alpn,
        })
    }
}

fn alpn_extension(protocols: &[Vec<u8>]) -> Result<Vec<u8>, TlcpError> {
    let mut list = Vec::new();
    for p in protocols {
        put_vec8(&mut list, p)?;
    }
    let mut data = Vec::new();
    put_vec16(&mut data, &list)?;
    let mut ext = Vec::new();
    put_u16(&mut ext, EXT_ALPN);
    put_vec16(&mut ext, &data)?;
    Ok(ext)
}

fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, TlcpError> {
    let mut r = Reader::new(data, "ALPN extension");
    let mut list = Reader::new(r.vec16()?, "ALPN extension");
    r.finish()?;
    let mut out = Vec::new();
    while !list.is_empty() {
        let p = list.vec8()?;
        if p.is_empty() {
            return Err(TlcpError::Decode("ALPN extension"));
        }
        out.push(p.to_vec());
    }
    Ok(out)
}

/// `opaque ASN.1Cert<1..2^24-1>; ASN.1Cert certificate_list<0..2^24-1>`.
pub(crate) fn encode_certificates(certs: &[Vec<u8>]) -> Result<Vec<u8>, TlcpError> {
    let mut list = Vec::new();
    for c in certs {
        put_vec24(&mut list, c)?;
    }
    let mut b = Vec::new();
    put_vec24(&mut b, &list)?;
    Ok(b)
}

pub(crate) fn parse_certificates(body: &[u8]) -> Result<Vec<Vec<u8>>, TlcpError> {
    const WHAT: &str = "Certificate";
    let mut r = Reader::new(body, WHAT);
    let mut list = Reader::new(r.vec24()?, WHAT);
    r.finish()?;
    let mut certs = Vec::new();
    while !list.is_empty() {
        let c = list.vec24()?;
        if c.is_empty() {
            return Err(TlcpError::Decode(WHAT));
        }
        certs.push(c.to_vec());
    }
    Ok(certs)
}

/// ECDHE parameters: `named_curve(3) ‖ curveSM2(0x0029) ‖ point<1..2^8-1>`; used by both
/// ServerKeyExchange and ClientKeyExchange.
pub(crate) fn encode_ecdhe_params(point: &PublicKey) -> Result<Vec<u8>, TlcpError> {
    let mut b = vec![NAMED_CURVE];
    put_u16(&mut b, CURVE_SM2);
    put_vec8(&mut b, &crate::kx::encode_point(point))?;
    Ok(b)
}

/// Parses ECDHE parameters from the front of `r`, checking the curve and the point.
pub(crate) fn parse_ecdhe_params(r: &mut Reader<'_>) -> Result<PublicKey, TlcpError> {
    if r.u8()? != NAMED_CURVE || r.u16()? != CURVE_SM2 {
        return Err(TlcpError::KeyExchange(
            "ECDHE parameters do not name curveSM2",
        ));
    }
    PublicKey::from_sec1_bytes(r.vec8()?).map_err(|_| TlcpError::KeyExchange("bad ECDHE point"))
}

/// CertificateRequest: types rsa_sign(1) and ecdsa_sign(64) (what Tongsuo sends), then the
/// distinguished names of the acceptable CAs.
pub(crate) fn encode_certificate_request(ca_names: &[Vec<u8>]) -> Result<Vec<u8>, TlcpError> {
    let mut b = Vec::new();
    put_vec8(&mut b, &[1, 64])?;
    let mut names = Vec::new();
    for n in ca_names {
        put_vec16(&mut names, n)?;
    }
    put_vec16(&mut b, &names)?;
    Ok(b)
}

pub(crate) fn parse_certificate_request(body: &[u8]) -> Result<(), TlcpError> {
    let mut r = Reader::new(body, "CertificateRequest");
    let _types = r.vec8()?;
    let _names = r.vec16()?;
    r.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tongsuo_client_hello_parses() {
        // Captured from tongsuo_client.py (Tongsuo 8.3.2), cipher ECC-SM2-SM4-GCM-SM3.
        let raw = hex::decode(
            "0101b11963555328fceb8893b25a51095a848b7f5fb1cc3ab0db606cc5cac5d8e1df000004e05300ff0100",
        )
        .unwrap();
        let ch = ClientHello::parse(&raw).unwrap();
        assert_eq!(ch.version, 0x0101);
        assert_eq!(ch.suites, [0xE053, 0x00FF]);
        assert!(ch.alpn.is_empty());
    }

    #[test]
    fn hellos_round_trip_and_truncations_are_refused() {
        let random = [7u8; 32];
        let ch = ClientHello::encode(&random, &[0xE051, 0xE053], &[b"h2".to_vec()]).unwrap();
        let parsed = ClientHello::parse(&ch).unwrap();
        assert_eq!(parsed.alpn, [b"h2".to_vec()]);
        // 43 bytes: the same hello without extensions, which is valid.
        for cut in (0..ch.len()).filter(|&c| c != 43) {
            let r = ClientHello::parse(&ch[..cut]).map(|_| ());
            assert!(
                matches!(r, Err(TlcpError::Decode("ClientHello"))),
                "cut at {cut}: {r:?}"
            );
        }
        let sh = ServerHello::encode(&random, 0xE051, Some(b"h2")).unwrap();
        let parsed = ServerHello::parse(&sh).unwrap();
        assert_eq!(
            (parsed.suite, parsed.alpn.as_deref()),
            (0xE051, Some(&b"h2"[..]))
        );
        for cut in (0..sh.len()).filter(|&c| c != 38) {
            let r = ServerHello::parse(&sh[..cut]).map(|_| ());
            assert!(
                matches!(r, Err(TlcpError::Decode("ServerHello"))),
                "cut at {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn certificate_lists() {
        let body = encode_certificates(&[vec![1, 2], vec![3]]).unwrap();
        assert_eq!(parse_certificates(&body).unwrap(), [vec![1, 2], vec![3]]);
        // A list longer than the message, and an empty certificate in the list.
        for bad in [&body[..body.len() - 1], &[0, 0, 3, 0, 0, 0]] {
            let r = parse_certificates(bad);
            assert!(
                matches!(r, Err(TlcpError::Decode("Certificate"))),
                "{bad:?}: {r:?}"
            );
        }
    }
}
