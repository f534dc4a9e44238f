"""The security review's findings (issue 18), each with a test that failed before its fix."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import zipfile

import pytest
from fastapi.testclient import TestClient

from genfoundry.core.audit import entries
from genfoundry.core.errors import BudgetExceeded, InvalidRequest
from genfoundry.core.settings import load_settings
from genfoundry.core.store import Store
from genfoundry.core.types import Message, ToolCall
from genfoundry.gateway.app import create_app
from genfoundry.gateway.keys import create_key
from genfoundry.gateway.quotas import Quotas
from genfoundry.guard.documents import CollectionPii, collection_scope
from genfoundry.guard.engine import Guard
from genfoundry.guard.policy import load_policies
from genfoundry.guard.vault import Vault
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.loaders import LoadError, load_document
from genfoundry.knowledge.stores.lance import LanceVectorStore
from genfoundry.models.spec import ModelSpec
from tests.conftest import TEST_VAULT_KEY, fake_spec

VAULT_KEY = __import__("base64").b64decode(TEST_VAULT_KEY)


@pytest.fixture()
def gateway(tmp_path):
    app = create_app(load_settings(home=tmp_path, environ={}), builtins=False)
    with TestClient(app) as client:
        rt = app.state.runtime
        rt.hub.add(fake_spec("fake-chat", aliases=["default"],
                             options={"replies": ["Refunds take five days [1]."] * 20}))
        rt.hub.add(fake_spec("premium", options={"replies": ["premium answer"] * 20}))
        rt.hub.add(fake_spec("fake-embed", aliases=["default-embedding"], capabilities=["embedding"]))
        secret, _ = create_key(rt.store, name="admin", role="admin")
        client.headers["Authorization"] = f"Bearer {secret}"
        for name, read in (("handbook", ["admin", "developer", "app"]), ("hr", ["admin"])):
            assert client.post("/v1/collections", json={"name": name, "access": {"read": read}}).status_code == 201
            report = client.post(f"/v1/collections/{name}/documents", files=[
                ("files", ("refunds.md", b"# Refunds\nRefunds take five days to reach your card."))]).json()
            assert len(report["added"]) == 1
        yield client, rt


def _as(client, rt, **key):
    secret, made = create_key(rt.store, **key)
    return {"Authorization": f"Bearer {secret}"}, made


# -- High 1: the knowledge routes honour the key's model allow-list -------------------------------------

def test_an_app_key_for_one_rag_model_cannot_ask_another_model_through_answers(gateway):
    client, rt = gateway
    headers, _ = _as(client, rt, name="bot", role="app", allowed_models=["rag:handbook"])
    question = {"question": "How long do refunds take?", "cache": False}
    assert client.post("/v1/collections/handbook/answers", headers=headers, json=question).status_code == 200
    refused = client.post("/v1/collections/handbook/answers", headers=headers, json={**question, "model": "premium"})
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "model"
    summary = client.post("/v1/collections/handbook/summaries", headers=headers, json={"model": "premium"})
    assert summary.status_code == 403


def test_an_app_key_limited_to_other_models_cannot_answer_from_a_collection(gateway):
    client, rt = gateway
    headers, _ = _as(client, rt, name="bot2", role="app", allowed_models=["premium"])
    refused = client.post("/v1/collections/handbook/answers", headers=headers,
                          json={"question": "refunds?", "model": "premium"})
    assert refused.status_code == 403 and "rag:handbook" in refused.json()["error"]["message"]


# -- High 2: a deleted collection's vault values cannot be recovered -----------------------------------

@pytest.fixture()
def kb(settings, store, hub, tmp_path):
    os.environ["GENFOUNDRY_VAULT_KEY"] = TEST_VAULT_KEY
    kb = KnowledgeBase(settings=settings, store=store, hub=hub, vectors=LanceVectorStore(tmp_path / "vectors"),
                       pii=CollectionPii(settings, store))
    yield kb
    kb.close()


def _ingest(kb, tmp_path, collection, text, **kw):
    folder = tmp_path / f"docs-{collection}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"
    folder.mkdir()
    (folder / "doc.md").write_text(text)
    return asyncio.run(kb.ingest(collection, [folder], create=True, **kw))


def test_deleting_a_collection_deletes_its_vault_values(kb, store, tmp_path):
    _ingest(kb, tmp_path, "hr", "# Staff\nJane Doe earns a lot; write to jane.doe@example.com.", pii="tokenize")
    vault = Vault(store, VAULT_KEY)
    assert vault.tokens(collection_scope("hr")), "the values were vaulted"
    assert "<DOC_PERSON_1>" in kb.vectors.get("hr", where={})[0].text  # never the name of a question's token
    asyncio.run(kb.delete_collection("hr"))
    assert vault.tokens(collection_scope("hr")) == []


def test_literal_token_text_in_a_document_is_never_restored(kb, store, tmp_path):
    _ingest(kb, tmp_path, "hr", "# Staff\nJane Doe is the manager.", pii="tokenize")
    asyncio.run(kb.delete_collection("hr"))
    # The attacker's document: nothing but token-shaped text, in a new collection of the same name.
    _ingest(kb, tmp_path, "hr", "# List\nThe people: <PERSON_1>, <PERSON_2>, <EMAIL_ADDRESS_1>.", pii="tokenize")
    chunks = kb.vectors.get("hr", where={})
    text = " ".join(c.text for c in chunks)
    assert "<PERSON_1>" not in text and "\u2039PERSON_1\u203a" in text
    restored = kb.pii.restore_map("hr", [c.text for c in chunks])
    assert "Jane Doe" not in restored.values()  # only what the vault issued for this document comes back


def test_forget_reaches_a_value_held_only_as_a_vault_token(kb, store, tmp_path):
    _ingest(kb, tmp_path, "hr", "# Staff\nWrite to jane.doe@example.com about the payroll.", pii="tokenize")
    assert "jane.doe@example.com" not in " ".join(c.text for c in kb.vectors.get("hr", where={}))
    report = asyncio.run(kb.forget_match("jane.doe@example.com"))
    assert len(report.documents) == 1 and kb.vectors.get("hr", where={}) == []
    assert Vault(store, VAULT_KEY).tokens(collection_scope("hr")) == []
    forget = entries(store, action="knowledge.forget_match")[0]
    assert forget.target.startswith("hmac:")
    assert hashlib.sha256(b"jane.doe@example.com").hexdigest()[:16] not in forget.target


# -- Medium 3: the client cannot choose its guard policy (test_policy.py); answers cached per policy ----

def test_cached_answers_are_kept_apart_by_policy():
    from genfoundry.apps.answer import _cache_key
    from genfoundry.knowledge.retrieval import RetrievalOptions

    options = RetrievalOptions()
    assert _cache_key("kb", "q", "m", options, "policy:lax;role:app") != \
        _cache_key("kb", "q", "m", options, "policy:strict;role:app")


# -- Medium 4: observability routes do not cross collection access --------------------------------------

def test_a_developer_sees_no_content_of_calls_built_from_collections_it_may_not_read(gateway):
    client, rt = gateway
    answer = client.post("/v1/collections/hr/answers", json={"question": "How long do refunds take?",
                                                              "cache": False})
    assert answer.status_code == 200
    rt.recorder.flush()
    dev, _ = _as(client, rt, name="dev", role="developer")
    rows = client.get("/admin/calls", headers=dev).json()["data"]
    hr_rows = [r for r in rows if r["collections"] == ["hr"]]
    assert hr_rows and all(r["redacted"] and "refunds" not in json.dumps(r).lower() for r in hr_rows)
    admin_rows = [r for r in client.get("/admin/calls").json()["data"] if r["collections"] == ["hr"]]
    assert "refunds" in json.dumps(admin_rows[0]["request"]).lower()


# -- Medium 5: collection name squatting -------------------------------------------------------------

def test_ingest_refuses_an_existing_collection_weaker_than_asked(kb, tmp_path):
    _ingest(kb, tmp_path, "hr", "# Squat\nplaceholder", clearance="public", pii="off")
    with pytest.raises(InvalidRequest, match="already exists with clearance public, pii off"):
        _ingest(kb, tmp_path, "hr", "# Salaries\nJane Doe earns 90k.", clearance="restricted", pii="tokenize")
    assert len(kb.documents("hr")) == 1, "nothing of the refused ingest landed"
    _ingest(kb, tmp_path, "hr", "# More\nplaceholder two", clearance="public")  # matching: fine


# -- Medium 6: a .docx that would inflate to gigabytes -----------------------------------------------

def test_a_docx_compression_bomb_is_refused_before_inflating(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as member:
            for _ in range(16):
                member.write(b"\0" * (1 << 20))  # 16 MiB of zeros: about 16 KiB compressed
    path = tmp_path / "bomb.docx"
    path.write_bytes(buffer.getvalue())
    assert path.stat().st_size < 100_000
    with pytest.raises(LoadError) as caught:
        load_document(path)
    assert caught.value.code == "file_too_large" and "compression bomb" in str(caught.value)


# -- Medium 7: budgets hold under concurrency and fan-out ---------------------------------------------

def test_calls_in_flight_hold_their_share_of_a_budget(store):
    _, key = create_key(store, name="tight", role="app", token_budget=500, budget_period="day")
    quotas = Quotas(store)
    quotas.reserve(key, "c1", tokens=300, usd=0)
    quotas.reserve(key, "c2", tokens=300, usd=0)  # 300 held < 500: may start
    with pytest.raises(BudgetExceeded):
        quotas.reserve(key, "c3", tokens=300, usd=0)  # 600 held: nothing left for a third at once
    with pytest.raises(BudgetExceeded):
        quotas.check_budget(key)  # a new request at the door sees the calls in flight too
    quotas.settle("c1", tokens=10, usd=0)
    quotas.release(["c2"])
    quotas.reserve(key, "c3", tokens=300, usd=0)


def test_a_summary_cannot_fan_out_without_bound(kb, hub, tmp_path):
    from genfoundry.apps.summarise import Summariser

    for i in range(4):
        _ingest(kb, tmp_path, "many", f"# Doc {i}\n" + f"Paragraph {i} about tents and refunds. " * 30)
    with pytest.raises(InvalidRequest, match="more than 3 model calls"):
        asyncio.run(Summariser(kb=kb, hub=hub, max_calls=3).summarise_collection("many"))


# -- Medium 8: the PII rail reads tool-call arguments and tool definitions -----------------------------

def test_pii_in_tool_arguments_and_tool_definitions_does_not_reach_an_uncleared_model(settings, store, hub):
    hub.add(fake_spec("external", clearance="public"))
    policies, _ = load_policies(settings)
    guard = Guard(policies=policies, store=store, hub=hub, vault=Vault(store, VAULT_KEY))
    messages = [Message(role="user", content="Send the refund."),
                Message(role="assistant", content=None, tool_calls=[
                    ToolCall(id="c1", name="email", arguments='{"to": "jane.doe@example.com", "amount": 20}')]),
                Message(role="tool", content="sent", tool_call_id="c1")]
    tools = [{"type": "function", "function": {"name": "email", "description": "Mail Jane Doe at jane.doe@example.com",
                                                "parameters": {"type": "object"}}}]
    screen = asyncio.run(guard.screen_input(call_id="t1", key=None, model="external", messages=messages,
                                            tools=tools))
    seen = json.dumps([m.tool_calls[0].arguments for m in screen.messages if m.tool_calls] + [screen.tools])
    assert "jane.doe@example.com" not in seen and "EMAIL_ADDRESS" in seen
    assert len(screen.messages) == 3 and json.loads(screen.messages[1].tool_calls[0].arguments)["amount"] == 20
    assert tools[0]["function"]["description"].endswith("jane.doe@example.com"), "the caller's list is not changed"


# -- Low -----------------------------------------------------------------------------------------------

def test_model_details_honour_the_allow_list(gateway):
    client, rt = gateway
    headers, _ = _as(client, rt, name="bot3", role="app", allowed_models=["fake-chat"])
    assert client.get("/v1/models/fake-chat", headers=headers).status_code == 200
    assert client.get("/v1/models/premium", headers=headers).status_code == 404
    assert client.get("/v1/models/rag:handbook", headers=headers).status_code == 404


def test_metrics_labels_are_bounded_and_name_no_keys(gateway):
    client, rt = gateway
    client.post("/v1/chat/completions", json={"model": "no-such-model-" + "x" * 40,
                                              "messages": [{"role": "user", "content": "hi"}]},
                headers={"X-Genfoundry-App": "made-up-app-123"})
    client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]},
                headers={"X-Genfoundry-App": "made-up-app-456"})
    text = client.get("/metrics").text
    assert "no-such-model" not in text and "made-up-app" not in text and 'key="admin"' not in text


def test_console_static_files_and_docs(gateway):
    client, _ = gateway
    script = client.get("/console/static/app.js")
    assert script.status_code == 200 and "frame-ancestors 'none'" in script.headers["content-security-policy"]
    assert client.get("/docs").status_code == 404  # Swagger UI would load scripts from a CDN
    assert client.get("/openapi.json").status_code == 200


def test_provider_errors_do_not_show_internal_addresses(gateway):
    client, rt = gateway
    from genfoundry.testing.servers import free_port

    port = free_port()  # nothing listens there: the connection is refused at once, on this machine
    rt.hub.add(ModelSpec(name="inside", provider="openai_compat", location=f"http://127.0.0.1:{port}/v1",
                         capabilities=["chat"], options={"max_retries": 0}))
    response = client.post("/v1/chat/completions", json={"model": "inside",
                                                         "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502 and f"127.0.0.1:{port}" not in response.text
    assert "cannot reach the server of model 'inside'" in response.json()["error"]["message"]


def test_the_database_file_is_readable_by_its_owner_only(tmp_path):
    Store.open(f"sqlite:///{tmp_path / 'gf.db'}").close()
    assert stat.S_IMODE((tmp_path / "gf.db").stat().st_mode) == 0o600
