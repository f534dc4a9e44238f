"""llama-cpp-python inside the gateway process: one sequence at a time.

Used when no llama-server binary is available, and as the reference the
benchmark compares the gateway against. Generation runs in a worker thread and
stops at the next token once the caller goes away.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from genfoundry.core.errors import ProviderError

__all__ = ["CompletionParams", "EngineChunk", "InProcessEngine"]


@dataclass
class CompletionParams:
    """What a local engine needs to run one completion of an already-rendered prompt."""

    prompt: str
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None = None
    json_schema: dict[str, Any] | None = None


@dataclass
class EngineChunk:
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int | None = None


_END = object()


class InProcessEngine:
    """Runs llama-cpp-python's ``Llama`` in a thread, one request at a time."""

    concurrency = 1

    def __init__(self, model_path: str, *, n_ctx: int, n_threads: int | None, lora_path: str | None = None,
                 lora_scale: float = 1.0):
        self.model_path = model_path
        self.lora_path = lora_path
        self.lora_scale = lora_scale
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._llm = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import llama_cpp
        try:
            self._llm = llama_cpp.Llama(
                model_path=self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads,
                n_batch=512, verbose=False, lora_path=self.lora_path, lora_scale=self.lora_scale)
        except (ValueError, RuntimeError) as exc:
            what = f"the LoRA adapter {self.lora_path}" if self.lora_path else self.model_path
            raise ProviderError(f"llama.cpp cannot load {what}: {exc}") from exc

    async def stop(self) -> None:
        self._llm = None

    def _grammar(self, schema: dict[str, Any] | None):
        if schema is None:
            return None
        from llama_cpp import LlamaGrammar
        if schema == {}:
            from llama_cpp.llama_grammar import JSON_GBNF
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)

    def _run(self, params: CompletionParams, emit, cancel: threading.Event) -> None:
        """Thread body: stream tokens to ``emit`` until done or cancelled."""
        with self._lock:
            llm = self._llm
            if llm is None:
                raise ProviderError("the in-process llama.cpp engine is not loaded")
            if params.seed is not None:
                llm.set_seed(params.seed)
            pieces: list[str] = []
            finish = "stop"
            for out in llm.create_completion(
                    params.prompt, max_tokens=params.max_tokens, temperature=params.temperature,
                    top_p=params.top_p, stop=params.stop or None, stream=True,
                    grammar=self._grammar(params.json_schema)):
                if cancel.is_set():
                    finish = "cancelled"
                    break
                choice = out["choices"][0]
                if choice["text"]:
                    pieces.append(choice["text"])
                    emit(EngineChunk(text=choice["text"]))
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
            text = "".join(pieces)
            tokens = len(llm.tokenize(text.encode(), add_bos=False, special=True)) if text else 0
            emit(EngineChunk(finish_reason=finish, completion_tokens=tokens))

    async def stream(self, params: CompletionParams) -> AsyncIterator[EngineChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def body() -> None:
            try:
                self._run(params, emit, cancel)
            except Exception as exc:  # surfaced to the caller below
                emit(exc)
            finally:
                emit(_END)

        worker = loop.run_in_executor(None, body)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, Exception):
                    raise item if isinstance(item, ProviderError) else ProviderError(f"llama.cpp failed: {item}")
                yield item
        finally:
            cancel.set()  # stops the thread at its next token if the caller left early
            await asyncio.shield(worker)
