# Shared by the bench/ scripts: start a local cluster and wait until it answers.
#
#   cluster_up BIN NODES SHARDS DIR BASE_PORT ENDPOINTS LOG
# starts `BIN cluster up` in the background (the caller `wait`s for it after `cluster down`) and
# returns once `status` answers, or after 30 s.
cluster_up() {
    local bin=$1 nodes=$2 shards=$3 dir=$4 base_port=$5 endpoints=$6 log=$7
    rm -rf "$dir"
    "$bin" cluster up --nodes "$nodes" --replicas 3 --shards "$shards" --dir "$dir" \
        --base-port "$base_port" >"$log" 2>&1 &
    for _ in $(seq 150); do
        if "$bin" status --endpoints "$endpoints" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
}
