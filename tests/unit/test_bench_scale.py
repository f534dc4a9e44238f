"""The pure parts of `genfoundry bench scale`: wrk's report, the verdict, the fake upstream."""

from __future__ import annotations

import http.client
import json

import openai
import pytest

from genfoundry.bench.scale import (UPSTREAM_MODEL, chat_body, parse_wrk, start_upstream, verdict,
                                    wrk_script)
from genfoundry.testing.servers import free_port, stop_process

WRK_OUT = """Running 5s test @ http://127.0.0.1:8123/v1/chat/completions
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   363.04ms  100.10ms   1.16s    90.04%
    Req/Sec    29.02     19.66    90.00     76.09%
  Latency Distribution
     50%  463.00us
     75%   12.50ms
     90%    1.20s
     99%    2.00m
  1000 requests in 5.00s, 399.37KB read
  Socket errors: connect 0, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 40
Requests/sec:    200.00
Transfer/sec:     79.59KB
"""


def test_parse_wrk_reads_rates_errors_and_latency():
    got = parse_wrk(WRK_OUT)
    assert got["requests"] == 1000 and got["seconds"] == 5.0
    assert got["requests_per_s"] == 200.0
    assert got["non_2xx"] == 40
    assert got["socket_errors"] == {"connect": 0, "read": 3, "write": 0, "timeout": 7}
    assert got["ok_requests_per_s"] == pytest.approx((1000 - 40 - 3 - 7) / 5.0)
    assert got["latency_ms"] == {"p50": 0.463, "p75": 12.5, "p90": 1200.0, "p99": 120000.0, "mean": 363.04}


def test_parse_wrk_clean_run_and_garbage():
    clean = "\n".join(line for line in WRK_OUT.splitlines() if "errors" not in line and "Non-2xx" not in line)
    got = parse_wrk(clean)
    assert got["non_2xx"] == 0 and not any(got["socket_errors"].values())
    assert got["ok_requests_per_s"] == 200.0
    with pytest.raises(ValueError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def _wrk(rps: float, non_2xx: int = 0) -> dict:
    return {"ok_requests_per_s": rps, "non_2xx": non_2xx,
            "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}}


LATENCY = {"direct": {"p50": 0.5, "p95": 1.0}, "genfoundry": {"p50": 4.5, "p95": 6.0},
           "litellm": {"p50": 18.5, "p95": 21.0}}


def test_verdict_passes_when_both_goals_are_met():
    got = verdict(LATENCY, {"one_worker": {"genfoundry": _wrk(300), "litellm": _wrk(100)},
                            "cores": {"genfoundry": _wrk(500), "litellm": _wrk(200)}})
    assert got["overhead_ms"] == {"genfoundry": {"p50": 4.0, "p95": 5.0}, "litellm": {"p50": 18.0, "p95": 20.0}}
    checks = got["checks"]
    assert checks["overhead_ratio_p50"] == 0.222 and checks["overhead_ratio_p95"] == 0.25
    assert checks["overhead_pass"] is True
    assert checks["rps_ratio_one_worker"] == 3.0 and checks["rps_pass_one_worker"] is True
    assert checks["rps_ratio_cores"] == 2.5 and checks["rps_pass_cores"] is True
    assert checks["passed"] is True


def test_verdict_fails_on_errors_and_is_null_when_unmeasured():
    slow = {**LATENCY, "genfoundry": {"p50": 12.5, "p95": 6.0}}  # p50 overhead 12 of 18: over half
    got = verdict(slow, {"one_worker": {"genfoundry": _wrk(300, non_2xx=1), "litellm": _wrk(100)},
                         "cores": {"genfoundry": None, "litellm": _wrk(200)}})
    checks = got["checks"]
    assert checks["overhead_pass"] is False
    assert checks["rps_ratio_one_worker"] == 3.0 and checks["rps_pass_one_worker"] is False  # a non-2xx answer
    assert checks["rps_ratio_cores"] is None and checks["rps_pass_cores"] is None
    assert checks["passed"] is False
    fine = verdict(LATENCY, {"one_worker": {"genfoundry": _wrk(300), "litellm": _wrk(100)},
                             "cores": {"genfoundry": None, "litellm": _wrk(200)}})
    assert fine["checks"]["passed"] is None  # nothing failed, but a part was not measured


def test_wrk_script_posts_the_body_with_the_key():
    body = json.dumps({"messages": [{"role": "user", "content": "a ]] b ]=] c"}]}).encode()
    script = wrk_script(body, "gf-secret")
    assert 'wrk.method = "POST"' in script
    assert 'wrk.headers["Authorization"] = "Bearer gf-secret"' in script
    assert "wrk.body = [==[" + body.decode() + "]==]" in script  # a long bracket the body cannot close
    assert "Authorization" not in wrk_script(body, None)


@pytest.fixture(scope="module")
def upstream_port():
    port = free_port()
    proc = start_upstream(port)
    yield port
    stop_process(proc)


def test_fake_upstream_answers_the_openai_client(upstream_port):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{upstream_port}/v1", api_key="none", max_retries=0)
    reply = client.chat.completions.create(model=UPSTREAM_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Paris is the capital of France."
    assert reply.usage.total_tokens == 22
    assert [m.id for m in client.models.list()] == [UPSTREAM_MODEL]
    stream = client.chat.completions.create(model=UPSTREAM_MODEL, messages=[{"role": "user", "content": "hi"}],
                                            stream=True, stream_options={"include_usage": True})
    events = list(stream)
    assert "".join(e.choices[0].delta.content or "" for e in events if e.choices) == \
        "Paris is the capital of France."
    assert events[-1].usage.completion_tokens == 8


def test_fake_upstream_keeps_the_connection_and_reads_chunked_bodies(upstream_port):
    conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
    for _ in range(3):  # one connection, several requests
        conn.request("POST", "/v1/chat/completions", chat_body(), {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["object"] == "chat.completion"
    conn.request("POST", "/v1/chat/completions", iter([chat_body()[:10], chat_body()[10:]]),
                 {"Content-Type": "application/json"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["choices"][0]["finish_reason"] == "stop"
    conn.request("GET", "/nowhere")
    response = conn.getresponse()
    assert response.status == 404
    response.read()
    conn.close()
