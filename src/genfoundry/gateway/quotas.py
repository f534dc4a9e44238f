"""Per-key request rates and token budgets.

Rates are counted in a sliding 60-second window and budgets summed from the call
log plus the reservations of calls in flight, all in the store, so every gateway
replica sharing one database enforces the same rate and the same budget.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

from genfoundry.core.errors import BudgetExceeded, RateLimited
from genfoundry.core.store import Store, utcnow
from genfoundry.gateway.keys import ApiKey
from genfoundry.observe.calls import tokens_used_since
from genfoundry.observe.usage import cost_since

__all__ = ["BudgetState", "Quotas", "period_start"]

WINDOW_S = 60.0


def period_start(period: str, now: dt.datetime) -> dt.datetime:
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return dt.datetime(1970, 1, 1)


@dataclass
class BudgetState:
    key: ApiKey
    spent_usd: float
    budget_usd: float
    period_start: dt.datetime
    warn: bool
    exceeded: bool = False

    @property
    def ratio(self) -> float:
        return self.spent_usd / self.budget_usd

    def header(self) -> str:
        return (f"key '{self.key.name}' has spent {self.ratio:.0%} of its ${self.budget_usd:g} budget "
                f"(${self.spent_usd:.4f} since {self.period_start:%Y-%m-%d})")


class Quotas:
    """Rates, and budgets with reservations, kept in the database.

    A budget is checked at authentication and again before every model call, and each call
    reserves what it may spend (its prompt and ``max_tokens``, at the model's price) until its
    record is in the call log: concurrent requests, a summary that makes many model calls, and
    a reranker's calls cannot together spend past the budget. Reservations (``quota_holds``) and
    the last minute's requests of rate-limited keys (``rate_hits``) live in the store, and each
    check-and-count runs under a database lock for its key, so gateway replicas sharing one
    database enforce one budget and one rate: no replica can overspend because another does not
    know. Keys without limits or budgets never touch these tables.
    """

    def __init__(self, store: Store, *, default_rpm: int | None = None, clock=time.time,
                 replica: str | None = None):
        self.store = store
        self.default_rpm = default_rpm
        self._clock = clock  # wall time: every replica must read the same clock
        self.replica = replica or f"{socket.gethostname()}:{os.getpid()}"
        self._mine: set[str] = set()  # calls this replica holds budget for: only these touch quota_holds
        self._lock = threading.Lock()

    @staticmethod
    def budgeted(key: ApiKey | None) -> bool:
        """Whether calls with this key reserve from a budget (and so write to the store)."""
        return key is not None and bool(key.token_budget or key.cost_budget_usd)

    def check_rate(self, key: ApiKey) -> None:
        limit = key.rpm_limit or self.default_rpm
        if not limit:
            return
        hits = self.store.tables.rate_hits
        with self.store.begin() as conn:
            self.store.lock(conn, f"rate:{key.id}")  # check and count in one step, across replicas
            now = self._clock()
            conn.execute(hits.delete().where(hits.c.key_id == key.id, hits.c.at <= now - WINDOW_S))
            count, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(hits.c.at))
                                         .where(hits.c.key_id == key.id)).one()
            if count >= limit:
                raise RateLimited(f"key '{key.name}' is limited to {limit} requests per minute",
                                  retry_after=max(1.0, WINDOW_S - (now - oldest)))
            conn.execute(hits.insert().values(key_id=key.id, at=now))

    def _reserved(self, conn, key_id: str, start: dt.datetime) -> tuple[int, float]:
        holds = self.store.tables.quota_holds
        tokens, usd = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(holds.c.tokens), 0),
                                             sa.func.coalesce(sa.func.sum(holds.c.usd), 0.0))
                                   .where(holds.c.key_id == key_id, holds.c.created_at >= start)).one()
        return int(tokens), float(usd)

    def reserve(self, key: ApiKey | None, call_id: str, *, tokens: int, usd: float) -> None:
        """Hold ``tokens`` and ``usd`` of the key's budgets for a model call, or refuse it (429)."""
        if not self.budgeted(key):
            return
        now = utcnow()
        start = period_start(key.budget_period, now)
        holds = self.store.tables.quota_holds
        with self.store.begin() as conn:
            self.store.lock(conn, f"budget:{key.id}")  # one reservation at a time per key, on every replica
            used = tokens_used_since(self.store, key.id, start) if key.token_budget else 0
            spent = cost_since(self.store, key.id, start) if key.cost_budget_usd else 0.0
            conn.execute(holds.delete().where(holds.c.call_id == call_id))  # a fallback replaces its model's hold
            held_tokens, held_usd = self._reserved(conn, key.id, start)
            # As at authentication, a call may start while some budget is left; what calls in flight may
            # still spend counts as spent, so concurrent calls cannot all start on the same remainder.
            if key.token_budget and used + held_tokens >= key.token_budget:
                raise BudgetExceeded(
                    f"key '{key.name}' has no budget left of its {key.token_budget} tokens per {key.budget_period} "
                    f"({used} used, {held_tokens} held by calls in flight); wait for them, or ask an admin to "
                    "raise it", retry_after=60)
            if key.cost_budget_usd and spent + held_usd >= key.cost_budget_usd:
                raise BudgetExceeded(
                    f"key '{key.name}' has no budget left of its ${key.cost_budget_usd:g} per {key.budget_period} "
                    f"(${spent:.4f} spent, ${held_usd:.4f} held by calls in flight); wait for them, or ask an "
                    "admin to raise it (`genfoundry keys budget`)", retry_after=60)
            conn.execute(holds.insert().values(call_id=call_id, key_id=key.id, tokens=tokens, usd=usd,
                                               replica=self.replica, created_at=now))
        with self._lock:
            self._mine.add(call_id)

    def settle(self, call_id: str, *, tokens: int, usd: float) -> None:
        """The call is over: hold what it really spent until its record is in the log."""
        with self._lock:
            if call_id not in self._mine:
                return
        holds = self.store.tables.quota_holds
        with self.store.begin() as conn:
            conn.execute(holds.update().where(holds.c.call_id == call_id).values(tokens=tokens, usd=usd))

    def release(self, call_ids) -> None:
        """The calls' records are written (or they spent nothing): stop holding their amounts."""
        with self._lock:
            call_ids = [c for c in call_ids if c in self._mine]
            self._mine.difference_update(call_ids)
        if not call_ids:
            return
        holds = self.store.tables.quota_holds
        with self.store.begin() as conn:
            conn.execute(holds.delete().where(holds.c.call_id.in_(call_ids)))

    def check_budget(self, key: ApiKey, *, warn_fraction: float = 0.8) -> BudgetState | None:
        """Refuse a key over its token or dollar budget; return where its dollar budget stands."""
        if not key.token_budget and not key.cost_budget_usd:
            return None
        start = period_start(key.budget_period, utcnow())
        with self.store.begin() as conn:
            held_tokens, held_usd = self._reserved(conn, key.id, start)
        if key.token_budget:
            used = tokens_used_since(self.store, key.id, start) + held_tokens
            if used >= key.token_budget:
                raise BudgetExceeded(
                    f"key '{key.name}' has used its budget of {key.token_budget} tokens per {key.budget_period}; "
                    "an admin can raise it", retry_after=3600)
        if not key.cost_budget_usd:
            return None
        spent = cost_since(self.store, key.id, start) + held_usd
        state = BudgetState(key=key, spent_usd=spent, budget_usd=key.cost_budget_usd, period_start=start,
                            warn=spent >= warn_fraction * key.cost_budget_usd)
        if spent >= key.cost_budget_usd:
            state.exceeded = True
            self.on_budget(state)
            raise BudgetExceeded(
                f"key '{key.name}' has spent ${spent:.4f} of its ${key.cost_budget_usd:g} budget per "
                f"{key.budget_period}; an admin can raise it (`genfoundry keys budget`)", retry_after=3600)
        if state.warn:
            self.on_budget(state)
        return state

    def on_budget(self, state: BudgetState) -> None:
        """Called when a key passes its warning level or its budget; the gateway records an alert."""
