//! `kms-server migrate --from sled:PATH --to postgres:URL`: a one-node deployment's store is
//! copied into PostgreSQL (bytes as stored, so key material stays wrapped), verified by per-tree
//! counts and SM3 checksums, and then served by PostgreSQL nodes unsealed with the same shares:
//! the keys, aliases, grants and ciphertexts made on sled all work, and the audit chain goes on.

use std::time::Duration;

use kms_proto::v1;
use kms_server::Settings;
use kms_tests::pg::{self, Cluster, Schema};
use kms_tests::pki::subjects::OTHER_APP_NS;
use kms_tests::world::World;

use crate::common::{SECRET, audit_public_key, create_key, dec, encrypt, export_audit, key_req};

fn migrate(args: Vec<String>) -> (u8, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = kms_server::run_cli(
        std::iter::once("kms-server".to_owned()).chain(args),
        &mut out,
        &mut err,
    );
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_migrates_to_postgres_and_serves_from_there() {
    // A one-node deployment on sled, with a little of everything.
    let w = World::start().await;
    let key = create_key(&w.admin, None).await.unwrap();
    w.admin
        .keys
        .clone()
        .create_alias(v1::CreateAliasRequest {
            key: key.clone(),
            alias: "orders".to_owned(),
        })
        .await
        .unwrap();
    let (old_ciphertext, _) = encrypt(&w.app, &key).await.unwrap();
    w.admin
        .keys
        .clone()
        .rotate_key(key_req(&key))
        .await
        .unwrap();
    let (new_ciphertext, version) = encrypt(&w.app, "orders").await.unwrap();
    assert_eq!(version, 2);
    w.admin
        .keys
        .clone()
        .create_grant(v1::CreateGrantRequest {
            key: key.clone(),
            grantee_namespace: OTHER_APP_NS.to_owned(),
            operations: vec!["decrypt".to_owned()],
        })
        .await
        .unwrap();
    let records_before = kms_core::audit::verify(
        &export_audit(&w.auditor).await,
        &audit_public_key(&w.auditor).await,
    )
    .unwrap()
    .records;
    let World {
        pki,
        dir,
        server,
        shares,
        admin,
        app,
        other_app,
        auditor,
        stranger,
        ..
    } = w;
    drop((admin, app, other_app, auditor, stranger));
    server.stop().await.unwrap();

    let schema = Schema::new();
    let args = |schema: &str| {
        vec![
            "migrate".to_owned(),
            "--from".to_owned(),
            // The test harness keeps sled in the directory itself (a server uses DATA_DIR/store).
            format!("sled:{}", dir.path().display()),
            "--to".to_owned(),
            format!("postgres:{}", pg::url()),
            "--schema".to_owned(),
            schema.to_owned(),
        ]
    };
    let a = args(&schema.name);
    let (code, out, err) = tokio::task::spawn_blocking(move || migrate(a))
        .await
        .unwrap();
    println!("{out}{err}");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified:"), "{out}");
    for tree in [
        "encrypt_keys",
        "aliases",
        "grants",
        "audit",
        "seal",
        "namespaces",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(tree)),
            "{tree} missing:\n{out}"
        );
    }
    // A second run into the same (now filled) schema is refused.
    let a = args(&schema.name);
    let (code, _, err) = tokio::task::spawn_blocking(move || migrate(a))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");

    // Two PostgreSQL nodes serve what sled made.
    let c = Cluster::adopt(schema, pki, shares, 2, Settings::default()).await;
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    for ciphertext in [&old_ciphertext, &new_ciphertext] {
        let out = n1
            .app
            .crypto
            .clone()
            .decrypt(dec(ciphertext))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.plaintext, SECRET);
    }
    let (_, version) = encrypt(&n0.app, "orders").await.unwrap();
    assert_eq!(version, 2);
    let ledger = kms_tests::world::Clients::connect(&n0.server, &c.pki, &c.pki.other_app).await;
    ledger
        .crypto
        .clone()
        .decrypt(dec(&old_ciphertext))
        .await
        .expect("the grant made on sled holds on PostgreSQL");
    // The audit chain continues from where sled left it.
    let text = export_audit(&n1.auditor).await;
    let public = audit_public_key(&n1.auditor).await;
    let verified = kms_core::audit::verify(&text, &public).unwrap();
    assert!(verified.records > records_before, "{verified:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    c.stop().await;
}
