"""Rail instances for the policy engine: built once per configuration and shared.

Loading a rail can be slow (spaCy, the injection classifier), so each distinct
configuration is built once per process, under a lock, and reused by every
request; ``warm_up`` builds those a policy set needs before the first request.
"""

from __future__ import annotations

import threading

from genfoundry.guard.types import Embed, Rail

__all__ = ["Rails"]

WARM_UP_TEXT = "Hello, please tell me about the weather in the city today."


class Rails:
    def __init__(self, *, embed: Embed | None = None, fixed: dict[str, Rail] | None = None):
        self.embed = embed
        self.fixed = fixed or {}  # rail name -> instance used whatever the configuration (tests)
        self._built: dict[tuple, Rail] = {}
        self._lock = threading.Lock()

    def get(self, name: str, config) -> Rail:
        if name in self.fixed:
            return self.fixed[name]
        key = (name, *_params(name, config))
        rail = self._built.get(key)
        if rail is None:
            with self._lock:
                rail = self._built.get(key)
                if rail is None:
                    rail = self._build(name, config)
                    rail.warm_up()
                    if hasattr(rail, "check"):  # first calls pay for lazy imports and caches; not a request
                        rail.check(WARM_UP_TEXT)
                    self._built[key] = rail
        return rail

    def pii(self, config):
        return self.get("pii", config)

    def _build(self, name: str, config) -> Rail:
        from genfoundry.guard.registry import get_rail_type

        return get_rail_type(name).build(config, self.embed)

    def warm_up(self, policies, *, pii: bool = True) -> None:
        for policy in policies.policies.values():
            for name in ("injection", "toxicity", "topics", "safety", "pii"):
                config = getattr(policy.input, name)
                if config.mode != "off" and (pii or name != "pii"):
                    self.get(name, config)
            if policy.context.injection.mode != "off":
                self.get("injection", policy.context.injection)
            if policy.output.toxicity.mode != "off":
                self.get("toxicity", policy.output.toxicity)
            if policy.output.safety.mode != "off":
                self.get("safety", policy.output.safety)


def _params(name: str, config) -> tuple:
    if name == "groundedness":
        return (config.threshold,)
    if name == "pii":
        return (tuple(sorted(config.find or ())), config.ner)
    if name == "topics":
        return (repr(sorted(config.deny.items())), config.threshold)
    return (getattr(config, "threshold", None),)
