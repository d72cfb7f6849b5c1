#!/usr/bin/env bash
# Sequential against parallel `/api/batch` over Redis: one Herald node over a Redis on a free
# port, `herald-bench api` with CONNS (50) keep-alive connections, ROUNDS (2) interleaved rounds
# of: one /api/publish per request (unless NOPUB=1), batches of BATCH (50) sequential, and the
# same with "parallel": true; SECS (8) seconds each. One line per run on stdout
# (publications/s, requests/s, Herald CPU µs per publication, request p50). PERF=1: then
# `perf record -g` of the node for 5 s of one more parallel run (into $PERF_OUT).
#
#   cargo build --release -p herald-server -p herald-bench && CONNS=1 NOPUB=1 bench/batch-modes.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
CONNS="${CONNS:-50}"
BATCH="${BATCH:-50}"
ROUNDS="${ROUNDS:-2}"
SECS="${SECS:-8}"
PERF_OUT="${PERF_OUT:-$here/out/batch-modes.perf.data}"
# shellcheck source=lib/brokers.sh
source "$here/lib/brokers.sh"
start_redis
port="$(free_port)"
start_node "$port" HERALD_ENGINE_TYPE=redis "HERALD_ENGINE_REDIS_ADDRESS=redis://127.0.0.1:$redis_port"
run() { # label, extra herald-bench args
  local label="$1"
  shift
  "$root/target/release/herald-bench" api --target herald --url "http://127.0.0.1:$port" --server-pid "$node_pid" \
    --api-key bench-api-key -n "$CONNS" --duration "${SECS}s" --channel bench_api "$@" --label "$label" 2>/dev/null |
    tail -n 1 | python3 -c "
import json, sys
r = json.loads(sys.stdin.read())
print(sys.argv[1], r.get('publications_per_s', r['requests_per_s']), 'publications/s;', r['requests_per_s'], 'requests/s;',
      r.get('server_cpu_us_per_publication', r['server_cpu_us_per_request']), 'µs/publication; p50',
      r['api_latency']['p50_ms'], 'ms; errors', r['api_errors'])" "$label"
}
for round in $(seq 1 "$ROUNDS"); do
  [ -n "${NOPUB:-}" ] || run "publish r$round"
  run "sequential$BATCH r$round" --batch "$BATCH"
  run "parallel$BATCH r$round" --batch "$BATCH" --parallel
done
uptime
if [ "${PERF:-}" = 1 ]; then
  mkdir -p "$(dirname "$PERF_OUT")"
  (sleep 2 && perf record -g -p "$node_pid" -o "$PERF_OUT" -- sleep 5 >/dev/null 2>&1) &
  run "parallel$BATCH perf" --batch "$BATCH" --parallel
  wait
fi
