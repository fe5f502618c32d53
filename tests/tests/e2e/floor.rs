//! The benchmarks' transport floor (`kms-server floor`, issue 20 item 4): the server's own TLS,
//! HTTP/2 and tonic stack, mutual TLS with the dev certificates, answering Encrypt with its
//! plaintext and nothing else. The benchmark divides the KMS's cost by this one's.

use std::time::Duration;

use kms_client::{Client, Context, Retry};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_echoes_encrypt_over_mutual_tls_and_serves_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let dev = dir.path().join("kms-dev");
    // The dev folder's certificates and profiles, as `kms-server dev` makes them.
    drop(kms_server::dev::prepare(&dev, &endpoint).unwrap());
    let tls = kms_server::dev::tls_config(&dev, kms_server::tls::Transport::Standard).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let floor = tokio::spawn(kms_server::server::run_floor(
        listener,
        tls,
        kms_server::Settings::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let app = Client::from_profile(&dev.join("profiles").join("app.toml"))
        .await
        .unwrap()
        .with_retry(Retry::never())
        .with_timeout(Some(Duration::from_secs(5)));
    let echoed = app
        .encrypt("any-key", &[7u8; 1024], &Context::new())
        .await
        .unwrap();
    assert_eq!(echoed.ciphertext, vec![7u8; 1024]);
    assert_eq!(echoed.key_id, "any-key");
    let e = app.decrypt(b"x", &Context::new()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("Encrypt only"), "{e}");
    let _ = stop.send(());
    floor.await.unwrap().unwrap();
}
