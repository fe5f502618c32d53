//! Full mutually authenticated TLS 1.3 handshakes and 1 KiB records, RFC 8998 beside the
//! standard suites, both ends in this process over memory (no network): what each costs in CPU.
//!
//! - gm: TLS_SM4_GCM_SM3, curveSM2, SM2 certificates (kms-gmtls);
//! - standard: TLS_AES_256_GCM_SHA384, X25519, ECDSA P-256 certificates (ring).
//!
//! `cargo bench -p kms-gmtls --bench handshake`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kms_gmtls::provider::{gm_only, standard};
use kms_gmtls::verifier::{Sm2ClientVerifier, Sm2ServerVerifier};
use kms_gmtls::x509::{LeafSpec, Sm2Ca, Usage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

struct Configs {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn gm() -> Configs {
    let ca = Sm2Ca::generate("bench sm2 ca", 3650).unwrap();
    let mut spec = LeafSpec::new("localhost", Usage::TlsServer, 30);
    spec.dns_names = vec!["localhost".into()];
    let server = ca.issue(&spec).unwrap();
    let mut spec = LeafSpec::new("client", Usage::TlsClient, 30);
    spec.uris = vec!["kms://client".into()];
    let client = ca.issue(&spec).unwrap();
    let anchor = der(ca.cert_pem());
    let server_config = ServerConfig::builder_with_provider(Arc::new(gm_only()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(Sm2ClientVerifier::new(vec![anchor.clone()], None)))
        .with_single_cert(vec![der(&server.cert_pem)], key(&server.key_pem))
        .unwrap();
    let client_config = ClientConfig::builder_with_provider(Arc::new(gm_only()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Sm2ServerVerifier::new(vec![anchor], None)))
        .with_client_auth_cert(vec![der(&client.cert_pem)], key(&client.key_pem))
        .unwrap();
    Configs {
        client: Arc::new(client_config),
        server: Arc::new(server_config),
    }
}

fn standard_configs() -> Configs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let c = CertificateParams::new(names)
            .unwrap()
            .signed_by(&k, &issuer)
            .unwrap();
        (
            c.der().clone(),
            PrivateKeyDer::try_from(k.serialize_der()).unwrap(),
        )
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["client".into()]);
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let roots = Arc::new(roots);
    let provider = Arc::new(standard());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()
            .unwrap();
    let server_config = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert], server_key)
        .unwrap();
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client_cert], client_key)
        .unwrap();
    Configs {
        client: Arc::new(client_config),
        server: Arc::new(server_config),
    }
}

/// Moves every pending TLS byte from `from` to `to`; returns how many moved.
fn pump(from: &mut Connection, to: &mut Connection) -> usize {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let n = buf.len();
    let mut slice = &buf[..];
    while !slice.is_empty() {
        to.read_tls(&mut slice).unwrap();
        to.process_new_packets().unwrap();
    }
    n
}

fn handshake(c: &Configs) -> (Connection, Connection) {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client =
        Connection::Client(ClientConnection::new(Arc::clone(&c.client), name).unwrap());
    let mut server = Connection::Server(ServerConnection::new(Arc::clone(&c.server)).unwrap());
    while client.is_handshaking() || server.is_handshaking() {
        let moved = pump(&mut client, &mut server) + pump(&mut server, &mut client);
        assert!(moved > 0, "the handshake stalled");
    }
    (client, server)
}

fn bench(c: &mut Criterion) {
    let suites = [("gm", gm()), ("standard", standard_configs())];
    let mut group = c.benchmark_group("tls13-handshake");
    for (name, configs) in &suites {
        group.bench_function(*name, |b| b.iter(|| handshake(configs)));
    }
    group.finish();

    let mut group = c.benchmark_group("tls13-record-1KiB");
    group.throughput(Throughput::Bytes(1024));
    let payload = [0x5A_u8; 1024];
    for (name, configs) in &suites {
        let (mut client, mut server) = handshake(configs);
        let mut sink = [0u8; 2048];
        group.bench_function(*name, |b| {
            b.iter(|| {
                client.writer().write_all(&payload).unwrap();
                pump(&mut client, &mut server);
                let n = server.reader().read(&mut sink).unwrap();
                assert_eq!(n, payload.len());
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
