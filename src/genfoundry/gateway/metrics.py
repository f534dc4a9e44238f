"""Prometheus metrics, one registry per app so tests can build many apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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

    def render(self) -> bytes:
        return generate_latest(self.registry)
