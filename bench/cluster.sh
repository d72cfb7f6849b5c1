#!/usr/bin/env bash
# Fan-out across a Herald cluster: NODES (3) release nodes joined by one Redis, then by one
# NATS, with CONNECTIONS (18,000) WebSocket subscribers of one channel spread evenly over them,
# each publication sent once through node A's server API; and, as the reference in the same
# round, one node with the memory engine holding all the subscribers. For each rate in RATES
# (1 20 100 publications/s) for DURATION (30s): publish→first/last, deliveries/s, lost and
# duplicated deliveries, the nodes' CPU per delivery (herald-bench, summed over the nodes) and
# the broker's CPU over the same run (added here as broker_cpu_s / broker_cpu_us_per_delivery).
# ROUNDS (2) repeats everything, interleaved, for ranges. Every server is started here on free
# ports and stopped by PID.
#
#   cargo build --release -p herald-server -p herald-bench && bench/cluster.sh
#   ROUNDS=1 RATES="1 20" CONNECTIONS=6000 DURATION=10s ENGINES="redis" bench/cluster.sh
#
# Environment: NODES (3), CONNECTIONS (18000), RATES ("1 20 100"), DURATION (30s),
# ROUNDS (2), ENGINES ("memory redis nats"), PROCS (2 worker processes), OUT
# (bench/out/cluster.jsonl). A run whose p99 publish→last stays above 1 s for 5 s stops
# publishing early (the result says so): the machine is past its ceiling at that rate.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
NODES="${NODES:-3}"
CONNECTIONS="${CONNECTIONS:-18000}"
RATES="${RATES:-1 20 100}"
DURATION="${DURATION:-30s}"
ROUNDS="${ROUNDS:-2}"
ENGINES="${ENGINES:-memory redis nats}"
PROCS="${PROCS:-2}"
OUT="${OUT:-$here/out/cluster.jsonl}"
mkdir -p "$(dirname "$OUT")"
# shellcheck source=lib/brokers.sh
source "$here/lib/brokers.sh"
need_release_build

start_redis
start_nats
echo "redis port $redis_port pid $redis_pid; nats port $nats_port pid $nats_pid" >&2

# run_engine ROUND ENGINE: start the nodes, run every rate, stop the nodes.
run_engine() {
  local round="$1" engine="$2" nodes="$NODES" env=() broker_pid="" cluster=(--cluster)
  case "$engine" in
  memory) nodes=1 env=(HERALD_ENGINE_TYPE=memory) cluster=() ;;
  redis) env=(HERALD_ENGINE_TYPE=redis "HERALD_ENGINE_REDIS_ADDRESS=redis://127.0.0.1:$redis_port") broker_pid="$redis_pid" ;;
  nats) env=(HERALD_BROKER_ENABLED=true HERALD_BROKER_TYPE=nats "HERALD_BROKER_NATS_URL=nats://127.0.0.1:$nats_port") broker_pid="$nats_pid" ;;
  *) echo "unknown engine $engine" >&2; return 2 ;;
  esac
  local urls=() pidargs=() pids=() i port
  for ((i = 0; i < nodes; i++)); do
    port="$(free_port)"
    start_node "$port" "${env[@]}"
    urls+=("http://127.0.0.1:$port")
    pidargs+=(--server-pid "$node_pid")
    pids+=("$node_pid")
  done
  local url_list
  url_list="$(IFS=,; echo "${urls[*]}")"
  for rate in $RATES; do
    echo "### $(date -u +%H:%M:%S) round $round $engine nodes=$nodes rate=$rate" >&2
    local b0=0 b1=0 line
    [ -n "$broker_pid" ] && b0="$(cpu_ticks "$broker_pid")"
    line="$("$bench" fanout -n "$CONNECTIONS" --procs "$PROCS" --url "$url_list" \
      --source-ips 127.0.0.2-127.0.0.9 "${cluster[@]}" --rate "$rate" --duration "$DURATION" \
      --max-backlog 1s --max-backlog-secs 5 --drain 20s "${pidargs[@]}" \
      --hmac-secret bench-hmac-secret --api-key bench-api-key --max-time 5m \
      --label "cluster $engine nodes=$nodes rate=$rate r$round" | tail -n 1)" || {
      echo "run failed: $engine rate $rate" >&2
      continue
    }
    [ -n "$broker_pid" ] && b1="$(cpu_ticks "$broker_pid")"
    BROKER_TICKS=$((b1 - b0)) BROKER="$engine" python3 -c '
import json, os, sys
r = json.loads(sys.stdin.read())
tck = (r.get("machine") or {}).get("clk_tck") or 100
ticks = int(os.environ["BROKER_TICKS"])
broker = os.environ["BROKER"] != "memory"
r["broker_cpu_s"] = ticks / tck if broker else None
d = r.get("deliveries") or 0
r["broker_cpu_us_per_delivery"] = round(ticks / tck * 1e6 / d, 3) if broker and d else None
print(json.dumps(r))' <<<"$line" >>"$OUT"
    sleep 2
  done
  for p in "${pids[@]}"; do stop_pid "$p"; done
}

for round in $(seq 1 "$ROUNDS"); do
  for engine in $ENGINES; do
    run_engine "$round" "$engine"
  done
done
echo "results in $OUT (bench/report.py --runs $OUT)" >&2
