"""`genfoundry engine`: the llama-server binary that serves GGUF models with continuous batching."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import typer

from genfoundry.cli.common import console, get_context, handle_errors
from genfoundry.core.errors import ConfigError
from genfoundry.models.providers.llama_server import built_binary_path, find_llama_server

app = typer.Typer(help="Build or locate llama.cpp's llama-server, the engine for GGUF models.", no_args_is_help=True)

CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_APP=OFF",
]


def _sdist(workdir: Path, version: str) -> Path:
    """The llama-cpp-python source distribution of the installed version, from the package index."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "-d", str(workdir), f"llama-cpp-python=={version}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    found = sorted(workdir.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise ConfigError("pip did not download the llama-cpp-python sdist")
    return found[0]


def build_llama_server(*, jobs: int | None = None, force: bool = False) -> Path:
    """Build llama-server from the vendored llama.cpp in llama-cpp-python's sdist (cached)."""
    import llama_cpp
    target = built_binary_path(llama_cpp.__version__)
    if target.exists() and not force:
        return target
    if shutil.which("cmake") is None:
        raise ConfigError("cmake is needed to build llama-server; install it (apt-get install cmake or pip install cmake)")
    with tempfile.TemporaryDirectory(prefix="gf-llama-") as tmp:
        work = Path(tmp)
        with tarfile.open(_sdist(work, llama_cpp.__version__)) as tar:
            tar.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server",
                        "-j", str(jobs or os.cpu_count() or 2)], check=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / "bin" / "llama-server", target)
    return target


@app.command("build")
@handle_errors
def build(force: bool = typer.Option(False, help="Rebuild even if a build is cached."),
          jobs: int = typer.Option(None, help="Parallel compile jobs (default: all cores).")):
    """Build llama-server from source (about 5 minutes on 2 cores); cached per llama-cpp-python version."""
    console.print("Building llama-server from llama-cpp-python's vendored llama.cpp…")
    path = build_llama_server(jobs=jobs, force=force)
    console.print(f"llama-server is at {path}")


@app.command("status")
@handle_errors
def status(ctx: typer.Context):
    """Show which engine GGUF models will use."""
    settings = get_context(ctx).settings
    binary = find_llama_server(settings.llama_server_path)
    if binary and settings.llama_engine != "inprocess":
        console.print(f"engine: llama-server ({binary}), {settings.llama_parallel} parallel sequences")
    else:
        why = "llama_engine is 'inprocess'" if settings.llama_engine == "inprocess" else \
            "no llama-server found (run `genfoundry engine build`)"
        console.print(f"engine: llama-cpp-python in-process, one sequence at a time ({why})")
