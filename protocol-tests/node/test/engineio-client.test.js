// The stock engine.io-client (v6) against the bare Engine.IO echo endpoint of examples/conformance
// (path /engine.io/, pingInterval 300 ms, pingTimeout 200 ms): handshake, heartbeat, text and binary
// echo, ordering, the polling → websocket upgrade, and a close from the client — over polling only,
// websocket only, and polling upgraded to websocket.
import { test, describe, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Socket } from "engine.io-client";
import { startServer, exampleBin } from "../lib/server.js";
import { httpRequest, eioPath } from "../lib/raw.js";
import { once, sleep, waitUntil, Inbox } from "../lib/wait.js";

const PATH = "/engine.io/";

let server;
const sockets = [];

before(async () => {
  server = await startServer({ bin: exampleBin("conformance", "TIDINGS_CONFORMANCE_BIN") });
});

after(async () => {
  for (const s of sockets.splice(0)) s.close();
  await server?.stop();
});

afterEach(() => {
  for (const s of sockets.splice(0)) s.close();
});

/** An open engine.io-client socket (rejects on error or after 5 s). */
async function open(transports, opts = {}) {
  const socket = new Socket(server.url, { path: PATH, transports, ...opts });
  sockets.push(socket);
  socket.messages = new Inbox(socket, "message");
  await once(socket, "open", { rejectOn: ["error", "close"] });
  return socket;
}

/** Resolves once the socket runs on websocket (right away when it already does). */
async function upgraded(socket) {
  if (socket.transport.name !== "websocket") {
    const [transport] = await once(socket, "upgrade", { rejectOn: ["upgradeError", "close"] });
    assert.equal(transport.name, "websocket");
  }
  assert.equal(socket.transport.name, "websocket");
}

/** Sends each message and waits for all of them to be echoed; returns what came back. */
async function echo(socket, messages) {
  const start = socket.messages.length;
  for (const m of messages) socket.send(m);
  await waitUntil(
    () => socket.messages.length >= start + messages.length,
    () => `${messages.length} echoes (got ${socket.messages.length - start})`,
  );
  return socket.messages.firsts.slice(start);
}

/** Bytes of a received binary message (a Buffer in Node; an ArrayBuffer would be accepted too). */
function bytes(m) {
  assert.ok(typeof m !== "string", `expected a binary message, got the string ${JSON.stringify(m)}`);
  return Buffer.from(m instanceof ArrayBuffer ? new Uint8Array(m) : m);
}

/** Long strings shortened to their length and hash, so that a failed comparison prints little. */
function short(list) {
  return list.map((m) =>
    typeof m === "string" && m.length > 200
      ? `<${m.length} chars, sha1 ${createHash("sha1").update(m).digest("hex")}>`
      : m,
  );
}

/** Whether the server still knows a session id: a POST with it answers 400 code 1 once it is gone. */
async function sessionGone(sid) {
  const res = await httpRequest(server.url, "POST", eioPath({ path: PATH, sid }), { body: "6" });
  return res.status === 400 && res.body.includes('"code":1');
}

const MODES = [
  { name: "polling only", transports: ["polling"], first: "polling", upgrades: false },
  { name: "websocket only", transports: ["websocket"], first: "websocket", upgrades: false },
  { name: "polling upgraded to websocket", transports: ["polling", "websocket"], first: "polling", upgrades: true },
];

for (const mode of MODES) {
  describe(`engine.io-client, ${mode.name}`, { timeout: 20_000 }, () => {
    test("opens with the server's handshake values on the expected transport", async () => {
      const socket = await open(mode.transports);
      assert.equal(typeof socket.id, "string");
      assert.ok(socket.id.length > 0);
      assert.equal(socket.transport.name, mode.first);
      // The client keeps the handshake's heartbeat values (private fields in v6).
      assert.equal(socket._pingInterval, 300);
      assert.equal(socket._pingTimeout, 200);
      assert.equal(socket._maxPayload, 1_000_000);
      // Upgrades offered on polling only, and filtered by the client's transports.
      assert.deepEqual(socket._upgrades, mode.upgrades ? ["websocket"] : []);
      if (mode.upgrades) await upgraded(socket);
      else {
        await sleep(100);
        assert.equal(socket.transport.name, mode.first, "no upgrade happens");
      }
    });

    test("stays open across several heartbeats (pings every 300 ms, timeout 200 ms)", async () => {
      const socket = await open(mode.transports);
      let pings = 0;
      socket.on("ping", () => pings++);
      let closed = null;
      socket.on("close", (reason) => (closed = reason));
      await sleep(1_500);
      assert.equal(closed, null, `closed: ${closed}`);
      assert.ok(pings >= 3, `only ${pings} pings in 1.5 s`);
      assert.equal(socket.readyState, "open");
      // And it still works.
      assert.deepEqual(await echo(socket, ["still here"]), ["still here"]);
    });

    test("text messages are echoed, in order", async () => {
      const socket = await open(mode.transports);
      const texts = ["hello", "héllo wörld €𝄞", "4", "{\"json\":true}", "x".repeat(100_000)];
      for (let i = 0; i < 50; i++) texts.push(`n${i}`);
      // (An empty message is left out: engine.io-parser decodes it as `undefined`, whatever the server.)
      assert.deepEqual(short(await echo(socket, texts)), short(texts));
      if (mode.upgrades) {
        await upgraded(socket);
        assert.deepEqual(await echo(socket, ["after upgrade", "2", "é"]), ["after upgrade", "2", "é"]);
      }
    });

    test("binary messages (Buffer and Uint8Array) are echoed as binary", async () => {
      const socket = await open(mode.transports);
      const buf = Buffer.from([0, 1, 2, 3, 254, 255]);
      const u8 = new Uint8Array([10, 20, 30, 0x1e, 0x34]);
      const big = Buffer.alloc(50_000, 7);
      const empty = Buffer.alloc(0);
      const got = await echo(socket, [buf, "text between", u8, big, empty]);
      assert.deepEqual(bytes(got[0]), buf);
      assert.equal(got[1], "text between");
      assert.deepEqual(bytes(got[2]), Buffer.from(u8));
      assert.deepEqual(bytes(got[3]), big);
      assert.deepEqual(bytes(got[4]), empty);
      if (mode.upgrades) {
        await upgraded(socket);
        const after = await echo(socket, [buf, u8]);
        assert.deepEqual(bytes(after[0]), buf);
        assert.deepEqual(bytes(after[1]), Buffer.from(u8));
      }
    });

    test("messages sent while connecting and upgrading are all echoed once, in order", async () => {
      const socket = new Socket(server.url, { path: PATH, transports: mode.transports });
      sockets.push(socket);
      socket.messages = new Inbox(socket, "message");
      const sent = [];
      // Queued before the handshake completes.
      for (let i = 0; i < 20; i++) {
        sent.push(`early-${i}`);
        socket.send(`early-${i}`);
      }
      await once(socket, "open", { rejectOn: ["error", "close"] });
      // Sent right after open: with an upgrade, these race the probe.
      for (let i = 0; i < 100; i++) {
        const m = i % 10 === 0 ? Buffer.from([i]) : `m-${i}`;
        sent.push(m);
        socket.send(m);
        if (i % 25 === 0) await sleep(5);
      }
      if (mode.upgrades) await upgraded(socket);
      await waitUntil(() => socket.messages.length >= sent.length, () => `${sent.length} echoes (got ${socket.messages.length})`);
      await sleep(100);
      const got = socket.messages.firsts.map((m) => (typeof m === "string" ? m : bytes(m)));
      assert.deepEqual(got, sent.map((m) => (typeof m === "string" ? m : Buffer.from(m))));
    });

    if (mode.upgrades) {
      test("the upgrade event comes with the websocket transport, and polling stops", async () => {
        const socket = new Socket(server.url, { path: PATH, transports: mode.transports });
        sockets.push(socket);
        const upgrading = once(socket, "upgrading", { rejectOn: ["upgradeError"] });
        const upgrade = once(socket, "upgrade", { rejectOn: ["upgradeError", "close"] });
        await once(socket, "open", { rejectOn: ["error", "close"] });
        assert.equal(socket.transport.name, "polling");
        const [probing] = await upgrading;
        assert.equal(probing.name, "websocket");
        const [transport] = await upgrade;
        assert.equal(transport.name, "websocket");
        assert.equal(socket.transport.name, "websocket");
        // The session has moved: the server now refuses polling for it (code 3 "Bad request"). The
        // client fires "upgrade" once it has sent the upgrade packet; the server moves the session
        // when it reads it, a moment later (meanwhile a GET gets a noop), so wait for that.
        const res = await waitUntil(async () => {
          const r = await httpRequest(server.url, "GET", eioPath({ path: PATH, sid: socket.id }));
          return r.status === 400 ? r : null;
        }, "polling to be refused once the upgrade is read");
        assert.deepEqual(JSON.parse(res.body), { code: 3, message: "Bad request" });
      });
    }

    test("a close from the client ends the session on the server", async () => {
      const socket = await open(mode.transports);
      if (mode.upgrades) await upgraded(socket);
      assert.deepEqual(await echo(socket, ["before close"]), ["before close"]);
      const sid = socket.id;
      assert.equal(await sessionGone(sid), false, "the session is known while open");
      const closed = once(socket, "close");
      socket.close();
      const [reason] = await closed;
      assert.equal(reason, "forced close");
      assert.equal(socket.readyState, "closed");
      await waitUntil(() => sessionGone(sid), "the server to forget the session");
      // A message sent after close goes nowhere and raises nothing.
      socket.send("after close");
      await sleep(50);
      assert.equal(socket.messages.length, 1);
    });
  });
}
