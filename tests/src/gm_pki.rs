//! The SM2 half of the test PKI (issue 16), made with kms-gmtls: an SM2 CA, the server's SM2
//! certificate, the TLCP server pair, and an SM2 client certificate for each caller of
//! [`crate::pki::Pki`] — same subjects, so a principal is the same over every transport.

use std::net::{IpAddr, Ipv4Addr};

use kms_gmtls::x509::{LeafSpec, Sm2Ca, Usage};

use crate::pki::Identity;
use crate::pki::subjects::{ADMIN, APP, AUDITOR, CUSTODIAN, OTHER_APP, STRANGER};

/// Leaves live 30 days, inside their CA's ten years (a leaf may not outlive its CA).
const DAYS: u32 = 30;
const CA_DAYS: u32 = 3650;

/// SM2 certificates for the same callers as [`crate::pki::Pki`].
pub struct GmPki {
    pub ca: Sm2Ca,
    /// RFC 8998 server certificate for `localhost` and 127.0.0.1.
    pub server: Identity,
    /// TLCP server signing and encryption certificates.
    pub tlcp_sign: Identity,
    pub tlcp_enc: Identity,
    pub admin: Identity,
    pub app: Identity,
    pub other_app: Identity,
    /// CN only, like the P-256 auditor: the server falls back to the CN.
    pub auditor: Identity,
    pub stranger: Identity,
    pub custodian: Identity,
    /// TLCP encryption certificates of the five callers, by name (see [`GmPki::identity`]).
    pub enc: std::collections::HashMap<&'static str, Identity>,
    /// Another SM2 CA's certificate with the admin's very subject.
    pub foreign: Identity,
    pub other_ca: Sm2Ca,
}

fn issue(ca: &Sm2Ca, spec: &LeafSpec, subject: Option<&str>) -> Identity {
    let issued = ca.issue(spec).unwrap();
    Identity {
        subject: subject.map(str::to_owned),
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem.to_string(),
    }
}

fn server(ca: &Sm2Ca, usage: Usage) -> Identity {
    let mut spec = LeafSpec::new("localhost", usage, DAYS);
    spec.dns_names = vec!["localhost".into()];
    spec.ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    issue(ca, &spec, None)
}

fn client_uri(ca: &Sm2Ca, uri: &str, cn: &str, usage: Usage) -> Identity {
    let mut spec = LeafSpec::new(cn, usage, DAYS);
    spec.uris = vec![uri.to_owned()];
    issue(ca, &spec, Some(uri))
}

impl GmPki {
    #[must_use]
    pub fn new() -> Self {
        let ca = Sm2Ca::generate("KMS Test SM2 CA", CA_DAYS).unwrap();
        let other_ca = Sm2Ca::generate("Some Other SM2 CA", CA_DAYS).unwrap();
        Self {
            server: server(&ca, Usage::TlsServer),
            tlcp_sign: server(&ca, Usage::TlcpServerSign),
            tlcp_enc: server(&ca, Usage::TlcpServerEnc),
            admin: client_uri(&ca, ADMIN, "admin", Usage::TlsClient),
            app: client_uri(&ca, APP, "app-payments", Usage::TlsClient),
            other_app: client_uri(&ca, OTHER_APP, "app-ledger", Usage::TlsClient),
            auditor: issue(
                &ca,
                &LeafSpec::new(AUDITOR, Usage::TlsClient, DAYS),
                Some(AUDITOR),
            ),
            stranger: client_uri(&ca, STRANGER, "stranger", Usage::TlsClient),
            custodian: client_uri(&ca, CUSTODIAN, "custodian", Usage::TlsClient),
            enc: [
                ("admin", Some(ADMIN), "admin"),
                ("app", Some(APP), "app-payments"),
                ("other_app", Some(OTHER_APP), "app-ledger"),
                ("auditor", None, AUDITOR),
                ("stranger", Some(STRANGER), "stranger"),
                ("custodian", Some(CUSTODIAN), "custodian"),
            ]
            .into_iter()
            .map(|(who, uri, cn)| {
                let id = match uri {
                    Some(uri) => client_uri(&ca, uri, cn, Usage::TlcpClientEnc),
                    None => issue(
                        &ca,
                        &LeafSpec::new(cn, Usage::TlcpClientEnc, DAYS),
                        Some(cn),
                    ),
                };
                (who, id)
            })
            .collect(),
            foreign: client_uri(&other_ca, ADMIN, "admin", Usage::TlsClient),
            ca,
            other_ca,
        }
    }

    /// One of the five callers by name: admin, app, other_app, auditor, stranger.
    #[must_use]
    pub fn identity(&self, who: &str) -> &Identity {
        match who {
            "admin" => &self.admin,
            "app" => &self.app,
            "other_app" => &self.other_app,
            "auditor" => &self.auditor,
            "stranger" => &self.stranger,
            "custodian" => &self.custodian,
            other => panic!("no caller {other}"),
        }
    }

    #[must_use]
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }
}

impl Default for GmPki {
    fn default() -> Self {
        Self::new()
    }
}
