"""The gateway benchmark: the gateway against its peers, measured in one run.

1. direct llama-cpp-python in this process (one stream): decode tokens/s, time to first token;
2. the gateway (a real `genfoundry serve` process) through the official openai client,
   same rendered prompt, greedy, streaming: the same two figures;
3. eight concurrent streaming clients through the gateway, and eight against
   llama.cpp's own llama-server (-np 8) started with the same binary and model:
   aggregate tokens/s and how many requests succeeded;
4. resident memory of the gateway process and of its engine, models loaded.

Every run uses a distinct prompt prefix so no engine answers from a prompt cache.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from genfoundry.core.settings import Settings
from genfoundry.models.prompting import TEMPLATES, render_chat
from genfoundry.core.types import Message

__all__ = [
    "BenchConfig",
    "StreamTiming",
    "bench_direct",
    "bench_gateway",
    "bench_llama_server",
    "concurrent_streams",
    "direct_stream",
    "openai_chat_stream",
    "openai_completion_stream",
    "run_gateway_bench",
]

STORY = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


@dataclass
class BenchConfig:
    model_path: str
    max_tokens: int = 128
    runs: int = 5
    concurrency: int = 8
    port: int = 8790


def _question(i: int) -> str:
    return f"Story number {i}. {STORY}"


@dataclass
class StreamTiming:
    ttft_s: float
    decode_tps: float | None
    tokens: int
    seconds: float


def _timing(start: float, first: float | None, last: float, tokens: int) -> StreamTiming:
    first = first or last
    decode = (tokens - 1) / (last - first) if tokens > 1 and last > first else None
    return StreamTiming(ttft_s=first - start, decode_tps=decode, tokens=tokens, seconds=last - start)


def direct_stream(llm, prompt: str, stop: list[str], max_tokens: int) -> StreamTiming:
    start, first, pieces = time.perf_counter(), None, []
    for out in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stop=stop, stream=True):
        text = out["choices"][0]["text"]
        if text:
            first = first or time.perf_counter()
            pieces.append(text)
    last = time.perf_counter()
    tokens = len(llm.tokenize("".join(pieces).encode(), add_bos=False, special=True))
    return _timing(start, first, last, tokens)


def openai_chat_stream(client, model: str, question: str, max_tokens: int) -> StreamTiming:
    start, first, tokens = time.perf_counter(), None, 0
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=max_tokens,
        temperature=0, stream=True, stream_options={"include_usage": True})
    for event in stream:
        if event.choices and event.choices[0].delta.content:
            first = first or time.perf_counter()
        if event.usage:
            tokens = event.usage.completion_tokens
    return _timing(start, first, time.perf_counter(), tokens)


def openai_completion_stream(client, prompt: str, stop: list[str], max_tokens: int) -> StreamTiming:
    start, first, tokens = time.perf_counter(), None, 0
    stream = client.completions.create(model="bench", prompt=prompt, max_tokens=max_tokens, temperature=0,
                                       stop=stop, stream=True, stream_options={"include_usage": True})
    for event in stream:
        if event.choices and event.choices[0].text:
            first = first or time.perf_counter()
        if event.usage:
            tokens = event.usage.completion_tokens
    return _timing(start, first, time.perf_counter(), tokens)


def _render(question: str) -> tuple[str, list[str]]:
    rendered = render_chat([Message(role="user", content=question)], TEMPLATES["gemma"])
    return rendered.text, rendered.stop


def _summary(timings: list[StreamTiming]) -> dict:
    decodes = [t.decode_tps for t in timings if t.decode_tps]
    return {"decode_tokens_per_s_p50": round(statistics.median(decodes), 2) if decodes else None,
            "ttft_ms_p50": round(statistics.median(t.ttft_s for t in timings) * 1000, 1),
            "tokens_per_run": [t.tokens for t in timings]}


def bench_direct(cfg: BenchConfig, settings: Settings) -> dict:
    import llama_cpp
    llm = llama_cpp.Llama(model_path=cfg.model_path, n_ctx=settings.llama_context,
                          n_threads=settings.llama_threads or os.cpu_count(), n_batch=512, verbose=False)
    timings = []
    for i in range(cfg.runs + 1):
        prompt, stop = _render(_question(1000 + i))
        timing = direct_stream(llm, prompt, stop, cfg.max_tokens)
        if i:  # the first run warms caches and is not counted
            timings.append(timing)
    del llm
    return _summary(timings)


def concurrent_streams(run_one, n: int) -> dict:
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(run_one, i) for i in range(n)]
        results, errors = [], []
        for f in futures:
            try:
                results.append(f.result())
            except Exception as exc:  # counted, reported
                errors.append(repr(exc)[:200])
    wall = time.perf_counter() - start
    tokens = sum(r.tokens for r in results)
    return {"requests": n, "succeeded": len(results), "errors": errors, "tokens": tokens,
            "wall_s": round(wall, 2), "aggregate_tokens_per_s": round(tokens / wall, 2)}


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _rss_mb(pid: int) -> dict:
    proc = psutil.Process(pid)
    children = proc.children(recursive=True)
    own = proc.memory_info().rss / 2**20
    engine = sum(c.memory_info().rss for c in children) / 2**20
    return {"gateway_rss_mb": round(own, 1), "engine_rss_mb": round(engine, 1),
            "total_rss_mb": round(own + engine, 1)}


def bench_gateway(cfg: BenchConfig, home: Path, key: str) -> dict:
    from openai import OpenAI
    env = {**os.environ, "GENFOUNDRY_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genfoundry.cli", "serve", "--port", str(cfg.port),
         "--preload", "default", "--preload", "default-embedding"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_http(f"http://127.0.0.1:{cfg.port}/health", proc)
        client = OpenAI(base_url=f"http://127.0.0.1:{cfg.port}/v1", api_key=key, max_retries=0)
        client.embeddings.create(model="default-embedding", input=["warm up"])
        memory = _rss_mb(proc.pid)
        timings = [openai_chat_stream(client, "default", _question(2000 + i), cfg.max_tokens)
                   for i in range(cfg.runs + 1)][1:]
        single = _summary(timings)
        many = concurrent_streams(
            lambda i: openai_chat_stream(client, "default", _question(3000 + i), cfg.max_tokens), cfg.concurrency)
        memory_after = _rss_mb(proc.pid)
        return {"single": single, "concurrent": many, "memory_idle": memory, "memory_after_load": memory_after}
    finally:
        _stop(proc)


def bench_llama_server(cfg: BenchConfig, settings: Settings, binary: str) -> dict:
    from openai import OpenAI
    port = cfg.port + 1
    cmd = [binary, "-m", cfg.model_path, "--host", "127.0.0.1", "--port", str(port),
           "-np", str(cfg.concurrency), "-c", str(settings.llama_context * cfg.concurrency),
           "-t", str(settings.llama_threads or os.cpu_count()), "--no-webui"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)

        def one(i: int) -> StreamTiming:
            prompt, stop = _render(_question(4000 + i))
            return openai_completion_stream(client, prompt, stop, cfg.max_tokens)
        one(99)  # warm-up
        single = _summary([one(5000 + i) for i in range(cfg.runs)])
        many = concurrent_streams(one, cfg.concurrency)
        return {"command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
                "single": single, "concurrent": many}
    finally:
        _stop(proc)


def run_gateway_bench(cfg: BenchConfig, settings: Settings, key: str, binary: str | None, progress=print) -> dict:
    progress("direct llama-cpp-python, in this process…")
    direct = bench_direct(cfg, settings)
    progress("the gateway (genfoundry serve) through the openai client…")
    gateway = bench_gateway(cfg, settings.home, key)
    server = None
    if binary:
        progress(f"llama-server -np {cfg.concurrency} directly…")
        server = bench_llama_server(cfg, settings, binary)
    return _verdict(cfg, direct, gateway, server)


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def _verdict(cfg: BenchConfig, direct: dict, gateway: dict, server: dict | None) -> dict:
    g1, d1 = gateway["single"], direct
    checks = {
        "decode_ratio_gateway_vs_direct": _ratio(g1["decode_tokens_per_s_p50"], d1["decode_tokens_per_s_p50"]),
        "ttft_overhead_ms_p50": round(g1["ttft_ms_p50"] - d1["ttft_ms_p50"], 1),
        "concurrent_all_succeeded": gateway["concurrent"]["succeeded"] == cfg.concurrency,
        "aggregate_ratio_gateway_vs_llama_server": _ratio(
            gateway["concurrent"]["aggregate_tokens_per_s"],
            server["concurrent"]["aggregate_tokens_per_s"] if server else None),
        "total_rss_mb": gateway["memory_after_load"]["total_rss_mb"],
    }
    targets = {"decode_ratio_gateway_vs_direct": ">= 0.95", "ttft_overhead_ms_p50": "<= 15",
               "concurrent_all_succeeded": "true", "aggregate_ratio_gateway_vs_llama_server": ">= 1.0",
               "total_rss_mb": "< 1536"}
    return {"config": vars(cfg), "direct_llama_cpp_python": direct, "gateway": gateway,
            "llama_server": server, "checks": checks, "targets": targets}
