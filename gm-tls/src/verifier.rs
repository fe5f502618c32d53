//! rustls certificate verifiers for SM2 chains, beside webpki for everything else.
//!
//! A peer whose end-entity certificate carries an SM2 key is verified here: the chain with
//! [`crate::x509::verify_chain`] against the SM2 trust anchors, its CertificateVerify with
//! sm2sig_sm3 under the TLS 1.3 ID. Any other certificate goes to the webpki verifier given as
//! the fallback, or is refused when there is none (GM only).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::sign::{SM2_SM3, verify_tls13_with};
use crate::x509::{self, CertIdentity, Purpose};

/// Whether a DER certificate holds an SM2 key and is signed with SM2/SM3.
#[must_use]
pub fn is_sm2_certificate(der: &[u8]) -> bool {
    x509::sm2_public_key_of(der).is_ok()
}

/// Splits PEM/DER certificates into the SM2 ones and the rest.
#[must_use]
pub fn split_sm2(
    certs: Vec<CertificateDer<'static>>,
) -> (Vec<CertificateDer<'static>>, Vec<CertificateDer<'static>>) {
    certs.into_iter().partition(|c| is_sm2_certificate(c))
}

/// rustls' own variant where one fits (clients map those to the right alert), else the
/// certificate error itself, whose message says what is wrong.
fn to_rustls(e: x509::Error) -> Error {
    let mapped = if matches!(e, x509::Error::Expired { .. }) {
        CertificateError::Expired
    } else if matches!(e, x509::Error::NotYetValid { .. }) {
        CertificateError::NotValidYet
    } else if matches!(e, x509::Error::BadSignature { .. }) {
        CertificateError::BadSignature
    } else if matches!(e, x509::Error::UnknownIssuer { .. }) {
        CertificateError::UnknownIssuer
    } else {
        CertificateError::Other(OtherError(Arc::new(e)))
    };
    Error::InvalidCertificate(mapped)
}

/// The verified chain's end entity, or the reason it is refused.
fn verify(
    anchors: &[CertificateDer<'static>],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    purpose: Purpose,
) -> Result<CertIdentity, Error> {
    let anchors: Vec<&[u8]> = anchors.iter().map(|a| a.as_ref()).collect();
    let intermediates: Vec<&[u8]> = intermediates.iter().map(|c| c.as_ref()).collect();
    x509::verify_chain(end_entity, &intermediates, &anchors, now.as_secs(), purpose)
        .map(|chain| chain.leaf)
        .map_err(to_rustls)
}

/// The CertificateVerify check for sm2sig_sm3; `None` for any other scheme.
fn sm2_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Option<Result<HandshakeSignatureValid, Error>> {
    (dss.scheme == SM2_SM3).then(|| {
        let public = x509::sm2_public_key_of(cert).map_err(to_rustls)?;
        verify_tls13_with(public, message, dss.signature())?;
        Ok(HandshakeSignatureValid::assertion())
    })
}

/// The handshake-signature half both rustls verifier traits share, so that the SM2 server and
/// client verifiers hand non-SM2 signatures to their fallback through one path.
trait HandshakeSignatures: Send + Sync {
    fn tls12(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error>;
    fn tls13(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error>;
    fn schemes(&self) -> Vec<SignatureScheme>;
}

impl HandshakeSignatures for Arc<dyn ServerCertVerifier> {
    fn tls12(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.verify_tls12_signature(m, c, d)
    }
    fn tls13(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.verify_tls13_signature(m, c, d)
    }
    fn schemes(&self) -> Vec<SignatureScheme> {
        self.supported_verify_schemes()
    }
}

impl HandshakeSignatures for Arc<dyn ClientCertVerifier> {
    fn tls12(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.verify_tls12_signature(m, c, d)
    }
    fn tls13(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.verify_tls13_signature(m, c, d)
    }
    fn schemes(&self) -> Vec<SignatureScheme> {
        self.supported_verify_schemes()
    }
}

/// TLS 1.2 signatures are never SM2 (RFC 8998 is TLS 1.3 only): the fallback's, if any.
fn tls12_signature(
    fallback: Option<&dyn HandshakeSignatures>,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    match fallback {
        Some(f) if dss.scheme != SM2_SM3 => f.tls12(message, cert, dss),
        _ => Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        )),
    }
}

/// sm2sig_sm3 here, any other scheme through the fallback.
fn tls13_signature(
    fallback: Option<&dyn HandshakeSignatures>,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    if let Some(result) = sm2_signature(message, cert, dss) {
        return result;
    }
    match fallback {
        Some(f) => f.tls13(message, cert, dss),
        None => Err(Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        )),
    }
}

/// sm2sig_sm3 first, then what the fallback verifies.
fn verify_schemes(fallback: Option<&dyn HandshakeSignatures>) -> Vec<SignatureScheme> {
    let mut schemes = vec![SM2_SM3];
    if let Some(f) = fallback {
        schemes.extend(f.schemes());
    }
    schemes
}

fn no_fallback() -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        x509::Error::Malformed("only SM2 certificates are accepted here (GM only)".into()),
    ))))
}

/// Does the SM2 end entity name the server the client asked for (a SAN DNS name or IP)?
fn check_name(leaf: &CertIdentity, name: &ServerName<'_>) -> Result<(), Error> {
    let ok = match name {
        ServerName::DnsName(dns) => {
            let want = dns.as_ref().trim_end_matches('.');
            leaf.dns_names
                .iter()
                .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(want))
        }
        ServerName::IpAddress(ip) => {
            let want = std::net::IpAddr::from(*ip);
            leaf.ip_addresses.contains(&want)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidCertificate(CertificateError::NotValidForName))
    }
}

/// Verifies servers: SM2 chains here, others through `fallback`.
#[derive(Debug)]
pub struct Sm2ServerVerifier {
    anchors: Vec<CertificateDer<'static>>,
    fallback: Option<Arc<dyn ServerCertVerifier>>,
}

impl Sm2ServerVerifier {
    #[must_use]
    pub fn new(
        sm2_anchors: Vec<CertificateDer<'static>>,
        fallback: Option<Arc<dyn ServerCertVerifier>>,
    ) -> Self {
        Self {
            anchors: sm2_anchors,
            fallback,
        }
    }
}

impl Sm2ServerVerifier {
    fn fallback_signatures(&self) -> Option<&dyn HandshakeSignatures> {
        self.fallback
            .as_ref()
            .map(|f| f as &dyn HandshakeSignatures)
    }
}

impl ServerCertVerifier for Sm2ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if is_sm2_certificate(end_entity) {
            let leaf = verify(
                &self.anchors,
                end_entity,
                intermediates,
                now,
                Purpose::ServerAuth,
            )?;
            check_name(&leaf, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        match &self.fallback {
            Some(f) => {
                f.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(no_fallback()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_signature(self.fallback_signatures(), message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls13_signature(self.fallback_signatures(), message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_schemes(self.fallback_signatures())
    }
}

/// Verifies clients (a certificate is required): SM2 chains here, others through `fallback`.
#[derive(Debug)]
pub struct Sm2ClientVerifier {
    anchors: Vec<CertificateDer<'static>>,
    fallback: Option<Arc<dyn ClientCertVerifier>>,
    hints: Vec<DistinguishedName>,
}

impl Sm2ClientVerifier {
    #[must_use]
    pub fn new(
        sm2_anchors: Vec<CertificateDer<'static>>,
        fallback: Option<Arc<dyn ClientCertVerifier>>,
    ) -> Self {
        // The CertificateRequest names every acceptable CA, SM2 ones included.
        let mut hints: Vec<DistinguishedName> = sm2_anchors
            .iter()
            .filter_map(|a| X509Certificate::from_der(a).ok())
            .map(|(_, c)| DistinguishedName::from(c.subject().as_raw().to_vec()))
            .collect();
        if let Some(f) = &fallback {
            hints.extend(f.root_hint_subjects().iter().cloned());
        }
        Self {
            anchors: sm2_anchors,
            fallback,
            hints,
        }
    }
}

impl Sm2ClientVerifier {
    fn fallback_signatures(&self) -> Option<&dyn HandshakeSignatures> {
        self.fallback
            .as_ref()
            .map(|f| f as &dyn HandshakeSignatures)
    }
}

impl ClientCertVerifier for Sm2ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if is_sm2_certificate(end_entity) {
            verify(
                &self.anchors,
                end_entity,
                intermediates,
                now,
                Purpose::ClientAuth,
            )?;
            return Ok(ClientCertVerified::assertion());
        }
        match &self.fallback {
            Some(f) => f.verify_client_cert(end_entity, intermediates, now),
            None => Err(no_fallback()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_signature(self.fallback_signatures(), message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls13_signature(self.fallback_signatures(), message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_schemes(self.fallback_signatures())
    }
}
