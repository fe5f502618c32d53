//! Full TLCP handshakes (double certificates both ways) and 1 KiB records, per suite, both ends
//! in this process over an in-memory pipe: what TLCP costs in CPU beside RFC 8998
//! (`gm-tls/benches/handshake.rs` measures that and the standard suites the same way).
//!
//! `cargo bench -p kms-tlcp --bench handshake`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kms_gmtls::x509::{LeafSpec, Sm2Ca, Sm2CertifiedKey, Usage};
use kms_tlcp::{CipherSuite, DoubleCert, TlcpClientConfig, TlcpServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn pair(ca: &Sm2Ca, server: bool) -> DoubleCert {
    let (sign, enc) = if server {
        (Usage::TlcpServerSign, Usage::TlcpServerEnc)
    } else {
        (Usage::TlcpClientSign, Usage::TlcpClientEnc)
    };
    let issue = |usage| -> Sm2CertifiedKey {
        let mut spec = LeafSpec::new("localhost", usage, 30);
        spec.dns_names = vec!["localhost".into()];
        ca.issue(&spec).unwrap()
    };
    let (s, e) = (issue(sign), issue(enc));
    DoubleCert::from_pem(&s.cert_pem, &s.key_pem, &e.cert_pem, &e.key_pem).unwrap()
}

async fn handshake(
    server: Arc<TlcpServerConfig>,
    client: Arc<TlcpClientConfig>,
) -> (
    kms_tlcp::TlcpStream<DuplexStream>,
    kms_tlcp::TlcpStream<DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (s, c) = tokio::join!(kms_tlcp::accept(server, a), kms_tlcp::connect(client, b));
    (s.unwrap(), c.unwrap())
}

fn bench(c: &mut Criterion) {
    let ca = Sm2Ca::generate("bench tlcp ca", 3650).unwrap();
    let anchors = vec![ca.cert_der().to_vec()];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let configs = |suite: CipherSuite| {
        let mut server = TlcpServerConfig::new(pair(&ca, true), anchors.clone()).unwrap();
        server.suites = vec![suite];
        let mut client = TlcpClientConfig::new(ca.cert_pem(), Some(pair(&ca, false))).unwrap();
        client.suites = vec![suite];
        (Arc::new(server), Arc::new(client))
    };

    let mut group = c.benchmark_group("tlcp-handshake");
    for suite in CipherSuite::ALL {
        let (server, client) = configs(suite);
        group.bench_function(format!("{suite:?}"), |b| {
            b.iter(|| runtime.block_on(handshake(Arc::clone(&server), Arc::clone(&client))));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("tlcp-record-1KiB");
    group.throughput(Throughput::Bytes(1024));
    let payload = [0x5A_u8; 1024];
    for suite in CipherSuite::ALL {
        let (server, client) = configs(suite);
        let (mut s, mut cl) = runtime.block_on(handshake(server, client));
        let mut sink = [0u8; 1024];
        group.bench_function(format!("{suite:?}"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    cl.write_all(&payload).await.unwrap();
                    cl.flush().await.unwrap();
                    s.read_exact(&mut sink).await.unwrap();
                });
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
