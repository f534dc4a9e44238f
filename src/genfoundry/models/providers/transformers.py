"""The ``transformers`` provider: a Hugging Face checkpoint folder on this machine.

The folder is what ``save_pretrained`` writes (config.json, weights, tokenizer);
``options["adapter"]`` may name a PEFT LoRA adapter folder to apply on top, such
as one ``genfoundry tune`` produced. Everything runs on the CPU, one request at a
time, in a worker thread so the gateway's event loop never blocks.

Prompts use the tokenizer's own chat template when it has one, else the model
family's turn format from :mod:`genfoundry.models.prompting`. Tools are
described in the prompt and parsed back out of ``<tool_call>`` tags. There is no
grammar-constrained decoding here, so JSON-schema requests are refused: serve
the model as GGUF through ``llamacpp`` for those.

Options: ``adapter`` (LoRA folder), ``merge_adapter`` (default true),
``torch_dtype`` (default ``float32``), ``chat_template`` (a turn-format name,
used when the tokenizer has none), ``default_max_tokens``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
from collections.abc import AsyncIterator
from contextlib import aclosing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genfoundry.core.errors import (
    ConfigError,
    ContextLengthExceeded,
    GenfoundryError,
    InvalidRequest,
    ProviderError,
)
from genfoundry.core.settings import Settings
from genfoundry.core.types import (
    Generation,
    GenerationChunk,
    GenerationRequest,
    Message,
    Usage,
)
from genfoundry.models.prompting import (
    RenderedPrompt,
    TurnTemplate,
    forced_tool_schema,
    parse_tool_calls,
    render_chat,
    template_for,
)
from genfoundry.models.protocols import collect_generation
from genfoundry.models.spec import ModelSpec

__all__ = [
    "DEFAULT_DTYPE",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_TEMPERATURE",
    "TransformersModel",
    "context_length_of",
    "inspect",
    "model_card_license",
    "register",
    "safetensors_parameters",
]

DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.7
DEFAULT_DTYPE = "float32"
TOOL_CALL_END = "</tool_call>"
# Config keys that hold the context window, by model family (GPT-2 says n_positions).
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
# Extra tokens decoded beyond a stop string's length, for tokens that decode to nothing.
_STOP_WINDOW_SLACK = 8


# -- reading a checkpoint without loading its weights --------------------------------------
def _offline() -> None:
    # Local folders only: a typo in a path must not turn into a download from the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def context_length_of(config: dict[str, Any]) -> int | None:
    """The context window a config.json declares (multimodal configs nest it in text_config)."""
    for source in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            value = source.get(key)
            if isinstance(value, int) and value > 0:
                return value
    return None


def safetensors_parameters(folder: Path) -> int | None:
    """Parameter count from the safetensors headers: reads a few KB, never the weights."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def model_card_license(folder: Path) -> str | None:
    """The ``license:`` of a README.md's front matter (the Hugging Face model card), if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    lines = readme.read_text(errors="ignore").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, _, value = line.partition(":")
        if key.strip() == "license" and value.strip():
            return value.strip().strip("'\"")
    return None


def _checkpoint_folder(location: str) -> Path:
    folder = Path(location).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"{folder} is not a Hugging Face checkpoint folder (no config.json there); point the "
            "model at the folder `save_pretrained` wrote, or fix it with `genfoundry models edit`")
    return folder


def inspect(location: str, options: dict[str, Any]) -> dict[str, Any]:
    """What ``models add`` can learn from the folder: context length, size and licence."""
    folder = _checkpoint_folder(location)
    config = json.loads((folder / "config.json").read_text())
    found = {
        "context_length": context_length_of(config),
        "parameters": safetensors_parameters(folder),
        "license": model_card_license(folder),
        # No "json": transformers has no grammar here to hold output to a schema.
        "capabilities": ["chat", "completion", "tools"],
    }
    return {k: v for k, v in found.items() if v is not None}


# -- stopping generation from inside transformers' loop ------------------------------------
# Both follow transformers' StoppingCriteria call signature; generate() accepts any such
# callable, and defining them here keeps `import transformers` out of plugin discovery.
class _StopWhenCancelled:
    """Ends generation at the next token once the consumer has gone away."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel

    def __call__(self, input_ids, scores, **kwargs):
        import torch
        return torch.full((input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool)


class _StopOnStrings:
    """Ends generation once the decoded tail of the new tokens contains a stop string."""

    def __init__(self, tokenizer, stops: list[str], prompt_length: int):
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_length = prompt_length
        # Each token decodes to at least one character, bar special ones, so this many suffice.
        self.window = max(len(s) for s in stops) + _STOP_WINDOW_SLACK

    def __call__(self, input_ids, scores, **kwargs):
        import torch
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        tail = self.tokenizer.decode(input_ids[0, start:], skip_special_tokens=True)
        hit = any(s in tail for s in self.stops)
        return torch.full((input_ids.shape[0],), hit, dtype=torch.bool)


class _StopScanner:
    """Cuts streamed text at the first stop string, holding back a tail that may begin one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add ``piece``; return the text that is now safe to pass on."""
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            safe, self.pending = self.pending[:min(hits)], ""
            return safe
        split = len(self.pending) - self._partial_stop_length()
        safe, self.pending = self.pending[:split], self.pending[split:]
        return safe

    def _partial_stop_length(self) -> int:
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:n]):
                    longest = n
                    break
        return longest

    def finish(self) -> str:
        rest, self.pending = self.pending, ""
        return rest


# -- the model -------------------------------------------------------------------------------
@dataclass
class _Prepared:
    input_ids: list[int]
    max_new_tokens: int
    stop: list[str]
    sampling: dict[str, Any]
    seed: int | None
    wants_tools: bool
    # Forced tool calls are steered by starting the model's answer for it (no grammar here).
    tool_prefix: str | None = None


def _sampling(request: GenerationRequest) -> dict[str, Any]:
    temperature = DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
    if temperature <= 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature,
            "top_p": 1.0 if request.top_p is None else request.top_p}


def _forced_prefix(request: GenerationRequest) -> str | None:
    if not request.tools or request.tool_choice in (None, "auto", "none"):
        return None
    forced_tool_schema(request.tools, request.tool_choice)  # rejects a tool_choice naming no tool
    if isinstance(request.tool_choice, dict):
        name = request.tool_choice["function"]["name"]
        return '<tool_call>{"name": ' + json.dumps(name) + ', "arguments": '
    return '<tool_call>{"name": "'


def _as_dict(message: Message) -> dict[str, str]:
    # Chat templates know system, user and assistant; "developer" is OpenAI's newer name for system.
    role = "system" if message.role == "developer" else message.role
    return {"role": role, "content": message.content or ""}


def _complete_forced_call(prepared: _Prepared, text: str) -> str:
    """Put back the call's start we wrote into the prompt, and the end its stop string cut."""
    return prepared.tool_prefix + text + TOOL_CALL_END if prepared.tool_prefix else text


def _has_tool_turns(messages: list[Message]) -> bool:
    return any(m.role == "tool" or m.tool_calls for m in messages)


def _dtype_argument() -> str:
    import transformers
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


class TransformersModel:
    """A Hugging Face causal LM (optionally with a LoRA adapter) run by transformers on the CPU.

    Example::

        spec = ModelSpec(name="support-bot", provider="transformers",
                         location="/srv/models/qwen2.5-0.5b-instruct",
                         options={"adapter": "/srv/models/adapters/tickets-v3"})
        model = TransformersModel(spec)
        await model.warm_up()
        answer = await model.generate(GenerationRequest(
            messages=[Message("user", "Where is my parcel?")], max_tokens=64))
    """

    local = True
    concurrency = 1

    def __init__(self, spec: ModelSpec, settings: Settings | None = None):
        self.spec = spec
        self.settings = settings
        self.context_length: int | None = spec.context_length
        self._tokenizer = None
        self._model = None
        self._template: TurnTemplate | None = None
        self._lock = asyncio.Lock()  # queues requests; the thread lock below guards the weights
        self._model_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    async def warm_up(self) -> None:
        async with self._lock:  # two callers warming up at once load the weights once
            if self._model is not None:
                return
            tokenizer, model = await asyncio.to_thread(self._load)
            self._template = template_for(getattr(model.config, "model_type", None),
                                          self.spec.options.get("chat_template"))
            config = model.config.to_dict()
            self.context_length = self.spec.context_length or context_length_of(config)
            self._tokenizer, self._model = tokenizer, model

    def _load(self):
        folder = _checkpoint_folder(self.spec.location)
        _offline()
        from transformers import AutoModelForCausalLM, AutoTokenizer
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, **{_dtype_argument(): self._dtype()})
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the checkpoint in {folder}: {exc}") from exc
        model = self._with_adapter(model)
        model.eval()
        return tokenizer, model

    def _dtype(self):
        import torch
        name = str(self.spec.options.get("torch_dtype", DEFAULT_DTYPE)).removeprefix("torch.")
        if name == "auto":
            return "auto"
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"torch_dtype '{name}' of model '{self.spec.name}' is not a torch "
                              "dtype; use float32, bfloat16 or float16")
        return dtype

    def _with_adapter(self, model):
        adapter = self.spec.options.get("adapter")
        if not adapter:
            return model
        path = Path(adapter).expanduser()
        if not (path / "adapter_config.json").is_file():
            raise ConfigError(f"adapter folder {path} of model '{self.spec.name}' has no "
                              "adapter_config.json; point options.adapter at a PEFT adapter folder")
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise ConfigError(f"model '{self.spec.name}' uses a LoRA adapter, which needs PEFT; "
                              "run `pip install 'genfoundry[peft]'`") from exc
        model = PeftModel.from_pretrained(model, str(path))
        # Folding the low-rank update into the weights makes each token cost what the base's does.
        return model.merge_and_unload() if self.spec.options.get("merge_adapter", True) else model

    async def close(self) -> None:
        async with self._lock:
            self._tokenizer = self._model = None

    def _require_tokenizer(self):
        if self._tokenizer is None:
            raise ProviderError(f"model '{self.spec.name}' is not loaded; call warm_up() first")
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self._require_tokenizer().encode(text, add_special_tokens=False))

    # -- prompt --------------------------------------------------------------------------
    def _render(self, request: GenerationRequest) -> tuple[RenderedPrompt, bool]:
        """The prompt text and whether the tokenizer should add its special tokens (BOS)."""
        if request.messages is None:
            return RenderedPrompt(text=request.prompt or "", stop=[]), True
        tools = request.tools if request.tool_choice != "none" else None
        # Tool definitions and earlier tool turns are written in the turn format, which knows them.
        if self._tokenizer.chat_template and not tools and not _has_tool_turns(request.messages):
            return RenderedPrompt(text=self._apply_chat_template(request.messages), stop=[]), False
        return render_chat(request.messages, self._template, tools=tools), True

    def _apply_chat_template(self, messages: list[Message]) -> str:
        from jinja2 import TemplateError
        try:
            return self._tokenizer.apply_chat_template(
                [_as_dict(m) for m in messages], tokenize=False, add_generation_prompt=True)
        except TemplateError as exc:  # templates raise on turns they do not accept
            raise InvalidRequest(f"the chat template of model '{self.spec.name}' rejects these "
                                 f"messages: {exc}", param="messages") from exc

    def _refuse_unsupported(self, request: GenerationRequest) -> None:
        if request.json_schema is not None or request.json_object:
            raise InvalidRequest(
                f"model '{self.spec.name}' runs on transformers, which cannot constrain output to "
                "JSON; use a llamacpp (GGUF) model for JSON output", param="response_format")
        if request.messages is not None and not self.spec.can("chat"):
            raise InvalidRequest(f"model '{self.spec.name}' does not chat; use /v1/completions",
                                 param="model")

    def _prepare(self, request: GenerationRequest) -> _Prepared:
        tokenizer = self._require_tokenizer()
        self._refuse_unsupported(request)
        rendered, add_special = self._render(request)
        prefix = _forced_prefix(request)
        ids = tokenizer.encode(rendered.text + (prefix or ""), add_special_tokens=add_special)
        if not ids:
            raise InvalidRequest("the prompt is empty", param="prompt")
        return _Prepared(
            input_ids=ids, max_new_tokens=self._max_new_tokens(len(ids), request),
            stop=[*rendered.stop, *request.stop, *([TOOL_CALL_END] if prefix else [])],
            sampling=_sampling(request), seed=request.seed,
            wants_tools=bool(request.tools) and request.tool_choice != "none", tool_prefix=prefix)

    def _max_new_tokens(self, prompt_tokens: int, request: GenerationRequest) -> int:
        requested = request.max_tokens
        default = int(self.spec.options.get("default_max_tokens", DEFAULT_MAX_TOKENS))
        limit = self.context_length
        if limit is None:
            return requested or default
        room = limit - prompt_tokens
        if room <= 0 or (requested or 0) > room:
            raise ContextLengthExceeded(
                f"this request needs {prompt_tokens} prompt tokens plus {requested or 1} to "
                f"generate, but model '{self.spec.name}' has a context of {limit} tokens; "
                "shorten the prompt or lower max_tokens",
                param="messages" if request.is_chat else "prompt")
        return requested or min(default, room)

    # -- generation ----------------------------------------------------------------------
    def _run(self, prepared: _Prepared, streamer, cancel: threading.Event) -> int:
        """Thread body: generate into ``streamer``; returns how many tokens were generated."""
        import torch
        from transformers import StoppingCriteriaList
        try:
            with self._model_lock:
                model, tokenizer = self._model, self._tokenizer
                if model is None:
                    raise ProviderError(f"model '{self.spec.name}' was closed")
                if prepared.seed is not None:
                    torch.manual_seed(prepared.seed)
                inputs = torch.tensor([prepared.input_ids])
                criteria = StoppingCriteriaList([_StopWhenCancelled(cancel)])
                if prepared.stop:
                    criteria.append(_StopOnStrings(tokenizer, prepared.stop, inputs.shape[1]))
                pad = tokenizer.pad_token_id
                output = model.generate(
                    input_ids=inputs, attention_mask=torch.ones_like(inputs),
                    max_new_tokens=prepared.max_new_tokens, stopping_criteria=criteria,
                    streamer=streamer, **prepared.sampling,
                    pad_token_id=tokenizer.eos_token_id if pad is None else pad)
            return int(output.shape[1] - inputs.shape[1])
        except GenfoundryError:
            streamer.end()  # wakes the reader, which then gets this error from the worker
            raise
        except Exception as exc:
            streamer.end()
            raise ProviderError(
                f"transformers failed to generate with '{self.spec.name}': {exc}") from exc

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        prepared = self._prepare(request)
        async with self._lock, aclosing(self._stream_prepared(prepared)) as chunks:
            # aclosing: an abandoned stream must stop the worker before the lock is released.
            async for chunk in chunks:
                yield chunk

    async def _stream_prepared(self, prepared: _Prepared) -> AsyncIterator[GenerationChunk]:
        from transformers import AsyncTextIteratorStreamer
        streamer = AsyncTextIteratorStreamer(
            self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        worker = asyncio.ensure_future(asyncio.to_thread(self._run, prepared, streamer, cancel))
        scanner = _StopScanner(prepared.stop)
        pieces: list[str] = []
        try:
            async for piece in streamer:
                safe = scanner.feed(piece)
                pieces.append(safe)
                if safe and not prepared.wants_tools:  # tool calls are known only at the end
                    yield GenerationChunk(text=safe)
                if scanner.stopped:
                    cancel.set()
                    break
            generated = await worker
            rest = scanner.finish()
            pieces.append(rest)
            if rest and not prepared.wants_tools:
                yield GenerationChunk(text=rest)
            for chunk in self._final_chunks(prepared, "".join(pieces), generated, scanner.stopped):
                yield chunk
        finally:
            cancel.set()  # the consumer may have left early: stop at the next token
            await _settle(worker)

    def _final_chunks(self, prepared: _Prepared, text: str, generated: int,
                      hit_stop: bool) -> list[GenerationChunk]:
        finish = "stop" if hit_stop or generated < prepared.max_new_tokens else "length"
        usage = Usage(prompt_tokens=len(prepared.input_ids), completion_tokens=generated)
        if not prepared.wants_tools:
            return [GenerationChunk(finish_reason=finish, usage=usage)]
        content, calls = parse_tool_calls(_complete_forced_call(prepared, text))
        if not calls:
            content = text  # no call came out: show what the model wrote, not our scaffolding
        chunks = [GenerationChunk(text=content)] if content else []
        chunks.append(GenerationChunk(finish_reason="tool_calls" if calls else finish, usage=usage,
                                      tool_calls=calls or None))
        return chunks

    async def generate(self, request: GenerationRequest) -> Generation:
        return await collect_generation(self.stream(request))


async def _settle(worker: asyncio.Future) -> None:
    """Wait for the generation thread to end, so the lock is held until the model is free."""
    # _run raises only GenfoundryError: already raised to the consumer, or nobody is listening.
    with suppress(GenfoundryError):
        await asyncio.shield(worker)


def register(register) -> None:
    from genfoundry.models.providers import Provider
    register(Provider(name="transformers", create=TransformersModel, inspect=inspect,
                      description="Hugging Face checkpoints (and LoRA adapters) on this "
                                  "machine's CPU through transformers."))
