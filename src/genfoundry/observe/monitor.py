"""Drift checks on live traffic and on a model's behaviour, with their results and alerts stored.

- **Requests**: the user texts of the calls in a recent window against those of a
  baseline window, embedded with the hub's embedding model: an MMD two-sample
  test (permutation p-value) and topic clusters that appeared or grew.
- **Golden prompts**: a fixed set of prompts answered by a model at temperature 0
  and stored (``record_golden``); ``check_golden`` asks again and compares each
  answer with the stored one, so a provider that silently changes its model is
  caught.

Each check stores a ``drift_runs`` row; drift found also records an alert.

Example::

    report = await run_request_drift(store, hub, recent=(day_ago, now), baseline=(week_ago, day_ago))
    await record_golden(store, hub, model="gpt-4o-mini")
    (await check_golden(store, hub, model="gpt-4o-mini"))["drifted"]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from genfoundry.core.errors import InvalidRequest, NotFound
from genfoundry.core.store import Store, utcnow
from genfoundry.core.types import GenerationRequest, Message
from genfoundry.observe.alerts import record_alert
from genfoundry.observe.drift import answer_similarity, golden_verdict, mmd_test, topic_shift
from genfoundry.observe.usage import check_range

__all__ = ["DEFAULT_GOLDEN", "check_golden", "default_windows", "list_drift_runs", "load_golden",
           "record_golden", "request_texts", "run_request_drift"]

DEFAULT_GOLDEN = "default"
MAX_TEXTS = 2000
MIN_TEXTS = 5


def default_windows(now: dt.datetime | None = None, *, recent_hours: float = 24,
                    baseline_days: float = 7) -> tuple[tuple[dt.datetime, dt.datetime], tuple[dt.datetime, dt.datetime]]:
    """The last ``recent_hours`` against the ``baseline_days`` before them."""
    now = now or utcnow()
    split = now - dt.timedelta(hours=recent_hours)
    return (split, now), (split - dt.timedelta(days=baseline_days), split)


def _user_text(request: dict | None) -> str | None:
    if not isinstance(request, dict):
        return None
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content or None
    for field in ("prompt", "question"):
        if isinstance(request.get(field), str):
            return request[field] or None
    return None


def request_texts(store: Store, since: dt.datetime, until: dt.datetime, *, model: str | None = None,
                  limit: int = MAX_TEXTS) -> list[str]:
    """The user texts of calls between ``since`` and ``until`` (newest ``limit``); needs log_content on."""
    check_range(since, until)
    calls = store.tables.calls
    query = (sa.select(calls.c.request).where(calls.c.created_at >= since, calls.c.created_at < until,
                                              calls.c.endpoint.in_(("chat", "completions", "answers")))
             .order_by(calls.c.created_at.desc()).limit(limit))
    if model:
        query = query.where(sa.or_(calls.c.model == model, calls.c.resolved_model == model))
    with store.begin() as conn:
        texts = [_user_text(r.request) for r in conn.execute(query)]
    return [t for t in texts if t and t.strip()]


async def _embed(hub, texts: list[str], model: str) -> np.ndarray:
    embedder = await hub.load_embedding(model)
    vectors = []
    for start in range(0, len(texts), 64):
        vectors.extend((await embedder.embed(texts[start:start + 64])).vectors)
    return np.asarray(vectors, dtype=np.float32)


def _store_run(store: Store, *, kind: str, subject: str, drifted: bool, result: dict) -> str:
    run_id = uuid.uuid4().hex
    with store.begin() as conn:
        conn.execute(store.tables.drift_runs.insert().values(id=run_id, at=utcnow(), kind=kind, subject=subject,
                                                             drifted=drifted, result=result))
    return run_id


async def run_request_drift(store: Store, hub, *, recent: tuple[dt.datetime, dt.datetime],
                            baseline: tuple[dt.datetime, dt.datetime], model: str | None = None,
                            alpha: float = 0.01, permutations: int = 500,
                            embedding_model: str = "default-embedding", on_alert=None) -> dict[str, Any]:
    """Compare the requests of two windows; stores the run and, on drift, alerts."""
    if not 0 < alpha < 1:
        raise InvalidRequest("alpha must be between 0 and 1", param="alpha")
    if baseline[1] > recent[0]:
        raise InvalidRequest("the baseline window must end before the recent window starts", param="baseline")
    base_texts = request_texts(store, *baseline, model=model)
    new_texts = request_texts(store, *recent, model=model)
    for name, texts, window in (("baseline", base_texts, baseline), ("recent", new_texts, recent)):
        if len(texts) < MIN_TEXTS:
            raise InvalidRequest(
                f"the {name} window ({window[0]:%Y-%m-%d %H:%M} to {window[1]:%Y-%m-%d %H:%M}) holds {len(texts)} "
                f"requests with text; drift needs at least {MIN_TEXTS} in each (and log_content on)", param=name)
    started = time.perf_counter()
    vectors = await _embed(hub, base_texts + new_texts, embedding_model)
    base_vecs, new_vecs = vectors[:len(base_texts)], vectors[len(base_texts):]
    test = await asyncio.to_thread(mmd_test, base_vecs, new_vecs, permutations=permutations)
    topics = await asyncio.to_thread(topic_shift, base_vecs, new_vecs, base_texts, new_texts)
    changed = [t for t in topics if t.status in ("new", "grown")]
    drifted = test.p_value < alpha
    subject = f"requests:{model or 'all'}"
    result = {
        "recent": [recent[0].isoformat(), recent[1].isoformat()],
        "baseline": [baseline[0].isoformat(), baseline[1].isoformat()],
        "model": model, "embedding_model": embedding_model, "alpha": alpha,
        "n_baseline": len(base_texts), "n_recent": len(new_texts),
        "mmd": {"statistic": test.statistic, "p_value": test.p_value, "permutations": permutations},
        "topics": [{k: v for k, v in vars(t).items() if k != "recent_indices"} for t in topics],
        "seconds": round(time.perf_counter() - started, 2),
    }
    result["id"] = _store_run(store, kind="requests", subject=subject, drifted=drifted or bool(changed),
                              result=result)
    alerts = []
    if drifted:
        alerts.append(record_alert(store, kind="drift.embedding", severity="warning", subject=subject,
                                   message=f"recent requests differ from the baseline (MMD p={test.p_value:.4f} < "
                                           f"{alpha}; {len(new_texts)} vs {len(base_texts)} requests)",
                                   details={"run": result["id"]}))
    for topic in changed:
        alerts.append(record_alert(store, kind="drift.topic", severity="info", subject=subject,
                                   message=f"topic {' / '.join(topic.terms)} {topic.status}: "
                                           f"{topic.baseline_share:.0%} of baseline, {topic.recent_share:.0%} now",
                                   details={"run": result["id"], "examples": topic.examples}))
    for alert in alerts:
        if on_alert is not None:
            on_alert(alert)
    result["drifted"] = drifted or bool(changed)
    result["alerts"] = alerts
    return result


def load_golden(path: Path | None = None) -> list[dict[str, str]]:
    """Golden prompts: JSON lines with ``id`` and ``prompt`` (default: the shipped set)."""
    if path is None:
        text = resources.files("genfoundry.observe").joinpath("golden/default.jsonl").read_text()
        where = "the built-in golden prompts"
    else:
        if not path.exists():
            raise InvalidRequest(f"no golden prompts file {path}", param="prompts")
        text, where = path.read_text(encoding="utf-8"), str(path)
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{where}, line {number}: not JSON ({exc.msg})", param="prompts") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise InvalidRequest(f"{where}, line {number}: needs a 'prompt' string", param="prompts")
        prompts.append({"id": str(item.get("id") or number), "prompt": item["prompt"]})
    if not prompts:
        raise InvalidRequest(f"{where} holds no prompts", param="prompts")
    return prompts


async def _answer(hub, model: str, prompt: str, max_tokens: int) -> str:
    chat = await hub.load_chat(model)
    result = await chat.generate(GenerationRequest(messages=[Message(role="user", content=prompt)],
                                                   max_tokens=max_tokens, temperature=0))
    return result.text.strip()


async def record_golden(store: Store, hub, *, model: str, prompts: Path | None = None, suite: str = DEFAULT_GOLDEN,
                        max_tokens: int = 64) -> dict[str, Any]:
    """Answer every golden prompt with ``model`` and store the answers as the reference."""
    spec = hub.resolve(model)
    items = load_golden(prompts)
    table = store.tables.golden_answers
    rows = [{"suite": suite, "model": spec.name, "prompt_id": item["id"], "prompt": item["prompt"],
             "answer": await _answer(hub, spec.name, item["prompt"], max_tokens), "created_at": utcnow()}
            for item in items]
    with store.begin() as conn:
        conn.execute(table.delete().where(table.c.suite == suite, table.c.model == spec.name))
        conn.execute(table.insert(), rows)
    return {"suite": suite, "model": spec.name, "prompts": len(rows)}


async def check_golden(store: Store, hub, *, model: str, suite: str = DEFAULT_GOLDEN, threshold: float = 0.9,
                       embedding_model: str = "default-embedding", max_tokens: int = 64,
                       on_alert=None) -> dict[str, Any]:
    """Ask the golden prompts again; an answer is 'changed' when it is not the same text and its embedding's
    cosine similarity to the stored answer is below ``threshold``."""
    spec = hub.resolve(model)
    table = store.tables.golden_answers
    with store.begin() as conn:
        stored = conn.execute(sa.select(table).where(table.c.suite == suite, table.c.model == spec.name)
                              .order_by(table.c.prompt_id)).all()
    if not stored:
        raise NotFound(f"no golden answers of suite '{suite}' for model '{spec.name}'; record them first "
                       f"(`genfoundry drift golden record --model {spec.name}`)", param="model")
    answers = [await _answer(hub, spec.name, row.prompt, max_tokens) for row in stored]
    vectors = await _embed(hub, [row.answer or " " for row in stored] + [a or " " for a in answers], embedding_model)
    items = []
    for i, row in enumerate(stored):
        exact = answers[i] == row.answer
        similarity = 1.0 if exact else answer_similarity(vectors[i], vectors[len(stored) + i])
        items.append({"id": row.prompt_id, "prompt": row.prompt, "stored": row.answer, "answer": answers[i],
                      "similarity": round(float(similarity), 4),
                      "verdict": golden_verdict(similarity, exact, threshold)})
    changed = [item for item in items if item["verdict"] != "same"]
    subject = f"golden:{suite}:{spec.name}"
    result = {"suite": suite, "model": spec.name, "threshold": threshold, "prompts": len(items),
              "changed": len(changed), "recorded_at": stored[0].created_at.isoformat(), "items": items}
    result["id"] = _store_run(store, kind="golden", subject=subject, drifted=bool(changed), result=result)
    result["drifted"] = bool(changed)
    if changed:
        alert = record_alert(store, kind="drift.golden", severity="critical", subject=subject,
                             message=f"model '{spec.name}' answers {len(changed)} of {len(items)} golden prompts "
                                     f"differently than on {stored[0].created_at:%Y-%m-%d}",
                             details={"run": result["id"], "changed": [c["id"] for c in changed]})
        if on_alert is not None:
            on_alert(alert)
    return result


def list_drift_runs(store: Store, *, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    runs = store.tables.drift_runs
    query = sa.select(runs).order_by(runs.c.at.desc()).limit(limit)
    if kind:
        query = query.where(runs.c.kind == kind)
    with store.begin() as conn:
        return [{**dict(r._mapping), "at": r.at.isoformat()} for r in conn.execute(query)]
