// The genfoundry console: a page per hash route, all data from the gateway's API with the user's key.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const main = () => $("#main");
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmt = {
  usd: (v) => v == null ? "–" : "$" + (v < 0.01 ? v.toPrecision(3) : v.toFixed(4)),
  ms: (v) => v == null ? "–" : (v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(1) + " ms"),
  int: (v) => v == null ? "–" : Number(v).toLocaleString(),
  time: (v) => v ? v.replace("T", " ").slice(0, 19) : "",
};

// -- API ------------------------------------------------------------------------------------------------------
function key() { return sessionStorage.getItem("genfoundry.key"); }

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({Authorization: `Bearer ${key()}`}, options.headers || {});
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, Object.assign({}, options, {headers}));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = {error: {message: text}}; }
  if (!response.ok) {
    if (response.status === 401) { signOut(); }
    throw new ApiError(response.status, body);
  }
  return body;
}

function toast(message, isError = false) {
  const el = $("#toast");
  el.textContent = message;
  el.style.background = isError ? "#c92a2a" : "";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

function showError(where, error) {
  where.innerHTML = `<p class="error" data-testid="error">${esc(error.message)}</p>`;
}

// -- sign in --------------------------------------------------------------------------------------------------
function signOut() {
  sessionStorage.removeItem("genfoundry.key");
  render();
}

function renderLogin() {
  main().innerHTML = "";
  main().appendChild($("#login").content.cloneNode(true));
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem("genfoundry.key", $("#api-key").value.trim());
    try {
      await api("/v1/models");
      if (!location.hash || location.hash === "#/") location.hash = "#/chat";
      render();
    } catch (error) {
      sessionStorage.removeItem("genfoundry.key");
      $("#login-error").textContent = error.message;
    }
  });
}

// -- charts (SVG, drawn here: no library, no CDN) -------------------------------------------------------------
function chart(title, points, series, {kind = "bar", format = (v) => v} = {}) {
  const w = 560, h = 190, left = 52, bottom = 22, top = 18;
  const values = points.flatMap((p) => series.map((s) => p[s.key] ?? 0));
  const max = Math.max(...values, 0) || 1;
  const x = (i) => left + (points.length <= 1 ? (w - left) / 2 : i * (w - left - 10) / (points.length - 1));
  const y = (v) => h - bottom - (v / max) * (h - bottom - top);
  let body = `<text x="${left}" y="12">${esc(title)}</text>`;
  for (const f of [0, 0.5, 1]) {
    body += `<line x1="${left}" x2="${w}" y1="${y(max * f)}" y2="${y(max * f)}" stroke="#eee"/>`;
    body += `<text x="2" y="${y(max * f) + 3}">${esc(format(max * f))}</text>`;
  }
  const barWidth = Math.max(2, Math.min(28, (w - left) / Math.max(points.length, 1) / series.length - 2));
  series.forEach((s, si) => {
    if (kind === "bar") {
      points.forEach((p, i) => {
        const v = p[s.key] ?? 0;
        body += `<rect x="${x(i) - barWidth * series.length / 2 + si * barWidth}" y="${y(v)}" width="${barWidth}" height="${h - bottom - y(v)}" fill="${s.color}"><title>${esc(p.at)}: ${esc(format(v))}</title></rect>`;
      });
    } else {
      const path = points.filter((p) => p[s.key] != null).map((p, i) => `${i ? "L" : "M"}${x(points.indexOf(p))},${y(p[s.key])}`).join(" ");
      body += `<path d="${path}" fill="none" stroke="${s.color}" stroke-width="2"/>`;
      points.forEach((p, i) => { if (p[s.key] != null) body += `<circle cx="${x(i)}" cy="${y(p[s.key])}" r="2.5" fill="${s.color}"><title>${esc(p.at)}: ${esc(format(p[s.key]))}</title></circle>`; });
    }
    body += `<text x="${w - 150 + si * 75}" y="12" fill="${s.color}">■ ${esc(s.label)}</text>`;
  });
  if (points.length) {
    body += `<text x="${left}" y="${h - 6}">${esc(fmt.time(points[0].at))}</text>`;
    body += `<text x="${w - 120}" y="${h - 6}">${esc(fmt.time(points[points.length - 1].at))}</text>`;
  }
  return `<svg class="chart" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(title)}">${body}</svg>`;
}

function table(columns, rows, {onClick, empty = "Nothing yet."} = {}) {
  if (!rows.length) return `<p class="muted">${esc(empty)}</p>`;
  const head = columns.map((c) => `<th class="${c.num ? "num" : ""}">${esc(c.label)}</th>`).join("");
  const body = rows.map((r, i) => `<tr class="${onClick ? "click" : ""}" data-row="${i}">` +
    columns.map((c) => `<td class="${c.num ? "num" : ""}">${c.html ? c.html(r) : esc(c.value ? c.value(r) : r[c.key])}</td>`).join("") + "</tr>").join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function bindRows(container, rows, onClick) {
  container.querySelectorAll("tr[data-row]").forEach((tr) => tr.addEventListener("click", () => onClick(rows[Number(tr.dataset.row)])));
}

const pill = (v) => `<span class="pill ${esc(v)}">${esc(v)}</span>`;

// -- chat -----------------------------------------------------------------------------------------------------
const chatState = {messages: []};

async function pageChat() {
  main().innerHTML = `<section class="card"><h1>Chat playground</h1>
    <div class="row"><label>Model or app<select id="chat-model"></select></label>
      <label>Max tokens<input id="chat-max" type="number" value="128" min="1" max="4096" style="width:7rem"></label>
      <button class="secondary" id="chat-clear" type="button">New conversation</button></div>
    <div class="messages" id="chat-log"></div>
    <form id="chat-form"><textarea id="chat-input" placeholder="Ask something…" required></textarea>
      <div class="row"><button type="submit" id="chat-send">Send</button><span class="muted" id="chat-status"></span></div></form>
    </section>`;
  const select = $("#chat-model");
  try {
    const models = (await api("/v1/models")).data.filter((m) => !m.capabilities || m.capabilities.includes("chat"));
    for (const m of models) {
      const label = m.id.startsWith("rag:") ? `${m.id} (grounded in a collection)` : m.id;
      select.insertAdjacentHTML("beforeend", `<option value="${esc(m.id)}">${esc(label)}</option>`);
    }
    const def = models.find((m) => (m.aliases || []).includes("default")) || models[0];
    if (def) select.value = def.id;
  } catch (error) { showError($("#chat-log"), error); }
  $("#chat-clear").addEventListener("click", () => { chatState.messages = []; $("#chat-log").innerHTML = ""; });
  $("#chat-form").addEventListener("submit", (event) => { event.preventDefault(); sendChat(); });
  for (const m of chatState.messages) appendMessage(m.role, m.content);
}

function appendMessage(role, text) {
  const el = document.createElement("div");
  el.className = `msg ${role}`;
  el.textContent = text;
  $("#chat-log").appendChild(el);
  return el;
}

async function sendChat() {
  const text = $("#chat-input").value.trim();
  if (!text) return;
  const model = $("#chat-model").value;
  $("#chat-input").value = "";
  appendMessage("user", text);
  chatState.messages.push({role: "user", content: text});
  const out = appendMessage("assistant", "");
  out.dataset.testid = "assistant";
  $("#chat-send").disabled = true;
  $("#chat-status").textContent = "generating…";
  const started = performance.now();
  let id = null, traceId = null, citations = [], finish = null, answer = "";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: {Authorization: `Bearer ${key()}`, "Content-Type": "application/json", "X-Genfoundry-App": "console"},
      body: JSON.stringify({model, messages: chatState.messages, stream: true, max_tokens: Number($("#chat-max").value) || 128}),
    });
    traceId = response.headers.get("x-genfoundry-trace-id");
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new ApiError(response.status, body);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new ApiError(500, chunk);
          id = chunk.id || id;
          if (chunk.citations) citations = chunk.citations;
          for (const choice of chunk.choices || []) {
            if (choice.delta && choice.delta.content) { answer += choice.delta.content; out.textContent = answer; }
            if (choice.finish_reason) finish = choice.finish_reason;
          }
        }
      }
    }
    chatState.messages.push({role: "assistant", content: answer});
    const meta = document.createElement("div");
    meta.className = "meta";
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    meta.innerHTML = `${esc(finish || "")} · ${seconds} s` +
      (traceId ? ` · <a href="#/traces/${esc(traceId)}" data-testid="trace-link">trace</a>` : "") +
      (id ? ` · <span class="feedback">rate: ${[1, 2, 3, 4, 5].map((r) => `<button type="button" class="secondary" data-rating="${r}">${r}</button>`).join("")}</span>` : "");
    out.appendChild(meta);
    if (citations.length) {
      const list = document.createElement("ol");
      list.className = "citations";
      list.dataset.testid = "citations";
      for (const c of citations) {
        const li = document.createElement("li");
        li.value = c.index;
        li.textContent = `${c.title || c.source}${c.page ? ", p. " + c.page : ""} — ${c.text.slice(0, 160)}…`;
        list.appendChild(li);
      }
      out.appendChild(list);
    }
    meta.querySelectorAll("[data-rating]").forEach((b) => b.addEventListener("click", async () => {
      const rating = Number(b.dataset.rating);
      const correction = rating <= 2 ? prompt("What should the answer have been? (optional)") : null;
      try {
        await api("/v1/feedback", {method: "POST", json: {response_id: id, rating, correction: correction || null}});
        meta.querySelector(".feedback").textContent = `rated ${rating}/5, thank you`;
      } catch (error) { toast(error.message, true); }
    }));
  } catch (error) {
    out.classList.add("error");
    out.textContent = error.message;
    chatState.messages.pop();
  } finally {
    $("#chat-send").disabled = false;
    $("#chat-status").textContent = "";
  }
}

// -- collections ----------------------------------------------------------------------------------------------
async function pageCollections(name) {
  main().innerHTML = `<section class="card"><h1>Collections</h1><div id="col-list"></div>
    <form class="row" id="col-create"><input id="col-name" placeholder="new collection name" pattern="[a-z0-9][a-z0-9_-]*" required>
    <select id="col-clearance"><option>public</option><option selected>internal</option><option>confidential</option><option>restricted</option></select>
    <button type="submit">Create</button></form></section><section class="card" id="col-detail" hidden></section>`;
  $("#col-create").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("/v1/collections", {method: "POST", json: {name: $("#col-name").value, clearance: $("#col-clearance").value}});
      location.hash = `#/collections/${$("#col-name").value}`;
    } catch (error) { toast(error.message, true); }
  });
  try {
    const rows = (await api("/v1/collections")).data;
    const list = $("#col-list");
    list.innerHTML = table([{label: "name", key: "name"}, {label: "clearance", key: "clearance"}, {label: "PII", key: "pii"},
      {label: "embedding model", key: "embedding_model"}, {label: "description", key: "description"}], rows,
      {onClick: true, empty: "No collections yet: create one, then upload files."});
    bindRows(list, rows, (r) => { location.hash = `#/collections/${r.name}`; });
  } catch (error) { showError($("#col-list"), error); }
  if (name) await collectionDetail(name);
}

async function collectionDetail(name) {
  const box = $("#col-detail");
  box.hidden = false;
  box.innerHTML = `<h2>${esc(name)}</h2>
    <form class="row" id="upload-form"><input type="file" id="upload-files" multiple required>
    <button type="submit" id="upload-button">Upload and ingest</button><progress id="upload-progress" value="0" max="100" hidden></progress>
    <span id="upload-status" class="muted"></span></form><div id="doc-list"></div>`;
  $("#upload-form").addEventListener("submit", (event) => { event.preventDefault(); upload(name); });
  await listDocuments(name);
}

async function listDocuments(name) {
  try {
    const docs = (await api(`/v1/collections/${encodeURIComponent(name)}/documents`)).data;
    const box = $("#doc-list");
    box.innerHTML = table([{label: "document", key: "source"}, {label: "title", key: "title"}, {label: "chunks", key: "chunks", num: true},
      {label: "bytes", value: (r) => fmt.int(r.size), num: true}, {label: "ingested", value: (r) => fmt.time(r.ingested_at)},
      {label: "", html: (r) => `<button class="danger" data-forget="${esc(r.id)}">Forget</button>`}], docs, {empty: "No documents yet."});
    box.querySelectorAll("[data-forget]").forEach((b) => b.addEventListener("click", async () => {
      if (!confirm("Forget this document? Its chunks, vectors and cached answers are deleted.")) return;
      try {
        await api(`/v1/collections/${encodeURIComponent(name)}/documents/${encodeURIComponent(b.dataset.forget)}`, {method: "DELETE"});
        toast("Forgotten.");
        await listDocuments(name);
      } catch (error) { toast(error.message, true); }
    }));
  } catch (error) { showError($("#doc-list"), error); }
}

function upload(name) {
  const files = $("#upload-files").files;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const xhr = new XMLHttpRequest();
  const bar = $("#upload-progress"), status = $("#upload-status");
  bar.hidden = false; bar.value = 0;
  $("#upload-button").disabled = true;
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = 100 * e.loaded / e.total; };
  xhr.upload.onload = () => { bar.removeAttribute("value"); status.textContent = "ingesting: parsing, chunking, embedding…"; };
  xhr.onload = async () => {
    $("#upload-button").disabled = false;
    bar.hidden = true;
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* keep {} */ }
    if (xhr.status >= 400) { status.innerHTML = `<span class="error">${esc((body.error || {}).message || xhr.statusText)}</span>`; return; }
    const failed = (body.failed || []).map((f) => `${f.source}: ${f.error}`).join("; ");
    status.innerHTML = `<span data-testid="ingest-report">added ${body.added.length}, updated ${body.updated.length}, unchanged ${body.skipped.length}, ${body.chunks} chunks in ${body.seconds} s</span>` +
      (failed ? ` <span class="error">failed: ${esc(failed)}</span>` : "");
    await listDocuments(name);
  };
  xhr.onerror = () => { $("#upload-button").disabled = false; status.innerHTML = `<span class="error">upload failed (network)</span>`; };
  xhr.open("POST", `/v1/collections/${encodeURIComponent(name)}/documents`);
  xhr.setRequestHeader("Authorization", `Bearer ${key()}`);
  xhr.send(form);
}

// -- traces ---------------------------------------------------------------------------------------------------
function rangeForm(id, extra = "") {
  return `<form class="row" id="${id}"><label>Since<input name="since" placeholder="7d or 2026-11-01"></label>
    <label>Until<input name="until" placeholder="now"></label>${extra}<button type="submit">Show</button></form>`;
}

function formQuery(form) {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
  return params.toString();
}

async function pageTraces(traceId) {
  if (traceId) return traceDetail(traceId);
  main().innerHTML = `<section class="card"><h1>Traces</h1>${rangeForm("trace-filter",
    `<label>Model<input name="model"></label><label>Status<select name="status"><option value="">any</option><option>ok</option><option>error</option><option>cancelled</option></select></label>`)}
    <div id="trace-list"></div></section>`;
  const load = async () => {
    const box = $("#trace-list");
    try {
      const rows = (await api(`/admin/traces?${formQuery($("#trace-filter"))}`)).data;
      box.innerHTML = table([{label: "started", value: (r) => fmt.time(r.start_at)}, {label: "request", key: "name"},
        {label: "model", value: (r) => r.resolved_model || r.model || ""}, {label: "status", html: (r) => pill(r.call_status || (r.http_status >= 400 ? "error" : "ok"))},
        {label: "HTTP", key: "http_status", num: true}, {label: "duration", value: (r) => fmt.ms(r.duration_ms), num: true},
        {label: "tokens", value: (r) => r.prompt_tokens == null ? "" : `${r.prompt_tokens} + ${r.completion_tokens}`, num: true},
        {label: "cost", value: (r) => fmt.usd(r.cost_usd), num: true}], rows, {onClick: true, empty: "No traces in this range."});
      bindRows(box, rows, (r) => { location.hash = `#/traces/${r.trace_id}`; });
    } catch (error) { showError(box, error); }
  };
  $("#trace-filter").addEventListener("submit", (event) => { event.preventDefault(); load(); });
  await load();
}

async function traceDetail(traceId, attempt = 0) {
  main().innerHTML = `<section class="card"><p><a href="#/traces">← all traces</a></p><h1>Trace <code>${esc(traceId)}</code></h1><div id="trace-body"></div></section>`;
  const box = $("#trace-body");
  try {
    const trace = await api(`/admin/traces/${encodeURIComponent(traceId)}`).catch((error) => {
      if (error.status === 404 && attempt < 4) return null;  // spans are written about a second after the request
      throw error;
    });
    const complete = trace && trace.spans.some((s) => s.kind === "server" && !s.parent_id);
    if (!complete && attempt < 4) {
      box.innerHTML = `<p class="muted">The request's spans are still being written…</p>`;
      setTimeout(() => { if (location.hash.endsWith(traceId)) traceDetail(traceId, attempt + 1); }, 1200);
      return;
    }
    const spans = trace.spans;
    const t0 = Math.min(...spans.map((s) => Date.parse(s.start_at + "Z")));
    const total = Math.max(...spans.map((s) => Date.parse(s.start_at + "Z") - t0 + s.duration_ms), 1);
    let rows = "";
    const walk = (node, depth) => {
      const start = Date.parse(node.start_at + "Z") - t0;
      rows += `<div class="span-row" data-span="${esc(node.span_id)}"><span style="padding-left:${depth * 14}px">${esc(node.name)}</span>
        <span class="bar-track"><span class="bar ${node.status === "error" ? "error" : ""}" style="left:${100 * start / total}%;width:${100 * node.duration_ms / total}%"></span></span>
        <span class="num">${fmt.ms(node.duration_ms)}</span></div>`;
      node.children.forEach((c) => walk(c, depth + 1));
    };
    trace.tree.forEach((n) => walk(n, 0));
    const call = trace.call;
    box.innerHTML = (call ? `<div class="kpis"><div class="kpi">model<b>${esc(call.resolved_model || call.model)}</b></div>
        <div class="kpi">tokens<b>${call.prompt_tokens} + ${call.completion_tokens}</b></div><div class="kpi">cost<b>${fmt.usd(call.cost_usd)}</b></div>
        <div class="kpi">latency<b>${fmt.ms(call.latency_ms)}</b></div><div class="kpi">status<b>${esc(call.status)}</b></div></div>` : "") +
      `<h2 style="margin-top:1rem">Spans</h2><div class="tree" data-testid="span-tree">${rows}</div><h2>Attributes</h2><pre id="span-attrs">select a span</pre>` +
      (trace.feedback.length ? `<h2>Feedback</h2>${table([{label: "rating", key: "rating"}, {label: "correction", key: "correction"}, {label: "comment", key: "comment"}], trace.feedback)}` : "");
    box.querySelectorAll("[data-span]").forEach((el) => el.addEventListener("click", () => {
      const s = spans.find((x) => x.span_id === el.dataset.span);
      $("#span-attrs").textContent = JSON.stringify({name: s.name, kind: s.kind, status: s.status, status_message: s.status_message, attributes: s.attributes, events: s.events}, null, 2);
    }));
  } catch (error) { showError(box, error); }
}

// -- cost and latency -----------------------------------------------------------------------------------------
async function pageCost() {
  main().innerHTML = `<section class="card"><h1>Cost and latency</h1>${rangeForm("cost-filter",
    `<label>Per<select name="bucket"><option>minute</option><option selected>hour</option><option>day</option></select></label>
     <label>Group table by<select name="group_by"><option value="model">model</option><option value="key">key</option><option value="app">app</option><option value="day">day</option><option value="model,key,app,day">model, key, app, day</option></select></label>`)}
    <div id="cost-kpis" class="kpis"></div></section><section class="card"><div class="charts" id="cost-charts"></div></section>
    <section class="card"><h2>Breakdown</h2><div id="cost-table"></div></section>`;
  const load = async () => {
    const form = $("#cost-filter");
    const params = new URLSearchParams(formQuery(form));
    const bucket = params.get("bucket") || "hour";
    const group = params.get("group_by") || "model";
    params.delete("bucket"); params.delete("group_by");
    try {
      const [series, usage] = await Promise.all([
        api(`/admin/usage/timeseries?${params}&bucket=${bucket}`),
        api(`/admin/usage?${params}&group_by=${encodeURIComponent(group)}`)]);
      const t = usage.total;
      $("#cost-kpis").innerHTML = `<div class="kpi">requests<b data-testid="kpi-requests">${fmt.int(t.requests)}</b></div>
        <div class="kpi">cost<b data-testid="kpi-cost">${fmt.usd(t.cost_usd)}</b></div><div class="kpi">tokens<b>${fmt.int(t.prompt_tokens + t.completion_tokens)}</b></div>
        <div class="kpi">$ per million tokens<b>${t.usd_per_million_tokens == null ? "–" : "$" + t.usd_per_million_tokens}</b></div>
        <div class="kpi">latency p50 / p95<b>${fmt.ms(t.latency_ms_p50)} / ${fmt.ms(t.latency_ms_p95)}</b></div><div class="kpi">errors<b>${fmt.int(t.errors)}</b></div>`;
      const p = series.points;
      $("#cost-charts").innerHTML = chart("Cost (USD)", p, [{key: "cost_usd", label: "cost", color: "#3b5bdb"}], {format: (v) => "$" + v.toPrecision(2)}) +
        chart("Requests", p, [{key: "requests", label: "requests", color: "#2b8a3e"}, {key: "errors", label: "errors", color: "#c92a2a"}], {format: (v) => Math.round(v)}) +
        chart("Latency (ms)", p, [{key: "latency_ms_p50", label: "p50", color: "#3b5bdb"}, {key: "latency_ms_p95", label: "p95", color: "#e67700"}], {kind: "line", format: (v) => Math.round(v)}) +
        chart("Tokens", p, [{key: "prompt_tokens", label: "prompt", color: "#748ffc"}, {key: "completion_tokens", label: "completion", color: "#1c7ed6"}], {format: (v) => Math.round(v)});
      const groups = usage.group_by.map((g) => ({label: g, key: g}));
      $("#cost-table").innerHTML = table([...groups, {label: "requests", key: "requests", num: true}, {label: "errors", key: "errors", num: true},
        {label: "prompt tok", key: "prompt_tokens", num: true}, {label: "completion tok", key: "completion_tokens", num: true},
        {label: "cost", value: (r) => fmt.usd(r.cost_usd), num: true}, {label: "$/M tokens", value: (r) => r.usd_per_million_tokens ?? "–", num: true},
        {label: "p50", value: (r) => fmt.ms(r.latency_ms_p50), num: true}, {label: "p95", value: (r) => fmt.ms(r.latency_ms_p95), num: true}], usage.data, {empty: "No calls in this range."});
    } catch (error) { showError($("#cost-charts"), error); $("#cost-table").innerHTML = ""; }
  };
  $("#cost-filter").addEventListener("submit", (event) => { event.preventDefault(); load(); });
  await load();
}

// -- guard, feedback, drift, evaluations ----------------------------------------------------------------------
async function pageGuard() {
  main().innerHTML = `<section class="card"><h1>Guard events</h1><div id="guard-list"></div></section>`;
  const box = $("#guard-list");
  try {
    const rows = (await api("/admin/guard/events?limit=200")).data;
    const decisions = (r) => (r.details.decisions || []).filter((d) => d.action !== "skip")
      .map((d) => {
        // what was found (content-safety categories, PII types, injection layers), never the text
        const kinds = [...new Set((d.findings || []).map((f) => f.kind).filter(Boolean))].slice(0, 4);
        return `${d.stage}.${d.rail}: ${d.action}${kinds.length ? ` (${kinds.join(", ")})` : ""}${d.dry_run ? " (dry run)" : ""}`;
      }).join(", ");
    box.innerHTML = table([{label: "at", value: (r) => fmt.time(r.at)}, {label: "event", key: "action"},
      {label: "outcome", html: (r) => r.details.outcome ? pill(r.details.outcome) : ""}, {label: "policy", value: (r) => r.details.policy || ""},
      {label: "model", value: (r) => r.details.model || ""}, {label: "decisions", value: decisions}, {label: "call", key: "target"}], rows,
      {onClick: true, empty: "No guard decisions recorded yet."});
    bindRows(box, rows, (r) => toast(JSON.stringify(r.details).slice(0, 400)));
  } catch (error) { showError(box, error); }
}

async function pageFeedback() {
  main().innerHTML = `<section class="card"><h1>Feedback</h1>${rangeForm("fb-filter", `<label>Rating<select name="rating"><option value="">any</option><option>1</option><option>2</option><option>3</option><option>4</option><option>5</option></select></label>`)}<div id="fb-list"></div></section>`;
  const load = async () => {
    const box = $("#fb-list");
    try {
      const rows = (await api(`/admin/feedback?${formQuery($("#fb-filter"))}`)).data;
      box.innerHTML = table([{label: "at", value: (r) => fmt.time(r.created_at)}, {label: "rating", key: "rating", num: true}, {label: "model", key: "model"},
        {label: "answer", value: (r) => ((r.response || {}).text || "").slice(0, 140)}, {label: "correction", key: "correction"}, {label: "comment", key: "comment"}],
        rows, {onClick: true, empty: "No feedback yet."});
      bindRows(box, rows, (r) => { if (r.trace_id) location.hash = `#/traces/${r.trace_id}`; });
    } catch (error) { showError(box, error); }
  };
  $("#fb-filter").addEventListener("submit", (event) => { event.preventDefault(); load(); });
  await load();
}

async function pageDrift() {
  main().innerHTML = `<section class="card"><h1>Drift</h1><form class="row" id="drift-run"><label>Recent hours<input name="recent_hours" type="number" value="24" min="1"></label>
    <label>Baseline days<input name="baseline_days" type="number" value="7" min="1"></label><button type="submit">Check requests now</button><span id="drift-status" class="muted"></span></form></section>
    <section class="card"><h2>Alerts</h2><div id="alert-list"></div></section><section class="card"><h2>Checks</h2><div id="drift-list"></div></section>`;
  const load = async () => {
    try {
      const alerts = (await api("/admin/alerts?limit=100")).data;
      $("#alert-list").innerHTML = table([{label: "at", value: (r) => fmt.time(r.at)}, {label: "kind", key: "kind"}, {label: "severity", html: (r) => pill(r.severity)},
        {label: "subject", key: "subject"}, {label: "message", key: "message"}], alerts, {empty: "No alerts."});
      const runs = (await api("/admin/drift/runs")).data;
      $("#drift-list").innerHTML = table([{label: "at", value: (r) => fmt.time(r.at)}, {label: "check", key: "kind"}, {label: "subject", key: "subject"},
        {label: "drifted", html: (r) => pill(r.drifted ? "warning" : "ok")},
        {label: "result", value: (r) => r.kind === "golden" ? `${r.result.changed}/${r.result.prompts} golden answers changed` :
          `MMD p=${r.result.mmd.p_value.toFixed(4)}, ${r.result.n_recent} vs ${r.result.n_baseline} requests, ${(r.result.topics || []).filter((t) => t.status === "new" || t.status === "grown").length} topics new or grown`}],
        runs, {empty: "No drift checks yet."});
    } catch (error) { showError($("#alert-list"), error); }
  };
  $("#drift-run").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    $("#drift-status").textContent = "embedding and testing…";
    try {
      const r = await api("/admin/drift/requests", {method: "POST", json: {recent_hours: Number(form.get("recent_hours")), baseline_days: Number(form.get("baseline_days"))}});
      $("#drift-status").textContent = r.drifted ? "drift found" : `no drift (p=${r.mmd.p_value.toFixed(3)})`;
    } catch (error) { $("#drift-status").innerHTML = `<span class="error">${esc(error.message)}</span>`; }
    await load();
  });
  await load();
}

async function pageEvals() {
  main().innerHTML = `<section class="card"><h1>Evaluation runs</h1><p class="muted">Run suites with <code>genfoundry eval run SUITE --model NAME</code>; tick two runs to compare them.</p>
    <div id="eval-list"></div><button id="eval-compare" type="button" disabled>Compare selected</button></section><section class="card" id="eval-detail" hidden></section>`;
  try {
    const rows = (await api("/admin/evals")).data;
    const box = $("#eval-list");
    const metrics = (r) => Object.entries(r.metrics || {}).slice(0, 6).map(([k, v]) => `${k} ${typeof v === "number" ? +v.toFixed(3) : v}`).join(", ");
    box.innerHTML = table([{label: "", html: (r) => `<input type="checkbox" data-eval="${esc(r.id)}">`}, {label: "at", value: (r) => fmt.time(r.at)},
      {label: "suite", key: "suite"}, {label: "target", key: "target"}, {label: "status", html: (r) => pill(r.status)},
      {label: "seconds", value: (r) => r.duration_s.toFixed(1), num: true}, {label: "metrics", value: metrics}], rows, {empty: "No evaluation runs yet."});
    const boxes = () => [...box.querySelectorAll("[data-eval]:checked")].map((b) => b.dataset.eval);
    box.querySelectorAll("[data-eval]").forEach((b) => b.addEventListener("change", () => { $("#eval-compare").disabled = boxes().length !== 2; }));
    $("#eval-compare").addEventListener("click", async () => {
      const [a, b] = boxes();
      const detail = $("#eval-detail");
      detail.hidden = false;
      try {
        const c = await api(`/admin/evals/compare?a=${a}&b=${b}`);
        detail.innerHTML = `<h2>${esc(c.a.suite)}: ${esc(c.a.target)} (${fmt.time(c.a.at)}) vs ${esc(c.b.target)} (${fmt.time(c.b.at)})</h2>` +
          table([{label: "metric", key: "name"}, {label: "A", value: (m) => m.a, num: true}, {label: "B", value: (m) => m.b, num: true},
            {label: "B − A", value: (m) => m.delta == null ? "" : (m.delta > 0 ? "+" : "") + (+m.delta.toFixed(4)), num: true}], c.metrics);
      } catch (error) { showError(detail, error); }
    });
  } catch (error) { showError($("#eval-list"), error); }
}

// -- router ---------------------------------------------------------------------------------------------------
const pages = {chat: pageChat, collections: pageCollections, traces: pageTraces, cost: pageCost, guard: pageGuard,
  feedback: pageFeedback, drift: pageDrift, evals: pageEvals, datasets: pageDatasets, review: pageReview,
  tune: pageTune, agents: pageAgents, deployment: pageDeployment};  // datasets.js ... agents.js, deployment.js

async function render() {
  if (!key()) return renderLogin();
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  const [, page = "chat", arg] = location.hash.replace(/^#/, "").split("/").map(decodeURIComponent);
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  await (pages[page] || pageChat)(arg);
}

window.addEventListener("hashchange", render);
$("#logout").addEventListener("click", signOut);
render();
