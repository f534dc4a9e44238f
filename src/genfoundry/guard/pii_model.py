"""A learned PII recognizer: a linear-chain CRF over word tokens and their shapes.

Presidio's recognizers find what has a pattern (cards, e-mails, numbers) and
spaCy's small model finds names; neither finds street addresses well (one
hand-written pattern per address shape). This model learns them, with places
and dates, from template sentences filled with Faker values in many locales
(``tools/train_pii.py``; data card ``artifacts/pii-crf-v1.json``). It tags every
token with BIO labels for ``LOCATION`` (streets, cities, states, countries,
postal codes), ``DATE_TIME`` and ``PERSON``; runs of one label become findings
with the model's marginal probability as their score.

Example::

    tagger = PiiTagger.load()
    tagger.spans("Ship it to 12 Oak Lane, Leeds LS1 4AP")   # [("LOCATION", 11, 37, 0.97)]
"""

from __future__ import annotations

import functools
import json
import re
import threading
from pathlib import Path

from genfoundry.core.errors import ConfigError

__all__ = ["ARTIFACT", "LABELS", "PiiTagger", "features", "tokens"]

ARTIFACT = Path(__file__).parent / "artifacts" / "pii-crf-v1"
LABELS = ("LOCATION", "DATE_TIME", "PERSON")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_MONTHS = {m.lower() for m in (
    "January February March April May June July August September October November December "
    "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec Monday Tuesday Wednesday Thursday Friday Saturday Sunday "
    "Mon Tue Wed Thu Fri Sat Sun").split()}
_STREET_WORDS = {w.lower() for w in (
    "Street St Avenue Ave Road Rd Boulevard Blvd Lane Ln Drive Dr Court Ct Way Place Pl Terrace Parkway Pkwy "
    "Square Sq Highway Hwy Circle Cir Crescent Close Alley Row Trail Plaza Gardens Apt Apartment Suite Ste Unit "
    "Floor Box Strasse Straße Str Rue Via Calle Avenida Katu gatan vej weg laan straat allee gasse platz piazza "
    "viale corso plaza rua travessa").split()}
_ADDRESS_CUES = {"address", "ship", "deliver", "delivered", "lives", "live", "located", "at", "to", "from", "in",
                 "near", "on", "street", "moved", "visit", "office", "store", "born"}


def tokens(text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation with their character offsets (the evaluation's own tokenization)."""
    return [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _shape(word: str) -> str:
    shape = re.sub(r"[A-Z]", "X", re.sub(r"[a-z]", "x", re.sub(r"\d", "d", word)))
    return re.sub(r"(.)\1{2,}", r"\1\1", shape)  # Xxxxxx -> Xxx: long runs folded


@functools.lru_cache(maxsize=65536)
def _word(word: str) -> tuple[str, ...]:
    """The features a word lends to itself and to its neighbours (cached: words repeat)."""
    lower = word.lower()
    out = [f"w={lower}", f"shape={_shape(word)}"]
    if word[:1].isupper():
        out.append("title")
    if word.isdigit():
        out.append("digit")
    if lower in _STREET_WORDS:
        out.append("street")
    if lower in _MONTHS:
        out.append("month")
    return tuple(out)


@functools.lru_cache(maxsize=65536)
def _own(word: str) -> tuple[str, ...]:
    """Features of a word about itself only."""
    lower = word.lower()
    out = [f"suf3={lower[-3:]}", f"pre3={lower[:3]}", f"len={min(len(word), 12)}",
           f"ndigits={min(sum(c.isdigit() for c in word), 6)}"]
    if word.isalpha():
        out.append("alpha")
    if word.isupper() and len(word) > 1:
        out.append("upper")
    if lower in _ADDRESS_CUES:
        out.append("cue")
    return tuple(out)


def features(toks: list[tuple[str, int, int]], text: str) -> list[list[str]]:
    """One list of feature names per token: the word, its shape, affixes, word lists, its neighbours' (2
    each side), and whether a line break comes before it (addresses are often written one part a line)."""
    words = [_word(w) for w, _, _ in toks]
    last = len(toks) - 1
    out = []
    for i, (word, start, _end) in enumerate(toks):
        f = ["bias", *words[i], *_own(word)]
        if i == 0 or "\n" in text[toks[i - 1][2]:start]:
            f.append("newline_before")
        if i == 0:
            f.append("first")
        if i == last:
            f.append("last")
        for offset in (-2, -1, 1, 2):
            j = i + offset
            if 0 <= j <= last:
                f.extend(f"{offset}:{name}" for name in words[j])
            else:
                f.append(f"{offset}:edge")
        out.append(f)
    return out


def _crf_items(feature_lists: list[list[str]]) -> list[list[str]]:
    """pycrfsuite items: lists of feature names (each with weight 1)."""
    return feature_lists


class PiiTagger:
    """The trained CRF (see the module docstring). Safe to share between threads: each thread tags with
    its own handle on the model file."""

    def __init__(self, model: Path, card: dict):
        self.model = model
        self.card = card
        self._local = threading.local()

    @classmethod
    def load(cls, path: Path = ARTIFACT) -> PiiTagger:
        return _load(str(path))

    def _tagger(self):
        tagger = getattr(self._local, "tagger", None)
        if tagger is None:
            import pycrfsuite

            tagger = self._local.tagger = pycrfsuite.Tagger()
            tagger.open(str(self.model))
        return tagger

    def spans(self, text: str, *, min_score: float = 0.0) -> list[tuple[str, int, int, float]]:
        """Entities found: (type, start, end, score), score the mean marginal of the run's labels."""
        toks = tokens(text)
        if not toks:
            return []
        tagger = self._tagger()
        tagger.set(_crf_items(features(toks, text)))
        labels = tagger.tag()
        found, current = [], None
        for i, label in enumerate(labels):
            kind = label[2:] if label != "O" else None
            begins = label.startswith("B-") or (kind and (current is None or current[0] != kind))
            if current is not None and (kind is None or begins):
                found.append(current)
                current = None
            if kind is not None:
                score = tagger.marginal(label, i)
                if current is None:
                    current = [kind, toks[i][1], toks[i][2], [score]]
                else:
                    current[2] = toks[i][2]
                    current[3].append(score)
        if current is not None:
            found.append(current)
        spans = [(kind, start, end, sum(scores) / len(scores)) for kind, start, end, scores in found]
        return [s for s in spans if s[3] >= min_score]


@functools.cache
def _load(path: str) -> PiiTagger:
    model, card = Path(path + ".crfsuite"), Path(path + ".json")
    if not model.is_file() or not card.is_file():
        raise ConfigError(f"the PII model {model} is missing; reinstall genfoundry or run tools/train_pii.py")
    return PiiTagger(model, json.loads(card.read_text()))
