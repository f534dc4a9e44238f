"""A real gateway for tests: `genfoundry serve` in a subprocess on the built-in
models (preloaded, or none with ``preload=()``), in a home of its own, with an admin key.

Example::

    gw = start_gateway(tmp_path / "home")
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key)
    ...
    stop_gateway(gw)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from genfoundry.core.store import Store
from genfoundry.gateway.keys import create_key
from genfoundry.guard.keys import generate_key_file

__all__ = ["DEFAULT_PRELOAD", "RunningGateway", "free_port", "start_gateway", "start_replica", "start_upstream",
           "stop_gateway", "stop_process", "wait_http"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Wait until ``url`` answers 200 (a gateway's /health says ready once its models are warm); raise if
    the process exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Ask a server to stop (SIGTERM), and kill it if it has not within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class RunningGateway:
    home: Path
    port: int
    key: str
    proc: subprocess.Popen

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def health(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=10).json()

    def store(self) -> Store:
        return Store.open(f"sqlite:///{self.home / 'genfoundry.db'}")


DEFAULT_PRELOAD = ("default", "default-embedding")


def start_gateway(home: Path, env_extra: dict[str, str] | None = None, *,
                  preload: Sequence[str] = DEFAULT_PRELOAD) -> RunningGateway:
    """Start ``genfoundry serve`` on ``home`` and wait until it is ready: its ``preload`` models warm
    (none: models load on first use, and the gateway is ready at once)."""
    home.mkdir(parents=True, exist_ok=True)
    store = Store.open(f"sqlite:///{home / 'genfoundry.db'}")
    secret, _ = create_key(store, name="tests", role="admin")
    store.close()
    if not (home / "vault.key").exists():  # as `genfoundry up` does: the guard's vault needs a key
        generate_key_file(home / "vault.key")
    port = free_port()
    env = {**os.environ, "GENFOUNDRY_HOME": str(home), "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    log = open(home / "gateway.log", "wb")
    models = [arg for name in preload for arg in ("--preload", name)] or ["--lazy"]
    proc = subprocess.Popen([sys.executable, "-m", "genfoundry.cli", "serve", "--port", str(port), *models],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:  # 503 while the preloaded models warm up, 200 once they are ready
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=240)
    except RuntimeError as exc:
        proc.kill()
        raise RuntimeError(f"gateway did not start ({exc}): {(home / 'gateway.log').read_text()[-3000:]}") from None
    return RunningGateway(home=home, port=port, key=secret, proc=proc)


def stop_gateway(gw: RunningGateway) -> None:
    stop_process(gw.proc)


def start_upstream(name: str, *, chunks: int = 3, delay: float = 0.0) -> tuple[subprocess.Popen, str]:
    """Start the stand-in OpenAI-compatible server (``genfoundry.testing.upstream``) in its own process;
    its process and base URL (``http://127.0.0.1:PORT/v1``)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "genfoundry.testing.upstream", "--port", str(port), "--name", name,
                             "--chunks", str(chunks), "--chunk-delay", str(delay)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v1/models", proc, timeout=60)
    return proc, f"http://127.0.0.1:{port}/v1"


def start_replica(home: Path, vault_key: Path, *, database_url: str | None = None,
                  args: Sequence[str] = ()) -> tuple[subprocess.Popen, str]:
    """Start one gateway replica (``genfoundry serve --lazy`` and ``args``) on ``home`` with the shared
    ``vault_key`` and, when given, the shared ``database_url``, on default settings (no GENFOUNDRY_* variable
    of the caller's); its process and base URL, once it answers."""
    home.mkdir(parents=True, exist_ok=True)
    if vault_key.resolve() != (home / "vault.key").resolve():
        shutil.copy(vault_key, home / "vault.key")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENFOUNDRY_")}
    env.update({"GENFOUNDRY_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    if database_url:
        env["GENFOUNDRY_DATABASE_URL"] = database_url
    log = open(home / "gateway.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "genfoundry.cli", "serve", "--port", str(port), "--lazy", *args],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=240)
    except RuntimeError as exc:
        proc.kill()
        raise RuntimeError(f"replica did not start ({exc}): {(home / 'gateway.log').read_text()[-3000:]}") from None
    return proc, f"http://127.0.0.1:{port}"
