"""Programmatic labeling: labeling functions (LFs), applying them with a cache, a labeling task, reviews.

An LF looks at a row and votes a label or abstains. Kinds:

- Python functions, with the :func:`labeling_function` decorator (return a label name or None);
- ``keyword`` and ``regex`` rules (declared in YAML), applied to the whole column at once by Arrow's
  compute kernels (RE2 syntax), not a Python loop per row;
- ``embedding`` LFs: the label of the nearest labeled example (reviews, gold rows) when its cosine
  similarity reaches a threshold;
- ``prompt`` LFs: a hub model, a prompt template and a map from answers to labels; the calls go
  through the ``generate`` function they are given (the gateway's path when run by genfoundry: guard,
  trace, cost), and are cached like every vote.

Votes are cached per (LF version, row hash) in the store, written batch by batch, so a killed run
resumes where it stopped and an unchanged LF is never run again on an unchanged row. An LF that raises
on a row records the error for that row (it counts as an abstain) and the run goes on.

Example::

    @labeling_function()
    def short(row):
        return "ham" if len(row["text"]) < 20 else None

    lfs = [short, KeywordLF("subscribe", label="spam", keywords=["subscribe"])]
    votes = asyncio.run(apply_lfs(store, lfs, rows, text_field="text", labels=["ham", "spam"]))
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.store import Store
from genfoundry.core.types import GenerationRequest
from genfoundry.data.label_model import ABSTAIN

__all__ = ["ERROR", "EmbeddingLF", "KeywordLF", "LabelingFunction", "PromptLF", "PythonLF", "RegexLF", "VoteMatrix",
           "VoteWorkers", "apply_lfs", "clipped", "labeling_function", "lf_from_spec", "row_hash"]

ERROR = -2  # the vote cell of a row where the LF raised
BATCH = 256


def clipped(embed: Callable[[list[str]], np.ndarray]) -> Callable[[list[str]], np.ndarray]:
    """``embed`` that reads the first part of texts too long for the model (features, nearest examples)
    instead of failing the run: texts are cut to 1,000, then 500, then 250 characters while it refuses."""
    def run(texts: list[str]) -> np.ndarray:
        for limit in (None, 1000, 500, 250):
            try:
                return embed([t if limit is None else t[:limit] for t in texts])
            except InvalidRequest as exc:
                if "tokens" not in str(exc) or limit == 250:
                    raise
        raise AssertionError("unreachable")
    return run


def row_hash(text: str, row: dict | None = None, fields: Sequence[str] = ()) -> str:
    payload = {"text": text, **{f: (row or {}).get(f) for f in fields}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class LabelingFunction:
    """Base: ``name``, ``version`` (changes when the definition does) and ``vote`` on a batch."""

    name: str
    kind: str = "python"
    fields: Sequence[str] = ()  # other columns it reads besides the text (they enter the row hash)

    @property
    def version(self) -> str:
        raise NotImplementedError

    def vote(self, texts: list[str], rows: list[dict]) -> list[Any]:
        """One vote per row: a label name, or None to abstain. May raise; see :func:`apply_lfs`."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"name": self.name, "type": self.kind}


class PythonLF(LabelingFunction):
    def __init__(self, func: Callable[[dict], Any], name: str | None = None, fields: Sequence[str] = ()):
        self.func = func
        self.name = name or func.__name__
        self.fields = tuple(fields)

    @property
    def version(self) -> str:
        try:
            source = inspect.getsource(self.func)
        except (OSError, TypeError):
            source = f"{self.func.__module__}.{self.func.__qualname__}"
        return _digest("python", self.name, source)

    def vote(self, texts, rows):
        # Per row, so that one bad row is one recorded error, not a lost batch.
        raise NotImplementedError  # apply_lfs calls vote_one for Python LFs

    def vote_one(self, row: dict) -> Any:
        return self.func(row)


def labeling_function(name: str | None = None, *, fields: Sequence[str] = ()):
    """Make a Python function ``f(row) -> label | None`` a labeling function (``row["text"]`` is the text)."""
    def wrap(func):
        return PythonLF(func, name=name, fields=fields)
    return wrap


class RegexLF(LabelingFunction):
    kind = "regex"

    def __init__(self, name: str, *, label: str, pattern: str, case_sensitive: bool = False):
        self.name, self.label, self.pattern, self.case_sensitive = name, label, pattern, case_sensitive
        try:
            pc.match_substring_regex(pa.array(["x"]), pattern=pattern, ignore_case=not case_sensitive)
        except pa.ArrowException as exc:
            raise InvalidRequest(f"labeling function {name!r}: bad pattern {pattern!r} ({exc})", param="pattern") from exc

    @property
    def version(self) -> str:
        return _digest(self.kind, self.name, self.label, self.pattern, self.case_sensitive)

    def vote(self, texts, rows):
        hit = pc.match_substring_regex(pa.array(texts, pa.string()), pattern=self.pattern,
                                       ignore_case=not self.case_sensitive).to_numpy(zero_copy_only=False)
        return [self.label if h else None for h in hit]

    def to_dict(self):
        return {**super().to_dict(), "label": self.label, "pattern": self.pattern}


class KeywordLF(RegexLF):
    kind = "keyword"

    def __init__(self, name: str, *, label: str, keywords: Sequence[str], case_sensitive: bool = False,
                 whole_word: bool = True):
        if not keywords:
            raise InvalidRequest(f"labeling function {name!r} lists no keywords", param="keywords")
        self.keywords = list(keywords)
        alternation = "|".join(re.escape(k) for k in self.keywords)
        pattern = rf"\b(?:{alternation})\b" if whole_word else f"(?:{alternation})"
        super().__init__(name, label=label, pattern=pattern, case_sensitive=case_sensitive)

    def to_dict(self):
        return {"name": self.name, "type": self.kind, "label": self.label, "keywords": self.keywords}


class EmbeddingLF(LabelingFunction):
    """Votes the label of the most similar labeled example when the cosine similarity is at least
    ``threshold``. ``examples`` are (text, label) pairs; ``embed`` gives normalised vectors."""

    kind = "embedding"

    def __init__(self, name: str, *, examples: Sequence[tuple[str, str]], embed: Callable[[list[str]], np.ndarray],
                 threshold: float = 0.8):
        self.name, self.threshold, self.embed = name, threshold, embed
        self.examples = list(examples)
        self._matrix = np.asarray(embed([t for t, _ in self.examples])) if self.examples else None

    @property
    def version(self) -> str:
        return _digest(self.kind, self.name, self.threshold, sorted(self.examples))

    def vote(self, texts, rows):
        if self._matrix is None:
            return [None] * len(texts)
        sims = np.asarray(self.embed(texts)) @ self._matrix.T
        best = sims.argmax(1)
        return [self.examples[b][1] if sims[i, b] >= self.threshold else None for i, b in enumerate(best)]

    def to_dict(self):
        return {**super().to_dict(), "threshold": self.threshold, "examples": len(self.examples)}


class PromptLF(LabelingFunction):
    """Asks a model. ``template`` has ``{text}`` (and any other column by name); ``answers`` maps a word
    the model may answer with (matched case-insensitively at the start of the answer) to a label; any
    other answer abstains. ``generate`` is ``async (model, GenerationRequest) -> Generation``."""

    kind = "prompt"

    def __init__(self, name: str, *, model: str, template: str, answers: dict[str, str], generate=None,
                 max_tokens: int = 6, concurrency: int = 4, fields: Sequence[str] = ()):
        if "{text}" not in template:
            raise InvalidRequest(f"labeling function {name!r}: the template needs {{text}}", param="template")
        if not answers:
            raise InvalidRequest(f"labeling function {name!r}: map at least one answer to a label", param="answers")
        self.name, self.model, self.template, self.max_tokens = name, model, template, max_tokens
        self.answers = {k.strip().lower(): v for k, v in answers.items()}
        self.generate, self.concurrency, self.fields = generate, concurrency, tuple(fields)

    @property
    def version(self) -> str:
        return _digest(self.kind, self.name, self.model, self.template, self.answers, self.max_tokens)

    def parse(self, answer: str) -> str | None:
        words = re.findall(r"[\w-]+", answer.lower())
        head = " ".join(words[:3])
        for said, label in sorted(self.answers.items(), key=lambda kv: -len(kv[0])):
            if head.startswith(said):
                return label
        return None

    def prompt(self, text: str, row: dict) -> str:
        values = {k: v for k, v in row.items() if isinstance(k, str)}
        values["text"] = text
        try:
            return self.template.format_map(_Missing(values))
        except (ValueError, IndexError) as exc:
            raise InvalidRequest(f"labeling function {self.name!r}: bad template ({exc})", param="template") from exc

    async def vote_async(self, texts, rows) -> list[Any]:
        if self.generate is None:
            raise InvalidRequest(f"labeling function {self.name!r} needs a model to call", param="model")
        gate = asyncio.Semaphore(self.concurrency)

        async def one(text, row):
            async with gate:
                out = await self.generate(self.model, GenerationRequest(
                    prompt=self.prompt(text, row), max_tokens=self.max_tokens, temperature=0.0, stop=["\n"]))
            return self.parse(out.text)

        return list(await asyncio.gather(*(one(t, r) for t, r in zip(texts, rows)), return_exceptions=True))

    def to_dict(self):
        return {**super().to_dict(), "model": self.model, "template": self.template, "answers": self.answers}


class _Missing(dict):
    def __missing__(self, key):
        raise InvalidRequest(f"the template names {{{key}}}, which the row does not have", param="template")


def lf_from_spec(spec: dict, *, labels: Sequence[str], generate=None, embed=None,
                 examples: Sequence[tuple[str, str]] = ()) -> LabelingFunction:
    """An LF from its YAML/JSON declaration (``type``: keyword, regex, embedding, prompt, python)."""
    if not isinstance(spec, dict) or not spec.get("name"):
        raise InvalidRequest("each labeling function needs a name", param="lfs")
    kind, name = spec.get("type"), str(spec["name"])
    label = spec.get("label")
    if kind in ("keyword", "regex") and label not in labels:
        raise InvalidRequest(f"labeling function {name!r} votes {label!r}, which is not in the label space "
                             f"({', '.join(labels)})", param="label")
    if kind == "keyword":
        return KeywordLF(name, label=label, keywords=spec.get("keywords") or [],
                         case_sensitive=bool(spec.get("case_sensitive")), whole_word=spec.get("whole_word", True))
    if kind == "regex":
        return RegexLF(name, label=label, pattern=str(spec.get("pattern", "")),
                       case_sensitive=bool(spec.get("case_sensitive")))
    if kind == "embedding":
        if embed is None:
            raise InvalidRequest(f"labeling function {name!r} needs an embedding model", param="lfs")
        return EmbeddingLF(name, examples=examples, embed=embed, threshold=float(spec.get("threshold", 0.8)))
    if kind == "prompt":
        answers = spec.get("answers") or {}
        bad = sorted(set(answers.values()) - set(labels))
        if bad:
            raise InvalidRequest(f"labeling function {name!r} maps answers to {bad}, not in the label space",
                                 param="answers")
        return PromptLF(name, model=str(spec.get("model", "default")), template=str(spec.get("template", "")),
                        answers=answers, generate=generate, max_tokens=int(spec.get("max_tokens", 6)))
    if kind == "python":
        target = str(spec.get("function", ""))
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise InvalidRequest(f"labeling function {name!r}: function is 'module:name'", param="function")
        import importlib

        try:
            func = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise InvalidRequest(f"labeling function {name!r}: cannot import {target} ({exc})", param="function") from exc
        return func if isinstance(func, LabelingFunction) else PythonLF(func, name=name)
    raise InvalidRequest(f"labeling function {name!r}: unknown type {kind!r} (keyword, regex, embedding, prompt, "
                         f"python)", param="type")


@dataclass
class VoteMatrix:
    """Votes of ``names`` (columns) on rows (class indexes, -1 abstain); ``errors`` marks rows where an LF
    raised, ``messages`` keeps one error message per LF."""

    names: list[str]
    L: np.ndarray
    errors: np.ndarray
    messages: dict[str, str] = field(default_factory=dict)
    computed: int = 0  # votes computed in this run (the rest came from the cache)


async def apply_lfs(store: Store, lfs: Sequence[LabelingFunction], rows: Sequence[dict], *, text_field: str,
              labels: Sequence[str], progress: Callable[[int, int], None] | None = None,
              batch: int = BATCH, workers: "VoteWorkers | None" = None) -> VoteMatrix:
    """Apply every LF to every row, from the cache where it can; new votes are stored batch by batch.

    ``workers`` (a Ray cluster, :mod:`genfoundry.data.ray_votes`) run the batches of the LFs they can take,
    several at once; each batch's votes are stored as it comes back, as without them."""
    names = [lf.name for lf in lfs]
    if len(set(names)) != len(names):
        raise InvalidRequest("labeling function names must be unique", param="lfs")
    index = {label: i for i, label in enumerate(labels)}
    texts = [_text(r, text_field) for r in rows]
    n, m = len(rows), len(lfs)
    L = np.full((n, m), ABSTAIN, dtype=np.int64)
    E = np.zeros((n, m), dtype=bool)
    messages: dict[str, str] = {}
    done, total, computed = 0, n * m, 0
    for j, lf in enumerate(lfs):
        key = _digest(lf.version, list(labels))
        hashes = [row_hash(t, r, lf.fields) for t, r in zip(texts, rows)]
        cached = await asyncio.to_thread(_cached, store, key, hashes)
        todo = [i for i, h in enumerate(hashes) if h not in cached]
        for i, h in enumerate(hashes):
            if h in cached:
                vote, error = cached[h]
                L[i, j], E[i, j] = (ABSTAIN, True) if vote == ERROR else (vote, False)
                if error:
                    messages.setdefault(lf.name, error)
        done += n - len(todo)
        if progress:
            progress(done, total)
        parts = [todo[start:start + batch] for start in range(0, len(todo), batch)]
        if workers is not None and workers.takes(lf):
            finished = workers.run(lf, [([texts[i] for i in part], [rows[i] for i in part]) for part in parts])
        else:
            finished = _in_turn(lf, parts, texts, rows)
        async for number, results in finished:
            part = parts[number]
            records = []
            for i, result in zip(part, results):
                vote, error = _to_vote(result, index, lf.name)
                if error:
                    messages.setdefault(lf.name, error)
                    L[i, j], E[i, j] = ABSTAIN, True
                else:
                    L[i, j] = vote
                records.append({"lf_key": key, "row_hash": hashes[i], "vote": ERROR if error else vote,
                                "error": error})
            unique = list({r["row_hash"]: r for r in records}.values())
            await asyncio.to_thread(_store_votes, store, key, unique)  # one commit per batch: a killed run keeps it
            computed += len(part)
            done += len(part)
            if progress:
                progress(done, total)
    return VoteMatrix(names=names, L=L, errors=E, messages=messages, computed=computed)


def _text(row: dict, field_name: str) -> str:
    value = row.get(field_name)
    if value is None:
        raise InvalidRequest(f"a row has no {field_name!r} field (row {row.get('_id', '?')})", param="text_field")
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _cached(store: Store, key: str, hashes: list[str]) -> dict[str, tuple[int, str | None]]:
    table = store.tables.lf_votes
    out: dict[str, tuple[int, str | None]] = {}
    unique = sorted(set(hashes))
    with store.begin() as conn:
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            for row in conn.execute(sa.select(table.c.row_hash, table.c.vote, table.c.error).where(
                    table.c.lf_key == key, table.c.row_hash.in_(chunk))):
                out[row.row_hash] = (row.vote, row.error)
    return out


def _store_votes(store: Store, key: str, records: list[dict]) -> None:
    table = store.tables.lf_votes
    with store.begin() as conn:
        conn.execute(table.delete().where(table.c.lf_key == key, table.c.row_hash.in_([r["row_hash"] for r in records])))
        conn.execute(table.insert(), records)


def _python_votes(lf: "PythonLF", texts: list[str], rows: list[dict]) -> list[Any]:
    out = []
    for text, row in zip(texts, rows):
        try:
            out.append(lf.vote_one({**row, "text": text} if "text" not in row else row))
        except Exception as exc:  # an LF is user code: its failure on one row is that row's record
            out.append(exc)
    return out


def _batch_votes(lf: LabelingFunction, texts: list[str], rows: list[dict]) -> list[Any]:
    try:
        return lf.vote(texts, rows)
    except Exception as exc:  # a rule that fails on a batch: recorded for each row of the batch
        return [exc] * len(texts)


async def _in_turn(lf: LabelingFunction, parts: list[list[int]], texts: list[str], rows: Sequence[dict]):
    """``(index, votes)`` of each batch, one after the other, in this process."""
    for index, part in enumerate(parts):
        yield index, await _run_lf(lf, [texts[i] for i in part], [rows[i] for i in part])


class VoteWorkers(Protocol):
    """Runs LF batches elsewhere (``genfoundry.data.ray_votes``)."""

    def takes(self, lf: LabelingFunction) -> bool: ...

    def run(self, lf: LabelingFunction, batches: list[tuple[list[str], list[dict]]]) -> AsyncIterator[tuple[int, list]]: ...


async def _run_lf(lf: LabelingFunction, texts: list[str], rows: list[dict]) -> list[Any]:
    if isinstance(lf, PromptLF):
        return await lf.vote_async(texts, rows)
    if isinstance(lf, PythonLF):
        return await asyncio.to_thread(_python_votes, lf, texts, rows)
    return await asyncio.to_thread(_batch_votes, lf, texts, rows)


def _to_vote(result: Any, index: dict[str, int], name: str) -> tuple[int, str | None]:
    if isinstance(result, BaseException):
        return ERROR, f"{type(result).__name__}: {result}"[:500]
    if result is None:
        return ABSTAIN, None
    if isinstance(result, (bool, np.bool_)):
        return ERROR, f"labeling function {name!r} returned a bool; return a label name or None"
    if isinstance(result, str) and result in index:
        return index[result], None
    return ERROR, f"labeling function {name!r} voted {result!r}, which is not in the label space ({', '.join(index)})"
