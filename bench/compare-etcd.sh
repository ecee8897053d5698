#!/usr/bin/env bash
# RingKV against etcd, side by side: same machine, same load generator (`ringkv bench`, whose
# `--target etcd` drives etcd's v3 KV API with the very same workload code), same workload,
# alternating A B A B for ROUNDS rounds. Each system runs alone during its turn (the other is
# stopped), as a 3-node cluster on loopback with its data on disk and fsync on (etcd's default;
# RingKV always fsyncs before acknowledging).
#
# Writes bench/results/compare-etcd.md (medians over rounds, ratios, the exact commands),
# bench/results/compare-etcd.jsonl (every run's full report) and two SVG charts.
#
# Usage: bench/compare-etcd.sh   (ROUNDS=3 DURATION=10 KEYS=100000 VALUE=256 CLIENTS=256
#                                 RSS_KEYS=1000000)
# Installs Debian's etcd-server when etcd is missing (needs root). Every process it starts is
# stopped by PID on exit; every run is bounded in requests and seconds.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
# Issue 7's memory target: resident memory per node after loading RSS_KEYS keys of VALUE bytes
# (fresh cluster of each system, once each after the rounds; 0 skips it).
RSS_KEYS=${RSS_KEYS:-1000000}
DURATION=${DURATION:-10}
KEYS=${KEYS:-100000}
VALUE=${VALUE:-256}
CLIENTS=${CLIENTS:-256}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/bench/results}
mkdir -p "$OUT"

cd "$ROOT"
cargo build --release --bins
BIN=$ROOT/target/release
if ! command -v etcd >/dev/null; then
    apt-get update && apt-get install -y etcd-server
fi

WORK=$(mktemp -d /tmp/ringkv-compare.XXXXXX)
PIDS=()
stop_all() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && wait "$p" 2>/dev/null || true
    done
    PIDS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # URL, seconds
    local deadline=$((SECONDS + $2))
    until python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $1" >&2; return 1; }
        sleep 0.2
    done
}

rss_kib() { # sum of VmRSS of the current PIDS
    local total=0
    for p in "${PIDS[@]}"; do
        total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$p/status")))
    done
    echo "$total"
}

rss_kib_per_node() { # JSON list of each current PID's VmRSS
    local list="" p
    for p in "${PIDS[@]}"; do
        list+="$(awk '/VmRSS/ {print $2}' "/proc/$p/status"),"
    done
    echo "[${list%,}]"
}

# Loads RSS_KEYS fresh keys (every one verified afterwards), lets the nodes settle, and records
# each node's resident memory.
rss_after_load() {
    KEYS=$RSS_KEYS bench "put-$CLIENTS-load-$RSS_KEYS" --op put --clients "$CLIENTS" \
        --requests "$RSS_KEYS" --key-dist sequential --duration-secs 900 --verify
    sleep 5
    echo "{\"round\": $ROUND, \"system\": \"$TARGET\", \"case\": \"rss-node\", \"keys\": $RSS_KEYS, \"rss_kib\": $(rss_kib_per_node)}" \
        >>"$OUT/compare-etcd.jsonl"
}

start_etcd() {
    local dir=$WORK/etcd-$1 cluster="" i
    rm -rf "$dir"; mkdir -p "$dir"
    declare -ga CP=() PP=()
    for i in 1 2 3; do CP[$i]=$(free_port); PP[$i]=$(free_port); done
    for i in 1 2 3; do cluster+="e$i=http://127.0.0.1:${PP[$i]},"; done
    for i in 1 2 3; do
        etcd --name "e$i" --data-dir "$dir/e$i" \
            --listen-client-urls "http://127.0.0.1:${CP[$i]}" \
            --advertise-client-urls "http://127.0.0.1:${CP[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${PP[$i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${PP[$i]}" \
            --initial-cluster "${cluster%,}" --initial-cluster-state new \
            --initial-cluster-token ringkv-compare \
            --quota-backend-bytes 8589934592 --logger zap --log-level error \
            >"$dir/e$i.log" 2>&1 &
        PIDS+=($!)
    done
    for i in 1 2 3; do wait_http "http://127.0.0.1:${CP[$i]}/health" 30; done
    ENDPOINTS="127.0.0.1:${CP[1]},127.0.0.1:${CP[2]},127.0.0.1:${CP[3]}"
    TARGET=etcd
}

start_ringkv() {
    local dir=$WORK/ringkv-$1 peers="" i
    rm -rf "$dir"; mkdir -p "$dir"
    declare -ga CP=() AP=()
    for i in 1 2 3; do CP[$i]=$(free_port); AP[$i]=$(free_port); done
    for i in 1 2 3; do peers+="$i=127.0.0.1:${CP[$i]},"; done
    for i in 1 2 3; do
        "$BIN/ringkv-server" --id "$i" --listen "127.0.0.1:${CP[$i]}" --peers "${peers%,}" \
            --data-dir "$dir/n$i" --admin-listen "127.0.0.1:${AP[$i]}" \
            >"$dir/n$i.log" 2>&1 &
        PIDS+=($!)
    done
    for i in 1 2 3; do wait_http "http://127.0.0.1:${AP[$i]}/ready" 30; done
    ENDPOINTS="127.0.0.1:${CP[1]},127.0.0.1:${CP[2]},127.0.0.1:${CP[3]}"
    TARGET=ringkv
}

# One run: CASE NAME, then `ringkv bench` arguments. Appends the report to the JSONL file.
bench() {
    local case=$1; shift
    local args=(--endpoints "$ENDPOINTS" bench --target "$TARGET" --keys "$KEYS"
        --value-bytes "$VALUE" --seed 42 --json "$@")
    echo "round $ROUND $TARGET $case: ringkv ${args[*]}" >&2
    "$BIN/ringkv" "${args[@]}" >"$WORK/run.json"
    python3 - "$WORK/run.json" "$ROUND" "$TARGET" "$case" "${args[*]}" >>"$OUT/compare-etcd.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"round": int(sys.argv[2]), "system": sys.argv[3], "case": sys.argv[4],
                  "command": "ringkv " + sys.argv[5], "report": r}))
PY
}

grid() {
    bench put-1 --op put --clients 1 --requests 100000000 --duration-secs "$DURATION"
    bench put-$CLIENTS-load --op put --clients "$CLIENTS" --requests "$KEYS" \
        --key-dist sequential --duration-secs 300 --verify
    bench put-$CLIENTS --op put --clients "$CLIENTS" --requests 100000000 \
        --key-dist uniform --duration-secs "$DURATION"
    bench put-$CLIENTS-zipf --op put --clients "$CLIENTS" --requests 100000000 \
        --key-dist zipf:0.99 --duration-secs "$DURATION"
    bench get-$CLIENTS --op get --skip-preload --clients "$CLIENTS" --requests 100000000 \
        --key-dist uniform --duration-secs "$DURATION"
    bench get-serializable-$CLIENTS --op get-serializable --skip-preload --clients "$CLIENTS" \
        --requests 100000000 --key-dist uniform --duration-secs "$DURATION"
    echo "{\"round\": $ROUND, \"system\": \"$TARGET\", \"case\": \"rss\", \"rss_kib\": $(rss_kib)}" \
        >>"$OUT/compare-etcd.jsonl"
}

: >"$OUT/compare-etcd.jsonl"
for ROUND in $(seq 1 "$ROUNDS"); do
    start_etcd "$ROUND"; grid; stop_all
    start_ringkv "$ROUND"; grid; stop_all
done
if [ "$RSS_KEYS" -gt 0 ]; then
    ROUND=1
    start_etcd rss; rss_after_load; stop_all
    start_ringkv rss; rss_after_load; stop_all
fi

python3 "$ROOT/bench/summarize.py" "$OUT/compare-etcd.jsonl" "$OUT" \
    "ROUNDS=$ROUNDS DURATION=$DURATION KEYS=$KEYS VALUE=$VALUE CLIENTS=$CLIENTS RSS_KEYS=$RSS_KEYS bench/compare-etcd.sh"
echo "wrote $OUT/compare-etcd.md"
