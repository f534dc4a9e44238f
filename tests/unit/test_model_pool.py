"""Model pools: routing by requests in flight, failover before the first token, ejection, health checks.

The backends are the stand-in OpenAI-compatible server (``genfoundry.testing.upstream``) reached through
httpx's ASGI transport, or a transport that refuses every connection (a server that is down).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from genfoundry.core.errors import InvalidRequest, ProviderError
from genfoundry.core.types import GenerationRequest, Message
from genfoundry.gateway.metrics import Metrics
from genfoundry.models.pool import ModelPool
from genfoundry.models.providers.openai_compat import OpenAICompatModel
from genfoundry.models.spec import ModelSpec
from genfoundry.testing.upstream import build_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Down(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request):
        raise httpx.ConnectError("connection refused", request=request)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make_pool(transports: dict[str, httpx.AsyncBaseTransport], *, clock=None, watch=False, **pool) -> ModelPool:
    urls = list(transports)
    spec = ModelSpec(name="pooled", provider="openai_compat", location=urls[0], capabilities=["chat", "embedding"],
                     pool={"backends": urls[1:], **pool})

    def create(member: ModelSpec, settings):
        return OpenAICompatModel(member, settings, http_client=httpx.AsyncClient(
            transport=transports[member.location], base_url=member.location))

    return ModelPool(spec, None, create, clock=clock or Clock(), watch=watch, health_transport=_Router(transports))


def asgi(name: str, **kw) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=build_app(name, **kw))


def ask(text: str = "hi") -> GenerationRequest:
    return GenerationRequest(messages=[Message("user", text)], max_tokens=8)


async def test_members_get_the_entrys_options_and_no_retries_of_their_own():
    pool = make_pool({"http://a/v1": asgi("a"), "http://b/v1": asgi("b")})
    assert [b.url for b in pool.backends] == ["http://a/v1", "http://b/v1"]
    assert all(b.model.spec.pool is None and b.model.spec.options["max_retries"] == 0 for b in pool.backends)
    assert pool.concurrency == 2 * pool.backends[0].model.concurrency
    await pool.close()


async def test_requests_take_turns_when_no_backend_is_busier():
    pool = make_pool({"http://a/v1": asgi("a"), "http://b/v1": asgi("b")})
    answers = [(await pool.generate(ask())).text.split(":")[0] for _ in range(6)]
    assert sorted(answers) == ["a"] * 3 + ["b"] * 3
    assert [b.served for b in pool.backends] == [3, 3]
    await pool.close()


async def test_the_backend_with_fewer_requests_in_flight_gets_the_next():
    pool = make_pool({"http://a/v1": asgi("a", chunks=50, chunk_delay=0.02), "http://b/v1": asgi("b")})
    pool.backends[1].outstanding = 2  # b is busy with two requests already
    slow = pool.stream(ask())
    first = await slow.__anext__()
    assert first.text.startswith("a:")
    assert pool.backends[0].outstanding == 1
    assert (await pool.generate(ask())).text.startswith("a:")  # 1 in flight on a < 2 on b
    await slow.aclose()
    assert pool.backends[0].outstanding == 0
    await pool.close()


async def test_a_dead_backend_is_skipped_before_the_first_token_and_then_left_out():
    clock = Clock()
    pool = make_pool({"http://a/v1": Down(), "http://b/v1": asgi("b")}, clock=clock, eject_after=2, eject_seconds=30)
    for _ in range(4):
        chunks = [c async for c in pool.stream(ask())]
        assert chunks[0].text.startswith("b:") and chunks[-1].finish_reason == "stop"
    dead = pool.backends[0]
    assert dead.failed == 2, "after two failures in a row it is no longer tried first"
    status = pool.status()[0]
    assert status["ejected"] and status["ejected_by"] == "requests", status
    clock.now += 31  # its time out is over: it is tried again (and fails over again)
    assert (await pool.generate(ask())).text.startswith("b:")
    assert dead.failed >= 3


async def test_every_backend_down_is_a_provider_error_naming_each():
    pool = make_pool({"http://a/v1": Down(), "http://b/v1": Down()})
    with pytest.raises(ProviderError, match="every backend of pool 'pooled' failed.*http://a/v1.*http://b/v1"):
        await pool.generate(ask())
    with pytest.raises(ProviderError):
        [c async for c in pool.stream(ask())]
    assert all(b.outstanding == 0 for b in pool.backends)
    await pool.close()


async def test_a_backend_that_answers_garbage_fails_over():
    pool = make_pool({"http://a/v1": asgi("a", mode="garbage"), "http://b/v1": asgi("b")})
    for _ in range(2):
        assert (await pool.generate(ask())).text.startswith("b:")
    assert pool.backends[0].failed >= 1 and pool.backends[1].served == 2
    await pool.close()


async def test_a_clients_mistake_is_not_retried_on_other_backends():
    calls = []

    class Invalid(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            calls.append(request.url)
            return httpx.Response(400, json={"error": {"message": "bad temperature", "type": "invalid_request_error"}})

    pool = make_pool({"http://a/v1": Invalid(), "http://b/v1": Invalid()})
    with pytest.raises(InvalidRequest):
        await pool.generate(ask())
    assert len(calls) == 1
    assert pool.backends[0].failures == 0  # the server is fine; the request was not
    await pool.close()


async def test_a_failure_after_the_first_token_ends_the_request():
    class DiesMidStream(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            async def body():
                yield b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m",' \
                      b'"choices":[{"index":0,"delta":{"content":"half"},"finish_reason":null}]}\n\n'
                raise httpx.ReadError("backend died")

            class Stream(httpx.AsyncByteStream):
                async def __aiter__(self):
                    async for part in body():
                        yield part

            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Stream())

    pool = make_pool({"http://a/v1": DiesMidStream(), "http://b/v1": DiesMidStream()})
    got = []
    with pytest.raises(ProviderError):
        async for chunk in pool.stream(ask()):
            got.append(chunk.text)
    assert got == ["half"]  # not a second answer from the other backend
    assert sum(b.failed for b in pool.backends) == 1
    await pool.close()


async def test_health_checks_leave_out_a_failing_backend_and_bring_it_back():
    clock = Clock()
    sick = {"on": True}

    class Flaky(httpx.AsyncBaseTransport):
        def __init__(self):
            self.inner = asgi("a")

        async def handle_async_request(self, request):
            if sick["on"]:
                return httpx.Response(503, json={"error": {"message": "loading"}})
            return await self.inner.handle_async_request(request)

    pool = make_pool({"http://a/v1": Flaky(), "http://b/v1": asgi("b")}, clock=clock)
    transports = {"http://a/v1": Flaky(), "http://b/v1": asgi("b")}
    async with httpx.AsyncClient(transport=_Router(transports)) as client:
        status = await pool.check_health(client)
        assert [s["healthy"] for s in status] == [False, True]
        assert status[0]["ejected"] and status[0]["ejected_by"] == "health"
        assert (await pool.generate(ask())).text.startswith("b:")
        assert pool.backends[0].failed == 0, "a backend left out by its check gets no requests"
        sick["on"] = False
        status = await pool.check_health(client)
        assert [s["ejected"] for s in status] == [False, False]
    answers = {(await pool.generate(ask())).text.split(":")[0] for _ in range(4)}
    assert answers == {"a", "b"}
    await pool.close()


class _Router(httpx.AsyncBaseTransport):
    def __init__(self, by_base: dict[str, httpx.AsyncBaseTransport]):
        self.by_base = by_base

    async def handle_async_request(self, request):
        for base, transport in self.by_base.items():
            if str(request.url).startswith(base):
                return await transport.handle_async_request(request)
        raise httpx.ConnectError("no such host", request=request)


async def test_embeddings_fail_over_too():
    pool = make_pool({"http://a/v1": Down(), "http://b/v1": asgi("b")})
    result = await pool.embed(["one", "three"])
    assert [v[0] for v in result.vectors] == [3.0, 5.0]
    await pool.close()


async def test_metrics_export_each_backend():
    pool = make_pool({"http://a/v1": Down(), "http://b/v1": asgi("b")}, eject_after=1)
    await pool.generate(ask())
    metrics = Metrics()
    metrics.watch_pools(lambda: [pool])
    text = metrics.render().decode()
    assert 'genfoundry_pool_backend_up{backend="http://a/v1",model="pooled"} 0.0' in text
    assert 'genfoundry_pool_backend_up{backend="http://b/v1",model="pooled"} 1.0' in text
    assert 'genfoundry_pool_backend_requests_total{backend="http://b/v1",model="pooled",outcome="ok"} 1.0' in text
    assert 'genfoundry_pool_backend_requests_total{backend="http://a/v1",model="pooled",outcome="failed"} 1.0' in text
    await pool.close()


async def test_health_loop_runs_on_first_use_and_stops_on_close():
    pool = make_pool({"http://a/v1": Down(), "http://b/v1": asgi("b")}, watch=True, health_interval_s=0.05)
    await pool.generate(ask())
    task = pool._health
    assert task is not None and not task.done()
    await asyncio.sleep(0.2)
    assert [s["healthy"] for s in pool.status()] == [False, True]
    await pool.close()
    assert task.done() and pool._health is None


def test_a_pool_needs_server_urls():
    with pytest.raises(ValueError, match="must be the http"):
        ModelSpec(name="x", provider="llamacpp", location="/models/a.gguf", pool={"backends": ["http://b/v1"]})
    with pytest.raises(ValueError, match="not an http"):
        ModelSpec(name="x", provider="openai_compat", location="http://a/v1", pool={"backends": ["b:8000"]})
