// Cross-node fan-out through Redis, per adapter. For each setup, three nodes share one Redis (a
// Redis Cluster of three masters for `sharded`): SUBS subscribers spread over the three nodes join a
// room, a publisher on node 1 emits RATE broadcasts/s for SECS seconds (each carrying its send
// time); deliveries/s, latency from emit to delivery, and loss. Setups: one Tidings node alone (the
// reference), three Tidings nodes on the classic, streams and sharded adapters, three Node socket.io
// nodes on @socket.io/redis-streams-adapter. Then two faults, on the classic and streams adapters:
// Redis killed and restarted mid-run (loss across the restart), and the subscribers' node killed
// with SIGKILL mid-run, its clients reconnecting to another node through a proxy (loss across the
// kill; with streams they resume with connection state recovery). Writes
// benches/results/cluster.{json,md,svg}.
//
//   node benches/cluster/bench.js --bin target/release/examples/test_server [--subs 300] [--rate 100] [--secs 8]
import { spawn, execFile } from "node:child_process";
import { createServer, connect as netConnect } from "node:net";
import { writeFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, totalmem, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { io } from "socket.io-client";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const BIN = args.bin || "target/release/examples/test_server";
const SUBS = Number(args.subs ?? 300);
const RATE = Number(args.rate ?? 100);
const SECS = Number(args.secs ?? 8);
const HERE = dirname(fileURLToPath(import.meta.url));
const RESULTS = join(HERE, "..", "results");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let children = [];

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
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start`)), 15_000);
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = pattern.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({ child, m });
      }
    });
  });
}

function stopAll() {
  for (const c of children) c.kill("SIGKILL");
  children = [];
}

async function redisServer(port) {
  port ??= await freePort();
  const argv = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
  const { child } = await spawnAndWait("redis-server", argv, {}, /Ready to accept connections/);
  return { url: `redis://127.0.0.1:${port}`, port, child };
}

async function redisCluster() {
  const dir = mkdtempSync(join(tmpdir(), "tidings-bench-cluster-"));
  const ports = [];
  for (let i = 0; i < 3; i++) ports.push(await freePort());
  for (const port of ports) {
    const argv = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
      "--cluster-enabled", "yes", "--cluster-config-file", join(dir, `nodes-${port}.conf`), "--dir", dir];
    await spawnAndWait("redis-server", argv, {}, /Ready to accept connections/);
  }
  await promisify(execFile)("redis-cli", ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "0", "--cluster-yes"]);
  for (let i = 0; i < 200; i++) {
    const infos = await Promise.all(ports.map((p) => promisify(execFile)("redis-cli", ["-p", String(p), "cluster", "info"])));
    if (infos.every(({ stdout }) => stdout.includes("cluster_state:ok"))) break;
    await sleep(100);
  }
  return { url: `redis://127.0.0.1:${ports[0]}`, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

async function tidingsNode(url, adapter) {
  const env = { PORT: "0", REDIS_URL: url, REDIS_ADAPTER: adapter, RUST_LOG: "error" };
  if (adapter === "streams") env.RECOVERY_WINDOW_MS = "120000";
  const { child, m } = await spawnAndWait(BIN, [], env, /listening on \S+:(\d+)/);
  return { port: Number(m[1]), url: `http://127.0.0.1:${m[1]}`, child };
}

async function nodeNode(url) {
  const { child, m } = await spawnAndWait("node", [join(HERE, "node-server.js")], { PORT: "0", REDIS_URL: url }, /listening on \S+:(\d+)/);
  return { port: Number(m[1]), url: `http://127.0.0.1:${m[1]}`, child };
}

/** A TCP proxy whose target can change; `cut()` drops its connections. */
async function proxy(port) {
  let target = port;
  const open = new Set();
  const server = createServer((down) => {
    const up = netConnect(target, "127.0.0.1");
    for (const s of [down, up]) {
      open.add(s);
      const end = () => {
        down.destroy();
        up.destroy();
        open.delete(down);
        open.delete(up);
      };
      s.on("error", end);
      s.on("close", end);
    }
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    to: (p) => (target = p),
    cut: () => open.forEach((s) => s.destroy()),
    close: () => server.close(),
  };
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

/**
 * Subscribers on `subUrls` (round robin), a publisher on `pubUrl`; `fault(t)` runs at a third of
 * the run. Each tick carries its number: loss counts the (subscriber, tick) pairs never delivered,
 * duplicates those delivered twice.
 */
async function run(pubUrl, subUrls, { fault, reconnect = false } = {}) {
  const t0 = process.hrtime.bigint();
  const now = () => Number(process.hrtime.bigint() - t0) / 1e6;
  const latencies = [];
  const seen = [];
  const subs = [];
  let duplicates = 0;
  for (let i = 0; i < SUBS; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, SUBS - i) }, (_, j) => {
        const me = new Set();
        seen.push(me);
        return new Promise((resolve) => {
          const s = io(subUrls[(i + j) % subUrls.length], {
            transports: ["websocket"],
            forceNew: true,
            reconnection: reconnect,
            reconnectionDelay: 100,
            reconnectionDelayMax: 500,
          });
          s.on("tick", ({ n, sent }) => {
            if (me.has(n)) duplicates++;
            me.add(n);
            latencies.push(now() - sent);
          });
          // Re-join after a reconnection that did not recover (no recovery: a new socket).
          s.on("connect", () => s.emit("join", "bench", () => resolve()));
          subs.push(s);
        });
      }),
    );
  }
  const pub = io(pubUrl, { transports: ["websocket"], forceNew: true, reconnection: false });
  await new Promise((r) => pub.once("connect", r));
  await sleep(300);
  let sent = 0;
  let faulted = false;
  const started = Date.now();
  const interval = 1000 / RATE;
  while (Date.now() - started < SECS * 1000) {
    if (fault && !faulted && Date.now() - started > (SECS * 1000) / 3) {
      faulted = true;
      fault();
    }
    const due = Math.floor((Date.now() - started) / interval);
    while (sent < due) {
      pub.emit("to-room", { room: "bench", event: "tick", data: { n: sent, sent: now() } });
      sent++;
    }
    await sleep(2);
  }
  await sleep(reconnect || fault ? 5000 : 1000);
  const elapsed = (Date.now() - started) / 1000;
  for (const s of [...subs, pub]) s.close();
  latencies.sort((a, b) => a - b);
  const delivered = seen.reduce((sum, s) => sum + s.size, 0);
  return {
    broadcasts: sent,
    expected: sent * SUBS,
    delivered,
    duplicates,
    loss: 1 - delivered / (sent * SUBS),
    deliveriesPerSec: latencies.length / elapsed,
    latencyMs: { p50: percentile(latencies, 50), p99: percentile(latencies, 99), p999: percentile(latencies, 99.9) },
  };
}

async function setup(name, start) {
  try {
    const result = await start();
    console.error(`${name}: ${Math.round(result.deliveriesPerSec)} deliveries/s, p99 ${result.latencyMs.p99?.toFixed(1)} ms, loss ${(result.loss * 100).toFixed(3)} %`);
    return { name, ...result };
  } finally {
    stopAll();
    await sleep(300);
  }
}

const results = [];
try {
  results.push(await setup("1 Tidings node", async () => {
    const redis = await redisServer();
    const a = await tidingsNode(redis.url, "classic");
    return run(a.url, [a.url]);
  }));
  for (const adapter of ["classic", "streams", "sharded"]) {
    results.push(await setup(`3 Tidings nodes, ${adapter}`, async () => {
      const redis = adapter === "sharded" ? await redisCluster() : await redisServer();
      const nodes = [];
      for (let i = 0; i < 3; i++) nodes.push(await tidingsNode(redis.url, adapter));
      await sleep(500);
      try {
        return await run(nodes[0].url, nodes.map((n) => n.url));
      } finally {
        redis.cleanup?.();
      }
    }));
  }
  results.push(await setup("3 Node nodes, redis-streams-adapter", async () => {
    const redis = await redisServer();
    const nodes = [];
    for (let i = 0; i < 3; i++) nodes.push(await nodeNode(redis.url));
    await sleep(500);
    return run(nodes[0].url, nodes.map((n) => n.url));
  }));
  for (const adapter of ["classic", "streams"]) {
    results.push(await setup(`Redis restarted mid-run, ${adapter}`, async () => {
      const redis = await redisServer();
      const nodes = [];
      for (let i = 0; i < 3; i++) nodes.push(await tidingsNode(redis.url, adapter));
      await sleep(500);
      return run(nodes[0].url, nodes.slice(1).map((n) => n.url), {
        fault: async () => {
          redis.child.kill("SIGKILL");
          await sleep(1000);
          await redisServer(redis.port);
        },
      });
    }));
    results.push(await setup(`subscribers' node killed mid-run, ${adapter}`, async () => {
      const redis = await redisServer();
      const nodes = [];
      for (let i = 0; i < 3; i++) nodes.push(await tidingsNode(redis.url, adapter));
      await sleep(500);
      const front = await proxy(nodes[1].port);
      try {
        return await run(nodes[0].url, [front.url], {
          reconnect: true,
          fault: () => {
            front.to(nodes[2].port);
            nodes[1].child.kill("SIGKILL");
          },
        });
      } finally {
        front.close();
      }
    }));
  }
  const result = {
    machine: { cpus: cpus().length, model: cpus()[0]?.model, memGiB: Math.round(totalmem() / 2 ** 30) },
    load: { subscribers: SUBS, broadcastsPerSec: RATE, secs: SECS },
    results,
  };
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, "cluster.json"), JSON.stringify(result, null, 2) + "\n");
  const f = (x) => (Number.isFinite(x) ? x.toFixed(1) : "–");
  const row = (r) => `| ${r.name} | ${r.broadcasts} | ${r.delivered} / ${r.expected} | ${(r.loss * 100).toFixed(3)} % | ${r.duplicates} | ${Math.round(r.deliveriesPerSec)} | ${f(r.latencyMs.p50)} | ${f(r.latencyMs.p99)} |`;
  writeFileSync(
    join(RESULTS, "cluster.md"),
    [
      "# Cross-node fan-out through Redis, per adapter",
      "",
      `Machine: ${result.machine.cpus} CPUs (${result.machine.model}), ${result.machine.memGiB} GiB; Redis, every node and the clients on the same machine (debug logging off, release build).`,
      `${SUBS} subscribers spread over the nodes (on nodes 2 and 3 in the fault runs), ${RATE} broadcasts/s from node 1 for ${SECS} s.`,
      "Faults at a third of the run: Redis killed and started again 1 s later; the subscribers' node killed with SIGKILL, its clients reconnecting through a proxy to node 3.",
      "",
      "| setup | broadcasts | delivered / expected | loss | duplicates | deliveries/s | p50 ms | p99 ms |",
      "|---|---|---|---|---|---|---|---|",
      ...results.map(row),
      "",
      "![deliveries/s and p99](cluster.svg)",
      "",
    ].join("\n"),
  );
  writeFileSync(join(RESULTS, "cluster.svg"), chart(results));
  console.log(JSON.stringify(result, null, 2));
} finally {
  stopAll();
  process.exit(0);
}

/** Horizontal bars: deliveries/s and loss per setup. */
function chart(rows) {
  const w = 900, rowH = 28, left = 330, top = 40;
  const h = top + rows.length * rowH + 30;
  const max = Math.max(...rows.map((r) => r.deliveriesPerSec));
  const bars = rows
    .map((r, i) => {
      const y = top + i * rowH;
      const len = ((w - left - 170) * r.deliveriesPerSec) / max;
      const lost = r.loss > 0 ? `, loss ${(r.loss * 100).toFixed(2)} %` : "";
      return `<text x="${left - 8}" y="${y + 17}" text-anchor="end">${r.name}</text>` +
        `<rect x="${left}" y="${y + 4}" width="${len.toFixed(1)}" height="18" fill="${r.loss > 0 ? "#d62728" : "#1f77b4"}"/>` +
        `<text x="${left + len + 6}" y="${y + 17}">${Math.round(r.deliveriesPerSec)}/s, p99 ${r.latencyMs.p99?.toFixed(0)} ms${lost}</text>`;
    })
    .join("\n");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="13">
<text x="10" y="22" font-size="15" font-weight="bold">Cross-node fan-out: deliveries/s (${SUBS} subscribers, ${RATE} broadcasts/s); red: something lost</text>
${bars}
</svg>
`;
}
