// The analytics service (`tidings` binary) driven by the stock socket.io-client and plain HTTP:
// tenant isolation, the event API and its bad inputs, statistics, filtering, history, ping/pong.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { startServer } from "../lib/server.js";
import { dashboardToken } from "../lib/token.js";

const BIN = process.env.TIDINGS_ANALYTICS_BIN;
const skip = BIN ? false : "TIDINGS_ANALYTICS_BIN is not set";
const SECRET = "test-secret";
const API_KEY = "test-api-key";
const WAIT = 5000;

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

/** An HS256 token granting `orgs`, valid for `ttl` seconds (negative = already expired), not
 * before `nbf` seconds from now when given. */
const token = (orgs, { ttl = 3600, secret = SECRET, nbf } = {}) => dashboardToken(secret, orgs, { ttl, nbf });

function withTimeout(promise, what, ms = WAIT) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A connected dashboard client; resolves once connected (or rejects with the connect error). */
function dashboard(auth, transports = ["websocket"]) {
  const socket = io(server.url, { auth, transports, forceNew: true, reconnection: false });
  clients.push(socket);
  socket.updates = [];
  socket.on("analytics:update", (u) => socket.updates.push(u));
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", (err) => reject(err));
    }),
    "connect",
  );
}

async function post(org, body, { key = API_KEY, raw } = {}) {
  const headers = { "content-type": "application/json" };
  if (key) headers.authorization = `Bearer ${key}`;
  const res = await fetch(`${server.url}/api/v1/orgs/${org}/events`, {
    method: "POST",
    headers,
    body: raw ?? JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

const message = (content = "hello") => ({
  type: "message",
  data: { conversationId: "c1", messageId: `m-${Math.random()}`, role: "user", content },
});
const sentiment = { type: "sentiment", data: { conversationId: "c1", messageId: "m1", score: 0.7, sentiment: "positive" } };
const metrics = { type: "metrics", data: { totalMessages: 12, resolutionRate: 0.5 } };

/** `GET /api/v1/stats` with the API key (it lists every org id, so it needs the key). */
async function stats() {
  const res = await fetch(`${server.url}/api/v1/stats`, { headers: { authorization: `Bearer ${API_KEY}` } });
  assert.equal(res.status, 200);
  return res.json();
}

/** Waits until `socket` has `n` updates (or fails). */
async function updates(socket, n) {
  const deadline = Date.now() + WAIT;
  while (socket.updates.length < n) {
    if (Date.now() > deadline) throw new Error(`expected ${n} updates, got ${socket.updates.length}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return socket.updates;
}

test("health check and dashboard page are served", { skip }, async () => {
  const health = await fetch(`${server.url}/healthz`);
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { status: "ok" });
  const page = await fetch(`${server.url}/`);
  assert.equal(page.status, 200);
  const html = await page.text();
  // The page runs on the client package, served by the binary, and the stock ESM bundle.
  assert.match(html, /"socket\.io-client": "\/socket\.io\/socket\.io\.esm\.min\.js"/);
  assert.match(html, /from "\/client\/analytics\.js"/);
  // The package's module is built into the binary (the stock bundles come from the web folder's
  // npm install, which the browser tests make and check).
  const module = await fetch(`${server.url}/client/analytics.js`);
  assert.equal(module.status, 200);
  assert.match(module.headers.get("content-type"), /javascript/);
  assert.match(await module.text(), /export function connectAnalytics/);
});

test("tokens: missing, forged, expired and a foreign org are refused, each with its code", { skip }, async () => {
  for (const [auth, code] of [
    [{}, "token_missing"],
    [{ token: "garbage" }, "token_invalid"],
    [{ token: token(["acme"], { secret: "wrong" }) }, "token_invalid"],
    [{ token: token(["acme"], { ttl: -60 }) }, "token_expired"],
    [{ token: token(["acme"]), organizationId: "globex" }, "org_forbidden"],
  ]) {
    await assert.rejects(dashboard(auth), (err) => {
      assert.deepEqual(err.data, { code });
      assert.ok(err.message.length > 10, err.message);
      return true;
    });
  }
});

test("updates posted to the API reach only the org's dashboards", { skip }, async () => {
  for (const transports of [["websocket"], ["polling"]]) {
    const acme = await dashboard({ token: token(["acme"]) }, transports);
    const globex = await dashboard({ token: token(["globex"]) }, transports);
    assert.deepEqual(await acme.emitWithAck("join:analytics", { organizationId: "acme" }), { ok: true, room: "org:acme" });
    assert.deepEqual(await globex.emitWithAck("join:analytics", { organizationId: "globex" }), { ok: true, room: "org:globex" });

    const res = await post("acme", message("for acme only"));
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { accepted: 1, delivered: 1, cluster: false });
    const [u] = await updates(acme, 1);
    assert.equal(u.type, "message");
    assert.equal(u.organizationId, "acme");
    assert.equal(u.data.content, "for acme only");
    assert.equal(typeof u.timestamp, "number");
    // The other tenant got nothing, even after a round trip that would have carried it.
    await globex.emitWithAck("ping");
    assert.equal(globex.updates.length, 0);
    acme.close();
    globex.close();
  }
});

test("joining an org the token does not grant is refused", { skip }, async () => {
  const s = await dashboard({ token: token(["acme"]) });
  assert.deepEqual(await s.emitWithAck("join:analytics", { organizationId: "globex" }), { ok: false, error: "forbidden" });
  assert.deepEqual(await s.emitWithAck("join:analytics", { organizationId: "bad/id" }), { ok: false, error: "invalid organizationId" });
  assert.deepEqual(await s.emitWithAck("join:analytics", {}), { ok: false, error: "organizationId is required" });
  await post("globex", message("secret"));
  await s.emitWithAck("ping");
  assert.equal(s.updates.length, 0);
  assert.ok((await stats()).joinsRefused >= 1);
  s.close();
});

test("leave stops updates; rejoin resumes them", { skip }, async () => {
  const s = await dashboard({ token: token(["initech"]) });
  await s.emitWithAck("join:analytics", { organizationId: "initech" });
  await post("initech", metrics);
  await updates(s, 1);
  assert.deepEqual(await s.emitWithAck("leave:analytics", { organizationId: "initech" }), { ok: true });
  assert.deepEqual(await post("initech", metrics).then((r) => r.json), { accepted: 1, delivered: 0, cluster: false });
  await s.emitWithAck("join:analytics", { organizationId: "initech" });
  await post("initech", metrics);
  await updates(s, 2);
  s.close();
});

test("subscribe and unsubscribe filter update types", { skip }, async () => {
  const s = await dashboard({ token: token(["hooli"]) });
  await s.emitWithAck("join:analytics", { organizationId: "hooli" });
  assert.deepEqual(await s.emitWithAck("unsubscribe:events", ["message", "metrics"]), { ok: true, types: ["sentiment"] });
  await post("hooli", [message(), metrics, sentiment]);
  const got = await updates(s, 1);
  await s.emitWithAck("ping");
  assert.deepEqual(got.map((u) => u.type), ["sentiment"]);
  assert.deepEqual(await s.emitWithAck("subscribe:events", { types: ["metrics"] }), { ok: true, types: ["metrics", "sentiment"] });
  await post("hooli", [message(), metrics]);
  await updates(s, 2);
  await s.emitWithAck("ping");
  assert.deepEqual(s.updates.map((u) => u.type), ["sentiment", "metrics"]);
  assert.equal((await s.emitWithAck("subscribe:events", ["bogus"])).ok, false);
  s.close();
});

test("history returns the org's events since a time", { skip }, async () => {
  const before = Date.now() - 1;
  await post("umbrella", [message("one"), message("two")]);
  const s = await dashboard({ token: token(["umbrella", "acme"]) });
  await s.emitWithAck("join:analytics", { organizationId: "umbrella" });
  const all = await s.emitWithAck("request:history", { since: before });
  assert.equal(all.ok, true);
  assert.deepEqual(all.events.map((e) => e.data.content), ["one", "two"]);
  assert.ok(all.events.every((e) => e.organizationId === "umbrella"));
  const none = await s.emitWithAck("request:history", { since: Date.now() + 1000 });
  assert.deepEqual(none.events, []);
  // History of an org not joined is refused.
  assert.equal((await s.emitWithAck("request:history", { since: 0, organizationId: "acme" })).ok, false);
  s.close();
});

test("history comes in pages of at most `limit` events, with `more`", { skip }, async () => {
  const base = Date.now() - 5000;
  const batch = [1, 2, 3, 4, 5].map((i) => ({ ...message(`p${i}`), timestamp: base + i }));
  assert.equal((await post("pages", batch)).status, 200);
  const s = await dashboard({ token: token(["pages"]) });
  await s.emitWithAck("join:analytics", { organizationId: "pages" });
  const first = await s.emitWithAck("request:history", { since: 0, limit: 2 });
  assert.deepEqual(first.events.map((e) => e.data.content), ["p1", "p2"]);
  assert.equal(first.more, true);
  const rest = await s.emitWithAck("request:history", { since: first.events[1].timestamp, limit: 10, organizationId: "pages" });
  assert.deepEqual(rest.events.map((e) => e.data.content), ["p3", "p4", "p5"]);
  assert.equal(rest.more, false);
  s.close();
});

test("a token before its nbf is refused", { skip }, async () => {
  await assert.rejects(dashboard({ token: token(["acme"], { nbf: 600 }) }), (err) => {
    assert.deepEqual(err.data, { code: "token_invalid" });
    assert.match(err.message, /not valid yet/);
    return true;
  });
  (await dashboard({ token: token(["acme"], { nbf: -1 }) })).close();
});

test("a socket whose token expires is told and disconnected by the server", { skip, timeout: 15_000 }, async () => {
  const s = await dashboard({ token: token(["acme"], { ttl: 2 }) });
  assert.equal((await s.emitWithAck("join:analytics", { organizationId: "acme" })).ok, true);
  const error = new Promise((r) => s.once("analytics:error", r));
  const reason = await withTimeout(new Promise((r) => s.once("disconnect", r)), "the expiry disconnect", 8000);
  assert.equal(reason, "io server disconnect");
  assert.equal((await error).code, "token_expired");
});

test("app-level ping answers pong with the server time", { skip }, async () => {
  const s = await dashboard({ token: token(["acme"]) });
  const pong = withTimeout(new Promise((r) => s.once("pong", r)), "pong");
  s.emit("ping");
  const { timestamp } = await pong;
  assert.ok(Math.abs(timestamp - Date.now()) < 5000);
  const acked = await s.emitWithAck("ping");
  assert.equal(typeof acked.timestamp, "number");
  s.close();
});

test("batches are all-or-nothing", { skip }, async () => {
  const s = await dashboard({ token: token(["wayne"]) });
  await s.emitWithAck("join:analytics", { organizationId: "wayne" });
  const bad = await post("wayne", [message(), { type: "message", data: { conversationId: "c", messageId: "m", role: "robot", content: "x" } }]);
  assert.equal(bad.status, 400);
  assert.equal(bad.json.field, "events[1].data.role");
  await s.emitWithAck("ping");
  assert.equal(s.updates.length, 0);
  const history = await s.emitWithAck("request:history", { since: 0 });
  assert.deepEqual(history.events, []);
  const good = await post("wayne", [message("a"), sentiment, metrics]);
  assert.deepEqual(good.json, { accepted: 3, delivered: 3, cluster: false });
  await updates(s, 3);
  s.close();
});

test("every bad API input gets its error", { skip }, async () => {
  const cases = [
    [{ key: null }, metrics, 401, undefined],
    [{ key: "wrong" }, metrics, 401, undefined],
    [{ raw: "{not json" }, null, 400, "body"],
    [{}, [], 400, "events"],
    [{}, { data: {} }, 400, "type"],
    [{}, { type: "weather", data: {} }, 400, "type"],
    [{}, { type: "message" }, 400, "data"],
    [{}, { type: "message", data: { messageId: "m", role: "user", content: "x" } }, 400, "data.conversationId"],
    [{}, { type: "message", data: { conversationId: "c", messageId: "m", role: "user", content: "x", responseTime: -1 } }, 400, "data.responseTime"],
    [{}, { type: "sentiment", data: { conversationId: "c", messageId: "m", score: 5, sentiment: "positive" } }, 400, "data.score"],
    [{}, { type: "sentiment", data: { conversationId: "c", messageId: "m", score: 0, sentiment: "meh" } }, 400, "data.sentiment"],
    [{}, { type: "metrics", data: {} }, 400, "data.data"],
    [{}, { type: "metrics", data: { resolutionRate: 2 } }, 400, "data.resolutionRate"],
    [{}, { type: "metrics", organizationId: "other", data: { totalMessages: 1 } }, 400, "organizationId"],
    [{}, { type: "metrics", data: { totalMessages: 1 }, timestamp: "now" }, 400, "timestamp"],
  ];
  for (const [opts, body, status, field] of cases) {
    const res = await post("acme", body, opts);
    assert.equal(res.status, status, `${JSON.stringify(body)} -> ${res.text}`);
    if (field) assert.equal(res.json.field, field, res.text);
  }
  // Over 1 MB.
  const big = await post("acme", null, { raw: JSON.stringify({ type: "message", data: { content: "x".repeat(1_100_000) } }) });
  assert.equal(big.status, 413);
  // Bad org id in the path, wrong method, unknown route.
  assert.equal((await post("bad%20org", metrics)).status, 400);
  assert.equal((await fetch(`${server.url}/api/v1/orgs/acme/events`)).status, 405);
  assert.equal((await fetch(`${server.url}/api/v1/nope`)).status, 404);
});

test("statistics count connections, org sockets and events", { skip }, async () => {
  const a = await dashboard({ token: token(["stark"]) });
  const b = await dashboard({ token: token(["stark"]) }, ["polling"]);
  await a.emitWithAck("join:analytics", { organizationId: "stark" });
  await b.emitWithAck("join:analytics", { organizationId: "stark" });
  // The stats list every org id: they need the API key.
  assert.equal((await fetch(`${server.url}/api/v1/stats`)).status, 401);
  const before = await stats();
  await post("stark", [metrics, metrics]);
  await updates(a, 2);
  await updates(b, 2);
  const after = await stats();
  assert.equal(after.socketsPerOrg.stark, 2);
  assert.ok(after.connections >= 2);
  assert.ok(after.rooms >= 1);
  assert.equal(after.eventsIn - before.eventsIn, 2);
  assert.equal(after.eventsOut - before.eventsOut, 4);
  assert.equal(typeof after.uptimeSeconds, "number");
  a.close();
  b.close();
});

test("a dashboard away for 10 s catches up on every update by itself", { skip, timeout: 30_000 }, async () => {
  const socket = io(server.url, {
    auth: { token: token(["tyrell"]) },
    transports: ["websocket"],
    forceNew: true,
    // Stay away for 10 s before trying again.
    reconnectionDelay: 10_000,
    reconnectionDelayMax: 10_000,
    randomizationFactor: 0,
  });
  clients.push(socket);
  const seen = [];
  socket.on("analytics:update", (u) => seen.push(u.data.content));
  await withTimeout(new Promise((r) => socket.once("connect", r)), "connect");
  await socket.emitWithAck("join:analytics", { organizationId: "tyrell" });
  await post("tyrell", message("before"));
  const deadline = Date.now() + WAIT;
  while (seen.length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  const id = socket.id;

  socket.io.engine.close(); // the network drops
  await new Promise((r) => setTimeout(r, 200));
  for (const content of ["while-away-1", "while-away-2", "while-away-3"]) {
    await post("tyrell", message(content));
  }
  await withTimeout(new Promise((r) => socket.once("connect", r)), "reconnect", 15_000);
  const until = Date.now() + WAIT;
  while (seen.length < 4 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  assert.equal(socket.recovered, true);
  assert.equal(socket.id, id);
  assert.deepEqual(seen, ["before", "while-away-1", "while-away-2", "while-away-3"]);
  // Still in its org afterwards.
  await post("tyrell", message("after"));
  const last = Date.now() + WAIT;
  while (seen.length < 5 && Date.now() < last) await new Promise((r) => setTimeout(r, 10));
  assert.equal(seen[4], "after");
  socket.close();
});

/** The value of one sample line of a Prometheus text exposition (0 when absent). */
function sample(text, line) {
  const found = text.split("\n").find((l) => l.startsWith(line + " "));
  return found ? Number(found.slice(line.length + 1)) : 0;
}

test("Prometheus metrics move when traffic flows", { skip }, async () => {
  const scrape = async () => {
    const res = await fetch(`${server.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
    return res.text();
  };
  const before = await scrape();
  for (const name of [
    "tidings_engine_sessions",
    "tidings_sockets",
    "tidings_rooms",
    "tidings_packets_in_total",
    "tidings_packets_out_total",
    "tidings_bytes_in_total",
    "tidings_bytes_out_total",
    "tidings_broadcasts_total",
    "tidings_deliveries_total",
    "tidings_dropped_packets_total",
    "tidings_disconnects_total",
    "tidings_handshake_errors_total",
    "tidings_api_requests_total",
    "tidings_emit_to_write_seconds",
  ]) {
    assert.match(before, new RegExp(`^# TYPE ${name} `, "m"), name);
  }
  const ws = await dashboard({ token: token(["metrics-org"]) });
  const polling = await dashboard({ token: token(["metrics-org"]) }, ["polling"]);
  await ws.emitWithAck("join:analytics", { organizationId: "metrics-org" });
  await polling.emitWithAck("join:analytics", { organizationId: "metrics-org" });
  await post("metrics-org", [metrics, metrics, metrics]);
  await post("metrics-org", { type: "nope" });
  await updates(ws, 3);
  await updates(polling, 3);
  await fetch(`${server.url}/socket.io/?EIO=3&transport=polling`);
  const during = await scrape();
  assert.ok(sample(during, 'tidings_engine_sessions{transport="websocket"}') >= 1);
  assert.ok(sample(during, 'tidings_engine_sessions{transport="polling"}') >= 1);
  assert.ok(sample(during, 'tidings_sockets{namespace="/"}') >= 2);
  for (const counter of ["tidings_packets_in_total", "tidings_packets_out_total", "tidings_bytes_in_total", "tidings_bytes_out_total"]) {
    assert.ok(sample(during, counter) > sample(before, counter), counter);
  }
  assert.equal(sample(during, "tidings_broadcasts_total") - sample(before, "tidings_broadcasts_total"), 3);
  assert.equal(sample(during, "tidings_deliveries_total") - sample(before, "tidings_deliveries_total"), 6);
  assert.equal(sample(during, 'tidings_api_requests_total{status="200"}') - sample(before, 'tidings_api_requests_total{status="200"}'), 1);
  assert.ok(sample(during, 'tidings_api_requests_total{status="400"}') > sample(before, 'tidings_api_requests_total{status="400"}'));
  assert.equal(sample(during, 'tidings_handshake_errors_total{code="5"}') - sample(before, 'tidings_handshake_errors_total{code="5"}'), 1);
  assert.ok(sample(during, "tidings_emit_to_write_seconds_count") > sample(before, "tidings_emit_to_write_seconds_count"));
  ws.disconnect();
  await new Promise((r) => setTimeout(r, 100));
  const after = await scrape();
  // At least this client's (earlier tests' clients may still be closing on the shared server).
  assert.ok(
    sample(after, 'tidings_disconnects_total{reason="client namespace disconnect"}') -
      sample(during, 'tidings_disconnects_total{reason="client namespace disconnect"}') >=
      1,
  );
  polling.close();
});

test("in production mode without an API key the API is closed", { skip }, async () => {
  const closed = await startServer({
    bin: BIN,
    env: { TIDINGS_PORT: "0", TIDINGS_AUTH_SECRET: SECRET, TIDINGS_DEMO: "false", RUST_LOG: "error" },
  });
  try {
    const res = await fetch(`${closed.url}/api/v1/orgs/acme/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(metrics),
    });
    assert.equal(res.status, 503);
    assert.equal(typeof (await res.json()).error, "string");
    assert.equal((await fetch(`${closed.url}/api/v1/stats`)).status, 503);
  } finally {
    await closed.stop();
  }
});
