"""`genfoundry serve` on a fresh home, as a user who deploys with `serve` (not `up`) meets it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from genfoundry.core.store import Store
from genfoundry.guard.vault import Vault
from genfoundry.testing.servers import free_port

pytestmark = pytest.mark.integration


def _env(home) -> dict[str, str]:
    env = {**os.environ, "GENFOUNDRY_HOME": str(home), "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    env.pop("GENFOUNDRY_VAULT_KEY", None)  # a fresh machine: no key anywhere
    return env


def test_serve_on_a_fresh_home_makes_the_vault_key_and_becomes_ready(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "genfoundry.cli", "serve", "--port", str(port)],
                            env=_env(home), stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        statuses = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2)
                ready = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            assert live.status_code == 200
            statuses.append(ready.json()["status"])
            if ready.status_code == 200:
                break
            time.sleep(0.1)
        assert statuses and statuses[-1] == "ok", statuses
        assert set(statuses) <= {"starting", "ok"}
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert set(health["models_loaded"]) == {"gemma-3-270m", "all-minilm-l6-v2"}
        key = home / "vault.key"
        assert key.exists() and key.stat().st_mode & 0o777 == 0o600
        assert home.stat().st_mode & 0o777 == 0o700
        assert "Created the vault key" in (tmp_path / "serve.log").read_text()
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_refuses_a_vault_whose_key_is_gone(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    store = Store.open(f"sqlite:///{home / 'genfoundry.db'}")
    Vault(store, os.urandom(32)).tokenize("PERSON", "Ada Lovelace", scope="call-1")
    store.close()  # the key that made it is lost
    done = subprocess.run([sys.executable, "-m", "genfoundry.cli", "serve", "--port", str(free_port()), "--lazy"],
                          env=_env(home), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "the vault holds 1 values but no vault key is set" in done.stdout + done.stderr
    assert not (home / "vault.key").exists(), "no new key that could not read the old values"
