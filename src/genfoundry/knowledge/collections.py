"""Collections: named sets of documents with a data clearance and access rules.

A collection records the embedding model its vectors came from (a query must be
embedded by the same model), its chunking, the most sensitive data it holds
(its clearance), and who may read and write it: roles, and optionally a list of
API key ids. Admin keys and the local command line may do anything.

Example::

    registry = CollectionRegistry(store)
    registry.create(Collection(name="handbook", clearance="internal", embedding_model="all-minilm-l6-v2",
                               dimensions=384, chunk_tokens=200, chunk_overlap=40))
    registry.check_access(registry.get("handbook"), "read", role="app", key_id="k1")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy as sa

from genfoundry.core.audit import record
from genfoundry.core.errors import CollectionNotFound, InvalidRequest, PermissionDenied
from genfoundry.core.store import Store
from genfoundry.knowledge.stores.base import check_name
from genfoundry.models.spec import CLEARANCES

__all__ = ["Access", "Collection", "CollectionRegistry", "DEFAULT_READ_ROLES", "DEFAULT_WRITE_ROLES", "PII_MODES"]

DEFAULT_READ_ROLES = ("admin", "developer", "app")
DEFAULT_WRITE_ROLES = ("admin", "developer")
ROLES = ("admin", "developer", "app")

Action = Literal["read", "write"]


PII_MODES = ("off", "label", "redact", "tokenize")


@dataclass
class Access:
    """Who may read and write. ``keys``, when not empty, admits only those API key ids (and admins)."""

    read: list[str] = field(default_factory=lambda: list(DEFAULT_READ_ROLES))
    write: list[str] = field(default_factory=lambda: list(DEFAULT_WRITE_ROLES))
    keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for role in [*self.read, *self.write]:
            if role not in ROLES:
                raise InvalidRequest(f"unknown role {role!r}; roles are {', '.join(ROLES)}", param="access")

    def to_dict(self) -> dict:
        return {"read": list(self.read), "write": list(self.write), "keys": list(self.keys)}


@dataclass
class Collection:
    name: str
    embedding_model: str
    dimensions: int
    chunk_tokens: int
    chunk_overlap: int
    clearance: str = "internal"
    description: str = ""
    access: Access = field(default_factory=Access)
    pii: str = "off"  # what ingestion does with PII: off, label, redact, tokenize (docs/guard.md)

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.clearance not in CLEARANCES:
            raise InvalidRequest(
                f"clearance {self.clearance!r} is not one of {', '.join(CLEARANCES)}", param="clearance"
            )
        if self.pii not in PII_MODES:
            raise InvalidRequest(f"pii {self.pii!r} is not one of {', '.join(PII_MODES)}", param="pii")
        if not 0 <= self.chunk_overlap < self.chunk_tokens:
            raise InvalidRequest("chunk overlap must be at least 0 and less than the chunk size", param="chunk_overlap")


class CollectionRegistry:
    """Collections as rows of the SQL store (see the module docstring)."""

    def __init__(self, store: Store):
        self.store = store
        self.table = store.tables.collections

    def create(self, collection: Collection) -> Collection:
        with self.store.begin() as conn:
            if conn.execute(sa.select(self.table.c.name).where(self.table.c.name == collection.name)).first():
                raise InvalidRequest(f"collection {collection.name!r} already exists", param="collection",
                                     code="collection_exists")
            conn.execute(self.table.insert().values(**self._row(collection)))
        return collection

    def update(self, collection: Collection, *, actor: str = "local") -> Collection:
        """Change a collection's settings (access, clearance); audited."""
        record(self.store, action="collection.access", actor=actor, target=collection.name,
               details={"clearance": collection.clearance, "access": collection.access.to_dict()})
        with self.store.begin() as conn:
            conn.execute(self.table.update().where(self.table.c.name == collection.name)
                         .values(**self._row(collection)))
        return collection

    @staticmethod
    def _row(c: Collection) -> dict:
        return {"name": c.name, "description": c.description, "clearance": c.clearance,
                "embedding_model": c.embedding_model, "dimensions": c.dimensions, "chunk_tokens": c.chunk_tokens,
                "chunk_overlap": c.chunk_overlap, "access": c.access.to_dict(), "pii": c.pii}

    def find(self, name: str) -> Collection | None:
        with self.store.begin() as conn:
            row = conn.execute(sa.select(self.table).where(self.table.c.name == name)).mappings().first()
        return self._collection(row) if row else None

    def get(self, name: str) -> Collection:
        found = self.find(name)
        if found is None:
            raise CollectionNotFound(
                f"collection {name!r} does not exist; run `genfoundry collections list`, or create it "
                f"with `genfoundry ingest PATH --collection {name}`", param="collection")
        return found

    def list(self) -> list[Collection]:
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(self.table).order_by(self.table.c.name)).mappings().all()
        return [self._collection(row) for row in rows]

    def delete(self, name: str) -> None:
        with self.store.begin() as conn:
            conn.execute(self.store.tables.documents.delete().where(self.store.tables.documents.c.collection == name))
            conn.execute(self.store.tables.answer_cache.delete()
                         .where(self.store.tables.answer_cache.c.collection == name))
            conn.execute(self.table.delete().where(self.table.c.name == name))

    @staticmethod
    def _collection(row) -> Collection:
        fields = {k: row[k] for k in ("name", "description", "clearance", "embedding_model", "dimensions",
                                      "chunk_tokens", "chunk_overlap", "pii")}
        return Collection(**fields, access=Access(**row["access"]))

    @staticmethod
    def may(collection: Collection, action: Action, *, role: str | None, key_id: str | None) -> bool:
        """Whether the caller may ``action`` the collection; ``role=None`` is the local operator."""
        if role is None or role == "admin":
            return True
        allowed = collection.access.read if action == "read" else collection.access.write
        return role in allowed and (not collection.access.keys or key_id in collection.access.keys)

    @classmethod
    def check_access(cls, collection: Collection, action: Action, *, role: str | None, key_id: str | None) -> None:
        """Raise PermissionDenied unless the caller may ``action`` the collection."""
        if not cls.may(collection, action, role=role, key_id=key_id):
            raise PermissionDenied(
                f"this API key may not {action} collection {collection.name!r}; an admin can change its "
                f"access with `genfoundry collections access {collection.name}`", param="collection")
