"""Summarise a document or a whole collection, map-reduce style for long input.

The text is cut into windows that fit the model's context (map: one summary per
window), and the summaries are summarised again until one is left (reduce).
Base models get a completion prompt that ends at "Summary:"; chat models a
plain instruction.

Example::

    summary = await Summariser(kb=kb, hub=hub).summarise_document(doc_id)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.types import GenerationRequest, Message, Usage
from genfoundry.apps.answer import Generate, direct_generate
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.models.hub import DEFAULT_ALIAS, ModelHub
from genfoundry.models.protocols import ChatModel

__all__ = ["Summariser", "Summary"]

DEFAULT_WINDOW_TOKENS = 1500
SUMMARY_TOKENS = 120
_MAX_ROUNDS = 6
DEFAULT_MAX_CALLS = 200  # a summary's model calls at most (each one also reserved from the key's budget)


@dataclass
class Summary:
    text: str
    model: str
    documents: list[str]
    windows: int = 0  # model calls in the map step
    rounds: int = 0  # reduce rounds after it
    usage: Usage = field(default_factory=Usage)

    def to_dict(self) -> dict:
        return {"text": self.text, "model": self.model, "documents": self.documents, "windows": self.windows,
                "rounds": self.rounds, "usage": {"prompt_tokens": self.usage.prompt_tokens,
                                                 "completion_tokens": self.usage.completion_tokens}}


class Summariser:
    """See the module docstring."""

    def __init__(self, *, kb: KnowledgeBase, hub: ModelHub, model: str = DEFAULT_ALIAS,
                 window_tokens: int = DEFAULT_WINDOW_TOKENS, generate: Generate | None = None,
                 max_calls: int | None = DEFAULT_MAX_CALLS):
        self.kb = kb
        self.hub = hub
        self.model = model
        self.window_tokens = window_tokens
        self.generate = generate or direct_generate(hub)
        self.max_calls = max_calls  # model calls one summary may make (None: no limit)
        self.calls = 0

    async def summarise_document(self, document_id: str) -> Summary:
        info = self.kb.document(document_id)
        # Only the current version: a killed ingest may have left another version's chunks behind.
        chunks = self.kb.vectors.get(info.collection, where={"document_id": document_id,
                                                             "version": self._current_version(document_id)})
        texts = _without_overlap([c.text for c in chunks])
        return await self._summarise(texts, documents=[document_id], title=info.title)

    def _current_version(self, document_id: str) -> str:
        table = self.kb.store.tables.documents
        with self.kb.store.begin() as conn:
            return conn.execute(sa.select(table.c.version).where(table.c.id == document_id)).scalar_one()

    async def summarise_collection(self, collection: str) -> Summary:
        documents = self.kb.documents(collection)
        if not documents:
            raise InvalidRequest(f"collection {collection!r} holds no documents yet; ingest some first")
        summaries = []
        total = Summary(text="", model="", documents=[d.id for d in documents])
        for doc in documents:
            part = await self.summarise_document(doc.id)
            summaries.append(f"{doc.title}: {part.text}")
            total.windows += part.windows
            _add_usage(total.usage, part.usage)
        final = await self._summarise(summaries, documents=total.documents, title=collection)
        final.windows += total.windows
        _add_usage(final.usage, total.usage)
        return final

    async def _summarise(self, texts: list[str], *, documents: list[str], title: str) -> Summary:
        chat = await self.hub.load_chat(self.model)
        summary = Summary(text="", model=chat.spec.name, documents=documents)
        windows = self._windows(chat, texts)
        parts = [await self._one(chat, window, title, summary) for window in windows]
        summary.windows = len(windows)
        while len(parts) > 1 and summary.rounds < _MAX_ROUNDS:
            summary.rounds += 1
            parts = [await self._one(chat, window, title, summary) for window in self._windows(chat, parts)]
        summary.text = parts[0] if parts else ""
        return summary

    def _windows(self, chat: ChatModel, texts: list[str]) -> list[str]:
        windows, current, size = [], [], 0
        for text in texts:
            tokens = chat.count_tokens(text)
            if current and size + tokens > self.window_tokens:
                windows.append("\n\n".join(current))
                current, size = [], 0
            current.append(text[: self.window_tokens * 4])  # one oversized piece is cut, not skipped
            size += min(tokens, self.window_tokens)
        if current:
            windows.append("\n\n".join(current))
        return windows

    async def _one(self, chat: ChatModel, text: str, title: str, summary: Summary) -> str:
        self.calls += 1
        if self.max_calls is not None and self.calls > self.max_calls:
            raise InvalidRequest(f"this summary would take more than {self.max_calls} model calls; summarise "
                                 "documents one at a time (document_id) instead", param="document_id")
        if chat.spec.options.get("base_model"):
            request = GenerationRequest(prompt=f"Document: {title}\n\n{text}\n\nA short summary of the document "
                                        f"above in two sentences:\n", max_tokens=SUMMARY_TOKENS, temperature=0,
                                        stop=["\n\n"])
        else:
            request = GenerationRequest(messages=[Message(role="user", content=(
                f"Summarise this text from '{title}' in at most three sentences.\n\n{text}"))],
                max_tokens=SUMMARY_TOKENS * 2, temperature=0)
        generation = await self.generate(chat.spec.name, request)
        _add_usage(summary.usage, generation.usage)
        return generation.text.strip() or text[:300]


def _without_overlap(texts: list[str]) -> list[str]:
    """Consecutive chunks share an overlap; drop the repeated start of each chunk."""
    out: list[str] = []
    for text in texts:
        if out and len(text) > 30:
            previous = out[-1]
            start = previous.find(text[:30])
            if start >= 0 and text.startswith(previous[start:]):
                text = text[len(previous) - start:].lstrip()
        if text:
            out.append(text)
    return out


def _add_usage(into: Usage, more: Usage) -> None:
    into.prompt_tokens += more.prompt_tokens
    into.completion_tokens += more.completion_tokens
