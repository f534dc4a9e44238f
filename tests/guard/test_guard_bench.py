"""The guard's benchmark parts on small inputs (the figures themselves come from `genfoundry bench guard`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genfoundry.core.settings import load_settings
from genfoundry.bench.guard_latency import latency_prompts, run_guard_latency
from genfoundry.bench.injection import run_injection_bench
from genfoundry.guard.datasets import benign_sets
from genfoundry.bench.pii import _labels, evaluate_tags, run_pii_bench

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "pii").is_dir(), reason="../shared/data is not beside the checkout")


def test_token_level_scoring():
    text = "Ada Lovelace lives at 12 Oak Street"
    gold = _labels(text, [("PERSON", 0, 12), ("STREET_ADDRESS", 22, 35)])
    assert gold == ["PERSON", "PERSON", "O", "O", "LOCATION", "LOCATION", "LOCATION"]
    pred = _labels(text, [("PERSON", 0, 3), ("ORGANIZATION", 22, 24)])
    result = evaluate_tags([(gold, pred)])
    assert result["per_type"]["PERSON"] == {"precision": 1.0, "recall": 0.5, "f2": 0.5556, "tp": 1, "fp": 0, "fn": 1}
    assert result["overall"]["fp"] == 1 and result["overall"]["fn"] == 4


@needs_data
def test_pii_bench_runs_both_detectors():
    result = run_pii_bench(DATA / "pii" / "presidio_synth_dataset_v2.json", limit=25)
    assert result["sentences"] == 25
    for side in ("ours", "presidio_default"):
        overall = result[side]["overall"]
        # The figures follow from the counts they report (not just "some number in 0..1").
        p = overall["tp"] / (overall["tp"] + overall["fp"]) if overall["tp"] + overall["fp"] else 0.0
        r = overall["tp"] / (overall["tp"] + overall["fn"]) if overall["tp"] + overall["fn"] else 0.0
        f2 = 5 * p * r / (4 * p + r) if p + r else 0.0
        assert overall["f2"] == pytest.approx(f2, abs=1e-3) and overall["tp"] > 0
        assert result[side]["latency_ms_p50"] > 0
    # Both detectors find most of the typed PII in 25 sentences; ours at least as much (its reason to be).
    assert result["ours"]["overall"]["f2"] >= result["presidio_default"]["overall"]["f2"] - 0.05


@needs_data
def test_injection_bench_reports_every_set():
    sets = benign_sets(DATA)
    assert len(sets["cranfield_queries"]) >= 225 and len(sets["everyday_questions"]) > 100
    result = run_injection_bench(DATA)
    assert result["attacks"] == 35 and set(result["combined"]["fpr"]) == {*sets, "all"}
    assert 0.5 <= result["threshold"] < 1
    # The shipped detector finds most of the 35 attacks and flags few benign texts (docs: 0.914 / 0.0042).
    assert result["combined"]["tpr"] >= 0.8 and result["combined"]["fpr"]["all"] <= 0.02


def test_latency_bench_on_a_few_prompts(tmp_path):
    prompts = latency_prompts(3)
    assert len(set(prompts)) == 3
    settings = load_settings(home=tmp_path, environ={})
    settings.ensure_home()
    result = run_guard_latency(settings, runs=4, warmup=1)
    assert result["rails"]["local"]["n"] == 4 and result["gateway"]["guard_on"]["n"] == 4
    assert result["rails"]["local"]["blocked"] == 0
