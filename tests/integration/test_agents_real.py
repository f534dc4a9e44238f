"""Agents on real parts: the support agent on the built-in model through the real engine and gateway
(the official openai client), an approval that survives a gateway restart, and extraction."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from openai import OpenAI

from genfoundry.apps import support_desk
from genfoundry.apps.agent_run import list_actions
from genfoundry.models.hub import ModelHub
from genfoundry.core.settings import load_settings
from genfoundry.testing.servers import start_gateway, stop_gateway
from tests.conftest import fake_spec

pytestmark = pytest.mark.integration


def _step(tool: str, **arguments) -> str:
    return json.dumps({"tool": tool, "arguments": arguments})


def _post(gw, path: str, body: dict, key: str | None = None) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{gw.port}{path}", json=body, timeout=300,
                      headers={"Authorization": f"Bearer {key or gw.key}"})


def _get(gw, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{gw.port}{path}", timeout=60, headers={"Authorization": f"Bearer {gw.key}"})


def _agent_calls(store) -> int:
    with store.begin() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM calls WHERE endpoint = 'agent'").scalar()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("agents"))
    yield gw
    stop_gateway(gw)


def test_the_support_agent_runs_on_the_built_in_model(gateway):
    """Every step the real engine writes parses (the grammar), and no refund over the limit happens."""
    client = OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0)
    response = client.chat.completions.create(model="agent:support", messages=[
        {"role": "user", "content": "The tent from order A1003 leaks at the seams. I want all 429 EUR back."}])
    run = response.model_extra["agent_run"]
    assert response.choices[0].message.content and run["status"] in ("succeeded", "waiting", "stopped")
    assert run["steps"] and all(s["tool"] is not None for s in run["steps"])  # nothing failed to parse
    assert not [r for r in support_desk.refunds(gateway.home) if r["amount_eur"] > 100 and r["order_id"] == "A1003"]
    stored = _get(gateway, f"/v1/agents/runs/{run['id']}").json()
    assert stored["status"] == run["status"] and len(stored["steps"]) == len(run["steps"])
    store = gateway.store()  # each model step is a call of the agent endpoint (the recorder writes in batches)
    deadline = time.monotonic() + 10
    while (calls := _agent_calls(store)) < len(run["steps"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    store.close()
    assert calls >= len(run["steps"])

    streamed = list(client.chat.completions.create(model="agent:support", stream=True, messages=[
        {"role": "user", "content": "Has order A1007 shipped?"}]))
    assert streamed[-1].choices[0].finish_reason == "stop" and streamed[-1].model_extra["agent_run"]["id"]


def test_extraction_on_the_built_in_model_follows_the_schema(gateway):
    schema = {"type": "object", "properties": {"order_id": {"type": "string", "maxLength": 10},
                                               "amount_eur": {"type": "number"}},
              "required": ["order_id", "amount_eur"], "additionalProperties": False}
    text = "Hello, my order A1003 cost 429 EUR and the tent leaks. Jana"
    data = _post(gateway, "/v1/extract", {"model": "default", "text": text, "schema": schema}).json()
    assert data["valid"], data
    assert set(data["data"]) == {"order_id", "amount_eur"}
    for pointer, span in data["spans"].items():
        assert text[span["start"]:span["end"]] == span["text"]
    bad = _post(gateway, "/v1/extract", {"model": "default", "text": text, "schema": {"type": 5}})
    assert bad.status_code == 400 and "schema" in bad.json()["error"]["message"]


def test_an_approval_survives_a_gateway_restart_and_the_refund_happens_once(tmp_path):
    home = tmp_path / "home"
    (home / "agents").mkdir(parents=True)
    (home / "agents" / "desk.yaml").write_text(
        "name: desk\nmodel: scripted\ntools:\n  - python: genfoundry.apps.support_desk:lookup_order\n"
        "  - python: genfoundry.apps.support_desk:issue_refund\n    approval: {above: {amount: 100}}\n")
    settings = load_settings(home=home, environ={})
    settings.ensure_home()
    from genfoundry.core.store import Store

    store = Store.open(settings.resolved_database_url)
    hub = ModelHub(store, settings)
    hub.add(fake_spec("scripted", options={"replies": [
        _step("lookup_order", order_id="A1003"), _step("issue_refund", order_id="A1003", amount=429.0)]}))
    store.close()
    first = start_gateway(home, preload=())
    try:
        started = _post(first, "/v1/agents/desk/runs", {"input": "Refund my tent, order A1003, 429 EUR."})
        assert started.status_code == 200, started.text
        run = started.json()
        assert run["status"] == "waiting" and run["pending"]["reason"] == "amount 429 is above 100"
    finally:
        stop_gateway(first)
    store = Store.open(settings.resolved_database_url)
    ModelHub(store, settings).add(fake_spec("scripted", options={"replies": [
        _step("final_answer", answer="Refunded 429 EUR.")]}), replace=True)
    store.close()
    second = start_gateway(home, preload=())
    try:
        pending = _get(second, "/admin/agents/approvals").json()["data"]
        assert [a["id"] for a in pending] == [run["pending"]["action"]]
        assert pending[0]["run"]["input"][0]["content"].startswith("Refund my tent")
        action = run["pending"]["action"]
        decided = _post(second, f"/admin/agents/approvals/{action}", {"decision": "approve", "note": "ok"})
        assert decided.status_code == 200, decided.text
        again = _post(second, f"/admin/agents/approvals/{action}", {"decision": "reject"})
        assert again.status_code == 409 and "already decided" in again.json()["error"]["message"]
        missing = _post(second, "/admin/agents/approvals/run_nope:1", {"decision": "approve"})
        assert missing.status_code == 404
        deadline = time.monotonic() + 60
        while (state := _get(second, f"/v1/agents/runs/{run['id']}").json())["status"] != "succeeded":
            assert state["status"] in ("waiting", "running") and time.monotonic() < deadline, state
            time.sleep(0.3)
        assert state["answer"] == "Refunded 429 EUR."
        refunds = [r for r in support_desk.refunds(home) if r["order_id"] == "A1003"]
        assert len(refunds) == 1 and refunds[0]["idempotency_key"] == action
        store = second.store()
        assert [a["status"] for a in list_actions(store, status=None, run_id=run["id"])] == ["done"]
        store.close()
    finally:
        stop_gateway(second)
