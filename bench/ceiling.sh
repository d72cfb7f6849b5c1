#!/usr/bin/env bash
# The publish ceiling through a broker against the raw broker, same run, same machine: one
# Herald node publishing through one Redis (engine.type = redis) and through NATS
# (broker.type = nats), driven by `herald-bench api` (CONNS keep-alive connections publishing
# as fast as answered to a channel without history or subscribers), against
#   - redis-benchmark PUBLISH with the same message size and Herald's own pipelining: Herald
#     sends every publish over one multiplexed connection, so the depth is measured in the
#     Herald run as Redis commands per read() system call of redis-server (/proc/PID/io syscr),
#     then redis-benchmark runs with -c 1 -P <that depth>; also -c CONNS -P 1 (CONNS clients,
#     one request each in flight: the API callers' concurrency);
#   - `herald-bench nats-pub`: CONNS tasks on one async-nats client publishing the same message
#     size (measured in the Herald run from the server's /varz in_bytes / in_msgs);
#   - Herald with the memory engine: the server API's own ceiling with no broker at all.
# ROUNDS (3) times, interleaved; SECS (8) seconds each. Result lines in OUT
# (bench/out/ceiling.jsonl), a summary table on stdout.
# BATCH=K (unset: one /api/publish per request): each request is a /api/batch of K publishes
# with "parallel": true, and Herald's rate is publications/s (requests × K); several values
# (BATCH="1 50") run one after the other within every round, each with its own measured depth.
#
#   cargo build --release -p herald-server -p herald-bench && bench/ceiling.sh
#   ROUNDS=2 SECS=8 BATCH="1 50" bench/ceiling.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
ROUNDS="${ROUNDS:-3}"
SECS="${SECS:-8}"
CONNS="${CONNS:-50}"
BATCH="${BATCH:-}"
OUT="${OUT:-$here/out/ceiling.jsonl}"
mkdir -p "$(dirname "$OUT")"
# shellcheck source=lib/brokers.sh
source "$here/lib/brokers.sh"
need_release_build
start_redis
start_nats
echo "redis port $redis_port pid $redis_pid; nats port $nats_port pid $nats_pid" >&2

redis_stat() { # field of INFO stats
  redis-cli -p "$redis_port" INFO stats | tr -d '\r' | awk -F: -v k="$1" '$1 == k {print $2}'
}
redis_reads() { awk '/^syscr/ {print $2}' "/proc/$redis_pid/io"; }
nats_varz() { # field of /varz
  curl -fs "http://127.0.0.1:$nats_monitor_port/varz" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"
}
record() { # label, json fields...: one result line
  python3 -c '
import json, sys, time
r = {"scenario": "ceiling", "label": sys.argv[1], "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    try:
        r[k] = json.loads(v)
    except ValueError:
        r[k] = v
print(json.dumps(r))' "$@" | tee -a "$OUT"
}

# herald_api ENGINE ROUND [K]: one node, the api load (batches of K parallel publishes if K);
# prints its figures, rps = publications/s.
herald_api() {
  local engine="$1" round="$2" k="${3:-}" env port batch=()
  [ -n "$k" ] && batch=(--batch "$k" --parallel)
  case "$engine" in
  memory) env=(HERALD_ENGINE_TYPE=memory) ;;
  redis) env=(HERALD_ENGINE_TYPE=redis "HERALD_ENGINE_REDIS_ADDRESS=redis://127.0.0.1:$redis_port") ;;
  nats) env=(HERALD_BROKER_ENABLED=true HERALD_BROKER_TYPE=nats "HERALD_BROKER_NATS_URL=nats://127.0.0.1:$nats_port") ;;
  esac
  port="$(free_port)"
  start_node "$port" "${env[@]}"
  local c0 r0 b0 m0 y0 t0 line
  c0="$(redis_stat total_commands_processed)"; r0="$(redis_reads)"; b0="$(redis_stat total_net_input_bytes)"
  m0="$(nats_varz in_msgs)"; y0="$(nats_varz in_bytes)"
  t0="$(cpu_ticks "$redis_pid") $(cpu_ticks "$nats_pid")"
  line="$("$bench" api --target herald --url "http://127.0.0.1:$port" --server-pid "$node_pid" \
    --api-key bench-api-key -n "$CONNS" --duration "${SECS}s" --channel bench_api "${batch[@]}" \
    --label "ceiling herald-$engine ${k:+b$k }r$round" 2>/dev/null | tail -n 1)"
  local c1 r1 b1 m1 y1 t1
  c1="$(redis_stat total_commands_processed)"; r1="$(redis_reads)"; b1="$(redis_stat total_net_input_bytes)"
  m1="$(nats_varz in_msgs)"; y1="$(nats_varz in_bytes)"
  t1="$(cpu_ticks "$redis_pid") $(cpu_ticks "$nats_pid")"
  stop_pid "$node_pid"
  LINE="$line" python3 - "$engine" "$c0" "$c1" "$r0" "$r1" "$b0" "$b1" "$m0" "$m1" "$y0" "$y1" "$t0" "$t1" <<'PY'
import json, os, sys
engine = sys.argv[1]
c0, c1, r0, r1, b0, b1, m0, m1, y0, y1 = map(int, sys.argv[2:12])
t0, t1 = sys.argv[12].split(), sys.argv[13].split()
r = json.loads(os.environ["LINE"])
tck = (r.get("machine") or {}).get("clk_tck") or 100
out = {"rps": r.get("requests_per_s"), "errors": r.get("api_errors"),
       "herald_cpu_us": r.get("server_cpu_us_per_request")}
if r.get("batch"):
    out.update({"batch": r["batch"], "requests_per_s": r["requests_per_s"], "rps": r["publications_per_s"],
                "herald_cpu_us": r.get("server_cpu_us_per_publication")})
if engine == "redis":
    cmds = c1 - c0
    out["redis_commands"] = cmds
    out["redis_commands_per_read"] = round(cmds / max(1, r1 - r0), 2)
    out["redis_bytes_per_command"] = round((b1 - b0) / max(1, cmds), 1)
    out["broker_cpu_s"] = (int(t1[0]) - int(t0[0])) / tck
if engine == "nats":
    msgs = m1 - m0
    out["nats_msgs"] = msgs
    out["nats_bytes_per_msg"] = round((y1 - y0) / max(1, msgs), 1)
    out["broker_cpu_s"] = (int(t1[1]) - int(t0[1])) / tck
print(json.dumps(out))
PY
}

channel="herald.client.bench_api"
# series ROUND [K]: Herald over the memory engine, Redis and NATS, and the raw brokers.
series() {
  local round="$1" k="${2:-}" tag
  tag="${k:+b$k }r$round"
  echo "### $(date -u +%H:%M:%S) round $round${k:+ batch $k}" >&2
  mem="$(herald_api memory "$round" "$k")"
  record "herald-memory $tag" "result=$mem" >/dev/null
  red="$(herald_api redis "$round" "$k")"
  record "herald-redis $tag" "result=$red" >/dev/null
  depth="$(python3 -c "import json,sys; print(max(1, round(json.loads(sys.argv[1])['redis_commands_per_read'])))" "$red")"
  # The PUBLISH command line Herald sends is redis_bytes_per_command long: the message is that
  # minus the RESP framing of PUBLISH <channel> (fixed parts + the two length prefixes).
  size="$(python3 -c "
import json, sys
per = json.loads(sys.argv[1])['redis_bytes_per_command']; ch = len(sys.argv[2])
frame = lambda n: len('*3\r\n\$7\r\nPUBLISH\r\n') + len(f'\${ch}\r\n') + ch + 2 + len(f'\${n}\r\n') + 2
n = max(1, int(per) - frame(100))
print(n)" "$red" "$channel")"
  body="$(head -c "$size" /dev/zero | tr '\0' x)"
  for variant in "1 $depth" "$CONNS 1"; do
    set -- $variant
    r0="$(cpu_ticks "$redis_pid")"
    rps="$(redis-benchmark -p "$redis_port" -c "$1" -P "$2" -n $((SECS * 40000)) -q PUBLISH "$channel" "$body" 2>&1 |
      tr '\r' '\n' | awk '/requests per second/ {for (i = 1; i <= NF; i++) if ($(i+1) == "requests") print $i}' | tail -n 1)"
    r1="$(cpu_ticks "$redis_pid")"
    record "raw-redis c=$1 P=$2 $tag" "result={\"rps\": $rps, \"clients\": $1, \"pipeline\": $2, \"message_bytes\": $size, \"broker_cpu_ticks\": $((r1 - r0))}" >/dev/null
  done
  nat="$(herald_api nats "$round" "$k")"
  record "herald-nats $tag" "result=$nat" >/dev/null
  nsize="$(python3 -c "import json,sys; print(max(1, int(json.loads(sys.argv[1])['nats_bytes_per_msg'])))" "$nat")"
  raw="$("$bench" nats-pub --url "nats://127.0.0.1:$nats_port" --subject "$channel" -n "$CONNS" \
    --payload "$nsize" --duration "${SECS}s" --server-pid "$nats_pid" --label "ceiling raw-nats $tag" 2>/dev/null | tail -n 1)"
  record "raw-nats $tag" "result=$(python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(json.dumps({'rps': r['publishes_per_s'], 'errors': r['publish_errors'], 'message_bytes': r['payload'], 'broker_cpu_s': r['server_cpu_s']}))" <<<"$raw")" >/dev/null
  python3 - "$OUT" "$tag" <<'PY'
import json, sys
tag = " " + sys.argv[2]
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("scenario") == "ceiling" and r["label"].endswith(tag)][-6:]
get = {r["label"][: -len(tag)]: r["result"] for r in rows}
red = get.get("herald-redis", {}); nat = get.get("herald-nats", {})
pipe = next((v for k, v in get.items() if k.startswith("raw-redis c=1 ")), {})
conc = next((v for k, v in get.items() if k.startswith("raw-redis c=") and not k.startswith("raw-redis c=1 ")), {})
rn = get.get("raw-nats", {})
ratio = lambda a, b: round(a / b, 3) if a and b else None
mem = get.get("herald-memory", {}).get("rps")
print(f"{sys.argv[2]}: memory {mem}/s; redis ÷ memory {ratio(red.get('rps'), mem)}, nats ÷ memory {ratio(nat.get('rps'), mem)}; "
      f"redis {red.get('rps')}/s (depth {red.get('redis_commands_per_read')}, {red.get('redis_bytes_per_command')} B/cmd) "
      f"vs raw P={pipe.get('pipeline')} {pipe.get('rps')}/s = {ratio(red.get('rps'), pipe.get('rps'))}, "
      f"vs raw c={conc.get('clients')} {conc.get('rps')}/s = {ratio(red.get('rps'), conc.get('rps'))}; "
      f"nats {nat.get('rps')}/s ({nat.get('nats_bytes_per_msg')} B/msg) vs raw {rn.get('rps')}/s = {ratio(nat.get('rps'), rn.get('rps'))}")
PY
}

for round in $(seq 1 "$ROUNDS"); do
  if [ -z "$BATCH" ]; then
    series "$round"
  else
    for k in $BATCH; do series "$round" "$k"; done
  fi
done
