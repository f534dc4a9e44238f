"""An OpenAI-compatible upstream that answers a stream request in the wrong shape.

The gateway always streams from upstream. Some servers and proxies ignore
``stream: true`` and answer with one JSON body, cut a stream short, or put an
HTML error page or an error object where events belong. Each of these must be
an answer (when the body is a valid completion) or a 502 that names the upstream
status with a snippet, recorded as a failed call, with the fallback tried; never
an empty answer with status 200.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from genfoundry.core.errors import ProviderError
from genfoundry.core.settings import load_settings
from genfoundry.core.types import GenerationRequest, Message
from genfoundry.gateway.app import create_app
from genfoundry.gateway.keys import create_key
from genfoundry.models.providers.openai_compat import OpenAICompatModel
from genfoundry.models.spec import ModelSpec
from genfoundry.observe.calls import list_calls

COMPLETION = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}
TEXT_COMPLETION = {"id": "c2", "object": "text_completion", "created": 0, "model": "m",
                   "choices": [{"index": 0, "text": " Rome", "finish_reason": "length"}]}


def _event(delta: dict, finish: str | None = None) -> str:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(chunk)}\n\n"


# name -> (status, content type, body)
SHAPES: dict[str, tuple[int, str, str]] = {
    "json for a stream": (200, "application/json", json.dumps(COMPLETION)),
    "truncated stream": (200, "text/event-stream", _event({"role": "assistant", "content": "Par"})),
    "empty stream": (200, "text/event-stream", "data: [DONE]\n\n"),
    "html error page": (502, "text/html", "<html><head><title>502 Bad Gateway</title></head>"
                                          "<body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"),
    "html with 200": (200, "text/html", "<html><body>Please sign in</body></html>"),
    "200 with an error object": (200, "application/json",
                                 json.dumps({"error": {"message": "model overloaded", "type": "server_error"}})),
    "wrong content type": (200, "text/plain", "Paris is the capital"),
    "json that is not a completion": (200, "application/json", json.dumps({"ok": True})),
}


def _model(status: int, kind: str, body: str) -> OpenAICompatModel:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body.encode(), headers={"content-type": kind})
    spec = ModelSpec(name="upstream", provider="openai_compat", location="http://upstream.test/v1",
                     capabilities=["chat", "completion"], options={"max_retries": 0})
    return OpenAICompatModel(spec, http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


async def _drain(model, request) -> tuple[str, str | None]:
    text, finish = [], None
    async for chunk in model.stream(request):
        text.append(chunk.text)
        finish = chunk.finish_reason or finish
    return "".join(text), finish


CHAT = GenerationRequest(messages=[Message(role="user", content="capital of France?")])


def test_a_json_answer_to_a_stream_request_is_used():
    text, finish = asyncio.run(_drain(_model(200, "application/json", json.dumps(COMPLETION)), CHAT))
    assert (text, finish) == ("Paris.", "stop")


def test_a_json_text_completion_to_a_stream_request_is_used():
    model = _model(200, "application/json; charset=utf-8", json.dumps(TEXT_COMPLETION))
    text, finish = asyncio.run(_drain(model, GenerationRequest(prompt="The capital of Italy is")))
    assert (text, finish) == (" Rome", "length")


@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "json for a stream"])
def test_malformed_upstream_answers_are_provider_errors(shape):
    status, kind, body = SHAPES[shape]
    with pytest.raises(ProviderError) as caught:
        asyncio.run(_drain(_model(status, kind, body), CHAT))
    message = str(caught.value)
    assert "upstream" in message or "server of model 'upstream'" in message
    if status != 200 or kind not in ("text/event-stream",):
        assert str(status) in message  # the upstream's status is named
    if "html" in shape:
        assert "<html" in message or "Bad Gateway" in message or "sign in" in message  # with a snippet
        assert len(message) < 600


class _Upstream(BaseHTTPRequestHandler):
    shape = "json for a stream"

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        status, kind, body = SHAPES[type(self).shape]
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def gateway(tmp_path, upstream):
    settings = load_settings(home=tmp_path, environ={}, overrides={"guard": False})
    app = create_app(settings, builtins=False)
    with TestClient(app) as client:
        rt = app.state.runtime
        base = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
        rt.hub.add(ModelSpec(name="fallback", provider="fake", location="memory", capabilities=["chat"]))
        rt.hub.add(ModelSpec(name="proxied", provider="openai_compat", location=base, capabilities=["chat"],
                             options={"max_retries": 0}))
        rt.hub.add(ModelSpec(name="proxied-with-fallback", provider="openai_compat", location=base,
                             capabilities=["chat"], fallbacks=["fallback"], options={"max_retries": 0}))
        secret, _ = create_key(rt.store, name="t", role="admin")
        yield openai.OpenAI(base_url="http://testserver/v1", api_key=secret, http_client=client,
                            max_retries=0), rt


def _calls(rt):
    rt.recorder.flush()
    return list_calls(rt.store, limit=10)


def test_gateway_answers_from_a_json_body_for_a_whole_request(gateway, upstream):
    oai, rt = gateway
    _Upstream.shape = "json for a stream"
    reply = oai.chat.completions.create(model="proxied", messages=[{"role": "user", "content": "capital?"}])
    assert reply.choices[0].message.content == "Paris."
    assert reply.usage.completion_tokens == 2
    assert _calls(rt)[0]["status"] == "ok"


@pytest.mark.parametrize("shape", ["html error page", "200 with an error object", "truncated stream",
                                   "empty stream", "wrong content type"])
def test_gateway_gives_502_and_records_the_failure(gateway, upstream, shape):
    oai, rt = gateway
    _Upstream.shape = shape
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="proxied", messages=[{"role": "user", "content": "capital?"}])
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "provider_error"
    [row] = _calls(rt)
    assert row["status"] == "error" and row["http_status"] == 502 and row["error_type"] == "provider_error"


def test_gateway_falls_back_when_the_upstream_answers_garbage(gateway, upstream):
    oai, rt = gateway
    _Upstream.shape = "html with 200"
    reply = oai.chat.completions.create(model="proxied-with-fallback",
                                        messages=[{"role": "user", "content": "hello"}])
    assert reply.model == "fallback" and reply.choices[0].message.content
    [row] = _calls(rt)
    assert row["status"] == "ok" and row["fallback_from"] == "proxied-with-fallback"
