"""Scale-out with real processes: two gateway replicas on one PostgreSQL, and a model pool losing a backend.

Each replica is a real ``genfoundry serve`` process; the model behind them is the stand-in
OpenAI-compatible server (``genfoundry.testing.upstream``), also a process of its own so it can be killed.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import sqlalchemy as sa

from genfoundry.core import audit
from genfoundry.core.settings import load_settings
from genfoundry.core.store import MIGRATIONS, Store
from genfoundry.gateway.keys import create_key
from genfoundry.guard.keys import generate_key_file
from genfoundry.models.hub import ModelHub
from genfoundry.models.spec import ModelSpec
from genfoundry.testing.servers import free_port, start_replica, start_upstream, stop_process

pytestmark = [pytest.mark.integration]


def chat(base: str, secret: str, text: str = "hi", **body) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"}, timeout=60,
                      json={"model": "up", "messages": [{"role": "user", "content": text}], "max_tokens": 3, **body})


# -- two replicas, one PostgreSQL --------------------------------------------------------------

@pytest.fixture()
def replicas(postgres_url, tmp_path):
    store = Store.open(postgres_url)
    upstream, url = start_upstream("up")
    hub = ModelHub(store, load_settings(home=tmp_path / "setup", environ={}))
    hub.add(ModelSpec(name="up", provider="openai_compat", location=url, capabilities=["chat", "completion"]))
    generate_key_file(tmp_path / "vault.key")
    procs = []
    try:
        for name in ("a", "b"):
            procs.append(start_replica(tmp_path / name, tmp_path / "vault.key", database_url=postgres_url))
        yield store, procs
    finally:
        for proc, _ in procs:
            stop_process(proc)
        stop_process(upstream)
        store.close()


@pytest.mark.postgres
def test_a_token_budget_is_spent_exactly_across_two_replicas(replicas):
    store, [(_, a), (_, b)] = replicas
    # Each call reserves its prompt (1 token for "hi") and max_tokens (3), and the stand-in spends exactly that.
    secret, key = create_key(store, name="budgeted", role="app", token_budget=4 * 10)
    with cf.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: chat(a if i % 2 else b, secret), range(40)))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) == 10, codes
    assert set(codes) == {200, 429}
    refused = next(r for r in answers if r.status_code == 429).json()["error"]
    assert "budget" in refused["message"]
    calls = store.tables.calls
    deadline = time.monotonic() + 10
    while True:  # each replica writes its records a moment after answering
        with store.begin() as conn:
            spent = conn.execute(sa.select(sa.func.sum(calls.c.prompt_tokens + calls.c.completion_tokens))
                                 .where(calls.c.key_id == key.id, calls.c.status == "ok")).scalar()
        if spent == 40 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert spent == 40, "exactly the budget, never one call more"
    holds = store.tables.quota_holds
    deadline = time.monotonic() + 10
    while True:
        with store.begin() as conn:
            left = conn.execute(sa.select(sa.func.count()).select_from(holds)).scalar()
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left == 0, "every reservation is released once its call is in the log"


@pytest.mark.postgres
def test_a_rate_limit_holds_across_replicas_and_the_audit_chain_stays_one(replicas):
    store, [(_, a), (_, b)] = replicas
    secret, _ = create_key(store, name="limited", role="app", rpm_limit=6)
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: chat(a if i % 2 else b, secret), range(16)))
    assert sorted(r.status_code for r in answers).count(200) == 6
    assert {r.status_code for r in answers} == {200, 429}
    assert any("per minute" in r.json()["error"]["message"] for r in answers if r.status_code == 429)
    # Both replicas wrote their guard decisions to one audit chain, concurrently.
    report = audit.verify(store)
    assert report.ok, report.problems
    requests = [e for e in audit.entries(store, limit=1000) if e.action == "guard.request"]
    assert len(requests) >= 6


@pytest.mark.postgres
def test_a_killed_replica_keeps_what_it_recorded_and_its_call_in_flight_still_counts(postgres_url, tmp_path):
    store = Store.open(postgres_url)
    upstream, url = start_upstream("slow", chunks=40, delay=0.1)  # a 4-second answer
    ModelHub(store, load_settings(home=tmp_path / "setup", environ={})).add(
        ModelSpec(name="up", provider="openai_compat", location=url, capabilities=["chat"]))
    generate_key_file(tmp_path / "vault.key")
    (proc_a, a), (proc_b, b) = (start_replica(tmp_path / n, tmp_path / "vault.key", database_url=postgres_url) for n in "ab")
    try:
        secret, key = create_key(store, name="small", role="app", token_budget=200)
        done = chat(a, secret, max_tokens=40)  # 1 + 40 reserved, spends 1 + 40
        assert done.status_code == 200
        time.sleep(1.0)  # its record leaves the replica's queue
        started = threading.Event()

        def in_flight():
            try:
                with httpx.stream("POST", f"{a}/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                                  json={"model": "up", "messages": [{"role": "user", "content": "x" * 400}],
                                        "max_tokens": 120, "stream": True}, timeout=30) as response:
                    for _ in response.iter_lines():
                        started.set()
            except httpx.HTTPError:
                pass  # the replica dies under it

        thread = threading.Thread(target=in_flight)
        thread.start()
        assert started.wait(20)
        os.kill(proc_a.pid, signal.SIGKILL)
        proc_a.wait()
        thread.join(30)

        with store.begin() as conn:
            logged = conn.execute(sa.select(sa.func.count()).select_from(store.tables.calls)
                                  .where(store.tables.calls.c.key_id == key.id)).scalar()
            held = conn.execute(sa.select(sa.func.sum(store.tables.quota_holds.c.tokens))
                                .where(store.tables.quota_holds.c.key_id == key.id)).scalar()
        assert logged == 1, "the finished call's record survived the kill"
        assert held == 100 + 120, "the call the dead replica was serving still holds its reservation"
        # 41 spent + 220 held > 200: the other replica refuses, instead of letting the budget be spent twice.
        refused = chat(b, secret)
        assert refused.status_code == 429 and "budget" in refused.json()["error"]["message"]
    finally:
        for proc in (proc_a, proc_b):
            stop_process(proc)
        stop_process(upstream)
        store.close()


@pytest.mark.postgres
def test_replicas_migrating_at_once_apply_each_migration_once(postgres_url):
    code = ("import sys; from genfoundry.core.store import Store; "
            "print(','.join(Store.open(sys.argv[1]).applied_migrations()))")
    procs = [subprocess.Popen([sys.executable, "-c", code, postgres_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    names = [m for m, _ in MIGRATIONS]
    assert all(sorted(o[0].strip().split(",")) == sorted(names) for o in outputs)
    store = Store.open(postgres_url, migrate=False)
    with store.begin() as conn:
        rows = conn.execute(sa.text("SELECT name FROM _migrations")).fetchall()
    assert sorted(r[0] for r in rows) == sorted(names)
    store.close()


def test_an_unreachable_database_stops_the_gateway_with_the_reason(tmp_path):
    port = free_port()
    env = {**os.environ, "GENFOUNDRY_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "GENFOUNDRY_DATABASE_URL": f"postgresql+psycopg://gf:secret@127.0.0.1:{free_port()}/gf"}
    done = subprocess.run([sys.executable, "-m", "genfoundry.cli", "serve", "--port", str(port), "--lazy"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "cannot reach the database" in output and "Connection refused" in output, output[-2000:]
    assert "secret" not in output, "the password is not printed"
    assert "Traceback" not in output


# -- a pool losing a backend under load ----------------------------------------------------------

def test_a_pool_loses_a_backend_under_eight_streams_and_only_its_streams_in_flight_fail(tmp_path):
    up_a, url_a = start_upstream("a", chunks=20, delay=0.05)  # one-second answers
    up_b, url_b = start_upstream("b", chunks=20, delay=0.05)
    generate_key_file(tmp_path / "vault.key")
    home = tmp_path / "gw"
    home.mkdir()
    store = Store.open(f"sqlite:///{home / 'genfoundry.db'}")
    ModelHub(store, load_settings(home=home, environ={})).add(ModelSpec(
        name="up", provider="openai_compat", location=url_a, capabilities=["chat"],
        pool={"backends": [url_b], "health_interval_s": 1, "eject_after": 1, "eject_seconds": 60}))
    secret, _ = create_key(store, name="load", role="app")
    proc, base = start_replica(home, tmp_path / "vault.key")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0, timeout=30)
    outcomes: list[tuple[float, str, int]] = []  # (start time, outcome, chunks received)
    lock = threading.Lock()
    stop_at = time.monotonic() + 6
    killed_at: list[float] = []

    def worker(i: int) -> None:
        while time.monotonic() < stop_at:
            began, got = time.monotonic(), 0
            try:
                for chunk in client.chat.completions.create(model="up", stream=True, max_tokens=30,
                                                            messages=[{"role": "user", "content": f"s{i}"}]):
                    if chunk.choices and chunk.choices[0].delta.content:
                        got += 1
                outcome = "ok" if got >= 20 else "short"
            except openai.APIError as exc:
                outcome = f"error:{type(exc).__name__}"
            with lock:
                outcomes.append((began, outcome, got))

    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        os.kill(up_b.pid, signal.SIGKILL)
        killed_at.append(time.monotonic())
        for thread in threads:
            thread.join(60)
        failed = [o for o in outcomes if o[1] != "ok"]
        after = [o for o in outcomes if o[0] > killed_at[0] + 0.2]
        assert after and all(o[1] == "ok" for o in after), "requests started after the kill all succeed"
        assert len(failed) <= 8, failed
        assert all(o[0] < killed_at[0] for o in failed), "only streams already running can fail"
        assert all(o[2] >= 1 for o in failed), "a failed request had started streaming: none failed before its " \
                                                "first token"
        assert len(outcomes) >= 24
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert f'genfoundry_pool_backend_up{{backend="{url_b}",model="up"}} 0.0' in metrics
        assert f'genfoundry_pool_backend_up{{backend="{url_a}",model="up"}} 1.0' in metrics
    finally:
        stop_process(proc)
        for up in (up_a, up_b):
            stop_process(up)
        store.close()


def test_serve_workers_share_one_sqlite_file_and_one_budget(tmp_path):
    """`serve --workers 2`: two processes on one SQLite file; the budget lock is SQLite's single writer."""
    upstream, url = start_upstream("up")
    home = tmp_path / "gw"
    home.mkdir()
    store = Store.open(f"sqlite:///{home / 'genfoundry.db'}")
    ModelHub(store, load_settings(home=home, environ={})).add(
        ModelSpec(name="up", provider="openai_compat", location=url, capabilities=["chat"]))
    secret, key = create_key(store, name="budgeted", role="app", token_budget=4 * 10)
    generate_key_file(home / "vault.key")
    proc, base = start_replica(home, home / "vault.key", args=["--workers", "2"])
    try:
        import psutil

        deadline = time.monotonic() + 60
        while len(psutil.Process(proc.pid).children()) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)  # uvicorn's supervisor: a spawn helper and the two workers
        for _ in range(20):  # both workers up (each answers /health once its app has started)
            httpx.get(f"{base}/health", timeout=30)
        with cf.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: chat(base, secret), range(40)))
        codes = [r.status_code for r in answers]
        assert codes.count(200) == 10 and set(codes) == {200, 429}, codes
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with store.begin() as conn:
                spent = conn.execute(sa.select(sa.func.sum(store.tables.calls.c.prompt_tokens
                                                           + store.tables.calls.c.completion_tokens))
                                     .where(store.tables.calls.c.key_id == key.id,
                                            store.tables.calls.c.status == "ok")).scalar()
            if spent == 40:
                break
            time.sleep(0.2)
        assert spent == 40
        assert audit.verify(store).ok
    finally:
        stop_process(proc)
        stop_process(upstream)
        store.close()
