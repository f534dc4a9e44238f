// The console's Agents page: the side-effect actions waiting for a person (approve, approve with edited
// arguments, or reject with a note), the recent runs (open one to see its steps and actions), and the agents
// with their tools. Pending approvals and runs are read again every few seconds while the page is open. Every
// text from the API goes into the page as text nodes (no innerHTML with data). Loaded after tune.js, whose DOM
// helpers (tuneEl, tuneTable, tuneReplace, tuneText) it uses, and before app.js, whose helpers (api, main, fmt,
// toast) it uses at run time.
"use strict";

const AGENTS_REFRESH_MS = 5000;
const AGENTS_STATUS_CLASS = {succeeded: "ok", approved: "ok", done: "ok", failed: "error", rejected: "error",
  stopped: "warning", waiting: "warning", pending: "warning"};
const agents = {view: 0, selected: null, approvalsKey: "", runsKey: "", runs: [], timer: null,
  drafts: new Map()};  // action id -> {text, note} typed into a card, kept when the list is drawn again

const agentsCurrent = (view) => view === agents.view && location.hash.startsWith("#/agents");
const agentsPill = (status) => tuneEl("span", {class: `pill ${AGENTS_STATUS_CLASS[status] || ""}`}, status);
const agentsCut = (text, chars) => (text.length > chars ? text.slice(0, chars - 1) + "…" : text);
const agentsTime = (v) => (typeof v === "number" ? tuneTime(v) : fmt.time(v));
const agentsJson = (v) => (v == null ? "" : typeof v === "string" ? v : JSON.stringify(v));

function agentsShort(value, chars = 160) {  // a long value is cut; the whole of it is the cell's title
  const text = agentsJson(value);
  return tuneEl("span", {title: text.length > chars ? text : null}, agentsCut(text, chars));
}

function agentsContent(content) {  // a message's content: text, or OpenAI-style parts
  if (Array.isArray(content)) return content.map((p) => (p && p.type === "text" ? p.text : agentsJson(p))).join("\n");
  return agentsJson(content);
}

// -- the page ---------------------------------------------------------------------------------------------------
async function pageAgents(runId) {
  clearTimeout(agents.timer);
  const view = ++agents.view;
  Object.assign(agents, {selected: runId || null, approvalsKey: "", runsKey: "", runs: [], drafts: new Map()});
  tuneReplace(main(),
    tuneEl("section", {class: "card"}, tuneEl("h1", {}, "Agents"),
      tuneEl("h2", {}, "Waiting for approval"),
      tuneEl("p", {class: "muted"}, "A side-effect tool call that the agent's rules hold for a person. Approve it as " +
        "proposed, edit its arguments and approve, or reject it (a note tells the agent why); the run then goes on."),
      tuneEl("div", {id: "agents-approvals"})),
    tuneEl("section", {class: "card"}, tuneEl("h2", {}, "Recent runs"),
      tuneEl("div", {id: "agents-runs", class: "scroll"})),
    tuneEl("section", {class: "card", id: "agents-run", hidden: true}),
    tuneEl("section", {class: "card"}, tuneEl("h2", {}, "Agents"),
      tuneEl("p", {class: "muted"}, "Agents are YAML files in the home's ", tuneEl("code", {}, "agents/"),
        " folder; each is served as the model ", tuneEl("code", {}, "agent:NAME"), "."),
      tuneEl("div", {id: "agents-list", class: "scroll"})));
  await Promise.all([agentsLoadApprovals(view), agentsLoadRuns(view), agentsLoadAgents(view)]);
  if (agents.selected && agentsCurrent(view)) await agentsShowRun(view);
  agentsFollow(view);
}

function agentsFollow(view) {  // new approvals and run statuses appear without a reload
  clearTimeout(agents.timer);
  agents.timer = setTimeout(async () => {
    if (!agentsCurrent(view)) return;
    await Promise.all([agentsLoadApprovals(view), agentsLoadRuns(view)]);
    if (agentsCurrent(view)) agentsFollow(view);
  }, AGENTS_REFRESH_MS);
}

function agentsError(box, error) {
  tuneReplace(box, tuneEl("p", {class: "error", "data-testid": "error"}, error.message));
}

// -- pending approvals ------------------------------------------------------------------------------------------
async function agentsLoadApprovals(view, {force = false} = {}) {
  const box = document.getElementById("agents-approvals");
  let actions;
  try {
    actions = (await api("/admin/agents/approvals?status=pending")).data;
  } catch (error) {
    if (agentsCurrent(view)) { agents.approvalsKey = ""; agentsError(box, error); }
    return;
  }
  if (!agentsCurrent(view)) return;
  const key = JSON.stringify(actions);
  if (key === agents.approvalsKey && !force) return;  // unchanged: keep the cards (and what is typed in them)
  agents.approvalsKey = key;
  agentsKeepDrafts();
  if (!actions.length) {
    tuneReplace(box, tuneEl("p", {class: "muted", "data-testid": "no-approvals"}, "No actions are waiting for approval."));
    return;
  }
  tuneReplace(box, actions.map((a) => agentsApproval(a)));
}

function agentsKeepDrafts() {
  const kept = new Map();
  document.querySelectorAll("#agents-approvals [data-action]").forEach((card) => {
    const text = card.querySelector("textarea").value, note = card.querySelector("input[data-note]").value;
    if (card.dataset.edited === "true" || note) kept.set(card.dataset.action, {text, note, edited: card.dataset.edited === "true"});
  });
  agents.drafts = kept;
}

function agentsApproval(action) {
  const run = action.run || {};
  const proposed = JSON.stringify(action.arguments ?? {}, null, 2);
  const draft = agents.drafts.get(action.id) || {};
  const error = tuneEl("p", {class: "error", "data-testid": "approval-error"});
  const card = tuneEl("div", {class: "agent-approval", "data-action": action.id, "data-edited": draft.edited ? "true" : "false"});
  const text = tuneEl("textarea", {class: "agent-args", spellcheck: "false", "data-testid": "approval-arguments",
    "aria-label": `arguments of ${action.id}`, rows: Math.min(12, proposed.split("\n").length + 1),
    on: {input: () => { card.dataset.edited = String(text.value !== proposed); error.textContent = ""; }}});
  text.value = draft.text ?? proposed;
  const note = tuneEl("input", {type: "text", "data-note": action.id, "data-testid": "approval-note", maxlength: 2000,
    placeholder: "note (optional): why, for the agent and the audit log", "aria-label": `note on ${action.id}`});
  note.value = draft.note || "";
  const buttons = [
    tuneEl("button", {type: "button", "data-decide": "approve", on: {click: () => agentsDecide(action, "approve", card)}}, "Approve"),
    tuneEl("button", {type: "button", class: "secondary", "data-decide": "edit",
      on: {click: () => agentsDecide(action, "edit", card)}}, "Approve with edits"),
    tuneEl("button", {type: "button", class: "danger", "data-decide": "reject",
      on: {click: () => agentsDecide(action, "reject", card)}}, "Reject"),
    tuneEl("button", {type: "button", class: "link", "data-reset": action.id, on: {click: () => {
      text.value = proposed;
      card.dataset.edited = "false";
      error.textContent = "";
    }}}, "reset arguments"),
  ];
  const schema = (action.proposed || {}).parameters;
  return tuneFill(card, {}, [
    tuneEl("div", {class: "row"}, agentsPill(action.status || "pending"),
      tuneEl("strong", {"data-testid": "approval-agent"}, run.agent || ""),
      tuneEl("span", {}, "wants to call ", tuneEl("code", {"data-testid": "approval-tool"}, action.tool)),
      tuneEl("span", {class: "muted"}, "action ", tuneEl("code", {}, action.id), " · ",
        tuneEl("a", {href: `#/agents/${encodeURIComponent(action.run_id)}`}, "run"), " · ", agentsTime(action.created_at))),
    tuneEl("p", {class: "agent-reason"}, "Needs approval: ", tuneEl("span", {"data-testid": "approval-reason"}, action.reason || "")),
    tuneEl("div", {class: "agent-facts"},
      tuneEl("div", {}, tuneEl("h3", {}, "Arguments"), text,
        schema ? tuneEl("details", {}, tuneEl("summary", {class: "muted"}, "parameters (JSON schema)"),
          tuneEl("pre", {}, JSON.stringify(schema, null, 2))) : null),
      tuneEl("div", {}, tuneEl("h3", {}, "Conversation"), agentsConversation(run.input || []),
        tuneEl("h3", {}, "Steps so far"), agentsSteps(run.steps || [], "approval-steps"))),
    tuneEl("div", {class: "row"}, note, buttons),
    error,
  ]);
}

function agentsConversation(messages) {
  if (!messages.length) return tuneEl("p", {class: "muted"}, "none");
  return tuneEl("div", {class: "messages agent-conversation", "data-testid": "approval-conversation"},
    messages.map((m) => tuneEl("div", {class: `msg ${m.role === "user" ? "user" : "assistant"}`},
      tuneEl("span", {class: "muted"}, `${m.role}: `), agentsContent(m.content))));
}

function agentsSteps(steps, testid) {
  if (!steps.length) return tuneEl("p", {class: "muted", "data-testid": testid}, "none yet");
  return tuneTable([
    {label: "#", num: true, cell: (s) => s.n ?? ""},
    {label: "kind", cell: (s) => s.kind ? agentsPill(s.kind) : ""},
    {label: "tool", cell: (s) => (s.tool ? tuneEl("code", {}, s.tool) : "")},
    {label: "arguments", cell: (s) => agentsShort(s.arguments, 120)},
    {label: "observation", cell: (s) => s.observation == null ? (s.reason ? tuneEl("span", {class: "muted"}, s.reason) : "") :
      agentsShort(s.observation, 200)},
  ], steps, {testid, rowAttrs: (s) => ({"data-step": s.n})});
}

async function agentsDecide(action, how, card) {
  const error = card.querySelector("[data-testid=approval-error]");
  const text = card.querySelector("textarea").value;
  const note = card.querySelector("input[data-note]").value.trim();
  error.textContent = "";
  const body = {decision: how === "reject" ? "reject" : "approve"};
  if (how === "edit") {
    let edited;
    try {
      edited = JSON.parse(text);
    } catch (problem) {
      error.textContent = `The arguments are not valid JSON (${problem.message}); nothing was sent.`;
      return;
    }
    if (edited === null || typeof edited !== "object" || Array.isArray(edited)) {
      error.textContent = "The arguments must be a JSON object ({…}); nothing was sent.";
      return;
    }
    body.arguments = edited;
  } else if (how === "approve" && card.dataset.edited === "true") {
    error.textContent = "You edited the arguments: click “Approve with edits” to send them, or “reset arguments” " +
      "to approve them as proposed. Nothing was sent.";
    return;
  }
  if (note) body.note = note;
  const view = agents.view;
  card.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  let done;
  try {
    done = await api(`/admin/agents/approvals/${encodeURIComponent(action.id)}`, {method: "POST", json: body});
  } catch (failure) {
    if (!agentsCurrent(view)) return;
    card.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    if (failure.status === 409) {  // decided already (by someone else): the list is out of date
      toast(failure.message, true);
      await Promise.all([agentsLoadApprovals(view, {force: true}), agentsLoadRuns(view)]);
    } else {
      error.textContent = failure.message;
    }
    return;
  }
  const verb = body.decision === "reject" ? "rejected" : body.arguments ? "approved with edits" : "approved";
  const status = (done && done.run && done.run.status) || "";
  toast(`${action.tool} (${action.id}) ${verb}${status ? `; the run is ${status}` : ""}`);
  agents.drafts.delete(action.id);
  if (!agentsCurrent(view)) return;
  await Promise.all([agentsLoadApprovals(view, {force: true}), agentsLoadRuns(view)]);
  if (agents.selected === action.run_id) await agentsShowRun(view);
}

// -- runs -------------------------------------------------------------------------------------------------------
async function agentsLoadRuns(view) {
  const box = document.getElementById("agents-runs");
  let runs;
  try {
    runs = (await api("/v1/agents/runs?limit=50")).data;
  } catch (error) {
    if (agentsCurrent(view)) { agents.runsKey = ""; agentsError(box, error); }
    return;
  }
  if (!agentsCurrent(view)) return;
  const key = JSON.stringify(runs);
  agents.runs = runs;
  if (key === agents.runsKey) return;  // unchanged: keep the table
  agents.runsKey = key;
  if (!runs.length) {
    tuneReplace(box, tuneEl("p", {class: "muted"}, "No agent runs yet: call ", tuneEl("code", {}, "/v1/chat/completions"),
      " with the model ", tuneEl("code", {}, "agent:NAME"), ", or ", tuneEl("code", {}, "genfoundry agent run NAME"), "."));
    return;
  }
  tuneReplace(box, tuneTable([
    {label: "run", cell: (r) => tuneEl("code", {}, r.id)},
    {label: "agent", cell: (r) => r.agent},
    {label: "status", cell: (r) => agentsPill(r.status)},
    {label: "answer or error", cell: (r) => r.error ? tuneEl("span", {class: "error"}, agentsCut(agentsJson(r.error), 140)) :
      agentsShort(r.answer || "", 140)},
    {label: "steps", num: true, cell: (r) => (Array.isArray(r.steps) ? r.steps.length : r.steps ?? "")},
    {label: "tokens", num: true, cell: (r) => fmt.int((r.prompt_tokens || 0) + (r.completion_tokens || 0))},
    {label: "cost", num: true, cell: (r) => fmt.usd(r.cost_usd)},
    {label: "seconds", num: true, cell: (r) => (r.seconds == null ? "–" : Number(r.seconds).toFixed(1))},
    {label: "created", cell: (r) => agentsTime(r.created_at)},
  ], runs, {testid: "agents-runs", rowAttrs: (r) => ({
    class: `click${r.id === agents.selected ? " selected" : ""}`, "data-run": r.id, "data-status": r.status,
    on: {click: () => agentsSelect(r.id)}})}));
  if (agents.selected && runs.some((r) => r.id === agents.selected)) {
    const open = document.querySelector("#agents-run[data-status]");
    const row = runs.find((r) => r.id === agents.selected);
    if (open && open.dataset.status !== row.status) agentsShowRun(view);  // it moved on since it was opened
  }
}

function agentsSelect(runId) {
  agents.selected = runId;
  history.replaceState(null, "", `#/agents/${encodeURIComponent(runId)}`);  // a link to it, without a re-render
  document.querySelectorAll("#agents-runs tr[data-run]").forEach((tr) => tr.classList.toggle("selected", tr.dataset.run === runId));
  agentsShowRun(agents.view);
}

async function agentsShowRun(view) {
  const runId = agents.selected;
  const box = document.getElementById("agents-run");
  if (!runId || !box) return;
  box.hidden = false;
  let run;
  try {
    run = await api(`/v1/agents/runs/${encodeURIComponent(runId)}`);
  } catch (error) {
    if (agentsCurrent(view) && agents.selected === runId) { delete box.dataset.status; agentsError(box, error); }
    return;
  }
  if (!agentsCurrent(view) || agents.selected !== runId) return;
  box.dataset.status = run.status;
  const kpi = (name, value) => tuneEl("div", {class: "kpi"}, name, tuneEl("b", {}, value));
  const actions = run.actions || [];
  tuneReplace(box,
    tuneEl("div", {class: "row"}, tuneEl("h2", {}, "Run ", tuneEl("code", {}, run.id)),
      tuneEl("span", {"data-testid": "run-status"}, agentsPill(run.status)), tuneEl("span", {class: "muted"}, agentsTime(run.created_at))),
    tuneEl("div", {class: "kpis"}, kpi("agent", run.agent), kpi("steps", String((run.steps || []).length)),
      kpi("tokens", `${fmt.int(run.prompt_tokens)} + ${fmt.int(run.completion_tokens)}`), kpi("cost", fmt.usd(run.cost_usd)),
      kpi("seconds", run.seconds == null ? "–" : Number(run.seconds).toFixed(2))),
    run.error ? tuneEl("p", {class: "error", "data-testid": "run-error"}, agentsJson(run.error)) : null,
    run.answer ? [tuneEl("h3", {}, "Answer"), tuneEl("div", {class: "msg assistant", "data-testid": "run-answer"}, run.answer)] : null,
    tuneEl("h3", {}, "Conversation"), agentsConversation(run.input || []),
    tuneEl("h3", {}, "Steps"), agentsSteps(run.steps || [], "run-steps"),
    tuneEl("h3", {}, "Side-effect actions"),
    actions.length ? tuneTable([
      {label: "action", cell: (a) => tuneEl("code", {}, a.id)}, {label: "tool", cell: (a) => tuneEl("code", {}, a.tool)},
      {label: "status", cell: (a) => agentsPill(a.status)}, {label: "arguments", cell: (a) => agentsShort(a.arguments, 120)},
      {label: "proposed", cell: (a) => agentsShort(((a.proposed || {}).arguments) ?? "", 120)},
      {label: "reason", cell: (a) => a.reason || ""}, {label: "decided by", cell: (a) => a.decided_by || ""},
      {label: "note", cell: (a) => a.note || ""}, {label: "result", cell: (a) => agentsShort(a.result, 160)},
    ], actions, {testid: "run-actions", rowAttrs: (a) => ({"data-action-row": a.id})}) :
      tuneEl("p", {class: "muted", "data-testid": "run-actions"}, "none"));
}

// -- the agents -------------------------------------------------------------------------------------------------
function agentsApprovalRule(rule) {  // "always", "never", or {always, above: {argument: limit}}
  if (typeof rule !== "object" || rule === null) return String(rule);
  if (rule.always) return "always";
  const above = Object.entries(rule.above || {}).map(([name, limit]) => `${name} > ${limit}`);
  return above.length ? `when ${above.join(" or ")}` : "never";
}

async function agentsLoadAgents(view) {
  const box = document.getElementById("agents-list");
  let list;
  try {
    list = (await api("/v1/agents")).data;
  } catch (error) {
    if (agentsCurrent(view)) agentsError(box, error);
    return;
  }
  if (!agentsCurrent(view)) return;
  if (!list.length) {
    tuneReplace(box, tuneEl("p", {class: "muted"}, "No agents."));
    return;
  }
  const tool = (t) => tuneEl("div", {class: "agent-tool"}, tuneEl("code", {}, t.name),
    t.risk ? [" ", tuneEl("span", {class: `pill ${t.risk === "write" ? "warning" : ""}`}, t.risk)] : null,
    t.permission ? tuneEl("span", {class: "muted"}, ` needs ${t.permission}`) : null,
    t.approval != null ? tuneEl("span", {class: "muted"}, ` · approval ${agentsApprovalRule(t.approval)}`) : null);
  const limits = (l) => Object.entries(l || {}).filter(([, v]) => v != null).map(([k, v]) => `${k} ${v}`).join(", ");
  tuneReplace(box, tuneTable([
    {label: "agent", cell: (a) => tuneEl("code", {}, a.name)},
    {label: "description", cell: (a) => a.error ? tuneEl("span", {class: "error"}, agentsJson(a.error)) : a.description || ""},
    {label: "model", cell: (a) => [a.model || "", a.mode ? tuneEl("span", {class: "muted"}, ` (${a.mode})`) : null]},
    {label: "tools", cell: (a) => (a.tools || []).map(tool)},
    {label: "collections", cell: (a) => (a.collections || []).join(", ")},
    {label: "limits", cell: (a) => limits(a.limits)},
    {label: "approvers", cell: (a) => (a.approvers || []).join(", ")},
  ], list, {testid: "agents-list", rowAttrs: (a) => ({"data-agent": a.name})}));
}
