"""What the hub knows about a model: where it lives, what it can do, who may
send it what, and what it costs."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["CAPABILITIES", "CLEARANCES", "Capability", "Clearance", "Measured", "ModelSpec", "Pool", "Price"]

Capability = Literal["chat", "completion", "embedding", "tools", "json"]
Clearance = Literal["public", "internal", "confidential", "restricted"]
CAPABILITIES: tuple[str, ...] = ("chat", "completion", "embedding", "tools", "json")
# Ordered from least to most sensitive: a model cleared for a level may see every level below it.
CLEARANCES: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$"


class Price(BaseModel):
    """Prices in US dollars. APIs bill per token; self-hosted hardware per hour."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float | None = Field(None, ge=0, description="Dollars per million prompt tokens (API models).")
    output_per_million: float | None = Field(None, ge=0, description="Dollars per million generated tokens (API models).")
    per_hour: float | None = Field(None, ge=0, description="Dollars per hour of the hardware that serves the model (self-hosted); cost per token follows from measured throughput.")


class Pool(BaseModel):
    """Several servers of the same model behind one name: the model's ``location`` and ``backends``.

    Each request goes to the healthy backend with the fewest requests in flight; a backend that fails
    ``eject_after`` requests in a row, or its health check, is left out for ``eject_seconds``; a request
    whose backend fails before the first token is sent to another one.
    """

    model_config = ConfigDict(extra="forbid")

    backends: list[str] = Field(min_length=1, description="Base URLs of the other servers of this model (the model's location is the first).")
    health_path: str = Field("models", description="Path under each base URL that a healthy server answers with 200 (GET).")
    health_interval_s: float = Field(10.0, gt=0, description="Seconds between health checks of each backend.")
    eject_after: int = Field(3, ge=1, description="Failed requests in a row after which a backend is left out.")
    eject_seconds: float = Field(30.0, gt=0, description="How long a failing backend is left out before it is tried again.")

    @field_validator("backends")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"backend '{url}' is not an http(s) base URL")
        return urls


class Measured(BaseModel):
    """Throughput the gateway or `genfoundry bench` measured on this machine."""

    model_config = ConfigDict(extra="forbid")

    prefill_tokens_per_second: float | None = Field(None, gt=0, description="Prompt tokens processed per second.")
    decode_tokens_per_second: float | None = Field(None, gt=0, description="Tokens generated per busy second, all concurrent requests together.")
    measured_at: dt.datetime | None = Field(None, description="When these figures were last updated.")


class ModelSpec(BaseModel):
    """A model entry in the hub.

    Example::

        ModelSpec(name="gpt-4o-mini", provider="openai_compat",
                  location="https://api.openai.com/v1",
                  options={"api_key": "env:OPENAI_API_KEY"},
                  capabilities=["chat", "tools", "json"], clearance="internal",
                  price=Price(input_per_million=0.15, output_per_million=0.6))
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Name clients send as `model`.")
    provider: str = Field(description="Provider plugin that runs it: llamacpp, transformers, openai_compat, anthropic, sentence_transformers, ...")
    location: str = Field(description="File, folder or base URL of the model.")
    aliases: list[str] = Field(default_factory=list, description="Other names that resolve to this model.")
    license: str | None = Field(None, description="Licence of the weights or terms of the API.")
    parameters: int | None = Field(None, ge=0, description="Parameter count.")
    context_length: int | None = Field(None, gt=0, description="Longest prompt plus completion, in tokens.")
    capabilities: list[Capability] = Field(default_factory=lambda: ["chat", "completion"], description="What the model can do.")
    clearance: Clearance = Field("public", description="Most sensitive data the model may see.")
    price: Price = Field(default_factory=Price, description="What a call costs.")
    fallbacks: list[str] = Field(default_factory=list, description="Models to try, in order, when this one's provider fails.")
    options: dict[str, Any] = Field(default_factory=dict, description="Provider options (remote model id, api_key reference, adapter path, chat template...).")
    description: str | None = Field(None, description="One line for humans.")
    pool: Pool | None = Field(None, description="Other servers of the same model to spread requests over, with health checks and failover (remote providers).")
    measured: Measured = Field(default_factory=Measured, description="Throughput measured here.")

    @field_validator("aliases", "fallbacks")
    @classmethod
    def _valid_names(cls, names: list[str]) -> list[str]:
        import re
        for name in names:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"'{name}' is not a valid model name")
        return names

    @field_validator("capabilities")
    @classmethod
    def _dedupe(cls, caps: list[str]) -> list[str]:
        return [c for c in CAPABILITIES if c in caps]

    @model_validator(mode="after")
    def _pool_of_servers(self) -> "ModelSpec":
        if self.pool is not None and not self.location.startswith(("http://", "https://")):
            raise ValueError(f"a pool spreads requests over servers: location '{self.location}' must be the "
                             "http(s) base URL of the first one")
        return self

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def names(self) -> list[str]:
        return [self.name, *self.aliases]
