"""The call log: records written in the background, queried with filters."""

from __future__ import annotations

import datetime as dt

import pytest

from genfoundry.observe.calls import CallRecord, CallRecorder, list_calls, tokens_used_since

T0 = dt.datetime(2026, 11, 1, 12, 0, 0)


def call(id: str, *, minutes: int = 0, **fields) -> CallRecord:
    fields.setdefault("status", "ok")
    fields.setdefault("http_status", 200)
    return CallRecord(id=id, endpoint="chat", latency_ms=12.5,
                      created_at=T0 + dt.timedelta(minutes=minutes), **fields)


@pytest.fixture()
def recorder(store):
    recorder = CallRecorder(store)
    yield recorder
    recorder.close()


@pytest.fixture()
def logged(store, recorder):
    """Five calls, one minute apart: c0 (oldest) to c4 (newest)."""
    recorder.record(call("c0", minutes=0, model="default", resolved_model="fake-chat", key_id="k1"))
    recorder.record(call("c1", minutes=1, model="fake-chat", key_id="k2"))
    recorder.record(call("c2", minutes=2, model="fake-embed", key_id="k1"))
    recorder.record(call("c3", minutes=3, model="fake-chat", status="error", http_status=502,
                         error_type="provider_error", error_message="boom"))
    recorder.record(call("c4", minutes=4, model="fake-chat", status="cancelled", http_status=499))
    recorder.flush()
    return store


def ids(rows) -> list[str]:
    return [r["id"] for r in rows]


def test_records_are_written(store, recorder):
    recorder.record(call("chatcmpl-1", model="fake-chat", prompt_tokens=3, completion_tokens=4,
                         ttft_ms=5.0, cost_usd=0.01, request={"messages": [{"role": "user", "content": "hi"}]},
                         response={"text": "hello"}))
    recorder.flush()
    [row] = list_calls(store)
    assert row["id"] == "chatcmpl-1" and row["model"] == "fake-chat"
    assert (row["prompt_tokens"], row["completion_tokens"], row["ttft_ms"], row["cost_usd"]) == (3, 4, 5.0, 0.01)
    assert row["request"]["messages"][0]["content"] == "hi"
    assert row["response"] == {"text": "hello"}
    assert row["created_at"] == T0
    assert recorder.written == 1


def test_log_content_false_keeps_only_metadata(store):
    recorder = CallRecorder(store, log_content=False)
    try:
        recorder.record(call("c", model="fake-chat", prompt_tokens=3, request={"secret": "x"},
                             response={"text": "y"}))
        recorder.flush()
    finally:
        recorder.close()
    [row] = list_calls(store)
    assert row["request"] is None and row["response"] is None
    assert row["prompt_tokens"] == 3 and row["model"] == "fake-chat"


def test_newest_first_with_limit(logged):
    assert ids(list_calls(logged)) == ["c4", "c3", "c2", "c1", "c0"]
    assert ids(list_calls(logged, limit=2)) == ["c4", "c3"]


def test_filter_by_model_matches_requested_or_resolved_name(logged):
    assert ids(list_calls(logged, model="fake-chat")) == ["c4", "c3", "c1", "c0"]
    assert ids(list_calls(logged, model="default")) == ["c0"]
    assert list_calls(logged, model="nothing") == []


def test_filter_by_status_and_key(logged):
    [error] = list_calls(logged, status="error")
    assert error["id"] == "c3" and error["http_status"] == 502 and error["error_message"] == "boom"
    assert ids(list_calls(logged, key_id="k1")) == ["c2", "c0"]


def test_filter_by_time(logged):
    assert ids(list_calls(logged, since=T0 + dt.timedelta(minutes=3))) == ["c4", "c3"]
    assert ids(list_calls(logged, until=T0 + dt.timedelta(minutes=1))) == ["c0"]  # until is exclusive
    assert ids(list_calls(logged, since=T0 + dt.timedelta(minutes=1),
                          until=T0 + dt.timedelta(minutes=3))) == ["c2", "c1"]


def test_filters_combine(logged):
    assert ids(list_calls(logged, model="fake-chat", status="ok")) == ["c1", "c0"]


def test_close_flushes_pending_records(store):
    recorder = CallRecorder(store, batch=2)
    for i in range(7):
        recorder.record(call(f"c{i}", minutes=i))
    recorder.close()
    assert len(list_calls(store, limit=100)) == 7
    assert recorder.written == 7


def test_failed_write_does_not_stop_the_recorder(store, recorder):
    recorder.record(call("dup"))
    recorder.record(call("dup"))  # same primary key: this batch fails
    recorder.flush()
    recorder.record(call("after"))
    recorder.flush()
    assert "after" in ids(list_calls(store))


def test_tokens_used_since(logged, store, recorder):
    recorder.record(call("t1", minutes=10, key_id="k9", prompt_tokens=5, completion_tokens=7))
    recorder.record(call("t2", minutes=20, key_id="k9", prompt_tokens=100, completion_tokens=0))
    recorder.flush()
    assert tokens_used_since(store, "k9", T0) == 112
    assert tokens_used_since(store, "k9", T0 + dt.timedelta(minutes=15)) == 100
    assert tokens_used_since(store, "nobody", T0) == 0
