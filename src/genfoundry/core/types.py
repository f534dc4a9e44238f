"""Types shared by every layer. Dataclasses inside; pydantic stays at the edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Chunk",
    "Embeddings",
    "Generation",
    "GenerationChunk",
    "GenerationRequest",
    "Hit",
    "Message",
    "ToolCall",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool", "developer"]


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the OpenAI API carries it


@dataclass
class Message:
    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class GenerationRequest:
    """One generation: chat when ``messages`` is set, plain completion when ``prompt`` is."""

    messages: list[Message] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    tools: list[dict[str, Any]] | None = None  # OpenAI "function" tool definitions
    tool_choice: str | dict[str, Any] | None = None
    json_schema: dict[str, Any] | None = None  # constrain output to this schema
    json_object: bool = False  # any JSON object
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@dataclass
class Generation:
    text: str
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    tool_calls: list[ToolCall] | None = None


@dataclass
class GenerationChunk:
    """A piece of a streamed generation. The last one carries finish_reason and usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCall] | None = None


@dataclass
class Embeddings:
    vectors: list[list[float]]
    usage: Usage = field(default_factory=Usage)


@dataclass
class Chunk:
    """A piece of a document as the vector store holds it.

    ``version`` is the ingest that wrote it: a document's chunks are only visible
    while their version is the one the document registry says is current, so an
    ingest killed halfway never shows half a document.
    """

    id: str
    document_id: str
    version: str
    text: str
    position: int = 0  # order of the chunk in its document
    source: str = ""  # path or URL the document came from
    title: str = ""
    heading: str = ""  # heading path, "Returns > Refunds"
    page: int | None = None  # 1-based page for paged formats (PDF)
    tags: list[str] = field(default_factory=list)
    modified: str = ""  # ISO time the source was last modified
    terms: list[str] = field(default_factory=list)  # analysed tokens for full-text search
    vector: list[float] | None = None


@dataclass
class Hit:
    """A chunk found by a search, with its score (higher is better)."""

    chunk: Chunk
    score: float
