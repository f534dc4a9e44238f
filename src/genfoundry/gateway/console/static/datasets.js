// The console's Datasets page: the datasets, and a dataset's versions (hash, splits, lineage) with its rows a page
// at a time, by version and split. Loaded before app.js, whose helpers (api, table, showError) it uses.
"use strict";

const ROWS_PAGE = 50;
const CELL_CHARS = 120;  // longer cell text is cut; the cell's title holds all of it
const LINEAGE_CHARS = 80;
const SPLIT_NAMES = ["train", "dev", "test"];
const datasetView = {name: null, versions: [], version: null, split: "", offset: 0, loads: 0};

async function pageDatasets(name) {
  if (name) return datasetDetail(name);
  datasetView.name = null;
  main().innerHTML = `<section class="card"><h1>Datasets</h1><p class="muted">Datasets are made with
    <code>genfoundry data import</code>, <code>from-calls</code> or <code>from-feedback</code>, or by
    <code>POST /v1/datasets</code>; open one to see its versions and rows.</p><div id="dataset-list"></div></section>`;
  const box = $("#dataset-list");
  try {
    const rows = (await api("/v1/datasets")).data;
    const latest = (r, f) => (r.latest ? f(r.latest) : "");
    box.innerHTML = table([{label: "dataset", key: "name"}, {label: "sensitivity", html: (r) => pill(r.sensitivity)},
      {label: "versions", value: (r) => r.versions.length, num: true},
      {label: "latest rows", value: (r) => latest(r, (v) => fmt.int(v.rows)), num: true},
      {label: "source", value: (r) => latest(r, (v) => v.lineage.source || "")},
      {label: "created", value: (r) => fmt.time(r.created_at)}], rows,
      {onClick: true, empty: "No datasets yet (or none this key may read): `genfoundry data import FILE --name NAME`."});
    bindRows(box, rows, (r) => { location.hash = `#/datasets/${encodeURIComponent(r.name)}`; });
  } catch (error) { showError(box, error); }
}

async function datasetDetail(name) {
  Object.assign(datasetView, {name, versions: [], version: null, split: "", offset: 0});
  main().innerHTML = `<section class="card"><p><a href="#/datasets">← all datasets</a></p>
    <div class="row"><h1>Dataset <code>${esc(name)}</code></h1><span id="dataset-about"></span></div>
    <div id="dataset-versions"></div></section>
    <section class="card" id="dataset-rows-card" hidden><h2>Rows</h2><div class="row">
      <label>Version<select id="dataset-version"></select></label>
      <label>Split<select id="dataset-split"><option value="">all</option>${SPLIT_NAMES.map((s) =>
        `<option>${s}</option>`).join("")}</select></label></div>
    <div id="dataset-rows" class="scroll"></div>
    <div class="row"><button type="button" class="secondary" id="rows-prev">← previous</button>
      <span class="muted" data-testid="rows-range"></span>
      <button type="button" class="secondary" id="rows-next">next →</button></div></section>`;
  let info;
  try {
    info = await api(`/v1/datasets/${encodeURIComponent(name)}`);
  } catch (error) { return showError($("#dataset-versions"), error); }
  if (datasetView.name !== name) return;
  datasetView.versions = info.versions_detail;
  $("#dataset-about").innerHTML = `${pill(info.sensitivity)} <span class="muted">${esc(info.description)}</span>`;
  const latest = datasetView.versions[datasetView.versions.length - 1];
  $("#dataset-version").innerHTML = datasetView.versions.slice().reverse().map((v) =>
    `<option value="${v.number}">${v.number}${v === latest ? " (latest)" : ""}</option>`).join("");
  $("#dataset-version").addEventListener("change", (event) => chooseVersion(Number(event.target.value)));
  $("#dataset-split").addEventListener("change", (event) => { datasetView.split = event.target.value; datasetView.offset = 0; loadRows(); });
  $("#rows-prev").addEventListener("click", () => turnPage(-1));
  $("#rows-next").addEventListener("click", () => turnPage(1));
  $("#dataset-rows-card").hidden = !latest;
  if (latest) chooseVersion(latest.number);
}

function chooseVersion(number) {
  Object.assign(datasetView, {version: number, offset: 0});
  $("#dataset-version").value = String(number);
  showVersions();
  loadRows();
}

function showVersions() {
  const box = $("#dataset-versions");
  const versions = datasetView.versions.slice().reverse();  // newest first
  box.innerHTML = table([{label: "version", key: "number", num: true}, {label: "rows", value: (v) => fmt.int(v.rows), num: true},
    {label: "hash", html: (v) => `<code title="${esc(v.content_hash)}">${esc(v.content_hash.slice(0, 12))}</code>`},
    {label: "splits", html: splitCounts}, {label: "lineage", html: lineage},
    {label: "parent", value: (v) => v.parent ?? "", num: true}, {label: "forgotten rows", value: (v) => fmt.int(v.forgotten_rows), num: true},
    {label: "created", value: (v) => `${fmt.time(v.created_at)} by ${v.created_by}`}], versions,
    {onClick: true, empty: "This dataset has no versions."});
  box.querySelector("table")?.setAttribute("data-testid", "dataset-versions");
  versions.forEach((v, i) => {
    if (v.number === datasetView.version) box.querySelector(`tr[data-row="${i}"]`).classList.add("selected");
  });
  bindRows(box, versions, (v) => chooseVersion(v.number));
}

function splitCounts(v) {
  const splits = v.splits || {};
  const counts = splits.counts || {};
  const about = `seed ${splits.seed ?? "–"}${splits.given ? "; a split column in the data set some rows' splits" : ""}`;
  return `<span title="${esc(about)}">${esc(SPLIT_NAMES.map((s) => `${s} ${fmt.int(counts[s] ?? 0)}`).join(" · "))}</span>`;
}

function lineage(v) {
  // The source, then the other facts in short (digests cut to 12 characters); the title holds the whole object.
  const short = (x) => (typeof x === "string" && /^[0-9a-f]{32,}$/.test(x) ? x.slice(0, 12) :
    typeof x === "string" ? x : JSON.stringify(x));
  const facts = Object.entries(v.lineage || {}).filter(([k, x]) => k !== "source" && x != null)
    .map(([k, x]) => `${k} ${short(x)}`).join(", ");
  return `<span title="${esc(JSON.stringify(v.lineage))}"><b>${esc((v.lineage || {}).source || "?")}</b> ` +
    `<span class="muted">${esc(cut(facts, LINEAGE_CHARS))}</span></span>`;
}

const cut = (text, chars) => (text.length > chars ? text.slice(0, chars - 1) + "…" : text);

function turnPage(step) {
  datasetView.offset = Math.max(0, datasetView.offset + step * ROWS_PAGE);
  loadRows();
}

async function loadRows() {
  const {name, version, split, offset} = datasetView;
  const load = ++datasetView.loads;  // a slower, older answer must not replace the page asked for last
  const params = new URLSearchParams({version, offset, limit: ROWS_PAGE + 1});  // one more: is there a next page?
  if (split) params.set("split", split);
  const box = $("#dataset-rows");
  $("#rows-prev").disabled = $("#rows-next").disabled = true;
  try {
    const rows = (await api(`/v1/datasets/${encodeURIComponent(name)}/rows?${params}`)).data;
    if (load !== datasetView.loads || datasetView.name !== name) return;
    const shown = rows.slice(0, ROWS_PAGE);
    box.innerHTML = rowsTable(shown);
    $("#rows-prev").disabled = offset === 0;
    $("#rows-next").disabled = rows.length <= ROWS_PAGE;
    const v = datasetView.versions.find((x) => x.number === version);
    const total = split ? ((v.splits || {}).counts || {})[split] : v.rows;
    $("[data-testid=rows-range]").textContent = shown.length ?
      `rows ${fmt.int(offset + 1)}–${fmt.int(offset + shown.length)}${total == null ? "" : ` of ${fmt.int(total)}`}` : "";
  } catch (error) {
    if (load === datasetView.loads) showError(box, error);
  }
}

function rowsTable(rows) {
  if (!rows.length) return `<p class="muted">No rows${datasetView.split ? ` in the ${esc(datasetView.split)} split` : ""}.</p>`;
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];  // rows may differ in their keys
  const text = (x) => (x == null ? "" : typeof x === "object" ? JSON.stringify(x) : String(x));
  const cell = (x) => {
    const full = text(x);
    return `<td class="${typeof x === "number" ? "num" : ""}"${full ? ` title="${esc(full)}"` : ""}>${esc(cut(full, CELL_CHARS))}</td>`;
  };
  return `<table data-testid="dataset-rows"><thead><tr>${columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead>
    <tbody>${rows.map((r) => `<tr>${columns.map((c) => cell(r[c])).join("")}</tr>`).join("")}</tbody></table>`;
}
