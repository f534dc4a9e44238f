"""API keys: created once and shown once, stored only as SHA-256 hashes.

Roles: ``admin`` (everything, including key management), ``developer``
(every model, the call log), ``app`` (inference only, optionally limited to
some models).

Example::

    secret, key = create_key(store, name="support-bot", role="app", rpm_limit=60)
    verify_key(store, secret).role  # 'app'
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from genfoundry.core.errors import AuthenticationError, InvalidRequest, NotFound
from genfoundry.core.audit import record
from genfoundry.core.store import Store, utcnow

__all__ = [
    "ApiKey",
    "MAX_RPM_LIMIT",
    "MAX_TOKEN_BUDGET",
    "ROLES",
    "create_key",
    "ensure_admin_key",
    "list_keys",
    "revoke_key",
    "set_budget",
    "verify_key",
]

Role = Literal["admin", "developer", "app"]
ROLES: tuple[str, ...] = ("admin", "developer", "app")
PERIODS: tuple[str, ...] = ("day", "month", "total")
KEY_PREFIX = "gf-"
# The largest numbers the columns hold on every backend (PostgreSQL INTEGER and BIGINT).
MAX_RPM_LIMIT = 2**31 - 1
MAX_TOKEN_BUDGET = 2**63 - 1


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    role: str
    rpm_limit: int | None
    token_budget: int | None
    budget_period: str
    allowed_models: list[str] | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    cost_budget_usd: float | None = None  # dollars per budget_period
    permissions: tuple[str, ...] = ()  # what agents may do with side-effect tools for this key ("refunds")

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def may_use(self, model: str) -> bool:
        return self.role != "app" or not self.allowed_models or model in self.allowed_models


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _row_to_key(row) -> ApiKey:
    m = row._mapping
    return ApiKey(id=m["id"], name=m["name"], prefix=m["prefix"], role=m["role"],
                  rpm_limit=m["rpm_limit"], token_budget=m["token_budget"],
                  budget_period=m["budget_period"], allowed_models=m["allowed_models"],
                  created_at=m["created_at"], revoked_at=m["revoked_at"], cost_budget_usd=m["cost_budget_usd"],
                  permissions=tuple(m["permissions"] or ()))


def create_key(store: Store, *, name: str, role: str = "developer", rpm_limit: int | None = None,
               token_budget: int | None = None, budget_period: str = "month",
               allowed_models: list[str] | None = None, cost_budget_usd: float | None = None,
               permissions: list[str] | None = None, actor: str = "local") -> tuple[str, ApiKey]:
    """Create a key; returns the secret (shown once) and the stored record. Audited."""
    _check_cost_budget(cost_budget_usd)
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}, not '{role}'")
    if budget_period not in PERIODS:
        raise InvalidRequest(f"budget period must be one of {', '.join(PERIODS)}")
    for value, label, most in ((rpm_limit, "rpm limit", MAX_RPM_LIMIT),
                               (token_budget, "token budget", MAX_TOKEN_BUDGET)):
        if value is not None and value <= 0:
            raise InvalidRequest(f"{label} must be positive")
        if value is not None and value > most:
            raise InvalidRequest(f"{label} must be at most {most}")
    key_id = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(24)}"
    table = store.tables.api_keys
    with store.begin() as conn:
        conn.execute(table.insert().values(
            id=key_id, name=name, key_hash=_hash(secret), prefix=secret[:12], role=role,
            rpm_limit=rpm_limit, token_budget=token_budget, budget_period=budget_period,
            allowed_models=allowed_models, cost_budget_usd=cost_budget_usd, permissions=permissions or None,
            created_at=utcnow()))
        row = conn.execute(sa.select(table).where(table.c.id == key_id)).one()
    record(store, action="key.create", actor=actor, target=key_id,
           details={"name": name, "role": role, "rpm_limit": rpm_limit, "token_budget": token_budget,
                    "allowed_models": allowed_models, "cost_budget_usd": cost_budget_usd,
                    "permissions": permissions or None})
    return secret, _row_to_key(row)


def _check_cost_budget(value: float | None) -> None:
    if value is not None and not (0 < value < 1e12):
        raise InvalidRequest("cost budget must be a positive number of dollars", param="cost_budget_usd")


def set_budget(store: Store, id_or_name: str, *, cost_budget_usd: float | None = None,
               token_budget: int | None = None, budget_period: str | None = None,
               actor: str = "local") -> ApiKey:
    """Change a key's budgets (None leaves a value as it is; 0 removes it). Audited."""
    key = _find(store, id_or_name)
    values: dict = {}
    if cost_budget_usd is not None:
        if cost_budget_usd != 0:
            _check_cost_budget(cost_budget_usd)
        values["cost_budget_usd"] = cost_budget_usd or None
    if token_budget is not None:
        if token_budget < 0 or token_budget > MAX_TOKEN_BUDGET:
            raise InvalidRequest(f"token budget must be between 0 and {MAX_TOKEN_BUDGET}")
        values["token_budget"] = token_budget or None
    if budget_period is not None:
        if budget_period not in PERIODS:
            raise InvalidRequest(f"budget period must be one of {', '.join(PERIODS)}")
        values["budget_period"] = budget_period
    if not values:
        raise InvalidRequest("say what to change: a cost budget, a token budget or a budget period")
    table = store.tables.api_keys
    with store.begin() as conn:
        conn.execute(table.update().where(table.c.id == key.id).values(**values))
        row = conn.execute(sa.select(table).where(table.c.id == key.id)).one()
    record(store, action="key.budget", actor=actor, target=key.id, details=values)
    return _row_to_key(row)


def list_keys(store: Store, *, include_revoked: bool = False) -> list[ApiKey]:
    table = store.tables.api_keys
    query = sa.select(table).order_by(table.c.created_at)
    if not include_revoked:
        query = query.where(table.c.revoked_at.is_(None))
    with store.begin() as conn:
        return [_row_to_key(r) for r in conn.execute(query)]


def _find(store: Store, id_or_name: str) -> ApiKey:
    table = store.tables.api_keys
    with store.begin() as conn:
        rows = conn.execute(sa.select(table).where(
            sa.or_(table.c.id == id_or_name, table.c.name == id_or_name),
            table.c.revoked_at.is_(None))).all()
    if not rows:
        raise NotFound(f"no active key with id or name '{id_or_name}'; run `genfoundry keys list`")
    if len(rows) > 1:
        raise InvalidRequest(f"several keys are named '{id_or_name}'; use the id")
    return _row_to_key(rows[0])


def revoke_key(store: Store, id_or_name: str, *, actor: str = "local") -> ApiKey:
    table = store.tables.api_keys
    with store.begin() as conn:
        rows = conn.execute(sa.select(table).where(
            sa.or_(table.c.id == id_or_name, table.c.name == id_or_name),
            table.c.revoked_at.is_(None))).all()
        if not rows:
            raise NotFound(f"no active key with id or name '{id_or_name}'; run `genfoundry keys list`")
        if len(rows) > 1:
            raise InvalidRequest(f"several keys are named '{id_or_name}'; revoke by id")
        conn.execute(table.update().where(table.c.id == rows[0].id).values(revoked_at=utcnow()))
        row = conn.execute(sa.select(table).where(table.c.id == rows[0].id)).one()
    record(store, action="key.revoke", actor=actor, target=row.id, details={"name": row.name})
    return _row_to_key(row)


def verify_key(store: Store, secret: str | None) -> ApiKey:
    """The active key for a presented secret, else AuthenticationError."""
    if not secret:
        raise AuthenticationError("missing API key; send 'Authorization: Bearer <key>' "
                                  "(create one with `genfoundry keys create`)")
    table = store.tables.api_keys
    with store.begin() as conn:
        row = conn.execute(sa.select(table).where(table.c.key_hash == _hash(secret))).first()
    if row is None:
        raise AuthenticationError("invalid API key")
    key = _row_to_key(row)
    if not key.active:
        raise AuthenticationError(f"API key '{key.name}' was revoked; ask an admin for a new one")
    return key


def ensure_admin_key(store: Store) -> str | None:
    """Create an admin key when no active admin key exists; return its secret, else None."""
    if any(k.role == "admin" for k in list_keys(store)):
        return None
    secret, _ = create_key(store, name="admin", role="admin")
    return secret
