// connectAnalytics: one organisation's live updates from a Tidings analytics server, over the stock
// socket.io-client, with the reconnection the dashboards need:
//
//   state "reconnecting" (not live yet, or retrying) -> "live" -> "reconnecting" -> ... -> "offline"
//
// - Retries with exponential backoff from 1 s to 5 s, 10 attempts (socket.io-client's Manager).
// - After every (re)connect, joins the organisation again and restores the `types` filter.
// - Offline (attempts exhausted, or the server refused or ended the session) is never final: it
//   retries when the page becomes visible, when the browser comes back online, every 30 s, and at
//   once on retry().
// - Missed updates come back in order after a short outage (connection state recovery, on in the
//   `tidings` service): they reach onUpdate like live ones.
import { io } from "socket.io-client";

export const UPDATE_TYPES = ["message", "sentiment", "metrics"];

export const DEFAULTS = Object.freeze({
  reconnectionDelay: 1000,
  reconnectionDelayMax: 5000,
  reconnectionAttempts: 10,
  offlineRetryInterval: 30000,
});

export function connectAnalytics(options = {}) {
  const { url, organizationId, token, types, path, transports } = options;
  const opts = { ...DEFAULTS, ...options };
  if (!organizationId) throw new TypeError("connectAnalytics: organizationId is required");
  const listeners = { state: new Set(), update: new Set(), error: new Set() };
  const emit = (kind, value) => listeners[kind].forEach((f) => f(value));
  let state = "reconnecting";
  let error = null;
  let offlineTimer = null;
  let closed = false;

  const socket = io(url, {
    auth: token ? { token } : {},
    path,
    transports,
    reconnectionDelay: opts.reconnectionDelay,
    reconnectionDelayMax: opts.reconnectionDelayMax,
    reconnectionAttempts: opts.reconnectionAttempts,
  });

  function setState(next) {
    if (closed || next === state) return;
    state = next;
    if (next === "offline") {
      clearInterval(offlineTimer);
      offlineTimer = setInterval(retry, opts.offlineRetryInterval);
    } else {
      clearInterval(offlineTimer);
      offlineTimer = null;
    }
    emit("state", next);
  }

  function setError(err) {
    error = err;
    emit("error", err);
  }

  function retry() {
    if (closed || socket.connected || state !== "offline") return;
    setState("reconnecting");
    socket.connect();
  }

  socket.on("connect", () => {
    socket.emit("join:analytics", { organizationId }, (reply) => {
      if (!reply || !reply.ok) setError(new Error(`join refused: ${(reply && reply.error) || "no answer"}`));
    });
    if (Array.isArray(types)) {
      const others = UPDATE_TYPES.filter((t) => !types.includes(t));
      if (others.length) socket.emit("unsubscribe:events", { types: others });
      socket.emit("subscribe:events", { types });
    }
    error = null;
    setState("live");
  });
  socket.on("disconnect", (reason) => {
    // Ended by the server (a token that expired, say): the client does not retry by itself.
    setState(reason === "io server disconnect" ? "offline" : "reconnecting");
  });
  socket.io.on("reconnect_attempt", () => setState("reconnecting"));
  socket.io.on("reconnect_failed", () => setState("offline"));
  socket.on("connect_error", (err) => {
    setError(err);
    // A refusal (err.data.code: token_missing, token_invalid, token_expired, org_forbidden) is not
    // retried by the client: offline, still retried by the triggers above.
    if (!socket.active) setState("offline");
  });
  socket.on("analytics:error", (e) => setError(Object.assign(new Error((e && e.code) || "error"), { data: e })));
  socket.on("analytics:update", (update) => emit("update", update));

  const onVisible = () => {
    if (typeof document !== "undefined" && document.visibilityState === "visible") retry();
  };
  const hasWindow = typeof window !== "undefined" && typeof window.addEventListener === "function";
  if (hasWindow) {
    window.addEventListener("online", retry);
    document.addEventListener("visibilitychange", onVisible);
  }

  return {
    socket,
    get state() {
      return state;
    },
    get error() {
      return error;
    },
    /** Calls `f` on each change of state, update or error; returns a function that stops it. */
    on(kind, f) {
      listeners[kind].add(f);
      return () => listeners[kind].delete(f);
    },
    retry,
    close() {
      closed = true;
      clearInterval(offlineTimer);
      if (hasWindow) {
        window.removeEventListener("online", retry);
        document.removeEventListener("visibilitychange", onVisible);
      }
      socket.close();
    },
  };
}
