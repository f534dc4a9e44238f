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

DEFAULT_ALIAS = "default"
DEFAULT_EMBEDDING_ALIAS = "default-embedding"


_SCOPE: ContextVar[dict | None] = ContextVar("genfoundry_hub_lookup_scope", default=None)


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

    async def prefetch(self) -> None:
        """Check the store for changes now, in a worker thread: the scope's lookups then run from memory,
        never blocking the event loop on a query."""
        scope = _SCOPE.get()
        if scope is not None and id(self) not in scope:
            scope[id(self)] = await asyncio.to_thread(self._checked)

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
        self._loaded.pop(spec.name, None)
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
        self._loaded.pop(spec.name, None)
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
        """A new, not yet warmed, provider instance for ``spec``."""
        return get_provider(spec.provider).create(spec, self.settings)

    async def load(self, name: str) -> ChatModel | EmbeddingModel:
        return await self._load(self.resolve(name))

    async def _load(self, spec: ModelSpec) -> ChatModel | EmbeddingModel:
        model = self._loaded.get(spec.name)
        if model is not None:
            return model
        lock = self._locks.setdefault(spec.name, asyncio.Lock())
        async with lock:
            model = self._loaded.get(spec.name)
            if model is None:
                model = self.create(spec)
                await model.warm_up()
                self._loaded[spec.name] = model
        return model

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
        models, self._loaded = self._loaded, {}
        failures: list[tuple[str, Exception]] = []
        for name, model in models.items():
            try:
                await model.close()
            except Exception as exc:  # closing one must not stop the others
                failures.append((name, exc))
        if failures:
            name, exc = failures[0]
            raise ConfigError(f"closing model '{name}' failed: {exc}") from exc
