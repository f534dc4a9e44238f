"""Per-key request rates and token budgets.

Rates are counted in this process (a sliding 60-second window); budgets are
summed from the call log in the store, so every gateway replica sharing one
database enforces the same budget.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from genfoundry.core.errors import BudgetExceeded, RateLimited
from genfoundry.core.store import Store
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
    def __init__(self, store: Store, *, default_rpm: int | None = None, clock=time.monotonic):
        self.store = store
        self.default_rpm = default_rpm
        self._clock = clock
        self._hits: dict[str, deque[float]] = defaultdict(deque)

    def check_rate(self, key: ApiKey) -> None:
        limit = key.rpm_limit or self.default_rpm
        if not limit:
            return
        now = self._clock()
        hits = self._hits[key.id]
        while hits and now - hits[0] >= WINDOW_S:
            hits.popleft()
        if len(hits) >= limit:
            retry = WINDOW_S - (now - hits[0])
            raise RateLimited(f"key '{key.name}' is limited to {limit} requests per minute",
                              retry_after=max(1.0, retry))
        hits.append(now)

    def check_budget(self, key: ApiKey, *, warn_fraction: float = 0.8) -> BudgetState | None:
        """Refuse a key over its token or dollar budget; return where its dollar budget stands."""
        if not key.token_budget and not key.cost_budget_usd:
            return None
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        start = period_start(key.budget_period, now)
        if key.token_budget:
            used = tokens_used_since(self.store, key.id, start)
            if used >= key.token_budget:
                raise BudgetExceeded(
                    f"key '{key.name}' has used its budget of {key.token_budget} tokens per {key.budget_period}; "
                    "an admin can raise it", retry_after=3600)
        if not key.cost_budget_usd:
            return None
        spent = cost_since(self.store, key.id, start)
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
