"""What a reader may see of recorded content: calls, feedback and traces built from collections.

Admins (and the local operator) see everything. A developer reading the call log,
feedback or a trace sees the content of calls built from collections it may not
read redacted: the metadata (model, tokens, cost, latency) stays, the prompts,
passages and answers go.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from genfoundry.gateway.keys import ApiKey

__all__ = ["REDACTED", "hidden_collections", "redact_calls", "redact_trace"]

REDACTED = "[redacted: built from a collection this key may not read]"
_CONTENT_ATTRIBUTES = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.prompt", "gen_ai.completion")


def hidden_collections(rt, key: ApiKey | None, names) -> set[str]:
    """The collections among ``names`` the key may not read (a collection since deleted counts as hidden)."""
    names = {n for n in names or () if n}
    if not names or key is None or key.role == "admin":
        return set()
    kb = rt.knowledge()
    hidden = set()
    for name in names:
        found = kb.registry.find(name)
        if found is None or not kb.registry.may(found, "read", role=key.role, key_id=key.id):
            hidden.add(name)
    return hidden


def redact_calls(rt, key: ApiKey | None, rows: list[dict[str, Any]],
                 fields: tuple[str, ...] = ("request", "response")) -> list[dict[str, Any]]:
    """Rows with their content fields replaced where they were built from hidden collections."""
    # One decision per collection for the whole listing, not a store lookup per row.
    hidden = hidden_collections(rt, key, {n for row in rows for n in row.get("collections") or ()})
    for row in rows:
        if hidden & set(row.get("collections") or ()):
            for name in fields:
                if row.get(name) is not None:
                    row[name] = REDACTED
            row["redacted"] = True
    return rows


def redact_trace(rt, key: ApiKey | None, trace: dict[str, Any]) -> dict[str, Any]:
    """A trace with content attributes, and its call's and feedback's content, removed when any call of
    the trace used a collection the key may not read."""
    calls = rt.store.tables.calls
    with rt.store.begin() as conn:
        used = [r[0] for r in conn.execute(sa.select(calls.c.collections).where(
            calls.c.trace_id == trace["trace_id"]))]
    if not hidden_collections(rt, key, {n for names in used for n in (names or [])}):
        return trace

    def scrub(span: dict[str, Any]) -> None:
        attributes = span.get("attributes") or {}
        for name in list(attributes):
            if name in _CONTENT_ATTRIBUTES:
                attributes[name] = REDACTED
        for event in span.get("events") or []:
            if isinstance(event, dict) and isinstance(event.get("attributes"), dict):
                for name in list(event["attributes"]):
                    if name in _CONTENT_ATTRIBUTES:
                        event["attributes"][name] = REDACTED
        for child in span.get("children") or []:
            scrub(child)
    for span in trace["spans"]:
        scrub(span)
    for root in trace["tree"]:
        scrub(root)
    if trace.get("call"):
        for name in ("request", "response"):
            if trace["call"].get(name) is not None:
                trace["call"][name] = REDACTED
    for item in trace.get("feedback") or []:
        for name in ("correction", "comment"):
            if item.get(name):
                item[name] = REDACTED
    trace["redacted"] = True
    return trace
