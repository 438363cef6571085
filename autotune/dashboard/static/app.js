// AutoTune dashboard: plain JavaScript, no build step. Pages are hash routes:
//   #/                      studies
//   #/studies/{name}[?trial=N]  a study: figures, trial table, a trial's details (live)
//   #/models[/{name}]       the model registry (when the server mounts it)
//   #/serving               serving status and metrics
//   #/features              feature groups
// Every value from the server is put in the page as text (never as HTML).
"use strict";

const POLL_MS = 3000;
const PAGE_SIZES = [25, 50, 100, 250];
const PLOT_CONFIG = { responsive: true, displaylogo: false };

// Figures that take the page's full width.
const WIDE_KINDS = new Set(["parallel_coordinates", "slice"]);
// The page loads a plotly.js bundle of these traces only (index.html; scripts/
// build_plotly_bundle.sh): every figure of a study but a 3-D one. A page with any other trace
// loads the full plotly.js once, before it draws a figure (it then replaces the bundle's as
// window.Plotly).
const BUNDLED_TRACES = new Set(["bar", "contour", "heatmap", "scatter"]);
const FULL_PLOTLY = "/dashboard/static/plotly.min.js";
let fullPlotly = null;

let pollTimer = null;
let routeToken = 0;
let capabilities = null;

// ---------------------------------------------------------------------------------- helpers
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  let body = null;
  const text = await r.text();
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = text; }
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

const enc = encodeURIComponent;
const main = () => document.getElementById("main");

function fmtNum(v) {
  if (v === null || v === undefined) return "";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(4) : v.toPrecision(6).replace(/\.?0+$/, "");
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function badge(text, cls) {
  return h("span", { class: `badge ${cls || "state-" + text}` }, text);
}

function showError(where, err) {
  where.replaceChildren(h("p", { class: "error" }, String(err && err.message ? err.message : err)));
}

function setLive(on) {
  document.getElementById("live").hidden = !on;
}

function stopPolling() {
  if (pollTimer) clearTimeout(pollTimer);
  pollTimer = null;
  setLive(false);
}

async function getCapabilities() {
  if (!capabilities) capabilities = await api("/dashboard/api/capabilities");
  return capabilities;
}

function table(headers, rows, opts) {
  const thead = h("thead", {}, h("tr", {}, headers.map((x) => (x instanceof Node ? x : h("th", {}, x)))));
  return h("div", { class: "table-wrap" }, h("table", opts || {}, thead, h("tbody", {}, rows)));
}

// A study page's data is requested as soon as this script runs, while plotly.js is still being
// parsed (both scripts are deferred, this one first).
function studyPageUrl(name) {
  return `/dashboard/api/studies/${enc(name)}/page`;
}
const early = (() => {
  const { parts } = parseHash();
  if (parts[0] === "studies" && parts.length >= 2) {
    const url = studyPageUrl(parts[1]);
    return { url, promise: api(url) };
  }
  return null;
})();
if (early) early.promise.catch(() => {});  // handled when the page is drawn

function fetchStudyPage(name) {
  const url = studyPageUrl(name);
  if (early && early.url === url && !early.used) {
    early.used = true;
    return early.promise;
  }
  return api(url);
}

// ----------------------------------------------------------------------------------- router
function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query || "") };
}

async function route() {
  const token = ++routeToken;
  stopPolling();
  const { parts, query } = parseHash();
  const section = parts[0] || "studies";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === (section === "studies" ? "studies" : section));
  }
  window.__dashboardReady = false;
  window.__dashboardAllDrawn = false;
  window.__dashboardFirstScreenAt = null;
  window.__dashboardAllDrawnAt = null;
  try {
    if (section === "studies" && parts.length >= 2) await studyPage(parts[1], query, token);
    else if (section === "models" && parts.length >= 2) await modelPage(parts[1], token);
    else if (section === "models") await modelsPage(token);
    else if (section === "serving") await servingPage(token);
    else if (section === "features") await featuresPage(token);
    else await studiesPage(token);
  } catch (err) {
    if (token === routeToken) showError(main(), err);
  }
  if (token === routeToken) window.__dashboardReady = true;
}

// ---------------------------------------------------------------------------------- studies
async function studiesPage(token) {
  const data = await api("/dashboard/api/studies?limit=1000");
  if (token !== routeToken) return;
  const rows = data.items.map((s) => {
    const best = s.best.values
      ? Object.entries(s.best.values).filter(([k]) => k in s.objectives).map(([k, v]) => `${k}=${fmtNum(v)}`).join(", ")
      : s.best.n_pareto ? `${s.best.n_pareto} on the Pareto front` : "";
    return h("tr", { class: "clickable", onclick: () => (location.hash = `#/studies/${enc(s.name)}`) },
      h("td", {}, h("a", { href: `#/studies/${enc(s.name)}` }, s.name)),
      h("td", {}, badge(s.state)),
      h("td", { class: "num" }, s.n_trials),
      h("td", {}, Object.entries(s.objectives).map(([k, v]) => `${k} (${v})`).join(", ")),
      h("td", {}, best),
      h("td", {}, fmtTime(s.last_update)));
  });
  main().replaceChildren(
    h("h1", {}, "Studies"),
    h("p", { class: "muted" }, `${data.total} ${data.total === 1 ? "study" : "studies"}`),
    data.items.length
      ? table(["Study", "State", "Trials", "Objectives", "Best", "Last update"], rows, { id: "studies-table" })
      : h("p", { class: "card" }, "No studies yet. Create one with the client or POST /v1/studies."));
  schedule(token, () => studiesPage(token));
}

function schedule(token, fn) {
  if (token !== routeToken) return;
  setLive(true);
  pollTimer = setTimeout(async () => {
    if (token !== routeToken) return;
    if (document.hidden) return schedule(token, fn);
    try { await fn(); } catch (err) { console.warn("refresh failed:", err.message); schedule(token, fn); }
  }, POLL_MS);
}

// ------------------------------------------------------------------------------------ study
async function studyPage(name, query, token) {
  const data = await fetchStudyPage(name);
  if (token !== routeToken) return;
  const summary = data.summary;
  const study = summary.study;
  const state = {
    name, study, version: summary.version, offset: 0, limit: 50, sort: "number", order: "asc",
    q: "", filterState: "", selected: query.get("trial"),
  };
  const header = h("div", { id: "study-header" });
  const figures = h("div", { class: "figures", id: "figures" });
  const tableBox = h("div", { id: "trial-table" });
  const detail = h("div", { id: "trial-detail" });
  main().replaceChildren(header, h("h2", {}, "Figures"), figures, h("h2", {}, "Trials"), tableBox, detail);
  renderStudyHeader(header, summary);
  for (const p of summary.plots) {
    figures.append(h("div", { class: "figure" + (WIDE_KINDS.has(p.kind) ? " wide" : ""), id: `fig-${p.kind}`, "data-kind": p.kind },
      h("div", { class: "placeholder" }, `${p.title}…`)));
  }
  renderTable(state, tableBox, detail, token, data.table);
  const ready = plotlyFor(traceTypes(Object.values(data.figures)));
  const detailShown = state.selected !== null ? showTrial(state, detail, Number(state.selected)) : null;
  await ready;
  await drawFigures(state, data.figures, token);
  if (detailShown) await detailShown;
  if (token !== routeToken) return;
  const poll = async () => {
    const s = await api(`/dashboard/api/studies/${enc(name)}`);
    if (token !== routeToken) return;
    if (s.version !== state.version) {
      const fresh = await api(studyPageUrl(name));
      if (token !== routeToken) return;
      state.version = fresh.summary.version;
      renderStudyHeader(header, fresh.summary);
      await plotlyFor(traceTypes(Object.values(fresh.figures)));
      await Promise.all([drawFigures(state, fresh.figures, token), loadTable(state, tableBox, detail, token)]);
    }
    schedule(token, poll);
  };
  if (study.state !== "completed" || summary.counts.running > 0) schedule(token, poll);
}

function plotlyLoaded() {
  if (window.Plotly) return Promise.resolve();
  return new Promise((resolve) => window.addEventListener("load", resolve, { once: true }));
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const el = h("script", { src });
    el.onload = resolve;
    el.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(el);
  });
}

function traceTypes(figures) {
  const types = new Set();
  for (const fig of figures) for (const t of (fig && fig.data) || []) types.add(t.type || "scatter");
  return types;
}

// Resolves once a plotly.js that draws every trace type in ``types`` is window.Plotly.
async function plotlyFor(types) {
  await plotlyLoaded();
  if (!fullPlotly && [...types].some((t) => !BUNDLED_TRACES.has(t))) {
    fullPlotly = loadScript(FULL_PLOTLY);
  }
  if (fullPlotly) await fullPlotly;
  if (!window.__plotlyReadyAt) {
    window.__plotlyReadyAt = performance.now();
    performance.mark("plotly:ready");
  }
}

function renderStudyHeader(box, summary) {
  const s = summary.study;
  const c = summary.counts;
  const best = summary.best.values
    ? Object.entries(summary.best.values).filter(([k]) => k in s.objectives).map(([k, v]) => `${k} = ${fmtNum(v)}`).join(", ") + ` (trial ${summary.best.number})`
    : summary.best.n_pareto ? `${summary.best.n_pareto} trials on the Pareto front` : "none yet";
  const stat = (v, label, id) => h("div", { class: "stat", id }, h("b", {}, v), h("span", {}, label));
  box.replaceChildren(
    h("h1", {}, s.name, " ", badge(s.state)),
    h("p", { class: "muted" },
      `Objectives: ${Object.entries(s.objectives).map(([k, v]) => `${k} (${v})`).join(", ")} · algorithm ${s.algorithm}`
      + (s.designer_info && s.designer_info.designer ? ` (${s.designer_info.designer})` : "")
      + ` · created ${fmtTime(s.created_at)}`),
    h("div", { class: "stats" },
      stat(s.n_trials, "trials", "stat-trials"),
      stat(c.completed, "completed"), stat(c.running, "running"), stat(c.pruned, "pruned"),
      stat(c.failed, "failed"), stat(c.abandoned, "abandoned"),
      h("div", { class: "stat" }, h("b", {}, best), h("span", {}, "best"))));
}

async function drawOne(el, fig) {
  if (fig && fig.error) {
    showError(el, fig.error.message);
    return;
  }
  const ph = el.querySelector(".placeholder");
  if (ph) ph.remove();
  const layout = Object.assign({}, fig.layout, { autosize: true });
  if (!layout.height) layout.height = 380;
  await Plotly.react(el, fig.data, layout, PLOT_CONFIG);
  performance.mark(`drawn:${el.dataset.kind}`);
  el.dataset.drawn = "1";
}

// The page records when its first screen (the figures in the first viewport) and when every
// figure was drawn, for the benchmark and the browser tests.
function nextFrame() {
  return new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
}

function markDrawn() {
  const figs = [...document.querySelectorAll(".figure")];
  const done = (f) => f.dataset.drawn === "1" || f.querySelector(".error");
  const visible = figs.filter((f) => f.getBoundingClientRect().top < window.innerHeight);
  if (window.__dashboardFirstScreenAt === null && visible.every(done)) {
    window.__dashboardFirstScreenAt = performance.now();
  }
  if (window.__dashboardAllDrawnAt === null && figs.length && figs.every(done)) {
    window.__dashboardAllDrawnAt = performance.now();
    window.__dashboardAllDrawn = true;
  }
}

async function drawFigures(state, figures, token) {
  // In page order. Until the first screen is shown each figure is painted before the next is
  // drawn; below it they are drawn back to back (yielding to input between them) and painted
  // together, which saves a frame each.
  for (const [kind, fig] of Object.entries(figures)) {
    const el = document.getElementById(`fig-${kind}`);
    if (!el || token !== routeToken) continue;
    await drawOne(el, fig);
    if (window.__dashboardFirstScreenAt === null) {
      await nextFrame();
      markDrawn();
    } else {
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
  await nextFrame();
  markDrawn();
}

function columnsOf(study) {
  const cols = [
    { key: "number", label: "#", num: true, get: (r) => r.number },
    { key: "state", label: "State", get: (r) => badge(r.state) },
  ];
  for (const m of [...Object.keys(study.objectives), ...Object.keys(study.constraints || {})]) {
    cols.push({ key: `values.${m}`, label: m, num: true, get: (r) => fmtNum(r.values[m]) });
  }
  for (const p of Object.keys(study.space)) {
    cols.push({ key: `params.${p}`, label: p, num: study.space[p].type !== "categorical", get: (r) => fmtNum(r.params[p]) });
  }
  cols.push({ key: "duration", label: "Duration", num: true, get: (r) => fmtDuration(r.duration) });
  cols.push({ key: "client_id", label: "Worker", get: (r) => r.client_id || "" });
  cols.push({ key: "n_steps", label: "Steps", num: true, sortable: false, get: (r) => r.n_steps || "" });
  return cols;
}

async function loadTable(state, box, detail, token) {
  const qs = new URLSearchParams({
    offset: state.offset, limit: state.limit, sort: state.sort, order: state.order, q: state.q,
  });
  if (state.filterState) qs.set("state", state.filterState);
  // Loads can answer out of order: only the latest one asked for draws the table.
  const seq = (state.tableSeq = (state.tableSeq || 0) + 1);
  let page;
  try {
    page = await api(`/dashboard/api/studies/${enc(state.name)}/trials?${qs}`);
  } catch (err) {
    if (token === routeToken && seq === state.tableSeq) showError(box, err);
    return;
  }
  if (token !== routeToken || seq !== state.tableSeq) return;
  renderTable(state, box, detail, token, page);
}

function renderTable(state, box, detail, token, page) {
  const cols = columnsOf(state.study);
  const headers = cols.map((c) => {
    const sortable = c.sortable !== false;
    const cls = [sortable ? "sortable" : "", state.sort === c.key ? `sorted-${state.order}` : ""].join(" ").trim();
    return h("th", {
      class: cls || null, "data-key": c.key,
      onclick: sortable ? () => {
        if (state.sort === c.key) state.order = state.order === "asc" ? "desc" : "asc";
        else { state.sort = c.key; state.order = "asc"; }
        state.offset = 0;
        loadTable(state, box, detail, token);
      } : null,
    }, c.label);
  });
  const rows = page.items.map((r) => h("tr", {
    class: "clickable" + (String(r.number) === String(state.selected) ? " selected" : ""),
    "data-number": r.number,
    onclick: () => {
      state.selected = r.number;
      history.replaceState(null, "", `#/studies/${enc(state.name)}?trial=${r.number}`);
      for (const tr of box.querySelectorAll("tbody tr")) tr.classList.toggle("selected", tr.dataset.number === String(r.number));
      showTrial(state, detail, r.number);
    },
  }, cols.map((c) => h("td", { class: c.num ? "num" : null }, c.get(r)))));
  const last = Math.min(page.offset + page.items.length, page.total);
  // What is typed but not yet applied (Enter) survives a redraw of the controls, and so
  // does the focus.
  const filter = h("input", {
    type: "search", id: "trial-filter", placeholder: "filter: lr<0.01 state=completed rbf",
    value: state.qDraft ?? state.q,
  });
  filter.addEventListener("input", () => { state.qDraft = filter.value; });
  filter.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { state.q = filter.value.trim(); state.offset = 0; loadTable(state, box, detail, token); }
  });
  const typing = document.activeElement && document.activeElement.id === "trial-filter";
  const stateSel = h("select", { id: "trial-state", onchange: (e) => { state.filterState = e.target.value; state.offset = 0; loadTable(state, box, detail, token); } },
    ["", "completed", "running", "pruned", "failed", "abandoned"].map((s) => h("option", { value: s, selected: s === state.filterState }, s || "all states")));
  const sizeSel = h("select", { id: "trial-page-size", onchange: (e) => { state.limit = Number(e.target.value); state.offset = 0; loadTable(state, box, detail, token); } },
    PAGE_SIZES.map((n) => h("option", { value: n, selected: n === state.limit }, `${n} / page`)));
  const prev = h("button", { id: "trial-prev", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - state.limit); loadTable(state, box, detail, token); } }, "◀ Prev");
  const next = h("button", { id: "trial-next", disabled: last >= page.total, onclick: () => { state.offset += state.limit; loadTable(state, box, detail, token); } }, "Next ▶");
  box.replaceChildren(
    h("div", { class: "controls" }, filter, stateSel, sizeSel, prev, next,
      h("span", { class: "muted", id: "trial-count", "data-total": page.total, "data-n-trials": page.n_trials },
        page.total ? `${page.offset + 1}–${last} of ${page.total}` + (page.total !== page.n_trials ? ` (filtered from ${page.n_trials})` : "") : `0 of ${page.n_trials}`)),
    table(headers, rows, { id: "trials" }));
  if (typing) {
    filter.focus();
    filter.setSelectionRange(filter.value.length, filter.value.length);
  }
}

async function showTrial(state, box, number) {
  let t;
  try {
    t = await api(`/v1/studies/${enc(state.name)}/trials/${number}`);
  } catch (err) {
    showError(box, err);
    return;
  }
  const kv = (obj) => h("table", { class: "kv" }, h("tbody", {},
    Object.entries(obj || {}).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : fmtNum(v))))));
  const info = {
    state: t.state, worker: t.client_id || "", started: fmtTime(t.created_at), finished: fmtTime(t.completed_at),
    "last heartbeat": fmtTime(t.heartbeat_at),
  };
  const curve = h("div", { id: "trial-curve", style: "min-height: 300px" });
  box.replaceChildren(
    h("h2", {}, `Trial ${t.number}`),
    h("div", { class: "detail" },
      h("div", { class: "card" },
        h("h3", {}, "Parameters"), kv(t.params),
        h("h3", {}, "Metrics"), t.values ? kv(t.values) : h("p", { class: "muted" }, "no values"),
        h("h3", {}, "Trial"), kv(info),
        Object.keys(t.metadata || {}).length ? [h("h3", {}, "Metadata"), h("pre", {}, JSON.stringify(t.metadata, null, 2))] : null,
        t.error ? [h("h3", {}, "Error"), h("pre", { class: "error", id: "trial-error" }, t.error)] : null),
      h("div", { class: "card" }, h("h3", {}, "Intermediate values"),
        t.intermediate.length ? curve : h("p", { class: "muted" }, "This trial reported no intermediate values."))));
  if (t.intermediate.length) {
    await plotlyFor(new Set(["scatter"]));
    await Plotly.react(curve, [{
      x: t.intermediate.map((m) => m.step), y: t.intermediate.map((m) => m.value),
      mode: "lines+markers", name: `trial ${t.number}`,
    }], { height: 300, margin: { l: 50, r: 10, t: 10, b: 40 }, xaxis: { title: { text: "step" } },
      yaxis: { title: { text: Object.keys(state.study.objectives)[0] } } }, PLOT_CONFIG);
  }
}

// ----------------------------------------------------------------------------------- models
async function modelsPage(token) {
  const caps = await getCapabilities();
  if (token !== routeToken) return;
  if (!caps.models) {
    main().replaceChildren(h("h1", {}, "Models"),
      h("p", { class: "card", id: "no-models" }, "This server has no model registry mounted, so there are no models to show."));
    return;
  }
  const data = await api("/v1/models");
  if (token !== routeToken) return;
  const rows = data.models.map((m) => h("tr", { class: "clickable", onclick: () => (location.hash = `#/models/${enc(m.name)}`) },
    h("td", {}, h("a", { href: `#/models/${enc(m.name)}` }, m.name)),
    h("td", { class: "num" }, m.latest_version ?? ""),
    h("td", { class: "num" }, m.versions.length),
    h("td", {}, Object.entries(m.aliases).map(([a, v]) => badge(`${a} → v${v}`, "state-completed"))),
    h("td", {}, m.description || ""),
    h("td", {}, fmtTime(m.created_at))));
  main().replaceChildren(h("h1", {}, "Models"),
    data.models.length
      ? table(["Model", "Latest", "Versions", "Aliases", "Description", "Created"], rows, { id: "models-table" })
      : h("p", { class: "card", id: "no-models" }, "No models are registered yet."));
}

function lineageCell(lin) {
  if (!lin) return "";
  const out = [];
  if (lin.study) {
    const href = `#/studies/${enc(lin.study)}` + (lin.trial !== null && lin.trial !== undefined ? `?trial=${lin.trial}` : "");
    out.push(h("a", { href, class: "lineage" }, `study ${lin.study}` + (lin.trial !== null && lin.trial !== undefined ? `, trial ${lin.trial}` : "")));
  }
  for (const k of ["dataset", "dataset_version", "feature_set", "feature_set_version", "code_version"]) {
    if (lin[k]) out.push(h("div", { class: "muted" }, `${k.replace(/_/g, " ")}: ${lin[k]}`));
  }
  return out;
}

async function modelPage(name, token) {
  const m = await api(`/v1/models/${enc(name)}`);
  if (token !== routeToken) return;
  const versions = m.model_versions.map((v) => h("tr", {},
    h("td", { class: "num" }, `v${v.version}`),
    h("td", {}, v.aliases.map((a) => badge(a, "state-completed"))),
    h("td", {}, Object.entries(v.metrics).map(([k, x]) => `${k}=${fmtNum(x)}`).join(", ")),
    h("td", {}, lineageCell(v.lineage)),
    h("td", {}, `${v.artifact.format}, ${(v.artifact.size / 1024).toFixed(1)} KiB`),
    h("td", {}, v.created_by || ""),
    h("td", {}, fmtTime(v.created_at))));
  const events = m.history.map((e) => h("tr", {},
    h("td", {}, fmtTime(e.created_at)), h("td", {}, e.alias),
    h("td", {}, e.from_version === null ? "—" : `v${e.from_version}`),
    h("td", {}, e.to_version === null ? "removed" : `v${e.to_version}`),
    h("td", {}, e.actor || ""), h("td", {}, e.reason || "")));
  const comps = (m.comparisons || []).map((c) => h("tr", {},
    h("td", {}, fmtTime(c.created_at)), h("td", {}, c.alias), h("td", {}, `v${c.candidate_version}`),
    h("td", {}, c.incumbent_version === null ? "—" : `v${c.incumbent_version}`),
    h("td", {}, `${c.metric} (${c.direction}): ${fmtNum(c.candidate_value)} vs ${fmtNum(c.incumbent_value)}`),
    h("td", {}, c.promoted ? badge("promoted", "state-completed") : badge("kept", "state-abandoned")),
    h("td", {}, c.reason)));
  main().replaceChildren(
    h("p", {}, h("a", { href: "#/models" }, "← Models")),
    h("h1", {}, m.name, " ", Object.entries(m.aliases).map(([a, v]) => badge(`${a} → v${v}`, "state-completed"))),
    m.description ? h("p", { class: "muted" }, m.description) : null,
    h("h2", {}, "Versions"),
    table(["Version", "Aliases", "Test metrics", "Lineage", "Artifact", "By", "Created"], versions, { id: "versions-table" }),
    h("h2", {}, "Alias history"),
    events.length ? table(["When", "Alias", "From", "To", "Actor", "Reason"], events, { id: "alias-history" })
      : h("p", { class: "muted" }, "No alias has been set."),
    comps.length ? [h("h2", {}, "Promotion decisions"), table(["When", "Alias", "Candidate", "Incumbent", "Metric", "Decision", "Reason"], comps)] : null);
}

// ---------------------------------------------------------------------------------- serving
function parsePrometheus(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const lm of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]] = lm[2];
    samples.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return samples;
}

function quantileFromBuckets(buckets, q) {
  // buckets: [[le, cumulative count]] sorted by le; linear within the bucket, as PromQL does.
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (!isFinite(le)) return prevLe;
      return prevLe + (le - prevLe) * ((rank - prevCount) / Math.max(count - prevCount, 1e-12));
    }
    prevLe = le; prevCount = count;
  }
  return prevLe;
}

async function servingPage(token) {
  const caps = await getCapabilities();
  if (token !== routeToken) return;
  const parts = [h("h1", {}, "Serving")];
  if (!caps.serving_status && !caps.serving_metrics) {
    parts.push(h("p", { class: "card", id: "no-serving" }, "This server runs no model server, so there are no serving metrics."));
    main().replaceChildren(...parts);
    return;
  }
  if (caps.serving_status) {
    const st = await api("/v1/serving/status");
    parts.push(h("div", { class: "stats" },
      h("div", { class: "stat" }, h("b", {}, st.ready ? "ready" : "not ready"), h("span", {}, "server")),
      h("div", { class: "stat" }, h("b", {}, (st.loaded || []).length), h("span", {}, "versions loaded"))),
      h("h2", {}, "Aliases"),
      table(["Model:alias", "Version"], Object.entries(st.aliases || {}).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", { class: "num" }, v)))),
      st.last_poll_error ? h("p", { class: "error" }, `last registry poll failed: ${st.last_poll_error}`) : null,
      (st.failed_loads || []).length ? h("p", { class: "error" }, `failed loads: ${st.failed_loads.join(", ")}`) : null);
  }
  if (caps.serving_metrics) {
    const r = await fetch("/metrics");
    const samples = parsePrometheus(await r.text());
    const groups = new Map();
    const keyOf = (l) => `${l.model || ""}|${l.version || ""}|${l.alias || ""}`;
    const g = (l) => {
      const k = keyOf(l);
      if (!groups.has(k)) groups.set(k, { labels: l, requests: 0, errors: 0, rows: 0, buckets: new Map(), sum: 0, count: 0 });
      return groups.get(k);
    };
    for (const s of samples) {
      const n = s.name.replace(/^autotune_serving_/, "");
      if (n === "requests_total" || n === "requests") g(s.labels).requests += s.value;
      else if (n === "errors_total" || n === "errors") g(s.labels).errors += s.value;
      else if (n === "rows_total" || n === "rows") g(s.labels).rows += s.value;
      else if (n === "request_duration_seconds_bucket") {
        const b = g(s.labels).buckets;
        const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
        b.set(le, (b.get(le) || 0) + s.value);
      } else if (n === "request_duration_seconds_sum") g(s.labels).sum += s.value;
      else if (n === "request_duration_seconds_count") g(s.labels).count += s.value;
    }
    const rows = [...groups.values()].filter((x) => x.labels.model).map((x) => {
      const buckets = [...x.buckets.entries()].sort((a, b) => a[0] - b[0]);
      const ms = (v) => (v === null ? "" : `${(v * 1000).toFixed(2)} ms`);
      return h("tr", {}, h("td", {}, x.labels.model), h("td", {}, x.labels.version || ""), h("td", {}, x.labels.alias || ""),
        h("td", { class: "num" }, x.requests), h("td", { class: "num" }, x.errors), h("td", { class: "num" }, x.rows),
        h("td", { class: "num" }, x.count ? ms(x.sum / x.count) : ""),
        h("td", { class: "num" }, ms(quantileFromBuckets(buckets, 0.5))), h("td", { class: "num" }, ms(quantileFromBuckets(buckets, 0.99))));
    });
    parts.push(h("h2", {}, "Requests"), rows.length
      ? table(["Model", "Version", "Alias", "Requests", "Errors", "Rows", "Mean", "p50", "p99"], rows, { id: "serving-metrics" })
      : h("p", { class: "muted", id: "serving-metrics-empty" }, "No prediction requests yet."));
  }
  if (token !== routeToken) return;
  main().replaceChildren(...parts);
  schedule(token, () => servingPage(token));
}

// --------------------------------------------------------------------------------- features
async function featuresPage(token) {
  const caps = await getCapabilities();
  if (token !== routeToken) return;
  let groups = [];
  if (caps.feature_groups) {
    const data = await api("/v1/feature-groups");
    groups = Array.isArray(data) ? data : data.items || data.feature_groups || data.groups || [];
  }
  if (token !== routeToken) return;
  if (!groups.length) {
    main().replaceChildren(h("h1", {}, "Feature groups"),
      h("p", { class: "card", id: "no-features" }, caps.feature_groups
        ? "No feature groups are registered."
        : "No feature groups are registered (this server has no feature store)."));
    return;
  }
  const cols = ["name", "version", "entity", "entities", "event_time", "features", "owner", "ttl", "ttl_s", "description"]
    .filter((k) => groups.some((g) => g[k] !== undefined));
  const cell = (v) => (Array.isArray(v) ? v.map((x) => (typeof x === "object" ? x.name || JSON.stringify(x) : x)).join(", ")
    : typeof v === "object" && v !== null ? JSON.stringify(v) : v ?? "");
  main().replaceChildren(h("h1", {}, "Feature groups"),
    table(cols, groups.map((g) => h("tr", {}, cols.map((k) => h("td", {}, cell(g[k]))))), { id: "features-table" }));
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
