"""The LanceDB backend passes the VectorStore conformance tests, plus what only it does."""

from __future__ import annotations

import pytest

from genfoundry.knowledge.stores.lance import LanceVectorStore
from genfoundry.testing.vector_store import VectorStoreConformance, make_chunk


class TestLanceVectorStore(VectorStoreConformance):
    @pytest.fixture()
    def vector_store(self, tmp_path):
        store = LanceVectorStore(tmp_path / "vectors")
        yield store
        store.close()


def test_forgotten_text_leaves_the_disk(tmp_path):
    """After delete + optimize no file under the store holds the deleted text (no old versions)."""
    store = LanceVectorStore(tmp_path / "vectors")
    store.create_collection("kb", dimensions=8)
    store.add("kb", [make_chunk("keep this sentence", document_id="a")])
    store.add("kb", [make_chunk("secret zebra-7731 code", document_id="b")])
    store.optimize("kb")
    assert _disk_holds(tmp_path / "vectors", b"zebra-7731")
    store.delete("kb", where={"document_id": "b"})
    store.optimize("kb")
    assert not _disk_holds(tmp_path / "vectors", b"zebra-7731")
    assert store.count("kb") == 1


def test_vector_index_past_threshold(tmp_path):
    store = LanceVectorStore(tmp_path / "vectors", ann_threshold=300)
    store.create_collection("kb", dimensions=8)
    import math
    chunks = [make_chunk(f"c {i}", document_id=f"d{i}", vector=[math.cos(i * (k + 1) * 0.1) for k in range(8)])
              for i in range(400)]
    store.add("kb", chunks)
    store.optimize("kb")
    assert store._has_vector_index(store._table("kb"))
    assert store.search_dense("kb", chunks[17].vector, limit=3)[0].chunk.id == chunks[17].id


def _disk_holds(folder, needle: bytes) -> bool:
    return any(needle in path.read_bytes() for path in folder.rglob("*") if path.is_file())
