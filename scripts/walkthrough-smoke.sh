#!/usr/bin/env bash
# Runs the README's install step and five-minute walkthrough as written, against the debug
# build: every command is taken from the README (the fenced block after its
# `<!-- walkthrough: NAME -->` marker) and every line the README says a command prints is
# compared with what it printed (`…` in the README stands for any text). What differs: Herald
# listens on a free port and the commands are pointed at it; `cargo install` builds in debug into
# a temporary directory; `npm ci` is the one scripts/test.sh already ran. The README and this
# script cannot drift apart: a marker missing, unknown, or a shell block without one fails.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
ROOT=$PWD
README=$ROOT/README.md
BIN=$(realpath "${HERALD_BIN:-target/debug/herald}")
# Herald warns about HERALD_* variables it does not know; this one is the script's own.
unset HERALD_BIN
WORK=$(mktemp -d)
HERALD_PID= NODE_PID=
cleanup() {
  if [ -n "$NODE_PID" ]; then kill "$NODE_PID" 2>/dev/null || true; fi
  if [ -n "$HERALD_PID" ]; then kill "$HERALD_PID" 2>/dev/null && wait "$HERALD_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "walkthrough: $*" >&2; exit 1; }

# Every marked block, in README order; the script handles exactly these.
STEPS=(install-herald install-node start token token-prints subscribe subscribe-prints publish
  publish-prints publish-delivered publish-while-down publish-while-down-prints resubscribe
  resubscribe-prints genconfig genconfig-prints)

# The fenced block after `<!-- walkthrough: $1 -->`, without the list item's indentation.
block() {
  awk -v name="$1" '
    !found && $0 ~ "^ *<!-- walkthrough: " name " -->$" { found = 1; next }
    found == 1 && /^ *```/ { found = 2; match($0, /^ */); indent = RLENGTH; next }
    found == 2 && /^ *```/ { exit }
    found == 2 { print substr($0, indent + 1) }
  ' "$README"
}

check_structure() {
  local names
  names=$(sed -n 's/^ *<!-- walkthrough: \([a-z-]*\) -->$/\1/p' "$README" | tr '\n' ' ')
  [ "$names" = "${STEPS[*]} " ] ||
    fail "README markers are '$names', this script runs '${STEPS[*]}': update one to match the other"
  # A shell block in the install or walkthrough sections that no step runs would go untested.
  awk '
    /^## / { inside = ($0 == "## Install" || $0 == "## Five-minute walkthrough") }
    inside && /^ *```sh/ && prev !~ /<!-- walkthrough: / { print "README.md:" NR ": shell block without a walkthrough marker"; bad = 1 }
    NF { prev = $0 }
    END { exit bad }
  ' "$README" || fail "every shell block in Install and Five-minute walkthrough needs a marker"
  local name
  for name in "${STEPS[@]}"; do [ -n "$(block "$name")" ] || fail "README block '$name' is empty"; done
}

# A README line as an anchored regular expression: literal text, `…` matches anything.
pattern() { printf '%s' "$1" | sed -e 's/[][\.*^$(){}+?|/]/\\&/g' -e 's/…/.*/g'; }
count_lines() { if [ -f "$1" ]; then awk 'END { print NR }' "$1"; else echo 0; fi; }

# expect NAME FILE FROM: lines FROM+1… of FILE are the lines of README block NAME (waiting up
# to 20 s for them to appear); sets SEEN to the last line checked.
expect() {
  local want=() i actual re
  mapfile -t want < <(block "$1")
  for _ in $(seq 200); do
    [ "$(count_lines "$2")" -ge $(($3 + ${#want[@]})) ] && break
    sleep 0.1
  done
  for i in "${!want[@]}"; do
    actual=$(sed -n "$(($3 + i + 1))p" "$2")
    re=$(pattern "${want[$i]}")
    [[ $actual =~ ^$re$ ]] || {
      echo "printed:" >&2; cat "$2" >&2; echo >&2
      fail "step '$1', line $((i + 1)): the README says '${want[$i]}', the command printed '$actual'"
    }
  done
  SEEN=$(($3 + ${#want[@]}))
}

# no_more FILE N: FILE has exactly N lines, so nothing was printed that the README does not show.
no_more() {
  [ "$(count_lines "$1")" -eq "$2" ] || { cat "$1" >&2; fail "$1 printed more than the README shows"; }
}

# A one-line command run in the background as itself (so that its pid is the process to stop).
single_line() { [ "$(block "$1" | wc -l)" -eq 1 ] || fail "step '$1' must be one line"; block "$1"; }

check_structure

# Install: the README's command, as a debug build reusing this checkout's target dir (the build
# scripts/test.sh just made, so it takes seconds), offline, into a directory of the test's own.
install=$(single_line install-herald)
[[ $install == "cargo install "* ]] || fail "step 'install-herald' is not a cargo install command"
CARGO_TARGET_DIR="$ROOT/target" timeout 120 \
  bash -c "$install --debug --offline --quiet --root '$WORK/install'" ||
  fail "the README's install command failed"
[ "$("$WORK/install/bin/herald" version)" = "$("$BIN" version)" ] ||
  fail "the README's install command did not install the herald under test"
[ "$(block install-node)" = "(cd examples/node && npm ci)" ] ||
  fail "the README's npm command changed; check it and update this script"
[ -f examples/node/node_modules/centrifuge/package.json ] ||
  fail "examples/node has no node_modules: run (cd examples/node && npm ci)"

# `herald` on the PATH is the build under test.
mkdir "$WORK/bin"
ln -s "$BIN" "$WORK/bin/herald"
export PATH="$WORK/bin:$PATH"
# Where subscribe.js keeps its position: a fresh file, not one left by the reader's own runs.
export POSITION_FILE="$WORK/news.position.json"

# 1. Start Herald.
HERALD_HTTP_SERVER_PORT=0 bash -c "exec $(single_line start)" 2> "$WORK/herald.log" &
HERALD_PID=$!
for _ in $(seq 100); do grep -qs 'herald listening on 127.0.0.1:' "$WORK/herald.log" && break; sleep 0.1; done
PORT=$(grep -o 'herald listening on 127.0.0.1:[0-9]*' "$WORK/herald.log" | head -1 | sed 's/.*://')
[ -n "$PORT" ] || { cat "$WORK/herald.log" >&2; fail "herald did not log 'herald listening on 127.0.0.1:…'"; }
URL="ws://127.0.0.1:$PORT/connection/websocket"
on_port() { block "$1" | sed "s/127\.0\.0\.1:8000/127.0.0.1:$PORT/g"; }

# 2. Token.
eval "$(block token)" 2> "$WORK/token.err"
[ -n "${TOKEN:-}" ] || fail "step 'token' set no TOKEN"
export TOKEN
expect token-prints "$WORK/token.err" 0
no_more "$WORK/token.err" "$SEEN"

# 3. Subscribe (pointed at this Herald's port).
bash -c "exec $(single_line subscribe) $URL" > "$WORK/sub1.log" 2>&1 &
NODE_PID=$!
expect subscribe-prints "$WORK/sub1.log" 0
SUB_SEEN=$SEEN

# 4. Publish; the subscriber prints the publication.
eval "$(on_port publish)" > "$WORK/publish.out" 2> "$WORK/curl.err"
expect publish-prints "$WORK/publish.out" 0
no_more "$WORK/publish.out" "$SEEN"
expect publish-delivered "$WORK/sub1.log" "$SUB_SEEN"

# 5. Ctrl-C the subscriber, publish while it is down, restart it: it recovers what it missed.
kill -INT "$NODE_PID"
wait "$NODE_PID" 2>/dev/null || true
NODE_PID=
no_more "$WORK/sub1.log" "$SEEN"
eval "$(on_port publish-while-down)" > "$WORK/publish2.out" 2> "$WORK/curl.err"
expect publish-while-down-prints "$WORK/publish2.out" 0
no_more "$WORK/publish2.out" "$SEEN"
bash -c "exec $(single_line resubscribe) $URL" > "$WORK/sub2.log" 2>&1 &
NODE_PID=$!
expect resubscribe-prints "$WORK/sub2.log" 0
sleep 0.5
no_more "$WORK/sub2.log" "$SEEN"

# 6. genconfig and checkconfig, in a directory of their own.
mkdir "$WORK/deploy"
(cd "$WORK/deploy" && eval "$(block genconfig)") > "$WORK/genconfig.out" 2>&1
expect genconfig-prints "$WORK/genconfig.out" 0
no_more "$WORK/genconfig.out" "$SEEN"

echo "walkthrough ok: ${#STEPS[@]} README blocks checked (port $PORT)"
