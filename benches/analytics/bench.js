// The analytics service under the seed's load: ORGS organisations × DASHBOARDS dashboards each, and
// RATE events per second per organisation posted through the HTTP API (in batches of BATCH).
// Measures API-call-to-dashboard latency (p50/p99/max) and the server's CPU, and writes
// benches/results/analytics.json and analytics.md.
//
//   node benches/analytics/bench.js --bin target/release/tidings [--orgs 100] [--dashboards 10]
//        [--rate 100] [--batch 10] [--secs 20]
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";
import { startServer } from "../lib/server.js";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const BIN = args.bin || "target/release/tidings";
const ORGS = Number(args.orgs ?? 100);
const DASHBOARDS = Number(args.dashboards ?? 10);
const RATE = Number(args.rate ?? 100);
const BATCH = Number(args.batch ?? 10);
const SECS = Number(args.secs ?? 20);
const API_KEY = "bench-key";
const RESULTS = join(dirname(fileURLToPath(import.meta.url)), "..", "results");

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const { child, url } = await startServer(BIN, { TIDINGS_PORT: "0", TIDINGS_API_KEY: API_KEY, TIDINGS_DEMO: "false", RUST_LOG: "warn" });
const latencies = [];
let received = 0;
const sockets = [];
const start = process.hrtime.bigint();
const nowMs = () => Number(process.hrtime.bigint() - start) / 1e6;

// Connect the dashboards, 50 at a time.
const orgIds = Array.from({ length: ORGS }, (_, i) => `org${i}`);
const plan = orgIds.flatMap((org) => Array.from({ length: DASHBOARDS }, () => org));
for (let i = 0; i < plan.length; i += 50) {
  await Promise.all(
    plan.slice(i, i + 50).map(
      (org) =>
        new Promise((resolve, reject) => {
          const s = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
          s.on("analytics:update", (u) => {
            received += 1;
            latencies.push(nowMs() - Number(u.data.content));
          });
          s.once("connect_error", reject);
          s.once("connect", () => s.emit("join:analytics", { organizationId: org }, () => resolve()));
          sockets.push(s);
        }),
    ),
  );
}

// Post RATE events/s per org in batches, for SECS seconds.
const cpuBefore = cpuSeconds(child.pid);
let posted = 0;
let failed = 0;
const callsPerSec = (RATE / BATCH) * ORGS;
const tickMs = 10;
const perTick = callsPerSec / (1000 / tickMs);
let owed = 0;
let next = 0;
const deadline = Date.now() + SECS * 1000;
const inflight = new Set();
while (Date.now() < deadline) {
  owed += perTick;
  while (owed >= 1) {
    owed -= 1;
    const org = orgIds[next++ % ORGS];
    const batch = Array.from({ length: BATCH }, () => ({
      type: "message",
      data: { conversationId: "c", messageId: "m", role: "user", content: String(nowMs()) },
    }));
    const p = fetch(`${url}/api/v1/orgs/${org}/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify(batch),
    })
      .then((r) => (r.ok ? (posted += BATCH) : (failed += BATCH)))
      .catch(() => (failed += BATCH))
      .finally(() => inflight.delete(p));
    inflight.add(p);
  }
  await new Promise((r) => setTimeout(r, tickMs));
}
await Promise.all(inflight);
await new Promise((r) => setTimeout(r, 500));
const cpu = cpuSeconds(child.pid) - cpuBefore;
for (const s of sockets) s.close();
child.kill("SIGTERM");

latencies.sort((a, b) => a - b);
const expected = posted * DASHBOARDS;
const result = {
  machine: { cpus: cpus().length, model: cpus()[0]?.model, memGiB: Math.round(totalmem() / 2 ** 30) },
  load: { orgs: ORGS, dashboards: DASHBOARDS, ratePerOrg: RATE, batch: BATCH, secs: SECS },
  posted,
  failed,
  deliveriesExpected: expected,
  deliveriesReceived: received,
  latencyMs: {
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: latencies[latencies.length - 1],
  },
  serverCpuSeconds: cpu,
  serverCpuPercent: (cpu / SECS) * 100,
  cpuMicrosPerDelivery: (cpu * 1e6) / Math.max(1, received),
};
mkdirSync(RESULTS, { recursive: true });
writeFileSync(join(RESULTS, "analytics.json"), JSON.stringify(result, null, 2) + "\n");
const f = (x) => (Number.isFinite(x) ? x.toFixed(2) : String(x));
writeFileSync(
  join(RESULTS, "analytics.md"),
  [
    `# Analytics service under the seed's load`,
    ``,
    `Machine: ${result.machine.cpus} CPUs (${result.machine.model}), ${result.machine.memGiB} GiB. Load generator and server on the same machine.`,
    ``,
    `| orgs × dashboards | events/s per org (batch) | events posted | deliveries (expected) | latency p50 ms | p99 ms | max ms | server CPU % | CPU µs/delivery |`,
    `|---|---|---|---|---|---|---|---|---|`,
    `| ${ORGS} × ${DASHBOARDS} | ${RATE} (${BATCH}) | ${posted} | ${received} (${expected}) | ${f(result.latencyMs.p50)} | ${f(result.latencyMs.p99)} | ${f(result.latencyMs.max)} | ${f(result.serverCpuPercent)} | ${f(result.cpuMicrosPerDelivery)} |`,
    ``,
  ].join("\n"),
);
console.log(JSON.stringify(result, null, 2));
process.exit(0);
