#!/usr/bin/env bash
# The full side-by-side comparison behind docs/benchmarks.md, run strictly one scenario at a
# time, every server fresh (bench/compare.sh), all result lines appended to one file.
#
#   bench/suite.sh                 # every section, in the order below (about 60 minutes)
#   bench/suite.sh floor repeat    # only some sections
#   OUT=bench/out/mine.jsonl REPEATS=5 bench/suite.sh repeat
#
# Sections:
#   floor     plain-TCP cost of one loopback write per delivery (1 and 2 writer threads; rounds
#             every 1 s and every 50 ms), no server
#   idle      19,000 idle subscribed WebSockets (memory at 10,000 and 19,000, then 50 s of pings)
#   repeat    REPEATS times, interleaved: fan-out 10k at 1/s and at 20/s, handshake rate, API
#   sweep     sustained rate with --max-backlog 200ms (Herald 40..400/s, Nchan 8..20/s)
#   personal  10k subscribers on their own channels, 5,000 messages/s
#   churn     10k connections, 5% reconnecting every second, fan-out 5/s
#   protobuf  Herald with the Protobuf protocol, fan-out 10k at 1/s and 20/s
#   scale     bench/scale.sh: 100,000 connections over 6 Herald nodes
#   writes    fan-out 10k, Herald at 1, 20, 100, 200/s and Nchan at 1 and 10/s: deliveries per
#             write system call (how much batching happens)
#   inflight  handshake rate with 256 handshakes in flight instead of 64
#
# Nchan runs with 2 workers (one per core) and, where CPU matters, also with 1.
# Environment: OUT (bench/out/suite.jsonl), REPEATS (3), DURATION (30s: fan-out runs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
export OUT="${OUT:-$here/out/suite.jsonl}"
REPEATS="${REPEATS:-3}"
DURATION="${DURATION:-30s}"
bench="$root/target/release/herald-bench"
if [ ! -x "$bench" ] || [ ! -x "$root/target/release/herald" ]; then
  (cd "$root" && cargo build --release -p herald-server -p herald-bench)
fi
mkdir -p "$(dirname "$OUT")"
sections=("$@")
if [ ${#sections[@]} -eq 0 ]; then
  sections=(floor idle repeat sweep personal churn protobuf scale writes inflight)
fi

# compare.sh with a label; extra environment (NCHAN_WORKERS, HERALD) passes through.
cmp() {
  local label="$1"
  shift
  echo "### $(date -u +%H:%M:%S) $label: $*" >&2
  LABEL="$label" "$here/compare.sh" "$@" > /dev/null
}

for section in "${sections[@]}"; do
  case "$section" in
  floor)
    for rep in $(seq 1 "$REPEATS"); do
      for w in 1 2; do
        echo "### $(date -u +%H:%M:%S) floor writers=$w r$rep" >&2
        "$bench" floor -n 10000 --procs 2 --writers "$w" --rounds 30 --interval 1s \
          --label "suite floor r$rep" --json-out "$OUT" > /dev/null
        sleep 2
        "$bench" floor -n 10000 --procs 2 --writers "$w" --rounds 400 --interval 50ms \
          --label "suite floor20 r$rep" --json-out "$OUT" > /dev/null
        sleep 2
      done
    done
    ;;
  idle)
    NCHAN_WORKERS="2 1" cmp "suite idle" idle -n 19000 --procs 2 --checkpoints 10000,19000 \
      --settle 25s --window 50s
    ;;
  repeat)
    for rep in $(seq 1 "$REPEATS"); do
      NCHAN_WORKERS="2 1" cmp "suite fanout1 r$rep" fanout -n 10000 --procs 2 --rate 1 --duration "$DURATION"
      NCHAN_WORKERS="2 1" cmp "suite fanout20 r$rep" fanout -n 10000 --procs 2 --rate 20 --duration "$DURATION"
      NCHAN_WORKERS="2 1" cmp "suite handshake r$rep" churn --handshake-rate -n 100000 --duration 10s
      NCHAN_WORKERS="2 1" cmp "suite api r$rep" api --duration 10s
    done
    ;;
  sweep)
    for rate in 40 100 150 200 250 300 400; do
      NCHAN_WORKERS="" cmp "suite sweep" fanout -n 10000 --procs 2 --rate "$rate" --duration "$DURATION" \
        --max-backlog 200ms
    done
    for rate in 8 10 13 20; do
      HERALD=0 NCHAN_WORKERS="2 1" cmp "suite sweep" fanout -n 10000 --procs 2 --rate "$rate" \
        --duration "$DURATION" --max-backlog 200ms
    done
    ;;
  personal)
    cmp "suite personal" personal -n 10000 --procs 2 --rate 5000 --duration 20s
    ;;
  churn)
    cmp "suite churn" churn -n 10000 --procs 2 --churn-percent 5 --rate 5 --duration 20s
    ;;
  protobuf)
    for rate in 1 20; do
      NCHAN_WORKERS="" cmp "suite protobuf" fanout -n 10000 --procs 2 --rate "$rate" --duration "$DURATION" \
        --encoding protobuf
    done
    ;;
  scale)
    echo "### $(date -u +%H:%M:%S) scale" >&2
    "$here/scale.sh" > /dev/null
    ;;
  writes)
    for rate in 1 20 100 200; do
      NCHAN_WORKERS="" cmp "suite writes" fanout -n 10000 --procs 2 --rate "$rate" --duration 20s
    done
    for rate in 1 10; do
      HERALD=0 NCHAN_WORKERS="2" cmp "suite writes" fanout -n 10000 --procs 2 --rate "$rate" --duration 20s
    done
    ;;
  inflight)
    NCHAN_WORKERS="2 1" cmp "suite inflight256" churn --handshake-rate -n 100000 --duration 10s --max-inflight 256
    ;;
  *)
    echo "unknown section $section (floor idle repeat sweep personal churn protobuf scale writes inflight)" >&2
    exit 2
    ;;
  esac
done
echo "### $(date -u +%H:%M:%S) done; results in $OUT" >&2
