"""Provider ``openai_compat``: any server that speaks the OpenAI API.

OpenAI itself, vLLM, Ollama, llama.cpp's ``llama-server`` and TGI all answer
``/chat/completions``, ``/completions`` and ``/embeddings`` in the same shape, so
one class covers chat, plain completion and embeddings for all of them, through
the official ``openai`` client.

Upstream failures are sorted by who can fix them: a server that is down, slow,
rate-limited or rejects *our* configured key is a :class:`ProviderError` (the
gateway then falls back to another model); a request the server finds invalid
is the client's :class:`InvalidRequest`, and a prompt that does not fit is
:class:`ContextLengthExceeded`.

A few helpers here (:func:`mapped_errors`, :class:`LoopLocalClient`,
:class:`PartialToolCall`, :func:`estimate_tokens`) are shared with the
``anthropic`` provider, whose SDK has the same shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Generic, TypeVar

import httpx
import openai

from genfoundry.core.errors import (
    ConfigError,
    ContextLengthExceeded,
    GenfoundryError,
    InvalidRequest,
    ProviderError,
)
from genfoundry.core.settings import Settings
from genfoundry.core.types import (
    Embeddings,
    Generation,
    GenerationChunk,
    GenerationRequest,
    Message,
    ToolCall,
    Usage,
)
from genfoundry.models.providers import Provider
from genfoundry.models.secrets import resolve_secret
from genfoundry.models.spec import ModelSpec

__all__ = [
    "LoopLocalClient",
    "OpenAICompatModel",
    "PartialToolCall",
    "estimate_tokens",
    "inspect",
    "mapped_errors",
    "register",
]

log = logging.getLogger(__name__)
DEFAULT_CONCURRENCY = 64
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_EMBED_BATCH = 512
INSPECT_TIMEOUT_S = 3.0
CHARS_PER_TOKEN = 4
# The SDK insists on a key; servers without auth (Ollama, llama-server) ignore it.
NO_KEY = "none"
# How servers say "the prompt does not fit": OpenAI's code, vLLM's and
# Anthropic's messages, llama-server's error type.
_CONTEXT_OVERFLOW_MARKS = (
    "context_length_exceeded", "maximum context length", "exceed_context_size",
    "context size", "prompt is too long",
)

T = TypeVar("T")


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token), not the server's tokenizer."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


# -- errors (shared with the anthropic provider) ---------------------------------

def _error_fields(body: object, fallback: str) -> tuple[str, str]:
    """The message of an upstream error body, and its code and type joined in one string."""
    inner = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(inner, dict):
        # A proxy's HTML error page, say: a snippet is enough to tell what happened.
        text = " ".join(body.split()) if isinstance(body, str) else ""
        return (text[:300] if text else fallback), ""
    kind = " ".join(str(inner[k]) for k in ("code", "type") if inner.get(k) is not None)
    return str(inner.get("message") or fallback), kind


def _upstream_error(*, status: int, message: str, kind: str, model: str) -> GenfoundryError:
    where = f"the upstream server of model '{model}'"
    if status in (401, 403):
        # Our caller did nothing wrong: the key in the hub entry is the problem. The
        # upstream message is left out: some echo part of the key back.
        return ProviderError(
            f"{where} rejected the configured API key ({status}); "
            "check the model's api_key reference")
    if status == 404:
        return ProviderError(
            f"{where} answered 404 ({message}); check the model's location and remote_model")
    if status < 400 or status in (408, 429) or status >= 500:
        # Below 400: an error event inside a stream that had started fine.
        return ProviderError(f"{where} failed ({status}): {message}")
    if any(mark in f"{kind} {message}".lower() for mark in _CONTEXT_OVERFLOW_MARKS):
        return ContextLengthExceeded(
            f"{message} (from {where}); shorten the prompt or lower max_tokens")
    return InvalidRequest(f"{where} refused the request: {message}")


@contextmanager
def mapped_errors(sdk: ModuleType, *, model: str, location: str) -> Iterator[None]:
    """Turn an SDK's exceptions (``openai`` or ``anthropic``) into genfoundry errors."""
    try:
        yield
    except sdk.APIStatusError as exc:
        message, kind = _error_fields(exc.body, exc.message)
        raise _upstream_error(status=exc.status_code, message=message, kind=kind,
                              model=model) from exc
    except sdk.APIConnectionError as exc:
        # The location stays in the gateway's log: clients must not learn internal addresses.
        log.warning("cannot reach the server of model '%s' at %s: %s", model, location, exc.message)
        raise ProviderError(
            f"cannot reach the server of model '{model}' ({exc.message}); an admin can check that it is "
            "running and that the model's location is right (`genfoundry models show`)") from exc
    except sdk.APIError as exc:  # e.g. an error event in the middle of a stream
        raise ProviderError(f"the server of model '{model}' failed: {exc.message}") from exc


# -- small shared pieces ----------------------------------------------------------

class LoopLocalClient(Generic[T]):
    """One SDK client per event loop.

    Pooled connections belong to the loop that opened them, and scripts and
    tests call ``asyncio.run`` more than once on one model; a client carried
    over to a new loop would reuse dead connections.
    """

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._client: T | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self._build(), loop
        return self._client

    def take(self) -> T | None:
        """Forget the client; return it if it can still be closed on the running loop."""
        client, loop = self._client, self._loop
        self._client = self._loop = None
        return client if loop is asyncio.get_running_loop() else None


@dataclass
class PartialToolCall:
    """A tool call whose arguments arrive in pieces while streaming."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def done(self) -> ToolCall:
        return ToolCall(id=self.id or f"call_{uuid.uuid4().hex[:24]}", name=self.name,
                        arguments="".join(self.arguments) or "{}")


def _is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"


# -- request mapping -------------------------------------------------------------

def _to_openai_message(message: Message) -> dict[str, Any]:
    # Most OpenAI-compatible servers know "system" but not "developer".
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": message.content}
    if message.content is None and not message.tool_calls:
        out["content"] = ""  # only an assistant turn with tool calls may have null content
    if message.name and role != "tool":
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _response_format(request: GenerationRequest) -> dict[str, Any] | None:
    if request.json_schema is not None:
        return {"type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema, "strict": True}}
    if request.json_object:
        return {"type": "json_object"}
    return None


def _usage(reported: Any) -> Usage | None:
    if reported is None:
        return None
    return Usage(prompt_tokens=reported.prompt_tokens or 0,
                 completion_tokens=getattr(reported, "completion_tokens", 0) or 0)


def _prompt_text(request: GenerationRequest) -> str:
    if request.messages is not None:
        return "\n".join(m.content or "" for m in request.messages)
    return request.prompt or ""


def _tool_calls(message: Any) -> list[ToolCall] | None:
    calls = [PartialToolCall(id=c.id or "", name=c.function.name,
                             arguments=[c.function.arguments or ""]).done()
             for c in message.tool_calls or []]
    return calls or None


@dataclass
class _StreamState:
    """What a stream has said so far: text, tool-call pieces, finish reason, usage."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, PartialToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None

    def absorb(self, event: Any) -> str:
        """Take one streamed event in; return its new text."""
        self.usage = _usage(getattr(event, "usage", None)) or self.usage
        if not event.choices:
            return ""
        choice = event.choices[0]
        self.finish_reason = choice.finish_reason or self.finish_reason
        delta = getattr(choice, "delta", None)  # chat chunks have a delta, completions text
        text = (delta.content if delta is not None else choice.text) or ""
        for piece in (getattr(delta, "tool_calls", None) or []):
            call = self.calls.setdefault(piece.index, PartialToolCall())
            call.id = piece.id or call.id
            if piece.function is not None:
                call.name = piece.function.name or call.name
                call.arguments.append(piece.function.arguments or "")
        self.text.append(text)
        return text

    def final_chunk(self, prompt: str) -> GenerationChunk:
        calls = [self.calls[i].done() for i in sorted(self.calls)] or None
        # Servers that ignore stream_options send no usage; estimate it then.
        usage = self.usage or Usage(prompt_tokens=estimate_tokens(prompt),
                                    completion_tokens=estimate_tokens("".join(self.text)))
        finish = "tool_calls" if calls else (self.finish_reason or "stop")
        return GenerationChunk(finish_reason=finish, usage=usage, tool_calls=calls)


# -- the model -------------------------------------------------------------------

class OpenAICompatModel:
    """Chat, completion and embeddings from any OpenAI-compatible server.

    Options: ``remote_model`` (id the server knows, default the hub name),
    ``api_key`` (a secret reference such as ``env:OPENAI_API_KEY``),
    ``concurrency``, ``dimensions`` (embedding size, else learned on first use),
    ``max_retries``, ``max_tokens_field`` (``max_completion_tokens`` for
    OpenAI's reasoning models), ``stream_usage`` (false for servers that reject
    ``stream_options``), ``batch_size`` (texts per embeddings call).

    Example::

        spec = ModelSpec(name="qwen2.5-7b", provider="openai_compat",
                         location="http://gpu-box:8000/v1",
                         options={"remote_model": "Qwen/Qwen2.5-7B-Instruct",
                                  "api_key": "env:VLLM_API_KEY"},
                         capabilities=["chat", "tools", "json"])
        model = OpenAICompatModel(spec, settings)
        result = await model.generate(GenerationRequest(messages=[Message("user", "Hi")]))
    """

    local = False

    def __init__(self, spec: ModelSpec, settings: Settings | None = None, *,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.spec = spec
        options = spec.options
        self.remote_model = str(options.get("remote_model", spec.name))
        self.concurrency = int(options.get("concurrency", DEFAULT_CONCURRENCY))
        self.dimensions: int | None = int(options["dimensions"]) if options.get("dimensions") else None
        self._timeout = settings.request_timeout if settings is not None else DEFAULT_TIMEOUT_S
        self._http_client = http_client
        self._clients = LoopLocalClient(self._build_client)

    def _build_client(self) -> openai.AsyncOpenAI:
        # Always pass a key: with None the SDK would read OPENAI_API_KEY and send
        # it to whatever server this model points at.
        api_key = resolve_secret(self.spec.options.get("api_key")) or NO_KEY
        return openai.AsyncOpenAI(
            base_url=self.spec.location, api_key=api_key, timeout=self._timeout,
            max_retries=int(self.spec.options.get("max_retries", DEFAULT_MAX_RETRIES)),
            http_client=self._http_client)

    def _errors(self) -> Any:
        return mapped_errors(openai, model=self.spec.name, location=self.spec.location)

    async def warm_up(self) -> None:
        """Resolve the key now, so a missing secret shows at load time, not on the first request."""
        self._clients.get()

    async def close(self) -> None:
        client = self._clients.take()
        if client is not None and self._http_client is None:  # a caller's client is theirs to close
            await client.close()

    def count_tokens(self, text: str) -> int:
        """An estimate (about four characters a token); the server's tokenizer is not at hand."""
        return estimate_tokens(text)

    # -- generation --------------------------------------------------------------
    def _params(self, request: GenerationRequest) -> dict[str, Any]:
        field_name = str(self.spec.options.get("max_tokens_field", "max_tokens"))
        values = {field_name: request.max_tokens, "temperature": request.temperature,
                  "top_p": request.top_p, "seed": request.seed, "stop": request.stop or None}
        params = {"model": self.remote_model, **{k: v for k, v in values.items() if v is not None}}
        response_format = _response_format(request)
        if request.is_chat:
            params["messages"] = [_to_openai_message(m) for m in request.messages or []]
            if response_format:
                params["response_format"] = response_format
            if request.tools:
                params["tools"] = request.tools
                if request.tool_choice is not None:
                    params["tool_choice"] = request.tool_choice
            return params
        if request.tools:
            raise InvalidRequest("tools need a chat request; send messages instead of prompt",
                                 param="tools")
        params["prompt"] = request.prompt or ""
        if response_format:  # not in OpenAI's completions API; vLLM and others accept it
            params["extra_body"] = {"response_format": response_format}
        return params

    def _endpoint(self, request: GenerationRequest) -> Any:
        client = self._clients.get()
        return client.chat.completions if request.is_chat else client.completions

    async def generate(self, request: GenerationRequest) -> Generation:
        params = self._params(request)
        with self._errors():
            response = await self._endpoint(request).create(**params)
        if not hasattr(response, "choices"):  # the SDK hands back a body that is not JSON as it came
            raise ProviderError(f"the server of model '{self.spec.name}' at {self.spec.location} answered with "
                                f"something that is not the OpenAI API: {str(response)[:100]!r}")
        if not response.choices:
            raise ProviderError(f"the server of model '{self.spec.name}' returned no choices")
        choice = response.choices[0]
        if request.is_chat:
            text, calls = choice.message.content or "", _tool_calls(choice.message)
        else:
            text, calls = choice.text or "", None
        usage = _usage(response.usage) or Usage(
            prompt_tokens=estimate_tokens(_prompt_text(request)),
            completion_tokens=estimate_tokens(text))
        finish = "tool_calls" if calls else (choice.finish_reason or "stop")
        return Generation(text=text, finish_reason=finish, usage=usage, tool_calls=calls)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Text deltas, then one last chunk with finish_reason, usage and whole tool calls."""
        params = {**self._params(request), "stream": True}
        if self.spec.options.get("stream_usage", True):
            params["stream_options"] = {"include_usage": True}
        state = _StreamState()
        with self._errors():
            events = await self._endpoint(request).create(**params)
            async with events:  # closing it frees the server's slot when the caller stops early
                response = getattr(events, "response", None)
                if response is not None and not _is_event_stream(response):
                    # Some servers and proxies ignore stream: true and answer in one JSON body.
                    whole = await self._whole_answer(request, response)
                    if whole.text:
                        yield GenerationChunk(text=whole.text)
                    yield GenerationChunk(finish_reason=whole.finish_reason, usage=whole.usage,
                                          tool_calls=whole.tool_calls)
                    return
                async for event in events:
                    if text := state.absorb(event):
                        yield GenerationChunk(text=text)
        if state.finish_reason is None and not state.calls:
            # The stream closed without saying it was done: cut off (a proxy timeout, a crash).
            got = f"after {len(''.join(state.text))} characters" if any(state.text) else "with no answer"
            raise ProviderError(f"the server of model '{self.spec.name}' ended its stream {got} and without "
                                "a finish reason (truncated)")
        yield state.final_chunk(_prompt_text(request))

    async def _whole_answer(self, request: GenerationRequest, response: httpx.Response) -> Generation:
        """A non-SSE answer to a stream request: a completion if it is one, else a ProviderError."""
        body = await response.aread()
        kind = response.headers.get("content-type", "no content type")
        snippet = body[:200].decode("utf-8", "replace").strip()
        where = f"the server of model '{self.spec.name}'"
        try:
            data = json.loads(body)
        except ValueError:
            raise ProviderError(f"{where} answered a stream request with {kind} (status "
                                f"{response.status_code}), not events: {snippet!r}") from None
        if isinstance(data, dict) and data.get("error"):
            message, _ = _error_fields(data, snippet)
            raise ProviderError(f"{where} answered with an error (status {response.status_code}): {message}")
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ProviderError(f"{where} answered a stream request with {kind} that is not a completion "
                                f"(status {response.status_code}): {snippet!r}")
        choice = choices[0]
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        text = (message.get("content") if request.is_chat else choice.get("text")) or ""
        calls = [ToolCall(id=c.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                          name=(c.get("function") or {}).get("name", ""),
                          arguments=(c.get("function") or {}).get("arguments") or "{}")
                 for c in message.get("tool_calls") or [] if isinstance(c, dict)] or None
        reported = data.get("usage") if isinstance(data.get("usage"), dict) else None
        usage = Usage(prompt_tokens=int(reported.get("prompt_tokens") or 0),
                      completion_tokens=int(reported.get("completion_tokens") or 0)) if reported else Usage(
            prompt_tokens=estimate_tokens(_prompt_text(request)), completion_tokens=estimate_tokens(text))
        finish = "tool_calls" if calls else (choice.get("finish_reason") or "stop")
        return Generation(text=text, finish_reason=finish, usage=usage, tool_calls=calls)

    # -- embeddings --------------------------------------------------------------
    async def embed(self, texts: list[str]) -> Embeddings:
        vectors: list[list[float]] = []
        usage = Usage()
        size = int(self.spec.options.get("batch_size", DEFAULT_EMBED_BATCH))
        for start in range(0, len(texts), size):
            batch = texts[start:start + size]
            batch_vectors, tokens = await self._embed_batch(batch)
            vectors.extend(batch_vectors)
            usage.prompt_tokens += tokens
        return Embeddings(vectors=vectors, usage=usage)

    async def _embed_batch(self, texts: list[str]) -> tuple[list[list[float]], int]:
        with self._errors():
            # "float" explicitly: the SDK would ask for base64, which some servers lack.
            response = await self._clients.get().embeddings.create(
                model=self.remote_model, input=texts, encoding_format="float")
        vectors = [list(d.embedding) for d in sorted(response.data, key=lambda d: d.index)]
        if len(vectors) != len(texts):
            raise ProviderError(f"the server of model '{self.spec.name}' returned "
                                f"{len(vectors)} vectors for {len(texts)} texts")
        self._check_dimensions(vectors)
        reported = response.usage.prompt_tokens if response.usage else None
        return vectors, reported or sum(estimate_tokens(t) for t in texts)

    def _check_dimensions(self, vectors: list[list[float]]) -> None:
        sizes = {len(v) for v in vectors}
        if self.dimensions is None and len(sizes) == 1:
            self.dimensions = sizes.pop()
            return
        if sizes - {self.dimensions}:
            # A vector store built for one size would be corrupted by another.
            raise ProviderError(
                f"the server of model '{self.spec.name}' returned vectors of size "
                f"{sorted(sizes)}, but the model is registered with dimensions={self.dimensions}; "
                "fix the hub entry's dimensions option")


# -- inspect and register --------------------------------------------------------

def _context_from_listing(listing: Any, wanted: str | None) -> dict[str, Any]:
    entries = listing.get("data") if isinstance(listing, dict) else None
    entries = [e for e in entries or [] if isinstance(e, dict)]
    if wanted is not None:
        entries = [e for e in entries if e.get("id") == wanted]
    if len(entries) != 1:  # without a remote_model, only a one-model server is unambiguous
        return {}
    for key in ("max_model_len", "context_length", "context_window"):
        value = entries[0].get(key)
        if isinstance(value, int) and value > 0:
            return {"context_length": value}
    return {}


def inspect(location: str, options: dict[str, Any], *,
            transport: httpx.BaseTransport | None = None) -> dict[str, Any]:
    """What the server reports about the model, for ``models add``.

    Returns ``{"context_length": n}`` when ``GET {location}/models`` lists it
    (vLLM does, as ``max_model_len``), else ``{}``; never raises on network errors.

    Example::

        inspect("http://gpu-box:8000/v1", {"remote_model": "Qwen/Qwen2.5-7B-Instruct"})
    """
    try:
        api_key = resolve_secret(options.get("api_key"))
    except ConfigError:
        api_key = None  # an open server still lists its models
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(timeout=INSPECT_TIMEOUT_S, transport=transport) as client:
            response = client.get(location.rstrip("/") + "/models", headers=headers)
            response.raise_for_status()
            listing = response.json()
    except (httpx.HTTPError, ValueError):
        return {}
    return _context_from_listing(listing, options.get("remote_model"))


def register(register: Callable[[Provider], None]) -> None:
    register(Provider(
        name="openai_compat", create=OpenAICompatModel, inspect=inspect,
        description="Any OpenAI-compatible server: OpenAI, vLLM, Ollama, llama.cpp server, TGI."))
