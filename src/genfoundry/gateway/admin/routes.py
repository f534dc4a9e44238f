"""Admin routes: keys (admin only) and the call log (admin and developer)."""

from __future__ import annotations

import asyncio

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from genfoundry.gateway.auth import require_role
from genfoundry.gateway.keys import (
    MAX_RPM_LIMIT,
    MAX_TOKEN_BUDGET,
    ApiKey,
    create_key,
    list_keys,
    revoke_key,
)
from genfoundry.gateway.access import redact_calls
from genfoundry.observe.calls import list_calls

router = APIRouter(prefix="/admin", tags=["admin"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "developer", "app"] = "developer"
    rpm_limit: int | None = Field(None, ge=1, le=MAX_RPM_LIMIT)
    token_budget: int | None = Field(None, ge=1, le=MAX_TOKEN_BUDGET)
    budget_period: Literal["day", "month", "total"] = "month"
    allowed_models: list[str] | None = None
    permissions: list[str] | None = Field(None, description="What agents may do for this key with side-effect "
                                                            "tools that name a permission (e.g. refunds).")


def _key_json(key: ApiKey) -> dict:
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "role": key.role,
            "rpm_limit": key.rpm_limit, "token_budget": key.token_budget,
            "budget_period": key.budget_period, "allowed_models": key.allowed_models,
            "permissions": list(key.permissions), "created_at": key.created_at.isoformat(),
            "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None}


@router.get("/keys")
async def get_keys(request: Request, _: ApiKey = Depends(require_role("admin"))):
    return {"data": [_key_json(k) for k in list_keys(request.app.state.runtime.store)]}


@router.post("/keys", status_code=201)
async def post_key(body: KeyCreate, request: Request, admin: ApiKey = Depends(require_role("admin"))):
    secret, key = create_key(request.app.state.runtime.store, **body.model_dump(), actor=f"key:{admin.id}")
    return {**_key_json(key), "key": secret}


@router.delete("/keys/{key_id}")
async def delete_key(key_id: str, request: Request, admin: ApiKey = Depends(require_role("admin"))):
    return _key_json(revoke_key(request.app.state.runtime.store, key_id, actor=f"key:{admin.id}"))


@router.get("/calls")
async def get_calls(request: Request, key: ApiKey = Depends(require_role("admin", "developer")),
                    model: str | None = None, status: str | None = None,
                    since: dt.datetime | None = None, limit: int = Query(50, ge=1, le=1000)):
    rt = request.app.state.runtime
    rows = await asyncio.to_thread(list_calls, rt.store, model=model, status=status,
                                   since=since.replace(tzinfo=None) if since else None, limit=limit)
    rows = redact_calls(rt, key, rows)
    return {"data": [{k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in r.items()}
                     for r in rows]}


@router.get("/deployment")
async def get_deployment(request: Request, models: bool = Query(True, description="Probe every model's server."),
                         _: ApiKey = Depends(require_role("admin"))):
    """`genfoundry doctor`'s checks as this replica sees them, and the live state of its model pools."""
    from genfoundry.gateway.doctor import run_checks

    rt = request.app.state.runtime
    checks = await asyncio.to_thread(run_checks, rt.settings, models=models, store=rt.store)
    from genfoundry.gateway.replicas import list_replicas

    pools = [{"model": pool.spec.name, "backends": pool.status()} for pool in rt.hub.pools()]
    replicas = await asyncio.to_thread(list_replicas, rt.store)
    return {"replica": rt.quotas.replica, "checks": [c.to_dict() for c in checks], "pools": pools,
            "replicas": replicas}
