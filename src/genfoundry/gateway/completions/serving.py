"""/v1/completions: plain text completion of a prompt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.types import GenerationRequest
from genfoundry.gateway.completions.protocol import CompletionRequest
from genfoundry.gateway.generation import CallContext, GenerationRun, usage_json
from genfoundry.gateway.chat.serving import end_stream, output_screen
from genfoundry.gateway.runtime import Runtime
from genfoundry.guard.engine import OutputScreen

__all__ = ["completion"]



async def _events(ctx: CallContext, run: GenerationRun, include_usage: bool,
                  out: OutputScreen | None) -> AsyncIterator[dict]:
    base = {"id": ctx.id, "object": "text_completion", "created": int(time.time()), "model": run.spec.name}
    chunks = run.chunks()
    try:
        async for chunk in chunks:
            text, finish = chunk.text, chunk.finish_reason
            if out is not None:
                text = out.screen_chunk(text, finish is not None)
                if out.stopped:
                    text, finish = "", "content_filter"
            if text or finish is not None:
                yield {**base, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}
            if finish is not None:
                if include_usage and chunk.usage is not None:
                    yield {**base, "choices": [], "usage": usage_json(chunk.usage)}
                break
    finally:
        await end_stream(run, chunks, out)


def _check_completion(spec) -> None:
    if not spec.can("completion"):
        raise InvalidRequest(f"model '{spec.name}' does not do text completion; use /v1/chat/completions",
                             param="model")


async def completion(rt: Runtime, ctx: CallContext, body: CompletionRequest):
    request = GenerationRequest(
        prompt=body.prompt_text(), max_tokens=body.max_tokens, temperature=body.temperature,
        top_p=body.top_p, stop=body.stop_list(), seed=body.seed)
    run = GenerationRun(rt, ctx, request)
    await run.start(check=_check_completion)
    out = output_screen(run)
    if body.stream:
        return _events(ctx, run, bool(body.stream_options and body.stream_options.include_usage), out)
    try:
        result = await run.collect()
        if out is not None:
            result.text = out.feed(result.text) + out.finish()
            if out.stopped:
                result.text, result.finish_reason = "", "content_filter"
    finally:
        if run.screen is not None:
            await asyncio.shield(rt.guard.finish(run.screen, out))
    return {"id": ctx.id, "object": "text_completion", "created": int(time.time()), "model": run.spec.name,
            "choices": [{"index": 0, "text": result.text, "logprobs": None,
                         "finish_reason": result.finish_reason}],
            "usage": usage_json(result.usage)}
