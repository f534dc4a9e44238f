"""Model pools: several servers of one model behind one name.

A hub entry with a ``pool`` (see :class:`~genfoundry.models.spec.Pool`) is served by
a :class:`ModelPool`: one provider instance per backend (the entry's ``location``
first, then ``pool.backends``), all with the entry's options. For each request:

- **routing**: the healthy backend with the fewest requests in flight (ties go
  round the pool), so a slow backend gets fewer requests;
- **failover**: a backend that fails before its first token (connection refused,
  5xx, a body that is not the API's shape) is counted as failed and the request
  goes to the next backend; a failure after the first token ends the request,
  since part of the answer is already with the client;
- **passive ejection**: ``eject_after`` failures in a row leave a backend out for
  ``eject_seconds``, after which it gets requests again (one success clears it);
- **health checks**: every ``health_interval_s`` each backend's ``health_path``
  (``models``: ``GET {base}/models``) is fetched; a failed check ejects the
  backend, a good one brings it back at once.

A request meets a fully ejected pool by trying every backend anyway, least
recently failed first: an outage ends as soon as one server is back.
:meth:`ModelPool.status` is what the gateway's metrics, the console and
``genfoundry doctor`` show; the span of the model call gets the backend's URL
(``genfoundry.pool.backend``) and a ``pool.failover`` event per failed try.

Example::

    spec = ModelSpec(name="qwen", provider="openai_compat", location="http://gpu1:8000/v1",
                     pool=Pool(backends=["http://gpu2:8000/v1"]), capabilities=["chat"])
    pool = ModelPool(spec, settings)   # what ``hub.load_chat("qwen")`` gives
    await pool.generate(GenerationRequest(messages=[Message("user", "Hi")]))
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry import trace

from genfoundry.core.errors import ProviderError
from genfoundry.core.settings import Settings
from genfoundry.core.types import Embeddings, Generation, GenerationChunk, GenerationRequest
from genfoundry.models.spec import ModelSpec

__all__ = ["Backend", "ModelPool"]

log = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 3.0


@dataclass
class Backend:
    """One server of a pool and what the pool knows about it."""

    url: str
    model: Any
    outstanding: int = 0
    failures: int = 0  # in a row
    ejected_until: float = 0.0
    ejected_by: str | None = None  # "requests" (failed in a row) or "health" (its check failed)
    healthy: bool | None = None  # the last health check (None: not checked yet)
    served: int = 0
    failed: int = 0
    last_error: str | None = None
    last_failure_at: float = field(default=0.0)

    def available(self, now: float) -> bool:
        return self.ejected_until <= now

    def to_dict(self, now: float) -> dict:
        return {"url": self.url, "outstanding": self.outstanding, "failures_in_a_row": self.failures,
                "ejected": not self.available(now),
                "ejected_for_s": round(max(0.0, self.ejected_until - now), 1),
                "ejected_by": self.ejected_by if not self.available(now) else None, "healthy": self.healthy,
                "served": self.served, "failed": self.failed, "last_error": self.last_error}


class ModelPool:
    """A chat or embedding model served by several backends (see the module docstring)."""

    local = False

    def __init__(self, spec: ModelSpec, settings: Settings | None,
                 create: Callable[[ModelSpec, Settings | None], Any], *, clock=time.monotonic,
                 watch: bool = True, health_transport: httpx.AsyncBaseTransport | None = None):
        if spec.pool is None:
            raise ValueError(f"model '{spec.name}' has no pool")
        self.spec = spec
        self.config = spec.pool
        self._clock = clock
        self.backends: list[Backend] = []
        for url in [spec.location, *spec.pool.backends]:
            options = dict(spec.options)
            options.setdefault("max_retries", 0)  # the pool retries, on another backend
            member = spec.model_copy(update={"location": url, "pool": None, "options": options})
            self.backends.append(Backend(url=url, model=create(member, settings)))
        self.concurrency = sum(int(getattr(b.model, "concurrency", 1)) for b in self.backends)
        self.dimensions = getattr(self.backends[0].model, "dimensions", None)
        self._turn = itertools.count()
        self._health: asyncio.Task | None = None
        self._watch = watch  # run the health checks in the background from first use
        self._health_transport = health_transport

    # -- choosing a backend --------------------------------------------------------------------
    def _order(self) -> list[Backend]:
        """The backends to try, best first: available ones by requests in flight (ties taking turns),
        then the ejected ones, least recently failed first."""
        now = self._clock()
        turn = next(self._turn)
        size = len(self.backends)
        ranked = sorted(range(size), key=lambda i: (not self.backends[i].available(now),
                                                    self.backends[i].outstanding if self.backends[i].available(now)
                                                    else self.backends[i].last_failure_at,
                                                    (i - turn) % size))
        return [self.backends[i] for i in ranked]

    def _failed(self, backend: Backend, exc: BaseException) -> None:
        now = self._clock()
        backend.failures += 1
        backend.failed += 1
        backend.last_error = str(exc)[:300]
        backend.last_failure_at = now
        if backend.failures >= self.config.eject_after:
            backend.ejected_until, backend.ejected_by = now + self.config.eject_seconds, "requests"
            log.warning("pool %s: backend %s left out for %gs after %d failures in a row (%s)", self.spec.name,
                        backend.url, self.config.eject_seconds, backend.failures, backend.last_error)
        trace.get_current_span().add_event("pool.failover", {"genfoundry.pool.backend": backend.url,
                                                              "error": backend.last_error})

    def _succeeded(self, backend: Backend) -> None:
        backend.failures = 0
        backend.ejected_until = 0.0
        backend.served += 1
        trace.get_current_span().set_attribute("genfoundry.pool.backend", backend.url)

    async def _try_each(self, call: Callable[[Any], Awaitable[Any]]) -> Any:
        self._ensure_health_checks()
        errors: list[str] = []
        for backend in self._order():
            backend.outstanding += 1
            try:
                result = await call(backend.model)
            except ProviderError as exc:
                self._failed(backend, exc)
                errors.append(f"{backend.url}: {exc}")
                continue
            finally:
                backend.outstanding -= 1
            self._succeeded(backend)
            return result
        raise ProviderError(f"every backend of pool '{self.spec.name}' failed: " + "; ".join(errors))

    # -- the model protocols -------------------------------------------------------------------
    async def warm_up(self) -> None:
        for backend in self.backends:
            await backend.model.warm_up()
        self._ensure_health_checks()

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self._try_each(lambda model: model.generate(request))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self._ensure_health_checks()
        errors: list[str] = []
        for backend in self._order():
            backend.outstanding += 1
            chunks = backend.model.stream(request)
            try:
                try:
                    first = await chunks.__anext__()
                except StopAsyncIteration:
                    self._succeeded(backend)
                    return
                except ProviderError as exc:  # nothing was sent yet: another backend may answer
                    self._failed(backend, exc)
                    errors.append(f"{backend.url}: {exc}")
                    continue
                self._succeeded(backend)
                yield first
                try:
                    async for chunk in chunks:
                        yield chunk
                except ProviderError as exc:  # mid-answer: the client has part of it, so the request ends
                    self._failed(backend, exc)
                    raise
                return
            finally:
                backend.outstanding -= 1
                await chunks.aclose()
        raise ProviderError(f"every backend of pool '{self.spec.name}' failed: " + "; ".join(errors))

    async def embed(self, texts: list[str]) -> Embeddings:
        result = await self._try_each(lambda model: model.embed(texts))
        self.dimensions = self.dimensions or getattr(self.backends[0].model, "dimensions", None)
        return result

    def count_tokens(self, text: str) -> int:
        return self.backends[0].model.count_tokens(text)

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            try:
                await self._health
            except (asyncio.CancelledError, Exception):
                pass
            self._health = None
        for backend in self.backends:
            await backend.model.close()

    # -- health ------------------------------------------------------------------------------
    def status(self) -> list[dict]:
        """Each backend's state, for metrics, the console and ``doctor``."""
        now = self._clock()
        return [b.to_dict(now) for b in self.backends]

    async def check_health(self, client: httpx.AsyncClient | None = None) -> list[dict]:
        """Fetch every backend's health path once; eject the failing, bring back the good."""
        own = client is None
        client = client or httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S)
        try:
            async def one(backend: Backend) -> None:
                url = backend.url.rstrip("/") + "/" + self.config.health_path.lstrip("/")
                try:
                    response = await client.get(url)
                    ok, why = response.status_code == 200, f"health check answered {response.status_code}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"health check failed: {type(exc).__name__}: {exc}"
                backend.healthy = ok
                now = self._clock()
                if ok:  # back at once if its check had left it out; failed requests keep it out their time
                    if backend.ejected_by == "health" and not backend.available(now):
                        log.info("pool %s: backend %s is healthy again", self.spec.name, backend.url)
                        backend.ejected_until, backend.ejected_by = 0.0, None
                elif backend.available(now) or backend.ejected_by == "health":
                    backend.last_error, backend.last_failure_at = why, now
                    backend.ejected_until, backend.ejected_by = now + self.config.eject_seconds, "health"

            await asyncio.gather(*(one(b) for b in self.backends))
        finally:
            if own:
                await client.aclose()
        return self.status()

    def _ensure_health_checks(self) -> None:
        if not self._watch:
            return
        if self._health is not None and not self._health.done():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._health = asyncio.ensure_future(self._health_loop())

    async def _health_loop(self) -> None:
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S, transport=self._health_transport) as client:
            while True:
                try:
                    await self.check_health(client)
                except Exception:  # the checks must go on
                    log.exception("pool %s: health check", self.spec.name)
                await asyncio.sleep(self.config.health_interval_s)
