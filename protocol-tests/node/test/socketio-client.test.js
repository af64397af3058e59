// The stock socket.io-client (v4) against examples/test_server (see its doc comment for the events),
// over ["polling"], ["websocket"] and ["polling", "websocket"] (upgrade): auth, namespaces, events and
// acks both ways, binary, rooms, broadcasts, broadcast acks, disconnect reasons on both sides; then
// 1 000 connections that each emit from their `connect` handler.
import { test, describe, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { io, Manager } from "socket.io-client";
import { startServer, exampleBin } from "../lib/server.js";
import { once, sleep, waitUntil, withTimeout, Inbox } from "../lib/wait.js";

const WAIT = 5_000;
const TIMEOUT_MSG = "operation has timed out";

let server;
/** Every client made by a test, closed after it. */
let clients = [];

before(async () => {
  server = await startServer({ bin: exampleBin("test_server", "TIDINGS_TEST_SERVER_BIN") });
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
/** A name no other test uses (rooms, events). */
const unique = (prefix) => `${prefix}-${process.pid}-${++counter}`;

/** JSON-ish key, for order-insensitive comparisons. */
const key = (v) => JSON.stringify(v);
const sorted = (list) => [...list].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));

const MODES = [
  { name: "polling", transports: ["polling"], first: "polling", upgrades: false },
  { name: "websocket", transports: ["websocket"], first: "websocket", upgrades: false },
  { name: "polling → websocket", transports: ["polling", "websocket"], first: "polling", upgrades: true },
];

for (const mode of MODES) {
  /** A client socket of this mode (not yet connected); own Manager, no reconnection unless asked. */
  const client = (opts = {}, nsp = "/") => {
    const socket = io(`${server.url}${nsp}`, {
      transports: mode.transports,
      forceNew: true,
      reconnection: false,
      ...opts,
    });
    clients.push(socket);
    return socket;
  };

  /** A connected client socket (rejects with the connect_error, or after 5 s). */
  const connect = async (opts = {}, nsp = "/") => {
    const socket = client(opts, nsp);
    await once(socket, "connect", { rejectOn: ["connect_error"] });
    return socket;
  };

  /** `n` connected clients, each with an inbox per event name in `events`. */
  const connectMany = async (n, events = []) => {
    const list = await Promise.all(Array.from({ length: n }, () => connect()));
    for (const s of list) {
      s.inbox = {};
      for (const ev of events) s.inbox[ev] = new Inbox(s, ev);
    }
    return list;
  };

  /** The connect_error a client gets. */
  const connectError = async (opts, nsp) => {
    const socket = client(opts, nsp);
    const [err] = await once(socket, "connect_error", { rejectOn: ["connect"] });
    return err;
  };

  /** emitWithAck bounded by WAIT. */
  const ask = (socket, ev, ...args) => socket.timeout(WAIT).emitWithAck(ev, ...args);

  /** Every value of the ack answer (emitWithAck keeps only the first). */
  const askAll = (socket, ev, ...args) =>
    new Promise((resolve, reject) => {
      socket.timeout(WAIT).emit(ev, ...args, (err, ...answer) => (err ? reject(err) : resolve(answer)));
    });

  /**
   * A round trip through the server: whatever the server queued for this socket before answering
   * has arrived once it resolves (the server keeps each connection's packets in order).
   */
  const flush = (socket) => ask(socket, "echo-ack", "flush");

  describe(`socket.io-client over ${mode.name}`, { timeout: 30_000 }, () => {
    test("connects: welcome carries its id, the handshake ack shows auth, query and request", async () => {
      const auth = { token: "abc", n: 1, nested: { list: [1, "two", null] } };
      const socket = client({ auth, query: { room: "lobby", n: "7" }, extraHeaders: { "x-test": "yes" } });
      const welcome = once(socket, "welcome");
      await once(socket, "connect", { rejectOn: ["connect_error"] });
      assert.equal(typeof socket.id, "string");
      assert.notEqual(socket.id, socket.io.engine.id, "the socket id is not the Engine.IO id");
      assert.deepEqual((await welcome)[0], { id: socket.id, recovered: false });
      // (The client leaves `recovered` undefined when the server sends no pid, recovery being off.)
      assert.ok(!socket.recovered);

      const hs = await ask(socket, "handshake");
      assert.deepEqual(hs.auth, auth);
      assert.equal(hs.query.room, "lobby");
      assert.equal(hs.query.n, "7");
      assert.equal(hs.query.EIO, "4");
      assert.equal(hs.query.transport, mode.first);
      assert.equal(hs.address, "127.0.0.1");
      assert.equal(hs.headers.host, `127.0.0.1:${server.port}`);
      // extraHeaders are sent by the Node client on polling and websocket alike.
      assert.equal(hs.headers["x-test"], "yes");
      assert.equal(typeof hs.issued, "number");
      assert.ok(Math.abs(hs.issued - Date.now()) < 60_000, `issued ${hs.issued}`);
      // The reference's shape: `time` is the Date string of the same instant (whole seconds).
      assert.equal(typeof hs.time, "string");
      assert.equal(Date.parse(hs.time), Math.floor(hs.issued / 1000) * 1000, `time ${hs.time}`);
      assert.match(hs.url, /^\/socket\.io\/\?/);
      assert.equal(hs.secure, false);
      assert.equal(hs.xdomain, false);

      if (mode.upgrades) {
        if (socket.io.engine.transport.name !== "websocket") {
          const [t] = await once(socket.io.engine, "upgrade", { rejectOn: ["upgradeError"] });
          assert.equal(t.name, "websocket");
        }
        assert.equal(socket.io.engine.transport.name, "websocket");
        // The socket carries on over the new transport.
        assert.deepEqual((await ask(socket, "handshake")).auth, auth);
      } else {
        await flush(socket);
        assert.equal(socket.io.engine.transport.name, mode.first);
      }
    });

    test("namespaces: /admin with the token, refused without; unknown refused; dynamic /dyn-*", async () => {
      // One Manager, several namespaces multiplexed on one Engine.IO connection.
      const manager = new Manager(server.url, { transports: mode.transports, reconnection: false });
      clients.push({ close: () => manager._close() });
      const root = manager.socket("/");
      const admin = manager.socket("/admin", { auth: { token: "secret" } });
      const dyn = manager.socket("/dyn-abc");
      const adminWelcome = once(admin, "admin-welcome");
      const hello = once(dyn, "hello");
      await Promise.all(
        [root, admin, dyn].map((s) => once(s, "connect", { rejectOn: ["connect_error"] })),
      );
      assert.deepEqual((await adminWelcome)[0], { id: admin.id });
      assert.deepEqual((await hello)[0], { nsp: "/dyn-abc" });
      assert.equal(new Set([root.id, admin.id, dyn.id]).size, 3, "one socket id per namespace");

      // Events stay in their namespace.
      const adminEcho = new Inbox(admin, "echo");
      const rootEcho = new Inbox(root, "echo");
      admin.emit("echo", "to admin");
      assert.deepEqual(await adminEcho.waitFor(1), ["to admin"]);
      await flush(root);
      assert.equal(rootEcho.length, 0);

      // A refused namespace on the same connection leaves the others working.
      const nope = manager.socket("/nope");
      const [err] = await once(nope, "connect_error", { rejectOn: ["connect"] });
      assert.equal(err.message, "Invalid namespace");
      assert.equal(await ask(root, "add", 2, 3), 5);
      assert.deepEqual(await ask(root, "echo-ack", "still"), "still");

      // The middleware's error, with its data; no auth and a wrong token alike.
      for (const auth of [{ token: "wrong" }, undefined]) {
        const err = await connectError(auth ? { auth } : {}, "/admin");
        assert.equal(err.message, "unauthorized");
        assert.deepEqual(err.data, { reason: "bad token" });
      }
      // An unknown namespace on its own connection.
      const unknown = await connectError({}, "/does-not-exist");
      assert.equal(unknown.message, "Invalid namespace");
      // Another dynamic namespace, on its own connection.
      const other = client({}, "/dyn-xyz");
      const [h] = await once(other, "hello", { rejectOn: ["connect_error"] });
      assert.deepEqual(h, { nsp: "/dyn-xyz" });
      manager._close();
    });

    test("events and acks, client to server", async () => {
      const socket = await connect();
      const echoes = new Inbox(socket, "echo");
      socket.emit("echo", 1, "two", { three: [3, { four: 4 }] }, null, true, 1.5, "ünïcødé 𝄞");
      await echoes.waitFor(1);
      assert.deepEqual(echoes.calls[0], [1, "two", { three: [3, { four: 4 }] }, null, true, 1.5, "ünïcødé 𝄞"]);
      // An event with no argument at all.
      socket.emit("echo");
      await echoes.waitFor(2);
      assert.deepEqual(echoes.calls[1], []);

      assert.deepEqual(await askAll(socket, "echo-ack", "a", { b: [2] }, 3), ["a", { b: [2] }, 3]);
      assert.deepEqual(await askAll(socket, "echo-ack"), []);
      assert.equal(await ask(socket, "add", 2, 3), 5);
      assert.equal(await ask(socket, "add", -10, 4), -6);
      const bad = await ask(socket, "add", "x", 1);
      assert.equal(typeof bad.error, "string", JSON.stringify(bad));

      // Many acks in flight at once each get their own answer.
      const sums = await Promise.all(Array.from({ length: 50 }, (_, i) => ask(socket, "add", i, 1000)));
      assert.deepEqual(sums, Array.from({ length: 50 }, (_, i) => i + 1000));

      // The callback style with timeout(): no error, the answer.
      const viaCallback = await new Promise((resolve) =>
        socket.timeout(WAIT).emit("add", 20, 22, (err, sum) => resolve({ err, sum })),
      );
      assert.deepEqual(viaCallback, { err: null, sum: 42 });
    });

    test("client-side ack timeout when the server does not answer", async () => {
      const socket = await connect();
      const started = Date.now();
      // `echo` has a handler that never acks; `nobody-home` has no handler at all.
      await assert.rejects(socket.timeout(200).emitWithAck("echo", "no ack"), { message: TIMEOUT_MSG });
      await assert.rejects(socket.timeout(200).emitWithAck("nobody-home", 1), { message: TIMEOUT_MSG });
      const err = await new Promise((resolve) => socket.timeout(150).emit("echo", "cb", (e) => resolve(e)));
      assert.ok(err instanceof Error);
      assert.equal(err.message, TIMEOUT_MSG);
      assert.ok(Date.now() - started >= 500);
      // The socket is still fine afterwards.
      assert.equal(await ask(socket, "add", 1, 1), 2);
    });

    test("events and acks, server to client: answered, and not answered in time", async () => {
      const socket = await connect();
      socket.on("question", (data, extra, cb) => {
        if (typeof extra === "function") cb = extra; // (data, cb) when the server sends one argument
        cb({ got: data }, "second");
      });
      socket.on("silent", () => {});

      const answered = await ask(socket, "server-ack", { event: "question", data: { q: [1, 2] }, timeout_ms: 3_000 });
      assert.deepEqual(answered, { ok: true, answer: [{ got: { q: [1, 2] } }, "second"] });

      // The client never calls the ack (a handler that ignores it, and no handler at all).
      for (const event of ["silent", unique("no-handler")]) {
        const started = Date.now();
        const report = await ask(socket, "server-ack", { event, data: 1, timeout_ms: 200 });
        assert.deepEqual(report, { ok: false, error: TIMEOUT_MSG });
        assert.ok(Date.now() - started >= 190, `answered after ${Date.now() - started} ms`);
      }

      // Several server-side acks in flight at once.
      const reports = await Promise.all(
        Array.from({ length: 10 }, (_, i) => ask(socket, "server-ack", { event: "question", data: i, timeout_ms: 3_000 })),
      );
      assert.deepEqual(reports.map((r) => r.answer[0].got), Array.from({ length: 10 }, (_, i) => i));
    });

    test("binary: Buffers nested in objects and arrays are echoed back equal", async () => {
      const socket = await connect();
      const payload = {
        name: "bin",
        a: Buffer.from([1, 2, 3]),
        list: [Buffer.from("xyz"), { b: new Uint8Array([9, 8, 0x1e, 0]) }, 42, [Buffer.alloc(1000, 0xab)]],
        empty: Buffer.alloc(0),
        placeholderLookalike: { _placeholder: false, num: 3 },
      };
      // What comes back: every Uint8Array as a Buffer.
      const expected = {
        ...payload,
        list: [Buffer.from("xyz"), { b: Buffer.from([9, 8, 0x1e, 0]) }, 42, [Buffer.alloc(1000, 0xab)]],
      };
      const echoes = new Inbox(socket, "echo");
      socket.emit("echo", payload, Buffer.from([0xff, 0x00]), "text");
      await echoes.waitFor(1);
      assert.deepEqual(echoes.calls[0], [expected, Buffer.from([0xff, 0x00]), "text"]);
      assert.ok(Buffer.isBuffer(echoes.calls[0][0].a));

      // Binary in an ack, both ways round: client → server event, server → client binary ack.
      assert.deepEqual(await askAll(socket, "echo-ack", [Buffer.from([7]), { x: Buffer.from([8, 9]) }]), [
        [Buffer.from([7]), { x: Buffer.from([8, 9]) }],
      ]);
      // Binary and text events interleaved keep their order.
      for (let i = 0; i < 20; i++) socket.emit("echo", i % 2 ? Buffer.from([i]) : i);
      await echoes.waitFor(21);
      assert.deepEqual(
        echoes.calls.slice(1).map(([v]) => (Buffer.isBuffer(v) ? `buf${v[0]}` : v)),
        Array.from({ length: 20 }, (_, i) => (i % 2 ? `buf${i}` : i)),
      );
    });

    test("rooms: members get the room's emits, others never do; leave stops them", async () => {
      const [a, b, c] = await connectMany(3, ["news"]);
      const room = unique("room");
      const other = unique("other");
      assert.equal(await ask(a, "join", room), true);
      assert.equal(await ask(b, "join", [room, other]), true);
      assert.deepEqual(await ask(a, "rooms"), [a.id, room].sort());
      assert.deepEqual(await ask(b, "rooms"), [b.id, other, room].sort());
      assert.deepEqual(await ask(c, "rooms"), [c.id]);

      assert.equal(await ask(c, "to-room", { room, event: "news", data: { n: 1 } }), 2);
      assert.deepEqual(await a.inbox.news.waitFor(1), [{ n: 1 }]);
      assert.deepEqual(await b.inbox.news.waitFor(1), [{ n: 1 }]);
      await flush(c);
      assert.equal(c.inbox.news.length, 0, "a client not in the room got its emit");

      // A room nobody is in reaches nobody.
      assert.equal(await ask(c, "to-room", { room: unique("empty"), event: "news", data: 0 }), 0);

      assert.equal(await ask(b, "leave", room), true);
      assert.deepEqual(await ask(b, "rooms"), [b.id, other].sort());
      assert.equal(await ask(c, "to-room", { room, event: "news", data: { n: 2 } }), 1);
      assert.deepEqual(await a.inbox.news.waitFor(2), [{ n: 1 }, { n: 2 }]);
      await Promise.all([flush(b), flush(c), flush(a)]);
      assert.deepEqual(a.inbox.news.firsts, [{ n: 1 }, { n: 2 }]);
      assert.deepEqual(b.inbox.news.firsts, [{ n: 1 }]);
      assert.equal(c.inbox.news.length, 0);

      // Each socket is in the room of its own id: an emit to it reaches it alone.
      assert.equal(await ask(c, "to-room", { room: b.id, event: "news", data: "direct" }), 1);
      assert.deepEqual(await b.inbox.news.waitFor(2), [{ n: 1 }, "direct"]);
      await Promise.all([flush(a), flush(c)]);
      assert.equal(a.inbox.news.length, 2);
      assert.equal(c.inbox.news.length, 0);
    });

    test("to-room with except skips the members of the excepted room", async () => {
      const [a, b, c, d] = await connectMany(4, ["news"]);
      const room = unique("room");
      const vip = unique("vip");
      await ask(a, "join", room);
      await ask(b, "join", [room, vip]);
      await ask(c, "join", vip);
      assert.equal(await ask(d, "to-room", { room, except: vip, event: "news", data: "not for vips" }), 1);
      assert.deepEqual(await a.inbox.news.waitFor(1), ["not for vips"]);
      await Promise.all([b, c, d].map(flush));
      assert.equal(b.inbox.news.length, 0, "in the room but also in the excepted room");
      assert.equal(c.inbox.news.length, 0);
      assert.equal(d.inbox.news.length, 0);
      // Excepting a socket's own id room excepts that socket.
      assert.equal(await ask(d, "to-room", { room, except: a.id, event: "news", data: "not for a" }), 1);
      assert.deepEqual(await b.inbox.news.waitFor(1), ["not for a"]);
      await flush(a);
      assert.deepEqual(a.inbox.news.firsts, ["not for vips"]);
    });

    test("an emit to several rooms reaches a client in two of them once", async () => {
      const [a, b, c, d] = await connectMany(4, ["multi"]);
      const r1 = unique("r1");
      const r2 = unique("r2");
      await ask(a, "join", [r1, r2]);
      await ask(b, "join", r1);
      await ask(c, "join", r2);
      assert.equal(await ask(d, "multi-room", { rooms: [r1, r2], event: "multi", data: { once: true } }), 3);
      for (const s of [a, b, c]) assert.deepEqual(await s.inbox.multi.waitFor(1), [{ once: true }]);
      await Promise.all([a, b, c, d].map(flush));
      assert.equal(a.inbox.multi.length, 1, "a client in two of the rooms got the emit twice");
      assert.equal(b.inbox.multi.length, 1);
      assert.equal(c.inbox.multi.length, 1);
      assert.equal(d.inbox.multi.length, 0);
    });

    test("socket.to(room) from a member reaches the other members, not the sender", async () => {
      const [a, b, c, d] = await connectMany(4, ["chat"]);
      const room = unique("room");
      for (const s of [a, b, c]) await ask(s, "join", room);
      assert.equal(await ask(a, "socket-to-room", { room, event: "chat", data: "from a" }), 2);
      assert.deepEqual(await b.inbox.chat.waitFor(1), ["from a"]);
      assert.deepEqual(await c.inbox.chat.waitFor(1), ["from a"]);
      await Promise.all([a, d].map(flush));
      assert.equal(a.inbox.chat.length, 0, "the sender got its own emit");
      assert.equal(d.inbox.chat.length, 0);
    });

    test("broadcast reaches every other client, not the sender", async () => {
      const [a, b, c] = await connectMany(3, ["broadcast"]);
      const tag = unique("bc");
      const n = await ask(a, "broadcast", tag, { n: 1 });
      assert.ok(n >= 2, `broadcast reached ${n} sockets`);
      for (const s of [b, c]) {
        await waitUntil(() => s.inbox.broadcast.calls.some((args) => args[0] === tag), `broadcast on ${s.id}`);
        assert.deepEqual(s.inbox.broadcast.calls.filter((args) => args[0] === tag), [[tag, { n: 1 }]]);
      }
      await flush(a);
      assert.equal(a.inbox.broadcast.calls.filter((args) => args[0] === tag).length, 0);
    });

    test("a connected client receives a volatile emit", async () => {
      const [a, b] = await connectMany(2, ["volatile"]);
      const tag = unique("vol");
      a.emit("volatile", tag, [1, 2]);
      for (const s of [a, b]) {
        await waitUntil(() => s.inbox.volatile.calls.some((args) => args[0] === tag), `volatile on ${s.id}`);
        assert.deepEqual(s.inbox.volatile.calls.filter((args) => args[0] === tag), [[tag, [1, 2]]]);
      }
    });

    test("broadcast with acks: complete when every member answers, partial on timeout", async () => {
      const [a, b, c, d, asker] = await connectMany(5);
      const room = unique("acks");
      const names = new Map([
        [a, "a"],
        [b, "b"],
        [c, "c"],
        [d, "d"],
      ]);
      for (const [s, name] of names) {
        s.on("poll", (data, cb) => cb({ from: name, data }));
        s.on("poll-some", (data, cb) => {
          if (name !== "c") cb({ from: name, data });
        });
      }
      for (const s of [a, b, c]) await ask(s, "join", room);

      const started = Date.now();
      const full = await ask(asker, "broadcast-with-ack", { room, event: "poll", data: { q: 1 }, timeout_ms: 3_000 });
      assert.equal(full.complete, true);
      assert.deepEqual(sorted(full.answers), sorted(["a", "b", "c"].map((from) => ({ from, data: { q: 1 } }))));
      assert.ok(Date.now() - started < 2_500, "a complete broadcast ack does not wait for the timeout");

      const partial = await ask(asker, "broadcast-with-ack", { room, event: "poll-some", data: 2, timeout_ms: 300 });
      assert.equal(partial.complete, false);
      assert.deepEqual(sorted(partial.answers), sorted(["a", "b"].map((from) => ({ from, data: 2 }))));

      // A room with nobody in it: complete at once, no answer.
      const none = await ask(asker, "broadcast-with-ack", { room: unique("nobody"), event: "poll", data: 0, timeout_ms: 3_000 });
      assert.deepEqual(none, { complete: true, answers: [] });
    });

    test("disconnect reasons seen by the client", async () => {
      const [kicked, leaving, closed] = await connectMany(3);

      // The server disconnects the socket: no reconnection follows.
      const kick = once(kicked, "disconnect");
      kicked.emit("disconnect-me");
      assert.deepEqual((await kick)[0], "io server disconnect");
      assert.equal(kicked.connected, false);
      assert.equal(kicked.active, false);

      // The client disconnects.
      const leave = once(leaving, "disconnect");
      leaving.disconnect();
      assert.equal((await leave)[0], "io client disconnect");

      // The server closes the whole connection (socket.disconnect(true)): the reference sends the
      // DISCONNECT packet before closing, so the client sees a server disconnect.
      const close = once(closed, "disconnect");
      closed.emit("close-me");
      assert.equal((await close)[0], "io server disconnect");
      await waitUntil(() => closed.io.engine?.readyState !== "open", "the Engine.IO connection to close");
    });

    test("a client whose connection the server closes does not reconnect", async () => {
      const socket = await connect({ reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 50 });
      let attempts = 0;
      socket.io.on("reconnect_attempt", () => attempts++);
      const close = once(socket, "disconnect");
      socket.emit("close-me");
      assert.equal((await close)[0], "io server disconnect");
      await sleep(300);
      assert.equal(attempts, 0);
      assert.equal(socket.connected, false);
    });

    test("disconnect reasons seen by the server", async () => {
      const [observer, leaving, kicked, dropped, closed] = await connectMany(5);
      const ids = { leaving: leaving.id, kicked: kicked.id, dropped: dropped.id, closed: closed.id };

      leaving.disconnect();
      kicked.emit("disconnect-me");
      dropped.io.engine.close(); // the transport goes away under the socket
      closed.emit("close-me");

      const want = {
        leaving: "client namespace disconnect",
        kicked: "server namespace disconnect",
        dropped: "transport close",
        closed: "server namespace disconnect",
      };
      let reasons = [];
      const reasonOf = (id) => reasons.filter((r) => r.id === id).map((r) => r.reason);
      await waitUntil(
        async () => {
          reasons = await ask(observer, "disconnect-reasons");
          return Object.values(ids).every((id) => reasonOf(id).length > 0);
        },
        () => `every reason (got ${JSON.stringify(Object.keys(ids).map((k) => [k, reasonOf(ids[k])]))})`,
      );
      for (const [name, id] of Object.entries(ids)) {
        assert.deepEqual(reasonOf(id), [want[name]], `${name}: ${JSON.stringify(reasonOf(id))}`);
      }
      assert.deepEqual(reasonOf(observer.id), []);
    });
  });
}

describe("connect race", { timeout: 60_000 }, () => {
  test("1 000 websocket connections, each emitting from its connect handler, all get their answer", async () => {
    const TOTAL = 1_000;
    const BATCH = 50;
    const answers = new Map();
    const errors = [];
    const sockets = [];
    try {
      for (let start = 0; start < TOTAL; start += BATCH) {
        const batch = [];
        for (let i = start; i < Math.min(TOTAL, start + BATCH); i++) {
          const socket = io(server.url, { transports: ["websocket"], forceNew: true, reconnection: false });
          sockets.push(socket);
          batch.push(
            new Promise((resolve) => {
              socket.on("connect_error", (err) => {
                errors.push(`${i}: connect_error ${err.message}`);
                resolve();
              });
              socket.on("connect", () => {
                socket.timeout(10_000).emit("echo-ack", i, { i }, (err, n, obj) => {
                  if (err) errors.push(`${i}: ${err.message}`);
                  else answers.set(i, [n, obj]);
                  resolve();
                });
              });
            }),
          );
        }
        await withTimeout(Promise.all(batch), `batch ${start / BATCH}`, 15_000);
      }
      assert.deepEqual(errors, []);
      assert.equal(answers.size, TOTAL);
      for (const [i, [n, obj]] of answers) {
        assert.equal(n, i);
        assert.deepEqual(obj, { i });
      }
    } finally {
      for (const s of sockets) s.close();
    }
  });
});
