"""The knowledge base: collections, their documents and vectors, behind one object.

It ties the SQL registry (collections, documents, cached answers), the vector
store chosen in settings and the embedding models of the hub together, and is
what the command line and the gateway use.

Example::

    kb = KnowledgeBase(settings=settings, store=store, hub=hub)
    await kb.ingest("handbook", [Path("docs/")], create=True)
    passages = await kb.retrieve("handbook", "how do refunds work?")
    await kb.forget_match("jane@example.com")
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from genfoundry.core.audit import keyed_fingerprint, record
from genfoundry.core.errors import InvalidRequest, NotFound
from genfoundry.core.settings import Settings
from genfoundry.core.store import Store
from genfoundry.core.tracing import span
from genfoundry.core.types import Chunk
from genfoundry.knowledge.collections import Access, Collection, CollectionRegistry
from genfoundry.knowledge.ingest import IngestEvent, Ingestor, IngestReport, PiiScreen, repair
from genfoundry.knowledge.retrieval import Passage, Reranker, RetrievalOptions, Retriever
from genfoundry.knowledge.stores.base import VectorStore
from genfoundry.models.hub import DEFAULT_EMBEDDING_ALIAS, ModelHub
from genfoundry.models.protocols import EmbeddingModel

__all__ = ["DocumentInfo", "ForgetReport", "KnowledgeBase", "open_vector_store"]

DEFAULT_COLLECTION_PII = "off"
VAULT_TOKEN = re.compile(r"<[A-Z][A-Z_]*_\d+>")


def open_vector_store(settings: Settings) -> VectorStore:
    """The store ``settings.vector_store`` names: 'lance' or a PostgreSQL URL (pgvector)."""
    target = settings.vector_store
    if target == "lance":
        from genfoundry.knowledge.stores.lance import LanceVectorStore

        return LanceVectorStore(settings.vectors_dir)
    if target.startswith(("postgresql", "postgres:")):
        from genfoundry.knowledge.stores.pgvector import PgVectorStore

        return PgVectorStore(target)
    raise InvalidRequest(f"vector_store {target!r} is neither 'lance' nor a postgresql:// URL; see docs/settings.md")


@dataclass
class DocumentInfo:
    id: str
    collection: str
    source: str
    title: str
    chunks: int
    size: int
    tags: list[str]
    modified: str
    ingested_at: str


@dataclass
class ForgetReport:
    documents: list[str]  # ids of documents removed whole
    chunks: int  # chunks deleted
    answers: int  # cached answers dropped
    calls: int  # call-log entries whose content was erased
    dataset_rows: dict[str, int] = field(default_factory=dict)  # rows removed per dataset version (set by callers)
    agent_runs: int = 0  # agent runs whose content was erased (set by callers)

    def to_dict(self) -> dict:
        return {"documents": self.documents, "chunks": self.chunks, "cached_answers": self.answers,
                "call_logs_erased": self.calls, "dataset_rows_removed": self.dataset_rows,
                "agent_runs_erased": self.agent_runs}


class KnowledgeBase:
    """See the module docstring. Cheap to build; models and stores open on first use."""

    def __init__(self, *, settings: Settings, store: Store, hub: ModelHub, vectors: VectorStore | None = None,
                 reranker: Reranker | None = None, pii: PiiScreen | None = None):
        self.settings = settings
        self.store = store
        self.hub = hub
        self.pii = pii  # finds PII in documents for collections that ask (the guard's CollectionPii)
        self.registry = CollectionRegistry(store)
        self.vectors = vectors or open_vector_store(settings)
        self._reranker = reranker

    @property
    def reranker(self) -> Reranker | None:
        """The reranker passed in, else the one the ``reranker`` setting names (None: off)."""
        if self._reranker is None and self.settings.reranker:
            from genfoundry.knowledge.rerank import open_reranker

            self._reranker = open_reranker(self.settings.reranker, self.hub)
        return self._reranker

    # -- collections -------------------------------------------------------------------------

    async def create_collection(self, name: str, *, clearance: str = "internal", description: str = "",
                                embedding_model: str = DEFAULT_EMBEDDING_ALIAS, access: Access | None = None,
                                chunk_tokens: int | None = None, chunk_overlap: int | None = None,
                                pii: str = DEFAULT_COLLECTION_PII) -> Collection:
        spec = self.hub.resolve(embedding_model)
        if not spec.can("embedding"):
            raise InvalidRequest(f"model {spec.name!r} does not make embeddings", param="embedding_model")
        embedder = await self.hub.load_embedding(spec.name)
        dimensions = getattr(embedder, "dimensions", 0) or len((await embedder.embed(["probe"])).vectors[0])
        collection = Collection(
            name=name, clearance=clearance, description=description, embedding_model=spec.name,
            dimensions=dimensions, chunk_tokens=chunk_tokens or self.settings.chunk_tokens,
            chunk_overlap=self.settings.chunk_overlap if chunk_overlap is None else chunk_overlap,
            access=access or Access(), pii=pii)
        if pii != "off":
            self._pii_screen(collection)  # no detector or no vault key: refuse before anything is stored
        self._check_chunking(collection, embedder)
        self.registry.create(collection)
        record(self.store, action="collection.create", target=name,
               details={"clearance": clearance, "access": collection.access.to_dict(), "pii": pii})
        await asyncio.to_thread(self.vectors.create_collection, name, dimensions=dimensions)
        return collection

    @staticmethod
    def _check_chunking(collection: Collection, embedder: EmbeddingModel) -> None:
        limit = getattr(embedder, "max_seq_length", None)
        # Room for the special tokens and the heading line embedded with each chunk.
        if limit and collection.chunk_tokens > limit - 32:
            raise InvalidRequest(f"chunks of {collection.chunk_tokens} tokens do not fit model "
                                 f"{collection.embedding_model!r}, which reads {limit}; use at most {limit - 32}",
                                 param="chunk_tokens")

    def collection(self, name: str) -> Collection:
        return self.registry.get(name)

    def collections(self) -> list[Collection]:
        return self.registry.list()

    async def delete_collection(self, name: str, *, actor: str = "local") -> None:
        self.registry.get(name)
        record(self.store, action="collection.delete", actor=actor, target=name)
        if name in await asyncio.to_thread(self.vectors.collections):
            await asyncio.to_thread(self.vectors.drop_collection, name)
        self._drop_answers(name, document_ids=set(), everything=True)
        if self.pii is not None:
            # Its vaulted values go with it: a collection made later under the same name must not
            # find them (tokens in its documents would be "restored" to them).
            await asyncio.to_thread(self.pii.drop, name)
        self.registry.delete(name)

    def documents(self, collection: str) -> list[DocumentInfo]:
        self.registry.get(collection)
        table = self.store.tables.documents
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(table).where(table.c.collection == collection, table.c.version.is_not(None))
                                .order_by(table.c.source)).mappings().all()
        return [self._document(row) for row in rows]

    def chunks(self, collection: str) -> list[Chunk]:
        """The chunks of the documents' current versions (a killed ingest may have left others behind)."""
        self.collection(collection)  # an unknown name raises the registry's helpful error
        table = self.store.tables.documents
        with self.store.begin() as conn:
            current = dict(conn.execute(sa.select(table.c.id, table.c.version).where(
                table.c.collection == collection, table.c.version.is_not(None))).all())
        if not current:
            return []
        return [c for c in self.vectors.get(collection) if current.get(c.document_id) == c.version and c.text.strip()]

    def document(self, document_id: str) -> DocumentInfo:
        table = self.store.tables.documents
        with self.store.begin() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == document_id)).mappings().first()
        if row is None or row["version"] is None:
            raise NotFound(f"document {document_id!r} does not exist; `genfoundry collections show NAME` lists "
                           "documents with their ids", param="document")
        return self._document(row)

    @staticmethod
    def _document(row) -> DocumentInfo:
        return DocumentInfo(id=row["id"], collection=row["collection"], source=row["source"], title=row["title"],
                            chunks=row["chunks"], size=row["size"], tags=list(row["tags"] or []),
                            modified=row["modified"], ingested_at=row["ingested_at"].isoformat(timespec="seconds"))

    # -- ingest and retrieve -----------------------------------------------------------------

    async def embedder_for(self, collection: Collection) -> EmbeddingModel:
        return await self.hub.load_embedding(collection.embedding_model)

    async def ingest(self, collection: str, paths: Sequence[Path] = (), *, files: Sequence[tuple[Path, str]] = (),
                     tags: Sequence[str] = (), create: bool = False, clearance: str | None = None,
                     pii: str | None = None,
                     on_progress: Callable[[IngestEvent], None] | None = None) -> IngestReport:
        """Ingest folders and files (``paths``) and named files (``files``: (path, source) pairs).

        ``clearance`` and ``pii`` apply to a collection this creates (defaults: internal, off). For an
        existing collection they must match what it has: an ingest that asks for a stricter collection
        than the one found (say, pre-created by someone else as public, PII off) is refused, not
        silently run under the weaker settings.
        """
        found = self.registry.find(collection)
        if found is None and create:
            found = await self.create_collection(collection, clearance=clearance or "internal",
                                                 pii=pii or DEFAULT_COLLECTION_PII)
        elif found is None:
            self.registry.get(collection)  # raises the helpful error
        else:
            _check_matches(found, clearance=clearance, pii=pii)
        workers = None
        if self.settings.ray_address:  # reading, chunking and embedding on a Ray cluster
            from genfoundry.knowledge.ray_ingest import RayWorkers

            workers = await asyncio.to_thread(RayWorkers.start, self.settings,
                                              self.hub.resolve(found.embedding_model))
        try:
            ingestor = Ingestor(store=self.store, vectors=self.vectors, collection=found,
                                embedder=workers.embedder if workers else await self.embedder_for(found),
                                batch_size=self.settings.embed_batch_size,
                                max_file_bytes=math.floor(self.settings.max_file_mb * 2**20), on_progress=on_progress,
                                screen_pii=self._pii_screen(found) if found.pii != "off" else None, workers=workers)
            if paths:
                await ingestor.ingest_paths(paths, tags=tags)
            if files:
                await ingestor.ingest_files(files, tags=tags)
        finally:
            if workers is not None:
                await asyncio.to_thread(workers.close)
        return ingestor.report

    async def retriever(self, collection: str) -> Retriever:
        found = self.registry.get(collection)
        return Retriever(store=self.store, vectors=self.vectors, collection=found.name,
                         embedder=await self.embedder_for(found), reranker=self.reranker)

    async def retrieve(self, collection: str, query: str, options: RetrievalOptions | None = None) -> list[Passage]:
        options = options or RetrievalOptions()
        with span("retrieval", {"genfoundry.collection": collection, "genfoundry.retrieval.mode": options.mode,
                                "genfoundry.retrieval.limit": options.limit}) as item:
            passages = await (await self.retriever(collection)).retrieve(query, options)
            item.set_attribute("genfoundry.retrieval.hits", len(passages))
            if passages:
                item.set_attribute("genfoundry.retrieval.top_score", float(passages[0].score))
            return passages

    # -- forget ------------------------------------------------------------------------------

    async def forget_document(self, document_id: str, *, actor: str = "local") -> ForgetReport:
        """Remove a document: its chunks (vectors, full-text entries) and every cached answer. Audited."""
        info = self.document(document_id)
        record(self.store, action="knowledge.forget", actor=actor, target=document_id,
               details={"collection": info.collection, "source": info.source})
        tokens = await asyncio.to_thread(self._vault_tokens, info.collection, document_id)
        chunks = await asyncio.to_thread(self.vectors.delete, info.collection, where={"document_id": document_id})
        await asyncio.to_thread(self._forget_tokens, info.collection, tokens)
        answers = self._drop_answers(info.collection, document_ids={document_id})
        self._drop_documents([document_id])
        await asyncio.to_thread(self.vectors.optimize, info.collection)
        self._vacuum()
        return ForgetReport(documents=[document_id], chunks=chunks, answers=answers, calls=0)

    def _pii_screen(self, collection: Collection):
        if self.pii is None:
            raise InvalidRequest(f"collection {collection.name!r} asks for PII {collection.pii}, but this "
                                 "knowledge base was opened without a PII detector", param="pii")
        return self.pii.for_collection(collection)

    def _vault_tokens(self, collection: str, document_id: str) -> set[str]:
        """Vault tokens in a document's chunks (collections that tokenize PII)."""
        if self.registry.get(collection).pii != "tokenize":
            return set()
        chunks = self.vectors.get(collection, where={"document_id": document_id})
        return {m.group(0) for c in chunks for m in VAULT_TOKEN.finditer(c.text)}

    def _forget_tokens(self, collection: str, tokens: set[str]) -> None:
        """Drop the vaulted values that no remaining document of the collection refers to."""
        orphans = [t for t in sorted(tokens) if not self.vectors.find_text(collection, t)]
        if orphans and self.pii is not None:
            self.pii.forget(collection, orphans)

    async def forget_match(self, needle: str, *, collections: Sequence[str] | None = None,
                           erase_calls: bool = True, actor: str = "local") -> ForgetReport:
        """Remove every document holding ``needle`` (any case), in every collection unless named.

        A document that mentions it is removed whole: a chunk torn out would leave the rest of the
        document citing a gap. Cached answers and call-log content that hold it are erased too.
        """
        needle = needle.strip()
        if len(needle) < 3:
            raise InvalidRequest("give at least 3 characters to forget; shorter text matches too much",
                                 param="match")
        names = list(collections) if collections else [c.name for c in self.collections()]
        # The request is audited by a fingerprint: the log must not keep what it was asked to forget.
        record(self.store, action="knowledge.forget_match", actor=actor,
               target=keyed_fingerprint(self.settings.home, needle.lower()),
               details={"collections": names, "erase_call_logs": erase_calls})
        report = ForgetReport(documents=[], chunks=0, answers=0, calls=0)
        for name in names:
            found = self.registry.get(name)
            ids = set(await asyncio.to_thread(self.vectors.find_text, name, needle))
            if found.pii == "tokenize" and self.pii is not None:
                # In such a collection the value is in the vault and the documents hold its token.
                for token in await asyncio.to_thread(self.pii.find, name, needle):
                    ids |= set(await asyncio.to_thread(self.vectors.find_text, name, token))
            doc_ids = sorted({c.document_id for c in await asyncio.to_thread(
                self.vectors.get, name, where={"id": sorted(ids)})}) if ids else []
            if doc_ids:
                tokens = set().union(*(self._vault_tokens(name, d) for d in doc_ids))
                report.chunks += await asyncio.to_thread(self.vectors.delete, name, where={"document_id": doc_ids})
                self._drop_documents(doc_ids)
                report.documents += doc_ids
                self._forget_tokens(name, tokens)
            await asyncio.to_thread(self.vectors.optimize, name)
            report.answers += self._drop_answers(name, document_ids=set(doc_ids), needle=needle)
        if erase_calls:
            report.calls = self._erase_calls(needle)
        self._vacuum()
        return report

    def _drop_documents(self, ids: list[str]) -> None:
        table = self.store.tables.documents
        with self.store.begin() as conn:
            conn.execute(table.delete().where(table.c.id.in_(ids)))

    def _drop_answers(self, collection: str, *, document_ids: set[str], needle: str | None = None,
                      everything: bool = False) -> int:
        cache = self.store.tables.answer_cache
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(cache.c.key, cache.c.documents, cache.c.question, cache.c.answer)
                                .where(cache.c.collection == collection)).all()
            doomed = [key for key, docs, question, answer in rows
                      if everything or set(docs or []) & document_ids
                      or (needle and needle.lower() in f"{question} {answer}".lower())]
            if doomed:
                conn.execute(cache.delete().where(cache.c.key.in_(doomed)))
        return len(doomed)

    def _erase_calls(self, needle: str) -> int:
        """Erase the content of logged calls holding ``needle``, in any case.

        Stored JSON may spell non-ASCII characters as ``\\uXXXX`` escapes, which SQL cannot match
        case-insensitively; so SQL only narrows the rows down (by the needle's longest run of
        characters JSON keeps as they are) and the decoded content decides.
        """
        calls = self.store.tables.calls
        wanted = needle.lower()
        query = sa.select(calls.c.id, calls.c.request, calls.c.response)
        if plain := max(_JSON_PLAIN.findall(wanted), key=len, default=""):
            pattern = "%" + plain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            content = sa.func.lower(sa.func.coalesce(sa.cast(calls.c.request, sa.Text), "") + " "
                                    + sa.func.coalesce(sa.cast(calls.c.response, sa.Text), ""))
            query = query.where(content.like(pattern, escape="\\"))
        with self.store.begin() as conn:
            ids = [row.id for row in conn.execute(query) if _holds(wanted, row.request, row.response)]
            if ids:
                conn.execute(calls.update().where(calls.c.id.in_(ids)).values(request=None, response=None))
        return len(ids)

    def _vacuum(self) -> None:
        """SQLite keeps deleted pages in its write-ahead log until a checkpoint; fold them in now."""
        if self.store.engine.dialect.name == "sqlite":
            with self.store.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    async def repair(self, collection: str) -> int:
        self.registry.get(collection)
        return await asyncio.to_thread(repair, self.store, self.vectors, collection)

    def close(self) -> None:
        self.vectors.close()


# Printable ASCII but '"' and '\\': what json.dumps writes unescaped, so SQL can find it verbatim.
_JSON_PLAIN = re.compile(r"[ !#-\[\]-~]+")


def _holds(needle: str, *values) -> bool:
    """Whether any of the JSON ``values`` holds ``needle`` (lower case) in its text or in one string."""
    text = " ".join(json.dumps(v, ensure_ascii=False) for v in values if v is not None).lower()
    return needle in text or any(needle in s.lower() for v in values for s in _strings(v))


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [*value.keys(), *(s for v in value.values() for s in _strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _check_matches(found: Collection, *, clearance: str | None, pii: str | None) -> None:
    asked = {"clearance": clearance, "pii": pii}
    differ = {k: v for k, v in asked.items() if v is not None and v != getattr(found, k)}
    if differ:
        wanted = ", ".join(f"{k} {v}" for k, v in differ.items())
        has = ", ".join(f"{k} {getattr(found, k)}" for k in differ)
        raise InvalidRequest(f"collection {found.name!r} already exists with {has}, not {wanted} as asked; "
                             "nothing was ingested. Check who made it (`genfoundry collections show "
                             f"{found.name}`), then delete it or ingest without those options", param="collection")
