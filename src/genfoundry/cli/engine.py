"""`genfoundry engine`: the llama-server binary that serves GGUF models with continuous batching."""

from __future__ import annotations

import subprocess
import sys

import typer

from genfoundry.cli.common import console, get_context, handle_errors
from genfoundry.core.errors import ConfigError
from genfoundry.models.providers.llama_server import find_llama_server

app = typer.Typer(help="Build or locate llama.cpp's llama-server, the engine for GGUF models.", no_args_is_help=True)


@app.command("build")
@handle_errors
def build(force: bool = typer.Option(False, help="Rebuild from a clean tree even if a build is cached."),
          jobs: int = typer.Option(None, help="Parallel compile jobs (default: all cores).")):
    """Compile llama.cpp once for both engines: llama-cpp-python's libraries and llama-server.

    About 7 minutes on 2 cores, cached per llama-cpp-python version (seconds afterwards).
    cmake and ninja come from PyPI (`pip install cmake ninja`) or the system.
    """
    from genfoundry.models.engine_build import build as build_engine

    try:
        path = build_engine(python=sys.executable, jobs=jobs, force=force)
    except subprocess.CalledProcessError as exc:
        raise ConfigError(f"the llama.cpp build failed ({' '.join(map(str, exc.cmd[:3]))}…); "
                          "see the compiler output above") from exc
    except SystemExit as exc:  # the build module's own clear refusals (no cmake, no sdist)
        raise ConfigError(str(exc)) from exc
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
