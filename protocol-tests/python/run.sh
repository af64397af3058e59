#!/usr/bin/env bash
# Runs the python-socketio conformance tests against examples/test_server.rs.
# Works on a fresh machine: makes the venv, installs the pinned client, builds the server.
# Extra arguments go to pytest (e.g. `run.sh -k polling -x`).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating $VENV"
  python3 -m venv "$VENV"
fi
# Install only when requirements.txt changed since the last successful install.
STAMP="$VENV/.requirements.installed"
if ! cmp -s "$HERE/requirements.txt" "$STAMP"; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  cp "$HERE/requirements.txt" "$STAMP"
fi

# Always build: a no-op when the binary is up to date, and it never tests a stale server.
(cd "$ROOT" && cargo build --quiet --example test_server)
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
export TEST_SERVER_BIN="${TEST_SERVER_BIN:-$TARGET_DIR/debug/examples/test_server}"

cd "$HERE"
# exec: the script's exit code is pytest's.
exec "$VENV/bin/python" -m pytest -q "$@"
