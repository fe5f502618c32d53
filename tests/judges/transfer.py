#!/usr/bin/env python3
"""Outside judge for key import and the ciphertext blob (issue 19).

Written from docs/FORMATS.md alone, with libraries the KMS does not use: Python `cryptography`
(OpenSSL) for AES-256-GCM and GmSSL (`gmssl-pyx`) for SM4-GCM and SM2 encryption.

    transfer.py seal KEY_HEX KEY_ID VERSION CONTEXT_JSON PLAINTEXT_HEX ALG   -> blob hex
    transfer.py open KEY_HEX CONTEXT_JSON BLOB_HEX                          -> plaintext hex
    transfer.py gmssl-sm2-wrap PUBLIC_PEM_FILE MATERIAL_HEX                 -> wrapped hex

ALG is sm4-gcm or aes-256-gcm. Exit 0 with one line on stdout, or 1 with the reason on stderr.
"""

import json
import os
import struct
import sys
import uuid

MAGIC = b"KM"
FORMAT_V1 = 1
ALG_CODES = {"sm4-gcm": 1, "aes-256-gcm": 2}
HEADER_LEN = 36
TAG_LEN = 16


def canonical_context(pairs: dict) -> bytes:
    """count, then each pair as (u32 length, UTF-8 bytes) key and value, in key order."""
    out = struct.pack(">I", len(pairs))
    for key in sorted(pairs, key=lambda k: k.encode()):
        for part in (key.encode(), pairs[key].encode()):
            out += struct.pack(">I", len(part)) + part
    return out


def gcm_seal(alg: str, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
    if alg == "aes-256-gcm":
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(key).encrypt(nonce, plaintext, aad)
    import gmssl_pyx

    ciphertext, tag = gmssl_pyx.sm4_gcm_encrypt(key, nonce, aad, plaintext)
    return ciphertext + tag


def gcm_open(alg: str, key: bytes, nonce: bytes, aad: bytes, body: bytes) -> bytes:
    if alg == "aes-256-gcm":
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(key).decrypt(nonce, body, aad)
    import gmssl_pyx

    return gmssl_pyx.sm4_gcm_decrypt(key, nonce, aad, body[:-TAG_LEN], body[-TAG_LEN:])


def seal(key_hex, key_id, version, context_json, plaintext_hex, alg) -> str:
    nonce = os.urandom(12)
    header = (
        MAGIC
        + bytes([FORMAT_V1, ALG_CODES[alg]])
        + uuid.UUID(key_id).bytes
        + struct.pack(">I", int(version))
        + nonce
    )
    assert len(header) == HEADER_LEN
    aad = header + canonical_context(json.loads(context_json))
    body = gcm_seal(alg, bytes.fromhex(key_hex), nonce, aad, bytes.fromhex(plaintext_hex))
    return (header + body).hex()


def open_blob(key_hex, context_json, blob_hex) -> str:
    blob = bytes.fromhex(blob_hex)
    if len(blob) < HEADER_LEN + TAG_LEN or blob[:2] != MAGIC or blob[2] != FORMAT_V1:
        raise ValueError("not a v1 blob")
    alg = {v: k for k, v in ALG_CODES.items()}[blob[3]]
    header, body = blob[:HEADER_LEN], blob[HEADER_LEN:]
    nonce = header[24:36]
    aad = header + canonical_context(json.loads(context_json))
    return gcm_open(alg, bytes.fromhex(key_hex), nonce, aad, body).hex()


def gmssl_sm2_wrap(pem_file, material_hex) -> str:
    """GM/T 0009 SM2 encryption (DER, C1C3C2) of the material by GmSSL, to an SPKI PEM."""
    import base64

    import gmssl_pyx

    with open(pem_file) as f:
        lines = [l for l in f.read().splitlines() if l and not l.startswith("-----")]
    spki = base64.b64decode("".join(lines))
    # The SM2 point is the SPKI's last 65 bytes: 04 || x || y; GmSSL takes x || y.
    point = spki[-65:]
    if point[0] != 4:
        raise ValueError("not an uncompressed SM2 public key")
    return gmssl_pyx.sm2_encrypt(point[1:], bytes.fromhex(material_hex)).hex()


def main(argv):
    commands = {"seal": seal, "open": open_blob, "gmssl-sm2-wrap": gmssl_sm2_wrap}
    if len(argv) < 2 or argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(commands[argv[1]](*argv[2:]))
    except Exception as e:  # the judge's verdict, not a crash: say why
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
