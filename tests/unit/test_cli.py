"""The `genfoundry` command, run in-process with Typer's CliRunner on fake models.

The built-in models are switched off (registering them assembles a 250 MB GGUF),
and no GENFOUNDRY_* variable of the user's environment reaches the commands.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import typer
from typer.testing import CliRunner

from genfoundry.cli import app
from genfoundry.core.store import Store, utcnow
from genfoundry.gateway.keys import verify_key
from genfoundry.observe.calls import CallRecord, CallRecorder

from tests.conftest import fails, isolate_cli, ok


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    """``cli("models", "list")`` runs ``genfoundry --home tmp_path models list``."""
    isolate_cli(monkeypatch)
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(app, ["--home", str(tmp_path), *args], env=env)

    return run



@pytest.fixture()
def with_models(cli):
    ok(cli("models", "add", "fake-chat", "memory", "--provider", "fake", "--alias", "default",
           "--price-input", "1", "--price-output", "2", "--option", 'replies=["hi"]'))
    ok(cli("models", "add", "fake-embed", "memory", "--provider", "fake", "--capability", "embedding",
           "--alias", "default-embedding"))
    return cli


def models_json(cli) -> dict[str, dict]:
    return {m["name"]: m for m in json.loads(ok(cli("models", "list", "--json")))}


# -- models -----------------------------------------------------------------------


def test_no_builtins_are_registered(cli, tmp_path):
    assert json.loads(ok(cli("models", "list", "--json"))) == []
    assert not any((tmp_path / "models").iterdir())


def test_models_add_and_list(with_models):
    models = models_json(with_models)
    assert set(models) == {"fake-chat", "fake-embed"}
    assert models["fake-chat"]["aliases"] == ["default"]
    assert models["fake-chat"]["options"] == {"replies": ["hi"]}
    assert models["fake-embed"]["capabilities"] == ["embedding"]
    table = ok(with_models("models", "list"))
    assert "fake-chat" in table and "fake-embed" in table
    assert "$1/$2 per M in/out" in table


def test_models_add_says_what_it_added(cli):
    out = ok(cli("models", "add", "m", "memory", "--provider", "fake", "--clearance", "internal"))
    assert "Added m (fake)" in out and "clearance internal" in out


def test_models_show_prints_json(with_models):
    data = json.loads(ok(with_models("models", "show", "default")))
    assert data["name"] == "fake-chat" and data["provider"] == "fake"
    assert data["price"]["output_per_million"] == 2.0
    assert data["derived_cost_per_million_output_tokens"] == 2.0


def test_models_default_moves_the_alias(with_models):
    ok(with_models("models", "add", "other-chat", "memory", "--provider", "fake"))
    out = ok(with_models("models", "default", "other-chat"))
    assert "other-chat is now the default (chat)" in out
    assert json.loads(ok(with_models("models", "show", "default")))["name"] == "other-chat"
    assert models_json(with_models)["fake-chat"]["aliases"] == []


def test_models_remove(with_models):
    assert "Removed fake-embed." in ok(with_models("models", "remove", "default-embedding"))
    assert set(models_json(with_models)) == {"fake-chat"}


@pytest.mark.parametrize("command", ["show", "remove", "default"])
def test_unknown_model_is_one_line_error(cli, command):
    line = fails(cli("models", command, "nope"))
    assert "model 'nope' is not registered" in line
    assert "genfoundry models list" in line


def test_errors_stay_on_one_line_in_a_narrow_pipe(cli):
    line = fails(cli("models", "show", "nope", env={"COLUMNS": "40"}))
    assert line.endswith("to register one")


def test_error_text_is_not_read_as_markup(cli):
    line = fails(cli("models", "show", "[/x]"))
    assert "model '[/x]' is not registered" in line


def test_models_add_refuses_a_literal_api_key(cli):
    line = fails(cli("models", "add", "remote", "https://api.example.com/v1", "--provider", "fake",
                     "--api-key", "sk-live-123"))
    assert "env:NAME or file:PATH" in line
    assert "sk-live-123" not in line
    assert models_json(cli) == {}


def test_models_add_takes_a_key_reference(cli):
    ok(cli("models", "add", "remote", "https://api.example.com/v1", "--provider", "fake",
           "--api-key", "env:REMOTE_KEY", "--remote-model", "gpt-x"))
    options = models_json(cli)["remote"]["options"]
    assert options == {"api_key": "env:REMOTE_KEY", "remote_model": "gpt-x"}


def test_models_add_duplicate_needs_replace(with_models):
    assert "--replace" in fails(with_models("models", "add", "fake-chat", "memory", "--provider", "fake"))
    ok(with_models("models", "add", "fake-chat", "memory", "--provider", "fake", "--description", "new",
                   "--replace"))
    assert models_json(with_models)["fake-chat"]["description"] == "new"


@pytest.mark.parametrize("args, message", [
    (["bad name", "memory", "--provider", "fake"], "name"),
    (["m", "memory", "--provider", "fake", "--clearance", "secret"], "clearance"),
    (["m", "memory", "--provider", "fake", "--price-hour", "-1"], "per_hour"),
    (["m", "memory", "--provider", "nosuch"], "installed providers"),
    (["m", "memory", "--provider", "fake", "--option", "novalue"], "KEY=VALUE"),
    (["m", "somewhere-unknown"], "--provider"),
])
def test_models_add_invalid_input_is_one_line_error(cli, args, message):
    assert message in fails(cli("models", "add", *args))
    assert models_json(cli) == {}


# -- keys -------------------------------------------------------------------------


def test_keys_create_prints_the_secret_once(cli, settings):
    out = ok(cli("keys", "create", "support-bot", "--role", "app", "--rpm", "60", "--model", "fake-chat"))
    secrets = [line for line in out.splitlines() if line.startswith("gf-")]
    assert len(secrets) == 1 and out.count(secrets[0]) == 1
    assert "shown only now" in out
    store = Store.open(settings.resolved_database_url)
    try:
        key = verify_key(store, secrets[0])
    finally:
        store.close()
    assert (key.name, key.role, key.rpm_limit, key.allowed_models) == ("support-bot", "app", 60, ["fake-chat"])


def test_keys_list_never_shows_the_secret(cli):
    secret = ok(cli("keys", "create", "bot")).strip().splitlines()[-1]
    listing = ok(cli("keys", "list"))
    assert "bot" in listing and "developer" in listing
    assert secret not in listing
    assert secret.split("-", 2)[2] not in listing  # nor its random part


def test_keys_revoke_by_name(cli):
    ok(cli("keys", "create", "leaked"))
    ok(cli("keys", "create", "kept"))
    assert "Revoked key leaked" in ok(cli("keys", "revoke", "leaked"))
    listing = ok(cli("keys", "list"))
    assert "kept" in listing and "leaked" not in listing
    assert "leaked" in ok(cli("keys", "list", "--all"))
    assert "no active key" in fails(cli("keys", "revoke", "leaked"))


def test_keys_with_markup_in_their_name(cli):
    out = ok(cli("keys", "create", "[/x]"))
    assert out.strip().splitlines()[-1].startswith("gf-")
    assert "[/x]" in ok(cli("keys", "list"))
    assert "Revoked key [/x]" in ok(cli("keys", "revoke", "[/x]"))


def test_keys_create_invalid_role(cli):
    assert "role must be one of" in fails(cli("keys", "create", "x", "--role", "root"))


# -- logs -------------------------------------------------------------------------


@pytest.fixture()
def logged(store):
    """Three calls: an old one, a recent success and a recent error."""
    recorder = CallRecorder(store)
    now = utcnow()
    recorder.record(CallRecord(id="chatcmpl-old", endpoint="chat", status="ok", http_status=200,
                               latency_ms=5, model="fake-chat", created_at=now - dt.timedelta(days=2)))
    recorder.record(CallRecord(id="chatcmpl-recent", endpoint="chat", status="ok", http_status=200,
                               latency_ms=7, model="default", resolved_model="fake-chat",
                               prompt_tokens=3, completion_tokens=4, request={"messages": ["hi"]},
                               created_at=now - dt.timedelta(minutes=5)))
    recorder.record(CallRecord(id="embd-failed", endpoint="embeddings", status="error", http_status=502,
                               latency_ms=9, model="fake-embed", error_message="boom",
                               created_at=now - dt.timedelta(minutes=1)))
    recorder.close()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_logs_json_newest_first_with_content(cli, logged):
    rows = json_lines(ok(cli("logs", "--json")))
    assert [r["id"] for r in rows] == ["embd-failed", "chatcmpl-recent", "chatcmpl-old"]
    assert rows[1]["request"] == {"messages": ["hi"]}


def test_logs_filters(cli, logged):
    def ids(*args: str) -> list[str]:
        return [r["id"] for r in json_lines(ok(cli("logs", "--json", *args)))]

    assert ids("--model", "fake-chat") == ["chatcmpl-recent", "chatcmpl-old"]
    assert ids("--status", "error") == ["embd-failed"]
    assert ids("--since", "1h") == ["embd-failed", "chatcmpl-recent"]
    assert ids("--until", "1d") == ["chatcmpl-old"]
    assert ids("--limit", "1") == ["embd-failed"]
    yesterday = (utcnow() - dt.timedelta(days=1)).isoformat()
    assert ids("--since", yesterday, "--model", "fake-chat") == ["chatcmpl-recent"]


def test_logs_table(cli, logged):
    table = ok(cli("logs"))
    assert "chatcmpl-recent"[-12:] in table and "3/4" in table
    assert "error 502" in table
    assert "fake-embed" in table


def test_logs_table_shows_model_names_as_sent(cli, store):
    recorder = CallRecorder(store)
    recorder.record(CallRecord(id="chatcmpl-odd", endpoint="chat", status="error", http_status=404,
                               latency_ms=1, model="[/x]"))
    recorder.close()
    assert "[/x]" in ok(cli("logs"))


def test_logs_invalid_since(cli, logged):
    line = fails(cli("logs", "--since", "yesterday"))
    assert "--since must be an ISO date/time" in line and "2h" in line


def test_logs_since_after_until(cli, logged):
    assert "--since must be before --until" in fails(cli("logs", "--since", "1h", "--until", "2h"))


# -- engine and help --------------------------------------------------------------


def test_engine_status_in_process_when_asked(cli):
    out = ok(cli("engine", "status", env={"GENFOUNDRY_LLAMA_ENGINE": "inprocess"}))
    assert out.startswith("engine: llama-cpp-python in-process")
    assert "llama_engine is 'inprocess'" in out


def test_engine_status_with_a_configured_server(cli, tmp_path):
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    out = ok(cli("engine", "status", env={"GENFOUNDRY_LLAMA_SERVER_PATH": str(binary)}))
    assert out.strip() == f"engine: llama-server ({binary}), 8 parallel sequences"


def test_engine_status_when_configured_server_is_missing(cli, tmp_path):
    out = ok(cli("engine", "status", env={"GENFOUNDRY_LLAMA_SERVER_PATH": str(tmp_path / "absent")}))
    assert out.startswith("engine: llama-cpp-python in-process")
    assert "genfoundry engine build" in out


def command_paths(command, prefix: tuple[str, ...] = ()):
    yield prefix, command
    if hasattr(command, "commands"):  # a group (Typer ships its own click)
        for name, sub in sorted(command.commands.items()):
            yield from command_paths(sub, (*prefix, name))


COMMANDS = list(command_paths(typer.main.get_command(app)))


def test_every_command_is_walked():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "up", "serve", "chat", "logs", "models", "models add", "keys create",
            "bench gateway", "engine status", "engine build"} <= names


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "genfoundry" for p, _ in COMMANDS])
def test_help_works_for_every_command(path, command):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert command.help, f"`genfoundry {' '.join(path)}` has no help text"
    assert command.help.split("\n")[0].strip()[:30] in " ".join(result.output.split())
