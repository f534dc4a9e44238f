"""Per-key request rates and token budgets.

Rates are counted in this process (a sliding 60-second window); budgets are
summed from the call log in the store, so every gateway replica sharing one
database enforces the same budget.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict, deque

from genfoundry.core.errors import BudgetExceeded, RateLimited
from genfoundry.core.store import Store
from genfoundry.gateway.keys import ApiKey
from genfoundry.observe.calls import tokens_used_since

__all__ = ["Quotas", "period_start"]

WINDOW_S = 60.0


def period_start(period: str, now: dt.datetime) -> dt.datetime:
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return dt.datetime(1970, 1, 1)


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

    def check_budget(self, key: ApiKey) -> None:
        if not key.token_budget:
            return
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        used = tokens_used_since(self.store, key.id, period_start(key.budget_period, now))
        if used >= key.token_budget:
            raise BudgetExceeded(
                f"key '{key.name}' has used its budget of {key.token_budget} tokens per {key.budget_period}; "
                "an admin can raise it", retry_after=3600)
