// gaesignals dashboard: samples the page's JSON endpoint while the page is open and draws the
// payload rates (per second) as an SVG chart. No framework, no build step, no inline script.
"use strict";
(function () {
  const chart = document.getElementById("chart");
  if (!chart || !window.fetch) {
    return;
  }
  const api = chart.dataset.api;
  const SERIES = ["sent", "delivered", "failed"];
  const WINDOW = 600; // seconds of samples kept
  const W = 300;
  const H = 100;
  const NS = "http://www.w3.org/2000/svg";
  const samples = [];
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "payloads per second");
  chart.insertBefore(svg, chart.firstChild);
  const status = document.createElement("p");
  status.className = "chart-status";
  chart.appendChild(status);

  function totals(data) {
    const sum = { time: data.time };
    SERIES.forEach((s) => { sum[s] = 0; });
    data.signals.forEach((row) => SERIES.forEach((s) => { sum[s] += row[s] || 0; }));
    return sum;
  }

  function rates() {
    const found = [];
    for (let i = 1; i < samples.length; i += 1) {
      const a = samples[i - 1];
      const b = samples[i];
      const dt = b.time - a.time;
      if (dt > 0) {
        const r = { time: b.time };
        SERIES.forEach((s) => { r[s] = Math.max(0, (b[s] - a[s]) / dt); });
        found.push(r);
      }
    }
    return found;
  }

  function draw() {
    while (svg.firstChild) {
      svg.removeChild(svg.firstChild);
    }
    const found = rates();
    if (!found.length) {
      status.textContent = "Collecting samples…";
      return;
    }
    const last = found[found.length - 1].time;
    // The x axis spans the samples taken so far (at least a minute), up to WINDOW.
    const span = Math.min(WINDOW, Math.max(60, last - samples[0].time));
    const base = document.createElementNS(NS, "line");
    base.setAttribute("class", "axis");
    base.setAttribute("x1", "0");
    base.setAttribute("x2", String(W));
    base.setAttribute("y1", String(H - 0.5));
    base.setAttribute("y2", String(H - 0.5));
    svg.appendChild(base);
    let top = 0;
    found.forEach((r) => SERIES.forEach((s) => { top = Math.max(top, r[s]); }));
    const peak = top;
    top = top || 1; // all zero: a flat line at the bottom
    SERIES.forEach((s) => {
      const line = document.createElementNS(NS, "polyline");
      line.setAttribute("class", s);
      line.setAttribute("fill", "none");
      const points = found.map((r) => {
        const x = W - ((last - r.time) / span) * W;
        const y = H - (r[s] / top) * (H - 4);
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      });
      line.setAttribute("points", points.join(" "));
      svg.appendChild(line);
    });
    const now = found[found.length - 1];
    status.textContent = `peak ${peak.toFixed(2)}/s; now: ` +
      SERIES.map((s) => `${s} ${now[s].toFixed(2)}/s`).join(", ") +
      ` (${samples.length} samples)`;
  }

  // The table's columns the samples keep current (the ages stay as the page drew them).
  const COLUMNS = {
    0: (row) => row.pending,
    1: (row) => row.pending_bytes,
    3: (row) => row.pending - row.waiting,
    4: (row) => row.waiting,
  };
  const COUNTED = [
    "sent", "delivered", "failed", "retried", "dead_lettered", "dropped", "expired", "lost",
    "coalesced", "cancelled", "purged",
  ];
  COUNTED.forEach((name, i) => { COLUMNS[6 + i] = (row) => row[name]; });
  COLUMNS[6 + COUNTED.length] = (row) => row.lock;
  COLUMNS[7 + COUNTED.length] = (row) => row.dead_letters;
  COLUMNS[8 + COUNTED.length] = (row) => row.debounced;

  function refresh(data) {
    data.signals.forEach((row) => {
      document.querySelectorAll("tr[data-signal]").forEach((tr) => {
        if (tr.dataset.signal !== row.name) {
          return;
        }
        tr.querySelectorAll("td[data-col]").forEach((td) => {
          const value = COLUMNS[td.dataset.col];
          if (value) {
            td.textContent = String(value(row));
          }
        });
      });
    });
  }

  async function poll() {
    try {
      const answer = await fetch(api, { credentials: "same-origin", cache: "no-store" });
      if (answer.ok) {
        const data = await answer.json();
        if (data.store.reachable) {
          samples.push(totals(data));
          refresh(data);
          while (samples.length && samples[0].time < data.time - WINDOW) {
            samples.shift();
          }
        } else {
          status.textContent = "The store is unavailable.";
        }
        draw();
      }
    } catch (error) {
      status.textContent = "No answer from the dashboard; retrying.";
    }
    // Three quick samples make a first line; then one every five seconds.
    window.setTimeout(poll, samples.length < 3 ? 1000 : 5000);
  }

  poll();
})();
