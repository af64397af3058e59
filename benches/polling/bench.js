// The stock JavaScript client (socket.io-client 4, Node) over HTTP long-polling only, against the
// Tidings test server with the per-response packet limit at its default (1 024; python-engineio's
// clients, recognised by their User-Agent, get 16) and at 16 for every client: what would a cap that
// keeps python clients alive cost the JS client if it applied to everyone?
//
// Per setting, a fresh server and one client:
//   - burst: the client asks for BURST events at once (the server emits them back to back, then
//     acks); time from the request to the ack, which arrives after the last event; repeated ROUNDS
//     times; events/s and polling GETs per burst (from the client's engine);
//   - echo: ECHOES sequential round trips of a small event; round trips/s and RTT p50/p99.
// Writes benches/results/polling.json and polling.md.
//
//   node benches/polling/bench.js --bin target/release/examples/test_server
//        [--burst 5000] [--rounds 5] [--echoes 2000] [--limits 1024,16]
import { writeFileSync, mkdirSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";
import { startServer } from "../lib/server.js";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const BIN = args.bin || "target/release/examples/test_server";
const BURST = Number(args.burst ?? 5000);
const ROUNDS = Number(args.rounds ?? 5);
const ECHOES = Number(args.echoes ?? 2000);
const LIMITS = (args.limits ?? "1024,16").split(",").map(Number);
const OUT = args.out || join(dirname(fileURLToPath(import.meta.url)), "..", "results");

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function measure(limit) {
  const { child, url } = await startServer(BIN, { PORT: "0", MAX_PACKETS_PER_POLL: String(limit), RUST_LOG: "warn" });
  const socket = io(url, { transports: ["polling"], reconnection: false, forceNew: true });
  try {
    await withTimeout(new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    }), 10_000, "connect");
    let polls = 0;
    socket.io.engine.transport.on("poll", () => polls++);

    // Burst throughput.
    const bursts = [];
    for (let round = 0; round < ROUNDS; round++) {
      let got = 0;
      let inOrder = true;
      const onBurst = (i) => {
        if (i !== got) inOrder = false;
        got++;
      };
      socket.on("burst", onBurst);
      const polls0 = polls;
      const t0 = process.hrtime.bigint();
      const acked = await withTimeout(socket.emitWithAck("burst", BURST), 60_000, "burst ack");
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      socket.off("burst", onBurst);
      if (acked !== BURST || got !== BURST || !inOrder) {
        throw new Error(`burst ${round}: acked ${acked}, received ${got} of ${BURST}, in order: ${inOrder}`);
      }
      bursts.push({ secs, events_per_sec: BURST / secs, polls: polls - polls0 });
    }

    // Sequential echo round trips.
    const rtts = [];
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < ECHOES; i++) {
      const s = process.hrtime.bigint();
      await withTimeout(new Promise((resolve) => {
        socket.once("echo", resolve);
        socket.emit("echo", i);
      }), 10_000, "echo");
      rtts.push(Number(process.hrtime.bigint() - s) / 1e6);
    }
    const echoSecs = Number(process.hrtime.bigint() - t0) / 1e9;
    rtts.sort((a, b) => a - b);

    const rates = bursts.map((b) => b.events_per_sec).sort((a, b) => a - b);
    return {
      max_packets_per_poll: limit,
      burst_events: BURST,
      rounds: ROUNDS,
      burst_events_per_sec_median: rates[Math.floor(rates.length / 2)],
      burst_events_per_sec_min: rates[0],
      burst_events_per_sec_max: rates[rates.length - 1],
      polls_per_burst_median: bursts.map((b) => b.polls).sort((a, b) => a - b)[Math.floor(bursts.length / 2)],
      echo_round_trips: ECHOES,
      echo_round_trips_per_sec: ECHOES / echoSecs,
      echo_rtt_p50_ms: percentile(rtts, 50),
      echo_rtt_p99_ms: percentile(rtts, 99),
    };
  } finally {
    socket.close();
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
  }
}

const results = [];
for (const limit of LIMITS) {
  const r = await measure(limit);
  console.error(`max_packets_per_poll ${limit}: burst ${r.burst_events_per_sec_median.toFixed(0)} events/s ` +
    `(${r.polls_per_burst_median} polls), echo ${r.echo_round_trips_per_sec.toFixed(0)} rt/s, ` +
    `p99 ${r.echo_rtt_p99_ms.toFixed(2)} ms`);
  results.push(r);
}

const base = results[0];
const machine = { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version };
mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, "polling.json"), JSON.stringify({ machine, results }, null, 2) + "\n");
const fmt = (n, d = 0) => n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
const rows = results.map((r) =>
  `| ${fmt(r.max_packets_per_poll)} | ${fmt(r.burst_events_per_sec_median)} (${fmt(r.burst_events_per_sec_min)}–${fmt(r.burst_events_per_sec_max)}) | ` +
  `${fmt(100 * r.burst_events_per_sec_median / base.burst_events_per_sec_median, 0)} % | ${r.polls_per_burst_median} | ` +
  `${fmt(r.echo_round_trips_per_sec)} | ${fmt(r.echo_rtt_p50_ms, 2)} | ${fmt(r.echo_rtt_p99_ms, 2)} |`);
writeFileSync(join(OUT, "polling.md"), `# The stock JavaScript client over long-polling

socket.io-client ${"4"} in Node (${machine.node}), \`transports: ["polling"]\`, one client against
\`examples/test_server\` on this machine (${machine.cpus} CPUs, ${machine.cpu}). Burst: ${fmt(BURST)} events emitted
back to back by the server, ${ROUNDS} rounds (median, min–max); echo: ${fmt(ECHOES)} sequential round trips.
Produced by \`node benches/polling/bench.js\`. Tidings' default is 1 024 packets per response, and 16 for
python-engineio's clients (recognised by their User-Agent), which refuse more; the second row shows
what that cap would cost the JavaScript client if it applied to every client.

| max packets per poll | burst events/s | vs ${fmt(base.max_packets_per_poll)} | polling GETs per burst | echo round trips/s | RTT p50 (ms) | RTT p99 (ms) |
|---|---|---|---|---|---|---|
${rows.join("\n")}
`);
console.error(`results: ${join(OUT, "polling.md")}`);
