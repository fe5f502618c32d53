"""ctypes bindings to the Tongsuo libssl/libcrypto bundled in the `tongsuopy` wheel.

tongsuopy 1.0.1 links Tongsuo 8.3.2 (BabaSSL 8.3.2, OpenSSL 1.1.1h API) statically
into its cffi extension `tongsuopy/backends/_tongsuo.abi3.so` and exports the whole
libssl/libcrypto API from it (SSL_*, NTLS_*, EVP_* ...).  Its own cffi `lib` only
declares a subset, so we dlopen the same file with ctypes and declare what we need.

Shared by tongsuo_client.py and tongsuo_server.py.  Everything is non-blocking and
bounded by a deadline, so no call can hang.
"""
import ctypes
import os
import select
import socket
import struct
import time

# ---- constants (OpenSSL 1.1.1 / Tongsuo 8.3 headers) -----------------------------
SSL_FILETYPE_PEM = 1
SSL_VERIFY_NONE, SSL_VERIFY_PEER, SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0, 1, 2
SSL_ERROR_SSL, SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE = 1, 2, 3
SSL_ERROR_SYSCALL, SSL_ERROR_ZERO_RETURN = 5, 6
SSL_CTRL_SET_MSG_CALLBACK = 15
SSL_CTRL_MODE = 33
SSL_CTRL_SET_TLSEXT_HOSTNAME = 55
SSL_CTRL_SET_GROUPS_LIST = 92
SSL_CTRL_SET_SIGALGS_LIST = 98
SSL_CTRL_SET_CLIENT_SIGALGS_LIST = 102
SSL_CTRL_GET_PEER_TMP_KEY = 109
SSL_CTRL_SET_MIN_PROTO_VERSION = 123
SSL_CTRL_SET_MAX_PROTO_VERSION = 124
SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER = 1, 2
SSL_OP_NO_TICKET = 0x4000
TLS1_3_VERSION = 0x0304
EVP_PKEY_SM2 = 1172
EVP_PKEY_CTRL_SET1_ID = 0x1000 + 11  # Tongsuo 8.3 ec.h (EVP_PKEY_ALG_CTRL + 11); 1.1.1 upstream uses 15
X509_V_OK = 0

# TLS 1.3 / TLCP wire code points we report by name
GROUP_NAMES = {0x0017: "secp256r1", 0x0018: "secp384r1", 0x0019: "secp521r1",
               0x001D: "x25519", 0x001E: "x448", 0x0029: "curveSM2"}
SIGALG_NAMES = {0x0708: "sm2sig_sm3", 0x0403: "ecdsa_secp256r1_sha256",
                0x0503: "ecdsa_secp384r1_sha384", 0x0804: "rsa_pss_rsae_sha256",
                0x0807: "ed25519", 0x0401: "rsa_pkcs1_sha256"}
HS_NAMES = {1: "ClientHello", 2: "ServerHello", 4: "NewSessionTicket", 8: "EncryptedExtensions",
            11: "Certificate", 12: "ServerKeyExchange", 13: "CertificateRequest",
            14: "ServerHelloDone", 15: "CertificateVerify", 16: "ClientKeyExchange",
            20: "Finished", 24: "KeyUpdate"}
ALERT_NAMES = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
               40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
               44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
               47: "illegal_parameter", 48: "unknown_ca", 50: "decode_error", 51: "decrypt_error",
               70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
               86: "inappropriate_fallback", 90: "user_canceled", 109: "missing_extension",
               110: "unsupported_extension", 112: "unrecognized_name",
               116: "certificate_required", 120: "no_application_protocol"}
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
SM2_ID_RFC8998 = b"TLSv1.3+GM+Cipher+Suite"
SM2_ID_DEFAULT = b"1234567812345678"

P = ctypes.c_void_p
MSG_CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, P,
                          ctypes.c_size_t, P, P)
ALPN_SELECT_CB = ctypes.CFUNCTYPE(ctypes.c_int, P, ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
                                  ctypes.POINTER(ctypes.c_ubyte), ctypes.POINTER(ctypes.c_ubyte),
                                  ctypes.c_uint, P)

_SIGS = {
    "OpenSSL_version": (ctypes.c_char_p, [ctypes.c_int]),
    "TLS_client_method": (P, []), "TLS_server_method": (P, []),
    "NTLS_client_method": (P, []), "NTLS_server_method": (P, []),
    "SSL_CTX_new": (P, [P]), "SSL_CTX_free": (None, [P]),
    "SSL_CTX_ctrl": (ctypes.c_long, [P, ctypes.c_int, ctypes.c_long, P]),
    "SSL_CTX_callback_ctrl": (ctypes.c_long, [P, ctypes.c_int, P]),
    "SSL_CTX_set_options": (ctypes.c_ulong, [P, ctypes.c_ulong]),
    "SSL_CTX_set_ciphersuites": (ctypes.c_int, [P, ctypes.c_char_p]),
    "SSL_CTX_set_cipher_list": (ctypes.c_int, [P, ctypes.c_char_p]),
    "SSL_CTX_load_verify_locations": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_char_p]),
    "SSL_CTX_set_verify": (None, [P, ctypes.c_int, P]),
    "SSL_load_client_CA_file": (P, [ctypes.c_char_p]),
    "SSL_CTX_set_client_CA_list": (None, [P, P]),
    "SSL_CTX_use_certificate_chain_file": (ctypes.c_int, [P, ctypes.c_char_p]),
    "SSL_CTX_use_PrivateKey_file": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_int]),
    "SSL_CTX_check_private_key": (ctypes.c_int, [P]),
    "SSL_CTX_enable_ntls": (None, [P]),
    "SSL_CTX_enable_sm_tls13_strict": (None, [P]),
    "SSL_CTX_use_sign_certificate_file": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_int]),
    "SSL_CTX_use_sign_PrivateKey_file": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_int]),
    "SSL_CTX_use_enc_certificate_file": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_int]),
    "SSL_CTX_use_enc_PrivateKey_file": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_int]),
    "SSL_CTX_set_alpn_protos": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_uint]),
    "SSL_CTX_set_alpn_select_cb": (None, [P, ALPN_SELECT_CB, P]),
    "SSL_new": (P, [P]), "SSL_free": (None, [P]),
    "SSL_set_fd": (ctypes.c_int, [P, ctypes.c_int]),
    "SSL_ctrl": (ctypes.c_long, [P, ctypes.c_int, ctypes.c_long, P]),
    "SSL_set1_host": (ctypes.c_int, [P, ctypes.c_char_p]),
    "SSL_connect": (ctypes.c_int, [P]), "SSL_accept": (ctypes.c_int, [P]),
    "SSL_get_error": (ctypes.c_int, [P, ctypes.c_int]),
    "SSL_read": (ctypes.c_int, [P, P, ctypes.c_int]),
    "SSL_write": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_int]),
    "SSL_shutdown": (ctypes.c_int, [P]),
    "SSL_get_version": (ctypes.c_char_p, [P]),
    "SSL_get_current_cipher": (P, [P]),
    "SSL_CIPHER_get_name": (ctypes.c_char_p, [P]),
    "SSL_CIPHER_get_protocol_id": (ctypes.c_uint16, [P]),
    "SSL_get0_alpn_selected": (None, [P, ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
                                      ctypes.POINTER(ctypes.c_uint)]),
    "SSL_get_peer_certificate": (P, [P]),
    "SSL_get_verify_result": (ctypes.c_long, [P]),
    "SSL_is_ntls": (ctypes.c_int, [P]),
    "X509_free": (None, [P]),
    "X509_get_subject_name": (P, [P]), "X509_get_issuer_name": (P, [P]),
    "X509_NAME_oneline": (ctypes.c_char_p, [P, ctypes.c_char_p, ctypes.c_int]),
    "X509_get0_pubkey": (P, [P]),
    "X509_get_key_usage": (ctypes.c_uint32, [P]),
    "d2i_X509": (P, [P, ctypes.POINTER(ctypes.c_void_p), ctypes.c_long]),
    "X509_verify_cert_error_string": (ctypes.c_char_p, [ctypes.c_long]),
    "ERR_get_error": (ctypes.c_ulong, []),
    "ERR_error_string_n": (None, [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]),
    "ERR_clear_error": (None, []),
    "EVP_PKEY_id": (ctypes.c_int, [P]),
    "EVP_PKEY_get0": (P, [P]),
    "EVP_PKEY_free": (None, [P]),
    "EVP_PKEY_set_alias_type": (ctypes.c_int, [P, ctypes.c_int]),
    "EC_KEY_get0_group": (P, [P]),
    "EC_GROUP_get_curve_name": (ctypes.c_int, [P]),
    "OBJ_nid2sn": (ctypes.c_char_p, [ctypes.c_int]),
    "EVP_sm3": (P, []),
    "EVP_Digest": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                  ctypes.POINTER(ctypes.c_uint), P, P]),
    "EVP_PKEY_CTX_new": (P, [P, P]), "EVP_PKEY_CTX_free": (None, [P]),
    "EVP_PKEY_CTX_ctrl": (ctypes.c_int, [P, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                         ctypes.c_int, P]),
    "EVP_MD_CTX_new": (P, []), "EVP_MD_CTX_free": (None, [P]),
    "EVP_MD_CTX_set_pkey_ctx": (None, [P, P]),
    "EVP_DigestVerifyInit": (ctypes.c_int, [P, P, P, P, P]),
    "EVP_DigestVerify": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_size_t,
                                        ctypes.c_char_p, ctypes.c_size_t]),
}

_LIB = None


def library_path():
    """Path of the shared object in tongsuopy that carries Tongsuo's libssl+libcrypto."""
    import tongsuopy.backends._tongsuo as ext  # loading it first is harmless
    return ext.__file__


def lib():
    global _LIB
    if _LIB is None:
        L = ctypes.CDLL(library_path(), use_errno=True)
        for name, (res, args) in _SIGS.items():
            f = getattr(L, name)
            f.restype, f.argtypes = res, args
        _LIB = L
    return _LIB


def version():
    import tongsuopy
    L = lib()
    return {"tongsuopy": tongsuopy.__version__,
            "tongsuo": L.OpenSSL_version(6).decode(),  # BABASSL_VERSION -> "BabaSSL 8.3.2"
            "openssl_api": L.OpenSSL_version(0).decode(),
            "library_path": library_path()}


# ---- errors -----------------------------------------------------------------------
class TLSFailure(Exception):
    def __init__(self, stage, error):
        super().__init__(error)
        self.stage, self.error = stage, error


def drain_errors():
    L, out, buf = lib(), [], ctypes.create_string_buffer(256)
    while True:
        e = L.ERR_get_error()
        if not e:
            return out
        L.ERR_error_string_n(e, buf, 256)
        out.append(buf.value.decode(errors="replace"))


def check(ok, what):
    if not ok:
        errs = drain_errors()
        raise TLSFailure("config", "%s failed%s" % (what, (": " + "; ".join(errs)) if errs else ""))


# ---- context setup ------------------------------------------------------------------
def alpn_wire(protos):
    return b"".join(bytes([len(p)]) + p.encode() for p in protos)


def make_ctx(mode, server, cipher=None, groups=None, sigalgs=None, ca=None,
             cert=None, key=None, sign_cert=None, sign_key=None, enc_cert=None, enc_key=None,
             verify=SSL_VERIFY_PEER, sm_strict=False, alpn=None):
    """mode: rfc8998 | tls13-standard | tlcp.  Returns (ctx, keepalive-list)."""
    L = lib()
    keep = []
    if mode == "tlcp":
        meth = L.NTLS_server_method() if server else L.NTLS_client_method()
    else:
        meth = L.TLS_server_method() if server else L.TLS_client_method()
    ctx = L.SSL_CTX_new(meth)
    check(ctx, "SSL_CTX_new")
    L.SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET)
    L.SSL_CTX_ctrl(ctx, SSL_CTRL_MODE, SSL_MODE_ENABLE_PARTIAL_WRITE
                   | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, None)
    if mode == "tlcp":
        L.SSL_CTX_enable_ntls(ctx)
        check(L.SSL_CTX_set_cipher_list(ctx, (cipher or "ECC-SM2-SM4-GCM-SM3").encode()) == 1,
              "SSL_CTX_set_cipher_list(%s)" % cipher)
    else:
        for c in (SSL_CTRL_SET_MIN_PROTO_VERSION, SSL_CTRL_SET_MAX_PROTO_VERSION):
            check(L.SSL_CTX_ctrl(ctx, c, TLS1_3_VERSION, None) == 1, "set TLS 1.3 only")
        default = "TLS_SM4_GCM_SM3" if mode == "rfc8998" else \
            "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
        check(L.SSL_CTX_set_ciphersuites(ctx, (cipher or default).encode()) == 1,
              "SSL_CTX_set_ciphersuites(%s)" % (cipher or default))
        if groups is None and mode == "rfc8998":
            groups = "SM2"
        if sigalgs is None and mode == "rfc8998":
            sigalgs = "sm2sig_sm3"
        if sm_strict:
            L.SSL_CTX_enable_sm_tls13_strict(ctx)
    if groups:
        check(L.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_GROUPS_LIST, 0,
                             ctypes.c_char_p(groups.encode())) == 1, "set1_groups_list(%s)" % groups)
    if sigalgs:
        check(L.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_SIGALGS_LIST, 0,
                             ctypes.c_char_p(sigalgs.encode())) == 1, "set1_sigalgs_list(%s)" % sigalgs)
        check(L.SSL_CTX_ctrl(ctx, SSL_CTRL_SET_CLIENT_SIGALGS_LIST, 0,
                             ctypes.c_char_p(sigalgs.encode())) == 1,
              "set1_client_sigalgs_list(%s)" % sigalgs)
    if ca:
        check(L.SSL_CTX_load_verify_locations(ctx, ca.encode(), None) == 1, "load CA %s" % ca)
        if server:
            names = L.SSL_load_client_CA_file(ca.encode())
            if names:
                L.SSL_CTX_set_client_CA_list(ctx, names)
    L.SSL_CTX_set_verify(ctx, verify, None)
    if cert:
        check(L.SSL_CTX_use_certificate_chain_file(ctx, cert.encode()) == 1, "load cert %s" % cert)
        check(L.SSL_CTX_use_PrivateKey_file(ctx, key.encode(), SSL_FILETYPE_PEM) == 1,
              "load key %s" % key)
        check(L.SSL_CTX_check_private_key(ctx) == 1, "cert/key match")
    if sign_cert:
        check(L.SSL_CTX_use_sign_certificate_file(ctx, sign_cert.encode(), SSL_FILETYPE_PEM) == 1,
              "SSL_CTX_use_sign_certificate_file(%s)" % sign_cert)
        check(L.SSL_CTX_use_sign_PrivateKey_file(ctx, sign_key.encode(), SSL_FILETYPE_PEM) == 1,
              "SSL_CTX_use_sign_PrivateKey_file(%s)" % sign_key)
    if enc_cert:
        check(L.SSL_CTX_use_enc_certificate_file(ctx, enc_cert.encode(), SSL_FILETYPE_PEM) == 1,
              "SSL_CTX_use_enc_certificate_file(%s)" % enc_cert)
        check(L.SSL_CTX_use_enc_PrivateKey_file(ctx, enc_key.encode(), SSL_FILETYPE_PEM) == 1,
              "SSL_CTX_use_enc_PrivateKey_file(%s)" % enc_key)
    if alpn and not server:
        w = alpn_wire(alpn)
        check(L.SSL_CTX_set_alpn_protos(ctx, w, len(w)) == 0, "set_alpn_protos")
    if alpn and server:
        want = alpn_wire(alpn)

        def select_cb(_ssl, out, outlen, inp, inlen, _arg):
            offered = ctypes.string_at(inp, inlen)
            i = 0
            while i < len(offered):  # server preference: first of ours the client offered
                n = offered[i]
                p = offered[i + 1:i + 1 + n]
                if bytes([n]) + p in want:
                    keep.append(ctypes.create_string_buffer(p, n))
                    out[0] = ctypes.cast(keep[-1], ctypes.POINTER(ctypes.c_ubyte))
                    outlen[0] = n
                    return 0  # SSL_TLSEXT_ERR_OK
                i += 1 + n
            return 3  # SSL_TLSEXT_ERR_NOACK: no ALPN, no alert
        cb = ALPN_SELECT_CB(select_cb)
        keep.append(cb)
        L.SSL_CTX_set_alpn_select_cb(ctx, cb, None)
    return ctx, keep


# ---- handshake trace (msg_callback) ------------------------------------------------
class Trace:
    """Records plaintext handshake messages and alerts via SSL_CTX_set_msg_callback."""

    def __init__(self, ctx):
        self.msgs = []      # (direction 'sent'/'received', type, full message bytes)
        self.alerts = []    # (direction, level, description)

        def cb(write_p, _version, content_type, buf, length, _ssl, _arg):
            data = ctypes.string_at(buf, length) if length else b""
            d = "sent" if write_p else "received"
            if content_type == 22 and len(data) >= 4:
                self.msgs.append((d, data[0], data))
            elif content_type == 21 and len(data) >= 2:
                self.alerts.append((d, data[0], data[1]))
        self._cb = MSG_CB(cb)
        lib().SSL_CTX_callback_ctrl(ctx, SSL_CTRL_SET_MSG_CALLBACK, ctypes.cast(self._cb, P))

    def names(self):
        return ["%s:%s" % (d, HS_NAMES.get(t, t)) for d, t, _ in self.msgs]

    def alert_list(self):
        return ["%s:%s(%s)" % (d, ALERT_NAMES.get(desc, desc), "fatal" if lvl == 2 else "warning")
                for d, lvl, desc in self.alerts]

    def first(self, d, t):
        for dd, tt, m in self.msgs:
            if dd == d and tt == t:
                return m
        return None


def _exts(body, off):
    """Parse a TLS extensions block at body[off:] -> {type: data}."""
    out = {}
    if off + 2 > len(body):
        return out
    end = off + 2 + struct.unpack_from(">H", body, off)[0]
    off += 2
    while off + 4 <= end:
        t, n = struct.unpack_from(">HH", body, off)
        out[t] = body[off + 4:off + 4 + n]
        off += 4 + n
    return out


def parse_server_hello(msg):
    body = msg[4:]
    rnd = body[2:34]
    sid_len = body[34]
    off = 35 + sid_len
    suite = struct.unpack_from(">H", body, off)[0]
    exts = _exts(body, off + 3)
    out = {"hello_retry_request": rnd == HRR_RANDOM, "cipher_id": suite}
    if 43 in exts:
        out["version"] = struct.unpack(">H", exts[43][:2])[0]
    if 51 in exts:
        out["key_share_group"] = struct.unpack(">H", exts[51][:2])[0]
    return out


def parse_client_hello(msg):
    body = msg[4:]
    off = 34
    off += 1 + body[off]
    n = struct.unpack_from(">H", body, off)[0]
    suites = [struct.unpack_from(">H", body, off + 2 + 2 * i)[0] for i in range(n // 2)]
    off += 2 + n
    off += 1 + body[off]
    exts = _exts(body, off)

    def u16list(b, skip=2):
        return [struct.unpack_from(">H", b, skip + 2 * i)[0] for i in range((len(b) - skip) // 2)]
    out = {"cipher_suites": ["0x%04X" % s for s in suites]}
    if 10 in exts:
        out["supported_groups"] = ["0x%04X" % g for g in u16list(exts[10])]
    if 13 in exts:
        out["signature_algorithms"] = ["0x%04X" % s for s in u16list(exts[13])]
    if 51 in exts:
        ks, o, b = [], 2, exts[51]
        while o + 4 <= len(b):
            g, ln = struct.unpack_from(">HH", b, o)
            ks.append("0x%04X" % g)
            o += 4 + ln
        out["key_share"] = ks
    if 43 in exts:
        out["supported_versions"] = ["0x%04X" % v for v in u16list(exts[43], 1)]
    return out


def cert_ders(msg, tls13):
    """DER certificates carried in a Certificate handshake message, in wire order."""
    body, off, out = msg[4:], 0, []
    if tls13:
        off = 1 + body[0]
    end = off + 3 + int.from_bytes(body[off:off + 3], "big")
    off += 3
    while off + 3 <= end:
        n = int.from_bytes(body[off:off + 3], "big")
        out.append(body[off + 3:off + 3 + n])
        off += 3 + n
        if tls13:
            off += 2 + struct.unpack_from(">H", body, off)[0]
    return out


KU_BITS = [(0x80, "digitalSignature"), (0x40, "nonRepudiation"), (0x20, "keyEncipherment"),
           (0x10, "dataEncipherment"), (0x08, "keyAgreement"), (0x04, "keyCertSign"),
           (0x02, "cRLSign")]


def describe_der(der):
    """'subject [keyUsage,...]' for one DER certificate."""
    L = lib()
    buf = ctypes.create_string_buffer(der)
    p = ctypes.c_void_p(ctypes.addressof(buf))
    x = L.d2i_X509(None, ctypes.byref(p), len(der))
    if not x:
        drain_errors()
        return "<unparsable certificate>"
    try:
        nb = ctypes.create_string_buffer(512)
        subj = L.X509_NAME_oneline(L.X509_get_subject_name(x), nb, 512).decode()
        ku = L.X509_get_key_usage(x)
        kus = "any" if ku == 0xFFFFFFFF else ",".join(n for b, n in KU_BITS if ku & b)
        return "%s [keyUsage: %s]" % (subj, kus)
    finally:
        L.X509_free(x)


def tls13_transcript_hash(msgs_before):
    """SM3 transcript hash over a list of full handshake messages (handles HRR)."""
    data = b""
    for i, m in enumerate(msgs_before):
        if m[0] == 2 and m[4 + 2:4 + 34] == HRR_RANDOM:
            h = sm3(data)
            data = bytes([254, 0, 0, len(h)]) + h
        data += m
    return sm3(data)


def sm3(data):
    L = lib()
    out, n = ctypes.create_string_buffer(64), ctypes.c_uint(0)
    if L.EVP_Digest(data, len(data), out, ctypes.byref(n), L.EVP_sm3(), None) != 1:
        raise TLSFailure("verify", "EVP_Digest(sm3) failed")
    return out.raw[:n.value]


def sm2_verify(pkey, sm2_id, sig, msg):
    """Verify an SM2-with-SM3 signature with a given distinguishing ID: True/False/None."""
    L = lib()
    L.EVP_PKEY_set_alias_type(pkey, EVP_PKEY_SM2)
    pctx = L.EVP_PKEY_CTX_new(pkey, None)
    mctx = L.EVP_MD_CTX_new()
    try:
        if L.EVP_PKEY_CTX_ctrl(pctx, -1, -1, EVP_PKEY_CTRL_SET1_ID, len(sm2_id),
                               ctypes.c_char_p(sm2_id)) <= 0:
            return None
        L.EVP_MD_CTX_set_pkey_ctx(mctx, pctx)
        if L.EVP_DigestVerifyInit(mctx, None, L.EVP_sm3(), None, pkey) != 1:
            return None
        return L.EVP_DigestVerify(mctx, sig, len(sig), msg, len(msg)) == 1
    finally:
        L.EVP_MD_CTX_free(mctx)
        L.EVP_PKEY_CTX_free(pctx)
        drain_errors()


def check_tls13_cert_verify(trace, peer_x509, peer_is_server=True):
    """Which SM2 ID did the peer's TLS 1.3 CertificateVerify use?"""
    d = "received"
    seq, cv = [], None
    for dd, t, m in trace.msgs:
        if dd == d and t == 15:
            cv = m
            break
        seq.append(m)
    if cv is None:
        return None
    scheme = struct.unpack_from(">H", cv, 4)[0]
    sig = cv[8:8 + struct.unpack_from(">H", cv, 6)[0]]
    res = {"scheme": "0x%04X" % scheme, "scheme_name": SIGALG_NAMES.get(scheme, "?")}
    if scheme != 0x0708:
        return res
    ctxs = b"TLS 1.3, server CertificateVerify" if peer_is_server else \
        b"TLS 1.3, client CertificateVerify"
    tbs = b" " * 64 + ctxs + b"\x00" + tls13_transcript_hash(seq)
    pkey = lib().X509_get0_pubkey(peer_x509)
    res["verifies_with_id"] = None
    for sm2_id in (SM2_ID_RFC8998, SM2_ID_DEFAULT):
        if sm2_verify(pkey, sm2_id, sig, tbs):
            res["verifies_with_id"] = sm2_id.decode()
            break
    return res


# ---- a non-blocking TLS connection bounded by a deadline ---------------------------
class Conn:
    def __init__(self, ctx, sock, deadline, server=False, servername=None, check_host=None):
        self.L, self.sock, self.deadline, self.server = lib(), sock, deadline, server
        self.pending = b""  # application data read early by settle()
        sock.setblocking(False)
        self.ssl = self.L.SSL_new(ctx)
        check(self.ssl, "SSL_new")
        self.L.SSL_set_fd(self.ssl, sock.fileno())
        if servername:
            self.L.SSL_ctrl(self.ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, 0,
                            ctypes.c_char_p(servername.encode()))
        if check_host:
            check(self.L.SSL_set1_host(self.ssl, check_host.encode()) == 1, "SSL_set1_host")

    def _wait(self, err, stage):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TLSFailure(stage, "timeout")
        r, w = ([self.sock], []) if err == SSL_ERROR_WANT_READ else ([], [self.sock])
        ready = select.select(r, w, [], left)
        if err == SSL_ERROR_WANT_READ and ready[0]:
            # Tongsuo's NTLS state machine reports WANT_READ on EOF; do not spin on it.
            try:
                eof = self.sock.recv(1, socket.MSG_PEEK) == b""
            except OSError as e:
                raise TLSFailure(stage, "socket error: %s" % e)
            if eof:
                errs = drain_errors()
                raise TLSFailure(stage, "connection closed by peer (EOF)"
                                 + ("; " + "; ".join(errs) if errs else ""))

    def _fail(self, stage, ret, err):
        errs = drain_errors()
        if err == SSL_ERROR_SYSCALL and not errs:
            errs = ["unexpected EOF or connection reset (SSL_ERROR_SYSCALL, ret=%d, errno=%s)"
                    % (ret, os.strerror(ctypes.get_errno()) if ctypes.get_errno() else "0")]
        if stage == "handshake":
            vr = self.L.SSL_get_verify_result(self.ssl)
            if vr != X509_V_OK and any("certificate verify failed" in e for e in errs):
                stage = "verify"
                errs.append("X509 verify: %s (%d)"
                            % (self.L.X509_verify_cert_error_string(vr).decode(), vr))
        raise TLSFailure(stage, "; ".join(errs) or "SSL error %d" % err)

    def handshake(self):
        f = self.L.SSL_accept if self.server else self.L.SSL_connect
        while True:
            ret = f(self.ssl)
            if ret == 1:
                return
            err = self.L.SSL_get_error(self.ssl, ret)
            if err in (SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE):
                self._wait(err, "handshake")
                continue
            self._fail("handshake", ret, err)

    def send(self, data, stage="http2"):
        while data:
            ret = self.L.SSL_write(self.ssl, data, len(data))
            if ret > 0:
                data = data[ret:]
                continue
            err = self.L.SSL_get_error(self.ssl, ret)
            if err in (SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE):
                self._wait(err, stage)
                continue
            self._fail(stage, ret, err)

    def recv(self, n=16384, stage="http2"):
        """Returns bytes; b'' on clean close."""
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        buf = ctypes.create_string_buffer(n)
        while True:
            ret = self.L.SSL_read(self.ssl, buf, n)
            if ret > 0:
                return buf.raw[:ret]
            err = self.L.SSL_get_error(self.ssl, ret)
            if err in (SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE):
                self._wait(err, stage)
                continue
            if err == SSL_ERROR_ZERO_RETURN:
                return b""
            self._fail(stage, ret, err)

    def settle(self, seconds=0.5):
        """After a TLS 1.3 handshake the server may still reject our client certificate
        (its alert arrives after our Finished).  Read briefly to surface that; keep any
        application data (e.g. the server's HTTP/2 SETTINGS) for later recv() calls."""
        saved, self.deadline = self.deadline, min(self.deadline, time.monotonic() + seconds)
        try:
            self.pending = self.recv(stage="handshake")
        except TLSFailure as e:
            if e.error != "timeout":
                raise TLSFailure("handshake", "rejected after the handshake (TLS 1.3 client "
                                 "authentication?): " + e.error)
        finally:
            self.deadline = saved

    # -- facts about the established connection --
    def info(self):
        L = self.L
        c = L.SSL_get_current_cipher(self.ssl)
        out = {"protocol": L.SSL_get_version(self.ssl).decode(),
               "cipher": L.SSL_CIPHER_get_name(c).decode() if c else None,
               "cipher_id": "0x%04X" % L.SSL_CIPHER_get_protocol_id(c) if c else None}
        p, n = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_uint(0)
        L.SSL_get0_alpn_selected(self.ssl, ctypes.byref(p), ctypes.byref(n))
        out["alpn"] = ctypes.string_at(p, n.value).decode() if n.value else None
        out["tmp_key_curve"] = self.tmp_key_curve()
        return out

    def tmp_key_curve(self):
        L, pkey = self.L, P()
        if L.SSL_ctrl(self.ssl, SSL_CTRL_GET_PEER_TMP_KEY, 0, ctypes.byref(pkey)) != 1 or not pkey:
            drain_errors()
            return None
        try:
            kid = L.EVP_PKEY_id(pkey)
            if kid in (408, EVP_PKEY_SM2):  # EC / SM2: name of the curve
                grp = L.EC_KEY_get0_group(L.EVP_PKEY_get0(pkey))
                nid = L.EC_GROUP_get_curve_name(grp) if grp else 0
                return L.OBJ_nid2sn(nid).decode() if nid else None
            sn = L.OBJ_nid2sn(kid)
            return sn.decode() if sn else str(kid)
        finally:
            L.EVP_PKEY_free(pkey)

    def peer_cert(self):
        """(x509 pointer or None, subject, issuer). Caller frees with X509_free."""
        L = self.L
        x = L.SSL_get_peer_certificate(self.ssl)
        if not x:
            return None, None, None
        buf = ctypes.create_string_buffer(512)
        subj = L.X509_NAME_oneline(L.X509_get_subject_name(x), buf, 512).decode()
        iss = L.X509_NAME_oneline(L.X509_get_issuer_name(x), buf, 512).decode()
        return x, subj, iss

    def close(self):
        try:
            self.L.SSL_shutdown(self.ssl)
        finally:
            self.L.SSL_free(self.ssl)
            self.ssl = None
            self.sock.close()


def connect_tcp(host, port, deadline):
    left = deadline - time.monotonic()
    try:
        return socket.create_connection((host, port), timeout=max(left, 0.1))
    except OSError as e:
        raise TLSFailure("connect", "%s:%s: %s" % (host, port, e))
