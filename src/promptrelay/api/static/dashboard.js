// promptrelay dashboard: polls /api/dashboard and draws everything as plain DOM and SVG.
// No library and no other origin: the page's Content-Security-Policy allows 'self' only.
"use strict";

const KEY_STORE = "promptrelay.adminKey";
const SVG = "http://www.w3.org/2000/svg";
const state = { window: "1h", timer: null, refreshes: 0, refreshS: 3 };

// -- small helpers -----------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function text(id, value, raw) {
  const node = $(id);
  node.textContent = value;
  if (raw !== undefined) node.dataset.value = String(raw);
  return node;
}

function ms(value) {
  if (value === undefined || value === null) return "–";
  return value >= 1000 ? (value / 1000).toFixed(2) + " s" : value.toFixed(value < 10 ? 2 : 0) + " ms";
}

function pct(value) {
  return (100 * (value || 0)).toFixed(1) + " %";
}

function mib(bytes) {
  return (bytes / 1048576).toFixed(0) + " MiB";
}

function stateClass(node, value) {
  node.className = "state-" + String(value).replace(/[^a-z_]/g, "");
}

// -- talking to the gateway ----------------------------------------------------------------

function headers(json) {
  const found = { "X-Promptrelay-Admin": "1" };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) found.Authorization = "Bearer " + key;
  if (json) found["Content-Type"] = "application/json";
  return found;
}

async function api(path, options) {
  const extra = (options && options.headers) || {};
  const all = { ...headers(options && options.body), ...extra };
  const response = await fetch(path, { ...options, headers: all });
  if (response.status === 401) {
    sessionStorage.removeItem(KEY_STORE);
    showLogin("");
    throw new Error("the admin key is needed");
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      message = (await response.json()).error.message;
    } catch (ignored) {
      // not the JSON error envelope: keep the status line
    }
    throw new Error(message);
  }
  return response;
}

function showLogin(message) {
  $("main").classList.add("hidden");
  $("login").classList.remove("hidden");
  $("login-error").textContent = message;
  $("key").focus();
}

// -- the poll loop ---------------------------------------------------------------------------

async function refresh() {
  clearTimeout(state.timer);
  try {
    const response = await api("/api/dashboard?window=" + state.window);
    const data = await response.json();
    state.refreshS = data.refresh_s;
    $("login").classList.add("hidden");
    $("main").classList.remove("hidden");
    text("mode", data.mode + " · " + data.version);
    render(data);
    if (!state.refreshes) performance.mark("promptrelay:first-data"); // bench/dashboard_paint.py
    state.refreshes += 1;
    document.body.dataset.refreshes = String(state.refreshes);
    text("status", "updated " + new Date().toLocaleTimeString()).className = "muted";
  } catch (error) {
    text("status", "not updated: " + error.message).className = "error";
    if (!$("login").classList.contains("hidden")) return; // wait for the key
  }
  state.timer = setTimeout(refresh, state.refreshS * 1000);
}

function render(data) {
  const perf = data.performance;
  renderTiles(perf);
  renderGauges(perf, data.thresholds);
  renderList("alerts", perf.alerts.active, (a) => [
    el("span", { class: "sev-" + a.severity }, a.severity),
    " " + a.message,
  ], "no active alert");
  renderList("advice", perf.recommendations, (r) => [
    el("span", { class: "sev-" + r.severity }, r.area),
    " " + r.message,
  ], "nothing to recommend");
  renderCharts(perf.history, data.thresholds);
  renderCounts("statuses", { ...perf.requests.statuses, ...prefixed("upstream ", perf.upstream.statuses) });
  renderCounts("by-model", data.counts.model || {});
  renderCounts("by-template", data.counts.template || {});
  renderRecent(data.recent_requests);
}

function prefixed(prefix, counts) {
  const found = {};
  for (const [name, count] of Object.entries(counts || {})) found[prefix + name] = count;
  return found;
}

// -- sections ---------------------------------------------------------------------------------

function renderTiles(perf) {
  const requests = perf.requests;
  const cache = perf.cache;
  text("t-rps", requests.throughput.last_1m_per_s.toFixed(2), requests.throughput.last_1m_per_s);
  text("t-total", requests.total + " requests, " + requests.errors + " errors", requests.total);
  text("t-hit", pct(cache.hit_ratio), cache.hit_ratio);
  text("t-hits", cache.hits + " hits / " + cache.misses + " misses");
  const added = requests.recent_added_latency;
  text("t-added", ms(added.p50_ms) + " / " + ms(added.p95_ms));
  const upstream = perf.upstream.latency;
  text("t-upstream", ms(upstream.p50_ms) + " / " + ms(upstream.p95_ms));
  const breaker = perf.breaker;
  stateClass(text("t-breaker", breaker.state || "closed", breaker.state), breaker.state || "closed");
  text("t-breaker-info", (breaker.recent_transitions || []).length + " recent transitions");
  stateClass(text("t-redis", perf.redis.state, perf.redis.state), perf.redis.state);
  text("t-redis-info", perf.redis.transitions + " transitions");
  const pool = perf.upstream.pool || {};
  text("t-pool", (pool.in_use ?? 0) + " / " + (pool.waiting ?? 0) + " / " + (pool.limit ?? "–"));
  const saved = cache.saved;
  text("t-saved", "$" + saved.dollars.toFixed(4), saved.dollars);
  text("t-saved-info", saved.tokens + " tokens, " + saved.upstream_seconds.toFixed(1) + " s upstream");
}

function renderGauges(perf, thresholds) {
  const system = perf.system;
  const box = $("gauges");
  box.replaceChildren();
  if (!system) {
    box.append(el("p", { class: "muted" }, "first sample pending"));
    return;
  }
  const rows = [
    ["memory", system.memory_fraction, thresholds.memory_fraction,
      mib(system.rss_bytes) + " of " + mib(system.memory_limit_bytes)],
    ["CPU", system.cpu_percent, thresholds.cpu_percent, system.cpu_percent.toFixed(0) + " % of a core"],
    ["event-loop lag", system.loop_lag_ms, thresholds.loop_lag_ms, ms(system.loop_lag_ms)],
  ];
  for (const [name, value, limit, label] of rows) {
    const share = Math.min(1, value / limit);
    const fill = el("div", { class: "fill" + (share >= 1 ? " bad" : share >= 0.75 ? " warn" : "") });
    fill.style.width = (100 * share).toFixed(1) + "%";
    box.append(el("div", { class: "gauge", "data-name": name },
      el("span", {}, name), el("div", { class: "bar" }, fill),
      el("span", { class: "muted" }, label + " (alert at " + limit + ")")));
  }
}

function renderList(id, items, row, empty) {
  const list = $(id);
  list.replaceChildren();
  for (const item of items) list.append(el("li", {}, ...row(item)));
  if (!items.length) list.append(el("li", { class: "empty" }, empty));
  list.dataset.count = String(items.length);
}

function renderCounts(id, counts) {
  const table = $(id);
  table.replaceChildren();
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  for (const [name, count] of entries) {
    table.append(el("tr", {}, el("td", {}, name), el("td", { class: "num" }, String(count))));
  }
  if (!entries.length) table.append(el("tr", {}, el("td", { class: "muted" }, "none yet")));
}

function renderRecent(requests) {
  const body = $("recent").tBodies[0];
  body.replaceChildren();
  for (const r of requests) {
    body.append(el("tr", {},
      el("td", {}, r.route), el("td", {}, r.model || "–"), el("td", {}, r.template || "–"),
      el("td", { class: r.status >= 500 ? "error" : "" }, String(r.status)),
      el("td", {}, r.cache || "–"), el("td", { class: "num" }, r.ms.toFixed(2))));
  }
}

// -- charts: one SVG polyline per history field -------------------------------------------------

const CHARTS = [
  ["requests_per_s", "requests/s", null, (v) => v.toFixed(2)],
  ["hit_ratio", "hit ratio", null, pct],
  ["p95_ms", "added p95", null, ms],
  ["error_rate", "error rate", "error_rate", pct],
  ["memory_fraction", "memory / limit", "memory_fraction", pct],
  ["cpu_percent", "CPU %", "cpu_percent", (v) => v.toFixed(0) + " %"],
  ["loop_lag_ms", "event-loop lag", "loop_lag_ms", ms],
];

function renderCharts(history, thresholds) {
  text("h-window", history.points.length + " points, every " + history.resolution_s + " s");
  const box = $("charts");
  box.replaceChildren();
  for (const [field, label, limitName, format] of CHARTS) {
    const column = history.fields.indexOf(field);
    const points = history.points.map((p) => [p[0], p[column]]);
    const limit = limitName ? thresholds[limitName] : null;
    const last = points.length ? format(points[points.length - 1][1]) : "–";
    box.append(el("div", { class: "chart", "data-field": field },
      el("div", { class: "label" }, el("span", {}, label), el("b", {}, last)),
      chart(points, limit, history.window_s)));
  }
}

function chart(points, limit, windowS) {
  const width = 300;
  const height = 90;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  svg.setAttribute("preserveAspectRatio", "none");
  if (!points.length) return svg;
  const end = points[points.length - 1][0];
  const start = end - windowS;
  const top = Math.max(limit || 0, ...points.map((p) => p[1])) * 1.1 || 1;
  const x = (t) => ((t - start) / windowS) * width;
  const y = (v) => height - (v / top) * (height - 4);
  const line = points.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join("");
  const area = line + "L" + x(end).toFixed(1) + " " + height + "L" + x(points[0][0]).toFixed(1) + " " + height + "Z";
  svg.append(svgNode("path", { class: "area", d: area }), svgNode("path", { class: "line", d: line }));
  if (limit) svg.append(svgNode("line", { class: "limit", x1: 0, x2: width, y1: y(limit), y2: y(limit) }));
  return svg;
}

function svgNode(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

// -- cache actions (admin) -------------------------------------------------------------------------

async function loadNamespaces() {
  const stats = await (await api("/api/cache/stats")).json();
  renderCounts("namespaces", Object.fromEntries(
    Object.entries(stats.namespaces).map(([name, c]) => [name + " (" + mib(c.bytes) + ")", c.entries])));
}

async function clearCache(event) {
  event.preventDefault();
  const spec = Object.fromEntries(new FormData(event.target));
  const what = "pr:" + spec.namespace + ":" + spec.content_type + ":" + spec.pattern;
  if (!confirm("Remove every cache entry matching " + what + " in every tier?")) return;
  try {
    const answer = await (await api("/api/cache/clear", { method: "POST", body: JSON.stringify(spec) })).json();
    text("clear-result", "removed " + answer.removed + " entries matching " + answer.pattern);
    loadNamespaces();
  } catch (error) {
    text("clear-result", error.message);
  }
}

async function warmCache(event) {
  event.preventDefault();
  let requests;
  try {
    requests = JSON.parse(event.target.elements.requests.value);
    if (!Array.isArray(requests) || !requests.length) throw new Error("a non-empty JSON list");
  } catch (error) {
    text("warm-result", "paste a JSON list of Messages API bodies (" + error.message + ")");
    return;
  }
  if (!confirm("Send " + requests.length + " requests upstream to warm the cache?")) return;
  const bar = $("warm-progress");
  bar.max = requests.length;
  bar.value = 0;
  bar.classList.remove("hidden");
  try {
    await streamWarm(requests, bar);
  } catch (error) {
    text("warm-result", error.message);
  }
}

// The answer is NDJSON: a line per request as it finishes, then {"done": true, totals}.
async function streamWarm(requests, bar) {
  const response = await api("/api/cache/warm", {
    method: "POST",
    body: JSON.stringify({ requests }),
    headers: { Accept: "application/x-ndjson" },
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const failures = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines.filter(Boolean)) {
      const item = JSON.parse(line);
      if (item.done) {
        text("warm-result", "stored " + item.stored + ", already cached " + item.already_cached +
          ", failed " + item.failed + failures.join(""));
      } else {
        bar.value += 1;
        if (!item.ok) failures.push("; #" + (item.index + 1) + ": " + item.error);
      }
    }
  }
}

// -- wiring ----------------------------------------------------------------------------------------

function start() {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key").value);
    $("key").value = "";
    refresh().then(() => loadNamespaces().catch(() => {}));
  });
  for (const button of document.querySelectorAll("[data-window]")) {
    button.addEventListener("click", () => {
      state.window = button.dataset.window;
      for (const other of document.querySelectorAll("[data-window]")) other.classList.toggle("on", other === button);
      refresh();
    });
  }
  $("clear").addEventListener("submit", clearCache);
  $("warm").addEventListener("submit", warmCache);
  $("ns-refresh").addEventListener("click", () => loadNamespaces().catch((e) => text("status", e.message)));
  refresh().then(() => loadNamespaces().catch(() => {}));
}

start();
