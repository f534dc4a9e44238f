"""Secrets are references in config (``env:OPENAI_API_KEY``, ``file:/run/secrets/key``),
resolved only when a provider needs them, and never logged."""

from __future__ import annotations

import os
from pathlib import Path

from genfoundry.core.errors import ConfigError

__all__ = ["is_secret_reference", "resolve_secret"]


def is_secret_reference(value: str) -> bool:
    return value.startswith(("env:", "file:")) or value == "none"


def resolve_secret(reference: str | None) -> str | None:
    """Return the secret a reference points at; ``None`` or ``"none"`` means no key."""
    if reference is None or reference == "none":
        return None
    if reference.startswith("env:"):
        name = reference[4:]
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"environment variable {name} is not set; export it or change the model's api_key reference")
        return value
    if reference.startswith("file:"):
        path = Path(reference[5:]).expanduser()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from exc
    raise ConfigError("secrets must be references such as 'env:OPENAI_API_KEY' or 'file:/path/to/key', not values")
