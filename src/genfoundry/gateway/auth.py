"""Who is calling: the API key from ``Authorization: Bearer``, checked against the store."""

from __future__ import annotations

from fastapi import Request

from genfoundry.core.errors import PermissionDenied
from genfoundry.core.tracing import span
from genfoundry.gateway.keys import ApiKey, verify_key

__all__ = ["authenticate", "require_role"]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authenticate(request: Request) -> ApiKey:
    """FastAPI dependency: the caller's active key, then its rate and budget checks.

    FastAPI runs it in a worker thread (it queries the store); the request's one check of the model
    hub rides along, so the route's model lookups then run from memory without a thread hop of their own.
    """
    rt = request.app.state.runtime
    with span("gateway.auth") as item:
        key = verify_key(rt.store, _bearer(request))
        rt.hub.prefetch()
        item.set_attributes({"genfoundry.key.id": key.id, "genfoundry.key.name": key.name,
                             "genfoundry.key.role": key.role})
        rt.quotas.check_rate(key)
        budget = rt.quotas.check_budget(key, warn_fraction=rt.settings.budget_warn_fraction)
        if budget is not None:
            rt.metrics.budget_used.labels(key.id).set(budget.ratio)
            if budget.warn:
                request.state.budget_warning = budget.header()
    request.state.key = key
    request.state.key_id = key.id
    return key


def require_role(*roles: str):
    def dependency(request: Request) -> ApiKey:
        key = authenticate(request)
        if key.role not in roles:
            raise PermissionDenied(f"this needs a key with role {' or '.join(roles)}; '{key.name}' is {key.role}")
        return key
    return dependency
