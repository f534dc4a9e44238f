"""llama.cpp's own ``llama-server`` as the local engine, as Ollama does.

Why a server process and not llama-cpp-python alone: llama-server batches
several sequences into one forward pass (continuous batching), which on this
kind of machine doubles aggregate throughput for concurrent users; llama-cpp-
python's high-level API runs one sequence at a time. The gateway starts one
llama-server per GGUF model on a loopback port, restarts it if it dies, and
closes the HTTP stream when a client goes away, which frees the slot.

The binary comes from ``llama_server_path``, then ``genfoundry engine build``'s
cache, then PATH.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httptools
import httpx

from genfoundry.core.errors import ContextLengthExceeded, ProviderError
from genfoundry.models.providers.llama_inprocess import CompletionParams, EngineChunk
from genfoundry.models.providers.local_sse import EngineHTTPError, post_sse

__all__ = ["ServerEngine", "built_binary_path", "engine_cache_dir", "find_llama_server"]

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0
_FINISH = {"limit": "length", "eos": "stop", "word": "stop"}


def engine_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genfoundry" / "engines"


def built_binary_path(version: str | None = None) -> Path:
    if version is None:
        import llama_cpp
        version = llama_cpp.__version__
    return engine_cache_dir() / f"llama-server-{version}" / "llama-server"


def find_llama_server(configured: str | None = None) -> str | None:
    """The llama-server binary to use, or None when there is none."""
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    try:
        built = built_binary_path()
    except ImportError:
        built = None
    if built is not None and os.access(built, os.X_OK):
        return str(built)
    return shutil.which("llama-server")


def _die_with_parent() -> None:
    """In the engine's child process: ask Linux to end it when the gateway dies.

    The engine runs in its own session (Ctrl-C goes to the gateway, which then
    stops it cleanly); this covers a gateway that is killed outright, so no
    orphaned engine keeps holding memory and a port.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        # SIGKILL, not SIGTERM: the engine holds nothing to save, and a graceful llama-server
        # shutdown can hang with nobody left to wait for it.
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerEngine:
    """One llama-server process serving one GGUF model with ``parallel`` slots."""

    def __init__(self, binary: str, model_path: str, *, n_ctx: int, parallel: int,
                 n_threads: int | None, timeout: float = 300.0, extra_args: list[str] | None = None):
        self.binary = binary
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.concurrency = parallel
        self.n_threads = n_threads
        self.timeout = timeout
        self.extra_args = list(extra_args or [])
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        # httpx clients and asyncio locks belong to one event loop; scripts that call
        # asyncio.run() repeatedly get one pair per loop.
        self._per_loop: dict[int, tuple[httpx.AsyncClient | None, asyncio.Lock]] = {}
        self.restarts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _loop_state(self) -> tuple[httpx.AsyncClient | None, asyncio.Lock]:
        loop_id = id(asyncio.get_running_loop())
        client, lock = self._per_loop.get(loop_id, (None, None))
        if lock is None:
            lock = asyncio.Lock()
            self._per_loop = {loop_id: (None, lock)}  # older loops are gone; drop their clients
        if self.port is not None and (client is None or client.is_closed
                                      or str(client.base_url).rstrip("/") != self.base_url):
            client = httpx.AsyncClient(
                base_url=self.base_url, timeout=httpx.Timeout(self.timeout, connect=5.0),
                limits=httpx.Limits(max_connections=self.concurrency * 4))
            self._per_loop[loop_id] = (client, lock)
        return client, lock

    @property
    def _client(self) -> httpx.AsyncClient:
        return self._loop_state()[0]

    def command(self) -> list[str]:
        cmd = [self.binary, "-m", self.model_path, "--host", "127.0.0.1", "--port", str(self.port),
               # llama-server splits -c across slots: give every slot the full per-sequence window.
               "-c", str(self.n_ctx * self.concurrency), "-np", str(self.concurrency),
               "--no-webui", "--metrics"]
        if self.n_threads:
            cmd += ["-t", str(self.n_threads)]
        return cmd + self.extra_args

    async def start(self) -> None:
        async with self._loop_state()[1]:
            if self._proc is not None and self._proc.poll() is None:
                return
            if self._proc is not None:
                self.restarts += 1
                log.warning("llama-server exited with %s; restarting", self._proc.returncode)
            self.port = _free_port()
            self._proc = subprocess.Popen(
                self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True, preexec_fn=_die_with_parent)
            await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read() or b"").decode(errors="replace")[-2000:]
                raise ProviderError(f"llama-server exited during start ({self._proc.returncode}): {err}")
            try:
                resp = await self._client.get("/health")
                if resp.status_code == 200:
                    self._drain_stderr()
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        raise ProviderError(f"llama-server did not become healthy within {START_TIMEOUT_S:.0f}s")

    def _drain_stderr(self) -> None:
        # llama-server logs every request; nobody reads the pipe after start, so
        # hand it to a thread that discards it rather than let the pipe fill up.
        import threading
        stream = self._proc.stderr

        def drain() -> None:
            for _ in iter(lambda: stream.read(65536), b""):
                pass
        threading.Thread(target=drain, daemon=True).start()

    async def stop(self) -> None:
        for client, _ in self._per_loop.values():
            if client is None:
                continue
            try:
                await client.aclose()
            except RuntimeError:  # its loop is closed already
                pass
        self._per_loop = {}
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

    def _body(self, params: CompletionParams) -> dict:
        body = {"prompt": params.prompt, "n_predict": params.max_tokens, "stream": True,
                "temperature": params.temperature, "top_p": params.top_p, "stop": params.stop,
                "cache_prompt": True}
        if params.temperature == 0:
            # Greedy is the argmax: top_k=1 gives the same tokens without sorting a
            # 262k-entry vocabulary through the whole sampler chain at every step.
            body["top_k"] = 1
        if params.seed is not None:
            body["seed"] = params.seed
        if params.json_schema is not None:
            body["json_schema"] = params.json_schema
        return body

    async def stream(self, params: CompletionParams) -> AsyncIterator[EngineChunk]:
        if self._proc is None or self._proc.poll() is not None:
            await self.start()
        try:
            async for event in post_sse("127.0.0.1", self.port, "/completion", self._body(params),
                                        timeout=self.timeout):
                if "error" in event:
                    raise self._error(500, json.dumps(event["error"]))
                if event.get("content"):
                    yield EngineChunk(text=event["content"])
                if event.get("stop"):
                    yield EngineChunk(finish_reason=_FINISH.get(event.get("stop_type"), "stop"),
                                      completion_tokens=event.get("tokens_predicted"))
                    return
        except EngineHTTPError as exc:
            raise self._error(exc.status, exc.body) from exc
        except (OSError, asyncio.TimeoutError, httptools.HttpParserError, ValueError) as exc:
            raise ProviderError(f"lost the llama-server engine ({exc.__class__.__name__}); "
                                "it restarts on the next request") from exc

    @staticmethod
    def _error(status: int, text: str) -> Exception:
        if "context" in text and ("exceed" in text or "size" in text):
            return ContextLengthExceeded(f"llama-server: {text[:300]}")
        return ProviderError(f"llama-server answered {status}: {text[:300]}")
