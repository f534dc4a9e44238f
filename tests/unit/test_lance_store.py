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


def test_first_searches_from_two_threads_at_once(tmp_path):
    """Hybrid search runs dense and BM25 in two threads; in a fresh process both import lancedb at once."""
    import subprocess
    import sys

    store = LanceVectorStore(tmp_path / "vectors")
    store.create_collection("kb", dimensions=8)
    store.add("kb", [make_chunk("refunds take five days", document_id="a")])
    store.close()
    script = f"""
import threading
from genfoundry.knowledge.stores.lance import LanceVectorStore
from genfoundry.knowledge.analysis import analyze
store = LanceVectorStore({str(tmp_path / "vectors")!r})
errors = []
def run(fn):
    try:
        fn()
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=run, args=(lambda: store.search_dense("kb", [1.0] + [0.0] * 7, limit=1),)),
           threading.Thread(target=run, args=(lambda: store.search_text("kb", analyze("refunds"), limit=1),))]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
