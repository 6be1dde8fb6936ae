#!/usr/bin/env bash
# Durable-write throughput of a 5-node cluster with many shards against the same 5 nodes with
# one group (3 replicas each way), side by side, alternating rounds; and how many groups' writes
# shared each fsync of a node's one log (from `status --json`: log_group_writes / log_batches).
#
#   bench/shards.sh                      # 10 shards, 64 clients, 10 s per round, 2 rounds each
#   SHARDS=20 CLIENTS=256 DURATION=20s ROUNDS=3 bench/shards.sh
#
# Needs a release build (`cargo build --release -p ringleader`) and python3. Writes only to a
# temporary directory and to loopback ports 7301-7305.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
BIN=${BIN:-target/release/ringleader}
SHARDS=${SHARDS:-10}
CLIENTS=${CLIENTS:-64}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
BASE_PORT=${BASE_PORT:-7301}
ENDPOINTS=$(seq -s, -f "127.0.0.1:%g" "$BASE_PORT" $((BASE_PORT + 4)))
WORK=$(mktemp -d)
trap '"$BIN" cluster down --dir "$WORK/cluster" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

# One round: a fresh cluster of `shards` shards, a write workload, the status before and after.
round() {
    local shards=$1 name=$2
    cluster_up "$BIN" 5 "$shards" "$WORK/cluster" "$BASE_PORT" "$ENDPOINTS" "$WORK/up.log"
    sleep 2 # leadership settles on the ring's preferences
    "$BIN" status --json --endpoints "$ENDPOINTS" >"$WORK/before.json" || true
    "$BIN" bench --workload write --clients "$CLIENTS" --duration "$DURATION" --keys 10000 \
        --value-bytes 256 --json --endpoints "$ENDPOINTS" >"$WORK/$name.json"
    "$BIN" status --json --endpoints "$ENDPOINTS" >"$WORK/after.json" || true
    "$BIN" cluster down --dir "$WORK/cluster" >/dev/null 2>&1
    wait || true
    python3 - "$WORK/$name.json" "$WORK/before.json" "$WORK/after.json" "$shards" <<'PY'
import json, sys
bench = json.load(open(sys.argv[1]))
before = {n.get("id"): n for n in json.load(open(sys.argv[2]))["nodes"] if n.get("up")}
after = {n.get("id"): n for n in json.load(open(sys.argv[3]))["nodes"] if n.get("up")}
batches = sum(after[i]["log_batches"] - before[i]["log_batches"] for i in after if i in before)
writes = sum(after[i]["log_group_writes"] - before[i]["log_group_writes"] for i in after if i in before)
per = writes / batches if batches else 0
bench["writes_per_fsync"] = per
json.dump(bench, open(sys.argv[1], "w"))
print(f"shards {sys.argv[4]:>3}: {bench.get('ops_per_sec', 0):9.0f} writes/s  "
      f"p50 {bench.get('p50_ms', 0):6.2f} ms  p99 {bench.get('p99_ms', 0):7.2f} ms  "
      f"groups' writes per fsync {per:.2f}")
PY
}

for r in $(seq "$ROUNDS"); do
    round 1 "one-$r"
    round "$SHARDS" "many-$r"
done
python3 - "$WORK" "$ROUNDS" "$SHARDS" <<'PY'
import json, sys
work, rounds, shards = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def mean(name, field):
    values = [json.load(open(f"{work}/{name}-{r}.json")).get(field, 0) for r in range(1, rounds + 1)]
    return sum(values) / len(values)
one, many = mean("one", "ops_per_sec"), mean("many", "ops_per_sec")
print(f"5 nodes, {shards} shards / one group: writes {many / one:.2f}x "
      f"({many:.0f}/s against {one:.0f}/s); writes per fsync {mean('many', 'writes_per_fsync'):.2f} "
      f"against {mean('one', 'writes_per_fsync'):.2f}")
PY
