#!/usr/bin/env bash
# Opt-in failover campaign (issue 18): N seeded runs of `ringkv-jepsen test` under leader-losing
# faults, asserting that every run is valid and that every `availability.failover_ms` value (per
# fault kind: the longest time from a fault's start to the first acknowledged write, invoked
# after the start, on any shard; see jepsen/src/harness/checks.rs) is at most LIMIT_MS. Prints
# one line per run with each kind's value and the worst fault; exits 1 when any run failed the
# bound or was not valid, 3 when the harness itself failed. Needs root, iproute2, iptables,
# jq (and /dev/fuse for power).
#
#   jepsen/failover-campaign.sh [N]     N runs (default 3), seeds SEED, SEED+1, ... (default 1)
#   SEED=11 TIME_LIMIT=40 LIMIT_MS=1000 NEMESIS=kill,pause,partition,partition-one-way,power \
#     OUT=dir PROFILE=release jepsen/failover-campaign.sh 5
#
# Timing-sensitive by nature, so it is not part of the test suite: run it on a machine that is
# not busy with other work, and read the per-fault values in each run's results.json.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=${1:-3}
seed0=${SEED:-1}
time_limit=${TIME_LIMIT:-40}
limit_ms=${LIMIT_MS:-1000}
nemesis=${NEMESIS:-kill,pause,partition,partition-one-way}
out=${OUT:-ringkv-jepsen-out/failover-campaign}
profile=${PROFILE:-debug}
target=${CARGO_TARGET_DIR:-target}

if [[ $profile == release ]]; then
  cargo build --quiet --release -p ringkv-server -p ringkv-jepsen --bins || exit 3
else
  cargo build --quiet -p ringkv-server -p ringkv-jepsen --bins || exit 3
fi
bin="$target/$profile/ringkv-jepsen"
server="$target/$profile/ringkv-server"
mkdir -p "$out"

passed=0
failed=0
broken=0
for ((i = 0; i < runs; i++)); do
  seed=$((seed0 + i))
  dir="$out/run-$i-seed-$seed"
  "$bin" test --nemesis "$nemesis" --time-limit "$time_limit" --seed "$seed" --out "$dir" \
    --server-bin "$server" >"$dir.stdout" 2>"$dir.stderr"
  code=$?
  if [[ ! -f $dir/results.json ]]; then
    echo "run $i seed $seed: harness failure ($code): $(tail -1 "$dir.stderr")"
    broken=$((broken + 1))
    continue
  fi
  valid=$(jq -r '.valid' "$dir/results.json")
  worst=$(jq -r '[.availability.failover_ms | to_entries[] | .value] | max // 0' "$dir/results.json")
  kinds=$(jq -r '.availability.failover_ms | to_entries | map("\(.key)=\(.value | floor)") | join(" ")' "$dir/results.json")
  slowest=$(jq -r '.availability.failover_by_fault | max_by(.failover_ms) // {} | "\(.detail // "-") shard \(.worst_shard // "-")"' "$dir/results.json")
  ok=$(jq -r --argjson l "$limit_ms" '([.availability.failover_ms[]] | all(. <= $l)) and .valid == true' "$dir/results.json")
  printf 'run %d seed %-5s valid=%-5s failover_ms: %s (max %.0f: %s)\n' "$i" "$seed" "$valid" "$kinds" "$worst" "$slowest"
  if [[ $ok == true ]]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "        over ${limit_ms} ms or not valid; report $dir"
  fi
done
echo "$passed passed, $failed failed, $broken harness failures (limit ${limit_ms} ms, nemesis $nemesis)"
((broken > 0)) && exit 3
((failed > 0)) && exit 1
exit 0
