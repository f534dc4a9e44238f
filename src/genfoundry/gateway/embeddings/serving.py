"""/v1/embeddings."""

from __future__ import annotations

import asyncio
import base64
import struct

from genfoundry.core.errors import GenfoundryError, InvalidRequest
from genfoundry.gateway.embeddings.protocol import MAX_INPUTS, EmbeddingRequest
from genfoundry.core.tracing import SpanKind, span
from genfoundry.core.types import Usage
from genfoundry.gateway.generation import CallContext, check_model_access, record_call
from genfoundry.gateway.runtime import Runtime
from genfoundry.models.pricing import call_cost

__all__ = ["embeddings"]


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


async def embeddings(rt: Runtime, ctx: CallContext, body: EmbeddingRequest) -> dict:
    """Embeddings through the same steps as a generation: access, the guard (PII and sensitivity), the
    budget hold, the model's queue, a GenAI span, and one call record however it ends (cancelled too)."""
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
        estimate = Usage(prompt_tokens=sum(len(t) for t in texts) // 4 + 1)
        rt.quotas.reserve(ctx.key, ctx.id, tokens=estimate.total_tokens,
                          usd=call_cost(spec, estimate, attributed_seconds=None) or 0.0)
        clock = rt.clock(spec.name)
        with span(f"embeddings {spec.name}", {
                "gen_ai.operation.name": "embeddings", "gen_ai.provider.name": spec.provider,
                "gen_ai.request.model": ctx.requested_model, "gen_ai.response.model": spec.name,
                "gen_ai.response.id": ctx.id, "genfoundry.inputs": len(texts)}, kind=SpanKind.CLIENT) as item:
            async with rt.admission(model).slot():
                share = clock.begin()
                try:
                    result = await model.embed(texts)
                finally:
                    attributed = clock.end(share)
            item.set_attribute("gen_ai.usage.input_tokens", result.usage.prompt_tokens)
    except GenfoundryError as exc:
        rt.quotas.release([ctx.id])
        record_call(rt, ctx, spec, status="error", http_status=exc.status_code, usage=Usage(), cost=None, error=exc)
        raise
    except asyncio.CancelledError:  # the client went away
        rt.quotas.release([ctx.id])
        record_call(rt, ctx, spec, status="cancelled", http_status=499, usage=Usage(), cost=None)
        raise
    cost = call_cost(spec, result.usage, attributed_seconds=attributed)
    rt.quotas.settle(ctx.id, tokens=result.usage.prompt_tokens, usd=cost or 0.0)
    record_call(rt, ctx, spec, status="ok", http_status=200, usage=Usage(prompt_tokens=result.usage.prompt_tokens),
                cost=cost)
    if result.usage.prompt_tokens:
        rt.metrics.tokens.labels(spec.name, "prompt").inc(result.usage.prompt_tokens)
    return {"object": "list", "model": spec.name,
            "data": [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                     for i, v in enumerate(result.vectors)],
            "usage": {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.prompt_tokens}}
