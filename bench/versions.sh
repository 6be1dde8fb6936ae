#!/usr/bin/env bash
# Two builds of ringleader side by side: the same cluster shape and write workload on each,
# alternating fresh clusters, then the ratios new/old (throughput, p50, p99). For "what did this
# change buy", measured in one run on one machine.
#
#   OLD=/tmp/rl-old NEW=target/release/ringleader bench/versions.sh
#   NODES=5 SHARDS=10 CLIENTS=64 DURATION=10s ROUNDS=3 OLD=... NEW=... bench/versions.sh
#   CLIENTS=64 CONNECTIONS=1 OLD=... NEW=... bench/versions.sh   (64 requests pipelined on one
#   connection; both clusters driven by NEW's bench, which knows --connections: the two builds
#   must then speak the same protocol version)
#
# Build the old one from a worktree of the old commit into the same target directory:
#   git worktree add --detach /tmp/old <commit>
#   (cd /tmp/old && CARGO_TARGET_DIR=$PWD/target cargo build --release -p ringleader) ...
# Needs python3. Writes only to a temporary directory and to loopback ports 7401 and up.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
OLD=${OLD:?set OLD to the old ringleader binary}
NEW=${NEW:-target/release/ringleader}
NODES=${NODES:-3}
SHARDS=${SHARDS:-1}
CLIENTS=${CLIENTS:-1}
CONNECTIONS=${CONNECTIONS:-$CLIENTS}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
BASE_PORT=${BASE_PORT:-7401}
ENDPOINTS=$(seq -s, -f "127.0.0.1:%g" "$BASE_PORT" $((BASE_PORT + NODES - 1)))
WORK=$(mktemp -d)
cleanup() {
    for bin in "$OLD" "$NEW"; do "$bin" cluster down --dir "$WORK/cluster" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

round() {
    local bin=$1 name=$2
    cluster_up "$bin" "$NODES" "$SHARDS" "$WORK/cluster" "$BASE_PORT" "$ENDPOINTS" "$WORK/up.log"
    sleep 2 # leadership settles
    # Each build's own bench drives its cluster (they may speak different protocol versions),
    # except with CONNECTIONS, which only a newer bench knows.
    local driver=$bin connections=()
    if [ "$CONNECTIONS" != "$CLIENTS" ]; then driver=$NEW connections=(--connections "$CONNECTIONS"); fi
    "$driver" bench --workload write --clients "$CLIENTS" "${connections[@]}" --duration "$DURATION" \
        --keys 10000 --value-bytes 256 --json --endpoints "$ENDPOINTS" >"$WORK/$name.json"
    "$bin" cluster down --dir "$WORK/cluster" >/dev/null 2>&1
    wait || true
    python3 - "$WORK/$name.json" "$name" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:>8}: {b.get('ops_per_sec', 0):9.0f} writes/s  "
      f"p50 {b.get('p50_ms', 0):6.2f} ms  p99 {b.get('p99_ms', 0):7.2f} ms")
PY
}

for r in $(seq "$ROUNDS"); do
    round "$OLD" "old-$r"
    round "$NEW" "new-$r"
done
python3 - "$WORK" "$ROUNDS" "$NODES" "$SHARDS" "$CLIENTS" <<'PY'
import json, sys
work, rounds, nodes, shards, clients = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
def mean(name, field):
    values = [json.load(open(f"{work}/{name}-{r}.json")).get(field, 0) for r in range(1, rounds + 1)]
    return sum(values) / len(values)
ratio = lambda field: mean("new", field) / max(mean("old", field), 1e-9)
print(f"{nodes} nodes, {shards} shard(s), {clients} client(s), new/old: writes {ratio('ops_per_sec'):.2f}x "
      f"({mean('new', 'ops_per_sec'):.0f}/s against {mean('old', 'ops_per_sec'):.0f}/s), "
      f"p50 {ratio('p50_ms'):.2f}x, p99 {ratio('p99_ms'):.2f}x")
PY
