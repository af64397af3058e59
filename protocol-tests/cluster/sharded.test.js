// Sharded Pub/Sub on a Redis Cluster of three masters (Debian's redis-server 7 with
// `cluster-enabled yes`, started by the test on free loopback ports, no persistence, stopped at the
// end): Tidings nodes (examples/test_server with REDIS_ADAPTER=sharded) and a Node socket.io@4 node
// with @socket.io/redis-adapter's createShardedAdapter ("dynamic" mode, its default) share one
// cluster: broadcasts to the namespace and to rooms (each room's own channel), `except`, binary,
// fetchSockets, acks, server-side emits, socketsJoin and disconnectSockets, both ways.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:http";
import { promisify } from "node:util";
import { Server } from "socket.io";
import { createShardedAdapter } from "@socket.io/redis-adapter";
import { createClient, createCluster } from "redis";
import { io as connect } from "socket.io-client";
import { startServer } from "../node/lib/server.js";
import { freePort } from "../node/lib/net.js";
import { sleep, waitUntil, withTimeout } from "../node/lib/wait.js";

const TEST_SERVER = process.env.TIDINGS_TEST_SERVER_BIN;
const skip = TEST_SERVER ? false : "TIDINGS_TEST_SERVER_BIN not set";
const WAIT = 10_000;
const run = promisify(execFile);

const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

const within = (promise, what, ms = WAIT) => withTimeout(promise, what, ms);
const until = (check, what, ms = WAIT) => waitUntil(check, what, ms);

/** Three masters in one Redis Cluster; resolves once every slot is served. */
async function redisCluster() {
  const dir = mkdtempSync(join(tmpdir(), "tidings-redis-cluster-"));
  const ports = [];
  for (let i = 0; i < 3; i++) ports.push(await freePort());
  for (const port of ports) {
    const child = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--cluster-enabled", "yes",
        "--cluster-config-file", join(dir, `nodes-${port}.conf`), "--dir", dir],
      { stdio: "ignore" },
    );
    cleanups.push(async () => child.exitCode === null && child.kill("SIGKILL"));
  }
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const probes = ports.map((port) => {
    const c = createClient({ url: `redis://127.0.0.1:${port}`, socket: { reconnectStrategy: 100 } });
    c.on("error", () => {});
    return c;
  });
  await until(async () => {
    try {
      await Promise.all(probes.map((c) => (c.isOpen ? null : c.connect())));
      return true;
    } catch {
      return false;
    }
  }, "redis servers up");
  cleanups.push(async () => Promise.allSettled(probes.map((c) => c.quit())));
  await run("redis-cli", ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "0", "--cluster-yes"]);
  await until(async () => {
    const infos = await Promise.all(probes.map((c) => c.sendCommand(["CLUSTER", "INFO"])));
    return infos.every((info) => info.includes("cluster_state:ok"));
  }, "cluster state ok", 30_000);
  return { ports, url: `redis://127.0.0.1:${ports[0]}`, probes };
}

/** How many nodes serve `/`: subscribers of its shard channel, on whichever master holds it. */
async function nodeCount(cluster) {
  const counts = await Promise.all(cluster.probes.map((c) => c.sendCommand(["PUBSUB", "SHARDNUMSUB", "socket.io#/#"])));
  return counts.reduce((sum, [, n]) => sum + Number(n), 0);
}

async function nodeNode(cluster) {
  const rootNodes = cluster.ports.map((port) => ({ url: `redis://127.0.0.1:${port}` }));
  const pub = createCluster({ rootNodes });
  const sub = pub.duplicate();
  pub.on("error", () => {});
  sub.on("error", () => {});
  await Promise.all([pub.connect(), sub.connect()]);
  const http = createServer();
  const io = new Server(http, { adapter: createShardedAdapter(pub, sub) });
  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(room);
      ack?.(true);
    });
    socket.on("to-room", ({ room, except, event, data }, ack) => {
      (except ? io.to(room).except(except) : io.to(room)).emit(event, data);
      ack?.(1);
    });
  });
  io.on("who", (ack) => ack("node heard who"));
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  cleanups.push(async () => {
    io.close();
    await Promise.allSettled([pub.quit(), sub.quit()]);
  });
  return { io, url: `http://127.0.0.1:${http.address().port}` };
}

function client(url) {
  const socket = connect(url, { transports: ["websocket"], forceNew: true, reconnection: false });
  cleanups.push(async () => socket.close());
  return within(
    new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", reject);
    }),
    "connect",
  );
}

const collect = (socket, event) => {
  const got = [];
  socket.on(event, (value) => got.push(value));
  return got;
};

let cluster;
before(async () => {
  if (skip) return;
  cluster = await redisCluster();
});

test("Tidings and Node nodes share a Redis Cluster through sharded Pub/Sub", { skip, timeout: 90_000 }, async () => {
  const tidings = [];
  for (let i = 0; i < 2; i++) {
    const node = await startServer({ bin: TEST_SERVER, env: { REDIS_URL: cluster.url, REDIS_ADAPTER: "sharded" } });
    cleanups.push(() => node.stop());
    tidings.push(node);
  }
  const node = await nodeNode(cluster);
  await until(async () => (await nodeCount(cluster)) >= 3, "3 cluster members");

  const onA = await client(tidings[0].url);
  const onB = await client(tidings[1].url);
  const onNode = await client(node.url);
  const outsider = await client(tidings[1].url);
  const excluded = await client(tidings[0].url);
  for (const s of [onA, onB, onNode, excluded]) assert.equal(await s.emitWithAck("join", "room"), true);
  assert.equal(await excluded.emitWithAck("join", "x"), true);
  const leaked = collect(outsider, "m");
  const excludedGot = collect(excluded, "m");
  const got = new Map([[onA, collect(onA, "m")], [onB, collect(onB, "m")], [onNode, collect(onNode, "m")]]);
  // Room subscriptions are asynchronous: wait until a room broadcast reaches everyone.
  await until(async () => {
    await onNode.emitWithAck("to-room", { room: "room", except: "x", event: "m", data: "probe" });
    await sleep(100);
    return [...got.values()].every((l) => l.includes("probe"));
  }, "room channels subscribed");
  for (const l of [...got.values(), excludedGot]) l.length = 0;

  // A room broadcast from a Tidings node, binary included, reaches the room on every node but the
  // excluded socket.
  await onA.emitWithAck("to-room", { room: "room", except: "x", event: "m", data: { from: "a", bin: Buffer.from([1, 2]) } });
  await until(() => [...got.values()].every((l) => l.length === 1), "room broadcast from tidings");
  for (const l of got.values()) {
    assert.equal(l[0].from, "a");
    assert.deepEqual([...l[0].bin], [1, 2]);
  }
  // From the Node node.
  await onNode.emitWithAck("to-room", { room: "room", except: "x", event: "m", data: "from node" });
  await until(() => [...got.values()].every((l) => l.length === 2), "room broadcast from node");
  assert.deepEqual([...got.values()].map((l) => l[1]), ["from node", "from node", "from node"]);
  // Namespace-wide from Node reaches Tidings sockets.
  const all = [onA, onB, outsider].map((s) => within(new Promise((r) => s.once("all", r)), "namespace-wide"));
  node.io.emit("all", 1);
  assert.deepEqual(await Promise.all(all), [1, 1, 1]);

  // fetchSockets both ways.
  const ids = [onA.id, onB.id, onNode.id, excluded.id].sort();
  assert.deepEqual((await node.io.in("room").fetchSockets()).map((s) => s.id).sort(), ids);
  assert.deepEqual(await onA.emitWithAck("fetch-sockets", "room"), { ids, complete: true });

  // Broadcasts with acks both ways.
  for (const s of [onA, onB, onNode, excluded]) s.on("q", (q, ack) => ack(`${s === onNode ? "node" : "tidings"}: ${q}`));
  const answers = await node.io.to("room").except("x").timeout(5000).emitWithAck("q", "hi");
  assert.deepEqual(answers.sort(), ["node: hi", "tidings: hi", "tidings: hi"]);
  const gathered = await onB.emitWithAck("broadcast-with-ack", { room: "room", event: "q", data: "ok?", timeout_ms: 5000 });
  assert.deepEqual(gathered, { complete: true, answers: ["node: ok?", "tidings: ok?", "tidings: ok?", "tidings: ok?"] });

  // Server-side emits with acks both ways.
  assert.deepEqual(await node.io.serverSideEmitWithAck("who"), ["tidings heard who", "tidings heard who"]);
  assert.deepEqual(await onA.emitWithAck("server-side-ack", "who"), {
    answers: ["node heard who", "tidings heard who"],
    complete: true,
  });

  // socketsJoin from Node reaches Tidings sockets; then a broadcast to the new room (its own channel).
  node.io.in("room").except("x").socketsJoin("r2");
  await until(async () => (await onB.emitWithAck("rooms")).includes("r2"), "socketsJoin from node");
  const viaR2 = collect(onB, "r2");
  await until(async () => {
    await onNode.emitWithAck("to-room", { room: "r2", event: "r2", data: 2 });
    await sleep(100);
    return viaR2.length > 0;
  }, "a broadcast to the joined room");

  // disconnectSockets from a Tidings node reaches a socket on the other.
  const gone = within(new Promise((r) => excluded.once("disconnect", r)), "disconnectSockets");
  await onB.emitWithAck("disconnect-sockets", "x");
  assert.equal(await gone, "io server disconnect");

  await sleep(100);
  assert.deepEqual(leaked, [], "a client outside the room got its broadcasts");
  assert.deepEqual(excludedGot, [], "an excluded client got a broadcast");
});
