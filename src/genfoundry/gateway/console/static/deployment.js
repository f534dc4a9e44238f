// The console's Deployment page: `genfoundry doctor`'s checks as this replica sees them (database and its
// migrations, clocks, vault key, models, vector store, audit chain, replicas, reservations left by a dead
// replica), the gateway replicas sharing the database, and the backends of every model pool this replica has
// loaded, read again every few seconds while the page is
// open. Admin keys only (GET /admin/deployment). Every text from the API goes into the page as text nodes.
// Loaded after tune.js, whose DOM helpers (tuneEl, tuneTable, tuneReplace) it uses, and before app.js, whose
// helpers (api, main, showError) it uses at run time.
"use strict";

const DEPLOY_REFRESH_MS = 5000;
const DEPLOY_CLASS = {ok: "ok", warn: "warning", fail: "error"};
const deployment = {view: 0, timer: null, probed: false};

const deployCurrent = (view) => view === deployment.view && location.hash.startsWith("#/deployment");
const deployPill = (status, text) => tuneEl("span", {class: `pill ${DEPLOY_CLASS[status] || ""}`}, text || status);

async function pageDeployment() {
  clearTimeout(deployment.timer);
  const view = ++deployment.view;
  deployment.probed = false;
  tuneReplace(main(),
    tuneEl("section", {class: "card"}, tuneEl("h1", {}, "Deployment"),
      tuneEl("p", {class: "muted"}, "What ", tuneEl("code", {}, "genfoundry doctor"), " finds, as the replica " +
        "serving this page sees it. Every replica sharing the database shares keys, budgets, the call log and " +
        "the audit chain."),
      tuneEl("p", {id: "deploy-replica", class: "muted"}),
      tuneEl("div", {id: "deploy-checks"})),
    tuneEl("section", {class: "card"}, tuneEl("h2", {}, "Replicas"),
      tuneEl("p", {class: "muted"}, "Gateway processes sharing this database; each says it is alive every 10 s."),
      tuneEl("div", {id: "deploy-replicas", class: "scroll"})),
    tuneEl("section", {class: "card"}, tuneEl("h2", {}, "Model pools"),
      tuneEl("p", {class: "muted"}, "Servers of one model behind one name: each request goes to the backend with " +
        "the fewest requests in flight; a failing one is left out for a while, and a request it fails before " +
        "its first token goes to another."),
      tuneEl("div", {id: "deploy-pools", class: "scroll"})));
  await deployLoad(view);
}

async function deployLoad(view) {
  if (!deployCurrent(view)) return;
  try {
    // Model servers are probed on the first load; refreshes read the pools' own state (their health checks).
    const data = await api(`/admin/deployment?models=${deployment.probed ? "false" : "true"}`);
    if (!deployCurrent(view)) return;
    deployShow(data, !deployment.probed);
    deployment.probed = true;
  } catch (error) {
    if (deployCurrent(view)) showError(document.getElementById("deploy-checks"), error);
    return;
  }
  deployment.timer = setTimeout(() => deployLoad(view), DEPLOY_REFRESH_MS);
}

function deployShow(data, withModels) {
  document.getElementById("deploy-replica").textContent = `Replica: ${data.replica}`;
  const checks = document.getElementById("deploy-checks");
  const kept = withModels ? null : checks.querySelector("tr[data-check='models']");
  tuneReplace(checks, tuneTable([
    {label: "Check", cell: (c) => c.name},
    {label: "Status", cell: (c) => deployPill(c.status)},
    {label: "Detail", cell: (c) => c.detail},
  ], data.checks, {testid: "deploy-checks", rowAttrs: (c) => ({"data-check": c.name, "data-status": c.status})}));
  if (kept) {  // the models row from the probing load stays until the page is opened again
    const body = checks.querySelector("tbody");
    const vectors = body.querySelector("tr[data-check='vector store']");
    body.insertBefore(kept, vectors);
  }
  tuneReplace(document.getElementById("deploy-replicas"), tuneTable([
    {label: "Replica", cell: (r) => r.id + (r.id === data.replica ? " (this one)" : "")},
    {label: "State", cell: (r) => deployPill(r.alive ? "ok" : "fail", r.alive ? "alive" : "gone")},
    {label: "Version", cell: (r) => r.version},
    {label: "Listens on", cell: (r) => r.address || ""},
    {label: "Started", cell: (r) => r.started_at.replace("T", " ").slice(0, 19)},
    {label: "Seen", num: true, cell: (r) => `${r.seen_s_ago} s ago`},
  ], data.replicas || [], {testid: "deploy-replicas", rowAttrs: (r) => ({"data-replica": r.id,
    "data-alive": String(r.alive)})}));
  const pools = document.getElementById("deploy-pools");
  const rows = data.pools.flatMap((p) => p.backends.map((b) => ({model: p.model, ...b})));
  if (!rows.length) {
    tuneReplace(pools, tuneEl("p", {class: "muted"}, "No pool is loaded on this replica. Make one with ",
      tuneEl("code", {}, "genfoundry models add NAME URL --backend URL2"), "; it loads on its first request."));
    return;
  }
  tuneReplace(pools, tuneTable([
    {label: "Model", cell: (r) => r.model},
    {label: "Backend", cell: (r) => r.url},
    {label: "State", cell: (r) => (r.ejected ? deployPill("fail", `left out ${r.ejected_for_s}s (${r.ejected_by})`)
      : deployPill("ok", r.healthy === false ? "in use" : "up"))},
    {label: "In flight", num: true, cell: (r) => String(r.outstanding)},
    {label: "Served", num: true, cell: (r) => String(r.served)},
    {label: "Failed", num: true, cell: (r) => String(r.failed)},
    {label: "Last error", cell: (r) => r.last_error || ""},
  ], rows, {testid: "deploy-pools", rowAttrs: (r) => ({"data-backend": r.url, "data-ejected": String(r.ejected)})}));
}
