#!/usr/bin/env bash
# Start or stop a release build of Herald with the benchmark config (bench/herald-bench.toml).
#
#   bench/herald.sh start [port]   # default 8000; prints "pid <PID>"
#   bench/herald.sh stop  [port]
#
# The binary is $HERALD_BIN or target/release/herald (build it with
# `cargo build --release -p herald-server`). Logs go to bench/out/herald-<port>.log; the PID is
# kept in bench/out/herald-<port>.pid and `stop` signals only that PID.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
bin="${HERALD_BIN:-$root/target/release/herald}"
cmd="${1:-}"
port="${2:-8000}"
out="$here/out"
pidfile="$out/herald-$port.pid"

case "$cmd" in
start)
  if [ ! -x "$bin" ]; then
    echo "no $bin: run cargo build --release -p herald-server" >&2
    exit 1
  fi
  mkdir -p "$out"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "herald already running on port $port (pid $(cat "$pidfile")); stop it first" >&2
    exit 1
  fi
  nohup "$bin" --config "$here/herald-bench.toml" --port "$port" ${HERALD_ARGS:-} > "$out/herald-$port.log" 2>&1 &
  pid=$!
  echo "$pid" > "$pidfile"
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; then
      echo "pid $pid"
      exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "herald exited; log:" >&2
      cat "$out/herald-$port.log" >&2
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.1
  done
  echo "herald did not become healthy on port $port; log in $out/herald-$port.log" >&2
  exit 1
  ;;
stop)
  if [ ! -f "$pidfile" ]; then
    echo "no herald recorded on port $port" >&2
    exit 0
  fi
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    # Graceful shutdown closes clients over shutdown.client_close_window (5 s) and exits within
    # shutdown.timeout (30 s).
    for _ in $(seq 1 350); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  fi
  rm -f "$pidfile"
  echo "stopped herald (pid $pid)" >&2
  ;;
*)
  echo "usage: $0 start [port] | stop [port]" >&2
  exit 2
  ;;
esac
