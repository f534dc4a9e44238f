"""Per-key request rates and token budgets.

Rates are counted in this process (a sliding 60-second window); budgets are
summed from the call log in the store, so every gateway replica sharing one
database enforces the same budget.
"""

from __future__ import annotations

import datetime as dt
import threading
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


@dataclass
class _Held:
    key_id: str
    tokens: int
    usd: float


class Quotas:
    """Rates, and budgets with reservations.

    A budget is checked at authentication and again before every model call, and each call
    reserves what it may spend (its prompt and ``max_tokens``, at the model's price) until its
    record is in the call log: concurrent requests, a summary that makes many model calls, and
    a reranker's calls cannot together spend past the budget on one gateway.
    """

    def __init__(self, store: Store, *, default_rpm: int | None = None, clock=time.monotonic):
        self.store = store
        self.default_rpm = default_rpm
        self._clock = clock
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()  # requests run on the event loop and in threads
        self._held: dict[str, _Held] = {}  # call id -> what it reserved, until its record is written

    def check_rate(self, key: ApiKey) -> None:
        limit = key.rpm_limit or self.default_rpm
        if not limit:
            return
        with self._lock:  # check and count in one step: two threads must not both take the last slot
            now = self._clock()
            hits = self._hits[key.id]
            while hits and now - hits[0] >= WINDOW_S:
                hits.popleft()
            if len(hits) >= limit:
                retry = WINDOW_S - (now - hits[0])
                raise RateLimited(f"key '{key.name}' is limited to {limit} requests per minute",
                                  retry_after=max(1.0, retry))
            hits.append(now)

    def _reserved(self, key_id: str) -> tuple[int, float]:
        held = [h for h in self._held.values() if h.key_id == key_id]
        return sum(h.tokens for h in held), sum(h.usd for h in held)

    def reserve(self, key: ApiKey | None, call_id: str, *, tokens: int, usd: float) -> None:
        """Hold ``tokens`` and ``usd`` of the key's budgets for a model call, or refuse it (429)."""
        if key is None or (not key.token_budget and not key.cost_budget_usd):
            return
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        start = period_start(key.budget_period, now)
        used = tokens_used_since(self.store, key.id, start) if key.token_budget else 0
        spent = cost_since(self.store, key.id, start) if key.cost_budget_usd else 0.0
        with self._lock:
            held_tokens, held_usd = self._reserved(key.id)
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
            self._held[call_id] = _Held(key.id, tokens, usd)

    def settle(self, call_id: str, *, tokens: int, usd: float) -> None:
        """The call is over: hold what it really spent until its record is in the log."""
        with self._lock:
            held = self._held.get(call_id)
            if held is not None:
                held.tokens, held.usd = tokens, usd

    def release(self, call_ids) -> None:
        """The calls' records are written (or they spent nothing): stop holding their amounts."""
        with self._lock:
            for call_id in call_ids:
                self._held.pop(call_id, None)

    def check_budget(self, key: ApiKey, *, warn_fraction: float = 0.8) -> BudgetState | None:
        """Refuse a key over its token or dollar budget; return where its dollar budget stands."""
        if not key.token_budget and not key.cost_budget_usd:
            return None
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        start = period_start(key.budget_period, now)
        held_tokens, held_usd = self._reserved(key.id)
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
