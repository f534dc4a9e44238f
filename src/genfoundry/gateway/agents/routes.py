"""/v1/agents (list, run, follow runs), /admin/agents/approvals (decide pending actions), /v1/extract.

Who may: any key may list and run the agents it may use (an app key needs ``agent:NAME`` in its models)
and read its own runs; developers and admins read every run. Pending actions hold customers'
conversations: developers and admins list them, and only the agent's approver roles (``approvers``,
admin by default) decide them.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Query, Request

from genfoundry.apps.agent_run import decide, get_action, get_run, list_actions, list_runs
from genfoundry.apps.agents import AGENT_PREFIX, find_agent, list_agents
from genfoundry.apps.extract import extract
from genfoundry.core.errors import ConfigError, InvalidRequest, NotFound
from genfoundry.core.types import Message
from genfoundry.gateway.agents.protocol import Decision, ExtractRequest, RunRequest
from genfoundry.gateway.agents.serving import check_agent_access, resume_agent, run_agent, run_json
from genfoundry.gateway.auth import authenticate, require_role
from genfoundry.gateway.generation import CallContext, check_model_access, guard_hints
from genfoundry.gateway.keys import ApiKey
from genfoundry.gateway.knowledge.serving import gateway_generate

router = APIRouter(tags=["agents"])
staff = require_role("admin", "developer")


def _agent_json(name: str, spec) -> dict:
    if isinstance(spec, ConfigError):
        return {"name": name, "error": str(spec)}
    entries = [{"name": t.name or (t.python or "").rpartition(":")[2], "kind": "python" if t.python else "http",
                "risk": t.risk, "permission": t.permission, "approval": _rule(t.approval)} for t in spec.tools]
    entries += [{"name": f"mcp:{m.name}", "kind": "mcp", "risk": None, "permission": m.permission,
                 "approval": _rule(m.approval)} for m in spec.mcp]
    return {"name": spec.name, "model_name": f"{AGENT_PREFIX}{spec.name}", "description": spec.description,
            "model": spec.model, "mode": spec.mode, "tools": entries, "collections": spec.collections,
            "limits": spec.limits.model_dump(), "approvers": spec.approvers, "source": spec.source,
            "error": None}


def _rule(approval):
    """An approval rule as JSON: always, never, unset, or its thresholds."""
    return approval if isinstance(approval, str) or approval is None else approval.model_dump()


@router.get("/v1/agents", summary="The agents this key may use")
async def get_agents(request: Request, key: ApiKey = Depends(authenticate)):
    found = list_agents(request.app.state.runtime.settings)
    return {"data": [_agent_json(name, spec) for name, spec in sorted(found.items())
                     if key.may_use(f"{AGENT_PREFIX}{name}")]}


@router.post("/v1/agents/{name}/runs", summary="Run an agent on a message")
async def create_run(name: str, body: RunRequest, request: Request, key: ApiKey = Depends(authenticate)):
    rt = request.app.state.runtime
    check_agent_access(key, name)
    spec = find_agent(rt.settings, name)
    if bool(body.input) == bool(body.messages):
        raise InvalidRequest("send input (text) or messages, not both", param="input")
    messages = [Message(role="user", content=body.input)] if body.input else \
        [Message(role=m.get("role", "user"), content=str(m.get("content") or "")) for m in body.messages]
    ctx = CallContext(id=f"agentrun-{uuid.uuid4().hex}", endpoint="agent", key=key,
                      requested_model=f"{AGENT_PREFIX}{name}", stream=False,
                      **guard_hints(request.headers, None))
    outcome = await run_agent(rt, ctx, spec, messages)
    return {**run_json(outcome), "answer": outcome.answer, "reply": outcome.reply(),
            "usage": outcome.to_dict()["usage"]}


def _visible(key: ApiKey, run: dict) -> bool:
    return key.role in ("admin", "developer") or (run.get("caller") or {}).get("id") == key.id


def _run_out(run: dict) -> dict:
    return {**run, "created_at": run["created_at"].isoformat(), "updated_at": run["updated_at"].isoformat()}


@router.get("/v1/agents/runs", summary="Recent agent runs")
async def get_runs(request: Request, agent: str | None = None, status: str | None = None,
                   limit: int = Query(50, ge=1, le=500), key: ApiKey = Depends(authenticate)):
    runs = list_runs(request.app.state.runtime.store, agent=agent, status=status, limit=limit)
    return {"data": [_run_out(r) for r in runs if _visible(key, r)]}


@router.get("/v1/agents/runs/{run_id}", summary="One agent run with its actions")
async def get_one_run(run_id: str, request: Request, key: ApiKey = Depends(authenticate)):
    store = request.app.state.runtime.store
    run = get_run(store, run_id)
    if not _visible(key, run):
        raise NotFound(f"there is no agent run '{run_id}'")
    return {**_run_out(run), "actions": [_action_out(a) for a in list_actions(store, status=None, run_id=run_id)]}


def _action_out(action: dict, run: dict | None = None) -> dict:
    data = {**action, "created_at": action["created_at"].isoformat(),
            "decided_at": action["decided_at"].isoformat() if action["decided_at"] else None}
    if run is not None:
        data["run"] = {k: run[k] for k in ("id", "agent", "status", "input", "steps", "caller")}
    return data


@router.get("/admin/agents/approvals", summary="Agent actions waiting for (or past) a decision")
async def get_approvals(request: Request, status: str = "pending", limit: int = Query(100, ge=1, le=500),
                        _: ApiKey = Depends(staff)):
    store = request.app.state.runtime.store
    actions = list_actions(store, status=None if status == "all" else status, limit=limit)
    return {"data": [_action_out(a, get_run(store, a["run_id"])) for a in actions]}


@router.post("/admin/agents/approvals/{action_id}", summary="Approve, edit or reject a pending action")
async def post_decision(action_id: str, body: Decision, request: Request, key: ApiKey = Depends(staff)):
    rt = request.app.state.runtime
    if body.arguments is not None and body.decision != "approve":
        raise InvalidRequest("edited arguments go with an approval", param="arguments")
    run = get_run(rt.store, get_action(rt.store, action_id)["run_id"])
    spec = find_agent(rt.settings, run["agent"])
    action = decide(rt.store, action_id, spec, approve=body.decision == "approve", actor=f"key:{key.id}",
                    role=key.role, arguments=body.arguments, note=body.note, home=rt.settings.home)
    tasks = getattr(request.app.state, "agent_tasks", None)
    if tasks is None:
        tasks = request.app.state.agent_tasks = set()
    resume_agent(rt, run["id"], tasks)
    return {"action": _action_out(action), "run": {"id": run["id"], "status": "resuming"}}


@router.post("/v1/extract", summary="Extract JSON that follows a schema from text")
async def post_extract(body: ExtractRequest, request: Request, key: ApiKey = Depends(authenticate)):
    rt = request.app.state.runtime
    check_model_access(key, rt.hub.resolve(body.model), body.model)
    ctx = CallContext(id=f"extract-{uuid.uuid4().hex}", endpoint="extract", key=key, requested_model=body.model,
                      stream=False, **guard_hints(request.headers, None))
    result = await extract(gateway_generate(rt, ctx, rag_model=False), model=body.model, text=body.text,
                           schema=body.schema_, instructions=body.instructions)
    return {"id": ctx.id, "object": "extraction", **result.to_dict()}
