// Tidings mounted in an axum application (examples/axum.rs, `io.layer()` on a Router): the stock
// socket.io-client connects over polling, WebSocket and the upgrade, events and acks go both ways,
// and the router's own route still answers next to it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { io } from "socket.io-client";
import { startServer, exampleBin } from "../lib/server.js";
import { httpRequest } from "../lib/raw.js";

const BIN = exampleBin("axum", "TIDINGS_AXUM_BIN");

const MODES = [
  { name: "polling", transports: ["polling"], upgrades: false },
  { name: "websocket", transports: ["websocket"], upgrades: false },
  { name: "polling → websocket", transports: ["polling", "websocket"], upgrades: true },
];

test("axum app: Socket.IO through io.layer(), the router's routes beside it", { timeout: 60_000 }, async (t) => {
  const server = await startServer({ bin: BIN });
  t.after(() => server.stop());

  const index = await httpRequest(server.url, "GET", "/");
  assert.equal(index.status, 200);
  assert.match(index.body, /axum app/);
  const missing = await httpRequest(server.url, "GET", "/nowhere");
  assert.equal(missing.status, 404, "a path neither serves goes to the router's fallback");

  for (const mode of MODES) {
    await t.test(mode.name, async () => {
      const socket = io(server.url, { transports: mode.transports, forceNew: true, reconnection: false });
      let opened;
      const upgraded = new Promise((resolve, reject) => {
        socket.io.on("open", () => {
          opened = socket.io.engine.transport.name;
          socket.io.engine.on("upgrade", resolve);
          socket.io.engine.on("upgradeError", reject);
        });
      });
      try {
        const [greeting] = await once(socket, "hello", { rejectOn: ["connect_error"] });
        assert.equal(greeting, socket.id, "greeted with its own id");
        assert.equal(opened, mode.transports[0], "the session opened on the first transport");
        if (mode.upgrades) {
          const transport = await upgraded;
          assert.equal(transport.name, "websocket");
        }
        const echoed = once(socket, "echo");
        socket.emit("echo", "text", 42, Buffer.from([1, 2, 3]));
        const [text, number, binary] = await echoed;
        assert.equal(text, "text");
        assert.equal(number, 42);
        assert.deepEqual([...binary], [1, 2, 3]);
        const answer = await socket.timeout(5_000).emitWithAck("echo", { n: 1 });
        assert.deepEqual(answer, { n: 1 });
        if (mode.upgrades) assert.equal(socket.io.engine.transport.name, "websocket");
      } finally {
        socket.disconnect();
      }
    });
  }
});
