// useRealtimeAnalytics: connectAnalytics as a React hook.
//
//   const { state, isConnected, latestUpdate, updates, error, retry } =
//     useRealtimeAnalytics({ organizationId: "acme", enabled: true, token });
import { useCallback, useEffect, useRef, useState } from "react";
import { connectAnalytics } from "./index.js";

export function useRealtimeAnalytics({ organizationId, enabled = true, token, maxUpdates = 100, ...options } = {}) {
  const [state, setState] = useState(enabled ? "reconnecting" : "offline");
  const [updates, setUpdates] = useState([]);
  const [error, setError] = useState(null);
  const connection = useRef(null);
  // Options other than these are read when the connection is made.
  const types = options.types ? options.types.join(",") : "";
  useEffect(() => {
    if (!enabled || !organizationId) {
      setState("offline");
      return undefined;
    }
    const conn = connectAnalytics({ ...options, organizationId, token });
    connection.current = conn;
    setState(conn.state);
    const stops = [
      conn.on("state", setState),
      conn.on("update", (u) => setUpdates((prev) => [...prev, u].slice(-maxUpdates))),
      conn.on("error", setError),
    ];
    return () => {
      stops.forEach((stop) => stop());
      conn.close();
      connection.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [enabled, organizationId, token, options.url, types]);
  const retry = useCallback(() => connection.current && connection.current.retry(), []);
  return {
    state,
    isConnected: state === "live",
    latestUpdate: updates.length ? updates[updates.length - 1] : null,
    updates,
    error,
    retry,
  };
}
