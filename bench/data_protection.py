#!/usr/bin/env python3
"""Benchmarks of the financial data-protection services (issue 22), one run, on this machine:

    python3 bench/data_protection.py             # about 4 minutes after the release build
    python3 bench/data_protection.py --quick     # 3 s windows, one run
    python3 bench/data_protection.py --no-postgres

- Tokenize: 1,000 distinct card numbers per call (format pan), SM4-FF1 and AES-256-FF1 keys:
  tokens/s and server CPU per token, beside the raw token (criterion `tokenize/<spec>/pan-1000`,
  1,000 distinct numbers per iteration: the Luhn walk's length varies by number).
- VerifyRequest with the replay guard: requests signed by the load tool with HMAC-SM3 (the
  partner's copy of an imported MAC key), a new nonce each, alternating with `mac` over the same
  1 KiB on the same key, so that the difference is what verification and the guard add; on the
  embedded sled store and on a PostgreSQL node (the sled store migrated into a throwaway server
  that `kms-test-postgres` starts, as `bench/run.py` does).
- HashPassword at the configured cost (argon2id 32 MiB, 3 passes), one hash per core at a time.

It reuses `bench/run.py`'s servers and writes only the part of docs/BENCHMARKS.md between the
`generated:data-protection` markers, and docs/benchmarks/data-protection.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # noqa: E402  (bench/run.py: the servers, the bench call, the formatting)

DOC = base.DOC
RAW = base.ROOT / "docs" / "benchmarks" / "data-protection.json"
BEGIN, END = "<!-- generated:data-protection:begin -->", "<!-- generated:data-protection:end -->"

# alias -> (purpose, algorithm, origin)
KEYS = {
    "t-sm4": ("tokenize", "sm4-ff1", "generated"),
    "t-aes": ("tokenize", "aes-256-ff1", "generated"),
    "p-login": ("password", "sm2", "generated"),
    "p-pepper": ("pepper", "hmac-sm3", "generated"),
    "r-partner": ("mac", "hmac-sm3", "external"),
}


def setup(server: base.Server, work: Path) -> Path:
    """The keys; the partner's MAC key imported from a file the load tool signs with."""
    for alias, (purpose, alg, origin) in KEYS.items():
        server.kms("admin", "key", "create", "--purpose", purpose, "--algorithm", alg,
                   "--alias", alias, "--origin", origin)
    partner = work / "partner-mac.key"
    partner.write_bytes(os.urandom(32))
    server.kms("admin", "key", "import", "r-partner", "--material", str(partner), "--wrap-locally")
    return partner


def bench(server: base.Server, op: str, alias: str, size: int, duration: int, extra: list[str]) -> dict:
    return base.bench_once(server, op, alias, size, duration, extra)


def token_rows(server: base.Server, duration: int, runs: int) -> list[dict]:
    rows = []
    for label, alias, raw_id in [("SM4-FF1", "t-sm4", "tokenize/sm4-ff1/pan-1000"),
                                 ("AES-256-FF1", "t-aes", "tokenize/aes-256-ff1/pan-1000")]:
        results = []
        for i in range(runs):
            base.log(f"Tokenize {label}: run {i + 1}/{runs}")
            results.append(bench(server, "tokenize", alias, 16, duration, ["--batch", "1000"]))
        rows.append({
            "label": f"Tokenize 1,000 PANs per call, {label}", "raw_id": raw_id, "runs": results,
            "items_per_s": base.median_of(results, "items_per_s"),
            "server_cpu_us_per_item": base.median_of(results, "server_cpu_us_per_item"),
            "p99_ms": base.median_of(results, "p99_ms"),
            "errors": sum(r["errors"] for r in results),
        })
    return rows


def verify_rows(server: base.Server, store: str, partner: Path, duration: int, runs: int) -> list[dict]:
    """VerifyRequest and MAC of the same 1 KiB on the same key, alternating run by run."""
    verify, mac = [], []
    for i in range(runs):
        base.log(f"VerifyRequest ({store}): run {i + 1}/{runs}")
        verify.append(bench(server, "verify-request", "r-partner", 1024, duration,
                            ["--partner-key", str(partner)]))
        base.log(f"HMAC-SM3 1 KiB ({store}): run {i + 1}/{runs}")
        mac.append(bench(server, "mac", "r-partner", 1024, duration, []))
    row = {"label": f"VerifyRequest, HMAC-SM3, 1 KiB body, {store}", "runs": verify, "mac_runs": mac}
    for name, results in (("", verify), ("mac_", mac)):
        row[f"{name}requests_per_s"] = base.median_of(results, "requests_per_s")
        row[f"{name}p50_ms"] = base.median_of(results, "p50_ms")
        row[f"{name}p99_ms"] = base.median_of(results, "p99_ms")
        row[f"{name}server_cpu_us"] = base.median_of(results, "server_cpu_us_per_request")
        row[f"{name}errors"] = sum(r["errors"] for r in results)
    return [row]


def password_row(server: base.Server, duration: int, runs: int) -> dict:
    results = []
    for i in range(runs):
        base.log(f"HashPassword: run {i + 1}/{runs}")
        # Two loops: the server hashes one password per core at a time.
        out = server.kms(
            "app", "bench", "--op", "hash-password", "--key", "p-login", "--pepper", "p-pepper",
            "--duration", str(duration), "--concurrency", "2", "--connections", "1", "--json", check=False,
        )
        if out.returncode != 0 and not out.stdout.strip():
            raise SystemExit(f"kms bench --op hash-password failed: {out.stderr}")
        results.append(json.loads(out.stdout))
    return {
        "label": "HashPassword, argon2id 32 MiB × 3, 2 in flight", "runs": results,
        "requests_per_s": base.median_of(results, "requests_per_s"),
        "p50_ms": base.median_of(results, "p50_ms"),
        "p99_ms": base.median_of(results, "p99_ms"),
        "server_cpu_us": base.median_of(results, "server_cpu_us_per_request"),
        "errors": sum(r["errors"] for r in results),
    }


def criterion_tokens() -> dict[str, float]:
    base.run(["cargo", "bench", "--locked", "-p", "kms-core", "--bench", "primitives", "--", "--noplot",
              "tokenize/"], cwd=base.ROOT)
    return base.criterion_estimates()


def text(tokens: list[dict], verifies: list[dict], password: dict | None, estimates: dict, args) -> list[str]:
    f = base.fmt
    out = [
        f"Generated by `python3 bench/data_protection.py{' --quick' if args.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d')}, {base.machine()}. `kms bench` with C=64 request loops on K=4 connections "
        f"(HashPassword: C=2), {args.duration} s after 1 s warm-up, median of {args.runs} run(s); the load tool "
        "runs on the same machine.",
        "",
        "| Tokenize | tokens/s | p99 ms per call | server CPU µs/token | raw µs/token (1 core) | ratio | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in tokens:
        # The criterion row tokenises 1,000 distinct numbers per iteration.
        whole = base.lookup(estimates, r["raw_id"])
        raw = whole / 1000 if whole else None
        cpu = r["server_cpu_us_per_item"]
        out.append(
            f"| {r['label']} | {f(r['items_per_s'], ',.0f')} | {f(r['p99_ms'], '.1f')} | {f(cpu, '.2f')} "
            f"| {f(raw, '.2f')} | {f(cpu / raw if (cpu and raw) else None, '.2f')} | {r['errors']} |"
        )
    out += [
        "",
        "| VerifyRequest (alternating with GenerateMac, same key and 1 KiB) | req/s | p50 ms | p99 ms "
        "| server CPU µs/req | MAC req/s | MAC CPU µs/req | CPU ratio verify/MAC | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in verifies:
        cpu, mac = r["server_cpu_us"], r["mac_server_cpu_us"]
        out.append(
            f"| {r['label']} | {f(r['requests_per_s'], ',.0f')} | {f(r['p50_ms'], '.2f')} | {f(r['p99_ms'], '.2f')} "
            f"| {f(cpu, '.1f')} | {f(r['mac_requests_per_s'], ',.0f')} | {f(mac, '.1f')} "
            f"| {f(cpu / mac if (cpu and mac) else None, '.2f')} | {r['errors'] + r['mac_errors']} |"
        )
    if password:
        out += [
            "",
            f"{password['label']}: {f(password['requests_per_s'], '.1f')} hashes/s, p50 {f(password['p50_ms'], '.1f')} ms, "
            f"p99 {f(password['p99_ms'], '.1f')} ms, server CPU {f((password['server_cpu_us'] or 0) / 1000, '.1f')} ms "
            f"per hash, errors {password['errors']}.",
        ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="3 s windows, one run")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--skip-criterion", action="store_true", help="reuse target/criterion as it is")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.runs = 3, 1
    base.log("building release binaries")
    base.run(["cargo", "build", "--release", "--locked", "-p", "kms-server", "-p", "kms-cli", "-p",
              "kms-test-postgres"], cwd=base.ROOT)
    estimates = base.criterion_estimates() if args.skip_criterion else criterion_tokens()
    work = Path(tempfile.mkdtemp(prefix="kms-bench-dp-"))
    server = base.Server(work)
    try:
        partner = setup(server, work)
        tokens = token_rows(server, args.duration, args.runs)
        verifies = verify_rows(server, "sled", partner, args.duration, args.runs)
        password = password_row(server, args.duration, args.runs)
        if not args.no_postgres:
            server.stop()
            database = base.Postgres()
            node = None
            try:
                node = base.PostgresNode(server, database.url, work)
                verifies += verify_rows(node, "PostgreSQL node", partner, args.duration, args.runs)
            finally:
                if node is not None:
                    node.stop()
                database.stop()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    RAW.parent.mkdir(parents=True, exist_ok=True)
    RAW.write_text(json.dumps({"tokens": tokens, "verify_request": verifies, "hash_password": password},
                              indent=1))
    doc = DOC.read_text()
    if BEGIN not in doc:
        doc += f"\n## Financial data-protection services (issue 22)\n\n{BEGIN}\n{END}\n"
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + BEGIN + "\n" + "\n".join(text(tokens, verifies, password, estimates, args)) + "\n"
                   + END + tail)
    base.log(f"wrote {DOC.relative_to(base.ROOT)} and {RAW.relative_to(base.ROOT)}")


if __name__ == "__main__":
    main()
