#!/usr/bin/env bash
# What an idle cluster costs: the CPU time the node processes of a 5-node cluster use over a
# quiet interval, for several shard counts, and optionally for two builds side by side (what a
# change to heartbeats or the idle loop bought).
#
#   bench/idle-cpu.sh                                  # this build, 1 10 50 200 shards
#   OLD=/tmp/rl-old SHARDS_LIST="10 200" bench/idle-cpu.sh
#
# Needs a release build and python3; Linux (/proc). Loopback ports 7501 and up, a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
NEW=${NEW:-target/release/ringleader}
OLD=${OLD:-}
SHARDS_LIST=${SHARDS_LIST:-1 10 50 200}
SECONDS_IDLE=${SECONDS_IDLE:-10}
BASE_PORT=${BASE_PORT:-7501}
ENDPOINTS=$(seq -s, -f "127.0.0.1:%g" "$BASE_PORT" $((BASE_PORT + 4)))
WORK=$(mktemp -d)
cleanup() {
    for bin in "$NEW" ${OLD:+"$OLD"}; do "$bin" cluster down --dir "$WORK/cluster" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
TICKS=$(getconf CLK_TCK)

# CPU milliseconds (user + system) of the processes whose command line names the cluster dir.
cpu_ms() {
    local total=0
    for pid in $(pgrep -f "$WORK/cluster/" || true); do
        [ -r "/proc/$pid/stat" ] || continue
        # Fields 14 and 15: utime, stime (after the parenthesised command name).
        local t
        t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + t))
    done
    echo $((total * 1000 / TICKS))
}

measure() {
    local bin=$1 label=$2 shards=$3
    rm -rf "$WORK/cluster"
    "$bin" cluster up --nodes 5 --replicas 3 --shards "$shards" --dir "$WORK/cluster" \
        --base-port "$BASE_PORT" >"$WORK/up.log" 2>&1 &
    for _ in $(seq 150); do
        if "$bin" status --endpoints "$ENDPOINTS" >/dev/null 2>&1; then break; fi
        sleep 0.2
    done
    sleep 5 # elections and leadership hand-overs settle
    local before after
    before=$(cpu_ms)
    sleep "$SECONDS_IDLE"
    after=$(cpu_ms)
    "$bin" cluster down --dir "$WORK/cluster" >/dev/null 2>&1
    wait || true
    printf '%-4s %4s shards: %6d ms of CPU in %ss, 5 nodes idle\n' "$label" "$shards" \
        $((after - before)) "$SECONDS_IDLE"
}

for shards in $SHARDS_LIST; do
    if [ -n "$OLD" ]; then measure "$OLD" old "$shards"; fi
    measure "$NEW" new "$shards"
done
