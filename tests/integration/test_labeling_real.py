"""Labeling with the real built-in model as a prompt labeling function, through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from genfoundry.bench.data import LLM_TEMPLATE
from genfoundry.core.store import Store

pytestmark = pytest.mark.integration


def gf(home, *args, check=True):
    env = {**os.environ, "GENFOUNDRY_HOME": str(home), "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "genfoundry.cli", *args], capture_output=True, text=True,
                            env=env, timeout=900)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_prompt_lf_on_the_builtin_model_votes_through_the_guarded_path_and_is_cached(tmp_path):
    home = tmp_path / "home"
    rows = ["Subscribe to my channel for free gifts!!!", "Check out my new video http://spam.example",
            "This song is beautiful, her voice is amazing", "I love this music so much",
            "Visit my page and win money", "The guitar solo at 2:30 is great"]
    data = tmp_path / "c.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    gf(home, "data", "import", str(data), "--name", "comments")
    spec = tmp_path / "task.yaml"
    spec.write_text(json.dumps({
        "name": "spam", "dataset": "comments", "labels": ["ham", "spam"],
        "label_model": {"features": "none"},
        "lfs": [{"name": "subscribe", "type": "keyword", "label": "spam", "keywords": ["subscribe", "check out"]},
                {"name": "llm", "type": "prompt", "model": "default", "max_tokens": 3,
                 "template": LLM_TEMPLATE,
                 "answers": {"spam": "spam", "ham": "ham"}}]}))
    gf(home, "label", "create", str(spec))
    report = json.loads(gf(home, "label", "run", "spam", "--json").stdout)
    assert report["votes_computed"] == 12 and report["output"] == "spam-labels@1"
    llm = next(lf for lf in report["lfs"] if lf["name"] == "llm")
    assert llm.get("error") is None and llm["errors"] == 0
    assert llm["coverage"] >= 0.5  # the base model, shown examples, answers with a label for most rows
    store = Store.open(f"sqlite:///{home / 'genfoundry.db'}")
    try:
        with store.begin() as conn:
            calls = conn.execute(store.tables.calls.select().where(store.tables.calls.c.endpoint == "labeling")).all()
    finally:
        store.close()
    assert len(calls) == 6 and all(c.status == "ok" and c.completion_tokens >= 1 for c in calls)
    again = json.loads(gf(home, "label", "run", "spam", "--json").stdout)
    assert again["votes_computed"] == 0  # every vote came from the cache


def test_a_model_not_cleared_for_the_dataset_is_refused_before_any_call(tmp_path):
    home = tmp_path / "home"
    data = tmp_path / "c.jsonl"
    data.write_text('{"text": "patient record 1"}\n{"text": "patient record 2"}\n')
    gf(home, "data", "import", str(data), "--name", "records", "--sensitivity", "restricted")
    gf(home, "models", "add", "outside", "http://127.0.0.1:9/v1", "--provider", "openai_compat",
       "--clearance", "public")
    spec = tmp_path / "task.yaml"
    spec.write_text(json.dumps({"name": "t", "dataset": "records", "labels": ["a", "b"],
                                "lfs": [{"name": "ext", "type": "prompt", "model": "outside", "template": "{text}",
                                         "answers": {"a": "a"}}]}))
    gf(home, "label", "create", str(spec))
    result = gf(home, "label", "run", "t", check=False)
    assert result.returncode != 0 and "cleared for public" in result.stdout + result.stderr
