// The analytics client package (src/service/analytics/client, installed from its folder) in a real
// React page, bundled with esbuild and run in headless Chromium against the `tidings` binary:
// - live -> server stopped -> reconnecting -> offline -> server back -> live again without a
//   reload, by each way out of offline: the browser coming back online, the page becoming
//   visible, retry(), and the periodic retry;
// - a short outage (the connection cut, the server up) loses nothing: updates posted meanwhile
//   arrive after it, in order, once each (connection state recovery).
// Screenshots go to protocol-tests/browser/artifacts/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";
import { startServer } from "../node/lib/server.js";
import { freePort } from "../node/lib/net.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.TIDINGS_ANALYTICS_BIN;
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const skip = BIN ? false : "TIDINGS_ANALYTICS_BIN is not set";
const ARTIFACTS = join(HERE, "artifacts");
const WAIT = 15_000;

let browser;
let server;
let pages;
let pagesUrl;
let port;
let dir;

const start = () =>
  startServer({
    bin: BIN,
    env: {
      TIDINGS_PORT: String(port),
      TIDINGS_DEMO: "false",
      TIDINGS_CORS_ORIGINS: pagesUrl,
      RUST_LOG: "warn",
    },
  });

async function stop() {
  await server.stop();
  server = undefined;
}

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), "tidings-react-"));
  await esbuild.build({
    entryPoints: [join(HERE, "react", "app.jsx")],
    bundle: true,
    format: "esm",
    jsx: "automatic",
    // The package is a symlink into the repository: resolve its imports (socket.io-client,
    // react) from here, where they are installed.
    preserveSymlinks: true,
    define: { "process.env.NODE_ENV": '"production"' },
    outfile: join(dir, "app.js"),
    logLevel: "error",
  });
  writeFileSync(join(dir, "index.html"), '<!doctype html><div id="root"></div><script type="module" src="app.js"></script>');
  pages = createHttpServer((req, res) => {
    const file = req.url.startsWith("/app.js") ? "app.js" : "index.html";
    res.setHeader("content-type", file === "app.js" ? "text/javascript" : "text/html");
    res.end(readFileSync(join(dir, file)));
  });
  await new Promise((r) => pages.listen(0, "127.0.0.1", r));
  pagesUrl = `http://127.0.0.1:${pages.address().port}`;
  port = await freePort();
  server = await start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
  if (pages) await new Promise((r) => pages.close(r));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function open(query) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${pagesUrl}/?server=http://127.0.0.1:${port}&org=acme&fast=1&${query}`);
  return { context, page };
}

const state = (page, want) => page.locator(`#state[data-state="${want}"]`).waitFor({ timeout: WAIT });

async function post(events) {
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/orgs/acme/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(events),
  });
  assert.equal(res.status, 200, await res.text());
}

const message = (content) => ({ type: "message", data: { conversationId: "c", messageId: content, role: "user", content } });

test("the package's TypeScript declarations describe the updates, states and the hook (tsc --strict)", () => {
  const tsc = join(HERE, "node_modules", "typescript", "bin", "tsc");
  const out = spawnSync(process.execPath, [tsc, "-p", join(HERE, "react", "tsconfig.json")], { encoding: "utf8" });
  assert.equal(out.status, 0, out.stdout + out.stderr);
});

test("live, reconnecting, offline, and live again by every way out, without a reload", { skip, timeout: 120_000 }, async () => {
  const { context, page } = await open("");
  await state(page, "live");
  assert.equal(await page.locator("#connected").textContent(), "true");
  await post([message("first")]);
  await page.locator("#updates li", { hasText: "first" }).waitFor({ timeout: WAIT });
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "react-live.png") });

  // Server gone: reconnecting, then offline once the attempts are spent; back: still offline
  // (nothing retries within the page's long periodic interval) until a trigger.
  const outage = async () => {
    await stop();
    await state(page, "reconnecting");
    await state(page, "offline");
    server = await start();
  };
  await outage();
  await page.screenshot({ path: join(ARTIFACTS, "react-offline.png") });
  assert.equal(await page.locator("#state").textContent(), "offline");
  // 1. The browser comes back online.
  await context.setOffline(true);
  await context.setOffline(false);
  await state(page, "live");
  // 2. The page becomes visible again.
  await outage();
  await page.evaluate(() => document.dispatchEvent(new Event("visibilitychange")));
  await state(page, "live");
  // 3. The user asks.
  await outage();
  await page.click("#retry");
  await state(page, "live");
  // The organisation was joined again after each: updates still arrive.
  await post([message("after the outages")]);
  await page.locator("#updates li", { hasText: "after the outages" }).waitFor({ timeout: WAIT });
  const states = await page.evaluate(() => window.__states);
  assert.deepEqual(states.slice(0, 2), ["reconnecting", "live"]);
  assert.ok(!states.includes(undefined));
  await context.close();

  // 4. Nothing at all: the periodic retry (1 s on this page, 30 s by default).
  const periodic = await open("retryEvery=1000");
  await state(periodic.page, "live");
  await stop();
  await state(periodic.page, "offline");
  server = await start();
  await state(periodic.page, "live");
  await periodic.page.screenshot({ path: join(ARTIFACTS, "react-back.png") });
  await periodic.context.close();
});

test("a short outage loses nothing: missed updates arrive in order, once each", { skip, timeout: 60_000 }, async () => {
  const { context, page } = await open("");
  await state(page, "live");
  await post([message("u1"), message("u2"), message("u3")]);
  await page.locator("#updates li", { hasText: "u3" }).waitFor({ timeout: WAIT });
  // Cut the connection (the server stays up: the browser goes offline), and post meanwhile.
  await context.setOffline(true);
  await state(page, "reconnecting");
  await post([message("u4"), message("u5")]);
  await post([message("u6")]);
  await context.setOffline(false);
  await state(page, "live");
  await page.locator("#updates li", { hasText: "u6" }).waitFor({ timeout: WAIT });
  const shown = await page.locator("#updates li").allTextContents();
  assert.deepEqual(shown, ["u1", "u2", "u3", "u4", "u5", "u6"]);
  await context.close();
});
