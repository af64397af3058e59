// The stock socket.io-client with the npm socket.io-msgpack-parser against examples/test_server
// started with PARSER=msgpack, over ["polling"], ["websocket"] and ["polling", "websocket"]:
// connect with auth, events and acks both ways, binary both ways (inline, no attachments), a second
// namespace with a middleware, a dynamic namespace, rooms and broadcasts. Then hostile msgpack
// frames on raw websockets: each closes its own session, while a stock client keeps working.
import { test, describe, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";
import { startServer, exampleBin } from "../lib/server.js";
import { RawWebSocket, decodePayload, eioPath, httpRequest, openPolling } from "../lib/raw.js";
import { once, withTimeout, Inbox } from "../lib/wait.js";

const WAIT = 5_000;

let server;
/** Every client made by a test, closed after it. */
let clients = [];

before(async () => {
  server = await startServer({
    bin: exampleBin("test_server", "TIDINGS_TEST_SERVER_BIN"),
    env: { PARSER: "msgpack" },
  });
});

after(async () => {
  closeAll();
  await server?.stop();
});

afterEach(closeAll);

function closeAll() {
  for (const c of clients.splice(0)) c.close();
}

let counter = 0;
/** A name no other test uses. */
const unique = (prefix) => `${prefix}-${process.pid}-${++counter}`;

/** A client socket speaking msgpack (not yet connected); own Manager, no reconnection. */
function client(transports, opts = {}, nsp = "/") {
  const socket = io(`${server.url}${nsp}`, {
    transports,
    forceNew: true,
    reconnection: false,
    parser: msgpackParser,
    ...opts,
  });
  clients.push(socket);
  return socket;
}

async function connect(transports, opts = {}, nsp = "/") {
  const socket = client(transports, opts, nsp);
  await once(socket, "connect", { rejectOn: ["connect_error"] });
  return socket;
}

/** emitWithAck bounded by WAIT. */
const ask = (socket, ev, ...args) => socket.timeout(WAIT).emitWithAck(ev, ...args);

const MODES = [
  { name: "polling", transports: ["polling"] },
  { name: "websocket", transports: ["websocket"] },
  { name: "polling → websocket", transports: ["polling", "websocket"] },
];

for (const mode of MODES) {
  const t = mode.transports;

  describe(`socket.io-client + socket.io-msgpack-parser over ${mode.name}`, { timeout: 30_000 }, () => {
    test("connects with auth; the server sees the auth object and sends welcome", async () => {
      const auth = { token: "abc", n: 1, nested: { list: [1, "two", null] } };
      const socket = client(t, { auth });
      const welcome = once(socket, "welcome");
      await once(socket, "connect", { rejectOn: ["connect_error"] });
      assert.deepEqual((await welcome)[0], { id: socket.id, recovered: false });
      const hs = await ask(socket, "handshake");
      assert.deepEqual(hs.auth, auth);
      assert.equal(hs.query.EIO, "4");
    });

    test("events and acks both ways", async () => {
      const socket = await connect(t);
      const echoes = new Inbox(socket, "echo");
      socket.emit("echo", "hello", 42, { a: [1.5, -7, true, null] });
      await echoes.waitFor(1);
      assert.deepEqual(echoes.calls[0], ["hello", 42, { a: [1.5, -7, true, null] }]);

      // Client → server ack.
      assert.equal(await ask(socket, "add", 2, 40), 42);
      // Large integers and negative ones survive msgpack's int forms.
      assert.equal(await ask(socket, "add", 2 ** 40, -5), 2 ** 40 - 5);

      // Server → client ack: the server emits `question` and reports the answer it got.
      socket.on("question", (data, ack) => ack({ got: data, answer: "yes" }));
      const report = await ask(socket, "server-ack", { event: "question", data: { q: 1 }, timeout_ms: 2000 });
      assert.deepEqual(report, { ok: true, answer: [{ got: { q: 1 }, answer: "yes" }] });
    });

    test("binary both ways: Buffers and typed arrays inline, nested anywhere", async () => {
      const socket = await connect(t);
      const echoes = new Inbox(socket, "echo");
      const payload = {
        a: Buffer.from([1, 2, 3]),
        list: [Buffer.from("xyz"), { b: new Uint8Array([9, 8, 0x1e, 0]) }, 42, [Buffer.alloc(1000, 0xab)]],
        empty: Buffer.alloc(0),
      };
      socket.emit("echo", payload, Buffer.from([0xff, 0x00]), "text");
      await echoes.waitFor(1);
      // What comes back: every binary value as a Buffer (msgpack bin).
      const expected = {
        a: Buffer.from([1, 2, 3]),
        list: [Buffer.from("xyz"), { b: Buffer.from([9, 8, 0x1e, 0]) }, 42, [Buffer.alloc(1000, 0xab)]],
        empty: Buffer.alloc(0),
      };
      assert.deepEqual(echoes.calls[0], [expected, Buffer.from([0xff, 0x00]), "text"]);
      assert.ok(Buffer.isBuffer(echoes.calls[0][0].a));

      // Binary in an ack, both ways.
      const answer = await ask(socket, "echo-ack", Buffer.from([7, 7, 7]));
      assert.deepEqual(answer, Buffer.from([7, 7, 7]));
      socket.on("question", (data, ack) => ack(Buffer.from([5, 6])));
      const report = await ask(socket, "server-ack", { event: "question", data: 1, timeout_ms: 2000 });
      // The server saw one binary argument (its JSON view is a placeholder).
      assert.equal(report.ok, true);
      assert.equal(report.answer.length, 1);
      assert.equal(report.answer[0]._placeholder, true);

      // A Date goes as msgpack ext and reaches the handlers as its ISO string, as with JSON.
      const date = new Date(Date.UTC(2024, 1, 29, 12, 34, 56, 789));
      assert.deepEqual(await ask(socket, "echo-ack", date), "2024-02-29T12:34:56.789Z");
    });

    test("a second namespace: middleware accepts and refuses; a dynamic namespace", async () => {
      const admin = client(t, { auth: { token: "secret" } }, "/admin");
      const welcome = once(admin, "admin-welcome");
      await once(admin, "connect", { rejectOn: ["connect_error"] });
      assert.deepEqual((await welcome)[0], { id: admin.id });
      const echoes = new Inbox(admin, "echo");
      admin.emit("echo", "on admin", Buffer.from([1]));
      await echoes.waitFor(1);
      assert.deepEqual(echoes.calls[0], ["on admin", Buffer.from([1])]);

      const refused = client(t, { auth: { token: "wrong" } }, "/admin");
      const [err] = await once(refused, "connect_error", { rejectOn: ["connect"] });
      assert.equal(err.message, "unauthorized");
      assert.deepEqual(err.data, { reason: "bad token" });

      const nsp = `/dyn-${unique("x")}`;
      const dyn = client(t, {}, nsp);
      const hello = once(dyn, "hello");
      await once(dyn, "connect", { rejectOn: ["connect_error"] });
      assert.deepEqual((await hello)[0], { nsp });

      const unknown = client(t, {}, "/nowhere");
      const [err2] = await once(unknown, "connect_error", { rejectOn: ["connect"] });
      assert.equal(err2.message, "Invalid namespace");
    });

    test("rooms and broadcasts reach exactly their members, binary included", async () => {
      const [a, b, c] = await Promise.all([connect(t), connect(t), connect(t)]);
      const news = [a, b, c].map((s) => new Inbox(s, "news"));
      const room = unique("room");
      assert.equal(await ask(a, "join", room), true);
      assert.equal(await ask(b, "join", room), true);
      assert.deepEqual(await ask(a, "rooms"), [a.id, room].sort());

      assert.equal(await ask(c, "to-room", { room, event: "news", data: { n: 1 } }), 2);
      assert.deepEqual(await news[0].waitFor(1), [{ n: 1 }]);
      assert.deepEqual(await news[1].waitFor(1), [{ n: 1 }]);
      await ask(c, "echo-ack", "flush");
      assert.equal(news[2].length, 0, "a client not in the room got its emit");

      // socket.broadcast: everyone but the sender, with a Buffer encoded once for all.
      const casts = [a, b, c].map((s) => new Inbox(s, "broadcast"));
      assert.equal(await ask(a, "broadcast", "hi", Buffer.from([4, 2])), 2);
      for (const i of [1, 2]) {
        await casts[i].waitFor(1);
        assert.deepEqual(casts[i].calls[0], ["hi", Buffer.from([4, 2])]);
      }
      await ask(a, "echo-ack", "flush");
      assert.equal(casts[0].length, 0, "the sender got its own broadcast");
    });
  });
}

// ===== hostile msgpack on raw websockets =====

const { Encoder, Decoder } = msgpackParser;

/** The msgpack bytes of a packet object, as the npm parser writes them. */
const encode = (packet) => new Encoder().encode(packet)[0];

/** Decodes a binary Socket.IO message as the npm parser does. */
function decode(buffer) {
  let out;
  const d = new Decoder();
  d.on("decoded", (p) => (out = p));
  d.add(buffer);
  return out;
}

/** A raw websocket session that has joined "/" with msgpack: resolves once the CONNECT reply came. */
async function rawSession() {
  const url = `${server.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`;
  const ws = await RawWebSocket.open(url);
  const open = await ws.nextNonPing();
  assert.match(open, /^0\{/);
  ws.send(encode({ type: 0, nsp: "/" }));
  for (;;) {
    const m = await ws.nextNonPing();
    if (typeof m === "string") continue;
    const packet = decode(m);
    if (packet.type === 0) {
      assert.equal(typeof packet.data.sid, "string");
      return ws;
    }
  }
}

/** A msgpack map header for `n` entries plus each `key` (fixstr) and raw `value` bytes. */
function rawMap(entries) {
  const parts = [Buffer.from([0x80 | entries.length])];
  for (const [key, value] of entries) {
    parts.push(Buffer.from([0xa0 | key.length]), Buffer.from(key), Buffer.from(value));
  }
  return Buffer.concat(parts);
}

const ROOT = [0xa1, 0x2f]; // "/"
const nested = (levels) => [0x92, 0xa1, 0x65, ...Array(levels).fill(0x91), 0xc0];

const HOSTILE = [
  ["deep nesting (1 000 levels)", rawMap([["type", [2]], ["nsp", ROOT], ["data", nested(1000)]])],
  ["deep nesting (100 000 levels)", rawMap([["type", [2]], ["nsp", ROOT], ["data", nested(100_000)]])],
  ["truncated", encode({ type: 2, nsp: "/", data: ["echo", "hello"] }).subarray(0, 20)],
  ["trailing bytes", Buffer.concat([encode({ type: 2, nsp: "/", data: ["echo"] }), Buffer.from([0])])],
  ["array32 declaring 4G items", rawMap([["type", [2]], ["nsp", ROOT], ["data", [0xdd, 0xff, 0xff, 0xff, 0xff]]])],
  ["map32 declaring 4G entries", Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff])],
  ["str32 declaring 4 GB", rawMap([["type", [2]], ["nsp", ROOT], ["data", [0x91, 0xdb, 0xff, 0xff, 0xff, 0xff, 0x61]]])],
  ["bin32 declaring 4 GB", rawMap([["type", [2]], ["nsp", ROOT], ["data", [0x92, 0xa1, 0x65, 0xc6, 0xff, 0xff, 0xff, 0xff]]])],
  ["type as a string", encode({ type: "2", nsp: "/", data: ["echo"] })],
  ["type 5 (no binary types in msgpack)", encode({ type: 5, nsp: "/", data: ["echo"] })],
  ["namespace as a number", encode({ type: 2, nsp: 5, data: ["echo"] })],
  ["event data as an object", encode({ type: 2, nsp: "/", data: { a: 1 } })],
  ["ack id as a string", encode({ type: 2, nsp: "/", data: ["echo"], id: "1" })],
  ["not a map", encode([2, "/", ["echo"]])],
  ["a text message", "42[\"echo\",1]"],
];

describe("hostile msgpack closes only the offending session", { timeout: 60_000 }, () => {
  for (const [name, bytes] of HOSTILE) {
    test(name, async () => {
      const bystander = await connect(["websocket"]);
      const ws = await rawSession();
      ws.send(bytes);
      const closed = await ws.waitClose(WAIT);
      assert.ok(closed, `the session stayed open after: ${name}`);
      // The other client's session is untouched.
      assert.equal(await ask(bystander, "add", 1, 2), 3);
      assert.ok(bystander.connected);
    });
  }

  test("over polling too: a hostile packet (base64 in the payload) closes that session only", async () => {
    const bystander = await connect(["polling"]);
    const { sid } = await openPolling(server.url);
    const path = eioPath({ sid });
    const post = (bytes) => httpRequest(server.url, "POST", path, { body: `b${bytes.toString("base64")}` });
    assert.equal((await post(encode({ type: 0, nsp: "/" }))).status, 200);
    const reply = await httpRequest(server.url, "GET", path);
    const packets = decodePayload(reply.body).filter((p) => p.startsWith("b"));
    assert.equal(decode(Buffer.from(packets[0].slice(1), "base64")).type, 0, reply.body);

    await post(rawMap([["type", [2]], ["nsp", ROOT], ["data", nested(1000)]]));
    // The session is gone: the next poll gets the close packet, or the sid is unknown.
    const next = await httpRequest(server.url, "GET", path);
    assert.ok(
      next.status === 400 || decodePayload(next.body).includes("1"),
      `session still open: ${next.status} ${next.body}`,
    );
    assert.equal(await ask(bystander, "add", 1, 2), 3);
  });

  test("a client without the msgpack parser is disconnected, not left hanging", async () => {
    const socket = io(server.url, { transports: ["websocket"], forceNew: true, reconnection: false });
    clients.push(socket);
    const [reason] = await once(socket.io, "close", { rejectOn: ["connect"] });
    assert.ok(!socket.connected, `closed (${reason}) yet connected`);
  });

  test("a valid raw packet after the handshake is answered (the raw driver works)", async () => {
    const ws = await rawSession();
    ws.send(encode({ type: 2, nsp: "/", data: ["add", 20, 22], id: 7 }));
    for (;;) {
      const m = await withTimeout(ws.nextNonPing(), "the ack");
      if (typeof m === "string") continue;
      const packet = decode(m);
      if (packet.type === 3) {
        assert.deepEqual(packet, { type: 3, data: [42], nsp: "/", id: 7 });
        break;
      }
    }
    await ws.close();
  });
});
