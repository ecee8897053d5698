#!/usr/bin/env bash
# Opt-in power-loss campaign: N seeded runs of `ringkv-jepsen test --nemesis power` (60 s of
# workload each, register and set workloads alternating), each node's data directory on its own
# fault filesystem. Prints one summary line per run and a total "N passed, M failed"; exits 1
# when any run failed. Needs root, iproute2, iptables and /dev/fuse (as CI has).
#
#   jepsen/power-campaign.sh [N]         N runs (default 20), seeds SEED, SEED+1, ... (default 1)
#   SEED=100 TIME_LIMIT=60 OUT=dir jepsen/power-campaign.sh 5
#
# Power cuts are strict: a directory entry survives only if its directory was fsynced.
# LENIENT_DIRS=1 passes --sync-dirs-after-start (the harness makes every directory durable once
# the cluster is first healthy), to separate directory-sync findings from others.
#
# Every run's report (history.jsonl, results.json, index.html, node logs) stays in
# $OUT/run-<i>-seed-<seed>; a failed run's line repeats its seed and report path.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-20}
seed0=${SEED:-1}
time_limit=${TIME_LIMIT:-60}
out=${OUT:-ringkv-jepsen-out/power-campaign}
target=${CARGO_TARGET_DIR:-target}
extra=()
[[ ${LENIENT_DIRS:-0} == 1 ]] && extra=(--sync-dirs-after-start)

# The same build as the test suite's (the workspace's binaries, dev profile).
cargo build --quiet --workspace --bins || exit 3
bin="$target/debug/ringkv-jepsen"
server="$target/debug/ringkv-server"
mkdir -p "$out"

passed=0
failed=0
for ((i = 0; i < runs; i++)); do
  seed=$((seed0 + i))
  if ((i % 2 == 0)); then workload=register; else workload=set; fi
  dir="$out/run-$i-seed-$seed"
  start=$(date +%s)
  "$bin" test --nemesis power --workload "$workload" --time-limit "$time_limit" \
    --seed "$seed" --out "$dir" --server-bin "$server" "${extra[@]}" >"$dir.stdout" 2>"$dir.stderr"
  code=$?
  took=$(($(date +%s) - start))
  case $code in
    0) verdict=VALID ;;
    1) verdict=INVALID ;;
    2) verdict=UNKNOWN ;;
    *) verdict="HARNESS-FAILURE($code)" ;;
  esac
  summary=$(grep -E '^(VALID|INVALID|UNKNOWN):' "$dir.stderr" | tail -1)
  [[ -z $summary ]] && summary=$(tail -1 "$dir.stderr")
  printf 'run %2d seed %-6s %-8s %-20s %4ss  %s\n' "$i" "$seed" "$workload" "$verdict" "$took" "$summary"
  if ((code == 0)); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "        repeat: $bin test --nemesis power --workload $workload --time-limit $time_limit --seed $seed --server-bin $server ${extra[*]}; report $dir"
  fi
done
echo "$passed passed, $failed failed"
((failed == 0))
