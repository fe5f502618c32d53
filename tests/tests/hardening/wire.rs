//! The wire below the typed clients, for requests a well-behaved client cannot make: raw gRPC
//! bodies (malformed protobuf, non-UTF-8 strings) through tonic with a pass-through codec, and
//! hand-built HTTP/2 over our TLS (requests abandoned mid-way, partial frames), plus raw TCP for
//! clients that stall inside the TLS handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::bytes::{Buf, BufMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A codec that sends and receives message bytes as they are: the request body is whatever the
/// test built, valid protobuf or not.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// One unary call with `body` as the request message's bytes.
pub(crate) async fn raw_unary(
    channel: Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("channel not ready: {e}")))?;
    grpc.unary(
        Request::new(body),
        PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A protobuf field: `tag` and wire type 2 (length-delimited), with `bytes` as its content.
pub(crate) fn pb_bytes_field(tag: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    pb_varint(&mut out, u64::from(tag << 3 | 2));
    pb_varint(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

pub(crate) fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 by hand.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK "literal header field without indexing, new name", no Huffman coding.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    for s in [name, value] {
        assert!(s.len() < 127, "short strings only");
        out.push(u8::try_from(s.len()).unwrap());
        out.extend_from_slice(s.as_bytes());
    }
}

/// The header block of a gRPC call to `path`.
pub(crate) fn grpc_headers(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        hpack_literal(&mut block, name, value);
    }
    block
}

/// A gRPC length-prefixed message (uncompressed).
pub(crate) fn grpc_message(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An HTTP/2 connection over mutual TLS that the test drives frame by frame.
pub(crate) struct RawH2 {
    pub(crate) tls: TlsStream<TcpStream>,
}

impl RawH2 {
    /// TLS with `config`, then the client preface and an empty SETTINGS frame.
    pub(crate) async fn open(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Self {
        let mut tls = kms_tests::net::handshake(addr, config).await.unwrap();
        tls.write_all(PREFACE).await.unwrap();
        tls.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        tls.flush().await.unwrap();
        Self { tls }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    /// HEADERS for a gRPC call to `path` on `stream`.
    pub(crate) async fn headers(&mut self, stream: u32, path: &str, end_stream: bool) {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        let f = frame(HEADERS, flags, stream, &grpc_headers(path));
        self.send(&f).await;
    }

    /// DATA on `stream`.
    pub(crate) async fn data(&mut self, stream: u32, payload: &[u8], end_stream: bool) {
        let f = frame(
            DATA,
            if end_stream { END_STREAM } else { 0 },
            stream,
            payload,
        );
        self.send(&f).await;
    }

    /// Drops the connection without a TLS close_notify, an HTTP/2 GOAWAY or RST_STREAM: the
    /// TCP connection just ends.
    pub(crate) fn vanish(self) {
        let (tcp, _) = self.tls.into_inner();
        drop(tcp);
    }
}

/// The first bytes of a ClientHello: a handshake record header announcing 512 bytes, the
/// handshake header, the protocol version and part of the random — and then nothing.
pub(crate) const PARTIAL_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, // record: handshake, TLS 1.0 compat, 512 bytes
    0x01, 0x00, 0x01, 0xfc, // ClientHello, 508 bytes
    0x03, 0x03, 0x5a, 0x5a, 0x5a, // legacy version 1.2, 3 bytes of random
];

/// How long the server took to end a connection the client keeps open without sending anything
/// more (EOF or a reset; any bytes it sends first, such as a TLS alert, are drained), or `None`
/// if it was still open after `patience`.
pub(crate) async fn closed_by_server_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    patience: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = patience.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}
