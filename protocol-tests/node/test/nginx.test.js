// The shipped deployment files, run as they are: deploy/nginx/tidings.conf (ports, certificate
// paths and the upstream address substituted) in front of the `tidings` binary, with nginx from
// the system's packages and a self-signed certificate made for the test. The stock client connects
// through it over HTTPS (polling, WebSocket, and the upgrade), each from its own loopback address,
// and the server sees those addresses (X-Forwarded-For, `--trust-proxy 127.0.0.1`): with one
// session allowed per address, three clients fit and a second from one address is refused.
// deploy/systemd/tidings.service passes `systemd-analyze verify` without a warning.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync, mkdirSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { Agent, request } from "node:https";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { io } from "socket.io-client";
import { startServer, REPO_ROOT } from "../lib/server.js";
import { dashboardToken } from "../lib/token.js";
import { freePort } from "../lib/net.js";

const BIN = process.env.TIDINGS_ANALYTICS_BIN;
const NGINX = spawnSync("sh", ["-c", "command -v nginx || ls /usr/sbin/nginx"], { encoding: "utf8" }).stdout.trim().split("\n")[0];
const skip = BIN ? false : "TIDINGS_ANALYTICS_BIN is not set";
const SECRET = "nginx-secret";
const WAIT = 10_000;

let tidings;
let nginx;
let dir;
let httpsPort;
let httpPort;

function within(promise, what, ms = WAIT) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function untilListening(port) {
  for (let i = 0; i < 200; i++) {
    const up = await new Promise((resolve) => {
      const s = tcpConnect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nothing listens on ${port}`);
}

before(async () => {
  if (skip) return;
  assert.ok(NGINX, "nginx is not installed (the test command installs it)");
  dir = mkdtempSync(join(tmpdir(), "tidings-nginx-"));
  const made = spawnSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
  ]);
  assert.equal(made.status, 0, String(made.stderr));
  tidings = await startServer({
    bin: BIN,
    env: {
      TIDINGS_PORT: "0",
      TIDINGS_AUTH_SECRET: SECRET,
      TIDINGS_API_OPEN: "true",
      TIDINGS_DEMO: "false",
      TIDINGS_TRUST_PROXY: "127.0.0.1",
      TIDINGS_MAX_CONNECTIONS_PER_IP: "1",
      RUST_LOG: "warn",
    },
  });
  [httpsPort, httpPort] = [await freePort(), await freePort()];
  const shipped = readFileSync(join(REPO_ROOT, "deploy", "nginx", "tidings.conf"), "utf8");
  const substitutions = [
    ["server 127.0.0.1:3000;", `server 127.0.0.1:${tidings.port};`],
    ["listen 80;", `listen 127.0.0.1:${httpPort};`],
    ["listen 443 ssl;", `listen 127.0.0.1:${httpsPort} ssl;`],
    ["/etc/ssl/certs/dashboards.example.com.pem", join(dir, "cert.pem")],
    ["/etc/ssl/private/dashboards.example.com.key", join(dir, "key.pem")],
  ];
  let site = shipped;
  for (const [from, to] of substitutions) {
    assert.ok(site.includes(from), `deploy/nginx/tidings.conf no longer has ${from}`);
    site = site.replace(from, to);
  }
  writeFileSync(join(dir, "tidings.conf"), site);
  for (const t of ["body", "proxy", "fastcgi", "uwsgi", "scgi"]) mkdirSync(join(dir, t));
  writeFileSync(
    join(dir, "nginx.conf"),
    `daemon off;
worker_processes 1;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${join(dir, "body")};
  proxy_temp_path ${join(dir, "proxy")};
  fastcgi_temp_path ${join(dir, "fastcgi")};
  uwsgi_temp_path ${join(dir, "uwsgi")};
  scgi_temp_path ${join(dir, "scgi")};
  include ${join(dir, "tidings.conf")};
}
`,
  );
  nginx = spawn(NGINX, ["-p", dir, "-c", join(dir, "nginx.conf")], { stdio: ["ignore", "ignore", "pipe"] });
  let nginxErr = "";
  nginx.stderr.on("data", (d) => (nginxErr += d));
  nginx.once("exit", (code) => {
    if (code) console.error(`nginx exited with ${code}: ${nginxErr}`);
  });
  await untilListening(httpsPort);
});

after(async () => {
  if (nginx && nginx.exitCode === null) {
    const gone = new Promise((r) => nginx.once("exit", r));
    nginx.kill("SIGTERM");
    await within(gone, "nginx to stop");
  }
  if (tidings) await tidings.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A dashboard through nginx over HTTPS, from loopback address `from`. */
function dashboard(from, transports, extra = {}) {
  const agent = new Agent({ localAddress: from, rejectUnauthorized: false });
  const socket = io(`https://127.0.0.1:${httpsPort}`, {
    transports,
    agent,
    rejectUnauthorized: false,
    forceNew: true,
    reconnection: false,
    auth: { token: dashboardToken(SECRET, ["acme"], { ttl: 600 }) },
    ...extra,
  });
  return socket;
}

const connected = (socket) =>
  within(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    }),
    "connect",
  );

test("the stock client through nginx: polling, WebSocket and the upgrade, each client's own address", { skip }, async () => {
  const polling = dashboard("127.0.0.2", ["polling"]);
  const websocket = dashboard("127.0.0.3", ["websocket"]);
  const upgrading = dashboard("127.0.0.4", ["polling", "websocket"]);
  const all = [polling, websocket, upgrading];
  try {
    const upgraded = within(new Promise((r) => upgrading.io.engine.once("upgrade", r)), "the upgrade");
    await Promise.all(all.map(connected));
    await upgraded;
    assert.equal(polling.io.engine.transport.name, "polling");
    assert.equal(websocket.io.engine.transport.name, "websocket");
    assert.equal(upgrading.io.engine.transport.name, "websocket");
    for (const s of all) {
      assert.deepEqual(await s.timeout(WAIT).emitWithAck("join:analytics", { organizationId: "acme" }), {
        ok: true,
        room: "org:acme",
      });
    }
    // An update posted through nginx reaches all three, whatever their transport.
    const got = all.map((s) => within(new Promise((r) => s.once("analytics:update", r)), "an update"));
    const res = await new Promise((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port: httpsPort, path: "/api/v1/orgs/acme/events", method: "POST", rejectUnauthorized: false, headers: { "content-type": "application/json" } },
        (r) => {
          let body = "";
          r.on("data", (d) => (body += d));
          r.on("end", () => resolve({ status: r.statusCode, body: JSON.parse(body) }));
        },
      );
      req.on("error", reject);
      req.end(JSON.stringify({ type: "metrics", data: { totalMessages: 3 } }));
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.delivered, 3);
    for (const u of await Promise.all(got)) assert.equal(u.data.totalMessages, 3);
    // One session per address: a second one from 127.0.0.2 is refused. Had the server seen
    // nginx's address for all, the second of the three above would have been.
    const again = dashboard("127.0.0.2", ["polling"]);
    await assert.rejects(connected(again));
    again.close();
  } finally {
    for (const s of all) s.close();
  }
});

test("plain HTTP is redirected to HTTPS", { skip }, async () => {
  const res = await new Promise((resolve, reject) => {
    httpRequest({ host: "127.0.0.1", port: httpPort, path: "/?org=acme" }, resolve).on("error", reject).end();
  });
  res.resume();
  assert.equal(res.statusCode, 301);
  assert.match(res.headers.location, /^https:\/\/127\.0\.0\.1\/\?org=acme$/);
});

test("the systemd unit passes systemd-analyze verify", { skip }, () => {
  const unit = readFileSync(join(REPO_ROOT, "deploy", "systemd", "tidings.service"), "utf8");
  assert.ok(unit.includes("ExecStart=/usr/local/bin/tidings\n"));
  // Verified with the binary under test in ExecStart's place (verify checks that it exists).
  const copy = join(dir, "tidings.service");
  writeFileSync(copy, unit.replace("ExecStart=/usr/local/bin/tidings", `ExecStart=${BIN}`));
  const out = spawnSync("systemd-analyze", ["verify", copy], { encoding: "utf8" });
  assert.equal(out.error, undefined, "systemd-analyze is not installed (the test command installs it)");
  assert.equal(out.status, 0, out.stderr);
  assert.equal(out.stderr.trim(), "", "no warnings");
});
