"""Labeling functions applied on a Ray cluster.

With the ``ray_address`` setting set, ``genfoundry label run`` sends the batches of
its rule and Python labeling functions to Ray tasks, several at once, so a large
dataset is labeled by every core of the cluster. The cache of votes, the label
model and the output dataset stay in this process, as without Ray: each batch's
votes are stored as it comes back, so a run that stops half way (a cluster that
goes away) keeps them, and the next run takes them from the cache.

Prompt LFs stay in this process (their model calls go through the gateway's
lifecycle, and their parallelism is the model server's), and so do embedding LFs
(they hold the embedding model).

Python LFs travel to the workers by value when their module is not an installed
package, so a module of your own need not be installed on the cluster.

Example::

    workers = RayVoteWorkers.start(settings)
    votes = await apply_lfs(store, lfs, rows, text_field="text", labels=labels, workers=workers)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

from genfoundry.core.errors import ProviderError
from genfoundry.data.labeling import EmbeddingLF, LabelingFunction, PromptLF, PythonLF

__all__ = ["RayVoteWorkers"]


def _votes(lf: LabelingFunction, texts: list[str], rows: list[dict]) -> list:
    from genfoundry.data.labeling import _batch_votes, _python_votes

    return _python_votes(lf, texts, rows) if isinstance(lf, PythonLF) else _batch_votes(lf, texts, rows)


class RayVoteWorkers:
    """LF batches as Ray tasks, at most ``in_flight`` at once (see the module docstring)."""

    def __init__(self, ray, address: str, in_flight: int):
        self.ray = ray
        self.address = address
        self.in_flight = in_flight
        self._task = ray.remote(num_cpus=1)(_votes)

    @classmethod
    def start(cls, settings) -> "RayVoteWorkers":
        from genfoundry.core.raycluster import cluster_cpus, connect

        ray = connect(settings)
        return cls(ray, settings.ray_address, in_flight=2 * (settings.ray_workers or cluster_cpus(ray)))

    def takes(self, lf: LabelingFunction) -> bool:
        return not isinstance(lf, (PromptLF, EmbeddingLF))

    def _by_value(self, lf: LabelingFunction) -> None:
        """A Python LF's own module goes with it (by value) unless it is an installed package."""
        func = getattr(lf, "func", None)
        module = sys.modules.get(getattr(func, "__module__", "") or "")
        path = getattr(module, "__file__", "") or ""
        if module is None or "site-packages" in path or module.__name__.startswith("genfoundry."):
            return
        try:
            self.ray.cloudpickle.register_pickle_by_value(module)
        except (AttributeError, ValueError):
            pass  # an older Ray, or a module it cannot take by value: by reference, as before

    def _lost(self, exc: Exception) -> ProviderError:
        return ProviderError(f"the Ray cluster at {self.address!r} failed during labeling ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); the votes stored so far are kept: "
                             "run the task again to go on")

    async def run(self, lf: LabelingFunction,
                  batches: list[tuple[list[str], list[dict]]]) -> AsyncIterator[tuple[int, list]]:
        """``(index, votes)`` of each batch as it finishes, up to ``in_flight`` batches running at once."""
        if not batches:
            return
        self._by_value(lf)
        try:
            shared = self.ray.put(lf)
        except Exception as exc:
            raise self._lost(exc) from None
        pending: dict[asyncio.Future, int] = {}
        following = 0

        def submit() -> None:
            nonlocal following
            texts, rows = batches[following]
            try:
                pending[asyncio.ensure_future(self._task.remote(shared, texts, rows))] = following
            except Exception as exc:
                raise self._lost(exc) from None
            following += 1

        while following < len(batches) and len(pending) < self.in_flight:
            submit()
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    number = pending.pop(future)
                    try:
                        votes = future.result()
                    except Exception as exc:
                        raise self._lost(exc) from None
                    if following < len(batches):
                        submit()
                    yield number, votes
        finally:
            for future in pending:
                future.cancel()
