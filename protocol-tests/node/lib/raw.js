// Raw protocol helpers: plain HTTP requests (node:http, one connection per request, no
// pooling, no automatic decompression) and a raw WebSocket with a message queue.
//
//   import { httpRequest, eioPath, openPolling, RawWebSocket, SEP } from "../lib/raw.js";
//   const { sid } = await openPolling(server.url);
//   const res = await httpRequest(server.url, "POST", eioPath({ sid }), { body: "4hello" });
//   const ws = await RawWebSocket.open(`${server.wsUrl}${eioPath({ transport: "websocket" })}`);
//   const handshake = await ws.next();     // "0{...}"

import http from "node:http";
import { WebSocket } from "ws"; // shipped with engine.io-client (hoisted in node_modules, pinned by the lockfile)

export { WebSocket };

/** Engine.IO v4 payload separator (record separator, 0x1e). */
export const SEP = "\x1e";

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Path + query of an Engine.IO request.
 * @param {object} [o]
 * @param {string} [o.path] default "/socket.io/" (use "/engine.io/" for a bare Engine.IO server)
 * @param {string} [o.transport] default "polling"
 * @param {string} [o.sid]
 * @param {string|null} [o.eio] default "4"; null omits the parameter
 * @param {Record<string,string>} [o.extra] more query parameters
 */
export function eioPath({ path = "/socket.io/", transport = "polling", sid, eio = "4", extra = {} } = {}) {
  const q = new URLSearchParams();
  if (eio !== null) q.set("EIO", eio);
  if (transport !== null) q.set("transport", transport);
  if (sid) q.set("sid", sid);
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  return `${path}?${q}`;
}

/**
 * One raw HTTP request. Resolves with { status, headers, body } (body as UTF-8 string, bodyBuffer as
 * Buffer) or, when the connection fails or is reset, with { error: "ECONNRESET" | ... } — it never rejects.
 *
 * @param {string} baseUrl e.g. "http://127.0.0.1:1234"
 * @param {string} method
 * @param {string} pathAndQuery
 * @param {object} [o]
 * @param {string|Buffer} [o.body]
 * @param {Record<string,string>} [o.headers]
 * @param {number} [o.abortAfterMs] destroy the request after this delay (simulates a client abort)
 * @param {boolean} [o.partialBody] with abortAfterMs: write body but never end the request
 * @param {number} [o.timeoutMs] give up (and destroy) after this delay, resolving { error: "TIMEOUT" }; default 10 s
 */
export function httpRequest(baseUrl, method, pathAndQuery, o = {}) {
  const url = new URL(pathAndQuery, baseUrl);
  const timeoutMs = o.timeoutMs ?? 10_000;
  return new Promise((resolve) => {
    let done = false;
    const finish = (v) => {
      if (done) return;
      done = true;
      clearTimeout(abortTimer);
      clearTimeout(timeoutTimer);
      resolve(v);
    };
    const req = http.request(
      {
        host: url.hostname.replace(/^\[|\]$/g, ""),
        port: url.port,
        method,
        path: url.pathname + url.search,
        headers: o.headers ?? {},
        agent: false,
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const bodyBuffer = Buffer.concat(chunks);
          finish({ status: res.statusCode, headers: res.headers, body: bodyBuffer.toString("utf8"), bodyBuffer });
        });
        res.on("error", (e) => finish({ error: e.code || e.message }));
        res.on("aborted", () => finish({ error: "ECONNRESET" }));
      },
    );
    req.on("error", (e) => finish({ error: e.code || e.message }));
    const abortTimer =
      o.abortAfterMs !== undefined
        ? setTimeout(() => {
            req.destroy();
            finish({ error: "ABORTED" });
          }, o.abortAfterMs)
        : undefined;
    const timeoutTimer = setTimeout(() => {
      req.destroy();
      finish({ error: "TIMEOUT" });
    }, timeoutMs);
    if (o.body !== undefined) req.write(o.body);
    if (!o.partialBody) req.end();
  });
}

/** Opens an Engine.IO polling session; returns the parsed handshake ({ sid, upgrades, pingInterval, ... }). */
export async function openPolling(baseUrl, { path = "/socket.io/", headers } = {}) {
  const res = await httpRequest(baseUrl, "GET", eioPath({ path }), { headers });
  if (res.error) throw new Error(`handshake failed: ${res.error}`);
  if (res.status !== 200 || !res.body.startsWith("0")) {
    throw new Error(`unexpected handshake response ${res.status}: ${res.body}`);
  }
  return JSON.parse(res.body.slice(1));
}

/** Splits an Engine.IO v4 polling payload into its packets (strings). */
export const decodePayload = (body) => body.split(SEP);
/** Joins encoded packets into an Engine.IO v4 polling payload. */
export const encodePayload = (packets) => packets.join(SEP);

/**
 * A WebSocket with an always-attached "error" listener (errors are recorded, never thrown) and a
 * queue of received messages. Text frames arrive as strings, binary frames as Buffers.
 */
export class RawWebSocket {
  /**
   * Connects; resolves once open, rejects on handshake failure (e.g. HTTP 400: err.statusCode).
   * @param {string} url ws://...
   * @param {object} [o] extra options for `ws` (headers, ...)
   */
  static open(url, o = {}) {
    const rws = new RawWebSocket(url, o);
    return rws.opened.then(() => rws);
  }

  constructor(url, o = {}) {
    this.ws = new WebSocket(url, o);
    this.errors = [];
    this.messages = [];
    this.waiters = [];
    this.closeInfo = null;
    this.statusCode = undefined;
    this.ws.on("error", (e) => {
      this.errors.push(e);
      // ws reports a refused handshake as "Unexpected server response: 400"
      const m = /Unexpected server response: (\d+)/.exec(e.message);
      if (m) this.statusCode = Number(m[1]);
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("close", () => {
        const err = new Error(
          `websocket closed before open${this.statusCode ? ` (HTTP ${this.statusCode})` : ""}` +
            (this.errors[0] ? `: ${this.errors[0].message}` : ""),
        );
        err.statusCode = this.statusCode;
        reject(err);
      });
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.once("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        for (const w of this.waiters.splice(0)) w.reject(new Error(`websocket closed (code ${code})`));
      });
    });
    this.ws.on("message", (data, isBinary) => {
      const msg = isBinary ? Buffer.from(data) : data.toString();
      const w = this.waiters.shift();
      if (w) w.resolve(msg);
      else this.messages.push(msg);
    });
  }

  /** Next received message (string for text frames, Buffer for binary); rejects on close/timeout. */
  next(timeoutMs = 5_000) {
    if (this.messages.length) return Promise.resolve(this.messages.shift());
    if (this.closeInfo) return Promise.reject(new Error(`websocket closed (code ${this.closeInfo.code})`));
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (m) => {
          clearTimeout(t);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`no websocket message within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** Next message that is not an Engine.IO ping ("2"); answers those pings with "3" if `pong` is true. */
  async nextNonPing(timeoutMs = 5_000, { pong = true } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()));
      if (m === "2") {
        if (pong) this.send("3");
        continue;
      }
      return m;
    }
  }

  send(data) {
    this.ws.send(data);
  }

  /** Resolves { code, reason } once closed, or null if still open after timeoutMs. */
  waitClose(timeoutMs = 5_000) {
    return Promise.race([this.closed, sleep(timeoutMs).then(() => null)]);
  }

  /** Closes (close handshake) and waits for the close; terminates if that takes > 1 s. */
  async close(code, reason) {
    if (this.closeInfo) return this.closeInfo;
    this.ws.close(code, reason);
    const r = await this.waitClose(1_000);
    if (r) return r;
    this.ws.terminate();
    return this.closed;
  }

  terminate() {
    this.ws.terminate();
  }
}
