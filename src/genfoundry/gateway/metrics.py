"""Prometheus metrics, one registry per app so tests can build many apps."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        labels = ("endpoint", "model", "status")
        self.requests = Counter("genfoundry_requests_total", "Requests by endpoint, model and status.",
                                labels, registry=self.registry)
        self.tokens = Counter("genfoundry_tokens_total", "Tokens by model and kind (prompt, completion).",
                              ("model", "kind"), registry=self.registry)
        self.cost = Counter("genfoundry_cost_usd_total", "Dollars spent by model, key and app.",
                            ("model", "key", "app"), registry=self.registry)
        self.latency = Histogram("genfoundry_request_latency_seconds", "Request latency.",
                                 ("endpoint", "model"), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("genfoundry_time_to_first_token_seconds", "Time to first token.",
                              ("model",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("genfoundry_queue_depth", "Requests waiting for a model.", ("model",),
                                 registry=self.registry)
        self.running = Gauge("genfoundry_running_requests", "Requests a model is serving now.", ("model",),
                             registry=self.registry)

        self.guard_blocks = Counter("genfoundry_guard_blocks_total",
                                    "Requests the guard refused, by rule (input.injection, routing, ...).",
                                    ("rule",), registry=self.registry)
        self.feedback = Counter("genfoundry_feedback_total", "Feedback received, by rating.", ("rating",),
                                registry=self.registry)
        self.alerts = Counter("genfoundry_alerts_total", "Alerts recorded (drift, budgets), by kind.", ("kind",),
                              registry=self.registry)
        self.budget_used = Gauge("genfoundry_budget_used_ratio",
                                 "Share of its dollar budget a key has spent this period (updated per request).",
                                 ("key",), registry=self.registry)

    def watch_pools(self, pools: Callable[[], list]) -> None:
        """Export the backends of the loaded model pools (``pools()`` lists them) on every scrape."""
        self.registry.register(_PoolCollector(pools))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector:
    """Each pool backend's state, read from the pools when /metrics is scraped."""

    def __init__(self, pools: Callable[[], list]):
        self.pools = pools

    def describe(self):
        return []  # read at scrape time: nothing to check at registration

    def collect(self):
        labels = ["model", "backend"]
        up = GaugeMetricFamily("genfoundry_pool_backend_up",
                               "1 while a pool backend gets requests, 0 while it is left out.", labels=labels)
        outstanding = GaugeMetricFamily("genfoundry_pool_backend_outstanding",
                                        "Requests a pool backend is serving now.", labels=labels)
        served = CounterMetricFamily("genfoundry_pool_backend_requests",
                                     "Requests a pool backend answered (ok) or failed (failed).",
                                     labels=[*labels, "outcome"])
        for pool in self.pools():
            for backend in pool.status():
                at = [pool.spec.name, backend["url"]]
                up.add_metric(at, 0.0 if backend["ejected"] else 1.0)
                outstanding.add_metric(at, backend["outstanding"])
                served.add_metric([*at, "ok"], backend["served"])
                served.add_metric([*at, "failed"], backend["failed"])
        yield from (up, outstanding, served)
