// The console's Review page: the labeling tasks, and a task's review queue one row at a time, labeled from
// the keyboard (1..9 a label, s skip, u undo). Loaded before app.js, whose helpers (api, table, toast) it uses.
"use strict";

const review = {task: null, labels: [], queue: [], pos: 0, done: 0, undo: [], skipped: new Set(), busy: false};
const QUEUE_PAGE = 50;

async function pageReview(task) {
  if (task) return reviewTask(task);
  review.task = null;
  main().innerHTML = `<section class="card"><h1>Review</h1><p class="muted">Labeling tasks are made and run with
    <code>genfoundry label</code>; open one to label the rows its models are least sure of.</p><div id="task-list"></div></section>`;
  const box = $("#task-list");
  try {
    const rows = (await api("/v1/labeling/tasks")).data;
    const result = (r, f) => (r.result ? f(r.result) : "not run");
    box.innerHTML = table([{label: "task", key: "name"}, {label: "dataset", value: (r) => `${r.dataset}@${r.version}`},
      {label: "labels", value: (r) => r.labels.join(", ")}, {label: "rows", value: (r) => result(r, (x) => fmt.int(x.rows)), num: true},
      {label: "LF coverage", value: (r) => result(r, (x) => `${(100 * x.coverage).toFixed(1)}%`), num: true},
      {label: "reviewed at last run", value: (r) => result(r, (x) => fmt.int(x.reviewed)), num: true},
      {label: "labels written to", value: (r) => result(r, (x) => x.output)}], rows,
      {onClick: true, empty: "No labeling tasks yet: `genfoundry label create TASK.yaml`, then `genfoundry label run TASK`."});
    bindRows(box, rows, (r) => { location.hash = `#/review/${encodeURIComponent(r.name)}`; });
  } catch (error) { showError(box, error); }
}

async function reviewTask(task) {
  Object.assign(review, {task, labels: [], queue: [], pos: 0, done: 0, undo: [], skipped: new Set(), busy: false});
  main().innerHTML = `<section class="card"><p><a href="#/review">← all tasks</a></p>
    <div class="row"><h1>Review <code>${esc(task)}</code></h1><span class="muted">reviews done in this page:
    <b data-testid="review-count">0</b></span></div><div id="review-row"></div></section>`;
  await loadQueue();
}

async function loadQueue() {
  const task = review.task;
  const limit = Math.min(200, QUEUE_PAGE + review.skipped.size);  // skipped rows stay at the head of the queue
  try {
    const body = await api(`/v1/labeling/tasks/${encodeURIComponent(task)}/queue?limit=${limit}`);
    if (review.task !== task) return;
    review.labels = body.labels;
    review.queue = body.data.filter((r) => !review.skipped.has(r.row_id));
    review.pos = 0;
    showRow();
  } catch (error) { showError($("#review-row"), error); }
}

function showRow() {
  const box = $("#review-row");
  const row = review.queue[review.pos];
  $("[data-testid=review-count]").textContent = fmt.int(review.done);
  if (!row) {
    box.innerHTML = `<p class="muted" data-testid="review-empty">Nothing left to review${review.skipped.size ? " but the rows you skipped" : ""}.
      Run the task again (<code>genfoundry label run ${esc(review.task)}</code>) to use your reviews.</p>`;
    return;
  }
  const pct = (p) => `${(100 * p).toFixed(1)}%`;
  const probs = review.labels.map((l) => `<tr><td>${esc(l)}</td>` + [row.label_probs[l], row.end_probs[l]].map((p) =>
    `<td class="num">${pct(p)}</td><td class="prob"><span class="bar-track"><span class="bar" style="width:${pct(p)}"></span></span></td>`).join("") + "</tr>").join("");
  const votes = row.votes.map((v) => `<li>${esc(v.lf)} → ${v.label == null ? `<span class="muted">abstain</span>` : pill(v.label)}</li>`).join("");
  box.innerHTML = `<div class="review" data-row-id="${esc(row.row_id)}">
    <blockquote class="review-text" data-testid="review-text">${esc(row.text)}</blockquote>
    <p class="muted">row <code>${esc(row.row_id)}</code> · ${esc(row.split)} · ${row.disagree ? "the two models disagree" : "the label model is unsure"}</p>
    <div class="review-facts"><div><h2>Labeling functions</h2><ul class="votes" data-testid="review-votes">${votes || "<li class=\"muted\">none</li>"}</ul></div>
    <div><h2>Probabilities</h2><table class="probs"><thead><tr><th>label</th><th class="num">label model</th><th></th><th class="num">end model</th><th></th></tr></thead>
    <tbody>${probs}</tbody></table></div></div>
    <div class="row review-keys">${review.labels.map((l, i) => i < 9 ?
      `<button type="button" data-label="${esc(l)}"><kbd>${i + 1}</kbd> ${esc(l)}</button>` : "").join("")}
    <button type="button" class="secondary" data-action="skip"><kbd>s</kbd> skip</button>
    <button type="button" class="secondary" data-action="undo"${review.undo.length ? "" : " disabled"}><kbd>u</kbd> undo</button></div></div>`;
  box.querySelectorAll("[data-label]").forEach((b) => b.addEventListener("click", () => labelRow(b.dataset.label)));
  box.querySelector("[data-action=skip]").addEventListener("click", skipRow);
  box.querySelector("[data-action=undo]").addEventListener("click", undoReview);
}

function nextRow() {
  review.pos += 1;
  if (review.pos < review.queue.length) return showRow();
  return loadQueue();
}

async function busy(work) {
  if (review.busy) return;  // one request at a time: a held-down key does not label several rows
  review.busy = true;
  try { await work(); } finally { review.busy = false; }
}

function labelRow(label) {
  const row = review.queue[review.pos];
  if (!row) return;
  return busy(async () => {
    const task = review.task;
    try {
      const made = await api(`/v1/labeling/tasks/${encodeURIComponent(task)}/reviews`,
        {method: "POST", json: {row_id: row.row_id, label, expected: null}});
      if (review.task !== task) return;
      review.undo.push({id: made.id, row});
      review.done += 1;
    } catch (error) {
      toast(error.message, true);
      if (error.status !== 409) return;  // someone else labeled this row: go on to the next one
    }
    await nextRow();
  });
}

function skipRow() {
  const row = review.queue[review.pos];
  if (!row || review.busy) return;
  review.skipped.add(row.row_id);
  nextRow();
}

function undoReview() {
  const last = review.undo[review.undo.length - 1];
  if (!last) return toast("Nothing to undo in this page.");
  return busy(async () => {
    try {
      await api(`/v1/labeling/tasks/${encodeURIComponent(review.task)}/reviews/${encodeURIComponent(last.id)}`, {method: "DELETE"});
    } catch (error) {
      toast(error.message, true);
      if (error.status !== 404) return;  // 404: already undone elsewhere; forget it here too
    }
    review.undo.pop();
    review.done = Math.max(0, review.done - 1);
    review.skipped.delete(last.row.row_id);
    review.queue.splice(review.pos, 0, last.row);  // the row is back in the queue: show it again
    showRow();
  });
}

document.addEventListener("keydown", (event) => {
  if (!key() || !review.task || !location.hash.startsWith("#/review/") || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target.closest && event.target.closest("input, textarea, select")) return;
  const pressed = event.key.toLowerCase();
  const label = /^[1-9]$/.test(pressed) ? review.labels[Number(pressed) - 1] : undefined;
  if (label !== undefined) labelRow(label);
  else if (pressed === "s") skipRow();
  else if (pressed === "u") undoReview();
  else return;
  event.preventDefault();
});
