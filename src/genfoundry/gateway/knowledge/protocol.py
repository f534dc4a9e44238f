"""Request bodies of the knowledge routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from genfoundry.knowledge.retrieval import MAX_QUERY_CHARS

__all__ = ["AccessBody", "AskBody", "CollectionCreate", "ForgetBody", "SearchBody", "SummaryBody"]

Role = Literal["admin", "developer", "app"]
Clearance = Literal["public", "internal", "confidential", "restricted"]
FilterValue = str | int | list[str] | list[int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccessBody(_Strict):
    read: list[Role] = Field(default_factory=lambda: ["admin", "developer", "app"])
    write: list[Role] = Field(default_factory=lambda: ["admin", "developer"])
    keys: list[str] = Field(default_factory=list, description="Only these key ids (and admins); empty: any key.")


class CollectionCreate(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    clearance: Clearance = "internal"
    description: str = Field("", max_length=2000)
    embedding_model: str = "default-embedding"
    access: AccessBody = Field(default_factory=AccessBody)
    chunk_tokens: int | None = Field(None, ge=16, le=8192)
    chunk_overlap: int | None = Field(None, ge=0, le=4096)
    pii: Literal["off", "label", "redact", "tokenize"] = Field(
        "off", description="PII in its documents: label (tag chunks), redact, or tokenize into the vault.")


class _Retrieval(_Strict):
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    limit: int = Field(5, ge=1, le=100)
    filter: dict[str, FilterValue] | None = None
    rerank: bool = Field(False, description="Re-rank candidates with the configured reranker.")


class SearchBody(_Retrieval):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    mmr: float | None = Field(None, gt=0, le=1)


class AskBody(_Retrieval):
    question: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    model: str = "default"
    limit: int = Field(5, ge=1, le=20)
    cache: bool = True


class SummaryBody(_Strict):
    document_id: str | None = Field(None, description="Summarise this document; none: the whole collection.")
    model: str = "default"


class ForgetBody(_Strict):
    match: str = Field(min_length=3, max_length=1000, description="Forget every document holding this text.")
    collections: list[str] | None = None
    erase_call_logs: bool = True
