"""Retrieval: dense, BM25 and hybrid search over a collection, with MMR and re-ranking.

Hybrid search fuses the dense and BM25 rankings by reciprocal-rank fusion
(``sum 1 / (60 + rank)``), which needs no score calibration between the two.
Every passage also carries its cosine similarity to the question, whatever the
mode: grounded answers compare the best one against ``min_relevance`` to say
"not in the documents" instead of guessing.

Example::

    passages = await retriever.retrieve("how long is the warranty?",
                                        RetrievalOptions(mode="hybrid", limit=5, mmr=0.7))
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import sqlalchemy as sa

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.store import Store
from genfoundry.core.types import Chunk, Hit
from genfoundry.knowledge.analysis import analyze
from genfoundry.knowledge.stores.base import Filter, VectorStore, check_filter
from genfoundry.models.protocols import EmbeddingModel

__all__ = ["MAX_QUERY_CHARS", "Passage", "Reranker", "RetrievalOptions", "Retriever", "fuse_rrf", "mmr_select"]

Mode = Literal["hybrid", "dense", "bm25"]
RRF_K = 60
MAX_QUERY_CHARS = 4000  # a question longer than this is refused, not silently cut


@dataclass
class RetrievalOptions:
    mode: Mode = "hybrid"
    limit: int = 5
    candidates: int = 50  # per ranking, before fusion, MMR and re-ranking
    where: Filter | None = None
    mmr: float | None = None  # lambda in (0, 1]: 1 = relevance only, lower = more diverse
    rerank: bool = False
    # The reranker for this request (e.g. one whose model calls go through the gateway's
    # lifecycle for the caller's key); None: the knowledge base's own.
    reranker: Reranker | None = field(default=None, compare=False, repr=False)

    def check(self) -> None:
        if self.mode not in ("hybrid", "dense", "bm25"):
            raise InvalidRequest(f"mode {self.mode!r} is not one of hybrid, dense, bm25", param="mode")
        if not 1 <= self.limit <= 100:
            raise InvalidRequest("limit must be between 1 and 100", param="limit")
        if self.mmr is not None and not 0 < self.mmr <= 1:
            raise InvalidRequest("mmr must be in (0, 1]", param="mmr")
        check_filter(self.where)


@dataclass
class Passage:
    """A retrieved chunk: ``score`` ranks it (fused, or re-ranked); ``similarity`` is its cosine to the query."""

    chunk: Chunk
    score: float
    similarity: float
    ranks: dict[str, int] = field(default_factory=dict)  # 1-based rank in each ranking that found it


class Reranker(Protocol):
    """Scores (query, passage) pairs; higher is more relevant."""

    async def score(self, query: str, texts: Sequence[str]) -> list[float]: ...


def fuse_rrf(rankings: dict[str, list[Hit]], *, k: int = RRF_K) -> list[tuple[Chunk, float, dict[str, int]]]:
    """Reciprocal-rank fusion of several rankings of chunks, best first."""
    fused: dict[str, list] = {}
    for name, hits in rankings.items():
        for rank, hit in enumerate(hits, start=1):
            entry = fused.setdefault(hit.chunk.id, [hit.chunk, 0.0, {}])
            entry[1] += 1.0 / (k + rank)
            entry[2][name] = rank
            if entry[0].vector is None and hit.chunk.vector is not None:
                entry[0] = hit.chunk
    return sorted((tuple(e) for e in fused.values()), key=lambda e: -e[1])


def mmr_select(query: np.ndarray, vectors: np.ndarray, relevance: np.ndarray, *, limit: int,
               lambda_: float) -> list[int]:
    """Maximal marginal relevance: indices chosen greedily, trading relevance for novelty."""
    chosen: list[int] = []
    left = list(range(len(vectors)))
    while left and len(chosen) < limit:
        if chosen:
            redundancy = (vectors[left] @ vectors[chosen].T).max(axis=1)
        else:
            redundancy = np.zeros(len(left))
        scores = lambda_ * relevance[left] - (1 - lambda_) * redundancy
        best = left[int(np.argmax(scores))]
        chosen.append(best)
        left.remove(best)
    return chosen


class Retriever:
    """Searches one collection of a vector store (see the module docstring)."""

    def __init__(self, *, store: Store, vectors: VectorStore, collection: str, embedder: EmbeddingModel,
                 reranker: Reranker | None = None):
        self.store = store
        self.vectors = vectors
        self.collection = collection
        self.embedder = embedder
        self.reranker = reranker

    async def retrieve(self, query: str, options: RetrievalOptions | None = None) -> list[Passage]:
        options = options or RetrievalOptions()
        options.check()
        query = query.strip()
        if not query:
            raise InvalidRequest("the query is empty", param="query")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"the query is {len(query):,} characters long; the limit is {MAX_QUERY_CHARS:,}. "
                                 "Ask a shorter question", param="query")
        vector = np.asarray((await self.embedder.embed([query])).vectors[0], dtype=np.float32)
        rankings = await self._search(query, vector, options)
        fused = fuse_rrf(rankings)
        if not fused:
            return []
        vectors = np.asarray([c.vector for c, _, _ in fused], dtype=np.float32)
        similarity = vectors @ vector
        passages = [Passage(chunk, score, float(sim), ranks)
                    for (chunk, score, ranks), sim in zip(fused, similarity)]
        if options.rerank:
            reranker = options.reranker or self.reranker
            if reranker is None:
                raise InvalidRequest("re-ranking was asked for but no reranker is set; set `reranker` "
                                     "(see docs/settings.md)", param="rerank")
            passages = await self._rerank(reranker, query, passages[: max(options.limit * 4, 20)])
        if options.mmr is not None:
            relevance = np.asarray([p.similarity for p in passages], dtype=np.float32)
            picked = mmr_select(vector, np.asarray([p.chunk.vector for p in passages], dtype=np.float32),
                                relevance, limit=options.limit, lambda_=options.mmr)
            return [passages[i] for i in picked]
        return passages[: options.limit]

    async def _search(self, query: str, vector: np.ndarray, options: RetrievalOptions) -> dict[str, list[Hit]]:
        # Over-fetch a little: chunks of a half-written ingest are dropped below.
        want = options.candidates + 10
        searches = {}
        if options.mode in ("hybrid", "dense"):
            searches["dense"] = asyncio.to_thread(self.vectors.search_dense, self.collection, vector.tolist(),
                                                  limit=want, where=options.where)
        if options.mode in ("hybrid", "bm25"):
            searches["bm25"] = asyncio.to_thread(self.vectors.search_text, self.collection, analyze(query),
                                                 limit=want, where=options.where)
        # Both searches at once: hybrid costs about the slower of the two, not their sum.
        rankings = dict(zip(searches, await asyncio.gather(*searches.values())))
        current = await asyncio.to_thread(
            self._current_versions, {h.chunk.document_id for hits in rankings.values() for h in hits})
        return {name: [h for h in hits if current.get(h.chunk.document_id) == h.chunk.version][: options.candidates]
                for name, hits in rankings.items()}

    def _current_versions(self, document_ids: set[str]) -> dict[str, str]:
        if not document_ids:
            return {}
        table = self.store.tables.documents
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(table.c.id, table.c.version).where(table.c.id.in_(document_ids)))
            return {doc_id: version for doc_id, version in rows if version}

    async def _rerank(self, reranker: Reranker, query: str, passages: list[Passage]) -> list[Passage]:
        scores = await reranker.score(query, [p.chunk.text for p in passages])
        for passage, score in zip(passages, scores):
            passage.score = float(score)
        return sorted(passages, key=lambda p: -p.score)
