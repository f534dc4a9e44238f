"""The ``llamacpp`` provider: GGUF models on this machine.

Prompts are rendered here (the GGUF's own chat template when it has one,
else the model family's turn format, see :mod:`genfoundry.models.prompting`),
then run by an engine: llama.cpp's ``llama-server`` with continuous batching
when a binary is available, else llama-cpp-python in-process. JSON-schema
output and forced tool calls are grammar-constrained by llama.cpp.

Example::

    spec = ModelSpec(name="gemma", provider="llamacpp", location="/models/gemma.gguf")
    model = LlamaCppModel(spec, load_settings())
    await model.warm_up()
    print((await model.generate(GenerationRequest(prompt="The sky is"))).text)
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genfoundry.core.errors import ConfigError, ContextLengthExceeded, InvalidRequest
from genfoundry.core.settings import Settings, load_settings
from genfoundry.core.types import (
    Embeddings, Generation, GenerationChunk, GenerationRequest, Usage,
)
from genfoundry.models.prompting import (
    RenderedPrompt, forced_tool_schema, parse_tool_calls, render_chat, template_for,
)
from genfoundry.models.providers.llama_inprocess import CompletionParams, InProcessEngine
from genfoundry.models.providers.llama_server import ServerEngine, find_llama_server
from genfoundry.models.protocols import collect_generation
from genfoundry.models.spec import ModelSpec

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_TEMPERATURE",
    "LlamaCppModel",
    "check_adapter",
    "gguf_metadata",
    "inspect",
    "register",
]

DEFAULT_MAX_TOKENS = 512
DEFAULT_TEMPERATURE = 0.7


def gguf_metadata(path: str) -> dict[str, str]:
    """The GGUF's metadata (architecture, context length, licence, ...); reads the vocab only."""
    import llama_cpp
    if not Path(path).is_file():
        raise ConfigError(f"GGUF file {path} does not exist")
    try:
        return dict(llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False).metadata)
    except ValueError as exc:
        raise ConfigError(f"{path} is not a readable GGUF model: {exc}") from exc


def check_adapter(path: Path, architecture: str | None = None) -> dict[str, str]:
    """Read a GGUF LoRA adapter through before any engine loads it: llama.cpp trusts the file's offsets
    (a truncated adapter crashes the in-process engine), so a corrupt or foreign file is refused here."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        fields = {k: reader.fields[k].contents() for k in ("general.type", "adapter.type", "general.architecture")
                  if k in reader.fields}
        tensors = len(reader.tensors)
    except (ValueError, OSError, KeyError, IndexError) as exc:
        raise ConfigError(f"LoRA adapter {path} is not a readable GGUF file ({exc}); re-export it with "
                          "`genfoundry tune export`") from exc
    if fields.get("general.type") != "adapter" or fields.get("adapter.type") != "lora" or not tensors:
        raise ConfigError(f"{path} is a GGUF file but not a LoRA adapter (type {fields.get('general.type')!r})")
    if architecture and fields.get("general.architecture") not in (None, architecture):
        raise ConfigError(f"LoRA adapter {path} was made for {fields.get('general.architecture')}, "
                          f"not for this {architecture} model")
    return fields


def _parse_size(label: str | None) -> int | None:
    if not label:
        return None
    units = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
    try:
        return int(float(label[:-1]) * units[label[-1].upper()])
    except (KeyError, ValueError):
        return None


def inspect(location: str, options: dict[str, Any]) -> dict[str, Any]:
    meta = gguf_metadata(location)
    arch = meta.get("general.architecture", "")
    found: dict[str, Any] = {"license": meta.get("general.license"),
                             "parameters": _parse_size(meta.get("general.size_label"))}
    if meta.get(f"{arch}.context_length"):
        found["context_length"] = int(meta[f"{arch}.context_length"])
    if meta.get(f"{arch}.pooling_type") is not None:
        found["capabilities"] = ["embedding"]
    return {k: v for k, v in found.items() if v is not None}


@dataclass
class _Prepared:
    params: CompletionParams
    prompt_tokens: int
    forced_tool: bool


class LlamaCppModel:
    """A GGUF model run by llama.cpp (chat, completion, JSON, tools, embeddings)."""

    local = True

    def __init__(self, spec: ModelSpec, settings: Settings | None = None):
        self.spec = spec
        self.settings = settings or load_settings()
        self._vocab = None
        self._engine: ServerEngine | InProcessEngine | None = None
        self._embedder = None
        self._embed_lock = asyncio.Lock()
        self._template = None
        self._jinja = None
        self.n_ctx = min(self.settings.llama_context, spec.context_length or self.settings.llama_context)
        self.concurrency = 1
        self.in_flight = 0
        self.replacing = False  # set by the hub when this instance takes over from a running one

    @property
    def engine(self) -> ServerEngine | InProcessEngine | None:
        return self._engine

    async def warm_up(self) -> None:
        if self._engine is not None:
            return
        self._vocab = await asyncio.to_thread(self._load_vocab)
        self._engine = self._choose_engine()
        if self.spec.can("chat") or self.spec.can("completion"):
            await self._engine.start()
        self.concurrency = self._engine.concurrency

    def _load_vocab(self):
        import llama_cpp
        if not Path(self.spec.location).is_file():
            raise ConfigError(f"model file {self.spec.location} is missing; re-run `genfoundry models add` or `genfoundry up`")
        from llama_cpp._utils import suppress_stdout_stderr
        with suppress_stdout_stderr(disable=False):  # llama.cpp prints warnings despite verbose=False
            vocab = llama_cpp.Llama(model_path=self.spec.location, vocab_only=True, verbose=False)
        meta = vocab.metadata
        self._template = template_for(meta.get("general.architecture"), self.spec.options.get("chat_template"))
        if meta.get("tokenizer.chat_template") and not self.spec.options.get("chat_template"):
            self._jinja = meta["tokenizer.chat_template"]
        return vocab

    def _choose_engine(self) -> ServerEngine | InProcessEngine:
        choice = self.spec.options.get("engine", self.settings.llama_engine)
        binary = find_llama_server(self.settings.llama_server_path)
        if choice == "server" and binary is None:
            raise ConfigError("llama_engine is 'server' but no llama-server binary was found; "
                              "run `genfoundry engine build` or set llama_server_path")
        threads = self.settings.llama_threads or os.cpu_count()
        adapter, scale = self._adapter()
        if choice in ("server", "auto") and binary is not None:
            lora = ["--lora-scaled", f"{adapter}:{scale}"] if adapter else []
            quiet = ["--no-warmup"] if self.replacing else []
            return ServerEngine(binary, self.spec.location, n_ctx=self.n_ctx,
                                parallel=self.settings.llama_parallel, n_threads=threads,
                                timeout=self.settings.request_timeout,
                                extra_args=shlex.split(self.settings.llama_server_args) + lora + quiet)
        return InProcessEngine(self.spec.location, n_ctx=self.n_ctx, n_threads=threads, lora_path=adapter,
                               lora_scale=scale)

    def _adapter(self) -> tuple[str | None, float]:
        """The GGUF LoRA adapter this entry applies to its base (a tuned model), and its scale."""
        adapter = self.spec.options.get("adapter")
        if not adapter:
            return None, 1.0
        path = Path(str(adapter)).expanduser()
        if not path.is_file():
            raise ConfigError(f"LoRA adapter {path} of model '{self.spec.name}' is missing; "
                              "`genfoundry tune list` shows the runs and their adapters")
        try:
            scale = float(self.spec.options.get("adapter_scale", 1.0))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"adapter_scale of model '{self.spec.name}' is not a number") from exc
        check_adapter(path, self._vocab.metadata.get("general.architecture") if self._vocab else None)
        return str(path), scale

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.stop()
            self._engine = None

    def count_tokens(self, text: str) -> int:
        return len(self._vocab.tokenize(text.encode(), add_bos=False, special=True))

    # -- prompt ------------------------------------------------------------------
    def _render(self, request: GenerationRequest) -> RenderedPrompt:
        if request.messages is None:
            return RenderedPrompt(text=request.prompt or "", stop=[])
        if self._jinja and not request.tools:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
            formatter = Jinja2ChatFormatter(self._jinja, eos_token=self._token(self._vocab.token_eos()),
                                            bos_token=self._token(self._vocab.token_bos()))
            result = formatter(messages=[_as_dict(m) for m in request.messages])
            stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
            return RenderedPrompt(text=result.prompt, stop=stop)
        return render_chat(request.messages, self._template, tools=request.tools)

    def _token(self, token_id: int) -> str:
        return self._vocab.detokenize([token_id], special=True).decode(errors="ignore")

    def _prepare(self, request: GenerationRequest) -> _Prepared:
        if request.messages is not None and not self.spec.can("chat"):
            raise InvalidRequest(f"model '{self.spec.name}' does not chat; use /v1/completions", param="model")
        rendered = self._render(request)
        prompt_tokens = self.count_tokens(rendered.text) + 1  # + BOS
        room = self.n_ctx - prompt_tokens
        if room <= 0 or (request.max_tokens or 0) > room:
            raise ContextLengthExceeded(
                f"this request needs {prompt_tokens} prompt tokens plus {request.max_tokens or 1} to generate, "
                f"but model '{self.spec.name}' is served with a context of {self.n_ctx} tokens; "
                "shorten the prompt or lower max_tokens", param="messages")
        schema, forced = self._constraint(request)
        max_tokens = request.max_tokens or min(room, self.spec.options.get("default_max_tokens", DEFAULT_MAX_TOKENS))
        params = CompletionParams(
            prompt=rendered.text, max_tokens=max_tokens,
            temperature=DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=[*rendered.stop, *request.stop], seed=request.seed, json_schema=schema)
        return _Prepared(params=params, prompt_tokens=prompt_tokens, forced_tool=forced)

    @staticmethod
    def _constraint(request: GenerationRequest) -> tuple[dict | None, bool]:
        if request.tools and request.tool_choice not in (None, "auto", "none"):
            return forced_tool_schema(request.tools, request.tool_choice), True
        if request.json_schema is not None:
            return request.json_schema, False
        if request.json_object:
            return {}, False
        return None, False

    # -- generation --------------------------------------------------------------
    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.in_flight += 1  # the hub closes a replaced instance only once this is back to 0
        try:
            prepared = self._prepare(request)
            wants_tools = bool(request.tools) and request.tool_choice != "none"
            pieces: list[str] = []
            async for chunk in self._engine.stream(prepared.params):
                if chunk.text:
                    pieces.append(chunk.text)
                    if not wants_tools:  # tool calls are only known once the text is complete
                        yield GenerationChunk(text=chunk.text)
                if chunk.finish_reason is not None:
                    text = "".join(pieces)
                    usage = Usage(prompt_tokens=prepared.prompt_tokens,
                                  completion_tokens=chunk.completion_tokens
                                  if chunk.completion_tokens is not None else self.count_tokens(text))
                    finish, calls = chunk.finish_reason, None
                    if wants_tools:
                        text, calls = parse_tool_calls(text, forced=prepared.forced_tool)
                        if text:
                            yield GenerationChunk(text=text)
                        if calls:
                            finish = "tool_calls"
                    yield GenerationChunk(finish_reason=finish, usage=usage, tool_calls=calls or None)
        finally:
            self.in_flight -= 1

    async def generate(self, request: GenerationRequest) -> Generation:
        return await collect_generation(self.stream(request))

    # -- embeddings --------------------------------------------------------------
    @property
    def dimensions(self) -> int:
        if self._vocab is None:
            return 0
        meta = self._vocab.metadata  # a vocab-only load reports n_embd() as 0
        return int(meta.get(f"{meta.get('general.architecture')}.embedding_length", 0))

    async def embed(self, texts: list[str]) -> Embeddings:
        if not texts:
            return Embeddings(vectors=[])
        for text in texts:
            if self.count_tokens(text) > self.n_ctx:
                raise ContextLengthExceeded(f"an input is longer than the model's context of {self.n_ctx} tokens")
        async with self._embed_lock:
            if self._embedder is None:
                self._embedder = await asyncio.to_thread(self._load_embedder)
            vectors = await asyncio.to_thread(self._embedder.embed, texts, normalize=True)
        tokens = sum(self.count_tokens(t) for t in texts)
        return Embeddings(vectors=[list(map(float, v)) for v in vectors], usage=Usage(prompt_tokens=tokens))

    def _load_embedder(self):
        import llama_cpp
        # Generative GGUFs carry no pooling type; mean pooling gives one vector per text.
        pooling = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
        if "pooling_type" not in " ".join(self._vocab.metadata):
            pooling = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        return llama_cpp.Llama(model_path=self.spec.location, embedding=True, n_ctx=self.n_ctx,
                               pooling_type=pooling, verbose=False,
                               n_threads=self.settings.llama_threads or os.cpu_count())


def _as_dict(message) -> dict[str, Any]:
    return {"role": message.role, "content": message.content or ""}


def register(register) -> None:
    from genfoundry.models.providers import Provider
    register(Provider(name="llamacpp", create=LlamaCppModel, inspect=inspect,
                      description="GGUF models on this machine through llama.cpp (llama-server or in-process)."))
