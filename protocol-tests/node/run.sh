#!/usr/bin/env bash
# Conformance tests with the stock JavaScript clients (engine.io-client, socket.io-client):
# builds the servers under test, installs the locked npm packages, runs every test/*.test.js with
# node's test runner, and exits with its status.
#
#   bash protocol-tests/node/run.sh            # from anywhere
#   TIDINGS_LOG=1 bash protocol-tests/node/run.sh   # echo the servers' output
#
# Each test file starts the server(s) it needs from the binaries named here:
#   TIDINGS_CONFORMANCE_BIN  examples/conformance (bare Engine.IO echo at /engine.io/ + Socket.IO)
#   TIDINGS_TEST_SERVER_BIN  examples/test_server (Socket.IO test server)
#   TIDINGS_ANALYTICS_BIN    the `tidings` binary (the analytics service)
#   TIDINGS_AXUM_BIN         examples/axum (Tidings as a layer of an axum Router)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

cd "$ROOT"
echo "==> cargo build --bins --examples"
cargo build --bins --examples
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac

cd "$HERE"
echo "==> npm ci"
npm ci --no-audit --no-fund

export TIDINGS_CONFORMANCE_BIN="$TARGET_DIR/debug/examples/conformance"
export TIDINGS_TEST_SERVER_BIN="$TARGET_DIR/debug/examples/test_server"
export TIDINGS_ANALYTICS_BIN="$TARGET_DIR/debug/tidings"
export TIDINGS_AXUM_BIN="$TARGET_DIR/debug/examples/axum"
for bin in "$TIDINGS_CONFORMANCE_BIN" "$TIDINGS_TEST_SERVER_BIN" "$TIDINGS_ANALYTICS_BIN" "$TIDINGS_AXUM_BIN"; do
  [[ -x "$bin" ]] || { echo "missing server binary: $bin" >&2; exit 1; }
done

echo "==> node --test test/"
status=0
node --test test/ || status=$?
exit "$status"
