// Spawns the Tidings server binary for a test and tells where it listens.
//
//   import { startServer, exampleBin } from "../lib/server.js";
//   const server = await startServer();               // binary from $TIDINGS_BIN
//   const server = await startServer({ bin: exampleBin("test_server", "TIDINGS_TEST_SERVER_BIN") });
//   const server = await startServer({ bin, args: ["--flag"], env: { TIDINGS_PING_INTERVAL: "300" } });
//   ... server.url  -> "http://127.0.0.1:PORT", server.port -> PORT
//   await server.stop();
//
// The server is started with PORT=0 (plus `env`) and must print a line containing
// `listening on HOST:PORT` on stdout (e.g. `listening on 127.0.0.1:41234`).
// Set TIDINGS_LOG=1 to echo the server's stdout/stderr to this process' stderr.

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const LISTENING_RE = /listening on (\S+):(\d+)/;
const DEFAULT_STARTUP_TIMEOUT_MS = 10_000;
const DEFAULT_STOP_TIMEOUT_MS = 5_000;

/** Path of the server binary: explicit argument, else $TIDINGS_BIN, else undefined. */
export function serverBin(bin) {
  return bin || process.env.TIDINGS_BIN || undefined;
}

/** The repository root (this file is protocol-tests/node/lib/server.js). */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/**
 * Path of a Cargo example binary: $envVar when set (run.sh sets it), else the debug build
 * `target/debug/examples/<name>` of this repository. A missing file makes startServer fail loudly.
 */
export function exampleBin(name, envVar) {
  return (envVar && process.env[envVar]) || join(REPO_ROOT, "target", "debug", "examples", name);
}

/** Host as usable in a URL: unspecified addresses map to loopback, IPv6 gets brackets. */
function connectHost(host) {
  const h = host.replace(/^\[|\]$/g, "");
  if (h === "0.0.0.0") return "127.0.0.1";
  if (h === "::") return "[::1]";
  return h.includes(":") ? `[${h}]` : h;
}

/**
 * Starts the server and resolves once it printed its listening line.
 *
 * @param {object} [opts]
 * @param {string} [opts.bin] path of the binary (default: $TIDINGS_BIN)
 * @param {string[]} [opts.args] command line arguments
 * @param {Record<string,string>} [opts.env] extra environment (PORT=0 is always set unless overridden here)
 * @param {string} [opts.cwd]
 * @param {number} [opts.timeoutMs] startup timeout (default 10 s)
 * @returns {Promise<{url: string, wsUrl: string, host: string, port: number, pid: number,
 *   child: import("node:child_process").ChildProcess, output: () => string,
 *   exited: Promise<{code: number|null, signal: string|null}>,
 *   stop: (opts?: {signal?: string, timeoutMs?: number}) => Promise<{code: number|null, signal: string|null}>}>}
 */
export function startServer(opts = {}) {
  const bin = serverBin(opts.bin);
  if (!bin) {
    return Promise.reject(new Error("no server binary: pass `bin` or set TIDINGS_BIN"));
  }
  const timeoutMs = opts.timeoutMs ?? DEFAULT_STARTUP_TIMEOUT_MS;
  const echo = process.env.TIDINGS_LOG === "1";

  const child = spawn(bin, opts.args ?? [], {
    cwd: opts.cwd,
    env: { ...process.env, PORT: "0", ...(opts.env ?? {}) },
    stdio: ["ignore", "pipe", "pipe"],
  });

  // Keep the last ~64 KiB of output for error messages; always drain both pipes so a
  // chatty server never blocks on a full pipe.
  let log = "";
  const record = (stream, line) => {
    log += `[${stream}] ${line}\n`;
    if (log.length > 65536) log = log.slice(-65536);
    if (echo) process.stderr.write(`[tidings ${stream}] ${line}\n`);
  };
  const output = () => log;

  const exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });

  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      err.message += `\n--- server output ---\n${output()}`;
      reject(err);
    };

    const timer = setTimeout(
      () => fail(new Error(`server did not print "listening on HOST:PORT" within ${timeoutMs} ms`)),
      timeoutMs,
    );

    child.once("error", (err) => fail(new Error(`cannot spawn ${bin}: ${err.message}`)));
    exited.then(({ code, signal }) =>
      fail(new Error(`server exited before listening (code ${code}, signal ${signal})`)),
    );

    createInterface({ input: child.stderr }).on("line", (line) => record("stderr", line));
    createInterface({ input: child.stdout }).on("line", (line) => {
      record("stdout", line);
      if (settled) return;
      const m = LISTENING_RE.exec(line);
      if (!m) return;
      settled = true;
      clearTimeout(timer);
      const host = connectHost(m[1]);
      const port = Number(m[2]);
      const url = `http://${host}:${port}`;

      const stop = async ({ signal = "SIGTERM", timeoutMs: stopTimeout = DEFAULT_STOP_TIMEOUT_MS } = {}) => {
        if (child.exitCode !== null || child.signalCode !== null) return exited;
        child.kill(signal);
        let killTimer;
        const forced = new Promise((res) => {
          killTimer = setTimeout(() => {
            if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
            res();
          }, stopTimeout);
        });
        await Promise.race([exited, forced]);
        clearTimeout(killTimer);
        return exited;
      };

      resolve({
        url,
        wsUrl: url.replace(/^http/, "ws"),
        host,
        port,
        pid: child.pid,
        child,
        output,
        exited,
        stop,
      });
    });
  });
}
