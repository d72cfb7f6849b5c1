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
# one per core, as `worker_processes auto` would pick here), OUT (bench/out/compare.jsonl: the
# result lines are appended there), LABEL (free text stored in each result).
# Both result lines are also printed on stdout (herald first).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
scenario="${1:?usage: $0 <idle|fanout|personal|churn|api> [herald-bench args...]}"
shift
HERALD_PORT="${HERALD_PORT:-8000}"
NCHAN_PORT="${NCHAN_PORT:-8081}"
NCHAN_WORKERS="${NCHAN_WORKERS:-2}"
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

echo "== herald: $scenario $*" >&2
pid="$("$here/herald.sh" start "$HERALD_PORT" | awk '/^pid/ {print $2}')"
"$bench" "$scenario" --target herald --url "http://127.0.0.1:$HERALD_PORT" --server-pid "$pid" \
  --hmac-secret bench-hmac-secret --api-key bench-api-key \
  --label "$LABEL" --json-out "$OUT" "$@" > "$tmp/herald.json"
"$here/herald.sh" stop "$HERALD_PORT"
sleep 2 # let the kernel reclaim the closed sockets before the next baseline

echo "== nchan ($NCHAN_WORKERS worker(s)): $scenario $*" >&2
started="$("$here/nchan.sh" start "$NCHAN_WORKERS" "$NCHAN_PORT")"
pids=()
for w in $(echo "$started" | awk '/^workers/ {$1=""; print}'); do pids+=(--server-pid "$w"); done
"$bench" "$scenario" --target nchan --url "http://127.0.0.1:$NCHAN_PORT" "${pids[@]}" \
  --label "$LABEL nchan_workers=$NCHAN_WORKERS" --json-out "$OUT" "$@" > "$tmp/nchan.json"
"$here/nchan.sh" stop "$NCHAN_PORT"

tail -n 1 "$tmp/herald.json"
tail -n 1 "$tmp/nchan.json"
python3 "$here/report.py" --compare "$tmp/herald.json" "$tmp/nchan.json" >&2
