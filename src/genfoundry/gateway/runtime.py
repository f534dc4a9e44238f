"""What the gateway holds while it runs: settings, store, hub, recorder, quotas,
metrics, and a queue and cost clock per model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from genfoundry.core.settings import Settings
from genfoundry.core.store import Store
from genfoundry.gateway.metrics import Metrics
from genfoundry.gateway.quotas import Quotas
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.models.admission import Admission
from genfoundry.models.hub import ModelHub
from genfoundry.models.pricing import SharedClock
from genfoundry.observe.calls import CallRecorder

if TYPE_CHECKING:  # the types only: the guard and tracing load their rails and exporters when turned on
    from genfoundry.guard.engine import Guard
    from genfoundry.observe.tracing import Tracing

__all__ = ["Runtime"]

# Remote APIs get a generous bound: their own servers queue.
REMOTE_CONCURRENCY = 256


@dataclass
class Runtime:
    settings: Settings
    store: Store
    hub: ModelHub
    recorder: CallRecorder
    quotas: Quotas
    metrics: Metrics = field(default_factory=Metrics)
    admissions: dict[str, Admission] = field(default_factory=dict)
    clocks: dict[str, SharedClock] = field(default_factory=dict)
    kb: KnowledgeBase | None = None
    guard: Guard | None = None  # when the guard is on
    tracing: Tracing | None = None  # when tracing is on
    ready: bool = False  # the preloaded models are loaded and warm (/health answers 200)
    startup_error: str | None = None  # why warming up failed (/health answers 503 with it)
    warmed: set[str] = field(default_factory=set)

    def knowledge(self) -> KnowledgeBase:
        """The knowledge base, opened on first use (the vector store may be a remote PostgreSQL)."""
        if self.kb is None:
            from genfoundry.guard.documents import CollectionPii

            self.kb = KnowledgeBase(settings=self.settings, store=self.store, hub=self.hub,
                                    pii=CollectionPii(self.settings, self.store))
        return self.kb

    def admission(self, model) -> Admission:
        name = model.spec.name
        gate = self.admissions.get(name)
        if gate is None or gate.concurrency != model.concurrency:
            concurrency = model.concurrency if model.local else max(model.concurrency, REMOTE_CONCURRENCY)
            gate = Admission(name, concurrency=concurrency, max_queue=self.settings.max_queue)
            self.admissions[name] = gate
        return gate

    def known_app(self, app: str | None) -> str:
        """An app name for a metric label: one the guard's policy assigns, else "other" (clients choose
        the header, and every distinct value would be a new time series)."""
        if not app:
            return ""
        policies = getattr(self.guard, "policies", None)
        return app if policies is not None and app in policies.assign.apps else "other"

    def clock(self, name: str) -> SharedClock:
        return self.clocks.setdefault(name, SharedClock())
