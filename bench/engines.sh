#!/usr/bin/env bash
# Publish throughput through one Herald node's server API for each engine it can use, in one
# run on one machine: memory, Redis standalone, Redis Cluster (3 masters), NATS (JetStream
# history) and mixed (NATS pub/sub + Redis history), on a channel with history and on one
# without; plus the raw brokers' own clients with the same concurrency as the baseline.
#
#   cargo build --release -p herald-server -p herald-bench && bench/engines.sh [seconds]
#
# Every server is started here on free loopback ports (never 6379/4222) and stopped by PID.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
herald="$here/../target/release/herald"
bench="$here/../target/release/herald-bench"
secs="${1:-8}"
conns=50
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

redis_at() { # port, dir, extra args...
  local port="$1" dir="$2"
  shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" "$@" >/dev/null 2>&1 &
  pids+=($!)
  until redis-cli -p "$port" PING >/dev/null 2>&1; do sleep 0.05; done
}

# A Redis Cluster node also listens on its port + 10000 (the cluster bus): that must exist and
# be free too.
cluster_port() {
  python3 -c '
import random, socket
for _ in range(1000):
    p = random.randint(20000, 55000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
    except OSError:
        continue
    print(p)
    break'
}

r1="$(free_port)"
redis_at "$r1" "$tmp/r1"
cluster=()
for i in 1 2 3; do
  p="$(cluster_port)"
  redis_at "$p" "$tmp/c$i" --cluster-enabled yes --cluster-config-file nodes.conf
  cluster+=("127.0.0.1:$p")
done
redis-cli --cluster create "${cluster[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
for c in "${cluster[@]}"; do
  until redis-cli -p "${c#*:}" CLUSTER INFO | grep -q cluster_state:ok; do sleep 0.1; done
done
np="$(free_port)"
nats-server -js -a 127.0.0.1 -p "$np" -sd "$tmp/nats" >/dev/null 2>&1 &
pids+=($!)
until (exec 3<>"/dev/tcp/127.0.0.1/$np") 2>/dev/null; do sleep 0.05; done

namespaces='[{"name":"hist","history_size":1000,"history_ttl":"5m"}]'
run() { # label, env...
  local label="$1"
  shift
  local port
  port="$(free_port)"
  env "$@" HERALD_CHANNEL_NAMESPACES="$namespaces" HERALD_LOG_LEVEL=warn \
    "$herald" --config "$here/herald-bench.toml" --port "$port" >"$tmp/herald.log" 2>&1 &
  local pid=$!
  until curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1; do sleep 0.1; done
  for channel in hist:bench bench_api; do
    local out
    out="$("$bench" api --target herald --url "http://127.0.0.1:$port" --server-pid "$pid" \
      --api-key bench-api-key -n "$conns" --duration "${secs}s" --channel "$channel" 2>/dev/null |
      python3 -c 'import json,sys; r=json.load(sys.stdin); l=r.get("api_latency") or {}; print(json.dumps({"rps": r.get("requests_per_s"), "errors": r.get("api_errors"), "cpu_us_per_req": r.get("server_cpu_us_per_request"), "latency": {k: v for k, v in l.items() if k in ("p50_ms", "p99_ms", "p50", "p99")}}))' 2>/dev/null ||
      echo '{"error": "no report"}')"
    echo "$label $channel $out"
  done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

run memory HERALD_ENGINE_TYPE=memory
run redis HERALD_ENGINE_TYPE=redis HERALD_ENGINE_REDIS_ADDRESS="redis://127.0.0.1:$r1"
run redis-cluster HERALD_ENGINE_TYPE=redis HERALD_ENGINE_REDIS_ADDRESS="redis://${cluster[0]}"
run nats HERALD_BROKER_ENABLED=true HERALD_BROKER_TYPE=nats HERALD_BROKER_NATS_URL="nats://127.0.0.1:$np"
run mixed HERALD_ENGINE_TYPE=redis HERALD_ENGINE_REDIS_ADDRESS="redis://127.0.0.1:$r1" \
  HERALD_BROKER_ENABLED=true HERALD_BROKER_TYPE=nats HERALD_BROKER_NATS_URL="nats://127.0.0.1:$np"

body="$(head -c 100 /dev/zero | tr '\0' x)"
echo "raw redis-benchmark PUBLISH ($conns clients, no pipelining): $(redis-benchmark -p "$r1" -c "$conns" -n 200000 -q PUBLISH herald.client.bench_api "$body" 2>&1 | tr '\r' '\n' | grep 'requests per second')"
