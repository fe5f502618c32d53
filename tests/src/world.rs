//! An initialised, unsealed server with one principal of every role, and typed clients for each.
//!
//! Setup goes through the API only: `System.Init` by the admin's certificate (the caller becomes
//! the first admin), `System.Unseal` one share per call, `KeyAdmin.AddPrincipal` for the rest.

use std::sync::Arc;

use kms_proto::v1::{
    self, audit_client::AuditClient, crypto_batch_client::CryptoBatchClient,
    crypto_client::CryptoClient, key_admin_client::KeyAdminClient,
    password_shield_client::PasswordShieldClient,
    request_verification_client::RequestVerificationClient, system_client::SystemClient,
    tokenization_client::TokenizationClient,
};
use kms_server::Settings;
use kms_server::tls::Transport;
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::net;
use crate::pki::{Identity, Pki, subjects};
use crate::server::TestServer;

/// Shares made at init, and how many unseal.
pub const SHARES: u32 = 3;
pub const THRESHOLD: u32 = 2;

/// Every service, over one mutual-TLS channel.
#[derive(Clone)]
pub struct Clients {
    pub crypto: CryptoClient<Channel>,
    pub batch: CryptoBatchClient<Channel>,
    pub keys: KeyAdminClient<Channel>,
    pub system: SystemClient<Channel>,
    pub audit: AuditClient<Channel>,
    pub password: PasswordShieldClient<Channel>,
    pub tokens: TokenizationClient<Channel>,
    pub requests: RequestVerificationClient<Channel>,
}

impl Clients {
    #[must_use]
    pub fn new(channel: Channel) -> Self {
        Self {
            crypto: CryptoClient::new(channel.clone()),
            batch: CryptoBatchClient::new(channel.clone()),
            keys: KeyAdminClient::new(channel.clone()),
            system: SystemClient::new(channel.clone()),
            password: PasswordShieldClient::new(channel.clone()),
            tokens: TokenizationClient::new(channel.clone()),
            requests: RequestVerificationClient::new(channel.clone()),
            audit: AuditClient::new(channel),
        }
    }

    /// Connects as `identity`, trusting `pki`'s CA.
    pub async fn connect(server: &TestServer, pki: &Pki, identity: &Identity) -> Self {
        let config = net::client_config(pki.ca.cert_pem(), Some(identity), net::MODERN);
        Self::new(net::channel(server.addr, config).await.unwrap())
    }

    /// Connects as caller `who` (admin, app, …) over TLCP with its SM2 double certificate.
    pub async fn connect_tlcp(server: &TestServer, pki: &Pki, who: &str) -> Self {
        let config = net::tlcp_client_config(
            pki.gm.ca_pem(),
            pki.gm.identity(who),
            &pki.gm.enc[who],
            None,
        );
        let addr = server.tlcp_addr.expect("this server has no TLCP listener");
        Self::new(net::tlcp_channel(addr, config).await.unwrap())
    }

    /// Connects as `identity` over RFC 8998 (an SM2 identity), trusting `pki`'s SM2 CA.
    pub async fn connect_gm(server: &TestServer, pki: &Pki, identity: &Identity) -> Self {
        let config = net::gm_client_config(pki.gm.ca_pem(), Some(identity));
        Self::new(net::channel(server.addr, config).await.unwrap())
    }
}

/// A server and its callers.
pub struct World {
    pub pki: Arc<Pki>,
    /// The sled store's directory (kept across restarts).
    pub dir: TempDir,
    pub server: TestServer,
    pub settings: Settings,
    /// The unseal shares `Init` returned.
    pub shares: Vec<String>,
    pub admin: Clients,
    /// An app in namespace [`subjects::APP_NS`].
    pub app: Clients,
    /// An app in namespace [`subjects::OTHER_APP_NS`].
    pub other_app: Clients,
    pub auditor: Clients,
    /// A certificate from the right CA whose subject was never registered.
    pub stranger: Clients,
    /// The second share holder (a custodian): [`World::unseal`] gives the admin's share and
    /// this one's.
    pub custodian: Clients,
    /// What the server speaks and the clients use: standard TLS with P-256 certificates, or
    /// RFC 8998 only with SM2 certificates (the KMS then runs the gm-only policy).
    pub transport: Transport,
    /// Whether the callers reach the server over its TLCP listener (double SM2 certificates)
    /// instead of its TLS port.
    pub over_tlcp: bool,
}

/// The five callers' clients over `transport`, or over TLCP.
async fn callers(
    server: &TestServer,
    pki: &Pki,
    transport: Transport,
    over_tlcp: bool,
) -> (Clients, Clients, Clients, Clients, Clients, Clients) {
    let connect = |id: &'static str| async move {
        match (over_tlcp, transport) {
            (true, _) => Clients::connect_tlcp(server, pki, id).await,
            (false, Transport::Standard) => Clients::connect(server, pki, pki.identity(id)).await,
            (false, Transport::GmOnly) => {
                Clients::connect_gm(server, pki, pki.gm.identity(id)).await
            }
        }
    };
    (
        connect("admin").await,
        connect("app").await,
        connect("other_app").await,
        connect("auditor").await,
        connect("stranger").await,
        connect("custodian").await,
    )
}

/// The share holders the worlds name at init, in share order: the admin, then two custodians.
#[must_use]
pub fn holders() -> Vec<v1::ShareHolder> {
    [subjects::ADMIN, subjects::CUSTODIAN, subjects::CUSTODIAN_2]
        .into_iter()
        .map(|s| v1::ShareHolder {
            subject: s.to_owned(),
            public_key_pem: String::new(),
        })
        .collect()
}

/// Gives the first two of `shares` (a 2-of-3 set named by [`holders`]), each by its holder.
pub async fn unseal_by_holders(shares: &[String], admin: &Clients, custodian: &Clients) {
    for (i, (share, holder)) in shares.iter().zip([admin, custodian]).enumerate() {
        let r = holder
            .system
            .clone()
            .unseal(v1::UnsealRequest {
                share: share.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.sealed, i == 0, "after share {}: {r:?}", i + 1);
    }
}

/// The plaintext shares of an init that named holders without keys, in holder order.
#[must_use]
pub fn plain_shares(init: &v1::InitResponse) -> Vec<String> {
    init.issued.iter().map(|s| s.share.clone()).collect()
}

impl World {
    /// A world with the default settings.
    pub async fn start() -> Self {
        Self::start_with(Settings::default()).await
    }

    /// A fresh store and PKI; init (admin), unseal, and register the app, the other app and the
    /// auditor.
    pub async fn start_with(settings: Settings) -> Self {
        Self::start_over(settings, Transport::Standard).await
    }

    /// As [`World::start_with`], over `transport`.
    pub async fn start_over(settings: Settings, transport: Transport) -> Self {
        Self::start_via(settings, transport, false).await
    }

    /// As [`World::start_over`], the callers reaching the server over TLCP when `over_tlcp`.
    pub async fn start_via(settings: Settings, transport: Transport, over_tlcp: bool) -> Self {
        let pki = Arc::new(Pki::new());
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_over(&pki, dir.path(), settings.clone(), transport).await;
        let (admin, app, other_app, auditor, stranger, custodian) =
            callers(&server, &pki, transport, over_tlcp).await;

        let init = admin
            .system
            .clone()
            .init(v1::InitRequest {
                shares: SHARES,
                threshold: THRESHOLD,
                holders: holders(),
                ..v1::InitRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(init.admin_subject, subjects::ADMIN);
        assert_eq!(init.issued.len(), SHARES as usize);

        let world = Self {
            app,
            other_app,
            auditor,
            stranger,
            custodian,
            admin,
            pki,
            dir,
            server,
            settings,
            shares: plain_shares(&init),
            transport,
            over_tlcp,
        };
        world.unseal().await;
        for (subject, role, ns) in [
            (subjects::APP, "app", subjects::APP_NS),
            (subjects::OTHER_APP, "app", subjects::OTHER_APP_NS),
            (subjects::AUDITOR, "auditor", ""),
        ] {
            world
                .admin
                .keys
                .clone()
                .add_principal(v1::AddPrincipalRequest {
                    subject: subject.to_owned(),
                    role: role.to_owned(),
                    namespace: ns.to_owned(),
                })
                .await
                .unwrap();
        }
        world
    }

    /// Gives threshold shares, one per call, each by its holder: the admin, then the custodian.
    pub async fn unseal(&self) {
        unseal_by_holders(&self.shares, &self.admin, &self.custodian).await;
    }

    /// Stops the server and starts a new one on the same store (sealed, as after any restart),
    /// reconnecting every client.
    pub async fn restart(self) -> Self {
        let Self {
            pki,
            dir,
            server,
            settings,
            shares,
            admin,
            app,
            other_app,
            auditor,
            stranger,
            custodian,
            transport,
            over_tlcp,
        } = self;
        drop((admin, app, other_app, auditor, stranger, custodian));
        server.stop().await.unwrap();
        let server = TestServer::start_over(&pki, dir.path(), settings.clone(), transport).await;
        let (admin, app, other_app, auditor, stranger, custodian) =
            callers(&server, &pki, transport, over_tlcp).await;
        Self {
            admin,
            app,
            other_app,
            auditor,
            stranger,
            custodian,
            pki,
            dir,
            server,
            settings,
            shares,
            transport,
            over_tlcp,
        }
    }

    /// Clients for any identity (e.g. one of the odd certificates), over the world's transport.
    pub async fn connect(&self, identity: &Identity) -> Clients {
        match self.transport {
            Transport::Standard => Clients::connect(&self.server, &self.pki, identity).await,
            Transport::GmOnly => Clients::connect_gm(&self.server, &self.pki, identity).await,
        }
    }

    /// Creates a key as the admin.
    pub async fn create_key(
        &self,
        namespace: &str,
        purpose: v1::Purpose,
        algorithm: &str,
    ) -> v1::KeyMetadata {
        self.create_key_with_alias(namespace, purpose, algorithm, "")
            .await
    }

    pub async fn create_key_with_alias(
        &self,
        namespace: &str,
        purpose: v1::Purpose,
        algorithm: &str,
        alias: &str,
    ) -> v1::KeyMetadata {
        self.admin
            .keys
            .clone()
            .create_key(v1::CreateKeyRequest {
                namespace: namespace.to_owned(),
                purpose: purpose.into(),
                algorithm: algorithm.to_owned(),
                alias: alias.to_owned(),
                rotation_period_seconds: None,
                description: String::new(),
                origin: String::new(),
                exportable: false,
            })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap()
    }

    /// Runs an admin key operation (`KeyRequest`) and returns the key's new metadata.
    pub async fn admin_key_op(&self, op: KeyOp, key_id: &str) -> v1::KeyMetadata {
        let mut keys = self.admin.keys.clone();
        let req = v1::KeyRequest {
            key: key_id.to_owned(),
        };
        let r = match op {
            KeyOp::Rotate => keys.rotate_key(req).await,
            KeyOp::Enable => keys.enable_key(req).await,
            KeyOp::Disable => keys.disable_key(req).await,
            KeyOp::Compromise => keys.mark_compromised(req).await,
            KeyOp::CancelDestruction => keys.cancel_key_destruction(req).await,
            KeyOp::ScheduleDestruction => {
                keys.schedule_key_destruction(v1::ScheduleKeyDestructionRequest {
                    key: key_id.to_owned(),
                    pending_days: 7,
                })
                .await
            }
        };
        r.unwrap().into_inner().key.unwrap()
    }

    /// Stops the server.
    pub async fn stop(self) {
        let Self {
            server,
            admin,
            app,
            other_app,
            auditor,
            stranger,
            ..
        } = self;
        drop((admin, app, other_app, auditor, stranger));
        server.stop().await.unwrap();
    }
}

/// Admin operations on one key.
#[derive(Clone, Copy, Debug)]
pub enum KeyOp {
    Rotate,
    Enable,
    Disable,
    Compromise,
    ScheduleDestruction,
    CancelDestruction,
}
