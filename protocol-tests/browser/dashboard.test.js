// The analytics dashboard in a real browser: headless Chromium (Debian's package) driven by
// playwright-core. The page must show Live, show an event posted to the API within a second, show
// Reconnecting when the server goes away and recover when it returns. A screenshot is kept in
// protocol-tests/browser/artifacts/.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "../node/lib/server.js";
import { freePort } from "../node/lib/net.js";

const BIN = process.env.TIDINGS_ANALYTICS_BIN;
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const skip = BIN ? false : "TIDINGS_ANALYTICS_BIN is not set";
const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), "artifacts");
const API_KEY = "browser-test-key";

/** A port that was free a moment ago (the server must come back on the same one). */
function start(port) {
  return startServer({
    bin: BIN,
    env: { TIDINGS_PORT: String(port), TIDINGS_API_KEY: API_KEY, TIDINGS_DEMO: "false", RUST_LOG: "warn" },
  });
}

let browser;
let server;
after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test("the dashboard goes live, shows posted events, and survives a server restart", { skip, timeout: 90_000 }, async () => {
  const port = await freePort();
  server = await start(port);
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
  // Something happened before the page opened: it shows it at once (history on first connect).
  const earlier = await fetch(`${server.url}/api/v1/orgs/acme/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ type: "message", data: { conversationId: "c0", messageId: "m0", role: "user", content: "from before the page" } }),
  });
  assert.equal(earlier.status, 200);
  const page = await browser.newPage();
  const status = page.locator("#status");
  await page.goto(`${server.url}/?org=acme`);
  await status.filter({ hasText: "Live" }).waitFor({ timeout: 10_000 });
  await page.locator("#events li", { hasText: "from before the page" }).waitFor({ timeout: 2000 });

  // An event posted to the API shows up within a second.
  const posted = Date.now();
  const res = await fetch(`${server.url}/api/v1/orgs/acme/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify([
      { type: "message", data: { conversationId: "c1", messageId: "m1", role: "user", content: "hello from the API" } },
      { type: "metrics", data: { totalMessages: 12345, avgResponseTime: 512.3456789, satisfactionScore: 4.56789123, resolutionRate: 0.9012345 } },
      { type: "sentiment", data: { conversationId: "c1", messageId: "m1", score: 0.8, sentiment: "positive" } },
    ]),
  });
  assert.equal(res.status, 200);
  await page.locator("#events li", { hasText: "hello from the API" }).waitFor({ timeout: 1000 });
  assert.ok(Date.now() - posted < 1000 + 200, "event took longer than a second to appear");
  // Figures for people: grouped, with units, rounded; the events list too.
  assert.equal(await page.locator("#m-total").textContent(), "12,345");
  assert.equal(await page.locator("#m-resp").textContent(), "512 ms");
  assert.equal(await page.locator("#m-sat").textContent(), "4.6");
  assert.equal(await page.locator("#m-res").textContent(), "90%");
  const row = await page.locator("#events li.t-metrics").first().textContent();
  assert.match(row, /12,345 messages · 512 ms avg response · 4\.6 satisfaction · 90% resolved/);
  assert.doesNotMatch(row, /\d{5,}\.\d|\{/, "no raw floats or JSON");
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "dashboard.png"), fullPage: true });

  // The server goes away: the page says so.
  await server.stop();
  server = undefined;
  await status.filter({ hasText: "Reconnecting" }).waitFor({ timeout: 10_000 });

  // It comes back on the same port: the page recovers and rejoins its org.
  server = await start(port);
  await status.filter({ hasText: "Live" }).waitFor({ timeout: 15_000 });
  await fetch(`${server.url}/api/v1/orgs/acme/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ type: "message", data: { conversationId: "c1", messageId: "m2", role: "assistant", content: "back again" } }),
  });
  await page.locator("#events li", { hasText: "back again" }).waitFor({ timeout: 2000 });
  await page.screenshot({ path: join(ARTIFACTS, "dashboard-after-restart.png"), fullPage: true });
});
