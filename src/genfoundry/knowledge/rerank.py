"""Re-ranking retrieved passages: by a cross-encoder, or by a chat model.

A cross-encoder reads the question and a passage together and scores how well
they match; it is slower than the bi-encoder that found the candidates but more
precise, so it re-orders the top few dozen. Any sentence-transformers
``CrossEncoder`` folder works (for example ms-marco-MiniLM-L-6-v2, saved
locally). Without one, a chat model can grade each passage from 0 to 10
(constrained to JSON where the model supports it); small models grade poorly,
so that is a fallback, not a default.

The ``reranker`` setting picks one: ``cross-encoder:/path/to/folder`` or
``model:NAME`` (a chat model of the hub). Unset, re-ranking is off and asking
for it is an error.

Example::

    reranker = open_reranker("cross-encoder:/models/ms-marco-minilm", hub)
    scores = await reranker.score("refund time", ["Refunds take 5 days.", "Tents are green."])
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from genfoundry.core.errors import ConfigError, GenfoundryError
from genfoundry.core.types import GenerationRequest, Message
from genfoundry.models.hub import ModelHub

__all__ = ["ChatModelReranker", "CrossEncoderReranker", "MAX_GRADED", "open_reranker"]

_GRADE_SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
                 "required": ["score"]}
_PASSAGE_CHARS = 1500


class CrossEncoderReranker:
    """Scores pairs with a sentence-transformers CrossEncoder from a local folder (loaded on first use)."""

    def __init__(self, location: str | Path, *, batch_size: int = 32):
        self.location = Path(location).expanduser()
        self.batch_size = batch_size
        self._model = None
        self._lock = asyncio.Lock()

    def _load(self):
        if not self.location.is_dir():
            raise ConfigError(f"cross-encoder folder {self.location} does not exist; fix the reranker setting")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        try:
            return CrossEncoder(str(self.location), device="cpu", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the cross-encoder in {self.location}: {exc}") from exc

    async def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        async with self._lock:
            if self._model is None:
                self._model = await asyncio.to_thread(self._load)
            scores = await asyncio.to_thread(self._model.predict, [(query, t) for t in texts],
                                             batch_size=self.batch_size, show_progress_bar=False)
        return [float(s) for s in scores]


MAX_GRADED = 20  # model calls per search at most; passages past it keep their order, below the graded ones


class ChatModelReranker:
    """Asks a chat model to grade each passage 0-10 for the question (one call per passage, at most
    ``max_graded`` per search). ``generate`` runs each call (the gateway passes its guarded, metered
    lifecycle for the caller's key); default: the hub's model directly (the local CLI)."""

    def __init__(self, hub: ModelHub, model: str, *, generate=None, max_graded: int = MAX_GRADED):
        self.hub = hub
        self.model = model
        self.generate = generate
        self.max_graded = max_graded

    async def score(self, query: str, texts: Sequence[str]) -> list[float]:
        spec = self.hub.resolve(self.model)
        if self.generate is None:
            chat = await self.hub.load_chat(self.model)
            generate = lambda _model, request: chat.generate(request)  # noqa: E731
        else:
            generate = self.generate
        use_json = spec.can("json")
        grades = []
        for text in texts[: self.max_graded]:
            prompt = (f"Passage: {text[:_PASSAGE_CHARS]}\n\nQuestion: {query}\n\nHow well does the passage answer "
                      "the question, from 0 (not at all) to 10 (completely)? Reply as JSON: {\"score\": N}")
            request = GenerationRequest(messages=[Message(role="user", content=prompt)], max_tokens=16,
                                        temperature=0, json_schema=_GRADE_SCHEMA if use_json else None)
            try:
                grades.append(_grade((await generate(spec.name, request)).text))
            except GenfoundryError as exc:
                if exc.status_code in (403, 429) or (exc.code or "").startswith(("guard_", "sensitivity_")):
                    raise  # a refusal (permission, budget, guard) is the caller's answer, not a failed grade
                grades.append(0.0)  # one failed grade must not lose the passage
        # Ungraded passages rank below every graded one, in their retrieval order.
        grades += [-1.0 - i / max(len(texts), 1) for i in range(len(texts) - len(grades))]
        return grades


def _grade(text: str) -> float:
    try:
        value = json.loads(text).get("score")
    except (ValueError, AttributeError):
        found = re.search(r"\d+", text)
        value = int(found.group()) if found else 0
    return float(min(max(value if isinstance(value, (int, float)) else 0, 0), 10))


def open_reranker(setting: str | None, hub: ModelHub) -> CrossEncoderReranker | ChatModelReranker | None:
    """The reranker the ``reranker`` setting names, or None when it is unset."""
    if not setting:
        return None
    kind, _, target = setting.partition(":")
    if kind == "cross-encoder" and target:
        return CrossEncoderReranker(target)
    if kind == "model" and target:
        hub.resolve(target)  # an unknown model is an error now, not at the first question
        return ChatModelReranker(hub, target)
    raise ConfigError(f"reranker {setting!r} must be 'cross-encoder:/path/to/folder' or 'model:NAME'; "
                      "see docs/settings.md")
