// Tenant isolation of the `tidings` binary in production mode (an auth secret set), tried as an
// attacker would with the stock socket.io-client: a stolen pid and offset with another tenant's
// token, a flood from one tenant against another's recovery, a token that expires while
// connected, and the ingestion API without a key.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { startServer } from "../lib/server.js";
import { dashboardToken } from "../lib/token.js";
import { waitUntil, withTimeout } from "../lib/wait.js";

const BIN = process.env.TIDINGS_ANALYTICS_BIN;
const skip = BIN ? false : "TIDINGS_ANALYTICS_BIN is not set";
const SECRET = "isolation-secret";
const API_KEY = "isolation-api-key";

let server;
const clients = [];

before(async () => {
  if (skip) return;
  server = await startServer({
    bin: BIN,
    env: {
      TIDINGS_PORT: "0",
      TIDINGS_AUTH_SECRET: SECRET,
      TIDINGS_API_KEY: API_KEY,
      TIDINGS_DEMO: "false",
      RUST_LOG: "warn",
    },
  });
});

after(async () => {
  for (const c of clients) c.close();
  if (server) await server.stop();
});

const token = (orgs, opts) => dashboardToken(SECRET, orgs, opts);

/** A dashboard of the stock client that records what it receives; resolves once connected. */
function dashboard(auth, opts = {}) {
  const socket = io(server.url, { auth, transports: ["websocket"], forceNew: true, reconnection: false, ...opts });
  clients.push(socket);
  socket.updates = [];
  socket.on("analytics:update", (u) => socket.updates.push(u.data.content));
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", (err) => reject(err));
    }),
    "connect",
  );
}

async function post(org, content, { url = server.url, key = API_KEY } = {}) {
  const headers = { "content-type": "application/json" };
  if (key) headers.authorization = `Bearer ${key}`;
  const res = await fetch(`${url}/api/v1/orgs/${org}/events`, {
    method: "POST",
    headers,
    body: JSON.stringify({
      type: "message",
      data: { conversationId: "c1", messageId: `m-${Math.random()}`, role: "user", content },
    }),
  });
  return { status: res.status, text: await res.text() };
}

/** A dashboard of `org` that got one update (so it holds an offset), then lost its connection. */
async function droppedDashboard(org) {
  const socket = await dashboard({ token: token([org]) });
  assert.equal((await socket.emitWithAck("join:analytics", { organizationId: org })).ok, true);
  assert.equal((await post(org, "before")).status, 200);
  await waitUntil(() => socket.updates.length === 1, "the first update");
  const stolen = { id: socket.id, pid: socket._pid, offset: socket._lastOffset };
  assert.ok(stolen.pid && stolen.offset, "recovery is on: the client holds a pid and an offset");
  const gone = new Promise((r) => socket.once("disconnect", r));
  socket.io.engine.close(); // the network drops (the server sees "transport close")
  await withTimeout(gone, "disconnect");
  return { socket, stolen };
}

/** Reconnects a dropped dashboard by hand (its pid and offset go with the CONNECT). */
async function reconnect(socket) {
  const connected = new Promise((r) => socket.once("connect", r));
  socket.connect();
  await withTimeout(connected, "reconnect");
}

test("another tenant's token with a stolen pid and offset gets nothing; the victim still recovers", { skip }, async () => {
  const { socket: victim, stolen } = await droppedDashboard("victim-org");
  assert.equal((await post("victim-org", "while-away")).status, 200);

  // The attacker holds a valid token of its own org and the victim's pid and offset.
  const attacker = await dashboard({ token: token(["attacker-org"]), pid: stolen.pid, offset: stolen.offset });
  assert.equal(attacker.recovered, false);
  assert.notEqual(attacker.id, stolen.id);
  // A round trip after the CONNECT: any replay would have come before it.
  await attacker.emitWithAck("ping", {});
  assert.equal((await post("victim-org", "live")).status, 200);
  await attacker.emitWithAck("ping", {});
  assert.deepEqual(attacker.updates, [], "nothing of the victim's, missed or live");
  assert.equal((await attacker.emitWithAck("join:analytics", { organizationId: "victim-org" })).ok, false);

  // No token at all, the stolen pid alone: refused before any replay.
  await assert.rejects(
    dashboard({ pid: stolen.pid, offset: stolen.offset }),
    (err) => err.data?.code === "token_missing",
  );

  // The victim comes back: same socket, everything it missed, in order.
  await reconnect(victim);
  await waitUntil(() => victim.updates.length >= 3, "the replay");
  assert.equal(victim.recovered, true);
  assert.equal(victim.id, stolen.id);
  assert.deepEqual(victim.updates, ["before", "while-away", "live"]);
});

test("one tenant's flood does not cost another tenant its recovery", { skip, timeout: 60_000 }, async () => {
  const { socket: victim } = await droppedDashboard("quiet-org");
  assert.equal((await post("quiet-org", "missed")).status, 200);

  // A dashboard of another tenant floods app-level pings; every pong it gets is a replayable emit.
  const flooder = await dashboard({ token: token(["noisy-org"]) });
  const pongs = { n: 0 };
  flooder.on("pong", () => pongs.n++);
  for (let i = 0; i < 10_050; i++) flooder.emit("ping", {});
  await withTimeout(flooder.emitWithAck("ping", {}), "the flood to be handled", 30_000).catch(() => {});
  assert.ok(pongs.n > 0 || flooder.disconnected, "the flood reached the server");

  await reconnect(victim);
  await waitUntil(() => victim.updates.length >= 2, "the replay");
  assert.equal(victim.recovered, true);
  assert.deepEqual(victim.updates, ["before", "missed"]);
});

test("a socket whose token expires is disconnected, with the reason visible", { skip, timeout: 20_000 }, async () => {
  const socket = await dashboard({ token: token(["brief-org"], { ttl: 2 }) });
  const errors = [];
  socket.on("analytics:error", (e) => errors.push(e));
  const reason = await withTimeout(new Promise((r) => socket.once("disconnect", r)), "the expiry", 10_000);
  assert.equal(reason, "io server disconnect");
  assert.deepEqual(
    errors.map((e) => e.code),
    ["token_expired"],
  );
});

test("the ingestion API fails closed in production mode without a key", { skip }, async () => {
  const closed = await startServer({
    bin: BIN,
    env: { TIDINGS_PORT: "0", TIDINGS_AUTH_SECRET: SECRET, TIDINGS_DEMO: "false", RUST_LOG: "warn" },
  });
  const open = await startServer({
    bin: BIN,
    env: {
      TIDINGS_PORT: "0",
      TIDINGS_AUTH_SECRET: SECRET,
      TIDINGS_API_OPEN: "true",
      TIDINGS_DEMO: "false",
      RUST_LOG: "warn",
    },
  });
  try {
    const refused = await post("any-org", "forged", { url: closed.url, key: null });
    assert.ok(refused.status === 401 || refused.status === 403 || refused.status === 503, refused.text);
    const stats = await fetch(`${closed.url}/api/v1/stats`);
    assert.notEqual(stats.status, 200, "statistics are not public either");
    assert.equal((await post("any-org", "allowed", { url: open.url, key: null })).status, 200);
    // With a key configured, statistics need it.
    assert.equal((await fetch(`${server.url}/api/v1/stats`)).status, 401);
    const withKey = await fetch(`${server.url}/api/v1/stats`, { headers: { authorization: `Bearer ${API_KEY}` } });
    assert.equal(withKey.status, 200);
  } finally {
    await closed.stop();
    await open.stop();
  }
});
