#!/usr/bin/env bash
# Gateway routes against their upstream alone, same run (docs/benchmarks.md, "Gateway routes"):
# starts the bench upstream (crates/herald-server/examples/bench_upstream.rs) and a release
# herald with two routes to it (auth none, auth jwt), then runs `herald-bench api --path` with
# CONNS keep-alive connections against: the upstream directly, the route without auth, the route
# with a JWT; ROUNDS times in turn. Result lines (JSON) are appended to OUT.
#
#   bench/gateway.sh                      # CONNS="1 32" DURATION=10s ROUNDS=2
#
# Ports: UPSTREAM_PORT (18090), HERALD_PORT (18091): loopback only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
CONNS="${CONNS:-1 32}"
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-2}"
UPSTREAM_PORT="${UPSTREAM_PORT:-18090}"
HERALD_PORT="${HERALD_PORT:-18091}"
OUT="${OUT:-$here/out/gateway.jsonl}"
SECRET="bench-secret"
rel="$root/target/release"
if [ ! -x "$rel/herald" ] || [ ! -x "$rel/herald-bench" ] || [ ! -x "$rel/examples/bench_upstream" ]; then
  (cd "$root" && cargo build --release -p herald-server -p herald-bench --example bench_upstream)
fi
mkdir -p "$(dirname "$OUT")"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$rel/examples/bench_upstream" "$UPSTREAM_PORT" >/dev/null &
up_pid=$!
pids+=("$up_pid")
routes="[{\"prefix\":\"/gw\",\"upstreams\":[\"http://127.0.0.1:$UPSTREAM_PORT\"],\"auth\":\"none\"},
         {\"prefix\":\"/gwjwt\",\"upstreams\":[\"http://127.0.0.1:$UPSTREAM_PORT\"],\"auth\":\"jwt\"}]"
HERALD_GATEWAY_ROUTES="$routes" HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY="$SECRET" HERALD_HTTP_API_KEY=bench \
  HERALD_LOG_LEVEL=warn "$rel/herald" --address 127.0.0.1 --port "$HERALD_PORT" &
herald_pid=$!
pids+=("$herald_pid")
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$HERALD_PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
token="$(HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY="$SECRET" "$rel/herald" gentoken -u bench-user -t 36000 2>/dev/null)"
run() { # label url path pid [header]
  local label="$1" url="$2" path="$3" pid="$4"; shift 4
  local extra=()
  [ $# -gt 0 ] && extra=(--header "$1")
  "$rel/herald-bench" api --url "$url" --path "$path" -n "$n" --duration "$DURATION" --server-pid "$pid" \
    "${extra[@]}" 2>&1 >"$tmp" | grep -v '^$' | tail -1 >&2
  python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1]); d["label"]=sys.argv[2]; print(json.dumps(d))' \
    "$tmp" "$label n=$n" | tee -a "$OUT"
}
tmp="$(mktemp)"
for round in $(seq "$ROUNDS"); do
  for n in $CONNS; do
    run "upstream" "http://127.0.0.1:$UPSTREAM_PORT" /echo "$up_pid"
    run "gateway" "http://127.0.0.1:$HERALD_PORT" /gw/echo "$herald_pid"
    run "gateway-jwt" "http://127.0.0.1:$HERALD_PORT" /gwjwt/echo "$herald_pid" "Authorization: Bearer $token"
  done
done
rm -f "$tmp"
