#!/usr/bin/env python3
"""Calling the KMS from Python with grpcio over mutual TLS (see README.md beside this file).

    kms_example.py --profile PROFILE demo --key ENCRYPT_KEY --sign-key SM2_KEY
    kms_example.py --profile PROFILE seal --key ENCRYPT_KEY [--context K=V ...] IN OUT
    kms_example.py --profile PROFILE open [--context K=V ...] IN OUT

`demo` runs every call once and prints one JSON line per step. `seal` and `open` are envelope
encryption of a file of any size that fits in memory: one GenerateDataKey, the file encrypted
here with the plaintext data key, and only the encrypted data key kept, in the file's header.

The gRPC stubs are generated at start from proto/kms/v1/*.proto (grpcio-tools) into a temporary
folder: the .proto files are the API, and nothing generated is kept in the repository.
"""
import argparse
import atexit
import importlib.resources
import json
import os
import shutil
import struct
import sys
import tempfile
import tomllib
from pathlib import Path

import grpc
from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent.parent.parent / "proto"
# Every call gets a deadline: a KMS that does not answer must not hang the application.
TIMEOUT_SECONDS = 10

# The sealed-file layout (the same in examples/node):
#   algorithm (1 byte: 1 = SM4-GCM, 2 = AES-256-GCM) | length of the encrypted data key (u16, big
#   endian) | encrypted data key | nonce (12 bytes) | ciphertext | tag (16 bytes)
# Everything before the nonce is the AEAD's associated data, so a header swapped from another
# file does not open. The encryption context is bound by the KMS to the encrypted data key.
ALGORITHMS = {1: ("SM4-GCM", "sm4"), 2: ("AES-256-GCM", "aes-256")}
NONCE_LEN = 12
TAG_LEN = 16


def generate_stubs():
    """Compiles the .proto files into a temporary folder and imports the generated modules."""
    out = tempfile.mkdtemp(prefix="kms-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    protos = sorted(str(p) for p in (PROTO_DIR / "kms" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
            f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        sys.exit(f"kms_example.py: protoc failed on {PROTO_DIR}")
    sys.path.insert(0, out)
    global admin_pb2, admin_pb2_grpc, crypto_pb2, crypto_pb2_grpc
    from kms.v1 import admin_pb2, admin_pb2_grpc, crypto_pb2, crypto_pb2_grpc


def connect(profile_path):
    """An mTLS channel from a KMS CLI profile (endpoint, ca, cert, key; paths relative to it)."""
    profile_path = Path(profile_path)
    profile = tomllib.loads(profile_path.read_text())
    if profile.get("tls", "standard") != "standard":
        sys.exit(f"kms_example.py: {profile_path} asks for tls = {profile['tls']!r}; "
                 "this example speaks standard TLS 1.3: use a profile without a tls line")
    here = profile_path.parent

    def read(name):
        return (here / profile[name]).read_bytes()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read("ca"), private_key=read("key"), certificate_chain=read("cert"))
    target = profile["endpoint"].removeprefix("https://")
    return grpc.secure_channel(target, credentials)


def parse_context(pairs):
    context = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"kms_example.py: --context takes KEY=VALUE, not {pair!r}")
        context[key] = value
    return context


def emit(**fields):
    print(json.dumps(fields), flush=True)


def refused(call):
    """Runs a call that must fail; returns the gRPC status code's name and the message."""
    try:
        call()
    except grpc.RpcError as e:
        return {"code": e.code().name, "message": e.details()}
    return {"code": "OK", "message": "the call succeeded"}


# --- envelope encryption with a data key ---------------------------------------------------

def aead_encrypt(algorithm, key, nonce, aad, plaintext):
    if algorithm == 1:
        import gmssl_pyx  # GmSSL: SM4-GCM
        ciphertext, tag = gmssl_pyx.sm4_gcm_encrypt(key, nonce, aad, plaintext)
        return ciphertext + tag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(algorithm, key, nonce, aad, sealed):
    """The plaintext, or None when the data does not authenticate."""
    if algorithm == 1:
        import gmssl_pyx
        try:
            return gmssl_pyx.sm4_gcm_decrypt(key, nonce, aad, sealed[:-TAG_LEN], sealed[-TAG_LEN:])
        except gmssl_pyx.GmsslInnerError:
            return None
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    try:
        return AESGCM(key).decrypt(nonce, sealed, aad)
    except InvalidTag:
        return None


def seal(channel, key, context, plaintext):
    """Envelope-encrypts `plaintext`: the data key's algorithm follows the master key's."""
    admin = admin_pb2_grpc.KeyAdminStub(channel)
    crypto = crypto_pb2_grpc.CryptoStub(channel)
    described = admin.DescribeKey(admin_pb2.KeyRequest(key=key), timeout=TIMEOUT_SECONDS)
    algorithm = 2 if described.key.algorithm == "aes-256-gcm" else 1
    data_key = crypto.GenerateDataKey(
        crypto_pb2.GenerateDataKeyRequest(
            key=key, key_spec=ALGORITHMS[algorithm][1], context=context),
        timeout=TIMEOUT_SECONDS)
    header = struct.pack(">BH", algorithm, len(data_key.ciphertext)) + data_key.ciphertext
    nonce = os.urandom(NONCE_LEN)
    # The plaintext data key lives only in this call (Python cannot wipe it; keep its scope small).
    sealed = aead_encrypt(algorithm, data_key.plaintext, nonce, header, plaintext)
    return header + nonce + sealed, ALGORITHMS[algorithm][0]


class NotAuthentic(Exception):
    pass


def open_sealed(channel, context, blob):
    """The plaintext of a sealed file; NotAuthentic when the file was changed."""
    if len(blob) < 3:
        raise NotAuthentic("too short for a sealed file")
    algorithm, key_len = struct.unpack(">BH", blob[:3])
    if algorithm not in ALGORITHMS or len(blob) < 3 + key_len + NONCE_LEN + TAG_LEN:
        raise NotAuthentic("not a sealed file")
    header = blob[:3 + key_len]
    nonce = blob[3 + key_len:3 + key_len + NONCE_LEN]
    crypto = crypto_pb2_grpc.CryptoStub(channel)
    # Decrypt opens the data key (the blob names its master key); the context must match.
    data_key = crypto.Decrypt(
        crypto_pb2.DecryptRequest(ciphertext=header[3:], context=context),
        timeout=TIMEOUT_SECONDS)
    plaintext = aead_decrypt(algorithm, data_key.plaintext, nonce, header,
                             blob[3 + key_len + NONCE_LEN:])
    if plaintext is None:
        raise NotAuthentic("the file does not authenticate")
    return plaintext


# --- the commands ----------------------------------------------------------------------------

def demo(channel, key, sign_key):
    crypto = crypto_pb2_grpc.CryptoStub(channel)

    # 1. Encrypt and decrypt up to 64 KiB, with an encryption context bound to the ciphertext.
    secret = b"card 6222 0000 1111 2222"
    context = {"order": "42"}
    enc = crypto.Encrypt(crypto_pb2.EncryptRequest(key=key, plaintext=secret, context=context),
                         timeout=TIMEOUT_SECONDS)
    emit(step="encrypt", key_id=enc.key_id, key_version=enc.key_version,
         ciphertext_bytes=len(enc.ciphertext))
    dec = crypto.Decrypt(crypto_pb2.DecryptRequest(ciphertext=enc.ciphertext, context=context),
                         timeout=TIMEOUT_SECONDS)
    emit(step="decrypt", round_trip=dec.plaintext == secret, key_id=dec.key_id)

    # 2. Another context, or a changed ciphertext, is refused (INVALID_ARGUMENT).
    emit(step="decrypt with another context", **refused(lambda: crypto.Decrypt(
        crypto_pb2.DecryptRequest(ciphertext=enc.ciphertext, context={"order": "43"}),
        timeout=TIMEOUT_SECONDS)))
    tampered = bytearray(enc.ciphertext)
    tampered[-1] ^= 1
    emit(step="decrypt tampered ciphertext", **refused(lambda: crypto.Decrypt(
        crypto_pb2.DecryptRequest(ciphertext=bytes(tampered), context=context),
        timeout=TIMEOUT_SECONDS)))

    # 3. Envelope encryption: 1 MiB, more than Encrypt takes, under a data key.
    document = os.urandom(1 << 20)
    doc_context = {"file": "report.pdf"}
    sealed, algorithm = seal(channel, key, doc_context, document)
    emit(step="envelope seal", algorithm=algorithm, bytes=len(document), sealed_bytes=len(sealed))
    emit(step="envelope open", round_trip=open_sealed(channel, doc_context, sealed) == document)
    changed = bytearray(sealed)
    changed[-100] ^= 1
    try:
        open_sealed(channel, doc_context, bytes(changed))
        emit(step="envelope open tampered", refused=False)
    except NotAuthentic as e:
        emit(step="envelope open tampered", refused=True, message=str(e))

    # 4. SM2 sign and verify (SM3 with the default ID 1234567812345678, DER signature).
    message = b"transfer 100.00 CNY to 6222 0000 3333 4444"
    signed = crypto.Sign(crypto_pb2.SignRequest(key=sign_key, message=message),
                         timeout=TIMEOUT_SECONDS)
    emit(step="sign", key_id=signed.key_id, signature_bytes=len(signed.signature))
    for step, msg in [("verify", message), ("verify altered message", message + b"0")]:
        verified = crypto.Verify(
            crypto_pb2.VerifyRequest(key=sign_key, message=msg, signature=signed.signature),
            timeout=TIMEOUT_SECONDS)
        emit(step=step, valid=verified.valid)

    # 5. Anyone with the public key verifies outside the KMS, here with GmSSL.
    public = crypto.GetPublicKey(crypto_pb2.GetPublicKeyRequest(key=sign_key),
                                 timeout=TIMEOUT_SECONDS)
    import gmssl_pyx
    # An SM2 SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y; GmSSL takes x || y.
    point = public.public_key_der[-65:]
    valid = point[0] == 4 and gmssl_pyx.sm2_verify(point[1:], message, signed.signature)
    emit(step="verify outside the KMS", tool="gmssl-pyx", algorithm=public.algorithm, valid=valid)


def main():
    parser = argparse.ArgumentParser(description="Call the KMS from Python over mutual TLS.")
    parser.add_argument("--profile", required=True, help="a KMS CLI profile (TOML)")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="every call once, one JSON line per step")
    p.add_argument("--key", required=True, help="an SM4-GCM or AES-256-GCM key")
    p.add_argument("--sign-key", required=True, help="an SM2 signing key")
    for name in ("seal", "open"):
        p = commands.add_parser(name, help=f"{name} a file with envelope encryption")
        if name == "seal":
            p.add_argument("--key", required=True, help="an SM4-GCM or AES-256-GCM key")
        p.add_argument("--context", action="append", metavar="KEY=VALUE")
        p.add_argument("input")
        p.add_argument("output")
    args = parser.parse_args()

    generate_stubs()
    with connect(args.profile) as channel:
        try:
            if args.command == "demo":
                demo(channel, args.key, args.sign_key)
            elif args.command == "seal":
                sealed, algorithm = seal(channel, args.key, parse_context(args.context),
                                         Path(args.input).read_bytes())
                Path(args.output).write_bytes(sealed)
                emit(step="seal", algorithm=algorithm, sealed_bytes=len(sealed))
            else:
                plaintext = open_sealed(channel, parse_context(args.context),
                                        Path(args.input).read_bytes())
                Path(args.output).write_bytes(plaintext)
                emit(step="open", bytes=len(plaintext))
        except grpc.RpcError as e:
            sys.exit(f"kms_example.py: the KMS said {e.code().name}: {e.details()}")
        except NotAuthentic as e:
            sys.exit(f"kms_example.py: {e}")


if __name__ == "__main__":
    main()
