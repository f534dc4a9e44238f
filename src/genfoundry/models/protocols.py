"""The protocols every provider implements.

Constructors are cheap and take a :class:`ModelSpec`; heavy loading happens in
``warm_up()``. Everything is async so the gateway never blocks its event loop;
scripts call ``asyncio.run``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from genfoundry.core.types import Embeddings, Generation, GenerationChunk, GenerationRequest, Usage
from genfoundry.models.spec import ModelSpec

__all__ = ["ChatModel", "EmbeddingModel", "collect_generation"]


async def collect_generation(chunks: AsyncIterator[GenerationChunk]) -> Generation:
    """A whole generation from a stream of chunks: the text joined, the last chunk's ending."""
    text: list[str] = []
    final = GenerationChunk(finish_reason="stop", usage=Usage())
    async for chunk in chunks:
        text.append(chunk.text)
        if chunk.finish_reason is not None:
            final = chunk
    return Generation(text="".join(text), finish_reason=final.finish_reason or "stop",
                      usage=final.usage or Usage(), tool_calls=final.tool_calls)


@runtime_checkable
class ChatModel(Protocol):
    """Chat and text completion, streamed or not."""

    spec: ModelSpec
    #: How many requests the model serves at once; more wait in the gateway's queue.
    concurrency: int
    #: True for models that run on this machine (they get a bounded local queue).
    local: bool

    async def warm_up(self) -> None: ...

    async def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]: ...

    def count_tokens(self, text: str) -> int: ...

    async def close(self) -> None: ...


@runtime_checkable
class EmbeddingModel(Protocol):
    """Text to vectors."""

    spec: ModelSpec
    concurrency: int
    local: bool

    async def warm_up(self) -> None: ...

    async def embed(self, texts: list[str]) -> Embeddings: ...

    def count_tokens(self, text: str) -> int: ...

    async def close(self) -> None: ...
