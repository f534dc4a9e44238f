"""Fine-tuning the built-in Gemma 3 270M for real: tiny runs (a few steps), a run killed and resumed, the
GGUF adapter served by llama.cpp, the OpenAI client on /v1/fine_tuning, and a promotion and a rollback
while eight clients stream, with no request failing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import openai
import pytest

from genfoundry.bench.tune import promotion_under_load
from genfoundry.core import audit
from genfoundry.core.errors import InvalidRequest
from genfoundry.core.settings import load_settings
from genfoundry.core.store import Store
from genfoundry.core.types import GenerationRequest, Message
from genfoundry.data.datasets import Datasets, SplitSpec
from genfoundry.models.builtin import register_builtins
from genfoundry.models.hub import ModelHub
from genfoundry.models.providers.llamacpp import check_adapter
from genfoundry.testing.servers import start_gateway, stop_gateway
from genfoundry.tune.base import resolve_base
from genfoundry.tune.jobs import TuneJobs
from genfoundry.tune.train import TrainConfig, train

pytestmark = pytest.mark.integration

TINY = TrainConfig(max_steps=2, batch_size=2, max_length=96, eval_steps=1, lora_r=4, lora_alpha=8)


def _rows(n: int = 24) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Policy: item {i} ships in {i % 9 + 1} days. How long?"},
                          {"role": "assistant", "content": f"Item {i} ships in {i % 9 + 1} days."}]}
            for i in range(n)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("tune-home")
    settings = load_settings(home=home, environ={})
    settings.ensure_home()
    store = Store.open(settings.resolved_database_url)
    hub = ModelHub(store, settings)
    register_builtins(hub)
    Datasets(settings, store).add_version("ships", _rows(), lineage={"source": "test"},
                                          splits=SplitSpec(seed=3, fractions={"train": 0.75, "dev": 0.1, "test": 0.15}))
    jobs = TuneJobs(settings, store, hub)
    job = jobs.create(base="default", dataset="ships", config=TINY, suffix="ships")
    events: list[tuple[str, str, dict]] = []
    done = jobs.run(job["id"], on_event=lambda *e: events.append(e))
    yield {"home": home, "settings": settings, "store": store, "hub": hub, "jobs": jobs, "job": done, "events": events}
    asyncio.run(hub.close())
    store.close()


def test_a_tiny_real_run_records_the_experiment_and_serves_its_adapter(world):
    job = world["job"]
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    metrics = result["metrics"]
    assert metrics["steps"] == 2 and metrics["tokens"] > 0 and metrics["tokens_per_second"] > 0
    assert metrics["best_dev_loss"] is not None and metrics["peak_rss_mib"] > 0
    assert len(result["adapter_sha256"]) == 64 and len(result["base"]["gguf_sha256"]) == 64
    assert result["dataset"]["content_hash"] and result["hardware"]["cores"] >= 1 and result["cost_usd"] > 0
    assert check_adapter(__import__("pathlib").Path(result["adapter_gguf"]), "gemma3")["adapter.type"] == "lora"
    kinds = {kind for kind, _, _ in world["events"]}
    assert {"metrics", "eval", "checkpoint", "status"} <= kinds
    assert [c["step"] for c in world["jobs"].checkpoints(job["id"])] == [1, 2]
    spec = world["hub"].resolve(result["fine_tuned_model"])
    assert spec.options["adapter"] == result["adapter_gguf"] and spec.options["tuned_from"] == "gemma-3-270m"

    async def ask():
        model = await world["hub"].load_chat(spec.name)
        return await model.generate(GenerationRequest(messages=[Message("user", "Policy: item 3 ships in 4 days. How long?")],
                                                      max_tokens=12, temperature=0))
    assert (asyncio.run(ask())).usage.completion_tokens > 0


def test_a_rank_that_does_not_fit_is_refused_with_the_estimate(world):
    base = resolve_base(world["hub"].resolve("default"))
    with pytest.raises(InvalidRequest, match=r"needs about [\d.]+ GiB .* but 0.5 GiB is free"):
        train(base, _rows(), [], TINY, world["home"] / "refused", available_bytes=2**29)
    assert not (world["home"] / "refused" / "adapter").exists()


def test_a_killed_run_resumes_from_its_last_checkpoint(world):
    jobs = world["jobs"]
    job = jobs.create(base="default", dataset="ships", config=TINY.model_copy(update={"max_steps": 3}))
    env = {**os.environ, "GENFOUNDRY_HOME": str(world["home"]), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "genfoundry.cli", "tune", "work", job["id"], "--json"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if any(e["kind"] == "checkpoint" for e in jobs.events(job["id"])):
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the worker ended before its first checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = jobs.get(job["id"])
    assert killed["status"] == "failed" and "died" in killed["error"]
    jobs.resume(job["id"])
    finished = jobs.run(job["id"])
    assert finished["status"] == "succeeded", finished["error"]
    metrics = finished["result"]["metrics"]
    assert metrics["resumed_from"].startswith("checkpoint-") and metrics["steps"] == 3


def test_openai_client_follows_jobs_and_a_promotion_under_streaming_load_drops_nothing(world):
    store = world["store"]
    hub = world["hub"]
    base = hub.resolve("default")
    hub.add(base.model_copy(update={"name": "support", "aliases": [], "description": "the support model"}))
    job = world["job"]
    gw = start_gateway(world["home"], preload=("support",))
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key)
        listed = client.fine_tuning.jobs.list(limit=5)
        assert job["id"] in [j.id for j in listed.data]
        got = client.fine_tuning.jobs.retrieve(job["id"])
        assert got.status == "succeeded" and got.fine_tuned_model == job["result"]["fine_tuned_model"]
        assert got.trained_tokens == job["result"]["metrics"]["tokens"]
        events = client.fine_tuning.jobs.list_events(job["id"], limit=100).data
        assert any(e.type == "metrics" for e in events)
        checkpoints = client.fine_tuning.jobs.checkpoints.list(job["id"]).data
        assert [c.step_number for c in checkpoints] == [2, 1]
        with pytest.raises(openai.NotFoundError, match="not registered"):
            client.fine_tuning.jobs.create(model="no-such-model", training_file="ships")
        with pytest.raises(openai.BadRequestError, match="none of the columns|NAME@vN"):
            client.fine_tuning.jobs.create(model="default", training_file="ships@vx")

        # Eight streaming clients while the adapter is gated, promoted to 'support' and rolled back.
        load = asyncio.run(promotion_under_load(gw, job["id"], hold_s=4.0))
        assert load["failed"] == 0, load["failures"]
        switches = gw.health()["switches"]
        assert [s["ok"] for s in switches] == [True, True], switches
        assert load["before"]["requests"] > 5
        assert sum(load[phase]["requests"] for phase in ("gate", "switch", "rollback")) > 5

        # A job made through the API is trained by the gateway's queue, in a worker process.
        made = client.fine_tuning.jobs.create(model="default", training_file="ships", suffix="api",
                                              hyperparameters={"n_epochs": 1},
                                              extra_body={"genfoundry": {"max_steps": 1, "max_length": 96,
                                                                         "batch_size": 2, "lora_r": 4}})
        assert made.status == "queued" and made.hyperparameters.n_epochs == 1
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and client.fine_tuning.jobs.retrieve(made.id).status in ("queued", "running"):
            time.sleep(1)
        final = client.fine_tuning.jobs.retrieve(made.id)
        assert final.status == "succeeded", final.error
        assert final.fine_tuned_model.startswith("ft:gemma-3-270m:api:")
        assert (world["home"] / "tune" / made.id / "worker.log").exists()
    finally:
        stop_gateway(gw)
    actions = [a.action for a in audit.entries(store, action="tune.") if a.action != "tune.succeeded"]
    assert actions[0] == "tune.rollback" and actions[1] in ("tune.promote", "tune.promote_forced")


def test_export_writes_merged_weights_and_a_gguf_that_llama_cpp_serves(world, tmp_path):
    env = {**os.environ, "GENFOUNDRY_HOME": str(world["home"]), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "merged"
    done = subprocess.run([sys.executable, "-m", "genfoundry.cli", "tune", "export", world["job"]["id"], "--out",
                           str(out), "--gguf"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    from genfoundry.models.providers.llamacpp import LlamaCppModel
    from genfoundry.models.spec import ModelSpec

    async def ask():
        model = LlamaCppModel(ModelSpec(name="merged", provider="llamacpp", location=str(out / "model.gguf"),
                                        options={"engine": "inprocess", "chat_template": "gemma"}), world["settings"])
        await model.warm_up()
        try:
            return await model.generate(GenerationRequest(messages=[Message("user", "Policy: item 5 ships in 6 days. How long?")],
                                                          max_tokens=8, temperature=0))
        finally:
            await model.close()
    assert asyncio.run(ask()).usage.completion_tokens > 0
