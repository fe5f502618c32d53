//! The client side of the full TLCP handshake (the mirror of [`crate::server`]): verifies the
//! server's signing and encryption certificates and its ServerKeyExchange signature, and
//! authenticates with its own double certificate when the server asks (ECDHE always needs it).

use kms_gmtls::x509::Purpose;
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::codec::{Reader, put_vec16, put_vec24};
use crate::config::{TlcpClientConfig, verify_peer};
use crate::conn::{Conn, hs, unexpected};
use crate::error::{CertRole, TlcpError};
use crate::kx::{self, Agreement};
use crate::messages::{self, ClientHello, ServerHello};
use crate::prf::{self, Sender};
use crate::record::KeyBlock;
use crate::server::Negotiated;
use crate::suite::CipherSuite;

pub(crate) async fn handshake<IO: AsyncRead + AsyncWrite + Unpin>(
    config: &TlcpClientConfig,
    conn: &mut Conn<IO>,
) -> Result<Negotiated, TlcpError> {
    let client_random = messages::new_random()?;
    let offered: Vec<u16> = config.suites.iter().map(|s| s.id()).collect();
    let mut out = Vec::new();
    let hello = ClientHello::encode(&client_random, &offered, &config.alpn_protocols)?;
    conn.queue_message(hs::CLIENT_HELLO, &hello, &mut out)?;
    conn.send(&mut out).await?;

    let msg = conn.expect(hs::SERVER_HELLO).await?;
    conn.hash(&msg.raw);
    let hello = ServerHello::parse(msg.body())?;
    if hello.version.to_be_bytes() != crate::record::VERSION {
        return Err(TlcpError::NotTlcp(hello.version));
    }
    let suite = CipherSuite::from_id(hello.suite)
        .filter(|s| config.suites.contains(s))
        .ok_or(TlcpError::NoSharedSuite {
            offered: vec![hello.suite],
        })?;
    if let Some(p) = &hello.alpn
        && !config.alpn_protocols.contains(p)
    {
        return Err(TlcpError::Decode("ServerHello (ALPN protocol not offered)"));
    }
    let server_random = hello.random;

    let msg = conn.expect(hs::CERTIFICATE).await?;
    conn.hash(&msg.raw);
    let server_certificates = messages::parse_certificates(msg.body())?;
    let (server_sign, server_enc) = verify_peer(
        &server_certificates,
        &config.server_anchors,
        Purpose::ServerAuth,
        (CertRole::ServerSign, CertRole::ServerEnc),
    )?;

    let msg = conn.expect(hs::SERVER_KEY_EXCHANGE).await?;
    conn.hash(&msg.raw);
    let mut r = Reader::new(msg.body(), "ServerKeyExchange");
    let server_ephemeral = if suite.is_ecdhe() {
        let point = messages::parse_ecdhe_params(&mut r)?;
        let params = &msg.body()[..msg.body().len() - r.remaining()];
        let sig = r.vec16()?;
        r.finish()?;
        let tbs = [&client_random[..], &server_random, params].concat();
        kx::verify(&server_sign, &tbs, sig, "ServerKeyExchange")?;
        Some(point)
    } else {
        let sig = r.vec16()?;
        r.finish()?;
        let mut tbs = [&client_random[..], &server_random].concat();
        put_vec24(&mut tbs, &server_certificates[1])?;
        kx::verify(&server_sign, &tbs, sig, "ServerKeyExchange")?;
        None
    };

    let mut msg = conn
        .next_message("CertificateRequest or ServerHelloDone")
        .await?;
    let requested = msg.typ == hs::CERTIFICATE_REQUEST;
    if requested {
        conn.hash(&msg.raw);
        messages::parse_certificate_request(msg.body())?;
        msg = conn.next_message("ServerHelloDone").await?;
    }
    if msg.typ != hs::SERVER_HELLO_DONE {
        return Err(unexpected("ServerHelloDone", msg.typ));
    }
    if !msg.body().is_empty() {
        return Err(TlcpError::Decode("ServerHelloDone"));
    }
    conn.hash(&msg.raw);

    let identity = match (&config.identity, requested || suite.is_ecdhe()) {
        (Some(id), true) => Some(id),
        (None, true) => {
            return Err(TlcpError::Config(
                "the server asks for a client certificate (or an ECDHE suite was chosen) and \
                 none is configured"
                    .into(),
            ));
        }
        (_, false) => None,
    };
    if let Some(id) = identity {
        conn.queue_message(
            hs::CERTIFICATE,
            &messages::encode_certificates(&id.chain)?,
            &mut out,
        )?;
    }

    let (pre_master, cke) = match (&server_ephemeral, identity) {
        (Some(server_eph), Some(id)) => {
            let eph = kx::new_ephemeral()?;
            let pms = Agreement {
                initiator: false,
                own_static: &id.enc_key,
                own_ephemeral: &eph,
                peer_static: &server_enc,
                peer_ephemeral: server_eph,
            }
            .derive()?;
            (pms, messages::encode_ecdhe_params(&eph.public_key())?)
        }
        (Some(_), None) => return Err(TlcpError::Config("ECDHE needs a client identity".into())),
        (None, _) => {
            let pms = kx::new_pre_master()?;
            let mut body = Vec::new();
            put_vec16(
                &mut body,
                &kx::encrypt_pre_master(&server_enc, pms.as_slice())?,
            )?;
            (pms, body)
        }
    };
    conn.queue_message(hs::CLIENT_KEY_EXCHANGE, &cke, &mut out)?;

    if let Some(id) = identity {
        let sig = kx::sign(&id.sign_key, &conn.transcript_hash())?;
        let mut body = Vec::new();
        put_vec16(&mut body, &sig)?;
        conn.queue_message(hs::CERTIFICATE_VERIFY, &body, &mut out)?;
    }

    let master = prf::master_secret(pre_master.as_slice(), &client_random, &server_random);
    drop(pre_master);
    let block = prf::key_block(
        &master,
        &client_random,
        &server_random,
        KeyBlock::len(suite),
    );
    let keys = KeyBlock::new(suite, &block)?;
    drop(block);

    conn.queue_change_cipher_spec(keys.client, &mut out)?;
    let finished = prf::verify_data(&master, Sender::Client, &conn.transcript_hash());
    conn.queue_message(hs::FINISHED, &finished, &mut out)?;
    conn.send(&mut out).await?;

    conn.read_change_cipher_spec(keys.server).await?;
    let expected = prf::verify_data(&master, Sender::Server, &conn.transcript_hash());
    let msg = conn.expect(hs::FINISHED).await?;
    if !bool::from(msg.body().ct_eq(&expected)) {
        return Err(TlcpError::BadFinished);
    }
    conn.hash(&msg.raw);
    Ok(Negotiated {
        suite,
        peer_certificates: server_certificates,
        alpn: hello.alpn,
    })
}
