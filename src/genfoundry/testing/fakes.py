"""Fake providers for fast tests of genfoundry and of users' own code.

Example::

    model = FakeChatModel(replies=["Hello there.", "Second answer."])
    result = asyncio.run(model.generate(GenerationRequest(messages=[Message("user", "hi")])))
    assert result.text == "Hello there."

With no replies queued, the fake echoes the last user message. Registered as the
``fake`` provider, so hub entries with ``provider="fake"`` work through the
gateway (options: ``replies``, ``fail``, ``fail_after`` (pieces streamed before a failure), ``delay``,
``context_length``; embedding models: ``dimensions``, ``fail``).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import deque
from collections.abc import AsyncIterator

from genfoundry.core.errors import ContextLengthExceeded, ProviderError
from genfoundry.core.types import (
    Embeddings, Generation, GenerationChunk, GenerationRequest, Usage,
)
from genfoundry.models.spec import ModelSpec

__all__ = ["FakeChatModel", "FakeEmbeddingModel", "FakeRail", "FakeReranker", "register"]


def _fake_spec(name: str, capabilities: list[str]) -> ModelSpec:
    return ModelSpec(name=name, provider="fake", location="memory", capabilities=capabilities,
                     context_length=2048)


def _words(text: str) -> int:
    return len(text.split())


class FakeChatModel:
    """A chat model that answers from a queue of canned replies (or echoes)."""

    local = False

    def __init__(self, spec: ModelSpec | None = None, settings=None, *,
                 replies: list[str | Generation] | None = None, fail: bool | None = None,
                 delay: float | None = None, concurrency: int = 4):
        self.spec = spec or _fake_spec("fake-chat", ["chat", "completion", "tools", "json"])
        options = self.spec.options
        self.replies: deque[str | Generation] = deque(
            replies if replies is not None else options.get("replies", []))
        self.fail = bool(options.get("fail", False) if fail is None else fail)
        self.delay = float(options.get("delay", 0.0) if delay is None else delay)
        # Fail after this many streamed pieces (a provider that dies mid-answer); None: never.
        self.fail_after = options.get("fail_after")
        self.concurrency = concurrency
        self.requests: list[GenerationRequest] = []
        self.cancelled = 0
        self.closed = False

    async def warm_up(self) -> None:
        if self.spec.options.get("fail_warm_up"):  # an engine that refuses its files (a corrupt adapter)
            raise ProviderError(f"fake provider '{self.spec.name}' failed to start")
        if self.spec.options.get("warm_up_delay"):
            await asyncio.sleep(float(self.spec.options["warm_up_delay"]))

    async def close(self) -> None:
        self.closed = True

    def count_tokens(self, text: str) -> int:
        return _words(text)

    def _prompt_text(self, request: GenerationRequest) -> str:
        if request.messages is not None:
            return "\n".join(m.content or "" for m in request.messages)
        return request.prompt or ""

    def _next_reply(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        if self.fail:
            raise ProviderError(f"fake provider '{self.spec.name}' is set to fail")
        prompt_tokens = self.count_tokens(self._prompt_text(request))
        limit = self.spec.context_length or 2048
        if prompt_tokens + (request.max_tokens or 0) > limit:
            raise ContextLengthExceeded(
                f"prompt of {prompt_tokens} tokens plus max_tokens exceeds the context of {limit}")
        reply = self.replies.popleft() if self.replies else None
        if reply is None:
            last = self._prompt_text(request).splitlines()[-1:] or [""]
            reply = f"echo: {last[0]}"
        if isinstance(reply, str):
            reply = Generation(text=reply)
        words = reply.text.split()
        if request.max_tokens is not None and len(words) > request.max_tokens:
            reply = Generation(text=" ".join(words[: request.max_tokens]), finish_reason="length",
                               tool_calls=reply.tool_calls)
        reply.usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=_words(reply.text))
        if reply.tool_calls:
            reply.finish_reason = "tool_calls"
        return reply

    async def generate(self, request: GenerationRequest) -> Generation:
        reply = self._next_reply(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        return reply

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        reply = self._next_reply(request)
        words = reply.text.split(" ")
        try:
            for i, word in enumerate(words):
                if self.fail_after is not None and i >= int(self.fail_after):
                    raise ProviderError(f"fake provider '{self.spec.name}' failed after {i} pieces")
                if self.delay:
                    await asyncio.sleep(self.delay / max(len(words), 1))
                yield GenerationChunk(text=word if i == 0 else " " + word)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        yield GenerationChunk(finish_reason=reply.finish_reason, usage=reply.usage,
                              tool_calls=reply.tool_calls)


class FakeEmbeddingModel:
    """Deterministic embeddings from hashed words: similar texts share words, so they score close."""

    local = False

    def __init__(self, spec: ModelSpec | None = None, settings=None, *, dimensions: int = 32):
        self.spec = spec or _fake_spec("fake-embed", ["embedding"])
        self.dimensions = int(self.spec.options.get("dimensions", dimensions))
        self.concurrency = 4

    async def warm_up(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return _words(text)

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dimensions
        for word in text.lower().split() or [""]:
            h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
            vec[h % self.dimensions] += 1.0 if (h >> 32) & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    async def embed(self, texts: list[str]) -> Embeddings:
        if self.spec.options.get("fail"):
            raise ProviderError(f"fake provider '{self.spec.name}' is set to fail")
        return Embeddings(vectors=[self._vector(t) for t in texts],
                          usage=Usage(prompt_tokens=sum(_words(t) for t in texts)))


class FakeRail:
    """A guard rail that flags given words (whole words, any case): for tests of policies and plugins."""

    def __init__(self, name: str = "fake", words: tuple[str, ...] = ("forbidden",), kind: str = "word"):
        import re

        self.name = name
        self.kind = kind
        self._pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)

    def warm_up(self) -> None:
        return None

    def check(self, text: str) -> list:
        from genfoundry.guard.types import Finding

        return [Finding(self.name, self.kind, 0.9, m.start(), m.end(), {"length": m.end() - m.start()})
                for m in self._pattern.finditer(text or "")]


class FakeReranker:
    """Scores passages by the share of the query's words they hold: a reranker for tests."""

    async def score(self, query: str, texts) -> list[float]:
        words = {w.strip("?.,!").lower() for w in query.split() if len(w) > 2}
        return [float(len(words & {w.strip("?.,!").lower() for w in t.split()}) / max(len(words), 1))
                for t in texts]


def _create(spec: ModelSpec, settings=None):
    if spec.can("embedding"):
        return FakeEmbeddingModel(spec, settings)
    return FakeChatModel(spec, settings)


def register(register) -> None:
    from genfoundry.models.providers import Provider
    register(Provider(name="fake", create=_create, description="Canned replies for tests (genfoundry.testing)."))


