# Sourced by bench scripts: brokers and Herald nodes on free loopback ports, stopped by the PIDs
# started here (never the machine's own Redis on 6379 or NATS on 4222).
#
#   source "$here/lib/brokers.sh"     # sets up the cleanup trap; uses $tmp (a fresh directory)
#   start_redis;  echo "$redis_port $redis_pid"
#   start_nats;   echo "$nats_port $nats_pid $nats_monitor_port"
#   start_node PORT ENV...;  echo "$node_pid"     (release herald, bench/herald-bench.toml)
#   stop_pid PID
#   cpu_ticks PID                                 (utime + stime, clock ticks)
#   need_release_build                            (builds herald and herald-bench when missing)

herald_bin="${HERALD_BIN:-$root/target/release/herald}"
tmp="$(mktemp -d)"
started_pids=()

cleanup_started() {
  local p
  for p in "${started_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${started_pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup_started EXIT

# The release herald-bench, and the herald the nodes run ($HERALD_BIN or the release build).
bench="$root/target/release/herald-bench"
need_release_build() {
  if [ ! -x "$bench" ] || [ ! -x "$herald_bin" ]; then
    (cd "$root" && cargo build --release -p herald-server -p herald-bench)
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_redis() {
  redis_port="$(free_port)"
  mkdir -p "$tmp/redis-$redis_port"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$tmp/redis-$redis_port" --maxclients 10000 >"$tmp/redis-$redis_port.log" 2>&1 &
  redis_pid=$!
  started_pids+=("$redis_pid")
  until redis-cli -p "$redis_port" PING >/dev/null 2>&1; do sleep 0.05; done
}

start_nats() {
  nats_port="$(free_port)"
  nats_monitor_port="$(free_port)"
  nats-server -js -a 127.0.0.1 -p "$nats_port" -m "$nats_monitor_port" -sd "$tmp/nats-$nats_port" \
    >"$tmp/nats-$nats_port.log" 2>&1 &
  nats_pid=$!
  started_pids+=("$nats_pid")
  until (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null; do sleep 0.05; done
}

# start_node PORT [VAR=value...]: a Herald node with the bench config and that environment.
start_node() {
  local port="$1"
  shift
  env "$@" HERALD_LOG_LEVEL=warn "$herald_bin" --config "$here/herald-bench.toml" --port "$port" \
    >"$tmp/herald-$port.log" 2>&1 &
  node_pid=$!
  started_pids+=("$node_pid")
  for _ in $(seq 1 200); do
    if curl -fs -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; then return 0; fi
    if ! kill -0 "$node_pid" 2>/dev/null; then
      echo "herald on port $port exited:" >&2
      cat "$tmp/herald-$port.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "herald on port $port did not become healthy; log:" >&2
  cat "$tmp/herald-$port.log" >&2
  return 1
}

# stop_pid PID: TERM, wait up to 35 s (graceful shutdown), then KILL.
stop_pid() {
  local p="$1"
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 1 350); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}
