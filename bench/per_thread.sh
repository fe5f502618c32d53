#!/usr/bin/env bash
# Where a request's server CPU and context switches go, per server thread, for one `kms bench` run.
#
#   bench/per_thread.sh [OP] [ALGORITHM] [PURPOSE] [SECONDS]     # default: encrypt sm4-gcm encrypt 10
#
# Starts `kms-server dev` (release build, fresh temporary directory), creates one key, snapshots
# /proc/PID/task/*/{stat,status} before and after `kms bench` (C=64 on K=4 connections, 1 KiB),
# and prints, per thread name, CPU µs and voluntary context switches per request. Threads that
# exit during the run (blocking-pool threads) are missed; the total line is the whole process.
set -euo pipefail

op="${1:-encrypt}" alg="${2:-sm4-gcm}" purpose="${3:-encrypt}" seconds="${4:-10}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release"
[ -x "$bin/kms-server" ] && [ -x "$bin/kms" ] ||
    { echo "build first: cargo build --release -p kms-server -p kms-cli" >&2; exit 2; }

work="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
(cd "$work" && setsid "$bin/kms-server" dev --dir "$work/dev" --listen "127.0.0.1:$port" >server.log 2>&1 &)
trap 'pkill -f -- "--listen 127.0.0.1:$port" || true; rm -rf "$work"' EXIT
for _ in $(seq 1 200); do
    [ -f "$work/dev/profiles/app.toml" ] &&
        "$bin/kms" --profile "$work/dev/profiles/admin.toml" status >/dev/null 2>&1 && break
    sleep 0.3
done
"$bin/kms" --profile "$work/dev/profiles/admin.toml" key create --purpose "$purpose" \
    --algorithm "$alg" --alias bench-key >/dev/null
pid="$(pgrep -f -- "--listen 127.0.0.1:$port" | head -1)"

# tid name voluntary-switches cpu-ticks
snapshot() {
    for task in /proc/"$pid"/task/*; do
        printf '%s %s %s %s\n' "${task##*/}" "$(tr ' ' _ <"$task/comm")" \
            "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$task/status")" \
            "$(awk '{print $14 + $15}' "$task/stat")"
    done | sort
}

snapshot >"$work/before"
"$bin/kms" --profile "$work/dev/profiles/app.toml" bench --op "$op" --key bench-key --size 1024 \
    --duration "$seconds" --concurrency 64 --connections 4 --json >"$work/run.json"
snapshot >"$work/after"

requests="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['requests'])" "$work/run.json")"
hz="$(getconf CLK_TCK)"
join "$work/before" "$work/after" | awk -v n="$requests" -v hz="$hz" '
    { name = $2; sw[name] += $6 - $3; cpu[name] += ($7 - $4) * 1e6 / hz }
    END { for (t in sw) printf "%-18s %8.1f µs/request %6.2f switches/request\n", t, cpu[t] / n, sw[t] / n }' |
    sort -k2 -n -r
python3 - "$work/run.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"total (process)    {d['server_cpu_us_per_request']:8.1f} µs/request   "
      f"{d['requests_per_s']:,.0f} requests/s, {d['errors']} errors")
EOF
