"""Grounded answers: retrieve passages, prompt the model with them, cite the sources.

Two prompt styles: base models (such as the built-in Gemma 3 270M, hub option
``base_model``) get a completion prompt that ends where the answer starts, with
stop sequences; chat models get the sources in a system message. Either way the
passages are numbered [1], [2], ... and citations in the answer are mapped back
to document, page and chunk. When the model cites nothing, each answer sentence
is attributed to the passage it overlaps most (marked ``inferred``).

When the best passage is less similar to the question than ``min_relevance``,
no model is called: the answer says the documents do not hold it.

Example::

    answerer = GroundedAnswerer(kb=kb, hub=hub, settings=settings)
    answer = await answerer.answer("handbook", "How long do refunds take?")
    print(answer.text, [c.source for c in answer.citations])
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

from genfoundry.core.settings import Settings
from genfoundry.core.store import utcnow
from genfoundry.core.tracing import span
from genfoundry.core.types import Generation, GenerationChunk, GenerationRequest, Message, Usage
from genfoundry.knowledge.analysis import analyze
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.retrieval import Passage, RetrievalOptions
from genfoundry.models.hub import DEFAULT_ALIAS, ModelHub
from genfoundry.models.spec import ModelSpec

__all__ = [
    "Answer", "Citation", "Generate", "GroundedAnswerer", "NOT_FOUND", "build_prompt", "cite", "direct_generate",
    "prompt_passages",
]

NOT_FOUND = "I could not find this in the documents."
DEFAULT_MAX_TOKENS = 160
_PASSAGE_CHARS = 1200  # per passage in the prompt; chunks are shorter than this by default
_CITE = re.compile(r"\[(\d{1,2})\]")
_CITE_SPACED = re.compile(r"\s*\[(\d{1,2})\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

INSTRUCTIONS = ("Answer the question using only the sources. Cite the source of each fact with its number in "
                "brackets, like [1]. If the sources do not contain the answer, say you could not find it.")


@dataclass
class Citation:
    index: int  # the [n] in the answer
    document_id: str
    chunk_id: str
    source: str
    title: str
    heading: str
    page: int | None
    position: int
    text: str
    similarity: float
    inferred: bool = False  # attributed by word overlap, the model cited nothing for it


@dataclass
class Answer:
    question: str
    text: str
    citations: list[Citation] = field(default_factory=list)
    found: bool = True
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    cached: bool = False
    latency_ms: float = 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["usage"] = {"prompt_tokens": self.usage.prompt_tokens,
                         "completion_tokens": self.usage.completion_tokens,
                         "total_tokens": self.usage.total_tokens}
        return data


def _context(passages: list[Passage]) -> str:
    blocks = []
    for n, p in enumerate(passages, start=1):
        heading = p.chunk.heading or p.chunk.title
        blocks.append(f"[{n}] {heading}\n{p.chunk.text[:_PASSAGE_CHARS].strip()}")
    return "\n".join(blocks)


# One worked example shows a small base model the shape of a grounded, cited answer. On the sample
# knowledge base the built-in Gemma 3 270M answers 18 of its 25 answerable questions right with it
# (`genfoundry bench answers`); a side test with an instruction alone, in Gemma's turns, got 4 of 25.
_EXAMPLE = ("Sources:\n[1] Opening hours\nThe shop is open from 9:00 to 18:00, Monday to Friday.\n"
            "[2] Parking\nCustomers park free for two hours in the yard.\n\n"
            "Question: How long can customers park for free?\nAnswer: Customers park free for two hours [2].\n\n")
BASE_MODEL_PASSAGES = 3  # more passages distract a 270M model more than they help it


def prompt_passages(passages: list[Passage], spec: ModelSpec) -> list[Passage]:
    """The passages the prompt shows (and citations can point at)."""
    return passages[:BASE_MODEL_PASSAGES] if spec.options.get("base_model") else passages


def build_prompt(question: str, passages: list[Passage], *, spec: ModelSpec,
                 history: list[Message] | None = None) -> GenerationRequest:
    """The generation request for a grounded answer, in the style the model needs."""
    if spec.options.get("base_model"):
        prompt = f"{_EXAMPLE}Sources:\n{_context(passages)}\n\nQuestion: {' '.join(question.split())}\nAnswer:"
        return GenerationRequest(prompt=prompt, max_tokens=DEFAULT_MAX_TOKENS, temperature=0, stop=["\n"])
    system = f"{INSTRUCTIONS}\n\nSources:\n\n{_context(passages)}"
    messages = [Message(role="system", content=system), *(history or []), Message(role="user", content=question)]
    return GenerationRequest(messages=messages, max_tokens=DEFAULT_MAX_TOKENS * 2, temperature=0)


def cite(text: str, passages: list[Passage]) -> tuple[str, list[Citation]]:
    """Map [n] markers to passages; without any, attribute sentences by word overlap."""
    text = text.strip()
    cited = [int(n) for n in _CITE.findall(text) if 1 <= int(n) <= len(passages)]
    inferred = False
    if not cited and text and passages:
        cited = _attribute(text, passages)
        inferred = True
    # A marker that points at no passage goes, with the space before it ("30 days [9]." -> "30 days.").
    text = _CITE_SPACED.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= len(passages) else "",
                            text).strip()
    citations = []
    for n in dict.fromkeys(cited):  # first-seen order, no repeats
        c = passages[n - 1].chunk
        citations.append(Citation(index=n, document_id=c.document_id, chunk_id=c.id, source=c.source, title=c.title,
                                  heading=c.heading, page=c.page, position=c.position, text=c.text,
                                  similarity=round(passages[n - 1].similarity, 4), inferred=inferred))
    return text, citations


def _attribute(text: str, passages: list[Passage]) -> list[int]:
    found = []
    terms_of = [set(p.chunk.terms or analyze(p.chunk.text)) for p in passages]
    for sentence in _SENTENCE.split(text):
        words = set(analyze(sentence))
        if not words:
            continue
        overlap = [len(words & terms) / len(words) for terms in terms_of]
        best = max(range(len(passages)), key=lambda i: overlap[i])
        if overlap[best] >= 0.5:
            found.append(best + 1)
    return found


Generate = Callable[[str, GenerationRequest], Awaitable[Generation]]
ScreenPassages = Callable[[list[str]], Awaitable[list[int]]]


def direct_generate(hub: ModelHub) -> Generate:
    """Generate with a hub model directly (the command line's way)."""

    async def generate(model: str, request: GenerationRequest) -> Generation:
        return await (await hub.load_chat(model)).generate(request)
    return generate


class GroundedAnswerer:
    """Answers questions from a collection (see the module docstring)."""

    def __init__(self, *, kb: KnowledgeBase, hub: ModelHub, settings: Settings, generate: Generate | None = None):
        self.kb = kb
        self.hub = hub
        self.settings = settings
        # The gateway passes its own, so answers go through the model queue, quotas and call log.
        self.generate = generate or direct_generate(hub)

    async def prepare(self, collection: str, question: str, *, model: str = DEFAULT_ALIAS,
                      options: RetrievalOptions | None = None,
                      history: list[Message] | None = None,
                      screen: ScreenPassages | None = None) -> tuple[list[Passage], GenerationRequest | None]:
        """Retrieve passages and build the request; no request when nothing relevant was found.

        ``screen`` (the guard's context rail) returns the indexes of the passages the model may see.
        """
        passages = await self.kb.retrieve(collection, question, options or RetrievalOptions())
        if passages and screen is not None:
            keep = await screen([p.chunk.text for p in passages])
            passages = [passages[i] for i in keep]
        if not passages or max(p.similarity for p in passages) < self.settings.min_relevance:
            return passages, None
        spec = self.hub.resolve(model)
        passages = prompt_passages(passages, spec)
        with span("prompt", {"genfoundry.prompt.passages": len(passages)}):
            return passages, build_prompt(question, passages, spec=spec, history=history)

    async def answer(self, collection: str, question: str, *, model: str = DEFAULT_ALIAS,
                     options: RetrievalOptions | None = None, history: list[Message] | None = None,
                     use_cache: bool = True, screen: ScreenPassages | None = None, cache_scope: str = "") -> Answer:
        """``cache_scope`` separates cached answers built under different rules (the guard's policy and the
        caller's role): an answer made under one is never served under another."""
        started = time.perf_counter()
        options = options or RetrievalOptions()
        key = _cache_key(collection, question, model, options, cache_scope) if not history else None
        if use_cache and key and (cached := self._cached(key)):
            cached.latency_ms = (time.perf_counter() - started) * 1000
            return cached
        passages, request = await self.prepare(collection, question, model=model, options=options, history=history,
                                               screen=screen)
        spec = self.hub.resolve(model)
        if request is None:
            answer = Answer(question=question, text=NOT_FOUND, found=False, model=spec.name)
        else:
            generation = await self.generate(spec.name, request)
            text, citations = cite(generation.text, passages)
            answer = Answer(question=question, text=text or NOT_FOUND, citations=citations, found=bool(text),
                            model=spec.name, usage=generation.usage)
        answer.latency_ms = (time.perf_counter() - started) * 1000
        if key and self.settings.answer_cache:
            self._store(key, collection, answer, documents={p.chunk.document_id for p in passages})
        return answer

    async def stream(self, collection: str, question: str, *, model: str = DEFAULT_ALIAS,
                     options: RetrievalOptions | None = None,
                     history: list[Message] | None = None) -> AsyncIterator[GenerationChunk | Answer]:
        """Yield the answer's text as it is generated, then the finished :class:`Answer`."""
        passages, request = await self.prepare(collection, question, model=model, options=options, history=history)
        spec = self.hub.resolve(model)
        if request is None:
            yield GenerationChunk(text=NOT_FOUND)
            yield Answer(question=question, text=NOT_FOUND, found=False, model=spec.name)
            return
        chat = await self.hub.load_chat(spec.name)
        parts, usage = [], Usage()
        async for chunk in chat.stream(request):
            parts.append(chunk.text)
            usage = chunk.usage or usage
            yield chunk
        text, citations = cite("".join(parts), passages)
        yield Answer(question=question, text=text, citations=citations, found=bool(text), model=spec.name,
                     usage=usage)

    def _cached(self, key: str) -> Answer | None:
        cache = self.kb.store.tables.answer_cache
        with self.kb.store.begin() as conn:
            row = conn.execute(sa.select(cache.c.answer).where(cache.c.key == key)).first()
        if row is None:
            return None
        data = dict(row[0])
        usage = data.pop("usage", {})
        data["citations"] = [Citation(**c) for c in data["citations"]]
        answer = Answer(**data, usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)))
        answer.cached = True
        return answer

    def _store(self, key: str, collection: str, answer: Answer, *, documents: set[str]) -> None:
        """Cache the answer with every document it was shown, cited or not, so forgetting any drops it."""
        cache = self.kb.store.tables.answer_cache
        with self.kb.store.begin() as conn:
            conn.execute(cache.delete().where(cache.c.key == key))
            conn.execute(cache.insert().values(key=key, collection=collection, question=answer.question,
                                               answer=answer.to_dict(), created_at=utcnow(),
                                               documents=sorted(documents)))


def _cache_key(collection: str, question: str, model: str, options: RetrievalOptions, scope: str = "") -> str:
    raw = json.dumps([collection, " ".join(question.lower().split()), model, options.mode, options.limit,
                      options.where, options.mmr, options.rerank, scope], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()
