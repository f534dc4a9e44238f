"""`genfoundry doctor`: each check finds what it is for, and the command's exit code follows the worst."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

from genfoundry.cli import app
from genfoundry.core import audit
from genfoundry.core.settings import load_settings
from genfoundry.core.store import Store, utcnow
from genfoundry.gateway.doctor import run_checks
from genfoundry.guard.keys import generate_key_file
from genfoundry.guard.vault import Vault
from genfoundry.models.hub import ModelHub
from genfoundry.models.spec import ModelSpec
from genfoundry.testing.servers import free_port


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.delenv("GENFOUNDRY_VAULT_KEY", raising=False)  # the key comes from the home's file here
    monkeypatch.delenv("GENFOUNDRY_DATABASE_URL", raising=False)
    return tmp_path


def settings_for(home, **overrides):
    return load_settings(home=home, environ={}, overrides=overrides)


def by_name(checks):
    return {c.name: c for c in checks}


def migrated(home) -> Store:
    return Store.open(f"sqlite:///{home / 'genfoundry.db'}")


def test_a_database_without_its_migrations_fails_and_says_what_applies_them(home):
    checks = by_name(run_checks(settings_for(home), models=False))
    assert checks["database"].status == "fail"
    assert "m001_initial" in checks["database"].detail and "genfoundry serve" in checks["database"].detail
    assert "vault key" not in checks, "checks that need the schema are skipped"


def test_a_database_migrated_by_a_newer_version_fails(home):
    store = migrated(home)
    with store.begin() as conn:
        conn.exec_driver_sql("INSERT INTO _migrations (name, applied_at) VALUES ('m999_future', '2030-01-01')")
    checks = by_name(run_checks(settings_for(home), models=False, store=store))
    assert checks["database"].status == "fail" and "newer genfoundry" in checks["database"].detail


def test_an_unreachable_database_fails_without_showing_its_password(home):
    url = f"postgresql+psycopg://gf:hunter2@127.0.0.1:{free_port()}/gf"
    checks = run_checks(settings_for(home, database_url=url))
    assert [c.name for c in checks] == ["database"] and checks[0].status == "fail"
    assert "cannot reach the database" in checks[0].detail and "hunter2" not in checks[0].detail


def test_a_sound_home_passes_every_check(home):
    store = migrated(home)
    generate_key_file(home / "vault.key")
    checks = run_checks(settings_for(home), models=False, store=store)
    assert {c.name: c.status for c in checks} == {
        "database": "ok", "clock": "ok", "vault key": "ok", "vector store": "ok", "audit chain": "ok",
        "replicas": "ok", "reservations": "ok"}


def test_the_vault_key_must_be_there_and_be_the_one_values_were_stored_with(home):
    store = migrated(home)
    generate_key_file(home / "vault.key")
    key = (home / "vault.key").read_text()
    from genfoundry.guard.keys import load_vault_key

    Vault(store, load_vault_key(settings_for(home))).tokenize("EMAIL", "a@b.example", scope="c1")
    assert by_name(run_checks(settings_for(home), models=False, store=store))["vault key"].status == "ok"
    generate_key_file(home / "vault.key")  # a different key
    wrong = by_name(run_checks(settings_for(home), models=False, store=store))["vault key"]
    assert wrong.status == "fail" and "not the one" in wrong.detail
    (home / "vault.key").unlink()
    missing = by_name(run_checks(settings_for(home), models=False, store=store))["vault key"]
    assert missing.status == "fail" and "cannot be restored" in missing.detail
    assert key  # the first key was real


def test_unreachable_models_and_pool_backends_fail_by_name(home, tmp_path):
    store = migrated(home)
    hub = ModelHub(store, settings_for(home))
    down = f"http://127.0.0.1:{free_port()}/v1"
    hub.add(ModelSpec(name="gone-file", provider="llamacpp", location=str(tmp_path / "nothing.gguf")))
    hub.add(ModelSpec(name="pool", provider="openai_compat", location=down,
                      pool={"backends": [f"http://127.0.0.1:{free_port()}/v1"]}))
    models = by_name(run_checks(settings_for(home), store=store))["models"]
    assert models.status == "fail"
    assert set(models.data["problems"]) == {"gone-file", "pool"}
    assert len(models.data["problems"]["pool"]) == 2, "each backend of the pool is probed"
    assert "does not exist" in models.data["problems"]["gone-file"][0]


def test_a_tampered_audit_log_and_stale_reservations_are_reported(home):
    store = migrated(home)
    audit.record(store, action="key.create", target="k1")
    audit.record(store, action="key.create", target="k2")
    with store.begin() as conn:
        conn.execute(store.tables.audit_log.update().where(store.tables.audit_log.c.seq == 1).values(target="evil"))
        conn.execute(store.tables.quota_holds.insert().values(
            call_id="c-dead", key_id="k1", tokens=500, usd=0.0, replica="box-1:4242",
            created_at=utcnow() - dt.timedelta(days=2)))
    checks = by_name(run_checks(settings_for(home), models=False, store=store))
    assert checks["audit chain"].status == "fail"
    assert checks["reservations"].status == "warn" and "box-1:4242" in checks["reservations"].detail
    assert checks["reservations"].data["stale"]["box-1:4242"]["tokens"] == 500


def test_the_command_exits_1_on_a_failure_and_prints_json(home):
    runner = CliRunner()
    migrated(home).close()
    generate_key_file(home / "vault.key")
    ok = runner.invoke(app, ["--home", str(home), "doctor", "--no-models", "--json"])
    assert ok.exit_code == 0, ok.output
    assert {c["name"] for c in json.loads(ok.output)} >= {"database", "vault key", "audit chain"}
    (home / "vault.key").unlink()
    warned = runner.invoke(app, ["--home", str(home), "doctor", "--no-models"])
    assert warned.exit_code == 0 and "vault key" in warned.output  # a warning alone passes ...
    strict = runner.invoke(app, ["--home", str(home), "doctor", "--no-models", "--strict"])
    assert strict.exit_code == 1  # ... unless --strict
    hub = ModelHub(migrated(home), settings_for(home))
    hub.add(ModelSpec(name="down", provider="openai_compat", location=f"http://127.0.0.1:{free_port()}/v1"))
    failed = runner.invoke(app, ["--home", str(home), "doctor"])
    assert failed.exit_code == 1 and "down" in failed.output


def test_replicas_of_other_versions_and_replicas_gone_without_stopping_are_warned(home):
    store = migrated(home)
    table = store.tables.replicas
    now = utcnow()
    with store.begin() as conn:
        conn.execute(table.insert().values(id="box-2:77", host="box-2", pid=77, version="0.0.9", address=None,
                                           started_at=now, seen_at=now))
    mixed = by_name(run_checks(settings_for(home), models=False, store=store))["replicas"]
    assert mixed.status == "warn" and "0.0.9" in mixed.detail and "different versions" in mixed.detail
    with store.begin() as conn:
        conn.execute(table.update().values(seen_at=now - dt.timedelta(minutes=5)))
    gone = by_name(run_checks(settings_for(home), models=False, store=store))["replicas"]
    assert gone.status == "warn" and "box-2:77" in gone.detail and gone.data["gone"] == ["box-2:77"]


def test_a_gateway_registers_itself_while_it_runs(settings):
    from fastapi.testclient import TestClient

    from genfoundry.gateway.app import create_app
    from genfoundry.gateway.replicas import list_replicas

    app = create_app(settings, builtins=False)
    with TestClient(app):
        store = app.state.runtime.store
        rows = list_replicas(store)
        assert [r["id"] for r in rows] == [app.state.runtime.quotas.replica] and rows[0]["alive"]
        assert rows[0]["address"] == f"{settings.host}:{settings.port}"
    check = Store.open(settings.resolved_database_url)
    assert list_replicas(check) == [], "a gateway that stops removes its row"
    check.close()
