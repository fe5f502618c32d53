#!/usr/bin/env python3
"""Outside judge for tokens (issue 22): FF1 and the token formats, from the texts alone.

FF1 is written here from NIST SP 800-38G (Algorithms 7 and 8, with the PRF of Algorithm 6)
with Python integers, over a block cipher from a library the KMS does not use: SM4 from GmSSL
(`gmssl-pyx`) and AES-256 from Python `cryptography`. The token formats, tweak, cycle walking,
Luhn handling and pseudonyms follow docs/FORMATS.md ("Tokens").

    ff1.py selftest                                        -> "ok" (NIST samples 1-3 and 7-9)
    ff1.py kat SPEC KEY_HEX RADIX TWEAK_HEX NUMERALS       -> ciphertext numerals (comma list)
    ff1.py tokenize SPEC KEY_HEX FORMAT CONTEXT_JSON       -> one token per line of stdin
    ff1.py detokenize SPEC KEY_HEX FORMAT CONTEXT_JSON     -> one value per line of stdin

SPEC is sm4-ff1, aes-256-ff1 (FF1) or hmac-sm3 (pseudonyms, tokenize only). Values and tokens
come one per line on stdin and leave one per line on stdout. Exit 0, or 1 with the reason on
stderr.
"""

import json
import struct
import sys

DIGITS = "0123456789"
ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FORMATS = {
    "digits": DIGITS,
    "alphanumeric": ALPHANUMERIC,
    "pan": DIGITS,
    "pan-luhn-invalid": DIGITS,
}
MIN_DOMAIN = 10**6
MAX_WALK = 1000


def block_cipher(spec: str, key: bytes):
    """CIPH_K: one 16-byte block in, one out."""
    if spec == "sm4-ff1":
        import gmssl_pyx

        assert len(key) == 16
        # CTR's first keystream block is CIPH_K(IV): encrypting 16 zero bytes gives it.
        return lambda block: gmssl_pyx.sm4_ctr_encrypt(key, block, bytes(16))
    if spec in ("aes-256-ff1", "aes-128", "aes-256"):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        # ECB on one block is the bare block cipher, which is what FF1's PRF is built from.
        enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        return lambda block: enc.update(block)
    raise SystemExit(f"unknown spec {spec}")


def num(x, radix):
    n = 0
    for d in x:
        n = n * radix + d
    return n


def str_m(n, radix, m):
    out = []
    for _ in range(m):
        out.append(n % radix)
        n //= radix
    return out[::-1]


def prf(ciph, data: bytes) -> bytes:
    """CBC-MAC with a zero IV (SP 800-38G Algorithm 6)."""
    y = bytes(16)
    for i in range(0, len(data), 16):
        y = ciph(bytes(a ^ b for a, b in zip(y, data[i : i + 16])))
    return y


def ff1(ciph, radix: int, tweak: bytes, x, encrypt: bool):
    """SP 800-38G Algorithm 7 (encrypt) and 8 (decrypt)."""
    n = len(x)
    u, v = n // 2, n - n // 2
    a, b = list(x[:u]), list(x[u:])
    # b = ceil(ceil(v * log2(radix)) / 8), exactly: ceil(log2(N)) is (N - 1).bit_length().
    byte_len = ((radix**v - 1).bit_length() + 7) // 8
    d = 4 * ((byte_len + 3) // 4) + 4
    t = len(tweak)
    p = bytes([1, 2, 1]) + radix.to_bytes(3, "big") + bytes([10, u % 256])
    p += n.to_bytes(4, "big") + t.to_bytes(4, "big")
    rounds = range(10) if encrypt else range(9, -1, -1)
    for i in rounds:
        src = b if encrypt else a
        q = tweak + bytes((-t - byte_len - 1) % 16) + bytes([i])
        q += num(src, radix).to_bytes(byte_len, "big")
        r = prf(ciph, p + q)
        s = r
        j = 1
        while len(s) < d:
            s += ciph(bytes(x ^ y for x, y in zip(r, j.to_bytes(16, "big"))))
            j += 1
        y = int.from_bytes(s[:d], "big")
        m = u if i % 2 == 0 else v
        if encrypt:
            c = (num(a, radix) + y) % radix**m
            a, b = b, str_m(c, radix, m)
        else:
            c = (num(b, radix) - y) % radix**m
            b, a = a, str_m(c, radix, m)
    return a + b


def selftest():
    key128 = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
    key256 = bytes.fromhex(
        "2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F7F036D6F04FC6A94"
    )
    samples = [
        (key128, 10, "", "0123456789", "2433477484"),
        (key128, 10, "39383736353433323130", "0123456789", "6124200773"),
        (key128, 36, "3737373770717273373737", "0123456789abcdefghi", "a9tv40mll9kdu509eum"),
        (key256, 10, "", "0123456789", "6657667009"),
        (key256, 10, "39383736353433323130", "0123456789", "1001623463"),
        (key256, 36, "3737373770717273373737", "0123456789abcdefghi", "xs8a0azh2avyalyzuwd"),
    ]
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    for key, radix, tweak, pt, ct in samples:
        ciph = block_cipher("aes-256" if len(key) == 32 else "aes-128", key)
        x = [alphabet.index(c) for c in pt]
        y = ff1(ciph, radix, bytes.fromhex(tweak), x, True)
        if "".join(alphabet[i] for i in y) != ct:
            raise SystemExit(f"NIST sample {pt} under a {len(key) * 8}-bit key: wrong ciphertext")
        if ff1(ciph, radix, bytes.fromhex(tweak), y, False) != x:
            raise SystemExit(f"NIST sample {ct}: wrong plaintext")
    return "ok"


def canonical_context(pairs: dict) -> bytes:
    """count, then each pair as (u32 length, UTF-8 bytes) key and value, in key order."""
    out = struct.pack(">I", len(pairs))
    for key in sorted(pairs, key=lambda k: k.encode()):
        for part in (key.encode(), pairs[key].encode()):
            out += struct.pack(">I", len(part)) + part
    return out


def luhn_valid(digits) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def split(fmt: str, text: str):
    """(numerals, start, end): the part start..end is tokenised. Refuses what FORMATS.md refuses."""
    alphabet = FORMATS[fmt]
    if not text or any(c not in alphabet for c in text):
        raise SystemExit("value outside the format")
    x = [alphabet.index(c) for c in text]
    start, end = 0, len(x)
    if fmt.startswith("pan"):
        if not 13 <= len(x) <= 19:
            raise SystemExit("a PAN has 13 to 19 digits")
        start, end = 6, len(x) - 4
    if len(alphabet) ** (end - start) < MIN_DOMAIN:
        raise SystemExit("domain below 10^6")
    return x, start, end


def prefix(label: bytes, fmt: str, context: dict) -> bytes:
    return label + b"\0" + fmt.encode() + b"\0" + canonical_context(context)


def walk(ciph, tweak, x, start, end, encrypt):
    for _ in range(MAX_WALK):
        x[start:end] = ff1(ciph, 10, tweak, x[start:end], encrypt)
        if luhn_valid(x):
            return x
    raise SystemExit("cycle walk did not end")


def step_last_middle(x, by):
    x[len(x) - 5] = (x[len(x) - 5] + by) % 10


def pseudonym_numerals(key: bytes, pre: bytes, value: bytes, radix: int, count: int):
    import gmssl_pyx

    limit = 256 - 256 % radix
    out, j = [], 0
    while len(out) < count:
        block = gmssl_pyx.sm3_hmac(
            key, pre + struct.pack(">I", len(value)) + value + struct.pack(">I", j)
        )
        out += [b % radix for b in block if b < limit]
        j += 1
    return out[:count]


def tokenize(spec, key, fmt, context, text):
    alphabet = FORMATS[fmt]
    x, start, end = split(fmt, text)
    if fmt.startswith("pan") and not luhn_valid(x):
        raise SystemExit("a PAN must pass the Luhn check")
    if spec == "hmac-sm3":
        pre = prefix(b"kms-pseudonym/v1", fmt, context)
        x[start:end] = pseudonym_numerals(key, pre, text.encode(), len(alphabet), end - start)
        if fmt.startswith("pan"):
            while not luhn_valid(x):
                step_last_middle(x, 1)
    else:
        ciph = block_cipher(spec, key)
        tweak = prefix(b"kms-tokenize/v1", fmt, context)
        if fmt.startswith("pan"):
            x = walk(ciph, tweak, x, start, end, True)
        else:
            x = ff1(ciph, len(alphabet), tweak, x, True)
    if fmt == "pan-luhn-invalid":
        step_last_middle(x, 1)
    return "".join(alphabet[i] for i in x)


def detokenize(spec, key, fmt, context, text):
    alphabet = FORMATS[fmt]
    x, start, end = split(fmt, text)
    ciph = block_cipher(spec, key)
    tweak = prefix(b"kms-tokenize/v1", fmt, context)
    if fmt == "pan-luhn-invalid":
        if luhn_valid(x):
            raise SystemExit("not a pan-luhn-invalid token")
        step_last_middle(x, 9)
    if fmt.startswith("pan"):
        if not luhn_valid(x):
            raise SystemExit("not a token of this format")
        x = walk(ciph, tweak, x, start, end, False)
    else:
        x = ff1(ciph, len(alphabet), tweak, x, False)
    return "".join(alphabet[i] for i in x)


def main(argv):
    if argv[:1] == ["selftest"]:
        print(selftest())
        return
    if argv[:1] == ["kat"] and len(argv) == 6:
        _, spec, key_hex, radix, tweak_hex, numerals = argv
        x = [int(n) for n in numerals.split(",")]
        y = ff1(block_cipher(spec, bytes.fromhex(key_hex)), int(radix), bytes.fromhex(tweak_hex), x, True)
        print(",".join(str(n) for n in y))
        return
    if len(argv) != 5 or argv[0] not in ("tokenize", "detokenize"):
        raise SystemExit(__doc__)
    op, spec, key_hex, fmt, context_json = argv
    key = bytes.fromhex(key_hex)
    context = json.loads(context_json)
    run = tokenize if op == "tokenize" else detokenize
    for line in sys.stdin.read().splitlines():
        print(run(spec, key, fmt, context, line))


if __name__ == "__main__":
    main(sys.argv[1:])
