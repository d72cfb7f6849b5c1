#!/usr/bin/env bash
# Start or stop a standalone nginx + nchan (the Debian package libnginx-mod-nchan) for herald-bench.
#
#   bench/nchan.sh start [workers] [port]   # workers 1|2 (default 1), port default 8081
#   bench/nchan.sh stop  [port]
#
# `start` installs libnginx-mod-nchan with apt-get if it is missing, writes a config from
# bench/nchan/nginx.conf.template into its own prefix bench/out/nchan-<port>/, starts nginx in the
# background and prints the PIDs:
#   master <pid>
#   workers <pid> [<pid>]
# Pass the worker PIDs to herald-bench --server-pid. `stop` signals only the master PID recorded
# by `start` (nginx.pid in the prefix) and waits for it to exit.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-}"

prefix_for() { echo "$here/out/nchan-$1"; }

case "$cmd" in
start)
  workers="${2:-1}"
  port="${3:-8081}"
  case "$workers" in 1 | 2) ;; *) echo "workers must be 1 or 2" >&2; exit 2 ;; esac
  if [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    echo "installing libnginx-mod-nchan ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq libnginx-mod-nchan >&2
  fi
  dir="$(prefix_for "$port")"
  if [ -f "$dir/nginx.pid" ] && kill -0 "$(cat "$dir/nginx.pid")" 2>/dev/null; then
    echo "nchan already running on port $port (master $(cat "$dir/nginx.pid")); stop it first" >&2
    exit 1
  fi
  mkdir -p "$dir/logs" "$dir/tmp"
  user_line=""
  if [ "$(id -u)" = 0 ]; then user_line="user root;"; fi
  sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$port#g" -e "s#@WORKERS@#$workers#g" -e "s#@USER@#$user_line#g" \
    "$here/nchan/nginx.conf.template" > "$dir/nginx.conf"
  nginx -t -q -c "$dir/nginx.conf" -p "$dir/" >&2
  # The shell that started nginx exits; nginx (daemon off) keeps running in the background.
  nohup nginx -c "$dir/nginx.conf" -p "$dir/" > "$dir/logs/stdout.log" 2>&1 &
  master=$!
  # Wait (bounded) for the pid file and the workers.
  for _ in $(seq 1 100); do
    if [ -f "$dir/nginx.pid" ] && [ "$(cat "$dir/nginx.pid")" = "$master" ]; then
      kids="$(pgrep -P "$master" | tr '\n' ' ' || true)"
      if [ "$(echo "$kids" | wc -w)" -ge "$workers" ]; then break; fi
    fi
    if ! kill -0 "$master" 2>/dev/null; then
      echo "nginx exited; see $dir/logs/error.log" >&2
      cat "$dir/logs/error.log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
  kids="$(pgrep -P "$master" | tr '\n' ' ' || true)"
  echo "master $master"
  echo "workers ${kids% }"
  ;;
stop)
  port="${2:-8081}"
  dir="$(prefix_for "$port")"
  if [ ! -f "$dir/nginx.pid" ]; then
    echo "no nchan running on port $port (no $dir/nginx.pid)" >&2
    exit 0
  fi
  master="$(cat "$dir/nginx.pid")"
  if kill -0 "$master" 2>/dev/null; then
    kill -QUIT "$master"
    for _ in $(seq 1 100); do
      kill -0 "$master" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$master" 2>/dev/null; then kill -TERM "$master"; fi
  fi
  rm -f "$dir/nginx.pid"
  echo "stopped nchan (master $master)" >&2
  ;;
*)
  echo "usage: $0 start [workers] [port] | stop [port]" >&2
  exit 2
  ;;
esac
