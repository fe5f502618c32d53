#!/usr/bin/env python3
"""Disk bytes written per audited request: what the server process wrote to the block device
(`write_bytes` of /proc/PID/io) while `kms bench` encrypted 1 KiB with AES-256-GCM, divided by
the number of Encrypt records the trail gained, next to the size of one such record (its line in
the export).

    python3 bench/audit_io.py                        # target/release binaries
    python3 bench/audit_io.py --bin /tmp/old/bin     # another build, the same load

The server is `kms-server dev` in a temporary folder (a real sled store, dev PKI, audit on), as
bench/run.py starts it. Every call is audited, and a call is answered only once its record is
durable, so the bytes per request are the audit trail's cost on disk (sled's own writes for the
key's metadata are a few per run). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise SystemExit(f"no write_bytes in /proc/{pid}/io")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release", help="folder with kms-server and kms")
    ap.add_argument("--duration", type=int, default=10, help="seconds of load per run (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    server_bin, kms_bin = args.bin / "kms-server", args.bin / "kms"

    work = Path(tempfile.mkdtemp(prefix="kms-audit-io-"))
    dev = work / "kms-dev"
    port = free_port()
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(
        [str(server_bin), "dev", "--dir", str(dev), "--listen", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )

    def kms(who: str, *rest: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(kms_bin), "--profile", str(dev / "profiles" / f"{who}.toml"), *rest],
                              text=True, capture_output=True, check=check)

    def encrypt_records() -> tuple[int, float]:
        out = work / "audit.jsonl"
        kms("auditor", "audit", "export", "--out", str(out))
        sizes = [len(line) + 1 for line in out.read_text().splitlines()
                 if '"type":"record"' in line and '"operation":"Crypto/Encrypt"' in line]
        return len(sizes), (sum(sizes) / len(sizes) if sizes else 0.0)

    results = []
    try:
        deadline = time.time() + 120
        while not ((dev / "profiles" / "admin.toml").exists()
                   and kms("admin", "status", check=False).returncode == 0):
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"kms-server did not come up; see {work / 'server.log'}")
            time.sleep(0.5)
        kms("admin", "key", "create", "--purpose", "encrypt", "--algorithm", "aes-256-gcm", "--alias", "io-aes")
        before, _ = encrypt_records()
        for run in range(args.runs):
            time.sleep(1)
            w0 = write_bytes(proc.pid)
            bench = json.loads(kms("app", "bench", "--op", "encrypt", "--key", "io-aes", "--size", "1024",
                                   "--duration", str(args.duration), "--concurrency", str(args.concurrency),
                                   "--connections", "4", "--json").stdout)
            time.sleep(1)
            w1 = write_bytes(proc.pid)
            after, record = encrypt_records()
            n = after - before
            before = after
            results.append({"run": run + 1, "encrypt_records": n, "requests_per_s": round(bench["requests_per_s"]),
                            "write_bytes": w1 - w0, "bytes_per_request": round((w1 - w0) / n, 1),
                            "record_line_bytes": round(record, 1),
                            "ratio_to_record": round((w1 - w0) / n / record, 2)})
            print(json.dumps(results[-1]), flush=True)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    ratios = sorted(r["ratio_to_record"] for r in results)
    print(json.dumps({"bin": str(args.bin), "median_ratio_to_record": ratios[len(ratios) // 2],
                      "median_bytes_per_request": sorted(r["bytes_per_request"] for r in results)[len(results) // 2]}))


if __name__ == "__main__":
    main()
