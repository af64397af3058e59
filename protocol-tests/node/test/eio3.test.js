// socket.io-client 2.x (Engine.IO v3, Socket.IO protocol v4) against examples/test_server with
// ALLOW_EIO3=1, over ["polling"], ["websocket"] and ["polling", "websocket"] (upgrade): the implicit
// connection to `/`, a second namespace (auth from the query, refusals, unknown namespaces), events
// and acks both ways, binary both ways, rooms and broadcasts, disconnects from both sides, and the
// client-sent heartbeat. A v4 client still works on the same server; without the option the v2
// client is refused.
import { test, describe, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import ioV2 from "socket.io-client-v2";
import { io as ioV4 } from "socket.io-client";
import { startServer, exampleBin } from "../lib/server.js";
import { once, sleep, waitUntil, Inbox } from "../lib/wait.js";

const PING_INTERVAL_MS = 400;
const PING_TIMEOUT_MS = 300;

let server;
/** Every client made by a test, closed after it. */
let clients = [];

before(async () => {
  server = await startServer({
    bin: exampleBin("test_server", "TIDINGS_TEST_SERVER_BIN"),
    env: {
      ALLOW_EIO3: "1",
      PING_INTERVAL_MS: String(PING_INTERVAL_MS),
      PING_TIMEOUT_MS: String(PING_TIMEOUT_MS),
    },
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

/** Binary as the v2 client hands it over (Buffer or ArrayBuffer), as a Buffer. */
const bytes = (b) => Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b);

const MODES = [
  { name: "polling", transports: ["polling"], last: "polling" },
  { name: "websocket", transports: ["websocket"], last: "websocket" },
  { name: "polling → websocket", transports: ["polling", "websocket"], last: "websocket" },
];

for (const mode of MODES) {
  const opts = (extra = {}) => ({
    transports: mode.transports,
    forceNew: true,
    reconnection: false,
    ...extra,
  });

  /** A v2 client socket on `nsp`, not yet connected. */
  const client = (nsp = "/", extra = {}) => {
    const socket = ioV2(`${server.url}${nsp}`, opts(extra));
    clients.push(socket);
    return socket;
  };

  /** A connected v2 client socket (rejects on an `error` packet, or after 5 s). */
  const connect = async (nsp = "/", extra = {}) => {
    const socket = client(nsp, extra);
    await once(socket, "connect", { rejectOn: ["error", "connect_error"] });
    return socket;
  };

  /** Waits until the connection runs on the mode's final transport. */
  const settled = (socket) =>
    waitUntil(() => socket.io.engine.transport.name === mode.last, `transport ${mode.last}`);

  describe(`socket.io-client 2.x over ${mode.name}`, () => {
    test("is connected to / without asking, with the socket id the client expects", async () => {
      const socket = client();
      const welcome = new Inbox(socket, "welcome");
      await once(socket, "connect", { rejectOn: ["error", "connect_error"] });
      const engineId = socket.io.engine.id;
      assert.equal(socket.id, engineId);
      await welcome.waitFor(1);
      assert.deepEqual(welcome.firsts[0], { id: engineId, recovered: false });
      await settled(socket);
    });

    test("connects a second namespace with auth from the query", async () => {
      const manager = new ioV2.Manager(server.url, opts());
      const root = manager.socket("/");
      const admin = manager.socket("/admin", { query: { token: "secret" } });
      clients.push(root, admin);
      const adminWelcome = new Inbox(admin, "admin-welcome");
      await Promise.all([
        once(root, "connect", { rejectOn: ["error"] }),
        once(admin, "connect", { rejectOn: ["error"] }),
      ]);
      const engineId = manager.engine.id;
      assert.equal(admin.id, `/admin#${engineId}`);
      await adminWelcome.waitFor(1);
      assert.deepEqual(adminWelcome.firsts[0], { id: `/admin#${engineId}` });
      admin.emit("echo", "in admin");
      const [echoed] = await once(admin, "echo");
      assert.equal(echoed, "in admin");
    });

    test("a refused namespace gets the middleware's data as its error", async () => {
      const socket = client("/admin", { query: { token: "wrong" } });
      const [err] = await once(socket, "error", { rejectOn: ["connect"] });
      assert.deepEqual(err, { reason: "bad token" });
    });

    test("an unknown namespace gets Invalid namespace", async () => {
      const socket = client("/nowhere");
      const [err] = await once(socket, "error", { rejectOn: ["connect"] });
      assert.deepEqual(err, { message: "Invalid namespace" });
    });

    test("events both ways", async () => {
      const socket = await connect();
      socket.emit("echo", { a: 1, b: ["x", null] }, "wörld😀", 42);
      const args = await once(socket, "echo");
      assert.deepEqual(args, [{ a: 1, b: ["x", null] }, "wörld😀", 42]);
    });

    test("acks both ways", async () => {
      const socket = await connect();
      const [sum] = await new Promise((resolve) => socket.emit("add", 2, 3, (...a) => resolve(a)));
      assert.equal(sum, 5);
      socket.on("ask", (n, ack) => ack(n * 2, "twice"));
      const [report] = await new Promise((resolve) =>
        socket.emit("server-ack", { event: "ask", data: 21, timeout_ms: 3000 }, (...a) => resolve(a)),
      );
      assert.deepEqual(report, { ok: true, answer: [42, "twice"] });
    });

    test("binary both ways, in events and acks", async () => {
      const socket = await connect();
      await settled(socket);
      const blob = Buffer.from([0, 1, 2, 253, 254, 255]);
      socket.emit("echo", blob, { nested: Buffer.from("héllo") }, "text");
      const [b, nested, text] = await once(socket, "echo");
      assert.deepEqual(bytes(b), blob);
      assert.deepEqual(bytes(nested.nested), Buffer.from("héllo"));
      assert.equal(text, "text");
      const acked = await new Promise((resolve) =>
        socket.emit("echo-ack", Buffer.from([9, 8, 7]), (...a) => resolve(a)),
      );
      assert.deepEqual(bytes(acked[0]), Buffer.from([9, 8, 7]));
    });

    test("rooms and broadcasts", async () => {
      const [a, b, c] = await Promise.all([connect(), connect(), connect()]);
      const room = unique("room");
      const joined = await new Promise((resolve) => a.emit("join", room, resolve));
      assert.equal(joined, true);
      const rooms = await new Promise((resolve) => a.emit("rooms", resolve));
      assert.deepEqual(rooms, [a.id, room].sort());

      const newsA = new Inbox(a, "news");
      const newsC = new Inbox(c, "news");
      const n = await new Promise((resolve) =>
        b.emit("to-room", { room, event: "news", data: { hi: Buffer.from([1, 2]) } }, resolve),
      );
      assert.equal(n, 1);
      await newsA.waitFor(1);
      assert.deepEqual(bytes(newsA.firsts[0].hi), Buffer.from([1, 2]));

      const fromA = new Inbox(b, "broadcast");
      const fromAc = new Inbox(c, "broadcast");
      const mine = new Inbox(a, "broadcast");
      await new Promise((resolve) => a.emit("broadcast", "to all", resolve));
      await fromA.waitFor(1);
      await fromAc.waitFor(1);
      assert.deepEqual(fromA.firsts, ["to all"]);
      await sleep(50);
      assert.equal(mine.calls.length, 0, "the sender is left out");
      assert.equal(newsC.calls.length, 0, "only the room gets room news");
    });

    test("disconnects from either side", async () => {
      const observer = await connect();
      const socket = await connect();
      const id = socket.id;
      socket.close();
      await waitUntil(async () => {
        const reasons = await new Promise((resolve) => observer.emit("disconnect-reasons", resolve));
        return reasons.some((r) => r.id === id && r.reason === "client namespace disconnect");
      }, "the server to see the client's disconnect");

      const other = await connect();
      await settled(other);
      other.emit("disconnect-me");
      const [reason] = await once(other, "disconnect");
      assert.equal(reason, "io server disconnect");
    });

    test("the client pings and the connection stays up", async () => {
      const socket = await connect();
      const pongs = new Inbox(socket, "pong");
      await sleep(3 * (PING_INTERVAL_MS + PING_TIMEOUT_MS));
      assert.ok(pongs.calls.length >= 2, `pongs: ${pongs.calls.length}`);
      assert.equal(socket.connected, true);
      socket.emit("echo", "still here");
      const [echoed] = await once(socket, "echo");
      assert.equal(echoed, "still here");
    });
  });
}

describe("mixed clients", () => {
  test("a v4 client works on the same server, and reaches v2 clients in a room", async () => {
    const v2 = ioV2(server.url, { forceNew: true, reconnection: false });
    clients.push(v2);
    await once(v2, "connect", { rejectOn: ["error", "connect_error"] });
    const v4 = ioV4(server.url, { forceNew: true, reconnection: false });
    clients.push(v4);
    await once(v4, "connect", { rejectOn: ["connect_error"] });
    assert.notEqual(v4.id, v4.io.engine.id, "a v4 socket id is not the Engine.IO id");

    const room = unique("mixed");
    await new Promise((resolve) => v2.emit("join", room, resolve));
    const news = new Inbox(v2, "news");
    const n = await v4.emitWithAck("to-room", { room, event: "news", data: Buffer.from([5]) });
    assert.equal(n, 1);
    await news.waitFor(1);
    assert.deepEqual(bytes(news.firsts[0]), Buffer.from([5]));
  });

  test("without ALLOW_EIO3 the v2 client is refused", async () => {
    const strict = await startServer({ bin: exampleBin("test_server", "TIDINGS_TEST_SERVER_BIN") });
    try {
      const res = await fetch(`${strict.url}/socket.io/?EIO=3&transport=polling`);
      assert.equal(res.status, 400);
      assert.deepEqual(await res.json(), { code: 5, message: "Unsupported protocol version" });
      const v2 = ioV2(strict.url, { forceNew: true, reconnection: false, transports: ["polling"] });
      clients.push(v2);
      await once(v2, "connect_error", { rejectOn: ["connect"] });
    } finally {
      closeAll();
      await strict.stop();
    }
  });
});
