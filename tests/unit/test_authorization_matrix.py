"""Who may call what: every route of the OpenAPI document × every role × {own, other's} grants.

"Own" is what the key was granted: a collection its role may read (and developers may
write), the models an app key lists. "Other's" is a collection only admins may read or
write, and a model the app key does not list. A route that is not in ``RULES`` fails
the test: a new route cannot ship without saying who may call it.

Allowed means the request got past authorization (any status but 401 and 403, and
404 where a refused key is told "no such thing" rather than "forbidden").
"""

from __future__ import annotations

import itertools
import uuid

import pytest
from fastapi.testclient import TestClient

from genfoundry.core.settings import load_settings
from genfoundry.data.datasets import Datasets
from genfoundry.gateway.app import create_app
from genfoundry.gateway.keys import create_key
from tests.conftest import fake_spec, spam_task

ROLES = ("admin", "developer", "app")
CASES = ("own", "other")
PUBLIC = "public"  # no key needed

RULES: dict[tuple[str, str], str] = {
    ("post", "/v1/chat/completions"): "model",
    ("post", "/v1/completions"): "model",
    ("post", "/v1/embeddings"): "model",
    ("get", "/v1/models"): "any",
    ("get", "/v1/models/{model}"): "model",
    ("get", "/v1/collections"): "any",
    ("post", "/v1/collections"): "writer",
    ("get", "/v1/collections/{name}"): "read",
    ("delete", "/v1/collections/{name}"): "write",
    ("get", "/v1/collections/{name}/documents"): "read",
    ("post", "/v1/collections/{name}/documents"): "write",
    ("delete", "/v1/collections/{name}/documents/{document_id}"): "write",
    ("post", "/v1/collections/{name}/search"): "read",
    ("post", "/v1/collections/{name}/answers"): "read",
    ("post", "/v1/collections/{name}/summaries"): "read",
    ("post", "/v1/forget"): "admin",
    ("get", "/v1/datasets"): "writer",
    ("post", "/v1/datasets"): "writer",
    ("get", "/v1/datasets/{name}"): "writer",
    ("delete", "/v1/datasets/{name}"): "admin",
    ("get", "/v1/datasets/{name}/rows"): "writer",
    ("get", "/v1/labeling/tasks"): "writer",
    ("get", "/v1/labeling/tasks/{task}"): "writer",
    ("get", "/v1/labeling/tasks/{task}/queue"): "writer",
    ("post", "/v1/labeling/tasks/{task}/reviews"): "writer",
    ("delete", "/v1/labeling/tasks/{task}/reviews/{review_id}"): "writer",
    ("post", "/v1/fine_tuning/jobs"): "writer",
    ("get", "/v1/fine_tuning/jobs"): "writer",
    ("get", "/v1/fine_tuning/jobs/{job_id}"): "writer",
    ("post", "/v1/fine_tuning/jobs/{job_id}/cancel"): "writer",
    ("post", "/v1/fine_tuning/jobs/{job_id}/resume"): "writer",
    ("get", "/v1/fine_tuning/jobs/{job_id}/events"): "writer",
    ("get", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): "writer",
    ("get", "/admin/tune/promotions"): "writer",
    ("post", "/admin/tune/promotions"): "admin",
    ("post", "/admin/tune/rollback"): "admin",
    ("get", "/v1/agents"): "any",
    ("post", "/v1/agents/{name}/runs"): "model",
    ("get", "/v1/agents/runs"): "any",
    ("get", "/v1/agents/runs/{run_id}"): "any",
    ("get", "/admin/agents/approvals"): "reader",
    ("post", "/admin/agents/approvals/{action_id}"): "reader",
    ("post", "/v1/extract"): "model",
    ("get", "/admin/keys"): "admin",
    ("post", "/admin/keys"): "admin",
    ("delete", "/admin/keys/{key_id}"): "admin",
    ("get", "/admin/calls"): "reader",
    ("get", "/admin/deployment"): "admin",
    ("post", "/v1/feedback"): "any",
    ("get", "/admin/feedback"): "reader",
    ("get", "/admin/traces"): "reader",
    ("get", "/admin/traces/{trace_id}"): "reader",
    ("get", "/admin/usage"): "reader",
    ("get", "/admin/usage/timeseries"): "reader",
    ("get", "/admin/alerts"): "reader",
    ("get", "/admin/guard/events"): "reader",
    ("post", "/admin/drift/requests"): "admin",
    ("get", "/admin/drift/runs"): "reader",
    ("get", "/admin/evals"): "reader",
    ("get", "/admin/evals/compare"): "reader",
    ("get", "/admin/evals/{run_id}"): "reader",
    ("get", "/health/live"): PUBLIC,
    ("get", "/health/ready"): PUBLIC,
    ("get", "/health"): PUBLIC,
    ("get", "/metrics"): PUBLIC,
}


def expected(rule: str, role: str | None, case: str) -> bool:
    if rule == PUBLIC:
        return True
    if role is None:
        return False
    return {
        "any": True,
        "admin": role == "admin",
        "reader": role in ("admin", "developer"),
        "writer": role in ("admin", "developer"),
        "model": role != "app" or case == "own",
        "read": role == "admin" or case == "own",
        "write": role == "admin" or (role == "developer" and case == "own"),
    }[rule]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    app = create_app(load_settings(home=tmp_path_factory.mktemp("matrix"), environ={}), builtins=False)
    with TestClient(app) as client:
        rt = app.state.runtime
        rt.hub.add(fake_spec("own-model", aliases=["default"], options={"replies": ["Five days [1]."] * 500}))
        rt.hub.add(fake_spec("other-model"))
        rt.hub.add(fake_spec("own-embed", aliases=["default-embedding"], capabilities=["embedding"]))
        rt.hub.add(fake_spec("other-embed", capabilities=["embedding"]))
        admin, _ = create_key(rt.store, name="admin", role="admin")
        keys = {"admin": admin, "developer": create_key(rt.store, name="dev", role="developer")[0],
                "app": create_key(rt.store, name="app", role="app",
                                  allowed_models=["own-model", "own-embed", "rag:open", "agent:open"])[0]}
        world = {"client": client, "rt": rt, "keys": keys, "admin": {"Authorization": f"Bearer {admin}"}}
        for name, case in (("open", "own"), ("closed", "other")):
            world[f"doc:{case}"] = _collection(world, name, case)
            _dataset(world, name)
        world["labeling"] = spam_task(rt.settings, rt.store, task="task", rows=40)
        world["rows"] = iter([r["_id"] for r in world["labeling"].datasets.rows("comments")])  # one per review
        yield world


def _dataset(world, name: str) -> None:
    Datasets(world["rt"].settings, world["rt"].store).add_version(name, [{"text": "hello"}], lineage={"source": "test"})


def _collection(world, name: str, case: str) -> str:
    """Make a collection (open to every role, or admins only) with one document; its document id."""
    client, admin = world["client"], world["admin"]
    access = {"read": ["admin", "developer", "app"], "write": ["admin", "developer"]} if case == "own" \
        else {"read": ["admin"], "write": ["admin"]}
    assert client.post("/v1/collections", headers=admin, json={"name": name, "access": access}).status_code == 201
    report = client.post(f"/v1/collections/{name}/documents", headers=admin,
                         files=[("files", ("refunds.md", b"# Refunds\nRefunds take five days."))]).json()
    return report["added"][0]["document_id"] if isinstance(report["added"][0], dict) else \
        client.get(f"/v1/collections/{name}/documents", headers=admin).json()["data"][0]["id"]


def _request(world, method: str, path: str, case: str) -> tuple[str, dict]:
    """The URL and keyword arguments of a request to ``path`` in ``case``."""
    name = "open" if case == "own" else "closed"
    model = "own-model" if case == "own" else "other-model"
    kwargs: dict = {}
    if path in ("/v1/collections/{name}", "/v1/collections/{name}/documents/{document_id}") and method == "delete":
        name = f"tmp-{case}-{uuid.uuid4().hex[:8]}"  # destructive: a collection of its own
        document = _collection(world, name, case)
        path = path.replace("{document_id}", document)
    elif path == "/v1/datasets/{name}" and method == "delete":
        name = f"tmp-{case}-{uuid.uuid4().hex[:8]}"
        _dataset(world, name)
    if "{review_id}" in path:  # a review of its own to undo
        review = world["labeling"].review("task", next(world["rows"]), "ham", reviewer="matrix")
        path = path.replace("{review_id}", review["id"])
    url = (path.replace("{name}", name).replace("{model}", model).replace("{document_id}", world[f"doc:{case}"])
           .replace("{trace_id}", "0" * 32).replace("{run_id}", "no-such-run").replace("{task}", "task")
           .replace("{job_id}", "ftjob-none").replace("{action_id}", "run_none:1"))
    if "{key_id}" in url:
        url = url.replace("{key_id}", create_key(world["rt"].store, name=f"doomed-{uuid.uuid4().hex[:6]}")[1].id)
    bodies = {
        "/v1/chat/completions": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
        "/v1/completions": {"model": model, "prompt": "hi"},
        "/v1/embeddings": {"model": "own-embed" if case == "own" else "other-embed", "input": "hi"},
        "/v1/collections": {"name": f"new-{uuid.uuid4().hex[:8]}"},
        f"/v1/collections/{name}/search": {"query": "refunds"},
        f"/v1/collections/{name}/answers": {"question": "How long do refunds take?", "cache": False},
        f"/v1/collections/{name}/summaries": {},
        "/v1/forget": {"match": "nothing-holds-this-text"},
        "/admin/keys": {"name": f"new-{uuid.uuid4().hex[:6]}"},
        "/v1/feedback": {"response_id": "chatcmpl-none", "rating": 4},
        "/admin/drift/requests": {},
        "/v1/datasets": {"name": f"new-{uuid.uuid4().hex[:8]}", "rows": [{"text": "hi"}]},
        "/v1/fine_tuning/jobs": {"model": "own-model", "training_file": "open"},
        "/admin/tune/promotions": {"job_id": "ftjob-none"},
        "/admin/tune/rollback": {"model": "own-model"},
        f"/v1/agents/{name}/runs": {"input": "Where is my order?"},
        "/admin/agents/approvals/run_none:1": {"decision": "approve"},
        "/v1/extract": {"model": model, "text": "Order A1 costs 5 EUR.", "schema": {"type": "object"}},
    }
    if url == "/v1/labeling/tasks/task/reviews":
        bodies[url] = {"row_id": next(world["rows"]), "label": "spam"}  # a row nobody reviewed yet
    if method == "post" and url.endswith("/documents"):
        kwargs["files"] = [("files", ("new.md", f"# New\nText {uuid.uuid4().hex}.".encode()))]
    elif method == "post":
        kwargs["json"] = bodies.get(url, {})
    if url == "/admin/evals/compare":
        url += "?a=x&b=y"
    return url, kwargs


CELLS = [(m, p, role, case) for (m, p) in RULES for role, case in
         itertools.chain(itertools.product(ROLES, CASES), [(None, "own")])]


def test_every_route_has_a_rule(world):
    routes = {(m, p) for p, ops in world["client"].app.openapi()["paths"].items() for m in ops}
    assert routes - set(RULES) == set(), "routes without an authorization rule: add them to RULES"
    assert set(RULES) - routes == set(), "rules for routes that are gone"


@pytest.mark.parametrize("method,path,role,case", CELLS,
                         ids=[f"{m} {p} {r or 'no key'} {c}" for m, p, r, c in CELLS])
def test_route_role_grant(world, method, path, role, case):
    client = world["client"]
    url, kwargs = _request(world, method, path, case)
    headers = {"Authorization": f"Bearer {world['keys'][role]}"} if role else {}
    response = client.request(method.upper(), url, headers=headers, **kwargs)
    refused = response.status_code in (401, 403) or (path == "/v1/models/{model}" and response.status_code == 404)
    assert (not refused) == expected(RULES[(method, path)], role, case), \
        f"{method.upper()} {url} as {role or 'no key'} ({case}): {response.status_code} {response.text[:200]}"
