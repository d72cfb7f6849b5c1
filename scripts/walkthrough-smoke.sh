#!/usr/bin/env bash
# Replays the README's 5-minute walkthrough against the debug build: start Herald with
# config/dev.toml, get a token with `herald gentoken`, subscribe with centrifuge-js
# (examples/node), publish with curl, and check the subscriber printed the publication.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${HERALD_BIN:-target/debug/herald}
WORK=$(mktemp -d)
HERALD_PID= NODE_PID=
cleanup() {
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null || true
  [ -n "$HERALD_PID" ] && kill "$HERALD_PID" 2>/dev/null && wait "$HERALD_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_for() { # pattern file seconds
  for _ in $(seq $(( $3 * 10 ))); do grep -q "$1" "$2" && return 0; sleep 0.1; done
  echo "timed out waiting for '$1' in $2:"; cat "$2"; return 1
}

"$BIN" --config config/dev.toml --port 0 2> "$WORK/herald.log" &
HERALD_PID=$!
wait_for 'listening on 127.0.0.1:' "$WORK/herald.log" 10
PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/herald.log" | head -1 | sed 's/.*://')

TOKEN=$("$BIN" gentoken --config config/dev.toml --user 42 2>/dev/null)
node examples/node/subscribe.js "$TOKEN" news "ws://127.0.0.1:$PORT/connection/websocket" > "$WORK/sub.log" 2>&1 &
NODE_PID=$!
wait_for 'subscribed to news' "$WORK/sub.log" 10

curl -sf -X POST -H 'X-API-Key: dev-api-key' -d '{"channel":"news","data":{"text":"hello"}}' \
  "http://127.0.0.1:$PORT/api/publish" > "$WORK/publish.json"
grep -q '"offset":1' "$WORK/publish.json" || { echo "unexpected publish answer:"; cat "$WORK/publish.json"; exit 1; }
wait_for '{"text":"hello"}' "$WORK/sub.log" 10
echo "walkthrough ok (port $PORT)"
