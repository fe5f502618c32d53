//! Records and handshake messages over the transport during the handshake: reading whole
//! records, reassembling handshake messages across (or splitting them out of) records, the
//! SM3 transcript, ChangeCipherSpec and alerts.

use sm3::{Digest as _, Sm3};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::alert;
use crate::error::TlcpError;
use crate::record::{self, DirectionKeys};

/// Largest handshake message accepted (certificate chains included).
const MAX_HANDSHAKE: usize = 1 << 16;

/// One handshake message as received: its type, body, and exact bytes (for the transcript).
pub(crate) struct Message {
    pub(crate) typ: u8,
    pub(crate) raw: Vec<u8>,
}

impl Message {
    pub(crate) fn body(&self) -> &[u8] {
        self.raw.get(4..).unwrap_or_default()
    }
}

/// Handshake message types (GB/T 38636-2020 §6.4.5.1).
pub(crate) mod hs {
    pub(crate) const CLIENT_HELLO: u8 = 1;
    pub(crate) const SERVER_HELLO: u8 = 2;
    pub(crate) const CERTIFICATE: u8 = 11;
    pub(crate) const SERVER_KEY_EXCHANGE: u8 = 12;
    pub(crate) const CERTIFICATE_REQUEST: u8 = 13;
    pub(crate) const SERVER_HELLO_DONE: u8 = 14;
    pub(crate) const CERTIFICATE_VERIFY: u8 = 15;
    pub(crate) const CLIENT_KEY_EXCHANGE: u8 = 16;
    pub(crate) const FINISHED: u8 = 20;

    pub(crate) fn name(typ: u8) -> &'static str {
        match typ {
            0 => "HelloRequest",
            CLIENT_HELLO => "ClientHello",
            SERVER_HELLO => "ServerHello",
            CERTIFICATE => "Certificate",
            SERVER_KEY_EXCHANGE => "ServerKeyExchange",
            CERTIFICATE_REQUEST => "CertificateRequest",
            SERVER_HELLO_DONE => "ServerHelloDone",
            CERTIFICATE_VERIFY => "CertificateVerify",
            CLIENT_KEY_EXCHANGE => "ClientKeyExchange",
            FINISHED => "Finished",
            _ => "unknown handshake message",
        }
    }
}

/// A connection while the handshake runs.
pub(crate) struct Conn<IO> {
    pub(crate) io: IO,
    /// Bytes read from the transport and not yet consumed as records.
    pub(crate) rbuf: Vec<u8>,
    /// Handshake bytes of records read and not yet consumed as messages.
    hs_buf: Vec<u8>,
    pub(crate) read_keys: Option<DirectionKeys>,
    pub(crate) write_keys: Option<DirectionKeys>,
    transcript: Sm3,
    /// Set once a record with a version other than TLCP's was refused, so the alert we send
    /// back does not pretend to be TLCP to a TLS peer (cosmetic).
    first_record: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    pub(crate) fn new(io: IO) -> Self {
        Self {
            io,
            rbuf: Vec::new(),
            hs_buf: Vec::new(),
            read_keys: None,
            write_keys: None,
            transcript: Sm3::new(),
            first_record: true,
        }
    }

    /// Adds a handshake message to the transcript.
    pub(crate) fn hash(&mut self, raw: &[u8]) {
        self.transcript.update(raw);
    }

    /// The SM3 hash of the handshake messages hashed so far.
    pub(crate) fn transcript_hash(&self) -> [u8; 32] {
        self.transcript.clone().finalize().into()
    }

    /// Reads one whole record: (type, plaintext fragment).
    async fn read_record(&mut self) -> Result<(u8, Vec<u8>), TlcpError> {
        loop {
            if let Some((typ, version, len)) = record::parse_header(&self.rbuf)? {
                if version.to_be_bytes() != record::VERSION {
                    return Err(TlcpError::NotTlcp(version));
                }
                if self.rbuf.len() >= record::HEADER_LEN + len {
                    let mut body = self.rbuf[record::HEADER_LEN..record::HEADER_LEN + len].to_vec();
                    self.rbuf.drain(..record::HEADER_LEN + len);
                    if let Some(keys) = &mut self.read_keys {
                        keys.open(typ, &mut body)?;
                    } else if len > record::MAX_PLAINTEXT {
                        return Err(TlcpError::RecordOverflow(len));
                    }
                    self.first_record = false;
                    return Ok((typ, body));
                }
            } else if self.first_record && self.rbuf.first().is_some_and(|b| b & 0x80 != 0) {
                // An SSL 2.0-style hello: nothing TLCP.
                return Err(TlcpError::NotTlcp(0x0002));
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Err(TlcpError::UnexpectedEof);
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next handshake message (not yet hashed: call [`Self::hash`]).
    pub(crate) async fn next_message(
        &mut self,
        expected: &'static str,
    ) -> Result<Message, TlcpError> {
        loop {
            if self.hs_buf.len() >= 4 {
                let len = usize::from(self.hs_buf[1]) << 16
                    | usize::from(self.hs_buf[2]) << 8
                    | usize::from(self.hs_buf[3]);
                if len > MAX_HANDSHAKE {
                    return Err(TlcpError::Decode("handshake message (too long)"));
                }
                if self.hs_buf.len() >= 4 + len {
                    let raw: Vec<u8> = self.hs_buf.drain(..4 + len).collect();
                    return Ok(Message { typ: raw[0], raw });
                }
            }
            let (typ, body) = self.read_record().await?;
            match typ {
                record::HANDSHAKE if !body.is_empty() => self.hs_buf.extend_from_slice(&body),
                record::ALERT => return Err(received_alert(&body)),
                other => {
                    return Err(TlcpError::UnexpectedMessage {
                        expected,
                        got: content_type_name(other).into(),
                    });
                }
            }
        }
    }

    /// The next message, which must be of type `typ`; hashed into the transcript.
    pub(crate) async fn expect(&mut self, typ: u8) -> Result<Message, TlcpError> {
        let msg = self.next_message(hs::name(typ)).await?;
        if msg.typ != typ {
            return Err(unexpected(hs::name(typ), msg.typ));
        }
        Ok(msg)
    }

    /// Reads the peer's ChangeCipherSpec and switches the read direction to `keys`.
    pub(crate) async fn read_change_cipher_spec(
        &mut self,
        keys: DirectionKeys,
    ) -> Result<(), TlcpError> {
        if !self.hs_buf.is_empty() {
            return Err(TlcpError::UnexpectedMessage {
                expected: "ChangeCipherSpec",
                got: "a partial handshake message".into(),
            });
        }
        let (typ, body) = self.read_record().await?;
        match typ {
            record::CHANGE_CIPHER_SPEC if body == [1] => {
                self.read_keys = Some(keys);
                Ok(())
            }
            record::CHANGE_CIPHER_SPEC => Err(TlcpError::Decode("ChangeCipherSpec")),
            record::ALERT => Err(received_alert(&body)),
            record::HANDSHAKE => Err(unexpected(
                "ChangeCipherSpec",
                body.first().copied().unwrap_or(0),
            )),
            other => Err(TlcpError::UnexpectedMessage {
                expected: "ChangeCipherSpec",
                got: content_type_name(other).into(),
            }),
        }
    }

    /// Frames a handshake message, hashes it, and queues it in `out` as record(s).
    pub(crate) fn queue_message(
        &mut self,
        typ: u8,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TlcpError> {
        let mut raw = Vec::with_capacity(4 + body.len());
        raw.push(typ);
        crate::codec::put_vec24(&mut raw, body)?;
        self.hash(&raw);
        for chunk in raw.chunks(record::MAX_PLAINTEXT) {
            self.queue_record(record::HANDSHAKE, chunk, out)?;
        }
        Ok(())
    }

    pub(crate) fn queue_record(
        &mut self,
        typ: u8,
        fragment: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TlcpError> {
        match &mut self.write_keys {
            Some(keys) => keys.seal(typ, fragment, out),
            None => {
                record::plain_record(typ, fragment, out);
                Ok(())
            }
        }
    }

    /// Queues ChangeCipherSpec and switches the write direction to `keys`.
    pub(crate) fn queue_change_cipher_spec(
        &mut self,
        keys: DirectionKeys,
        out: &mut Vec<u8>,
    ) -> Result<(), TlcpError> {
        self.queue_record(record::CHANGE_CIPHER_SPEC, &[1], out)?;
        self.write_keys = Some(keys);
        Ok(())
    }

    pub(crate) async fn send(&mut self, out: &mut Vec<u8>) -> Result<(), TlcpError> {
        self.io.write_all(out).await?;
        self.io.flush().await?;
        out.clear();
        Ok(())
    }

    /// Sends the fatal alert `error` calls for, if any (best effort: errors are ignored).
    pub(crate) async fn send_alert_for(&mut self, error: &TlcpError) {
        let Some(code) = error.alert() else {
            return;
        };
        let mut out = Vec::new();
        if self
            .queue_record(record::ALERT, &[alert::LEVEL_FATAL, code], &mut out)
            .is_ok()
        {
            let _ = self.io.write_all(&out).await;
            let _ = self.io.flush().await;
        }
    }

    /// Whether any bytes are left over past the handshake (they belong to the stream).
    pub(crate) fn into_parts(
        self,
    ) -> Result<(IO, Vec<u8>, DirectionKeys, DirectionKeys), TlcpError> {
        if !self.hs_buf.is_empty() {
            return Err(TlcpError::UnexpectedMessage {
                expected: "application data",
                got: "a handshake message after Finished".into(),
            });
        }
        match (self.read_keys, self.write_keys) {
            (Some(r), Some(w)) => Ok((self.io, self.rbuf, r, w)),
            _ => Err(TlcpError::Config("handshake ended without keys".into())),
        }
    }
}

pub(crate) fn unexpected(expected: &'static str, got: u8) -> TlcpError {
    TlcpError::UnexpectedMessage {
        expected,
        got: hs::name(got).into(),
    }
}

pub(crate) fn received_alert(body: &[u8]) -> TlcpError {
    match body {
        [_, code] => TlcpError::AlertReceived {
            code: *code,
            description: alert::name(*code),
        },
        _ => TlcpError::Decode("alert"),
    }
}

pub(crate) fn content_type_name(typ: u8) -> &'static str {
    match typ {
        record::CHANGE_CIPHER_SPEC => "ChangeCipherSpec",
        record::ALERT => "alert",
        record::HANDSHAKE => "handshake",
        record::APPLICATION_DATA => "application data",
        _ => "unknown content type",
    }
}
