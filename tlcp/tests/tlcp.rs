//! TLCP against an independent implementation (Tongsuo 8.3.2 through `tongsuopy`, driven by
//! `tests/judges/tongsuo_client.py` and `tongsuo_server.py`), and the refusals: a client
//! certificate from another CA, tampered records, truncated handshakes, a TLS ClientHello.
//!
//! The Tongsuo tests need `python3 -m pip install tongsuopy==1.0.1 h2==4.4.1`; without it they
//! fail (they do not skip).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_gmtls::x509::{self, LeafSpec, Sm2Ca, Usage};
use kms_tlcp::{CertRole, CipherSuite, DoubleCert, TlcpClientConfig, TlcpError, TlcpServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

const PIP_HINT: &str = "python3 -m pip install tongsuopy==1.0.1 h2==4.4.1";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame.
const H2_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

// ---------------------------------------------------------------------------------------------
// PKI

struct Identity {
    sign_cert: PathBuf,
    sign_key: PathBuf,
    enc_cert: PathBuf,
    enc_key: PathBuf,
}

impl Identity {
    fn double_cert(&self) -> DoubleCert {
        DoubleCert::from_pem(
            &read(&self.sign_cert),
            &read(&self.sign_key),
            &read(&self.enc_cert),
            &read(&self.enc_key),
        )
        .unwrap()
    }
}

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: PathBuf,
    server: Identity,
    client: Identity,
    /// Client certificates from an unrelated CA with the same name.
    rogue_client: Identity,
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn issue_pair(ca: &Sm2Ca, dir: &Path, name: &str, server: bool) -> Identity {
    let (sign_usage, enc_usage, cn) = if server {
        (Usage::TlcpServerSign, Usage::TlcpServerEnc, "localhost")
    } else {
        (Usage::TlcpClientSign, Usage::TlcpClientEnc, "tlcp-client")
    };
    let write = |suffix: &str, usage| {
        let mut spec = LeafSpec::new(cn, usage, 30);
        if server {
            spec.dns_names.push("localhost".into());
            spec.ip_addresses.push([127, 0, 0, 1].into());
        }
        let issued = ca.issue(&spec).unwrap();
        let cert = dir.join(format!("{name}_{suffix}.crt"));
        let key = dir.join(format!("{name}_{suffix}.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, issued.key_pem.as_bytes()).unwrap();
        (cert, key)
    };
    let (sign_cert, sign_key) = write("sign", sign_usage);
    let (enc_cert, enc_key) = write("enc", enc_usage);
    Identity {
        sign_cert,
        sign_key,
        enc_cert,
        enc_key,
    }
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Sm2Ca::generate("TLCP Test CA", 60).unwrap();
    let rogue = Sm2Ca::generate("TLCP Test CA", 60).unwrap();
    let ca_pem = dir.path().join("ca.crt");
    std::fs::write(&ca_pem, ca.cert_pem()).unwrap();
    let server = issue_pair(&ca, dir.path(), "server", true);
    let client = issue_pair(&ca, dir.path(), "client", false);
    let rogue_client = issue_pair(&rogue, dir.path(), "rogue", false);
    Pki {
        dir,
        ca_pem,
        server,
        client,
        rogue_client,
    }
}

fn server_config(pki: &Pki, suites: &[CipherSuite]) -> Arc<TlcpServerConfig> {
    let s = &pki.server;
    let mut config = TlcpServerConfig::from_pem(
        &read(&s.sign_cert),
        &read(&s.sign_key),
        &read(&s.enc_cert),
        &read(&s.enc_key),
        &read(&pki.ca_pem),
    )
    .unwrap();
    config.suites = suites.to_vec();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.handshake_timeout = Duration::from_secs(5);
    Arc::new(config)
}

fn client_config(pki: &Pki, identity: &Identity, suites: &[CipherSuite]) -> Arc<TlcpClientConfig> {
    let mut config =
        TlcpClientConfig::new(&read(&pki.ca_pem), Some(identity.double_cert())).unwrap();
    config.suites = suites.to_vec();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

// ---------------------------------------------------------------------------------------------
// Our server: one connection, TLCP handshake, then the HTTP/2 preface is answered with SETTINGS.

#[derive(Debug)]
struct Served {
    suite: &'static str,
    peer_certificates: usize,
    alpn: Option<Vec<u8>>,
}

async fn serve_one(
    config: Arc<TlcpServerConfig>,
) -> (u16, tokio::task::JoinHandle<Result<Served, TlcpError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = kms_tlcp::accept(config, tcp).await?;
        let mut preface = [0u8; 24];
        tls.read_exact(&mut preface).await?;
        assert_eq!(preface, H2_PREFACE);
        tls.write_all(&H2_SETTINGS).await?;
        tls.flush().await?;
        // Drain until the client goes away.
        let mut sink = [0u8; 1024];
        while let Ok(n) = tls.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        Ok(Served {
            suite: tls.suite_name(),
            peer_certificates: tls.peer_certificates().len(),
            alpn: tls.alpn_protocol().map(<[u8]>::to_vec),
        })
    });
    (port, task)
}

// ---------------------------------------------------------------------------------------------
// The Tongsuo judge

fn judges() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/judges")
}

async fn require_tongsuopy() {
    let out = Command::new("python3")
        .args(["-c", "import tongsuopy, h2"])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("python3 is needed for the Tongsuo judge ({e}); then run: {PIP_HINT}")
        });
    assert!(
        out.status.success(),
        "python3 cannot import tongsuopy/h2 (the Tongsuo TLCP judge): run `{PIP_HINT}`\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn tongsuo_client(
    port: u16,
    identity: &Identity,
    pki: &Pki,
    extra: &[&str],
) -> serde_json::Value {
    let p = |x: &PathBuf| x.to_str().unwrap().to_owned();
    let port = port.to_string();
    let (ca, sc, sk, ec, ek) = (
        p(&pki.ca_pem),
        p(&identity.sign_cert),
        p(&identity.sign_key),
        p(&identity.enc_cert),
        p(&identity.enc_key),
    );
    let mut args = vec![
        "--mode",
        "tlcp",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--ca",
        &ca,
        "--sign-cert",
        &sc,
        "--sign-key",
        &sk,
        "--enc-cert",
        &ec,
        "--enc-key",
        &ek,
        "--timeout",
        "10",
    ];
    args.extend_from_slice(extra);
    let out = Command::new("python3")
        .arg(judges().join("tongsuo_client.py"))
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "tongsuo_client.py printed nothing; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tongsuo_client_negotiates_every_suite() {
    require_tongsuopy().await;
    let pki = pki();
    for suite in CipherSuite::ALL {
        let (port, server) = serve_one(server_config(&pki, &CipherSuite::ALL)).await;
        let json = tongsuo_client(
            port,
            &pki.client,
            &pki,
            &[
                "--cipher",
                suite.tongsuo_name(),
                "--alpn",
                "h2",
                "--http2-preface",
            ],
        )
        .await;
        println!("{json}");
        assert_eq!(json["ok"], true, "{suite}: {json}");
        assert_eq!(json["protocol"], "NTLSv1.1", "{suite}: {json}");
        assert_eq!(json["cipher"], suite.tongsuo_name(), "{json}");
        assert_eq!(json["cipher_id"], format!("0x{:04X}", suite.id()), "{json}");
        assert_eq!(json["alpn"], "h2", "{json}");
        assert_eq!(json["client_cert_requested"], true, "{json}");
        assert_eq!(json["http2"]["server_settings_received"], true, "{json}");
        let served = server.await.unwrap().unwrap();
        assert_eq!(served.suite, suite.name());
        assert!(served.peer_certificates >= 2, "sign + enc (+ chain)");
        assert_eq!(served.alpn.as_deref(), Some(&b"h2"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_another_ca_is_refused() {
    require_tongsuopy().await;
    let pki = pki();
    let (port, server) = serve_one(server_config(&pki, &CipherSuite::ALL)).await;
    let json = tongsuo_client(
        port,
        &pki.rogue_client,
        &pki,
        &["--cipher", "ECC-SM2-SM4-GCM-SM3"],
    )
    .await;
    assert_eq!(json["ok"], false, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("unknown ca"),
        "{json}"
    );
    let err = server.await.unwrap().unwrap_err();
    assert!(
        matches!(
            &err,
            TlcpError::Certificate {
                role: CertRole::ClientSign,
                source: x509::Error::UnknownIssuer { .. }
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_against_the_tongsuo_server() {
    require_tongsuopy().await;
    let pki = pki();
    let s = &pki.server;
    for suite in CipherSuite::ALL {
        let p = |x: &PathBuf| x.to_str().unwrap().to_owned();
        let mut server = Command::new("python3")
            .arg(judges().join("tongsuo_server.py"))
            .args([
                "--mode",
                "tlcp",
                "--port",
                "0",
                "--verify-client",
                "require",
                "--alpn",
                "h2",
            ])
            .args(["--max-connections", "1", "--lifetime", "60"])
            .args(["--cipher", suite.tongsuo_name()])
            .args([
                "--sign-cert",
                &p(&s.sign_cert),
                "--sign-key",
                &p(&s.sign_key),
            ])
            .args(["--enc-cert", &p(&s.enc_cert), "--enc-key", &p(&s.enc_key)])
            .args(["--ca", &p(&pki.ca_pem)])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = tokio::io::BufReader::new(server.stdout.take().unwrap());
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
            .await
            .unwrap();
        let info: serde_json::Value = serde_json::from_str(&line).unwrap();
        let port = u16::try_from(info["port"].as_u64().unwrap()).unwrap();

        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut tls = kms_tlcp::connect(client_config(&pki, &pki.client, &[suite]), tcp)
            .await
            .unwrap_or_else(|e| panic!("{suite}: {e}"));
        assert_eq!(tls.suite(), suite);
        assert_eq!(
            tls.peer_certificates().len(),
            3,
            "Tongsuo sends sign, enc, CA"
        );
        tls.write_all(H2_PREFACE).await.unwrap();
        tls.write_all(&H2_SETTINGS).await.unwrap();
        tls.flush().await.unwrap();
        let mut frame = [0u8; 9];
        tls.read_exact(&mut frame).await.unwrap();
        assert_eq!(
            frame[3], 4,
            "{suite}: the server's first HTTP/2 frame is SETTINGS"
        );
        tls.shutdown().await.unwrap();
        drop(tls);
        line.clear();
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
            .await
            .unwrap();
        let logged: serde_json::Value = serde_json::from_str(&line).unwrap();
        println!("{suite}: {logged}");
        assert_eq!(logged["ok"], true, "{logged}");
        assert_eq!(logged["cipher"], suite.tongsuo_name(), "{logged}");
        let _ = server.kill().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals, Rust against Rust through an in-memory wire we can tamper with.

/// Copies `from` to `to` record by record, calling `edit` on each record (header included) and
/// stopping after `limit` bytes (then closing).
async fn relay(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    limit: usize,
    mut edit: impl FnMut(&mut Vec<u8>),
) {
    let mut sent = 0;
    loop {
        let mut header = [0u8; 5];
        if from.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let mut record = header.to_vec();
        record.resize(5 + len, 0);
        if from.read_exact(&mut record[5..]).await.is_err() {
            break;
        }
        edit(&mut record);
        let take = record.len().min(limit - sent);
        if to.write_all(&record[..take]).await.is_err() {
            break;
        }
        sent += take;
        if sent >= limit {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A client and server joined by a relay that may edit or cut the client's bytes.
async fn pair(
    pki: &Pki,
    suite: CipherSuite,
    limit: usize,
    edit: impl FnMut(&mut Vec<u8>) + Send + 'static,
) -> (
    Result<kms_tlcp::TlcpStream<DuplexStream>, TlcpError>,
    tokio::task::JoinHandle<Result<kms_tlcp::TlcpStream<DuplexStream>, TlcpError>>,
) {
    let (client_end, relay_in) = tokio::io::duplex(1 << 16);
    let (relay_out, server_end) = tokio::io::duplex(1 << 16);
    let (in_read, in_write) = tokio::io::split(relay_in);
    let (out_read, out_write) = tokio::io::split(relay_out);
    tokio::spawn(relay(in_read, out_write, limit, edit));
    tokio::spawn(async move {
        let (mut r, mut w) = (out_read, in_write);
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    });
    let server = tokio::spawn(kms_tlcp::accept(server_config(pki, &[suite]), server_end));
    let client = kms_tlcp::connect(client_config(pki, &pki.client, &[suite]), client_end).await;
    (client, server)
}

#[tokio::test]
async fn rust_client_and_server_exchange_data_on_every_suite() {
    let pki = pki();
    for suite in CipherSuite::ALL {
        let (client, server) = pair(&pki, suite, usize::MAX, |_| {}).await;
        let mut client = client.unwrap();
        let mut server = server.await.unwrap().unwrap();
        assert_eq!((client.suite(), server.suite()), (suite, suite));
        assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let writer = tokio::spawn(async move {
            client.write_all(&big).await.unwrap();
            client.shutdown().await.unwrap();
            big
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, writer.await.unwrap(), "{suite}");
    }
}

#[tokio::test]
async fn tampered_records_are_refused() {
    let pki = pki();
    for suite in CipherSuite::ALL {
        // Flip the last byte of the first application-data record (the CBC padding/MAC, or
        // the GCM tag) on its way to the server.
        let mut done = false;
        let (client, server) = pair(&pki, suite, usize::MAX, move |rec| {
            if rec[0] == 23 && !done {
                let last = rec.len() - 1;
                rec[last] ^= 0x01;
                done = true;
            }
        })
        .await;
        let mut client = client.unwrap();
        let mut server = server.await.unwrap().unwrap();
        client.write_all(b"transfer 100 to mallory").await.unwrap();
        client.flush().await.unwrap();
        let mut buf = [0u8; 64];
        let err = server.read(&mut buf).await.unwrap_err();
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<TlcpError>());
        assert!(
            matches!(inner, Some(TlcpError::BadRecordMac)),
            "{suite}: {err:?}"
        );
        // The server told the client why.
        let err = client.read(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("bad_record_mac"), "{suite}: {err}");
    }
}

#[tokio::test]
async fn tampered_handshake_is_refused() {
    let pki = pki();
    // Change one byte of the client's second flight (record 2 = Certificate, 3 =
    // ClientKeyExchange, 4 = CertificateVerify): the server fails (certificate, key exchange,
    // signature or Finished) and never panics.
    for suite in [CipherSuite::EccSm4CbcSm3, CipherSuite::EcdheSm4GcmSm3] {
        for (index, offset) in [(2, 40usize), (2, 300), (3, 12), (3, 60), (4, 30)] {
            let mut seen = 0;
            let (client, server) = pair(&pki, suite, usize::MAX, move |rec| {
                if rec[0] == 22 {
                    seen += 1;
                    if seen == index && offset < rec.len() {
                        rec[offset] ^= 0x40;
                    }
                }
            })
            .await;
            let err = server.await.expect("no panic").unwrap_err();
            println!("{suite} record {index} offset {offset}: {err}");
            // The server refuses with an alert, and the client hears that very alert.
            let alert = err.alert().unwrap_or_else(|| {
                panic!("{suite} record {index} offset {offset}: no alert for {err:?}")
            });
            let Err(client_err) = client else {
                panic!("{suite} record {index} offset {offset}: the client finished");
            };
            assert!(
                matches!(client_err, TlcpError::AlertReceived { code, .. } if code == alert),
                "{suite} record {index} offset {offset}: server {err:?}, client {client_err:?}"
            );
        }
    }
}

#[tokio::test]
async fn truncated_handshakes_are_refused_without_panic() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pki = pki();
    for suite in [CipherSuite::EccSm4GcmSm3, CipherSuite::EcdheSm4CbcSm3] {
        // About how many bytes a whole client handshake takes.
        let total = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&total);
        let (client, server) = pair(&pki, suite, usize::MAX, move |rec| {
            if rec[0] != 23 {
                counter.fetch_add(rec.len(), Ordering::Relaxed);
            }
        })
        .await;
        client.unwrap();
        server.await.unwrap().unwrap();
        let total = total.load(Ordering::Relaxed);
        for limit in [
            0,
            1,
            4,
            5,
            9,
            40,
            total / 3,
            total / 2,
            total - 60,
            // DER signatures and SM2 ciphertexts vary by a few bytes from run to run: cut
            // well inside the final Finished record (45 bytes or more).
            total - 12,
        ] {
            let (client, server) = pair(&pki, suite, limit, |_| {}).await;
            let Err(err) = server.await.expect("the server task must not panic") else {
                panic!("{suite}: handshake cut at {limit} of {total} bytes succeeded");
            };
            assert!(
                matches!(err, TlcpError::UnexpectedEof),
                "{suite} cut at {limit} of {total}: {err:?}"
            );
            // The client loses the connection too: the end of the stream, or a broken pipe
            // when it writes after the relay has gone; never an alert or a crypto failure.
            let Err(client_err) = client else {
                panic!("{suite}: the client finished a handshake cut at {limit}");
            };
            assert!(
                matches!(client_err, TlcpError::UnexpectedEof | TlcpError::Io(_)),
                "{suite} cut at {limit}: {client_err:?}"
            );
        }
    }
}

#[tokio::test]
async fn tls13_client_hello_is_refused_quickly() {
    let pki = pki();
    let (mut peer, server_end) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(kms_tlcp::accept(
        server_config(&pki, &CipherSuite::ALL),
        server_end,
    ));
    // A TLS 1.3 ClientHello: record version 0x0301, legacy_version 0x0303, TLS_AES_128_GCM_SHA256.
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x11; 32]);
    hello.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    // supported_versions: TLS 1.3.
    hello.extend_from_slice(&[0, 7, 0, 0x2b, 0, 3, 2, 3, 4]);
    let mut msg = vec![1, 0, 0, u8::try_from(hello.len()).unwrap()];
    msg.extend_from_slice(&hello);
    let mut record = vec![22, 3, 1, 0, u8::try_from(msg.len()).unwrap()];
    record.extend_from_slice(&msg);
    let started = Instant::now();
    peer.write_all(&record).await.unwrap();
    let err = server.await.unwrap().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, TlcpError::NotTlcp(0x0301)), "{err:?}");
    // The server answered with a fatal protocol_version alert.
    let mut alert = Vec::new();
    peer.read_to_end(&mut alert).await.unwrap();
    assert_eq!(alert, [21, 1, 1, 0, 2, 2, 70]);
}

#[tokio::test]
async fn silent_client_times_out() {
    let pki = pki();
    let (_peer, server_end) = tokio::io::duplex(1 << 16);
    let mut config = TlcpServerConfig::from_pem(
        &read(&pki.server.sign_cert),
        &read(&pki.server.sign_key),
        &read(&pki.server.enc_cert),
        &read(&pki.server.enc_key),
        &read(&pki.ca_pem),
    )
    .unwrap();
    config.handshake_timeout = Duration::from_millis(200);
    let err = kms_tlcp::accept(Arc::new(config), server_end)
        .await
        .unwrap_err();
    assert!(matches!(err, TlcpError::Timeout(_)), "{err:?}");
}

#[test]
fn configuration_refuses_mismatched_keys_and_bad_pem() {
    let pki = pki();
    let s = &pki.server;
    // The encryption key given for the signing certificate.
    let err = DoubleCert::from_pem(
        &read(&s.sign_cert),
        &read(&s.enc_key),
        &read(&s.enc_cert),
        &read(&s.enc_key),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let err = DoubleCert::from_pem(
        "garbage",
        &read(&s.sign_key),
        &read(&s.enc_cert),
        &read(&s.enc_key),
    )
    .unwrap_err();
    assert!(matches!(err, TlcpError::Config(_)), "{err}");
    let _ = pki.dir.path();
}
