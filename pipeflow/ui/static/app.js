// pipeflow ui: a single-page app over /api, with hand-written SVG charts.
//
// Every value from the API goes into the page as a text node or an attribute (h() and svg()
// below); nothing is parsed as HTML, and the server's Content-Security-Policy forbids inline
// script, so a model name, a run error or an alert message cannot run as code.
//
// Login: where the server has tokens, /api answers 401 (or 403) until the page sends one. The
// page then shows a form; the token entered is kept in this tab's sessionStorage (gone when the
// tab closes; never in a URL or a cookie) and sent as "Authorization: Bearer ..." with every
// fetch. A refused token is dropped and the form shown again with the server's reason; "log out"
// drops it too. Without tokens on the server nothing asks for one.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
  const REFRESH_MS = 5000;
  const main = document.getElementById("main");
  const refreshed = document.getElementById("refreshed");
  let generation = 0; // bumped on every navigation: answers for a page left behind are dropped
  let timer = null;
  const state = { trafficModel: "", bucket: 60, driftModel: "" };
  const TOKEN_KEY = "pipeflow-ui-token";
  const logout = document.getElementById("logout");

  // ------------------------------------------------------------------------------ DOM helpers

  function fill(node, attrs, children) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const h = (tag, attrs, ...children) => fill(document.createElement(tag), attrs, children);
  const svg = (tag, attrs, ...children) => fill(document.createElementNS(SVG_NS, tag), attrs, children);

  // Thrown by api() when the server wants a (valid) token: route() shows the login form.
  class LoginNeeded extends Error {}

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return ""; // storage disabled: every request goes without a token
    }
  }

  function setToken(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    logout.hidden = !value;
  }

  async function api(path) {
    const sent = token();
    const headers = { Accept: "application/json" };
    if (sent) headers.Authorization = `Bearer ${sent}`;
    const response = await fetch(path, { headers });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const why = body && (body.error || body.detail);
      const message = typeof why === "string" ? why : `${response.status} ${response.statusText}`;
      if (response.status === 401 || response.status === 403) {
        if (sent && token() === sent) setToken(""); // refused: ask again
        throw new LoginNeeded(sent ? message : "");
      }
      throw new Error(message);
    }
    return body;
  }

  function loginPage(error) {
    clearInterval(timer);
    timer = null;
    refreshed.textContent = "";
    const input = h("input", {
      type: "password",
      id: "token",
      name: "token",
      autocomplete: "off",
      spellcheck: "false",
      size: 48,
      required: true,
    });
    const form = h(
      "form",
      {
        id: "login",
        on: {
          submit: (event) => {
            event.preventDefault();
            const value = input.value.trim();
            if (!value) return;
            setToken(value);
            route();
          },
        },
      },
      h("label", { for: "token" }, "Bearer token"),
      input,
      h("button", { type: "submit" }, "Log in"),
    );
    const view = [
      h("h1", {}, "Log in"),
      h(
        "p",
        { class: "muted" },
        "This dashboard needs a token with the ",
        h("code", {}, "ui"),
        " scope (or ",
        h("code", {}, "*"),
        "), one of its --tokens. It is kept in this browser tab only, until you log out or close the tab.",
      ),
      error ? h("p", { class: "box-error", id: "login-error", role: "alert" }, error) : null,
      form,
    ];
    main.replaceChildren(...view.filter(Boolean));
    input.focus();
  }

  const link = (hash, text) => h("a", { href: hash }, text);
  const runLink = (id) => (id ? link(`#/runs/${encodeURIComponent(id)}`, id) : "");
  const modelLink = (name) => link(`#/models/${encodeURIComponent(name)}`, name);
  const badge = (text, kind) => h("span", { class: `badge ${kind || text || ""}` }, text);

  function fmtTime(t) {
    return t === null || t === undefined ? "" : new Date(t * 1000).toLocaleString();
  }
  function fmtClock(t, span) {
    const d = new Date(t * 1000);
    if (span > 2 * 86400) return d.toLocaleDateString([], { month: "short", day: "numeric" });
    const opts = { hour: "2-digit", minute: "2-digit" };
    if (span < 600) opts.second = "2-digit";
    return d.toLocaleTimeString([], opts);
  }
  function fmtDuration(s) {
    if (s === null || s === undefined) return "";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 120) return `${s.toFixed(2)} s`;
    return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  }
  function fmtNum(v, digits = 3) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (typeof v !== "number") return String(v);
    return Number.isInteger(v) ? v.toLocaleString() : v.toFixed(digits);
  }
  const BUCKETS = [10, 60, 300, 3600];
  const fmtBucket = (s) => (s < 60 ? `${s} s` : s < 3600 ? `${s / 60} min` : `${s / 3600} h`);
  const fmtPct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)} %`);

  function table(columns, rows, attrs) {
    return h(
      "table",
      attrs || {},
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.title)))),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null }, c.cell(row)))),
        ),
      ),
    );
  }

  function empty(title, ...hint) {
    return h("div", { class: "empty" }, h("p", {}, h("strong", {}, title)), hint.length ? h("p", {}, hint) : null);
  }

  function facts(pairs) {
    return h("dl", { class: "facts" }, pairs.filter((p) => p[1] !== null && p[1] !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  function select(options, value, onChange, label) {
    const node = h(
      "select",
      { "aria-label": label, on: { change: (e) => onChange(e.target.value) } },
      options.map(([v, text]) => h("option", { value: v }, text)),
    );
    node.value = String(value);
    return h("label", {}, `${label} `, node);
  }

  // ----------------------------------------------------------------------------------- charts

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function legend(series) {
    return h(
      "ul",
      { class: "legend" },
      series.map((s, i) =>
        h("li", { "data-series": s.label }, h("span", { class: "swatch", style: { backgroundColor: COLOURS[i % COLOURS.length] } }), s.label),
      ),
    );
  }

  // series: [{label, points: [{x, y, note}]}] (y null: a gap); markers: [{x, label}];
  // x is a time (seconds) unless xFormat says how to write it (e.g. a step number)
  function lineChart({ name, title, series, yFormat = (v) => fmtNum(v, 2), yMax = 0, markers = [], threshold = null, integer = false, xFormat = null, yMin = 0 }) {
    const W = 720, H = 240, L = 58, R = 16, T = 12, B = 30;
    const points = series.flatMap((s) => s.points.filter((p) => p.y !== null && p.y !== undefined));
    const xs = points.map((p) => p.x);
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (!Number.isFinite(x0)) x0 = x1 = xFormat ? 0 : Date.now() / 1000;
    if (x0 === x1) { const pad = xFormat ? 1 : 30; x0 -= pad; x1 += pad; }
    const xText = (x) => (xFormat ? xFormat(x) : fmtTime(x));
    let y1 = niceMax(Math.max(yMax, threshold || 0, ...points.map((p) => p.y)));
    if (integer) y1 = Math.max(4, Math.ceil(y1 / 4) * 4); // whole-number ticks
    // negative values (a log-likelihood, a score of -MSE): the axis goes below zero
    const low = Math.min(yMin, ...points.map((p) => p.y));
    const y0 = low < 0 ? -niceMax(-low) : 0;
    const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const Y = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    for (let i = 0; i <= 4; i++) {
      const v = y0 + ((y1 - y0) * i) / 4;
      root.append(
        svg("line", { class: "grid", x1: L, x2: W - R, y1: Y(v), y2: Y(v) }),
        svg("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end" }, yFormat(v)),
      );
      const t = x0 + ((x1 - x0) * i) / 4;
      root.append(svg("text", { x: X(t), y: H - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, xFormat ? xFormat(t) : fmtClock(t, x1 - x0)));
    }
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: Y(0), y2: Y(0) }));
    if (threshold !== null) root.append(svg("line", { class: "threshold", x1: L, x2: W - R, y1: Y(threshold), y2: Y(threshold) }, svg("title", {}, `threshold ${yFormat(threshold)}`)));
    for (const m of markers) {
      if (m.x < x0 || m.x > x1) continue;
      root.append(svg("line", { class: "marker", x1: X(m.x), x2: X(m.x), y1: T, y2: H - B }, svg("title", {}, `${fmtTime(m.x)}: ${m.label}`)));
    }
    series.forEach((s, i) => {
      const colour = COLOURS[i % COLOURS.length];
      let d = "";
      let pen = false;
      for (const p of s.points) {
        if (p.y === null || p.y === undefined) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`;
        pen = true;
      }
      const g = svg("g", { class: "series", "data-series": s.label });
      if (d) g.append(svg("path", { d, fill: "none", stroke: colour, "stroke-width": 2, "stroke-linejoin": "round" }));
      for (const p of s.points) {
        if (p.y === null || p.y === undefined || p.hide) continue;
        g.append(svg("circle", { class: "point", cx: X(p.x).toFixed(1), cy: Y(p.y).toFixed(1), r: 3, fill: colour, "data-value": p.y }, svg("title", {}, `${s.label}, ${p.note || xText(p.x)}: ${yFormat(p.y)}`)));
      }
      root.append(g);
    });
    return h("figure", { class: "chart-box", "data-chart": name }, h("figcaption", {}, title), root, legend(series));
  }

  // bars: [{label, value, bad}] drawn horizontally, largest first
  function barChart({ name, title, bars, threshold = null, yFormat = (v) => fmtNum(v, 3) }) {
    const rowH = 20, L = 170, R = 60, T = 8, W = 720;
    const H = T + bars.length * rowH + 24;
    const max = niceMax(Math.max(threshold || 0, ...bars.map((b) => b.value || 0)));
    const X = (v) => L + (v / max) * (W - L - R);
    const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      root.append(
        svg("line", { class: "grid", x1: X(v), x2: X(v), y1: T, y2: H - 20 }),
        svg("text", { x: X(v), y: H - 6, "text-anchor": "middle" }, yFormat(v)),
      );
    }
    bars.forEach((b, i) => {
      const y = T + i * rowH;
      const label = b.label.length > 26 ? `${b.label.slice(0, 25)}…` : b.label;
      root.append(
        svg("text", { x: L - 6, y: y + 14, "text-anchor": "end" }, label, svg("title", {}, b.label)),
        svg(
          "rect",
          { class: "bar", x: L, y: y + 3, height: rowH - 6, width: Math.max(1, X(b.value || 0) - L), fill: b.bad ? "#dc2626" : "#2563eb" },
          svg("title", {}, `${b.label}: ${b.value === null ? "not measured" : yFormat(b.value)}${b.note ? ` (${b.note})` : ""}`),
        ),
        svg("text", { x: X(b.value || 0) + 4, y: y + 14 }, b.value === null ? "–" : yFormat(b.value)),
      );
    });
    if (threshold !== null) root.append(svg("line", { class: "threshold", x1: X(threshold), x2: X(threshold), y1: T, y2: H - 20 }, svg("title", {}, `threshold ${threshold}`)));
    return h("figure", { class: "chart-box", "data-chart": name }, h("figcaption", {}, title), root);
  }

  // one bar per stage, from the run's start
  function stageTimeline(run) {
    const stages = run.stages.filter((s) => s.started !== null);
    if (!stages.length) return null;
    const t0 = Math.min(run.started, ...stages.map((s) => s.started));
    const t1 = Math.max(run.ended || 0, ...stages.map((s) => s.ended || s.started)) || t0 + 1;
    const rowH = 20, L = 150, R = 70, W = 720, H = stages.length * rowH + 26;
    const X = (t) => L + ((t - t0) / Math.max(t1 - t0, 1e-3)) * (W - L - R);
    const colour = { done: "#16a34a", cached: "#2563eb", failed: "#dc2626", skipped: "#9ca3af" };
    const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "stage timeline" });
    stages.forEach((s, i) => {
      const y = i * rowH + 4;
      const x = X(s.started), w = Math.max(2, X(s.ended || s.started) - x);
      root.append(
        svg("text", { x: L - 6, y: y + 13, "text-anchor": "end" }, s.stage),
        svg("rect", { x, y: y + 2, width: w, height: rowH - 6, fill: colour[s.state] || "#d97706" }, svg("title", {}, `${s.stage}: ${s.state}, ${fmtDuration(s.duration_s)}`)),
        svg("text", { x: x + w + 4, y: y + 13 }, fmtDuration(s.duration_s)),
      );
    });
    root.append(svg("text", { x: L, y: H - 4 }, "0 s"), svg("text", { x: W - R, y: H - 4, "text-anchor": "end" }, fmtDuration(t1 - t0)));
    return h("figure", { class: "chart-box", "data-chart": "stages" }, h("figcaption", {}, "Stage timeline"), root);
  }

  // ------------------------------------------------------------------------------------ pages

  async function overview() {
    const s = await api("/api/summary");
    const latest = s.runs.latest;
    const production = s.models.filter((m) => m.aliases.production !== undefined);
    return [
      h("h1", {}, "Overview"),
      h(
        "div",
        { class: "cards" },
        h("div", { class: "card" }, h("div", { class: "label" }, "runs"), h("div", { class: "big" }, fmtNum(s.runs.count)),
          latest ? h("div", {}, runLink(latest.id), " ", badge(latest.state)) : h("div", { class: "muted" }, "none yet")),
        h("div", { class: "card" }, h("div", { class: "label" }, "models"), h("div", { class: "big" }, fmtNum(s.models.length)),
          h("div", {}, production.map((m) => h("span", { class: "chip" }, `${m.name}@production v${m.aliases.production}`)))),
        h("div", { class: "card" }, h("div", { class: "label" }, "predictions served"), h("div", { class: "big" }, fmtNum(s.traffic.requests)),
          h("div", { class: "muted" }, `${fmtNum(s.traffic.flagged)} flagged`)),
        h("div", { class: "card" }, h("div", { class: "label" }, "alerts"), h("div", { class: "big" }, fmtNum(s.alerts.total)),
          h("div", { class: "muted" }, s.monitored.length ? `monitoring ${s.monitored.join(", ")}` : "no model monitored yet")),
      ),
      h("h2", {}, "Where"),
      facts([["store", h("code", {}, s.store)], ["metadata", s.db ? h("code", {}, s.db) : "none"], ["audit log", s.audit_dir ? h("code", {}, s.audit_dir) : "none"]]),
    ];
  }

  // A page that lists what `url` answers under `key` in a table (id `${key}-table`) and, where
  // given, `after(data)` below it; when the list is empty, `none`: why, and what makes one.
  async function listPage(title, url, key, none, columns, after) {
    const data = await api(url);
    if (!data[key].length) return [h("h1", {}, title), empty(...none)];
    return [h("h1", {}, title), table(columns, data[key], { id: `${key}-table` }), ...(after ? [await after(data)] : [])];
  }

  function runsPage() {
    return listPage(
      "Runs",
      "/api/runs?limit=200",
      "runs",
      ["No runs recorded yet — run `pipeflow run spec.yaml`", "Runs appear here as soon as they start."],
      [
        { title: "run", cell: (r) => runLink(r.id) },
        { title: "pipeline", cell: (r) => r.pipeline },
        { title: "state", cell: (r) => badge(r.state) },
        { title: "started", cell: (r) => fmtTime(r.started) },
        { title: "duration", cell: (r) => fmtDuration(r.duration_s), num: true },
        { title: "stages", cell: (r) => `${r.n_done} done, ${r.n_cached} cached, ${r.n_failed} failed`, num: true },
        { title: "executor", cell: (r) => r.executor || "" },
        { title: "tags", cell: (r) => Object.entries(r.tags || {}).sort().map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)) },
      ],
      () => metricAcrossRuns(),
    );
  }

  // one logged metric in each run that logged it (its value: the one at its highest step)
  async function metricAcrossRuns() {
    const box = h("div", { id: "metric-runs" });
    const show = async (name) => {
      const q = new URLSearchParams({ limit: 200 });
      if (name) q.set("name", name);
      const m = await api(`/api/metrics?${q}`);
      if (!m.names.length) {
        box.replaceChildren(h("h2", {}, "Metrics across runs"), h("p", { class: "muted" }, "No run logged a metric yet — a stage logs one with ctx.log_metric(name, value, step=)."));
        return;
      }
      const byStage = new Map();
      for (const p of m.points) {
        if (!byStage.has(p.stage)) byStage.set(p.stage, []);
        byStage.get(p.stage).push({ x: p.started, y: p.value, note: `run ${p.run_id}${p.from_run && p.from_run !== p.run_id ? ` (cached from ${p.from_run})` : ""}` });
      }
      const series = [...byStage].map(([stage, points]) => ({ label: `${stage} · ${m.name}`, points }));
      box.replaceChildren(
        h("h2", {}, "Metrics across runs"),
        h("div", { class: "controls" }, select(m.names.map((n) => [n, n]), m.name, (v) => show(v).catch((err) => box.replaceChildren(h("p", { class: "error" }, err.message))), "metric")),
        lineChart({ name: "metric-runs", title: `${m.name} by run (value at its last step)`, series, yFormat: (v) => fmtNum(v, 3) }),
      );
    };
    await show(null);
    return box;
  }

  // a run's logged metrics: the value of each (per stage), and a chart of each that has steps
  function runMetrics(run) {
    const metrics = run.metrics || [];
    if (!metrics.length) return null;
    const groups = new Map(); // name -> stage -> [{step, value}]
    const latest = new Map(); // "stage\u0000name" -> last logged row (rows come by step)
    for (const m of metrics) {
      if (!groups.has(m.name)) groups.set(m.name, new Map());
      const byStage = groups.get(m.name);
      if (!byStage.has(m.stage)) byStage.set(m.stage, []);
      byStage.get(m.stage).push(m);
      latest.set(`${m.stage}\u0000${m.name}`, m);
    }
    const rows = [...latest.values()];
    const counts = (m) => groups.get(m.name).get(m.stage).length;
    const charts = [...groups]
      .filter(([, byStage]) => [...byStage.values()].some((list) => list.length > 1))
      .slice(0, 12)
      .map(([name, byStage]) =>
        lineChart({
          name: `steps-${name}`,
          title: `${name} by step`,
          series: [...byStage].map(([stage, list]) => ({ label: `${stage} · ${name}`, points: list.map((m) => ({ x: m.step, y: m.value, note: `step ${m.step}` })) })),
          xFormat: (x) => (Number.isInteger(x) ? String(x) : x.toFixed(1)),
          yFormat: (v) => fmtNum(v, 3),
        }),
      );
    return [
      h("h2", {}, "Metrics"),
      table(
        [
          { title: "stage", cell: (m) => m.stage },
          { title: "metric", cell: (m) => m.name },
          { title: "value", cell: (m) => fmtNum(m.value, 4), num: true },
          { title: "steps", cell: (m) => fmtNum(counts(m)), num: true },
          { title: "logged by", cell: (m) => (m.from_run && m.from_run !== run.id ? [runLink(m.from_run), " (cached)"] : "this run") },
        ],
        rows,
        { id: "metrics-table" },
      ),
      charts.length ? h("div", { class: "charts" }, charts) : null,
    ];
  }

  async function runPage(id) {
    const run = await api(`/api/runs/${encodeURIComponent(id)}`);
    const failed = run.stages.filter((s) => s.error);
    const params = Object.entries(run.params || {});
    return [
      h("h1", {}, `Run ${run.id} `, badge(run.state)),
      facts([
        ["pipeline", run.pipeline],
        ["spec", run.spec_path ? h("code", {}, run.spec_path) : ""],
        ["started", fmtTime(run.started)],
        ["duration", fmtDuration(run.duration_s)],
        ["executor", run.executor || ""],
        ["host", run.host ? `${run.host} (pid ${run.pid})` : ""],
        ["overrides", run.overrides.length ? run.overrides.join(" ") : ""],
        ["tags", Object.keys(run.tags || {}).length ? Object.entries(run.tags).sort().map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)) : ""],
        ["note", run.note ? h("span", { id: "run-note" }, run.note) : ""],
        ["error", run.error ? h("span", { class: "error" }, run.error) : ""],
      ]),
      stageTimeline(run),
      h("h2", {}, "Stages"),
      table(
        [
          { title: "stage", cell: (s) => s.stage },
          { title: "type", cell: (s) => s.type },
          { title: "state", cell: (s) => badge(s.state) },
          { title: "cache hit", cell: (s) => (s.cache_hit ? "yes" : "no") },
          { title: "started", cell: (s) => fmtTime(s.started) },
          { title: "duration", cell: (s) => fmtDuration(s.duration_s), num: true },
          { title: "attempts", cell: (s) => fmtNum(s.attempts), num: true },
          { title: "reason", cell: (s) => s.reason || "" },
          { title: "error", cell: (s) => (s.error ? h("span", { class: "error" }, s.error) : "") },
        ],
        run.stages,
        { id: "stages-table" },
      ),
      failed.filter((s) => s.traceback).map((s) => h("details", {}, h("summary", {}, `traceback of ${s.stage}`), h("pre", {}, s.traceback))),
      params.length ? [h("h2", {}, "Params"), table([{ title: "name", cell: (p) => p[0] }, { title: "value", cell: (p) => h("code", {}, JSON.stringify(p[1])) }], params)] : null,
      runMetrics(run),
      (run.logged_params || []).length
        ? [h("h2", {}, "Logged params"), table([{ title: "stage", cell: (p) => p.stage }, { title: "name", cell: (p) => p.name }, { title: "value", cell: (p) => h("code", {}, p.value) }], run.logged_params, { id: "logged-params-table" })]
        : null,
      run.outputs.length
        ? [
            h("h2", {}, "Outputs"),
            table(
              [
                { title: "stage", cell: (o) => o.stage },
                { title: "port", cell: (o) => o.port },
                { title: "kind", cell: (o) => o.kind },
                { title: "codec", cell: (o) => o.codec },
                { title: "size", cell: (o) => fmtNum(o.size), num: true },
                { title: "digest", cell: (o) => h("code", {}, String(o.digest).slice(0, 12)) },
              ],
              run.outputs,
            ),
          ]
        : null,
    ];
  }

  function modelsPage() {
    return listPage(
      "Models",
      "/api/models",
      "models",
      ["No models registered yet", "A `promote` stage registers a version when a run reaches it."],
      [
        { title: "model", cell: (m) => modelLink(m.name) },
        { title: "versions", cell: (m) => fmtNum(m.versions), num: true },
        { title: "latest", cell: (m) => `v${m.latest}` },
        { title: "created", cell: (m) => fmtTime(m.latest_created) },
        { title: "aliases", cell: (m) => Object.entries(m.aliases).sort().map(([a, v]) => h("span", { class: "chip" }, `${a} → v${v}`)) },
        { title: "latest metric", cell: (m) => (m.headline ? `${m.headline.metric} ${fmtNum(m.headline.value, 4)}` : "") },
        ],
    );
  }

  async function modelPage(name) {
    const m = await api(`/api/models/${encodeURIComponent(name)}`);
    const lineageBox = h("div", { id: "lineage" });
    const showLineage = async (version) => {
      lineageBox.replaceChildren(h("p", { class: "muted" }, "Loading lineage…"));
      try {
        lineageBox.replaceChildren(lineageView(await api(`/api/models/${encodeURIComponent(name)}/lineage/${version}`)));
      } catch (err) {
        lineageBox.replaceChildren(h("p", { class: "error" }, err.message));
      }
    };
    const metricNames = ["accuracy", "f1_macro", "r2", "rmse"].filter((k) => m.versions.some((v) => v.metrics[k] !== undefined));
    return [
      h("h1", {}, m.name, " ", Object.entries(m.aliases).sort().map(([a, v]) => h("span", { class: "chip" }, `${a} → v${v}`))),
      h("h2", {}, "Versions"),
      table(
        [
          { title: "version", cell: (v) => `v${v.version}` },
          { title: "created", cell: (v) => fmtTime(v.created) },
          { title: "by", cell: (v) => v.user || "" },
          { title: "run", cell: (v) => runLink((v.run || {}).run_id) },
          { title: "estimator", cell: (v) => v.estimator || "" },
          ...metricNames.map((k) => ({ title: k, cell: (v) => fmtNum(v.metrics[k], 4), num: true })),
          { title: "gates", cell: (v) => (v.gates.length ? v.gates.map((g) => h("div", { class: "gate", title: g.detail || "" }, badge(g.passed ? "passed" : "failed", g.passed ? undefined : "failed"), ` ${g.kind} ${g.gate}${typeof g.value === "number" ? ` (${fmtNum(g.value, 4)})` : ""}`)) : "–") },
          { title: "status", cell: (v) => (v.status.startsWith("promoted") ? v.status : h("span", { class: "error" }, v.status)) },
          { title: "aliases", cell: (v) => v.aliases.map((a) => h("span", { class: "chip" }, a)) },
          { title: "", cell: (v) => h("button", { type: "button", on: { click: () => showLineage(v.version) } }, "lineage") },
        ],
        m.versions.slice().reverse(),
        { id: "versions-table" },
      ),
      lineageBox,
      h("h2", {}, "Alias history"),
      m.history.length
        ? table(
            [
              { title: "when", cell: (e) => fmtTime(e.time) },
              { title: "alias", cell: (e) => e.alias },
              { title: "action", cell: (e) => e.action },
              { title: "from", cell: (e) => (e.from_version ? `v${e.from_version}` : "–") },
              { title: "to", cell: (e) => `v${e.to_version}` },
              { title: "by", cell: (e) => e.user || "" },
              { title: "reason", cell: (e) => e.reason || "" },
            ],
            m.history.slice().reverse(),
            { id: "history-table" },
          )
        : empty("No alias has pointed at a version yet", "`pipeflow models promote NAME VERSION --to production`"),
    ];
  }

  function lineageView(l) {
    return h(
      "div",
      {},
      h("h2", {}, `Lineage of ${l.model}`),
      facts([
        ["run", runLink(l.run_id)],
        ["pipeline", l.pipeline || ""],
        ["registered by", l.stage || ""],
        ["model", h("code", {}, String(l.model_digest || "").slice(0, 12))],
        ["training table", h("code", {}, String(l.training_table || "").slice(0, 12))],
        ["note", l.note || ""],
      ]),
      l.stages.length ? table([{ title: "stage", cell: (s) => s.stage }, { title: "type", cell: (s) => s.type }, { title: "state", cell: (s) => badge(s.state) }, { title: "inputs", cell: (s) => s.inputs.join(", ") }], l.stages) : null,
      l.sources.length ? [h("h2", {}, "Sources"), table([{ title: "stage", cell: (s) => s.stage }, { title: "source", cell: (s) => String(s.source) }, { title: "data", cell: (s) => h("code", {}, String(s.digest || "").slice(0, 12)) }], l.sources)] : null,
      h("p", { class: "muted" }, `shares data with: ${l.shared_with.map((s) => s.model).join(", ") || "no other version"}`),
    );
  }

  function trafficView(t) {
    if (!t.series.length) {
      return empty(
        t.model ? `No predictions of ${t.model} recorded yet` : "No predictions recorded yet — start a server with `pipeflow serve NAME@production`",
        t.note || (t.audit_dir ? `Reading the audit log in ${t.audit_dir}.` : ""),
      );
    }
    const markers = t.events.map((e) => ({ x: e.time, label: e.event === "reloaded" ? `reloaded v${e.from_version} → v${e.version}` : `${e.event} v${e.version}: ${e.reason || ""}` }));
    const line = (key, hideZero) =>
      t.series.map((s) => ({
        label: s.label + (s.roles.includes("canary") ? " (canary)" : ""),
        points: s.points.map((p) => ({ x: p.t + t.bucket_s / 2, y: p[key], hide: hideZero && !p.requests })),
      }));
    return [
      h(
        "div",
        { class: "charts" },
        lineChart({ name: "requests", title: `Requests per ${fmtBucket(t.bucket_s)}`, series: line("requests", true), yFormat: (v) => fmtNum(Math.round(v)), markers, integer: true }),
        lineChart({ name: "latency", title: "p95 latency (ms)", series: line("p95_ms", false), yFormat: (v) => fmtNum(v, 1), markers }),
        lineChart({ name: "flagged", title: "Flagged inputs", series: line("flagged", true), yFormat: (v) => fmtNum(Math.round(v)), markers, integer: true }),
      ),
      h("h2", {}, "Versions"),
      table(
        [
          { title: "version", cell: (v) => v.label },
          { title: "role", cell: (v) => v.roles.join(", ") },
          { title: "requests", cell: (v) => fmtNum(v.requests), num: true },
          { title: "flagged", cell: (v) => fmtNum(v.flagged), num: true },
          { title: "p50 ms", cell: (v) => fmtNum(v.p50_ms, 1), num: true },
          { title: "p95 ms", cell: (v) => fmtNum(v.p95_ms, 1), num: true },
          { title: "first", cell: (v) => fmtTime(v.first) },
          { title: "last", cell: (v) => fmtTime(v.last + t.bucket_s) },
        ],
        t.versions,
        { id: "traffic-versions" },
      ),
      h("h2", {}, "Canary and reload events"),
      t.events.length
        ? table(
            [
              { title: "when", cell: (e) => fmtTime(e.time) },
              { title: "event", cell: (e) => badge(e.event, e.event === "canary_withdrawn" ? "failed" : "info") },
              { title: "model", cell: (e) => e.model || "" },
              { title: "version", cell: (e) => (e.from_version ? `v${e.from_version} → v${e.version}` : `v${e.version}`) },
              { title: "detail", cell: (e) => e.reason || (e.alias ? `alias ${e.alias} moved` : "") },
            ],
            t.events.slice().reverse(),
            { id: "traffic-events" },
          )
        : h("p", { class: "muted" }, "None."),
    ];
  }

  async function trafficPage(gen) {
    const body = h("div", { id: "traffic" });
    const controls = h("div", { class: "controls" });
    let shown = null; // the model list the controls were built for (rebuilt only when it changes)
    const load = async () => {
      const q = new URLSearchParams({ bucket_s: state.bucket });
      if (state.trafficModel) q.set("model", state.trafficModel);
      const t = await api(`/api/traffic?${q}`);
      if (JSON.stringify(t.models) !== shown) {
        shown = JSON.stringify(t.models);
        controls.replaceChildren(
          select([["", "all models"], ...t.models.map((m) => [m, m])], state.trafficModel, (v) => { state.trafficModel = v; refreshNow(); }, "model"),
          select(BUCKETS.map((b) => [b, fmtBucket(b)]), state.bucket, (v) => { state.bucket = Number(v); refreshNow(); }, "bucket"),
        );
      }
      return trafficView(t);
    };
    const refreshNow = live(gen, body, load);
    await refreshNow();
    return [h("h1", {}, "Live traffic"), controls, body];
  }

  function driftView(d) {
    if (!d.reports.length) {
      return empty(
        d.model ? `No drift reports for ${d.model} yet` : "No drift reports yet",
        "`pipeflow monitor NAME@production` compares live inputs with the training data and saves a report.",
      );
    }
    const latest = d.latest;
    const series = (key) => [{ label: d.model, points: d.reports.map((r) => ({ x: r.time, y: r[key] })) }];
    const versions = [];
    d.reports.forEach((r, i) => { if (i > 0 && r.version !== d.reports[i - 1].version) versions.push({ x: r.time, label: `v${r.version}` }); });
    const hasAccuracy = d.reports.some((r) => r.accuracy !== null);
    return [
      facts([
        ["latest window", `${fmtTime(latest.window && latest.window.start)} – ${fmtTime(latest.time)}`],
        ["version", latest.version === null ? "" : `v${latest.version}${latest.alias ? ` (${latest.alias})` : ""}`],
        ["rows", fmtNum(latest.rows)],
        ["drift share", [fmtPct(latest.drift_share), " ", latest.drifted ? badge("drifted") : badge("stable", "passed")]],
        ["accuracy", latest.accuracy === null ? "no labelled feedback" : `${fmtNum(latest.accuracy, 4)} (${fmtNum(latest.labelled)} labelled)`],
      ]),
      h(
        "div",
        { class: "charts" },
        lineChart({ name: "drift-share", title: "Share of drifted features", series: series("drift_share"), yMax: 0.25, yFormat: (v) => `${Math.round(v * 100)} %`, markers: versions }),
        hasAccuracy
          ? lineChart({ name: "accuracy", title: "Live accuracy", series: series("accuracy"), yMax: 1, yFormat: (v) => fmtNum(v, 2), markers: versions })
          : h("figure", { class: "chart-box", "data-chart": "accuracy" }, h("figcaption", {}, "Live accuracy"), empty("No labelled feedback yet", "POST outcomes to the server's feedback route.")),
      ),
      ...kpiSections(d, series, versions),
      h("h2", {}, "Per-feature drift in the latest report"),
      latest.features.length
        ? barChart({
            name: "psi",
            title: "PSI by feature (text: PSI of lengths); dashed: 0.2",
            bars: latest.features.map((f) => ({ label: f.name, value: f.psi, bad: f.drifted, note: f.metric === "length_psi" ? "length PSI" : f.role })),
            threshold: 0.2,
          })
        : h("p", { class: "muted" }, "The latest report measured no feature."),
      h("h2", {}, "Reports"),
      table(
        [
          { title: "window end", cell: (r) => fmtTime(r.time) },
          { title: "version", cell: (r) => (r.version === null ? "" : `v${r.version}`) },
          { title: "rows", cell: (r) => fmtNum(r.rows), num: true },
          { title: "drift share", cell: (r) => fmtPct(r.drift_share), num: true },
          { title: "accuracy", cell: (r) => fmtNum(r.accuracy, 4), num: true },
          { title: "prediction PSI", cell: (r) => fmtNum(r.prediction_psi, 3), num: true },
          { title: "p95 ms", cell: (r) => fmtNum(r.p95_ms, 1), num: true },
          { title: "", cell: (r) => (r.drifted ? badge("drifted") : "") },
        ],
        d.reports.slice(-50).reverse(),
        { id: "drift-reports" },
      ),
    ];
  }

  // what the version declared at promotion: its business metrics and bias on labelled traffic
  function kpiSections(d, series, versions) {
    const latest = d.latest;
    const out = [];
    const b = latest.business;
    if (b) {
      const names = Object.keys(b).filter((k) => k !== "rows");
      out.push(
        h("h2", {}, "Business metrics (latest window)"),
        h("div", { id: "business" }, facts([["labelled rows", fmtNum(b.rows)], ...names.map((k) => [k.replaceAll("_", " "), k === "sla_breach_rate" ? fmtPct(b[k]) : fmtNum(b[k], 3)])])),
      );
      const charts = [
        ["cost_per_prediction", "Cost per prediction"],
        ["net_value_per_prediction", "Net value per prediction"],
      ].filter(([k]) => d.reports.some((r) => r[k] !== null));
      if (charts.length) {
        out.push(h("div", { class: "charts fill" }, charts.map(([k, title]) => lineChart({ name: k.replaceAll("_", "-"), title, series: series(k), yFormat: (v) => fmtNum(v, 2), markers: versions }))));
      }
    }
    const bias = latest.bias;
    if (bias) {
      out.push(h("h2", {}, `Bias across ${bias.attribute} (latest window)`));
      const body = [];
      if (bias.note) body.push(h("p", { class: "muted" }, bias.note));
      else {
        body.push(
          facts([
            ["labelled rows", `${fmtNum(bias.rows)} (sensitive values from ${bias.source})`],
            ...Object.entries(bias.differences).map(([k, v]) => [k.replaceAll("_", " "), [fmtNum(v, 4), bias.limits[k] === undefined ? "" : ` (limit ${fmtNum(bias.limits[k], 4)})`]]),
          ]),
          table(
            [
              { title: "group", cell: (g) => g.name },
              { title: "rows", cell: (g) => fmtNum(g.rows), num: true },
              { title: "accuracy", cell: (g) => fmtNum(g.accuracy, 4), num: true },
              { title: "", cell: (g) => (g.excluded ? badge("too few rows", "muted") : "") },
            ],
            bias.groups,
            { id: "bias-groups" },
          ),
        );
      }
      bias.breaches.forEach((x) => body.push(h("p", {}, badge("breached", "failed"), ` ${x.metric} = ${fmtNum(x.value, 4)} > limit ${fmtNum(x.limit, 4)}`)));
      out.push(h("div", { id: "bias" }, body));
      if (d.reports.some((r) => r.bias_difference !== null)) {
        out.push(h("div", { class: "charts fill" }, lineChart({ name: "bias", title: "Demographic parity difference", series: series("bias_difference"), yMax: 0.1, yFormat: (v) => fmtNum(v, 2), markers: versions })));
      }
    }
    return out;
  }

  async function driftPage(gen) {
    const body = h("div", { id: "drift" });
    const controls = h("div", { class: "controls" });
    let shown = null;
    const load = async () => {
      const q = new URLSearchParams();
      if (state.driftModel) q.set("model", state.driftModel);
      const d = await api(`/api/drift?${q}`);
      if (JSON.stringify([d.models, d.model]) !== shown) {
        shown = JSON.stringify([d.models, d.model]);
        controls.replaceChildren(d.models.length ? select(d.models.map((m) => [m, m]), d.model || "", (v) => { state.driftModel = v; refreshNow(); }, "model") : "");
      }
      return driftView(d);
    };
    const refreshNow = live(gen, body, load);
    await refreshNow();
    return [h("h1", {}, "Drift and accuracy"), controls, body];
  }

  function alertsPage() {
    return listPage(
      "Alerts",
      "/api/alerts",
      "alerts",
      ["No alerts fired yet", "`pipeflow monitor NAME@production --rules rules.yaml` fires alerts when a rule is broken."],
      [
        { title: "when", cell: (a) => fmtTime(a.time) },
        { title: "severity", cell: (a) => badge(a.severity || "warning") },
        { title: "model", cell: (a) => (a.model ? [modelLink(a.model), a.version !== null && a.version !== undefined ? ` v${a.version}` : ""] : "") },
        { title: "rule", cell: (a) => a.rule || a.key || "" },
        { title: "value", cell: (a) => (a.metric ? `${a.metric} ${fmtNum(a.value)} ${a.op || ""} ${fmtNum(a.threshold)}` : "") },
        { title: "message", cell: (a) => a.message || "" },
      ],
      (data) => (data.total > data.alerts.length ? h("p", { class: "muted" }, `the latest ${data.alerts.length} of ${data.total}`) : null),
    );
  }

  // ---------------------------------------------------------------------------------- routing

  // Re-fetch this page's data every REFRESH_MS while it is shown; returns "refresh now".
  function live(gen, container, load) {
    let busy = false;
    const tick = async () => {
      if (gen !== generation || busy) return;
      busy = true;
      try {
        const view = await load();
        if (gen !== generation) return;
        container.replaceChildren(...[view].flat(Infinity).filter(Boolean));
        refreshed.textContent = `updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`;
      } catch (err) {
        if (err instanceof LoginNeeded) {
          if (gen === generation) {
            generation++;
            loginPage(err.message);
          }
          return;
        }
        if (gen === generation) refreshed.textContent = `refresh failed: ${err.message}`;
        if (!container.childNodes.length) throw err;
      } finally {
        busy = false;
      }
    };
    clearInterval(timer);
    timer = setInterval(tick, REFRESH_MS);
    return tick;
  }

  const ROUTES = [
    [/^\/?$/, overview],
    [/^\/runs$/, runsPage],
    [/^\/runs\/(.+)$/, runPage],
    [/^\/models$/, modelsPage],
    [/^\/models\/([^/]+)$/, modelPage],
    [/^\/traffic$/, trafficPage, true],
    [/^\/drift$/, driftPage, true],
    [/^\/alerts$/, alertsPage],
  ];

  async function route() {
    const gen = ++generation;
    clearInterval(timer);
    timer = null;
    refreshed.textContent = "";
    const path = location.hash.replace(/^#/, "") || "/";
    const section = path.split("/")[1] || "";
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.route === section);
    const found = ROUTES.map(([re, page, isLive]) => [path.match(re), page, isLive]).find(([m]) => m);
    if (!found) {
      main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No page at ", h("code", {}, path), ". ", link("#/", "Overview")));
      return;
    }
    const [match, page, isLive] = found;
    let args;
    try {
      args = match.slice(1).map(decodeURIComponent);
    } catch (_) {
      args = match.slice(1);
    }
    try {
      const view = await (isLive ? page(gen) : page(...args));
      if (gen === generation) main.replaceChildren(...[view].flat(Infinity).filter(Boolean));
    } catch (err) {
      if (gen === generation) {
        clearInterval(timer);
        if (err instanceof LoginNeeded) loginPage(err.message);
        else main.replaceChildren(h("div", { class: "box-error" }, err.message));
      }
    }
  }

  logout.addEventListener("click", () => {
    setToken("");
    ++generation;
    loginPage("");
  });
  logout.hidden = !token();
  window.addEventListener("hashchange", route);
  route();
})();
