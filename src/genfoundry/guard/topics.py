"""Topic deny-lists: flag text close in meaning to topics you describe.

Each topic is a description or a few example phrasings; they are embedded once
(with the built-in MiniLM in the gateway). A text is split into sentences, at
most ``max_sentences`` of them are embedded (the first ones, plus the whole
text), and a topic is found when a sentence's cosine similarity to any of its
phrasings reaches ``threshold``.

Example::

    rail = TopicDenyList(topics={"legal_advice": "asking for legal advice about a lawsuit"}, embed=embed)
    rail.check("Can I sue my landlord for the broken heater?")
    # [Finding(rail='topics', kind='legal_advice', score=0.61, ...)]
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

import numpy as np

from genfoundry.core.errors import ConfigError
from genfoundry.guard.types import Embed, Finding

__all__ = ["DEFAULT_TOPIC_THRESHOLD", "TopicDenyList"]

DEFAULT_TOPIC_THRESHOLD = 0.55
MAX_SENTENCES = 16
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


class TopicDenyList:
    name = "topics"

    def __init__(self, *, topics: Mapping[str, str | list[str]], embed: Embed,
                 threshold: float = DEFAULT_TOPIC_THRESHOLD, max_sentences: int = MAX_SENTENCES):
        if not topics:
            raise ConfigError("a topic deny-list needs at least one topic")
        self.phrases: list[tuple[str, str]] = []
        for name, text in topics.items():
            items = [text] if isinstance(text, str) else list(text)
            if not items or not all(isinstance(t, str) and t.strip() for t in items):
                raise ConfigError(f"topic '{name}' needs a description or example phrasings")
            self.phrases += [(name, t.strip()) for t in items]
        self.embed = embed
        self.threshold = threshold
        self.max_sentences = max_sentences
        self._vectors: np.ndarray | None = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        if self._vectors is None:
            with self._lock:
                if self._vectors is None:
                    self._vectors = np.asarray(self.embed([t for _, t in self.phrases]), dtype=np.float32)

    def check(self, text: str) -> list[Finding]:
        if not text or not text.strip():
            return []
        self.warm_up()
        sentences = [s.strip() for s in _SPLIT.split(text) if len(s.strip()) > 3][: self.max_sentences]
        units = sentences + ([text] if len(sentences) > 1 else [])
        similarity = np.asarray(self.embed(units), dtype=np.float32) @ self._vectors.T
        best: dict[str, tuple[float, int]] = {}
        for (name, _), column in zip(self.phrases, similarity.T):
            i = int(column.argmax())
            if column[i] >= self.threshold and column[i] > best.get(name, (-1.0, 0))[0]:
                best[name] = (float(column[i]), i)
        return [Finding("topics", name, score, detail={"sentence": i if i < len(sentences) else "whole text",
                                                       "similarity": round(score, 3)})
                for name, (score, i) in best.items()]
