"""The pgvector VectorStore on a real PostgreSQL server (the session's ``postgres_server``).

Every test gets an empty database of its own (``postgres_url``); the conformance
mixin is the contract, the tests after it cover what is particular to PostgreSQL.
"""

from __future__ import annotations

import math
import threading
import uuid

import pytest

from genfoundry.core.errors import ConfigError, InvalidRequest
from genfoundry.knowledge.analysis import analyze
from genfoundry.testing.vector_store import DIM, VectorStoreConformance, bm25, make_chunk

pytest.importorskip("psycopg", reason="psycopg (3) is not importable", exc_type=ImportError)

from genfoundry.knowledge.stores.pgvector import PgVectorStore, libpq_url

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


@pytest.fixture()
def vector_store(postgres_url):
    store = PgVectorStore(postgres_url)
    yield store
    store.close()


class TestPgVectorStore(VectorStoreConformance):
    pass


def _psql(url: str, query: str, params=None) -> list[tuple]:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def test_libpq_url_and_sqlalchemy_url_reach_the_same_database(postgres_url):
    assert libpq_url(postgres_url).startswith("postgresql://")
    first, second = PgVectorStore(postgres_url), PgVectorStore(libpq_url(postgres_url))
    try:
        first.create_collection("shared-name_1", dimensions=DIM)
        assert second.collections() == ["shared-name_1"]  # a second process sees it too
    finally:
        first.close()
        second.close()


def test_unreachable_server_says_what_to_check(tmp_path):
    store = PgVectorStore(f"postgresql+psycopg://nobody@/nothing?host={tmp_path}")
    with pytest.raises(ConfigError, match="vector_store setting"):
        store.collections()


def test_collection_tables_and_indexes(vector_store, postgres_url):
    long_name = "a-" * 31 + "zz"  # 64 characters: longer than PostgreSQL's identifiers
    vector_store.create_collection(long_name, dimensions=DIM)
    vector_store.create_collection("wide", dimensions=3072)  # above HNSW's limit: exact search
    with pytest.raises(InvalidRequest, match="already exists with 8 dimensions"):
        vector_store.create_collection(long_name, dimensions=16)
    with pytest.raises(InvalidRequest):
        vector_store.create_collection("zero", dimensions=0)
    indexes = {name: ddl for name, ddl in _psql(
        postgres_url, "SELECT tablename, indexdef FROM pg_indexes WHERE indexdef LIKE '%hnsw%'")}
    (long_id,) = _psql(postgres_url, "SELECT id FROM gf_collections WHERE name = %s", (long_name,))[0]
    assert list(indexes) == [f"gf_chunks_{long_id}"] and "vector_cosine_ops" in indexes[f"gf_chunks_{long_id}"]
    wide = make_chunk("wide vector", vector=[1.0] + [0.0] * 3071)
    vector_store.add("wide", [wide])
    assert vector_store.search_dense("wide", wide.vector, limit=1)[0].score == pytest.approx(1.0)
    vector_store.drop_collection("wide")
    assert _psql(postgres_url, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'gf_%'")[0][0] == 4


def test_filtered_dense_search_finds_every_match(vector_store, postgres_url):
    """An HNSW scan yields ef_search candidates before the filter; iterative scans go on."""
    # The store connects after this: on so few rows the planner would rather sort them all.
    [(database,)] = _psql(postgres_url, "SELECT current_database()")
    _psql(postgres_url, f'ALTER DATABASE "{database}" SET enable_seqscan = off')
    vector_store.create_collection("many", dimensions=DIM)
    chunks = [make_chunk(f"chunk {i}", page=7 if i % 50 == 0 else None,
                         vector=[math.sin((i + 1) * (k + 1) * 0.37) for k in range(DIM)]) for i in range(1000)]
    vector_store.add("many", chunks)
    vector_store.optimize("many")
    hits = vector_store.search_dense("many", chunks[1].vector, limit=100, where={"page": 7})
    assert len(hits) == 20 and {h.chunk.page for h in hits} == {7}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(vector_store.search_dense("many", chunks[1].vector, limit=300)) == 300


def test_bm25_statistics_follow_adds_deletes_and_optimize(vector_store):
    """N and the average length are kept as rows of changes; they must stay exact."""
    vector_store.create_collection("stats", dimensions=DIM)
    texts = ["red apples and green apples", "green pears", "apples, pears and plums in a red bowl",
             "plums", "a bowl of red cherries and red plums"]
    chunks = [make_chunk(t, document_id=f"d{i % 3}", position=i) for i, t in enumerate(texts)]
    vector_store.add("stats", chunks[:2])
    vector_store.add("stats", chunks[2:])
    query = analyze("red plums apples")

    def check(alive: list) -> None:
        hits = {h.chunk.id: h.score for h in vector_store.search_text("stats", query, limit=10)}
        want = {c.id: bm25(query, c.terms, [a.terms for a in alive]) for c in alive}
        assert hits == pytest.approx({i: s for i, s in want.items() if s > 0}, rel=1e-6)

    check(chunks)
    assert vector_store.delete("stats", where={"document_id": "d1"}) == 2  # chunks 1 and 4
    assert vector_store.delete("stats", where={"document_id": "nothing"}) == 0
    alive = [c for c in chunks if c.document_id != "d1"]
    check(alive)
    vector_store.optimize("stats")
    check(alive)
    vector_store.add("stats", [chunks[1]])
    check([*alive, chunks[1]])


def test_duplicate_ids_nul_characters_and_bad_vectors(vector_store):
    vector_store.create_collection("odd", dimensions=DIM)
    chunk = make_chunk("nul\x00inside", source="a\x00b", tags=["t\x00"])
    vector_store.add("odd", [chunk])
    [back] = vector_store.get("odd")
    assert (back.text, back.source, back.tags) == ("nul\ufffdinside", "a\ufffdb", ["t\ufffd"])
    assert vector_store.count("odd", where={"source": "a\x00b"}) == 1
    assert vector_store.find_text("odd", "L\x00I") == [chunk.id]
    assert vector_store.find_text("odd", "") == []
    with pytest.raises(InvalidRequest, match="already in collection"):
        vector_store.add("odd", [make_chunk("again", id=chunk.id)])
    with pytest.raises(InvalidRequest, match="more than once"):
        vector_store.add("odd", [make_chunk("x", id="same"), make_chunk("y", id="same")])
    with pytest.raises(InvalidRequest, match="finite"):
        vector_store.add("odd", [make_chunk("nan", vector=[float("nan")] * DIM)])
    with pytest.raises(InvalidRequest, match="no vector"):
        vector_store.add("odd", [make_chunk("none", vector=None)])
    with pytest.raises(InvalidRequest, match="zeros"):
        vector_store.search_dense("odd", [0.0] * DIM, limit=1)
    with pytest.raises(InvalidRequest, match="dimensions"):
        vector_store.search_dense("odd", [1.0] * 3, limit=1)
    assert vector_store.count("odd") == 1


def test_worker_threads_share_one_store(vector_store):
    vector_store.create_collection("threads", dimensions=DIM)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                vector_store.add("threads", [make_chunk(f"thread {n} chunk {i}", document_id=f"t{n}", position=i,
                                                        axis=n)])
                vector_store.search_text("threads", analyze("chunk"), limit=5)
                vector_store.search_dense("threads", make_chunk("q", axis=n).vector, limit=3)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and vector_store.count("threads") == 30
    assert [c.position for c in vector_store.get("threads", where={"document_id": "t3"})] == list(range(5))


def test_unique_collection_names_do_not_clash(vector_store):
    names = [f"c{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for name in names:
        vector_store.create_collection(name, dimensions=DIM)
        vector_store.add(name, [make_chunk(name)])
    assert vector_store.collections() == sorted(names)
    assert [vector_store.find_text(n, n) != [] for n in names] == [True] * 3
