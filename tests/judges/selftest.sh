#!/usr/bin/env bash
# Self-test of the Tongsuo judge: make an SM2 PKI, start tongsuo_server.py in RFC 8998 and
# TLCP modes, run tongsuo_client.py against them and check the JSON it prints.
# Needs: python3 -m pip install tongsuopy==1.0.1 h2==4.4.1 ; the openssl binary (3.0).
# Exit status 0 only if every case passed.  KEEP_TMP=1 keeps the temp dir for inspection.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/tongsuo-judge.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    [ "${KEEP_TMP:-0}" = 1 ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 -c "import tongsuopy, h2" || { echo "missing: python3 -m pip install tongsuopy==1.0.1 h2==4.4.1"; exit 2; }
"$here/gen_certs.sh" "$tmp/pki" >/dev/null || { echo "certificate generation failed"; exit 2; }
K=$tmp/pki
python3 "$here/tongsuo_client.py" --version

# start_server NAME ARGS... : starts tongsuo_server.py, sets PORT_<NAME>
start_server() {
    local name=$1; shift
    local log=$tmp/server-$name.log
    python3 "$here/tongsuo_server.py" --port 0 --lifetime 180 "$@" >"$log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do
        if [ -s "$log" ]; then
            local port
            port=$(head -1 "$log" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("port",""))' 2>/dev/null)
            if [ -n "$port" ]; then printf -v "PORT_$name" %s "$port"; return 0; fi
            echo "server $name failed: $(cat "$log")"; exit 2
        fi
        sleep 0.2
    done
    echo "server $name did not start"; exit 2
}

passed=0 failed=0
# run_case NAME "key=value key~substring ..." CLIENT-ARGS... : checks on the client's JSON
# (dotted keys reach into nested objects; = compares str(value), ~ tests containment)
run_case() {
    local name=$1 expect=$2; shift 2
    local out
    out=$(timeout 30 python3 "$here/tongsuo_client.py" "$@" 2>&1)
    if python3 - "$out" "$expect" <<'EOF'
import json, sys
out, expect = sys.argv[1], sys.argv[2].split()
try:
    d = json.loads(out.strip().splitlines()[-1])
except Exception:
    print("  not JSON:", out); sys.exit(1)
bad = []
for kv in expect:
    op = "~" if "~" in kv.split("=", 1)[0] else "="
    k, v = kv.split(op, 1)
    cur = d
    for part in k.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if (op == "=" and str(cur) != v) or (op == "~" and v not in str(cur)):
        bad.append("%s: want %s%s, got %s" % (k, op, v, cur))
if bad:
    print("  " + "\n  ".join(bad)); print("  output:", out); sys.exit(1)
EOF
    then
        echo "PASS $name"; passed=$((passed + 1))
    else
        echo "FAIL $name"; failed=$((failed + 1))
    fi
    [ -n "${VERBOSE:-}" ] && echo "  $out"
}

TLCP_ALL=ECC-SM2-SM4-GCM-SM3:ECDHE-SM2-SM4-GCM-SM3:ECC-SM2-SM4-CBC-SM3:ECDHE-SM2-SM4-CBC-SM3
start_server rfc --mode rfc8998 --cert "$K/server_sign.crt" --key "$K/server_sign.key" \
    --ca "$K/ca.crt" --verify-client require --alpn h2
start_server strict --mode rfc8998 --sm-strict --groups SM2:X25519 \
    --cert "$K/server_sign.crt" --key "$K/server_sign.key"
start_server tlcp --mode tlcp --cipher "$TLCP_ALL" --alpn h2 \
    --sign-cert "$K/server_sign.crt" --sign-key "$K/server_sign.key" \
    --enc-cert "$K/server_enc.crt" --enc-key "$K/server_enc.key" --ca "$K/ca.crt" --verify-client require
start_server tlcpopen --mode tlcp --cipher "$TLCP_ALL" \
    --sign-cert "$K/server_sign.crt" --sign-key "$K/server_sign.key" \
    --enc-cert "$K/server_enc.crt" --enc-key "$K/server_enc.key" --ca "$K/ca.crt" --verify-client none

RFC_CLIENT=(--ca "$K/ca.crt" --cert "$K/client_sign.crt" --key "$K/client_sign.key" --servername localhost)
TLCP_CLIENT=(--mode tlcp --ca "$K/ca.crt" --servername localhost
    --sign-cert "$K/client_sign.crt" --sign-key "$K/client_sign.key"
    --enc-cert "$K/client_enc.crt" --enc-key "$K/client_enc.key")
OKH2="ok=True http2.server_settings_received=True"

run_case "rfc8998 TLS_SM4_GCM_SM3 curveSM2 mutual auth + HTTP/2 preface" \
    "$OKH2 protocol=TLSv1.3 cipher=TLS_SM4_GCM_SM3 cipher_id=0x00C6 group=curveSM2 group_id=0x0029 alpn=h2 client_cert_sent=True server_certificate_verify.scheme=0x0708 server_certificate_verify.verifies_with_id=TLSv1.3+GM+Cipher+Suite" \
    --mode rfc8998 --port "$PORT_rfc" "${RFC_CLIENT[@]}" --cipher TLS_SM4_GCM_SM3 \
    --groups SM2 --sigalgs sm2sig_sm3 --alpn h2 --http2-preface
run_case "rfc8998 gRPC health check over h2" \
    "ok=True cipher=TLS_SM4_GCM_SM3 grpc_health.grpc_status=0 grpc_health.health_status=SERVING" \
    --mode rfc8998 --port "$PORT_rfc" "${RFC_CLIENT[@]}" --alpn h2 --grpc-health
run_case "rfc8998 strict client, key_share X25519 first -> HelloRetryRequest to curveSM2" \
    "ok=True cipher=TLS_SM4_GCM_SM3 group=curveSM2" \
    --mode rfc8998 --port "$PORT_strict" --ca "$K/ca.crt" --sm-strict --groups X25519:SM2
run_case "standard TLS 1.3 suites only -> refused by the RFC 8998-only server" \
    "ok=False stage=handshake error~14094410 alerts~received:handshake_failure" \
    --mode tls13-standard --port "$PORT_rfc" "${RFC_CLIENT[@]}"
run_case "rfc8998 without a client certificate -> certificate_required" \
    "ok=False stage=handshake alerts~received:certificate_required" \
    --mode rfc8998 --port "$PORT_rfc" --ca "$K/ca.crt"
run_case "rfc8998 wrong CA -> verify failure" \
    "ok=False stage=verify" \
    --mode rfc8998 --port "$PORT_strict" --ca "$K/client_sign.crt"
for c in ECC-SM2-SM4-GCM-SM3:0xE053 ECDHE-SM2-SM4-GCM-SM3:0xE051 ECC-SM2-SM4-CBC-SM3:0xE013 ECDHE-SM2-SM4-CBC-SM3:0xE011; do
    run_case "tlcp ${c%%:*} double certs mutual auth + HTTP/2 preface" \
        "$OKH2 protocol=NTLSv1.1 cipher=${c%%:*} cipher_id=${c##*:} alpn=h2 client_cert_sent=True" \
        "${TLCP_CLIENT[@]}" --port "$PORT_tlcp" --cipher "${c%%:*}" --alpn h2 --http2-preface
done
run_case "tlcp ECC-SM2-SM4-GCM-SM3 without client certs (server does not ask)" \
    "$OKH2 cipher=ECC-SM2-SM4-GCM-SM3 client_cert_requested=False" \
    --mode tlcp --ca "$K/ca.crt" --port "$PORT_tlcpopen" --cipher ECC-SM2-SM4-GCM-SM3 --http2-preface
run_case "tlcp ECDHE-SM2-SM4-GCM-SM3 without client certs -> fails (SM2DHE needs the client enc key)" \
    "ok=False stage=handshake" \
    --mode tlcp --ca "$K/ca.crt" --port "$PORT_tlcpopen" --cipher ECDHE-SM2-SM4-GCM-SM3
run_case "tlcp ECDHE-SM2-SM4-GCM-SM3 with client certs, server verify none (it still asks)" \
    "ok=True cipher=ECDHE-SM2-SM4-GCM-SM3 client_cert_requested=True group=curveSM2" \
    "${TLCP_CLIENT[@]}" --port "$PORT_tlcpopen" --cipher ECDHE-SM2-SM4-GCM-SM3

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
