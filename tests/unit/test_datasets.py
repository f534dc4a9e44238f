"""Datasets: versions, hashes, splits, lineage, bad rows by line, forget."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genfoundry.core.audit import verify as verify_chain
from genfoundry.core.errors import InvalidRequest, NotFound
from genfoundry.data.datasets import Datasets, SplitSpec, row_id


@pytest.fixture()
def ds(settings, store):
    return Datasets(settings, store)


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_import_jsonl_versions_hash_and_lineage(ds, tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [{"text": f"row {i}", "n": i} for i in range(50)])
    v1 = ds.import_file("tickets", f, required=["text"])
    assert (v1.number, v1.rows, v1.parent) == (1, 50, None)
    assert v1.lineage["source"] == "file" and v1.lineage["file"] == "t.jsonl" and len(v1.lineage["sha256"]) == 64
    assert ds.verify("tickets")
    f2 = write_jsonl(tmp_path / "t2.jsonl", [{"text": f"row {i}", "n": i} for i in range(55)])
    v2 = ds.import_file("tickets", f2)
    assert (v2.number, v2.parent) == (2, 1)
    assert v2.content_hash != v1.content_hash
    # The same rows have the same ids and splits in both versions (ids hash the content).
    a = {r["_id"]: r["split"] for r in ds.rows("tickets", 1)}
    b = {r["_id"]: r["split"] for r in ds.rows("tickets", 2)}
    assert all(b[k] == s for k, s in a.items())
    d = ds.diff("tickets", 1, 2)
    assert (d.added, d.removed, d.unchanged) == (5, 0, 50)
    assert {r["text"] for r in d.added_rows} <= {f"row {i}" for i in range(50, 55)}


def test_same_content_same_hash_and_splits_are_seeded(ds, tmp_path):
    rows = [{"text": f"t{i}"} for i in range(400)]
    v1 = ds.add_version("a", rows, lineage={"source": "test"})
    v2 = ds.add_version("b", rows, lineage={"source": "test"})
    assert v1.content_hash == v2.content_hash
    counts = v1.splits["counts"]
    assert sum(counts.values()) == 400 and 280 <= counts["train"] <= 360 and counts["dev"] > 15 and counts["test"] > 15
    v3 = ds.add_version("c", rows, lineage={"source": "test"}, splits=SplitSpec(seed=7))
    assert v3.content_hash != v1.content_hash  # another seed, other splits
    assert v3.splits["seed"] == 7


def test_given_split_column_is_kept_and_checked(ds, tmp_path):
    v = ds.add_version("given", [{"text": "a", "split": "test"}, {"text": "b", "split": "dev"}], lineage={"source": "t"})
    assert {r["text"]: r["split"] for r in ds.rows("given")} == {"a": "test", "b": "dev"}
    assert v.splits["given"] is True
    with pytest.raises(InvalidRequest, match="line 2: split 'validation'"):
        ds.import_file("x", write_jsonl(tmp_path / "s.jsonl", [{"text": "a"}, {"text": "b", "split": "validation"}]))


def test_bad_rows_are_reported_by_line_and_nothing_is_imported(ds, tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok", "n": 1}, "{not json", json.dumps([1, 2]),
                                             {"n": 2}, {"text": "x", "n": "two"}, {"text": "fine", "n": 3}])
    with pytest.raises(InvalidRequest) as err:
        ds.import_file("bad", f, required=["text"])
    message = str(err.value)
    assert "4 bad rows" in message
    for expected in ("line 2: not valid JSON", "line 3: a record must be an object", "line 4: missing 'text'",
                     "line 5: column 'n' is a string here but a number on line 1"):
        assert expected in message
    with pytest.raises(NotFound):
        ds.get("bad")


def test_csv_and_parquet_import_and_export_round_trip(ds, tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("text,label\nhello,spam\nworld,ham\n")
    ds.import_file("csvset", f, required=["text", "label"])
    assert sorted(r["label"] for r in ds.rows("csvset")) == ["ham", "spam"]
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,ham\ntoo,many,fields\n")
    with pytest.raises(InvalidRequest, match="line 3: more fields"):
        ds.import_file("badcsv", bad)
    out = tmp_path / "out.parquet"
    assert ds.export("csvset", out) == 2
    ds.import_file("again", out)
    assert {r["_id"] for r in ds.rows("again")} == {r["_id"] for r in ds.rows("csvset")}
    for fmt in ("jsonl", "csv"):
        path = tmp_path / f"o.{fmt}"
        assert ds.export("csvset", path) == 2 and "hello" in path.read_text()


def test_corrupt_parquet_is_a_clear_error(ds, tmp_path):
    f = tmp_path / "x.parquet"
    f.write_bytes(b"PAR1 not really")
    with pytest.raises(InvalidRequest, match="not a readable Parquet"):
        ds.import_file("x", f)


def test_duplicate_rows_keep_distinct_stable_ids(ds):
    v = ds.add_version("dup", [{"text": "same"}, {"text": "same"}, {"text": "other"}], lineage={"source": "t"})
    ids = [r["_id"] for r in ds.rows("dup")]
    assert v.rows == 3 and len(set(ids)) == 3
    assert ids[0] == row_id({"text": "same"})


def test_rows_by_split_offset_limit_and_unknown(ds):
    ds.add_version("p", [{"text": str(i), "split": "train" if i % 2 else "test"} for i in range(10)],
                   lineage={"source": "t"})
    assert [r["text"] for r in ds.rows("p", split="test")] == ["0", "2", "4", "6", "8"]
    assert [r["text"] for r in ds.rows("p", offset=2, limit=3)] == ["2", "3", "4"]
    with pytest.raises(InvalidRequest):
        ds.rows("p", split="validation")
    with pytest.raises(NotFound, match="no version 9"):
        ds.rows("p", 9)
    with pytest.raises(NotFound, match="no dataset named"):
        ds.rows("nope")


def test_forget_removes_text_from_every_version_and_audits_a_fingerprint(ds, store):
    ds.add_version("f", [{"text": "Call Alice Smith"}, {"text": "nothing here"}], lineage={"source": "t"})
    ds.add_version("f", [{"text": "alice smith again", "meta": {"who": "x"}}, {"text": "keep"}], lineage={"source": "t"})
    ds.add_version("g", [{"text": "other", "messages": [{"role": "user", "content": "I am ALICE SMITH"}]},
                         {"text": "stay"}], lineage={"source": "t"})
    removed = ds.forget_match("alice smith")
    assert removed == {"f@1": 1, "f@2": 1, "g@1": 1}
    for name, number in (("f", 1), ("f", 2), ("g", 1)):
        rows = ds.rows(name, number)
        assert rows and all("alice" not in json.dumps(r).lower() for r in rows)
        assert ds.verify(name, number)  # the hash follows the rows
        assert ds.version(name, number).forgotten_rows == 1
    raw = b"".join(p.read_bytes() for p in (ds.root).rglob("*.parquet"))
    assert b"Alice" not in raw and b"ALICE" not in raw
    with store.begin() as conn:
        entries = conn.execute(store.tables.audit_log.select()).mappings().all()
    assert not any("alice" in json.dumps(dict(e), default=str).lower() for e in entries)
    assert verify_chain(store).ok
    with pytest.raises(InvalidRequest):
        ds.forget_match("ab")


def test_forget_can_empty_a_version(ds):
    ds.add_version("only", [{"text": "secret code 1234"}], lineage={"source": "t"})
    assert ds.forget_match("secret code") == {"only@1": 1}
    assert ds.rows("only") == [] and ds.version("only").rows == 0


def test_delete_removes_files_and_rows(ds):
    ds.add_version("d", [{"text": "x"}], lineage={"source": "t"})
    ds.add_version("d", [{"text": "y"}], lineage={"source": "t"})
    assert ds.delete("d") == 2
    assert not (ds.root / "d").exists()
    with pytest.raises(NotFound):
        ds.get("d")


def test_names_sensitivity_and_empty_are_checked(ds):
    with pytest.raises(InvalidRequest, match="dataset name"):
        ds.add_version("../etc", [{"a": 1}], lineage={})
    with pytest.raises(InvalidRequest, match="sensitivity"):
        ds.add_version("s", [{"a": 1}], lineage={}, sensitivity="secret")
    with pytest.raises(InvalidRequest, match="at least one row"):
        ds.add_version("s", [], lineage={})
    with pytest.raises(InvalidRequest, match="add up"):
        SplitSpec(fractions={"train": 0.5, "test": 0.1})


def test_versions_are_immutable_files_and_a_tampered_one_fails_verify(ds):
    ds.add_version("t", [{"text": "x"}, {"text": "y"}], lineage={"source": "t"})
    path = next((ds.root / "t").glob("*.parquet"))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    pq.write_table(pa.Table.from_pylist([{"_id": "zz", "split": "train", "text": "changed"}]), path)
    assert not ds.verify("t")


def _call(store, call_id, *, request, text, model="fake-chat", status="ok", endpoint="chat.completions"):
    import datetime as dt

    with store.begin() as conn:
        conn.execute(store.tables.calls.insert().values(
            id=call_id, created_at=dt.datetime(2026, 11, 20, 12), endpoint=endpoint, model=model,
            resolved_model=model, status=status, http_status=200 if status == "ok" else 500, latency_ms=5.0,
            request=request, response={"text": text, "finish_reason": "stop"} if text is not None else None))


def test_from_calls_takes_logged_successful_calls_with_a_filter(ds, store):
    import datetime as dt

    _call(store, "c1", request={"messages": [{"role": "user", "content": "hi"}]}, text="hello")
    _call(store, "c2", request={"prompt": "2+2="}, text="4", endpoint="completions")
    _call(store, "c3", request={"messages": [{"role": "user", "content": "x"}]}, text=None, status="error")
    _call(store, "c4", request=None, text=None)  # content not logged
    _call(store, "c5", request={"messages": [{"role": "user", "content": "y"}]}, text="z", model="other")
    v = ds.from_calls("traffic", model="fake-chat")
    rows = {r["call_id"]: r for r in ds.rows("traffic")}
    assert set(rows) == {"c1", "c2"} and v.lineage["source"] == "calls" and v.lineage["filter"]["model"] == "fake-chat"
    assert rows["c1"]["messages"][-1] == {"role": "assistant", "content": "hello"} and rows["c1"]["prompt"] == "hi"
    assert rows["c2"]["completion"] == "4"
    assert ds.get("traffic").sensitivity == "confidential"
    with pytest.raises(InvalidRequest, match="no logged call"):
        ds.from_calls("none", since=dt.datetime(2027, 1, 1))


def test_from_feedback_labels_rows_and_keeps_corrections(ds, store):
    from genfoundry.observe.feedback import add_feedback

    _call(store, "c1", request={"messages": [{"role": "user", "content": "refund?"}]}, text="no")
    _call(store, "c2", request={"messages": [{"role": "user", "content": "hours?"}]}, text="9 to 5")
    add_feedback(store, response_id="c1", rating=1, correction="Yes, within 30 days.")
    add_feedback(store, response_id="c2", rating=5)
    ds.from_feedback("rated")
    rows = {r["response_id"]: r for r in ds.rows("rated")}
    assert rows["c1"]["label"] == "bad" and rows["c1"]["correction"] == "Yes, within 30 days."
    assert rows["c2"]["label"] == "good" and rows["c2"].get("correction") is None
    assert ds.version("rated").lineage == {"source": "feedback", "since": None, "min_rating": 4, "feedback": 2}
