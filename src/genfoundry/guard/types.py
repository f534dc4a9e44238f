"""What the rails find and decide, shared by every rail and the policy engine."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Embed", "Finding", "LinearArtifactRail", "Rail", "SENSITIVITY_LEVELS", "load_linear_artifact"]

# Rails that need sentence vectors take a function from texts to L2-normalised float32 rows.
Embed = Callable[[list[str]], np.ndarray]

# The same order as model and collection clearances: a higher index is more sensitive.
SENSITIVITY_LEVELS = ("public", "internal", "confidential", "restricted")


@dataclass(frozen=True)
class Finding:
    """One thing a rail found in a text.

    ``kind`` is the entity type for PII ("PERSON"), the pattern or category for
    the others. ``start``/``end`` are character offsets into the text checked,
    when the finding has a place. ``detail`` holds evidence that may be logged:
    never the sensitive value itself.
    """

    rail: str
    kind: str
    score: float
    start: int | None = None
    end: int | None = None
    detail: dict = field(default_factory=dict)


@runtime_checkable
class Rail(Protocol):
    """A check on one text. Cheap to construct; heavy loading happens in ``warm_up``.

    ``check`` is synchronous and thread-safe: the policy engine runs it in a
    worker thread. It returns findings, never raises on odd input (empty text,
    binary junk, very long text), and leaves deciding what to do to the policy.
    """

    name: str

    def warm_up(self) -> None: ...

    def check(self, text: str) -> list[Finding]: ...


def load_linear_artifact(name: str):
    """A shipped linear classifier: its card (``artifacts/NAME.json``) and its weights and bias (``NAME.npz``),
    as float32 arrays."""
    import json
    from importlib import resources

    import numpy as np

    folder = resources.files("genfoundry.guard").joinpath("artifacts")
    card = json.loads(folder.joinpath(f"{name}.json").read_text(encoding="utf-8"))
    with folder.joinpath(f"{name}.npz").open("rb") as f:
        data = np.load(f)
        return card, data["weights"].astype(np.float32), data["bias"].astype(np.float32)


class LinearArtifactRail:
    """A rail whose classifier is a shipped linear model (:func:`load_linear_artifact`): its card, weights and
    bias are loaded once, on first use or in ``warm_up``, whichever thread gets there first; ``threshold``
    is the caller's, else the card's. Subclasses finish their own setup in ``_loaded``."""

    def __init__(self, *, artifact: str, threshold: float | None = None):
        self.artifact = artifact
        self._threshold = threshold
        self._weights: np.ndarray | None = None
        self._bias: np.ndarray | float | None = None
        self.card: dict = {}
        self._lock = threading.Lock()

    @property
    def threshold(self) -> float:
        self.warm_up()
        return self._threshold if self._threshold is not None else float(self.card["threshold"])

    def warm_up(self) -> None:
        if self._weights is not None:
            return
        with self._lock:
            if self._weights is None:
                card, weights, self._bias = load_linear_artifact(self.artifact)
                self.card = card
                self._loaded()
                self._weights = weights  # last: other threads take a set _weights as "loaded"

    def _loaded(self) -> None:
        """Called once, under the lock, after the card and bias are set."""
