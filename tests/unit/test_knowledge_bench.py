"""The knowledge benchmark on tiny inputs: the Cranfield reader, the metrics, and every part's JSON."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from genfoundry.core.settings import load_settings
from genfoundry.bench.knowledge import (
    bench_scale,
    load_cranfield,
    ndcg_at,
    recall_at,
    run_knowledge_bench,
)
from genfoundry.models.spec import ModelSpec

REAL_CRANFIELD = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "retrieval" / "cranfield"

DOCS = {
    "1": ("lift of a wing in a slipstream", "the slipstream of a propeller raises the lift of a wing ."),
    "2": ("shear flow past a flat plate", "viscous shear flow past a flat plate at small viscosity ."),
    "3": ("heat transfer in hypersonic flow", "heat transfer to a blunt body in hypersonic flow ."),
    "4": ("buckling of plates", "buckling shear stress of long plates with transverse stiffeners ."),
    "5": ("boundary layer on a cone", "laminar boundary layer on a cone in supersonic flow ."),
    "6": ("propeller noise", "noise of a propeller at high tip speed ."),
    "1401": ("", "ITERA ada di lampung"),  # a stray record some copies append
}
# cran.qry numbers skip (.I 001, 002, 004): cranqrel counts queries 1, 2, 3 in file order.
QUERIES = {"001": "lift of a wing in a propeller slipstream", "002": "heat transfer hypersonic",
           "004": "buckling of stiffened plates", "366": "kampus negeri lampung"}
QRELS = [(1, "1", 1), (1, "6", 3), (1, "2", 4), (2, "3", 2), (2, "5", 3), (3, "4", 1), (3, "2", -1)]


def _write_cranfield(folder: Path) -> Path:
    folder.mkdir()
    records = [f".I {i}\n.T\n{title}\n.A\nsomeone\n.B\nj. ae. scs.\n.W\n{title}\n{text}\n"
               for i, (title, text) in DOCS.items()]
    folder.joinpath("cran.all.1400").write_text("".join(records))
    folder.joinpath("cran.qry").write_text("".join(f".I {i}\n.W\n{q}\n" for i, q in QUERIES.items()))
    folder.joinpath("cranqrel").write_text("".join(f"{q} {d} {g}\n" for q, d, g in QRELS))
    return folder


def _encode(texts: list[str]) -> np.ndarray:
    """Hashed bag of words: texts sharing words point the same way."""
    vectors = np.zeros((len(texts), 32), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            vectors[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % 32] += 1.0
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def test_ndcg_and_recall_match_hand_computed_values():
    gains = {"a": 3.0, "b": 1.0, "c": 2.0}
    ideal = 3 + 2 / math.log2(3) + 1 / 2
    assert ndcg_at(["a", "x", "b"], gains, 3) == pytest.approx((3 + 1 / 2) / ideal)
    assert ndcg_at(["a", "c", "b"], gains, 3) == pytest.approx(1.0)
    assert ndcg_at(["x"], {}, 10) == 0.0
    assert recall_at(["a", "x", "b"], set(gains), 2) == pytest.approx(1 / 3)


def test_cranfield_queries_are_numbered_in_file_order(tmp_path):
    data = load_cranfield(_write_cranfield(tmp_path / "cran"))
    assert [d for d, _, _ in data.docs] == ["1", "2", "3", "4", "5", "6"]
    assert data.ignored == {"documents": 1, "queries": 0}
    assert data.queries[2] == "buckling of stiffened plates"
    assert data.gains(1) == {"1": 3.0, "6": 1.0}  # grade 4 is not relevant
    assert data.gains(3) == {"4": 3.0}  # nor is -1
    assert data.judged() == [1, 2, 3]


def test_missing_data_says_what_to_pass(tmp_path):
    with pytest.raises(Exception, match="pass --data"):
        load_cranfield(tmp_path)


@pytest.mark.skipif(not REAL_CRANFIELD.is_dir(), reason="the Cranfield data is not beside this checkout")
def test_real_cranfield_has_the_published_sizes():
    data = load_cranfield(REAL_CRANFIELD)
    assert (len(data.docs), len(data.queries), len(data.judged())) == (1400, 225, 222)


def test_every_part_on_tiny_inputs(tmp_path):
    settings = load_settings(home=tmp_path / "home", environ={})
    fake = ModelSpec(name="fake-embed", provider="fake", location="memory", capabilities=["embedding"],
                     context_length=2048, options={"dimensions": 32})
    result = run_knowledge_bench(settings, data=_write_cranfield(tmp_path / "cran"), scale_chunks=500,
                                 embedding=fake, encoder=_encode)
    json.dumps(result)
    retrieval = result["retrieval"]
    assert retrieval["queries_judged"] == 3
    for metric in ("ndcg@10", "recall@100"):
        assert set(retrieval[metric]) == {"bm25", "dense", "hybrid"}
        assert all(0 <= v <= 1 for v in retrieval[metric].values())
    assert retrieval["ndcg@10"]["bm25"] > 0.5  # the queries share words with their documents
    assert retrieval["reference_bm25s"]["within_0.01"]
    ingest = result["ingest"]
    assert ingest["chunks"] >= 6 and ingest["same_texts_both_sides"] and min(ingest["ingest_chunks_per_s"]) > 0
    assert len(ingest["direct_chunks_per_s"]) == ingest["rounds"] + 1
    assert len(ingest["ratio_to_direct_per_round"]) == ingest["rounds"] and ingest["ratio_to_direct_median"] > 0
    scale = result["scale"]
    assert scale["chunks"] == 500 and scale["dense_recall@10_vs_exact"] == 1.0  # exact search below the threshold
    assert scale["dense_top10_ms"]["p50"] > 0 and scale["disk_mb"] > 0
    assert not list((tmp_path / "home").glob("bench-knowledge-*"))  # scratch removed


def test_scale_past_the_ann_threshold(tmp_path):
    data = load_cranfield(_write_cranfield(tmp_path / "cran"))
    vectors = _encode([f"{t} {x}" for _, t, x in data.docs])
    result = bench_scale(data, doc_vectors=vectors, query_vectors=_encode(data.queries), chunks=600,
                         workdir=tmp_path, ann_threshold=300)
    assert result["vector_index"]
    assert result["dense_recall@10_vs_exact"] >= 0.5
