#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need, builds, checks
# formatting and lints, runs the Rust tests, then the conformance tests with real clients.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

step "format and lints"
cargo fmt --check
cargo clippy --all-targets -- -D warnings

step "build (debug, with examples)"
cargo build --all-targets

step "Rust tests"
cargo test --all-targets

step "Fuzz targets (each briefly, from the committed seeds)"
bash fuzz/run.sh "${FUZZ_SECONDS:-30}"

if [[ -x protocol-tests/node/run.sh ]]; then
  step "Node conformance tests (stock clients)"
  protocol-tests/node/run.sh
fi
step "Browser test (dashboard in headless Chromium)"
protocol-tests/browser/run.sh

if [[ -x protocol-tests/python/run.sh ]]; then
  step "Python conformance tests (python-socketio)"
  protocol-tests/python/run.sh
fi
echo
echo "all test stages passed"
