"""Proof of routing: from the records alone, did any request reach a model not cleared for it?

Three sources are read: the audit log's ``guard.request`` entries (each says
how sensitive a request was, with evidence, and which model it went to with
that model's clearance at the time), the call log (which model really
answered, fallbacks included), and the model hub (the clearance of a model a
fallback reached). The chain is verified first: a proof over a log that was
edited proves nothing, and the report says so.

Example::

    report = prove(store, hub, since=dt.datetime(2026, 11, 1))
    assert report.ok, report.violations
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa

from genfoundry.core import audit
from genfoundry.core.errors import GenfoundryError
from genfoundry.guard.engine import AUDIT_REQUEST, level_index
from genfoundry.guard.types import SENSITIVITY_LEVELS

__all__ = ["ProofReport", "prove"]

GUARDED_ENDPOINTS = ("chat", "completions", "answers", "summaries", "embeddings")


@dataclass
class ProofReport:
    since: dt.datetime
    until: dt.datetime
    chain_ok: bool = True
    chain_problems: list[str] = field(default_factory=list)
    decisions: int = 0
    outcomes: Counter = field(default_factory=Counter)
    by_model: dict[str, Counter] = field(default_factory=dict)  # model -> sensitivity -> requests
    violations: list[dict] = field(default_factory=list)
    unguarded: list[dict] = field(default_factory=list)  # calls with no guard decision on record

    @property
    def ok(self) -> bool:
        return self.chain_ok and not self.violations and not self.unguarded

    def to_dict(self) -> dict:
        return {"ok": self.ok, "since": self.since.isoformat(), "until": self.until.isoformat(),
                "chain_ok": self.chain_ok, "chain_problems": self.chain_problems,
                "decisions": self.decisions, "outcomes": dict(self.outcomes),
                "by_model": {m: dict(c) for m, c in self.by_model.items()},
                "violations": self.violations, "unguarded": self.unguarded}


def prove(store, hub, *, since: dt.datetime, until: dt.datetime | None = None) -> ProofReport:
    until = until or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    report = ProofReport(since=since, until=until)
    chain = audit.verify(store)
    report.chain_ok, report.chain_problems = chain.ok, chain.problems
    decided: dict[str, dict] = {}
    for entry in audit.entries(store, action=AUDIT_REQUEST, since=since, limit=None):
        if entry.at > until:
            continue
        d = entry.details
        report.decisions += 1
        report.outcomes[d.get("outcome", "?")] += 1
        decided[entry.target] = {**d, "seq": entry.seq, "at": entry.at.isoformat(timespec="seconds")}
        if d.get("outcome") != "sent":
            continue
        if not all(d.get(k) in SENSITIVITY_LEVELS for k in ("sensitivity", "clearance")) or not d.get("model"):
            report.violations.append({"call": entry.target, "audit_seq": entry.seq, "why": "malformed decision record"})
            continue
        report.by_model.setdefault(d["model"], Counter())[d["sensitivity"]] += 1
        if level_index(d["sensitivity"]) > level_index(d["clearance"]):
            report.violations.append(_violation(entry.target, decided[entry.target], d["model"], d["clearance"],
                                                "sent above the model's clearance (dry run or policy let it through)"))
    _check_calls(store, hub, report, decided, since, until)
    return report


def _violation(call_id: str, decision: dict, model: str, clearance: str, why: str) -> dict:
    return {"call": call_id, "audit_seq": decision["seq"], "at": decision["at"], "model": model,
            "clearance": clearance, "sensitivity": decision["sensitivity"], "evidence": decision.get("evidence", []),
            "why": why}


def _check_calls(store, hub, report: ProofReport, decided: dict[str, dict], since, until) -> None:
    """Every call that reached a model must have a decision, and the model that answered must be cleared."""
    calls = store.tables.calls
    query = (sa.select(calls.c.id, calls.c.created_at, calls.c.endpoint, calls.c.resolved_model)
             .where(calls.c.created_at >= since, calls.c.created_at <= until,
                    calls.c.endpoint.in_(GUARDED_ENDPOINTS), calls.c.resolved_model.is_not(None))
             .order_by(calls.c.created_at))
    with store.begin() as conn:
        rows = conn.execute(query).all()
    for call_id, created, endpoint, model in rows:
        decision = decided.get(call_id)
        if decision is None:
            report.unguarded.append({"call": call_id, "at": created.isoformat(timespec="seconds"),
                                     "endpoint": endpoint, "model": model,
                                     "why": "reached a model with no guard decision on record (guard off?)"})
            continue
        if decision.get("outcome") != "sent" or model == decision.get("model") \
                or decision.get("sensitivity") not in SENSITIVITY_LEVELS:
            continue
        try:  # a fallback answered: it must be cleared too
            clearance = hub.resolve(model).clearance
        except GenfoundryError:
            clearance = "public"
        if level_index(decision["sensitivity"]) > level_index(clearance):
            report.violations.append(_violation(call_id, decision, model, clearance,
                                                "a fallback model not cleared for the request answered it"))
