#!/usr/bin/env python3
"""Lists a gRPC server's services with Python's grpcio-reflection client (reflection v1alpha,
the only version it speaks), over mutual TLS.

Prints one JSON line: {"ok": true, "services": [...], "method": "..."} or
{"ok": false, "code": "PERMISSION_DENIED", "details": "..."}; exits 0 when ok, 1 otherwise.
Install: python3 -m pip install grpcio grpcio-reflection (.ci/prerequisites does this).
"""

import argparse
import json
import sys

import grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--target", required=True, help="host:port")
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--servername", default="localhost")
    p.add_argument(
        "--symbol",
        help="also resolve this fully qualified method (its descriptor comes over reflection too)",
    )
    args = p.parse_args()

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))
    options = [("grpc.ssl_target_name_override", args.servername)]
    out = {}
    try:
        with grpc.secure_channel(args.target, creds, options) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            db = ProtoReflectionDescriptorDatabase(channel)
            out["services"] = sorted(db.get_services())
            if args.symbol:
                out["method"] = db.FindFileContainingSymbol(args.symbol).name
        out["ok"] = True
    except grpc.RpcError as e:
        out = {"ok": False, "code": e.code().name, "details": e.details()}
    except grpc.FutureTimeoutError:
        out = {"ok": False, "code": "TIMEOUT", "details": "the channel did not become ready"}
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
