#!/usr/bin/env bash
# The dashboard, the Socket.IO Admin UI and the analytics client package (a React page) in headless Chromium. Installs Debian's chromium if it is missing, the page's client
# bundle, playwright-core and the Admin UI package, builds the tidings binary, then runs the test.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
npm ci --prefix "$ROOT/src/service/analytics/web" --silent
(cd "$HERE" && npm ci --silent)
(cd "$ROOT" && cargo build --bin tidings)
cd "$HERE"
TIDINGS_ANALYTICS_BIN="$ROOT/target/debug/tidings" node --test dashboard.test.js admin-ui.test.js client.test.js
