// The console's Tune page: fine-tuning jobs (cancel the queued or running ones), a job's loss curves drawn as SVG
// with its config, hashes, hardware and gate reports, curves and configs of ticked jobs compared, and the
// promotions with a rollback per model. A selected running job is read again every few seconds. Every text from
// the API goes into the page as text nodes (no innerHTML with data). Loaded before app.js, whose helpers
// (api, main, fmt, toast) it uses at run time.
"use strict";

const TUNE_REFRESH_MS = 3000;
const TUNE_ACTIVE = ["queued", "running"];
const TUNE_COLORS = ["#3b5bdb", "#e67700", "#2b8a3e", "#c92a2a", "#7048e8", "#0c8599", "#d6336c", "#5c940d"];
const TUNE_STATUS_CLASS = {succeeded: "ok", passed: "ok", failed: "error", refused: "error", cancelled: "warning", forced: "warning"};
const TUNE_SVG = "http://www.w3.org/2000/svg";
// Rows of the compare table: [label, value of a job].
const TUNE_COMPARED = [
  ["status", (j) => j.status], ["base", (j) => j.model], ["dataset", (j) => j.training_file],
  ["steps", (j) => tuneMetric(j, "steps")], ["train loss", (j) => tuneMetric(j, "train_loss")],
  ["first dev loss", (j) => tuneMetric(j, "first_dev_loss")], ["best dev loss", (j) => tuneMetric(j, "best_dev_loss")],
  ["tokens/s", (j) => tuneMetric(j, "tokens_per_second")], ["peak RSS (MiB)", (j) => tuneMetric(j, "peak_rss_mib")],
  ["wall (s)", (j) => j.genfoundry.wall_s], ["cost", (j) => tuneUsd(j.genfoundry.cost_usd)],
  ["fine-tuned model", (j) => j.fine_tuned_model],
];
const tune = {view: 0, jobs: [], jobsKey: "", selected: null, ticked: new Set(), events: new Map(), timer: null,
  compares: 0};

// -- DOM helpers: every value is a text node or an attribute ---------------------------------------------------
function tuneEl(tag, attrs = {}, ...children) {
  return tuneFill(document.createElement(tag), attrs, children);
}

function tuneSvgEl(tag, attrs = {}, ...children) {
  return tuneFill(document.createElementNS(TUNE_SVG, tag), attrs, children);
}

function tuneFill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child != null && child !== false) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function tuneReplace(node, ...children) {  // replaceChildren would write null as "null"
  node.replaceChildren();
  return tuneFill(node, {}, children);
}

function tuneTable(columns, rows, {testid, rowAttrs} = {}) {
  return tuneEl("table", {"data-testid": testid},
    tuneEl("thead", {}, tuneEl("tr", {}, columns.map((c) => tuneEl("th", {class: c.num ? "num" : null}, c.label)))),
    tuneEl("tbody", {}, rows.map((r) => tuneEl("tr", rowAttrs ? rowAttrs(r) : {},
      columns.map((c) => tuneEl("td", {class: c.num ? "num" : null}, c.cell(r)))))));
}

function tunePill(status) {
  return tuneEl("span", {class: `pill ${TUNE_STATUS_CLASS[status] || ""}`}, status);
}

const tuneText = (v) => (v == null ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v));
const tuneNum = (v) => (v == null ? "–" : typeof v === "number" ? String(+v.toPrecision(5)) : String(v));
const tuneUsd = (v) => (v == null ? "–" : fmt.usd(v));
const tuneTime = (unix) => (unix ? new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19) : "");
const tuneMetric = (job, name) => ((job.genfoundry || {}).metrics || {})[name];
const tuneCurrent = (view) => view === tune.view && location.hash.startsWith("#/tune");

// -- the page ---------------------------------------------------------------------------------------------------
async function pageTune(jobId) {
  clearTimeout(tune.timer);
  const view = ++tune.view;
  Object.assign(tune, {jobs: [], jobsKey: "", selected: jobId || null, ticked: new Set(), events: new Map()});
  tuneReplace(main(),
    tuneEl("section", {class: "card"}, tuneEl("h1", {}, "Fine-tuning"),
      tuneEl("p", {class: "muted"}, "Jobs are made with ", tuneEl("code", {}, "genfoundry tune run"), " or ",
        tuneEl("code", {}, "POST /v1/fine_tuning/jobs"), ". Open a job to see its loss curves, config and gate reports; " +
        "tick two or more to compare them."),
      tuneEl("div", {id: "tune-jobs", class: "scroll"})),
    tuneEl("section", {class: "card", id: "tune-detail", hidden: true}),
    tuneEl("section", {class: "card", id: "tune-compare", hidden: true}),
    tuneEl("section", {class: "card"}, tuneEl("h2", {}, "Promotions"),
      tuneEl("p", {class: "muted"}, "Promote a succeeded job with ", tuneEl("code", {}, "genfoundry tune promote"),
        " (it must pass the evaluation gate); a rollback serves what the model served before its latest promotion."),
      tuneEl("p", {class: "error", id: "tune-rollback-error", "data-testid": "rollback-error"}),
      tuneEl("div", {id: "tune-promotions", class: "scroll"})));
  await Promise.all([tuneLoadJobs(view), tuneLoadPromotions(view)]);
  if (tune.selected && tuneCurrent(view)) await tuneShowJob(view);
}

function tuneError(box, error) {
  tuneReplace(box, tuneEl("p", {class: "error", "data-testid": "error"}, error.message));
}

// -- jobs -------------------------------------------------------------------------------------------------------
async function tuneLoadJobs(view) {
  const box = document.getElementById("tune-jobs");
  let jobs;
  try {
    jobs = (await api("/v1/fine_tuning/jobs?limit=100")).data;
  } catch (error) {
    if (tuneCurrent(view)) tuneError(box, error);
    return;
  }
  if (!tuneCurrent(view)) return;
  const jobsKey = JSON.stringify(jobs);
  tune.jobs = jobs;
  if (jobsKey === tune.jobsKey) return;  // unchanged: keep the table (and whatever is being clicked in it)
  tune.jobsKey = jobsKey;
  tuneShowJobs();
}

function tuneShowJobs() {
  const box = document.getElementById("tune-jobs");
  if (!tune.jobs.length) {
    tuneReplace(box, tuneEl("p", {class: "muted"}, "No fine-tuning jobs yet."));
    return;
  }
  const columns = [
    {label: "compare", cell: (j) => tuneEl("input", {type: "checkbox", "data-compare": j.id, "aria-label": `compare ${j.id}`,
      checked: tune.ticked.has(j.id), on: {change: (event) => tuneTick(j.id, event.target.checked)}})},
    {label: "job", cell: (j) => tuneEl("code", {}, j.id)},
    {label: "status", cell: (j) => [tunePill(j.status), j.genfoundry.cancel_requested && j.status === "running" ?
      tuneEl("span", {class: "muted"}, " stopping…") : null]},
    {label: "base", cell: (j) => j.model},
    {label: "dataset", cell: (j) => j.training_file},
    {label: "steps", num: true, cell: (j) => tuneNum(tuneMetric(j, "steps"))},
    {label: "best dev loss", num: true, cell: (j) => tuneNum(tuneMetric(j, "best_dev_loss"))},
    {label: "tokens/s", num: true, cell: (j) => tuneNum(tuneMetric(j, "tokens_per_second"))},
    {label: "cost", num: true, cell: (j) => tuneUsd(j.genfoundry.cost_usd)},
    {label: "fine-tuned model", cell: (j) => j.fine_tuned_model || ""},
    {label: "created", cell: (j) => tuneTime(j.created_at)},
    {label: "", cell: (j) => TUNE_ACTIVE.includes(j.status) && !j.genfoundry.cancel_requested ?
      tuneEl("button", {type: "button", class: "secondary", "data-cancel": j.id,
        on: {click: (event) => tuneCancel(j.id, event.target)}}, "Cancel") : null},
  ];
  tuneReplace(box, tuneTable(columns, tune.jobs, {testid: "tune-jobs", rowAttrs: (j) => ({
    class: `click${j.id === tune.selected ? " selected" : ""}`, "data-job": j.id, "data-status": j.status,
    on: {click: (event) => { if (!event.target.closest("input, button")) tuneSelect(j.id); }}})}));
}

function tuneSelect(jobId) {
  tune.selected = jobId;
  history.replaceState(null, "", `#/tune/${encodeURIComponent(jobId)}`);  // a link to it, without a re-render
  document.querySelectorAll("#tune-jobs tr[data-job]").forEach((tr) => tr.classList.toggle("selected", tr.dataset.job === jobId));
  tuneShowJob(tune.view);
}

async function tuneCancel(jobId, button) {
  button.disabled = true;
  const view = tune.view;
  try {
    const job = await api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/cancel`, {method: "POST"});
    toast(job.status === "cancelled" ? `${jobId} cancelled` : `${jobId} stops after its current step`);
  } catch (error) {
    toast(error.message, true);
    button.disabled = false;
  }
  if (!tuneCurrent(view)) return;
  await tuneLoadJobs(view);
  if (tune.selected === jobId) await tuneShowJob(view);
}

// -- events and curves ------------------------------------------------------------------------------------------
async function tuneEvents(job) {
  const cached = tune.events.get(job.id);
  if (cached && !TUNE_ACTIVE.includes(job.status) && cached.status === job.status) return cached.events;
  const events = (await api(`/v1/fine_tuning/jobs/${encodeURIComponent(job.id)}/events?limit=10000`)).data;
  tune.events.set(job.id, {status: job.status, events});
  return events;
}

function tuneCurves(events) {
  // Events come newest first; a resumed run logs some steps again: the latest value of a step wins.
  const train = new Map(), dev = new Map();
  for (const event of events.slice().reverse()) {
    const d = event.data || {};
    if (d.step == null) continue;
    if (event.kind === "metrics" && Number.isFinite(d.loss)) train.set(d.step, d.loss);
    if (event.kind === "eval" && Number.isFinite(d.eval_loss)) dev.set(d.step, d.eval_loss);
  }
  const sorted = (m) => [...m].sort((a, b) => a[0] - b[0]);
  return {train: sorted(train), dev: sorted(dev)};
}

function tuneChart(testid, title, series) {
  const w = 720, legendPer = 4, legendRows = Math.ceil(series.length / legendPer) || 1;
  const left = 64, right = 16, top = 26 + 16 * legendRows, bottom = 34, h = top + 220 + bottom;
  const root = tuneSvgEl("svg", {class: "loss-chart", viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": title, "data-testid": testid});
  root.append(tuneSvgEl("text", {x: 0, y: 13, class: "title"}, title));
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    root.append(tuneSvgEl("text", {x: left, y: top + 40}, "no loss logged yet"));
    return root;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const x = (v) => +(left + (v - x0) / (x1 - x0) * (w - left - right)).toFixed(2);
  const y = (v) => +(h - bottom - (v - y0) / (y1 - y0) * (h - top - bottom)).toFixed(2);
  const label = (v) => String(+v.toPrecision(4));
  root.append(
    tuneSvgEl("line", {x1: left, x2: w - right, y1: h - bottom, y2: h - bottom, stroke: "#adb5bd"}),
    tuneSvgEl("line", {x1: left, x2: left, y1: top, y2: h - bottom, stroke: "#adb5bd"}),
    tuneSvgEl("line", {x1: left, x2: w - right, y1: top, y2: top, stroke: "#f1f3f5"}),
    tuneSvgEl("text", {x: left - 6, y: y(y1) + 4, "text-anchor": "end", "data-axis": "y-max"}, label(y1)),
    tuneSvgEl("text", {x: left - 6, y: y(y0), "text-anchor": "end", "data-axis": "y-min"}, label(y0)),
    tuneSvgEl("text", {x: left, y: h - bottom + 14, "data-axis": "x-min"}, label(x0)),
    tuneSvgEl("text", {x: w - right, y: h - bottom + 14, "text-anchor": "end", "data-axis": "x-max"}, label(x1)),
    tuneSvgEl("text", {x: (left + w - right) / 2, y: h - 6, "text-anchor": "middle"}, "step"),
    tuneSvgEl("text", {x: 4, y: top - 8}, "loss"));
  series.forEach((s, i) => {
    const attrs = {fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash ? "6 4" : null,
      "data-series": s.key, "data-job": s.job};
    root.append(tuneSvgEl("polyline", {...attrs, points: s.points.map((p) => `${x(p[0])},${y(p[1])}`).join(" ")},
      tuneSvgEl("title", {}, s.label)));
    if (s.dash || s.points.length === 1) {  // evaluations are few: mark each one
      for (const p of s.points) {
        root.append(tuneSvgEl("circle", {cx: x(p[0]), cy: y(p[1]), r: 3, fill: s.color},
          tuneSvgEl("title", {}, `${s.label}: step ${p[0]}, loss ${label(p[1])}`)));
      }
    }
    const lx = left + (i % legendPer) * 160, ly = 26 + 16 * Math.floor(i / legendPer);
    root.append(tuneSvgEl("line", {x1: lx, x2: lx + 22, y1: ly - 4, y2: ly - 4, stroke: s.color, "stroke-width": 2,
      "stroke-dasharray": s.dash ? "6 4" : null}),
    tuneSvgEl("text", {x: lx + 28, y: ly, "data-legend": s.key}, s.label));
  });
  return root;
}

// -- one job ----------------------------------------------------------------------------------------------------
async function tuneShowJob(view) {
  clearTimeout(tune.timer);
  const jobId = tune.selected;
  const box = document.getElementById("tune-detail");
  if (!jobId || !box) return;
  box.hidden = false;
  let job, events;
  try {
    job = await api(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`);
    events = await tuneEvents(job);
  } catch (error) {
    if (tuneCurrent(view) && tune.selected === jobId) tuneError(box, error);
    return;
  }
  if (!tuneCurrent(view) || tune.selected !== jobId) return;
  tuneRenderJob(box, job, events);
  if (TUNE_ACTIVE.includes(job.status)) {  // follow it while it runs (the row in the table too)
    tune.timer = setTimeout(async () => {
      if (!tuneCurrent(view) || tune.selected !== jobId) return;
      await tuneLoadJobs(view);
      if (tuneCurrent(view) && tune.selected === jobId) await tuneShowJob(view);
    }, TUNE_REFRESH_MS);
  } else if (tune.jobs.some((j) => j.id === jobId && j.status !== job.status)) {
    await tuneLoadJobs(view);  // it finished since the table was read
  }
}

function tuneKeyValues(object, testid) {
  const entries = Object.entries(object || {});
  if (!entries.length) return tuneEl("p", {class: "muted"}, "none recorded");
  return tuneTable([{label: "key", cell: (e) => e[0]}, {label: "value", cell: (e) => tuneText(e[1])}], entries, {testid});
}

function tuneRenderJob(box, job, events) {
  const g = job.genfoundry || {};
  const m = g.metrics || {};
  const {train, dev} = tuneCurves(events);
  const kpi = (name, value) => tuneEl("div", {class: "kpi"}, name, tuneEl("b", {}, value));
  const dataset = g.dataset || {};
  const hashes = {
    "adapter (safetensors) sha256": g.adapter_sha256, "adapter (GGUF) sha256": g.adapter_gguf_sha256,
    "dataset": dataset.name ? `${dataset.name}@v${dataset.version}` : job.training_file,
    "dataset content hash": dataset.content_hash,
  };
  const log = events.filter((e) => !["metrics", "eval"].includes(e.kind)).slice(0, 20);
  tuneReplace(box,
    tuneEl("div", {class: "row"}, tuneEl("h2", {}, "Job ", tuneEl("code", {}, job.id)),
      tuneEl("span", {"data-testid": "job-status"}, tunePill(job.status)),
      g.cancel_requested && job.status === "running" ? tuneEl("span", {class: "muted"}, "cancel requested") : null,
      TUNE_ACTIVE.includes(job.status) ? tuneEl("span", {class: "muted"}, `refreshed every ${TUNE_REFRESH_MS / 1000} s`) : null),
    job.error ? tuneEl("p", {class: "error"}, job.error.message) : null,
    tuneEl("div", {class: "kpis"}, kpi("base", job.model), kpi("dataset", job.training_file),
      kpi("steps", tuneNum(m.steps ?? (train.length ? train[train.length - 1][0] : null))),
      kpi("train loss", tuneNum(m.train_loss ?? (train.length ? train[train.length - 1][1] : null))),
      kpi("best dev loss", tuneNum(m.best_dev_loss ?? (dev.length ? Math.min(...dev.map((p) => p[1])) : null))),
      kpi("tokens/s", tuneNum(m.tokens_per_second)), kpi("peak RSS", m.peak_rss_mib == null ? "–" : `${m.peak_rss_mib} MiB`),
      kpi("wall", g.wall_s == null ? "–" : `${g.wall_s} s`), kpi("cost", tuneUsd(g.cost_usd)),
      kpi("fine-tuned model", job.fine_tuned_model || "–")),
    tuneChart("loss-chart", `Loss of ${job.id}`, [
      {key: "train", label: `train loss (${train.length} steps)`, color: TUNE_COLORS[0], points: train, job: job.id},
      {key: "dev", label: `dev loss (${dev.length} evaluations)`, color: TUNE_COLORS[1], dash: true, points: dev, job: job.id}]),
    tuneEl("div", {class: "tune-facts"},
      tuneEl("div", {}, tuneEl("h2", {}, "Config"), tuneKeyValues(g.config, "job-config")),
      tuneEl("div", {}, tuneEl("h2", {}, "Hashes"), tuneKeyValues(hashes, "job-hashes"),
        tuneEl("h2", {}, "Hardware"), tuneKeyValues(g.hardware, "job-hardware"))),
    tuneEl("h2", {}, "Gate reports"), tuneGates(g.gates || []),
    tuneEl("h2", {}, "Events"), log.length ? tuneTable([{label: "at", cell: (e) => tuneTime(e.created_at)},
      {label: "kind", cell: (e) => e.kind}, {label: "message", cell: (e) => e.message}], log, {testid: "job-events"}) :
      tuneEl("p", {class: "muted"}, "none"));
}

function tuneGates(gates) {
  if (!gates.length) return tuneEl("p", {class: "muted", "data-testid": "job-gates"}, "Not gated yet.");
  const measure = {test: "mean token F1", answers: "answered right and declined", safety: "flagged outputs"};
  return tuneEl("div", {"data-testid": "job-gates"}, gates.slice().reverse().map((gate) => tuneEl("div", {class: "tune-gate"},
    tuneEl("p", {}, tunePill(gate.passed ? "passed" : "refused"), gate.forced ? [" ", tunePill("forced")] : null,
      ` ${gate.candidate ?? "?"} vs ${gate.incumbent ?? "?"}`, gate.target ? ` for ${gate.target}` : "",
      gate.at ? tuneEl("span", {class: "muted"}, ` · ${String(gate.at).replace("T", " ").slice(0, 19)}`) : null),
    (gate.reasons || []).length ? tuneEl("ul", {}, gate.reasons.map((r) => tuneEl("li", {class: "error"}, r))) : null,
    tuneTable([{label: "suite", cell: (e) => e[0]}, {label: "measure", cell: (e) => e[0] === "safety" && e[1].outputs != null ?
      `${measure.safety} (of ${e[1].outputs})` : (measure[e[0]] || "")},
    {label: "candidate", num: true, cell: (e) => tuneNum(e[1].candidate)}, {label: "incumbent", num: true, cell: (e) => tuneNum(e[1].incumbent)},
    {label: "gain", num: true, cell: (e) => e[1].gain == null ? "" : (e[1].gain > 0 ? "+" : "") + tuneNum(e[1].gain)},
    {label: "passed", cell: (e) => tunePill(e[1].passed ? "passed" : "refused")}], Object.entries(gate.suites || {})))));
}

// -- compare ----------------------------------------------------------------------------------------------------
function tuneTick(jobId, on) {
  if (on) tune.ticked.add(jobId); else tune.ticked.delete(jobId);
  tuneCompare(tune.view);
}

async function tuneCompare(view) {
  const box = document.getElementById("tune-compare");
  const jobs = tune.jobs.filter((j) => tune.ticked.has(j.id));  // in the table's order
  const ask = ++tune.compares;  // a slower, older answer must not replace the newer one
  if (jobs.length < 2) {
    box.hidden = true;
    tuneReplace(box);
    return;
  }
  box.hidden = false;
  let events;
  try {
    events = await Promise.all(jobs.map((j) => tuneEvents(j)));
  } catch (error) {
    if (ask === tune.compares && tuneCurrent(view)) tuneError(box, error);
    return;
  }
  if (ask !== tune.compares || !tuneCurrent(view)) return;
  const series = jobs.flatMap((j, i) => {
    const {train, dev} = tuneCurves(events[i]);
    const color = TUNE_COLORS[i % TUNE_COLORS.length], name = j.id.replace(/^ftjob-/, "").slice(0, 8);
    return [{key: "train", label: `${name} train`, color, points: train, job: j.id},
      {key: "dev", label: `${name} dev`, color, dash: true, points: dev, job: j.id}];
  });
  const configs = jobs.map((j) => (j.genfoundry || {}).config || {});
  const keys = [...new Set(configs.flatMap((c) => Object.keys(c)))].sort();
  const differing = keys.filter((k) => new Set(configs.map((c) => JSON.stringify(c[k] ?? null))).size > 1);
  const jobColumns = jobs.map((j, i) => ({label: j.id, cell: (row) => row.values[i]}));
  tuneReplace(box, tuneEl("h2", {}, `Comparing ${jobs.length} jobs`),
    tuneChart("compare-chart", "Loss: train (solid) and dev (dashed)", series),
    tuneEl("h2", {}, "Config keys that differ"),
    differing.length ? tuneTable([{label: "key", cell: (row) => row.key}, ...jobColumns],
      differing.map((k) => ({key: k, values: configs.map((c) => tuneText(c[k]))})), {testid: "compare-config"}) :
      tuneEl("p", {class: "muted", "data-testid": "compare-config"}, "The configs are the same."),
    tuneEl("h2", {}, "Metrics"),
    tuneTable([{label: "", cell: (row) => row.key}, ...jobColumns],
      TUNE_COMPARED.map(([label, value]) => ({key: label, values: jobs.map((j) => { const v = value(j); return typeof v === "number" ? tuneNum(v) : tuneText(v); })})),
      {testid: "compare-metrics"}));
}

// -- promotions -------------------------------------------------------------------------------------------------
async function tuneLoadPromotions(view) {
  const box = document.getElementById("tune-promotions");
  let rows;
  try {
    rows = (await api("/admin/tune/promotions")).data;
  } catch (error) {
    if (tuneCurrent(view)) tuneError(box, error);
    return;
  }
  if (!tuneCurrent(view)) return;
  if (!rows.length) {
    tuneReplace(box, tuneEl("p", {class: "muted"}, "No promotions yet."));
    return;
  }
  const latest = new Map();  // newest first: a model's first row is its latest promotion
  for (const r of rows) if (!latest.has(r.model)) latest.set(r.model, r.id);
  const gate = (r) => {
    const report = r.report || {};
    return [report.passed == null ? "" : tunePill(report.passed ? "passed" : "refused"), r.forced ? [" ", tunePill("forced")] : null,
      (report.reasons || []).length ? tuneEl("span", {class: "muted"}, " " + report.reasons.join("; ")) : null];
  };
  tuneReplace(box, tuneTable([
    {label: "at", cell: (r) => tuneTime(r.at)}, {label: "model", cell: (r) => r.model},
    {label: "job", cell: (r) => tuneEl("code", {}, r.job_id || "")}, {label: "gate", cell: gate},
    {label: "by", cell: (r) => r.actor}, {label: "rolled back", cell: (r) => tuneTime(r.rolled_back_at)},
    {label: "", cell: (r) => latest.get(r.model) === r.id && !r.rolled_back_at ?
      tuneEl("button", {type: "button", class: "danger", "data-rollback": r.model,
        on: {click: (event) => tuneRollback(r.model, event.target)}}, "Rollback") : null},
  ], rows, {testid: "tune-promotions", rowAttrs: (r) => ({"data-promotion": r.id, "data-model": r.model})}));
}

async function tuneRollback(model, button) {
  if (!confirm(`Roll '${model}' back to what it served before its latest promotion?`)) return;
  const view = tune.view;
  const message = document.getElementById("tune-rollback-error");
  message.textContent = "";
  button.disabled = true;
  try {
    const done = await api("/admin/tune/rollback", {method: "POST", json: {model}});
    toast(done.removed ? `rolled back: '${model}' is removed (its promotion had made it)` :
      `rolled back: '${model}' serves ${done.now_serving || "its previous model"} again`);
  } catch (error) {
    if (tuneCurrent(view)) message.textContent = error.message;
    button.disabled = false;
    return;
  }
  if (tuneCurrent(view)) await tuneLoadPromotions(view);
}
