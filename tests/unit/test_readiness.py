"""Readiness and liveness: the gateway answers at once, and says ready only once its
preloaded models are loaded and have run once (so the first request is as fast as the next)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from genfoundry.core.settings import load_settings
from genfoundry.core.store import Store
from genfoundry.gateway.app import create_app
from genfoundry.models.hub import ModelHub
from genfoundry.models.spec import ModelSpec


def _settings(tmp_path):
    settings = load_settings(home=tmp_path, environ={})
    settings.ensure_home()
    store = Store.open(settings.resolved_database_url)
    hub = ModelHub(store, settings)
    # Warming it streams one short reply, which takes about a second with this delay.
    hub.add(ModelSpec(name="slow-chat", provider="fake", location="memory", capabilities=["chat", "completion"],
                      clearance="restricted", options={"delay": 1.0, "replies": ["warm"]}))
    hub.add(ModelSpec(name="embed", provider="fake", location="memory", capabilities=["embedding"]))
    store.close()
    return settings


def _wait(client, deadline_s: float = 20.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        response = client.get("/health")
        if response.status_code == 200 or response.json()["status"] == "failed":
            return response
        time.sleep(0.05)
    raise AssertionError("the gateway never became ready")


def test_ready_only_after_the_preloaded_models_are_warm(tmp_path):
    app = create_app(_settings(tmp_path), preload=["slow-chat", "embed"], builtins=False)
    with TestClient(app) as client:
        starting = client.get("/health")
        assert starting.status_code == 503 and starting.json()["status"] == "starting"
        assert client.get("/health/live").status_code == 200  # a liveness probe must not restart it meanwhile
        assert client.get("/health/ready").status_code == 503
        ready = _wait(client)
        assert ready.status_code == 200 and ready.json()["status"] == "ok"
        assert ready.json()["models_loaded"] == ["embed", "slow-chat"]
        assert client.get("/health/ready").status_code == 200
        assert app.state.runtime.warmed == {"slow-chat", "embed"}


def test_a_preload_that_fails_keeps_the_gateway_unready_and_says_why(tmp_path):
    app = create_app(_settings(tmp_path), preload=["no-such-model"], builtins=False)
    with TestClient(app) as client:
        failed = _wait(client)
        assert failed.status_code == 503
        body = failed.json()
        assert body["status"] == "failed" and "no-such-model" in body["error"]
        assert client.get("/health/live").status_code == 200


def test_nothing_to_preload_is_ready_at_once(tmp_path):
    app = create_app(_settings(tmp_path), builtins=False)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
