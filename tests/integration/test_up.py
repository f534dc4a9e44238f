"""`genfoundry up`, the README's start command, on a fresh home: it answers, prints its figures and a key once."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from genfoundry.core.store import Store
from genfoundry.gateway.keys import list_keys
from genfoundry.testing.servers import free_port

pytestmark = pytest.mark.integration


def _up(home) -> str:
    env = {**os.environ, "GENFOUNDRY_HOME": str(home), "COLUMNS": "200"}
    env.pop("GENFOUNDRY_VAULT_KEY", None)  # as on a fresh machine: `up` makes the key file
    done = subprocess.run(
        [sys.executable, "-m", "genfoundry.cli", "up", "--port", str(free_port()), "--exit-after-demo"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_up_shows_the_platform_working(tmp_path):
    first = _up(tmp_path)
    assert re.search(r"^gf-[0-9a-f]{12}-\S+$", first, re.M), "the admin key is printed once"
    assert re.search(r"< .*Paris", first)
    assert re.search(r"tokens: \d+ in, \d+ out · latency \d+ ms \(first token \d+ ms\) · cost \$0\.\d+", first)
    assert "curl http://127.0.0.1:" in first and "from openai import OpenAI" in first
    assert "refused: 400 guard_blocked (input.injection)" in first
    assert "An agent (agent:support" in first and re.search(r"^  1\. lookup_order ", first, re.M)
    assert "trace: genfoundry traces show " in first and "/console   sign in with the key" in first

    assert "Created the vault key" in first and (tmp_path / "vault.key").stat().st_mode & 0o777 == 0o600

    second = _up(tmp_path)
    assert "Created the vault key" not in second
    assert not re.search(r"^gf-[0-9a-f]{12}-\S+$", second, re.M), "no second admin key"
    assert re.search(r"< .*Paris", second)
    store = Store.open(f"sqlite:///{tmp_path / 'genfoundry.db'}")
    active = list_keys(store)
    store.close()
    assert [k.role for k in active] == ["admin"], "the demo key of the second run is revoked"
