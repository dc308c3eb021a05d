// The front page, live: the bridge's client (an ES module, no build step) keeps one
// connection open, and the handlers below update the page as Python's messages arrive.
// Data is only ever written with textContent: a message never becomes markup.
import { call, connect, onReset, ready } from "/signals/client.js";

const log = document.getElementById("live-log");
const LOG_LIMIT = 20;

/** Add a line to the top of the live log; "kind" is a class (refused, reset). */
function say(text, kind = "") {
  const line = document.createElement("li");
  line.textContent = text;
  if (kind) line.className = kind;
  log.prepend(line);
  while (log.children.length > LOG_LIMIT) log.lastElementChild.remove();
}

/** A refusal, said politely: the server tells nothing more than the status. */
function refused(what, error) {
  const reasons = {
    403: "the server does not let this page make that call",
    400: "the server could not read the call",
    429: "too many calls; wait a moment",
  };
  const reason = reasons[error.status] || "the server could not run it just now";
  say(`${what}: not done (${reason}).`, "refused");
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function clock(at) {
  const time = new Date(at * 1000);
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(time.getHours())}:${pad(time.getMinutes())}:${pad(time.getSeconds())}` +
    `.${pad(time.getMilliseconds(), 3)}`;
}

// A guestbook entry published anywhere (any worker, any instance) shows here at once.
connect("guestbook.published", (entry) => {
  const table = document.getElementById("guestbook");
  const empty = table.querySelector("td[colspan]");
  if (empty) empty.parentElement.remove();
  const row = document.createElement("tr");
  row.className = "live";
  row.append(cell(clock(entry.at)), cell(entry.user ?? "?"), cell(entry.text),
    cell(`pid ${entry.pid}`));
  table.querySelector("tr").after(row);
  say(`user ${entry.user ?? "?"} signed the guestbook: ${entry.text}`);
});

// A notice for the user of this page: every window of that user, and nobody else's.
connect("notice", (notice) => {
  say(`notice from user ${notice.from}: ${notice.text} (open your inbox to read it there)`,
    "notice");
});

connect("pong", (pong) => {
  say(`pong for ${pong.to === "everyone" ? "everyone" : `this ${pong.to}`} ` +
    `(asked by user ${pong.user}, answered by pid ${pong.pid})`, "pong");
});

connect("waved", (wave) => say(`user ${wave.user} waves at everyone`, "wave"));

onReset(() => say("Some live messages were lost; reload the page to catch up.", "reset"));

document.getElementById("ping").addEventListener("submit", async (event) => {
  event.preventDefault();
  const to = new FormData(event.target).get("to");
  try {
    await call("ping", { to });
  } catch (error) {
    refused("ping", error);
  }
});

for (const button of document.querySelectorAll("button[data-call]")) {
  button.addEventListener("click", async () => {
    try {
      await call(button.dataset.call, {});
      say(`${button.textContent}: sent.`);
    } catch (error) {
      refused(button.textContent, error);
    }
  });
}

// Once the server gave this window its cursor, whatever is sent from then on arrives here.
ready().then(() => {
  document.body.dataset.live = "connected";
});
