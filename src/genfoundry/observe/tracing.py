"""Traces: one per request, spans stored in the SQL store and, when configured, sent over OTLP.

Spans follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``
attributes on the model call), so Langfuse, Phoenix, Jaeger or Grafana Tempo
read them as they read any other GenAI trace. Each gateway builds its own
``TracerProvider`` (nothing global), with two batch processors: one writes to
the ``spans`` table, the other exports over OTLP/HTTP when ``otlp_endpoint`` is
set. Export happens on background threads; a request never waits for it.

Example::

    tracing = Tracing(settings, store)
    with use(tracing.tracer), span("retrieval"):
        ...
    tracing.flush()
    get_trace(store, trace_id)["spans"]  # the span tree
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from genfoundry import __version__
from genfoundry.core.errors import InvalidRequest, NotFound
from genfoundry.core.settings import Settings
from genfoundry.core.store import Store, utcnow

__all__ = ["StoreSpanExporter", "Tracing", "get_trace", "list_traces", "parse_headers", "prune_spans",
           "span_row"]

log = logging.getLogger(__name__)
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def _time(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).replace(tzinfo=None)


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def span_row(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    attributes = {k: _json_value(v) for k, v in (span.attributes or {}).items()}
    parent = span.parent
    if parent is not None and parent.is_remote:  # the caller's span (traceparent): not in our store
        attributes["genfoundry.remote_parent_id"] = format(parent.span_id, "016x")
        parent = None
    status = span.status.status_code
    return {
        "span_id": format(context.span_id, "016x"),
        "trace_id": format(context.trace_id, "032x"),
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name.lower(),
        "start_at": _time(span.start_time),
        "duration_ms": (span.end_time - span.start_time) / 1e6,
        "status": {StatusCode.ERROR: "error", StatusCode.OK: "ok"}.get(status, "unset"),
        "status_message": span.status.description,
        "attributes": attributes,
        "events": [{"name": e.name, "at": _time(e.timestamp).isoformat(),
                    "attributes": {k: _json_value(v) for k, v in (e.attributes or {}).items()}}
                   for e in span.events],
    }


class StoreSpanExporter(SpanExporter):
    """Writes finished spans to the ``spans`` table."""

    def __init__(self, store: Store):
        self.store = store

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [span_row(s) for s in spans]
        try:
            with self.store.begin() as conn:
                conn.execute(self.store.tables.spans.insert(), rows)
        except Exception as exc:  # a span lost is better than a dead exporter thread
            log.error("could not store %d spans: %s", len(rows), exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def parse_headers(text: str | None) -> dict[str, str]:
    """``"key=value,key2=value2"`` (the OTEL_EXPORTER_OTLP_HEADERS format) as a dict."""
    headers: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise InvalidRequest(f"otlp_headers: '{part.strip()}' is not key=value")
        headers[name.strip()] = value.strip()
    return headers


class Tracing:
    """The gateway's tracer provider: spans to the store, and to OTLP when ``otlp_endpoint`` is set."""

    def __init__(self, settings: Settings, store: Store, *, delay_ms: int = 1000):
        self.settings = settings
        self.provider = TracerProvider(resource=Resource.create({
            "service.name": settings.service_name, "service.version": __version__}))
        self.provider.add_span_processor(BatchSpanProcessor(
            StoreSpanExporter(store), schedule_delay_millis=delay_ms, max_queue_size=8192))
        self.otlp = None
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = settings.otlp_endpoint.rstrip("/")
            if not endpoint.endswith("/v1/traces"):
                endpoint += "/v1/traces"
            self.otlp = OTLPSpanExporter(endpoint=endpoint, headers=parse_headers(settings.otlp_headers),
                                         timeout=10)
            self.provider.add_span_processor(BatchSpanProcessor(self.otlp, schedule_delay_millis=delay_ms))
        self.tracer = self.provider.get_tracer("genfoundry", __version__)

    def flush(self, timeout_ms: int = 10_000) -> bool:
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.provider.shutdown()


def prune_spans(store: Store, *, older_than_days: int) -> int:
    """Delete spans that started more than ``older_than_days`` ago; returns how many."""
    cutoff = utcnow() - dt.timedelta(days=older_than_days)
    with store.begin() as conn:
        return conn.execute(store.tables.spans.delete().where(store.tables.spans.c.start_at < cutoff)).rowcount


def _iso(value):
    return value.isoformat() if isinstance(value, dt.datetime) else value


def list_traces(store: Store, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
                model: str | None = None, status: str | None = None, app: str | None = None,
                key_id: str | None = None, path: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest traces first: the request span joined with its call (model, tokens, cost)."""
    if since and until and since >= until:
        raise InvalidRequest(f"since ({since.isoformat()}) must be before until ({until.isoformat()})",
                             param="since")
    spans, calls = store.tables.spans, store.tables.calls
    query = (sa.select(spans.c.trace_id, spans.c.name, spans.c.start_at, spans.c.duration_ms, spans.c.status,
                       spans.c.attributes, calls.c.id.label("call_id"), calls.c.model, calls.c.resolved_model,
                       calls.c.status.label("call_status"), calls.c.prompt_tokens, calls.c.completion_tokens,
                       calls.c.cost_usd, calls.c.key_id, calls.c.app)
             .select_from(spans.outerjoin(calls, calls.c.trace_id == spans.c.trace_id))
             .where(spans.c.parent_id.is_(None))
             .order_by(spans.c.start_at.desc()).limit(limit))
    if since:
        query = query.where(spans.c.start_at >= since)
    if until:
        query = query.where(spans.c.start_at < until)
    if model:
        query = query.where(sa.or_(calls.c.model == model, calls.c.resolved_model == model))
    if app:
        query = query.where(calls.c.app == app)
    if key_id:
        query = query.where(calls.c.key_id == key_id)
    if status == "error":
        query = query.where(spans.c.status == "error")
    elif status:
        query = query.where(calls.c.status == status)
    with store.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    out = []
    for row in rows:
        attributes = row.pop("attributes") or {}
        if path and not str(attributes.get("url.path", "")).startswith(path):
            continue
        row["http_status"] = attributes.get("http.response.status_code")
        row["path"] = attributes.get("url.path")
        out.append({k: _iso(v) for k, v in row.items()})
    return out


def get_trace(store: Store, trace_id: str) -> dict[str, Any]:
    """Every span of one trace, as a flat list in start order and as a tree."""
    trace_id = trace_id.strip().lower()
    if not TRACE_ID.match(trace_id):
        raise InvalidRequest(f"'{trace_id}' is not a trace id (32 hex digits)", param="trace_id")
    spans = store.tables.spans
    with store.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            sa.select(spans).where(spans.c.trace_id == trace_id).order_by(spans.c.start_at))]
        call = conn.execute(sa.select(store.tables.calls).where(store.tables.calls.c.trace_id == trace_id)).first()
        feedback = [dict(r._mapping) for r in conn.execute(sa.select(store.tables.feedback).where(
            store.tables.feedback.c.trace_id == trace_id).order_by(store.tables.feedback.c.created_at))]
    if not rows:
        raise NotFound(f"no trace '{trace_id}' (spans are written about a second after a request ends, "
                       "and pruned after trace_retention_days)", param="trace_id")
    flat = [{k: _iso(v) for k, v in row.items()} for row in rows]
    by_id = {s["span_id"]: {**s, "children": []} for s in flat}
    roots = []
    for node in by_id.values():
        parent = by_id.get(node["parent_id"]) if node["parent_id"] else None
        (parent["children"] if parent else roots).append(node)
    return {"trace_id": trace_id, "spans": flat, "tree": roots,
            "call": {k: _iso(v) for k, v in call._mapping.items()} if call else None,
            "feedback": [{k: _iso(v) for k, v in f.items()} for f in feedback]}
