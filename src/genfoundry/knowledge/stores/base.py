"""The VectorStore protocol: what every vector backend (LanceDB, pgvector) provides.

A store holds chunks (text, analysed terms, a vector and metadata) in named
collections and answers dense (cosine) and full-text (BM25) searches, with
metadata filters. It knows nothing about documents, versions being current or
models: the knowledge layer above it does. Methods are synchronous; the gateway
calls them from worker threads.

Filters are a dict of field to value: a scalar means equality, a list means
"any of" (for ``tags``: the chunk has any of the listed tags)::

    store.search_dense("handbook", vector, limit=10, where={"source": ["a.md", "b.md"]})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.types import Chunk, Hit

__all__ = ["FILTER_FIELDS", "Filter", "VectorStore", "check_filter", "check_name"]

Filter = dict[str, "str | int | list[str] | list[int]"]

# Metadata a filter may name, with the Python type of its values.
FILTER_FIELDS: dict[str, type] = {
    "id": str,
    "document_id": str,
    "version": str,
    "source": str,
    "title": str,
    "heading": str,
    "page": int,
    "tags": str,
}

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def check_name(name: str) -> str:
    """Collection names are lower-case letters, digits, '-' and '_' (they become table names)."""
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS or name[0] in "-_":
        raise InvalidRequest(
            f"collection name {name!r} is not valid: use 1-64 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit",
            param="collection",
        )
    return name


def check_filter(where: Filter | None) -> list[tuple[str, list]]:
    """Validate a filter and return it as (field, values) pairs; raise InvalidRequest if bad."""
    pairs: list[tuple[str, list]] = []
    for field, value in (where or {}).items():
        kind = FILTER_FIELDS.get(field)
        if kind is None:
            raise InvalidRequest(
                f"cannot filter on {field!r}; filterable fields: {', '.join(sorted(FILTER_FIELDS))}",
                param="filter",
            )
        values = list(value) if isinstance(value, (list, tuple, set)) else [value]
        if not values or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
            raise InvalidRequest(
                f"filter {field!r} takes {kind.__name__} values (one, or a non-empty list)",
                param="filter",
            )
        pairs.append((field, values))
    return pairs


@runtime_checkable
class VectorStore(Protocol):
    """Chunks with vectors and terms, in collections. See the module docstring."""

    def create_collection(self, name: str, *, dimensions: int) -> None:
        """Create the collection if it does not exist (same dimensions: no-op)."""

    def drop_collection(self, name: str) -> None:
        """Remove the collection and everything in it, on disk too."""

    def collections(self) -> list[str]: ...

    def add(self, collection: str, chunks: Sequence[Chunk]) -> None:
        """Store chunks (each with ``vector`` and ``terms`` set) atomically: all or none."""

    def delete(self, collection: str, *, where: Filter) -> int:
        """Delete the chunks matching ``where`` (must not be empty); return how many."""

    def get(self, collection: str, *, where: Filter | None = None, limit: int | None = None) -> list[Chunk]:
        """Chunks matching ``where``, ordered by document then position; vectors included."""

    def count(self, collection: str, *, where: Filter | None = None) -> int: ...

    def search_dense(
        self, collection: str, vector: Sequence[float], *, limit: int, where: Filter | None = None
    ) -> list[Hit]:
        """Nearest chunks by cosine similarity (score = similarity), best first; vectors included."""

    def search_text(
        self, collection: str, terms: Sequence[str], *, limit: int, where: Filter | None = None
    ) -> list[Hit]:
        """Chunks ranked by BM25 (k1=1.2, b=0.75) over their analysed ``terms``, best first."""

    def find_text(self, collection: str, needle: str) -> list[str]:
        """Ids of chunks whose text contains ``needle``, ignoring case (for forgetting)."""

    def optimize(self, collection: str) -> None:
        """Fold new rows into the indexes and physically remove deleted data and old versions."""

    def close(self) -> None: ...
