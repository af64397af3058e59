#!/usr/bin/env bash
# Where an idle connection's memory goes, by owner: runs the Tidings bench server under heaptrack,
# opens N idle connections with the load generator and, while they are held, stops the server with
# SIGKILL, so what is live in the profile is what the connections hold. Prints a Markdown table of
# live heap bytes per connection by owner (benches/memory/breakdown.py).
#
#   benches/memory/run.sh [--conns N] [--no-build]     # N defaults to 5000
#
# Needs heaptrack (Debian's package of that name). RSS per connection, the figure the issue's targets
# are about, comes from the main harness (benches/run.sh); this table explains it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CONNS=5000
BUILD=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --conns) CONNS="$2"; shift ;;
    --no-build) BUILD=0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done
command -v heaptrack >/dev/null || { echo "heaptrack is not installed (apt-get install heaptrack)" >&2; exit 1; }
if [[ $BUILD == 1 ]]; then
  cargo build --release --example bench_server
  cargo build --release --manifest-path benches/loadgen/Cargo.toml
fi
WORK="$(mktemp -d)"
SERVER=""
cleanup() {
  [[ -n "$SERVER" ]] && kill -KILL "$SERVER" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=0 heaptrack -o "$WORK/profile" target/release/examples/bench_server >"$WORK/server.log" 2>&1 &
port=""
for _ in $(seq 1 100); do
  port="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/server.log" | head -n1)"
  [[ -n "$port" ]] && break
  sleep 0.1
done
[[ -n "$port" ]] || { echo "the server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }
SERVER="$(pgrep -x bench_server | head -n1)"
benches/loadgen/target/release/loadgen --port "$port" --server-pid "$SERVER" \
  idle --conns "$CONNS" --hold 30 >"$WORK/loadgen.json" 2>"$WORK/loadgen.log" &
LOADGEN=$!
# Once the server's established connections number at least N and have not changed for two seconds
# they are stopped mid-hold.
last=-1
steady=0
for _ in $(seq 1 300); do
  established="$(ss -Htn state established "( sport = :$port )" | wc -l)"
  if [[ "$established" -ge "$CONNS" && "$established" == "$last" ]]; then
    steady=$((steady + 1))
    [[ $steady -ge 2 ]] && break
  else
    steady=0
  fi
  last="$established"
  sleep 1
done
kill -KILL "$SERVER"
SERVER=""
wait "$LOADGEN" 2>/dev/null || true
# heaptrack's own process finishes writing the profile once the server is gone.
for _ in $(seq 1 100); do
  ls "$WORK"/profile*.zst >/dev/null 2>&1 && ! pgrep -f "heaptrack -o $WORK" >/dev/null && break
  sleep 0.1
done
heaptrack_print -f "$WORK"/profile*.zst --flamegraph-cost-type leaked -F "$WORK/stacks" >/dev/null
python3 benches/memory/breakdown.py "$WORK/stacks" "$CONNS"
