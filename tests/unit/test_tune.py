"""The tune layer without training: record encoding, packing, the gate, promotion, rollback, job states."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from genfoundry.core import audit
from genfoundry.core.errors import Conflict, InvalidRequest, NotFound
from genfoundry.core.store import Store
from genfoundry.data.datasets import Datasets, SplitSpec
from genfoundry.models.hub import ModelHub
from genfoundry.models.prompting import TEMPLATES
from genfoundry.tune.jobs import TuneJobs
from genfoundry.tune.promote import GateContext, f1_score, history, promote, rollback, gate_items
from genfoundry.tune.records import IGNORE, detect_format, encode_rows, pack
from genfoundry.tune.train import TrainConfig, estimate_memory
from tests.conftest import fake_spec


class CharTokenizer:
    """One token per character (ids 10+), BOS 1, EOS 2, and Gemma's turn markers as single tokens."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0
    specials = {"<start_of_turn>": 3, "<end_of_turn>": 4}

    def __call__(self, text, add_special_tokens=False):
        ids, i = [self.bos_token_id] if add_special_tokens else [], 0
        while i < len(text):
            for marker, tid in self.specials.items():
                if text.startswith(marker, i):
                    ids.append(tid)
                    i += len(marker)
                    break
            else:
                ids.append(10 + ord(text[i]))
                i += 1
        return {"input_ids": ids}

    def decode(self, ids):
        back = {v: k for k, v in self.specials.items()}
        return "".join(back[t] if t in back else chr(t - 10) if t >= 10 else "" for t in ids)


GEMMA = TEMPLATES["gemma"]
TOK = CharTokenizer()


def _trained_text(example) -> str:
    return TOK.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])


def test_chat_rows_train_only_the_assistant_turns_and_their_end_marker():
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye?"},
                        {"role": "assistant", "content": "Bye."}]}
    (example,), report = encode_rows([row], TOK, GEMMA, fmt="chat", max_length=512)
    assert _trained_text(example) == "Hello.<end_of_turn>Bye.<end_of_turn>"
    full = TOK.decode(example.input_ids)
    # The text is what the server renders for this conversation, ending where the model stopped.
    assert full.startswith("<start_of_turn>user\nBe brief.\n\nHi?<end_of_turn>\n<start_of_turn>model\nHello.")
    assert example.input_ids[0] == TOK.bos_token_id and report.examples == 1 and report.trained_tokens == len(
        "Hello.") + 1 + len("Bye.") + 1


def test_completion_rows_train_the_completion_and_eos():
    (example,), _ = encode_rows([{"prompt": "2+2=", "completion": "4"}], TOK, GEMMA, fmt="completion", max_length=64)
    assert [t for t, lab in zip(example.input_ids, example.labels) if lab != IGNORE] == [10 + ord("4"), 2]


def test_unusable_rows_are_counted_by_reason_not_dropped_silently():
    rows = [{"messages": "not a list"}, {"messages": [{"role": "user", "content": "no answer"}]},
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    examples, report = encode_rows(rows, TOK, GEMMA, fmt="chat", max_length=64)
    assert len(examples) == 1
    assert report.skipped == {"messages is not a list of {role, content} turns": 1,
                              "no assistant turn with text to learn": 1}
    assert report.first_errors[0].startswith("row 1")


def test_an_overlong_example_loses_its_oldest_prompt_tokens_first():
    row = {"prompt": "x" * 100, "completion": "answer"}
    (example,), report = encode_rows([row], TOK, GEMMA, fmt="completion", max_length=20)
    assert len(example.input_ids) == 20 and example.input_ids[0] == TOK.bos_token_id
    assert _trained_text(example) == "answer" and report.truncated == 1


def test_detect_format_names_the_columns_it_needs():
    assert detect_format({"messages", "_id"}) == "chat"
    assert detect_format({"prompt", "completion"}) == "completion"
    with pytest.raises(InvalidRequest, match="'messages' \\(chat\\).*it has question"):
        detect_format({"question", "_id", "split"})
    with pytest.raises(InvalidRequest, match="needs the column"):
        detect_format({"text"}, "chat")


def test_packing_keeps_examples_whole_with_positions_restarting():
    rows = [{"prompt": "p" * n, "completion": "c"} for n in (5, 30, 12, 40, 3, 20)]
    examples, _ = encode_rows(rows, TOK, GEMMA, fmt="completion", max_length=64)
    blocks = pack(examples, max_length=64)
    assert len(blocks) < len(examples)
    assert sum(len(b["input_ids"]) for b in blocks) == sum(len(e.input_ids) for e in examples)
    for block in blocks:
        assert len(block["input_ids"]) <= 64
        starts = [i for i, p in enumerate(block["position_ids"]) if p == 0]
        assert all(block["input_ids"][s] == TOK.bos_token_id for s in starts)  # each example begins whole
    assert len(pack(examples, max_length=64, enabled=False)) == len(examples)


def test_memory_estimate_grows_with_what_a_step_holds():
    config = {"hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18, "vocab_size": 262144}
    small = estimate_memory(config, parameters=268_000_000, lora_parameters=1_900_000, block_tokens=512, trained_tokens=64)
    large = estimate_memory(config, parameters=268_000_000, lora_parameters=1_900_000, block_tokens=8192, trained_tokens=4096)
    assert 1.0 < small / 2**30 < large / 2**30


def test_f1_and_test_items():
    assert f1_score("The warranty is 12 months.", "the warranty is 12 months") == 1.0
    assert f1_score("12 months", "The warranty is 12 months.") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert f1_score("", "x") == 0.0
    items = gate_items([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
                        {"prompt": "p", "completion": "c"}, {"text": "ignored"}])
    assert [i["reference"] for i in items] == ["a", "c"] and items[0]["messages"][0].content == "q"


# -- jobs, the gate, promotion ------------------------------------------------------------------------
@pytest.fixture()
def world(settings):
    store = Store.open(settings.resolved_database_url)
    hub = ModelHub(store, settings)
    hub.add(fake_spec("base", options={"replies": []}))
    hub.add(fake_spec("api", ))
    # A trainable entry for job creation (never trained here).
    from genfoundry.models.spec import ModelSpec
    hub.add(ModelSpec(name="gguf-base", provider="llamacpp", location=str(settings.home / "none.gguf")))
    ds = Datasets(settings, store)
    rows = [{"messages": [{"role": "user", "content": f"What is the code for item {i}?"},
                          {"role": "assistant", "content": f"The code is {i * 7}."}]} for i in range(30)]
    ds.add_version("codes", rows, lineage={"source": "test"}, splits=SplitSpec(seed=1))
    yield {"settings": settings, "store": store, "hub": hub, "ds": ds}
    store.close()


def _succeeded_job(world, *, replies: list[str], name: str = "cand") -> str:
    """A finished job whose 'adapter' is a fake model answering with ``replies`` (the gate only needs a model)."""
    jobs = TuneJobs(world["settings"], world["store"], world["hub"])
    job = jobs.create(base="gguf-base", dataset="codes", config=TrainConfig(max_steps=1), suffix="codes")
    world["hub"].add(fake_spec(name, options={"replies": replies, "tune_job": job["id"], "adapter": "/x.gguf"}))
    jobs._finish(job["id"], "succeeded", result={"fine_tuned_model": name, "metrics": {"steps": 1}})
    return job["id"]


def _test_answers(world) -> list[str]:
    rows = world["ds"].rows("codes", split="test")
    return [r["messages"][-1]["content"] for r in rows]


def _gate(world) -> GateContext:
    return GateContext(settings=world["settings"], store=world["store"], hub=world["hub"])


def test_the_gate_refuses_a_worse_candidate_and_keeps_its_report(world):
    right = _test_answers(world)
    world["hub"].add(fake_spec("codes", options={"replies": right * 4}))  # the incumbent answers right
    job = _succeeded_job(world, replies=["I do not know."] * 100)
    report = asyncio.run(promote(_gate(world), job, target="codes", suites=["test", "safety"]))
    assert report["promoted"] is False and report["passed"] is False
    assert report["suites"]["test"]["incumbent"]["score"] == 1.0
    assert report["suites"]["test"]["candidate"]["score"] < 0.5
    assert "test: candidate" in report["reasons"][0]
    assert world["hub"].resolve("codes").options.get("replies") == right * 4  # still the incumbent
    kept = TuneJobs(world["settings"], world["store"], world["hub"]).get(job)["result"]["gates"]
    assert kept[-1]["passed"] is False
    assert audit.entries(world["store"], action="tune.")[0].action == "tune.gate_refused"


def test_a_better_candidate_is_promoted_and_rollback_restores_the_old_entry(world):
    right = _test_answers(world)
    world["hub"].add(fake_spec("codes", aliases=["support"], options={"replies": ["no idea"] * 100}))
    job = _succeeded_job(world, replies=right * 4)
    report = asyncio.run(promote(_gate(world), job, target="codes", suites=["test"]))
    assert report["promoted"] is True and report["suites"]["test"]["gain"] > 0.5
    served = world["hub"].resolve("support")  # aliases follow the promoted entry
    assert served.name == "codes" and served.options["tune_job"] == job
    assert history(world["store"], "codes")[0]["job_id"] == job
    done = rollback(world["store"], world["hub"], "codes")
    assert done["removed"] is False and world["hub"].resolve("codes").options["replies"] == ["no idea"] * 100
    assert history(world["store"], "codes")[0]["rolled_back_at"] is not None
    with pytest.raises(NotFound, match="no promotion to roll back"):
        rollback(world["store"], world["hub"], "codes")
    actions = [e.action for e in audit.entries(world["store"], action="tune.")]
    assert actions[:2] == ["tune.rollback", "tune.promote"]


def test_force_promotes_a_loser_and_says_so_in_the_audit_log(world):
    job = _succeeded_job(world, replies=["wrong"] * 100)
    report = asyncio.run(promote(_gate(world), job, target="fresh", suites=["test"], force=True))
    assert report["promoted"] is True and report["forced"] is True
    assert report["incumbent"] == "gguf-base"  # a new name is compared with the base
    assert audit.entries(world["store"], action="tune.")[0].action == "tune.promote_forced"
    assert rollback(world["store"], world["hub"], "fresh")["removed"] is True  # the promotion had created it


def test_a_job_is_checked_before_it_is_queued(world):
    jobs = TuneJobs(world["settings"], world["store"], world["hub"])
    with pytest.raises(InvalidRequest, match="an API or remote server"):
        jobs.create(base="api", dataset="codes")
    with pytest.raises(NotFound):
        jobs.create(base="gguf-base", dataset="nope")
    world["ds"].add_version("plain", [{"question": "q", "answer": "a"}], lineage={"source": "test"})
    with pytest.raises(InvalidRequest, match="none of the columns"):
        jobs.create(base="gguf-base", dataset="plain")
    with pytest.raises(InvalidRequest, match="suffix"):
        jobs.create(base="gguf-base", dataset="codes", suffix="bad name!")


def test_job_states_cancel_resume_and_a_dead_worker(world):
    jobs = TuneJobs(world["settings"], world["store"], world["hub"])
    job = jobs.create(base="gguf-base", dataset="codes")
    assert job["status"] == "queued" and jobs.next_queued()["id"] == job["id"]
    assert jobs.cancel(job["id"])["status"] == "cancelled"
    with pytest.raises(Conflict, match="already cancelled"):
        jobs.cancel(job["id"])
    assert jobs.resume(job["id"])["status"] == "queued"
    # A worker that claimed the job and was killed: its pid is gone.
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert jobs._claim(job["id"])
    jobs._update(job["id"], worker_pid=dead.pid)
    found = jobs.get(job["id"])
    assert found["status"] == "failed" and "worker process died" in found["error"]
    assert jobs.resume(job["id"])["status"] == "queued"
    mine = jobs.create(base="gguf-base", dataset="codes", foreground=True)  # `tune run` runs it: not the queue's
    assert jobs.next_queued()["id"] == job["id"]
    jobs.cancel(job["id"])
    assert jobs.next_queued() is None and jobs.get(mine["id"])["status"] == "queued"
    running = jobs.create(base="gguf-base", dataset="codes")
    jobs._claim(running["id"])
    jobs._update(running["id"], worker_pid=os.getpid())
    assert jobs.cancel(running["id"])["status"] == "running" and jobs._cancel_requested(running["id"])
    kinds = [e["kind"] for e in jobs.events(job["id"])]
    assert kinds[0] == "status" and len(kinds) >= 4
    with pytest.raises(Conflict, match="cancel it first"):
        jobs.delete(running["id"])


def test_job_events_page_newest_first_through_the_api(tmp_path):
    from fastapi.testclient import TestClient

    from genfoundry.core.settings import load_settings
    from genfoundry.gateway.app import create_app
    from genfoundry.gateway.keys import create_key
    from genfoundry.models.spec import ModelSpec

    settings = load_settings(home=tmp_path, environ={}, overrides={"tune_queue": False, "guard": False})
    app = create_app(settings, builtins=False)
    with TestClient(app) as client:
        rt = app.state.runtime
        rt.hub.add(ModelSpec(name="gguf-base", provider="llamacpp", location=str(tmp_path / "none.gguf")))
        Datasets(rt.settings, rt.store).add_version("codes", [{"prompt": "p", "completion": "c"}],
                                                   lineage={"source": "test"})
        jobs = TuneJobs(rt.settings, rt.store, rt.hub)
        job = jobs.create(base="gguf-base", dataset="codes")  # event 1: queued
        for step in range(1, 6):
            jobs.event(job["id"], "metrics", f"step {step}", {"step": step, "loss": 1.0 / step})
        key, _ = create_key(rt.store, name="dev", role="developer")
        headers = {"Authorization": f"Bearer {key}"}
        first = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events?limit=2", headers=headers).json()
        assert [e["data"].get("step") for e in first["data"]] == [5, 4] and first["has_more"] is True
        rest = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events?limit=10&after={first['data'][-1]['id']}",
                          headers=headers).json()
        assert [e["message"] for e in rest["data"]] == ["step 3", "step 2", "step 1", "queued: gguf-base on codes@1"]
        assert rest["has_more"] is False and rest["data"][0]["type"] == "metrics"
        bad = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events?after=nonsense", headers=headers)
        assert bad.status_code == 400 and "after" in bad.json()["error"]["message"]
