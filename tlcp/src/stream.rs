//! The established connection: application data over protected records, as a tokio
//! `AsyncRead + AsyncWrite` (what hyper and tonic take).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::alert;
use crate::conn::{content_type_name, received_alert};
use crate::error::TlcpError;
use crate::record::{self, DirectionKeys};
use crate::server::Negotiated;
use crate::suite::CipherSuite;

/// A TLCP connection after a successful handshake.
///
/// Reads return application data; a close_notify from the peer reads as end of stream.
/// Writes are cut into records of at most 16 KiB; `poll_shutdown` sends close_notify first.
/// Renegotiation is refused (the connection fails with `unexpected_message`).
pub struct TlcpStream<IO> {
    io: IO,
    /// Raw bytes read and not yet opened as records.
    rbuf: Vec<u8>,
    /// Opened application data not yet returned, from `plain_pos`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Protected bytes not yet written, from `wpos`.
    wbuf: Vec<u8>,
    wpos: usize,
    read_keys: DirectionKeys,
    write_keys: DirectionKeys,
    read_closed: bool,
    close_sent: bool,
    negotiated: Negotiated,
}

impl<IO> std::fmt::Debug for TlcpStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlcpStream")
            .field("suite", &self.negotiated.suite)
            .field(
                "peer_certificates",
                &self.negotiated.peer_certificates.len(),
            )
            .finish_non_exhaustive()
    }
}

impl<IO> TlcpStream<IO> {
    pub(crate) fn new(
        io: IO,
        rbuf: Vec<u8>,
        read_keys: DirectionKeys,
        write_keys: DirectionKeys,
        negotiated: Negotiated,
    ) -> Self {
        Self {
            io,
            rbuf,
            plain: Vec::new(),
            plain_pos: 0,
            wbuf: Vec::new(),
            wpos: 0,
            read_keys,
            write_keys,
            read_closed: false,
            close_sent: false,
            negotiated,
        }
    }

    /// The peer's certificates, DER, as sent: signing certificate, encryption certificate,
    /// then any chain certificates. Both leaves have been verified.
    pub fn peer_certificates(&self) -> &[Vec<u8>] {
        &self.negotiated.peer_certificates
    }

    /// The negotiated suite's standard name, e.g. `ECC_SM4_GCM_SM3`.
    pub fn suite_name(&self) -> &'static str {
        self.negotiated.suite.name()
    }

    /// The negotiated suite.
    pub fn suite(&self) -> CipherSuite {
        self.negotiated.suite
    }

    /// The ALPN protocol agreed on, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.negotiated.alpn.as_deref()
    }

    /// The transport.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlcpStream<IO> {
    /// Opens the next whole record in `rbuf`, if there is one; Ok(false) when more bytes are
    /// needed.
    fn open_record(&mut self) -> Result<bool, TlcpError> {
        let Some((typ, version, len)) = record::parse_header(&self.rbuf)? else {
            return Ok(false);
        };
        if version.to_be_bytes() != record::VERSION {
            return Err(TlcpError::NotTlcp(version));
        }
        if self.rbuf.len() < record::HEADER_LEN + len {
            return Ok(false);
        }
        let mut body = self.rbuf[record::HEADER_LEN..record::HEADER_LEN + len].to_vec();
        self.rbuf.drain(..record::HEADER_LEN + len);
        self.read_keys.open(typ, &mut body)?;
        match typ {
            record::APPLICATION_DATA => {
                self.plain = body;
                self.plain_pos = 0;
            }
            record::ALERT => match body.as_slice() {
                [_, alert::CLOSE_NOTIFY] => self.read_closed = true,
                [alert::LEVEL_WARNING, _] => {}
                _ => return Err(received_alert(&body)),
            },
            other => {
                return Err(TlcpError::UnexpectedMessage {
                    expected: "application data",
                    got: content_type_name(other).into(),
                });
            }
        }
        Ok(true)
    }

    /// Writes queued protected bytes until none are left.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }

    /// Sends a fatal alert for `error` as far as the transport takes it without waiting (the
    /// rest goes out on the next write or flush), and returns the error.
    fn fail(&mut self, cx: &mut Context<'_>, error: TlcpError) -> io::Error {
        if let Some(code) = error.alert()
            && !self.close_sent
        {
            let sealed =
                self.write_keys
                    .seal(record::ALERT, &[alert::LEVEL_FATAL, code], &mut self.wbuf);
            self.close_sent = true;
            if sealed.is_ok() && self.poll_write_queued(cx).is_ready() {
                let _ = Pin::new(&mut self.io).poll_flush(cx);
            }
        }
        error.into()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlcpStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match this.open_record() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Poll::Ready(Err(this.fail(cx, e))),
            }
            let old = this.rbuf.len();
            this.rbuf.resize(old + 8192, 0);
            let mut rb = ReadBuf::new(&mut this.rbuf[old..]);
            let res = Pin::new(&mut this.io).poll_read(cx, &mut rb);
            let filled = rb.filled().len();
            this.rbuf.truncate(old + filled);
            ready!(res)?;
            if filled == 0 {
                // EOF without close_notify. At a record boundary it reads as end of stream
                // (HTTP/2 frames its own messages); inside a record it is a truncation.
                return Poll::Ready(if this.rbuf.is_empty() {
                    this.read_closed = true;
                    Ok(())
                } else {
                    Err(TlcpError::UnexpectedEof.into())
                });
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlcpStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_write_queued(cx))?;
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(record::MAX_PLAINTEXT);
        if let Err(e) = this
            .write_keys
            .seal(record::APPLICATION_DATA, &buf[..n], &mut this.wbuf)
        {
            return Poll::Ready(Err(e.into()));
        }
        // Start sending now; what does not fit yet goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_write_queued(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_queued(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.write_keys.seal(
                record::ALERT,
                &[alert::LEVEL_WARNING, alert::CLOSE_NOTIFY],
                &mut this.wbuf,
            )?;
            this.close_sent = true;
        }
        ready!(this.poll_write_queued(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
