#!/usr/bin/env bash
# Where one write's time goes, by taking parts away (issue 17's profile of the write path).
# One client, 3 nodes, puts with majority acknowledgement, alternating in each round:
#
#   always  the default: every node fdatasyncs before it acknowledges
#   never   --wal-sync never on every node: the same path without the disk (network, the
#           nodes' loops, the writer thread hops, encoding, applying)
#
# and, in the same run, the disk alone: one 4 KiB append + fdatasync loop, then three such
# loops at once (the three nodes share this machine's one disk), then the loopback round trip.
#
#   bench/write-path.sh                  # 10 s per measurement, 2 rounds
#   DURATION=5s ROUNDS=3 bench/write-path.sh
#
# Needs python3. Writes only to a temporary directory; listens on loopback ports 7601-7603.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
BASE_PORT=${BASE_PORT:-7601}
BIN=${CARGO_TARGET_DIR:-target}/release/ringleader
cargo build --release -p ringleader -j "${JOBS:-1}" >&2
ENDPOINTS=$(seq -s, -f "127.0.0.1:%g" "$BASE_PORT" $((BASE_PORT + 2)))
PEERS=$(for i in 1 2 3; do printf "%d=127.0.0.1:%d," "$i" $((BASE_PORT + i - 1)); done)
PEERS=${PEERS%,}
WORK=$(mktemp -d)
PIDS=()
stop_nodes() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_nodes
    rm -rf "$WORK"
}
trap cleanup EXIT
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/secret"

measure() {
    local sync=$1 round=$2
    rm -rf "$WORK/nodes"
    for i in 1 2 3; do
        "$BIN" serve --id "$i" --dir "$WORK/nodes/$i" --listen "127.0.0.1:$((BASE_PORT + i - 1))" \
            --peers "$PEERS" --cluster-secret-file "$WORK/secret" --wal-sync "$sync" \
            2>"$WORK/node-$i.log" &
        PIDS+=($!)
    done
    for _ in $(seq 100); do
        "$BIN" status --endpoints "$ENDPOINTS" >/dev/null 2>&1 && break
        sleep 0.2
    done
    sleep 2 # leadership settles
    "$BIN" bench --endpoints "$ENDPOINTS" --workload write --clients 1 --duration "$DURATION" \
        --keys 10000 --value-bytes 256 --json >"$WORK/$sync-$round.json"
    stop_nodes
    python3 - "$WORK/$sync-$round.json" "$sync" <<'PY' >&2
import json, sys
b = json.load(open(sys.argv[1]))
print(f"  {sys.argv[2]:>6}: {b['ops_per_sec']:7.0f} writes/s  p50 {b['p50_ms'] * 1000:6.0f} us  "
      f"p99 {b['p99_ms'] * 1000:6.0f} us")
PY
}

for round in $(seq "$ROUNDS"); do
    echo "round $round" >&2
    if ((round % 2)); then order="always never"; else order="never always"; fi
    for sync in $order; do measure "$sync" "$round"; done
done

python3 - "$WORK" "$ROUNDS" <<'PY'
import json, os, socket, statistics, sys, threading, time
work, rounds = sys.argv[1], int(sys.argv[2])

def fsync_loop(path, count, out):
    block = b"x" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        os.write(fd, block)
        os.fdatasync(fd)
        samples.append((time.perf_counter() - start) * 1e6)
    os.close(fd)
    out.append(statistics.median(samples))

def fsyncs_at_once(n, count=300):
    out = []
    threads = [threading.Thread(target=fsync_loop, args=(f"{work}/fsync-{i}", count, out)) for i in range(n)]
    for t in threads: t.start()
    for t in threads: t.join()
    return statistics.median(out)

def round_trip_us(count=2000):
    server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
    def echo():
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while (data := conn.recv(64)):
            conn.sendall(data)
    threading.Thread(target=echo, daemon=True).start()
    client = socket.create_connection(server.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        client.sendall(b"x" * 32); client.recv(64)
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)

def p50_us(sync):
    values = [json.load(open(f"{work}/{sync}-{r}.json"))["p50_ms"] * 1000 for r in range(1, rounds + 1)]
    return sum(values) / len(values)

one, three, rtt = fsyncs_at_once(1), fsyncs_at_once(3), round_trip_us()
always, never = p50_us("always"), p50_us("never")
print(f"1 client, 3 nodes, majority puts of 256 B, p50 over {rounds} round(s):")
print(f"  with fdatasync (default)      {always:6.0f} us")
print(f"  without (--wal-sync never)    {never:6.0f} us   network, loops, writer hops, encoding, applying")
print(f"  so the disk's share           {always - never:6.0f} us")
print(f"disk alone: 4 KiB append + fdatasync {one:.0f} us; three loops at once {three:.0f} us each")
print(f"loopback round trip (python3) {rtt:.0f} us")
floor = 2 * rtt + one
print(f"issue 17's floor (client rtt + follower rtt + one fdatasync): {floor:.0f} us; p50 / floor = {always / floor:.2f}x")
print(f"this machine's floor with a shared disk (2 rtt + a quorum's fdatasyncs at once): "
      f"{2 * rtt + three:.0f} us; p50 / that = {always / (2 * rtt + three):.2f}x")
PY
