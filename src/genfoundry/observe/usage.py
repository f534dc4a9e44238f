"""Tokens, cost and latency from the call log: by key, app, model and day, and over time.

Cost per call is set when the call ends (``models.pricing``): API models from the
hub's per-token prices, self-hosted models from their hourly price and the time
the request held the engine, shared among concurrent requests. So the dollars per
million tokens reported here for a local model follow from its measured
throughput, not from a price someone typed in.

Example::

    since, until = check_range(parse_time("2026-11-01"), None)
    usage_report(store, since=since, until=until, group_by=["model", "day"])
    timeseries(store, since=since, until=until, bucket="hour")
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.store import Store, utcnow

__all__ = ["GROUPS", "MAX_ROWS", "check_range", "cost_since", "parse_time", "timeseries", "usage_report"]

GROUPS = ("day", "key", "app", "model", "endpoint")
BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}
MAX_ROWS = 1_000_000


def parse_time(text: str | None, *, param: str = "since") -> dt.datetime | None:
    """An ISO date or date-time (UTC), or a relative age such as ``7d``, ``12h``, ``30m``."""
    if text is None or text == "":
        return None
    text = text.strip()
    units = {"d": 86400, "h": 3600, "m": 60}
    if text[-1:] in units and text[:-1].isdigit():
        return utcnow() - dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{param}: '{text}' is not a date (2026-11-01, 2026-11-01T12:00) "
                             "or an age (7d, 12h, 30m)", param=param) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def check_range(since: dt.datetime | None, until: dt.datetime | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    if since is not None and until is not None and since >= until:
        raise InvalidRequest(f"invalid date range: since ({since.isoformat()}) must be before until "
                             f"({until.isoformat()})", param="since")
    return since, until


def cost_since(store: Store, key_id: str, since: dt.datetime) -> float:
    calls = store.tables.calls
    total = sa.func.coalesce(sa.func.sum(calls.c.cost_usd), 0.0)
    with store.begin() as conn:
        return float(conn.execute(sa.select(total).where(
            calls.c.key_id == key_id, calls.c.created_at >= since)).scalar_one())


def _rows(store: Store, since, until, *, model: str | None = None) -> list[Any]:
    calls, keys = store.tables.calls, store.tables.api_keys
    query = (sa.select(calls.c.created_at, calls.c.key_id, keys.c.name.label("key_name"), calls.c.app,
                       sa.func.coalesce(calls.c.resolved_model, calls.c.model).label("model"), calls.c.endpoint,
                       calls.c.status, calls.c.prompt_tokens, calls.c.completion_tokens, calls.c.cost_usd,
                       calls.c.latency_ms, calls.c.ttft_ms)
             .select_from(calls.outerjoin(keys, keys.c.id == calls.c.key_id))
             .order_by(calls.c.created_at).limit(MAX_ROWS))
    if since:
        query = query.where(calls.c.created_at >= since)
    if until:
        query = query.where(calls.c.created_at < until)
    if model:
        query = query.where(sa.or_(calls.c.model == model, calls.c.resolved_model == model))
    with store.begin() as conn:
        return conn.execute(query).all()


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _summary(rows: list[Any]) -> dict[str, Any]:
    latencies = [r.latency_ms for r in rows if r.status == "ok"]
    ttfts = [r.ttft_ms for r in rows if r.ttft_ms is not None]
    completion = sum(r.completion_tokens for r in rows)
    priced = [r for r in rows if r.cost_usd is not None]
    cost = sum(r.cost_usd for r in priced)
    priced_tokens = sum(r.prompt_tokens + r.completion_tokens for r in priced)
    return {
        "requests": len(rows), "errors": sum(r.status == "error" for r in rows),
        "prompt_tokens": sum(r.prompt_tokens for r in rows), "completion_tokens": completion,
        "cost_usd": round(cost, 8), "unpriced_requests": len(rows) - len(priced),
        "usd_per_million_tokens": round(cost / priced_tokens * 1e6, 4) if priced_tokens else None,
        "latency_ms_p50": _percentile(latencies, 50), "latency_ms_p95": _percentile(latencies, 95),
        "ttft_ms_p50": _percentile(ttfts, 50),
    }


def usage_report(store: Store, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                 group_by: Sequence[str] = ("model",)) -> dict[str, Any]:
    """Totals and one row per group (``group_by`` any of day, key, app, model, endpoint)."""
    check_range(since, until)
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise InvalidRequest(f"cannot group by {', '.join(unknown)}; use any of {', '.join(GROUPS)}",
                             param="group_by")
    rows = _rows(store, since, until)
    groups: dict[tuple, list[Any]] = defaultdict(list)
    for row in rows:
        values = {"day": row.created_at.date().isoformat(), "key": row.key_name or row.key_id or "(none)",
                  "app": row.app or "(none)", "model": row.model or "(none)", "endpoint": row.endpoint}
        groups[tuple(values[g] for g in group_by)].append(row)
    data = [{**dict(zip(group_by, name)), **_summary(items)} for name, items in sorted(groups.items())]
    return {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None,
            "group_by": list(group_by), "total": _summary(rows), "data": data}


def timeseries(store: Store, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
               bucket: str = "hour", model: str | None = None) -> dict[str, Any]:
    """Requests, tokens, cost and latency per ``bucket`` (minute, hour, day), for charts."""
    check_range(since, until)
    if bucket not in BUCKETS:
        raise InvalidRequest(f"bucket must be one of {', '.join(BUCKETS)}", param="bucket")
    size = BUCKETS[bucket]
    groups: dict[dt.datetime, list[Any]] = defaultdict(list)
    epoch = dt.datetime(1970, 1, 1)
    for row in _rows(store, since, until, model=model):
        seconds = int((row.created_at - epoch).total_seconds()) // size * size
        groups[epoch + dt.timedelta(seconds=seconds)].append(row)
    points = [{"at": at.isoformat(), **_summary(items)} for at, items in sorted(groups.items())]
    return {"bucket": bucket, "model": model, "points": points}
