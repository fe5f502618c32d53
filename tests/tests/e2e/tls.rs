//! Transport (API-1): mutual TLS 1.3/1.2 only. A client without a certificate, with one from
//! another CA, or offering TLS 1.1 is refused; plaintext HTTP/2 gets nowhere; and the server keeps
//! serving proper clients afterwards.

use kms_proto::v1;
use kms_tests::net::{self, MODERN, TLS12_ONLY, TLS13_ONLY};
use kms_tests::world::{Clients, World};
use rustls::ProtocolVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Scratch, all_output, openssl};

/// What a refused client sees after a TLS 1.3 handshake the server has not accepted yet: the
/// server's alert (as an error) or a closed connection, never HTTP/2 bytes.
pub(crate) async fn refused_after_handshake(
    mut stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> String {
    let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    match stream.read(&mut buf).await {
        Ok(0) => "connection closed".to_owned(),
        Ok(n) => panic!(
            "a refused client read {n} bytes from the server: {:?}",
            &buf[..n]
        ),
        Err(e) => e.to_string(),
    }
}

/// The proper clients still get answers.
pub(crate) async fn still_serves(w: &World) {
    let s = w
        .app
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(s.initialized && !s.sealed);
    let app = match w.transport {
        kms_server::tls::Transport::Standard => &w.pki.app,
        kms_server::tls::Transport::GmOnly => &w.pki.gm.app,
    };
    let fresh = w.connect(app).await;
    fresh
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap();
}

/// An RPC over a channel made with `config` fails (at connect or at the first call), and the
/// failure is the client's own transport error, never a status a service answered with. (Why
/// the server refused is asserted on the handshake itself; the gRPC code of a transport error
/// depends on when the client notices the connection is gone: UNKNOWN, CANCELLED, INTERNAL.)
pub(crate) async fn rpc_fails(w: &World, config: std::sync::Arc<rustls::ClientConfig>) {
    if let Ok(ch) = net::channel(w.server.addr, config).await {
        let r = Clients::new(ch).system.status(v1::StatusRequest {}).await;
        let status = r.expect_err("a refused client got an answer");
        assert!(is_transport_error(&status), "{status:?}");
    }
}

/// Whether the client made `status` from a failed connection (a `tonic::transport::Error`
/// inside) rather than receiving it from the server.
pub(crate) fn is_transport_error(status: &tonic::Status) -> bool {
    std::error::Error::source(status)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proper_clients_connect_with_tls13_and_tls12() {
    let w = World::start().await;
    for (versions, want) in [
        (TLS13_ONLY, ProtocolVersion::TLSv1_3),
        (TLS12_ONLY, ProtocolVersion::TLSv1_2),
        (MODERN, ProtocolVersion::TLSv1_3),
    ] {
        let config = net::client_config(w.pki.ca.cert_pem(), Some(&w.pki.app), versions);
        let stream = net::handshake(w.server.addr, config.clone()).await.unwrap();
        let conn = stream.get_ref().1;
        assert_eq!(conn.protocol_version(), Some(want));
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
        let suite = format!("{:?}", conn.negotiated_cipher_suite().unwrap().suite());
        assert!(
            suite.contains("GCM") || suite.contains("CHACHA20_POLY1305"),
            "{suite} is not an AEAD suite"
        );
        let clients = Clients::new(net::channel(w.server.addr, config).await.unwrap());
        let s = clients
            .system
            .clone()
            .status(v1::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.caller_subject, w.pki.app.subject());
        assert_eq!(s.caller_role, "app");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_without_certificate_is_refused() {
    let w = World::start().await;
    // TLS 1.3: the client finishes first; the server's answer is an alert, then nothing.
    let config = net::client_config(w.pki.ca.cert_pem(), None, TLS13_ONLY);
    let seen = match net::handshake(w.server.addr, config.clone()).await {
        Err(e) => e.to_string(),
        Ok(stream) => refused_after_handshake(stream).await,
    };
    assert!(seen.contains("CertificateRequired"), "{seen}");
    // TLS 1.2: the server checks the certificate before it finishes, so the handshake fails.
    let config12 = net::client_config(w.pki.ca.cert_pem(), None, TLS12_ONLY);
    let err = net::handshake(w.server.addr, config12.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    rpc_fails(&w, config).await;
    rpc_fails(&w, config12).await;
    still_serves(&w).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_certificate_from_another_ca_is_refused() {
    let w = World::start().await;
    // Same subject as the admin, signed by a CA the server does not trust.
    assert_eq!(w.pki.foreign.subject, w.pki.admin.subject);
    for versions in [TLS13_ONLY, TLS12_ONLY] {
        let config = net::client_config(w.pki.ca.cert_pem(), Some(&w.pki.foreign), versions);
        let seen = match net::handshake(w.server.addr, config.clone()).await {
            Err(e) => e.to_string(),
            Ok(stream) => refused_after_handshake(stream).await,
        };
        assert!(seen.contains("UnknownCA"), "{versions:?}: {seen}");
        rpc_fails(&w, config).await;
    }
    still_serves(&w).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openssl_tls11_and_certless_clients_are_refused_tls12_accepted() {
    let w = World::start().await;
    let dir = Scratch::new();
    let ca = dir.write("ca.pem", w.pki.ca.cert_pem());
    let cert = dir.write("app.pem", &w.pki.app.cert_pem);
    let key = dir.write("app-key.pem", &w.pki.app.key_pem);
    let connect = w.server.addr.to_string();
    let base = [
        "s_client",
        "-connect",
        connect.as_str(),
        "-servername",
        "localhost",
        "-CAfile",
        ca.as_str(),
        "-verify_return_error",
    ];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        let out = openssl(&args, b"");
        (out.status.code(), all_output(&out))
    };
    // The positive control: the same OpenSSL, TLS 1.2, with the app's certificate. In TLS 1.2
    // the server verifies the client certificate before its Finished, so a completed handshake
    // means the certificate was accepted.
    let (code, out) = run(&["-tls1_2", "-cert", &cert, "-key", &key]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Protocol  : TLSv1.2"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(!out.contains("alert"), "{out}");

    // TLS 1.1 (SECLEVEL=0 so that OpenSSL itself is willing to offer it): no session.
    let (code, out) = run(&[
        "-tls1_1",
        "-cipher",
        "DEFAULT@SECLEVEL=0",
        "-cert",
        &cert,
        "-key",
        &key,
    ]);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("alert handshake failure") || out.contains("alert protocol version"),
        "{out}"
    );
    assert!(out.contains("Cipher is (NONE)"), "{out}");

    // No client certificate, TLS 1.2 and TLS 1.3 (-ign_eof: wait for the server's verdict,
    // which in TLS 1.3 comes after the client's Finished).
    for version in ["-tls1_2", "-tls1_3"] {
        let (code, out) = run(&[version, "-ign_eof"]);
        assert_ne!(code, Some(0), "{version}: {out}");
        assert!(
            out.contains("alert certificate required"),
            "{version}: {out}"
        );
    }
    still_serves(&w).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plaintext_http2_is_refused() {
    let w = World::start().await;
    // tonic over plain TCP (HTTP/2 prior knowledge).
    if let Ok(ch) = net::plaintext_channel(w.server.addr).await {
        let r = Clients::new(ch).system.status(v1::StatusRequest {}).await;
        let status = r.expect_err("plaintext HTTP/2 got an answer");
        assert!(is_transport_error(&status), "{status:?}");
    }
    // By hand: the HTTP/2 preface and an empty SETTINGS frame. The answer is a TLS alert record
    // (content type 21) and a closed connection, never an HTTP/2 frame.
    let mut tcp = tokio::net::TcpStream::connect(w.server.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        tcp.read_to_end(&mut buf),
    )
    .await
    .expect("the server neither answered nor closed a plaintext connection");
    assert!(read.is_ok() || buf.is_empty(), "{read:?}");
    assert!(
        buf.is_empty() || buf[0] == 21,
        "plaintext got a non-alert answer: {buf:?}"
    );
    still_serves(&w).await;
    w.stop().await;
}

/// API-5: a cap on concurrent connections. Past it, the TCP connection is closed before any TLS;
/// when a connection ends its slot comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_cap_are_refused_until_one_closes() {
    let pki = kms_tests::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let settings = kms_server::Settings {
        limits: kms_server::limits::Limits {
            max_connections: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = kms_tests::server::TestServer::start(&pki, dir.path(), settings).await;
    let config = net::client_config(pki.ca.cert_pem(), Some(&pki.stranger), MODERN);
    let first = Clients::new(net::channel(server.addr, config.clone()).await.unwrap());
    first
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap();
    let second = net::handshake(server.addr, config.clone()).await.unwrap();
    let third = net::handshake(server.addr, config.clone()).await;
    // Closed before any TLS: the client's handshake meets the end of the stream (or a reset).
    let err = third.expect_err("a third connection got a TLS session");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        "{err:?}"
    );
    // The connections inside the cap still work.
    first
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap();
    drop(second);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ch) = net::channel(server.addr, config.clone()).await {
            again = Some(Clients::new(ch));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let again = again.expect("the closed connection's slot never came back");
    again
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap();
    drop((first, again));
    server.stop().await.unwrap();
}

/// Issue 18 item 6: ~1,100 sockets from one host that never start TLS neither take every slot
/// of the connection cap (a host gets `max_connections_per_source`, 64 by default) nor hold the
/// slots they get for the handshake timeout (a socket silent for `first_byte_timeout` is dropped).
/// A registered client on another address is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_socket_flood_from_one_host_leaves_others_served() {
    let w = World::start().await;
    let flooder: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::new(flooder, 0)).unwrap();
        idle.push(socket.connect(w.server.addr).await.unwrap());
    }
    // A new connection from 127.0.0.1, while all 1,100 are open.
    let config = net::client_config(w.pki.ca.cert_pem(), Some(&w.pki.app), MODERN);
    let fresh = Clients::new(
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            net::channel(w.server.addr, config),
        )
        .await
        .expect("the handshake waited on the flood")
        .expect("a registered client was refused during the flood"),
    );
    fresh
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .expect("a registered client was not served during the flood");
    // Within the first-byte timeout (3 s) and some slack, the server has closed every one.
    let mut still_open = Vec::new();
    for (i, s) in idle.iter_mut().enumerate() {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(std::time::Duration::from_secs(6), s.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => {}
            other => still_open.push(format!("{i}: {other:?}")),
        }
    }
    assert!(
        still_open.is_empty(),
        "idle sockets the server kept open: {still_open:?}"
    );
    w.stop().await;
}
