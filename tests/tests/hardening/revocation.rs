//! Client-certificate revocation (issue 18 item 6): `[tls] client_crl`, checked at the
//! handshake and re-read when the file changes, with OpenSSL as the judge of the CRLs and of
//! the handshake.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_core::store::{SledStore, Store};
use kms_core::{KmsConfig, System};
use kms_proto::v1;
use kms_server::Settings;
use kms_server::tls::{CertPair, Transport};
use kms_tests::net::{self, MODERN, TLS12_ONLY};
use kms_tests::pki::{Identity, Pki};
use kms_tests::server::TestServer;
use kms_tests::world::Clients;

use crate::common::{Scratch, all_output, openssl};

/// Replaces the file at once (a reader never sees half of it).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A Status call over a fresh connection as `who` (an uninitialised KMS answers any CA
/// certificate): `Ok` when the handshake let it in.
async fn status_as(server: &TestServer, pki: &Pki, who: &Identity) -> Result<(), String> {
    let config = net::client_config(pki.ca.cert_pem(), Some(who), MODERN);
    let channel = net::channel(server.addr, config)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Clients::new(channel)
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .map(drop)
        .map_err(|s| format!("{s:?}"))
}

/// The TLS 1.2 handshake as `who` (the server verifies a TLS 1.2 client's certificate before
/// its Finished, so the refusal is the handshake's own error): the alert it ended with.
async fn tls12_alert(server: &TestServer, pki: &Pki, who: &Identity) -> Option<String> {
    let config = net::client_config(pki.ca.cert_pem(), Some(who), TLS12_ONLY);
    match net::handshake(server.addr, config).await {
        Ok(_) => None,
        Err(e) => Some(
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .map_or_else(|| format!("not a TLS error: {e:?}"), |t| format!("{t:?}")),
        ),
    }
}

/// Waits (up to 10 s) until `who`'s Status call succeeds or fails as `allowed` says.
async fn until(server: &TestServer, pki: &Pki, who: &Identity, allowed: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = status_as(server, pki, who).await;
        if got.is_ok() == allowed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} still {got:?} after 10 s",
            who.subject
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A CRL revoking the app's certificate refuses its handshake (alert certificate_revoked, in
/// rustls and in OpenSSL's s_client) while another client of the same CA is served; OpenSSL's
/// `verify -crl_check` agrees on both. A new CRL written over the file (revoking the other
/// client instead) takes effect without a restart; a file that is not a CRL, or a CRL of a CA
/// that is not a client CA, leaves the CRL in force as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crl_refuses_revoked_clients_and_is_reloaded_when_it_changes() {
    let pki = Pki::new();
    let dir = Scratch::new();
    let ca = dir.write("ca.pem", pki.ca.cert_pem());
    let crl_path = dir.write("clients.crl", pki.ca.crl(1, &[&pki.app]));
    let app = dir.write("app.pem", &pki.app.cert_pem);
    let app_key = dir.write("app-key.pem", &pki.app.key_pem);
    let other = dir.write("other.pem", &pki.other_app.cert_pem);

    // OpenSSL, as the judge of the CRL itself: the app's certificate is revoked, the other not.
    let verify = |cert: &str| {
        let out = openssl(
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                &ca,
                "-CRLfile",
                &crl_path,
                cert,
            ],
            b"",
        );
        (out.status.success(), all_output(&out))
    };
    let (ok, out) = verify(&app);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = verify(&other);
    assert!(ok && out.contains(": OK"), "{out}");

    let p256 = CertPair {
        cert_pem: &pki.server.cert_pem,
        key_pem: &pki.server.key_pem,
    };
    let (tls, revocation) = kms_server::tls::server_config_with_crl(
        Transport::Standard,
        &[p256],
        &pki.clients_ca_pem(),
        Some(Path::new(&crl_path)),
    )
    .unwrap();
    assert_eq!(revocation.as_ref().unwrap().revoked_count(), 1);
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path("store")).unwrap());
    let kms = Arc::new(System::open(store, KmsConfig::default()));
    let settings = Settings {
        revocation,
        crl_poll_interval: Duration::from_millis(100),
        ..Settings::default()
    };
    let server = TestServer::start_with_tls(kms, tls, settings).await;

    // The revoked certificate: refused in the handshake, with certificate_revoked.
    assert_eq!(
        tls12_alert(&server, &pki, &pki.app).await.as_deref(),
        Some("AlertReceived(CertificateRevoked)")
    );
    let refused = status_as(&server, &pki, &pki.app).await;
    assert!(refused.is_err(), "a revoked client was served over TLS 1.3");
    // OpenSSL's s_client sees the same alert.
    let connect = server.addr.to_string();
    let out = openssl(
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "localhost",
            "-CAfile",
            &ca,
            "-tls1_2",
            "-cert",
            &app,
            "-key",
            &app_key,
        ],
        b"",
    );
    let text = all_output(&out);
    assert!(text.contains("alert certificate revoked"), "{text}");
    // Another certificate of the same CA is served.
    assert_eq!(tls12_alert(&server, &pki, &pki.other_app).await, None);
    status_as(&server, &pki, &pki.other_app).await.unwrap();

    // A new CRL revokes the other client and no longer the app: in force without a restart.
    replace(Path::new(&crl_path), &pki.ca.crl(2, &[&pki.other_app]));
    until(&server, &pki, &pki.app, true).await;
    until(&server, &pki, &pki.other_app, false).await;
    assert_eq!(
        tls12_alert(&server, &pki, &pki.other_app).await.as_deref(),
        Some("AlertReceived(CertificateRevoked)")
    );

    // A file that is not a CRL, then a CRL of another CA: refused, the CRL in force stays.
    for bad in [
        "not a CRL at all".to_owned(),
        pki.other_ca.crl(3, &[&pki.app]),
    ] {
        replace(Path::new(&crl_path), &bad);
        tokio::time::sleep(Duration::from_millis(500)).await;
        status_as(&server, &pki, &pki.app).await.unwrap();
        assert_eq!(
            tls12_alert(&server, &pki, &pki.other_app).await.as_deref(),
            Some("AlertReceived(CertificateRevoked)"),
            "a bad CRL file opened the door"
        );
    }
    server.stop().await.unwrap();
}

/// `openssl ca -gencrl` for the SM2 test CA, revoking `revoked` (OpenSSL 3 signs with
/// SM2-with-SM3, under the distinguishing ID `sigopt` sets): a CRL made by another
/// implementation than ours.
fn openssl_sm2_crl(dir: &Scratch, pki: &Pki, revoked: &[&Identity], sigopt: &[&str]) -> String {
    let ca = dir.write("sm2-ca.pem", pki.gm.ca_pem());
    let key = dir.write("sm2-ca-key.pem", pki.gm.ca.key_pem().as_bytes());
    let index = dir.write("index.txt", "");
    let number = dir.write("crlnumber", "01\n");
    let cnf = dir.write(
        "ca.cnf",
        format!(
            "[ca]\ndefault_ca = d\n[d]\ndatabase = {index}\ncrlnumber = {number}\n\
             default_md = sm3\ndefault_crl_days = 30\n"
        ),
    );
    for (i, id) in revoked.iter().enumerate() {
        let cert = dir.write(&format!("revoked-{i}.pem"), &id.cert_pem);
        let out = openssl(
            &[
                "ca", "-config", &cnf, "-keyfile", &key, "-cert", &ca, "-revoke", &cert,
            ],
            b"",
        );
        assert!(out.status.success(), "{}", all_output(&out));
    }
    let crl = dir.path("sm2.crl").to_str().unwrap().to_owned();
    let mut args = vec![
        "ca", "-config", &cnf, "-gencrl", "-keyfile", &key, "-cert", &ca, "-out", &crl,
    ];
    args.extend_from_slice(sigopt);
    let out = openssl(&args, b"");
    assert!(out.status.success(), "{}", all_output(&out));
    std::fs::read_to_string(&crl).unwrap()
}

/// SM2 clients (RFC 8998 on the TLS port, and TLCP with double certificates) are checked
/// against an SM2 CA's CRL made by OpenSSL: the revoked app is refused on both, another SM2
/// client is served on both. The CRL's SM2 signature is verified: one signed under another
/// distinguishing ID is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sm2_clients_are_checked_over_rfc8998_and_tlcp() {
    let pki = Pki::new();
    let dir = Scratch::new();
    // OpenSSL's own default ID is not GM/T 0009's: such a CRL does not verify, and stops the
    // start.
    let wrong_id = openssl_sm2_crl(&dir, &pki, &[&pki.gm.app], &[]);
    let wrong_path = dir.write("wrong-id.crl", &wrong_id);
    let err = kms_server::tls::server_config_with_crl(
        Transport::Standard,
        &[CertPair {
            cert_pem: &pki.server.cert_pem,
            key_pem: &pki.server.key_pem,
        }],
        &pki.clients_ca_pem(),
        Some(Path::new(&wrong_path)),
    )
    .map(drop)
    .unwrap_err()
    .to_string();
    assert!(err.contains("is not signed by it"), "{err}");
    let crl = openssl_sm2_crl(
        &dir,
        &pki,
        &[&pki.gm.app],
        &["-sigopt", "distid:1234567812345678"],
    );
    let crl_path = dir.write("clients.crl", &crl);
    let p256 = CertPair {
        cert_pem: &pki.server.cert_pem,
        key_pem: &pki.server.key_pem,
    };
    let sm2 = CertPair {
        cert_pem: &pki.gm.server.cert_pem,
        key_pem: &pki.gm.server.key_pem,
    };
    let (tls, revocation) = kms_server::tls::server_config_with_crl(
        Transport::Standard,
        &[p256, sm2],
        &pki.clients_ca_pem(),
        Some(Path::new(&crl_path)),
    )
    .unwrap();
    assert_eq!(revocation.as_ref().unwrap().revoked_count(), 1);
    let tlcp = kms_server::tls::tlcp_config(
        &pki.gm.tlcp_sign.cert_pem,
        &pki.gm.tlcp_sign.key_pem,
        &pki.gm.tlcp_enc.cert_pem,
        &pki.gm.tlcp_enc.key_pem,
        pki.gm.ca_pem(),
    )
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path("store")).unwrap());
    let kms = Arc::new(System::open(store, KmsConfig::default()));
    let settings = Settings {
        revocation,
        ..Settings::default()
    };
    let ports = kms_tests::server::Ports::bind(true).await;
    let server = TestServer::serve_on(ports, kms, tls, Some(tlcp), settings);
    let tlcp_addr = server.tlcp_addr.unwrap();

    let over_tlcp = |who: &'static str| {
        let config = net::tlcp_client_config(
            pki.gm.ca_pem(),
            pki.gm.identity(who),
            &pki.gm.enc[who],
            None,
        );
        async move {
            let channel = net::tlcp_channel(tlcp_addr, config)
                .await
                .map_err(|e| format!("{e:?}"))?;
            Clients::new(channel)
                .system
                .clone()
                .status(v1::StatusRequest {})
                .await
                .map(drop)
                .map_err(|s| format!("{s:?}"))
        }
    };
    let over_gm = |who: &Identity| {
        let config = net::gm_client_config(pki.gm.ca_pem(), Some(who));
        let addr = server.addr;
        async move {
            let channel = net::channel(addr, config)
                .await
                .map_err(|e| format!("{e:?}"))?;
            Clients::new(channel)
                .system
                .clone()
                .status(v1::StatusRequest {})
                .await
                .map(drop)
                .map_err(|s| format!("{s:?}"))
        }
    };
    over_tlcp("other_app").await.unwrap();
    over_gm(&pki.gm.other_app).await.unwrap();
    let (tlcp_refused, gm_refused) = (over_tlcp("app").await, over_gm(&pki.gm.app).await);
    assert!(tlcp_refused.is_err(), "a revoked TLCP client was served");
    assert!(gm_refused.is_err(), "a revoked RFC 8998 client was served");
    server.stop().await.unwrap();
}

/// A client whose certificate is revoked after it connected is cut off: it cannot come back by
/// resuming its TLS session (a resumed handshake presents no certificate to verify; the server
/// checks the session's certificate after every handshake), and a connection it kept open is
/// refused (UNAUTHENTICATED) from its next request on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_revoked_after_it_connected_is_cut_off() {
    let pki = Pki::new();
    let dir = Scratch::new();
    let crl_path = dir.write("clients.crl", pki.ca.crl(1, &[]));
    let p256 = CertPair {
        cert_pem: &pki.server.cert_pem,
        key_pem: &pki.server.key_pem,
    };
    let (tls, revocation) = kms_server::tls::server_config_with_crl(
        Transport::Standard,
        &[p256],
        &pki.clients_ca_pem(),
        Some(Path::new(&crl_path)),
    )
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path("store")).unwrap());
    let kms = Arc::new(System::open(store, KmsConfig::default()));
    let settings = Settings {
        revocation,
        crl_poll_interval: Duration::from_millis(100),
        ..Settings::default()
    };
    let server = TestServer::start_with_tls(kms, tls, settings).await;
    // One client configuration throughout: it keeps the session tickets it is given.
    let config = net::client_config(pki.ca.cert_pem(), Some(&pki.app), MODERN);
    let call = |config| async move {
        let channel = net::channel(server.addr, config)
            .await
            .map_err(|e| format!("{e:?}"))?;
        Clients::new(channel)
            .system
            .clone()
            .status(v1::StatusRequest {})
            .await
            .map(drop)
            .map_err(|s| format!("{s:?}"))
    };
    // A connection opened before the revocation, kept open across it.
    let open = Clients::new(
        net::channel(server.addr, Arc::clone(&config))
            .await
            .unwrap(),
    );
    open.system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .unwrap();
    call(Arc::clone(&config)).await.unwrap();
    // The session is resumable: a bare handshake with the same configuration resumes it.
    let resumed = net::handshake(server.addr, Arc::clone(&config))
        .await
        .unwrap();
    assert_eq!(
        resumed.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    drop(resumed);
    replace(Path::new(&crl_path), &pki.ca.crl(2, &[&pki.app]));
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A fresh handshake is refused; so is a resumed one.
    assert_eq!(
        tls12_alert(&server, &pki, &pki.app).await.as_deref(),
        Some("AlertReceived(CertificateRevoked)")
    );
    let again = call(Arc::clone(&config)).await;
    assert!(
        again.is_err(),
        "a revoked client resumed its session and was served"
    );
    // The connection that was open all along is refused from its next request on.
    let status = open
        .system
        .clone()
        .status(v1::StatusRequest {})
        .await
        .expect_err("a revoked client was served on its open connection");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status
            .message()
            .contains("the client certificate has been revoked"),
        "{status:?}"
    );
    server.stop().await.unwrap();
}

/// A CRL file that cannot be used stops the start (never serve without the revocations asked
/// for), and says why.
#[test]
fn a_bad_crl_file_stops_the_start() {
    let pki = Pki::new();
    let dir = Scratch::new();
    let p256 = CertPair {
        cert_pem: &pki.server.cert_pem,
        key_pem: &pki.server.key_pem,
    };
    let start = |crl: &str| {
        kms_server::tls::server_config_with_crl(
            Transport::Standard,
            &[p256],
            &pki.clients_ca_pem(),
            Some(Path::new(crl)),
        )
        .map(drop)
        .unwrap_err()
        .to_string()
    };
    let missing = dir.path("missing.crl");
    let err = start(missing.to_str().unwrap());
    assert!(err.contains("cannot read the client CRL file"), "{err}");
    let garbage = dir.write(
        "garbage.crl",
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    );
    let err = start(&garbage);
    assert!(err.contains("does not parse"), "{err}");
    let foreign = dir.write("foreign.crl", pki.other_ca.crl(1, &[]));
    let err = start(&foreign);
    assert!(
        err.contains("issued by CN=Some Other CA, which is not a client CA"),
        "{err}"
    );
}
