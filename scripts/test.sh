#!/usr/bin/env bash
# Runs every test Herald has: formatting, lints, Rust unit and integration tests (against real
# `herald` processes), the Autobahn WebSocket conformance cases, the official centrifuge-js SDK
# tests in compat/, the headless-Chromium browser test in browser/, and the README walkthrough. Installs the node and Python packages it needs
# on first run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

# The otlp feature is off by default; its exporter and its test (a collector in the test
# receiving the spans) are checked here so they cannot rot.
step "OTLP span export (--features otlp): clippy and tests/otlp.rs"
cargo clippy -p herald-server --features otlp --all-targets --locked -- -D warnings
cargo test -p herald-server --features otlp --locked --lib --test otlp

step "build herald for the SDK tests"
cargo build -p herald-server --locked

step "WebSocket conformance (Autobahn cases via kosoku)"
HERALD_BIN="$PWD/target/debug/herald" ./scripts/autobahn.sh

for dir in compat browser examples/node; do
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    step "npm ci ($dir)"
    (cd "$dir" && npm ci --no-audit --no-fund)
  fi
done

step "SDK compatibility tests (compat/)"
(cd compat && HERALD_BIN="$PWD/../target/debug/herald" npm test)

step "browser tests (headless Chromium: EventSource on uni_sse, fetch long-polling, the admin console)"
(cd browser && HERALD_BIN="$PWD/../target/debug/herald" npm test)

step "README walkthrough"
./scripts/walkthrough-smoke.sh

printf '\nall tests passed\n'
