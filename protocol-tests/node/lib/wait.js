// Bounded waits for tests: nothing here waits forever.
//
//   import { withTimeout, once, waitUntil, Inbox } from "../lib/wait.js";
//   const [data] = await once(socket, "welcome");           // rejects after 5 s
//   await waitUntil(() => got.length === 3, "3 messages");  // polls every 5 ms, rejects after 5 s
//   const inbox = new Inbox(socket, "news");                 // records every "news" event's arguments
//   await inbox.waitFor(2);

export const DEFAULT_WAIT_MS = 5_000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves like `promise`, or rejects with "timed out waiting for <what>" after `ms`. */
export function withTimeout(promise, what, ms = DEFAULT_WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The arguments of the next `event` of an emitter (socket.io-client / engine.io-client / node).
 * With `rejectOn`, the events named there reject the wait (e.g. "connect_error").
 */
export function once(emitter, event, { timeout = DEFAULT_WAIT_MS, rejectOn = [] } = {}) {
  let cleanup = () => {};
  const p = new Promise((resolve, reject) => {
    const onEvent = (...args) => {
      cleanup();
      resolve(args);
    };
    const failers = rejectOn.map((name) => {
      const f = (err) => {
        cleanup();
        reject(err instanceof Error ? err : new Error(`${name}: ${JSON.stringify(err)}`));
      };
      emitter.once(name, f);
      return [name, f];
    });
    cleanup = () => {
      emitter.off(event, onEvent);
      for (const [name, f] of failers) emitter.off(name, f);
    };
    emitter.once(event, onEvent);
  });
  return withTimeout(p, `"${event}"`, timeout).catch((err) => {
    cleanup();
    throw err;
  });
}

/**
 * Polls `cond` (sync or async) every 5 ms until it is truthy; rejects after `ms` (`what` may be a
 * function, for a fresh message).
 */
export async function waitUntil(cond, what, ms = DEFAULT_WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof what === "function" ? what() : what}`);
    }
    await sleep(5);
  }
}

/** Records the arguments of every `event` an emitter fires. */
export class Inbox {
  constructor(emitter, event) {
    this.event = event;
    /** @type {any[][]} argument lists, in arrival order */
    this.calls = [];
    emitter.on(event, (...args) => this.calls.push(args));
  }

  /** First arguments of every call. */
  get firsts() {
    return this.calls.map((args) => args[0]);
  }

  get length() {
    return this.calls.length;
  }

  /** Waits until at least `n` calls were recorded; resolves with the first arguments. */
  async waitFor(n, ms = DEFAULT_WAIT_MS) {
    await waitUntil(() => this.calls.length >= n, () => `${n} "${this.event}" event(s) (got ${this.calls.length})`, ms);
    return this.firsts;
  }
}
