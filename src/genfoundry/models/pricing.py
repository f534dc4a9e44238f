"""What a call costs.

API models: tokens times the hub's per-million prices. Self-hosted models: the
hardware's hourly price times the time the request held it. When several
requests share the engine (continuous batching), each second is split among
those running, so the costs of all requests add up to the busy hours of the
hardware, and the per-token figure follows from measured throughput.
"""

from __future__ import annotations

import time

from genfoundry.core.types import Usage
from genfoundry.models.spec import ModelSpec

__all__ = ["SharedClock", "api_cost", "call_cost", "per_million_output"]


def api_cost(spec: ModelSpec, usage: Usage) -> float | None:
    price = spec.price
    if price.input_per_million is None and price.output_per_million is None:
        return None
    return (usage.prompt_tokens * (price.input_per_million or 0.0)
            + usage.completion_tokens * (price.output_per_million or 0.0)) / 1e6


def call_cost(spec: ModelSpec, usage: Usage, *, attributed_seconds: float | None) -> float | None:
    """Dollars for one call; None when the hub has no price for the model."""
    cost = api_cost(spec, usage)
    if cost is not None:
        return cost
    if spec.price.per_hour is not None and attributed_seconds is not None:
        return spec.price.per_hour * attributed_seconds / 3600.0
    return None


def per_million_output(spec: ModelSpec) -> float | None:
    """Dollars per million generated tokens, as a user compares models."""
    if spec.price.output_per_million is not None:
        return spec.price.output_per_million
    tps = spec.measured.decode_tokens_per_second
    if spec.price.per_hour is not None and tps:
        return spec.price.per_hour / 3600.0 / tps * 1e6
    return None


class SharedClock:
    """Splits a model's busy time among the requests running at each moment.

    ``share()`` is the running integral of 1/active over time; a request's
    attributed seconds are the difference between its end and start readings.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._last = clock()
        self._active = 0
        self._share = 0.0
        self.tokens = 0
        self.seconds = 0.0

    def _advance(self) -> float:
        now = self._clock()
        if self._active:
            self._share += (now - self._last) / self._active
        self._last = now
        return self._share

    def begin(self) -> float:
        start = self._advance()
        self._active += 1
        return start

    def end(self, start: float, *, completion_tokens: int = 0) -> float:
        attributed = self._advance() - start
        self._active = max(0, self._active - 1)
        self.tokens += completion_tokens
        self.seconds += attributed
        return attributed

    def decode_tokens_per_second(self) -> float | None:
        return self.tokens / self.seconds if self.seconds > 0 and self.tokens else None
