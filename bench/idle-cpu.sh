#!/usr/bin/env bash
# What an idle cluster costs: the CPU time the node processes of a 5-node cluster use over a
# quiet interval, for several shard counts, and optionally for two builds side by side (what a
# change to heartbeats or the idle loop bought).
#
#   bench/idle-cpu.sh                                  # this build, 1 10 50 200 shards
#   OLD=/tmp/rl-old SHARDS_LIST="10 200" bench/idle-cpu.sh
#
# Needs a release build and python3; Linux (/proc). Loopback ports 7551 and up, a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
NEW=${NEW:-target/release/ringleader}
OLD=${OLD:-}
SHARDS_LIST=${SHARDS_LIST:-1 10 50 200}
SECONDS_IDLE=${SECONDS_IDLE:-10}
BASE_PORT=${BASE_PORT:-7551}
ENDPOINTS=$(seq -s, -f "127.0.0.1:%g" "$BASE_PORT" $((BASE_PORT + 4)))
WORK=$(mktemp -d)
cleanup() {
    for bin in "$NEW" ${OLD:+"$OLD"}; do "$bin" cluster down --dir "$WORK/cluster" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
TICKS=$(getconf CLK_TCK)

# CPU milliseconds (user + system) of the cluster's node processes (from their pid files).
cpu_ms() {
    local total=0 pid t
    for file in "$WORK"/cluster/node-*.pid; do
        pid=$(cat "$file" 2>/dev/null) || continue
        if [ ! -r "/proc/$pid/stat" ]; then
            echo "node process $pid ($file) is not running: is another cluster on its port?" >&2
            exit 1
        fi
        # Fields 14 and 15: utime, stime (counted after the parenthesised command name).
        t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + t))
    done
    echo $((total * 1000 / TICKS))
}

measure() {
    local bin=$1 label=$2 shards=$3
    cluster_up "$bin" 5 "$shards" "$WORK/cluster" "$BASE_PORT" "$ENDPOINTS" "$WORK/up.log"
    sleep 5 # elections and leadership hand-overs settle
    if [ "$(ls "$WORK"/cluster/node-*.pid 2>/dev/null | wc -l)" -ne 5 ]; then
        echo "the $label cluster did not start: $(tail -3 "$WORK/up.log")" >&2
        exit 1
    fi
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
