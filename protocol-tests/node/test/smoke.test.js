// Smoke test: the server binary starts, prints its listening line, answers an Engine.IO
// polling handshake and a WebSocket handshake, and stops on SIGTERM. The binary is $TIDINGS_BIN
// (with $TIDINGS_PATH, default /socket.io/) or else examples/conformance.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, serverBin, exampleBin } from "../lib/server.js";
import { httpRequest, eioPath, RawWebSocket } from "../lib/raw.js";

const BIN = serverBin() ?? exampleBin("conformance", "TIDINGS_CONFORMANCE_BIN");
const PATH = process.env.TIDINGS_PATH || "/socket.io/";

test("server starts and answers Engine.IO handshakes", { timeout: 30_000 }, async (t) => {
  const server = await startServer({ bin: BIN });
  t.after(() => server.stop());

  const res = await httpRequest(server.url, "GET", eioPath({ path: PATH }));
  assert.equal(res.error, undefined, `polling handshake failed: ${res.error}`);
  assert.equal(res.status, 200);
  assert.match(res.headers["content-type"] ?? "", /^text\/plain/);
  assert.ok(res.body.startsWith("0"), `handshake body: ${res.body}`);
  const hs = JSON.parse(res.body.slice(1));
  assert.equal(typeof hs.sid, "string");
  assert.deepEqual(hs.upgrades, ["websocket"]);

  const ws = await RawWebSocket.open(`${server.wsUrl}${eioPath({ path: PATH, transport: "websocket" })}`);
  const open = await ws.next();
  assert.ok(open.startsWith("0"), `ws handshake: ${open}`);
  assert.deepEqual(JSON.parse(open.slice(1)).upgrades, []);
  await ws.close();

  // SIGTERM is a graceful shutdown: the server closes its sessions and exits 0 by itself (stop()
  // would SIGKILL it after 5 s, which shows here as the signal).
  const { code, signal } = await server.stop();
  assert.equal(signal, null, "exited by itself, not killed");
  assert.equal(code, 0, "graceful shutdown exits 0");
});
