"""/v1/chat/completions: from the OpenAI request to a generation and back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.types import Generation, GenerationRequest, Message, ToolCall
from genfoundry.gateway.chat.protocol import ChatCompletionRequest
from genfoundry.gateway.generation import CallContext, GenerationRun, usage_json
from genfoundry.guard.engine import OutputScreen
from genfoundry.gateway.runtime import Runtime
from genfoundry.models.spec import ModelSpec

__all__ = ["chat_completion", "end_stream", "new_call_id", "output_screen", "to_generation_request"]


def to_generation_request(body: ChatCompletionRequest) -> GenerationRequest:
    messages = [
        Message(role=m.role, content=m.text(), name=m.name, tool_call_id=m.tool_call_id,
                tool_calls=[ToolCall(id=t.id, name=t.function.name, arguments=t.function.arguments)
                            for t in m.tool_calls] if m.tool_calls else None)
        for m in body.messages
    ]
    fmt = body.response_format
    schema = None
    if fmt is not None and fmt.type == "json_schema":
        schema = fmt.json_schema.schema_ or {"type": "object"}
    return GenerationRequest(
        messages=messages, max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature, top_p=body.top_p, stop=body.stop_list(), seed=body.seed,
        tools=[t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None,
        tool_choice=body.tool_choice, json_schema=schema,
        json_object=fmt is not None and fmt.type == "json_object")


def _check_capabilities(spec: ModelSpec, request: GenerationRequest) -> None:
    if not spec.can("chat"):
        raise InvalidRequest(f"model '{spec.name}' does not chat; use /v1/completions", param="model")
    if request.tools and request.tool_choice != "none" and not spec.can("tools"):
        raise InvalidRequest(f"model '{spec.name}' does not support tools", param="tools")
    if (request.json_schema is not None or request.json_object) and not spec.can("json"):
        raise InvalidRequest(f"model '{spec.name}' cannot constrain output to JSON", param="response_format")


def _tool_calls_json(calls: list[ToolCall] | None) -> list[dict] | None:
    if not calls:
        return None
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls]



def _response(ctx: CallContext, model: str, result: Generation) -> dict:
    message = {"role": "assistant", "content": result.text if not result.tool_calls or result.text else None}
    if result.tool_calls:
        message["tool_calls"] = _tool_calls_json(result.tool_calls)
    return {"id": ctx.id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason,
                         "logprobs": None}],
            "usage": usage_json(result.usage)}


async def _events(ctx: CallContext, run: GenerationRun, include_usage: bool,
                  out: OutputScreen | None) -> AsyncIterator[dict | bytes]:
    created = int(time.time())
    model = run.spec.name
    base = {"id": ctx.id, "object": "chat.completion.chunk", "created": created, "model": model}
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None, "logprobs": None}]}
    # The common event, a piece of text, is framed from a template: one small json.dumps of the text
    # per token instead of building and encoding the whole chunk object (this runs for every token).
    head = ("data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"content": ""}}]},
                                  separators=(",", ":")).removesuffix('""}}]}')).encode()
    tail = b'},"finish_reason":null,"logprobs":null}]}\n\n'
    chunks = run.chunks()
    try:
        async for chunk in chunks:
            text = chunk.text
            if out is not None:
                text = out.screen_chunk(text, chunk.finish_reason is not None)
                if out.stopped:  # a blocking output rail fired: end the answer here
                    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter",
                                                "logprobs": None}]}
                    break
            if text and not chunk.tool_calls:
                yield head + json.dumps(text).encode() + tail
            elif chunk.tool_calls:
                delta: dict = {"content": text} if text else {}
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(_tool_calls_json(chunk.tool_calls))]
                yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]}
            if chunk.finish_reason is not None:
                yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": chunk.finish_reason,
                                            "logprobs": None}]}
                if include_usage and chunk.usage is not None:
                    yield {**base, "choices": [], "usage": usage_json(chunk.usage)}
    finally:
        await end_stream(run, chunks, out)


async def end_stream(run: GenerationRun, chunks, out: OutputScreen | None, extra=None) -> None:
    """Close a run's chunk stream (stopping generation if it is still going) and write the guard's
    last decisions; run from a stream's ``finally``, so a client that went away still gets both."""
    await chunks.aclose()
    if run.screen is not None:
        await asyncio.shield(run.rt.guard.finish(run.screen, out, extra))


def output_screen(run: GenerationRun) -> OutputScreen | None:
    """The output rails for a started run, or None when nothing needs to look at the output."""
    if run.screen is None:
        return None
    out = run.rt.guard.output(run.screen, run.ctx.key)
    return None if out.idle else out


async def chat_completion(rt: Runtime, ctx: CallContext, body: ChatCompletionRequest):
    """Start the generation; return a response dict, or an event iterator when streaming."""
    if body.model.startswith("rag:"):  # grounded in a collection: answer with citations
        from genfoundry.gateway.knowledge.serving import grounded_chat_completion

        return await grounded_chat_completion(rt, ctx, body)
    request = to_generation_request(body)
    run = GenerationRun(rt, ctx, request)
    await run.start(check=lambda spec: _check_capabilities(spec, request))
    out = output_screen(run)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _events(ctx, run, include_usage, out)
    try:
        result = await run.collect()
        if out is not None:
            result.text = out.feed(result.text) + out.finish() if result.text else result.text
            if out.stopped:
                result.text, result.finish_reason = "", "content_filter"
    finally:
        if run.screen is not None:
            await asyncio.shield(rt.guard.finish(run.screen, out))
    return _response(ctx, run.spec.name, result)


def new_call_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
