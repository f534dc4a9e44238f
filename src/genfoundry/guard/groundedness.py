"""Groundedness: is each sentence of an answer supported by the passages it was given?

Each sentence is scored against every passage by the share of its content
words (lower-cased, stop words out, stemmed: the knowledge base's analyser)
that the passage holds, times the share of its numbers the passage holds,
so a changed figure loses its support. With an ``embed`` function the score is the mean of that share and the
cosine similarity of sentence and passage. The best passage is the evidence.
Sentences under ``threshold`` are unsupported; short non-claims (fewer than
three content words, "I could not find this in the documents.") are not
judged. Citation markers like ``[2]`` are kept in the text but not scored, and
a cited sentence also says whether the passage it cites supports it.

Example::

    report = check_groundedness("Backpacks have a 10-year warranty [1].", ["Backpacks: 10 year warranty."])
    report.sentences[0].supported, report.supported_share   # True, 1.0
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from genfoundry.guard.types import Embed
from genfoundry.knowledge.analysis import analyze

__all__ = ["DEFAULT_THRESHOLD", "GroundednessRail", "GroundednessReport", "SentenceSupport", "check_groundedness",
           "split_sentences"]

DEFAULT_THRESHOLD = 0.5
MIN_CLAIM_TERMS = 3
_CITE = re.compile(r"\[(\d{1,3})\]")
_SENTENCE = re.compile(r"(?<=[.!?])(?:\s*\[\d{1,3}\])*\s+(?=[A-Z0-9\"'(])|\n+")
_NON_CLAIMS = ("i could not find", "i don't know", "i do not know", "not in the documents")


@dataclass
class SentenceSupport:
    index: int
    text: str
    claim: bool
    supported: bool
    score: float
    passage: int | None  # the best passage (0-based), the evidence
    cited: list[int] = field(default_factory=list)  # 1-based citation numbers in the sentence
    cited_supported: bool | None = None


@dataclass
class GroundednessReport:
    sentences: list[SentenceSupport]
    threshold: float

    @property
    def supported_share(self) -> float:
        claims = [s for s in self.sentences if s.claim]
        return sum(s.supported for s in claims) / len(claims) if claims else 1.0

    @property
    def unsupported(self) -> list[SentenceSupport]:
        return [s for s in self.sentences if s.claim and not s.supported]

    def filtered_answer(self) -> str:
        """The answer without its unsupported sentences."""
        return " ".join(s.text for s in self.sentences if s.supported or not s.claim).strip()

    def to_dict(self) -> dict:
        return {"supported_share": round(self.supported_share, 3), "threshold": self.threshold,
                "sentences": [{**asdict(s), "score": round(s.score, 3)} for s in self.sentences]}


def split_sentences(text: str) -> list[str]:
    parts, start = [], 0
    for m in _SENTENCE.finditer(text):
        end = m.start() + len(m.group(0).rstrip()) if m.group(0).strip() else m.start()
        parts.append(text[start:end].strip())
        start = m.end()
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def check_groundedness(answer: str, passages: list[str], *, embed: Embed | None = None,
                       threshold: float = DEFAULT_THRESHOLD) -> GroundednessReport:
    sentences = split_sentences(answer or "")
    passage_terms = [set(analyze(p)) for p in passages]
    lexical = np.zeros((len(sentences), len(passages)), dtype=np.float32)
    claims = []
    for i, sentence in enumerate(sentences):
        terms = set(analyze(_CITE.sub(" ", sentence)))
        claim = len(terms) >= MIN_CLAIM_TERMS and not sentence.lower().startswith(_NON_CLAIMS)
        claims.append(claim)
        numbers = {t for t in terms if t.isdigit()}
        for j, held in enumerate(passage_terms):
            share = len(terms & held) / len(terms) if terms else 0.0
            # A figure the passage does not hold is the claim most likely invented: it weighs fully.
            lexical[i, j] = share * (len(numbers & held) / len(numbers) if numbers else 1.0)
    scores = lexical
    if embed is not None and sentences and passages:
        vectors = embed([_CITE.sub(" ", s) for s in sentences] + list(passages))
        cosine = vectors[:len(sentences)] @ vectors[len(sentences):].T
        scores = (lexical + np.clip(cosine, 0, 1)) / 2
    report = []
    for i, sentence in enumerate(sentences):
        best = int(scores[i].argmax()) if passages else None
        score = float(scores[i, best]) if best is not None else 0.0
        cited = [int(n) for n in _CITE.findall(sentence)]
        valid = [n for n in cited if 1 <= n <= len(passages)]
        cited_ok = any(scores[i, n - 1] >= threshold for n in valid) if valid else (False if cited else None)
        report.append(SentenceSupport(index=i, text=sentence, claim=claims[i],
                                      supported=not claims[i] or score >= threshold, score=score,
                                      passage=best, cited=cited, cited_supported=cited_ok))
    return GroundednessReport(sentences=report, threshold=threshold)


class GroundednessRail:
    """The groundedness check as a registered answer rail (see ``guard.registry``)."""

    name = "groundedness"

    def __init__(self, *, threshold: float = DEFAULT_THRESHOLD, embed: Embed | None = None):
        self.threshold = threshold
        self.embed = embed

    def warm_up(self) -> None:
        return None

    def check_answer(self, answer: str, passages: list[str]) -> GroundednessReport:
        return check_groundedness(answer, passages, embed=self.embed, threshold=self.threshold)
