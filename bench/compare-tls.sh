#!/usr/bin/env bash
# What TLS costs: the same 3-node RingKV cluster (`ringkv-server dev`, release build, loopback,
# fsync on) once plaintext and once with `dev --tls` (TLS on every port, the CLI with the admin
# client certificate), alternating plain, tls, plain, tls for ROUNDS rounds, each on a fresh
# data directory, each system alone during its turn.
#
# Per round and mode: 1-client puts (latency: p50) and CLIENTS-client puts (throughput), both
# for DURATION seconds after WARMUP seconds of the same load. Writes
# bench/results/compare-tls.jsonl (every run's full report) and bench/results/compare-tls.md
# (medians over rounds, the ratios the issue asks for, the exact commands).
#
# Usage: bench/compare-tls.sh   (ROUNDS=3 DURATION=10 WARMUP=2 CLIENTS=256 VALUE=128 KEYS=10000)
# Every process it starts is stopped by PID on exit; every run is bounded in requests and
# seconds.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CLIENTS=${CLIENTS:-256}
VALUE=${VALUE:-128}
KEYS=${KEYS:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/bench/results}
mkdir -p "$OUT"

cd "$ROOT"
cargo build --release --bins
BIN=$ROOT/target/release

WORK=$(mktemp -d /tmp/ringkv-tls-cost.XXXXXX)
DEV_PID=""
stop_dev() {
    if [ -n "$DEV_PID" ]; then
        kill "$DEV_PID" 2>/dev/null || true
        wait "$DEV_PID" 2>/dev/null || true
        DEV_PID=""
    fi
}
trap 'stop_dev; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# Starts `dev` (plain or tls) on a fresh directory and waits (at most 60 s) for it to be ready.
start_dev() {
    local mode=$1 dir=$WORK/$1-$ROUND extra=()
    [ "$mode" = tls ] && extra=(--tls)
    "$BIN/ringkv-server" dev --nodes 3 --shards 8 --data-dir "$dir" "${extra[@]}" \
        >"$WORK/dev.out" 2>&1 &
    DEV_PID=$!
    local deadline=$((SECONDS + 60))
    until grep -q "Ctrl-C stops" "$WORK/dev.out"; do
        kill -0 "$DEV_PID" 2>/dev/null || { cat "$WORK/dev.out" >&2; return 1; }
        [ $SECONDS -lt $deadline ] || { echo "dev $mode not ready in 60 s" >&2; return 1; }
        sleep 0.2
    done
    FLAGS=()
    if [ "$mode" = tls ]; then
        FLAGS=(--cacert "$dir/certs/ca.pem" --cert "$dir/certs/client.pem"
            --key "$dir/certs/client.key")
    fi
    MODE=$mode
}

# One run: CASE, then `ringkv bench` arguments. Appends the report to the JSONL file.
bench() {
    local case=$1; shift
    local args=(--endpoints 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 "${FLAGS[@]}" bench
        --keys "$KEYS" --value-bytes "$VALUE" --seed 42 --warmup-secs "$WARMUP"
        --duration-secs "$DURATION" --requests 100000000 --json "$@")
    echo "round $ROUND $MODE $case: ringkv ${args[*]}" >&2
    "$BIN/ringkv" "${args[@]}" >"$WORK/run.json"
    python3 - "$WORK/run.json" "$ROUND" "$MODE" "$case" "${args[*]}" >>"$OUT/compare-tls.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"round": int(sys.argv[2]), "mode": sys.argv[3], "case": sys.argv[4],
                  "command": "ringkv " + sys.argv[5], "report": r}))
PY
}

: >"$OUT/compare-tls.jsonl"
for ROUND in $(seq 1 "$ROUNDS"); do
    for mode in plain tls; do
        start_dev "$mode"
        bench put-1 --op put --clients 1 --key-dist uniform
        bench "put-$CLIENTS" --op put --clients "$CLIENTS" --key-dist uniform
        stop_dev
    done
done

python3 - "$OUT/compare-tls.jsonl" "$OUT/compare-tls.md" \
    "ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CLIENTS=$CLIENTS VALUE=$VALUE KEYS=$KEYS bench/compare-tls.sh" \
    "$CLIENTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
clients = sys.argv[4]
def med(mode, case, f):
    return statistics.median(f(r["report"]) for r in rows if r["mode"] == mode and r["case"] == case)
thr = lambda r: r["throughput_ops_s"]
p50 = lambda r: r["latency_ms"]["p50"]
big = f"put-{clients}"
tp, tt = med("plain", big, thr), med("tls", big, thr)
lp, lt = med("plain", "put-1", p50), med("tls", "put-1", p50)
errors = sum(r["report"]["errors"] for r in rows)
lines = [
    "# What TLS costs (bench/compare-tls.sh)",
    "",
    f"Command: `{sys.argv[3]}`; medians over {max(r['round'] for r in rows)} alternating rounds.",
    "",
    "| case | plaintext | TLS | TLS vs plaintext |",
    "|---|---|---|---|",
    f"| put, {clients} clients: ops/s | {tp:.0f} | {tt:.0f} | {100 * tt / tp:.1f} % (goal ≥ 85 %) |",
    f"| put, 1 client: p50 ms | {lp:.3f} | {lt:.3f} | {lt - lp:+.3f} ms (goal ≤ +0.2 ms) |",
    "",
    f"Errors in all runs: {errors}.",
    "",
    "Every run:",
    "",
    "| round | mode | case | ops/s | p50 ms | p99 ms |",
    "|---|---|---|---|---|---|",
]
for r in rows:
    rep = r["report"]
    lines.append(f"| {r['round']} | {r['mode']} | {r['case']} | {rep['throughput_ops_s']:.0f} | "
                 f"{rep['latency_ms']['p50']:.3f} | {rep['latency_ms']['p99']:.3f} |")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines[:9]))
PY
echo "wrote $OUT/compare-tls.md"
