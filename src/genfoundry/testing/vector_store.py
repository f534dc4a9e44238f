"""Conformance tests every VectorStore backend passes. Subclass and give a
``vector_store`` fixture (an empty store is best; each test makes its own
collection)::

    class TestLance(VectorStoreConformance):
        @pytest.fixture()
        def vector_store(self, tmp_path):
            store = LanceVectorStore(tmp_path / "vectors")
            yield store
            store.close()
"""

from __future__ import annotations

import math
import uuid

import pytest

from genfoundry.core.errors import CollectionNotFound, InvalidRequest
from genfoundry.core.types import Chunk
from genfoundry.knowledge.analysis import analyze
from genfoundry.knowledge.stores.base import VectorStore

__all__ = ["VectorStoreConformance", "bm25", "make_chunk"]

DIM = 8


def _unit(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def make_chunk(text: str, *, document_id: str = "doc-1", position: int = 0, axis: int = 0, **fields) -> Chunk:
    """A chunk whose vector points mostly along ``axis`` (0..7), with its terms analysed."""
    vector = [0.05] * DIM
    vector[axis % DIM] = 1.0
    fields.setdefault("vector", _unit(vector))
    return Chunk(
        id=fields.pop("id", uuid.uuid4().hex),
        document_id=document_id,
        version=fields.pop("version", "v1"),
        text=text,
        position=position,
        terms=analyze(text),
        **fields,
    )


def bm25(query: list[str], doc: list[str], corpus: list[list[str]], k1=1.2, b=0.75) -> float:
    """Lucene's BM25, the reference every store must reproduce."""
    avgdl = sum(len(d) for d in corpus) / len(corpus)
    score = 0.0
    for term in set(query):
        n = sum(1 for d in corpus if term in d)
        tf = doc.count(term)
        if not n or not tf:
            continue
        idf = math.log(1 + (len(corpus) - n + 0.5) / (n + 0.5))
        score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    return score


CORPUS = [
    ("Returns are accepted within 30 days of delivery.", "returns.md", ["policy"], 1),
    ("Refunds go back to the original payment method within 5 days.", "returns.md", ["policy"], 1),
    ("Standard shipping takes 3 to 5 business days; express shipping takes 1 day.", "shipping.md", ["logistics"], 2),
    ("The warranty covers manufacturing defects for two years.", "warranty.md", ["policy", "legal"], None),
    ("Shipping to islands costs extra. Shipping is free over 50 euros.", "shipping.md", ["logistics"], 3),
]


class VectorStoreConformance:
    """Needs a ``vector_store`` fixture."""

    @pytest.fixture()
    def loaded(self, vector_store):
        """A collection holding CORPUS: chunk i points along axis i, document = source."""
        name = f"c{uuid.uuid4().hex[:8]}"
        vector_store.create_collection(name, dimensions=DIM)
        chunks = [
            make_chunk(text, document_id=source, position=i, axis=i, source=source, tags=tags, page=page,
                       title=source.removesuffix(".md").title(), heading=f"Section {i}", modified="2026-01-0{}".format(i + 1))
            for i, (text, source, tags, page) in enumerate(CORPUS)
        ]
        vector_store.add(name, chunks)
        return name, chunks

    def test_implements_protocol(self, vector_store):
        assert isinstance(vector_store, VectorStore)

    def test_collections_create_list_drop(self, vector_store):
        name = f"c{uuid.uuid4().hex[:8]}"
        vector_store.create_collection(name, dimensions=DIM)
        vector_store.create_collection(name, dimensions=DIM)  # idempotent
        assert name in vector_store.collections()
        assert vector_store.count(name) == 0
        vector_store.drop_collection(name)
        assert name not in vector_store.collections()
        with pytest.raises(CollectionNotFound):
            vector_store.count(name)

    def test_bad_collection_name_is_refused(self, vector_store):
        for bad in ["", "Has Space", "x;drop table chunks", "a" * 65, "_x"]:
            with pytest.raises(InvalidRequest):
                vector_store.create_collection(bad, dimensions=DIM)

    def test_unknown_collection(self, vector_store):
        with pytest.raises(CollectionNotFound):
            vector_store.search_dense("nope", [0.0] * DIM, limit=3)
        with pytest.raises(CollectionNotFound):
            vector_store.add("nope", [make_chunk("x")])

    def test_round_trip_of_every_field(self, vector_store, loaded):
        name, chunks = loaded
        assert vector_store.count(name) == len(CORPUS)
        got = vector_store.get(name, where={"document_id": "returns.md"})
        assert [c.position for c in got] == [0, 1]
        first, want = got[0], chunks[0]
        for field in ("id", "document_id", "version", "text", "position", "source", "title", "heading",
                      "page", "tags", "modified", "terms"):
            assert getattr(first, field) == getattr(want, field), field
        assert first.vector == pytest.approx(want.vector, abs=1e-6)
        assert vector_store.get(name, where={"document_id": "warranty.md"})[0].page is None

    def test_dense_search_ranks_by_cosine(self, vector_store, loaded):
        name, chunks = loaded
        hits = vector_store.search_dense(name, chunks[2].vector, limit=3)
        assert len(hits) == 3
        assert hits[0].chunk.id == chunks[2].id
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].score >= hits[1].score >= hits[2].score
        assert hits[0].chunk.text == chunks[2].text and hits[0].chunk.vector is not None

    def test_dense_search_filters(self, vector_store, loaded):
        name, chunks = loaded
        hits = vector_store.search_dense(name, chunks[0].vector, limit=10, where={"source": "shipping.md"})
        assert {h.chunk.source for h in hits} == {"shipping.md"} and len(hits) == 2
        hits = vector_store.search_dense(name, chunks[0].vector, limit=10, where={"tags": ["legal", "nothing"]})
        assert [h.chunk.source for h in hits] == ["warranty.md"]
        hits = vector_store.search_dense(name, chunks[0].vector, limit=10, where={"page": [1, 3]})
        assert sorted(h.chunk.position for h in hits) == [0, 1, 4]
        hits = vector_store.search_dense(name, chunks[0].vector, limit=10,
                                         where={"source": ["returns.md", "shipping.md"], "tags": "policy"})
        assert sorted(h.chunk.position for h in hits) == [0, 1]

    def test_text_search_is_bm25(self, vector_store, loaded):
        name, chunks = loaded
        query = analyze("shipping days")
        hits = vector_store.search_text(name, query, limit=10)
        corpus = [c.terms for c in chunks]
        want = sorted(((bm25(query, c.terms, corpus), c.id) for c in chunks), reverse=True)
        want = [(s, i) for s, i in want if s > 0]
        assert [h.chunk.id for h in hits] == [i for _, i in want]
        for hit, (score, _) in zip(hits, want):
            assert hit.score == pytest.approx(score, rel=1e-3)

    def test_text_search_with_filter_and_misses(self, vector_store, loaded):
        name, _ = loaded
        hits = vector_store.search_text(name, analyze("days"), limit=10, where={"document_id": "returns.md"})
        assert {h.chunk.document_id for h in hits} == {"returns.md"} and len(hits) == 2
        assert vector_store.search_text(name, analyze("zeppelin"), limit=10) == []
        assert vector_store.search_text(name, [], limit=10) == []

    def test_limit_is_respected(self, vector_store, loaded):
        name, chunks = loaded
        assert len(vector_store.search_dense(name, chunks[0].vector, limit=2)) == 2
        assert len(vector_store.search_text(name, analyze("shipping days"), limit=1)) == 1

    def test_delete_removes_from_every_search(self, vector_store, loaded):
        name, chunks = loaded
        assert vector_store.delete(name, where={"document_id": "shipping.md"}) == 2
        assert vector_store.count(name) == 3
        dense = vector_store.search_dense(name, chunks[2].vector, limit=10)
        text = vector_store.search_text(name, analyze("shipping"), limit=10)
        assert all(h.chunk.document_id != "shipping.md" for h in dense) and text == []
        assert vector_store.delete(name, where={"document_id": "shipping.md"}) == 0
        with pytest.raises(InvalidRequest):
            vector_store.delete(name, where={})

    def test_find_text_ignores_case(self, vector_store, loaded):
        name, chunks = loaded
        assert sorted(vector_store.find_text(name, "SHIPPING")) == sorted([chunks[2].id, chunks[4].id])
        assert vector_store.find_text(name, "50 euros") == [chunks[4].id]
        assert vector_store.find_text(name, "100% _off_") == []  # LIKE wildcards are literal

    def test_optimize_keeps_results_and_forgets_deleted(self, vector_store, loaded):
        name, chunks = loaded
        vector_store.delete(name, where={"id": chunks[3].id})
        vector_store.optimize(name)
        assert vector_store.count(name) == 4
        assert vector_store.find_text(name, "warranty") == []
        assert vector_store.search_text(name, analyze("warranty"), limit=5) == []
        assert vector_store.search_dense(name, chunks[0].vector, limit=1)[0].chunk.id == chunks[0].id

    def test_add_is_all_or_nothing(self, vector_store, loaded):
        name, _ = loaded
        good = make_chunk("fine chunk", document_id="new")
        bad = make_chunk("wrong size", document_id="new", vector=[1.0, 0.0])
        with pytest.raises(InvalidRequest):
            vector_store.add(name, [good, bad])
        assert vector_store.count(name, where={"document_id": "new"}) == 0

    def test_bad_filters_are_refused(self, vector_store, loaded):
        name, chunks = loaded
        for where in ({"colour": "red"}, {"page": "one"}, {"source": []}):
            with pytest.raises(InvalidRequest):
                vector_store.search_dense(name, chunks[0].vector, limit=3, where=where)

    def test_quotes_in_values_are_data_not_syntax(self, vector_store):
        name = f"c{uuid.uuid4().hex[:8]}"
        vector_store.create_collection(name, dimensions=DIM)
        tricky = "it's \"odd\"'); drop table x; --.md"
        vector_store.add(name, [make_chunk("odd file", document_id=tricky, source=tricky, tags=["a'b"])])
        assert vector_store.count(name, where={"source": tricky}) == 1
        assert vector_store.count(name, where={"tags": "a'b"}) == 1
        assert vector_store.find_text(name, "odd' OR '1'='1") == []

    def test_many_chunks_search_after_optimize(self, vector_store):
        name = f"c{uuid.uuid4().hex[:8]}"
        vector_store.create_collection(name, dimensions=DIM)
        chunks = []
        for i in range(600):
            vec = [math.sin(i * (k + 1) * 0.37) for k in range(DIM)]
            chunks.append(make_chunk(f"chunk number {i} word{i % 7}", document_id=f"d{i // 10}", position=i % 10,
                                     vector=_unit(vec)))
        for start in range(0, 600, 200):
            vector_store.add(name, chunks[start:start + 200])
        vector_store.optimize(name)
        assert vector_store.count(name) == 600
        target = chunks[123]
        assert vector_store.search_dense(name, target.vector, limit=5)[0].chunk.id == target.id
        hits = vector_store.search_text(name, analyze("word3"), limit=200)
        assert len(hits) == sum(1 for i in range(600) if i % 7 == 3)
