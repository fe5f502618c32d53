//! The server side of the full TLCP handshake, client authentication required:
//!
//! ```text
//! ClientHello              -->
//!                          <--  ServerHello, Certificate(sign, enc, chain), ServerKeyExchange,
//!                               CertificateRequest, ServerHelloDone
//! Certificate(sign, enc, chain), ClientKeyExchange, CertificateVerify,
//! [ChangeCipherSpec], Finished  -->
//!                          <--  [ChangeCipherSpec], Finished
//! ```
//!
//! ServerKeyExchange is always sent: for ECC suites it is the signature over
//! `client_random ‖ server_random ‖ enc certificate (24-bit length-prefixed)`, for ECDHE over
//! `client_random ‖ server_random ‖ ECDHE parameters`.

use kms_gmtls::x509::Purpose;
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::codec::{Reader, put_vec16, put_vec24};
use crate::config::{TlcpServerConfig, verify_peer};
use crate::conn::{Conn, hs};
use crate::error::{CertRole, TlcpError};
use crate::kx::{self, Agreement};
use crate::messages::{self, ClientHello, ServerHello};
use crate::prf::{self, Sender};
use crate::record::KeyBlock;
use crate::suite::CipherSuite;

/// What the handshake agreed on.
pub(crate) struct Negotiated {
    pub(crate) suite: CipherSuite,
    pub(crate) peer_certificates: Vec<Vec<u8>>,
    pub(crate) alpn: Option<Vec<u8>>,
}

pub(crate) async fn handshake<IO: AsyncRead + AsyncWrite + Unpin>(
    config: &TlcpServerConfig,
    conn: &mut Conn<IO>,
) -> Result<Negotiated, TlcpError> {
    let identity = &config.identity;
    let msg = conn.expect(hs::CLIENT_HELLO).await?;
    conn.hash(&msg.raw);
    let hello = ClientHello::parse(msg.body())?;
    if hello.version.to_be_bytes() != crate::record::VERSION {
        return Err(TlcpError::NotTlcp(hello.version));
    }
    let suite = config
        .suites
        .iter()
        .copied()
        .find(|s| hello.suites.contains(&s.id()))
        .ok_or_else(|| TlcpError::NoSharedSuite {
            offered: hello.suites.clone(),
        })?;
    let alpn = config
        .alpn_protocols
        .iter()
        .find(|p| hello.alpn.contains(p))
        .cloned();
    let client_random = hello.random;
    let server_random = messages::new_random()?;

    let mut out = Vec::new();
    let body = ServerHello::encode(&server_random, suite.id(), alpn.as_deref())?;
    conn.queue_message(hs::SERVER_HELLO, &body, &mut out)?;
    conn.queue_message(
        hs::CERTIFICATE,
        &messages::encode_certificates(&identity.chain)?,
        &mut out,
    )?;
    let ephemeral = if suite.is_ecdhe() {
        let eph = kx::new_ephemeral()?;
        let params = messages::encode_ecdhe_params(&eph.public_key())?;
        let sig = kx::sign(
            &identity.sign_key,
            &[&client_random[..], &server_random, &params].concat(),
        )?;
        let mut body = params;
        put_vec16(&mut body, &sig)?;
        conn.queue_message(hs::SERVER_KEY_EXCHANGE, &body, &mut out)?;
        Some(eph)
    } else {
        let mut tbs = [&client_random[..], &server_random].concat();
        put_vec24(&mut tbs, identity.enc_cert())?;
        let mut body = Vec::new();
        put_vec16(&mut body, &kx::sign(&identity.sign_key, &tbs)?)?;
        conn.queue_message(hs::SERVER_KEY_EXCHANGE, &body, &mut out)?;
        None
    };
    let request = messages::encode_certificate_request(&config.client_ca_names)?;
    conn.queue_message(hs::CERTIFICATE_REQUEST, &request, &mut out)?;
    conn.queue_message(hs::SERVER_HELLO_DONE, &[], &mut out)?;
    conn.send(&mut out).await?;

    // The client's Certificate: sign, enc, then its chain; both must chain to a client CA.
    let msg = conn.expect(hs::CERTIFICATE).await?;
    conn.hash(&msg.raw);
    let peer_certificates = messages::parse_certificates(msg.body())?;
    let (client_sign, client_enc) = verify_peer(
        &peer_certificates,
        &config.client_anchors,
        Purpose::ClientAuth,
        (CertRole::ClientSign, CertRole::ClientEnc),
    )?;

    let msg = conn.expect(hs::CLIENT_KEY_EXCHANGE).await?;
    conn.hash(&msg.raw);
    let mut r = Reader::new(msg.body(), "ClientKeyExchange");
    let pre_master = match &ephemeral {
        Some(eph) => {
            let peer_ephemeral = messages::parse_ecdhe_params(&mut r)?;
            r.finish()?;
            Agreement {
                initiator: true,
                own_static: &identity.enc_key,
                own_ephemeral: eph,
                peer_static: &client_enc,
                peer_ephemeral: &peer_ephemeral,
            }
            .derive()?
        }
        None => {
            let ciphertext = r.vec16()?;
            r.finish()?;
            kx::decrypt_pre_master(&identity.enc_key, ciphertext)?
        }
    };
    drop(ephemeral);

    // CertificateVerify: SM2 over SM3(handshake messages so far), default ID.
    let transcript = conn.transcript_hash();
    let msg = conn.expect(hs::CERTIFICATE_VERIFY).await?;
    let mut r = Reader::new(msg.body(), "CertificateVerify");
    let sig = r.vec16()?;
    r.finish()?;
    kx::verify(&client_sign, &transcript, sig, "CertificateVerify")?;
    conn.hash(&msg.raw);

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

    conn.read_change_cipher_spec(keys.client).await?;
    let expected = prf::verify_data(&master, Sender::Client, &conn.transcript_hash());
    let msg = conn.expect(hs::FINISHED).await?;
    if !bool::from(msg.body().ct_eq(&expected)) {
        return Err(TlcpError::BadFinished);
    }
    conn.hash(&msg.raw);

    conn.queue_change_cipher_spec(keys.server, &mut out)?;
    let finished = prf::verify_data(&master, Sender::Server, &conn.transcript_hash());
    conn.queue_message(hs::FINISHED, &finished, &mut out)?;
    conn.send(&mut out).await?;
    Ok(Negotiated {
        suite,
        peer_certificates,
        alpn,
    })
}
