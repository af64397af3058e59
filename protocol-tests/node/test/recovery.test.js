// Connection state recovery with the stock socket.io-client (v4) against examples/test_server with
// RECOVERY_WINDOW_MS=2000: missed events replayed once and in order after a short cut, same id and
// rooms; a fresh session past the window or with a wrong pid/offset; and a seeded random run of
// emits and cuts for three clients, each of which must receive exactly what was sent to it.
//
// With recovery on, the client passes each event's offset to handlers as an extra last argument:
// handlers here look at the first argument only (and check that the offset is there).
import { test, describe, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { startServer, exampleBin } from "../lib/server.js";
import { once, sleep, waitUntil } from "../lib/wait.js";

const WINDOW_MS = 2_000;
const WAIT = 5_000;

let server;
let clients = [];

before(async () => {
  server = await startServer({
    bin: exampleBin("test_server", "TIDINGS_TEST_SERVER_BIN"),
    env: { RECOVERY_WINDOW_MS: String(WINDOW_MS), PING_INTERVAL_MS: "500", PING_TIMEOUT_MS: "500" },
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
const unique = (prefix) => `${prefix}-${process.pid}-${++counter}`;

const ask = (socket, ev, ...args) => socket.timeout(WAIT).emitWithAck(ev, ...args);

/**
 * A connected client that records every event but `welcome` as [event, firstArg] in `socket.log`,
 * and in `socket.offsetless` any that came without its offset (a string extra last argument).
 */
async function connect(transports, opts = {}) {
  const socket = io(server.url, {
    transports,
    forceNew: true,
    reconnectionDelay: 200,
    reconnectionDelayMax: 5_000,
    randomizationFactor: 0,
    ...opts,
  });
  clients.push(socket);
  socket.log = [];
  socket.offsetless = [];
  socket.connects = [];
  socket.on("connect", () => socket.connects.push({ id: socket.id, recovered: socket.recovered }));
  socket.onAny((event, ...args) => {
    if (event !== "welcome") socket.log.push([event, args[0]]);
    // Every event but volatile ones is stored, so it carries its offset (direct emits too).
    if (event !== "volatile" && typeof args[args.length - 1] !== "string") {
      socket.offsetless.push([event, ...args]);
    }
  });
  await once(socket, "connect", { rejectOn: ["connect_error"] });
  return socket;
}

/** Reasons the server recorded for socket id `id`, asked through `observer`. */
async function serverReasons(observer, id) {
  const all = await ask(observer, "disconnect-reasons");
  return all.filter((r) => r.id === id).map((r) => r.reason);
}

/** Cuts the client's transport and waits until the server has seen it go (one more reason for its id). */
async function cut(socket, observer) {
  const id = socket.id;
  const before = (await serverReasons(observer, id)).length;
  const disconnected = once(socket, "disconnect");
  socket.io.engine.close();
  await disconnected;
  let reasons = [];
  await waitUntil(
    async () => (reasons = await serverReasons(observer, id)).length > before,
    "the server to see the cut",
  );
  assert.equal(reasons.at(-1), "transport close");
}

/** Emits `event` with `data` to `room` through `via` (io.to(room).emit on the server); returns the count. */
const toRoom = (via, room, event, data, except) => ask(via, "to-room", { room, event, data, ...(except ? { except } : {}) });

for (const transports of [["websocket"], ["polling"], ["polling", "websocket"]]) {
  describe(`recovery over ${transports.join("+")}`, { timeout: 30_000 }, () => {
    test("a short cut: missed events arrive once, in order; same id, rooms kept", async () => {
      const pub = await connect(transports);
      const sub = await connect(transports, { reconnectionDelay: 300 });
      const [r1, r2, r3] = [unique("r1"), unique("r2"), unique("r3")];
      await ask(sub, "join", [r1, r2]);
      const id = sub.id;
      const pid = sub._pid;
      assert.equal(typeof pid, "string", "the CONNECT reply carries a pid when recovery is on");
      assert.equal(sub.recovered, false);

      assert.equal(await toRoom(pub, r1, "news", 1), 1);
      await waitUntil(() => sub.log.length === 1, "the first event");
      assert.equal(typeof sub._lastOffset, "string", "the client kept the event's offset");

      await cut(sub, pub);
      assert.equal(sub.connected, false);
      // While it is away: room emits, an emit to its own id, a multi-room emit to two of its rooms,
      // an emit to a room it is not in, a volatile broadcast (not kept), and an emit of its own
      // (buffered by the client until it is back).
      await toRoom(pub, r1, "news", 2);
      await toRoom(pub, r2, "news", 3);
      await toRoom(pub, id, "direct", 4);
      await ask(pub, "multi-room", { rooms: [r1, r2], event: "news", data: 5 });
      await toRoom(pub, r3, "news", "not joined");
      const volatileTag = unique("vol");
      pub.emit("volatile", volatileTag);
      await toRoom(pub, r2, "news", 6, r1); // except r1, which it is in: not for it
      sub.emit("echo", "sent while away");

      await once(sub, "connect", { timeout: WAIT });
      assert.equal(sub.recovered, true);
      assert.equal(sub.id, id);
      assert.equal(sub._pid, pid);
      await waitUntil(() => sub.log.length >= 6, () => `6 events (got ${JSON.stringify(sub.log)})`);
      await ask(sub, "echo-ack", "flush");
      assert.deepEqual(sub.log, [
        ["news", 1],
        ["news", 2],
        ["news", 3],
        ["direct", 4],
        ["news", 5],
        ["echo", "sent while away"],
      ]);
      assert.deepEqual(sub.offsetless, []);
      assert.deepEqual(await ask(sub, "rooms"), [id, r1, r2].sort());
      // The server sees it as recovered too, and it still gets what is sent to its rooms.
      const welcome = once(sub, "welcome");
      sub.io.engine.close();
      const [w] = await welcome;
      assert.deepEqual(w, { id, recovered: true });
      assert.equal(await toRoom(pub, r2, "news", 7), 1);
      await waitUntil(() => sub.log.some(([, v]) => v === 7), "an event after recovery");
      assert.equal(sub.log.filter(([, v]) => v === 7).length, 1);
      assert.deepEqual(sub.connects, [
        { id, recovered: false },
        { id, recovered: true },
        { id, recovered: true },
      ]);
    });

    test("past the window: a fresh session, nothing replayed", { timeout: 15_000 }, async () => {
      const pub = await connect(transports);
      // The client waits longer than the window before it tries again.
      const sub = await connect(transports, { reconnectionDelay: WINDOW_MS + 1_200, reconnectionDelayMax: WINDOW_MS + 1_200 });
      const room = unique("room");
      await ask(sub, "join", room);
      await toRoom(pub, room, "news", "before");
      await waitUntil(() => sub.log.length === 1, "the first event");
      const id = sub.id;
      const pid = sub._pid;

      await cut(sub, pub);
      await toRoom(pub, room, "news", "missed");
      await toRoom(pub, id, "direct", "missed too");
      const welcome = once(sub, "welcome", { timeout: WINDOW_MS + 5_000 });
      await once(sub, "connect", { timeout: WINDOW_MS + 5_000 });
      assert.ok(!sub.recovered);
      assert.notEqual(sub.id, id);
      assert.notEqual(sub._pid, pid);
      assert.deepEqual((await welcome)[0], { id: sub.id, recovered: false });
      assert.deepEqual(await ask(sub, "rooms"), [sub.id]);
      await ask(sub, "echo-ack", "flush");
      assert.deepEqual(sub.log, [["news", "before"]]);
      // Not in the old room any more.
      assert.equal(await toRoom(pub, room, "news", "after"), 0);
    });

    for (const [what, tamper] of [
      ["a wrong pid", (s) => (s._pid = "not-a-pid")],
      ["a wrong offset", (s) => (s._lastOffset = "not-an-offset")],
      // As if no event had come yet (here the `welcome` always comes with an offset).
      ["no offset", (s) => (s._lastOffset = undefined)],
    ]) {
      test(`${what}: a fresh session, nothing replayed`, async () => {
        const pub = await connect(transports);
        const sub = await connect(transports, { reconnectionDelay: 300 });
        const room = unique("room");
        await ask(sub, "join", room);
        await toRoom(pub, room, "news", "before");
        await waitUntil(() => sub.log.length === 1, "the first event");
        const id = sub.id;

        await cut(sub, pub);
        tamper(sub);
        await toRoom(pub, room, "news", "missed");
        await once(sub, "connect", { timeout: WAIT });
        assert.ok(!sub.recovered);
        assert.notEqual(sub.id, id);
        assert.deepEqual(await ask(sub, "rooms"), [sub.id]);
        await ask(sub, "echo-ack", "flush");
        assert.deepEqual(sub.log, [["news", "before"]]);
      });
    }
  });
}

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("recovery, random runs", { timeout: 120_000 }, () => {
  const SEEDS = (process.env.RECOVERY_SEEDS ?? "1,2").split(",").map(Number);
  const CASES = SEEDS.flatMap((seed) => [
    { seed, transports: ["websocket"] },
    { seed, transports: ["polling"] },
    { seed, transports: ["polling", "websocket"] },
  ]);
  for (const { seed, transports } of CASES) {
    test(`seed ${seed}, ${transports.join("+")}: every client gets exactly what was sent to it`, async () => {
      const rand = prng(seed);
      const pick = (list) => list[Math.floor(rand() * list.length)];
      const pub = await connect(transports);
      const N = 3;
      const subs = await Promise.all(Array.from({ length: N }, () => connect(transports)));
      const all = unique("all");
      const pairs = [unique("pair01"), unique("pair12")];
      const ids = subs.map((s) => s.id);
      // Rooms: `all` for everyone; pair01 for clients 0 and 1; pair12 for clients 1 and 2.
      await ask(subs[0], "join", [all, pairs[0]]);
      await ask(subs[1], "join", [all, pairs[0], pairs[1]]);
      await ask(subs[2], "join", [all, pairs[1]]);
      const members = new Map([
        [all, [0, 1, 2]],
        [pairs[0], [0, 1]],
        [pairs[1], [1, 2]],
        ...ids.map((id, i) => [id, [i]]),
      ]);
      const expected = subs.map(() => []);
      const trace = [];
      let seq = 0;
      const cuts = subs.map(() => 0);

      for (let step = 0; step < 60; step++) {
        const r = rand();
        if (r < 0.18) {
          const i = pick([0, 1, 2].filter((k) => subs[k].connected));
          if (i !== undefined) {
            // Away for 50..900 ms, well inside the 2 s window (reconnecting adds a few ms).
            const away = 50 + Math.floor(rand() * 850);
            subs[i].io.reconnectionDelay(away);
            trace.push(`cut ${i} for ${away} ms`);
            cuts[i]++;
            subs[i].io.engine.close();
          }
        } else {
          const room = pick([all, all, ...pairs, ...ids]);
          const data = ++seq;
          trace.push(`emit ${data} to ${room}`);
          for (const i of members.get(room)) expected[i].push(data);
          await toRoom(pub, room, "seq", data);
        }
        await sleep(Math.floor(rand() * 40));
      }

      // Everyone back; then a last marker to each, after which nothing more is coming.
      const detail = () => `seed ${seed}; trace: ${trace.join(", ")}`;
      await waitUntil(() => subs.every((s) => s.connected), () => `every client back (${detail()})`, WAIT);
      for (const [i, id] of ids.entries()) {
        await toRoom(pub, id, "end", i);
      }
      await waitUntil(
        () => subs.every((s) => s.log.some(([ev]) => ev === "end")),
        () => `every end marker (${detail()})`,
        WAIT,
      );
      for (const [i, s] of subs.entries()) {
        const got = s.log.filter(([ev]) => ev === "seq").map(([, v]) => v);
        assert.deepEqual(got, expected[i], `client ${i}: ${detail()}`);
        assert.equal(s.id, ids[i]);
        assert.deepEqual(s.offsetless, []);
        // One connect per cut, each a recovery.
        assert.equal(s.connects.length, 1 + cuts[i], detail());
        assert.ok(s.connects.slice(1).every((c) => c.recovered === true && c.id === ids[i]), `${JSON.stringify(s.connects)} ${detail()}`);
      }
      assert.ok(cuts.reduce((a, b) => a + b) >= 3, `only ${cuts} cuts: pick another seed`);
    });
  }
});
