"""A labeling run killed mid-way keeps the votes it stored; the next run computes only the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from genfoundry.core.store import Store

pytestmark = pytest.mark.integration

SLOW_LF = '''
import time

def slow(row):
    time.sleep(0.01)
    return "spam" if "buy" in row["text"] else None
'''


def test_a_killed_label_run_resumes_from_its_stored_votes(tmp_path):
    home = tmp_path / "home"
    (tmp_path / "slowlfs.py").write_text(SLOW_LF)
    env = {**os.environ, "GENFOUNDRY_HOME": str(home), "PYTHONPATH": f"{tmp_path}{os.pathsep}"
           + os.environ.get("PYTHONPATH", "")}
    gf = [sys.executable, "-m", "genfoundry.cli"]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": f"{'buy now' if i % 3 == 0 else 'nice video'} {i}"}) + "\n"
                            for i in range(1500)))
    subprocess.run([*gf, "data", "import", str(data), "--name", "rows"], env=env, check=True, capture_output=True)
    spec = tmp_path / "task.yaml"
    spec.write_text(json.dumps({"name": "t", "dataset": "rows", "labels": ["ham", "spam"],
                                "label_model": {"features": "none"},
                                "lfs": [{"name": "slow", "type": "python", "function": "slowlfs:slow"},
                                        {"name": "nice", "type": "keyword", "label": "ham", "keywords": ["nice"]}]}))
    subprocess.run([*gf, "label", "create", str(spec)], env=env, check=True, capture_output=True)

    def stored() -> int:
        store = Store.open(f"sqlite:///{home / 'genfoundry.db'}")
        try:
            with store.begin() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(store.tables.lf_votes)).scalar()
        finally:
            store.close()

    run = subprocess.Popen([*gf, "label", "run", "t", "--json"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while stored() < 512 and time.monotonic() < deadline:  # two batches of 256 written
        time.sleep(0.5)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    kept = stored()
    assert 512 <= kept < 1500, kept

    done = subprocess.run([*gf, "label", "run", "t", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["votes_computed"] == 3000 - kept  # the keyword LF (1500) and the slow LF's remaining rows
    slow = next(lf for lf in report["lfs"] if lf["name"] == "slow")
    assert abs(slow["coverage"] - 500 / 1500) < 1e-9
