#!/usr/bin/env python3
"""Independent GM-TLS judge client built on Tongsuo (the libssl bundled in tongsuopy).

Connects in one of three modes, verifies the server chain against --ca, completes the
handshake and prints ONE JSON line:
  {"ok": true, "protocol": "TLSv1.3"|"NTLSv1.1", "cipher": ..., "cipher_id": "0x00C6", ...}
or on failure
  {"ok": false, "stage": "config|connect|handshake|verify|http2|grpc", "error": "..."}
and exits 1.  Every wait is bounded by --timeout (default 10 s).

Examples:
  tongsuo_client.py --mode rfc8998 --host 127.0.0.1 --port 4433 --ca ca.crt \
      --cert client_sign.crt --key client_sign.key --alpn h2 --http2-preface
  tongsuo_client.py --mode tlcp --cipher ECDHE-SM2-SM4-GCM-SM3 --ca ca.crt \
      --sign-cert client_sign.crt --sign-key client_sign.key \
      --enc-cert client_enc.crt --enc-key client_enc.key --port 4433 --http2-preface
"""
import argparse
import json
import signal
import struct
import sys
import time

import tongsuo_lib as T

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS_NAMES = {1: "HEADER_TABLE_SIZE", 2: "ENABLE_PUSH", 3: "MAX_CONCURRENT_STREAMS",
                  4: "INITIAL_WINDOW_SIZE", 5: "MAX_FRAME_SIZE", 6: "MAX_HEADER_LIST_SIZE",
                  8: "ENABLE_CONNECT_PROTOCOL"}
HEALTH = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def frame(ftype, flags=0, stream=0, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def http2_preface(conn):
    """Send preface + empty SETTINGS; read frames until the server's SETTINGS (type 4)."""
    conn.send(H2_PREFACE + frame(4))
    buf, seen = b"", []
    while True:
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            ftype, flags = buf[3], buf[4]
            payload, buf = buf[9:9 + n], buf[9 + n:]
            seen.append({"type": ftype, "flags": flags, "length": n})
            if ftype == 4 and not flags & 1:
                settings = {}
                for i in range(0, n - n % 6, 6):
                    k, v = struct.unpack_from(">HI", payload, i)
                    settings[SETTINGS_NAMES.get(k, "0x%X" % k)] = v
                conn.send(frame(4, flags=1))  # SETTINGS ACK
                return {"server_settings_received": True, "server_settings": settings,
                        "frames_seen": seen}
            if ftype == 7:  # GOAWAY before SETTINGS
                raise T.TLSFailure("http2", "GOAWAY before SETTINGS: error code %d"
                                   % struct.unpack_from(">I", payload, 4)[0])
        data = conn.recv()
        if not data:
            raise T.TLSFailure("http2", "connection closed before server SETTINGS "
                               "(frames seen: %s)" % seen)
        buf += data


def grpc_health(conn, authority, service=""):
    """Unary /grpc.health.v1.Health/Check over h2 driven on the Tongsuo connection."""
    import h2.config
    import h2.connection
    import h2.events
    svc = service.encode()
    req = (b"\x0a" + bytes([len(svc)]) + svc) if svc else b""
    h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                             header_encoding="utf-8"))
    h.initiate_connection()
    sid = h.get_next_available_stream_id()
    h.send_headers(sid, [(":method", "POST"), (":scheme", "https"),
                         (":path", "/grpc.health.v1.Health/Check"), (":authority", authority),
                         ("content-type", "application/grpc"), ("te", "trailers"),
                         ("user-agent", "tongsuo-judge/1")])
    h.send_data(sid, b"\x00" + struct.pack(">I", len(req)) + req, end_stream=True)
    conn.send(h.data_to_send(), "grpc")
    headers, trailers, body, done = {}, {}, b"", False
    http2 = {"server_settings_received": False}
    while not done:
        data = conn.recv(stage="grpc")
        if not data:
            raise T.TLSFailure("grpc", "connection closed before the response ended")
        for ev in h.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                http2 = {"server_settings_received": True, "server_settings": {
                    SETTINGS_NAMES.get(int(k), "0x%X" % k): v.new_value
                    for k, v in ev.changed_settings.items()}}
            elif isinstance(ev, h2.events.ResponseReceived):
                headers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                h.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
            elif isinstance(ev, h2.events.StreamReset):
                raise T.TLSFailure("grpc", "stream reset, error code %s" % ev.error_code)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                raise T.TLSFailure("grpc", "GOAWAY, error code %s" % ev.error_code)
        out = h.data_to_send()
        if out:
            conn.send(out, "grpc")
    status = trailers.get("grpc-status", headers.get("grpc-status"))
    res = {"http_status": headers.get(":status"), "content_type": headers.get("content-type"),
           "grpc_status": status,
           "grpc_message": trailers.get("grpc-message", headers.get("grpc-message")),
           "response_hex": body.hex()}
    if len(body) >= 5:
        msg = body[5:5 + struct.unpack_from(">I", body, 1)[0]]
        # HealthCheckResponse { ServingStatus status = 1; } -> 0x08 <varint>
        if len(msg) >= 2 and msg[0] == 0x08:
            res["health_status"] = HEALTH.get(msg[1], msg[1])
        elif msg == b"":
            res["health_status"] = HEALTH[0]
    if status != "0":
        raise T.TLSFailure("grpc", "grpc-status %s: %s (%s)" % (status, res["grpc_message"], res))
    return http2, res


def run(a):
    deadline = time.monotonic() + a.timeout
    alpn = [p for p in (a.alpn or "").split(",") if p]
    ctx, _keep = T.make_ctx(
        a.mode, server=False, cipher=a.cipher, groups=a.groups, sigalgs=a.sigalgs, ca=a.ca,
        cert=a.cert, key=a.key, sign_cert=a.sign_cert, sign_key=a.sign_key,
        enc_cert=a.enc_cert, enc_key=a.enc_key,
        verify=T.SSL_VERIFY_PEER if a.ca else T.SSL_VERIFY_NONE,
        sm_strict=a.sm_strict, alpn=alpn)
    trace = T.Trace(ctx)
    sock = T.connect_tcp(a.host, a.port, deadline)
    conn = T.Conn(ctx, sock, deadline, servername=a.servername,
                  check_host=(a.servername or a.host) if a.check_hostname else None)
    try:
        try:
            conn.handshake()
            conn.settle(a.settle)
        except T.TLSFailure as e:
            e.extra = {"messages": trace.names(), "alerts": trace.alert_list()}
            ch = trace.first("sent", 1)
            if a.show_client_hello and ch:
                e.extra["client_hello"] = T.parse_client_hello(ch)
            raise
        tls13 = a.mode != "tlcp"
        out = {"ok": True, "mode": a.mode}
        out.update(conn.info())
        x509, subj, iss = conn.peer_cert()
        out["peer_cert_subject"], out["peer_cert_issuer"] = subj, iss
        out["verify_result"] = "ok" if a.ca else "not verified (no --ca)"
        sh = trace.first("received", 2)
        if sh is not None and tls13:
            s = T.parse_server_hello(sh)
            g = s.get("key_share_group")
            out["group"] = T.GROUP_NAMES.get(g, "0x%04X" % g) if g is not None else None
            out["group_id"] = "0x%04X" % g if g is not None else None
        ske = trace.first("received", 12)
        if ske is not None and ske[4] == 3:  # TLCP ECDHE: ECParameters named_curve
            g = struct.unpack_from(">H", ske, 5)[0]
            out["group"], out["group_id"] = T.GROUP_NAMES.get(g, "0x%04X" % g), "0x%04X" % g
        out.setdefault("group", None)
        cert_msg = trace.first("received", 11)
        if cert_msg is not None:
            out["peer_cert_chain"] = [T.describe_der(d) for d in T.cert_ders(cert_msg, tls13)]
        out["client_cert_requested"] = trace.first("received", 13) is not None
        sent = trace.first("sent", 11)
        out["client_cert_sent"] = bool(sent is not None and len(T.cert_ders(sent, tls13)) > 0)
        if tls13 and x509:
            out["server_certificate_verify"] = T.check_tls13_cert_verify(trace, x509)
        if x509:
            T.lib().X509_free(x509)
        if a.show_client_hello:
            ch = trace.first("sent", 1)
            out["client_hello"] = T.parse_client_hello(ch) if ch else None
        if a.trace:
            out["messages"], out["alerts"] = trace.names(), trace.alert_list()
        if a.grpc_health:  # h2 sends the preface itself and reports the server SETTINGS
            out["http2"], out["grpc_health"] = grpc_health(conn, a.servername or a.host,
                                                           a.grpc_service)
        elif a.http2_preface:
            out["http2"] = http2_preface(conn)
        return out
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--mode", choices=["rfc8998", "tlcp", "tls13-standard"], default="rfc8998")
    ap.add_argument("--ca", help="PEM CA bundle the server chain must verify against")
    ap.add_argument("--cert", help="client certificate (rfc8998 / tls13-standard)")
    ap.add_argument("--key")
    ap.add_argument("--sign-cert", help="TLCP client signing certificate")
    ap.add_argument("--sign-key")
    ap.add_argument("--enc-cert", help="TLCP client encryption certificate")
    ap.add_argument("--enc-key")
    ap.add_argument("--cipher", help="TLS 1.3: ciphersuites (default TLS_SM4_GCM_SM3); "
                    "TLCP: cipher list (default ECC-SM2-SM4-GCM-SM3)")
    ap.add_argument("--groups", help="default SM2 for rfc8998 (Tongsuo's name for curveSM2)")
    ap.add_argument("--sigalgs", help="default sm2sig_sm3 for rfc8998")
    ap.add_argument("--servername", help="SNI host name")
    ap.add_argument("--check-hostname", action="store_true",
                    help="also require the server cert to match --servername (or --host)")
    ap.add_argument("--alpn", help="comma list, e.g. h2")
    ap.add_argument("--sm-strict", action="store_true",
                    help="call SSL_CTX_enable_sm_tls13_strict (not needed by the client)")
    ap.add_argument("--http2-preface", action="store_true")
    ap.add_argument("--grpc-health", action="store_true",
                    help="send a unary /grpc.health.v1.Health/Check over h2")
    ap.add_argument("--grpc-service", default="", help="HealthCheckRequest.service")
    ap.add_argument("--show-client-hello", action="store_true",
                    help="report what the Tongsuo ClientHello offered")
    ap.add_argument("--trace", action="store_true", help="report handshake messages/alerts")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=0.5,
                    help="seconds to wait after the handshake for a late rejection alert")
    ap.add_argument("--version", action="store_true", help="print the Tongsuo build and exit")
    a = ap.parse_args()
    if a.version:
        print(json.dumps(T.version()))
        return 0
    if a.port is None:
        ap.error("--port is required")
    if a.mode == "tlcp" and (a.cert or a.key):
        ap.error("TLCP uses --sign-cert/--sign-key/--enc-cert/--enc-key")
    if bool(a.cert) != bool(a.key) or bool(a.sign_cert) != bool(a.sign_key) \
            or bool(a.enc_cert) != bool(a.enc_key):
        ap.error("each certificate needs its key")

    def on_alarm(*_):  # last resort; all I/O is already deadline-bounded
        print(json.dumps({"ok": False, "stage": "timeout", "error": "hard timeout"}), flush=True)
        sys.exit(1)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(a.timeout) + 5)
    try:
        out = run(a)
    except T.TLSFailure as e:
        out = {"ok": False, "stage": e.stage, "error": e.error}
        out.update(getattr(e, "extra", {}))
    signal.alarm(0)
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
