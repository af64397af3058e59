// The Socket.IO Admin UI (the unmodified `@socket.io/admin-ui` npm package) against the tidings
// binary, in headless Chromium driven by playwright-core. Tidings serves the UI's files at
// /admin-ui/; stock socket.io-client clients join rooms; the UI must refuse a wrong password, log in
// with the right one, list the clients and their rooms, show their live events, disconnect a client
// from its detail page (the client gets "io server disconnect"), and log in again after a reload
// with the session id it was given. A screenshot is kept in
// protocol-tests/browser/artifacts/.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { hostname } from "node:os";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import bcrypt from "bcryptjs";
import { chromium } from "playwright-core";
import { io } from "socket.io-client";
import { startServer } from "../node/lib/server.js";

const BIN = process.env.TIDINGS_ANALYTICS_BIN;
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const skip = BIN ? false : "TIDINGS_ANALYTICS_BIN is not set";
const HERE = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(HERE, "artifacts");
const UI_DIR = join(dirname(createRequire(import.meta.url).resolve("@socket.io/admin-ui/package.json")), "ui", "dist");
const USERNAME = "admin";
const PASSWORD = "browser-test-password";

const clients = [];
let browser;
let server;
after(async () => {
  for (const c of clients) c.disconnect();
  if (browser) await browser.close();
  if (server) await server.stop();
});

/** A stock client on the main namespace that joined `org`'s analytics rooms. */
async function joinedClient(url, org) {
  const socket = io(url, { transports: ["websocket"], reconnection: false, forceNew: true });
  clients.push(socket);
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  const reply = await socket.timeout(5000).emitWithAck("join:analytics", { organizationId: org });
  assert.equal(reply.ok, true, JSON.stringify(reply));
  return socket;
}

/** The connection form: fill it and submit. */
async function logIn(page, url, password) {
  await page.getByLabel("Server URL").fill(url);
  await page.getByLabel("Username").fill(USERNAME);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Connect" }).click();
}

test("the Admin UI logs in, lists sockets and rooms, and disconnects a client", { skip, timeout: 90_000 }, async () => {
  server = await startServer({
    bin: BIN,
    args: [
      "--port", "0",
      "--admin-ui-username", USERNAME,
      "--admin-ui-password-hash", bcrypt.hashSync(PASSWORD, 4),
      "--admin-ui-static", UI_DIR,
    ],
    env: { TIDINGS_DEMO: "false", RUST_LOG: "warn" },
  });
  const acme = await joinedClient(server.url, "acme");
  const globex = await joinedClient(server.url, "globex");

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  // index.html links web fonts and icons from CDNs; there is no internet here, and the page needs
  // none of it: everything not on the test server is refused at once.
  await page.route("**/*", (route) =>
    new URL(route.request().url()).hostname === "127.0.0.1" ? route.continue() : route.abort(),
  );
  await page.goto(`${server.url}/admin-ui/`);

  // A wrong password is refused with the UI's own message.
  await logIn(page, server.url, "not-the-password");
  await page.getByText("Invalid credentials").waitFor({ timeout: 10_000 });

  // The right one logs in: the connection dialog goes away.
  await logIn(page, server.url, PASSWORD);
  await page.getByLabel("Password").waitFor({ state: "hidden", timeout: 10_000 });

  // server_stats arrive: the servers page lists this server (id and host name: the host name).
  await page.goto(`${server.url}/admin-ui/#/servers/`);
  await page.getByRole("cell", { name: hostname(), exact: true }).first().waitFor({ timeout: 10_000 });

  // The sockets page lists both clients.
  await page.goto(`${server.url}/admin-ui/#/sockets/`);
  for (const c of [acme, globex]) {
    await page.getByRole("cell", { name: c.id, exact: true }).waitFor({ timeout: 10_000 });
  }

  // The rooms page lists their rooms.
  await page.goto(`${server.url}/admin-ui/#/rooms/`);
  for (const room of ["org:acme", "org:globex"]) {
    await page.getByRole("cell", { name: room, exact: true }).waitFor({ timeout: 10_000 });
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "admin-ui-rooms.png"), fullPage: true });

  // Live events: acme's `ping` and the service's `pong` answer show on the events page.
  acme.emit("ping");
  await page.goto(`${server.url}/admin-ui/#/events/`);
  for (const name of ["ping", "pong"]) {
    await page.locator("code", { hasText: new RegExp(`^${name}$`) }).first().waitFor({ timeout: 10_000 });
  }
  await page.screenshot({ path: join(ARTIFACTS, "admin-ui-events.png"), fullPage: true });

  // From the sockets page, open acme's socket and disconnect it.
  await page.goto(`${server.url}/admin-ui/#/sockets/`);
  await page.getByRole("cell", { name: acme.id, exact: true }).click();
  await page.waitForURL((u) => u.hash.includes(`/sockets/${acme.id}`), { timeout: 10_000 });
  await page.screenshot({ path: join(ARTIFACTS, "admin-ui-socket.png"), fullPage: true });
  const acmeId = acme.id; // the client forgets its id once disconnected
  const reason = new Promise((resolve) => acme.once("disconnect", resolve));
  // The "Status" row of the Socket table (the second one; the first is the client's).
  await page.locator("tr", { hasText: "Status" }).nth(1).locator("button").click();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("no disconnect within 5 s")), 5000);
  });
  assert.equal(await Promise.race([reason, timeout]).finally(() => clearTimeout(timer)), "io server disconnect");
  assert.equal(globex.connected, true);

  // The UI hears of it: acme is gone from the sockets list, globex stays.
  await page.goto(`${server.url}/admin-ui/#/sockets/`);
  await page.getByRole("cell", { name: globex.id, exact: true }).waitFor({ timeout: 10_000 });
  await page.getByRole("cell", { name: acmeId, exact: true }).waitFor({ state: "detached", timeout: 10_000 });
  await page.screenshot({ path: join(ARTIFACTS, "admin-ui.png"), fullPage: true });

  // A reload logs in again with the session id the server gave the UI: no dialog, same list.
  await page.reload();
  await page.getByRole("cell", { name: globex.id, exact: true }).waitFor({ timeout: 10_000 });
  assert.equal(await page.getByLabel("Password").isVisible(), false);
});
