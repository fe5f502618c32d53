#!/usr/bin/env python3
"""Minimal Tongsuo reference server (RFC 8998 TLS 1.3 or TLCP) speaking just enough HTTP/2.

Prints {"listening": true, "port": N, ...} once bound, then one JSON line per connection
({"ok": true, "protocol": ..., "cipher": ..., "peer_cert_subject": ...} or
{"ok": false, "stage": ..., "error": ...}).  Over the TLS connection it answers the
HTTP/2 preface with SETTINGS, and /grpc.health.v1.Health/Check with SERVING (grpc-status 0);
other paths get grpc-status 12.  Connections are served one at a time, each bounded by
--timeout; the process exits after --max-connections or --lifetime seconds.

  tongsuo_server.py --mode rfc8998 --port 4433 --cert server_sign.crt --key server_sign.key \
      --ca ca.crt --verify-client require --alpn h2
  tongsuo_server.py --mode tlcp --port 4433 --cipher ECDHE-SM2-SM4-GCM-SM3 \
      --sign-cert server_sign.crt --sign-key server_sign.key \
      --enc-cert server_enc.crt --enc-key server_enc.key --ca ca.crt --verify-client require
"""
import argparse
import json
import select
import socket
import sys
import time

import tongsuo_lib as T


def serve_h2(conn):
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                             header_encoding="utf-8"))
    h.initiate_connection()
    conn.send(h.data_to_send())
    paths, streams = [], {}
    while True:
        data = conn.recv()
        if not data:
            return paths
        try:
            events = h.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            conn.send(h.data_to_send())
            raise T.TLSFailure("http2", "h2 protocol error: %s" % e)
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                streams[ev.stream_id] = dict(ev.headers).get(":path")
                paths.append(streams[ev.stream_id])
            elif isinstance(ev, h2.events.DataReceived):
                h.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                sid, path = ev.stream_id, streams.pop(ev.stream_id, None)
                if path == "/grpc.health.v1.Health/Check":
                    h.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
                    h.send_data(sid, b"\x00\x00\x00\x00\x02\x08\x01")  # status: SERVING
                    h.send_headers(sid, [("grpc-status", "0")], end_stream=True)
                else:
                    h.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                         ("grpc-status", "12"),
                                         ("grpc-message", "unimplemented")], end_stream=True)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                conn.send(h.data_to_send())
                return paths
        out = h.data_to_send()
        if out:
            conn.send(out)


def handle(ctx, trace, sock, a):
    trace.msgs.clear()
    trace.alerts.clear()
    conn = T.Conn(ctx, sock, time.monotonic() + a.timeout, server=True)
    try:
        conn.handshake()
        out = {"ok": True}
        out.update(conn.info())
        x509, subj, _ = conn.peer_cert()
        out["peer_cert_subject"] = subj
        if x509 and a.mode != "tlcp":
            out["client_certificate_verify"] = T.check_tls13_cert_verify(trace, x509, False)
        if x509:
            T.lib().X509_free(x509)
        try:
            out["http2_paths"] = serve_h2(conn)
        except T.TLSFailure as e:
            out["http2_end"] = e.error
        return out
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port (printed)")
    ap.add_argument("--mode", choices=["rfc8998", "tlcp", "tls13-standard"], default="rfc8998")
    ap.add_argument("--cert", help="server certificate (TLS 1.3 modes)")
    ap.add_argument("--key")
    ap.add_argument("--sign-cert")
    ap.add_argument("--sign-key")
    ap.add_argument("--enc-cert")
    ap.add_argument("--enc-key")
    ap.add_argument("--ca", help="CA for client certificates")
    ap.add_argument("--verify-client", choices=["none", "optional", "require"], default="none")
    ap.add_argument("--cipher")
    ap.add_argument("--groups")
    ap.add_argument("--sigalgs")
    ap.add_argument("--alpn", help="comma list the server accepts, e.g. h2")
    ap.add_argument("--sm-strict", action="store_true", help="SSL_CTX_enable_sm_tls13_strict")
    ap.add_argument("--timeout", type=float, default=10.0, help="per connection")
    ap.add_argument("--max-connections", type=int, default=0, help="0 = unlimited")
    ap.add_argument("--lifetime", type=float, default=300.0, help="exit after this many seconds")
    a = ap.parse_args()
    verify = {"none": T.SSL_VERIFY_NONE, "optional": T.SSL_VERIFY_PEER,
              "require": T.SSL_VERIFY_PEER | T.SSL_VERIFY_FAIL_IF_NO_PEER_CERT}[a.verify_client]
    try:
        ctx, _keep = T.make_ctx(a.mode, server=True, cipher=a.cipher, groups=a.groups,
                                sigalgs=a.sigalgs, ca=a.ca, cert=a.cert, key=a.key,
                                sign_cert=a.sign_cert, sign_key=a.sign_key, enc_cert=a.enc_cert,
                                enc_key=a.enc_key, verify=verify, sm_strict=a.sm_strict,
                                alpn=[p for p in (a.alpn or "").split(",") if p])
    except T.TLSFailure as e:
        print(json.dumps({"ok": False, "stage": e.stage, "error": e.error}), flush=True)
        return 1
    trace = T.Trace(ctx)  # msg_callback is per SSL_CTX; connections are sequential
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((a.host, a.port))
    lsock.listen(8)
    info = {"listening": True, "host": a.host, "port": lsock.getsockname()[1], "mode": a.mode}
    info.update(T.version())
    print(json.dumps(info), flush=True)
    end, served = time.monotonic() + a.lifetime, 0
    while time.monotonic() < end and (a.max_connections <= 0 or served < a.max_connections):
        r, _, _ = select.select([lsock], [], [], min(1.0, max(0.0, end - time.monotonic())))
        if not r:
            continue
        sock, peer = lsock.accept()
        served += 1
        try:
            out = handle(ctx, trace, sock, a)
        except T.TLSFailure as e:
            out = {"ok": False, "stage": e.stage, "error": e.error}
        out["peer"] = "%s:%d" % peer
        print(json.dumps(out), flush=True)
    lsock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
