#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need, builds, checks
# formatting and lints, runs the Rust tests, then the conformance tests with real clients.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

step "system packages the tests use (redis-server, chromium, nginx, systemd-analyze, openssl)"
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The tests start their own nginx; the package's service, if it started, is not ours to keep.
  service nginx stop >/dev/null 2>&1 || true
fi

step "format and lints"
cargo fmt --check
cargo clippy --all-targets -- -D warnings

step "the library alone: no features, each feature alone, all (lints as errors)"
for features in "" redis msgpack eio3 admin-ui fuzzing; do
  echo "  features: ${features:-none}"
  cargo clippy --quiet -p tidings --lib --no-default-features --features "$features" -- -D warnings
done
cargo clippy --quiet -p tidings --lib --all-features -- -D warnings
# The default library build is the protocol core: none of the service's dependencies.
core_deps="$(cargo tree -p tidings -e normal --prefix none | sed 's/ v.*//' | sort -u)"
for dep in clap bcrypt jsonwebtoken redis tracing-subscriber; do
  if grep -qx "$dep" <<<"$core_deps"; then
    echo "the default library build depends on $dep" >&2
    exit 1
  fi
done
# The layers import one way: the parser and the adapter nothing of Socket.IO (the parser nothing of
# the adapter either), and the modules inside each import no cycle.
if grep -rn "crate::socketio\|crate::adapter" src/parser | grep -v "^[^:]*:[0-9]*:\s*//" ||
  grep -rn "crate::socketio" src/adapter | grep -v "^[^:]*:[0-9]*:\s*//"; then
  echo "a lower layer imports a higher one (above)" >&2
  exit 1
fi
python3 protocol-tests/module-cycles.py src/socketio crate::socketio
python3 protocol-tests/module-cycles.py src/adapter crate::adapter

step "build (debug, with examples)"
cargo build --all-targets

step "Rust tests"
cargo test --all-targets

step "Soak (2 000 WebSocket connections through heartbeats and churn, back to zero)"
cargo test --test soak -- --ignored

step "Doctests (the README's and the modules' examples, every feature on) and the API docs"
cargo test --doc -p tidings --all-features
RUSTDOCFLAGS="-D warnings" cargo doc --quiet -p tidings --all-features --no-deps

step "Fuzz targets (each briefly, from the committed seeds)"
bash fuzz/run.sh "${FUZZ_SECONDS:-15}"

if [[ -x protocol-tests/node/run.sh ]]; then
  step "Node conformance tests (stock clients)"
  protocol-tests/node/run.sh
fi
step "Cluster tests (Tidings and Node socket.io nodes through Redis)"
protocol-tests/cluster/run.sh

step "Browser tests (dashboard and Admin UI in headless Chromium)"
protocol-tests/browser/run.sh

if [[ -x protocol-tests/python/run.sh ]]; then
  step "Python conformance tests (python-socketio)"
  protocol-tests/python/run.sh
fi
step "Benchmark harness smoke (every peer, every scenario, small)"
benches/run.sh --quick

echo
echo "all test stages passed"
