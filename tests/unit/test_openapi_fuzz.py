"""Property-based tests of the gateway against its own OpenAPI document, plus the
classic bad inputs, one by one.

Schemathesis reads ``/openapi.json`` from the app in-process (ASGI) and generates
requests for every operation, valid and invalid. Schemathesis runs the app's
lifespan itself (startup on the first request, shutdown when the test ends), so
the home's SQLite database is filled before: the fake models and an admin key
that every generated request presents. Properties checked on every response:

- never a 5xx;
- every 4xx carries the OpenAI error shape ``{"error": {"message", "type", "param", "code"}}``;
- the status code, body and content type conform to the schema (errors are documented
  with the OpenAI error shape, not FastAPI's 422).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)

from genfoundry.core.settings import load_settings
from genfoundry.core.store import Store
from genfoundry.gateway.app import create_app
from genfoundry.gateway.keys import create_key, revoke_key
from genfoundry.models.hub import DEFAULT_ALIAS, DEFAULT_EMBEDDING_ALIAS, ModelHub
from genfoundry.models.spec import ModelSpec

MAX_EXAMPLES = 50
FIFTY_MB = 50 * 1024 * 1024


def fake_spec(name: str, **fields) -> ModelSpec:
    fields.setdefault("capabilities", ["chat", "completion", "tools", "json"])
    return ModelSpec(name=name, provider="fake", location="memory", **fields)


def prepare_home(home) -> tuple:
    """Settings for ``home``, its database holding the fake models and an admin key (the secret)."""
    gateway_settings = load_settings(home=home, environ={})
    gateway_settings.ensure_home()
    store = Store.open(gateway_settings.resolved_database_url)
    try:
        hub = ModelHub(store, gateway_settings)
        hub.add(fake_spec("fake-chat", aliases=[DEFAULT_ALIAS]))
        hub.add(fake_spec("fake-embed", aliases=[DEFAULT_EMBEDDING_ALIAS], capabilities=["embedding"]))
        # A name no generated path parameter will hit, so DELETE /admin/keys/{key_id} cannot revoke it.
        secret, key = create_key(store, name="fuzz-admin-7f3c9e1b2d", role="admin")
    finally:
        store.close()
    return gateway_settings, secret, key


def assert_openai_error(body: object) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, f"not an OpenAI error body: {body!r}"
    error = body["error"]
    assert isinstance(error, dict), f"'error' is not an object: {body!r}"
    assert {"message", "type", "param", "code"} <= set(error), f"error lacks fields: {body!r}"
    assert isinstance(error["message"], str) and error["message"], f"no message: {body!r}"
    assert isinstance(error["type"], str) and error["type"], f"no type: {body!r}"
    assert error["param"] is None or isinstance(error["param"], str), f"bad param: {body!r}"
    assert error["code"] is None or isinstance(error["code"], str), f"bad code: {body!r}"


def openai_error_shape(ctx, response, case) -> bool | None:
    """Schemathesis check: every 4xx answer has the OpenAI error shape."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.content[:200]!r}") from exc
    assert_openai_error(body)
    return True


# -- property-based: every operation of the OpenAPI document ------------------------

# Schemathesis needs the operations when it collects the tests, so the app and its schema
# are made at import, on an empty home. (``schemathesis.pytest.from_fixture`` would avoid
# that, but its lazy loader does not work with pytest 9.) Reading the schema starts the
# app's lifespan; the models and the key go into the home's database before the first case.
FUZZ_HOME = Path(tempfile.mkdtemp(prefix="gf-fuzz-"))
# Registered before schemathesis registers its own (which ends the lifespan), so it runs after it;
# at exit rather than in a fixture, so that the folder goes even when every test here is deselected.
atexit.register(shutil.rmtree, FUZZ_HOME, ignore_errors=True)
fuzz_app = create_app(load_settings(home=FUZZ_HOME, environ={}), builtins=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


REAL_MODELS = ("default", "fake-chat", "default-embedding", "fake-embed")


@schema.hook("flatmap_body")
def _often_a_real_model(context, body):
    # Random names only ever reach the 404 path; mix in the registered models so that
    # generated requests also get through to the fake providers.
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return st.just(body)
    return st.sampled_from((body["model"], *REAL_MODELS)).map(lambda name: {**body, "model": name})


@schema.hook("flatmap_path_parameters")
def _often_a_real_model_in_path(context, path_parameters):
    if not isinstance(path_parameters, dict) or "model" not in path_parameters:
        return st.just(path_parameters)
    return st.sampled_from((path_parameters["model"], *REAL_MODELS)).map(
        lambda name: {**path_parameters, "model": name})


@pytest.fixture(scope="module")
def admin_secret() -> str:
    _, secret, _ = prepare_home(FUZZ_HOME)
    return secret


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_holds_the_properties(case, admin_secret):
    response = case.call(headers={"Authorization": f"Bearer {admin_secret}"})
    case.validate_response(
        response,
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance,
                status_code_conformance],
        additional_checks=[openai_error_shape],
    )


# -- the bad-input list, one by one -------------------------------------------------

@pytest.fixture()
def gateway(tmp_path):
    gateway_settings, secret, _ = prepare_home(tmp_path)
    app = create_app(gateway_settings, builtins=False)
    with TestClient(app) as client:
        assert app.state.runtime is not None  # the lifespan ran
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client, app.state.runtime


def chat_body(**fields) -> dict:
    return {"model": "default", "messages": [{"role": "user", "content": "hello"}], **fields}


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert_openai_error(body)
    return body["error"]


def test_good_request_passes(gateway):
    client, _ = gateway
    reply = client.post("/v1/chat/completions", json=chat_body())
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "echo: hello"


def test_malformed_json_is_400_invalid_json(gateway):
    client, _ = gateway
    response = client.post("/v1/chat/completions", content=b'{"model": "default", "messages": [',
                           headers={"Content-Type": "application/json"})
    assert error_of(response, 400)["code"] == "invalid_json"


def test_unknown_field_is_400_unknown_parameter(gateway):
    client, _ = gateway
    error = error_of(client.post("/v1/chat/completions", json=chat_body(temprature=0.2)), 400)
    assert error["code"] == "unknown_parameter" and error["param"] == "temprature"
    assert "temprature" in error["message"]


def test_unknown_model_is_404_model_not_found(gateway):
    client, _ = gateway
    for path, body in (("/v1/chat/completions", chat_body(model="no-such-model")),
                       ("/v1/completions", {"model": "no-such-model", "prompt": "hi"}),
                       ("/v1/embeddings", {"model": "no-such-model", "input": "hi"})):
        error = error_of(client.post(path, json=body), 404)
        assert error["code"] == "model_not_found" and error["param"] == "model"
    assert error_of(client.get("/v1/models/no-such-model"), 404)["code"] == "model_not_found"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_negative_max_tokens_is_400(gateway, field):
    client, _ = gateway
    error = error_of(client.post("/v1/chat/completions", json=chat_body(**{field: -5})), 400)
    assert error["param"] == field and error["code"] == "invalid_value"


def test_missing_key_is_401(gateway):
    client, _ = gateway
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        error = error_of(client.post("/v1/chat/completions", json=chat_body(), headers=headers), 401)
        assert error["type"] == "authentication_error" and "missing API key" in error["message"]
    unknown = client.get("/v1/models", headers={"Authorization": "Bearer gf-nope"})
    assert error_of(unknown, 401)["code"] == "invalid_api_key"


def test_revoked_key_is_401(gateway):
    client, rt = gateway
    secret, key = create_key(rt.store, name="short-lived", role="app")
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.post("/v1/chat/completions", json=chat_body(), headers=headers).status_code == 200
    revoke_key(rt.store, key.id)
    error = error_of(client.post("/v1/chat/completions", json=chat_body(), headers=headers), 401)
    assert "revoked" in error["message"]


@pytest.mark.parametrize("field", ["rpm_limit", "token_budget"])
def test_key_limits_too_large_for_the_database_are_400(gateway, field):
    # Found by the fuzzer: SQLite raised OverflowError on these and the gateway answered 500.
    client, _ = gateway
    error = error_of(client.post("/admin/keys", json={"name": "huge", field: 2**70}), 400)
    assert error["param"] == field


def _assert_still_healthy(client) -> None:
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200


def test_50mb_body_with_content_length_is_413(gateway):
    client, _ = gateway
    body = b"x" * FIFTY_MB
    response = client.post("/v1/chat/completions", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.request.headers["content-length"] == str(FIFTY_MB)
    assert error_of(response, 413)["code"] == "payload_too_large"
    _assert_still_healthy(client)


def test_50mb_chunked_body_without_content_length_is_413(gateway):
    client, _ = gateway
    piece = b"x" * (1024 * 1024)
    response = client.post("/v1/chat/completions", content=(piece for _ in range(50)),
                           headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert error_of(response, 413)["code"] == "payload_too_large"
    _assert_still_healthy(client)


def test_chunked_body_is_refused_while_it_streams(gateway):
    # The test client hands the app the whole body at once; a real server passes it on in
    # pieces, so drive the app with 1 MiB pieces and count how many it pulled.
    client, rt = gateway
    piece, pulled, sent = b"x" * (1024 * 1024), 0, []

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": piece, "more_body": pulled < 50}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "root_path": "", "query_string": b"", "client": ("testclient", 50000),
             "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"transfer-encoding", b"chunked")]}
    client.portal.call(client.app, scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert_openai_error(json.loads(b"".join(m.get("body", b"") for m in sent[1:])))
    limit_pieces = rt.settings.max_body_bytes // len(piece)
    assert pulled == limit_pieces + 1  # stopped at the first piece over the limit, not after 50
    _assert_still_healthy(client)
