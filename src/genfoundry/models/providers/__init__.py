"""Provider plugins, discovered through the ``genfoundry.providers`` entry point.

A plugin module exposes ``register(register)`` and calls ``register(Provider(...))``
once per provider; the built-in providers use the very same hook::

    # pyproject.toml of a third-party package
    [project.entry-points."genfoundry.providers"]
    mycloud = "mycloud_genfoundry:register"

    # mycloud_genfoundry.py
    from genfoundry.models.providers import Provider
    def register(register):
        register(Provider(name="mycloud", create=MyCloudChat, description="..."))
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from genfoundry.core.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "Provider", "get_provider", "providers", "register_provider"]

ENTRY_POINT_GROUP = "genfoundry.providers"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provider:
    """A way to run models.

    ``create(spec, settings)`` returns a ChatModel or EmbeddingModel (cheaply: no
    loading). ``inspect(location, options)``, when given, reads what it can from
    the model itself (context length, parameter count, licence) for ``models add``.
    """

    name: str
    create: Callable[..., Any]
    description: str = ""
    inspect: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None


_providers: dict[str, Provider] = {}
_loaded = False
_lock = threading.Lock()


def register_provider(provider: Provider) -> None:
    _providers[provider.name] = provider


def _load_entry_points() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()(register_provider)
            except Exception as exc:  # a broken plugin must not take the others down
                log.warning("provider plugin %s failed to load: %s", ep.name, exc)
        _loaded = True


def providers() -> dict[str, Provider]:
    _load_entry_points()
    return dict(sorted(_providers.items()))


def get_provider(name: str) -> Provider:
    found = providers().get(name)
    if found is None:
        known = ", ".join(providers()) or "none"
        raise ConfigError(f"unknown provider '{name}'; installed providers: {known}")
    return found
