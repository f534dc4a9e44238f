"""The knowledge base on fake models and an embedded LanceDB in a temporary folder.

Ingest (skip, update, failures, crash safety), retrieval (modes, filters, MMR,
limits), access rules, forgetting (down to the bytes on disk) and the
`genfoundry ingest | ask | search | forget | collections` commands.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from genfoundry.cli import app
from genfoundry.core.errors import CollectionNotFound, InvalidRequest, NotFound, PermissionDenied
from genfoundry.core.types import Chunk, Hit
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.collections import Access, Collection, CollectionRegistry
from genfoundry.knowledge.ingest import document_id
from genfoundry.knowledge.retrieval import MAX_QUERY_CHARS, RetrievalOptions, fuse_rrf, mmr_select
from genfoundry.knowledge.stores.lance import LanceVectorStore
from genfoundry.observe.calls import CallRecord, CallRecorder

from tests.conftest import fails, isolate_cli, ok

RETURNS = ("# Returns\n\nReturns are accepted within 30 days of purchase with a receipt.\n\n"
           "## Refunds\n\nRefunds are paid to the original card within 5 working days.\n")
SHIPPING = "Shipping is free for orders over 50 euros. Parcels usually arrive within three working days.\n"
PRICES = "item,price,colour\nlamp,20,green\nchair,45,oak\n"
ABOUT = ("<html><head><title>About us</title></head><body><h1>About</h1>"
         "<p>We have sold furniture since 1999.</p><script>var tracker = 1;</script></body></html>")
SECRET = "# Locker\n\nThe staff locker code is zebra-7731 and it changes every month.\n"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture()
def docs(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in (("returns.md", RETURNS), ("shipping.txt", SHIPPING), ("prices.csv", PRICES),
                       ("about.html", ABOUT)):
        (folder / name).write_text(text)
    return folder.resolve()


@pytest.fixture()
def kb(settings, store, hub):
    kb = KnowledgeBase(settings=settings, store=store, hub=hub, vectors=LanceVectorStore(settings.vectors_dir))
    yield kb
    kb.close()


@pytest.fixture()
def handbook(kb, docs):
    """The four sample files ingested into 'handbook'; returns the first ingest's report."""
    return run(kb.ingest("handbook", [docs], create=True))


def doc_named(kb: KnowledgeBase, name: str, collection: str = "handbook"):
    return next(d for d in kb.documents(collection) if Path(d.source).name == name)


def document_row(kb: KnowledgeBase, doc_id: str) -> dict | None:
    table = kb.store.tables.documents
    with kb.store.begin() as conn:
        row = conn.execute(sa.select(table).where(table.c.id == doc_id)).mappings().first()
    return dict(row) if row else None


def chunk_total(kb: KnowledgeBase, collection: str = "handbook") -> int:
    return kb.vectors.count(collection)


def assert_no_duplicates(kb: KnowledgeBase, collection: str = "handbook") -> None:
    """Every chunk in the store belongs to a document's current version, once."""
    documents = kb.documents(collection)
    assert chunk_total(kb, collection) == sum(d.chunks for d in documents)
    for d in documents:
        chunks = kb.vectors.get(collection, where={"document_id": d.id})
        version = document_row(kb, d.id)["version"]
        assert len(chunks) == d.chunks and {c.version for c in chunks} == {version}
        assert len({c.position for c in chunks}) == d.chunks


# -- ingest ---------------------------------------------------------------------------------


def test_ingest_a_folder_of_mixed_files(kb, docs, handbook):
    assert sorted(Path(s).name for s in handbook.added) == ["about.html", "prices.csv", "returns.md",
                                                             "shipping.txt"]
    assert handbook.updated == handbook.skipped == handbook.failed == []
    documents = kb.documents("handbook")
    assert {Path(d.source).name: d.title for d in documents} == {
        "about.html": "About us", "prices.csv": "Prices", "returns.md": "Returns", "shipping.txt": "Shipping"}
    assert handbook.chunks == sum(d.chunks for d in documents) == chunk_total(kb) >= 4
    assert all(d.size > 0 and d.collection == "handbook" and d.ingested_at for d in documents)
    assert doc_named(kb, "returns.md").id == document_id("handbook", str(docs / "returns.md"))
    texts = " ".join(c.text for c in kb.vectors.get("handbook"))
    assert "chair" in texts and "furniture" in texts and "tracker" not in texts  # scripts are not text
    assert_no_duplicates(kb)


def test_ingest_reports_progress_for_every_file(kb, docs):
    events = []
    run(kb.ingest("handbook", [docs, docs / "missing.md"], create=True, on_progress=events.append))
    assert [e.done for e in events] == [1, 2, 3, 4, 5]
    assert {e.total for e in events} == {5}
    assert sorted(e.outcome for e in events) == ["added"] * 4 + ["failed"]


def test_reingest_unchanged_skips_everything(kb, docs, handbook):
    before = chunk_total(kb)
    ids_before = {c.id for c in kb.vectors.get("handbook")}
    report = run(kb.ingest("handbook", [docs]))
    assert sorted(report.skipped) == sorted(handbook.added)
    assert report.added == report.updated == report.failed == []
    assert report.chunks == 0
    assert chunk_total(kb) == before
    assert {c.id for c in kb.vectors.get("handbook")} == ids_before


def test_changed_file_replaces_its_chunks(kb, docs, handbook):
    old = doc_named(kb, "returns.md")
    old_version = document_row(kb, old.id)["version"]
    others = {d.id: d.chunks for d in kb.documents("handbook") if d.id != old.id}
    (docs / "returns.md").write_text("# Returns\n\nReturns are accepted within ninety days, no receipt needed.\n")

    report = run(kb.ingest("handbook", [docs]))

    assert report.updated == [str(docs / "returns.md")] and report.added == []
    assert len(report.skipped) == 3
    new = doc_named(kb, "returns.md")
    new_version = document_row(kb, new.id)["version"]
    assert new.id == old.id and new_version != old_version and document_row(kb, new.id)["stale"] == []
    chunks = kb.vectors.get("handbook", where={"document_id": new.id})
    assert len(chunks) == new.chunks == report.chunks == 1
    assert chunks[0].version == new_version and "ninety" in chunks[0].text
    assert kb.vectors.count("handbook", where={"version": old_version}) == 0
    assert {d.id: d.chunks for d in kb.documents("handbook") if d.id != old.id} == others
    assert_no_duplicates(kb)


def test_new_tags_reingest_an_unchanged_file(kb, docs, handbook):
    report = run(kb.ingest("handbook", [docs / "shipping.txt"], tags=["logistics"]))
    assert report.updated == [str(docs / "shipping.txt")]
    assert doc_named(kb, "shipping.txt").tags == ["logistics"]
    assert all(c.tags == ["logistics"] for c in kb.vectors.get("handbook", where={"tags": "logistics"}))
    assert_no_duplicates(kb)


def test_bad_files_fail_alone(kb, docs):
    (docs / "binary.txt").write_bytes(b"PK\x03\x04\x00\x00binary\x00stuff")
    (docs / "empty.md").write_bytes(b"")
    missing = docs.parent / "nowhere" / "gone.md"

    report = run(kb.ingest("handbook", [docs, missing], create=True))

    failed = dict(report.failed)
    assert set(failed) == {str(docs / "binary.txt"), str(docs / "empty.md"), str(missing)}
    assert "binary" in failed[str(docs / "binary.txt")]
    assert "empty" in failed[str(docs / "empty.md")]
    assert "does not exist" in failed[str(missing)]
    assert len(report.added) == 4
    assert len(kb.documents("handbook")) == 4
    assert_no_duplicates(kb)


def test_ingest_into_a_missing_collection_needs_create(kb, docs):
    with pytest.raises(CollectionNotFound, match="genfoundry ingest PATH --collection nope"):
        run(kb.ingest("nope", [docs]))


def test_named_files_keep_their_source_name(kb, docs):
    report = run(kb.ingest("handbook", files=[(docs / "returns.md", "policies/returns")], create=True))
    assert report.added == ["policies/returns"]
    assert kb.documents("handbook")[0].source == "policies/returns"


def test_collection_checks(kb):
    with pytest.raises(InvalidRequest, match="not valid"):
        run(kb.create_collection("Bad Name"))
    with pytest.raises(InvalidRequest, match="overlap"):
        run(kb.create_collection("x", chunk_tokens=50, chunk_overlap=50))
    with pytest.raises(InvalidRequest, match="does not make embeddings"):
        run(kb.create_collection("x", embedding_model="fake-chat"))
    created = run(kb.create_collection("x", clearance="confidential", description="HR files"))
    assert created.dimensions == 32 and kb.collection("x").clearance == "confidential"
    with pytest.raises(InvalidRequest, match="already exists"):
        run(kb.create_collection("x"))
    run(kb.delete_collection("x"))
    assert kb.collections() == [] and "x" not in kb.vectors.collections()
    with pytest.raises(CollectionNotFound):
        run(kb.delete_collection("x"))


def test_document_lookup(kb, handbook):
    doc = doc_named(kb, "prices.csv")
    assert kb.document(doc.id) == doc
    with pytest.raises(NotFound, match="collections show"):
        kb.document("no-such-id")


# -- crash safety ---------------------------------------------------------------------------


class Killed(Exception):
    """Stands for the process dying at the patched step."""


def kill_after_vectors_add(kb: KnowledgeBase, monkeypatch) -> list[int]:
    """The next ``vectors.add`` writes its chunks, then the ingest 'dies'; returns chunks written."""
    written: list[int] = []
    real_add = kb.vectors.add

    def add_then_die(collection, chunks):
        real_add(collection, chunks)
        written.append(len(chunks))
        raise Killed("killed after the vector write")

    monkeypatch.setattr(kb.vectors, "add", add_then_die)
    return written


def test_killed_update_keeps_the_old_version_and_hides_the_new(kb, docs, handbook, monkeypatch):
    returns = doc_named(kb, "returns.md")
    old_version = document_row(kb, returns.id)["version"]
    old_chunks = kb.vectors.get("handbook", where={"document_id": returns.id})
    (docs / "returns.md").write_text("# Returns\n\nReturns are accepted within ninety days, no receipt needed.\n")
    (docs / "warranty.md").write_text("# Warranty\n\nThe warranty lasts two years on every sofa.\n")
    written = kill_after_vectors_add(kb, monkeypatch)

    with pytest.raises(Killed):
        run(kb.ingest("handbook", [docs]))

    # The half-finished run left chunks behind...
    assert written and chunk_total(kb) == handbook.chunks + written[0]
    # ...but nobody sees them: the old returns policy is whole, the new one and the new file hidden.
    assert document_row(kb, returns.id)["version"] == old_version
    assert "warranty.md" not in {Path(d.source).name for d in kb.documents("handbook")}
    for mode in ("dense", "bm25", "hybrid"):
        passages = run(kb.retrieve("handbook", "returns ninety days warranty sofa",
                                   RetrievalOptions(mode=mode, limit=20)))
        texts = " ".join(p.chunk.text for p in passages)
        assert "ninety" not in texts and "sofa" not in texts
        assert all(p.chunk.version == document_row(kb, p.chunk.document_id)["version"] for p in passages)
    old = run(kb.retrieve("handbook", "original card refunds", RetrievalOptions(mode="dense", limit=20,
                                                                                where={"document_id": returns.id})))
    assert sorted(p.chunk.id for p in old) == sorted(c.id for c in old_chunks)

    monkeypatch.undo()
    report = run(kb.ingest("handbook", [docs]))

    assert report.updated == [str(docs / "returns.md")] and report.added == [str(docs / "warranty.md")]
    assert kb.vectors.count("handbook", where={"version": old_version}) == 0
    assert_no_duplicates(kb)
    passages = run(kb.retrieve("handbook", "warranty sofa", RetrievalOptions(mode="bm25")))
    assert "sofa" in passages[0].chunk.text


def test_killed_first_ingest_leaves_nothing_visible(kb, docs, monkeypatch):
    written = kill_after_vectors_add(kb, monkeypatch)
    with pytest.raises(Killed):
        run(kb.ingest("handbook", [docs], create=True))

    assert kb.documents("handbook") == [] and chunk_total(kb) == written[0] > 0
    assert run(kb.retrieve("handbook", "returns accepted within 30 days", RetrievalOptions(mode="hybrid"))) == []

    monkeypatch.undo()
    assert run(kb.repair("handbook")) == written[0]  # orphan chunks deleted, uncommitted rows dropped
    assert chunk_total(kb) == 0
    with kb.store.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(kb.store.tables.documents)).scalar_one() == 0
    report = run(kb.ingest("handbook", [docs]))
    assert len(report.added) == 4
    assert_no_duplicates(kb)


def test_kill_between_switch_and_cleanup_is_repaired(kb, docs, handbook, monkeypatch):
    """Dying after the registry switched versions but before the old chunks were deleted."""
    returns = doc_named(kb, "returns.md")
    old_version = document_row(kb, returns.id)["version"]
    (docs / "returns.md").write_text("# Returns\n\nReturns are accepted within ninety days.\n")

    def die(*args, **kwargs):
        raise Killed("killed before the old chunks went")

    monkeypatch.setattr(kb.vectors, "delete", die)
    with pytest.raises(Killed):
        run(kb.ingest("handbook", [docs]))
    monkeypatch.undo()

    row = document_row(kb, returns.id)
    assert row["version"] != old_version and row["stale"] == [old_version]
    assert kb.vectors.count("handbook", where={"version": old_version}) == 2  # still on disk...
    passages = run(kb.retrieve("handbook", "refunds original card", RetrievalOptions(mode="bm25", limit=20)))
    assert all(p.chunk.version != old_version for p in passages)  # ...but never shown

    report = run(kb.ingest("handbook", [docs]))
    assert len(report.skipped) == 4
    assert kb.vectors.count("handbook", where={"version": old_version}) == 0
    assert document_row(kb, returns.id)["stale"] == []
    assert_no_duplicates(kb)


def test_kill_at_the_registry_switch(kb, docs, handbook, monkeypatch):
    """Dying inside step 3 (the version switch) is the same as dying just before it."""
    returns = doc_named(kb, "returns.md")
    old_version = document_row(kb, returns.id)["version"]
    (docs / "returns.md").write_text("# Returns\n\nReturns are accepted within ninety days.\n")

    def die():
        raise Killed("killed during the switch")

    monkeypatch.setattr("genfoundry.knowledge.ingest.utcnow", die)
    with pytest.raises(Killed):
        run(kb.ingest("handbook", [docs]))
    monkeypatch.undo()

    assert document_row(kb, returns.id)["version"] == old_version
    assert kb.vectors.count("handbook", where={"document_id": returns.id}) == 3  # 2 old + 1 orphan
    passages = run(kb.retrieve("handbook", "ninety", RetrievalOptions(mode="bm25")))
    assert all("ninety" not in p.chunk.text for p in passages)
    report = run(kb.ingest("handbook", [docs]))
    assert report.updated == [str(docs / "returns.md")]
    assert_no_duplicates(kb)


# -- retrieval ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_every_mode_finds_the_answer(kb, handbook, mode):
    passages = run(kb.retrieve("handbook", "are returns accepted within 30 days?", RetrievalOptions(mode=mode)))
    best = passages[0]
    assert Path(best.chunk.source).name == "returns.md" and "30 days" in best.chunk.text
    assert best.similarity == pytest.approx(max(p.similarity for p in passages))
    assert -1.0 <= best.similarity <= 1.0 and best.similarity > 0.35
    assert best.chunk.heading == "Returns" and best.chunk.title == "Returns"
    expected = {"dense": {"dense"}, "bm25": {"bm25"}, "hybrid": {"dense", "bm25"}}[mode]
    assert set(best.ranks) == expected
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)
    assert len({p.chunk.id for p in passages}) == len(passages) <= 5


def test_bm25_finds_only_matching_terms(kb, handbook):
    passages = run(kb.retrieve("handbook", "furniture", RetrievalOptions(mode="bm25")))
    assert [Path(p.chunk.source).name for p in passages] == ["about.html"]


def test_filters_by_tag_and_source(kb, docs):
    run(kb.ingest("handbook", [docs / "returns.md"], tags=["policy"], create=True))
    run(kb.ingest("handbook", [docs / "shipping.txt", docs / "prices.csv"]))
    query = "days receipt shipping lamp"
    by_tag = run(kb.retrieve("handbook", query, RetrievalOptions(mode="hybrid", where={"tags": "policy"})))
    assert by_tag and {Path(p.chunk.source).name for p in by_tag} == {"returns.md"}
    assert all(p.chunk.tags == ["policy"] for p in by_tag)
    source = str(docs / "shipping.txt")
    for mode in ("dense", "bm25", "hybrid"):
        by_source = run(kb.retrieve("handbook", query, RetrievalOptions(mode=mode, where={"source": source})))
        assert by_source and {p.chunk.source for p in by_source} == {source}
    both = run(kb.retrieve("handbook", query, RetrievalOptions(
        mode="dense", where={"source": [source, str(docs / "prices.csv")]})))
    assert {Path(p.chunk.source).name for p in both} == {"shipping.txt", "prices.csv"}
    assert run(kb.retrieve("handbook", query, RetrievalOptions(where={"tags": "nothing"}))) == []


def test_mmr_returns_limit_distinct_chunks(kb, docs, handbook):
    for n in range(4):  # near-duplicates MMR should spread out from
        (docs / f"copy{n}.txt").write_text(f"Returns are accepted within 30 days of purchase, copy {n}.\n")
    run(kb.ingest("handbook", [docs]))
    passages = run(kb.retrieve("handbook", "returns accepted 30 days",
                               RetrievalOptions(mode="hybrid", limit=3, mmr=0.3)))
    assert len(passages) == 3 and len({p.chunk.id for p in passages}) == 3
    plain = run(kb.retrieve("handbook", "returns accepted 30 days", RetrievalOptions(mode="hybrid", limit=3)))
    assert len(plain) == 3


def test_limit_caps_results(kb, handbook):
    assert len(run(kb.retrieve("handbook", "days", RetrievalOptions(mode="dense", limit=2)))) == 2


@pytest.mark.parametrize("options, message", [
    (RetrievalOptions(mode="semantic"), "mode 'semantic'"),
    (RetrievalOptions(limit=0), "limit"),
    (RetrievalOptions(limit=101), "limit"),
    (RetrievalOptions(mmr=0), "mmr"),
    (RetrievalOptions(mmr=1.5), "mmr"),
    (RetrievalOptions(where={"colour": "red"}), "cannot filter on 'colour'"),
    (RetrievalOptions(where={"page": "one"}), "takes int"),
    (RetrievalOptions(where={"tags": []}), "non-empty"),
])
def test_bad_options_are_invalid_requests(kb, handbook, options, message):
    with pytest.raises(InvalidRequest, match=message):
        run(kb.retrieve("handbook", "returns", options))


def test_query_limits(kb, handbook):
    with pytest.raises(InvalidRequest, match="100,000 characters") as caught:
        run(kb.retrieve("handbook", "x" * 100_000))
    assert caught.value.param == "query"
    assert run(kb.retrieve("handbook", "days " * (MAX_QUERY_CHARS // 5)))  # at the limit is fine
    with pytest.raises(InvalidRequest, match="empty"):
        run(kb.retrieve("handbook", "   "))


def test_unknown_collection(kb, handbook):
    with pytest.raises(CollectionNotFound, match="'nope' does not exist"):
        run(kb.retrieve("nope", "returns"))


def test_fuse_rrf_rewards_agreement():
    a, b, c = (Chunk(id=x, document_id=x, version="v", text=x, position=0) for x in "abc")
    fused = fuse_rrf({"dense": [Hit(a, 0.9), Hit(b, 0.8)], "bm25": [Hit(b, 3.0), Hit(c, 2.0)]})
    assert [chunk.id for chunk, _, _ in fused] == ["b", "a", "c"]
    assert fused[0][2] == {"dense": 2, "bm25": 1}
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_mmr_select_prefers_novelty():
    vectors = np.asarray([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    relevance = np.asarray([0.9, 0.89, 0.5], dtype=np.float32)
    assert mmr_select(np.asarray([1, 0]), vectors, relevance, limit=2, lambda_=0.5) == [0, 2]
    assert mmr_select(np.asarray([1, 0]), vectors, relevance, limit=2, lambda_=1.0) == [0, 1]
    assert mmr_select(np.asarray([1, 0]), vectors, relevance, limit=5, lambda_=0.7) == [0, 2, 1]


# -- access ---------------------------------------------------------------------------------


def _collection(access: Access) -> Collection:
    return Collection(name="hr", embedding_model="fake-embed", dimensions=32, chunk_tokens=200,
                      chunk_overlap=40, access=access)


def test_default_access_by_role():
    hr = _collection(Access())
    check = CollectionRegistry.check_access
    for role in (None, "admin", "developer", "app"):
        check(hr, "read", role=role, key_id="k1")
    for role in (None, "admin", "developer"):
        check(hr, "write", role=role, key_id="k1")
    with pytest.raises(PermissionDenied, match="may not write collection 'hr'.*collections access hr"):
        check(hr, "write", role="app", key_id="k1")


def test_access_limited_to_keys():
    hr = _collection(Access(read=["developer", "app"], write=["developer"], keys=["k1"]))
    check = CollectionRegistry.check_access
    check(hr, "read", role="app", key_id="k1")
    check(hr, "write", role="developer", key_id="k1")
    check(hr, "write", role="admin", key_id="other")  # admins pass any key list
    check(hr, "write", role=None, key_id=None)  # the local command line
    for role, action, key in (("app", "read", "k2"), ("app", "read", None), ("developer", "write", "k2"),
                              ("app", "write", "k1")):
        with pytest.raises(PermissionDenied):
            check(hr, action, role=role, key_id=key)


def test_access_roles_are_checked():
    with pytest.raises(InvalidRequest, match="unknown role 'guest'"):
        Access(read=["guest"])


def test_access_round_trips_through_the_registry(kb):
    run(kb.create_collection("hr", access=Access(read=["admin"], write=["admin"], keys=["k9"])))
    found = kb.collection("hr")
    assert found.access.to_dict() == {"read": ["admin"], "write": ["admin"], "keys": ["k9"]}
    with pytest.raises(PermissionDenied):
        CollectionRegistry.check_access(found, "read", role="developer", key_id="k9")


# -- forget ---------------------------------------------------------------------------------


def _disk_holds(paths, needle: bytes) -> list[str]:
    found = []
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        found += [str(f) for f in files if needle in f.read_bytes()]
    return found


def _cached_answers(kb: KnowledgeBase) -> int:
    with kb.store.begin() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(kb.store.tables.answer_cache)).scalar_one()


def test_forget_document_leaves_no_trace(kb, docs, handbook, settings):
    from genfoundry.apps.answer import GroundedAnswerer

    (docs / "locker.md").write_text(SECRET)
    run(kb.ingest("handbook", [docs]))
    secret = doc_named(kb, "locker.md")
    answerer = GroundedAnswerer(kb=kb, hub=kb.hub, settings=settings)
    answer = run(answerer.answer("handbook", "what is the staff locker code zebra-7731?"))  # the fake echoes
    assert "zebra-7731" in answer.text and _cached_answers(kb) == 1
    db = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    places = [settings.vectors_dir, db, db.with_name(db.name + "-wal")]
    assert _disk_holds(places, b"zebra-7731")

    report = run(kb.forget_document(secret.id))

    assert report.documents == [secret.id] and report.chunks == secret.chunks and report.answers == 1
    assert kb.vectors.count("handbook", where={"document_id": secret.id}) == 0
    assert secret.id not in {d.id for d in kb.documents("handbook")}
    assert document_row(kb, secret.id) is None
    assert _cached_answers(kb) == 0
    for mode in ("dense", "bm25", "hybrid"):
        passages = run(kb.retrieve("handbook", "zebra-7731 locker code", RetrievalOptions(mode=mode, limit=50)))
        assert all("zebra" not in p.chunk.text and p.chunk.document_id != secret.id for p in passages)
    assert run(kb.retrieve("handbook", "zebra-7731", RetrievalOptions(mode="bm25"))) == []
    assert _disk_holds(places, b"zebra-7731") == []
    assert_no_duplicates(kb)
    with pytest.raises(NotFound):
        run(kb.forget_document(secret.id))


def test_forget_match_everywhere(kb, docs, settings):
    from genfoundry.apps.answer import GroundedAnswerer

    hr = docs.parent / "hr"
    hr.mkdir()
    (hr / "contacts.md").write_text("# Contacts\n\nThe HR lead is Jane.Doe@Example.com, ask her about leave.\n")
    (hr / "leave.txt").write_text("Annual leave is 25 days for every employee.\n")
    (docs / "support.md").write_text("# Support\n\nRefund questions go to jane.doe@example.com by email.\n")
    run(kb.ingest("handbook", [docs], create=True))
    run(kb.ingest("hr", [hr], create=True))
    keep = {d.id for d in kb.documents("handbook") if Path(d.source).name != "support.md"}
    doomed = {doc_named(kb, "support.md").id, doc_named(kb, "contacts.md", "hr").id}

    answerer = GroundedAnswerer(kb=kb, hub=kb.hub, settings=settings)
    run(answerer.answer("hr", "how many days of annual leave?", options=RetrievalOptions(where={
        "source": str((hr / "leave.txt").resolve())})))  # never shown the address: survives
    run(answerer.answer("handbook", "who handles jane.doe@example.com refund questions?"))
    assert _cached_answers(kb) == 2

    recorder = CallRecorder(kb.store)
    recorder.record(CallRecord(id="c1", endpoint="chat", status="ok", http_status=200, latency_ms=5,
                               request={"messages": [{"role": "user", "content": "Mail JANE.DOE@example.com"}]},
                               response={"text": "done"}))
    recorder.record(CallRecord(id="c2", endpoint="chat", status="ok", http_status=200, latency_ms=5,
                               request={"messages": [{"role": "user", "content": "hello"}]},
                               response={"text": "reply to jane.doe@example.com"}))
    recorder.record(CallRecord(id="c3", endpoint="chat", status="ok", http_status=200, latency_ms=5,
                               request={"messages": [{"role": "user", "content": "hello"}]},
                               response={"text": "hi"}))
    recorder.close()

    report = run(kb.forget_match("  jane.doe@example.com "))

    assert sorted(report.documents) == sorted(doomed)
    assert report.chunks == 2 and report.answers == 1 and report.calls == 2
    assert report.to_dict()["call_logs_erased"] == 2
    assert {d.id for d in kb.documents("handbook")} == keep
    assert [Path(d.source).name for d in kb.documents("hr")] == ["leave.txt"]
    for name in ("handbook", "hr"):
        assert kb.vectors.find_text(name, "jane.doe") == []
        assert_no_duplicates(kb, name)
    calls = kb.store.tables.calls
    with kb.store.begin() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(calls))}
    assert rows["c1"].request is None and rows["c1"].response is None
    assert rows["c2"].request is None and rows["c2"].response is None
    assert rows["c3"].request == {"messages": [{"role": "user", "content": "hello"}]}
    assert _cached_answers(kb) == 1
    db = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    assert _disk_holds([settings.vectors_dir, db, db.with_name(db.name + "-wal")], b"jane.doe") == []


def test_forget_match_erases_non_ascii_call_content(kb, docs):
    """JSON columns hold 'José' as 'Jos\\u00e9'; the name must still be found, in any case."""
    (docs / "team.md").write_text("# Team\n\nAsk JOSÉ GARCÍA about the warehouse.\n")
    run(kb.ingest("handbook", [docs], create=True))
    recorder = CallRecorder(kb.store)
    for n, text in enumerate(["who is josé garcía?", "Who is JOSÉ GARCÍA?", "who is jose garcia?"]):
        recorder.record(CallRecord(id=f"c{n}", endpoint="chat", status="ok", http_status=200, latency_ms=1,
                                   request={"messages": [{"role": "user", "content": text}]}))
    recorder.close()

    report = run(kb.forget_match("José García"))

    assert report.calls == 2
    assert len(report.documents) == 1 and "team.md" not in {Path(d.source).name for d in kb.documents("handbook")}
    calls = kb.store.tables.calls
    with kb.store.begin() as conn:
        kept = {r.id: r.request for r in conn.execute(sa.select(calls.c.id, calls.c.request))}
    assert kept["c0"] is None and kept["c1"] is None
    assert kept["c2"] == {"messages": [{"role": "user", "content": "who is jose garcia?"}]}


def test_forget_match_in_named_collections_only(kb, docs):
    (docs / "support.md").write_text("Write to jane.doe@example.com.\n")
    run(kb.ingest("one", [docs / "support.md"], create=True))
    run(kb.ingest("two", [docs / "support.md"], create=True))
    report = run(kb.forget_match("jane.doe@example.com", collections=["two"], erase_calls=False))
    assert len(report.documents) == 1 and report.calls == 0
    assert len(kb.documents("one")) == 1 and kb.documents("two") == []
    with pytest.raises(CollectionNotFound):
        run(kb.forget_match("jane.doe@example.com", collections=["three"]))


@pytest.mark.parametrize("needle", ["", "ab", "  x  "])
def test_forget_match_refuses_short_needles(kb, needle):
    with pytest.raises(InvalidRequest, match="at least 3 characters"):
        run(kb.forget_match(needle))


def test_forget_match_with_nothing_to_forget(kb, handbook):
    report = run(kb.forget_match("no such text anywhere"))
    assert report.documents == [] and report.chunks == 0
    assert len(kb.documents("handbook")) == 4


# -- the command line -------------------------------------------------------------------------


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    """``cli("search", ...)`` runs ``genfoundry --home HOME search ...`` with fake models only."""
    isolate_cli(monkeypatch)
    runner = CliRunner()
    home = tmp_path / "home"

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, ["--home", str(home), *args], input=input)

    ok(invoke("models", "add", "fake-chat", "memory", "--provider", "fake", "--alias", "default",
              "--option", 'replies=["Returns are accepted within 30 days [1]."]'))
    ok(invoke("models", "add", "fake-embed", "memory", "--provider", "fake", "--capability", "embedding",
              "--alias", "default-embedding"))
    return invoke



def test_cli_ingest_search_ask_forget(cli, docs):
    report = json.loads(ok(cli("ingest", str(docs), "-c", "handbook", "--tag", "policy", "--json")))
    assert len(report["added"]) == 4 and report["chunks"] >= 4 and report["failed"] == []
    again = ok(cli("ingest", str(docs), "-c", "handbook", "--tag", "policy"))
    assert "0 added" in again and "4 unchanged" in again

    lines = ok(cli("search", "returns accepted within 30 days", "-c", "handbook", "--json")).splitlines()
    hits = [json.loads(line) for line in lines]
    assert Path(hits[0]["source"]).name == "returns.md" and 0 < hits[0]["similarity"] <= 1
    only = [json.loads(line) for line in ok(cli("search", "days", "-c", "handbook", "--mode", "bm25",
                                                "--filter", f"source={docs / 'shipping.txt'}",
                                                "--json")).splitlines()]
    assert {h["source"] for h in only} == {str(docs / "shipping.txt")}
    table = ok(cli("search", "returns", "-c", "handbook", "--mmr", "0.7", "--limit", "2"))
    assert "returns.md" in table and "similarity" in table

    answer = json.loads(ok(cli("ask", "Are returns accepted within 30 days?", "-c", "handbook", "--json")))
    assert answer["text"] == "Returns are accepted within 30 days [1]." and answer["found"]
    assert Path(answer["citations"][0]["source"]).name == "returns.md"
    cached = ok(cli("ask", "Are returns accepted within 30 days?", "-c", "handbook"))
    assert "[1]" in cached and "returns.md" in cached and "cached" in cached

    doc_id = next(d["id"] for d in json.loads(ok(cli("collections", "show", "handbook", "--json")))["documents"]
                  if d["source"].endswith("returns.md"))
    forgot = json.loads(ok(cli("forget", "--document", doc_id, "--json")))
    assert forgot["documents"] == [doc_id] and forgot["chunks"] == 2 and forgot["cached_answers"] == 1
    assert "forgot 0 documents" in ok(cli("forget", "--match", "nothing like this"))
    after = [json.loads(line) for line in ok(cli("search", "returns", "-c", "handbook", "--json")).splitlines()]
    assert all(h["document_id"] != doc_id for h in after)


def test_cli_collections(cli, docs):
    assert json.loads(ok(cli("collections", "list", "--json"))) == []
    assert "created collection hr (confidential, 32-d)" in ok(cli(
        "collections", "create", "hr", "--clearance", "confidential", "--description", "People files",
        "--read", "admin", "--read", "developer", "--key", "k1"))
    ok(cli("ingest", str(docs / "returns.md"), "-c", "hr"))
    listed = json.loads(ok(cli("collections", "list", "--json")))
    assert listed == [{"name": "hr", "clearance": "confidential", "documents": 1, "chunks": 2,
                       "embedding_model": "fake-embed", "description": "People files"}]
    shown = json.loads(ok(cli("collections", "show", "hr", "--json")))
    assert shown["access"] == {"read": ["admin", "developer"], "write": ["admin", "developer"], "keys": ["k1"]}
    assert shown["documents"][0]["title"] == "Returns"
    assert "read: admin, developer" in ok(cli("collections", "show", "hr"))

    out = ok(cli("collections", "access", "hr", "--read", "app", "--any-key", "--clearance", "restricted"))
    assert "read app" in out and "clearance restricted" in out
    shown = json.loads(ok(cli("collections", "show", "hr", "--json")))
    assert shown["access"]["keys"] == [] and shown["clearance"] == "restricted"
    assert "unknown role 'boss'" in fails(cli("collections", "access", "hr", "--write", "boss"))

    assert cli("collections", "delete", "hr", input="n\n").exit_code == 1  # typer.Abort
    assert "deleted collection hr" in ok(cli("collections", "delete", "hr", "--yes"))
    assert json.loads(ok(cli("collections", "list", "--json"))) == []


@pytest.mark.parametrize("args, message", [
    (("search", "returns", "-c", "nope"), "collection 'nope' does not exist"),
    (("ask", "why?", "-c", "nope"), "collection 'nope' does not exist"),
    (("collections", "show", "nope"), "collection 'nope' does not exist"),
    (("collections", "access", "nope", "--read", "app"), "collection 'nope' does not exist"),
    (("collections", "delete", "nope", "--yes"), "collection 'nope' does not exist"),
    (("forget", "--document", "abc", "--match", "jane"), "give exactly one of --document ID or --match TEXT"),
    (("forget",), "give exactly one of --document ID or --match TEXT"),
    (("forget", "--document", "abc"), "document 'abc' does not exist"),
    (("forget", "--match", "ab"), "at least 3 characters"),
    (("search", "returns", "-c", "handbook", "--filter", "tags"), "--filter 'tags' must look like field=value"),
    (("search", "returns", "-c", "handbook", "--filter", "colour=red"), "cannot filter on 'colour'"),
    (("ask", "why?", "-c", "handbook", "--filter", "source="), "must look like field=value"),
    (("search", "returns", "-c", "handbook", "--mode", "fuzzy"), "mode 'fuzzy' is not one of"),
    (("collections", "create", "Bad Name"), "collection name 'Bad Name' is not valid"),
    (("ingest", "missing-dir", "-c", "handbook", "--no-create"), "collection 'handbook' does not exist"),
])
def test_cli_errors_are_one_clear_line(cli, args, message):
    if "handbook" in args and "--no-create" not in args:
        ok(cli("collections", "create", "handbook"))
    assert message in fails(cli(*args))


def test_cli_ingest_of_only_bad_files_fails(cli, tmp_path):
    (tmp_path / "empty.md").write_bytes(b"")
    result = cli("ingest", str(tmp_path / "empty.md"), "-c", "handbook")
    assert result.exit_code == 1 and "empty" in result.stdout
