// gaesignals browser client: signals between this page and the server.
//
// An ES module with no dependencies and no build step, served by the bridge at
// <prefix>/client.js. One connection per page, whatever the number of handlers: a long poll
// (or server-sent events), resumed from the last cursor after an error (with backoff and
// jitter) or a hidden tab. Handlers get data, never HTML: nothing here touches the DOM.

const defaults = {
  prefix: new URL(".", import.meta.url).pathname.replace(/\/$/, ""),
  csrf: null,
  transport: "poll",
  backoff: { base: 500, max: 30000 },
};

const state = {
  options: { ...defaults },
  window: newWindowId(),
  handlers: new Map(),
  resets: new Set(),
  cursor: "",
  running: false,
  run: 0,
  controller: null,
  source: null,
  mode: "poll",
  failures: 0,
  delays: [],
  polls: 0,
  seen: [],
  ready: null,
  readyResolve: null,
  paused: false,
};

function newWindowId() {
  // randomUUID exists in secure contexts only (https, localhost): a page over plain http
  // elsewhere gets 122 random bits all the same.
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function freshReady() {
  state.ready = new Promise((resolve) => {
    state.readyResolve = resolve;
  });
}
freshReady();

/** Change the defaults: prefix, csrf token, transport ("poll", "sse" or "auto"), backoff. */
export function configure(options = {}) {
  const restart = state.running;
  if (restart) stop();
  state.options = { ...state.options, ...options };
  if (options.backoff) state.options.backoff = { ...defaults.backoff, ...options.backoff };
  if (restart) start();
}

/** This page's window id: what the server's handlers see as `window`. */
export const windowId = state.window;

/** Call `handler(data)` for every message of signal `name`; returns an unsubscribe. */
export function connect(name, handler) {
  if (typeof handler !== "function") throw new TypeError("a handler must be a function");
  let set = state.handlers.get(name);
  if (!set) state.handlers.set(name, (set = new Set()));
  set.add(handler);
  start();
  return () => {
    set.delete(handler);
    if (!set.size) state.handlers.delete(name);
  };
}

/** Call `handler()` when the server says messages were lost: the page should reload state. */
export function onReset(handler) {
  if (typeof handler !== "function") throw new TypeError("a handler must be a function");
  state.resets.add(handler);
  return () => state.resets.delete(handler);
}

/** Stop the connection (handlers stay connected); connect() or ready() starts it again,
 * from the same cursor. */
export function disconnect() {
  stop();
}

/** Resolves once the server gave this page a cursor: messages sent from then on arrive. */
export function ready() {
  start();
  return state.ready;
}

/** What the connection is doing, for tests and debugging. */
export function status() {
  return {
    running: state.running,
    paused: state.paused,
    transport: state.mode,
    failures: state.failures,
    delays: [...state.delays],
    polls: state.polls,
    cursor: state.cursor,
  };
}

/** Call Python signal `name` with `data` (JSON); resolves on success, else rejects with an
 * Error whose `status` is the HTTP status and `code` the server's one-word reason. */
export async function call(name, data, { traceparent } = {}) {
  const headers = {
    "Content-Type": "application/json",
    "X-GaeSignals-CSRF": csrfToken(),
    "X-GaeSignals-Window": state.window,
  };
  if (traceparent) headers.traceparent = traceparent;
  const response = await fetch(`${state.options.prefix}/call/${encodeURIComponent(name)}`, {
    method: "POST",
    headers,
    body: JSON.stringify({ data: data === undefined ? null : data }),
    credentials: "same-origin",
    cache: "no-store",
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.ok && body && body.ok === true) return;
  const error = new Error(`call of ${name} refused: ${response.status}`);
  error.status = response.status;
  error.code = (body && body.error) || "failed";
  throw error;
}

function csrfToken() {
  if (state.options.csrf) return state.options.csrf;
  const meta = document.querySelector('meta[name="gaesignals-csrf"]');
  return meta ? meta.getAttribute("content") || "" : "";
}

function start() {
  if (state.running) return;
  state.running = true;
  state.run += 1;
  document.addEventListener("visibilitychange", onVisibility);
  if (document.hidden) {
    state.paused = true;
    return;
  }
  open(state.run);
}

function stop() {
  state.running = false;
  state.run += 1;
  state.paused = false;
  document.removeEventListener("visibilitychange", onVisibility);
  close();
}

function close() {
  if (state.controller) state.controller.abort();
  state.controller = null;
  if (state.source) state.source.close();
  state.source = null;
}

function onVisibility() {
  if (!state.running) return;
  if (document.hidden) {
    state.paused = true;
    state.run += 1;
    close();
  } else if (state.paused) {
    state.paused = false;
    state.run += 1;
    open(state.run);
  }
}

function open(run) {
  const transport = state.options.transport;
  if (transport === "sse" || transport === "auto") stream(run, transport === "auto");
  else pollLoop(run);
}

async function pollLoop(run) {
  state.mode = "poll";
  while (state.running && state.run === run) {
    const controller = new AbortController();
    state.controller = controller;
    try {
      const query = `window=${state.window}&cursor=${encodeURIComponent(state.cursor)}`;
      state.polls += 1;
      const response = await fetch(`${state.options.prefix}/poll?${query}`, {
        signal: controller.signal,
        credentials: "same-origin",
        cache: "no-store",
      });
      if (!response.ok) throw new Error(`poll answered ${response.status}`);
      const body = await response.json();
      if (state.run !== run) return;
      state.failures = 0;
      receive(body.cursor, Boolean(body.reset), body.messages || []);
    } catch (error) {
      if (controller.signal.aborted || state.run !== run) return;
      await pause(nextDelay());
    }
  }
}

function nextDelay() {
  state.failures += 1;
  const { base, max } = state.options.backoff;
  const ceiling = Math.min(max, base * 2 ** Math.min(state.failures - 1, 30));
  const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
  state.delays.push(delay);
  return delay;
}

function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function stream(run, fallBack) {
  state.mode = "sse";
  const query = `window=${state.window}&cursor=${encodeURIComponent(state.cursor)}`;
  const source = new EventSource(`${state.options.prefix}/events?${query}`);
  let opened = false;
  state.source = source;
  source.addEventListener("open", () => {
    opened = true;
    state.failures = 0;
  });
  source.addEventListener("ready", (event) => receive(event.lastEventId, false, []));
  source.addEventListener("reset", (event) => receive(event.lastEventId, true, []));
  source.addEventListener("message", (event) => {
    let message = null;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    receive(event.lastEventId || state.cursor, false, [message]);
  });
  source.addEventListener("error", async () => {
    if (source.readyState !== EventSource.CLOSED || state.run !== run) return;
    source.close();
    state.source = null;
    if (fallBack && !opened) {
      state.options.transport = "poll";
      pollLoop(run);
      return;
    }
    await pause(nextDelay());
    if (state.running && state.run === run) stream(run, fallBack);
  });
}

function receive(cursor, reset, messages) {
  if (typeof cursor === "string" && cursor) state.cursor = cursor;
  state.readyResolve();
  if (reset) {
    for (const handler of [...state.resets]) dispatch(handler, undefined);
  }
  for (const message of messages) {
    if (!message || typeof message.signal !== "string") continue;
    if (message.id && state.seen.includes(message.id)) continue;
    if (message.id) {
      state.seen.push(message.id);
      if (state.seen.length > 256) state.seen.shift();
    }
    for (const handler of [...(state.handlers.get(message.signal) || [])]) {
      dispatch(handler, message.data);
    }
  }
}

function dispatch(handler, data) {
  try {
    handler(data);
  } catch (error) {
    // A handler's error is the page's: report it as uncaught, and go on with the others.
    setTimeout(() => {
      throw error;
    });
  }
}
