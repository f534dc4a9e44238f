"""The gateway with fake models, driven by the official openai client."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from genfoundry.core.settings import load_settings
from genfoundry.core.types import Generation, ToolCall
from genfoundry.gateway.app import create_app
from genfoundry.gateway.keys import create_key, revoke_key
from genfoundry.models.spec import ModelSpec, Price
from genfoundry.observe.calls import list_calls


def fake_spec(name, **kw):
    kw.setdefault("capabilities", ["chat", "completion", "tools", "json"])
    kw.setdefault("clearance", "restricted")  # local, in memory: the guard's PII rail leaves it alone
    return ModelSpec(name=name, provider="fake", location="memory", **kw)


@pytest.fixture()
def gateway(tmp_path):
    settings = load_settings(home=tmp_path, environ={}, overrides={"max_queue": 0})
    app = create_app(settings, builtins=False)
    with TestClient(app) as client:
        rt = app.state.runtime
        rt.hub.add(fake_spec("fake-chat", aliases=["default"], context_length=64,
                             price=Price(input_per_million=1.0, output_per_million=2.0)))
        rt.hub.add(fake_spec("fake-embed", aliases=["default-embedding"], capabilities=["embedding"]))
        secret, key = create_key(rt.store, name="test", role="admin")
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client, rt, secret, key


@pytest.fixture()
def oai(gateway):
    client, _, secret, _ = gateway
    return openai.OpenAI(base_url="http://testserver/v1", api_key=secret, http_client=client, max_retries=0)


def loaded(rt, name):
    return asyncio.run(rt.hub.load(name)) if name not in rt.hub.loaded() else rt.hub.loaded()[name]


def calls(rt):
    rt.recorder.flush()
    return list_calls(rt.store, limit=100)


def test_chat_completion(oai, gateway):
    _, rt, _, key = gateway
    reply = oai.chat.completions.create(model="default", messages=[{"role": "user", "content": "hello there"}])
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.model == "fake-chat"
    assert reply.usage.prompt_tokens == 2 and reply.usage.completion_tokens == 3
    [row] = calls(rt)
    assert row["id"] == reply.id and row["key_id"] == key.id and row["status"] == "ok"
    assert row["resolved_model"] == "fake-chat" and row["model"] == "default"
    assert row["cost_usd"] == pytest.approx((2 * 1.0 + 3 * 2.0) / 1e6)
    assert row["ttft_ms"] is not None and row["latency_ms"] >= row["ttft_ms"]
    assert row["request"]["messages"][0]["content"] == "hello there"
    assert row["response"]["text"] == "echo: hello there"


def test_chat_stream_with_usage(oai):
    stream = oai.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "a b c"}],
                                         stream=True, stream_options={"include_usage": True})
    events = list(stream)
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert text == "echo: a b c"
    assert [e.choices[0].finish_reason for e in events if e.choices][-1] == "stop"
    assert events[-1].usage.completion_tokens == 4 and events[-1].choices == []


def test_tool_call_reply(oai, gateway):
    _, rt, _, _ = gateway
    model = loaded(rt, "fake-chat")
    model.replies.append(Generation(text="", tool_calls=[ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}')]))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    reply = oai.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "weather?"}], tools=tools)
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    assert model.requests[-1].tools[0]["function"]["name"] == "get_weather"


def test_json_schema_reaches_model(oai, gateway):
    _, rt, _, _ = gateway
    model = loaded(rt, "fake-chat")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    oai.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "x"}],
                                response_format={"type": "json_schema", "json_schema": {"name": "o", "schema": schema}})
    assert model.requests[-1].json_schema == schema


def test_capabilities_are_checked(oai, gateway):
    _, rt, _, _ = gateway
    rt.hub.add(fake_spec("plain", capabilities=["chat"]))
    with pytest.raises(openai.BadRequestError, match="does not support tools"):
        oai.chat.completions.create(model="plain", messages=[{"role": "user", "content": "x"}],
                                    tools=[{"type": "function", "function": {"name": "f"}}])
    with pytest.raises(openai.BadRequestError, match="JSON"):
        oai.chat.completions.create(model="plain", messages=[{"role": "user", "content": "x"}],
                                    response_format={"type": "json_object"})


def test_text_completion_and_stream(oai):
    reply = oai.completions.create(model="fake-chat", prompt="one two")
    assert reply.choices[0].text == "echo: one two"
    streamed = "".join(e.choices[0].text for e in oai.completions.create(model="fake-chat", prompt="x", stream=True) if e.choices)
    assert streamed == "echo: x"


def test_embeddings_float_and_base64(oai):
    # The openai client asks for base64 by default and decodes it.
    result = oai.embeddings.create(model="default-embedding", input=["alpha beta", "alpha beta", "gamma"])
    assert len(result.data) == 3 and len(result.data[0].embedding) == 32
    assert result.data[0].embedding == pytest.approx(result.data[1].embedding)
    floats = oai.embeddings.create(model="fake-embed", input="gamma", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[2].embedding, abs=1e-6)
    assert result.usage.prompt_tokens == 5


def test_embeddings_errors(oai):
    with pytest.raises(openai.BadRequestError, match="dimensional"):
        oai.embeddings.create(model="fake-embed", input="x", dimensions=7)
    with pytest.raises(openai.BadRequestError, match="does not make embeddings"):
        oai.embeddings.create(model="fake-chat", input="x")
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="fake-embed", input=[])


def test_models_list_and_show(oai):
    ids = {m.id for m in oai.models.list()}
    assert ids == {"fake-chat", "fake-embed"}
    assert oai.models.retrieve("default").id == "fake-chat"


def test_unknown_model_is_404(oai):
    with pytest.raises(openai.NotFoundError) as err:
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == "model_not_found"
    assert "genfoundry models list" in err.value.body["message"]


def test_context_overflow_is_400(oai, gateway):
    _, rt, _, _ = gateway
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "w " * 100}])
    assert err.value.body["code"] == "context_length_exceeded"
    row = calls(rt)[0]
    assert row["status"] == "error" and row["http_status"] == 400


def test_fallback_when_provider_fails(oai, gateway):
    _, rt, _, _ = gateway
    rt.hub.add(fake_spec("broken", options={"fail": True}, fallbacks=["fake-chat"]))
    reply = oai.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    assert reply.model == "fake-chat" and reply.choices[0].message.content == "echo: hi"
    row = calls(rt)[0]
    assert row["fallback_from"] == "broken" and row["resolved_model"] == "fake-chat"


def test_failing_provider_without_fallback_is_502(oai, gateway):
    _, rt, _, _ = gateway
    rt.hub.add(fake_spec("broken", options={"fail": True}))
    with pytest.raises(openai.APIStatusError) as err:
        oai.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502 and err.value.body["type"] == "provider_error"


def test_overload_is_429_with_retry_after(gateway):
    client, rt, _, _ = gateway
    rt.hub.add(fake_spec("slow", options={"delay": 0.5}))
    model = loaded(rt, "slow")
    model.concurrency, model.local = 1, True  # a local model: one slot, no queue (max_queue 0)

    async def burst():
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=client.headers) as ac:
            body = {"model": "slow", "messages": [{"role": "user", "content": "x"}]}
            return await asyncio.gather(*[ac.post("/v1/chat/completions", json=body) for _ in range(3)])
    responses = client.portal.call(burst)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 429, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "model_overloaded"
    assert client.get("/health").status_code == 200


def test_rate_limit_per_key(gateway):
    client, rt, _, _ = gateway
    secret, _ = create_key(rt.store, name="slowpoke", role="app", rpm_limit=2)
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "x"}]}
    codes = [client.post("/v1/chat/completions", json=body, headers=headers).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_token_budget(gateway):
    client, rt, _, _ = gateway
    secret, _ = create_key(rt.store, name="tight", role="app", token_budget=5, budget_period="day")
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "one two three"}]}
    assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
    rt.recorder.flush()
    refused = client.post("/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"


def test_app_key_limited_to_its_models(gateway):
    client, rt, _, _ = gateway
    secret, _ = create_key(rt.store, name="bot", role="app", allowed_models=["fake-embed"])
    headers = {"Authorization": f"Bearer {secret}"}
    refused = client.post("/v1/chat/completions", headers=headers,
                          json={"model": "fake-chat", "messages": [{"role": "user", "content": "x"}]})
    assert refused.status_code == 403
    assert client.post("/v1/embeddings", headers=headers, json={"model": "fake-embed", "input": "x"}).status_code == 200
    assert [m["id"] for m in client.get("/v1/models", headers=headers).json()["data"]] == ["fake-embed"]


def test_auth_errors(gateway):
    client, rt, secret, key = gateway
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "x"}]}
    missing = client.post("/v1/chat/completions", json=body, headers={"Authorization": ""})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    wrong = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer gf-nope"})
    assert wrong.status_code == 401
    revoke_key(rt.store, key.id)
    revoked = client.post("/v1/chat/completions", json=body)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]


def test_admin_routes_need_roles(gateway):
    client, rt, _, _ = gateway
    dev, _ = create_key(rt.store, name="dev", role="developer")
    created = client.post("/admin/keys", json={"name": "new-app", "role": "app"})
    assert created.status_code == 201 and created.json()["key"].startswith("gf-")
    assert client.get("/admin/keys", headers={"Authorization": f"Bearer {dev}"}).status_code == 403
    assert client.get("/admin/calls", headers={"Authorization": f"Bearer {dev}"}).status_code == 200
    revoked = client.delete(f"/admin/keys/{created.json()['id']}")
    assert revoked.json()["revoked_at"] is not None
    assert client.delete("/admin/keys/nope").status_code == 404


def test_bad_bodies_keep_the_openai_error_shape(gateway):
    client, _, _, _ = gateway
    cases = [
        (b"{not json", 400, "invalid_json"),
        (json.dumps({"model": "fake-chat", "messages": [{"role": "user", "content": "x"}], "bogus": 1}), 400, "unknown_parameter"),
        (json.dumps({"model": "fake-chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}), 400, "invalid_value"),
        (json.dumps({"model": "fake-chat", "messages": []}), 400, "invalid_value"),
    ]
    for body, status, code in cases:
        response = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == status, body
        error = response.json()["error"]
        assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]


def test_oversized_body_is_413(gateway):
    client, _, _, _ = gateway
    big = b'{"model": "fake-chat", "messages": [{"role": "user", "content": "' + b"x" * (50 * 2**20) + b'"}]}'
    response = client.post("/v1/chat/completions", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert client.get("/health").json()["status"] == "ok"


def test_unknown_route_and_method(gateway):
    client, _, _, _ = gateway
    assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"
    assert client.get("/v1/chat/completions").status_code == 405


def test_content_logging_can_be_turned_off(tmp_path):
    settings = load_settings(home=tmp_path, environ={}, overrides={"log_content": False})
    app = create_app(settings, builtins=False)
    with TestClient(app) as client:
        rt = app.state.runtime
        rt.hub.add(fake_spec("fake-chat"))
        secret, _ = create_key(rt.store, name="t", role="admin")
        client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                    json={"model": "fake-chat", "messages": [{"role": "user", "content": "secret stuff"}]})
        [row] = calls(rt)
        assert row["request"] is None and row["response"] is None and row["completion_tokens"] == 3


def test_metrics_count_requests_and_tokens(oai, gateway):
    client, _, _, _ = gateway
    oai.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])
    text = client.get("/metrics").text
    assert 'genfoundry_requests_total{endpoint="chat",model="fake-chat",status="ok"} 1.0' in text
    assert 'genfoundry_tokens_total{kind="completion",model="fake-chat"} 2.0' in text
    assert "genfoundry_time_to_first_token_seconds_bucket" in text


def test_a_request_checks_the_hub_once_and_never_on_the_event_loop(oai, gateway):
    """The hub's one store query per request rides in the key check's worker thread."""
    _, rt, _, _ = gateway
    seen = []
    real = rt.hub._version

    def version():
        try:
            asyncio.get_running_loop()
            seen.append("event loop")
        except RuntimeError:
            seen.append("worker thread")
        return real()
    rt.hub._version = version
    try:
        for stream in (False, True):
            seen.clear()
            reply = oai.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}],
                                                stream=stream)
            if stream:
                assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices) == "echo: hi"
            else:
                assert reply.choices[0].message.content == "echo: hi"
            assert seen == ["worker thread"], seen
    finally:
        rt.hub._version = real
