"""The evaluation gate, promotion and rollback.

``promote(job, target)`` evaluates the job's adapter (the candidate) and the
model it would replace (the incumbent: what ``target`` serves now, else the
base) side by side, on the same items:

- ``test``: the dataset version's test split; each row's prompt is answered
  greedily and scored against its reference by token F1 (SQuAD's) and exact
  match after normalisation;
- ``answers``: the observe layer's grounded-answer suite on a collection
  (answered right, cited right, unanswerable questions declined);
- ``safety``: every output of both models through the guard's toxicity
  detector; the candidate may not produce more flagged outputs than the incumbent.

The candidate is promoted only when its score (``test``: mean F1; ``answers``:
the mean of answered right and declined) beats the incumbent's by ``margin`` on
every quality suite and it passes ``safety``. The report is kept with the job
either way. ``force`` promotes a loser and is audited as such. Promotion points
``target`` in the hub at the adapter (the gateway switches engines without
dropping a request, see :class:`genfoundry.models.hub.ModelHub`); ``rollback``
restores the spec it replaced.

Example::

    report = await promote(ctx, "ftjob-...", target="support", suites=["test"], margin=0.02)
    rollback(store, hub, "support")
"""

from __future__ import annotations

import collections
import re
import statistics
import string
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from genfoundry.core import audit
from genfoundry.core.errors import Conflict, InvalidRequest, ModelNotFound, NotFound
from genfoundry.core.settings import Settings
from genfoundry.core.store import Store, utcnow
from genfoundry.core.types import Generation, GenerationRequest, Message
from genfoundry.models.spec import ModelSpec

__all__ = ["GATE_SUITES", "GateContext", "evaluate", "f1_score", "history", "promote", "rollback", "gate_items"]

GATE_SUITES = ("test", "answers", "safety")
DEFAULT_MARGIN = 0.01
MAX_TEST_ITEMS = 200


@dataclass
class GateContext:
    settings: Settings
    store: Store
    hub: Any
    # Generation through the gateway's lifecycle (guard, call log, trace, cost) when given; else the hub.
    generate: Callable[[str, GenerationRequest], Awaitable[Generation]] | None = None

    async def answer(self, model: str, request: GenerationRequest) -> tuple[str, str | None]:
        """The model's text, or '' and the reason when the guard or the provider refused the item."""
        from genfoundry.core.errors import GenfoundryError
        try:
            if self.generate is not None:
                return (await self.generate(model, request)).text, None
            return (await (await self.hub.load_chat(model)).generate(request)).text, None
        except GenfoundryError as exc:
            return "", f"{type(exc).__name__}: {exc}"[:300]


def _normalise(text: str) -> list[str]:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def f1_score(prediction: str, reference: str) -> float:
    """SQuAD's token F1 between two answers (0 when either is empty and the other not)."""
    pred, ref = _normalise(prediction), _normalise(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def gate_items(rows: list[dict]) -> list[dict]:
    """(request, reference) pairs from test rows in any record format fine-tuning reads."""
    items = []
    for row in rows:
        messages = row.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
                and messages[-1].get("role") == "assistant":
            history_ = [Message(role=m["role"], content=m.get("content") or "") for m in messages[:-1]
                        if isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")]
            items.append({"messages": history_, "reference": messages[-1].get("content") or "",
                          "prompt_text": history_[-1].content if history_ else ""})
        elif isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
            items.append({"prompt": row["prompt"], "reference": row["completion"], "prompt_text": row["prompt"]})
    return items[:MAX_TEST_ITEMS]


def _request(item: dict, max_tokens: int) -> GenerationRequest:
    if "messages" in item:
        return GenerationRequest(messages=item["messages"], temperature=0.0, max_tokens=max_tokens, seed=0)
    return GenerationRequest(prompt=item["prompt"], temperature=0.0, max_tokens=max_tokens, seed=0)


async def _test_suite(ctx: GateContext, name: str, items: list[dict]) -> tuple[dict, list[dict]]:
    rows = []
    for item in items:
        budget = min(256, 2 * max(8, len(item["reference"].split())) + 16)
        text, refused = await ctx.answer(name, _request(item, budget))
        row = {"prompt": item["prompt_text"][-300:], "reference": item["reference"], "output": text,
               "f1": round(f1_score(text, item["reference"]), 4) if refused is None else 0.0,
               "exact": refused is None and _normalise(text) == _normalise(item["reference"])}
        if refused:
            row["refused"] = refused
        rows.append(row)
    metrics = {"f1": statistics.fmean(r["f1"] for r in rows) if rows else 0.0,
               "exact_match": statistics.fmean(r["exact"] for r in rows) if rows else 0.0, "items": len(rows)}
    return metrics, rows


async def _answers_suite(ctx: GateContext, name: str, options: dict) -> tuple[dict, list[dict]]:
    from genfoundry.observe.evals import EvalContext, run_eval
    ectx = EvalContext(settings=ctx.settings, store=ctx.store, hub=ctx.hub, target=name)
    try:
        run = await run_eval(ectx, "answers", options)
    finally:
        ectx.close()
    m = run["metrics"]
    score = statistics.fmean([m["answered_right"], m["declined_unanswerable"]])
    return {**m, "score": score, "eval_run": run["id"]}, run["details"]["items"]


def _flagged(outputs: list[str]) -> int:
    from genfoundry.guard.toxicity import ToxicityDetector
    detector = ToxicityDetector()
    return sum(1 for text in outputs if detector.check(text))


async def evaluate(ctx: GateContext, candidate: str, incumbent: str, *, suites: list[str], items: list[dict],
                   answers_options: dict | None = None, margin: float = DEFAULT_MARGIN) -> dict:
    """Both models on each suite; the decision and why."""
    unknown = [s for s in suites if s not in GATE_SUITES]
    if unknown:
        raise InvalidRequest(f"unknown gate suite(s) {unknown}; choose from {', '.join(GATE_SUITES)}", param="suites")
    if not set(suites) & {"test", "answers"}:
        raise InvalidRequest("the gate needs a quality suite ('test' or 'answers'); 'safety' alone "
                             "cannot show the candidate is better", param="suites")
    report: dict[str, Any] = {"candidate": candidate, "incumbent": incumbent, "margin": margin, "suites": {}}
    outputs: dict[str, list[str]] = {candidate: [], incumbent: []}
    reasons: list[str] = []
    started = time.perf_counter()
    for suite in [s for s in suites if s != "safety"]:
        side: dict[str, Any] = {}
        for who in (incumbent, candidate):
            if suite == "test":
                if not items:
                    raise InvalidRequest("the dataset version has no test rows to gate on; add a test split "
                                         "or gate on the 'answers' suite", param="suites")
                metrics, rows = await _test_suite(ctx, who, items)
                score = metrics["f1"]
                outputs[who] += [r["output"] for r in rows]
            else:
                metrics, rows = await _answers_suite(ctx, who, answers_options or {})
                score = metrics["score"]
                outputs[who] += [r["answer"] for r in rows]
            side[who] = {"score": round(score, 4), "metrics": {k: v for k, v in metrics.items()},
                         "items": rows[:50]}
        gain = side[candidate]["score"] - side[incumbent]["score"]
        passed = gain >= margin
        if not passed:
            reasons.append(f"{suite}: candidate {side[candidate]['score']:.3f} vs incumbent "
                           f"{side[incumbent]['score']:.3f} (needs +{margin})")
        report["suites"][suite] = {"candidate": side[candidate], "incumbent": side[incumbent],
                                   "gain": round(gain, 4), "passed": passed}
    if "safety" in suites:
        flagged = {who: _flagged(texts) for who, texts in outputs.items()}
        passed = flagged[candidate] <= flagged[incumbent]
        if not passed:
            reasons.append(f"safety: {flagged[candidate]} candidate outputs flagged vs {flagged[incumbent]}")
        report["suites"]["safety"] = {"candidate": flagged[candidate], "incumbent": flagged[incumbent],
                                      "outputs": len(outputs[candidate]), "passed": passed}
    report["passed"] = not reasons and bool(report["suites"])
    report["reasons"] = reasons
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _record_gate(ctx: GateContext, job_id: str, report: dict) -> None:
    from genfoundry.tune.jobs import TuneJobs
    jobs = TuneJobs(ctx.settings, ctx.store, ctx.hub)
    job = jobs.get(job_id)
    result = dict(job.get("result") or {})
    result["gates"] = [*result.get("gates", []), report][-10:]
    t = ctx.store.tables.tune_jobs
    with ctx.store.begin() as conn:
        conn.execute(t.update().where(t.c.id == job_id).values(result=result))
    jobs.event(job_id, "gate", "gate passed" if report["passed"] else "gate refused: " + "; ".join(report["reasons"]),
               {"passed": report["passed"], "suites": {k: {kk: vv for kk, vv in v.items() if kk in ("gain", "passed")}
                                                       for k, v in report["suites"].items()}})


async def promote(ctx: GateContext, job_id: str, *, target: str | None = None, suites: list[str] | None = None,
                  margin: float = DEFAULT_MARGIN, force: bool = False, answers_options: dict | None = None,
                  actor: str = "local") -> dict:
    """Gate the job's adapter against what ``target`` serves and, if it wins (or ``force``), serve it."""
    from genfoundry.data.datasets import Datasets
    from genfoundry.tune.jobs import TuneJobs

    jobs = TuneJobs(ctx.settings, ctx.store, ctx.hub)
    job = jobs.get(job_id)
    if job["status"] != "succeeded":
        raise Conflict(f"job '{job_id}' is {job['status']}; only a succeeded job can be promoted", param="job_id")
    candidate = job["result"]["fine_tuned_model"]
    candidate_spec = ctx.hub.resolve(candidate)
    target = target or (job["suffix"] or f"{job['base_model']}-tuned")
    try:
        current = ctx.hub.resolve(target)
        incumbent = current.name
        if current.name != target:
            raise InvalidRequest(f"'{target}' is an alias of model '{current.name}'; promote to a model name",
                                 param="target")
    except ModelNotFound:
        current, incumbent = None, job["base_model"]
    suites = suites or ["test", "safety"]
    items = []
    if "test" in suites:
        rows = Datasets(ctx.settings, ctx.store).rows(job["dataset"], job["dataset_version"], split="test")
        items = gate_items(rows)
    try:
        report = await evaluate(ctx, candidate, incumbent, suites=suites, items=items,
                                answers_options=answers_options, margin=margin)
    finally:
        # The candidate's engine was started for the gate only; left running it would compete with the
        # engines that serve (a promotion starts the target's own).
        ctx.hub.unload(candidate)
    report.update(job_id=job_id, target=target, forced=bool(force and not report["passed"]), at=utcnow().isoformat())
    _record_gate(ctx, job_id, report)
    if not report["passed"] and not force:
        audit.record(ctx.store, action="tune.gate_refused", actor=actor, target=target,
                     details={"job": job_id, "reasons": report["reasons"]})
        report["promoted"] = False
        return report
    spec = candidate_spec.model_copy(update={"name": target, "aliases": current.aliases if current else [],
                                             "description": f"{target}: {candidate_spec.description}"})
    if current is not None:
        spec.fallbacks = current.fallbacks
    ctx.hub.add(ModelSpec.model_validate(spec.model_dump()), replace=True)
    promotion = {"id": uuid.uuid4().hex, "model": target, "job_id": job_id,
                 "previous_spec": current.model_dump(mode="json") if current else None,
                 "spec": spec.model_dump(mode="json"), "report": _summary(report), "forced": report["forced"],
                 "actor": actor, "at": utcnow()}
    with ctx.store.begin() as conn:
        conn.execute(ctx.store.tables.tune_promotions.insert().values(**promotion))
    audit.record(ctx.store, action="tune.promote_forced" if report["forced"] else "tune.promote", actor=actor,
                 target=target, details={"job": job_id, "adapter": candidate_spec.options.get("adapter"),
                                         "reasons": report["reasons"]})
    jobs.event(job_id, "status", f"promoted to '{target}'" + (" (forced past the gate)" if report["forced"] else ""),
               {"promoted": target})
    report["promoted"] = True
    report["promotion_id"] = promotion["id"]
    return report


def _summary(report: dict) -> dict:
    """The report without per-item rows (those stay with the job)."""
    suites = {}
    for name, suite in report["suites"].items():
        if name == "safety":
            suites[name] = suite
            continue
        suites[name] = {"gain": suite["gain"], "passed": suite["passed"],
                        "candidate": suite["candidate"]["score"], "incumbent": suite["incumbent"]["score"]}
    return {k: v for k, v in report.items() if k != "suites"} | {"suites": suites}


def rollback(store: Store, hub: Any, model: str, *, actor: str = "local") -> dict:
    """Serve what ``model`` served before its latest promotion (or remove it, if that promotion made it)."""
    t = store.tables.tune_promotions
    with store.begin() as conn:
        row = conn.execute(sa.select(t).where(t.c.model == model, t.c.rolled_back_at.is_(None))
                           .order_by(t.c.at.desc()).limit(1)).mappings().first()
    if row is None:
        raise NotFound(f"model '{model}' has no promotion to roll back; `genfoundry tune history` lists them",
                       param="model")
    if row["previous_spec"] is None:
        hub.remove(model)
        restored = None
    else:
        restored = ModelSpec.model_validate(row["previous_spec"])
        hub.add(restored, replace=True)
    with store.begin() as conn:
        conn.execute(t.update().where(t.c.id == row["id"]).values(rolled_back_at=utcnow()))
    audit.record(store, action="tune.rollback", actor=actor, target=model,
                 details={"promotion": row["id"], "job": row["job_id"]})
    return {"model": model, "rolled_back": row["id"], "job_id": row["job_id"],
            "now_serving": (restored.options.get("tune_job") or restored.location) if restored else None,
            "removed": restored is None}


def history(store: Store, model: str | None = None, limit: int = 50) -> list[dict]:
    t = store.tables.tune_promotions
    query = sa.select(t.c.id, t.c.model, t.c.job_id, t.c.report, t.c.forced, t.c.actor, t.c.at,
                      t.c.rolled_back_at).order_by(t.c.at.desc()).limit(limit)
    if model:
        query = query.where(t.c.model == model)
    with store.begin() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]
