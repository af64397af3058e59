// A mixed cluster: a Tidings node (examples/test_server with REDIS_URL) and a Node socket.io@4 node
// with @socket.io/redis-adapter@8 share one Redis; @socket.io/redis-emitter@5 reaches Tidings
// clients; and two `tidings` analytics nodes share updates. Redis is started by the test on a free
// loopback port without persistence, and stopped at the end.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";
import { io as connect } from "socket.io-client";
import { startServer } from "../node/lib/server.js";
import { freePort } from "../node/lib/net.js";
import { withTimeout } from "../node/lib/wait.js";

const TEST_SERVER = process.env.TIDINGS_TEST_SERVER_BIN;
const ANALYTICS = process.env.TIDINGS_ANALYTICS_BIN;
const skip = TEST_SERVER && ANALYTICS ? false : "TIDINGS_TEST_SERVER_BIN / TIDINGS_ANALYTICS_BIN not set";
const WAIT = 5000;

const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

const within = (promise, what, ms = WAIT) => withTimeout(promise, what, ms);

const once = (socket, event) => within(new Promise((r) => socket.once(event, (...args) => r(args))), event);

async function startRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  cleanups.push(async () => {
    child.kill("SIGKILL");
  });
  const url = `redis://127.0.0.1:${port}`;
  const probe = createClient({ url });
  probe.on("error", () => {});
  for (let i = 0; i < 100; i++) {
    try {
      await probe.connect();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return { url, probe };
}

/** Waits until `n` nodes subscribe to the request channel of `/` (they count each other so). */
async function members(probe, n) {
  for (let i = 0; i < 200; i++) {
    const counts = await probe.pubSubNumSub("socket.io-request#/#");
    if ((counts["socket.io-request#/#"] ?? 0) >= n) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`fewer than ${n} cluster members`);
}

/** A Node socket.io node with the Redis adapter and the test server's `join`/`to-room` events. */
async function nodeServer(url) {
  const pub = createClient({ url });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const http = createServer();
  const io = new Server(http, { adapter: createAdapter(pub, sub) });
  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(room);
      ack?.(true);
    });
    socket.on("to-room", ({ room, event, data }, ack) => {
      io.to(room).emit(event, data);
      ack?.(1);
    });
  });
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  cleanups.push(async () => {
    io.close();
    await Promise.allSettled([pub.quit(), sub.quit()]);
  });
  return { io, url: `http://127.0.0.1:${http.address().port}` };
}

function client(url, auth) {
  const socket = connect(url, { transports: ["websocket"], forceNew: true, reconnection: false, auth });
  cleanups.push(async () => socket.close());
  return within(new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  }), "connect");
}

let redis;
before(async () => {
  if (skip) return;
  redis = await startRedis();
  cleanups.push(async () => redis.probe.quit().catch(() => {}));
});

test("Tidings and Node nodes share broadcasts, fetchSockets and acks; the emitter reaches Tidings", { skip, timeout: 60_000 }, async () => {
  const tidings = await startServer({ bin: TEST_SERVER, env: { REDIS_URL: redis.url } });
  cleanups.push(() => tidings.stop());
  const node = await nodeServer(redis.url);
  await members(redis.probe, 2);

  const onTidings = await client(tidings.url);
  const onNode = await client(node.url);
  const outsider = await client(tidings.url);
  assert.equal(await onTidings.emitWithAck("join", "r"), true);
  assert.equal(await onNode.emitWithAck("join", "r"), true);
  let leaked = 0;
  outsider.on("x", () => leaked++);

  // Tidings → Node.
  const gotOnNode = once(onNode, "x");
  await onTidings.emitWithAck("to-room", { room: "r", event: "x", data: { from: "tidings", bin: Buffer.from([1, 2, 3]) } });
  const [fromTidings] = await gotOnNode;
  assert.equal(fromTidings.from, "tidings");
  assert.deepEqual([...fromTidings.bin], [1, 2, 3]);

  // Node → Tidings.
  const gotOnTidings = once(onTidings, "x");
  await onNode.emitWithAck("to-room", { room: "r", event: "x", data: { from: "node" } });
  assert.deepEqual((await gotOnTidings)[0], { from: "node" });

  // Node's fetchSockets sees the Tidings sockets of the room, with their handshake and rooms.
  const sockets = await node.io.in("r").fetchSockets();
  const ids = sockets.map((s) => s.id).sort();
  assert.deepEqual(ids, [onTidings.id, onNode.id].sort());
  const remote = sockets.find((s) => s.id === onTidings.id);
  assert.ok(remote.rooms.has("r"));
  assert.equal(typeof remote.handshake.issued, "number");
  // In the reference's shape: the same fields as a Node socket's handshake, `time` a Date string.
  const local = sockets.find((s) => s.id === onNode.id);
  assert.deepEqual(Object.keys(remote.handshake).sort(), Object.keys(local.handshake).sort());
  assert.equal(typeof remote.handshake.time, "string");
  assert.ok(!Number.isNaN(Date.parse(remote.handshake.time)), remote.handshake.time);
  assert.equal(typeof remote.handshake.query, "object");

  // Node's broadcast with acks counts and collects the Tidings clients' answers.
  onTidings.on("question", (q, ack) => ack(`tidings says ${q}`));
  onNode.on("question", (q, ack) => ack(`node says ${q}`));
  const answers = await node.io.to("r").timeout(3000).emitWithAck("question", "hi");
  assert.deepEqual(answers.sort(), ["node says hi", "tidings says hi"]);

  // And the other way: Tidings' fetch and broadcast with acks reach the Node node's clients.
  const fetched = await onTidings.emitWithAck("fetch-sockets", "r");
  assert.deepEqual(fetched, { ids: [onTidings.id, onNode.id].sort(), complete: true });
  onTidings.on("q2", (q, ack) => ack(`tidings: ${q}`));
  onNode.on("q2", (q, ack) => ack(`node: ${q}`));
  const gathered = await onTidings.emitWithAck("broadcast-with-ack", { room: "r", event: "q2", data: "ok?", timeout_ms: 3000 });
  assert.deepEqual(gathered, { complete: true, answers: ["node: ok?", "tidings: ok?"] });

  // Server-side emits with acks from the Node node are answered by the Tidings node.
  const heard = await node.io.serverSideEmitWithAck("who");
  assert.deepEqual(heard, ["tidings heard who"]);

  // Node's socketsJoin reaches Tidings sockets.
  node.io.in("r").socketsJoin("r2");
  await new Promise((r) => setTimeout(r, 200));
  const viaJoin = once(onTidings, "y");
  await onNode.emitWithAck("to-room", { room: "r2", event: "y", data: 2 });
  assert.deepEqual(await viaJoin, [2]);

  // The Node emitter reaches Tidings clients in the room.
  const emitterClient = createClient({ url: redis.url });
  await emitterClient.connect();
  cleanups.push(() => emitterClient.quit().catch(() => {}));
  const emitter = new Emitter(emitterClient);
  const viaEmitter = once(onTidings, "z");
  emitter.to("r").emit("z", "from the emitter", Buffer.from([9]));
  const [text, bin] = await viaEmitter;
  assert.equal(text, "from the emitter");
  assert.deepEqual([...bin], [9]);

  await new Promise((r) => setTimeout(r, 200));
  assert.equal(leaked, 0, "a client outside the room got its broadcasts");
});

test("the analytics service runs clustered: an event posted to node A reaches dashboards on node B", { skip, timeout: 30_000 }, async () => {
  const env = { TIDINGS_REDIS_URL: redis.url, TIDINGS_API_KEY: "k", TIDINGS_DEMO: "false", RUST_LOG: "warn" };
  const a = await startServer({ bin: ANALYTICS, env: { ...env, TIDINGS_PORT: "0" } });
  cleanups.push(() => a.stop());
  const b = await startServer({ bin: ANALYTICS, env: { ...env, TIDINGS_PORT: "0" } });
  cleanups.push(() => b.stop());
  await members(redis.probe, 2);
  const dashboard = await client(b.url);
  const other = await client(b.url);
  assert.deepEqual(await dashboard.emitWithAck("join:analytics", { organizationId: "acme" }), { ok: true, room: "org:acme" });
  await other.emitWithAck("join:analytics", { organizationId: "globex" });
  let leaked = 0;
  other.on("analytics:update", () => leaked++);
  const update = once(dashboard, "analytics:update");
  const res = await fetch(`${a.url}/api/v1/orgs/acme/events`, {
    method: "POST",
    headers: { authorization: "Bearer k", "content-type": "application/json" },
    body: JSON.stringify({ type: "metrics", data: { totalMessages: 7 } }),
  });
  assert.equal(res.status, 200);
  // Node a has no dashboard of its own: it counts none, and says other nodes deliver theirs.
  assert.deepEqual(await res.json(), { accepted: 1, delivered: 0, cluster: true });
  const [u] = await update;
  assert.equal(u.organizationId, "acme");
  assert.equal(u.data.totalMessages, 7);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(leaked, 0);
});

test("three Tidings nodes: rooms, except, namespace-wide, remote join/leave/disconnect, fetch, acks", { skip, timeout: 60_000 }, async () => {
  const counts = await redis.probe.pubSubNumSub("socket.io-request#/#");
  const already = counts["socket.io-request#/#"] ?? 0;
  const nodes = [];
  for (let i = 0; i < 3; i++) {
    const n = await startServer({ bin: TEST_SERVER, env: { REDIS_URL: redis.url } });
    cleanups.push(() => n.stop());
    nodes.push(n);
  }
  // The earlier tests' nodes still share this Redis: wait until these three have subscribed too.
  await members(redis.probe, already + 3);
  const [a, b, c] = await Promise.all(nodes.map((n) => client(n.url)));
  const b2 = await client(nodes[1].url);
  for (const s of [b, c]) assert.equal(await s.emitWithAck("join", "room"), true);
  const seen = new Map([[a, []], [b, []], [b2, []], [c, []]]);
  for (const [s, list] of seen) s.on("m", (x) => list.push(x));
  const settle = async () => {
    // One round trip per client: everything sent before it has arrived.
    for (const s of seen.keys()) await s.emitWithAck("rooms");
  };

  // Room broadcast from A reaches the room on B and C, nobody else.
  await a.emitWithAck("to-room", { room: "room", event: "m", data: 1 });
  await new Promise((r) => setTimeout(r, 200));
  await settle();
  assert.deepEqual([seen.get(a), seen.get(b), seen.get(b2), seen.get(c)], [[], [1], [], [1]]);

  // Except: the room minus C's own room.
  await a.emitWithAck("to-room", { room: "room", except: c.id, event: "m", data: 2 });
  await new Promise((r) => setTimeout(r, 200));
  await settle();
  assert.deepEqual([seen.get(b), seen.get(c)], [[1, 2], [1]]);

  // Namespace-wide, from a socket on B (everyone but the sender).
  const before = [...seen.values()].map((l) => l.length);
  const bcast = [a, b2, c].map((s) => once(s, "broadcast"));
  await b.emitWithAck("broadcast", "hello all");
  assert.deepEqual((await Promise.all(bcast)).map(([x]) => x), ["hello all", "hello all", "hello all"]);
  assert.deepEqual([...seen.values()].map((l) => l.length), before);

  // Remote join and leave, issued on A for sockets on B and C.
  await a.emitWithAck("sockets-join", { room: "room", target: "extra" });
  await new Promise((r) => setTimeout(r, 200));
  assert.ok((await b.emitWithAck("rooms")).includes("extra"));
  assert.ok((await c.emitWithAck("rooms")).includes("extra"));
  await a.emitWithAck("sockets-leave", { room: "room", target: "extra" });
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(!(await b.emitWithAck("rooms")).includes("extra"));
  assert.ok(!(await c.emitWithAck("rooms")).includes("extra"));

  // Fetch sockets and broadcast with acks across nodes.
  const fetched = await a.emitWithAck("fetch-sockets", "room");
  assert.deepEqual(fetched, { ids: [b.id, c.id].sort(), complete: true });
  b.on("q", (x, ack) => ack(`b:${x}`));
  c.on("q", (x, ack) => ack(`c:${x}`));
  const acked = await a.emitWithAck("broadcast-with-ack", { room: "room", event: "q", data: 7, timeout_ms: 3000 });
  assert.deepEqual(acked, { complete: true, answers: ["b:7", "c:7"] });

  // Server-side emit with acks: the other Tidings nodes answer (this Redis also holds the earlier
  // tests' nodes, some of which have no handler for it, so only the answers are checked).
  const heard = await a.emitWithAck("server-side-ack", "roll-call");
  assert.ok(heard.answers.length >= 2, JSON.stringify(heard));
  assert.ok(heard.answers.every((x) => x === "tidings heard roll-call"), JSON.stringify(heard));

  // Remote disconnect of the room's sockets, issued on A.
  const gone = [b, c].map((s) => once(s, "disconnect"));
  await a.emitWithAck("disconnect-sockets", "room");
  assert.deepEqual((await Promise.all(gone)).map(([reason]) => reason), ["io server disconnect", "io server disconnect"]);
  assert.equal(b2.connected, true);
  assert.equal(a.connected, true);
});
