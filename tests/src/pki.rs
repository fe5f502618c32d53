//! A test PKI made with rcgen: one CA, the server's certificate, and a client certificate per
//! caller the tests need — including the ones the server must refuse.
//!
//! Client certificates name their principal the way the server reads it: the SAN URI when there
//! is one, else the CN ([`Identity::subject`] is that string). The auditor's certificate has a CN
//! only, so the CN fallback is exercised by every auditor call.

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its private key, both PEM, and the principal the server should see.
#[derive(Clone)]
pub struct Identity {
    /// The subject the server derives (SAN URI, else CN); `None` for a certificate naming nothing.
    pub subject: Option<String>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The subject, for identities that have one.
    #[must_use]
    pub fn subject(&self) -> &str {
        self.subject
            .as_deref()
            .expect("this identity has a subject")
    }
}

/// The serial number of a PEM certificate, as a CRL entry names it.
fn serial_of(cert_pem: &str) -> rcgen::SerialNumber {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    rcgen::SerialNumber::from_slice(cert.raw_serial())
}

/// A certificate authority that signs leaves.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA (ECDSA P-256) with the given common name.
    #[must_use]
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A CRL (PEM) of this CA, numbered `number`, revoking `revoked` (issue 18 item 6).
    #[must_use]
    pub fn crl(&self, number: u64, revoked: &[&Identity]) -> String {
        let revoked_certs = revoked
            .iter()
            .map(|id| rcgen::RevokedCertParams {
                serial_number: serial_of(&id.cert_pem),
                revocation_time: rcgen::date_time_ymd(2025, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2035, 1, 1),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .pem()
        .unwrap()
    }

    fn sign(&self, mut params: CertificateParams, subject: Option<String>) -> Identity {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            subject,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    #[must_use]
    pub fn server(&self) -> Identity {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, None)
    }

    /// A client certificate whose principal is the SAN URI `uri` (its CN is `cn`, which the
    /// server must ignore in favour of the URI).
    #[must_use]
    pub fn client_uri(&self, uri: &str, cn: &str) -> Identity {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri).unwrap())];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, Some(uri.to_owned()))
    }

    /// A client certificate for the SAN URI `uri` with `adjust` applied to its parameters before
    /// signing (validity, extended key usages, extensions): the odd certificates the bad-input
    /// catalogue presents (expired, not yet valid, server-only, unknown critical extension).
    #[must_use]
    pub fn client_uri_with(
        &self,
        uri: &str,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Identity {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri).unwrap())];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, uri);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        adjust(&mut params);
        self.sign(params, Some(uri.to_owned()))
    }

    /// A client certificate with a CN and no SAN URI: its principal is the CN.
    #[must_use]
    pub fn client_cn(&self, cn: &str) -> Identity {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, Some(cn.to_owned()))
    }

    /// A client certificate that names nobody: an empty subject and no SAN URI (only a DNS SAN,
    /// which the server does not read as a principal).
    #[must_use]
    pub fn client_without_subject(&self) -> Identity {
        let mut params = CertificateParams::new(vec!["nobody.invalid".to_owned()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, None)
    }
}

/// Subjects of the principals the tests register.
pub mod subjects {
    pub const ADMIN: &str = "spiffe://kms.test/admin";
    pub const APP: &str = "spiffe://kms.test/app-payments";
    pub const OTHER_APP: &str = "spiffe://kms.test/app-ledger";
    /// CN only: the server falls back to the CN.
    pub const AUDITOR: &str = "auditor.kms.test";
    /// Issued by the CA, never registered.
    pub const STRANGER: &str = "spiffe://kms.test/stranger";
    /// Unseal share holders named at init besides the admin (registered as custodians).
    pub const CUSTODIAN: &str = "spiffe://kms.test/custodian";
    pub const CUSTODIAN_2: &str = "spiffe://kms.test/custodian-2";
    /// The namespaces of the two apps.
    pub const APP_NS: &str = "payments";
    pub const OTHER_APP_NS: &str = "ledger";
}

/// Everything the tests need, made once per test.
pub struct Pki {
    pub ca: Ca,
    pub server: Identity,
    pub admin: Identity,
    /// An app in namespace [`subjects::APP_NS`].
    pub app: Identity,
    /// An app in namespace [`subjects::OTHER_APP_NS`].
    pub other_app: Identity,
    pub auditor: Identity,
    /// Issued by the CA, never registered.
    pub stranger: Identity,
    /// A share holder (custodian) named at init.
    pub custodian: Identity,
    /// Issued by the CA, naming nobody.
    pub anonymous: Identity,
    /// Issued by another CA, with the admin's very subject.
    pub foreign: Identity,
    /// The other CA (to show a client that trusts only it cannot reach the server either).
    pub other_ca: Ca,
    /// The same callers with SM2 certificates, for RFC 8998 and TLCP.
    pub gm: crate::gm_pki::GmPki,
}

impl Pki {
    #[must_use]
    pub fn new() -> Self {
        use subjects::{ADMIN, APP, AUDITOR, CUSTODIAN, OTHER_APP, STRANGER};
        let ca = Ca::new("KMS Test CA");
        let other_ca = Ca::new("Some Other CA");
        Self {
            server: ca.server(),
            admin: ca.client_uri(ADMIN, "admin"),
            app: ca.client_uri(APP, "app-payments"),
            other_app: ca.client_uri(OTHER_APP, "app-ledger"),
            auditor: ca.client_cn(AUDITOR),
            stranger: ca.client_uri(STRANGER, "stranger"),
            custodian: ca.client_uri(CUSTODIAN, "custodian"),
            anonymous: ca.client_without_subject(),
            foreign: other_ca.client_uri(ADMIN, "admin"),
            ca,
            other_ca,
            gm: crate::gm_pki::GmPki::new(),
        }
    }
}

impl Pki {
    /// One of the callers by name: admin, app, other_app, auditor, stranger, custodian.
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

    /// Who the server accepts: the P-256 CA and the SM2 CA, in one PEM bundle.
    #[must_use]
    pub fn clients_ca_pem(&self) -> String {
        format!("{}{}", self.ca.cert_pem(), self.gm.ca_pem())
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
