"""The anthropic provider against a fake Messages API (httpx.MockTransport).

The fake checks what the real API checks (a key, max_tokens, alternating
roles starting with the user, no empty text blocks, tool results that answer
a tool_use) and behaves like a small model: words are tokens, max_tokens and
stop_sequences are honoured, usage is reported, streams are Anthropic's SSE
events, and forced tools get input that satisfies their schema.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import itertools
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from genfoundry.core.errors import (
    ConfigError,
    ContextLengthExceeded,
    InvalidRequest,
    ProviderError,
)
from genfoundry.core.types import GenerationRequest, Message, ToolCall
from genfoundry.models.providers import Provider
from genfoundry.models.providers.anthropic import (
    AnthropicChatModel,
    register,
    to_anthropic_messages,
)
from genfoundry.models.spec import ModelSpec
from genfoundry.testing.conformance import ChatModelConformance


def _sdk_http_package():
    """The HTTP package the installed SDK is built on: newer releases use httpx2 and refuse httpx."""
    needs = " ".join(importlib.metadata.requires("anthropic") or [])
    return importlib.import_module("httpx2" if "httpx2" in needs else "httpx")


httpx = _sdk_http_package()
REMOTE = "claude-test-1"
CONTEXT = 512
CANNED = ("Red, green, blue, yellow, purple, orange, black, white, grey, pink, brown, cyan, "
          "magenta, teal, navy, olive, gold, silver, beige, coral")
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def instance_of(schema: dict[str, Any]) -> Any:
    """A value that satisfies a simple JSON schema, as a model forced onto a tool produces."""
    kind = schema.get("type", "object")
    if kind == "object":
        return {k: instance_of(v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [instance_of(schema.get("items", {"type": "string"}))]
    return {"string": "red", "integer": 1, "number": 1.5, "boolean": True}.get(kind)


def api_error(status: int, kind: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"type": "error", "error": {"type": kind, "message": message}})


def sse(events: list[dict[str, Any]]) -> httpx.Response:
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def _problem(body: dict[str, Any]) -> str | None:
    """What the real Messages API would reject in this request, if anything."""
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    roles = [m["role"] for m in body["messages"]]
    if not roles or roles[0] != "user":
        return "messages: first message must use the user role"
    if any(a == b for a, b in itertools.pairwise(roles)):
        return "messages: roles must alternate between user and assistant"
    blocks = [b for m in body["messages"] for b in m["content"]]
    if any(b["type"] == "text" and not b["text"] for b in blocks):
        return "messages: text content blocks must be non-empty"
    used = {b["id"] for b in blocks if b["type"] == "tool_use"}
    if any(b["tool_use_id"] not in used for b in blocks if b["type"] == "tool_result"):
        return "messages: tool_result block(s) provided without a corresponding tool_use"
    return None


def sent_key(headers: Any) -> str | None:
    """The API key a request carries (older SDKs send x-api-key, newer ones a bearer token)."""
    bearer = headers.get("authorization", "")
    return headers.get("x-api-key") or (bearer.removeprefix("Bearer ") if bearer else None)


def _prompt_words(body: dict[str, Any]) -> int:
    texts = [body.get("system", "")]
    for message in body["messages"]:
        for block in message["content"]:
            texts.append(block.get("text") or (block.get("content") if block["type"] == "tool_result" else ""))
    return sum(len(t.split()) for t in texts if isinstance(t, str))


class FakeAnthropic:
    """The Messages API in memory; ``requests`` keeps every request body and headers."""

    def __init__(self, *, context_length: int = 200_000):
        self.context_length = context_length
        self.requests: list[tuple[str, dict[str, Any], httpx.Headers]] = []

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1][1]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append((request.url.path, body, request.headers))
        if request.url.path != "/v1/messages":
            return api_error(404, "not_found_error", f"no route {request.url.path}")
        if not sent_key(request.headers) or "anthropic-version" not in request.headers:
            return api_error(401, "authentication_error", "x-api-key header is required")
        if problem := _problem(body):
            return api_error(400, "invalid_request_error", problem)
        prompt_tokens = _prompt_words(body)
        if prompt_tokens + body["max_tokens"] > self.context_length:
            return api_error(400, "invalid_request_error",
                             f"prompt is too long: {prompt_tokens} tokens > {self.context_length} maximum")
        content, stop_reason, stop_sequence = self._reply(body)
        if body.get("stream"):
            return sse(_events(content, stop_reason, prompt_tokens))
        return httpx.Response(200, json={
            "id": "msg_1", "type": "message", "role": "assistant", "model": REMOTE,
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": _output_tokens(content)}})

    def _reply(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str | None]:
        choice, tools = body.get("tool_choice") or {}, body.get("tools") or []
        forced = [t for t in tools if choice.get("type") == "any"
                  or (choice.get("type") == "tool" and t["name"] == choice["name"])][:1]
        if forced:
            tool = forced[0]
            return [{"type": "tool_use", "id": "toolu_01", "name": tool["name"],
                     "input": instance_of(tool["input_schema"])}], "tool_use", None
        words = CANNED.split()
        text = " ".join(words[:body["max_tokens"]])
        reason, matched = ("max_tokens" if body["max_tokens"] < len(words) else "end_turn"), None
        cuts = sorted((text.index(s), s) for s in body.get("stop_sequences") or [] if s in text)
        if cuts:
            text, reason, matched = text[:cuts[0][0]], "stop_sequence", cuts[0][1]
        return [{"type": "text", "text": text}], reason, matched


def _output_tokens(content: list[dict[str, Any]]) -> int:
    return sum(len(b["text"].split()) if b["type"] == "text" else len(json.dumps(b["input"]).split())
               for b in content)


def _events(content: list[dict[str, Any]], stop_reason: str, prompt_tokens: int) -> list[dict]:
    """The SSE events the Messages API streams for ``content``."""
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": REMOTE, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}}]
    for index, block in enumerate(content):
        events += _block_events(index, block)
    events += [{"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": _output_tokens(content)}},
               {"type": "message_stop"}]
    return events


def _block_events(index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
    if block["type"] == "text":
        start = {"type": "text", "text": ""}
        words = block["text"].split(" ")
        deltas = [{"type": "text_delta", "text": w if i == 0 else " " + w} for i, w in enumerate(words)]
    else:
        start = {**block, "input": {}}
        args = json.dumps(block["input"])
        deltas = [{"type": "input_json_delta", "partial_json": args[i:i + 4]}
                  for i in range(0, len(args), 4)]
    return [{"type": "content_block_start", "index": index, "content_block": start},
            {"type": "ping"},
            *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
            {"type": "content_block_stop", "index": index}]


def make_model(handler: Callable[[httpx.Request], httpx.Response], *,
               location: str = "http://claude-proxy:9000", **options: Any) -> AnthropicChatModel:
    spec = ModelSpec(name="claude", provider="anthropic", location=location,
                     context_length=CONTEXT, capabilities=["chat", "completion", "tools", "json"],
                     options={"remote_model": REMOTE, "api_key": "env:GF_TEST_ANTHROPIC_KEY",
                              "max_retries": 0, **options})
    return AnthropicChatModel(spec, http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


@pytest.fixture(autouse=True)
def anthropic_key(monkeypatch):
    monkeypatch.setenv("GF_TEST_ANTHROPIC_KEY", "sk-ant-test")


def chat(text: str = "Hello", **kw: Any) -> GenerationRequest:
    return GenerationRequest(messages=[Message("user", text)], **kw)


async def collect(model: AnthropicChatModel, request: GenerationRequest) -> list:
    return [chunk async for chunk in model.stream(request)]


class TestChatConformance(ChatModelConformance):
    @pytest.fixture(scope="class")
    def chat_model(self):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GF_TEST_ANTHROPIC_KEY", "sk-ant-test")
            model = make_model(FakeAnthropic(context_length=CONTEXT))
            asyncio.run(model.warm_up())
        yield model
        asyncio.run(model.close())


# -- what is sent ------------------------------------------------------------------

def test_messages_are_reshaped_for_anthropic():
    server = FakeAnthropic()
    history = [
        Message("system", "Be brief."),
        Message("user", "Weather in Paris and Rome?"),
        Message("developer", "Use tools."),
        Message("user", "Quickly please."),
        Message("assistant", "Checking.", tool_calls=[
            ToolCall("toolu_a", "get_weather", '{"city": "Paris"}'),
            ToolCall("toolu_b", "get_weather", '{"city": "Rome"}')]),
        Message("tool", "18C", tool_call_id="toolu_a"),
        Message("tool", "22C", tool_call_id="toolu_b"),
    ]
    asyncio.run(make_model(server).generate(
        GenerationRequest(messages=history, tools=[WEATHER_TOOL], max_tokens=30)))
    sent = server.last
    assert sent["system"] == "Be brief.\n\nUse tools."
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "Weather in Paris and Rome?"}, {"type": "text", "text": "Quickly please."}]
    assert sent["messages"][1]["content"][1] == {
        "type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}}
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": "22C"}]


def test_empty_assistant_text_is_left_out():
    system, turns = to_anthropic_messages([
        Message("user", "Hi"), Message("assistant", "", tool_calls=[ToolCall("t1", "f", "")])])
    assert system == ""
    assert turns[1]["content"] == [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]


def test_request_fields_and_key_are_sent():
    server = FakeAnthropic()
    asyncio.run(make_model(server).generate(
        chat(max_tokens=9, temperature=0.3, top_p=0.8, stop=["END"], seed=4)))
    path, sent, headers = server.requests[-1]
    assert path == "/v1/messages" and sent_key(headers) == "sk-ant-test"
    assert sent["model"] == REMOTE
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (9, 0.3, 0.8)
    assert sent["stop_sequences"] == ["END"]
    assert "seed" not in sent and "system" not in sent and "tools" not in sent


def test_max_tokens_defaults_because_anthropic_requires_it():
    server = FakeAnthropic()
    asyncio.run(make_model(server).generate(chat()))
    assert server.last["max_tokens"] == 1024


def test_prompt_completion_is_one_user_message():
    server = FakeAnthropic()
    result = asyncio.run(make_model(server).generate(
        GenerationRequest(prompt="One, two, three,", max_tokens=3)))
    assert server.last["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "One, two, three,"}]}]
    assert result.text == "Red, green, blue," and result.finish_reason == "length"


def test_stop_sequence_ends_the_text():
    result = asyncio.run(make_model(FakeAnthropic()).generate(chat(max_tokens=10, stop=["blue"])))
    assert result.text == "Red, green, " and result.finish_reason == "stop"


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}),
    ("required", {"type": "any"}),
    ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
])
def test_tools_and_tool_choice_are_converted(choice, expected):
    server = FakeAnthropic()
    asyncio.run(make_model(server).generate(chat(tools=[WEATHER_TOOL], tool_choice=choice)))
    assert server.last["tools"] == [{
        "name": "get_weather", "description": "Weather in a city.",
        "input_schema": WEATHER_TOOL["function"]["parameters"]}]
    assert server.last["tool_choice"] == expected


def test_unknown_tool_choice_is_refused():
    with pytest.raises(InvalidRequest, match="unknown tool_choice"):
        asyncio.run(make_model(FakeAnthropic()).generate(chat(tools=[WEATHER_TOOL], tool_choice="maybe")))


# -- tool calls and JSON -------------------------------------------------------------

def test_forced_tool_call_is_returned():
    result = asyncio.run(make_model(FakeAnthropic()).generate(
        chat("Weather?", tools=[WEATHER_TOOL], tool_choice="required")))
    assert result.finish_reason == "tool_calls" and result.text == ""
    assert [(c.id, c.name, json.loads(c.arguments)) for c in result.tool_calls] == [
        ("toolu_01", "get_weather", {"city": "red"})]


def test_streamed_tool_use_is_assembled():
    chunks = asyncio.run(collect(make_model(FakeAnthropic()), chat(
        "Weather?", tools=[WEATHER_TOOL], tool_choice="required")))
    final = chunks[-1]
    assert final.finish_reason == "tool_calls"
    assert [(c.id, c.name, json.loads(c.arguments)) for c in final.tool_calls] == [
        ("toolu_01", "get_weather", {"city": "red"})]
    assert "".join(c.text for c in chunks) == ""


SCHEMA = {"type": "object", "properties": {"colour": {"type": "string"}, "count": {"type": "integer"}},
          "required": ["colour", "count"]}


def test_json_schema_forces_the_json_output_tool():
    server = FakeAnthropic()
    result = asyncio.run(make_model(server).generate(chat(json_schema=SCHEMA)))
    assert server.last["tools"][0]["name"] == "json_output"
    assert server.last["tools"][0]["input_schema"] == SCHEMA
    assert server.last["tool_choice"] == {"type": "tool", "name": "json_output"}
    assert json.loads(result.text) == {"colour": "red", "count": 1}
    assert result.finish_reason == "stop" and result.tool_calls is None


def test_json_output_streams_as_text():
    chunks = asyncio.run(collect(make_model(FakeAnthropic()), chat(json_object=True, json_schema=SCHEMA)))
    assert len(chunks) > 2, "the JSON should arrive in pieces"
    assert json.loads("".join(c.text for c in chunks)) == {"colour": "red", "count": 1}
    assert chunks[-1].finish_reason == "stop" and chunks[-1].tool_calls is None


@pytest.mark.parametrize("request_", [
    chat(json_schema={"type": "array", "items": {"type": "string"}}),
    chat(json_schema=SCHEMA, tools=[WEATHER_TOOL]),
])
def test_json_output_limits_are_explained(request_):
    server = FakeAnthropic()
    with pytest.raises(InvalidRequest):
        asyncio.run(make_model(server).generate(request_))
    assert server.requests == []


# -- streaming -----------------------------------------------------------------------

def test_stream_reports_usage_from_start_and_delta_events():
    chunks = asyncio.run(collect(make_model(FakeAnthropic()), chat("Say hi", max_tokens=3)))
    assert [c.text for c in chunks[:-1]] == ["Red,", " green,", " blue,"]
    final = chunks[-1]
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (2, 3)
    assert final.finish_reason == "length"


# -- errors --------------------------------------------------------------------------

def _answer(response: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: response


@pytest.mark.parametrize(("response", "expected", "words"), [
    (api_error(529, "overloaded_error", "Overloaded"), ProviderError, "Overloaded"),
    (api_error(500, "api_error", "Internal server error"), ProviderError, "500"),
    (api_error(429, "rate_limit_error", "Number of request tokens has exceeded"), ProviderError, "429"),
    (api_error(401, "authentication_error", "invalid x-api-key"), ProviderError,
     "rejected the configured API key"),
    (api_error(404, "not_found_error", "model: claude-x"), ProviderError, "remote_model"),
    (api_error(400, "invalid_request_error", "temperature: range: 0..1"), InvalidRequest,
     "temperature: range"),
    (api_error(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
     ContextLengthExceeded, "prompt is too long"),
])
def test_upstream_errors_are_mapped(response, expected, words):
    with pytest.raises(expected, match=words) as caught:
        asyncio.run(make_model(_answer(response)).generate(chat()))
    assert type(caught.value) is expected


def test_connection_failure_is_a_provider_error():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")
    with pytest.raises(ProviderError, match="cannot reach"):
        asyncio.run(make_model(handler).generate(chat()))


def test_error_event_mid_stream_is_a_provider_error():
    events = _events([{"type": "text", "text": "Hi"}], "end_turn", 1)[:3]
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    body += 'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    response = httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    with pytest.raises(ProviderError, match="Overloaded"):
        asyncio.run(collect(make_model(_answer(response)), chat()))


def test_long_prompt_streamed_is_context_length_exceeded():
    with pytest.raises(ContextLengthExceeded):
        asyncio.run(collect(make_model(FakeAnthropic(context_length=CONTEXT)), chat("word " * CONTEXT)))


# -- configuration -------------------------------------------------------------------

def test_missing_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    spec = ModelSpec(name="claude", provider="anthropic", location="anthropic")
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY is not set"):
        asyncio.run(AnthropicChatModel(spec).warm_up())


def test_missing_sdk_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "anthropic", None)  # makes `import anthropic` fail
    model = make_model(FakeAnthropic())
    with pytest.raises(ConfigError, match=r"pip install 'genfoundry\[anthropic\]'"):
        asyncio.run(model.warm_up())


@pytest.mark.parametrize(("location", "base_url"), [
    ("anthropic", "https://api.anthropic.com"),
    ("", "https://api.anthropic.com"),
    ("https://llm-proxy.internal/anthropic/v1/", "https://llm-proxy.internal/anthropic"),
])
def test_base_url(location, base_url):
    spec = ModelSpec(name="claude", provider="anthropic", location=location)
    assert AnthropicChatModel(spec).base_url == base_url


def test_requests_go_to_the_configured_host():
    server = FakeAnthropic()
    asyncio.run(make_model(server, location="http://claude-proxy:9000/v1").generate(chat()))
    assert server.requests[-1][0] == "/v1/messages"


def test_register_declares_the_provider():
    found: list[Provider] = []
    register(found.append)
    (provider,) = found
    assert provider.name == "anthropic"
    spec = ModelSpec(name="claude", provider="anthropic", location="anthropic")
    model = provider.create(spec, None)
    assert isinstance(model, AnthropicChatModel) and model.local is False
    assert not hasattr(model, "embed")
