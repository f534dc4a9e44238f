"""Request bodies of the data routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DatasetCreate", "MAX_ROWS", "ReviewBody"]

MAX_ROWS = 100_000  # more than this is a file: `genfoundry data import` reads it without a request body limit

Clearance = Literal["public", "internal", "confidential", "restricted"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetCreate(_Strict):
    name: str = Field(min_length=1, max_length=100, description="The dataset; a new version if it exists.")
    # Any value: a row that is not an object is reported by its number, with the others that are bad.
    rows: list[Any] = Field(min_length=1, max_length=MAX_ROWS, description="The records, as JSON objects.")
    required: list[str] = Field(default_factory=list, max_length=100,
                                description="Columns every row must have, not empty.")
    sensitivity: Clearance | None = Field(None, description="Set on a new dataset (default internal) or changed.")
    description: str | None = Field(None, max_length=2000)


class ReviewBody(_Strict):
    row_id: str = Field(min_length=1, max_length=64, description="The row's `_id` (`row_id` in the queue).")
    label: str = Field(min_length=1, max_length=200)
    expected: str | None = Field(None, max_length=64, description="The id of the review you saw on the row; "
                                                                  "null: none. Another one there is a 409.")
