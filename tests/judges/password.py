#!/usr/bin/env python3
"""Outside judge for the password shield (issue 22 item 2).

Written from docs/FORMATS.md alone, with libraries the KMS does not use: GmSSL (`gmssl-pyx`)
for SM3 and HMAC-SM3, PBKDF2 (RFC 8018 §5.2) written out here over GmSSL's HMAC-SM3, and the
Argon2 reference implementation (`argon2-cffi`, libargon2) for argon2id.

    password.py seal PASSWORD TIMESTAMP NONCE_HEX                -> sealed structure, hex
    password.py hmac-sm3 KEY_HEX DATA_HEX                        -> tag hex
    password.py pbkdf2-sm3 PASSWORD_HEX SALT_HEX ITERATIONS LEN  -> derived key hex
    password.py argon2id PASSWORD_HEX SALT_HEX M_KIB T P LEN     -> raw hash hex
    password.py verify STORED PEPPER_KEY_HEX PASSWORD            -> "match" or "no-match"
    password.py selftest                                         -> "ok"

`verify` takes a whole stored hash ($kms-pepper$…), computes the pepper HMAC-SM3 under the
given key bytes and checks the standard PHC string after the prefix: argon2-cffi's
PasswordHasher for argon2id, PBKDF2-HMAC-SM3 from here for pbkdf2-sm3.

Exit 0 with one line on stdout, or 1 with the reason on stderr.
"""

import base64
import hmac
import struct
import sys


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    import gmssl_pyx

    return gmssl_pyx.sm3_hmac(key, data)


def pbkdf2(prf, password: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    """RFC 8018 §5.2: T_i = U_1 ^ … ^ U_c, U_1 = PRF(P, S ‖ INT(i)), U_j = PRF(P, U_{j-1})."""
    out = b""
    block = 1
    while len(out) < length:
        u = prf(password, salt + struct.pack(">I", block))
        t = bytearray(u)
        for _ in range(iterations - 1):
            u = prf(password, u)
            for k, byte in enumerate(u):
                t[k] ^= byte
        out += bytes(t)
        block += 1
    return out[:length]


def seal(password: str, timestamp: int, nonce: bytes) -> bytes:
    """The sealed structure: KPW1, u64 timestamp, u8 nonce length, nonce, u16 password length,
    password (all big-endian)."""
    pw = password.encode("utf-8")
    return b"KPW1" + struct.pack(">QB", timestamp, len(nonce)) + nonce + struct.pack(">H", len(pw)) + pw


def b64d(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


def verify(stored: str, pepper_key: bytes, password: str) -> bool:
    prefix = "$kms-pepper$"
    if not stored.startswith(prefix):
        raise ValueError("not a $kms-pepper$ hash")
    params, inner = stored[len(prefix):].split("$", 1)
    inner = "$" + inner
    peppered = hmac_sm3(pepper_key, password.encode("utf-8"))
    if inner.startswith("$argon2id$"):
        import argon2

        try:
            return argon2.PasswordHasher().verify(inner, peppered)
        except argon2.exceptions.VerifyMismatchError:
            return False
    fields = inner.split("$")
    if len(fields) != 5 or fields[1] != "pbkdf2-sm3":
        raise ValueError("unknown hash " + fields[1])
    p = dict(kv.split("=") for kv in fields[2].split(","))
    salt, want = b64d(fields[3]), b64d(fields[4])
    got = pbkdf2(hmac_sm3, peppered, salt, int(p["i"]), int(p["l"]))
    return hmac.compare_digest(got, want)


def selftest() -> None:
    # The hand-written PBKDF2 against Python's own, over HMAC-SHA-256 (RFC 7914 §11's vector).
    import hashlib

    def sha256(k, m):
        return hmac.new(k, m, hashlib.sha256).digest()

    mine = pbkdf2(sha256, b"passwd", b"salt", 1, 64)
    assert mine == hashlib.pbkdf2_hmac("sha256", b"passwd", b"salt", 1, 64)
    assert mine.hex().startswith("55ac046e56e3089fec1691c22544b605")
    assert pbkdf2(sha256, b"password", b"salt", 4096, 32) == hashlib.pbkdf2_hmac(
        "sha256", b"password", b"salt", 4096, 32
    )
    # GmSSL's HMAC-SM3 against HMAC written out over GmSSL's SM3 (RFC 2104).
    import gmssl_pyx

    key, msg = bytes(range(32)), b"abc"
    k = key.ljust(64, b"\0")
    inner = gmssl_pyx.sm3_hash(bytes(b ^ 0x36 for b in k) + msg)
    outer = gmssl_pyx.sm3_hash(bytes(b ^ 0x5C for b in k) + inner)
    assert outer == hmac_sm3(key, msg)


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "seal":
        print(seal(args[0], int(args[1]), bytes.fromhex(args[2])).hex())
    elif cmd == "hmac-sm3":
        print(hmac_sm3(bytes.fromhex(args[0]), bytes.fromhex(args[1])).hex())
    elif cmd == "pbkdf2-sm3":
        print(pbkdf2(hmac_sm3, bytes.fromhex(args[0]), bytes.fromhex(args[1]), int(args[2]), int(args[3])).hex())
    elif cmd == "argon2id":
        from argon2.low_level import Type, hash_secret_raw

        pw, salt = bytes.fromhex(args[0]), bytes.fromhex(args[1])
        m, t, p, n = (int(a) for a in args[2:6])
        print(hash_secret_raw(pw, salt, t, m, p, n, Type.ID, 19).hex())
    elif cmd == "verify":
        print("match" if verify(args[0], bytes.fromhex(args[1]), args[2]) else "no-match")
    elif cmd == "selftest":
        selftest()
        print("ok")
    else:
        raise ValueError("unknown command " + cmd)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except Exception as e:  # noqa: BLE001 - the judge reports any failure as one line
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
