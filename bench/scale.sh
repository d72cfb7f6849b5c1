#!/usr/bin/env bash
# Many connections over several Herald nodes: starts NODES herald processes (ports BASE_PORT..)
# joined by one Redis (ENGINE=redis, the default: a redis-server started here on a free port),
# spreads CONNECTIONS client connections over them from several worker processes and source
# addresses, publishes at a low rate through the first node only (the broker carries every
# publication to the other nodes), and reports memory per connection (sum of the nodes' RSS
# growth), publish -> delivery latency and loss. ENGINE=none runs the nodes independently
# (every publication sent to every node). Every count and time is bounded; the nodes and Redis
# are stopped by the PIDs this script started.
#
#   bench/scale.sh [extra herald-bench args]
#   NODES=6 CONNECTIONS=100000 RATE=1 DURATION=30s bench/scale.sh
#
# Environment: NODES (6), CONNECTIONS (100000), ENGINE (redis | none), RATE (1 publication/s),
# DURATION (30s), BASE_PORT (8001), SOURCE_IPS (127.0.0.2-127.0.0.9), RAMP (10000
# connections/s), PROCS (default: ceil(CONNECTIONS/15000)), OUT (bench/out/scale.jsonl).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
NODES="${NODES:-6}"
CONNECTIONS="${CONNECTIONS:-100000}"
RATE="${RATE:-1}"
DURATION="${DURATION:-30s}"
BASE_PORT="${BASE_PORT:-8001}"
SOURCE_IPS="${SOURCE_IPS:-127.0.0.2-127.0.0.9}"
RAMP="${RAMP:-10000}"
PROCS="${PROCS:-$(((CONNECTIONS + 14999) / 15000))}"
OUT="${OUT:-$here/out/scale.jsonl}"
ENGINE="${ENGINE:-redis}"
# shellcheck source=lib/brokers.sh
source "$here/lib/brokers.sh"
need_release_build
per_node=$(((CONNECTIONS + NODES - 1) / NODES))
if [ "$per_node" -gt 19000 ]; then
  echo "$CONNECTIONS connections over $NODES nodes is more than 19000 per node (20000 open files each); add nodes" >&2
  exit 2
fi

started=()
cleanup() {
  for port in "${started[@]}"; do "$here/herald.sh" stop "$port" 2>/dev/null || true; done
  cleanup_started
}
trap cleanup EXIT

node_env=()
cluster=()
case "$ENGINE" in
redis)
  start_redis
  echo "redis: port $redis_port pid $redis_pid" >&2
  node_env=(HERALD_ENGINE_TYPE=redis "HERALD_ENGINE_REDIS_ADDRESS=redis://127.0.0.1:$redis_port")
  cluster=(--cluster)
  ;;
none) ;;
*)
  echo "ENGINE must be redis or none" >&2
  exit 2
  ;;
esac

urls=()
pidargs=()
for ((i = 0; i < NODES; i++)); do
  port=$((BASE_PORT + i))
  pid="$(env "${node_env[@]}" "$here/herald.sh" start "$port" | awk '/^pid/ {print $2}')"
  started+=("$port")
  urls+=("http://127.0.0.1:$port")
  pidargs+=(--server-pid "$pid")
  echo "node $i: port $port pid $pid" >&2
done
url_list="$(IFS=,; echo "${urls[*]}")"

"$bench" fanout -n "$CONNECTIONS" --procs "$PROCS" --url "$url_list" --source-ips "$SOURCE_IPS" \
  --ramp "$RAMP" --rate "$RATE" --duration "$DURATION" "${cluster[@]}" "${pidargs[@]}" \
  --hmac-secret bench-hmac-secret --api-key bench-api-key --max-time 10m \
  --label "scale nodes=$NODES engine=$ENGINE" --json-out "$OUT" "$@"
