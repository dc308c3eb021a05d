// Types of the gaesignals browser client (client.js, an ES module served by the bridge).

/** Options of configure(); each left out keeps its current value. */
export interface Options {
  /** The bridge's URL path, "/signals" by default: where client.js itself was served from. */
  prefix?: string;
  /** The CSRF token; by default read from <meta name="gaesignals-csrf" content="...">. */
  csrf?: string | null;
  /** Long polling (the default), server-sent events, or events falling back to polling. */
  transport?: "poll" | "sse" | "auto";
  /** Reconnection delays in ms: base * 2^(failures - 1), at most max, less up to half (jitter). */
  backoff?: { base?: number; max?: number };
}

/** What a failed call() rejects with. */
export interface CallError extends Error {
  /** The HTTP status: 403 refused, 400 bad data, 429 rate-limited, 500 failed. */
  status: number;
  /** The server's one-word reason: "forbidden", "bad-request", "rate-limited", "failed". */
  code: string;
}

/** What status() reports. */
export interface Status {
  running: boolean;
  paused: boolean;
  transport: "poll" | "sse";
  failures: number;
  delays: number[];
  polls: number;
  cursor: string;
}

export type Handler<T = unknown> = (data: T) => void;

export function configure(options?: Options): void;
export const windowId: string;
export function connect<T = unknown>(name: string, handler: Handler<T>): () => void;
export function onReset(handler: () => void): () => void;
export function disconnect(): void;
export function ready(): Promise<void>;
export function status(): Status;
export function call(name: string, data?: unknown, options?: { traceparent?: string }): Promise<void>;
