//! The catalogue's server and what it stores before the bad input starts: keys of every purpose,
//! keys in every state (destroyed ones made offline with a clock that can be moved, since a real
//! destruction waits at least seven days), and outputs made with each key — so that after the run
//! the test can show that nothing stored was lost or altered.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kms_core::alg::{KeySpec, Purpose as CorePurpose, SignatureParams};
use kms_core::authz::Role;
use kms_core::clock::{DAY, ManualClock};
use kms_core::crypto::{Message, PublicKey, encrypt_to_public_key};
use kms_core::envelope::EncryptionContext;
use kms_core::keys::{KeyRef, Namespace};
use kms_core::store::{SledStore, Store};
use kms_core::{CreateKeyRequest, KmsConfig, TestKms};
use kms_proto::v1::{self, Purpose};
use kms_server::Settings;
use kms_tests::pki::{Pki, subjects};
use kms_tests::server::TestServer;
use kms_tests::world::{Clients, KeyOp, World};
use tonic::Code;

use crate::common::{
    SECRET, SECRET_CONTEXT, SigOpts, asym_req, ctx, dec, enc, mac_req, public_key_req, sign_req,
    verify_mac_req, verify_req,
};

/// The context every fixture blob is bound to.
pub(crate) fn fixture_context() -> HashMap<String, String> {
    ctx(&[("tenant", SECRET_CONTEXT), ("purpose", "billing")])
}

/// A key of the catalogue and what its purpose is.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    pub(crate) id: String,
    pub(crate) purpose: Purpose,
    pub(crate) algorithm: &'static str,
}

/// Keys in the app's namespace, one of each purpose and algorithm family.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    pub(crate) sm4: Key,
    pub(crate) aes: Key,
    pub(crate) sm2_sign: Key,
    pub(crate) rsa_sign: Key,
    pub(crate) sm2_asym: Key,
    pub(crate) rsa_asym: Key,
    pub(crate) hmac_sm3: Key,
    pub(crate) hmac_sha256: Key,
    /// The password shield's keys (issue 22 item 2): an SM2 password key and a pepper.
    pub(crate) password: Key,
    pub(crate) pepper: Key,
    /// Keys by state: disabled, pending destruction, compromised, destroyed; each an
    /// (encrypt, sign, asymmetric-decrypt, MAC) quadruple.
    pub(crate) by_state: Vec<(&'static str, [Key; 4])>,
}

impl Keys {
    /// The healthy keys, for the purpose × operation matrix.
    pub(crate) fn healthy(&self) -> [&Key; 8] {
        [
            &self.sm4,
            &self.aes,
            &self.sm2_sign,
            &self.rsa_sign,
            &self.sm2_asym,
            &self.rsa_asym,
            &self.hmac_sm3,
            &self.hmac_sha256,
        ]
    }
}

/// Something made with a key before the run, re-checked after it.
#[derive(Clone, Debug)]
pub(crate) enum Made {
    Blob {
        ciphertext: Vec<u8>,
        context: HashMap<String, String>,
        plaintext: Vec<u8>,
    },
    Signature {
        key: String,
        message: Vec<u8>,
        signature: Vec<u8>,
    },
    Tag {
        key: String,
        data: Vec<u8>,
        tag: Vec<u8>,
    },
    Sealed {
        key: String,
        ciphertext: Vec<u8>,
        plaintext: Vec<u8>,
    },
}

/// The catalogue's world: the server, its keys and what was made with them.
pub(crate) struct Fixture {
    pub(crate) w: World,
    pub(crate) keys: Keys,
    pub(crate) made: Vec<Made>,
    /// A blob under the healthy SM4 key, bound to [`fixture_context`], of [`SECRET`].
    pub(crate) blob: Vec<u8>,
    /// An SM2 ciphertext of [`SECRET`] to the SM2 decryption key, and an RSA-OAEP one to the
    /// RSA key.
    pub(crate) sm2_sealed: Vec<u8>,
    pub(crate) rsa_sealed: Vec<u8>,
}

/// How long the catalogue's server waits for a TLS handshake (the slow-client cases wait this
/// out, so it is short).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(800);

/// What the offline phase made: the shares, and the destroyed keys with outputs made before
/// their destruction.
struct Offline {
    shares: Vec<String>,
    destroyed: [Key; 4],
    made: Vec<Made>,
}

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Initialises the store as `World` would (same admin, principals and roles), with a clock 60
/// days in the past, and destroys one key of each purpose after its waiting period.
fn offline(dir: &Path) -> Offline {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir).unwrap());
    let clock = Arc::new(ManualClock::new(now() - 60 * DAY));
    let kms = TestKms::with_clock(store, KmsConfig::default(), Arc::clone(&clock) as _);
    let init = kms
        .init_plan(&kms_core::custody::InitPlan {
            admin: subjects::ADMIN.into(),
            threshold: 2,
            holders: [subjects::ADMIN, subjects::CUSTODIAN, subjects::CUSTODIAN_2]
                .into_iter()
                .map(|subject| kms_core::custody::Holder {
                    subject: subject.into(),
                    public_key: None,
                })
                .collect(),
            shares: 0,
        })
        .unwrap();
    let shares: Vec<String> = init
        .shares
        .iter()
        .map(|s| match &s.form {
            kms_core::custody::ShareForm::Plain(share) => share.expose_text().to_owned(),
            kms_core::custody::ShareForm::Encrypted { .. } => unreachable!("no keys given"),
        })
        .collect();
    for share in &shares[..2] {
        kms.unseal_with(&kms_core::hierarchy::share::Share::from_text(share))
            .unwrap();
    }
    let admin = kms.principal(subjects::ADMIN).unwrap().unwrap();
    let app = kms
        .add_principal(
            &admin,
            subjects::APP,
            Role::App {
                namespace: ns(subjects::APP_NS),
            },
        )
        .unwrap();
    kms.add_principal(
        &admin,
        subjects::OTHER_APP,
        Role::App {
            namespace: ns(subjects::OTHER_APP_NS),
        },
    )
    .unwrap();
    kms.add_principal(&admin, subjects::AUDITOR, Role::Auditor)
        .unwrap();

    let context: EncryptionContext = fixture_context().into_iter().collect();
    let mut made = Vec::new();
    let mut keys = Vec::new();
    for (purpose, proto, spec, name) in [
        (
            CorePurpose::Encrypt,
            Purpose::Encrypt,
            KeySpec::Sm4Gcm,
            "sm4-gcm",
        ),
        (CorePurpose::Sign, Purpose::Sign, KeySpec::Sm2, "sm2"),
        (
            CorePurpose::AsymmetricDecrypt,
            Purpose::AsymmetricDecrypt,
            KeySpec::Sm2,
            "sm2",
        ),
        (CorePurpose::Mac, Purpose::Mac, KeySpec::HmacSm3, "hmac-sm3"),
    ] {
        let info = kms
            .create_key(
                &admin,
                CreateKeyRequest {
                    namespace: ns(subjects::APP_NS),
                    purpose,
                    spec,
                    alias: None,
                    rotation_period: None,
                    description: format!("destroyed {name} (bad-input catalogue)"),
                },
            )
            .unwrap();
        let r = KeyRef::Id(info.id);
        let id = info.id.to_string();
        match purpose {
            CorePurpose::Encrypt => {
                let out = kms.encrypt(&app, &r, &context, SECRET).unwrap();
                made.push(Made::Blob {
                    ciphertext: out.ciphertext,
                    context: fixture_context(),
                    plaintext: SECRET.to_vec(),
                });
            }
            CorePurpose::Sign => {
                let params = SignatureParams::default();
                let out = kms.sign(&app, &r, Message::Raw(SECRET), &params).unwrap();
                made.push(Made::Signature {
                    key: id.clone(),
                    message: SECRET.to_vec(),
                    signature: out.signature,
                });
            }
            CorePurpose::AsymmetricDecrypt => {
                let public = kms.get_public_key(&app, &r, None).unwrap().public_key;
                made.push(Made::Sealed {
                    key: id.clone(),
                    ciphertext: encrypt_to_public_key(
                        &kms_core::policy::Policy::default()
                            .approve(kms_core::alg::Purpose::AsymmetricDecrypt, public.spec())
                            .unwrap(),
                        &public,
                        SECRET,
                    )
                    .unwrap(),
                    plaintext: SECRET.to_vec(),
                });
            }
            CorePurpose::Mac => {
                let out = kms.generate_mac(&app, &r, SECRET).unwrap();
                made.push(Made::Tag {
                    key: id.clone(),
                    data: SECRET.to_vec(),
                    tag: out.signature,
                });
            }
            // Not in the list above (the password shield's keys are online ones).
            CorePurpose::Password | CorePurpose::Pepper => unreachable!(),
            // The catalogue's destroyed keys are of the four purposes above.
            CorePurpose::Tokenize => unreachable!("no destroyed tokenize key"),
        }
        kms.schedule_destruction(&admin, &r, Some(7)).unwrap();
        keys.push(Key {
            id,
            purpose: proto,
            algorithm: name,
        });
    }
    clock.advance(8 * DAY);
    let destroyed = kms.destroy_due().unwrap();
    assert_eq!(destroyed.len(), 4, "every scheduled key is destroyed");
    Offline {
        shares,
        destroyed: keys.try_into().unwrap(),
        made,
    }
}

async fn create(w: &World, purpose: Purpose, algorithm: &'static str) -> Key {
    Key {
        id: w
            .create_key(subjects::APP_NS, purpose, algorithm)
            .await
            .key_id,
        purpose,
        algorithm,
    }
}

/// Makes an output with `key` (any purpose) and records it.
async fn make_with(w: &World, key: &Key, made: &mut Vec<Made>) {
    let mut c = w.app.crypto.clone();
    match key.purpose {
        Purpose::Encrypt => {
            let context = fixture_context();
            let ct = c
                .encrypt(enc(&key.id, SECRET, &context))
                .await
                .unwrap()
                .into_inner()
                .ciphertext;
            made.push(Made::Blob {
                ciphertext: ct,
                context,
                plaintext: SECRET.to_vec(),
            });
        }
        Purpose::Sign => {
            let sig = c
                .sign(sign_req(&key.id, SECRET, SigOpts::default()))
                .await
                .unwrap()
                .into_inner()
                .signature;
            made.push(Made::Signature {
                key: key.id.clone(),
                message: SECRET.to_vec(),
                signature: sig,
            });
        }
        Purpose::AsymmetricDecrypt => {
            let sealed = seal_to(w, &key.id, SECRET).await;
            made.push(Made::Sealed {
                key: key.id.clone(),
                ciphertext: sealed,
                plaintext: SECRET.to_vec(),
            });
        }
        Purpose::Mac => {
            let tag = c
                .generate_mac(mac_req(&key.id, SECRET))
                .await
                .unwrap()
                .into_inner()
                .mac;
            made.push(Made::Tag {
                key: key.id.clone(),
                data: SECRET.to_vec(),
                tag,
            });
        }
        // The password shield's keys make nothing re-checkable here; `bad_input.rs`'s
        // password class uses them.
        // The catalogue's own tokenize keys are made in `bad_input.rs` and used there.
        Purpose::Unspecified | Purpose::Password | Purpose::Pepper | Purpose::Tokenize => {
            unreachable!()
        }
    }
}

/// Encrypts `plaintext` to the public key of `key`, as a client would (SM2 GM/T 0009 DER or
/// RSA-OAEP-SHA-256).
pub(crate) async fn seal_to(w: &World, key: &str, plaintext: &[u8]) -> Vec<u8> {
    let der = w
        .app
        .crypto
        .clone()
        .get_public_key(public_key_req(key, None))
        .await
        .unwrap()
        .into_inner()
        .public_key_der;
    let public = PublicKey::from_spki_der(kms_core::policy::Policy::default(), &der).unwrap();
    encrypt_to_public_key(
        &kms_core::policy::Policy::default()
            .approve(kms_core::alg::Purpose::AsymmetricDecrypt, public.spec())
            .unwrap(),
        &public,
        plaintext,
    )
    .unwrap()
}

impl Fixture {
    /// The offline phase, then the real server on the same store, unsealed through the API, and
    /// the online keys.
    pub(crate) async fn build() -> Self {
        let pki = Arc::new(Pki::new());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let off = tokio::task::spawn_blocking(move || offline(&path))
            .await
            .unwrap();
        let settings = Settings {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            ..Settings::default()
        };
        let server = TestServer::start(&pki, dir.path(), settings.clone()).await;
        let w = World {
            admin: Clients::connect(&server, &pki, &pki.admin).await,
            app: Clients::connect(&server, &pki, &pki.app).await,
            other_app: Clients::connect(&server, &pki, &pki.other_app).await,
            auditor: Clients::connect(&server, &pki, &pki.auditor).await,
            stranger: Clients::connect(&server, &pki, &pki.stranger).await,
            custodian: Clients::connect(&server, &pki, &pki.custodian).await,
            pki,
            dir,
            server,
            settings,
            shares: off.shares,
            transport: kms_server::tls::Transport::Standard,
            over_tlcp: false,
        };
        w.unseal().await;

        let keys_healthy = [
            create(&w, Purpose::Encrypt, "sm4-gcm").await,
            create(&w, Purpose::Encrypt, "aes-256-gcm").await,
            create(&w, Purpose::Sign, "sm2").await,
            create(&w, Purpose::Sign, "rsa-2048").await,
            create(&w, Purpose::AsymmetricDecrypt, "sm2").await,
            create(&w, Purpose::AsymmetricDecrypt, "rsa-2048").await,
            create(&w, Purpose::Mac, "hmac-sm3").await,
            create(&w, Purpose::Mac, "hmac-sha256").await,
        ];
        let mut made = off.made;
        for k in &keys_healthy {
            make_with(&w, k, &mut made).await;
        }
        let mut by_state = Vec::new();
        for (state, op) in [
            ("disabled", KeyOp::Disable),
            ("pending destruction", KeyOp::ScheduleDestruction),
            ("compromised", KeyOp::Compromise),
        ] {
            let quad = [
                create(&w, Purpose::Encrypt, "sm4-gcm").await,
                create(&w, Purpose::Sign, "sm2").await,
                create(&w, Purpose::AsymmetricDecrypt, "sm2").await,
                create(&w, Purpose::Mac, "hmac-sm3").await,
            ];
            for k in &quad {
                make_with(&w, k, &mut made).await;
                w.admin_key_op(op, &k.id).await;
            }
            by_state.push((state, quad));
        }
        by_state.push(("destroyed", off.destroyed));
        let [
            sm4,
            aes,
            sm2_sign,
            rsa_sign,
            sm2_asym,
            rsa_asym,
            hmac_sm3,
            hmac_sha256,
        ] = keys_healthy;
        let blob = w
            .app
            .crypto
            .clone()
            .encrypt(enc(&sm4.id, SECRET, &fixture_context()))
            .await
            .unwrap()
            .into_inner()
            .ciphertext;
        let password = create(&w, Purpose::Password, "sm2").await;
        let pepper = create(&w, Purpose::Pepper, "hmac-sm3").await;
        let sm2_sealed = seal_to(&w, &sm2_asym.id, SECRET).await;
        let rsa_sealed = seal_to(&w, &rsa_asym.id, SECRET).await;
        Self {
            keys: Keys {
                sm4,
                aes,
                sm2_sign,
                rsa_sign,
                sm2_asym,
                rsa_asym,
                hmac_sm3,
                hmac_sha256,
                password,
                pepper,
                by_state,
            },
            made,
            blob,
            sm2_sealed,
            rsa_sealed,
            w,
        }
    }

    /// A good request still succeeds on the app's long-lived connection and on a fresh one.
    pub(crate) async fn still_serves(&self, after: &str) {
        let mut c = self.w.app.crypto.clone();
        let back = c
            .decrypt(dec(&self.blob, &fixture_context()))
            .await
            .unwrap_or_else(|s| panic!("after {after}: the app's decrypt failed: {s:?}"))
            .into_inner();
        assert_eq!(back.plaintext, SECRET, "after {after}");
        let fresh = self.w.connect(&self.w.pki.app).await;
        let out = fresh
            .crypto
            .clone()
            .encrypt(enc(&self.keys.sm4.id, b"still serving", &ctx(&[])))
            .await
            .unwrap_or_else(|s| {
                panic!("after {after}: a fresh connection's encrypt failed: {s:?}")
            });
        assert_eq!(out.into_inner().key_id, self.keys.sm4.id, "after {after}");
    }

    /// The inventory as the API shows it: every key listed (auditor) and described (admin), and
    /// the outcome of re-checking everything made before the run.
    pub(crate) async fn snapshot(&self) -> Snapshot {
        let mut listed = self
            .w
            .auditor
            .keys
            .clone()
            .list_keys(v1::ListKeysRequest::default())
            .await
            .unwrap()
            .into_inner()
            .keys;
        listed.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        let mut described = Vec::new();
        for k in &listed {
            let r = self
                .w
                .admin
                .keys
                .clone()
                .describe_key(v1::KeyRequest {
                    key: k.key_id.clone(),
                })
                .await;
            described.push(match r {
                Ok(r) => format!("{:?}", r.into_inner().key),
                Err(s) => format!("refused {:?}", s.code()),
            });
        }
        let mut rechecked = Vec::new();
        let mut c = self.w.app.crypto.clone();
        for m in &self.made {
            rechecked.push(match m {
                Made::Blob {
                    ciphertext,
                    context,
                    plaintext,
                } => match c.decrypt(dec(ciphertext, context)).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        assert_eq!(&r.plaintext, plaintext);
                        format!(
                            "opened {} v{} compromised={}",
                            r.key_id, r.key_version, r.key_compromised
                        )
                    }
                    Err(s) => format!("refused {:?}", s.code()),
                },
                Made::Signature {
                    key,
                    message,
                    signature,
                } => match c
                    .verify(verify_req(
                        key,
                        message,
                        signature,
                        SigOpts::default(),
                        None,
                    ))
                    .await
                {
                    Ok(r) => format!("verified {key} valid={}", r.into_inner().valid),
                    Err(s) => format!("refused {:?}", s.code()),
                },
                Made::Tag { key, data, tag } => {
                    match c.verify_mac(verify_mac_req(key, data, tag, None)).await {
                        Ok(r) => format!("mac {key} valid={}", r.into_inner().valid),
                        Err(s) => format!("refused {:?}", s.code()),
                    }
                }
                Made::Sealed {
                    key,
                    ciphertext,
                    plaintext,
                } => match c.asymmetric_decrypt(asym_req(key, ciphertext, None)).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        assert_eq!(&r.plaintext, plaintext);
                        format!("unsealed {key} compromised={}", r.key_compromised)
                    }
                    Err(s) => format!("refused {:?}", s.code()),
                },
            });
        }
        Snapshot {
            listed,
            described,
            rechecked,
        }
    }
}

/// What the inventory looked like.
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) listed: Vec<v1::KeyMetadata>,
    pub(crate) described: Vec<String>,
    pub(crate) rechecked: Vec<String>,
}

impl Snapshot {
    /// The snapshot is worth comparing: every kind of key is there, and what should open opens.
    pub(crate) fn assert_meaningful(&self, fx: &Fixture) {
        let count = |state: v1::KeyState| {
            self.listed
                .iter()
                .filter(|k| k.state == i32::from(state))
                .count()
        };
        assert!(count(v1::KeyState::Enabled) >= 8, "{:#?}", self.listed);
        for state in [
            v1::KeyState::Disabled,
            v1::KeyState::PendingDestruction,
            v1::KeyState::Compromised,
            v1::KeyState::Destroyed,
        ] {
            assert_eq!(count(state), 4, "{state:?}: {:#?}", self.listed);
        }
        let opened = self
            .rechecked
            .iter()
            .filter(|r| !r.starts_with("refused") && !r.contains("valid=false"))
            .count();
        // Healthy (8) and compromised (4) keys open, verify and unseal what they made; the
        // disabled, pending and destroyed ones refuse.
        assert_eq!(opened, 8 + 4, "{:#?}", self.rechecked);
        let refused = self
            .rechecked
            .iter()
            .filter(|r| **r == format!("refused {:?}", Code::FailedPrecondition))
            .count();
        assert_eq!(refused, 12, "{:#?}", self.rechecked);
        assert_eq!(self.rechecked.len(), fx.made.len());
    }
}
