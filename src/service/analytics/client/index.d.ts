import type { Socket } from "socket.io-client";

/** `live`: joined and receiving; `reconnecting`: not yet live, or retrying; `offline`: retries
 * exhausted or refused; retried on visibility, on `online`, every 30 s and on `retry()`. */
export type ConnectionState = "live" | "reconnecting" | "offline";

export type UpdateType = "message" | "sentiment" | "metrics";

export interface MessageData {
  conversationId: string;
  messageId: string;
  role: "user" | "assistant";
  content: string;
  /** Milliseconds. */
  responseTime?: number;
}

export interface SentimentData {
  conversationId: string;
  messageId: string;
  /** -1 to 1. */
  score: number;
  /** 0 to 1. */
  confidence?: number;
  sentiment: "positive" | "negative" | "neutral";
}

export interface MetricsData {
  totalMessages?: number;
  /** Milliseconds. */
  avgResponseTime?: number;
  satisfactionScore?: number;
  /** 0 to 1. */
  resolutionRate?: number;
}

interface UpdateBase<T extends UpdateType, D> {
  type: T;
  organizationId: string;
  data: D;
  /** Milliseconds since the Unix epoch. */
  timestamp: number;
}

export type MessageUpdate = UpdateBase<"message", MessageData>;
export type SentimentUpdate = UpdateBase<"sentiment", SentimentData>;
export type MetricsUpdate = UpdateBase<"metrics", MetricsData>;
export type AnalyticsUpdate = MessageUpdate | SentimentUpdate | MetricsUpdate;

export interface AnalyticsOptions {
  /** The server (default: the page's origin). */
  url?: string;
  organizationId: string;
  /** A dashboard token (`tidings token --org <id>`); none in development mode. */
  token?: string;
  /** Only these types (default: all). Restored after every reconnect. */
  types?: UpdateType[];
  path?: string;
  transports?: ("polling" | "websocket")[];
  /** Default 1000 ms. */
  reconnectionDelay?: number;
  /** Default 5000 ms. */
  reconnectionDelayMax?: number;
  /** Default 10. */
  reconnectionAttempts?: number;
  /** How often an offline connection retries by itself. Default 30 000 ms. */
  offlineRetryInterval?: number;
}

/** A refusal carries `data.code`: token_missing, token_invalid, token_expired or org_forbidden. */
export interface AnalyticsError extends Error {
  data?: { code?: string; [key: string]: unknown };
}

export interface AnalyticsConnection {
  readonly socket: Socket;
  readonly state: ConnectionState;
  readonly error: AnalyticsError | null;
  on(kind: "state", f: (state: ConnectionState) => void): () => void;
  on(kind: "update", f: (update: AnalyticsUpdate) => void): () => void;
  on(kind: "error", f: (error: AnalyticsError) => void): () => void;
  /** Retries at once when offline. */
  retry(): void;
  close(): void;
}

export const UPDATE_TYPES: readonly UpdateType[];
export const DEFAULTS: Readonly<{
  reconnectionDelay: number;
  reconnectionDelayMax: number;
  reconnectionAttempts: number;
  offlineRetryInterval: number;
}>;

export function connectAnalytics(options: AnalyticsOptions): AnalyticsConnection;
