"""Request body of /v1/completions (the OpenAI legacy completion shape)."""

from __future__ import annotations

from pydantic import Field, model_validator

from genfoundry.gateway.chat.protocol import GenerationBody

__all__ = ["CompletionRequest"]


class CompletionRequest(GenerationBody):
    model: str = Field(min_length=1, max_length=200)
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=1, description="Only one choice per prompt is supported.")
    seed: int | None = None
    user: str | None = Field(None, max_length=256)
    echo: bool | None = None
    logprobs: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    suffix: str | None = None

    @model_validator(mode="after")
    def _checks(self):
        if self.echo or self.logprobs or self.suffix:
            raise ValueError("echo, logprobs and suffix are not supported")
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("send one prompt per request (a list of exactly one string)")
        return self

    def prompt_text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt
