#!/usr/bin/env bash
# The benchmark harness: builds every peer and the load generator in release mode, runs each
# scenario against each peer one at a time (a fresh server process per run), repeats each run,
# and writes benches/results/results.{json,md} and one SVG chart per scenario.
#
#   benches/run.sh                 # the full run (about 15 minutes on 2 cores)
#   benches/run.sh --quick         # a small smoke of every peer and scenario (CI)
#
# Options (each also an environment variable, shown in brackets):
#   --repeat R          runs per peer and scenario; median and min–max are reported  [BENCH_REPEAT=3]
#   --peers "a b"       among: tidings node socketioxide floor limit                   [BENCH_PEERS]
#   --scenarios "a b"   among: idle idle-polling fanout-100 fanout-max echo            [BENCH_SCENARIOS]
#   --idle-conns N      connections of the idle scenario                               [BENCH_IDLE_CONNS=18000]
#   --idle-hold S       seconds they are held                                          [BENCH_IDLE_HOLD=10]
#   --subs N            subscribers of the fan-out scenarios                           [BENCH_SUBS=1000]
#   --rate R            broadcasts/s of the fixed-rate fan-out                         [BENCH_RATE=100]
#   --clients N         clients of the echo scenario                                   [BENCH_CLIENTS=100]
#   --secs S            seconds of each fan-out and echo run                           [BENCH_SECS=10]
#   --threads T         worker threads of each load-generator process                  [LOADGEN_THREADS=1]
#   --soak              also hold 18 000 connections to Tidings for 10 minutes         [BENCH_SOAK=0]
#                       (BENCH_SOAK_CONNS=18000, BENCH_SOAK_SECS=600 to change that)
#   --analytics / --no-analytics   the analytics service's own load (Tidings only)    [BENCH_ANALYTICS]
#   --out DIR           where results go           [BENCH_OUT=benches/results; --quick: target/bench-quick]
#   --note TEXT         a line for the report (e.g. why this run was made)               [BENCH_NOTE]
#   --no-build          use what is already built
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK=0
REPEAT="${BENCH_REPEAT:-}"
PEERS="${BENCH_PEERS:-tidings node socketioxide floor limit}"
SCENARIOS="${BENCH_SCENARIOS:-idle idle-polling fanout-100 fanout-max echo}"
IDLE_CONNS="${BENCH_IDLE_CONNS:-}"
IDLE_HOLD="${BENCH_IDLE_HOLD:-}"
SUBS="${BENCH_SUBS:-}"
RATE="${BENCH_RATE:-100}"
CLIENTS="${BENCH_CLIENTS:-}"
SECS="${BENCH_SECS:-}"
THREADS="${LOADGEN_THREADS:-1}"
SOAK="${BENCH_SOAK:-0}"
ANALYTICS="${BENCH_ANALYTICS:-}"
OUT="${BENCH_OUT:-}"
NOTE="${BENCH_NOTE:-}"
BUILD=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --repeat) REPEAT="$2"; shift ;;
    --peers) PEERS="$2"; shift ;;
    --scenarios) SCENARIOS="$2"; shift ;;
    --idle-conns) IDLE_CONNS="$2"; shift ;;
    --idle-hold) IDLE_HOLD="$2"; shift ;;
    --subs) SUBS="$2"; shift ;;
    --rate) RATE="$2"; shift ;;
    --clients) CLIENTS="$2"; shift ;;
    --secs) SECS="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --soak) SOAK=1 ;;
    --analytics) ANALYTICS=1 ;;
    --no-analytics) ANALYTICS=0 ;;
    --out) OUT="$2"; shift ;;
    --note) NOTE="$2"; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ $QUICK == 1 ]]; then
  : "${REPEAT:=1}" "${IDLE_CONNS:=300}" "${IDLE_HOLD:=1}" "${SUBS:=100}" "${CLIENTS:=10}" "${SECS:=2}" "${ANALYTICS:=0}"
  # A smoke run never overwrites the committed results.
  : "${OUT:=target/bench-quick}"
else
  : "${REPEAT:=3}" "${IDLE_CONNS:=18000}" "${IDLE_HOLD:=10}" "${SUBS:=1000}" "${CLIENTS:=100}" "${SECS:=10}" "${ANALYTICS:=1}"
  : "${OUT:=benches/results}"
fi

LOADGEN=benches/loadgen/target/release/loadgen
RAW="$OUT/raw"
LOGS="$OUT/logs"
mkdir -p "$RAW" "$LOGS"
rm -f "$RAW"/*.json "$LOGS"/*.log

step() { printf '\n==> %s\n' "$*" >&2; }

if [[ $BUILD == 1 ]]; then
  step "build (release)"
  cargo build --release --example bench_server
  cargo build --release --manifest-path benches/loadgen/Cargo.toml
  for p in $PEERS; do
    case "$p" in
      socketioxide) cargo build --release --manifest-path benches/peers/socketioxide/Cargo.toml ;;
      floor) cargo build --release --manifest-path benches/peers/floor/Cargo.toml ;;
      limit) cargo build --release --manifest-path benches/peers/limit/Cargo.toml ;;
      node) npm ci --prefix benches/peers/node --no-audit --no-fund --loglevel=error ;;
    esac
  done
  if [[ $ANALYTICS == 1 ]]; then
    cargo build --release --bin tidings
    npm ci --prefix benches/analytics --no-audit --no-fund --loglevel=error
  fi
fi

# The command line of a peer's server.
peer_cmd() {
  case "$1" in
    tidings) echo "target/release/examples/bench_server" ;;
    node) echo "node benches/peers/node/server.js" ;;
    socketioxide) echo "benches/peers/socketioxide/target/release/socketioxide-peer" ;;
    floor) echo "benches/peers/floor/target/release/floor-peer" ;;
    limit) echo "benches/peers/limit/target/release/limit-peer" ;;
    *) echo "unknown peer: $1" >&2; return 1 ;;
  esac
}

SERVER_PID=""
SERVER_PORT=""
start_server() { # peer log
  local cmd
  cmd="$(peer_cmd "$1")"
  # shellcheck disable=SC2086  # the command is words on purpose
  PORT=0 $cmd >"$2" 2>&1 &
  SERVER_PID=$!
  SERVER_PORT=""
  for _ in $(seq 1 200); do
    SERVER_PORT="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$2" 2>/dev/null | head -n1)"
    [[ -n "$SERVER_PORT" ]] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $1 did not start; its log:" >&2
  cat "$2" >&2
  stop_server
  return 1
}

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT

# Each run gets its own block of loopback source addresses (127.K.0.2 ...), so connections left in
# TIME_WAIT by one run never take the ports of the next. Sets SRC; called in this shell, not in a
# command substitution (whose subshell would lose the count: every run then shared one block, and
# from the third run of a sequence on, connects waited on ports held by earlier runs' TIME_WAIT,
# the 1-2 s handshake outliers of idle-polling).
RUN_INDEX=0
SRC=""
next_src() {
  RUN_INDEX=$((RUN_INDEX + 1))
  SRC="127.$(( (RUN_INDEX % 250) + 1 )).0.2"
}

scenario_args() {
  case "$1" in
    idle) echo "idle --conns $IDLE_CONNS --hold $IDLE_HOLD" ;;
    idle-polling) echo "--polling idle --conns $IDLE_CONNS --hold $IDLE_HOLD" ;;
    fanout-100) echo "fanout --subs $SUBS --rate $RATE --secs $SECS" ;;
    fanout-max) echo "fanout --subs $SUBS --rate max --secs $SECS" ;;
    echo) echo "echo --clients $CLIENTS --secs $SECS" ;;
    soak) echo "idle --conns ${BENCH_SOAK_CONNS:-18000} --hold ${BENCH_SOAK_SECS:-600}" ;;
    *) echo "unknown scenario: $1" >&2; return 1 ;;
  esac
}

run_one() { # scenario peer repetition of
  local scenario="$1" peer="$2" r="$3" of="$4"
  local tag="$scenario-$peer-$r"
  step "$scenario × $peer (run $r of $of)"
  if ! start_server "$peer" "$LOGS/$tag.server.log"; then
    echo "{\"mode\":\"$scenario\",\"label\":\"$peer\",\"error\":\"server did not start\"}" >"$RAW/$tag.json"
    return 0
  fi
  local args
  args="$(scenario_args "$scenario")"
  next_src
  # A watchdog over the whole run: a peer that wedges costs this cell, not the benchmark.
  local limit=$((SECS + IDLE_HOLD + 300))
  [[ $scenario == soak ]] && limit=$((${BENCH_SOAK_SECS:-600} + 600))
  # shellcheck disable=SC2086
  if timeout --kill-after=10 "$limit" "$LOADGEN" --port "$SERVER_PORT" --server-pid "$SERVER_PID" --label "$peer" \
      --threads "$THREADS" --src-base "$SRC" $args \
      >"$RAW/$tag.json.tmp" 2>"$LOGS/$tag.loadgen.log"; then
    # The source block goes with the result, so the report can check no two runs shared one.
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["src_base"] = sys.argv[2]; json.dump(d, open(sys.argv[1], "w"))' \
      "$RAW/$tag.json.tmp" "$SRC"
    mv "$RAW/$tag.json.tmp" "$RAW/$tag.json"
  else
    echo "loadgen failed; its log:" >&2
    tail -n 5 "$LOGS/$tag.loadgen.log" >&2
    local msg
    msg="$(tail -n 1 "$LOGS/$tag.loadgen.log" | tr -d '"\\')"
    echo "{\"mode\":\"$scenario\",\"label\":\"$peer\",\"error\":\"$msg\"}" >"$RAW/$tag.json"
    rm -f "$RAW/$tag.json.tmp"
  fi
  python3 - "$RAW/$tag.json" <<'EOF' >&2 || true
import json, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    print("   error:", d["error"]); sys.exit()
s = d.get("server", {})
if d["mode"] == "idle":
    print(f"   {d['connected']}/{d['conns']} connected, {d['connect_rate']:.0f}/s, handshake p50 {d['handshake']['p50_us']/1000:.1f} ms"
          f" p99 {d['handshake']['p99_us']/1000:.1f} ms, {s.get('kib_per_conn') or 0:.2f} KiB/conn, drops {d['drops']}, failed {d['failed']}")
elif d["mode"] == "fanout":
    print(f"   {d['deliveries_per_sec']:.0f} deliveries/s, loss {d['loss_pct']:.3f} %, p50 {d['latency']['p50_us']/1000:.2f} ms"
          f" p99 {d['latency']['p99_us']/1000:.2f} ms, {s.get('cpu_us_per_delivery') or 0:.2f} µs CPU/delivery")
else:
    print(f"   {d['round_trips_per_sec']:.0f} round trips/s, RTT p50 {d['rtt']['p50_us']/1000:.2f} ms p99 {d['rtt']['p99_us']/1000:.2f} ms")
EOF
  stop_server
  # Let the kernel retire the closed connections before the next server starts.
  sleep 1
}

for scenario in $SCENARIOS; do
  for peer in $PEERS; do
    # The floor and the limit speak WebSocket only; socketioxide closes the upgrade probe of a client
    # that opened over polling the way the load generator does (see benches/README.md).
    [[ $scenario == idle-polling && ($peer == floor || $peer == limit || $peer == socketioxide) ]] && continue
    for r in $(seq 1 "$REPEAT"); do
      run_one "$scenario" "$peer" "$r" "$REPEAT"
    done
  done
done
if [[ $SOAK == 1 ]]; then
  for peer in $PEERS; do
    if [[ $peer == tidings ]]; then run_one soak tidings 1 1; fi
  done
fi
if [[ $ANALYTICS == 1 && " $PEERS " == *" tidings "* ]]; then
  step "the analytics service under the seed's load (Tidings)"
  node benches/analytics/bench.js --bin target/release/tidings >"$LOGS/analytics.log" 2>&1 ||
    { echo "analytics bench failed; see $LOGS/analytics.log" >&2; }
fi

step "report"
STRICT=()
[[ $QUICK == 1 ]] && STRICT=(--strict)
python3 benches/report.py "${STRICT[@]}" --raw "$RAW" --out "$OUT" --note "$NOTE" \
  --config "{\"quick\": $QUICK, \"repeat\": $REPEAT, \"idle_conns\": $IDLE_CONNS, \"idle_hold_secs\": $IDLE_HOLD, \"subs\": $SUBS, \"rate\": $RATE, \"clients\": $CLIENTS, \"secs\": $SECS, \"loadgen_threads\": $THREADS, \"analytics\": $ANALYTICS}"
echo "results: $OUT/results.md" >&2
