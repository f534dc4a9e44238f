"""The SQL store: named migrations, recorded once, and the schema they create."""

from __future__ import annotations

import sqlalchemy as sa

from genfoundry.core.store import MIGRATIONS, Store


def test_migrations_are_applied_and_recorded_by_name(store):
    names = [name for name, _ in MIGRATIONS]
    assert names[0] == "m001_initial"
    assert store.applied_migrations() == sorted(names)
    with store.begin() as conn:
        rows = conn.execute(sa.text("SELECT name, applied_at FROM _migrations")).all()
    assert sorted(r[0] for r in rows) == sorted(names)
    assert all(r[1] is not None for r in rows)


def test_opening_twice_applies_nothing_new(settings, store):
    again = Store.open(settings.resolved_database_url)
    try:
        assert again.migrate() == []
        assert again.applied_migrations() == store.applied_migrations()
    finally:
        again.close()


def test_migrate_on_a_fresh_database_returns_what_it_applied(tmp_path):
    fresh = Store.open(f"sqlite:///{tmp_path / 'fresh.db'}", migrate=False)
    try:
        assert fresh.migrate() == [name for name, _ in MIGRATIONS]
        assert fresh.migrate() == []
    finally:
        fresh.close()


def test_tables_exist(store):
    inspector = sa.inspect(store.engine)
    tables = set(inspector.get_table_names())
    assert {"models", "api_keys", "calls", "_migrations"} <= tables
    columns = {c["name"] for c in inspector.get_columns("calls")}
    assert {"id", "created_at", "key_id", "model", "status", "prompt_tokens", "cost_usd",
            "request", "response"} <= columns


def test_rows_round_trip(store):
    models = store.tables.models
    with store.begin() as conn:
        conn.execute(models.insert().values(name="m", provider="fake", spec={"a": [1, 2]}))
    with store.begin() as conn:
        row = conn.execute(sa.select(models)).one()
    assert row.spec == {"a": [1, 2]}
    assert row.builtin is False and row.created_at is not None
