"""The whole knowledge base on PostgreSQL: registry and chunks in one real server
(pgvector), selected by URL as a user would, with the fake models for speed."""

from __future__ import annotations

import asyncio

import pytest

from genfoundry.core.store import Store
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.retrieval import RetrievalOptions
from genfoundry.knowledge.stores.pgvector import PgVectorStore
from genfoundry.models.hub import DEFAULT_ALIAS, DEFAULT_EMBEDDING_ALIAS, ModelHub

from tests.conftest import fake_spec

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


@pytest.fixture()
def kb(settings, postgres_url):
    settings.vector_store = postgres_url
    settings.database_url = postgres_url
    store = Store.open(postgres_url)
    hub = ModelHub(store, settings)
    hub.add(fake_spec("fake-chat", aliases=[DEFAULT_ALIAS]))
    hub.add(fake_spec("fake-embed", aliases=[DEFAULT_EMBEDDING_ALIAS], capabilities=["embedding"]))
    kb = KnowledgeBase(settings=settings, store=store, hub=hub)
    yield kb
    kb.close()
    asyncio.run(hub.close())
    store.close()


def test_settings_url_selects_pgvector(kb, postgres_url):
    assert type(kb.vectors) is PgVectorStore
    asyncio.run(kb.create_collection("where"))
    # The collection really is in PostgreSQL: another store opened on the same URL sees it.
    other = PgVectorStore(postgres_url)
    try:
        assert "where" in other.collections()
    finally:
        other.close()


def test_ingest_update_search_and_forget(kb, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "returns.md").write_text("# Returns\nReturns are accepted within 30 days of delivery.\n")
    (folder / "contact.md").write_text("# Contact\nWrite to jane.doe@example.com for help with orders.\n")
    report = asyncio.run(kb.ingest("handbook", [folder], create=True))
    assert len(report.added) == 2 and not report.failed
    for mode in ("dense", "bm25", "hybrid"):
        passages = asyncio.run(kb.retrieve("handbook", "returns accepted days", RetrievalOptions(mode=mode)))
        assert passages and "30 days" in passages[0].chunk.text, mode

    (folder / "returns.md").write_text("# Returns\nReturns are accepted within 45 days of delivery.\n")
    report = asyncio.run(kb.ingest("handbook", [folder]))
    assert len(report.updated) == 1 and len(report.skipped) == 1
    texts = [c.text for c in kb.vectors.get("handbook")]
    assert any("45 days" in t for t in texts) and not any("30 days" in t for t in texts)

    forgotten = asyncio.run(kb.forget_match("JANE.DOE@example.com"))
    assert len(forgotten.documents) == 1 and forgotten.chunks >= 1
    assert kb.vectors.find_text("handbook", "jane.doe") == []
    assert [d.source.rsplit("/", 1)[-1] for d in kb.documents("handbook")] == ["returns.md"]
