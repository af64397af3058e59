#!/usr/bin/env bash
# Mixed Tidings/Node clusters through Redis: the classic, streams and sharded adapters. redis-server
# (and redis-cli, for the Redis Cluster of the sharded tests) must be installed (run-all.sh does it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
(cd "$ROOT" && cargo build --bin tidings --example test_server)
(cd "$HERE" && npm ci --silent)
cd "$HERE"
TIDINGS_TEST_SERVER_BIN="$ROOT/target/debug/examples/test_server" \
TIDINGS_ANALYTICS_BIN="$ROOT/target/debug/tidings" \
  node --test cluster.test.js streams.test.js sharded.test.js
