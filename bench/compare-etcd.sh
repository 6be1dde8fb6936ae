#!/usr/bin/env bash
# ringleader and etcd side by side (issue 17): a 3-node ringleader and a 3-member etcd 3.4 on
# loopback, the same load from the same tool (`ringleader bench --target ringleader|etcd`), puts
# and linearizable gets at each client count, fresh data directories for every measurement,
# systems alternating; then the machine's floor measured in the same run (loopback TCP round trip,
# one 4 KiB append + fdatasync on the data directory's file system), a side-by-side table, a
# latency-against-throughput plot (docs/figures/etcd-compare.svg) and, last, one summary line:
#
#   ringleader/etcd: writes X.XXx, reads Y.YYx, write-p99 Z.ZZx
#
# (throughput ratios at 64 clients, and ringleader's write p99 over etcd's at 64 clients).
#
# Stretch target (REDIS=0 skips it): durable writes at 50 clients against a single Redis with
# `appendonly yes, appendfsync always` (every write fsynced before the reply), driven by
# redis-benchmark (SET, same value size and key count), alternating with a 3-node ringleader
# under the same 50 clients; printed before the summary line.
#
#   bench/compare-etcd.sh                          # 10 s per measurement, 1 round, 1 64 1000
#   SHAPES="1 64" DURATION=5s ROUNDS=2 bench/compare-etcd.sh
#   KEYS=10000 VALUE_BYTES=256 PLOT=docs/figures/etcd-compare.svg KEEP_PNG=/tmp/plot.png KEEP_RESULTS=/tmp/json ...  # keep the plot as PNG, the JSON and the servers' logs
#
# Installs Debian's etcd-server and protobuf-compiler if missing, builds
# `cargo build --release -p ringleader --features etcd`. Needs python3. Writes only to a temporary
# directory, docs/figures/ and target/; listens only on loopback: ringleader on
# RL_BASE_PORT.. (default 7501-7503), etcd on ETCD_BASE_PORT.. (default 23790-23795).
# Both systems run with their default durability: every acknowledged write is fsynced by a majority.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-1}
SHAPES=${SHAPES:-"1 64 1000"}
KEYS=${KEYS:-10000}
VALUE_BYTES=${VALUE_BYTES:-256}
RL_BASE_PORT=${RL_BASE_PORT:-7501}
ETCD_BASE_PORT=${ETCD_BASE_PORT:-23790}
PLOT=${PLOT:-docs/figures/etcd-compare.svg}
BIN=${CARGO_TARGET_DIR:-target}/release/ringleader

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v rsvg-convert >/dev/null || need+=(librsvg2-bin)
if [[ ${REDIS:-1} != 0 ]]; then
    command -v redis-server >/dev/null || need+=(redis-server)
    command -v redis-benchmark >/dev/null || need+=(redis-tools)
fi
REDIS_PORT=${REDIS_PORT:-26379}
STRETCH_CLIENTS=50
if ((${#need[@]})); then
    echo "installing ${need[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -p ringleader --features etcd -j "${JOBS:-1}" >&2

# 1000 clients hold a few thousand sockets between them and the servers.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

RL_ENDPOINTS=$(seq -s, -f "127.0.0.1:%g" "$RL_BASE_PORT" $((RL_BASE_PORT + 2)))
ETCD_ENDPOINTS=$(for i in 0 1 2; do printf "127.0.0.1:%d," $((ETCD_BASE_PORT + 2 * i)); done)
ETCD_ENDPOINTS=${ETCD_ENDPOINTS%,}
WORK=$(mktemp -d)
mkdir -p "$WORK/results"
ETCD_PIDS=()
RL_SUPERVISOR=

stop_etcd() {
    for pid in "${ETCD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${ETCD_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ETCD_PIDS=()
}
cleanup() {
    "$BIN" cluster down --dir "$WORK/ringleader" >/dev/null 2>&1 || true
    stop_etcd
    if [[ ${REDIS:-1} != 0 ]]; then redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

start_ringleader() {
    rm -rf "$WORK/ringleader"
    # `cluster up` is the supervisor and stays in the foreground: run it in the background.
    "$BIN" cluster up --nodes 3 --dir "$WORK/ringleader" --base-port "$RL_BASE_PORT" \
        >"$WORK/ringleader-up.log" 2>&1 &
    RL_SUPERVISOR=$!
    for _ in $(seq 300); do
        if "$BIN" status --endpoints "$RL_ENDPOINTS" >/dev/null 2>&1; then return; fi
        sleep 0.2
    done
    echo "ringleader did not come up:" >&2
    tail -n 20 "$WORK/ringleader-up.log" "$WORK"/ringleader/node-*.log >&2 || true
    exit 1
}
stop_ringleader() {
    "$BIN" cluster down --dir "$WORK/ringleader" >/dev/null 2>&1 || true
    wait "$RL_SUPERVISOR" 2>/dev/null || true
    rm -rf "$WORK/ringleader"
}

start_etcd() {
    rm -rf "$WORK/etcd"
    local cluster="" i
    for i in 0 1 2; do cluster+="m$i=http://127.0.0.1:$((ETCD_BASE_PORT + 2 * i + 1)),"; done
    for i in 0 1 2; do
        local client=http://127.0.0.1:$((ETCD_BASE_PORT + 2 * i))
        local peer=http://127.0.0.1:$((ETCD_BASE_PORT + 2 * i + 1))
        mkdir -p "$WORK/etcd/m$i"
        etcd --name "m$i" --data-dir "$WORK/etcd/m$i" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "${cluster%,}" --initial-cluster-token compare-etcd \
            --initial-cluster-state new >"$WORK/etcd/m$i.log" 2>&1 &
        ETCD_PIDS+=($!)
    done
    for _ in $(seq 100); do
        if ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1; then
            return
        fi
        sleep 0.2
    done
    echo "etcd did not come up:" >&2
    tail -n 20 "$WORK"/etcd/m*.log >&2 || true
    exit 1
}
stop_etcd_and_wipe() {
    stop_etcd
    rm -rf "$WORK/etcd"
}

# One measurement: a fresh cluster of `system`, writes then linearizable reads at `clients`.
measure() {
    local system=$1 clients=$2 round=$3 endpoints workload
    if [[ $system == ringleader ]]; then
        start_ringleader
        endpoints=$RL_ENDPOINTS
    else
        start_etcd
        endpoints=$ETCD_ENDPOINTS
    fi
    sleep 2 # leadership settles
    for workload in write read; do
        "$BIN" bench --target "$system" --endpoints "$endpoints" --workload "$workload" \
            --clients "$clients" --duration "$DURATION" --keys "$KEYS" \
            --value-bytes "$VALUE_BYTES" --json \
            >"$WORK/results/$system-$workload-$clients-$round.json"
        python3 - "$WORK/results/$system-$workload-$clients-$round.json" <<'PY' >&2
import json, sys
b = json.load(open(sys.argv[1]))
print(f"  {b.get('target', 'ringleader'):>10} {b['workload']:>5} {b['clients']:>5} clients: "
      f"{b['ops_per_sec']:9.0f} ops/s  p50 {b['p50_ms']:7.2f} ms  p99 {b['p99_ms']:7.2f} ms"
      f"  ({b['failed']} failed)")
PY
    done
    if [[ -n ${KEEP_RESULTS:-} ]]; then
        mkdir -p "$KEEP_RESULTS/logs-$system-$clients-$round"
        cp "$WORK"/ringleader/*.log "$WORK"/ringleader-up.log "$WORK"/etcd/*.log \
            "$KEEP_RESULTS/logs-$system-$clients-$round"/ 2>/dev/null || true
    fi
    if [[ $system == ringleader ]]; then stop_ringleader; else stop_etcd_and_wipe; fi
}

for round in $(seq "$ROUNDS"); do
    for clients in $SHAPES; do
        echo "round $round, $clients client(s)" >&2
        # Alternate which system goes first, so neither always runs on a warmer machine.
        if ((round % 2)); then order="ringleader etcd"; else order="etcd ringleader"; fi
        for system in $order; do measure "$system" "$clients" "$round"; done
    done
done

# Stretch: one Redis fsyncing every write, against the replicated cluster, 50 clients each.
measure_redis() {
    local round=$1 seconds ops
    mkdir -p "$WORK/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --appendonly yes \
        --appendfsync always --save "" --daemonize no >"$WORK/redis.log" 2>&1 &
    local pid=$!
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    # About DURATION long at the rate a first short run shows.
    seconds=${DURATION%s}
    ops=$(redis-benchmark -p "$REDIS_PORT" -c "$STRETCH_CLIENTS" -n 20000 -t set -d "$VALUE_BYTES" \
        -r "$KEYS" --csv 2>/dev/null | python3 -c "import csv,sys; r=list(csv.reader(sys.stdin))[1]; print(int(float(r[1]) * $seconds))")
    redis-benchmark -p "$REDIS_PORT" -c "$STRETCH_CLIENTS" -n "$ops" -t set -d "$VALUE_BYTES" \
        -r "$KEYS" --csv 2>/dev/null >"$WORK/results/redis-$round.csv"
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$WORK/redis"
    python3 - "$WORK/results/redis-$round.csv" <<'PY' >&2
import csv, sys
row = list(csv.reader(open(sys.argv[1])))[1]
print(f"       redis write {50:>5} clients: {float(row[1]):9.0f} ops/s  p50 {float(row[4]):7.2f} ms  p99 {float(row[6]):7.2f} ms")
PY
}
measure_ringleader_stretch() {
    local round=$1
    start_ringleader
    sleep 2
    "$BIN" bench --endpoints "$RL_ENDPOINTS" --workload write --clients "$STRETCH_CLIENTS" \
        --duration "$DURATION" --keys "$KEYS" --value-bytes "$VALUE_BYTES" --json \
        >"$WORK/results/stretch-ringleader-$round.json"
    python3 - "$WORK/results/stretch-ringleader-$round.json" <<'PY' >&2
import json, sys
b = json.load(open(sys.argv[1]))
print(f"  ringleader write {b['clients']:>5} clients: {b['ops_per_sec']:9.0f} ops/s  p50 {b['p50_ms']:7.2f} ms  "
      f"p99 {b['p99_ms']:7.2f} ms  ({b['failed']} failed)")
PY
    stop_ringleader
}
if [[ ${REDIS:-1} != 0 ]]; then
    for round in $(seq "$ROUNDS"); do
        echo "round $round, stretch: $STRETCH_CLIENTS clients against redis (appendfsync always)" >&2
        measure_ringleader_stretch "$round"
        measure_redis "$round"
    done
fi

# The machine's floor, in the same run: what no replicated store on this machine can beat.
python3 - "$WORK" >"$WORK/floor.json" <<'PY'
import json, os, socket, statistics, sys, threading, time

def loopback_round_trip_us(count=2000):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    def echo():
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while (data := conn.recv(64)):
            conn.sendall(data)
        conn.close()
    thread = threading.Thread(target=echo)
    thread.start()
    client = socket.create_connection(server.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        client.sendall(b"x" * 32)
        received = 0
        while received < 32:
            received += len(client.recv(64))
        samples.append((time.perf_counter_ns() - started) / 1000)
    client.close()
    thread.join()
    server.close()
    return statistics.median(samples)

def append_fdatasync_us(directory, count=300):
    path = os.path.join(directory, "floor-fsync")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"\0" * 4096
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        os.write(fd, block)
        os.fdatasync(fd)
        samples.append((time.perf_counter_ns() - started) / 1000)
    os.close(fd)
    os.unlink(path)
    return statistics.median(samples)

print(json.dumps({"loopback_rtt_us": loopback_round_trip_us(),
                  "append_fdatasync_us": append_fdatasync_us(sys.argv[1])}))
PY

mkdir -p "$(dirname "$PLOT")"
python3 - "$WORK" "$ROUNDS" "$SHAPES" "$PLOT" "$DURATION" <<'PY'
import json, math, sys
work, rounds, shapes, plot, duration = sys.argv[1], int(sys.argv[2]), [int(s) for s in sys.argv[3].split()], sys.argv[4], sys.argv[5]
systems = ["ringleader", "etcd"]

def mean(system, workload, clients, field):
    values = [json.load(open(f"{work}/results/{system}-{workload}-{clients}-{r}.json"))[field]
              for r in range(1, rounds + 1)]
    return sum(values) / len(values)

floor = json.load(open(f"{work}/floor.json"))
print(f"machine floor: loopback TCP round trip {floor['loopback_rtt_us']:.1f} us (median of 2000, python3), "
      f"4 KiB append + fdatasync {floor['append_fdatasync_us']:.1f} us (median of 300, data dir's file system)")
print(f"{rounds} round(s) of {duration} per measurement, fresh clusters, 3 nodes each, "
      f"{sys.argv[3]} clients; means over rounds")
print()
header = (f"{'workload':<8} {'clients':>7} | {'ringleader ops/s':>16} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6} | "
          f"{'etcd ops/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6} | {'tput x':>6}")
print(header)
print("-" * len(header))
fields = ("ops_per_sec", "p50_ms", "p99_ms", "failed")
for workload in ["write", "read"]:
    for clients in shapes:
        r = [mean("ringleader", workload, clients, f) for f in fields]
        e = [mean("etcd", workload, clients, f) for f in fields]
        print(f"{workload:<8} {clients:>7} | {r[0]:>16.0f} {r[1]:>7.2f} {r[2]:>7.2f} {r[3]:>6.0f} | "
              f"{e[0]:>10.0f} {e[1]:>7.2f} {e[2]:>7.2f} {e[3]:>6.0f} | {r[0] / max(e[0], 1e-9):>5.2f}x")
print("(failed: operations that returned an error, mean per measurement; left out of the latencies)")

# p99 write latency against throughput, one line per system through its client counts.
points = {s: [(mean(s, "write", c, "ops_per_sec"), mean(s, "write", c, "p99_ms"), c) for c in shapes]
          for s in systems}
xs = [p[0] for s in systems for p in points[s]]
ys = [p[1] for s in systems for p in points[s]]
def log_range(values):
    low, high = min(v for v in values if v > 0), max(values)
    return math.floor(math.log10(low)), math.ceil(math.log10(high * 1.01)) or 1
xlo, xhi = log_range(xs)
ylo, yhi = log_range(ys)
if xhi == xlo: xhi += 1
if yhi == ylo: yhi += 1
width, height, left, right, top, bottom = 640, 420, 70, 150, 40, 55
def px(x): return left + (math.log10(max(x, 10 ** xlo)) - xlo) / (xhi - xlo) * (width - left - right)
def py(y): return height - bottom - (math.log10(max(y, 10 ** ylo)) - ylo) / (yhi - ylo) * (height - top - bottom)
colours = {"ringleader": "#1f77b4", "etcd": "#d62728"}
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
       f'font-family="sans-serif" font-size="12">',
       f'<rect width="{width}" height="{height}" fill="white"/>',
       f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">'
       f'Write p99 latency against throughput (3 nodes, loopback, {duration} per point)</text>']
for d in range(xlo, xhi + 1):
    x = px(10 ** d)
    svg.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#ddd"/>')
    svg.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{10 ** d:g}</text>')
for d in range(ylo, yhi + 1):
    y = py(10 ** d)
    svg.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{10 ** d:g}</text>')
svg.append(f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
           f'fill="none" stroke="#333"/>')
svg.append(f'<text x="{(left + width - right) / 2}" y="{height - 15}" text-anchor="middle">'
           f'writes per second (log)</text>')
svg.append(f'<text x="18" y="{(top + height - bottom) / 2}" text-anchor="middle" '
           f'transform="rotate(-90 18 {(top + height - bottom) / 2})">p99 write latency, ms (log)</text>')
for i, s in enumerate(systems):
    path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in points[s])
    svg.append(f'<polyline points="{path}" fill="none" stroke="{colours[s]}" stroke-width="2"/>')
    for x, y, c in points[s]:
        svg.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{colours[s]}"/>')
        svg.append(f'<text x="{px(x) + 6:.1f}" y="{py(y) - 6:.1f}" fill="{colours[s]}">{c}</text>')
    ly = top + 20 + 20 * i
    svg.append(f'<line x1="{width - right + 15}" y1="{ly}" x2="{width - right + 40}" y2="{ly}" '
               f'stroke="{colours[s]}" stroke-width="2"/>')
    svg.append(f'<text x="{width - right + 46}" y="{ly + 4}">{s}</text>')
svg.append(f'<text x="{width - right + 15}" y="{top + 70}" fill="#555">labels: clients</text>')
svg.append("</svg>")
open(plot, "w").write("\n".join(svg) + "\n")
print()
# Check that the plot renders (librsvg, as the docs' readers would see it).
import shutil, subprocess
if shutil.which("rsvg-convert"):
    rendered = subprocess.run(["rsvg-convert", "-o", f"{work}/plot.png", plot]).returncode == 0
    print(f"plot: {plot} ({'renders with rsvg-convert' if rendered else 'rsvg-convert FAILED to render it'})")
else:
    print(f"plot: {plot} (rsvg-convert not installed: not checked)")

import csv, glob
redis_runs = sorted(glob.glob(f"{work}/results/redis-*.csv"))
if redis_runs:
    redis = sum(float(list(csv.reader(open(f)))[1][1]) for f in redis_runs) / len(redis_runs)
    ours = [json.load(open(f))["ops_per_sec"] for f in sorted(glob.glob(f"{work}/results/stretch-ringleader-*.json"))]
    ours = sum(ours) / len(ours)
    print(f"stretch, 50 clients, durable writes: ringleader (3 nodes) {ours:.0f}/s, redis (1 node, "
          f"appendfsync always) {redis:.0f}/s: {ours / redis:.2f}x (target >= 0.50x)")
    print()

at = 64 if 64 in shapes else max(shapes)
if at != 64:
    print(f"(no 64-client shape in this run: the summary uses {at} clients)")
ratio = lambda workload, field: mean("ringleader", workload, at, field) / max(mean("etcd", workload, at, field), 1e-9)
print(f"ringleader/etcd: writes {ratio('write', 'ops_per_sec'):.2f}x, reads {ratio('read', 'ops_per_sec'):.2f}x, "
      f"write-p99 {ratio('write', 'p99_ms'):.2f}x")
PY
if [[ -n ${KEEP_RESULTS:-} ]]; then mkdir -p "$KEEP_RESULTS" && cp "$WORK"/results/*.json "$WORK/floor.json" "$KEEP_RESULTS"/; fi
if [[ -n ${KEEP_PNG:-} ]]; then cp "$WORK/plot.png" "$KEEP_PNG" 2>/dev/null || true; fi
