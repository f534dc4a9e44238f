"""Request body of /v1/completions (the OpenAI legacy completion shape)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genfoundry.gateway.chat.protocol import StreamOptions

__all__ = ["CompletionRequest"]


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=1, description="Only one choice per prompt is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None)
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
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return self

    def prompt_text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)
