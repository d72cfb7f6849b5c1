#!/usr/bin/env bash
# The hardening runs of docs/benchmarks.md ("Hardening runs"): slow consumers, reconnect storm,
# soak. Each run starts its own Herald (bench/herald.sh, release build) on its own port and
# stops it afterwards; results are appended to bench/out/hardening.jsonl.
#
#   bench/hardening.sh slow  [N] [rate] [payload] [duration]   # 0 % then 1 % stalled, back to back
#   bench/hardening.sh storm [N] [backoff-min]      # backoff-min 0s: reconnect at once
#   bench/hardening.sh soak  [N] [duration]         # 2 %/s churn, 1/s fan-out, RSS every 30 s
#
# Needs `cargo build --release -p herald-server -p herald-bench`. Every run is bounded by
# --max-time and by `timeout`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
bench="${HERALD_BENCH:-$root/target/release/herald-bench}"
out="$here/out"
mkdir -p "$out"
json="$out/hardening.jsonl"
auth=(--hmac-secret bench-hmac-secret --api-key bench-api-key)

start() { "$here/herald.sh" start "$1" | sed -n 's/^pid //p'; }
stop() { "$here/herald.sh" stop "$1"; }

case "${1:-}" in
slow)
  n="${2:-10000}"; rate="${3:-20}"; payload="${4:-100}"; duration="${5:-40s}"; port=8191
  for share in 0 0.01; do
    pid="$(start $port)"
    timeout 5m "$bench" fanout --url "http://127.0.0.1:$port" -n "$n" --procs 2 --rate "$rate" \
      --payload "$payload" --duration "$duration" --stalled-share "$share" --max-time 6m "${auth[@]}" \
      --server-pid "$pid" --label "slow consumers: $share stalled, $n x $rate/s x $payload B" \
      --json-out "$json" || true
    stop $port
  done
  ;;
storm)
  n="${2:-15000}"; min="${3:-0s}"; port=8192
  pid="$(start $port)"
  timeout 6m "$bench" storm --url "http://127.0.0.1:$port" -n "$n" --procs 2 --max-inflight 1024 \
    --backoff-min "$min" --backoff-max 20s --max-time 5m "${auth[@]}" --server-pid "$pid" \
    --restart-cmd "'$here/herald.sh' stop $port && '$here/herald.sh' start $port" \
    --label "storm: $n clients, backoff-min $min" --json-out "$json" || true
  stop $port
  ;;
soak)
  n="${2:-5000}"; duration="${3:-30m}"; port=8190
  pid="$(start $port)"
  timeout 45m "$bench" churn --url "http://127.0.0.1:$port" -n "$n" --procs 1 \
    --source-ips 127.0.0.2-127.0.0.9 --churn-percent 2 --rate 1 --duration "$duration" \
    --rss-every 30s --rss-fit 20m --max-time 40m "${auth[@]}" --server-pid "$pid" \
    --label "soak: $n connections, 2 %/s churn, 1/s fan-out, $duration" --json-out "$json" || true
  stop $port
  ;;
*)
  echo "usage: $0 slow [N] [rate] [payload] [duration] | storm [N] [backoff-min] | soak [N] [duration]" >&2
  exit 2
  ;;
esac
