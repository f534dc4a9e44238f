"""The real gateway process on the real built-in models, through the official openai client."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import time

import httpx
import openai
import psutil
import pytest

from genfoundry.gateway.keys import create_key, revoke_key
from genfoundry.observe.calls import list_calls

from genfoundry.testing.servers import start_gateway, stop_gateway

pytestmark = pytest.mark.integration

FEW_SHOT = [{"role": "user", "content": "What is the capital of Italy?"},
            {"role": "assistant", "content": "The capital of Italy is Rome."},
            {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0, timeout=120)


def test_engine_is_llama_server_with_slots(gateway):
    engine = gateway.health()["engines"]["gemma-3-270m"]
    assert engine["kind"] == "ServerEngine" and engine["concurrency"] == 8


def test_chat_answers_and_is_logged(gateway, client):
    reply = client.chat.completions.create(model="default", messages=FEW_SHOT, max_tokens=20,
                                           temperature=0, stop=["\n"])
    assert "Paris" in reply.choices[0].message.content
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 20
    store = gateway.store()
    deadline = time.monotonic() + 10  # the call log is written in the background: poll for the row
    while not (rows := [r for r in list_calls(store, limit=50) if r["id"] == reply.id]):
        assert time.monotonic() < deadline, "the call was never recorded"
        time.sleep(0.05)
    store.close()
    row = rows[0]
    assert row["status"] == "ok" and row["provider"] == "llamacpp"
    assert row["completion_tokens"] == reply.usage.completion_tokens
    assert row["cost_usd"] > 0 and row["ttft_ms"] > 0
    assert "Paris" in row["response"]["text"]


def test_stream_with_usage(client):
    events = list(client.chat.completions.create(
        model="gemma-3-270m", messages=FEW_SHOT, max_tokens=20, temperature=0, stop=["\n"],
        stream=True, stream_options={"include_usage": True}))
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert "Paris" in text
    assert events[-1].usage.completion_tokens >= 3


def test_text_completion(client):
    reply = client.completions.create(
        model="default", prompt="Q: What is the capital of Italy?\nA: Rome.\nQ: What is the capital of France?\nA:",
        max_tokens=8, temperature=0, stop=["\n"])
    assert "Paris" in reply.choices[0].text


def test_json_schema_output(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "country": {"type": "string", "maxLength": 20}},
              "required": ["city", "country"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Name a city and its country as JSON."}],
        max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
    data = json.loads(reply.choices[0].message.content)
    assert set(data) == {"city", "country"} and all(isinstance(v, str) for v in data.values())


def test_forced_tool_call(client):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                       "required": ["city"], "additionalProperties": False}}}]
    reply = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=tools, tool_choice="required", max_tokens=40, temperature=0)
    [call] = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_embeddings_real_minilm(client):
    result = client.embeddings.create(model="default-embedding", input=[
        "How do I return a parcel?", "What is your returns policy?", "The rocket reached orbit."])
    vectors = [d.embedding for d in result.data]
    assert len(vectors[0]) == 384

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b))
    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])


def test_errors_then_still_serving(gateway, client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=FEW_SHOT)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "word " * 6000}])
    assert err.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="default", messages=FEW_SHOT, max_tokens=-1)
    big = httpx.post(f"{gateway.base_url}/chat/completions", content=b"x" * (50 * 2**20),
                     headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"},
                     timeout=60)
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    store = gateway.store()
    secret, key = create_key(store, name="short-lived", role="app")
    revoke_key(store, key.id)
    store.close()
    revoked = openai.OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        revoked.models.list()
    assert client.chat.completions.create(model="default", messages=FEW_SHOT, max_tokens=5).usage.completion_tokens > 0


def test_eight_concurrent_streams_all_succeed(client):
    def one(i):
        stream = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": f"Story {i}: tell me about the sea."}],
            max_tokens=48, temperature=0, stream=True, stream_options={"include_usage": True})
        return [e for e in stream][-1].usage.completion_tokens
    with cf.ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(one, range(8)))
    assert len(tokens) == 8 and all(t > 0 for t in tokens)


def _slots_busy(gateway) -> int:
    port = gateway.health()["engines"]["gemma-3-270m"]["port"]
    slots = httpx.get(f"http://127.0.0.1:{port}/slots", timeout=5).json()
    return sum(1 for s in slots if s.get("is_processing"))


# Greedy, the built-in model counts on for thousands of tokens: a stream that is sure to be running.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"


def test_disconnect_stops_generation(gateway, client):
    with client.completions.with_streaming_response.create(
            model="default", prompt=COUNTING, max_tokens=3000, temperature=0, stream=True) as response:
        lines = response.iter_lines()
        for _ in range(6):  # next(), not a for-break: closing the iterator would close the stream
            next(lines)
        # /slots is a snapshot the server refreshes between steps: wait for it to show the stream.
        deadline = time.monotonic() + 3
        while _slots_busy(gateway) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _slots_busy(gateway) == 1
    # Left alone, the engine would count on for ~40 s; closing the stream frees the slot at once.
    deadline = time.monotonic() + 5
    while _slots_busy(gateway) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _slots_busy(gateway) == 0


def test_killed_engine_is_restarted(gateway, client):
    engine = gateway.health()["engines"]["gemma-3-270m"]
    os.kill(engine["pid"], signal.SIGKILL)
    time.sleep(0.5)
    reply = client.chat.completions.create(model="default", messages=FEW_SHOT, max_tokens=10, temperature=0, stop=["\n"])
    assert "Paris" in reply.choices[0].message.content
    after = gateway.health()["engines"]["gemma-3-270m"]
    assert after["restarts"] == engine["restarts"] + 1 and after["pid"] != engine["pid"]


def test_engine_killed_mid_stream_gives_an_error_event(gateway, client):
    pid = gateway.health()["engines"]["gemma-3-270m"]["pid"]
    stream = client.completions.create(model="default", prompt=COUNTING, max_tokens=2000, temperature=0,
                                       stream=True)
    with pytest.raises(openai.APIError, match="llama-server"):
        for i, _ in enumerate(stream):
            if i == 3:
                os.kill(pid, signal.SIGKILL)
    reply = client.chat.completions.create(model="default", messages=FEW_SHOT, max_tokens=5)
    assert reply.usage.completion_tokens > 0


def test_overload_answers_429_and_keeps_serving(tmp_path):
    gw = start_gateway(tmp_path / "busy", {"GENFOUNDRY_LLAMA_PARALLEL": "1", "GENFOUNDRY_MAX_QUEUE": "1"})
    try:
        body = {"model": "default", "messages": [{"role": "user", "content": "Tell a long story."}],
                "max_tokens": 64, "temperature": 0}
        headers = {"Authorization": f"Bearer {gw.key}"}

        def post(_):
            return httpx.post(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=120)
        with cf.ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(post, range(6)))
        codes = [r.status_code for r in responses]
        assert codes.count(200) >= 2 and codes.count(429) >= 1 and set(codes) <= {200, 429}
        refused = next(r for r in responses if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "model_overloaded"
        assert post(0).status_code == 200
    finally:
        stop_gateway(gw)


def test_killed_gateway_takes_its_engine_down(tmp_path):
    gw = start_gateway(tmp_path / "doomed")
    engine_pid = gw.health()["engines"]["gemma-3-270m"]["pid"]
    gw.proc.kill()
    gw.proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            # An exited engine may linger as a zombie until init reaps it: that counts as gone.
            if psutil.Process(engine_pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    os.kill(engine_pid, signal.SIGKILL)
    pytest.fail("the engine outlived its killed gateway")


def test_terminated_up_stops_its_engine(tmp_path):
    import subprocess
    import sys

    from genfoundry.testing.servers import free_port
    port = free_port()
    env = {**os.environ, "GENFOUNDRY_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "genfoundry.cli", "up", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # wait for the demo to finish
        if "serving on" in line:
            break
    engine_pid = httpx.get(f"http://127.0.0.1:{port}/health").json()["engines"]["gemma-3-270m"]["pid"]
    proc.terminate()
    assert proc.wait(30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(engine_pid, 0)
