"""/v1/embeddings."""

from __future__ import annotations

import base64
import struct
import time

from genfoundry.core.errors import GenfoundryError, InvalidRequest
from genfoundry.gateway.embeddings.protocol import MAX_INPUTS, EmbeddingRequest
from genfoundry.gateway.generation import CallContext, check_model_access
from genfoundry.gateway.runtime import Runtime
from genfoundry.models.pricing import call_cost
from genfoundry.observe.calls import CallRecord

__all__ = ["embeddings"]


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


async def embeddings(rt: Runtime, ctx: CallContext, body: EmbeddingRequest) -> dict:
    texts = body.texts()
    spec = None
    try:
        if not texts or len(texts) > MAX_INPUTS:
            raise InvalidRequest(f"input must hold 1 to {MAX_INPUTS} texts", param="input")
        spec = rt.hub.resolve(body.model)
        check_model_access(ctx.key, spec, body.model)
        if rt.guard is not None:
            texts = await rt.guard.screen_embedding(call_id=ctx.id, key=ctx.key, model=spec.name, texts=texts,
                                                    app=ctx.app, label=ctx.label)
        model = await rt.hub.load_embedding(spec.name)
        if body.dimensions is not None and body.dimensions != model.dimensions:
            raise InvalidRequest(f"model '{spec.name}' makes {model.dimensions}-dimensional vectors; "
                                 "omit dimensions or pass that number", param="dimensions")
        clock = rt.clock(spec.name)
        async with rt.admission(model).slot():
            share = clock.begin()
            try:
                result = await model.embed(texts)
            finally:
                attributed = clock.end(share)
    except GenfoundryError as exc:
        _record(rt, ctx, spec, status="error", http_status=exc.status_code, error=exc)
        raise
    cost = call_cost(spec, result.usage, attributed_seconds=attributed)
    _record(rt, ctx, spec, status="ok", http_status=200, tokens=result.usage.prompt_tokens, cost=cost)
    return {"object": "list", "model": spec.name,
            "data": [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                     for i, v in enumerate(result.vectors)],
            "usage": {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.prompt_tokens}}


def _record(rt: Runtime, ctx: CallContext, spec, *, status: str, http_status: int, tokens: int = 0,
            cost: float | None = None, error: GenfoundryError | None = None) -> None:
    latency = time.perf_counter() - ctx.started
    name = spec.name if spec else "unknown"  # a bounded label: not the client's string
    rt.metrics.requests.labels("embeddings", name, status).inc()
    rt.metrics.latency.labels("embeddings", name).observe(latency)
    if tokens:
        rt.metrics.tokens.labels(name, "prompt").inc(tokens)
    rt.recorder.record(CallRecord(
        id=ctx.id, endpoint="embeddings", status=status, http_status=http_status,
        latency_ms=latency * 1000, key_id=ctx.key.id if ctx.key else None, model=ctx.requested_model,
        resolved_model=spec.name if spec else None, provider=spec.provider if spec else None,
        error_type=error.error_type if error else None, error_message=error.message if error else None,
        prompt_tokens=tokens, cost_usd=cost, request=ctx.body))
