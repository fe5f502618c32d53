//! SM2 certificate issuance and chain verification through the public API: what verifies, and
//! each way a chain must fail with the error that names the problem.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use kms_gmtls::x509::{
    Error, ExtendedKeyUsages, KeyUsages, LeafSpec, Purpose, Sm2Ca, Usage, cert_identity,
    sm2_public_key_of, verify_chain,
};
use sm2::pkcs8::DecodePrivateKey as _;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn server_spec() -> LeafSpec {
    LeafSpec {
        common_name: "kms.example".into(),
        dns_names: vec!["kms.example".into(), "localhost".into()],
        ip_addresses: vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
        uris: vec![],
        usage: Usage::TlsServer,
        valid_days: 30,
    }
}

fn client_spec() -> LeafSpec {
    LeafSpec {
        common_name: "app".into(),
        dns_names: vec![],
        ip_addresses: vec![],
        uris: vec!["kms://principal/app".into()],
        usage: Usage::TlsClient,
        valid_days: 30,
    }
}

#[test]
fn server_and_client_leaves_verify_and_carry_what_was_asked() {
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let server = ca.issue(&server_spec()).unwrap();
    let client = ca.issue(&client_spec()).unwrap();

    let chain = verify_chain(
        &server.cert_der,
        &[],
        &[ca.cert_der()],
        now(),
        Purpose::ServerAuth,
    )
    .unwrap();
    assert_eq!(chain.trust_anchor, 0);
    assert!(chain.intermediates_used.is_empty());
    let leaf = &chain.leaf;
    assert_eq!(leaf.subject, "CN=kms.example");
    assert_eq!(leaf.common_name.as_deref(), Some("kms.example"));
    assert_eq!(leaf.dns_names, ["kms.example", "localhost"]);
    assert_eq!(
        leaf.ip_addresses,
        [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        ]
    );
    assert!(leaf.uris.is_empty());
    assert!(!leaf.is_ca);
    assert_eq!(
        leaf.key_usage,
        Some(KeyUsages {
            digital_signature: true,
            ..KeyUsages::default()
        })
    );
    assert_eq!(
        leaf.ext_key_usage,
        Some(ExtendedKeyUsages {
            server_auth: true,
            ..ExtendedKeyUsages::default()
        })
    );
    // Random positive 16-byte serial: 0x40..=0x7f leads, so no 0x00 pad and no shrinking.
    assert_eq!(leaf.serial_hex.len(), 32);
    assert!(matches!(&leaf.serial_hex[..1], "4" | "5" | "6" | "7"));
    assert!(leaf.not_after_unix - leaf.not_before_unix >= 30 * 86_400);

    // The returned key is the certificate's key, and the leaf key is exposed for TLS.
    let secret = sm2::SecretKey::from_pkcs8_pem(&server.key_pem).unwrap();
    assert_eq!(secret.public_key(), chain.leaf_public_key);
    assert_eq!(
        sm2_public_key_of(&server.cert_der).unwrap(),
        chain.leaf_public_key
    );
    assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(server.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));

    let chain = verify_chain(
        &client.cert_der,
        &[],
        &[ca.cert_der()],
        now(),
        Purpose::ClientAuth,
    )
    .unwrap();
    assert_eq!(chain.leaf.uris, ["kms://principal/app"]);
    assert_eq!(chain.leaf.common_name.as_deref(), Some("app"));
    assert!(chain.leaf.dns_names.is_empty());
    assert_eq!(
        chain
            .leaf
            .ext_key_usage
            .as_ref()
            .map(|e| (e.server_auth, e.client_auth)),
        Some((false, true))
    );
    assert_eq!(cert_identity(&client.cert_der).unwrap(), chain.leaf);
}

#[test]
fn certificates_are_v3_sm2_with_sm3_without_parameters_and_mark_critical_extensions() {
    use x509_parser::prelude::*;
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let leaf = ca.issue(&server_spec()).unwrap();
    for der in [ca.cert_der(), leaf.cert_der.as_slice()] {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        assert_eq!(cert.version(), X509Version::V3);
        assert_eq!(
            cert.signature_algorithm.algorithm.to_id_string(),
            "1.2.156.10197.1.501"
        );
        assert!(cert.signature_algorithm.parameters.is_none());
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            "1.2.840.10045.2.1"
        );
        let critical = |oid: &str| {
            cert.extensions()
                .iter()
                .find(|e| e.oid.to_id_string() == oid)
                .map(|e| e.critical)
        };
        assert_eq!(critical("2.5.29.19"), Some(true), "basicConstraints");
        assert_eq!(critical("2.5.29.15"), Some(true), "keyUsage");
        assert_eq!(critical("2.5.29.14"), Some(false), "subjectKeyIdentifier");
    }
    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
    let (_, leaf_cert) = X509Certificate::from_der(&leaf.cert_der).unwrap();
    assert!(ca_cert.is_ca());
    let ku = ca_cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
    // The leaf's AKI is the CA's SKI; its issuer is the CA's subject, byte for byte.
    let ski = ca_cert
        .extensions()
        .iter()
        .find_map(|e| {
            if let ParsedExtension::SubjectKeyIdentifier(k) = e.parsed_extension() {
                Some(k.0)
            } else {
                None
            }
        })
        .unwrap();
    let aki = leaf_cert
        .extensions()
        .iter()
        .find_map(|e| {
            if let ParsedExtension::AuthorityKeyIdentifier(a) = e.parsed_extension() {
                a.key_identifier.as_ref().map(|k| k.0)
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(aki, ski);
    assert_eq!(leaf_cert.issuer().as_raw(), ca_cert.subject().as_raw());
}

#[test]
fn tlcp_usages_set_key_usage_and_purpose() {
    let ca = Sm2Ca::generate("TLCP CA", 365).unwrap();
    let encipher = KeyUsages {
        key_encipherment: true,
        data_encipherment: true,
        key_agreement: true,
        ..KeyUsages::default()
    };
    let sign = KeyUsages {
        digital_signature: true,
        ..KeyUsages::default()
    };
    for (usage, ku, server, client) in [
        (Usage::TlcpServerSign, sign, true, false),
        (Usage::TlcpServerEnc, encipher, true, false),
        (Usage::TlcpClientSign, sign, false, true),
        (Usage::TlcpClientEnc, encipher, false, true),
        (Usage::TlsClient, sign, false, true),
    ] {
        let cert = ca.issue(&LeafSpec::new("tlcp", usage, 10)).unwrap();
        let id = cert_identity(&cert.cert_der).unwrap();
        assert_eq!(id.key_usage, Some(ku), "{usage:?}");
        let eku = id.ext_key_usage.unwrap();
        assert_eq!(
            (eku.server_auth, eku.client_auth),
            (server, client),
            "{usage:?}"
        );
    }
}

#[test]
fn purpose_must_match_the_leaf_extended_key_usage() {
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let server = ca.issue(&server_spec()).unwrap();
    let anchors = [ca.cert_der()];
    let err =
        verify_chain(&server.cert_der, &[], &anchors, now(), Purpose::ClientAuth).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::WrongPurpose {
                purpose: Purpose::ClientAuth,
                ..
            }
        ),
        "{err}"
    );
    verify_chain(&server.cert_der, &[], &anchors, now(), Purpose::Any).unwrap();
}

#[test]
fn intermediate_ca_chains_and_its_path_length_is_enforced() {
    let root = Sm2Ca::generate("Root CA", 365).unwrap();
    let issued = root
        .issue(&LeafSpec::new("Issuing CA", Usage::Ca, 200))
        .unwrap();
    let issuing = Sm2Ca::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
    let leaf = issuing.issue(&client_spec()).unwrap();

    let chain = verify_chain(
        &leaf.cert_der,
        &[&issued.cert_der],
        &[root.cert_der()],
        now(),
        Purpose::ClientAuth,
    )
    .unwrap();
    assert_eq!(chain.intermediates_used, [0]);

    // Without the intermediate the leaf's issuer is unknown.
    let err = verify_chain(
        &leaf.cert_der,
        &[],
        &[root.cert_der()],
        now(),
        Purpose::ClientAuth,
    )
    .unwrap_err();
    let Error::UnknownIssuer { subject, issuer } = err else {
        panic!("expected UnknownIssuer, got {err}");
    };
    assert_eq!(subject, "CN=app");
    assert_eq!(issuer, "CN=Issuing CA");

    // Usage::Ca has pathLenConstraint 0: a CA under it cannot issue a valid chain.
    let sub = issuing
        .issue(&LeafSpec::new("Sub CA", Usage::Ca, 100))
        .unwrap();
    let sub_ca = Sm2Ca::from_pem(&sub.cert_pem, &sub.key_pem).unwrap();
    let deep = sub_ca.issue(&client_spec()).unwrap();
    let err = verify_chain(
        &deep.cert_der,
        &[&sub.cert_der, &issued.cert_der],
        &[root.cert_der()],
        now(),
        Purpose::ClientAuth,
    )
    .unwrap_err();
    let Error::PathLenExceeded {
        subject,
        limit,
        below,
    } = err
    else {
        panic!("expected PathLenExceeded, got {err}");
    };
    assert_eq!(subject, "CN=Issuing CA");
    assert_eq!((limit, below), (0, 1));
}

/// Flips one bit at `index`.
fn flipped(der: &[u8], index: usize) -> Vec<u8> {
    let mut out = der.to_vec();
    out[index] ^= 0x01;
    out
}

#[test]
fn a_changed_tbs_byte_or_signature_byte_is_a_bad_signature() {
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let leaf = ca
        .issue(&LeafSpec::new("tamper-me", Usage::TlsServer, 30))
        .unwrap();
    let anchors = [ca.cert_der()];
    verify_chain(&leaf.cert_der, &[], &anchors, now(), Purpose::ServerAuth).unwrap();

    // Inside the subject CN ("tamper-me" -> "uamper-me"): still well-formed, no longer signed.
    let at = leaf
        .cert_der
        .windows(9)
        .position(|w| w == b"tamper-me")
        .unwrap();
    let tbs_changed = flipped(&leaf.cert_der, at);
    let err = verify_chain(&tbs_changed, &[], &anchors, now(), Purpose::ServerAuth).unwrap_err();
    assert!(
        matches!(&err, Error::BadSignature { subject } if subject == "CN=uamper-me"),
        "{err}"
    );

    // The last byte is the low byte of s.
    let sig_changed = flipped(&leaf.cert_der, leaf.cert_der.len() - 1);
    let err = verify_chain(&sig_changed, &[], &anchors, now(), Purpose::ServerAuth).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
}

#[test]
fn every_single_bit_flip_of_a_leaf_is_refused_without_panicking() {
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let leaf = ca.issue(&client_spec()).unwrap();
    let anchors = [ca.cert_der()];
    for i in 0..leaf.cert_der.len() {
        let bad = flipped(&leaf.cert_der, i);
        assert!(
            verify_chain(&bad, &[], &anchors, now(), Purpose::ClientAuth).is_err(),
            "bit flip at byte {i} verified"
        );
    }
}

#[test]
fn a_leaf_from_another_ca_has_an_unknown_issuer() {
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let other = Sm2Ca::generate("Other CA", 365).unwrap();
    let leaf = other.issue(&server_spec()).unwrap();
    let err = verify_chain(
        &leaf.cert_der,
        &[],
        &[ca.cert_der()],
        now(),
        Purpose::ServerAuth,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownIssuer { issuer, .. } if issuer == "CN=Other CA"),
        "{err}"
    );

    // Same name, different key: the key identifiers tell them apart.
    let twin = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let leaf = twin.issue(&server_spec()).unwrap();
    let err = verify_chain(
        &leaf.cert_der,
        &[],
        &[ca.cert_der()],
        now(),
        Purpose::ServerAuth,
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnknownIssuer { .. }), "{err}");
}

#[test]
fn validity_is_checked_against_the_given_time() {
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let leaf = ca.issue(&server_spec()).unwrap();
    let id = cert_identity(&leaf.cert_der).unwrap();
    let not_before = u64::try_from(id.not_before_unix).unwrap();
    let not_after = u64::try_from(id.not_after_unix).unwrap();
    let anchors = [ca.cert_der()];
    let at = |t| verify_chain(&leaf.cert_der, &[], &anchors, t, Purpose::ServerAuth);

    assert!(at(not_before).is_ok());
    assert!(at(not_after).is_ok());
    let err = at(not_after + 1).unwrap_err();
    assert!(
        matches!(&err, Error::Expired { now_unix, .. } if *now_unix == not_after + 1),
        "{err}"
    );
    let err = at(not_before - 1).unwrap_err();
    assert!(matches!(err, Error::NotYetValid { .. }), "{err}");
}

#[test]
fn a_ca_certificate_is_not_an_end_entity() {
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let err = verify_chain(ca.cert_der(), &[], &[ca.cert_der()], now(), Purpose::Any).unwrap_err();
    assert!(matches!(err, Error::CaAsEndEntity { .. }), "{err}");
}

#[test]
fn p256_certificates_are_refused_naming_the_algorithm() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["p256.example".into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let p256 = params.self_signed(&key).unwrap();
    let der = p256.der().to_vec();

    let err = verify_chain(&der, &[], &[&der], now(), Purpose::Any).unwrap_err();
    let Error::WrongSignatureAlgorithm { found, .. } = &err else {
        panic!("expected WrongSignatureAlgorithm, got {err}");
    };
    assert_eq!(found, "1.2.840.10045.4.3.2");
    assert!(err.to_string().contains("1.2.840.10045.4.3.2"));

    // As a trust anchor it is refused as well, not skipped.
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let leaf = ca.issue(&server_spec()).unwrap();
    let err = verify_chain(
        &leaf.cert_der,
        &[],
        &[&der, ca.cert_der()],
        now(),
        Purpose::ServerAuth,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::WrongSignatureAlgorithm { .. }),
        "{err}"
    );
    assert!(matches!(
        sm2_public_key_of(&der),
        Err(Error::WrongSignatureAlgorithm { .. })
    ));
}

#[test]
fn truncated_and_garbage_der_is_malformed_not_a_panic() {
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let leaf = ca.issue(&server_spec()).unwrap();
    let anchors = [ca.cert_der()];
    for len in 0..leaf.cert_der.len() {
        let err =
            verify_chain(&leaf.cert_der[..len], &[], &anchors, now(), Purpose::Any).unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "length {len}: {err}");
    }
    // Truncated intermediates and anchors are refused the same way.
    for len in [0, 1, 10, ca.cert_der().len() - 1] {
        let cut = &ca.cert_der()[..len];
        let err = verify_chain(&leaf.cert_der, &[cut], &anchors, now(), Purpose::Any).unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
        let err = verify_chain(&leaf.cert_der, &[], &[cut], now(), Purpose::Any).unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
    }
    let mut trailing = leaf.cert_der;
    trailing.push(0);
    for garbage in [
        trailing.as_slice(),
        b"\x30\x80\x00\x00".as_slice(),
        b"\x30\x84\xff\xff\xff\xff".as_slice(),
        b"-----BEGIN CERTIFICATE-----".as_slice(),
        [0xff; 64].as_slice(),
    ] {
        let err = verify_chain(garbage, &[], &anchors, now(), Purpose::Any).unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
        let err = cert_identity(garbage).unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
        let err = sm2_public_key_of(garbage).unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
    }
}

#[test]
fn ca_loads_from_pem_and_refuses_a_key_that_does_not_match() {
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let reloaded = Sm2Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(reloaded.cert_der(), ca.cert_der());
    let leaf = reloaded.issue(&server_spec()).unwrap();
    verify_chain(
        &leaf.cert_der,
        &[],
        &[ca.cert_der()],
        now(),
        Purpose::ServerAuth,
    )
    .unwrap();

    let other = Sm2Ca::generate("Other CA", 365).unwrap();
    let err = Sm2Ca::from_pem(ca.cert_pem(), &other.key_pem()).unwrap_err();
    assert!(matches!(err, Error::BadPrivateKey(_)), "{err}");
    let err = Sm2Ca::from_pem(ca.cert_pem(), "not a key").unwrap_err();
    assert!(matches!(err, Error::BadPrivateKey(_)), "{err}");
    let err = Sm2Ca::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(matches!(err, Error::NotCa { .. }), "{err}");
}

#[test]
fn bad_requests_are_refused_before_anything_is_signed() {
    let ca = Sm2Ca::generate("KMS Test CA", 30).unwrap();
    let invalid = |spec: LeafSpec| {
        let err = ca.issue(&spec).unwrap_err();
        assert!(matches!(err, Error::InvalidSpec(_)), "{err}");
    };
    invalid(LeafSpec::new("outlives the CA", Usage::TlsServer, 31));
    invalid(LeafSpec::new("zero days", Usage::TlsServer, 0));
    invalid(LeafSpec::new("", Usage::TlsServer, 1));
    invalid(LeafSpec::new("x".repeat(65), Usage::TlsServer, 1));
    let mut spec = LeafSpec::new("bad dns", Usage::TlsServer, 1);
    spec.dns_names.push("bad name.example".into());
    invalid(spec);
    let mut spec = LeafSpec::new("bad uri", Usage::TlsClient, 1);
    spec.uris.push("no-scheme".into());
    invalid(spec);
    assert!(matches!(
        Sm2Ca::generate("root", 0),
        Err(Error::InvalidSpec(_))
    ));
}

#[test]
fn debug_output_never_contains_private_keys() {
    let ca = Sm2Ca::generate("KMS Test CA", 365).unwrap();
    let leaf = ca.issue(&server_spec()).unwrap();
    let ca_key = ca.key_pem();
    let shown = [format!("{ca:?}"), format!("{leaf:?}"), format!("{leaf:#?}")];
    for text in &shown {
        assert!(text.contains("redacted"), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        for key in [ca_key.as_str(), leaf.key_pem.as_str()] {
            // Every base64 line of the PEM body, so no part of the key leaks.
            for line in key.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!text.contains(line), "{text}");
            }
        }
    }
    assert!(shown[0].contains("KMS Test CA"));
    assert!(shown[1].contains("BEGIN CERTIFICATE"));
}
