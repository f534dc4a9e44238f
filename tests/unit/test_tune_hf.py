"""Fine-tuning a Hugging Face checkpoint (a tiny random Llama): chat-template rendering, a real run through
the job, and the tuned model served by the transformers provider with its PEFT adapter."""

from __future__ import annotations

import asyncio

import pytest

from genfoundry.core.store import Store
from genfoundry.core.types import GenerationRequest, Message
from genfoundry.data.datasets import Datasets, SplitSpec
from genfoundry.models.hub import ModelHub
from genfoundry.models.prompting import TEMPLATES
from genfoundry.models.spec import ModelSpec
from genfoundry.tune.jobs import TuneJobs
from genfoundry.tune.records import IGNORE, encode_rows
from genfoundry.tune.train import TrainConfig
from tests.unit.test_provider_transformers import CHAT_TEMPLATE, _build_model, _build_tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama-tune")
    tokenizer = _build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    _build_model(tokenizer).save_pretrained(folder)
    return folder, tokenizer


def test_a_tokenizer_chat_template_renders_the_training_text(checkpoint):
    _, tokenizer = checkpoint
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "bye"}, {"role": "assistant", "content": "see you"}]}
    (example,), _ = encode_rows([row], tokenizer, TEMPLATES["plain"], fmt="chat", max_length=256)
    trained = tokenizer.decode([t for t, lab in zip(example.input_ids, example.labels) if lab != IGNORE])
    assert trained == "hello\nsee you\n"  # each assistant turn as the template ends it
    # The whole text is the template's rendering of the conversation, as the server would see it.
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(row["messages"], tokenize=False)


def test_a_hugging_face_base_is_trained_and_served_with_its_adapter(checkpoint, settings):
    folder, _ = checkpoint
    store = Store.open(settings.resolved_database_url)
    hub = ModelHub(store, settings)
    hub.add(ModelSpec(name="tiny", provider="transformers", location=str(folder),
                      capabilities=["chat", "completion"]))
    rows = [{"messages": [{"role": "user", "content": f"code {i}?"}, {"role": "assistant", "content": f"it is {i}"}]}
            for i in range(40)]
    Datasets(settings, store).add_version("codes", rows, lineage={"source": "test"}, splits=SplitSpec(seed=2))
    jobs = TuneJobs(settings, store, hub)
    job = jobs.create(base="tiny", dataset="codes", config=TrainConfig(max_steps=3, eval_steps=1, batch_size=4,
                                                                       target_modules=["q_proj", "v_proj"]))
    done = jobs.run(job["id"])
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert "adapter_gguf" not in result  # an HF base is served by transformers with the PEFT adapter
    assert result["metrics"]["best_dev_loss"] is not None and result["metrics"]["steps"] == 3
    spec = hub.resolve(result["fine_tuned_model"])
    assert spec.provider == "transformers" and spec.options["adapter"] == result["adapter_dir"]

    async def ask():
        model = await hub.load_chat(spec.name)
        try:
            return await model.generate(GenerationRequest(messages=[Message("user", "code 3?")], max_tokens=4))
        finally:
            await hub.close()
    assert asyncio.run(ask()).usage.completion_tokens >= 1
    store.close()
