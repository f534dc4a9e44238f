"""Provider ``anthropic``: Claude models through the official ``anthropic`` SDK.

The SDK is optional (``pip install 'genfoundry[anthropic]'``) and imported only
when a client is built, so this module imports without it and the hub can list
Anthropic models on machines that never call them.

Anthropic's Messages API differs from OpenAI's in ways this module hides:
system text is a separate field, roles must alternate, tool results are user
content blocks, ``max_tokens`` is required, and there is no JSON mode, so a
JSON schema is enforced by forcing a tool whose input is that schema.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from genfoundry.core.errors import ConfigError, InvalidRequest
from genfoundry.core.settings import Settings
from genfoundry.core.types import (
    Generation,
    GenerationChunk,
    GenerationRequest,
    Message,
    ToolCall,
    Usage,
)
from genfoundry.models.providers import Provider
from genfoundry.models.providers.openai_compat import (
    LoopLocalClient,
    PartialToolCall,
    estimate_tokens,
    mapped_errors,
)
from genfoundry.models.secrets import resolve_secret
from genfoundry.models.spec import ModelSpec

__all__ = ["AnthropicChatModel", "register", "to_anthropic_messages"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_KEY_REFERENCE = "env:ANTHROPIC_API_KEY"
DEFAULT_MAX_TOKENS = 1024  # Anthropic requires max_tokens on every request
DEFAULT_CONCURRENCY = 64
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MAX_RETRIES = 2
NO_KEY = "none"
JSON_TOOL = "json_output"
_FINISH = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
    "max_tokens": "length", "model_context_window_exceeded": "length",
    "tool_use": "tool_calls", "refusal": "content_filter",
}


def _sdk() -> ModuleType:
    try:
        import anthropic
    except ImportError as exc:
        raise ConfigError(
            "the anthropic provider needs the anthropic SDK: pip install 'genfoundry[anthropic]'"
        ) from exc
    return anthropic


# -- request mapping -------------------------------------------------------------

def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError as exc:
        raise InvalidRequest(f"tool call arguments are not JSON: {text[:80]!r}",
                             param="messages") from exc


def _blocks(message: Message) -> list[dict[str, Any]]:
    """Content blocks of one message: text, tool_use or tool_result."""
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id or "",
                 "content": message.content or ""}]
    # Anthropic rejects empty text blocks, so an empty message adds none.
    blocks = [{"type": "text", "text": message.content}] if message.content else []
    for call in message.tool_calls or []:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name,
                       "input": _arguments(call.arguments)})
    return blocks


def to_anthropic_messages(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """The system text, and the turns in the alternating form Anthropic requires."""
    system = "\n\n".join(m.content for m in messages if m.role in ("system", "developer") and m.content)
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role in ("system", "developer"):
            continue
        role = "assistant" if message.role == "assistant" else "user"  # tool results are user turns
        blocks = _blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _tool(definition: dict[str, Any]) -> dict[str, Any]:
    fn = definition.get("function", definition)
    tool = {"name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
    if fn.get("description"):
        tool["description"] = fn["description"]
    return tool


def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, dict):
        return {"type": "tool", "name": choice.get("function", {}).get("name") or choice.get("name")}
    mapped = {"auto": "auto", "required": "any", "none": "none"}.get(choice)
    if mapped is None:
        raise InvalidRequest(f"unknown tool_choice '{choice}'; use auto, required, none or a function",
                             param="tool_choice")
    return {"type": mapped}


def _json_schema(request: GenerationRequest) -> dict[str, Any] | None:
    schema = request.json_schema or ({"type": "object"} if request.json_object else None)
    if schema is not None and schema.get("type") != "object":
        # A tool's input is always an object; OpenAI's strict mode asks the same.
        raise InvalidRequest("JSON output on Anthropic models needs a schema whose type is 'object'",
                             param="response_format")
    return schema


def _tool_params(request: GenerationRequest) -> dict[str, Any]:
    schema = _json_schema(request)
    if schema is not None:
        if request.tools:
            raise InvalidRequest("Anthropic models cannot combine tools with JSON output; "
                                 "send one or the other", param="tools")
        return {"tools": [{"name": JSON_TOOL, "description": "Give the answer as this JSON.",
                           "input_schema": schema}],
                "tool_choice": {"type": "tool", "name": JSON_TOOL}}
    if not request.tools:
        return {}
    params: dict[str, Any] = {"tools": [_tool(t) for t in request.tools]}
    if request.tool_choice is not None:
        params["tool_choice"] = _tool_choice(request.tool_choice)
    return params


def _input_tokens(usage: Any) -> int:
    # Cached prompt tokens are reported apart; the prompt is all of them.
    return sum(getattr(usage, name, None) or 0 for name in (
        "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


@dataclass
class _StreamState:
    """What a stream of Anthropic events has said so far."""

    json_mode: bool
    calls: dict[int, PartialToolCall] = field(default_factory=dict)
    json_blocks: set[int] = field(default_factory=set)
    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)

    def absorb(self, event: Any) -> str:
        """Take one event in; return new text (JSON output streams as text)."""
        kind = event.type
        if kind == "message_start":
            self.usage.prompt_tokens = _input_tokens(event.message.usage)
            self.usage.completion_tokens = event.message.usage.output_tokens or 0
        elif kind == "content_block_start":
            return self._start_block(event.index, event.content_block)
        elif kind == "content_block_delta":
            return self._delta(event.index, event.delta)
        elif kind == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self.usage.completion_tokens = event.usage.output_tokens or self.usage.completion_tokens
            self.usage.prompt_tokens = _input_tokens(event.usage) or self.usage.prompt_tokens
        return ""

    def _start_block(self, index: int, block: Any) -> str:
        if block.type == "tool_use" and self.json_mode and block.name == JSON_TOOL:
            self.json_blocks.add(index)
        elif block.type == "tool_use":
            self.calls[index] = PartialToolCall(id=block.id, name=block.name)
        return getattr(block, "text", "") if block.type == "text" else ""

    def _delta(self, index: int, delta: Any) -> str:
        if delta.type == "text_delta":
            return "" if self.json_mode else delta.text
        if delta.type != "input_json_delta":
            return ""
        if index in self.json_blocks:
            return delta.partial_json
        if index in self.calls:
            self.calls[index].arguments.append(delta.partial_json)
        return ""

    def final_chunk(self) -> GenerationChunk:
        calls = [self.calls[i].done() for i in sorted(self.calls)] or None
        return GenerationChunk(finish_reason=_finish(self.stop_reason, calls, self.json_mode),
                               usage=self.usage, tool_calls=calls)


def _read_content(blocks: list[Any], *, json_mode: bool) -> tuple[str, list[ToolCall] | None]:
    """The text and tool calls of a whole reply; in JSON mode, the forced tool's input as text."""
    if json_mode:
        forced = [b for b in blocks if b.type == "tool_use" and b.name == JSON_TOOL]
        return (json.dumps(forced[0].input) if forced else ""), None
    text = "".join(b.text for b in blocks if b.type == "text")
    calls = [ToolCall(id=b.id, name=b.name, arguments=json.dumps(b.input))
             for b in blocks if b.type == "tool_use"]
    return text, calls or None


def _finish(stop_reason: str | None, calls: list[ToolCall] | None, json_mode: bool) -> str:
    if calls:
        return "tool_calls"
    finish = _FINISH.get(stop_reason or "end_turn", "stop")
    # In JSON mode the forced tool call *is* the answer, not a call for the client.
    return "stop" if json_mode and finish == "tool_calls" else finish


# -- the model -------------------------------------------------------------------

class AnthropicChatModel:
    """Chat and completion with Claude models.

    Options: ``remote_model`` (default the hub name), ``api_key`` (a secret
    reference, default ``env:ANTHROPIC_API_KEY``), ``concurrency``,
    ``max_retries``. ``seed`` is ignored: the API has none.

    Example::

        spec = ModelSpec(name="claude-haiku", provider="anthropic", location="anthropic",
                         options={"remote_model": "claude-3-5-haiku-latest"},
                         capabilities=["chat", "completion", "tools", "json"])
        model = AnthropicChatModel(spec, settings)
        result = await model.generate(GenerationRequest(messages=[Message("user", "Hi")]))
    """

    local = False

    def __init__(self, spec: ModelSpec, settings: Settings | None = None, *,
                 http_client: Any = None) -> None:
        """``http_client``: an async client of the HTTP package the installed SDK is built
        on: ``httpx2.AsyncClient`` for releases built on httpx2 (2.x), else ``httpx.AsyncClient``."""
        self.spec = spec
        self.remote_model = str(spec.options.get("remote_model", spec.name))
        self.concurrency = int(spec.options.get("concurrency", DEFAULT_CONCURRENCY))
        self.base_url = _base_url(spec.location)
        self._timeout = settings.request_timeout if settings is not None else DEFAULT_TIMEOUT_S
        self._http_client = http_client
        self._clients: LoopLocalClient[Any] = LoopLocalClient(self._build_client)

    def _build_client(self) -> Any:
        sdk = _sdk()
        # Always pass a key: with None the SDK would fall back to its own environment lookup.
        api_key = resolve_secret(self.spec.options.get("api_key", DEFAULT_KEY_REFERENCE)) or NO_KEY
        return sdk.AsyncAnthropic(
            api_key=api_key, base_url=self.base_url, timeout=self._timeout,
            max_retries=int(self.spec.options.get("max_retries", DEFAULT_MAX_RETRIES)),
            http_client=self._http_client)

    def _errors(self) -> Any:
        return mapped_errors(_sdk(), model=self.spec.name, location=self.base_url)

    async def warm_up(self) -> None:
        """Check that the SDK is installed and the key resolves, before the first request."""
        self._clients.get()

    async def close(self) -> None:
        client = self._clients.take()
        if client is not None and self._http_client is None:  # a caller's client is theirs to close
            await client.close()

    def count_tokens(self, text: str) -> int:
        """An estimate (about four characters a token); Anthropic's tokenizer is not local."""
        return estimate_tokens(text)

    def _params(self, request: GenerationRequest) -> dict[str, Any]:
        # A plain completion prompt becomes one user turn.
        messages = request.messages if request.is_chat else [Message("user", request.prompt or "")]
        system, turns = to_anthropic_messages(messages or [])
        values = {"system": system or None, "stop_sequences": request.stop or None}
        params = {"model": self.remote_model, "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
                  "messages": turns, **{k: v for k, v in values.items() if v is not None},
                  **_tool_params(request)}
        # Recent SDK releases no longer take these as keywords; the request body
        # still carries them to the models that accept them.
        sampling = {"temperature": request.temperature, "top_p": request.top_p}
        if sampling := {k: v for k, v in sampling.items() if v is not None}:
            params["extra_body"] = sampling
        return params

    async def generate(self, request: GenerationRequest) -> Generation:
        params = self._params(request)
        json_mode = _json_schema(request) is not None
        with self._errors():
            message = await self._clients.get().messages.create(**params)
        text, calls = _read_content(message.content, json_mode=json_mode)
        usage = Usage(prompt_tokens=_input_tokens(message.usage),
                      completion_tokens=message.usage.output_tokens or 0)
        return Generation(text=text, usage=usage, tool_calls=calls,
                          finish_reason=_finish(message.stop_reason, calls, json_mode))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Text deltas, then one last chunk with finish_reason, usage and whole tool calls."""
        params = self._params(request)
        state = _StreamState(json_mode=_json_schema(request) is not None)
        with self._errors():
            events = await self._clients.get().messages.create(**params, stream=True)
            async with events:  # closing it ends the upstream generation when the caller stops
                async for event in events:
                    if text := state.absorb(event):
                        yield GenerationChunk(text=text)
        yield state.final_chunk()


def _base_url(location: str) -> str:
    if location in ("", "anthropic"):
        return DEFAULT_BASE_URL
    # The SDK adds /v1 itself; a location copied with it would become /v1/v1.
    return location.rstrip("/").removesuffix("/v1")


def register(register: Callable[[Provider], None]) -> None:
    register(Provider(name="anthropic", create=AnthropicChatModel,
                      description="Claude models through Anthropic's Messages API."))
