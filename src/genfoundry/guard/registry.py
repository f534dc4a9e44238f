"""Rails are registered like model providers: by name, from entry points, so a user can add one.

A package ships a rail by exposing, in its ``pyproject.toml``::

    [project.entry-points."genfoundry.rails"]
    my_rail = "my_package.rails:register"

where ``register(register)`` calls ``register(RailType(name=..., build=...))``.
``build(config, embed)`` returns a :class:`~genfoundry.guard.types.Rail` for the
policy's configuration of that rail (``embed`` is the hub's embedding function,
for rails that need vectors). A registered name replaces the built-in rail of
that name (a better PII detector, say); the policy's options for it are passed
as they are. genfoundry's own rails are registered the same way (see
``pyproject.toml``), so the registry is the one list of what the guard can run.

Answer rails (groundedness) check an answer against the passages it was given:
they implement :class:`AnswerRail` and are registered with ``kind="answer"``.

Example::

    rail = get_rail_type("toxicity").build(ToxicityRail(mode="flag"), None)
    rail.check("you idiot")
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol, runtime_checkable

from genfoundry.core.errors import ConfigError
from genfoundry.guard.types import Embed

__all__ = ["AnswerRail", "ENTRY_POINT_GROUP", "RailType", "get_rail_type", "rail_types", "register",
           "register_rail_type"]

ENTRY_POINT_GROUP = "genfoundry.rails"
log = logging.getLogger(__name__)


@runtime_checkable
class AnswerRail(Protocol):
    """A check on an answer against the passages it was given (groundedness)."""

    name: str

    def warm_up(self) -> None: ...

    def check_answer(self, answer: str, passages: list[str]) -> Any: ...


@dataclass(frozen=True)
class RailType:
    name: str
    build: Callable[[Any, Embed | None], Any]  # (policy config of the rail, embed) -> rail
    kind: Literal["text", "answer"] = "text"
    description: str = ""


_types: dict[str, RailType] = {}
_lock = threading.Lock()
_loaded = False


def register_rail_type(rail: RailType) -> None:
    _types[rail.name] = rail


def _load_entry_points() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        builtin, plugins = [], []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            (builtin if ep.value.startswith("genfoundry.") else plugins).append(ep)
        if not builtin:  # running from a tree without installed metadata: the built-ins still count
            register(register_rail_type)
        for ep in builtin + plugins:  # a plugin registered after the built-ins replaces one of the same name
            try:
                ep.load()(register_rail_type)
            except Exception as exc:  # a broken plugin must not take the others down
                log.warning("rail plugin %s failed to load: %s", ep.name, exc)
        _loaded = True


def rail_types() -> dict[str, RailType]:
    _load_entry_points()
    return dict(sorted(_types.items()))


def get_rail_type(name: str) -> RailType:
    found = rail_types().get(name)
    if found is None:
        raise ConfigError(f"no guard rail named '{name}'; registered: {', '.join(rail_types()) or 'none'}")
    return found


# -- genfoundry's own rails ------------------------------------------------------------------------

def _injection(config, embed):
    from genfoundry.guard.injection import InjectionDetector

    return InjectionDetector(threshold=config.threshold)


def _toxicity(config, embed):
    from genfoundry.guard.toxicity import ToxicityDetector

    return ToxicityDetector(threshold=config.threshold)


def _topics(config, embed):
    from genfoundry.guard.topics import TopicDenyList

    if embed is None:
        raise ConfigError("the topics rail needs an embedding model")
    return TopicDenyList(topics=config.deny, embed=embed, threshold=config.threshold)


def _safety(config, embed):
    from genfoundry.guard.safety import SafetyClassifier

    return SafetyClassifier(threshold=config.threshold)


def _pii(config, embed):
    from genfoundry.guard.pii import PiiDetector

    return PiiDetector(entities=sorted(config.find) if config.find else None, ner=config.ner)


def _groundedness(config, embed):
    from genfoundry.guard.groundedness import GroundednessRail

    return GroundednessRail(threshold=config.threshold)


def register(register: Callable[[RailType], None]) -> None:
    """The entry point of genfoundry's own rails."""
    register(RailType("injection", _injection, description="Prompt injection and jailbreaks: patterns and a "
                                                           "trained n-gram classifier."))
    register(RailType("toxicity", _toxicity, description="Insults, threats, profanity: a weighted lexicon."))
    register(RailType("safety", _safety, description="Content safety: requests for harm in named categories "
                                                     "(violence, weapons, self-harm, ...): a trained classifier."))
    register(RailType("topics", _topics, description="Denied topics by embedding similarity."))
    register(RailType("pii", _pii, description="PII with Presidio, spaCy NER and genfoundry's recognizers."))
    register(RailType("groundedness", _groundedness, kind="answer",
                      description="Is each sentence of an answer supported by its passages?"))
