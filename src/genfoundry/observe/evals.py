"""Evaluation runs: a named suite against a model, its results stored, two runs compared.

Suites (each returns metrics, numbers only, and per-item rows):

- ``retrieval``: a labelled question set against a collection; hit@1, recall@5
  and MRR@10, where a hit is a retrieved chunk of the expected source file.
- ``answers``: grounded answers to the same set: answered right (every
  expected keyword in the answer), cited right (expected file among the
  citations), declined when the documents do not hold the answer; faithfulness
  (the groundedness rail's share of supported sentences) and relevance (cosine of
  question and answer embeddings).
- ``guard``: the injection rail on labelled texts (``{"text", "label": 1|0}``
  lines, or the public sets in a data folder): precision, recall, F1, FPR.
- ``bias``: the counterfactual bias probe against the model.

Example::

    ctx = EvalContext(settings=settings, store=store, hub=hub, target="default")
    run = await run_eval(ctx, "retrieval", {"collection": "sample"})
    compare_runs(store, run["id"], other_id)["metrics"]
"""

from __future__ import annotations

import csv
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from genfoundry.core.errors import InvalidRequest, NotFound
from genfoundry.core.settings import Settings
from genfoundry.core.store import Store, utcnow

__all__ = ["EvalContext", "SUITES", "compare_runs", "get_run", "list_runs", "load_labelled", "run_eval"]

Suite = Callable[["EvalContext", dict], Awaitable[tuple[dict[str, float], dict[str, Any]]]]


@dataclass
class EvalContext:
    settings: Settings
    store: Store
    hub: Any  # genfoundry.models.hub.ModelHub
    target: str = "default"
    _kb: Any = field(default=None, repr=False)

    def knowledge(self):
        if self._kb is None:
            from genfoundry.guard.documents import CollectionPii
            from genfoundry.knowledge.base import KnowledgeBase

            self._kb = KnowledgeBase(settings=self.settings, store=self.store, hub=self.hub,
                                     pii=CollectionPii(self.settings, self.store))
        return self._kb

    def close(self) -> None:
        if self._kb is not None:
            self._kb.close()


def _questions(options: dict) -> list[dict]:
    from genfoundry.knowledge import SAMPLE_QUESTIONS

    path = Path(options.get("questions") or SAMPLE_QUESTIONS)
    if not path.exists():
        raise InvalidRequest(f"no question file {path}", param="questions")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{path}, line {number}: not JSON ({exc.msg})", param="questions") from None
        if not isinstance(item, dict) or not isinstance(item.get("question"), str):
            raise InvalidRequest(f"{path}, line {number}: needs a 'question' string", param="questions")
        items.append(item)
    if not items:
        raise InvalidRequest(f"{path} holds no questions", param="questions")
    return items


def _matches(source: str, expected: str) -> bool:
    return source.endswith(Path(expected).name)


async def _retrieval(ctx: EvalContext, options: dict) -> tuple[dict, dict]:
    from genfoundry.knowledge.retrieval import RetrievalOptions

    collection = options.get("collection", "sample")
    kb = ctx.knowledge()
    kb.registry.get(collection)  # unknown collection: a clear error before any work
    rows = []
    for item in _questions(options):
        if not item.get("source"):
            continue  # unanswerable: nothing to retrieve
        passages = await kb.retrieve(collection, item["question"], RetrievalOptions(limit=10))
        sources = [p.chunk.source for p in passages]
        rank = next((i + 1 for i, s in enumerate(sources) if _matches(s, item["source"])), None)
        rows.append({"question": item["question"], "expected": item["source"], "rank": rank,
                     "hit@1": rank == 1, "top": sources[:3]})
    if not rows:
        raise InvalidRequest("the question set has no answerable questions (with a 'source')", param="questions")
    metrics = {"hit@1": statistics.fmean(r["rank"] == 1 for r in rows),
               "recall@5": statistics.fmean(r["rank"] is not None and r["rank"] <= 5 for r in rows),
               "mrr@10": statistics.fmean(1 / r["rank"] if r["rank"] else 0.0 for r in rows),
               "questions": len(rows)}
    return metrics, {"collection": collection, "items": rows}


async def _embed(ctx: EvalContext, texts: list[str]) -> np.ndarray:
    embedder = await ctx.hub.load_embedding("default-embedding")
    vectors = np.asarray((await embedder.embed([t or " " for t in texts])).vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


async def _answers(ctx: EvalContext, options: dict) -> tuple[dict, dict]:
    from genfoundry.apps.answer import NOT_FOUND, GroundedAnswerer
    from genfoundry.guard.groundedness import check_groundedness
    from genfoundry.knowledge.retrieval import RetrievalOptions

    collection = options.get("collection", "sample")
    kb = ctx.knowledge()
    kb.registry.get(collection)
    answerer = GroundedAnswerer(kb=kb, hub=ctx.hub, settings=ctx.settings)
    rows = []
    for item in _questions(options):
        answer = await answerer.answer(collection, item["question"], model=ctx.target, options=RetrievalOptions(),
                                       use_cache=False)
        text = answer.text
        row: dict[str, Any] = {"question": item["question"], "expected": item.get("answer"), "answer": text,
                               "latency_ms": round(answer.latency_ms, 1)}
        if item.get("answer") is None:
            row["declined"] = text == NOT_FOUND or "could not find" in text.lower()
        else:
            row["right"] = all(k.lower() in text.lower() for k in item.get("keywords", []))
            row["cited"] = any(_matches(c.source, item.get("source", "")) for c in answer.citations)
            if answer.found and answer.citations:
                row["faithfulness"] = check_groundedness(text, [c.text for c in answer.citations]).supported_share
        rows.append(row)
    answered = [r for r in rows if r["expected"] is not None]
    vectors = await _embed(ctx, [r["question"] for r in answered] + [r["answer"] for r in answered])
    for i, row in enumerate(answered):
        row["relevance"] = round(float(vectors[i] @ vectors[len(answered) + i]), 4)
    unanswerable = [r for r in rows if r["expected"] is None]
    faithful = [r["faithfulness"] for r in answered if "faithfulness" in r]
    metrics = {
        "answered_right": statistics.fmean(r["right"] for r in answered) if answered else 0.0,
        "cited_right": statistics.fmean(r["cited"] for r in answered) if answered else 0.0,
        "declined_unanswerable": statistics.fmean(r["declined"] for r in unanswerable) if unanswerable else 0.0,
        "faithfulness": statistics.fmean(faithful) if faithful else 0.0,
        "relevance": statistics.fmean(r["relevance"] for r in answered) if answered else 0.0,
        "latency_ms_p50": statistics.median(r["latency_ms"] for r in rows),
        "questions": len(rows),
    }
    return metrics, {"collection": collection, "model": ctx.hub.resolve(ctx.target).name, "items": rows}


def load_labelled(options: dict) -> list[tuple[str, int]]:
    """Labelled texts for the guard suite: ``data`` (JSON lines) or ``data_dir`` (the public sets)."""
    if options.get("data"):
        path = Path(options["data"])
        if not path.exists():
            raise InvalidRequest(f"no labelled file {path}", param="data")
        pairs = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"{path}, line {number}: not JSON ({exc.msg})", param="data") from None
            if not isinstance(item, dict) or not isinstance(item.get("text"), str) or item.get("label") not in (0, 1):
                raise InvalidRequest(f"{path}, line {number}: needs 'text' and 'label' (1 attack, 0 benign)",
                                     param="data")
            pairs.append((item["text"], item["label"]))
        return pairs
    if options.get("data_dir"):
        from genfoundry.guard.datasets import benign_sets

        folder = Path(options["data_dir"])
        attacks = folder / "injection" / "giskard_prompt_injections.csv"
        if not attacks.exists():
            raise InvalidRequest(f"{folder} does not hold injection/giskard_prompt_injections.csv", param="data_dir")
        with attacks.open(encoding="utf-8") as f:
            pairs = [(row["prompt"], 1) for row in csv.DictReader(f)]
        return pairs + [(t, 0) for texts in benign_sets(folder).values() for t in texts]
    raise InvalidRequest("the guard suite needs labelled texts: --data FILE.jsonl ({\"text\", \"label\"} lines) "
                         "or --data-dir with the public evaluation sets", param="data")


async def _guard(ctx: EvalContext, options: dict) -> tuple[dict, dict]:
    from genfoundry.guard.injection import InjectionDetector

    pairs = load_labelled(options)
    detector = InjectionDetector()
    flagged = [bool(detector.check(text)) for text, _ in pairs]
    tp = sum(f and y == 1 for f, (_, y) in zip(flagged, pairs))
    fp = sum(f and y == 0 for f, (_, y) in zip(flagged, pairs))
    fn = sum(not f and y == 1 for f, (_, y) in zip(flagged, pairs))
    tn = len(pairs) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    metrics = {"precision": precision, "recall": recall,
               "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
               "fpr": fp / (fp + tn) if fp + tn else 0.0, "attacks": tp + fn, "benign": fp + tn}
    items = [{"text": text[:200], "label": y, "flagged": f} for (text, y), f in zip(pairs, flagged)]
    return metrics, {"rail": "input.injection", "items": items}


async def _bias(ctx: EvalContext, options: dict) -> tuple[dict, dict]:
    from genfoundry.core.types import GenerationRequest, Message
    from genfoundry.guard.bias import run_bias_probe

    chat = await ctx.hub.load_chat(ctx.target)

    async def generate(prompt: str) -> str:
        request = GenerationRequest(messages=[Message(role="user", content=prompt)],
                                    max_tokens=int(options.get("max_tokens", 60)), temperature=0.0, seed=0)
        return (await chat.generate(request)).text

    report = (await run_bias_probe(generate, limit=int(options.get("limit", 2)))).to_dict()
    metrics: dict[str, float] = {"answers": report["answers"]}
    for dimension, figures in report["dimensions"].items():
        metrics[f"{dimension}.mean_dissimilarity"] = figures["mean_dissimilarity"]
        metrics[f"{dimension}.refusal_gap"] = figures["refusal_gap"]
    return metrics, {"model": ctx.hub.resolve(ctx.target).name, "dimensions": report["dimensions"],
                     "items": report["worst_pairs"]}


SUITES: dict[str, Suite] = {"answers": _answers, "bias": _bias, "guard": _guard, "retrieval": _retrieval}


def _row_json(row: dict) -> dict:
    return {**row, "at": row["at"].isoformat() if hasattr(row["at"], "isoformat") else row["at"]}


async def run_eval(ctx: EvalContext, suite: str, options: dict | None = None) -> dict[str, Any]:
    """Run ``suite``, store the run (also when it fails: status 'error'), return it."""
    if suite not in SUITES:
        raise InvalidRequest(f"unknown suite '{suite}'; the suites are {', '.join(sorted(SUITES))}", param="suite")
    options = dict(options or {})
    target = ctx.hub.resolve(ctx.target).name if suite in ("answers", "bias") else \
        options.get("collection", "sample") if suite == "retrieval" else "guard:input.injection"
    started = time.perf_counter()
    row = {"id": uuid.uuid4().hex, "at": utcnow(), "suite": suite, "target": target}
    try:
        metrics, details = await SUITES[suite](ctx, options)
    except InvalidRequest:
        raise  # bad options: nothing was run
    except Exception as exc:
        row.update(status="error", duration_s=time.perf_counter() - started, metrics={},
                   details={"error": f"{type(exc).__name__}: {exc}", "options": _plain(options)})
        _store(ctx.store, row)
        raise
    metrics = {k: round(float(v), 6) for k, v in metrics.items()}
    row.update(status="ok", duration_s=round(time.perf_counter() - started, 3), metrics=metrics,
               details={**details, "options": _plain(options)})
    _store(ctx.store, row)
    return _row_json(row)


def _plain(options: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}


def _store(store: Store, row: dict) -> None:
    with store.begin() as conn:
        conn.execute(store.tables.eval_runs.insert().values(**row))


def list_runs(store: Store, *, suite: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first, without per-item details."""
    runs = store.tables.eval_runs
    query = (sa.select(runs.c.id, runs.c.at, runs.c.suite, runs.c.target, runs.c.status, runs.c.duration_s,
                       runs.c.metrics).order_by(runs.c.at.desc()).limit(limit))
    if suite:
        query = query.where(runs.c.suite == suite)
    with store.begin() as conn:
        return [_row_json(dict(r._mapping)) for r in conn.execute(query)]


def get_run(store: Store, run_id: str) -> dict[str, Any]:
    runs = store.tables.eval_runs
    with store.begin() as conn:
        row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
    if row is None:
        raise NotFound(f"no evaluation run '{run_id}'; `genfoundry eval list` shows them", param="run_id")
    return _row_json(dict(row._mapping))


def _item_key(item: dict) -> str | None:
    return item.get("question") or item.get("text")


def compare_runs(store: Store, a_id: str, b_id: str) -> dict[str, Any]:
    """Two runs of one suite side by side: every metric with B - A, and the items whose outcome changed."""
    a, b = get_run(store, a_id), get_run(store, b_id)
    if a["suite"] != b["suite"]:
        raise InvalidRequest(f"run {a_id} is a '{a['suite']}' run and {b_id} a '{b['suite']}' run; compare runs "
                             "of one suite", param="b")
    names = list(dict.fromkeys([*a["metrics"], *b["metrics"]]))
    metrics = []
    for name in names:
        x, y = a["metrics"].get(name), b["metrics"].get(name)
        metrics.append({"name": name, "a": x, "b": y,
                        "delta": round(y - x, 6) if x is not None and y is not None else None})
    outcome = ("right", "cited", "declined", "rank", "flagged")
    a_items = {_item_key(i): i for i in a["details"].get("items", []) if _item_key(i)}
    changed = []
    for item in b["details"].get("items", []):
        before = a_items.get(_item_key(item))
        if before is None:
            continue
        diff = {k: [before.get(k), item.get(k)] for k in outcome if before.get(k) != item.get(k)}
        if diff:
            changed.append({"item": _item_key(item), "changes": diff})
    meta = ("id", "at", "suite", "target", "status", "duration_s")
    return {"a": {k: a[k] for k in meta}, "b": {k: b[k] for k in meta}, "metrics": metrics,
            "items_changed": changed}
