// fireharness trajectory viewer. Plain JavaScript, no build step.
// Every string from a run (questions, model text, observations, run names) is untrusted: elements are
// built with h(), which puts data only into text nodes and attribute values, never into innerHTML.
"use strict";

const STATIC = window.FH_MODE === "static"; // an --export folder opened from disk: data comes in data/*.js
const CHUNK = 100; // episodes per file in an export (fireharness/view/export.py)
const ROW_H = 30; // px, one row of the virtual episode table (--row in style.css)
const POLL_MS = 2000;

// ---- data ------------------------------------------------------------------------------------
const store = new Map();
const waiting = new Map();
window.FH = {
  put(key, payload) {
    store.set(key, payload);
    const w = waiting.get(key);
    if (w) { waiting.delete(key); w.forEach((resolve) => resolve(payload)); }
  },
};

function load(key, params) {
  if (!STATIC) {
    const qs = params ? "?" + new URLSearchParams(params) : "";
    return fetch("api/" + key + qs).then(async (r) => {
      const body = await r.json();
      if (!r.ok) throw new Error(body.error || r.statusText);
      return body;
    });
  }
  if (store.has(key)) return Promise.resolve(store.get(key));
  return new Promise((resolve, reject) => {
    if (waiting.has(key)) { waiting.get(key).push(resolve); return; }
    waiting.set(key, [resolve]);
    const s = document.createElement("script");
    s.src = "data/" + key.replace(/\//g, "_") + ".js";
    s.onerror = () => { waiting.delete(key); reject(new Error("not in this export (" + key + ")")); };
    document.head.appendChild(s);
  });
}

async function loadEpisode(runId, pos) {
  if (!STATIC) return load(`episode/${runId}/${pos}`);
  const chunk = await load(`episodes/${runId}/${Math.floor(pos / CHUNK)}`);
  return chunk[pos % CHUNK];
}

// ---- helpers ---------------------------------------------------------------------------------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v;
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

const pct = (x) => (x == null || Number.isNaN(x) ? "" : (100 * x).toFixed(1));
const ci = (lo, hi) => (lo == null || hi == null ? "" : `[${pct(lo)}, ${pct(hi)}]`);
const num = (x, d = 2) => (x == null ? "" : Number(x).toFixed(d));
const str = (x) => (x == null ? "" : typeof x === "string" ? x : JSON.stringify(x));
const right = (r) => r.em != null && r.em >= 0.5;

let timer = null;
function poll(fn) {
  if (STATIC) return;
  timer = setInterval(fn, POLL_MS);
}
function status(text) { document.getElementById("status").textContent = text; }

function hashParams() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}
function setParams(path, params) {
  const q = params.toString();
  history.replaceState(null, "", "#" + path + (q ? "?" + q : ""));
}

function sortRows(rows, key, get) {
  if (!key) return rows;
  const desc = key.startsWith("-");
  const k = desc ? key.slice(1) : key;
  const val = get ? (r) => get(r, k) : (r) => r[k];
  return rows.slice().sort((a, b) => {
    const x = val(a), y = val(b);
    if (x == null && y == null) return 0;
    if (x == null) return 1;
    if (y == null) return -1;
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return desc ? -c : c;
  });
}

// Replace a page's content; arrays are flattened and null/false parts left out.
function mount(app, ...kids) {
  app.replaceChildren(...kids.flat(Infinity).filter((k) => k != null && k !== false));
}

function errorBox(e) { return h("p", { class: "error" }, String(e.message || e)); }

// ---- runs ------------------------------------------------------------------------------------
const RUN_COLS = [
  ["name", "Run", "name"], ["task", "Task"], ["split", "Split"], ["model", "Model", "wrap"], ["adapter", "Adapter", "wrap"],
  ["method", "Method"], ["tool", "Tool"], ["n", "N", "num"], ["finished", "Finished", "num"],
  ["em", "EM", "num"], ["f1", "F1", "num"], ["steps", "Steps", "num"], ["tool_errors", "Tool errors", "num"],
  ["date", "Date"],
];

function runCell(r, key) {
  if (key === "em" || key === "f1") return pct(r[key]);
  if (key === "steps") return num(r.steps);
  return str(r[key]);
}

// EM and F1 with their 95% CI under the number (a column each made the table wider than a laptop screen).
function runTd(r, key, cls) {
  if (key === "em" || key === "f1") {
    return h("td", { class: cls }, pct(r[key]), h("div", { class: "ci", title: "95% CI" }, ci(r[key + "_lo"], r[key + "_hi"])));
  }
  return h("td", { class: cls }, key === "name"
    ? (r.has_episodes ? h("a", { href: `#/run/${r.id}` }, r.name) : h("span", { title: r.note || "" }, r.name))
    : runCell(r, key));
}

function runsTable(runs, params, path, withPick) {
  const sort = params.get("sort") || "";
  const filter = (params.get("q") || "").toLowerCase();
  const shown = sortRows(runs.filter((r) => !filter || RUN_COLS.some(([k]) => runCell(r, k).toLowerCase().includes(filter))),
    sort);
  const head = RUN_COLS.map(([k, label, cls]) => h("th", {
    class: cls, title: "sort",
    onclick: () => { params.set("sort", sort === k ? "-" + k : k); setParams(path, params); route(); },
  }, label, sort === k ? " ▲" : sort === "-" + k ? " ▼" : ""));
  const pick = withPick ? [h("th", {}, "A"), h("th", {}, "B")] : [];
  const body = shown.map((r) => h("tr", { "data-run": r.id },
    withPick ? [h("td", {}, h("input", { type: "radio", name: "a", value: r.id, disabled: !r.has_episodes })),
      h("td", {}, h("input", { type: "radio", name: "b", value: r.id, disabled: !r.has_episodes }))] : [],
    RUN_COLS.map(([k, , cls]) => runTd(r, k, cls))));
  return { table: h("table", { class: "grid runs" }, h("thead", {}, h("tr", {}, pick, head)), h("tbody", {}, body)), shown };
}

async function runsView(app, params) {
  const path = "/";
  let data = await load("runs");
  const draw = () => {
    const { table, shown } = runsTable(data.runs, params, path, true);
    const search = h("input", { type: "search", placeholder: "filter runs", value: params.get("q") || "",
      oninput: (e) => { params.set("q", e.target.value); setParams(path, params); redraw(); } });
    const compare = h("button", { onclick: () => {
      const a = app.querySelector("input[name=a]:checked"), b = app.querySelector("input[name=b]:checked");
      if (a && b) location.hash = `#/compare?a=${a.value}&b=${b.value}`;
    } }, "Compare A and B");
    const exps = data.experiments.length ? [h("h2", {}, "Loop experiments"),
      h("ul", {}, data.experiments.map((e) => h("li", {}, h("a", { href: `#/experiment/${e.id}` }, e.dir))))] : [];
    const skipped = data.skipped.length ? h("p", { class: "muted" }, `skipped: ${data.skipped.map((s) => `${s.path} (${s.why})`).join("; ")}`) : null;
    return [h("h1", {}, "Runs"), h("div", { class: "toolbar" }, search, compare,
      h("span", { class: "muted", id: "run-count" }, `${shown.length} of ${data.runs.length} runs`)), table, exps, skipped];
  };
  let focus = null;
  const redraw = () => {
    focus = document.activeElement && document.activeElement.type === "search";
    mount(app, draw());
    if (focus) { const s = app.querySelector("input[type=search]"); s.focus(); s.setSelectionRange(s.value.length, s.value.length); }
  };
  redraw();
  let version = JSON.stringify(data.version);
  poll(async () => {
    const fresh = await load("runs").catch(() => null);
    if (fresh && JSON.stringify(fresh.version) !== version) {
      version = JSON.stringify(fresh.version);
      data = fresh;
      redraw();
      status("updated " + new Date().toLocaleTimeString());
    }
  });
}

// ---- one run's episodes ----------------------------------------------------------------------
const FILTERS = [
  ["all", "All", () => true],
  ["right", "Right", (r) => right(r)],
  ["wrong", "Wrong", (r) => r.finished && !right(r)],
  ["unfinished", "Unfinished", (r) => !r.finished],
  ["tool_error", "Tool error", (r) => r.tool_errors > 0],
  ["repaired", "Repaired", (r) => r.repaired > 0],
  ["invalid", "Invalid action", (r) => r.invalid > 0],
  ["error", "Error", (r) => !!r.error],
];
const META = ["type", "level", "subject"];

function episodeCols(hasSamples) {
  const cols = [["index", "#", "num", "60px"]];
  if (hasSamples) cols.push(["sample", "Sample", "num", "60px"]);
  cols.push(["question", "Question", "", "minmax(200px, 3fr)"], ["gold", "Gold", "", "minmax(80px, 1fr)"],
    ["prediction", "Prediction", "", "minmax(80px, 1fr)"], ["em", "EM", "num", "44px"], ["f1", "F1", "num", "50px"],
    ["steps", "Steps", "num", "50px"], ["finished", "Fin.", "", "40px"], ["error", "Error", "", "minmax(60px, 1fr)"]);
  return cols;
}

function cellText(r, k) {
  if (k === "em") return r.em == null ? "" : String(Math.round(r.em * 100) / 100);
  if (k === "f1") return num(r.f1);
  if (k === "finished") return r.finished ? "yes" : "no";
  return str(r[k]);
}

function virtualList(rows, cols, hrefOf) {
  const scroll = h("div", { class: "vscroll", id: "episodes" });
  const spacer = h("div", { style: `height:${rows.length * ROW_H}px` });
  scroll.append(spacer);
  let first = -1, last = -1;
  const draw = () => {
    const top = scroll.scrollTop;
    const f = Math.max(0, Math.floor(top / ROW_H) - 5);
    const l = Math.min(rows.length, f + Math.ceil((scroll.clientHeight || 600) / ROW_H) + 10);
    if (f === first && l === last) return;
    first = f; last = l;
    const kids = [];
    for (let i = f; i < l; i++) {
      const r = rows[i];
      kids.push(h("a", { class: "vrow", href: hrefOf(r), style: `top:${i * ROW_H}px`, "data-index": r.index },
        cols.map(([k, , cls]) => h("span", { class: cls + (k === "em" ? (right(r) ? " ok" : " bad") : ""), title: k === "question" ? r.question : null }, cellText(r, k)))));
    }
    spacer.replaceChildren(...kids);
  };
  scroll.addEventListener("scroll", () => requestAnimationFrame(draw));
  return { el: scroll, draw, reset: () => { first = last = -1; } };
}

async function runView(app, id, params) {
  const path = `/run/${id}`;
  let data = await load(`rows/${id}`);
  let rows = data.rows;
  const number = () => rows.forEach((r, i) => { r.pos = i; }); // a row's place in the run: its episode's address
  number();
  const render = () => {
    const run = data.run;
    const hasSamples = rows.some((r) => r.sample > 0); // generation.py writes sample 0 even when K = 1
    const cols = episodeCols(hasSamples);
    const f = params.get("f") || "all";
    const q = (params.get("q") || "").toLowerCase();
    const only = params.get("i");
    const meta = Object.fromEntries(META.map((k) => [k, params.get(k) || ""]));
    // every filter but the chips, so that each chip counts what it would show
    const base = rows.filter((r) => (!q || r.question.toLowerCase().includes(q) || r.prediction.toLowerCase().includes(q))
      && (only == null || only === "" || String(r.index) === only)
      && META.every((k) => !meta[k] || r[k] === meta[k]));
    const pred = FILTERS.find(([k]) => k === f) || FILTERS[0];
    const sort = params.get("sort") || "";
    const shown = sortRows(base.filter(pred[2]), sort);
    const go = () => { setParams(path, params); render(); };
    const chips = FILTERS.map(([k, label, test]) => h("button", {
      class: "chip" + (k === pred[0] ? " on" : ""), "data-filter": k,
      onclick: () => { params.set("f", k); go(); },
    }, label, h("span", { class: "count" }, String(base.filter(test).length))));
    const selects = META.filter((k) => rows.some((r) => r[k] != null)).map((k) => {
      const values = [...new Set(rows.map((r) => r[k]).filter((v) => v != null))].sort();
      return h("select", { "data-meta": k, onchange: (e) => { params.set(k, e.target.value); go(); } },
        h("option", { value: "" }, `any ${k}`), values.map((v) => {
          const o = h("option", { value: v }, v);
          o.selected = v === meta[k];
          return o;
        }));
    });
    const search = h("input", { type: "search", id: "search", placeholder: "search question and prediction", value: params.get("q") || "",
      oninput: (e) => { params.set("q", e.target.value); go(); } });
    const question = h("input", { type: "number", min: 0, id: "question-index", placeholder: "question #", value: only || "",
      title: "show only this question (all its samples)", oninput: (e) => { params.set("i", e.target.value); go(); } });
    const head = h("div", { class: "vhead", style: `--cols:${cols.map((c) => c[3]).join(" ")}` },
      cols.map(([k, label, cls]) => h("span", { class: cls, onclick: () => { params.set("sort", sort === k ? "-" + k : k); go(); } },
        label, sort === k ? " ▲" : sort === "-" + k ? " ▼" : "")));
    const list = virtualList(shown, cols, (r) => `#/run/${id}/ep/${r.pos}`);
    list.el.style.setProperty("--cols", cols.map((c) => c[3]).join(" "));
    const focused = document.activeElement && document.activeElement.id;
    const keepScroll = app.querySelector("#episodes");
    const scrollTop = keepScroll ? keepScroll.scrollTop : 0;
    mount(app, 
      h("h1", {}, run.name),
      h("div", { class: "summary" },
        ["model", "adapter", "task", "split", "method", "tool", "protocol"].filter((k) => run[k]).map((k) => h("span", {}, `${k} `, h("b", {}, str(run[k])))),
        h("span", {}, "EM ", h("b", {}, pct(run.em)), " ", ci(run.em_lo, run.em_hi)),
        h("span", {}, "F1 ", h("b", {}, pct(run.f1)), " ", ci(run.f1_lo, run.f1_hi)),
        h("span", {}, "finished ", h("b", {}, `${run.finished}/${run.n}`)),
        h("a", { href: `#/compare?a=${id}` }, "compare with…")),
      h("div", { class: "toolbar" }, chips),
      h("div", { class: "toolbar" }, search, question, selects,
        h("span", { class: "muted", id: "shown-count" }, `${shown.length} of ${rows.length} episodes`)),
      head, list.el);
    list.el.scrollTop = scrollTop;
    list.draw();
    if (focused) { const el = document.getElementById(focused); if (el && el.focus) el.focus(); }
  };
  render();
  poll(async () => {
    const fresh = await load(`rows/${id}`, { gen: data.generation, count: rows.length }).catch(() => null);
    if (!fresh || (fresh.start === rows.length && fresh.rows.length === 0 && fresh.generation === data.generation)) return;
    rows = fresh.start === 0 ? fresh.rows : rows.concat(fresh.rows);
    number();
    data = fresh;
    render();
    status(`live: ${rows.length} episodes, updated ${new Date().toLocaleTimeString()}`);
  });
}

// ---- one episode -----------------------------------------------------------------------------
function field(label, value, cls) {
  if (value == null || value === "") return null;
  return h("div", { class: "field" }, h("span", { class: "label" }, label), h("span", { class: cls || "text" }, value));
}

function stepCard(s, k) {
  const badges = [
    s.action_type ? h("span", { class: "badge" }, s.action_type) : h("span", { class: "badge err" }, "invalid action"),
    s.tool ? h("span", { class: "badge" }, "tool " + s.tool) : null,
    s.source ? h("span", { class: "badge" + (String(s.source).startsWith("fallback") ? " warn" : "") }, "source " + s.source) : null,
    s.repaired ? h("span", { class: "badge warn" }, "repaired") : null,
    s.tool_error ? h("span", { class: "badge err" }, "tool error") : null,
    s.latency_s ? h("span", { class: "badge" }, `${(1000 * s.latency_s).toFixed(1)} ms`) : null,
  ];
  return h("div", { class: "card step", "data-step": k },
    h("h3", {}, `Step ${k + 1}`, badges),
    s.reflection ? field("Reflection", s.reflection) : null,
    field("Thought", s.thought),
    field("Action", s.action),
    s.observation != null ? h("div", { class: "field" }, h("span", { class: "label" }, "Observation"), h("div", { class: "obs" }, s.observation)) : null,
    s.tool_error ? field("Tool error", s.tool_error, "text bad") : null,
    s.raw ? h("details", {}, h("summary", { class: "muted" }, "raw model text"), h("pre", { class: "raw" }, s.raw)) : null);
}

function episodeBody(ep, compact) {
  const meta = Object.entries(ep.meta || {}).filter(([, v]) => v != null && typeof v !== "object");
  const support = (ep.supporting || []).length ? h("div", { class: "field" }, h("span", { class: "label" }, "Supporting pages"),
    ep.supporting.map((s) => h("span", { class: "badge " + (s.searched ? "good" : ""), title: s.searched ? "searched" : "not searched" },
      (s.searched ? "✓ " : "✗ ") + s.title, " "))) : null;
  return [
    field("Question", ep.question),
    field("Gold", str(ep.gold)),
    field("Prediction", ep.prediction == null ? "(none)" : ep.prediction),
    h("div", { class: "summary" },
      h("span", {}, "EM ", h("b", { class: ep.em >= 0.5 ? "ok" : "bad" }, ep.em == null ? "–" : String(ep.em))),
      h("span", {}, "F1 ", h("b", {}, ep.f1 == null ? "–" : num(ep.f1))),
      h("span", {}, "finished ", h("b", {}, ep.finished ? "yes" : "no")),
      h("span", {}, "steps ", h("b", {}, String((ep.steps || []).length))),
      ep.run_samples > 1 ? h("span", {}, "sample ", h("b", {}, String(ep.sample))) : null,
      ep.protocol ? h("span", {}, "protocol ", h("b", {}, str(ep.protocol))) : null,
      compact ? null : ["model", "adapter", "method", "tool", "format"].filter((k) => ep[k]).map((k) => h("span", {}, `${k} `, h("b", {}, str(ep[k])))),
      meta.map(([k, v]) => h("span", {}, `${k} `, h("b", {}, str(v))))),
    ep.error ? field("Error", ep.error, "text bad") : null,
    support,
    compact ? null : h("div", { class: "summary muted" },
      Object.entries(ep.tokens || {}).map(([k, v]) => h("span", {}, `${k} tokens ${v}`)),
      Object.entries(ep.timings || {}).map(([k, v]) => h("span", {}, `${k} ${num(v)}`))),
    h("div", { class: "steps" }, (ep.steps || []).map(stepCard)),
  ];
}

async function episodeView(app, id, pos) {
  const ep = await loadEpisode(id, pos);
  if (!ep) throw new Error(`no episode ${pos}`);
  const n = ep.n_rows;
  const p = Number(pos);
  mount(app, 
    h("div", { class: "toolbar" },
      h("a", { href: `#/run/${id}` }, "← " + (ep.run || "run")),
      p > 0 ? h("a", { href: `#/run/${id}/ep/${p - 1}` }, "‹ previous") : null,
      h("span", { class: "muted" }, `${p + 1} of ${n}`),
      p + 1 < n ? h("a", { href: `#/run/${id}/ep/${p + 1}` }, "next ›") : null),
    h("h1", {}, `Question ${ep.index}` + (ep.run_samples > 1 ? `, sample ${ep.sample}` : "")),
    episodeBody(ep, false));
}

// ---- compare two runs ------------------------------------------------------------------------
const CELL_NAMES = { rr: "both right", rw: "only A right", wr: "only B right", ww: "both wrong" };

async function compareView(app, params) {
  const runs = (await load("runs")).runs.filter((r) => r.has_episodes);
  let a = params.get("a"), b = params.get("b");
  const cell = params.get("cell");
  if (!a && !b && runs.length === 2 && runs[0].task === runs[1].task && runs[0].split === runs[1].split) {
    // The only pair there is (the demo's): nothing to pick. A run without an adapter is A, so that B - A
    // reads as what tuning added, as leaderboard.py --compare and the demo print it.
    const [first, second] = !runs[0].adapter || runs[1].adapter ? runs : [runs[1], runs[0]];
    [a, b] = [String(first.id), String(second.id)];
    params.set("a", a); params.set("b", b); setParams("/compare", params);
  }
  const pick = (name, value, other) => {
    const same = other != null ? runs.find((r) => String(r.id) === String(other)) : null;
    return h("select", { name, onchange: (e) => { params.set(name, e.target.value); params.delete("cell"); setParams("/compare", params); route(); } },
      h("option", { value: "" }, `run ${name.toUpperCase()}…`),
      runs.filter((r) => !same || (r.task === same.task && r.split === same.split)).map((r) => {
        const o = h("option", { value: r.id }, `${r.name} (${r.task}/${r.split}, EM ${pct(r.em)})`);
        o.selected = String(r.id) === String(value);
        return o;
      }));
  };
  const top = [h("h1", {}, "Compare two runs"), h("div", { class: "toolbar" }, "A ", pick("a", a, b), " B ", pick("b", b, a))];
  if (a == null || b == null || a === "" || b === "") { mount(app, ...top); return; }
  let cmp;
  try { cmp = await load(`compare/${a}/${b}`); } catch (e) { mount(app, ...top, errorBox(e)); return; }
  const link = (c) => h("td", { class: c === cell ? "sel" : "", "data-cell": c },
    h("a", { href: `#/compare?a=${a}&b=${b}&cell=${c}`, title: CELL_NAMES[c] }, String(cmp.cells[c].length)));
  const cells = h("table", { class: "cells", id: "cells" },
    h("tr", {}, h("th", {}), h("th", {}, "B right"), h("th", {}, "B wrong")),
    h("tr", {}, h("th", {}, "A right"), link("rr"), link("rw")),
    h("tr", {}, h("th", {}, "A wrong"), link("wr"), link("ww")));
  const stats = h("table", { class: "grid", id: "compare-table" }, h("thead", {}, h("tr", {}, cmp.columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, cmp.table.map((row) => h("tr", {}, row.map((v) => h("td", {}, v))))));
  const out = [...top, h("p", { class: "muted" }, cmp.note), cells,
    h("p", { id: "mcnemar" }, "McNemar's exact test on EM: p = ", h("b", {}, Number(cmp.p_mcnemar).toPrecision(3)),
      ` (only A right ${cmp.cells.rw.length}, only B right ${cmp.cells.wr.length}, ${cmp.n_paired} questions in both, an unfinished one counting as wrong)`),
    stats];
  if (cell && cmp.cells[cell]) {
    const [ra, rb] = await Promise.all([load(`rows/${a}`), load(`rows/${b}`)]);
    const byIndex = (rows) => Object.fromEntries(rows.rows.filter((r) => r.sample == null || r.sample === 0).map((r) => [r.index, r]));
    const ia = byIndex(ra), ib = byIndex(rb);
    out.push(h("h2", {}, `${CELL_NAMES[cell]}: ${cmp.cells[cell].length} questions`),
      h("table", { class: "grid", id: "cell-list" },
        h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Question"), h("th", {}, "Gold"), h("th", {}, "A predicted"), h("th", {}, "B predicted"))),
        h("tbody", {}, cmp.cells[cell].map((i) => h("tr", {},
          h("td", {}, h("a", { href: `#/pair/${a}/${b}/${i}` }, String(i))),
          h("td", {}, h("a", { href: `#/pair/${a}/${b}/${i}` }, ia[i] ? ia[i].question : "")),
          h("td", {}, ia[i] ? ia[i].gold : ""), h("td", {}, ia[i] ? ia[i].prediction : ""), h("td", {}, ib[i] ? ib[i].prediction : ""))))));
  }
  mount(app, ...out);
}

async function pairView(app, a, b, index) {
  const cmp = await load(`compare/${a}/${b}`);
  const [ea, eb] = await Promise.all([loadEpisode(a, cmp.pos_a[index]), loadEpisode(b, cmp.pos_b[index])]);
  mount(app, 
    h("div", { class: "toolbar" }, h("a", { href: `#/compare?a=${a}&b=${b}` }, "← comparison")),
    h("h1", {}, `Question ${index}`),
    h("div", { class: "pair" },
      h("div", { id: "pair-a" }, h("h2", {}, "A: ", h("a", { href: `#/run/${a}` }, ea.run)), episodeBody(ea, true)),
      h("div", { id: "pair-b" }, h("h2", {}, "B: ", h("a", { href: `#/run/${b}` }, eb.run)), episodeBody(eb, true))));
}

// ---- leaderboard and loop experiments --------------------------------------------------------
async function leaderboardView(app) {
  const lb = await load("leaderboard");
  mount(app, h("h1", {}, "Leaderboard"),
    h("p", { class: "muted" }, "EM and F1 over the questions intended (unfinished count 0), 95% CIs, as leaderboard.py prints them."),
    h("table", { class: "grid", id: "leaderboard" }, h("thead", {}, h("tr", {}, lb.columns.map((c) => h("th", {}, c)))),
      h("tbody", {}, lb.rows.map((row, i) => h("tr", {}, row.map((v, j) => h("td", { class: lb.columns[j] === "Run" ? "name" : null }, j === 0 ? h("a", { href: `#/run/${lb.ids[i]}` }, v) : v)))))),
    lb.rows.length ? h("img", { class: "plot", src: "plot.png", alt: "EM and F1 with 95% CIs" }) : null);
}

function jsonTable(value) {
  if (Array.isArray(value) && value.length && value.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
    const keys = [...new Set(value.flatMap((v) => Object.keys(v)))];
    return h("table", { class: "kv" }, h("tr", {}, keys.map((k) => h("th", {}, k))),
      value.map((v) => h("tr", {}, keys.map((k) => h("td", {}, v[k] != null && typeof v[k] === "object" ? jsonTable(v[k]) : str(v[k]))))));
  }
  if (value && typeof value === "object" && !Array.isArray(value)) {
    return h("table", { class: "kv" }, Object.entries(value).map(([k, v]) => h("tr", {}, h("th", {}, k),
      h("td", {}, v != null && typeof v === "object" ? jsonTable(v) : str(v)))));
  }
  return h("span", {}, str(value));
}

// The loop's manifest (fireharness/loop/run.py): stages by name, in plan order, and every invocation of the command.
function stagesTable(stages) {
  const rows = Object.entries(stages || {});
  return h("table", { class: "grid stages" },
    h("thead", {}, h("tr", {}, ["Stage", "Kind", "Status", "Work s", "Wall s", "Reads"].map((c) => h("th", { class: c.endsWith(" s") ? "num" : null }, c)))),
    h("tbody", {}, rows.map(([name, st]) => h("tr", { class: "status-" + str(st.status) },
      h("td", { class: "name" }, name), h("td", {}, str(st.kind)), h("td", {}, str(st.status)),
      h("td", { class: "num" }, num(st.work_seconds, 0)), h("td", { class: "num" }, num(st.seconds, 0)),
      h("td", {}, (st.deps || []).join(", "))))));
}

// models/cpu.py's cpu_info: "AMD EPYC (family 25 model 1; avx2)", the flags it has of those it checks.
function cpuText(cpu) {
  if (!cpu || typeof cpu !== "object") return str(cpu);
  const flags = Object.entries(cpu.flags || {}).filter(([, on]) => on).map(([f]) => f);
  const id = cpu.family != null ? `family ${cpu.family} model ${cpu.model_id}` : "";
  const extra = [id, flags.join(" ") || (cpu.flags ? "none of " + Object.keys(cpu.flags).join(" ") : "")].filter(Boolean).join("; ");
  return str(cpu.model) + (extra ? ` (${extra})` : "");
}

function invocationsTable(invocations) {
  return h("table", { class: "grid invocations" },
    h("thead", {}, h("tr", {}, ["Started", "CPU", "Wall s", "Paused s", "Stages worked on"].map((c) =>
      h("th", { class: c.endsWith(" s") ? "num" : null }, c)))),
    h("tbody", {}, (invocations || []).map((inv) => h("tr", {},
      h("td", {}, str(inv.started)), h("td", {}, cpuText(inv.cpu)),
      h("td", { class: "num" }, num(inv.wall_s, 0)),
      h("td", { class: "num" }, inv.paused_s == null ? "-" : num(inv.paused_s, 0)),  // older invocations: not measured
      h("td", {}, Object.entries(inv.stage_work_s || {}).map(([n, t]) => `${n} ${num(t, 0)} s`).join(", "))))));
}

async function experimentView(app, id) {
  const exp = await load(`experiment/${id}`);
  const params = new URLSearchParams();
  const m = exp.manifest || {};
  const stages = m.stages && !Array.isArray(m.stages) ? m.stages : null;  // else not the loop's layout: shown raw
  mount(app, h("h1", {}, "Loop experiment " + exp.dir),
    h("h2", {}, "Runs (rounds)"), exp.runs.length ? runsTable(exp.runs, params, `/experiment/${id}`, false).table : h("p", { class: "muted" }, "no runs yet"),
    stages ? [h("h2", {}, "Stages"), stagesTable(stages)] : null,
    m.invocations ? [h("h2", {}, "Invocations"), invocationsTable(m.invocations)] : null,
    m.config ? h("details", { class: "config" }, h("summary", {}, "Config"), jsonTable(m.config)) : null,
    h("details", { class: "manifest", open: stages ? null : true }, h("summary", {}, "Manifest (all of manifest.json)"), jsonTable(m)));
}

// ---- routing ---------------------------------------------------------------------------------
async function route() {
  clearInterval(timer);
  status(STATIC ? "static export" : "");
  const app = document.getElementById("app");
  const [path] = (location.hash.slice(1) || "/").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = hashParams();
  try {
    if (parts.length === 0) await runsView(app, params);
    else if (parts[0] === "run" && parts.length === 2) await runView(app, parts[1], params);
    else if (parts[0] === "run" && parts[2] === "ep") await episodeView(app, parts[1], parts[3]);
    else if (parts[0] === "compare") await compareView(app, params);
    else if (parts[0] === "pair") await pairView(app, parts[1], parts[2], parts[3]);
    else if (parts[0] === "leaderboard") await leaderboardView(app);
    else if (parts[0] === "experiment") await experimentView(app, parts[1]);
    else mount(app, h("p", { class: "error" }, "no such page"));
  } catch (e) {
    mount(app, errorBox(e));
  }
}

window.addEventListener("hashchange", route);
route();
