// Compiled with `tsc --noEmit --strict` by client.test.js: the package's declarations describe the
// three updates, the states and the hook's result, and reject what the server never sends.
import { connectAnalytics, DEFAULTS, type AnalyticsUpdate, type ConnectionState } from "@tidings/analytics-client";
import { useRealtimeAnalytics, type RealtimeAnalytics } from "@tidings/analytics-client/react";

const conn = connectAnalytics({ url: "http://127.0.0.1:3000", organizationId: "acme", token: "t", types: ["metrics"] });
conn.on("update", (u: AnalyticsUpdate) => {
  switch (u.type) {
    case "message":
      const role: "user" | "assistant" = u.data.role;
      const content: string = u.data.content;
      return [role, content];
    case "sentiment":
      const score: number = u.data.score;
      return score;
    case "metrics":
      const total: number | undefined = u.data.totalMessages;
      return total;
  }
});
conn.on("state", (s: ConnectionState) => s);
const ms: number = DEFAULTS.reconnectionDelay;

export function Panel(): RealtimeAnalytics {
  const result = useRealtimeAnalytics({ organizationId: "acme", enabled: true, token: "t" });
  const state: "live" | "reconnecting" | "offline" = result.state;
  const live: boolean = result.isConnected;
  result.retry();
  void [state, live, ms];
  return result;
}

// @ts-expect-error: no such update type
const wrong: AnalyticsUpdate = { type: "click", organizationId: "acme", data: {}, timestamp: 1 };
// @ts-expect-error: a message's role is user or assistant
const bot: AnalyticsUpdate = { type: "message", organizationId: "a", timestamp: 1, data: { conversationId: "c", messageId: "m", role: "bot", content: "x" } };
void [wrong, bot];
