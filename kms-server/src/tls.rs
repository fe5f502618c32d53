//! The server's rustls configuration (API-1, issue 16): client certificates required and chained
//! to the configured client CAs, AEAD suites only, and the policy reaching the transport.
//!
//! - [`Transport::Standard`]: TLS 1.3 and 1.2 with AES-GCM/ChaCha20 (ring), and RFC 8998's
//!   TLS_SM4_GCM_SM3 with curveSM2 in front, preferred whenever the client offers them. A server
//!   may hold one SM2 certificate beside its standard one; a client that offers sm2sig_sm3 and
//!   the GM suite gets the SM2 one.
//! - [`Transport::GmOnly`]: TLS 1.3 with TLS_SM4_GCM_SM3, curveSM2 and sm2sig_sm3 only, SM2
//!   certificates only; a non-SM2 server certificate stops the start.
//!
//! Built by hand because tonic's `ServerTlsConfig` cannot restrict versions or suites.

use std::fmt;
use std::sync::Arc;

use kms_gmtls::provider::TLS_SM4_GCM_SM3_ID;
use kms_gmtls::sign::SM2_SM3;
use kms_gmtls::verifier::{Sm2ClientVerifier, is_sm2_certificate, split_sm2};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ProtocolVersion, RootCertStore, ServerConfig};

use crate::revocation::{Revocation, RevokingVerifier};

/// Why TLS could not be configured. Messages name the file role, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the {0} PEM holds no certificate")]
    NoCertificate(&'static str),
    #[error("the server key PEM holds no usable private key")]
    NoKey,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    Verifier(String),
    #[error("{0}")]
    Policy(String),
    #[error("{0}")]
    Crl(String),
}

/// What the API port speaks; follows the KMS policy (`standard` or `gm-only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Standard,
    GmOnly,
}

/// A server certificate chain and its key, as PEM text.
#[derive(Clone, Copy)]
pub struct CertPair<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

impl fmt::Debug for CertPair<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPair").finish_non_exhaustive()
    }
}

/// The crypto provider for the standard transport: ring's AEAD suites with the GM suite first.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(kms_gmtls::provider::standard_with_gm())
}

fn provider_for(transport: Transport) -> Arc<CryptoProvider> {
    match transport {
        Transport::Standard => provider(),
        Transport::GmOnly => Arc::new(kms_gmtls::provider::gm_only()),
    }
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        Err(TlsError::NoCertificate(what))
    } else {
        Ok(certs)
    }
}

/// Builds the standard server configuration from PEM text: the server chain, its key, and the
/// CA(s) that client certificates must chain to.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(
        Transport::Standard,
        &[CertPair { cert_pem, key_pem }],
        client_ca_pem,
    )
}

/// Builds the server configuration for `transport` from one or two certificate pairs (at most
/// one SM2 and one other) and the client CA bundle (SM2 and other CAs may be mixed).
pub fn server_config_with(
    transport: Transport,
    pairs: &[CertPair<'_>],
    client_ca_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_crl(transport, pairs, client_ca_pem, None).map(|(config, _)| config)
}

/// As [`server_config_with`], with client certificates checked against the CRLs in the file
/// `client_crl` (reloaded by [`Revocation::watch`]); the revocation state is returned for the
/// TLCP listener and the watcher.
pub fn server_config_with_crl(
    transport: Transport,
    pairs: &[CertPair<'_>],
    client_ca_pem: &str,
    client_crl: Option<&std::path::Path>,
) -> Result<(Arc<ServerConfig>, Option<Arc<Revocation>>), TlsError> {
    let provider = provider_for(transport);
    let mut resolver = ByPeer::default();
    for pair in pairs {
        let chain = certs(pair.cert_pem, "server certificate")?;
        let sm2 = chain.first().is_some_and(|c| is_sm2_certificate(c));
        if transport == Transport::GmOnly && !sm2 {
            return Err(TlsError::Policy(
                "policy gm-only: the server certificate is not SM2 (an SM2 key signed with \
                 SM2/SM3); configure an SM2 certificate (kms pki can issue one) or use policy \
                 standard"
                    .into(),
            ));
        }
        let key =
            PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(|_| TlsError::NoKey)?;
        let signing = provider.key_provider.load_private_key(key)?;
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        // The key must be the certificate's (SM2 and ring keys both expose their SPKI).
        certified.keys_match()?;
        let slot = if sm2 {
            &mut resolver.sm2
        } else {
            &mut resolver.standard
        };
        if slot.replace(certified).is_some() {
            return Err(TlsError::Policy(format!(
                "two {} server certificates configured; give one",
                if sm2 { "SM2" } else { "non-SM2" }
            )));
        }
    }
    if resolver.sm2.is_none() && resolver.standard.is_none() {
        return Err(TlsError::NoCertificate("server certificate"));
    }
    let (verifier, revocation) = match client_crl {
        None => (
            client_verifier(transport, client_ca_pem, &provider, Vec::new())?,
            None,
        ),
        Some(path) => {
            let revocation = revocation_for(transport, client_ca_pem, &provider, path)?;
            let verifier: Arc<dyn ClientCertVerifier> =
                Arc::new(RevokingVerifier::new(Arc::clone(&revocation)));
            (verifier, Some(revocation))
        }
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match transport {
        Transport::Standard => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Transport::GmOnly => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    // Server preference: the GM suite and curveSM2 whenever the client offers them.
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), revocation))
}

/// The CRL file at `path`, loaded now, with the chain verifier rebuilt for each version of it.
/// Also for a TLCP listener alone: its CAs are the SM2 ones among `client_ca_pem`.
pub fn revocation_for(
    transport: Transport,
    client_ca_pem: &str,
    provider: &Arc<CryptoProvider>,
    path: &std::path::Path,
) -> Result<Arc<Revocation>, TlsError> {
    let cas = certs(client_ca_pem, "client CA")?;
    let (ca_pem, provider) = (client_ca_pem.to_owned(), Arc::clone(provider));
    let make = Box::new(move |crls| {
        client_verifier(transport, &ca_pem, &provider, crls).map_err(|e| e.to_string())
    });
    Revocation::load(path, &cas, make).map_err(|e| TlsError::Crl(e.to_string()))
}

/// SM2 client chains are verified by kms-gmtls, others by webpki (standard only).
fn client_verifier(
    transport: Transport,
    client_ca_pem: &str,
    provider: &Arc<CryptoProvider>,
    crls: Vec<rustls::pki_types::CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let (sm2_anchors, other_anchors) = split_sm2(certs(client_ca_pem, "client CA")?);
    let fallback = match transport {
        Transport::GmOnly => None,
        Transport::Standard if other_anchors.is_empty() => None,
        Transport::Standard => {
            let mut roots = RootCertStore::empty();
            for ca in other_anchors {
                roots.add(ca)?;
            }
            let mut builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
            if !crls.is_empty() {
                // Our client CAs issue leaves directly; a CA without a CRL in the file is not
                // revocation-checked (the file's issuers are checked in `revocation`).
                builder = builder
                    .with_crls(crls)
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status();
            }
            let webpki = builder
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            Some(webpki)
        }
    };
    if sm2_anchors.is_empty() && fallback.is_none() {
        return Err(TlsError::Verifier(match transport {
            Transport::GmOnly => "policy gm-only: the client CA file holds no SM2 CA".into(),
            Transport::Standard => "no usable CA certificate".into(),
        }));
    }
    Ok(Arc::new(Sm2ClientVerifier::new(sm2_anchors, fallback)))
}

/// Picks the server certificate for a ClientHello: the SM2 one for a client that offers
/// TLS_SM4_GCM_SM3 and sm2sig_sm3, the standard one otherwise. A server with one certificate
/// always offers it, so a client that cannot use it fails on what it lacks (no suite in common,
/// an untrusted chain) rather than on a missing certificate.
#[derive(Debug, Default)]
struct ByPeer {
    sm2: Option<Arc<CertifiedKey>>,
    standard: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ByPeer {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let gm = hello.signature_schemes().contains(&SM2_SM3)
            && hello.cipher_suites().contains(&TLS_SM4_GCM_SM3_ID);
        if gm {
            self.sm2.clone().or_else(|| self.standard.clone())
        } else {
            self.standard.clone().or_else(|| self.sm2.clone())
        }
    }
}

/// The TLCP listener's configuration: the server's double certificate (signing and encryption),
/// the SM2 CAs among `client_ca_pem` as the anchors for clients' double certificates, every
/// suite (ECDHE before ECC, GCM before CBC), ALPN `h2`.
pub fn tlcp_config(
    sign_cert_pem: &str,
    sign_key_pem: &str,
    enc_cert_pem: &str,
    enc_key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<kms_tlcp::TlcpServerConfig>, TlsError> {
    let identity =
        kms_tlcp::DoubleCert::from_pem(sign_cert_pem, sign_key_pem, enc_cert_pem, enc_key_pem)
            .map_err(|e| TlsError::Policy(format!("TLCP certificates: {e}")))?;
    let (sm2_anchors, _) = split_sm2(certs(client_ca_pem, "client CA")?);
    if sm2_anchors.is_empty() {
        return Err(TlsError::Verifier(
            "TLCP needs an SM2 CA in the client CA file".into(),
        ));
    }
    let anchors = sm2_anchors.iter().map(|c| c.to_vec()).collect();
    let mut config = kms_tlcp::TlcpServerConfig::new(identity, anchors)
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// "TLSv1.3 TLS_SM4_GCM_SM3": the protocol and suite a connection negotiated, for the audit
/// record and the logs.
#[must_use]
pub fn describe(version: Option<ProtocolVersion>, suite: Option<CipherSuite>) -> String {
    let version = match version {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(v) => format!("{v:?}"),
        None => "unknown".to_owned(),
    };
    let suite = match suite {
        Some(s) if s == TLS_SM4_GCM_SM3_ID => "TLS_SM4_GCM_SM3".to_owned(),
        // rustls spells TLS 1.3 suites TLS13_*; the IANA names (what OpenSSL and Tongsuo print)
        // are TLS_*.
        Some(s) => s.as_str().map_or_else(
            || format!("{s:?}"),
            |name| match name.strip_prefix("TLS13_") {
                Some(rest) => format!("TLS_{rest}"),
                None => name.to_owned(),
            },
        ),
        None => "unknown".to_owned(),
    };
    format!("{version} {suite}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use kms_gmtls::x509::{LeafSpec, Sm2Ca, Usage};

    use super::*;
    use kms_devpki::DevCa;

    struct Pems {
        p256_ca: String,
        p256_cert: String,
        p256_key: zeroize::Zeroizing<String>,
        sm2_ca: String,
        sm2_cert: String,
        sm2_key: zeroize::Zeroizing<String>,
    }

    fn pems() -> Pems {
        let ca = DevCa::generate().unwrap();
        let server = ca.issue_server(&["localhost"]).unwrap();
        let sm2 = Sm2Ca::generate("sm2 ca", 3650).unwrap();
        let mut spec = LeafSpec::new("localhost", Usage::TlsServer, 30);
        spec.dns_names = vec!["localhost".into()];
        let sm2_server = sm2.issue(&spec).unwrap();
        Pems {
            p256_ca: ca.cert_pem(),
            p256_cert: server.cert_pem.clone(),
            p256_key: server.key_pem,
            sm2_ca: sm2.cert_pem().to_owned(),
            sm2_cert: sm2_server.cert_pem,
            sm2_key: sm2_server.key_pem,
        }
    }

    #[test]
    fn gm_only_refuses_a_non_sm2_server_certificate_and_says_why() {
        let p = pems();
        let pair = CertPair {
            cert_pem: &p.p256_cert,
            key_pem: &p.p256_key,
        };
        let err = server_config_with(Transport::GmOnly, &[pair], &p.sm2_ca).unwrap_err();
        assert!(matches!(err, TlsError::Policy(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("gm-only") && msg.contains("not SM2"), "{msg}");
    }

    #[test]
    fn gm_only_needs_an_sm2_client_ca() {
        let p = pems();
        let pair = CertPair {
            cert_pem: &p.sm2_cert,
            key_pem: &p.sm2_key,
        };
        let err = server_config_with(Transport::GmOnly, &[pair], &p.p256_ca).unwrap_err();
        assert!(err.to_string().contains("no SM2 CA"), "{err}");
        let config = server_config_with(Transport::GmOnly, &[pair], &p.sm2_ca).unwrap();
        let suites: Vec<CipherSuite> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(suites, vec![TLS_SM4_GCM_SM3_ID]);
        assert!(config.ignore_client_order);
    }

    #[test]
    fn standard_takes_one_certificate_of_each_kind_and_puts_gm_first() {
        let p = pems();
        let p256 = CertPair {
            cert_pem: &p.p256_cert,
            key_pem: &p.p256_key,
        };
        let sm2 = CertPair {
            cert_pem: &p.sm2_cert,
            key_pem: &p.sm2_key,
        };
        let bundle = format!("{}{}", p.p256_ca, p.sm2_ca);
        let config = server_config_with(Transport::Standard, &[p256, sm2], &bundle).unwrap();
        assert_eq!(
            config.crypto_provider().cipher_suites[0].suite(),
            TLS_SM4_GCM_SM3_ID
        );
        let err = server_config_with(Transport::Standard, &[sm2, sm2], &bundle).unwrap_err();
        assert!(err.to_string().contains("two SM2"), "{err}");
        // A key that is not the certificate's is refused.
        let mixed = CertPair {
            cert_pem: &p.p256_cert,
            key_pem: &p.sm2_key,
        };
        let err = server_config_with(Transport::Standard, &[mixed], &bundle).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::Rustls(rustls::Error::InconsistentKeys(
                    rustls::InconsistentKeys::KeyMismatch
                ))
            ),
            "{err}"
        );
    }

    #[test]
    fn describe_uses_iana_names() {
        assert_eq!(
            describe(
                Some(ProtocolVersion::TLSv1_3),
                Some(CipherSuite::TLS13_AES_256_GCM_SHA384)
            ),
            "TLSv1.3 TLS_AES_256_GCM_SHA384"
        );
    }

    #[test]
    fn describe_names_the_gm_suite() {
        assert_eq!(
            describe(Some(ProtocolVersion::TLSv1_3), Some(TLS_SM4_GCM_SM3_ID)),
            "TLSv1.3 TLS_SM4_GCM_SM3"
        );
        assert_eq!(
            describe(
                Some(ProtocolVersion::TLSv1_2),
                Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
            ),
            "TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        );
    }
}
