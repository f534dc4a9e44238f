"""Who is calling: the API key from ``Authorization: Bearer``, checked against the store."""

from __future__ import annotations

from fastapi import Request

from genfoundry.core.errors import PermissionDenied
from genfoundry.gateway.keys import ApiKey, verify_key

__all__ = ["authenticate", "require_role"]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authenticate(request: Request) -> ApiKey:
    """FastAPI dependency: the caller's active key, then its rate and budget checks."""
    rt = request.app.state.runtime
    key = verify_key(rt.store, _bearer(request))
    rt.quotas.check_rate(key)
    rt.quotas.check_budget(key)
    request.state.key = key
    return key


def require_role(*roles: str):
    def dependency(request: Request) -> ApiKey:
        key = authenticate(request)
        if key.role not in roles:
            raise PermissionDenied(f"this needs a key with role {' or '.join(roles)}; '{key.name}' is {key.role}")
        return key
    return dependency
