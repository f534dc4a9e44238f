"""Drift statistics, the request and golden-prompt checks, and the synthetic-shift benchmark (fakes only)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import zlib

import numpy as np
import pytest

from genfoundry.core.errors import InvalidRequest, NotFound
from genfoundry.core.store import utcnow
from genfoundry.observe.alerts import list_alerts
from genfoundry.observe.drift import answer_similarity, golden_verdict, mmd_test, topic_shift
from genfoundry.bench.drift import run_drift_bench
from genfoundry.observe.monitor import check_golden, list_drift_runs, load_golden, record_golden, run_request_drift


def _gauss(seed, n=60, d=16, shift=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x[:, 0] += shift
    return x


def test_mmd_false_alarms_stay_near_alpha_on_unshifted_windows():
    p_values = [mmd_test(_gauss(s), _gauss(1000 + s), permutations=200, seed=s).p_value for s in range(40)]
    assert all(0 < p <= 1 for p in p_values)
    assert sum(p < 0.05 for p in p_values) / len(p_values) <= 0.15


def test_mmd_detects_a_shifted_mean():
    result = mmd_test(_gauss(1), _gauss(2, shift=1.5), permutations=300)
    assert result.p_value < 0.01 and result.statistic > 0
    assert result.n_baseline == 60 and result.permutations == 300


@pytest.mark.parametrize("baseline,recent,message", [
    (np.zeros((3, 4)), np.zeros((10, 4)), "at least 5 requests"),
    (np.zeros((10, 4)), np.zeros((10, 5)), "differ in dimension"),
    (np.full((10, 4), np.nan), np.zeros((10, 4)), "NaN"),
])
def test_mmd_bad_input(baseline, recent, message):
    with pytest.raises(ValueError, match=message):
        mmd_test(baseline, recent)


def _texts(prefix, n):
    return [f"{prefix} question number {i}" for i in range(n)]


def test_a_topic_that_appears_is_reported_as_new():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    base = np.vstack([centres[i % 2] + rng.normal(size=16) * 0.3 for i in range(80)])
    recent = np.vstack([centres[i % 2] + rng.normal(size=16) * 0.3 for i in range(56)]
                       + [centres[2] + rng.normal(size=16) * 0.3 for _ in range(24)])
    base_texts = [f"wing lift airfoil {i}" if i % 2 == 0 else f"heat boundary layer {i}" for i in range(80)]
    recent_texts = base_texts[:56] + [f"refund invoice payment {i}" for i in range(24)]
    changes = topic_shift(base, recent, base_texts, recent_texts, clusters=3)
    assert changes[0].status == "new" and changes[0].baseline_share == 0
    assert {"refund", "invoice", "payment"} & set(changes[0].terms)
    assert len(changes[0].recent_indices) == 24 and min(changes[0].recent_indices) == 56
    stable = topic_shift(base, base[::-1].copy(), base_texts, base_texts[::-1], clusters=3)
    assert not [t for t in stable if t.status in ("new", "grown")]


def test_golden_helpers():
    assert answer_similarity(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == pytest.approx(1.0)
    assert golden_verdict(0.5, exact=True) == "same"
    assert golden_verdict(0.95, exact=False) == "same" and golden_verdict(0.5, exact=False) == "changed"


def _add_calls(store, texts, at):
    with store.begin() as conn:
        conn.execute(store.tables.calls.insert(), [
            {"id": f"c-{at.timestamp()}-{i}", "created_at": at, "endpoint": "chat", "status": "ok", "http_status": 200,
             "latency_ms": 1.0, "stream": False, "prompt_tokens": 1, "completion_tokens": 1,
             "request": {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": t}]}}
            for i, t in enumerate(texts)])


def test_request_drift_on_the_call_log(store, hub):
    now = utcnow()
    recent, baseline = (now - dt.timedelta(hours=1), now), (now - dt.timedelta(days=2), now - dt.timedelta(hours=1))
    aero = [f"lift drag wing airfoil mach {w}" for w in ("subsonic", "supersonic", "transonic", "hypersonic")] * 10
    _add_calls(store, aero, now - dt.timedelta(days=1))
    refunds = [f"refund my invoice payment card {w}" for w in ("today", "please", "now", "again")] * 5
    _add_calls(store, aero[:20] + refunds, now - dt.timedelta(minutes=5))
    seen = []
    result = asyncio.run(run_request_drift(store, hub, recent=recent, baseline=baseline, alpha=0.01,
                                           permutations=200, on_alert=seen.append))
    assert result["n_baseline"] == 40 and result["n_recent"] == 40
    assert result["mmd"]["p_value"] < 0.01 and result["drifted"]
    assert any(t["status"] == "new" and {"refund", "invoice", "payment"} & set(t["terms"]) for t in result["topics"])
    kinds = {a["kind"] for a in list_alerts(store, kind="drift.")}
    assert kinds == {"drift.embedding", "drift.topic"} and len(seen) >= 2
    assert list_drift_runs(store, kind="requests")[0]["drifted"] is True


def test_request_drift_needs_enough_requests(store, hub):
    now = utcnow()
    _add_calls(store, ["only one"], now - dt.timedelta(minutes=1))
    with pytest.raises(InvalidRequest, match="holds 0 requests with text; drift needs at least 5"):
        asyncio.run(run_request_drift(store, hub, recent=(now - dt.timedelta(hours=1), now),
                                      baseline=(now - dt.timedelta(days=1), now - dt.timedelta(hours=1))))
    with pytest.raises(InvalidRequest, match="baseline window must end before"):
        asyncio.run(run_request_drift(store, hub, recent=(now - dt.timedelta(hours=1), now),
                                      baseline=(now - dt.timedelta(days=1), now)))


def test_golden_prompts_catch_a_changed_model(store, hub, tmp_path):
    prompts = tmp_path / "golden.jsonl"
    prompts.write_text('{"id": "a", "prompt": "what is two plus two"}\n{"id": "b", "prompt": "name a colour"}\n')
    with pytest.raises(NotFound, match="record them first"):
        asyncio.run(check_golden(store, hub, model="default"))
    assert asyncio.run(record_golden(store, hub, model="default", prompts=prompts))["prompts"] == 2
    same = asyncio.run(check_golden(store, hub, model="default"))
    assert not same["drifted"] and [i["verdict"] for i in same["items"]] == ["same", "same"]
    # The provider silently swaps its model: the fake now answers differently.
    model = asyncio.run(hub.load_chat("default"))
    model.replies.extend(["4", "completely unrelated text about shipping containers"])
    changed = asyncio.run(check_golden(store, hub, model="default"))
    assert changed["drifted"] and changed["changed"] == 2
    assert list_alerts(store, kind="drift.golden")[0]["severity"] == "critical"


def test_golden_prompt_files_are_checked(tmp_path):
    assert len(load_golden()) == 10  # the built-in set
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "ok"}\nnot json\n')
    with pytest.raises(InvalidRequest, match="line 2: not JSON"):
        load_golden(bad)
    bad.write_text('{"id": "a"}\n')
    with pytest.raises(InvalidRequest, match="needs a 'prompt' string"):
        load_golden(bad)


def _hashed(texts):
    vectors = np.zeros((len(texts), 64))
    for row, text in enumerate(texts):
        for word in text.lower().split():
            vectors[row, zlib.crc32(word.encode()) % 64] += 1
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def test_drift_bench_on_a_tiny_data_folder(tmp_path):
    cranfield = tmp_path / "retrieval" / "cranfield"
    cranfield.mkdir(parents=True)
    cranfield.joinpath("cran.qry").write_text("".join(
        f".I {i}\n.W\nwhat is the lift of a {w} wing at mach {i}\n" for i, w in
        enumerate(["swept", "delta", "thin", "thick", "flexible"] * 14)))
    youtube = tmp_path / "weak_supervision" / "youtube"
    youtube.mkdir(parents=True)
    for split in ("train", "valid"):
        youtube.joinpath(f"{split}.json").write_text("{}")
    youtube.joinpath("test.json").write_text(json.dumps({
        str(i): {"data": {"text": f"check out my channel subscribe love this song {i}"}, "label": 1}
        for i in range(40)}))
    result = run_drift_bench(tmp_path, window=20, trials=5, rates=(0.4,), permutations=100, encode=_hashed)
    assert set(result["mmd"]["detection_rate"]) == {"0.4"}
    assert result["mmd"]["detection_rate"]["0.4"] >= result["mmd"]["false_alarm_rate"]
    assert result["mmd"]["detection_rate"]["0.4"] == 1.0
    assert result["setup"]["new_topic"]["texts"] == 40
