"""What tracing costs: the same chat requests through a gateway with tracing on and one with it off.

Both gateways are real ``genfoundry serve`` processes with the default guard,
and both relay to **one** llama-server (the default model, ``-np`` 8), registered
in each hub as an OpenAI-compatible model, so the engine is the same for both and
the only difference is the ``tracing`` setting. Requests alternate between the two
(on, off, on, ...), so noise from the machine falls on both alike:

1. single stream: non-streaming chat requests, the same prompt on each side in
   turn; latency p50 and p95 per side;
2. concurrency: rounds of N concurrent streaming requests; aggregate tokens/s
   per round, median per side;
3. the gateway alone: a fake model that answers at once, in process, so the
   milliseconds tracing adds are not hidden in the model's time.

Prometheus metrics are always on (they are counters in memory); both sides pay
for them.

Example::

    result = run_observe_bench(settings, binary="/path/llama-server", model_path=spec.location)
    result["verdict"]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from genfoundry.core.settings import Settings, load_settings
from genfoundry.core.store import Store
from genfoundry.bench.gateway import BenchConfig, _start_llama_server, concurrent_streams
from genfoundry.bench.gateway import openai_chat_stream
from genfoundry.gateway.keys import create_key
from genfoundry.guard.keys import generate_key_file
from genfoundry.models.hub import ModelHub
from genfoundry.models.spec import ModelSpec
from genfoundry.testing.servers import stop_process, wait_http

__all__ = ["gateway_only", "run_observe_bench"]

TOPICS = ["tides", "bread", "volcanoes", "libraries", "bicycles", "glaciers", "owls", "lanterns", "rivers",
          "pottery", "comets", "orchards", "ferries", "chess", "deserts", "violins"]


def _prompt(i: int) -> str:
    return f"Question {i}: in two sentences, what should a child know about {TOPICS[i % len(TOPICS)]}?"


def _home(root: Path, name: str, engine_port: int) -> tuple[Path, str]:
    home = root / name
    home.mkdir(parents=True)
    generate_key_file(home / "vault.key")
    settings = load_settings(home=home, environ={})
    store = Store.open(settings.resolved_database_url)
    hub = ModelHub(store, settings)
    # Cleared for restricted data like the local default, so both sides run the same (cheap) guard path.
    hub.add(ModelSpec(name="bench", provider="openai_compat", location=f"http://127.0.0.1:{engine_port}/v1",
                      clearance="restricted", capabilities=["chat", "completion"],
                      options={"api_key": "none", "model": "bench"}))
    secret, _ = create_key(store, name="bench", role="developer")
    store.close()
    return home, secret


def _serve(home: Path, port: int, tracing: bool) -> subprocess.Popen:
    env = {**os.environ, "GENFOUNDRY_HOME": str(home), "GENFOUNDRY_TRACING": "true" if tracing else "false",
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "genfoundry.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc


def _percentiles(values: list[float]) -> dict:
    values = sorted(values)
    return {"p50": round(statistics.median(values), 2), "p95": round(values[int(0.95 * (len(values) - 1))], 2),
            "n": len(values)}


def _chat_once(client: httpx.Client, i: int, max_tokens: int) -> float:
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json={
        "model": "bench", "max_tokens": max_tokens, "temperature": 0,
        "messages": [{"role": "user", "content": _prompt(i)}]})
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


def gateway_only(requests: int = 300) -> dict:
    """Latency of the gateway itself with tracing on and off (a fake model that answers at once)."""
    from fastapi.testclient import TestClient

    from genfoundry.gateway.app import create_app

    clients, stack = {}, []
    root = Path(tempfile.mkdtemp(prefix="gf-observe-bench-"))
    for side, tracing in (("on", True), ("off", False)):
        home = root / side
        home.mkdir()
        generate_key_file(home / "vault.key")
        settings = load_settings(home=home, environ={}, overrides={"tracing": tracing,
                                                                   "vault_key_file": home / "vault.key"})
        app = create_app(settings, builtins=False)
        client = TestClient(app)
        client.__enter__()
        stack.append(client)
        rt = app.state.runtime
        rt.hub.add(ModelSpec(name="fake-chat", provider="fake", location="memory", clearance="restricted",
                             capabilities=["chat", "completion"]))
        secret, _ = create_key(rt.store, name="bench", role="developer")
        client.headers["Authorization"] = f"Bearer {secret}"
        clients[side] = client
    times: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for i in range(requests + 20):
            for side in ("on", "off") if i % 2 == 0 else ("off", "on"):
                started = time.perf_counter()
                response = clients[side].post("/v1/chat/completions", json={
                    "model": "fake-chat", "messages": [{"role": "user", "content": _prompt(i)}]})
                response.raise_for_status()
                if i >= 20:  # warm-up
                    times[side].append((time.perf_counter() - started) * 1000)
    finally:
        for client in stack:
            client.__exit__(None, None, None)
    on, off = _percentiles(times["on"]), _percentiles(times["off"])
    return {"requests_per_side": requests, "latency_ms": {"tracing_on": on, "tracing_off": off},
            "added_ms_p50": round(on["p50"] - off["p50"], 3)}


def run_observe_bench(settings: Settings, *, binary: str, model_path: str, single: int = 60, rounds: int = 8,
                      concurrency: int = 8, max_tokens: int = 32, stream_tokens: int = 64, port: int = 8890,
                      progress=print) -> dict:
    """See the module docstring."""
    from openai import OpenAI

    root = Path(tempfile.mkdtemp(prefix="gf-observe-bench-"))
    cfg = BenchConfig(model_path=model_path, concurrency=concurrency, port=port)
    progress("starting llama-server and two gateways (tracing on, tracing off)…")
    engine, command = _start_llama_server(cfg, settings, binary)
    procs = [engine]
    try:
        sides = {}
        for offset, (side, tracing) in enumerate((("on", True), ("off", False)), start=2):
            home, secret = _home(root, side, port + 1)
            procs.append(_serve(home, port + offset, tracing))
            sides[side] = {"http": httpx.Client(base_url=f"http://127.0.0.1:{port + offset}",
                                                headers={"Authorization": f"Bearer {secret}"}, timeout=300),
                           "openai": OpenAI(base_url=f"http://127.0.0.1:{port + offset}/v1", api_key=secret,
                                            max_retries=0)}
        progress(f"single stream: {single} chat requests per side, alternating…")
        latency: dict[str, list[float]] = {"on": [], "off": []}
        for i in range(-2, single):  # two warm-up turns
            for side in ("on", "off") if i % 2 == 0 else ("off", "on"):
                ms = _chat_once(sides[side]["http"], i, max_tokens)
                if i >= 0:
                    latency[side].append(ms)
        progress(f"concurrency: {rounds} rounds of {concurrency} streams per side, alternating…")
        aggregate: dict[str, list[dict]] = {"on": [], "off": []}
        for r in range(rounds):
            for side in ("on", "off") if r % 2 == 0 else ("off", "on"):
                client = sides[side]["openai"]
                aggregate[side].append(concurrent_streams(
                    lambda i, c=client: openai_chat_stream(c, "bench", _prompt(i), stream_tokens),
                    concurrency, offset=1000 + r * concurrency))
        progress("the gateway alone (fake model, in process)…")
        alone = gateway_only()
    finally:
        for proc in reversed(procs):
            stop_process(proc)
    on, off = _percentiles(latency["on"]), _percentiles(latency["off"])
    # Paired: request i had the same prompt and the same engine on both sides, one right after the other.
    added = statistics.median(a - b for a, b in zip(latency["on"], latency["off"]))
    tps = {side: statistics.median(r["aggregate_tokens_per_s"] for r in rounds_) for side, rounds_ in
           aggregate.items()}
    totals = {side: sum(r["tokens"] for r in rounds_) / sum(r["wall_s"] for r in rounds_)
              for side, rounds_ in aggregate.items()}
    pair_ratios = [a["aggregate_tokens_per_s"] / b["aggregate_tokens_per_s"]
                   for a, b in zip(aggregate["on"], aggregate["off"]) if b["aggregate_tokens_per_s"]]
    throughput_ratio = totals["on"] / totals["off"] if totals["off"] else None
    return {
        "setup": {"engine": command, "model": model_path, "max_tokens_single": max_tokens,
                  "max_tokens_streams": stream_tokens, "concurrency": concurrency, "rounds": rounds,
                  "cpu_count": os.cpu_count()},
        "single_stream_latency_ms": {"tracing_on": on, "tracing_off": off,
                                     "added_ms_median_of_pairs": round(added, 2),
                                     "added_ms_p50_difference": round(on["p50"] - off["p50"], 2)},
        "concurrent": {"tracing_on": aggregate["on"], "tracing_off": aggregate["off"],
                       "aggregate_tokens_per_s_median": {k: round(v, 2) for k, v in tps.items()},
                       "tokens_per_s_all_rounds": {k: round(v, 2) for k, v in totals.items()},
                       "round_pair_ratios": [round(r, 4) for r in pair_ratios],
                       "throughput_ratio_on_over_off": round(throughput_ratio, 4) if throughput_ratio else None},
        "gateway_only": alone,
        "targets": {"throughput_loss_at_most": 0.02, "added_p50_ms_at_most": 5.0},
        "verdict": {"throughput": throughput_ratio is not None and throughput_ratio >= 0.98,
                    "latency_p50": added <= 5.0, "gateway_only_latency_p50": alone["added_ms_p50"] <= 5.0},
    }
