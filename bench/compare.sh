#!/usr/bin/env bash
# Runs one herald-bench scenario against Herald and then against Nchan, each freshly started
# (so memory baselines are clean), and prints the ratio of the main figures.
#
#   bench/compare.sh <scenario> [herald-bench args...]
#   bench/compare.sh fanout -n 10000 --rate 20 --duration 20s
#   bench/compare.sh idle -n 10000 --window 60s
#   bench/compare.sh api --duration 10s
#
# Environment: HERALD_PORT (8000), NCHAN_PORT (8081), NCHAN_WORKERS (2: nginx worker processes,
# one per core, as `worker_processes auto` would pick here; a list such as "2 1" runs Nchan once
# per entry, each fresh; empty: no Nchan run), HERALD (1; 0 skips the Herald run), OUT
# (bench/out/compare.jsonl: the result lines are appended there), LABEL (free text stored in
# each result). The result lines are also printed on stdout (herald first).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
scenario="${1:?usage: $0 <idle|fanout|personal|churn|api> [herald-bench args...]}"
shift
HERALD_PORT="${HERALD_PORT:-8000}"
NCHAN_PORT="${NCHAN_PORT:-8081}"
NCHAN_WORKERS="${NCHAN_WORKERS-2}"
OUT="${OUT:-$here/out/compare.jsonl}"
LABEL="${LABEL:-compare}"
bench="$root/target/release/herald-bench"
if [ ! -x "$bench" ] || [ ! -x "$root/target/release/herald" ]; then
  (cd "$root" && cargo build --release -p herald-server -p herald-bench)
fi
mkdir -p "$here/out"
tmp="$(mktemp -d)"
cleanup() {
  "$here/herald.sh" stop "$HERALD_PORT" 2>/dev/null || true
  "$here/nchan.sh" stop "$NCHAN_PORT" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

runs=()
if [ "${HERALD:-1}" != 0 ]; then
  sleep 2 # let the kernel reclaim the sockets of an earlier run before the baseline
  echo "== herald: $scenario $*" >&2
  pid="$("$here/herald.sh" start "$HERALD_PORT" | awk '/^pid/ {print $2}')"
  "$bench" "$scenario" --target herald --url "http://127.0.0.1:$HERALD_PORT" --server-pid "$pid" \
    --hmac-secret bench-hmac-secret --api-key bench-api-key \
    --label "$LABEL" --json-out "$OUT" "$@" > "$tmp/herald.json"
  "$here/herald.sh" stop "$HERALD_PORT"
  runs+=("$tmp/herald.json")
fi

for workers in $NCHAN_WORKERS; do
  sleep 2 # let the kernel reclaim the closed sockets before the next baseline
  echo "== nchan ($workers worker(s)): $scenario $*" >&2
  started="$("$here/nchan.sh" start "$workers" "$NCHAN_PORT")"
  pids=()
  for w in $(echo "$started" | awk '/^workers/ {$1=""; print}'); do pids+=(--server-pid "$w"); done
  "$bench" "$scenario" --target nchan --url "http://127.0.0.1:$NCHAN_PORT" "${pids[@]}" \
    --label "$LABEL nchan_workers=$workers" --json-out "$OUT" "$@" > "$tmp/nchan-$workers.json"
  "$here/nchan.sh" stop "$NCHAN_PORT"
  runs+=("$tmp/nchan-$workers.json")
done

for r in "${runs[@]}"; do tail -n 1 "$r"; done
if [ -f "$tmp/herald.json" ]; then
  for workers in $NCHAN_WORKERS; do
    echo "(nchan with $workers worker(s))" >&2
    python3 "$here/report.py" --compare "$tmp/herald.json" "$tmp/nchan-$workers.json" >&2
  done
fi
