"""The ``transformers`` provider against a tiny random Llama built offline in a temp folder.

The weights are random, so the tests check the machinery (prompting, stopping,
streaming, limits, adapters), not the quality of what the model says.
"""

from __future__ import annotations

import asyncio
import json
import os
import string
import sys
from pathlib import Path

import pytest

from genfoundry.core.errors import ConfigError, ContextLengthExceeded, InvalidRequest
from genfoundry.core.types import GenerationRequest, Message
from genfoundry.models.prompting import TEMPLATES, render_chat
from genfoundry.models.providers.transformers import (
    TransformersModel,
    _Prepared,
    _StopScanner,
    inspect,
    register,
)
from genfoundry.models.spec import ModelSpec
from genfoundry.testing.conformance import ChatModelConformance

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CONTEXT = 1024
CORPUS = [
    "one two three four five six seven eight nine ten",
    "the cat sat on the mat, and the dog sat on the rug.",
    "Name a colour. Red, green, blue.",
    "User: hello\n\nAssistant: hi there, how can I help?",
    string.printable,  # every ASCII character gets a token, so any prompt encodes
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}")
TOOLS = [{"type": "function", "function": {
    "name": "get_time", "description": "Current time in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<eos>", "<pad>"],
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def _build_model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = _build_tokenizer()
    tokenizer.save_pretrained(folder)
    _build_model(tokenizer).save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: mit\ntags:\n- test\n---\n# Tiny Llama\n")
    return folder


@pytest.fixture(scope="session")
def tiny_chat_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The same weights, with a tokenizer that carries a chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = tmp_path_factory.mktemp("tiny-llama-chat")
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    AutoModelForCausalLM.from_pretrained(tiny_checkpoint).save_pretrained(folder)
    return folder


def _spec(location: Path | str, **options) -> ModelSpec:
    return ModelSpec(name="tiny", provider="transformers", location=str(location), options=options,
                     capabilities=["chat", "completion", "tools"])


def _warm(spec: ModelSpec) -> TransformersModel:
    model = TransformersModel(spec)
    asyncio.run(model.warm_up())
    return model


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint) -> TransformersModel:
    return _warm(_spec(tiny_checkpoint))


def _chat(text: str, **kw) -> GenerationRequest:
    return GenerationRequest(messages=[Message(role="user", content=text)], **kw)


def _generate(model: TransformersModel, request: GenerationRequest):
    return asyncio.run(model.generate(request))


class TestTinyLlamaConformance(ChatModelConformance):
    """No chat template: prompts use the plain turn format from genfoundry.models.prompting."""

    @pytest.fixture(scope="class")
    def chat_model(self, tiny_model):
        return tiny_model


class TestTinyLlamaChatTemplateConformance(ChatModelConformance):
    """The tokenizer's own chat template renders the prompt."""

    @pytest.fixture(scope="class")
    def chat_model(self, tiny_chat_checkpoint):
        model = _warm(_spec(tiny_chat_checkpoint))
        yield model
        asyncio.run(model.close())


def test_chat_template_renders_the_prompt(tiny_chat_checkpoint):
    model = _warm(_spec(tiny_chat_checkpoint))
    result = _generate(model, _chat("hello there", max_tokens=2, temperature=0))
    expected = "<user>hello there\n<assistant>"
    expected_ids = model._tokenizer.encode(expected, add_special_tokens=False)
    assert result.usage.prompt_tokens == len(expected_ids)


def test_tools_are_described_in_a_turn_format_prompt(tiny_chat_checkpoint):
    model = _warm(_spec(tiny_chat_checkpoint))
    messages = [Message(role="user", content="What time is it in Oslo?")]
    request = GenerationRequest(messages=messages, tools=TOOLS, max_tokens=2, temperature=0)
    result = _generate(model, request)
    expected = render_chat(messages, TEMPLATES["plain"], tools=TOOLS).text
    assert "get_time" in expected
    assert result.usage.prompt_tokens == len(model._tokenizer.encode(expected))


def test_tool_choice_naming_an_unknown_tool_is_refused(tiny_model):
    choice = {"type": "function", "function": {"name": "nope"}}
    request = _chat("time?", tools=TOOLS, tool_choice=choice)
    with pytest.raises(InvalidRequest, match="nope"):
        _generate(tiny_model, request)


def test_stop_string_cuts_before_it_and_ends_generation(tiny_model):
    free = _generate(tiny_model, GenerationRequest(prompt="one two three", max_tokens=24,
                                                   temperature=0))
    # Random weights: take the stop string from what the model says anyway.
    pairs = (free.text[i:i + 2] for i in range(4, len(free.text) - 2))
    stop = next(pair for pair in pairs if pair.strip())
    cut = free.text.find(stop)
    request = GenerationRequest(prompt="one two three", max_tokens=24, temperature=0, stop=[stop])
    stopped = _generate(tiny_model, request)
    assert stopped.text == free.text[:cut]
    assert stopped.finish_reason == "stop"
    assert stopped.usage.completion_tokens < free.usage.completion_tokens
    streamed = asyncio.run(_collect(tiny_model, request))
    assert "".join(c.text for c in streamed) == stopped.text


async def _collect(model, request):
    return [chunk async for chunk in model.stream(request)]


@pytest.mark.parametrize(("pieces", "stops", "expected"), [
    (["Hello, wor", "ld"], [","], "Hello"),
    (["ab", "c\nUs", "er: next"], ["\nUser:"], "abc"),
    (["ab", "c\nUs", "ual"], ["\nUser:"], "abc\nUsual"),  # a held-back partial match is released
    (["no stop here"], [], "no stop here"),
])
def test_stop_scanner_never_passes_on_a_stop_string(pieces, stops, expected):
    scanner = _StopScanner(stops)
    passed = []
    for piece in pieces:
        passed.append(scanner.feed(piece))
        if scanner.stopped:
            break
    passed.append(scanner.finish())
    assert "".join(passed) == expected


def test_forced_tool_call_is_completed_from_the_prefilled_start(tiny_model):
    # Random weights cannot write a call, so check how a plausible continuation is read back.
    prepared = _Prepared(input_ids=[1], max_new_tokens=20, stop=["</tool_call>"], sampling={},
                         seed=None, wants_tools=True,
                         tool_prefix='<tool_call>{"name": "get_time", "arguments": ')
    *_, final = tiny_model._final_chunks(prepared, '{"city": "Oslo"}}', 9, True)
    assert final.finish_reason == "tool_calls"
    assert final.tool_calls[0].name == "get_time"
    assert json.loads(final.tool_calls[0].arguments) == {"city": "Oslo"}


def test_hitting_max_tokens_finishes_with_length(tiny_model):
    result = _generate(tiny_model, GenerationRequest(prompt="one two", max_tokens=5, temperature=0))
    assert result.usage.completion_tokens <= 5
    if result.usage.completion_tokens == 5:
        assert result.finish_reason == "length"


def test_seeded_sampling_repeats(tiny_model):
    request = GenerationRequest(prompt="the cat", max_tokens=10, temperature=1.0, seed=7)
    assert _generate(tiny_model, request).text == _generate(tiny_model, request).text


@pytest.mark.parametrize("constraint", [{"json_schema": {"type": "object"}}, {"json_object": True}])
def test_json_requests_are_refused_with_advice(tiny_model, constraint):
    with pytest.raises(InvalidRequest, match="llamacpp"):
        _generate(tiny_model, _chat("Give JSON.", max_tokens=8, **constraint))


def test_context_length_comes_from_the_config(tiny_model):
    assert tiny_model.spec.context_length is None
    assert tiny_model.context_length == CONTEXT
    with pytest.raises(ContextLengthExceeded, match=str(CONTEXT)):
        _generate(tiny_model, GenerationRequest(prompt="one two", max_tokens=CONTEXT))


def test_cancelled_stream_stops_generating_and_frees_the_model(tiny_model, monkeypatch):
    generated: list[int] = []
    real_run = tiny_model._run

    def recording_run(*args):
        generated.append(real_run(*args))
        return generated[-1]
    monkeypatch.setattr(tiny_model, "_run", recording_run)
    long_request = GenerationRequest(prompt="one two", max_tokens=CONTEXT - 16, temperature=0)

    async def cancel_after_first_chunk():
        first = asyncio.Event()

        async def consume():
            async for _ in tiny_model.stream(long_request):
                first.set()
        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not tiny_model._lock.locked()
        return await tiny_model.generate(GenerationRequest(prompt="two", max_tokens=3))

    result = asyncio.run(cancel_after_first_chunk())
    assert generated[0] < long_request.max_tokens  # the worker stopped early, not at max_tokens
    assert result.usage.completion_tokens > 0


def test_missing_folder_is_a_clear_error_at_warm_up(tmp_path):
    model = TransformersModel(_spec(tmp_path / "nowhere"))  # the constructor loads nothing
    with pytest.raises(ConfigError, match="nowhere"):
        asyncio.run(model.warm_up())


def test_count_tokens_before_warm_up_says_what_to_do(tiny_checkpoint):
    with pytest.raises(Exception, match="warm_up"):
        TransformersModel(_spec(tiny_checkpoint)).count_tokens("hello")


def test_adapter_without_peft_says_how_to_install(tiny_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "adapter_config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` fail
    with pytest.raises(ConfigError, match=r"genfoundry\[peft\]"):
        asyncio.run(TransformersModel(_spec(tiny_checkpoint, adapter=str(tmp_path))).warm_up())


def test_lora_adapter_changes_the_output(tiny_checkpoint, tiny_model, tmp_path):
    peft = pytest.importorskip("peft", reason="LoRA adapters need `pip install 'genfoundry[peft]'`")
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    # init_lora_weights=False: random, non-zero B, so the adapter is not a no-op; a large
    # alpha makes the update big enough to change greedy choices of random weights.
    config = peft.LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                             init_lora_weights=False)
    peft.get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    adapted = _warm(_spec(tiny_checkpoint, adapter=str(tmp_path / "adapter")))
    request = GenerationRequest(prompt="the cat sat on", max_tokens=12, temperature=0)
    assert _generate(adapted, request).text != _generate(tiny_model, request).text


def test_inspect_reads_config_weights_header_and_model_card(tiny_checkpoint):
    from transformers import AutoModelForCausalLM
    found = inspect(str(tiny_checkpoint), {})
    weights = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    assert found["context_length"] == CONTEXT
    assert found["parameters"] == sum(p.numel() for p in weights.parameters())
    assert found["license"] == "mit"
    assert "json" not in found["capabilities"]


def test_inspect_of_a_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        inspect(str(tmp_path), {})


def test_register_adds_the_transformers_provider():
    found = []
    register(found.append)
    assert [p.name for p in found] == ["transformers"]
    assert found[0].create is TransformersModel and found[0].inspect is inspect
    assert found[0].description
