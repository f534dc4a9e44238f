"""The model hub: what models exist, under which names, and the loaded instances.

Entries live in the store's ``models`` table; loaded providers live in memory,
one per model, created on first use and warmed up once.

Example::

    hub = ModelHub(store, settings)
    spec = hub.resolve("default")          # the default chat model
    model = await hub.load_chat(spec.name)
    result = await model.generate(GenerationRequest(prompt="Hello"))
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import sqlalchemy as sa

from genfoundry.core.errors import ConfigError, InvalidRequest, ModelNotFound
from genfoundry.core.settings import Settings
from genfoundry.core.store import Store, utcnow
from genfoundry.models.protocols import ChatModel, EmbeddingModel
from genfoundry.models.providers import get_provider
from genfoundry.models.spec import Measured, ModelSpec

__all__ = ["DEFAULT_ALIAS", "DEFAULT_EMBEDDING_ALIAS", "ModelHub", "lookup_scope"]

log = logging.getLogger("genfoundry.hub")

DEFAULT_ALIAS = "default"
SWAP_RETRY_S = 60.0  # a replacement that failed to start is tried again after this long


def _serving_key(spec: ModelSpec) -> tuple:
    """What the loaded instance depends on: a change here means a new engine (a promoted adapter, a new
    file); a change of price, clearance, aliases or measured speed does not."""
    return (spec.provider, spec.location, spec.context_length,
            tuple(sorted((k, repr(v)) for k, v in spec.options.items())))
DEFAULT_EMBEDDING_ALIAS = "default-embedding"


_SCOPE: ContextVar[dict | None] = ContextVar("genfoundry_hub_lookup_scope", default=None)
# The instances the current request holds leases on (a request that holds the old instance never waits
# for that instance's own handover).
_HELD: ContextVar[frozenset[int]] = ContextVar("genfoundry_hub_held", default=frozenset())


@contextmanager
def lookup_scope() -> Iterator[None]:
    """Within this scope (the gateway opens one per request) the hub checks the store for changes once:
    the request's several lookups see one consistent set of entries, and pay for one query."""
    token = _SCOPE.set({})
    try:
        yield
    finally:
        _SCOPE.reset(token)


class ModelHub:
    """Registry of models (in the store) plus their loaded providers (in memory)."""

    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.settings = settings
        self._loaded: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._swaps: dict[str, asyncio.Task] = {}
        self._failed: dict[str, tuple[tuple, float, str]] = {}  # name -> (serving key, when, error)
        self._retiring: dict[asyncio.Task, Any] = {}  # closing once their requests finish
        self.swap_log: list[dict] = []  # what replaced what, for /health and tests
        self._leases: dict[int, int] = {}  # id(instance) -> requests holding it (admitted or queued)
        # name -> (set once the replaced instance has no requests left, id of that instance)
        self._handovers: dict[str, tuple[asyncio.Event, int]] = {}
        # The entries, parsed once and kept while the table is unchanged: a lookup costs one small
        # aggregate query (so a change made by another process sharing the store is seen at once),
        # not a read and validation of every row.
        self._cache: tuple[tuple, list[ModelSpec], dict[str, ModelSpec]] | None = None

    # -- entries ---------------------------------------------------------------
    def _forget_entries(self) -> None:
        self._cache = None
        scope = _SCOPE.get()
        if scope is not None:
            scope.pop(id(self), None)

    def _version(self) -> tuple:
        table = self.store.tables.models
        with self.store.begin() as conn:
            return tuple(conn.execute(sa.select(sa.func.count(), sa.func.max(table.c.updated_at))).one())

    def prefetch(self) -> None:
        """Check the store for changes now, in the calling thread: the scope's lookups then run from memory.
        The gateway calls this from the worker thread that checks the request's key, so a request's one
        hub query costs no thread hop of its own and never blocks the event loop."""
        scope = _SCOPE.get()
        if scope is not None and id(self) not in scope:
            scope[id(self)] = self._checked()

    def _entries(self) -> tuple[list[ModelSpec], dict[str, ModelSpec]]:
        scope = _SCOPE.get()
        if scope is not None and id(self) in scope:
            return scope[id(self)]
        found = self._checked()
        if scope is not None:
            scope[id(self)] = found
        return found

    def _checked(self) -> tuple[list[ModelSpec], dict[str, ModelSpec]]:
        version = self._version()
        cached = self._cache
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        table = self.store.tables.models
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(table.c.spec).order_by(table.c.name)).all()
        specs = [ModelSpec.model_validate(row[0]) for row in rows]
        names = {alias: spec for spec in specs for alias in spec.aliases}
        names.update({spec.name: spec for spec in specs})  # a name wins over another entry's alias
        self._cache = (version, specs, names)
        return specs, names

    def list(self) -> list[ModelSpec]:
        return [spec.model_copy() for spec in self._entries()[0]]

    def _find(self, name: str) -> ModelSpec | None:
        found = self._entries()[1].get(name)
        return found.model_copy() if found is not None else None

    def resolve(self, name: str) -> ModelSpec:
        """The entry for a name or alias; 'default' and 'default-embedding' work too."""
        spec = self._find(name)
        if spec is None:
            raise ModelNotFound(
                f"model '{name}' is not registered; run `genfoundry models list` to see the models, "
                "or `genfoundry models add` to register one", param="model")
        return spec

    def add(self, spec: ModelSpec, *, replace: bool = False, builtin: bool = False) -> ModelSpec:
        get_provider(spec.provider)  # unknown providers fail here, not at first request
        self._check_names_free(spec, replace=replace)
        table = self.store.tables.models
        row = {"name": spec.name, "provider": spec.provider, "spec": spec.model_dump(mode="json"),
               "builtin": builtin, "updated_at": utcnow()}
        with self.store.begin() as conn:
            exists = conn.execute(sa.select(table.c.name).where(table.c.name == spec.name)).first()
            if exists and not replace:
                raise InvalidRequest(f"model '{spec.name}' already exists; pass --replace to overwrite it")
            if exists:
                conn.execute(table.update().where(table.c.name == spec.name).values(**row))
            else:
                conn.execute(table.insert().values(created_at=utcnow(), **row))
        self._forget_entries()
        # A loaded instance keeps serving: the next request sees the changed entry and starts its
        # replacement beside it (see _load).
        return spec

    def _check_names_free(self, spec: ModelSpec, *, replace: bool) -> None:
        for other in self.list():
            if other.name == spec.name and replace:
                continue
            clash = set(spec.names()) & set(other.names())
            if clash and other.name != spec.name:
                raise InvalidRequest(f"name {sorted(clash)[0]!r} is already used by model '{other.name}'")

    def remove(self, name: str) -> ModelSpec:
        spec = self.resolve(name)
        table = self.store.tables.models
        with self.store.begin() as conn:
            conn.execute(table.delete().where(table.c.name == spec.name))
        self._forget_entries()
        model = self._loaded.pop(spec.name, None)
        if model is not None:
            self._retire_later(spec.name, model)
        return spec

    def set_default(self, name: str) -> ModelSpec:
        """Point the 'default' (chat) or 'default-embedding' alias at a model."""
        spec = self.resolve(name)
        alias = DEFAULT_EMBEDDING_ALIAS if spec.capabilities == ["embedding"] else DEFAULT_ALIAS
        for other in self.list():
            if alias in other.aliases and other.name != spec.name:
                other.aliases = [a for a in other.aliases if a != alias]
                self.add(other, replace=True)
        if alias not in spec.aliases:
            spec.aliases = [*spec.aliases, alias]
            self.add(spec, replace=True)
        return spec

    def record_measured(self, name: str, *, prefill_tps: float | None, decode_tps: float | None) -> None:
        """Store throughput measured on this machine (used to price self-hosted models)."""
        spec = self.resolve(name)
        spec.measured = Measured(
            prefill_tokens_per_second=prefill_tps or spec.measured.prefill_tokens_per_second,
            decode_tokens_per_second=decode_tps or spec.measured.decode_tokens_per_second,
            measured_at=dt.datetime.now(dt.UTC))
        table = self.store.tables.models
        with self.store.begin() as conn:
            conn.execute(table.update().where(table.c.name == spec.name).values(
                spec=spec.model_dump(mode="json"), updated_at=utcnow()))
        self._forget_entries()

    # -- loaded providers ------------------------------------------------------
    def create(self, spec: ModelSpec) -> ChatModel | EmbeddingModel:
        """A new, not yet warmed, provider instance for ``spec`` (a :class:`ModelPool` when it has a pool)."""
        provider = get_provider(spec.provider)
        if spec.pool is not None:
            from genfoundry.models.pool import ModelPool

            return ModelPool(spec, self.settings, provider.create)
        return provider.create(spec, self.settings)

    def pools(self) -> list:
        """The loaded models that are pools (for metrics, the console and ``doctor``)."""
        from genfoundry.models.pool import ModelPool

        return [m for m in list(self._loaded.values()) if isinstance(m, ModelPool)]

    async def load(self, name: str) -> ChatModel | EmbeddingModel:
        return await self._load(self.resolve(name))

    async def _load(self, spec: ModelSpec) -> ChatModel | EmbeddingModel:
        model = self._loaded.get(spec.name)
        if model is not None:
            current = getattr(model, "spec", None)
            if current is None or _serving_key(current) == _serving_key(spec):
                handover, old_id = self._handovers.get(spec.name, (None, None))
                if handover is not None and not handover.is_set() and old_id not in _HELD.get():
                    # A switch is in progress: this request waits for the old engine's last requests
                    # rather than run beside them (two engines decoding at once on the same cores slow
                    # each other far more than waiting costs; see docs/tune.md).
                    try:
                        await asyncio.wait_for(handover.wait(), self.settings.request_timeout)
                    except asyncio.TimeoutError:
                        pass
                return model
            # The entry changed under a running model (a promotion, a rollback, an edit, perhaps by another
            # process): start the new one beside it and keep serving with this one until it is warm.
            self._start_swap(spec, model)
            return model
        lock = self._locks.setdefault(spec.name, asyncio.Lock())
        async with lock:
            model = self._loaded.get(spec.name)
            if model is None:
                model = self.create(spec)
                await model.warm_up()
                self._loaded[spec.name] = model
        return model

    # -- switching a loaded model to a changed entry without dropping a request ---------------------
    def _start_swap(self, spec: ModelSpec, old: Any) -> None:
        key = _serving_key(spec)
        running = self._swaps.get(spec.name)
        if running is not None and not running.done():
            return
        failed = self._failed.get(spec.name)
        if failed is not None and failed[0] == key and time.monotonic() - failed[1] < SWAP_RETRY_S:
            return  # this very entry failed to start a moment ago: keep serving the old one
        self._swaps[spec.name] = asyncio.get_running_loop().create_task(self._swap(spec, old))

    async def _swap(self, spec: ModelSpec, old: Any) -> None:
        started = time.monotonic()
        new = None
        try:
            new = self.create(spec)
            if hasattr(new, "replacing"):
                new.replacing = True  # start without the engine's own warm-up run: the old one is busy serving
            await new.warm_up()
        except Exception as exc:  # a corrupt adapter, a missing file: the old engine goes on serving
            self._failed[spec.name] = (_serving_key(spec), time.monotonic(), f"{type(exc).__name__}: {exc}")
            self.swap_log.append({"model": spec.name, "ok": False, "error": str(exc)[:500],
                                  "at": dt.datetime.now(dt.UTC).isoformat()})
            log.error("model '%s' changed but its new version failed to start (%s); still serving the old one",
                      spec.name, exc)
            if new is not None:
                try:
                    await new.close()
                except Exception as close_exc:
                    log.warning("closing the failed new instance of '%s': %s", spec.name, close_exc)
            return
        if self._loaded.get(spec.name) is not old:  # removed or unloaded meanwhile: nobody wants the new one
            self._retire_later(spec.name, new)
            return
        handover = asyncio.Event()
        self._handovers[spec.name] = (handover, id(old))
        self._loaded[spec.name] = new
        self._failed.pop(spec.name, None)
        self.swap_log.append({"model": spec.name, "ok": True, "seconds": round(time.monotonic() - started, 2),
                              "at": dt.datetime.now(dt.UTC).isoformat()})
        log.info("model '%s' now served by its new version (warm in %.1f s)", spec.name, time.monotonic() - started)
        self._retire_later(spec.name, old, handover)

    def _retire_later(self, name: str, model: Any, handover: asyncio.Event | None = None) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a CLI command): nothing can be in flight
            return
        task = loop.create_task(self._retire(name, model, handover))
        self._retiring[task] = model
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def _retire(self, name: str, model: Any, handover: asyncio.Event | None = None) -> None:
        """Close a replaced instance once the requests it is serving have finished; then requests waiting
        for the handover go to its successor."""
        deadline = time.monotonic() + self.settings.request_timeout
        try:
            await asyncio.sleep(0.2)  # a caller that looked the model up a moment ago takes its lease now
            while self._busy(model) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            if handover is not None:
                handover.set()
                if self._handovers.get(name, (None,))[0] is handover:
                    self._handovers.pop(name, None)
        try:
            await model.close()
        except Exception as exc:
            log.warning("closing the replaced instance of '%s' failed: %s", name, exc)

    def unload(self, name: str) -> bool:
        """Stop a loaded model once its requests finish (it loads again on next use); False if not loaded."""
        model = self._loaded.pop(name, None)
        if model is None:
            return False
        self._retire_later(name, model)
        return True

    @contextmanager
    def lease(self, model: Any) -> Iterator[Any]:
        """Hold ``model`` for one request: a replaced instance is closed only once nobody holds it."""
        key = id(model)
        self._leases[key] = self._leases.get(key, 0) + 1
        held = _HELD.set(_HELD.get() | {key})
        try:
            yield model
        finally:
            try:
                _HELD.reset(held)
            except ValueError:  # released from another task (a stream closed by the server): nothing to undo
                pass
            left = self._leases[key] - 1
            if left:
                self._leases[key] = left
            else:
                self._leases.pop(key, None)

    def _busy(self, model: Any) -> bool:
        return self._leases.get(id(model), 0) > 0 or getattr(model, "in_flight", 0) > 0

    async def settle(self) -> None:
        """Wait for pending switches and retirements (tests, shutdown)."""
        pending = [t for t in self._swaps.values() if not t.done()] + list(self._retiring)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def load_chat(self, name: str) -> ChatModel:
        spec = self.resolve(name)
        if not (spec.can("chat") or spec.can("completion")):
            raise InvalidRequest(f"model '{spec.name}' cannot chat; it offers {', '.join(spec.capabilities)}", param="model")
        return await self._load(spec)  # type: ignore[return-value]

    async def load_embedding(self, name: str) -> EmbeddingModel:
        spec = self.resolve(name)
        if not spec.can("embedding"):
            raise InvalidRequest(f"model '{spec.name}' does not make embeddings; try `default-embedding`", param="model")
        return await self._load(spec)  # type: ignore[return-value]

    def loaded(self) -> dict[str, Any]:
        return dict(self._loaded)

    async def close(self) -> None:
        for task in self._swaps.values():
            task.cancel()
        retiring, self._retiring = dict(self._retiring), {}
        for task in retiring:
            task.cancel()
        models, self._loaded = self._loaded, {}
        models.update({f"{name} (replaced)": model for name, model in
                       ((getattr(m, "spec", None) and m.spec.name or "model", m) for m in retiring.values())})
        failures: list[tuple[str, Exception]] = []
        for name, model in models.items():
            try:
                await model.close()
            except Exception as exc:  # closing one must not stop the others
                failures.append((name, exc))
        if failures:
            name, exc = failures[0]
            raise ConfigError(f"closing model '{name}' failed: {exc}") from exc
