"""Knowledge routes and rag: models through the gateway app, with fake models (fast)."""

from __future__ import annotations

import openai
import pytest
from fastapi.testclient import TestClient

from genfoundry.core.settings import load_settings
from genfoundry.gateway.app import create_app
from genfoundry.gateway.keys import create_key
from genfoundry.models.spec import ModelSpec


def fake_spec(name, **kw):
    kw.setdefault("capabilities", ["chat", "completion", "tools", "json"])
    kw.setdefault("clearance", "restricted")  # may answer from internal collections
    return ModelSpec(name=name, provider="fake", location="memory", **kw)


@pytest.fixture()
def gateway(tmp_path):
    app = create_app(load_settings(home=tmp_path, environ={}), builtins=False)
    with TestClient(app) as client:
        rt = app.state.runtime
        rt.hub.add(fake_spec("fake-chat", aliases=["default"],
                             options={"replies": ["Refunds take five days [1].", "Refunds take five days [1]."]}))
        rt.hub.add(fake_spec("fake-embed", aliases=["default-embedding"], capabilities=["embedding"]))
        secret, _ = create_key(rt.store, name="admin", role="admin")
        client.headers["Authorization"] = f"Bearer {secret}"
        assert client.post("/v1/collections", json={"name": "kb"}).status_code == 201
        report = client.post("/v1/collections/kb/documents", files=[
            ("files", ("refunds.md", b"# Refunds\nRefunds take five days to reach your card.")),
            ("files", ("tents.md", b"# Tents\nOur tents are green and weigh two kilos."))]).json()
        assert len(report["added"]) == 2
        yield client, rt, secret


def _oai(client, secret):
    return openai.OpenAI(base_url="http://testserver/v1", api_key=secret, http_client=client, max_retries=0)


def test_rag_model_answers_with_citations(gateway):
    client, _, secret = gateway
    reply = _oai(client, secret).chat.completions.create(
        model="rag:kb", messages=[{"role": "user", "content": "How long do refunds take?"}])
    assert reply.choices[0].message.content == "Refunds take five days [1]."
    citations = reply.model_extra["citations"]
    assert citations[0]["source"] == "upload:refunds.md" and citations[0]["index"] == 1


def test_rag_model_is_listed_and_keys_are_respected(gateway):
    client, rt, secret = gateway
    ids = [m.id for m in _oai(client, secret).models.list()]
    assert "rag:kb" in ids and "fake-chat" in ids
    app_secret, _ = create_key(rt.store, name="app", role="app", allowed_models=["fake-chat"])
    app = _oai(client, app_secret)
    assert "rag:kb" not in [m.id for m in app.models.list()]
    with pytest.raises(openai.PermissionDeniedError):
        app.chat.completions.create(model="rag:kb", messages=[{"role": "user", "content": "refunds?"}])


def test_collection_routes_and_errors(gateway):
    client, _, _ = gateway
    assert [c["name"] for c in client.get("/v1/collections").json()["data"]] == ["kb"]
    docs = client.get("/v1/collections/kb/documents").json()["data"]
    assert {d["source"] for d in docs} == {"upload:refunds.md", "upload:tents.md"}
    assert client.get("/v1/collections/nope").status_code == 404
    assert client.post("/v1/collections", json={"name": "kb"}).status_code == 400
    assert client.post("/v1/collections", json={"name": "Bad Name"}).status_code == 400
    assert client.post("/v1/collections/kb/search", json={"query": "x", "filter": {"colour": "red"}}).status_code == 400
    assert client.post("/v1/collections/kb/search", json={"query": "x", "rerank": True}).status_code == 400
    assert client.post("/v1/collections/kb/documents", files=[]).status_code == 400
    tents = next(d for d in docs if d["source"] == "upload:tents.md")
    forgot = client.delete(f"/v1/collections/kb/documents/{tents['id']}").json()
    assert forgot["documents"] == [tents["id"]]
    assert client.delete(f"/v1/collections/kb/documents/{tents['id']}").status_code == 404
    summary = client.post("/v1/collections/kb/summaries", json={}).json()
    assert summary["documents"] and summary["text"]
    assert client.delete("/v1/collections/kb").json() == {"deleted": True, "name": "kb"}
    assert client.get("/v1/collections/kb").status_code == 404


def test_upload_over_the_file_limit_is_refused_whole(tmp_path):
    app = create_app(load_settings(home=tmp_path, environ={}, overrides={"max_file_mb": 0.001}), builtins=False)
    with TestClient(app) as client:
        rt = app.state.runtime
        rt.hub.add(fake_spec("fake-embed", aliases=["default-embedding"], capabilities=["embedding"]))
        secret, _ = create_key(rt.store, name="admin", role="admin")
        client.headers["Authorization"] = f"Bearer {secret}"
        client.post("/v1/collections", json={"name": "kb"})
        response = client.post("/v1/collections/kb/documents", files=[
            ("files", ("small.md", b"# Small\nfine")), ("files", ("big.md", b"# Big\n" + b"word " * 1000))])
        assert response.status_code == 413 and "max_file_mb" in response.json()["error"]["message"]
        assert client.get("/v1/collections/kb/documents").json()["data"] == []


def test_answers_go_through_the_call_log_and_rag_keys_need_no_model_grant(gateway):
    client, rt, _ = gateway
    answer = client.post("/v1/collections/kb/answers", json={"question": "How long do refunds take?"}).json()
    assert answer["citations"][0]["source"] == "upload:refunds.md"
    rt.recorder.flush()
    from genfoundry.observe.calls import list_calls
    assert any(c["endpoint"] == "answers" and c["model"] == "fake-chat" for c in list_calls(rt.store, limit=20))
    rag_only, _ = create_key(rt.store, name="rag-only", role="app", allowed_models=["rag:kb"])
    reply = _oai(client, rag_only).chat.completions.create(
        model="rag:kb", messages=[{"role": "user", "content": "How long do refunds take?"}])
    assert reply.model_extra["citations"]
