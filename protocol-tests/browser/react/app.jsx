// A real React page on the client package's hook, as a dashboard would use it. Options come from
// the query string: ?server=<url>&org=<id>&fast=1 (short reconnection delays for the test).
import { createRoot } from "react-dom/client";
import { useRealtimeAnalytics } from "@tidings/analytics-client/react";

const params = new URLSearchParams(location.search);
const fast = params.get("fast") === "1";
const options = {
  url: params.get("server"),
  organizationId: params.get("org"),
  enabled: true,
  ...(fast
    ? {
        reconnectionDelay: 100,
        reconnectionDelayMax: 200,
        reconnectionAttempts: 3,
        offlineRetryInterval: Number(params.get("retryEvery") || 600000),
      }
    : {}),
};

function Dashboard() {
  const { state, isConnected, latestUpdate, updates, error, retry } = useRealtimeAnalytics(options);
  window.__states = window.__states || [];
  if (window.__states[window.__states.length - 1] !== state) window.__states.push(state);
  return (
    <main>
      <p id="state" data-state={state}>
        {state}
      </p>
      <p id="connected">{String(isConnected)}</p>
      <p id="latest">{latestUpdate ? JSON.stringify(latestUpdate.data) : ""}</p>
      <p id="error">{error ? error.message : ""}</p>
      <button id="retry" onClick={retry}>
        Retry
      </button>
      <ol id="updates">
        {updates.map((u, i) => (
          <li key={i}>{u.data.content ?? JSON.stringify(u.data)}</li>
        ))}
      </ol>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<Dashboard />);
