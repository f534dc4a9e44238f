"""Request bodies of the agent, approval and extraction routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Decision", "ExtractRequest", "RunRequest"]


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | None = Field(None, max_length=20_000, description="The user's message (or send messages).")
    messages: list[dict[str, Any]] | None = Field(None, max_length=50, description="A conversation, OpenAI shape.")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    arguments: dict[str, Any] | None = Field(None, description="Edited arguments (approve only).")
    note: str | None = Field(None, max_length=2000)


class ExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "default"
    text: str = Field(..., max_length=1_000_000)
    schema_: dict[str, Any] = Field(..., alias="schema", description="The JSON schema the result must follow.")
    instructions: str | None = Field(None, max_length=4000)
