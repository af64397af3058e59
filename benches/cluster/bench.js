// Cross-node fan-out through Redis versus one node: SUBS subscribers in a room, a publisher emitting
// RATE broadcasts/s for SECS seconds (each carrying its send time), latency from emit to delivery and
// deliveries/s. Single node: publisher and subscribers on node A. Cluster: publisher on A,
// subscribers on B (every delivery crosses Redis). Writes benches/results/cluster.{json,md}.
//
//   node benches/cluster/bench.js --bin target/release/examples/test_server [--subs 500] [--rate 200] [--secs 10]
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { writeFileSync, mkdirSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const BIN = args.bin || "target/release/examples/test_server";
const SUBS = Number(args.subs ?? 500);
const RATE = Number(args.rate ?? 200);
const SECS = Number(args.secs ?? 10);
const RESULTS = join(dirname(fileURLToPath(import.meta.url)), "..", "results");
const children = [];

function freePort() {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function spawnAndWait(cmd, argv, env, pattern) {
  const child = spawn(cmd, argv, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "ignore"] });
  children.push(child);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start`)), 10_000);
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = pattern.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
  });
}

async function startRedis() {
  const port = await freePort();
  await spawnAndWait("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {}, /Ready to accept connections/);
  return `redis://127.0.0.1:${port}`;
}

async function startNode(redisUrl) {
  const m = await spawnAndWait(BIN, [], { PORT: "0", REDIS_URL: redisUrl, RUST_LOG: "error" }, /listening on \S+:(\d+)/);
  return `http://127.0.0.1:${m[1]}`;
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

async function run(pubUrl, subUrl) {
  const t0 = process.hrtime.bigint();
  const now = () => Number(process.hrtime.bigint() - t0) / 1e6;
  const latencies = [];
  const subs = [];
  for (let i = 0; i < SUBS; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, SUBS - i) }, () =>
        new Promise((resolve) => {
          const s = io(subUrl, { transports: ["websocket"], forceNew: true, reconnection: false });
          s.on("tick", (sent) => latencies.push(now() - sent));
          s.once("connect", () => s.emit("join", "bench", () => resolve()));
          subs.push(s);
        }),
      ),
    );
  }
  const pub = io(pubUrl, { transports: ["websocket"], forceNew: true, reconnection: false });
  await new Promise((r) => pub.once("connect", r));
  await new Promise((r) => setTimeout(r, 300));
  let sent = 0;
  const started = Date.now();
  const interval = 1000 / RATE;
  while (Date.now() - started < SECS * 1000) {
    const due = Math.floor((Date.now() - started) / interval);
    while (sent < due) {
      pub.emit("to-room", { room: "bench", event: "tick", data: now() });
      sent++;
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  await new Promise((r) => setTimeout(r, 1000));
  const elapsed = (Date.now() - started) / 1000;
  for (const s of [...subs, pub]) s.close();
  latencies.sort((a, b) => a - b);
  return {
    broadcasts: sent,
    expected: sent * SUBS,
    delivered: latencies.length,
    loss: 1 - latencies.length / (sent * SUBS),
    deliveriesPerSec: latencies.length / elapsed,
    latencyMs: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), p999: percentile(latencies, 99.9) },
  };
}

try {
  const redisUrl = await startRedis();
  const a = await startNode(redisUrl);
  const b = await startNode(redisUrl);
  const single = await run(a, a);
  const cluster = await run(a, b);
  const result = {
    machine: { cpus: cpus().length, model: cpus()[0]?.model, memGiB: Math.round(totalmem() / 2 ** 30) },
    load: { subscribers: SUBS, broadcastsPerSec: RATE, secs: SECS },
    singleNode: single,
    crossNode: cluster,
  };
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, "cluster.json"), JSON.stringify(result, null, 2) + "\n");
  const f = (x) => x.toFixed(2);
  const row = (name, r) => `| ${name} | ${r.broadcasts} | ${r.delivered} / ${r.expected} | ${(r.loss * 100).toFixed(3)} % | ${Math.round(r.deliveriesPerSec)} | ${f(r.latencyMs.p50)} | ${f(r.latencyMs.p99)} | ${f(r.latencyMs.p999)} |`;
  writeFileSync(
    join(RESULTS, "cluster.md"),
    [
      "# Cross-node fan-out through Redis",
      "",
      `Machine: ${result.machine.cpus} CPUs (${result.machine.model}), ${result.machine.memGiB} GiB; Redis, both nodes and the clients on the same machine.`,
      `${SUBS} subscribers, ${RATE} broadcasts/s for ${SECS} s.`,
      "",
      "| setup | broadcasts | delivered / expected | loss | deliveries/s | p50 ms | p99 ms | p99.9 ms |",
      "|---|---|---|---|---|---|---|---|",
      row("single node", single),
      row("publisher on A, subscribers on B", cluster),
      "",
    ].join("\n"),
  );
  console.log(JSON.stringify(result, null, 2));
} finally {
  for (const c of children) c.kill("SIGKILL");
  process.exit(0);
}
