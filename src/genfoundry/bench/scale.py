"""Gateway overhead at scale: genfoundry's gateway against LiteLLM's proxy, in one run.

Both proxies relay to the **same** fake OpenAI-compatible upstream, which answers every
``/v1/chat/completions`` at once with the same small completion (a raw asyncio HTTP/1.1
keep-alive server in its own process, uvloop when installed, no framework), so what is
measured is what each proxy adds, not a model's time:

1. one client, sequential non-streaming chat requests over a keep-alive connection, in
   turns (upstream direct, genfoundry, LiteLLM, then the next order), so noise from the
   machine falls on all three alike: latency p50/p95 per side; the overhead of a proxy is
   its latency minus the direct one;
2. throughput: wrk (C, epoll; a Lua script sends the POST body and the key) with 32
   connections for a fixed time against each side: requests/s, answers that were not 2xx,
   socket errors; each proxy first with one worker process, then with one per core.
   The direct upstream's figure shows how far wrk and the upstream are from being the
   bottleneck.

genfoundry runs as users run it: a real ``genfoundry serve`` in a scratch home with the
default settings (guard and tracing on), the upstream registered with ``genfoundry models
add`` (OpenAI-compatible, defaults), a developer key. LiteLLM runs as its docs show:
``litellm --config`` with the upstream as an ``openai/`` model with ``api_base``, a master
key (``LITELLM_MASTER_KEY``), ``--num_workers``. It is a bench-only dependency: installed on
demand into a virtual environment of its own (never the project's), or passed as the path
of a ``litellm`` executable.

Example::

    result = run_scale_bench(settings, litellm=None, requests=200, duration=10)
    result["verdict"]
"""

from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from genfoundry.core.errors import ConfigError
from genfoundry.core.settings import Settings, load_settings
from genfoundry.testing.servers import free_port, stop_process, wait_http

__all__ = ["OVERHEAD_RATIO_GOAL", "RPS_RATIO_GOAL", "UPSTREAM_MODEL", "chat_body", "ensure_litellm",
           "find_wrk", "litellm_config", "litellm_version", "parse_wrk", "percentiles",
           "prepare_genfoundry_home", "run_scale_bench", "run_wrk", "serve_upstream", "serve_workers_option",
           "single_client", "start_genfoundry", "start_litellm", "start_upstream", "verdict", "wrk_script"]

UPSTREAM_MODEL = "bench-upstream"
MODEL = "bench"  # the name clients send to either proxy
LITELLM_SPEC = "litellm[proxy]"
OVERHEAD_RATIO_GOAL = 0.5  # genfoundry's added latency at most half of LiteLLM's
RPS_RATIO_GOAL = 2.0  # and at least twice its requests/s
WRK_INSTALL = "apt-get install -y wrk"
WARMUP_S = 2  # an uncounted wrk run before each measured one

# -- the fake upstream -------------------------------------------------------------------------------

_COMPLETION = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": UPSTREAM_MODEL,
    "system_fingerprint": "fp_bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris is the capital of France."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22},
}
_CHUNK = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
          "model": UPSTREAM_MODEL, "system_fingerprint": "fp_bench"}
_MODELS = {"object": "list", "data": [{"id": UPSTREAM_MODEL, "object": "model", "created": 1700000000,
                                       "owned_by": "bench"}]}


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            "connection: keep-alive\r\n\r\n").encode() + body


def _sse() -> bytes:
    events = [{**_CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                      "finish_reason": None}]},
              {**_CHUNK, "choices": [{"index": 0, "delta": {"content": _COMPLETION["choices"][0]["message"]
                                                            ["content"]}, "finish_reason": None}]},
              {**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
              {**_CHUNK, "choices": [], "usage": _COMPLETION["usage"]}]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


_CHAT = _response("200 OK", json.dumps(_COMPLETION).encode())
_CHAT_STREAM = _response("200 OK", _sse(), "text/event-stream")
_LIST = _response("200 OK", json.dumps(_MODELS).encode())
_OK = _response("200 OK", b'{"status":"ok"}')
_NOT_FOUND = _response("404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error"}}')
_BAD = _response("400 Bad Request", b'{"error":{"message":"bad request","type":"invalid_request_error"}}')
_STREAM_FLAG = re.compile(rb'"stream"\s*:\s*true')


class _Upstream(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; bodies by content-length or chunked."""

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1").split("\r\n")
            parts = head[0].split(" ")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            rest = self.buffer[head_end + 4:]
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body, used = _dechunk(rest)
                if body is None:
                    return
            else:
                used = int(headers.get("content-length") or 0)
                if len(rest) < used:
                    return
                body = rest[:used]
            self.buffer = rest[used:]
            self.transport.write(_route(parts, body))
            if headers.get("connection", "").lower() == "close":
                self.transport.close()
                return


def _dechunk(data: bytes) -> tuple[bytes | None, int]:
    body, at = b"", 0
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return None, 0
        size = int(data[at:line_end].split(b";")[0], 16)
        at = line_end + 2
        if size == 0:
            end = data.find(b"\r\n", at)  # no trailers are sent to us; skip to the blank line
            return (body, end + 2) if end >= 0 else (None, 0)
        if len(data) < at + size + 2:
            return None, 0
        body += data[at:at + size]
        at += size + 2


def _route(parts: list[str], body: bytes) -> bytes:
    if len(parts) < 2:
        return _BAD
    method, path = parts[0], parts[1].split("?")[0]
    if method == "POST" and path.endswith("/chat/completions"):
        return _CHAT_STREAM if _STREAM_FLAG.search(body) else _CHAT
    if method == "GET" and path.endswith("/models"):
        return _LIST
    if method == "GET" and path in ("/health", "/"):
        return _OK
    return _NOT_FOUND


async def _serve_forever(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def serve_upstream(port: int, host: str = "127.0.0.1") -> None:
    """Run the fake upstream in this process until SIGTERM (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_forever(host, port))
    else:
        uvloop.run(_serve_forever(host, port))


def start_upstream(port: int) -> subprocess.Popen:
    """The fake upstream in a process of its own, ready when this returns."""
    proc = subprocess.Popen([sys.executable, "-m", "genfoundry.bench.scale", "upstream", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=30)
    return proc


# -- requests --------------------------------------------------------------------------------------

def chat_body(model: str = MODEL) -> bytes:
    """The one request every side gets: a short non-streaming chat."""
    return json.dumps({"model": model, "max_tokens": 16, "temperature": 0,
                       "messages": [{"role": "user", "content": "What is the capital of France?"}]}).encode()


class _Side:
    """One keep-alive connection to one side and its request."""

    def __init__(self, port: int, key: str | None, model: str):
        self.port, self.body = port, chat_body(model)
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def once(self) -> tuple[float, bytes]:
        started = time.perf_counter()
        try:
            self.conn.request("POST", "/v1/chat/completions", self.body, self.headers)
            response = self.conn.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):  # the server closed the connection: open a new one
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            raise
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"port {self.port} answered {response.status}: {data[:300]!r}")
        return elapsed, data

    def close(self) -> None:
        self.conn.close()


def percentiles(values: list[float]) -> dict:
    values = sorted(values)
    return {"p50": round(statistics.median(values), 3), "p95": round(values[int(0.95 * (len(values) - 1))], 3),
            "mean": round(statistics.fmean(values), 3), "n": len(values)}


def single_client(sides: dict[str, _Side], requests: int, warmup: int = 20) -> dict:
    """Sequential requests, one side after another in a rotating order; the first ``warmup`` turns
    are not counted."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(warmup + requests):
        order = names[turn % len(names):] + names[:turn % len(names)]
        for name in order:
            elapsed, data = sides[name].once()
            if turn == 0 and "Paris" not in data.decode("utf-8", "replace"):
                raise RuntimeError(f"{name} did not relay the upstream's answer: {data[:300]!r}")
            if turn >= warmup:
                times[name].append(elapsed)
    return {name: percentiles(values) for name, values in times.items()}


# -- wrk -------------------------------------------------------------------------------------------

def find_wrk() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise ConfigError(f"this benchmark needs wrk as its load generator; install it ({WRK_INSTALL} on "
                          "Debian and Ubuntu) and run it again")
    return binary


def wrk_script(body: bytes, key: str | None) -> str:
    """A Lua script for wrk: every request a POST of ``body``, with the key when there is one."""
    text = body.decode()
    level = "=" * (max((len(m) for m in re.findall(r"\](=*)\]", text)), default=-1) + 1)
    lines = ['wrk.method = "POST"', f"wrk.body = [{level}[{text}]{level}]",
             'wrk.headers["Content-Type"] = "application/json"']
    if key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    return "\n".join(lines) + "\n"


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(value: str) -> float | None:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value.strip())
    return round(float(match.group(1)) * _UNITS[match.group(2)], 3) if match else None


def parse_wrk(text: str) -> dict:
    """Requests/s, counts and latency from wrk's report (run with ``--latency``)."""
    def number(pattern: str, cast=float):
        match = re.search(pattern, text)
        return cast(match.group(1)) if match else None

    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text)
    if total is None or number(r"Requests/sec:\s*([\d.]+)") is None:
        raise ValueError(f"not a wrk report: {text[-500:]!r}")
    requests, seconds = int(total.group(1)), _ms(total.group(2) + total.group(3)) / 1000
    non_2xx = number(r"Non-2xx or 3xx responses:\s*(\d+)", int) or 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()))) if errors \
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    latency = {f"p{m.group(1)}": _ms(m.group(2))
               for m in re.finditer(r"^\s+(50|75|90|99)(?:\.0+)?%\s+(\S+)\s*$", text, re.M)}
    avg = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if avg:
        latency["mean"] = _ms(avg.group(1))
    ok = requests - non_2xx - socket_errors["read"] - socket_errors["write"] - socket_errors["timeout"]
    return {"requests": requests, "seconds": round(seconds, 2),
            "requests_per_s": number(r"Requests/sec:\s*([\d.]+)"),
            "ok_requests_per_s": round(max(ok, 0) / seconds, 1) if seconds else None,
            "non_2xx": non_2xx, "socket_errors": socket_errors, "latency_ms": latency}


def _wrk_version(binary: str) -> str | None:
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=30)
    match = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return match.group(1) if match else None


def run_wrk(binary: str, port: int, script: Path, *, connections: int, threads: int, duration: int | float) -> dict:
    cmd = [binary, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "--latency",
           "-s", str(script), f"http://127.0.0.1:{port}/v1/chat/completions"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-500:]}")
    return parse_wrk(done.stdout)


# -- the proxies -----------------------------------------------------------------------------------

def serve_workers_option() -> bool:
    """Whether ``genfoundry serve`` can run several worker processes (a ``--workers`` option)."""
    from genfoundry.cli.serve import serve

    return "workers" in inspect.signature(serve).parameters


def _rss_mb(pid: int) -> float | None:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        return round(sum(p.memory_info().rss for p in procs) / 2**20, 1)
    except psutil.Error:
        return None


class _Server:
    def __init__(self, name: str, proc: subprocess.Popen, port: int, key: str, log: Path, start_s: float):
        self.name, self.proc, self.port, self.key, self.log, self.start_s = name, proc, port, key, log, start_s
        self.settle: dict | None = None

    def workers(self) -> set[int]:
        """The worker processes a supervisor started (multiprocessing spawn children); none for one process."""
        try:
            children = psutil.Process(self.proc.pid).children()
            return {c.pid for c in children if "spawn_main" in " ".join(c.cmdline())}
        except psutil.Error:
            return set()

    def wait_settled(self, count: int, *, quiet: float = 5.0, timeout: float = 180.0) -> dict:
        """Wait until ``count`` workers are up and none has been replaced for ``quiet`` seconds (a supervisor
        restarts workers that miss its health check while they start on a busy machine)."""
        started, seen = time.monotonic(), set()
        last, since = None, time.monotonic()
        while time.monotonic() - started < timeout:
            now = self.workers()
            seen |= now
            if now != last:
                last, since = now, time.monotonic()
            elif len(now) == count and time.monotonic() - since >= quiet:
                break
            time.sleep(0.25)
        self.settle = {"settled": len(last or ()) == count and time.monotonic() - since >= quiet,
                       "seconds": round(time.monotonic() - started, 1),
                       "workers_replaced": max(len(seen) - count, 0)}
        return self.settle

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)


def _wait(proc: subprocess.Popen, url: str, log: Path, what: str, timeout: float, *, group: bool = False) -> None:
    try:
        wait_http(url, proc, timeout=timeout)
    except RuntimeError as exc:
        try:
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
        except ProcessLookupError:
            pass
        proc.wait()
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{what} did not start ({exc}): {tail}") from None


def _default_env(home: Path) -> dict[str, str]:
    """This environment without the caller's GENFOUNDRY_* settings: the scratch home runs on the defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENFOUNDRY_")}
    return {**env, "GENFOUNDRY_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def prepare_genfoundry_home(home: Path, upstream_port: int) -> str:
    """A scratch home as a user sets it up: the vault key, the upstream registered with ``genfoundry models
    add`` (an OpenAI-compatible server, defaults), a developer key (returned)."""
    from genfoundry.core.store import Store
    from genfoundry.gateway.keys import create_key
    from genfoundry.guard.keys import generate_key_file

    home.mkdir(parents=True)
    generate_key_file(home / "vault.key")
    env = _default_env(home)
    added = subprocess.run([sys.executable, "-m", "genfoundry.cli", "models", "add", MODEL,
                            f"http://127.0.0.1:{upstream_port}/v1", "--remote-model", UPSTREAM_MODEL],
                           env=env, capture_output=True, text=True, timeout=300)
    if added.returncode:
        raise RuntimeError(f"genfoundry models add failed: {added.stdout[-1000:]}{added.stderr[-1000:]}")
    store = Store.open(load_settings(home=home, environ={}).resolved_database_url)
    try:
        secret, _ = create_key(store, name="bench-scale", role="developer")
    finally:
        store.close()
    return secret


def start_genfoundry(home: Path, key: str, workers: int) -> _Server:
    port = free_port()
    log = home / f"serve-{workers}.log"
    env = _default_env(home)
    cmd = [sys.executable, "-m", "genfoundry.cli", "serve", "--port", str(port), "--preload", MODEL]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    _wait(proc, f"http://127.0.0.1:{port}/health", log, "genfoundry serve", timeout=300)
    return _Server("genfoundry", proc, port, key, log, time.perf_counter() - started)


def ensure_litellm(cache: Path, given: str | None, progress: Callable[[str], None]) -> str:
    """The ``litellm`` executable: the one given, else one in a virtual environment of its own under
    ``cache`` (made and filled with ``pip install 'litellm[proxy]'`` the first time)."""
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise ConfigError(f"--litellm: no executable at {path}")
        return str(path)
    venv = cache / "litellm-venv"
    binary = venv / "bin" / "litellm"
    if binary.is_file():
        return str(binary)
    progress(f"installing LiteLLM with its proxy extra into {venv} (once; a few minutes)…")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", LITELLM_SPEC],
                          capture_output=True, text=True)
    if done.returncode or not binary.is_file():
        shutil.rmtree(venv, ignore_errors=True)
        raise ConfigError(f"could not install {LITELLM_SPEC} ({done.stderr.strip()[-500:]}); install it "
                          "yourself and pass --litellm PATH/TO/litellm")
    return str(binary)


def litellm_version(binary: str) -> str | None:
    python = Path(binary).parent / "python"
    if not python.is_file():
        return None
    done = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                          capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or None


def litellm_config(upstream_port: int) -> str:
    return (f"model_list:\n"
            f"  - model_name: {MODEL}\n"
            f"    litellm_params:\n"
            f"      model: openai/{UPSTREAM_MODEL}\n"
            f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
            f"      api_key: none\n"
            f"general_settings:\n"
            f"  master_key: os.environ/LITELLM_MASTER_KEY\n")


def start_litellm(binary: str, scratch: Path, upstream_port: int, workers: int) -> _Server:
    port = free_port()
    config = scratch / "litellm.yaml"
    config.write_text(litellm_config(upstream_port))
    log = scratch / f"litellm-{workers}.log"
    key = "sk-bench-" + os.urandom(12).hex()
    env = {**os.environ, "LITELLM_MASTER_KEY": key,
           # offline: the packaged model price map rather than a download at start
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cmd = [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
           "--num_workers", str(workers)]
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=scratch,
                                start_new_session=True)
    _wait(proc, f"http://127.0.0.1:{port}/health/liveliness", log, "litellm", timeout=300, group=True)
    return _Server("litellm", proc, port, key, log, time.perf_counter() - started)


def _stop_litellm(server: _Server) -> None:
    """LiteLLM's workers are children of its process: stop the whole group it leads."""
    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


# -- the verdict -----------------------------------------------------------------------------------

def _ratio(a, b, digits: int = 3):
    return round(a / b, digits) if a is not None and b else None


def verdict(latency: dict, throughput: dict) -> dict:
    """Overhead (latency minus direct) of each proxy, genfoundry's over LiteLLM's, and requests/s ratios.

    ``latency``: {"direct"|"genfoundry"|"litellm": {"p50", "p95"}}; ``throughput``: {"one_worker"|"cores":
    {"genfoundry"|"litellm": wrk figures or None}}. A check is None when its side was not measured.
    """
    overhead = {side: {q: round(latency[side][q] - latency["direct"][q], 3) for q in ("p50", "p95")}
                for side in ("genfoundry", "litellm")}
    ratio = {q: _ratio(max(overhead["genfoundry"][q], 0.0), overhead["litellm"][q]) for q in ("p50", "p95")}
    checks: dict = {"overhead_ratio_p50": ratio["p50"], "overhead_ratio_p95": ratio["p95"],
                    "overhead_pass": None if None in ratio.values()
                    else all(r <= OVERHEAD_RATIO_GOAL for r in ratio.values())}
    for part, sides in throughput.items():
        gf, lite = sides.get("genfoundry"), sides.get("litellm")
        rps = _ratio(gf["ok_requests_per_s"], lite["ok_requests_per_s"]) if gf and lite else None
        checks[f"rps_ratio_{part}"] = rps
        clean = gf is not None and gf["non_2xx"] == 0 and not any(gf["socket_errors"].values())
        checks[f"rps_pass_{part}"] = None if rps is None else (rps >= RPS_RATIO_GOAL and clean)
    passes = [v for k, v in checks.items() if k.endswith("_pass") or "_pass_" in k]
    checks["passed"] = False if False in passes else (None if None in passes else True)
    return {"overhead_ms": overhead, "checks": checks,
            "goals": {"overhead_ratio": f"<= {OVERHEAD_RATIO_GOAL} (p50 and p95)",
                      "rps_ratio": f">= {RPS_RATIO_GOAL}, every genfoundry answer 2xx",
                      "passed": "every check true; null when a part could not be measured"}}


# -- the run ---------------------------------------------------------------------------------------

def run_scale_bench(settings: Settings, *, litellm: str | None = None, requests: int = 200,
                    duration: int = 10, connections: int = 32, wrk_threads: int = 2,
                    workers: int | None = None, progress: Callable[[str], None] = print) -> dict:
    """Start the upstream, genfoundry and LiteLLM, measure them (see the module), stop them; the JSON."""
    wrk = find_wrk()
    cores = workers or os.cpu_count() or 1
    litellm_bin = ensure_litellm(settings.home / "cache" / "bench", litellm, progress)
    multi = serve_workers_option()
    scratch = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=settings.home))
    running: list[_Server] = []
    upstream = None

    def stop(server: _Server) -> None:
        (_stop_litellm if server.name == "litellm" else _Server.stop)(server)
        running.remove(server)

    try:
        upstream_port = free_port()
        upstream = start_upstream(upstream_port)
        progress("setting up genfoundry's scratch home (models add, keys)…")
        gf_key = prepare_genfoundry_home(scratch / "home", upstream_port)
        used = load_settings(home=scratch / "home", environ={})
        gf_settings = {"guard": used.guard, "tracing": used.tracing}
        def script(name: str, key: str | None, body: bytes) -> Path:
            path = scratch / f"{name}.lua"
            path.write_text(wrk_script(body, key))
            return path

        direct_script = script("direct", None, chat_body(UPSTREAM_MODEL))
        gf_script = script("genfoundry", gf_key, chat_body())
        progress("starting genfoundry serve and litellm, one worker each…")
        gf = start_genfoundry(scratch / "home", gf_key, 1)
        running.append(gf)
        lite = start_litellm(litellm_bin, scratch, upstream_port, 1)
        running.append(lite)
        lite_script = script("litellm", lite.key, chat_body())
        sides = {"direct": _Side(upstream_port, None, UPSTREAM_MODEL), "genfoundry": _Side(gf.port, gf.key, MODEL),
                 "litellm": _Side(lite.port, lite.key, MODEL)}
        progress(f"one client: {requests} sequential requests per side, in turns…")
        try:
            latency = single_client(sides, requests)
        finally:
            for side in sides.values():
                side.close()

        def load(port: int, path: Path, server: _Server | None = None) -> dict:
            """A short uncounted wrk run, then the measured one; workers replaced meanwhile are counted."""
            run_wrk(wrk, port, path, connections=connections, threads=wrk_threads, duration=WARMUP_S)
            before = server.workers() if server else set()
            figures = run_wrk(wrk, port, path, connections=connections, threads=wrk_threads, duration=duration)
            if server is not None:
                figures["rss_mb"] = _rss_mb(server.proc.pid)
                if before:
                    figures["workers_replaced"] = len(server.workers() - before)
            return figures

        progress(f"wrk, {connections} connections, {duration} s per side: direct, genfoundry, litellm…")
        one = {"direct": load(upstream_port, direct_script), "genfoundry": load(gf.port, gf_script, gf),
               "litellm": load(lite.port, lite_script, lite)}
        start_s = {"genfoundry_1": round(gf.start_s, 1), "litellm_1": round(lite.start_s, 1)}
        stop(gf)
        stop(lite)

        many: dict = {"workers": cores}
        if cores > 1:
            if multi:
                gf = start_genfoundry(scratch / "home", gf_key, cores)
                running.append(gf)
                start_s[f"genfoundry_{cores}"] = round(gf.start_s, 1)
                if gf.workers():
                    many["genfoundry_start"] = gf.wait_settled(cores)
                many["genfoundry"] = load(gf.port, gf_script, gf)
                stop(gf)
            else:
                many["genfoundry"] = None
                many["genfoundry_unmeasured"] = ("`genfoundry serve` has no --workers option: it runs one "
                                                 "worker process")
            progress(f"litellm with {cores} workers…")
            lite = start_litellm(litellm_bin, scratch, upstream_port, cores)
            running.append(lite)
            start_s[f"litellm_{cores}"] = round(lite.start_s, 1)
            many["litellm_start"] = lite.wait_settled(cores)
            many["litellm"] = load(lite.port, script("litellm", lite.key, chat_body()), lite)
            stop(lite)
        else:
            many.update(genfoundry=None, litellm=None, genfoundry_unmeasured="one core: same as one worker")
    finally:
        for server in list(running):
            try:
                stop(server)
            except Exception:  # keep stopping the others
                pass
        if upstream is not None:
            stop_process(upstream)
        shutil.rmtree(scratch, ignore_errors=True)

    from importlib.metadata import version

    result = {
        "config": {"requests_per_side": requests, "wrk_duration_s": duration, "connections": connections,
                   "wrk_threads": wrk_threads, "cores": os.cpu_count(), "workers_second_part": cores,
                   "request": json.loads(chat_body()), "streaming": False},
        "versions": {"genfoundry": version("genfoundry"), "litellm": litellm_version(litellm_bin),
                     "wrk": _wrk_version(wrk)},
        "genfoundry_settings": {**gf_settings, "workers_option": multi},
        "start_s": start_s,
        "single_client_latency_ms": latency,
        "throughput": {"one_worker": one, "cores": many},
    }
    parts = {"one_worker": one}
    if cores > 1:  # on one core the second part is the first
        parts["cores"] = {k: many.get(k) for k in ("genfoundry", "litellm")}
    result["verdict"] = verdict(latency, parts)
    return result


if __name__ == "__main__":  # python -m genfoundry.bench.scale upstream PORT: the fake upstream alone
    if len(sys.argv) == 3 and sys.argv[1] == "upstream":
        serve_upstream(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m genfoundry.bench.scale upstream PORT")
