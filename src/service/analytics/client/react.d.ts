import type { AnalyticsError, AnalyticsOptions, AnalyticsUpdate, ConnectionState } from "./index.js";

export interface RealtimeAnalyticsOptions extends Partial<AnalyticsOptions> {
  organizationId: string;
  /** Default true; false keeps the hook disconnected (state "offline"). */
  enabled?: boolean;
  token?: string;
  /** How many updates `updates` keeps (the newest). Default 100. */
  maxUpdates?: number;
}

export interface RealtimeAnalytics {
  state: ConnectionState;
  isConnected: boolean;
  latestUpdate: AnalyticsUpdate | null;
  updates: AnalyticsUpdate[];
  error: AnalyticsError | null;
  retry(): void;
}

export function useRealtimeAnalytics(options: RealtimeAnalyticsOptions): RealtimeAnalytics;
