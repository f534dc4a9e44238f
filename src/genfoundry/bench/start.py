"""Cold start: how soon a fresh `genfoundry serve` is live and ready, and the first requests' time to first token.

Two gateways start one after the other on fresh homes: one warms its models before it
reports ready (the default), the other loads them on first use (``--lazy``, as
every start did before warm-up). Each then gets the same three short streaming
requests from the official ``openai`` client, one after another (after one
``/v1/models`` call, so the client's own first-call costs are not counted).

Example::

    result = run_start_bench(progress=print)
    result["warm"]["ttft_ms"]  # [first, second, third]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from genfoundry.core.store import Store
from genfoundry.gateway.keys import create_key
from genfoundry.testing.servers import free_port

__all__ = ["run_start_bench"]

QUESTION = [{"role": "user", "content": "What is the capital of Italy?"},
            {"role": "assistant", "content": "The capital of Italy is Rome."},
            {"role": "user", "content": "What is the capital of France?"}]


def _ttft(client) -> float:
    started = time.perf_counter()
    stream = client.chat.completions.create(model="default", messages=QUESTION, max_tokens=8, temperature=0,
                                            stream=True, stop=["\n", "."])
    first = None
    for event in stream:
        if first is None and event.choices and event.choices[0].delta.content:
            first = time.perf_counter() - started
    return (first if first is not None else time.perf_counter() - started) * 1000


def _one(lazy: bool, requests: int, progress: Callable[[str], None]) -> dict:
    with tempfile.TemporaryDirectory(prefix="gf-start-") as folder:
        home = Path(folder)
        store = Store.open(f"sqlite:///{home / 'genfoundry.db'}")
        key, _ = create_key(store, name="bench", role="admin")
        store.close()
        port = free_port()
        env = {**os.environ, "GENFOUNDRY_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        env.pop("GENFOUNDRY_VAULT_KEY", None)
        args = [sys.executable, "-m", "genfoundry.cli", "serve", "--port", str(port), *(["--lazy"] if lazy else [])]
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        live = ready = None
        try:
            while ready is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"genfoundry serve exited with {proc.returncode}")
                if time.perf_counter() - started > 300:
                    raise RuntimeError("genfoundry serve was not ready in 300 s")
                try:
                    if live is None and httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).is_success:
                        live = time.perf_counter() - started
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).is_success:
                        ready = time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            from openai import OpenAI

            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
            client.models.list()  # the client's own first call (imports, connection) is not the gateway's
            ttfts = [_ttft(client) for _ in range(requests)]
            client.close()
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        progress(f"{'lazy' if lazy else 'warm'}: live {live:.1f} s, ready {ready:.1f} s, "
                 f"TTFT {', '.join(f'{t:.0f}' for t in ttfts)} ms")
        return {"live_s": round(live, 2), "ready_s": round(ready, 2), "ttft_ms": [round(t, 1) for t in ttfts],
                "first_over_next_ms": round(ttfts[0] - min(ttfts[1:]), 1) if len(ttfts) > 1 else None}


def run_start_bench(*, requests: int = 3, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Start a warm gateway and a lazy one on fresh homes; time readiness and the first requests."""
    return {"warm": _one(False, requests, progress), "lazy": _one(True, requests, progress),
            "requests": requests, "cores": os.cpu_count()}
