"""The gateway benchmark: the gateway against its peers, measured in one run.

1. direct llama-cpp-python in this process (one stream): decode tokens/s, time to first token;
2. the gateway (a real `genfoundry serve` process, default policy, tracing on) through the
   official openai client, same rendered prompt, greedy, streaming: the same two figures;
3. time to first token on a short question (a few words, 8 tokens generated) on every side,
   the figure the gateway promises to keep within 15 ms of direct: the median of the
   per-turn differences, gateway minus direct;
4. eight concurrent streaming clients through the gateway, and eight against
   llama.cpp's own llama-server (-np 8, default flags) started with the same binary
   and model: aggregate tokens/s and how many requests succeeded;
5. resident memory of the gateway process and of its engine, models loaded.

All sides run at once and are measured in turns (direct, gateway, llama-server,
direct, ...), so noise from the machine falls on all of them alike. Every request
uses a distinct prompt so no engine answers from a prompt cache. Between two
single requests the benchmark waits ``settle_s`` (0.3 s), so the work a side does
after its answer (the gateway's audit entry and call record, written once the
stream is over) is not counted in the next side's time to first token.
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

import psutil

from genfoundry.core.settings import Settings
from genfoundry.models.prompting import TEMPLATES, render_chat
from genfoundry.core.types import Message
from genfoundry.testing.servers import stop_process, wait_http

__all__ = [
    "BenchConfig",
    "StreamTiming",
    "concurrent_streams",
    "direct_stream",
    "openai_chat_stream",
    "openai_completion_stream",
    "run_gateway_bench",
]

STORY = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
SHORT = "what is the capital of France?"
SHORT_TOKENS = 8


@dataclass
class BenchConfig:
    model_path: str
    max_tokens: int = 128
    runs: int = 10
    rounds: int = 3
    concurrency: int = 8
    port: int = 8790
    ttft_runs: int = 40
    settle_s: float = 0.3


def _question(i: int) -> str:
    return f"Story number {i}. {STORY}"


def _short(i: int) -> str:
    return f"Question {i}: {SHORT}"


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


def _ask_rendered(asked: tuple[str, int]) -> tuple[str, list[str], int]:
    question, max_tokens = asked
    return (*_render(question), max_tokens)


def _ttft_part(sides: dict, cfg: BenchConfig) -> dict:
    """Time to first token on short questions, in turns, paired with direct llama-cpp-python."""
    ms: dict[str, list[float]] = {name: [] for name in sides}
    for turn in range(cfg.ttft_runs + 1):
        for k, (name, run) in enumerate(sides.items()):
            timing = run(20000 + 10 * turn + k, short=True)
            time.sleep(cfg.settle_s)
            if turn:  # the first turn warms up
                ms[name].append(timing.ttft_s * 1000)
    direct = ms["direct_llama_cpp_python"]
    return {"prompt": f"Question N: {SHORT}", "max_tokens": SHORT_TOKENS, "runs": cfg.ttft_runs,
            "ttft_ms_p50": {name: round(statistics.median(v), 1) for name, v in ms.items()},
            "overhead_ms_p50": {name: round(statistics.median(a - b for a, b in zip(v, direct)), 1)
                                for name, v in ms.items() if name != "direct_llama_cpp_python"},
            "ttft_ms": {name: [round(x, 1) for x in v] for name, v in ms.items()}}


def _summary(timings: list[StreamTiming]) -> dict:
    decodes = [t.decode_tps for t in timings if t.decode_tps]
    return {"decode_tokens_per_s_p50": round(statistics.median(decodes), 2) if decodes else None,
            "ttft_ms_p50": round(statistics.median(t.ttft_s for t in timings) * 1000, 1),
            "tokens_per_run": [t.tokens for t in timings]}


def _load_direct(cfg: BenchConfig, settings: Settings):
    import llama_cpp
    return llama_cpp.Llama(model_path=cfg.model_path, n_ctx=settings.llama_context,
                           n_threads=settings.llama_threads or os.cpu_count(), n_batch=512, verbose=False)


def concurrent_streams(run_one, n: int, offset: int) -> dict:
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(run_one, offset + i) for i in range(n)]
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


def _rss_mb(pid: int) -> dict:
    proc = psutil.Process(pid)
    own = proc.memory_info().rss / 2**20
    engine = sum(c.memory_info().rss for c in proc.children(recursive=True)) / 2**20
    return {"gateway_rss_mb": round(own, 1), "engine_rss_mb": round(engine, 1),
            "total_rss_mb": round(own + engine, 1)}


def _start_gateway(cfg: BenchConfig, home: Path) -> subprocess.Popen:
    env = {**os.environ, "GENFOUNDRY_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genfoundry.cli", "serve", "--port", str(cfg.port),
         "--preload", "default", "--preload", "default-embedding"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{cfg.port}/health", proc)
    return proc


def _start_llama_server(cfg: BenchConfig, settings: Settings, binary: str) -> tuple[subprocess.Popen, list[str]]:
    """llama.cpp's own server as users run it: -np N, same context and threads, default flags."""
    cmd = [binary, "-m", cfg.model_path, "--host", "127.0.0.1", "--port", str(cfg.port + 1),
           "-np", str(cfg.concurrency), "-c", str(settings.llama_context * cfg.concurrency),
           "-t", str(settings.llama_threads or os.cpu_count()), "--no-webui"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{cfg.port + 1}/health", proc)
    return proc, cmd


def run_gateway_bench(cfg: BenchConfig, settings: Settings, key: str, binary: str | None, progress=print) -> dict:
    """All three sides are up at once and measured in turns, so machine noise hits them alike."""
    from openai import OpenAI
    progress("starting the gateway, llama-server and direct llama-cpp-python…")
    llm = _load_direct(cfg, settings)
    gateway = _start_gateway(cfg, settings.home)
    server, server_cmd = _start_llama_server(cfg, settings, binary) if binary else (None, None)
    try:
        gw = OpenAI(base_url=f"http://127.0.0.1:{cfg.port}/v1", api_key=key, max_retries=0, timeout=300)
        gw.embeddings.create(model="default-embedding", input=["warm up"])
        ref = OpenAI(base_url=f"http://127.0.0.1:{cfg.port + 1}/v1", api_key="none", max_retries=0, timeout=300)
        def ask(i: int, short: bool = False) -> tuple[str, int]:
            return (_short(i), SHORT_TOKENS) if short else (_question(i), cfg.max_tokens)

        sides = {"direct_llama_cpp_python": lambda i, short=False: direct_stream(llm, *_ask_rendered(ask(i, short))),
                 "gateway": lambda i, short=False: openai_chat_stream(gw, "default", *ask(i, short))}
        if server:
            sides["llama_server"] = lambda i, short=False: openai_completion_stream(ref, *_ask_rendered(ask(i, short)))
        single = {name: [] for name in sides}
        progress(f"single stream, {cfg.runs} turns per side…")
        for turn in range(cfg.runs + 1):
            for k, (name, run) in enumerate(sides.items()):
                timing = run(1000 + 10 * turn + k)  # a distinct prompt every time: no prompt cache
                time.sleep(cfg.settle_s)
                if turn:  # the first turn warms up and is not counted
                    single[name].append(timing)
        progress(f"time to first token on a short question, {cfg.ttft_runs} turns per side…")
        ttft = _ttft_part(sides, cfg)
        many = {name: [] for name in sides if name != "direct_llama_cpp_python"}
        progress(f"{cfg.concurrency} concurrent streams, {cfg.rounds} rounds per side…")
        for rnd in range(cfg.rounds):
            for k, name in enumerate(many):
                many[name].append(concurrent_streams(sides[name], cfg.concurrency, 5000 + 100 * rnd + 10 * k))
        memory = _rss_mb(gateway.pid)
    finally:
        for proc in (gateway, server):
            if proc is not None:
                stop_process(proc)
    return _verdict(cfg, {n: _summary(t) for n, t in single.items()}, ttft, many, memory, server_cmd)


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def _median_aggregate(rounds: list[dict]) -> float:
    return round(statistics.median(r["aggregate_tokens_per_s"] for r in rounds), 2)


def _verdict(cfg: BenchConfig, single: dict, ttft: dict, many: dict, memory: dict, server_cmd) -> dict:
    direct, gw = single["direct_llama_cpp_python"], single["gateway"]
    concurrent = {name: {"aggregate_tokens_per_s_median": _median_aggregate(rounds),
                         "succeeded": sum(r["succeeded"] for r in rounds),
                         "requests": sum(r["requests"] for r in rounds), "rounds": rounds}
                  for name, rounds in many.items()}
    ref = concurrent.get("llama_server", {}).get("aggregate_tokens_per_s_median")
    checks = {
        "decode_ratio_gateway_vs_direct": _ratio(gw["decode_tokens_per_s_p50"], direct["decode_tokens_per_s_p50"]),
        "ttft_overhead_ms_p50": ttft["overhead_ms_p50"]["gateway"],
        "concurrent_all_succeeded": concurrent["gateway"]["succeeded"] == concurrent["gateway"]["requests"],
        "aggregate_ratio_gateway_vs_llama_server": _ratio(concurrent["gateway"]["aggregate_tokens_per_s_median"], ref),
        "total_rss_mb": memory["total_rss_mb"],
    }
    targets = {"decode_ratio_gateway_vs_direct": ">= 0.95", "ttft_overhead_ms_p50": "<= 15",
               "concurrent_all_succeeded": "true", "aggregate_ratio_gateway_vs_llama_server": ">= 1.0",
               "total_rss_mb": "< 1536"}
    return {"config": vars(cfg), "single_stream": single, "short_question_ttft": ttft, "concurrent": concurrent,
            "memory": memory,
            "llama_server_command": " ".join([Path(server_cmd[0]).name, *server_cmd[1:]]) if server_cmd else None,
            "checks": checks, "targets": targets}
