#!/usr/bin/env python3
"""Reference decryptor for the KMS streaming envelope (docs/ENVELOPE.md), written from the
document alone with Python's `cryptography` (SM4-GCM, AES-256-GCM, HKDF over SM3 or SHA-256).

    decrypt.py header ENVELOPE            # prints the header as JSON: algorithm, frame length,
                                          # wrapped data key (base64) and context, for Decrypt
    decrypt.py open ENVELOPE DATA_KEY_HEX # writes the plaintext to stdout

It reads one frame at a time, so memory stays constant whatever the size. Exit status 1 and a
message on stderr when anything does not authenticate; nothing is written for a bad frame.
"""
import base64
import json
import struct
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"KMSF"
TAG = 16
ALGORITHMS = {1: ("SM4-GCM", 16), 2: ("AES-256-GCM", 32)}


def fail(message):
    sys.stderr.write("decrypt.py: " + message + "\n")
    sys.exit(1)


def read_exact(f, n, what):
    data = f.read(n)
    if len(data) != n:
        fail("the header is cut short (" + what + ")")
    return data


def read_header(f):
    fixed = read_exact(f, 4 + 1 + 1 + 4 + 32 + 2, "fixed fields")
    if fixed[:4] != MAGIC:
        fail("not a KMS streaming envelope")
    if fixed[4] != 1:
        fail("unsupported version %d" % fixed[4])
    if fixed[5] not in ALGORITHMS:
        fail("unknown algorithm code %d" % fixed[5])
    frame_len = struct.unpack(">I", fixed[6:10])[0]
    salt = fixed[10:42]
    key_len = struct.unpack(">H", fixed[42:44])[0]
    wrapped = read_exact(f, key_len, "wrapped data key")
    ctx_len_bytes = read_exact(f, 4, "context length")
    ctx = read_exact(f, struct.unpack(">I", ctx_len_bytes)[0], "context")
    # Canonical context: u32 count, then u32-length-prefixed key and value, in key order.
    count, pos, context = struct.unpack(">I", ctx[:4])[0], 4, {}
    for _ in range(count):
        pair = []
        for _ in range(2):
            n = struct.unpack(">I", ctx[pos:pos + 4])[0]
            pair.append(ctx[pos + 4:pos + 4 + n].decode("utf-8"))
            pos += 4 + n
        context[pair[0]] = pair[1]
    raw = fixed + wrapped + ctx_len_bytes + ctx
    return {
        "algorithm": fixed[5],
        "frame_len": frame_len,
        "salt": salt,
        "wrapped_key": wrapped,
        "context": context,
        "raw": raw,
    }


def frame_cipher(header, data_key):
    name, key_len = ALGORITHMS[header["algorithm"]]
    if len(data_key) != key_len:
        fail("%s needs a %d-byte data key" % (name, key_len))
    sm4 = header["algorithm"] == 1
    digest = hashes.Hash(hashes.SM3() if sm4 else hashes.SHA256())
    digest.update(header["raw"])
    aad = digest.finalize()
    kdf = HKDF(
        algorithm=hashes.SM3() if sm4 else hashes.SHA256(),
        length=key_len,
        salt=header["salt"],
        info=b"kms-stream-v1 frame key" + aad,
    )
    key = kdf.derive(data_key)
    block = algorithms.SM4 if sm4 else algorithms.AES

    def open_frame(index, last, frame):
        nonce = b"\x00" * 7 + struct.pack(">I", index) + (b"\x01" if last else b"\x00")
        body, tag = frame[:-TAG], frame[-TAG:]
        d = Cipher(block(key), modes.GCM(nonce, tag)).decryptor()
        d.authenticate_additional_data(aad)
        try:
            return d.update(body) + d.finalize()
        except InvalidTag:
            fail("frame %d does not authenticate" % index)

    return open_frame


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("header", "open"):
        fail("usage: decrypt.py header ENVELOPE | decrypt.py open ENVELOPE DATA_KEY_HEX")
    with open(sys.argv[2], "rb") as f:
        header = read_header(f)
        if sys.argv[1] == "header":
            name = ALGORITHMS[header["algorithm"]][0]
            json.dump({
                "algorithm": name,
                "frame_len": header["frame_len"],
                "wrapped_key": base64.b64encode(header["wrapped_key"]).decode(),
                "context": header["context"],
            }, sys.stdout)
            return
        open_frame = frame_cipher(header, bytes.fromhex(sys.argv[3]))
        full = header["frame_len"] + TAG
        out = sys.stdout.buffer
        index = 0
        while True:
            frame = f.read(full)
            if len(frame) < TAG:
                fail("truncated: no final frame after %d frames" % index)
            last = len(frame) < full
            out.write(open_frame(index, last, frame))
            if last:
                return
            index += 1


if __name__ == "__main__":
    main()
