// A mixed cluster on the Redis Streams adapter: Tidings nodes (examples/test_server with
// REDIS_ADAPTER=streams) and a Node socket.io@4 node with @socket.io/redis-streams-adapter share one
// stream. Broadcasts, room operations, fetchSockets, server-side emits and acks in both directions;
// connection state recovery across nodes (after a clean drop, after a SIGKILL of the client's node,
// over repeated offline/online cycles, late after the first connect); and nothing lost while Redis
// restarts. Clients reach the nodes through a TCP proxy the test points at one node or another, so
// the stock client reconnects (and resumes) by itself. Redis is started by the test on a free
// loopback port, without persistence, and stopped at the end.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer as createNetServer, connect as netConnect } from "node:net";
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { createClient } from "redis";
import { io as connect } from "socket.io-client";
import { startServer } from "../node/lib/server.js";
import { dashboardToken } from "../node/lib/token.js";
import { freePort } from "../node/lib/net.js";
import { sleep, waitUntil, withTimeout } from "../node/lib/wait.js";

const TEST_SERVER = process.env.TIDINGS_TEST_SERVER_BIN;
const ANALYTICS = process.env.TIDINGS_ANALYTICS_BIN;
const skip = TEST_SERVER && ANALYTICS ? false : "TIDINGS_TEST_SERVER_BIN / TIDINGS_ANALYTICS_BIN not set";
const WAIT = 8000;
const WINDOW_MS = 120_000;

const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

const within = (promise, what, ms = WAIT) => withTimeout(promise, what, ms);

const until = (check, what, ms = WAIT) => waitUntil(check, what, ms);

/** A redis-server on `port` (a free one by default); `stop()` kills it, `start()` again. */
async function redisServer(port) {
  port ??= await freePort();
  let child;
  const server = {
    url: `redis://127.0.0.1:${port}`,
    port,
    async start() {
      child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
        stdio: "ignore",
      });
      const probe = createClient({ url: server.url, socket: { reconnectStrategy: false } });
      probe.on("error", () => {});
      await until(async () => {
        try {
          await probe.connect();
          return true;
        } catch {
          return false;
        }
      }, "redis up");
      await probe.quit();
    },
    stop() {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      return exited;
    },
  };
  await server.start();
  cleanups.push(async () => child.exitCode === null && child.kill("SIGKILL"));
  return server;
}

/** How many nodes serve `/` (subscribers of its public channel). */
async function nodeCount(probe) {
  return (await probe.pubSubNumSub("socket.io#/#"))["socket.io#/#"] ?? 0;
}

/** Waits until `n` nodes serve `/`. */
async function members(probe, n) {
  await until(async () => (await nodeCount(probe)) >= n, `${n} cluster members`);
}

/** A Tidings node on the streams adapter, with recovery on. */
async function tidingsNode(url) {
  const node = await startServer({
    bin: TEST_SERVER,
    env: { REDIS_URL: url, REDIS_ADAPTER: "streams", RECOVERY_WINDOW_MS: String(WINDOW_MS) },
  });
  cleanups.push(() => node.stop());
  return node;
}

/** A Node socket.io node on @socket.io/redis-streams-adapter, with recovery on. */
async function nodeNode(url) {
  const redis = createClient({ url });
  redis.on("error", () => {});
  await redis.connect();
  const http = createServer();
  const io = new Server(http, {
    adapter: createAdapter(redis),
    connectionStateRecovery: { maxDisconnectionDuration: WINDOW_MS },
  });
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
    await redis.quit().catch(() => {});
  });
  return { io, port: http.address().port, url: `http://127.0.0.1:${http.address().port}` };
}

/** A TCP proxy in front of one node at a time: `to(port)` points it elsewhere, `cut()` drops its connections. */
async function proxy(port) {
  let target = port;
  const open = new Set();
  const server = createNetServer((down) => {
    const up = netConnect(target, "127.0.0.1");
    open.add(down);
    open.add(up);
    const end = () => {
      down.destroy();
      up.destroy();
      open.delete(down);
      open.delete(up);
    };
    for (const s of [down, up]) {
      s.on("error", end);
      s.on("close", end);
    }
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  cleanups.push(async () => {
    for (const s of open) s.destroy();
    server.close();
  });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    to(port) {
      target = port;
    },
    cut() {
      for (const s of open) s.destroy();
    },
  };
}

/** A stock client; `reconnect` lets it reconnect (quickly) by itself. */
function client(url, { reconnect = false, auth } = {}) {
  const socket = connect(url, {
    transports: ["websocket"],
    forceNew: true,
    reconnection: reconnect,
    reconnectionDelay: 50,
    reconnectionDelayMax: 100,
    auth,
  });
  cleanups.push(async () => socket.close());
  return within(
    new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", reject);
    }),
    "connect",
  );
}

/** Collects the values of `event` a socket gets. */
function collect(socket, event) {
  const got = [];
  socket.on(event, (value) => got.push(value));
  return got;
}

/** Resolves at the socket's next connect (after a drop), with whether it was recovered. */
function nextConnect(socket) {
  return within(new Promise((r) => socket.once("connect", () => r(socket.recovered))), "reconnect");
}

let redis;
let probe;
before(async () => {
  if (skip) return;
  redis = await redisServer();
  probe = createClient({ url: redis.url });
  probe.on("error", () => {});
  await probe.connect();
  cleanups.push(async () => probe.quit().catch(() => {}));
});

test("Tidings and Node nodes share one stream: broadcasts, rooms, fetchSockets, acks, server-side emits", { skip, timeout: 60_000 }, async () => {
  const base = await nodeCount(probe);
  const tidings = await tidingsNode(redis.url);
  const node = await nodeNode(redis.url);
  await members(probe, base + 2);
  const onTidings = await client(tidings.url);
  const onNode = await client(node.url);
  const outsider = await client(tidings.url);
  const excluded = await client(tidings.url);
  for (const s of [onTidings, onNode, excluded]) assert.equal(await s.emitWithAck("join", "r"), true);
  assert.equal(await excluded.emitWithAck("join", "x"), true);
  const leaked = collect(outsider, "x");
  const excludedGot = collect(excluded, "x");

  // Tidings → Node, binary included, `except` kept.
  const gotOnNode = within(new Promise((r) => onNode.once("x", r)), "x on node");
  await onTidings.emitWithAck("to-room", { room: "r", except: "x", event: "x", data: { from: "tidings", bin: Buffer.from([1, 2, 3]) } });
  const fromTidings = await gotOnNode;
  assert.equal(fromTidings.from, "tidings");
  assert.deepEqual([...fromTidings.bin], [1, 2, 3]);

  // Node → Tidings.
  const gotOnTidings = within(new Promise((r) => onTidings.once("x", r)), "x on tidings");
  await onNode.emitWithAck("to-room", { room: "r", except: "x", event: "x", data: { from: "node" } });
  assert.deepEqual(await gotOnTidings, { from: "node" });

  // fetchSockets both ways.
  const fetched = await node.io.in("r").fetchSockets();
  assert.deepEqual(fetched.map((s) => s.id).sort(), [onTidings.id, onNode.id, excluded.id].sort());
  const remote = fetched.find((s) => s.id === onTidings.id);
  assert.ok(remote.rooms.has("r"));
  assert.deepEqual(await onTidings.emitWithAck("fetch-sockets", "r"), {
    ids: [onTidings.id, onNode.id, excluded.id].sort(),
    complete: true,
  });

  // Broadcasts with acks both ways.
  for (const s of [onTidings, onNode, excluded]) s.on("q", (q, ack) => ack(`${s === onNode ? "node" : "tidings"}: ${q}`));
  const answers = await node.io.to("r").except("x").timeout(3000).emitWithAck("q", "hi");
  assert.deepEqual(answers.sort(), ["node: hi", "tidings: hi"]);
  const gathered = await onTidings.emitWithAck("broadcast-with-ack", { room: "r", event: "q", data: "ok?", timeout_ms: 3000 });
  assert.deepEqual(gathered, { complete: true, answers: ["node: ok?", "tidings: ok?", "tidings: ok?"] });

  // Server-side emits with acks both ways.
  assert.deepEqual(await node.io.serverSideEmitWithAck("who"), ["tidings heard who"]);
  assert.deepEqual(await onTidings.emitWithAck("server-side-ack", "who"), { answers: ["node heard who"], complete: true });

  // socketsJoin from Node reaches Tidings sockets; from Tidings, Node sockets.
  node.io.in("r").except("x").socketsJoin("r2");
  await until(async () => (await onTidings.emitWithAck("rooms")).includes("r2"), "socketsJoin from node");
  assert.ok(!(await excluded.emitWithAck("rooms")).includes("r2"));
  await onTidings.emitWithAck("sockets-join", { room: "r", target: "r3" });
  await until(async () => (await node.io.in("r3").fetchSockets()).some((s) => s.id === onNode.id), "socketsJoin from tidings");

  // disconnectSockets from Node reaches a Tidings socket.
  const gone = within(new Promise((r) => excluded.once("disconnect", r)), "disconnectSockets");
  node.io.in("x").disconnectSockets();
  assert.equal(await gone, "io server disconnect");

  await sleep(100);
  assert.deepEqual(leaked, [], "a client outside the room got its broadcasts");
  assert.deepEqual(excludedGot, [], "an excluded client got a broadcast");
});

test("a client resumes on another node, with every event broadcast meanwhile by any node, in order, once", { skip, timeout: 60_000 }, async () => {
  const base = await nodeCount(probe);
  const a = await tidingsNode(redis.url);
  const b = await tidingsNode(redis.url);
  const node = await nodeNode(redis.url);
  await members(probe, base + 3);
  const front = await proxy(a.port);
  const socket = await client(front.url, { reconnect: true });
  assert.equal(await socket.emitWithAck("join", "org:1"), true);
  const got = collect(socket, "n");
  const onB = await client(b.url);
  // Another member of the room: a broadcast it got is in the stream, so the next one, from another
  // node, comes after it (the stream's order is the order every client sees).
  const observer = await client(b.url);
  assert.equal(await observer.emitWithAck("join", "org:1"), true);
  const observed = collect(observer, "n");
  const inStream = (n) => until(() => observed.includes(n), `${n} in the stream`);
  // One event before the drop, so that the client holds an offset.
  await onB.emitWithAck("to-room", { room: "org:1", event: "n", data: 0 });
  await until(() => got.length === 1, "first event");
  const id = socket.id;

  front.to(b.port);
  const back = nextConnect(socket);
  front.cut();
  await until(() => !socket.connected, "dropped");
  // Meanwhile: from Tidings node B, from the Node node, and to another room (not for it).
  await onB.emitWithAck("to-room", { room: "org:1", event: "n", data: 1 });
  await inStream(1);
  node.io.to("org:1").emit("n", 2);
  await inStream(2);
  await onB.emitWithAck("to-room", { room: "org:2", event: "n", data: -1 });
  await onB.emitWithAck("to-room", { room: "org:1", event: "n", data: 3 });
  assert.equal(await back, true, "recovered");
  assert.equal(socket.id, id, "the same id");
  await onB.emitWithAck("to-room", { room: "org:1", event: "n", data: 4 });
  await until(() => got.length >= 5, "every event");
  await sleep(100);
  assert.deepEqual(got, [0, 1, 2, 3, 4]);
  assert.deepEqual(await socket.emitWithAck("rooms"), [id, "org:1"].sort());
});

test("a session saved by a Tidings node resumes on a Node node, and the other way", { skip, timeout: 60_000 }, async () => {
  const base = await nodeCount(probe);
  const tidings = await tidingsNode(redis.url);
  const node = await nodeNode(redis.url);
  await members(probe, base + 2);
  const front = await proxy(tidings.port);
  const socket = await client(front.url, { reconnect: true });
  assert.equal(await socket.emitWithAck("join", "org:m"), true);
  const got = collect(socket, "m");
  node.io.to("org:m").emit("m", 0);
  await until(() => got.length === 1, "first event");
  const id = socket.id;
  // Tidings → Node.
  for (const [to, value] of [[node.port, 1], [tidings.port, 2]]) {
    front.to(to);
    const back = nextConnect(socket);
    front.cut();
    await until(() => !socket.connected, "dropped");
    node.io.to("org:m").emit("m", value);
    assert.equal(await back, true, `recovered on ${to === node.port ? "the Node node" : "the Tidings node"}`);
    assert.equal(socket.id, id);
  }
  node.io.to("org:m").emit("m", 3);
  await until(() => got.length >= 4, "every event");
  await sleep(100);
  assert.deepEqual(got, [0, 1, 2, 3]);
});

test("a client of a node killed with SIGKILL resumes on another node", { skip, timeout: 60_000 }, async () => {
  const base = await nodeCount(probe);
  const a = await tidingsNode(redis.url);
  const b = await tidingsNode(redis.url);
  await members(probe, base + 2);
  const front = await proxy(a.port);
  const socket = await client(front.url, { reconnect: true });
  assert.equal(await socket.emitWithAck("join", "org:k"), true);
  const got = collect(socket, "k");
  const onB = await client(b.url);
  await onB.emitWithAck("to-room", { room: "org:k", event: "k", data: 0 });
  await until(() => got.length === 1, "first event");
  const id = socket.id;

  front.to(b.port);
  const back = nextConnect(socket);
  await a.stop({ signal: "SIGKILL" });
  await onB.emitWithAck("to-room", { room: "org:k", event: "k", data: 1 });
  await onB.emitWithAck("to-room", { room: "org:k", event: "k", data: 2 });
  assert.equal(await back, true, "recovered on node B");
  assert.equal(socket.id, id);
  await until(() => got.length >= 3, "every event");
  await sleep(100);
  assert.deepEqual(got, [0, 1, 2]);
  assert.deepEqual(await socket.emitWithAck("rooms"), [id, "org:k"].sort());
});

test("repeated offline/online cycles across nodes replay nothing twice and miss nothing", { skip, timeout: 90_000 }, async () => {
  const base = await nodeCount(probe);
  const a = await tidingsNode(redis.url);
  const b = await tidingsNode(redis.url);
  await members(probe, base + 2);
  const front = await proxy(a.port);
  const socket = await client(front.url, { reconnect: true });
  assert.equal(await socket.emitWithAck("join", "org:c"), true);
  const got = collect(socket, "c");
  const sender = await client(b.url);
  let n = 0;
  await sender.emitWithAck("to-room", { room: "org:c", event: "c", data: n++ });
  // Received, so that the client holds an offset.
  await until(() => got.length === 1, "first event");
  const ports = [a.port, b.port];
  for (let cycle = 0; cycle < 6; cycle++) {
    front.to(ports[(cycle + 1) % 2]);
    const back = nextConnect(socket);
    front.cut();
    await until(() => !socket.connected, "dropped");
    await sender.emitWithAck("to-room", { room: "org:c", event: "c", data: n++ });
    await sender.emitWithAck("to-room", { room: "org:c", event: "c", data: n++ });
    assert.equal(await back, true, `recovered in cycle ${cycle}`);
    await sender.emitWithAck("to-room", { room: "org:c", event: "c", data: n++ });
    await until(() => got.length >= n, `cycle ${cycle}'s events`);
  }
  await sleep(100);
  assert.deepEqual(got, [...Array(n).keys()]);
});

test("a broadcast made while Redis restarts reaches every subscriber on every node, in order, once", { skip, timeout: 60_000 }, async () => {
  const own = await redisServer();
  const ownProbe = createClient({ url: own.url });
  ownProbe.on("error", () => {});
  await ownProbe.connect();
  const a = await tidingsNode(own.url);
  const b = await tidingsNode(own.url);
  await members(ownProbe, 2);
  await ownProbe.quit();
  const onA = await client(a.url);
  const onB = await client(b.url);
  for (const s of [onA, onB]) assert.equal(await s.emitWithAck("join", "org:r"), true);
  const gotA = collect(onA, "r");
  const gotB = collect(onB, "r");
  await onA.emitWithAck("to-room", { room: "org:r", event: "r", data: "a0" });
  await until(() => gotA.length === 1 && gotB.length === 1, "before the restart");

  await own.stop();
  // Broadcast from both nodes while Redis is down.
  for (let i = 1; i <= 5; i++) {
    await onA.emitWithAck("to-room", { room: "org:r", event: "r", data: `a${i}` });
    await onB.emitWithAck("to-room", { room: "org:r", event: "r", data: `b${i}` });
  }
  await sleep(300);
  await own.start();
  await until(() => gotA.length === 11 && gotB.length === 11, "after the restart", 20_000);
  await sleep(200);
  // The same order on both nodes, each node's own broadcasts in the order it made them.
  assert.deepEqual(gotA, gotB);
  assert.equal(new Set(gotA).size, 11, "each once");
  for (const prefix of ["a", "b"]) {
    const mine = gotA.filter((v) => v.startsWith(prefix));
    assert.deepEqual(mine, [...mine].sort((x, y) => Number(x.slice(1)) - Number(y.slice(1))));
  }
});

test("the analytics service on streams: a dashboard resumes on another node; another tenant's token with its pid gets nothing", { skip, timeout: 60_000 }, async () => {
  const SECRET = "streams-secret";
  const env = {
    TIDINGS_REDIS_URL: redis.url,
    TIDINGS_REDIS_ADAPTER: "streams",
    TIDINGS_AUTH_SECRET: SECRET,
    TIDINGS_API_KEY: "k",
    TIDINGS_DEMO: "false",
    TIDINGS_PORT: "0",
    RUST_LOG: "warn",
  };
  const base = await nodeCount(probe);
  const a = await startServer({ bin: ANALYTICS, env });
  cleanups.push(() => a.stop());
  const b = await startServer({ bin: ANALYTICS, env });
  cleanups.push(() => b.stop());
  await members(probe, base + 2);
  const post = async (node, org, content) => {
    const res = await fetch(`${node.url}/api/v1/orgs/${org}/events`, {
      method: "POST",
      headers: { authorization: "Bearer k", "content-type": "application/json" },
      body: JSON.stringify({ type: "message", data: { conversationId: "c", messageId: `m-${Math.random()}`, role: "user", content } }),
    });
    assert.equal(res.status, 200);
  };
  const updates = (socket) => {
    const got = [];
    socket.on("analytics:update", (u) => got.push(u.data.content));
    return got;
  };
  const front = await proxy(a.port);
  const victim = await client(front.url, { reconnect: true, auth: { token: dashboardToken(SECRET, ["acme"]) } });
  const got = updates(victim);
  assert.equal((await victim.emitWithAck("join:analytics", { organizationId: "acme" })).ok, true);
  await post(b, "acme", "before");
  await until(() => got.length === 1, "the first update");
  const stolen = { id: victim.id, pid: victim._pid, offset: victim._lastOffset };
  assert.ok(stolen.pid && stolen.offset);

  // The victim's connection drops; it will come back through node B.
  front.to(b.port);
  victim.io.reconnection(false);
  const gone = within(new Promise((r) => victim.once("disconnect", r)), "drop");
  front.cut();
  await gone;
  await post(a, "acme", "while-away");

  // An attacker on node B with a valid token of its own org and the victim's pid and offset.
  const attacker = await client(b.url, { auth: { token: dashboardToken(SECRET, ["globex"]), pid: stolen.pid, offset: stolen.offset } });
  const attackerGot = updates(attacker);
  assert.equal(attacker.recovered, false);
  assert.notEqual(attacker.id, stolen.id);
  await attacker.emitWithAck("ping", {});
  await post(a, "acme", "live");
  await attacker.emitWithAck("ping", {});
  assert.deepEqual(attackerGot, [], "nothing of another tenant's, missed or live");

  // The victim comes back on node B: the same socket, everything it missed, in order.
  const back = nextConnect(victim);
  victim.connect();
  assert.equal(await back, true);
  assert.equal(victim.id, stolen.id);
  await until(() => got.length >= 3, "the replay");
  await sleep(100);
  assert.deepEqual(got, ["before", "while-away", "live"]);
});

test("recovery 30 s and 100 s after the first connect", { skip, timeout: 150_000 }, async () => {
  const base = await nodeCount(probe);
  const a = await tidingsNode(redis.url);
  const b = await tidingsNode(redis.url);
  await members(probe, base + 2);
  const sender = await client(b.url);
  const late = async (afterMs, room) => {
    const front = await proxy(a.port);
    const socket = await client(front.url, { reconnect: true });
    assert.equal(await socket.emitWithAck("join", room), true);
    const got = collect(socket, "l");
    await sender.emitWithAck("to-room", { room, event: "l", data: 0 });
    await until(() => got.length === 1, "first event");
    await sleep(afterMs);
    front.to(b.port);
    const back = nextConnect(socket);
    front.cut();
    await until(() => !socket.connected, "dropped");
    await sender.emitWithAck("to-room", { room, event: "l", data: 1 });
    assert.equal(await back, true, `recovered ${afterMs} ms after connecting`);
    await until(() => got.length >= 2, "missed event");
    assert.deepEqual(got, [0, 1]);
  };
  await Promise.all([late(30_000, "org:l30"), late(100_000, "org:l100")]);
});
