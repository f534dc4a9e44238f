"""Feedback on responses: a rating from 1 to 5 and an optional correction, by response id.

Feedback is stored beside the call (and its trace), and exported as a dataset:
``records`` keeps everything; ``chat`` gives training examples for fine-tuning,
the prompt's messages followed by the corrected answer (or the original answer
where it was rated ``min_rating`` or better and not corrected).

Example::

    add_feedback(store, response_id="chatcmpl-...", rating=2, correction="Paris.")
    rows = export_feedback(store, fmt="chat")
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from genfoundry.core.errors import InvalidRequest, NotFound, PermissionDenied
from genfoundry.core.store import Store, utcnow
from genfoundry.observe.usage import check_range

__all__ = ["FORMATS", "MAX_CORRECTION_CHARS", "RATINGS", "add_feedback", "check_rating", "export_feedback",
           "list_feedback", "write_dataset"]

RATINGS = range(1, 6)
MAX_CORRECTION_CHARS = 100_000
FORMATS = ("records", "chat")


def check_rating(rating: Any) -> int:
    if isinstance(rating, bool) or not isinstance(rating, int) or rating not in RATINGS:
        raise InvalidRequest(f"rating must be a whole number from 1 (bad) to 5 (good); got {rating!r}",
                             param="rating")
    return rating


def add_feedback(store: Store, *, response_id: str, rating: int, correction: str | None = None,
                 comment: str | None = None, key_id: str | None = None, admin: bool = True) -> dict[str, Any]:
    """Attach feedback to a response (any call id the gateway returned). Non-admin keys may rate only
    their own responses."""
    check_rating(rating)
    for name, text in (("correction", correction), ("comment", comment)):
        if text is not None and len(text) > MAX_CORRECTION_CHARS:
            raise InvalidRequest(f"{name} is longer than {MAX_CORRECTION_CHARS} characters", param=name)
    calls = store.tables.calls
    with store.begin() as conn:
        call = conn.execute(sa.select(calls.c.id, calls.c.key_id, calls.c.trace_id)
                            .where(calls.c.id == response_id)).first()
        if call is None:
            raise NotFound(f"no response with id '{response_id}' (the id field of a chat, completion or answer "
                           "response)", param="response_id")
        if not admin and call.key_id != key_id:
            raise PermissionDenied("a key may give feedback only on its own responses", param="response_id")
        row = {"id": uuid.uuid4().hex, "call_id": call.id, "trace_id": call.trace_id, "key_id": key_id,
               "rating": rating, "correction": correction or None, "comment": comment or None,
               "created_at": utcnow()}
        conn.execute(store.tables.feedback.insert().values(**row))
    return _json(row)


def _json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}


def list_feedback(store: Store, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                  rating: int | None = None, model: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Newest first, with the call's model, request and response."""
    check_range(since, until)
    if rating is not None:
        check_rating(rating)
    fb, calls = store.tables.feedback, store.tables.calls
    query = (sa.select(fb, sa.func.coalesce(calls.c.resolved_model, calls.c.model).label("model"),
                       calls.c.endpoint, calls.c.request, calls.c.response, calls.c.app, calls.c.collections)
             .select_from(fb.join(calls, calls.c.id == fb.c.call_id))
             .order_by(fb.c.created_at.desc()).limit(limit))
    if since:
        query = query.where(fb.c.created_at >= since)
    if until:
        query = query.where(fb.c.created_at < until)
    if rating is not None:
        query = query.where(fb.c.rating == rating)
    if model:
        query = query.where(sa.or_(calls.c.model == model, calls.c.resolved_model == model))
    with store.begin() as conn:
        return [_json(dict(r._mapping)) for r in conn.execute(query)]


def _messages(request: dict | None) -> list[dict[str, Any]] | None:
    if not request:
        return None
    if request.get("messages"):
        return [{"role": m.get("role"), "content": m.get("content")} for m in request["messages"]]
    if request.get("prompt") is not None:
        prompt = request["prompt"]
        return [{"role": "user", "content": prompt if isinstance(prompt, str) else json.dumps(prompt)}]
    if request.get("question"):
        return [{"role": "user", "content": request["question"]}]
    return None


def export_feedback(store: Store, *, fmt: str = "records", since: dt.datetime | None = None,
                    until: dt.datetime | None = None, min_rating: int = 4) -> list[dict[str, Any]]:
    """Feedback as dataset rows (see the module docstring); the latest feedback on a response wins."""
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", param="format")
    check_rating(min_rating)
    rows = list_feedback(store, since=since, until=until, limit=10_000_000)
    latest: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: r["created_at"]):
        latest[row["call_id"]] = row
    out = []
    for row in latest.values():
        messages = _messages(row["request"])
        answer = (row["response"] or {}).get("text")
        if fmt == "records":
            out.append({"response_id": row["call_id"], "trace_id": row["trace_id"], "model": row["model"],
                        "app": row["app"], "messages": messages, "response": answer, "rating": row["rating"],
                        "correction": row["correction"], "comment": row["comment"], "at": row["created_at"]})
            continue
        target = row["correction"] or (answer if row["rating"] >= min_rating else None)
        if messages is None or target is None:
            continue  # no content logged (log_content off), or a bad answer nobody corrected
        out.append({"messages": [*messages, {"role": "assistant", "content": target}],
                    "source": {"response_id": row["call_id"], "rating": row["rating"],
                               "corrected": row["correction"] is not None}})
    return out


def write_dataset(rows: list[dict[str, Any]], path: Path) -> int:
    """Write rows as JSON lines (to a temporary file first, so a failed export leaves no half file)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return len(rows)
