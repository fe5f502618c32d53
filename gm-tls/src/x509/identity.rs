//! What a certificate says about its subject: names, key and permitted uses.
//!
//! The server derives a client's principal from the SAN URI or, failing that, the subject CN of
//! a *verified* leaf; these accessors only read, they do not verify. Call [`super::verify_chain`]
//! first (its [`super::VerifiedChain`] carries the same [`CertIdentity`]).

use std::net::IpAddr;

use x509_parser::extensions::{ExtendedKeyUsage, GeneralName};

use super::Error;
use super::parse::Cert;

/// The keyUsage bits of RFC 5280 §4.2.1.3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyUsages {
    pub digital_signature: bool,
    pub non_repudiation: bool,
    pub key_encipherment: bool,
    pub data_encipherment: bool,
    pub key_agreement: bool,
    pub key_cert_sign: bool,
    pub crl_sign: bool,
    pub encipher_only: bool,
    pub decipher_only: bool,
}

impl KeyUsages {
    /// From x509-parser's flags, where bit `n` is the keyUsage bit `n` of RFC 5280.
    pub(super) fn from_bits(flags: u16) -> Self {
        let bit = |n: u16| flags & (1 << n) != 0;
        Self {
            digital_signature: bit(0),
            non_repudiation: bit(1),
            key_encipherment: bit(2),
            data_encipherment: bit(3),
            key_agreement: bit(4),
            key_cert_sign: bit(5),
            crl_sign: bit(6),
            encipher_only: bit(7),
            decipher_only: bit(8),
        }
    }
}

/// The extendedKeyUsage purposes of RFC 5280 §4.2.1.12 that TLS cares about; every other purpose
/// is listed in `other` as a dotted OID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtendedKeyUsages {
    /// `id-kp-serverAuth`.
    pub server_auth: bool,
    /// `id-kp-clientAuth`.
    pub client_auth: bool,
    /// `anyExtendedKeyUsage`.
    pub any: bool,
    /// Every other purpose, dotted.
    pub other: Vec<String>,
}

impl ExtendedKeyUsages {
    pub(super) fn from_parsed(eku: &ExtendedKeyUsage<'_>) -> Self {
        let mut other: Vec<String> = eku.other.iter().map(|o| o.to_id_string()).collect();
        for (set, dotted) in [
            (eku.code_signing, "1.3.6.1.5.5.7.3.3"),
            (eku.email_protection, "1.3.6.1.5.5.7.3.4"),
            (eku.time_stamping, "1.3.6.1.5.5.7.3.8"),
            (eku.ocsp_signing, "1.3.6.1.5.5.7.3.9"),
        ] {
            if set {
                other.push(dotted.to_owned());
            }
        }
        Self {
            server_auth: eku.server_auth,
            client_auth: eku.client_auth,
            any: eku.any,
            other,
        }
    }
}

/// A certificate's subject and permitted uses, as read from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject distinguished name, RFC 4514 style (for display, not for matching).
    pub subject: String,
    /// The subject's commonName; `None` when the subject has none.
    pub common_name: Option<String>,
    /// subjectAltName dNSName entries, in certificate order.
    pub dns_names: Vec<String>,
    /// subjectAltName uniformResourceIdentifier entries, in certificate order.
    pub uris: Vec<String>,
    /// subjectAltName iPAddress entries, in certificate order.
    pub ip_addresses: Vec<IpAddr>,
    /// keyUsage; `None` when the extension is absent (any use allowed by RFC 5280).
    pub key_usage: Option<KeyUsages>,
    /// extendedKeyUsage; `None` when the extension is absent.
    pub ext_key_usage: Option<ExtendedKeyUsages>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// The serial number, lower-case hex of its DER contents.
    pub serial_hex: String,
    /// notBefore, seconds since the Unix epoch.
    pub not_before_unix: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// Reads the subject, SANs and usages of one DER certificate (parsed as strictly as
/// [`super::verify_chain`] does, SM2/SM3 only). It does **not** verify anything.
///
/// # Errors
///
/// [`Error::Malformed`] for bad DER, a non-string or repeated commonName, or an iPAddress SAN
/// that is neither 4 nor 16 bytes; the algorithm errors of [`super::verify_chain`].
pub fn cert_identity(cert_der: &[u8]) -> Result<CertIdentity, Error> {
    identity_of(&Cert::parse(cert_der)?)
}

/// The SM2 public key of a DER certificate (for TLS CertificateVerify with the leaf's key).
///
/// # Errors
///
/// [`Error::Malformed`] for bad DER; [`Error::WrongSignatureAlgorithm`],
/// [`Error::WrongKeyAlgorithm`] or [`Error::WrongCurve`] for anything that is not SM2;
/// [`Error::BadPublicKey`] when the point is not on the curve.
pub fn sm2_public_key_of(cert_der: &[u8]) -> Result<sm2::PublicKey, Error> {
    Cert::parse(cert_der)?.sm2_public_key()
}

pub(super) fn identity_of(cert: &Cert<'_>) -> Result<CertIdentity, Error> {
    let x509 = &cert.x509;
    let mut common_names = x509.subject().iter_common_name();
    let common_name = match common_names.next() {
        None => None,
        Some(attr) => Some(attr.as_str().map(str::to_owned).map_err(|_| {
            Error::Malformed(format!("commonName of {} is not a string", cert.subject))
        })?),
    };
    if common_names.next().is_some() {
        // Identity comes from the CN when there is no SAN URI: two would be ambiguous.
        return Err(Error::Malformed(format!(
            "{} has more than one commonName",
            cert.subject
        )));
    }

    let mut dns_names = Vec::new();
    let mut uris = Vec::new();
    let mut ip_addresses = Vec::new();
    let san = x509
        .subject_alternative_name()
        .map_err(|e| Error::Malformed(format!("subjectAltName of {}: {e}", cert.subject)))?;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        if let GeneralName::DNSName(dns) = name {
            dns_names.push((*dns).to_owned());
        } else if let GeneralName::URI(uri) = name {
            uris.push((*uri).to_owned());
        } else if let GeneralName::IPAddress(bytes) = name {
            ip_addresses.push(ip_from_bytes(bytes).ok_or_else(|| {
                Error::Malformed(format!(
                    "iPAddress SAN of {} has {} bytes",
                    cert.subject,
                    bytes.len()
                ))
            })?);
        }
    }

    let validity = x509.validity();
    Ok(CertIdentity {
        subject: cert.subject.clone(),
        common_name,
        dns_names,
        uris,
        ip_addresses,
        key_usage: cert.key_usage,
        ext_key_usage: cert.ext_key_usage.clone(),
        is_ca: cert.basic_constraints.is_some_and(|bc| bc.ca),
        serial_hex: x509
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        not_before_unix: validity.not_before.timestamp(),
        not_after_unix: validity.not_after.timestamp(),
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}
