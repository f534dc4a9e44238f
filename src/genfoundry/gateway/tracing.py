"""The request span: the root of every /v1 request's trace (and the budget warning header).

A pure ASGI middleware, so the span covers a streamed response to its last
byte. It continues the caller's trace when the request carries a W3C
``traceparent`` header, and answers with ``X-Genfoundry-Trace-Id`` so a client
can look its trace up (``genfoundry traces show ID``, or the console).
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from genfoundry.core.tracing import reset_tracer, use_tracer

__all__ = ["BUDGET_HEADER", "TRACE_HEADER", "TraceMiddleware"]

TRACE_HEADER = "x-genfoundry-trace-id"
BUDGET_HEADER = "x-genfoundry-budget-warning"
TRACED_PREFIXES = ("/v1/",)
_propagator = TraceContextTextMapPropagator()


class TraceMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(TRACED_PREFIXES):
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        runtime = getattr(scope["app"].state, "runtime", None)
        tracing = getattr(runtime, "tracing", None)
        root = None
        extra: list[tuple[bytes, bytes]] = []
        if tracing is not None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            parent = _propagator.extract(headers) if "traceparent" in headers else None
            root = tracing.tracer.start_span(
                f"{scope['method']} {scope['path']}", context=parent, kind=SpanKind.SERVER,
                attributes={"http.request.method": scope["method"], "url.path": scope["path"],
                            "user_agent.original": headers.get("user-agent", "")})
            extra.append((TRACE_HEADER.encode(), format(root.get_span_context().trace_id, "032x").encode()))
        status = 0

        async def observed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                added = list(extra)
                if state.get("budget_warning"):
                    added.append((BUDGET_HEADER.encode(), state["budget_warning"].encode("latin-1", "replace")))
                if added:
                    message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        if root is None:
            return await self.app(scope, receive, observed_send)
        token = otel_context.attach(trace.set_span_in_context(root))
        tracer_token = use_tracer(tracing.tracer)
        try:
            await self.app(scope, receive, observed_send)
        except BaseException as exc:
            root.record_exception(exc)
            root.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            root.set_attribute("http.response.status_code", status or 500)
            if status >= 500:
                root.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
            route = scope.get("route")
            if route is not None and getattr(route, "path", None):
                root.update_name(f"{scope['method']} {route.path}")
                root.set_attribute("http.route", route.path)
            if state.get("key_id"):
                root.set_attribute("genfoundry.key.id", state["key_id"])
            root.end()
            reset_tracer(tracer_token)
            otel_context.detach(token)
