//! SM2 certificates and TLS 1.3 sm2sig_sm3 signatures (`kms-gmtls`, the GM transport): chain
//! verification and the identity accessors of `x509`, the rustls verifiers of `verifier`, and
//! the CertificateVerify check of `sign`.
//!
//! Both targets read one framing ([`split_gm_input`], written by [`join_gm_input`]): the time to
//! verify at, as 8 big-endian bytes of seconds since the Unix epoch (so that the corpus does not
//! expire and a run does not depend on the clock), then pieces, each a big-endian `u16` length
//! and that many bytes (a length past the end takes what is left).

use std::time::Duration;

use kms_gmtls::sign::{self, SM2_SM3};
use kms_gmtls::verifier::{Sm2ClientVerifier, Sm2ServerVerifier, is_sm2_certificate};
use kms_gmtls::x509::{self, Purpose};
use rustls::client::danger::ServerCertVerifier;
use rustls::internal::msgs::codec::Codec;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, Error, PeerIncompatible, PeerMisbehaved,
    SignatureScheme,
};
use sm2::pkcs8::EncodePublicKey;

/// The server name `tls13_sm2_verify` checks server certificates for.
pub const SERVER_NAME: &str = "localhost";

/// Longest certificate error message accepted: subjects are cut at 200 characters, so even two
/// escaped names and an OID stay far below it.
const MAX_ERROR_BYTES: usize = 4096;

/// Splits an input of the SM2 targets into the time to verify at and at most `max` pieces.
#[must_use]
pub fn split_gm_input(data: &[u8], max: usize) -> (u64, Vec<&[u8]>) {
    let (head, mut rest) = data.split_at(data.len().min(8));
    let mut now = [0u8; 8];
    now[..head.len()].copy_from_slice(head);
    let mut pieces = Vec::new();
    while pieces.len() < max
        && let [hi, lo, body @ ..] = rest
    {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(body.len());
        let (piece, after) = body.split_at(len);
        pieces.push(piece);
        rest = after;
    }
    (u64::from_be_bytes(now), pieces)
}

/// Joins the time and the pieces into one input for [`sm2_cert_chain`] or
/// [`tls13_sm2_verify`].
#[must_use]
pub fn join_gm_input(now_unix: u64, pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = now_unix.to_be_bytes().to_vec();
    for piece in pieces {
        let Ok(len) = u16::try_from(piece.len()) else {
            panic!(
                "a piece of {} bytes does not fit its u16 length",
                piece.len()
            );
        };
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// Error messages name what the certificate holds: printable (no forged log lines) and bounded.
fn check_message(what: &str, msg: &str) {
    assert!(
        msg.len() <= MAX_ERROR_BYTES,
        "{what}: error message of {} bytes",
        msg.len()
    );
    assert!(
        !msg.chars().any(char::is_control),
        "{what}: control character in {msg:?}"
    );
}

/// SM2 certificate chains: the time, then the end entity, a trust anchor and an intermediate
/// (pieces 0, 1 and 2; missing pieces are left out), through `x509::verify_chain` for any
/// purpose, `x509::cert_identity` and `x509::sm2_public_key_of`.
pub fn sm2_cert_chain(data: &[u8]) {
    let (now, pieces) = split_gm_input(data, 3);
    let Some((&leaf, rest)) = pieces.split_first() else {
        return;
    };
    let anchors: Vec<&[u8]> = rest.iter().take(1).copied().collect();
    let intermediates: Vec<&[u8]> = rest.iter().skip(1).copied().collect();

    let identity = x509::cert_identity(leaf);
    let key = x509::sm2_public_key_of(leaf);
    for e in [identity.as_ref().err(), key.as_ref().err()]
        .into_iter()
        .flatten()
    {
        check_message("certificate", &e.to_string());
    }
    if let Ok(id) = &identity {
        assert_eq!(
            x509::cert_identity(leaf).ok().as_ref(),
            Some(id),
            "cert_identity is not deterministic"
        );
    }

    let chain = match x509::verify_chain(leaf, &intermediates, &anchors, now, Purpose::Any) {
        Ok(chain) => chain,
        Err(e) => return check_message("verify_chain", &e.to_string()),
    };
    // A verified chain: the accessors read the same leaf, and the chain is what was given.
    assert_eq!(identity.ok(), Some(chain.leaf.clone()), "identity differs");
    assert_eq!(key.ok(), Some(chain.leaf_public_key), "leaf key differs");
    assert!(!chain.leaf.is_ca, "a CA verified as the end entity");
    let now_signed = i64::try_from(now).unwrap_or(i64::MAX);
    assert!(
        chain.leaf.not_before_unix <= now_signed && now_signed <= chain.leaf.not_after_unix,
        "a leaf outside its validity verified at {now}"
    );
    assert!(chain.trust_anchor < anchors.len(), "anchor index");
    let mut used = chain.intermediates_used.clone();
    used.sort_unstable();
    used.dedup();
    assert_eq!(used.len(), chain.intermediates_used.len(), "repeated link");
    assert!(used.iter().all(|&i| i < intermediates.len()), "link index");
    // A chain that verifies for one TLS purpose verifies for any purpose, and the leaf's own
    // extendedKeyUsage (when present) lists it.
    for (purpose, listed) in [
        (
            Purpose::ServerAuth,
            chain.leaf.ext_key_usage.as_ref().map(|e| e.server_auth),
        ),
        (
            Purpose::ClientAuth,
            chain.leaf.ext_key_usage.as_ref().map(|e| e.client_auth),
        ),
    ] {
        if x509::verify_chain(leaf, &intermediates, &anchors, now, purpose).is_ok() {
            assert_ne!(listed, Some(false), "{purpose} verified without its EKU");
        }
    }
}

/// A CertificateVerify body as rustls reads it off the wire (scheme, `u16` length, signature):
/// `DigitallySignedStruct` has no public constructor.
fn digitally_signed(scheme: SignatureScheme, signature: &[u8]) -> Option<DigitallySignedStruct> {
    let len = u16::try_from(signature.len()).ok()?;
    let mut wire = u16::from(scheme).to_be_bytes().to_vec();
    wire.extend_from_slice(&len.to_be_bytes());
    wire.extend_from_slice(signature);
    match DigitallySignedStruct::read_bytes(&wire) {
        Ok(dss) => Some(dss),
        Err(e) => panic!("our own CertificateVerify encoding does not read: {e:?}"),
    }
}

/// The TLS 1.3 side of SM2 certificates: the time, then a peer certificate, a trust anchor, the
/// signed content and an sm2sig_sm3 signature (pieces 0 to 3) through the GM-only
/// `Sm2ClientVerifier` and `Sm2ServerVerifier` (no webpki fallback) and `sign::verify_tls13`.
pub fn tls13_sm2_verify(data: &[u8]) {
    let (now, pieces) = split_gm_input(data, 4);
    let piece = |i: usize| pieces.get(i).copied().unwrap_or_default();
    let (cert_der, anchor, message, signature) = (piece(0), piece(1), piece(2), piece(3));
    let cert = CertificateDer::from(cert_der);
    let anchors = vec![CertificateDer::from(anchor.to_vec())];
    let client = Sm2ClientVerifier::new(anchors.clone(), None);
    let server = Sm2ServerVerifier::new(anchors, None);
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now));
    let sm2 = is_sm2_certificate(cert_der);
    assert!(client.supported_verify_schemes().contains(&SM2_SM3));
    assert!(server.supported_verify_schemes().contains(&SM2_SM3));
    assert!(
        client.root_hint_subjects().len() <= 1,
        "one anchor, one hint"
    );

    // Certificates: the verifiers agree with `verify_chain` for their purpose, and refuse
    // anything that is not SM2 (GM only).
    let client_cert = client.verify_client_cert(&cert, &[], time);
    let Ok(name) = ServerName::try_from(SERVER_NAME) else {
        panic!("server name");
    };
    let server_cert = server.verify_server_cert(&cert, &[], &name, &[], time);
    for e in [client_cert.as_ref().err(), server_cert.as_ref().err()]
        .into_iter()
        .flatten()
    {
        check_message("verifier", &e.to_string());
    }
    let chain = |purpose| x509::verify_chain(cert_der, &[], &[anchor], now, purpose);
    assert_eq!(
        client_cert.is_ok(),
        sm2 && chain(Purpose::ClientAuth).is_ok(),
        "client verifier and verify_chain disagree"
    );
    let named = |leaf: &x509::CertIdentity| {
        leaf.dns_names
            .iter()
            .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(SERVER_NAME))
    };
    assert_eq!(
        server_cert.is_ok(),
        sm2 && chain(Purpose::ServerAuth).is_ok_and(|c| named(&c.leaf)),
        "server verifier and verify_chain disagree"
    );

    // CertificateVerify: both verifiers and `verify_tls13` with the certificate's key agree.
    let Some(dss) = digitally_signed(SM2_SM3, signature) else {
        return;
    };
    let by_client = client.verify_tls13_signature(message, &cert, &dss);
    let by_server = server.verify_tls13_signature(message, &cert, &dss);
    assert_eq!(
        by_client.is_ok(),
        by_server.is_ok(),
        "the verifiers disagree"
    );
    let spki = x509::sm2_public_key_of(cert_der)
        .ok()
        .and_then(|key| key.to_public_key_der().ok());
    let direct = spki
        .as_ref()
        .is_some_and(|spki| sign::verify_tls13(spki.as_bytes(), message, signature).is_ok());
    assert_eq!(
        by_client.is_ok(),
        direct,
        "verifier and verify_tls13 disagree"
    );
    if let Err(e) = &by_client {
        check_message("signature", &e.to_string());
    }
    // The piece as a bare SubjectPublicKeyInfo: whatever it is, no panic; a signature that
    // verifies binds the content.
    if sign::verify_tls13(cert_der, message, signature).is_ok() {
        let mut other = message.to_vec();
        other.push(0);
        assert_eq!(
            sign::verify_tls13(cert_der, &other, signature),
            Err(Error::InvalidCertificate(CertificateError::BadSignature))
        );
    }
    if by_client.is_ok() {
        assert!(
            sm2,
            "a signature verified with a certificate that is not SM2"
        );
        let mut other = message.to_vec();
        other.push(0);
        assert_eq!(
            client.verify_tls13_signature(&other, &cert, &dss).err(),
            Some(Error::InvalidCertificate(CertificateError::BadSignature))
        );
        // No TLS 1.2 for SM2, and no other scheme without a fallback verifier.
        let no_tls12 = Some(Error::PeerIncompatible(PeerIncompatible::Tls12NotOffered));
        assert_eq!(
            client.verify_tls12_signature(message, &cert, &dss).err(),
            no_tls12
        );
        assert_eq!(
            server.verify_tls12_signature(message, &cert, &dss).err(),
            no_tls12
        );
        if let Some(ecdsa) = digitally_signed(SignatureScheme::ECDSA_NISTP256_SHA256, signature) {
            let unadvertised = Some(Error::PeerMisbehaved(
                PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
            assert_eq!(
                client.verify_tls13_signature(message, &cert, &ecdsa).err(),
                unadvertised
            );
            assert_eq!(
                server.verify_tls13_signature(message, &cert, &ecdsa).err(),
                unadvertised
            );
        }
    }
}
