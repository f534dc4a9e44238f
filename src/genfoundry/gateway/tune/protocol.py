"""Request bodies of /v1/fine_tuning (OpenAI's shape, plus genfoundry's own training settings) and /admin/tune."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Hyperparameters", "JobCreate", "PromoteBody", "RollbackBody"]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: int | Literal["auto"] = Field("auto", description="Passes over the train split ('auto': 3).")
    batch_size: int | Literal["auto"] = Field("auto", description="Packed blocks per step ('auto': 4).")
    learning_rate_multiplier: float | Literal["auto"] = Field("auto", description="Times the default learning rate 2e-4.")


class _Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class _Method(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised"] = "supervised"
    supervised: _Supervised = Field(default_factory=_Supervised)


class JobCreate(BaseModel):
    """``POST /v1/fine_tuning/jobs``. ``training_file`` names a dataset (``NAME`` or ``NAME@vN``): its train
    split trains, its dev split stops early, its test split feeds the promotion gate."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Hub model to adapt (a local GGUF or Hugging Face model).")
    training_file: str = Field(description="Dataset name, or NAME@vN for one version.")
    validation_file: str | None = Field(None, description="Not used: validation is the dataset's dev split.")
    hyperparameters: Hyperparameters | None = None
    method: _Method | None = None
    suffix: str | None = Field(None, max_length=40)
    seed: int | None = None
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None
    genfoundry: dict[str, Any] | None = Field(None, description="Any training setting of `genfoundry tune run --config` (lora_r, max_length, ...).")


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str
    target: str | None = Field(None, description="Model name to serve the adapter as (default: the job's suffix, else BASE-tuned).")
    suites: list[Literal["test", "answers", "safety"]] = Field(default_factory=lambda: ["test", "safety"])
    margin: float = Field(0.01, ge=-1, le=1)
    force: bool = False
    collection: str = "sample"


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
