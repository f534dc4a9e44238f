"""The openai_compat provider against a fake OpenAI-compatible server (httpx.MockTransport).

The fake behaves like a small real server: words are tokens, it honours
max_tokens and stop, reports usage, streams SSE ending in ``data: [DONE]``,
refuses prompts longer than its context, follows response_format, calls tools
when told to, and embeds texts as bags of hashed words.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from genfoundry.core.errors import (
    ConfigError,
    ContextLengthExceeded,
    InvalidRequest,
    ProviderError,
)
from genfoundry.core.settings import Settings
from genfoundry.core.types import GenerationRequest, Message, ToolCall
from genfoundry.models.providers import Provider
from genfoundry.models.providers.openai_compat import OpenAICompatModel, inspect, register
from genfoundry.models.spec import ModelSpec
from genfoundry.testing.conformance import ChatModelConformance, EmbeddingModelConformance

BASE_URL = "http://gpu-box:8000/v1"
REMOTE = "org/served-model"
CONTEXT = 512
CANNED = ("Red, green, blue, yellow, purple, orange, black, white, grey, pink, brown, cyan, "
          "magenta, teal, navy, olive, gold, silver, beige, coral")
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}


def instance_of(schema: dict[str, Any]) -> Any:
    """A value that satisfies a simple JSON schema, as a constrained decoder would produce."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        return {k: instance_of(v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [instance_of(schema.get("items", {"type": "string"}))]
    return {"string": "red", "integer": 1, "number": 1.5, "boolean": True}.get(kind)


def bag_of_words(text: str, dimensions: int) -> list[float]:
    vec = [0.0] * dimensions
    for word in text.lower().split():
        digest = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
        vec[digest % dimensions] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def sse(events: list[dict[str, Any]]) -> httpx.Response:
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def error(status: int, message: str, code: str | None = None, kind: str = "invalid_request_error"):
    return httpx.Response(status, json={"error": {"message": message, "type": kind,
                                                  "param": None, "code": code}})


class FakeOpenAIServer:
    """An OpenAI-compatible server in memory; ``requests`` keeps every request it saw."""

    def __init__(self, *, context_length: int = CONTEXT, dimensions: int = 64):
        self.context_length = context_length
        self.dimensions = dimensions
        self.requests: list[tuple[str, dict[str, Any], httpx.Headers]] = []

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1][1]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.requests.append((request.url.path, body, request.headers))
        if body.get("model") not in (None, REMOTE):
            return error(404, f"The model `{body['model']}` does not exist", "model_not_found")
        route = request.url.path.removeprefix("/v1")
        if route == "/chat/completions":
            prompt = "\n".join(m.get("content") or "" for m in body["messages"])
            return self._generate(body, prompt, chat=True)
        if route == "/completions":
            return self._generate(body, body["prompt"], chat=False)
        if route == "/embeddings":
            return self._embed(body)
        return error(404, f"no route {request.url.path}")

    # -- generation --------------------------------------------------------------
    def _reply(self, body: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
        """Text, finish reason and tool calls the 'model' produces for this request."""
        calls = self._tool_calls(body)
        if calls:
            return "", "tool_calls", calls
        fmt = (body.get("response_format") or {}).get("type")
        if fmt == "json_schema":
            return json.dumps(instance_of(body["response_format"]["json_schema"]["schema"])), "stop", []
        if fmt == "json_object":
            return '{"answer": "red"}', "stop", []
        words = CANNED.split()
        limit = body.get("max_tokens", 16)
        text, finish = " ".join(words[:limit]), "length" if limit < len(words) else "stop"
        cuts = [text.index(s) for s in body.get("stop") or [] if s in text]
        if cuts:
            text, finish = text[:min(cuts)], "stop"
        return text, finish, []

    def _tool_calls(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        choice, tools = body.get("tool_choice"), body.get("tools") or []
        if choice == "required":
            chosen = tools  # a parallel call of every tool
        elif isinstance(choice, dict):
            chosen = [t for t in tools if t["function"]["name"] == choice["function"]["name"]]
        else:
            return []
        return [{"id": f"call_{i}", "type": "function",
                 "function": {"name": t["function"]["name"],
                              "arguments": json.dumps(instance_of(t["function"]["parameters"]))}}
                for i, t in enumerate(chosen)]

    def _generate(self, body: dict[str, Any], prompt: str, *, chat: bool) -> httpx.Response:
        prompt_tokens = len(prompt.split())
        if prompt_tokens + body.get("max_tokens", 16) > self.context_length:
            return error(400, f"This model's maximum context length is {self.context_length} "
                              f"tokens. However, you requested {prompt_tokens} tokens.",
                         "context_length_exceeded")
        text, finish, calls = self._reply(body)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                 "total_tokens": prompt_tokens + len(text.split())}
        if body.get("stream"):
            return self._stream(body, text, finish, calls, usage, chat=chat)
        if chat:
            message = {"role": "assistant", "content": text or None, "tool_calls": calls or None}
            choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        return httpx.Response(200, json={
            "id": "cmpl-1", "object": "chat.completion" if chat else "text_completion",
            "created": 0, "model": REMOTE, "choices": [choice], "usage": usage})

    def _stream(self, body, text, finish, calls, usage, *, chat: bool) -> httpx.Response:
        def chunk(delta: dict[str, Any] | str, reason: str | None = None) -> dict[str, Any]:
            part = {"delta": delta} if chat else {"text": delta}
            return {"id": "cmpl-1", "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": 0, "model": REMOTE,
                    "choices": [{"index": 0, "finish_reason": reason, **part}]}
        pieces = [w if i == 0 else " " + w for i, w in enumerate(text.split(" ")) if text]
        events = [chunk({"content": p} if chat else p) for p in pieces]
        events += [chunk({"tool_calls": [d]}) for d in _tool_call_deltas(calls)]
        events.append(chunk({} if chat else "", finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"id": "cmpl-1", "object": "chat.completion.chunk", "created": 0,
                           "model": REMOTE, "choices": [], "usage": usage})
        return sse(events)

    # -- embeddings --------------------------------------------------------------
    def _embed(self, body: dict[str, Any]) -> httpx.Response:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if not texts:
            return error(400, "'input' must not be empty")
        assert body.get("encoding_format") == "float", "asked for base64, which this server lacks"
        data = [{"object": "embedding", "index": i, "embedding": bag_of_words(t, self.dimensions)}
                for i, t in enumerate(texts)]
        tokens = sum(len(t.split()) for t in texts)
        return httpx.Response(200, json={"object": "list", "data": data, "model": REMOTE,
                                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _tool_call_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls cut into the pieces OpenAI streams: id and name first, then argument shards."""
    deltas = []
    for index, call in enumerate(calls):
        deltas.append({"index": index, "id": call["id"], "type": "function",
                       "function": {"name": call["function"]["name"], "arguments": ""}})
        args = call["function"]["arguments"]
        deltas += [{"index": index, "function": {"arguments": args[i:i + 5]}}
                   for i in range(0, len(args), 5)]
    return deltas


def make_model(handler: Callable[[httpx.Request], httpx.Response], *, settings=None,
               **options: Any) -> OpenAICompatModel:
    spec = ModelSpec(name="served", provider="openai_compat", location=BASE_URL,
                     context_length=CONTEXT, capabilities=["chat", "completion", "tools", "json"],
                     options={"remote_model": REMOTE, "api_key": "none", "max_retries": 0, **options})
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAICompatModel(spec, settings, http_client=client)


def chat(text: str = "Hello", **kw: Any) -> GenerationRequest:
    return GenerationRequest(messages=[Message("user", text)], **kw)


async def collect(model: OpenAICompatModel, request: GenerationRequest) -> list:
    return [chunk async for chunk in model.stream(request)]


# -- conformance -------------------------------------------------------------------

class TestChatConformance(ChatModelConformance):
    @pytest.fixture(scope="class")
    def chat_model(self):
        model = make_model(FakeOpenAIServer())
        asyncio.run(model.warm_up())
        yield model
        asyncio.run(model.close())


class TestEmbeddingConformance(EmbeddingModelConformance):
    @pytest.fixture(scope="class")
    def embedding_model(self):
        model = make_model(FakeOpenAIServer(dimensions=48))
        asyncio.run(model.warm_up())
        yield model
        asyncio.run(model.close())


# -- what is sent ------------------------------------------------------------------

def test_chat_request_maps_every_field():
    server = FakeOpenAIServer()
    history = [
        Message("system", "Be brief."),
        Message("developer", "Answer in English."),
        Message("user", "Weather in Paris?", name="ana"),
        Message("assistant", None, tool_calls=[ToolCall("call_7", "get_weather", '{"city": "Paris"}')]),
        Message("tool", "18C and sunny", tool_call_id="call_7", name="get_weather"),
    ]
    request = GenerationRequest(messages=history, max_tokens=20, temperature=0.2, top_p=0.9,
                                stop=["\n\n"], seed=7, tools=[WEATHER_TOOL], tool_choice="auto")
    asyncio.run(make_model(server).generate(request))
    sent = server.last
    assert server.requests[-1][0] == "/v1/chat/completions"
    assert sent["model"] == REMOTE
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["seed"]) == (20, 0.2, 0.9, 7)
    assert sent["stop"] == ["\n\n"]
    assert sent["tools"] == [WEATHER_TOOL] and sent["tool_choice"] == "auto"
    assert [m["role"] for m in sent["messages"]] == ["system", "system", "user", "assistant", "tool"]
    assert sent["messages"][2]["name"] == "ana"
    assert sent["messages"][3]["tool_calls"] == [{"id": "call_7", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert sent["messages"][4] == {"role": "tool", "content": "18C and sunny", "tool_call_id": "call_7"}


def test_unset_fields_are_not_sent():
    server = FakeOpenAIServer()
    asyncio.run(make_model(server).generate(chat()))
    assert set(server.last) == {"model", "messages"}


def test_json_schema_becomes_strict_response_format():
    server = FakeOpenAIServer()
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    result = asyncio.run(make_model(server).generate(chat(json_schema=schema)))
    assert server.last["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
    assert json.loads(result.text) == {"city": "red"}


def test_json_object_becomes_json_object_format():
    server = FakeOpenAIServer()
    result = asyncio.run(make_model(server).generate(chat(json_object=True)))
    assert server.last["response_format"] == {"type": "json_object"}
    assert isinstance(json.loads(result.text), dict)


def test_completion_goes_to_completions_endpoint():
    server = FakeOpenAIServer()
    result = asyncio.run(make_model(server).generate(
        GenerationRequest(prompt="One two three", max_tokens=4, stop=["yellow"])))
    path, sent, _ = server.requests[-1]
    assert path == "/v1/completions"
    assert (sent["prompt"], sent["max_tokens"], sent["stop"]) == ("One two three", 4, ["yellow"])
    assert result.text == "Red, green, blue, "
    assert result.usage.prompt_tokens == 3 and result.usage.completion_tokens == 3


def test_completion_with_tools_is_refused_before_sending():
    server = FakeOpenAIServer()
    with pytest.raises(InvalidRequest, match="tools need a chat request"):
        asyncio.run(make_model(server).generate(GenerationRequest(prompt="x", tools=[WEATHER_TOOL])))
    assert server.requests == []


def test_max_tokens_field_option_for_reasoning_models():
    server = FakeOpenAIServer()
    asyncio.run(make_model(server, max_tokens_field="max_completion_tokens").generate(
        chat(max_tokens=5)))
    assert server.last["max_completion_tokens"] == 5 and "max_tokens" not in server.last


def test_timeout_comes_from_settings(tmp_path):
    server = FakeOpenAIServer()
    settings = Settings(home=tmp_path, request_timeout=7.5)
    asyncio.run(make_model(server, settings=settings).generate(chat()))
    assert server.requests[-1][2]["x-stainless-read-timeout"] == "7.5"


# -- tool calls ----------------------------------------------------------------------

def test_generate_returns_tool_calls():
    server = FakeOpenAIServer()
    named = {"type": "function", "function": {"name": "get_weather"}}
    result = asyncio.run(make_model(server).generate(
        chat("Weather?", tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=named)))
    assert server.last["tool_choice"] == named
    assert result.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in result.tool_calls] == [
        ("call_0", "get_weather", {"city": "red"})]


def test_streamed_tool_call_deltas_are_assembled():
    server = FakeOpenAIServer()
    chunks = asyncio.run(collect(make_model(server), chat(
        "Weather and time?", tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required")))
    final = chunks[-1]
    assert all(c.tool_calls is None for c in chunks[:-1])
    assert final.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in final.tool_calls] == [
        ("call_0", "get_weather", {"city": "red"}), ("call_1", "get_time", {"zone": "red"})]


# -- streaming -------------------------------------------------------------------------

def test_stream_asks_for_usage_and_reports_it_once():
    server = FakeOpenAIServer()
    chunks = asyncio.run(collect(make_model(server), chat("Hi there", max_tokens=3)))
    assert server.last["stream"] is True
    assert server.last["stream_options"] == {"include_usage": True}
    assert [c.text for c in chunks[:-1]] == ["Red,", " green,", " blue,"]
    assert chunks[-1].usage.prompt_tokens == 2 and chunks[-1].usage.completion_tokens == 3
    assert chunks[-1].finish_reason == "length"
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_estimates_it():
    server = FakeOpenAIServer()
    chunks = asyncio.run(collect(make_model(server, stream_usage=False), chat("Hi", max_tokens=4)))
    assert "stream_options" not in server.last
    text = "".join(c.text for c in chunks)
    assert chunks[-1].usage.completion_tokens == math.ceil(len(text) / 4)
    assert chunks[-1].usage.prompt_tokens == 1


def test_streamed_completion():
    server = FakeOpenAIServer()
    chunks = asyncio.run(collect(make_model(server), GenerationRequest(prompt="a b", max_tokens=2)))
    assert server.requests[-1][0] == "/v1/completions"
    assert "".join(c.text for c in chunks) == "Red, green,"
    assert chunks[-1].usage.completion_tokens == 2


# -- errors ------------------------------------------------------------------------------

def _answer(response: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: response


@pytest.mark.parametrize(("response", "expected", "words"), [
    (error(500, "engine crashed", kind="server_error"), ProviderError, "engine crashed"),
    (error(503, "loading model", kind="server_error"), ProviderError, "503"),
    (error(429, "slow down", "rate_limit_exceeded"), ProviderError, "slow down"),
    (error(401, "Incorrect API key provided"), ProviderError, "rejected the configured API key"),
    (error(403, "not allowed"), ProviderError, "api_key reference"),
    (error(404, "The model `x` does not exist", "model_not_found"), ProviderError, "remote_model"),
    (error(400, "temperature must be at most 2", "invalid_value"), InvalidRequest,
     "temperature must be at most 2"),
    (error(400, "too long", "context_length_exceeded"), ContextLengthExceeded, "too long"),
    # vLLM: numeric code, the overflow only in the message
    (httpx.Response(400, json={"object": "error", "type": "BadRequestError", "code": 400,
                               "message": "This model's maximum context length is 2048 tokens."}),
     ContextLengthExceeded, "2048"),
    # llama-server names it in the error type
    (error(400, "the request exceeds the available context size", 400, "exceed_context_size_error"),
     ContextLengthExceeded, "context size"),
])
def test_upstream_errors_are_mapped(response, expected, words):
    with pytest.raises(expected, match=words) as caught:
        asyncio.run(make_model(_answer(response)).generate(chat()))
    assert type(caught.value) is expected


@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
def test_network_failures_are_provider_errors(failure):
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure
    with pytest.raises(ProviderError, match="cannot reach the server of model 'served'"):
        asyncio.run(make_model(handler).generate(chat()))


def test_stream_errors_are_mapped():
    with pytest.raises(ProviderError):
        asyncio.run(collect(make_model(_answer(error(502, "bad gateway"))), chat()))
    with pytest.raises(ContextLengthExceeded):
        asyncio.run(collect(make_model(FakeOpenAIServer()), chat("word " * CONTEXT)))


def test_error_event_in_the_middle_of_a_stream_is_a_provider_error():
    body = ('data: {"id":"1","object":"chat.completion.chunk","created":0,"model":"m",'
            '"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
            'data: {"error":{"message":"worker died","type":"server_error"}}\n\n')
    response = httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    with pytest.raises(ProviderError, match="worker died"):
        asyncio.run(collect(make_model(_answer(response)), chat()))


# -- secrets -----------------------------------------------------------------------------

def test_missing_env_secret_is_a_config_error(monkeypatch):
    monkeypatch.delenv("GF_TEST_VLLM_KEY", raising=False)
    server = FakeOpenAIServer()
    model = make_model(server, api_key="env:GF_TEST_VLLM_KEY")
    with pytest.raises(ConfigError, match="GF_TEST_VLLM_KEY is not set"):
        asyncio.run(model.warm_up())
    assert server.requests == []


def test_env_secret_is_sent_as_bearer(monkeypatch):
    monkeypatch.setenv("GF_TEST_VLLM_KEY", "sk-test-123")
    server = FakeOpenAIServer()
    asyncio.run(make_model(server, api_key="env:GF_TEST_VLLM_KEY").generate(chat()))
    assert server.requests[-1][2]["authorization"] == "Bearer sk-test-123"


def test_no_key_never_leaks_openai_api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key")
    server = FakeOpenAIServer()
    asyncio.run(make_model(server, api_key="none").generate(chat()))
    assert server.requests[-1][2]["authorization"] == "Bearer none"


# -- embeddings --------------------------------------------------------------------------

def test_embeddings_learn_dimensions_and_batch():
    server = FakeOpenAIServer(dimensions=16)
    model = make_model(server, batch_size=2)
    assert model.dimensions is None
    result = asyncio.run(model.embed(["a b", "c", "d e f", "g", "h"]))
    assert model.dimensions == 16 and len(result.vectors) == 5
    assert [len(body["input"]) for _, body, _ in server.requests] == [2, 2, 1]
    assert result.usage.prompt_tokens == 8


def test_embedding_size_other_than_registered_is_refused():
    model = make_model(FakeOpenAIServer(dimensions=16), dimensions=384)
    with pytest.raises(ProviderError, match="dimensions=384"):
        asyncio.run(model.embed(["hello"]))


def test_close_leaves_a_callers_http_client_open():
    client = httpx.AsyncClient(transport=httpx.MockTransport(FakeOpenAIServer()))
    spec = ModelSpec(name="served", provider="openai_compat", location=BASE_URL,
                     options={"remote_model": REMOTE})
    model = OpenAICompatModel(spec, http_client=client)
    asyncio.run(model.generate(chat()))
    asyncio.run(model.close())
    assert not client.is_closed


# -- inspect and register ---------------------------------------------------------------

def _listing(request: httpx.Request) -> httpx.Response:
    assert request.url.path == "/v1/models"
    return httpx.Response(200, json={"object": "list", "data": [
        {"id": REMOTE, "object": "model", "max_model_len": 4096},
        {"id": "other", "object": "model", "max_model_len": 8192}]})


def test_inspect_reads_vllm_max_model_len():
    found = inspect(BASE_URL, {"remote_model": REMOTE}, transport=httpx.MockTransport(_listing))
    assert found == {"context_length": 4096}


def test_inspect_without_remote_model_needs_a_single_model_server():
    assert inspect(BASE_URL, {}, transport=httpx.MockTransport(_listing)) == {}
    single = httpx.MockTransport(lambda r: httpx.Response(200, json={"data": [
        {"id": "only", "context_length": 2048}]}))
    assert inspect(BASE_URL, {}, transport=single) == {"context_length": 2048}


def test_inspect_sends_the_key(monkeypatch):
    monkeypatch.setenv("GF_TEST_VLLM_KEY", "sk-inspect")
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return _listing(request)
    inspect(BASE_URL, {"api_key": "env:GF_TEST_VLLM_KEY"}, transport=httpx.MockTransport(handler))
    assert seen == ["Bearer sk-inspect"]


@pytest.mark.parametrize("handler", [
    lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused")),
    lambda r: httpx.Response(200, text="<html>not json</html>"),
    lambda r: httpx.Response(401, json={"error": {"message": "no"}}),
    lambda r: httpx.Response(200, json={"data": [{"id": REMOTE}]}),
])
def test_inspect_returns_empty_when_nothing_is_known(handler):
    assert inspect(BASE_URL, {"remote_model": REMOTE}, transport=httpx.MockTransport(handler)) == {}


def test_register_declares_the_provider():
    found: list[Provider] = []
    register(found.append)
    (provider,) = found
    assert provider.name == "openai_compat" and provider.inspect is inspect
    spec = ModelSpec(name="m", provider="openai_compat", location=BASE_URL)
    assert isinstance(provider.create(spec, None), OpenAICompatModel)
