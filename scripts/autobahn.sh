#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn TestSuite cases (through `kosoku`, from PyPI) against
# Herald's test-only echo endpoint (websocket.echo_endpoint_for_conformance_tests), which uses
# the real frame codec and transport. Every case except the compression ones (12.*, 13.*:
# Herald does not offer permessage-deflate) runs; exits non-zero if one fails. See
# docs/conformance.md.
#
# Environment: HERALD_BIN (default: target/debug/herald, built if missing), AUTOBAHN_VENV
# (default: target/autobahn-venv, created with pip if missing), AUTOBAHN_REPORTS (where the
# per-case reports go; default: target/autobahn-reports).
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
venv=${AUTOBAHN_VENV:-target/autobahn-venv}
reports=${AUTOBAHN_REPORTS:-target/autobahn-reports}
herald=${HERALD_BIN:-target/debug/herald}

if [ ! -x "$venv/bin/kosoku" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
fi
if [ -z "${HERALD_BIN:-}" ] && [ ! -x "$herald" ]; then
  cargo build -p herald-server --locked
fi

work=$(mktemp -d)
herald_pid=
cleanup() {
  if [ -n "$herald_pid" ]; then kill "$herald_pid" 2>/dev/null || true; wait "$herald_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Messages up to 16 MiB (cases 9.*) are echoed whole, so the size and queue limits are raised.
cat > "$work/herald.toml" <<'EOF'
[http_server]
address = "127.0.0.1"
port = 0
[websocket]
echo_endpoint_for_conformance_tests = "/debug/ws-echo"
message_size_limit = 67108864
[client]
queue_max_size = 134217728
allow_anonymous_connect_without_token = true
[log]
level = "info"
EOF
# Started directly (not through a pipe) so that $! is herald's own PID.
env -u HERALD_CONFIG NO_COLOR=1 "$herald" --config "$work/herald.toml" 2> "$work/herald.log" &
herald_pid=$!
addr=
for _ in $(seq 100); do
  addr=$(sed -n 's/.*herald listening on \([0-9.]*:[0-9]*\).*/\1/p' "$work/herald.log" | head -n 1)
  [ -n "$addr" ] && break
  kill -0 "$herald_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "autobahn: herald did not start:" >&2
  cat "$work/herald.log" >&2
  exit 1
fi

rm -rf "$reports"
# kosoku exits 1 when a case fails; the verdicts are read from its report below either way.
set +e
timeout 300 "$venv/bin/kosoku" -m fuzzingclient "ws://$addr/debug/ws-echo" \
  -x '12.*' -x '13.*' -p 2 -o "$reports" > "$work/kosoku.log" 2>&1
rc=$?
set -e
if [ "$rc" -gt 1 ] || [ ! -f "$reports/index.json" ]; then
  echo "autobahn: kosoku did not finish (exit $rc):" >&2
  tail -n 20 "$work/kosoku.log" >&2
  exit 1
fi

# Autobahn verdicts: OK, NON-STRICT (a SHOULD not followed) and INFORMATIONAL (unspecified
# behaviour) are conformant; FAILED, UNIMPLEMENTED, ERROR and the close failures are not.
"$venv/bin/python" - "$reports/index.json" <<'EOF'
import json, sys
from collections import Counter

index = json.load(open(sys.argv[1]))
acceptable = {"OK", "NON-STRICT", "INFORMATIONAL"}
verdicts, failed = Counter(), []
for cases in index.values():
    for case_id, case in cases.items():
        behavior, close = case["behavior"], case["behaviorClose"]
        if case_id.split(".")[0] in ("12", "13"):
            continue
        if behavior in acceptable and close in acceptable:
            verdicts[behavior if behavior != "OK" else close] += 1
        else:
            failed.append(f"{case_id} {behavior}/{close}")
passed = sum(verdicts.values())
failed.sort(key=lambda f: [int(p) for p in f.split()[0].split(".")])
for line in failed[:40]:
    print(f"autobahn: FAILED {line}")
if len(failed) > 40:
    print(f"autobahn: ... and {len(failed) - 40} more failed (reports in {sys.argv[1]})")
print(f"autobahn: {passed} passed, {len(failed)} failed")
if passed:
    print("autobahn: of the passed, " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
          + "; 12.* and 13.* (compression) not run")
sys.exit(1 if failed or passed == 0 else 0)
EOF
