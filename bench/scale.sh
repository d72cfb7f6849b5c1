#!/usr/bin/env bash
# Many connections over several Herald nodes: starts NODES herald processes (ports BASE_PORT..),
# spreads CONNECTIONS client connections over them from several worker processes and source
# addresses, "broadcasts" at a low rate (until a Redis cluster exists the nodes are independent,
# so every publication is sent to every node), and reports memory per connection (sum of the
# nodes' RSS growth) and publish -> delivery latency. Every count and time is bounded; the nodes
# are stopped by the PIDs this script started.
#
#   bench/scale.sh [extra herald-bench args]
#   NODES=6 CONNECTIONS=100000 RATE=1 DURATION=30s bench/scale.sh
#
# Environment: NODES (6), CONNECTIONS (100000), RATE (1 publication/s), DURATION (30s),
# BASE_PORT (8001), SOURCE_IPS (127.0.0.2-127.0.0.9), RAMP (10000 connections/s), PROCS
# (default: ceil(CONNECTIONS/15000)), OUT (bench/out/scale.jsonl).
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
bench="$root/target/release/herald-bench"
if [ ! -x "$bench" ] || [ ! -x "$root/target/release/herald" ]; then
  (cd "$root" && cargo build --release -p herald-server -p herald-bench)
fi
per_node=$(((CONNECTIONS + NODES - 1) / NODES))
if [ "$per_node" -gt 19000 ]; then
  echo "$CONNECTIONS connections over $NODES nodes is more than 19000 per node (20000 open files each); add nodes" >&2
  exit 2
fi

started=()
cleanup() {
  for port in "${started[@]}"; do "$here/herald.sh" stop "$port" 2>/dev/null || true; done
}
trap cleanup EXIT

urls=()
pidargs=()
for ((i = 0; i < NODES; i++)); do
  port=$((BASE_PORT + i))
  pid="$("$here/herald.sh" start "$port" | awk '/^pid/ {print $2}')"
  started+=("$port")
  urls+=("http://127.0.0.1:$port")
  pidargs+=(--server-pid "$pid")
  echo "node $i: port $port pid $pid" >&2
done
url_list="$(IFS=,; echo "${urls[*]}")"

"$bench" fanout -n "$CONNECTIONS" --procs "$PROCS" --url "$url_list" --source-ips "$SOURCE_IPS" \
  --ramp "$RAMP" --rate "$RATE" --duration "$DURATION" "${pidargs[@]}" \
  --hmac-secret bench-hmac-secret --api-key bench-api-key --max-time 10m \
  --label "scale nodes=$NODES" --json-out "$OUT" "$@"
