"""/v1/chat/completions: from the OpenAI request to a generation and back."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.types import Generation, GenerationRequest, Message, ToolCall
from genfoundry.gateway.chat.protocol import ChatCompletionRequest
from genfoundry.gateway.generation import CallContext, usage_json
from genfoundry.gateway.lifecycle import Lifecycle, virtual_model
from genfoundry.gateway.runtime import Runtime
from genfoundry.gateway.sse import frame
from genfoundry.models.spec import ModelSpec

__all__ = ["chat_completion", "chat_events", "chat_response", "new_call_id", "to_generation_request"]


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



def chat_response(ctx: CallContext, model: str, result: Generation, extra: dict | None = None) -> dict:
    """A whole chat completion in the OpenAI shape (``extra``: fields hooks added, e.g. citations)."""
    message = {"role": "assistant", "content": result.text if not result.tool_calls or result.text else None}
    if result.tool_calls:
        message["tool_calls"] = _tool_calls_json(result.tool_calls)
    return {"id": ctx.id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason,
                         "logprobs": None}],
            "usage": usage_json(result.usage), **(extra or {})}


async def chat_events(ctx: CallContext, life: Lifecycle, include_usage: bool,
                      model: str | None = None) -> AsyncIterator[dict | bytes]:
    """A chat completion stream in the OpenAI shape (the hooks' fields ride on the finishing chunk)."""
    created = int(time.time())
    base = {"id": ctx.id, "object": "chat.completion.chunk", "created": created, "model": model or life.spec.name}
    # The role chunk goes out in one write with the first piece, which the model has made already
    # (start() waits for it): the client reads its first token in one go.
    opening = frame({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                          "finish_reason": None, "logprobs": None}]})
    async for event in _piece_events(base, life, include_usage):
        if opening:
            event, opening = opening + (event if isinstance(event, bytes) else frame(event)), b""
        yield event
    if opening:
        yield opening


async def _piece_events(base: dict, life: Lifecycle, include_usage: bool) -> AsyncIterator[dict | bytes]:
    # The common event, a piece of text, is framed from a template: one small json.dumps of the text
    # per token instead of building and encoding the whole chunk object (this runs for every token).
    head = ("data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"content": ""}}]},
                                  separators=(",", ":")).removesuffix('""}}]}')).encode()
    tail = b'},"finish_reason":null,"logprobs":null}]}\n\n'
    async for piece in life.pieces():
        text = piece.text
        if text and not piece.tool_calls:
            yield head + json.dumps(text).encode() + tail
        elif piece.tool_calls:
            delta: dict = {"content": text} if text else {}
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(_tool_calls_json(piece.tool_calls))]
            yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]}
        if piece.finish_reason is not None:
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": piece.finish_reason,
                                        "logprobs": None}], **piece.extra}
            if include_usage and piece.usage is not None:
                yield {**base, "choices": [], "usage": usage_json(piece.usage)}


async def chat_completion(rt: Runtime, ctx: CallContext, body: ChatCompletionRequest):
    """Start the generation; return a response dict, or an event iterator when streaming."""
    handler = virtual_model(body.model)
    if handler is not None:  # rag:NAME and the like: not a hub entry
        return await handler(rt, ctx, body)
    request = to_generation_request(body)
    life = Lifecycle(rt, ctx, request, check=lambda spec: _check_capabilities(spec, request))
    await life.start()
    if body.stream:
        return chat_events(ctx, life, bool(body.stream_options and body.stream_options.include_usage))
    return chat_response(ctx, life.spec.name, await life.whole())


def new_call_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
