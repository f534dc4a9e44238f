"""/v1/completions: plain text completion of a prompt."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.types import GenerationRequest
from genfoundry.gateway.completions.protocol import CompletionRequest
from genfoundry.gateway.generation import CallContext, usage_json
from genfoundry.gateway.lifecycle import Lifecycle
from genfoundry.gateway.runtime import Runtime

__all__ = ["completion"]


async def _events(ctx: CallContext, life: Lifecycle, include_usage: bool) -> AsyncIterator[dict]:
    base = {"id": ctx.id, "object": "text_completion", "created": int(time.time()), "model": life.spec.name}
    async for piece in life.pieces():
        if piece.text or piece.finish_reason is not None:
            yield {**base, "choices": [{"index": 0, "text": piece.text, "logprobs": None,
                                        "finish_reason": piece.finish_reason}]}
        if piece.finish_reason is not None and include_usage and piece.usage is not None:
            yield {**base, "choices": [], "usage": usage_json(piece.usage)}


def _check_completion(spec) -> None:
    if not spec.can("completion"):
        raise InvalidRequest(f"model '{spec.name}' does not do text completion; use /v1/chat/completions",
                             param="model")


async def completion(rt: Runtime, ctx: CallContext, body: CompletionRequest):
    request = GenerationRequest(
        prompt=body.prompt_text(), max_tokens=body.max_tokens, temperature=body.temperature,
        top_p=body.top_p, stop=body.stop_list(), seed=body.seed)
    life = Lifecycle(rt, ctx, request, check=_check_completion)
    await life.start()
    if body.stream:
        return _events(ctx, life, bool(body.stream_options and body.stream_options.include_usage))
    result = await life.whole()
    return {"id": ctx.id, "object": "text_completion", "created": int(time.time()), "model": life.spec.name,
            "choices": [{"index": 0, "text": result.text, "logprobs": None,
                         "finish_reason": result.finish_reason}],
            "usage": usage_json(result.usage)}
