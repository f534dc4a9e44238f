"""Bounded concurrency and a bounded queue per model.

A local model serves ``concurrency`` requests at once; up to ``max_queue`` more
wait; beyond that the caller gets :class:`Overloaded` (HTTP 429 with
Retry-After) at once, so overload never turns into a hang or a crash.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from genfoundry.core.errors import Overloaded

__all__ = ["Admission"]


class Admission:
    """Example::

        gate = Admission("gemma", concurrency=8, max_queue=64)
        async with gate.slot():
            ...  # run the request
    """

    def __init__(self, name: str, *, concurrency: int, max_queue: int, typical_seconds: float = 2.0):
        self.name = name
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.typical_seconds = typical_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self.waiting = 0
        self.running = 0

    def retry_after(self) -> int:
        # Queue ahead of a newcomer, drained `concurrency` at a time.
        return max(1, math.ceil((self.waiting + 1) / self.concurrency * self.typical_seconds))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self.waiting >= self.max_queue:
            raise Overloaded(
                f"model '{self.name}' is busy ({self.running} running, {self.waiting} waiting); retry later",
                retry_after=self.retry_after())
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
