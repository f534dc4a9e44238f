"""Spans for every layer, without the layers knowing where traces go.

The gateway installs a tracer for each request (``use_tracer``); code in any
layer marks a step with ``span(...)``. With no tracer installed (the CLI, unit
tests, tracing off) ``span`` costs one context-variable read. Spans nest by the
OpenTelemetry context, which follows ``await`` and ``asyncio.to_thread``.

Example::

    with span("retrieval", {"genfoundry.collection": "handbook"}) as s:
        hits = search(...)
        s.set_attribute("genfoundry.retrieval.hits", len(hits))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind

__all__ = ["SpanKind", "current_trace_id", "reset_tracer", "span", "start_span", "tracer", "use_tracer"]

_tracer: ContextVar[trace.Tracer | None] = ContextVar("genfoundry_tracer", default=None)


def use_tracer(value: trace.Tracer | None) -> Token:
    """Install ``value`` for the current context (a request); returns the token to reset it."""
    return _tracer.set(value)


def reset_tracer(token: Token) -> None:
    _tracer.reset(token)


def tracer() -> trace.Tracer | None:
    return _tracer.get()


@contextmanager
def span(name: str, attributes: dict[str, Any] | None = None, *,
         kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span]:
    """A child of the current span; exceptions are recorded on it and re-raised."""
    current = _tracer.get()
    if current is None:
        yield INVALID_SPAN
        return
    with current.start_as_current_span(name, kind=kind, attributes=_clean(attributes)) as opened:
        yield opened


def start_span(name: str, attributes: dict[str, Any] | None = None, *,
               kind: SpanKind = SpanKind.INTERNAL) -> Span:
    """A span to end by hand (``span.end()``), for steps that outlive one block, such as a stream."""
    current = _tracer.get()
    if current is None:
        return INVALID_SPAN
    return current.start_span(name, kind=kind, attributes=_clean(attributes))


def current_trace_id() -> str | None:
    """The current trace's id in hex, or None outside a trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _clean(attributes: dict[str, Any] | None) -> dict[str, Any] | None:
    # OpenTelemetry drops None values with a warning each time; leave them out.
    if not attributes:
        return None
    return {k: v for k, v in attributes.items() if v is not None}
