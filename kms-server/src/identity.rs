//! Who is calling: the subject of the verified client certificate (its SAN URI, else its CN).

use std::net::SocketAddr;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What tonic hands every request about its connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The principal's subject; `None` if the certificate names nothing usable.
    pub subject: Option<String>,
    /// The negotiated protocol and suite ("TLSv1.3 TLS_SM4_GCM_SM3"), for the audit record.
    pub transport: Option<String>,
    /// The connection's gate refusals: the first is recorded, the rest counted (`gate`).
    pub denials: std::sync::Arc<crate::gate::Denials>,
    /// The client certificate as CRLs name it, so that a certificate revoked while its
    /// connection is open is refused from the next request on (`gate`).
    pub cert_key: Option<crate::revocation::CertKey>,
}

/// The subject of a DER certificate: the first SAN URI, else the first CN.
#[must_use]
pub fn subject_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                return Some((*uri).to_owned());
            }
        }
    }
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}
