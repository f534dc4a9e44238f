"""The audit log: events are chained, and verify finds edits, deletions and insertions."""

from __future__ import annotations

import asyncio
import threading

from typer.testing import CliRunner

from genfoundry.cli import app as cli_app
from genfoundry.core.audit import GENESIS, entries, record, verify
from genfoundry.gateway.keys import create_key, revoke_key
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.stores.lance import LanceVectorStore


def test_entries_chain_and_verify(store):
    first = record(store, action="key.create", actor="cli", target="k1", details={"role": "app"})
    second = record(store, action="key.revoke", target="k1")
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash and second.seq == 2
    report = verify(store)
    assert report.ok and report.entries == 2
    assert [e.action for e in entries(store, action="key.")] == ["key.revoke", "key.create"]


def test_edited_entry_is_found(store):
    for i in range(3):
        record(store, action="key.create", target=f"k{i}")
    with store.begin() as conn:
        conn.execute(store.tables.audit_log.update().where(store.tables.audit_log.c.seq == 2).values(target="evil"))
    report = verify(store)
    assert not report.ok and any("entry 2" in p and "changed" in p for p in report.problems)


def test_deleted_entry_is_found(store):
    for i in range(3):
        record(store, action="key.create", target=f"k{i}")
    with store.begin() as conn:
        conn.execute(store.tables.audit_log.delete().where(store.tables.audit_log.c.seq == 2))
    report = verify(store)
    assert not report.ok and any("missing" in p for p in report.problems)


def test_rewritten_chain_tail_is_found(store):
    """Deleting an entry and renumbering the rest still breaks the links."""
    for i in range(3):
        record(store, action="key.create", target=f"k{i}")
    table = store.tables.audit_log
    with store.begin() as conn:
        conn.execute(table.delete().where(table.c.seq == 2))
        conn.execute(table.update().where(table.c.seq == 3).values(seq=2))
    assert not verify(store).ok


def test_concurrent_writers_keep_one_chain(store):
    threads = [threading.Thread(target=lambda i=i: [record(store, action="t", target=f"{i}-{j}") for j in range(5)])
               for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    report = verify(store)
    assert report.ok and report.entries == 20


def test_keys_collections_and_forgets_are_audited(settings, store, hub, tmp_path):
    _, key = create_key(store, name="app", role="app")
    revoke_key(store, key.id, actor="key:admin1")
    kb = KnowledgeBase(settings=settings, store=store, hub=hub, vectors=LanceVectorStore(tmp_path / "v"))
    docs = tmp_path / "d"
    docs.mkdir()
    (docs / "a.md").write_text("# A\nContact jane@example.com please.")
    asyncio.run(kb.ingest("kb", [docs], create=True))
    asyncio.run(kb.forget_match("jane@example.com"))
    actions = [e.action for e in reversed(entries(store))]
    assert actions == ["key.create", "key.revoke", "collection.create", "knowledge.forget_match"]
    forget = entries(store, action="knowledge.forget_match")[0]
    assert "jane" not in str(vars(forget))  # the log keeps a fingerprint, not the forgotten text
    assert entries(store, action="key.revoke")[0].actor == "key:admin1"


def test_cli_verify_and_list(settings, store):
    record(store, action="key.create", target="k1")
    runner = CliRunner()
    ok = runner.invoke(cli_app, ["--home", str(settings.home), "audit", "verify"])
    assert ok.exit_code == 0 and "intact" in ok.output
    listed = runner.invoke(cli_app, ["--home", str(settings.home), "audit", "list", "--json"])
    assert listed.exit_code == 0 and '"key.create"' in listed.output
    with store.begin() as conn:
        conn.execute(store.tables.audit_log.update().values(actor="someone else"))
    bad = runner.invoke(cli_app, ["--home", str(settings.home), "audit", "verify"])
    assert bad.exit_code == 1
