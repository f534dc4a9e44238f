"""One generation through the gateway, shared by chat and text completions.

The path reads in order: resolve the model and its fallbacks, wait for a slot
in the model's queue, start the provider's stream (falling back to the next
model if the provider fails before its first token), pass chunks on, and record
the call (tokens, time to first token, latency, cost) however it ends.

Non-streaming requests use the same stream and collect it, so every call gets
a time to first token and one code path is tested.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import StatusCode

from genfoundry.core.errors import (
    ConfigError, GenfoundryError, ModelNotFound, PermissionDenied, ProviderError,
)
from genfoundry.core.tracing import SpanKind, current_trace_id, start_span
from genfoundry.core.types import Generation, GenerationChunk, GenerationRequest, Message, Usage
from genfoundry.gateway.keys import ApiKey
from genfoundry.gateway.runtime import Runtime
from genfoundry.models.pricing import call_cost
from genfoundry.models.protocols import collect_generation
from genfoundry.models.spec import ModelSpec
from genfoundry.observe.calls import CallRecord

__all__ = ["APP_HEADER", "CallContext", "GenerationRun", "SENSITIVITY_HEADER", "candidates", "check_model_access",
           "guard_hints", "record_call", "usage_json"]

log = logging.getLogger(__name__)
FALLBACK_ERRORS = (ProviderError, ConfigError)
RESERVE_TOKENS = 256  # completion tokens reserved from a budget for a call that sets no max_tokens


@dataclass
class CallContext:
    """Who asked for what; filled in as the call proceeds."""

    id: str
    endpoint: str
    key: ApiKey | None
    requested_model: str
    stream: bool
    body: dict[str, Any] | None = None
    started: float = field(default_factory=time.perf_counter)
    app: str | None = None  # X-Genfoundry-App or metadata.app: picks the guard policy
    label: str | None = None  # X-Genfoundry-Sensitivity or metadata.sensitivity
    collections: dict[str, str] | None = None  # collection -> clearance, for requests built from documents


APP_HEADER = "x-genfoundry-app"
SENSITIVITY_HEADER = "x-genfoundry-sensitivity"


def guard_hints(headers, metadata: dict[str, str] | None) -> dict[str, str | None]:
    """The app and sensitivity label a request names (headers first, then ``metadata``)."""
    metadata = metadata or {}
    return {"app": headers.get(APP_HEADER) or metadata.get("app"),
            "label": headers.get(SENSITIVITY_HEADER) or metadata.get("sensitivity")}


def check_model_access(key: ApiKey | None, spec: ModelSpec, requested: str) -> None:
    if key is not None and not (key.may_use(spec.name) or key.may_use(requested)):
        raise PermissionDenied(f"key '{key.name}' may not use model '{requested}'", param="model")


def candidates(rt: Runtime, name: str, key: ApiKey | None, admit=None) -> list[ModelSpec]:
    """The model asked for, then its fallbacks (unknown fallbacks, and those ``admit`` refuses, are skipped)."""
    first = rt.hub.resolve(name)
    check_model_access(key, first, name)
    found = [first]
    for fallback in first.fallbacks:
        try:
            spec = rt.hub.resolve(fallback)
        except ModelNotFound:
            log.warning("fallback '%s' of model '%s' is not registered", fallback, first.name)
            continue
        if admit is not None and not admit(spec):
            log.info("fallback '%s' of model '%s' is not cleared for this request", spec.name, first.name)
            continue
        if key is None or key.may_use(spec.name):
            found.append(spec)
    return found


def usage_json(usage: Usage) -> dict:
    """Usage in the OpenAI shape."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


class GenerationRun:
    """A started generation: ``await run.start()`` then iterate ``run.chunks()``."""

    def __init__(self, rt: Runtime, ctx: CallContext, request: GenerationRequest):
        self.rt = rt
        self.ctx = ctx
        self.request = request
        self.spec: ModelSpec | None = None
        self.fallback_from: str | None = None
        self._stack = AsyncExitStack()
        self._stream: AsyncIterator[GenerationChunk] | None = None
        self._first: GenerationChunk | None = None
        self._ttft: float | None = None
        self._share_start = 0.0
        self._text: list[str] = []
        self._final: GenerationChunk | None = None
        self._recorded = False
        self.screen = None  # the guard's decisions for this request, when the guard runs
        self.trace_id = current_trace_id()
        self._span = None
        self.stopped = False  # the gateway ended the answer (an output rail): a complete call, not a cancel

    async def start(self, check=None, *, guard: bool = True) -> None:
        """Find a model that starts generating; errors here become HTTP errors.

        The guard's input rails run first (they may redact the messages, re-route
        the request to a cleared model, or refuse it); ``check(spec)`` then vets
        the model (capabilities). Their errors are recorded like any other.
        """
        error: GenfoundryError | None = None
        try:
            target, admit = self.ctx.requested_model, None
            if self.screen is None and guard and self.rt.guard is not None:
                prompt = self.request.messages is None
                messages = [Message(role="user", content=self.request.prompt or "")] if prompt \
                    else self.request.messages
                self.screen = await self.rt.guard.screen_input(
                    call_id=self.ctx.id, key=self.ctx.key, model=self.ctx.requested_model,
                    messages=messages, app=self.ctx.app, label=self.ctx.label, collections=self.ctx.collections,
                    tools=self.request.tools)
                if prompt:
                    self.request.prompt = self.screen.messages[0].content
                else:
                    self.request.messages = self.screen.messages
                self.request.tools = self.screen.tools
            if self.screen is not None:
                target, admit = self.screen.model, self.screen.admits
            found = candidates(self.rt, target, self.ctx.key, admit)
            if check is not None:
                check(found[0])
            for spec in found:
                try:
                    await self._start_on(spec)
                    return
                except FALLBACK_ERRORS as exc:
                    await self._stack.aclose()
                    self._stack = AsyncExitStack()
                    log.warning("model '%s' failed (%s); trying the next one", spec.name, exc)
                    error, self.fallback_from = exc, spec.name
            raise error  # every candidate failed
        except BaseException as exc:
            await asyncio.shield(self._stack.aclose())  # give back the slot
            self._record_failure(exc)
            raise

    async def _start_on(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._span = self._open_span(spec)
        try:
            await self._start_model(spec)
        except BaseException as exc:
            self._span.record_exception(exc)
            self._span.set_status(StatusCode.ERROR, type(exc).__name__)
            self._span.end()
            self._span = None
            raise

    def _open_span(self, spec: ModelSpec):
        """The model call's span, named and described per the OpenTelemetry GenAI conventions."""
        request = self.request
        operation = "chat" if request.messages is not None else "text_completion"
        item = start_span(f"{operation} {spec.name}", {
            "gen_ai.operation.name": operation, "gen_ai.provider.name": spec.provider,
            "gen_ai.request.model": self.ctx.requested_model, "gen_ai.response.model": spec.name,
            "gen_ai.request.max_tokens": request.max_tokens, "gen_ai.request.temperature": request.temperature,
            "gen_ai.request.top_p": request.top_p, "gen_ai.response.id": self.ctx.id,
            "genfoundry.stream": self.ctx.stream, "genfoundry.fallback_from": self.fallback_from,
        }, kind=SpanKind.CLIENT)
        if self.rt.settings.trace_content and item.is_recording():
            item.set_attribute("gen_ai.input.messages", json.dumps(
                [{"role": m.role, "content": m.content} for m in request.messages] if request.messages is not None
                else [{"role": "user", "content": request.prompt}]))
        return item

    def _estimate(self, spec: ModelSpec) -> tuple[int, float]:
        """What this call may spend, to reserve from the key's budgets: its prompt (about four characters
        a token) and its max_tokens (256 when unset), at the model's price."""
        request = self.request
        text = request.prompt or "".join(m.content or "" for m in request.messages or [])
        usage = Usage(prompt_tokens=max(1, len(text) // 4), completion_tokens=request.max_tokens or RESERVE_TOKENS)
        return usage.total_tokens, call_cost(spec, usage, attributed_seconds=None) or 0.0

    async def _start_model(self, spec: ModelSpec) -> None:
        tokens, usd = self._estimate(spec)
        if self.rt.quotas.budgeted(self.ctx.key):  # a fallback's reservation replaces the failed model's
            await asyncio.to_thread(self.rt.quotas.reserve, self.ctx.key, self.ctx.id, tokens=tokens, usd=usd)
        model = await self.rt.hub.load_chat(spec.name)
        self._stack.enter_context(self.rt.hub.lease(model))  # a promotion closes this instance only after us
        gate = self.rt.admission(model)
        self.rt.metrics.queue_depth.labels(spec.name).set(gate.waiting + 1)
        waited = time.perf_counter()
        try:
            await self._stack.enter_async_context(gate.slot())
        finally:
            self.rt.metrics.queue_depth.labels(spec.name).set(gate.waiting)
        self._span.set_attribute("genfoundry.queue_wait_ms", (time.perf_counter() - waited) * 1000)
        clock = self.rt.clock(spec.name)
        self._share_start = clock.begin()
        self._stack.callback(self._end_clock, clock)
        self.rt.metrics.running.labels(spec.name).set(gate.running)
        self._stream = model.stream(self.request)
        self._stack.push_async_callback(self._stream.aclose)
        self._first = await self._stream.__anext__()
        self._ttft = time.perf_counter() - self.ctx.started

    def _end_clock(self, clock) -> None:
        tokens = self._final.usage.completion_tokens if self._final and self._final.usage else 0
        self.attributed_seconds = clock.end(self._share_start, completion_tokens=tokens)

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        status = "cancelled"
        try:
            chunk = self._first
            while True:
                self._text.append(chunk.text)
                if chunk.finish_reason is not None:
                    self._final = chunk
                    status = "ok"  # complete: a consumer that stops right after the last chunk cancels nothing
                yield chunk
                if chunk.finish_reason is not None:
                    break
                chunk = await self._stream.__anext__()
            status = "ok"
        except StopAsyncIteration:
            status = "ok"
        except asyncio.CancelledError:
            raise  # the client went away: recorded as cancelled
        except Exception as exc:
            status = "error"
            self._error = exc
            raise
        finally:
            if self.stopped and status == "cancelled":
                status = "ok"
            await asyncio.shield(self._finish(status))

    async def collect(self) -> Generation:
        return await collect_generation(self.chunks())

    async def _finish(self, status: str) -> None:
        await self._stack.aclose()
        usage = (self._final.usage if self._final else None) or Usage()
        cost = call_cost(self.spec, usage, attributed_seconds=getattr(self, "attributed_seconds", None))
        self.rt.quotas.settle(self.ctx.id, tokens=usage.total_tokens, usd=cost or 0.0)  # until it is logged
        error = getattr(self, "_error", None)
        http_status = {"ok": 200, "cancelled": 499}.get(status, getattr(error, "status_code", 500))
        self._record(status=status, http_status=http_status, usage=usage, cost=cost, error=error)
        self._end_span(status, usage, cost, error)
        model = self.spec.name
        metrics = self.rt.metrics
        metrics.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
        metrics.tokens.labels(model, "completion").inc(usage.completion_tokens)
        if cost:
            key = self.ctx.key.id if self.ctx.key else ""  # ids, not names: /metrics needs no key
            metrics.cost.labels(model, key, self.rt.known_app(self.ctx.app)).inc(cost)
        if self._ttft is not None:
            metrics.ttft.labels(model).observe(self._ttft)
        gate = self.rt.admissions.get(model)
        if gate is not None:
            metrics.running.labels(model).set(gate.running)

    def _end_span(self, status: str, usage: Usage, cost: float | None, error) -> None:
        item, self._span = self._span, None
        if item is None:
            return
        if item.is_recording():
            final = self._final
            item.set_attributes({
                "gen_ai.usage.input_tokens": usage.prompt_tokens, "gen_ai.usage.output_tokens": usage.completion_tokens,
                "gen_ai.response.finish_reasons": [final.finish_reason] if final and final.finish_reason else [],
                "genfoundry.status": status})
            if cost is not None:
                item.set_attribute("genfoundry.cost_usd", cost)
            if self._ttft is not None:
                item.set_attribute("genfoundry.ttft_ms", self._ttft * 1000)
            if self.rt.settings.trace_content and status == "ok":
                item.set_attribute("gen_ai.output.messages", json.dumps(
                    [{"role": "assistant", "content": "".join(self._text)}]))
            if error is not None:
                item.record_exception(error)
                item.set_status(StatusCode.ERROR, type(error).__name__)
        item.end()

    def _record_failure(self, exc: BaseException) -> None:
        self.rt.quotas.release([self.ctx.id])  # nothing was spent
        error = exc if isinstance(exc, GenfoundryError) else None
        status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
        self._record(status=status, http_status=error.status_code if error else 499 if status == "cancelled" else 500,
                     usage=Usage(), cost=None, error=error or exc)

    def _record(self, *, status: str, http_status: int, usage: Usage, cost: float | None, error) -> None:
        if self._recorded:
            return
        self._recorded = True
        final = self._final
        response = None
        if status == "ok":
            response = {"text": "".join(self._text), "finish_reason": final.finish_reason if final else None,
                        "tool_calls": [vars(c) for c in final.tool_calls] if final and final.tool_calls else None}
        record_call(self.rt, self.ctx, self.spec, status=status, http_status=http_status, usage=usage, cost=cost,
                    error=error, response=response, ttft=self._ttft, fallback_from=self.fallback_from,
                    trace_id=self.trace_id)


def record_call(rt: Runtime, ctx: CallContext, spec: ModelSpec | None, *, status: str, http_status: int,
                usage: Usage, cost: float | None, error=None, response=None, ttft: float | None = None,
                fallback_from: str | None = None, trace_id: str | None = None) -> None:
    """The call record and request metrics of any model call (generation or embeddings), however it ended."""
    latency = time.perf_counter() - ctx.started
    model = spec.name if spec else None
    # Label values are bounded: a name the hub does not know is "unknown", not the client's string.
    rt.metrics.requests.labels(ctx.endpoint, model or "unknown", status).inc()
    rt.metrics.latency.labels(ctx.endpoint, model or "unknown").observe(latency)
    rt.recorder.record(CallRecord(
        id=ctx.id, endpoint=ctx.endpoint, status=status, http_status=http_status,
        latency_ms=latency * 1000, key_id=ctx.key.id if ctx.key else None,
        model=ctx.requested_model, resolved_model=model, provider=spec.provider if spec else None,
        stream=ctx.stream, error_type=getattr(error, "error_type", type(error).__name__ if error else None),
        error_message=str(error)[:2000] if error else None,
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        ttft_ms=ttft * 1000 if ttft is not None else None, cost_usd=cost,
        fallback_from=fallback_from, request=ctx.body, response=response,
        trace_id=trace_id or current_trace_id(), app=ctx.app,
        collections=sorted(ctx.collections) if ctx.collections else None))
